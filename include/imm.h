/*
 * imm.h - embedding imm in a C program (libimm.a).
 *
 * libimm.a holds the C core (the `imm.core` module) and every Lua module of
 * imm (`imm`, `imm.client`, `imm.transport.curl`, ...), the latter copied
 * from lua/ at build time. A host that links it needs no imm files on disk:
 *
 *     lua_State *L = luaL_newstate();
 *     luaL_openlibs(L);
 *     imm_preload(L);
 *     // from here on, Lua code may `require "imm"`
 *
 * imm_preload() is all a host needs, on every runtime: LuaJIT's 5.1 API has
 * no luaL_requiref, and imm.core is in package.preload too. A 5.2+ host may
 * also open imm.core at once with
 * luaL_requiref(L, "imm.core", luaopen_imm_core, 0), then lua_pop(L, 1).
 *
 * Build (Lua 5.4; for LuaJIT, build/luajit/libimm.a from `make lib
 * LUA=luajit`, pkg-config's luajit and libluajit-5.1.a). imm needs no other
 * file: no Lua module and no C module (JSON is imm.core's own). -Wl,-E
 * exports the Lua API only for C modules of the host's own scripts:
 *
 *     cc host.c -Iinclude $(pkg-config --cflags lua5.4) build/lua5.4/libimm.a \
 *        -Wl,-E -Wl,--whole-archive -l:liblua5.4.a -Wl,--no-whole-archive \
 *        $(pkg-config --libs libcurl openssl zlib) -lpthread -lm -ldl
 *
 * Threads. One client belongs to one lua_State, and a lua_State is used by
 * one thread at a time (Lua's own rule). Separate states on separate threads
 * may use imm at the same time: the C core has no mutable global state
 * except one-time initialisations, each under pthread_once:
 * curl_global_init() on the first HTTP handle, and the fetch of the
 * OpenSSL 3 digests (SHA-256, SM3, SHA-1), which are then only read.
 * Nothing else is shared; every handle and buffer belongs to one state.
 * (imm.core.backend() builds its string once, under a third pthread_once,
 * from curl_version_info(); it never calls curl_version(), which rewrites a
 * static buffer on each call.)
 *
 * Both functions below follow the rules of the Lua C API: they may raise a
 * Lua error (out of memory), so call them where an error is caught, e.g.
 * before the state runs untrusted code, or under lua_pcall.
 */
#ifndef IMM_H
#define IMM_H

#include <lua.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Opens the C core: pushes the `imm.core` table and returns 1. It is a
 * lua_CFunction meant for luaL_requiref(L, "imm.core", luaopen_imm_core, 0)
 * (or package.preload, where imm_preload puts it). Metatables go in the state's registry; handles are
 * freed by Lua's garbage collector or by close(). */
int luaopen_imm_core(lua_State *L);

/* Registers the embedded Lua modules in package.preload (the package
 * library must be open). Loading happens on the first `require` of each;
 * the sources are static data of the library, so nothing is allocated
 * outside the state and there is nothing to free. It registers
 * luaopen_imm_core as "imm.core" as well, so `require "imm.core"` never
 * finds another build's core.so on package.cpath; a luaL_requiref done
 * before takes precedence, as package.loaded is searched first. Entries
 * already in package.preload with the same names are replaced. Leaves the
 * stack as it was. */
void imm_preload(lua_State *L);

#ifdef __cplusplus
}
#endif

#endif
