--- RAM role ARN: STS AssumeRole, signed with V2 by a source credential.
--
-- The source is a provider (`source`), or fixed keys (`access_key_id`,
-- `access_key_secret`, `security_token`), or else the environment's keys.
-- It is asked at every refresh, so a rotating source works.
-- @module imm.credentials.ram_role_arn

local type, tostring, format, os_time = type, tostring, string.format, os.time
local errors = require "imm.errors"
local base = require "imm.credentials.base"
local sts = require "imm.credentials.sts"

local _M = {}

local OPTIONS = {
  role_arn = "string", role_session_name = "string", policy = "string", external_id = "string",
  duration_seconds = "number", source = "table",
  access_key_id = "string", access_key_secret = "string", security_token = "string",
}

--- RAM role ARN credentials.
-- @tparam table opts `role_arn` (or `ALIBABA_CLOUD_ROLE_ARN`), `role_session_name`
--   (or `ALIBABA_CLOUD_ROLE_SESSION_NAME`), `policy`, `external_id`,
--   `duration_seconds` (>= 900, default 3600); the source: `source` (a provider)
--   or `access_key_id` + `access_key_secret` [+ `security_token`], default the
--   environment's keys; `sts_endpoint`, `sts_region`, `enable_vpc`; and the
--   common options (`env`, `clock`, `random`, `debug`, `transport`, ...)
-- @return provider, or nil, err (`InvalidParameter`); its `get` returns
--   nil, err: the source's error, a network error, or STS's own code
-- @usage local p = assert(imm.credentials.ram_role_arn{ role_arn = "acs:ram::123:role/imm",
--   access_key_id = id, access_key_secret = secret })
---@param opts imm.RamRoleArnOptions
---@return imm.CredentialsProvider|nil provider
---@return imm.Error|nil err
function _M.new(opts)
  local what = "credentials.ram_role_arn"
  local o, err = base.options(what, opts, OPTIONS, base.STS, base.COMMON)
  if not o then return nil, err end
  local getenv = base.getenv(o)
  local role_arn = o.role_arn or getenv("ALIBABA_CLOUD_ROLE_ARN")
  if not base.nonempty(role_arn) then
    return nil, errors.invalid(what .. ": role_arn is required (or ALIBABA_CLOUD_ROLE_ARN)")
  end
  local duration
  duration, err = base.duration(what, o.duration_seconds)
  if not duration then return nil, err end

  local source = o.source
  if source then
    if o.access_key_id or o.access_key_secret or o.security_token then
      return nil, errors.invalid(what .. ": give either source or access_key_id/access_key_secret, not both")
    end
    if type(source.get) ~= "function" then
      return nil, errors.invalid(what .. ": source must be a provider (a table with a get method)")
    end
  elseif o.access_key_id or o.access_key_secret or o.security_token then
    source, err = require("imm.credentials.static").new(o)
    if not source then return nil, err end
  else
    source = require("imm.credentials.env").new { env = o.env }
  end

  local ep
  ep, err = sts.endpoint(o, getenv)
  if not ep then return nil, err end
  local session = o.role_session_name or getenv("ALIBABA_CLOUD_ROLE_SESSION_NAME") or ("imm-lua-" .. os_time())
  local trace, tracing = base.tracer("ram_role_arn", o)
  local http = base.http(o, { connect_timeout = 5, timeout = 10 }, tracing and trace)
  -- the policy and the external id stay in this closure
  local policy, external_id = o.policy, o.external_id

  local function fetch(deadline)
    local src, serr = source:get(base.left(deadline))
    if not src then
      return nil, errors.new(serr and serr.code or "NoCredentials",
        "no source credentials for AssumeRole: " .. tostring(serr and serr.message),
        { retryable = false })
    end
    trace("AssumeRole %s (session %s) with key %s", role_arn, session, src.access_key_id)
    return sts.assume_role(http, ep, src, {
      RoleArn = role_arn, RoleSessionName = session, DurationSeconds = format("%d", duration),
      Policy = policy, ExternalId = external_id,
    }, deadline)
  end
  local get = base.cached(fetch, { stale = base.STALE_TEMPORARY, clock = o.clock, random = o.random, trace = trace })
  return base.provider("ram_role_arn", get)
end

return _M
