-- status: what a batch of ticket holders see; every answered call marks its ticket seen.
-- KEYS[1] cfg, KEYS[2] ctl
-- ARGV[1] now ms ('' = Redis server time), ARGV[2] wave key prefix,
-- ARGV[3] rate limits on ('1'/'0'), ARGV[4] per-IP interval ms, ARGV[5] per-IP burst,
-- ARGV[6] per-ticket interval ms, ARGV[7] per-ticket burst,
-- then 2 per request: ticket seq, client IP.
-- Returns the wave state, then 5 per request: result (ok | rl_ip | rl_ticket), ticket state,
-- ahead (-1 unknown), admitted_at ms (ok) or retry ms (rate limited), and the registrant hash
-- when admitted (the admission token's subject) else ''.
-- A missing wave returns {'unknown_wave'}.

local now = clock(ARGV[1])
local prefix = ARGV[2]
local limits_on = ARGV[3] == '1'
local ip_interval, ip_burst = tonumber(ARGV[4]), tonumber(ARGV[5])
local ticket_interval, ticket_burst = tonumber(ARGV[6]), tonumber(ARGV[7])

local cfg = load_cfg(KEYS[1])
if not cfg then return {'unknown_wave'} end
local ctl = load_ctl(KEYS[2])
open_if_due(KEYS[2], ctl, cfg, now)
local state = wave_state(cfg, ctl, now)

local out = {state}
for i = 8, #ARGV, 2 do
  local seq, ip = tonumber(ARGV[i]), ARGV[i + 1]
  local limited, retry = nil, 0
  if limits_on then
    local rule
    retry, rule = gcra_pair(now, prefix .. 'rl:status_ip:' .. ip, ip_interval, ip_burst,
      prefix .. 'rl:status_tk:' .. seq, ticket_interval, ticket_burst)
    if rule == 1 then limited = 'rl_ip' elseif rule == 2 then limited = 'rl_ticket' end
  end
  if limited then
    out[#out + 1] = limited
    out[#out + 1] = ''
    out[#out + 1] = -1
    out[#out + 1] = retry
    out[#out + 1] = ''
  else
    local view = ticket_view(prefix, cfg, ctl, seq, now, state)
    out[#out + 1] = 'ok'
    out[#out + 1] = view[1]
    out[#out + 1] = view[2]
    out[#out + 1] = view[3]
    local subject = ''
    if view[1] == 'admitted' then
      local record = redis.call('HGET', bucket_key(prefix, 'tk', seq), seq) or ''
      subject = string.match(record, '^([^|]*)|') or ''
    end
    out[#out + 1] = subject
  end
end
return out
