-- put_wave: create or update a wave's configuration atomically.
-- KEYS[1] cfg, KEYS[2] ctl
-- ARGV[1] a fresh random wave uid (kept only when the wave is created: tickets are signed
-- with it, so a deleted and re-created wave never accepts the old wave's tickets),
-- ARGV[2..]: field, value, field, value, ... (times in ms).
-- Bumps cfg version so every process reloads it. Returns 'created' or 'updated'.

local existed = redis.call('EXISTS', KEYS[1]) == 1
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('HINCRBY', KEYS[1], 'version', 1)
if not existed then
  redis.call('HSET', KEYS[1], 'uid', ARGV[1])
  redis.call('HSETNX', KEYS[2], 'seq', 0)
  redis.call('HSETNX', KEYS[2], 'cursor', 0)
  return 'created'
end
return 'updated'
