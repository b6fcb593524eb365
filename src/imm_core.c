/*
 * imm_core.c - the `imm.core` Lua module: the binding. With imm_json.c
 * (which builds Lua tables from JSON) and imm_luaenc.c (which walks Lua
 * values into JSON), the only C that includes Lua.
 *
 * It exposes the signing layer (imm_sign.h) and one HTTP handle type
 * (imm_http.h) to the Lua modules under lua/imm/, which own everything a user
 * sees (parameters, validation, paging, retries, errors).
 *
 * Error convention: misuse by the Lua layer (wrong argument types) raises;
 * run-time failures return nil, code, message[, status]. No Lua is called
 * while libcurl or OpenSSL is on the C stack, and every malloc'd buffer is
 * owned by a userdata with __gc, so a Lua error (even out of memory while
 * pushing a result) cannot leak it.
 */
#define _GNU_SOURCE /* dladdr, RTLD_NODELETE */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>

#include <openssl/crypto.h>

#include "imm_http.h"
#include "imm_json.h"
#include "imm_luaenc.h"
#include "imm_sign.h"

/* The build passes IMM_VERSION (Makefile and rockspec alike). */
#ifndef IMM_VERSION
#error "build with -DIMM_VERSION='\"x.y.z\"' (see the Makefile)"
#endif
#define HTTP_MT "imm.core.http"
#define MULTI_MT "imm.core.multi"
#define BOX_MT "imm.core.signbox"
#define HMACKEY_MT "imm.core.hmac_key"

/* --- compat: a few macros for 5.1/LuaJIT, not a library ------------------ */
#if LUA_VERSION_NUM < 502
#define compat_rawlen(L, i) lua_objlen(L, i)
static void compat_setfuncs(lua_State *L, const luaL_Reg *l) {
    for (; l->name != NULL; l++) {
        lua_pushcfunction(L, l->func);
        lua_setfield(L, -2, l->name);
    }
}
#define lua_absindex(L, i) ((i) > 0 || (i) <= LUA_REGISTRYINDEX ? (i) : lua_gettop(L) + (i) + 1)
#define compat_newuserdata(L, n) lua_newuserdata(L, n)
#else
#define compat_rawlen(L, i) lua_rawlen(L, i)
#define compat_setfuncs(L, l) luaL_setfuncs(L, l, 0)
#if LUA_VERSION_NUM >= 504
#define compat_newuserdata(L, n) lua_newuserdatauv(L, n, 0)
#else
#define compat_newuserdata(L, n) lua_newuserdata(L, n)
#endif
#endif

int luaopen_imm_core(lua_State *L);

/* --- temporary kv arrays ------------------------------------------------- */

/* Copies a Lua table of string keys and string values into an imm_kv array
 * kept in a GC-owned userdata (so a later error cannot leak it). The
 * strings are anchored in a table of our own, not only the caller's: later
 * allocations run the collector, and a finalizer could edit the caller's
 * table and free them. Leaves the anchor and the userdata on the stack
 * (the pointers are valid while they are there). */
static imm_kv *table_to_kv(lua_State *L, int idx, const char *what, size_t *out_n) {
    size_t n = 0, i = 0;
    int anchor;
    imm_kv *kv;
    idx = lua_absindex(L, idx);
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        n++;
        lua_pop(L, 1);
    }
    if (n > INT_MAX / 2)
        luaL_error(L, "imm.core: too many %s entries", what);
    lua_createtable(L, (int)(2 * n), 0);
    anchor = lua_gettop(L);
    kv = compat_newuserdata(L, (n ? n : 1) * sizeof *kv);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "imm.core: %s keys and values must be strings", what);
        /* a finalizer run by the allocations above added entries */
        if (i == n)
            luaL_error(L, "imm.core: the %s table changed while it was read", what);
        kv[i].k = lua_tolstring(L, -2, &kv[i].klen);
        kv[i].v = lua_tolstring(L, -1, &kv[i].vlen);
        lua_rawseti(L, anchor, (int)(2 * i + 2)); /* pops the value; preallocated, no allocation */
        lua_pushvalue(L, -1);
        lua_rawseti(L, anchor, (int)(2 * i + 1));
        i++;
    }
    *out_n = i;
    return kv;
}

/* --- signing -------------------------------------------------------------- */

/* The outputs of one signing call, boxed so __gc frees them on any error. */
/* What a sign_box holds, and so what box_gc_now frees. */
typedef enum box_kind { BOX_EMPTY = 0, BOX_ONE, BOX_V2, BOX_V3 } box_kind;

typedef struct sign_box {
    box_kind kind;
    union {
        imm_buf one;
        imm_v3_output v3;
        imm_v2_output v2;
    } u;
} sign_box;


/* Frees a box's buffers as soon as their contents are in Lua. */
static void box_gc_now(sign_box *b) {
    if (b->kind == BOX_V3)
        imm_v3_output_free(&b->u.v3);
    else if (b->kind == BOX_V2)
        imm_v2_output_free(&b->u.v2);
    else if (b->kind == BOX_ONE)
        imm_buf_free(&b->u.one);
    b->kind = BOX_EMPTY;
}

static int box_gc(lua_State *L) {
    box_gc_now(luaL_checkudata(L, 1, BOX_MT));
    return 0;
}

static sign_box *new_box(lua_State *L, box_kind kind) {
    sign_box *b = compat_newuserdata(L, sizeof *b);
    b->kind = BOX_EMPTY;
    luaL_getmetatable(L, BOX_MT);
    lua_setmetatable(L, -2);
    if (kind == BOX_V3)
        imm_v3_output_init(&b->u.v3);
    else if (kind == BOX_V2)
        imm_v2_output_init(&b->u.v2);
    else
        imm_buf_init(&b->u.one);
    b->kind = kind;
    return b;
}

static imm_hash check_alg(lua_State *L, int idx) {
    static const char *const names[] = {"ACS3-HMAC-SHA256", "ACS3-HMAC-SM3", NULL};
    return luaL_checkoption(L, idx, NULL, names) == 1 ? IMM_HASH_SM3 : IMM_HASH_SHA256;
}

static imm_hash check_hash(lua_State *L, int idx) {
    static const char *const names[] = {"sha256", "sm3", "sha1", NULL};
    static const imm_hash map[] = {IMM_HASH_SHA256, IMM_HASH_SM3, IMM_HASH_SHA1};
    return map[luaL_checkoption(L, idx, NULL, names)];
}

static int push_bytes(lua_State *L, const imm_buf *b) {
    lua_pushlstring(L, b->p ? b->p : "", b->len);
    return 1;
}

