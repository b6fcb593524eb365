--- Credentials providers.
--
-- A provider is a table with a `get` method returning
-- `{ access_key_id, access_key_secret, security_token }` or `nil, err`.
-- The client asks its provider on every call, so rotating providers (STS,
-- ECS role, ...) plug in without the client knowing.
--
-- Secrets are held in closures, not in fields, so printing or iterating a
-- provider or a client never shows them.
-- @module imm.credentials

local type, setmetatable, format, getenv = type, setmetatable, string.format, os.getenv
local concat = table.concat
local errors = require "imm.errors"

local _M = {}

local Provider = {}
Provider.__index = Provider
Provider.__tostring = function(p) return "imm.credentials." .. p.name end

local function provider(name, get)
  return setmetatable({ name = name, get = get }, Provider)
end

local function nonempty(s) return type(s) == "string" and s ~= "" end

--- Fixed keys.
-- @tparam table t `access_key_id`, `access_key_secret`, optional `security_token`
-- @return provider, or nil, err
-- @usage local p = imm.credentials.static{ access_key_id = id, access_key_secret = secret }
function _M.static(t)
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
  return provider("static", function()
    return { access_key_id = id, access_key_secret = secret, security_token = token }
  end)
end

--- Keys from `ALIBABA_CLOUD_ACCESS_KEY_ID`, `ALIBABA_CLOUD_ACCESS_KEY_SECRET` and
-- the optional `ALIBABA_CLOUD_SECURITY_TOKEN`, read at each call.
function _M.env()
  return provider("env", function()
    local id = getenv("ALIBABA_CLOUD_ACCESS_KEY_ID")
    local secret = getenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    if not nonempty(id) or not nonempty(secret) then
      return nil, errors.new("NoCredentials",
        "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET are not both set",
        { retryable = false })
    end
    local token = getenv("ALIBABA_CLOUD_SECURITY_TOKEN")
    if token == "" then token = nil end
    return { access_key_id = id, access_key_secret = secret, security_token = token }
  end)
end

--- Tries providers in order and uses the first that yields credentials.
-- When none does, one `NoCredentials` error names each provider and why.
-- The chain is walked again at the next call.
function _M.chain(list)
  if type(list) ~= "table" or #list == 0 then
    return nil, errors.invalid("credentials.chain takes a non-empty list of providers")
  end
  for i = 1, #list do
    if type(list[i]) ~= "table" or type(list[i].get) ~= "function" then
      return nil, errors.invalid(format("credentials.chain: entry %d is not a provider", i))
    end
  end
  return provider("chain", function()
    local why = {}
    for i = 1, #list do
      local c, err = list[i]:get()
      if c then return c end
      why[#why + 1] = format("%s: %s", list[i].name or ("#" .. i), err and err.message or "no credentials")
    end
    return nil, errors.new("NoCredentials", "no credentials found (" .. concat(why, "; ") .. ")",
      { retryable = false })
  end)
end

--- The chain used when a client is given no keys. It grows with the
-- providers the official SDKs read (profile files, ECS role, OIDC, ...).
function _M.default()
  return _M.chain({ _M.env() })
end

--- Is `p` usable as a provider?
function _M.is_provider(p)
  return type(p) == "table" and type(p.get) == "function"
end

return _M
