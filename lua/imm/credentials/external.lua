--- Credentials printed by an external program: aliyun-cli's `External`
-- mode (`process_command` in `~/.aliyun/config.json`).
--
-- The command is split on white space, as aliyun-cli splits it, and the
-- program is run with those arguments: no shell reads them. It must print a
-- JSON object on standard output: `mode` (`AK` or `StsToken`; without it,
-- `StsToken` when `sts_token` is there), `access_key_id`,
-- `access_key_secret`, `sts_token` for `StsToken`, and optionally
-- `expiration` (ISO 8601, or epoch seconds). What it prints is kept until
-- fewer than 3 minutes of it remain (forever without `expiration`).
--
-- The run is bounded by the call's deadline (else `timeout`, 60 s by
-- default): past it the program and its process group are killed. Inside
-- nginx it runs through lua-resty-core's `ngx.pipe`, which does not block
-- the worker (without `ngx.pipe`, a clear error: never `io.popen` there).
-- Elsewhere a `/bin/sh` only starts the program (its arguments quoted);
-- outside a task `io.popen` blocks the calling thread while the program
-- runs; inside an `imm.spawn` task the program runs in the background and
-- the task polls for its output (a file of `TMPDIR`, readable by this user
-- only, removed at once) with timers, so the frame loop goes on; only the
-- start of `/bin/sh` (a fork and exec) holds it.
-- @module imm.credentials.external

local type, tostring, tonumber, ipairs, rawget, pcall, select = type, tostring, tonumber, ipairs, rawget, pcall,
  select
local format, match, gsub, gmatch, concat = string.format, string.match, string.gsub, string.gmatch, table.concat
local ceil, floor, min, huge = math.ceil, math.floor, math.min, math.huge
local io_popen, io_open, os_execute, os_remove = io.popen, io.open, os.execute, os.remove
local core = require "imm.core"
local errors = require "imm.errors"
local base = require "imm.credentials.base"

local _M = {}

