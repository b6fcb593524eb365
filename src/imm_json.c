/*
 * imm_json.c - single-pass JSON decoder: bytes straight to Lua tables.
 *
 * See imm_json.h for what it returns. How it stays fast and safe:
 *   - no DOM: the parser pushes each value as it reads it; it loops over an
 *     explicit stack of open arrays and objects instead of recursing, so
 *     its C stack use does not grow with the nesting;
 *   - strings without escapes are pushed straight from the input; escaped
 *     ones are unescaped into one growing scratch userdata (GC-owned, so an
 *     out-of-memory error raised by Lua cannot leak it);
 *   - object keys that repeat (the same field in every array element), and
 *     short string values, which repeat too (states, names), are kept in
 *     two small caches of stack slots and pushed with lua_pushvalue, which
 *     skips hashing and interning them again;
 *   - records repeat their keys in order: an object's key is first tried
 *     as the key at the same position in the last object at its depth,
 *     byte for byte, with no scan or hash;
 *   - the string scan tests 16 bytes a step with SSE2 where it is there;
 *   - tables are pre-sized from the size of the last table closed at the
 *     same depth, a good guess for arrays of records, and at most one
 *     over-allocation per table actually built;
 *   - depth is capped (IMM_JSON_MAX_DEPTH) and lua_checkstack is called
 *     per level, so deep nesting is an error, never a stack overflow.
 * The input is a Lua string or an imm_buf, so s[len] is always a NUL byte: the scanner
 * stops on NUL instead of checking bounds. A NUL anywhere else ends the
 * scan too, and is then an error: the bytes after it are never ignored.
 */
#include <locale.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "imm_json.h"

#if LUA_VERSION_NUM >= 504
#define json_newuserdata(L, n) lua_newuserdatauv(L, n, 0)
#else
#define json_newuserdata(L, n) lua_newuserdata(L, n)
#endif

#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

/* The largest magnitudes of an integer token that the runtime holds
 * exactly, positive and negative: lua_Integer's range on 5.3/5.4, 2^53 on
 * 5.1 and LuaJIT, whose numbers are doubles. */
#if LUA_VERSION_NUM >= 503
#define JSON_INTEGERS 1
#define INT_LIMIT_POS ((uint64_t)LUA_MAXINTEGER)
#define INT_LIMIT_NEG ((uint64_t)LUA_MAXINTEGER + 1u)
#else
#define JSON_INTEGERS 0
#define INT_LIMIT_POS (UINT64_C(1) << 53)
#define INT_LIMIT_NEG (UINT64_C(1) << 53)
#endif

#define KEY_CACHE 64  /* slots, 1 << KEY_BITS */
#define KEY_MAX 40    /* longer keys are pushed without the cache */
#define VAL_CACHE 64  /* slots for short string values, 1 << VAL_BITS */
#define VAL_MAX 24    /* longer values are rarely repeated: no cache */
#define HINT_DEPTH 32 /* depths that keep a size hint */
#define PRED_DEPTH 8    /* depths that predict their keys */
#define PRED_MEMBERS 16 /* member positions predicted per depth */

enum { J_OK = 0, J_NULL = 1, J_ERR = -1 };

#define KEY_BITS 6 /* log2(KEY_CACHE) */
#define VAL_BITS 6 /* log2(VAL_CACHE) */

struct jcache {
    const char *k; /* points into the input, alive for the whole call */
    size_t len;
};

/* The key last read at one member position of an object at one depth:
 * records of a list repeat their keys in order. */
struct jpred {
    const char *k;  /* as in the key cache slot when it was read */
    uint32_t len;   /* 0: none */
    uint32_t slot;  /* its key cache slot */
};