/* The secret as an HMAC key (see imm_hmac_key), boxed for __gc. */
typedef struct hmac_key_ud {
    imm_hmac_key *k; /* NULL once freed */
} hmac_key_ud;

static int hmac_key_gc(lua_State *L) {
    hmac_key_ud *u = luaL_checkudata(L, 1, HMACKEY_MT);
    imm_hmac_key_free(u->k);
    u->k = NULL;
    return 0;
}

/* hmac_key(alg, secret) -> a key for sign_v3 in place of the secret | nil, code, message.
 * alg as sign_v3's. The secret's bytes are not kept, only the two digest
 * states derived from it (wiped when collected). */
static int l_hmac_key(lua_State *L) {
    imm_hash alg = check_alg(L, 1);
    size_t len;
    const char *secret = luaL_checklstring(L, 2, &len);
    hmac_key_ud *u = compat_newuserdata(L, sizeof *u);
    u->k = NULL; /* closed first, so __gc is always safe */
    luaL_getmetatable(L, HMACKEY_MT);
    lua_setmetatable(L, -2);
    u->k = imm_hmac_key_new(alg, secret, len);
    if (u->k == NULL) {
        lua_pushnil(L);
        lua_pushliteral(L, "SigningFailed");
        lua_pushliteral(L, "could not make an HMAC key (out of memory, or no such digest)");
        return 3;
    }
    return 1;
}

/* sign_v3(alg, method, path, query, headers, payload_hash, key_id, secret [, debug])
 * secret: a string, or a key from hmac_key(alg, secret), which skips
 * hashing the key's two padded blocks again.
 *   -> canonical_query, authorization [, canonical_request, string_to_sign]
 *   or nil, code, message */
static int l_sign_v3(lua_State *L) {
    imm_v3_input in;
    sign_box *box;
    char err[256];
    int rc, debug;
    memset(&in, 0, sizeof in);
    in.alg = check_alg(L, 1);
    in.method = luaL_checkstring(L, 2);
    in.path = luaL_checkstring(L, 3);
    in.payload_hash = luaL_checkstring(L, 6);
    in.access_key_id = luaL_checkstring(L, 7);
    if (lua_type(L, 8) == LUA_TUSERDATA) {
        hmac_key_ud *k = luaL_checkudata(L, 8, HMACKEY_MT);
        if (k->k == NULL || imm_hmac_key_alg(k->k) != in.alg)
            luaL_argerror(L, 8, "an HMAC key of another algorithm");
        in.key = k->k; /* the userdata stays in its stack slot while in use */
    } else {
        in.secret = luaL_checklstring(L, 8, &in.secret_len);
    }
    debug = lua_toboolean(L, 9);
    in.query = table_to_kv(L, 4, "query", &in.nquery);
    in.headers = table_to_kv(L, 5, "header", &in.nheaders);
    box = new_box(L, BOX_V3);
    err[0] = '\0';
    rc = imm_sign_v3(&in, &box->u.v3, err, sizeof err);
    if (rc != IMM_OK) {
        lua_pushnil(L);
        lua_pushstring(L, rc == IMM_EINVAL ? "InvalidParameter" : "SigningFailed");
        lua_pushstring(L, err);
        return 3;
    }
    push_bytes(L, &box->u.v3.canonical_query);
    push_bytes(L, &box->u.v3.authorization);
    if (debug) {
        push_bytes(L, &box->u.v3.canonical_request);
        push_bytes(L, &box->u.v3.string_to_sign);
    }
    box_gc_now(box);
    return debug ? 4 : 2;
}

/* sign_v2(method, params, secret [, debug])
 *   -> query_with_signature, signature [, string_to_sign] or nil, code, message */
static int l_sign_v2(lua_State *L) {
    const char *method = luaL_checkstring(L, 1);
    size_t n, slen;
    imm_kv *kv;
    const char *secret = luaL_checklstring(L, 3, &slen);
    int debug = lua_toboolean(L, 4), rc;
    sign_box *box;
    char err[256];
    kv = table_to_kv(L, 2, "parameter", &n);
    box = new_box(L, BOX_V2);
    err[0] = '\0';
    rc = imm_sign_v2(method, kv, n, secret, slen, &box->u.v2, err, sizeof err);
    if (rc == IMM_OK) {
        imm_buf *q = &box->u.v2.canonical_query;
        if ((q->len > 0 && imm_buf_addc(q, '&') != 0) ||
            imm_buf_adds(q, "Signature=") != 0 ||
            imm_percent_encode(q, box->u.v2.signature, strlen(box->u.v2.signature)) != IMM_OK) {
            rc = IMM_ENOMEM;
            snprintf(err, sizeof err, "out of memory while signing");
        }
    }
    if (rc != IMM_OK) {
        lua_pushnil(L);
        lua_pushstring(L, rc == IMM_EINVAL ? "InvalidParameter" : "SigningFailed");
        lua_pushstring(L, err);
        return 3;
    }
    push_bytes(L, &box->u.v2.canonical_query);
    lua_pushstring(L, box->u.v2.signature);
    if (debug)
        push_bytes(L, &box->u.v2.string_to_sign);
    box_gc_now(box);
    return debug ? 3 : 2;
}

static int l_percent_encode(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    sign_box *box = new_box(L, BOX_ONE);
    if (imm_percent_encode(&box->u.one, s, n) != IMM_OK)
        return luaL_error(L, "imm.core: out of memory"); /* __gc frees the box */
    push_bytes(L, &box->u.one);
    box_gc_now(box);
    return 1;
}

/* redact(line, secret [, mask]) -> line with every form of secret (raw,
 * percent-encoded once and twice) replaced by mask (default "***"). The
 * encoded forms exist only in C buffers that are wiped, never as Lua
 * strings, which could not be. A nil or empty secret returns line as is. */
static int l_redact(lua_State *L) {
    size_t n, slen = 0, mlen;
    const char *s = luaL_checklstring(L, 1, &n);
    const char *secret = lua_isnoneornil(L, 2) ? "" : luaL_checklstring(L, 2, &slen);
    const char *mask = luaL_optlstring(L, 3, "***", &mlen);
    sign_box *box;
    if (slen == 0) {
        lua_settop(L, 1);
        return 1;
    }
    box = new_box(L, BOX_ONE);
    box->u.one.sensitive = 1;
    if (imm_redact(&box->u.one, s, n, secret, slen, mask, mlen) != IMM_OK)
        return luaL_error(L, "imm.core: out of memory"); /* __gc frees the box */
    push_bytes(L, &box->u.one);
    box_gc_now(box);
    return 1;
}

