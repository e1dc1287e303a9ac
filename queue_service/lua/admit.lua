-- admit: one admission step for a wave. Any process may run it at any time; it is exact however
-- many processes call it, because the token bucket and the cursor live here, in Redis.
-- KEYS[1] cfg, KEYS[2] ctl
-- ARGV[1] now ms ('' = Redis server time), ARGV[2] wave key prefix,
-- ARGV[3] most admissions in this step, ARGV[4] most tickets looked at in this step.
-- Outflow is a token bucket: admit_rate tokens/s, at most admit_burst stored; an admission
-- spends one token, so admissions over any W seconds <= admit_rate*W + admit_burst.
-- Abandoned (not seen for abandon_ms) and left tickets are skipped without spending a token,
-- a max_active slot or quota.
-- Returns {state, seq, cursor, open_seq, prequeue size, active, admitted, abandoned, left,
-- completed, expired, tokens (string), cfg version, now, abandoned now, expired now,
-- then 4 per ticket admitted now:
-- seq, joined ms, eta promised at join s, registrant hash}; {'unknown_wave'} if none.

local now = clock(ARGV[1])
local prefix = ARGV[2]
local max_admit, max_scan = tonumber(ARGV[3]), tonumber(ARGV[4])

local cfg = load_cfg(KEYS[1])
if not cfg then return {'unknown_wave'} end
local ctl = load_ctl(KEYS[2])
open_if_due(KEYS[2], ctl, cfg, now)
local active_key = prefix .. 'active'

-- sessions past their TTL free their slot
local expired_now = redis.call('ZREMRANGEBYSCORE', active_key, '-inf', now)
if expired_now > 0 then ctl.expired = redis.call('HINCRBY', KEYS[2], 'expired', expired_now) end

local tokens, tokens_at = ctl.tokens or cfg.admit_burst, ctl.tokens_at or now  -- starts full
if now > tokens_at then
  tokens = math.min(cfg.admit_burst, tokens + (now - tokens_at) * cfg.admit_rate / 1000)
  tokens_at = now
end

local state = wave_state(cfg, ctl, now)
local admitted_now = {}
local abandoned_now = 0
if state == 'open' then
  local allowance = math.min(math.floor(tokens), max_admit)
  local active = redis.call('ZCARD', active_key)
  if cfg.max_active > 0 then allowance = math.min(allowance, cfg.max_active - active) end
  if cfg.quota > 0 then allowance = math.min(allowance, cfg.quota - ctl.admitted) end
  local scanned, admitted, abandoned = 0, 0, 0
  while allowance > 0 and ctl.cursor < ctl.seq and scanned < max_scan do
    local seq
    if ctl.cursor < ctl.open_seq then
      seq = tonumber(redis.call('ZRANGE', prefix .. 'pq', ctl.cursor, ctl.cursor)[1])
    else
      seq = ctl.cursor + 1
    end
    local seen_key = bucket_key(prefix, 'seen', seq)
    local seen = redis.call('HGET', seen_key, seq)
    local last_seen = tonumber(seen)
    if last_seen and now - last_seen <= cfg.abandon_ms then
      redis.call('HSET', seen_key, seq, 'A' .. now)
      redis.call('ZADD', active_key, now + cfg.session_ttl_ms, seq)
      local record = redis.call('HGET', bucket_key(prefix, 'tk', seq), seq) or '||'
      local rhash, joined, eta = string.match(record, '^([^|]*)|([^|]*)|([^|]*)$')
      admitted_now[#admitted_now + 1] = seq
      admitted_now[#admitted_now + 1] = tonumber(joined) or 0
      admitted_now[#admitted_now + 1] = tonumber(eta) or 0
      admitted_now[#admitted_now + 1] = rhash or ''
      admitted = admitted + 1
      allowance = allowance - 1
      tokens = tokens - 1
    elseif seen ~= 'L' then
      redis.call('HSET', seen_key, seq, 'X')
      abandoned = abandoned + 1
    end
    ctl.cursor = ctl.cursor + 1
    scanned = scanned + 1
  end
  if scanned > 0 then
    redis.call('HSET', KEYS[2], 'cursor', ctl.cursor)
    if admitted > 0 then ctl.admitted = redis.call('HINCRBY', KEYS[2], 'admitted', admitted) end
    abandoned_now = abandoned
    if abandoned > 0 then
      ctl.abandoned = redis.call('HINCRBY', KEYS[2], 'abandoned', abandoned)
    end
  end
  state = wave_state(cfg, ctl, now)
end
redis.call('HSET', KEYS[2], 'tokens', string.format('%.6f', tokens), 'tokens_at', tokens_at)

local pq_size = 0
if ctl.open_seq < 0 then pq_size = redis.call('ZCARD', prefix .. 'pq') end
local out = {state, ctl.seq, ctl.cursor, ctl.open_seq, pq_size, redis.call('ZCARD', active_key),
  ctl.admitted, ctl.abandoned, ctl.left, ctl.completed, ctl.expired,
  string.format('%.6f', tokens), cfg.version, now, abandoned_now, expired_now}
for _, v in ipairs(admitted_now) do out[#out + 1] = v end
return out
