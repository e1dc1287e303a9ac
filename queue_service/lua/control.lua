-- control: pause, resume or close a wave.
-- KEYS[1] cfg, KEYS[2] ctl; ARGV[1] action (pause | resume | close).
-- Returns 'ok', 'closed' (resume of a closed wave is refused) or 'unknown_wave'.

if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown_wave' end
local action = ARGV[1]
if action == 'close' then
  redis.call('HSET', KEYS[2], 'closed', 1)
  return 'ok'
end
if redis.call('HGET', KEYS[2], 'closed') == '1' then return 'closed' end
if action == 'pause' then redis.call('HSET', KEYS[2], 'paused', 1) end
if action == 'resume' then redis.call('HSET', KEYS[2], 'paused', 0) end
return 'ok'
