-- Layer 2: the C JSON decoder (imm.core.json_decode, through imm.decode's
-- "imm" decoder) against the reference, imm.decode's lua-cjson decoder.
-- Both must accept and refuse the same documents and build the same tables,
-- number subtypes (math.type) and null handling included, except where imm
-- differs from lua-cjson 2.1.0 on purpose (docs/api.md, "Numbers"):
--   - on Lua 5.3/5.4 an integer token (no fraction, no exponent) that fits
--     lua_Integer is an integer, exactly; cjson gives the nearest float.
--     "-0" stays cjson's float -0.0;
--   - with big_integers = "string", an integer token the runtime cannot hold
--     exactly (beyond int64 on 5.3/5.4, beyond 2^53 in magnitude on 5.1 and
--     LuaJIT) is its decimal text; cjson has no such option.
-- `reference` applies exactly these two differences to cjson's result.
local decode = require "imm.decode"
local core = require "imm.core"
local cjson = require "cjson"

local null = decode.null
local mtype = math.type -- nil before Lua 5.3
local char, byte, concat, format = string.char, string.byte, table.concat, string.format
-- computed at run time: Lua 5.1 would merge a -0.0 literal with the constant 0
local NEG_ZERO = -tonumber("0.0")

-- Returns true, or false and where the two values first differ.
local function same(a, b, path)
  path = path or "$"
  if type(a) ~= type(b) then
    return false, format("%s: %s vs %s", path, type(a), type(b))
  end
  if type(a) == "number" then
    if mtype and mtype(a) ~= mtype(b) then
      return false, format("%s: %s vs %s", path, mtype(a), mtype(b))
    end
    if a ~= b and not (a ~= a and b ~= b) then
      return false, format("%s: %.17g vs %.17g", path, a, b)
    end
    if a == 0 and 1 / a ~= 1 / b then return false, path .. ": 0 vs -0" end
    return true
  end
  if type(a) ~= "table" then
    if a ~= b then return false, format("%s: %q vs %q", path, tostring(a), tostring(b)) end
    return true
  end
  if getmetatable(a) ~= getmetatable(b) then return false, path .. ": metatables" end
  for k, v in pairs(a) do
    local ok, where = same(v, b[k], path .. "[" .. tostring(k) .. "]")
    if not ok then return false, where end
  end
  for k in pairs(b) do
    if a[k] == nil then return false, path .. "[" .. tostring(k) .. "]: missing on the left" end
  end
  return true
end

-- Integer tokens, found by the Lua patterns below and converted by the Lua
-- lexer's tonumber, never by the C under test. MARK cannot start a string
-- of the generated documents (their code points are in CPS).
local MARK = "#imm-int#"
local find, sub = string.find, string.sub

