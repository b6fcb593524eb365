/*
 * imm_luaenc.c - the JSON encoder's walk of Lua values: imm.core.json_encode
 * and imm.core.number_text (see imm_luaenc.h). It reads tables raw, checks
 * them against a shape, and names the path of a value it cannot write;
 * the text itself (numbers, string escapes) comes from imm_jsonenc.c, which
 * has no Lua.
 *
 * Memory: the output is an imm_buf owned by a GC'd userdata, freed before
 * a result or nil, message is returned, and by __gc when a Lua memory error
 * is raised mid-walk. Every pointer into a Lua string is to one kept alive
 * on the stack: the walk allocates, so the collector runs during it.
 */
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "imm_buf.h"
#include "imm_jsonenc.h"
#include "imm_luaenc.h"

/* compat: a few macros for 5.1/LuaJIT, as in imm_core.c */
#if LUA_VERSION_NUM < 502
#define compat_rawlen(L, i) lua_objlen(L, i)
#else
#define compat_rawlen(L, i) lua_rawlen(L, i)
#endif
#if LUA_VERSION_NUM >= 504
#define compat_newuserdata(L, n) lua_newuserdatauv(L, n, 0)
#else
#define compat_newuserdata(L, n) lua_newuserdata(L, n)
#endif

#define OUT_MT "imm.core.jsonbuf"

static int out_gc(lua_State *L) {
    imm_buf_free(luaL_checkudata(L, 1, OUT_MT));
    return 0;
}

/* An empty output buffer in a userdata whose __gc frees it, so a memory
 * error raised mid-walk cannot leak it. Left on the stack. */
