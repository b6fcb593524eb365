--- Credentials providers.
--
-- A provider is a table with a `get` method returning
-- `{ access_key_id, access_key_secret, security_token, expiration }` or
-- `nil, err`. The client asks its provider on every call, so rotating
-- providers (STS, ECS role, OIDC, ...) plug in without the client knowing;
-- they cache and refresh before expiry themselves. `get(opts)` may be given
-- `opts.timeout`, the seconds the caller can still wait (a client with a
-- `deadline` passes what is left of it); imm's providers hold every request
-- to it.
--
-- Secrets are held in closures, not in fields, so printing or iterating a
-- provider or a client never shows them.
--
-- One module per provider lives under `imm.credentials.*`; this one gathers
-- them and builds the default chain.
-- @module imm.credentials

local type, pairs, require, rawset = type, pairs, require, rawset

local _M = {}

---@class imm.Credentials
---@field access_key_id string
---@field access_key_secret string
---@field security_token string|nil STS credentials
---@field expiration number|nil epoch seconds, for temporary credentials

---@class imm.CredentialsProvider
---@field name string e.g. "env", "ecs_ram_role", "chain"
---@field get fun(self: imm.CredentialsProvider, opts: { timeout: number|nil }|nil): imm.Credentials|nil, imm.Error|nil

---@class imm.CredentialsCommonOptions
---@field env table|(fun(name: string): string|nil)|nil replaces os.getenv (tests, sandboxes)
---@field clock (fun(): number)|nil epoch seconds, for expiry decisions
---@field random (fun(): number)|nil [0, 1), for backoff jitter
---@field debug boolean|function|nil true: trace to stderr (nginx: its log); a function receives each line
---@field transport "curl"|"ngx"|table|function|nil
---@field connect_timeout number|nil seconds
---@field timeout number|nil seconds
---@field ca_file string|nil
---@field insecure boolean|nil

---@class imm.StsOptions : imm.CredentialsCommonOptions
---@field sts_endpoint string|nil "host[:port]" or "http(s)://host[:port]"
---@field sts_region string|nil sts.<region>.aliyuncs.com
---@field enable_vpc boolean|nil sts-vpc.<region>.aliyuncs.com

---@class imm.StaticOptions
---@field access_key_id string
---@field access_key_secret string
---@field security_token string|nil

---@class imm.EnvOptions
---@field env table|(fun(name: string): string|nil)|nil

---@class imm.OidcRoleArnOptions : imm.StsOptions
---@field role_arn string|nil default ALIBABA_CLOUD_ROLE_ARN
---@field oidc_provider_arn string|nil default ALIBABA_CLOUD_OIDC_PROVIDER_ARN
---@field oidc_token_file string|nil default ALIBABA_CLOUD_OIDC_TOKEN_FILE
---@field role_session_name string|nil
---@field policy string|nil
---@field duration_seconds integer|nil >= 900, default 3600

---@class imm.CliProfileOptions : imm.StsOptions
---@field path string|nil default ~/.aliyun/config.json
---@field profile string|nil default ALIBABA_CLOUD_PROFILE, else the file's current
---@field metadata_endpoint string|nil for EcsRamRole profiles

---@class imm.ProfileOptions : imm.StsOptions
---@field path string|nil default ALIBABA_CLOUD_CREDENTIALS_FILE or ~/.alibabacloud/credentials
---@field profile string|nil default ALIBABA_CLOUD_PROFILE, else "default"
---@field metadata_endpoint string|nil for ecs_ram_role sections

---@class imm.EcsRamRoleOptions : imm.CredentialsCommonOptions
---@field role_name string|nil default ALIBABA_CLOUD_ECS_METADATA, else discovered
---@field metadata_endpoint string|nil default http://100.100.100.200
---@field disable_imdsv1 boolean|nil

---@class imm.CredentialsUriOptions : imm.CredentialsCommonOptions
---@field uri string|nil default ALIBABA_CLOUD_CREDENTIALS_URI

