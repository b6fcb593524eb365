-- Microbenchmark of the response decoders (issue #6): microseconds per
-- decode of one canned ListBindings page, best of 5 rounds.
--   python3 bench/pages.py /tmp/pages
--   LUA_PATH="lua/?.lua;;" LUA_CPATH="build/lua5.4/?.so;;" lua5.4 bench/decode_bench.lua /tmp/pages/p100-01.json [N]
local decode = require "imm.decode"
local clock = os.clock

local path, n = arg[1], tonumber(arg[2]) or 2000
local f = assert(io.open(path, "rb"))
local body = f:read("*a")
f:close()

local function time(fn)
  local best = math.huge
  for _ = 1, 5 do
    collectgarbage("collect")
    local t0 = clock()
    for _ = 1, n do fn(body) end
    local dt = (clock() - t0) / n * 1e6
    if dt < best then best = dt end
  end
  return best
end

print(string.format("%s, %d bytes, %d decodes per round", _VERSION .. (jit and " (" .. jit.version .. ")" or ""), #body, n))
for _, name in ipairs { "cjson", "imm" } do
  print(string.format("  %-6s %8.1f us/decode", name, time(decode[name])))
end