static imm_buf *new_out(lua_State *L) {
    imm_buf *b = compat_newuserdata(L, sizeof *b);
    imm_buf_init(b);
    if (luaL_newmetatable(L, OUT_MT)) {
        lua_pushcfunction(L, out_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return b;
}

/* What a shape asks for (see l_json_encode). */
enum { SH_ANY, SH_STRING, SH_NUMBER, SH_BOOLEAN, SH_ARRAY, SH_MAP, SH_FIELDS };

/* One step of the path to the value being encoded, for error messages. */
typedef struct enc_step {
    const char *key; /* NULL: an array index */
    size_t klen;
    lua_Integer index;
} enc_step;

typedef struct enc_ctx {
    lua_State *L;
    imm_buf *out;
    int errslot; /* stack slot that receives the error message */
    int depth;   /* tables open around the current value */
    const char *name;
    size_t namelen;
    enc_step path[IMM_JSONENC_MAX_DEPTH + 1];
} enc_ctx;

/* An object key: its bytes, and its slot in the table that keeps it alive
 * (see enc_object). */
typedef struct enc_key {
    const char *s;
    size_t len;
    int slot;
} enc_key;

static int is_ident(const char *s, size_t n) {
    size_t i;
    if (n == 0 || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for (i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'))
            return 0;
    }
    return 1;
}

#define PATH_ENDS 8

/* Adds a key to a message, quoted: at most 64 bytes, and anything but
 * printable ASCII as \xHH, so a message stays one readable line. */
static void add_quoted(luaL_Buffer *b, const char *s, size_t len) {
    size_t j, n = len > 64 ? 64 : len;
    char tmp[8];
    luaL_addchar(b, '"');
    for (j = 0; j < n; j++) {
        unsigned char ch = (unsigned char)s[j];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') {
            luaL_addchar(b, (char)ch);
        } else {
            snprintf(tmp, sizeof tmp, "\\x%02X", ch);
            luaL_addstring(b, tmp);
        }
    }
    luaL_addstring(b, n < len ? "...\"" : "\"");
}

/* Pushes the path of the value at depth `depth` as Lua would index it:
 * name.Key[2]["odd key"] (keys quoted by add_quoted). */
static void push_path(enc_ctx *c, int depth) {
    lua_State *L = c->L;
    luaL_Buffer b;
    int i, empty = c->namelen == 0; /* nothing written yet: no leading dot */
    luaL_buffinit(L, &b);
    luaL_addlstring(&b, c->name, c->namelen);
    for (i = 1; i <= depth; i++) {
        const enc_step *st = &c->path[i];
        char tmp[IMM_JSONENC_NUMBER_MAX + 2];
        /* a deep path (a cycle) keeps its two ends */
        if (depth > 2 * PATH_ENDS && i > PATH_ENDS && i <= depth - PATH_ENDS) {
            if (i == PATH_ENDS + 1)
                luaL_addstring(&b, "...");
            continue;
        }
        if (st->key == NULL) {
            tmp[0] = '[';
            imm_json_integer_text((long long)st->index, tmp + 1);
            luaL_addstring(&b, tmp);
            luaL_addchar(&b, ']');
        } else if (st->klen <= 64 && is_ident(st->key, st->klen)) {
            if (!empty)
                luaL_addchar(&b, '.');
            luaL_addlstring(&b, st->key, st->klen);
        } else {
            luaL_addchar(&b, '[');
            add_quoted(&b, st->key, st->klen);
            luaL_addchar(&b, ']');
        }
        empty = 0;
    }
    luaL_pushresult(&b);
}

/* Stores "path: message" (or just the message at an unnamed root) as the
 * error and returns -1, which every caller passes up unchanged. */
static int enc_fail(enc_ctx *c, const char *fmt, ...) {
    lua_State *L = c->L;
    va_list ap;
    luaL_checkstack(L, 10, "imm.core.json_encode");
    push_path(c, c->depth);
    if (compat_rawlen(L, -1) == 0) {
        lua_pop(L, 1);
        va_start(ap, fmt);
        lua_pushvfstring(L, fmt, ap);
        va_end(ap);
    } else {
        lua_pushliteral(L, ": ");
        va_start(ap, fmt);
        lua_pushvfstring(L, fmt, ap);
        va_end(ap);
        lua_concat(L, 3);
    }
    lua_replace(L, c->errslot);
    return -1;
}

static const char *enc_typename(lua_State *L, int idx) {
    if (lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == NULL)
        return "null";
    return luaL_typename(L, idx);
}

static int enc_nomem(enc_ctx *c) {
    return enc_fail(c, "out of memory");
}

static const char *non_finite_name(lua_Number x) {
    return x != x ? "NaN" : x > 0 ? "inf" : "-inf";
}

/* Appends the number at idx: integers (5.3+) in full, floats as JavaScript
 * writes them. */
static int enc_number(enc_ctx *c, int idx) {
    char tmp[IMM_JSONENC_NUMBER_MAX];
    int n;
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(c->L, idx))
        n = imm_json_integer_text((long long)lua_tointeger(c->L, idx), tmp);
    else
#endif
        n = imm_json_number_text((double)lua_tonumber(c->L, idx), tmp);
    if (n < 0)
        return enc_fail(c, "expected a finite number, got %s", non_finite_name(lua_tonumber(c->L, idx)));
    return imm_buf_add(c->out, tmp, (size_t)n) == 0 ? 0 : enc_nomem(c);
}

static int enc_string(enc_ctx *c, const char *s, size_t n, int is_key) {
    size_t bad = 0;
    int rc = imm_json_add_string(c->out, s, n, &bad);
    if (rc == IMM_JSONENC_EUTF8) {
        char at[IMM_JSONENC_NUMBER_MAX];
        imm_json_integer_text((long long)(bad + 1), at);
        return enc_fail(c, "invalid UTF-8 in %s at byte %s", is_key ? "a key" : "a string", at);
    }
    return rc == IMM_JSONENC_OK ? 0 : enc_nomem(c);
}

/* Writes a table key (number, boolean, ...) into a message: `key 3`. */
static const char *push_key_desc(lua_State *L, int idx) {
    char tmp[IMM_JSONENC_NUMBER_MAX];
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        luaL_Buffer b;
        size_t n;
        const char *k = lua_tolstring(L, idx, &n);
        luaL_buffinit(L, &b);
        luaL_addstring(&b, "key ");
        add_quoted(&b, k, n);
        luaL_pushresult(&b);
        return lua_tostring(L, -1);
    }
    case LUA_TNUMBER:
#if LUA_VERSION_NUM >= 503
        if (lua_isinteger(L, idx))
            imm_json_integer_text((long long)lua_tointeger(L, idx), tmp);
        else
#endif
        if (imm_json_number_text((double)lua_tonumber(L, idx), tmp) < 0)
            snprintf(tmp, sizeof tmp, "%s", non_finite_name(lua_tonumber(L, idx)));
        return lua_pushfstring(L, "key %s", tmp);
    case LUA_TBOOLEAN:
        return lua_pushfstring(L, "key %s", lua_toboolean(L, idx) ? "true" : "false");
    default:
        return lua_pushfstring(L, "a %s key", luaL_typename(L, idx));
    }
}

