--- Parallel listings: a project's bindings over several connections at once,
-- and a pager that fetches the next page while the caller works.
--
-- A listing is a set of chains, one per dataset (plus one for ListDatasets),
-- each following its own NextToken. At most N requests are in flight, and a
-- page holds its slot from the moment its request starts until the caller
-- takes it off the queue, so no more than N pages are ever buffered. Pages
-- are handed over as they arrive: within a dataset in the service's order,
-- datasets interleaved.
--
-- Three ways to wait, one set of chains:
-- - a blocking client: the chains are coroutines of this module whose
--   transfers share one libcurl multi handle per `lua_State`; the iterator
--   drives it until a page is in;
-- - an `async = true` client inside an imm task: the transfers go on the
--   tasks' shared multi (`imm.async`), and the iterator sleeps the task until
--   `imm.poll` reports one done;
-- - inside nginx: N light threads (`ngx.thread`) on cosockets, the queue
--   guarded by `ngx.semaphore`.
-- Any other transport (a function or table) runs the chains one request at
-- a time, with the same results.
--
-- A listing ends when it is exhausted, when it fails (the iterator yields
-- `false, err` once), or when it is closed: the fourth value the pager
-- returns (`for ... in` closes it on Lua 5.4 when the loop is left), or the
-- iterator being collected. Closing removes the transfers in flight and
-- kills the light threads.
-- @module imm.parallel

local type, pairs, next, setmetatable, getmetatable, rawget, tostring, error, pcall =
  type, pairs, next, setmetatable, getmetatable, rawget, tostring, error, pcall
local min, huge = math.min, math.huge
local co_create, co_resume, co_yield, co_status = coroutine.create, coroutine.resume,
  coroutine.yield, coroutine.status
local core = require "imm.core"
local errors = require "imm.errors"
-- imm.async only for an async client (the Async backend loads it): a
-- blocking listing need not compile it
local async
local loaded = package.loaded
local pager = require "imm.pager"
local transport = require "imm.transport"

local fetch, settings, failed, repeated_token = pager.fetch, pager.settings, pager.failed, pager.repeated_token

local _M = {}

-- What a listing on a closed client (or one closed while it runs) gets.
local function closed_error()
  return errors.new("InvalidState", "the client is closed", { retryable = false, sent = false })
end

-- What a chain coroutine yields to the scheduler.
local IO, SLEEP, RESULT = {}, {}, {}

-- Queues: { first = i, last = j, [i..j] = values }.
local function queue() return { first = 1, last = 0 } end
local function push(q, v)
  local j = q.last + 1
  q.last, q[j] = j, v
end
local function push_front(q, v)
  local i = q.first - 1
  q.first, q[i] = i, v
end
local function pop(q)
  local i = q.first
  if i > q.last then return nil end
  local v = q[i]
  q[i], q.first = nil, i + 1
  return v
end
local function empty(q) return q.first > q.last end

-- Which chain each transfer belongs to, per multi handle (ids are unique
-- within one multi only).
local owners = setmetatable({}, { __mode = "k" })

local function route(m, done)
  if not done then return end
  local owner = owners[m]
  for i = 1, #done do
    local chain = owner[done[i]]
    if chain then
      owner[done[i]] = nil
      chain.ready = true
      push(chain.listing.runnable, chain)
    end
  end
end

-- I/O backends for the coroutine chains ----------------------------------

-- Blocking: the transfers go on the multi the blocking clients share
-- (imm.core's, one per lua_State, so they use the same connections and
-- TLS sessions), driven from the iterator.
local Blocking = {}
Blocking.__index = Blocking

--- Adds a started request to the shared multi; returns its id, or nil, code, message.
function Blocking.add(be, chain, h, method, url, lines, body, fresh, timeout)
  local m = be.m
  if not m then
    local code, msg
    m, code, msg = core.shared_multi()
    if not m then return nil, code, msg end
    be.m = m
    owners[m] = owners[m] or {}
  end
  local id, code, msg = m:add(h, method, url, lines, body, fresh, timeout)
  if not id then return nil, code, msg end
  owners[m][id] = chain
  if chain.action == "ListDatasets" and be.preconnect == nil then
    -- while ListDatasets is in flight, the TCP handshakes of the chains'
    -- connections (all but the one ListDatasets leaves idle; the C side
    -- opens at most 32); once a listing
    be.preconnect = m:preconnect(h, chain.listing.n - 1)
  end
  return id
