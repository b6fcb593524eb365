--- What the credential providers share: the provider object, option
-- checks, the environment seam, cached credentials refreshed before they
-- expire, HTTP with redacted debug traces, and time parsing.
--
-- Secrets (access key secrets, security tokens, OIDC tokens, metadata
-- tokens) live only in closures and in the tables `get` returns. They are
-- never put in a provider's fields, an error or a trace line.
-- @module imm.credentials.base

local type, pairs, ipairs, tostring, tonumber, setmetatable = type, pairs, ipairs, tostring, tonumber, setmetatable
local pcall, rawget, select = pcall, rawget, select
local format, match, gsub, lower, sub, find = string.format, string.match, string.gsub, string.lower,
  string.sub, string.find
local concat, sort = table.concat, table.sort
local floor, min, huge = math.floor, math.min, math.huge
local os_time, os_date, os_getenv, io_open = os.time, os.date, os.getenv, io.open

local core = require "imm.core"
local errors = require "imm.errors"

local _M = {}

-- Version of the client, for the User-Agent of credential requests.
local USER_AGENT = format("imm-lua (%s) credentials", _VERSION)

-- The provider object, nonempty and the scrubbing of secrets live in
-- imm.credentials.provider, which a client with explicit keys loads alone.
local provider = require "imm.credentials.provider"
_M.Provider = provider.Provider
_M.provider = provider.provider
_M.nonempty = provider.nonempty
local SECRET_PARAMS = provider.SECRET_PARAMS
_M.SECRET_PARAMS = SECRET_PARAMS
_M.redact = provider.redact
_M.scrub = provider.scrub
_M.scrub_error = provider.scrub_error

--- The moment (`imm.core.monotonic` seconds) by which a credential request
-- must end, from the `timeout` of `get`'s options, or nil for no bound.
-- @tparam table|nil opts what `get` was given
-- @usage local deadline = base.deadline(opts)
function _M.deadline(opts)
  local t = type(opts) == "table" and opts.timeout
  if type(t) ~= "number" or t ~= t then return nil end
  return core.monotonic() + t
end

--- `get`'s options for a provider asked on the way (a chain's entry, a
-- role's source): what is left until `deadline`, or nil for no bound.
-- @usage local c, err = source:get(base.left(deadline))
function _M.left(deadline)
  if not deadline then return nil end
  return { timeout = deadline - core.monotonic() }
end

--- A provider whose real `get` is built on first use, once its
-- configuration is complete. Until `build` succeeds it is called again at
-- every `get`, so a variable set later, or a file fixed later, is seen.
-- @tparam string name
-- @tparam function build `() -> get | nil, err`
-- @treturn table provider
-- @usage return base.lazy("credentials_uri", function() ... return base.cached(fetch, o) end)
function _M.lazy(name, build)
  local get
  return _M.provider(name, function(opts)
    if not get then
      local g, err = build()
      if not g then return nil, err end
      get = g
    end
    return get(opts)
  end)
end

local nonempty = provider.nonempty

--- Is `v` "true" the way the official SDKs read a boolean variable?
-- @usage if base.truthy(getenv("ALIBABA_CLOUD_IMDSV1_DISABLED")) then ... end
function _M.truthy(v)
  return v == true or (type(v) == "string" and lower(v) == "true")
end

-- --------------------------------------------------------------------------
-- Options
-- --------------------------------------------------------------------------

--- Options every provider takes.
_M.COMMON = {
  env = { table = true, ["function"] = true },  -- replaces os.getenv (tests, sandboxes)
  clock = "function",                            -- epoch seconds, for expiry decisions
  random = "function",                           -- [0, 1), for backoff jitter
  debug = { boolean = true, ["function"] = true },  -- true: stderr / nginx log; a function: each line
  transport = { string = true, table = true, ["function"] = true },
  connect_timeout = "number", timeout = "number",
  ca_file = "string", insecure = "boolean",
}

