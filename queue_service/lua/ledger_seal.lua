-- ledger_seal: the stored hash chain of a wave's admission ledger (public proof, issue 25).
-- The service computes the chain (queue_service/ledger.py: SHA-256, which Redis scripts do not
-- have) and stores, at most once per entry whoever computes it, the head and a checkpoint at
-- the end of every full page, so that an entry changed in Redis afterwards breaks the chain
-- the service serves.
-- KEYS: the wave's fixed keys (keys.WaveKeys.fixed): cfg, ctl, pq, active, left, revocations.
-- Its own keys live under the wave's prefix (same slot): 'ledger', 'ledger:state', 'ledger:cp'.
-- ARGV[1] operation, ARGV[2] wave key prefix, then per operation:
--   read   ARGV[3] most entries -> {sealed, head ('' = none yet), checkpoints, entries from
--          position sealed on (at most ARGV[3]), ledger length}
--   page   ARGV[3] first position, ARGV[4] last position, ARGV[5] a checkpoint's number (-1:
--          none) -> {lines first..last, that checkpoint ('' when absent), ledger length}
--   write  ARGV[3] the sealed count the caller read, ARGV[4] the new sealed count, ARGV[5] the
--          new head, ARGV[6..] the checkpoints of the pages completed in between, in order
--          -> {'ok' | 'moved' (another process sealed meanwhile: nothing written), sealed, head}
-- Returns {'unknown_wave'} for a wave that does not exist.

local op, prefix = ARGV[1], ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown_wave'} end
local ledger_key, state_key, cp_key = prefix .. 'ledger', prefix .. 'ledger:state',
  prefix .. 'ledger:cp'
local state = redis.call('HMGET', state_key, 'sealed', 'head')
local sealed, head = tonumber(state[1]) or 0, state[2] or ''

if op == 'read' then
  local most = tonumber(ARGV[3])
  local entries = redis.call('LRANGE', ledger_key, sealed, sealed + most - 1)
  return {sealed, head, redis.call('LLEN', cp_key), entries, redis.call('LLEN', ledger_key)}
end

if op == 'page' then
  local checkpoint = ''
  if tonumber(ARGV[5]) >= 0 then
    checkpoint = redis.call('LINDEX', cp_key, tonumber(ARGV[5])) or ''
  end
  return {redis.call('LRANGE', ledger_key, tonumber(ARGV[3]), tonumber(ARGV[4])), checkpoint,
    redis.call('LLEN', ledger_key)}
end

if op == 'write' then
  local expected, new_sealed, new_head = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
  if sealed ~= expected or new_sealed > redis.call('LLEN', ledger_key) then
    return {'moved', sealed, head}
  end
  if #ARGV >= 6 then redis.call('RPUSH', cp_key, unpack(ARGV, 6)) end
  redis.call('HSET', state_key, 'sealed', new_sealed, 'head', new_head)
  return {'ok', new_sealed, new_head}
end

return redis.error_reply('ledger_seal: unknown operation ' .. tostring(op))
