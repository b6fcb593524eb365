--- Non-blocking calls outside nginx: tasks on libcurl's multi interface.
--
-- A task is a coroutine started with `imm.spawn(fn, ...)`. Inside it, a
-- client made with `async = true` sends each request on one shared libcurl
-- multi handle and yields while the transfer is in flight; retries wait on
-- a timer instead of sleeping. The host's frame loop calls
-- `imm.poll(timeout_ms)`, which moves every transfer along, resumes the
-- tasks whose replies arrived or whose timers fell due, and never blocks
-- longer than `timeout_ms` (0: not at all).
--
-- The blocking client is the same machinery driven to completion: both
-- start, transfer and finish a request through the same C functions
-- (`src/imm_http.c`), the blocking one on its handle's private multi.
--
-- The scheduler's state lives in this module, so each `lua_State` has its
-- own; a task and the clients it uses belong to that state.
--
-- Lua 5.1 (PUC, not LuaJIT) cannot yield from an iterator that a for-in
-- loop calls, so inside a task there call a pager's iterator directly:
-- `local it = client:bindings(p); local b, err = it()`.
--
-- Coroutines: imm's pagers already pass a task's waits through their own
-- coroutines. A coroutine of your own that calls an async client inside a
-- task must do the same: when `coroutine.resume` returns `imm.async.WAIT`,
-- yield it (and its second value) and resume with what the yield returns.
-- @module imm.async

local type, select, setmetatable, tostring, pairs, next, format = type, select, setmetatable,
  tostring, pairs, next, string.format
local unpack = table.unpack or unpack  -- luacheck: ignore (5.1/LuaJIT)
local co_create, co_resume, co_yield, co_status = coroutine.create, coroutine.resume,
  coroutine.yield, coroutine.status
local floor, max, min, huge = math.floor, math.max, math.min, math.huge
local find = string.find
-- PUC Lua 5.1 cannot yield across the C call a for-in loop makes to its
-- iterator (5.2+ and LuaJIT can): worth a precise hint when it happens.
local PUC51 = _VERSION == "Lua 5.1" and rawget(_G, "jit") == nil
local core = require "imm.core"
local errors = require "imm.errors"

local _M = {}

--- The value an imm wait yields with. Nested coroutines pass it up.
_M.WAIT = setmetatable({}, { __tostring = function() return "imm.async.WAIT" end })
local WAIT = _M.WAIT
local DONE, CANCEL = {}, {}   -- what a waiting task is resumed with

local multi          -- the shared libcurl multi handle, made on first use
local inflight = {}  -- transfer id -> task
local timers = {}    -- task -> due time (core.monotonic seconds)
local live = 0       -- tasks not yet finished
-- running.task: the task whose coroutine is running, if any. A table field,
-- not an upvalue: under Lua 5.4's generational collector a young task
-- stored in an old closure's upvalue turns old at once, and with it its
-- coroutine and all it holds, until a major collection.
local running = {}

local function pack(...) return { n = select("#", ...), ... } end

local function cancelled_error()
  return errors.new("Cancelled", "the task was cancelled", { retryable = false })
end

--- A task: a coroutine driven by `imm.poll`.
-- @type Task
---@class imm.Task
---@field status string "running" until the task ends
local Task = {}
Task.__index = Task

--- Has the task finished (returned, failed or been cancelled)?
-- @usage while not task:done() do imm.poll(0); draw_frame() end
---@return boolean
function Task:done() return self.result_ ~= nil end

--- The task's outcome: `true, ...` (what its function returned), or
-- `false, err` when it raised (`TaskError`) or was cancelled (`Cancelled`).
-- Returns nothing while the task is still running.
-- @usage local ok, n, err = task:result()
---@return boolean|nil ok true when the function returned, false when it failed
---@return any ... what the function returned, or the error (`imm.Error`)
function Task:result()
  local r = self.result_
  if r then return unpack(r, 1, r.n) end
end

function Task:__tostring()
  return format("imm.task (%s)", self.status)
end

local function finish(task, ok, ...)
  if task.result_ then return end
  task.result_ = pack(ok, ...)
  task.status = ok and "done" or (task.cancelled and "cancelled" or "failed")
  task.waiting = nil
  timers[task] = nil
  live = live - 1
end

