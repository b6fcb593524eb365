--- The IMM client: options, signing, sending, decoding and retries for one
-- endpoint and one set of credentials.
--
-- Misuse that is a programming error (calling a method on something that is
-- not a client) raises; everything that can fail at run time returns
-- `nil, err` (see `imm.errors`).
-- @classmod imm.client

local type, pairs, tostring, setmetatable, format = type, pairs, tostring, setmetatable, string.format
local floor, min, find, gsub, getmetatable = math.floor, math.min, string.find, string.gsub, getmetatable
local io_open, os_time = io.open, os.time

local core = require "imm.core"
local errors = require "imm.errors"
local operations = require "imm.operations"
local actions = require "imm.actions"
local endpoint = require "imm.endpoint"
local signer = require "imm.signer"
local decode = require "imm.decode"
local scrub_error = require("imm.credentials.provider").scrub_error
local transport = require "imm.transport"
local lazy = require "imm.lazy"  -- first use loads them: require "imm" stays short
local credentials = lazy "imm.credentials"  -- explicit keys need only the static provider
local static = require("imm.credentials.static").new
local pager = lazy "imm.pager"
local parallel = lazy "imm.parallel"
local response = require "imm.response"
local log = require "imm.log"
local async = lazy "imm.async"
local waiter = lazy "imm.waiter"
local loaded = package.loaded
local callopts = lazy "imm.callopts"  -- a call without options does without it
-- callopts.MAX_SECONDS (spec 24 checks), kept here so that new need not load callopts
local MAX_CALL_SECONDS = 86400

local VERSION = "0.1.0"

---@class imm.RateLimitOptions
---@field rate number requests a second
---@field burst integer|nil default 1
---@field per_action boolean|nil one bucket per action
---@field max_wait number|nil the longest wait for a slot, default 10 (and within the deadline)
---@field key string|nil the bucket's name, default "imm:rl"
---@field adaptive boolean|nil halve on Throttling, grow back
---@field min_rate number|nil adaptive floor
---@field dict string|nil a lua_shared_dict: every worker
---@field redis table|nil host, port, password, username, db, timeout, pool_size, keepalive: every host

