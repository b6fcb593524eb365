/*
 * libFuzzer target: the C JSON decoder (src/imm_json.c) against the
 * reference, imm.decode's lua-cjson decoder. Both must accept or refuse
 * each input, and build the same tables (math.type included), but for the
 * integers that imm reads exactly on purpose (as spec/11 compares them,
 * with and without big_integers = "string"); a mismatch,
 * or a Lua error raised instead of nil, message, aborts. Each input is then
 * decoded again with an allocator that fails after a few allocations: the
 * out-of-memory error must unwind cleanly (ASan checks the rest).
 *
 * Runs from the repository root: it loads lua/imm/decode.lua and the
 * system lua-cjson through Lua 5.4; imm.core is replaced by a table that
 * holds only json_decode, linked in from src/imm_json.c.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "fuzz_alloc.h"

#include "imm_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;


static const char *driver =
    "package.path = 'lua/?.lua;' .. package.path\n"
    "local json_decode, null = ...\n"
    "package.preload['imm.core'] = function() return { json_decode = json_decode, null = null } end\n"
    "local decode = require 'imm.decode'\n"
    "local mtype = math.type\n"
    "local function same(a, b, path)\n"
    "  if type(a) ~= type(b) then error(path .. ': ' .. type(a) .. ' vs ' .. type(b)) end\n"
    "  if type(a) == 'number' then\n"
    "    if mtype(a) ~= mtype(b) or (a ~= b and (a == a or b == b))\n"
    "      or (a == 0 and 1 / a ~= 1 / b) then\n"
    "      error(string.format('%s: %.17g vs %.17g', path, a, b))\n"
    "    end\n"
    "  elseif type(a) == 'table' then\n"
    "    for k, v in pairs(a) do same(v, b[k], path .. '.' .. tostring(k)) end\n"
    "    for k in pairs(b) do if a[k] == nil then error(path .. '.' .. tostring(k) .. ' extra') end end\n"
    "  elseif a ~= b then\n"
    "    error(path .. ': ' .. tostring(a) .. ' vs ' .. tostring(b))\n"
    "  end\n"
    "end\n"
    "-- the reference: cjson, with the differences imm makes on purpose (docs/api.md,\n"
    "-- \"Numbers\"): integer tokens exact (Lua integers on 5.4), \"-0\" cjson's -0.0,\n"
    "-- and with big = 'string' those beyond int64 as their text\n"
    "local MARK = '#imm-int#'\n"
    "local function tag_integers(text)\n"
    "  local out, pos = {}, 1\n"
    "  while true do\n"
    "    local s = text:find('[\"%-%d]', pos)\n"
    "    if not s then break end\n"
    "    local e\n"
    "    if text:sub(s, s) == '\"' then\n"
    "      e = s + 1\n"
    "      while true do\n"
    "        local q = text:find('[\"\\\\]', e)\n"
    "        if text:sub(q, q) == '\"' then e = q break end\n"
    "        e = q + 2\n"
    "      end\n"
    "      out[#out + 1] = text:sub(pos, e)\n"
    "    else\n"
    "      e = select(2, text:find('^[-+.eE%d]+', s))\n"
    "      local tok = text:sub(s, e)\n"
    "      out[#out + 1] = text:sub(pos, s - 1)\n"
    "      out[#out + 1] = (tok:find('^%-?%d+$') and tok ~= '-0') and '\"' .. MARK .. tok .. '\"' or tok\n"
    "    end\n"
    "    pos = e + 1\n"
    "  end\n"
    "  out[#out + 1] = text:sub(pos)\n"
    "  return table.concat(out)\n"
    "end\n"
    "local function untag(v, big)\n"
    "  if type(v) == 'string' and v:sub(1, #MARK) == MARK then\n"
    "    local tok = v:sub(#MARK + 1)\n"
    "    local n = tonumber(tok)\n"
    "    if mtype(n) == 'float' and big == 'string' then return tok end\n"
    "    return n\n"
    "  end\n"
    "  if type(v) == 'table' then for k, x in pairs(v) do v[k] = untag(x, big) end end\n"
    "  return v\n"
    "end\n"
    "local function compare(body, big)\n"
    "  local _, aerr = decode.cjson(body)\n"
    "  local b, berr = json_decode(body, null, nil, big)\n"
    "  if (aerr == nil) ~= (berr == nil) then\n"
    "    error('cjson: ' .. tostring(aerr or 'ok') .. ', imm: ' .. tostring(berr or 'ok'))\n"
    "  end\n"
    "  if berr then\n"
    "    assert(b == nil and type(berr) == 'string' and berr:find('at character %d+$'), berr)\n"
    "  else\n"
    "    local t, terr = decode.cjson(tag_integers(body))\n"
    "    assert(terr == nil, terr)\n"
    "    same(untag(t, big), b, '$')\n"
    "  end\n"
    "end\n"
    "return function(body)\n"
    "  compare(body, nil)\n"
    "  compare(body, 'string')\n"
    "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (L == NULL) {
        L = lua_newstate(fuzz_alloc, NULL);
        luaL_openlibs(L);
        if (luaL_loadstring(L, driver) != LUA_OK)
            goto fail;
        lua_pushcfunction(L, imm_json_decode);
        lua_pushlightuserdata(L, NULL); /* imm.core.null, as the real module has it */
        if (lua_pcall(L, 2, 1, 0) != LUA_OK)
            goto fail;
        lua_setglobal(L, "check");
    }
    lua_getglobal(L, "check");
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        fprintf(stderr, "fuzz_json: mismatch: %s\n", lua_tostring(L, -1));
        abort();
    }
    /* the same input with little memory: nil, message or a memory error */
    lua_pushcfunction(L, imm_json_decode);
    lua_pushlstring(L, (const char *)data, size);
    lua_pushboolean(L, 0);
    {
        /* a budget drawn from the input, so a crash reproduces */
        unsigned long sum = 0;
        size_t i;
        for (i = 0; i < size; i++)
            sum += data[i];
        if (fuzz_pcall_starved(L, 2, 2, (long)(sum % 24)) != 0) {
            fprintf(stderr, "fuzz_json: odd error under memory pressure\n");
            abort();
        }
    }
    lua_settop(L, 0);
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
fail:
    fprintf(stderr, "fuzz_json: %s (run from the repository root)\n", lua_tostring(L, -1));
    abort();
}
