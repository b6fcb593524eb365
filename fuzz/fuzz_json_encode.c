/*
 * libFuzzer target: the JSON encoder (imm.core.json_encode, number_text).
 *
 * Each input is decoded with imm's decoder; the value is encoded, decoded
 * again and compared with the first (every float must come back as the
 * same double), encoded again (the text must not change), encoded with a
 * shape that fits it (the same text again) and with one that may not (the
 * same text, or nil and a message). The encoder may refuse only
 * what it documents: strings that are not valid UTF-8 (checked against Lua
 * 5.4's own utf8.len), infinities (the decoder reads 1e999 as one, as
 * lua-cjson does) and nesting deeper than 128 tables. A mismatch, or a
 * Lua error raised instead of nil, message, aborts. Each input is then
 * encoded with an allocator that fails after a few allocations: the memory
 * error must unwind cleanly (ASan and LeakSanitizer check the rest).
 *
 * The same bytes also build a value the decoder never makes (build_value
 * in the driver): integers (number_text and json_encode must write them in
 * full), tables with weak keys or values whose entries the collector may
 * remove mid-walk, finalizers that empty a table while it is written,
 * metatables (ignored: tables are read raw), under a shape or none. The
 * answer must be valid JSON or nil and a message; then the same under
 * memory pressure.
 *
 * The first 8 bytes, as a double, also go through imm_json_number_text:
 * the text must read back as the same double (strtod), with no more digits
 * than the shortest %.{p}g that does.
 *
 * The whole module (every C file under src/) is linked in and opened with
 * luaopen_imm_core.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "fuzz_alloc.h"

#include "imm_jsonenc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int luaopen_imm_core(lua_State *L);

static lua_State *L;


static const char *driver =
    "local core, null = ...\n"
    "local decode, encode = core.json_decode, core.json_encode\n"
    "local mtype = math.type\n"
    "local function same(a, b, path)\n"
    "  if type(a) ~= type(b) then error(path .. ': ' .. type(a) .. ' vs ' .. type(b)) end\n"
    "  if type(a) == 'number' then\n"
    /* a whole float (or -0.0) is written as integer text, which decodes
     * as a Lua integer; above 2^53 that text is the float's shortest
     * digits padded with zeros (as JavaScript writes it), an integer that
     * reads back as the same float but need not equal it (docs/api.md,
     * imm.core.number_text) */
    "    local ok = mtype(a) == mtype(b) and a == b\n"
    "    if not ok and mtype(a) == 'float' and mtype(b) == 'integer' then ok = b + 0.0 == a end\n"
    "    if not ok then\n"
    "      error(string.format('%s: %.17g vs %.17g', path, a, b))\n"
    "    end\n"
    "  elseif type(a) == 'table' then\n"
    "    for k, v in pairs(a) do same(v, b[k], path .. '.' .. tostring(k)) end\n"
    "    for k in pairs(b) do if a[k] == nil then error(path .. '.' .. tostring(k) .. ' extra') end end\n"
    "  elseif a ~= b then\n"
    "    error(path .. ': ' .. tostring(a) .. ' vs ' .. tostring(b))\n"
    "  end\n"
    "end\n"
    "local function nonfinite(v)\n"
    "  if type(v) == 'number' then return v ~= v or v == math.huge or v == -math.huge end\n"
    "  if type(v) ~= 'table' then return false end\n"
    "  for _, x in pairs(v) do if nonfinite(x) then return true end end\n"
    "  return false\n"
    "end\n"
    "local function depth(v)\n"
    "  if type(v) ~= 'table' then return 0 end\n"
    "  local d = 0\n"
    "  for _, x in pairs(v) do local e = depth(x) if e > d then d = e end end\n"
    "  return d + 1\n"
    "end\n"
    /* a shape that fits v, built from its keys; which of map and fields
     * an object gets is drawn from `pick` */
    "local function shape_of(v, pick)\n"
    "  local t = type(v)\n"
    "  if t == 'string' or t == 'number' or t == 'boolean' then return t end\n"
    "  if t ~= 'table' or next(v) == nil then return 'any' end\n"
    "  if v[1] ~= nil then\n"
    "    local first = shape_of(v[1], pick)\n"
    "    for i = 2, #v do if shape_of(v[i], pick) ~= first or type(first) == 'table' then\n"
    "      return { array = 'any' } end end\n"
    "    return { array = first }\n"
    "  end\n"
    "  if pick % 2 == 0 then return { map = 'any' } end\n"
    "  local f = {}\n"
    "  for k, x in pairs(v) do f[k] = shape_of(x, pick + 1) end\n"
    "  return { fields = f }\n"
    "end\n"
    /* a value from the bytes of s, of kinds the decoder never makes */
    "local tointeger, keep = math.tointeger, {}\n"
    /* a collector that runs often, so that it runs in the middle of walks */
    "collectgarbage('incremental', 25, 400)\n"
    "local function build_value(s)\n"
    "  local pos = 0\n"
    "  local function b() pos = pos + 1 return s:byte(pos) or 0 end\n"
    "  local function val(d)\n"
    "    local t = b() % 9\n"
    "    if t == 0 then\n"
    "      local x = tointeger((b() - 128) * (b() + 1) * 2 ^ (b() % 56))\n"
    "      if b() % 8 == 0 then x = b() % 2 == 0 and math.maxinteger or math.mininteger end\n"
    "      return x or 0\n"
    "    elseif t == 1 then return (b() - 128) / (b() + 1)\n"
    "    elseif t == 2 then local n = b() % 48 local v = s:sub(pos + 1, pos + n) pos = pos + n return v\n"
    "    elseif t == 3 then return b() % 2 == 0\n"
    "    elseif t == 4 or d > 4 then return null\n"
    "    end\n"
    "    local mode = ({ false, 'k', 'v', 'kv' })[b() % 4 + 1]\n"
    "    local tbl = mode and setmetatable({}, { __mode = mode }) or {}\n"
    "    local array = b() % 2 == 0\n"
    "    for i = 1, b() % 7 do\n"
    "      local k = array and i or (b() % 3 == 0 and string.rep('k', 40 + b() % 40) .. i or 'k' .. i)\n"
    "      local v = b() % 4 == 0 and {} or val(d + 1)\n"
    /* some values are held elsewhere too: in a weak table only the others may go */
    "      if b() % 2 == 0 then keep[#keep + 1] = v end\n"
    "      tbl[k] = v\n"
    "    end\n"
    "    local m = b() % 4\n"
    "    if m == 1 then\n"
    "      setmetatable(tbl, { __index = function() error('a metamethod was called') end,\n"
    "        __pairs = function() error('a metamethod was called') end, __mode = mode })\n"
    "    elseif m == 2 then\n"
    /* garbage whose finalizer empties the table, at a collection mid-walk */
    "      setmetatable({}, { __gc = function() for k in pairs(tbl) do tbl[k] = nil end end })\n"
    "    end\n"
    "    return tbl\n"
    "  end\n"
    "  return val(0)\n"
    "end\n"
    "local function check_built(body, pick)\n"
    "  local i = tointeger((pick % 2 == 0 and 1 or -1) * pick * 2 ^ (pick % 50))\n"
    "  if i then\n"
    "    local want = string.format('%d', i)\n"
    "    assert(encode(i) == want and core.number_text(i) == want, 'an integer not in full: ' .. want)\n"
    "  end\n"
    "  local v = build_value(body)\n"
    /* shape_of reads through metatables: a shape drawn blind instead */
    "  local text, err = encode(v, ({ nil, 'any', { map = 'any' }, { array = 'any' } })[pick % 4 + 1])\n"
    "  if text == nil then\n"
    "    assert(type(err) == 'string', 'no message')\n"
    /* an entry gone mid-walk is left out, never read as a nil value */
    "    assert(not err:find('cannot encode a nil', 1, true), err)\n"
    "  else\n"
    "    local w, derr = decode(text, null)\n"
    "    assert(w ~= nil, 'wrote invalid JSON: ' .. tostring(derr) .. ': ' .. text)\n"
    "  end\n"
    "  for j = #keep, 1, -1 do keep[j] = nil end\n"
    "  return v\n"
    "end\n"
    "return function(body, pick)\n"
    "  built = check_built(body, pick)\n"
    "  local v = decode(body, null)\n"
    "  if v == nil then return end\n"
    "  local text, err = encode(v)\n"
    "  if text == nil then\n"
    "    assert(type(err) == 'string', 'no message')\n"
    "    if err:find('invalid UTF%-8 in a') then\n"
    "      assert(utf8.len(body) == nil, 'refused valid UTF-8: ' .. err)\n"
    "    elseif err:find('expected a finite number, got', 1, true) then\n"
    "      assert(nonfinite(v), err)\n"
    "    else\n"
    "      assert(err:find('nested deeper than 128 tables', 1, true) and depth(v) > 128, err)\n"
    "    end\n"
    "    return\n"
    "  end\n"
    "  assert(utf8.len(text), 'wrote invalid UTF-8')\n"
    "  local w, derr = decode(text, null)\n"
    "  if derr then error('wrote invalid JSON: ' .. derr .. ': ' .. text) end\n"
    "  same(v, w, '$')\n"
    "  assert(encode(w) == text, 'a second encoding differs')\n"
    "  local shaped, serr = encode(v, shape_of(v, pick))\n"
    "  if shaped ~= text then error('with a shape: ' .. tostring(shaped or serr)) end\n"
    /* a shape that may not fit: one scalar leaf's type changed; the answer
     * is a text or nil and a message with a path, never an error raised */
    "  local n, wrong = 0, { string = 'number', number = 'boolean', boolean = 'string' }\n"
    "  local function spoil(sh)\n"
    "    if type(sh) == 'string' then\n"
    "      n = n + 1\n"
    "      if n == pick % 7 + 1 and wrong[sh] then return wrong[sh] end\n"
    "      return sh\n"
    "    end\n"
    "    if sh.array then return { array = spoil(sh.array) } end\n"
    "    if sh.map then return { map = spoil(sh.map) } end\n"
    "    local f = {}\n"
    "    for k, x in pairs(sh.fields) do f[k] = spoil(x) end\n"
    "    return { fields = f }\n"
    "  end\n"
    "  local other, oerr = encode(v, spoil(shape_of(v, pick)))\n"
    "  if other == nil then\n"
    "    assert(type(oerr) == 'string' and oerr:find('expected an? %a+, got %a+$'), oerr)\n"
    "  else\n"
    "    assert(other == text, 'a spoilt shape changed the text')\n"
    "  end\n"
    "end\n";

