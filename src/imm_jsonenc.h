/*
 * imm_jsonenc.h - the Lua-free half of the JSON encoder: number text and
 * string escaping. The table walk that drives them (shapes, key order,
 * error paths) lives in imm_luaenc.c.
 *
 * Numbers are written as JavaScript's Number.prototype.toString writes them
 * (ECMAScript Number::toString), which is also what JSON.stringify and the
 * official Alibaba Cloud SDKs send: the shortest digit string that reads
 * back as the same double (the closest one when several are as short), laid
 * out as `0.7`, `1e+21`, `1e-7`, `1152921504606847000`. Strings are escaped
 * as JSON.stringify escapes them. Neither depends on the C locale: a host
 * that set LC_NUMERIC to a locale with a decimal comma gets the same text.
 *
 * Nothing here allocates except through the caller's imm_buf, and nothing
 * keeps state: every function is safe to call from any thread.
 */
#ifndef IMM_JSONENC_H
#define IMM_JSONENC_H

#include <stddef.h>

#include "imm_buf.h"

/* The deepest nesting of tables (arrays and objects) the encoder writes.
 * Each level costs about 210 bytes of C stack in the walk at -O2, 300 at
 * -O0 (measured with -fstack-usage): under 40 KB in all, so the walk fits a
 * 64 KB thread stack. A reference cycle ends here with an error. */
#define IMM_JSONENC_MAX_DEPTH 128

/* Bytes a number text can take, its NUL included ("-0.0000012345678901234567"
 * is the longest layout, 26 bytes). */
#define IMM_JSONENC_NUMBER_MAX 32

/*
 * Writes the JavaScript text of the double `x` into `out` (at least
 * IMM_JSONENC_NUMBER_MAX bytes) with a terminating NUL, and returns its
 * length. -0 is written "0", as JavaScript does. Returns -1, and writes an
 * empty string, when x is NaN or infinite (JSON has no text for them).
 */
int imm_json_number_text(double x, char *out);

/*
 * Writes the decimal text of the integer `v` (every value, LLONG_MIN
 * included) into `out` (at least IMM_JSONENC_NUMBER_MAX bytes) with a
 * terminating NUL, and returns its length.
 */
int imm_json_integer_text(long long v, char *out);

/* Results of imm_json_add_string. */
#define IMM_JSONENC_OK 0
#define IMM_JSONENC_ENOMEM (-1) /* the buffer could not grow */
#define IMM_JSONENC_EUTF8 (-2)  /* `s` is not valid UTF-8 */

/*
 * Appends `s` (n bytes) to `b` as a quoted JSON string, escaped as
 * JSON.stringify escapes: `"` and `\`, \b \f \n \r \t, other bytes below
 * 0x20 as \u00xx; `/`, DEL and every non-ASCII character are written as
 * they are. `s` must be valid UTF-8 (no overlong forms, no surrogates,
 * nothing above U+10FFFF); otherwise returns IMM_JSONENC_EUTF8 and stores
 * the 0-based offset of the first bad byte in *bad_at (when not NULL). On
 * any failure `b` may hold a partial string: the caller discards it. `b`
 * stays owned by the caller.
 */
int imm_json_add_string(imm_buf *b, const char *s, size_t n, size_t *bad_at);

/*
 * Returns 1 when `s` (n bytes) is valid UTF-8, else 0 with the 0-based
 * offset of the first bad byte in *bad_at (when not NULL).
 */
int imm_json_utf8_valid(const char *s, size_t n, size_t *bad_at);

#endif
