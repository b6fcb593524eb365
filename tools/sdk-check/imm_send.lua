-- Sends the calls of a cases file with imm, for tools/sdk-check/sdkdiff.js.
--
--   lua5.4 tools/sdk-check/imm_send.lua CASES.json HOST:PORT [SIGNATURE_ALGORITHM [call]]
--
-- CASES.json is an array of { id, action, params[, headers] } (params keyed by
-- wire name, as JSON; headers, when given, go as the call option headers).
-- Each call goes to http://HOST:PORT with the generated method of the
-- action when the client has one (client:create_media_convert_task{...}),
-- else, or with "call" as the fourth argument, with client:call(action, params). Prints one line per call:
-- "ok ID method|call" or "err ID method|call CODE MESSAGE". Needs LUA_PATH and
-- LUA_CPATH to find the working tree's imm (sdkdiff.js sets them).

local imm = require "imm"
local core = require "imm.core"

local cases_file, endpoint, algorithm, only_call = arg[1], arg[2], arg[3], arg[4] == "call"
assert(cases_file and endpoint, "usage: imm_send.lua CASES.json HOST:PORT [SIGNATURE_ALGORITHM [call]]")

local f = assert(io.open(cases_file, "rb"))
local cases = assert(core.json_decode(f:read("*a")))
f:close()

-- The decoder gives floats for some integral numbers; a Lua user writes
-- 202405170000123 as an integer literal, so send it as one (5.3+).
local tointeger = math.tointeger
local function integers(v)
  if type(v) == "number" and tointeger then
    return tointeger(v) or v
  elseif type(v) == "table" then
    for k, x in pairs(v) do v[k] = integers(x) end
  end
  return v
end

-- CreateMediaConvertTask -> create_media_convert_task, acronyms kept whole.
local function snake(name)
  local s = name:gsub("(%u+)(%u%l)", "%1_%2"):gsub("(%l)(%u)", "%1_%2"):gsub("(%d)(%u)", "%1_%2")
  return s:lower()
end

local client = assert(imm.new {
  endpoint = endpoint, protocol = "http", region = "cn-hangzhou",
  access_key_id = "imm-sdkdiff-id", access_key_secret = "imm-sdkdiff-secret",
  signature_algorithm = algorithm ~= "" and algorithm or nil,
  max_retries = 0, timeout = 10,
})

for _, case in ipairs(cases) do
  local params = integers(case.params)
  local opts = case.headers and { headers = case.headers } or nil
  local method = not only_call and client[snake(case.action)]
  local via = type(method) == "function" and "method" or "call"
  -- pcall: a call that raises is reported as such, and the other calls still run
  local ok, res, err = pcall(function()
    if via == "method" then return method(client, params, opts) end
    return client:call(case.action, params, opts)
  end)
  if not ok then
    res, err = nil, { code = "raised", message = res }
  end
  if res then
    io.write("ok ", case.id, " ", via, "\n")
  else
    local msg = tostring(err and err.message or err):gsub("[\r\n]", " ")
    io.write("err ", case.id, " ", via, " ", tostring(err and err.code), " ", msg, "\n")
  end
end
