-- Layer 12: the binding lifecycle (create, wait, stop, resume, delete), the
-- retry rules for mutations, the generic call with structured parameters
-- and the generic pager, against the local IMM server.
local imm = require "imm"
local core = require "imm.core"
local cjson = require "cjson.safe"
local errors = require "imm.errors"
local operations = require "imm.operations"
local fixture = require "helpers.fixture"

local PROJECT, DATASET = "immtest", "photos-2024"

local function key(uri)
  return { ProjectName = PROJECT, DatasetName = DATASET, URI = uri or "oss://lifecycle-test/in/" }
end

local function copy(t, extra)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  for k, v in pairs(extra or {}) do c[k] = v end
  return c
end

describe("binding lifecycle", function()
  local srv
  setup(function() srv = fixture.start() end)
  teardown(function() srv.stop() end)
  before_each(function() srv.reset() end)

  -- The log records of one action, in order.
  local function logged(action)
    local out = {}
    for _, r in ipairs(srv.log()) do
      if r.action == action then out[#out + 1] = r end
    end
    return out
  end

  -- The state of the binding at uri as ListBindings shows it, or nil.
  local function listed_state(c, uri)
    local found
    for b, err in c:bindings { ProjectName = PROJECT, DatasetName = DATASET } do
      assert(b, tostring(err))
      if b.URI == uri then
        assert.is_nil(found, "listed twice")
        found = b.State
      end
    end
    return found
  end

  it("runs create, wait for Running, stop, resume and delete, listing after each step", function()
    -- a start delay long enough that a loaded machine still sees Ready first
    srv.control("POST", "settings", { binding_start_delay = 1 })
    local c = srv.client {}
    local k = key()
    assert.is_nil(listed_state(c, k.URI))

    local created = core.monotonic()
    local res = assert(c:create_binding(k))
    assert.equal("Ready", res.Binding.State)
    assert.equal(k.URI, res.Binding.URI)
    assert.equal(DATASET, res.Binding.DatasetName)
    assert.is_string(res.RequestId)
    assert.equal("Ready", listed_state(c, k.URI))

    srv.control("DELETE", "log")
    local b = assert(c:wait_binding(k, { state = "Running", timeout = 10, interval = 0.1 }))
    assert.equal("Running", b.State)
    assert.equal("FullScanning", b.Phase)
    -- it returned once the binding had turned Running, not before
    assert.is_true(core.monotonic() - created >= 0.95)
    local polls = logged("GetBinding")
    assert.is_true(#polls >= 2, "polls: " .. #polls)
    assert.equal("Running", listed_state(c, k.URI))

    assert(c:stop_binding(copy(k, { Reason = "maintenance window" })))
    b = assert(c:get_binding(k)).Binding
    assert.equal("Stopped", b.State)
    assert.equal("maintenance window", b.Reason)
    assert.equal("Stopped", listed_state(c, k.URI))

    assert(c:resume_binding(k))
    assert.equal("Running", assert(c:get_binding(k)).Binding.State)
    assert.equal("Running", listed_state(c, k.URI))

    assert(c:delete_binding(k))
    local gone, err = c:get_binding(k)
    assert.is_nil(gone)
    assert.equal("ResourceNotFound", err.code)
    assert.equal(404, err.status)
    assert.is_nil(listed_state(c, k.URI))

    -- every lifecycle call was a signed POST with its parameters in the query
    for _, r in ipairs(srv.log()) do
      assert.equal("POST", r.method)
      assert.equal("v3-sha256", r.signature)
      assert.equal(PROJECT, r.params.ProjectName)
    end
  end)

  it("works through the module-level functions too", function()
    assert(imm.configure { endpoint = srv.url, access_key_id = fixture.KEY_ID,
      access_key_secret = fixture.SECRET })
    local k = key("oss://module-level/")
    assert.equal("Ready", assert(imm.create_binding(k)).Binding.State)
    assert.equal("Running", assert(imm.wait_binding(k, { timeout = 10, interval = 0.1 })).State)
    assert(imm.stop_binding(k))
    assert.equal("Stopped", assert(imm.get_binding(k)).Binding.State)
    assert(imm.resume_binding(k))
    assert(imm.delete_binding(k))
    assert.equal("ResourceNotFound", select(2, imm.get_binding(k)).code)
    local names = {}
    for p, err in imm.projects() do
      assert(p, tostring(err))
      names[#names + 1] = p.ProjectName
    end
    assert.same({ "empty-project", "immtest", "media-prod" }, names)
    local datasets = assert(imm.list_datasets { ProjectName = PROJECT, Prefix = "photos-" }).Datasets
    assert.is_true(#datasets >= 1)
    for _, d in ipairs(datasets) do assert.matches("^photos%-", d.DatasetName) end
  end)

  describe("validation before sending", function()
    local METHODS = { "create_binding", "get_binding", "stop_binding", "resume_binding", "delete_binding" }

    local function refused(method, params, code, pattern)
      local c = srv.client {}
      local res, err = c[method](c, params)
      assert.is_nil(res, method)
      assert.equal(code, err.code, method .. ": " .. tostring(err))
      if pattern then assert.matches(pattern, err.message) end
      assert.is_false(err.retryable)
      assert.equal(0, #srv.log(), method .. ": a refused call must send nothing")
    end

    it("requires ProjectName, DatasetName and URI for each method", function()
      for _, m in ipairs(METHODS) do
        for _, name in ipairs { "ProjectName", "DatasetName", "URI" } do
          local without = key()
          without[name] = nil
          refused(m, without, "MissingParameter", name)
          refused(m, copy(key(), { [name] = "" }), "MissingParameter", name)
        end
        refused(m, nil, "MissingParameter")
      end
    end)

    it("checks types and names, with a hint", function()
      for _, m in ipairs(METHODS) do
        refused(m, copy(key(), { ProjectName = 7 }), "InvalidParameter", "ProjectName must be a string")
        refused(m, copy(key(), { URI = { "oss://x/" } }), "InvalidParameter", "URI must be a string")
        refused(m, copy(key(), { Uri = "oss://x/" }), "InvalidParameter", 'did you mean "URI"')
        refused(m, "immtest", "InvalidParameter", "must be a table")
        refused(m, copy(key(), { URI = "oss://bucket/a\r\nb/" }), "InvalidParameter", "CR or LF")
      end
      refused("stop_binding", copy(key(), { Reason = 1 }), "InvalidParameter", "Reason must be a string")
      refused("get_binding", copy(key(), { Reason = "x" }), "InvalidParameter", "unknown parameter")
    end)

    it("refuses a URI that is not oss://bucket[/prefix/] on create", function()
      for _, bad in ipairs {
        "s3://bucket/", "bucket/prefix/", "oss://", "oss://ab", "oss://Bucket", "oss://-bucket",
        "oss://bucket-/", "oss://bucket_name/", "oss://bucket/prefix", "oss://bucket/a/b",
        "oss://" .. string.rep("b", 64),
      } do
        refused("create_binding", copy(key(), { URI = bad }), "InvalidParameter", "URI")
      end
      for _, m in ipairs(METHODS) do
        refused(m, copy(key(), { URI = "http://bucket/" }), "InvalidParameter", "oss://")
      end
    end)

    it("accepts the URI forms the service takes", function()
      local c = srv.client {}
      for _, good in ipairs { "oss://abc", "oss://bucket-1/", "oss://b-1/a/b/c/", "oss://" .. string.rep("b", 63) } do
        local res, err = c:create_binding(copy(key(), { URI = good }))
        assert(res, good .. ": " .. tostring(err))
        assert.equal(good, res.Binding.URI)
      end
      assert.equal(4, #logged("CreateBinding"))
    end)

    it("checks wait_binding's options before polling", function()
      local c = srv.client {}
      for _, case in ipairs {
        { { state = "Runing" }, 'did you mean "Running"' },
        { { state = 1 }, "state" },
        { { timeout = 0 }, "timeout" },
        { { timeout = -1 }, "timeout" },
        { { interval = 0 / 0 }, "interval" },
        { { interval = "5" }, "interval" },
        { { timout = 5 }, 'did you mean "timeout"' },
        { "Running", "must be a table" },
      } do
        local b, err = c:wait_binding(key(), case[1])
        assert.is_nil(b)
        assert.equal("InvalidParameter", err.code)
        assert.matches(case[2], err.message)
      end
      local b, err = c:wait_binding(copy(key(), { URI = 5 }))
      assert.is_nil(b)
      assert.equal("InvalidParameter", err.code)
      assert.equal(0, #srv.log())
    end)
  end)

  describe("wait_binding", function()
    it("stops at a terminal state with the binding", function()
      local c = srv.client {}
      local k = key("oss://doomed/")
      assert(c:create_binding(k))
      local forced = srv.control("POST", "binding-state",
        copy(k, { State = "Failed", Reason = "AccessDenied on bucket" }))
      assert.equal("Failed", forced.State)
      local started = core.monotonic()
      local b, err = c:wait_binding(k, { timeout = 30, interval = 0.1 })
      assert.is_nil(b)
      assert.equal("BindingFailed", err.code)
      assert.equal("Failed", err.state)
      assert.equal("Failed", err.binding.State)
      assert.equal(k.URI, err.binding.URI)
      assert.matches("AccessDenied on bucket", err.message)
      assert.is_false(err.retryable)
      assert.is_true(errors.is_error(err))
      assert.is_true(core.monotonic() - started < 5, "a terminal state ends the wait at once")
      assert.equal(1, #logged("GetBinding"))

      srv.control("POST", "binding-state", copy(k, { State = "Deleted" }))
      b, err = c:wait_binding(k, { state = "Stopped", timeout = 30, interval = 0.1 })
      assert.is_nil(b)
      assert.equal("BindingDeleted", err.code)
    end)

    it("gives up with WaitTimeout and the last binding, sleeping through the transport", function()
      srv.control("POST", "settings", { binding_start_delay = 60 })
      local c = srv.client {}
      local k = key("oss://slow-start/")
      assert(c:create_binding(k))
      local slept = {}
      local sleep = c.transport.sleep
      c.transport.sleep = function(t, s)
        slept[#slept + 1] = s
        return sleep(t, s)
      end
      local started = core.monotonic()
      local b, err = c:wait_binding(k, { timeout = 0.5, interval = 0.2 })
      local took = core.monotonic() - started
      assert.is_nil(b)
      assert.equal("WaitTimeout", err.code)
      assert.equal("Ready", err.binding.State)
      assert.equal("Ready", err.state)
      assert.is_true(took >= 0.5 and took < 5, "took " .. took)
      assert.is_true(#slept >= 2, "sleeps: " .. #slept)
      local total = 0
      for _, s in ipairs(slept) do
        assert.is_true(s > 0 and s <= 0.2 + 1e-9, "slept " .. s)
        total = total + s
      end
      assert.is_true(total <= 0.5 + 1e-6, "slept in all " .. total)
      assert.equal(#slept + 1, #logged("GetBinding"))
    end)

    it("returns the error of a failed poll", function()
      local c = srv.client {}
      local b, err = c:wait_binding(key("oss://never-made/"), { timeout = 5, interval = 0.1 })
      assert.is_nil(b)
      assert.equal("ResourceNotFound", err.code)
      assert.equal(1, #logged("GetBinding"))
    end)
  end)

  describe("retry rules for mutations", function()
    it("retries a throttled mutation, signing each attempt afresh", function()
      srv.fault { mode = "throttle", count = 2 }
      local c = srv.client { max_retries = 3 }
      local res = assert(c:create_binding(key()))
      assert.equal("Ready", res.Binding.State)
      local log = logged("CreateBinding")
      assert.equal(3, #log)
      assert.same({ 429, 429, 200 }, { log[1].status, log[2].status, log[3].status })
      assert.are_not.equal(log[1].headers["x-acs-signature-nonce"], log[3].headers["x-acs-signature-nonce"])
    end)

    it("does not retry a mutation whose connection broke after the request was sent", function()
      local c = srv.client { max_retries = 3 }
      for _, m in ipairs { "create_binding", "stop_binding", "resume_binding", "delete_binding" } do
        srv.reset()
        srv.fault { mode = "reset" }
        local res, err = c[m](c, key())
        assert.is_nil(res, m)
        assert.equal("ConnectionFailed", err.code, m)
        assert.equal(1, err.attempts, m)
        assert.is_true(err.sent, m)
        assert.is_false(err.retryable, m)
        assert.matches("not retried", err.message)
        assert.equal(1, #srv.log(), m)
      end
    end)

    it("does retry a read after the same failure", function()
      local c = srv.client { max_retries = 3 }
      assert(c:create_binding(key()))
      srv.fault { mode = "reset" }
      local b = assert(c:get_binding(key())).Binding
      assert.equal(key().URI, b.URI)
      assert.equal(2, #logged("GetBinding"))
    end)

    it("does not retry a mutation on 5xx", function()
      local c = srv.client { max_retries = 3 }
      assert(c:create_binding(key()))
      srv.fault { mode = "unavailable" }
      local res, err = c:delete_binding(key())
      assert.is_nil(res)
      assert.equal("ServiceUnavailable", err.code)
      assert.equal(503, err.status)
      assert.equal(1, err.attempts)
      assert.equal(1, #logged("DeleteBinding"))
      assert(c:get_binding(key()), "the binding is still there")
    end)

    it("reports a create that raced its own success as ResourceAlreadyExist", function()
      local c = srv.client { max_retries = 3 }
      srv.fault { mode = "reset_after" }
      local res, err = c:create_binding(key())
      assert.is_nil(res)
      assert.equal("ConnectionFailed", err.code)
      assert.equal(1, err.attempts)
      -- the first call did create it; the caller's own retry says so
      res, err = c:create_binding(key())
      assert.is_nil(res)
      assert.equal("ResourceAlreadyExist", err.code)
      assert.equal(409, err.status)
      assert.is_false(err.retryable)
      assert.equal("Ready", assert(c:get_binding(key())).Binding.State)
      assert.equal(2, #logged("CreateBinding"))
    end)

    it("reports a delete that raced its own success as ResourceNotFound", function()
      local c = srv.client { max_retries = 3 }
      assert(c:create_binding(key()))
      srv.fault { mode = "reset_after" }
      local res, err = c:delete_binding(key())
      assert.is_nil(res)
      assert.equal("ConnectionFailed", err.code)
      res, err = c:delete_binding(key())
      assert.is_nil(res)
      assert.equal("ResourceNotFound", err.code)
      assert.equal(2, #logged("DeleteBinding"))
    end)

    it("retries a mutation when the connection failed before anything was sent", function()
      -- nothing listens on port 9: every attempt fails to connect
      local c = assert(imm.new { endpoint = "http://127.0.0.1:9", access_key_id = "a", access_key_secret = "b",
        max_retries = 2, connect_timeout = 2 })
      local res, err = c:create_binding(key())
      assert.is_nil(res)
      assert.equal("ConnectionFailed", err.code)
      assert.is_false(err.sent)
      assert.equal(3, err.attempts)
    end)

    it("retries an unsent mutation once and creates the binding once", function()
      local real = require("imm.transport.curl").new { timeout = 5, connect_timeout = 5 }
      local calls = 0
      local flaky = {
        request = function(_, req)
          calls = calls + 1
          if calls == 1 then
            return nil, errors.new("ConnectionFailed", "connect failed (simulated)", { sent = false })
          end
          return real:request(req)
        end,
        sleep = function() end,
        close = function() real:close() end,
      }
      local c = srv.client { transport = flaky }
      local res = assert(c:create_binding(key()))
      assert.equal("Ready", res.Binding.State)
      assert.equal(2, calls)
      assert.equal(1, #logged("CreateBinding"))
      c:close()
    end)

    it("lets the idempotent option override the action's flag", function()
      local c = srv.client { max_retries = 3 }
      srv.fault { mode = "reset" }
      assert(c:call("CreateBinding", key(), { idempotent = true }))
      assert.equal(2, #logged("CreateBinding"))
      srv.reset()
      srv.fault { mode = "reset" }
      local res, err = c:call("ListProjects", {}, { idempotent = false })
      assert.is_nil(res)
      assert.equal("ConnectionFailed", err.code)
      assert.equal(1, #srv.log())
    end)

    it("classifies actions without a schema by name", function()
      assert.is_true(operations.is_idempotent("ListBindings"))
      assert.is_true(operations.is_idempotent("GetBinding"))
      assert.is_false(operations.is_idempotent("CreateBinding"))
      assert.is_false(operations.is_idempotent("DeleteBinding"))
      assert.is_true(operations.is_idempotent("ListFigureClusters"))  -- now QueryFigureClusters
      assert.is_true(operations.is_idempotent("GetProject"))
      assert.is_false(operations.is_idempotent("CreateProject"))
      assert.is_false(operations.is_idempotent("Listen"))
      assert.is_true(operations.is_idempotent("CreateProject", true))

      local c = srv.client { max_retries = 3 }
      srv.fault { mode = "reset" }
      local res, err = c:call("CreateProject", { ProjectName = "p1" })
      assert.is_nil(res)
      assert.equal(1, err.attempts)
      srv.fault { mode = "throttle" }
      assert(c:call("CreateProject", { ProjectName = "p1" }))
      assert.equal(3, #logged("CreateProject"))
    end)

    it("sends each mutation on a fresh connection, so nothing resends it by itself", function()
      local c = srv.client {}
      assert(c:list_projects {})
      assert(c:list_projects {})
      assert(c:create_binding(key()))
      assert(c:stop_binding(key()))
      local log = srv.log()
      assert.equal(log[1].conn, log[2].conn, "reads reuse the keep-alive connection")
      assert.are_not.equal(log[2].conn, log[3].conn)
      assert.are_not.equal(log[3].conn, log[4].conn)
      assert.are_not.equal(log[2].conn, log[4].conn)
    end)

    it("says in the C core whether any byte of a request was sent", function()
      local h = assert(core.http { timeout = 5, connect_timeout = 2 })
      local ok, code, _, _, sent = h:request("POST", "http://127.0.0.1:9/", {}, "")
      assert.is_nil(ok)
      assert.equal("ConnectionFailed", code)
      assert.is_false(sent)
      srv.fault { mode = "reset" }
      ok, code, _, _, sent = h:request("POST", srv.url .. "/", {}, "")
      assert.is_nil(ok)
      assert.equal("ConnectionFailed", code)
      assert.is_true(sent)
      -- the flag is per request, not left over from the previous one
      assert.equal(200, (h:request("GET", srv.url .. "/_imm/health", {}, "")))
      ok, code, _, _, sent = h:request("POST", "http://127.0.0.1:9/", {}, "")
      assert.is_nil(ok)
      assert.equal("ConnectionFailed", code)
      assert.is_false(sent)
      h:close()
    end)
  end)

  describe("the generic call", function()
    it("sends a structured parameter as JSON, as IMM expects", function()
      local c = srv.client {}
      local res = assert(c:call("CreateProject", {
        ProjectName = "tagged", Description = "made by the spec",
        Tag = { { Key = "env", Value = "test" }, { Key = "path", Value = "a/b\nc" } },
      }))
      assert.same({ { TagKey = "env", TagValue = "test" }, { TagKey = "path", TagValue = "a/b\nc" } },
        res.Project.Tags)
      -- what went over the wire: one JSON string, no raw newline, signed as sent
      local r = logged("CreateProject")[1]
      assert.equal(200, r.status)
      assert.is_nil(r.params.Tag:find("[\r\n]"))
      assert.is_nil(r.params["Tag.1"])
      assert.equal('[{"Key":"env","Value":"test"},{"Key":"path","Value":"a/b\\nc"}]', r.params.Tag)
      -- and it comes back from ListProjects, which filters by Tag
      local found = {}
      for p, err in c:projects { Tag = { { Key = "env", Value = "test" } } } do
        assert(p, tostring(err))
        found[#found + 1] = p
      end
      assert.equal(1, #found)
      assert.equal("made by the spec", found[1].Description)
      assert.same(res.Project.Tags, found[1].Tags)
    end)

    it("sends the tables of an action without a schema as one JSON text each", function()
      local c = srv.client {}
      local res, err = c:call("DetectNewThings", {
        SourceURI = "oss://bucket/a.jpg",
        Names = { "cat", "dog", 3, true },
        Notification = { MNS = { TopicName = "t" } },
        Targets = { { Type = "x" } },
        Score = 0.5,
      })
      -- the local server has no such action, but it verified the signature first
      assert.is_nil(res)
      assert.equal("InvalidAction.NotFound", err.code)
      local r = srv.log()[1]
      assert.equal("v3-sha256", r.signature)
      assert.equal('["cat","dog",3,true]', r.params.Names)
      assert.is_nil(r.params["Names.1"])
      assert.same({ MNS = { TopicName = "t" } }, cjson.decode(r.params.Notification))
      assert.equal('[{"Type":"x"}]', r.params.Targets)
      assert.equal("0.5", r.params.Score)
      assert.equal("oss://bucket/a.jpg", r.params.SourceURI)
    end)

    it("refuses what it cannot encode unambiguously, before sending", function()
      local c = srv.client {}
      for _, case in ipairs {
        { { Tag = {} }, "empty table" },
        { { Description = "two\nlines" }, "CR or LF" },
        { { F = function() end }, "must be a string, number, boolean or table" },
        { { Deep = { x = function() end } }, "cannot be encoded as JSON" },
        { { N = 0 / 0 }, "finite" },
      } do
        local res, err = c:call(case[3] or "CreateNewThing", case[1])
        assert.is_nil(res)
        assert.equal("InvalidParameter", err.code)
        assert.matches(case[2], err.message)
      end
      -- and, for an action in the schema, anything it does not list
      local res, err = c:call("CreateProject", { ProjectName = "p", Names = { "a" } })
      assert.is_nil(res)
      assert.matches('unknown parameter "Names"', err.message, 1, true)
      assert.equal(0, #srv.log())
    end)

    it("signs and sends GET when asked", function()
      local c = srv.client {}
      local res = assert(c:call("ListProjects", { MaxResults = 2 }, { method = "GET" }))
      assert.equal(2, #res.Projects)
      local v2 = srv.client { signature_algorithm = "v2" }
      assert(v2:call("ListDatasets", { ProjectName = PROJECT }, { method = "GET" }))
      local log = srv.log()
      assert.equal(2, #log)
      for _, r in ipairs(log) do
        assert.equal("GET", r.method)
        assert.equal(200, r.status)
      end
      assert.equal("v2", log[2].signature)
    end)

    it("checks its options", function()
      local c = srv.client {}
      for _, case in ipairs {
        { { method = "PUT" }, "method" },
        { { methd = "GET" }, 'did you mean "method"' },
        { { idempotent = "yes" }, "idempotent" },
        { "GET", "must be a table" },
      } do
        local res, err = c:call("ListProjects", {}, case[1])
        assert.is_nil(res)
        assert.equal("InvalidParameter", err.code)
        assert.matches(case[2], err.message)
      end
      assert.equal(0, #srv.log())
    end)
  end)

  describe("the generic pager", function()
    local function make_projects(c, n)
      for i = 1, n do
        assert(c:call("CreateProject", { ProjectName = string.format("zz-%02d", i) }))
      end
    end

    local function all_names(c)
      local res = assert(c:list_projects { MaxResults = 200 })
      assert.is_nil(res.NextToken)
      local names = {}
      for i, p in ipairs(res.Projects) do names[i] = p.ProjectName end
      return names
    end

    it("pages through ListProjects", function()
      local c = srv.client {}
      make_projects(c, 6)
      local want = all_names(c)
      assert.equal(9, #want)
      srv.control("DELETE", "log")
      local names, pages = {}, 0
      for page, err in c:pages("ListProjects", {}, { items = "Projects", page_size = 2 }) do
        assert(page, tostring(err))
        pages = pages + 1
        assert.is_true(#page.Projects <= 2)
        for _, p in ipairs(page.Projects) do names[#names + 1] = p.ProjectName end
      end
      assert.same(want, names)
      assert.equal(5, pages)
      assert.equal(5, #logged("ListProjects"))
      -- the schema knows where ListProjects keeps its items
      local n = 0
      for p, err in c:projects({ Prefix = "zz-" }, { page_size = 4, max_items = 5 }) do
        assert(p, tostring(err))
        n = n + 1
        assert.matches("^zz%-", p.ProjectName)
      end
      assert.equal(5, n)
    end)

    it("works for an action the schemas do not know, given opts.items", function()
      local c = srv.client {}
      make_projects(c, 3)
      local want = all_names(c)
      local saved = operations.actions.ListProjects
      operations.actions.ListProjects = nil
      finally(function() operations.actions.ListProjects = saved end)
      local names = {}
      for page, err in c:pages("ListProjects", {}, { items = "Projects", page_size = 4 }) do
        assert(page, tostring(err))
        for _, p in ipairs(page.Projects) do names[#names + 1] = p.ProjectName end
      end
      assert.same(want, names)
      local all = assert(require("imm.pager").all(c, "ListProjects", {}, { items = "Projects", page_size = 2 }))
      assert.equal(#want, #all.Projects)
      -- without opts.items it cannot know where the list is
      local it = c:pages("ListProjects", {})
      local ok, err = it()
      assert.is_false(ok)
      assert.matches("opts.items", err.message)
    end)

    it("pages through ListDatasets", function()
      local c = srv.client {}
      local want = {}
      for _, d in ipairs(assert(c:list_datasets { ProjectName = PROJECT, MaxResults = 200 }).Datasets) do
        want[#want + 1] = d.DatasetName
      end
      assert.is_true(#want >= 2)
      local names = {}
      for d, err in c:datasets({ ProjectName = PROJECT }, { page_size = 1 }) do
        assert(d, tostring(err))
        names[#names + 1] = d.DatasetName
      end
      assert.same(want, names)
      -- one page per dataset, after the one call above
      assert.equal(#want + 1, #logged("ListDatasets"))
    end)
  end)
end)