typedef struct jstate {
    lua_State *L;
    const char *s;      /* the whole input */
    const char *end;    /* s + its length: the terminating NUL */
    const char *p;      /* the cursor */
    int null_idx;       /* stack slot of the null sentinel */
    int array_mt_idx;   /* stack slot of the empty arrays' metatable, or 0 */
    int scratch_idx;    /* stack slot of the scratch userdata (or nil) */
    int cache_idx;      /* first of KEY_CACHE stack slots of cached keys */
    int vcache_idx;     /* first of VAL_CACHE stack slots of cached values */
    char *scratch;
    size_t scratch_cap;
    int depth;
    int big_strings;    /* integers beyond INT_LIMIT_* as their text */
    const char *err;    /* message of the first error */
    const char *errpos; /* where it happened */
    int err_found;      /* append what was found at errpos */
    struct jcache cache[KEY_CACHE], vcache[VAL_CACHE];
    int hint_arr[HINT_DEPTH];
    int hint_obj[HINT_DEPTH];
    struct jpred pred[PRED_DEPTH][PRED_MEMBERS];
    char kind[IMM_JSON_MAX_DEPTH + 1];  /* '[' or '{' per open level, 1-based */
    int count[IMM_JSON_MAX_DEPTH + 1];  /* members or elements so far */
} jstate;

static int fail(jstate *j, const char *pos, const char *msg, int found) {
    j->err = msg;
    j->errpos = pos;
    j->err_found = found;
    return J_ERR;
}

#define IS_DIGIT(c) ((unsigned)((c) - '0') < 10u)

static void skip_ws(jstate *j) {
    const char *p = j->p;
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
        p++;
    j->p = p;
}

/* Bytes that end the fast string scan: the quote, a backslash, NUL. */
static const unsigned char str_stop[256] = {[0] = 1, ['"'] = 1, ['\\'] = 1};

#define ONES UINT64_C(0x0101010101010101)
#define HAS_ZERO(w) (((w) - ONES) & ~(w) & (ONES * 0x80))

/* Finds the first quote, backslash or NUL from q on. Strings are most of
 * a response's bytes, so on little-endian machines eight bytes are tested
 * at a time while they lie within the string; the lowest flagged byte is
 * exact (the zero-byte test only errs on bytes above a true match). */
static const char *scan_string(const char *q, const char *end) {
#if defined(__SSE2__)
    /* sixteen bytes a step where SSE2 is there (every x86-64): the
     * compares flag each stop byte exactly */
    const __m128i quote = _mm_set1_epi8('"'), bslash = _mm_set1_epi8('\\'), nul = _mm_setzero_si128();
    while (end - q >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)q);
        unsigned m = (unsigned)_mm_movemask_epi8(_mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)), _mm_cmpeq_epi8(v, nul)));
        if (m)
            return q + __builtin_ctz(m);
        q += 16;
    }
#endif
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (end - q >= 8) {
        uint64_t w, m;
        memcpy(&w, q, 8);
        m = HAS_ZERO(w ^ (ONES * '"')) | HAS_ZERO(w ^ (ONES * '\\')) | HAS_ZERO(w);
        if (m)
            return q + (__builtin_ctzll(m) >> 3);
        q += 8;
    }
#else
    (void)end;
#endif
    while (!str_stop[(unsigned char)*q])
        q++;
    return q;
}

/* A slot for a non-empty short string: four of its bytes and its length,
 * mixed by a multiply. A plain sum of them put IMM's ProjectName and Phase
 * in one slot, so they evicted each other twice per binding. */
static unsigned slot_of(const char *k, size_t len, unsigned bits) {
    uint32_t h = (uint32_t)len * UINT32_C(0x9E3779B1);
    h ^= (uint32_t)(unsigned char)k[0] | (uint32_t)(unsigned char)k[len - 1] << 8 |
         (uint32_t)(unsigned char)k[len / 2] << 16 | (uint32_t)(unsigned char)k[(len - 1) / 4] << 24;
    h *= UINT32_C(0x85EBCA6B);
    return (unsigned)(h >> (32 - bits));
}

