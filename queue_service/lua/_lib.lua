-- Shared helpers, prepended to every script at load time (Redis scripts cannot import), after
-- the code tables generated from queue_service/protocol.py.
-- Units: times are milliseconds since the Unix epoch; rates are per second.
--
-- Keys: every key a script touches lives under the wave prefix ARGV "prefix" =
-- 'glb:{w:<wave>}:' and so in the wave's one cluster slot. The wave's fixed keys are declared
-- in KEYS, in the order of keys.WaveKeys.fixed: KEYS[1] cfg, KEYS[2] ctl, KEYS[3] pq,
-- KEYS[4] active, KEYS[5] left, KEYS[6] revoked. The bucket keys (reg:, seen:, tk:, rl:) are
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
  'session_ttl_ms', 'quota', 'prequeue_ms', 'abandon_ms', 'version'}

local function load_cfg(cfg_key)
  local raw = redis.call('HMGET', cfg_key, unpack(CFG_FIELDS))
  if not raw[1] then return nil end
  local cfg = {}
  for i, name in ipairs(CFG_FIELDS) do cfg[name] = tonumber(raw[i]) or 0 end
  return cfg
end

local CTL_NUMBERS = {'seq', 'cursor', 'open_seq', 'admitted', 'abandoned', 'left', 'completed',
  'expired', 'tokens', 'tokens_at', 'paused', 'closed', 'down_ms', 'step_at'}
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
      'expired', 'paused', 'closed', 'down_ms', 'step_at'}) do
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

-- Incarnations: tickets carry the id of the incarnation that issued them. When the data were
-- loaded from disk or promoted from a replica (the Redis run id differs from the one the
-- current incarnation started under), writes may be missing, so ticket numbers after ctl.seq
-- may have been handed out already: before any new number is issued, the incarnation ends at
-- ctl.seq (recorded in ctl.incs as 'id:last_seq,...') and a new one begins. A ticket of an
-- ended incarnation is valid only up to its last seq; an unknown incarnation is a lost one.
local function redis_run_id()
  return string.match(redis.call('INFO', 'server'), 'run_id:(%w+)') or ''
end

local function begin_incarnation_if_needed(ctl_key, ctl, new_inc)
  local run_id = redis_run_id()
  if ctl.inc ~= '' and ctl.inc_run == run_id then return end
  if ctl.inc ~= '' then
    local ended = ctl.inc .. ':' .. ctl.seq
    if ctl.incs == '' then ctl.incs = ended else ctl.incs = ctl.incs .. ',' .. ended end
  end
  ctl.inc, ctl.inc_run = new_inc, run_id
  redis.call('HSET', ctl_key, 'inc', ctl.inc, 'inc_run', run_id, 'incs', ctl.incs)
end

local function issued_here(ctl, inc, seq)
  if inc == ctl.inc then return seq <= ctl.seq end
  for id, last in string.gmatch(ctl.incs, '([^:,]+):(%d+)') do
    if id == inc then return seq <= tonumber(last) end
  end
  return false
end

-- GCRA: one request costs one emission interval; up to `burst` may come at once.
-- Two rules guard each request (client address, then registrant). Both are checked before
-- either is charged, so a request refused by one rule costs nothing under the other.
-- Returns 0 and 0 when allowed (and charged), else the milliseconds until a retry and the
-- index (1 or 2) of the rule that refused.
local function gcra_pair(now, key1, interval1, burst1, key2, interval2, burst2)
  local keys, intervals, bursts = {key1, key2}, {interval1, interval2}, {burst1, burst2}
  local new_tats = {}
  for i = 1, 2 do
    local tat = tonumber(redis.call('GET', keys[i])) or now
    if tat < now then tat = now end
    new_tats[i] = tat + intervals[i]
    local allow_at = new_tats[i] - bursts[i] * intervals[i]
    if now < allow_at then return math.ceil(allow_at - now), i end
  end
  for i = 1, 2 do
    redis.call('SET', keys[i], string.format('%.3f', new_tats[i]),
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
  if not seen then return {'unknown', -1, 0, nil} end
  local mark = string.sub(seen, 1, 1)
  if mark == SEEN.admitted or mark == SEEN.claimed then
    local admitted_at = tonumber(string.sub(seen, 2))
    local until_ms = tonumber(redis.call('ZSCORE', KEYS[4], seq))
    if until_ms and until_ms > now then return {'admitted', -1, admitted_at, seen} end
    return {'expired', -1, admitted_at, seen}
  end
  if mark == SEEN.completed then return {'completed', -1, tonumber(string.sub(seen, 2)), seen} end
  if mark == SEEN.abandoned or mark == SEEN.left then return {'expired', -1, 0, seen} end
  if wave_state_now == 'closed' or wave_state_now == 'full' then return {'closed', -1, 0, seen} end
  if ctl.open_seq < 0 then return {'prequeue', -1, 0, seen} end
  return {'waiting', order_of(prefix, ctl, seq), 0, seen}
end

-- 'a,b,,c' -> {'a', 'b', '', 'c'} (empty items kept, so parallel lists stay aligned)
local function split_list(text)
  local items = {}
  for item in string.gmatch(text .. ',', '([^,]*),') do items[#items + 1] = item end
  return items
end

-- A session ended (complete, or leave while admitted): its slot is freed and its token is
-- revoked (the feed origins read: GET /api/v1/waves/{wave}/revoked). Returns true if it was
-- live.
local function end_session(prefix, ctl_key, seq, seen, jti, now)
  if redis.call('ZREM', KEYS[4], seq) == 0 then return false end
  redis.call('HSET', bucket_key(prefix, 'seen', seq), seq, SEEN.completed .. string.sub(seen, 2))
  redis.call('HINCRBY', ctl_key, 'completed', 1)
  if jti ~= '' then redis.call('ZADD', KEYS[6], now, jti) end
  return true
end
