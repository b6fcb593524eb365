-- Test fixture: starts the local IMM server (server/imm_server/) on
-- loopback, optionally with TLS through certificates generated for the run,
-- and talks to its control API (/_imm/...). Nothing here reaches beyond
-- 127.0.0.1.
local core = require "imm.core"
local cjson = require "cjson.safe"

local M = {}

M.KEY_ID, M.SECRET = "imm-local-id", "imm-local-secret"

-- Runs a shell command line. Helper processes (openssl, python3, curl)
-- are not under test: a sanitizer's LD_PRELOAD is kept away from them (curl
-- even deadlocks under a preloaded ASan).
local function sh(cmd)
  local ok = os.execute("env -u LD_PRELOAD sh -c '" .. cmd:gsub("'", "'\\''") .. "'")
  return ok == true or ok == 0
end
M.sh = sh

-- Is the process still running? A zombie counts as gone.
local function alive(pid)
  local stat = io.open("/proc/" .. pid .. "/stat")
  if not stat then return false end
  local s = stat:read("*a")
  stat:close()
  return s:match("^%d+ %b() (%a)") ~= "Z"
end

--- Signals a process and waits until it has exited; raises if it does not.
function M.kill(pid, sig)
  sh("kill -" .. (sig or "TERM") .. " " .. pid .. " 2>/dev/null")
  for _ = 1, 200 do
    if not alive(pid) then return true end
    core.sleep(0.025)
  end
  error("process " .. pid .. " did not exit after SIG" .. (sig or "TERM"))
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end
M.read = read

function M.cwd()
  local p = io.popen("pwd")
  local d = p:read("*l")
  p:close()
  return d
end

function M.tmpdir()
  local p = io.popen("mktemp -d")
  local d = p:read("*l")
  p:close()
  return d
end

--- Builds a de_DE.UTF-8 locale (decimal comma) with localedef into a new
-- directory, for the LC_NUMERIC specs. Returns the directory (to pass as
-- LOCPATH, and to remove afterwards), or nil when localedef cannot build it.
function M.de_locale()
  local dir = M.tmpdir()
  local built = os.execute("command -v localedef >/dev/null 2>&1 && localedef -i de_DE -f UTF-8 " .. dir
    .. "/de_DE.UTF-8 >/dev/null 2>&1; test -d " .. dir .. "/de_DE.UTF-8")
  if built == true or built == 0 then return dir end  -- 5.1 returns a status, later versions true or nil
  os.execute("rm -rf " .. dir)
  return nil
end

--- Generates a CA, a server certificate for 127.0.0.1/localhost and a
-- second, unrelated CA. Returns the directory.
function M.certs()
  if M._certs then return M._certs end
  -- inside the build tree, so a run leaves nothing behind in /tmp
  local dir = M.cwd() .. "/build/test-certs"
  assert(sh("mkdir -p " .. dir))
  -- Made afresh at most once an hour, not for every spec file (busted
  -- loads this module again for each): a control handle (core.http, below)
  -- keys the CA file by its path only, like libcurl, so it would not read a
  -- CA rewritten under the same path mid-run; clients key it by content.
  local fresh = sh("test -n \"$(find " .. dir .. "/server.crt " .. dir .. "/other-ca.crt -mmin -60 2>/dev/null"
    .. " | sed -n 2p)\"")
  if not fresh then assert(sh("sh tools/gen_certs.sh " .. dir), "gen_certs.sh failed") end
  M._certs = dir
  return dir
end

