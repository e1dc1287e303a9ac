-- leave: a ticket holder gives the place up. Idempotent.
-- KEYS[1] cfg, KEYS[2] ctl; ARGV[1] now ms ('' = server time), ARGV[2] prefix, ARGV[3] seq.
-- A waiting ticket becomes "left" (skipped by admission at no cost); an admitted session ends
-- and frees its max_active slot. Returns 'left', 'ended', 'none' or 'unknown_wave'.

local now = clock(ARGV[1])
local prefix, seq = ARGV[2], tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown_wave' end
local seen_key = bucket_key(prefix, 'seen', seq)
local seen = redis.call('HGET', seen_key, seq)
if not seen then return 'none' end
local first = string.sub(seen, 1, 1)
if first == 'A' then
  if redis.call('ZREM', prefix .. 'active', seq) == 1 then
    redis.call('HSET', seen_key, seq, 'C' .. string.sub(seen, 2))
    redis.call('HINCRBY', KEYS[2], 'completed', 1)
    return 'ended'
  end
  return 'none'
end
if tonumber(seen) then
  redis.call('HSET', seen_key, seq, 'L')
  redis.call('HINCRBY', KEYS[2], 'left', 1)
  return 'left'
end
return 'none'
