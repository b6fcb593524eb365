/*
 * imm_json.h - a single-pass JSON decoder that builds Lua tables directly.
 *
 * Like imm_core.c, this file's implementation includes Lua: it exists to
 * build Lua values, so it cannot live below the binding layer. It allocates
 * nothing with malloc; every scratch buffer is a GC-owned userdata, so a Lua
 * error raised while it runs (out of memory) leaks nothing.
 *
 * It decodes what imm.decode's lua-cjson decoder returns, but for numbers:
 *   - objects and arrays become tables; a member whose value is null is
 *     absent, a null array element (or a null document) is the sentinel;
 *   - an integer token (no fraction, no exponent) is exact while the runtime
 *     can hold it: a Lua integer on 5.3/5.4 over lua_Integer's range
 *     (lua-cjson 2.1.0 gives a float), a float up to 2^53 in magnitude on
 *     5.1 and LuaJIT; beyond that the nearest float, as lua-cjson, or with
 *     big_integers "string" the token's own text. "-0" is the float -0.0,
 *     as in lua-cjson. Every other number is a float (lua_Number); the
 *     syntax is cjson's (strtod-like: "1." and "-.5" are accepted, leading
 *     zeros, hex, inf and nan are not), read in the C locale whatever the
 *     thread's LC_NUMERIC (uselocale, not the thread-unsafe localeconv);
 *   - strings keep raw bytes as they are (no UTF-8 check); \uXXXX escapes
 *     become UTF-8, a lone surrogate is an error;
 *   - nesting deeper than 1000 arrays/objects is an error; the parser is
 *     iterative, so that depth needs no more C stack than depth 1 (it runs
 *     on a 64 KB thread stack);
 *   - anything but whitespace after the value is an error, a NUL byte
 *     included: unlike lua-cjson, which reads a C string and stops at the
 *     first NUL, no byte of the input is ignored (imm.decode's cjson
 *     decoder refuses a NUL too); a NUL in the first two bytes is refused
 *     as UTF-16/32, as cjson does.
 */
#ifndef IMM_JSON_H
#define IMM_JSON_H

#include <lua.h>

/* The deepest nesting of arrays and objects accepted, as lua-cjson's. */
#define IMM_JSON_MAX_DEPTH 1000

/*
 * Lua: imm.core.json_decode(text, null [, array_mt [, big_integers]])
 *        -> value | nil, message
 *
 * `text` must be a string (raises otherwise: a programming error). `null`
 * is the value stored for a null array element or a null document
 * (imm.decode passes cjson.null). `array_mt`, a table, becomes the
 * metatable of every empty array, which is otherwise the same empty table
 * as an empty object (imm.decode.keep_arrays; raises if it is not a table
 * or nil). `big_integers` is "float" (the default, also for nil) or
 * "string": integers beyond what the runtime holds exactly come back as
 * their decimal text (raises for anything else). Invalid JSON returns nil
 * and a message naming the byte position (1-based); it never raises for
 * bad input.
 */
int imm_json_decode(lua_State *L);

/*
 * The same decoder over bytes the caller owns (the HTTP handle's body, with
 * no Lua string of it made): `s[len]` must be a NUL byte, and the bytes must
 * stay where they are until it returns; the caller keeps whatever owns them
 * reachable from the stack. The arguments of imm_json_decode, from `null`
 * on, are at stack slots b, b + 1 and b + 2, the last on the stack. Pushes
 * what imm_json_decode returns and returns the count; sets *is_object to 1
 * when the document's first byte after white space is '{'.
 */
int imm_json_decode_bytes(lua_State *L, const char *s, size_t len, int b, int *is_object);

#endif
