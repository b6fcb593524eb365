--- Call options: what every call, pager, parallel listing and waiter poll
-- takes to override the client for one call (docs/api.md, "Call options").
-- Checked here, before anything is sent, as client options are checked.
-- @module imm.callopts

local type, pairs, tostring, format, find, lower = type, pairs, tostring, string.format, string.find, string.lower
local floor, huge = math.floor, math.huge

local errors = require "imm.errors"
local operations = require "imm.operations"

local _M = {}

-- wait: Create*Task only, handled by imm.waiter (false: no wait)
_M.NAMES = { method = true, idempotent = true, wait = true, deadline = true, timeout = true,
  max_retries = true, headers = true, meta = true }

-- A call's timeout or deadline may be at most a day: the transports are
-- opened with this as their own cap, so a call can raise the client's.
_M.MAX_SECONDS = 86400

local METHODS = { POST = true, GET = true }

-- Headers imm writes itself, or that the signature, the framing or the
-- transport owns: a caller's value would break the request or forge it.
local RESERVED = {
  authorization = true, host = true, ["content-length"] = true, ["content-type"] = true,
  ["transfer-encoding"] = true, connection = true, expect = true, ["user-agent"] = true,
  ["accept-encoding"] = true, accept = true, te = true, upgrade = true, ["keep-alive"] = true,
  ["proxy-authorization"] = true, ["proxy-connection"] = true,
  ["x-acs-action"] = true, ["x-acs-version"] = true, ["x-acs-date"] = true,
  ["x-acs-signature-nonce"] = true, ["x-acs-content-sha256"] = true, ["x-acs-security-token"] = true,
  ["x-acs-accesskey-id"] = true, ["x-acs-bearer-token"] = true,
}

local function seconds(opts, k)
  local v = opts[k]
  if v == nil then return true end
  if type(v) ~= "number" or v ~= v or v <= 0 or v > _M.MAX_SECONDS then
    return nil, errors.invalid(format("call option %s must be a number of seconds above 0 and at most %d, got %s",
      k, _M.MAX_SECONDS, tostring(v)))
  end
  return true
end

-- The extra headers, lowercased (HTTP names ignore case; the V3 signature
-- lowercases them), or nil, err.
local function check_headers(h)
  if type(h) ~= "table" then
    return nil, errors.invalid("call option headers must be a table of name = value, got " .. type(h))
  end
  local out = {}
  for k, v in pairs(h) do
    if type(k) ~= "string" then
      return nil, errors.invalid("call option headers: each header is name = value, got a "
        .. type(k) .. " key")
    end
    -- RFC 9110 token characters only
    if not find(k, "^[%w!#%$%%&'%*%+%-%.%^_`|~]+$") then
      return nil, errors.invalid(format("call option headers: %q is not a header name", k))
    end
    local name = lower(k)
    if RESERVED[name] or find(name, "^x%-acs%-signature%-") then
      return nil, errors.invalid(format("call option headers: %s is reserved (imm or the signature sets it)", k))
    end
    if type(v) ~= "string" or find(v, "[%z\r\n]") then
      return nil, errors.invalid(format("call option headers: %s must be a string without CR, LF or NUL", k))
    end
    if out[name] then
      return nil, errors.invalid(format("call option headers: %s is given twice", k))
    end
    out[name] = v
  end
  return out
end

--- Checks call options.
-- @tparam table|nil opts
-- @return the options (an empty table for nil), with `opts.headers`
--   lowercased into the second value; or nil, err (InvalidParameter)
-- @usage local opts, headers = callopts.check(opts)
function _M.check(opts)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    return nil, errors.invalid("call options must be a table, got " .. type(opts))
  end
  local unknown = operations.unknown_key(opts, _M.NAMES, "call option")
  if unknown then return nil, unknown end
  if opts.method ~= nil and not METHODS[opts.method] then
    return nil, errors.invalid(format("call option method must be \"POST\" or \"GET\", got %s",
      tostring(opts.method)))
  end
  if opts.idempotent ~= nil and type(opts.idempotent) ~= "boolean" then
    return nil, errors.invalid("call option idempotent must be a boolean")
  end
  if opts.meta ~= nil and type(opts.meta) ~= "boolean" then
    return nil, errors.invalid("call option meta must be a boolean, got " .. type(opts.meta))
  end
  local ok, err = seconds(opts, "deadline")
  if not ok then return nil, err end
  ok, err = seconds(opts, "timeout")
  if not ok then return nil, err end
  local r = opts.max_retries
  if r ~= nil and (type(r) ~= "number" or r ~= floor(r) or r < 0 or r > 20 or r == huge) then
    return nil, errors.invalid(format("call option max_retries must be an integer from 0 to 20, got %s",
      tostring(r)))
  end
  local headers
  if opts.headers ~= nil then
    headers, err = check_headers(opts.headers)
    if not headers then return nil, err end
  end
  return opts, headers
end

--- The call options among `opts` (a pager's or a waiter's), as a new table.
-- @tparam table opts
-- @treturn table|nil nil when there are none
function _M.pick(opts)
  local t
  for k in pairs(_M.NAMES) do
    if k ~= "wait" and opts[k] ~= nil then
      t = t or {}
      t[k] = opts[k]
    end
  end
  return t
end

return _M
