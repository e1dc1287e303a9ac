-- outbox: what a sender (outbox.py) does with a message after trying it. Call-backs, issue 24
-- (docs/callbacks.md). The outbox is a stream per wave ('ob') read by every process through
-- one consumer group; a message stays pending until one of these ends it.
-- KEYS: the wave's fixed keys (keys.WaveKeys.fixed): cfg, ctl, pq, active, left, revocations.
-- ARGV[1] operation, ARGV[2] wave key prefix, ARGV[3] the consumer group, ARGV[4] entry id,
-- then per operation:
--   done     (delivered, or dropped because its ticket ended): acknowledged and deleted
--   failed   ARGV[5] now ms, ARGV[6] back-off base ms, ARGV[7] its cap ms, ARGV[8] a jitter
--            factor (0.8-1.2): a try counted ('ob:try' '<id>:n'), and the next may start after
--            base * 2^(tries-1), capped, times the jitter ('<id>:at'); the message stays
--            pending -> the tries so far
--   dead     ARGV[5..] field, value, ...: moved to the dead letters ('ob:dead', trimmed to
--            ARGV[5] entries; no contact is ever in them) and ended
-- Returns the tries so far ('failed'), else 1.

local op, prefix, group, id = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local outbox, tries = prefix .. 'ob', prefix .. 'ob:try'
local function finish()
  redis.call('XACK', outbox, group, id)
  redis.call('XDEL', outbox, id)
  redis.call('HDEL', tries, id .. ':n', id .. ':at')
end
if op == 'done' then
  finish()
  return 1
end
if op == 'failed' then
  local count = redis.call('HINCRBY', tries, id .. ':n', 1)
  local wait = math.min(tonumber(ARGV[7]), tonumber(ARGV[6]) * 2 ^ (count - 1))
  redis.call('HSET', tries, id .. ':at', math.floor(tonumber(ARGV[5]) + wait * tonumber(ARGV[8])))
  return count
end
if op == 'dead' then
  local fields = {}
  for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('XADD', prefix .. 'ob:dead', 'MAXLEN', '~', ARGV[5], '*', unpack(fields))
  finish()
  return 1
end
return redis.error_reply('outbox: unknown operation ' .. tostring(op))
