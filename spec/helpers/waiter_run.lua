-- The waiter scenarios of spec/18, run the same way on a blocking client,
-- inside an imm task (imm.spawn) and inside nginx
-- (spec/openresty/waiter_handler.lua calls run() there), against the
-- hostile server's scripted GetTask replies.
local core = require "imm.core"
local hostile = require "helpers.hostile"

local M = {}

local function task(status, extra)
  return { status = 200, body = '{"RequestId":"r-' .. status .. '","TaskId":"t-1","TaskType":"MediaConvert",'
    .. '"Status":"' .. status .. '"' .. (extra or "") .. "}" }
end
M.running = task("Running", ',"Progress":40')
M.succeeded = task("Succeeded", ',"Progress":100')
M.failed = task("Failed", ',"Code":"InvalidParameter.ResourceContentBad",'
  .. '"Message":"The resource operated InputFile is bad"')
M.created = { status = 200, body = '{"RequestId":"r-create","TaskId":"t-1","EventId":"e-1"}' }
M.unavailable = { status = 503, body = '{"RequestId":"r-503","Code":"ServiceUnavailable","Message":"busy"}' }

M.PARAMS = { ProjectName = "p", TaskType = "MediaConvert", TaskId = "t-1" }

local function fields(err)
  if err == nil then return nil end
  local e = { str = tostring(err) }
  for k, v in pairs(err) do
    local t = type(v)
    if t == "string" or t == "number" or t == "boolean" then e[k] = v end
  end
  if type(err.task) == "table" then e.task_status = err.task.Status end
  if type(err.response) == "table" then e.response_status = err.response.Status end
  if type(err.created) == "table" then e.created_id = err.created.TaskId end
  return e
end

--- Runs scenario `a`: `port`, `transport`, `async` (inside an imm task),
-- `max_retries`, `mode` ("wait_task", "wait" (GetTask with match/fail),
-- "create" (create_media_convert_task with opts.wait)), `opts` (the wait
-- options). Returns `{ status = the result's Status, err = {...}, elapsed }`.
function M.run(a)
  local imm = require "imm"
  local c, cerr = imm.new {
    endpoint = "http://127.0.0.1:" .. a.port, access_key_id = hostile.KEY_ID, access_key_secret = hostile.SECRET,
    timeout = 5, max_retries = a.max_retries or 0, transport = a.transport, async = a.async or nil,
  }
  if not c then return { err = fields(cerr) } end
  local mode = a.mode or "wait_task"
  local function go()
    if mode == "wait_task" then
      return c:wait_task(M.PARAMS, a.opts)
    elseif mode == "wait" then
      return c:wait("GetTask", M.PARAMS, a.opts)
    elseif mode == "create" then
      return c:create_media_convert_task({ ProjectName = "p", Sources = { { URI = "oss://b/in.mp4" } } },
        { wait = a.opts or true })
    end
    error("no such mode " .. tostring(mode))
  end
  local started = core.monotonic()
  local res, err
  if a.async then
    local ok
    ok, res, err = imm.spawn(go):join(30)
    if not ok then res, err = nil, res end
  else
    res, err = go()
  end
  local out = { elapsed = core.monotonic() - started, err = fields(err) }
  if type(res) == "table" then out.status, out.task_id = res.Status, res.TaskId end
  c:close()
  return out
end

return M
