-- admit: one admission step for a wave. Any process may run it at any time; it is exact however
-- many processes call it, because the token bucket and the cursor live here, in Redis.
-- KEYS: the wave's fixed keys (keys.WaveKeys.fixed): cfg, ctl, pq, active, left, revocations.
-- ARGV[1] now ms ('' = Redis server time), ARGV[2] wave key prefix,
-- ARGV[3] most admissions in this step, ARGV[4] most tickets looked at in this step,
-- ARGV[5] outage gap ms: a longer pause between two steps, while anyone is waiting, counts as
-- an outage (no process reached Redis), and is added to down_ms so that it never counts toward
-- abandonment,
-- ARGV[6] how far the caller has read the wave's left list (an absolute position: entries the
-- cursor has passed are trimmed from its head),
-- ARGV[7] a fresh random incarnation id, used only if a new incarnation must begin,
-- ARGV[8] the incarnation and ARGV[9] the highest seq the caller has seen (a rollback check,
-- see _lib.lua).
-- Outflow is a token bucket: admit_rate tokens/s, at most admit_burst stored; an admission
-- spends one token, so admissions over any W seconds <= admit_rate*W + admit_burst.
-- A waiting ticket whose holder missed the poll deadline it was given (service time, see
-- _lib.lua) is skipped as abandoned, and a left one (already reclaimed) is passed over, without
-- spending a token, a max_active slot or quota. An admitted ticket holds its slot until the
-- holder's own poll deadline; the first status answer claims it as a session of session_ttl
-- (status.lua).
-- What the cursor has passed is reclaimed: abandoned tickets and expired sessions (their
-- records), the pre-queue order once it is all behind the cursor, the head of the left list
-- once the cursor has passed those tickets, revocations older than a session.
-- Public proof (issue 25): every position the cursor decides is appended to the wave's
-- ledger in the same call (lua/_lib.lua: ledger_append), with why a ticket was skipped:
-- 'abandoned' (missed its deadline), or the reason left at give-up time in its 'gone' bucket
-- ('left'; 'unknown' if none: never expected); the admission settings are recorded as a config
-- entry by the first step that uses them, so the ledger tells the rate in force over time, and
-- the wave's state when a step finds it changed (a state entry). The pre-queue is walked only
-- once it is drawn (ctl.drawn, draw.lua).
-- Call-backs (issue 24, docs/callbacks.md): a holder who opted in and is away when the cursor
-- reaches them is 'called' (ledger outcome=called until=<wall ms>): no token, slot or quota;
-- they are told it is their turn (the outbox) and kept in the `called` zset until their
-- return window ends. Holders who came back since (the `rt` list, status.lua and
-- return_link.lua) are admitted first in every step, within the bucket, max_active and quota
-- (a 'return' ledger entry, outcome=admitted); a window that ends with nobody back skips the
-- ticket as abandoned ('return' entry, outcome=skipped reason=not_returned).
-- Returns {counts as name/value pairs, admitted, left}: admitted holds 4 values per ticket
-- admitted now (seq, joined ms, ETA promised at join s, registrant hash); left holds the
-- seqs of the left list from position counts.left_from on (at most 1000).

local now = clock(ARGV[1])
local prefix = ARGV[2]
local max_admit, max_scan = tonumber(ARGV[3]), tonumber(ARGV[4])
local outage_gap_ms, left_from = tonumber(ARGV[5]), tonumber(ARGV[6])
local new_inc, known_inc, known_seq = ARGV[7], ARGV[8], ARGV[9]

local cfg = load_cfg(KEYS[1])
if not cfg then return {'unknown_wave'} end
local ctl = load_ctl(KEYS[2])
open_if_due(KEYS[2], ctl, cfg, now)
local began = begin_incarnation_if_needed(KEYS[2], ctl, new_inc, known_inc, known_seq) or ''
local active_key = KEYS[4]

-- public proof: the ledger's first entry once, then the settings this step admits under
ledger_start(prefix, now)
local ledger_entries = {}
local ledger_state_key = prefix .. 'ledger:state'
local settings_line = string.format('admit_rate=%.14g admit_burst=%.14g max_active=%d quota=%d',
  cfg.admit_rate, cfg.admit_burst, cfg.max_active, cfg.quota)
