/*
 * imm_preload.c - imm_preload(): puts the Lua modules embedded in libimm.a
 * into package.preload, so a C host needs no Lua files on disk.
 *
 * Only libimm.a contains this file; the `imm.core` shared module is found by
 * `require` next to Lua files that are already installed. The module table
 * is static and read-only, so any number of states on any threads may share
 * it.
 */
#include <lauxlib.h>
#include <lua.h>

#include "imm.h"
#include "imm_preload.h"

/* LUA_OK is 5.2+; 0 means success in every version. */
#ifndef LUA_OK
#define LUA_OK 0
#endif

/* The package.preload loader: upvalue 1 is the module's light userdata.
 * Like the file searcher it runs the chunk with (name, where) and returns
 * what the chunk returns. */
static int load_embedded(lua_State *L) {
    const imm_lua_module *m = lua_touserdata(L, lua_upvalueindex(1));
    if (luaL_loadbuffer(L, m->src, m->len, m->chunk) != LUA_OK)
        return lua_error(L); /* out of memory, or a syntax error the specs would have caught */
    lua_pushstring(L, m->name);
    lua_pushliteral(L, ":preload:"); /* what 5.4's preload searcher passes */
    lua_call(L, 2, 1);
    return 1;
}

__attribute__((visibility("default"))) void imm_preload(lua_State *L) {
    size_t i;
#ifdef LUA_PRELOAD_TABLE
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
#else
    /* 5.1 and LuaJIT keep preload only in the package table */
    lua_getglobal(L, "package");
    if (!lua_istable(L, -1))
        luaL_error(L, "imm_preload: open the package library first");
    lua_getfield(L, -1, "preload");
    lua_remove(L, -2);
    if (!lua_istable(L, -1))
        luaL_error(L, "imm_preload: package.preload is not a table");
#endif
    /* the C core too, so a host that skips luaL_requiref still gets this
     * library's imm.core and never another build's core.so from cpath */
    lua_pushcfunction(L, luaopen_imm_core);
    lua_setfield(L, -2, "imm.core");
    for (i = 0; i < imm_lua_nmodules; i++) {
        lua_pushlightuserdata(L, (void *)(imm_lua_modules + i));
        lua_pushcclosure(L, load_embedded, 1);
        lua_setfield(L, -2, imm_lua_modules[i].name);
    }
    lua_pop(L, 1);
}
