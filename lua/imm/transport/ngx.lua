--- The ngx_lua cosocket transport: non-blocking HTTP/1.1 inside nginx.
--
-- While a call waits on the network, the nginx worker serves other requests.
-- It implements the same interface as `imm.transport.curl`, with the same
-- request bytes and the same error codes, so the client above cannot tell
-- which transport carried a call. Signing and JSON decoding stay in the C
-- core; only bytes move here.
--
-- TLS trust inside nginx comes from `lua_ssl_trusted_certificate` in
-- nginx.conf (ngx_lua has no per-socket CA file), and verification is on
-- unless the client has `insecure = true`. Host names need a `resolver`
-- directive, as for any cosocket; their resolution is held to the
-- attempt's time (see `connect`).
-- @module imm.transport.ngx

local core = require "imm.core"
local errors = require "imm.errors"
local proxy = require "imm.proxy"
local scrub_error = require("imm.credentials.base").scrub_error

local ngx = ngx
local setmetatable, tonumber, tostring, pairs, type = setmetatable, tonumber, tostring, pairs, type
local concat, lower, find, match, format = table.concat, string.lower, string.find, string.match, string.format
local sub, byte = string.sub, string.byte
local floor, max, min = math.floor, math.max, math.min

local spawn, wait, kill
if type(ngx) == "table" and type(ngx.thread) == "table" then
  spawn, wait, kill = ngx.thread.spawn, ngx.thread.wait, ngx.thread.kill
end

local _M = { name = "ngx" }
_M.__index = _M

-- Phases in which ngx_lua allows cosockets (and ngx.sleep).
local COSOCKET_PHASES = {
  rewrite = true, access = true, content = true, timer = true,
  ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true, preread = true,
}

-- The pool keeps this many idle connections per host, scheme and mode in
-- each worker. ngx_lua's default of 30 suits one backend call per request;
-- a gateway that lists for many requests at once (or in parallel, see
-- imm.parallel) closes and reopens connections past it: at 200 concurrent
-- calls over HTTPS, 32 gave a p99 of 95-147 ms and 6,000 new connections per
-- 10 s, 256 gave 44-48 ms and none. Idle connections cost a socket and a
-- few KB each, and the service closes them after its own idle timeout.
local KEEPALIVE_MS, POOL_SIZE = 60000, 256

-- Caps on what a reply may make us hold besides its body: one status,
-- header or chunk-size line, and all header (and trailer) lines together.
-- Past them the reply is InvalidResponse, so a worker's memory stays within
-- max_response_bytes plus these and one read.
local LINE_MAX, HEADERS_MAX, READ_SIZE = 8192, 65536, 65536
_M.LINE_MAX, _M.HEADERS_MAX = LINE_MAX, HEADERS_MAX

--- Is the current nginx phase one where cosockets work? Returns the phase.
function _M.phase_ok()
  local phase = ngx.get_phase()
  return COSOCKET_PHASES[phase] == true, phase
end

-- An address needs no resolver: IPv4 dotted quads and IPv6 literals.
local function is_address(host)
  return find(host, "^%d+%.%d+%.%d+%.%d+$") ~= nil or find(host, ":", 1, true) ~= nil
end

local function nap(seconds) ngx.sleep(seconds) end  -- spawn takes only a Lua function

-- Connects within `ms`, name resolution included. ngx_lua resolves a host
-- name with nginx's resolver_timeout (30 s by default), not the socket's
-- timeouts, so a name is connected to from a light thread, raced against a
-- sleeping one; the loser is killed (the request stops waiting; nginx's own
-- query runs on to resolver_timeout). Every thread is waited for or killed:
-- ngx_lua hangs a coroutine of the caller's (a pager) that yields with a
-- finished thread not waited for. An address costs no thread; a connection
-- from the pool, or a name nginx has cached, costs one that ends at once.
-- Returns true, or nil and ngx_lua's error ("timeout" when the time ran out).
local function connect(sock, host, port, opts, ms)
  if is_address(host) then return sock:connect(host, port, opts) end
  local done = false
  local th = spawn(function()
    local ok, err = sock:connect(host, port, opts)
    done = true
    return ok, err
  end)
  if done then
    local _, cok, cerr = wait(th)
    return cok, cerr
  end
  local timer = spawn(nap, ms / 1000)
  local ok, cok, cerr = wait(th, timer)
  if done or not ok then  -- the connect ended (or raised: the sleeper cannot)
    kill(timer)
    if not ok then return nil, tostring(cok) end
    return cok, cerr
  end
  kill(th)
  return nil, "timeout"
