-- Layer 2/3: the C core and the libcurl path against hostile replies and
-- misuse (issue 14): bytes after a NUL, a reply cut by a clean close,
-- oversized headers, the per-attempt time cap, sub-millisecond timeouts,
-- non-string options, the method token, out-of-range numbers, many open
-- files, gzip members, proxies and link-local credentials, redaction in C.
-- Every server here is a loopback one started by the spec.
local core = require "imm.core"
local imm = require "imm"
local decode = require "imm.decode"
local fixture = require "helpers.fixture"
local fake_cloud = require "helpers.fake_cloud"

local LUA = arg and arg[-1] or "lua"

-- Starts spec/helpers/raw_reply.py answering every request with `reply`.
-- opts: delay (s), ["then"] ("close" or "stall"), stall_limit (s).
local function raw_server(reply, opts)
  opts = opts or {}
  local dir = fixture.tmpdir()
  local f = assert(io.open(dir .. "/reply", "wb"))
  f:write(reply)
  f:close()
  local cmd = "exec python3 spec/helpers/raw_reply.py --port-file " .. dir .. "/port --log-file " .. dir ..
    "/log --reply-file " .. dir .. "/reply --delay " .. (opts.delay or 0) .. " --then " ..
    (opts["then"] or "close") .. " --stall-limit " .. (opts.stall_limit or 5) .. " >" .. dir ..
    "/out 2>&1 & echo $! >" .. dir .. "/pid"
  assert(fixture.sh(cmd))
  local port
  for _ = 1, 200 do
    local s = fixture.read(dir .. "/port")
    if s and s:match("^%d+$") then port = tonumber(s) break end
    core.sleep(0.025)
  end
  assert(port, "raw_reply.py did not start: " .. tostring(fixture.read(dir .. "/out")))
  local srv = { url = "http://127.0.0.1:" .. port, port = port, dir = dir }
  function srv.connections()
    local n = 0
    for _ in (fixture.read(dir .. "/log") or ""):gmatch("[^\n]+") do n = n + 1 end
    return n
  end
  function srv.stop()
    fixture.kill(fixture.read(dir .. "/pid"):match("%d+"))
    fixture.sh("rm -rf " .. dir)
  end
  return srv
end

local function client_for(srv, o)
  o = o or {}
  o.endpoint = srv.url
  o.access_key_id, o.access_key_secret = "id", "secret"
  o.timeout = o.timeout or 5
  return assert(imm.new(o))
end

-- gzip's own output for s (one member)
local function gz(s)
  local p = io.popen("printf '%s' '" .. s:gsub("'", "'\\''") .. "' | gzip -c -n")
  local out = p:read("*a")
  p:close()
  return out
end

local JSON_HEAD = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"