-- `text`, accepted by cjson, with each integer token but "-0" turned into
-- the string MARK .. token: outside strings, a run of number characters is
-- one number.
local function tag_integers(text)
  local out, pos = {}, 1
  while true do
    local s = find(text, '["%-%d]', pos)
    if not s then break end
    local e
    if sub(text, s, s) == '"' then
      e = s + 1
      while true do
        local q = find(text, '["\\]', e)
        if sub(text, q, q) == '"' then e = q break end
        e = q + 2
      end
      out[#out + 1] = sub(text, pos, e)
    else
      e = select(2, find(text, "^[-+.eE%d]+", s))
      local tok = sub(text, s, e)
      out[#out + 1] = sub(text, pos, s - 1)
      out[#out + 1] = (find(tok, "^%-?%d+$") and tok ~= "-0") and '"' .. MARK .. tok .. '"' or tok
    end
    pos = e + 1
  end
  out[#out + 1] = sub(text, pos)
  return concat(out)
end

-- Whether the integer text `tok` is beyond 2^53 in magnitude, by its digits.
local function beyond_2_53(tok)
  local digits = tok:gsub("^%-", "")
  return #digits > 16 or (#digits == 16 and digits > "9007199254740992")
end

-- What imm must make of the integer token `tok`.
local function integer_value(tok, big)
  local v = tonumber(tok)  -- an integer on 5.3/5.4 if it fits, else the nearest float
  if mtype then
    if mtype(v) == "float" and big == "string" then return tok end
    return v
  end
  if big == "string" and beyond_2_53(tok) then return tok end
  return v
end

local function untag(v, big)
  if type(v) == "string" and sub(v, 1, #MARK) == MARK then return integer_value(sub(v, #MARK + 1), big) end
  if type(v) == "table" then
    for k, x in pairs(v) do v[k] = untag(x, big) end
  end
  return v
end

-- The reference: cjson's result, with the integers as imm makes them.
local function reference(text, big)
  local v, err = decode.cjson(text)
  if v == nil and err then return nil, err end
  local tagged = tag_integers(text)
  local t, terr = decode.cjson(tagged)
  assert(terr == nil, tagged)
  return untag(t, big)
end

-- Decodes `text` with imm (big_integers = big) and the reference; returns
-- nil or a description of how they disagree.
local function differs(text, big)
  local a, aerr = reference(text, big)
  local b, berr
  if big then
    b, berr = core.json_decode(text, null, nil, big)
  else
    b, berr = decode.imm(text)
  end
  if (aerr == nil) ~= (berr == nil) then
    return format("cjson: %s, imm: %s", tostring(aerr or "ok"), tostring(berr or "ok"))
  end
  if aerr then
    if a ~= nil or b ~= nil then return "a failure returned a value" end
    if type(berr) ~= "string" or not berr:find("at character %d+$") then
      return "imm's message has no position: " .. tostring(berr)
    end
    return nil
  end
  local ok, where = same(a, b)
  if not ok then return where end
  return nil
end

local function assert_agree(text, what)
  local d = differs(text) or differs(text, "string")
  if d then
    error(format("%s: %s\n  document: %q", what or "document", d, #text > 300 and text:sub(1, 300) .. "..." or text), 2)
  end
end

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

-- A deterministic generator (Park-Miller), the same on every Lua version.
local seed
local function rnd(n)
  seed = (seed * 16807) % 2147483647
  return seed % n + 1
end
local function pick(t) return t[rnd(#t)] end

describe("imm.core.json_decode", function()
  it("has a deep compare that can fail", function()
    assert.is_true((same({ a = { 1, 2, { b = "x" } } }, { a = { 1, 2, { b = "x" } } })))
    assert.is_false((same({ a = 1 }, { a = 2 })))
    assert.is_false((same({ a = 1 }, { a = 1, b = 2 })))
    assert.is_false((same({ a = 1, b = 2 }, { a = 1 })))
    assert.is_false((same({ { { "x" } } }, { { { "y" } } })))
    assert.is_false((same({ 1 }, { "1" })))
    assert.is_false((same({ 0 }, { NEG_ZERO })))
    assert.is_false((same({ null }, { false })))
    assert.is_false((same({ null }, {})))
    if mtype then
      assert.is_false((same({ math.tointeger(1) }, { 1.0 })))
    end
    -- and so does the differential check: a decoder that drops a key
    local real = decode.imm
    decode.imm = function(s)
      local v = real(s)
      if type(v) == "table" then v.ProjectName = nil end
      return v
    end
    local d = differs('{"ProjectName":"p"}')
    decode.imm = real
    assert.is_string(d)
  end)

  it("is a decoder that imm.decode and the client know by name", function()
    assert.equal(decode.imm, decode.get("imm"))
    assert.equal(decode.cjson, decode.get("cjson"))
    local client = require("imm.client").new {
      region = "cn-hangzhou", access_key_id = "id", access_key_secret = "secret", decoder = "imm",
    }
    assert.equal(decode.imm, client.decode)
  end)

  it("decodes the sample bindings and a canned ListBindings page like cjson", function()
    local sample = read("tools/sample_bindings.json")
    assert_agree(sample, "tools/sample_bindings.json")
    -- a page of 100 bindings, built the way bench/pages.py builds them
    local items = {}
    local states = { "Ready", "Running", "Stopped", "Retrying", "Failed", "Deleted" }
    for i = 1, 100 do
      items[i] = format('{"ProjectName":"immtest","DatasetName":"dataset%03d","URI":"oss://bucket%02d/%d/",' ..
        '"State":"%s","Phase":"%s","Reason":%s,"CreateTime":"2024-08-01T01:49:33.%09d+08:00",' ..
        '"UpdateTime":"2024-10-27T23:29:16.%09d+08:00"}', i % 5, i % 3, i, states[i % 6 + 1],
        i % 2 == 0 and "FullScanning" or "IncrementalScanning",
        i % 7 == 0 and "null" or (i % 3 == 0 and '"The OSS bucket does not exist \\u4e2d\\"x\\""' or '""'),
        i * 7919, i * 104729)
    end
    local page = '{"RequestId":"66B45F5B-0682-E0BF-36C2-B04557AA9C27","NextToken":"NXT2e5","Bindings":[' ..
      concat(items, ",") .. "]}"
    assert_agree(page, "page")
    local v = decode.imm(page)
    assert.equal(100, #v.Bindings)
    assert.is_nil(v.Bindings[7].Reason)
    assert.equal('The OSS bucket does not exist \228\184\173"x"', v.Bindings[3].Reason)
  end)

local EDGE_CASES = {
    -- structure and whitespace
    "{}", "[]", "[[]]", "[{}]", '{"a":{}}', '{"a":[]}', " \t\r\n{ \t\r\n\"a\" \t\r\n: \t\r\n[ 1 , 2 ] \t\r\n} \t\r\n",
    '{"a":{"b":{"c":[1,[2,[3,{"d":4}]]]}}}', '[1,"a",true,false,null,{},[]]',
    -- top-level scalars
    "1", '"x"', "true", "false", "null", " null ",
    -- numbers
    "0", "-0", "-0.0", "0.0", "1", "-1", "123456789", "123456789012345", "1234567890123456",
    "9007199254740993", "18446744073709551616", "123456789012345678901234567890", "0.1", "1.5e3", "1E+2",
    "1e-2", "1.0E-2", "-1.5e+300", "1e400", "-1e400", "1e-400", "4.9e-324", "2.2250738585072014e-308",
    "1.7976931348623157e308", "1.7976931348623157e309", "0.000001e-310", "[1e5,-2E-5,0e0,0E+0]",
    "1.", "2.", "-.5", "0.e1", "1.e5",
    "01", "-01", "00", "-", "+1", ".5", "1e", "1e+", "0x10", "-0x1", "0x", "1ee5", "1.2.3", "1e5.5",
    "Infinity", "-Infinity", "NaN", "nan", "inf", "-inf", "[Infinity]", "[NaN]", "123abc", "- 1", "--1",
    -- strings and escapes
    '""', '"abc"', '"\\"\\\\\\/\\b\\f\\n\\r\\t"', '"\\u0041\\u00e9\\u4e2d\\uFFFF"', '"\\ud83d\\ude00"',
    '"\\uD83D\\uDE00x"', '"\\u0000"', '"a\\u0000b"', '"\255\254"', '"\1\31"', '"a\nb"', '"a\127"',
    '"\\ud800"', '"\\udc00"', '"\\ud800\\u0041"', '"\\ud800x"', '"\\ud800\\"', '"\\ud800\\ud800"',
    '"\\x"', "\"\\'\"", '"\\U0041"', '"\\u12"', '"\\u12G4"', '"\\uZZZZ"', '"abc', '"\\', '"\\"',
    '"abcdefghijklmnopqrstuvwxyz"', '"abcdefg\\"hijklmnop"', '"abcdefghijklmno\\\\"',
    -- literals
    "tru", "truex", "nul", "nullx", "fals", "True", "NULL",
    -- syntax errors and trailing garbage
    "", " ", "{} x", "{}  ", "[] []", "1 2", "[1,]", "[,1]", "[1 2]", "{,}", '{"a":1,}', '{"a" 1}',
    "{1:2}", "{a:1}", '{"a":}', '{"a"}', "[", "]", "{", "}", "[1", '{"a":1', '{"a"', "[1}", '{"a":1]',
    "\0", "[1]\0", "[1]\0x", "\0[1]", '"a\0b"', "\12" .. "1", "1\12", "\11" .. "1",
    "\239\187\191{}", "/**/1", "[1]//",
    -- nulls and duplicate keys
    '{"a":null}', '{"a":null,"b":1}', '[null]', '[null,null,1,null]', '{"a":[null,{"b":null}]}',
    '{"a":1,"a":2}', '{"a":1,"a":null}', '{"a":null,"a":1}', '{"a":{"x":1},"a":{"y":2}}',
    '{"":1}', '{"\\u0061":1,"a":2}',
  }
  it("agrees with cjson on edge cases, valid and invalid", function()
    for _, c in ipairs(EDGE_CASES) do assert_agree(c) end
  end)

  -- issue 20: numbers from responses, on every runtime
  it("decodes integers exactly: Lua integers on 5.3/5.4, big ones as text on request", function()
    local function dec(text, big) return core.json_decode(text, null, nil, big) end
    -- a number of the expected subtype and value (-0.0 apart from 0)
    local function is(expected, got, what)
      assert.equal(type(expected), type(got), what)
      if mtype and type(expected) == "number" then assert.equal(mtype(expected), mtype(got), what) end
      assert.equal(expected, got, what)
      if expected == 0 then assert.equal(1 / expected, 1 / got, what) end
    end
    local FLOAT = function(x) return x * 1.0 end  -- keeps -0.0, which x + 0.0 would not
    local T63 = 2 ^ 63  -- a float on every runtime
    local huge = "123456789012345678901234567890"
    local cases
    if mtype then
      local int = math.tointeger
      cases = {
        -- text, without the option, with big_integers = "string"
        { "5", int(5), int(5) },
        { "-5", int(-5), int(-5) },
        { "0", int(0), int(0) },
        { "9007199254740993", int(9007199254740992) + 1, int(9007199254740992) + 1 },
        { "9223372036854775807", math.maxinteger, math.maxinteger },
        { "-9223372036854775808", math.mininteger, math.mininteger },
        { "9223372036854775808", T63, "9223372036854775808" },
        { "-9223372036854775809", -T63, "-9223372036854775809" },
        { "18446744073709551616", 2 ^ 64, "18446744073709551616" },
        { huge, 1.2345678901234568e29, huge },
      }
    else
      cases = {
        { "5", 5, 5 },
        { "-5", -5, -5 },
        { "0", 0, 0 },
        { "9007199254740992", 2 ^ 53, 2 ^ 53 },
        { "-9007199254740992", -2 ^ 53, -2 ^ 53 },
        { "9007199254740993", 2 ^ 53, "9007199254740993" },
        { "-9007199254740993", -2 ^ 53, "-9007199254740993" },
        { "9223372036854775807", T63, "9223372036854775807" },
        { "-9223372036854775808", -T63, "-9223372036854775808" },
        { "9223372036854775808", T63, "9223372036854775808" },
        { huge, 1.2345678901234568e29, huge },
      }
    end
    -- floats on every runtime, with the option or without
    for _, c in ipairs {
      { "1.0", 1 }, { "1e2", 100 }, { "1E+2", 100 }, { "-1.5", -1.5 }, { "1.", 1 }, { "9007199254740993.0", 2 ^ 53 },
      { "9223372036854775807e0", T63 }, { "-0", NEG_ZERO }, { "-0.0", NEG_ZERO },
      { "1" .. ("0"):rep(400) .. ".5", math.huge },
    } do
      cases[#cases + 1] = { c[1], FLOAT(c[2]), FLOAT(c[2]) }
    end
    local digits = "1" .. ("0"):rep(400)
    cases[#cases + 1] = { digits, math.huge, digits }
    cases[#cases + 1] = { "-" .. digits, -math.huge, "-" .. digits }
    for _, c in ipairs(cases) do
      local text = c[1]
      is(c[2], dec(text), text)
      is(c[2], dec(text, "float"), text .. " (float)")
      is(c[3], dec(text, "string"), text .. " (string)")
      -- the same inside arrays and objects, and through keep_arrays' empty-array marks
      local v = assert(dec('{"a":[' .. text .. ',[]],"b":' .. text .. "}", "string"))
      is(c[3], v.a[1], text .. " in an array")
      is(c[3], v.b, text .. " in an object")
      v = assert(core.json_decode('{"a":[' .. text .. ',[]]}', null, decode.empty_array, "string"))
      is(c[3], v.a[1], text .. " with array marks")
      assert.equal(decode.empty_array, getmetatable(v.a[2]))
    end
    if mtype then
      -- every integer of int64 comes back: spot checks over the range
      local p53, p62 = math.tointeger(2 ^ 53), math.tointeger(2 ^ 62)
      for _, x in ipairs { math.maxinteger - 1, math.mininteger + 1, p53, p53 + 1, -p53 - 1, -p62 - 7, p62 * 2 - 1,
        p62 + 12345 } do
        is(x, dec(string.format("%d", x)), string.format("%d", x))
      end
    end
    -- anything else for the option is a programming error
    assert.has_error(function() core.json_decode("1", null, nil, "strings") end)
    assert.has_error(function() core.json_decode("1", null, nil, true) end)
  end)

  it("takes big_integers on the client, for the C decoders only", function()
    local imm = require "imm"
    local base = { region = "cn-hangzhou", access_key_id = "id", access_key_secret = "secret" }
    local function new(extra)
      local o = {}
      for k, v in pairs(base) do o[k] = v end
      for k, v in pairs(extra) do o[k] = v end
      return imm.new(o)
    end
    -- beyond what this runtime holds exactly
    local big = mtype and "9223372036854775808" or "9007199254740993"
    local doc = '{"TotalHits":' .. big .. ',"Small":5,"Files":[{"Size":' .. big .. ',"Tags":[]}]}'
    local c = assert(new { big_integers = "string" })
    local v = assert(c.decode(doc))
    assert.equal(big, v.TotalHits)
    assert.equal(big, v.Files[1].Size)
    assert.equal(5, v.Small)
    if mtype then assert.equal("integer", mtype(v.Small)) end
    assert.is_nil(getmetatable(v.Files[1].Tags))
    -- with keep_arrays (the imm command's decoder): both at once
    c = assert(new { big_integers = "string", decoder = decode.keep_arrays })
    v = assert(c.decode(doc))
    assert.equal(big, v.Files[1].Size)
    assert.equal(decode.empty_array, getmetatable(v.Files[1].Tags))
    c = assert(new { big_integers = "string", decoder = "imm" })
    assert.equal(big, assert(c.decode(doc)).TotalHits)
    -- the default, and "float", give the nearest float
    for _, o in ipairs { {}, { big_integers = "float" }, { big_integers = "float", decoder = "cjson" } } do
      v = assert(assert(new(o)).decode(doc))
      assert.equal("number", type(v.TotalHits))
      assert.equal(tonumber(big), v.TotalHits)
    end
    -- refused before anything is sent: lua-cjson and a decoder function
    -- cannot give big integers as text
    for _, o in ipairs {
      { big_integers = "strings" }, { big_integers = true }, { big_integers = 1 },
      { big_integers = "string", decoder = "cjson" },
      { big_integers = "string", decoder = function(body) return decode.imm(body) end },
    } do
      local cl, err = new(o)
      assert.is_nil(cl)
      assert.equal("InvalidParameter", err.code)
      assert.matches("big_integers", err.message)
    end
  end)

  -- issue 21, item 12: the decoder reads '.' whatever LC_NUMERIC says,
  -- without localeconv(), which is not thread-safe
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
      assert(jit or string.format("%.1f", 0.5) == "0,5", "the locale took no effect")
      local core = require "imm.core"
      local v = assert(core.json_decode("[0.5,1.5e-7,-2.5E1,12345678901234567.5,1.,-.25,5,9007199254740993]",
        core.null, nil, "string"))
      io.write(core.json_encode(v), " ", tostring(core.json_decode("1,5", core.null)))
    ]])
    f:close()
    local lua = jit and "luajit" or "lua" .. _VERSION:match("%d+%.%d+")
    local p = io.popen(format("LOCPATH=%s LUA_CPATH=%q ASAN_OPTIONS=detect_leaks=0 %s %s 2>&1",
      locpath, package.cpath, lua, script))
    local out = p:read("*a")
    p:close()
    os.remove(script)
    os.execute("rm -rf " .. locpath)
    local big = mtype and "9007199254740993" or '"9007199254740993"'
    assert.equal("[0.5,1.5e-7,-25,12345678901234568,1,-0.25,5," .. big .. "] nil", out)
  end)

  it("takes the null sentinel from its caller", function()
    local v = core.json_decode("[null,1,null]", "NULL")
    assert.same({ "NULL", 1, "NULL" }, v)
    assert.equal(decode.null, decode.imm("null"))
    assert.same({}, decode.imm('{"a":1,"a":null}'))
  end)

  it("stops at the nesting limit of 1000, never overflows the C stack", function()
    for _, n in ipairs { 1, 2, 999, 1000, 1001, 1500 } do
      assert_agree(("["):rep(n) .. ("]"):rep(n), "arrays " .. n)
      assert_agree(('{"a":'):rep(n) .. "null" .. ("}"):rep(n), "objects " .. n)
      local h = math.floor(n / 2)
      assert_agree(('[{"a":'):rep(h) .. "1" .. ("}]"):rep(h), "mixed " .. n)
    end
    assert_agree(("["):rep(2000), "unclosed")
    local v, err = decode.imm(("["):rep(1000000))
    assert.is_nil(v)
    assert.matches("nested", err)
  end)

  it("reports the position of an error and never raises for bad input", function()
    local v, err = decode.imm('{"a":1,"b":tru}')
    assert.is_nil(v)
    assert.matches("at character 12$", err)
    v, err = decode.imm("[1,2,3] x")
    assert.is_nil(v)
    assert.matches("at character 9$", err)
    -- misuse raises at the caller
    assert.has_error(function() core.json_decode({}, null) end)
  end)

  it("unescapes long strings and many escaped strings in one document", function()
    local parts = {}
    for i = 1, 300 do
      parts[i] = '"' .. ("x\\n\\u00e9"):rep(i) .. ("y"):rep(i % 17) .. '"'
    end
    assert_agree("[" .. concat(parts, ",") .. "]")
    assert_agree('"' .. ("\\u4e2d"):rep(100000) .. '"')
    assert_agree('{"' .. ("k"):rep(100) .. '":1,"' .. ("k"):rep(100) .. '":2}')
    -- the byte scanner reads 8 at a time: a quote or backslash at every offset
    for i = 0, 24 do
      assert_agree('"' .. ("a"):rep(i) .. '"')
      assert_agree('"' .. ("a"):rep(i) .. '\\"b"')
      assert_agree('["' .. ("a"):rep(i) .. '"]' .. ("a"):rep(i % 9))
      assert_agree('"' .. ("a"):rep(i) .. "\0" .. '"')
    end
  end)

  -- random documents ------------------------------------------------------

  -- code points to draw from: ASCII, specials, controls, 2-, 3- and 4-byte
  local CPS = { 65, 97, 122, 48, 32, 34, 92, 47, 8, 12, 10, 13, 9, 1, 31, 127, 233, 2047, 2048, 20013,
    0xFFFF, 0x10000, 0x1F600, 0x10FFFF, 0xE000, 0 }

  local function utf8char(cp)
    if cp < 0x80 then return char(cp) end
    if cp < 0x800 then return char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64) end
    if cp < 0x10000 then
      return char(0xE0 + math.floor(cp / 4096), 0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
    end
    return char(0xF0 + math.floor(cp / 262144), 0x80 + math.floor(cp / 4096) % 64,
      0x80 + math.floor(cp / 64) % 64, 0x80 + cp % 64)
  end

  local KEYS = { "ProjectName", "DatasetName", "URI", "State", "a", "b", "", "Reason", "CreateTime" }

  -- a random string as a list of code points (or raw bytes, negative)
  local function random_cps()
    local t = {}
    for i = 1, rnd(12) - 1 do
      if rnd(10) == 1 then t[i] = -(127 + rnd(128)) else t[i] = pick(CPS) end
    end
    return t
  end

  local function plain(cps)
    local o = {}
    for i, cp in ipairs(cps) do o[i] = cp < 0 and char(-cp) or utf8char(cp) end
    return concat(o)
  end

  local function random_number()
    local k = rnd(8)
    if k == 1 then return rnd(2000001) - 1000001 end
    if k == 2 then return (rnd(1000) - 500) / rnd(97) end
    if k == 3 then return (rnd(9) - 5) * 10 ^ (rnd(600) - 300) end
    if k == 4 then return NEG_ZERO end
    if k == 5 then return 2 ^ 53 + rnd(100) end
    if k == 6 then return rnd(10) * 1.0 end
    if k == 7 then return 1 / rnd(3) end
    return 0
  end

  -- integer text near the edges of what each runtime holds exactly
  local INT_TEXTS = { "9007199254740991", "9007199254740992", "9007199254740993", "-9007199254740993",
    "9223372036854775807", "-9223372036854775808", "9223372036854775808", "-9223372036854775809",
    "18446744073709551615", "18446744073709551616", "99999999999999999999999" }
  local function random_int_text()
    if rnd(2) == 1 then return pick(INT_TEXTS) end
    local t = { rnd(2) == 1 and "-" or "", tostring(rnd(9)) }
    for i = 1, rnd(25) do t[i + 2] = tostring(rnd(10) - 1) end
    return concat(t)
  end

  -- a random value; strings are kept as code point lists (tagged) so the
  -- hand-made encoder can escape them in different ways; { raw = text } is
  -- an integer token written as it is
  local function random_value(depth)
    local k = rnd(depth > 3 and 6 or 9)
    if k == 1 then return { cps = random_cps() } end
    if k == 2 then return rnd(3) == 1 and { raw = random_int_text() } or random_number() end
    if k == 3 then return rnd(2) == 1 end
    if k == 4 then return null end
    if k == 5 then return { cps = { 65 + rnd(26) } } end
    if k == 6 then return random_number() end
    if k <= 8 then
      local t = { arr = {} }
      for i = 1, rnd(6) - 1 do t.arr[i] = random_value(depth + 1) end
      return t
    end
    local t = { obj = {} }
    for i = 1, rnd(6) - 1 do
      local key = rnd(3) == 1 and random_cps() or { byte(pick(KEYS), 1, -1) }
      t.obj[i] = { key, random_value(depth + 1) }
    end
    return t
  end

  -- to plain Lua values for cjson.encode (duplicate keys collapse)
  local function to_lua(v)
    if type(v) ~= "table" then return v end
    if v.cps then return plain(v.cps) end
    if v.raw then return tonumber(v.raw) end
    local t = {}
    if v.arr then
      for i, x in ipairs(v.arr) do t[i] = to_lua(x) end
      return t
    end
    for _, kv in ipairs(v.obj) do t[plain(kv[1])] = to_lua(kv[2]) end
    return t
  end

  local WS = { "", "", "", " ", "\n", "\t", "\r\n  ", "    " }
  local function ws() return rnd(3) == 1 and pick(WS) or "" end

  local SHORT = { [34] = '\\"', [92] = "\\\\", [47] = "\\/", [8] = "\\b", [12] = "\\f", [10] = "\\n",
    [13] = "\\r", [9] = "\\t" }

  local function escape_cp(cp)
    if cp < 0 then return char(-cp) end -- a raw byte, maybe invalid UTF-8
    local r = rnd(4)
    if cp == 34 or cp == 92 then return r <= 2 and SHORT[cp] or format("\\u%04x", cp) end
    if r == 1 and SHORT[cp] then return SHORT[cp] end
    if r == 2 then
      if cp < 0x10000 then return format(rnd(2) == 1 and "\\u%04x" or "\\u%04X", cp) end
      local c = cp - 0x10000
      return format("\\u%04x\\u%04X", 0xD800 + math.floor(c / 1024), 0xDC00 + c % 1024)
    end
    return utf8char(cp) -- raw, control characters included (cjson takes them)
  end

  local function number_text(x)
    if x ~= x or x == math.huge or x == -math.huge then return "0" end
    local r = rnd(5)
    if x == 0 then return pick { "0", "-0", "0.0", "0e0", "-0E+00", "0.", "-.0" } end
    if r == 1 then return format("%.17g", x) end
    if r == 2 then return format("%.3e", x) end
    if r == 3 then return (format("%.5E", x):gsub("E%+", "E")) end
    if r == 4 and x == math.floor(x) and math.abs(x) < 1e15 then return format("%d", x) .. "." end
    return format("%.14g", x)
  end

  local function hand_encode(v, out)
    out[#out + 1] = ws()
    local t = type(v)
    if v == null then
      out[#out + 1] = "null"
    elseif t == "boolean" then
      out[#out + 1] = tostring(v)
    elseif t == "number" then
      out[#out + 1] = number_text(v)
    elseif v.raw then
      out[#out + 1] = v.raw
    elseif v.cps then
      out[#out + 1] = '"'
      for _, cp in ipairs(v.cps) do out[#out + 1] = escape_cp(cp) end
      out[#out + 1] = '"'
    elseif v.arr then
      out[#out + 1] = "["
      for i, x in ipairs(v.arr) do
        if i > 1 then out[#out + 1] = "," end
        hand_encode(x, out)
      end
      out[#out + 1] = ws() .. "]"
    else
      out[#out + 1] = "{"
      for i, kv in ipairs(v.obj) do
        if i > 1 then out[#out + 1] = "," end
        hand_encode({ cps = kv[1] }, out)
        out[#out + 1] = ws() .. ":"
        hand_encode(kv[2], out)
      end
      out[#out + 1] = ws() .. "}"
    end
    out[#out + 1] = ws()
    return out
  end

  local MUTANTS = { "{", "}", "[", "]", ",", ":", '"', "\\", " ", "0", "1", "-", ".", "e", "n", "t", "u", "\0", "\255" }
  local function mutate(s)
    local i = rnd(#s + 1)
    local k = rnd(4)
    if k == 1 then return s:sub(1, i - 1) .. s:sub(i + 1) end
    if k == 2 then return s:sub(1, i - 1) .. pick(MUTANTS) .. s:sub(i) end
    if k == 3 then return s:sub(1, i - 1) .. pick(MUTANTS) .. s:sub(i + 1) end
    return s:sub(1, i - 1)
  end

  it("agrees with cjson on 3000 random documents and their mutants", function()
    seed = 20261128
    local encoded, handmade, failed = 0, 0, 0
    for n = 1, 3000 do
      local v = random_value(0)
      local text = cjson.encode(to_lua(v))
      assert_agree(text, "cjson.encode #" .. n)
      encoded = encoded + 1
      local hand = concat(hand_encode(v, {}))
      assert_agree(hand, "hand-made #" .. n)
      handmade = handmade + 1
      local m = mutate(rnd(2) == 1 and text or hand)
      assert_agree(m, "mutant #" .. n)
      if decode.cjson(m) == nil then failed = failed + 1 end
    end
    -- the corpus exercised both outcomes
    assert.equal(3000, encoded)
    assert.equal(3000, handmade)
    assert.is_true(failed > 500 and failed < 2900, "mutants that fail: " .. failed)
  end)

  -- The decoder keeps repeated keys and short values in caches of slots
  -- (src/imm_json.c): strings that land in one slot must never be mixed up.
  -- These are made to collide: the same length and the same first, middle
  -- and last bytes, differing in one other byte; lengths at the caches'
  -- limits; the same text escaped and not.
  it("keeps look-alike keys and short values apart (its string caches)", function()
    seed = 20261206
    local function lookalike(len, k)
      -- k picks the byte that differs; bytes 1, len and len/2 stay fixed
      local b = {}
      for i = 1, len do b[i] = 97 + (i % 7) end
      local free = {}
      for i = 2, len - 1 do
        if i ~= math.floor(len / 2) + 1 and i ~= math.floor((len - 1) / 4) + 1 then free[#free + 1] = i end
      end
      if #free > 0 then b[free[(k - 1) % #free + 1]] = 65 + math.floor((k - 1) / #free) % 26 end
      return char((table.unpack or unpack)(b))
    end
    local strs = {}
    for _, len in ipairs { 1, 2, 3, 5, 8, 11, 16, 23, 24, 25, 26, 39, 40, 41, 42 } do
      for k = 1, 12 do strs[#strs + 1] = lookalike(len, k) end
    end
    local distinct = {}
    for _, x in ipairs(strs) do distinct[x] = true end
    local nd = 0
    for _ in pairs(distinct) do nd = nd + 1 end
    assert.is_true(nd > 120, "look-alike strings: " .. nd)
    for n = 1, 60 do
      local recs = {}
      for r = 1, 40 do
        local fields = {}
        for f = 1, rnd(8) do
          local key, val = pick(strs), pick(strs)
          if rnd(5) == 1 then val = val:gsub("a", "\\u0061") end -- same text, escaped
          fields[f] = format('"%s":"%s"', key, val)
        end
        recs[r] = "{" .. concat(fields, ",") .. "}"
      end
      local text = "[" .. concat(recs, ",") .. "]"
      assert_agree(text, "look-alikes #" .. n)
    end
  end)

  -- Records of a list repeat their keys in order, so the decoder first
  -- tries the key read at the same member position of the last object at
  -- the same depth (src/imm_json.c, object_key). A key that only looks
  -- like the predicted one must never be taken for it.
  it("never takes a key for the one predicted at its position", function()
    seed = 20261208
    local KEYSETS = {
      { "ab", "abc", "a", "abd", "bb", "ab ", "\\u0061b", "a\\u0062", "abcdefghijklmnopqrstuvwxyz0123456789ABCD",
        "abcdefghijklmnopqrstuvwxyz0123456789ABCE", "abcdefghijklmnopqrstuvwxyz0123456789ABCDE", "" },
      { "ProjectName", "ProjectNamf", "ProjectNam", "ProjectNames", "Phase", "projectName" },
    }
    for n = 1, 300 do
      local keys = pick(KEYSETS)
      local depth = rnd(10)
      local recs = {}
      for r = 1, rnd(6) + 1 do
        local fields = {}
        for f = 1, rnd(20) do
          local k = pick(keys)
          if rnd(3) > 1 and recs[r - 1] then k = recs[r - 1].keys[f] or k end -- mostly the last record's
          fields[f] = { k = k, ws = rnd(6) == 1 and " " or "" }
        end
        local parts, ks = {}, {}
        for f, x in ipairs(fields) do
          ks[f] = x.k
          parts[f] = format('"%s"%s:%s', x.k, x.ws, rnd(4) == 1 and "null" or tostring(f))
        end
        recs[r] = { keys = ks, text = "{" .. concat(parts, ",") .. "}" }
      end
      local texts = {}
      for r, x in ipairs(recs) do texts[r] = x.text end
      local doc = "[" .. concat(texts, ",") .. "]"
      for _ = 1, depth do doc = '{"x":[' .. doc .. "]}" end
      assert_agree(doc, "predicted keys #" .. n)
      -- cut short right after a predicted key's bytes
      assert_agree(doc:sub(1, rnd(#doc)), "predicted keys, cut #" .. n)
    end
  end)

  it("marks empty arrays when asked, so they can be written back as []", function()
    local doc = '{"a":[],"b":{},"c":[{"d":[]},{"e":{}}],"e":[1],"f":[{"g":[]},{"g":[2]}],"h":[[],[[]]]}'
    assert.is_nil(getmetatable(assert(core.json_decode(doc, null)).a))
    local v = assert(decode.keep_arrays(doc))
    local mt = decode.empty_array
    assert.equal(mt, getmetatable(v.a))
    assert.is_nil(getmetatable(v.b))
    assert.equal(mt, getmetatable(v.c[1].d))
    assert.equal(mt, getmetatable(v.h[2][1]))
    assert.is_nil(getmetatable(v.c))
    assert.is_nil(getmetatable(v.e))
    assert.equal(1, v.e[1])
    -- written back, with the encoder's sorted keys, it is the same text
    assert.equal(doc, core.json_encode(v, decode.shape(v)))
    assert.equal('{"a":{},"b":{}}', core.json_encode(assert(decode.keep_arrays('{"a":[],"b":{}}')), nil))
    assert.is_nil(decode.shape(assert(decode.keep_arrays('{"a":{"b":[1]}}'))))
    assert.has_error(function() core.json_decode("[]", null, "not a table") end)
  end)

  -- Issue 24: the client's replies are decoded where libcurl wrote them
  -- (h:request's keep, h:decode), with no Lua string of the body. The same
  -- bytes must give the same value or the same message as json_decode of
  -- the body as a string, with every decoder's arguments.
  describe("the HTTP handle: replies decoded in place, header tables built in C", function()
    local hostile = require "helpers.hostile"
    local srv
    setup(function() srv = hostile.start() end)
    teardown(function() if srv then srv.stop() end end)

    -- hostile.py sends a body's code points as bytes (latin-1): each byte
    -- of s as the code point of the same number
    local function as_code_points(s)
      return (s:gsub("[\128-\255]", function(c)
        local b = byte(c)
        return char(0xC0 + (b - b % 64) / 64, 0x80 + b % 64)
      end))
    end

    local ARGS = { { null }, { null, decode.empty_array }, { null, nil, "string" },
      { null, decode.empty_array, "string" } }

    it("gives what json_decode gives for the body as a string, byte for byte the same body", function()
      seed = 20261207
      local docs = {}
      for _, c in ipairs(EDGE_CASES) do docs[#docs + 1] = c end
      for n = 1, 150 do
        local v = random_value(0)
        local text = cjson.encode(to_lua(v))
        docs[#docs + 1] = text
        docs[#docs + 1] = concat(hand_encode(v, {}))
        docs[#docs + 1] = mutate(text)
        if n % 50 == 0 then docs[#docs + 1] = "" end
      end
      -- NUL bytes inside, at the end, and a body of a NUL only; a body of
      -- 3 MB, valid and cut short
      local big = '{"Bindings":[' .. string.rep('{"URI":"oss://b/x","State":"Ready","N":123},', 40000)
        .. '{}],"NextToken":"t"}'
      for _, d in ipairs { '{"a":"b\0c"}', '{"a":1}\0', "\0", '{"a"\0:1}', "[1,\0]", big,
        big:sub(1, #big - 3) } do
        docs[#docs + 1] = d
      end
      local steps = {}
      for i, d in ipairs(docs) do steps[i] = { status = 200, body = as_code_points(d) } end
      srv.script(steps)
      local h = assert(core.http { timeout = 10 })
      local objects, failures = 0, 0
      for i, d in ipairs(docs) do
        local status, seq = h:request("GET", srv.url .. "/", {}, "", false, nil, true)
        assert.equal(200, status)
        assert.is_number(seq)
        assert(h:body(seq) == d, "the body as sent, #" .. i)
        for _, a in ipairs(ARGS) do
          local v, object = h:decode(a[1], a[2], a[3], seq)
          local w, werr = core.json_decode(d, a[1], a[2], a[3])
          if w == nil then
            assert.is_nil(v)
            assert.equal(werr, object)
            failures = failures + 1
          else
            local ok, where = same(w, v)
            assert(ok, format("#%d: %s\n  document: %q", i, tostring(where), d:sub(1, 200)))
            assert.equal(find(d, "^%s*{") ~= nil, object)
            if object then objects = objects + 1 end
          end
        end
        -- decoding leaves the body in the handle for h:body and decodes again
        assert(h:body(seq) == d)
      end
      assert.is_true(objects > 150 and failures > 400, objects .. " objects, " .. failures .. " failures")
      -- a later exchange replaces the reply: reading the old one is refused
      local status, seq = h:request("GET", srv.url .. "/", {}, "", false, nil, true)
      assert.equal(200, status)
      assert.has_error(function() h:body(seq - 1) end)
      assert.has_error(function() h:decode(null, nil, nil, seq - 1) end)
      assert.has_error(function() h:headers(seq - 1) end)
      -- without keep, the reply comes as before
      local st2, body, headers = h:request("GET", srv.url .. "/", {}, "")
      assert.equal(200, st2)
      assert.equal(docs[#docs], body)
      assert.is_table(headers)
      h:close()
      assert.has_error(function() h:body(seq + 1) end)
    end)

    it("sends a header table { name = value } as the lines the transport used to build", function()
      srv.script { { status = 200, body = "{}" } }
      local h = assert(core.http { timeout = 10 })
      local map = { ["X-A"] = "one", ["x-b"] = 2.5, ["x-c"] = 7, ["x-d"] = "with: colon" }
      for i = 1, 40 do map["x-many-" .. i] = "v" .. i end -- more than the 32 lines kept on the C stack
      assert.equal(200, (h:request("GET", srv.url .. "/", map, "")))
      local got = srv.log()[1].headers
      assert.equal("one", got["x-a"])
      assert.equal("2.5", got["x-b"])
      assert.equal("7", got["x-c"])
      assert.equal("with: colon", got["x-d"])
      for i = 1, 40 do assert.equal("v" .. i, got["x-many-" .. i]) end
      -- the lines as before, and no headers at all
      srv.script { { status = 200, body = "{}" } }
      assert.equal(200, (h:request("GET", srv.url .. "/", { "X-Line: yes" }, "")))
      assert.equal(200, (h:request("GET", srv.url .. "/", {}, "")))
      local log = srv.log()
      assert.equal("yes", log[1].headers["x-line"])
      assert.is_nil(log[2].headers["x-line"])
      -- misuse raises, before anything is sent
      assert.has_error(function() h:request("GET", srv.url .. "/", { ["x-t"] = {} }, "") end)
      assert.has_error(function() h:request("GET", srv.url .. "/", { ["x-t"] = true }, "") end)
      assert.equal(2, #srv.log())
      h:close()
    end)

    it("is how the client reads a reply; failures still carry the body and the headers", function()
      local imm = require "imm"
      local c = assert(imm.new { endpoint = srv.url, access_key_id = "id", access_key_secret = "secret",
        max_retries = 0 })
      -- the transport's replies, as the client saw them
      local replies = {}
      local request = c.transport.request
      c.transport.request = function(t, req)
        local res, err = request(t, req)
        replies[#replies + 1] = res
        return res, err
      end
      local page = '{"RequestId":"r-1","Bindings":[{"URI":"oss://b/1","State":"Ready"},{"URI":"\\u00e9"}],'
        .. '"NextToken":"n"}'
      srv.script {
        { status = 200, headers = { ["x-acs-request-id"] = "hdr-1" }, body = page },
        { status = 200, headers = { ["x-acs-request-id"] = "hdr-2" }, body = page },
        { status = 200, headers = { ["x-acs-request-id"] = "hdr-3" }, body = "[]" },
        { status = 200, headers = { ["x-acs-request-id"] = "hdr-4" }, body = '{"a":1}\0' },
        { status = 200, headers = { ["x-acs-request-id"] = "hdr-5" }, body = "" },
        { status = 400, headers = { ["x-acs-request-id"] = "hdr-6" },
          body = '{"RequestId":"r-6","Code":"InvalidArgument","Message":"bad \\"x\\" here"}' },
        { status = 503, headers = { ["x-acs-request-id"] = "hdr-7" }, body = "<html>gateway busy, secret</html>" },
        { status = 200, headers = { ["x-acs-request-id"] = "hdr-8" }, body = '{"Bindings":[1]}' },
      }
      local res = assert(c:list_bindings { ProjectName = "p" })
      assert.is_true(same(decode.imm(page), res))
      -- no string of the body was made, nor the header table
      assert.is_nil(rawget(replies[1], "body"))
      assert.is_nil(rawget(replies[1], "headers"))
      -- meta's headers are read before a hook sends again on the same handle
      local again
      c.on_response = function(info)
        if info.request_id == "r-1" and not again then
          again = true
          assert(c:list_bindings { ProjectName = "p" } == nil) -- "[]": not an object
        end
      end
      local res2, _, meta = c:list_bindings({ ProjectName = "p" }, { meta = true })
      assert.is_true(same(decode.imm(page), res2))
      assert.is_true(again)
      assert.equal("hdr-2", meta.headers["x-acs-request-id"])
      c.on_response = nil
      local _, err = c:list_bindings { ProjectName = "p" }
      assert.equal("InvalidResponse", err.code)
      assert.truthy(err.message:find("NUL", 1, true), err.message)
      assert.equal("hdr-4", err.request_id)
      _, err = c:list_bindings { ProjectName = "p" }
      assert.equal("InvalidResponse", err.code)
      assert.equal("hdr-5", err.request_id)
      _, err = c:list_bindings { ProjectName = "p" }
      assert.equal("InvalidArgument", err.code)
      assert.equal('bad "x" here', err.message)
      _, err = c:list_bindings { ProjectName = "p" }
      assert.equal(503, err.status)
      -- the body's length, read from the handle
      assert.truthy(tostring(err):find("33 bytes)", 1, true), tostring(err))
      assert.falsy(tostring(err):find("secret", 1, true))
      _, err = c:list_bindings { ProjectName = "p" }
      assert.equal("InvalidResponse", err.code)
      assert.truthy(err.message:find("Bindings[1]", 1, true), err.message)
      c:close()
    end)
  end)
end)
