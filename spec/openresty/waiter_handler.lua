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
  local ok, out = pcall(waiter_run.run, a)
  ngx.sleep = sleep  -- luacheck: ignore
  if not ok then out = { raised = tostring(out) } end
  out.naps = naps
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(out))
end

return _M
