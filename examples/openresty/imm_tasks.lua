-- An OpenResty gateway that converts a document and answers when IMM's
-- notification says the task has ended, polling GetTask meanwhile in case
-- no notification comes.
--
--   lua_shared_dict imm_notify 10m;
--   location = /convert { content_by_lua_block { require("imm_tasks").convert() } }
--   location = /mns/notifications { content_by_lua_block { require("imm_tasks").receive() } }
--
--   POST /convert?project=P&source=oss://bucket/a.docx&target=oss://bucket/out/a.pdf[&type=pdf]
--
-- /convert starts CreateOfficeConversionTask (with a Notification to the MNS
-- topic named by IMM_MNS_TOPIC, when set), then waits in rounds: up to
-- `poll_interval` seconds for the notification (imm.notification.await),
-- then one GetTask; it answers 200 with the task's status when it
-- Succeeded, 502 when it Failed, 504 when `task_timeout` passes first.
-- The MNS subscription of that topic pushes to /mns/notifications, whose
-- handler verifies MNS's signature and wakes the waiting request, in any
-- worker of this nginx. Both run on cosockets: nothing blocks a worker.
local imm = require "imm"
local notification = require "imm.notification"
local core = require "imm.core"

local ngx = ngx
local getenv = os.getenv
local _M = {}

-- imm's own JSON encoder (imm.core.json_encode): no lua-cjson to install
local function json(v)
  local text, err = core.json_encode(v)
  return text or core.json_encode { error = "EncodeError", message = err }
end

--- Client options beyond the environment's, and the waiting.
_M.options = { deadline = 5, timeout = 2, connect_timeout = 1 }
_M.dict = "imm_notify"      -- the lua_shared_dict the receiver writes
_M.poll_interval = 5        -- seconds of waiting for the notification between GetTask calls
_M.task_timeout = 120       -- seconds before the gateway gives up (504)
--- The receiver's options (imm.notification.mns_handler); the default
-- accepts certificates from MNS's documented host only.
_M.receiver = { dict = "imm_notify" }

local client, receive

local function get_client()
  if client then return client end
  local o = {}
  for k, v in pairs(_M.options) do o[k] = v end
  local ep = getenv("IMM_ENDPOINT")
  if ep and ep ~= "" then o.endpoint = ep else o.region = getenv("ALIBABA_CLOUD_REGION_ID") end
  local c, err = imm.new(o)
  if not c then return nil, err end
  client = c
  return c
end

local function answer(status, t)
  ngx.status = status
  ngx.header.content_type = "application/json"
  ngx.say(json(t))
  return ngx.exit(status)
end

local TERMINAL = { Succeeded = true, Failed = true, Cancelled = true }

local function done(task, via)
  local status = task.Status == "Succeeded" and 200 or 502
  return answer(status, { TaskId = task.TaskId, Status = task.Status, Code = task.Code,
    Message = task.Message, via = via })
end

--- POST /convert: starts the conversion and answers when it has ended.
function _M.convert()
  local a = ngx.req.get_uri_args()
  if not a.project or not a.source or not a.target then
    return answer(400, { error = "MissingParameter", message = "add ?project=P&source=oss://...&target=oss://..." })
  end
  local c, cerr = get_client()
  if not c then return answer(500, { error = cerr.code, message = cerr.message }) end
  local params = { ProjectName = a.project, SourceURI = a.source, TargetURI = a.target,
    TargetType = a.type or "pdf" }
  local topic = getenv("IMM_MNS_TOPIC")
  if topic and topic ~= "" then params.Notification = { MNS = { TopicName = topic } } end
  local res, err = c:create_office_conversion_task(params)
  if not res then
    ngx.log(ngx.ERR, tostring(err))
    return answer(err.code == "Timeout" and 504 or 502, { error = err.code, message = err.message })
  end
  local id = res.TaskId
  local give_up = ngx.now() + _M.task_timeout
  while true do
    -- the notification, if MNS pushes it while we wait
    local n, nerr = notification.await(_M.dict, id, math.min(_M.poll_interval, math.max(0, give_up - ngx.now())))
    if n then return done(n, "notification") end
    if nerr then ngx.log(ngx.ERR, tostring(nerr)) end
    -- else ask IMM: the notification may be lost, or not configured
    local task, terr = c:get_task { ProjectName = a.project, TaskType = "OfficeConversion", TaskId = id }
    if task and TERMINAL[task.Status] then return done(task, "polling") end
    if terr then ngx.log(ngx.WARN, tostring(terr)) end
    if ngx.now() >= give_up then
      return answer(504, { TaskId = id, Status = task and task.Status, error = "WaitTimeout" })
    end
  end
end

--- POST /mns/notifications: MNS's HTTP push endpoint.
function _M.receive()
  receive = receive or notification.mns_handler(_M.receiver)
  return receive()
end

return _M
