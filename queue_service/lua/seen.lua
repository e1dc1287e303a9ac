-- seen: record the poll deadlines that status answers promised, in one batch per wave.
-- KEYS: the wave's fixed keys (keys.WaveKeys.fixed): cfg, ctl, pq, active, left, revocations.
-- ARGV[1] wave key prefix, ARGV[2] seqs and ARGV[3] their deadlines (service ms), each
-- comma-joined. A deadline only ever moves later, and only for a ticket still waiting (its
-- value is a number, or a call-back holder not yet reached: protocol.SeenMark): an admitted,
-- abandoned or left ticket is never revived by a late write.
-- Returns the number of deadlines moved.

local prefix = ARGV[1]
local seqs, deadlines = split_list(ARGV[2]), split_list(ARGV[3])
if #deadlines ~= #seqs then return redis.error_reply('seen: request lists differ in length') end
local moved = 0
for i, seq_text in ipairs(seqs) do
  local seq, deadline = tonumber(seq_text), tonumber(deadlines[i])
  local key = bucket_key(prefix, 'seen', seq)
  local raw = redis.call('HGET', key, seq)
  local current = tonumber(raw)
  if current and current < deadline then
    redis.call('HSET', key, seq, deadline)
    moved = moved + 1
  elseif not current and raw then
    -- a call-back holder polling: kept with their mark (here when the line reaches them?)
    local mark, window, last = callback_state(raw)
    if mark == SEEN.opted_in and last < deadline then
      redis.call('HSET', key, seq, SEEN.opted_in .. deadline)
      moved = moved + 1
    elseif mark == SEEN.notified and last < deadline then
      redis.call('HSET', key, seq, SEEN.notified .. window .. ':' .. deadline)
      moved = moved + 1
    end
  end
end
return moved