/* A digest as lower-case hex, or nil, code, msg: hash_hex's and hash_file's answer. */
static int push_digest(lua_State *L, const unsigned char *md, unsigned int mdlen, const char *code,
                       const char *msg) {
    char hex[2 * IMM_MAX_DIGEST + 1];
    if (code != NULL) {
        lua_pushnil(L);
        lua_pushstring(L, code);
        lua_pushstring(L, msg);
        return 3;
    }
    imm_hex(md, mdlen, hex);
    lua_pushstring(L, hex);
    return 1;
}

static int l_hash_hex(lua_State *L) {
    imm_hash alg = check_hash(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    unsigned char md[IMM_MAX_DIGEST];
    unsigned int mdlen = 0;
    if (imm_digest(alg, s, n, md, &mdlen) != IMM_OK)
        return push_digest(L, NULL, 0, "SigningFailed", "digest unavailable in this OpenSSL");
    return push_digest(L, md, mdlen, NULL, NULL);
}

/* hash_file(alg, path) -> lower-case hex digest of the file | nil, code, msg.
 * Read in blocks: a CA bundle's digest without a Lua string of it. */
static int l_hash_file(lua_State *L) {
    imm_hash alg = check_hash(L, 1);
    const char *path = luaL_checkstring(L, 2);
    unsigned char md[IMM_MAX_DIGEST];
    unsigned int mdlen = 0;
    int rc = imm_digest_file(alg, path, md, &mdlen);
    if (rc == IMM_EINVAL)
        return push_digest(L, NULL, 0, "InvalidParameter", "the file cannot be read");
    if (rc != IMM_OK)
        return push_digest(L, NULL, 0, "SigningFailed", "digest unavailable in this OpenSSL");
    return push_digest(L, md, mdlen, NULL, NULL);
}

/* rsa_verify(pem, data, sig [, alg = "sha1"]) -> true | false
 *   | nil, "InvalidCertificate", msg. The PEM and the signature are a remote
 * sender's input, so they never raise; arguments of the wrong type do. */
static int l_rsa_verify(lua_State *L) {
    size_t pemlen, n, siglen;
    const char *pem = luaL_checklstring(L, 1, &pemlen);
    const char *data = luaL_checklstring(L, 2, &n);
    const char *sig = luaL_checklstring(L, 3, &siglen);
    imm_hash alg = lua_isnoneornil(L, 4) ? IMM_HASH_SHA1 : check_hash(L, 4);
    char err[128];
    int verified = 0;
    int rc = imm_rsa_verify(pem, pemlen, data, n, (const unsigned char *)sig, siglen,
                            alg, &verified, err, sizeof err);
    if (rc == IMM_ENOMEM)
        return luaL_error(L, "imm.core: out of memory");
    if (rc != IMM_OK) {
        lua_pushnil(L);
        lua_pushstring(L, rc == IMM_EINVAL ? "InvalidCertificate" : "SigningFailed");
        lua_pushstring(L, err);
        return 3;
    }
    lua_pushboolean(L, verified);
    return 1;
}

static int l_hmac_hex(lua_State *L) {
    imm_hash alg = check_hash(L, 1);
    size_t klen, n;
    const char *key = luaL_checklstring(L, 2, &klen);
    const char *s = luaL_checklstring(L, 3, &n);
    unsigned char md[IMM_MAX_DIGEST];
    unsigned int mdlen = 0;
    char hex[2 * IMM_MAX_DIGEST + 1];
    if (imm_hmac(alg, key, klen, s, n, md, &mdlen) != IMM_OK) {
        lua_pushnil(L);
        lua_pushstring(L, "SigningFailed");
        lua_pushstring(L, "HMAC unavailable in this OpenSSL");
        return 3;
    }
    imm_hex(md, mdlen, hex);
    OPENSSL_cleanse(md, sizeof md);
    lua_pushstring(L, hex);
    return 1;
}

/* nonce() -> 32 lower-case hex characters from RAND_bytes (128 bits),
 * through imm_nonce16's pool */
static int l_nonce(lua_State *L) {
    unsigned char r[16];
    char hex[33];
    if (imm_nonce16(r) != IMM_OK)
        return luaL_error(L, "imm.core: RAND_bytes failed");
    imm_hex(r, sizeof r, hex);
    lua_pushstring(L, hex);
    return 1;
}

/* bad_element(list [, n]) -> the index of the first of list[1..n] (n
 * defaults to #list) that is not a table or is an array (its [1] is not
 * nil), or nil. imm.response's check of every list element, here because
 * the loop in Lua 5.4 cost more per page than a tenth of the decoding.
 * Tables with a metatable are read through it, as the Lua loop did. */
static int l_bad_element(lua_State *L) {
    lua_Number n;
    lua_Integer i;
    int meta;
    luaL_checktype(L, 1, LUA_TTABLE);
    if (lua_isnoneornil(L, 2)) {
#if LUA_VERSION_NUM >= 502
        n = (lua_Number)luaL_len(L, 1);
#else
        n = (lua_Number)lua_objlen(L, 1);
#endif
    } else {
        n = luaL_checknumber(L, 2);
    }
    meta = lua_getmetatable(L, 1);
    if (meta)
        lua_pop(L, 1);
    for (i = 1; (lua_Number)i <= n; i++) {
        int bad;
        if (meta) {
            lua_pushinteger(L, i);
            lua_gettable(L, 1);
        } else {
            lua_rawgeti(L, 1, (int)i);
        }
        if (lua_type(L, -1) != LUA_TTABLE) {
            bad = 1;
        } else {
            if (lua_getmetatable(L, -1)) {
                lua_pop(L, 1);
                lua_pushinteger(L, 1);
                lua_gettable(L, -2);
            } else {
                lua_rawgeti(L, -1, 1);
            }
            bad = !lua_isnil(L, -1);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
        if (bad) {
            lua_pushinteger(L, i);
            return 1;
        }
    }
    lua_pushnil(L);
    return 1;
}

/* random() -> a float in [0, 1) from RAND_bytes, for retry jitter; it does
 * not touch the application's math.random state. */
static int l_random(lua_State *L) {
    unsigned char r[8];
    uint64_t v = 0;
    size_t i;
    if (imm_random(r, sizeof r) != IMM_OK)
        return luaL_error(L, "imm.core: RAND_bytes failed");
    for (i = 0; i < sizeof r; i++)
        v = (v << 8) | r[i];
    lua_pushnumber(L, (double)(v >> 11) / 9007199254740992.0); /* 53 bits / 2^53 */
    return 1;
}

/* sleep(seconds): a blocking sleep for the libcurl path, restarted on EINTR. */
static int l_sleep(lua_State *L) {
    double s = luaL_checknumber(L, 1);
    struct timespec ts, rem;
    if (!(s > 0)) /* NaN too: no cast of it below */
        return 0;
    if (s > 86400)
        s = 86400;
    ts.tv_sec = (time_t)s;
    ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &rem) == -1 && errno == EINTR)
        ts = rem;
    return 0;
}

