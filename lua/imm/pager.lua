--- Pagers that follow NextToken.
--
-- The paging loop runs inside a coroutine that hands pages to the caller's
-- `for` loop (the item pager then reads items off the current page), so a
-- listing of any length streams with constant memory. All I/O happens in
-- plain Lua calls inside the coroutine, so it also works where the
-- transport itself yields (ngx_lua cosockets, imm tasks).
--
-- On failure an iterator yields `false, err` once, then ends. `err.next_token`
-- holds the token of the page that failed, to resume with `start_token`.
-- @module imm.pager

local type, pairs, format, tostring = type, pairs, string.format, tostring
local floor, min = math.floor, math.min
local co_create, co_resume, co_yield, co_status = coroutine.create, coroutine.resume,
  coroutine.yield, coroutine.status
local errors = require "imm.errors"
local WAIT = require("imm.async").WAIT
local operations = require "imm.operations"

local _M = {}

local PAGER_OPTIONS = { max_items = true, page_size = true, start_token = true, items = true }

-- Validates pager options; returns the normalised settings or nil, err.
local function settings(action, params, opts)
  if params ~= nil and type(params) ~= "table" then
    return nil, errors.invalid(format("%s: parameters must be a table, got %s", tostring(action), type(params)))
  end
  if opts == nil then opts = {} end
  if type(opts) ~= "table" then
    return nil, errors.invalid("pager options must be a table")
  end
  local unknown = operations.unknown_key(opts, PAGER_OPTIONS, "pager option")
  if unknown then return nil, unknown end
  local def = operations.actions[action]
  local s = {
    items = opts.items or (def and def.items),
    size_param = def and def.page_size or "MaxResults",
    max_items = opts.max_items,
    page_size = opts.page_size,
    token = opts.start_token,
  }
  if s.max_items ~= nil and (type(s.max_items) ~= "number" or s.max_items ~= floor(s.max_items)
      or s.max_items < 1) then
    return nil, errors.invalid("max_items must be a positive integer, got " .. tostring(s.max_items))
  end
  if s.page_size ~= nil and (type(s.page_size) ~= "number" or s.page_size ~= floor(s.page_size)
      or s.page_size < 1) then
    return nil, errors.invalid("page_size must be a positive integer, got " .. tostring(s.page_size))
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

-- An iterator over a coroutine running `body(yield)`. It yields what the body
-- yields, and nil once the body has returned, however often it is called.
local function iterator(body)
  local co = co_create(body)
  return function()
    if co_status(co) == "dead" then return nil end
    local ok, a, b = co_resume(co)
    -- An async client inside an imm task waits by yielding WAIT: pass it up
    -- to the task and its answer back down.
    while ok and a == WAIT and co_status(co) == "suspended" do
      ok, a, b = co_resume(co, co_yield(a, b))
    end
    if not ok then error(a, 0) end  -- a bug, not a run-time failure
    return a, b
  end
end

local function failed(err)
  return iterator(function() co_yield(false, err) end)
end

-- A cursor over the pages: each fetch() sends one request and returns the
-- page, its list and the list's length; nil once the listing is complete;
-- or false, err (err.next_token says where to resume), after which the
-- cursor is done.
local function cursor(client, action, params, s)
  local p = {}
  for k, v in pairs(params or {}) do p[k] = v end
  local token, seen, done = s.token or p.NextToken, 0, false
  return function()
    if done then return nil end
    p.NextToken = token
    local size = s.page_size or p[s.size_param]
    if s.max_items then
      local left = s.max_items - seen
      -- ask only for what is still wanted (0 means the default of 100)
      if size == nil or size == 0 then size = 100 end
      size = min(size, left)
    end
    p[s.size_param] = size
    local page, err = client:call(action, p)
    if not page then
      done = true
      err.next_token = token
      return false, err
    end
    local list = page[s.items]
    if type(list) ~= "table" then
      done = true
      return false, errors.new("InvalidResponse", format("%s is missing from the response", s.items),
        { request_id = page.RequestId, next_token = token, retryable = false })
    end
    local n = #list
    if s.max_items and seen + n > s.max_items then
      for i = s.max_items - seen + 1, n do list[i] = nil end
      n = s.max_items - seen
    end
    seen = seen + n
    token = page.NextToken
    if token == nil or token == "" or (s.max_items and seen >= s.max_items) then done = true end
    return page, list, n
  end
end

-- The paging loop. Calls on_page(page, list, n) for each page. Returns
-- true, or nil, err.
local function walk(client, action, params, s, on_page)
  local fetch = cursor(client, action, params, s)
  while true do
    local page, list, n = fetch()
    if page == nil then return true end
    if page == false then return nil, list end
    on_page(page, list, n)
  end
end

--- Page by page.
-- @return iterator yielding each page table (`page[items]` holds the list)
function _M.pages(client, action, params, opts)
  local s, err = settings(action, params, opts)
  if not s then return failed(err) end
  return iterator(function()
    local ok, werr = walk(client, action, params, s, function(page) co_yield(page) end)
    if not ok then co_yield(false, werr) end
  end)
end

--- Item by item.
-- @return iterator yielding each item
function _M.items(client, action, params, opts)
  local s, err = settings(action, params, opts)
  if not s then return failed(err) end
  -- The coroutine hands over whole pages; items are then read off the
  -- current page by plain indexing, so an item costs a function call, not
  -- a coroutine switch.
  local next_page = iterator(function()
    local ok, werr = walk(client, action, params, s, function(_, list, n) co_yield(list, n) end)
    if not ok then co_yield(false, werr) end
  end)
  -- The current list sits in a table slot, not in an upvalue. Under Lua
  -- 5.4's generational collector (the lua5.4 interpreter's default), a
  -- young table stored in an upvalue of an old closure turns old at once,
  -- so every page would be promoted and wait for a major collection; a
  -- table slot takes the cheaper backward barrier and the page dies young.
  local current = {}
  local n, i = 0, 0
  local function refill()
    while true do
      -- let the finished page go before the next one is decoded: at most
      -- one page is alive at a time
      current[1] = nil
      local list, m = next_page()
      if not list then return list, m end  -- nil: the end; false, err: the failure, once
      if m > 0 then
        current[1], n, i = list, m, 1
        return list[1]
      end
    end
  end
  -- the per-item path: a few VM instructions, since it runs for every item
  return function()
    local k = i + 1
    if k <= n then
      i = k
      return current[1][k]
    end
    return refill()
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
  if not ok then return nil, werr end
  return { [s.items] = all }
end

return _M
