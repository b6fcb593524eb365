-- Layer 8: reliability and security. Retries and time, hostile and broken
-- servers (the local IMM server's fault switches), header injection, the
-- debug trace and secrets after failures of every kind.
local imm = require "imm"
local core = require "imm.core"
local fixture = require "helpers.fixture"

local SECRET = "S3cr3t-Never-Shown-0123456789"
local TOKEN = "T0ken-Never-Shown/+=abcdef"

local deep_find = fixture.deep_find

describe("reliability", function()
  local srv
  setup(function() srv = fixture.start() end)
  teardown(function() srv.stop() end)
  before_each(function() srv.reset() end)

  describe("retries and time", function()
    it("rides out a 429 storm, signing every attempt afresh", function()
      srv.fault { mode = "throttle", count = 3 }
      local res = assert(srv.client { max_retries = 3 }:list_bindings { ProjectName = "immtest", MaxResults = 2 })
      assert.equal(2, #res.Bindings)
      local log, nonces = srv.log(), {}
      assert.equal(4, #log)
      for _, r in ipairs(log) do
        assert.is_nil(nonces[r.headers["x-acs-signature-nonce"]])
        nonces[r.headers["x-acs-signature-nonce"]] = true
      end
    end)

    -- issue 20: the service refuses a nonce it has seen; a read is signed
    -- again (a new nonce) and retried, a mutation is not sent twice
    it("retries a read refused with SignatureNonceUsed with a new signature; never a mutation", function()
      local n, nonces = 0, { "nonce-a", "nonce-a", "nonce-b", "nonce-a", "nonce-c" }
      local c = srv.client { max_retries = 2, nonce = function()
        n = n + 1
        return nonces[n]
      end }
      assert(c:list_bindings { ProjectName = "immtest", MaxResults = 1 })
      local res, err = c:list_bindings { ProjectName = "immtest", MaxResults = 1 }
      assert.is_nil(err)
      assert.equal(1, #res.Bindings)
      assert.equal(3, n)
      local log = srv.log()
      assert.equal(3, #log)
      assert.equal(log[1].headers["x-acs-signature-nonce"], log[2].headers["x-acs-signature-nonce"])
      assert.equal("nonce-b", log[3].headers["x-acs-signature-nonce"])
      local created, cerr = c:create_binding { ProjectName = "immtest", DatasetName = "ds", URI = "oss://nonce/" }
      assert.is_nil(created)
      assert.equal("SignatureNonceUsed", cerr.code)
      assert.is_false(cerr.retryable)
      assert.equal(4, n, "a mutation was sent again")
    end)

    it("stops retrying at the deadline", function()
      srv.fault { mode = "throttle", count = -1, retry_after_ms = 400 }
      local c = srv.client { max_retries = 10, deadline = 1 }
      local res, err = c:list_bindings { ProjectName = "immtest" }
      assert.is_nil(res)
      assert.equal("Throttling.User", err.code)
      assert.is_true(err.attempts >= 2 and err.attempts <= 4, "attempts: " .. err.attempts)
      assert.matches("deadline", err.message)
      assert.equal(err.attempts, #srv.log())
    end)

    it("refuses a deadline that is not a positive number", function()
      local c, err = imm.new { endpoint = srv.url, access_key_id = "a", access_key_secret = "b", deadline = 0 }
      assert.is_nil(c)
      assert.equal("InvalidParameter", err.code)
    end)

    it("re-signs once with the offset learned from Date on a skewed clock, and keeps it", function()
      local c = srv.client { clock = function() return os.time() - 3600 end }
      local res = assert(c:list_bindings { ProjectName = "immtest", MaxResults = 1 })
      assert.equal(1, #res.Bindings)
      local log = srv.log()
      assert.equal(2, #log)
      assert.equal(400, log[1].status)
      assert.is_true(math.abs(c.clock_offset - 3600) < 5, "offset " .. c.clock_offset)
      srv.control("DELETE", "log")
      assert(c:list_bindings { ProjectName = "immtest", MaxResults = 1 })
      assert.equal(1, #srv.log(), "the learned offset is kept for later calls")
    end)

    it("does not loop when re-signing does not help", function()
      -- a clock that runs away after the first reading: the re-sign fails too
      local t = os.time() - 3600
      local c = srv.client { clock = function() t = t - 3600 return t end }
      local res, err = c:list_bindings { ProjectName = "immtest" }
      assert.is_nil(res)
      assert.equal("InvalidTimeStamp.Expired", err.code)
      assert.equal(2, err.attempts)
      assert.equal(2, #srv.log())
    end)

    it("retries a page alone under faults: no binding repeated or skipped", function()
      local list = fixture.bindings("p", 30)
      srv.data { Projects = { "p" }, Bindings = list }
      -- "slow" with no delay lets a request through, so the faults interleave
      for _, rule in ipairs {
        { mode = "throttle" }, { mode = "slow", delay = 0, count = 2 }, { mode = "unavailable" },
        { mode = "slow", delay = 0 }, { mode = "reset" }, { mode = "slow", delay = 0 }, { mode = "internal" },
      } do srv.fault(rule) end
      local got = {}
      for b, err in srv.client {}:bindings({ ProjectName = "p" }, { page_size = 7 }) do
        assert.is_truthy(b, err and tostring(err))
        got[#got + 1] = b.URI
      end
      assert.equal(30, #got)
      for i = 1, 30 do assert.equal(list[i].URI, got[i]) end
    end)
  end)

  describe("hostile and broken servers", function()
    local function fails(rule, opts, code)
      srv.fault(rule)
      local t0 = core.monotonic()
      local res, err = srv.client(opts or { max_retries = 0 }):list_bindings { ProjectName = "immtest" }
      local elapsed = core.monotonic() - t0
      assert.is_nil(res)
      assert.equal(code, err.code, tostring(err))
      return err, elapsed
    end

    it("a reset in the middle of the body", function()
      local err = fails({ mode = "reset_mid_body", count = -1 }, nil, "ConnectionFailed")
      assert.is_true(err.retryable)
      srv.reset()
      srv.fault { mode = "reset_mid_body" }
      assert(srv.client {}:list_bindings { ProjectName = "immtest" }, "a retry recovers")
    end)

    it("a stall: the timeout fires and nothing hangs", function()
      local err, elapsed = fails({ mode = "stall", delay = 10, count = -1 },
        { timeout = 0.5, max_retries = 0 }, "Timeout")
      assert.is_true(err.retryable)
      assert.is_true(elapsed < 5, "took " .. elapsed .. "s")
    end)

    it("a slowloris trickle: the whole-exchange timeout fires", function()
      local _, elapsed = fails({ mode = "trickle", interval = 0.2, count = -1 },
        { timeout = 1, max_retries = 0 }, "Timeout")
      assert.is_true(elapsed < 5, "took " .. elapsed .. "s")
    end)

    it("a body that overruns its Content-Length", function()
      fails({ mode = "overrun", count = -1 }, nil, "InvalidResponse")
    end)

    it("a truncated body (a clean close mid-body): lost like a reset, and retried", function()
      local err = fails({ mode = "truncated", count = -1 }, nil, "ConnectionFailed")
      assert.is_true(err.retryable)
      srv.reset()
      srv.fault { mode = "truncated" }
      assert(srv.client {}:list_bindings { ProjectName = "immtest" }, "a retry recovers")
    end)

    it("a gzip bomb, stopped by max_response_bytes", function()
      local err = fails({ mode = "gzip_bomb", size = 200 * 1024 * 1024, count = -1 },
        { max_retries = 0, max_response_bytes = 1024 * 1024 }, "InvalidResponse")
      assert.matches("max_response_bytes", err.message)
      assert.is_false(err.retryable)
    end)

    it("a gzip bomb, stopped by the default 64 MiB cap", function()
      local err = fails({ mode = "gzip_bomb", size = 200 * 1024 * 1024, count = -1 }, nil, "InvalidResponse")
      assert.matches("max_response_bytes", err.message)
    end)

    it("a response of several MB", function()
      srv.fault { mode = "big", size = 6 * 1024 * 1024 }
      local res = assert(srv.client {}:list_bindings { ProjectName = "immtest" })
      assert.is_true(#res.Bindings > 10000, "got " .. #res.Bindings)
      for i = 1, #res.Bindings, 997 do assert.is_string(res.Bindings[i].URI) end
    end)

    it("a 200 with malformed JSON, a non-object, a non-array, an HTML 502", function()
      fails({ mode = "malformed", count = -1 }, nil, "InvalidResponse")
      srv.reset()
      fails({ mode = "not_object", count = -1 }, nil, "InvalidResponse")
      srv.reset()
      fails({ mode = "bindings_not_array", count = -1 }, nil, "InvalidResponse")
      srv.reset()
      assert.equal(502, fails({ mode = "html502", count = -1 }, nil, "InvalidResponse").status)
    end)
  end)

  describe("errors that say what to do", function()
    it("HTTPS to a plain HTTP server: try http://", function()
      local authority = srv.url:match("^http://(.*)$")
      local c = srv.client { endpoint = "https://" .. authority, max_retries = 0 }
      local res, err = c:list_bindings { ProjectName = "immtest" }
      assert.is_nil(res)
      assert.equal("TLSError", err.code)
      assert.matches("wrong version number", err.message, 1, true)
      assert.equal('the server at ' .. authority .. ' answered in plain HTTP, not TLS: if it serves no HTTPS, '
        .. 'use endpoint = "http://' .. authority .. '"', err.hint)
      assert.matches('endpoint = "http://' .. authority .. '"', tostring(err), 1, true)
    end)

    it("tostring says how many attempts were made, when more than one", function()
      srv.fault { mode = "throttle", count = 2 }
      local _, err = srv.client { max_retries = 1 }:list_bindings { ProjectName = "immtest" }
      assert.equal(2, err.attempts)
      assert.matches("%(after 2 attempts%)$", tostring(err))
      srv.reset()
      srv.fault { mode = "throttle", count = 1 }
      _, err = srv.client { max_retries = 0 }:list_bindings { ProjectName = "immtest" }
      assert.equal(1, err.attempts)
      assert.is_nil(tostring(err):find("attempt", 1, true))
    end)

    -- The specs never reach beyond loopback, so a name lookup cannot fail
    -- for real: a transport fails the way libcurl and ngx_lua report it.
    local function unresolved(opts, message)
      local o = { access_key_id = "a", access_key_secret = "b", max_retries = 0,
        transport = function() return nil, imm.errors.new("ConnectionFailed", message, { sent = false }) end }
      for k, v in pairs(opts) do o[k] = v end
      local _, err = assert(imm.new(o)):list_bindings { ProjectName = "immtest" }
      assert.equal("ConnectionFailed", err.code)
      return err
    end

    it("a region that does not resolve: the list of IMM's regions", function()
      local err = unresolved({ region = "cn-hangzou" }, "Could not resolve host: imm.cn-hangzou.aliyuncs.com")
      assert.matches('"cn-hangzou" is not one of IMM\'s regions: cn-qingdao, ', err.message, 1, true)
      for _, r in ipairs { "cn-hangzhou", "ap-southeast-1", "eu-central-1", "us-west-1" } do
        assert.truthy(err.hint:find(r, 1, true), r)
      end
      assert.matches("not one of IMM's regions", tostring(err), 1, true)
      -- ngx_lua's wording, through an explicit endpoint
      err = unresolved({ endpoint = "imm.xx-north-9.aliyuncs.com" },
        "imm.xx-north-9.aliyuncs.com could not be resolved (3: Host not found)")
      assert.matches('"xx-north-9" is not one of IMM\'s regions', err.hint, 1, true)
      -- a real region: the DNS of this machine, or a VPC endpoint outside a VPC
      err = unresolved({ region = "cn-shanghai" }, "Could not resolve host: imm.cn-shanghai.aliyuncs.com")
      assert.matches("cn-shanghai is an IMM region, but its endpoint did not resolve here", err.hint, 1, true)
      err = unresolved({ region = "cn-shanghai", network = "vpc" },
        "Could not resolve host: imm-vpc.cn-shanghai.aliyuncs.com")
      assert.matches("resolves only inside an Alibaba Cloud VPC", err.hint, 1, true)
      -- not IMM's host, or not a name lookup: no hint
      assert.is_nil(unresolved({ endpoint = "imm.example.com" }, "Could not resolve host: imm.example.com").hint)
      assert.is_nil(unresolved({ region = "cn-hangzou" }, "Connection refused").hint)
    end)
  end)
end)

describe("security", function()
  local srv
  setup(function() srv = fixture.start() end)
  teardown(function() srv.stop() end)
  before_each(function() srv.reset() end)

  describe("no header injection", function()
    it("sends CR and LF in a parameter percent-encoded, never as a header", function()
      -- as the official SDK does: a value travels only percent-encoded, in
      -- the query or a form body, so it cannot start a header
      for _, alg in ipairs { "ACS3-HMAC-SHA256", "v2" } do
        local c = srv.client { signature_algorithm = alg }
        for _, p in ipairs {
          { ProjectName = "a\r\nX-Evil: 1" }, { ProjectName = "p", DatasetName = "d\n" },
          { ProjectName = "p", NextToken = "t\r\nX-Evil: 1" },
        } do
          srv.control("DELETE", "log")
          local res, err = c:list_bindings(p)
          assert.is_nil(res)
          assert.is_not.equal("InvalidParameter", err.code)
          assert.is_not.equal("SignatureDoesNotMatch", err.code)
          local r = srv.log()[1]
          for k, v in pairs(p) do assert.equal(v, r.params[k]) end
          assert.is_nil(r.headers["x-evil"])
        end
        srv.control("DELETE", "log")
        local res, err = c:contextual_answer { ProjectName = "p",
          Messages = '[{"Role":"user","Content":"x"}]\r\nX-Evil: 1' }
        assert.is_nil(res)
        assert.matches("not JSON text", err.message)
        srv.control("DELETE", "log")
        assert(c:call("ListProjects", { Prefix = "p\r\nX-Evil: 1" }))
        local log = srv.log()
        assert.equal(1, #log)
        assert.equal("p\r\nX-Evil: 1", log[1].params.Prefix)
        assert.is_nil(log[1].headers["x-evil"])
      end
    end)

    it("refuses CR or LF in the text values of an action without a schema, before sending", function()
      local c = srv.client {}
      local _, err = c:call("SomethingElse", { A = "x\r\ny" })
      assert.equal("InvalidParameter", err.code)
      assert.matches("CR or LF", err.message)
      assert.equal(0, #srv.log())
    end)

    it("refuses CR or LF in the endpoint, the user agent and the token", function()
      for _, o in ipairs {
        { endpoint = "http://127.0.0.1:1\r\nX: y" }, { user_agent = "ua\nX: y" },
      } do
        o.access_key_id, o.access_key_secret = "a", "b"
        o.endpoint = o.endpoint or srv.url
        local c, err = imm.new(o)
        assert.is_nil(c)
        assert.equal("InvalidParameter", err.code)
      end
      local c = srv.client { security_token = "tok\r\nX-Evil: 1" }
      local res, err = c:list_bindings { ProjectName = "immtest" }
      assert.is_nil(res)
      assert.equal("InvalidParameter", err.code)
      assert.is_false(err.retryable)
      assert.equal(0, #srv.log())
    end)
  end)

  it("warns once per client when TLS verification is off", function()
    local lua = arg[-1] or "lua"
    local p = io.popen(lua .. [[ -e 'local imm = require "imm"
      local c = assert(imm.new{ endpoint = "https://127.0.0.1:9", access_key_id = "a",
        access_key_secret = "b", insecure = true, max_retries = 0, connect_timeout = 1 })
      c:list_bindings{ ProjectName = "p" }
      c:list_bindings{ ProjectName = "p" }
      assert(imm.new{ endpoint = "https://127.0.0.1:9", access_key_id = "a", access_key_secret = "b" })' 2>&1]])
    local out = p:read("*a")
    p:close()
    local n = select(2, out:gsub("TLS verification is off", ""))
    assert.equal(1, n, out)
  end)

  describe("debug trace", function()
    it("shows the canonical request and the string to sign, with the token masked", function()
      local tok_srv = fixture.start { token = TOKEN }
      finally(tok_srv.stop)  -- even when an assertion fails
      local lines = {}
      local c = tok_srv.client { security_token = TOKEN, access_key_secret = fixture.SECRET,
        debug = function(l) lines[#lines + 1] = l end }
      assert(c:list_bindings { ProjectName = "immtest", MaxResults = 1 })
      local v2 = tok_srv.client { security_token = TOKEN, signature_algorithm = "v2",
        debug = function(l) lines[#lines + 1] = l end }
      assert(v2:list_bindings { ProjectName = "immtest", MaxResults = 1 })
      tok_srv.stop()
      local all = table.concat(lines, "\n")
      assert.matches("canonical request:", all)
      assert.matches("x%-acs%-action:ListBindings", all)
      assert.matches("string to sign:\nACS3%-HMAC%-SHA256\n", all)
      assert.matches("string to sign:\nPOST&%%2F&", all)
      assert.matches("x%-acs%-security%-token:%*%*%*", all)
      for _, form in ipairs { TOKEN, core.percent_encode(TOKEN), core.percent_encode(core.percent_encode(TOKEN)) } do
        assert.is_nil(all:find(form, 1, true), "token leaked in the debug trace")
      end
      assert.is_nil(all:find(fixture.SECRET, 1, true))
    end)

    it("is switched on by IMM_DEBUG=1", function()
      local lua = arg[-1] or "lua"
      local p = io.popen("IMM_DEBUG=1 " .. lua .. " -e 'local imm = require \"imm\"; "
        .. "local c = assert(imm.new{ endpoint = \"" .. srv.url .. "\", access_key_id = \"imm-local-id\", "
        .. "access_key_secret = \"imm-local-secret\" }); assert(c:list_bindings{ ProjectName = \"immtest\" })' 2>&1")
      local out = p:read("*a")
      p:close()
      assert.matches("imm debug: canonical request:", out)
      assert.matches("imm debug: string to sign:", out)
      assert.is_nil(out:find("imm-local-secret", 1, true))
    end)
  end)

  it("never shows the secret or the token after failures of every kind", function()
    local tls = fixture.start { tls = true }
    finally(tls.stop)  -- even when an assertion fails
    local own = fixture.start { token = TOKEN, secret = SECRET }
    finally(own.stop)
    local lines, errs = {}, {}
    local function try(opts, params)
      opts.access_key_secret = opts.access_key_secret or SECRET
      opts.security_token = TOKEN
      opts.debug = function(l) lines[#lines + 1] = l end
      local c = imm.new(opts)
      if not c then return end
      errs[#errs + 1] = { c = c, select(2, c:list_bindings(params or { ProjectName = "immtest" })) }
      -- and through a traceback, as an uncaught error would show it
      local _, tb = xpcall(function() error(errs[#errs][2]) end, debug.traceback)
      errs[#errs].tb = tostring(tb)
    end
    -- a generous timeout (valgrind is slow); only the stall case shortens it
    local base = { endpoint = own.url, access_key_id = fixture.KEY_ID, max_retries = 0, timeout = 10 }
    local function with(t)
      local o = {}
      for k, v in pairs(base) do o[k] = v end
      for k, v in pairs(t) do o[k] = v end
      return o
    end
    try(with {}, { ProjectName = 42 })                                    -- validation
    try(with { access_key_secret = "wrong-" .. SECRET })                   -- bad signature
    try(with { endpoint = "http://127.0.0.1:9" })                         -- refused
    try(with { endpoint = tls.url })                                      -- untrusted TLS
    own.fault { mode = "stall", delay = 5 }
    try(with { timeout = 1 })                                             -- timeout
    own.fault { mode = "malformed" }
    try(with {})                                                          -- bad reply
    own.fault { mode = "throttle" }
    try(with {})                                                          -- throttled
    local good = assert(imm.new(with { access_key_secret = SECRET, security_token = TOKEN }))
    assert(good:list_bindings { ProjectName = "immtest" }, "the keys themselves are right")
    tls.stop()
    own.stop()
    assert.is_true(#errs >= 5)
    local codes = {}
    for _, e in ipairs(errs) do
      local err = e[1]
      assert.is_not_nil(err)
      codes[#codes + 1] = err.code
      for _, needle in ipairs { SECRET, TOKEN } do
        assert.is_false(deep_find(err, needle), err.code)
        assert.is_nil(tostring(err):find(needle, 1, true), err.code)
        assert.is_nil(e.tb:find(needle, 1, true), err.code)
        assert.is_nil(tostring(e.c):find(needle, 1, true))
        assert.is_false(deep_find(e.c, needle), "client fields")
      end
    end
    for _, l in ipairs(lines) do
      assert.is_nil(l:find(SECRET, 1, true))
      assert.is_nil(l:find(TOKEN, 1, true))
    end
    assert.same({ "InvalidParameter", "SignatureDoesNotMatch", "ConnectionFailed", "TLSError",
      "Timeout", "InvalidResponse", "Throttling.User" }, codes)
  end)
end)
