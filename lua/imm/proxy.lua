--- The `proxy` and `no_proxy` client options: checked and parsed once,
-- when the client is made, for both transports.
--
-- The parsed proxy keeps its password in `password`, `password_encoded` and
-- the URL handed to libcurl; `display`, the form every message uses, has no
-- user information at all.
-- @module imm.proxy

local type, tonumber, ipairs = type, tonumber, ipairs
local format, match, find, lower, gsub, char = string.format, string.match, string.find, string.lower,
  string.gsub, string.char
local errors = require "imm.errors"

local _M = {}

local DEFAULT_PORT = { http = 80, https = 443, socks5h = 1080 }

local function invalid(msg) return nil, errors.invalid(msg) end

-- %XX sequences to bytes; nil when one is malformed.
local function unescape(s)
  if find(s, "%%[^%x]") or find(s, "%%%x[^%x]") or find(s, "%%%x?$") then return nil end
  return (gsub(s, "%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

--- Parses a proxy URL. Messages never quote the URL: it may hold a password.
-- @tparam string url `scheme://[user[:password]@]host[:port][/]`
-- @treturn table `{ scheme, host, port, user, password, password_encoded, url, display }`,
--   or nil, err (`InvalidParameter`)
-- @usage local p, err = proxy.parse("http://user:pw@10.0.0.1:3128")
function _M.parse(url)
  if find(url, "[%z\1-\32\127]") then
    return invalid("client option proxy must not contain spaces or control characters")
  end
  local scheme, rest = match(url, "^(%a[%w+.-]*)://(.*)$")
  if not scheme then
    return invalid("client option proxy must be a URL such as \"http://host:port\"")
  end
  scheme = lower(scheme)
  if not DEFAULT_PORT[scheme] then
    return invalid("client option proxy: the scheme must be http, https or socks5h (socks5h: the proxy "
      .. "resolves names); got " .. format("%q", scheme))
  end
  rest = gsub(rest, "/$", "")
  if find(rest, "[/?#]") then
    return invalid("client option proxy must have no path, query or fragment")
  end
  local userinfo, hostport = match(rest, "^(.*)@([^@]*)$")
  if not userinfo then hostport = rest end
  local host, port = match(hostport, "^(%[[%x:.]+%]):?(%d*)$")
  if not host then host, port = match(hostport, "^([%w._-]+):?(%d*)$") end
  if not host or host == "" then
    return invalid("client option proxy must name a host")
  end
  if port == "" then port = DEFAULT_PORT[scheme] else port = tonumber(port) end
  if port < 1 or port > 65535 then
    return invalid("client option proxy: the port must be from 1 to 65535")
  end
  local p = { scheme = scheme, host = lower(host), port = port }
  p.display = format("%s://%s:%d", scheme, p.host, port)
  p.url = p.display
  if userinfo then
    local user, password = match(userinfo, "^([^:]*):(.*)$")
    if not user then user = userinfo end
    p.user, p.password = unescape(user), password and unescape(password)
    if not p.user or (password and not p.password) or find(userinfo, "@", 1, true) then
      return invalid("client option proxy: the user and password must be percent-encoded")
    end
    -- as given: libcurl decodes the user information itself
    p.password_encoded = password
    p.url = format("%s://%s@%s:%d", scheme, userinfo, p.host, port)
  end
  return p
end

--- Checks `no_proxy`: a list of host names, domains (`example.com` also
-- matches its subdomains; a leading dot is allowed) and IP addresses, or
-- the same as one comma-separated string; `"*"` alone matches every host.
-- @treturn table the list, lowercased, or nil, err (`InvalidParameter`)
-- @usage local list, err = proxy.no_proxy("localhost, .internal")
function _M.no_proxy(v)
  local list = {}
  if type(v) == "string" then
    for entry in (v .. ","):gmatch("([^,]*),") do
      entry = match(entry, "^%s*(.-)%s*$")
      if entry ~= "" then list[#list + 1] = entry end
    end
  elseif type(v) == "table" then
    for i, entry in ipairs(v) do
      if type(entry) ~= "string" then
        return invalid(format("client option no_proxy[%d] must be a string, got %s", i, type(entry)))
      end
      list[i] = entry
    end
  else
    return invalid("client option no_proxy must be a list of hosts or a comma-separated string, got " .. type(v))
  end
  for i, entry in ipairs(list) do
    if not (entry == "*" or find(entry, "^%.?[%w.:_-]+$") or find(entry, "^%[[%x:.]+%]$")) then
      return invalid(format("client option no_proxy: entry %d is not a host name, domain or address "
        .. "(address ranges and wildcards other than \"*\" alone are not supported)", i))
    end
    -- "[::1]" as "::1", the form libcurl compares
    list[i] = lower(match(entry, "^%[(.*)%]$") or entry)
  end
  return list
end

--- Should a request to `host` bypass the proxy, by `list` (from `no_proxy`)?
-- The rules libcurl applies: `*` matches all; an entry matches the host
-- itself and, for names, its subdomains.
-- @usage if proxy.bypass(list, "imm.cn-hangzhou.aliyuncs.com") then ... end
function _M.bypass(list, host)
  if not list then return false end
  host = lower(gsub(gsub(host, "^%[", ""), "%]$", ""))
  host = gsub(host, "%.$", "")
  for _, entry in ipairs(list) do
    if entry == "*" then return true end
    entry = gsub(gsub(gsub(entry, "^%.", ""), "^%[", ""), "%]$", "")
    if host == entry then return true end
    local n = #entry
    if #host > n and host:sub(-n - 1) == "." .. entry then return true end
  end
  return false
end

--- Checks the client's `proxy` and `no_proxy` options.
-- @treturn table `{ proxy = parsed | false | nil, no_proxy = list | nil }`, or nil, err
-- @usage local p, err = proxy.options(opts)
function _M.options(opts)
  local out = {}
  local v = opts.proxy
  if v == true then
    return invalid("client option proxy must be a URL string, or false for no proxy at all, got true")
  elseif type(v) == "string" then
    local p, err = _M.parse(v)
    if not p then return nil, err end
    out.proxy = p
  else
    out.proxy = v
  end
  if opts.no_proxy ~= nil then
    local list, err = _M.no_proxy(opts.no_proxy)
    if not list then return nil, err end
    out.no_proxy = list
  end
  return out
end

--- The secrets a proxy's errors must never show: the password as given
-- (percent-encoded) and decoded.
-- @treturn table list (may be empty)
-- @usage base.scrub_error(err, proxy.secrets(p), 2)
function _M.secrets(p)
  if type(p) ~= "table" or not p.password then return {} end
  return { p.password, p.password_encoded }
end

--- The error for a proxy that refused the credentials (or wanted some):
-- `ProxyAuthenticationRequired`, status 407, never retried, nothing sent
-- to the service.
-- @tparam[opt] table headers the 407 reply's, for `Proxy-Authenticate`
-- @usage return nil, proxy.auth_failed(res.headers)
function _M.auth_failed(headers)
  local scheme = headers and match(headers["proxy-authenticate"] or "", "^%s*([%w-]+)")
  return errors.new("ProxyAuthenticationRequired", "the proxy answered 407: it refused the credentials "
    .. "in the proxy URL, or wanted some" .. (scheme and (" (it asks for " .. scheme .. ")") or ""),
    { status = 407, retryable = false, sent = false })
end

return _M