/* How the keys of the table at t look. */
typedef struct key_census {
    size_t count;   /* all keys */
    size_t nstr;    /* string keys */
    size_t nseq;    /* integer keys >= 1 */
    lua_Number max; /* the largest of those */
} key_census;

/* Counts the keys of table t. Leaves on the stack one key that keeps the
 * table from being an array (or nil): the first string key when all keys
 * are strings or positive integers, else the first key that is neither,
 * else the largest integer key (a hole). */
static void census(lua_State *L, int t, key_census *k) {
    int odd = 0, str = 0;
    memset(k, 0, sizeof *k);
    lua_pushnil(L); /* the slot for the reported key */
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        lua_pop(L, 1);
        k->count++;
        if (lua_type(L, -1) == LUA_TSTRING) {
            k->nstr++;
            if (!str && !odd) {
                str = 1;
                lua_pushvalue(L, -1);
                lua_replace(L, -3);
            }
        } else if (lua_type(L, -1) == LUA_TNUMBER) {
            lua_Number d = lua_tonumber(L, -1);
            if (d >= 1 && d == floor(d) && d <= 9007199254740992.0) {
                k->nseq++;
                if (d > k->max)
                    k->max = d;
            } else if (!odd) {
                odd = 1;
                lua_pushvalue(L, -1);
                lua_replace(L, -3);
            }
        } else if (!odd) {
            odd = 1;
            lua_pushvalue(L, -1);
            lua_replace(L, -3);
        }
    }
    if (!odd && !str && k->count > 0 && k->max != (lua_Number)k->nseq) {
        lua_pushnumber(L, k->max);
#if LUA_VERSION_NUM >= 503
        lua_pop(L, 1);
        lua_pushinteger(L, (lua_Integer)k->max);
#endif
        lua_replace(L, -2);
    }
}

#define IS_ARRAY(k) ((k).count > 0 && (k).nstr == 0 && (k).nseq == (k).count && (k).max == (lua_Number)(k).count)

static int enc_value(enc_ctx *c, int v, int s);

static int enc_array(enc_ctx *c, int t, int elem, size_t n) {
    lua_State *L = c->L;
    size_t i;
    int rc = 0;
    if (imm_buf_addc(c->out, '[') != 0)
        return enc_nomem(c);
    for (i = 1; i <= n && rc == 0; i++) {
        if (i > 1 && imm_buf_addc(c->out, ',') != 0)
            return enc_nomem(c);
        lua_rawgeti(L, t, (int)i);
        c->path[c->depth].key = NULL;
        c->path[c->depth].index = (lua_Integer)i;
        rc = enc_value(c, lua_gettop(L), elem);
        lua_pop(L, 1);
    }
    if (rc == 0 && imm_buf_addc(c->out, ']') != 0)
        return enc_nomem(c);
    return rc;
}

static int cmp_keys(const void *a, const void *b) {
    const enc_key *x = a, *y = b;
    int r = memcmp(x->s, y->s, x->len < y->len ? x->len : y->len);
    if (r != 0)
        return r;
    return x->len < y->len ? -1 : x->len > y->len;
}

/* An object, keys in byte order. `elem`: the shape of every value (a map),
 * `fields`: a table of shapes by key (a model), or neither (0). */
