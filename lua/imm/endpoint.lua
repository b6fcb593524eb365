--- Where requests go: region and endpoint options resolved to a URL base.
-- @module imm.endpoint

local type, tonumber, format = type, tonumber, string.format
local match, lower, setmetatable, rawset = string.match, string.lower, setmetatable, rawset
local errors = require "imm.errors"
-- the hint of a failed connection: loaded by the first one that may need it
local hints = require("imm.lazy")("imm.hints")

local _M = {}

local DEFAULT_PORT = { http = 80, https = 443 }

local function valid_host(h)
  if h == "" or #h > 253 then return false end
  if match(h, "^%[[%x:%.]+%]$") then return true end  -- [IPv6]
  return match(h, "^[%w%.%-_]+$") ~= nil
end

local function valid_region(region)
  return type(region) == "string" and match(region, "^[a-z0-9%-]+$") ~= nil
end

--- Resolves `endpoint` / `region` / `network` / `protocol` into
-- `{ scheme, host, port, authority, base }`.
-- `endpoint` is "host", "host:port" or "http(s)://host[:port][/]" and wins over
-- `region`; a scheme in it wins over `protocol`. Without an endpoint the host
-- is `imm.<region>.aliyuncs.com`, or `imm-vpc.<region>.aliyuncs.com` with
-- `network = "vpc"`. An invalid region is refused before any DNS lookup.
-- @tparam table opts `endpoint`, `region`, `network` ("public" or "vpc"), `protocol`
-- @treturn table|nil
-- @return err on bad input
-- @usage local ep = assert(endpoint.resolve{ region = "cn-hangzhou", network = "vpc" })
function _M.resolve(opts)
  local protocol = opts.protocol or "https"
  if protocol ~= "https" and protocol ~= "http" then
    return nil, errors.invalid(format("protocol must be \"https\" or \"http\", got %q", tostring(protocol)))
  end
  local network = opts.network
  if network ~= nil and network ~= "public" and network ~= "vpc" then
    return nil, errors.invalid(format("network must be \"public\" or \"vpc\", got %q", tostring(network)))
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
    if not valid_region(region) then
      return nil, errors.invalid(format("region must match [a-z0-9-]+, got %q", tostring(region)))
    end
    rest = (network == "vpc" and "imm-vpc." or "imm.") .. region .. ".aliyuncs.com"
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

--- What to do about a failure to reach `ep`, or nil: a TLS handshake that
-- met a plain HTTP server, or a host of IMM's that does not resolve (an
-- unknown region, or a VPC endpoint used outside a VPC). See `imm.hints`.
-- @tparam table ep from `resolve`
-- @tparam table err the transport's error
-- @treturn string|nil the hint
-- @usage local hint = endpoint.hint(client.endpoint, err)
function _M.hint(ep, err)
  return hints.endpoint(ep, err)
end

-- endpoint.REGIONS: imm.hints.REGIONS, on first read
setmetatable(_M, { __index = function(t, k)
  if k == "REGIONS" then
    rawset(t, k, hints.REGIONS)
    return hints.REGIONS
  end
end })

--- Resolves the STS endpoint with the official SDKs' rule:
-- 1. an explicit `endpoint` ("host[:port]" or "http(s)://host[:port]");
-- 2. `sts-vpc.<region>.aliyuncs.com` when `vpc` is true and a region is set;
-- 3. `sts.<region>.aliyuncs.com` when a region is set;
-- 4. `sts.aliyuncs.com`.
-- HTTPS unless the explicit endpoint says `http://`.
-- @tparam table opts `endpoint`, `region`, `vpc` (boolean)
-- @treturn table `{ scheme, host, port, authority, base }`
-- @return nil, err on bad input
-- @usage local ep = assert(endpoint.sts{ region = "cn-hangzhou", vpc = true })  -- sts-vpc.cn-hangzhou...
function _M.sts(opts)
  if opts.endpoint ~= nil then
    return _M.resolve { endpoint = opts.endpoint }
  end
  local region = opts.region
  if region == nil then
    return _M.resolve { endpoint = "sts.aliyuncs.com" }
  end
  if not valid_region(region) then
    return nil, errors.invalid(format("STS region must match [a-z0-9-]+, got %q", tostring(region)))
  end
  return _M.resolve { endpoint = (opts.vpc and "sts-vpc." or "sts.") .. region .. ".aliyuncs.com" }
end

return _M
