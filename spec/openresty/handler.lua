-- Handlers that run imm inside nginx for spec/06_openresty_spec.lua. Each
-- answers with JSON describing what imm returned, so the spec (outside
-- nginx) can compare it with the libcurl path.
local cjson = require "cjson"
local imm = require "imm"
local transport = require "imm.transport"

local ngx = ngx
local _M = {}

local KEY_ID, SECRET = "imm-local-id", "imm-local-secret"

-- Builds a client for the local IMM server named by the query arguments;
-- with `seen`, its hooks record what they were given there.
local function client_from(args, seen)
  local scheme = args.tls == "1" and "https" or "http"
  return imm.new {
    endpoint = scheme .. "://" .. (args.host or "127.0.0.1") .. ":" .. args.port,
    access_key_id = KEY_ID, access_key_secret = args.secret or SECRET,
    max_retries = tonumber(args.max_retries), timeout = tonumber(args.timeout),
    insecure = args.insecure == "1" or nil,
    transport = args.transport,
    signature_algorithm = args.alg,
    on_request = seen and function(info) seen[#seen + 1] = { hook = "request", info = info } end,
    on_response = seen and function(info) seen[#seen + 1] = { hook = "response", info = info } end,
  }
end

local function error_fields(err)
  if not err then return nil end
  return { code = err.code, status = err.status, retryable = err.retryable, attempts = err.attempts,
    message = err.message, next_token = err.next_token, phase = err.phase }
end

-- Runs one scenario and returns a table describing the outcome.
local function run(args)
  local seen = args.hooks == "1" and {} or nil
  local c, cerr = client_from(args, seen)
  if not c then return { err = error_fields(cerr) } end
  local mode, params = args.mode or "page", { ProjectName = args.project or "immtest" }
  local opts = { max_items = tonumber(args.max_items), page_size = tonumber(args.page_size),
    headers = args.traceparent and { traceparent = args.traceparent } or nil }
  local out = { transport = transport.resolve(args.transport), phase = ngx.get_phase(), uris = {}, hooks = seen }
  if mode == "page" then
    params.MaxResults = tonumber(args.max_results)
    local res, err = c:list_bindings(params)
    out.err = error_fields(err)
    if res then
      for i, b in ipairs(res.Bindings) do out.uris[i] = b.URI end
      out.next_token = res.NextToken
    end
  elseif mode == "items" then
    for b, err in c:bindings(params, opts) do
      if not b then out.err = error_fields(err) break end
      out.uris[#out.uris + 1] = b.URI
    end
  elseif mode == "pages" then
    out.pages = 0
    for page, err in c:pages("ListBindings", params, opts) do
      if not page then out.err = error_fields(err) break end
      out.pages = out.pages + 1
      for _, b in ipairs(page.Bindings) do out.uris[#out.uris + 1] = b.URI end
    end
  elseif mode == "all" then
    local all, err = c:all_bindings(params, opts)
    out.err = error_fields(err)
    if all then
      for i, b in ipairs(all.Bindings) do out.uris[i] = b.URI end
    end
  elseif mode == "lifecycle" then
    -- create, wait for Running (ngx.sleep between polls, counted), delete
    local key = { ProjectName = params.ProjectName, DatasetName = args.dataset, URI = args.uri }
    local res, err = c:list_bindings { ProjectName = params.ProjectName, MaxResults = 1 }
    if res then res, err = c:create_binding(key) end
    if res then
      local real_sleep, sleeps = ngx.sleep, 0
      ngx.sleep = function(s) sleeps = sleeps + 1 return real_sleep(s) end -- luacheck: ignore 122
      local ok, b, werr = pcall(c.wait_binding, c, key, { timeout = 10, interval = 0.1 })
      ngx.sleep = real_sleep -- luacheck: ignore 122
      if not ok then error(b) end
      out.sleeps, out.state, err = sleeps, b and b.State, werr
    end
    if not err then err = select(2, c:delete_binding(key)) end
    out.err = error_fields(err)
  elseif mode == "form" then
    -- an action with a form body (the local server verifies it, then answers it)
    local _, err = c:contextual_answer { ProjectName = params.ProjectName,
      Messages = { { Role = "user", Content = args.content or "hi" } } }
    out.err = error_fields(err)
  end
  out.count = #out.uris
  return out
end

local function reply(t)
  ngx.header["Content-Type"] = "application/json"
  ngx.say(cjson.encode(t))
end

function _M.call()
  reply(run(ngx.req.get_uri_args()))
end

-- The same scenario, run from a timer; the request waits on a semaphore.
function _M.timer()
  local semaphore = require "ngx.semaphore"
  local sema = semaphore.new()
  local args, result = ngx.req.get_uri_args(), nil
  local ok, err = ngx.timer.at(0, function(premature)
    if not premature then result = run(args) end
    sema:post(1)
  end)
  if not ok then return reply { timer_error = err } end
  sema:wait(30)
  reply(result or { timer_error = "no result" })
end

-- init_by_lua: cosockets are disabled here; imm must say so, not block.
local init_err
function _M.init()
  local c = assert(imm.new { endpoint = "http://127.0.0.1:9", access_key_id = KEY_ID,
    access_key_secret = SECRET })
  local res, err = c:list_bindings { ProjectName = "immtest" }
  init_err = { res = res ~= nil, err = error_fields(err) }
end

function _M.init_result()
  reply(init_err or {})
end

local function store(key)
  local c = assert(imm.new { endpoint = "http://127.0.0.1:9", access_key_id = KEY_ID,
    access_key_secret = SECRET })
  local res, err = c:list_bindings { ProjectName = "immtest" }
  ngx.shared.imm_test:set(key, cjson.encode { res = res ~= nil, err = error_fields(err) })
end

function _M.log_phase() store("log") end
function _M.header_phase() store("header_filter") end

function _M.shared()
  reply(cjson.decode(ngx.shared.imm_test:get(ngx.var.arg_key) or "{}"))
end

return _M
