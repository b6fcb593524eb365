/*
 * libFuzzer target: the response path from bytes to tables, exactly as the
 * client runs it: decoding (the default C decoder, and lua-cjson with its
 * null stripping) and the shape checks of imm.response. A Lua error raised
 * instead of `nil, err` is a crash.
 *
 * Runs from the repository root (it loads the modules in lua/imm/ and the system
 * lua-cjson through Lua 5.4). imm.core is replaced by a table holding only
 * json_decode, linked in from src/imm_json.c.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "imm_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static lua_State *L;

static const char *driver =
    "package.path = 'lua/?.lua;' .. package.path\n"
    "local json_decode, null = ...\n"
    "package.preload['imm.core'] = function() return { json_decode = json_decode, null = null } end\n"
    "local response = require 'imm.response'\n"
    "local decode = require 'imm.decode'\n"
    "local def = { items = 'Bindings' }\n"
    "return function(body, status, decoder)\n"
    "  local v, err = response.parse({ status = status, headers = { date = body:sub(1, 29) },\n"
    "    body = body }, decoder == 0 and decode.default or decode.cjson, def)\n"
    "  if v then\n"
    "    assert(type(v) == 'table' and type(v.Bindings) == 'table')\n"
    "    assert(v.NextToken == nil or v.NextToken ~= '')\n"
    "  else\n"
    "    assert(type(err) == 'table' and type(err.code) == 'string' and type(tostring(err)) == 'string')\n"
    "  end\n"
    "end\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const int statuses[] = {200, 404, 503};
    int i;
    if (L == NULL) {
        L = luaL_newstate();
        luaL_openlibs(L);
        int ok = luaL_loadstring(L, driver) == LUA_OK;
        if (ok) {
            lua_pushcfunction(L, imm_json_decode);
            lua_pushlightuserdata(L, NULL); /* imm.core.null, as the real module has it */
            ok = lua_pcall(L, 2, 1, 0) == LUA_OK;
        }
        if (!ok) {
            fprintf(stderr, "fuzz_response: %s (run from the repository root)\n", lua_tostring(L, -1));
            abort();
        }
        lua_setglobal(L, "check");
    }
    for (i = 0; i < 6; i++) {
        lua_getglobal(L, "check");
        lua_pushlstring(L, (const char *)data, size);
        lua_pushinteger(L, statuses[i % 3]);
        lua_pushinteger(L, i / 3);
        if (lua_pcall(L, 3, 0, 0) != LUA_OK) {
            fprintf(stderr, "fuzz_response: raised: %s\n", lua_tostring(L, -1));
            abort();
        }
    }
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