--- Starts a server. opts: tls (bool), token, key_id, secret, args.
-- Returns a server object with url, port, stop(), control helpers.
function M.start(opts)
  opts = opts or {}
  local dir = M.tmpdir()
  local args = { "python3 server/imm_server --port 0 --quiet",
    "--port-file " .. dir .. "/port" }
  if opts.tls then args[#args + 1] = "--tls " .. M.certs() end
  if opts.host then args[#args + 1] = "--host " .. opts.host end
  args[#args + 1] = "--access-key-id " .. (opts.key_id or M.KEY_ID)
  args[#args + 1] = "--access-key-secret " .. (opts.secret or M.SECRET)
  if opts.token then args[#args + 1] = "--security-token '" .. opts.token .. "'" end
  if opts.args then args[#args + 1] = opts.args end
  local cmd = "exec " .. table.concat(args, " ") .. " >" .. dir .. "/log 2>&1 & echo $! >" .. dir .. "/pid"
  assert(sh(cmd), "could not start the local IMM server")
  local port
  for _ = 1, 150 do
    local s = read(dir .. "/port")
    if s and s:match("^%d+") then port = tonumber(s:match("^%d+")) break end
    core.sleep(0.05)
  end
  if not port then
    error("local IMM server did not start:\n" .. (read(dir .. "/log") or ""))
  end
  local scheme = opts.tls and "https" or "http"
  local srv = {
    dir = dir, port = port, pid = read(dir .. "/pid"):match("%d+"),
    url = scheme .. "://" .. (opts.host or "127.0.0.1") .. ":" .. port,
    -- the control API is on the same port; TLS control calls trust our CA
    http = assert(core.http { timeout = 10, connect_timeout = 5,
      ca_file = opts.tls and (M.certs() .. "/ca.crt") or nil }),
  }
  function srv.control(method, path, body)
    local status, resp = srv.http:request(method, srv.url .. "/_imm/" .. path,
      { "Content-Type: application/json" },
      type(body) == "string" and body or body and cjson.encode(body) or "")
    assert(status, "control call failed: " .. tostring(resp))
    assert(status >= 200 and status < 300, "control " .. path .. " -> " .. tostring(status) .. " " .. tostring(resp))
    return cjson.decode(resp)
  end
  function srv.reset() return srv.control("POST", "reset") end
  function srv.fault(rule) return srv.control("POST", "faults", rule) end
  function srv.log() return srv.control("GET", "log") end
  function srv.stats() return srv.control("GET", "stats") end
  -- cjson writes an empty Lua table as {}, so an empty list is spelled out
  function srv.data(d)
    local b = #d.Bindings > 0 and cjson.encode(d.Bindings) or "[]"
    return srv.control("POST", "data",
      string.format('{"Projects":%s,"Bindings":%s}', cjson.encode(d.Projects or {}), b))
  end
  -- Idempotent, so a spec can both `finally(srv.stop)` and stop early.
  function srv.stop()
    if srv.stopped then return end
    srv.stopped = true
    srv.http:close()
    M.kill(srv.pid)
    sh("rm -rf " .. dir)
  end
  --- A client for this server; opts override the defaults.
  function srv.client(o)
    local imm = require "imm"
    local t = {
      endpoint = srv.url, access_key_id = M.KEY_ID, access_key_secret = M.SECRET,
      ca_file = opts.tls and (M.certs() .. "/ca.crt") or nil, timeout = 5,
    }
    for k, v in pairs(o or {}) do
      if v == M.NIL then t[k] = nil else t[k] = v end
    end
    return assert(imm.new(t))
  end
  return srv
end

--- How many API requests were in flight at once, from the local server's
-- own log (each record has `start` and `end` times).
function M.peak_in_flight(log)
  local events = {}
  for _, rec in ipairs(log) do
    events[#events + 1] = { rec.start, 1 }
    events[#events + 1] = { rec["end"], -1 }
  end
  table.sort(events, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
  local now, peak = 0, 0
  for _, e in ipairs(events) do
    now = now + e[2]
    if now > peak then peak = now end
  end
  return peak
end

--- Is `needle` in any string reachable from v (keys, values, metatables)?
-- The specs use it to prove a secret is nowhere in an error or a client.
function M.deep_find(v, needle, seen)
  seen = seen or {}
  if type(v) == "string" then return v:find(needle, 1, true) ~= nil end
  if type(v) ~= "table" or seen[v] then return false end
  seen[v] = true
  for k, x in pairs(v) do
    if M.deep_find(k, needle, seen) or M.deep_find(x, needle, seen) then return true end
  end
  return M.deep_find(getmetatable(v), needle, seen)
end

M.NIL = setmetatable({}, { __tostring = function() return "NIL" end })

--- n synthetic bindings for project p, sorted the way the server sorts.
function M.bindings(p, n, ds)
  local list = {}
  for i = 1, n do
    list[i] = {
      ProjectName = p, DatasetName = ds or "ds",
      URI = string.format("oss://bucket-%04d", i),
      State = "Ready", Phase = "IncrementalScanning",
      CreateTime = "2024-03-18T07:21:35.123456789+08:00",
      UpdateTime = "2024-03-18T07:21:35.123456789+08:00",
      Reason = "",
    }
  end
  return list
end

--- Epoch seconds for "YYYY-MM-DDTHH:MM:SSZ" (UTC, no os.time local-zone trap).
function M.epoch(s)
  local y, mo, d, h, mi, se = s:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)Z$")
  y, mo, d = tonumber(y), tonumber(mo), tonumber(d)
  if mo <= 2 then y, mo = y - 1, mo + 12 end
  local days = 365 * y + math.floor(y / 4) - math.floor(y / 100) + math.floor(y / 400)
    + math.floor((153 * (mo - 3) + 2) / 5) + d - 719469
  return days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(se)
end

return M