---@class imm.ExternalOptions : imm.CredentialsCommonOptions
---@field command string the program and its arguments, split on white space

---@class imm.RamRoleArnOptions : imm.StsOptions
---@field role_arn string|nil default ALIBABA_CLOUD_ROLE_ARN
---@field role_session_name string|nil
---@field policy string|nil
---@field external_id string|nil
---@field duration_seconds integer|nil >= 900, default 3600
---@field source imm.CredentialsProvider|nil the credential that signs AssumeRole
---@field access_key_id string|nil instead of source
---@field access_key_secret string|nil
---@field security_token string|nil

---@class imm.ChainOptions
---@field debug boolean|function|nil
---@field env table|function|nil

--- Fixed keys. See `imm.credentials.static`.
-- @usage local p = imm.credentials.static{ access_key_id = id, access_key_secret = secret }
---@type fun(t: imm.StaticOptions): imm.CredentialsProvider|nil, imm.Error|nil
_M.static = require("imm.credentials.static").new

--- Keys from `ALIBABA_CLOUD_ACCESS_KEY_ID`, `ALIBABA_CLOUD_ACCESS_KEY_SECRET`
-- and `ALIBABA_CLOUD_SECURITY_TOKEN`, read at each call. See `imm.credentials.env`.
-- @usage local p = imm.credentials.env()
---@type fun(opts: imm.EnvOptions|nil): imm.CredentialsProvider|nil, imm.Error|nil
_M.env = nil  -- loaded on first use (LAZY below)

--- OIDC role ARN (RRSA): STS AssumeRoleWithOIDC. See `imm.credentials.oidc_role_arn`.
-- @usage local p = imm.credentials.oidc_role_arn()
---@type fun(opts: imm.OidcRoleArnOptions|nil): imm.CredentialsProvider|nil, imm.Error|nil
_M.oidc_role_arn = nil  -- loaded on first use (LAZY below)

--- A profile of `~/.aliyun/config.json`. See `imm.credentials.cli_profile`.
-- @usage local p = imm.credentials.cli_profile{ profile = "prod" }
---@type fun(opts: imm.CliProfileOptions|nil): imm.CredentialsProvider|nil, imm.Error|nil
_M.cli_profile = nil  -- loaded on first use (LAZY below)

--- A section of the shared credentials file. See `imm.credentials.profile`.
-- @usage local p = imm.credentials.profile{ profile = "default" }
---@type fun(opts: imm.ProfileOptions|nil): imm.CredentialsProvider|nil, imm.Error|nil
_M.profile = nil  -- loaded on first use (LAZY below)

--- ECS RAM role through the metadata service. See `imm.credentials.ecs_ram_role`.
-- @usage local p = imm.credentials.ecs_ram_role()
---@type fun(opts: imm.EcsRamRoleOptions|nil): imm.CredentialsProvider|nil, imm.Error|nil
_M.ecs_ram_role = nil  -- loaded on first use (LAZY below)

--- Credentials from `ALIBABA_CLOUD_CREDENTIALS_URI`. See `imm.credentials.credentials_uri`.
-- @usage local p = imm.credentials.credentials_uri{ uri = "http://127.0.0.1:9000/creds" }
---@type fun(opts: imm.CredentialsUriOptions|nil): imm.CredentialsProvider|nil, imm.Error|nil
_M.credentials_uri = nil  -- loaded on first use (LAZY below)

