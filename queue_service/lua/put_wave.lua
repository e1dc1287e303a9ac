-- put_wave: create or update a wave's configuration atomically.
-- KEYS[1] cfg, KEYS[2] ctl (the wave's fixed keys follow, unused here)
-- ARGV[1] a fresh random wave uid (kept only when the wave is created: tickets are signed
-- with it, so a deleted and re-created wave never accepts the old wave's tickets),
-- ARGV[2] a fresh secret draw seed and ARGV[3] its commitment (SHA-256, hex): kept only when
-- the wave has none and has not opened yet (public proof, draw.lua; the 'draw' hash under the
-- wave's prefix, keys.py),
-- ARGV[4..]: field, value, field, value, ... (times in ms).
-- Bumps cfg version so every process reloads it. Returns 'created' or 'updated'.

local existed = redis.call('EXISTS', KEYS[1]) == 1
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('HINCRBY', KEYS[1], 'version', 1)
local draw_key = string.sub(KEYS[1], 1, -4) .. 'draw'  -- KEYS[1] is '<prefix>cfg'
local open_seq = tonumber(redis.call('HGET', KEYS[2], 'open_seq')) or -1
if open_seq < 0 and redis.call('HEXISTS', draw_key, 'seed') == 0 then
  local t = redis.call('TIME')
  redis.call('HSET', draw_key, 'seed', ARGV[2], 'commitment', ARGV[3],
    'committed_ms', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
if not existed then
  redis.call('HSET', KEYS[1], 'uid', ARGV[1])
  redis.call('HSETNX', KEYS[2], 'seq', 0)
  redis.call('HSETNX', KEYS[2], 'cursor', 0)
  return 'created'
end
return 'updated'
