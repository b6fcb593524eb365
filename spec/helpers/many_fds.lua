-- Run by spec/16 in a process of its own (with `ulimit -n 4096`): opens
-- 1,100 files so that the next socket is numbered above 1024, starts an
-- async request to arg[1] (a server that never answers), and prints the
-- sockets imm.fds() reports.
local imm = require "imm"

local files = {}
for i = 1, 1100 do
  files[i] = assert(io.open("/dev/null", "r"))
end
print("opened " .. #files)

local t = assert(require("imm.transport.curl").new { timeout = 5, async = true })
local task = imm.spawn(function()
  return t:request { method = "GET", url = arg[1] .. "/", headers = {}, body = "" }
end)
local fds, ms
for _ = 1, 100 do
  imm.poll(20)
  fds, ms = imm.fds()
  if #fds > 0 then break end
end
for _, s in ipairs(fds) do
  print("socket " .. s.fd .. (s.read and " read" or "") .. (s.write and " write" or ""))
end
print("timeout " .. tostring(ms))
task:cancel()
t:close()
for _, f in ipairs(files) do f:close() end
