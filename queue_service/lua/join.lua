-- join: give tickets to a batch of registrants, atomically, in arrival order.
-- KEYS: the wave's fixed keys (keys.WaveKeys.fixed): cfg, ctl, pq, active, left, revoked.
-- ARGV[1] now ms ('' = Redis server time), ARGV[2] wave key prefix,
-- ARGV[3] rate limits on ('1'/'0'), ARGV[4] per-IP interval ms, ARGV[5] per-IP burst,
-- ARGV[6] per-registrant interval ms, ARGV[7] per-registrant burst,
-- ARGV[8] estimated seconds per place ahead (stored as the ETA promised at join),
-- ARGV[9] a fresh random incarnation id, used only if a new incarnation must begin,
-- ARGV[10..14] the requests' registrant hashes, registrant buckets, client address keys,
-- pre-queue random scores and proofs, each comma-joined, in request order. A proof is the
-- caller's own ticket as '<seq>.<incarnation>' (its MAC checked by the caller), 'verified'
-- for a verified enqueue token, '' for none: a live place is handed back only with proof
-- (knowing somebody's id is not enough).
-- Returns {incarnation id, ended incarnations ('id:last_seq,...'), outcomes}: outcomes has 5
-- integers per request: result (JOIN_RESULT), seq,
-- ticket state (TICKET_STATE; -1 unless a ticket is named), tickets ahead (-1 unknown),
-- retry ms (refused) or admitted ms; or {'unknown_wave'} for the whole batch.
-- A new ticket's first poll deadline is provisional (service now + grace): the caller
-- records the exact one (lua/seen.lua) once it has computed the poll interval it promises.

local now = clock(ARGV[1])
local prefix = ARGV[2]
local limits_on = ARGV[3] == '1'
local ip_interval, ip_burst = tonumber(ARGV[4]), tonumber(ARGV[5])
local reg_interval, reg_burst = tonumber(ARGV[6]), tonumber(ARGV[7])
local seconds_per_place = tonumber(ARGV[8])
local new_inc = ARGV[9]
local hashes, buckets = split_list(ARGV[10]), split_list(ARGV[11])
local ips, scores, proofs = split_list(ARGV[12]), split_list(ARGV[13]), split_list(ARGV[14])
if #buckets ~= #hashes or #ips ~= #hashes or #scores ~= #hashes or #proofs ~= #hashes then
  return redis.error_reply('join: request lists differ in length')
end

local cfg = load_cfg(KEYS[1])
if not cfg then return {'unknown_wave'} end
local ctl = load_ctl(KEYS[2])
open_if_due(KEYS[2], ctl, cfg, now)
begin_incarnation_if_needed(KEYS[2], ctl, new_inc)
local provisional_deadline = now - ctl.down_ms + cfg.abandon_ms

local out = {}
local function emit(result, seq, state, order, extra)
  local ahead = -1
  if order >= 0 then ahead = math.max(0, order - ctl.cursor) end
  out[#out + 1] = JOIN_RESULT[result]
  out[#out + 1] = seq
  out[#out + 1] = TICKET_STATE[state] or -1
  out[#out + 1] = ahead
  out[#out + 1] = extra
end

for i, rhash in ipairs(hashes) do
  local bucket, ip, score, proof = buckets[i], ips[i], scores[i], proofs[i]
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
      local view = ticket_view(prefix, ctl, seq, now, state)
      if view[1] == 'expired' or view[1] == 'unknown' then
        result = 'rejoined'  -- the place or session lapsed: a fresh place at the back
      else
        local proof_seq, proof_inc = string.match(proof, '^(%d+)%.(.+)$')
        local owner = proof == 'verified'
          or (tonumber(proof_seq) == seq and issued_here(ctl, proof_inc, seq))
        emit(owner and 'existing' or 'held', seq, view[1], view[2], view[3])
        result = nil
      end
    end
    if result then
      if state == 'scheduled' then
        emit('scheduled', 0, '', -1, cfg.opens_at - cfg.prequeue_ms - now)
      elseif state == 'closed' or state == 'full' then
        emit(state, 0, '', -1, 0)
      else
        seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
        ctl.seq = seq
        redis.call('HSET', reg_key, rhash, seq)
        redis.call('HSET', bucket_key(prefix, 'seen', seq), seq, provisional_deadline)
        local order, ticket_state = -1, 'prequeue'
        if ctl.open_seq < 0 then
          redis.call('ZADD', KEYS[3], score, seq)
        else
          order, ticket_state = seq - 1, 'waiting'
        end
        local eta = 0
        if order > ctl.cursor then eta = math.floor((order - ctl.cursor) * seconds_per_place) end
        redis.call('HSET', bucket_key(prefix, 'tk', seq), seq, rhash .. '|' .. now .. '|' .. eta)
        emit(result, seq, ticket_state, order, 0)
      end
    end
  end
end
return {ctl.inc, ctl.incs, out}
