--- An in-process stub for tests, in the manner of botocore's Stubber: the
-- replies of a client's calls come from a queue, with no socket at all.
--
-- The stub takes the place of the client's transport, so everything else
-- runs as in production: the parameters are validated and encoded, the
-- request is signed, failures are retried (the stub's sleeps are skipped
-- and recorded, see `sleeps`), and the queued reply is decoded and checked
-- by the client's own code. Typed methods, `call`, the pagers, parallel
-- listings, the waiters, async tasks (`imm.spawn`) and clients inside nginx
-- all go through it.
--
-- Each request takes a queued entry: the entry for its action (and, when
-- the entry has `expected_params`, for exactly those parameters). With
-- `ordered` (the default) it must be the next entry of the queue, as in
-- botocore; with `ordered = false`, it is the earliest queued entry that
-- matches, for code whose calls run in an order the test does not fix (a
-- parallel listing, several tasks). A request that finds no entry fails
-- with `StubMismatch` (not retried); the stub keeps that error too
-- (`errors`, and `assert_no_pending_responses` raises with it), since the
-- code under test may swallow it.
--
-- Misuse while setting up (an unknown action or response field, an
-- expected parameter the action does not have) raises at the caller's
-- line: it is a mistake in the test.
-- @module imm.stub
-- @usage
-- local stubber = require "imm.stub"
-- local client = assert(imm.new { region = "cn-hangzhou", access_key_id = "id", access_key_secret = "secret" })
-- local stub = stubber.new(client)
-- stub:add_response("GetBinding", { RequestId = "r1", Binding = { State = "Running" } },
--   { ProjectName = "p", DatasetName = "d", URI = "oss://bucket/" })
-- local res = assert(client:get_binding { ProjectName = "p", DatasetName = "d", URI = "oss://bucket/" })
-- stub:assert_no_pending_responses()

local type, pairs, ipairs, tostring, tonumber, error, setmetatable, getmetatable =
  type, pairs, ipairs, tostring, tonumber, error, setmetatable, getmetatable
local format, find, gsub, sub, match, char, concat, sort =
  string.format, string.find, string.gsub, string.sub, string.match, string.char, table.concat, table.sort
local floor = math.floor
local core = require "imm.core"
local errors = require "imm.errors"
local operations = require "imm.operations"
local async = require "imm.async"

local json_encode, json_decode, number_text = core.json_encode, core.json_decode, core.number_text

local _M = {}

--- Matches any value in `expected_params` (the parameter must be there).
-- @usage stub:add_response("ListBindings", page, { ProjectName = "p", MaxResults = stubber.ANY })
_M.ANY = setmetatable({}, { __tostring = function() return "imm.stub.ANY" end })
local ANY = _M.ANY

-- JSON null in a decoded parameter
local NULL = setmetatable({}, { __tostring = function() return "null" end })

-- The common parameters of a V2 request: the signature's, not the action's.
local V2_COMMON = { Action = true, Version = true, Format = true, AccessKeyId = true, SignatureMethod = true,
  SignatureVersion = true, SignatureNonce = true, Timestamp = true, SecurityToken = true, Signature = true }

local OPTIONS = { ordered = true, strict = true, real_sleep = true }
local ERROR_OPTIONS = { request_id = true, host_id = true, recommend = true, retry_after = true, headers = true,
  expected_params = true, sent = true }

local Stub = {}
Stub.__index = Stub

-- The transport the client gets while the stub is active.
local Transport = {}
Transport.__index = Transport

-- Raises a setup mistake at the test's line (level 3: the caller of the
-- stub's method).
local function misuse(msg, level)
  error("imm.stub: " .. msg, level or 3)
end

local union_keys

