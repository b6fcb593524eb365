-- Layer 3: HTTP against a real HTTP/1.1 server on loopback (the local IMM
-- server), in plain text and over TLS with certificates generated for the run.
local fixture = require "helpers.fixture"

describe("HTTP transport (libcurl)", function()
  local srv
  setup(function() srv = fixture.start() end)
  teardown(function() srv.stop() end)
  before_each(function() srv.reset() end)

  it("lists bindings over plain http", function()
    local c = srv.client { protocol = "http" }
    local res = assert(c:list_bindings { ProjectName = "immtest", MaxResults = 5 })
    assert.equal(5, #res.Bindings)
    assert.is_string(res.RequestId)
    assert.is_string(res.NextToken)
    local log = srv.log()
    assert.equal(1, #log)
    assert.equal("POST", log[1].method)
    assert.equal("ListBindings", log[1].action)
    assert.equal("v3-sha256", log[1].signature)
    c:close()
  end)

  it("asks for gzip and decodes it", function()
    local c = srv.client {}
    assert(c:list_bindings { ProjectName = "immtest" })
    assert.is_true(srv.log()[1].gzip)
  end)

  it("keeps the connection alive across calls", function()
    local c = srv.client {}
    local before = srv.stats().connections
    for _ = 1, 5 do assert(c:list_bindings { ProjectName = "immtest", MaxResults = 1 }) end
    -- one new connection at most: none when an earlier client's is still
    -- in the lua_State's shared cache (spec/17 checks that case)
    assert.is_true(srv.stats().connections - before <= 1)
    c:close()
  end)

  it("reports a refused connection as ConnectionFailed, after retrying", function()
    local imm = require "imm"
    local c = assert(imm.new { endpoint = "http://127.0.0.1:9", access_key_id = "a",
      access_key_secret = "b", max_retries = 1, connect_timeout = 1 })
    local res, err = c:list_bindings { ProjectName = "p" }
    assert.is_nil(res)
    assert.equal("ConnectionFailed", err.code)
    assert.is_true(err.retryable)
    assert.equal(2, err.attempts)
  end)

  it("gives up with Timeout when the reply is too slow", function()
    srv.fault { mode = "slow", delay = 2, count = -1 }
    local c = srv.client { timeout = 0.4, max_retries = 0 }
    local res, err = c:list_bindings { ProjectName = "immtest" }
    assert.is_nil(res)
    assert.equal("Timeout", err.code)
    assert.is_true(err.retryable)
  end)

  it("caps the body with max_response_bytes", function()
    srv.fault { mode = "big", size = 2 * 1024 * 1024 }
    local c = srv.client { max_response_bytes = 64 * 1024, max_retries = 0 }
    local res, err = c:list_bindings { ProjectName = "immtest" }
    assert.is_nil(res)
    assert.equal("InvalidResponse", err.code)
    assert.matches("max_response_bytes", err.message)
  end)
end)

describe("HTTPS", function()
  local srv
  setup(function() srv = fixture.start { tls = true } end)
  teardown(function() srv.stop() end)
  before_each(function() srv.reset() end)

  it("lists bindings when the CA is given with ca_file", function()
    local c = srv.client {}
    local res = assert(c:list_bindings { ProjectName = "immtest", MaxResults = 3 })
    assert.equal(3, #res.Bindings)
  end)

  it("refuses the server's certificate by default (system CAs)", function()
    local c = srv.client { ca_file = fixture.NIL, max_retries = 0 }
    local res, err = c:list_bindings { ProjectName = "immtest" }
    assert.is_nil(res)
    assert.equal("TLSError", err.code)
    assert.is_false(err.retryable)
    assert.equal(0, #srv.log(), "nothing may reach the server over an unverified channel")
  end)

  it("refuses a certificate from another CA", function()
    local c = srv.client { ca_file = fixture.certs() .. "/other-ca.crt", max_retries = 0 }
    local res, err = c:list_bindings { ProjectName = "immtest" }
    assert.is_nil(res)
    assert.equal("TLSError", err.code)
  end)

  it("refuses a certificate that does not name the host", function()
    -- the certificate covers localhost and 127.0.0.1, not 127.0.0.2
    local other = fixture.start { tls = true, host = "127.0.0.2" }
    finally(other.stop)  -- even when an assertion fails
    local c = other.client { max_retries = 0 }
    local res, err = c:list_bindings { ProjectName = "immtest" }
    other.stop()
    assert.is_nil(res)
    assert.equal("TLSError", err.code)
  end)

  it("skips verification only with insecure = true", function()
    local c = srv.client { ca_file = fixture.NIL, insecure = true }
    assert(c:list_bindings { ProjectName = "immtest", MaxResults = 1 })
  end)

  -- async: the clients run their calls in imm.spawn tasks, on the tasks' multi
  for _, async in ipairs { false, true } do
    local mode = async and " (async tasks)" or ""
    it("verifies a new client against its ca_file as it is now, on reused and on new connections" .. mode, function()
      local imm = require "imm"
      local dir = fixture.tmpdir()
      finally(function() fixture.sh("rm -rf " .. dir) end)
      local path = dir .. "/trust.crt"
      -- rewritten in place (same inode), as an editor or a config tool may do
      local function put(name)
        local pem = fixture.read(fixture.certs() .. "/" .. name)
        local f = assert(io.open(path, "wb"))
        f:write(pem)
        f:close()
      end
      local function client()
        return srv.client { ca_file = path, max_retries = 0, async = async or nil }
      end
      local function call(c, opts)
        local function run()
          return c:call("ListBindings", { ProjectName = "immtest", MaxResults = 1 }, opts)
        end
        if not async then return run() end
        local ok, res, err = imm.spawn(run):join(30)
        assert.is_true(ok, tostring(res))
        return res, err
      end
      put("ca.crt")
      local before = client()
      -- parses the file and leaves a verified connection in the pool
      assert(call(before))
      local seen = #srv.log()
      put("other-ca.crt") -- the server's CA is no longer trusted
      local after = client()
      local res, err = call(after)
      assert.is_nil(res, "a connection verified against the old file was reused")
      assert.equal("TLSError", err.code)
      -- idempotent = false: sent on a new connection, never on a reused one
      res, err = call(after, { idempotent = false })
      assert.is_nil(res, "a new connection was verified against the old file's parsed store")
      assert.equal("TLSError", err.code)
      assert.equal(seen, #srv.log(), "nothing may reach the server over a channel the file no longer trusts")
      -- the CA back, by rename this time: a newer client trusts it again
      local f = assert(io.open(path .. ".new", "wb"))
      f:write(fixture.read(fixture.certs() .. "/ca.crt"))
      f:close()
      assert(os.rename(path .. ".new", path))
      local again = client()
      assert(call(again))
      before:close()
      after:close()
      again:close()
    end)
  end

  -- The CA file is parsed certificate by certificate, as handshakes name
  -- them (src/imm_castore.c); h:debug() counts what the file holds and what
  -- was parsed. These bundles are made here, next to the system's.
  describe("a CA file read lazily", function()
    local core = require "imm.core"
    local dir, certs
    setup(function()
      dir = fixture.tmpdir()
      certs = fixture.certs()
    end)
    teardown(function() fixture.sh("rm -rf " .. dir) end)

    local function bundle(name, ...)
      local path = dir .. "/" .. name
      local f = assert(io.open(path, "wb"))
      for _, part in ipairs { ... } do f:write(part, "\n") end
      f:close()
      return path
    end
    local function get(file)
      local h = assert(core.http { ca_file = file, timeout = 10, shared = true })
      local status, code = h:request("GET", srv.url .. "/", {}, nil, true)
      local dbg = h:debug()
      h:close()
      return status, code, dbg
    end
    local system = fixture.read("/etc/ssl/certs/ca-certificates.crt") or ""
    local function count(pem) return select(2, pem:gsub("%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-", "")) end

    it("parses only the certificates a handshake names", function()
      local ca = fixture.read(certs .. "/ca.crt")
      -- the test CA after the system's, as a user's bundle would have it
      local file = bundle("system-and-test.crt", system, ca)
      local h = assert(core.http { ca_file = file, timeout = 10, shared = true })
      -- nothing is read before a handshake needs it
      assert.equal("unread", h:debug().ca_read)
      h:close()
      local status, code, dbg = get(file)
      assert.is_number(status, tostring(code))
      assert.equal("indexed", dbg.ca_read)
      assert.equal(count(system) + 1, dbg.ca_certs)
      assert.equal(1, dbg.ca_parsed, "parsed more than the one certificate the chain names")
      -- without the test CA the same server is refused
      local only_system = bundle("system-only.crt", system, fixture.read(certs .. "/other-ca.crt"))
      status, code = get(only_system)
      assert.is_nil(status)
      assert.equal("TLSError", code)
    end)

    it("finds the issuer among certificates that share its name", function()
      -- an impostor with the test CA's name and another key, first in the file
      local ok = fixture.sh("cd " .. dir .. " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256"
        .. " -nodes -days 1 -subj '/O=imm tests/CN=imm-local test CA' -keyout impostor.key"
        .. " -out impostor.crt >/dev/null 2>&1")
      assert.is_true(ok, "openssl could not make the impostor")
      local impostor = fixture.read(dir .. "/impostor.crt")
      local status, code, dbg = get(bundle("impostor-first.crt", impostor, fixture.read(certs .. "/ca.crt")))
      assert.is_number(status, tostring(code))
      assert.equal(2, dbg.ca_parsed, "both certificates of that name are candidates")
      status, code = get(bundle("impostor-only.crt", impostor))
      assert.is_nil(status)
      assert.equal("TLSError", code)
    end)

    it("reads a file with other blocks whole, and leaves a path with a colon to libcurl", function()
      local ca = fixture.read(certs .. "/ca.crt")
      -- a TRUSTED CERTIFICATE block is OpenSSL's own format: its PEM reader has the file
      assert.is_true(fixture.sh("openssl x509 -in " .. certs .. "/other-ca.crt -trustout -addtrust serverAuth"
        .. " -out " .. dir .. "/trusted.pem"))
      local mixed = bundle("mixed.crt", fixture.read(dir .. "/trusted.pem"), ca)
      local status, code, dbg = get(mixed)
      assert.is_number(status, tostring(code))
      assert.equal("whole", dbg.ca_read)
      -- the server's CA as a TRUSTED CERTIFICATE (for serverAuth) alone is trusted
      assert.is_true(fixture.sh("openssl x509 -in " .. certs .. "/ca.crt -trustout -addtrust serverAuth"
        .. " -out " .. dir .. "/trusted-ca.pem"))
      status, code, dbg = get(bundle("trusted-ca.crt", fixture.read(dir .. "/trusted-ca.pem")))
      assert.is_number(status, tostring(code))
      assert.equal("whole", dbg.ca_read)
      -- and one trusted for clientAuth only is not
      assert.is_true(fixture.sh("openssl x509 -in " .. certs .. "/ca.crt -trustout -addtrust clientAuth"
        .. " -out " .. dir .. "/client-only.pem"))
      status, code = get(bundle("client-only.crt", fixture.read(dir .. "/client-only.pem")))
      assert.is_nil(status)
      assert.equal("TLSError", code)
      assert.is_true(fixture.sh("mkdir -p '" .. dir .. "/a:b'"))
      local colon = dir .. "/a:b/ca.crt"
      local f = assert(io.open(colon, "wb"))
      f:write(ca)
      f:close()
      status, code, dbg = get(colon)
      assert.is_number(status, tostring(code))
      assert.is_nil(dbg.ca_read)
      -- not PEM at all: refused, and again on the next connection
      local garbage = bundle("garbage.crt", "not a certificate")
      for _ = 1, 2 do
        status, code, dbg = get(garbage)
        assert.is_nil(status)
        assert.equal("TLSError", code)
        assert.equal("failed", dbg.ca_read)
      end
    end)

    it("reads the system bundle the same way when no ca_file is given", function()
      if system == "" then return end
      local status, code, dbg = get(nil)
      -- the test server's CA is not in the system bundle
      assert.is_nil(status)
      assert.equal("TLSError", code)
      assert.equal("indexed", dbg.ca_read)
      assert.equal(count(system), dbg.ca_certs)
    end)

    it("keeps a store alive for its handles after the cache let it go", function()
      local ca = fixture.read(certs .. "/ca.crt")
      local first = assert(core.http { ca_file = bundle("keep-0.crt", ca), timeout = 10, shared = true })
      finally(function() first:close() end)
      -- more files than the cache keeps (8): the first one's store is evicted
      for i = 1, 10 do assert.is_number((get(bundle("keep-" .. i .. ".crt", ca)))) end
      local status = first:request("GET", srv.url .. "/", {}, nil, true, nil, nil)
      assert.is_number(status)
      -- a handle made now reads the first file again
      assert.is_number((get(dir .. "/keep-0.crt")))
    end)
  end)

  it("reuses the TLS connection across calls", function()
    local c = srv.client {}
    local before = srv.stats().connections
    for _ = 1, 3 do assert(c:list_bindings { ProjectName = "immtest", MaxResults = 1 }) end
    assert.is_true(srv.stats().connections - before <= 1)
  end)

  -- The fan-out of a parallel listing opens one connection per chain, each
  -- on its own easy handle of the same multi: they resume the TLS session
  -- of the first (h:debug().tls_resumed, a test hook), but never a session
  -- verified against another CA store (the curl transport's other spelling
  -- of the path for a replaced CA file).
  it("resumes the TLS session on the other handles of a multi, never across CA stores", function()
    local core = require "imm.core"
    local ca = fixture.certs() .. "/ca.crt"
    local function handle(file) return assert(core.http { ca_file = file, timeout = 10, shared = true }) end
    local function get(h)
      local status = h:request("GET", srv.url .. "/", {}, nil, true)
      assert.is_number(status)
      return h:debug().tls_resumed
    end
    local first, second, other = handle(ca), handle(ca), handle(ca:gsub("^/", "/./"))
    finally(function() first:close() second:close() other:close() end)
    get(first) -- a full handshake, or a session left by an earlier spec
    assert.is_true(get(second), "a new connection on another handle did a full handshake")
    assert.is_false(get(other), "a session crossed CA stores")
    -- multis of their own: the same holds on core.multi and the tasks' multi
    local m = core.multi()
    finally(function() m:close() end)
    local a, b = assert(core.http { ca_file = ca, timeout = 10 }), assert(core.http { ca_file = ca, timeout = 10 })
    finally(function() a:close() b:close() end)
    for i, h in ipairs { a, b } do
      assert(m:add(h, "GET", srv.url .. "/", {}, nil, true))
      local done
      repeat
        done = select(2, assert(m:perform()))
        if not done then assert(m:wait(100)) end
      until done
      assert.is_number((h:result()))
      if i == 2 then assert.is_true(h:debug().tls_resumed, "no resumption on a core.multi") end
    end
  end)
end)

-- Proxies on the libcurl transport, through the recording proxy of
-- spec/helpers/proxy.py. The specs run with no_proxy=127.0.0.1 in the
-- environment: an explicit proxy option must not be bypassed by it.
describe("proxies (libcurl)", function()
  local proxy_fixture = require "helpers.proxy"
  local imm = require "imm"
  local srv, tls_srv, plain, authed, tls_proxy
  setup(function()
    srv = fixture.start()
    tls_srv = fixture.start { tls = true }
    plain = proxy_fixture.start()
    authed = proxy_fixture.start { auth = true }
    tls_proxy = proxy_fixture.start { tls = true, auth = true }
  end)
  teardown(function()
    for _, s in ipairs { srv, tls_srv, plain, authed, tls_proxy } do s.stop() end
  end)
  before_each(function()
    srv.reset()
    tls_srv.reset()
    for _, p in ipairs { plain, authed, tls_proxy } do p.reset() end
  end)

  local function list(c)
    return c:list_bindings { ProjectName = "immtest", MaxResults = 2 }
  end

  it("forwards a request to an http endpoint in absolute form", function()
    local c = srv.client { proxy = plain.url }
    assert(list(c))
    assert(list(c))
    local log = plain.log()
    assert.equal(2, #log)
    assert.equal("forward", log[1].kind)
    assert.equal("POST", log[1].method)
    assert.matches("^http://127%.0%.0%.1:" .. srv.port .. "/%?", log[1].target)
    assert.equal(200, log[2].status)
    assert.equal(log[1].conn, log[2].conn, "the connection to the proxy is kept alive")
    assert.equal(2, #srv.log())
  end)

  it("tunnels to an https endpoint with CONNECT, once for several calls", function()
    local c = tls_srv.client { proxy = plain.url }
    for _ = 1, 3 do assert(list(c)) end
    local log = plain.log()
    assert.equal(1, #log)
    assert.equal("connect", log[1].kind)
    assert.equal("127.0.0.1:" .. tls_srv.port, log[1].target)
    assert.equal(3, #tls_srv.log())
  end)

  it("sends Basic credentials from the URL, to http and https endpoints", function()
    assert(list(srv.client { proxy = authed.auth_url() }))
    assert(list(tls_srv.client { proxy = authed.auth_url() }))
    local log = authed.log()
    assert.equal(2, #log)
    assert.same({ "forward", "ok" }, { log[1].kind, log[1].auth })
    assert.same({ "connect", "ok" }, { log[2].kind, log[2].auth })
  end)

  it("a wrong or missing password is ProxyAuthenticationRequired, not retried, and never in an error", function()
    local wrong = "wr0ng-pass!word"
    for _, case in ipairs {
      { srv, authed.auth_url(nil, wrong) }, { tls_srv, authed.auth_url(nil, wrong) },
      { srv, authed.url }, { tls_srv, authed.url },
    } do
      local s, url = case[1], case[2]
      local lines = {}
      local c = s.client { proxy = url, debug = function(l) lines[#lines + 1] = l end }
      local res, err = list(c)
      assert.is_nil(res)
      assert.equal("ProxyAuthenticationRequired", err.code, tostring(err))
      assert.equal(407, err.status)
      assert.is_false(err.retryable)
      assert.is_nil(err.attempts and err.attempts > 1 or nil, "retried")
      for _, secret in ipairs { wrong, "wr0ng-pass%21word", proxy_fixture.PASSWORD } do
        assert.is_false(fixture.deep_find(err, secret), "the proxy password in the error")
        assert.is_nil(tostring(err):find(secret, 1, true))
        assert.is_nil(tostring(c):find(secret, 1, true))
        assert.is_nil(table.concat(lines, "\n"):find(secret, 1, true))
      end
    end
    assert.equal(0, #srv.log() + #tls_srv.log(), "nothing reached the service")
  end)

  it("carries async tasks' calls too (imm.spawn)", function()
    local c = tls_srv.client { proxy = authed.auth_url(), async = true }
    local ok, res, err = imm.spawn(function() return list(c) end):join(30)
    assert.is_true(ok, tostring(res))
    assert(res, tostring(err))
    assert.equal(1, authed.count("connect"))
    local wrong = tls_srv.client { proxy = authed.auth_url(nil, "wr0ng-pass!word"), async = true }
    ok, res, err = imm.spawn(function() return list(wrong) end):join(30)
    assert.is_true(ok, tostring(res))
    assert.is_nil(res)
    assert.equal("ProxyAuthenticationRequired", err.code)
    assert.is_false(fixture.deep_find(err, "wr0ng-pass"))
    assert.equal(1, #tls_srv.log())
  end)

  it("carries parallel listings too, with the same error for a wrong password", function()
    local c = srv.client { proxy = authed.auth_url() }
    local n = 0
    for b, err in c:bindings({ ProjectName = "immtest" }, { concurrency = 3, page_size = 50 }) do
      assert(b, tostring(err))
      n = n + 1
    end
    assert.is_true(n > 0)
    assert.equal(#srv.log(), authed.count("forward"))
    local wrong = srv.client { proxy = authed.auth_url(nil, "wr0ng-pass!word"), max_retries = 1 }
    local b, err = wrong:bindings({ ProjectName = "immtest" }, { concurrency = 3 })()
    assert.is_falsy(b)
    assert.equal("ProxyAuthenticationRequired", err.code, tostring(err))
    assert.is_false(fixture.deep_find(err, "wr0ng-pass"))
  end)

  it("never puts the password in a failure's error (a proxy that is down)", function()
    local c = srv.client { proxy = "http://u:pr0xy-s3cret%2Fpw@127.0.0.1:9", max_retries = 0 }
    local res, err = list(c)
    assert.is_nil(res)
    assert.equal("ConnectionFailed", err.code)
    assert.is_false(err.sent)
    assert.is_false(fixture.deep_find(err, proxy_fixture.PASSWORD))
    assert.is_false(fixture.deep_find(err, "pr0xy-s3cret%2Fpw"))
  end)

  it("verifies an https:// proxy with the client's ca_file", function()
    assert(list(tls_srv.client { proxy = tls_proxy.auth_url() }))
    assert(list(srv.client { proxy = tls_proxy.auth_url(), ca_file = fixture.certs() .. "/ca.crt" }))
    local log = tls_proxy.log()
    assert.equal(2, #log)
    assert.same({ "connect", "ok" }, { log[1].kind, log[1].auth })
    assert.same({ "forward", "ok" }, { log[2].kind, log[2].auth })
    tls_proxy.reset()
    -- a CA that did not sign the proxy's certificate: nothing passes
    local c = srv.client { proxy = tls_proxy.auth_url(), ca_file = fixture.certs() .. "/other-ca.crt",
      max_retries = 0 }
    local res, err = list(c)
    assert.is_nil(res)
    assert.equal("TLSError", err.code)
    assert.equal(0, #tls_proxy.log())
    assert.is_false(fixture.deep_find(err, proxy_fixture.PASSWORD))
  end)

  it("goes through socks5h, with user:password", function()
    assert(list(tls_srv.client { proxy = "socks5h://" .. authed.auth_url():match("^http://(.*)$") }))
    local log = authed.log()
    assert.equal(1, #log)
    assert.same({ "socks", "ok", 200 }, { log[1].kind, log[1].auth, log[1].status })
    assert.equal(1, #tls_srv.log())
    -- a rejected user, or none where the proxy wants one
    for _, url in ipairs { "socks5h://gateway:s0cks-wr0ng@" .. authed.authority, "socks5h://" .. authed.authority } do
      local res, err = list(tls_srv.client { proxy = url, max_retries = 2 })
      assert.is_nil(res)
      assert.equal("ProxyAuthenticationRequired", err.code, tostring(err))
      assert.is_false(err.sent)
      assert.is_nil(err.attempts and err.attempts > 1 or nil, "retried")
      assert.is_false(fixture.deep_find(err, "s0cks-wr0ng"))
    end
    assert.equal(1, #tls_srv.log())
  end)

  it("no_proxy (a list or a comma string) sends matching hosts direct", function()
    for _, np in ipairs { { "127.0.0.1" }, "example.com, 127.0.0.1", { ".localhost", "127.0.0.1" } } do
      assert(list(srv.client { proxy = plain.url, no_proxy = np }))
    end
    assert.equal(0, #plain.log())
    assert.equal(3, #srv.log())
    -- no match: through the proxy
    assert(list(srv.client { proxy = plain.url, no_proxy = { "example.com", "127.0.0.2" } }))
    assert(list(srv.client { proxy = plain.url, no_proxy = {} }))
    assert.equal(2, #plain.log())
  end)

  it("never mixes proxied and direct connections in the shared cache", function()
    local via = tls_srv.client { proxy = plain.url }
    local direct = tls_srv.client {}
    local authd = tls_srv.client { proxy = authed.auth_url() }
    for _ = 1, 2 do
      assert(list(via))
      assert(list(direct))
      assert(list(authd))
    end
    assert.equal(1, plain.count("connect"))
    assert.equal(1, authed.count("connect"))
    assert.equal(6, #tls_srv.log())
    -- a client with a wrong password never rides the authenticated tunnel
    local wrong = tls_srv.client { proxy = authed.auth_url(nil, "nope-nope"), max_retries = 0 }
    local res, err = list(wrong)
    assert.is_nil(res)
    assert.equal("ProxyAuthenticationRequired", err.code)
    assert.equal(6, #tls_srv.log())
  end)

  it("matches no_proxy entries as libcurl does (the rule the nginx transport applies)", function()
    local proxy = require "imm.proxy"
    local hosts = assert(proxy.no_proxy(" Example.COM, .internal ,[::1], 10.1.2.3"))
    assert.same({ "example.com", ".internal", "::1", "10.1.2.3" }, hosts)
    for host, want in pairs { ["example.com"] = true, ["a.example.com"] = true, ["nonexample.com"] = false,
      ["x.internal"] = true, internal = true, ["::1"] = true, ["[::1]"] = true, ["10.1.2.3"] = true,
      ["10.1.2.30"] = false, ["example.com.evil.org"] = false } do
      assert.equal(want, proxy.bypass(hosts, host), host)
    end
    assert.is_true(proxy.bypass({ "*" }, "imm.cn-hangzhou.aliyuncs.com"))
    assert.is_false(proxy.bypass({}, "example.com"))
  end)

  it("refuses a bad proxy or no_proxy with InvalidParameter, naming no password", function()
    local base = { endpoint = srv.url, access_key_id = fixture.KEY_ID, access_key_secret = fixture.SECRET }
    local function try(o)
      local t = {}
      for k, v in pairs(base) do t[k] = v end
      for k, v in pairs(o) do t[k] = v end
      return imm.new(t)
    end
    for _, bad in ipairs {
      { proxy = true }, { proxy = 8080 }, { proxy = "" }, { proxy = "127.0.0.1:3128" },
      { proxy = "ftp://u:hunter22@127.0.0.1:21" }, { proxy = "socks4://127.0.0.1:1080" },
      { proxy = "http://" }, { proxy = "http://u:hunter22@" }, { proxy = "http://127.0.0.1:0" },
      { proxy = "http://127.0.0.1:65536" }, { proxy = "http://127.0.0.1:3128/path" },
      { proxy = "http://127.0.0.1:3128?q" }, { proxy = "http://u:hunter22@127.0.0.1:3128\r\nX: y" },
      { proxy = "http://u:hun%zzter22@127.0.0.1:3128" }, { proxy = "http://exa mple:3128" },
      { no_proxy = { 1 } }, { no_proxy = { "a b" } }, { no_proxy = "10.0.0.0/8" }, { no_proxy = true },
      { no_proxy = { "*.example.com" } }, { no_proxy = { "x\r\n" } },
    } do
      local c, err = try(bad)
      local k, v = next(bad)
      assert.is_nil(c, k .. " = " .. tostring(v))
      assert.equal("InvalidParameter", err.code)
      assert.matches(k, err.message, 1, true)
      assert.is_false(fixture.deep_find(err, "hunter22"), err.message)
    end
    assert.equal(0, #srv.log())
  end)

  -- libcurl reads the proxy variables; these run in a process of their own
  -- whose environment names the recording proxy for every host
  describe("and the environment", function()
    local LUA = arg and arg[-1] or "lua"
    local function run(chunk)
      local dir = fixture.tmpdir()
      local f = assert(io.open(dir .. "/t.lua", "w"))
      f:write("local imm = require 'imm'\nlocal o = { endpoint = arg[1], access_key_id = arg[2], "
        .. "access_key_secret = arg[3], max_retries = 0 }\n" .. chunk)
      f:close()
      local env = "env http_proxy=" .. plain.url .. " HTTP_PROXY=" .. plain.url .. " all_proxy=" .. plain.url
        .. " no_proxy= NO_PROXY= "
      local p = io.popen(env .. LUA .. " " .. dir .. "/t.lua " .. srv.url .. " " .. fixture.KEY_ID .. " "
        .. fixture.SECRET .. " 2>&1")
      local out = p:read("*a")
      p:close()
      fixture.sh("rm -rf " .. dir)
      return out
    end

    it("applies without a proxy option, and proxy = false ignores it", function()
      local out = run [[
        local c = assert(imm.new(o))
        print("env", assert(c:list_bindings { ProjectName = "immtest" }).RequestId ~= nil)
      ]]
      assert.matches("env%s+true", out)
      assert.equal(1, #plain.log())
      out = run [[
        o.proxy = false
        local c = assert(imm.new(o))
        print("off", assert(c:list_bindings { ProjectName = "immtest" }).RequestId ~= nil)
      ]]
      assert.matches("off%s+true", out)
      assert.equal(1, #plain.log(), "proxy = false went through the environment's proxy")
      -- no_proxy alone replaces the environment's list
      out = run [[
        o.no_proxy = "127.0.0.1"
        local c = assert(imm.new(o))
        print("np", assert(c:list_bindings { ProjectName = "immtest" }).RequestId ~= nil)
      ]]
      assert.matches("np%s+true", out)
      assert.equal(1, #plain.log())
      assert.equal(3, #srv.log())
    end)
  end)
end)