end

--- Closes the pre-connected sockets no chain took.
function Blocking.release(be)
  if be.preconnect then
    be.preconnect = false
    be.m:preconnect(nil, 0)
  end
end

--- Aborts a transfer.
function Blocking.remove(be, h, id)
  local owner = owners[be.m]
  if owner and owner[id] then
    owner[id] = nil
    be.m:remove(h)
  end
end

-- Moves the transfers along; waits up to ms when nothing of this listing
-- is ready (for a retry timer when nothing is in flight). Returns true, or
-- nil, err.
function Blocking.wait(be, L, ms)
  local m = be.m
  -- first what ended already (also while a blocking call ran on this multi)
  if m then
    local running, done, msg = m:perform()
    if not running then return nil, errors.new(done, msg, { retryable = false }) end
    route(m, done)
  end
  if empty(L.runnable) and ms > 0 then
    if m and m:count() > 0 then
      m:wait(ms)
      local running, done, msg = m:perform()
      if not running then return nil, errors.new(done, msg, { retryable = false }) end
      route(m, done)
    else
      core.sleep(ms / 1000)  -- only retry timers are pending
    end
  end
  return true
end

-- Sends what was just added, so the requests travel while the caller works.
function Blocking.kick(be)
  local m = be.m
  if m then
    local running, done = m:perform()
    if running then route(m, done) end
  end
end

-- An async client: the tasks' shared multi; imm.poll reports each
-- transfer's end and wakes the task that waits for the listing (outside a
-- task, the iterator drives imm.poll itself).
local Async = {}
Async.__index = Async

--- Adds a request to the tasks' multi; returns its id, or nil, code, message.
function Async.add(be, chain, h, method, url, lines, body, fresh, timeout)
  local id, code, msg = async.start(h, method, url, lines, body, fresh, function()
    chain.ready = true
    push(chain.listing.runnable, chain)
    if be.task then async.wake(be.task) end
  end, timeout)
  if id and chain.action == "ListDatasets" and be.preconnect == nil then
    -- the chains' TCP handshakes while ListDatasets is in flight, as Blocking.add
    be.preconnect = async.preconnect(h, chain.listing.n - 1)
  end
  return id, code, msg
end

--- Aborts a transfer.
function Async.remove(_, h, id) async.abort(h, id) end

--- Sleeps the task until a transfer ends (imm.async.wake) or ms pass.
function Async.wait(be, L, ms)
  if not empty(L.runnable) then return true end
  local task = async.current()
  if not task then
    -- iterated outside any task: drive the tasks' multi right here
    async.poll(ms)
    return true
  end
  be.task = task
  local ok = async.sleep(ms / 1000)
  be.task = nil
  if not ok or task.cancelled then
    return nil, errors.new("Cancelled", "the task was cancelled", { retryable = false })
  end
  return true
end

--- Nothing to do: imm.poll moves the transfers.
function Async.kick() end
--- Closes the pre-connected sockets no chain took.
function Async.release(be)
  if be.preconnect then
    be.preconnect = false
    async.preconnect(nil, 0)
  end
end

-- Any other transport: requests run one at a time inside the chains.
local Sync = {}
Sync.__index = Sync
--- Waits for a retry timer.
function Sync.wait(_, _, ms)
  if ms > 0 then transport.sleep(ms / 1000) end
  return true
end
--- Nothing to do.
function Sync.kick() end
--- Nothing to release.
function Sync.release() end

-- The transport of the chains' client: hands each request to the backend
-- and yields the chain until it is done.
local ChainTransport = {}
ChainTransport.__index = ChainTransport

