-- Layer 2: the C JSON encoder (imm.core.json_encode, imm.core.number_text).
-- Against lua-cjson where cjson is exact (strings, booleans, small
-- integers, nesting): both texts are decoded and compared. Against known
-- texts where cjson is not (it keeps 14 significant digits): the texts
-- JavaScript's String(x) writes, and, when node is installed, against node
-- itself.
local core = require "imm.core"
local cjson = require("cjson").new()

local mtype = math.type -- nil before Lua 5.3
local format, concat = string.format, table.concat
-- computed at run time: Lua 5.1 would merge a -0.0 literal with the constant 0
local NEG_ZERO = -tonumber("0.0")

local function same(a, b, path)
  path = path or "$"
  if type(a) ~= type(b) then return false, path .. ": " .. type(a) .. " vs " .. type(b) end
  if type(a) ~= "table" then
    if a ~= b then return false, format("%s: %s vs %s", path, tostring(a), tostring(b)) end
    return true
  end
  for k, v in pairs(a) do
    local ok, where = same(v, b[k], path .. "[" .. tostring(k) .. "]")
    if not ok then return false, where end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "[" .. tostring(k) .. "]: missing on the left" end
  end
  return true
end

-- A random value cjson writes exactly: strings (ASCII, escapes, UTF-8),
-- booleans, small integers, nested arrays and objects.
local pieces = { "a", "Z", "0", " ", "/", "\\", '"', "\n", "\r", "\t", "\b", "\f", "\0", "\1", "\31",
  "\127", "é", "€", "中文", "𝄞", "\239\191\191", "\244\143\191\191", "URI", "oss://b/k.jpg" }
