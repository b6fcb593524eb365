-- Soak benchmark (not a test): repeats list calls against the local IMM
-- server and reports how the resident memory grows.
--
--   sh tools/with-server.sh lua5.4 bench/soak.lua [CALLS]     (make soak)
local imm = require "imm"

local calls = tonumber(arg[1]) or 100000

local function rss_kb()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("*a")
  f:close()
  return tonumber(s:match("VmRSS:%s*(%d+)")), tonumber(s:match("VmHWM:%s*(%d+)"))
end

local client = assert(imm.new { endpoint = os.getenv("IMM_ENDPOINT"), max_retries = 0 })
local params = { ProjectName = "immtest", MaxResults = 10 }
local marks, t0 = {}, os.time()
for i = 1, calls do
  local res, err = client:list_bindings(params)
  if not res then error(tostring(err)) end
  if i == 1000 or i == calls or i % 20000 == 0 then
    collectgarbage()
    marks[#marks + 1] = { i, rss_kb() }
  end
end
local elapsed = math.max(1, os.time() - t0)
print(string.format("soak: %d calls in %ds (%s, %s)", calls, elapsed, _VERSION, (jit and jit.version) or "no JIT"))
for _, m in ipairs(marks) do
  print(string.format("soak: after %6d calls RSS %6.1f MB", m[1], m[2] / 1024))
end
local first, last = marks[1], marks[#marks]
print(string.format("soak: RSS growth from %d to %d calls: %+.2f MB (peak %.1f MB)",
  first[1], last[1], (last[2] - first[2]) / 1024, last[3] / 1024))