--- STS options (providers that call STS).
_M.STS = {
  sts_endpoint = "string", sts_region = "string", enable_vpc = "boolean",
}

local function type_name(want)
  if type(want) ~= "table" then return want end
  local names = {}
  for k in pairs(want) do names[#names + 1] = k end
  sort(names)
  return concat(names, " or ")
end

--- Checks `opts` against one or more option sets.
-- @tparam string what the function's name, for messages
-- @tparam table|nil opts
-- @param ... option sets (name -> type name or set of type names)
-- @treturn table opts (an empty table for nil)
-- @return nil, err (`InvalidParameter`) on an unknown name or a wrong type
-- @usage local o, err = base.options("credentials.env", opts, base.COMMON)
function _M.options(what, opts, ...)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    return nil, errors.invalid(what .. " takes a table of options")
  end
  local allowed = {}
  for i = 1, select("#", ...) do
    for k, v in pairs((select(i, ...))) do allowed[k] = v end
  end
  local unknown = require("imm.operations").unknown_key(opts, allowed, "option")
  if unknown then
    unknown.message = what .. ": " .. unknown.message
    return nil, unknown
  end
  for k, v in pairs(opts) do
    local want = allowed[k]
    local ok
    if type(want) == "table" then ok = want[type(v)] else ok = type(v) == want end
    if not ok then
      return nil, errors.invalid(format("%s: option %s must be a %s, got %s", what, k, type_name(want), type(v)))
    end
  end
  for _, k in ipairs { "connect_timeout", "timeout" } do
    local v = opts[k]
    if v ~= nil and (v <= 0 or v ~= v or v == huge) then
      return nil, errors.invalid(format("%s: option %s must be a positive number of seconds", what, k))
    end
  end
  return opts
end

--- Copies the entries of `opts` whose names are in the given sets.
-- @treturn table a new table
-- @usage local common = base.pick(o, base.COMMON)
function _M.pick(opts, ...)
  local out = {}
  for i = 1, select("#", ...) do
    for k in pairs((select(i, ...))) do
      if opts[k] ~= nil then out[k] = opts[k] end
    end
  end
  return out
end

--- The environment seam: a function `name -> value or nil` in which an
-- empty value counts as unset. `opts.env` may be a table or a function;
-- otherwise `os.getenv` (inside nginx that sees only `env`-declared names).
-- @treturn function
-- @usage local getenv = base.getenv{ env = { HOME = "/tmp/h" } }
function _M.getenv(opts)
  local e = opts.env
  local raw
  if type(e) == "table" then
    raw = function(n) return e[n] end
  elseif type(e) == "function" then
    raw = e
  else
    raw = os_getenv
  end
  return function(n)
    local v = raw(n)
    if v == "" or type(v) ~= "string" then return nil end
    return v
  end
end

--- A `NoCredentials` error: the provider does not apply here.
-- @treturn table err
-- @usage return nil, base.none("ALIBABA_CLOUD_CREDENTIALS_URI is not set")
function _M.none(message)
  return errors.new("NoCredentials", message, { retryable = false })
end

--- An `InvalidConfiguration` error: a file or a setting is broken.
-- `fields` may carry `file` and `line`.
-- @treturn table err
-- @usage return nil, base.bad_config(path .. ":3: expected key = value", { file = path, line = 3 })
function _M.bad_config(message, fields)
  fields = fields or {}
  fields.retryable = false
  return errors.new("InvalidConfiguration", message, fields)
end

--- Checks a `DurationSeconds`-style option: an integer of at least 900.
-- @return the duration (3600 when nil), or nil, err (`InvalidParameter`)
-- @usage local d, err = base.duration("credentials.ram_role_arn", opts.duration_seconds)
function _M.duration(what, v)
  if v == nil then return 3600 end
  if type(v) ~= "number" or v ~= floor(v) or v < 900 or v > 43200 then
    return nil, errors.invalid(format("%s: duration_seconds must be an integer from 900 to 43200, got %s",
      what, tostring(v)))
  end
  return floor(v)
end

-- --------------------------------------------------------------------------
-- Files
-- --------------------------------------------------------------------------

--- Reads a whole file.
-- @return contents, or nil, message (names the path; never the contents)
-- @usage local text, msg = base.read_file(path)
function _M.read_file(path)
  local f, err = io_open(path, "rb")
  if not f then
    err = tostring(err)
    if sub(err, 1, #path + 2) == path .. ": " then err = sub(err, #path + 3) end
    return nil, err
  end
  local s = f:read("*a")
  f:close()
  if not s then return nil, path .. ": read failed" end
  return s
end

--- The home directory, from `HOME` (or `USERPROFILE`).
-- @return the directory, or nil when neither is set
-- @usage local home = base.home(getenv)
function _M.home(getenv)
  return getenv("HOME") or getenv("USERPROFILE")
end

-- --------------------------------------------------------------------------
-- Time
-- --------------------------------------------------------------------------

-- Days since 1970-01-01 of a proleptic Gregorian date (no local-zone trap).
local function days_from_civil(y, m, d)
  if m <= 2 then y, m = y - 1, m + 12 end
  return 365 * y + floor(y / 4) - floor(y / 100) + floor(y / 400)
    + floor((153 * (m - 3) + 2) / 5) + d - 719469
end

--- Epoch seconds of an ISO 8601 time such as "2024-03-18T07:21:35Z"
-- (fractions and `+hh:mm` offsets allowed), or nil.
-- @usage base.parse_time("2030-01-01T00:00:00Z")  -- 1893456000
function _M.parse_time(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, se, rest = match(s, "^(%d%d%d%d)-(%d%d)-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(.*)$")
  if not y then return nil end
  rest = gsub(rest, "^%.%d+", "")
  local offset
  if rest == "Z" or rest == "z" then
    offset = 0
  else
    local sign, oh, om = match(rest, "^([+-])(%d%d):?(%d%d)$")
    if not sign then return nil end
    offset = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == "-" and -1 or 1)
  end
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo < 1 or mo > 12 or d < 1 or d > 31 then return nil end
  return days_from_civil(y, mo, d) * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(se) - offset
end

--- "YYYY-MM-DDTHH:MM:SSZ" of epoch seconds.
-- @treturn string
-- @usage base.format_time(1893456000)  -- "2030-01-01T00:00:00Z"
function _M.format_time(t)
  return os_date("!%Y-%m-%dT%H:%M:%SZ", floor(t))
end

--- Validates the four fields every temporary credential carries.
-- @tparam table t with `AccessKeyId`, `AccessKeySecret`, `SecurityToken`, `Expiration`
-- @tparam string where for messages ("STS AssumeRole reply", ...)
-- @return creds `{ access_key_id, access_key_secret, security_token, expiration }`, or nil, err
-- @usage local creds, err = base.temporary(reply.Credentials, "STS AssumeRole reply")
function _M.temporary(t, where)
  if type(t) ~= "table" then
    return nil, errors.new("InvalidResponse", where .. " has no credentials object", { retryable = false })
  end
  for _, k in ipairs { "AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration" } do
    if not nonempty(t[k]) then
      return nil, errors.new("InvalidResponse", format("%s has no %s", where, k), { retryable = false })
    end
  end
  local exp = _M.parse_time(t.Expiration)
  if not exp then
    local shown = #t.Expiration > 40 and sub(t.Expiration, 1, 40) .. "..." or t.Expiration
    return nil, errors.new("InvalidResponse", format("%s has an Expiration that is not an ISO 8601 time: %q",
      where, shown), { retryable = false })
  end
  return { access_key_id = t.AccessKeyId, access_key_secret = t.AccessKeySecret,
    security_token = t.SecurityToken, expiration = exp }
end

-- --------------------------------------------------------------------------
-- Tracing, with secrets redacted
-- --------------------------------------------------------------------------

--- A trace function for a provider: `trace(fmt, ...)` sends one redacted
-- line to the `debug` option's sink (see `imm.log.debug_sink`; `IMM_DEBUG=1`
-- stands for `debug = true`), or does nothing. Callers pass only redacted
-- values.
-- @treturn function trace
-- @treturn boolean whether tracing is on
-- @usage local trace, on = base.tracer("ecs_ram_role", opts); trace("discovered role %s", role)
function _M.tracer(name, opts)
  local opt = opts.debug
  if opt == nil and _M.getenv(opts)("IMM_DEBUG") == "1" then opt = true end
  local sink = require("imm.log").debug_sink(opt)
  if not sink then return function() end, false end
  local prefix = "imm.credentials." .. name .. ": "
  return function(fmt, ...)
    sink(prefix .. format(fmt, ...))
  end, true
end

-- --------------------------------------------------------------------------
-- HTTP
-- --------------------------------------------------------------------------

local HTTP = {}
HTTP.__index = HTTP

--- Whether a URL's host is on this machine or link-local (loopback
-- 127.0.0.0/8, `localhost`, `::1`, 169.254.0.0/16, `fe80::/10`, and the
-- ECS metadata address 100.100.100.200): a proxy has no business seeing
-- credentials fetched from there.
-- @tparam string url
-- @treturn boolean
-- @usage base.is_local_url("http://127.0.0.1:9000/creds")  -- true
function _M.is_local_url(url)
  local host = match(url, "^%a[%w+.-]*://[^/?#@]*@([^/?#]+)") or match(url, "^%a[%w+.-]*://([^/?#]+)")
  if not host then return false end
  host = lower(host)
  local v6 = match(host, "^%[([^%]]*)%]")
  if v6 then
    return v6 == "::1" or match(v6, "^fe[89ab]%x:") ~= nil
  end
  host = gsub(host, ":%d*$", "")
  if host == "localhost" or match(host, "%.localhost$") or host == "100.100.100.200" then return true end
  local a, b = match(host, "^(%d+)%.(%d+)%.%d+%.%d+$")
  return a == "127" or (a == "169" and b == "254")