/* monotonic() -> seconds as a float, for deadlines */
static int l_monotonic(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
    return 1;
}

/* --- HTTP handle ------------------------------------------------------- */

typedef struct http_ud {
    imm_http *h;       /* NULL once closed */
    int shared;        /* blocking requests run on the lua_State's shared multi */
    unsigned int seq;  /* exchanges started: a reply left in the handle (see
                        * http_request's keep) is read only while it is the one asked for */
} http_ud;

typedef struct multi_ud {
    imm_multi *m; /* NULL once closed */
} multi_ud;

static const char *http_code(imm_http_status st) {
    switch (st) {
    case IMM_HTTP_ECONNECT: return "ConnectionFailed";
    case IMM_HTTP_ETIMEOUT: return "Timeout";
    case IMM_HTTP_ETLS: return "TLSError";
    case IMM_HTTP_ERESPONSE: return "InvalidResponse";
    case IMM_HTTP_EINVAL: return "InvalidParameter";
    case IMM_HTTP_ENOMEM: return "OutOfMemory";
    case IMM_HTTP_ECANCELLED: return "Cancelled";
    case IMM_HTTP_EPROXYAUTH: return "ProxyAuthenticationRequired";
    default: return "HTTPError";
    }
}

/* The longest timeout in ms: 30 days, or less where a long cannot hold
 * that (a 32-bit long ends at about 24.8 days), so the cast below is
 * always defined. Both are exact as doubles. */
#define MS_CAP ((double)LONG_MAX < 2592000000.0 ? (double)LONG_MAX : 2592000000.0)

/* Seconds to whole milliseconds for libcurl, without undefined casts:
 * NaN and negatives raise (the Lua layer validates first), 0 stays 0 (no
 * timeout), anything above 0 but below 1 ms becomes 1 ms (0 would turn
 * the timeout off), and huge values are capped (MS_CAP). */
static long seconds_to_ms(lua_State *L, lua_Number v, const char *what) {
    double ms;
    if (v != v || v < 0)
        luaL_error(L, "imm.core: %s must be a number >= 0", what);
    if (v == 0)
        return 0;
    ms = (double)v * 1000.0;
    if (ms > MS_CAP)
        ms = MS_CAP;
    return ms < 1 ? 1 : (long)ms;
}

static lua_Number opt_number_field(lua_State *L, int t, const char *k, lua_Number def) {
    lua_Number v;
    lua_getfield(L, t, k);
    v = lua_isnil(L, -1) ? def : luaL_checknumber(L, -1);
    lua_pop(L, 1);
    return v;
}

/* A byte count for size_t, capped rather than cast out of range. */
static size_t to_size(lua_State *L, lua_Number v, const char *what) {
    if (v != v || v < 0)
        luaL_error(L, "imm.core: %s must be a number >= 0", what);
    if (v >= (double)(SIZE_MAX / 2))
        return SIZE_MAX / 2;
    return (size_t)v;
}

/* A string option, or NULL. Only a real string: lua_tostring would turn a
 * number into a new string that nothing references once popped. The value
 * stays on the stack, which keeps the string alive: later allocations run
 * the collector, and a finalizer could take it out of the table. */
static const char *opt_string_field(lua_State *L, int t, const char *k) {
    lua_getfield(L, t, k);
    if (lua_type(L, -1) == LUA_TSTRING)
        return lua_tostring(L, -1);
    if (!lua_isnil(L, -1))
        luaL_error(L, "imm.core: option %s must be a string", k);
    return NULL;
}

/* nil, code, message: the run-time failure convention of this module */
static int push_failure(lua_State *L, const char *code, const char *msg) {
    lua_pushnil(L);
    lua_pushstring(L, code);
    lua_pushstring(L, msg);
    return 3;
}

/* http{connect_timeout=s, timeout=s, ca_file=, insecure=, user_agent=,
 *      max_response_bytes=, no_proxy=, proxy=, shared=} -> handle, or nil, code, message.
 * no_proxy: true never uses a proxy (CURLOPT_NOPROXY "*"), for link-local
 * credential services whose replies a proxy must never see; a string is
 * CURLOPT_NOPROXY's host list ("" for none, the environment's ignored).
 * proxy: CURLOPT_PROXY, a URL; false for none, whatever the environment says.
 * shared: blocking requests go through the lua_State's shared multi (the
 * clients' handles); otherwise through the handle's own. */
static int l_http(lua_State *L) {
    imm_http_options o;
    http_ud *u;
    char err[256];
    luaL_checktype(L, 1, LUA_TTABLE);
    memset(&o, 0, sizeof o);
    o.connect_timeout_ms = seconds_to_ms(L, opt_number_field(L, 1, "connect_timeout", 0), "connect_timeout");
    o.timeout_ms = seconds_to_ms(L, opt_number_field(L, 1, "timeout", 0), "timeout");
    o.max_response_bytes = to_size(L, opt_number_field(L, 1, "max_response_bytes", 0), "max_response_bytes");
    o.ca_file = opt_string_field(L, 1, "ca_file");
    o.user_agent = opt_string_field(L, 1, "user_agent");
    lua_getfield(L, 1, "insecure");
    o.insecure = lua_toboolean(L, -1);
    lua_pop(L, 1);
    /* no_proxy: true for none at all, or libcurl's list of hosts; the
     * strings stay on the stack until imm_http_new has copied them */
    lua_getfield(L, 1, "no_proxy");
    if (lua_type(L, -1) == LUA_TSTRING)
        o.noproxy = lua_tostring(L, -1);
    else
        o.no_proxy = lua_toboolean(L, -1);
    /* proxy: a URL, or false for none (the environment's ignored) */
    lua_getfield(L, 1, "proxy");
    if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1))
        o.proxy = "";
    else if (lua_type(L, -1) == LUA_TSTRING)
        o.proxy = lua_tostring(L, -1);
    else if (!lua_isnil(L, -1))
        luaL_error(L, "imm.core: option proxy must be a string or false");
    /* created closed, then opened, so __gc is always safe */
    u = compat_newuserdata(L, sizeof *u);
    u->h = NULL;
    u->seq = 0;
    lua_getfield(L, 1, "shared");
    u->shared = lua_toboolean(L, -1);
    lua_pop(L, 1);
    luaL_getmetatable(L, HTTP_MT);
    lua_setmetatable(L, -2);
    err[0] = '\0';
    u->h = imm_http_new(&o, err, sizeof err);
    if (u->h == NULL) {
        return push_failure(L, "HTTPError", err);
    }
    return 1;
}

