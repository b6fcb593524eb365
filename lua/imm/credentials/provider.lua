--- The provider object, and the scrubbing of secrets from errors and
-- traces: what a client with explicit keys needs of `imm.credentials.base`
-- (which re-exports all of it), without compiling the rest.
-- @module imm.credentials.provider

local type, pairs, setmetatable = type, pairs, setmetatable
local gsub, lower = string.gsub, string.lower

local core = require "imm.core"

local _M = {}

local Provider = {}
Provider.__index = Provider
Provider.__tostring = function(p) return "imm.credentials." .. p.name end
_M.Provider = Provider

--- Wraps a `get` function as a provider. The only field is `name`; anything
-- secret stays in `get`'s closure. The provider's `get(self, opts)` passes
-- `opts` (`timeout`: seconds the caller can still wait, see `deadline`) on.
-- @tparam string name
-- @tparam function get `(opts) -> creds | nil, err`
-- @treturn table provider
-- @usage return base.provider("env", function() ... end)
function _M.provider(name, get)
  return setmetatable({ name = name, get = function(_, opts) return get(opts) end }, Provider)
end

local function nonempty(s) return type(s) == "string" and s ~= "" end
_M.nonempty = nonempty

-- Query and form parameters, and headers, whose values are secret.
local SECRET_PARAMS = {
  signature = true, securitytoken = true, oidctoken = true, accesskeysecret = true,
  ["x-acs-security-token"] = true, ["x-aliyun-ecs-metadata-token"] = true, authorization = true,
}
_M.SECRET_PARAMS = SECRET_PARAMS

--- Replaces the values of secret parameters in a query string, a form body
-- or a URL by `<redacted>`.
-- @usage base.redact("a=1&Signature=abc")  -- "a=1&Signature=<redacted>"
function _M.redact(s)
  return (gsub(s, "([^&?=%s]+)=([^&%s]*)", function(k, v)
    if SECRET_PARAMS[lower(k)] and v ~= "" then return k .. "=<redacted>" end
    return nil
  end))
end

--- Removes secrets from text a server sent back (an error message): a
-- "string to sign" tail, which for V2 holds the security token, and every
-- occurrence of each secret, raw or percent-encoded once or twice.
-- @tparam string s
-- @tparam table secrets list of strings (nil entries allowed, up to `n`)
-- @tparam[opt] number n how many entries of `secrets` to look at (default `#secrets`)
-- @treturn string
-- @usage err.message = base.scrub(err.message, { src.access_key_secret, src.security_token }, 2)
function _M.scrub(s, secrets, n)
  s = gsub(s, "[Ss]tring to sign is:?.*$", "string to sign is: <withheld>")
  for i = 1, n or #secrets do
    local secret = secrets[i]
    if type(secret) == "string" and #secret >= 4 then
      -- in C: the encoded forms are wiped buffers, not lingering Lua strings
      s = core.redact(s, secret, "<redacted>")
    end
  end
  return s
end

--- Scrubs (see `scrub`) every string field of an error, and of the tables
-- it holds (a chain's `providers`), in place: a server may echo a secret in
-- any field (`code`, `request_id`, `host_id`, ...), and `tostring(err)` is
-- built from them.
-- @tparam table err
-- @tparam table secrets as for `scrub`
-- @tparam[opt] number n as for `scrub`
-- @treturn table err
-- @usage base.scrub_error(err, { src.access_key_secret, src.security_token }, 2)
function _M.scrub_error(err, secrets, n, seen)
  seen = seen or {}
  if type(err) ~= "table" or seen[err] then return err end
  seen[err] = true
  for k, v in pairs(err) do
    if type(v) == "string" then
      err[k] = _M.scrub(v, secrets, n)
    elseif type(v) == "table" then
      _M.scrub_error(v, secrets, n, seen)
    end
  end
  return err
end

return _M
