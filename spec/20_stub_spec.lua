-- Layer 20: the in-process stub (imm.stub). Its clients have no server to
-- talk to (the endpoint is a closed loopback port): every reply comes from
-- the stub's queue, through the client's own validation, signing, retries
-- and decoding. One test takes the stub away and talks to the local server.
local imm = require "imm"
local api = require "imm.api"
local stubber = require "imm.stub"
local fixture = require "helpers.fixture"

local ANY = stubber.ANY
local KEY = { ProjectName = "p", DatasetName = "d", URI = "oss://bucket/" }

local function client(o)
  local t = { endpoint = "http://127.0.0.1:9", access_key_id = "stub-id", access_key_secret = "stub-secret-42",
    max_retries = 3 }
  for k, v in pairs(o or {}) do t[k] = v end
  return assert(imm.new(t))
end

local function binding(state, uri)
  return { ProjectName = "p", DatasetName = "d", URI = uri or "oss://bucket/", State = state }
end

local function raises(pattern, fn, ...)
  local ok, e = pcall(fn, ...)
  assert.is_false(ok, "it did not raise")
  assert.truthy(tostring(e):find(pattern, 1, true), tostring(e))
  return tostring(e)
end

describe("imm.api response fields", function()
  it("lists every action's top-level response fields, RequestId in each", function()
    local n = 0
    for name, def in pairs(api.actions) do
      n = n + 1
      assert.is_table(def.response, name)
      local seen = {}
      for _, f in ipairs(def.response) do seen[f] = true end
      assert.is_true(seen.RequestId, name)
    end
    assert.equal(105, n)
    assert.same({ "Bindings", "NextToken", "RequestId" }, api.actions.ListBindings.response)
  end)
end)

