--- The libcurl transport: reused easy handles, so keep-alive and TLS
-- sessions carry over between calls. Used outside nginx.
--
-- Blocking by default. With `async = true`, a request made inside an imm
-- task (`imm.spawn`) goes on the shared multi handle and the task yields
-- until the reply is in (see `imm.async`); outside a task it blocks as
-- usual. Both paths are the same C code: start, transfer, finish.
--
-- Transport interface (what any transport implements):
--   `t:request{ method, url, headers = { name = value }, body, fresh }`
--     (`fresh`: send on a new connection, never on a reused one, so that
--     nothing sends the request a second time by itself)
--     -> `{ status = n, headers = { lower-name = value }, body = "..." }`
--     or `nil, err` (an imm error: ConnectionFailed, Timeout, TLSError, ...);
--     `err.sent == false` says no byte of the request reached a connection
--     (DNS, connect or TLS failed), so the service cannot have seen it and
--     even a mutation may be sent again. Any other value means "maybe seen".
--   `t:sleep(seconds)` waits between retries
--   `t:close()` releases the connection; safe to call twice
-- @module imm.transport.curl

local core = require "imm.core"
local errors = require "imm.errors"
local async = require "imm.async"
local setmetatable, pairs = setmetatable, pairs

local _M = { name = "curl" }
_M.__index = _M

local function open_handle(o)
  local h, code, msg = core.http(o)
  if not h then return nil, errors.new(code, msg, { retryable = false }) end
  return h
end

--- Opens a transport.
-- @tparam table opts `connect_timeout`, `timeout` (seconds), `ca_file`,
--   `insecure`, `user_agent`, `max_response_bytes`, `async`
-- @return transport, or nil, err
function _M.new(opts)
  local o = {
    connect_timeout = opts.connect_timeout,
    timeout = opts.timeout,
    ca_file = opts.ca_file,
    insecure = opts.insecure,
    user_agent = opts.user_agent,
    max_response_bytes = opts.max_response_bytes,
    -- every client's blocking calls share one connection cache and parsed
    -- CA store per lua_State (imm.core's shared multi): a new client pays
    -- neither the handshake nor the CA parse again
    shared = true,
  }
  local h, err = open_handle(o)
  if not h then return nil, err end
  -- async: idle handles for concurrent tasks sharing this client
  return setmetatable({ handle = h, async = opts.async and true or false, options = o, idle = {} }, _M)
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
-- @tparam table req `{ method, url, headers = { name = value }, body, fresh }`
-- @return `{ status, headers, body }`, or nil, err
function _M:request(req)
  local lines, n = {}, 0
  for k, v in pairs(req.headers) do
    n = n + 1
    lines[n] = k .. ": " .. v
  end
  local status, body, headers, st, sent
  if self.async and async.current() then
    local h, err = self:_take()
    if not h then return nil, err end
    status, body, headers, st, sent = async.transfer(h, req.method, req.url, lines, req.body, req.fresh)
    if self.closed then h:close() else self.idle[#self.idle + 1] = h end
  else
    status, body, headers, st, sent = self.handle:request(req.method, req.url, lines, req.body, req.fresh)
  end
  if not status then
    return nil, errors.new(body, headers, { status = st, sent = sent })
  end
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