/* memcmp(a, b, n) == 0 for the short strings the caches hold, inline:
 * the library call cost more than the compare. Loads go through memcpy,
 * which compiles to plain unaligned loads, and never past a + n. */
static int same_bytes(const char *a, const char *b, size_t n) {
    uint64_t x, y;
    uint32_t u, v;
    if (n >= 8) {
        for (; n > 8; a += 8, b += 8, n -= 8) {
            memcpy(&x, a, 8);
            memcpy(&y, b, 8);
            if (x != y)
                return 0;
        }
        memcpy(&x, a + n - 8, 8); /* the last 8 bytes, overlapping */
        memcpy(&y, b + n - 8, 8);
        return x == y;
    }
    if (n >= 4) {
        memcpy(&u, a, 4);
        memcpy(&v, b, 4);
        if (u != v)
            return 0;
        memcpy(&u, a + n - 4, 4);
        memcpy(&v, b + n - 4, 4);
        return u == v;
    }
    for (; n > 0; n--)
        if (*a++ != *b++)
            return 0;
    return 1;
}

/* Pushes a string from a cache of stack slots when the same bytes were
 * seen before in this document: lua_pushvalue skips hashing and interning
 * them again. A slot is checked byte for byte, so a collision only costs a
 * miss, never another string. */
static void push_cached(jstate *j, const char *k, size_t len, int first_idx,
                        struct jcache *c, unsigned bits, unsigned *slot) {
    lua_State *L = j->L;
    unsigned h = slot_of(k, len, bits);
    *slot = h;
    if (c[h].len == len && same_bytes(c[h].k, k, len)) {
        lua_pushvalue(L, first_idx + (int)h);
        return;
    }
    lua_pushlstring(L, k, len);
    lua_pushvalue(L, -1);
    lua_replace(L, first_idx + (int)h);
    c[h].k = k;
    c[h].len = len;
}

/* Makes the scratch buffer hold at least `need` bytes. The old userdata
 * is dropped from its slot and collected later. */
static char *scratch(jstate *j, size_t need) {
    if (j->scratch_cap < need) {
        size_t cap = j->scratch_cap * 2;
        if (cap < need)
            cap = need;
        if (cap < 256)
            cap = 256;
        j->scratch = json_newuserdata(j->L, cap);
        j->scratch_cap = cap;
        lua_replace(j->L, j->scratch_idx);
    }
    return j->scratch;
}

static int hex4(const char *p) {
    int v = 0, i;
    for (i = 0; i < 4; i++) {
        int c = (unsigned char)p[i], d;
        if (IS_DIGIT(c))
            d = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            d = (c | 0x20) - 'a' + 10;
        else
            return -1; /* also stops at NUL, so never reads past the end */
        v = v * 16 + d;
    }
    return v;
}

static char *put_utf8(char *o, unsigned long cp) {
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | (cp >> 6));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | (cp >> 12));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *o++ = (char)(0xF0 | (cp >> 18));
        *o++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *o++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *o++ = (char)(0x80 | (cp & 0x3F));
    }
    return o;
}

/* The slow path for a string with escapes. `start` is just after the
 * opening quote. Kept out of line: the parser loop stays small. */
static NOINLINE int push_escaped(jstate *j, const char *start) {
    const char *q = start, *end;
    char *o, *o0;
    /* find the closing quote first: the output is never longer than the
     * raw text, so one scratch size fits */
    for (;;) {
        if (*q == '"')
            break;
        if (*q == '\0')
            return fail(j, q, "unterminated string", 0);
        if (*q == '\\') {
            if (q[1] == '\0')
                return fail(j, q, "unterminated string", 0);
            q += 2;
        } else {
            q++;
        }
    }
    end = q;
    o = o0 = scratch(j, (size_t)(end - start));
    for (q = start; q < end;) {
        const char *run = q;
        while (q < end && *q != '\\')
            q++;
        memcpy(o, run, (size_t)(q - run));
        o += q - run;
        if (q == end)
            break;
        switch (q[1]) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u': {
            long cp = hex4(q + 2);
            if (cp < 0)
                return fail(j, q, "invalid \\u escape", 0);
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                /* a high surrogate must be followed by an escaped low one */
                long lo = (q[6] == '\\' && q[7] == 'u') ? hex4(q + 8) : -1;
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return fail(j, q, "invalid \\u escape (lone surrogate)", 0);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                q += 6;
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
                return fail(j, q, "invalid \\u escape (lone surrogate)", 0);
            }
            o = put_utf8(o, (unsigned long)cp);
            q += 4;
            break;
        }
        default:
            return fail(j, q, "invalid escape", 0);
        }
        q += 2;
    }
    lua_pushlstring(j->L, o0, (size_t)(o - o0));
    j->p = end + 1;
    return J_OK;
}

