-- leave: a ticket holder gives the place up. Idempotent.
-- KEYS: the wave's fixed keys (keys.WaveKeys.fixed): cfg, ctl, pq, active, left, revocations.
-- ARGV[1] now ms ('' = server time), ARGV[2] prefix, ARGV[3] seq, ARGV[4] incarnation id,
-- ARGV[5] stamp, ARGV[6] the jti its admission token would carry.
-- A waiting ticket becomes "left": its record is reclaimed at once (admission skips it at no
-- cost; its status is 'expired'), and its number is logged in the wave's left list so every
-- process stops answering it as waiting, and its reason in its 'gone' bucket for the ledger.
-- An admitted session ends, frees its max_active slot and its token is revoked. A ticket whose number now belongs to somebody else (a different
-- stamp) changes nothing.
-- Returns 'left', 'ended', 'none' or 'unknown_wave'.

local now = clock(ARGV[1])
local prefix, seq, inc, stamp, jti = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown_wave' end
local ctl = load_ctl(KEYS[2])
if not issued_here(ctl, inc, seq) then return 'none' end
local record = ticket_record(prefix, seq)
if not record or record.stamp ~= stamp then return 'none' end
local seen = redis.call('HGET', bucket_key(prefix, 'seen', seq), seq)
if not seen then return 'none' end
local mark = string.sub(seen, 1, 1)
if mark == SEEN.admitted or mark == SEEN.claimed then
  if end_session(prefix, KEYS[2], seq, seen, jti, now) then return 'ended' end
  return 'none'
end
local mark = callback_state(seen)
if mark == SEEN.called or mark == SEEN.returned then
  -- called back: the cursor has passed this place (its ledger entry says 'called'); the
  -- ledger closes it here, as the return it will never be
  reclaim(prefix, seq, record)
  redis.call('HINCRBY', KEYS[2], 'left', 1)
  ledger_append(prefix, {{now, 'return', 'seq=' .. seq .. ' outcome=skipped reason=left'}})
  return 'left'
end
if tonumber(seen) or mark then  -- waiting, or away on a call-back and not reached yet
  reclaim(prefix, seq, record)
  -- public proof: why the cursor will find no state here (recorded in the ledger then)
  redis.call('HSET', bucket_key(prefix, 'gone', seq), seq, 'left')
  redis.call('HINCRBY', KEYS[2], 'left', 1)
  redis.call('RPUSH', KEYS[5], seq)
  return 'left'
end
return 'none'
