-- Start-up: `require "imm"` plus `imm.new` loads only what a first call
-- needs; the rest (parallel listings, async tasks, waiters, the credential
-- providers not asked for) loads on first use, with every method still there.
-- Each check runs in a fresh interpreter (this run's, LUA_PATH/LUA_CPATH
-- inherited), since this process has loaded everything already.
local LUA = arg[-1] or "lua"

local function run(code)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local p = assert(io.popen(string.format("%s %s 2>&1", LUA, path)))
  local out = p:read("*a")
  p:close()
  os.remove(path)
  return out
end

local PRELUDE = [[
local imm = require "imm"
local c = assert(imm.new{ region = "cn-hangzhou", endpoint = "http://127.0.0.1:9",
  access_key_id = "AKIDEXAMPLE", access_key_secret = "not-a-secret" })
local function loaded()
  local t = {}
  for k in pairs(package.loaded) do if k:match("^imm") then t[#t + 1] = k end end
  table.sort(t)
  return table.concat(t, " ")
end
]]

describe("start-up", function()
  it("loads no parallel, async, waiter, pager or unused credential provider code for require plus new", function()
    local out = run(PRELUDE .. "print(loaded())")
    assert.matches("imm%.client", out)
    for _, m in ipairs{ "imm.parallel", "imm.async", "imm.waiter", "imm.stub", "imm.notification", "imm.pager",
                        "imm.credentials.ecs_ram_role", "imm.credentials.cli_profile",
                        "imm.credentials.external", "imm.credentials.oidc_role_arn",
                        -- explicit keys need only the static provider, not the chain nor base's HTTP and files
                        "imm.credentials.base", "imm.credentials.env", "imm.credentials.chain",
                        -- no proxy option; the call options, the JSON shape checks and the hints on first use
                        "imm.proxy", "imm.callopts", "imm.shapes" } do
      assert.is_nil(out:find(m .. " ", 1, true) or out:find(m .. "\n", 1, true), m .. " loaded: " .. out)
    end
  end)

  it("compiles no schema for require plus new, and only the called action's at its first call", function()
    local out = run(PRELUDE .. [[
print("start: " .. loaded() .. " ")
-- a valid call, refused at once (nothing listens on port 9)
local c0 = assert(imm.new{ region = "cn-hangzhou", endpoint = "http://127.0.0.1:9", max_retries = 0,
  access_key_id = "AKIDEXAMPLE", access_key_secret = "not-a-secret" })
local _, err = c0:list_bindings{ ProjectName = "p" }
print("err:" .. tostring(err and err.code))
local built = {}
for name in pairs(require("imm.operations").actions) do built[#built + 1] = name end
table.sort(built)
print("built:" .. table.concat(built, ","))
print("after: " .. loaded() .. " ")
]])
    local start = out:match("start: [^\n]*") or ""
    for _, m in ipairs{ "imm.api", "imm.schema" } do
      assert.is_nil(start:find(" " .. m .. " ", 1, true), m .. " loaded: " .. out)
    end
    assert.matches("err:ConnectionFailed", out, 1, true)
    -- the two hand-written tables (StopBinding, ResumeBinding) and the one called
    assert.matches("built:ListBindings,ResumeBinding,StopBinding\n", out, 1, true)
    local after = out:match("after: [^\n]*") or ""
    -- a call without options, JSON parameters or a bad name needs neither
    for _, m in ipairs{ "imm.api", "imm.callopts", "imm.shapes" } do
      assert.is_nil(after:find(" " .. m .. " ", 1, true), m .. " loaded: " .. out)
    end
  end)

  it("loads the call options, the shape checks and the hints when a call needs them", function()
    local out = run(PRELUDE .. [[
-- the transport's cap is the longest a call may take, as callopts says (client.lua keeps a copy)
print("max:" .. tostring(c.transport.options.timeout == require("imm.callopts").MAX_SECONDS))
local _, err = c:list_bindings({ ProjectName = "p" }, { max_retries = 99 })
print("opts:" .. tostring(err and err.code) .. " shapes:" .. tostring(package.loaded["imm.shapes"] ~= nil))
_, err = c:list_bindings{ ProjectNam = "p" }
print("hint:" .. tostring(err and err.message))
_, err = c:create_batch{ ProjectName = "p", Input = { OSS = 1 }, Actions = {} }
print("json:" .. tostring(err and err.message))
_, err = imm.new{ region = "cn-hangzhou", proxy = true }
print("proxy:" .. tostring(err and err.code) .. " " .. tostring(package.loaded["imm.proxy"] ~= nil))
]])
    assert.matches("max:true", out, 1, true)
    assert.matches("opts:InvalidParameter shapes:false", out, 1, true)
    assert.matches('hint:ListBindings: unknown parameter "ProjectNam" (did you mean "ProjectName"?)', out, 1, true)
    assert.matches("json:CreateBatch: Input.OSS must be an object, got 1", out, 1, true)
    assert.matches("proxy:InvalidParameter true", out, 1, true)
  end)

  it("builds each action's table once, the same one imm.api holds, with the hand-written checks", function()
    local out = run(PRELUDE .. [[
local ops = require "imm.operations"
local early = ops.actions.CreateBinding
local api = require "imm.api"
local n, same = 0, 0
for name, def in pairs(api.actions) do
  n = n + 1
  if ops.actions[name] == def then same = same + 1 end
end
print("actions:" .. n .. " same:" .. same .. " early:" .. tostring(early == api.actions.CreateBinding))
-- checks added to a table imm.api built first, and to one built by operations
print("uri:" .. tostring(api.actions.GetBinding.params.URI.check ~= nil)
  .. " create:" .. tostring(early.params.URI.check ~= nil)
  .. " max:" .. tostring(api.actions.ListTasks.params.MaxResults.max))
print("names:" .. tostring(ops.action_names().ListTasks) .. " " .. tostring(ops.action_names().StopBinding))
print("models:" .. tostring(ops.models == api.models)
  .. " shape:" .. ops.describe_shape(api.actions.CreateBatch.params.Actions.type))
print("statuses:" .. tostring(require("imm.waiter").task_statuses == api.task_statuses))
]])
    assert.matches("actions:105 same:105 early:true", out, 1, true)
    assert.matches("uri:true create:true max:100", out, 1, true)
    assert.matches("names:true true", out, 1, true)
    assert.matches("models:true shape:array of CreateBatchRequestActions", out, 1, true)
    assert.matches("statuses:true", out, 1, true)
  end)

  it("still has every method on the client and the module, loading the code on first use", function()
    local out = run(PRELUDE .. [[
local actions = require "imm.actions"
local missing = {}
for m in pairs(actions._actions) do
  if type(c[m]) ~= "function" or type(imm[m]) ~= "function" then missing[#missing + 1] = m end
end
for m in pairs(actions._pagers) do
  if type(c[m]) ~= "function" or type(c["all_" .. m]) ~= "function" then missing[#missing + 1] = m end
end
for _, m in ipairs{ "wait", "wait_task", "wait_binding", "bindings", "all_bindings", "close" } do
  if type(c[m]) ~= "function" then missing[#missing + 1] = m end
end
print("missing:" .. table.concat(missing, ","))
print("spawn:" .. type(imm.spawn) .. " async:" .. type(imm.async) .. " poll:" .. type(imm.async.poll))
print("ecs:" .. type(imm.credentials.ecs_ram_role) .. " chain:" .. type(imm.credentials.chain))
-- a parallel listing's bad input is reported by the parallel code, loaded now
local it = c:bindings({ ProjectName = "p" }, { concurrency = 4, max_items = -1 })
local v, err = it()
print("first:" .. tostring(v) .. " " .. tostring(err and err.code))
print("parallel:" .. tostring(package.loaded["imm.parallel"] ~= nil))
local t = imm.spawn(function() return 42 end)
while imm.poll(0) > 0 do end
print("task:" .. tostring(select(2, t:result())))
]])
    assert.matches("missing:\n", out, 1, true)
    assert.matches("spawn:function async:table poll:function", out, 1, true)
    assert.matches("ecs:function chain:function", out, 1, true)
    assert.matches("first:false InvalidParameter", out, 1, true)
    assert.matches("parallel:true", out, 1, true)
    assert.matches("task:42", out, 1, true)
  end)

  it("loads a generated actions module that carries no comments (they live in actions_meta.lua)", function()
    local f = assert(io.open("lua/imm/actions.lua"))
    local n, comments = 0, 0
    for line in f:lines() do
      n = n + 1
      if n > 1 and line:match("^%s*%-%-") then comments = comments + 1 end
    end
    f:close()
    assert.equal(0, comments)
    local m = assert(io.open("lua/imm/actions_meta.lua"))
    local meta = m:read("*a")
    m:close()
    assert.matches("@classmod imm.actions", meta, 1, true)
    assert.matches("---@return imm.ListBindingsResponse|nil res", meta, 1, true)
  end)

  it("installs precompiled modules for Lua 5.2-5.4, with the sources beside them, and they load", function()
    local name = LUA:match("[^/]*$")
    if name == "luajit" or name == "lua5.1" then
      -- they share share/lua/5.1 and refuse each other's bytecode: sources there by default
      return
    end
    local dest = os.tmpname()
    os.remove(dest)
    local make = string.format("make -s install-lua LUA=%s DESTDIR=%s PREFIX=/p >/dev/null 2>&1", LUA, dest)
    local out = run(string.format("local ok = os.execute(%q) os.exit((ok == true or ok == 0) and 0 or 1)", make))
    local dir = dest .. "/p/share/lua/" .. name:match("%d%.%d")
    local function head(path)
      local f = io.open(path, "rb")
      if not f then return nil end
      local s = f:read(4)
      f:close()
      return s
    end
    local client, src, meta = head(dir .. "/imm/client.lua"), head(dir .. "/imm/lua-src/imm/client.lua"),
      head(dir .. "/imm/actions_meta.lua")
    local loads = run(string.format([[package.path = "%s/?.lua"
package.cpath = "%s/p/lib/lua/%s/?.so"
local imm = require "imm"
local c = assert(imm.new{ region = "cn-hangzhou", access_key_id = "a", access_key_secret = "b" })
print(imm._VERSION, type(c.list_bindings))]],
      dir, dest, name:match("%d%.%d")))
    os.execute("rm -rf " .. dest)
    assert.equal("", out)
    assert.equal("\27Lua", client)
    assert.equal("--- ", src)  -- the source, as in lua/
    assert.equal("-- G", meta)
    assert.matches("^%d+%.%d+%.%d+\tfunction\n$", loads)
  end)
end)
