--- The libcurl transport: reused easy handles, so keep-alive and TLS
-- sessions carry over between calls. Used outside nginx.
--
-- Blocking by default. With `async = true`, a request made inside an imm
-- task (`imm.spawn`) goes on the shared multi handle and the task yields
-- until the reply is in (see `imm.async`); outside a task it blocks as
-- usual. Both paths are the same C code: start, transfer, finish.
--
-- Transport interface (what any transport implements):
--   `t:request{ method, url, headers = { name = value }, body, fresh, timeout }`
--     (`fresh`: send on a new connection, never on a reused one, so that
--     nothing sends the request a second time by itself; `timeout`:
--     seconds this attempt may take at most, below the transport's own)
--     -> `{ status = n, headers = { lower-name = value }, body = "..." }`
--     or `nil, err` (an imm error: ConnectionFailed, Timeout, TLSError, ...);
--     `err.sent == false` says no byte of the request reached a connection
--     (DNS, connect or TLS failed), so the service cannot have seen it and
--     even a mutation may be sent again. Any other value means "maybe seen".
--     With `lazy_body = true` (the client's calls; a transport may ignore
--     it) the reply's `body` and `headers` are read from the handle when
--     first indexed, which must be before the transport's next request, and
--     `reply:decode_body(null, array_mt, big_integers)` decodes the body
--     where libcurl wrote it (see `imm.core`'s `h:decode`).
--   `t:sleep(seconds)` waits between retries
--   `t:close()` releases the connection; safe to call twice
-- @module imm.transport.curl

local core = require "imm.core"
local errors = require "imm.errors"
local async = require("imm.lazy")("imm.async")  -- only async clients use it
local proxy = require("imm.lazy")("imm.proxy")  -- a client without a proxy option does without it
local scrub_error = require("imm.credentials.provider").scrub_error
local setmetatable, find = setmetatable, string.find
local concat, sub = table.concat, string.sub

local _M = { name = "curl" }
_M.__index = _M

-- The C core keeps the CA file it has read (src/imm_castore.c, for the
-- process) and libcurl its idle connections and TLS sessions (in the multi
-- handle, which every client of a lua_State shares), both by the CA file's
-- path as a string, so a file whose contents were replaced would stay
-- trusted as first read, by every later client of the state. Each content of
-- a path gets its own spelling of the path: the same content, the same
-- spelling, so clients still share the read file and the connections; new
-- content, a spelling not seen before, so the file is read again and no
-- connection verified against another content is reused.
-- [path] = { n = spellings handed out, [sha-256 of the content] = spelling }
local ca_spellings = {}

-- The n-th other spelling of path: n in binary, most significant bit first,
-- "./" for a 1 and "/" for a 0, inserted after a leading "/". Each spelling
-- names the same file, they all differ, and they grow by two bytes when n
-- doubles. The first is "./" (never "//", which POSIX leaves undefined).
local function spelling(path, n)
  local code, i = {}, 0
  while n > 0 do
    local bit = n % 2
    i = i + 1
    code[i] = bit == 1 and "./" or "/"
    n = (n - bit) / 2
  end
  local msb_first = {}
  for j = i, 1, -1 do msb_first[#msb_first + 1] = code[j] end
  if sub(path, 1, 1) == "/" then return "/" .. concat(msb_first) .. sub(path, 2) end
  return concat(msb_first) .. path
end

-- The spelling of path that stands for its content as it is now.
local function ca_key(path)
  -- read in C, in blocks; unreadable: the handshake reports it (TLSError)
  local digest = core.hash_file("sha256", path)
  if not digest then return path end
  local seen = ca_spellings[path]
  if not seen then
    seen = { n = 0, [digest] = path }
    ca_spellings[path] = seen
  end
  if not seen[digest] then
    seen.n = seen.n + 1
    seen[digest] = spelling(path, seen.n)
  end
  return seen[digest]
end

-- core.http's proxy options from the transport's: `proxy` (parsed by
-- imm.proxy, or false) and `no_proxy` (true, or a list of hosts). An
-- explicit proxy comes with its own bypass list, so the environment's
-- no_proxy is ignored then ("" is libcurl's "no host").
local function proxy_options(opts)
  local p, np = opts.proxy, opts.no_proxy
  if type(np) == "table" then np = concat(np, ",") end
  if type(p) == "table" then
    return p.url, np or ""
  end
  return p, np
end

-- A reply left in the handle (h:request's keep): body and headers are made
-- Lua values only when read, and a body that is only decoded never is.
local function decode_body(r, null, arrays, big)
  return r.handle:decode(null, arrays, big, r.seq)
end

local Reply = {
  __index = function(r, k)
    if k == "body" or k == "headers" then
      local h = rawget(r, "handle")
      local v = h[k](h, rawget(r, "seq"))  -- h:body(seq) or h:headers(seq)
      r[k] = v
      return v
    elseif k == "decode_body" then
      return decode_body
    end
  end,
}

local function open_handle(o)
  local h, code, msg = core.http(o)
  if not h then return nil, errors.new(code, msg, { retryable = false }) end
  return h
end

--- Opens a transport.
-- @tparam table opts `connect_timeout`, `timeout` (seconds), `ca_file`,
--   `insecure`, `user_agent`, `max_response_bytes`, `async`, `proxy` (from
--   `imm.proxy.options`: a parsed URL, or false for none; nil: the
--   environment's `http_proxy` and friends), `no_proxy` (true: never use a
--   proxy, whatever the environment says; or a list of hosts that bypass it)
-- @return transport, or nil, err
function _M.new(opts)
  local o = {
    connect_timeout = opts.connect_timeout,
    timeout = opts.timeout,
    ca_file = opts.ca_file and not opts.insecure and ca_key(opts.ca_file) or opts.ca_file,
    insecure = opts.insecure,
    user_agent = opts.user_agent,
    max_response_bytes = opts.max_response_bytes,
    -- every client's blocking calls share one connection cache per
    -- lua_State (imm.core's shared multi), and the CA file read once per
    -- process: a new client pays neither the handshake nor the read again
    shared = true,
  }
  o.proxy, o.no_proxy = proxy_options(opts)
  local h, err = open_handle(o)
  if not h then return nil, err end
  -- async: idle handles for concurrent tasks sharing this client
  return setmetatable({ handle = h, async = opts.async and true or false, options = o, idle = {},
    secrets = opts.proxy and proxy.secrets(opts.proxy) or {} }, _M)
end

-- One handle per concurrent transfer; they go back to the idle list after.
function _M:_take()
  local idle = self.idle
  local n = #idle
  if n > 0 then
    local h = idle[n]
    idle[n] = nil
    return h
  end
  return open_handle(self.options)
end

--- Sends one request.
-- @tparam table req `{ method, url, headers = { name = value }, body, fresh, timeout }`
-- @return `{ status, headers, body }`, or nil, err
function _M:request(req)
  -- closed: refused in both modes (an async request would open a new handle)
  if self.closed then
    return nil, errors.new("InvalidState", "the client is closed", { retryable = false })
  end
  -- the C core makes the "name: value" lines from the table itself
  local lines = req.headers
  -- the attempt's cap; one already spent still ends the attempt at once
  -- (0 would mean "no cap" to the C core)
  local cap = req.timeout
  if type(cap) == "number" and (cap ~= cap or cap <= 0) then cap = 0.001 end
  local status, body, headers, st, sent
  if self.async and async.current() then
    local h, err = self:_take()
    if not h then return nil, err end
    status, body, headers, st, sent = async.transfer(h, req.method, req.url, lines, req.body, req.fresh, cap)
    if self.closed then h:close() else self.idle[#self.idle + 1] = h end
  elseif req.lazy_body then
    local h = self.handle
    status, body, headers, st, sent = h:request(req.method, req.url, lines, req.body, req.fresh, cap, true)
    if status and status ~= 407 then
      return setmetatable({ status = status, handle = h, seq = body }, Reply)
    elseif status then
      headers = h:headers(body)
    end
  else
    status, body, headers, st, sent = self.handle:request(req.method, req.url, lines, req.body, req.fresh, cap)
  end
  if not status then
    -- libcurl reports a malformed chunked body as a receive error; it is a
    -- broken reply, not a lost one, and sending again would not mend it
    if body == "ConnectionFailed" and find(headers or "", "chunked-encoding", 1, true) then
      return nil, errors.new("InvalidResponse", headers, { status = st, sent = sent, retryable = false })
    end
    -- libcurl's messages name the proxy's host, not its password; scrubbed
    -- all the same, as the service's own errors are
    return nil, scrub_error(errors.new(body, headers, { status = st, sent = sent }), self.secrets, 2)
  end
  -- IMM never asks for proxy credentials: a 407 is a forwarding proxy's
  if status == 407 then return nil, proxy.auth_failed(headers) end
  return { status = status, body = body, headers = headers }
end

--- Waits between retries: a timer inside an async task, ngx.sleep if
-- someone forces curl inside nginx, else a plain sleep.
function _M:sleep(seconds)
  if self.async and async.current() then return async.sleep(seconds) end
  require("imm.transport").sleep(seconds)
end

--- Closes the connections and frees the handles; safe to call twice.
-- Transfers still in flight finish, then their handles close.
function _M:close()
  self.closed = true
  self.handle:close()
  for i = #self.idle, 1, -1 do
    self.idle[i]:close()
    self.idle[i] = nil
  end
end

return _M
