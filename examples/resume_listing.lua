-- Resume an interrupted listing from a saved token.
--
--   lua5.4 examples/resume_listing.lua PROJECT STATEFILE
--
-- Each run lists at most 50 bindings, then saves where it stopped in
-- STATEFILE; the next run resumes there with `start_token`. A failure also
-- saves err.next_token, so a retry later loses nothing.
local imm = require "imm"

local project, state = arg[1] or "immtest", arg[2] or "/tmp/imm-resume.token"

local function read_token()
  local f = io.open(state)
  if not f then return nil end
  local t = f:read("*l")
  f:close()
  if t == "" then return nil end
  return t
end

local function save_token(t)
  local f = assert(io.open(state, "w"))
  f:write(t or "")
  f:close()
end

local start = read_token()
local listed, last_token = 0, start
-- Page by page, so the token saved is always the start of an unread page.
for page, err in imm.pages("ListBindings", { ProjectName = project, MaxResults = 25 }, { start_token = start }) do
  if not page then
    save_token(err.next_token)
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
  end
  for _, b in ipairs(page.Bindings) do print(b.URI) end
  listed = listed + #page.Bindings
  last_token = page.NextToken
  if listed >= 50 then break end
end
save_token(last_token)
print(last_token and ("more to come: run again to resume") or "done: the listing is complete")