--- Credentials printed by a program (aliyun-cli's External mode). See `imm.credentials.external`.
-- @usage local p = imm.credentials.external{ command = "/usr/local/bin/get-creds --role ops" }
---@type fun(opts: imm.ExternalOptions): imm.CredentialsProvider|nil, imm.Error|nil
_M.external = nil  -- loaded on first use (LAZY below)

--- RAM role ARN: STS AssumeRole signed by a source credential. See `imm.credentials.ram_role_arn`.
-- @usage local p = imm.credentials.ram_role_arn{ role_arn = arn, source = imm.credentials.env() }
---@type fun(opts: imm.RamRoleArnOptions): imm.CredentialsProvider|nil, imm.Error|nil
_M.ram_role_arn = nil  -- loaded on first use (LAZY below)

--- Tries providers in order and keeps the first that yields credentials.
-- When none does, one `NoCredentials` error names each provider and why, and
-- the next call walks the chain again. See `imm.credentials.chain`.
-- @usage local p = imm.credentials.chain{ imm.credentials.env(), imm.credentials.profile() }
---@type fun(list: imm.CredentialsProvider[], opts: imm.ChainOptions|nil): imm.CredentialsProvider|nil, imm.Error|nil
_M.chain = nil  -- loaded on first use (LAZY below)

-- The providers above that are nil: their modules load on first read, so
-- `require "imm"` does not compile them (a client with explicit keys needs
-- only static).
local LAZY = { env = true, chain = true, oidc_role_arn = true, cli_profile = true, profile = true,
               ecs_ram_role = true, credentials_uri = true, external = true, ram_role_arn = true }
setmetatable(_M, { __index = function(t, k)
  if LAZY[k] then
    local f = require("imm.credentials." .. k).new
    rawset(t, k, f)
    return f
  end
end })

local base  -- imm.credentials.base, loaded by the first default()
local DEFAULT_OPTIONS  -- what default() passes on to each provider
local shared  -- the process's (in nginx: the worker's) default chain

--- The default chain: environment, OIDC (RRSA), CLI profile, shared
-- credentials file, ECS RAM role, credentials URI.
--
-- Without options it returns one chain shared by every client of the
-- process (in OpenResty: of the worker), so they share cached temporary
-- credentials and one refresh. With options it builds a new chain; the
-- options go to every provider.
-- @tparam[opt] table opts `env`, `clock`, `random`, `debug`, `transport`,
--   `connect_timeout`, `timeout`, `ca_file`, `insecure`, `sts_endpoint`,
--   `sts_region`, `enable_vpc`, `metadata_endpoint`
-- @return provider, or nil, err (`InvalidParameter`)
-- @usage local client = imm.new{ region = "cn-hangzhou", credentials = imm.credentials.default() }
---@param opts (imm.StsOptions|{ metadata_endpoint: string|nil })|nil
---@return imm.CredentialsProvider|nil provider
---@return imm.Error|nil err
function _M.default(opts)
  if opts == nil and shared then return shared end
  if not base then
    base = require "imm.credentials.base"
    DEFAULT_OPTIONS = {}
    for k, v in pairs(base.COMMON) do DEFAULT_OPTIONS[k] = v end
    for k, v in pairs(base.STS) do DEFAULT_OPTIONS[k] = v end
    DEFAULT_OPTIONS.metadata_endpoint = "string"
  end
  local o, err = base.options("credentials.default", opts, DEFAULT_OPTIONS)
  if not o then return nil, err end
  local common = base.pick(o, base.COMMON)
  local with_sts = base.pick(o, base.COMMON, base.STS)
  local with_md = base.pick(o, base.COMMON, base.STS)
  with_md.metadata_endpoint = o.metadata_endpoint
  local ecs_opts = base.pick(o, base.COMMON)
  ecs_opts.metadata_endpoint = o.metadata_endpoint
  -- the 1 s IMDS timeouts stay unless the caller chose others
  local list = {
    assert(_M.env { env = o.env }),
    assert(_M.oidc_role_arn(with_sts)),
    assert(_M.cli_profile(with_md)),
    assert(_M.profile(with_md)),
    assert(_M.ecs_ram_role(ecs_opts)),
    assert(_M.credentials_uri(common)),
  }
  local chain = assert(_M.chain(list, { debug = o.debug, env = o.env }))
  if opts == nil then shared = chain end
  return chain
end

--- Is `p` usable as a provider?
-- @usage if imm.credentials.is_provider(p) then ... end
---@param p any
---@return boolean
function _M.is_provider(p)
  return type(p) == "table" and type(p.get) == "function"
end

return _M
