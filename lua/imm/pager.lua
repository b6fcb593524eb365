--- Pagers that follow NextToken.
--
-- The paging loop runs inside a coroutine that hands pages to the caller's
-- `for` loop (the item pager then reads items off the current page), so a
-- listing of any length streams with constant memory. All I/O happens in
-- plain Lua calls inside the coroutine, so it also works where the
-- transport itself yields (ngx_lua cosockets, imm tasks).
--
-- Under Lua 5.4's generational collector (the lua5.4 interpreter's
-- default), whatever a listing keeps from one page to the next grows old
-- and waits for a major collection. So a listing keeps little: its state
-- lives in locals of the coroutine, coroutines are reused (in bench/, a new
-- coroutine per listing of 10 pages cost up to a fifth of a call), and no
-- page is held where a write barrier would age it.
--
-- On failure an iterator yields `false, err` once, then ends. `err.next_token`
-- holds the token of the page that failed, to resume with `start_token`.
-- @module imm.pager

local type, pairs, format, tostring = type, pairs, string.format, tostring
local floor, min = math.floor, math.min
local co_create, co_resume, co_yield, co_status = coroutine.create, coroutine.resume,
  coroutine.yield, coroutine.status
local errors = require "imm.errors"
local loaded = package.loaded
local operations = require "imm.operations"
local callopts = require "imm.callopts"
local transport = require "imm.transport"
local bad_element = require("imm.response").bad_element

local _M = {}

local PAGER_OPTIONS = { max_items = true, page_size = true, start_token = true, items = true,
  concurrency = true, prefetch = true, resume = true,
  -- call options, for each page's call (imm.callopts)
  method = true, idempotent = true, deadline = true, timeout = true, max_retries = true, headers = true }

-- Without page_size, pages are as large as the action documents
-- (`max_results` in the API description, 200 or 100): fewer round trips for
-- the same items. The parallel listing's ListDatasets chain asks for this.
_M.DEFAULT_PAGE_SIZE = operations.actions.ListDatasets.max_results

-- Validates pager options; returns the normalised settings or nil, err.
-- `parallel`: for a parallel listing, the only one that takes opts.resume.
local function settings(action, params, opts, parallel)
  if params ~= nil and type(params) ~= "table" then
    return nil, errors.invalid(format("%s: parameters must be a table, got %s", tostring(action), type(params)))
  end
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    return nil, errors.invalid("pager options must be a table")
  end
  local unknown = operations.unknown_key(opts, PAGER_OPTIONS, "pager option")
  if unknown then return nil, unknown end
  local call = callopts.pick(opts)
  if call then
    local ok, cerr = callopts.check(call)
    if not ok then return nil, cerr end
  end
  local def = operations.actions[action]
  local s = {
    items = opts.items or (def and def.items),
    size_param = def and def.page_size or "MaxResults",
    max_items = opts.max_items,
    page_size = opts.page_size,
    token = opts.start_token,
    concurrency = opts.concurrency or 1,
    prefetch = opts.prefetch or false,
    call = call,
    -- known listings get their largest page; for others the service decides
    default_size = def and def.page_size and operations.max_page_size(action, params) or nil,
  }
  -- response.parse checks the elements of the action's own list already
  s.check_elements = not (def and def.items == s.items)
  if s.max_items ~= nil and (type(s.max_items) ~= "number" or s.max_items ~= floor(s.max_items)
      or s.max_items < 1) then
    return nil, errors.invalid("max_items must be a positive integer, got " .. tostring(s.max_items))
  end
  if s.page_size ~= nil and (type(s.page_size) ~= "number" or s.page_size ~= floor(s.page_size)
      or s.page_size < 1) then
    return nil, errors.invalid("page_size must be a positive integer, got " .. tostring(s.page_size))
  end
  local max = def and def.page_size and operations.max_page_size(action, params)
  if max and s.page_size and s.page_size > max then
    return nil, errors.invalid(format("%s: page_size must be at most %d, the largest page it documents, got %s",
      tostring(action), max, tostring(s.page_size)))
  end
  local c = s.concurrency
  if type(c) ~= "number" or c ~= floor(c) or c < 1 or c > 100 then
    return nil, errors.invalid("concurrency must be an integer from 1 to 100, got " .. tostring(c))
  end
  if c > 1 and action ~= "ListBindings" then
    return nil, errors.invalid(format("concurrency is for the binding listings (bindings, all_bindings), "
      .. "not %s", tostring(action)))
  end
  if opts.resume ~= nil then
    if not parallel then
      return nil, errors.invalid("resume (err.resume of a parallel listing) is for bindings and all_bindings "
        .. "of a whole project, without DatasetName")
    end
    s.resume = opts.resume
  end
  if type(s.prefetch) ~= "boolean" then
    return nil, errors.invalid("prefetch must be a boolean, got " .. type(s.prefetch))
  end
  if s.token ~= nil and (type(s.token) ~= "string" or s.token == "") then
    return nil, errors.invalid("start_token must be a non-empty string")
  end
  if type(s.items) ~= "string" then
    return nil, errors.invalid(format("%s: the pager needs opts.items, the response field that "
      .. "holds the list", tostring(action)))
  end
  return s