local function rstring(rand)
  local t = {}
  for i = 1, rand(0, 8) do t[i] = pieces[rand(1, #pieces)] end
  return concat(t)
end
local function rvalue(rand, depth)
  local r = rand(1, depth > 3 and 4 or 6)
  if r == 1 then return rstring(rand) end
  if r == 2 then return rand(0, 1) == 1 end
  if r == 3 then return rand(-100000, 100000) end
  if r == 4 then return rand(-3, 3) end
  local t = {}
  if r == 5 then
    for i = 1, rand(1, 5) do t[i] = rvalue(rand, depth + 1) end
  else
    for _ = 1, rand(1, 5) do t[rstring(rand) .. "k"] = rvalue(rand, depth + 1) end
  end
  return t
end

-- A deterministic generator (math.random's sequence differs by runtime, and
-- the spec must not disturb the application's): a 31-bit LCG.
local function lcg(seed)
  local s = seed
  return function(lo, hi)
    s = (s * 1103515245 + 12345) % 2147483648
    return lo + s % (hi - lo + 1)
  end
end

describe("imm.core.json_encode", function()
  it("writes what lua-cjson writes, for values cjson writes exactly", function()
    local rand = lcg(15)
    for i = 1, 2000 do
      local v = rvalue(rand, 0)
      local ours = assert(core.json_encode(v))
      local theirs = cjson.encode(v)
      local ok, where = same(cjson.decode(theirs), cjson.decode(ours))
      assert(ok, format("value %d: %s\nimm:   %s\ncjson: %s", i, tostring(where), ours, theirs))
      -- cjson writes "/" as "\/" and DEL as "\u007f"; otherwise a string is
      -- escaped the same way
      if type(v) == "string" then
        assert.equal((theirs:gsub("\\/", "/"):gsub("\\u007f", "\127")), ours)
      end
    end
  end)

  it("escapes as JSON.stringify does", function()
    assert.equal('"a\\"b\\\\c/d"', core.json_encode('a"b\\c/d'))
    assert.equal('"\\b\\f\\n\\r\\t"', core.json_encode("\b\f\n\r\t"))
    assert.equal('"\\u0000\\u0001\\u001f\127 ~"', core.json_encode("\0\1\31\127 ~"))
    assert.equal('"é€𝄞\226\128\168"', core.json_encode("é€𝄞\226\128\168")) -- U+2028 as it is
    assert.equal('""', core.json_encode(""))
    assert.equal('{"\\n":"\\u0007"}', core.json_encode({ ["\n"] = "\7" }))
  end)

  it("writes object keys in byte order, at every depth", function()
    assert.equal('{"A":1,"B":2,"_":3,"a":{"a":true,"ab":false,"b":[]},"é":4}',
      core.json_encode({ a = { b = {}, ab = false, a = true }, ["é"] = 4, _ = 3, B = 2, A = 1 },
        { fields = { a = { fields = { b = { array = "any" } } } } }))
  end)

  it("writes scalars", function()
    assert.equal("true", core.json_encode(true))
    assert.equal("false", core.json_encode(false, "boolean"))
    assert.equal("0.7", core.json_encode(0.7, "number"))
    assert.equal("null", core.json_encode(cjson.null))
    assert.equal('[1,null,"x"]', core.json_encode({ 1, cjson.null, "x" }))
  end)

  it("infers arrays and objects, and writes an empty table as {}", function()
    assert.equal("[1,2,3]", core.json_encode({ 1, 2, 3 }))
    assert.equal('{"1":true}', core.json_encode({ ["1"] = true }))
    assert.equal("{}", core.json_encode({}))
    assert.equal("{}", core.json_encode({}, "any"))
    assert.equal("[{},{}]", core.json_encode({ {}, {} }))
    assert.equal("[[],[]]", core.json_encode({ {}, {} }, { array = { array = "any" } }))
  end)

  it("writes empty tables as the shape says, at any depth", function()
    local shape = { fields = {
      A = { array = "string" },
      B = { map = "number" },
      C = { fields = { D = { array = { array = "number" } }, E = { map = { array = "boolean" } } } },
      F = { array = { fields = { G = { array = "string" } } } },
    } }
    local v = { A = {}, B = {}, C = { D = { {}, { 1 } }, E = { x = {} } }, F = { { G = {} }, {} }, H = {} }
    assert.equal('{"A":[],"B":{},"C":{"D":[[],[1]],"E":{"x":[]}},"F":[{"G":[]},{}],"H":{}}',
      core.json_encode(v, shape))
    assert.equal("[]", core.json_encode({}, { array = "string" }))
    assert.equal("{}", core.json_encode({}, { map = "string" }))
    assert.equal("{}", core.json_encode({}, { fields = {} }))
  end)

  it("infers the keys a model does not list", function()
    assert.equal('{"Known":[],"Other":[1,2],"Rest":{}}',
      core.json_encode({ Known = {}, Other = { 1, 2 }, Rest = {} }, { fields = { Known = { array = "number" } } }))
  end)

  it("reads tables raw: no metamethod is called", function()
    local function boom() error("a metamethod was called") end
    local mt = { __index = boom, __newindex = boom, __len = boom, __pairs = boom, __ipairs = boom,
      __tojson = boom, __tostring = boom, __eq = boom, __lt = boom, __le = boom, __concat = boom }
    local t = setmetatable({ b = setmetatable({ 1, 2 }, mt), a = "x" }, mt)
    assert.equal('{"a":"x","b":[1,2]}', core.json_encode(t))
    assert.equal('{"a":"x","b":[1,2]}', core.json_encode(t, { fields = { b = { array = "number" } } }))
  end)

  describe("refuses, naming the path", function()
    local function fails(pattern, ...)
      local text, err = core.json_encode(...)
      assert.is_nil(text)
      assert.equal("string", type(err))
      assert.equal(pattern, err)
    end

    it("a value of the wrong type", function()
      local shape = { fields = { Targets = { array = { fields = { URI = "string" } } } } }
      fails("Targets[2].URI: expected a string, got boolean",
        { Targets = { { URI = "a" }, { URI = true } } }, shape)
      fails("Targets[2].URI: expected a string, got boolean",
        { { URI = "a" }, { URI = true } }, shape.fields.Targets, "Targets")
      fails("expected a number, got string", "1", "number")
      fails("Limit: expected a number, got string", "1", "number", "Limit")
      fails("expected a boolean, got number", 1, "boolean")
      fails("expected a string, got null", cjson.null, "string")
      fails("x: expected an array, got string", { x = "a" }, { fields = { x = { array = "string" } } })
      fails("x: expected an object, got boolean", { x = true }, { fields = { x = { map = "string" } } })
      fails("[1][\"a b\"]: expected a number, got table", { { ["a b"] = {} } }, { array = { map = "number" } })
      fails("cannot encode a function", print)
      fails("a.b: cannot encode a userdata", { a = { b = io.stdout } })
      fails("[2]: cannot encode a thread", { 1, coroutine.create(function() end) })
    end)

    it("NaN and infinities", function()
      fails("expected a finite number, got NaN", 0 / 0)
      fails("[1]: expected a finite number, got inf", { 1 / 0 })
      fails("x: expected a finite number, got -inf", { x = -1 / 0 }, { fields = { x = "number" } })
    end)

    it("a table that is not an array for an array shape", function()
      fails('expected an array (keys 1..n), got a table with key "x"', { 1, x = 2 }, { array = "number" })
      fails("expected an array (keys 1..n), got a table with key 3", { 1, [3] = 3 }, { array = "number" })
      fails("expected an array (keys 1..n), got a table with key 0", { [0] = 1 }, { array = "number" })
      fails("expected an array (keys 1..n), got a table with key 1.5", { [1.5] = 1 }, { array = "number" })
      -- keys in messages are quoted, cut at 64 bytes, and printable
      fails('expected an array (keys 1..n), got a table with key "a\\x0Ab\\x22\\xC3\\xA9"',
        { 1, ["a\nb\"é"] = 1 }, { array = "number" })
      fails('expected an array (keys 1..n), got a table with key "' .. string.rep("k", 64) .. '..."',
        { [string.rep("k", 100)] = 1 }, { array = "number" })
      fails('x["a b"][' .. "\"" .. string.rep("z", 64) .. '..."].y: expected a number, got boolean',
        { x = { ["a b"] = { [string.rep("z", 65)] = { y = true } } } },
        { fields = { x = { map = { map = { fields = { y = "number" } } } } } })
    end)

    it("integer keys for a map or a model", function()
      fails("expected an object (string keys), got a table with key 1", { 1 }, { map = "number" })
      fails("m: expected an object (string keys), got a table with key true",
        { m = { a = 1, [true] = 2 } }, { fields = { m = { fields = {} } } })
    end)

    it("a table that is neither an array nor an object", function()
      fails("cannot encode a table with both string keys and integer keys", { 1, x = 2 })
      fails("expected an array (keys 1..n) or an object (string keys), got a table with key 5", { [5] = 1 })
      fails("expected an array (keys 1..n) or an object (string keys), got a table with a table key",
        { [{}] = 1 })
    end)

    it("strings that are not valid UTF-8", function()
      local bad = { "\128", "\192\128", "\193\191", "\224\128\128", "\237\160\128", "\237\191\191",
        "\240\128\128\128", "\244\144\128\128", "\245\128\128\128", "\255", "\226\130", "ab\226\130c" }
      for _, s in ipairs(bad) do
        local text, err = core.json_encode({ k = { s } })
        assert.is_nil(text, s)
        assert.matches("^k%[1%]: invalid UTF%-8 in a string at byte %d+$", err)
      end
      fails("x: invalid UTF-8 in a string at byte 3", { x = "ab\255" })
      fails('["\\xFF"]: invalid UTF-8 in a key at byte 1', { ["\255"] = 1 })
      -- the edges of the valid ranges
      for _, s in ipairs({ "\194\128", "\223\191", "\224\160\128", "\237\159\191", "\238\128\128",
        "\239\191\191", "\240\144\128\128", "\244\143\191\191" }) do
        assert.equal('"' .. s .. '"', core.json_encode(s))
      end
    end)

    it("nesting deeper than 128 tables, and reference cycles", function()
      local function nest(n)
        local v = {}
        for _ = 2, n do v = { v } end
        return v
      end
      assert.equal(string.rep("[", 127) .. "{}" .. string.rep("]", 127), core.json_encode(nest(128)))
      local text, err = core.json_encode(nest(129))
      assert.is_nil(text)
      assert.matches("nested deeper than 128 tables", err, 1, true)
      local cycle = {}
      cycle.next = { back = cycle }
      text, err = core.json_encode(cycle)
      assert.is_nil(text)
      assert.matches("^next%.back%.next%.back.*%.%.%..*: nested deeper than 128 tables %(a reference cycle%?%)$",
        err)
    end)
  end)

  it("raises for a bad shape, a programming error", function()
    assert.has_error(function() core.json_encode(1, "integer") end,
      'imm.core.json_encode: bad shape ("integer") for the value')
    assert.has_error(function() core.json_encode({ a = { 1 } }, { fields = { a = { list = "x" } } }) end,
      "imm.core.json_encode: bad shape (table) for a")
    assert.has_error(function() core.json_encode({ 1 }, { array = 7 }) end)
    assert.has_error(function() core.json_encode({}, { fields = "x" }) end)
    assert.has_error(function() core.json_encode(1, nil, 5) end)
  end)
end)

-- 5.3+ keeps integers apart from floats; before, every number is a double
local has_int = mtype ~= nil
local maxint = has_int and math.maxinteger or nil
local minint = has_int and math.mininteger or nil

describe("imm.core.number_text", function()
  -- the texts JavaScript's String(x) writes for these doubles
  local known = {
    { 0.7, "0.7" }, { 0.1 + 0.2, "0.30000000000000004" }, { 1e21, "1e+21" }, { 1e-7, "1e-7" },
    { 123e-20, "1.23e-18" }, { 2 ^ 53, "9007199254740992" }, { 2 ^ 60, "1152921504606847000" },
    { 202405170000123.0, "202405170000123" }, { NEG_ZERO, "0" }, { 0.0, "0" },
    { tonumber("5e-324"), "5e-324" }, { 1.7976931348623157e308, "1.7976931348623157e+308" },
    { 1e20, "100000000000000000000" }, { 123456789012345680000, "123456789012345680000" },
    { 1e-6, "0.000001" }, { 1.5e-7, "1.5e-7" }, { 0.000001234, "0.000001234" }, { -1.5, "-1.5" },
    { 100, "100" }, { 1 / 3, "0.3333333333333333" }, { -2 ^ -1074, "-5e-324" },
    { 2 ^ -44, "5.684341886080802e-14" }, { 2 ^ -1022, "2.2250738585072014e-308" },
    { 4.35, "4.35" }, { 0.3, "0.3" }, { 1e300 * 10, "1e+301" }, { 25, "25" }, { 1.25e-5, "0.0000125" },
  }

  it("writes floats as JavaScript's Number#toString does", function()
    for _, c in ipairs(known) do
      assert.equal(c[2], core.number_text(c[1] + 0.0))
      assert.equal(c[2], core.json_encode(c[1] + 0.0))
      assert.equal("[" .. c[2] .. "]", core.json_encode({ c[1] + 0.0 }, { array = "number" }))
    end
  end)

  it("writes integers in full", function()
    assert.equal("202405170000123", core.number_text(202405170000123))
    assert.equal("-42", core.number_text(-42))
    if has_int then
      assert.equal("9223372036854775807", core.number_text(maxint))
      assert.equal("-9223372036854775808", core.number_text(minint))
      assert.equal('{"n":-9223372036854775808}', core.json_encode({ n = minint }))
      assert.equal("9007199254740993", core.number_text(9007199254740993))
    end
  end)

  it("refuses NaN and infinities, and raises for a non-number", function()
    local text, err = core.number_text(0 / 0)
    assert.is_nil(text)
    assert.equal("expected a finite number, got NaN", err)
    assert.equal("expected a finite number, got inf", select(2, core.number_text(1 / 0)))
    assert.equal("expected a finite number, got -inf", select(2, core.number_text(-1 / 0)))
    assert.has_error(function() core.number_text("1") end)
    assert.has_error(function() core.number_text(nil) end)
  end)

  -- significant digits of a number text: no sign, point, exponent or
  -- leading/trailing zeros
  local function sig(text)
    local m = text:gsub("[eE].*$", ""):gsub("[-.]", ""):gsub("^0+", ""):gsub("0+$", "")
    return #m
  end

  -- random doubles from random bit patterns where string.pack exists, else
  -- from a random mantissa and exponent
  local random_double
  if string.pack then
    local pack, unpack = string.pack, string.unpack
    random_double = function(rand)
      return (unpack("<d", pack("<I4I4", rand(0, 2147483647) * 2 + rand(0, 1),
        rand(0, 2147483647) * 2 + rand(0, 1))))
    end
  else
    random_double = function(rand)
      local m = 1 + (rand(0, 67108863) * 134217728 + rand(0, 134217727)) / 9007199254740992
      local x = m * 2 ^ rand(-1074, 1023)
      return rand(0, 1) == 1 and -x or x
    end
  end

  it("writes the shortest text that reads back as the same double", function()
    local rand = lcg(53)
    local n = 0
    while n < 20000 do
      local x = random_double(rand)
      if x == x and x ~= 1 / 0 and x ~= -1 / 0 then
        n = n + 1
        local text = assert(core.number_text(x))
        -- + 0.0: 5.3+ reads "-3064403653184338400" as an integer, which
        -- rounds to the double the text stands for only when made a float
        assert(tonumber(text) + 0.0 == x, format("%s reads back as %.17g, not %.17g", text, tonumber(text), x))
        -- no longer than the shortest %.{p}g that reads back (shorter only
        -- where the gap below a power of two is narrower)
        local p = 1
        while tonumber(format("%." .. p .. "g", x)) ~= x do p = p + 1 end
        assert(sig(text) <= sig(format("%.17g", x)) and sig(text) <= p,
          format("%s has more digits than %." .. p .. "g", text, x))
        assert.matches("^%-?%d[%d.e+-]*$", text)
      end
    end
  end)

  local function have(cmd)
    local f = io.popen("command -v " .. cmd .. " 2>/dev/null")
    local out = f:read("*a")
    f:close()
    return out ~= ""
  end

  it("matches node's String(x) (skipped without node)", function()
    if not have("node") then
      pending("node is not installed")
      return
    end
    local rand = lcg(7)
    local xs = {}
    for _, c in ipairs(known) do xs[#xs + 1] = c[1] end
    for e = -1074, 1023, 7 do xs[#xs + 1] = 2 ^ e end
    while #xs < 3000 do
      local x = random_double(rand)
      if x == x and x ~= 1 / 0 and x ~= -1 / 0 then xs[#xs + 1] = x end
    end
    for _ = 1, 500 do xs[#xs + 1] = rand(1, 999999) / 10 ^ rand(-25, 25) end
    local input = os.tmpname()
    local f = assert(io.open(input, "w"))
    for i, x in ipairs(xs) do xs[i] = x + 0.0; f:write(format("%.17g\n", x)) end
    f:close()
    local p = assert(io.popen("node -e \"require('fs').readFileSync(process.argv[1], 'utf8').trim()"
      .. ".split('\\n').forEach(l => console.log(String(Number(l))))\" " .. input))
    local i = 0
    for line in p:lines() do
      i = i + 1
      assert.equal(line, core.number_text(xs[i]))
    end
    p:close()
    os.remove(input)
    assert.equal(#xs, i)
  end)

  it("does not depend on LC_NUMERIC (a de_DE locale, built with localedef)", function()
    local locpath = require("helpers.fixture").de_locale()
    if not locpath then
      pending("localedef cannot build de_DE.UTF-8 here")
      return
    end
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write([[
      assert(os.setlocale("de_DE.UTF-8", "numeric"), "setlocale")
      -- LuaJIT formats numbers itself; the other runtimes show the comma
      assert(jit or string.format("%.1f", 0.5) == "0,5", "the locale took no effect")
      local core = require "imm.core"
      io.write(core.number_text(0.7), " ", core.number_text(0.1 + 0.2), " ", core.number_text(1.5e-7), " ",
        core.number_text(2 ^ -44), " ", core.json_encode({ 1234.5678, 1e21 }))
    ]])
    f:close()
    local lua = jit and "luajit" or "lua" .. _VERSION:match("%d+%.%d+")
    -- under `make asan` the child inherits the sanitizers; glibc's setlocale
    -- keeps a buffer for good, which LeakSanitizer would report
    local p = io.popen(format("LOCPATH=%s LUA_CPATH=%q ASAN_OPTIONS=detect_leaks=0 %s %s 2>&1",
      locpath, package.cpath, lua, script))
    local out = p:read("*a")
    p:close()
    os.remove(script)
    os.execute("rm -rf " .. locpath)
    assert.equal("0.7 0.30000000000000004 1.5e-7 5.684341886080802e-14 [1234.5678,1e+21]", out)
  end)
end)

-- Issue 21, item 9: the encoder allocates (key strings, key arrays), so the
-- collector runs in the middle of a walk. Keys whose entries go away then
-- (a weak value collected, a finalizer that edits the table) must not be
-- read after they are freed (ASan: heap-use-after-free in
-- imm_json_add_string), and a key that is gone is left out, as Lua no longer
-- sees it; it is not "cannot encode a nil".
describe("imm.core.json_encode while the collector runs", function()
  -- The walks run in a new interpreter: in a small heap the collector
  -- finishes cycles in the middle of a walk; in the specs' heap of
  -- megabytes, one walk allocates too little for that. The child fails
  -- (an error, or under `make asan` the sanitizer's report) or prints in
  -- how many of its 20 walks entries went during the call.
  local CHILD = [[
    local core = require "imm.core"
    local which = ...
    local LONG = string.rep("x", 60)
    local N = 2000 -- a walk long enough for several cycles of the collector
    local newproxy = newproxy
    if _VERSION == "Lua 5.4" then collectgarbage("incremental") end
    collectgarbage("setpause", 0)
    collectgarbage("setstepmul", 1000)
    -- The text is one object whose keys were all in `keys`, each once, in
    -- byte order, each with its own value; returns how many.
    local function check_object(text, err, keys)
      assert(type(text) == "string", err)
      local last, n = "", 0
      for k in text:gmatch('"(key%d+x*)":') do
        assert(keys[k] ~= nil, "a key that was never in the table: " .. k)
        assert(k > last, "keys out of order or repeated: " .. k)
        last = k
      end
      for k, v in text:gmatch('"(key%d+x*)":{"v":(%d+)}') do
        assert(keys[k] == tonumber(v), "a wrong value for " .. k)
        n = n + 1
      end
      return n
    end
    local function finalized(f)
      if _VERSION == "Lua 5.1" then -- tables get no __gc: a proxy does
        local p = newproxy(true)
        getmetatable(p).__gc = f
        return p
      end
      return setmetatable({}, { __gc = f })
    end
    local function count(t)
      local n = 0
      for _ in pairs(t) do n = n + 1 end
      return n
    end
    local went = 0
    for _ = 1, 20 do
      local t, keys, hold = which == "weak" and setmetatable({}, { __mode = "v" }) or {}, {}, {}
      for i = 1, N do
        local k = ("key%04d"):format(i) .. LONG
        keys[k] = i
        hold[i] = { v = i } -- an object: encoding it allocates, so the collector runs
        t[k] = hold[i]
      end
      -- A chain of garbage: each finalizer makes the next one, one per
      -- cycle, until the walk has begun (and for "weak" two more cycles
      -- have passed, so the keys have been gathered); that one empties the
      -- table, or drops the only strong reference to the weak table's values.
      local st = { walking = false, live = true, fired = false, hold = hold, skip = which == "weak" and 2 or 0 }
      hold = nil -- luacheck: ignore
      local function arm()
        finalized(function()
          if not st.live then return end
          if st.walking and st.skip > 0 then
            st.skip = st.skip - 1
            arm()
          elseif st.walking then
            if which == "weak" then
              st.hold = nil
            else
              for k in pairs(keys) do t[k] = nil end
            end
            st.live, st.fired = false, true
          else
            arm()
          end
        end)
      end
      arm()
      st.walking = true -- nothing allocates from here to the call
      local text, err = core.json_encode(t)
      local after = count(t) -- nor from the call to here
      st.live = false
      local n = check_object(text, err, keys)
      -- weak: entries went in the middle of the walk (some written, not
      -- all); gc: the finalizer ran during the call
      if st.fired and (which == "gc" or (n < N and after < N)) then went = went + 1 end
    end
    io.write("went ", went)
  ]]

  local function run_child(which)
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(CHILD)
    f:close()
    local lua = jit and "luajit" or "lua" .. _VERSION:match("%d+%.%d+")
    local p = io.popen(format("LUA_CPATH=%q %s %s %s 2>&1", package.cpath, lua, script, which))
    local out = p:read("*a")
    p:close()
    os.remove(script)
    local went = tonumber(out:match("^went (%d+)$"))
    assert(went, out)
    return went
  end

  it("leaves out the entries of a weak-valued table that are collected meanwhile", function()
    -- the check can fail: entries did go in the middle of a walk
    assert.is_true(run_child("weak") > 0, "no entry was collected during a walk")
  end)

  -- (this one did not fail on the old code: there the finalizer ran before
  -- the keys were gathered; it guards the walk against a table emptied
  -- during the call)
  it("survives a finalizer that empties the table during the call", function()
    assert.is_true(run_child("gc") > 0, "no finalizer ran during a call")
  end)
end)

describe("imm.core.json_encode names a key that is not finite", function()
  it("as inf or -inf, not nan (issue 21)", function()
    local text, err = core.json_encode({ [math.huge] = 1 })
    assert.is_nil(text)
    assert.equal("expected an array (keys 1..n) or an object (string keys), got a table with key inf", err)
    text, err = core.json_encode({ [-math.huge] = 1 }, { array = "number" })
    assert.is_nil(text)
    assert.equal("expected an array (keys 1..n), got a table with key -inf", err)
  end)
end)
