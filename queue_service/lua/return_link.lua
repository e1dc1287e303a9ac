-- return_link: a holder follows the one-time return link of a call-back. Call-backs, issue 24
-- (docs/callbacks.md).
-- KEYS: the wave's fixed keys (keys.WaveKeys.fixed): cfg, ctl, pq, active, left, revocations.
-- ARGV[1] now ms ('' = Redis server time), ARGV[2] wave key prefix, ARGV[3] the hash of the
-- link's code, ARGV[4] its rc: bucket.
-- The code works once: its index entry is deleted here, whatever follows. A holder the line
-- has reached while away (K) is back: admitted first at the next step (the `rt` list); one
-- not reached yet keeps waiting as before (still called back if they go away again).
-- Returns {result, seq, stamp, incarnation, ended incarnations}: result 'back', 'waiting',
-- 'closed' (the wave closed or filled before their turn), or 'unknown' (no such code, used
-- already, or its ticket ended); or {'unknown_wave'}.

local now = clock(ARGV[1])
local prefix, code_hash, code_bucket = ARGV[2], ARGV[3], ARGV[4]
local cfg = load_cfg(KEYS[1])
if not cfg then return {'unknown_wave'} end
local index_key = prefix .. 'rc:' .. code_bucket
local seq = tonumber(redis.call('HGET', index_key, code_hash))
if not seq then return {'unknown', 0, '', '', ''} end
redis.call('HDEL', index_key, code_hash)  -- once
local ctl = load_ctl(KEYS[2])
local record = ticket_record(prefix, seq)
local seen_key = bucket_key(prefix, 'seen', seq)
local mark, window = callback_state(redis.call('HGET', seen_key, seq))
if not record or not mark then return {'unknown', 0, '', '', ''} end
local result = 'waiting'
local state = wave_state(cfg, ctl, now)
if state == 'closed' or state == 'full' then
  result = 'closed'
elseif mark == SEEN.called then
  redis.call('HSET', seen_key, seq, SEEN.returned .. window)
  redis.call('ZREM', prefix .. 'called', seq)
  redis.call('RPUSH', prefix .. 'rt', seq)
  result = 'back'
elseif mark == SEEN.returned then
  result = 'back'
end
return {result, seq, record.stamp, ctl.inc, ctl.incs}
