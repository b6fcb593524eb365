-- imm.notification: IMM's task notifications as MNS, RocketMQ and
-- EventBridge deliver them (parse, on every runtime), and the MNS push
-- receiver inside a real nginx (the nginx part is in the second describe).
local notification = require "imm.notification"
local cjson = require "cjson"

-- The task message of IMM's documented example (CreateMediaConvertTask),
-- and IMM's envelope around it: the message as JSON text in `content`.
local TASK = {
  ProjectName = "test-project", DatasetName = "", RequestId = "F9F8F37F-3188-5EFE-9292-9F0AF98D0000",
  StartTime = "2024-08-20T07:03:07.36Z", EndTime = "2024-08-20T07:03:08.57Z", UserData = "{\"job\":7}",
  TaskType = "MediaConvert", TaskId = "MediaConvert-db7faf5a-99c5-4afe-8309-d167fe530000",
  Status = "Succeeded", Code = "", Message = "", EventSourceId = "",
  Sources = { { URI = "oss://your-bucket/immtest/test.mp4" } },
}
local function imm_envelope(task)
  return cjson.encode {
    id = "25E-1uBJUMOshisffTNk8Nr3GIj0000", source = "acs.imm", type = "imm:Task:MediaConvert",
    subject = "acs:imm:cn-beijing:1023210024670000:test-project/imm:Task:MediaConvert",
    time = "1724133063161", content = cjson.encode(task or TASK),
  }
