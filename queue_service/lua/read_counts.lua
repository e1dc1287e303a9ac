-- read_counts: a wave's counts for the public wave info and the admin views. Writes nothing
-- (the script carries the no-writes flag, so Redis refuses it any write, and it may run on a
-- replica): expired sessions are counted as gone without removing them, and a due opening
-- is shown as open without freezing the pre-queue (the admission step does both).
-- KEYS: the wave's fixed keys (keys.WaveKeys.fixed): cfg, ctl, pq, active, left, revocations.
-- ARGV[1] now ms ('' = Redis server time), ARGV[2] prefix.
-- Returns the counts as name/value pairs, the same names as admit.lua; or {'unknown_wave'}.

local now = clock(ARGV[1])
local prefix = ARGV[2]
local cfg = load_cfg(KEYS[1])
if not cfg then return {'unknown_wave'} end
local ctl = load_ctl(KEYS[2])
if ctl.open_seq < 0 and now >= cfg.opens_at then ctl.open_seq = ctl.seq end
local pq_size = 0
if ctl.open_seq < 0 then pq_size = redis.call('ZCARD', KEYS[3]) end
local active = redis.call('ZCOUNT', KEYS[4], '(' .. now, '+inf')
local expired_due = redis.call('ZCARD', KEYS[4]) - active
return {'state', wave_state(cfg, ctl, now), 'seq', ctl.seq, 'cursor', ctl.cursor,
  'open_seq', ctl.open_seq, 'prequeue', pq_size, 'active', active, 'admitted', ctl.admitted,
  'abandoned', ctl.abandoned, 'left', ctl.left, 'completed', ctl.completed,
  'expired', ctl.expired + expired_due, 'tokens', tostring(ctl.tokens or cfg.admit_burst),
  'cfg_version', cfg.version, 'now_ms', now, 'down_ms', ctl.down_ms, 'inc', ctl.inc,
  'incs', ctl.incs, 'left_total', ctl.left_base + redis.call('LLEN', KEYS[5]),
  'left_from', ctl.left_base, 'abandoned_now', 0, 'expired_now', 0, 'began', '',
  'drawn', ctl.drawn, 'ledger', redis.call('LLEN', prefix .. 'ledger'),
  'called', redis.call('ZCARD', prefix .. 'called'), 'outbox', redis.call('XLEN', prefix .. 'ob')}