---@class imm.ClientOptions
---@field region string|nil e.g. "cn-hangzhou"
---@field endpoint string|nil "host", "host:port" or "http(s)://host[:port]"
---@field protocol "https"|"http"|nil
---@field network "public"|"vpc"|nil "vpc": imm-vpc.<region>.aliyuncs.com
---@field access_key_id string|nil
---@field access_key_secret string|nil
---@field security_token string|nil
---@field credentials imm.CredentialsProvider|nil instead of keys (see imm.credentials)
---@field signature_algorithm "ACS3-HMAC-SHA256"|"ACS3-HMAC-SM3"|"v2"|nil
---@field connect_timeout number|nil seconds, default 5
---@field timeout number|nil seconds for one attempt, default 10
---@field max_retries integer|nil 0-20, default 3
---@field deadline number|nil seconds for a call with its retries
---@field ca_file string|nil a PEM bundle (libcurl only)
---@field insecure boolean|nil true: no TLS verification (a test server only)
---@field user_agent string|nil appended to imm's own
---@field max_response_bytes integer|nil default 64 MiB
---@field pool_size integer|nil ngx transport: idle connections kept per host and worker, default 256
---@field proxy string|false|nil "http://[user:pass@]host:port" (also https://, socks5h://); false: none
---@field no_proxy string|string[]|nil hosts and domains that bypass the proxy
---@field transport "curl"|"ngx"|table|function|nil
---@field decoder "imm"|"cjson"|function|nil
---@field big_integers "float"|"string"|nil "string": integers the runtime cannot hold exactly as their text
---@field debug boolean|function|nil
---@field async boolean|nil true: inside an imm task (imm.spawn), calls yield instead of blocking
---@field clock (fun(): number)|nil epoch seconds, for deterministic tests
---@field nonce (fun(): string)|nil the signature nonce, for deterministic tests
---@field on_request fun(info: table)|nil called before each attempt (docs/api.md, "Hooks")
---@field on_response fun(info: table)|nil called after each attempt
---@field rate_limit imm.RateLimitOptions|nil a client-side token bucket (docs/openresty.md)
---@field credentials_cache { dict: string, key: string|nil, lock_timeout: number|nil }|nil inside nginx

---@class imm.Client
local Client = {}
Client.__index = Client

local BACKOFF_BASE, BACKOFF_CAP = 0.2, 20

--- Client options and their types. Anything else is refused.
local OPTIONS = {
  region = "string", endpoint = "string", protocol = "string", network = "string",
  access_key_id = "string", access_key_secret = "string", security_token = "string",
  credentials = "table",
  signature_algorithm = "string",
  connect_timeout = "number", timeout = "number",
  max_retries = "number", deadline = "number",
  ca_file = "string", insecure = "boolean",
  user_agent = "string",
  max_response_bytes = "number",
  -- the ngx transport's keep-alive pool size per host (see transport/ngx.lua)
  pool_size = "number",
  -- true: inside an imm task (imm.spawn), calls yield instead of blocking
  async = "boolean",
  -- a proxy URL or false (see imm.proxy), and the hosts that bypass it
  proxy = { string = true, boolean = true }, no_proxy = { string = true, table = true },
  transport = { string = true, table = true, ["function"] = true },
  decoder = { string = true, ["function"] = true },
  -- "string": integers beyond 2^53 (5.1, LuaJIT) or int64 (5.3/5.4) as text
  big_integers = "string",
  -- true (or IMM_DEBUG=1) prints each canonical request and string to sign,
  -- secrets redacted; a function receives the lines instead
  debug = { boolean = true, ["function"] = true },
  -- for deterministic tests: functions returning epoch seconds and a nonce
  clock = "function", nonce = "function",
  -- hooks around each attempt, for logs, metrics and traces (docs/api.md, "Hooks")
  on_request = "function", on_response = "function",
  -- client-side token buckets (imm.ratelimit), and credentials kept in a
  -- lua_shared_dict for every worker (imm.credentials.shared)
  rate_limit = "table", credentials_cache = "table",
}

local function check_options(opts)
  local unknown = operations.unknown_key(opts, OPTIONS, "client option")
  if unknown then return nil, unknown end
  for k, v in pairs(opts) do
    local want = OPTIONS[k]
    local ok = (type(want) == "table") and want[type(v)] or type(v) == want
    if not ok then
      local names = {}
      if type(want) == "table" then
        for t in pairs(want) do names[#names + 1] = t end
        table.sort(names)
      end
      return nil, errors.invalid(format("client option %s must be a %s, got %s", k,
        type(want) == "table" and table.concat(names, " or ") or want, type(v)))
    end
  end
  return true
end

local function positive(opts, k, default)
  local v = opts[k]
  if v == nil then return default end
  if v <= 0 or v ~= v or v == math.huge then
    return nil, errors.invalid(format("client option %s must be a positive number of seconds, got %s",
      k, tostring(v)))
  end
  return v
end

local function has_crlf(s) return find(s, "[\r\n]") ~= nil end

--- Creates a client. docs/api.md describes every option.
-- @tparam table opts
-- @return client, or nil, err
-- @usage local client = assert(imm.new{ region = "cn-hangzhou",
--   access_key_id = id, access_key_secret = secret })
---@param opts imm.ClientOptions
---@return imm.Client|nil client
---@return imm.Error|nil err
function Client.new(opts)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    return nil, errors.invalid("imm.new takes a table of options")
  end
  local ok, err = check_options(opts)
  if not ok then return nil, err end

  local self = setmetatable({}, Client)
  self.endpoint, err = endpoint.resolve(opts)
  if not self.endpoint then return nil, err end
  if self.endpoint.scheme == "http" and opts.protocol ~= "http" and
     not find(opts.endpoint or "", "^[hH][tT][tT][pP]://") then
    return nil, errors.invalid("plain http needs protocol = \"http\" or an http:// endpoint")
  end

  local alg = opts.signature_algorithm or "ACS3-HMAC-SHA256"
  if not signer.ALGORITHMS[alg] then
    return nil, errors.invalid(format("signature_algorithm must be \"ACS3-HMAC-SHA256\", "
      .. "\"ACS3-HMAC-SM3\" or \"v2\", got %q", alg))
  end
  self.algorithm = alg

  -- Credentials: explicit keys, a provider, or the default chain.
  if opts.credentials then
    if opts.access_key_id or opts.access_key_secret then
      return nil, errors.invalid("give either credentials or access_key_id/access_key_secret, not both")
    end
    if not credentials.is_provider(opts.credentials) then
      return nil, errors.invalid("credentials must be a provider (a table with a get method)")
    end
    self.credentials = opts.credentials
  elseif opts.access_key_id or opts.access_key_secret or opts.security_token then
    self.credentials, err = static(opts)
    if not self.credentials then return nil, err end
  else
    self.credentials = credentials.default()
  end
  if opts.credentials_cache then
    self.credentials, err = require("imm.credentials.shared").new(self.credentials, opts.credentials_cache)
    if not self.credentials then return nil, err end
  end
  if opts.rate_limit then
    self.limiter, err = require("imm.ratelimit").new(opts.rate_limit)
    if not self.limiter then return nil, err end
  end

  local connect_timeout, timeout
  connect_timeout, err = positive(opts, "connect_timeout", 5)
  if not connect_timeout then return nil, err end
  timeout, err = positive(opts, "timeout", 10)
  if not timeout then return nil, err end
  self.timeout = timeout

  local retries = opts.max_retries or 3
  if retries ~= floor(retries) or retries < 0 or retries > 20 then
    return nil, errors.invalid(format("max_retries must be an integer from 0 to 20, got %s", tostring(retries)))
  end
  self.max_retries = retries

  if opts.deadline ~= nil then
    local d
    d, err = positive(opts, "deadline")
    if not d then return nil, err end
    self.deadline = d
  end

  local max_bytes = opts.max_response_bytes or 64 * 1024 * 1024
  if max_bytes ~= floor(max_bytes) or max_bytes < 1024 then
    return nil, errors.invalid("max_response_bytes must be an integer of at least 1024")
  end

  local pool_size = opts.pool_size
  if pool_size ~= nil and (pool_size ~= floor(pool_size) or pool_size < 1 or pool_size > 100000) then
    return nil, errors.invalid("pool_size must be an integer from 1 to 100000, got " .. tostring(pool_size))
  end

  if opts.ca_file then
    local f = io_open(opts.ca_file, "rb")
    if not f then
      return nil, errors.invalid(format("ca_file %q cannot be read", opts.ca_file))
    end
    f:close()
  end

  local ua = format("imm-lua/%s (%s)", VERSION, _VERSION)
  if opts.user_agent then
    if has_crlf(opts.user_agent) then
      return nil, errors.invalid("user_agent must not contain CR or LF")
    end
    ua = ua .. " " .. opts.user_agent
  end
  self.user_agent = ua

  local big = opts.big_integers
  if big ~= nil and big ~= "float" and big ~= "string" then
    return nil, errors.invalid(format("big_integers must be \"float\" or \"string\", got %q", big))
  end
  local why
  self.decode, why = decode.get(opts.decoder, big)
  if not self.decode then
    return nil, errors.invalid(why or format("unknown decoder %q (expected \"imm\", \"cjson\" or a function)",
      tostring(opts.decoder)))
  end
  self.clock = opts.clock or os_time
  self.nonce = opts.nonce or core.nonce
  -- seconds to add to our clock, learned from the service after a skew error
  self.clock_offset = 0
  local dbg = opts.debug
  if dbg == nil and os.getenv("IMM_DEBUG") == "1" then dbg = true end
  self.debug = log.debug_sink(dbg)
  self.on_request, self.on_response = opts.on_request, opts.on_response
  -- the hooks that raised, logged once: made here, so the copies a
  -- parallel listing makes of the client (imm.parallel) share it
  self.hook_failed = {}

  if opts.async and transport.resolve(opts.transport) ~= "curl" then
    return nil, errors.invalid("async = true needs the curl transport (inside nginx, "
      .. "calls never block: leave async unset there)")
  end
  local via = {}  -- no proxy options: the environment's, left to the transport
  if opts.proxy ~= nil or opts.no_proxy ~= nil then
    via, err = require("imm.proxy").options(opts)
    if not via then return nil, err end
  end
  self.transport, err = transport.open(opts.transport, {
    -- every attempt passes its own cap (Client:call), which a call's
    -- timeout option may raise above the client's, up to this
    connect_timeout = connect_timeout, timeout = math.max(timeout, MAX_CALL_SECONDS),
    ca_file = opts.ca_file, insecure = opts.insecure,
    user_agent = ua, max_response_bytes = max_bytes, async = opts.async,
    pool_size = pool_size, proxy = via.proxy, no_proxy = via.no_proxy,
  })
  if not self.transport then return nil, err end
  if opts.insecure then
    log.warn("TLS verification is off for " .. self.endpoint.base .. " (insecure = true)")
  end
  return self
end

function Client:__tostring()
  return format("imm.client (%s, %s)", self.endpoint.base, self.algorithm)
end

-- Full jitter: a random delay in [0, min(cap, base * 2^(attempt-1))], or
-- what the service asked for, if it said.
local function backoff(attempt, err)
  local hint = err.retry_after
  if hint then return min(hint, BACKOFF_CAP) end
  return core.random() * min(BACKOFF_CAP, BACKOFF_BASE * 2 ^ (attempt - 1))
end

-- Replaces every form of `secret` a debug line could hold (raw, encoded
-- once or twice) with "***". In C, so the encoded copies of the secret are
-- wiped buffers, never Lua strings that linger until collected.
local redact = core.redact

-- A secret and, when it differs, its trimmed form: a header value travels
-- without its surrounding blanks, so the canonical request and a server's
-- echo hold the trimmed one.
local function trimmed(secret)
  if type(secret) ~= "string" then return nil end
  local t = gsub(secret, "^%s*(.-)%s*$", "%1")
  if t == secret or t == "" then return nil end
  return t
end

-- Masks the token in a debug line, as given and trimmed.
local function mask(line, token)
  if not token then return line end
  line = redact(line, token)
  local t = trimmed(token)
  if t then line = redact(line, t) end
  return line
end

-- What a hook may see of the headers: never the signature or the token.
local HIDDEN = { authorization = true, ["x-acs-security-token"] = true }
local function shown_headers(h)
  local t = {}
  for k, v in pairs(h) do
    if not HIDDEN[string.lower(k)] then t[k] = v end
  end
  return t
end

-- The URL without secrets: V2 carries the signature and the token in the
-- query.
local function shown_url(url, creds)
  url = gsub(url, "([?&]Signature=)[^&]*", "%1***")
  url = gsub(url, "([?&]SecurityToken=)[^&]*", "%1***")
  local token = creds.security_token
  if token and token ~= "" then url = mask(url, token) end
  return url
end

-- What a transport failed with, as an imm error: a table or function
-- transport may return `nil, "message"`, or nothing at all.
local function transport_failure(err)
  if errors.is_error(err) then return err end
  return errors.new("ConnectionFailed", "the transport failed: "
    .. (err == nil and "it returned neither a response nor an error" or tostring(err)))
end

-- One signed exchange: sign afresh (new date and nonce), send, classify.
-- `method` is "POST" unless the call asked for "GET"; `fresh` asks the
-- transport for a new connection (mutations: see may_retry). `form`, when
-- a table, holds the parameters that go in an x-www-form-urlencoded body;
-- `timeout`, when given, caps the attempt (what is left of the deadline);
-- `extra`: the call's own headers (imm.callopts), `attempt` its number for
-- the hooks. Returns the value or nil, err; then the transport's response
-- (nil when it failed) and the attempt's seconds.
function Client:_attempt(action, query, creds, def, method, fresh, form, timeout, extra, attempt)
  method = method or "POST"
  local ep = self.endpoint
  local signed, code, msg = signer.sign {
    algorithm = self.algorithm, method = method, path = "/", authority = ep.authority,
    action = action, version = operations.API_VERSION, query = query, form = form,
    date = self.clock() + self.clock_offset, nonce = self.nonce(),
    access_key_id = creds.access_key_id, access_key_secret = creds.access_key_secret,
    security_token = creds.security_token, debug = self.debug ~= nil, headers = extra,
  }
  if not signed then
    return nil, errors.new(code, msg, { retryable = false })
  end
  if self.debug then
    -- the secret never enters these strings; the token does, so it is masked
    local token = creds.security_token
    if signed.canonical_request then
      self.debug("canonical request:\n" .. mask(signed.canonical_request, token))
    end
    self.debug("string to sign:\n" .. mask(signed.string_to_sign, token))
  end
  local url = ep.base .. "/"
  if signed.query ~= "" then url = url .. "?" .. signed.query end

  local headers = signed.headers
  headers.accept = "application/json"
  if self.on_request then
    self:_hook("on_request", { action = action, attempt = attempt or 1, method = method,
      url = shown_url(url, creds), headers = shown_headers(headers) })
  end
  local t0 = core.monotonic()
  -- lazy_body: the curl transport leaves body and headers in C until read
  local res, err = self.transport:request { method = method, url = url, headers = headers, body = signed.body,
    fresh = fresh, timeout = timeout, lazy_body = true }
  local elapsed = core.monotonic() - t0
  local v, perr
  if not res then
    perr = transport_failure(err)
    -- what to do about it, when the failure says: plain HTTP, an unknown region
    local hint = endpoint.hint(ep, perr)
    if hint then
      perr.hint = hint
      perr.message = tostring(perr.message) .. " (" .. hint .. ")"
    end
  elseif type(res) ~= "table" or type(res.status) ~= "number" then
    perr = errors.new("InvalidResponse", "the transport returned " .. type(res) .. ", not a response table",
      { retryable = false })
  else
    v, perr = response.parse(res, self.decode, def)
    local renamed = operations.renamed[action]
    if renamed and perr then
      -- still sent (call is the escape hatch), but say what the API calls it now
      perr.message = format("%s (%s is %s in the current API)", tostring(perr.message), action, renamed)
    end
  end
  if not v and perr then
    -- SignatureDoesNotMatch echoes the string to sign (with V2 it holds the
    -- token), and a hostile server may echo the token anywhere: every
    -- string field of the error is scrubbed
    local secret, token = creds.access_key_secret, creds.security_token
    scrub_error(perr, { secret, token, trimmed(secret), trimmed(token) }, 4)
  end
  return v, perr, type(res) == "table" and res or nil, elapsed
end

-- Hooks ---------------------------------------------------------------------

-- Calls a hook; one that raises never breaks the call, and is logged once
-- per client and hook (a hook that fails on every attempt would flood
-- the log otherwise).
function Client:_hook(name, info)
  local ok, e = pcall(self[name], info)
  if not ok then
    local logged = self.hook_failed
    if not logged[name] then
      logged[name] = true
      log.warn(format("the %s hook raised (logged once per client): %s", name, tostring(e)))
    end
  end
end

-- Codes by which the service says our timestamp is outside its window.
local SKEW_CODES = {
  ["InvalidTimeStamp.Expired"] = true, ["InvalidTimeStamp"] = true, ["RequestTimeTooSkewed"] = true,
}

-- May a failed attempt be made again? A read: whenever the failure is
-- retryable. A mutation: only when the service cannot have acted on it,
-- that is when it refused with Throttling*, or when no byte of the request
-- left this host (the transport says err.sent == false). Mutations go out
-- on a fresh connection, because libcurl sends a request again by itself
-- when a reused keep-alive connection dies before the reply.
local function may_retry(err, idempotent)
  if not err.retryable then return false end
  if idempotent then return true end
  -- 429: refused before it was acted on, whatever the body said
  if err.sent == false or err.status == 429 then return true end
  return type(err.code) == "string" and find(err.code, "^Throttling") ~= nil
end

-- Raises, at the caller of a method, when the method was called with a
-- dot (`client.list_bindings{...}`), which passes the parameters as self.
-- `level`: how far up the stack the method's caller is (default 3).
local function must_be_client(self, name, level)
  if getmetatable(self) ~= Client then
    error(format("imm: %s is a method: call it with a colon, client:%s(...)", name, name), level or 3)
  end
end

-- Every typed method: checked, then a call (see imm.actions).
function Client._invoke(self, action, name, params, opts)
  must_be_client(self, name, 4)
  local res, err, meta = self:call(action, params, opts)
  return res, err, meta
end
actions._invoke = Client._invoke

--- Calls any IMM RPC action (API version 2020-09-30).
-- Parameters of the actions in the schema (`imm.api`, every action of the
-- official SDK) are validated and encoded as the SDK sends them: scalars as
-- text, structured parameters as one JSON text, body parameters in an
-- x-www-form-urlencoded body. For an action without a schema (the escape
-- hatch), strings, numbers and booleans are sent as text and any table as
-- one JSON text (see `imm.operations.validate`).
--
-- Retries: an action that cannot change stored state (its schema says so;
-- without one, `imm.operations.reads` decides by its name) is retried after
-- any retryable failure; an action that changes something only after
-- `Throttling*` or a connection failure before the request was sent.
-- @tparam string action e.g. "ListBindings"
-- @tparam table params
-- @tparam[opt] table opts call options (docs/api.md, "Call options"):
--   `method` ("POST", the default, or "GET": signed and sent with that
--   method), `idempotent` (a boolean that overrides the action's own flag),
--   `deadline`, `timeout`, `max_retries` (this call's, instead of the
--   client's), `headers` (extra request headers), `meta`, `wait` (a
--   Create*Task action only: true or the options of `wait_task`; returns
--   GetTask's final response)
-- @return the decoded response table, or nil, err; with `meta = true`, a
--   third value on success: `{ action, request_id, status, attempts,
--   elapsed, headers }`
-- @usage local res, err = client:call("ListBindings", { ProjectName = "immtest" })
-- @usage local res, err = client:call("CreateProject", { ProjectName = "p",
--   Tag = { { Key = "env", Value = "test" } } })
---@param action string
---@param params table|nil
---@param opts imm.CallOptions|nil
---@return table|nil res
---@return imm.Error|nil err
function Client:call(action, params, opts)
  must_be_client(self, "call")
  if type(opts) == "table" and opts.wait ~= nil and opts.wait ~= false then
    -- a Create*Task that waits for its task (imm.waiter, docs/tasks.md)
    local res, err = waiter.create_and_wait(self, action, params, opts)
    return res, err
  end
  local query, form = operations.validate(action, params)
  if not query then return nil, form end
  local err, extra
  if opts == nil then
    opts = {}  -- what callopts.check(nil) returns
  else
    opts, extra = callopts.check(opts)
    if not opts then return nil, extra end
  end
  if form and opts.method == "GET" then
    return nil, errors.invalid(format("%s sends a form body, so it cannot be sent with GET", action))
  end
  local def = operations.actions[action]
  local idempotent = operations.is_idempotent(action, opts.idempotent)
  local t = self.transport
  if t.name == "curl" and not t.async and loaded["imm.async"] and async.current() then
    -- it would block the whole loop, every other task with it, and say
    -- nothing.
    return nil, errors.new("InvalidConfiguration", "this client blocks, and it was called inside an imm "
      .. "task (imm.spawn), where it would stop every other task and the loop that calls imm.poll: "
      .. "make the client with async = true", { retryable = false, sent = false })
  end

  -- the call's options override the client's for this call only
  local deadline = opts.deadline or self.deadline
  local cap = opts.timeout or self.timeout
  local max_retries = opts.max_retries or self.max_retries
  -- the deadline holds from here: a credential fetch gets what is left of it
  local t0 = core.monotonic()
  local started = deadline and t0
  local creds
  creds, err = self.credentials:get(started and { timeout = deadline } or nil)
  if not creds then
    if started and errors.is_error(err) and err.code == "Timeout" then
      err.message = format("%s (fetching credentials within the deadline of %gs)", tostring(err.message),
        deadline)
    end
    return nil, err
  end
  local attempt, resigned = 0, false
  while true do
    attempt = attempt + 1
    -- the deadline bounds the whole call: each attempt gets what is left
    local timeout = cap
    if started then
      timeout = deadline - (core.monotonic() - started)
      if timeout <= 0 then
        return nil, errors.new("Timeout", format("deadline of %gs reached after %d attempts", deadline,
          attempt - 1), { attempts = attempt - 1 })
      end
      timeout = min(timeout, cap)
    end
    if self.limiter then
      -- a slot of the client-side rate limit, within what is left of the deadline
      local ok, lerr = self.limiter:acquire(action, started and timeout or nil,
        function(sec) self.transport:sleep(sec) end)
      if not ok then lerr.attempts = attempt - 1 return nil, lerr end
      if started then timeout = math.max(0.001, min(timeout, deadline - (core.monotonic() - started))) end
    end
    local res, raw, elapsed
    res, err, raw, elapsed = self:_attempt(action, query, creds, def, opts.method, not idempotent, form, timeout,
      extra, attempt)
    if self.limiter then self.limiter:feedback(err) end
    if res then
      -- read before the hook, which may send on the same handle
      local raw_headers = opts.meta and raw and raw.headers
      if self.on_response then
        self:_hook("on_response", { action = action, attempt = attempt, status = raw and raw.status,
          request_id = res.RequestId, elapsed = elapsed, retry = false })
      end
      if opts.meta then
        return res, nil, { action = action, request_id = res.RequestId, status = raw and raw.status,
          attempts = attempt, elapsed = core.monotonic() - t0, headers = raw_headers or {} }
      end
      return res
    end
    err.attempts = attempt
    local delay  -- nil: no further attempt
    if SKEW_CODES[err.code] and err.server_time and not resigned then
      -- Our clock is off: learn the offset from the reply's Date header,
      -- keep it for later calls, and sign once more at once.
      resigned = true
      self.clock_offset = err.server_time - self.clock()
      delay = 0
    elseif err.retryable and not may_retry(err, idempotent) then
      err.retryable = false
      err.message = err.message .. format(" (not retried: %s changes state and the request may have "
        .. "reached the service)", action)
    elseif err.retryable and attempt <= max_retries then
      delay = backoff(attempt, err)
      if started and core.monotonic() + delay - started > deadline then
        err.message = err.message .. format(" (deadline of %gs reached after %d attempts)", deadline, attempt)
        delay = nil
      end
    end
    if self.on_response then
      self:_hook("on_response", { action = action, attempt = attempt, status = err.status,
        request_id = err.request_id, code = err.code, elapsed = elapsed, retry = delay ~= nil })
    end
    if not delay then return nil, err end
    if delay > 0 then self.transport:sleep(delay) end
  end
end

--- Lists one page of bindings.
-- @tparam table params `ProjectName` (required), `DatasetName`, `MaxResults`
--   (0..200), `NextToken`, `Name`
-- @tparam[opt] table opts call options, as for `call`
-- @return `{ RequestId, NextToken, Bindings = { ... } }`, or nil, err
-- @usage local res, err = client:list_bindings{ ProjectName = "immtest", MaxResults = 50 }
---@param params imm.ListBindingsParams
---@return imm.ListBindingsResponse|nil res
---@return imm.Error|nil err
---@return imm.CallMeta|nil meta with opts.meta = true
function Client:list_bindings(params, opts)
  local res, err, meta = Client._invoke(self, "ListBindings", "list_bindings", params, opts)
  return res, err, meta
end

--- Iterates over pages of any NextToken action.
-- @tparam string action
-- @tparam table params
-- @tparam[opt] table opts `max_items`, `page_size` (default and at most the
--   action's documented largest page), `start_token`, `items`, `prefetch`
-- @return iterator yielding page tables; on failure it yields `false, err` once
-- @usage for page, err in client:pages("ListBindings", { ProjectName = "p" }) do ... end
---@param action string
---@param params table|nil
---@param opts imm.PagerOptions|nil
---@return fun(): (table|false|nil), imm.Error|nil
function Client:pages(action, params, opts)
  must_be_client(self, "pages")
  return pager.pages(self, action, params, opts)
end

--- Iterates over the items of any NextToken action, one by one: the
-- elements of its list field (`Files`, `Tasks`, ...; `opts.items` for an
-- action outside the API description), page after page. ListBindings goes
-- through `bindings` (so `concurrency` works as there).
-- @tparam string action e.g. "ListTasks"
-- @tparam table params
-- @tparam[opt] table opts `max_items`, `page_size` (default and at most the
--   action's documented largest page), `start_token`, `prefetch`, `items`
-- @return iterator yielding items; on failure it yields `false, err` once.
--   With `prefetch`, its fourth value's `close()` ends the listing early.
-- @usage for task, err in client:items("ListTasks", { ProjectName = "p" }) do ... end
---@param action string
---@param params table|nil
---@param opts imm.PagerOptions|nil
---@return fun(): (table|false|nil), imm.Error|nil
function Client:items(action, params, opts)
  must_be_client(self, "items")
  if action == "ListBindings" and parallel.wanted(params, opts) then
    return parallel.bindings(self, params, opts)
  end
  return pager.items(self, action, params, opts)
end

--- Every item of every page of any NextToken action, merged:
-- `{ [list field] = { ... } }` (other fields of the pages, such as
-- SimpleQuery's `Aggregations`, are not kept: use `pages` for them).
-- @tparam string action e.g. "QueryStories"
-- @tparam table params
-- @tparam[opt] table opts as for `items`
-- @return table, or nil, err (err.next_token says where to resume)
-- @usage local all, err = client:all("ListTasks", { ProjectName = "p" })
---@param action string
---@param params table|nil
---@param opts imm.PagerOptions|nil
---@return table|nil all
---@return imm.Error|nil err
function Client:all(action, params, opts)
  must_be_client(self, "all")
  if action == "ListBindings" and parallel.wanted(params, opts) then
    return parallel.all_bindings(self, params, opts)
  end
  return pager.all(self, action, params, opts)
end

-- The generated named pagers (imm.actions: `client:tasks`, `client:all_tasks`).
function actions._items(self, action, name, params, opts)
  must_be_client(self, name, 4)
  local it, a, b, listing = Client.items(self, action, params, opts)
  return it, a, b, listing
end
function actions._all(self, action, name, params, opts)
  must_be_client(self, name, 4)
  local all, err = Client.all(self, action, params, opts)
  return all, err
end

--- Iterates over bindings one by one, following NextToken.
-- With `opts.concurrency` above 1 and no `DatasetName`, the project's
-- datasets are listed in parallel (see docs/api.md, "Parallel listing").
-- @tparam table params `ProjectName` (required), `DatasetName`, `MaxResults`, `Name`
-- @tparam[opt] table opts `max_items`, `page_size`, `start_token`,
--   `concurrency` (1-100), `prefetch`, `resume` (a failed parallel
--   listing's `err.resume`: the rest of it, each binding once)
-- @return iterator yielding bindings; on failure it yields `false, err` once.
--   A parallel or prefetching listing also returns, as its fourth value, a
--   handle whose `close()` cancels the requests in flight.
-- @usage for b, err in client:bindings{ ProjectName = "p" } do if not b then error(err) end end
-- @usage for b, err in client:bindings({ ProjectName = "p" }, { concurrency = 20 }) do ... end
---@param params imm.ListBindingsParams
---@param opts imm.PagerOptions|nil
---@return fun(): (imm.Binding|false|nil), imm.Error|nil
---@return nil
---@return nil
---@return { close: fun(self) }|nil listing
function Client:bindings(params, opts)
  must_be_client(self, "bindings")
  if parallel.wanted(params, opts) then return parallel.bindings(self, params, opts) end
  return pager.items(self, "ListBindings", params, opts)
end

--- Every binding of every page, merged: `{ Bindings = { ... } }`.
-- @tparam table params as for `bindings`
-- @tparam[opt] table opts as for `bindings` (`concurrency` included; `prefetch` is ignored)
-- @return table, or nil, err (err.next_token says where to resume; a
--   parallel listing's err.dataset, err.pending and err.resume too)
-- @usage local all, err = client:all_bindings({ ProjectName = "p" }, { concurrency = 20 })
---@param params imm.ListBindingsParams
---@param opts imm.PagerOptions|nil
---@return { Bindings: imm.Binding[] }|nil all
---@return imm.Error|nil err
function Client:all_bindings(params, opts)
  must_be_client(self, "all_bindings")
  if parallel.wanted(params, opts) then return parallel.all_bindings(self, params, opts) end
  return pager.all(self, "ListBindings", params, opts)
end

-- The binding lifecycle ----------------------------------------------------

--- Binds an OSS location to a dataset (CreateBinding). The binding starts
-- `Ready` and is indexed once it is `Running`; see `wait_binding`.
--
-- Not retried blindly: only after `Throttling*` or a connection failure
-- before the request left, which the service cannot have acted on. When a
-- call fails after the request may have arrived (`ConnectionFailed`,
-- `Timeout`, 5xx), the binding may or may not exist: a second call then
-- returns `ResourceAlreadyExist` in `err.code` if the first one succeeded,
-- and `get_binding` says which.
-- @tparam table params `ProjectName`, `DatasetName`, `URI` (all required;
--   `URI` is `oss://bucket` or `oss://bucket/prefix/`)
-- @tparam[opt] table opts call options, as for `call`
-- @return `{ RequestId, Binding = { ... } }`, or nil, err
-- @usage local res, err = client:create_binding{ ProjectName = "p", DatasetName = "d",
--   URI = "oss://bucket/photos/" }
---@param params imm.BindingParams
---@return imm.CreateBindingResponse|nil res
---@return imm.Error|nil err
---@return imm.CallMeta|nil meta with opts.meta = true
function Client:create_binding(params, opts)
  local res, err, meta = Client._invoke(self, "CreateBinding", "create_binding", params, opts)
  return res, err, meta
end

--- Reads one binding (GetBinding). Retried like every read.
-- @tparam table params `ProjectName`, `DatasetName`, `URI` (all required)
-- @tparam[opt] table opts call options, as for `call`
-- @return the response `{ RequestId, Binding = { State, Phase, Reason, ... } }`,
--   or nil, err (`ResourceNotFound` when there is no such binding)
-- @usage local res, err = client:get_binding{ ProjectName = "p", DatasetName = "d", URI = "oss://bucket/" }
--   if res then print(res.Binding.State) end
---@param params imm.BindingParams
---@param opts imm.CallOptions|nil
---@return imm.GetBindingResponse|nil res
---@return imm.Error|nil err
---@return imm.CallMeta|nil meta with opts.meta = true
function Client:get_binding(params, opts)
  local res, err, meta = Client._invoke(self, "GetBinding", "get_binding", params, opts)
  return res, err, meta
end

--- Stops a binding (StopBinding): its state becomes `Stopped`, with the
-- reason given. Not retried blindly (see `create_binding`).
-- @tparam table params `ProjectName`, `DatasetName`, `URI` (required), `Reason`
-- @tparam[opt] table opts call options, as for `call`
-- @return `{ RequestId }`, or nil, err
-- @usage assert(client:stop_binding{ ProjectName = "p", DatasetName = "d", URI = "oss://bucket/",
--   Reason = "maintenance" })
---@param params imm.StopBindingParams
---@return { RequestId: string }|nil res
---@return imm.Error|nil err
---@return imm.CallMeta|nil meta with opts.meta = true
function Client:stop_binding(params, opts)
  local res, err, meta = Client._invoke(self, "StopBinding", "stop_binding", params, opts)
  return res, err, meta
end

--- Resumes a stopped binding (ResumeBinding). Not retried blindly.
-- @tparam table params `ProjectName`, `DatasetName`, `URI` (all required)
-- @tparam[opt] table opts call options, as for `call`
-- @return `{ RequestId }`, or nil, err
-- @usage assert(client:resume_binding{ ProjectName = "p", DatasetName = "d", URI = "oss://bucket/" })
---@param params imm.BindingParams
---@return { RequestId: string }|nil res
---@return imm.Error|nil err
---@return imm.CallMeta|nil meta with opts.meta = true
function Client:resume_binding(params, opts)
  local res, err, meta = Client._invoke(self, "ResumeBinding", "resume_binding", params, opts)
  return res, err, meta
end

--- Deletes a binding (DeleteBinding). Not retried blindly: when a call
-- fails after the request may have arrived, the binding may be gone
-- already, and a second call then returns `ResourceNotFound` in `err.code`.
-- @tparam table params `ProjectName`, `DatasetName`, `URI` (all required)
-- @tparam[opt] table opts call options, as for `call`
-- @return `{ RequestId }`, or nil, err
-- @usage assert(client:delete_binding{ ProjectName = "p", DatasetName = "d", URI = "oss://bucket/" })
---@param params imm.BindingParams
---@return { RequestId: string }|nil res
---@return imm.Error|nil err
---@return imm.CallMeta|nil meta with opts.meta = true
function Client:delete_binding(params, opts)
  local res, err, meta = Client._invoke(self, "DeleteBinding", "delete_binding", params, opts)
  return res, err, meta
end

--- Polls `get_binding` until the binding is in `opts.state`. Waits between
-- polls with the transport's sleep (`ngx.sleep` inside nginx), so a worker
-- is never blocked. A case of the general waiter (`client:wait`).
-- @tparam table params `ProjectName`, `DatasetName`, `URI`
-- @tparam[opt] table opts `state` (default "Running"), `timeout` (seconds,
--   default 300), `interval` (seconds between polls, default 5), `call`
--   (call options for each poll: docs/api.md, "Call options")
-- @return the binding once in that state; or nil, err: `WaitTimeout` when
--   the time ran out, `BindingFailed` or `BindingDeleted` when the binding
--   reached that terminal state instead (both with `err.binding`, the
--   binding as last seen), or the error of a failed `get_binding`
-- @usage local b, err = client:wait_binding(key, { state = "Running", timeout = 60, interval = 2 })
---@param params imm.BindingParams
---@param opts { state: string|nil, timeout: number|nil, interval: number|nil, call: imm.CallOptions|nil }|nil
---@return imm.Binding|nil binding
---@return imm.Error|nil err
function Client:wait_binding(params, opts)
  must_be_client(self, "wait_binding")
  local b, err = waiter.wait_binding(self, params, opts)
  return b, err
end

-- Waiting for anything: tasks and the general waiter ----------------------

--- Calls `action` until its response is what `opts.done` or `opts.match`
-- asks for, sleeping between polls through the transport (`ngx.sleep`
-- inside nginx, a timer inside an imm task): a general waiter. Each poll is
-- a call with the client's rules, so a retryable failure is retried (and
-- held to the client's `deadline`) before it ends the wait.
-- @tparam string action e.g. "GetTask"
-- @tparam table params the action's parameters
-- @tparam table opts `done` (a function of the response, true when done) or
--   `match` (a table of field = value, dotted paths allowed: `{ ["Binding.State"] = "Running" }`);
--   `fail` (the same forms: a terminal failure), `interval` (seconds, default 5),
--   `backoff` (factor, default 1), `max_interval` (the backoff's cap), `timeout`
--   (default 300), `call` (call options for each poll)
-- @return the response that was done; or nil, err: `WaitTimeout` (err.response,
--   the last response), `WaitFailed` (what `fail` matched, err.response),
--   `Cancelled`, or the error of a poll that failed after its retries
-- @usage local res, err = client:wait("GetTask", { ProjectName = "p", TaskType = "MediaConvert",
--   TaskId = id }, { match = { Status = "Succeeded" }, fail = { Status = "Failed" }, timeout = 600 })
---@param action string
---@param params table|nil
---@param opts table
---@return table|nil res
---@return imm.Error|nil err
function Client:wait(action, params, opts)
  must_be_client(self, "wait")
  local res, err = waiter.wait(self, action, params, opts)
  return res, err
end

--- Polls GetTask until the task's Status is terminal (docs/tasks.md).
-- @tparam table params `ProjectName`, `TaskType`, `TaskId`, as GetTask takes them
-- @tparam[opt] table opts `interval` (seconds, default 1), `backoff` (default
--   1.5), `max_interval` (default 30), `timeout` (default 900), `call` (call
--   options for each poll), `notifications` (inside nginx: a lua_shared_dict
--   the push receiver of docs/notifications.md writes to)
-- @return GetTask's response once the task Succeeded; or nil, err: `TaskFailed`
--   (err.task_code, err.task_message, err.task), `WaitTimeout` (err.task, the
--   last response, err.state its Status), `Cancelled`, or a poll's error
-- @usage local task, err = client:wait_task{ ProjectName = "p", TaskType = "MediaConvert", TaskId = id }
---@param params { ProjectName: string, TaskType: string, TaskId: string }
---@param opts table|nil
---@return imm.GetTaskResponse|nil res
---@return imm.Error|nil err
function Client:wait_task(params, opts)
  must_be_client(self, "wait_task")
  local res, err = waiter.wait_task(self, params, opts)
  return res, err
end

-- Projects and datasets ----------------------------------------------------

--- Lists one page of projects (ListProjects).
-- @tparam[opt] table params `MaxResults` (0..200), `NextToken`, `Prefix`
-- @tparam[opt] table opts call options, as for `call`
-- @return `{ RequestId, NextToken, Projects = { ... } }`, or nil, err
-- @usage local res, err = client:list_projects{ Prefix = "media-" }
---@param params imm.ListProjectsParams|nil
---@return imm.ListProjectsResponse|nil res
---@return imm.Error|nil err
---@return imm.CallMeta|nil meta with opts.meta = true
function Client:list_projects(params, opts)
  local res, err, meta = Client._invoke(self, "ListProjects", "list_projects", params, opts)
  return res, err, meta
end

--- Iterates over projects one by one, following NextToken.
-- @return iterator yielding projects; on failure it yields `false, err` once
-- @usage for p, err in client:projects() do if not p then error(err) end print(p.ProjectName) end
---@param params imm.ListProjectsParams|nil
---@param opts imm.PagerOptions|nil
---@return fun(): (imm.Project|false|nil), imm.Error|nil
function Client:projects(params, opts)
  must_be_client(self, "projects")
  return pager.items(self, "ListProjects", params, opts)
end

--- Lists one page of a project's datasets (ListDatasets).
-- @tparam table params `ProjectName` (required), `MaxResults` (0..200), `NextToken`, `Prefix`
-- @tparam[opt] table opts call options, as for `call`
-- @return `{ RequestId, NextToken, Datasets = { ... } }`, or nil, err
-- @usage local res, err = client:list_datasets{ ProjectName = "immtest" }
---@param params imm.ListDatasetsParams
---@return imm.ListDatasetsResponse|nil res
---@return imm.Error|nil err
---@return imm.CallMeta|nil meta with opts.meta = true
function Client:list_datasets(params, opts)
  local res, err, meta = Client._invoke(self, "ListDatasets", "list_datasets", params, opts)
  return res, err, meta
end

--- Iterates over a project's datasets one by one, following NextToken.
-- @return iterator yielding datasets; on failure it yields `false, err` once
-- @usage for d, err in client:datasets{ ProjectName = "immtest" } do ... end
---@param params imm.ListDatasetsParams
---@param opts imm.PagerOptions|nil
---@return fun(): (imm.Dataset|false|nil), imm.Error|nil
function Client:datasets(params, opts)
  must_be_client(self, "datasets")
  return pager.items(self, "ListDatasets", params, opts)
end

-- Every other action of the schema, from imm.actions (generated), which
-- makes them on the first read of a name it lacks (a client's first call);
-- the methods above keep their own documentation.
setmetatable(Client, { __index = actions })

--- Releases the connection. The client must not be used afterwards.
function Client:close()
  if self.transport and self.transport.close then self.transport:close() end
end

Client._VERSION = VERSION
return Client