-- A value in a message, as Lua source, cut short.
local function render(v, depth)
  if v == ANY or v == NULL then return tostring(v) end
  local t = type(v)
  if t == "string" then
    if #v > 60 then v = sub(v, 1, 60) .. "..." end
    return format("%q", v)
  end
  if t == "number" then return number_text(v) or tostring(v) end
  if t ~= "table" then return tostring(v) end
  if depth > 3 then return "{...}" end
  local parts = {}
  for _, k in ipairs(union_keys(v, {})) do
    local key = type(k) == "string" and match(k, "^[%a_][%w_]*$") and k or ("[" .. render(k, depth + 1) .. "]")
    parts[#parts + 1] = key .. " = " .. render(v[k], depth + 1)
  end
  return "{ " .. concat(parts, ", ") .. " }"
end

local function show(v)
  local s = render(v, 0)
  if #s > 200 then s = sub(s, 1, 200) .. "..." end
  return s
end

local function key_path(path, k)
  if type(k) == "number" then return format("%s[%s]", path, show(k)) end
  return path == "" and tostring(k) or (path .. "." .. tostring(k))
end

-- Keys of two tables in a stable order: numbers by value, then strings.
function union_keys(a, b)
  local keys, seen = {}, {}
  for _, t in ipairs { a, b } do
    for k in pairs(t) do
      if not seen[k] then
        seen[k] = true
        keys[#keys + 1] = k
      end
    end
  end
  sort(keys, function(x, y)
    local tx, ty = type(x), type(y)
    if tx ~= ty then return tx < ty end
    if tx == "number" or tx == "string" then return x < y end
    return tostring(x) < tostring(y)
  end)
  return keys
end

-- The first difference between what a test expected and what was sent,
-- as text, or nil when they agree. Numbers compare by value, so 50 and
-- 50.0 agree.
local function difference(want, got, path)
  if want == ANY then return nil end
  if type(want) == "table" and type(got) == "table" then
    for _, k in ipairs(union_keys(want, got)) do
      local w, g = want[k], got[k]
      local p = key_path(path, k)
      if w == nil then return format("%s was sent (%s) but not expected", p, show(g)) end
      if g == nil then return format("%s was expected (%s) but not sent", p, show(w)) end
      local d = difference(w, g, p)
      if d then return d end
    end
    return nil
  end
  if want == got then return nil end
  return format("%s: expected %s, got %s", path, show(want), show(got))
end

local function unpercent(s)
  return (gsub(s, "%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

-- name=value&... into t
local function read_pairs(s, t)
  for part in string.gmatch(s or "", "[^&]+") do
    local k, v = match(part, "^([^=]*)=?(.*)$")
    t[unpercent(k)] = unpercent(v)
  end
  return t
end

-- A parameter's text as the value a caller passed: by the action's schema,
-- or, for an action without one, by the type of the expected value.
local function wire_value(spec, text, want)
  local kind
  if spec then
    kind = spec.json and "json" or spec.type
  else
    kind = type(want) == "table" and want ~= ANY and "json" or type(want)
  end
  if kind == "json" then
    local v = json_decode(text, NULL)
    if v ~= nil then return v end
  elseif kind == "number" then
    local n = tonumber(text)
    if n then return n end
  elseif kind == "boolean" then
    if text == "true" then return true end
    if text == "false" then return false end
  end
  return text
end

-- The action of a signed request and its parameters as texts.
local function read_request(req)
  local headers = req.headers or {}
  local q = read_pairs(match(req.url or "", "%?(.*)$"), {})
  local action = headers["x-acs-action"]
  local v2 = action == nil
  if v2 then action = q.Action end
  local raw = {}
  for k, v in pairs(q) do
    if not (v2 and V2_COMMON[k]) then raw[k] = v end
  end
  local ctype = headers["content-type"]
  if ctype and find(ctype, "x-www-form-urlencoded", 1, true) then read_pairs(req.body, raw) end
  return action, raw
end

-- The parameters as the caller passed them: JSON texts decoded, numbers
-- and booleans read back (for an action without a schema, as `expected`
-- has them).
local function read_params(def, raw, expected)
  local params = {}
  for k, v in pairs(raw) do
    params[k] = wire_value(def and def.params[k], v, type(expected) == "table" and expected[k] or nil)
  end
  return params
end

local function copy(t)
  if type(t) ~= "table" or t == ANY then return t end
  local c = {}
  for k, v in pairs(t) do c[k] = copy(v) end
  return c
end

-- Does entry e match this request? Returns true, or false and what differs.
local function matches(e, action, def, raw)
  if e.action ~= action then
    return false, format("expected a call of %s, got %s", e.action, tostring(action))
  end
  if e.expected == nil then return true end
  local d = difference(e.expected, read_params(def, raw, e.expected), "")
  if d then return false, format("%s: parameters differ from expected_params: %s", action, d) end
  return true
end

local function describe_entry(e)
  local s = e.action .. (e.kind == "error" and format(" (error %s)", e.code) or " (response)")
  if e.expected ~= nil then s = s .. " expecting " .. show(e.expected) end
  return s
end

local function mismatch(self, msg)
  local err = errors.new("StubMismatch", msg, { retryable = false, sent = false })
  self.errs[#self.errs + 1] = err
  return nil, err
end

-- The queued entry for this request (removed from the queue), or nil and
-- what is wrong.
local function take(self, action, def, raw)
  local q = self.queue
  if #q == 0 then
    return nil, format("%s was called, but no reply is queued", tostring(action))
  end
  if self.ordered then
    local ok, why = matches(q[1], action, def, raw)
    if not ok then
      if q[1].action ~= action then why = why .. " (the next queued reply: " .. describe_entry(q[1]) .. ")" end
      return nil, why
    end
    return table.remove(q, 1)
  end
  local first_why
  for i = 1, #q do
    local ok, why = matches(q[i], action, def, raw)
    if ok then return table.remove(q, i) end
    if not first_why and q[i].action == action then first_why = why end
  end
  return nil, first_why or format("%s was called, but none of the %d queued replies is for it", tostring(action),
    #q)
end

--- Answers a request from the queue (the client calls it, as any transport's).
-- @tparam table req the transport request
-- @return `{ status, headers, body }`, or nil, err
function Transport:request(req)
  local stub = self.stub
  if self.closed then
    return nil, errors.new("InvalidState", "the client is closed", { retryable = false })
  end
  local o = stub.original
  if type(o) == "table" and o.name == "curl" and not o.async and async.current() then
    -- refused as Client:call refuses the client's own transport there: the
    -- code under test would stop every other task in production
    return nil, errors.new("InvalidConfiguration", "this client blocks, and it was called inside an imm task "
      .. "(imm.spawn): make the client with async = true", { retryable = false, sent = false })
  end
  local action, raw = read_request(req)
  local def = action and operations.actions[action]
  local calls = stub.log
  calls[#calls + 1] = { action = action, params = read_params(def, raw, nil) }
  local e, why = take(stub, action, def, raw)
  if not e then return mismatch(stub, why) end
  if e.kind == "error" and e.status == 0 then
    return nil, errors.new(e.code, e.message, { sent = e.sent })
  end
  return { status = e.status, headers = copy(e.headers), body = e.body }
end

--- Records a wait between retries or polls and returns at once (with
-- `real_sleep`, waits on the client's own transport).
function Transport:sleep(seconds)
  local s = self.stub
  s.slept[#s.slept + 1] = seconds
  if s.real_sleep then return s.original:sleep(seconds) end
end

--- Closes the client's own transport too: the client is closed.
function Transport:close()
  self.closed = true
  local o = self.stub.original
  if o and o.close then o:close() end
end

-- The action's definition, or nil for one outside the API description
-- (allowed with strict = false).
local function action_def(self, action)
  if type(action) ~= "string" or not match(action, "^[A-Za-z][A-Za-z0-9]*$") then
    misuse("the action must be an API action name such as \"ListBindings\", got " .. show(action), 4)
  end
  local def = operations.actions[action]
  if not def and self.strict then
    local hint = operations.suggest(action, operations.action_names())
    misuse(format("%s is not an action of the API description%s (strict = false stubs any action)", action,
      hint and format(" (did you mean %q?)", hint) or ""), 4)
  end
  return def
end

local function check_expected(action, def, expected)
  if expected == nil then return nil end
  if type(expected) ~= "table" then
    misuse(format("%s: expected_params must be a table, got %s", action, type(expected)), 4)
  end
  for k in pairs(expected) do
    if type(k) ~= "string" then
      misuse(format("%s: expected_params names must be strings, got %s", action, show(k)), 4)
    end
    if def and not def.params[k] then
      local hint = operations.suggest(k, def.params)
      misuse(format("%s has no parameter %q%s", action, k, hint and format(" (did you mean %q?)", hint) or ""), 4)
    end
  end
  return copy(expected)
end

local function field_list(def)
  local names = {}
  for i, f in ipairs(def.response) do names[i] = f end
  return concat(names, ", ")
end

--- Creates a stub for `client` and activates it: from now on the client's
-- requests are answered from the stub's queue.
-- @param client an imm client (`imm.new`): give it keys (any text), since
--   requests are still signed
-- @tparam[opt] table opts `ordered` (default true: each request takes the
--   next queued entry; false: the earliest entry that matches its action
--   and `expected_params`, for concurrent code), `strict` (default true: a
--   queued response may hold only the action's documented response fields,
--   and the action must be in the API description), `real_sleep` (default
--   false: waits between retries and polls are recorded and skipped; true:
--   they wait on the client's own transport)
-- @return the stub
-- @usage local stub = require("imm.stub").new(client, { ordered = false })
function _M.new(client, opts)
  local Client = require "imm.client"
  if getmetatable(client) ~= Client then misuse("new takes an imm client (imm.new)") end
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then misuse("the options must be a table, got " .. type(opts)) end
  local unknown = operations.unknown_key(opts, OPTIONS, "stub option")
  if unknown then misuse(unknown.message) end
  for k, v in pairs(opts) do
    if type(v) ~= "boolean" then misuse(format("stub option %s must be a boolean, got %s", k, type(v))) end
  end
  local self = setmetatable({
    client = client, queue = {}, errs = {}, log = {}, slept = {},
    ordered = opts.ordered ~= false, strict = opts.strict ~= false, real_sleep = opts.real_sleep == true,
  }, Stub)
  self.transport = setmetatable({ stub = self, name = "stub" }, Transport)
  self:activate()
  return self
end

--- Puts the stub in place of the client's transport (`new` does). Raises
-- when another stub is active on the client.
-- @return the stub
-- @usage stub:activate()
function Stub:activate()
  local client = self.client
  local t = client.transport
  if t == self.transport then return self end
  if getmetatable(t) == Transport then misuse("another stub is active on this client: deactivate it first") end
  self.original = t
  -- the async mode of the client's own transport, which the async-task
  -- helpers look at
  self.transport.async = type(t) == "table" and t.async or nil
  self.transport.closed = type(t) == "table" and t.closed or nil
  client.transport = self.transport
  return self
end

--- Gives the client its own transport back; the queue is kept.
-- @return the stub
-- @usage stub:deactivate()  -- the next call goes to the network again
function Stub:deactivate()
  if self.client.transport == self.transport then self.client.transport = self.original end
  return self
end

--- Queues a successful reply to one call of `action`.
-- @tparam string action e.g. "ListBindings"
-- @param response the decoded response, a table (or its JSON text); with
--   `strict`, only the action's response fields (`imm.api`)
-- @tparam[opt] table expected_params the parameters the call must send,
--   exactly (`ANY` for a value that may be anything); nil: any parameters
-- @return the stub (so that calls chain)
-- @usage stub:add_response("ListBindings", { RequestId = "r", Bindings = {}, NextToken = "t2" },
--   { ProjectName = "p", MaxResults = stubber.ANY, NextToken = "t1" })
function Stub:add_response(action, response, expected_params)
  local def = action_def(self, action)
  local body, decoded
  if type(response) == "string" then
    decoded = json_decode(response, NULL)
    if type(decoded) ~= "table" or decoded[1] ~= nil or not find(response, "^%s*{") then
      misuse(format("%s: a response given as text must be a JSON object", action), 3)
    end
    body = response
  elseif type(response) == "table" then
    decoded = response
  else
    misuse(format("%s: the response must be a table or its JSON text, got %s", action, type(response)), 3)
  end
  for k in pairs(decoded) do
    if type(k) ~= "string" then misuse(format("%s: response field names must be strings, got %s", action, show(k)),
      3) end
  end
  if self.strict and def and def.response then
    local known = {}
    for _, f in ipairs(def.response) do known[f] = true end
    -- the first unknown field in byte order, so the message is stable
    local bad
    for k in pairs(decoded) do
      if not known[k] and (bad == nil or k < bad) then bad = k end
    end
    if bad then
      local hint = operations.suggest(bad, known)
      misuse(format("%s has no response field %q%s; its fields: %s (strict = false allows unknown fields)",
        action, bad, hint and format(" (did you mean %q?)", hint) or "", field_list(def)), 3)
    end
  end
  if not body then
    -- the list field of a paging action is an array even when empty
    local shape = def and def.items and { fields = { [def.items] = { array = "any" } } } or nil
    local why
    body, why = json_encode(response, shape)
    if not body then misuse(format("%s: the response cannot be encoded as JSON: %s", action, tostring(why)), 3) end
  end
  local headers = { ["content-type"] = "application/json" }
  if type(decoded.RequestId) == "string" then headers["x-acs-request-id"] = decoded.RequestId end
  self.queue[#self.queue + 1] = { kind = "response", action = action, status = 200, body = body, headers = headers,
    expected = check_expected(action, def, expected_params) }
  return self
end

--- Queues a failure of one call of `action`: the service's error reply
-- (`{ RequestId, HostId, Code, Message, Recommend }` with an HTTP status),
-- which the client turns into `nil, err` and retries as it would the real
-- one; or, with status 0, a transport failure (no reply: `ConnectionFailed`,
-- `Timeout`, ...).
-- @tparam string action
-- @tparam string code e.g. "ResourceNotFound", "Throttling.User"
-- @tparam[opt] string message default: the code
-- @tparam[opt] number status the HTTP status, default 400; 0: no reply
-- @tparam[opt] table opts `request_id`, `host_id`, `recommend`,
--   `retry_after` (seconds, sent as `x-acs-retry-after`), `headers` (more
--   reply headers, lowercase names), `expected_params` (as for
--   `add_response`), `sent` (status 0: false says the request never left,
--   so even a mutation is retried)
-- @return the stub
-- @usage stub:add_error("GetBinding", "ResourceNotFound", "no such binding", 404)
-- @usage stub:add_error("ListBindings", "Throttling.User", "slow down", 429, { retry_after = 0.5 })
function Stub:add_error(action, code, message, status, opts)
  local def = action_def(self, action)
  if type(code) ~= "string" or code == "" then misuse(format("%s: the error code must be a string", action)) end
  if message ~= nil and type(message) ~= "string" then
    misuse(format("%s: the error message must be a string, got %s", action, type(message)))
  end
  message = message or code
  if status == nil then status = 400 end
  if type(status) ~= "number" or status ~= floor(status) or (status ~= 0 and (status < 100 or status > 599)) then
    misuse(format("%s: status must be an HTTP status (100-599) or 0, got %s", action, show(status)))
  end
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then misuse(format("%s: the error options must be a table", action)) end
  local unknown = operations.unknown_key(opts, ERROR_OPTIONS, "add_error option")
  if unknown then misuse(unknown.message) end
  local headers = { ["content-type"] = "application/json" }
  for k, v in pairs(opts.headers or {}) do
    if type(k) ~= "string" or type(v) ~= "string" then misuse("add_error headers must map strings to strings") end
    headers[string.lower(k)] = v
  end
  local ra = opts.retry_after
  if ra ~= nil then
    if type(ra) ~= "number" or ra ~= ra or ra < 0 or ra == math.huge then
      misuse("add_error retry_after must be a number of seconds")
    end
    headers["x-acs-retry-after"] = number_text(floor(ra * 1000 + 0.5))
  end
  for _, k in ipairs { "request_id", "host_id", "recommend" } do
    if opts[k] ~= nil and type(opts[k]) ~= "string" then misuse(format("add_error %s must be a string", k)) end
  end
  if opts.sent ~= nil and type(opts.sent) ~= "boolean" then misuse("add_error sent must be a boolean") end
  if opts.request_id then headers["x-acs-request-id"] = opts.request_id end
  local body = json_encode { RequestId = opts.request_id, HostId = opts.host_id, Code = code, Message = message,
    Recommend = opts.recommend }
  self.queue[#self.queue + 1] = { kind = "error", action = action, status = status, code = code, message = message,
    body = body, headers = headers, sent = opts.sent,
    expected = check_expected(action, def, opts.expected_params) }
  return self
end

--- The queued entries no call has taken yet, in queue order: each
-- `{ action, kind = "response"|"error", code (errors), expected_params }`.
-- Never raises.
-- @treturn table
-- @usage assert.equal(0, #stub:pending())
function Stub:pending()
  local list = {}
  for i, e in ipairs(self.queue) do
    list[i] = { action = e.action, kind = e.kind, code = e.code, expected_params = copy(e.expected) }
  end
  return list
end

--- The `StubMismatch` errors of requests that found no queued entry, in
-- the order they came (each an imm error value).
-- @treturn table
-- @usage assert.same({}, stub:errors())
function Stub:errors()
  local list = {}
  for i, e in ipairs(self.errs) do list[i] = e end
  return list
end

--- Every request the stub saw, in order: `{ action, params }`, the
-- parameters as the caller passed them (JSON texts decoded). Retries and
-- mismatched requests included; signatures and credentials never.
-- @treturn table
-- @usage assert.equal(3, #stub:calls())
function Stub:calls()
  return copy(self.log)
end

--- The waits the client asked for (seconds each), in order: backoffs
-- between retries and intervals between polls.
-- @treturn table
-- @usage assert.same({ 2, 2 }, stub:sleeps())
function Stub:sleeps()
  return copy(self.slept)
end

--- Raises (at the caller's line, so busted shows it) when a queued entry
-- was not used or a request found no entry; says which.
-- @usage after_each(function() stub:assert_no_pending_responses() end)
function Stub:assert_no_pending_responses()
  local q, errs = self.queue, self.errs
  if #q == 0 and #errs == 0 then return end
  local lines = {}
  if #q > 0 then
    lines[#lines + 1] = format("%d queued %s not used:", #q, #q == 1 and "reply was" or "replies were")
    for i, e in ipairs(q) do lines[#lines + 1] = format("  %d. %s", i, describe_entry(e)) end
  end
  if #errs > 0 then
    lines[#lines + 1] = format("%d %s no queued reply:", #errs, #errs == 1 and "request found" or "requests found")
    for i, e in ipairs(errs) do lines[#lines + 1] = format("  %d. %s", i, e.message) end
  end
  error("imm.stub: " .. concat(lines, "\n"), 2)
end

return _M
