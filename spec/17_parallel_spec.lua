-- Layer 17: parallel listings (issue 16) against the local IMM server: a
-- project's bindings over N requests at once, in plain Lua (blocking
-- client, the chains on one curl multi), inside imm tasks, and inside nginx
-- (spec/06 style); the prefetching pager; the connection settings that
-- make it fast.
local fixture = require "helpers.fixture"
local imm = require "imm"
local core = require "imm.core"

local DATASETS, PER = 20, 37   -- 740 bindings; pages of 10 give 4 per dataset

-- n bindings in each of d datasets named ds-01.., in the server's order.
local function data(d, per)
  local all = {}
  for i = 1, d do
    local name = string.format("ds-%02d", i)
    for _, b in ipairs(fixture.bindings("immtest", per, name)) do all[#all + 1] = b end
  end
  return { Projects = { "immtest" }, Bindings = all }
end

-- n datasets of one binding each, named m-0001..: ListDatasets pages hold
-- 200, so a failure in the first datasets comes while it is still paging.
local function many(n)
  local all = {}
  for i = 1, n do
    for _, b in ipairs(fixture.bindings("immtest", 1, string.format("m-%04d", i))) do all[#all + 1] = b end
  end
  return { Projects = { "immtest" }, Bindings = all }
end

-- PUC Lua 5.1 cannot yield from a for-in loop's iterator: in tasks the
-- listings call the iterator directly.
local function drain(it)
  local got = {}
  while true do
    local b, err = it()
    if b == nil then return got end
    if not b then return got, err end
    got[#got + 1] = b
  end
end

-- Checks that got holds every binding of data exactly once, each dataset
-- in the service's order; returns how often consecutive items came from
-- different datasets.
local function check_listing(expected, got)
  assert.equal(#expected, #got)
  local seen, by_ds = {}, {}
  for _, b in ipairs(got) do
    local key = b.DatasetName .. " " .. b.URI
    assert.is_nil(seen[key], "twice: " .. key)
    seen[key] = true
    by_ds[b.DatasetName] = by_ds[b.DatasetName] or {}
    table.insert(by_ds[b.DatasetName], b.URI)
  end
  local want = {}
  for _, b in ipairs(expected) do
    want[b.DatasetName] = want[b.DatasetName] or {}
    table.insert(want[b.DatasetName], b.URI)
  end
  assert.same(want, by_ds)
  local switches = 0
  for i = 2, #got do
    if got[i].DatasetName ~= got[i - 1].DatasetName then switches = switches + 1 end
  end
  return switches
end

-- The requests of one action in the server's log.
local function requests(log, action)
  local n = 0
  for _, rec in ipairs(log) do
    if rec.action == action then n = n + 1 end
  end
  return n
end

-- The server's log once it holds n records: the server writes a record
-- after its reply, so the last ones may lag the listing's end a little.
local function log_of(srv, n)
  local log
  for _ = 1, 100 do
    log = srv.log()
    if #log >= n then break end
    core.sleep(0.02)
  end
  return log
end

describe("parallel listing", function()
  local srv, d
  setup(function()
    srv = fixture.start()
    d = data(DATASETS, PER)
  end)
  teardown(function() srv.stop() end)
  before_each(function()
    srv.reset()
    srv.data(d)
  end)

  it("lists every binding exactly once, datasets interleaved, with at most N in flight", function()
    srv.fault { mode = "slow", delay = 0.05, count = -1 }
    local c = srv.client {}
    local got, err = drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 5, page_size = 10 }))
    assert.is_nil(err)
    local switches = check_listing(d.Bindings, got)
    assert.is_true(switches > DATASETS, "the datasets did not interleave")
    local log = srv.log()
    assert.equal(1, requests(log, "ListDatasets"))
    assert.equal(DATASETS * 4, requests(log, "ListBindings"))
    assert.equal(5, fixture.peak_in_flight(log))
  end)

  it("buffers at most N pages: no request starts before a page is taken off the queue", function()
    srv.fault { mode = "slow", delay = 0.02, count = -1 }
    local c = srv.client {}
    local taken, n = 0, 3
    for b, err in c:bindings({ ProjectName = "immtest" }, { concurrency = n, page_size = 10 }) do
      assert.is_nil(err)
      if tonumber(b.URI:match("(%d+)$")) % 10 == 1 then  -- the first item of a page
        taken = taken + 1
        local started = requests(srv.log(), "ListBindings")
        assert.is_true(started <= taken + n, string.format("%d requests for %d pages taken", started, taken))
        core.sleep(0.03)  -- a slow reader
      end
    end
    assert.equal(DATASETS * 4, taken)
  end)

  it("decodes a reply only when the caller wants its page, so its chain's next request goes first", function()
    -- every reply takes as long, so several come in at once
    srv.fault { mode = "slow", delay = 0.03, count = -1 }
    local decoded = 0
    local c = srv.client { on_response = function(info)
      if info.action == "ListBindings" then decoded = decoded + 1 end
    end }
    local taken, ahead = 0, 0
    for b, err in c:bindings({ ProjectName = "immtest" }, { concurrency = 5, page_size = 10 }) do
      assert.is_nil(err)
      if tonumber(b.URI:match("(%d+)$")) % 10 == 1 then  -- the first item of a page
        taken = taken + 1
        if decoded > taken then ahead = ahead + 1 end
      end
    end
    assert.equal(DATASETS * 4, taken)
    assert.equal(DATASETS * 4, decoded)
    assert.equal(0, ahead, "pages were decoded before the caller wanted them")
  end)

  -- each request of the log carries the header; the hooks saw each attempt
  local function check_hooks(seen, log, retried)
    assert.equal(#log, seen.requests)
    assert.equal(#log, seen.responses)
    assert.equal(#log, seen.traceparent)
    assert.equal(retried, seen.retried)
    for _, rec in ipairs(log) do assert.equal("tp-par", rec.headers.traceparent) end
  end

  local function hooked(o)
    local seen = { requests = 0, responses = 0, retried = 0, traceparent = 0 }
    o.on_request = function(info)
      seen.requests = seen.requests + 1
      if info.headers.traceparent == "tp-par" then seen.traceparent = seen.traceparent + 1 end
    end
    o.on_response = function(info)
      seen.responses = seen.responses + 1
      if info.retry then seen.retried = seen.retried + 1 end
    end
    return srv.client(o), seen
  end

  it("takes call options for every chain, and fires the hooks for every attempt", function()
    srv.fault { mode = "throttle", count = 3 }
    local c, seen = hooked {}
    local got, err = drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 4, page_size = 10,
      headers = { traceparent = "tp-par" } }))
    assert.is_nil(err)
    check_listing(d.Bindings, got)
    local log = log_of(srv, 1 + DATASETS * 4 + 3)
    assert.equal(1 + DATASETS * 4 + 3, #log)
    check_hooks(seen, log, 3)
    srv.reset()
    srv.data(d)
    srv.fault { mode = "throttle", count = -1 }
    local all
    all, err = c:all_bindings({ ProjectName = "immtest" }, { concurrency = 4, max_retries = 0 })
    assert.is_nil(all)
    assert.equal("Throttling.User", err.code)
    assert.equal(1, err.attempts)
  end)

  it("logs a hook that raises once per client, however many listings and chains run it", function()
    local log = require "imm.log"
    local lines = {}
    local warn = log.warn
    log.warn = function(m) lines[#lines + 1] = m end
    finally(function() log.warn = warn end)
    local c = srv.client { on_response = function() error("boom") end }
    for _ = 1, 2 do
      check_listing(d.Bindings, drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 4, page_size = 10 })))
    end
    assert(c:list_bindings { ProjectName = "immtest", MaxResults = 1 })
    assert.equal(1, #lines)
    assert.matches("on_response", lines[1])
  end)

  it("all_bindings and imm.bindings take concurrency too", function()
    srv.fault { mode = "slow", delay = 0.05, count = -1 }
    local c = srv.client {}
    local all = assert(c:all_bindings({ ProjectName = "immtest" }, { concurrency = 4, page_size = 25 }))
    check_listing(d.Bindings, all.Bindings)
    assert.equal(4, fixture.peak_in_flight(srv.log()))
    assert(imm.configure { endpoint = srv.url, access_key_id = fixture.KEY_ID, access_key_secret = fixture.SECRET })
    check_listing(d.Bindings, drain(imm.bindings({ ProjectName = "immtest" }, { concurrency = 3 })))
    check_listing(d.Bindings, assert(imm.all_bindings({ ProjectName = "immtest" }, { concurrency = 3 })).Bindings)
  end)

  it("keeps every page when the loop makes blocking calls on the same multi meanwhile", function()
    srv.fault { mode = "slow", delay = 0.03, count = -1 }
    local c = srv.client {}
    local other = srv.client {}
    local got, calls = {}, 0
    for b, err in c:bindings({ ProjectName = "immtest" }, { concurrency = 6, page_size = 10 }) do
      assert.is_nil(err)
      got[#got + 1] = b
      if #got % 25 == 0 then
        -- runs on the shared multi while the listing's transfers are in flight:
        -- those that end meanwhile are kept for the listing
        assert(other:list_bindings { ProjectName = "immtest", MaxResults = 1 })
        calls = calls + 1
      end
    end
    check_listing(d.Bindings, got)
    assert.is_true(calls > 20)
  end)

  it("stops at max_items and cancels the rest", function()
    local c = srv.client {}
    local got = drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 4, page_size = 10, max_items = 25 }))
    assert.equal(25, #got)
    local seen = {}
    for _, b in ipairs(got) do
      local key = b.DatasetName .. " " .. b.URI
      assert.is_nil(seen[key])
      seen[key] = true
    end
    assert.equal(0, require("imm.parallel").in_flight())
    local all = assert(c:all_bindings({ ProjectName = "immtest" }, { concurrency = 4, max_items = 7 }))
    assert.equal(7, #all.Bindings)
  end)

  it("follows every ListDatasets page", function()
    local c = srv.client {}
    -- ListDatasets pages of 200: 450 datasets of one binding each
    local big = data(450, 1)
    srv.data(big)
    local got = drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 8 }))
    check_listing(big.Bindings, got)
    assert.equal(3, requests(srv.log(), "ListDatasets"))
  end)

  it("lists sequentially with DatasetName or concurrency = 1", function()
    local c = srv.client {}
    local one = drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 1, page_size = 100 }))
    for i = 1, #d.Bindings do assert.equal(d.Bindings[i].URI, one[i].URI) end
    assert.equal(0, requests(srv.log(), "ListDatasets"))
    srv.reset()
    srv.data(d)
    local ds = drain(c:bindings({ ProjectName = "immtest", DatasetName = "ds-03" }, { concurrency = 8 }))
    assert.equal(PER, #ds)
    assert.equal(0, requests(srv.log(), "ListDatasets"))
  end)

  it("refuses bad options before sending anything", function()
    local c = srv.client {}
    for _, o in ipairs { { concurrency = 0 }, { concurrency = 2.5 }, { concurrency = "4" }, { concurrency = 101 },
      { concurrency = 4, start_token = "x" }, { prefetch = "yes" } } do
      local b, err = c:bindings({ ProjectName = "immtest" }, o)()
      assert.is_false(b)
      assert.equal("InvalidParameter", err.code)
      local all, aerr = c:all_bindings({ ProjectName = "immtest" }, o)
      assert.is_nil(all)
      assert.equal("InvalidParameter", aerr.code)
    end
    local b, err = c:datasets({ ProjectName = "immtest" }, { concurrency = 4 })()
    assert.is_false(b)
    assert.matches("concurrency is for the binding listings", err.message)
    assert.equal(0, #srv.log())
  end)

  -- docs/api.md: pages is always sequential, so it refuses concurrency
  -- rather than run one request at a time
  it("pages refuses concurrency above 1, ListBindings included, before sending anything", function()
    local c = srv.client {}
    local p, err = c:pages("ListBindings", { ProjectName = "immtest" }, { concurrency = 5 })()
    assert.is_false(p)
    assert.equal("InvalidParameter", err.code)
    assert.matches("pages", err.message)
    assert.equal(0, #srv.log())
    assert.is_table(c:pages("ListBindings", { ProjectName = "immtest" }, { concurrency = 1 })())
  end)

  it("yields false, err once when a chain fails for good, stops the rest, and resumes from err.pending", function()
    local c = srv.client { max_retries = 1 }
    local token = "immtest:ds-07:oss://bucket-0010"
    srv.fault { mode = "internal", count = -1, match = { DatasetName = "ds-07", NextToken = token } }
    local it = c:bindings({ ProjectName = "immtest" }, { concurrency = 4, page_size = 10 })
    local got, err = drain(it)
    assert.is_table(err)
    assert.equal("InternalError", err.code)
    assert.equal("ds-07", err.dataset)
    assert.equal(token, err.next_token)
    assert.equal(2, err.attempts, "the chain retried by the client's rules")
    assert.is_nil(it(), "the failure comes once, then the end")
    assert.equal(0, require("imm.parallel").in_flight(), "transfers left in flight")
    core.sleep(0.1)  -- a request cancelled just after it was written may still reach the server
    local n = #srv.log()
    core.sleep(0.3)
    assert.equal(n, #srv.log(), "requests went on after the failure")
    -- finish the listing dataset by dataset from where each stood
    srv.control("DELETE", "faults")
    local saw07 = false
    for _, p in ipairs(err.pending) do
      if p.dataset == "ds-07" then
        saw07 = true
        assert.equal(token, p.next_token)
      end
      for b, ierr in c:bindings({ ProjectName = "immtest", DatasetName = p.dataset }, { start_token = p.next_token }) do
        assert.is_nil(ierr)
        got[#got + 1] = b
      end
    end
    assert.is_true(saw07)
    check_listing(d.Bindings, got)
  end)

  it("resumes from err.resume after a dataset failed while ListDatasets was paging: each binding once", function()
    local big = many(450)   -- 3 ListDatasets pages
    srv.data(big)
    local c = srv.client { max_retries = 0 }
    -- ListDatasets' second page is slow (its token is the last name of the
    -- first), so it is still paging when m-0010 fails
    srv.fault { mode = "slow", delay = 1, count = 1, match = { NextToken = "m-0200" } }
    srv.fault { mode = "internal", count = -1, match = { DatasetName = "m-0010" } }
    local got, err = drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 4 }))
    assert.equal("InternalError", err.code)
    assert.equal("m-0010", err.dataset)
    assert.is_true(requests(srv.log(), "ListDatasets") < 3, "ListDatasets had finished: the case is not covered")
    assert.is_string(err.resume)
    srv.control("DELETE", "faults")
    local rest, rerr = drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 4, resume = err.resume }))
    assert.is_nil(rerr)
    for _, b in ipairs(rest) do got[#got + 1] = b end
    check_listing(big.Bindings, got)
    -- the same state resumes all_bindings
    local all = assert(c:all_bindings({ ProjectName = "immtest" }, { concurrency = 3, resume = err.resume }))
    assert.equal(#rest, #all.Bindings)
  end)

  it("all_bindings that fails gives back what it had (err.partial): with err.resume, each binding once", function()
    local big = many(450)
    srv.data(big)
    local c = srv.client { max_retries = 0 }
    srv.fault { mode = "slow", delay = 1, count = 1, match = { NextToken = "m-0200" } }
    srv.fault { mode = "internal", count = -1, match = { DatasetName = "m-0010" } }
    local all, err = c:all_bindings({ ProjectName = "immtest" }, { concurrency = 4 })
    assert.is_nil(all)
    assert.equal("InternalError", err.code)
    assert.is_table(err.partial)
    assert.is_true(#err.partial.Bindings > 0, "nothing had come back before the failure: the case is not covered")
    srv.control("DELETE", "faults")
    local rest = assert(c:all_bindings({ ProjectName = "immtest" }, { concurrency = 4, resume = err.resume }))
    local got = err.partial.Bindings
    for _, b in ipairs(rest.Bindings) do got[#got + 1] = b end
    check_listing(big.Bindings, got)
  end)

  it("resumes from err.resume after ListDatasets itself failed, and again after a second failure", function()
    local big = many(450)
    srv.data(big)
    local c = srv.client { max_retries = 0 }
    -- ListDatasets' second page (its token is the last name of the first)
    srv.fault { mode = "internal", count = -1, match = { NextToken = "m-0200" } }
    local got, err = drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 4 }))
    assert.equal("ListDatasets", err.action)
    assert.is_string(err.resume)
    srv.control("DELETE", "faults")
    srv.fault { mode = "internal", count = -1, match = { DatasetName = "m-0300" } }
    local more, err2 = drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 4, resume = err.resume }))
    assert.equal("m-0300", err2.dataset)
    srv.control("DELETE", "faults")
    local rest, rerr = drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 2, resume = err2.resume }))
    assert.is_nil(rerr)
    for _, l in ipairs { more, rest } do
      for _, b in ipairs(l) do got[#got + 1] = b end
    end
    check_listing(big.Bindings, got)
  end)

  it("refuses a bad resume value before sending anything", function()
    local c = srv.client { max_retries = 0 }
    srv.fault { mode = "internal", count = -1, match = { DatasetName = "ds-02" } }
    local _, err = drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 4 }))
    assert.is_string(err.resume)
    core.sleep(0.2)  -- a request cancelled just after it was written may still reach the server
    srv.control("DELETE", "log")
    for _, case in ipairs {
      { {}, { concurrency = 4, resume = "not a state" } },
      { {}, { concurrency = 4, resume = 42 } },
      { {}, { concurrency = 4, resume = "{}" } },
      { { ProjectName = "other" }, { concurrency = 4, resume = err.resume } },
      { { DatasetName = "ds-02" }, { concurrency = 4, resume = err.resume } },
      { {}, { concurrency = 4, resume = err.resume, start_token = "t" } },
    } do
      local params = { ProjectName = "immtest" }
      for k, v in pairs(case[1]) do params[k] = v end
      local b, berr = c:bindings(params, case[2])()
      assert.is_false(b)
      assert.equal("InvalidParameter", berr.code)
      local all, aerr = c:all_bindings(params, case[2])
      assert.is_nil(all)
      assert.equal("InvalidParameter", aerr.code)
    end
    local p, perr = c:pages("ListBindings", { ProjectName = "immtest" }, { resume = err.resume })()
    assert.is_false(p)
    assert.equal("InvalidParameter", perr.code)
    assert.equal(0, #srv.log())
  end)

  it("refuses to list on a closed client (blocking and async), sending nothing", function()
    for _, o in ipairs { {}, { async = true } } do
      local c = srv.client(o)
      c:close()
      for _, opts in ipairs { { concurrency = 4 }, { prefetch = true } } do
        local b, err = c:bindings({ ProjectName = "immtest" }, opts)()
        assert.is_false(b)
        assert.equal("InvalidState", err.code)
        local all, aerr = c:all_bindings({ ProjectName = "immtest" }, opts)
        assert.is_nil(all)
        assert.equal("InvalidState", aerr.code)
      end
    end
    assert.equal(0, #srv.log())
  end)

  it("stops a listing whose client is closed while it runs, with InvalidState", function()
    srv.fault { mode = "slow", delay = 0.05, count = -1 }
    local c = srv.client {}
    local it = c:bindings({ ProjectName = "immtest" }, { concurrency = 4, page_size = 10 })
    assert(it())
    c:close()
    local got, err = drain(it)
    assert.equal("InvalidState", err and err.code)
    assert.is_true(#got < #d.Bindings)
  end)

  it("retries a chain by the client's rules without holding up the others", function()
    -- two of ds-05's requests are throttled; its retries wait on timers
    srv.fault { mode = "throttle", retry_after_ms = 300, count = 2, match = { DatasetName = "ds-05" } }
    -- when each retry was decided, and when it was sent: the wait between is the hint
    local decided, resent, others = {}, {}, 0
    local c = srv.client {
      on_response = function(info) if info.retry then decided[#decided + 1] = core.monotonic() end end,
      on_request = function(info)
        if info.attempt > 1 then
          resent[#resent + 1] = core.monotonic()
        elseif #decided > #resent then
          others = others + 1  -- another dataset's request while ds-05 waits
        end
      end,
    }
    local got, err = drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 4, page_size = 10 }))
    assert.is_nil(err)
    check_listing(d.Bindings, got)
    local throttled = 0
    for _, rec in ipairs(srv.log()) do
      if rec.fault == "throttle" then throttled = throttled + 1 end
    end
    assert.equal(2, throttled)
    assert.equal(2, #decided)
    assert.equal(2, #resent)
    for i = 1, 2 do
      local waited = resent[i] - decided[i]
      assert.is_true(waited >= 0.3, string.format("retry %d was sent after %.3f s, not the 0.3 s asked for", i, waited))
    end
    assert.is_true(others > 0, "the other datasets waited for ds-05's retries")
  end)

  it("cancels the requests in flight when the loop is left (explicit close, or collection)", function()
    -- ds-02 answers after 3 s, the others at once
    srv.fault { mode = "slow", delay = 3, count = -1, match = { DatasetName = "ds-02" } }
    local parallel = require "imm.parallel"
    local c = srv.client {}
    local t0 = core.monotonic()
    local it, _, _, listing = c:bindings({ ProjectName = "immtest" }, { concurrency = 6, page_size = 10 })
    assert(it())
    assert.is_true(parallel.in_flight() > 0)
    listing:close()
    assert.equal(0, parallel.in_flight())
    listing:close()  -- twice is fine
    assert.is_nil(it())
    -- a loop left with break: the iterator is garbage, and so is the listing
    for b in c:bindings({ ProjectName = "immtest" }, { concurrency = 6, page_size = 10 }) do  -- luacheck: ignore 512
      assert.is_table(b)
      break
    end
    if _VERSION == "Lua 5.4" then
      -- the fourth value of the for-in loop is closed when the loop is left
      assert.equal(0, parallel.in_flight())
    else
      assert.is_true(parallel.in_flight() > 0)
    end
    collectgarbage()
    collectgarbage()
    assert.equal(0, parallel.in_flight())
    assert.is_true(core.monotonic() - t0 < 2.5, "waited for the cancelled requests")
  end)

  it("raises a bug inside a chain (a decoder that raises) once, and leaves no transfer behind", function()
    local parallel = require "imm.parallel"
    local c = srv.client { decoder = function() error("planted bug", 0) end }
    local it = c:bindings({ ProjectName = "immtest" }, { concurrency = 4, page_size = 10 })
    local ok, e = pcall(it)
    assert.is_false(ok)
    assert.equal("planted bug", e)
    assert.equal(0, parallel.in_flight())
    assert.is_nil(it())
  end)

  it("a new client reuses the connection of an earlier one (one cache per lua_State)", function()
    -- judged by the connection each request came on (the server's log), not
    -- by its count of accepted connections: earlier listings' pre-connected
    -- sockets may still be accepted meanwhile on a loaded host
    local a = srv.client {}
    assert(a:list_bindings { ProjectName = "immtest", MaxResults = 1 })
    local log = srv.log()
    local first = log[#log]
    local b = srv.client {}
    assert(b:list_bindings { ProjectName = "immtest", MaxResults = 1 })
    log = srv.log()
    local second = log[#log]
    assert.equal("ListBindings", first.action)
    assert.equal("ListBindings", second.action)
    assert.are_not.equal(first.seq, second.seq)
    assert.is_number(first.conn)
    assert.equal(first.conn, second.conn)
  end)
end)

describe("parallel listing inside imm tasks", function()
  local srv, d
  setup(function()
    srv = fixture.start()
    d = data(DATASETS, PER)
  end)
  teardown(function() srv.stop() end)
  before_each(function()
    srv.reset()
    srv.data(d)
  end)

  it("lists every binding once with N in flight, while imm.poll drives it", function()
    srv.fault { mode = "slow", delay = 0.05, count = -1 }
    local c = srv.client { async = true }
    local task = imm.spawn(function()
      return drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 5, page_size = 10 }))
    end)
    local turns = 0
    while imm.poll(0) > 0 do turns = turns + 1 end
    local ok, got, err = task:result()
    assert.is_true(ok)
    assert.is_nil(err)
    check_listing(d.Bindings, got)
    assert.equal(5, fixture.peak_in_flight(srv.log()))
    assert.is_true(turns > 80, "the frame loop was blocked")
  end)

  it("fires the hooks for every attempt of every chain, with the call's headers", function()
    srv.fault { mode = "throttle", count = 3 }
    local seen = { requests = 0, responses = 0, retried = 0, traceparent = 0 }
    local c = srv.client { async = true,
      on_request = function(info)
        seen.requests = seen.requests + 1
        if info.headers.traceparent == "tp-par" then seen.traceparent = seen.traceparent + 1 end
      end,
      on_response = function(info)
        seen.responses = seen.responses + 1
        if info.retry then seen.retried = seen.retried + 1 end
      end }
    local task = imm.spawn(function()
      return drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 4, page_size = 10,
        headers = { traceparent = "tp-par" } }))
    end)
    while imm.poll(0) > 0 do end
    local ok, got, err = task:result()
    assert.is_true(ok)
    assert.is_nil(err)
    check_listing(d.Bindings, got)
    local log = log_of(srv, 1 + DATASETS * 4 + 3)
    assert.equal(1 + DATASETS * 4 + 3, #log)
    assert.equal(#log, seen.requests)
    assert.equal(#log, seen.responses)
    assert.equal(#log, seen.traceparent)
    assert.equal(3, seen.retried)
    for _, rec in ipairs(log) do assert.equal("tp-par", rec.headers.traceparent) end
  end)

  it("an async client outside a task drives imm.poll itself; a listing may move between tasks", function()
    srv.fault { mode = "slow", delay = 0.05, count = -1 }
    local c = srv.client { async = true }
    check_listing(d.Bindings, drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 4, page_size = 10 })))
    assert.equal(4, fixture.peak_in_flight(srv.log()))
    -- made outside any task, each step taken in a task of its own
    local it = c:bindings({ ProjectName = "immtest" }, { concurrency = 4, page_size = 10 })
    local got = {}
    while true do
      local ok, b, err = imm.spawn(it):join(10)
      assert.is_true(ok)
      assert.is_nil(err)
      if b == nil then break end
      got[#got + 1] = b
    end
    check_listing(d.Bindings, got)
  end)

  it("resumes from err.resume inside a task, each binding once", function()
    local big = many(450)
    srv.data(big)
    local c = srv.client { async = true, max_retries = 0 }
    srv.fault { mode = "slow", delay = 1, count = 1, match = { NextToken = "m-0200" } }
    srv.fault { mode = "internal", count = -1, match = { DatasetName = "m-0010" } }
    local ok, got, err = imm.spawn(function()
      return drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 4 }))
    end):join(20)
    assert.is_true(ok)
    assert.equal("m-0010", err.dataset)
    srv.control("DELETE", "faults")
    local ok2, rest, err2 = imm.spawn(function()
      return drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 4, resume = err.resume }))
    end):join(20)
    assert.is_true(ok2)
    assert.is_nil(err2)
    for _, b in ipairs(rest) do got[#got + 1] = b end
    check_listing(big.Bindings, got)
  end)

  it("fails once with err.dataset, and cancels on close", function()
    local c = srv.client { async = true, max_retries = 0 }
    srv.fault { mode = "internal", count = -1, match = { DatasetName = "ds-11" } }
    local ok, got, err = imm.spawn(function()
      return drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 3 }))
    end):join(20)
    assert.is_true(ok)
    assert.equal("ds-11", err.dataset)
    assert.is_nil(err.next_token)
    assert.is_true(#got < #d.Bindings)
    srv.control("DELETE", "faults")
    srv.fault { mode = "slow", delay = 1, count = -1 }
    local t0 = core.monotonic()
    local left
    ok = imm.spawn(function()
      local it, _, _, listing = c:bindings({ ProjectName = "immtest" }, { concurrency = 4, page_size = 10 })
      assert(it())
      listing:close()
      left = #imm.fds()
    end):join(20)
    assert.is_true(ok)
    assert.equal(0, left, "sockets still busy after close")
    assert.is_true(core.monotonic() - t0 < 2.5)
  end)
