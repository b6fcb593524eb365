-- Runs a spec/18 waiter scenario inside nginx: the JSON in ?a= names it
-- (see helpers.waiter_run), and the outcome goes back as JSON, with how many
-- times the wait slept through ngx.sleep.
local cjson = require "cjson"
local waiter_run = require "helpers.waiter_run"

local _M = {}

function _M.run()
  local a = cjson.decode(ngx.var.arg_a and ngx.unescape_uri(ngx.var.arg_a) or "{}")
  local sleep, naps = ngx.sleep, 0
  ngx.sleep = function(s)  -- luacheck: ignore
    naps = naps + 1
    return sleep(s)
  end
  -- a stand-in for the push receiver's imm.notification (docs/notifications.md):
  -- a notification "arrives" at once for every await
  local awaits = {}
  local real = package.loaded["imm.notification"]
  if a.fake_notification then
    package.loaded["imm.notification"] = { await = function(dict, id, seconds)
      awaits[#awaits + 1] = { dict, id, seconds }
      return { TaskId = id, Status = "Succeeded" }
    end }
  elseif a.watch_awaits then
    -- the real await, watched: what each call was asked and what it returned
    local notification = require "imm.notification"
    package.loaded["imm.notification"] = setmetatable({ await = function(dict, id, seconds)
      local n, err = notification.await(dict, id, seconds)
      awaits[#awaits + 1] = { dict = dict, id = id, seconds = seconds, woke = n ~= nil, err = err and err.code }
      return n, err
    end }, { __index = notification })
  end
  local ok, out = pcall(waiter_run.run, a)
  package.loaded["imm.notification"] = real
  ngx.sleep = sleep  -- luacheck: ignore
  if ok then out.awaits = awaits end
  if not ok then out = { raised = tostring(out) } end
  out.naps = naps
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(out))
end

return _M
