-- A frame loop that never blocks on the network: several listings run as
-- imm tasks while the loop keeps turning, calling imm.poll(0) once a frame.
--
--   lua5.4 examples/frame_loop.lua PROJECT [TASKS]
--
-- Configuration comes from the environment (see list_bindings.lua).
local imm = require "imm"

local project, ntasks = arg[1] or "immtest", tonumber(arg[2]) or 4

local client = assert(imm.new {
  endpoint = os.getenv("IMM_ENDPOINT"),
  region = os.getenv("ALIBABA_CLOUD_REGION_ID"),
  async = true,  -- inside a task, calls yield instead of blocking
})

local tasks = {}
for i = 1, ntasks do
  tasks[i] = imm.spawn(function()
    -- The iterator is called directly, not by a for-in loop, so that this
    -- also runs on PUC Lua 5.1, where a for-in iterator cannot yield.
    local next_binding, n = client:bindings { ProjectName = project }, 0
    while true do
      local b, err = next_binding()
      if b == nil then return n end
      if not b then return nil, err end
      n = n + 1
    end
  end)
end

local frames = 0
while imm.poll(0) > 0 do
  frames = frames + 1  -- a game would draw a frame here
end

for i, t in ipairs(tasks) do
  local ok, n, err = t:result()
  if not ok or not n then
    io.stderr:write(string.format("task %d: %s\n", i, tostring(ok and err or n)))
    os.exit(1)
  end
  print(string.format("task %d: %d bindings in project %s", i, n, project))
end
print(string.format("%d frames while %d listings ran", frames, ntasks))
