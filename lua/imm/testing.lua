--- The local IMM server from Lua: start and stop it, and drive its control
-- API (faults, canned replies, task outcomes and delay, notification targets).
-- For tests of code that uses imm (or any IMM client); docs/testing.md has
-- the control API it speaks. Talks HTTP with imm's own core (no new
-- dependency); only to the loopback server it started (or was given).
-- @module imm.testing
local core = require "imm.core"
local errors = require "imm.errors"

local type, tostring, pairs, ipairs, setmetatable = type, tostring, pairs, ipairs, setmetatable
local io_open, io_popen, os_execute, os_getenv, os_remove = io.open, io.popen, os.execute, os.getenv, os.remove
local concat = table.concat

local _M = {}

local KEY_ID, SECRET = "imm-local-id", "imm-local-secret"
_M.access_key_id, _M.access_key_secret = KEY_ID, SECRET

local Server = {}
Server.__index = Server

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function read(path)
  local f = io_open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function exists(path)
  local f = io_open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

-- The server package: opts.server, IMM_SERVER_SCRIPT, beside imm's Lua
-- modules (imm/server/imm_server, where the rock installs it), or a checkout's
-- server/imm_server.
local function find_server(opts)
  local given = opts.server or os_getenv("IMM_SERVER_SCRIPT")
  if given then return given end
  for dir in package.path:gmatch("[^;]+") do
    local base = dir:match("^(.*)%?%.lua$")
    if base then
      for _, cand in ipairs { base .. "imm/server/imm_server", base .. "../server/imm_server" } do
        if exists(cand .. "/__main__.py") then return cand end
      end
    end
  end
  if exists("server/imm_server/__main__.py") then return "server/imm_server" end
  return nil
end

local function alive(pid)
  local stat = read("/proc/" .. pid .. "/stat")
  if stat then return stat:match("^%d+ %b() (%a)") ~= "Z" end
  -- no /proc: ask kill -0
  local ok = os_execute("kill -0 " .. pid .. " 2>/dev/null")
  return ok == true or ok == 0
end

