-- put_wave: create or update a wave's configuration atomically.
-- KEYS[1] cfg, KEYS[2] ctl; ARGV: field, value, field, value, ... (times in ms).
-- Bumps cfg version so every process reloads it. Returns 'created' or 'updated'.

local existed = redis.call('EXISTS', KEYS[1]) == 1
redis.call('HSET', KEYS[1], unpack(ARGV))
redis.call('HINCRBY', KEYS[1], 'version', 1)
if not existed then
  redis.call('HSETNX', KEYS[2], 'seq', 0)
  redis.call('HSETNX', KEYS[2], 'cursor', 0)
  return 'created'
end
return 'updated'
