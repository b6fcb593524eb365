-- Layer 4: the client: options, validation before sending, errors from the
-- service, retries, malformed replies, secrets.
local imm = require "imm"
local fixture = require "helpers.fixture"

local SECRET = fixture.SECRET

local deep_find = fixture.deep_find

local function assert_no_secret(...)
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    assert.is_false(deep_find(v, SECRET), "secret leaked")
    assert.is_nil(tostring(v):find(SECRET, 1, true), "secret leaked by tostring")
  end
end

describe("client options", function()
  local function refused(opts, pattern)
    local c, err = imm.new(opts)
    assert.is_nil(c)
    assert.equal("InvalidParameter", err.code)
    if pattern then assert.matches(pattern, err.message) end
    return err
  end
  local base = { region = "cn-hangzhou", access_key_id = "id", access_key_secret = "s" }
  local function with(t)
    local o = {}
    for k, v in pairs(base) do o[k] = v end
    for k, v in pairs(t) do o[k] = v end
    return o
  end

  it("defaults the endpoint to imm.<region>.aliyuncs.com over https", function()
    local c = assert(imm.new(base))
    assert.equal("https://imm.cn-hangzhou.aliyuncs.com", c.endpoint.base)
    assert.equal("imm.client (https://imm.cn-hangzhou.aliyuncs.com, ACS3-HMAC-SHA256)", tostring(c))
  end)

  it("accepts the endpoint forms", function()
    assert.equal("https://h.example:8443", assert(imm.new(with { endpoint = "h.example:8443" })).endpoint.base)
    assert.equal("https://h.example", assert(imm.new(with { endpoint = "h.example" })).endpoint.base)
    assert.equal("http://127.0.0.1:8080", assert(imm.new(with { endpoint = "http://127.0.0.1:8080/" })).endpoint.base)
    assert.equal("http://h", assert(imm.new(with { endpoint = "h", protocol = "http" })).endpoint.base)
    assert.equal("https://h", assert(imm.new(with { endpoint = "https://h:443" })).endpoint.base)
  end)

  it("refuses unknown options, with a hint", function()
    refused(with { acess_key_id = "x" }, 'did you mean "access_key_id"')
    refused(with { timeuot = 1 }, 'did you mean "timeout"')
  end)

  it("refuses bad values before anything is sent", function()
    refused(with { region = "cn hangzhou" }, "region")
    refused({ access_key_id = "a", access_key_secret = "b" }, "region")
    refused(with { endpoint = "ftp://h" }, "scheme")
    refused(with { endpoint = "h/path" }, "no path")
    refused(with { endpoint = "h:99999" }, "port")
    refused(with { protocol = "gopher" }, "protocol")
    refused(with { timeout = 0 }, "timeout")
    refused(with { timeout = "10" }, "timeout")
    refused(with { max_retries = -1 }, "max_retries")
    refused(with { max_retries = 1.5 }, "max_retries")
    refused(with { signature_algorithm = "md5" }, "signature_algorithm")
    refused(with { ca_file = "/nonexistent/ca.pem" }, "ca_file")
    refused(with { user_agent = "x\r\nEvil: 1" }, "user_agent")
    refused(with { access_key_id = "" }, "access_key_id")
    refused(with { transport = "carrier-pigeon" }, "transport")
  end)

  it("never shows the secret in the client", function()
    local c = assert(imm.new(with { access_key_secret = SECRET }))
    assert_no_secret(c)
  end)
end)

