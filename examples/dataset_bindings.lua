-- List one dataset's bindings, one page at a time, with explicit NextToken
-- handling (what the pager does for you).
--
--   lua5.4 examples/dataset_bindings.lua PROJECT DATASET
local imm = require "imm"

local project, dataset = arg[1] or "immtest", arg[2] or "dataset001"
local token, pages, count = nil, 0, 0
repeat
  local res, err = imm.list_bindings { ProjectName = project, DatasetName = dataset,
    MaxResults = 20, NextToken = token }
  if not res then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
  end
  pages = pages + 1
  for _, b in ipairs(res.Bindings) do
    count = count + 1
    print(b.URI, b.State)
  end
  token = res.NextToken
until token == nil
print(string.format("%d bindings of dataset %s in %d pages", count, dataset, pages))