local OPTIONS = { command = "string" }
local DEFAULT_TIMEOUT = 60
-- a program may hand out credentials of 15 minutes (STS's shortest): the
-- 15-minute margin of the other providers would run it at every call
local STALE = 3 * 60
local MAX_OUTPUT = 64 * 1024

local function quote(s)
  return "'" .. gsub(s, "'", "'\\''") .. "'"
end

-- What a run may be named by in an error: the program, never its arguments
-- (they are configuration, and may hold anything).
local function shown(argv)
  return (gsub(argv[1], "[%c]", "?"))
end

-- The shell text that runs argv within `limit` seconds and prints its
-- output, then "\nimm-exit:STATUS".
--
-- /bin/sh only starts the program (every argument quoted, so nothing in
-- them is read by the shell), in a session of its own where `setsid` is
-- there, with a watchdog that kills it (and that session: a child that kept
-- the pipe open would hold the read) when the time is up. The status comes
-- back after the output, since Lua 5.1's `close` does not give it.
local function script_of(argv, limit)
  local q = {}
  for i, a in ipairs(argv) do q[i] = quote(a) end
  local cmd = concat(q, " ") .. " </dev/null &"
  return "if command -v setsid >/dev/null 2>&1; then setsid " .. cmd .. " else " .. cmd .. " fi; p=$!; "
    -- POSIX sleep takes whole seconds: a fraction where the sleep takes one
    .. format("((sleep %.3f || sleep %d) 2>/dev/null; kill -9 -$p || kill -9 $p) >/dev/null 2>&1 & w=$!; ",
      limit, ceil(limit))
    .. "wait $p 2>/dev/null; s=$?; kill $w 2>/dev/null; printf '\\nimm-exit:%s' \"$s\""
end

-- Splits what script_of printed: the output and the status (nil when the
-- trailer is missing).
local function split(out)
  local body, status = match(out, "^(.*)\nimm%-exit:(%d+)$")
  if not body then return out, nil end
  return body, tonumber(status)
end

-- Runs argv outside a task: stdout and the status, or nil, err. Blocks the
-- calling thread while the program runs.
local function run_popen(argv, limit)
  local f, err = io_popen(script_of(argv, limit), "r")
  if not f then
    return nil, errors.new("InvalidConfiguration", format("cannot run %s: %s", shown(argv), tostring(err)),
      { retryable = false })
  end
  local out = f:read("*a") or ""
  f:close()
  return split(out)
end

local function remove(...)
  for i = 1, select("#", ...) do os_remove((select(i, ...))) end
end

-- Runs argv inside an `imm.spawn` task without holding the frame loop: the
-- program runs in the background, its output goes to a file of `tmpdir`
-- made by this user only (umask 077, never over an existing name) and
-- renamed when complete, and the task polls for it with timers. The file is
-- removed as soon as it is read, or when the task stops waiting.
local function run_task(argv, limit, tmpdir, async)
  local r = core.random
  local file = format("%s/imm-external-%08x%08x", tmpdir, floor(r() * 4294967296), floor(r() * 4294967296))
  local part = file .. ".part"
  os_execute("umask 077; set -C; { { " .. script_of(argv, limit) .. "; } >" .. quote(part) .. " && mv "
    .. quote(part) .. " " .. quote(file) .. " 2>/dev/null; } </dev/null >/dev/null &")
  local stop, pause = core.monotonic() + limit, 0.005
  while true do
    local h = io_open(file, "rb")
    if h then
      local out = h:read("*a") or ""
      h:close()
      remove(file)
      return split(out)
    end
    local left = stop - core.monotonic()
    if left <= 0 then
      remove(file, part)
      return nil, "timeout"
    end
    if not async.sleep(min(pause, left)) then
      remove(file, part)
      return nil, errors.new("Cancelled", format("the task was cancelled while External program %s ran",
        shown(argv)), { retryable = false })
    end
    pause = min(pause * 2, 0.05)
  end
end

-- Runs argv inside nginx through ngx.pipe (the worker goes on meanwhile).
local function run_pipe(argv, limit)
  local ok, pipe = pcall(require, "ngx.pipe")
  if not ok or type(pipe) ~= "table" or type(pipe.spawn) ~= "function" then
    return nil, errors.new("InvalidConfiguration", "External credentials inside nginx need lua-resty-core's "
      .. "ngx.pipe (io.popen would block the worker); use another mode, or OpenResty 1.15.8.1 or later ("
      .. match(tostring(pipe), "^[^\n]*") .. ")", { retryable = false })
  end
  local phase_ok, phase = require("imm.transport.ngx").phase_ok()
  if not phase_ok then
    return nil, errors.new("UnsupportedPhase", format("cannot run an External credentials program in nginx's "
      .. "%q phase; fetch credentials from rewrite/access/content or a timer", tostring(phase)),
      { retryable = false, phase = phase })
  end
  local proc, err = pipe.spawn(argv)
  if not proc then
    return nil, errors.new("InvalidResponse", format("cannot run %s: %s", shown(argv), tostring(err)),
      { retryable = false })
  end
  local ms = ceil(limit * 1000)
  proc:set_timeouts(ms, ms, ms, ms)
  proc:shutdown("stdin")
  local out, rerr, partial = proc:stdout_read_all()
  if not out then
    proc:kill(9)
    proc:wait()
    if rerr == "timeout" then return nil, "timeout" end
    return partial or "", nil
  end
  local done, reason, status = proc:wait()
  if not done and reason == "timeout" then
    proc:kill(9)
    return nil, "timeout"
  end
  if reason == "exit" then return out, tonumber(status) end
  return out, 128 + (tonumber(status) or 0)
end

local function invalid(what, msg)
  return nil, errors.new("InvalidResponse", format("External program %s: %s", what, msg), { retryable = false })
end

-- The credentials in a program's output, or nil, err (never quoting it).
local function parse(out, what)
  local v = require("imm.decode").imm(out)
  if type(v) ~= "table" or v[1] ~= nil then
    return invalid(what, format("printed what is not a JSON object (%d bytes)", #out))
  end
  local mode = v.mode
  if mode == nil then mode = base.nonempty(v.sts_token) and "StsToken" or "AK" end
  if mode ~= "AK" and mode ~= "StsToken" then
    return invalid(what, format("printed mode %q; imm takes AK or StsToken",
      (gsub(tostring(mode):sub(1, 40), "[^%w_%.%-]", "?"))))
  end
  local need = { "access_key_id", "access_key_secret" }
  if mode == "StsToken" then need[3] = "sts_token" end
  for _, k in ipairs(need) do
    if not base.nonempty(v[k]) then return invalid(what, format("printed mode %s with no %s", mode, k)) end
  end
  local exp = v.expiration
  if exp ~= nil then
    if not (type(exp) == "number" and exp == exp and exp > 0 and exp < huge) then exp = base.parse_time(exp) end
    if not exp then
      return invalid(what, "printed an expiration that is neither an ISO 8601 time nor epoch seconds")
    end
  end
  return { access_key_id = v.access_key_id, access_key_secret = v.access_key_secret,
    security_token = mode == "StsToken" and v.sts_token or nil, expiration = exp }
end

--- Credentials from an external program.
-- @tparam table opts `command` (required: the program and its arguments,
--   split on white space), and the common options (`timeout`: the longest
--   run when the call has no deadline, 60 s by default; `clock`, `debug`, ...)
-- @return provider, or nil, err (`InvalidParameter`); its `get` returns
--   nil, err: `Timeout` past the deadline, `InvalidResponse` when the program
--   fails or prints something else, `InvalidConfiguration` when it cannot be
--   run at all (or, inside nginx, without `ngx.pipe`), `UnsupportedPhase`
--   in an nginx phase that cannot wait
-- @usage local p = imm.credentials.external{ command = "/usr/local/bin/get-creds --role ops" }
---@param opts imm.ExternalOptions
---@return imm.CredentialsProvider|nil provider
---@return imm.Error|nil err
function _M.new(opts)
  local what = "credentials.external"
  local o, err = base.options(what, opts, OPTIONS, base.COMMON)
  if not o then return nil, err end
  local argv = {}
  for w in gmatch(o.command or "", "%S+") do argv[#argv + 1] = w end
  if not argv[1] then
    return nil, errors.invalid(what .. ": command must name a program")
  end
  local trace = base.tracer("external", o)
  local getenv = base.getenv(o)
  local async = require "imm.async"
  local name = shown(argv)

  local function fetch(deadline)
    local limit = deadline and (deadline - core.monotonic()) or o.timeout or DEFAULT_TIMEOUT
    if limit <= 0 then
      return nil, errors.new("Timeout", format("no time left to run External program %s within the call's "
        .. "deadline", name), { sent = false })
    end
    trace("running %s (%d arguments), within %.3g s", name, #argv - 1, limit)
    local t0 = core.monotonic()
    local out, status
    local ngx = rawget(_G, "ngx")
    if type(ngx) == "table" and type(ngx.get_phase) == "function" then
      out, status = run_pipe(argv, limit)
    elseif async.current() then
      out, status = run_task(argv, limit, getenv("TMPDIR") or "/tmp", async)
    else
      out, status = run_popen(argv, limit)
    end
    if out == nil and type(status) == "table" then return nil, status end
    if out == nil or (status == 137 and core.monotonic() - t0 >= limit - 0.05) then
      return nil, errors.new("Timeout", format("External program %s did not finish within %.3g s", name, limit),
        { retryable = true })
    end
    if status ~= 0 and status ~= nil then
      local hint = status == 127 and " (not found?)" or status == 126 and " (not executable?)" or ""
      return invalid(name, format("exited with status %d%s", status, hint))
    end
    if #out > MAX_OUTPUT then return invalid(name, format("printed more than %d bytes", MAX_OUTPUT)) end
    return parse(out, name)
  end

  return base.provider("external", base.cached(fetch, { stale = STALE, clock = o.clock, random = o.random,
    trace = trace }))
end

return _M