static int enc_object(enc_ctx *c, int t, int elem, int fields, size_t count) {
    lua_State *L = c->L;
    enc_key *keys;
    size_t i = 0, n;
    int rc = 0, anchor, first = 1;
    if (imm_buf_addc(c->out, '{') != 0)
        return enc_nomem(c);
    if (count == 0)
        return imm_buf_addc(c->out, '}') == 0 ? 0 : enc_nomem(c);
    /* The keys are anchored in a table of our own while their pointers are
     * in use: the walk allocates, so the collector runs, and an entry that
     * goes meanwhile (a weak value collected, a finalizer that edits the
     * table) would free a key still to be written. enc_table checked that
     * count fits an int. */
    lua_createtable(L, (int)count, 0);
    anchor = lua_gettop(L);
    /* GC-owned, so an error raised below cannot leak it */
    keys = compat_newuserdata(L, count * sizeof *keys);
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        lua_pop(L, 1);
        /* census found `count` string keys; the bounds hold even if a __gc
         * finalizer run by an allocation above has changed the table. The
         * anchor's array part is preallocated: nothing here allocates. */
        if (i < count && lua_type(L, -1) == LUA_TSTRING) {
            lua_pushvalue(L, -1);
            lua_rawseti(L, anchor, (int)i + 1);
            keys[i].s = lua_tolstring(L, -1, &keys[i].len);
            keys[i].slot = (int)i + 1;
            i++;
        }
    }
    n = i;
    qsort(keys, n, sizeof *keys, cmp_keys);
    for (i = 0; i < n && rc == 0; i++) {
        int sub = 0;
        lua_rawgeti(L, anchor, keys[i].slot);
        lua_rawget(L, t);
        if (lua_isnil(L, -1)) { /* gone since the walk began: Lua no longer sees it */
            lua_pop(L, 1);
            continue;
        }
        if (!first && imm_buf_addc(c->out, ',') != 0)
            return enc_nomem(c);
        first = 0;
        c->path[c->depth].key = keys[i].s;
        c->path[c->depth].klen = keys[i].len;
        if (enc_string(c, keys[i].s, keys[i].len, 1) != 0)
            return -1;
        if (imm_buf_addc(c->out, ':') != 0)
            return enc_nomem(c);
        if (fields != 0) {
            lua_rawgeti(L, anchor, keys[i].slot);
            lua_rawget(L, fields);
            if (!lua_isnil(L, -1))
                sub = lua_gettop(L);
        } else {
            lua_pushnil(L); /* keeps the value one below the top */
            sub = elem;
        }
        rc = enc_value(c, lua_gettop(L) - 1, sub);
        lua_pop(L, 2);
    }
    lua_pop(L, 2); /* the key array and the anchor */
    if (rc == 0 && imm_buf_addc(c->out, '}') != 0)
        return enc_nomem(c);
    return rc;
}

/* Raises: a shape is the caller's data, so a bad one is a programming error. */
static int bad_shape(enc_ctx *c, int s) {
    lua_State *L = c->L;
    push_path(c, c->depth);
    return luaL_error(L, "imm.core.json_encode: bad shape (%s%s%s) for %s", lua_type(L, s) == LUA_TSTRING ? "\"" : "",
                      lua_type(L, s) == LUA_TSTRING ? lua_tostring(L, s) : luaL_typename(L, s),
                      lua_type(L, s) == LUA_TSTRING ? "\"" : "",
                      compat_rawlen(L, -1) > 0 ? lua_tostring(L, -1) : "the value");
}

/* The kind of shape s (0: none); for a table shape, pushes its part
 * (array's or map's element shape, or the fields table) and stores its
 * slot, or 0 when that part is nil, in *part. */
static int shape_kind(enc_ctx *c, int s, int *part) {
    lua_State *L = c->L;
    static const char *const kinds[] = {"array", "map", "fields"};
    int i;
    *part = 0;
    if (s == 0)
        return SH_ANY;
    if (lua_type(L, s) == LUA_TSTRING) {
        const char *k = lua_tostring(L, s);
        if (strcmp(k, "any") == 0)
            return SH_ANY;
        if (strcmp(k, "string") == 0)
            return SH_STRING;
        if (strcmp(k, "number") == 0)
            return SH_NUMBER;
        if (strcmp(k, "boolean") == 0)
            return SH_BOOLEAN;
        return bad_shape(c, s);
    }
    if (lua_type(L, s) != LUA_TTABLE)
        return bad_shape(c, s);
    for (i = 0; i < 3; i++) {
        lua_pushstring(L, kinds[i]);
        lua_rawget(L, s);
        if (!lua_isnil(L, -1)) {
            if (i == 2 && lua_type(L, -1) != LUA_TTABLE)
                return bad_shape(c, s);
            *part = lua_gettop(L);
            return SH_ARRAY + i;
        }
        lua_pop(L, 1);
    }
    return bad_shape(c, s);
}

