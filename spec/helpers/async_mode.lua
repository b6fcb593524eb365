-- A busted helper (`--helper`) that reruns ordinary specs in async mode:
-- every client made without a transport of its own gets `async = true`,
-- and every client method and iterator step runs inside an imm task that
-- is driven to completion with imm.poll. So the specs that pin down
-- errors, retries and paging in blocking mode check the async path with
-- the very same assertions (issue #9: "the same specs run in both modes").
local busted = require "busted"
local Client = require "imm.client"
local async = require "imm.async"

local unpack = table.unpack or unpack  -- luacheck: ignore
local function pack(...) return { n = select("#", ...), ... } end

local new = Client.new
Client.new = function(opts)
  if type(opts) == "table" and opts.transport == nil and opts.async == nil then
    local o = {}
    for k, v in pairs(opts) do o[k] = v end
    o.async = true
    opts = o
  end
  return new(opts)
end

local transfers = 0
local transfer = async.transfer
async.transfer = function(...)
  transfers = transfers + 1
  return transfer(...)
end

-- Runs fn(...) as a task, drives it to its end, and returns what it
-- returned; an error it raised is raised again here, as in blocking mode.
local function in_task(fn, ...)
  local r = pack(async.spawn(fn, ...):join())
  if r[1] == false then error(r[2].message, 0) end
  return unpack(r, 2, r.n)
end

local function async_client(self)
  return type(self) == "table" and type(self.transport) == "table" and self.transport.async
    and not async.current()
end

for _, name in ipairs { "call", "list_bindings", "all_bindings", "create_binding", "get_binding",
  "stop_binding", "resume_binding", "delete_binding", "wait_binding", "list_projects", "list_datasets" } do
  local f = Client[name]
  Client[name] = function(self, ...)
    if not async_client(self) then return f(self, ...) end
    return in_task(f, self, ...)
  end
end
for _, name in ipairs { "pages", "bindings", "projects", "datasets" } do
  local f = Client[name]
  Client[name] = function(self, ...)
    local it = f(self, ...)
    if not async_client(self) then return it end
    return function() return in_task(it) end
  end
end

-- An async run that made no async transfer tested nothing: fail it.
busted.subscribe({ "suite", "end" }, function()
  io.stderr:write(string.format("imm: async mode: %d transfers went through the multi handle\n", transfers))
  if transfers == 0 then
    io.stderr:write("imm: async mode made no async transfer\n")
    os.exit(1)
  end
  return nil, true
end)
