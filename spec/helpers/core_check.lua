-- The operations spec/c/core_check.c sweeps with failing allocations. Each
-- returns a string that says what it produced (the same string each time
-- when nothing fails), or nil and an error code. Loaded with the URL of a
-- loopback server that answers every request with a small JSON body.
local url = ...
local core = require "imm.core"

local ops = {}

-- Operations whose libcurl allocations are not made to fail: libcurl 7.88.1
-- itself divides by zero in its socket hash (under curl_multi_socket_all)
-- when one of its allocations fails while a multi is reused across
-- transfers. imm's, Lua's and OpenSSL's allocations still fail for them.
ops.spare_curl = { multi = true, fresh_multi = true, parked = true }

local function canon(v)
  if type(v) ~= "table" then return type(v) .. ":" .. tostring(v) end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  local out = {}
  for i, k in ipairs(keys) do out[i] = tostring(k) .. "=" .. canon(v[k]) end
  return "{" .. table.concat(out, ",") .. "}"
end

function ops.sign()
  local q, auth = core.sign_v3("ACS3-HMAC-SHA256", "POST", "/",
    { ProjectName = "p", ["A b"] = "x/y", NextToken = "t+=" },
    { host = "imm.cn-hangzhou.aliyuncs.com", ["x-acs-action"] = "ListBindings",
      ["x-acs-date"] = "2024-01-02T03:04:05Z" },
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "id", "secret")
  if not q then return nil, auth end
  local q2, sig = core.sign_v2("POST", { Action = "ListBindings", ProjectName = "p", ["Project{x}"] = "v" }, "secret")
  if not q2 then return nil, sig end
  local hmac, hcode = core.hmac_hex("sha256", "key", "data")
  if not hmac then return nil, hcode end
  local digest, dcode = core.hash_hex("sm3", "data")
  if not digest then return nil, dcode end
  local red = core.redact("a=s%2Fx&b=s/x", "s/x")
  -- the same V3 signature with the secret as an HMAC key (issue 24)
  local key, kcode = core.hmac_key("ACS3-HMAC-SHA256", "secret")
  if not key then return nil, kcode end
  local q3, auth3 = core.sign_v3("ACS3-HMAC-SHA256", "POST", "/",
    { ProjectName = "p", ["A b"] = "x/y", NextToken = "t+=" },
    { host = "imm.cn-hangzhou.aliyuncs.com", ["x-acs-action"] = "ListBindings",
      ["x-acs-date"] = "2024-01-02T03:04:05Z" },
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "id", key)
  if not q3 then return nil, auth3 end
  return table.concat({ q, auth, q2, sig, hmac, digest, core.percent_encode("a b/é"), red, q3, auth3 }, "\n")
end

