-- The life of one binding: create it, wait until it is Running, stop it,
-- resume it and delete it, printing its state after each step.
--
--   lua5.4 examples/binding_lifecycle.lua PROJECT DATASET oss://bucket/prefix/
local imm = require "imm"

local key = {
  ProjectName = arg[1] or "immtest",
  DatasetName = arg[2] or "photos-2024",
  URI = arg[3] or "oss://imm-example-bucket/lifecycle/",
}

local function check(res, err)
  if not res then
    io.stderr:write(tostring(err), "\n")
    os.exit(1)
  end
  return res
end

local function show(step)
  local res, err = imm.get_binding(key)
  if not res and err.code == "ResourceNotFound" then
    print(string.format("%-8s %s: gone", step, key.URI))
    return
  end
  local b = check(res, err).Binding
  print(string.format("%-8s %s: %s%s", step, b.URI, b.State,
    b.Reason and b.Reason ~= "" and (" (" .. b.Reason .. ")") or ""))
end

-- create is not retried once the request may have reached IMM: if it fails
-- with ConnectionFailed or Timeout, a second try may say ResourceAlreadyExist
local res, err = imm.create_binding(key)
if not res and err.code == "ResourceAlreadyExist" then
  print("already bound; carrying on with the existing binding")
else
  check(res, err)
end
show("created")

check(imm.wait_binding(key, { state = "Running", timeout = 60, interval = 0.2 }))
show("running")

check(imm.stop_binding { ProjectName = key.ProjectName, DatasetName = key.DatasetName, URI = key.URI,
  Reason = "paused by the example" })
show("stopped")

check(imm.resume_binding(key))
show("resumed")

check(imm.delete_binding(key))
show("deleted")
