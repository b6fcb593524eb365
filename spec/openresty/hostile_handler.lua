-- Runs a spec/16 scenario inside nginx: the JSON in ?a= names it (see
-- helpers.hostile.run), and the outcome goes back as JSON, so the spec
-- judges the ngx transport by the same table as the libcurl one.
local cjson = require "cjson"
local hostile = require "helpers.hostile"

local _M = {}

function _M.run()
  local a = cjson.decode(ngx.var.arg_a and ngx.unescape_uri(ngx.var.arg_a) or "{}")
  local out = hostile.run(a)
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(out))
end

return _M
