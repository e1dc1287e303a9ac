-- complete: the origin (or client) ends an admitted session, freeing its max_active slot.
-- Idempotent: a second call, or a call after the session expired, changes nothing.
-- KEYS[1] cfg, KEYS[2] ctl; ARGV[1] prefix, ARGV[2] seq.
-- Returns 'completed', 'none' or 'unknown_wave'.

local prefix, seq = ARGV[1], tonumber(ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown_wave' end
if redis.call('ZREM', prefix .. 'active', seq) == 0 then return 'none' end
local seen_key = bucket_key(prefix, 'seen', seq)
local seen = redis.call('HGET', seen_key, seq) or 'A0'
redis.call('HSET', seen_key, seq, 'C' .. string.sub(seen, 2))
redis.call('HINCRBY', KEYS[2], 'completed', 1)
return 'completed'
