-- spec/21 inside nginx: one client per worker and per set of options (the
-- JSON in ?o=), so the rate limiter's and the credentials' shared state is
-- what the workers have in common.
local cjson = require "cjson"
local imm = require "imm"

local _M = {}

local clients = {}

local function client(o, make)
  local raw = ngx.var.arg_o and ngx.unescape_uri(ngx.var.arg_o) or "{}"
  local c = clients[raw]
  if not c then
    local err
    c, err = make(cjson.decode(raw))
    if not c then
      ngx.say(cjson.encode { new_error = tostring(err) })
      return nil
    end
    clients[raw] = c
  end
  return c, o
end

local function reply(t)
  t.pid = ngx.worker.pid()
  ngx.say(cjson.encode(t))
end

--- One call (?action=, default ListProjects) through a client with a rate limit.
function _M.call()
  local c = client(nil, function(o) return imm.new(o) end)
  if not c then return end
  local action = ngx.var.arg_action or "ListProjects"
  local res, err = c:call(action, action == "ListDatasets" and { ProjectName = "immtest" } or {})
  reply { ok = res ~= nil, code = err and err.code, message = err and err.message }
end

--- The credentials of a client whose provider is a credentials URI
-- (o.uri), kept in o.credentials_cache when given.
function _M.creds()
  local c = client(nil, function(o)
    local p = assert(imm.credentials.credentials_uri { uri = o.uri })
    return imm.new { endpoint = "http://127.0.0.1:1", credentials = p, credentials_cache = o.credentials_cache }
  end)
  if not c then return end
  ngx.sleep(tonumber(ngx.var.arg_pause) or 0)
  local creds, err = c.credentials:get { timeout = tonumber(ngx.var.arg_timeout) or 5 }
  reply { id = creds and creds.access_key_id, code = err and err.code, message = err and err.message }
end

--- From log_by_lua (no ngx.sleep, no cosockets): two calls through a
-- client with a rate limit of 1/s and shared credentials; what they
-- returned, or what they raised, goes to the imm_limits dict.
function _M.log_phase()
  local ok, out = pcall(function()
    local o = cjson.decode(ngx.unescape_uri(ngx.var.arg_o))
    local p = assert(imm.credentials.static { access_key_id = o.access_key_id,
      access_key_secret = o.access_key_secret })
    local c = assert(imm.new { endpoint = o.endpoint, credentials = p, credentials_cache = { dict = "imm" },
      rate_limit = { rate = 1, dict = "imm_limits", key = "log-phase" } })
    local codes = {}
    for i = 1, 2 do
      local _, err = c:call("ListProjects", {})
      codes[i] = err and err.code or "ok"
    end
    return codes
  end)
  ngx.shared.imm_limits:set("log_phase", cjson.encode(ok and { codes = out } or { raised = tostring(out) }))
end

function _M.log_phase_result()
  ngx.say(ngx.shared.imm_limits:get("log_phase") or "{}")
end

return _M