-- An RSA certificate made for this check, and its key's SHA-1 signature of
-- RSA_DATA (the key was thrown away): imm.core.rsa_verify, as MNS pushes use it.
local RSA_CERT = [[
-----BEGIN CERTIFICATE-----
MIIDEzCCAfugAwIBAgIUbSu3Q15C/iAQq1NbZMLfMsS/eCswDQYJKoZIhvcNAQEL
BQAwGTEXMBUGA1UEAwwOaW1tLWNvcmUtY2hlY2swHhcNMjYxMjA2MjAyMzQ2WhcN
MzYxMjAzMjAyMzQ2WjAZMRcwFQYDVQQDDA5pbW0tY29yZS1jaGVjazCCASIwDQYJ
KoZIhvcNAQEBBQADggEPADCCAQoCggEBAIUyTxlgKZQuqbJj8Ti/MZ54h3A3F7/+
sSPXfnaY7nKwPQ7nFWEOlFCwa22By4+1e7NfVnfmz8mDgb8/4shelAVyo97FR36W
38qWnJ2h/JSxChxzDpCHowwfaH5SpELRGPNzKuew2lTa9sZrs2pEqBFGULnH6B30
P6ythrsyyxLpt79wwXfzO+RkKJ7Qmyxz282w0Ydjg9VPDMmuVbfIbripZo/k02fM
XUAs+/zLc2zE9CX+fVWLRVEcSDSWZSUifob94n/Lz17IYynxSAcOyLBA4XLX1HNK
+GuqqrIChJuJRds5iRQe2lqdpB5+37NVq0ymwjRZslW0oxf5eheyzjsCAwEAAaNT
MFEwHQYDVR0OBBYEFDt/4Hm/4i6Y/+fxEQtguMD3tLYLMB8GA1UdIwQYMBaAFDt/
4Hm/4i6Y/+fxEQtguMD3tLYLMA8GA1UdEwEB/wQFMAMBAf8wDQYJKoZIhvcNAQEL
BQADggEBAC402Swh5V2/Ssz0NEbQoU+/wWWSqtJ13k2+U/Dl33VaqJpieBCPvImG
g0ZYkty1vD6ZTCbKd6E0vzJG3JP1Tj0hxk598TaGlKNRsDTj+gB5vo82sOo6xp0V
omsl5RNc5xaj8+43QjaThZXE05y4dsGjYTvQWWAmiKK2PIajGyRn6uEfwIf5aV4R
vTDd48tKgXkGRtVciVJVgeHL3knHxVifdhZxBaP+7B6H+evcSVd2plw+mL2+KaqC
LfDGuwsc3RjEdan2FgFBUaxOVrmxXvSZhfUmFLomH8r5Xsmr2W37g8Yvrh764wip
OJ8+gCkbjCsi3br3quKzFjNn+nUHGJk=
-----END CERTIFICATE-----
]]
local RSA_DATA = "POST\nmd5\n/notifications"
local RSA_SIG = (table.concat {
  "398f055d5f5082b960202f1fcef00fa0db6ccea31ac07a002f8fa2e33b26ba3a622d2bb466ef91a8d284133e0fa0c112",
  "834f17d51a2e107664671e15dc1043e04575aa3164a4ad8f5689966c168bccb853b99d911c1933f36b321e7ba765cc40",
  "f6143fc6c3d8dc86ee7d48d37512b02eedd475371b944fb9664955521e0d4b5267a07660a604dcd700287452660635fb",
  "56e8892993dbed4c02cee7844010c672f416ae8f19287bd373c356993e27e0603f153e4c8ccc659107a1b86fc5b08519",
  "169779a03d10d4bfe70060b00a1cf9c09454a66a8b2953d3fa34a3f09015e0d4e09eefe784e1e76e7ecf4b71dfdfa933",
  "1a1926d0105fa7098d948dc5d5a53f6e",
}):gsub("%x%x",
  function(h) return string.char(tonumber(h, 16)) end)

-- A good signature may come out unverified when OpenSSL's allocation fails
-- inside the RSA operation, which it reports as a bad signature (failing
-- closed: a push is refused and sent again); that counts as an error here.
-- A bad signature must never verify.
function ops.rsa()
  local good, code = core.rsa_verify(RSA_CERT, RSA_DATA, RSA_SIG, "sha1")
  if good == nil then return nil, code end
  if good == false then return nil, "NotVerified" end
  local bad, bcode = core.rsa_verify(RSA_CERT, RSA_DATA .. "!", RSA_SIG, "sha1")
  if bad == nil then return nil, bcode end
  return tostring(good) .. " " .. tostring(bad)
end

local DOC = '{"RequestId":"r","NextToken":"n","Bindings":[' ..
  '{"ProjectName":"p","URI":"oss://b/\\u4e2d\\"x\\"","Reason":null,"N":1.5e3,"L":[1,2,[3,{"d":false}]]},' ..
  '{"ProjectName":"p","URI":"oss://c/","Reason":"r","N":-0.25,"L":[]}]}'

function ops.json()
  local v, err = core.json_decode(DOC, "NULL")
  if v == nil then return nil, err end
  return canon(v)
end

function ops.http()
  local h, code = core.http { timeout = 5, connect_timeout = 5, user_agent = "core-check" }
  if not h then return nil, code end
  local status, body, headers = h:request("POST", url .. "/x?a=1", { "X-A: 1", "Accept: application/json" }, "body")
  if status then
    -- again with a header table, the reply kept in the handle and read
    -- from there (issue 24)
    local st2, seq = h:request("POST", url .. "/x?a=1", { ["X-A"] = "1", Accept = "application/json" }, "body",
      nil, nil, true)
    if not st2 then
      h:close()
      return nil, seq
    end
    local v, derr = h:decode("NULL", nil, nil, seq)
    local kept = st2 .. " " .. h:body(seq) .. " " .. tostring(h:headers(seq)["content-type"]) .. " "
      .. tostring(v == nil and derr or canon(v))
    if kept ~= status .. " " .. body .. " " .. tostring(headers["content-type"]) .. " "
      .. tostring(core.json_decode(body, "NULL") == nil and select(2, core.json_decode(body, "NULL"))
        or canon(core.json_decode(body, "NULL"))) then
      error("the kept reply differs from the pushed one: " .. kept)
    end
  end
  h:close()
  -- an allocation failure is OutOfMemory or a connection error, never
  -- Cancelled, which says the caller cancelled (and is not retried)
  if body == "Cancelled" then error("an allocation failure reported as Cancelled: " .. tostring(headers)) end
  if not status then return nil, body end
  return status .. " " .. body .. " " .. tostring(headers["content-type"])
