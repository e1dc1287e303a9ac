-- draw: the pre-queue draw at the opening (queue_service/draw.py has the rule, the service
-- computes it: Redis scripts have no HMAC-SHA256). One process draws at a time, under a lease;
-- the ranks it writes are the same whoever computes them, so a lost lease costs only time.
-- KEYS: the wave's fixed keys (keys.WaveKeys.fixed): cfg, ctl, pq, active, left, revocations.
-- Its own key lives under the wave's prefix (same slot): 'draw' (hash, keys.py).
-- ARGV[1] operation, ARGV[2] wave key prefix, ARGV[3] now ms ('' = Redis server time),
-- ARGV[4] owner (the drawing process), then per operation:
--   begin   ARGV[5] lease ms, ARGV[6] a fresh seed and ARGV[7] its commitment (used only by a
--           wave created before draws existed, which has none: its genesis says so)
--           -> {'drawing', seed, N}: the caller computes the order of tickets 1..N;
--              {'drawn'}: nothing to do (already drawn; or the wave was admitting from its
--              pre-queue before this version, so its order stays as it is: recorded as
--              legacy); {'busy'}: another process holds the lease; {'not_open'}
--           Nobody is admitted while a wave is open and not drawn (admit.lua).
--   rank    ARGV[5] N, ARGV[6..] rank, seq, rank, seq, ...: the pre-queue's scores become
--           the ranks (0-based admission order) -> 'ok' or 'lost' (no longer this owner's)
--   finish  ARGV[5] N -> 'done' or 'lost': the draw is complete, the seed is revealed (a
--           ledger entry), and admission walks the pre-queue from the next step on
-- Returns {'unknown_wave'} for a wave that does not exist.

local op, prefix, now, owner = ARGV[1], ARGV[2], clock(ARGV[3]), ARGV[4]
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_wave'} end
local ctl = load_ctl(KEYS[2])
local draw_key = prefix .. 'draw'

local function holds_lease(size)
  local current = redis.call('HMGET', draw_key, 'owner', 'lease_until')
  return ctl.drawn ~= 1 and current[1] == owner and tonumber(size) == ctl.open_seq
end

if op == 'begin' then
  local lease_ms, fresh_seed, fresh_commitment = tonumber(ARGV[5]), ARGV[6], ARGV[7]
  if ctl.open_seq < 0 then return {'not_open'} end
  if ctl.drawn == 1 then return {'drawn'} end
  if ctl.cursor > 0 and ctl.open_seq > 0 then
    -- opened and admitting before this version saw it: its order is kept, and said to be
    -- unverifiable
    ledger_start(prefix, now)
    redis.call('HSET', draw_key, 'legacy', 1, 'drawn_ms', now, 'prequeue', ctl.open_seq)
    redis.call('HSET', KEYS[2], 'drawn', 1)
    ledger_append(prefix, {{now, 'draw',
      string.format('prequeue=%d seed=none', ctl.open_seq)}})
    return {'drawn'}
  end
  local current = redis.call('HMGET', draw_key, 'owner', 'lease_until', 'seed')
  if current[1] and current[1] ~= owner and (tonumber(current[2]) or 0) > now then
    return {'busy'}
  end
  local seed = current[3]
  if not seed then
    seed = fresh_seed
    redis.call('HSET', draw_key, 'seed', seed, 'commitment', fresh_commitment,
      'committed_ms', now)
  end
  redis.call('HSET', draw_key, 'owner', owner, 'lease_until', now + lease_ms)
  return {'drawing', seed, ctl.open_seq}
end

if op == 'rank' then
  if not holds_lease(ARGV[5]) then return 'lost' end
  local pairs_ = {}
  for i = 6, #ARGV, 2 do
    pairs_[#pairs_ + 1] = ARGV[i]
    pairs_[#pairs_ + 1] = ARGV[i + 1]
  end
  if #pairs_ > 0 then redis.call('ZADD', KEYS[3], unpack(pairs_)) end
  return 'ok'
end

if op == 'finish' then
  if not holds_lease(ARGV[5]) then return 'lost' end
  draw_reveal(prefix, KEYS[2], ctl, now)
  return 'done'
end

return redis.error_reply('draw: unknown operation ' .. tostring(op))
