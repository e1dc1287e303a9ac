-- carry: carry-over of standing (call-backs, issue 24, docs/callbacks.md). When a wave with
-- `notify.carry_over_to` closes or fills, its verified holders still waiting who opted in to be
-- called back keep a place in the next wave. One process at a time moves them (a lease); a
-- batch is read from the ended wave ('out'), created in the next ('in', which refuses a second
-- place for a registrant: a batch tried twice moves nobody twice), then forgotten in the ended
-- wave ('done').
-- KEYS: the wave's fixed keys (keys.WaveKeys.fixed): cfg, ctl, pq, active, left, revocations
-- (of the ended wave for begin, out and done; of the next wave for in).
-- ARGV[1] operation, ARGV[2] wave key prefix, ARGV[3] now ms ('' = Redis server time), then:
--   begin  ARGV[4] owner, ARGV[5] lease ms -> {'carrying', position done so far} | {'done'} |
--          {'busy'} | {'not_ended'}
--   out    ARGV[4] owner, ARGV[5..] seqs -> {'lost'} or {'ok', seq, stamp, account
--          ciphertext, call-back record, ...} for those still waiting and verified
--   done   ARGV[4] owner, ARGV[5] position done, ARGV[6] '1' when all is done, ARGV[7..] seqs
--          moved (their contact and account are forgotten here) -> 'ok' | 'lost'
--   forget ARGV[4] first bucket, ARGV[5] buckets, ARGV[6] return-code buckets
--          (contacts.RETURN_BUCKETS): the contacts and accounts of every ticket
--          still held in the ended wave are deleted, bucket by bucket (ct:, ca:); past the
--          last bucket the call-back sets and return-code indexes go too -> {next bucket, done}
--   in     ARGV[4] order ('ahead' | 'prequeue'), ARGV[5] from wave, then 8 values per holder:
--          registrant hash, registrant bucket, stamp, record head ('lang|kind|code hash|code
--          bucket'), contact ciphertext, account ciphertext, pre-queue score, order in the ended
--          wave -> {state, results...}: state of the next wave; per holder 'moved:<seq>',
--          'held' (a place there already) or 'refused' (the next wave closed or full)
-- Returns {'unknown_wave'} for a wave that does not exist.

local op, prefix, now = ARGV[1], ARGV[2], clock(ARGV[3])
local cfg = load_cfg(KEYS[1])
if not cfg then return {'unknown_wave'} end
local ctl = load_ctl(KEYS[2])
local carry_key = prefix .. 'carry'

local function holds_lease(owner)
  local current = redis.call('HMGET', carry_key, 'owner', 'lease_until')
  return current[1] == owner and (tonumber(current[2]) or 0) >= now
end

local function waiting(seq)
  local seen = redis.call('HGET', bucket_key(prefix, 'seen', seq), seq)
  return seen ~= nil and seen ~= false and (tonumber(seen) ~= nil or callback_state(seen) ~= nil)
end

if op == 'begin' then
  local owner, lease_ms = ARGV[4], tonumber(ARGV[5])
  local state = wave_state(cfg, ctl, now)
  if state ~= 'closed' and state ~= 'full' then return {'not_ended'} end
  local current = redis.call('HMGET', carry_key, 'owner', 'lease_until', 'position', 'done')
  if current[4] then return {'done'} end
  if current[1] and current[1] ~= owner and (tonumber(current[2]) or 0) > now then
    return {'busy'}
  end
  redis.call('HSET', carry_key, 'owner', owner, 'lease_until', now + lease_ms)
  return {'carrying', tonumber(current[3]) or 0}
end

if op == 'out' then
  local owner = ARGV[4]
  if not holds_lease(owner) then return {'lost'} end
  local out = {'ok'}
  for i = 5, #ARGV do
    local seq = tonumber(ARGV[i])
    local account = redis.call('HGET', bucket_key(prefix, 'ca', seq), seq)
    local record = redis.call('HGET', bucket_key(prefix, 'ct', seq), seq)
    local ticket = ticket_record(prefix, seq)
    if account and record and ticket and waiting(seq) then
      out[#out + 1] = seq
      out[#out + 1] = ticket.stamp
      out[#out + 1] = account
      out[#out + 1] = record
    end
  end
  return out
end

if op == 'done' then
  local owner, position, finished = ARGV[4], ARGV[5], ARGV[6] == '1'
  if not holds_lease(owner) then return 'lost' end
  for i = 7, #ARGV do callback_forget(prefix, tonumber(ARGV[i])) end
  redis.call('HINCRBY', carry_key, 'moved', #ARGV - 6)
  redis.call('HSET', carry_key, 'position', position)
  if finished then
    redis.call('HSET', carry_key, 'done', now)
    redis.call('HDEL', carry_key, 'owner', 'lease_until')
  end
  return 'ok'
end

if op == 'forget' then
  local state = wave_state(cfg, ctl, now)
  if state ~= 'closed' and state ~= 'full' then return {0, 0} end
  local first, count, return_buckets = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  local last = math.floor(ctl.seq / BUCKET_SIZE)
  local bucket = first
  while bucket <= last and bucket < first + count do
    redis.call('UNLINK', prefix .. 'ct:' .. bucket, prefix .. 'ca:' .. bucket)
    bucket = bucket + 1
  end
  if bucket <= last then return {bucket, 0} end
  redis.call('UNLINK', prefix .. 'cb', prefix .. 'cb:pq', prefix .. 'called', prefix .. 'rt')
  local batch = {}
  for b = 0, return_buckets - 1 do
    batch[#batch + 1] = prefix .. 'rc:' .. b
    if #batch == 512 then redis.call('UNLINK', unpack(batch)); batch = {} end
  end
  if #batch > 0 then redis.call('UNLINK', unpack(batch)) end
  redis.call('HSET', carry_key, 'forgotten', now)
  return {bucket, 1}
end

if op == 'in' then
  local order, from = ARGV[4], ARGV[5]
  open_if_due(KEYS[2], ctl, cfg, now)
  local state = wave_state(cfg, ctl, now)
  local results = {state}
  local ledger_entries = {}
  if ctl.open_seq < 0 then ledger_start(prefix, now) end
  for i = 6, #ARGV, 8 do
    local rhash, bucket, stamp = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local head, sealed, account = ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
    local score, old_order = ARGV[i + 6], ARGV[i + 7]
    local reg_key = prefix .. 'reg:' .. bucket
    local existing = tonumber(redis.call('HGET', reg_key, rhash))
    if state == 'closed' or state == 'full' then
      results[#results + 1] = 'refused'
    elseif existing and ticket_view(prefix, ctl, existing, now, state)[1] ~= 'expired' then
      results[#results + 1] = 'held'
    else
      local seq = redis.call('HINCRBY', KEYS[2], 'seq', 1)
      ctl.seq = seq
      redis.call('HSET', reg_key, rhash, seq)
      redis.call('HSET', bucket_key(prefix, 'tk', seq), seq,
        rhash .. '|' .. now .. '|0|' .. stamp .. '|' .. bucket)
      -- away, opted in: no poll deadline applies (0: none promised yet)
      redis.call('HSET', bucket_key(prefix, 'seen', seq), seq, SEEN.opted_in .. '0')
      redis.call('HSET', bucket_key(prefix, 'ct', seq), seq, head .. '|0|' .. sealed)
      local code_hash, code_bucket = string.match(head, '^[^|]*|[^|]*|([^|]*)|([^|]*)$')
      redis.call('HSET', prefix .. 'rc:' .. code_bucket, code_hash, seq)
      redis.call('HSET', bucket_key(prefix, 'ca', seq), seq, account)
      local place = 'line'
      if ctl.open_seq < 0 then
        redis.call('ZADD', KEYS[3], score, seq)
        redis.call('SADD', prefix .. 'cb:pq', seq)
        place = 'prequeue'
        if order == 'ahead' then
          -- first at the draw, in the order they had (draw.py: carried tickets lead)
          redis.call('RPUSH', prefix .. 'carried', seq)
          place = 'ahead'
        end
        ledger_entries[#ledger_entries + 1] = {now, 'carry', string.format(
          'seq=%d from=%s order=%s place=%s', seq, from, old_order, place)}
      else
        redis.call('ZADD', prefix .. 'cb', seq - 1, seq)
      end
      outbox_add(prefix, seq, stamp, 'carried', 0)
      results[#results + 1] = 'moved:' .. seq
    end
  end
  ledger_append(prefix, ledger_entries)
  return results
end

return redis.error_reply('carry: unknown operation ' .. tostring(op))
