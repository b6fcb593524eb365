/*
 * imm_core.c - the `imm.core` Lua module. With imm_json.c (which builds Lua
 * tables from JSON), the only C that includes Lua.
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
#include <math.h>
#include <stdarg.h>
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
#include "imm_jsonenc.h"
#include "imm_sign.h"

/* The build passes IMM_VERSION (Makefile and rockspec alike). */
#ifndef IMM_VERSION
#error "build with -DIMM_VERSION='\"x.y.z\"' (see the Makefile)"
#endif
#define HTTP_MT "imm.core.http"
#define MULTI_MT "imm.core.multi"
#define BOX_MT "imm.core.signbox"

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
 * pointers stay valid while the table at `idx` is alive on the stack.
 * Leaves the userdata on the stack. */
static imm_kv *table_to_kv(lua_State *L, int idx, const char *what, size_t *out_n) {
    size_t n = 0, i = 0;
    imm_kv *kv;
    idx = lua_absindex(L, idx);
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        n++;
        lua_pop(L, 1);
    }
    kv = compat_newuserdata(L, (n ? n : 1) * sizeof *kv);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "imm.core: %s keys and values must be strings", what);
        kv[i].k = lua_tolstring(L, -2, &kv[i].klen);
        kv[i].v = lua_tolstring(L, -1, &kv[i].vlen);
        i++;
        lua_pop(L, 1);
    }
    *out_n = i;
    return kv;
}

/* --- signing -------------------------------------------------------------- */

/* The outputs of one signing call, boxed so __gc frees them on any error. */
typedef struct sign_box {
    int kind; /* 0 empty, 1 = one buffer, 2 = v2, 3 = v3 */
    union {
        imm_buf one;
        imm_v3_output v3;
        imm_v2_output v2;
    } u;
} sign_box;


/* Frees a box's buffers as soon as their contents are in Lua. */
static void box_gc_now(sign_box *b) {
    if (b->kind == 3)
        imm_v3_output_free(&b->u.v3);
    else if (b->kind == 2)
        imm_v2_output_free(&b->u.v2);
    else if (b->kind == 1)
        imm_buf_free(&b->u.one);
    b->kind = 0;
}

static int box_gc(lua_State *L) {
    box_gc_now(luaL_checkudata(L, 1, BOX_MT));
    return 0;
}

static sign_box *new_box(lua_State *L, int kind) {
    sign_box *b = compat_newuserdata(L, sizeof *b);
    b->kind = 0;
    luaL_getmetatable(L, BOX_MT);
    lua_setmetatable(L, -2);
    if (kind == 3)
        imm_v3_output_init(&b->u.v3);
    else if (kind == 2)
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

/* sign_v3(alg, method, path, query, headers, payload_hash, key_id, secret [, debug])
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
    in.secret = luaL_checklstring(L, 8, &in.secret_len);
    debug = lua_toboolean(L, 9);
    in.query = table_to_kv(L, 4, "query", &in.nquery);
    in.headers = table_to_kv(L, 5, "header", &in.nheaders);
    box = new_box(L, 3);
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
    box = new_box(L, 2);
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
    sign_box *box = new_box(L, 1);
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
    box = new_box(L, 1);
    box->u.one.sensitive = 1;
    if (imm_redact(&box->u.one, s, n, secret, slen, mask, mlen) != IMM_OK)
        return luaL_error(L, "imm.core: out of memory"); /* __gc frees the box */
    push_bytes(L, &box->u.one);
    box_gc_now(box);
    return 1;
}