/* How many significant digits a number text has. */
static int sig_digits(const char *s) {
    int n = 0, lead = 1, zeros = 0;
    for (; *s && *s != 'e' && *s != 'E'; s++) {
        if (*s < '0' || *s > '9')
            continue;
        if (*s == '0' && lead)
            continue;
        lead = 0;
        if (*s == '0') {
            zeros++;
        } else {
            n += zeros + 1;
            zeros = 0;
        }
    }
    return n;
}

static void check_number(const uint8_t *data, size_t size) {
    double x;
    char out[IMM_JSONENC_NUMBER_MAX], g[40];
    int n, p;
    if (size < 8)
        return;
    memcpy(&x, data, sizeof x);
    n = imm_json_number_text(x, out);
    if (isnan(x) || isinf(x)) {
        if (n != -1 || out[0] != '\0')
            abort();
        return;
    }
    if (n <= 0 || n >= IMM_JSONENC_NUMBER_MAX || (size_t)n != strlen(out) || strtod(out, NULL) != x) {
        fprintf(stderr, "fuzz_json_encode: %.17g written %s\n", x, out);
        abort();
    }
    for (p = 1; p <= 17; p++) {
        snprintf(g, sizeof g, "%.*g", p, x);
        if (strtod(g, NULL) == x)
            break;
    }
    if (sig_digits(out) > sig_digits(g)) {
        fprintf(stderr, "fuzz_json_encode: %.17g written %s, longer than %s\n", x, out, g);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unsigned long sum = 0;
    size_t i;
    check_number(data, size);
    for (i = 0; i < size; i++)
        sum += data[i];
    if (L == NULL) {
        L = lua_newstate(fuzz_alloc, NULL);
        luaL_openlibs(L);
        if (luaL_loadstring(L, driver) != LUA_OK)
            goto fail;
        lua_pushcfunction(L, luaopen_imm_core);
        lua_call(L, 0, 1);
        lua_pushvalue(L, -1);
        lua_setglobal(L, "core");
        lua_pushlightuserdata(L, NULL); /* the null the decoder stores */
        if (lua_pcall(L, 2, 1, 0) != LUA_OK)
            goto fail;
        lua_setglobal(L, "check");
    }
    lua_getglobal(L, "check");
    lua_pushlstring(L, (const char *)data, size);
    lua_pushinteger(L, (lua_Integer)sum);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) {
        fprintf(stderr, "fuzz_json_encode: %s\n", lua_tostring(L, -1));
        abort();
    }
    /* the encoder with little memory: a text, nil, message or a memory error */
    lua_getglobal(L, "core");
    lua_getfield(L, -1, "json_encode");
    lua_getfield(L, -2, "json_decode");
    lua_pushlstring(L, (const char *)data, size);
    lua_pushlightuserdata(L, NULL);
    lua_call(L, 2, 1);
    if (fuzz_pcall_starved(L, 1, 2, (long)(sum % 24)) != 0) {
        fprintf(stderr, "fuzz_json_encode: odd error under memory pressure\n");
        abort();
    }
    lua_settop(L, 0);
    /* the built value (weak tables, finalizers) with little memory */
    lua_getglobal(L, "core");
    lua_getfield(L, -1, "json_encode");
    lua_getglobal(L, "built");
    if (fuzz_pcall_starved(L, 1, 2, (long)(sum % 31)) != 0) {
        fprintf(stderr, "fuzz_json_encode: odd error under memory pressure (a built value)\n");
        abort();
    }
    lua_settop(L, 0);
    lua_pushnil(L);
    lua_setglobal(L, "built");
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
fail:
    fprintf(stderr, "fuzz_json_encode: %s\n", lua_tostring(L, -1));
    abort();
}