if redis.call('HGET', ledger_state_key, 'cfg') ~= settings_line then
  redis.call('HSET', ledger_state_key, 'cfg', settings_line)
  ledger_append(prefix, {{now, 'config', settings_line}})
end

-- Only a waiting holder's deadline can be missed; with nobody waiting a gap is no outage (an
-- idle wave is stepped rarely: admission.py).
if ctl.step_at > 0 and now - ctl.step_at > outage_gap_ms and ctl.cursor < ctl.seq then
  ctl.down_ms = ctl.down_ms + (now - ctl.step_at)
  redis.call('HSET', KEYS[2], 'down_ms', ctl.down_ms)
end
local service_now = now - ctl.down_ms

-- sessions past their TTL, and admissions nobody claimed in time, free their slot and are
-- forgotten
local expired_now = 0
local ended = redis.call('ZRANGEBYSCORE', active_key, '-inf', now, 'LIMIT', 0, max_scan)
for _, member in ipairs(ended) do
  redis.call('ZREM', active_key, member)
  reclaim(prefix, tonumber(member), nil)
  expired_now = expired_now + 1
end
if expired_now > 0 then ctl.expired = redis.call('HINCRBY', KEYS[2], 'expired', expired_now) end
-- revoked tokens older than a session cannot be presented any more (stream ids are Redis time)
local server_time = redis.call('TIME')
local server_ms = tonumber(server_time[1]) * 1000 + math.floor(tonumber(server_time[2]) / 1000)
redis.call('XTRIM', KEYS[6], 'MINID', '~', math.max(0, server_ms - cfg.session_ttl_ms))

local tokens, tokens_at = ctl.tokens or cfg.admit_burst, ctl.tokens_at or now  -- starts full
if now > tokens_at then
  tokens = math.min(cfg.admit_burst, tokens + (now - tokens_at) * cfg.admit_rate / 1000)
  tokens_at = now
end

local state = wave_state(cfg, ctl, now)
-- public proof: the wave's state when a step finds it changed (opened, paused, resumed, full,
-- closed), before the places it decides: the ledger tells why places stopped being decided
local function note_state(now_state)
  if redis.call('HGET', ledger_state_key, 'state') ~= now_state then
    redis.call('HSET', ledger_state_key, 'state', now_state)
    ledger_entries[#ledger_entries + 1] = {now, 'state', 'state=' .. now_state}
  end
end
note_state(state)
local admitted_now = {}
local abandoned_now = 0
local called_key, returned_key = prefix .. 'called', prefix .. 'rt'
local called_now, returned_now, not_returned_now = 0, 0, 0
-- A returned holder's slot is held until their poll deadline (they were told to poll within a
-- second): the grace, and this much more.
local RETURN_CLAIM_SLACK_MS = 2000

