-- Export every binding of a project to CSV on stdout, streaming: one row per
-- binding as the pager yields it, so memory stays flat however many there are.
--
--   lua5.4 examples/export_csv.lua PROJECT > bindings.csv
local imm = require "imm"

local project = arg[1] or "immtest"
local columns = { "ProjectName", "DatasetName", "URI", "State", "Phase", "CreateTime", "UpdateTime", "Reason" }

-- RFC 4180: quote a field when it holds a comma, a quote or a line break
local function csv(v)
  v = v == nil and "" or tostring(v)
  if v:find('[,"\r\n]') then v = '"' .. v:gsub('"', '""') .. '"' end
  return v
end

io.write(table.concat(columns, ","), "\r\n")
for b, err in imm.bindings({ ProjectName = project }, { page_size = 100 }) do
  if not b then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
  end
  local row = {}
  for i, c in ipairs(columns) do row[i] = csv(b[c]) end
  io.write(table.concat(row, ","), "\r\n")
end
