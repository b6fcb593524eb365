-- Test fixture: the recording forward proxy (spec/helpers/proxy.py) on
-- loopback: CONNECT, absolute-form forwarding and SOCKS5, optional Basic
-- auth, optionally behind TLS. Only loopback targets pass through it.
local core = require "imm.core"
local cjson = require "cjson.safe"
local fixture = require "helpers.fixture"

local M = {}

M.USER, M.PASSWORD = "gateway", "pr0xy-s3cret/pw"

--- Starts a proxy. opts: auth (require M.USER / M.PASSWORD), tls (an
-- https:// proxy with the fixture's server certificate).
-- Returns { url, port, authority, log(), count(kind), reset(), stop() };
-- url has no credentials, auth_url(user, password) adds them.
function M.start(opts)
  opts = opts or {}
  local dir = fixture.tmpdir()
  local args = { "exec python3 spec/helpers/proxy.py --port-file " .. dir .. "/port --log-file " .. dir .. "/log" }
  if opts.auth then args[#args + 1] = "--user " .. M.USER .. " --password '" .. M.PASSWORD .. "'" end
  if opts.tls then args[#args + 1] = "--tls " .. fixture.certs() end
  args[#args + 1] = ">" .. dir .. "/out 2>&1 & echo $! >" .. dir .. "/pid"
  assert(fixture.sh(table.concat(args, " ")))
  local port
  for _ = 1, 200 do
    local s = fixture.read(dir .. "/port")
    if s and s:match("^%d+$") then port = tonumber(s) break end
    core.sleep(0.025)
  end
  assert(port, "proxy.py did not start: " .. tostring(fixture.read(dir .. "/out")))
  local scheme = opts.tls and "https" or "http"
  local p = { port = port, dir = dir, scheme = scheme, authority = "127.0.0.1:" .. port }
  p.url = scheme .. "://127.0.0.1:" .. port
  --- The proxy's URL with user:password, percent-encoded.
  function p.auth_url(user, password)
    local function enc(s)
      return (s:gsub("[^%w%-%._~]", function(ch) return string.format("%%%02X", ch:byte()) end))
    end
    return scheme .. "://" .. enc(user or M.USER) .. ":" .. enc(password or M.PASSWORD) .. "@127.0.0.1:" .. port
  end
  --- Every record so far, oldest first.
  function p.log()
    local out = {}
    for line in (fixture.read(dir .. "/log") or ""):gmatch("[^\n]+") do out[#out + 1] = cjson.decode(line) end
    return out
  end
  --- How many records (of one kind, or all).
  function p.count(kind)
    local n = 0
    for _, r in ipairs(p.log()) do
      if kind == nil or r.kind == kind then n = n + 1 end
    end
    return n
  end
  function p.reset()
    local f = assert(io.open(dir .. "/log", "w"))
    f:close()
  end
  function p.stop()
    if p.stopped then return end
    p.stopped = true
    fixture.kill(fixture.read(dir .. "/pid"):match("%d+"))
    fixture.sh("rm -rf " .. dir)
  end
  return p
end

return M
