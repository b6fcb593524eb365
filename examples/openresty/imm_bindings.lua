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
--
-- Tracing and metrics, in plain ngx_lua:
-- - OpenTelemetry-style propagation: the caller's W3C `traceparent` (or a
--   new trace when it sent none) goes to IMM with a span id of our own, as
--   the call option `headers`;
-- - Prometheus-style counters: the client's `on_response` hook counts each
--   attempt in `lua_shared_dict imm_metrics` (every worker adds to the same
--   counters), and
--     location = /metrics { content_by_lua_block { require("imm_bindings").metrics() } }
--   serves them in the text exposition format.
local imm = require "imm"
local core = require "imm.core"

local ngx = ngx
local getenv = os.getenv
local _M = {}

-- imm's own JSON encoder (imm.core.json_encode): no lua-cjson to install
local function json(v)
  local text, err = core.json_encode(v)
  return text or core.json_encode { error = "EncodeError", message = err }
end

--- Client options beyond the environment's.
_M.options = {
  deadline = 5,         -- seconds for one call with its retries
  timeout = 2,          -- seconds for one attempt
  connect_timeout = 1,
}

-- Counts one attempt: by action, HTTP status (0: no reply) and error code.
-- A hook must not raise into the call (imm logs it once and goes on), and
-- it never sees a secret.
local function count(info)
  local dict = ngx.shared.imm_metrics
  if not dict then return end
  local key = string.format('imm_requests_total{action="%s",status="%d",code="%s"}', info.action,
    info.status or 0, info.code or "")
  dict:incr(key, 1, 0)
  dict:incr("imm_request_seconds_sum", info.elapsed, 0)
  dict:incr("imm_request_seconds_count", 1, 0)
  if info.retry then dict:incr("imm_retries_total", 1, 0) end
end

-- The traceparent to send: the caller's trace with a span of ours, or a
-- new sampled trace. W3C Trace Context: version-traceid-parentid-flags.
local function traceparent()
  local incoming = ngx.var.http_traceparent
  local trace, flags
  if incoming then
    local v, t, p, f = incoming:match("^(%x%x)%-(%x+)%-(%x+)%-(%x%x)$")
    if v and v ~= "ff" and #t == 32 and #p == 16 and t ~= string.rep("0", 32) and p ~= string.rep("0", 16) then
      trace, flags = t:lower(), f
    end
  end
  -- imm.core.nonce(): 32 random hex digits
  trace = trace or core.nonce()
  return string.format("00-%s-%s-%s", trace, core.nonce():sub(1, 16), flags or "01")
end

-- One client per worker, made on the first request. It holds no
-- connection: cosockets belong to a request, and go back to nginx's
-- keep-alive pool after each call.
local client

local function get_client()
  if client then return client end
  local o = { on_response = count }
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
  ngx.say(json { error = code, message = message })
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
  for b, err in c:bindings(params, { page_size = 100, headers = { traceparent = traceparent() } }) do
    if not b then
      ngx.log(ngx.ERR, tostring(err))  -- never contains the secret
      if sent == 0 then
        return fail(status_for(err), err.code, err.message)
      end
      -- headers are gone already: end the stream with an error line
      ngx.say(json { error = err.code, message = err.message, next_token = err.next_token })
      return
    end
    if sent == 0 then ngx.header.content_type = "application/x-ndjson" end
    ngx.say(json(b))
    sent = sent + 1
    if sent % 100 == 0 then ngx.flush() end
  end
  if sent == 0 then ngx.header.content_type = "application/x-ndjson" end
end

local HELP = {
  imm_requests_total = "IMM attempts by action, HTTP status (0: none) and error code.",
  imm_retries_total = "IMM attempts that were retried.",
  imm_request_seconds = "Seconds per IMM attempt.",
}
local TYPE = { imm_requests_total = "counter", imm_retries_total = "counter", imm_request_seconds = "summary" }

--- The counters of every worker, in Prometheus' text exposition format.
function _M.metrics()
  local dict = ngx.shared.imm_metrics
  ngx.header.content_type = "text/plain; version=0.0.4"
  if not dict then return ngx.say("# lua_shared_dict imm_metrics is not configured") end
  local keys = dict:get_keys(0)
  table.sort(keys)
  local families, lines = {}, {}
  for _, k in ipairs(keys) do
    local name = k:match("^[%w_]+")
    local family = name:gsub("_sum$", ""):gsub("_count$", "")
    if not families[family] then
      families[family] = true
      lines[#lines + 1] = string.format("# HELP %s %s\n# TYPE %s %s", family, HELP[family] or family,
        family, TYPE[family] or "untyped")
    end
    lines[#lines + 1] = k .. " " .. tostring(dict:get(k))
  end
  ngx.print(table.concat(lines, "\n"), "\n")
end

return _M
