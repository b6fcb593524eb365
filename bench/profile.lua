--- Where imm's CPU time goes, stage by stage, on one runtime.
--
--   LUA_PATH="lua/?.lua;;" LUA_CPATH="build/lua5.4/?.so;;" \
--     lua5.4 bench/profile.lua --url http://127.0.0.1:PORT [--ca CA.crt] [--calls 2000]
--
-- Times, with os.clock (process CPU, user + system), each stage of a
-- list_bindings call on its own, over the canned chain that bench/run.py
-- serves, and the whole call:
--
--   validate   operations.validate of the ListBindings parameters
--   sign       signer.sign: the V3 headers, nonce, date and core.sign_v3
--   http       the libcurl transport's request (header lines, libcurl; the
--              body and headers left in C, as the client asks), with a
--              pre-signed request (nginx does not check signatures)
--   decode     the client's decoder (imm.decode.default, the C decoder)
--   cjson      cjson.decode of the body (lua-cjson alone), for reference
--   nulls      what imm.decode's cjson decoder adds: dropping nulls
--   whole      client:list_bindings, the real call
--   glue       whole minus validate, sign, http and decode: client:call/_attempt, retries loop,
--              error checks, and whatever the GC does differently
--
-- Each stage's own garbage is collected while that stage runs, so the GC
-- cost lands on the stage that made the garbage. Prints one JSON line:
-- microseconds of CPU per call for each stage.
--
-- With --stage NAME (validate, sign, http, decode, whole, or none) it times
-- nothing: it runs that stage --calls times, with the GC left as it runs,
-- and exits. bench/instr.py runs it under callgrind with two call counts;
-- the difference is that stage's instructions per call.

local imm = require "imm"
local core = require "imm.core"
local signer = require "imm.signer"
local operations = require "imm.operations"
local decode = require "imm.decode"
local cjson = require("cjson").new()

local clock, format = os.clock, string.format

local o = { calls = 2000, page_size = 100 }
do
  local i = 1
  while i <= #arg do
    local a, v = arg[i], arg[i + 1]
    if v == nil then error("option " .. a .. " needs a value") end
    if a == "--url" then o.url = v
    elseif a == "--ca" then o.ca = v
    elseif a == "--calls" then o.calls = assert(tonumber(v))
    elseif a == "--page-size" then o.page_size = assert(tonumber(v))
    elseif a == "--stage" then o.stage = v
    else error("unknown option " .. a) end
    i = i + 2
  end
  assert(o.url, "--url is required")
end

local client = assert(imm.new {
  endpoint = o.url, access_key_id = "bench-id", access_key_secret = "bench-secret",
  max_retries = 0, ca_file = o.ca,
})
local project, size, N = "immtest", o.page_size, o.calls

-- The chain's parameters and bodies, as the client sees them.
local params, bodies = {}, {}
do
  local token
  repeat
    local p = { ProjectName = project, MaxResults = size, NextToken = token }
    params[#params + 1] = p
    local res = assert(client:list_bindings(p))
    token = res.NextToken
  until token == nil
end
local npages = #params

local function sign(p)
  local query = assert(operations.validate("ListBindings", p))
  return assert(signer.sign {
    algorithm = "ACS3-HMAC-SHA256", method = "POST", path = "/", authority = client.endpoint.authority,
    action = "ListBindings", version = operations.API_VERSION, query = query, body = "",
    date = os.time(), nonce = core.nonce(),
    access_key_id = "bench-id", access_key_secret = "bench-secret",
  })
end

local requests = {}
for i, p in ipairs(params) do
  local s = sign(p)
  s.headers.accept = "application/json"
  local url = client.endpoint.base .. "/" .. (s.query ~= "" and "?" .. s.query or "")
  -- lazy_body, as the client asks: the body stays in C until read or decoded
  requests[i] = { method = "POST", url = url, headers = s.headers, body = "", lazy_body = true }
  local res = assert(client.transport:request(requests[i]))
  assert(res.status == 200, "HTTP " .. tostring(res.status))
  bodies[i] = res.body
end

local function time(fn)
  collectgarbage()
  collectgarbage()
  local c0 = clock()
  for i = 1, N do fn((i - 1) % npages + 1) end
  return (clock() - c0) / N * 1e6
end

local stages = {
  none = function() end,
  validate = function(i)
    local p = params[i]
    operations.validate("ListBindings",
      { ProjectName = p.ProjectName, MaxResults = p.MaxResults, NextToken = p.NextToken })
  end,
  sign = function(i)
    local p = params[i]
    local query = operations.validate("ListBindings", p)
    local s = signer.sign {
      algorithm = "ACS3-HMAC-SHA256", method = "POST", path = "/", authority = client.endpoint.authority,
      action = "ListBindings", version = operations.API_VERSION, query = query, body = "",
      date = os.time(), nonce = core.nonce(),
      access_key_id = "bench-id", access_key_secret = "bench-secret",
    }
    s.headers.accept = "application/json"
  end,
  http = function(i)
    local res = client.transport:request(requests[i])
    if res.status ~= 200 then error("HTTP " .. res.status) end
  end,
  decode = function(i) client.decode(bodies[i]) end,
  whole = function(i)
    local p = params[i]
    local res = client:list_bindings { ProjectName = p.ProjectName, MaxResults = p.MaxResults, NextToken = p.NextToken }
    if not res then error("list_bindings failed") end
  end,
}
if o.stage then
  local fn = assert(stages[o.stage], "unknown stage")
  for i = 1, N do fn((i - 1) % npages + 1) end
  client:close()
  return
end

local t = {}
t.validate = time(stages.validate)
t.sign = time(stages.sign) - t.validate  -- sign includes a fresh query table, as the client has
t.http = time(stages.http)
t.decode = time(stages.decode)
t.cjson = time(function(i) cjson.decode(bodies[i]) end)
t.nulls = time(function(i) decode.cjson(bodies[i]) end) - t.cjson
t.whole = time(stages.whole)
t.glue = t.whole - (t.validate + t.sign + t.http + t.decode)

local keys = { "validate", "sign", "http", "decode", "cjson", "nulls", "glue", "whole" }
local out = {}
for _, k in ipairs(keys) do out[#out + 1] = format('"%s":%.2f', k, t[k]) end
io.write(format('{"runtime":"%s","calls":%d,%s}\n', jit and jit.version or _VERSION, N, table.concat(out, ",")))
client:close()
