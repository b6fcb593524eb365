-- An OpenResty handler that streams a project's bindings as NDJSON.
--
--   location = /bindings { content_by_lua_block { require("imm_bindings").list() } }
--   GET /bindings?project=immtest[&dataset=NAME]
--
-- imm picks ngx_lua cosockets by itself here, so a slow IMM reply never
-- stalls the worker. Credentials and the endpoint come from the environment
-- (see the `env` lines in nginx.conf).
--
-- A gateway owes its own clients an answer in bounded time: every call has
-- a `deadline` (its retries included) and each attempt a `timeout`; when
-- IMM does not answer in time the handler says 504 Gateway Timeout, and
-- 502 for any other failure of IMM's. Change the numbers in
-- init_by_lua_block, before the first request:
--   init_by_lua_block { require("imm_bindings").options.deadline = 3 }
local imm = require "imm"
local cjson = require "cjson.safe"

local ngx = ngx
local getenv = os.getenv
local _M = {}

--- Client options beyond the environment's.
_M.options = {
  deadline = 5,         -- seconds for one call with its retries
  timeout = 2,          -- seconds for one attempt
  connect_timeout = 1,
}

-- One client per worker, made on the first request. It holds no
-- connection: cosockets belong to a request, and go back to nginx's
-- keep-alive pool after each call.
local client

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

local function fail(status, code, message)
  ngx.status = status
  ngx.header.content_type = "application/json"
  ngx.say(cjson.encode { error = code, message = message })
end

-- What a gateway answers for an imm error: 504 when IMM did not answer in
-- time, IMM's own 4xx (a missing project is a 404 for our client too), and
-- 502 for the rest (IMM failed, or could not be reached).
local function status_for(err)
  if err.code == "Timeout" then return 504 end
  if err.status and err.status >= 400 and err.status < 500 then return err.status end
  return 502
end

function _M.list()
  local project = ngx.var.arg_project
  if not project or project == "" then
    return fail(400, "MissingParameter", "add ?project=NAME")
  end
  local c, cerr = get_client()
  if not c then
    ngx.log(ngx.ERR, tostring(cerr))  -- tostring(err) starts with "imm: " already
    return fail(500, cerr.code, cerr.message)
  end
  local params = { ProjectName = project, DatasetName = ngx.var.arg_dataset }
  local sent = 0
  for b, err in c:bindings(params, { page_size = 100 }) do
    if not b then
      ngx.log(ngx.ERR, tostring(err))  -- never contains the secret
      if sent == 0 then
        return fail(status_for(err), err.code, err.message)
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
