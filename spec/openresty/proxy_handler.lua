-- The proxy scenarios of spec/06_openresty_spec.lua: a client on cosockets
-- with the proxy and no_proxy given in the query, `n` calls, and what each
-- returned (the error as tostring shows it, for the password checks).
local cjson = require "cjson"
local imm = require "imm"

local ngx = ngx
local _M = {}

local KEY_ID, SECRET = "imm-local-id", "imm-local-secret"

function _M.run()
  local args = ngx.req.get_uri_args()
  local np = args.no_proxy
  if np == "" then np = {} end
  local c, cerr = imm.new {
    endpoint = args.endpoint, access_key_id = KEY_ID, access_key_secret = SECRET,
    proxy = args.proxy ~= "false" and args.proxy or false, no_proxy = np,
    max_retries = tonumber(args.max_retries) or 0, timeout = tonumber(args.timeout) or 5,
  }
  local out = { calls = {} }
  if not c then
    out.new_code, out.new_error = cerr.code, tostring(cerr)
  else
    for i = 1, tonumber(args.n) or 1 do
      local res, err = c:list_bindings { ProjectName = "immtest", MaxResults = 2 }
      out.calls[i] = res and { ok = true } or { code = err.code, status = err.status, error = tostring(err),
        retryable = err.retryable, sent = err.sent, message = err.message }
    end
  end
  ngx.header.content_type = "application/json"
  ngx.say(cjson.encode(out))
end

return _M