--- Starts a local IMM server on a free loopback port.
-- opts: `args` (a list of extra command-line arguments, e.g.
-- `{ "--task-delay", "0" }`), `server` (the package's directory), `python`
-- (default `IMM_PYTHON`, then `python3`), `timeout` (seconds to wait for it, default 15).
-- @tparam[opt] table opts
-- @treturn table|nil the server handle, or nil
-- @treturn table err (`ServerNotStarted`) on failure
-- @usage local srv = assert(require("imm.testing").start())
-- local client = srv:client()
function _M.start(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("imm.testing.start: opts must be a table", 2) end
  local script = find_server(opts)
  if not script then
    return nil, errors.new("ServerNotStarted",
      "cannot find the local IMM server (imm/server/imm_server); set IMM_SERVER_SCRIPT or opts.server")
  end
  local p = io_popen("mktemp -d 2>/dev/null")
  local dir = p and p:read("*l")
  if p then p:close() end
  if not dir or dir == "" then return nil, errors.new("ServerNotStarted", "mktemp -d failed") end
  local args = { "exec", quote(opts.python or os_getenv("IMM_PYTHON") or "python3"), quote(script), "--port 0 --quiet",
    "--port-file", quote(dir .. "/port") }
  for _, a in ipairs(opts.args or {}) do args[#args + 1] = quote(a) end
  local cmd = concat(args, " ") .. " >" .. quote(dir .. "/log") .. " 2>&1 & echo $! >" .. quote(dir .. "/pid")
  os_execute("sh -c " .. quote(cmd))
  local pid = (read(dir .. "/pid") or ""):match("%d+")
  local port
  local waited, limit = 0, opts.timeout or 15
  while pid and waited < limit do
    port = tonumber((read(dir .. "/port") or ""):match("^%d+"))
    if port or not alive(pid) then break end
    core.sleep(0.05)
    waited = waited + 0.05
  end
  if not port then
    local log = read(dir .. "/log") or ""
    if pid then os_execute("kill " .. pid .. " 2>/dev/null") end
    os_execute("rm -rf " .. quote(dir))
    return nil, errors.new("ServerNotStarted", "the local IMM server did not start: " .. log:sub(1, 400))
  end
  local http = core.http { timeout = 10, connect_timeout = 5, no_proxy = true }
  local srv = setmetatable({ pid = pid, port = port, dir = dir, url = "http://127.0.0.1:" .. port,
    http = http, owned = true }, Server)
  return srv
end

--- A handle for a server started elsewhere (e.g. `imm-server --port 8080`).
-- @tparam string url e.g. `"http://127.0.0.1:8080"`
-- @treturn table the server handle (its `stop` only closes the handle)
-- @usage local srv = require("imm.testing").attach("http://127.0.0.1:8080")
function _M.attach(url)
  if type(url) ~= "string" or not url:match("^https?://") then
    error("imm.testing.attach: url must be an http(s):// URL", 2)
  end
  return setmetatable({ url = url:gsub("/+$", ""), owned = false,
    http = core.http { timeout = 10, connect_timeout = 5, no_proxy = true } }, Server)
end

--- Calls the control API: `method` ("GET", "POST", "DELETE"), `path` under
-- `/_imm/` (e.g. `"faults"`), an optional payload (a table, sent as JSON).
-- @treturn table|nil the decoded reply
-- @treturn table err (`ControlFailed`, with `status`) when the server refused it
-- @usage srv:control("POST", "settings", { task_delay = 0 })
function Server:control(method, path, payload)
  local body = ""
  if payload ~= nil then
    local text, msg = core.json_encode(payload)
    if not text then return nil, errors.invalid("control payload: " .. tostring(msg)) end
    body = text
  end
  local status, resp = self.http:request(method, self.url .. "/_imm/" .. path,
    { "Content-Type: application/json" }, body)
  if not status then
    return nil, errors.new("ControlFailed", "control " .. path .. ": " .. tostring(resp))
  end
  local doc = core.json_decode(resp)
  if status < 200 or status > 299 then
    local msg = type(doc) == "table" and (doc.error or doc.Message) or resp
    return nil, errors.new("ControlFailed", "control " .. path .. " -> " .. status .. ": " .. tostring(msg),
      { status = status })
  end
  return doc
end

--- An imm client for this server (its demo credentials); opts override.
-- @tparam[opt] table opts client options
-- @treturn table client
-- @usage local c = srv:client { timeout = 5 }
function Server:client(opts)
  local t = { endpoint = self.url, access_key_id = KEY_ID, access_key_secret = SECRET }
  for k, v in pairs(opts or {}) do t[k] = v end
  return require("imm").new(t)
end

--- Queues a fault rule (`{ mode = "throttle", count = 2, match = {...} }`).
-- @treturn table|nil reply, err as `control`
-- @usage srv:fault { mode = "unavailable" }
function Server:fault(rule)
  return self:control("POST", "faults", rule)
end

--- Queues a reply for `action`: `body` (a table, the reply without RequestId),
-- opts `status` (200), `count` (1, -1 for every request), `match` ({ Param = "value" }).
-- @treturn table|nil reply, err as `control`
-- @usage srv:reply("GetTask", { Status = "Failed", Code = "X" })
function Server:reply(action, body, opts)
  opts = opts or {}
  return self:control("POST", "replies", { action = action, body = body or {},
    status = opts.status, count = opts.count, match = opts.match })
end

--- Queues an error reply for `action` (status 400 unless given).
-- @treturn table|nil reply, err as `control`
-- @usage srv:error("DetectImageLabels", "Throttling.User", "slow down", 429)
function Server:error(action, code, message, status, opts)
  opts = opts or {}
  return self:control("POST", "replies", { action = action,
    error = { code = code, message = message or code, status = status },
    count = opts.count, match = opts.match })
end

--- Queues a task outcome: the next task (of `TaskType`, matching `match`)
-- ends with `Status` ("Failed" by default), `Code` and `Message`, after
-- `delay` seconds (the server's task delay if not given).
-- @treturn table|nil reply, err as `control`
-- @usage srv:task_outcome { TaskType = "MediaConvert", Code = "InvalidFile", Message = "bad input" }
function Server:task_outcome(rule)
  return self:control("POST", "task-outcomes", rule)
end

--- Changes settings: `task_delay`, `binding_start_delay` (seconds).
-- @treturn table|nil reply, err as `control`
-- @usage srv:settings { task_delay = 0 }
function Server:settings(t)
  return self:control("POST", "settings", t)
end

--- Sends task notifications to `url` (http:// on loopback); opts:
-- `envelope` ("mns" or "raw"), `all` (every task, not only those whose
-- request had a Notification), `topic`, and `signing_key` (an RSA private
-- key in PEM) with `cert_url` (its certificate's URL) to sign them as MNS
-- does. `nil` stops them.
-- @treturn table|nil reply, err as `control`
-- @usage srv:notify_target("http://127.0.0.1:9000/mns")
function Server:notify_target(url, opts)
  if url == nil then return self:control("POST", "notify-target", core.null) end
  opts = opts or {}
  return self:control("POST", "notify-target", { url = url, envelope = opts.envelope, all = opts.all,
    topic = opts.topic, signing_key = opts.signing_key, cert_url = opts.cert_url })
end

--- The request log (one record per API request).
-- @treturn table|nil records, err as `control`
-- @usage local log = srv:log()
function Server:log()
  return self:control("GET", "log")
end

--- Startup data and settings back; faults, replies, outcomes, tasks, log cleared.
-- @treturn table|nil reply, err as `control`
-- @usage srv:reset()
function Server:reset()
  return self:control("POST", "reset")
end

--- Stops the server (if this handle started it) and closes the handle; safe twice.
-- @usage srv:stop()
function Server:stop()
  if self.stopped then return true end
  self.stopped = true
  self.http:close()
  if self.owned and self.pid then
    os_execute("kill " .. self.pid .. " 2>/dev/null")
    for _ = 1, 200 do
      if not alive(self.pid) then break end
      core.sleep(0.025)
    end
    os_remove(self.dir .. "/port")
    os_execute("rm -rf " .. quote(self.dir))
  end
  return true
end

return _M