static int enc_table(enc_ctx *c, int v, int kind, int part) {
    lua_State *L = c->L;
    key_census k;
    int rc;
    if (c->depth >= IMM_JSONENC_MAX_DEPTH)
        return enc_fail(c, "nested deeper than %d tables (a reference cycle?)", IMM_JSONENC_MAX_DEPTH);
    luaL_checkstack(L, 8, "imm.core.json_encode");
    census(L, v, &k);
    if (k.count > (size_t)INT_MAX) /* lua_rawgeti takes an int before 5.3 */
        return enc_fail(c, "a table with more than %d keys", INT_MAX);
    c->depth++;
    if (kind == SH_ARRAY) {
        if (k.count > 0 && !IS_ARRAY(k)) {
            c->depth--;
            push_key_desc(L, -1);
            return enc_fail(c, "expected an array (keys 1..n), got a table with %s", lua_tostring(L, -1));
        }
        rc = enc_array(c, v, part, k.count);
    } else if (kind == SH_MAP || kind == SH_FIELDS) {
        if (k.nstr != k.count) {
            c->depth--;
            lua_pop(L, 1);
            /* report the first key that is not a string */
            lua_pushnil(L);
            while (lua_next(L, v) != 0 && (lua_pop(L, 1), lua_type(L, -1) == LUA_TSTRING)) {
            }
            push_key_desc(L, -1);
            return enc_fail(c, "expected an object (string keys), got a table with %s", lua_tostring(L, -1));
        }
        rc = enc_object(c, v, kind == SH_MAP ? part : 0, kind == SH_FIELDS ? part : 0, k.count);
    } else if (IS_ARRAY(k)) {
        rc = enc_array(c, v, 0, k.count);
    } else if (k.nstr == k.count) {
        rc = enc_object(c, v, 0, 0, k.count);
    } else {
        c->depth--;
        if (k.nstr > 0 && k.nseq > 0 && k.nstr + k.nseq == k.count)
            return enc_fail(c, "cannot encode a table with both string keys and integer keys");
        push_key_desc(L, -1);
        return enc_fail(c, "expected an array (keys 1..n) or an object (string keys), got a table with %s",
                        lua_tostring(L, -1));
    }
    c->depth--;
    lua_pop(L, 1); /* census's key */
    return rc;
}

static const char *const shape_names[] = {"any", "a string", "a number", "a boolean",
                                          "an array", "an object", "an object"};

/* Appends the value at v as shape s (a stack slot, 0: infer). */
static int enc_value(enc_ctx *c, int v, int s) {
    lua_State *L = c->L;
    int top = lua_gettop(L), part, kind, t = lua_type(L, v), rc;
    luaL_checkstack(L, 4, "imm.core.json_encode");
    kind = shape_kind(c, s, &part);
    if (kind != SH_ANY) {
        static const int want[] = {0, LUA_TSTRING, LUA_TNUMBER, LUA_TBOOLEAN,
                                   LUA_TTABLE, LUA_TTABLE, LUA_TTABLE};
        if (t != want[kind]) {
            rc = enc_fail(c, "expected %s, got %s", shape_names[kind], enc_typename(L, v));
            lua_settop(L, top);
            return rc;
        }
    }
    switch (t) {
    case LUA_TSTRING: {
        size_t n;
        const char *str = lua_tolstring(L, v, &n);
        rc = enc_string(c, str, n, 0);
        break;
    }
    case LUA_TNUMBER:
        rc = enc_number(c, v);
        break;
    case LUA_TBOOLEAN:
        rc = imm_buf_adds(c->out, lua_toboolean(L, v) ? "true" : "false") == 0 ? 0 : enc_nomem(c);
        break;
    case LUA_TTABLE:
        rc = enc_table(c, v, kind, part);
        break;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, v) == NULL) { /* cjson.null, imm.decode's null */
            rc = imm_buf_adds(c->out, "null") == 0 ? 0 : enc_nomem(c);
            break;
        }
        /* fall through */
    default:
        rc = enc_fail(c, "cannot encode a %s", luaL_typename(L, v));
    }
    lua_settop(L, top);
    return rc;
}