static int l_hash_hex(lua_State *L) {
    imm_hash alg = check_hash(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    unsigned char md[IMM_MAX_DIGEST];
    unsigned int mdlen = 0;
    char hex[2 * IMM_MAX_DIGEST + 1];
    if (imm_digest(alg, s, n, md, &mdlen) != IMM_OK) {
        lua_pushnil(L);
        lua_pushstring(L, "SigningFailed");
        lua_pushstring(L, "digest unavailable in this OpenSSL");
        return 3;
    }
    imm_hex(md, mdlen, hex);
    lua_pushstring(L, hex);
    return 1;
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

/* nonce() -> 32 lower-case hex characters from RAND_bytes (128 bits) */
static int l_nonce(lua_State *L) {
    unsigned char r[16];
    char hex[33];
    if (imm_random(r, sizeof r) != IMM_OK)
        return luaL_error(L, "imm.core: RAND_bytes failed");
    imm_hex(r, sizeof r, hex);
    lua_pushstring(L, hex);
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
    imm_http *h; /* NULL once closed */
    int shared;  /* blocking requests run on the lua_State's shared multi */
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
    default: return "HTTPError";
    }
}

/* Seconds to whole milliseconds for libcurl, without undefined casts:
 * NaN and negatives raise (the Lua layer validates first), 0 stays 0 (no
 * timeout), anything above 0 but below 1 ms becomes 1 ms (0 would turn
 * the timeout off), and huge values are capped at 30 days. */
static long seconds_to_ms(lua_State *L, lua_Number v, const char *what) {
    double ms;
    if (v != v || v < 0)
        luaL_error(L, "imm.core: %s must be a number >= 0", what);
    if (v == 0)
        return 0;
    ms = (double)v * 1000.0;
    if (ms > 30.0 * 86400 * 1000)
        return 30L * 86400 * 1000;
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
 * number into a new string that nothing references once popped. */
static const char *opt_string_field(lua_State *L, int t, const char *k) {
    const char *v = NULL;
    lua_getfield(L, t, k);
    if (lua_type(L, -1) == LUA_TSTRING)
        v = lua_tostring(L, -1);
    else if (!lua_isnil(L, -1))
        luaL_error(L, "imm.core: option %s must be a string", k);
    lua_pop(L, 1); /* the string stays referenced by the table */
    return v;
}

/* nil, code, message: the run-time failure convention of this module */
static int push_failure(lua_State *L, const char *code, const char *msg) {
    lua_pushnil(L);
    lua_pushstring(L, code);
    lua_pushstring(L, msg);
    return 3;
}

/* http{connect_timeout=s, timeout=s, ca_file=, insecure=, user_agent=,
 *      max_response_bytes=, no_proxy=, shared=} -> handle, or nil, code, message.
 * no_proxy: never use a proxy (CURLOPT_NOPROXY "*"), for link-local
 * credential services whose replies a proxy must never see.
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
    lua_getfield(L, 1, "no_proxy");
    o.no_proxy = lua_toboolean(L, -1);
    lua_pop(L, 1);
    /* created closed, then opened, so __gc is always safe */
    u = compat_newuserdata(L, sizeof *u);
    u->h = NULL;
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

/* Reads (method, url, header_lines, body [, fresh [, timeout]]) at stack
 * slots base..base+5 into req. fresh: use a new connection (for requests
 * that must not be sent twice). timeout: seconds this exchange may take at
 * most (nil: the handle's timeout). Header line pointers stay valid while
 * the table is on the stack. */
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
    if (n > nstack)
        lines = compat_newuserdata(L, n * sizeof *lines);
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, base + 2, (int)i + 1);
        /* strings only: a number's lua_tostring would be a temporary,
         * freed once popped */
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "imm.core: header lines must be strings");
        lines[i] = lua_tostring(L, -1);
        lua_pop(L, 1); /* still referenced by the table */
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

/* h:request(method, url, headers_array, body [, fresh [, timeout]]) -> see push_outcome.
 * Blocking: the same start/transfer/finish as the multi path, driven to
 * completion on the lua_State's shared multi (see shared_multi). */
static int http_request(lua_State *L) {
    http_ud *u = luaL_checkudata(L, 1, HTTP_MT);
    imm_http_request req;
    const char *stack_lines[32];
    long status = 0;
    int sent = 0;
    imm_http_status st;
    multi_ud *m;
    char err[320]; /* CURL_ERROR_SIZE (256) plus our prefix */

    read_request(L, 2, &req, stack_lines, sizeof stack_lines / sizeof stack_lines[0]);
    if (u->h == NULL)
        return push_closed(L, "HTTP handle");
    m = u->shared ? shared_multi(L) : NULL; /* may raise (out of memory): nothing is started yet */
    err[0] = '\0';
    /* No Lua runs until perform returns; the buffers stay owned by u->h. */
    if (m != NULL)
        st = imm_http_perform_on(u->h, m->m, &req, &status, &sent, err, sizeof err);
    else
        st = imm_http_perform(u->h, &req, &status, &sent, err, sizeof err);
    return push_outcome(L, u->h, st, status, sent, err);
}

