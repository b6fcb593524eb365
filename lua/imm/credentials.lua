--- Credentials providers.
--
-- A provider is a table with a `get` method returning
-- `{ access_key_id, access_key_secret, security_token, expiration }` or
-- `nil, err`. The client asks its provider on every call, so rotating
-- providers (STS, ECS role, OIDC, ...) plug in without the client knowing;
-- they cache and refresh before expiry themselves.
--
-- Secrets are held in closures, not in fields, so printing or iterating a
-- provider or a client never shows them.
--
-- One module per provider lives under `imm.credentials.*`; this one gathers
-- them and builds the default chain.
-- @module imm.credentials

local type, pairs = type, pairs
local base = require "imm.credentials.base"

local _M = {}

--- Fixed keys. See `imm.credentials.static`.
-- @usage local p = imm.credentials.static{ access_key_id = id, access_key_secret = secret }
_M.static = require("imm.credentials.static").new

--- Keys from `ALIBABA_CLOUD_ACCESS_KEY_ID`, `ALIBABA_CLOUD_ACCESS_KEY_SECRET`
-- and `ALIBABA_CLOUD_SECURITY_TOKEN`, read at each call. See `imm.credentials.env`.
-- @usage local p = imm.credentials.env()
_M.env = require("imm.credentials.env").new

--- OIDC role ARN (RRSA): STS AssumeRoleWithOIDC. See `imm.credentials.oidc_role_arn`.
-- @usage local p = imm.credentials.oidc_role_arn()
_M.oidc_role_arn = require("imm.credentials.oidc_role_arn").new

--- A profile of `~/.aliyun/config.json`. See `imm.credentials.cli_profile`.
-- @usage local p = imm.credentials.cli_profile{ profile = "prod" }
_M.cli_profile = require("imm.credentials.cli_profile").new

--- A section of the shared credentials file. See `imm.credentials.profile`.
-- @usage local p = imm.credentials.profile{ profile = "default" }
_M.profile = require("imm.credentials.profile").new

--- ECS RAM role through the metadata service. See `imm.credentials.ecs_ram_role`.
-- @usage local p = imm.credentials.ecs_ram_role()
_M.ecs_ram_role = require("imm.credentials.ecs_ram_role").new

--- Credentials from `ALIBABA_CLOUD_CREDENTIALS_URI`. See `imm.credentials.credentials_uri`.
-- @usage local p = imm.credentials.credentials_uri{ uri = "http://127.0.0.1:9000/creds" }
_M.credentials_uri = require("imm.credentials.credentials_uri").new

--- RAM role ARN: STS AssumeRole signed by a source credential. See `imm.credentials.ram_role_arn`.
-- @usage local p = imm.credentials.ram_role_arn{ role_arn = arn, source = imm.credentials.env() }
_M.ram_role_arn = require("imm.credentials.ram_role_arn").new

--- Tries providers in order and keeps the first that yields credentials.
-- When none does, one `NoCredentials` error names each provider and why, and
-- the next call walks the chain again. See `imm.credentials.chain`.
-- @usage local p = imm.credentials.chain{ imm.credentials.env(), imm.credentials.profile() }
_M.chain = require("imm.credentials.chain").new

-- What default() passes on to each provider.
local DEFAULT_OPTIONS = {}
for k, v in pairs(base.COMMON) do DEFAULT_OPTIONS[k] = v end
for k, v in pairs(base.STS) do DEFAULT_OPTIONS[k] = v end
DEFAULT_OPTIONS.metadata_endpoint = "string"

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
function _M.default(opts)
  if opts == nil and shared then return shared end
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
function _M.is_provider(p)
  return type(p) == "table" and type(p.get) == "function"
end

return _M
