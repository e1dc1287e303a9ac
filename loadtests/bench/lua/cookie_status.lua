-- wrk script: GET a path with a cookie, rotating through the values in a file (one a line).
-- args: <path> <cookie name> <values file>. Requests are formatted once in init().
local requests = {}
local index = 0
local threads = 0

function setup(thread)
  thread:set("thread_no", threads)
  threads = threads + 1
end

function init(args)
  for value in io.lines(args[3]) do
    requests[#requests + 1] = wrk.format("GET", args[1], {["Cookie"] = args[2] .. "=" .. value})
  end
  local thread_no = tonumber(wrk.thread:get("thread_no")) or 0
  index = (thread_no * 7919) % #requests
end

function request()
  index = index % #requests + 1
  return requests[index]
end