-- Resumes a task's coroutine with the given values until it waits or ends.
local function step(task, ...)
  local prev = running.task
  running.task = task
  local r = pack(co_resume(task.co, ...))
  running.task = prev
  if not r[1] then
    local e = r[2]
    if type(e) == "table" and e.code then  -- an imm error raised on purpose
      return finish(task, false, e)
    end
    local msg = tostring(e)
    if PUC51 and find(msg, "yield across", 1, true) then
      msg = msg .. " (Lua 5.1 cannot yield from an iterator of a for-in loop: inside a task, "
        .. "call the pager's iterator directly, `local item, err = it()`; Lua 5.2+ and LuaJIT can)"
    end
    return finish(task, false, errors.new("TaskError", msg, { retryable = false }))
  end
  if co_status(task.co) == "dead" then
    if task.cancelled then return finish(task, false, cancelled_error()) end
    return finish(task, true, unpack(r, 2, r.n))
  end
  if r[2] ~= WAIT then
    -- someone yielded across the task without passing imm's waits on
    task.cancelled = true
    return finish(task, false, errors.new("TaskError",
      "the task yielded a value imm does not know (" .. tostring(r[2]) .. "); "
      .. "coroutines inside a task must pass imm.async.WAIT up", { retryable = false }))
  end
end

--- Cancels the task: its transfer is removed, its timer dropped, and its
-- coroutine resumed so every wait returns a `Cancelled` error; the task
-- ends with `false, err` (code `Cancelled`). Cancelling a finished task
-- does nothing.
-- @return true if the task was running
-- @usage task:cancel()
---@return boolean was_running
function Task:cancel()
  if self.result_ then return false end
  self.cancelled = true
  local w = self.waiting
  if w and w.handle then
    inflight[w.id] = nil
    multi:remove(w.handle)
  end
  timers[self] = nil
  if self == running.task then return true end  -- it will see the flag at its next wait
  if co_status(self.co) == "suspended" then
    -- resume until it ends: each further wait fails at once
    local guard = 0
    step(self, CANCEL)
    while not self.result_ and guard < 1000 do
      guard = guard + 1
      step(self, CANCEL)
    end
    if not self.result_ then finish(self, false, cancelled_error()) end
  end
  return true
end

--- Drives the scheduler until this task is done, then returns its result.
-- For scripts and tests; a frame loop calls `imm.poll` instead.
-- @tparam[opt] number timeout seconds to wait at most
-- @return what `result` returns, or `nil, err` (code `Timeout`, or
--   `InvalidState` when called from inside a task)
-- @usage local ok, n = assert(task:join(30))
---@param timeout number|nil seconds
---@return boolean|nil ok
---@return any ...
function Task:join(timeout)
  if running.task then
    return nil, errors.new("InvalidState", "join cannot be called from inside a task", { retryable = false })
  end
  local limit = timeout and core.monotonic() + timeout or huge
  while not self.result_ do
    local left = limit - core.monotonic()
    if left <= 0 then
      return nil, errors.new("Timeout", format("the task did not finish within %gs", timeout),
        { retryable = false })
    end
    _M.poll(min(left * 1000, 1000))
  end
  return self:result()
end

--- Starts `fn(...)` as a task and runs it until its first wait.
-- @tparam function fn
-- @return the task
-- @usage local task = async.spawn(function() return client:all_bindings{ ProjectName = "p" } end)
---@param fn function
---@return imm.Task
function _M.spawn(fn, ...)
  if type(fn) ~= "function" then
    error("imm.spawn: expected a function, got " .. type(fn), 2)
  end
  local task = setmetatable({ co = co_create(fn), status = "running" }, Task)
  live = live + 1
  step(task, ...)
  return task
end

--- The task whose code is running now, or nil outside tasks.
function _M.current() return running.task end

-- Blocks the running task until it is resumed; returns true, or false when
-- the task was cancelled meanwhile.
local function wait(task)
  local a = co_yield(WAIT)
  -- a nested coroutine (the pager) passes the value up and back
  return a ~= CANCEL and not task.cancelled
end

--- Sends a request on the shared multi handle from inside a task and waits
-- for its reply. The results are `handle:result()`'s, or `nil, code, msg`.
-- @param handle an `imm.core.http` handle, idle
-- @tparam string method
-- @tparam string url
-- @tparam table lines header lines (`"Name: value"`), or a `{ name = value }` table
-- @tparam string body
-- @tparam boolean fresh send on a new connection
-- @tparam[opt] number timeout seconds this transfer may take at most
function _M.transfer(handle, method, url, lines, body, fresh, timeout)
  local task = running.task
  if task.cancelled then return nil, "Cancelled", "the task was cancelled" end
  if not multi then
    local m, code, msg = core.multi()
    if not m then return nil, code, msg end
    multi = m
  end
  local id, code, msg = multi:add(handle, method, url, lines, body, fresh, timeout)
  if not id then return nil, code, msg end
  inflight[id] = task
  task.waiting = { id = id, handle = handle }
  local ok = wait(task)
  task.waiting = nil
  if not ok then
    if inflight[id] then inflight[id] = nil; multi:remove(handle) end
    handle:result()  -- releases the aborted exchange; the handle is idle again
    return nil, "Cancelled", "the task was cancelled"
  end
  return handle:result()
end

