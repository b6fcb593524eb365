--- Waiters: poll an action until its response says done, sleeping between
-- polls through the client's transport (`ngx.sleep` inside nginx, the
-- tasks' timers inside an imm task, a real sleep only for a blocking
-- client), so a wait never blocks a worker or a frame loop, and a task
-- that waits can be cancelled like any other.
--
-- `client:wait`, `client:wait_task`, `client:wait_binding` and the `wait`
-- call option of the Create*Task actions are built on `run` below
-- (docs/tasks.md).
-- @module imm.waiter

local type, pairs, ipairs, next, tostring, pcall, rawget = type, pairs, ipairs, next, tostring, pcall, rawget
local format, min = string.format, math.min
local find, sub = string.find, string.sub

local core = require "imm.core"
local errors = require "imm.errors"
local operations = require "imm.operations"
local callopts = require "imm.callopts"
local schema = require "imm.schema"  -- only its task statuses: no table is built

local _M = {}

--- What GetTask's `Status` means, from api/task-types.json: "running",
-- "succeeded" or "failed" (any other status counts as still running).
_M.task_statuses = schema.task_statuses

local function seconds_ok(v)
  return type(v) == "number" and v == v and v > 0 and v ~= math.huge
end

-- The value at a dotted path ("Binding.State") of a response, or nil.
local function at(res, path)
  local v, i = res, 1
  while true do
    if type(v) ~= "table" then return nil end
    local dot = find(path, ".", i, true)
    if not dot then return v[sub(path, i)] end
    v = v[sub(path, i, dot - 1)]
    i = dot + 1
  end
end

-- A matcher table ({ Status = "Succeeded", ["Binding.State"] = "Running" })
-- as a predicate: every field equals its value.
local function matcher(t)
  return function(res)
    for path, want in pairs(t) do
      if at(res, path) ~= want then return false end
    end
    return true
  end
end

-- A `done` or `fail` option as a predicate: a function, or a matcher table.
local function predicate(opts, k)
  local v = opts[k]
  if v == nil then return true, nil end
  if type(v) == "function" then return true, v end
  if type(v) == "table" and next(v) ~= nil then
    for path, want in pairs(v) do
      local t = type(want)
      if type(path) ~= "string" or (t ~= "string" and t ~= "number" and t ~= "boolean") then
        return nil, errors.invalid(format("wait option %s: each key must be a field name (\"Status\", "
          .. "\"Binding.State\") and each value a string, number or boolean", k))
      end
    end
    return true, matcher(v)
  end
  return nil, errors.invalid(format("wait option %s must be a function of the response or a table "
    .. "of field = value, got %s", k, type(v)))
end

--- Checks wait options against `known` (a set of names) and fills in the
-- defaults: `interval`, `backoff` (a factor, at least 1), `max_interval`
-- (the cap of the backoff), `timeout`, and `done`/`fail` as predicates.
-- @return settings, or nil, err (InvalidParameter)
function _M.settings(opts, known, defaults)
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then return nil, errors.invalid("wait options must be a table") end
  local unknown = operations.unknown_key(opts, known, "wait option")
  if unknown then return nil, unknown end
  local s = {}
  for _, k in ipairs { "timeout", "interval", "max_interval" } do
    local v = opts[k]
    if v == nil then v = defaults[k] end
    if v ~= nil and not seconds_ok(v) then
      return nil, errors.invalid(format("wait option %s must be a positive number of seconds, got %s",
        k, tostring(v)))
    end
    s[k] = v
  end
  local b = opts.backoff
  if b == nil then b = defaults.backoff or 1 end
  if type(b) ~= "number" or b ~= b or b < 1 or b == math.huge then
    return nil, errors.invalid("wait option backoff must be a number of at least 1 (1: a fixed interval), got "
      .. tostring(b))
  end
  s.backoff = b
  if opts.max_interval == nil and (s.max_interval or 0) < s.interval then
    -- a long interval with the default cap: the cap is the interval
    s.max_interval = s.interval
  end
  if s.max_interval < s.interval then
    return nil, errors.invalid(format("wait option max_interval (%gs) must not be below interval (%gs)",
      s.max_interval, s.interval))
  end
  local ok, err
  for _, k in ipairs { "done", "match", "fail" } do
    if known[k] then
      ok, err = predicate(opts, k)
      if not ok then return nil, err end
      s[k] = err
    end
  end
  if opts.progress ~= nil and type(opts.progress) ~= "function" then
    return nil, errors.invalid("wait option progress must be a function (response, polls, seconds waited)")
  end
  s.progress = opts.progress
  if opts.call ~= nil then
    if type(opts.call) ~= "table" then
      return nil, errors.invalid("wait option call must be a table of call options")
    end
    -- checked now, so a bad one is refused before the first poll is sent
    local checked, cerr = callopts.check(opts.call)
    if not checked then return nil, cerr end
    if opts.call.wait ~= nil or opts.call.meta ~= nil then
      return nil, errors.invalid("wait option call takes call options for each poll, not wait or meta")
    end
  end
  s.call = opts.call
  return s
