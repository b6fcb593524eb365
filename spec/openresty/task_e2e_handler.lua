-- spec/19's end to end: imm inside nginx creates a task on the local IMM
-- server and waits for it with opts.notifications; the server's signed push
-- goes to the receiver (mns_handler) of the same nginx, which wakes the wait.
-- The real imm.notification.await is watched: what each call returned.
local cjson = require "cjson"
local imm = require "imm"

local _M = {}

local client

function _M.run()
  local a = ngx.req.get_uri_args()
  -- the endpoint and the keys come from the environment (nginx.conf's env lines)
  client = client or assert(imm.new { endpoint = os.getenv("IMM_ENDPOINT"), timeout = 5, max_retries = 0 })
  local notification = require "imm.notification"
  local awaits = {}
  package.loaded["imm.notification"] = setmetatable({ await = function(dict, id, seconds)
    local n, err = notification.await(dict, id, seconds)
    awaits[#awaits + 1] = { id = id, seconds = seconds, woke = n ~= nil, status = n and n.Status,
      err = err and err.code }
    return n, err
  end }, { __index = notification })
  local ok, res, err = pcall(client.create_media_convert_task, client, {
    ProjectName = "immtest", Sources = { { URI = "oss://imm-test/in.mp4" } },
    Targets = { { URI = "oss://imm-test/out/in.mp4", Container = "mp4" } },
    Notification = { MNS = { TopicName = "imm-tasks" } }, UserData = a.user,
  }, { wait = { interval = 30, timeout = 60, notifications = "imm_notify" } })
  package.loaded["imm.notification"] = notification
  local out = { awaits = awaits }
  if not ok then
    out.raised = tostring(res)
  elseif res then
    out.status, out.task_id, out.user_data = res.Status, res.TaskId, res.UserData
  else
    out.err = { code = err.code, message = err.message, task_code = err.task_code, task_message = err.task_message,
      created = err.created and err.created.TaskId }
  end
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(out))
end

return _M
