--- imm timed over the canned ListBindings pages that bench/run.py serves with
-- nginx on loopback. Runs on Lua 5.4 and on LuaJIT, with the working tree's
-- modules first on the paths:
--
--   LUA_PATH="lua/?.lua;;" LUA_CPATH="build/lua5.4/?.so;;" \
--     lua5.4 bench/imm_bench.lua --url http://127.0.0.1:PORT [--ca CA.crt]
--       [--mode pages|items] [--page-size 100] [--seconds 3] [--warmup 200]
--       [--check] [--rss-calls N]
--
-- pages: client:list_bindings for each page, following NextToken.
-- items: the coroutine pager, client:bindings, item by item.
-- Both modes read one field of every binding, so they do the same work
-- apart from how the bindings reach the caller. One call at a time; at the
-- end of the chain it starts again from page 1.
--
-- Prints one JSON line: calls, bindings, wall seconds, cpu seconds (os.clock,
-- the process's CPU time, timed part only), VmHWM and VmRSS in KiB. With
-- --rss-calls N it makes exactly N calls (whole chains) and also reports
-- VmRSS after the first 1000 calls and after the last one.

local imm = require "imm"
local core = require "imm.core"  -- for core.monotonic(), a CLOCK_MONOTONIC reading

local clock, format, concat = os.clock, string.format, table.concat

local o = { mode = "pages", page_size = 100, seconds = 3, warmup = 200, project = "immtest" }
do
  local i = 1
  while i <= #arg do
    local a, v = arg[i], arg[i + 1]
    if a == "--check" then o.check = true; i = i + 1
    else
      if v == nil then error("option " .. a .. " needs a value") end
      if a == "--url" then o.url = v
      elseif a == "--ca" then o.ca = v
      elseif a == "--mode" then o.mode = v
      elseif a == "--page-size" then o.page_size = assert(tonumber(v))
      elseif a == "--seconds" then o.seconds = assert(tonumber(v))
      elseif a == "--warmup" then o.warmup = assert(tonumber(v))
      elseif a == "--rss-calls" then o.rss_calls = assert(tonumber(v))
      else error("unknown option " .. a) end
      i = i + 2
    end
  end
  assert(o.url, "--url is required")
  assert(o.mode == "pages" or o.mode == "items", "--mode is pages or items")
end

local function status_kb(field)
  local f = assert(io.open("/proc/self/status", "r"))
  local s = f:read("*a")
  f:close()
  return tonumber(s:match(field .. ":%s*(%d+) kB"))
end

local client = assert(imm.new {
  endpoint = o.url,
  access_key_id = "bench-id",
  access_key_secret = "bench-secret",
  max_retries = 0,
  ca_file = o.ca,
})

local project, size = o.project, o.page_size
local bindings = 0        -- bindings seen
local touched = 0         -- bindings whose URI was read
local trace               -- check mode: one record per page

-- One chain, page by page.
local function chain_pages()
  local token
  repeat
    local res, err = client:list_bindings { ProjectName = project, MaxResults = size, NextToken = token }
    if not res then error(tostring(err), 0) end
    local list = res.Bindings
    local n = #list
    for i = 1, n do
      if list[i].URI then touched = touched + 1 end
    end
    bindings = bindings + n
    if trace then trace[#trace + 1] = { n = n, first = list[1] and list[1].URI, token = token or "" } end
    token = res.NextToken
  until token == nil
end

-- One chain, item by item. The count is a local and the check-mode trace
-- has its own loop, so the timed loop does per binding what chain_pages
-- does: read the URI and count it.
local function chain_items()
  local k = 0
  for b, err in client:bindings({ ProjectName = project }, { page_size = size }) do
    if not b then error(tostring(err), 0) end
    if b.URI then touched = touched + 1 end
    k = k + 1
  end
  bindings = bindings + k
end

local function chain_items_traced()
  local before = bindings
  for b, err in client:bindings({ ProjectName = project }, { page_size = size }) do
    if not b then error(tostring(err), 0) end
    if b.URI then touched = touched + 1 end
    bindings = bindings + 1
    if (bindings - before - 1) % size == 0 then
      trace[#trace + 1] = { n = size, first = b.URI, token = "" }
    end
  end
end

local chain = o.mode == "pages" and chain_pages or chain_items
-- Calls are whole pages: every page of the canned chain is full (bench/run.py
-- checks that with --check first), so calls = bindings / page size.
local floor = math.floor
local function calls() return floor(bindings / size) end

local function json_string(s)
  return '"' .. tostring(s):gsub('[%c"\\]', function(c) return format("\\u%04x", c:byte()) end) .. '"'
end

local function emit(t, keys)
  local out = {}
  for _, k in ipairs(keys) do
    local v = t[k]
    if v ~= nil then
      out[#out + 1] = format("%s:%s", json_string(k),
        type(v) == "string" and json_string(v) or type(v) == "number" and format("%.17g", v) or tostring(v))
    end
  end
  io.write("{", concat(out, ","), "}\n")
end

local runtime = (jit and jit.version or _VERSION) .. ", " .. core.backend()

if o.check then
  trace = {}
  if chain == chain_items then chain = chain_items_traced end
  chain()
  local pages = {}
  for i, p in ipairs(trace) do
    pages[i] = format('{"n":%d,"first":%s,"token":%s}', p.n, json_string(p.first), json_string(p.token))
  end
  io.write(format('{"check":true,"calls":%d,"bindings":%d,"pages":[%s]}\n', calls(), bindings, concat(pages, ",")))
  os.exit(0)
end

while calls() < o.warmup do chain() end
bindings, touched = 0, 0

if o.rss_calls then
  local rss_1k
  local t0, c0 = core.monotonic(), clock()
  while calls() < o.rss_calls do
    chain()
    if not rss_1k and calls() >= 1000 then rss_1k = status_kb("VmRSS") end
  end
  local wall, cpu = core.monotonic() - t0, clock() - c0
  emit({ calls = calls(), bindings = bindings, wall = wall, cpu = cpu, rss_1k_kb = rss_1k,
         rss_end_kb = status_kb("VmRSS"), hwm_kb = status_kb("VmHWM"),
         lua_kb = collectgarbage("count"), runtime = runtime },
    { "calls", "bindings", "wall", "cpu", "rss_1k_kb", "rss_end_kb", "hwm_kb", "lua_kb", "runtime" })
  os.exit(0)
end

local t0, c0 = core.monotonic(), clock()
local deadline = t0 + o.seconds
repeat chain() until core.monotonic() >= deadline
local wall, cpu = core.monotonic() - t0, clock() - c0
assert(touched == bindings)
emit({ calls = calls(), bindings = bindings, wall = wall, cpu = cpu,
       hwm_kb = status_kb("VmHWM"), rss_kb = status_kb("VmRSS"), runtime = runtime },
  { "calls", "bindings", "wall", "cpu", "hwm_kb", "rss_kb", "runtime" })
client:close()