/* A short key without escapes, through the key cache; remembered as the
 * key of its member position, for object_key's prediction. */
static void push_key(jstate *j, const char *start, size_t len) {
    unsigned slot;
    int d = j->depth, m = j->count[d];
    push_cached(j, start, len, j->cache_idx, j->cache, KEY_BITS, &slot);
    if (d < PRED_DEPTH && m < PRED_MEMBERS) {
        struct jpred *pr = &j->pred[d][m];
        pr->k = j->cache[slot].k;
        pr->len = (uint32_t)len;
        pr->slot = slot;
    }
}

static int push_string(jstate *j, int is_key) {
    const char *start = j->p + 1, *q = scan_string(start, j->end);
    unsigned slot;
    if (*q == '"') {
        size_t len = (size_t)(q - start);
        j->p = q + 1;
        if (len == 0 || len > (is_key ? KEY_MAX : VAL_MAX))
            lua_pushlstring(j->L, start, len);
        else if (is_key)
            push_key(j, start, len);
        else
            /* the same short values repeat across records too: states,
             * phases, names */
            push_cached(j, start, len, j->vcache_idx, j->vcache, VAL_BITS, &slot);
        return J_OK;
    }
    if (*q == '\0')
        return fail(j, q, "unterminated string", 0);
    return push_escaped(j, start);
}

/* The C locale, made once: strtod reads the decimal point of the thread's
 * locale, and a host may have set LC_NUMERIC to one with a comma. Unlike
 * localeconv(), newlocale and uselocale are thread-safe. glibc returns its
 * static C locale for LC_ALL_MASK "C"; elsewhere it is one object kept for
 * the process's life, so it is never freed. */
static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void make_c_locale(void) {
    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);
}

/* strtod stopped before `end`: the locale's decimal point is not '.'.
 * Converts again with this thread switched to the C locale for the call. */
static NOINLINE int number_in_c_locale(const char *start, const char *end, double *out) {
    locale_t old;
    char *endp;
    pthread_once(&c_locale_once, make_c_locale);
    if (c_locale == (locale_t)0 || (old = uselocale(c_locale)) == (locale_t)0)
        return 0;
    *out = strtod(start, &endp);
    uselocale(old);
    return endp == end;
}

/* The number syntax is lua-cjson 2.1.0's, which hands numbers to strtod
 * after refusing a leading '+', leading zeros, hex, inf and nan: so "1.",
 * "-.5" and "1.e5" are accepted. An integer token (no fraction, no
 * exponent) within INT_LIMIT_* is exact: a Lua integer on 5.3/5.4, where
 * lua-cjson gives a float; "-0" stays the float -0.0, as in lua-cjson, since
 * an integer has no sign for zero. Beyond the limits it is the nearest
 * float, or its own text with big_strings. Everything else is a float. */
