-- Fails when a public function under lua/ has no doc comment above it.
-- Public: a top-level `function M.name` or `function M:name` whose name does
-- not start with "_" (local functions and _private methods are exempt).
--   lua5.4 tools/check-docs.lua lua/imm.lua lua/imm/*.lua lua/imm/*/*.lua
local missing, checked = {}, 0
-- A generated module whose comments live in its *_meta.lua twin (actions.lua)
-- is checked through the twin, which holds the same functions.
local function has_meta(path)
  local f = io.open((path:gsub("%.lua$", "_meta.lua")))
  if f then f:close() end
  return f ~= nil
end
for _, path in ipairs(arg) do
  if has_meta(path) then goto next_file end
  local prev = ""
  local n = 0
  for line in io.lines(path) do
    n = n + 1
    local name = line:match("^function%s+([%w_]+[.:][%w_]+)%s*%(")
    if name and not name:match("[.:]_") then
      checked = checked + 1
      if not prev:match("^%-%-") then
        missing[#missing + 1] = string.format("%s:%d: %s has no doc comment", path, n, name)
      end
    end
    -- LuaLS annotations (---@) do not count as documentation
    if line:match("%S") and not line:match("^%-%-%-@") then prev = line end
  end
  ::next_file::
end
for _, m in ipairs(missing) do io.stderr:write(m, "\n") end
print(string.format("docs: %d public functions, %d undocumented", checked, #missing))
os.exit(#missing == 0 and 0 or 1)
