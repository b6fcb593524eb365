--- imm lists a whole project once, timed in-process from client creation to
-- the last binding. bench/latency/run.py runs it through the delaying proxy:
--
--   LUA_PATH="lua/?.lua;;" LUA_CPATH="build/lua5.4/?.so;;" \
--     lua5.4 bench/latency/imm_list.lua --url https://127.0.0.1:PORT --ca BUNDLE
--       [--page-size 100 (0: the pager's default)] [--concurrency N] [--dump FILE]
--
-- Without --concurrency: the sequential item pager, client:bindings with no
-- DatasetName (ListBindings over the whole project, following NextToken).
-- With --concurrency N: client:bindings(..., { concurrency = N }), which lists
-- the datasets and then each dataset's bindings, N requests in flight.
-- --dump FILE writes every URI received, one a line (the check run; it keeps
-- them all, so the timed runs do not).
--
-- Prints one JSON line: bindings, wall and cpu seconds (from before imm.new to
-- the end of the listing; os.clock is the process's CPU time), VmHWM in KiB.

local o = { page_size = 100, project = "immtest" }
do
  local i = 1
  while i <= #arg do
    local a, v = arg[i], arg[i + 1]
    if v == nil then error("option " .. a .. " needs a value") end
    if a == "--url" then o.url = v
    elseif a == "--ca" then o.ca = v
    elseif a == "--page-size" then o.page_size = assert(tonumber(v))
    elseif a == "--concurrency" then o.concurrency = assert(tonumber(v))
    elseif a == "--dump" then o.dump = v
    else error("unknown option " .. a) end
    i = i + 2
  end
  assert(o.url, "--url is required")
end

local imm = require "imm"
local core = require "imm.core"  -- core.monotonic(): CLOCK_MONOTONIC

local function status_kb(field)
  local f = assert(io.open("/proc/self/status", "r"))
  local s = f:read("*a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+) kB"))
end

local t0, c0 = core.monotonic(), os.clock()
local client = assert(imm.new {
  endpoint = o.url,
  access_key_id = "bench-id",
  access_key_secret = "bench-secret",
  max_retries = 0,
  ca_file = o.ca,
})
-- --page-size 0: none, the pager's default
local opts = { page_size = o.page_size > 0 and o.page_size or nil, concurrency = o.concurrency }
local n, seen = 0, o.dump and {} or nil
for b, err in client:bindings({ ProjectName = o.project }, opts) do
  if not b then error(tostring(err), 0) end
  n = n + 1
  if seen then seen[n] = b.URI elseif not b.URI then error("a binding without a URI", 0) end
end
local wall, cpu = core.monotonic() - t0, os.clock() - c0
local hwm = status_kb("VmHWM")
client:close()

if seen then
  local f = assert(io.open(o.dump, "w"))
  f:write(table.concat(seen, "\n"), "\n")
  f:close()
end
io.write(string.format('{"bindings":%d,"wall":%.6f,"cpu":%.6f,"hwm_kb":%d,"runtime":"%s"}\n',
  n, wall, cpu, hwm, (jit and jit.version or _VERSION)))