static int push_number(jstate *j) {
    const char *start = j->p, *q = start, *ds;
    uint64_t m = 0;
    size_t intd, fracd = 0;
    int neg = 0, over = 0, is_int = 1;
    double v;
    char *endp;
    if (*q == '-') {
        neg = 1;
        q++;
    }
    if (*q == '0' && ((q[1] | 0x20) == 'x' || IS_DIGIT(q[1])))
        return fail(j, start, "invalid number", 0);
    ds = q;
    while (IS_DIGIT(*q)) {
        unsigned d = (unsigned)(*q - '0');
        /* the digits themselves, never through a double; once over, m is
         * no longer used */
        if (m > (UINT64_MAX - d) / 10)
            over = 1;
        else
            m = m * 10 + d;
        q++;
    }
    intd = (size_t)(q - ds);
    if (*q == '.') {
        const char *fs = ++q;
        while (IS_DIGIT(*q))
            q++;
        fracd = (size_t)(q - fs);
        is_int = 0;
    }
    if (intd + fracd == 0)
        return fail(j, start, "invalid number", 0);
    if ((*q | 0x20) == 'e') {
        /* an exponent counts only when complete, as strtod reads it */
        const char *e = q + 1;
        if (*e == '+' || *e == '-')
            e++;
        if (IS_DIGIT(*e)) {
            while (IS_DIGIT(*e))
                e++;
            q = e;
            is_int = 0;
        }
    }
    j->p = q;
    if (is_int) {
        if (neg && m == 0 && !over) {
            lua_pushnumber(j->L, (lua_Number)-0.0);
            return J_OK;
        }
        if (!over && m <= (neg ? INT_LIMIT_NEG : INT_LIMIT_POS)) {
#if JSON_INTEGERS
            /* -(m - 1) - 1 stays in range for m = 2^63 */
            lua_pushinteger(j->L, neg ? -(lua_Integer)(m - 1) - 1 : (lua_Integer)m);
#else
            v = (double)m; /* exact: m <= 2^53 */
            lua_pushnumber(j->L, (lua_Number)(neg ? -v : v));
#endif
            return J_OK;
        }
        if (j->big_strings) {
            lua_pushlstring(j->L, start, (size_t)(q - start));
            return J_OK;
        }
    }
    v = strtod(start, &endp);
    if (endp != q && !number_in_c_locale(start, q, &v))
        return fail(j, start, "invalid number", 0);
    lua_pushnumber(j->L, (lua_Number)v);
    return J_OK;
}

/* Enters one level of nesting, or fails at the limit. */
static int enter(jstate *j) {
    if (j->depth >= IMM_JSON_MAX_DEPTH)
        return fail(j, j->p, "too many nested arrays and objects", 0);
    if (!lua_checkstack(j->L, 4))
        return fail(j, j->p, "out of Lua stack", 0);
    j->depth++;
    return J_OK;
}

static int literal(jstate *j, const char *word, size_t len) {
    /* strncmp stops at the terminating NUL, so it never reads past it */
    if (strncmp(j->p, word, len) != 0)
        return fail(j, j->p, "expected a value", 1);
    j->p += len;
    return J_OK;
}

/* An object member's key and the ':' after it; the key is pushed. */
static int object_key(jstate *j) {
    int d = j->depth, m = j->count[d];
    if (d < PRED_DEPTH && m < PRED_MEMBERS) {
        /* the key at this position in the last object at this depth,
         * still in its cache slot: if the same bytes and a closing quote
         * follow, it is that string, with no scan, hash or compare of the
         * cache (its bytes hold no quote, backslash or NUL) */
        const struct jpred *pr = &j->pred[d][m];
        size_t len = pr->len;
        if (len != 0 && (size_t)(j->end - j->p) > len + 1 && j->p[len + 1] == '"' && *j->p == '"' &&
            j->cache[pr->slot].k == pr->k && j->cache[pr->slot].len == len &&
            same_bytes(j->p + 1, pr->k, len)) {
            lua_pushvalue(j->L, j->cache_idx + (int)pr->slot);
            j->p += len + 2;
            goto colon;
        }
    }
    if (*j->p != '"')
        return fail(j, j->p, "expected a string key", 1);
    if (push_string(j, 1) != J_OK)
        return J_ERR;
colon:
    skip_ws(j);
    if (*j->p != ':')
        return fail(j, j->p, "expected ':'", 1);
    j->p++;
    skip_ws(j);
    return J_OK;
}

