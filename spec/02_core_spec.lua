-- Layer 2: the C core (imm.core) on its own: digests, nonces, the HTTP
-- handle's life cycle, and the single version string.
local core = require "imm.core"

describe("imm.core", function()
  it("names its libcurl, TLS library and zlib, the same string each time", function()
    local v = core.backend()
    assert.matches("^libcurl/%d+%.%d+%.%d+ OpenSSL/3[%.%d]* zlib/%d", v)
    assert.equal(v, core.backend())
  end)

  -- A rockspec is Lua: load it in an empty environment.
  local function rockspec(path)
    local f = assert(io.open(path))
    local src = f:read("*a")
    f:close()
    local env = {}
    local chunk = assert((loadstring or load)(src, path, "t", env))
    if setfenv then setfenv(chunk, env) end
    chunk()
    return env
  end

  it("shares one version string with imm and the released rockspec", function()
    local v = core._VERSION
    assert.equal(require("imm")._VERSION, v)
    assert.matches("^%d+%.%d+%.%d+$", v)
    local spec = rockspec("rockspecs/imm-" .. v .. "-1.rockspec")
    assert.equal(v .. "-1", spec.version)
    assert.equal("imm", spec.package)
    -- a release is built from its tag, which the release commit carries
    assert.matches("^git%+https://", spec.source.url)
    assert.equal("v" .. v, spec.source.tag)
    assert.equal("scm-1", rockspec("imm-scm-1.rockspec").version)
  end)

  it("describes the checkout's rock as the release does: its homepage, and every action", function()
    local release = rockspec("rockspecs/imm-" .. core._VERSION .. "-1.rockspec")
    local scm = rockspec("imm-scm-1.rockspec")
    assert.is_string(release.description.homepage)
    assert.equal(release.description.homepage, scm.description.homepage)
    assert.matches("every action", scm.description.summary)
  end)

  it("builds the release and the checkout the same way, with no JSON library at run time", function()
    local release = rockspec("rockspecs/imm-" .. core._VERSION .. "-1.rockspec")
    local scm = rockspec("imm-scm-1.rockspec")
    assert.same(scm.build, release.build)
    assert.same(scm.external_dependencies, release.external_dependencies)
    assert.same(scm.dependencies, release.dependencies)
    assert.same(scm.test_dependencies, release.test_dependencies)
    for _, d in ipairs(release.dependencies) do assert.is_nil(d:find("cjson"), d) end
    -- the Makefile builds under build/, never ./imm/core.so (issue 17)
    assert.equal("make", release.build.type)
    assert.equal("bin/imm-server", release.build.install.bin["imm-server"])
  end)

  it("computes SHA-256, SM3 and SHA-1 digests", function()
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", core.hash_hex("sha256", "abc"))
    -- GB/T 32905-2016 example 1
    assert.equal("66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0", core.hash_hex("sm3", "abc"))
    assert.equal("a9993e364706816aba3e25717850c26c9cd0d89d", core.hash_hex("sha1", "abc"))
  end)

  it("digests a file read in blocks, as the same bytes in a string", function()
    local path = os.tmpname()
    finally(function() os.remove(path) end)
    -- over several of the reader's 16 KB blocks, with a partial one at the end
    local text = {}
    for i = 1, 12000 do text[i] = string.char(i % 256, (i * 7) % 256) .. tostring(i) end
    text = table.concat(text)
    local f = assert(io.open(path, "wb"))
    f:write(text)
    f:close()
    assert.is_true(#text > 3 * 16384)
    assert.equal(core.hash_hex("sha256", text), core.hash_file("sha256", path))
    assert.equal(core.hash_hex("sm3", text), core.hash_file("sm3", path))
    local empty = assert(io.open(path, "wb"))
    empty:close()
    assert.equal(core.hash_hex("sha256", ""), core.hash_file("sha256", path))
    local digest, code = core.hash_file("sha256", path .. ".missing")
    assert.is_nil(digest)
    assert.equal("InvalidParameter", code)
  end)

  it("computes HMACs (RFC 4231 case 2)", function()
    assert.equal("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
      core.hmac_hex("sha256", "Jefe", "what do ya want for nothing?"))
    -- case 6: a key longer than the block is hashed first
    assert.equal("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
      core.hmac_hex("sha256", ("\170"):rep(131), "Test Using Larger Than Block-Size Key - Hash Key First"))
    -- case 1
    assert.equal("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
      core.hmac_hex("sha256", ("\11"):rep(20), "Hi There"))
    -- RFC 2202 case 1 (V2 signs with HMAC-SHA1)
    assert.equal("b617318655057264e28bc0b6fb378c8ef146be00", core.hmac_hex("sha1", ("\11"):rep(20), "Hi There"))
  end)

  it("issues 100k distinct 128-bit nonces", function()
    local seen, n = {}, 100000
    for _ = 1, n do
      local x = core.nonce()
      assert(#x == 32 and x:match("^%x+$"), x)
      assert(not seen[x], "nonce repeated")
      seen[x] = true
    end
  end)

  -- imm.response's element check, moved from Lua to C: it must answer as
  -- the Lua loop did, on random lists, metatables and explicit counts too.
  it("finds the first list element that is not an object, as the Lua loop did", function()
    local function reference(list, n)
      for i = 1, n or #list do
        local e = list[i]
        if type(e) ~= "table" or e[1] ~= nil then return i end
      end
      return nil
    end
    assert.equal(reference, reference) -- the reference itself can tell a bad element
    assert.equal(2, reference({ {}, 5 }))
    local null = require("imm.decode").null
    local proxy = setmetatable({}, { __index = function(_, k) return k == 1 and "x" or nil end })
    local kinds = {
      function() return {} end,
      function() return { a = 1 } end,
      function() return { 1 } end,
      function() return proxy end,
      function() return setmetatable({}, { __index = {} }) end,
      function() return 7 end,
      function() return false end,
      function() return "s" end,
      function() return null end,
    }
    local seed = 7
    local function rnd(k) seed = (seed * 16807) % 2147483647; return seed % k + 1 end
    local answers = {}
    for _ = 1, 2000 do
      local list = {}
      local len = rnd(12) - 1
      for i = 1, len do list[i] = kinds[rnd(rnd(8) == 1 and #kinds or 2)]() end
      local n
      if rnd(4) == 1 then n = rnd(len + 2) - 1 end
      if rnd(10) == 1 then
        list = setmetatable({}, { __index = list, __len = function() return len end })
      end
      local want, got = reference(list, n), core.bad_element(list, n)
      assert.equal(want, got)
      answers[tostring(want)] = true
    end
    assert.is_true(answers["nil"] and answers["1"] and answers["2"] and true)
    local big = {}
    for i = 1, 100 do big[i] = { ProjectName = "p" } end
    assert.is_nil(core.bad_element(big))
    big[100] = { "array" }
    assert.equal(100, core.bad_element(big))
    assert.equal(require("imm.response").bad_element, core.bad_element)
  end)

  it("draws jitter in [0, 1)", function()
    local lo, hi = 1, 0
    for _ = 1, 1000 do
      local r = core.random()
      assert(r >= 0 and r < 1)
      if r < lo then lo = r end
      if r > hi then hi = r end
    end
    assert.is_true(lo < 0.1 and hi > 0.9)
  end)

  it("has a monotonic clock and a sleep", function()
    local t0 = core.monotonic()
    core.sleep(0.02)
    assert.is_true(core.monotonic() - t0 >= 0.015)
  end)

  describe("HTTP handle", function()
    it("closes safely twice and reports itself closed", function()
      local h = assert(core.http { timeout = 1 })
      assert.matches("^imm.core.http %(", tostring(h))
      h:close()
      h:close()
      assert.equal("imm.core.http (closed)", tostring(h))
      local ok, code = h:request("POST", "http://127.0.0.1:9/", {}, "")
      assert.is_nil(ok)
      assert.equal("InvalidState", code)
    end)

    it("is collected without being closed", function()
      for _ = 1, 50 do core.http { timeout = 1 } end
      collectgarbage()
      collectgarbage()
    end)

    it("reports a refused connection as ConnectionFailed", function()
      -- port 9 (discard) is closed on loopback here; nothing is sent anywhere else
      local h = assert(core.http { timeout = 2, connect_timeout = 1 })
      local ok, code, msg, status = h:request("POST", "http://127.0.0.1:9/", {}, "")
      assert.is_nil(ok)
      assert.equal("ConnectionFailed", code)
      assert.is_string(msg)
      assert.is_nil(status)
      h:close()
    end)

    it("refuses header lines carrying CR or LF", function()
      local h = assert(core.http { timeout = 1 })
      local ok, code = h:request("POST", "http://127.0.0.1:9/", { "X-A: b\r\nX-Evil: 1" }, "")
      assert.is_nil(ok)
      assert.equal("InvalidParameter", code)
      h:close()
    end)

    it("refuses a request line and headers libcurl cannot send, as InvalidParameter, not OutOfMemory", function()
      -- libcurl 7.88 takes a URL of 8000000 bytes at most and builds the
      -- request line and headers in 1 MiB at most, and says "out of memory"
      local h = assert(core.http { timeout = 2, connect_timeout = 1 })
      for _, n in ipairs { 2 * 1024 * 1024, 9 * 1024 * 1024 } do
        local ok, code, msg, status, sent = h:request("GET", "http://127.0.0.1:9/?q=" .. string.rep("a", n), {}, "")
        assert.is_nil(ok)
        assert.equal("InvalidParameter", code, msg)
        assert.matches("1048576", msg, 1, true)
        assert.is_nil(status)
        assert.is_false(sent)
      end
      -- the headers count too
      local ok, code = h:request("GET", "http://127.0.0.1:9/", { "X-Big: " .. string.rep("b", 1024 * 1024) }, "")
      assert.is_nil(ok)
      assert.equal("InvalidParameter", code)
      h:close()
    end)

    it("refuses other URL schemes", function()
      local h = assert(core.http { timeout = 1 })
      local ok, code = h:request("GET", "file:///etc/passwd", {}, "")
      assert.is_nil(ok)
      assert.equal("InvalidParameter", code)
      h:close()
    end)

    if _VERSION == "Lua 5.4" then
      it("closes with a to-be-closed variable", function()
        local h = assert(load([[
          local core = ...
          local h <close> = core.http { timeout = 1 }
          return h
        ]]))(core)
        assert.equal("imm.core.http (closed)", tostring(h))
      end)
    end
  end)

  it("raises on misuse rather than failing quietly", function()
    assert.has_error(function() core.sign_v3("NOPE", "POST", "/", {}, {}, "x", "id", "s") end)
    assert.has_error(function() core.sign_v3("ACS3-HMAC-SHA256", "POST", "/", { a = {} }, {}, "x", "id", "s") end)
    assert.has_error(function() core.http("nope") end)
  end)
end)

-- rsa_verify checks an MNS push signature (imm.notification). The keys and
-- certificates are made for the run with the openssl command.
describe("core.rsa_verify", function()
  local fixture = require "helpers.fixture"
  local dir, cert, pubkey, eccert
  local function slurp(p) local s = assert(fixture.read(p)) return s end
  -- the signature of data by the RSA key, as `openssl dgst` makes it
  local function sign(data, alg)
    local f = assert(io.open(dir .. "/data", "wb"))
    f:write(data)
    f:close()
    assert(fixture.sh("openssl dgst -" .. (alg or "sha1") .. " -sign " .. dir .. "/rsa.key -out "
      .. dir .. "/sig " .. dir .. "/data"))
    return slurp(dir .. "/sig")
  end

  setup(function()
    dir = fixture.tmpdir()
    assert(fixture.sh("cd " .. dir .. " && openssl req -x509 -newkey rsa:2048 -nodes -keyout rsa.key"
      .. " -out rsa.crt -days 2 -subj /CN=imm-mns-test >/dev/null 2>&1"
      .. " && openssl pkey -in rsa.key -pubout -out rsa.pub 2>/dev/null"
      .. " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ec.key"
      .. " -out ec.crt -days 2 -subj /CN=imm-ec-test >/dev/null 2>&1"))
    cert, pubkey, eccert = slurp(dir .. "/rsa.crt"), slurp(dir .. "/rsa.pub"), slurp(dir .. "/ec.crt")
  end)
  teardown(function() fixture.sh("rm -rf " .. dir) end)

  it("verifies an RSA-SHA1 signature with the certificate's key, and SHA-256 when asked", function()
    local data = "POST\nmd5\ntext/xml;charset=utf-8\nWed, 25 May 2016 10:46:14 GMT\nx-mns-version:2015-06-06\n/n"
    local sig = sign(data)
    assert.is_true(core.rsa_verify(cert, data, sig, "sha1"))
    assert.is_true(core.rsa_verify(cert, data, sig))            -- SHA-1 is the default
    assert.is_true(core.rsa_verify(pubkey, data, sig, "sha1"))  -- a bare public key too
    assert.is_true(core.rsa_verify(cert, data, sign(data, "sha256"), "sha256"))
  end)

  it("returns false for a signature that does not match, of any size or shape", function()
    local data = "string to sign"
    local sig = sign(data)
    assert.is_false(core.rsa_verify(cert, data .. "!", sig))    -- other data
    assert.is_false(core.rsa_verify(cert, data, sig, "sha256")) -- other digest
    local flipped = sig:sub(1, 10) .. string.char((sig:byte(11) + 1) % 256) .. sig:sub(12)
    assert.is_false(core.rsa_verify(cert, data, flipped))
    assert.is_false(core.rsa_verify(cert, data, ""))
    assert.is_false(core.rsa_verify(cert, data, sig:sub(2)))
    assert.is_false(core.rsa_verify(cert, data, sig .. sig))
    assert.is_false(core.rsa_verify(cert, data, ("\255"):rep(256)))
  end)

  it("returns nil, InvalidCertificate for what is not an RSA certificate or key, never raising", function()
    local sig = sign("x")
    for _, pem in ipairs { "", "not a pem", cert:sub(1, 200), cert:gsub("[A-Za-z]", "A", 40),
        "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n", ("\0"):rep(64), eccert } do
      local ok, code, msg = core.rsa_verify(pem, "x", sig)
      assert.is_nil(ok)
      assert.equal("InvalidCertificate", code)
      assert.is_string(msg)
    end
    local _, _, msg = core.rsa_verify(eccert, "x", sig)
    assert.matches("not an RSA key", msg)
  end)

  it("raises on misuse: arguments that are not strings, an unknown digest", function()
    local sig = sign("x")
    assert.has_error(function() core.rsa_verify(nil, "x", sig) end)
    assert.has_error(function() core.rsa_verify(cert, {}, sig) end)
    assert.has_error(function() core.rsa_verify(cert, "x", false) end)
    assert.has_error(function() core.rsa_verify(cert, "x", sig, "md5") end)
    assert.has_error(function() core.rsa_verify(cert, "x", sig, 1) end)
  end)
end)
