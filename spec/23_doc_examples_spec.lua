-- Every ```lua block of README.md and docs/*.md, run as a user would: in a
-- separate interpreter, configured from the environment (IMM_ENDPOINT and
-- the keys of the local IMM server), with `imm` and a `client` of that
-- server defined before it. A block that cannot run that way says why in
-- an HTML comment on the line before its fence, and is only compiled:
--   <!-- example: real service -->  needs Alibaba Cloud itself
--   <!-- example: fragment -->      a piece of a larger program (not even compiled)
--   <!-- example: nginx -->         runs inside nginx (spec 06 and 19 run the handlers)
--   <!-- example: busted -->        a spec: run with busted under the spec's interpreter
local fixture = require "helpers.fixture"

-- the interpreter running the specs (read here: inside a vararg function
-- Lua 5.1 would see its own `arg`)
local LUA = arg and arg[-1] or "lua"

local MARKS = { ["real service"] = true, fragment = true, nginx = true, busted = true }

local function blocks()
  local files = { "README.md" }
  local p = io.popen("ls docs/*.md")
  for f in p:lines() do files[#files + 1] = f end
  p:close()
  local out = {}
  for _, file in ipairs(files) do
    local text = assert(fixture.read(file))
    local n, prev, inside, body, line0, mark = 0, "", false, nil, 0, nil
    for line in (text .. "\n"):gmatch("([^\n]*)\n") do
      n = n + 1
      if inside then
        if line:match("^```%s*$") then
          inside = false
          out[#out + 1] = { file = file, line = line0, code = table.concat(body, "\n"), mark = mark }
        else
          body[#body + 1] = line
        end
      elseif line:match("^```lua%s*$") then
        inside, body, line0 = true, {}, n
        mark = prev:match("^<!%-%- example: ([%w ]-) %-%->$")
      end
      if line:match("%S") then prev = line end
    end
  end
  return out
end

-- Lua 5.1 has no load with an env and text mode; loadstring compiles only
local compile = loadstring or load  -- luacheck: ignore 113

describe("the code examples of README.md and docs/", function()
  local srv
  setup(function() srv = fixture.start() end)
  teardown(function() srv.stop() end)

  local all = blocks()

  it("are found, and each marked one names a known reason", function()
    assert.is_true(#all >= 30, "only " .. #all .. " lua blocks found")
    for _, b in ipairs(all) do
      if b.mark then assert.is_true(MARKS[b.mark] or false, b.file .. ":" .. b.line .. ": mark " .. b.mark) end
    end
  end)

  for _, b in ipairs(all) do
    local name = b.file .. ":" .. b.line .. (b.mark and (" (" .. b.mark .. ": compiled)") or "")
    it(name, function()
      if b.mark == "fragment" then return end  -- may hold `...` placeholders
      -- every other block compiles, marked or not
      local fn, cerr = compile(b.code, "=" .. b.file .. ":" .. b.line)
      assert.is_function(fn, cerr)
      if b.mark and b.mark ~= "busted" then return end
      srv.reset()
      local dir = fixture.tmpdir()
      local f = assert(io.open(dir .. "/example_spec.lua", "w"))
      local cmd
      if b.mark == "busted" then
        -- as docs/testing.md says: busted under the interpreter imm was built for
        f:write(b.code)
        cmd = { LUA, "/usr/bin/busted", "-o", "TAP", dir .. "/example_spec.lua" }
      else
        -- the docs' imm-server runs on port 8080: here it is the spec's server
        local code = b.code:gsub("http://127%.0%.0%.1:8080", srv.url)
        f:write('local imm = require "imm"\nlocal client = assert(imm.new { endpoint = os.getenv("IMM_ENDPOINT") })\n',
          "do\n", code, "\nend\nlocal _ = imm, client\n")
        cmd = { LUA, dir .. "/example_spec.lua" }
      end
      f:close()
      os.execute(table.concat({  -- not fixture.sh: an ASan build needs its LD_PRELOAD here
        "IMM_ENDPOINT=" .. srv.url,
        "ALIBABA_CLOUD_ACCESS_KEY_ID=" .. fixture.KEY_ID,
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET=" .. fixture.SECRET,
        "ALIBABA_CLOUD_ECS_METADATA_DISABLED=true",
        "timeout 120", table.concat(cmd, " "), ">" .. dir .. "/out 2>&1; echo $? >" .. dir .. "/rc" }, " "))
      local out, rc = fixture.read(dir .. "/out") or "", tonumber(fixture.read(dir .. "/rc"))
      fixture.sh("rm -rf " .. dir)
      assert.equal(0, rc, name .. ":\n" .. out)
      if b.mark == "busted" then assert.matches("\n1%.%.%d+", "\n" .. out) end
    end)
  end
end)

describe("make help", function()
  it("lists only targets of the Makefile", function()
    local p = io.popen("make -s --no-print-directory help 2>&1")
    local out = p:read("*a")
    p:close()
    local makefile = assert(fixture.read("Makefile"))
    local n = 0
    for line in out:gmatch("[^\n]+") do
      local target = line:match("^  make ([%w_%-]+):")
      if target then
        n = n + 1
        assert.is_truthy(makefile:find("\n" .. target:gsub("%-", "%%-") .. ":"), "not a target: " .. line)
      else
        assert.matches("^      ", line, "neither a target nor its continuation: " .. line)
      end
    end
    assert.is_true(n >= 10, out)
  end)
end)

describe("docs/api.md's client options table", function()
  it("names every option imm.new accepts", function()
    local src = assert(fixture.read("lua/imm/client.lua"))
    local block = assert(src:match("\nlocal OPTIONS = (%b{})"), "OPTIONS in lua/imm/client.lua")
    local doc = assert(fixture.read("docs/api.md"))
    local tbl = assert(doc:match("\n| option | default | meaning |\n(.-)\n\n"), "the options table")
    local documented = {}
    for row in tbl:gmatch("[^\n]+") do
      local first = row:match("^| ([^|]*) |")
      for name in (first or ""):gmatch("`([%w_]+)`") do documented[name] = true end
    end
    local n = 0
    for line in block:gmatch("[^\n]+") do
      if not line:match("^%s*%-%-") then
        for name in line:gmatch("([%a_][%w_]*) = [\"{]") do
          if name ~= "string" and name ~= "table" and name ~= "boolean" then
            n = n + 1
            assert.is_true(documented[name] or false, "client option " .. name .. " is missing from docs/api.md")
          end
        end
      end
    end
    assert.is_true(n >= 25, "only " .. n .. " options read")
  end)
end)
