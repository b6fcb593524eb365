-- An OpenResty handler that streams a project's bindings as NDJSON.
--
--   location = /bindings { content_by_lua_block { require("imm_bindings").list() } }
--   GET /bindings?project=immtest[&dataset=NAME]
--
-- imm picks ngx_lua cosockets by itself here, so a slow IMM reply never
-- stalls the worker. Credentials and the endpoint come from the environment
-- (see the `env` lines in nginx.conf), through imm's default client.
local imm = require "imm"
local cjson = require "cjson.safe"

local ngx = ngx
local _M = {}

local function fail(status, code, message)
  ngx.status = status
  ngx.header.content_type = "application/json"
  ngx.say(cjson.encode { error = code, message = message })
end

function _M.list()
  local project = ngx.var.arg_project
  if not project or project == "" then
    return fail(400, "MissingParameter", "add ?project=NAME")
  end
  local params = { ProjectName = project, DatasetName = ngx.var.arg_dataset }
  local sent = 0
  for b, err in imm.bindings(params, { page_size = 100 }) do
    if not b then
      ngx.log(ngx.ERR, "imm: ", tostring(err))  -- never contains the secret
      if sent == 0 then
        return fail(err.status and err.status < 500 and err.status or 502, err.code, err.message)
      end
      -- headers are gone already: end the stream with an error line
      ngx.say(cjson.encode { error = err.code, message = err.message, next_token = err.next_token })
      return
    end
    if sent == 0 then ngx.header.content_type = "application/x-ndjson" end
    ngx.say(cjson.encode(b))
    sent = sent + 1
    if sent % 100 == 0 then ngx.flush() end
  end
  if sent == 0 then ngx.header.content_type = "application/x-ndjson" end
end

return _M
