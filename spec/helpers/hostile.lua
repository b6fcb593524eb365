-- Test fixture: the hostile server (spec/helpers/hostile.py) on loopback,
-- and the scenario runner that spec/16 uses on the libcurl path and inside
-- nginx (spec/openresty/hostile_handler.lua calls run() there), so both
-- transports meet the same bytes and are judged by the same outcome table.
local core = require "imm.core"

local M = {}

M.KEY_ID, M.SECRET = "imm-local-id", "imm-local-secret"

--- Starts hostile.py (opts.tls: HTTPS with the test certificates). Returns
-- a server with port, url, script(steps), log() and stop().
function M.start(opts)
  opts = opts or {}
  local fixture = require "helpers.fixture"
  local cjson = require "cjson"
  local dir = fixture.tmpdir()
  local cmd = "exec python3 spec/helpers/hostile.py --port-file " .. dir .. "/port"
  if opts.tls then cmd = cmd .. " --tls " .. fixture.certs() end
  assert(fixture.sh(cmd .. " >" .. dir .. "/log 2>&1 & echo $! >" .. dir .. "/pid"))
  local port, control
  for _ = 1, 150 do
    local s = fixture.read(dir .. "/port")
    if s then
      port, control = s:match("^(%d+) (%d+)")
      if port then break end
    end
    core.sleep(0.05)
  end
  assert(port, "hostile server did not start:\n" .. (fixture.read(dir .. "/log") or ""))
  local srv = {
    port = tonumber(port), tls = opts.tls and true or false,
    url = (opts.tls and "https" or "http") .. "://127.0.0.1:" .. port,
    pid = fixture.read(dir .. "/pid"):match("%d+"),
    http = assert(core.http { timeout = 10, connect_timeout = 5 }),
  }
  local base = "http://127.0.0.1:" .. control
  --- Replaces the script (a list of steps, see hostile.py) and clears the log.
  function srv.script(steps)
    local status, body = srv.http:request("POST", base .. "/script", { "Content-Type: application/json" },
      cjson.encode(steps))
    assert(status == 200, "script: " .. tostring(status) .. " " .. tostring(body))
  end
  --- The requests served since the last script.
  function srv.log()
    local status, body = srv.http:request("GET", base .. "/log", {}, "")
    assert(status == 200, "log: " .. tostring(status) .. " " .. tostring(body))
    return cjson.decode(body)
  end
  function srv.stop()
    if srv.stopped then return end
    srv.stopped = true
    srv.http:close()
    fixture.kill(srv.pid)
    fixture.sh("rm -rf " .. dir)
  end
  return srv
end

-- Steps for the specs ------------------------------------------------------

--- A 200 ListBindings page: n bindings (URIs from `first` on) and a token.
-- `token` is written into the JSON as given: a string is quoted, a number not.
function M.page(n, token, first)
  local items = {}
  for i = 1, n do
    items[i] = string.format('{"URI":"oss://b/%d","State":"Ready"}', (first or 1) + i - 1)
  end
  local t = ""
  if type(token) == "string" then
    t = string.format(',"NextToken":"%s"', token)
  elseif token ~= nil then
    t = ',"NextToken":' .. tostring(token)
  end
  return { status = 200, body = '{"RequestId":"r-page","Bindings":[' .. table.concat(items, ",") .. "]" .. t .. "}" }
end

-- The scenario runner ------------------------------------------------------

local function error_fields(err)
  if err == nil then return nil end
  if type(err) ~= "table" then return { weird = tostring(err) } end
  local e = { str = tostring(err) }
  for k, v in pairs(err) do
    local t = type(v)
    if t == "string" or t == "number" or t == "boolean" then e[k] = v end
  end
  return e
end

-- At most this many pages or items: a listing that loops is cut off here,
-- and the outcome says so instead of hanging the spec.
local LIMIT = 60

