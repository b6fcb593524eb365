-- The examples, run as a user would (a separate interpreter, configured from
-- the environment) against the local IMM server. Their output is checked
-- against what the library itself returns.
local fixture = require "helpers.fixture"

-- The interpreter running the specs; read here, since inside a vararg
-- function Lua 5.1 would see its own `arg` local instead.
local LUA = arg and arg[-1] or "lua"

describe("examples", function()
  local srv, all
  setup(function()
    srv = fixture.start()
    all = assert(srv.client {}:all_bindings { ProjectName = "immtest" }).Bindings
  end)
  teardown(function() srv.stop() end)

  -- Runs an example; returns stdout and the exit status.
  local function run(script, ...)
    local args = { ... }
    for i, a in ipairs(args) do args[i] = "'" .. a .. "'" end
    local out = fixture.tmpdir() .. "/out"
    local cmd = table.concat({
      "IMM_ENDPOINT=" .. srv.url,
      "ALIBABA_CLOUD_ACCESS_KEY_ID=" .. fixture.KEY_ID,
      "ALIBABA_CLOUD_ACCESS_KEY_SECRET=" .. fixture.SECRET,
      LUA, "examples/" .. script, table.concat(args, " "), ">" .. out, "2>&1;",
      "echo $? >" .. out .. ".rc" }, " ")
    os.execute(cmd)  -- not fixture.sh: an ASan build needs its LD_PRELOAD here
    local text = fixture.read(out) or ""
    local rc = tonumber(fixture.read(out .. ".rc"))
    fixture.sh("rm -rf " .. out:match("^(.*)/out$"))
    return text, rc
  end

  it("list_bindings.lua lists the project with the pager", function()
    local out, rc = run("list_bindings.lua", "immtest")
    assert.equal(0, rc, out)
    assert.matches("\n" .. #all .. " bindings in project immtest", out)
    for _, b in ipairs { all[1], all[#all] } do assert.is_truthy(out:find(b.URI, 1, true)) end
  end)

  it("dataset_bindings.lua follows NextToken by hand", function()
    local want = 0
    for _, b in ipairs(all) do if b.DatasetName == "dataset001" then want = want + 1 end end
    local out, rc = run("dataset_bindings.lua", "immtest", "dataset001")
    assert.equal(0, rc, out)
    assert.matches(want .. " bindings of dataset dataset001 in " .. math.ceil(want / 20) .. " pages", out)
  end)

  it("resume_listing.lua resumes from its saved token until done", function()
    local state = fixture.tmpdir() .. "/token"
    local seen, runs, out = {}, 0
    repeat
      runs = runs + 1
      local rc
      out, rc = run("resume_listing.lua", "immtest", state)
      assert.equal(0, rc, out)
      for uri in out:gmatch("(oss://[^\n]*)") do
        assert.is_nil(seen[uri], "listed twice: " .. uri)
        seen[uri] = true
      end
    until out:find("done:", 1, true) or runs > 10
    fixture.sh("rm -rf " .. state:match("^(.*)/token$"))
    local n = 0
    for _ in pairs(seen) do n = n + 1 end
    assert.equal(#all, n)
    assert.equal(math.ceil(#all / 50), runs)
  end)

  it("resume_listing.lua parallel finishes a failed parallel listing from err.resume, each binding once", function()
    local state = fixture.tmpdir() .. "/token"
    srv.fault { mode = "internal", count = -1, match = { DatasetName = "dataset002" } }
    local out, rc = run("resume_listing.lua", "immtest", state, "parallel")
    srv.control("DELETE", "faults")
    assert.equal(1, rc, out)
    assert.matches("failed: run again to resume", out)
    local out2, rc2 = run("resume_listing.lua", "immtest", state, "parallel")
    fixture.sh("rm -rf " .. state:match("^(.*)/token$"))
    assert.equal(0, rc2, out2)
    assert.matches("done:", out2)
    local seen, n = {}, 0
    for line in (out .. out2):gmatch("[^\n]+") do
      if line:find(" oss://", 1, true) then
        assert.is_nil(seen[line], "listed twice: " .. line)
        seen[line], n = true, n + 1
      end
    end
    assert.equal(#all, n)
  end)

  it("export_csv.lua writes one RFC 4180 row per binding", function()
    local out, rc = run("export_csv.lua", "immtest")
    assert.equal(0, rc)
    -- a small RFC 4180 reader: quoted fields may hold commas, quotes, breaks
    local rows, row, field, i, quoted = {}, {}, {}, 1, false
    while i <= #out do
      local c = out:sub(i, i)
      if quoted then
        if c == '"' and out:sub(i + 1, i + 1) == '"' then field[#field + 1] = '"'; i = i + 1
        elseif c == '"' then quoted = false
        else field[#field + 1] = c end
      elseif c == '"' then quoted = true
      elseif c == "," then row[#row + 1] = table.concat(field); field = {}
      elseif c == "\r" and out:sub(i + 1, i + 1) == "\n" then
        row[#row + 1] = table.concat(field); rows[#rows + 1] = row; row, field = {}, {}; i = i + 1
      else field[#field + 1] = c end
      i = i + 1
    end
    assert.equal(#all + 1, #rows)
    assert.same({ "ProjectName", "DatasetName", "URI", "State", "Phase", "CreateTime", "UpdateTime", "Reason" },
      rows[1])
    for k = 1, #all do
      assert.equal(all[k].URI, rows[k + 1][3])
      assert.equal(all[k].Reason or "", rows[k + 1][8])
    end
  end)

  it("state_report.lua counts states and lists failures", function()
    local failed = 0
    for _, b in ipairs(all) do if b.State == "Failed" then failed = failed + 1 end end
    local out, rc = run("state_report.lua", "immtest")
    assert.equal(0, rc, out)
    assert.matches(#all .. " bindings, " .. failed .. " failed", out)
    assert.matches("DATASET", out)
  end)

  it("binding_lifecycle.lua walks one binding through its states", function()
    srv.reset()
    -- long enough that a loaded machine still sees Ready right after creating
    srv.control("POST", "settings", { binding_start_delay = 1 })
    local uri = "oss://example-lifecycle/in/"
    local out, rc = run("binding_lifecycle.lua", "immtest", "photos-2024", uri)
    assert.equal(0, rc, out)
    local states = {}
    for step, rest in out:gmatch("(%a+) +oss://example%-lifecycle/in/: ([^\n]*)") do
      states[#states + 1] = step .. "=" .. rest
    end
    assert.same({ "created=Ready", "running=Running", "stopped=Stopped (paused by the example)",
      "resumed=Running", "deleted=gone" }, states)
    local actions = {}
    for _, r in ipairs(srv.log()) do
      if r.action ~= "GetBinding" then actions[#actions + 1] = r.action end
    end
    assert.same({ "CreateBinding", "StopBinding", "ResumeBinding", "DeleteBinding" }, actions)
    srv.reset()
  end)

  it("frame_loop.lua keeps its loop turning while the listings run as tasks", function()
    srv.reset()
    srv.fault { mode = "slow", delay = 0.2, count = -1 }
    local out, rc = run("frame_loop.lua", "immtest", "3")
    srv.reset()
    assert.equal(0, rc, out)
    for i = 1, 3 do
      assert.matches("task " .. i .. ": " .. #all .. " bindings in project immtest", out)
    end
    -- three pages of replies at 0.2 s each: a loop that waited for them in
    -- poll(0) would turn a handful of times, not hundreds
    local frames = tonumber(out:match("(%d+) frames while 3 listings ran"))
    assert.is_true(frames and frames > 100, out)
  end)

  -- Debian's lua-luv is built for the PUC Lua runtimes, not for LuaJIT.
  local has_luv = os.execute(LUA .. " -e 'require \"luv\"' >/dev/null 2>&1")
  has_luv = has_luv == true or has_luv == 0
  local luv_it = has_luv and it or pending
  luv_it("luv_loop.lua drives imm from a libuv loop without busy polling", function()
    local out, rc = run("luv_loop.lua", "immtest")
    assert.equal(0, rc, out)
    assert.matches(#all .. " bindings in project immtest", out)
    -- three pages: a few wake-ups per reply, not a spin
    local wakeups = tonumber(out:match("the loop woke (%d+) times"))
    assert.is_true(wakeups and wakeups < 60, out)
  end)

  -- LÖVE 11 runs LuaJIT, whatever runtime runs this spec: the LuaJIT build
  -- (make unit always builds it) on a virtual display (make love-check too).
  local function has(cmd)
    local r = os.execute("command -v " .. cmd .. " >/dev/null 2>&1")
    return r == true or r == 0
  end
  local love_it = (has("love") and has("xvfb-run")) and it or pending
  love_it("love/ lists from love.update with imm.poll(0), its frames never waiting", function()
    srv.reset()
    srv.fault { mode = "slow", delay = 0.2, count = -1 }
    local out = fixture.tmpdir() .. "/out"
    local top = fixture.cwd()
    fixture.sh(table.concat({
      "IMM_ENDPOINT=" .. srv.url, "ALIBABA_CLOUD_ACCESS_KEY_ID=" .. fixture.KEY_ID,
      "ALIBABA_CLOUD_ACCESS_KEY_SECRET=" .. fixture.SECRET,
      "LUA_PATH='" .. top .. "/lua/?.lua;;'", "LUA_CPATH='" .. top .. "/build/luajit/?.so;;'",
      "timeout 120 xvfb-run -a love examples/love immtest --quit >" .. out .. " 2>&1;",
      "echo $? >" .. out .. ".rc" }, " "))
    srv.reset()
    local text, rc = fixture.read(out) or "", tonumber(fixture.read(out .. ".rc"))
    fixture.sh("rm -rf " .. out:match("^(.*)/out$"))
    assert.equal(0, rc, text)
    assert.matches("\n?" .. #all .. " bindings in project immtest\n", text)
    local frames = tonumber(text:match("(%d+) frames in [%d.]+ s while listing"))
    -- five pages at 0.2 s each: a blocking call would give a frame or so per page
    assert.is_true(frames and frames > 15, text)
  end)

  -- docs/openresty.md's packages do not install lua-cjson: the handlers
  -- must load (and encode) with imm alone
  it("the OpenResty handlers need no lua-cjson", function()
    for _, name in ipairs { "imm_bindings", "imm_tasks" } do
      local saved, asked = {}, {}
      for _, m in ipairs { "cjson", "cjson.safe" } do
        saved[m] = { package.loaded[m], package.preload[m] }
        package.loaded[m] = nil
        package.preload[m] = function() asked[#asked + 1] = m; error("module '" .. m .. "' not found") end
      end
      local ok, err = pcall(dofile, "examples/openresty/" .. name .. ".lua")
      for m, v in pairs(saved) do package.loaded[m], package.preload[m] = v[1], v[2] end
      assert.is_true(ok, name .. ": " .. tostring(err))
      assert.same({}, asked, name)
    end
  end)

  it("exits 1 with the error on stderr when the call fails", function()
    local out, rc = run("list_bindings.lua", "no-such-project")
    assert.equal(1, rc)
    assert.matches("ResourceNotFound", out)
  end)
end)
