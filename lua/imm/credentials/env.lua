--- Keys from the environment: `ALIBABA_CLOUD_ACCESS_KEY_ID`,
-- `ALIBABA_CLOUD_ACCESS_KEY_SECRET` and the optional
-- `ALIBABA_CLOUD_SECURITY_TOKEN`, read at every call.
-- @module imm.credentials.env

local base = require "imm.credentials.base"

local _M = {}

--- Keys from the environment, read at every call.
-- @tparam[opt] table opts `env` (a table or function replacing `os.getenv`)
-- @return provider, or nil, err (`InvalidParameter` for a bad option);
--   its `get` returns nil, err (`NoCredentials`) when the keys are not both set
-- @usage local p = imm.credentials.env()
---@param opts imm.EnvOptions|nil
---@return imm.CredentialsProvider|nil provider
---@return imm.Error|nil err
function _M.new(opts)
  local o, err = base.options("credentials.env", opts, { env = base.COMMON.env })
  if not o then return nil, err end
  local getenv = base.getenv(o)
  return base.provider("env", function()
    local id = getenv("ALIBABA_CLOUD_ACCESS_KEY_ID")
    local secret = getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    if not id or not secret then
      return nil, base.none("ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET are not both set")
    end
    return { access_key_id = id, access_key_secret = secret,
      security_token = getenv("ALIBABA_CLOUD_SECURITY_TOKEN") }
  end)
end

return _M