describe("client against the local IMM server", function()
  local srv
  setup(function() srv = fixture.start() end)
  teardown(function() srv.stop() end)
  before_each(function() srv.reset() end)

  describe("validation before sending", function()
    local function refused(params, code, pattern)
      local c = srv.client {}
      local res, err = c:list_bindings(params)
      assert.is_nil(res)
      assert.equal(code, err.code)
      if pattern then assert.matches(pattern, err.message) end
      assert.is_false(err.retryable)
      assert.equal(0, #srv.log(), "a refused call must send nothing")
    end

    it("requires ProjectName", function()
      refused({}, "MissingParameter", "ProjectName")
      refused({ ProjectName = "" }, "MissingParameter", "ProjectName")
      refused(nil, "MissingParameter", "ProjectName")
    end)
    it("checks types", function()
      refused({ ProjectName = 42 }, "InvalidParameter", "ProjectName must be a string")
      refused({ ProjectName = "p", NextToken = {} }, "InvalidParameter", "NextToken must be a string")
      refused({ ProjectName = "p", DatasetName = true }, "InvalidParameter", "DatasetName")
      refused("immtest", "InvalidParameter", "must be a table")
    end)
    it("keeps MaxResults an integer in 0..200", function()
      for _, bad in ipairs { 201, -1, 1.5, "abc", "50", 0 / 0, math.huge } do
        refused({ ProjectName = "p", MaxResults = bad }, "InvalidParameter", "MaxResults")
      end
    end)
    it("refuses unknown names with a hint", function()
      refused({ projectName = "p" }, "InvalidParameter", 'did you mean "ProjectName"')
      refused({ ProjectName = "p", MaxResult = 1 }, "InvalidParameter", 'did you mean "MaxResults"')
      refused({ ProjectName = "p", Zzzzzzzzzz = 1 }, "InvalidParameter", "unknown parameter")
    end)
    it("accepts the edges of MaxResults", function()
      local c = srv.client {}
      assert(c:list_bindings { ProjectName = "immtest", MaxResults = 0 })
      assert(c:list_bindings { ProjectName = "immtest", MaxResults = 200 })
      assert.equal(2, #srv.log())
    end)
  end)

  it("returns plain tables, keeping unknown fields and dropping nulls", function()
    srv.data { Projects = { "p" }, Bindings = { {
      ProjectName = "p", DatasetName = "d", URI = "oss://b", State = "Ready", Phase = "FullScanning",
      CreateTime = "2024-03-18T07:21:35.123456789+08:00", UpdateTime = "2024-03-18T07:21:35.123456789+08:00",
      Reason = require("cjson").null, Extra = { Nested = 1 },
    } } }
    local res = assert(srv.client {}:list_bindings { ProjectName = "p" })
    local b = res.Bindings[1]
    assert.equal("oss://b", b.URI)
    assert.equal(1, b.Extra.Nested)
    assert.is_nil(b.Reason)
    assert.is_nil(res.NextToken)
    assert.is_nil(getmetatable(res))
  end)

  describe("service errors", function()
    it("passes the service's error through, with every field", function()
      local res, err = srv.client {}:list_bindings { ProjectName = "no-such-project" }
      assert.is_nil(res)
      assert.equal("ResourceNotFound", err.code)
      assert.equal(404, err.status)
      assert.is_string(err.request_id)
      assert.is_string(err.host_id)
      assert.matches("ResourceNotFound", err.recommend)
      assert.is_false(err.retryable)
      assert.equal(1, err.attempts)
      assert.equal(1, #srv.log(), "4xx is not retried")
      local line = tostring(err)
      assert.is_nil(line:find("\n"))
      assert.matches("ResourceNotFound", line)
      assert.matches("404", line)
      assert.matches(err.request_id, line, 1, true)
    end)

    it("reports a wrong secret as SignatureDoesNotMatch, without leaking it", function()
      local wrong = "WRONG-" .. SECRET
      local c = srv.client { access_key_secret = wrong }
      local res, err = c:list_bindings { ProjectName = "immtest" }
      assert.is_nil(res)
      assert.equal("SignatureDoesNotMatch", err.code)
      assert.is_false(err.retryable)
      assert.is_false(deep_find(err, wrong))
      assert.is_nil(tostring(err):find(wrong, 1, true))
      assert.is_nil(tostring(c):find(wrong, 1, true))
    end)

    it("reports an unknown key id", function()
      local res, err = srv.client { access_key_id = "nobody" }:list_bindings { ProjectName = "immtest" }
      assert.is_nil(res)
      assert.equal("InvalidAccessKeyId.NotFound", err.code)
    end)

    it("calls other actions generically and passes their errors through", function()
      local res, err = srv.client {}:call("ListNothing", { A = 1, B = true })
      assert.is_nil(res)
      assert.equal("InvalidAction.NotFound", err.code)
      local _, verr = srv.client {}:call("ListNothing", { A = {} })
      assert.equal("InvalidParameter", verr.code)
      local _, aerr = srv.client {}:call("bad action!", {})
      assert.equal("InvalidParameter", aerr.code)
    end)
  end)

  describe("signature algorithms end to end", function()
    for _, alg in ipairs { "ACS3-HMAC-SHA256", "ACS3-HMAC-SM3", "v2" } do
      it(alg, function()
        local c = srv.client { signature_algorithm = alg }
        local res = assert(c:list_bindings { ProjectName = "immtest", MaxResults = 2, DatasetName = "dataset001" })
        assert.equal(2, #res.Bindings)
        local want = ({ ["ACS3-HMAC-SHA256"] = "v3-sha256", ["ACS3-HMAC-SM3"] = "v3-sm3", v2 = "v2" })[alg]
        assert.equal(want, srv.log()[1].signature)
      end)
    end
  end)

  describe("STS token", function()
    local sts
    local TOKEN = "CAIS+token/with=chars"
    setup(function() sts = fixture.start { token = TOKEN } end)
    teardown(function() sts.stop() end)

    for _, alg in ipairs { "ACS3-HMAC-SHA256", "v2" } do
      it("is sent and accepted with " .. alg, function()
        local c = sts.client { security_token = TOKEN, signature_algorithm = alg }
        assert(c:list_bindings { ProjectName = "immtest", MaxResults = 1 })
      end)
    end

    it("is required by a server that expects it", function()
      local res, err = sts.client {}:list_bindings { ProjectName = "immtest" }
      assert.is_nil(res)
      assert.matches("^InvalidSecurityToken", err.code)
      assert.is_false(deep_find(err, TOKEN))
    end)
  end)

  describe("retries", function()
    it("retries throttling and succeeds, signing each attempt afresh", function()
      srv.fault { mode = "throttle", count = 2 }
      local res = assert(srv.client {}:list_bindings { ProjectName = "immtest", MaxResults = 1 })
      assert.equal(1, #res.Bindings)
      local log = srv.log()
      assert.equal(3, #log)
      local nonces = {}
      for _, r in ipairs(log) do
        local n = r.headers["x-acs-signature-nonce"]
        assert.is_nil(nonces[n], "nonce reused on retry")
        nonces[n] = true
      end
    end)

    it("retries 503 and 500", function()
      srv.fault { mode = "unavailable" }
      srv.fault { mode = "internal" }
      assert(srv.client {}:list_bindings { ProjectName = "immtest", MaxResults = 1 })
      assert.equal(3, #srv.log())
    end)

    it("returns the last error with the number of attempts", function()
      srv.fault { mode = "throttle", count = -1 }
      local res, err = srv.client { max_retries = 2 }:list_bindings { ProjectName = "immtest" }
      assert.is_nil(res)
      assert.equal("Throttling.User", err.code)
      assert.equal(429, err.status)
      assert.is_true(err.retryable)
      assert.equal(3, err.attempts)
      assert.equal(3, #srv.log())
    end)

    it("does not retry with max_retries = 0", function()
      srv.fault { mode = "unavailable", count = -1 }
      local _, err = srv.client { max_retries = 0 }:list_bindings { ProjectName = "immtest" }
      assert.equal("ServiceUnavailable", err.code)
      assert.equal(1, err.attempts)
      assert.equal(1, #srv.log())
    end)

    it("waits as long as x-acs-retry-after asks", function()
      srv.fault { mode = "throttle", retry_after_ms = 300 }
      assert(srv.client {}:list_bindings { ProjectName = "immtest", MaxResults = 1 })
      local log = srv.log()
      assert.equal(2, #log)
      assert.is_true(log[2].start - log[1]["end"] >= 0.25, "second attempt came too early")
    end)

    it("retries a reset connection", function()
      srv.fault { mode = "reset" }
      assert(srv.client {}:list_bindings { ProjectName = "immtest", MaxResults = 1 })
    end)
  end)

  describe("replies that are not what was promised", function()
    local function invalid(mode, status, retryable)
      srv.fault { mode = mode, count = -1 }
      local res, err = srv.client { max_retries = 0 }:list_bindings { ProjectName = "immtest" }
      assert.is_nil(res)
      assert.equal("InvalidResponse", err.code)
      assert.equal(status, err.status)
      assert.equal(retryable, err.retryable)
      return err
    end
    it("malformed JSON", function() invalid("malformed", 200, false) end)
    it("a JSON array instead of an object", function() invalid("not_object", 200, false) end)
    it("Bindings that is not an array", function()
      assert.matches("Bindings", invalid("bindings_not_array", 200, false).message)
    end)
    it("an HTML 502 from a proxy", function()
      assert.matches("text/html", invalid("html502", 502, true).message)
    end)
    it("a truncated body (a clean close mid-body) is a lost reply: ConnectionFailed, retried", function()
      srv.fault { mode = "truncated", count = -1 }
      local res, err = srv.client { max_retries = 1 }:list_bindings { ProjectName = "immtest" }
      assert.is_nil(res)
      assert.equal("ConnectionFailed", err.code)
      assert.is_true(err.retryable)
      assert.equal(2, err.attempts)
      srv.reset()
      srv.fault { mode = "truncated" }
      assert(srv.client {}:list_bindings { ProjectName = "immtest" }, "a retry recovers")
    end)
  end)

  describe("call options", function()
    local function refused_call(opts, pattern)
      local c = srv.client {}
      local res, err = c:list_bindings({ ProjectName = "immtest" }, opts)
      assert.is_nil(res)
      assert.equal("InvalidParameter", err.code)
      if pattern then assert.matches(pattern, err.message) end
      assert.equal(0, #srv.log(), "a refused call must send nothing")
      return err
    end

    it("refuses unknown names with a hint, bad types and ranges, before anything is sent", function()
      refused_call({ deadlin = 1 }, 'did you mean "deadline"')
      refused_call({ max_retires = 1 }, 'did you mean "max_retries"')
      refused_call({ timeout = "1" }, "timeout")
      refused_call({ timeout = 0 }, "timeout")
      refused_call({ timeout = 0 / 0 }, "timeout")
      refused_call({ deadline = -1 }, "deadline")
      refused_call({ deadline = math.huge }, "deadline")
      refused_call({ max_retries = 1.5 }, "max_retries")
      refused_call({ max_retries = 21 }, "max_retries")
      refused_call({ max_retries = "2" }, "max_retries")
      refused_call({ headers = "traceparent: x" }, "headers")
      refused_call({ headers = { "traceparent: x" } }, "header")
      refused_call({ headers = { traceparent = 1 } }, "traceparent")
      refused_call({ headers = { traceparent = "a\r\nEvil: 1" } }, "traceparent")
      refused_call({ headers = { ["bad name"] = "x" } }, "bad name")
      refused_call({ meta = "yes" }, "meta")
    end)

    it("refuses reserved headers, in any case", function()
      for _, name in ipairs { "Authorization", "host", "HOST", "x-acs-date", "X-Acs-Signature-Nonce",
          "x-acs-signature-method", "x-acs-signature-version", "x-acs-security-token", "Content-Length",
          "content-type", "x-acs-content-sha256", "x-acs-action", "x-acs-version", "x-acs-accesskey-id",
          "transfer-encoding", "connection", "user-agent", "accept-encoding", "expect" } do
        refused_call({ headers = { [name] = "v" } }, "reserved")
      end
    end)

    it("overrides max_retries for one call, both ways", function()
      srv.fault { mode = "throttle", count = -1 }
      local _, err = srv.client { max_retries = 3 }:list_bindings({ ProjectName = "immtest" }, { max_retries = 0 })
      assert.equal("Throttling.User", err.code)
      assert.equal(1, err.attempts)
      assert.equal(1, #srv.log())
      srv.reset()
      srv.fault { mode = "throttle", count = 2 }
      assert(srv.client { max_retries = 0 }:list_bindings({ ProjectName = "immtest", MaxResults = 1 },
        { max_retries = 2 }))
      assert.equal(3, #srv.log())
    end)

    it("overrides timeout for one call, both ways", function()
      srv.fault { mode = "slow", delay = 1.5 }
      local _, err = srv.client { timeout = 10, max_retries = 0 }:list_bindings({ ProjectName = "immtest" },
        { timeout = 0.3 })
      assert.equal("Timeout", err.code)
      srv.reset()
      srv.fault { mode = "slow", delay = 0.6 }
      assert(srv.client { timeout = 0.2, max_retries = 0 }:list_bindings({ ProjectName = "immtest",
        MaxResults = 1 }, { timeout = 5 }))
    end)

    it("overrides the deadline for one call", function()
      srv.fault { mode = "throttle", count = -1, retry_after_ms = 400 }
      local _, err = srv.client { max_retries = 20 }:list_bindings({ ProjectName = "immtest" }, { deadline = 0.5 })
      assert.equal("Throttling.User", err.code)
      assert.matches("deadline of 0.5s", err.message)
      assert.is_true(err.attempts < 5)
    end)

    it("sends extra headers: x-acs-* signed, the others unsigned, as the official SDK signs them", function()
      local c = srv.client {}
      assert(c:list_bindings({ ProjectName = "immtest", MaxResults = 1 },
        { headers = { traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
          ["X-Acs-Trace-Id"] = "t-1" } }))
      local h = srv.log()[1].headers
      assert.equal("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", h.traceparent)
      assert.equal("t-1", h["x-acs-trace-id"])
      -- the signed set, from the Authorization header imm sends
      local seen
      local t = function(req)
        seen = req.headers
        return { status = 200, headers = {}, body = '{"RequestId":"r","Bindings":[]}' }
      end
      local c2 = assert(imm.new { endpoint = "https://imm.test", access_key_id = "id", access_key_secret = "s",
        transport = t })
      assert(c2:list_bindings({ ProjectName = "p" }, { headers = { traceparent = "tp", ["x-acs-trace-id"] = "t" } }))
      local auth
      for k, v in pairs(seen) do if k:lower() == "authorization" then auth = v end end
      local signed = auth:match("SignedHeaders=([^,]+)")
      assert.matches("x%-acs%-trace%-id", signed)
      assert.is_nil(signed:find("traceparent", 1, true))
      local tp
      for k, v in pairs(seen) do if k:lower() == "traceparent" then tp = v end end
      assert.equal("tp", tp)
    end)

    it("sends extra headers with the V2 signature too", function()
      assert(srv.client { signature_algorithm = "v2" }:list_bindings({ ProjectName = "immtest", MaxResults = 1 },
        { headers = { traceparent = "tp-v2" } }))
      assert.equal("tp-v2", srv.log()[1].headers.traceparent)
    end)

    it("returns the call's metadata as a third value only when asked", function()
      local c = srv.client {}
      local r0, e0, m0 = c:list_bindings { ProjectName = "immtest", MaxResults = 1 }
      assert.is_table(r0)
      assert.is_nil(e0)
      assert.is_nil(m0, "no metadata unless asked")
      srv.fault { mode = "throttle", count = 1 }
      local res, err, meta = c:list_bindings({ ProjectName = "immtest", MaxResults = 1 }, { meta = true })
      assert.is_nil(err)
      assert.equal(res.RequestId, meta.request_id)
      assert.equal(200, meta.status)
      assert.equal(2, meta.attempts)
      assert.is_number(meta.elapsed)
      assert.is_true(meta.elapsed >= 0)
      assert.is_string(meta.headers["content-type"])
      assert.equal("ListBindings", meta.action)
      local r2, e2, m2 = c:call("ListBindings", { ProjectName = "nope-no-such" }, { meta = true })
      assert.is_nil(r2)
      assert.is_table(e2)
      assert.is_nil(m2)
    end)
  end)

  describe("hooks", function()
    local log = require "imm.log"

    it("are refused unless functions", function()
      local c, err = imm.new { endpoint = srv.url, access_key_id = "a", access_key_secret = "b", on_request = true }
      assert.is_nil(c)
      assert.equal("InvalidParameter", err.code)
      c, err = imm.new { endpoint = srv.url, access_key_id = "a", access_key_secret = "b", on_respons = print }
      assert.is_nil(c)
      assert.matches('did you mean "on_response"', err.message)
    end)

    it("see every attempt, and never a secret", function()
      local reqs, resps = {}, {}
      local c = srv.client {
        on_request = function(info) reqs[#reqs + 1] = info end,
        on_response = function(info) resps[#resps + 1] = info end,
      }
      srv.fault { mode = "throttle", count = 1 }
      assert(c:list_bindings({ ProjectName = "immtest", MaxResults = 1 }, { headers = { traceparent = "tp" } }))
      assert.equal(2, #reqs)
      assert.equal(2, #resps)
      for i = 1, 2 do
        assert.equal("ListBindings", reqs[i].action)
        assert.equal(i, reqs[i].attempt)
        assert.equal("POST", reqs[i].method)
        assert.equal(srv.url .. "/", reqs[i].url:sub(1, #srv.url + 1))
        assert.equal("tp", reqs[i].headers.traceparent)
        assert.equal(i, resps[i].attempt)
        assert.equal("ListBindings", resps[i].action)
        assert.is_number(resps[i].elapsed)
      end
      assert.equal(429, resps[1].status)
      assert.equal("Throttling.User", resps[1].code)
      assert.is_true(resps[1].retry)
      assert.is_string(resps[1].request_id)
      assert.equal(200, resps[2].status)
      assert.is_nil(resps[2].code)
      assert.is_false(resps[2].retry)
      assert.is_string(resps[2].request_id)
      assert_no_secret(reqs, resps)
      for _, info in ipairs(reqs) do
        assert.is_false(deep_find(info, "Signature"), "a signature leaked")
        for k in pairs(info.headers) do assert.is_nil(k:lower():find("authorization"), k) end
      end
    end)

    it("never see the security token", function()
      local token = "tok-" .. SECRET
      local srv2 = fixture.start { token = token }
      finally(srv2.stop)
      local seen = {}
      local c = srv2.client { security_token = token, signature_algorithm = "v2",
        on_request = function(info) seen[#seen + 1] = info end,
        on_response = function(info) seen[#seen + 1] = info end }
      assert(c:list_bindings { ProjectName = "immtest", MaxResults = 1 })
      assert.equal(2, #seen)
      assert.is_false(deep_find(seen, token), "the token leaked")
      assert.is_false(deep_find(seen, "tok-"), "the token leaked")
      assert.is_nil(seen[1].url:find("Signature=[^*]"))
      assert.is_nil(seen[1].url:find("SecurityToken=[^*]"))
    end)

    it("that raise do not break the call, and are logged once per client and hook", function()
      local lines = {}
      local warn = log.warn
      log.warn = function(m) lines[#lines + 1] = m end
      finally(function() log.warn = warn end)
      local c = srv.client { on_request = function() error("boom-req") end,
        on_response = function() error("boom-resp") end }
      for _ = 1, 3 do assert(c:list_bindings { ProjectName = "immtest", MaxResults = 1 }) end
      assert.equal(2, #lines)
      table.sort(lines)
      assert.matches("on_request", lines[1])
      assert.matches("boom%-req", lines[1])
      assert.matches("on_response", lines[2])
      local c2 = srv.client { on_request = function() error("boom-req") end }
      assert(c2:list_bindings { ProjectName = "immtest", MaxResults = 1 })
      assert.equal(3, #lines)
    end)

    it("fire for every attempt of a failed call, with the error code and no retry at the end", function()
      local resps = {}
      local c = srv.client { max_retries = 1, on_response = function(info) resps[#resps + 1] = info end }
      srv.fault { mode = "unavailable", count = -1 }
      assert.is_nil(c:list_bindings { ProjectName = "immtest" })
      assert.equal(2, #resps)
      assert.is_true(resps[1].retry)
      assert.is_false(resps[2].retry)
      assert.equal("ServiceUnavailable", resps[2].code)
      assert.equal(503, resps[2].status)
    end)
  end)

  describe("call options on pagers and waiters", function()
    it("pagers and item pagers take them", function()
      local c = srv.client {}
      local n = 0
      for b in c:bindings({ ProjectName = "immtest" }, { max_items = 3, page_size = 1,
          headers = { traceparent = "tp-pager" } }) do
        assert(b)
        n = n + 1
      end
      assert.equal(3, n)
      assert(c:all("ListBindings", { ProjectName = "immtest" }, { max_items = 2, page_size = 1,
        headers = { traceparent = "tp-all" } }))
      for p in c:pages("ListBindings", { ProjectName = "immtest" }, { max_items = 1,
          headers = { traceparent = "tp-pages" } }) do assert(p) end
      local log = srv.log()
      assert.equal(6, #log)
      for i = 1, 3 do assert.equal("tp-pager", log[i].headers.traceparent) end
      for i = 4, 5 do assert.equal("tp-all", log[i].headers.traceparent) end
      assert.equal("tp-pages", log[6].headers.traceparent)
      srv.reset()
      srv.fault { mode = "throttle", count = -1 }
      local all, err = c:all_bindings({ ProjectName = "immtest" }, { max_retries = 0 })
      assert.is_nil(all)
      assert.equal(1, err.attempts)
    end)

    it("pagers refuse bad call options before anything is sent", function()
      local c = srv.client {}
      local it = c:bindings({ ProjectName = "immtest" }, { headers = { Host = "x" } })
      local ok, err = it()
      assert.is_false(ok)
      assert.equal("InvalidParameter", err.code)
      local all
      all, err = c:all("ListBindings", { ProjectName = "immtest" }, { timeot = 1 })
      assert.is_nil(all)
      assert.matches('did you mean "timeout"', err.message)
      assert.equal(0, #srv.log())
    end)

    it("waiters take them in opts.call, checked before anything is sent", function()
      local c = srv.client {}
      local key = { ProjectName = "immtest", DatasetName = "dataset-1", URI = "oss://bucket-1/" }
      local res, err = c:wait_binding(key, { state = "Running", timeout = 1, interval = 0.1,
        call = { headers = { authorization = "x" } } })
      assert.is_nil(res)
      assert.equal("InvalidParameter", err.code)
      res, err = c:wait_task({ ProjectName = "immtest", TaskType = "MediaConvert", TaskId = "t" },
        { call = { deadlin = 2 } })
      assert.is_nil(res)
      assert.equal("InvalidParameter", err.code)
      assert.equal(0, #srv.log())
      res = c:wait("ListBindings", { ProjectName = "immtest", MaxResults = 1 },
        { done = function() return true end, call = { headers = { traceparent = "tp-wait" } } })
      assert(res)
      assert.equal("tp-wait", srv.log()[1].headers.traceparent)
      srv.reset()
      res, err = c:wait_binding({ ProjectName = "immtest", DatasetName = "no-such-dataset", URI = "oss://nobucket/" },
        { timeout = 1, interval = 0.1, call = { headers = { traceparent = "tp-wb" } } })
      assert.is_nil(res)
      assert.is_string(err.code)
      assert.equal("tp-wb", srv.log()[1].headers.traceparent)
    end)
  end)

  describe("module-level API", function()
    it("uses the client set with imm.configure", function()
      assert(imm.configure { endpoint = srv.url, access_key_id = fixture.KEY_ID,
        access_key_secret = fixture.SECRET })
      local res = assert(imm.list_bindings { ProjectName = "immtest", MaxResults = 2 })
      assert.equal(2, #res.Bindings)
      local n = 0
      for b in imm.bindings({ ProjectName = "immtest" }, { max_items = 7 }) do
        assert.is_string(b.URI)
        n = n + 1
      end
      assert.equal(7, n)
      assert.is_true(#assert(imm.all_bindings({ ProjectName = "immtest" }, { max_items = 3 })).Bindings == 3)
      assert(imm.call("ListBindings", { ProjectName = "immtest", MaxResults = 1 }))
    end)

    it("passes call options through, as the client methods do", function()
      local methods = {}
      assert(imm.configure { endpoint = "https://imm.test", access_key_id = "id", access_key_secret = "s",
        transport = function(req)
          methods[#methods + 1] = req.method
          return { status = 200, headers = {}, body = '{"RequestId":"r","Bindings":[],"Projects":[],"Datasets":[]}' }
        end })
      assert(imm.list_bindings({ ProjectName = "p" }, { method = "GET" }))
      assert(imm.list_projects({}, { method = "GET" }))
      assert(imm.list_datasets({ ProjectName = "p" }, { method = "GET" }))
      assert.same({ "GET", "GET", "GET" }, methods)
      local res, err = imm.get_binding({ ProjectName = "p", DatasetName = "d", URI = "oss://b/" }, { nope = 1 })
      assert.is_nil(res)
      assert.equal("InvalidParameter", err.code)
      assert.equal(3, #methods)
    end)

    it("keeps the old configuration when a new one is refused", function()
      assert(imm.configure { endpoint = srv.url, access_key_id = fixture.KEY_ID, access_key_secret = fixture.SECRET })
      local ok, err = imm.configure { endpoint = srv.url, nope = 1 }
      assert.is_nil(ok)
      assert.equal("InvalidParameter", err.code)
      assert(imm.list_bindings { ProjectName = "immtest", MaxResults = 1 })
    end)

    it("configures the default client from the environment", function()
      local lua = arg[-1] or "lua"
      local cmd = table.concat({
        "IMM_ENDPOINT=" .. srv.url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID=" .. fixture.KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET=" .. fixture.SECRET,
        lua, "-e", "'local imm = require \"imm\"; "
          .. "local r = assert(imm.list_bindings{ProjectName=\"immtest\", MaxResults=4}); print(#r.Bindings)'",
      }, " ")
      local p = io.popen(cmd)
      local out = p:read("*a")
      p:close()
      assert.equal("4\n", out)
    end)

    it("says what is missing when the environment has no keys", function()
      local c = assert(imm.new { endpoint = srv.url })
      local res, err = c:list_bindings { ProjectName = "immtest" }
      if os.getenv("ALIBABA_CLOUD_ACCESS_KEY_ID") == nil then
        assert.is_nil(res)
        assert.equal("NoCredentials", err.code)
        assert.matches("ALIBABA_CLOUD_ACCESS_KEY_ID", err.message)
      end
    end)
  end)
end)
