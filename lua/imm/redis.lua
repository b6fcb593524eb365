--- A minimal Redis client on ngx_lua cosockets, for the rate limiter's
-- bucket shared across hosts (imm.ratelimit). It speaks just what that
-- needs: connect, AUTH, SELECT, EVALSHA with an EVAL fallback, and the
-- keep-alive pool. No pipelining, no pub/sub, no cluster, no TLS.
--
-- Debian 12 packages no lua-resty-redis, hence this; the protocol parser
-- (`read_reply`) does no I/O of its own beyond the socket's receive.
-- @module imm.redis

local tostring, tonumber = tostring, tonumber
local format, sub, byte = string.format, string.sub, string.byte
local concat = table.concat
local floor, max = math.floor, math.max

local _M = {}

--- One command in RESP: an array of bulk strings.
-- @usage _M.command{ "GET", "k" }  -- "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
function _M.command(args)
  local out = { "*" .. #args .. "\r\n" }
  for i = 1, #args do
    local a = tostring(args[i])
    out[#out + 1] = "$" .. #a .. "\r\n" .. a .. "\r\n"
  end
  return concat(out)
end

local MAX_BULK = 1024 * 1024  -- the limiter's replies are a few bytes

-- Reads one reply. Returns the value (string, number, array table, or
-- false for a nil bulk), or nil, message, is_server_error.
local function read_reply(sock, depth)
  local line, err = sock:receive("*l")
  if not line then return nil, "redis: " .. tostring(err) end
  local kind, rest = byte(line, 1), sub(line, 2)
  if kind == 43 then          -- + simple string
    return rest
  elseif kind == 45 then      -- - error
    return nil, rest, true
  elseif kind == 58 then      -- : integer
    local n = tonumber(rest)
    if not n then return nil, "redis: a bad integer reply" end
    return n
  elseif kind == 36 then      -- $ bulk
    local n = tonumber(rest)
    if not n or n > MAX_BULK then return nil, "redis: a bad bulk length" end
    if n < 0 then return false end
    local data
    data, err = sock:receive(n + 2)
    if not data then return nil, "redis: " .. tostring(err) end
    return sub(data, 1, n)
  elseif kind == 42 then      -- * array
    local n = tonumber(rest)
    if not n or n > 1024 or depth > 4 then return nil, "redis: a bad array reply" end
    if n < 0 then return false end
    local arr = {}
    for i = 1, n do
      local v, e, server = read_reply(sock, depth + 1)
      if v == nil then return nil, e, server end
      arr[i] = v
    end
    return arr
  end
  return nil, "redis: a reply that is not RESP"
end

local function call(sock, args)
  local ok, err = sock:send(_M.command(args))
  if not ok then return nil, "redis: " .. tostring(err) end
  return read_reply(sock, 0)
end

--- Connects (or takes a pooled connection), authenticating and selecting
-- the database on a new one.
-- @tparam table o `host`, `port`, `password`, `username`, `db`, `timeout`
--   (seconds for each step), `pool` (the pool's name)
-- @return sock, or nil, message
-- @usage local sock, err = redis.connect({ host = "127.0.0.1", port = 6379 }, 0.5)
function _M.connect(o, timeout)
  local ngx = rawget(_G, "ngx")
  local sock = ngx.socket.tcp()
  sock:settimeout(max(1, floor(timeout * 1000)))
  local ok, err = sock:connect(o.host, o.port, { pool = o.pool })
  if not ok then return nil, "redis: connect: " .. tostring(err) end
  if sock:getreusedtimes() == 0 then
    local r, e
    if o.password then
      r, e = call(sock, o.username and { "AUTH", o.username, o.password } or { "AUTH", o.password })
      if not r then
        sock:close()
        -- the server's text, never the password
        return nil, "redis: AUTH failed: " .. tostring(e)
      end
    end
    if o.db and o.db ~= 0 then
      r, e = call(sock, { "SELECT", o.db })
      if not r then
        sock:close()
        return nil, "redis: SELECT failed: " .. tostring(e)
      end
    end
  end
  return sock
end

--- Runs a Lua script by its SHA1, loading it with EVAL when the server
-- does not know it yet (NOSCRIPT).
-- @return the reply, or nil, message
-- @usage local r, err = redis.eval(sock, script, sha, { key }, { a, b })
function _M.eval(sock, script, sha, keys, args)
  local cmd = { "EVALSHA", sha, #keys }
  for i = 1, #keys do cmd[#cmd + 1] = keys[i] end
  for i = 1, #args do cmd[#cmd + 1] = args[i] end
  local r, err, server = call(sock, cmd)
  if r == nil and server and sub(err, 1, 8) == "NOSCRIPT" then
    cmd[1], cmd[2] = "EVAL", script
    r, err = call(sock, cmd)
  end
  if r == nil then return nil, server and ("redis: " .. err) or err end
  return r
end

--- Puts the connection back into the pool (or closes it on failure).
function _M.release(sock, o, failed)
  if failed then
    sock:close()
  else
    sock:setkeepalive(o.keepalive or 60000, o.pool_size or 32)
  end
end

--- SHA1 of a script, in hex, for EVALSHA.
function _M.sha1_hex(s)
  local ngx = rawget(_G, "ngx")
  local raw = ngx.sha1_bin(s)
  return (raw:gsub(".", function(c) return format("%02x", byte(c)) end))
end

return _M