end
_M.settings = settings

-- Fetches one page: sends the request with `token`, cuts the list at
-- max_items, and works out the next token. Returns page, list, n,
-- next_token (nil at the end) and the new count of items seen; or false,
-- err (err.next_token says where to resume).
local function fetch(client, action, p, s, token, seen)
  p.NextToken = token
  local size = s.page_size or p[s.size_param]
  if size == nil then size = s.default_size end
  if s.max_items then
    -- ask only for what is still wanted (0 means the service's default of 100)
    if size == nil or size == 0 then size = 100 end
    size = min(size, s.max_items - seen)
  end
  p[s.size_param] = size
  local page, err = client:call(action, p, s.call)
  if not page then
    err.next_token = token
    return false, err
  end
  local list = page[s.items]
  local problem
  if type(list) ~= "table" then
    problem = format("%s is missing from the response", s.items)
  elseif s.check_elements and bad_element(list) then
    problem = format("%s[%d] in the response is not an object", s.items, bad_element(list))
  elseif page.NextToken ~= nil and type(page.NextToken) ~= "string" then
    problem = "NextToken in the response is a " .. type(page.NextToken) .. ", not a string"
  end
  if problem then
    return false, errors.new("InvalidResponse", problem,
      { request_id = page.RequestId, next_token = token, retryable = false })
  end
  local n = #list
  if s.max_items and seen + n > s.max_items then
    for i = s.max_items - seen + 1, n do list[i] = nil end
    n = s.max_items - seen
  end
  seen = seen + n
  local next_token = page.NextToken
  if next_token == "" or (s.max_items and seen >= s.max_items) then next_token = nil end
  return page, list, n, next_token, seen
end
_M.fetch = fetch

-- A server that hands out a token again (the same one, or a cycle) would
-- keep a listing going forever. `sent` is the set of tokens a listing has
-- sent: records `token`, and returns an InvalidResponse when the page's
-- next token is among them (the page is then not handed over, and
-- err.next_token fetches it again), or nil.
local function repeated_token(sent, token, next_token, page)
  if token ~= nil then sent[token] = true end
  if next_token ~= nil and sent[next_token] then
    return errors.new("InvalidResponse", "the service returned a NextToken it had "
      .. "returned before, so the listing would never end",
      { request_id = page.RequestId, next_token = token, retryable = false })
  end
end
_M.repeated_token = repeated_token

-- The paging loop: calls emit(page, list, n) for each page. Returns true,
-- or nil, err. Its state is locals, so a listing allocates only the copy of
-- the parameters and the set of tokens it has sent (repeated_token).
local function walk(client, action, params, s, emit)
  local p = {}
  for k, v in pairs(params or {}) do p[k] = v end
  local token, seen, sent = s.token or p.NextToken, 0, {}
  repeat
    local page, list, n, next_token
    page, list, n, next_token, seen = fetch(client, action, p, s, token, seen)
    if not page then return nil, list end
    local rerr = repeated_token(sent, token, next_token, page)
    if rerr then return nil, rerr end
    emit(page, list, n)
    token = next_token
  until token == nil
  return true
end

-- What the pager coroutines hand over: module-level functions, not
-- closures made per listing.
local function yield_page(page) co_yield(page) end
local function yield_list(_, list, n) co_yield(list, n) end

-- A listing as a coroutine body: the failure, if any, is handed over last.
local function listing(client, action, params, s, emit)
  local ok, err = walk(client, action, params, s, emit)
  if not ok then co_yield(false, err) end
end

-- Pager coroutines whose listing has ended, parked for the next one. A new
-- coroutine is garbage once its listing ends, and one with a grown stack
-- is the bulk of what a listing leaves in the old generation; a parked one
-- also has its stack ready. Not inside nginx, where ngx_lua ties each
-- coroutine to the request that made it.
local parked, PARKED_MAX = {}, 4
local FINISHED = {}  -- what a worker yields when its listing has ended

-- A worker runs listing(...), yields FINISHED, and runs the listing it is
-- resumed with next.
local function worker(client, action, params, s, emit)
  while true do
    listing(client, action, params, s, emit)
    -- let the ended listing go while parked
    client, action, params, s, emit = nil, nil, nil, nil, nil  -- luacheck: ignore 311
    client, action, params, s, emit = co_yield(FINISHED)
  end
end

-- Resumes a pager coroutine. An async client inside an imm task waits by
-- yielding WAIT: pass it up to the task and its answer back down.
-- (No task can yield WAIT before imm.async is loaded, so it is not loaded here.)
local function resume(co, ...)
  local ok, a, b = co_resume(co, ...)
  local async = ok and a ~= nil and loaded["imm.async"]
  while async and ok and a == async.WAIT and co_status(co) == "suspended" do
    ok, a, b = co_resume(co, co_yield(a, b))
  end
  return ok, a, b
end

-- Starts a listing on a parked or a new coroutine.
local function start(client, action, params, s, emit)
  local n = #parked
  local co
  if n > 0 then
    co, parked[n] = parked[n], nil
  else
    co = co_create(worker)
  end
  return co, resume(co, client, action, params, s, emit)
end

local function park(co)
  if #parked < PARKED_MAX and not transport.in_nginx() then parked[#parked + 1] = co end
end

--- An iterator that yields `false, err` once, then nil: how a pager
-- reports bad parameters or options, having sent nothing.
-- @param err the error value
-- @return iterator
function _M.failed(err)
  local done = false
  return function()
    if done then return nil end
    done = true
    return false, err
  end
end
local failed = _M.failed

-- One step of a listing: starts it on a parked or new coroutine the first
-- time (co == nil), else resumes it. Returns the coroutine, or false once
-- the listing has ended, and what it handed over. A coroutine that raised
-- (a bug, not a run-time failure) is dead; its error is raised again here.
local function step(co, client, action, params, s, emit)
  local ok, a, b
  if co == nil then
    co, ok, a, b = start(client, action, params, s, emit)
  else
    ok, a, b = resume(co)
  end
  if not ok then error(a, 0) end
  if a == FINISHED then
    park(co)
    return false
  end
  return co, a, b
end

--- Page by page.
-- @return iterator yielding each page table (`page[items]` holds the list)
function _M.pages(client, action, params, opts)
  local s, err = settings(action, params, opts)
  if not s then return failed(err) end
  -- pages are handed over in order, one request at a time: refuse rather
  -- than accept a concurrency that would not apply
  if s.concurrency > 1 then
    return failed(errors.invalid(format("concurrency is for bindings, all_bindings, items and all; "
      .. "pages of %s are always sequential", tostring(action))))
  end
  if s.prefetch then return require("imm.parallel").prefetch(client, action, params, s, "pages") end
  local co  -- nil: not started; false: ended
  return function()
    if co == false or (co and co_status(co) == "dead") then return nil end
    local a, b
    co, a, b = step(co, client, action, params, s, yield_page)
    return a, b  -- a page; false, err; or nil at the end
  end
end

--- Item by item.
-- @return iterator yielding each item
function _M.items(client, action, params, opts)
  local s, err = settings(action, params, opts)
  if not s then return failed(err) end
  if s.prefetch then return require("imm.parallel").prefetch(client, action, params, s, "items") end
  -- The coroutine hands over whole lists; items are then read off the
  -- current one by plain indexing, so an item costs a function call, not a
  -- coroutine switch. The list sits in a table slot, not an upvalue: a
  -- young table stored in an upvalue of an old closure turns old at once
  -- (the forward barrier), while a table slot takes the backward barrier
  -- and the list dies young.
  local current = {}
  local co, n, i = nil, 0, 0  -- co: nil, not started; false, ended
  return function()
    local k = i + 1
    if k <= n then
      i = k
      return current[1][k]
    end
    if co and co_status(co) == "dead" then return nil end
    -- the next page; empty pages are skipped
    while co ~= false do
      -- let the finished list go before the next page is decoded
      current[1] = nil
      local list, m
      co, list, m = step(co, client, action, params, s, yield_list)
      if list == false then
        return false, m  -- the failure, once; the listing ends next
      elseif list and m > 0 then
        current[1], n, i = list, m, 1
        return list[1]
      end
    end
    return nil
  end
end

--- Every item of every page merged into `{ [items] = { ... } }`.
-- @return table, or nil, err
function _M.all(client, action, params, opts)
  local s, err = settings(action, params, opts)
  if not s then return nil, err end
  local all, count = {}, 0
  local ok, werr = walk(client, action, params, s, function(_, list, n)
    for i = 1, n do all[count + i] = list[i] end
    count = count + n
  end)
  if not ok then
    -- nothing is lost: what came before the failure goes back with it, and
    -- err.next_token continues right after it
    if type(werr) == "table" then werr.partial = { [s.items] = all } end
    return nil, werr
  end
  return { [s.items] = all }
end

return _M
