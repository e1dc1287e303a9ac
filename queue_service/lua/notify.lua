-- notify: tell the opted-in holders whose turn is near. Call-backs, issue 24
-- (docs/callbacks.md). Any process may run it at any time: each holder is told once, however
-- many run it, because the move from 'O' to 'N' and the message happen in this one call.
-- KEYS: the wave's fixed keys (keys.WaveKeys.fixed): cfg, ctl, pq, active, left, revocations.
-- ARGV[1] now ms ('' = Redis server time), ARGV[2] wave key prefix, ARGV[3] places ahead of
-- the cursor that are "near" (the wave's lead_s over the caller's seconds per place),
-- ARGV[4] most holders told in this call.
-- Holders whose admission order is below cursor + places are marked told ('N<w>:<d>', the
-- return window w = service now + return_window_ms) and a 'near' message goes to the outbox.
-- Pre-queue holders who opted in before the draw (`cb:pq`) are first given their drawn rank.
-- Returns {told now, holders still waiting to be told}, or {'unknown_wave'}.

local now = clock(ARGV[1])
local prefix, places, most = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local cfg = load_cfg(KEYS[1])
if not cfg then return {'unknown_wave'} end
local ctl = load_ctl(KEYS[2])
local pending_key, unranked_key = prefix .. 'cb', prefix .. 'cb:pq'
if ctl.open_seq < 0 or ctl.drawn ~= 1 then
  return {0, redis.call('ZCARD', pending_key) + redis.call('SCARD', unranked_key)}
end
-- the draw is done: the pre-queue's holders have their order (their rank, draw.lua)
for _ = 1, 10 do
  local batch = redis.call('SPOP', unranked_key, 1000)
  if #batch == 0 then break end
  for _, member in ipairs(batch) do
    local rank = redis.call('ZRANK', KEYS[3], member)
    if rank then redis.call('ZADD', pending_key, rank, member) end
  end
end

local service_now = now - ctl.down_ms
local told = 0
local due = redis.call('ZRANGEBYSCORE', pending_key, '-inf', '(' .. (ctl.cursor + places),
  'LIMIT', 0, most)
for _, member in ipairs(due) do
  local seq = tonumber(member)
  redis.call('ZREM', pending_key, member)
  local seen_key = bucket_key(prefix, 'seen', seq)
  local mark, _, deadline = callback_state(redis.call('HGET', seen_key, seq))
  local record = ticket_record(prefix, seq)
  if mark == SEEN.opted_in and record then
    local window = service_now + cfg.return_window_ms
    redis.call('HSET', seen_key, seq, SEEN.notified .. window .. ':' .. deadline)
    outbox_add(prefix, seq, record.stamp, 'near', now + cfg.return_window_ms)
    told = told + 1
  end
end
return {told, redis.call('ZCARD', pending_key) + redis.call('SCARD', unranked_key)}
