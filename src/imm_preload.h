/*
 * imm_preload.h - the Lua modules embedded in libimm.a (internal).
 *
 * tools/embed_lua.py generates the table from lua/ at build time;
 * imm_preload() (include/imm.h) registers it in package.preload.
 */
#ifndef IMM_PRELOAD_H
#define IMM_PRELOAD_H

#include <stddef.h>

typedef struct imm_lua_module {
    const char *name;  /* "imm.client" */
    const char *chunk; /* "@lua/imm/client.lua", for error messages */
    const char *src;   /* the file's bytes, static, never freed */
    size_t len;
} imm_lua_module;

extern const imm_lua_module imm_lua_modules[];
extern const size_t imm_lua_nmodules;

#endif
