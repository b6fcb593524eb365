-- The local IMM server through imm.testing (issue 22, part 3): tasks with
-- outcomes set through the control API, canned replies and errors, the
-- documented shape of an analysis action, validation, bad control input.
local testing = require "imm.testing"

describe("imm.testing and the local IMM server", function()
  local srv, c
  setup(function()
    srv = assert(testing.start { args = { "--task-delay", "0.2" } })
    c = assert(srv:client { timeout = 5 })
  end)
  teardown(function() if srv then srv:stop() end end)
  before_each(function() assert(srv:reset()) end)

  it("starts a task that turns Succeeded after the task delay", function()
    local res, err = c:create_media_convert_task { ProjectName = "immtest", UserData = "u",
      Sources = { { URI = "oss://bucket/in.mp4" } } }
    assert.is_table(res, tostring(err))
    assert.matches("^MediaConvert%-", res.TaskId)
    local key = { ProjectName = "immtest", TaskType = "MediaConvert", TaskId = res.TaskId }
    local t = assert(c:get_task(key))
    assert.equal("Running", t.Status)
    assert.equal("u", t.UserData)
    require("imm.core").sleep(0.35)
    t = assert(c:get_task(key))
    assert.equal("Succeeded", t.Status)
  end)

  it("fails a task as a queued outcome says", function()
    assert(srv:settings { task_delay = 0 })
    assert(srv:task_outcome { TaskType = "OfficeConversion", Code = "InvalidFile", Message = "not a document" })
    local res = assert(c:create_office_conversion_task { ProjectName = "immtest", SourceURI = "oss://b/a.docx",
      TargetType = "pdf" })
    local t = assert(c:get_task { ProjectName = "immtest", TaskType = "OfficeConversion", TaskId = res.TaskId })
    assert.same({ "Failed", "InvalidFile", "not a document" }, { t.Status, t.Code, t.Message })
    local list = assert(c:list_tasks { ProjectName = "immtest", Status = "Failed" })
    assert.equal(1, #list.Tasks)
    assert.equal(res.TaskId, list.Tasks[1].TaskId)
  end)

  it("answers with a queued reply, then as before", function()
    assert(srv:reply("GetProject", { Project = { ProjectName = "canned", Description = "queued" } }))
    local p = assert(c:get_project { ProjectName = "immtest" })
    assert.equal("queued", p.Project.Description)
    p = assert(c:get_project { ProjectName = "immtest" })
    assert.equal("immtest", p.Project.ProjectName)
  end)

  it("answers with a queued error, only for the matching request", function()
    assert(srv:error("DetectImageLabels", "InvalidFile.Unsupported", "no such image", 400,
      { match = { SourceURI = "oss://b/2.jpg" } }))
    assert(c:detect_image_labels { ProjectName = "immtest", SourceURI = "oss://b/1.jpg" })
    local res, err = c:detect_image_labels { ProjectName = "immtest", SourceURI = "oss://b/2.jpg" }
    assert.is_nil(res)
    assert.same({ "InvalidFile.Unsupported", "no such image", 400 }, { err.code, err.message, err.status })
  end)

  it("answers an analysis action with its documented fields, the same for the same request", function()
    local a = assert(c:detect_media_meta { ProjectName = "immtest", SourceURI = "oss://b/v.mp4" })
    local b = assert(c:detect_media_meta { ProjectName = "immtest", SourceURI = "oss://b/v.mp4" })
    for _, f in ipairs { "Duration", "FormatName", "VideoStreams", "VideoWidth" } do
      assert.is_not_nil(a[f], f)
    end
    assert.is_number(a.Duration)
    assert.equal(a.FormatName, b.FormatName)
  end)

  it("returns nil, err for a control call the server refuses", function()
    local res, err = srv:task_outcome { Status = "Maybe" }
    assert.is_nil(res)
    assert.equal("ControlFailed", err.code)
    assert.equal(400, err.status)
    res, err = srv:notify_target("http://example.com/x")
    assert.is_nil(res)
    assert.equal(400, err.status)
  end)

  it("reports a server that cannot start", function()
    local s, err = testing.start { args = { "--task-delay", "-1" }, timeout = 5 }
    assert.is_nil(s)
    assert.equal("ServerNotStarted", err.code)
  end)
end)