end

local function cancelled()
  return errors.new("Cancelled", "the task was cancelled while it waited", { retryable = false })
end

--- The polling loop. `poll()` returns a response or nil, err; `step(res)`
-- returns a value (done: `run` returns it), nil (poll again) or nil, err
-- (done: `run` returns nil, err); `timed_out(res, polls, waited)` builds
-- the WaitTimeout error; `failed(err, last)` may add to a poll's error.
-- `s.progress(res, polls, waited)`, when set, sees every response.
-- `s.sleep(seconds, last)`, when set, waits instead of the transport (it
-- returns true to poll again at once). Sleeps go through the client's
-- transport; a cancelled task's sleep ends the wait with `Cancelled`.
function _M.run(client, s, poll, step, timed_out, failed)
  local started, polls, last = core.monotonic(), 0, nil
  local delay = s.interval
  while true do
    local res, err = poll()
    polls = polls + 1
    if not res then
      if failed then failed(err, last) end
      return nil, err
    end
    last = res
    if s.progress then s.progress(res, polls, core.monotonic() - started) end
    local v
    v, err = step(res)
    if v ~= nil then return v end
    if err then return nil, err end
    local waited = core.monotonic() - started
    if waited >= s.timeout then return nil, timed_out(res, polls, waited) end
    local nap = min(delay, s.timeout - waited)
    local woke
    if s.sleep then
      woke = s.sleep(nap, res)
    else
      woke = client.transport:sleep(nap)
    end
    -- imm.async's sleep says false when the task was cancelled
    if woke == false then return nil, cancelled() end
    delay = min(delay * s.backoff, s.max_interval)
  end
end

-- client:wait ------------------------------------------------------------

local WAIT_OPTIONS = { done = true, match = true, fail = true, interval = true, backoff = true,
  max_interval = true, timeout = true, call = true, progress = true }
_M.WAIT_DEFAULTS = { interval = 5, timeout = 300, backoff = 1 }

--- client:wait(action, params, opts): see imm.client.
function _M.wait(client, action, params, opts)
  if type(action) ~= "string" then
    return nil, errors.invalid("wait: the action must be a string such as \"GetTask\", got " .. type(action))
  end
  if type(opts) ~= "table" then
    return nil, errors.invalid("wait needs options with done (a function) or match (a table of field = value)")
  end
  if opts.match ~= nil then
    if opts.done ~= nil then return nil, errors.invalid("give wait option done or match, not both") end
    if type(opts.match) ~= "table" then
      return nil, errors.invalid("wait option match must be a table of field = value, got " .. type(opts.match))
    end
  elseif opts.done == nil then
    return nil, errors.invalid("wait needs option done (a function of the response) or match (a table of "
      .. "field = value)")
  end
  local s, err = _M.settings(opts, WAIT_OPTIONS, _M.WAIT_DEFAULTS)
  if not s then return nil, err end
  s.done = s.done or s.match
  -- bad parameters fail here, before anything is sent (bad call options at
  -- the first poll, before it is sent)
  local q, ferr = operations.validate(action, params)
  if not q then return nil, ferr end
  return _M.run(client, s,
    function() return client:call(action, params, s.call) end,
    function(res)
      if s.done(res) then return res end
      if s.fail and s.fail(res) then
        return nil, errors.new("WaitFailed", format("%s answered what the wait's fail option matches", action),
          { retryable = false, response = res })
      end
    end,
    function(res, polls, waited)
      return errors.new("WaitTimeout", format("%s did not answer what the wait asked for in %gs (%d polls, "
        .. "%.1fs)", action, s.timeout, polls, waited), { retryable = false, response = res })
    end,
    function(e, last) e.response = last end)
