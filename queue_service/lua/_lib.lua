-- Shared helpers, prepended to every script at load time (Redis scripts cannot import).
-- Units: times are milliseconds since the Unix epoch; rates are per second.
-- Every key touched lives under the wave prefix ARGV "prefix" = 'glb:{w:<wave>}:' (one slot).

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

local CTL_FIELDS = {'seq', 'cursor', 'open_seq', 'admitted', 'abandoned', 'left', 'completed',
  'expired', 'tokens', 'tokens_at', 'paused', 'closed'}

local function load_ctl(ctl_key)
  local raw = redis.call('HMGET', ctl_key, unpack(CTL_FIELDS))
  local ctl = {}
  for i, name in ipairs(CTL_FIELDS) do ctl[name] = tonumber(raw[i]) end
  for _, name in ipairs({'seq', 'cursor', 'admitted', 'abandoned', 'left', 'completed',
      'expired', 'paused', 'closed'}) do
    ctl[name] = ctl[name] or 0
  end
  ctl.open_seq = ctl.open_seq or -1
  return ctl
end

-- The pre-queue closes at opening: its size is frozen as open_seq, and from then on every
-- new ticket is ordered after it. Runs in whichever script first sees the opening time.
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

-- GCRA: one request costs one emission interval; up to `burst` may come at once.
-- Two rules guard each request (client address, then registrant or ticket). Both are checked
-- before either is charged, so a request refused by one rule costs nothing under the other:
-- a bot hammering its own ticket does not use up the allowance of people sharing its address.
-- Returns 0 and a commit function when allowed, else the milliseconds until a retry and the
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
    return redis.call('ZRANK', prefix .. 'pq', seq)
  end
  return seq - 1
end

-- What a ticket holder sees. Marks the ticket seen while it waits.
-- Returns {state, ahead (-1 = unknown), admitted_at ms (0 = never admitted)}.
local function ticket_view(prefix, cfg, ctl, seq, now, wave_state_now)
  local seen_key = bucket_key(prefix, 'seen', seq)
  local seen = redis.call('HGET', seen_key, seq)
  if not seen then return {'unknown', -1, 0} end
  local first = string.sub(seen, 1, 1)
  if first == 'A' then
    local admitted_at = tonumber(string.sub(seen, 2))
    local expiry = tonumber(redis.call('ZSCORE', prefix .. 'active', seq))
    if expiry and expiry > now then return {'admitted', 0, admitted_at} end
    return {'expired', -1, admitted_at}
  end
  if first == 'C' then return {'expired', -1, tonumber(string.sub(seen, 2))} end
  if first == 'X' or first == 'L' then return {'expired', -1, 0} end
  if wave_state_now == 'closed' or wave_state_now == 'full' then return {'closed', -1, 0} end
  redis.call('HSET', seen_key, seq, now)
  if ctl.open_seq < 0 then return {'prequeue', -1, 0} end
  return {'waiting', order_of(prefix, ctl, seq) - ctl.cursor, 0}
end

-- Hot-path batches travel as a few comma-joined arguments and come back as flat integer
-- arrays: hundreds of separate arguments and strings per call cost the Python client more
-- than the script itself. The codes are decoded by queue_service/store.py (same order).
local TICKET_STATE_CODE = {waiting = 0, prequeue = 1, admitted = 2, expired = 3, closed = 4,
  unknown = 5}

-- 'a,b,,c' -> {'a', 'b', '', 'c'} (empty items kept, so parallel lists stay aligned)
local function split_list(text)
  local items = {}
  for item in string.gmatch(text .. ',', '([^,]*),') do items[#items + 1] = item end
  return items
end
