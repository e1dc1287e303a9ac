-- status: what a batch of ticket holders see, for the tickets a process cannot answer from
-- its own copy of the wave's counts (tickets the admission cursor has reached, pre-queue
-- tickets whose rank it has not cached, tickets newer than its copy; see local_status.py).
-- KEYS: the wave's fixed keys (keys.WaveKeys.fixed): cfg, ctl, pq, active, left, revocations.
-- ARGV[1] now ms ('' = Redis server time), ARGV[2] wave key prefix,
-- ARGV[3] the tickets' seqs, ARGV[4] their incarnation ids and ARGV[5] their stamps, each
-- comma-joined. A ticket whose number was issued again to somebody else after the data lost
-- writes (a different stamp) is 'lost', never shown the other person's place.
-- Returns {wave state (WAVE_STATE), admission cursor, outcomes, subjects}: outcomes has 3
-- integers per request: ticket state (TICKET_STATE), order (the 0-based place in admission
-- order; -1 unless waiting) and admitted_at ms (0 = never admitted); subjects holds {request index (0-based),
-- registrant hash} pairs for admitted tickets (the admission token's subject).
-- Writes two things: an admitted ticket's first answer claims its admission, turning the
-- slot it held until the holder's poll deadline into a session of session_ttl; and a holder
-- called back while away (protocol.SeenMark K) who polls is back: admitted first at the next
-- step (the `rt` list, admit.lua). The fifth item of the reply counts those.
-- A missing wave returns {'unknown_wave'}.

local now = clock(ARGV[1])
local prefix = ARGV[2]
local seqs, incs, stamps = split_list(ARGV[3]), split_list(ARGV[4]), split_list(ARGV[5])
if #incs ~= #seqs or #stamps ~= #seqs then
  return redis.error_reply('status: request lists differ in length')
end

local cfg = load_cfg(KEYS[1])
if not cfg then return {'unknown_wave'} end
local ctl = load_ctl(KEYS[2])
open_if_due(KEYS[2], ctl, cfg, now)
local state = wave_state(cfg, ctl, now)

local outcomes, subjects = {}, {}
local returned = 0
for i, seq_text in ipairs(seqs) do
  local seq = tonumber(seq_text)
  local view = {'lost', -1, 0, nil}
  if issued_here(ctl, incs[i], seq) and stamp_matches(prefix, seq, stamps[i]) then
    view = ticket_view(prefix, ctl, seq, now, state)
  end
  local mark = view[4] and callback_state(view[4])
  if view[1] == 'waiting' and mark == SEEN.called then
    -- called back, and here: admitted first at the next step (admit.lua)
    local window = string.sub(view[4], 2)
    redis.call('HSET', bucket_key(prefix, 'seen', seq), seq, SEEN.returned .. window)
    redis.call('ZREM', prefix .. 'called', seq)
    redis.call('RPUSH', prefix .. 'rt', seq)
    returned = returned + 1
  end
  if view[1] == 'admitted' then
    if string.sub(view[4], 1, 1) == SEEN.admitted then
      redis.call('HSET', bucket_key(prefix, 'seen', seq), seq, SEEN.claimed .. view[3])
      redis.call('ZADD', KEYS[4], 'XX', view[3] + cfg.session_ttl_ms, seq)
    end
    local record = redis.call('HGET', bucket_key(prefix, 'tk', seq), seq) or ''
    subjects[#subjects + 1] = i - 1
    subjects[#subjects + 1] = string.match(record, '^([^|]*)|') or ''
  end
  outcomes[#outcomes + 1] = TICKET_STATE[view[1]]
  outcomes[#outcomes + 1] = view[2]
  outcomes[#outcomes + 1] = view[3]
end
return {WAVE_STATE[state], ctl.cursor, outcomes, subjects, returned}
