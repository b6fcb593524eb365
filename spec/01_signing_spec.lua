-- Layer 1: signing, against vectors computed by the official Alibaba Cloud
-- SDK's own signing code (the vendored copy, spec/fixtures/signing.json, and
-- spec/fixtures/signing_body.json for requests with a form body).
local cjson = require "cjson"
local signer = require "imm.signer"
local core = require "imm.core"
local fixture = require "helpers.fixture"

local VECTORS = os.getenv("IMM_VECTORS") or "spec/fixtures/signing.json"

-- requests with an x-www-form-urlencoded body (tools/sdk-check/vectors.js)
local BODY_VECTORS = os.getenv("IMM_BODY_VECTORS") or "spec/fixtures/signing_body.json"

local function load_vectors(path)
  path = path or VECTORS
  local s = fixture.read(path)
  assert(s, "signing vectors not found at " .. path)
  return cjson.decode(s)
end

-- name -> value of a form body or a query string ('+' is a space in a form)
local function decode_pairs(text, form)
  local function unescape(x)
    if form then x = x:gsub("%+", " ") end
    return (x:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
  end
  local t = {}
  for piece in text:gmatch("[^&]+") do
    local k, v = piece:match("^([^=]*)=?(.*)$")
    t[unescape(k)] = unescape(v)
  end
  return t
end

-- The vendored set, and more vectors from the official code kept apart from
-- it (tools/sdk-check/gen_signing_extra.js): parameter names outside the
-- unreserved set, which openapi-util sorts by raw name.
for _, set in ipairs {
  { name = "signing vectors from the official SDK", path = VECTORS, v3 = 7, v2 = 3 },
  { name = "extra signing vectors from the official SDK", path = "spec/fixtures/signing_extra.json", v3 = 0, v2 = 1 },
} do
  describe(set.name, function()
    local vectors = load_vectors(set.path)
    vectors.v3 = vectors.v3 or {}

    it("has the V3 and V2 cases to check", function()
      assert.is_true(#vectors.v3 >= set.v3)
      assert.is_true(#vectors.v2 >= set.v2)
    end)

    for _, case in ipairs(vectors.v3) do
      it("V3 " .. case.name .. " (" .. case.algorithm .. ")", function()
        local h = case.headers
        local r = assert(signer.sign {
          algorithm = case.algorithm, method = case.method, path = case.path,
          authority = h.host, action = h["x-acs-action"], version = h["x-acs-version"],
          query = case.query, body = "",
          date = fixture.epoch(h["x-acs-date"]), nonce = h["x-acs-signature-nonce"],
          access_key_id = vectors.access_key_id, access_key_secret = vectors.access_key_secret,
          security_token = h["x-acs-security-token"], debug = true,
        })
        assert.equal(case.canonical_request, r.canonical_request)
        assert.equal(case.string_to_sign, r.string_to_sign)
        assert.equal(case.authorization, r.headers.authorization)
        -- the headers we send are exactly the ones the SDK signed
        for k, v in pairs(h) do assert.equal(v, r.headers[k], k) end
        for k in pairs(r.headers) do
          assert.is_true(k == "authorization" or h[k] ~= nil, "unexpected header " .. k)
        end
        -- the URL query is the canonical query
        assert.equal(case.canonical_request:match("^[^\n]*\n[^\n]*\n([^\n]*)\n"), r.query)
      end)
    end

    for _, case in ipairs(vectors.v2) do
      it("V2 " .. case.name, function()
        local p = case.params
        local common = { Action = 1, Version = 1, Format = 1, AccessKeyId = 1, SignatureMethod = 1,
          SignatureVersion = 1, SignatureNonce = 1, Timestamp = 1, SecurityToken = 1 }
        local query = {}
        for k, v in pairs(p) do if not common[k] then query[k] = v end end
        local r = assert(signer.sign {
          algorithm = "v2", method = case.method, authority = "imm.cn-hangzhou.aliyuncs.com",
          action = p.Action, version = p.Version, query = query,
          date = fixture.epoch(p.Timestamp), nonce = p.SignatureNonce,
          access_key_id = p.AccessKeyId, access_key_secret = vectors.access_key_secret,
          security_token = p.SecurityToken, debug = true,
        })
        assert.equal(case.string_to_sign, r.string_to_sign)
        assert.equal(case.signature, r.signature)
        assert.equal("Signature=" .. core.percent_encode(case.signature), r.query:match("Signature=[^&]*$"))
      end)
    end
  end)
end

describe("signing vectors with a form body, from the official SDK", function()
  local vectors = load_vectors(BODY_VECTORS)
  local FORM_TYPE = "application/x-www-form-urlencoded"

  it("has V3, SM3, STS and V2 cases to check", function()
    assert.is_true(#vectors.v3 >= 6)
    assert.is_true(#vectors.v2 >= 4)
  end)

  for _, case in ipairs(vectors.v3) do
    local h = case.headers
    local function request(extra)
      local r = {
        algorithm = case.algorithm, method = case.method, path = case.path,
        authority = h.host, action = h["x-acs-action"], version = h["x-acs-version"],
        query = case.query, date = fixture.epoch(h["x-acs-date"]), nonce = h["x-acs-signature-nonce"],
        access_key_id = vectors.access_key_id, access_key_secret = vectors.access_key_secret,
        security_token = h["x-acs-security-token"], debug = true,
      }
      for k, v in pairs(extra) do r[k] = v end
      return assert(signer.sign(r))
    end

    it("V3 " .. case.name .. " (" .. case.algorithm .. "): the body the SDK wrote", function()
      local r = request { body = case.body, content_type = h["content-type"] }
      assert.equal(case.canonical_request, r.canonical_request)
      assert.equal(case.string_to_sign, r.string_to_sign)
      assert.equal(case.authorization, r.headers.authorization)
      for k, v in pairs(h) do assert.equal(v, r.headers[k], k) end
      for k in pairs(r.headers) do
        assert.is_true(k == "authorization" or h[k] ~= nil, "unexpected header " .. k)
      end
      assert.equal(case.body, r.body)
    end)

    it("V3 " .. case.name .. " (" .. case.algorithm .. "): the same parameters as imm's form", function()
      local r = request { form = case.form }
      assert.same(case.form, decode_pairs(r.body, true))
      assert.equal(FORM_TYPE, r.headers["content-type"])
      local hash = signer.payload_hash(case.algorithm, r.body)
      assert.equal(hash, r.headers["x-acs-content-sha256"])
      -- the SDK's canonical request, with the hash of the body imm writes
      local want = case.canonical_request:gsub(h["x-acs-content-sha256"], hash)
      assert.equal(want, r.canonical_request)
      assert.equal(case.canonical_request:match("^[^\n]*\n[^\n]*\n([^\n]*)\n"), r.query)
    end)
  end

  for _, case in ipairs(vectors.v2) do
    it("V2 " .. case.name .. ": the body parameters are signed, and sent in the body only", function()
      local p = case.params
      local common = { Action = 1, Version = 1, Format = 1, AccessKeyId = 1, SignatureMethod = 1,
        SignatureVersion = 1, SignatureNonce = 1, Timestamp = 1, SecurityToken = 1 }
      local query = {}
      for k, v in pairs(p) do
        if not common[k] and case.form[k] == nil then query[k] = v end
      end
      local r = assert(signer.sign {
        algorithm = "v2", method = case.method, authority = "imm.cn-hangzhou.aliyuncs.com",
        action = p.Action, version = p.Version, query = query, form = case.form,
        date = fixture.epoch(p.Timestamp), nonce = p.SignatureNonce,
        access_key_id = p.AccessKeyId, access_key_secret = vectors.access_key_secret,
        security_token = p.SecurityToken, debug = true,
      })
      assert.equal(case.string_to_sign, r.string_to_sign)
      assert.equal(case.signature, r.signature)
      local sent = decode_pairs(r.query)
      assert.equal(case.signature, sent.Signature)
      for k in pairs(case.form) do assert.is_nil(sent[k], k .. " must not be in the query") end
      for k, v in pairs(query) do assert.equal(v, sent[k], k) end
      assert.same(case.form, decode_pairs(r.body, true))
      assert.equal(FORM_TYPE, r.headers["content-type"])
    end)
  end
end)

describe("percent-encoding (RFC 3986)", function()
  local enc = core.percent_encode
  it("keeps only unreserved characters", function()
    assert.equal("AZaz09-_.~", enc("AZaz09-_.~"))
    assert.equal("%20%21%2A%27%28%29%2B%2F%3D%26%3A%25", enc(" !*'()+/=&:%"))
  end)
  it("encodes UTF-8 bytes, NUL and invalid UTF-8 with upper-case hex", function()
    assert.equal("%E9%A1%B9", enc("项"))
    assert.equal("a%00b", enc("a\0b"))
    assert.equal("%FF%FE", enc("\255\254"))
    assert.equal("", enc(""))
  end)
end)

describe("signer behaviour", function()
  local base = {
    algorithm = "ACS3-HMAC-SHA256", method = "POST", path = "/", authority = "h",
    action = "ListBindings", version = "2020-09-30", query = { ProjectName = "p" },
    date = 0, nonce = "n", access_key_id = "id", access_key_secret = "s",
  }
  local function with(t)
    local c = {}
    for k, v in pairs(base) do c[k] = v end
    for k, v in pairs(t) do c[k] = v end
    return c
  end

  it("changes the signature when the secret, nonce or date changes", function()
    local a = signer.sign(base).headers.authorization
    assert.not_equal(a, signer.sign(with { access_key_secret = "t" }).headers.authorization)
    assert.not_equal(a, signer.sign(with { nonce = "m" }).headers.authorization)
    assert.not_equal(a, signer.sign(with { date = 1 }).headers.authorization)
  end)

  -- issue 24: the secret's two padded HMAC blocks hashed once per secret
  it("signs with an HMAC key made once per secret exactly as with the secret", function()
    for _, alg in ipairs { "ACS3-HMAC-SHA256", "ACS3-HMAC-SM3" } do
      -- empty, short, one block, longer than a block (hashed first), any bytes
      for _, secret in ipairs { "", "s", string.rep("k", 64), string.rep("k", 65), string.rep("\0\255", 100) } do
        local key = assert(core.hmac_key(alg, secret))
        local function sign(s)
          return { core.sign_v3(alg, "POST", "/", { A = "1" }, { host = "h", ["x-acs-date"] = "d" }, "hash", "id",
            s, true) }
        end
        local want = sign(secret)
        assert.is_string(want[2])
        assert.same(want, sign(key))
        assert.same(want, sign(key)) -- and again: the states are copied, never used up
      end
    end
    -- the signer keeps one key: the same for the same secret, a new one when
    -- the credentials (or the algorithm) change
    local k1 = signer.hmac_key("ACS3-HMAC-SHA256", "s1")
    assert.equal("userdata", type(k1))
    assert.equal(k1, signer.hmac_key("ACS3-HMAC-SHA256", "s1"))
    local k2 = signer.hmac_key("ACS3-HMAC-SHA256", "s2")
    assert.not_equal(k1, k2)
    assert.not_equal(k2, signer.hmac_key("ACS3-HMAC-SM3", "s2"))
    assert.equal(signer.sign(with { access_key_secret = "s1" }).headers.authorization,
      signer.sign(with { access_key_secret = "s1" }).headers.authorization)
    -- a key of the other algorithm is a programming error
    assert.has_error(function() core.sign_v3("ACS3-HMAC-SM3", "POST", "/", {}, {}, "h", "id", k1) end)
  end)

  it("formats each second's timestamp afresh (the last one is kept for the same second)", function()
    assert.equal("1970-01-01T00:00:00Z", signer.timestamp(0))
    assert.equal("1970-01-01T00:00:01Z", signer.timestamp(1))
    assert.equal("1970-01-01T00:00:01Z", signer.timestamp(1))
    assert.equal("1970-01-01T00:00:00Z", signer.timestamp(0))
    assert.equal("2024-01-02T03:04:05Z", signer.sign(with { date = 1704164645 }).headers["x-acs-date"])
    assert.equal("1970-01-01T00:00:00Z", signer.sign(with { date = 0 }).headers["x-acs-date"])
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$", signer.timestamp())
  end)

  it("refuses a CR or LF in a signed header value", function()
    local r, code, msg = signer.sign(with { security_token = "STSVALUE\r\nX-Evil: 1" })
    assert.is_nil(r)
    assert.equal("InvalidParameter", code)
    assert.matches("CR, LF or NUL", msg)
    assert.is_nil(msg:find("STSVALUE", 1, true), "the token must not be echoed")
  end)

  it("refuses NUL in a header value and a header name that is not a token", function()
    local q, code = core.sign_v3("ACS3-HMAC-SHA256", "POST", "/", {}, { ["x-acs-a"] = "v\0w" }, "h", "id", "s")
    assert.is_nil(q)
    assert.equal("InvalidParameter", code)
    for _, name in ipairs { "x-acs-a\0b", "x-acs-a b", "x-acs-a:b", "x-acs-\255" } do
      local q2, code2, msg2 = core.sign_v3("ACS3-HMAC-SHA256", "POST", "/", {}, { [name] = "v" }, "h", "id", "s")
      assert.is_nil(q2, name)
      assert.equal("InvalidParameter", code2)
      assert.matches("not an HTTP token", msg2)
    end
  end)

  it("never puts the secret in the signed output", function()
    local r = signer.sign(with { access_key_secret = "SUPERSECRET", debug = true })
    for _, v in pairs(r.headers) do assert.is_nil(v:find("SUPERSECRET", 1, true)) end
    assert.is_nil(r.canonical_request:find("SUPERSECRET", 1, true))
    assert.is_nil(r.string_to_sign:find("SUPERSECRET", 1, true))
  end)

  it("hashes the body with the algorithm's digest", function()
    assert.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
      signer.payload_hash("ACS3-HMAC-SHA256", ""))
    assert.equal("1ab21d8355cfa17f8e61194831e81a8f22bec8c728fefb747ed035eb5082aa2b",
      signer.payload_hash("ACS3-HMAC-SM3", ""))
    assert.equal(core.hash_hex("sha256", "{}"), signer.payload_hash("ACS3-HMAC-SHA256", "{}"))
  end)
end)
