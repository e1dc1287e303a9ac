-- join: give tickets to a batch of registrants, atomically, in arrival order.
-- KEYS: the wave's fixed keys (keys.WaveKeys.fixed): cfg, ctl, pq, active, left, revocations.
-- ARGV[1] now ms ('' = Redis server time), ARGV[2] wave key prefix,
-- ARGV[3] rate limits on ('1'/'0'), ARGV[4] per-IP interval ms, ARGV[5] per-IP burst,
-- ARGV[6] per-registrant interval ms, ARGV[7] per-registrant burst,
-- ARGV[8] estimated seconds per place ahead (stored as the ETA promised at join),
-- ARGV[9] a fresh random incarnation id, used only if a new incarnation must begin,
-- ARGV[10] the incarnation and ARGV[11] the highest seq the caller has seen (a rollback check,
-- see _lib.lua),
-- ARGV[12..17] the requests' registrant hashes, registrant buckets, client address keys,
-- pre-queue random scores, proofs and fresh ticket stamps, each comma-joined, in request order.
-- A proof is the caller's own ticket as '<seq>.<incarnation>.<stamp>' (its MAC checked by the
-- caller), 'verified:<token key>:<ttl ms>' for a verified enqueue token (it proves once: a
-- token replayed later proves nothing), '' for none. A live place is handed back only with
-- proof: knowing somebody's id is not enough. The per-registrant rate limit is charged only to
-- requests with proof, so a stranger spending it cannot lock the holder out.
-- Returns {incarnation id, ended incarnations ('id:last_seq,...'), outcomes, stamps, the wave's
-- seq, what began a new incarnation ('' for nothing, 'restart', 'rollback')}: outcomes has 5
-- integers per request: result (JOIN_RESULT), seq,
-- ticket state (TICKET_STATE; -1 unless a ticket is named), tickets ahead (-1 unknown),
-- retry ms (refused) or admitted ms; stamps has the named ticket's stamp per request ('' for
-- none); or {'unknown_wave'} for the whole batch.
-- A new ticket's first poll deadline is provisional (service now + grace): the caller
-- records the exact one (lua/seen.lua) once it has computed the poll interval it promises.

local now = clock(ARGV[1])
local prefix = ARGV[2]
local limits_on = ARGV[3] == '1'
local ip_interval, ip_burst = tonumber(ARGV[4]), tonumber(ARGV[5])
local reg_interval, reg_burst = tonumber(ARGV[6]), tonumber(ARGV[7])
local seconds_per_place = tonumber(ARGV[8])
local new_inc, known_inc, known_seq = ARGV[9], ARGV[10], ARGV[11]
local hashes, buckets = split_list(ARGV[12]), split_list(ARGV[13])
local ips, scores, proofs = split_list(ARGV[14]), split_list(ARGV[15]), split_list(ARGV[16])
local new_stamps = split_list(ARGV[17])
if #buckets ~= #hashes or #ips ~= #hashes or #scores ~= #hashes or #proofs ~= #hashes
    or #new_stamps ~= #hashes then
  return redis.error_reply('join: request lists differ in length')
end

local cfg = load_cfg(KEYS[1])
if not cfg then return {'unknown_wave'} end
local ctl = load_ctl(KEYS[2])
open_if_due(KEYS[2], ctl, cfg, now)
local began = begin_incarnation_if_needed(KEYS[2], ctl, new_inc, known_inc, known_seq) or ''
local provisional_deadline = now - ctl.down_ms + cfg.abandon_ms

local out, stamps_out = {}, {}
local function emit(result, seq, state, order, extra, stamp)
  local ahead = -1
  if order >= 0 then ahead = math.max(0, order - ctl.cursor) end
  out[#out + 1] = JOIN_RESULT[result]
  out[#out + 1] = seq
  out[#out + 1] = TICKET_STATE[state] or -1
  out[#out + 1] = ahead
  out[#out + 1] = extra
  stamps_out[#stamps_out + 1] = stamp or ''
end

-- What a request's proof proves: {kind = 'ticket', seq, inc, stamp}, {kind = 'verified', key,
-- ttl} (an enqueue token not used before), or nil.
local function proven(proof)
  local token_key, ttl = string.match(proof, '^verified:([%w_-]+):(%d+)$')
  if token_key then
    -- the first use of an enqueue token proves; a replay (a URL seen in a history, a log, a
    -- Referer) does not
    local key = prefix .. 'eq:' .. token_key
    if redis.call('EXISTS', key) == 1 then return nil end
    return {kind = 'verified', key = key, ttl = math.max(1, tonumber(ttl))}
  end
  local seq, inc, stamp = string.match(proof, '^(%d+)%.([%w_-]+)%.([%w_-]+)$')
  if seq then return {kind = 'ticket', seq = tonumber(seq), inc = inc, stamp = stamp} end
  return nil
end

for i, rhash in ipairs(hashes) do
  local bucket, ip, score = buckets[i], ips[i], scores[i]
  local proof = proven(proofs[i])
  local limited, retry = nil, 0
  if limits_on then
    local rules = {{prefix .. 'rl:join_ip:' .. ip, ip_interval, ip_burst}}
    if proof then rules[2] = {prefix .. 'rl:join_reg:' .. rhash, reg_interval, reg_burst} end
    local rule
    retry, rule = gcra(now, rules)
    if rule == 1 then limited = 'rl_ip' elseif rule == 2 then limited = 'rl_registrant' end
  end
  if proof and proof.kind == 'verified' and not limited then
    redis.call('SET', proof.key, 1, 'PX', proof.ttl)  -- used: it proves nothing again
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
      if view[1] == 'expired' then
        result = 'rejoined'  -- the place or session lapsed: a fresh place at the back
      else
        local record = ticket_record(prefix, seq)
        local stamp = record and record.stamp or ''
        local owner = proof ~= nil and (proof.kind == 'verified'
          or (proof.seq == seq and proof.stamp == stamp and issued_here(ctl, proof.inc, seq)))
        if owner then
          emit('existing', seq, view[1], view[2], view[3], stamp)
        else
          emit('held', seq, view[1], view[2], view[3])  -- nothing of the place is handed out
        end
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
        redis.call('HSET', bucket_key(prefix, 'tk', seq), seq,
          rhash .. '|' .. now .. '|' .. eta .. '|' .. new_stamps[i] .. '|' .. bucket)
        emit(result, seq, ticket_state, order, 0, new_stamps[i])
      end
    end
  end
end
return {ctl.inc, ctl.incs, out, stamps_out, ctl.seq, began}
