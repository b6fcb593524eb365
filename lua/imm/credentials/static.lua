--- Fixed keys, held in a closure.
-- @module imm.credentials.static

local type = type
local errors = require "imm.errors"
local base = require "imm.credentials.provider"  -- all it needs of imm.credentials.base

local nonempty = base.nonempty

local _M = {}

--- Fixed keys.
-- @tparam table t `access_key_id`, `access_key_secret`, optional `security_token`
-- @return provider, or nil, err (`InvalidParameter`)
-- @usage local p = imm.credentials.static{ access_key_id = id, access_key_secret = secret }
---@param t imm.StaticOptions
---@return imm.CredentialsProvider|nil provider
---@return imm.Error|nil err
function _M.new(t)
  if type(t) ~= "table" then
    return nil, errors.invalid("credentials.static takes a table")
  end
  local id, secret, token = t.access_key_id, t.access_key_secret, t.security_token
  if not nonempty(id) then
    return nil, errors.invalid("access_key_id must be a non-empty string")
  end
  if not nonempty(secret) then
    return nil, errors.invalid("access_key_secret must be a non-empty string")
  end
  if token ~= nil and not nonempty(token) then
    return nil, errors.invalid("security_token must be a non-empty string when given")
  end
  return base.provider("static", function()
    return { access_key_id = id, access_key_secret = secret, security_token = token }
  end)
end

return _M
