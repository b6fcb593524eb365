-- Layer 13: non-blocking calls outside nginx (issue #9): tasks on libcurl's
-- multi interface, driven by imm.poll from a frame loop, against the local
-- IMM server. The errors-and-retries specs also run whole in async mode
-- (`make async-specs`, spec/helpers/async_mode.lua).
local fixture = require "helpers.fixture"
local imm = require "imm"
local core = require "imm.core"

-- Drives imm.poll(0) until no task runs; returns the iteration count.
local function frame_loop(seconds)
  local n, t0 = 0, core.monotonic()
  while imm.poll(0) > 0 do
    n = n + 1
    assert(core.monotonic() - t0 < (seconds or 30), "the tasks did not finish")
  end
  return n
end

-- PUC Lua 5.1 cannot yield from a for-in loop's iterator (5.2+ and LuaJIT
-- can), so there the listings call the iterator directly.
local FOR_IN_YIELDS = _VERSION ~= "Lua 5.1" or rawget(_G, "jit") ~= nil

local function count_bindings(c, params)
  local n = 0
  if FOR_IN_YIELDS then
    for b, err in c:bindings(params) do
      if not b then return nil, err end
      n = n + 1
    end
    return n
  end
  local it = c:bindings(params)
  while true do
    local b, err = it()
    if b == nil then return n end
    if not b then return nil, err end
    n = n + 1
  end
end

-- Turns the loop until cond() holds, for at most `seconds`.
local function poll_until(cond, seconds)
  local t0 = core.monotonic()
  while not cond() do
    assert(core.monotonic() - t0 < (seconds or 10), "timed out waiting")
    imm.poll(10)
  end
end