--- Sends a request of the running chain; the chain yields until it is done.
function ChainTransport:request(req)
  local L = self.listing
  -- the client was closed while the listing ran: refused, as its own transport would
  if L.origin.closed then return nil, closed_error() end
  local chain = L.current
  local h = pop(L.idle)
  if not h then
    local code, msg
    h, code, msg = core.http(L.http_options)
    if not h then return nil, errors.new(code, msg, { retryable = false }) end
    L.handles[#L.handles + 1] = h
  end
  -- the C core makes the "name: value" lines from the table itself
  local id, code, msg = L.io:add(chain, h, req.method, req.url, req.headers, req.body, req.fresh, req.timeout)
  if not id then
    push(L.idle, h)
    return nil, errors.new(code, msg, { retryable = false, sent = false })
  end
  chain.h, chain.id, chain.ready = h, id, false
  co_yield(IO)
  chain.h, chain.id = nil, nil
  local status, body, headers, st, sent = h:result()
  push(L.idle, h)
  if not status then
    return nil, errors.new(body, headers, { status = st, sent = sent })
  end
  -- a forwarding proxy refused the credentials, as transport/curl.lua says
  if status == 407 then return nil, require("imm.proxy").auth_failed(headers) end
  return { status = status, body = body, headers = headers }
end

--- Waits between retries: the chain yields until its timer is due.
function ChainTransport:sleep(seconds)
  local chain = self.listing.current
  chain.wake_at = core.monotonic() + seconds
  co_yield(SLEEP)
  chain.wake_at = nil
end

--- Nothing to release: the listing owns the handles.
function ChainTransport.close() end

-- A copy of the client whose requests go through `t`: its retries, signing
-- and decoding are the client's own (Client:call).
local function chain_client(client, t)
  local c = {}
  for k, v in pairs(client) do c[k] = v end
  c.transport = t
  return setmetatable(c, getmetatable(client))
end

-- The listing ------------------------------------------------------------

local Listing = {}
Listing.__index = Listing

local function new_chain(L, action, p, token, dataset)
  local chain = { listing = L, action = action, p = p, token = token, dataset = dataset, seen = 0,
    queued = 0, s = L.s }
  L.chains[chain] = true
  L.unfinished = L.unfinished + 1
  return chain
end

local function copy(t)
  local c = {}
  for k, v in pairs(t or {}) do c[k] = v end
  return c
end

-- Where each unfinished dataset stands after a failure: the token of its
-- first page not handed over (nil: from the start). The queue is handed
-- over before the failure, so that is the page each chain fetches next.
local function pending(L)
  local list = {}
  for chain in pairs(L.chains) do
    if chain.dataset and not chain.done then
      list[#list + 1] = { dataset = chain.dataset, next_token = chain.token }
    end
  end
  table.sort(list, function(a, b) return a.dataset < b.dataset end)
  return list
end

-- The resume state ------------------------------------------------------
--
-- Where a whole project listing stands after a failure, as one string
-- (err.resume) that opts.resume takes back: the ListDatasets token still to
-- fetch, or that ListDatasets is done; the datasets finished, so that one
-- named again on a later ListDatasets page is not listed twice; and each
-- unfinished dataset with the token of its first page not handed over.
-- Every name and token is percent-encoded (RFC 3986), so the separators
-- ! , : * never occur inside one and the text needs no quoting beyond the
-- shell's.
local RESUME_TAG = "imm-resume-1"
local pct = core.percent_encode
local function unpct(v)
  return (v:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function resume_state(L, pend)
  local ds, datasets = L.ds, "*"
  if ds and not ds.done then datasets = ds.token and pct(ds.token) or "" end
  local unfinished, open = {}, {}
  for i = 1, #pend do
    local p = pend[i]
    unfinished[p.dataset] = true
    open[i] = pct(p.dataset) .. (p.next_token and (":" .. pct(p.next_token)) or "")
  end
  -- the finished datasets matter only while ListDatasets has pages to come
  local done = {}
  if datasets ~= "*" then
    for name in pairs(L.seen) do
      if not unfinished[name] then done[#done + 1] = pct(name) end
    end
  end
  table.sort(done)
  return table.concat({ RESUME_TAG, pct(L.project), datasets, table.concat(done, ","),
    table.concat(open, ",") }, "!")
end

-- Reads a resume state for project; returns { datasets = token|""|false,
-- done = { names }, pending = { { name, token|nil } } }, or nil, message.
local function read_resume(text, project)
  if type(text) ~= "string" then return nil, "resume must be a string (err.resume), got " .. type(text) end
  local tag, proj, datasets, done, open = text:match("^([^!]*)!([^!]*)!([^!]*)!([^!]*)!([^!]*)$")
  if tag ~= RESUME_TAG then return nil, "resume is not a listing's err.resume" end
  -- only the characters that resume_state writes
  if text:find("[^%w%-%._~%%!,:*]") or (datasets ~= "*" and datasets:find("*", 1, true)) then
    return nil, "resume is not a listing's err.resume"
  end
  if unpct(proj) ~= project then
    return nil, "resume belongs to a listing of another project"
  end
  local st = { datasets = datasets ~= "*" and unpct(datasets), done = {}, pending = {} }
  for name in done:gmatch("[^,]+") do st.done[#st.done + 1] = unpct(name) end
  for entry in open:gmatch("[^,]+") do
    local name, token = entry:match("^([^:]+):?(.*)$")
    if not name then return nil, "resume is not a listing's err.resume" end
    st.pending[#st.pending + 1] = { unpct(name), token ~= "" and unpct(token) or nil }
  end
  return st
end

-- One page of a chain, as pager.fetch gives it (page, list, n, next_token,
-- or false, err), refusing a NextToken the chain has sent before.
local function chain_fetch(L, chain)
  local page, list, n, next_token, seen = fetch(L.cc, chain.action, chain.p, chain.s, chain.token, chain.seen)
  if not page then return page, list end
  chain.seen = seen
  chain.sent = chain.sent or {}
  local err = repeated_token(chain.sent, chain.token, next_token, page)
  if err then return false, err end
  return page, list, n, next_token
end

-- The chain body: one page per resume, handed over with RESULT.
local function chain_main(L, chain)
  while true do
    co_yield(RESULT, chain_fetch(L, chain))
  end
end

-- What a chain's fetch produced. Pages for the caller are queued and keep
-- their slot; ListDatasets pages become chains and free theirs at once.
local function on_result(L, chain, page, list, n, next_token)
  L.fetching = L.fetching - 1
  if not page then
    local err = list
    if chain.dataset then err.dataset = chain.dataset end
    if chain.action == "ListDatasets" then err.action = "ListDatasets" end
    L.err = err
    return
  end
  if chain.action == "ListDatasets" then
    L.busy = L.busy - 1
    local p = L.bindings_params
    local seen = L.seen
    for i = 1, n do
      local name = list[i].DatasetName
      -- a dataset named twice (on one page or two) is listed once
      if type(name) == "string" and name ~= "" and not seen[name] then
        seen[name] = true
        local bp = copy(p)
        bp.DatasetName = name
        push(L.want, new_chain(L, "ListBindings", bp, nil, name))
      end
    end
  else
    -- every page, an empty one too: the sequential pager hands it over
    -- (SimpleQuery's Aggregations and TotalHits can come on an empty page)
    chain.queued = chain.queued + 1
    push(L.queue, { chain = chain, page = page, list = list, n = n, token = chain.token })
  end
  chain.token = next_token
  if next_token then
    -- ListDatasets first, so new chains keep coming
    if chain.action == "ListDatasets" then push_front(L.want, chain) else push(L.want, chain) end
  else
    chain.done = true
    if chain.queued == 0 then
      L.chains[chain] = nil
    end
    L.unfinished = L.unfinished - 1
  end
end

-- Resumes a chain until it waits or hands over a page.
local function run(L, chain)
  L.current = chain
  local ok, what, a, b, c, d = co_resume(chain.co, L, chain)
  -- (no chain can yield WAIT before imm.async is loaded)
  local am = ok and loaded["imm.async"]
  while am and ok and what == am.WAIT and co_status(chain.co) == "suspended" do
    -- a credentials provider waiting inside an imm task: pass it up
    ok, what, a, b, c, d = co_resume(chain.co, co_yield(what, a))
  end
  L.current = nil
  if not ok then
    L:close()
    error(what, 0)
  end
  if what == RESULT then
    on_result(L, chain, a, b, c, d)
  elseif what == SLEEP then
    L.sleeping[chain] = true
  end
end

-- Starts fetches while slots are free.
local function start_fetches(L)
  while L.busy < L.n and not L.err and not L.closed do
    local chain = pop(L.want)
    if not chain then return end
    L.busy = L.busy + 1
    L.fetching = L.fetching + 1
    if not chain.co then chain.co = co_create(chain_main) end
    run(L, chain)
  end
end

-- Resumes the chains whose transfers ended, until one has a page for the
-- caller, and those whose retry timers fell due. Returns the ms until the
-- next timer (huge when none).
-- One page at a time: each reply is decoded only when the caller wants a
-- page, so the page is handed over, its slot freed and its chain's next
-- request sent before the next reply is decoded, not after all of them.
local function run_ready(L)
  local q, pages = L.runnable, L.queue
  while not empty(q) and empty(pages) and not L.err and not L.closed do
    local chain = pop(q)
    if chain.ready and not chain.done then
      chain.ready = false
      run(L, chain)
    end
  end
  local next_ms = huge
  if next(L.sleeping) then
    local now, due = core.monotonic(), {}
    for chain in pairs(L.sleeping) do
      if chain.wake_at <= now then
        due[#due + 1] = chain
      else
        next_ms = min(next_ms, (chain.wake_at - now) * 1000)
      end
    end
    -- resumed after the walk: a chain may sleep again, adding a key
    for i = 1, #due do
      if L.err or L.closed then break end
      L.sleeping[due[i]] = nil
      run(L, due[i])
    end
    if #due > 0 then next_ms = 0 end
  end
  return next_ms
end

--- Ends the listing: removes the transfers in flight, closes the handles,
-- drops the queued pages. Safe to call twice.
function Listing:close()
  if self.closed then return end
  self.closed = true
  for chain in pairs(self.chains) do
    if chain.h and chain.id then
      self.io:remove(chain.h, chain.id)
      chain.h:result()  -- releases the aborted exchange
    end
    chain.h, chain.id, chain.co = nil, nil, nil
  end
  self.sleeping = {}
  self.io:release()
  for i = 1, #self.handles do self.handles[i]:close() end
  self.handles, self.idle = {}, queue()
  self.queue = queue()
end

-- What a listing's next_page answers once it has ended: its error, once,
-- then nil.
local function ended(L)
  if L.err and not L.reported then
    L.reported = true
    return false, L.err
  end
  return nil
end

-- The next queued page entry, with its slot given back, or nil.
local function take(L)
  local e = pop(L.queue)
  if e then
    local chain = e.chain
    L.busy = L.busy - 1
    chain.queued = chain.queued - 1
    if chain.done and chain.queued == 0 then L.chains[chain] = nil end
  end
  return e
end

-- After the queue ran dry: ends the listing on failure (with every
-- unfinished dataset in err.pending) or when every chain is done. True
-- when it ended.
local function finish_if_done(L)
  if L.err then
    local pend = pending(L)
    L.err.pending = pend
    if L.seen then L.err.resume = resume_state(L, pend) end
    L:close()
    return true
  end
  if L.unfinished == 0 and L.fetching == 0 then
    L:close()
    return true
  end
  return false
end

-- The next queued page entry, running the chains until there is one; nil
-- at the end; false, err once on failure.
function Listing:next_page()
  while true do
    if self.closed then return ended(self) end
    local e = take(self)
    if e then
      start_fetches(self)
      self.io:kick()
      return e
    end
    if not finish_if_done(self) then
      start_fetches(self)
      local ms = run_ready(self)
      if empty(self.queue) and not self.err and not self.closed then
        local ok, err = self.io:wait(self, min(ms, 1000))
        if not ok then
          self.err = err
        end
        run_ready(self)
      end
    end
  end
end

-- The I/O backend for client.
local function backend(client)
  local t = client.transport
  if type(t) == "table" and t.name == "curl" and type(t.options) == "table" then
    if t.async then
      async = async or require "imm.async"
      return setmetatable({}, Async), t.options
    end
    return setmetatable({}, Blocking), t.options
  end
  return setmetatable({}, Sync)
end

local function new_listing(client, s, n)
  local L = setmetatable({
    s = s, n = n, chains = {}, unfinished = 0, busy = 0, fetching = 0,
    want = queue(), queue = queue(), runnable = queue(), sleeping = {},
    handles = {}, idle = queue(),
  }, Listing)
  local io, http_options = backend(client)
  L.io = io
  L.origin = client.transport
  if http_options then
    L.http_options = http_options
    L.cc = chain_client(client, setmetatable({ listing = L }, ChainTransport))
  else
    -- requests run in place, on the client as it is
    L.cc = client
  end
  return L
end

-- Something whose collection closes the listing: a userdata on Lua 5.1 and
-- LuaJIT (tables get no __gc there), a table elsewhere. `close` and, on
-- Lua 5.4, `__close` (for the fourth value of a for-in loop) do the same.
local newproxy = rawget(_G, "newproxy")
local function closer(L)
  local function close()
    L.abandoned = true  -- the iterator ends at once, even mid-page
    L:close()
  end
  local mt
  local c
  if newproxy then
    c = newproxy(true)
    mt = getmetatable(c)
  else
    c, mt = {}, {}
  end
  mt.__index = { close = close }
  mt.__gc = close
  mt.__close = close
  mt.__tostring = function() return "imm.parallel listing" end
  if not newproxy then setmetatable(c, mt) end
  return c
end

-- nginx: light threads --------------------------------------------------

local NgxListing = {}
NgxListing.__index = NgxListing

-- Has the listing stopped, or its reader gone? A loop left with `break` in
-- a handler that then returns leaves no one to take pages: the workers end
-- at their next wake-up instead of keeping the request open.
local function ngx_stopped(L)
  if not L.stopped and co_status(L.parent) == "dead" then L.stopped = true end
  return L.stopped
end

-- Waits on a semaphore in short rounds until it is posted or the listing
-- stops; returns true when posted.
local NGX_ROUND = 0.5
local function ngx_wait(L, sem)
  while not ngx_stopped(L) do
    if sem:wait(NGX_ROUND) then return true end
  end
  return false
end

-- A worker thread: takes a chain, waits for a slot, fetches one page,
-- hands it over, and again, until nothing is left or the listing stops.
local function ngx_worker(L)
  while true do
    if ngx_stopped(L) then return end
    local chain = pop(L.want)
    if not chain then
      if L.unfinished == 0 then return end
      ngx_wait(L, L.work)
    else
      if not ngx_wait(L, L.slots) then return end
      L.fetching = L.fetching + 1
      local page, list, n, next_token = chain_fetch(L, chain)
      if L.stopped then return end
      local before = L.want.last - L.want.first
      on_result(L, chain, page, list, n, next_token)
      local added = (L.want.last - L.want.first) - before
      if added > 0 then L.work:post(added) end
      -- a page for the caller keeps its slot until taken
      if page and (chain.action == "ListDatasets" or n == 0) then L.slots:post(1) end
      if L.err then L.stopped = true end
      if L.err or L.unfinished == 0 then
        L.work:post(L.n)  -- let the idle workers see it
      end
      L.ready:post(1)
    end
  end
end

-- A worker that raised (a bug, not a run-time failure) must not leave the
-- reader waiting: the reader raises it, as a chain's error is raised on the
-- libcurl path and by the sequential pager.
local function ngx_guarded(L)
  local ok, e = pcall(ngx_worker, L)
  if not ok and not L.stopped then
    L.raised = e
    L.stopped = true
    L.ready:post(1)
  end
end

--- Ends the listing: kills the light threads. Safe to call twice.
function NgxListing:close()
  if self.closed then return end
  self.closed, self.stopped = true, true
  local ngx = rawget(_G, "ngx")
  for i = 1, #(self.threads or {}) do
    -- only the coroutine that spawned a thread may kill it; after a
    -- collection elsewhere the threads end at their next wake-up
    pcall(ngx.thread.kill, self.threads[i])
  end
  if self.slots then
    pcall(self.slots.post, self.slots, self.n * 2)
    pcall(self.work.post, self.work, self.n * 2)
  end
  self.queue = queue()
end

--- The next page entry; nil at the end; false, err once on failure.
function NgxListing:next_page()
  if not self.threads then
    local ngx = rawget(_G, "ngx")
    local semaphore = require "ngx.semaphore"
    self.slots, self.work, self.ready = semaphore.new(self.n), semaphore.new(0), semaphore.new(0)
    self.threads = {}
    self.parent = coroutine.running()
    for i = 1, self.n do
      local th, err = ngx.thread.spawn(ngx_guarded, self)
      if not th then
        self:close()
        return false, errors.new("InvalidState", "ngx.thread.spawn failed: " .. tostring(err),
          { retryable = false })
      end
      self.threads[i] = th
    end
  end
  while true do
    local raised = self.raised
    if raised then
      self.raised = nil
      self:close()
      error(raised, 0)
    end
    if self.closed then return ended(self) end
    local e = take(self)
    if e then
      self.slots:post(1)
      return e
    end
    if not finish_if_done(self) then self.ready:wait(3600) end
  end
end

local function ngx_listing(client, s, n)
  local L = setmetatable({
    s = s, n = n, chains = {}, unfinished = 0, busy = 0, fetching = 0,
    want = queue(), queue = queue(), cc = client,
  }, NgxListing)
  -- on_result counts slots in busy; the semaphores do the waiting
  return L
end

local function use_ngx(client)
  local t = client.transport
  return transport.in_nginx() and type(t) == "table" and t.name == "ngx"
    and require("imm.transport.ngx").phase_ok()
end

-- The public side -------------------------------------------------------

-- The listing of a whole project's bindings for client and pager options s,
-- from the start or from a resume state st (read_resume).
local function project_listing(client, params, s, st)
  local n = s.concurrency
  local L = use_ngx(client) and ngx_listing(client, s, n) or new_listing(client, s, n)
  -- each chain follows its own tokens; the caller's max_items is counted
  -- where pages are taken
  local cs = copy(s)
  cs.max_items, cs.token = nil, nil
  L.s = cs
  L.limit = s.max_items
  local bp = copy(params)
  bp.NextToken, bp.DatasetName = nil, nil
  L.bindings_params = bp
  -- every dataset given a chain, so a name ListDatasets repeats is skipped
  L.seen, L.project = {}, params.ProjectName
  if st then
    for _, name in ipairs(st.done) do L.seen[name] = true end
    for _, p in ipairs(st.pending) do
      if not L.seen[p[1]] then
        L.seen[p[1]] = true
        local cp = copy(bp)
        cp.DatasetName = p[1]
        push(L.want, new_chain(L, "ListBindings", cp, p[2], p[1]))
      end
    end
  end
  if not st or st.datasets then
    local ds = new_chain(L, "ListDatasets", { ProjectName = params.ProjectName },
      st and st.datasets ~= "" and st.datasets or nil, nil)
    -- the call options hold for the ListDatasets pages too
    ds.s = { items = "Datasets", size_param = "MaxResults", default_size = pager.DEFAULT_PAGE_SIZE,
      call = s.call }
    push_front(L.want, ds)  -- first, so new chains keep coming
    L.ds = ds
  end
  return L
end

-- Checks what settings() cannot: a parallel listing starts from the top or
-- from opts.resume, on an open client. Returns nil, the resume state (or
-- nil), or an error.
local function check(client, params, s)
  if type(params) ~= "table" or type(params.ProjectName) ~= "string" or params.ProjectName == "" then
    return errors.invalid("ListBindings: ProjectName is required")
  end
  if s.token ~= nil or params.NextToken ~= nil then
    return errors.invalid("a parallel listing (concurrency > 1 without DatasetName) starts at the "
      .. "beginning: resume it with opts.resume = err.resume")
  end
  if type(client.transport) == "table" and client.transport.closed then return closed_error() end
  if s.resume ~= nil then
    local st, msg = read_resume(s.resume, params.ProjectName)
    if not st then return errors.invalid(msg) end
    return nil, st
  end
end

--- Transfers in flight on the blocking chains' multi handle (for tests:
-- a closed listing leaves none).
function _M.in_flight()
  return core.shared_multi():count()
end

--- Is this a call for a parallel listing? (`client:bindings` and
-- `client:all_bindings` dispatch here when it is.)
function _M.wanted(params, opts)
  return type(opts) == "table"
    and ((type(opts.concurrency) == "number" and opts.concurrency > 1) or opts.resume ~= nil)
    and not (type(params) == "table" and params.DatasetName ~= nil and params.DatasetName ~= "")
end

-- An iterator over the items or pages of listing L.
local function iterate(L, kind)
  local list, n, i = nil, 0, 0
  local emitted, limit = 0, L.limit
  local handle = closer(L)
  return function()
    if L.abandoned then return nil end
    local _ = handle  -- the iterator keeps it alive; once both are garbage, the listing closes
    local k = i + 1
    if k <= n then
      i = k
      return list[k]
    end
    list, n, i = nil, 0, 0
    while true do
      local e, err = L:next_page()
      if e == nil then return nil end
      if e == false then return false, err end
      local m = e.n
      if limit then
        m = min(m, limit - emitted)
        emitted = emitted + m
        if emitted >= limit then L:close() end
      end
      if kind == "pages" then
        if m < e.n then
          for j = m + 1, e.n do e.list[j] = nil end
        end
        return e.page
      end
      if m > 0 then
        list, n, i = e.list, m, 1
        return list[1]
      end
    end
  end, nil, nil, handle
end

--- Every binding of a project, `concurrency` requests at a time.
-- @return iterator, nil, nil, listing (`listing:close()` ends it early)
function _M.bindings(client, params, opts)
  local s, err = settings("ListBindings", params, opts, true)
  if not s then return failed(err) end
  local st
  err, st = check(client, params, s)
  if err then return failed(err) end
  return iterate(project_listing(client, params, s, st), "items")
end

--- Every binding of a project merged into `{ Bindings = { ... } }`.
-- @return table, or nil, err (err.pending says where each dataset stands)
function _M.all_bindings(client, params, opts)
  local s, err = settings("ListBindings", params, opts, true)
  if not s then return nil, err end
  local st
  err, st = check(client, params, s)
  if err then return nil, err end
  local L = project_listing(client, params, s, st)
  local all, count, limit = {}, 0, L.limit
  while true do
    local e, ferr = L:next_page()
    if e == nil then break end
    if e == false then
      -- what was collected goes back with err.resume, which continues after it
      if type(ferr) == "table" then ferr.partial = { Bindings = all } end
      return nil, ferr
    end
    local m = e.n
    if limit then m = min(m, limit - count) end
    for j = 1, m do all[count + j] = e.list[j] end
    count = count + m
    if limit and count >= limit then L:close() break end
  end
  return { Bindings = all }
end

--- A sequential pager that fetches page k+1 while the caller works on
-- page k (the `prefetch = true` pager option): a listing of one chain and
-- one slot. Memory: the page being read and the one on its way.
function _M.prefetch(client, action, params, s, kind)
  if type(client.transport) == "table" and client.transport.closed then return failed(closed_error()) end
  local L = use_ngx(client) and ngx_listing(client, s, 1) or new_listing(client, s, 1)
  local p = copy(params)
  local chain = new_chain(L, action, p, s.token or p.NextToken, nil)
  chain.prefetch = true
  push(L.want, chain)
  return iterate(L, kind)
end

return _M