static int http_close(lua_State *L) {
    http_ud *u = luaL_checkudata(L, 1, HTTP_MT);
    imm_http_free(u->h);
    u->h = NULL; /* a second close (or __gc after close) is a no-op */
    return 0;
}

static int http_tostring(lua_State *L) {
    http_ud *u = luaL_checkudata(L, 1, HTTP_MT);
    if (u->h == NULL)
        lua_pushstring(L, "imm.core.http (closed)");
    else
        lua_pushfstring(L, "imm.core.http (%p)", (void *)u->h);
    return 1;
}

static void push_headers(lua_State *L, const imm_buf *block) {
    const char *cur = block->p, *end = block->p ? block->p + block->len : NULL;
    const char *name, *value;
    size_t nlen, vlen, i;
    char lname[128];
    lua_newtable(L);
    if (cur == NULL)
        return;
    while (imm_http_next_header(&cur, end, &name, &nlen, &value, &vlen)) {
        if (nlen >= sizeof lname)
            continue; /* no header we read is that long */
        for (i = 0; i < nlen; i++) {
            char c = name[i];
            lname[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        }
        lua_pushlstring(L, lname, nlen);
        lua_pushvalue(L, -1);
        lua_rawget(L, -3);
        if (lua_isnil(L, -1)) {
            lua_pop(L, 1);
            lua_pushlstring(L, value, vlen);
        } else {
            /* repeated field: join as RFC 9110 allows */
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, value, vlen);
            lua_concat(L, 3);
        }
        lua_rawset(L, -3);
    }
}

/* A header table { name = value } as "name: value" lines, in one userdata
 * left on the stack (the pointers are valid while it is there): built here,
 * the transport's Lua no longer makes a string per line per request. The
 * table is walked twice, for the size and then the bytes; a finalizer run
 * by the allocation between may have changed it, which raises. */
static const char **header_map_lines(lua_State *L, int t, size_t *out_n) {
    size_t n = 0, bytes = 0, used = 0, i = 0, kl, vl;
    const char **lines;
    const char *k, *v;
    char *p;
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        /* a number value is turned into a string on the stack copy only */
        if (lua_type(L, -2) != LUA_TSTRING ||
            (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
            luaL_error(L, "imm.core: header names and values must be strings");
        lua_tolstring(L, -2, &kl);
        lua_tolstring(L, -1, &vl);
        lua_pop(L, 1);
        n++;
        bytes += kl + vl + 3; /* ": " and the NUL */
    }
    if (n > INT_MAX)
        luaL_error(L, "imm.core: too many header lines");
    lines = compat_newuserdata(L, n * sizeof *lines + bytes + 1);
    p = (char *)(lines + n);
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING ||
            (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER))
            luaL_error(L, "imm.core: header names and values must be strings");
        k = lua_tolstring(L, -2, &kl);
        v = lua_tolstring(L, -1, &vl);
        if (i == n || kl + vl + 3 > bytes - used)
            luaL_error(L, "imm.core: the header table changed while it was read");
        lines[i++] = p + used;
        memcpy(p + used, k, kl);
        memcpy(p + used + kl, ": ", 2);
        memcpy(p + used + kl + 2, v, vl);
        used += kl + vl + 3;
        p[used - 1] = '\0';
        lua_pop(L, 1);
    }
    *out_n = i;
    return lines;
}

/* Reads (method, url, header_lines, body [, fresh [, timeout]]) at stack
 * slots base..base+5 into req. header_lines: an array of "name: value"
 * strings, or a table { name = value } (see header_map_lines). fresh: use a new connection (for requests
 * that must not be sent twice). timeout: seconds this exchange may take at
 * most (nil: the handle's timeout). Leaves an anchor table (and maybe a
 * userdata) on the stack: the header line pointers are valid while they
 * stay there. */
static void read_request(lua_State *L, int base, imm_http_request *req,
                         const char **stack_lines, size_t nstack) {
    const char **lines = stack_lines;
    size_t n, i;
    memset(req, 0, sizeof *req);
    req->method = luaL_checkstring(L, base);
    req->url = luaL_checkstring(L, base + 1);
    luaL_checktype(L, base + 2, LUA_TTABLE);
    req->body = luaL_optlstring(L, base + 3, "", &req->body_len);
    req->fresh_connect = lua_toboolean(L, base + 4);
    if (!lua_isnoneornil(L, base + 5))
        req->timeout_ms = seconds_to_ms(L, luaL_checknumber(L, base + 5), "timeout");
    n = compat_rawlen(L, base + 2);
    if (n == 0) {
        /* no lines: a table { name = value }, or no headers at all */
        req->headers = header_map_lines(L, base + 2, &req->nheaders);
        return;
    }
    if (n > INT_MAX)
        luaL_error(L, "imm.core: too many header lines");
    /* The lines are anchored in a table of our own (left on the stack):
     * allocations before the request starts run the collector, and a
     * finalizer could edit the caller's table and free them. */
    lua_createtable(L, (int)n, 0);
    if (n > nstack)
        lines = compat_newuserdata(L, n * sizeof *lines);
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, base + 2, (int)i + 1);
        /* strings only: a number's lua_tostring would be a temporary */
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "imm.core: header lines must be strings");
        lines[i] = lua_tostring(L, -1);
        lua_rawseti(L, n > nstack ? -3 : -2, (int)i + 1); /* preallocated: no allocation */
    }
    req->headers = lines;
    req->nheaders = n;
}

/* The results of an exchange:
 *   status, body, headers  |  nil, code, message, status_or_nil, sent
 * sent is false only when no request byte reached a connection. */
static int push_outcome(lua_State *L, imm_http *h, imm_http_status st, long status, int sent,
                        const char *err) {
    if (st != IMM_HTTP_OK) {
        lua_pushnil(L);
        lua_pushstring(L, http_code(st));
        lua_pushstring(L, err);
        if (status > 0)
            lua_pushinteger(L, (lua_Integer)status);
        else
            lua_pushnil(L);
        lua_pushboolean(L, sent);
        return 5;
    }
    lua_pushinteger(L, (lua_Integer)status);
    push_bytes(L, imm_http_body(h));
    push_headers(L, imm_http_header_block(h));
    return 3;
}

