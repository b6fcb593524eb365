-- Fails when `make docs` lost part of imm.actions: every method of
-- lua/imm/actions_meta.lua must have an entry on its LDoc page, and the page must
-- keep the module's own introduction (an LDoc that misreads the header
-- takes the first function's line for it).
--   lua5.4 tools/check-ldoc.lua build/docs lua/imm/actions_meta.lua
local dir, src = arg[1], arg[2]
local function read(path, optional)
  local f = io.open(path, "rb")
  if optional and not f then return "" end
  assert(f, path)
  local s = f:read("*a")
  f:close()
  return s
end
-- a @classmod's page is under classes/
local page = read(dir .. "/classes/imm.actions.html", true)
local index = read(dir .. "/index.html")
local problems, n = {}, 0
for name in read(src):gmatch("\nfunction _M:([%w_]+)%(") do
  n = n + 1
  if not page:find('name = "imm.actions:' .. name .. '"', 1, true) then
    problems[#problems + 1] = "imm.actions." .. name .. " is missing from the LDoc page"
  end
end
local intro = "Every IMM action as a method of the client"
if not page:find(intro, 1, true) then problems[#problems + 1] = "the imm.actions page lost its introduction" end
local summary = index:match('"classes/imm%.actions%.html">imm%.actions</a></td>%s*<td class="summary">(.-)</td>')
if not (summary and summary:find(intro, 1, true)) then
  problems[#problems + 1] = "the index's summary of imm.actions is " .. string.format("%q", summary or "")
end
for _, p in ipairs(problems) do io.stderr:write(p, "\n") end
print(string.format("ldoc: %d actions methods, %d problems", n, #problems))
os.exit(#problems == 0 and 0 or 1)
