-- Layer 9: the command-line tool, bin/imm, run as a subprocess against the
-- local IMM server, with the interpreter and LUA_PATH/LUA_CPATH of this run.
local cjson = require "cjson"
local core = require "imm.core"
local imm = require "imm"
local fixture = require "helpers.fixture"

local LUA = arg[-1] or "lua"
local unpack = table.unpack or unpack  -- luacheck: ignore (5.1)

local function q(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

local function split_lines(s)
  local t = {}
  for l in s:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end

local function split_tabs(s)
  local t = {}
  for f in (s .. "\t"):gmatch("([^\t]*)\t") do t[#t + 1] = f end
  return t
end

describe("imm command line", function()
  local srv
  setup(function() srv = fixture.start() end)
  teardown(function() srv.stop() end)
  before_each(function() srv.reset() end)

  -- The command line for `imm <args>`: the server's endpoint and keys in
  -- the environment and no other imm variable, unless env says otherwise
  -- (a value of false unsets the variable).
  local function command(args, env)
    local vars = {
      IMM_ENDPOINT = srv.url,
      ALIBABA_CLOUD_ACCESS_KEY_ID = fixture.KEY_ID,
      ALIBABA_CLOUD_ACCESS_KEY_SECRET = fixture.SECRET,
      ALIBABA_CLOUD_SECURITY_TOKEN = false, ALIBABA_CLOUD_REGION_ID = false, IMM_DEBUG = false,
    }
    for k, v in pairs(env or {}) do vars[k] = v end
    local names = {}
    for k in pairs(vars) do names[#names + 1] = k end
    table.sort(names)
    -- env takes its -u options before the assignments
    local unset, set = {}, {}
    for _, k in ipairs(names) do
      if vars[k] == false then
        unset[#unset + 1] = "-u " .. k
      else
        set[#set + 1] = k .. "=" .. q(vars[k])
      end
    end
    local parts = { "env", table.concat(unset, " "), table.concat(set, " ") }
    parts[#parts + 1] = LUA .. " bin/imm"
    for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
    return table.concat(parts, " ")
  end

  -- Runs `imm <args>`; returns stdout, stderr and the exit status.
  local function run(args, env)
    local errfile = srv.dir .. "/cli-stderr"
    local p = io.popen(command(args, env) .. " 2>" .. errfile .. '; echo "exit=$?"')
    local all = p:read("*a")
    p:close()
    local out, status = all:match("^(.*)exit=(%d+)\n$")
    local err = fixture.read(errfile)
    os.remove(errfile)
    return out, err, tonumber(status)
  end

  -- `imm <args>` is refused before anything is sent: exit 2, nothing on
  -- stdout, "imm: <pattern>" on stderr. Returns stderr.
  local function refused(args, pattern)
    local out, err, status = run(args)
    assert.equal(2, status)
    assert.equal("", out)
    assert.matches("^imm: ", err)
    assert.matches(pattern, err)
    assert.equal(0, #srv.log(), "a usage error sends nothing")
    return err
  end

  local function ok_run(args, env)
    local out, err, status = run(args, env)
    assert.equal(0, status, "stderr: " .. tostring(err))
    return out, err
  end

  -- Every immtest binding, in page order, as the library lists it.
  local function expected(params)
    params = params or {}
    params.ProjectName = params.ProjectName or "immtest"
    local all = assert(srv.client {}:all_bindings(params)).Bindings
    srv.reset()
    return all
  end

  describe("one page", function()
    it("prints the response as JSON, with the NextToken to continue", function()
      local want = expected()
      local out, err = ok_run { "list-bindings", "--project", "immtest", "--max-results", "7" }
      assert.equal("", err)
      assert.equal(1, #split_lines(out))
      local res = cjson.decode(out)
      assert.equal(7, #res.Bindings)
      assert.is_string(res.RequestId)
      assert.equal(("immtest:%s:%s"):format(want[7].DatasetName, want[7].URI), res.NextToken)
      for i = 1, 7 do assert.equal(want[i].URI, res.Bindings[i].URI) end
      assert.is_nil(out:find("\\/", 1, true), "URIs are written without escaped slashes")
      assert.equal(1, #srv.log())
    end)

    it("continues from --next-token, in either option form", function()
      local want = expected()
      local first = cjson.decode((ok_run { "list-bindings", "--project=immtest", "--max-results=7" }))
      local second = cjson.decode((ok_run { "list-bindings", "--project", "immtest", "--max-results", "7",
        "--next-token=" .. first.NextToken }))
      assert.equal(7, #second.Bindings)
      for i = 1, 7 do assert.equal(want[7 + i].URI, second.Bindings[i].URI) end
      assert.are_not.equal(first.NextToken, second.NextToken)
      local third = cjson.decode((ok_run { "list-bindings", "--project", "immtest", "--max-results", "7",
        "--next-token", second.NextToken }))
      assert.equal(want[15].URI, third.Bindings[1].URI)
    end)

    it("leaves NextToken out on the last page and keeps an empty Bindings a list", function()
      local res = cjson.decode((ok_run { "list-bindings", "--project", "immtest", "--dataset", "docs-ocr" }))
      assert.equal(15, #res.Bindings)
      assert.is_nil(res.NextToken)
      local out = ok_run { "list-bindings", "--project", "empty-project" }
      assert.matches('"Bindings":%[%]', out)
      assert.same({}, cjson.decode(out).Bindings)
    end)

    it("prints an aligned table with a header, and the token to continue on stderr", function()
      local out, err = ok_run { "list-bindings", "--project", "immtest", "--max-results", "5", "--output", "table" }
      local lines = split_lines(out)
      assert.equal(6, #lines)
      assert.matches("^DATASET +URI +STATE +PHASE +UPDATED$", lines[1])
      local uri_col = lines[1]:find("URI", 1, true)
      local state_col = lines[1]:find("STATE", 1, true)
      for i = 2, 6 do
        assert.equal(uri_col, lines[i]:find("oss://", 1, true))
        assert.matches("^%u%l+ ", lines[i]:sub(state_col))
        assert.matches("%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d", lines[i])
      end
      assert.matches("%-%-next%-token immtest:", err)
    end)

    it("prints tab-separated lines", function()
      local want = expected { DatasetName = "dataset002" }
      local out = ok_run { "list-bindings", "--project", "immtest", "--dataset", "dataset002",
        "--max-results", "3", "--output", "lines" }
      local lines = split_lines(out)
      assert.equal(3, #lines)
      for i, l in ipairs(lines) do
        assert.same({ "immtest", "dataset002", want[i].URI, want[i].State, want[i].Phase }, split_tabs(l))
      end
    end)

    it("filters by --dataset", function()
      local res = cjson.decode((ok_run { "list-bindings", "--project", "immtest", "--dataset", "dataset001",
        "--max-results", "200" }))
      assert.equal(60, #res.Bindings)
      for _, b in ipairs(res.Bindings) do assert.equal("dataset001", b.DatasetName) end
    end)
  end)

  describe("--all", function()
    it("streams every binding as lines, each once, page by page", function()
      local want = expected()
      assert.equal(205, #want)
      local out, err = ok_run { "list-bindings", "--project", "immtest", "--all", "--max-results", "50",
        "--output", "lines" }
      assert.equal("", err, "no progress line when stderr is not a terminal")
      local lines = split_lines(out)
      assert.equal(205, #lines)
      local seen = {}
      for i, l in ipairs(lines) do
        local f = split_tabs(l)
        assert.equal(5, #f)
        assert.equal("immtest", f[1])
        local key = f[2] .. "\t" .. f[3]
        assert.is_nil(seen[key], "duplicate " .. key)
        seen[key] = true
        assert.equal(want[i].DatasetName, f[2])
        assert.equal(want[i].URI, f[3])
      end
      assert.equal(5, #srv.log(), "205 bindings in pages of 50")
    end)

    it("writes NDJSON: one JSON object per binding per line", function()
      local out, err = ok_run { "list-bindings", "--project", "immtest", "--all" }
      assert.equal("", err)
      local lines = split_lines(out)
      assert.equal(205, #lines)
      for _, l in ipairs(lines) do
        local b = cjson.decode(l)
        assert.equal("immtest", b.ProjectName)
        assert.is_string(b.URI)
      end
      assert.equal(2, #srv.log(), "the pager's default page size of 200")
    end)

    it("prints a table with fixed column widths", function()
      local out = ok_run { "list-bindings", "--project", "immtest", "--all", "--output", "table" }
      local lines = split_lines(out)
      assert.equal(206, #lines)
      assert.matches("^DATASET +URI +STATE +PHASE +UPDATED$", lines[1])
      local uri_col = lines[1]:find("URI", 1, true)
      for i = 2, #lines do assert.equal(uri_col, lines[i]:find("oss://", 1, true)) end
    end)

    it("filters by --dataset", function()
      local out = ok_run { "list-bindings", "--project", "immtest", "--dataset", "dataset001", "--all",
        "--max-results", "25", "--output", "lines" }
      local lines = split_lines(out)
      assert.equal(60, #lines)
      for _, l in ipairs(lines) do assert.equal("dataset001", split_tabs(l)[2]) end
      assert.equal(3, #srv.log())
    end)

    it("prints a table header for an empty project", function()
      local out = ok_run { "list-bindings", "--project", "empty-project", "--all", "--output", "table" }
      assert.matches("^DATASET +URI +STATE +PHASE +UPDATED\n$", out)
    end)

    it("prints bindings as they arrive, not at the end", function()
      -- three slow pages of five short lines: far less than a stdio buffer, so
      -- the first page is seen early only if it is flushed before the next request
      srv.fault { mode = "slow", delay = 0.6, count = -1 }
      local p = io.popen(command { "list-bindings", "--project", "immtest", "--dataset", "docs-ocr", "--all",
        "--max-results", "5", "--output", "lines" } .. " 2>/dev/null")
      local first = p:read("*l")
      local t1 = core.monotonic()
      local rest = p:read("*a")
      local t2 = core.monotonic()
      p:close()
      assert.matches("^immtest\tdocs%-ocr\t", first)
      assert.equal(14, #split_lines(rest))
      -- two more slow pages followed the first line
      assert.is_true(t2 - t1 >= 0.6, ("the first line came %.2fs before the end"):format(t2 - t1))
    end)

    it("says where to resume after a failure in the middle", function()
      -- "slow" with no delay lets the first page through; the second is malformed
      srv.fault { mode = "slow", delay = 0, count = 1 }
      srv.fault { mode = "malformed" }
      local out, err, status = run { "list-bindings", "--project", "immtest", "--all", "--max-results", "50",
        "--output", "lines" }
      assert.equal(1, status)
      assert.equal(50, #split_lines(out))
      assert.matches("InvalidResponse", err)
      local token = err:match("resume with %-%-all %-%-next%-token (%S+)")
      assert.is_string(token)
      srv.reset()
      local rest = ok_run { "list-bindings", "--project", "immtest", "--all", "--next-token", token,
        "--output", "lines" }
      local seen, n = {}, 0
      for _, l in ipairs(split_lines(out .. rest)) do
        assert.is_nil(seen[l])
        seen[l], n = true, n + 1
      end
      assert.equal(205, n)
    end)

    -- issue 21, item 8
    it("prints every binding when one holds bytes that are not UTF-8 and a number beyond a double", function()
      srv.fault { mode = "slow", delay = 0, count = 3 }
      srv.fault { mode = "odd_values" }  -- the first binding of page 4 (the 151st)
      local out, err, status = run { "list-bindings", "--project", "immtest", "--all", "--max-results", "50" }
      assert.equal(0, status, "stderr: " .. err)
      assert.equal("", err)
      local lines = split_lines(out)
      assert.equal(205, #lines)
      local odd = lines[151]
      assert.matches('"Odd":"\239\191\189\239\191\189"', odd, 1, true)  -- each bad byte is U+FFFD
      assert.matches('"Big":1e999', odd, 1, true)
      for _, l in ipairs(lines) do assert.is_table(cjson.decode(l)) end
      -- one page, as one JSON object, the same way
      srv.reset()
      srv.fault { mode = "odd_values" }
      out = ok_run { "list-bindings", "--project", "immtest", "--max-results", "2" }
      assert.matches('"Big":1e999', out, 1, true)
      assert.is_table(cjson.decode(out))
    end)

    it("prints integers past what this Lua holds exactly as the service sent them", function()
      -- Exact is 2^53 + 1 (a double holds 2^53); Huge and Low are past int64
      srv.fault { mode = "odd_values", big_phase = 1 }
      local out = ok_run { "list-bindings", "--project", "immtest", "--max-results", "2" }
      assert.matches('"Exact":9007199254740993,', out, 1, true)
      assert.matches('"Huge":12345678901234567890,', out, 1, true)
      assert.matches('"Low":-9223372036854775809,', out, 1, true)
      assert.matches('"Phase":12345678901234567890,', out, 1, true)
      assert.matches('"Big":1e999', out, 1, true)  -- with the infinity the same text
      assert.is_table(cjson.decode(out))
      -- one binding a line (--all), and the lines and table columns
      srv.reset()
      srv.fault { mode = "odd_values", big_phase = 1 }
      local lines = split_lines(ok_run { "list-bindings", "--project", "immtest", "--all", "--max-results", "50" })
      assert.equal(205, #lines)
      assert.matches('"Exact":9007199254740993,', lines[1], 1, true)
      assert.matches('"Huge":12345678901234567890,', lines[1], 1, true)
      for i = 2, #lines do assert.is_nil(lines[i]:find("Exact", 1, true)) end
      srv.reset()
      srv.fault { mode = "odd_values", big_phase = 1 }
      local tsv = split_lines(ok_run { "list-bindings", "--project", "immtest", "--output", "lines",
        "--max-results", "2" })
      assert.equal("12345678901234567890", (tsv[1]:match("^[^\t]*\t[^\t]*\t[^\t]*\t[^\t]*\t([^\t]*)$")))
      srv.reset()
      srv.fault { mode = "odd_values", big_phase = 1 }
      local tab = ok_run { "list-bindings", "--project", "immtest", "--output", "table", "--max-results", "2" }
      assert.matches(" 12345678901234567890 ", tab, 1, true)
    end)

    it("gives a coded error and where to resume when a page cannot be printed", function()
      -- page 3 holds a binding nested deeper than the JSON writer goes (128)
      srv.fault { mode = "slow", delay = 0, count = 2 }
      srv.fault { mode = "odd_values", depth = 200 }
      local out, err, status = run { "list-bindings", "--project", "immtest", "--all", "--max-results", "50" }
      assert.equal(1, status)
      assert.equal(100, #split_lines(out), "the pages before it were printed")
      assert.matches("^imm: InvalidResponse: ", err)
      local token = err:match("resume with %-%-all %-%-next%-token (%S+)")
      assert.is_string(token, err)
      -- the token is page 3's: resuming prints it and the rest
      srv.reset()
      local rest = ok_run { "list-bindings", "--project", "immtest", "--all", "--max-results", "50",
        "--next-token", token }
      assert.equal(105, #split_lines(rest))
      local seen = {}
      for _, l in ipairs(split_lines(out .. rest)) do
        assert.is_nil(seen[l], "printed twice: " .. l)
        seen[l] = true
      end
    end)

    it("gives a coded error and where to resume when the output cannot be written", function()
      local first = cjson.decode((ok_run { "list-bindings", "--project", "immtest", "--max-results", "50" }))
      srv.reset()
      -- /dev/full: every write fails with ENOSPC
      local p = io.popen(command { "list-bindings", "--project", "immtest", "--all", "--max-results", "50",
        "--next-token", first.NextToken } .. " 2>&1 >/dev/full; echo \"exit=$?\"")
      local all = p:read("*a")
      p:close()
      assert.matches("exit=1\n$", all)
      assert.matches("imm: OutputFailed: cannot write the output", all, 1, true)
      assert.equal(first.NextToken, all:match("resume with %-%-all %-%-next%-token (%S+)"))
    end)

    it("shows its progress only when stderr is a terminal", function()
      -- not a terminal: nothing at all on stderr
      local _, err = ok_run { "list-bindings", "--project", "immtest", "--all", "--max-results", "20" }
      assert.equal("", err)
      if not fixture.sh("command -v script >/dev/null 2>&1") then
        pending("script(1) is not installed: the terminal case is not checked")
        return
      end
      -- a terminal, through script(1); a sanitizer's preload goes to lua, not to script
      local preload = os.getenv("LD_PRELOAD")
      local env = preload and { LD_PRELOAD = preload } or nil
      local outfile = srv.dir .. "/cli-out"
      local cmd = command({ "list-bindings", "--project", "immtest", "--all", "--max-results", "50",
        "--output", "lines" }, env) .. " >" .. outfile
      local p = io.popen("env -u LD_PRELOAD script -qec " .. q(cmd) .. " /dev/null")
      local tty = p:read("*a")
      p:close()
      assert.equal(205, #split_lines(fixture.read(outfile)))
      os.remove(outfile)
      assert.matches("\rimm: page 1, 0 bindings so far", tty, 1, true)
      assert.matches("\rimm: page 5, 200 bindings so far", tty, 1, true)
      -- cleared at the end: the last thing written is blanks and a carriage return
      assert.matches("\r +\r[\r\n]*$", tty)
    end)
  end)

  describe("errors", function()
    it("exits 1 with the code, message, request id and Recommend for an unknown project", function()
      local out, err, status = run { "list-bindings", "--project", "nope" }
      assert.equal(1, status)
      assert.equal("", out)
      assert.matches("ResourceNotFound", err)
      assert.matches("The specified project nope does not exist", err, 1, true)
      local rid = err:match("RequestId: ([%w%-]+)")
      assert.is_string(rid)
      assert.matches("Recommend: https://%S+" .. rid:gsub("%-", "%%-"), err)
      assert.equal(1, #srv.log())
    end)

    it("never prints the secret or the token", function()
      local secret, token = "WRONG-" .. fixture.SECRET, "TOKEN-do-not-print"
      for _, output in ipairs { "json", "table", "lines" } do
        for _, all in ipairs { false, true } do
          local args = { "list-bindings", "--project", "immtest", "--output", output }
          if all then args[#args + 1] = "--all" end
          local out, err, status = run(args, {
            ALIBABA_CLOUD_ACCESS_KEY_SECRET = secret, ALIBABA_CLOUD_SECURITY_TOKEN = token })
          assert.equal(1, status)
          assert.equal("", out)
          assert.matches("imm: %S+ %(HTTP 4%d%d%)", err)
          assert.is_nil(err:find(secret, 1, true))
          assert.is_nil(err:find(token, 1, true))
        end
      end
      local out, err, status = run({ "list-bindings", "--project", "immtest" },
        { ALIBABA_CLOUD_ACCESS_KEY_SECRET = secret })
      assert.equal(1, status)
      assert.equal("", out)
      assert.matches("SignatureDoesNotMatch", err)
      assert.is_nil(err:find(secret, 1, true))
    end)

    it("exits 1 without credentials", function()
      -- HOME too, so that no credentials file of this machine is found
      local out, err, status = run({ "list-bindings", "--project", "immtest" },
        { ALIBABA_CLOUD_ACCESS_KEY_ID = false, ALIBABA_CLOUD_ACCESS_KEY_SECRET = false, HOME = srv.dir })
      assert.equal(1, status)
      assert.equal("", out)
      assert.matches("NoCredentials", err)
      assert.equal(0, #srv.log())
    end)

    -- a command-line tool does not probe the ECS metadata service
    -- (100.100.100.200) unless asked: ALIBABA_CLOUD_ECS_METADATA names the role.
    -- The endpoint is a closed loopback port, so even a probe stays here.
    it("without keys, asks the ECS metadata service only when ALIBABA_CLOUD_ECS_METADATA is set", function()
      local env = { ALIBABA_CLOUD_ACCESS_KEY_ID = false, ALIBABA_CLOUD_ACCESS_KEY_SECRET = false, HOME = srv.dir,
        IMM_DEBUG = "1", ALIBABA_CLOUD_ECS_METADATA = false, ALIBABA_CLOUD_ECS_METADATA_DISABLED = false,
        ALIBABA_CLOUD_ECS_METADATA_ENDPOINT = "http://127.0.0.1:9" }
      local _, err, status = run({ "list-bindings", "--project", "immtest" }, env)
      assert.equal(1, status)
      assert.matches("NoCredentials", err)
      assert.is_nil(err:find("127.0.0.1:9/", 1, true), err)
      assert.matches("ecs_ram_role: [^\n]*ALIBABA_CLOUD_ECS_METADATA", err)
      env.ALIBABA_CLOUD_ECS_METADATA = "SomeRole"
      _, err, status = run({ "list-bindings", "--project", "immtest" }, env)
      assert.equal(1, status)
      assert.is_truthy(err:find("127.0.0.1:9/latest/", 1, true), err)
      assert.equal(0, #srv.log())
    end)

    it("reads keys from a named profile with --profile", function()
      -- a shared credentials file (INI) in a HOME of its own
      local home = srv.dir .. "/home"
      fixture.sh("mkdir -p " .. home .. "/.alibabacloud")
      local f = assert(io.open(home .. "/.alibabacloud/credentials", "w"))
      f:write("[default]\ntype = access_key\naccess_key_id = nobody\naccess_key_secret = nothing\n\n",
        "[dev]\ntype = access_key\naccess_key_id = ", fixture.KEY_ID, "\naccess_key_secret = ",
        fixture.SECRET, "\n")
      f:close()
      local env = { ALIBABA_CLOUD_ACCESS_KEY_ID = false, ALIBABA_CLOUD_ACCESS_KEY_SECRET = false, HOME = home }
      local out = ok_run({ "list-bindings", "--project", "immtest", "--max-results", "2", "--profile", "dev" }, env)
      assert.equal(2, #require("cjson").decode(out).Bindings)
      local out2, err, status = run({ "list-bindings", "--project", "immtest", "--profile", "nope" }, env)
      assert.equal(1, status)
      assert.equal("", out2)
      assert.matches("NoCredentials", err)
      assert.matches("nope", err)
      assert.is_nil(err:find(fixture.SECRET, 1, true))
      fixture.sh("rm -rf " .. home)
    end)
  end)

  describe("configuration", function()
    it("takes --endpoint over IMM_ENDPOINT and ALIBABA_CLOUD_REGION_ID", function()
      local out = ok_run({ "list-bindings", "--project", "immtest", "--max-results", "1", "--endpoint", srv.url },
        { IMM_ENDPOINT = "not an endpoint", ALIBABA_CLOUD_REGION_ID = "Not_A_Region" })
      assert.equal(1, #cjson.decode(out).Bindings)
    end)

    it("takes --region over IMM_ENDPOINT", function()
      -- a region that imm refuses proves IMM_ENDPOINT was not used, and keeps the call local
      local out, err, status = run { "list-bindings", "--project", "immtest", "--region", "Not_A_Region" }
      assert.equal(1, status)
      assert.equal("", out)
      assert.matches("InvalidParameter", err)
      assert.matches("region", err)
      assert.equal(0, #srv.log())
    end)

    it("prefers IMM_ENDPOINT to ALIBABA_CLOUD_REGION_ID", function()
      ok_run({ "list-bindings", "--project", "immtest", "--max-results", "1" },
        { ALIBABA_CLOUD_REGION_ID = "Not_A_Region" })
    end)

    it("says so when there is neither a region nor an endpoint", function()
      local _, err, status = run({ "list-bindings", "--project", "immtest" }, { IMM_ENDPOINT = false })
      assert.equal(1, status)
      assert.matches("no region or endpoint", err)
      assert.matches("ALIBABA_CLOUD_REGION_ID", err)
    end)
  end)

  describe("usage", function()
    local cases = {
      { {}, "a command is required" },
      { { "list-binding" }, "did you mean list%-bindings" },
      { { "--verison" }, "did you mean %-%-version" },
      { { "list-bindings", "--projcet", "immtest" }, "unknown option %-%-projcet %(did you mean %-%-project%?%)" },
      { { "list-bindings", "--project", "immtest", "--bogus" }, "unknown option %-%-bogus" },
      { { "list-bindings", "--project", "immtest", "-x" }, "unknown option %-x" },
      { { "list-bindings" }, "%-%-project is required" },
      { { "list-bindings", "--dataset", "d" }, "%-%-project is required" },
      { { "list-bindings", "--project" }, "%-%-project needs a value" },
      { { "list-bindings", "--project", "--all" }, "%-%-project needs a value" },
      { { "list-bindings", "--project=" }, "non%-empty" },
      { { "list-bindings", "--project", "immtest", "immtest" }, "unexpected argument" },
      { { "list-bindings", "--project", "a", "--project", "b" }, "more than once" },
      { { "list-bindings", "--project", "immtest", "--all=yes" }, "%-%-all takes no value" },
      { { "list-bindings", "--project", "immtest", "--output", "yaml" }, "json, table or lines" },
      { { "list-bindings", "--project", "immtest", "--output", "tabel" }, "did you mean table" },
      { { "list-bindings", "--project", "immtest", "--region", "cn-hangzhou", "--endpoint", "h" },
        "%-%-region and %-%-endpoint" },
    }
    for _, bad in ipairs { "abc", "201", "-1", "1.5", "1e2", "0x10", "2000" } do
      cases[#cases + 1] = { { "list-bindings", "--project", "immtest", "--max-results=" .. bad },
        "%-%-max%-results must be an integer from 0 to 200" }
    end
    for _, case in ipairs(cases) do
      it("exits 2 for: imm " .. table.concat(case[1], " "), function()
        assert.matches("\nUsage: imm ", refused(case[1], case[2]))
      end)
    end

    it("accepts the edges of --max-results", function()
      assert.equal(100, #cjson.decode((ok_run { "list-bindings", "--project", "immtest", "--max-results", "0" }))
        .Bindings)
      assert.equal(200, #cjson.decode((ok_run { "list-bindings", "--project", "immtest", "--max-results", "200" }))
        .Bindings)
    end)

    it("documents everything in --help and exits 0", function()
      for _, args in ipairs { { "--help" }, { "-h" }, { "help" } } do
        local out, err = ok_run(args)
        assert.equal("", err)
        assert.matches("^Usage: imm ", out)
        for _, s in ipairs { "list-bindings", "--version", "ALIBABA_CLOUD_ACCESS_KEY_ID",
          "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_SECURITY_TOKEN", "ALIBABA_CLOUD_REGION_ID",
          "IMM_ENDPOINT", "Exit status" } do
          assert.matches(s, out, 1, true)
        end
      end
      for _, args in ipairs { { "list-bindings", "--help" }, { "list-bindings", "-h" },
        { "list-bindings", "--project", "immtest", "--help" }, { "help", "list-bindings" } } do
        local out, err = ok_run(args)
        assert.equal("", err)
        assert.matches("^Usage: imm list%-bindings ", out)
        for _, s in ipairs { "--project", "--dataset", "--max-results", "--next-token", "--all", "--output",
          "json", "table", "lines", "NDJSON", "--region", "--endpoint", "--profile", "--opt=value",
          "ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_SECURITY_TOKEN",
          "ALIBABA_CLOUD_REGION_ID", "IMM_ENDPOINT", "Exit status", "  2  " } do
          assert.matches(s, out, 1, true)
        end
      end
      assert.equal(0, #srv.log())
    end)

    it("prints the version", function()
      local out, err = ok_run { "--version" }
      assert.equal("", err)
      assert.equal("imm " .. imm._VERSION, out:match("^(imm %S+) %(.+%)\n$"))
    end)
  end)

  describe("binding lifecycle and other commands", function()
    local KEY = { "--project", "immtest", "--dataset", "photos-2024", "--uri", "oss://cli-lifecycle/" }
    local function with_key(cmd, ...)
      local args = { cmd }
      for _, a in ipairs(KEY) do args[#args + 1] = a end
      for i = 1, select("#", ...) do args[#args + 1] = select(i, ...) end
      return args
    end
    local function state_of()
      local res, err = srv.client {}:get_binding { ProjectName = "immtest", DatasetName = "photos-2024",
        URI = "oss://cli-lifecycle/" }
      return res and res.Binding.State or err.code
    end

    it("creates, waits, stops, resumes and deletes a binding", function()
      local out, err = ok_run(with_key("create-binding"))
      assert.equal("", err)
      local res = cjson.decode(out)
      assert.equal("Ready", res.Binding.State)
      assert.equal("oss://cli-lifecycle/", res.Binding.URI)
      assert.is_nil(out:find("\\/", 1, true), "URIs are written without escaped slashes")

      local b = cjson.decode((ok_run(with_key("wait-binding", "--interval", "0.1", "--timeout", "10"))))
      assert.equal("Running", b.State)
      assert.equal("Running", cjson.decode((ok_run(with_key("get-binding")))).State)

      assert.is_string(cjson.decode((ok_run(with_key("stop-binding", "--reason", "two words")))).RequestId)
      b = cjson.decode((ok_run(with_key("get-binding"))))
      assert.equal("Stopped", b.State)
      assert.equal("two words", b.Reason)
      assert.equal("Stopped", cjson.decode((ok_run(with_key("wait-binding", "--state", "Stopped")))).State)

      ok_run(with_key("resume-binding"))
      assert.equal("Running", state_of())
      ok_run(with_key("delete-binding"))
      assert.equal("ResourceNotFound", state_of())

      local _, derr, status = run(with_key("delete-binding"))
      assert.equal(1, status)
      assert.matches("^imm: ResourceNotFound %(HTTP 404%)", derr)
    end)

    it("waits for Running with create-binding --wait, and fails on a terminal state", function()
      local b = cjson.decode((ok_run(with_key("create-binding", "--wait", "--interval", "0.1"))))
      assert.equal("Running", b.State)
      srv.control("POST", "binding-state", { ProjectName = "immtest", DatasetName = "photos-2024",
        URI = "oss://cli-lifecycle/", State = "Failed", Reason = "bucket gone" })
      local out, err, status = run(with_key("wait-binding", "--interval", "0.1"))
      assert.equal(1, status)
      assert.equal("", out)
      assert.matches("^imm: BindingFailed: .*bucket gone", err)
    end)

    it("gives up with WaitTimeout", function()
      srv.control("POST", "settings", { binding_start_delay = 60 })
      ok_run(with_key("create-binding"))
      local _, err, status = run(with_key("wait-binding", "--interval", "0.1", "--timeout", "0.3"))
      assert.equal(1, status)
      assert.matches("^imm: WaitTimeout: .*still Ready", err)
    end)

    it("lists projects and datasets, a page or --all", function()
      local want = {}
      for p in srv.client {}:projects() do want[#want + 1] = p.ProjectName end
      srv.reset()
      local page = cjson.decode((ok_run { "list-projects", "--max-results", "2" }))
      assert.equal(2, #page.Projects)
      assert.equal(want[1], page.Projects[1].ProjectName)
      assert.is_string(page.NextToken)
      local rest = cjson.decode((ok_run { "list-projects", "--next-token", page.NextToken }))
      assert.equal(want[3], rest.Projects[1].ProjectName)
      local lines = split_lines((ok_run { "list-projects", "--all", "--max-results", "1" }))
      assert.equal(#want, #lines)
      for i, l in ipairs(lines) do assert.equal(want[i], cjson.decode(l).ProjectName) end
      assert.equal(2 + #want, #srv.log())

      local names = {}
      for d in srv.client {}:datasets { ProjectName = "immtest" } do names[#names + 1] = d.DatasetName end
      lines = split_lines((ok_run { "list-datasets", "--project", "immtest", "--all", "--max-results", "2" }))
      assert.equal(#names, #lines)
      for i, l in ipairs(lines) do assert.equal(names[i], cjson.decode(l).DatasetName) end
      local empty = ok_run { "list-datasets", "--project", "empty-project" }
      assert.matches('"Datasets":%[%]', empty)
      local photos = cjson.decode((ok_run { "list-datasets", "--project", "immtest", "--prefix", "photos" }))
      assert.equal(1, #photos.Datasets)
      assert.equal("photos-2024", photos.Datasets[1].DatasetName)
    end)

    it("calls any action with Name=value parameters and JSON text for structured ones", function()
      local out = ok_run { "call", "CreateProject", "ProjectName=cli-made",
        'Tag=[{"Key":"env","Value":"cli"}]', "Description=from the command line" }
      local res = cjson.decode(out)
      assert.equal("cli-made", res.Project.ProjectName)
      assert.equal("cli", res.Project.Tags[1].TagValue)
      local found
      for p in srv.client {}:projects { Prefix = "cli-" } do found = p end
      assert.equal("from the command line", found.Description)
      -- a known action's integer parameter, and GET
      local page = cjson.decode((ok_run { "call", "--method", "GET", "ListBindings", "ProjectName=immtest",
        "MaxResults=3" }))
      assert.equal(3, #page.Bindings)
      local log = srv.log()
      assert.equal("GET", log[#log].method)
      assert.equal("3", log[#log].params.MaxResults)
    end)

    local cases = {
      { { "create-binding", "--project", "p", "--dataset", "d" }, "%-%-uri is required" },
      { { "get-binding", "--dataset", "d", "--uri", "oss://b/" }, "%-%-project is required" },
      { { "stop-binding", "--project", "p", "--dataset", "d", "--uri", "oss://b/", "--reasn", "x" },
        "did you mean %-%-reason" },
      { { "wait-binding", "--project", "p", "--dataset", "d", "--uri", "oss://b/", "--state", "Runing" },
        "%-%-state must be a binding state" },
      { { "wait-binding", "--project", "p", "--dataset", "d", "--uri", "oss://b/", "--timeout", "0" },
        "%-%-timeout must be a positive number" },
      { { "create-binding", "--project", "p", "--dataset", "d", "--uri", "s3://b/" }, "URI must start with oss://" },
      { { "create-binding", "--project", "p", "--dataset", "d", "--uri", "oss://bkt/x" }, "URI must end with /" },
      { { "list-datasets" }, "%-%-project is required" },
      { { "list-projects", "--max-results", "500" }, "%-%-max%-results must be an integer" },
      { { "call" }, "ACTION is required" },
      { { "call", "listProjects" }, "ACTION must be an action name" },
      { { "call", "ListProjects", "MaxResults" }, "expected Name=value" },
      { { "call", "ListProjects", "--method", "PUT" }, "%-%-method must be POST or GET" },
      { { "call", "ListProjects", "A=1", "A=2" }, "A is given more than once" },
      { { "get-bindings" }, "did you mean get%-binding" },
    }
    for _, case in ipairs(cases) do
      it("exits 2 for: imm " .. table.concat(case[1], " "), function()
        refused(case[1], case[2])
      end)
    end

    it("documents each command in --help", function()
      for cmd, words in pairs {
        ["create-binding"] = { "--project", "--dataset", "--uri", "--wait", "--timeout", "--interval",
          "ConnectionFailed" },
        ["get-binding"] = { "--uri" }, ["stop-binding"] = { "--reason" }, ["resume-binding"] = { "--uri" },
        ["delete-binding"] = { "ResourceNotFound" }, ["wait-binding"] = { "--state", "WaitTimeout", "BindingFailed" },
        ["list-projects"] = { "--prefix", "--all", "--next-token", "--output" },
        ["list-datasets"] = { "--project", "--all", "--output" },
        call = { "Name=value", "--method", "Tag=" },
      } do
        for _, args in ipairs { { cmd, "--help" }, { "help", cmd } } do
          local out, err = ok_run(args)
          assert.equal("", err)
          assert.matches("^Usage: imm " .. cmd:gsub("%-", "%%-") .. " ", out)
          for _, w in ipairs(words) do assert.matches(w, out, 1, true) end
          for _, w in ipairs { "--region", "--endpoint", "--profile", "IMM_ENDPOINT", "Exit status" } do
            assert.matches(w, out, 1, true)
          end
        end
        assert.matches(cmd, (ok_run { "--help" }), 1, true)
      end
      assert.equal(0, #srv.log())
    end)

    it("lists an action's parameters from its schema: imm call ACTION --help", function()
      local out, err = ok_run { "call", "ContextualAnswer", "--help" }
      assert.equal("", err)
      assert.matches("^Usage: imm call ContextualAnswer ", out)
      assert.matches("form%-urlencoded body", out)
      assert.matches("\n  Messages +body +required +array of ContextualMessage %(JSON text%)\n", out)
      assert.matches("\n  ProjectName +query +required +string\n", out)
      assert.matches("\n  Files +body +%- +array of ContextualFile %(JSON text%)\n", out)
      out = ok_run { "call", "--help", "QueryFigureClusters" }
      assert.matches("pages with NextToken; the list is FigureClusters", out, 1, true)
      assert.matches("\n  MaxResults +query +%- +number\n", out)
      assert.matches("retried like a read", out, 1, true)
      out = ok_run { "call", "StopBinding", "--help" }
      assert.matches("absent from the official SDK", out, 1, true)
      assert.matches("\n  Reason +query +%- +string\n", out)
      out = ok_run { "call", "ListFigureClusters", "-h" }
      assert.matches("not an action of the API description %(did you mean QueryFigureClusters%?%)", out)
      assert.equal(0, #srv.log())
    end)

    it("needs no lua-cjson", function()
      -- cjson.lua and cjson/safe.lua that refuse to load, found before the C module
      local dir = fixture.tmpdir()
      assert(fixture.sh("mkdir -p " .. dir .. "/cjson"))
      for _, f in ipairs { "/cjson.lua", "/cjson/safe.lua" } do
        local h = assert(io.open(dir .. f, "w"))
        h:write('error("lua-cjson was loaded")\n')
        h:close()
      end
      local env = { LUA_PATH = dir .. "/?.lua;" .. os.getenv("LUA_PATH") }
      local out = ok_run({ "call", "CreateProject", "ProjectName=no-cjson", 'Tag=[{"Key":"k","Value":"v"}]' }, env)
      assert.equal("no-cjson", cjson.decode(out).Project.ProjectName)
      out = ok_run({ "list-bindings", "--project", "immtest", "--max-results", "2" }, env)
      assert.equal(2, #cjson.decode(out).Bindings)
      out = ok_run({ "list-projects", "--prefix", "nothing-here" }, env)
      assert.equal('{"Projects":[],', out:sub(1, 15))
      assert(fixture.sh("rm -rf " .. dir))
    end)

    it("turns number and boolean parameters of known actions into values, and checks them", function()
      -- refused before sending: a number parameter that is not a number
      refused({ "call", "ListBindings", "ProjectName=immtest", "MaxResults=ten" }, "MaxResults must be an integer")
      refused({ "call", "GetDataset", "ProjectName=immtest", "DatasetName=d", "WithStatistics=yes" },
        "WithStatistics must be a boolean")
      refused({ "call", "ListProjects", 'Tag={"Key":"e"}' }, "Tag must be an array, got an object %(in the JSON text%)")
      refused({ "call", "ListProjects", "Tag=[{" }, "not JSON text")
      refused({ "call", "ListProjects", "Prefx=a" }, 'did you mean "Prefix"')
      local out = ok_run { "call", "ListProjects", "MaxResults=2", 'Tag=[{"Key":"env","Value":"none"}]' }
      assert.same({}, cjson.decode(out).Projects)
      local log = srv.log()
      assert.equal('[{"Key":"env","Value":"none"}]', log[#log].params.Tag)
      assert.equal("2", log[#log].params.MaxResults)
    end)
  end)

  describe("JSON, --output and --profile (issue 17)", function()
    -- The keys of the first object at or after `from`, in the order written.
    local function keys_in_order(text, from)
      local obj = text:match("%b{}", from)
      local keys, depth, i = {}, 0, 1
      while i <= #obj do
        local c = obj:sub(i, i)
        if c == "{" or c == "[" then depth = depth + 1
        elseif c == "}" or c == "]" then depth = depth - 1
        elseif c == '"' then
          local j = i + 1
          while obj:sub(j, j) ~= '"' do j = j + (obj:sub(j, j) == "\\" and 2 or 1) end
          if depth == 1 and obj:sub(j + 1, j + 1) == ":" then keys[#keys + 1] = obj:sub(i + 1, j - 1) end
          i = j
        end
        i = i + 1
      end
      return keys
    end

    local function sorted_copy(t)
      local c = {}
      for i, v in ipairs(t) do c[i] = v end
      table.sort(c)
      return c
    end

    it("writes object keys sorted, the same text each time", function()
      local out = ok_run { "list-bindings", "--project", "immtest", "--max-results", "3" }
      local top = keys_in_order(out, 1)
      assert.same({ "Bindings", "NextToken", "RequestId" }, top)
      local first = keys_in_order(out, out:find("[", 1, true))
      assert.is_true(#first >= 7, out)
      assert.same(sorted_copy(first), first)
      -- the same page again: the same text but for the RequestId
      local again = ok_run { "list-bindings", "--project", "immtest", "--max-results", "3" }
      local strip = function(s) return (s:gsub('"RequestId":"[^"]*"', "")) end
      assert.equal(strip(out), strip(again))
      for _, l in ipairs(split_lines((ok_run { "list-bindings", "--project", "immtest", "--all", "--max-results",
          "100" }))) do
        local k = keys_in_order(l, 1)
        assert.same(sorted_copy(k), k)
      end
    end)

    it("keeps a nested empty array an array: Projects[].Tags", function()
      local out = ok_run { "list-projects" }
      local page = cjson.decode(out)
      assert.is_true(#page.Projects >= 3)
      local empty_tags = select(2, out:gsub('"Tags":%[%]', ""))
      assert.equal(#page.Projects, empty_tags, out)
      assert.is_nil(out:find('"Tags":{}', 1, true))
      for _, l in ipairs(split_lines((ok_run { "list-projects", "--all" }))) do
        assert.matches('"Tags":[]', l, 1, true)
      end
      -- a non-empty one is still an array of objects
      ok_run { "call", "CreateProject", "ProjectName=tagged", 'Tag=[{"Key":"k","Value":"v"}]' }
      out = ok_run { "list-projects", "--prefix", "tagged" }
      assert.matches('"Tags":[{"TagKey":"k","TagValue":"v"}]', out, 1, true)
    end)

    it("prints projects and datasets as a table or lines, a page or --all", function()
      local projects = {}
      for p in srv.client {}:projects() do projects[#projects + 1] = p end
      local datasets = {}
      for d in srv.client {}:datasets { ProjectName = "immtest" } do datasets[#datasets + 1] = d end
      srv.reset()

      local out, err = ok_run { "list-projects", "--output", "table", "--max-results", "2" }
      local lines = split_lines(out)
      assert.matches("^PROJECT +DATASETS +UPDATED +DESCRIPTION$", lines[1])
      assert.equal(3, #lines)
      assert.matches("^" .. projects[1].ProjectName:gsub("%-", "%%-") .. " +" .. projects[1].DatasetCount .. " ",
        lines[2])
      assert.matches("more projects follow: continue with %-%-next%-token ", err)

      lines = split_lines((ok_run { "list-projects", "--output", "lines", "--all", "--max-results", "1" }))
      assert.equal(#projects, #lines)
      for i, l in ipairs(lines) do
        local f = split_tabs(l)
        assert.equal(projects[i].ProjectName, f[1])
        assert.equal(tostring(projects[i].DatasetCount), f[2])
      end

      lines = split_lines((ok_run { "list-datasets", "--project", "immtest", "--output", "table", "--all",
        "--max-results", "2" }))
      assert.matches("^DATASET +FILES +BINDINGS +UPDATED +DESCRIPTION$", lines[1])
      assert.equal(#datasets + 1, #lines)
      for i, d in ipairs(datasets) do assert.matches("^" .. d.DatasetName:gsub("%-", "%%-") .. " ", lines[i + 1]) end

      lines = split_lines((ok_run { "list-datasets", "--project", "immtest", "--output", "lines" }))
      assert.equal(#datasets, #lines)
      assert.same({ "immtest", datasets[1].DatasetName, "-", "-" }, { unpack(split_tabs(lines[1]), 1, 4) })
      srv.reset()
      refused({ "list-projects", "--output", "yaml" }, "json, table or lines")
    end)

    -- issue 20: on Lua 5.3/5.4 a count printed as "3.0"
    it("prints integers without .0 in json, table and lines output", function()
      local page = cjson.decode((ok_run { "list-projects" }))
      local counts = {}
      for i, p in ipairs(page.Projects) do counts[i] = string.format("%d", p.DatasetCount) end
      assert.is_true(#counts >= 3)
      local json_out = ok_run { "list-projects" }
      assert.is_nil(json_out:find('"DatasetCount":%d+%.'), json_out)
      local lines = split_lines((ok_run { "list-projects", "--output", "lines" }))
      for i, l in ipairs(lines) do assert.equal(counts[i], split_tabs(l)[2]) end
      lines = split_lines((ok_run { "list-projects", "--output", "table" }))
      for i = 1, #counts do
        local cells = {}
        for cell in lines[i + 1]:gmatch("%S+") do cells[#cells + 1] = cell end
        assert.equal(counts[i], cells[2], lines[i + 1])
      end
      -- the streaming table of --all too
      lines = split_lines((ok_run { "list-projects", "--output", "table", "--all", "--max-results", "2" }))
      for i = 1, #counts do assert.matches("^%S+ +" .. counts[i] .. " ", lines[i + 1]) end
    end)

    describe("--profile", function()
      local home
      before_each(function()
        home = srv.dir .. "/home"
        fixture.sh("mkdir -p " .. home .. "/.aliyun")
      end)
      after_each(function() fixture.sh("rm -rf " .. home) end)

      local function profile(fields)
        local f = assert(io.open(home .. "/.aliyun/config.json", "w"))
        f:write(cjson.encode { current = "dev", profiles = { fields } })
        f:close()
      end

      -- Nothing here may reach a real region: the region is either refused
      -- before any lookup, or the profile's credentials fail before sending.
      it("takes the region_id of the profile", function()
        profile { name = "dev", mode = "AK", access_key_id = "id", access_key_secret = "s", region_id = "Not_A_Region" }
        local _, err, status = run({ "list-bindings", "--project", "immtest", "--profile", "dev" },
          { IMM_ENDPOINT = false, ALIBABA_CLOUD_REGION_ID = "cn-hangzhou", HOME = home })
        assert.equal(1, status)
        assert.matches('region must match [a-z0-9-]+, got "Not_A_Region"', err, 1, true)

        profile { name = "dev", mode = "AK", access_key_id = "id", region_id = "cn-shanghai" }
        _, err, status = run({ "list-projects", "--profile", "dev" },
          { IMM_ENDPOINT = false, ALIBABA_CLOUD_REGION_ID = "cn-hangzhou", HOME = home, IMM_DEBUG = "1" })
        assert.equal(1, status)
        assert.matches("region cn-shanghai from profile dev in " .. home .. "/.aliyun/config.json", err, 1, true)
        assert.matches("access_key_secret", err, 1, true)
      end)

      it("lets --region and IMM_ENDPOINT win over the profile's region", function()
        profile { name = "dev", mode = "AK", access_key_id = fixture.KEY_ID, access_key_secret = fixture.SECRET,
          region_id = "Not_A_Region" }
        local out = ok_run({ "list-bindings", "--project", "immtest", "--max-results", "1", "--profile", "dev" },
          { ALIBABA_CLOUD_ACCESS_KEY_ID = false, ALIBABA_CLOUD_ACCESS_KEY_SECRET = false, HOME = home })
        assert.equal(1, #cjson.decode(out).Bindings)
        local _, err, status = run({ "list-bindings", "--project", "immtest", "--profile", "dev",
          "--region", "Also_Bad" }, { IMM_ENDPOINT = false, HOME = home })
        assert.equal(1, status)
        assert.matches('got "Also_Bad"', err, 1, true)
      end)
    end)
  end)
end)