describe("imm.stub", function()
  it("answers a typed method from the queue, after validation and signing", function()
    local lines = {}
    local c = client { debug = function(l) lines[#lines + 1] = l end }
    local stub = stubber.new(c)
    stub:add_response("GetBinding", { RequestId = "r1", Binding = binding("Running") }, KEY)
    local res, err = c:get_binding(KEY)
    assert.is_nil(err)
    assert.equal("Running", res.Binding.State)
    assert.equal("r1", res.RequestId)
    -- signed: the client wrote its canonical request for the stubbed call
    assert.truthy(table.concat(lines, "\n"):find("x-acs-action:GetBinding", 1, true))
    assert.same({ { action = "GetBinding", params = KEY } }, stub:calls())
    stub:assert_no_pending_responses()
    assert.same({}, stub:pending())
  end)

  it("refuses bad parameters before the stub sees anything", function()
    local c = client()
    local stub = stubber.new(c)
    stub:add_response("GetBinding", { RequestId = "r1", Binding = binding("Running") })
    local res, err = c:get_binding { ProjectName = "p", DatasetName = "d", URI = "http://x/" }
    assert.is_nil(res)
    assert.equal("InvalidParameter", err.code)
    assert.same({}, stub:calls())
    assert.equal(1, #stub:pending())
  end)

  describe("checks queued replies against the API description", function()
    it("refuses an unknown response field when strict, naming the fields", function()
      local stub = stubber.new(client())
      local msg = raises('ListBindings has no response field "Binding" (did you mean "Bindings"?)',
        stub.add_response, stub, "ListBindings", { RequestId = "r", Binding = {} })
      assert.truthy(msg:find("Bindings, NextToken, RequestId", 1, true), msg)
      raises('ListBindingz is not an action of the API description (did you mean "ListBindings"?)',
        stub.add_response, stub, "ListBindingz", {})
      raises('GetBinding has no parameter "Uri" (did you mean "URI"?)',
        stub.add_response, stub, "GetBinding", {}, { Uri = "oss://bucket/" })
      raises("a response given as text must be a JSON object", stub.add_response, stub, "GetBinding", "[1]")
      raises("status must be an HTTP status", stub.add_error, stub, "GetBinding", "X", "m", 1000)
      assert.same({}, stub:pending())
    end)

    it("allows unknown fields and actions with strict = false, as the escape hatch does", function()
      local c = client()
      local stub = stubber.new(c, { strict = false })
      stub:add_response("GetBinding", { RequestId = "r", Binding = binding("Ready"), NewField = { 1, 2 } })
      stub:add_response("FutureAction", { RequestId = "r2", Answer = 42 }, { Count = 3, Deep = { A = true } })
      local res = assert(c:get_binding(KEY))
      assert.same({ 1, 2 }, res.NewField)
      res = assert(c:call("FutureAction", { Count = 3, Deep = { A = true } }))
      assert.equal(42, res.Answer)
      stub:assert_no_pending_responses()
    end)

    it("decodes a reply given as JSON text with the client's decoder", function()
      local c = client { big_integers = "string" }
      local stub = stubber.new(c)
      stub:add_response("SimpleQuery", '{"RequestId":"r","Files":[],"TotalHits":12345678901234567890}')
      local res = assert(c:simple_query { ProjectName = "p", DatasetName = "d" })
      assert.equal("12345678901234567890", res.TotalHits)
    end)
  end)

  describe("a request that matches no queued reply", function()
    it("fails with StubMismatch, once (not retried), and is reported", function()
      local c = client()
      local stub = stubber.new(c)
      stub:add_response("ListBindings", { RequestId = "r", Bindings = {} })
      local res, err = c:get_binding(KEY)
      assert.is_nil(res)
      assert.equal("StubMismatch", err.code)
      assert.equal(1, err.attempts)
      assert.truthy(err.message:find("expected a call of ListBindings, got GetBinding", 1, true), err.message)
      assert.equal(1, #stub:errors())
      assert.equal(1, #stub:pending())
      local msg = raises("1 queued reply was not used", stub.assert_no_pending_responses, stub)
      assert.truthy(msg:find("1 request found no queued reply", 1, true), msg)
      assert.truthy(msg:find("ListBindings (response)", 1, true), msg)
    end)

    it("names the parameter that differs, at any depth", function()
      local c = client()
      local stub = stubber.new(c)
      local sources = { { URI = "oss://bucket/a.mp4" } }
      stub:add_response("CreateMediaConvertTask", { RequestId = "r", TaskId = "t" },
        { ProjectName = "p", Sources = sources, Targets = { { URI = "oss://bucket/o.mp4", Container = "mp4" } } })
      local res, err = c:create_media_convert_task { ProjectName = "p", Sources = sources,
        Targets = { { URI = "oss://bucket/o.mp4", Container = "mp3" } } }
      assert.is_nil(res)
      assert.equal("StubMismatch", err.code)
      assert.truthy(err.message:find('Targets[1].Container: expected "mp4", got "mp3"', 1, true), err.message)
      res, err = c:call("CreateMediaConvertTask", { ProjectName = "p", Sources = sources,
        Targets = { { URI = "oss://bucket/o.mp4", Container = "mp4" } }, UserData = "u" })
      assert.is_nil(res)
      assert.truthy(err.message:find('UserData was sent ("u") but not expected', 1, true), err.message)
      assert.equal(2, #stub:errors())
    end)

    it("fails when nothing is queued", function()
      local c = client()
      local stub = stubber.new(c)
      local _, err = c:list_projects()
      assert.equal("StubMismatch", err.code)
      assert.truthy(err.message:find("ListProjects was called, but no reply is queued", 1, true))
      raises("ListProjects was called, but no reply is queued", stub.assert_no_pending_responses, stub)
    end)

    it("matches ANY, numbers by value and JSON parameters decoded, with V2 signatures and form bodies", function()
      local c = client { signature_algorithm = "v2", security_token = "STS.secret-token-77" }
      local stub = stubber.new(c)
      stub:add_response("DetectImageLabels", { RequestId = "r", Labels = {} },
        { ProjectName = "p", SourceURI = ANY, Threshold = 0.7, CredentialConfig = { Chain = ANY } })
      stub:add_response("DeleteBatch", { RequestId = "r2" }, { ProjectName = "p", Id = "b-1" })
      assert(c:detect_image_labels { ProjectName = "p", SourceURI = "oss://bucket/a.jpg", Threshold = 0.7,
        CredentialConfig = '{"Chain":[{"Role":"r"}]}' })
      assert(c:delete_batch { ProjectName = "p", Id = "b-1" })
      stub:assert_no_pending_responses()
      local calls = stub:calls()
      assert.equal("b-1", calls[2].params.Id)
      assert.is_nil(calls[1].params.Signature)
      -- neither the secret nor the token is kept
      local text = require("imm.core").json_encode(calls)
      assert.is_nil(text:find("stub-secret-42", 1, true))
      assert.is_nil(text:find("secret-token-77", 1, true))
    end)
  end)

  describe("errors", function()
    it("come back in the service's error shape", function()
      local c = client()
      local stub = stubber.new(c)
      stub:add_error("GetBinding", "ResourceNotFound", "no such binding", 404,
        { request_id = "rq-1", host_id = "h", recommend = "https://help" })
      local res, err = c:get_binding(KEY)
      assert.is_nil(res)
      assert.equal("ResourceNotFound", err.code)
      assert.equal("no such binding", err.message)
      assert.equal(404, err.status)
      assert.equal("rq-1", err.request_id)
      assert.equal("h", err.host_id)
      assert.equal("https://help", err.recommend)
      assert.is_false(err.retryable)
    end)

    it("are retried by the client's rules, with the waits recorded and skipped", function()
      local c = client()
      local stub = stubber.new(c)
      stub:add_error("ListBindings", "Throttling.User", "slow down", 429, { retry_after = 0.25 })
      stub:add_error("ListBindings", "ServiceUnavailable", "busy", 503)
      stub:add_response("ListBindings", { RequestId = "r", Bindings = { binding("Ready") } })
      local res = assert(c:list_bindings { ProjectName = "p" })
      assert.equal("Ready", res.Bindings[1].State)
      assert.equal(3, #stub:calls())
      local sleeps = stub:sleeps()
      assert.equal(2, #sleeps)
      assert.equal(0.25, sleeps[1])  -- what the service asked for
      stub:assert_no_pending_responses()
    end)

    it("with status 0 are transport failures: a mutation is retried only when the request never left", function()
      local c = client()
      local stub = stubber.new(c)
      stub:add_error("CreateBinding", "ConnectionFailed", "refused", 0, { sent = false })
      stub:add_response("CreateBinding", { RequestId = "r", Binding = binding("Ready") })
      assert(c:create_binding(KEY))
      stub:add_error("CreateBinding", "ConnectionFailed", "reset", 0)
      local res, err = c:create_binding(KEY)
      assert.is_nil(res)
      assert.equal("ConnectionFailed", err.code)
      assert.equal(1, err.attempts)
      stub:assert_no_pending_responses()
    end)
  end)

  it("serves a pager page after page, following NextToken", function()
    local c = client()
    local stub = stubber.new(c)
    for i = 1, 3 do
      stub:add_response("ListTasks", { RequestId = "r" .. i, Tasks = { { TaskId = "t" .. i } },
        NextToken = i < 3 and ("n" .. i) or "" },
        { ProjectName = "p", MaxResults = ANY, NextToken = i > 1 and ("n" .. (i - 1)) or nil })
    end
    local ids = {}
    for t, err in c:tasks { ProjectName = "p" } do
      assert.is_nil(err)
      ids[#ids + 1] = t.TaskId
    end
    assert.same({ "t1", "t2", "t3" }, ids)
    stub:assert_no_pending_responses()
    -- the same pages with prefetch (a listing of one chain)
    for i = 1, 2 do
      stub:add_response("ListTasks", { RequestId = "r" .. i, Tasks = { { TaskId = "t" .. i } },
        NextToken = i < 2 and ("n" .. i) or nil },
        { ProjectName = "p", MaxResults = ANY, NextToken = i > 1 and "n1" or nil })
    end
    ids = {}
    for t in c:tasks({ ProjectName = "p" }, { prefetch = true }) do ids[#ids + 1] = t.TaskId end
    assert.same({ "t1", "t2" }, ids)
    stub:assert_no_pending_responses()
  end)

  it("serves a parallel listing in any order with ordered = false, matched by parameters", function()
    local c = client()
    local stub = stubber.new(c, { ordered = false })
    -- queued in an order no listing follows
    for _, ds in ipairs { "d3", "d2", "d1" } do
      stub:add_response("ListBindings", { RequestId = "r", Bindings = { binding("Running", "oss://" .. ds .. "-b/") } },
        { ProjectName = "p", DatasetName = ds, MaxResults = ANY })
    end
    stub:add_response("ListDatasets", { RequestId = "r", Datasets = { { DatasetName = "d3" } } },
      { ProjectName = "p", MaxResults = ANY, NextToken = "ds2" })
    stub:add_response("ListDatasets", { RequestId = "r", Datasets = { { DatasetName = "d1" }, { DatasetName = "d2" } },
      NextToken = "ds2" }, { ProjectName = "p", MaxResults = ANY })
    local all = assert(c:all_bindings({ ProjectName = "p" }, { concurrency = 4 }))
    local uris = {}
    for i, b in ipairs(all.Bindings) do uris[i] = b.URI end
    table.sort(uris)
    assert.same({ "oss://d1-b/", "oss://d2-b/", "oss://d3-b/" }, uris)
    stub:assert_no_pending_responses()
  end)

  it("serves a waiter's polls: wait_binding until Running, the intervals recorded", function()
    local c = client()
    local stub = stubber.new(c)
    for _, state in ipairs { "Ready", "Ready", "Running" } do
      stub:add_response("GetBinding", { RequestId = "r", Binding = binding(state) }, KEY)
    end
    local b = assert(c:wait_binding(KEY, { interval = 2, timeout = 60 }))
    assert.equal("Running", b.State)
    assert.same({ 2, 2 }, stub:sleeps())
    stub:add_response("GetBinding", { RequestId = "r", Binding = binding("Failed") }, KEY)
    local _, err = c:wait_binding(KEY)
    assert.equal("BindingFailed", err.code)
    stub:assert_no_pending_responses()
  end)

  it("serves repeated GetTask replies in order, as a task waiter polls them", function()
    local c = client()
    local stub = stubber.new(c)
    local task = { ProjectName = "p", TaskType = "MediaConvert", TaskId = "t-1" }
    for _, status in ipairs { "Running", "Running", "Succeeded" } do
      stub:add_response("GetTask", { RequestId = "r", TaskId = "t-1", TaskType = "MediaConvert", Status = status,
        Progress = status == "Succeeded" and 100 or 50 }, task)
    end
    local seen = {}
    repeat
      local res = assert(c:get_task(task))
      seen[#seen + 1] = res.Status
    until res.Status == "Succeeded"
    assert.same({ "Running", "Running", "Succeeded" }, seen)
    stub:assert_no_pending_responses()
    raises('GetTask has no response field "State" (did you mean "Status"?)', stub.add_response, stub, "GetTask",
      { RequestId = "r", State = "Running" })
  end)

  it("serves client:wait_task and a Create*Task call with opts.wait, recording their sleeps", function()
    local c = client()
    local stub = stubber.new(c)
    local task = { ProjectName = "p", TaskType = "MediaConvert", TaskId = "t-2" }
    for _, status in ipairs { "Running", "Succeeded" } do
      stub:add_response("GetTask",
        { RequestId = "r", TaskId = "t-2", TaskType = "MediaConvert", Status = status }, task)
    end
    local res, err = c:wait_task(task, { interval = 2, backoff = 1 })
    assert.is_nil(err)
    assert.equal("Succeeded", res.Status)
    assert.same({ 2 }, stub:sleeps())
    -- the create call, then the polls of the wait it was asked for, then a failure
    stub:add_response("CreateMediaConvertTask", { RequestId = "c", TaskId = "t-3", EventId = "e" })
    stub:add_response("GetTask", { RequestId = "r", TaskId = "t-3", TaskType = "MediaConvert", Status = "Failed",
      Code = "InvalidSource", Message = "no such object" },
      { ProjectName = "p", TaskType = "MediaConvert", TaskId = "t-3" })
    res, err = c:create_media_convert_task({ ProjectName = "p", Sources = { { URI = "oss://b/in.mp4" } },
      Targets = { { URI = "oss://b/out.mp4" } } }, { wait = { interval = 1 } })
    assert.is_nil(res)
    assert.equal("TaskFailed", err.code)
    assert.equal("InvalidSource", err.task_code)
    assert.equal("t-3", err.created.TaskId)
    stub:assert_no_pending_responses()
  end)

  it("serves calls of several async tasks at once", function()
    local c = client { async = true }
    local stub = stubber.new(c, { ordered = false })
    for i = 3, 1, -1 do
      local k = { ProjectName = "p", DatasetName = "d", URI = "oss://bucket-" .. i .. "/" }
      stub:add_response("GetBinding", { RequestId = "r" .. i, Binding = binding("Running", k.URI) }, k)
    end
    local tasks = {}
    for i = 1, 3 do
      tasks[i] = imm.spawn(function()
        local res, err = c:get_binding { ProjectName = "p", DatasetName = "d", URI = "oss://bucket-" .. i .. "/" }
        if not res then return nil, err end
        -- a waiter in a task sleeps on the tasks' timers with real_sleep
        return res.RequestId
      end)
    end
    for i = 1, 3 do
      local ok, rid, err = tasks[i]:join()
      assert.is_true(ok)
      assert.is_nil(err)
      assert.equal("r" .. i, rid)
    end
    stub:assert_no_pending_responses()
  end)

  it("refuses a blocking client inside a task, as the client's own transport is refused", function()
    local c = client { async = false }
    local stub = stubber.new(c)
    stub:add_response("ListProjects", { RequestId = "r", Projects = {} })
    local ok, res, err = imm.spawn(function() return c:list_projects() end):join()
    assert.is_true(ok)
    assert.is_nil(res)
    assert.equal("InvalidConfiguration", err.code)
    assert.equal(1, #stub:pending())
  end)

  it("waits for real with real_sleep, on the tasks' timers inside a task", function()
    local c = client { async = true }
    local stub = stubber.new(c, { real_sleep = true })
    stub:add_response("GetBinding", { RequestId = "r", Binding = binding("Ready") }, KEY)
    stub:add_response("GetBinding", { RequestId = "r", Binding = binding("Running") }, KEY)
    local other_ran = false
    local waiter = imm.spawn(function() return c:wait_binding(KEY, { interval = 0.05 }) end)
    local other = imm.spawn(function() other_ran = not waiter:done() end)
    local ok, b = waiter:join()
    assert.is_true(ok)
    assert.equal("Running", b.State)
    assert.is_true(other:join())
    assert.is_true(other_ran)  -- the wait did not hold the other task up
    assert.same({ 0.05 }, stub:sleeps())
  end)

  it("gives the client its own transport back on deactivate", function()
    local srv = fixture.start()
    finally(srv.stop)
    local c = srv.client()
    local stub = stubber.new(c)
    stub:add_response("ListProjects", { RequestId = "stubbed", Projects = {} })
    assert.equal("stubbed", assert(c:list_projects()).RequestId)
    stub:deactivate()
    local res = assert(c:list_projects())
    assert.is_true(#res.Projects > 0)  -- the local server's sample data
    stub:activate()
    local _, err = c:list_projects()
    assert.equal("StubMismatch", err.code)
    raises("another stub is active", stubber.new, c)
  end)

  it("refuses calls once the client is closed", function()
    local c = client()
    local stub = stubber.new(c)
    stub:add_response("ListProjects", { RequestId = "r", Projects = {} })
    c:close()
    local _, err = c:list_projects()
    assert.equal("InvalidState", err.code)
    assert.equal(1, #stub:pending())
  end)

  it("refuses misuse at the caller's line", function()
    raises("new takes an imm client", stubber.new, {})
    raises('unknown stub option "orderd" (did you mean "ordered"?)', stubber.new, client(), { orderd = false })
  end)
end)

describe("docs/testing.md", function()
  -- the interpreter running the specs (read here: inside a vararg function
  -- Lua 5.1 would see its own `arg`)
  local LUA = arg and arg[-1] or "lua"

  it("has a busted example of the stub that passes", function()
    local doc = assert(fixture.read("docs/testing.md"))
    local block = doc:match("```lua\n(%-%- spec/20_stub_spec.lua runs this block with busted\n.-)```")
    assert.is_string(block, "the marked block is missing from docs/testing.md")
    local dir = fixture.tmpdir()
    local f = assert(io.open(dir .. "/stub_example_spec.lua", "w"))
    f:write(block)
    f:close()
    -- not fixture.sh: an ASan build needs its LD_PRELOAD here
    os.execute(table.concat({ LUA, "/usr/bin/busted", "-o", "TAP", dir .. "/stub_example_spec.lua", ">" .. dir
      .. "/out", "2>&1;", "echo $? >" .. dir .. "/rc" }, " "))
    local out, rc = fixture.read(dir .. "/out") or "", tonumber(fixture.read(dir .. "/rc"))
    fixture.sh("rm -rf " .. dir)
    assert.equal(0, rc, out)
    assert.truthy(out:find("1..2", 1, true), out)  -- both tests ran
  end)
end)

describe("imm.stub inside nginx", function()
  local nginx = require "helpers.nginx"
  local ngx_srv
  setup(function()
    ngx_srv = nginx.run {
      locations = [[location = /stub { content_by_lua_block { require("stub_handler").run() } }]],
    }
  end)
  teardown(function()
    if ngx_srv then ngx_srv.stop() end
  end)

  it("answers typed calls, retries, pagers, parallel listings and waiters without a socket", function()
    local r = ngx_srv.get("/stub")
    assert.equal("ngx", r.transport)  -- the client's own transport, replaced by the stub
    assert.equal("Running", r.get)
    assert.same({ "t1", "t2" }, r.tasks)
    assert.same({ "oss://d1/", "oss://d2/" }, r.parallel)
    assert.equal("Running", r.waited)
    -- the retry's backoff and the poll interval, both through ngx.sleep
    assert.equal(2, #r.sleeps)
    assert.equal(0.05, r.sleeps[2])
    assert.same(r.sleeps, r.ngx_sleeps)
    assert.equal(0, r.pending)
    assert.equal(0, r.errors)
  end)
end)