end
local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function b64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local q = { math.floor(n / 262144), math.floor(n / 4096) % 64, math.floor(n / 64) % 64, n % 64 }
    for j = 1, 4 do out[#out + 1] = B64:sub(q[j] + 1, q[j] + 1) end
    if not c then out[#out] = "=" end
    if not b then out[#out - 1] = "=" end
  end
  return table.concat(out)
end
local function xml_escape(s)
  return (s:gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"):gsub('"', "&quot;"))
end
local function mns_xml(message)
  return '<?xml version="1.0" encoding="utf-8"?>\n<Notification xmlns="http://mns.aliyuncs.com/doc/v1/">'
    .. "<TopicOwner>1023210024670000</TopicOwner><TopicName>imm-tasks</TopicName>"
    .. "<Subscriber>1023210024670000</Subscriber><SubscriptionName>gw</SubscriptionName>"
    .. "<MessageId>6CC4D900CA59A2CD-1-15180534A8F-200000001</MessageId>"
    .. "<Message>" .. message .. "</Message>"
    .. "<MessageMD5>F1E92841751D795AB325861034B50000</MessageMD5>"
    .. "<PublishTime>1449556920975</PublishTime></Notification>"
end

local function check_task(n)
  assert.equal(TASK.TaskId, n.TaskId)
  assert.equal("MediaConvert", n.TaskType)
  assert.equal("Succeeded", n.Status)
  assert.equal("test-project", n.ProjectName)
  assert.equal('{"job":7}', n.UserData)
  assert.equal(TASK.StartTime, n.StartTime)
  assert.equal(TASK.EndTime, n.EndTime)
  assert.equal("oss://your-bucket/immtest/test.mp4", n.Sources[1].URI)
end

describe("imm.notification.parse", function()
  it("reads IMM's documented message inside an MNS XML notification, base64-encoded", function()
    local n, err = notification.parse(mns_xml(b64(imm_envelope())))
    assert.is_nil(err)
    check_task(n)
    assert.equal("mns-xml", n.envelope.format)
    assert.is_true(n.envelope.base64)
    assert.equal("6CC4D900CA59A2CD-1-15180534A8F-200000001", n.envelope.MessageId)
    assert.equal("imm-tasks", n.envelope.TopicName)
    assert.equal("imm:Task:MediaConvert", n.envelope.event_type)
    assert.equal("25E-1uBJUMOshisffTNk8Nr3GIj0000", n.envelope.event_id)
  end)

  it("reads the message as escaped XML text, and in a CDATA section", function()
    local n = assert(notification.parse(mns_xml(xml_escape(imm_envelope()))))
    check_task(n)
    assert.is_nil(n.envelope.base64)
    n = assert(notification.parse(mns_xml("<![CDATA[" .. imm_envelope() .. "]]>")))
    check_task(n)
    -- a numeric character reference becomes UTF-8
    local t = {}
    for k, v in pairs(TASK) do t[k] = v end
    t.Message = "caf\195\169"
    local s = xml_escape(imm_envelope(t)):gsub("caf\195\169", "caf&#xE9;")
    assert.equal("caf\195\169", assert(notification.parse(mns_xml(s))).Message)
  end)

  it("reads MNS's JSON format, the message base64-encoded or not", function()
    for _, m in ipairs { imm_envelope(), b64(imm_envelope()) } do
      local n = assert(notification.parse(cjson.encode {
        TopicOwner = "1023210024670000", TopicName = "imm-tasks", Subscriber = "1023210024670000",
        SubscriptionName = "gw", MessageId = "6CC4D900CA59A2CD-1-15180534A8F-200000002", Message = m,
        MessageMD5 = "F1E92841751D795AB325861034B50000", PublishTime = "1449556920975" }))
      check_task(n)
      assert.equal("mns-json", n.envelope.format)
      assert.equal("6CC4D900CA59A2CD-1-15180534A8F-200000002", n.envelope.MessageId)
    end
  end)

  it("reads MNS's SIMPLIFIED format and RocketMQ's body: IMM's envelope alone, or in base64", function()
    check_task(assert(notification.parse(imm_envelope())))
    local n = assert(notification.parse("  " .. b64(imm_envelope()) .. "\n"))
    check_task(n)
    assert.equal("plain", n.envelope.format)
    assert.is_true(n.envelope.base64)
    -- and the task message without IMM's envelope
    check_task(assert(notification.parse(cjson.encode(TASK))))
  end)

  it("reads an EventBridge CloudEvent, data as an object or as JSON text", function()
    local ev = { specversion = "1.0", id = "45ef4dewdwe1-7c35-447a-bd93-fab****", source = "acs.imm",
      type = "imm:Task:MediaConvert", subject = "acs:imm:cn-beijing:1023210024670000:test-project",
      time = "2024-08-20T07:03:08Z", datacontenttype = "application/json;charset=utf-8" }
    ev.data = TASK
    local n = assert(notification.parse(cjson.encode(ev)))
    check_task(n)
    assert.equal("cloudevents", n.envelope.format)
    assert.equal("imm:Task:MediaConvert", n.envelope.event_type)
    ev.data = cjson.encode(TASK)
    check_task(assert(notification.parse(cjson.encode(ev))))
    ev.data = cjson.decode(imm_envelope())  -- IMM's envelope as the data
    check_task(assert(notification.parse(cjson.encode(ev))))
  end)

  it("keeps a failed task's Code and Message", function()
    local t = {}
    for k, v in pairs(TASK) do t[k] = v end
    t.Status, t.Code, t.Message = "Failed", "ResourceNotFound", "The specified resource oss://x is not found."
    local n = assert(notification.parse(mns_xml(b64(imm_envelope(t)))))
    assert.equal("Failed", n.Status)
    assert.equal("ResourceNotFound", n.Code)
    assert.equal("The specified resource oss://x is not found.", n.Message)
  end)

  it("returns nil, InvalidNotification for anything else, never raising", function()
    local no_task = cjson.encode { ProjectName = "p", DatasetName = "d", Success = true, Files = {} }
    local cases = {
      nil_body = nil, number = 42, empty = "", blank = " \n ",
      not_json = "{nope", array = "[1,2]", json_string = '"TaskId"',
      other_xml = "<Message><Message>x</Message></Message>",
      no_message = mns_xml(""):gsub("<Message></Message>", ""),
      message_not_json = mns_xml("hello"),
      bad_entity = mns_xml("&bogus;" .. xml_escape(imm_envelope())),
      bad_base64 = mns_xml("e30=!" .. b64(imm_envelope())),
      base64_of_text = b64("hello world!"),
      no_task_id = no_task,  -- IndexFileMeta's message: not a task
      task_id_number = cjson.encode { TaskId = 5, Status = "Succeeded" },
      no_status = cjson.encode { TaskId = "t-1" },
      content_not_json = cjson.encode { source = "acs.imm", type = "imm:Task:X", content = "{" },
      content_number = cjson.encode { source = "acs.imm", type = "imm:Task:X", content = 1 },
      cloudevent_data_number = cjson.encode { specversion = "1.0", data = 3 },
      user_data_table = cjson.encode { TaskId = "t-1", Status = "Running", UserData = { 1 } },
      plain_text = "Succeeded",
      nul = "\0",
    }
    local n_cases = 0
    for name, body in pairs(cases) do
      n_cases = n_cases + 1
      local ok, n, err = pcall(notification.parse, body)
      assert(ok, name .. " raised: " .. tostring(n))
      assert(n == nil, name .. " was accepted")
      assert.equal("InvalidNotification", err.code, name)
      assert.is_false(err.retryable)
      assert.is_string(err.message)
    end
    local ok, n, err = pcall(notification.parse, nil)
    assert(ok and n == nil and err.code == "InvalidNotification")
    assert.is_true(n_cases >= 20)
  end)

  it("decodes base64 strictly", function()
    local d = notification._b64decode
    for _, s in ipairs { "", "a", "abc", "ab=c", "a===", "ab==cd==", "ab!d" } do
      assert.is_nil(d(s), s)
    end
    assert.equal("f", d("Zg=="))
    assert.equal("fo", d("Zm8="))
    assert.equal("foo", d("Zm9v"))
    assert.equal("\0\255\128", d("AP+A"))
    assert.equal(imm_envelope(), d(b64(imm_envelope())))
  end)
end)

describe("imm.notification.await outside nginx", function()
  it("returns an error value: it waits with ngx.sleep only", function()
    local n, err = notification.await("imm_notify", "t-1", 1)
    assert.is_nil(n)
    assert.equal("UnsupportedPhase", err.code)
  end)

  it("returns InvalidParameter for bad arguments", function()
    for _, args in ipairs { { nil, "t", 1 }, { "d", "", 1 }, { "d", "t", -1 }, { "d", "t", "1" },
        { "d", "t", 0 / 0 }, { "d", {}, 1 }, { "d", "t", math.huge } } do
      local n, err = notification.await(args[1], args[2], args[3])
      assert.is_nil(n)
      assert.equal("InvalidParameter", err.code)
    end
  end)
end)
