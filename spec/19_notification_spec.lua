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
local mns = require "helpers.mns"
local b64 = mns.b64
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
    -- escaped markup and ampersands in the message come back as they were
    t.Message, t.UserData = "a & b <c> &amp; \"d\"", "x&y"
    local n2 = assert(notification.parse(mns_xml(xml_escape(imm_envelope(t)))))
    assert.equal("a & b <c> &amp; \"d\"", n2.Message)
    assert.equal("x&y", n2.UserData)
    -- a bare "&" is not XML
    assert.is_nil(notification.parse(mns_xml(imm_envelope(t))))
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

  it("refuses a large hostile body without a quadratic pattern match", function()
    -- with match("^%s*(.-)%s*$") and "<TopicOwner>(.-)</TopicOwner>" the
    -- first two took over two minutes together; here they are merely refused
    for _, body in ipairs { "{" .. (" "):rep(200000) .. "x", ("<TopicOwner>"):rep(20000),
        "<Notification>" .. ("<TopicOwner>"):rep(20000) .. "<Message>e30=</Message></Notification>" } do
      local n, err = notification.parse(body)
      assert.is_nil(n)
      assert.equal("InvalidNotification", err.code)
    end
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

describe("MNS's string to sign", function()
  it("is the documented example's, from the request's headers in any order", function()
    -- MNS's documentation, "sign a request that is sent to an endpoint"
    local url_b64 = "aHR0cDovL21uc3Rlc3Qub3NzLWNuLWhhbmd6aG91LmFsaXl1bmNzLmNvbS94NTA5X3B1YmxpY19jZXJ0aWZpY2F0ZS5wZW0="
    local headers = {
      ["x-mns-version"] = "2015-06-06", host = "example.com", authorization = "c2lnbmF0dXJl",
      ["x-mns-signing-cert-url"] = url_b64, date = "Wed, 25 May 2016 10:46:14 GMT",
      ["content-type"] = "text/xml;charset=utf-8", ["x-mns-request-id"] = "57458276F0E3D56D7C00054B",
      ["content-md5"] = "ZDgxNjY5ZjFlMDQ5MGM0YWMwMWE5ODlmZDVlYmQxYjI=", ["content-length"] = "300",
    }
    assert.equal("POST\nZDgxNjY5ZjFlMDQ5MGM0YWMwMWE5ODlmZDVlYmQxYjI=\ntext/xml;charset=utf-8\n"
      .. "Wed, 25 May 2016 10:46:14 GMT\nx-mns-request-id:57458276F0E3D56D7C00054B\n"
      .. "x-mns-signing-cert-url:" .. url_b64 .. "\nx-mns-version:2015-06-06\n/notifications",
      notification._string_to_sign("POST", headers, "/notifications"))
    -- the documented certificate URL is the documented host's
    assert.equal("http://mnstest.oss-cn-hangzhou.aliyuncs.com/x509_public_certificate.pem",
      notification._b64decode(url_b64))
    assert.same({ "mnstest.oss-cn-hangzhou.aliyuncs.com" }, notification.MNS_CERT_HOSTS)
    -- an x-mns- header given twice cannot be signed
    headers["x-mns-version"] = { "2015-06-06", "2015-06-07" }
    assert.is_nil(notification._string_to_sign("POST", headers, "/notifications"))
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

-- The MNS push receiver in a real nginx. The spec plays MNS: its own RSA
-- signing certificate, served over HTTPS (a loopback server with the test
-- CA) by the same nginx, and messages signed as MNS documents it.
describe("imm.notification.mns_handler inside nginx", function()
  local fixture = require "helpers.fixture"
  local nginx = require "helpers.nginx"
  local core = require "imm.core"
  local hostile = require "helpers.hostile"
  local ngx_srv, dir, cert_port, http, imm_srv, signer

  local function http_date(t) return mns.http_date(t) end
  local function md5_hex(s) return signer:md5_hex(s) end
  -- POSTs body to path as MNS does (helpers/mns.lua's push)
  local function push(path, body, o) return signer:push(http, ngx_srv.url, path, body, o) end

  local function task_message(id, status)
    local t = {}
    for k, v in pairs(TASK) do t[k] = v end
    t.TaskId, t.Status = id, status or "Succeeded"
    return mns_xml(b64(imm_envelope(t)))
  end
  local function stored(id) return ngx_srv.get("/peek?task=" .. id).stored end

  setup(function()
    dir = fixture.tmpdir()
    local certs = fixture.certs()
    -- IMM, for the example gateway: the hostile server, scripted per test.
    -- Started first: it binds a port of the kernel's choice, which could
    -- otherwise be the one mns.new just found (and released)
    imm_srv = hostile.start()
    -- MNS's signing certificate, and another key that MNS does not hold
    signer = mns.new(dir, certs)
    cert_port = signer.cert_port
    assert(fixture.sh("cd " .. dir .. " && cp www/mns/x509_public_certificate.pem www/mns/cached.pem"
      .. " && echo not a certificate >www/mns/junk.pem"))
    local handler = 'require("imm.notification").mns_handler { dict = "imm_notify", cert_dict = "imm_certs",'
      .. ' cert_hosts = { "127.0.0.1:' .. cert_port .. '" } }()'
    ngx_srv = nginx.run {
      trusted = certs .. "/ca.crt",
      env = "env IMM_ENDPOINT=" .. imm_srv.url .. ";\nenv ALIBABA_CLOUD_ACCESS_KEY_ID=" .. hostile.KEY_ID
        .. ";\nenv ALIBABA_CLOUD_ACCESS_KEY_SECRET=" .. hostile.SECRET .. ";",
      http = "lua_shared_dict imm_notify 1m; lua_shared_dict imm_certs 1m;\n"
        .. "  init_by_lua_block { local t = require('imm_tasks'); t.poll_interval = 0.3; t.task_timeout = 20;"
        .. " t.receiver.cert_dict = 'imm_certs'; t.receiver.cert_hosts = { '127.0.0.1:" .. cert_port .. "' } }\n"
        .. "  " .. signer:server_block(),
      locations = "location /mns/ { content_by_lua_block { " .. handler .. " } }\n"
        .. [[    location = /default { content_by_lua_block {
      require("imm.notification").mns_handler { dict = "imm_notify" }() } }
    location = /await { content_by_lua_block {
      local n, err = require("imm.notification").await("imm_notify", ngx.var.arg_task, tonumber(ngx.var.arg_s))
      ngx.say(require("cjson").encode { found = n ~= nil, TaskId = n and n.TaskId, Status = n and n.Status,
        format = n and n.envelope.format, err = err and err.code }) } }
    location = /await-nodict { content_by_lua_block {
      local n, err = require("imm.notification").await("nodict", "t", 0)
      ngx.say(require("cjson").encode { found = n ~= nil, err = err and err.code }) } }
    location = /convert { content_by_lua_block { require("imm_tasks").convert() } }
    location = /example/mns { content_by_lua_block { require("imm_tasks").receive() } }
    location = /peek { content_by_lua_block {
      local d = ngx.shared.imm_notify
      local stored = d:get(ngx.var.arg_task) ~= nil
      if ngx.var.arg_clear then d:delete(ngx.var.arg_task) end
      ngx.say(require("cjson").encode { stored = stored }) } }]],
    }
    http = assert(core.http { timeout = 20 })
  end)
  teardown(function()
    if http then http:close() end
    if ngx_srv then ngx_srv.stop() end
    if imm_srv then imm_srv.stop() end
    if dir then fixture.sh("rm -rf " .. dir) end
  end)

  it("verifies a signed push, keeps it under its TaskId and answers 204; await returns it", function()
    local status = push("/mns/notifications", task_message("MediaConvert-ok-1"))
    assert.equal(204, status)
    assert.is_true(stored("MediaConvert-ok-1"))
    local r = ngx_srv.get("/await?task=MediaConvert-ok-1&s=0")
    assert.is_true(r.found)
    assert.equal("MediaConvert-ok-1", r.TaskId)
    assert.equal("Succeeded", r.Status)
    assert.equal("mns-xml", r.format)
    -- a query string is part of the signed resource
    assert.equal(204, push("/mns/notifications?topic=imm", task_message("MediaConvert-ok-2")))
    assert.is_true(stored("MediaConvert-ok-2"))
  end)

  it("wakes an await that is already waiting, and returns nil when nothing comes in time", function()
    local out = dir .. "/await-out"
    assert(fixture.sh("curl -s -o " .. out .. " '" .. ngx_srv.url .. "/await?task=MediaConvert-late&s=20' &"))
    core.sleep(0.3)  -- the waiter is in; the push below is what ends its wait
    assert.equal(204, push("/mns/notifications", task_message("MediaConvert-late", "Failed")))
    local body
    for _ = 1, 200 do
      body = fixture.read(out)
      if body and body:find("}", 1, true) then break end
      core.sleep(0.05)
    end
    local r = cjson.decode(body)
    assert.is_true(r.found)
    assert.equal("Failed", r.Status)
    local none = ngx_srv.get("/await?task=MediaConvert-never&s=0.3")
    assert.is_false(none.found)
    assert.is_nil(none.err)
    assert.equal("InvalidParameter", ngx_srv.get("/await-nodict").err)
  end)

  it("caches the certificate by its URL", function()
    local url = "https://127.0.0.1:" .. cert_port .. "/mns/cached.pem"
    assert.equal(204, push("/mns/notifications", task_message("cached-1"), { url = url }))
    assert(os.remove(dir .. "/www/mns/cached.pem"))
    -- not fetched again: the file is gone, the push still verifies
    assert.equal(204, push("/mns/notifications", task_message("cached-2"), { url = url }))
    assert.is_true(stored("cached-2"))
  end)

  it("refuses a signature by another key, a changed body, a wrong Content-MD5 with 403", function()
    assert.equal(403, (push("/mns/notifications", task_message("bad-1"), { key = "other" })))
    assert.equal(403, (push("/mns/notifications", task_message("bad-2"), { sign = false })))
    assert.equal(403, (push("/mns/notifications", task_message("bad-3"), { tamper = task_message("bad-3x") })))
    assert.equal(403, (push("/mns/notifications", task_message("bad-4"), { md5 = b64(md5_hex("other")) })))
    for _, id in ipairs { "bad-1", "bad-2", "bad-3", "bad-3x", "bad-4" } do assert.is_false(stored(id)) end
    assert.matches("signature does not verify", ngx_srv.error_log())
  end)

  it("refuses a certificate URL on a host not allowed, not https, or not serving a certificate", function()
    for i, url in ipairs {
      "https://127.0.0.2:" .. cert_port .. "/mns/x509_public_certificate.pem",
      "http://127.0.0.1:" .. cert_port .. "/mns/x509_public_certificate.pem",
      "https://user@127.0.0.1:" .. cert_port .. "/mns/x509_public_certificate.pem",
      "https://evil.example/?u=https://127.0.0.1:" .. cert_port .. "/mns/x509_public_certificate.pem",
      "https://127.0.0.1:" .. cert_port .. "/mns/junk.pem",
      "https://127.0.0.1:" .. cert_port .. "/mns/missing.pem",
    } do
      assert.equal(403, (push("/mns/notifications", task_message("host-" .. i), { url = url })), url)
      assert.is_false(stored("host-" .. i))
    end
    -- by default only MNS's documented host is allowed
    assert.equal(403, (push("/default", task_message("default-1"))))
    assert.is_false(stored("default-1"))
    assert.matches("not on an allowed https host", ngx_srv.error_log())
  end)

  it("refuses a Date more than 15 minutes away and missing headers with 403, other methods with 405", function()
    assert.equal(403, (push("/mns/notifications", task_message("old-1"), { date = http_date(os.time() - 1000) })))
    assert.equal(403, (push("/mns/notifications", task_message("old-2"), { date = http_date(os.time() + 1000) })))
    assert.equal(403, (push("/mns/notifications", task_message("old-3"), { date = "yesterday" })))
    for _, h in ipairs { "authorization", "x-mns-signing-cert-url", "date", "content-md5" } do
      assert.equal(403, (push("/mns/notifications", task_message("drop-" .. h), { drop = h })), h)
      assert.is_false(stored("drop-" .. h))
    end
    assert.equal(405, (http:request("GET", ngx_srv.url .. "/mns/notifications", {}, "")))
  end)

  it("answers 400 to a signed body that is not a task notification", function()
    for _, body in ipairs { "hello", mns_xml(b64('{"ProjectName":"p","Success":true}')), "{}" } do
      local status, resp = push("/mns/notifications", body)
      assert.equal(400, status)
      assert.matches("InvalidNotification", resp .. " InvalidNotification")
    end
  end)

  -- examples/openresty/imm_tasks.lua: starts a conversion against IMM's
  -- scripted replies (the hostile server) and answers when the task ended.
  describe("the task gateway example (examples/openresty/imm_tasks.lua)", function()
    local CREATED = { status = 200, body = '{"RequestId":"r-1","TaskId":"OfficeConversion-gw1","EventId":"e-1"}' }
    local function get_task(status, code, message)
      return { status = 200, body = cjson.encode { RequestId = "r-2", TaskId = "OfficeConversion-gw1",
        TaskType = "OfficeConversion", ProjectName = "immtest", Status = status, Code = code or "",
        Message = message or "" } }
    end
    local CONVERT = "/convert?project=immtest&source=oss://b/a.docx&target=oss://b/out/a.pdf"
    local function clear() ngx_srv.get("/peek?task=OfficeConversion-gw1&clear=1") end

    it("answers when the notification arrives, while GetTask still says Running", function()
      clear()
      imm_srv.script { CREATED, get_task("Running") }
      local out = dir .. "/gw-out"
      os.remove(out)
      assert(fixture.sh("curl -s -o " .. out .. " -w '%{http_code}' '" .. ngx_srv.url .. CONVERT
        .. "' >" .. out .. ".code &"))
      -- the gateway has asked GetTask at least once: the task is running
      for _ = 1, 200 do
        if #imm_srv.log() >= 2 then break end
        core.sleep(0.05)
      end
      assert.equal(204, push("/example/mns", task_message("OfficeConversion-gw1")))
      local body
      for _ = 1, 200 do
        body = fixture.read(out)
        if body and body:find("}", 1, true) then break end
        core.sleep(0.05)
      end
      local r = cjson.decode(body)
      assert.equal("notification", r.via)
      assert.equal("Succeeded", r.Status)
      assert.equal("200", fixture.read(out .. ".code"))
      local log = imm_srv.log()
      assert.equal("CreateOfficeConversionTask", log[1].headers["x-acs-action"])
      assert.equal("GetTask", log[2].headers["x-acs-action"])
    end)

    it("falls back to polling GetTask when no notification comes", function()
      clear()
      imm_srv.script { CREATED, get_task("Running"), get_task("Succeeded") }
      local status, body = http:request("GET", ngx_srv.url .. CONVERT, {}, "")
      assert.equal(200, status, body)
      local r = cjson.decode(body)
      assert.equal("polling", r.via)
      assert.equal("Succeeded", r.Status)
      local log = imm_srv.log()
      assert.equal(3, #log)
      assert.equal("GetTask", log[3].headers["x-acs-action"])
      assert.equal("OfficeConversion-gw1", log[3].params.TaskId)
      assert.equal("OfficeConversion", log[3].params.TaskType)
    end)

    it("answers 502 with the task's Code and Message when it failed", function()
      clear()
      imm_srv.script { CREATED, get_task("Failed", "InvalidArgument", "the source is not a document") }
      local status, body = http:request("GET", ngx_srv.url .. CONVERT, {}, "")
      assert.equal(502, status, body)
      local r = cjson.decode(body)
      assert.equal("Failed", r.Status)
      assert.equal("InvalidArgument", r.Code)
      assert.equal("the source is not a document", r.Message)
    end)
  end)
end)


-- End to end, as in production but on loopback: imm inside nginx creates a
-- task on the local IMM server (server/imm_server, through imm.testing),
-- which ends it after its task delay and pushes the notification, signed
-- as MNS signs it with the spec's key, to the MNS receiver of that nginx;
-- the receiver verifies it (its certificate fetched over HTTPS) and wakes
-- the wait_task waiting with opts.notifications.
describe("end to end: imm in nginx, the local IMM server and its signed pushes", function()
  local fixture = require "helpers.fixture"
  local nginx = require "helpers.nginx"
  local testing = require "imm.testing"
  local core = require "imm.core"
  local ngx_srv, dir, srv, signer
  local TASK_DELAY = 2   -- seconds the server's tasks stay Running

  setup(function()
    dir = fixture.tmpdir()
    local certs = fixture.certs()
    -- started before mns.new picks the certificate's port (see helpers/mns.lua)
    srv = assert(testing.start { args = { "--task-delay", tostring(TASK_DELAY) } })
    signer = mns.new(dir, certs)
    local hosts = "{ '" .. signer.cert_host .. "' }"
    ngx_srv = nginx.run {
      trusted = certs .. "/ca.crt",
      env = "env IMM_ENDPOINT=" .. srv.url .. ";\nenv ALIBABA_CLOUD_ACCESS_KEY_ID=" .. testing.access_key_id
        .. ";\nenv ALIBABA_CLOUD_ACCESS_KEY_SECRET=" .. testing.access_key_secret .. ";\nenv IMM_MNS_TOPIC=imm-tasks;",
      http = "lua_shared_dict imm_notify 1m;\n"
        .. "  init_by_lua_block { local t = require('imm_tasks'); t.poll_interval = 30; t.task_timeout = 60;"
        .. " t.receiver.cert_hosts = " .. hosts .. " }\n  " .. signer:server_block(),
      locations = "location = /mns/notifications { content_by_lua_block { require('imm.notification')"
        .. ".mns_handler { dict = 'imm_notify', cert_hosts = " .. hosts .. " }() } }\n"
        .. [[    location = /task { content_by_lua_block { require("task_e2e_handler").run() } }
    location = /convert { content_by_lua_block { require("imm_tasks").convert() } }
    location = /example/mns { content_by_lua_block { require("imm_tasks").receive() } }
    location = /peek { content_by_lua_block {
      ngx.say(require("cjson").encode { stored = ngx.shared.imm_notify:get(ngx.var.arg_task) ~= nil }) } }]],
    }
  end)
  teardown(function()
    -- the server first: stopping an nginx still holding a hung wait raises
    if srv then srv:stop() end
    if ngx_srv then ngx_srv.stop() end
    if dir then fixture.sh("rm -rf " .. dir) end
  end)

  -- the server pushes to `path` of the nginx, signed with `key` (the MNS key by default)
  local function target(path, key)
    assert(srv:notify_target(ngx_srv.url .. path, { signing_key = signer:key_pem(key), cert_url = signer.cert_url }))
  end
  local function sent(task_id)
    for _, rec in ipairs(assert(srv:control("GET", "notifications"))) do
      if rec.TaskId == task_id then return rec end
    end
  end
  local function get_tasks(task_id)
    local n = 0
    for _, rec in ipairs(assert(srv:log())) do
      if rec.action == "GetTask" and rec.params.TaskId == task_id then n = n + 1 end
    end
    return n
  end
  -- GETs path on the nginx in the background, and waits for the answer
  -- (within 20 s: well before the 30 s poll interval, so only the push ends a wait)
  local gets = 0
  local function get(path)
    gets = gets + 1  -- a file per request: a late answer cannot pass for the next one's
    local body, code = mns.background_get(ngx_srv.url .. path, dir .. "/out-" .. gets)(20)
    assert(body, path .. ": no answer within 20 s\n" .. ngx_srv.error_log():sub(-2000))
    return cjson.decode(body), code
  end

  it("wait_task wakes on the server's signed push, verified by mns_handler", function()
    target("/mns/notifications")
    local r = get("/task?user=job-7")
    assert.is_nil(r.raised)
    assert.is_nil(r.err, cjson.encode(r))
    assert.equal("Succeeded", r.status)
    assert.equal("job-7", r.user_data)
    -- woken by the notification (await returned it), not by the 30 s interval
    assert.equal(1, #r.awaits, cjson.encode(r.awaits))
    assert.is_true(r.awaits[1].woke)
    assert.equal("Succeeded", r.awaits[1].status)
    assert.equal(2, get_tasks(r.task_id), "one GetTask before the push, one after")
    local rec = sent(r.task_id)
    assert.equal(204, rec.status, cjson.encode(rec))
    assert.is_true(ngx_srv.get("/peek?task=" .. r.task_id).stored)
  end)

  it("a Failed outcome ends the wait with TaskFailed and the task's Code and Message", function()
    target("/mns/notifications")
    assert(srv:task_outcome { TaskType = "MediaConvert", Code = "InvalidFile", Message = "the source is not a video" })
    local r = get("/task")
    assert.equal("TaskFailed", r.err and r.err.code, cjson.encode(r))
    assert.equal("InvalidFile", r.err.task_code)
    assert.equal("the source is not a video", r.err.task_message)
    assert.equal(1, #r.awaits)
    assert.is_true(r.awaits[1].woke)
    assert.equal("Failed", r.awaits[1].status)
    assert.equal(204, sent(r.err.created).status)
  end)

  it("the receiver refuses a push signed with another key, and an unsigned one", function()
    local c = assert(srv:client { timeout = 5 })
    for _, how in ipairs { "other", "unsigned" } do
      if how == "other" then
        target("/mns/notifications", "other")
      else
        assert(srv:notify_target(ngx_srv.url .. "/mns/notifications"))
      end
      -- ends at once (delay 0), so the push goes out without a wait
      assert(srv:task_outcome { TaskType = "MediaConvert", Status = "Succeeded", delay = 0 })
      local res = assert(c:create_media_convert_task { ProjectName = "immtest",
        Sources = { { URI = "oss://imm-test/in.mp4" } }, Targets = { { URI = "oss://imm-test/o.mp4",
        Container = "mp4" } }, Notification = { MNS = { TopicName = "imm-tasks" } } })
      local rec
      for _ = 1, 200 do
        rec = sent(res.TaskId)
        if rec then break end
        core.sleep(0.05)
      end
      assert.equal(403, rec and rec.status, how .. ": " .. cjson.encode(rec or {}))
      assert.is_false(ngx_srv.get("/peek?task=" .. res.TaskId).stored)
    end
    c:close()
  end)

  it("the task gateway example answers from the server's signed push", function()
    target("/example/mns")
    local r, code = get("/convert?project=immtest&source=oss://imm-test/a.docx&target=oss://imm-test/out/a.pdf")
    assert.equal(200, code, cjson.encode(r))
    assert.equal("notification", r.via)
    assert.equal("Succeeded", r.Status)
    assert.equal(204, sent(r.TaskId).status)

    assert(srv:task_outcome { TaskType = "OfficeConversion", Code = "InvalidFile", Message = "not a document" })
    r, code = get("/convert?project=immtest&source=oss://imm-test/b.txt&target=oss://imm-test/out/b.pdf")
    assert.equal(502, code, cjson.encode(r))
    assert.equal("notification", r.via)
    assert.equal("Failed", r.Status)
    assert.equal("InvalidFile", r.Code)
    assert.equal("not a document", r.Message)
  end)
end)
