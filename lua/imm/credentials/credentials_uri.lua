--- Credentials from a URI (`ALIBABA_CLOUD_CREDENTIALS_URI`): a GET that
-- answers `{ "Code": "Success", "AccessKeyId", "AccessKeySecret",
-- "SecurityToken", "Expiration" }`. Refreshed when fewer than 15 minutes
-- remain.
-- @module imm.credentials.credentials_uri

local tostring, format, match, gsub = tostring, string.format, string.match, string.gsub
local errors = require "imm.errors"
local base = require "imm.credentials.base"

local _M = {}

-- The URI as it may be shown: no user info, no query.
local function shown(uri)
  local s = gsub(uri, "^(%a[%w+.-]*://)[^/@]*@", "%1")
  return (gsub(s, "[?#].*$", ""))
end

--- Credentials from a URI.
-- @tparam[opt] table opts `uri` (default `ALIBABA_CLOUD_CREDENTIALS_URI`) and
--   the common options (`env`, `clock`, `random`, `debug`, `transport`,
--   `connect_timeout`, `timeout`, `ca_file`, `insecure`)
-- @return provider, or nil, err (`InvalidParameter`); its `get` returns
--   nil, err: `NoCredentials` when no URI is set, a network error, or
--   `InvalidResponse` for a bad reply
-- @usage local p = imm.credentials.credentials_uri{ uri = "http://127.0.0.1:9000/creds" }
---@param opts imm.CredentialsUriOptions|nil
---@return imm.CredentialsProvider|nil provider
---@return imm.Error|nil err
function _M.new(opts)
  local o, err = base.options("credentials.credentials_uri", opts, { uri = "string" }, base.COMMON)
  if not o then return nil, err end
  local getenv = base.getenv(o)
  local trace, tracing = base.tracer("credentials_uri", o)

  local function build()
    local uri = o.uri or getenv("ALIBABA_CLOUD_CREDENTIALS_URI")
    if not uri then
      return nil, base.none("ALIBABA_CLOUD_CREDENTIALS_URI is not set")
    end
    if not match(uri, "^[hH][tT][tT][pP][sS]?://[^/?#]+") then
      return nil, base.bad_config(format("the credentials URI must be an http(s) URL, got %q", shown(uri)))
    end
    if not match(uri, "^%a+://[^/?#]+[/?]") then uri = uri .. "/" end
    local where = "credentials URI " .. shown(uri)
    -- a service on this host or link-local is reached directly, never
    -- through a proxy, which would see the credentials in the reply
    local http = base.http(o, { connect_timeout = 5, timeout = 10, no_proxy = base.is_local_url(uri) },
      tracing and trace)
    local function fetch(deadline)
      local res, rerr = http:request({ method = "GET", url = uri, shown_url = shown(uri),
        headers = { accept = "application/json" } }, deadline)
      if not res then
        rerr.message = where .. ": " .. tostring(rerr.message)
        return nil, rerr
      end
      if res.status ~= 200 then
        return nil, errors.new("InvalidResponse", format("%s answered HTTP %d", where, res.status),
          { status = res.status, retryable = res.status >= 500 })
      end
      local v, jerr = base.json_object(res, where .. " reply")
      if not v then return nil, jerr end
      if v.Code ~= nil and v.Code ~= "Success" then
        return nil, errors.new("InvalidResponse", format("%s answered Code %q", where,
          (gsub(tostring(v.Code), "[^%w%.%-_ ]", "?"))), { retryable = false })
      end
      return base.temporary(v, where .. " reply")
    end
    return base.cached(fetch, { stale = base.STALE_TEMPORARY, clock = o.clock, random = o.random, trace = trace })
  end

  return base.lazy("credentials_uri", build)
end

return _M
