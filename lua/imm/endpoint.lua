--- Where requests go: region and endpoint options resolved to a URL base.
-- @module imm.endpoint

local type, tonumber, format = type, tonumber, string.format
local match, lower = string.match, string.lower
local errors = require "imm.errors"

local _M = {}

local DEFAULT_PORT = { http = 80, https = 443 }

local function valid_host(h)
  if h == "" or #h > 253 then return false end
  if match(h, "^%[[%x:%.]+%]$") then return true end  -- [IPv6]
  return match(h, "^[%w%.%-_]+$") ~= nil
end

--- Resolves `endpoint` / `region` / `protocol` into
-- `{ scheme, host, port, authority, base }`.
-- `endpoint` is "host", "host:port" or "http(s)://host[:port][/]" and wins over
-- `region`; a scheme in it wins over `protocol`.
-- @treturn table|nil
-- @return err on bad input
function _M.resolve(opts)
  local protocol = opts.protocol or "https"
  if protocol ~= "https" and protocol ~= "http" then
    return nil, errors.invalid(format("protocol must be \"https\" or \"http\", got %q", tostring(protocol)))
  end
  local ep = opts.endpoint
  local scheme, rest = protocol
  if ep ~= nil then
    if type(ep) ~= "string" or ep == "" then
      return nil, errors.invalid("endpoint must be a non-empty string")
    end
    local s, r = match(ep, "^(%a[%w+.-]*)://(.*)$")
    if s then
      s = lower(s)
      if s ~= "http" and s ~= "https" then
        return nil, errors.invalid(format("endpoint scheme must be http or https, got %q", s))
      end
      scheme, rest = s, r
    else
      rest = ep
    end
    rest = match(rest, "^(.-)/?$")
    if match(rest, "[/?#@%s]") then
      return nil, errors.invalid(format("endpoint must be host[:port] with no path, got %q", ep))
    end
  else
    local region = opts.region
    if region == nil then
      return nil, errors.invalid("either region (e.g. \"cn-hangzhou\") or endpoint is required")
    end
    if type(region) ~= "string" or not match(region, "^[a-z0-9%-]+$") then
      return nil, errors.invalid(format("region must match [a-z0-9-]+, got %q", tostring(region)))
    end
    rest = "imm." .. region .. ".aliyuncs.com"
  end
  local host, port = match(rest, "^(.-):(%d+)$")
  if not host then
    host = rest
  else
    port = tonumber(port)
    if port < 1 or port > 65535 then
      return nil, errors.invalid(format("endpoint port must be 1..65535, got %d", port))
    end
  end
  if not valid_host(host) then
    return nil, errors.invalid(format("endpoint host is not valid: %q", host))
  end
  port = port or DEFAULT_PORT[scheme]
  -- The Host header (and so the signature) carries the port only when it
  -- is not the scheme's default, which is also what HTTP clients send.
  local authority = (port == DEFAULT_PORT[scheme]) and host or (host .. ":" .. port)
  return {
    scheme = scheme, host = host, port = port, authority = authority,
    base = scheme .. "://" .. authority,
  }
end

return _M
