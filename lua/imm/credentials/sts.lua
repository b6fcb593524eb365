--- Calls to STS (API version 2015-04-01): AssumeRole, signed with V2 by a
-- source credential, and AssumeRoleWithOIDC, which is anonymous and carries
-- the OIDC token in a form body (never in the URL).
-- @module imm.credentials.sts

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local format, concat, sort = string.format, table.concat, table.sort
local os_time = os.time

local core = require "imm.core"
local errors = require "imm.errors"
local endpoint = require "imm.endpoint"
local signer = require "imm.signer"
local base = require "imm.credentials.base"

local _M = {}

_M.VERSION = "2015-04-01"

--- The STS endpoint for a provider's options and environment:
-- `sts_endpoint`; else `sts-vpc.<region>` with `enable_vpc` /
-- `ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED`; else `sts.<region>` with
-- `sts_region` / `ALIBABA_CLOUD_STS_REGION`; else `sts.aliyuncs.com`.
-- @return resolved endpoint (see `imm.endpoint.resolve`), or nil, err
-- @usage local ep, err = sts.endpoint(opts, base.getenv(opts))
function _M.endpoint(opts, getenv)
  local vpc = opts.enable_vpc
  if vpc == nil then vpc = base.truthy(getenv("ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED")) end
  return endpoint.sts {
    endpoint = opts.sts_endpoint,
    region = opts.sts_region or getenv("ALIBABA_CLOUD_STS_REGION"),
    vpc = vpc,
  }
end

local function form(params)
  local keys, out = {}, {}
  for k in pairs(params) do keys[#keys + 1] = k end
  sort(keys)
  for i, k in ipairs(keys) do
    out[i] = core.percent_encode(k) .. "=" .. core.percent_encode(params[k])
  end
  return concat(out, "&")
end

-- The credentials in an STS reply, or the error it carries. STS echoes its
-- string to sign on SignatureDoesNotMatch, and with V2 that holds the
-- security token; an endpoint may echo a token in any field: `secrets` are
-- scrubbed from every string of the error.
local function parse(res, action, host, secrets)
  local where = format("STS %s at %s", action, host)
  if res.status < 200 or res.status > 299 then
    local decoded = require("imm.decode").imm(res.body)
    local err
    if type(decoded) == "table" and type(decoded.Code) == "string" then
      err = errors.from_service(res.status, res.headers, decoded, res.body)
      err.message = where .. ": " .. tostring(err.message)
      base.scrub_error(err, secrets, #secrets)
    else
      err = errors.new("InvalidResponse", format("%s: HTTP %d with a body that is not an STS error (%d bytes)",
        where, res.status, #res.body), { status = res.status })
    end
    return nil, err
  end
  local v, err = base.json_object(res, where .. " reply")
  if not v then return nil, err end
  return base.temporary(v.Credentials, where .. " reply")
end

--- AssumeRole, signed with V2 (HMAC-SHA1) by `source`.
-- @tparam table http from `base.http`
-- @tparam table ep the STS endpoint
-- @tparam table source creds `{ access_key_id, access_key_secret, security_token }`
-- @tparam table params `RoleArn`, `RoleSessionName`, `DurationSeconds`, optional `Policy`, `ExternalId`
-- @tparam[opt] number deadline see `imm.credentials.base.deadline`
-- @return creds with `expiration`, or nil, err
-- @usage local c, err = sts.assume_role(http, ep, src,
--   { RoleArn = arn, RoleSessionName = "s", DurationSeconds = "3600" })
function _M.assume_role(http, ep, source, params, deadline)
  local signed, code, msg = signer.sign {
    algorithm = "v2", method = "POST", authority = ep.authority,
    action = "AssumeRole", version = _M.VERSION, query = params,
    date = os_time(), nonce = core.nonce(),
    access_key_id = source.access_key_id, access_key_secret = source.access_key_secret,
    security_token = source.security_token,
  }
  if not signed then return nil, errors.new(code, msg, { retryable = false }) end
  local res, err = http:request({
    method = "POST", url = ep.base .. "/?" .. signed.query,
    headers = { host = ep.authority, accept = "application/json" }, body = "",
  }, deadline)
  if not res then
    err.message = format("STS AssumeRole at %s: %s", ep.host, tostring(err.message))
    return nil, err
  end
  return parse(res, "AssumeRole", ep.host, { source.access_key_secret, source.security_token })
end

--- AssumeRoleWithOIDC: anonymous; the token goes in the form body.
-- @tparam table http from `base.http`
-- @tparam table ep the STS endpoint
-- @tparam table params `RoleArn`, `OIDCProviderArn`, `OIDCToken`, `RoleSessionName`,
--   `DurationSeconds`, optional `Policy`
-- @tparam[opt] number deadline see `imm.credentials.base.deadline`
-- @return creds with `expiration`, or nil, err
-- @usage local c, err = sts.assume_role_with_oidc(http, ep, params)
function _M.assume_role_with_oidc(http, ep, params, deadline)
  local query = form {
    Action = "AssumeRoleWithOIDC", Version = _M.VERSION, Format = "JSON",
    Timestamp = signer.timestamp(os_time()),
  }
  local res, err = http:request({
    method = "POST", url = ep.base .. "/?" .. query,
    headers = { host = ep.authority, accept = "application/json",
      ["content-type"] = "application/x-www-form-urlencoded" },
    body = form(params),
  }, deadline)
  if not res then
    err.message = format("STS AssumeRoleWithOIDC at %s: %s", ep.host, tostring(err.message))
    return nil, err
  end
  return parse(res, "AssumeRoleWithOIDC", ep.host, { params.OIDCToken })
end

return _M
