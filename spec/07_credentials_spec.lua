-- Layer 7: credential providers, against a fake STS, ECS metadata service
-- and credentials URI (tools/fake_cloud.py) on loopback. Environments are
-- injected through the providers' `env` option and time through `clock`, so
-- nothing here depends on the process environment or waits for real expiry.
local imm = require "imm"
local credentials = require "imm.credentials"
local base = require "imm.credentials.base"
local endpoint = require "imm.endpoint"
local fixture = require "helpers.fixture"
local fake_cloud = require "helpers.fake_cloud"
local nginx_credentials = require "helpers.nginx_credentials"

local write = fake_cloud.write

local deep_find = fixture.deep_find

-- Secrets the fake cloud and these specs hand out.
local SECRETS = { "fake-secret-", "fake-token-", fake_cloud.SOURCE_SECRET, fake_cloud.OIDC_TOKEN,
  "imds-token-", "ini-secret", "cli-secret", "cli-sts-token", "env-secret", "env-token",
  "ext-secret", "ext-token", fake_cloud.SSO_TOKEN, "sso-stored-secret", "oauth-refresh" }

local function assert_no_secrets(...)
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    for _, s in ipairs(SECRETS) do
      assert.is_false(deep_find(v, s), "secret " .. s .. " reachable")
      assert.is_nil(tostring(v):find(s, 1, true), "secret " .. s .. " in tostring")
    end
  end
end

local function no_creds(p)
  local c, err = p:get()
  assert.is_nil(c)
  assert.is_table(err)
  return err
end