end)

describe("prefetch", function()
  local srv
  setup(function() srv = fixture.start() end)
  teardown(function() srv.stop() end)
  before_each(function()
    srv.reset()
    srv.data { Projects = { "p" }, Bindings = fixture.bindings("p", 45) }
  end)

  it("sends the next page's request while the caller works on the current one", function()
    local c = srv.client {}
    local got, asked = {}, {}
    for b, err in c:bindings({ ProjectName = "p" }, { page_size = 10, prefetch = true }) do
      assert.is_nil(err)
      got[#got + 1] = b
      if #got % 10 == 1 then
        asked[#asked + 1] = core.monotonic()
        core.sleep(0.3)  -- the caller's work on this page
      end
    end
    assert.equal(45, #got)
    for i = 1, 45 do assert.equal(string.format("oss://bucket-%04d", i), got[i].URI) end
    local log = srv.log()
    assert.equal(5, #log)
    -- page k+1 was asked for while the caller still worked on page k
    for k = 1, 4 do
      assert.is_true(log[k + 1].start < asked[k] + 0.3,
        string.format("page %d was requested only after the work on page %d", k + 1, k))
    end
  end)

  it("keeps err.next_token exact, and a break wastes at most one fetch", function()
    local c = srv.client { max_retries = 0 }
    srv.fault { mode = "internal", count = -1, match = { NextToken = "p:ds:oss://bucket-0020" } }
    local got, err = drain(c:bindings({ ProjectName = "p" }, { page_size = 10, prefetch = true }))
    assert.equal(20, #got)
    assert.equal("InternalError", err.code)
    assert.equal("p:ds:oss://bucket-0020", err.next_token)
    srv.control("DELETE", "faults")
    local rest = drain(c:bindings({ ProjectName = "p" }, { page_size = 10, start_token = err.next_token,
      prefetch = true }))
    assert.equal(25, #rest)
    assert.equal("oss://bucket-0021", rest[1].URI)
    srv.control("DELETE", "log")
    local opts = { page_size = 10, prefetch = true }
    for _ in c:bindings({ ProjectName = "p" }, opts) do break end  -- luacheck: ignore 512
    collectgarbage()
    collectgarbage()
    assert.is_true(#srv.log() <= 2, "more than one page fetched ahead")
    assert.equal(0, require("imm.parallel").in_flight())
  end)

  it("works for pages and with max_items", function()
    local c = srv.client {}
    local n = 0
    for page in c:pages("ListBindings", { ProjectName = "p" }, { page_size = 20, prefetch = true }) do
      n = n + #page.Bindings
    end
    assert.equal(45, n)
    srv.control("DELETE", "log")
    local got = drain(c:bindings({ ProjectName = "p" }, { page_size = 10, max_items = 15, prefetch = true }))
    assert.equal(15, #got)
    assert.equal(2, #srv.log())
  end)
end)

describe("page size", function()
  local srv
  setup(function() srv = fixture.start() end)
  teardown(function() srv.stop() end)
  before_each(function() srv.reset() end)

  it("asks for 200 items a page unless told otherwise", function()
    local c = srv.client {}
    local function sizes(params, opts)
      srv.control("DELETE", "log")
      drain(c:bindings(params, opts))
      local out = {}
      for i, rec in ipairs(srv.log()) do out[i] = rec.params.MaxResults end
      return out
    end
    assert.same({ "200", "200" }, sizes({ ProjectName = "immtest" }))
    assert.same({ "50", "50", "50", "50", "50" }, sizes({ ProjectName = "immtest" }, { page_size = 50 }))
    assert.same({ "30", "30", "30", "30", "30", "30", "30" }, sizes({ ProjectName = "immtest", MaxResults = 30 }))
    assert.same({ "5" }, sizes({ ProjectName = "immtest" }, { max_items = 5 }))
    assert.same({ "200", "50" }, sizes({ ProjectName = "immtest" }, { max_items = 250 }))
  end)
end)

describe("connections", function()
  local tls
  setup(function() tls = fixture.start { tls = true } end)
  teardown(function() tls.stop() end)

  it("drops the default CApath whenever a CA file is in use, so libcurl keeps the parsed store", function()
    assert.is_true(core.http({ ca_file = fixture.certs() .. "/ca.crt" }):debug().capath_cleared)
    -- the system bundle (CURLINFO_CAINFO) is a CA file too
    assert.is_true(core.http({}):debug().capath_cleared)
    assert.is_false(core.http({ insecure = true }):debug().capath_cleared)
  end)

  it("still verifies each client against its own CA file on the shared multi", function()
    local good = tls.client {}
    assert(good:list_bindings { ProjectName = "immtest", MaxResults = 1 })
    local other = tls.client { ca_file = fixture.certs() .. "/other-ca.crt", max_retries = 0 }
    local res, err = other:list_bindings { ProjectName = "immtest", MaxResults = 1 }
    assert.is_nil(res)
    assert.equal("TLSError", err.code)
    assert(good:list_bindings { ProjectName = "immtest", MaxResults = 1 })
  end)

  it("waits to multiplex only on origins that spoke HTTP/2 (the local server speaks 1.1)", function()
    local c = tls.client {}
    assert(c:all_bindings({ ProjectName = "immtest" }, { concurrency = 4 }))
    assert.equal(0, core.shared_multi():h2_origins())
    local h = core.http { ca_file = fixture.certs() .. "/ca.crt", shared = true }
    assert(h:request("POST", tls.url .. "/_imm/health", {}, ""))
    assert.is_false(h:debug().pipewait)
  end)

  it("checks pool_size", function()
    for _, v in ipairs { 0, -1, 2.5, 100001 } do
      local c, err = imm.new { endpoint = "http://127.0.0.1:1", access_key_id = "a", access_key_secret = "b",
        pool_size = v }
      assert.is_nil(c)
      assert.equal("InvalidParameter", err.code)
      assert.matches("pool_size", err.message)
    end
    local c, err = imm.new { endpoint = "http://127.0.0.1:1", access_key_id = "a", access_key_secret = "b",
      pool_size = "8" }
    assert.is_nil(c)
    assert.matches("pool_size must be a number", err.message)
    assert(imm.new { endpoint = "http://127.0.0.1:1", access_key_id = "a", access_key_secret = "b", pool_size = 8 })
  end)
end)

-- Issue 24: while ListDatasets is in flight, the TCP handshakes of the
-- chains' connections (core's m:preconnect). Each test has a server of its
-- own, so ListDatasets opens a new connection, as a first listing does.
describe("pre-connected sockets", function()
  local proxy_fixture = require "helpers.proxy"

  -- The descriptors this process holds open.
  local pid = assert(fixture.read("/proc/self/stat")):match("^(%d+)")
  local function fds()
    local p = assert(io.popen("ls /proc/" .. pid .. "/fd"))
    local n = 0
    for _ in p:lines() do n = n + 1 end
    p:close()
    return n - 1  -- the pipe to ls
  end

  -- fds() once it holds still (two readings 100 ms apart agree; at most
  -- 2 s): descriptors that other code opens or closes late (a collected
  -- handle, a server's pipe) settle first; one this spec leaks stays.
  local function steady()
    local n = fds()
    for _ = 1, 20 do
      core.sleep(0.1)
      local now = fds()
      if now == n then return now end
      n = now
    end
    return n
  end

  -- The pre-connect counters of the blocking chains' multi.
  local function counters()
    local opened, used, idle = core.shared_multi():preconnected()
    return { opened = opened, used = used, idle = idle }
  end

  -- Connections the server accepted since `before`, once it has caught up
  -- with want (its accept loop may lag the client's connect()).
  local function accepted(srv, before, want)
    local n
    for _ = 1, 100 do
      n = srv.stats().connections - before
      if n >= want then break end
      core.sleep(0.02)
    end
    return n
  end

  -- The connections that carried API requests, from the server's log.
  local function carried(log)
    local seen, n = {}, 0
    for _, rec in ipairs(log) do
      if rec.action and not seen[rec.conn] then seen[rec.conn], n = true, n + 1 end
    end
    return n
  end

  for _, tls in ipairs { false, true } do
    it("a fan-out takes them for its new connections, with the same bindings (" .. (tls and "https" or "http") .. ")",
      function()
        local srv = fixture.start { tls = tls }
        finally(srv.stop)
        local d = data(6, 25)
        srv.data(d)
        -- slow replies: the chains surely overlap and need connections of their own
        srv.fault { mode = "slow", delay = 0.03, count = -1 }
        local before, was = srv.stats().connections, counters()
        local c = srv.client {}
        local got, err = drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 5, page_size = 10 }))
        assert.is_nil(err)
        check_listing(d.Bindings, got)
        local now = counters()
        local opened, used = now.opened - was.opened, now.used - was.used
        assert.equal(4, opened, "concurrency - 1 opened while ListDatasets was in flight")
        assert.is_true(used >= 1, "no chain took a pre-connected socket")
        assert.equal(0, now.idle, "the unused ones are closed when the listing ends")
        -- every connection the server accepted carried requests, or was a
        -- pre-connected one no chain took; the control calls' connection aside
        local log = log_of(srv, 1 + 6 * 3)
        local conns = carried(log)
        assert.equal(conns + (opened - used), accepted(srv, before, conns + opened - used))
        assert.is_true(conns >= 1 + used)
      end)
  end

  it("leaves no descriptor behind: unused sockets closed on preconnect(nil, 0) and with the multi", function()
    local srv = fixture.start {}
    finally(srv.stop)
    -- what earlier specs left for the collector is closed before counting,
    -- and the count taken once it holds still
    collectgarbage()
    collectgarbage()
    local base = steady()
    local m = core.multi()
    -- moves m's transfers until `left` of them have ended
    local function finish(left)
      while left > 0 do
        local running, done = m:perform()
        assert(running, done)
        left = left - #(done or {})
        if left > 0 then m:wait(100) end
      end
    end
    local function run(hs)
      -- fresh: new connections, whatever libcurl's scheduling would reuse
      for _, h in ipairs(hs) do assert(m:add(h, "GET", srv.url .. "/_imm/health", {}, "", true)) end
      finish(#hs)
      for _, h in ipairs(hs) do assert.equal(200, (h:result())) end
    end
    local h0 = core.http { timeout = 5 }
    assert(m:add(h0, "GET", srv.url .. "/_imm/health", {}, ""))
    assert.is_true(m:preconnect(h0, 3))
    finish(1)
    assert.equal(200, (h0:result()))
    assert.same({ 3, 0, 3 }, { m:preconnected() })
    -- two new connections take two of them; one stays unused
    local hs = { core.http { timeout = 5 }, core.http { timeout = 5 } }
    run(hs)
    assert.same({ 3, 2, 1 }, { m:preconnected() })
    local held = fds()
    m:preconnect(nil, 0)
    assert.equal(held - 1, fds())
    assert.same({ 3, 2, 0 }, { m:preconnected() })
    -- armed again, on a new connection (fresh), and closed with the multi unused
    assert(m:add(h0, "GET", srv.url .. "/_imm/health", {}, "", true))
    assert.is_true(m:preconnect(h0, 3))
    finish(1)
    assert.equal(200, (h0:result()))
    assert.same({ 6, 2, 3 }, { m:preconnected() })
    m:close()
    h0:close()
    for _, h in ipairs(hs) do h:close() end
    assert.equal(base, steady())
  end)

  it("an async client's fan-out takes them too, on the tasks' multi", function()
    local async = require "imm.async"
    local srv = fixture.start {}
    finally(srv.stop)
    local d = data(6, 25)
    srv.data(d)
    srv.fault { mode = "slow", delay = 0.03, count = -1 }
    local was = { async.preconnected() }
    local c = srv.client { async = true }
    local task = imm.spawn(function()
      return drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 5, page_size = 10 }))
    end)
    while imm.poll(10) > 0 do end
    local ok, got, err = task:result()
    assert.is_true(ok, tostring(got))
    assert.is_nil(err)
    check_listing(d.Bindings, got)
    local now = { async.preconnected() }
    assert.equal(4, now[1] - was[1], "concurrency - 1 opened while ListDatasets was in flight")
    assert.is_true(now[2] - was[2] >= 1, "no chain took a pre-connected socket")
    assert.equal(0, now[3], "the unused ones are closed when the listing ends")
  end)

  it("never with a proxy: the fan-out connects through it as before", function()
    local srv = fixture.start {}
    local proxy = proxy_fixture.start()
    finally(function() srv.stop() proxy.stop() end)
    local d = data(4, 15)
    srv.data(d)
    local was = counters()
    local c = srv.client { proxy = proxy.url }
    local got, err = drain(c:bindings({ ProjectName = "immtest" }, { concurrency = 4, page_size = 10 }))
    assert.is_nil(err)
    check_listing(d.Bindings, got)
    assert.equal(was.opened, counters().opened)
    assert.is_true(proxy.count() > 0, "the requests went through the proxy")
    -- nor with one from the environment (a process of its own: libcurl reads it there)
    local dir = fixture.tmpdir()
    local f = assert(io.open(dir .. "/t.lua", "w"))
    f:write([[
      local imm, core = require "imm", require "imm.core"
      local c = assert(imm.new { endpoint = arg[1], access_key_id = arg[2], access_key_secret = arg[3] })
      local n = 0
      for b, e in c:bindings({ ProjectName = "immtest" }, { concurrency = 4, page_size = 10 }) do
        assert(b, tostring(e))
        n = n + 1
      end
      print("listed", n, "opened", (core.shared_multi():preconnected()))
    ]])
    f:close()
    proxy.reset()
    local p = io.popen("env http_proxy=" .. proxy.url .. " no_proxy= NO_PROXY= " .. (arg and arg[-1] or "lua")
      .. " " .. dir .. "/t.lua " .. srv.url .. " " .. fixture.KEY_ID .. " " .. fixture.SECRET .. " 2>&1")
    local out = p:read("*a")
    p:close()
    fixture.sh("rm -rf " .. dir)
    assert.matches("listed%s+60%s+opened%s+0", out)
    assert.is_true(proxy.count() > 0, "the requests went through the proxy")
    -- the C side refuses it too
    local m = core.multi()
    local h = core.http { timeout = 5, proxy = proxy.url }
    assert(m:add(h, "GET", srv.url .. "/_imm/health", {}, ""))
    assert.is_false(m:preconnect(h, 3))
    m:close()
    h:close()
  end)
end)

describe("parallel listing inside nginx", function()
  local nginx = require "helpers.nginx"
  local cjson = require "cjson"
  local srv, ngx_srv, d
  setup(function()
    srv = fixture.start()
    d = data(DATASETS, PER)
    ngx_srv = nginx.run {
      locations = [[location = /parallel { content_by_lua_block { require("parallel_handler").run() } }]],
    }
  end)
  teardown(function()
    if ngx_srv then ngx_srv.stop() end
    srv.stop()
  end)
  before_each(function()
    srv.reset()
    srv.data(d)
  end)

  local function list(args)
    local parts = { "port=" .. srv.port }
    for k, v in pairs(args) do parts[#parts + 1] = k .. "=" .. tostring(v) end
    local status, body = ngx_srv.raw("/parallel?" .. table.concat(parts, "&"))
    assert.equal(200, status, tostring(body) .. ngx_srv.error_log():sub(-1500))
    local r = cjson.decode(body)
    local got = {}
    for i, p in ipairs(r.items) do got[i] = { DatasetName = p[1], URI = p[2] } end
    return r, got
  end

  it("lists every binding once on light threads, with at most N in flight", function()
    srv.fault { mode = "slow", delay = 0.05, count = -1 }
    local r, got = list { concurrency = 5, page_size = 10 }
    assert.is_nil(r.err)
    assert.is_true(check_listing(d.Bindings, got) > DATASETS, "the datasets did not interleave")
    assert.equal(5, fixture.peak_in_flight(srv.log()))
  end)

  it("fires the hooks for every attempt on the light threads, with the call's headers", function()
    srv.fault { mode = "throttle", count = 3 }
    local r, got = list { concurrency = 4, page_size = 10, hooks = 1, traceparent = "tp-ngx" }
    assert.is_nil(r.err)
    check_listing(d.Bindings, got)
    local log = log_of(srv, 1 + DATASETS * 4 + 3)
    assert.equal(1 + DATASETS * 4 + 3, #log)
    assert.equal(#log, r.hooks.requests)
    assert.equal(#log, r.hooks.responses)
    assert.equal(#log, r.hooks.traceparent)
    assert.equal(3, r.hooks.retried)
    for _, rec in ipairs(log) do assert.equal("tp-ngx", rec.headers.traceparent) end
  end)

  it("reports a failed chain once, with err.dataset and err.next_token", function()
    local token = "immtest:ds-04:oss://bucket-0020"
    srv.fault { mode = "internal", count = -1, match = { DatasetName = "ds-04", NextToken = token } }
    local r = list { concurrency = 4, page_size = 10, max_retries = 0 }
    assert.equal("InternalError", r.err.code)
    assert.equal("ds-04", r.err.dataset)
    assert.equal(token, r.err.next_token)
    assert.is_true(#r.err.pending > 0)
  end)

  it("resumes from err.resume after a dataset failed while ListDatasets was paging, each binding once", function()
    local big = many(450)
    srv.data(big)
    srv.fault { mode = "slow", delay = 1, count = 1, match = { NextToken = "m-0200" } }
    srv.fault { mode = "internal", count = -1, match = { DatasetName = "m-0010" } }
    local r, got = list { concurrency = 4, max_retries = 0 }
    assert.equal("m-0010", r.err.dataset)
    assert.is_string(r.err.resume)
    srv.control("DELETE", "faults")
    local r2, rest = list { concurrency = 4, resume = core.percent_encode(r.err.resume) }
    assert.is_nil(r2.err)
    for _, b in ipairs(rest) do got[#got + 1] = b end
    check_listing(big.Bindings, got)
  end)

  it("raises a bug inside a light thread in the reader, once, as the libcurl path does", function()
    local t0 = core.monotonic()
    local r = list { concurrency = 4, page_size = 10, buggy = 1 }
    assert.equal("planted bug", r.raised)
    assert.is_nil(r.err)
    -- nginx finishes a request only when its light threads have ended
    assert.is_true(core.monotonic() - t0 < 2, "a light thread outlived the raised listing")
  end)

  it("kills the light threads when the listing is closed, and ends them when the reader is gone", function()
    srv.fault { mode = "slow", delay = 3, count = -1, match = { DatasetName = "ds-02" } }
    local t0 = core.monotonic()
    local r = list { concurrency = 6, page_size = 10, break_after = 1, close = 1 }
    assert.equal(1, #r.items)
    -- nginx finishes a request only when its light threads have ended
    assert.is_true(core.monotonic() - t0 < 2, "a light thread outlived the closed listing")
    -- without close: the threads notice the handler has returned, and end
    -- once their request in flight is done
    t0 = core.monotonic()
    r = list { concurrency = 6, page_size = 10, break_after = 1 }
    assert.equal(1, #r.items)
    assert.is_true(core.monotonic() - t0 < 5.5)
  end)

  it("waits to multiplex (PIPEWAIT) once an origin has answered over HTTP/2", function()
    local pf = io.popen("env -u LD_PRELOAD python3 -c 'import socket; s=socket.socket(); "
      .. "s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'")
    local port = tonumber(pf:read("*l"))
    pf:close()
    local certs = fixture.certs()
    local h2 = nginx.run { http = string.format([[server {
    listen 127.0.0.1:%d ssl http2;
    ssl_certificate %s/server.crt; ssl_certificate_key %s/server.key;
    location / { return 200 "{}"; }
  }]], port, certs, certs) }
    finally(h2.stop)
    local url = "https://127.0.0.1:" .. port .. "/"
    local known = core.shared_multi():h2_origins()
    local h = core.http { ca_file = certs .. "/ca.crt", shared = true }
    assert.equal(200, (h:request("GET", url, {}, "")))
    assert.is_false(h:debug().pipewait, "waited on an origin not known to speak h2")
    assert.equal(known + 1, core.shared_multi():h2_origins())
    assert.equal(200, (h:request("GET", url, {}, "")))
    assert.is_true(h:debug().pipewait)
    assert.equal(known + 1, core.shared_multi():h2_origins(), "an origin is remembered once")
  end)

  it("prefetches on a light thread", function()
    local r, got = list { page_size = 10, prefetch = 1 }
    assert.is_nil(r.err)
    for i = 1, #d.Bindings do assert.equal(d.Bindings[i].URI, got[i].URI) end
  end)
end)

describe("imm list-bindings --all --concurrency", function()
  local cjson = require "cjson"
  local LUA = arg[-1] or "lua"
  local srv, d
  setup(function()
    srv = fixture.start()
    d = data(DATASETS, PER)
  end)
  teardown(function() srv.stop() end)
  before_each(function()
    srv.reset()
    srv.data(d)
  end)

  local function run(args)
    local errfile = srv.dir .. "/cli-stderr"
    local cmd = string.format("env IMM_ENDPOINT=%s ALIBABA_CLOUD_ACCESS_KEY_ID=%s ALIBABA_CLOUD_ACCESS_KEY_SECRET=%s "
      .. "%s bin/imm %s 2>%s; echo \"exit=$?\"", srv.url, fixture.KEY_ID, fixture.SECRET, LUA, args, errfile)
    local p = io.popen(cmd)
    local all = p:read("*a")
    p:close()
    local out, status = all:match("^(.*)exit=(%d+)\n$")
    local err = fixture.read(errfile)
    os.remove(errfile)
    return out, err, tonumber(status)
  end

  it("lists the whole project N datasets at a time, one JSON object per line", function()
    srv.fault { mode = "slow", delay = 0.05, count = -1 }
    local out, err, status = run("list-bindings --project immtest --all --concurrency 4 --max-results 10")
    assert.equal(0, status, err)
    local got = {}
    for l in out:gmatch("[^\n]+") do got[#got + 1] = cjson.decode(l) end
    check_listing(d.Bindings, got)
    assert.equal(4, fixture.peak_in_flight(srv.log()))
  end)

  it("refuses a bad --concurrency, and says how to finish after a failure", function()
    for _, a in ipairs { "--all --concurrency 0", "--all --concurrency x", "--concurrency 4",
      "--all --concurrency 4 --next-token t" } do
      local out, err, status = run("list-bindings --project immtest " .. a)
      assert.equal(2, status)
      assert.equal("", out)
      assert.matches("concurrency", err)
    end
    assert.equal(0, #srv.log())
  end)

  it("prints one command that finishes the listing after a failure, even while ListDatasets was paging", function()
    local big = many(450)
    srv.data(big)
    srv.fault { mode = "slow", delay = 4, count = 1, match = { NextToken = "m-0200" } }
    srv.fault { mode = "internal", count = -1, match = { DatasetName = "m-0010" } }
    local out, err, status = run("list-bindings --project immtest --all --concurrency 4")
    assert.equal(1, status)
    assert.matches("InternalError", err)
    local got = {}
    for l in out:gmatch("[^\n]+") do got[#got + 1] = cjson.decode(l) end
    local cmds = {}
    for c in err:gmatch("\n  imm (list%-bindings [^\n]+)") do cmds[#cmds + 1] = c end
    assert.equal(1, #cmds, err)
    assert.matches("%-%-resume ", cmds[1])
    srv.control("DELETE", "faults")
    local out2, err2, status2 = run(cmds[1])
    assert.equal(0, status2, err2)
    for l in out2:gmatch("[^\n]+") do got[#got + 1] = cjson.decode(l) end
    check_listing(big.Bindings, got)
  end)
end)

-- Issue 20, part 3: prefetch hands over every page the sequential pager
-- does, empty ones included, on the libcurl path and inside nginx.
describe("prefetch and empty pages", function()
  local cjson = require "cjson"
  local hostile = require "helpers.hostile"
  local nginx = require "helpers.nginx"
  local srv, ngx_srv
  setup(function()
    srv = hostile.start()
    ngx_srv = nginx.run {
      locations = "location = /run { content_by_lua_block { require('hostile_handler').run() } }" }
  end)
  teardown(function()
    if ngx_srv then ngx_srv.stop() end
    if srv then srv.stop() end
  end)

  local function reply(body) return { status = 200, body = cjson.encode(body) } end
  local EMPTY = setmetatable({}, cjson.array_mt)
  local MIDDLE_EMPTY = {
    reply { RequestId = "r1", Files = { { URI = "oss://b/1" } }, NextToken = "t1", TotalHits = 2 },
    reply { RequestId = "r2", Files = EMPTY, NextToken = "t2", TotalHits = 2 },
    reply { RequestId = "r3", Files = { { URI = "oss://b/2" } }, NextToken = "", TotalHits = 2 },
  }
  local AGGREGATION_ONLY = {
    reply { RequestId = "r1", Files = EMPTY, TotalHits = 7,
      Aggregations = { { Field = "Size", Operation = "sum", Value = 12345 } } },
  }

  local function run(tr, script, prefetch)
    srv.script(script)
    local a = { mode = "listing", action = "SimpleQuery", params = { ProjectName = "p", DatasetName = "d" },
      pager = { prefetch = prefetch }, port = srv.port, transport = tr }
    if tr == "curl" then return hostile.run(a) end
    local status, body = ngx_srv.raw("/run?a=" .. core.percent_encode(cjson.encode(a)))
    assert(status == 200, "nginx /run -> " .. tostring(status) .. " " .. tostring(body)
      .. "\n" .. ngx_srv.error_log():sub(-2000))
    return cjson.decode(body)
  end

  for _, tr in ipairs { "curl", "ngx" } do
    it("hands over three pages, the middle one empty, as three (" .. tr .. ")", function()
      local plain = run(tr, MIDDLE_EMPTY, false)
      assert.is_nil(plain.err)
      assert.same({ 1, 0, 1 }, { plain.pages[1].n, plain.pages[2].n, plain.pages[3].n })
      local pre = run(tr, MIDDLE_EMPTY, true)
      assert.is_nil(pre.err)
      assert.same(plain.pages, pre.pages)
      assert.equal(2, pre.count)
      assert.equal(3, #srv.log())
    end)

    it("hands over a listing of one empty page, with its Aggregations and TotalHits (" .. tr .. ")", function()
      local plain = run(tr, AGGREGATION_ONLY, false)
      assert.same({ { n = 0, total = 7, aggregations = true } }, plain.pages)
      local pre = run(tr, AGGREGATION_ONLY, true)
      assert.is_nil(pre.err)
      assert.same(plain.pages, pre.pages)
    end)
  end
end)
