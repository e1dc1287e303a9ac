-- join: give tickets to a batch of registrants, atomically, in arrival order.
-- KEYS[1] cfg, KEYS[2] ctl
-- ARGV[1] now ms ('' = Redis server time), ARGV[2] wave key prefix,
-- ARGV[3] rate limits on ('1'/'0'), ARGV[4] per-IP interval ms, ARGV[5] per-IP burst,
-- ARGV[6] per-registrant interval ms, ARGV[7] per-registrant burst,
-- ARGV[8] estimated seconds per place ahead (stored as the ETA promised at join),
-- ARGV[9..12] the requests' registrant hashes, registrant buckets, client IPs and pre-queue
-- random scores, each comma-joined, in request order.
-- Returns 5 integers per request: result (JOIN_RESULT_CODE), seq, ticket state
-- (TICKET_STATE_CODE; -1 unless a ticket is returned), ahead (-1 unknown), retry/admitted ms;
-- or {'unknown_wave'} for the whole batch.

local now = clock(ARGV[1])
local prefix = ARGV[2]
local limits_on = ARGV[3] == '1'
local ip_interval, ip_burst = tonumber(ARGV[4]), tonumber(ARGV[5])
local reg_interval, reg_burst = tonumber(ARGV[6]), tonumber(ARGV[7])
local seconds_per_place = tonumber(ARGV[8])
local hashes, buckets = split_list(ARGV[9]), split_list(ARGV[10])
local ips, scores = split_list(ARGV[11]), split_list(ARGV[12])
if #buckets ~= #hashes or #ips ~= #hashes or #scores ~= #hashes then
  return redis.error_reply('join: request lists differ in length')
end

local JOIN_RESULT_CODE = {new = 0, existing = 1, rejoined = 2, rl_ip = 3, rl_registrant = 4,
  scheduled = 5, closed = 6, full = 7}

local cfg = load_cfg(KEYS[1])
if not cfg then return {'unknown_wave'} end
local ctl = load_ctl(KEYS[2])
open_if_due(KEYS[2], ctl, cfg, now)

local out = {}
local function emit(result, seq, state, ahead, extra)
  out[#out + 1] = JOIN_RESULT_CODE[result]
  out[#out + 1] = seq
  out[#out + 1] = TICKET_STATE_CODE[state] or -1
  out[#out + 1] = ahead
  out[#out + 1] = extra
end

for i, rhash in ipairs(hashes) do
  local bucket, ip, score = buckets[i], ips[i], scores[i]
  local limited, retry = nil, 0
  if limits_on then
    local rule
    retry, rule = gcra_pair(now, prefix .. 'rl:join_ip:' .. ip, ip_interval, ip_burst,
      prefix .. 'rl:join_reg:' .. rhash, reg_interval, reg_burst)
    if rule == 1 then limited = 'rl_ip' elseif rule == 2 then limited = 'rl_registrant' end
  end
  if limited then
    emit(limited, 0, '', -1, retry)
  else
    local state = wave_state(cfg, ctl, now)
    local reg_key = prefix .. 'reg:' .. bucket
    local seq = tonumber(redis.call('HGET', reg_key, rhash))
    local result = 'new'
    if seq then
      local view = ticket_view(prefix, cfg, ctl, seq, now, state)
      if view[1] == 'expired' and view[3] == 0 then
        result = 'rejoined'  -- left or abandoned before admission: a fresh place at the back
      else
        emit('existing', seq, view[1], view[2], view[3])
        result = nil
      end
    end
    if result then
      if state == 'scheduled' then
        emit('scheduled', 0, state, -1, cfg.opens_at - cfg.prequeue_ms - now)
      elseif state == 'closed' or state == 'full' then
        emit(state, 0, state, -1, 0)
      else
        seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
        ctl.seq = seq
        redis.call('HSET', reg_key, rhash, seq)
        redis.call('HSET', bucket_key(prefix, 'seen', seq), seq, now)
        local ahead = -1
        if ctl.open_seq < 0 then
          redis.call('ZADD', prefix .. 'pq', score, seq)
        else
          ahead = (seq - 1) - ctl.cursor
        end
        local eta = 0
        if ahead > 0 then eta = math.floor(ahead * seconds_per_place) end
        redis.call('HSET', bucket_key(prefix, 'tk', seq), seq, rhash .. '|' .. now .. '|' .. eta)
        local ticket_state = 'waiting'
        if ahead < 0 then ticket_state = 'prequeue' end
        emit(result, seq, ticket_state, ahead, 0)
      end
    end
  end
end
return out