--- Runs one scenario against a hostile server and describes the outcome:
-- `{ err = {...}, count, items_ok, elapsed, cut_off, trace, pages }`. a:
-- `port`, `tls`, `transport`, `mode` ("page", "items", "pages", "listing"
-- (`action`, `pager`; `pages` says what each page held), "all", "call",
-- "twice": two pages on one client, "closed": a page, or with `pager` a
-- listing and all_bindings, on a closed client), client options (`timeout`, `deadline`, `max_retries`,
-- `security_token`, `debug`), `action` and `params` for "call", and pager
-- options `pager` for "items" and "all" (`concurrency`, `prefetch`).
function M.run(a)
  local imm = require "imm"
  local trace = {}
  local opts = {
    endpoint = (a.tls and "https" or "http") .. "://127.0.0.1:" .. a.port,
    access_key_id = M.KEY_ID, access_key_secret = M.SECRET, security_token = a.security_token,
    timeout = a.timeout or 5, deadline = a.deadline, max_retries = a.max_retries or 0,
    connect_timeout = a.connect_timeout, transport = a.transport, ca_file = a.ca_file,
    debug = a.debug and function(line) trace[#trace + 1] = line end or nil,
  }
  local c, cerr = imm.new(opts)
  if not c then return { err = error_fields(cerr) } end
  local out = { count = 0, items_ok = true, trace = trace }
  local params = a.params or { ProjectName = "p" }
  local started = core.monotonic()
  local mode = a.mode or "page"
  if mode == "page" then
    local res, err = c:list_bindings(params)
    out.err = error_fields(err)
    if res then out.count = #res.Bindings end
  elseif mode == "items" then
    for b, err in c:bindings(params, a.pager) do
      if not b then
        out.err = error_fields(err)
        -- a failure is `false, err`: anything else breaks the contract
        if b ~= false or err == nil then out.items_ok = false end
        break
      end
      if type(b) ~= "table" then out.items_ok = false end
      out.count = out.count + 1
      if out.count >= LIMIT then out.cut_off = true break end
    end
  elseif mode == "pages" then
    local n = 0
    for page, err in c:pages("ListBindings", params) do
      if not page then out.err = error_fields(err) break end
      n = n + 1
      out.count = out.count + #page.Bindings
      if n >= LIMIT then out.cut_off = true break end
    end
  elseif mode == "listing" then
    -- any paging action page by page (`pager` options, `prefetch` among
    -- them): what each page held, to compare prefetch with the plain pager
    local action = a.action or "ListBindings"
    local list = require("imm.operations").actions[action].items
    out.pages = {}
    for pg, err in c:pages(action, params, a.pager) do
      if not pg then out.err = error_fields(err) break end
      out.pages[#out.pages + 1] = { n = #pg[list], total = pg.TotalHits, aggregations = pg.Aggregations ~= nil }
      out.count = out.count + #pg[list]
      if #out.pages >= LIMIT then out.cut_off = true break end
    end
  elseif mode == "all" then
    -- no way to cut all_bindings off: a spec that expects a loop ends its
    -- script with a last page, so a looping listing ends with a wrong count
    local all, err = c:all_bindings(params, a.pager)
    out.err = error_fields(err)
    if all then out.count = #all.Bindings end
  elseif mode == "call" then
    local res, err = c:call(a.action, params)
    out.err = error_fields(err)
    out.ok = res ~= nil
  elseif mode == "twice" then
    -- the second call goes out on the connection the first one left open
    local res, err = c:list_bindings(params)
    if res then res, err = c:list_bindings(params) end
    out.err = error_fields(err)
    out.ok = res ~= nil
  elseif mode == "closed" then
    c:close()
    if a.pager then
      -- a listing on a closed client: every kind must refuse it at once
      local b, err = c:bindings(params, a.pager)()
      out.err, out.ok = error_fields(err), b ~= false
      local all, aerr = c:all_bindings(params, a.pager)
      out.all_err, out.all_ok = error_fields(aerr), all ~= nil
    else
      local res, err = c:list_bindings(params)
      out.err = error_fields(err)
      out.ok = res ~= nil
    end
  end
  out.elapsed = core.monotonic() - started
  c:close()
  return out
end

return M
