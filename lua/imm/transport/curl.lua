--- The libcurl transport: one reused easy handle per client, so keep-alive
-- and TLS sessions carry over between calls. Blocking; used outside nginx.
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
local setmetatable, pairs = setmetatable, pairs

local _M = { name = "curl" }
_M.__index = _M

--- Opens a transport.
-- @tparam table opts `connect_timeout`, `timeout` (seconds), `ca_file`,
--   `insecure`, `user_agent`, `max_response_bytes`
-- @return transport, or nil, err
function _M.new(opts)
  local h, code, msg = core.http {
    connect_timeout = opts.connect_timeout,
    timeout = opts.timeout,
    ca_file = opts.ca_file,
    insecure = opts.insecure,
    user_agent = opts.user_agent,
    max_response_bytes = opts.max_response_bytes,
  }
  if not h then
    return nil, errors.new(code, msg, { retryable = false })
  end
  return setmetatable({ handle = h }, _M)
end

--- Sends one request on the reused handle.
-- @tparam table req `{ method, url, headers = { name = value }, body, fresh }`
-- @return `{ status, headers, body }`, or nil, err
function _M:request(req)
  local lines, n = {}, 0
  for k, v in pairs(req.headers) do
    n = n + 1
    lines[n] = k .. ": " .. v
  end
  local status, body, headers, st, sent = self.handle:request(req.method, req.url, lines, req.body, req.fresh)
  if not status then
    return nil, errors.new(body, headers, { status = st, sent = sent })
  end
  return { status = status, body = body, headers = headers }
end

-- Blocking outside nginx; ngx.sleep if someone forces curl inside nginx.
function _M.sleep(_, seconds)
  require("imm.transport").sleep(seconds)
end

--- Closes the connection and frees the handle; safe to call twice.
function _M:close()
  self.handle:close()
end

return _M