end

local function phase_error(phase)
  return errors.new("UnsupportedPhase", format(
    "cosockets are not available in nginx's %q phase, so imm cannot call IMM here without "
    .. "blocking the worker; make the call from rewrite/access/content, or from "
    .. "ngx.timer.at(0, function() ... end)", tostring(phase)),
    { retryable = false, phase = phase })
end

--- Opens a transport (no connection is made until the first request).
-- @tparam table opts as for `imm.transport.curl`; `ca_file` is refused
-- @return transport, or nil, err
function _M.new(opts)
  if type(ngx) ~= "table" or type(ngx.socket) ~= "table" then
    return nil, errors.invalid("transport \"ngx\" needs ngx_lua (OpenResty or nginx with lua-nginx-module)")
  end
  if opts.ca_file then
    return nil, errors.invalid("ca_file is not used by the ngx transport: trust a CA with "
      .. "lua_ssl_trusted_certificate in nginx.conf")
  end
  local via = type(opts.proxy) == "table" and opts.proxy or nil
  -- cosockets cannot run TLS inside TLS (an https endpoint through an
  -- https:// proxy), nor speak SOCKS: an http:// proxy does both endpoints
  if via and via.scheme ~= "http" then
    return nil, errors.invalid(format("client option proxy: %s:// proxies are not supported inside nginx "
      .. "(cosockets); use an http:// proxy, which reaches https endpoints with CONNECT", via.scheme))
  end
  local t = setmetatable({
    connect_ms = floor((opts.connect_timeout or 5) * 1000),
    timeout = opts.timeout or 10,
    verify = not opts.insecure,
    user_agent = opts.user_agent,
    max_bytes = opts.max_response_bytes,
    pool_size = opts.pool_size or POOL_SIZE,
    proxy = via,
    no_proxy = type(opts.no_proxy) == "table" and opts.no_proxy or nil,
  }, _M)
  if via and via.user then
    local userpass = via.user .. ":" .. (via.password or "")
    t.proxy_auth = "Basic " .. ngx.encode_base64(userpass)
    -- pools are per credentials too (a hash: pool names are no place for a
    -- password), so a tunnel the proxy let one user open is no one else's
    t.proxy_key = sub(core.hash_hex("sha256", userpass), 1, 16)
    t.secrets = proxy.secrets(via)
    t.secrets[#t.secrets + 1] = t.proxy_auth
  end
  return t
end

local function parse_url(url)
  local scheme, authority, path = match(url, "^(https?)://([^/]+)(/.*)$")
  if not scheme then return nil end
  local host, port = match(authority, "^%[(.+)%]:?(%d*)$")
  if not host then
    host, port = match(authority, "^([^:]+):?(%d*)$")
  end
  if not host then return nil end
  port = tonumber(port) or (scheme == "https" and 443 or 80)
  return scheme, host, port, path
end

-- Maps a cosocket error string to our codes, as the libcurl path does.
local function io_error(err, stage, status)
  if err == "timeout" then
    return errors.new("Timeout", stage .. " timed out", { status = status })
  end
  if err == "too long" then
    return errors.new("InvalidResponse", format("%s: a line longer than %d bytes", stage, LINE_MAX),
      { status = status, retryable = false })
  end
  if stage == "reading the body" and not find(err, "reset", 1, true) then
    -- the peer closed cleanly before the promised end: the reply was lost
    -- on the way, as with a reset, so a read may be sent again
    return errors.new("ConnectionFailed", "response body truncated (" .. err .. ")", { status = status })
  end
  -- A clean close (FIN) before the promised end loses the reply just as a
  -- reset does: a read may be sent again (the client decides).
  return errors.new("ConnectionFailed", stage .. " failed: " .. err, { status = status })
end

-- A buffered socket reader held to one deadline for the whole exchange.
-- ngx_lua's read timeout restarts whenever a byte arrives, and "*l" reads a
-- line of any length, so a server trickling one byte at a time, or a line
-- without end, would outlast any per-read timeout and any memory: here
-- every read is receiveany, given only the time left, and a line is cut
-- off at LINE_MAX. Errors are ngx_lua's strings, plus "too long".
local function reader(sock, deadline)
  local r = {}
  local buf, pos = "", 1
  -- waits for at most `n` more bytes; returns them, or nil, err
  local function more(n)
    local left = deadline - ngx.now()
    if left <= 0 then return nil, "timeout" end
    sock:settimeout(max(1, floor(left * 1000)))
    return sock:receiveany(n)
  end
  function r.line()
    while true do
      local e = find(buf, "\n", pos, true)
      if e then
        if e - pos > LINE_MAX then return nil, "too long" end
        local line = sub(buf, pos, byte(buf, e - 1) == 13 and e - 2 or e - 1)
        pos = e + 1
        return line
      end
      if #buf - pos >= LINE_MAX then return nil, "too long" end
      local data, err = more(READ_SIZE)
      if not data then return nil, err end
      buf, pos = sub(buf, pos) .. data, 1
    end
  end
  function r.bytes(n)
    local have = #buf - pos + 1
    if have >= n then
      local data = sub(buf, pos, pos + n - 1)
      pos = pos + n
      return data
    end
    local parts, got = { sub(buf, pos) }, have
    buf, pos = "", 1
    while got < n do
      local data, err = more(min(n - got, READ_SIZE))
      if not data then return nil, err end
      parts[#parts + 1] = data
      got = got + #data
    end
    return concat(parts)
  end
  function r.rest(cap)
    local parts, got = { sub(buf, pos) }, #buf - pos + 1
    buf, pos = "", 1
    while true do
      if cap and got > cap then return nil, "too large" end
      local data, err = more(READ_SIZE)
      if not data then
        if err == "closed" then return concat(parts) end
        return nil, err
      end
      parts[#parts + 1] = data
      got = got + #data
    end
  end
  -- bytes past the reply: the connection is out of step, not to be reused
  function r.leftover() return pos <= #buf end
  return r
end

-- Reads the rest of the response after the status line.
local function read_response(self, rd, status, method, header_bytes)
  local headers = {}
  local too_many = errors.new("InvalidResponse", format("more than %d bytes of header lines", HEADERS_MAX),
    { status = status, retryable = false })
  while true do
    local line, err = rd.line()
    if not line then return nil, io_error(err, "reading headers", status) end
    header_bytes = header_bytes + #line + 2
    if header_bytes > HEADERS_MAX then return nil, too_many end
    if line == "" then break end
    local name, value = match(line, "^([^:]+):%s*(.-)%s*$")
    if name then
      name = lower(name)
      headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
    end
  end

  local body, close_after = "", lower(headers.connection or "") == "close"
  local cap = self.max_bytes
  local too_large = errors.new("InvalidResponse", format("response body exceeds max_response_bytes (%d)", cap or 0),
    { status = status, retryable = false })

  if method == "HEAD" or status == 204 or status == 304 or (status >= 100 and status < 200) then
    body = ""
  elseif find(lower(headers["transfer-encoding"] or ""), "chunked", 1, true) then
    local parts, total = {}, 0
    while true do
      local line, err = rd.line()
      if not line then return nil, io_error(err, "reading the body", status) end
      local size = tonumber(match(line, "^%s*(%x+)"), 16)
      if not size then
        return nil, errors.new("InvalidResponse", "bad chunk size line", { status = status, retryable = false })
      end
      if size == 0 then
        repeat  -- trailers, up to the blank line
          line, err = rd.line()
          if not line then return nil, io_error(err, "reading the body", status) end
          header_bytes = header_bytes + #line + 2
          if header_bytes > HEADERS_MAX then return nil, too_many end
        until line == ""
        break
      end
      total = total + size
      if cap and total > cap then return nil, too_large end
      local data
      data, err = rd.bytes(size + 2)
      if not data then return nil, io_error(err, "reading the body", status) end
      if data:sub(-2) ~= "\r\n" then
        return nil, errors.new("InvalidResponse", "bad chunk end", { status = status, retryable = false })
      end
      parts[#parts + 1] = data:sub(1, -3)
    end
    body = concat(parts)
  elseif headers["content-length"] then
    local n = tonumber(headers["content-length"])
    if not n or n < 0 or n ~= floor(n) then
      return nil, errors.new("InvalidResponse", "bad Content-Length", { status = status, retryable = false })
    end
    if cap and n > cap then return nil, too_large end
    if n > 0 then
      local data, err = rd.bytes(n)
      if not data then return nil, io_error(err, "reading the body", status) end
      body = data
    end
  else
    -- delimited by the end of the connection
    local data, err = rd.rest(cap)
    if err == "too large" then return nil, too_large end
    if not data then return nil, io_error(err, "reading the body", status) end
    body, close_after = data, true
  end

  if lower(headers["content-encoding"] or "") == "gzip" then
    local decoded, code, msg = core.gunzip(body, cap)
    if not decoded then
      return nil, errors.new(code, msg, { status = status, retryable = false })
    end
    body = decoded
    headers["content-encoding"] = nil
  end
  return { status = status, headers = headers, body = body }, nil, close_after or rd.leftover()
end

-- Opens a tunnel to host:port through the proxy `sock` is connected to:
-- CONNECT, then the proxy's reply, within the attempt's deadline. Returns
-- true, or nil, err; nothing has reached the service either way.
local function tunnel(self, sock, host, port, deadline)
  local target = (find(host, ":", 1, true) and ("[" .. host .. "]") or host) .. ":" .. port
  local out = { "CONNECT ", target, " HTTP/1.1\r\nHost: ", target, "\r\n" }
  if self.proxy_auth then out[#out + 1] = "Proxy-Authorization: " .. self.proxy_auth .. "\r\n" end
  out[#out + 1] = "\r\n"
  local function failed(err, stage)
    local e = io_error(err, stage)
    e.sent = false
    return nil, e
  end
  local left = deadline - ngx.now()
  if left <= 0 then return failed("timeout", "CONNECT through the proxy") end
  sock:settimeout(max(1, floor(left * 1000)))
  local ok, err = sock:send(out)
  if not ok then return failed(err, "sending CONNECT to the proxy") end
  local rd = reader(sock, deadline)
  local line
  line, err = rd.line()
  if not line then return failed(err, "reading the proxy's answer to CONNECT") end
  local status = tonumber(match(line, "^HTTP/1%.[01] (%d%d%d)"))
  local headers, bytes = {}, #line + 2
  while status do
    line, err = rd.line()
    if not line then return failed(err, "reading the proxy's answer to CONNECT") end
    bytes = bytes + #line + 2
    if line == "" or bytes > HEADERS_MAX then break end
    local name, value = match(line, "^([^:]+):%s*(.-)%s*$")
    if name then headers[lower(name)] = value end
  end
  if status == 407 then return nil, proxy.auth_failed(headers) end
  if not status or status < 200 or status > 299 or line ~= "" or rd.leftover() then
    return nil, errors.new("ConnectionFailed", format("the proxy %s refused the tunnel to %s (%s)",
      self.proxy.display, target, status and ("HTTP " .. status) or "not an HTTP reply"),
      { sent = false, retryable = status ~= nil and status >= 500 })
  end
  return true
end

-- One exchange; `_M:request` scrubs the proxy's password from its errors.
local function send(self, req)
  local ok, phase = _M.phase_ok()
  if not ok then return nil, phase_error(phase) end
  if self.closed then
    return nil, errors.new("InvalidState", "the client is closed", { retryable = false })
  end

  local scheme, host, port, path = parse_url(req.url)
  if not scheme then
    return nil, errors.invalid("cannot parse URL " .. tostring(req.url))
  end
  -- the attempt's bound: the client's timeout, or less (what is left of
  -- the call's deadline); it holds every step, the connect included
  local budget = self.timeout
  if type(req.timeout) == "number" and req.timeout > 0 and req.timeout < budget then budget = req.timeout end
  local deadline = ngx.now() + budget
  local sock = ngx.socket.tcp()
  local timeout_ms = max(1, floor(budget * 1000))
  sock:settimeouts(min(self.connect_ms, timeout_ms), timeout_ms, timeout_ms)
  local function left_ms() return max(1, floor((deadline - ngx.now()) * 1000)) end

  -- Connections are pooled per scheme, host, port and verification mode, so a
  -- verified TLS connection is never handed to an unverified client or back.
  local pool = format("imm:%s:%s:%d:%s", scheme, host, port, self.verify and "v" or "nv")
  -- Through a proxy, per proxy and credentials as well: a tunnel or a
  -- forwarding connection is never reused directly, for another target, or
  -- by a client with other credentials.
  local via = self.proxy
  if via and proxy.bypass(self.no_proxy, host) then via = nil end
  local to_host, to_port, what = host, port, ""
  if via then
    pool = format("%s:via:%s:%d:%s", pool, via.host, via.port, self.proxy_key or "-")
    to_host, to_port, what = match(via.host, "^%[(.*)%]$") or via.host, via.port, "the proxy "
  end
  -- A request that must not go out twice gets a connection of its own: a pool
  -- nothing is ever put back into, so a stale keep-alive connection cannot
  -- fail it after it was written.
  if req.fresh then pool = pool .. ":fresh" end
  local cok, err = connect(sock, to_host, to_port, { pool = pool, pool_size = self.pool_size },
    min(self.connect_ms, timeout_ms))
  if not cok then
    -- sent = false: nothing reached the service, so even a mutation may be repeated
    if err == "timeout" then
      return nil, errors.new("Timeout", "connect to " .. what .. to_host .. ":" .. to_port .. " timed out"
        .. (is_address(to_host) and "" or " (name resolution included)"), { sent = false })
    end
    local hint = find(err, "resolver", 1, true) and " (add a resolver directive to nginx.conf)" or ""
    return nil, errors.new("ConnectionFailed", "connect to " .. what .. to_host .. ":" .. to_port .. " failed: "
      .. err .. hint, { sent = false })
  end
  if via and scheme == "https" and sock:getreusedtimes() == 0 then
    local tok, terr = tunnel(self, sock, host, port, deadline)
    if not tok then
      sock:close()
      return nil, terr
    end
  end
  if scheme == "https" and sock:getreusedtimes() == 0 then
    sock:settimeout(left_ms())
    -- pcall: Debian 12's lua-resty-core can fail an assertion inside
    -- sslhandshake when a verification failure races a busy worker
    -- (openresty/lua-resty-core#499); that is a TLS failure, not a raise
    local pok, sok, serr = pcall(sock.sslhandshake, sock, nil, host, self.verify)
    if not pok then sok, serr = nil, sok end
    if not sok then
      sock:close()
      if serr == "timeout" then
        return nil, errors.new("Timeout", "TLS handshake with " .. host .. " timed out", { sent = false })
      end
      return nil, errors.new("TLSError", "TLS handshake with " .. host .. " failed: " .. tostring(serr),
        { retryable = false, sent = false })
    end
  end

  -- The same header set the libcurl transport sends.
  local body = req.body or ""
  -- an http endpoint through a proxy: the absolute form, and our credentials
  local forwarded = via and scheme == "http"
  local out = { req.method, " ", forwarded and req.url or path, " HTTP/1.1\r\n" }
  if forwarded and self.proxy_auth then out[#out + 1] = "Proxy-Authorization: " .. self.proxy_auth .. "\r\n" end
  local has = {}
  for k, v in pairs(req.headers) do
    local lk = lower(k)
    has[lk] = true
    if find(k, "[\r\n]") or find(v, "[\r\n]") then
      sock:close()
      return nil, errors.invalid("header " .. lk .. " contains CR or LF")
    end
    out[#out + 1] = k .. ": " .. v .. "\r\n"
  end
  if not has.host then out[#out + 1] = "host: " .. host .. "\r\n" end
  if self.user_agent and not has["user-agent"] then out[#out + 1] = "User-Agent: " .. self.user_agent .. "\r\n" end
  if not has["accept-encoding"] then out[#out + 1] = "Accept-Encoding: gzip\r\n" end
  if req.method == "POST" or #body > 0 then out[#out + 1] = "Content-Length: " .. #body .. "\r\n" end
  out[#out + 1] = "\r\n"
  out[#out + 1] = body

  sock:settimeout(left_ms())
  local sent, serr = sock:send(out)
  if not sent then
    sock:close()
    return nil, io_error(serr, "sending the request")
  end

  local rd = reader(sock, deadline)
  local line, rerr = rd.line()
  if not line then
    sock:close()
    -- A pooled connection the server had already closed: nothing was
    -- processed, so the retry loop may try again on a fresh one.
    return nil, io_error(rerr, "reading the status line")
  end
  local status = tonumber(match(line, "^HTTP/1%.[01] (%d%d%d)"))
  if not status then
    -- On a pooled connection these are bytes a broken server left there
    -- after an earlier reply: the connection was stale and our reply lost,
    -- as with a reset (the libcurl path says the same). On a new one, the
    -- server itself answered that way.
    local reused = (sock:getreusedtimes() or 0) > 0
    sock:close()
    if reused then
      return nil, errors.new("ConnectionFailed", "a reused connection answered with bytes that are no HTTP "
        .. "reply (left over from an earlier reply)")
    end
    return nil, errors.new("InvalidResponse", "not an HTTP/1.x status line", { retryable = false })
  end
  local header_bytes = #line + 2
  while status == 100 do  -- an interim response; the real one follows
    repeat
      line, rerr = rd.line()
      if line then header_bytes = header_bytes + #line + 2 end
    until not line or line == "" or header_bytes > HEADERS_MAX
    if line == "" then line, rerr = rd.line() end  -- the next status line
    if not line then
      sock:close()
      return nil, io_error(rerr, "reading the status line")
    end
    header_bytes = header_bytes + #line + 2
    status = header_bytes <= HEADERS_MAX and tonumber(match(line, "^HTTP/1%.[01] (%d%d%d)"))
    if not status then
      sock:close()
      return nil, errors.new("InvalidResponse", "a bad reply after an interim (100) response", { retryable = false })
    end
  end

  local res, ferr, close_after = read_response(self, rd, status, req.method, header_bytes)
  if not res then
    sock:close()
    return nil, ferr
  end
  if close_after or req.fresh then
    sock:close()
  else
    sock:setkeepalive(KEEPALIVE_MS, self.pool_size)
  end
  -- IMM never asks for proxy credentials: a 407 is a forwarding proxy's
  if status == 407 then return nil, proxy.auth_failed(res.headers) end
  return res
end

--- Sends one request. Same contract as `imm.transport.curl`.
function _M:request(req)
  local res, err = send(self, req)
  if not res and self.secrets then scrub_error(err, self.secrets, #self.secrets) end
  return res, err
end

--- Waits without blocking the worker.
function _M.sleep(_, seconds)
  ngx.sleep(seconds)
end

--- Nothing to release (connections live in the worker's keep-alive pool),
-- but a closed transport refuses requests (`InvalidState`), as the libcurl
-- one does.
function _M:close() self.closed = true end

return _M