/* h:debug() -> { capath_cleared = bool, pipewait = bool }, for the specs. */
static int http_debug(lua_State *L) {
    http_ud *u = luaL_checkudata(L, 1, HTTP_MT);
    int capath = 0, pipewait = 0;
    if (u->h != NULL)
        imm_http_debug(u->h, &capath, &pipewait);
    lua_createtable(L, 0, 2);
    lua_pushboolean(L, capath);
    lua_setfield(L, -2, "capath_cleared");
    lua_pushboolean(L, pipewait);
    lua_setfield(L, -2, "pipewait");
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
    if (imm_http_state(u->h) != 2)
        return push_failure(L, "InvalidState", imm_http_state(u->h) == 1 ? "the transfer is still in flight"
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
 * all clients of a state share one connection cache and one parsed CA store
 * (libcurl keeps both in the multi): a new client pays neither the handshake
 * nor the CA parse again. Held in the registry; made on first use, and again
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
        lua_pop(L, 4);
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
    st = imm_http_start(u->h, &req, err, sizeof err);
    if (st != IMM_HTTP_OK)
        return push_failure(L, http_code(st), err);
    id = imm_multi_add(m->m, u->h, err, sizeof err);
    if (id == 0) {
        /* give the started exchange back so the handle stays usable */
        long status;
        int sent;
        char ignored[8];
        imm_http_finish(u->h, &status, &sent, ignored, sizeof ignored);
        return push_failure(L, "HTTPError", err);
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
    /* The table comes first, sized for every attached transfer, so storing
     * an id never allocates: next_done detaches a transfer, and an error
     * raised after that would lose its completion (and strand its task). */
    lua_createtable(L, imm_multi_count(m->m), 0);
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
    sign_box *box = new_box(L, 1);
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

/* --- JSON encoding ---------------------------------------------------------- */

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

/* An object key, kept while the table that holds it is on the stack. */
typedef struct enc_key {
    const char *s;
    size_t len;
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
            snprintf(tmp, sizeof tmp, "%s", "nan");
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
    int rc = 0;
    if (imm_buf_addc(c->out, '{') != 0)
        return enc_nomem(c);
    if (count == 0)
        return imm_buf_addc(c->out, '}') == 0 ? 0 : enc_nomem(c);
    /* GC-owned, so an error raised below cannot leak it */
    keys = compat_newuserdata(L, count * sizeof *keys);
    lua_pushnil(L);
    while (lua_next(L, t) != 0) {
        lua_pop(L, 1);
        /* census found `count` string keys; the bounds hold even if a __gc
         * finalizer run by an allocation above has changed the table */
        if (i < count && lua_type(L, -1) == LUA_TSTRING) {
            keys[i].s = lua_tolstring(L, -1, &keys[i].len);
            i++;
        }
    }
    n = i;
    qsort(keys, n, sizeof *keys, cmp_keys);
    for (i = 0; i < n && rc == 0; i++) {
        int sub = 0;
        if (i > 0 && imm_buf_addc(c->out, ',') != 0)
            return enc_nomem(c);
        c->path[c->depth].key = keys[i].s;
        c->path[c->depth].klen = keys[i].len;
        if (enc_string(c, keys[i].s, keys[i].len, 1) != 0)
            return -1;
        if (imm_buf_addc(c->out, ':') != 0)
            return enc_nomem(c);
        lua_pushlstring(L, keys[i].s, keys[i].len);
        lua_rawget(L, t);
        if (fields != 0) {
            lua_pushlstring(L, keys[i].s, keys[i].len);
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
    lua_pop(L, 1); /* the key array */
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
 * ignored: a table is read raw and no metamethod is called.
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
static int l_json_encode(lua_State *L) {
    enc_ctx *c;
    sign_box *box;
    int rc;
    lua_settop(L, 3);
    if (!lua_isnil(L, 3))
        luaL_checktype(L, 3, LUA_TSTRING);
    /* the context (3 KB of path) lives in a userdata, off the C stack */
    c = compat_newuserdata(L, sizeof *c); /* slot 4 */
    box = new_box(L, 1);                  /* slot 5: owns the output */
    lua_pushnil(L);                       /* slot 6: the error message */
    c->L = L;
    c->out = &box->u.one;
    c->errslot = 6;
    c->depth = 0;
    c->name = lua_isnil(L, 3) ? "" : lua_tolstring(L, 3, &c->namelen);
    if (lua_isnil(L, 3))
        c->namelen = 0;
    rc = enc_value(c, 1, lua_isnil(L, 2) ? 0 : 2);
    if (rc != 0) {
        box_gc_now(box);
        lua_pushnil(L);
        lua_pushvalue(L, 6);
        return 2;
    }
    push_bytes(L, &box->u.one);
    box_gc_now(box);
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
static int l_number_text(lua_State *L) {
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

static const luaL_Reg http_methods[] = {
    {"request", http_request},
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
    {"close", multi_close},
    {NULL, NULL}};

static const luaL_Reg core_funcs[] = {
    {"sign_v3", l_sign_v3},
    {"sign_v2", l_sign_v2},
    {"percent_encode", l_percent_encode},
    {"redact", l_redact},
    {"hash_hex", l_hash_hex},
    {"hmac_hex", l_hmac_hex},
    {"rsa_verify", l_rsa_verify},
    {"nonce", l_nonce},
    {"random", l_random},
    {"sleep", l_sleep},
    {"monotonic", l_monotonic},
    {"http", l_http},
    {"multi", l_multi},
    {"shared_multi", l_shared_multi},
    {"gunzip", l_gunzip},
    {"backend", l_backend},
    {"json_decode", imm_json_decode},
    {"json_encode", l_json_encode},
    {"number_text", l_number_text},
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
