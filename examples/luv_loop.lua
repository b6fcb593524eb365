-- imm tasks inside a libuv event loop (luv, Debian's lua-luv): no busy
-- polling. imm.fds() says which sockets libcurl waits on and how long it
-- may sleep; luv watches those and calls imm.poll(0) when one is ready.
--
--   lua5.4 examples/luv_loop.lua PROJECT
--
-- Configuration comes from the environment (see list_bindings.lua).
local uv = require "luv"
local imm = require "imm"

local project = arg[1] or "immtest"
local client = assert(imm.new {
  endpoint = os.getenv("IMM_ENDPOINT"),
  region = os.getenv("ALIBABA_CLOUD_REGION_ID"),
  async = true,
})

local task = imm.spawn(function() return client:all_bindings { ProjectName = project } end)

local watchers = {}   -- fd -> { handle = uv poll handle, events = "r" | "w" | "rw" }
local timer = uv.new_timer()
local wakeups = 0
local sync

local function drive()
  wakeups = wakeups + 1
  if imm.poll(0) == 0 then
    -- nothing left to run: stop watching, and the loop ends by itself
    for fd, w in pairs(watchers) do w.handle:close(); watchers[fd] = nil end
    timer:close()
    return
  end
  sync()
end

-- Watch exactly the sockets imm waits on now, and wake for its timeout.
function sync()
  local sockets, timeout = imm.fds()
  local seen = {}
  for _, s in ipairs(sockets) do
    local events = (s.read and "r" or "") .. (s.write and "w" or "")
    seen[s.fd] = true
    local w = watchers[s.fd]
    if not w then
      w = { handle = uv.new_socket_poll(s.fd) }
      watchers[s.fd] = w
    end
    if w.events ~= events then
      w.events = events
      w.handle:start(events, drive)
    end
  end
  for fd, w in pairs(watchers) do
    if not seen[fd] then w.handle:close(); watchers[fd] = nil end
  end
  timer:stop()
  -- -1: libcurl has no timer running; still look again now and then
  timer:start(timeout >= 0 and timeout or 1000, 0, drive)
end

sync()
uv.run()

local ok, res, err = task:result()
if not ok or not res then
  io.stderr:write(tostring(ok and err or res), "\n")
  os.exit(1)
end
print(string.format("%d bindings in project %s; the loop woke %d times", #res.Bindings, project, wakeups))
