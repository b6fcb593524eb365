-- Layer 6: imm inside a real nginx with ngx_lua, on cosockets, against the
-- local IMM server. Every call below runs inside nginx; the spec looks at
-- what nginx answered and at the IMM server's own log.
local fixture = require "helpers.fixture"
local nginx = require "helpers.nginx"

local function q(t)
  local parts = {}
  for k, v in pairs(t) do parts[#parts + 1] = k .. "=" .. tostring(v) end
  table.sort(parts)
  return table.concat(parts, "&")
end

describe("OpenResty (ngx_lua cosockets)", function()
  local srv, tls_srv, ngx_srv
  setup(function()
    srv = fixture.start()
    tls_srv = fixture.start { tls = true }
    -- the example handler reads its configuration from the environment
    ngx_srv = nginx.start { trusted = fixture.certs() .. "/ca.crt", env = table.concat({
      "env IMM_ENDPOINT=" .. srv.url .. ";",
      "env ALIBABA_CLOUD_ACCESS_KEY_ID=" .. fixture.KEY_ID .. ";",
      "env ALIBABA_CLOUD_ACCESS_KEY_SECRET=" .. fixture.SECRET .. ";" }, "\n") }
  end)
  teardown(function()
    if ngx_srv then ngx_srv.stop() end
    if srv then srv.stop() end
    if tls_srv then tls_srv.stop() end
  end)
  before_each(function()
    srv.reset()
    tls_srv.reset()
  end)

  local function call(path, args)
    return ngx_srv.get(path .. "?" .. q(args))
  end

  it("lists a page on cosockets in content_by_lua", function()
    local r = call("/call", { port = srv.port, mode = "page", max_results = 7 })
    assert.is_nil(r.err)
    assert.equal("ngx", r.transport)
    assert.equal("content", r.phase)
    assert.equal(7, r.count)
    assert.is_string(r.next_token)
    assert.equal("v3-sha256", srv.log()[1].signature)
  end)

  it("walks every binding with the item pager and all_bindings", function()
    local expected = #assert(srv.client {}:all_bindings { ProjectName = "immtest" }).Bindings
    srv.reset()
    local r = call("/call", { port = srv.port, mode = "items", page_size = 50 })
    assert.is_nil(r.err)
    assert.equal(expected, r.count)
    assert.equal(math.ceil(expected / 50), #srv.log())
    local a = call("/call", { port = srv.port, mode = "all", page_size = 100 })
    assert.is_nil(a.err)
    assert.same(r.uris, a.uris)
  end)

  it("runs the binding lifecycle, waiting with ngx.sleep and sending mutations on fresh connections", function()
    srv.control("POST", "settings", { binding_start_delay = 1 })
    local r = call("/call", { port = srv.port, mode = "lifecycle", dataset = "photos-2024",
      uri = "oss://ngx-lifecycle/" })
    assert.is_nil(r.err)
    assert.equal("Running", r.state)
    assert.is_true(r.sleeps >= 1, "ngx.sleep calls: " .. tostring(r.sleeps))
    local log, by = srv.log(), {}
    for _, rec in ipairs(log) do by[rec.action] = by[rec.action] or rec end
    assert.equal(200, by.CreateBinding.status)
    assert.equal(200, by.DeleteBinding.status)
    assert.are_not.equal(by.ListBindings.conn, by.CreateBinding.conn)
    assert.are_not.equal(by.CreateBinding.conn, by.DeleteBinding.conn)
    local _, err = srv.client {}:get_binding { ProjectName = "immtest", DatasetName = "photos-2024",
      URI = "oss://ngx-lifecycle/" }
    assert.equal("ResourceNotFound", err.code)
  end)

  it("sends a form body on cosockets, signed with V3 and V2", function()
    for _, alg in ipairs { "ACS3-HMAC-SHA256", "v2" } do
      srv.control("DELETE", "log")
      local r = call("/call", { port = srv.port, mode = "form", alg = alg, content = "a%26b%3Dc" })
      -- verified and answered: the signature covered the body
      assert.is_nil(r.err)
      local rec = srv.log()[1]
      assert.equal(200, rec.status)
      assert.equal("application/x-www-form-urlencoded", rec.headers["content-type"])
      assert.equal('[{"Content":"a&b=c","Role":"user"}]', rec.params.Messages)
      assert.equal(alg == "v2" and "v2" or "v3-sha256", rec.signature)
    end
  end)

  it("runs the pagers inside ngx.timer.at", function()
    local r = call("/timer", { port = srv.port, mode = "items", page_size = 40, max_items = 90 })
    assert.is_nil(r.err)
    assert.equal("timer", r.phase)
    assert.equal(90, r.count)
    local p = call("/timer", { port = srv.port, mode = "pages", page_size = 100 })
    assert.is_nil(p.err)
    assert.equal(3, p.pages)
  end)

  it("overlaps ten slow calls in one worker", function()
    srv.fault { mode = "slow", delay = 0.3, count = -1 }
    local dir = fixture.tmpdir()
    -- ten concurrent requests to nginx from one curl process (--parallel), so
    -- they start together even on a loaded machine; each makes one call
    local urls = {}
    for i = 1, 10 do
      urls[#urls + 1] = string.format("'%s/call?port=%d&mode=page&max_results=1&n=%d' -o %s/%d.json",
        ngx_srv.url, srv.port, i, dir, i)
    end
    fixture.sh("curl -s --no-progress-meter --max-time 20 --parallel --parallel-immediate --parallel-max 10 "
      .. table.concat(urls, " "))
    for i = 1, 10 do
      local body = fixture.read(dir .. "/" .. i .. ".json")
      assert.is_string(body)
      local r = require("cjson").decode(body)
      assert.is_nil(r.err)
      assert.equal(1, r.count)
    end
    fixture.sh("rm -rf " .. dir)
    -- From the server's own timestamps: how many calls were in flight at
    -- once. One worker blocking on each call would give 1; cosockets give 10.
    local log = srv.log()
    assert.equal(10, #log)
    assert.equal(10, fixture.peak_in_flight(log), "the calls did not all overlap")
  end)

  it("reuses connections from the keep-alive pool", function()
    local before = srv.stats().connections
    for _ = 1, 6 do
      assert.is_nil(call("/call", { port = srv.port, mode = "page", max_results = 1 }).err)
    end
    local opened = srv.stats().connections - before
    assert.is_true(opened <= 1, "opened " .. opened .. " connections for 6 requests")
    assert.equal(6, #srv.log())
  end)

  it("fires the hooks for every attempt on cosockets and on libcurl, with the call's headers", function()
    for _, t in ipairs { "ngx", "curl" } do
      srv.reset()
      srv.fault { mode = "throttle", count = 1 }
      local r = call("/call", { port = srv.port, mode = "items", page_size = 50, max_items = 60, hooks = 1,
        traceparent = "tp-" .. t, transport = t })
      assert.is_nil(r.err)
      assert.equal(t, r.transport)
      local log = srv.log()
      assert.equal(3, #log)  -- throttled, retried, the second page
      for _, rec in ipairs(log) do assert.equal("tp-" .. t, rec.headers.traceparent) end
      local kinds = {}
      for i, h in ipairs(r.hooks) do kinds[i] = string.format("%s %d", h.hook, h.info.attempt) end
      assert.same({ "request 1", "response 1", "request 2", "response 2", "request 1", "response 1" }, kinds)
      assert.equal(429, r.hooks[2].info.status)
      assert.is_true(r.hooks[2].info.retry)
      assert.equal(200, r.hooks[4].info.status)
      assert.is_false(r.hooks[4].info.retry)
      assert.equal("tp-" .. t, r.hooks[1].info.headers.traceparent)
      assert.is_false(fixture.deep_find(r.hooks, fixture.SECRET), "a hook saw the secret")
    end
  end)

  it("the example propagates traceparent and counts calls at /metrics", function()
    local tid = "4bf92f3577b34da6a3ce929d0e0e4736"
    local status = ngx_srv.raw("/bindings?project=immtest&dataset=dataset001", {
      "traceparent: 00-" .. tid .. "-00f067aa0ba902b7-01" })
    assert.equal(200, status)
    local log = srv.log()
    assert.is_true(#log > 0)
    for _, rec in ipairs(log) do
      -- the same trace, a span of the gateway's own
      local v, t, span, flags = rec.headers.traceparent:match("^(%x%x)%-(%x+)%-(%x+)%-(%x%x)$")
      assert.equal("00", v)
      assert.equal(tid, t)
      assert.equal(16, #span)
      assert.are_not.equal("00f067aa0ba902b7", span)
      assert.equal("01", flags)
    end
    srv.reset()
    -- none incoming: a new trace
    assert.equal(200, (ngx_srv.raw("/bindings?project=immtest&dataset=dataset001")))
    local t2 = srv.log()[1].headers.traceparent:match("^00%-(%x+)%-%x+%-%x%x$")
    assert.equal(32, #t2)
    assert.are_not.equal(tid, t2)
    assert.equal(404, (ngx_srv.raw("/bindings?project=nope")))
    local st, text = ngx_srv.raw("/metrics")
    assert.equal(200, st)
    assert.matches("# TYPE imm_requests_total counter", text, 1, true)
    local ok200 = tonumber(text:match('imm_requests_total{action="ListBindings",status="200",code=""} (%d+)'))
    assert.equal(#log + 1, ok200)
    local missing = tonumber(text:match(
      'imm_requests_total{action="ListBindings",status="404",code="ResourceNotFound"} (%d+)'))
    assert.equal(1, missing)
  end)

  it("serves the examples/openresty handler", function()
    local status, body = ngx_srv.raw("/bindings?project=immtest&dataset=dataset001")
    assert.equal(200, status)
    local n = 0
    for line in body:gmatch("[^\n]+") do
      local b = require("cjson").decode(line)
      assert.equal("dataset001", b.DatasetName)
      n = n + 1
    end
    assert.is_true(n > 0)
    local want = #assert(srv.client {}:all_bindings { ProjectName = "immtest", DatasetName = "dataset001" }).Bindings
    assert.equal(want, n)
    local st, err_body = ngx_srv.raw("/bindings?project=nope")
    assert.equal(404, st)
    assert.equal("ResourceNotFound", require("cjson").decode(err_body).error)
    local st2 = ngx_srv.raw("/bindings")
    assert.equal(400, st2)
    -- logged once with imm's own prefix, not "imm: imm: ..."
    local log = ngx_srv.error_log()
    assert.matches("imm: ResourceNotFound (HTTP 404)", log, 1, true)
    assert.is_nil(log:find("imm: imm:", 1, true))
  end)

  it("the example answers 504 when IMM does not answer within its deadline", function()
    srv.fault { mode = "stall", delay = 20, count = -1 }
    local t0 = require("imm.core").monotonic()
    local status, body = ngx_srv.raw("/bindings?project=immtest")
    local took = require("imm.core").monotonic() - t0
    srv.control("DELETE", "faults")
    assert.equal(504, status, body)
    local r = require("cjson").decode(body)
    assert.equal("Timeout", r.error)
    assert.matches("deadline of 2.5s", r.message, 1, true)
    -- attempts of 1 s within a deadline of 2.5 s, not the default 10 s each
    assert.is_true(took >= 1 and took < 5, "took " .. took .. " s")
    assert.is_true(#srv.log() >= 2, "retried within the deadline")
  end)

  -- issue 21, item 2: ngx_lua resolves a host name with nginx's
  -- resolver_timeout, not the socket's timeouts
  describe("host names", function()
    local dns = {}
    local ngx_dns

    -- spec/helpers/dns_stub.py on loopback; returns its port
    local function stub(name, flag)
      local dir = fixture.tmpdir()
      assert(fixture.sh("exec python3 spec/helpers/dns_stub.py --port-file " .. dir .. "/port " .. flag
        .. " >" .. dir .. "/out 2>&1 & echo $! > " .. dir .. "/pid"))
      local port
      for _ = 1, 100 do
        port = tonumber(fixture.read(dir .. "/port") or "")
        if port then break end
        require("imm.core").sleep(0.05)
      end
      assert(port, "dns_stub.py did not start: " .. tostring(fixture.read(dir .. "/out")))
      dns[name] = { dir = dir, pid = fixture.read(dir .. "/pid"):match("%d+") }
      return port
    end

    setup(function()
      local silent, answering = stub("silent", "--silent"), stub("answering", "")
      ngx_dns = nginx.run {
        http = "resolver_timeout 20s;",
        locations = ([[location = /silent { resolver 127.0.0.1:S ipv6=off; content_by_lua_block {
        require("handler").call() } }
      location = /named { resolver 127.0.0.1:A ipv6=off; content_by_lua_block { require("handler").call() } }]])
          :gsub("S", tostring(silent)):gsub("A", tostring(answering)),
      }
    end)
    teardown(function()
      -- a graceful stop would wait out nginx's own pending query (20 s)
      if ngx_dns then
        ngx_dns.http:close()
        fixture.kill(fixture.read(ngx_dns.dir .. "/nginx.pid"):match("%d+"), "TERM")
        fixture.sh("rm -rf " .. ngx_dns.dir)
      end
      for _, d in pairs(dns) do
        fixture.kill(d.pid)
        fixture.sh("rm -rf " .. d.dir)
      end
    end)

    it("end the attempt at its timeout when the resolver never answers, not at resolver_timeout", function()
      local t0 = require("imm.core").monotonic()
      local r = ngx_dns.get("/silent?" .. q { host = "imm.unanswered.test", port = srv.port, mode = "page",
        timeout = 1, max_retries = 0 })
      local took = require("imm.core").monotonic() - t0
      assert.is_table(r.err)
      assert.equal("Timeout", r.err.code, r.err.message)
      assert.matches("imm.unanswered.test", r.err.message, 1, true)
      assert.is_true(took < 4, "took " .. took .. " s with timeout = 1")
      assert.equal(0, #srv.log())
      -- from inside the item pager's coroutine too
      t0 = require("imm.core").monotonic()
      r = ngx_dns.get("/silent?" .. q { host = "imm.unanswered.test", port = srv.port, mode = "items",
        timeout = 1, max_retries = 0 })
      took = require("imm.core").monotonic() - t0
      assert.equal("Timeout", r.err.code, r.err.message)
      assert.is_true(took < 4, "took " .. took .. " s with timeout = 1, in the pager")
      -- an address needs no resolver: the same location reaches the server
      local ok = ngx_dns.get("/silent?" .. q { port = srv.port, mode = "page", max_results = 1, timeout = 1 })
      assert.is_nil(ok.err)
    end)

    it("are connected to through a resolver that answers, and the connection is pooled", function()
      for _ = 1, 2 do
        local r = ngx_dns.get("/named?" .. q { host = "imm.local.test", port = srv.port, mode = "page",
          max_results = 2, timeout = 2 })
        assert.is_nil(r.err, r.err and r.err.message)
        assert.equal(2, #r.uris)
      end
      local log = srv.log()
      assert.equal(2, #log)
      assert.equal(log[1].conn, log[2].conn, "the second call reused the first one's connection")
      -- from inside the item pager's coroutine too
      local expected = #assert(srv.client {}:all_bindings { ProjectName = "immtest" }).Bindings
      local r = ngx_dns.get("/named?" .. q { host = "imm.local.test", port = srv.port, mode = "items",
        page_size = 100, timeout = 2 })
      assert.is_nil(r.err, r.err and r.err.message)
      assert.equal(expected, #r.uris)
    end)
  end)

  it("the example's nginx.conf and its resolver.conf command pass nginx -t", function()
    local dir = fixture.tmpdir()
    local conf = assert(fixture.read("examples/openresty/nginx.conf"))
    local cmd = assert(conf:match("\n%s*#%s*(awk [^\n]*> resolver%.conf)\n"), "the awk line")
    assert(fixture.sh("cd " .. dir .. " && " .. cmd))
    local resolver = assert(fixture.read(dir .. "/resolver.conf"))
    if resolver == "" then  -- no nameserver line here: any address does for the syntax
      resolver = "resolver 127.0.0.1 ipv6=off;\n"
      local f = assert(io.open(dir .. "/resolver.conf", "w"))
      f:write(resolver)
      f:close()
    end
    assert.matches("^resolver %S+ ipv6=off;\n$", resolver)
    local f = assert(io.open(dir .. "/nginx.conf", "w"))
    f:write(conf)
    f:close()
    local ok = fixture.sh("nginx -t -q -p " .. dir .. " -c " .. dir .. "/nginx.conf -e " .. dir .. "/err.log"
      .. " 2>" .. dir .. "/out")
    local why = fixture.read(dir .. "/out")
    fixture.sh("rm -rf " .. dir)
    assert.is_true(ok and true or false, why)
    assert.matches("resolver_timeout %d+s;", conf)
  end)

  -- docs/openresty.md's steps on the example as shipped: copy nginx.conf into
  -- a prefix, fix its two paths, write resolver.conf with its awk line, run
  -- `nginx -p DIR -c DIR/nginx.conf` with the environment it names, query
  -- /bindings. Only the listen port is swapped for a free one, so parallel
  -- runs cannot collide.
  it("the example runs as docs/openresty.md says, on a port of its own", function()
    local conf = assert(fixture.read("examples/openresty/nginx.conf"))
    local port = tonumber(conf:match("\n%s*listen 127%.0%.0%.1:(%d+);"))
    local server_port = tonumber(assert(fixture.read("README.md")):match("imm%-server %-%-port (%d+)"))
    assert.is_number(port)
    assert.is_number(server_port)
    assert.are_not.equal(server_port, port, "the example listens on imm-server's documented port")
    local doc = assert(fixture.read("docs/openresty.md"))
    assert.is_truthy(doc:find("127.0.0.1:" .. port, 1, true), "docs/openresty.md names the example's port")

    local repo, dir = fixture.cwd(), fixture.tmpdir()
    local function swap(from, to)
      local i, j = conf:find(from, 1, true)
      assert(i, "nginx.conf no longer has " .. from)
      conf = conf:sub(1, i - 1) .. to .. conf:sub(j + 1)
    end
    swap("/usr/local/share/lua/5.1/?.lua", repo .. "/lua/?.lua")
    swap("/path/to/examples/openresty/?.lua", repo .. "/examples/openresty/?.lua")
    swap("/usr/local/lib/lua/5.1/?.so", repo .. "/build/luajit/?.so")
    local free = io.popen("env -u LD_PRELOAD python3 -c 'import socket; s=socket.socket(); "
      .. "s.bind((\"127.0.0.1\", 0)); print(s.getsockname()[1])'")
    local run_port = tonumber(free:read("*l"))
    free:close()
    swap("listen 127.0.0.1:" .. port .. ";", "listen 127.0.0.1:" .. run_port .. ";")
    local cmd = assert(conf:match("\n%s*#%s*(awk [^\n]*> resolver%.conf)\n"), "the awk line")
    assert(fixture.sh("cd " .. dir .. " && " .. cmd))
    if fixture.read(dir .. "/resolver.conf") == "" then  -- no nameserver here; nothing is resolved
      local r = assert(io.open(dir .. "/resolver.conf", "w"))
      r:write("resolver 127.0.0.1 ipv6=off;\n")
      r:close()
    end
    local f = assert(io.open(dir .. "/nginx.conf", "w"))
    f:write(conf)
    f:close()
    local http = assert(require("imm.core").http { timeout = 10 })
    local function stop()
      local pid = fixture.read(dir .. "/nginx.pid")
      if pid then fixture.kill(pid:match("%d+"), "QUIT") end
      http:close()
    end
    finally(function() stop(); fixture.sh("rm -rf " .. dir) end)
    local started = fixture.sh(table.concat({ "env",
      "IMM_ENDPOINT=" .. srv.url, "ALIBABA_CLOUD_ACCESS_KEY_ID=" .. fixture.KEY_ID,
      "ALIBABA_CLOUD_ACCESS_KEY_SECRET=" .. fixture.SECRET,
      "nginx -p " .. dir .. " -c " .. dir .. "/nginx.conf 2>" .. dir .. "/err" }, " "))
    assert.is_true(started and true or false, fixture.read(dir .. "/err"))
    local status, body
    for _ = 1, 100 do
      status, body = http:request("GET", "http://127.0.0.1:" .. run_port .. "/bindings?project=immtest", {}, "")
      if status then break end
      require("imm.core").sleep(0.05)
    end
    assert.equal(200, status, tostring(body) .. "\n" .. (fixture.read(dir .. "/err") or ""))
    local expected = assert(srv.client {}:all_bindings { ProjectName = "immtest" }).Bindings
    local lines = {}
    for line in body:gmatch("[^\n]+") do lines[#lines + 1] = require("cjson").decode(line) end
    assert.equal(#expected, #lines)
    assert.equal(expected[1].URI, lines[1].URI)
    assert.equal(expected[#expected].URI, lines[#lines].URI)
  end)

  describe("TLS", function()
    it("verifies the server with lua_ssl_trusted_certificate and uses SNI", function()
      local r = call("/call", { port = tls_srv.port, tls = 1, mode = "items", page_size = 100 })
      assert.is_nil(r.err)
      assert.equal(205, r.count)
    end)

    it("refuses a certificate from a CA nginx does not trust", function()
      local other_certs = fixture.tmpdir()
      assert(fixture.sh("sh tools/gen_certs.sh " .. other_certs))
      local other = fixture.start { args = "--tls " .. other_certs }
      finally(other.stop)  -- even when an assertion fails
      local r = call("/call", { port = other.port, tls = 1, mode = "page" })
      other.stop()
      fixture.sh("rm -rf " .. other_certs)
      assert.equal("TLSError", r.err.code)
      assert.is_false(r.err.retryable)
    end)

    it("refuses a certificate that does not name the host", function()
      local other = fixture.start { tls = true, host = "127.0.0.2" }
      finally(other.stop)  -- even when an assertion fails
      local r = call("/call", { port = other.port, tls = 1, host = "127.0.0.2", mode = "page" })
      other.stop()
      assert.equal("TLSError", r.err.code)
    end)

    it("connects without verification only with insecure = true", function()
      local other_certs = fixture.tmpdir()
      assert(fixture.sh("sh tools/gen_certs.sh " .. other_certs))
      local other = fixture.start { args = "--tls " .. other_certs }
      finally(other.stop)  -- even when an assertion fails
      local r = call("/call", { port = other.port, tls = 1, insecure = 1, mode = "page", max_results = 2 })
      other.stop()
      fixture.sh("rm -rf " .. other_certs)
      assert.is_nil(r.err)
      assert.equal(2, r.count)
    end)
  end)

  describe("phases without cosockets", function()
    it("fails clearly in init_by_lua", function()
      local r = ngx_srv.get("/init")
      assert.is_false(r.res)
      assert.equal("UnsupportedPhase", r.err.code)
      assert.equal("init", r.err.phase)
      assert.matches('"init" phase', r.err.message)
      assert.matches("ngx.timer.at", r.err.message)
    end)

    for _, phase in ipairs { "log", "header_filter" } do
      it("fails clearly in " .. phase .. "_by_lua", function()
        local path = phase == "log" and "/logphase" or "/headerphase"
        ngx_srv.http:request("GET", ngx_srv.url .. path, {}, "")
        local r
        for _ = 1, 50 do  -- the log phase runs after the response is sent
          r = ngx_srv.get("/shared?key=" .. phase)
          if r.err then break end
          require("imm.core").sleep(0.02)
        end
        assert.is_false(r.res)
        assert.equal("UnsupportedPhase", r.err.code)
        assert.equal(phase, r.err.phase)
      end)
    end
  end)

  describe("behaves exactly as the libcurl path", function()
    local scenarios = {
      { name = "throttled twice, then success", fault = { mode = "throttle", count = 2 } },
      { name = "throttled throughout", fault = { mode = "throttle", count = -1 }, max_retries = 1 },
      { name = "503 then success", fault = { mode = "unavailable" } },
      { name = "500 throughout", fault = { mode = "internal", count = -1 }, max_retries = 0 },
      { name = "malformed JSON", fault = { mode = "malformed", count = -1 } },
      { name = "not an object", fault = { mode = "not_object", count = -1 } },
      { name = "Bindings not an array", fault = { mode = "bindings_not_array", count = -1 } },
      { name = "HTML 502", fault = { mode = "html502", count = -1 }, max_retries = 0 },
      { name = "truncated body", fault = { mode = "truncated", count = -1 }, max_retries = 0 },
      { name = "connection reset", fault = { mode = "reset", count = -1 }, max_retries = 1 },
      { name = "stall past the timeout", fault = { mode = "stall", delay = 3, count = -1 },
        max_retries = 0, timeout = 0.5 },
      { name = "reset mid-body", fault = { mode = "reset_mid_body", count = -1 }, max_retries = 0 },
      { name = "slowloris trickle past the timeout", fault = { mode = "trickle", interval = 0.2, count = -1 },
        max_retries = 0, timeout = 1 },
      { name = "body overrunning its Content-Length", fault = { mode = "overrun", count = -1 }, max_retries = 0 },
      { name = "gzip bomb", fault = { mode = "gzip_bomb", size = 100 * 1024 * 1024, count = -1 } },
      { name = "several MB", fault = { mode = "big", size = 3 * 1024 * 1024 } },
      { name = "unknown project", project = "nope" },
      { name = "wrong secret", secret = "wrong" },
      { name = "SM3", alg = "ACS3-HMAC-SM3" },
      { name = "V2", alg = "v2" },
    }
    for _, s in ipairs(scenarios) do
      it(s.name, function()
        local function outcome(via)
          srv.reset()
          if s.fault then srv.fault(s.fault) end
          local r
          if via == "ngx" then
            r = call("/call", { port = srv.port, mode = "page", max_results = 3, max_retries = s.max_retries,
              timeout = s.timeout, project = s.project, secret = s.secret, alg = s.alg })
          else
            -- Clients share idle connections (one cache per lua_State); start
            -- without any, as a new client used to: libcurl sends a request
            -- again by itself when a reused connection is reset, which would
            -- add a request the cosocket path does not make.
            require("imm.core").shared_multi():close()
            local c = srv.client { max_retries = s.max_retries, timeout = s.timeout or 10,
              access_key_secret = s.secret, signature_algorithm = s.alg }
            local res, err = c:list_bindings { ProjectName = s.project or "immtest", MaxResults = 3 }
            r = { count = res and #res.Bindings or 0, err = err }
          end
          local e = r.err
          return {
            count = r.count, requests = #srv.log(),
            err = e and { code = e.code, status = e.status, retryable = e.retryable, attempts = e.attempts },
          }
        end
        local via_curl = outcome("curl")
        local via_ngx = outcome("ngx")
        assert.same(via_curl, via_ngx)
      end)
    end
  end)
end)

-- The proxy option on cosockets: CONNECT for https endpoints, absolute-form
-- forwarding for http ones, through the recording proxy (spec/helpers/proxy.py).
describe("OpenResty through a proxy", function()
  local proxy_fixture = require "helpers.proxy"
  local srv, tls_srv, plain, authed, ngx_srv
  setup(function()
    srv = fixture.start()
    tls_srv = fixture.start { tls = true }
    plain = proxy_fixture.start()
    authed = proxy_fixture.start { auth = true }
    ngx_srv = nginx.run { trusted = fixture.certs() .. "/ca.crt",
      locations = "location = /proxy { content_by_lua_block { require('proxy_handler').run() } }" }
  end)
  teardown(function()
    for _, s in ipairs { ngx_srv, srv, tls_srv, plain, authed } do
      if s then s.stop() end
    end
  end)
  before_each(function()
    for _, s in ipairs { srv, tls_srv, plain, authed } do s.reset() end
  end)

  local function esc(s)
    return (tostring(s):gsub("[^%w%-%._~]", function(ch) return string.format("%%%02X", ch:byte()) end))
  end
  local function run(args)
    local parts = {}
    for k, v in pairs(args) do parts[#parts + 1] = k .. "=" .. esc(v) end
    return ngx_srv.get("/proxy?" .. table.concat(parts, "&"))
  end
  local function no_password(r, ...)
    local text = require("cjson").encode(r)
    for _, secret in ipairs { proxy_fixture.PASSWORD, "pr0xy-s3cret%2Fpw", ... } do
      assert.is_nil(text:find(secret, 1, true), "a proxy password in " .. text)
    end
  end

  it("forwards to an http endpoint in absolute form, keeping the proxy connection", function()
    local r = run { endpoint = srv.url, proxy = plain.url, n = 2 }
    assert.same({ { ok = true }, { ok = true } }, r.calls)
    local log = plain.log()
    assert.equal(2, #log)
    assert.equal("forward", log[1].kind)
    assert.matches("^http://127%.0%.0%.1:" .. srv.port .. "/%?", log[1].target)
    assert.equal(log[1].conn, log[2].conn)
    assert.equal(2, #srv.log())
  end)

  it("tunnels to an https endpoint with CONNECT, reusing the tunnel", function()
    local r = run { endpoint = tls_srv.url, proxy = plain.url, n = 3 }
    assert.same({ { ok = true }, { ok = true }, { ok = true } }, r.calls)
    local log = plain.log()
    assert.equal(1, #log)
    assert.same({ "connect", "127.0.0.1:" .. tls_srv.port }, { log[1].kind, log[1].target })
    assert.equal(3, #tls_srv.log())
  end)

  it("sends Basic credentials to the proxy, for http and https endpoints", function()
    local r1 = run { endpoint = srv.url, proxy = authed.auth_url() }
    local r2 = run { endpoint = tls_srv.url, proxy = authed.auth_url() }
    assert.same({ { ok = true } }, r1.calls)
    assert.same({ { ok = true } }, r2.calls)
    local log = authed.log()
    assert.same({ "forward", "ok" }, { log[1].kind, log[1].auth })
    assert.same({ "connect", "ok" }, { log[2].kind, log[2].auth })
  end)

  it("a wrong or missing password is ProxyAuthenticationRequired, never retried, never shown", function()
    for _, case in ipairs {
      { srv, authed.auth_url(nil, "wr0ng-pass!word") }, { tls_srv, authed.auth_url(nil, "wr0ng-pass!word") },
      { srv, authed.url }, { tls_srv, authed.url },
    } do
      local r = run { endpoint = case[1].url, proxy = case[2], max_retries = 3 }
      local c = r.calls[1]
      assert.equal("ProxyAuthenticationRequired", c.code, c.error)
      assert.equal(407, c.status)
      assert.is_false(c.retryable)
      assert.is_nil(c.error:find("after", 1, true), "retried: " .. c.error)
      no_password(r, "wr0ng-pass!word", "wr0ng-pass%21word")
    end
    assert.equal(0, #srv.log() + #tls_srv.log())
  end)

  it("keeps tunnels, proxied and direct connections apart in the pool", function()
    -- the server's connection of each call: through a tunnel, the proxy's
    local function conn_of(args)
      local before = #tls_srv.log()
      assert.same({ { ok = true } }, run(args).calls)
      local log = tls_srv.log()
      assert.equal(before + 1, #log)
      return log[#log].conn
    end
    local a = conn_of { endpoint = tls_srv.url, proxy = authed.auth_url() }
    local d = conn_of { endpoint = tls_srv.url, proxy = "false" }
    local p = conn_of { endpoint = tls_srv.url, proxy = plain.url }
    assert.are_not.equal(a, d, "a direct call rode the tunnel")
    assert.are_not.equal(a, p, "another proxy's call rode the tunnel")
    assert.are_not.equal(p, d)
    assert.equal(a, conn_of { endpoint = tls_srv.url, proxy = authed.auth_url() }, "the tunnel is reused")
    assert.equal(d, conn_of { endpoint = tls_srv.url, proxy = "false" }, "the direct connection is reused")
    assert.is_true(authed.count("connect") <= 1)
    -- the wrong password never rides the authenticated tunnel in the pool
    local r = run { endpoint = tls_srv.url, proxy = authed.auth_url(nil, "nope-nope") }
    assert.equal("ProxyAuthenticationRequired", r.calls[1].code)
    assert.equal(5, #tls_srv.log())
    -- http: a client without the proxy never rides a forwarding connection
    assert.same({ { ok = true } }, run { endpoint = srv.url, proxy = plain.url }.calls)
    assert.same({ { ok = true } }, run { endpoint = srv.url, proxy = "false" }.calls)
    assert.equal(1, plain.count("forward"))
    local log = srv.log()
    assert.are_not.equal(log[1].conn, log[2].conn)
  end)

  it("no_proxy sends matching hosts direct", function()
    local r = run { endpoint = srv.url, proxy = plain.url, no_proxy = "example.com,127.0.0.1" }
    assert.same({ { ok = true } }, r.calls)
    assert.same({ { ok = true } }, run { endpoint = tls_srv.url, proxy = plain.url, no_proxy = "127.0.0.1" }.calls)
    assert.equal(0, #plain.log())
    assert.same({ { ok = true } }, run { endpoint = srv.url, proxy = plain.url, no_proxy = "example.com" }.calls)
    assert.equal(1, #plain.log())
  end)

  it("refuses socks5h:// and https:// proxies with InvalidParameter, naming them", function()
    for _, scheme in ipairs { "socks5h", "https" } do
      local r = run { endpoint = srv.url, proxy = scheme .. "://u:pr0xy-s3cret%2Fpw@127.0.0.1:" .. plain.port }
      assert.equal("InvalidParameter", r.new_code)
      assert.matches(scheme .. "://", r.new_error, 1, true)
      no_password(r)
    end
    assert.equal(0, #plain.log())
  end)

  it("holds the CONNECT exchange to the attempt's time (a proxy that never answers)", function()
    local dir = fixture.tmpdir()
    finally(function() fixture.sh("rm -rf " .. dir) end)
    local f = assert(io.open(dir .. "/reply", "wb"))
    f:close()
    assert(fixture.sh("exec python3 spec/helpers/raw_reply.py --port-file " .. dir .. "/port --log-file " .. dir
      .. "/log --reply-file " .. dir .. "/reply --then stall --stall-limit 20 >/dev/null 2>&1 & echo $! >"
      .. dir .. "/pid"))
    local port
    for _ = 1, 200 do
      port = tonumber(fixture.read(dir .. "/port") or "")
      if port then break end
      require("imm.core").sleep(0.025)
    end
    finally(function() fixture.kill(fixture.read(dir .. "/pid"):match("%d+")) end)
    local r = run { endpoint = tls_srv.url, proxy = "http://127.0.0.1:" .. port, timeout = 1 }
    local c = r.calls[1]
    assert.equal("Timeout", c.code, c.error)
    assert.is_false(c.sent)
    assert.matches("\"first\": \"CONNECT 127%.0%.0%.1:" .. tls_srv.port, fixture.read(dir .. "/log"))
    assert.equal(0, #tls_srv.log())
  end)

  it("a proxy that is down is ConnectionFailed with nothing sent, no password shown", function()
    local r = run { endpoint = tls_srv.url, proxy = "http://u:pr0xy-s3cret%2Fpw@127.0.0.1:9" }
    local c = r.calls[1]
    assert.equal("ConnectionFailed", c.code)
    assert.is_false(c.sent)
    no_password(r)
  end)
end)
