-- complete: the origin (or client) ends an admitted session, freeing its max_active slot, and
-- its token is revoked. Idempotent: a second call, or a call after the session expired,
-- changes nothing; nor does a token whose ticket number now belongs to somebody else.
-- KEYS: the wave's fixed keys (keys.WaveKeys.fixed): cfg, ctl, pq, active, left, revocations.
-- ARGV[1] now ms ('' = server time), ARGV[2] prefix, ARGV[3] seq, ARGV[4] incarnation id,
-- ARGV[5] stamp, ARGV[6] the token's jti.
-- Returns 'completed', 'none' or 'unknown_wave'.

local now = clock(ARGV[1])
local prefix, seq, inc, stamp, jti = ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
if redis.call('EXISTS', KEYS[1]) == 0 then return 'unknown_wave' end
local ctl = load_ctl(KEYS[2])
if not issued_here(ctl, inc, seq) then return 'none' end
local record = ticket_record(prefix, seq)
if not record or record.stamp ~= stamp then return 'none' end
local seen = redis.call('HGET', bucket_key(prefix, 'seen', seq), seq) or ''
local mark = string.sub(seen, 1, 1)
if mark ~= SEEN.admitted and mark ~= SEEN.claimed then return 'none' end
if end_session(prefix, KEYS[2], seq, seen, jti, now) then return 'completed' end
return 'none'
