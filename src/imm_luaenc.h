/*
 * imm_luaenc.h - the JSON encoder's walk of Lua values (imm_luaenc.c), the
 * half of the encoder that includes Lua; imm_jsonenc.h is the other half
 * (number text and string escaping, no Lua). Registered by imm_core.c.
 */
#ifndef IMM_LUAENC_H
#define IMM_LUAENC_H

#include <lua.h>

/* Lua: imm.core.json_encode(value [, shape [, name]]) -> text | nil, message.
 * A bad shape or a name that is not a string raises (a programming error);
 * a value that does not fit its shape or cannot be written returns nil and
 * "path: message". The LDoc block in imm_luaenc.c says the rest. */
int imm_json_encode(lua_State *L);

/* Lua: imm.core.number_text(n) -> text | nil, message (NaN, infinities).
 * A non-number raises. */
int imm_number_text(lua_State *L);

#endif
