-- Resume an interrupted listing from a saved state.
--
--   lua5.4 examples/resume_listing.lua PROJECT STATEFILE
--   lua5.4 examples/resume_listing.lua PROJECT STATEFILE parallel
--
-- Page by page: each run lists at most 50 bindings, then saves where it
-- stopped in STATEFILE; the next run resumes there with `start_token`. A
-- failure also saves err.next_token, so a retry later loses nothing.
--
-- parallel: the project's datasets 8 at a time (`concurrency`). A failure
-- saves err.resume, where the whole listing stands (the datasets not listed
-- yet included); the next run passes it back as `resume` and prints each
-- binding the failed run had not printed, once.
local imm = require "imm"

local project, state, mode = arg[1] or "immtest", arg[2] or "/tmp/imm-resume.token", arg[3]

local function read_state()
  local f = io.open(state)
  if not f then return nil end
  local t = f:read("*l")
  f:close()
  if t == "" then return nil end
  return t
end

local function save_state(t)
  local f = assert(io.open(state, "w"))
  f:write(t or "")
  f:close()
end

if mode == "parallel" then
  local opts = { concurrency = 8, resume = read_state() }
  for b, err in imm.bindings({ ProjectName = project }, opts) do
    if not b then
      save_state(err.resume)
      io.stderr:write(tostring(err), "\n")
      print("failed: run again to resume")
      os.exit(1)
    end
    print(b.DatasetName .. " " .. b.URI)
  end
  save_state(nil)
  print("done: the listing is complete")
  return
end

local start = read_state()
local listed, last_token = 0, start
-- Page by page, so the token saved is always the start of an unread page.
for page, err in imm.pages("ListBindings", { ProjectName = project, MaxResults = 25 }, { start_token = start }) do
  if not page then
    save_state(err.next_token)
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
  end
  for _, b in ipairs(page.Bindings) do print(b.URI) end
  listed = listed + #page.Bindings
  last_token = page.NextToken
  if listed >= 50 then break end
end
save_state(last_token)
print(last_token and ("more to come: run again to resume") or "done: the listing is complete")
