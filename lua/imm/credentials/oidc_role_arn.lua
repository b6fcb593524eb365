--- OIDC role ARN (RRSA on ACK): STS AssumeRoleWithOIDC with the token from
-- a file, which is read again at every refresh (the platform rotates it).
--
-- Configuration comes from options, or else from
-- `ALIBABA_CLOUD_ROLE_ARN`, `ALIBABA_CLOUD_OIDC_PROVIDER_ARN`,
-- `ALIBABA_CLOUD_OIDC_TOKEN_FILE`, `ALIBABA_CLOUD_ROLE_SESSION_NAME`,
-- `ALIBABA_CLOUD_STS_REGION` and `ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED`.
-- The provider applies when the first three are known.
-- @module imm.credentials.oidc_role_arn

local ipairs, tostring, format, concat, gsub = ipairs, tostring, string.format, table.concat, string.gsub
local os_time = os.time
local base = require "imm.credentials.base"
local sts = require "imm.credentials.sts"

local _M = {}

local OPTIONS = {
  role_arn = "string", oidc_provider_arn = "string", oidc_token_file = "string",
  role_session_name = "string", policy = "string", duration_seconds = "number",
}

local REQUIRED = {
  { "role_arn", "ALIBABA_CLOUD_ROLE_ARN" },
  { "oidc_provider_arn", "ALIBABA_CLOUD_OIDC_PROVIDER_ARN" },
  { "oidc_token_file", "ALIBABA_CLOUD_OIDC_TOKEN_FILE" },
}

--- OIDC role ARN credentials.
-- @tparam[opt] table opts `role_arn`, `oidc_provider_arn`, `oidc_token_file`,
--   `role_session_name`, `policy`, `duration_seconds` (>= 900, default 3600),
--   `sts_endpoint`, `sts_region`, `enable_vpc`, and the common options
--   (`env`, `clock`, `random`, `debug`, `transport`, `connect_timeout`,
--   `timeout`, `ca_file`, `insecure`)
-- @return provider, or nil, err (`InvalidParameter`); its `get` returns
--   nil, err: `NoCredentials` when not configured, `InvalidConfiguration`
--   for an unreadable token file, STS's own code when STS refuses
-- @usage local p = imm.credentials.oidc_role_arn()  -- from the RRSA environment
---@param opts imm.OidcRoleArnOptions|nil
---@return imm.CredentialsProvider|nil provider
---@return imm.Error|nil err
function _M.new(opts)
  local o, err = base.options("credentials.oidc_role_arn", opts, OPTIONS, base.STS, base.COMMON)
  if not o then return nil, err end
  local duration
  duration, err = base.duration("credentials.oidc_role_arn", o.duration_seconds)
  if not duration then return nil, err end
  local getenv = base.getenv(o)
  local trace, tracing = base.tracer("oidc_role_arn", o)
  local http = base.http(o, { connect_timeout = 5, timeout = 10 }, tracing and trace)

  local function build()
    local cfg, missing = {}, {}
    for _, r in ipairs(REQUIRED) do
      local v = o[r[1]] or getenv(r[2])
      if not v then missing[#missing + 1] = r[2] end
      cfg[r[1]] = v
    end
    if #missing > 0 then
      return nil, base.none("not configured (" .. concat(missing, ", ") .. " not set)")
    end
    local ep, eerr = sts.endpoint(o, getenv)
    if not ep then return nil, eerr end
    local session = o.role_session_name or getenv("ALIBABA_CLOUD_ROLE_SESSION_NAME")
      or ("imm-lua-" .. os_time())
    local function fetch(deadline)
      -- read at every refresh: the file is rotated under us
      local token, ferr = base.read_file(cfg.oidc_token_file)
      if not token then
        return nil, base.bad_config(format("cannot read the OIDC token file %s: %s", cfg.oidc_token_file,
          tostring(ferr)),
          { file = cfg.oidc_token_file })
      end
      token = gsub(token, "^%s+", "")
      token = gsub(token, "%s+$", "")
      if token == "" then
        return nil, base.bad_config(format("the OIDC token file %s is empty", cfg.oidc_token_file),
          { file = cfg.oidc_token_file })
      end
      trace("AssumeRoleWithOIDC for %s (session %s)", cfg.role_arn, session)
      return sts.assume_role_with_oidc(http, ep, {
        RoleArn = cfg.role_arn, OIDCProviderArn = cfg.oidc_provider_arn, OIDCToken = token,
        RoleSessionName = session, DurationSeconds = format("%d", duration), Policy = o.policy,
      }, deadline)
    end
    return base.cached(fetch, { stale = base.STALE_TEMPORARY, clock = o.clock, random = o.random, trace = trace })
  end

  return base.lazy("oidc_role_arn", build)
end

return _M
