-- wrk script: POST joins with registrant ids never used before (unique per run and thread).
-- args: <path> <run id>
local path
local prefix
local counter = 0
local threads = 0
local headers = {["Content-Type"] = "application/json"}

function setup(thread)
  thread:set("thread_no", threads)
  threads = threads + 1
end

function init(args)
  path = args[1]
  prefix = args[2] .. "-" .. tostring(wrk.thread:get("thread_no")) .. "-"
end

function request()
  counter = counter + 1
  local body = '{"registrant":"' .. prefix .. counter .. '"}'
  return wrk.format("POST", path, headers, body)
end
