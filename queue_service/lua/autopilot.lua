-- autopilot: the autopilot's decisions for a wave, exactly one per interval however many
-- processes and replicas run it (autopilot_loop.py), and the operator's manual changes.
-- KEYS: the wave's fixed keys (keys.WaveKeys.fixed): cfg, ctl, pq, active, left, revocations.
-- Its own keys live under the wave's prefix (same slot): 'ap' (hash: the controller's state,
-- the last signals and decision, the claim of the current interval) and 'ap:log' (stream: the
-- decisions and manual changes, newest last, about 1000 kept).
-- Time is Redis server time (ms): every process agrees on which interval it is.
-- ARGV[1] operation, ARGV[2] wave key prefix, then per operation:
--   claim  ARGV[3] owner, ARGV[4] interval ms
--          -> {'claimed' | 'not_due', interval index, state pairs}: the first process to ask in
--          an interval (index = floor(now / interval)) gets it; every other gets 'not_due'
--   apply  ARGV[3] owner, ARGV[4] interval index, ARGV[5] 'on' (apply) or 'advise' (record only),
--          ARGV[6] target, ARGV[7] admit rate, ARGV[8] the decision as a JSON object of strings
--          (action, reason, signals, the controller's state: written to 'ap' and the log)
--          -> {'applied' | 'advised' | 'lost', previous max_active, previous admit_rate}: only
--          the interval's claimant applies; 'on' writes max_active and admit_rate into the
--          wave's configuration (its version bumps, so every process reloads it)
--   manual ARGV[3] hold until ms, ARGV[4] the operator's max_active, ARGV[5] actor
--          -> 'held': the autopilot continues from the operator's value once the hold ends
--          (and forgets any target it was climbing back to: 'recover_to')
-- Returns {'unknown_wave'} for a wave that does not exist.

local op, prefix = ARGV[1], ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_wave'} end
local ap_key, log_key = prefix .. 'ap', prefix .. 'ap:log'
local now = clock('')

local function log_entry(fields)
  redis.call('XADD', log_key, 'MAXLEN', '~', 1000, '*', unpack(fields))
end

if op == 'claim' then
  local owner, interval_ms = ARGV[3], tonumber(ARGV[4])
  local index = math.floor(now / interval_ms)
  local last = tonumber(redis.call('HGET', ap_key, 'claim_index')) or -1
  local status = 'not_due'
  if index > last then
    redis.call('HSET', ap_key, 'claim_index', index, 'claim_owner', owner)
    status = 'claimed'
  end
  return {status, index, redis.call('HGETALL', ap_key)}
end

if op == 'apply' then
  local owner, index, mode = ARGV[3], ARGV[4], ARGV[5]
  if redis.call('HGET', ap_key, 'claim_owner') ~= owner
      or redis.call('HGET', ap_key, 'claim_index') ~= index then
    return {'lost', 0, '0'}
  end
  local target, rate = tonumber(ARGV[6]), ARGV[7]
  local record = {'index', index, 'mode', mode, 'target', ARGV[6], 'rate', rate}
  for name, value in pairs(cjson.decode(ARGV[8])) do
    record[#record + 1] = name
    record[#record + 1] = tostring(value)
  end
  local previous = redis.call('HMGET', KEYS[1], 'max_active', 'admit_rate',
    'admit_burst_configured')
  redis.call('HSET', ap_key, 'decided_at', now, unpack(record))
  redis.call('HINCRBY', ap_key, 'decisions', 1)
  local applied = 0
  if mode == 'on' and (tonumber(previous[1]) ~= target
      or tonumber(previous[2]) ~= tonumber(rate)) then
    redis.call('HSET', KEYS[1], 'max_active', target, 'admit_rate', rate)
    if (tonumber(previous[3]) or 0) == 0 then  -- the burst follows the rate unless configured
      redis.call('HSET', KEYS[1], 'admit_burst', string.format('%.6f',
        math.max(1, tonumber(rate))))
    end
    redis.call('HINCRBY', KEYS[1], 'version', 1)
    applied = 1
  end
  record[#record + 1] = 'applied'
  record[#record + 1] = applied
  log_entry(record)
  local status = 'advised'
  if mode == 'on' then status = 'applied' end
  return {status, tonumber(previous[1]) or 0, previous[2] or '0'}
end

if op == 'manual' then
  redis.call('HSET', ap_key, 'hold_until', ARGV[3], 'target', ARGV[4], 'recover_to', 0)
  log_entry({'action', 'manual', 'target', ARGV[4], 'hold_until', ARGV[3], 'actor', ARGV[5]})
  return 'held'
end

return redis.error_reply('autopilot: unknown operation ' .. tostring(op))