end

-- client:wait_task -------------------------------------------------------

local TASK_OPTIONS = { interval = true, backoff = true, max_interval = true, timeout = true, call = true,
  notifications = true, progress = true }
_M.TASK_DEFAULTS = { interval = 1, backoff = 1.5, max_interval = 30, timeout = 900 }

--- Checks wait_task's options; with `creating`, the parameters come later
-- (from the Create*Task response).
function _M.task_settings(opts)
  local s, err = _M.settings(opts, TASK_OPTIONS, _M.TASK_DEFAULTS)
  if not s then return nil, err end
  local n = opts and opts.notifications
  if n ~= nil then
    if type(n) ~= "string" or n == "" then
      return nil, errors.invalid("wait option notifications must be the name of a lua_shared_dict (a string)")
    end
    if not require("imm.transport").in_nginx() then
      return nil, errors.invalid("wait option notifications works only inside nginx, where the push receiver "
        .. "of docs/notifications.md runs")
    end
    -- else every await would fail at once, and the wait would poll without a pause
    if not rawget(_G, "ngx").shared[n] then
      return nil, errors.invalid("wait option notifications: no lua_shared_dict named " .. n .. " in nginx.conf")
    end
    -- loaded only when asked for: it needs nginx
    local ok, mod = pcall(require, "imm.notification")
    if not ok or type(mod) ~= "table" or type(mod.await) ~= "function" then
      return nil, errors.invalid("wait option notifications needs imm.notification (docs/notifications.md): "
        .. tostring(mod))
    end
    s.notifications, s.notification = n, mod
  end
  return s
end

local function task_name(p)
  return format("task %s (%s)", tostring(p.TaskId), tostring(p.TaskType))
end

-- Waits with settings `s` (see task_settings).
local function wait_task(client, params, s)
  if s.notifications then
    -- the push receiver (docs/notifications.md) wakes us when IMM says the
    -- task ended: poll at once then, instead of at the next interval
    local notification = s.notification
    local dict, id = s.notifications, params.TaskId
    local woken = false
    s.sleep = function(seconds)
      -- the notification stays in the dict, so after it woke us once await
      -- would answer at once every time: a GetTask still saying Running
      -- (or an await that fails) is waited for by plain sleeps
      if woken then return client.transport:sleep(seconds) end
      local msg, err = notification.await(dict, id, seconds)
      if type(msg) == "table" then
        woken = true
        return true
      end
      if err then
        woken = true
        return client.transport:sleep(seconds)
      end
    end
  end
  local statuses = _M.task_statuses
  return _M.run(client, s,
    function() return client:call("GetTask", params, s.call) end,
    function(res)
      local kind = statuses[res.Status]
      if kind == "succeeded" then return res end
      if kind == "failed" then
        local code, msg = res.Code, res.Message
        return nil, errors.new("TaskFailed", format("%s failed: %s: %s", task_name(params),
          tostring(code or "no code"), tostring(msg or "no message")), { retryable = false, task = res,
          task_code = code, task_message = msg, state = res.Status, request_id = res.RequestId })
      end
    end,
    function(res, polls, waited)
      return errors.new("WaitTimeout", format("%s is still %s after %gs and %d polls (%.1fs)", task_name(params),
        tostring(res.Status), s.timeout, polls, waited), { retryable = false, task = res, state = res.Status })
    end,
    function(err, last) err.task = last end)
end

