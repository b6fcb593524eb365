-- A LÖVE 11 game that lists an IMM project's bindings while its frames
-- keep coming: an async client's listing runs as an imm task, and
-- love.update drives it with imm.poll(0), which never waits.
--
--   love examples/love [PROJECT] [--quit]
--
-- The endpoint comes from IMM_ENDPOINT (or ALIBABA_CLOUD_REGION_ID), the
-- keys from the environment, as for any imm client. LÖVE runs LuaJIT: imm
-- must be built for it (`make build LUA=luajit`) and on the paths, e.g.
--   eval "$(make env LUA=luajit)"; love examples/love immtest
-- (installed with LuaRocks: `luarocks --lua-version=5.1 install imm`, and
-- `eval "$(luarocks --lua-version=5.1 path)"`). With --quit the game ends
-- once the listing is done, with status 0 (1 if it failed): `make
-- love-check` runs it that way, headless, against the local IMM server.
local imm = require "imm"

local project, quit_when_done
local client, task
local frames, listed, started = 0, 0, 0
local status = "listing..."
local recent = {}  -- the last few URIs, for the screen

function love.load(args)
  for _, a in ipairs(args or {}) do
    if a == "--quit" then quit_when_done = true else project = project or a end
  end
  project = project or "immtest"
  local endpoint = os.getenv("IMM_ENDPOINT")
  local err
  client, err = imm.new {
    endpoint = endpoint ~= "" and endpoint or nil,
    region = os.getenv("ALIBABA_CLOUD_REGION_ID"),
    async = true,  -- calls inside imm.spawn yield instead of blocking the game
  }
  if not client then error(tostring(err), 0) end
  started = love.timer.getTime()
  task = imm.spawn(function()
    for b, lerr in client:bindings({ ProjectName = project }, { page_size = 50 }) do
      if not b then return nil, lerr end
      listed = listed + 1
      table.insert(recent, 1, b.URI)
      recent[9] = nil
    end
    return listed
  end)
end

local reported = false

function love.update()
  frames = frames + 1
  imm.poll(0)  -- moves the transfers along; returns at once
  if reported or not task:done() then return end
  reported = true
  local ok, n, err = task:result()
  if ok and n then
    status = string.format("%d bindings in project %s", n, project)
  else
    status = "failed: " .. tostring(n == nil and err or n)
  end
  print(status)
  print(string.format("%d frames in %.2f s while listing", frames, love.timer.getTime() - started))
  client:close()
  if quit_when_done then love.event.quit((ok and n) and 0 or 1) end
end

function love.draw()
  love.graphics.print(string.format("imm %s  frame %d  listed %d", imm._VERSION, frames, listed), 16, 16)
  love.graphics.print(status, 16, 40)
  for i, uri in ipairs(recent) do love.graphics.print(uri, 16, 64 + 20 * i) end
end
