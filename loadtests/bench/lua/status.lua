-- wrk script: GET the status of a wave, rotating through valid tickets (X-Queue-Ticket).
-- args: <path> <tickets file, one a line> [<header> <value prefix>]: another waiting room's
-- poll, e.g. `Cookie __wr_id=` sends "Cookie: __wr_id=<line>" (the peer benchmark).
-- env BENCH_DELAY_MS > 0: each connection waits that long after each response before its next
-- request (paced load for the latency benchmark); unset = closed loop, as fast as possible.
-- Requests are formatted once in init(): the load generator must not be the bottleneck.
local requests = {}
local index = 0
local thread_no = 0
local threads = 0

function setup(thread)
  thread:set("thread_no", threads)
  threads = threads + 1
end

function init(args)
  local path = args[1]
  local header, prefix = args[3] or "X-Queue-Ticket", args[4] or ""
  for ticket in io.lines(args[2]) do
    requests[#requests + 1] = wrk.format("GET", path, {[header] = prefix .. ticket})
  end
  thread_no = tonumber(wrk.thread:get("thread_no")) or 0
  -- threads start at different places so they do not poll the same tickets in lockstep
  index = (thread_no * 7919) % #requests
end

function request()
  index = index % #requests + 1
  return requests[index]
end

-- wrk decides once, at load time, whether the script paces requests: define delay() only then
local pause_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0") or 0
if pause_ms > 0 then
  function delay()
    return pause_ms
  end
end
