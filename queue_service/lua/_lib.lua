-- Shared helpers, prepended to every script at load time (Redis scripts cannot import), after
-- the code tables generated from queue_service/protocol.py.
-- Units: times are milliseconds since the Unix epoch; rates are per second.
--
-- Keys: every key a script touches lives under the wave prefix ARGV "prefix" =
-- 'glb:{w:<wave>}:' and so in the wave's one cluster slot. The wave's fixed keys are declared
-- in KEYS, in the order of keys.WaveKeys.fixed: KEYS[1] cfg, KEYS[2] ctl, KEYS[3] pq,
-- KEYS[4] active, KEYS[5] left, KEYS[6] revocations. The bucket keys (reg:, seen:, tk:, rl:) are
-- (and eq:, used enqueue tokens) are
-- not: they depend on ticket numbers and hashes the script itself assigns or reads, so they
-- cannot be named before the call. Redis 7 and Redis Cluster accept this because they share
-- the hash tag, hence the slot, of KEYS[1] (tests/e2e/test_redis_cluster.py runs every script on a
-- real cluster); a proxy that insists on declared keys only is not supported.
--
-- Service time: abandonment is judged on a clock that stops while the service could not
-- reach Redis. ctl.down_ms accumulates every gap between admission steps longer than the
-- step interval allows (Redis down, every queue process down or cut off); service time is
-- now - down_ms. Poll deadlines are stored in service time, so an outage of any length never
-- makes a polite ticket look abandoned.

local BUCKET_SIZE = 100

local function clock(arg)
  if arg and arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function bucket_key(prefix, kind, seq)
  return prefix .. kind .. ':' .. math.floor(seq / BUCKET_SIZE)
end

local CFG_FIELDS = {'opens_at', 'closes_at', 'admit_rate', 'admit_burst', 'max_active',
  'session_ttl_ms', 'quota', 'prequeue_ms', 'abandon_ms', 'version', 'notify_on',
  'return_window_ms'}

local function load_cfg(cfg_key)
  local raw = redis.call('HMGET', cfg_key, unpack(CFG_FIELDS))
  if not raw[1] then return nil end
  local cfg = {}
  for i, name in ipairs(CFG_FIELDS) do cfg[name] = tonumber(raw[i]) or 0 end
  return cfg
end

local CTL_NUMBERS = {'seq', 'cursor', 'open_seq', 'admitted', 'abandoned', 'left', 'completed',
  'expired', 'tokens', 'tokens_at', 'paused', 'closed', 'down_ms', 'step_at', 'left_base',
  'drawn'}
local CTL_TEXTS = {'inc', 'inc_run', 'incs'}