/* Stores the value just parsed (on top of the stack; nothing for J_NULL)
 * in the open array or object below it. */
static void store(jstate *j, int r) {
    lua_State *L = j->L;
    int d = j->depth;
    if (j->kind[d] == '[') {
        if (r == J_NULL)
            lua_pushvalue(L, j->null_idx);
        lua_rawseti(L, -2, ++j->count[d]);
        return;
    }
    j->count[d]++;
    if (r == J_NULL) {
        /* a null member is absent, even when the key came before */
        lua_pushvalue(L, -1);
        lua_rawget(L, -3);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 2);
        } else {
            lua_pop(L, 1);
            lua_pushnil(L);
            lua_rawset(L, -3);
        }
    } else {
        lua_rawset(L, -3);
    }
}

/* Closes the innermost array or object: its table is then a value. */
static void leave(jstate *j) {
    int d = j->depth;
    if (j->kind[d] == '[' && j->count[d] == 0 && j->array_mt_idx != 0) {
        /* marks [] apart from {}, which are both an empty table */
        lua_pushvalue(j->L, j->array_mt_idx);
        lua_setmetatable(j->L, -2);
    }
    if (d < HINT_DEPTH) {
        if (j->kind[d] == '[')
            j->hint_arr[d] = j->count[d];
        else
            j->hint_obj[d] = j->count[d];
    }
    j->depth--;
}

/* Parses one whole document from the cursor: pushes its value, or returns
 * J_NULL (nothing pushed) for null. Iterative, not recursive: the open
 * arrays and objects are kept in j->kind and j->count, so the C stack in
 * use stays the same at any depth (embedders run Lua on threads with
 * small stacks; 64 KB is checked by make host-check). */
static int parse_document(jstate *j) {
    lua_State *L = j->L;
    int r, d;
    for (;;) {
        /* one value at the cursor */
        switch (*j->p) {
        case '{':
        case '[':
            if (enter(j) != J_OK)
                return J_ERR;
            d = j->depth;
            j->kind[d] = *j->p;
            j->count[d] = 0;
            if (*j->p == '[')
                lua_createtable(L, d < HINT_DEPTH ? j->hint_arr[d] : 0, 0);
            else
                lua_createtable(L, 0, d < HINT_DEPTH ? j->hint_obj[d] : 0);
            j->p++;
            skip_ws(j);
            if (*j->p == (j->kind[d] == '[' ? ']' : '}')) {
                j->p++;
                leave(j);
                r = J_OK;
                break;
            }
            if (j->kind[d] == '{' && object_key(j) != J_OK)
                return J_ERR;
            continue; /* the first member's value */
        case '"':
            r = push_string(j, 0);
            break;
        case 't':
            r = literal(j, "true", 4);
            if (r == J_OK)
                lua_pushboolean(L, 1);
            break;
        case 'f':
            r = literal(j, "false", 5);
            if (r == J_OK)
                lua_pushboolean(L, 0);
            break;
        case 'n':
            r = literal(j, "null", 4) == J_OK ? J_NULL : J_ERR;
            break;
        case '-': case '0': case '1': case '2': case '3': case '4':
        case '5': case '6': case '7': case '8': case '9':
            r = push_number(j);
            break;
        default:
            return fail(j, j->p, "expected a value", 1);
        }
        if (r == J_ERR)
            return J_ERR;
        /* a value is complete: store it, and close every container that
         * ends after it */
        for (;;) {
            if (j->depth == 0)
                return r;
            d = j->depth;
            store(j, r);
            skip_ws(j);
            if (*j->p == ',') {
                j->p++;
                skip_ws(j);
                if (j->kind[d] == '{' && object_key(j) != J_OK)
                    return J_ERR;
                break; /* the next member's value */
            }
            if (*j->p != (j->kind[d] == '[' ? ']' : '}'))
                return fail(j, j->p, j->kind[d] == '[' ? "expected ',' or ']'" : "expected ',' or '}'", 1);
            j->p++;
            leave(j);
            r = J_OK;
        }
    }
}