end

--- An HTTP helper over `imm.transport` (cosockets inside nginx, libcurl
-- elsewhere). The transport opens on first use and is reused.
-- @tparam table opts `transport`, `connect_timeout`, `timeout`, `ca_file`, `insecure`
-- @tparam table defaults default `connect_timeout` and `timeout`, and
--   `no_proxy = true` for a service a proxy must never see (link-local
--   metadata, a credentials URI on this host)
-- @tparam function trace from `tracer`
-- @treturn table with a `request` method
-- @usage local http = base.http(o, { connect_timeout = 1, timeout = 1 }, trace)
function _M.http(opts, defaults, trace)
  return setmetatable({
    choice = opts.transport,
    topts = {
      connect_timeout = opts.connect_timeout or defaults.connect_timeout,
      timeout = opts.timeout or defaults.timeout,
      ca_file = opts.ca_file, insecure = opts.insecure,
      user_agent = USER_AGENT, max_response_bytes = 1024 * 1024,
      no_proxy = defaults.no_proxy,
      -- libcurl: inside an imm task the fetch yields, so other tasks run on
      async = true,
    },
    trace = trace,
  }, HTTP)
end

--- Sends one request and traces it with secrets redacted.
-- @tparam table req `method`, `url`, `headers`, `body`, and optionally
--   `shown_url`, what the trace shows instead of the URL
-- @tparam[opt] number deadline from `deadline`: the request gets at most
--   what is left of it (a `Timeout` at once when nothing is)
-- @return res `{ status, headers, body }`, or nil, err
-- @usage local res, err = http:request({ method = "GET", url = uri, headers = {} }, deadline)
function HTTP:request(req, deadline)
  if deadline then
    local left = deadline - core.monotonic()
    if left <= 0 then
      return nil, errors.new("Timeout", "no time left for a credential request within the call's deadline",
        { sent = false })
    end
    req.timeout = left
  end
  local t, err = self.transport
  if not t then
    t, err = require("imm.transport").open(self.choice, self.topts)
    if not t then return nil, err end
    self.transport = t
  end
  req.headers = req.headers or {}
  if self.trace then
    local hs = {}
    for k, v in pairs(req.headers) do
      if lower(k) ~= "host" then
        hs[#hs + 1] = k .. ": " .. (SECRET_PARAMS[lower(k)] and "<redacted>" or v)
      end
    end
    sort(hs)
    local body = req.body and req.body ~= "" and (" body " .. _M.redact(req.body)) or ""
    self.trace("%s %s%s%s", req.method, req.shown_url or _M.redact(req.url),
      #hs > 0 and (" [" .. concat(hs, ", ") .. "]") or "", body)
  end
  local res
  res, err = t:request(req)
  if self.trace then
    if res then
      self.trace("-> HTTP %d, %d bytes", res.status, #res.body)
    else
      self.trace("-> %s: %s", tostring(err.code), tostring(err.message))
    end
  end
  return res, err
end

--- Decodes a JSON object from a reply without ever echoing the body.
-- @return table, or nil, err (`InvalidResponse`)
-- @usage local v, err = base.json_object(res, "credentials URI reply")
function _M.json_object(res, where)
  local v = require("imm.decode").imm(res.body)
  if type(v) ~= "table" or v[1] ~= nil then
    return nil, errors.new("InvalidResponse", format("%s is not a JSON object (HTTP %d, %d bytes)",
      where, res.status, #res.body), { status = res.status, retryable = false })
  end
  return v
end

--- Line number of the character at byte offset `pos` in `s`.
-- @treturn number
-- @usage base.line_of("a\nb", 3)  -- 2
function _M.line_of(s, pos)
  local line = 1
  local i = find(s, "\n", 1, true)
  while i and i < pos do
    line = line + 1
    i = find(s, "\n", i + 1, true)
  end
  return line
end

-- --------------------------------------------------------------------------
-- Cached credentials, refreshed before they expire
-- --------------------------------------------------------------------------

local BACKOFF_BASE, BACKOFF_CAP = 5, 300
local WAIT_LIMIT = 30  -- seconds a request waits for another one's refresh

_M.STALE_TEMPORARY = 15 * 60   -- STS, OIDC, credentials URI
_M.STALE_ECS = 60 * 60         -- ECS RAM role

local function copy(c)
  return { access_key_id = c.access_key_id, access_key_secret = c.access_key_secret,
    security_token = c.security_token, expiration = c.expiration }
end

-- Lua 5.1's pcall cannot be yielded across; LuaJIT's and 5.2+'s can. A
-- transport that yields (cosockets, a coroutine scheduler) then still works.
local protected = (_VERSION ~= "Lua 5.1" or rawget(_G, "jit") ~= nil)

local function run(fetch, deadline)
  if not protected then return fetch(deadline) end
  local ok, c, err = pcall(fetch, deadline)
  if not ok then
    return nil, errors.new("InvalidResponse", "credential refresh raised: " .. tostring(c), { retryable = false })
  end
  return c, err
end

-- Inside nginx, in a phase that may yield: the way to wait for a refresh
-- that another request of this worker is running.
local function ngx_waiter()
  local ngx = rawget(_G, "ngx")
  if type(ngx) ~= "table" or type(ngx.get_phase) ~= "function" then return nil end
  if not require("imm.transport.ngx").phase_ok() then return nil end
  return ngx
end

--- Wraps `fetch` with a cache that refreshes before expiry.
--
-- - Credentials with an `expiration` are refreshed when fewer than `stale`
--   seconds remain; without one they are kept.
-- - Concurrent callers share one refresh: inside nginx the others wait on a
--   per-worker semaphore (one refresh per worker); elsewhere a coroutine
--   that arrives during a refresh gets the still-valid credentials.
-- - A failed refresh keeps serving still-valid credentials and tries again
--   after a jittered, exponential backoff (5 s doubling to 5 min).
-- @tparam function fetch `() -> creds (with expiration) | nil, err`
-- @tparam table o `stale`, `clock`, `random`, `trace`
-- @treturn function `get() -> creds | nil, err`
-- @usage local get = base.cached(fetch, { stale = base.STALE_TEMPORARY, clock = o.clock, trace = trace })
function _M.cached(fetch, o)
  local clock, random, stale, trace = o.clock or os_time, o.random or core.random, o.stale, o.trace
  -- all in upvalues: nothing here is reachable from a provider's fields
  local creds, failures, next_try, busy, last_err, sema = nil, 0, 0, false, nil, nil

  local function valid(now)
    return creds ~= nil and (creds.expiration == nil or now < creds.expiration)
  end
  local function fresh(now)
    return creds ~= nil and (creds.expiration == nil or creds.expiration - now > stale)
  end

  local function wake()
    if sema then
      local n = sema:count()
      if n < 0 then sema:post(-n) end
    end
  end

  local function refresh(now, deadline)
    busy = true
    local c, err = run(fetch, deadline)
    busy = false
    if c and c.expiration and c.expiration <= now then
      c, err = nil, errors.new("InvalidResponse", format("the credentials received had expired at %s",
        _M.format_time(c.expiration)), { retryable = false })
    end
    if c then
      creds, failures, next_try, last_err = c, 0, 0, nil
      trace("new credentials%s", c.expiration and (", valid until " .. _M.format_time(c.expiration)) or "")
    else
      failures = failures + 1
      local d = min(BACKOFF_CAP, BACKOFF_BASE * 2 ^ (failures - 1))
      next_try = now + d / 2 + random() * d / 2
      last_err = err
    end
    wake()
    return c, err
  end

  local function wait(ngx, limit)
    if not sema then
      local ok, semaphore = pcall(require, "ngx.semaphore")
      if ok then sema = semaphore.new(0) end
    end
    local deadline = ngx.now() + limit
    while busy and ngx.now() < deadline do
      if sema then
        sema:wait(deadline - ngx.now())
      else
        ngx.sleep(0.005)
      end
    end
  end

  return function(opts)
    local now = clock()
    if fresh(now) then return copy(creds) end
    local deadline = _M.deadline(opts)
    if busy then
      if valid(now) then return copy(creds) end
      local ngx = ngx_waiter()
      if ngx then
        trace("waiting for the refresh another request started")
        local limit = deadline and min(WAIT_LIMIT, deadline - core.monotonic()) or WAIT_LIMIT
        if limit > 0 then wait(ngx, limit) end
        now = clock()
        if valid(now) then return copy(creds) end
        if busy then
          return nil, errors.new("Timeout", format("waited %g s for another request's credential refresh",
            floor(limit * 1000 + 0.5) / 1000), { retryable = true })
        end
        return nil, last_err
      end
      -- A coroutine outside nginx cannot wait here: it refreshes too.
    end
    if valid(now) and now < next_try then return copy(creds) end
    if deadline and valid(now) then
      -- still-valid credentials in hand: the refresh gets half of what is
      -- left, so the call keeps time for itself when the service stalls
      local m = core.monotonic()
      deadline = m + (deadline - m) / 2
    end
    local c, err = refresh(now, deadline)
    if c then return copy(c) end
    if valid(now) then
      trace("refresh failed (%s); serving the credentials valid until %s, next try in %d s",
        tostring(err and err.code), _M.format_time(creds.expiration), floor(next_try - now + 0.5))
      return copy(creds)
    end
    return nil, err
  end
end

return _M
