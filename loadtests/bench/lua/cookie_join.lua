-- wrk script: GET a path with a cookie whose value is new on every request (a waiting room
-- that takes the caller's first poll with an unknown id as its join, e.g. the Next.js peer).
-- args: <path> <cookie name> <run id>; ids are <run id>-<thread>-<n>, n = 1, 2, ...
local path
local prefix
local counter = 0
local threads = 0

function setup(thread)
  thread:set("thread_no", threads)
  threads = threads + 1
end

function init(args)
  path = args[1]
  prefix = args[2] .. "=" .. args[3] .. "-" .. tostring(wrk.thread:get("thread_no")) .. "-"
end

function request()
  counter = counter + 1
  return wrk.format("GET", path, {["Cookie"] = prefix .. counter})
end
