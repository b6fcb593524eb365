--- The shared credentials file: an INI file at
-- `ALIBABA_CLOUD_CREDENTIALS_FILE`, or else `~/.alibabacloud/credentials`.
-- The section is `ALIBABA_CLOUD_PROFILE`, or else `default`.
--
--     [default]
--     type = access_key              # or ecs_ram_role, ram_role_arn
--     access_key_id = ...
--     access_key_secret = ...
--
-- The file is read on first use; once it has yielded a provider it is not
-- read again. A broken file gives an `InvalidConfiguration` error naming the
-- file and the line (never the line's content, which may hold a secret),
-- and is read again at the next call.
-- @module imm.credentials.profile

local pairs, ipairs, tonumber, tostring = pairs, ipairs, tonumber, tostring
local format, match, gsub, find, gmatch, sub = string.format, string.match, string.gsub, string.find,
  string.gmatch, string.sub
local base = require "imm.credentials.base"

local _M = {}

local OPTIONS = { path = "string", profile = "string", metadata_endpoint = "string" }

local function trim(s) return (gsub(gsub(s, "^%s+", ""), "%s+$", "")) end

--- Parses INI text.
-- @treturn table sections: name -> `{ line = n, values = {k = v}, lines = {k = n} }`
-- @return nil, line, message on a syntax error
function _M.parse_ini(text)
  if sub(text, 1, 3) == "\239\187\191" then text = sub(text, 4) end  -- UTF-8 BOM
  local sections, current, n = {}, nil, 0
  for raw in gmatch(text .. "\n", "([^\n]*)\n") do
    n = n + 1
    local s = trim(raw)
    if s == "" or find(s, "^[#;]") then  -- luacheck: ignore 542
      -- blank or comment
    elseif sub(s, 1, 1) == "[" then
      local name, tail = match(s, "^%[([^%]]*)%]%s*(.-)$")
      if name then name = trim(name) end
      if not name or name == "" or (tail ~= "" and not find(tail, "^[#;]")) then
        return nil, n, "expected a section header such as [default]"
      end
      current = sections[name]
      if not current then
        current = { line = n, values = {}, lines = {} }
        sections[name] = current
      end
    else
      local k, v = match(s, "^([%w_%.%-]+)%s*=%s*(.-)$")
      if not k then
        return nil, n, "expected key = value"
      end
      if not current then
        return nil, n, "key outside any section (add a [section] line above it)"
      end
      local q = sub(v, 1, 1)
      if (q == '"' or q == "'") and #v >= 2 and sub(v, -1) == q then v = sub(v, 2, -2) end
      current.values[k] = v
      current.lines[k] = n
    end
  end
  return sections
end

local TYPES = "access_key, ecs_ram_role or ram_role_arn"

--- The shared credentials file.
-- @tparam[opt] table opts `path`, `profile`, `metadata_endpoint` (for
--   `ecs_ram_role` sections), `sts_endpoint`, `sts_region`, `enable_vpc` (for
--   `ram_role_arn` sections), and the common options (`env`, `clock`,
--   `random`, `debug`, `transport`, ...)
-- @return provider, or nil, err (`InvalidParameter`); its `get` returns
--   nil, err: `NoCredentials` when there is no file, `InvalidConfiguration`
--   (with `err.file`, `err.line`) when it is broken, or the error of the
--   provider its section describes
-- @usage local p = imm.credentials.profile{ profile = "prod" }
---@param opts imm.ProfileOptions|nil
---@return imm.CredentialsProvider|nil provider
---@return imm.Error|nil err
function _M.new(opts)
  local o, err = base.options("credentials.profile", opts, OPTIONS, base.STS, base.COMMON)
  if not o then return nil, err end
  local getenv = base.getenv(o)
  local trace = base.tracer("profile", o)
  local inherited = base.pick(o, base.STS, base.COMMON)
  local common = base.pick(o, base.COMMON)

  local function build()
    local path, from_env = o.path, false
    if not path then
      path = getenv("ALIBABA_CLOUD_CREDENTIALS_FILE")
      from_env = path ~= nil
    end
    if not path then
      local home = base.home(getenv)
      if not home then return nil, base.none("HOME is not set, so there is no ~/.alibabacloud/credentials") end
      path = home .. "/.alibabacloud/credentials"
    end
    local text, rerr = base.read_file(path)
    if not text then
      return nil, base.none(format("no credentials file at %s%s (%s)", path,
        from_env and " (from ALIBABA_CLOUD_CREDENTIALS_FILE)" or "", tostring(rerr)))
    end
    local function bad(line, msg)
      return nil, base.bad_config(line and format("%s:%d: %s", path, line, msg) or format("%s: %s", path, msg),
        { file = path, line = line })
    end
    local sections, line, msg = _M.parse_ini(text)
    if not sections then return bad(line, msg) end

    local name = o.profile or getenv("ALIBABA_CLOUD_PROFILE") or "default"
    local sec = sections[name]
    if not sec then return bad(nil, format("no section [%s]", name)) end
    local v = sec.values
    local t = v.type
    if not t then return bad(sec.line, format("section [%s] has no type (%s)", name, TYPES)) end
    local function missing(...)
      for _, k in ipairs { ... } do
        if not v[k] or v[k] == "" then return k end
      end
    end
    local function sub_opts(extra, from)
      local so = {}
      for k, x in pairs(from or inherited) do so[k] = x end
      for k, x in pairs(extra) do so[k] = x end
      return so
    end

    local p, perr
    if t == "access_key" then
      local k = missing("access_key_id", "access_key_secret")
      if k then return bad(sec.line, format("section [%s] of type %s needs %s", name, t, k)) end
      p, perr = require("imm.credentials.static").new {
        access_key_id = v.access_key_id, access_key_secret = v.access_key_secret }
    elseif t == "ecs_ram_role" then
      p, perr = require("imm.credentials.ecs_ram_role").new(sub_opts({
        role_name = v.role_name ~= "" and v.role_name or nil, metadata_endpoint = o.metadata_endpoint }, common))
    elseif t == "ram_role_arn" then
      local k = missing("access_key_id", "access_key_secret", "role_arn")
      if k then return bad(sec.line, format("section [%s] of type %s needs %s", name, t, k)) end
      local duration
      if v.duration_seconds then
        duration = tonumber(v.duration_seconds)
        if not duration then return bad(sec.lines.duration_seconds, "duration_seconds is not a number") end
      end
      p, perr = require("imm.credentials.ram_role_arn").new(sub_opts {
        access_key_id = v.access_key_id, access_key_secret = v.access_key_secret,
        role_arn = v.role_arn, role_session_name = v.role_session_name, policy = v.policy,
        external_id = v.external_id, duration_seconds = duration,
      })
    else
      return bad(sec.lines.type, format("section [%s] has type %q; imm reads %s", name,
        (gsub(sub(t, 1, 40), "[^%w_%-]", "?")), TYPES))
    end
    if not p then return bad(sec.line, format("section [%s]: %s", name, tostring(perr.message))) end
    trace("using section [%s] (type %s) of %s", name, t, path)
    return function(get_opts) return p:get(get_opts) end
  end

  return base.lazy("profile", build)
end

return _M