-- Admit one ticket now: its slot is held until `claim_until` (ms), then claimed by the
-- holder's first status answer (status.lua). A call-back holder's contact is deleted: nobody
-- needs to call them any more.
local function admit_ticket(seq, claim_until)
  redis.call('HSET', bucket_key(prefix, 'seen', seq), seq, SEEN.admitted .. now)
  redis.call('ZADD', active_key, claim_until, seq)
  callback_forget(prefix, seq)
  local record = ticket_record(prefix, seq) or {rhash = '', joined = 0, eta = 0}
  admitted_now[#admitted_now + 1] = seq
  admitted_now[#admitted_now + 1] = record.joined
  admitted_now[#admitted_now + 1] = record.eta
  admitted_now[#admitted_now + 1] = record.rhash
  tokens = tokens - 1
end

-- Call-backs: a called holder who has not come back when the window ends is skipped as
-- abandoned ('not_returned' in the ledger), freeing nothing they never held. In any state of
-- the wave: the window is what they were told.
local lapsed = redis.call('ZRANGEBYSCORE', called_key, '-inf', service_now, 'LIMIT', 0, max_scan)
for _, member in ipairs(lapsed) do
  local seq = tonumber(member)
  redis.call('ZREM', called_key, member)
  local mark = callback_state(redis.call('HGET', bucket_key(prefix, 'seen', seq), seq))
  if mark == SEEN.called then
    reclaim(prefix, seq, nil)
    not_returned_now = not_returned_now + 1
    ledger_entries[#ledger_entries + 1] =
      {now, 'return', 'seq=' .. seq .. ' outcome=skipped reason=not_returned'}
  end
end
if not_returned_now > 0 then
  ctl.abandoned = redis.call('HINCRBY', KEYS[2], 'abandoned', not_returned_now)
end
-- the pre-queue has no order until it is drawn (a moment after the opening): nobody is
-- admitted before, not even later arrivals, who come after the whole pre-queue; so the ledger
-- reveals the seed before its first ticket entry, pre-queue or not
if ctl.open_seq == 0 and ctl.drawn ~= 1 then draw_reveal(prefix, KEYS[2], ctl, now) end
local drawing = ctl.open_seq >= 0 and ctl.drawn ~= 1
if state == 'open' and not drawing then
  local allowance = math.min(math.floor(tokens), max_admit)
  local active = redis.call('ZCARD', active_key)
  if cfg.max_active > 0 then allowance = math.min(allowance, cfg.max_active - active) end
  if cfg.quota > 0 then allowance = math.min(allowance, cfg.quota - ctl.admitted) end
  local scanned, admitted, abandoned = 0, 0, 0
  local cursor_before = ctl.cursor
  -- call-backs: holders who came back after being called are admitted first, within the same
  -- bucket, max_active and quota (they lost no place: the line reached them while away)
  while allowance > 0 do
    local back = redis.call('LPOP', returned_key)
    if not back then break end
    local seq = tonumber(back)
    local mark = callback_state(redis.call('HGET', bucket_key(prefix, 'seen', seq), seq))
    if mark == SEEN.returned then  -- else it left or ended meanwhile: nothing to admit
      admit_ticket(seq, now + math.min(cfg.abandon_ms + RETURN_CLAIM_SLACK_MS,
        cfg.session_ttl_ms))
      admitted = admitted + 1
      allowance = allowance - 1
      returned_now = returned_now + 1
      ledger_entries[#ledger_entries + 1] = {now, 'return', 'seq=' .. seq .. ' outcome=admitted'}
    end
  end
  while allowance > 0 and ctl.cursor < ctl.seq and scanned < max_scan do
    local seq
    if ctl.cursor < ctl.open_seq then
      seq = tonumber(redis.call('ZRANGE', KEYS[3], ctl.cursor, ctl.cursor)[1])
    else
      seq = ctl.cursor + 1
    end
    local seen_key = bucket_key(prefix, 'seen', seq)
    local seen_raw = redis.call('HGET', seen_key, seq)
    local deadline = tonumber(seen_raw)
    local cb_mark, cb_window, cb_deadline = callback_state(seen_raw)
    if cb_mark and service_now <= cb_deadline then
      deadline, cb_mark = cb_deadline, nil  -- opted in, and here (polling): admitted as anyone
    end
    local from = 'line'
    if ctl.cursor < ctl.open_seq then from = 'prequeue' end
    local decided = string.format('order=%d seq=%d from=%s ', ctl.cursor, seq, from)
    if cb_mark then
      -- opted in and away: called. No token, no slot, no quota; the place is kept until the
      -- window ends (told 'near' earlier: its window, and never less than half a window from
      -- now; not told yet: a whole window from now), and they are told it is their turn.
      local window = service_now + cfg.return_window_ms
      if cb_mark == SEEN.notified then
        window = math.max(cb_window, service_now + math.floor(cfg.return_window_ms / 2))
      end
      redis.call('HSET', seen_key, seq, SEEN.called .. window)
      redis.call('ZADD', called_key, window, seq)
      redis.call('ZREM', prefix .. 'cb', seq)
      redis.call('SREM', prefix .. 'cb:pq', seq)
      local record = ticket_record(prefix, seq)
      local until_ms = now + (window - service_now)
      if record then outbox_add(prefix, seq, record.stamp, 'turn', until_ms) end
      called_now = called_now + 1
      ledger_entries[#ledger_entries + 1] =
        {now, 'ticket', decided .. 'outcome=called until=' .. until_ms}
    elseif deadline and service_now <= deadline then
      admit_ticket(seq, now + math.min(deadline - service_now, cfg.session_ttl_ms))
      admitted = admitted + 1
      allowance = allowance - 1
      ledger_entries[#ledger_entries + 1] = {now, 'ticket', decided .. 'outcome=admitted'}
    elseif deadline then
      reclaim(prefix, seq, nil)  -- abandoned: the holder missed their own deadline
      abandoned = abandoned + 1
      ledger_entries[#ledger_entries + 1] =
        {now, 'ticket', decided .. 'outcome=skipped reason=abandoned'}
    else  -- no state: given up (already reclaimed), passed over at no cost
      local gone_key = bucket_key(prefix, 'gone', seq)
      local reason = redis.call('HGET', gone_key, seq)
      if reason then redis.call('HDEL', gone_key, seq) else reason = 'unknown' end
      ledger_entries[#ledger_entries + 1] =
        {now, 'ticket', decided .. 'outcome=skipped reason=' .. reason}
    end
    ctl.cursor = ctl.cursor + 1
    scanned = scanned + 1
  end
  if admitted > 0 then ctl.admitted = redis.call('HINCRBY', KEYS[2], 'admitted', admitted) end
  if scanned > 0 then
    redis.call('HSET', KEYS[2], 'cursor', ctl.cursor)
    abandoned_now = abandoned
    if abandoned > 0 then
      ctl.abandoned = redis.call('HINCRBY', KEYS[2], 'abandoned', abandoned)
    end
    if cursor_before < ctl.open_seq and ctl.cursor >= ctl.open_seq then
      redis.call('UNLINK', KEYS[3])  -- the whole pre-queue is behind the cursor
    end
  end
  state = wave_state(cfg, ctl, now)
end
redis.call('HSET', KEYS[2], 'tokens', string.format('%.6f', tokens), 'tokens_at', tokens_at,
  'step_at', now)
note_state(state)  -- as the step leaves it (full, after its admissions)
ledger_append(prefix, ledger_entries)

-- The left list: its head is trimmed while the cursor has passed those tickets (no process
-- needs to know they left any more); positions stay absolute (left_base counts the trimmed).
local function passed(seq)
  if ctl.open_seq < 0 then return false end
  if seq > ctl.open_seq then return seq - 1 < ctl.cursor end
  if ctl.cursor >= ctl.open_seq then return true end
  local rank = redis.call('ZRANK', KEYS[3], seq)
  return rank ~= false and rank < ctl.cursor
end
local trimmed = 0
while trimmed < 1000 do
  local head = redis.call('LINDEX', KEYS[5], 0)
  if not head or not passed(tonumber(head)) then break end
  redis.call('LPOP', KEYS[5])
  trimmed = trimmed + 1
end
if trimmed > 0 then ctl.left_base = redis.call('HINCRBY', KEYS[2], 'left_base', trimmed) end
local left_length = redis.call('LLEN', KEYS[5])
local index = math.max(0, left_from - ctl.left_base)
local left = {}
if index < left_length then left = redis.call('LRANGE', KEYS[5], index, index + 999) end

local pq_size = 0
if ctl.open_seq < 0 then pq_size = redis.call('ZCARD', KEYS[3]) end
local counts = {'state', state, 'seq', ctl.seq, 'cursor', ctl.cursor, 'open_seq', ctl.open_seq,
  'prequeue', pq_size, 'active', redis.call('ZCARD', active_key), 'admitted', ctl.admitted,
  'abandoned', ctl.abandoned, 'left', ctl.left, 'completed', ctl.completed,
  'expired', ctl.expired, 'tokens', string.format('%.6f', tokens), 'cfg_version', cfg.version,
  'now_ms', now, 'down_ms', ctl.down_ms, 'inc', ctl.inc, 'incs', ctl.incs,
  'left_total', ctl.left_base + left_length, 'left_from', ctl.left_base + index,
  'abandoned_now', abandoned_now, 'expired_now', expired_now, 'began', began,
  'drawn', ctl.drawn, 'ledger', redis.call('LLEN', prefix .. 'ledger'),
  'called', redis.call('ZCARD', called_key), 'called_now', called_now,
  'returned_now', returned_now, 'not_returned_now', not_returned_now,
  'outbox', redis.call('XLEN', prefix .. 'ob')}
return {counts, admitted_now, left}
