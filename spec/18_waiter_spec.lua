-- Layer 18: waiters (issue 22, part 1). client:wait_task, client:wait and
-- the `wait` option of the Create*Task actions against scripted GetTask
-- replies (spec/helpers/hostile.py), on a blocking client, inside an imm
-- task and inside nginx; their options, backoff, cancellation, the module
-- twins, and the CLI (`imm wait-task`, `imm call CreateXTask ... --wait`).
local cjson = require "cjson"
local core = require "imm.core"
local imm = require "imm"
local fixture = require "helpers.fixture"
local nginx = require "helpers.nginx"
local hostile = require "helpers.hostile"
local mns = require "helpers.mns"
local W = require "helpers.waiter_run"

local LUA = arg[-1] or "lua"
local running, succeeded, failed, created, unavailable = W.running, W.succeeded, W.failed, W.created,
  W.unavailable

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

describe("waiters", function()
  local srv, ngx_srv, dir, signer, push_http
  setup(function()
    srv = hostile.start()
    -- MNS for the push receiver that wakes wait_task (helpers/mns.lua)
    dir = fixture.tmpdir()
    local certs = fixture.certs()
    signer = mns.new(dir, certs)
    ngx_srv = nginx.run {
      trusted = certs .. "/ca.crt",
      http = "lua_shared_dict imm_tasks 1m;\n  " .. signer:server_block(),
      locations = "location = /wait { content_by_lua_block { require('waiter_handler').run() } }\n"
        .. "    location = /mns { content_by_lua_block { require('imm.notification').mns_handler {"
        .. " dict = 'imm_tasks', cert_hosts = { '" .. signer.cert_host .. "' } }() } }\n"
        .. "    location = /forget { content_by_lua_block { ngx.shared.imm_tasks:delete(ngx.var.arg_task)"
        .. " ngx.say('{}') } }",
    }
    push_http = assert(core.http { timeout = 20 })
  end)
  teardown(function()
    if push_http then push_http:close() end
    if ngx_srv then ngx_srv.stop() end
    if srv then srv.stop() end
    if dir then fixture.sh("rm -rf " .. dir) end
  end)

  local function actions()
    local list = {}
    for i, r in ipairs(srv.log()) do list[i] = r.headers["x-acs-action"] end
    return list
  end

  local function client(opts)
    local o = { endpoint = srv.url, access_key_id = hostile.KEY_ID, access_key_secret = hostile.SECRET,
      timeout = 5, max_retries = 0 }
    for k, v in pairs(opts or {}) do o[k] = v end
    return assert(imm.new(o))
  end

  -- Runs scenario `a` in `where`: "blocking", "task" (imm.spawn) or "nginx".
  local function run(where, a)
    a.port = srv.port
    if where == "task" then a.async = true end
    if where ~= "nginx" then return W.run(a) end
    local status, body = ngx_srv.raw("/wait?a=" .. core.percent_encode(cjson.encode(a)))
    assert(status == 200, "nginx /wait -> " .. tostring(status) .. " " .. tostring(body)
      .. "\n" .. ngx_srv.error_log():sub(-2000))
    local out = cjson.decode(body)
    assert(not out.raised, out.raised)
    return out
  end

  local FAST = { interval = 0.05, timeout = 10 }

  for _, where in ipairs { "blocking", "task", "nginx" } do
    describe("on a " .. where .. " client", function()
      it("wait_task polls GetTask until Succeeded and returns that response", function()
        srv.script { running, running, succeeded }
        local r = run(where, { opts = FAST })
        assert.is_nil(r.err, cjson.encode(r))
        assert.equal("Succeeded", r.status)
        local log = srv.log()
        assert.equal(3, #log)
        for _, req in ipairs(log) do
          assert.equal("GetTask", req.headers["x-acs-action"])
          assert.equal("t-1", req.params.TaskId)
          assert.equal("MediaConvert", req.params.TaskType)
          assert.equal("p", req.params.ProjectName)
        end
        if where == "nginx" then assert.equal(2, r.naps, "slept with ngx.sleep between polls") end
      end)

      it("wait_task ends a Failed task with TaskFailed and the task's own Code and Message", function()
        srv.script { running, failed }
        local r = run(where, { opts = FAST })
        assert.is_nil(r.status)
        assert.equal("TaskFailed", r.err.code, cjson.encode(r))
        assert.equal("InvalidParameter.ResourceContentBad", r.err.task_code)
        assert.equal("The resource operated InputFile is bad", r.err.task_message)
        assert.equal("Failed", r.err.task_status)
        assert.is_false(r.err.retryable)
        assert.matches("t-1", r.err.message, 1, true)
        assert.equal(2, #srv.log())
      end)

      it("wait_task gives up with WaitTimeout and the last status seen", function()
        srv.script { running }
        local r = run(where, { opts = { interval = 0.05, timeout = 0.3 } })
        assert.equal("WaitTimeout", r.err.code, cjson.encode(r))
        assert.equal("Running", r.err.task_status)
        assert.equal("Running", r.err.state)
        assert.is_true(#srv.log() >= 2)
      end)

      it("retries a retryable poll by the client's rules, and ends with it when the retries are spent", function()
        srv.script { unavailable, running, succeeded }
        local r = run(where, { opts = FAST, max_retries = 2 })
        assert.is_nil(r.err, cjson.encode(r))
        assert.equal("Succeeded", r.status)
        assert.equal(3, #srv.log())

        srv.script { running, unavailable }
        r = run(where, { opts = FAST, max_retries = 1 })
        assert.equal("ServiceUnavailable", r.err.code, cjson.encode(r))
        assert.equal("Running", r.err.task_status, "the error carries the last task seen")
        assert.equal(3, #srv.log())
      end)

      it("create_media_convert_task with opts.wait creates the task, then waits for it", function()
        srv.script { created, running, succeeded }
        local r = run(where, { mode = "create", opts = FAST })
        assert.is_nil(r.err, cjson.encode(r))
        assert.equal("Succeeded", r.status)
        assert.same({ "CreateMediaConvertTask", "GetTask", "GetTask" }, actions())
        local get = srv.log()[2].params
        assert.equal("t-1", get.TaskId)
        assert.equal("MediaConvert", get.TaskType, "the TaskType comes from api/task-types.json")
        assert.equal("p", get.ProjectName)

        srv.script { created, failed }
        r = run(where, { mode = "create", opts = FAST })
        assert.equal("TaskFailed", r.err.code)
        assert.equal("t-1", r.err.created_id, "err.created is the Create*Task response")
      end)

      it("wait polls any action until match, and stops at fail", function()
        srv.script { running, succeeded }
        local r = run(where, { mode = "wait", opts = { match = { Status = "Succeeded" }, fail = { Status = "Failed" },
          interval = 0.05, timeout = 10 } })
        assert.is_nil(r.err, cjson.encode(r))
        assert.equal("Succeeded", r.status)
        assert.equal(2, #srv.log())

        srv.script { running, failed }
        r = run(where, { mode = "wait", opts = { match = { Status = "Succeeded" }, fail = { Status = "Failed" },
          interval = 0.05, timeout = 10 } })
        assert.equal("WaitFailed", r.err.code, cjson.encode(r))
        assert.equal("Failed", r.err.response_status)

        srv.script { running }
        r = run(where, { mode = "wait", opts = { match = { Status = "Succeeded" }, interval = 0.05, timeout = 0.2 } })
        assert.equal("WaitTimeout", r.err.code)
        assert.equal("Running", r.err.response_status)
      end)
    end)
  end

  describe("inside nginx, with opts.notifications", function()
    it("awaits imm.notification between polls instead of sleeping, and polls at once when one arrives", function()
      srv.script { running, succeeded }
      local r = run("nginx", { opts = { interval = 30, timeout = 60, notifications = "imm_tasks" },
        fake_notification = true })
      assert.is_nil(r.err, cjson.encode(r))
      assert.equal("Succeeded", r.status)
      assert.equal(2, #srv.log())
      assert.same({ { "imm_tasks", "t-1", 30 } }, r.awaits)
      assert.equal(0, r.naps, "no ngx.sleep: the notification woke the wait")
    end)

    -- the real imm.notification.await, woken by a push that MNS signed and
    -- the receiver (mns_handler) verified and kept in the shared dict
    local function notify(id, status)
      local msg = cjson.encode { TaskId = id, TaskType = "MediaConvert", Status = status or "Succeeded",
        ProjectName = "p", Code = "", Message = "" }
      local body = cjson.encode { TopicName = "imm-tasks", MessageId = "m-" .. id, Message = msg }
      assert.equal(204, (signer:push(push_http, ngx_srv.url, "/mns", body)))
    end
    local function forget(id) ngx_srv.get("/forget?task=" .. id) end
    local function wait_url(a)
      a.port = srv.port
      return ngx_srv.url .. "/wait?a=" .. core.percent_encode(cjson.encode(a))
    end

    it("returns once the signed push lands, where GetTask said Running and the interval is 30 s", function()
      forget("t-1")
      srv.script { running }
      local result = mns.background_get(wait_url { opts = { interval = 30, timeout = 60,
        notifications = "imm_tasks" }, watch_awaits = true }, dir .. "/wait-out")
      for _ = 1, 400 do  -- the first GetTask has been answered: the task is Running
        if #srv.log() >= 1 then break end
        core.sleep(0.05)
      end
      assert.equal(1, #srv.log())
      srv.script { succeeded }   -- IMM's task ends, and IMM says so through MNS
      notify("t-1")
      -- well before the 30 s interval: only the notification can end this wait
      local body, code = result(20)
      assert(body, "no answer within 20 s: the wait did not wake on the notification")
      assert.equal(200, code)
      local r = cjson.decode(body)
      assert.is_nil(r.raised)
      assert.is_nil(r.err, body)
      assert.equal("Succeeded", r.status)
      assert.equal(1, #srv.log(), "one GetTask after the push: two in all")
      assert.equal(1, #r.awaits)
      assert.same({ "imm_tasks", "t-1", 30 }, { r.awaits[1].dict, r.awaits[1].id, r.awaits[1].seconds })
      assert.is_true(r.awaits[1].woke, "await returned the notification, not nil at the end of 30 s")
    end)

    it("falls back to polling GetTask when no message comes", function()
      forget("t-1")
      srv.script { running, running, succeeded }
      local r = run("nginx", { opts = { interval = 0.05, backoff = 1, timeout = 10, notifications = "imm_tasks" },
        watch_awaits = true })
      assert.is_nil(r.err, cjson.encode(r))
      assert.equal("Succeeded", r.status)
      assert.equal(3, #srv.log())
      assert.equal(2, #r.awaits)
      for _, aw in ipairs(r.awaits) do
        assert.is_false(aw.woke)
        assert.is_nil(aw.err)
      end
    end)

    it("sleeps the interval again when GetTask still says Running after the notification", function()
      -- the notification is kept (for its ttl), so await would answer at
      -- once every time: a wait that kept asking it would poll without a pause
      forget("t-1")
      notify("t-1")
      srv.script { running }
      local r = run("nginx", { opts = { interval = 0.2, backoff = 1, timeout = 1, notifications = "imm_tasks" },
        watch_awaits = true })
      assert.equal("WaitTimeout", r.err.code, cjson.encode(r))
      local polls = #srv.log()
      -- 1 s at 0.2 s: about 5 polls after the one the notification brought
      assert.is_true(polls >= 3, polls .. " polls")
      assert.is_true(polls <= 10, polls .. " polls: GetTask was polled without a pause")
      forget("t-1")
    end)

    it("refuses a notifications dict that nginx does not have, sending nothing", function()
      srv.script { running }
      local r = run("nginx", { opts = { interval = 0.05, timeout = 1, notifications = "no_such_dict" } })
      assert.equal("InvalidParameter", r.err.code, cjson.encode(r))
      assert.matches("no_such_dict", r.err.message, 1, true)
      assert.equal(0, #srv.log())
    end)
  end)

  describe("options", function()
    it("are checked before anything is sent", function()
      srv.script { succeeded }
      local c = client()
      local P = W.PARAMS
      for _, case in ipairs {
        { function() return c:wait_task(P, { timout = 5 }) end, 'did you mean "timeout"' },
        { function() return c:wait_task(P, { interval = 0 }) end, "interval" },
        { function() return c:wait_task(P, { interval = 0 / 0 }) end, "interval" },
        { function() return c:wait_task(P, { timeout = "5" }) end, "timeout" },
        { function() return c:wait_task(P, { backoff = 0.5 }) end, "backoff" },
        { function() return c:wait_task(P, { interval = 2, max_interval = 1 }) end, "max_interval" },
        { function() return c:wait_task(P, { notifications = 5 }) end, "lua_shared_dict" },
        { function() return c:wait_task(P, "fast") end, "must be a table" },
        { function() return c:wait_task(P, { notifications = "imm_tasks" }) end, "only inside nginx" },
        { function() return c:wait_task(P, { progress = true }) end, "progress" },
        { function() return c:wait_task({ ProjectName = "p", TaskId = "t-1" }) end, "TaskType" },
        { function() return c:wait("GetTask", P, { interval = 1 }) end, "done" },
        { function() return c:wait("GetTask", P) end, "done" },
        { function() return c:wait("GetTask", P, { done = function() end, match = { Status = "x" } }) end,
          "not both" },
        { function() return c:wait("GetTask", P, { match = { Status = {} } }) end, "match" },
        { function() return c:wait("GetTask", P, { match = "Succeeded" }) end, "match" },
        { function() return c:wait("GetTask", P, { done = function() end, fail = 5 }) end, "fail" },
        { function() return c:wait("GetTask", { ProjectName = "p" }, { done = function() end }) end, "is required" },
        { function() return c:wait(5, P, { done = function() end }) end, "action" },
        { function() return c:create_media_convert_task({ ProjectName = "p", Sources = { { URI = "oss://b/a" } } },
          { wait = { timeout = -1 } }) end, "timeout" },
        { function() return c:create_media_convert_task({ ProjectName = "p", Sources = { { URI = "oss://b/a" } } },
          { wait = "yes" }) end, "wait" },
        { function() return c:list_projects({}, { wait = true }) end, "create a task" },
        { function() return c:call("DetectImageLabels", { ProjectName = "p", SourceURI = "oss://b/a" },
          { wait = true }) end, "create a task" },
      } do
        local res, err = case[1]()
        assert.is_nil(res, case[2])
        assert.is_true(err.code == "InvalidParameter" or err.code == "MissingParameter", tostring(err))
        assert.matches(case[2], err.message, 1, true)
      end
      assert.equal(0, #srv.log(), "nothing was sent")
    end)

    it("wait = false is no wait: the call goes as usual", function()
      srv.script { { status = 200, body = '{"RequestId":"r","Projects":[]}' } }
      local res = assert(client():list_projects({}, { wait = false }))
      assert.same({}, res.Projects)
      assert.same({ "ListProjects" }, actions())
    end)

    it("back off by the factor up to max_interval, never past the timeout, through the transport's sleep", function()
      srv.script { running, running, running, running, running, succeeded }
      local c = client()
      local slept = {}
      local sleep = c.transport.sleep
      c.transport.sleep = function(t, s)
        slept[#slept + 1] = s
        return sleep(t, s)
      end
      local res = assert(c:wait_task(W.PARAMS, { interval = 0.01, backoff = 2, max_interval = 0.03, timeout = 10 }))
      assert.equal("Succeeded", res.Status)
      assert.equal(5, #slept)
      for i, want in ipairs { 0.01, 0.02, 0.03, 0.03, 0.03 } do
        assert.is_true(math.abs(slept[i] - want) < 1e-9, "sleep " .. i .. ": " .. slept[i])
      end
      srv.script { running }
      slept = {}
      local _, err = c:wait_task(W.PARAMS, { interval = 0.2, timeout = 0.3 })
      assert.equal("WaitTimeout", err.code)
      local total = 0
      for _, s in ipairs(slept) do total = total + s end
      assert.is_true(total <= 0.3 + 1e-6, "slept " .. total .. " in all")
    end)

    it("take a done predicate, and match fields by a dotted path", function()
      srv.script { running, { status = 200, body = '{"RequestId":"r","Status":"Running","Progress":80}' } }
      local c = client()
      local seen = 0
      local res = assert(c:wait("GetTask", W.PARAMS, { interval = 0.01, timeout = 10, done = function(r)
        seen = seen + 1
        return r.Progress >= 80
      end }))
      assert.equal(80, res.Progress)
      assert.equal(2, seen)
      srv.script { { status = 200, body = '{"RequestId":"r","Binding":{"State":"Ready"}}' },
        { status = 200, body = '{"RequestId":"r","Binding":{"State":"Running"}}' } }
      res = assert(c:wait("GetBinding", { ProjectName = "p", DatasetName = "d", URI = "oss://b/" },
        { match = { ["Binding.State"] = "Running" }, interval = 0.01, timeout = 10 }))
      assert.equal("Running", res.Binding.State)
    end)
  end)

  describe("inside an imm task", function()
    it("sleeps on the tasks' timers: the task yields between polls instead of blocking", function()
      srv.script { running, succeeded }
      local c = client { async = true }
      local task = imm.spawn(function() return c:wait_task(W.PARAMS, { interval = 30, timeout = 60 }) end)
      -- spawn ran the task up to its first wait; poll until the first GetTask is answered
      local guard = 0
      while #srv.log() < 1 and guard < 2000 do
        imm.poll(5)
        guard = guard + 1
      end
      imm.poll(5)
      assert.is_false(task:done(), "the task waits on a timer; spawn and poll returned")
      assert.equal(1, #srv.log())
      assert.is_true(task:cancel())
      local ok, err = task:join(5)
      assert.is_false(ok)
      assert.equal("Cancelled", err.code)
      assert.equal(1, #srv.log(), "a cancelled wait polls no more")
      -- the client is still usable
      srv.script { succeeded }
      local ok2, res = imm.spawn(function() return c:wait_task(W.PARAMS, FAST) end):join(10)
      assert.is_true(ok2)
      assert.equal("Succeeded", res.Status)
    end)
  end)

  describe("the module", function()
    it("has wait and wait_task on the default client", function()
      srv.script { running, succeeded }
      assert(imm.configure { endpoint = srv.url, access_key_id = hostile.KEY_ID, access_key_secret = hostile.SECRET,
        max_retries = 0 })
      local res = assert(imm.wait_task(W.PARAMS, FAST))
      assert.equal("Succeeded", res.Status)
      srv.script { succeeded }
      res = assert(imm.wait("GetTask", W.PARAMS, { match = { Status = "Succeeded" } }))
      assert.equal("Succeeded", res.Status)
      assert.is_function(imm.create_media_convert_task)
    end)

    it("raises at the caller when wait or wait_task is called with a dot", function()
      local c = client()
      for _, m in ipairs { "wait", "wait_task" } do
        local ok, err = pcall(function()
          local r = c[m]({ ProjectName = "p" })
          return r
        end)
        assert.is_false(ok)
        assert.matches("client:" .. m, tostring(err), 1, true)
      end
    end)
  end)

  describe("the CLI", function()
    local function cli(args)
      local parts = { "env", "-u", "IMM_DEBUG", "IMM_ENDPOINT=" .. q(srv.url),
        "ALIBABA_CLOUD_ACCESS_KEY_ID=" .. hostile.KEY_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET=" .. hostile.SECRET,
        LUA, "bin/imm" }
      for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
      local errfile = os.tmpname()
      local p = io.popen(table.concat(parts, " ") .. " 2>" .. errfile .. ' </dev/null; echo "exit=$?"')
      local all = p:read("*a")
      p:close()
      local out, status = all:match("^(.*)exit=(%d+)\n$")
      local err = fixture.read(errfile)
      os.remove(errfile)
      return out, err, tonumber(status)
    end

    it("imm wait-task waits and prints the final GetTask response", function()
      srv.script { running, succeeded }
      local out, err, status = cli { "wait-task", "--project", "p", "--task-type", "MediaConvert", "--task-id", "t-1",
        "--interval", "0.05" }
      assert.equal(0, status, err)
      assert.equal("Succeeded", cjson.decode(out).Status)
      assert.equal(2, #srv.log())
      assert.equal("", err, "no progress line when stderr is not a terminal")
    end)

    it("imm wait-task fails with TaskFailed, and --progress shows the status on stderr", function()
      srv.script { running, failed }
      local out, err, status = cli { "wait-task", "--project", "p", "--task-type", "MediaConvert", "--task-id", "t-1",
        "--interval", "0.05", "--progress" }
      assert.equal(1, status)
      assert.equal("", out)
      assert.matches("Running", err, 1, true)
      assert.matches("imm: TaskFailed: ", err, 1, true)
      assert.matches("InvalidParameter.ResourceContentBad", err, 1, true)
    end)

    it("imm wait-task refuses a missing option, sending nothing", function()
      srv.script { succeeded }
      local out, err, status = cli { "wait-task", "--project", "p", "--task-id", "t-1" }
      assert.equal(2, status)
      assert.equal("", out)
      assert.matches("task-type", err, 1, true)
      assert.equal(0, #srv.log())
    end)

    it("imm call CreateXTask --wait waits for the task", function()
      srv.script { created, running, succeeded }
      local out, err, status = cli { "call", "CreateMediaConvertTask", "ProjectName=p",
        'Sources=[{"URI":"oss://b/in.mp4"}]', "--wait", "--interval", "0.05" }
      assert.equal(0, status, err)
      assert.equal("Succeeded", cjson.decode(out).Status)
      assert.same({ "CreateMediaConvertTask", "GetTask", "GetTask" }, actions())

      local help_out, _, help_status = cli { "call", "CreateOfficeConversionTask", "--help" }
      assert.equal(0, help_status)
      assert.matches("TaskType OfficeConversion: --wait", help_out, 1, true)

      srv.script { succeeded }
      out, err, status = cli { "call", "ListProjects", "--wait" }
      assert.equal(2, status)
      assert.equal("", out)
      assert.matches("create a task", err, 1, true)
      assert.equal(0, #srv.log())
    end)
  end)
end)