describe("bytes after a NUL in a reply body", function()
  it("are refused by both decoders, not ignored", function()
    local body = '{"RequestId":"r","Bindings":[]}\0,"NextToken":"t"}'
    for _, name in ipairs { "imm", "cjson" } do
      local v, err = decode[name](body)
      assert.is_nil(v, name)
      assert.matches("NUL", err, 1, true)
    end
    assert.is_nil((decode.imm("[1]\0")))
    assert.same({ 1 }, decode.imm("[1]"))
  end)

  it("make the client return InvalidResponse", function()
    local body = '{"RequestId":"r","Bindings":[]}\0,"NextToken":"t"}'
    local srv = raw_server(JSON_HEAD .. "Content-Length: " .. #body .. "\r\n\r\n" .. body)
    local c = client_for(srv, { max_retries = 0 })
    local res, err = c:list_bindings { ProjectName = "p" }
    srv.stop()
    assert.is_nil(res)
    assert.equal("InvalidResponse", err.code)
  end)
end)

describe("a reply cut short by a clean close (FIN)", function()
  local cases = {
    ["content-length"] = JSON_HEAD .. "Content-Length: 4000\r\n\r\n" .. '{"RequestId":"r","Bindings":[',
    chunked = JSON_HEAD .. "Transfer-Encoding: chunked\r\n\r\n1e\r\n" .. '{"RequestId":"r","Bindings":[' .. "\r\n",
  }
  for name, reply in pairs(cases) do
    it("is a lost reply like a reset: ConnectionFailed, and a read is retried (" .. name .. ")", function()
      local srv = raw_server(reply)
      local h = assert(core.http { timeout = 5 })
      local status, code, _, _, sent = h:request("POST", srv.url .. "/", {}, "")
      assert.is_nil(status)
      assert.equal("ConnectionFailed", code)
      assert.is_true(sent)
      h:close()
      local c = client_for(srv, { max_retries = 1 })
      local res, err = c:list_bindings { ProjectName = "p" }
      local n = srv.connections()
      srv.stop()
      assert.is_nil(res)
      assert.equal("ConnectionFailed", err.code)
      assert.is_true(err.retryable)
      assert.equal(2, err.attempts)
      assert.equal(3, n, "one core request, then the read and its retry")
    end)
  end
end)

describe("oversized response headers", function()
  local function check(reply, what)
    local srv = raw_server(reply)
    local h = assert(core.http { timeout = 10 })
    local status, code, msg = h:request("POST", srv.url .. "/", {}, "")
    h:close()
    assert.is_nil(status, what)
    assert.equal("InvalidResponse", code, what .. ": " .. tostring(msg))
    local c = client_for(srv, { max_retries = 2, timeout = 10 })
    local res, err = c:list_bindings { ProjectName = "p" }
    local n = srv.connections()
    srv.stop()
    assert.is_nil(res)
    assert.equal("InvalidResponse", err.code, what)
    assert.is_false(err.retryable, what)
    assert.equal(2, n, what .. ": not retried")
  end

  it("a 1 MB header line is InvalidResponse, not OutOfMemory, and not retried", function()
    check(JSON_HEAD .. "X-Big: " .. ("a"):rep(1024 * 1024) .. "\r\nContent-Length: 2\r\n\r\n{}", "1 MB line")
  end)

  it("more than 300 KB of header lines is InvalidResponse, not a retryable ConnectionFailed", function()
    local lines = {}
    for i = 1, 400 do lines[i] = "X-H" .. i .. ": " .. ("b"):rep(1000) end
    check(JSON_HEAD .. table.concat(lines, "\r\n") .. "\r\nContent-Length: 2\r\n\r\n{}", "400 KB of lines")
  end)

  it("a normal reply's headers still arrive whole", function()
    local srv = raw_server(JSON_HEAD .. "X-A: 1\r\nX-A: 2\r\nContent-Length: 2\r\n\r\n{}")
    local h = assert(core.http { timeout = 5 })
    local status, body, headers = h:request("GET", srv.url .. "/", {}, "")
    h:close()
    srv.stop()
    assert.equal(200, status)
    assert.equal("{}", body)
    assert.equal("1, 2", headers["x-a"])
  end)
end)

describe("the per-attempt time cap (request timeout)", function()
  local stall, slow
  setup(function()
    stall = raw_server("", { ["then"] = "stall", stall_limit = 8 })
    slow = raw_server(JSON_HEAD .. "Content-Length: 2\r\n\r\n{}", { delay = 0.6 })
  end)
  teardown(function()
    stall.stop()
    slow.stop()
  end)

  it("ends a blocking request by its own timeout, then the handle's timeout applies again", function()
    local h = assert(core.http { timeout = 10, connect_timeout = 2 })
    local t0 = core.monotonic()
    local status, code = h:request("GET", stall.url .. "/", {}, "", false, 0.3)
    local took = core.monotonic() - t0
    assert.is_nil(status)
    assert.equal("Timeout", code)
    assert.is_true(took < 2, "took " .. took .. " s")
    -- the next request, with no cap, may take longer than 0.3 s
    status = h:request("GET", slow.url .. "/", {}, "")
    assert.equal(200, status)
    -- a cap never lengthens the handle's own timeout
    local short = assert(core.http { timeout = 0.3 })
    t0 = core.monotonic()
    status, code = short:request("GET", stall.url .. "/", {}, "", false, 30)
    assert.is_nil(status)
    assert.equal("Timeout", code)
    assert.is_true(core.monotonic() - t0 < 2)
    short:close()
    h:close()
  end)

  it("is forwarded by the curl transport, blocking and async", function()
    local t = assert(require("imm.transport.curl").new { timeout = 10, async = true })
    local t0 = core.monotonic()
    local res, err = t:request { method = "GET", url = stall.url .. "/", headers = {}, body = "", timeout = 0.3 }
    assert.is_nil(res)
    assert.equal("Timeout", err.code)
    assert.is_true(core.monotonic() - t0 < 2)
    -- a cap already spent (0, negative) ends the attempt at once, never "no cap"
    for _, spent in ipairs { 0, -5 } do
      t0 = core.monotonic()
      res, err = t:request { method = "GET", url = stall.url .. "/", headers = {}, body = "", timeout = spent }
      assert.is_nil(res)
      assert.equal("Timeout", err.code)
      assert.is_true(core.monotonic() - t0 < 2)
    end
    local task = imm.spawn(function()
      return t:request { method = "GET", url = stall.url .. "/", headers = {}, body = "", timeout = 0.3 }
    end)
    t0 = core.monotonic()
    local ok, r, e = task:join(5)
    assert.is_true(ok)
    assert.is_nil(r)
    assert.equal("Timeout", e.code)
    assert.is_true(core.monotonic() - t0 < 2)
    t:close()
  end)

  it("rounds a timeout below 1 ms up to 1 ms instead of turning it off", function()
    for _, o in ipairs { { timeout = 0.0004 }, { timeout = 1e-9, connect_timeout = 1e-9 } } do
      local h = assert(core.http(o))
      local t0 = core.monotonic()
      local status, code = h:request("GET", stall.url .. "/", {}, "")
      assert.is_nil(status)
      assert.equal("Timeout", code)
      assert.is_true(core.monotonic() - t0 < 2)
      h:close()
    end
    local h = assert(core.http { timeout = 10 })
    local status, code = h:request("GET", stall.url .. "/", {}, "", false, 1e-7)
    assert.is_nil(status)
    assert.equal("Timeout", code)
    h:close()
  end)
end)

describe("imm.core refuses misuse without undefined behaviour", function()
  it("takes only strings for header lines, user_agent and ca_file", function()
    assert.has_error(function() core.http { user_agent = 123 } end, "imm.core: option user_agent must be a string")
    assert.has_error(function() core.http { ca_file = 4.5 } end, "imm.core: option ca_file must be a string")
    local h = assert(core.http { timeout = 1 })
    assert.has_error(function() h:request("GET", "http://127.0.0.1:9/", { 12345 }, "") end,
      "imm.core: header lines must be strings")
    h:close()
  end)

  it("sends only a method that is a token of letters A-Z", function()
    local h = assert(core.http { timeout = 1 })
    for _, m in ipairs { "GET\r\nX-Smuggled: 1", "GET /x HTTP/1.1\r\n\r\nGET", "get", "", "PO ST", ("A"):rep(17) } do
      local status, code, msg, _, sent = h:request(m, "http://127.0.0.1:9/", {}, "")
      assert.is_nil(status, m)
      assert.equal("InvalidParameter", code, m)
      assert.matches("method", msg)
      assert.is_false(sent)
    end
    h:close()
  end)

  it("clamps huge numbers and refuses NaN and negatives", function()
    local nan = 0 / 0
    local h = assert(core.http { timeout = 1e300, connect_timeout = 1e300, max_response_bytes = 1e300 })
    h:close()
    for _, k in ipairs { "timeout", "connect_timeout", "max_response_bytes" } do
      for _, v in ipairs { nan, -1, -1e300 } do
        assert.has_error(function() core.http { [k] = v } end)
      end
    end
    h = assert(core.http { timeout = 1 })
    assert.has_error(function() h:request("GET", "http://127.0.0.1:9/", {}, "", false, nan) end)
    assert.has_error(function() h:request("GET", "http://127.0.0.1:9/", {}, "", false, -1) end)
    h:close()
    local t0 = core.monotonic()
    core.sleep(nan)
    core.sleep(-1e300)
    assert.is_true(core.monotonic() - t0 < 0.5)
    assert.equal("abc", core.gunzip(gz("abc"), 1e300))
    assert.has_error(function() core.gunzip("x", nan) end)
    local m = assert(core.multi())
    assert.is_true(m:wait(nan))
    m:close()
  end)
end)

describe("multi:sockets() and imm.fds()", function()
  it("report a pending transfer's socket numbered 1024 and above", function()
    local srv = raw_server("", { ["then"] = "stall", stall_limit = 8 })
    local dir = fixture.tmpdir()
    local out = dir .. "/out"
    -- a process of its own, so raising RLIMIT_NOFILE touches nothing else;
    -- LD_PRELOAD (a sanitizer's runtime) is kept, or the module cannot load
    local cmd = "ulimit -n 4096 2>/dev/null; " .. LUA .. " spec/helpers/many_fds.lua " .. srv.url .. " >" .. out
      .. " 2>&1"
    local ok = os.execute(cmd)
    srv.stop()
    local text = fixture.read(out) or ""
    fixture.sh("rm -rf " .. dir)
    assert.is_true(ok == true or ok == 0, text)
    local highest = tonumber(text:match("opened (%d+)"))
    assert.is_true(highest and highest >= 1100, text)
    local fd = tonumber(text:match("socket (%d+)"))
    assert.is_truthy(fd, text)
    assert.is_true(fd >= 1024, text)
    assert.matches("timeout %-?%d+", text)
  end)
end)

describe("gunzip", function()
  it("decodes every member of a multi-member stream", function()
    local data = gz("abc") .. gz("def") .. gz("")
    assert.equal("abcdef", core.gunzip(data))
  end)

  it("refuses trailing garbage after the last member", function()
    for _, tail in ipairs { "x", "\0\0\0\0", "garbage after the body" } do
      local v, code, msg = core.gunzip(gz("abc") .. tail)
      assert.is_nil(v)
      assert.equal("InvalidResponse", code)
      assert.matches("trailing", msg)
    end
  end)

  it("reports a truncated stream as truncated, not corrupt", function()
    local full = gz(("hello world "):rep(50))
    for _, n in ipairs { 0, 5, 12, #full - 8, #full - 1 } do
      local v, code, msg = core.gunzip(full:sub(1, n))
      assert.is_nil(v, n)
      assert.equal("InvalidResponse", code)
      assert.matches("truncated", msg, 1, true)
    end
    -- a second member cut short is truncated too
    local v, _, msg = core.gunzip(gz("abc") .. gz("def"):sub(1, 10))
    assert.is_nil(v)
    assert.matches("truncated", msg, 1, true)
    -- and corruption is still corruption
    local bad = full:sub(1, #full - 8) .. "\0\0\0\0" .. full:sub(#full - 3)  -- a wrong CRC
    v, _, msg = core.gunzip(bad)
    assert.is_nil(v)
    assert.matches("corrupt", msg, 1, true)
  end)
end)

describe("proxies never see credential requests to this host or link-local addresses", function()
  local cloud, proxy
  setup(function()
    cloud = fake_cloud.start()
    proxy = raw_server("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
  end)
  teardown(function()
    cloud.stop()
    proxy.stop()
  end)
  before_each(function() cloud.reset() end)

  -- Runs a Lua chunk in a process whose environment names the proxy for
  -- every host; prints what the chunk returns.
  local function with_proxy(chunk)
    local dir = fixture.tmpdir()
    local f = assert(io.open(dir .. "/t.lua", "w"))
    f:write(chunk)
    f:close()
    local env = "env http_proxy=" .. proxy.url .. " HTTP_PROXY=" .. proxy.url .. " https_proxy=" .. proxy.url ..
      " all_proxy=" .. proxy.url .. " no_proxy= NO_PROXY= ALIBABA_CLOUD_ECS_METADATA_DISABLED= "
    local p = io.popen(env .. LUA .. " " .. dir .. "/t.lua " .. cloud.url .. " 2>&1")
    local out = p:read("*a")
    p:close()
    fixture.sh("rm -rf " .. dir)
    return out
  end

  it("the environment's proxy is used without no_proxy (the check can fail)", function()
    local out = with_proxy [[
      local core = require "imm.core"
      local h = assert(core.http { timeout = 5 })
      print(h:request("GET", arg[1] .. "/latest/meta-data/", {}, ""))
    ]]
    assert.matches("^502", out)
    assert.is_true(proxy.connections() >= 1)
  end)

  it("core.http{no_proxy = true} goes direct", function()
    local before = proxy.connections()
    local out = with_proxy [[
      local core = require "imm.core"
      local h = assert(core.http { timeout = 5, no_proxy = true })
      print(h:request("GET", arg[1] .. "/latest/meta-data/ram/security-credentials/", {}, ""))
    ]]
    assert.matches("^200", out)
    assert.equal(before, proxy.connections())
  end)

  it("the ECS metadata provider and a loopback credentials URI go direct", function()
    local before = proxy.connections()
    local out = with_proxy [[
      local credentials = require "imm.credentials"
      local p = assert(credentials.ecs_ram_role { metadata_endpoint = arg[1] })
      local c, err = p:get()
      print("ecs", c and c.access_key_id or ("error " .. tostring(err)))
      local u = assert(credentials.credentials_uri { uri = arg[1] .. "/credentials" })
      c, err = u:get()
      print("uri", c and c.access_key_id or ("error " .. tostring(err)))
    ]]
    assert.matches("ecs%s+STS%.", out)
    assert.matches("uri%s+STS%.", out)
    assert.is_nil(out:find("error"), out)
    assert.equal(before, proxy.connections())
    assert.is_true(#cloud.log("imds") >= 1)
  end)

  it("tells local and link-local URLs from others", function()
    local base = require "imm.credentials.base"
    for _, u in ipairs { "http://127.0.0.1:9/x", "http://localhost/", "http://100.100.100.200/latest",
      "http://169.254.170.2/creds", "http://[::1]:80/", "http://user@127.0.0.2/" } do
      assert.is_true(base.is_local_url(u), u)
    end
    for _, u in ipairs { "https://sts.aliyuncs.com/", "http://10.0.0.1/", "http://127.example.com/",
      "http://[2001:db8::1]/" } do
      assert.is_false(base.is_local_url(u), u)
    end
  end)
end)

describe("core.redact", function()
  it("masks the secret raw and percent-encoded once and twice", function()
    local secret = "a/b+c=d"
    local once, twice = core.percent_encode(secret), core.percent_encode(core.percent_encode(secret))
    local line = "x=" .. secret .. "&y=" .. once .. "&z=" .. twice .. "&w=" .. secret
    assert.equal("x=***&y=***&z=***&w=***", core.redact(line, secret))
    assert.equal("x=<r>&y=<r>&z=<r>&w=<r>", core.redact(line, secret, "<r>"))
    assert.equal(line, core.redact(line, nil))
    assert.equal(line, core.redact(line, ""))
    assert.equal("", core.redact("", secret))
    assert.equal("no secret here", core.redact("no secret here", secret))
    assert.equal("******", core.redact("tktk", "tk", "***"))
    assert.equal("a\0***\0b", core.redact("a\0s\0e\0b", "s\0e"))
  end)

  it("is what the client's debug trace uses for the token", function()
    local lines = {}
    local token = "tok/en+=="
    local c = assert(imm.new { endpoint = "http://127.0.0.1:9", access_key_id = "id", access_key_secret = "sec",
      security_token = token, max_retries = 0, connect_timeout = 1, debug = function(l) lines[#lines + 1] = l end })
    c:list_bindings { ProjectName = "p" }
    local all = table.concat(lines, "\n")
    assert.is_true(#all > 0)
    assert.is_nil(all:find(token, 1, true))
    assert.is_nil(all:find(core.percent_encode(token), 1, true))
    assert.is_nil(all:find(core.percent_encode(core.percent_encode(token)), 1, true))
  end)
end)

describe("the canonical query", function()
  it("sorts parameters by raw name, as the official openapi-util does", function()
    -- "A{" sorts after "Ab" raw, but "A%7B" sorts before "Ab" encoded
    local q = core.sign_v2("POST", { ["A{"] = "1", Ab = "2", A = "3" }, "s")
    assert.equal("A=3&Ab=2&A%7B=1&Signature=", q:match("^(.-Signature=)"))
  end)
end)

describe("the C checks (spec/c/core_check.c, make core-check)", function()
  setup(function()
    assert(fixture.sh("make -s core-check >build/core-check.log 2>&1"),
      "make core-check failed: " .. tostring(fixture.read("build/core-check.log")))
  end)

  it("decodes JSON nested 1000 deep on a 64 KB thread stack, and refuses 1001", function()
    local dir = fixture.tmpdir()
    local out = dir .. "/out"
    local ok = fixture.sh("./build/check/core_check_plain stack >" .. out .. " 2>&1")
    local text = fixture.read(out) or ""
    fixture.sh("rm -rf " .. dir)
    assert.is_true(ok, text)
    assert.matches("on a 64 KB stack: ok", text, 1, true)
  end)

  it("survives a failing allocator over signing, RSA, JSON, HTTP, the multi and parked transfers", function()
    -- raw_reply.py closes each connection after its reply, so the reply says
    -- so: otherwise libcurl may reuse a connection the server has already
    -- closed, and imm.core refuses libcurl's silent re-send (a re-sent request
    -- must be signed afresh, which only the client's retry does), so the
    -- bare core would report ConnectionFailed at random
    local srv = raw_server(JSON_HEAD .. "Connection: close\r\nContent-Length: 11\r\n\r\n" .. '{"ok":true}')
    local dir = fixture.tmpdir()
    local out = dir .. "/out"
    -- built with ASan and UBSan: a leak, a bad access or undefined behaviour fails it
    local ok = fixture.sh("ASAN_OPTIONS=detect_leaks=1 ./build/check/core_check alloc spec/helpers/core_check.lua "
      .. srv.url .. " >" .. out .. " 2>&1")
    srv.stop()
    local text = fixture.read(out) or ""
    fixture.sh("rm -rf " .. dir)
    assert.is_true(ok, text)
    -- fresh_multi: a failed allocation in the socket callback was Cancelled
    -- (issue 21, item 11); parked: a transfer parked during a blocking
    -- request on the shared multi lost its completion (item 10)
    for _, op in ipairs { "sign", "rsa", "json", "http", "multi", "fresh_multi", "parked" } do
      local n = tonumber(text:match("alloc: " .. op .. ": each of (%d+) allocations"))
      assert.is_true(n and n > 5, op .. ": " .. text)
    end
    assert.matches("core_check: passed", text, 1, true)
  end)
end)
