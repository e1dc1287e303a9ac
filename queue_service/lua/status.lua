-- status: what a batch of ticket holders see; every answered call marks its ticket seen.
-- KEYS[1] cfg, KEYS[2] ctl
-- ARGV[1] now ms ('' = Redis server time), ARGV[2] wave key prefix,
-- ARGV[3] rate limits on ('1'/'0'), ARGV[4] per-IP interval ms, ARGV[5] per-IP burst,
-- ARGV[6] per-ticket interval ms, ARGV[7] per-ticket burst,
-- ARGV[8] the tickets' seqs and ARGV[9] their client IPs, each comma-joined, in request order.
-- Returns {wave state, outcomes, subjects}: outcomes has 4 integers per request: result
-- (0 ok, 1 rate limited by IP, 2 by ticket), ticket state (TICKET_STATE_CODE; -1 when rate
-- limited), ahead (-1 unknown), admitted_at ms (ok) or retry ms (rate limited); subjects
-- holds {request index (0-based), registrant hash} pairs for admitted tickets (the admission
-- token's subject).
-- A missing wave returns {'unknown_wave'}.

local now = clock(ARGV[1])
local prefix = ARGV[2]
local limits_on = ARGV[3] == '1'
local ip_interval, ip_burst = tonumber(ARGV[4]), tonumber(ARGV[5])
local ticket_interval, ticket_burst = tonumber(ARGV[6]), tonumber(ARGV[7])
local seqs, ips = split_list(ARGV[8]), split_list(ARGV[9])
if #ips ~= #seqs then return redis.error_reply('status: request lists differ in length') end

local cfg = load_cfg(KEYS[1])
if not cfg then return {'unknown_wave'} end
local ctl = load_ctl(KEYS[2])
open_if_due(KEYS[2], ctl, cfg, now)
local state = wave_state(cfg, ctl, now)

local outcomes, subjects = {}, {}
local function emit(result, ticket_state, ahead, extra)
  outcomes[#outcomes + 1] = result
  outcomes[#outcomes + 1] = ticket_state
  outcomes[#outcomes + 1] = ahead
  outcomes[#outcomes + 1] = extra
end

for i, seq_text in ipairs(seqs) do
  local seq, ip = tonumber(seq_text), ips[i]
  local rule, retry = 0, 0
  if limits_on then
    retry, rule = gcra_pair(now, prefix .. 'rl:status_ip:' .. ip, ip_interval, ip_burst,
      prefix .. 'rl:status_tk:' .. seq, ticket_interval, ticket_burst)
  end
  if rule ~= 0 then
    emit(rule, -1, -1, retry)
  else
    local view = ticket_view(prefix, cfg, ctl, seq, now, state)
    emit(0, TICKET_STATE_CODE[view[1]], view[2], view[3])
    if view[1] == 'admitted' then
      local record = redis.call('HGET', bucket_key(prefix, 'tk', seq), seq) or ''
      subjects[#subjects + 1] = i - 1
      subjects[#subjects + 1] = string.match(record, '^([^|]*)|') or ''
    end
  end
end
return {state, outcomes, subjects}
