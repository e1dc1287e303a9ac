-- leave: a ticket holder gives the place up. Idempotent.
-- KEYS: the wave's fixed keys (keys.WaveKeys.fixed): cfg, ctl, pq, active, left, revoked.
-- ARGV[1] now ms ('' = server time), ARGV[2] prefix, ARGV[3] seq, ARGV[4] incarnation id,
-- ARGV[5] the jti its admission token would carry.
-- A waiting ticket becomes "left" (skipped by admission at no cost, and logged in the wave's
-- left list so every process stops answering it as waiting); an admitted session ends, frees
-- its max_active slot and its token is revoked.
-- Returns 'left', 'ended', 'none' or 'unknown_wave'.

local now = clock(ARGV[1])
local prefix, seq, inc, jti = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown_wave' end
local ctl = load_ctl(KEYS[2])
if not issued_here(ctl, inc, seq) then return 'none' end
local seen_key = bucket_key(prefix, 'seen', seq)
local seen = redis.call('HGET', seen_key, seq)
if not seen then return 'none' end
local mark = string.sub(seen, 1, 1)
if mark == SEEN.admitted or mark == SEEN.claimed then
  if end_session(prefix, KEYS[2], seq, seen, jti, now) then return 'ended' end
  return 'none'
end
if tonumber(seen) then
  redis.call('HSET', seen_key, seq, SEEN.left)
  redis.call('HINCRBY', KEYS[2], 'left', 1)
  redis.call('RPUSH', KEYS[5], seq)
  return 'left'
end
return 'none'
