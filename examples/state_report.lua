-- A report of binding states per dataset, with the reasons of failed ones.
--
--   lua5.4 examples/state_report.lua PROJECT
local imm = require "imm"

local project = arg[1] or "immtest"
local all, err = imm.all_bindings { ProjectName = project }
if not all then
  io.stderr:write(tostring(err), "\n")
  os.exit(1)
end

local by_dataset, states, failed = {}, {}, {}
for _, b in ipairs(all.Bindings) do
  local d = by_dataset[b.DatasetName]
  if not d then
    d = {}
    by_dataset[b.DatasetName] = d
  end
  d[b.State] = (d[b.State] or 0) + 1
  states[b.State] = true
  if b.State == "Failed" then failed[#failed + 1] = b end
end

local state_list, datasets = {}, {}
for s in pairs(states) do state_list[#state_list + 1] = s end
for d in pairs(by_dataset) do datasets[#datasets + 1] = d end
table.sort(state_list)
table.sort(datasets)

io.write(string.format("%-20s", "DATASET"))
for _, s in ipairs(state_list) do io.write(string.format("%9s", s)) end
io.write("\n")
for _, d in ipairs(datasets) do
  io.write(string.format("%-20s", d))
  for _, s in ipairs(state_list) do io.write(string.format("%9d", by_dataset[d][s] or 0)) end
  io.write("\n")
end
print(string.format("\n%d bindings, %d failed", #all.Bindings, #failed))
for _, b in ipairs(failed) do
  print(string.format("  %s %s: %s", b.DatasetName, b.URI, b.Reason or "(no reason given)"))
end
