--- The IMM client: options, signing, sending, decoding and retries for one
-- endpoint and one set of credentials.
--
-- Misuse that is a programming error (calling a method on something that is
-- not a client) raises; everything that can fail at run time returns
-- `nil, err` (see `imm.errors`).
-- @classmod imm.client

local type, pairs, tostring, setmetatable, format = type, pairs, tostring, setmetatable, string.format
local floor, min, find, sub, getmetatable = math.floor, math.min, string.find, string.sub, getmetatable
local io_open, os_time = io.open, os.time

local core = require "imm.core"
local errors = require "imm.errors"
local operations = require "imm.operations"
local endpoint = require "imm.endpoint"
local signer = require "imm.signer"
local decode = require "imm.decode"
local credentials = require "imm.credentials"
local scrub = require("imm.credentials.base").scrub
local transport = require "imm.transport"
local pager = require "imm.pager"
local response = require "imm.response"
local log = require "imm.log"

local VERSION = "0.1.0"

---@class imm.ClientOptions
---@field region string|nil e.g. "cn-hangzhou"
---@field endpoint string|nil "host", "host:port" or "http(s)://host[:port]"
---@field protocol "https"|"http"|nil
---@field network "public"|"vpc"|nil "vpc": imm-vpc.<region>.aliyuncs.com
---@field access_key_id string|nil
---@field access_key_secret string|nil
---@field security_token string|nil
---@field credentials table|nil a provider: get() -> { access_key_id, access_key_secret, security_token }
---@field signature_algorithm "ACS3-HMAC-SHA256"|"ACS3-HMAC-SM3"|"v2"|nil
---@field connect_timeout number|nil seconds, default 5
---@field timeout number|nil seconds, default 10
---@field max_retries integer|nil default 3
---@field deadline number|nil seconds for a call with its retries
---@field ca_file string|nil
---@field insecure boolean|nil
---@field user_agent string|nil
---@field max_response_bytes integer|nil default 64 MiB
---@field transport "curl"|"ngx"|table|function|nil
---@field decoder "imm"|"cjson"|function|nil
---@field debug boolean|function|nil

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
  transport = { string = true, table = true, ["function"] = true },
  decoder = { string = true, ["function"] = true },
  -- true (or IMM_DEBUG=1) prints each canonical request and string to sign,
  -- secrets redacted; a function receives the lines instead
  debug = { boolean = true, ["function"] = true },
  -- for deterministic tests: functions returning epoch seconds and a nonce
  clock = "function", nonce = "function",
}

local function check_options(opts)
  for k, v in pairs(opts) do
    local want = OPTIONS[k]
    if want == nil then
      local hint = type(k) == "string" and operations.suggest(k, OPTIONS)
      return nil, errors.invalid(format("unknown client option %q%s", tostring(k),
        hint and format(" (did you mean %q?)", hint) or ""))
    end
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

