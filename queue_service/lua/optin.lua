-- optin: a ticket holder asks to be called back (or changes how). Call-backs, issue 24
-- (docs/callbacks.md).
-- KEYS: the wave's fixed keys (keys.WaveKeys.fixed): cfg, ctl, pq, active, left, revocations.
-- ARGV[1] now ms ('' = Redis server time), ARGV[2] wave key prefix, ARGV[3] seq,
-- ARGV[4] incarnation id, ARGV[5] stamp, ARGV[6] the record 'lang|kind|code hash|code bucket'
-- (the return code's hash and its rc: bucket), ARGV[7] the contact's ciphertext (AES-GCM,
-- sealed by the service: never readable here), ARGV[8] most changes of contact per ticket.
-- From now on the holder's poll deadline no longer applies (seen 'O<d>', protocol.SeenMark):
-- they may close the page. The ticket joins the call-back set by admission order (`cb`, post-
-- opening tickets by seq - 1, drawn pre-queue tickets by rank), or `cb:pq` while the
-- pre-queue has no order yet (notify.lua ranks them after the draw). A holder already opted
-- in only changes the contact (counted: a ticket cannot be turned into a message cannon).
-- Returns {result, seen mark}: 'opted_in', 'updated', 'too_many_changes', 'not_waiting'
-- (admitted, ended, or the wave closed), 'none' (not this ticket), or {'unknown_wave'}.

local now = clock(ARGV[1])
local prefix, seq, inc, stamp = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local head, sealed, max_changes = ARGV[6], ARGV[7], tonumber(ARGV[8])
local cfg = load_cfg(KEYS[1])
if not cfg then return {'unknown_wave'} end
local ctl = load_ctl(KEYS[2])
open_if_due(KEYS[2], ctl, cfg, now)
if not issued_here(ctl, inc, seq) then return {'none', ''} end
local record = ticket_record(prefix, seq)
if not record or record.stamp ~= stamp then return {'none', ''} end
local state = wave_state(cfg, ctl, now)
if state == 'closed' or state == 'full' then return {'not_waiting', ''} end
local seen_key = bucket_key(prefix, 'seen', seq)
local seen = redis.call('HGET', seen_key, seq)
local deadline = tonumber(seen)
local mark = callback_state(seen)
if not deadline and not mark then return {'not_waiting', ''} end

local ct_key = bucket_key(prefix, 'ct', seq)
local changes = 0
local previous = redis.call('HGET', ct_key, seq)
if previous then
  changes = (tonumber(string.match(previous, '^[^|]*|[^|]*|[^|]*|[^|]*|(%d+)|')) or 0) + 1
  if changes > max_changes then return {'too_many_changes', mark or ''} end
end
local code_hash, code_bucket = string.match(head, '^[^|]*|[^|]*|([^|]*)|([^|]*)$')
redis.call('HSET', ct_key, seq, head .. '|' .. changes .. '|' .. sealed)
redis.call('HSET', prefix .. 'rc:' .. code_bucket, code_hash, seq)
if mark then return {'updated', mark} end

redis.call('HSET', seen_key, seq, SEEN.opted_in .. deadline)
if ctl.open_seq < 0 or (seq <= ctl.open_seq and ctl.drawn ~= 1) then
  redis.call('SADD', prefix .. 'cb:pq', seq)
else
  redis.call('ZADD', prefix .. 'cb', order_of(prefix, ctl, seq), seq)
end
return {'opted_in', SEEN.opted_in}