--- For imm's own schedulers (`imm.parallel`): starts a transfer on the
-- shared multi handle without waiting for it. `on_done(id)` is called from
-- `imm.poll`, outside any task, once the transfer has ended; then
-- `handle:result()` reads it.
-- `timeout` (seconds, optional) caps the transfer, as in `transfer`.
-- @return the transfer id, or nil, code, message
function _M.start(handle, method, url, lines, body, fresh, on_done, timeout)
  if not multi then
    local m, code, msg = core.multi()
    if not m then return nil, code, msg end
    multi = m
  end
  local id, code, msg = multi:add(handle, method, url, lines, body, fresh, timeout)
  if not id then return nil, code, msg end
  inflight[id] = on_done
  return id
end

--- For imm's own schedulers (`imm.parallel`): once `handle`'s transfer on
-- the shared multi is on a new connection, opens `n` more TCP connections to
-- the same peer for the transfers that follow (`multi:preconnect` of
-- `imm.core`; Linux, never through a proxy). `preconnect(nil, 0)` closes the
-- ones no transfer took.
-- @return true when armed
function _M.preconnect(handle, n)
  if not multi then return false end
  return multi:preconnect(handle, n)
end

--- The shared multi's pre-connect counters: opened, used, idle (tests).
function _M.preconnected()
  if not multi then return 0, 0, 0 end
  return multi:preconnected()
end

--- Aborts a transfer made with `start` (its `on_done` is not called).
function _M.abort(handle, id)
  if inflight[id] then
    inflight[id] = nil
    multi:remove(handle)
  end
end

--- Ends a task's `sleep` early, at the next `imm.poll` (does nothing to a
-- task that is not sleeping).
function _M.wake(task)
  if timers[task] then timers[task] = 0 end
end

--- Waits `seconds` inside a task without blocking the loop.
-- @return true, or false when the task was cancelled
function _M.sleep(seconds)
  local task = running.task
  if task.cancelled then return false end
  timers[task] = core.monotonic() + max(0, seconds)
  local ok = wait(task)
  timers[task] = nil
  return ok
end

-- The earliest timer, or nil.
local function next_timer()
  local at
  for _, due in pairs(timers) do
    if not at or due < at then at = due end
  end
  return at
end

-- Milliseconds until the earliest timer (0 if one is due), or nil.
local function timer_ms()
  local at = next_timer()
  if at then return max(0, (at - core.monotonic()) * 1000) end
end

--- Drives every task once: moves transfers along, resumes tasks whose
-- replies arrived or timers fell due. Waits at most `timeout_ms` for
-- something to happen (0, the default: never waits).
-- @tparam[opt=0] number timeout_ms
-- @return the number of tasks still running
function _M.poll(timeout_ms)
  timeout_ms = timeout_ms or 0
  if type(timeout_ms) ~= "number" or timeout_ms ~= timeout_ms or timeout_ms < 0 then
    error("imm.poll: timeout_ms must be a number >= 0, got " .. tostring(timeout_ms), 2)
  end
  if running.task then
    error("imm.poll cannot be called from inside a task", 2)
  end
  local waiting = min(timeout_ms, timer_ms() or huge)
  if multi and multi:count() > 0 then
    -- curl_multi_poll also wakes for libcurl's own timers
    if waiting >= 1 then multi:wait(waiting) end
    local _, done = multi:perform()
    if done then
      for i = 1, #done do
        local task = inflight[done[i]]
        if task then
          inflight[done[i]] = nil
          if type(task) == "function" then task(done[i]) else step(task, DONE) end
        end
      end
    end
  elseif waiting > 0 and next(timers) then
    core.sleep(waiting / 1000)
  end
  if next(timers) then
    local now = core.monotonic()
    local due = {}
    for task, at in pairs(timers) do
      if at <= now then due[#due + 1] = task end
    end
    for i = 1, #due do
      if timers[due[i]] then
        timers[due[i]] = nil
        step(due[i], DONE)
      end
    end
  end
  return live
end

--- The sockets libcurl waits on and the longest a loop may sleep, for hosts
-- with their own event loop (luv, cqueues, an engine): wait until one of
-- the sockets is ready or the timeout passes, then call `imm.poll(0)`.
-- @return `{ {fd=, read=, write=}, ... }`, and the timeout in ms: the
--   sooner of libcurl's timer and the earliest retry timer, or -1 when
--   neither is set (then wait for the sockets alone; with no sockets either,
--   nothing is pending)
function _M.fds()
  local busy = multi and multi:count() > 0
  local list = busy and multi:sockets() or {}
  local ms = busy and multi:timeout() or -1
  local t = timer_ms()
  if t then ms = ms < 0 and t or min(ms, t) end
  return list, ms >= 0 and floor(ms + 0.999) or -1  -- rounded up: waking early spins
end

--- The number of tasks still running.
function _M.running() return live end

return _M