/***
 * Encodes a Lua value as JSON text, laid out as a shape says.
 *
 * Shapes: nil or "any" (infer: keys exactly 1..n make an array, string
 * keys an object, an empty table `{}`), "string", "number", "boolean",
 * `{array = SHAPE}`, `{map = SHAPE}` (an object with string keys),
 * `{fields = {Name = SHAPE, ...}}` (a model: an object whose unlisted keys
 * are inferred). An empty table becomes `[]` or `{}` as its shape says.
 * Object keys are written in byte order; integers in full, floats as
 * JavaScript writes them (`core.number_text`); strings must be valid UTF-8
 * and are escaped as JSON.stringify escapes them (`/` is not). Nesting is
 * capped at 128 tables, which also ends reference cycles. Metatables are
 * ignored: a table is read raw and no metamethod is called. An entry that
 * goes while the table is written (a weak value collected, a finalizer) is
 * left out.
 * @function json_encode
 * @param value the value to encode
 * @param[opt] shape the shape (a bad shape raises: it is a programming error)
 * @tparam[opt] string name the value's name, to start error paths with
 * @treturn string the JSON text
 * @return nil, "path: message" when the value does not fit its shape or
 *   cannot be written, e.g. `Targets[2].URI: expected a string, got boolean`
 *   (array indices are Lua's, from 1)
 * @usage local text = core.json_encode({Tags = {}}, {fields = {Tags = {array = "string"}}})
 *   --> {"Tags":[]}
 */
int imm_json_encode(lua_State *L) {
    enc_ctx *c;
    imm_buf *out;
    int rc;
    lua_settop(L, 3);
    if (!lua_isnil(L, 3))
        luaL_checktype(L, 3, LUA_TSTRING);
    /* the context (3 KB of path) lives in a userdata, off the C stack */
    c = compat_newuserdata(L, sizeof *c); /* slot 4 */
    out = new_out(L);                     /* slot 5: owns the output */
    lua_pushnil(L);                       /* slot 6: the error message */
    c->L = L;
    c->out = out;
    c->errslot = 6;
    c->depth = 0;
    c->name = lua_isnil(L, 3) ? "" : lua_tolstring(L, 3, &c->namelen);
    if (lua_isnil(L, 3))
        c->namelen = 0;
    rc = enc_value(c, 1, lua_isnil(L, 2) ? 0 : 2);
    if (rc != 0) {
        imm_buf_free(out);
        lua_pushnil(L);
        lua_pushvalue(L, 6);
        return 2;
    }
    lua_pushlstring(L, out->p ? out->p : "", out->len);
    imm_buf_free(out);
    return 1;
}

/***
 * The JSON text of a number, for scalar parameters: integers (Lua 5.3+) in
 * full, floats as JavaScript's Number#toString writes them (the shortest
 * text that reads back as the same double: `0.7`, `1e+21`, `1e-7`; -0 is
 * `0`).
 * @function number_text
 * @tparam number n (anything else raises)
 * @treturn string the text
 * @return nil, message for NaN and infinities, which JSON cannot write
 * @usage core.number_text(0.1 + 0.2) --> "0.30000000000000004"
 */
int imm_number_text(lua_State *L) {
    char tmp[IMM_JSONENC_NUMBER_MAX];
    int n;
    luaL_checktype(L, 1, LUA_TNUMBER);
#if LUA_VERSION_NUM >= 503
    if (lua_isinteger(L, 1))
        n = imm_json_integer_text((long long)lua_tointeger(L, 1), tmp);
    else
#endif
        n = imm_json_number_text((double)lua_tonumber(L, 1), tmp);
    if (n < 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "expected a finite number, got %s", non_finite_name(lua_tonumber(L, 1)));
        return 2;
    }
    lua_pushlstring(L, tmp, (size_t)n);
    return 1;
}