end

-- Waits for transfer `id` on multi m to be reported done (then calls
-- reported()), and returns h's result.
local function await(m, h, id, reported)
  local t0 = core.monotonic()
  while true do
    local running, done = m:perform()
    if not running then return nil, done end
    if done then
      for _, d in ipairs(done) do
        if d == id then
          reported()
          local status, body = h:result()
          if not status then return nil, body end
          return status .. " " .. body
        end
      end
    end
    if core.monotonic() - t0 > 5 then
      error("the transfer's completion was lost: no perform reported it within 5 s")
    end
    local ok, code = m:wait(50)
    if not ok then return nil, code end
  end
end

-- The multi and its handle live across calls: a transfer that an
-- allocation failure interrupted must still be reported done by a later
-- perform (a lost completion would strand its task forever).
local M, H, pending
function ops.multi()
  if not M then
    local m, code = core.multi()
    if not m then return nil, code end
    M = m
  end
  if not H then
    local h, code = core.http { timeout = 5, connect_timeout = 5 }
    if not h then return nil, code end
    H = h
  end
  if not pending then
    local id, code = M:add(H, "GET", url .. "/y", { "X-B: 2" }, "")
    if not id then return nil, code end
    pending = id
  end
  return await(M, H, pending, function() pending = nil end)
end

-- The parked path (issue 21, item 10): a transfer on the shared multi that
-- ends during a blocking request on the same multi is parked, detached
-- from libcurl; the next perform must report it even when an allocation
-- fails, as parallel listings rely on.
local PH, BH, parked
function ops.parked()
  local m, code = core.shared_multi()
  if not m then return nil, code end
  if not PH then
    PH, code = core.http { timeout = 5, connect_timeout = 5 }
    if not PH then return nil, code end
  end
  if not BH then
    BH, code = core.http { timeout = 5, connect_timeout = 5, shared = true }
    if not BH then return nil, code end
  end
  if not parked then
    local id, acode = m:add(PH, "GET", url .. "/parked", { "X-C: 3" }, "")
    if not id then return nil, acode end
    parked = id
    -- blocking requests on the same multi until that transfer has ended
    -- (count() leaves out a parked transfer)
    for _ = 1, 50 do
      if m:count() == 0 then break end
      local status, bcode = BH:request("GET", url .. "/blocking", {}, "")
      if not status then return nil, bcode end
    end
    if m:count() ~= 0 then error("the transfer did not end during 50 blocking requests") end
  end
  return await(m, PH, parked, function() parked = nil end)
end

-- A new multi for each call, driven as imm.async drives its multi: a
-- failed perform is not the end (issue 21, item 11: a failed allocation in
-- the socket callback made libcurl give the multi up, and then every
-- transfer on it reported Cancelled, the caller's own cancel).
function ops.fresh_multi()
  local m, code = core.multi()
  if not m then return nil, code end
  local h, hcode = core.http { timeout = 5, connect_timeout = 5 }
  if not h then m:close() return nil, hcode end
  local result, rcode
  local id, acode = m:add(h, "GET", url .. "/fresh", {}, "")
  if not id then rcode = acode end
  local t0 = core.monotonic()
  while id and not result and not rcode do
    local running, done = m:perform()
    for _, d in ipairs(running and done or {}) do
      if d == id then
        local status, body, msg = h:result()
        if body == "Cancelled" then error("an allocation failure reported as Cancelled: " .. tostring(msg)) end
        if status then result = status .. " " .. body else rcode = body end
      end
    end
    if not result and not rcode then
      if core.monotonic() - t0 > 5 then error("the transfer's completion was lost") end
      m:wait(50)
    end
  end
  h:close()
  m:close()
  return result, rcode
end

function ops.close()
  if H then H:close() end
  if M then M:close() end
  if PH then PH:close() end
  if BH then BH:close() end
end

return ops
