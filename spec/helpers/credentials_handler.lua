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

return _M