local function load_ctl(ctl_key)
  local names = {}
  for _, name in ipairs(CTL_NUMBERS) do names[#names + 1] = name end
  for _, name in ipairs(CTL_TEXTS) do names[#names + 1] = name end
  local raw = redis.call('HMGET', ctl_key, unpack(names))
  local ctl = {}
  for i, name in ipairs(CTL_NUMBERS) do ctl[name] = tonumber(raw[i]) end
  for i, name in ipairs(CTL_TEXTS) do ctl[name] = raw[#CTL_NUMBERS + i] or '' end
  for _, name in ipairs({'seq', 'cursor', 'admitted', 'abandoned', 'left', 'completed',
      'expired', 'paused', 'closed', 'down_ms', 'step_at', 'left_base', 'drawn'}) do
    ctl[name] = ctl[name] or 0
  end
  ctl.open_seq = ctl.open_seq or -1
  return ctl
end

-- The pre-queue closes at opening: its size is frozen as open_seq, and from then on every
-- new ticket is ordered after it. Runs in whichever writing script first sees the opening.
local function open_if_due(ctl_key, ctl, cfg, now)
  if ctl.open_seq < 0 and now >= cfg.opens_at then
    ctl.open_seq = ctl.seq
    redis.call('HSET', ctl_key, 'open_seq', ctl.open_seq)
  end
end

local function wave_state(cfg, ctl, now)
  if ctl.closed == 1 or now >= cfg.closes_at then return 'closed' end
  if ctl.open_seq < 0 then
    if now < cfg.opens_at - cfg.prequeue_ms then return 'scheduled' end
    return 'prequeue'
  end
  if cfg.quota > 0 and ctl.admitted >= cfg.quota then return 'full' end
  if ctl.paused == 1 then return 'paused' end
  return 'open'
end

-- Incarnations: tickets carry the id of the incarnation that issued them. When the data may have
-- lost writes, ticket numbers after ctl.seq may have been handed out already: before any new
-- number is issued, the incarnation ends at ctl.seq (recorded in ctl.incs as
-- 'id:last_seq,...') and a new one begins. A ticket of an ended incarnation is valid only up to
-- its last seq; an unknown incarnation is a lost one. Two signs of lost writes:
-- - the Redis run id differs from the one the incarnation started under (a restart from disk,
--   a replica promoted);
-- - a caller has already seen this incarnation issue more tickets than ctl.seq holds (a
--   rollback in place: DEBUG RELOAD, FLUSHALL + RESTORE, a restore tool; the run id stays).
-- Every process passes the highest seq it has seen (its admission steps, its joins), so a
-- rollback is noticed at the next step of any process that saw a lost number. A number handed
-- out again before that is still never confused with the lost one: every ticket also carries a
-- random stamp, kept in its record (tk), that status, leave, complete and join compare; and an
-- incarnation ended by a rollback is marked (ctl.incs 'id:last_seq!'), so that no process
-- answers its tickets from its own copy without that check.
-- Returns nil, 'restart' or 'rollback' (what began a new incarnation).
local function redis_run_id()
  return string.match(redis.call('INFO', 'server'), 'run_id:(%w+)') or ''
end

local function begin_incarnation_if_needed(ctl_key, ctl, new_inc, known_inc, known_seq)
  local run_id = redis_run_id()
  local reason = nil
  if ctl.inc == '' or ctl.inc_run ~= run_id then
    reason = 'restart'
  elseif known_inc == ctl.inc and (tonumber(known_seq) or 0) > ctl.seq then
    reason = 'rollback'
  end
  if not reason then return nil end
  if ctl.inc ~= '' then
    local ended = ctl.inc .. ':' .. ctl.seq
    -- after a rollback in place some of its numbers may have been handed out again before
    -- anyone noticed: '!' tells every process to check its tickets' stamps in Redis rather
    -- than answer them from its copy (local_status.py)
    if reason == 'rollback' then ended = ended .. '!' end
    if ctl.incs == '' then ctl.incs = ended else ctl.incs = ctl.incs .. ',' .. ended end
  else
    reason = nil  -- the first incarnation of a new wave
  end
  ctl.inc, ctl.inc_run = new_inc, run_id
  redis.call('HSET', ctl_key, 'inc', ctl.inc, 'inc_run', run_id, 'incs', ctl.incs)
  return reason
end

local function issued_here(ctl, inc, seq)
  if inc == ctl.inc then return seq <= ctl.seq end
  for id, last in string.gmatch(ctl.incs, '([^:,]+):(%d+)') do
    if id == inc then return seq <= tonumber(last) end
  end
  return false
end

-- A ticket's record (tk): 'rhash|joined_ms|eta_at_join_s|stamp|registrant_bucket', written at
-- join; nil once reclaimed.
local function ticket_record(prefix, seq)
  local raw = redis.call('HGET', bucket_key(prefix, 'tk', seq), seq)
  if not raw then return nil end
  local rhash, joined, eta, stamp, bucket =
    string.match(raw, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
  return {rhash = rhash or '', joined = tonumber(joined) or 0, eta = tonumber(eta) or 0,
    stamp = stamp or '', bucket = bucket or ''}
end

-- Whether a presented ticket is the one its number was issued to (its stamp is the record's).
-- A reclaimed ticket (no record) is judged by its state alone: there is no one else's to take.
local function stamp_matches(prefix, seq, stamp)
  local record = ticket_record(prefix, seq)
  return record == nil or record.stamp == stamp
end

-- A finished ticket (left, abandoned, a session that expired) is forgotten: its record, its
-- state and the registrant's link to it. Its status is then 'expired' (issued, and gone), and
-- its registrant joins anew. Completed tickets are kept: a registrant who registered may not
-- queue again.
-- Call-backs (issue 24, docs/callbacks.md). A holder who opted in has a record
-- ct:<seq/100> seq -> 'lang|kind|return code hash|its bucket|changes|ciphertext' (the contact,
-- AES-GCM: only the service can read it), and an index rc:<b> code hash -> seq for the
-- one-time return link. Their seen value carries a mark (protocol.SeenMark O, N, K, R).
-- Returns mark, window end, poll deadline (service ms) for a call-back seen value, else nil.
local function callback_state(seen)
  if not seen then return nil end
  local mark = string.sub(seen, 1, 1)
  if mark == SEEN.opted_in then return mark, 0, tonumber(string.sub(seen, 2)) or 0 end
  if mark == SEEN.notified then
    local window, deadline = string.match(seen, '^.(%-?%d+):(%-?%d+)$')
    return mark, tonumber(window) or 0, tonumber(deadline) or 0
  end
  if mark == SEEN.called or mark == SEEN.returned then
    return mark, tonumber(string.sub(seen, 2)) or 0, 0
  end
  return nil
end

-- The contact, its return code and its place in the call-back sets are deleted: the ticket
-- ended, or no longer needs calling (admitted). The carry-over account (ca:) goes with them.
local function callback_forget(prefix, seq)
  redis.call('HDEL', bucket_key(prefix, 'ca', seq), seq)
  local key = bucket_key(prefix, 'ct', seq)
  local record = redis.call('HGET', key, seq)
  if not record then return end
  local code_hash, code_bucket = string.match(record, '^[^|]*|[^|]*|([^|]*)|([^|]*)|')
  if code_hash and code_hash ~= '' then
    redis.call('HDEL', prefix .. 'rc:' .. code_bucket, code_hash)
  end
  redis.call('HDEL', key, seq)
  redis.call('ZREM', prefix .. 'cb', seq)
  redis.call('SREM', prefix .. 'cb:pq', seq)
  redis.call('ZREM', prefix .. 'called', seq)
end

-- A message for the outbox (outbox.py sends it): which ticket, which message ('near', 'turn',
-- 'carried'), and until when (wall ms) the holder may come back. No contact: the sender reads
-- it from the ticket's record at sending time, so a message for a ticket that ended is dropped.
local function outbox_add(prefix, seq, stamp, kind, until_ms)
  redis.call('XADD', prefix .. 'ob', '*', 'seq', seq, 'stamp', stamp, 'kind', kind,
    'until', math.floor(until_ms))
end

local function reclaim(prefix, seq, record)
  callback_forget(prefix, seq)
  record = record or ticket_record(prefix, seq)
  if record then
    local reg_key = prefix .. 'reg:' .. record.bucket
    if tonumber(redis.call('HGET', reg_key, record.rhash)) == seq then
      redis.call('HDEL', reg_key, record.rhash)
    end
    redis.call('HDEL', bucket_key(prefix, 'tk', seq), seq)
  end
  redis.call('HDEL', bucket_key(prefix, 'seen', seq), seq)
end

-- GCRA: one request costs one emission interval; up to `burst` may come at once.
-- `rules` is a list of {key, interval ms, burst}: every rule is checked before any is charged,
-- so a request refused by one rule costs nothing under the others.
-- Returns 0 and 0 when allowed (and charged), else the milliseconds until a retry and the
-- index of the rule that refused.
local function gcra(now, rules)
  local new_tats = {}
  for i, rule in ipairs(rules) do
    local tat = tonumber(redis.call('GET', rule[1])) or now
    if tat < now then tat = now end
    new_tats[i] = tat + rule[2]
    local allow_at = new_tats[i] - rule[3] * rule[2]
    if now < allow_at then return math.ceil(allow_at - now), i end
  end
  for i, rule in ipairs(rules) do
    redis.call('SET', rule[1], string.format('%.3f', new_tats[i]),
      'PX', math.max(1, math.ceil(new_tats[i] - now)))
  end
  return 0, 0
end

-- The 0-based place in admission order of ticket `seq`: pre-queue tickets by their random
-- rank, later tickets by join order after the whole pre-queue block.
local function order_of(prefix, ctl, seq)
  if ctl.open_seq >= 0 and seq <= ctl.open_seq then
    return redis.call('ZRANK', KEYS[3], seq)
  end
  return seq - 1
end

-- What a ticket holder sees (reads only). Returns {state name, order (-1 unless waiting),
-- admitted_at ms (0 = never admitted), seen value}.
local function ticket_view(prefix, ctl, seq, now, wave_state_now)
  local seen = redis.call('HGET', bucket_key(prefix, 'seen', seq), seq)
  if not seen then return {'expired', -1, 0, nil} end  -- reclaimed: issued, and finished
  local mark = string.sub(seen, 1, 1)
  if mark == SEEN.admitted or mark == SEEN.claimed then
    local admitted_at = tonumber(string.sub(seen, 2))
    local until_ms = tonumber(redis.call('ZSCORE', KEYS[4], seq))
    if until_ms and until_ms > now then return {'admitted', -1, admitted_at, seen} end
    return {'expired', -1, admitted_at, seen}
  end
  if mark == SEEN.completed then return {'completed', -1, tonumber(string.sub(seen, 2)), seen} end
  if wave_state_now == 'closed' or wave_state_now == 'full' then return {'closed', -1, 0, seen} end
  -- called back (the line has reached them) or back: first in line, admitted at the next step
  if mark == SEEN.called or mark == SEEN.returned then return {'waiting', ctl.cursor, 0, seen} end
  if ctl.open_seq < 0 then return {'prequeue', -1, 0, seen} end
  -- the pre-queue's order exists once it is drawn (draw.lua), moments after the opening
  if seq <= ctl.open_seq and ctl.drawn ~= 1 then return {'prequeue', -1, 0, seen} end
  return {'waiting', order_of(prefix, ctl, seq), 0, seen}
end

-- 'a,b,,c' -> {'a', 'b', '', 'c'} (empty items kept, so parallel lists stay aligned)
local function split_list(text)
  local items = {}
  for item in string.gmatch(text .. ',', '([^,]*),') do items[#items + 1] = item end
  return items
end

-- A session ended (complete, or leave while admitted): its slot is freed and its token is
-- revoked: appended to the wave's revocations stream, the feed origins read
-- (GET /api/v1/waves/{wave}/revoked). A stream, because its entry ids only ever grow (Redis
-- makes them so even when the clock steps back), so a reader that resumes after the last id it
-- saw misses nothing, however many sessions end within one millisecond. Returns true if the
-- session was live.
local function end_session(prefix, ctl_key, seq, seen, jti, now)
  if redis.call('ZREM', KEYS[4], seq) == 0 then return false end
  redis.call('HSET', bucket_key(prefix, 'seen', seq), seq, SEEN.completed .. string.sub(seen, 2))
  redis.call('HINCRBY', ctl_key, 'completed', 1)
  if jti ~= '' then redis.call('XADD', KEYS[6], '*', 'jti', jti) end
  return true
end

-- Public proof (issue 25, docs/audit.md): the admission ledger, one canonical line per entry,
-- appended here only, in the order things were decided:
--   '<version> <position> <kind> <at ms> <name>=<value> ...'
-- version 1; position = the entry's 0-based index in the ledger; kinds: genesis (wave,
-- commitment), config (the admission settings in force from then on), draw (the pre-queue
-- size and the revealed seed), ticket (one per admission-order position the cursor decided),
-- state (the wave's state, when an admission step finds it changed).
-- Values hold no space and no '='; new kinds and new names may be added, never reordered.
-- The hash chain over the lines is computed by the service (queue_service/ledger.py: Redis
-- scripts have no SHA-256), and the lines themselves never change once written.
local LEDGER_VERSION = '1'

-- entries: a list of {at ms, kind, 'name=value ...'}, appended in order.
local function ledger_append(prefix, entries)
  if #entries == 0 then return end
  local key = prefix .. 'ledger'
  local base = redis.call('LLEN', key)
  local lines = {}
  for i, entry in ipairs(entries) do
    lines[#lines + 1] = string.format('%s %d %s %d %s', LEDGER_VERSION, base + i - 1, entry[2],
      entry[1], entry[3])
    if #lines == 1000 then
      redis.call('RPUSH', key, unpack(lines))
      lines = {}
    end
  end
  if #lines > 0 then redis.call('RPUSH', key, unpack(lines)) end
end

-- The first entry: which wave this ledger is, and the draw's commitment (made at creation).
local function ledger_start(prefix, now)
  if redis.call('LLEN', prefix .. 'ledger') > 0 then return end
  local wave = redis.call('HGET', prefix .. 'cfg', 'id') or ''
  local commitment = redis.call('HGET', prefix .. 'draw', 'commitment') or 'none'
  ledger_append(prefix, {{now, 'genesis', 'wave=' .. wave .. ' commitment=' .. commitment}})
end

-- The draw is complete: the seed is revealed (a ledger entry) and admission may walk the
-- pre-queue (ctl.drawn). For a pre-queue of one ticket or more the service computes the order
-- first (draw.lua); an empty one has none to compute (admit.lua reveals at once).
local function draw_reveal(prefix, ctl_key, ctl, now)
  local draw_key = prefix .. 'draw'
  ledger_start(prefix, now)
  local seed = redis.call('HGET', draw_key, 'seed') or 'none'
  redis.call('HSET', draw_key, 'drawn_ms', now, 'prequeue', ctl.open_seq)
  redis.call('HDEL', draw_key, 'owner', 'lease_until')
  redis.call('HSET', ctl_key, 'drawn', 1)
  ctl.drawn = 1
  ledger_append(prefix, {{now, 'draw', string.format('prequeue=%d seed=%s', ctl.open_seq, seed)}})
end
