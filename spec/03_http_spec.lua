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

  it("reuses the TLS connection across calls", function()
    local c = srv.client {}
    local before = srv.stats().connections
    for _ = 1, 3 do assert(c:list_bindings { ProjectName = "immtest", MaxResults = 1 }) end
    assert.is_true(srv.stats().connections - before <= 1)
  end)
end)