/* Pushes nil and "MESSAGE [but found X] at character N". */
static int push_error(lua_State *L, const jstate *j) {
    char found[32] = "", msg[160];
    unsigned char c = (unsigned char)*j->errpos;
    if (j->err_found) {
        if (c == '\0' && j->errpos == j->end)
            snprintf(found, sizeof found, " but found the end");
        else if (c == '\0')
            snprintf(found, sizeof found, " but found a NUL byte");
        else if (c >= 0x20 && c < 0x7F)
            snprintf(found, sizeof found, " but found '%c'", c);
        else
            snprintf(found, sizeof found, " but found byte 0x%02X", c);
    }
    snprintf(msg, sizeof msg, "%s%s at character %lu", j->err, found,
             (unsigned long)(j->errpos - j->s + 1));
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* The decoder proper. The arguments are at slots b (null), b + 1 (array_mt)
 * and b + 2 (big_integers), the last ones on the stack; the slots above
 * become the scratch and the caches. s[len] must be a NUL byte. */
static int decode_at(lua_State *L, const char *s, size_t len, int b, int *is_object) {
    static const char *const big_modes[] = {"float", "string", NULL};
    jstate j;
    int r, big;
    lua_settop(L, b + 2);
    if (!lua_isnil(L, b + 1))
        luaL_checktype(L, b + 1, LUA_TTABLE);
    if (!lua_isnil(L, b + 2))
        luaL_checktype(L, b + 2, LUA_TSTRING); /* LuaJIT's checkoption takes a boolean as the default */
    big = luaL_checkoption(L, b + 2, "float", big_modes);
    lua_settop(L, b + 1);
    memset(&j, 0, sizeof j);
    j.big_strings = big == 1;
    j.L = L;
    j.s = j.p = s;
    j.end = s + len;
    j.null_idx = b;
    j.array_mt_idx = lua_istable(L, b + 1) ? b + 1 : 0;
    j.scratch_idx = b + 2;
    j.cache_idx = b + 3;
    j.vcache_idx = b + 3 + KEY_CACHE;
    if (!lua_checkstack(L, KEY_CACHE + VAL_CACHE + 8)) {
        fail(&j, s, "out of Lua stack", 0);
        return push_error(L, &j);
    }
    lua_settop(L, b + 2 + KEY_CACHE + VAL_CACHE); /* scratch and cache slots, all nil */
    /* lua-cjson's test for UTF-16/32: a NUL in the first two bytes */
    if (len >= 2 && (s[0] == '\0' || s[1] == '\0')) {
        fail(&j, s, "UTF-16 and UTF-32 are not supported", 0);
        return push_error(L, &j);
    }
    skip_ws(&j);
    *is_object = *j.p == '{';
    r = parse_document(&j);
    if (r != J_ERR) {
        skip_ws(&j);
        /* a NUL before the real end is not the end: bytes after it would
         * be ignored ({...}\0,"NextToken":...), so it is refused */
        if (*j.p != '\0' || j.p != j.end)
            r = fail(&j, j.p, "expected the end", 1);
    }
    if (r == J_ERR) {
        lua_settop(L, b + 2 + KEY_CACHE + VAL_CACHE);
        return push_error(L, &j);
    }
    if (r == J_NULL)
        lua_pushvalue(L, j.null_idx);
    return 1;
}

int imm_json_decode(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    int is_object;
    return decode_at(L, s, len, 2, &is_object);
}

int imm_json_decode_bytes(lua_State *L, const char *s, size_t len, int b, int *is_object) {
    return decode_at(L, s, len, b, is_object);
}
