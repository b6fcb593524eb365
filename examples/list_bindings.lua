-- List every binding of a project with the coroutine pager.
--
--   lua5.4 examples/list_bindings.lua PROJECT
--
-- Configuration comes from the environment, as for the module-level API:
-- ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET, and
-- ALIBABA_CLOUD_REGION_ID or IMM_ENDPOINT (`make demo` points IMM_ENDPOINT
-- at the bundled local IMM server).
local imm = require "imm"

local project = arg[1] or "immtest"
local states, count = {}, 0

print(string.format("%-14s %-16s %-44s %-9s %s", "PROJECT", "DATASET", "URI", "STATE", "PHASE"))
for b, err in imm.bindings({ ProjectName = project }, { page_size = 50 }) do
  if not b then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
  end
  count = count + 1
  states[b.State] = (states[b.State] or 0) + 1
  print(string.format("%-14s %-16s %-44s %-9s %s", b.ProjectName, b.DatasetName, b.URI,
    b.State, b.Phase or ""))
end

local summary = {}
for state, n in pairs(states) do summary[#summary + 1] = state .. "=" .. n end
table.sort(summary)
print(string.format("\n%d bindings in project %s (%s)", count, project, table.concat(summary, ", ")))
