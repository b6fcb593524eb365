-- imm.stub inside nginx, for spec/20_stub_spec.lua: a client made in a
-- content handler (the cosocket transport) answered by a stub, through a
-- typed call, a retried error, a pager, a parallel listing and a waiter
-- that sleeps with ngx.sleep. Answers with what it saw, as JSON.
local cjson = require "cjson"
local imm = require "imm"
local stubber = require "imm.stub"

local ngx = ngx
local _M = {}

local KEY = { ProjectName = "p", DatasetName = "d", URI = "oss://bucket/" }

local function binding(state, uri)
  return { ProjectName = "p", DatasetName = "d", URI = uri or "oss://bucket/", State = state }
end

-- Counts the waits that go to ngx.sleep (with real_sleep, the cosocket
-- transport's own sleep), so the worker is never blocked.
local function run(out)
  -- a closed port: only the stub answers
  local c = assert(imm.new { endpoint = "http://127.0.0.1:9", access_key_id = "id", access_key_secret = "secret" })
  out.transport = c.transport.name
  local stub = stubber.new(c, { ordered = false, real_sleep = true })

  stub:add_error("GetBinding", "ServiceUnavailable", "busy", 503, { expected_params = KEY })
  stub:add_response("GetBinding", { RequestId = "r1", Binding = binding("Running") }, KEY)
  local res, err = c:get_binding(KEY)
  out.get = res and res.Binding.State or tostring(err)

  for i = 1, 2 do
    stub:add_response("ListTasks",
      { RequestId = "t", Tasks = { { TaskId = "t" .. i } }, NextToken = i == 1 and "n1" or nil },
      { ProjectName = "p", MaxResults = stubber.ANY, NextToken = i == 2 and "n1" or nil })
  end
  out.tasks = {}
  for t, e in c:tasks { ProjectName = "p" } do
    out.tasks[#out.tasks + 1] = t and t.TaskId or tostring(e)
  end

  for _, ds in ipairs { "d2", "d1" } do
    stub:add_response("ListBindings", { RequestId = "b", Bindings = { binding("Ready", "oss://" .. ds .. "/") } },
      { ProjectName = "p", DatasetName = ds, MaxResults = stubber.ANY })
  end
  stub:add_response("ListDatasets", { RequestId = "d", Datasets = { { DatasetName = "d1" }, { DatasetName = "d2" } } },
    { ProjectName = "p", MaxResults = stubber.ANY })
  out.parallel = {}
  for b, e in c:bindings({ ProjectName = "p" }, { concurrency = 3 }) do
    out.parallel[#out.parallel + 1] = b and b.URI or tostring(e)
  end
  table.sort(out.parallel)

  stub:add_response("GetBinding", { RequestId = "w1", Binding = binding("Ready") }, KEY)
  stub:add_response("GetBinding", { RequestId = "w2", Binding = binding("Running") }, KEY)
  local b, werr = c:wait_binding(KEY, { interval = 0.05 })
  out.waited = b and b.State or tostring(werr)
  out.sleeps = stub:sleeps()
  out.pending = #stub:pending()
  out.errors = #stub:errors()
end

function _M.run()
  local sleep, out = ngx.sleep, { ngx_sleeps = {} }
  ngx.sleep = function(s)  -- luacheck: ignore 122
    out.ngx_sleeps[#out.ngx_sleeps + 1] = s
    return sleep(s)
  end
  local ok, e = pcall(run, out)
  ngx.sleep = sleep  -- luacheck: ignore 122
  if not ok then error(e) end
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(out))
end

return _M
