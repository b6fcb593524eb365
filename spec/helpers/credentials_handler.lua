-- Runs inside nginx for spec/07_credentials_spec.lua: one credentials
-- provider per worker, shared by every request, as an application would
-- keep it. Each request answers with what `get` returned (never a secret).
local cjson = require "cjson"
local credentials = require "imm.credentials"

local ngx = rawget(_G, "ngx")
local _M = {}

local provider
local offset = 0  -- added to the clock, so the spec can make credentials stale

function _M.get()
  local args = ngx.req.get_uri_args()
  if args.offset then offset = tonumber(args.offset) end
  if not provider then
    provider = assert(credentials.credentials_uri {
      uri = args.uri, clock = function() return ngx.time() + offset end,
    })
  end
  local t0 = ngx.now()
  local c, err = provider:get()
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode {
    id = c and c.access_key_id, err = err and err.code, message = err and err.message,
    waited = ngx.now() - t0,
  })
end

-- One IMM call (to a closed port) under a deadline, with credentials from
-- the URI: what it returned, and how long it took.
function _M.call()
  local args = ngx.req.get_uri_args()
  local c = assert(require("imm").new { endpoint = "http://127.0.0.1:1", protocol = "http",
    deadline = tonumber(args.deadline), max_retries = 0,
    credentials = assert(credentials.credentials_uri { uri = args.uri }) })
  local t0 = ngx.now()
  local res, err = c:list_bindings { ProjectName = "immtest" }
  ngx.update_time()
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode {
    ok = res ~= nil, err = err and err.code, message = err and err.message, took = ngx.now() - t0,
  })
end

-- Credentials from an External program (ngx.pipe) under a deadline: the
-- key id it printed (never the secret), or the error, and how long it took.
function _M.external()
  local args = ngx.req.get_uri_args()
  local p = assert(credentials.external { command = args.cmd })
  local t0 = ngx.now()
  local c, err = p:get { timeout = tonumber(args.deadline) }
  ngx.update_time()
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode {
    id = c and c.access_key_id, err = err and err.code, message = err and err.message, took = ngx.now() - t0,
  })
end

return _M