--- client:wait_task(params, opts): see imm.client.
function _M.wait_task(client, params, opts)
  local s, err = _M.task_settings(opts)
  if not s then return nil, err end
  local q
  q, err = operations.validate("GetTask", params)
  if not q then return nil, err end
  return wait_task(client, params, s)
end

--- The `wait` call option of a Create*Task action: checks the wait before
-- anything is sent, creates the task, then waits for it. Returns GetTask's
-- final response; a failed wait's error carries `err.created`, the
-- Create*Task response (its TaskId).
function _M.create_and_wait(client, action, params, opts)
  local def = operations.actions[action]
  local task_type = def and def.task_type
  if not task_type then
    return nil, errors.invalid(format("call option wait is for the actions that create a task (Create*Task); "
      .. "%s does not", tostring(action)))
  end
  local w = opts.wait
  if w == true then w = nil end
  if w ~= nil and type(w) ~= "table" then
    return nil, errors.invalid("call option wait must be true or a table of wait_task options, got " .. type(w))
  end
  local s, err = _M.task_settings(w)
  if not s then return nil, err end
  if opts.meta ~= nil then
    return nil, errors.invalid("call option meta is for calls that do not wait (wait returns GetTask's response)")
  end
  local call = {}
  for k, v in pairs(opts) do
    if k ~= "wait" then call[k] = v end
  end
  local created
  created, err = client:call(action, params, call)
  if not created then return nil, err end
  local id = created.TaskId
  if type(id) ~= "string" or id == "" then
    return nil, errors.new("InvalidResponse", format("%s answered without a TaskId to wait for", action),
      { retryable = false, request_id = created.RequestId, created = created })
  end
  local res
  res, err = wait_task(client, { ProjectName = params.ProjectName, TaskType = task_type, TaskId = id }, s)
  if not res then err.created = created end
  return res, err
end

-- Bindings: client:wait_binding ------------------------------------------

local BINDING_OPTIONS = { state = true, timeout = true, interval = true, call = true }
local STATES = { Ready = true, Running = true, Retrying = true, Stopped = true, Failed = true, Deleted = true }
local TERMINAL = { Failed = "BindingFailed", Deleted = "BindingDeleted" }

local function binding_settings(opts)
  local s, err = _M.settings(opts, BINDING_OPTIONS, { timeout = 300, interval = 5 })
  if not s then return nil, err end
  local state = opts and opts.state or "Running"
  if not STATES[state] then
    local hint = type(state) == "string" and operations.suggest(state, STATES)
    return nil, errors.invalid(format("wait option state must be a binding state such as \"Running\", got %s%s",
      tostring(state), hint and format(" (did you mean %q?)", hint) or ""))
  end
  s.state = state
  return s
end

--- `client:wait_binding` (see there): polls get_binding until the binding is in `opts.state`.
function _M.wait_binding(client, params, opts)
  local s, err = binding_settings(opts)
  if not s then return nil, err end
  local last
  local b
  b, err = _M.run(client, s,
    function() return client:get_binding(params, s.call) end,
    function(res)
      local cur = res.Binding
      if type(cur) ~= "table" then
        return nil, errors.new("InvalidResponse", "Binding is missing from the GetBinding response",
          { request_id = res.RequestId, retryable = false, binding = last })
      end
      last = cur
      if cur.State == s.state then return cur end
      local terminal = TERMINAL[cur.State]
      if terminal then
        local reason = cur.Reason and cur.Reason ~= "" and (": " .. tostring(cur.Reason)) or ""
        return nil, errors.new(terminal, format("binding %s is %s%s (waited for %s)", tostring(cur.URI),
          tostring(cur.State), reason, s.state), { retryable = false, binding = cur, state = cur.State })
      end
    end,
    function(res, polls)
      local cur = res.Binding
      return errors.new("WaitTimeout", format("binding %s is still %s after %gs and %d polls (waited for %s)",
        tostring(cur.URI), tostring(cur.State), s.timeout, polls, s.state),
        { retryable = false, binding = cur, state = cur.State })
    end,
    function(e) e.binding = last end)
  return b, err
end

return _M