--- Creates a client. See the README for every option.
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
    self.credentials, err = credentials.static(opts)
    if not self.credentials then return nil, err end
  else
    self.credentials = credentials.default()
  end

  local connect_timeout, timeout
  connect_timeout, err = positive(opts, "connect_timeout", 5)
  if not connect_timeout then return nil, err end
  timeout, err = positive(opts, "timeout", 10)
  if not timeout then return nil, err end

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

  self.decode = decode.get(opts.decoder)
  if not self.decode then
    return nil, errors.invalid(format("unknown decoder %q (expected \"imm\", \"cjson\" or a function)",
      tostring(opts.decoder)))
  end
  self.clock = opts.clock or os_time
  self.nonce = opts.nonce or core.nonce
  -- seconds to add to our clock, learned from the service after a skew error
  self.clock_offset = 0
  local dbg = opts.debug
  if dbg == nil and os.getenv("IMM_DEBUG") == "1" then dbg = true end
  self.debug = log.debug_sink(dbg)

  self.transport, err = transport.open(opts.transport, {
    connect_timeout = connect_timeout, timeout = timeout,
    ca_file = opts.ca_file, insecure = opts.insecure,
    user_agent = ua, max_response_bytes = max_bytes,
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

-- Replaces every form of `secret` a debug line could hold with "***".
local function redact(line, secret)
  if not secret or secret == "" then return line end
  local once = core.percent_encode(secret)
  for _, form in ipairs { core.percent_encode(once), once, secret } do
    local i = 1
    while true do
      local a, b = find(line, form, i, true)
      if not a then break end
      line = sub(line, 1, a - 1) .. "***" .. sub(line, b + 1)
      i = a + 3
    end
  end
  return line
end

-- One signed exchange: sign afresh (new date and nonce), send, classify.
function Client:_attempt(action, query, creds, def)
  local ep = self.endpoint
  local signed, code, msg = signer.sign {
    algorithm = self.algorithm, method = "POST", path = "/", authority = ep.authority,
    action = action, version = operations.API_VERSION, query = query, body = "",
    date = self.clock() + self.clock_offset, nonce = self.nonce(),
    access_key_id = creds.access_key_id, access_key_secret = creds.access_key_secret,
    security_token = creds.security_token, debug = self.debug ~= nil,
  }
  if not signed then
    return nil, errors.new(code, msg, { retryable = false })
  end
  if self.debug then
    -- the secret never enters these strings; the token does, so it is masked
    local token = creds.security_token
    if signed.canonical_request then
      self.debug("canonical request:\n" .. redact(signed.canonical_request, token))
    end
    self.debug("string to sign:\n" .. redact(signed.string_to_sign, token))
  end
  local url = ep.base .. "/"
  if signed.query ~= "" then url = url .. "?" .. signed.query end

  local headers = signed.headers
  headers.accept = "application/json"
  local res, err = self.transport:request { method = "POST", url = url, headers = headers, body = "" }
  if not res then return nil, err end
  local v, perr = response.parse(res, self.decode, def)
  if not v and perr then
    -- SignatureDoesNotMatch echoes the string to sign; with V2 it holds the token
    perr.message = scrub(tostring(perr.message), { creds.access_key_secret, creds.security_token }, 2)
    if type(perr.recommend) == "string" then
      perr.recommend = scrub(perr.recommend, { creds.access_key_secret, creds.security_token }, 2)
    end
  end
  return v, perr
end

-- Codes by which the service says our timestamp is outside its window.
local SKEW_CODES = {
  ["InvalidTimeStamp.Expired"] = true, ["InvalidTimeStamp"] = true, ["RequestTimeTooSkewed"] = true,
}

--- Calls any IMM RPC action (API version 2020-09-30).
-- Parameters of known actions are validated against their schema; others
-- must be strings, numbers or booleans.
-- @tparam string action e.g. "ListBindings"
-- @tparam table params
-- @return the decoded response table, or nil, err
-- @usage local res, err = client:call("ListBindings", { ProjectName = "immtest" })
---@param action string
---@param params table|nil
---@return table|nil res
---@return imm.Error|nil err
function Client:call(action, params)
  if getmetatable(self) ~= Client then
    error("imm: call must be called as client:call(...)", 2)
  end
  local query, err = operations.validate(action, params)
  if not query then return nil, err end
  local def = operations.actions[action]

  local creds
  creds, err = self.credentials:get()
  if not creds then return nil, err end

  local started = self.deadline and core.monotonic()
  local attempt, resigned = 0, false
  while true do
    attempt = attempt + 1
    local res
    res, err = self:_attempt(action, query, creds, def)
    if res then return res end
    err.attempts = attempt
    if SKEW_CODES[err.code] and err.server_time and not resigned then
      -- Our clock is off: learn the offset from the reply's Date header,
      -- keep it for later calls, and sign once more at once.
      resigned = true
      self.clock_offset = err.server_time - self.clock()
    else
      if not err.retryable or attempt > self.max_retries then
        return nil, err
      end
      local delay = backoff(attempt, err)
      if started and core.monotonic() + delay - started > self.deadline then
        err.message = err.message .. format(" (deadline of %gs reached after %d attempts)", self.deadline, attempt)
        return nil, err
      end
      self.transport:sleep(delay)
    end
  end
end

--- Lists one page of bindings.
-- @tparam table params `ProjectName` (required), `DatasetName`, `MaxResults`
--   (0..200), `NextToken`, `Name`
-- @return `{ RequestId, NextToken, Bindings = { ... } }`, or nil, err
-- @usage local res, err = client:list_bindings{ ProjectName = "immtest", MaxResults = 50 }
---@param params imm.ListBindingsParams
---@return imm.ListBindingsResponse|nil res
---@return imm.Error|nil err
function Client:list_bindings(params)
  return self:call("ListBindings", params)
end

--- Iterates over pages of any NextToken action.
-- @tparam string action
-- @tparam table params
-- @tparam[opt] table opts `max_items`, `page_size`, `start_token`, `items`
-- @return iterator yielding page tables; on failure it yields `false, err` once
-- @usage for page, err in client:pages("ListBindings", { ProjectName = "p" }) do ... end
---@param action string
---@param params table|nil
---@param opts imm.PagerOptions|nil
---@return fun(): (table|false|nil), imm.Error|nil
function Client:pages(action, params, opts)
  return pager.pages(self, action, params, opts)
end

--- Iterates over bindings one by one, following NextToken.
-- @return iterator yielding bindings; on failure it yields `false, err` once
-- @usage for b, err in client:bindings{ ProjectName = "p" } do if not b then error(err) end end
---@param params imm.ListBindingsParams
---@param opts imm.PagerOptions|nil
---@return fun(): (imm.Binding|false|nil), imm.Error|nil
function Client:bindings(params, opts)
  return pager.items(self, "ListBindings", params, opts)
end

--- Every binding of every page, merged: `{ Bindings = { ... } }`.
-- @return table, or nil, err (err.next_token says where to resume)
---@param params imm.ListBindingsParams
---@param opts imm.PagerOptions|nil
---@return { Bindings: imm.Binding[] }|nil all
---@return imm.Error|nil err
function Client:all_bindings(params, opts)
  return pager.all(self, "ListBindings", params, opts)
end

--- Releases the connection. The client must not be used afterwards.
function Client:close()
  if self.transport and self.transport.close then self.transport:close() end
end

Client._VERSION = VERSION
return Client
