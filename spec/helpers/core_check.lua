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
  return table.concat({ q, auth, q2, sig, hmac, digest, core.percent_encode("a b/é"), red }, "\n")
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
  h:close()
  -- an allocation failure is OutOfMemory or a connection error, never
  -- Cancelled, which says the caller cancelled (and is not retried)
  if body == "Cancelled" then error("an allocation failure reported as Cancelled: " .. tostring(headers)) end
  if not status then return nil, body end
  return status .. " " .. body .. " " .. tostring(headers["content-type"])
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
  local t0 = core.monotonic()
  while true do
    local running, done = M:perform()
    if not running then return nil, done end
    if done then
      for _, id in ipairs(done) do
        if id == pending then
          pending = nil
          local status, body = H:result()
          if not status then return nil, body end
          return status .. " " .. body
        end
      end
    end
    if core.monotonic() - t0 > 5 then
      error("the transfer's completion was lost: no perform reported it within 5 s")
    end
    local ok, code = M:wait(50)
    if not ok then return nil, code end
  end
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