describe("async tasks", function()
  local srv
  setup(function() srv = fixture.start() end)
  teardown(function() srv.stop() end)
  before_each(function() srv.reset() end)

  it("overlaps ten slow listings driven by imm.poll(0), and the loop never stalls", function()
    srv.fault { mode = "slow", delay = 0.3, count = -1 }
    local c = srv.client { async = true }
    local tasks = {}
    for i = 1, 10 do tasks[i] = imm.spawn(count_bindings, c, { ProjectName = "immtest" }) end
    local iterations = frame_loop()
    local log = srv.log()
    for i = 1, 10 do
      local ok, n, err = tasks[i]:result()
      assert.is_true(ok)
      assert.is_nil(err)
      assert.equal(205, n)
    end
    assert.equal(20, #log, "ten listings of two pages (of 200) each")
    -- one blocking call at a time would give 1
    assert.equal(10, fixture.peak_in_flight(log), "the requests did not all overlap")
    -- A loop that waited for a reply in poll(0) would turn about once per
    -- reply (20); one that never waits turns many times per reply.
    assert.is_true(iterations > 20 * 20, "the loop turned only " .. iterations .. " times")
  end)

  it("fires the hooks for every attempt inside tasks, and takes call options there", function()
    srv.fault { mode = "throttle", count = 2 }
    local seen = {}
    local c = srv.client { async = true, max_retries = 0,
      on_request = function(info) seen[#seen + 1] = "request " .. info.attempt end,
      on_response = function(info) seen[#seen + 1] = string.format("response %d %s", info.attempt,
        tostring(info.retry)) end }
    local task = imm.spawn(function()
      return c:list_bindings({ ProjectName = "immtest", MaxResults = 1 },
        { max_retries = 2, headers = { traceparent = "tp-task" }, meta = true })
    end)
    frame_loop()
    local ok, res, err, meta = task:result()
    assert.is_true(ok)
    assert.is_nil(err)
    assert.equal(1, #res.Bindings)
    assert.equal(3, meta.attempts)
    assert.same({ "request 1", "response 1 true", "request 2", "response 2 true", "request 3",
      "response 3 false" }, seen)
    for _, rec in ipairs(srv.log()) do assert.equal("tp-task", rec.headers.traceparent) end
  end)

  it("does not wait in poll(0) while a retry timer runs", function()
    srv.fault { mode = "throttle", retry_after_ms = 400, count = 1 }
    local c = srv.client { async = true, max_retries = 2 }
    local task = imm.spawn(function() return c:list_bindings { ProjectName = "immtest", MaxResults = 1 } end)
    local iterations = frame_loop()
    local ok, res = task:result()
    assert.is_true(ok)
    assert.equal(1, #res.Bindings)
    assert.equal(2, #srv.log(), "the throttled call and its retry")
    assert.is_true(iterations > 100, "the loop turned only " .. iterations .. " times in 0.4 s")
  end)

  it("poll(timeout) waits for activity and returns as soon as a reply is in", function()
    srv.fault { mode = "slow", delay = 0.2, count = 1 }
    local c = srv.client { async = true }
    local task = imm.spawn(function() return c:list_bindings { ProjectName = "immtest", MaxResults = 1 } end)
    local polls = 0
    while imm.poll(5000) > 0 do polls = polls + 1 end
    assert.is_true(task:result())
    -- a poll that ignored its timeout would spin; one that ignored the
    -- reply would sit out 5 s per call
    assert.is_true(polls < 50, "polled " .. polls .. " times")
  end)

  it("runs the same retries and errors as blocking mode", function()
    srv.fault { mode = "unavailable", count = 2 }
    local c = srv.client { async = true, max_retries = 3 }
    local task = imm.spawn(function() return c:list_bindings { ProjectName = "immtest" } end)
    local ok, res = task:join(30)
    assert.is_true(ok)
    assert.equal(100, #res.Bindings)
    assert.equal(3, #srv.log())

    srv.reset()
    srv.fault { mode = "internal", count = -1 }
    local c0 = srv.client { async = true, max_retries = 1 }
    local _, res2, err = imm.spawn(function() return c0:list_bindings { ProjectName = "immtest" } end):join(30)
    assert.is_nil(res2)
    assert.equal("InternalError", err.code)
    assert.equal(2, err.attempts)
    local _, res3, err3 = imm.spawn(function() return c0:list_bindings { ProjectName = 42 } end):join()
    assert.is_nil(res3)
    assert.equal("InvalidParameter", err3.code)
  end)

  it("an async client outside a task blocks as a plain client does", function()
    local c = srv.client { async = true }
    local res = assert(c:list_bindings { ProjectName = "immtest", MaxResults = 3 })
    assert.equal(3, #res.Bindings)
    assert.equal(0, imm.async.running())
  end)

  it("a blocking client inside a task fails at once and says to use async = true", function()
    local c = srv.client {}
    local task = imm.spawn(function() return c:list_bindings { ProjectName = "immtest" } end)
    assert.is_true(task:done(), "it must not block the loop")
    local ok, res, err = task:join(5)
    assert.is_true(ok)
    assert.is_nil(res)
    assert.equal("InvalidConfiguration", err.code)
    assert.is_false(err.retryable)
    assert.matches("async = true", err.message, 1, true)
    assert.same({}, srv.log(), "nothing was sent")
    -- outside a task the same client works
    assert(c:list_bindings { ProjectName = "immtest", MaxResults = 1 })
  end)

  it("still lets a credentials provider make a short blocking request inside a task", function()
    local fetched = 0
    local provider = { get = function()
      local t = assert(require("imm.transport.curl").new { connect_timeout = 5, timeout = 5 })
      local res = assert(t:request { method = "GET", url = srv.url .. "/_imm/health", headers = {}, body = "" })
      t:close()
      assert(res.status == 200)
      fetched = fetched + 1
      return { access_key_id = fixture.KEY_ID, access_key_secret = fixture.SECRET }
    end }
    local c = srv.client { async = true, credentials = provider,
      access_key_id = fixture.NIL, access_key_secret = fixture.NIL }
    local ok, res, err = imm.spawn(function()
      return c:list_bindings { ProjectName = "immtest", MaxResults = 1 }
    end):join(10)
    assert.is_true(ok)
    assert.is_nil(err)
    assert.equal(1, #res.Bindings)
    assert.equal(1, fetched)
  end)

  it("cancels a task mid-transfer: Cancelled, the transfer removed, the client still usable", function()
    srv.fault { mode = "stall", delay = 10, count = 1 }
    local c = srv.client { async = true }
    local task = imm.spawn(function() return c:list_bindings { ProjectName = "immtest" } end)
    -- turn the loop until the server has the connection
    poll_until(function() return srv.stats().connections > 0 end)
    imm.poll(50)
    assert.is_false(task:done())
    local sockets = imm.fds()
    assert.is_true(#sockets >= 1, "a transfer in flight has a socket to wait on")
    assert.is_number(sockets[1].fd)
    assert.is_true(task:cancel())
    assert.is_true(task:done())
    local ok, err = task:result()
    assert.is_false(ok)
    assert.equal("Cancelled", err.code)
    assert.equal("cancelled", task.status)
    assert.equal(0, imm.poll(0))
    assert.same({}, (imm.fds()), "no socket left to wait on")
    assert.is_false(task:cancel(), "a second cancel does nothing")
    -- the same client goes on working
    local again = imm.spawn(function() return c:list_bindings { ProjectName = "immtest", MaxResults = 2 } end)
    local ok2, res = again:join(10)
    assert.is_true(ok2)
    assert.equal(2, #res.Bindings)
  end)

  it("cancels a task mid-pager, between pages", function()
    srv.fault { mode = "slow", delay = 0.2, count = -1 }
    local c = srv.client { async = true }
    local pages, last_err = 0, nil
    local task = imm.spawn(function()
      local it = c:pages("ListBindings", { ProjectName = "immtest", MaxResults = 50 })
      while true do
        local page, err = it()
        if not page then last_err = err break end
        pages = pages + 1
      end
      return "finished"
    end)
    poll_until(function() return pages >= 1 or task:done() end)
    task:cancel()
    local ok, err = task:result()
    assert.is_false(ok)
    assert.equal("Cancelled", err.code)
    assert.equal(1, pages, "no page after the cancel")
    assert.equal("Cancelled", last_err.code, "the pager saw the cancellation as its error")
    imm.poll(0)
    assert.is_true(#srv.log() <= 2)
  end)

  it("cancels a task waiting on a retry timer", function()
    srv.fault { mode = "throttle", retry_after_ms = 10000, count = -1 }
    local c = srv.client { async = true, max_retries = 5 }
    local task = imm.spawn(function() return c:list_bindings { ProjectName = "immtest" } end)
    poll_until(function() return #srv.log() > 0 end)
    imm.poll(20)
    local _, timeout = imm.fds()
    assert.is_true(timeout > 1000, "the loop may sleep until the retry timer: " .. timeout)
    task:cancel()
    local ok, err = task:result()
    assert.is_false(ok)
    assert.equal("Cancelled", err.code)
    assert.equal(0, imm.poll(0))
    assert.equal(1, #srv.log(), "no retry after the cancel")
  end)

  if not FOR_IN_YIELDS then
    it("says how to page on Lua 5.1, where a for-in iterator cannot yield", function()
      local c = srv.client { async = true }
      local task = imm.spawn(function()
        local n = 0
        for _ in c:bindings { ProjectName = "immtest" } do n = n + 1 end
        return n
      end)
      frame_loop()
      local ok, err = task:result()
      assert.is_false(ok)
      assert.equal("TaskError", err.code)
      assert.matches("call the pager's iterator directly", err.message, 1, true)
    end)
  end

  -- The lua5.4 interpreter runs the generational collector; a frame loop
  -- that spawns tasks all the time must not age each one into the old
  -- generation (as storing it in an upvalue did), where it and its page
  -- would wait for a major collection.
  if _VERSION == "Lua 5.4" then
    it("lets finished tasks die young under Lua 5.4's generational collector", function()
      local c = srv.client { async = true }
      local mode = collectgarbage("generational")
      collectgarbage("stop")  -- only the young collections below run
      finally(function()
        collectgarbage("restart")
        collectgarbage(mode)
      end)
      for _ = 1, 3 do collectgarbage("step", 0) end  -- the modules' own objects are old now
      local gone = setmetatable({}, { __mode = "k" })
      do
        local task = imm.spawn(function() return c:list_bindings { ProjectName = "immtest" } end)
        local ok, page = task:join(10)
        assert.is_true(ok)
        assert.is_table(page.Bindings)
        gone[task], gone[page] = "task", "page"
      end
      collectgarbage("step", 0)
      collectgarbage("step", 0)
      local left = {}
      for _, what in pairs(gone) do left[#left + 1] = what end
      assert.same({}, left)
    end)
  end

  it("reports a task that raises, and refuses misuse", function()
    local task = imm.spawn(function() error("boom") end)
    local ok, err = task:result()
    assert.is_false(ok)
    assert.equal("TaskError", err.code)
    assert.matches("boom", err.message)
    assert.has_error(function() imm.poll(-1) end)
    assert.has_error(function() imm.spawn(42) end)
    local inner = imm.spawn(function() return pcall(imm.poll, 0) end)
    local _, pok = inner:result()
    assert.is_false(pok, "poll from inside a task is an error")
    local res, cerr = imm.new { endpoint = srv.url, access_key_id = "a", access_key_secret = "b",
      async = true, transport = function() end }
    assert.is_nil(res)
    assert.equal("InvalidParameter", cerr.code)
  end)
end)