describe("credential providers", function()
  local cloud, tmp, trace
  local function debug(line) trace[#trace + 1] = line end

  setup(function()
    cloud = fake_cloud.start()
    tmp = fixture.tmpdir()
  end)
  teardown(function()
    if cloud then cloud.stop() end
    if tmp then fixture.sh("rm -rf " .. tmp) end
  end)
  before_each(function()
    cloud.reset()
    trace = {}
  end)
  after_each(function()
    -- whatever a spec did, its debug trace carried no secret
    for _, line in ipairs(trace) do
      for _, s in ipairs(SECRETS) do
        assert.is_nil(line:find(s, 1, true), "secret " .. s .. " in trace line: " .. line)
      end
    end
  end)

  describe("static, env, chain, is_provider", function()
    it("keeps static keys in a closure", function()
      local p = assert(credentials.static { access_key_id = "id", access_key_secret = "env-secret",
        security_token = "env-token" })
      assert.equal("imm.credentials.static", tostring(p))
      assert.same({ access_key_id = "id", access_key_secret = "env-secret", security_token = "env-token" }, p:get())
      assert_no_secrets(p)
      assert.equal("InvalidParameter", select(2, credentials.static { access_key_id = "id" }).code)
      assert.equal("InvalidParameter", select(2, credentials.static "x").code)
    end)

    it("reads the environment at each call", function()
      local env = {}
      local p = assert(credentials.env { env = env })
      local err = no_creds(p)
      assert.equal("NoCredentials", err.code)
      assert.matches("ALIBABA_CLOUD_ACCESS_KEY_ID", err.message)
      env.ALIBABA_CLOUD_ACCESS_KEY_ID, env.ALIBABA_CLOUD_ACCESS_KEY_SECRET = "env-id", "env-secret"
      assert.same({ access_key_id = "env-id", access_key_secret = "env-secret" }, p:get())
      env.ALIBABA_CLOUD_SECURITY_TOKEN = "env-token"
      assert.equal("env-token", p:get().security_token)
      env.ALIBABA_CLOUD_ACCESS_KEY_ID = ""  -- empty counts as unset
      assert.equal("NoCredentials", no_creds(p).code)
      assert_no_secrets(p)
      assert.is_true(credentials.is_provider(credentials.env()))
      assert.is_false(credentials.is_provider({}))
    end)

    it("refuses unknown options with a hint, and wrong types", function()
      local _, err = credentials.env { evn = {} }
      assert.equal("InvalidParameter", err.code)
      assert.matches('did you mean "env"', err.message)
      _, err = credentials.credentials_uri { uri = 42 }
      assert.matches("uri must be a string", err.message)
      _, err = credentials.ecs_ram_role { timeout = 0 }
      assert.matches("timeout", err.message)
      _, err = credentials.ram_role_arn { role_arn = "acs:ram::1:role/r", duration_seconds = 899,
        access_key_id = "a", access_key_secret = "b" }
      assert.matches("900", err.message)
      _, err = credentials.ram_role_arn { access_key_id = "a", access_key_secret = "b", env = {} }
      assert.matches("role_arn is required", err.message)
      _, err = credentials.default { nope = true }
      assert.equal("InvalidParameter", err.code)
    end)

    describe("chain", function()
      local function counting(name, creds, err)
        local p = { name = name, calls = 0, creds = creds, err = err }
        function p.get(self)
          self.calls = self.calls + 1
          if self.creds then return self.creds end
          return nil, self.err or base.none(name .. " has nothing")
        end
        return p
      end

      it("uses the first provider that yields, in order, and keeps it", function()
        local a = counting("a")
        local b = counting("b", { access_key_id = "b", access_key_secret = "s" })
        local c = counting("c", { access_key_id = "c", access_key_secret = "s" })
        local chain = assert(credentials.chain { a, b, c })
        assert.equal("b", chain:get().access_key_id)
        assert.equal("b", chain:get().access_key_id)
        assert.same({ 1, 2, 0 }, { a.calls, b.calls, c.calls }, "b is kept; a is not asked again")
      end)

      it("walks the chain again when the kept provider fails (unlike the Node SDK)", function()
        local a = counting("a")
        local b = counting("b", { access_key_id = "b", access_key_secret = "s" })
        local c = counting("c", { access_key_id = "c", access_key_secret = "s" })
        local chain = assert(credentials.chain({ a, b, c }, { debug = debug }))
        assert.equal("b", chain:get().access_key_id)
        b.creds = nil
        assert.equal("c", chain:get().access_key_id, "the same call falls through to c")
        a.creds = { access_key_id = "a", access_key_secret = "s" }
        assert.equal("c", chain:get().access_key_id, "c is kept now")
        c.creds = nil
        assert.equal("a", chain:get().access_key_id)
        assert.matches("no longer yields", table.concat(trace, "\n"))
      end)

      it("reports every provider and why as one NoCredentials, then walks again", function()
        local a = counting("a")
        local b = counting("b", nil, require("imm.errors").new("Timeout", "b timed out"))
        local chain = assert(credentials.chain { a, b })
        local err = no_creds(chain)
        assert.equal("NoCredentials", err.code)
        assert.is_false(err.retryable)
        assert.equal("no credentials found (a: a has nothing; b: b timed out)", err.message)
        assert.same({ { name = "a", code = "NoCredentials", message = "a has nothing" },
          { name = "b", code = "Timeout", message = "b timed out" } }, err.providers)
        b.creds = { access_key_id = "b", access_key_secret = "s" }
        assert.equal("b", chain:get().access_key_id)
        assert.same({ 2, 2 }, { a.calls, b.calls })
      end)

      it("refuses what is not a list of providers", function()
        assert.equal("InvalidParameter", select(2, credentials.chain {}).code)
        assert.matches("entry 2", select(2, credentials.chain { credentials.env(), {} }).message)
      end)
    end)
  end)

  describe("endpoints", function()
    it("puts IMM in a VPC with network = \"vpc\"", function()
      assert.equal("https://imm-vpc.cn-hangzhou.aliyuncs.com",
        assert(endpoint.resolve { region = "cn-hangzhou", network = "vpc" }).base)
      assert.equal("https://imm.cn-hangzhou.aliyuncs.com",
        assert(endpoint.resolve { region = "cn-hangzhou", network = "public" }).base)
      assert.equal("https://h.example", assert(endpoint.resolve { endpoint = "h.example", network = "vpc" }).base)
      local c = assert(imm.new { region = "cn-shanghai", network = "vpc", access_key_id = "a",
        access_key_secret = "b" })
      assert.equal("https://imm-vpc.cn-shanghai.aliyuncs.com", c.endpoint.base)
      local _, err = imm.new { region = "cn-shanghai", network = "intranet", access_key_id = "a",
        access_key_secret = "b" }
      assert.equal("InvalidParameter", err.code)
      assert.matches("network", err.message)
      _, err = imm.new { region = "cn-shanghai/../x", network = "vpc", access_key_id = "a", access_key_secret = "b" }
      assert.matches("region must match", err.message)
    end)

    it("follows the official rule for STS", function()
      assert.equal("https://sts.aliyuncs.com", assert(endpoint.sts {}).base)
      assert.equal("https://sts.aliyuncs.com", assert(endpoint.sts { vpc = true }).base)
      assert.equal("https://sts.cn-beijing.aliyuncs.com", assert(endpoint.sts { region = "cn-beijing" }).base)
      assert.equal("https://sts-vpc.cn-beijing.aliyuncs.com",
        assert(endpoint.sts { region = "cn-beijing", vpc = true }).base)
      assert.equal("http://127.0.0.1:9", assert(endpoint.sts { endpoint = "http://127.0.0.1:9", region = "x",
        vpc = true }).base)
      assert.equal("InvalidParameter", select(2, endpoint.sts { region = "CN BEIJING" }).code)
      local sts = require "imm.credentials.sts"
      local getenv = base.getenv { env = { ALIBABA_CLOUD_STS_REGION = "cn-shanghai",
        ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED = "true" } }
      assert.equal("sts-vpc.cn-shanghai.aliyuncs.com", assert(sts.endpoint({}, getenv)).host)
      assert.equal("sts.cn-shanghai.aliyuncs.com", assert(sts.endpoint({ enable_vpc = false }, getenv)).host)
      assert.equal("sts.cn-hongkong.aliyuncs.com",
        assert(sts.endpoint({ sts_region = "cn-hongkong", enable_vpc = false }, getenv)).host)
    end)
  end)

  describe("helpers", function()
    it("parses ISO 8601 times in UTC", function()
      assert.equal(fixture.epoch("2030-01-01T00:00:00Z"), base.parse_time("2030-01-01T00:00:00Z"))
      assert.equal(fixture.epoch("2024-03-18T07:21:35Z"), base.parse_time("2024-03-18T15:21:35.5+08:00"))
      assert.is_nil(base.parse_time("tomorrow"))
      assert.is_nil(base.parse_time("2024-13-01T00:00:00Z"))
      assert.equal("2030-01-01T00:00:00Z", base.format_time(fixture.epoch("2030-01-01T00:00:00Z")))
    end)

    it("traces to a function, to stderr with debug = true or IMM_DEBUG=1, or not at all", function()
      local lines = {}
      local tr, on = base.tracer("x", { debug = function(l) lines[#lines + 1] = l end })
      tr("role %s", "r")
      assert.is_true(on)
      assert.same({ "imm.credentials.x: role r" }, lines)
      assert.is_true(select(2, base.tracer("x", { debug = true })))
      assert.is_true(select(2, base.tracer("x", { env = { IMM_DEBUG = "1" } })))
      assert.is_false(select(2, base.tracer("x", { env = {} })))
      assert.is_false(select(2, base.tracer("x", { env = { IMM_DEBUG = "1" }, debug = false })))
    end)

    it("redacts secret parameters", function()
      assert.equal("https://h/?A=1&Signature=<redacted>&SecurityToken=<redacted>&B=2",
        base.redact("https://h/?A=1&Signature=abc%2B&SecurityToken=tok&B=2"))
      assert.equal("RoleArn=x&OIDCToken=<redacted>", base.redact("RoleArn=x&OIDCToken=eyJ"))
    end)
  end)

  describe("RAM role ARN (STS AssumeRole, V2-signed)", function()
    local function provider(extra)
      local o = {
        role_arn = "acs:ram::123456:role/imm-reader", role_session_name = "spec",
        access_key_id = fake_cloud.SOURCE_ID, access_key_secret = fake_cloud.SOURCE_SECRET,
        sts_endpoint = cloud.url, debug = debug, env = {},
      }
      for k, v in pairs(extra or {}) do
        if v == fixture.NIL then o[k] = nil else o[k] = v end
      end
      return assert(credentials.ram_role_arn(o))
    end

    it("assumes the role with a signature the fake STS verifies", function()
      local p = provider { policy = '{"Version":"1","Statement":[]}', external_id = "ext-1",
        duration_seconds = 1800 }
      local c = assert(p:get())
      assert.matches("^STS%.fake%-", c.access_key_id)
      assert.matches("^fake%-token%-", c.security_token)
      assert.is_number(c.expiration)
      assert.is_true(math.abs(c.expiration - (os.time() + 1800)) < 10)
      local log = cloud.log("sts")
      assert.equal(1, #log)
      assert.equal("AssumeRole", log[1].action)
      assert.equal("ok", log[1].signature)
      assert.equal("POST", log[1].method)
      local params = log[1].params
      assert.equal("acs:ram::123456:role/imm-reader", params.RoleArn)
      assert.equal("spec", params.RoleSessionName)
      assert.equal("1800", params.DurationSeconds)
      assert.equal("ext-1", params.ExternalId)
      assert.equal('{"Version":"1","Statement":[]}', params.Policy)
      assert.equal("2015-04-01", params.Version)
      assert_no_secrets(p)
      -- cached: no second call while fresh
      assert.equal(c.access_key_id, p:get().access_key_id)
      assert.equal(1, #cloud.log("sts"))
    end)

    it("signs with a source provider that has a security token", function()
      cloud.config { source = { security_token = "src-token" } }
      local src = assert(credentials.static { access_key_id = fake_cloud.SOURCE_ID,
        access_key_secret = fake_cloud.SOURCE_SECRET, security_token = "src-token" })
      local p = provider { source = src, access_key_id = fixture.NIL, access_key_secret = fixture.NIL }
      assert(p:get())
      assert.equal("ok", cloud.log("sts")[1].signature)
    end)

    it("takes the source from the environment by default", function()
      local p = assert(credentials.ram_role_arn { env = {
        ALIBABA_CLOUD_ACCESS_KEY_ID = fake_cloud.SOURCE_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET = fake_cloud.SOURCE_SECRET,
        ALIBABA_CLOUD_ROLE_ARN = "acs:ram::1:role/from-env", ALIBABA_CLOUD_ROLE_SESSION_NAME = "env-session",
      }, sts_endpoint = cloud.url })
      assert(p:get())
      local params = cloud.log("sts")[1].params
      assert.equal("acs:ram::1:role/from-env", params.RoleArn)
      assert.equal("env-session", params.RoleSessionName)
      assert.equal("3600", params.DurationSeconds)
      local q = assert(credentials.ram_role_arn { env = { ALIBABA_CLOUD_ROLE_ARN = "acs:ram::1:role/r" },
        sts_endpoint = cloud.url })
      local err = no_creds(q)
      assert.equal("NoCredentials", err.code)
      assert.matches("no source credentials", err.message)
    end)

    it("passes STS's refusal through, without the secret", function()
      local p = provider { access_key_secret = "WRONG-fake-secret-x" }
      local err = no_creds(p)
      assert.equal("SignatureDoesNotMatch", err.code)
      assert.equal(400, err.status)
      assert.matches("STS AssumeRole at 127.0.0.1", err.message)
      assert.is_false(deep_find(err, "WRONG-fake-secret-x"))
      assert.equal("bad", cloud.log("sts")[1].signature)
      local e2 = no_creds(provider { access_key_id = "nobody" })
      assert.equal("InvalidAccessKeyId.NotFound", e2.code)
      local e3 = no_creds(provider { role_arn = "not-an-arn" })
      assert.equal("InvalidParameter.RoleArn", e3.code)
    end)

    it("keeps the source's token out of STS's echoed string to sign", function()
      cloud.config { source = { security_token = "fake-token-source" } }
      local src = assert(credentials.static { access_key_id = fake_cloud.SOURCE_ID,
        access_key_secret = "fake-secret-wrong", security_token = "fake-token-source" })
      local p = provider { source = src, access_key_id = fixture.NIL, access_key_secret = fixture.NIL }
      local err = no_creds(p)
      assert.equal("SignatureDoesNotMatch", err.code)
      assert.matches("string to sign is: <withheld>", err.message, 1, true)
      assert_no_secrets(err)
    end)

    it("keeps a temporary token out of IMM's V2 SignatureDoesNotMatch", function()
      local srv = fixture.start { key_id = "STS.x", secret = "fake-secret-right", token = "fake-token-t/+=" }
      local c = assert(imm.new { endpoint = srv.url, signature_algorithm = "v2", max_retries = 0,
        credentials = assert(credentials.static { access_key_id = "STS.x", access_key_secret = "fake-secret-wrong",
          security_token = "fake-token-t/+=" }) })
      local _, err = c:list_bindings { ProjectName = "immtest" }
      srv.stop()
      assert.equal("SignatureDoesNotMatch", err.code)
      assert.matches("string to sign is: <withheld>", err.message, 1, true)
      assert_no_secrets(err)
      assert.is_nil(err.message:find("fake%2Dtoken", 1, true))
    end)

    it("reports a network failure with the STS host", function()
      local p = provider { sts_endpoint = "http://127.0.0.1:1" }
      local err = no_creds(p)
      assert.equal("ConnectionFailed", err.code)
      assert.matches("STS AssumeRole at 127.0.0.1", err.message)
    end)

    it("works end to end: an IMM call signed with the assumed role", function()
      cloud.config { issue = { access_key_id = "STS.assumed", access_key_secret = "fake-secret-assumed",
        security_token = "fake-token-assumed" } }
      local srv = fixture.start { key_id = "STS.assumed", secret = "fake-secret-assumed",
        token = "fake-token-assumed" }
      local c = assert(imm.new { endpoint = srv.url, credentials = provider() })
      local res, err = c:list_bindings { ProjectName = "immtest", MaxResults = 1 }
      srv.stop()
      assert.is_nil(err)
      assert.equal(1, #res.Bindings)
      assert_no_secrets(c)
    end)
  end)

  describe("OIDC role ARN (STS AssumeRoleWithOIDC)", function()
    local token_file
    before_each(function() token_file = write(tmp, "oidc/token", fake_cloud.OIDC_TOKEN .. "\n") end)

    local function env(extra)
      local e = {
        ALIBABA_CLOUD_ROLE_ARN = "acs:ram::123456:role/rrsa",
        ALIBABA_CLOUD_OIDC_PROVIDER_ARN = "acs:ram::123456:oidc-provider/ack-rrsa",
        ALIBABA_CLOUD_OIDC_TOKEN_FILE = token_file,
      }
      for k, v in pairs(extra or {}) do e[k] = v end
      return e
    end

    it("applies only when the three variables are set, and says which are missing", function()
      local p = assert(credentials.oidc_role_arn { env = { ALIBABA_CLOUD_ROLE_ARN = "x" } })
      local err = no_creds(p)
      assert.equal("NoCredentials", err.code)
      assert.matches("ALIBABA_CLOUD_OIDC_PROVIDER_ARN, ALIBABA_CLOUD_OIDC_TOKEN_FILE not set", err.message)
      assert.equal(0, #cloud.log())
    end)

    it("sends the token in the body, unsigned, and re-reads the file at every refresh", function()
      local clock = fake_cloud.clock()
      local p = assert(credentials.oidc_role_arn { env = env { ALIBABA_CLOUD_ROLE_SESSION_NAME = "pod-1" },
        sts_endpoint = cloud.url, clock = clock.now, debug = debug })
      local c1 = assert(p:get())
      local log = cloud.log("sts")
      assert.equal(1, #log)
      assert.equal("AssumeRoleWithOIDC", log[1].action)
      assert.is_false(log[1].token_in_query)
      assert.equal(fake_cloud.OIDC_TOKEN, log[1].params.OIDCToken)
      assert.equal("pod-1", log[1].params.RoleSessionName)
      assert.equal("acs:ram::123456:oidc-provider/ack-rrsa", log[1].params.OIDCProviderArn)
      assert.is_nil(log[1].params.Signature)
      -- the platform rotates the token; the next refresh must send the new one
      cloud.config { oidc_token = "fake-oidc-token-rotated" }
      write(tmp, "oidc/token", "fake-oidc-token-rotated")
      assert.equal(c1.access_key_id, p:get().access_key_id, "fresh: no refresh yet")
      clock.offset = 3600 - 890  -- fewer than 15 minutes left
      local c2 = assert(p:get())
      assert.not_equal(c1.access_key_id, c2.access_key_id)
      log = cloud.log("sts")
      assert.equal(2, #log)
      assert.equal("fake-oidc-token-rotated", log[2].params.OIDCToken)
      local joined = table.concat(trace, "\n")
      assert.matches("OIDCToken=<redacted>", joined, 1, true)
      assert.is_nil(joined:find("fake-oidc-token", 1, true))
      assert_no_secrets(p)
    end)

    it("names an unreadable or empty token file, never its content", function()
      local p = assert(credentials.oidc_role_arn { env = env { ALIBABA_CLOUD_OIDC_TOKEN_FILE = tmp .. "/nope" },
        sts_endpoint = cloud.url })
      local err = no_creds(p)
      assert.equal("InvalidConfiguration", err.code)
      assert.equal(tmp .. "/nope", err.file)
      assert.matches(tmp .. "/nope", err.message, 1, true)
      local empty = write(tmp, "oidc/empty", "  \n")
      err = no_creds(assert(credentials.oidc_role_arn { env = env { ALIBABA_CLOUD_OIDC_TOKEN_FILE = empty },
        sts_endpoint = cloud.url }))
      assert.matches("is empty", err.message)
      assert.equal(0, #cloud.log())
    end)

    it("passes STS's refusal of a bad token through", function()
      write(tmp, "oidc/token", "fake-oidc-token-stolen")
      local err = no_creds(assert(credentials.oidc_role_arn { env = env(), sts_endpoint = cloud.url }))
      assert.equal("AuthenticationFail.OIDCToken.Invalid", err.code)
      assert.is_nil(err.message:find("fake-oidc-token", 1, true))
    end)

    it("takes explicit options over the environment", function()
      local p = assert(credentials.oidc_role_arn { env = env(), role_arn = "acs:ram::1:role/explicit",
        duration_seconds = 900, policy = "{}", sts_endpoint = cloud.url })
      assert(p:get())
      local params = cloud.log("sts")[1].params
      assert.equal("acs:ram::1:role/explicit", params.RoleArn)
      assert.equal("900", params.DurationSeconds)
      assert.equal("{}", params.Policy)
      assert.matches("^imm%-lua%-%d+$", params.RoleSessionName)
    end)
  end)

  describe("ECS RAM role (metadata service)", function()
    local function provider(extra, env)
      local o = { metadata_endpoint = cloud.url, env = env or {}, debug = debug }
      for k, v in pairs(extra or {}) do o[k] = v end
      return assert(credentials.ecs_ram_role(o))
    end

    it("uses IMDSv2: a token, then the role it discovers", function()
      local p = provider()
      local c = assert(p:get())
      assert.matches("^STS%.fake%-", c.access_key_id)
      local log = cloud.log("imds")
      assert.equal(3, #log)
      assert.equal("PUT", log[1].method)
      assert.equal("/latest/api/token", log[1].path)
      assert.equal("21600", log[1].headers["x-aliyun-ecs-metadata-token-ttl-seconds"])
      assert.equal("/latest/meta-data/ram/security-credentials/", log[2].path)
      assert.equal("/latest/meta-data/ram/security-credentials/EcsRamRoleTest", log[3].path)
      assert.is_true(log[2].imds_token)
      assert.is_true(log[3].imds_token)
      assert.equal("***", log[3].headers["x-aliyun-ecs-metadata-token"])
      assert.matches("x-aliyun-ecs-metadata-token: <redacted>", table.concat(trace, "\n"), 1, true)
      assert_no_secrets(p)
    end)

    it("uses the configured role without listing", function()
      assert(provider({}, { ALIBABA_CLOUD_ECS_METADATA = "EcsRamRoleTest" }):get())
      assert.equal(2, #cloud.log("imds"))
      local err = no_creds(provider { role_name = "OtherRole" })
      assert.equal("NoCredentials", err.code)
      assert.equal(404, err.status)
      assert.equal("InvalidParameter", select(2, credentials.ecs_ram_role { role_name = "../x" }).code)
    end)

    it("falls back to IMDSv1 when the service refuses a token", function()
      cloud.config { imds = "v1" }
      assert(provider():get())
      local log = cloud.log("imds")
      assert.equal(3, #log)
      assert.equal(404, log[1].status)
      assert.is_false(log[3].imds_token)
      assert.matches("falling back to IMDSv1", table.concat(trace, "\n"))
    end)

    it("never falls back when IMDSv1 is disabled", function()
      cloud.config { imds = "v1" }
      local err = no_creds(provider({}, { ALIBABA_CLOUD_IMDSV1_DISABLED = "true" }))
      assert.matches("ALIBABA_CLOUD_IMDSV1_DISABLED", err.message)
      assert.equal(1, #cloud.log("imds"))
      err = no_creds(provider { disable_imdsv1 = true })
      assert.matches("IMDSv2", err.message)
      -- a hardened (v2-only) service is fine
      cloud.config { imds = "v2" }
      assert(provider({}, { ALIBABA_CLOUD_IMDSV1_DISABLED = "true" }):get())
    end)

    it("is skipped at once when disabled", function()
      local p = provider({}, { ALIBABA_CLOUD_ECS_METADATA_DISABLED = "true" })
      local err = no_creds(p)
      assert.equal("NoCredentials", err.code)
      assert.matches("ALIBABA_CLOUD_ECS_METADATA_DISABLED", err.message)
      assert.equal(0, #cloud.log())
    end)

    it("gives up quickly when the service is unreachable, without trying v1", function()
      local t0 = os.time()
      local err = no_creds(provider { metadata_endpoint = "http://127.0.0.1:1" })
      assert.equal("ConnectionFailed", err.code)
      assert.matches("unreachable", err.message)
      assert.is_true(os.time() - t0 <= 2)
    end)

    it("reports an instance without a role, and a failed Code", function()
      cloud.config { role_name = require("cjson").null }
      local err = no_creds(provider())
      assert.equal("NoCredentials", err.code)
      cloud.reset()
      cloud.fault { target = "imds", mode = "code", count = -1 }
      err = no_creds(provider())
      assert.equal("InvalidResponse", err.code)
      assert.matches('Code "Failed"', err.message)
    end)

    it("refreshes when less than an hour remains", function()
      local clock = fake_cloud.clock()
      local p = provider { role_name = "EcsRamRoleTest", clock = clock.now }
      local c1 = assert(p:get())
      clock.offset = 21600 - 3610
      assert.equal(c1.access_key_id, p:get().access_key_id)
      assert.equal(2, #cloud.log("imds"))
      clock.offset = 21600 - 3590
      assert.not_equal(c1.access_key_id, p:get().access_key_id)
      assert.equal(4, #cloud.log("imds"))
    end)
  end)

  describe("credentials URI", function()
    local function provider(extra)
      local o = { env = { ALIBABA_CLOUD_CREDENTIALS_URI = cloud.uri }, debug = debug }
      for k, v in pairs(extra or {}) do o[k] = v end
      return assert(credentials.credentials_uri(o))
    end

    it("reads the four fields", function()
      local c = assert(provider():get())
      assert.matches("^STS%.fake%-", c.access_key_id)
      assert.matches("^fake%-secret%-", c.access_key_secret)
      assert.matches("^fake%-token%-", c.security_token)
      assert.is_true(math.abs(c.expiration - (os.time() + 3600)) < 10)
      assert.equal("GET", cloud.log("uri")[1].method)
    end)

    it("applies only when ALIBABA_CLOUD_CREDENTIALS_URI is set", function()
      local err = no_creds(provider { env = {} })
      assert.equal("NoCredentials", err.code)
      assert.matches("ALIBABA_CLOUD_CREDENTIALS_URI", err.message)
      err = no_creds(provider { uri = "ftp://h/x" })
      assert.equal("InvalidConfiguration", err.code)
    end)

    local cases = {
      { "malformed", "InvalidResponse", "not a JSON object" },
      { "error", "InvalidResponse", "HTTP 500" },
      { "missing_secret", "InvalidResponse", "has no AccessKeySecret" },
      { "bad_expiration", "InvalidResponse", "not an ISO 8601 time" },
      { "code", "InvalidResponse", 'Code "Failed"' },
      { "reset", "ConnectionFailed", "credentials URI http://127.0.0.1" },
    }
    for _, case in ipairs(cases) do
      it("gives a clear error for a reply that is " .. case[1], function()
        cloud.fault { target = "uri", mode = case[1], count = -1 }
        local err = no_creds(provider())
        assert.equal(case[2], err.code)
        assert.matches(case[3], err.message, 1, true)
        assert_no_secrets(err)
      end)
    end

    it("never traces the URI's query or user info", function()
      local p = provider { uri = cloud.uri .. "?token=fake-secret-q" }
      assert(p:get())
      assert.is_nil(table.concat(trace, "\n"):find("fake-secret-q", 1, true))
    end)
  end)

  describe("refresh", function()
    it("refreshes before expiry, keeps valid credentials through a failed refresh, backs off", function()
      local clock = fake_cloud.clock()
      local p = assert(credentials.credentials_uri { uri = cloud.uri, clock = clock.now,
        random = function() return 0 end, debug = debug })
      local c1 = assert(p:get())
      assert.equal(c1.access_key_id, p:get().access_key_id)
      assert.equal(1, #cloud.log("uri"))

      clock.offset = 3600 - 800  -- 800 s left: stale, still valid
      cloud.fault { target = "uri", mode = "error", status = 503, count = 2 }
      assert.equal(c1.access_key_id, p:get().access_key_id, "served the still-valid credentials")
      assert.equal(2, #cloud.log("uri"))
      assert.equal(c1.access_key_id, p:get().access_key_id)
      assert.equal(2, #cloud.log("uri"), "no retry inside the backoff")
      assert.matches("refresh failed", table.concat(trace, "\n"))

      clock.offset = clock.offset + 3  -- first backoff: 2.5 s with this random
      assert.equal(c1.access_key_id, p:get().access_key_id)
      assert.equal(3, #cloud.log("uri"), "retried after the backoff, failed again")
      clock.offset = clock.offset + 3  -- second backoff is 5 s: still waiting
      p:get()
      assert.equal(3, #cloud.log("uri"))
      clock.offset = clock.offset + 3
      local c2 = assert(p:get())
      assert.not_equal(c1.access_key_id, c2.access_key_id)
      assert.equal(4, #cloud.log("uri"))

      -- past expiry, a failure is the caller's: no stale credentials
      clock.offset = 3600 * 3
      cloud.fault { target = "uri", mode = "error", status = 500, count = -1 }
      local err = no_creds(p)
      assert.equal("InvalidResponse", err.code)
      assert.equal(500, err.status)
      no_creds(p)
      assert.equal(6, #cloud.log("uri"), "with nothing valid, every call tries again")
    end)

    it("refuses credentials that arrive already expired", function()
      local clock = fake_cloud.clock()
      clock.offset = 7200
      local err = no_creds(assert(credentials.credentials_uri { uri = cloud.uri, clock = clock.now }))
      assert.matches("had expired", err.message)
    end)

    it("shares one refresh between coroutines; a latecomer gets the still-valid credentials", function()
      local clock = fake_cloud.clock()
      local inner = require("imm.transport.curl").new { connect_timeout = 5, timeout = 5 }
      local function yielding(req)
        local res, err = inner:request(req)
        coroutine.yield("in flight")
        return res, err
      end
      local p = assert(credentials.credentials_uri { uri = cloud.uri, clock = clock.now, transport = yielding })
      local function run() return p:get() end
      local co = coroutine.create(run)
      assert.equal("in flight", select(2, coroutine.resume(co)))
      local _, c1 = coroutine.resume(co)
      assert.matches("^STS", c1.access_key_id)

      clock.offset = 3000
      co = coroutine.create(run)
      assert.equal("in flight", select(2, coroutine.resume(co)), "the refresh is under way")
      local other = assert(p:get())  -- a second caller meanwhile
      assert.equal(c1.access_key_id, other.access_key_id)
      local _, c2 = coroutine.resume(co)
      assert.not_equal(c1.access_key_id, c2.access_key_id)
      assert.equal(2, #cloud.log("uri"), "one refresh, not two")
    end)
  end)

  describe("the call's deadline (issue 21, item 1)", function()
    local core = require "imm.core"
    local token_file
    before_each(function() token_file = write(tmp, "oidc/token", fake_cloud.OIDC_TOKEN .. "\n") end)

    -- one provider of each kind whose server can stall; the target it calls
    local kinds = {
      { "credentials URI", "uri", "credentials URI http://127.0.0.1", function()
        return assert(credentials.credentials_uri { uri = cloud.uri })
      end },
      { "RAM role ARN", "sts", "STS AssumeRole at 127.0.0.1", function()
        return assert(credentials.ram_role_arn { role_arn = "acs:ram::1:role/r", role_session_name = "s",
          access_key_id = fake_cloud.SOURCE_ID, access_key_secret = fake_cloud.SOURCE_SECRET,
          sts_endpoint = cloud.url, env = {} })
      end },
      { "OIDC role ARN", "sts", "STS AssumeRoleWithOIDC at 127.0.0.1", function()
        return assert(credentials.oidc_role_arn { role_arn = "acs:ram::1:role/r",
          oidc_provider_arn = "acs:ram::1:oidc-provider/p", oidc_token_file = token_file,
          sts_endpoint = cloud.url, env = {} })
      end },
      { "ECS RAM role", "imds", "metadata service at 127.0.0.1", function()
        return assert(credentials.ecs_ram_role { metadata_endpoint = cloud.url, timeout = 10, env = {} })
      end },
    }

    -- a call with deadline = 1 whose credentials server stalls for 8 s
    local function stalled_call(kind, async_mode, chained)
      cloud.fault { target = kind[2], mode = "slow", delay = 8, count = -1 }
      local p = kind[4]()
      if chained then p = assert(credentials.chain { p }) end
      local c = assert(imm.new { endpoint = "http://127.0.0.1:1", protocol = "http", deadline = 1,
        max_retries = 0, credentials = p, async = async_mode or nil })
      local t0 = core.monotonic()
      local res, err
      if async_mode then
        local ok
        ok, res, err = imm.spawn(function() return c:list_bindings { ProjectName = "immtest" } end):join(20)
        assert.is_true(ok)
      else
        res, err = c:list_bindings { ProjectName = "immtest" }
      end
      local elapsed = core.monotonic() - t0
      assert.is_nil(res)
      return err, elapsed
    end

    for _, kind in ipairs(kinds) do
      it("holds while a stalled " .. kind[1] .. " server is asked for credentials", function()
        local err, elapsed = stalled_call(kind)
        assert.is_true(elapsed < 4, "took " .. elapsed .. " s with deadline = 1")
        assert.equal("Timeout", err.code)
        assert.matches(kind[3], err.message, 1, true)  -- the provider's own request timed out
        assert.matches("deadline of 1s", err.message, 1, true)
        assert_no_secrets(err)
      end)
    end

    it("holds through a chain, and inside an async task (the task is not blocked)", function()
      local err, elapsed = stalled_call(kinds[1], false, true)
      assert.is_true(elapsed < 4, "chain: took " .. elapsed .. " s with deadline = 1")
      assert.equal("NoCredentials", err.code)
      assert.equal("Timeout", err.providers[1].code)
      assert.matches(kinds[1][3], err.providers[1].message, 1, true)
      cloud.reset()
      err, elapsed = stalled_call(kinds[2], true)
      assert.is_true(elapsed < 4, "async: took " .. elapsed .. " s with deadline = 1")
      assert.equal("Timeout", err.code)
    end)

    it("serves still-valid credentials when their refresh stalls, in time for the call", function()
      cloud.config { issue = { access_key_id = "STS.assumed", access_key_secret = "fake-secret-assumed",
        security_token = "fake-token-assumed" } }
      local srv = fixture.start { key_id = "STS.assumed", secret = "fake-secret-assumed",
        token = "fake-token-assumed" }
      local clock = fake_cloud.clock()
      local p = assert(credentials.credentials_uri { uri = cloud.uri, clock = clock.now })
      local c = assert(imm.new { endpoint = srv.url, credentials = p, deadline = 2, max_retries = 0 })
      assert(c:list_bindings { ProjectName = "immtest", MaxResults = 1 })
      clock.offset = 3600 - 800  -- stale, still valid
      cloud.fault { target = "uri", mode = "slow", delay = 8, count = 1 }
      local t0 = core.monotonic()
      local res, err = c:list_bindings { ProjectName = "immtest", MaxResults = 1 }
      local elapsed = core.monotonic() - t0
      srv.stop()
      assert.is_nil(err)
      assert.equal(1, #res.Bindings)
      assert.is_true(elapsed < 4, "took " .. elapsed .. " s with deadline = 2")
    end)

    it("lets a task run while another task's credentials are fetched", function()
      cloud.fault { target = "uri", mode = "slow", delay = 0.5, count = 1 }
      local c = assert(imm.new { endpoint = "http://127.0.0.1:1", protocol = "http", deadline = 3,
        max_retries = 0, credentials = assert(credentials.credentials_uri { uri = cloud.uri }), async = true })
      local ticks = 0
      local fetching = imm.spawn(function() return c:list_bindings { ProjectName = "immtest" } end)
      local ticker = imm.spawn(function()
        while not fetching:done() do
          ticks = ticks + 1
          require("imm.async").sleep(0.05)
        end
      end)
      assert.is_true(fetching:join(10))
      assert.is_true(ticker:join(10))
      assert.is_true(ticks > 2, "the other task ran " .. ticks .. " times during the fetch")
    end)
  end)

  describe("echoed tokens (issue 21, item 3)", function()
    -- every string an error holds, nested tables included, and tostring
    local function strings(v, out, seen)
      out, seen = out or {}, seen or {}
      if type(v) == "string" then out[#out + 1] = v return out end
      if type(v) ~= "table" or seen[v] then return out end
      seen[v] = true
      out[#out + 1] = tostring(v)
      for k, x in pairs(v) do strings(k, out, seen) strings(x, out, seen) end
      return out
    end
    local function assert_scrubbed(err, secret)
      assert.is_table(err)
      for _, s in ipairs(strings(err)) do
        assert.is_nil(s:find(secret, 1, true), "secret in " .. s)
      end
    end

    it("scrubs the source token from every field of an AssumeRole error, and from a chain's", function()
      local token = "fake-token-source-echoed"
      cloud.config { source = { security_token = token } }
      cloud.fault { target = "sts", mode = "echo", count = -1 }
      local src = assert(credentials.static { access_key_id = fake_cloud.SOURCE_ID,
        access_key_secret = fake_cloud.SOURCE_SECRET, security_token = token })
      local p = assert(credentials.ram_role_arn { role_arn = "acs:ram::1:role/r", source = src,
        sts_endpoint = cloud.url, env = {} })
      local err = no_creds(p)
      assert.equal(400, err.status)
      assert.matches("^Echo%.", err.code)
      assert_scrubbed(err, token)
      assert_no_secrets(err)
      err = no_creds(assert(credentials.chain { p }))
      assert.matches("^Echo%.", err.providers[1].code)
      assert_scrubbed(err, token)
      -- through a client, as a call returns it
      local c = assert(imm.new { endpoint = "http://127.0.0.1:1", protocol = "http", credentials = p })
      local _, cerr = c:list_bindings { ProjectName = "immtest" }
      assert_scrubbed(cerr, token)
    end)

    it("scrubs the OIDC token from every field of an AssumeRoleWithOIDC error", function()
      cloud.fault { target = "sts", mode = "echo", count = -1 }
      local file = write(tmp, "oidc/token-echo", fake_cloud.OIDC_TOKEN .. "\n")
      local p = assert(credentials.oidc_role_arn { role_arn = "acs:ram::1:role/r",
        oidc_provider_arn = "acs:ram::1:oidc-provider/p", oidc_token_file = file,
        sts_endpoint = cloud.url, env = {} })
      local err = no_creds(p)
      assert.matches("^Echo%.", err.code)
      assert_scrubbed(err, fake_cloud.OIDC_TOKEN)
      err = no_creds(assert(credentials.chain { p }))
      assert_scrubbed(err, fake_cloud.OIDC_TOKEN)
    end)

    it("scrubs a role chain's source credentials: the first role's STS token", function()
      -- the second AssumeRole is signed with the temporary keys of the first
      cloud.config { issue = { access_key_id = "STS.first", access_key_secret = "fake-secret-first",
        security_token = "fake-token-first" } }
      local first = assert(credentials.ram_role_arn { role_arn = "acs:ram::1:role/first",
        access_key_id = fake_cloud.SOURCE_ID, access_key_secret = fake_cloud.SOURCE_SECRET,
        sts_endpoint = cloud.url, env = {} })
      local second = assert(credentials.ram_role_arn { role_arn = "acs:ram::1:role/second", source = first,
        sts_endpoint = cloud.url, env = {} })
      assert(first:get())
      cloud.fault { target = "sts", mode = "echo", count = -1 }
      local err = no_creds(second)
      assert.matches("^Echo%.", err.code)
      assert_scrubbed(err, "fake-token-first")
      assert_no_secrets(err)
    end)
  end)

  describe("CLI profile (~/.aliyun/config.json)", function()
    local home
    before_each(function()
      home = tmp .. "/home-cli"
      fixture.sh("rm -rf " .. home .. " && mkdir -p " .. home .. "/.aliyun")
    end)

    local function config(doc)
      return write(home, ".aliyun/config.json", type(doc) == "string" and doc or require("cjson").encode(doc))
    end
    local function provider(env, extra)
      env = env or {}
      env.HOME = env.HOME or home
      local o = { env = env, sts_endpoint = cloud.url, metadata_endpoint = cloud.url, debug = debug }
      for k, v in pairs(extra or {}) do o[k] = v end
      return assert(credentials.cli_profile(o))
    end
    local token_file
    before_each(function() token_file = write(tmp, "oidc/cli-token", fake_cloud.OIDC_TOKEN) end)

    local function profiles()
      return { current = "ak", profiles = {
        { name = "ak", mode = "AK", access_key_id = "cli-id", access_key_secret = "cli-secret" },
        { name = "sts", mode = "StsToken", access_key_id = "cli-sts-id", access_key_secret = "cli-secret",
          sts_token = "cli-sts-token" },
        { name = "role", mode = "RamRoleArn", access_key_id = fake_cloud.SOURCE_ID,
          access_key_secret = fake_cloud.SOURCE_SECRET, ram_role_arn = "acs:ram::1:role/cli",
          ram_session_name = "cli-session", expired_seconds = 1200 },
        { name = "chained", mode = "ChainableRamRoleArn", source_profile = "role",
          ram_role_arn = "acs:ram::1:role/second" },
        { name = "ecs", mode = "EcsRamRole", ram_role_name = "EcsRamRoleTest" },
        { name = "oidc", mode = "OIDC", ram_role_arn = "acs:ram::1:role/oidc",
          oidc_provider_arn = "acs:ram::1:oidc-provider/p", oidc_token_file = token_file },
        { name = "loop", mode = "ChainableRamRoleArn", source_profile = "loop", ram_role_arn = "acs:ram::1:role/x" },
        { name = "bad", mode = "RsaKeyPair" },
        { name = "half", mode = "AK", access_key_id = "cli-id" },
      } }
    end

    it("uses the file's current profile, or ALIBABA_CLOUD_PROFILE", function()
      config(profiles())
      local c = assert(provider():get())
      assert.same({ access_key_id = "cli-id", access_key_secret = "cli-secret" }, c)
      c = assert(provider({ ALIBABA_CLOUD_PROFILE = "sts" }):get())
      assert.equal("cli-sts-token", c.security_token)
      assert_no_secrets(provider())
    end)

    it("assumes a role for RamRoleArn and ChainableRamRoleArn", function()
      config(profiles())
      assert(provider({ ALIBABA_CLOUD_PROFILE = "role" }):get())
      local log = cloud.log("sts")
      assert.equal("ok", log[1].signature)
      assert.equal("acs:ram::1:role/cli", log[1].params.RoleArn)
      assert.equal("cli-session", log[1].params.RoleSessionName)
      assert.equal("1200", log[1].params.DurationSeconds)
      cloud.reset()
      -- the second hop is signed with the first hop's temporary keys
      assert(provider({}, { profile = "chained" }):get())
      log = cloud.log("sts")
      assert.equal(2, #log)
      assert.matches("^STS%.fake", log[2].params.AccessKeyId)
      assert.equal("fake-token-1", log[2].params.SecurityToken)
      assert.equal("acs:ram::1:role/second", log[2].params.RoleArn)
      assert.equal("ok", log[2].signature)
    end)

    it("uses the metadata service for EcsRamRole and STS for OIDC", function()
      config(profiles())
      assert(provider({ ALIBABA_CLOUD_PROFILE = "ecs" }):get())
      assert.equal(2, #cloud.log("imds"))
      assert(provider({ ALIBABA_CLOUD_PROFILE = "oidc" }):get())
      assert.equal("AssumeRoleWithOIDC", cloud.log("sts")[1].action)
    end)

    it("is skipped when disabled or absent", function()
      config(profiles())
      local err = no_creds(provider { ALIBABA_CLOUD_CLI_PROFILE_DISABLED = "true" })
      assert.equal("NoCredentials", err.code)
      assert.matches("ALIBABA_CLOUD_CLI_PROFILE_DISABLED", err.message)
      err = no_creds(provider { HOME = tmp .. "/nowhere" })
      assert.equal("NoCredentials", err.code)
      assert.matches(tmp .. "/nowhere/.aliyun/config.json", err.message, 1, true)
    end)

    it("names the file and the line of broken JSON, and never quotes it", function()
      local path = config('{\n  "current": "ak",\n  "profiles": [\n    { "name": "ak", "access_key_secret": '
        .. '"cli-secret" x }\n  ]\n}\n')
      local err = no_creds(provider())
      assert.equal("InvalidConfiguration", err.code)
      assert.equal(path, err.file)
      assert.equal(4, err.line)
      assert.matches(path .. ":4: not valid JSON", err.message, 1, true)
      assert_no_secrets(err)
    end)

    local broken = {
      { "a missing profile", { ALIBABA_CLOUD_PROFILE = "nope" }, 'no profile named "nope"' },
      { "an unknown mode", { ALIBABA_CLOUD_PROFILE = "bad" }, 'mode "RsaKeyPair"' },
      { "a missing field", { ALIBABA_CLOUD_PROFILE = "half" }, "needs access_key_secret" },
      { "a source_profile loop", { ALIBABA_CLOUD_PROFILE = "loop" }, "a loop?" },
    }
    for _, case in ipairs(broken) do
      it("explains " .. case[1], function()
        local path = config(profiles())
        local err = no_creds(provider(case[2]))
        assert.equal("InvalidConfiguration", err.code)
        assert.equal(path, err.file)
        assert.matches(case[3], err.message, 1, true)
      end)
    end

    describe("modes beyond the keys (issue 23, part 4)", function()
      local core = require "imm.core"
      local prog, calls, reply
      before_each(function()
        -- the fake External program: records each run's arguments, one a
        -- line, then prints the reply file (or sleeps, for a stalled one)
        calls, reply = tmp .. "/ext-calls", tmp .. "/ext-reply.json"
        fixture.sh("rm -f " .. calls .. " " .. tmp .. "/ext-pwned")
        prog = write(tmp, "ext-prog.sh", "#!/bin/sh\nprintf 'run\\n' >> " .. calls .. "\n"
          .. "for a in \"$@\"; do printf 'arg %s\\n' \"$a\" >> " .. calls .. "; done\n"
          .. "if [ -f " .. reply .. ".sleep ]; then sleep 30; fi\n"
          .. "if [ -f " .. reply .. ".delay ]; then sleep $(cat " .. reply .. ".delay); fi\n"
          .. "cat " .. reply .. "\nexit $(cat " .. reply .. ".rc 2>/dev/null || echo 0)\n")
        fixture.sh("chmod 755 " .. prog .. " && rm -f " .. reply .. ".sleep " .. reply .. ".rc " .. reply .. ".delay")
      end)
      local function ext_reply(t)
        write(tmp, "ext-reply.json", type(t) == "string" and t or require("cjson").encode(t))
      end
      local function runs()
        local n, args = 0, {}
        for line in (fixture.read(calls) or ""):gmatch("[^\n]+") do
          if line == "run" then n = n + 1 else args[#args + 1] = line:match("^arg (.*)$") end
        end
        return n, args
      end
      local function modes(extra)
        local doc = { current = "ext", profiles = {
          { name = "ext", mode = "External", process_command = prog .. " --profile  x $(touch "
            .. tmp .. "/ext-pwned) a;b" },
          { name = "ext-none", mode = "External" },
          { name = "uri", mode = "CredentialsURI", credentials_uri = cloud.uri },
          { name = "uri-env", mode = "CredentialsURI" },
          { name = "sso", mode = "CloudSSO", cloud_sso_sign_in_url = cloud.url .. "/device/login",
            access_token = fake_cloud.SSO_TOKEN, cloud_sso_access_token_expire = os.time() + 3600,
            cloud_sso_account_id = "1234", cloud_sso_access_config = "ac-1" },
          { name = "sso-old", mode = "CloudSSO", cloud_sso_sign_in_url = cloud.url .. "/device/login",
            access_token = fake_cloud.SSO_TOKEN, cloud_sso_access_token_expire = os.time() - 60,
            cloud_sso_account_id = "1234", cloud_sso_access_config = "ac-1" },
          { name = "sso-stored", mode = "CloudSSO", cloud_sso_sign_in_url = cloud.url .. "/device/login",
            access_token = fake_cloud.SSO_TOKEN, cloud_sso_access_token_expire = os.time() + 3600,
            cloud_sso_account_id = "1234", cloud_sso_access_config = "ac-1", access_key_id = "STS.stored",
            access_key_secret = "sso-stored-secret", sts_token = "ext-token-stored",
            sts_expiration = os.time() + 1800 },
          { name = "oauth", mode = "OAuth", oauth_site_type = "CN", oauth_refresh_token = "oauth-refresh",
            access_key_id = "STS.oauth", access_key_secret = "sso-stored-secret", sts_token = "ext-token-o",
            sts_expiration = os.time() + 1800 },
          { name = "oauth-old", mode = "OAuth", oauth_site_type = "CN", oauth_refresh_token = "oauth-refresh",
            access_key_id = "STS.oauth", access_key_secret = "sso-stored-secret", sts_token = "ext-token-o",
            sts_expiration = os.time() - 60 },
        } }
        for _, p in ipairs(extra or {}) do doc.profiles[#doc.profiles + 1] = p end
        return config(doc)
      end

      it("runs an External program without a shell, and keeps what it prints until it is due", function()
        modes()
        local expires = os.time() + 3600
        ext_reply { mode = "StsToken", access_key_id = "STS.ext", access_key_secret = "ext-secret-1",
          sts_token = "ext-token-1", expiration = base.format_time(expires) }
        local clock = fake_cloud.clock()
        local p = provider({}, { clock = clock.now })
        local c = assert(p:get())
        assert.same({ access_key_id = "STS.ext", access_key_secret = "ext-secret-1", security_token = "ext-token-1",
          expiration = expires }, c)
        local n, args = runs()
        assert.equal(1, n)
        -- split on white space as aliyun-cli does; nothing a shell would read
        assert.same({ "--profile", "x", "$(touch", tmp .. "/ext-pwned)", "a;b" }, args)
        assert.is_nil(fixture.read(tmp .. "/ext-pwned"))
        assert(p:get())
        assert.equal(1, (runs()), "cached until it is due")
        clock.offset = 3600 - 60
        assert(p:get())
        assert.equal(2, (runs()), "run again when due")
        assert_no_secrets(p)
      end)

      it("takes AK from an External program, and keeps it", function()
        modes()
        ext_reply { mode = "AK", access_key_id = "ext-id", access_key_secret = "ext-secret-ak" }
        local p = provider()
        assert.same({ access_key_id = "ext-id", access_key_secret = "ext-secret-ak" }, p:get())
        assert(p:get())
        assert.equal(1, (runs()))
      end)

      local ext_broken = {
        { "a failed run", function() ext_reply "ext-secret-out"; write(tmp, "ext-reply.json.rc", "3") end,
          "InvalidResponse", "exited with status 3" },
        { "output that is not JSON", function() ext_reply "not json ext-secret-x" end,
          "InvalidResponse", "not a JSON object" },
        { "an unknown mode", function() ext_reply { mode = "RamRoleArn", access_key_id = "i",
          access_key_secret = "ext-secret-y" } end, "InvalidResponse", 'mode "RamRoleArn"' },
        { "a missing field", function() ext_reply { mode = "StsToken", access_key_id = "i",
          access_key_secret = "ext-secret-y" } end, "InvalidResponse", "no sts_token" },
        { "a bad expiration", function() ext_reply { mode = "AK", access_key_id = "i",
          access_key_secret = "ext-secret-y", expiration = "ext-secret-soon" } end,
          "InvalidResponse", "expiration" },
      }
      for _, case in ipairs(ext_broken) do
        it("explains an External program's " .. case[1] .. ", never quoting its output", function()
          modes()
          case[2]()
          local err = no_creds(provider())
          assert.equal(case[3], err.code)
          assert.matches(case[4], err.message, 1, true)
          assert.matches("ext-prog.sh", err.message, 1, true)
          assert_no_secrets(err)
        end)
      end

      it("names an External profile without process_command, and a program that is not there", function()
        modes { { name = "ext-missing", mode = "External", process_command = tmp .. "/no-such-prog" } }
        local err = no_creds(provider({}, { profile = "ext-none" }))
        assert.equal("InvalidConfiguration", err.code)
        assert.matches("needs process_command", err.message, 1, true)
        err = no_creds(provider({}, { profile = "ext-missing" }))
        assert.equal("InvalidResponse", err.code)
        assert.matches("no-such-prog", err.message, 1, true)
      end)

      it("holds the call's deadline while an External program hangs", function()
        modes()
        ext_reply { mode = "AK", access_key_id = "i", access_key_secret = "ext-secret-y" }
        write(tmp, "ext-reply.json.sleep", "")
        local c = assert(imm.new { endpoint = "http://127.0.0.1:1", protocol = "http", deadline = 1,
          max_retries = 0, credentials = provider() })
        local t0 = core.monotonic()
        local res, err = c:list_bindings { ProjectName = "immtest" }
        local elapsed = core.monotonic() - t0
        assert.is_nil(res)
        assert.equal("Timeout", err.code)
        assert.matches("ext-prog.sh", err.message, 1, true)
        assert.is_true(elapsed < 4, "took " .. elapsed .. " s with deadline = 1")
      end)

      -- a task that ticks while another task's call fetches its credentials
      local function ticks_during(c)
        local ticks = 0
        local fetching = imm.spawn(function() return c:list_bindings { ProjectName = "immtest" } end)
        local ticker = imm.spawn(function()
          while not fetching:done() do
            ticks = ticks + 1
            require("imm.async").sleep(0.05)
          end
        end)
        assert.is_true(fetching:join(10))
        assert.is_true(ticker:join(10))
        return ticks, select(2, fetching:result())
      end

      it("lets a task run while another task's External program runs, and holds the deadline there", function()
        modes()
        ext_reply { mode = "AK", access_key_id = "i", access_key_secret = "ext-secret-y" }
        write(tmp, "ext-reply.json.delay", "0.6")
        local ext_tmp = tmp .. "/ext-tmp"
        fixture.sh("rm -rf " .. ext_tmp .. " && mkdir " .. ext_tmp)
        local c = assert(imm.new { endpoint = "http://127.0.0.1:1", protocol = "http", deadline = 3,
          max_retries = 0, credentials = provider { TMPDIR = ext_tmp }, async = true })
        local ticks, res, err = ticks_during(c)
        assert.is_nil(res)
        assert.equal("ConnectionFailed", err.code)  -- the credentials came; the endpoint is closed
        assert.equal(1, (runs()))
        assert.is_true(ticks > 3, "the other task ran " .. ticks .. " times while the program ran")
        -- a program that hangs: Timeout within the deadline, in a task too
        write(tmp, "ext-reply.json.sleep", "")
        c = assert(imm.new { endpoint = "http://127.0.0.1:1", protocol = "http", deadline = 1,
          max_retries = 0, credentials = provider { TMPDIR = ext_tmp }, async = true })
        local t0 = core.monotonic()
        ticks, res, err = ticks_during(c)
        local elapsed = core.monotonic() - t0
        assert.is_nil(res)
        assert.equal("Timeout", err.code)
        assert.is_true(elapsed < 4, "took " .. elapsed .. " s with deadline = 1")
        assert.is_true(ticks > 3, "the other task ran " .. ticks .. " times while the program hung")
        -- what the programs printed went through files in TMPDIR: none is left
        core.sleep(1.2)  -- the hung one is killed by now
        local left = io.popen("ls -A " .. ext_tmp):read("*a")
        assert.equal("", left)
      end)

      -- Debian's nginx has no ngx.pipe (it lacks the socket cloexec patch), so
      -- the nginx spec below can only see the refusal: here a fake ngx.pipe
      -- that keeps to lua-resty-core's documented API checks how imm drives it.
      it("drives ngx.pipe as lua-resty-core documents it (a fake ngx.pipe)", function()
        local saved = { ngx = rawget(_G, "ngx"), t = package.loaded["imm.transport.ngx"],
          p = package.loaded["ngx.pipe"] }
        local phase, script, seen = "content", nil, nil
        rawset(_G, "ngx", { get_phase = function() return phase end })
        package.loaded["imm.transport.ngx"] = nil
        package.loaded["ngx.pipe"] = { spawn = function(argv, opts)
          seen = { argv = argv, opts = opts, killed = {} }
          local proc = {}
          function proc.set_timeouts(_, ...) seen.timeouts = { ... } end
          function proc.shutdown(_, what) seen.shutdown = what; return true end
          function proc.stdout_read_all() return script.read[1], script.read[2], script.read[3] end
          function proc.wait() return script.wait[1], script.wait[2], script.wait[3] end
          function proc.kill(_, sig) seen.killed[#seen.killed + 1] = sig; return true end
          return proc
        end }
        finally(function()
          rawset(_G, "ngx", saved.ngx)
          package.loaded["imm.transport.ngx"], package.loaded["ngx.pipe"] = saved.t, saved.p
        end)
        local function get(timeout)
          local p = assert(credentials.external { command = "/opt/creds  --role a;b", debug = debug })
          return p:get { timeout = timeout }
        end
        script = { read = { '{"mode":"AK","access_key_id":"ngx-id","access_key_secret":"ext-secret-p"}' },
          wait = { true, "exit", 0 } }
        local c = assert(get(5))
        assert.equal("ngx-id", c.access_key_id)
        assert.same({ "/opt/creds", "--role", "a;b" }, seen.argv)  -- a table: no shell
        assert.equal("stdin", seen.shutdown)
        for i = 1, 4 do
          assert.is_true(seen.timeouts[i] > 4000 and seen.timeouts[i] <= 5000, "timeout " .. i)
        end
        -- a read that times out: the program is killed, and the call gets Timeout
        script = { read = { nil, "timeout", '{"access_key_secret":"ext-secret-q' }, wait = { nil, "timeout" } }
        local _, err = get(1)
        assert.equal("Timeout", err.code)
        assert.same({ 9 }, seen.killed)
        -- a failed exit
        script = { read = { "ext-secret-r" }, wait = { false, "exit", 3 } }
        _, err = get(5)
        assert.equal("InvalidResponse", err.code)
        assert.matches("exited with status 3", err.message, 1, true)
        assert_no_secrets(err)
        -- a phase that cannot wait: refused, nothing spawned
        phase, seen = "init_worker", nil
        _, err = get(5)
        assert.equal("UnsupportedPhase", err.code)
        assert.is_nil(seen)
      end)

      it("fetches the profile's credentials_uri, or ALIBABA_CLOUD_CREDENTIALS_URI, for CredentialsURI", function()
        modes()
        local c = assert(provider({}, { profile = "uri" }):get())
        assert.matches("^STS%.fake%-", c.access_key_id)
        assert.equal(1, #cloud.log("uri"))
        assert(provider({ ALIBABA_CLOUD_CREDENTIALS_URI = cloud.uri }, { profile = "uri-env" }):get())
        assert.equal(2, #cloud.log("uri"))
        local err = no_creds(provider({}, { profile = "uri-env" }))
        assert.equal("InvalidConfiguration", err.code)
        assert.matches("needs credentials_uri", err.message, 1, true)
      end)

      it("lets a task run while a CredentialsURI profile's credentials are fetched", function()
        modes()
        cloud.fault { target = "uri", mode = "slow", delay = 0.5, count = 1 }
        local c = assert(imm.new { endpoint = "http://127.0.0.1:1", protocol = "http", deadline = 3,
          max_retries = 0, credentials = provider({}, { profile = "uri" }), async = true })
        local ticks = 0
        local fetching = imm.spawn(function() return c:list_bindings { ProjectName = "immtest" } end)
        local ticker = imm.spawn(function()
          while not fetching:done() do
            ticks = ticks + 1
            require("imm.async").sleep(0.05)
          end
        end)
        assert.is_true(fetching:join(10))
        assert.is_true(ticker:join(10))
        assert.equal(1, #cloud.log("uri"))
        assert.is_true(ticks > 2, "the other task ran " .. ticks .. " times during the fetch")
      end)

      it("exchanges a valid CloudSSO access token for STS credentials, and uses stored ones first", function()
        modes()
        local c = assert(provider({}, { profile = "sso" }):get())
        assert.matches("^STS%.fake%-", c.access_key_id)
        local log = cloud.log("sso")
        assert.equal(1, #log)
        assert.equal("POST", log[1].method)
        assert.equal("ok", log[1].signature)  -- the bearer token was the one the profile holds
        assert.same({ AccountId = "1234", AccessConfigurationId = "ac-1" }, log[1].params)
        cloud.reset()
        c = assert(provider({}, { profile = "sso-stored" }):get())
        assert.equal("STS.stored", c.access_key_id)
        assert.equal(0, #cloud.log("sso"))
        cloud.config { sso_token = "another" }
        local err = no_creds(provider({}, { profile = "sso" }))
        assert.equal("InvalidResponse", err.code)
        assert.matches("HTTP 401", err.message, 1, true)
        assert.matches("aliyun configure --profile sso --mode CloudSSO", err.message, 1, true)
        assert_no_secrets(err)
        -- stored credentials due for a refresh, which fails: still served while valid
        local clock = fake_cloud.clock()
        clock.offset = 1800 - 600
        c = assert(provider({}, { profile = "sso-stored", clock = clock.now }):get())
        assert.equal("STS.stored", c.access_key_id)
        assert.equal(2, #cloud.log("sso"), "the refused exchange above, and this one")
      end)

      it("lets a task run while another task's CloudSSO exchange waits for the portal", function()
        modes()
        cloud.fault { target = "sso", mode = "slow", delay = 0.5, count = 1 }
        local c = assert(imm.new { endpoint = "http://127.0.0.1:1", protocol = "http", deadline = 3,
          max_retries = 0, credentials = provider({}, { profile = "sso" }), async = true })
        local ticks, res, err = ticks_during(c)
        assert.is_nil(res)
        assert.equal("ConnectionFailed", err.code)  -- the credentials came; the endpoint is closed
        assert.equal(1, #cloud.log("sso"))
        assert.is_true(ticks > 2, "the other task ran " .. ticks .. " times during the exchange")
      end)

      it("says what to do for an expired CloudSSO sign-in, and for OAuth without valid STS", function()
        modes()
        local err = no_creds(provider({}, { profile = "sso-old" }))
        assert.equal("InvalidConfiguration", err.code)
        assert.matches("CloudSSO", err.message, 1, true)
        assert.matches("aliyun configure --profile sso-old --mode CloudSSO", err.message, 1, true)
        assert.equal(0, #cloud.log("sso"))
        local c = assert(provider({}, { profile = "oauth" }):get())
        assert.equal("STS.oauth", c.access_key_id)
        err = no_creds(provider({}, { profile = "oauth-old" }))
        assert.equal("InvalidConfiguration", err.code)
        assert.matches("OAuth", err.message, 1, true)
        assert.matches("External", err.message, 1, true)
        assert_no_secrets(err)
      end)
    end)

    it("explains a file without profiles", function()
      config('{"current": "x"}')
      assert.matches('has no "profiles" list', no_creds(provider()).message)
      config('[1, 2]')
      assert.matches('has no "profiles" list', no_creds(provider()).message)
    end)
  end)

  describe("shared credentials file (INI)", function()
    local home
    before_each(function()
      home = tmp .. "/home-ini"
      fixture.sh("rm -rf " .. home .. " && mkdir -p " .. home)
    end)
    local function file(text) return write(home, ".alibabacloud/credentials", text) end
    local function provider(env, extra)
      env = env or {}
      env.HOME = env.HOME or home
      local o = { env = env, sts_endpoint = cloud.url, metadata_endpoint = cloud.url, debug = debug }
      for k, v in pairs(extra or {}) do o[k] = v end
      return assert(credentials.profile(o))
    end
    local INI = table.concat({
      "# shared credentials",
      "[default]",
      "type = access_key",
      "access_key_id = ini-id",
      "access_key_secret = ini-secret",
      "",
      "[ecs]",
      "type = ecs_ram_role",
      "role_name = EcsRamRoleTest",
      "",
      "; a role",
      "[role]",
      "type = ram_role_arn",
      "access_key_id = " .. fake_cloud.SOURCE_ID,
      "access_key_secret = " .. fake_cloud.SOURCE_SECRET,
      "role_arn = acs:ram::1:role/ini",
      "role_session_name = ini-session",
      "policy = {\"Version\": \"1\", \"Statement\": []}",
      "",
      "[notype]",
      "access_key_id = x",
      "",
      "[weird]",
      "type = bearer_token",
      "",
      "[short]",
      "type = access_key",
      "access_key_id = ini-id",
    }, "\n") .. "\n"

    it("reads the default section of ~/.alibabacloud/credentials", function()
      file(INI)
      assert.same({ access_key_id = "ini-id", access_key_secret = "ini-secret" }, provider():get())
      assert_no_secrets(provider())
    end)

    it("follows ALIBABA_CLOUD_CREDENTIALS_FILE and ALIBABA_CLOUD_PROFILE", function()
      local path = write(tmp, "elsewhere.ini", INI)
      assert(provider({ HOME = tmp .. "/none", ALIBABA_CLOUD_CREDENTIALS_FILE = path,
        ALIBABA_CLOUD_PROFILE = "ecs" }):get())
      assert.equal("/latest/meta-data/ram/security-credentials/EcsRamRoleTest", cloud.log("imds")[2].path)
      assert(provider({ ALIBABA_CLOUD_CREDENTIALS_FILE = path }, { profile = "role" }):get())
      local sts = cloud.log("sts")[1]
      assert.equal("ok", sts.signature)
      assert.equal("acs:ram::1:role/ini", sts.params.RoleArn)
      assert.equal("ini-session", sts.params.RoleSessionName)
      assert.equal('{"Version": "1", "Statement": []}', sts.params.Policy)
    end)

    it("is skipped when there is no file", function()
      local err = no_creds(provider())
      assert.equal("NoCredentials", err.code)
      assert.matches(home .. "/.alibabacloud/credentials", err.message, 1, true)
      err = no_creds(provider { ALIBABA_CLOUD_CREDENTIALS_FILE = tmp .. "/missing.ini" })
      assert.matches("from ALIBABA_CLOUD_CREDENTIALS_FILE", err.message)
    end)

    local broken = {
      { "a line that is not key = value", "[default]\ntype = access_key\naccess_key_secret: ini-secret\n", 3,
        "expected key = value" },
      { "a broken section header", "[default]\ntype = access_key\n[oops\n", 3, "section header" },
      { "a key outside any section", "type = access_key\n[default]\n", 1, "outside any section" },
      { "a section without type", INI, 20, "section [notype] has no type", "notype" },
      { "an unknown type", INI, 24, 'type "bearer_token"', "weird" },
      { "a missing key", INI, 26, "needs access_key_secret", "short" },
    }
    for _, case in ipairs(broken) do
      it("names the file and the line of " .. case[1], function()
        local path = file(case[2])
        local err = no_creds(provider { ALIBABA_CLOUD_PROFILE = case[5] })
        assert.equal("InvalidConfiguration", err.code)
        assert.equal(path, err.file)
        assert.equal(case[3], err.line)
        assert.matches(path .. ":" .. case[3] .. ": ", err.message, 1, true)
        assert.matches(case[4], err.message, 1, true)
        assert_no_secrets(err)
      end)
    end

    it("names the file of a missing section", function()
      local path = file(INI)
      local err = no_creds(provider { ALIBABA_CLOUD_PROFILE = "prod" })
      assert.equal("InvalidConfiguration", err.code)
      assert.equal(path .. ": no section [prod]", err.message)
    end)

    it("reads the file again once it is fixed", function()
      file("[default\n")
      local p = provider()
      assert.equal("InvalidConfiguration", no_creds(p).code)
      file(INI)
      assert.equal("ini-id", assert(p:get()).access_key_id)
    end)
  end)

  describe("the default chain", function()
    local home, token_file
    setup(function()
      home = tmp .. "/home-default"
      fixture.sh("rm -rf " .. home .. " && mkdir -p " .. home)
      write(home, ".aliyun/config.json", require("cjson").encode { current = "p", profiles = {
        { name = "p", mode = "AK", access_key_id = "cli-id", access_key_secret = "cli-secret" } } })
      write(home, ".alibabacloud/credentials", "[default]\ntype = access_key\naccess_key_id = ini-id\n"
        .. "access_key_secret = ini-secret\n")
      token_file = write(tmp, "oidc/default-token", fake_cloud.OIDC_TOKEN)
    end)

    local function full_env()
      return {
        HOME = home,
        ALIBABA_CLOUD_ACCESS_KEY_ID = "env-id", ALIBABA_CLOUD_ACCESS_KEY_SECRET = "env-secret",
        ALIBABA_CLOUD_ROLE_ARN = "acs:ram::1:role/rrsa", ALIBABA_CLOUD_OIDC_PROVIDER_ARN = "acs:ram::1:oidc-provider/p",
        ALIBABA_CLOUD_OIDC_TOKEN_FILE = token_file,
        ALIBABA_CLOUD_CREDENTIALS_URI = cloud.uri,
      }
    end
    local function first(env)
      local p = assert(credentials.default { env = env, sts_endpoint = cloud.url, metadata_endpoint = cloud.url,
        debug = debug })
      cloud.reset()
      return p:get()
    end

    it("tries env, OIDC, CLI profile, credentials file, ECS role, URI, in that order", function()
      local env = full_env()
      assert.equal("env-id", first(env).access_key_id)
      assert.equal(0, #cloud.log())

      env.ALIBABA_CLOUD_ACCESS_KEY_ID = nil
      assert.matches("^STS%.fake", first(env).access_key_id)
      assert.equal("AssumeRoleWithOIDC", cloud.log()[1].action)

      env.ALIBABA_CLOUD_ROLE_ARN = nil
      assert.equal("cli-id", first(env).access_key_id)

      env.ALIBABA_CLOUD_CLI_PROFILE_DISABLED = "true"
      assert.equal("ini-id", first(env).access_key_id)

      env.ALIBABA_CLOUD_CREDENTIALS_FILE = tmp .. "/no-such-file"
      assert.matches("^STS%.fake", first(env).access_key_id)
      assert.equal("imds", cloud.log()[1].target)

      env.ALIBABA_CLOUD_ECS_METADATA_DISABLED = "true"
      assert.matches("^STS%.fake", first(env).access_key_id)
      assert.equal("uri", cloud.log()[1].target)
    end)

    it("reports every provider it tried as one NoCredentials", function()
      local env = { HOME = tmp .. "/nowhere", ALIBABA_CLOUD_ECS_METADATA_DISABLED = "true" }
      local p = assert(credentials.default { env = env, metadata_endpoint = cloud.url })
      local err = no_creds(p)
      assert.equal("NoCredentials", err.code)
      local names = {}
      for i, r in ipairs(err.providers) do names[i] = r.name end
      assert.same({ "env", "oidc_role_arn", "cli_profile", "profile", "ecs_ram_role", "credentials_uri" }, names)
      assert.matches("ALIBABA_CLOUD_ACCESS_KEY_ID", err.message)
      assert.matches("ALIBABA_CLOUD_ROLE_ARN", err.message)
      assert.matches(tmp .. "/nowhere/.aliyun/config.json", err.message, 1, true)
      assert.matches(tmp .. "/nowhere/.alibabacloud/credentials", err.message, 1, true)
      assert.matches("ALIBABA_CLOUD_ECS_METADATA_DISABLED", err.message)
      assert.matches("ALIBABA_CLOUD_CREDENTIALS_URI", err.message)
      -- the next call walks it again and finds what appeared meanwhile
      env.ALIBABA_CLOUD_CREDENTIALS_URI = cloud.uri
      assert(p:get())
    end)

    it("falls through a broken file, and reports it with its line when nothing is found", function()
      local broken = tmp .. "/home-broken"
      write(broken, ".alibabacloud/credentials", "[default]\nthis is not ini\n")
      local env = { HOME = broken, ALIBABA_CLOUD_ECS_METADATA_DISABLED = "true" }
      local err = no_creds(assert(credentials.default { env = env }))
      assert.equal("NoCredentials", err.code)
      assert.equal("InvalidConfiguration", err.providers[4].code)
      assert.matches(broken .. "/.alibabacloud/credentials:2: expected key = value", err.message, 1, true)
      env.ALIBABA_CLOUD_CREDENTIALS_URI = cloud.uri
      assert(assert(credentials.default { env = env }):get())
    end)

    it("is shared when built without options, and feeds imm.new{}", function()
      assert.equal(credentials.default(), credentials.default())
      local srv = fixture.start()
      local c = assert(imm.new { endpoint = srv.url, credentials = assert(credentials.default {
        env = { ALIBABA_CLOUD_ACCESS_KEY_ID = fixture.KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET = fixture.SECRET } }) })
      local res, err = c:list_bindings { ProjectName = "immtest", MaxResults = 1 }
      srv.stop()
      assert.is_nil(err)
      assert.equal(1, #res.Bindings)
    end)
  end)
  describe("inside nginx", function()
    local ngx_srv
    setup(function() ngx_srv = nginx_credentials.start() end)
    teardown(function() if ngx_srv then ngx_srv.stop() end end)

    -- n requests to nginx at once; their decoded replies
    local function burst(n, query)
      local dir = fixture.tmpdir()
      local cmd = {}
      for i = 1, n do
        cmd[#cmd + 1] = string.format("curl -s --max-time 20 -o %s/%d.json '%s/credentials?%s' &",
          dir, i, ngx_srv.url, query)
      end
      fixture.sh(table.concat(cmd, " ") .. " wait")
      local out = {}
      for i = 1, n do
        local body = fixture.read(dir .. "/" .. i .. ".json")
        assert(body, "no reply from nginx:\n" .. ngx_srv.error_log():sub(-2000))
        out[i] = require("cjson").decode(body)
      end
      fixture.sh("rm -rf " .. dir)
      return out
    end

    it("shares one fetch, then one refresh, among a worker's concurrent requests", function()
      cloud.fault { target = "uri", mode = "slow", delay = 0.5, count = -1 }
      local first = burst(10, "uri=" .. cloud.uri)
      local id
      for _, r in ipairs(first) do
        assert.is_nil(r.err, r.message)
        id = id or r.id
        assert.equal(id, r.id)
      end
      assert.equal(1, #cloud.log("uri"), "ten requests, one fetch")

      -- stale but valid: one request refreshes, the others go on at once
      local second = burst(10, "uri=" .. cloud.uri .. "&offset=3000")
      local old, new = 0, 0
      for _, r in ipairs(second) do
        assert.is_nil(r.err, r.message)
        if r.id == id then
          old = old + 1
          assert.is_true(r.waited < 0.3, "a request waited for a refresh it did not need")
        else
          new = new + 1
        end
      end
      assert.is_true(old >= 1 and new >= 1, "old " .. old .. ", new " .. new)
      assert.equal(2, #cloud.log("uri"), "ten requests, one refresh")
    end)

    it("runs an External program through ngx.pipe, held to the deadline, or refuses (issue 23, part 4)", function()
      local ran = tmp .. "/ngx-ext-ran"
      fixture.sh("rm -f " .. ran)
      local prog = write(tmp, "ngx-ext.sh", "#!/bin/sh\ntouch " .. ran .. "\nif [ \"$1\" = hang ]; then sleep 30; fi\n"
        .. "printf '{\"mode\":\"AK\",\"access_key_id\":\"ngx-ext-id\",\"access_key_secret\":\"ext-secret-n\"}'\n")
      fixture.sh("chmod 755 " .. prog)
      local r = ngx_srv.get("/external?deadline=5&cmd=" .. prog .. "%20ok")
      assert_no_secrets(r)
      if r.err == "InvalidConfiguration" then
        -- this nginx has no ngx.pipe (Debian's lacks the socket cloexec
        -- patch): a clear refusal, and the program never ran (no io.popen
        -- blocking the worker)
        assert.matches("need lua-resty-core's ngx.pipe", r.message, 1, true)
        assert.is_nil(fixture.read(ran))
        return
      end
      assert.is_nil(r.err, r.message)
      assert.equal("ngx-ext-id", r.id)
      r = ngx_srv.get("/external?deadline=1&cmd=" .. prog .. "%20hang")
      assert.equal("Timeout", r.err, r.message)
      assert.matches("ngx-ext.sh", r.message, 1, true)
      assert.is_true(r.took < 4, "took " .. r.took .. " s with deadline = 1")
    end)

    it("holds a call's deadline while the credentials URI stalls (issue 21, item 1)", function()
      cloud.fault { target = "uri", mode = "slow", delay = 8, count = -1 }
      local r = ngx_srv.get("/call?deadline=1&uri=" .. cloud.uri)
      assert.is_false(r.ok)
      assert.equal("Timeout", r.err, r.message)
      assert.matches("credentials URI http://127.0.0.1", r.message, 1, true)
      assert.is_true(r.took < 4, "took " .. r.took .. " s with deadline = 1")
    end)
  end)
end)

-- Issue 23, part 3: the client's proxy carries its IMM requests only; the
-- metadata service and a credentials URI on this host are always asked
-- directly (the environment's proxy is covered by spec 16).
describe("credential requests and the client's proxy", function()
  local proxy_fixture = require "helpers.proxy"
  local cloud, srv, recorder
  setup(function()
    cloud = fake_cloud.start()
    srv = fixture.start()
    recorder = proxy_fixture.start()
  end)
  teardown(function()
    for _, s in ipairs { cloud, srv, recorder } do
      if s then s.stop() end
    end
  end)

  for _, case in ipairs {
    { "the ECS metadata service", "imds", function()
      return credentials.ecs_ram_role { metadata_endpoint = cloud.url, env = {} }
    end },
    { "a credentials URI", "uri", function() return credentials.credentials_uri { uri = cloud.uri } end },
  } do
    it(case[1] .. " is never asked through it", function()
      cloud.reset()
      recorder.reset()
      local c = assert(imm.new { endpoint = srv.url, proxy = recorder.url, max_retries = 0,
        credentials = assert(case[3]()) })
      -- the fake cloud's keys are not the local server's: refused, but sent
      local res, err = c:list_bindings { ProjectName = "immtest" }
      assert.is_nil(res)
      assert.equal("InvalidAccessKeyId.NotFound", err.code, tostring(err))
      assert.is_true(#cloud.log(case[2]) >= 1, "the credentials were fetched")
      local log = recorder.log()
      assert.equal(1, #log, "only the IMM request went through the proxy")
      assert.matches("^http://127%.0%.0%.1:" .. srv.port .. "/", log[1].target)
      for _, rec in ipairs(log) do
        assert.is_nil(rec.target:find(":" .. cloud.port, 1, true), "a credential request through the proxy")
      end
    end)
  end
end)
