-- Test fixture: starts tools/fake_cloud.py (a fake STS, ECS metadata service
-- and credentials URI) on loopback, and talks to its control API
-- (/_fake/...). Nothing here reaches beyond 127.0.0.1.
local core = require "imm.core"
local cjson = require "cjson.safe"
local fixture = require "helpers.fixture"

local M = {}

M.SOURCE_ID, M.SOURCE_SECRET = "fake-source-id", "fake-source-secret"
M.OIDC_TOKEN = "fake-oidc-token"
M.SSO_TOKEN = "fake-sso-access-token"  -- the CloudSSO access token the fake cloud accepts
M.ROLE = "EcsRamRoleTest"

--- Starts the fake cloud. Returns an object with url, port, stop() and
-- control helpers (reset, config, fault, log).
function M.start()
  local dir = fixture.tmpdir()
  local cmd = "exec python3 tools/fake_cloud.py --port 0 --quiet --port-file " .. dir .. "/port >"
    .. dir .. "/log 2>&1 & echo $! >" .. dir .. "/pid"
  assert(fixture.sh(cmd), "could not start tools/fake_cloud.py")
  local port
  for _ = 1, 150 do
    local s = fixture.read(dir .. "/port")
    if s and s:match("^%d+") then port = tonumber(s:match("^%d+")) break end
    core.sleep(0.05)
  end
  if not port then
    error("fake_cloud.py did not start:\n" .. (fixture.read(dir .. "/log") or ""))
  end
  local srv = {
    dir = dir, port = port, pid = fixture.read(dir .. "/pid"):match("%d+"),
    url = "http://127.0.0.1:" .. port,
    http = assert(core.http { timeout = 10, connect_timeout = 5 }),
  }
  srv.uri = srv.url .. "/credentials"
  function srv.control(path, body)
    local status, resp = srv.http:request(body and "POST" or "GET", srv.url .. "/_fake/" .. path,
      { "Content-Type: application/json" }, body and cjson.encode(body) or "")
    assert(status == 200, "control " .. path .. " -> " .. tostring(status) .. " " .. tostring(resp))
    return cjson.decode(resp)
  end
  function srv.reset() return srv.control("reset", {}) end
  function srv.config(t) return srv.control("config", t) end
  function srv.fault(rule) return srv.control("faults", rule) end
  --- The request log, optionally only one target ("sts", "imds", "uri").
  function srv.log(target)
    local all = srv.control("log")
    if not target then return all end
    local out = {}
    for _, r in ipairs(all) do
      if r.target == target then out[#out + 1] = r end
    end
    return out
  end
  function srv.stop()
    srv.http:close()
    fixture.kill(srv.pid)
    fixture.sh("rm -rf " .. dir)
  end
  return srv
end

--- Writes `text` to a new file in `dir` and returns its path.
function M.write(dir, name, text)
  local path = dir .. "/" .. name
  fixture.sh("mkdir -p '" .. path:match("^(.*)/[^/]*$") .. "'")
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

--- A clock the test moves: `c.now()` is the real time plus `c.offset`.
function M.clock()
  local c = { offset = 0 }
  function c.now() return os.time() + c.offset end
  return c
end

return M