static int push_closed(lua_State *L, const char *what) {
    lua_pushfstring(L, "the %s is closed", what);
    return push_failure(L, "InvalidState", lua_tostring(L, -1));
}

static multi_ud *shared_multi(lua_State *L);

/* h:request(method, url, headers_array, body [, fresh [, timeout [, keep]]]) -> see push_outcome.
 * Blocking: the same start/transfer/finish as the multi path, driven to
 * completion on the lua_State's shared multi (see shared_multi).
 * keep: the reply stays in the handle, and success returns status, seq;
 * h:body(seq), h:headers(seq) and h:decode(..., seq) read it until the
 * next exchange. A body that is only decoded then never becomes a Lua
 * string, and headers nobody reads are never parsed. */
static int http_request(lua_State *L) {
    http_ud *u = luaL_checkudata(L, 1, HTTP_MT);
    imm_http_request req;
    const char *stack_lines[32];
    long status = 0;
    int sent = 0, keep = lua_toboolean(L, 8); /* before read_request pushes its anchor */
    imm_http_status st;
    multi_ud *m;
    char err[320]; /* CURL_ERROR_SIZE (256) plus our prefix */

    read_request(L, 2, &req, stack_lines, sizeof stack_lines / sizeof stack_lines[0]);
    if (u->h == NULL)
        return push_closed(L, "HTTP handle");
    m = u->shared ? shared_multi(L) : NULL; /* may raise (out of memory): nothing is started yet */
    err[0] = '\0';
    u->seq++;
    /* No Lua runs until perform returns; the buffers stay owned by u->h. */
    if (m != NULL)
        st = imm_http_perform_on(u->h, m->m, &req, &status, &sent, err, sizeof err);
    else
        st = imm_http_perform(u->h, &req, &status, &sent, err, sizeof err);
    if (keep && st == IMM_HTTP_OK) {
        lua_pushinteger(L, (lua_Integer)status);
        lua_pushinteger(L, (lua_Integer)u->seq);
        return 2;
    }
    return push_outcome(L, u->h, st, status, sent, err);
}

/* The handle whose kept reply number seq (argument idx) is still there;
 * raises otherwise: reading a reply after the next exchange is a bug. */
static http_ud *check_kept(lua_State *L, int idx) {
    http_ud *u = luaL_checkudata(L, 1, HTTP_MT);
    lua_Integer seq = luaL_checkinteger(L, idx);
    if (u->h == NULL || seq != (lua_Integer)u->seq || imm_http_state(u->h) == IMM_HTTP_ATTACHED)
        luaL_error(L, "imm.core: the reply is no longer in the handle");
    return u;
}

/* h:body(seq) -> the kept reply's body as a string */
static int http_body(lua_State *L) {
    return push_bytes(L, imm_http_body(check_kept(L, 2)->h));
}

/* h:headers(seq) -> the kept reply's header table (lower-case names) */
static int http_headers(lua_State *L) {
    push_headers(L, imm_http_header_block(check_kept(L, 2)->h));
    return 1;
}

/* h:decode(null, array_mt, big_integers, seq) -> value, is_object | nil, message.
 * imm.core.json_decode over the kept body, read where libcurl wrote it.
 * is_object: the text's first byte after white space is '{'. */
static int http_decode(lua_State *L) {
    http_ud *u = check_kept(L, 5);
    lua_Integer seq = lua_tointeger(L, 5);
    sign_box *b;
    int n, is_object = 0;
    lua_settop(L, 4);
    /* the box owns the body while the decoder runs: Lua code it may run (a
     * finalizer) could start an exchange on this handle, or close it, and a
     * memory error raised mid-way must not leak it */
    b = new_box(L, BOX_ONE);
    imm_http_swap_body(u->h, &b->u.one);
    lua_insert(L, 2); /* h, box, null, array_mt, big_integers */
    n = imm_json_decode_bytes(L, b->u.one.p ? b->u.one.p : "", b->u.one.len, 3, &is_object);
    if (u->h != NULL && seq == (lua_Integer)u->seq)
        imm_http_swap_body(u->h, &b->u.one); /* back, for h:body and for reuse */
    box_gc_now(b);
    if (n == 1) {
        lua_pushboolean(L, is_object);
        n = 2;
    }
    return n;
}

/* h:debug() -> { capath_cleared = bool, pipewait = bool, tls_resumed = bool,
 * ca_read = mode, ca_certs = n, ca_parsed = n }, for the specs; the ca_
 * fields are there when imm_castore reads the CA file (imm_castore.h). */
static int http_debug(lua_State *L) {
    http_ud *u = luaL_checkudata(L, 1, HTTP_MT);
    int capath = 0, pipewait = 0;
    size_t certs = 0, parsed = 0;
    const char *mode = NULL;
    if (u->h != NULL)
        imm_http_debug(u->h, &capath, &pipewait);
    lua_createtable(L, 0, 6);
    if (u->h != NULL && (mode = imm_http_ca_counts(u->h, &certs, &parsed)) != NULL) {
        lua_pushstring(L, mode);
        lua_setfield(L, -2, "ca_read");
        lua_pushinteger(L, (lua_Integer)certs);
        lua_setfield(L, -2, "ca_certs");
        lua_pushinteger(L, (lua_Integer)parsed);
        lua_setfield(L, -2, "ca_parsed");
    }
    lua_pushboolean(L, capath);
    lua_setfield(L, -2, "capath_cleared");
    lua_pushboolean(L, pipewait);
    lua_setfield(L, -2, "pipewait");
    lua_pushboolean(L, u->h != NULL && imm_http_tls_resumed(u->h));
    lua_setfield(L, -2, "tls_resumed");
    return 1;
}

/* h:result() -> the outcome of a transfer the multi reported done (see
 * push_outcome); nil, "InvalidState", msg when there is none. */
static int http_result(lua_State *L) {
    http_ud *u = luaL_checkudata(L, 1, HTTP_MT);
    long status = 0;
    int sent = 0;
    imm_http_status st;
    char err[320];
    if (u->h == NULL)
        return push_closed(L, "HTTP handle");
    if (imm_http_state(u->h) != IMM_HTTP_DONE)
        return push_failure(L, "InvalidState", imm_http_state(u->h) == IMM_HTTP_ATTACHED
                                                   ? "the transfer is still in flight"
                                                   : "no transfer has finished");
    err[0] = '\0';
    st = imm_http_finish(u->h, &status, &sent, err, sizeof err);
    return push_outcome(L, u->h, st, status, sent, err);
}

