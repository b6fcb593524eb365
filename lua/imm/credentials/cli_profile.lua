--- A profile of the Alibaba Cloud CLI, from `~/.aliyun/config.json`.
--
-- The profile is `ALIBABA_CLOUD_PROFILE`, or else the file's `current`.
-- Modes: `AK`, `StsToken`, `RamRoleArn`, `EcsRamRole`, `OIDC` and
-- `ChainableRamRoleArn` (a role assumed with another profile's credentials).
-- `ALIBABA_CLOUD_CLI_PROFILE_DISABLED=true` turns the provider off.
--
-- The file is read on first use and, once it has yielded a provider, not
-- again. Broken JSON gives an `InvalidConfiguration` error naming the file
-- and the line.
-- @module imm.credentials.cli_profile

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local format, match, gsub, sub = string.format, string.match, string.gsub, string.sub
local base = require "imm.credentials.base"

local _M = {}

local OPTIONS = { path = "string", profile = "string", metadata_endpoint = "string" }
local MODES = "AK, StsToken, RamRoleArn, EcsRamRole, OIDC or ChainableRamRoleArn"
local MAX_DEPTH = 5  -- ChainableRamRoleArn links

local function str(v)
  if type(v) == "string" and v ~= "" then return v end
  return nil
end

local function safe(s)
  return (gsub(sub(tostring(s), 1, 40), "[^%w_%.%-]", "?"))
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
  local trace = base.tracer("cli_profile", o)
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
