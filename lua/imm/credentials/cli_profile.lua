--- A profile of the Alibaba Cloud CLI, from `~/.aliyun/config.json`.
--
-- The profile is `ALIBABA_CLOUD_PROFILE`, or else the file's `current`.
-- Modes: `AK`, `StsToken`, `RamRoleArn`, `EcsRamRole`, `OIDC`,
-- `ChainableRamRoleArn` (a role assumed with another profile's credentials),
-- `External` (a program that prints credentials, see
-- `imm.credentials.external`), `CredentialsURI` (the profile's
-- `credentials_uri`, else `ALIBABA_CLOUD_CREDENTIALS_URI`), `CloudSSO` (the
-- STS credentials aliyun-cli stored while they are valid, then the stored
-- access token exchanged on the CloudSSO portal, as aliyun-cli does) and
-- `OAuth` (the STS credentials aliyun-cli stored, while they are valid).
-- A sign-in that needs a browser is never attempted: the error says which
-- `aliyun` command to run. imm never writes the file.
-- `ALIBABA_CLOUD_CLI_PROFILE_DISABLED=true` turns the provider off.
--
-- The file is read on first use and, once it has yielded a provider, not
-- again. Broken JSON gives an `InvalidConfiguration` error naming the file
-- and the line.
-- @module imm.credentials.cli_profile

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local format, match, gsub, sub, lower = string.format, string.match, string.gsub, string.sub, string.lower
local core = require "imm.core"
local errors = require "imm.errors"
local base = require "imm.credentials.base"

local _M = {}

local OPTIONS = { path = "string", profile = "string", metadata_endpoint = "string" }
local MODES = "AK, StsToken, RamRoleArn, EcsRamRole, OIDC, ChainableRamRoleArn, External, CredentialsURI, "
  .. "CloudSSO or OAuth"
local MAX_DEPTH = 5  -- ChainableRamRoleArn links

local function str(v)
  if type(v) == "string" and v ~= "" then return v end
  return nil
end

local function safe(s)
  return (gsub(sub(tostring(s), 1, 40), "[^%w_%.%-]", "?"))
end

-- The STS credentials aliyun-cli stored in a CloudSSO or OAuth profile
-- (`sts_expiration` in epoch seconds), or nil.
local function stored_sts(p)
  local exp = tonumber(p.sts_expiration)
  if not (str(p.access_key_id) and str(p.access_key_secret) and str(p.sts_token) and exp and exp > 0) then
    return nil
  end
  return { access_key_id = p.access_key_id, access_key_secret = p.access_key_secret,
    security_token = p.sts_token, expiration = exp }
end

local function copy(c)
  return { access_key_id = c.access_key_id, access_key_secret = c.access_key_secret,
    security_token = c.security_token, expiration = c.expiration }
end

-- CloudSSO: the stored STS credentials while they are fresh, then the
-- access token exchanged for new ones by the portal's CreateCloudCredential
-- (`POST <sign-in scheme://host>/cloud-credentials`, a Bearer token and
-- `{ AccountId, AccessConfigurationId }`), as aliyun-cli does. The access
-- token itself comes from a browser or device sign-in, which imm never does.
local function cloud_sso(p, o, bad, trace, tracing)
  local name = safe(p.name)
  local again = format("run `aliyun configure --profile %s --mode CloudSSO` (a browser or device sign-in), "
    .. "then retry", name)
  local scheme, host = match(p.cloud_sso_sign_in_url, "^([hH][tT][tT][pP][sS]?)://([^/?#@]+)")
  if not scheme then
    return bad(format("profile %q (mode CloudSSO): cloud_sso_sign_in_url is not an http(s) URL", name))
  end
  if not (str(p.cloud_sso_account_id) and str(p.cloud_sso_access_config)) then
    return bad(format("profile %q (mode CloudSSO) has no account or access configuration: %s", name, again))
  end
  local token, token_exp = str(p.access_token), tonumber(p.cloud_sso_access_token_expire)
  local stored = stored_sts(p)
  local url = lower(scheme) .. "://" .. host .. "/cloud-credentials"
  local where = "CloudSSO portal at " .. host
  local http = base.http(o, { connect_timeout = 5, timeout = 10, no_proxy = base.is_local_url(url) },
    tracing and trace)
  local body = core.json_encode { AccountId = p.cloud_sso_account_id,
    AccessConfigurationId = p.cloud_sso_access_config }
  local clock = o.clock or os.time

  local exchange
  local function fetch(deadline)
    local now = clock()
    if stored and stored.expiration - now > base.STALE_TEMPORARY then return copy(stored) end
    local c, err = exchange(deadline, now)
    if not c and stored and stored.expiration > now then
      -- nothing newer yet: the stored ones serve while they are valid
      trace("CloudSSO exchange failed (%s); serving the stored credentials", tostring(err and err.code))
      return copy(stored)
    end
    return c, err
  end
  exchange = function(deadline, now)
    if not token or not token_exp or token_exp <= now then
      return bad(format("profile %q (mode CloudSSO): the access token of the CloudSSO sign-in has expired: %s",
        name, again))
    end
    local res, err = http:request({ method = "POST", url = url, body = body, headers = {
      accept = "application/json", ["content-type"] = "application/json",
      authorization = "Bearer " .. token } }, deadline)
    if not res then
      err.message = where .. ": " .. tostring(err.message)
      return nil, base.scrub_error(err, { token }, 1)
    end
    if res.status ~= 200 then
      local v = require("imm.decode").imm(res.body)
      local code = type(v) == "table" and type(v.ErrorCode) == "string" and v.ErrorCode or nil
      local msg = format("%s answered HTTP %d%s to CreateCloudCredential", where, res.status,
        code and (" " .. gsub(sub(code, 1, 60), "[^%w%.%-_]", "?")) or "")
      if res.status == 401 or res.status == 403 then msg = msg .. "; " .. again end
      return nil, base.scrub_error(errors.new("InvalidResponse", msg,
        { status = res.status, retryable = res.status >= 500 }), { token }, 1)
    end
    local v, jerr = base.json_object(res, where .. " reply")
    if not v then return nil, jerr end
    local c = v.CloudCredential
    if type(c) ~= "table" then c = v end
    return base.temporary(c, where .. " reply")
  end
  return base.cached(fetch, { stale = base.STALE_TEMPORARY, clock = o.clock, random = o.random, trace = trace })
end

-- OAuth: the STS credentials aliyun-cli stored, while they are valid. Its
-- exchange of the refresh token is not a documented API, so imm leaves it
-- to aliyun-cli.
local function oauth(p, o, bad, trace)
  local name = safe(p.name)
  local stored = stored_sts(p)
  local clock = o.clock or os.time
  local function fetch()
    if stored and stored.expiration > clock() then return copy(stored) end
    return bad(format("profile %q (mode OAuth) holds no valid STS credentials, and imm does not exchange "
      .. "OAuth tokens itself: run any `aliyun` command with --profile %s to refresh them (`aliyun configure "
      .. "--profile %s --mode OAuth` to sign in again), or use an External profile whose program prints "
      .. "fresh credentials", name, name, name))
  end
  return base.cached(fetch, { stale = 0, clock = o.clock, random = o.random, trace = trace })
end

--- A CLI profile.
-- @tparam[opt] table opts `path` (default `~/.aliyun/config.json`), `profile`,
--   `metadata_endpoint` (for `EcsRamRole`), `sts_endpoint`, `sts_region`,
--   `enable_vpc`, and the common options (`env`, `clock`, `random`, `debug`,
--   `transport`, ...)
-- @return provider, or nil, err (`InvalidParameter`); its `get` returns
--   nil, err: `NoCredentials` when disabled or there is no file,
--   `InvalidConfiguration` (with `err.file`, and `err.line` for bad JSON) when
--   the file is broken, or the error of the provider the profile describes
-- @usage local p = imm.credentials.cli_profile{ profile = "prod" }
---@param opts imm.CliProfileOptions|nil
---@return imm.CredentialsProvider|nil provider
---@return imm.Error|nil err
function _M.new(opts)
  local o, err = base.options("credentials.cli_profile", opts, OPTIONS, base.STS, base.COMMON)
  if not o then return nil, err end
  local getenv = base.getenv(o)
  local trace, tracing = base.tracer("cli_profile", o)
  local inherited = base.pick(o, base.STS, base.COMMON)
  local common = base.pick(o, base.COMMON)

  local function build()
    if base.truthy(getenv("ALIBABA_CLOUD_CLI_PROFILE_DISABLED")) then
      return nil, base.none("disabled by ALIBABA_CLOUD_CLI_PROFILE_DISABLED=true")
    end
    local path = o.path
    if not path then
      local home = base.home(getenv)
      if not home then return nil, base.none("HOME is not set, so there is no ~/.aliyun/config.json") end
      path = home .. "/.aliyun/config.json"
    end
    local text, rerr = base.read_file(path)
    if not text then
      return nil, base.none(format("no CLI configuration at %s (%s)", path, tostring(rerr)))
    end
    local function bad(msg, line)
      return nil, base.bad_config(line and format("%s:%d: %s", path, line, msg) or format("%s: %s", path, msg),
        { file = path, line = line })
    end
    local doc, jerr = require("imm.decode").imm(text)
    if doc == nil then
      -- the decoder says "... but found 'x' at character N": turn that into
      -- a line, and never quote the text, not even a character (it holds secrets)
      local pos = tonumber(match(tostring(jerr), "at character (%d+)"))
      local what = gsub(gsub(tostring(jerr), " at character %d+$", ""), " but found .*$", "")
      return bad("not valid JSON (" .. what .. ")", pos and base.line_of(text, pos) or nil)
    end
    if type(doc) ~= "table" or type(doc.profiles) ~= "table" then
      return bad("has no \"profiles\" list")
    end
    local by_name = {}
    for i, p in ipairs(doc.profiles) do
      if type(p) ~= "table" or not str(p.name) then
        return bad(format("profiles[%d] has no name", i))
      end
      by_name[p.name] = p
    end

    local function sub_opts(extra, from)
      local so = {}
      for k, x in pairs(from or inherited) do so[k] = x end
      for k, x in pairs(extra) do so[k] = x end
      return so
    end

    local make  -- profile -> provider | nil, err
    make = function(name, depth)
      local p = by_name[name]
      if not p then return bad(format("no profile named %q", safe(name))) end
      local mode = p.mode
      local function missing(...)
        for _, k in ipairs { ... } do
          if not str(p[k]) then return k end
        end
      end
      local function needs(k)
        return bad(format("profile %q (mode %s) needs %s", safe(name), safe(mode), k))
      end
      local function fail(e)
        if not e then return nil end
        return bad(format("profile %q: %s", safe(name), tostring(e.message)))
      end
      local duration = tonumber(p.expired_seconds)
      if duration == 0 then duration = nil end
      local sts = sub_opts {
        sts_region = str(p.sts_region) or inherited.sts_region,
        enable_vpc = p.enable_vpc == true or inherited.enable_vpc,
        role_session_name = str(p.ram_session_name), duration_seconds = duration,
        role_arn = str(p.ram_role_arn),
      }
      local prov, perr
      if mode == "AK" then
        local k = missing("access_key_id", "access_key_secret")
        if k then return needs(k) end
        prov, perr = require("imm.credentials.static").new {
          access_key_id = p.access_key_id, access_key_secret = p.access_key_secret }
      elseif mode == "StsToken" then
        local k = missing("access_key_id", "access_key_secret", "sts_token")
        if k then return needs(k) end
        prov, perr = require("imm.credentials.static").new {
          access_key_id = p.access_key_id, access_key_secret = p.access_key_secret,
          security_token = p.sts_token }
      elseif mode == "RamRoleArn" then
        local k = missing("access_key_id", "access_key_secret", "ram_role_arn")
        if k then return needs(k) end
        sts.access_key_id, sts.access_key_secret = p.access_key_id, p.access_key_secret
        sts.external_id = str(p.external_id)
        prov, perr = require("imm.credentials.ram_role_arn").new(sts)
      elseif mode == "ChainableRamRoleArn" then
        local k = missing("source_profile", "ram_role_arn")
        if k then return needs(k) end
        if depth >= MAX_DEPTH then
          return bad(format("profile %q: source_profile chain is longer than %d (a loop?)", safe(name), MAX_DEPTH))
        end
        local src, serr = make(p.source_profile, depth + 1)
        if not src then return nil, serr end
        sts.source, sts.external_id = src, str(p.external_id)
        prov, perr = require("imm.credentials.ram_role_arn").new(sts)
      elseif mode == "EcsRamRole" then
        prov, perr = require("imm.credentials.ecs_ram_role").new(sub_opts({
          role_name = str(p.ram_role_name), metadata_endpoint = o.metadata_endpoint }, common))
      elseif mode == "OIDC" then
        local k = missing("ram_role_arn", "oidc_provider_arn", "oidc_token_file")
        if k then return needs(k) end
        sts.oidc_provider_arn, sts.oidc_token_file = p.oidc_provider_arn, p.oidc_token_file
        prov, perr = require("imm.credentials.oidc_role_arn").new(sts)
      elseif mode == "External" then
        local k = missing("process_command")
        if k then return needs(k) end
        prov, perr = require("imm.credentials.external").new(sub_opts({ command = p.process_command }, common))
      elseif mode == "CredentialsURI" then
        local uri = str(p.credentials_uri) or getenv("ALIBABA_CLOUD_CREDENTIALS_URI")
        if not uri then return needs("credentials_uri (or ALIBABA_CLOUD_CREDENTIALS_URI)") end
        prov, perr = require("imm.credentials.credentials_uri").new(sub_opts({ uri = uri }, common))
      elseif mode == "CloudSSO" then
        local k = missing("cloud_sso_sign_in_url")
        if k then return needs(k .. format(": run `aliyun configure --profile %s --mode CloudSSO`", safe(name))) end
        local get, gerr = cloud_sso(p, o, bad, trace, tracing)
        if not get then return nil, gerr end
        prov = base.provider("cloud_sso", get)
      elseif mode == "OAuth" then
        prov = base.provider("oauth", oauth(p, o, bad, trace))
      else
        return bad(format("profile %q has mode %q; imm reads %s", safe(name), safe(mode), MODES))
      end
      if not prov then return fail(perr) end
      return prov
    end

    local name = o.profile or getenv("ALIBABA_CLOUD_PROFILE") or str(doc.current)
    if not name then return bad("names no current profile, and ALIBABA_CLOUD_PROFILE is not set") end
    local p, perr = make(name, 0)
    if not p then return nil, perr end
    trace("using profile %q (mode %s) of %s", safe(name), safe(by_name[name].mode), path)
    return function(get_opts) return p:get(get_opts) end
  end

  return base.lazy("cli_profile", build)
end

return _M
