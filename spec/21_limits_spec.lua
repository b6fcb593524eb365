-- Layer 21: limits shared across workers and hosts (issue 23, part 5). The
-- client-side rate limit (imm.ratelimit) in one process, in a
-- lua_shared_dict for 4 nginx workers, and in Redis for two nginx; and
-- credentials kept in a shared dict (imm.credentials.shared). Everything
-- is counted on the server side: the local IMM server's request log (the
-- start of each request) and the fake cloud's log of credential fetches.
-- The figures are printed for the issue's closing note.
local cjson = require "cjson"
local core = require "imm.core"
local imm = require "imm"
local fixture = require "helpers.fixture"

-- The most requests whose start falls within any window of `span` seconds.
-- Also: where that window starts, in seconds from the first start.
local function peak_per_window(log, span)
  local t = {}
  for _, r in ipairs(log) do t[#t + 1] = r.start end
  table.sort(t)
  local best, at, j = 0, 0, 1
  for i = 1, #t do
    while t[i] - t[j] >= span do j = j + 1 end
    if i - j + 1 > best then best, at = i - j + 1, t[j] - t[1] end
  end
  return best, at
end

local function note(fmt, ...)
  io.stderr:write("\n[spec 21] ", string.format(fmt, ...), "\n")
end

describe("rate_limit in one process", function()
  local srv
  setup(function() srv = fixture.start() end)
  teardown(function() srv.stop() end)
  before_each(function() srv.reset() end)

  it("refuses bad options before anything is sent", function()
    local bad = {
      { rate = 0 }, { rate = -1 }, { rate = 0 / 0 }, { rate = math.huge }, {},
      { rate = 5, burst = 0 }, { rate = 5, burst = 1.5 }, { rate = 5, min_rate = 6 },
      { rate = 5, max_wait = -1 }, { rate = 5, typo = 1 }, { rate = "5" },
      { rate = 5, dict = "imm_limits" },          -- no lua_shared_dict outside nginx
      { rate = 5, redis = { port = 6379 } },      -- cosockets only
      { rate = 5, dict = "a", redis = {} },
    }
    for _, o in ipairs(bad) do
      local c, err = imm.new { endpoint = srv.url, access_key_id = "a", access_key_secret = "b", rate_limit = o }
      assert.is_nil(c, tostring(o.rate))
      assert.equal("InvalidParameter", err.code)
      assert.truthy(err.message:find("rate_limit", 1, true), err.message)
    end
    local c, err = imm.new { endpoint = srv.url, access_key_id = "a", access_key_secret = "b",
      credentials_cache = { dict = "imm" } }
    assert.is_nil(c)
    assert.equal("InvalidParameter", err.code)
    assert.truthy(err.message:find("lua_shared_dict", 1, true))
    assert.equal(0, #srv.log())
  end)

  it("holds a client to its rate: at most rate + burst requests start in any second", function()
    local c = srv.client { rate_limit = { rate = 5, burst = 1, key = "t1" } }
    for _ = 1, 12 do assert(c:call("ListProjects", {})) end
    local log = srv.log()
    assert.equal(12, #log)
    local peak = peak_per_window(log, 1)
    note("one process, rate 5/s burst 1, 12 calls: at most %d in any second, over %.2fs",
      peak, log[#log].start - log[1].start)
    assert.is_true(peak <= 6, "peak " .. peak)
    -- and without the limit the same calls all start within a second
    srv.reset()
    local free = srv.client()
    for _ = 1, 12 do assert(free:call("ListProjects", {})) end
    assert.is_true(peak_per_window(srv.log(), 1) > 6)
  end)

  it("inside imm tasks, a call waits for its slot without blocking the loop", function()
    local c = srv.client { async = true, rate_limit = { rate = 5, burst = 1, key = "t2" } }
    local tasks = {}
    for i = 1, 3 do
      tasks[i] = imm.spawn(function()
        for _ = 1, 3 do assert(c:call("ListProjects", {})) end
        return true
      end)
    end
    local turns = 0
    while imm.poll(0) > 0 do
      turns = turns + 1
      core.sleep(0.001)
    end
    for i = 1, 3 do assert.is_true(tasks[i]:result()) end
    local log = srv.log()
    assert.equal(9, #log)
    assert.is_true(peak_per_window(log, 1) <= 6)
    -- 9 slots 0.2 s apart: a limiter that slept the whole process would
    -- leave the loop a few turns, not hundreds
    assert.is_true(turns > 200, "the loop turned " .. turns .. " times")
  end)

  it("shares one bucket between the clients of a Lua state with the same key", function()
    local a = srv.client { rate_limit = { rate = 1, burst = 1, max_wait = 0, key = "t8" } }
    local b = srv.client { rate_limit = { rate = 1, burst = 1, max_wait = 0, key = "t8" } }
    local other = srv.client { rate_limit = { rate = 1, burst = 1, max_wait = 0, key = "t9" } }
    assert(a:call("ListProjects", {}))
    local res, err = b:call("ListProjects", {})
    assert.is_nil(res)
    assert.equal("RateLimited", err.code)
    assert(other:call("ListProjects", {}))
    assert.equal(2, #srv.log())
  end)

  it("writes Redis commands in RESP (imm.redis, no nginx needed for that)", function()
    local redis = require "imm.redis"
    assert.equal("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", redis.command { "GET", "k" })
    assert.equal("*3\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n0\r\n", redis.command { "EVALSHA", "ab", 0 })
    -- lengths are bytes, so binary and multi-byte values go through whole
    assert.equal("*1\r\n$4\r\n\0\r\n\195\r\n", redis.command { "\0\r\n\195" })
  end)

  it("gives each action its own bucket with per_action", function()
    local c = srv.client { rate_limit = { rate = 1, burst = 1, per_action = true, max_wait = 0, key = "t3" } }
    assert(c:call("ListProjects", {}))
    assert(c:call("ListDatasets", { ProjectName = "immtest" }))
    local res, err = c:call("ListProjects", {})
    assert.is_nil(res)
    assert.equal("RateLimited", err.code)
    assert.equal(2, #srv.log())
  end)

  it("fails with RateLimited, not retried and nothing sent, when no slot comes within the deadline", function()
    local c = srv.client { deadline = 0.3, max_retries = 3, rate_limit = { rate = 1, burst = 1, key = "t4" } }
    assert(c:call("ListProjects", {}))
    local res, err = c:call("ListProjects", {})
    assert.is_nil(res)
    assert.equal("RateLimited", err.code)
    assert.is_false(err.retryable)
    assert.is_false(err.sent)
    assert.equal("ListProjects", err.action)
    assert.equal(1, #srv.log())
    -- max_wait bounds a call without a deadline the same way, and one with
    -- a longer deadline too
    local c2 = srv.client { rate_limit = { rate = 1, burst = 1, max_wait = 0.1, key = "t5" } }
    assert(c2:call("ListProjects", {}))
    res, err = c2:call("ListProjects", {})
    assert.is_nil(res)
    assert.equal("RateLimited", err.code)
    local c3 = srv.client { deadline = 5, rate_limit = { rate = 1, burst = 1, max_wait = 0.1, key = "t10" } }
    assert(c3:call("ListProjects", {}))
    res, err = c3:call("ListProjects", {})
    assert.is_nil(res)
    assert.equal("RateLimited", err.code)
    assert.equal(3, #srv.log())
  end)

  it("adaptive: a Throttling answer halves the rate, and it grows back", function()
    local c = srv.client { max_retries = 0, rate_limit = { rate = 10, burst = 1, adaptive = true, key = "t6" } }
    srv.fault { mode = "throttle", count = 1 }
    local _, err = c:call("ListProjects", {})
    assert.equal("Throttling.User", err.code)
    srv.reset()
    for _ = 1, 12 do assert(c:call("ListProjects", {})) end
    local peak = peak_per_window(srv.log(), 1)
    note("adaptive, rate 10/s after one Throttling: at most %d in the next second", peak)
    -- halved to 5/s, and growing by 1/s each second: never 10 in a second
    assert.is_true(peak <= 7, "peak " .. peak)
    -- and without adaptive the same bucket lets 10 through in a second
    local c2 = srv.client { max_retries = 0, rate_limit = { rate = 10, burst = 1, key = "t7" } }
    srv.fault { mode = "throttle", count = 1 }
    c2:call("ListProjects", {})
    srv.reset()
    for _ = 1, 12 do assert(c2:call("ListProjects", {})) end
    assert.is_true(peak_per_window(srv.log(), 1) >= 9)
  end)
end)

-- The nginx parts need the LuaJIT build and curl's --parallel.
local nginx = require "helpers.nginx"

-- n GETs at once (curl --parallel, a new connection each, so reuseport
-- spreads them over the workers); returns the decoded replies.
local function parallel_get(urls, at_once)
  local dir = fixture.tmpdir()
  local cfg = assert(io.open(dir .. "/curl.cfg", "w"))
  for i, u in ipairs(urls) do
    cfg:write(string.format('url = "%s"\noutput = "%s/%d"\n', u, dir, i))
  end
  cfg:close()
  assert(fixture.sh(string.format("curl -s --no-progress-meter --parallel --parallel-immediate --parallel-max %d "
    .. "-H 'Connection: close' -K %s/curl.cfg 2>/dev/null", at_once, dir)))
  local out = {}
  for i = 1, #urls do
    local body = fixture.read(dir .. "/" .. i)
    out[i] = body and cjson.decode(body) or { missing = true }
  end
  fixture.sh("rm -rf " .. dir)
  return out
end

-- client options as the handler's ?o= (JSON, percent-encoded)
local function q(t)
  return (cjson.encode(t):gsub("[^%w]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- Warms the workers up (modules loaded, clients made, connections to the
-- server pooled) through the bucket of another action, then clears the
-- server's log: a cold worker's first request is slower than the rest, so
-- it would reach the server late, next to a later slot's request, and the
-- count would measure nginx's start-up instead of the limit.
local function warm_up(srv, bases, o)
  local urls = {}
  for i = 1, 40 do urls[i] = bases[i % #bases + 1] .. "/call?action=ListDatasets&o=" .. q(o) end
  local replies = parallel_get(urls, 40)
  for _, r in ipairs(replies) do assert(r.ok, cjson.encode(r)) end
  srv.control("DELETE", "log")
end

local LOCATIONS = [[location = /call { content_by_lua_block { require("limits_handler").call() } }
    location = /creds { content_by_lua_block { require("limits_handler").creds() } }
    location = /logphase {
      content_by_lua_block { ngx.say("ok") }
      log_by_lua_block { require("limits_handler").log_phase() }
    }
    location = /logphase_result { content_by_lua_block { require("limits_handler").log_phase_result() } }]]

local function count(replies, f)
  local n, pids = 0, {}
  for _, r in ipairs(replies) do
    if f(r) then n = n + 1 end
    if r.pid then pids[r.pid] = true end
  end
  local np = 0
  for _ in pairs(pids) do np = np + 1 end
  return n, np
end

describe("limits inside nginx, 4 workers", function()
  local srv, ngx_srv
  setup(function()
    srv = fixture.start()
    ngx_srv = nginx.run { workers = 4, locations = LOCATIONS,
      http = "lua_shared_dict imm_limits 1m; lua_shared_dict imm 1m;" }
  end)
  teardown(function()
    if ngx_srv then ngx_srv.stop() end
    if srv then srv.stop() end
  end)

  it("20 QPS on one action, 200 requests at once: at most 22 start in any second", function()
    local o = { endpoint = srv.url, access_key_id = fixture.KEY_ID, access_key_secret = fixture.SECRET,
      deadline = 20, rate_limit = { rate = 20, per_action = true, max_wait = 20, dict = "imm_limits" } }
    warm_up(srv, { ngx_srv.url }, o)
    local urls = {}
    for i = 1, 200 do urls[i] = ngx_srv.url .. "/call?o=" .. q(o) end
    local replies = parallel_get(urls, 200)
    local ok, workers = count(replies, function(r) return r.ok end)
    local log = srv.log()
    local peak, at = peak_per_window(log, 1)
    note("4 workers, 20 QPS (burst 1) on ListProjects, 200 requests at once: %d answered, %d reached "
      .. "the server over %.2fs, at most %d in any second (from +%.2fs; workers used: %d)", ok, #log,
      log[#log].start - log[1].start, peak, at, workers)
    assert.equal(200, ok, ngx_srv.error_log():sub(-2000))
    assert.is_true(workers >= 2)
    -- The bucket grants at most 21 slots in any second (rate 20, burst 1),
    -- and 101 in any five. What the server sees can bunch when a loaded
    -- host wakes a sleeping request late (21 on a quiet host; 22-24 seen
    -- with other test suites running), so the one-second figure is held
    -- loosely and the five-second one tightly; without the limit all 200
    -- arrive within a second.
    assert.is_true(peak <= 25, "peak " .. peak)
    local peak5 = peak_per_window(log, 5)
    assert.is_true(peak5 <= 103, "peak over 5 s " .. peak5)
    assert.is_true(log[#log].start - log[1].start >= 9, "200 requests at 20 QPS took less than 9 s")
  end)

  it("adaptive with a dict: one Throttling answer slows every worker down", function()
    local o = { endpoint = srv.url, access_key_id = fixture.KEY_ID, access_key_secret = fixture.SECRET,
      deadline = 20, max_retries = 0,
      rate_limit = { rate = 10, dict = "imm_limits", key = "adaptive", adaptive = true } }
    warm_up(srv, { ngx_srv.url }, o)
    srv.fault { mode = "throttle", count = 1 }
    local urls = {}
    for i = 1, 30 do urls[i] = ngx_srv.url .. "/call?o=" .. q(o) end
    -- three at a time: a slot is taken when a call asks for it, so calls
    -- already waiting keep theirs; the ones after the answer see the cut
    local replies = parallel_get(urls, 3)
    local ok, workers = count(replies, function(r) return r.ok end)
    local log = srv.log()
    table.sort(log, function(a, b) return a.start < b.start end)
    -- the requests that started in the second after the throttled one
    local t0, after = nil, 0
    for _, r in ipairs(log) do
      if r.fault == "throttle" then t0 = r.start end
    end
    assert.is_not_nil(t0)
    for _, r in ipairs(log) do
      if r.start > t0 and r.start - t0 < 1 then after = after + 1 end
    end
    note("4 workers, adaptive 10 QPS in a dict: %d requests started in the second after a Throttling answer "
      .. "(%d answered; workers used: %d)", after, ok, workers)
    assert.equal(29, ok)
    -- halved to 5/s for every worker (growing by 1/s): not the 10 of the configured rate
    assert.is_true(after <= 7, after .. " requests")
  end)

  it("from log_by_lua: UnsupportedPhase, never a raise from the limiter's or the credentials' sleep", function()
    local o = { endpoint = srv.url, access_key_id = fixture.KEY_ID, access_key_secret = fixture.SECRET }
    local status = ngx_srv.raw("/logphase?o=" .. q(o))
    assert.equal(200, status)
    local r
    for _ = 1, 50 do  -- the log phase runs after the reply
      r = ngx_srv.get("/logphase_result")
      if r.codes or r.raised then break end
      core.sleep(0.05)
    end
    assert.is_nil(r.raised)
    assert.same({ "UnsupportedPhase", "UnsupportedPhase" }, r.codes)
  end)

  it("shared credentials: a failing provider's error comes back, and its lock does not outlive it", function()
    local cloud = require("helpers.fake_cloud").start()
    finally(cloud.stop)
    cloud.fault { target = "uri", mode = "error", status = 500, count = -1 }
    local o = { uri = cloud.uri, credentials_cache = { dict = "imm", key = "failing" } }
    for i = 1, 3 do
      -- the first holds the lock for up to 5 s; a lock left behind would
      -- make the next ones wait their 1 s out and answer Timeout
      local r = ngx_srv.get("/creds?timeout=" .. (i == 1 and 5 or 1) .. "&o=" .. q(o))
      assert.is_nil(r.id)
      -- the provider's own error each time, not a Timeout behind a stuck lock
      assert.is_not_nil(r.code)
      assert.are_not.equal("Timeout", r.code)
    end
    assert.equal(3, #cloud.log("uri"))
  end)

  it("credentials expiring every 2 s, over 10 s: one refresh per expiry for the whole nginx", function()
    local cloud = require("helpers.fake_cloud").start()
    finally(cloud.stop)
    cloud.config { expires_in = 2 }
    local function run(o, n)
      local urls = {}
      for i = 1, n do urls[i] = ngx_srv.url .. "/creds?pause=0.1&o=" .. q(o) end
      local t0 = core.monotonic()
      local replies = parallel_get(urls, 4)
      return replies, core.monotonic() - t0
    end
    local replies, took = run({ uri = cloud.uri, credentials_cache = { dict = "imm" } }, 400)
    local served, workers = count(replies, function(r) return r.id ~= nil end)
    local fetches = cloud.log("uri")
    local gap = math.huge
    for i = 2, #fetches do gap = math.min(gap, fetches[i].start - fetches[i - 1].start) end
    -- per worker, without the dict, the same load for 3 s
    cloud.reset()
    cloud.config { expires_in = 2 }
    local _, took_plain = run({ uri = cloud.uri, plain = true }, 120)
    local plain = #cloud.log("uri")
    note("4 workers, credentials for 2s (Expiration in whole seconds), %.1fs: %d refreshes with the shared "
      .. "dict (nearest two %.2fs apart; %d requests served by %d workers); without it, %d refreshes in %.1fs",
      took, #fetches, gap, served, workers, plain, took_plain)
    assert.equal(400, served)
    assert.is_true(workers >= 2)
    assert.is_true(took >= 8)
    -- each credential lives 1 to 2 s and is fresh for 4/5 of that: never
    -- two refreshes at once, never more than one per 0.8 s
    assert.is_true(gap >= 0.5, "two refreshes " .. gap .. "s apart")
    assert.is_true(#fetches <= math.ceil(took / 0.8) + 1, #fetches .. " refreshes")
    assert.is_true(plain > #fetches)
  end)
end)

describe("a rate limit in Redis, shared by two nginx", function()
  local srv, redis_pid, redis_dir, ngx_a, ngx_b, redis_port
  setup(function()
    assert(fixture.sh("command -v redis-server >/dev/null && command -v redis-cli >/dev/null"),
      "spec 21 needs redis-server and redis-cli: sh tools/install-deps.sh test")
    srv = fixture.start()
    redis_dir = fixture.tmpdir()
    local p = io.popen("env -u LD_PRELOAD python3 -c 'import socket; s=socket.socket(); "
      .. "s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'")
    redis_port = tonumber(p:read("*l"))
    p:close()
    assert(fixture.sh(string.format("exec redis-server --bind 127.0.0.1 --port %d --save '' --appendonly no "
      .. "--requirepass imm-test-pass --dir %s >%s/log 2>&1 & echo $! >%s/pid", redis_port, redis_dir,
      redis_dir, redis_dir)), "could not start redis-server (sh tools/install-deps.sh test)")
    redis_pid = fixture.read(redis_dir .. "/pid"):match("%d+")
    local up = false
    for _ = 1, 100 do
      up = fixture.sh(string.format("redis-cli -p %d -a imm-test-pass --no-auth-warning ping 2>/dev/null "
        .. "| grep -q PONG", redis_port))
      if up then break end
      core.sleep(0.05)
    end
    assert(up, "redis-server did not start:\n" .. (fixture.read(redis_dir .. "/log") or ""))
    ngx_a = nginx.run { workers = 2, locations = LOCATIONS }
    ngx_b = nginx.run { workers = 2, locations = LOCATIONS }
  end)
  teardown(function()
    if ngx_a then ngx_a.stop() end
    if ngx_b then ngx_b.stop() end
    if redis_pid then fixture.kill(redis_pid) end
    if redis_dir then fixture.sh("rm -rf " .. redis_dir) end
    if srv then srv.stop() end
  end)

  it("holds 20 QPS for both together", function()
    local o = { endpoint = srv.url, access_key_id = fixture.KEY_ID, access_key_secret = fixture.SECRET,
      deadline = 20, rate_limit = { rate = 20, per_action = true, max_wait = 20, key = "imm:spec21",
        redis = { port = redis_port, password = "imm-test-pass", db = 1, timeout = 1 } } }
    warm_up(srv, { ngx_a.url, ngx_b.url }, o)
    local urls = {}
    for i = 1, 200 do urls[i] = (i % 2 == 0 and ngx_a or ngx_b).url .. "/call?o=" .. q(o) end
    local replies = parallel_get(urls, 200)
    local ok = count(replies, function(r) return r.ok end)
    local log = srv.log()
    local peak, at = peak_per_window(log, 1)
    note("two nginx (2 workers each), one Redis bucket of 20 QPS (burst 1), 200 requests at once: "
      .. "%d answered, %d reached the server over %.2fs, at most %d in any second (from +%.2fs)", ok, #log,
      log[#log].start - log[1].start, peak, at)
    assert.equal(200, ok, ngx_a.error_log():sub(-2000) .. ngx_b.error_log():sub(-2000))
    -- The bucket grants at most 21 slots in any second (rate 20, burst 1),
    -- and 101 in any five. What the server sees can bunch when a loaded
    -- host wakes a sleeping request late (21 on a quiet host; 22-24 seen
    -- with other test suites running), so the one-second figure is held
    -- loosely and the five-second one tightly; without the limit all 200
    -- arrive within a second.
    assert.is_true(peak <= 25, "peak " .. peak)
    local peak5 = peak_per_window(log, 5)
    assert.is_true(peak5 <= 103, "peak over 5 s " .. peak5)
    assert.is_true(log[#log].start - log[1].start >= 9, "200 requests at 20 QPS took less than 9 s")
    -- the script's key lives in the database chosen, with an expiry
    assert.truthy(fixture.sh(string.format("redis-cli -p %d -a imm-test-pass --no-auth-warning -n 1 "
      .. "pttl 'imm:spec21:ListProjects' | grep -qv -- '^-'", redis_port)))
  end)

  it("loads the script again (EVAL) after Redis forgot it (SCRIPT FLUSH)", function()
    assert(fixture.sh(string.format("redis-cli -p %d -a imm-test-pass --no-auth-warning script flush >/dev/null",
      redis_port)))
    local o = { endpoint = srv.url, access_key_id = fixture.KEY_ID, access_key_secret = fixture.SECRET,
      rate_limit = { rate = 1, max_wait = 0, key = "imm:flush", redis = { port = redis_port,
        password = "imm-test-pass" } } }
    srv.control("DELETE", "log")
    local first = ngx_a.get("/call?o=" .. q(o))
    local second = ngx_a.get("/call?o=" .. q(o))
    assert.is_true(first.ok)
    assert.equal("RateLimited", second.code)
    assert.equal(1, #srv.log())
    assert.falsy(ngx_a.error_log():find("NOSCRIPT", 1, true))
  end)

  it("a wrong password: calls go through unlimited and the log says why, without the password", function()
    local o = { endpoint = srv.url, access_key_id = fixture.KEY_ID, access_key_secret = fixture.SECRET,
      rate_limit = { rate = 1, burst = 1, redis = { port = redis_port, password = "wrong-pass-xyz" } } }
    for _ = 1, 3 do
      local r = ngx_a.get("/call?o=" .. q(o))
      assert.is_true(r.ok)
    end
    local logtext = ngx_a.error_log()
    assert.truthy(logtext:find("AUTH failed", 1, true))
    assert.falsy(logtext:find("wrong-pass-xyz", 1, true))
  end)
end)
