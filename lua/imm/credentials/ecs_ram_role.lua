--- ECS RAM role, through the instance metadata service (IMDS).
--
-- IMDSv2 first: `PUT /latest/api/token` with
-- `x-aliyun-ecs-metadata-token-ttl-seconds`, then the GETs carry
-- `x-aliyun-ecs-metadata-token`. When the service answers the token request
-- with an error, imm falls back to IMDSv1 unless
-- `ALIBABA_CLOUD_IMDSV1_DISABLED=true`. When the service cannot be reached
-- at all it does not try v1 (it would fail the same way, and a laptop
-- would wait twice). Timeouts are 1 s.
--
-- `ALIBABA_CLOUD_ECS_METADATA_DISABLED=true` turns the provider off. The
-- role is `role_name`, `ALIBABA_CLOUD_ECS_METADATA`, or else the one the
-- service lists. The service is `http://100.100.100.200`, or
-- `metadata_endpoint` / `ALIBABA_CLOUD_ECS_METADATA_ENDPOINT` (tests,
-- proxies).
-- @module imm.credentials.ecs_ram_role

local tostring, format, match, gsub = tostring, string.format, string.match, string.gsub
local errors = require "imm.errors"
local endpoint = require "imm.endpoint"
local base = require "imm.credentials.base"

local _M = {}

local DEFAULT_ENDPOINT = "http://100.100.100.200"
local TOKEN_TTL = "21600"
local CREDS_PATH = "/latest/meta-data/ram/security-credentials/"

local OPTIONS = {
  role_name = "string", metadata_endpoint = "string", disable_imdsv1 = "boolean",
}

local function valid_role(r)
  return match(r, "^[%w%.%-_@]+$") ~= nil and #r <= 128
end

--- ECS RAM role credentials.
-- @tparam[opt] table opts `role_name`, `metadata_endpoint`, `disable_imdsv1`, and
--   the common options (`env`, `clock`, `random`, `debug`, `transport`,
--   `connect_timeout` and `timeout`, both 1 s by default)
-- @return provider, or nil, err (`InvalidParameter`); its `get` returns
--   nil, err: `NoCredentials` when disabled, `ConnectionFailed`/`Timeout`
--   when the service cannot be reached, `InvalidResponse` for a bad reply
-- @usage local p = imm.credentials.ecs_ram_role{ role_name = "EcsRamRoleTest" }
---@param opts imm.EcsRamRoleOptions|nil
---@return imm.CredentialsProvider|nil provider
---@return imm.Error|nil err
function _M.new(opts)
  local what = "credentials.ecs_ram_role"
  local o, err = base.options(what, opts, OPTIONS, base.COMMON)
  if not o then return nil, err end
  if o.role_name and not valid_role(o.role_name) then
    return nil, errors.invalid(what .. ": role_name must be a RAM role name ([A-Za-z0-9.-_@])")
  end
  local getenv = base.getenv(o)
  local trace, tracing = base.tracer("ecs_ram_role", o)
  -- never through a proxy: the replies carry the instance's credentials
  local http = base.http(o, { connect_timeout = 1, timeout = 1, no_proxy = true }, tracing and trace)
  local role  -- configured or discovered, then kept

  local function build()
    if base.truthy(getenv("ALIBABA_CLOUD_ECS_METADATA_DISABLED")) then
      return nil, base.none("disabled by ALIBABA_CLOUD_ECS_METADATA_DISABLED=true")
    end
    local raw = o.metadata_endpoint or getenv("ALIBABA_CLOUD_ECS_METADATA_ENDPOINT") or DEFAULT_ENDPOINT
    local ep, eerr = endpoint.resolve { endpoint = raw, protocol = "http" }
    if not ep then
      eerr.message = "metadata endpoint: " .. eerr.message
      return nil, eerr
    end
    role = o.role_name or getenv("ALIBABA_CLOUD_ECS_METADATA")
    if role and not valid_role(role) then
      return nil, base.bad_config("ALIBABA_CLOUD_ECS_METADATA is not a RAM role name")
    end
    local no_v1 = o.disable_imdsv1
    if no_v1 == nil then no_v1 = base.truthy(getenv("ALIBABA_CLOUD_IMDSV1_DISABLED")) end

    local function failed(res, doing)
      return nil, errors.new(res.status == 404 and "NoCredentials" or "InvalidResponse",
        format("metadata service at %s answered HTTP %d %s", ep.authority, res.status, doing),
        { status = res.status, retryable = res.status >= 500 })
    end

    local function fetch(deadline)
      -- IMDSv2 token (a secret: never traced, never in an error)
      local token
      local res, rerr = http:request({ method = "PUT", url = ep.base .. "/latest/api/token",
        headers = { ["x-aliyun-ecs-metadata-token-ttl-seconds"] = TOKEN_TTL } }, deadline)
      if not res then
        rerr.message = format("metadata service at %s unreachable: %s", ep.authority, tostring(rerr.message))
        return nil, rerr
      end
      if res.status == 200 and res.body ~= "" then
        token = res.body
      elseif no_v1 then
        return nil, errors.new("InvalidResponse", format("metadata service at %s refused an IMDSv2 token "
          .. "(HTTP %d), and ALIBABA_CLOUD_IMDSV1_DISABLED forbids IMDSv1", ep.authority, res.status),
          { status = res.status, retryable = false })
      else
        trace("no IMDSv2 token (HTTP %d): falling back to IMDSv1", res.status)
      end
      local headers = token and { ["x-aliyun-ecs-metadata-token"] = token } or {}

      if not role then
        res, rerr = http:request({ method = "GET", url = ep.base .. CREDS_PATH, headers = headers }, deadline)
        if not res then return nil, rerr end
        if res.status ~= 200 then return failed(res, "listing the instance's RAM role") end
        local name = match(res.body, "^%s*([^%s]+)")
        if not name then
          return nil, base.none(format("no RAM role is attached to the instance (metadata service at %s)",
            ep.authority))
        end
        if not valid_role(name) then
          return nil, errors.new("InvalidResponse", "the metadata service listed a role name that is not valid",
            { retryable = false })
        end
        role = name
        trace("discovered role %s", role)
      end

      res, rerr = http:request({ method = "GET", url = ep.base .. CREDS_PATH .. role, headers = headers },
        deadline)
      if not res then return nil, rerr end
      if res.status ~= 200 then return failed(res, "for the credentials of role " .. role) end
      local where = format("metadata service reply for role %s", role)
      local v, jerr = base.json_object(res, where)
      if not v then return nil, jerr end
      if v.Code ~= nil and v.Code ~= "Success" then
        return nil, errors.new("InvalidResponse", format("%s has Code %q", where,
          (gsub(tostring(v.Code), "[^%w%.%-_ ]", "?"))), { retryable = true })
      end
      return base.temporary(v, where)
    end
    return base.cached(fetch, { stale = base.STALE_ECS, clock = o.clock, random = o.random, trace = trace })
  end

  return base.lazy("ecs_ram_role", build)
end

return _M