/* --- multi: many transfers, driven by the caller's loop ---------------- */

static int l_multi(lua_State *L) {
    multi_ud *u = compat_newuserdata(L, sizeof *u);
    char err[256];
    u->m = NULL;
    luaL_getmetatable(L, MULTI_MT);
    lua_setmetatable(L, -2);
    err[0] = '\0';
    u->m = imm_multi_new(err, sizeof err);
    if (u->m == NULL) {
        return push_failure(L, "HTTPError", err);
    }
    return 1;
}

/* The lua_State's shared multi: every blocking request goes through it, so
 * all clients of a state share one connection cache and the TLS sessions
 * (libcurl keeps both in the multi): a new client pays no handshake again
 * (nor a CA file read, which imm_castore keeps for the process). Held in the registry; made on first use, and again
 * if someone closed it. NULL when libcurl cannot make one (then each handle
 * uses its own). */
static const char shared_key = 'm';

static multi_ud *shared_multi(lua_State *L) {
    multi_ud *u;
    lua_pushlightuserdata(L, (void *)&shared_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    u = lua_touserdata(L, -1);
    lua_pop(L, 1); /* the registry keeps it alive */
    if (u != NULL && u->m != NULL)
        return u;
    lua_pushlightuserdata(L, (void *)&shared_key);
    if (l_multi(L) != 1) {
        lua_pop(L, 5); /* the key, the closed userdata, nil, code, message */
        return NULL;
    }
    u = lua_touserdata(L, -1);
    lua_rawset(L, LUA_REGISTRYINDEX);
    return u;
}

/* shared_multi() -> the multi of the blocking requests (see above), for
 * Lua code that runs transfers of its own beside them (imm.parallel). */
static int l_shared_multi(lua_State *L) {
    if (shared_multi(L) == NULL)
        return push_failure(L, "HTTPError", "curl_multi_init failed");
    lua_pushlightuserdata(L, (void *)&shared_key);
    lua_rawget(L, LUA_REGISTRYINDEX);
    return 1;
}

static multi_ud *check_multi(lua_State *L) {
    return luaL_checkudata(L, 1, MULTI_MT);
}

/* m:add(h, method, url, headers_array, body [, fresh [, timeout]]) -> id | nil, code, message.
 * The caller keeps h referenced until the transfer is done or removed. */
static int multi_add(lua_State *L) {
    multi_ud *m = check_multi(L);
    http_ud *u = luaL_checkudata(L, 2, HTTP_MT);
    imm_http_request req;
    const char *stack_lines[32];
    imm_http_status st;
    long id;
    char err[320];
    read_request(L, 3, &req, stack_lines, sizeof stack_lines / sizeof stack_lines[0]);
    if (m->m == NULL)
        return push_closed(L, "multi handle");
    if (u->h == NULL)
        return push_closed(L, "HTTP handle");
    err[0] = '\0';
    u->seq++;
    st = imm_http_start(u->h, &req, err, sizeof err);
    if (st != IMM_HTTP_OK)
        return push_failure(L, http_code(st), err);
    id = imm_multi_add(m->m, u->h, err, sizeof err);
    if (id <= 0) {
        /* give the started exchange back so the handle stays usable */
        long status;
        int sent;
        char ignored[8];
        imm_http_finish(u->h, &status, &sent, ignored, sizeof ignored);
        return push_failure(L, id < 0 ? "OutOfMemory" : "HTTPError", err);
    }
    lua_pushinteger(L, (lua_Integer)id);
    return 1;
}

/* m:remove(h): aborts h's transfer; h:result() then reports Cancelled. */
static int multi_remove(lua_State *L) {
    multi_ud *m = check_multi(L);
    http_ud *u = luaL_checkudata(L, 2, HTTP_MT);
    if (m->m != NULL && u->h != NULL)
        imm_multi_remove(m->m, u->h);
    return 0;
}

/* m:perform() -> running, {done ids} or nil | nil, code, message */
static int multi_perform(lua_State *L) {
    multi_ud *m = check_multi(L);
    int running = 0, n = 0;
    imm_http *h;
    char err[256];
    if (m->m == NULL)
        return push_closed(L, "multi handle");
    err[0] = '\0';
    if (imm_multi_perform(m->m, &running, err, sizeof err) != 0) {
        return push_failure(L, "HTTPError", err);
    }
    lua_pushinteger(L, running);
    /* The table comes first, sized for every transfer that can be
     * reported (attached, or parked by a blocking request), so storing an
     * id never allocates: next_done detaches or unparks a transfer, and an
     * error raised after that would lose its completion (and strand its
     * task). */
    lua_createtable(L, imm_multi_unreported(m->m), 0);
    while ((h = imm_multi_next_done(m->m)) != NULL) {
        lua_pushinteger(L, (lua_Integer)imm_http_id(h));
        lua_rawseti(L, -2, ++n);
    }
    if (n == 0)
        lua_pop(L, 1);
    return n > 0 ? 2 : 1;
}

/* m:wait(ms) -> true | nil, code, message. Waits at most ms for socket
 * activity or a libcurl timer. */
static int multi_wait(lua_State *L) {
    multi_ud *m = check_multi(L);
    lua_Number ms = luaL_checknumber(L, 2);
    char err[256];
    if (m->m == NULL)
        return push_closed(L, "multi handle");
    if (ms > 86400000)
        ms = 86400000;
    err[0] = '\0';
    if (imm_multi_wait(m->m, ms > 0 ? (int)ms : 0, err, sizeof err) != 0) {
        return push_failure(L, "HTTPError", err);
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* m:timeout() -> ms libcurl wants to be called back within (-1: none) */
static int multi_timeout(lua_State *L) {
    multi_ud *m = check_multi(L);
    lua_pushinteger(L, m->m != NULL ? (lua_Integer)imm_multi_timeout(m->m) : -1);
    return 1;
}

static void push_socket(int fd, int rd, int wr, void *ud) {
    lua_State *L = ud;
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, fd);
    lua_setfield(L, -2, "fd");
    lua_pushboolean(L, rd);
    lua_setfield(L, -2, "read");
    lua_pushboolean(L, wr);
    lua_setfield(L, -2, "write");
    lua_rawseti(L, -2, (int)compat_rawlen(L, -2) + 1);
}

/* m:sockets() -> { {fd=, read=, write=}, ... } */
static int multi_sockets(lua_State *L) {
    multi_ud *m = check_multi(L);
    lua_newtable(L);
    if (m->m != NULL) {
        luaL_checkstack(L, 4, "imm.core: sockets");
        imm_multi_sockets(m->m, push_socket, L);
    }
    return 1;
}

/* m:h2_origins() -> how many origins the multi knows to speak HTTP/2 */
static int multi_h2_origins(lua_State *L) {
    multi_ud *m = check_multi(L);
    lua_pushinteger(L, m->m != NULL ? imm_multi_h2_origins(m->m) : 0);
    return 1;
}

/* m:count() -> transfers attached */
static int multi_count(lua_State *L) {
    multi_ud *m = check_multi(L);
    lua_pushinteger(L, m->m != NULL ? imm_multi_count(m->m) : 0);
    return 1;
}

/* m:preconnect(h, n) -> armed: once h's transfer on m is on a new
 * connection, n more TCP connections to its peer are opened for m's next
 * transfers (imm_multi_preconnect); m:preconnect(nil, 0) closes the unused. */
static int multi_preconnect(lua_State *L) {
    multi_ud *m = check_multi(L);
    http_ud *u = lua_isnoneornil(L, 2) ? NULL : luaL_checkudata(L, 2, HTTP_MT);
    lua_Number n = luaL_optnumber(L, 3, 0);
    int k = n >= 1 && n <= 1024 ? (int)n : 0;
    lua_pushboolean(L, m->m != NULL && imm_multi_preconnect(m->m, u != NULL ? u->h : NULL, k));
    return 1;
}

/* m:preconnected() -> opened, used, idle: the pre-connected sockets (tests) */
static int multi_preconnected(lua_State *L) {
    multi_ud *m = check_multi(L);
    long opened = 0, used = 0;
    int idle = 0;
    if (m->m != NULL)
        imm_multi_preconnected(m->m, &opened, &used, &idle);
    lua_pushinteger(L, (lua_Integer)opened);
    lua_pushinteger(L, (lua_Integer)used);
    lua_pushinteger(L, (lua_Integer)idle);
    return 3;
}

static int multi_close(lua_State *L) {
    multi_ud *m = check_multi(L);
    imm_multi_free(m->m); /* detaches every handle still attached */
    m->m = NULL;
    return 0;
}

/* gunzip(data [, max_bytes]) -> decoded | nil, code, message */
static int l_gunzip(lua_State *L) {
    size_t n;
    const char *in = luaL_checklstring(L, 1, &n);
    size_t max = to_size(L, luaL_optnumber(L, 2, 0), "max_bytes");
    sign_box *box = new_box(L, BOX_ONE);
    char err[128];
    imm_http_status st;
    err[0] = '\0';
    st = imm_http_gunzip(in, n, max, &box->u.one, err, sizeof err);
    if (st != IMM_HTTP_OK) {
        box_gc_now(box);
        lua_pushnil(L);
        lua_pushstring(L, http_code(st));
        lua_pushstring(L, err);
        return 3;
    }
    push_bytes(L, &box->u.one);
    box_gc_now(box);
    return 1;
}

static int l_backend(lua_State *L) {
    lua_pushstring(L, imm_http_backend_version());
    return 1;
}

static const luaL_Reg http_methods[] = {
    {"request", http_request},
    {"body", http_body},
    {"headers", http_headers},
    {"decode", http_decode},
    {"result", http_result},
    {"debug", http_debug},
    {"close", http_close},
    {NULL, NULL}};

static const luaL_Reg multi_methods[] = {
    {"add", multi_add},
    {"remove", multi_remove},
    {"perform", multi_perform},
    {"wait", multi_wait},
    {"timeout", multi_timeout},
    {"sockets", multi_sockets},
    {"count", multi_count},
    {"h2_origins", multi_h2_origins},
    {"preconnect", multi_preconnect},
    {"preconnected", multi_preconnected},
    {"close", multi_close},
    {NULL, NULL}};

static const luaL_Reg core_funcs[] = {
    {"sign_v3", l_sign_v3},
    {"sign_v2", l_sign_v2},
    {"percent_encode", l_percent_encode},
    {"redact", l_redact},
    {"hash_hex", l_hash_hex},
    {"hash_file", l_hash_file},
    {"hmac_hex", l_hmac_hex},
    {"hmac_key", l_hmac_key},
    {"rsa_verify", l_rsa_verify},
    {"nonce", l_nonce},
    {"random", l_random},
    {"bad_element", l_bad_element},
    {"sleep", l_sleep},
    {"monotonic", l_monotonic},
    {"http", l_http},
    {"multi", l_multi},
    {"shared_multi", l_shared_multi},
    {"gunzip", l_gunzip},
    {"backend", l_backend},
    {"json_decode", imm_json_decode},
    {"json_encode", imm_json_encode},
    {"number_text", imm_number_text},
    {NULL, NULL}};

/* A handle type's metatable: methods, and close as __gc and __close, so a
 * handle is released however its owner lets go of it. Left on the stack. */
static void new_handle_type(lua_State *L, const char *name, const luaL_Reg *methods,
                            lua_CFunction close) {
    luaL_newmetatable(L, name);
    lua_newtable(L);
    compat_setfuncs(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
}

/* Keeps this module, and so libcurl, OpenSSL and their dependencies, loaded
 * until the process ends. Lua unloads C modules in lua_close(); libcurl's
 * global state (curl_global_init, never undone) would then be lost, and set
 * up afresh on each reload, by a host that opens and closes states; and
 * LeakSanitizer reads stale thread-local blocks of unloaded libraries.
 * OpenSSL pins itself for the same reasons. Linked into a program
 * (libimm.a), dladdr names the program and this changes nothing. */
static void pin_module(void) {
    Dl_info info;
    if (dladdr((void *)(uintptr_t)pin_module, &info) != 0 && info.dli_fname != NULL)
        (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
}

__attribute__((visibility("default"))) int luaopen_imm_core(lua_State *L) {
    pin_module();
    new_handle_type(L, HTTP_MT, http_methods, http_close);
    lua_pushcfunction(L, http_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    new_handle_type(L, MULTI_MT, multi_methods, multi_close);
    lua_pop(L, 1);
    if (luaL_newmetatable(L, BOX_MT)) {
        lua_pushcfunction(L, box_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, HMACKEY_MT)) {
        lua_pushcfunction(L, hmac_key_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    lua_newtable(L);
    compat_setfuncs(L, core_funcs);
    lua_pushliteral(L, IMM_VERSION);
    lua_setfield(L, -2, "_VERSION");
    /* JSON null: the NULL light userdata, equal to lua-cjson's cjson.null,
     * so imm needs no lua-cjson for a null that both encoders write */
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    return 1;
}
