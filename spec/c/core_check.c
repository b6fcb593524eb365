/*
 * core_check - checks of the C core that need a C host, run by
 * spec/16_core_hardening_spec.lua (built by `make core-check`):
 *
 *   core_check stack
 *     decodes JSON nested 1000 deep (the limit) and 1001 deep on a thread
 *     whose stack is 64 KB, as an embedder with small stacks would; a stack
 *     overflow kills the process.
 *
 *   core_check alloc DRIVER.lua URL
 *     a failing-allocator sweep over signing, JSON, HTTP, the multi (one
 *     reused, one new each time, and transfers parked on the shared multi
 *     during a blocking request). For
 *     each operation the driver defines, the N-th allocation is made to
 *     fail, for N = 0, 1, 2, ... until the operation runs without reaching
 *     it; once with only that allocation failing, once with every later one
 *     failing too. The allocations are Lua's (lua_Alloc), imm's own (src/
 *     is compiled with malloc, calloc and realloc renamed to ours), libcurl's
 *     (curl_global_init_mem; not for an operation listed in the driver's
 *     spare_curl) and OpenSSL's (CRYPTO_set_mem_functions). Each
 *     time the operation must end in an error value (nil, code) or a Lua
 *     memory error, or succeed with the right result; and the same operation
 *     run again without failures must succeed with the right result (so no
 *     state was left broken, and no completion was lost). Built with ASan,
 *     any leak or bad access fails the run.
 *
 * Exit status 0 when every check passed; the last line says what was done.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <openssl/crypto.h>

#include "imm_json.h"

int luaopen_imm_core(lua_State *L);
void *check_malloc(size_t n);
void *check_calloc(size_t n, size_t m);
void *check_realloc(void *p, size_t n);

/* --- the failure switch --------------------------------------------------- */

static long countdown = -1; /* allocations left before one fails; -1: off */
static int persistent;      /* after the first failure, fail every one */
static int injected;        /* a failure happened since arm() */
static pthread_t main_thread;

static void arm(long n, int all_after) {
    countdown = n;
    persistent = all_after;
    injected = 0;
}

static void disarm(void) {
    countdown = -1;
}

/* Only the main thread's allocations fail: a helper thread of a library
 * would make the sweep depend on timing. */
static int fail_now(void) {
    if (countdown < 0 || !pthread_equal(pthread_self(), main_thread))
        return 0;
    if (countdown == 0) {
        injected = 1;
        if (!persistent)
            countdown = -1;
        return 1;
    }
    countdown--;
    return 0;
}

void *check_malloc(size_t n) {
    return fail_now() ? NULL : malloc(n);
}

void *check_calloc(size_t n, size_t m) {
    return fail_now() ? NULL : calloc(n, m);
}

void *check_realloc(void *p, size_t n) {
    return fail_now() ? NULL : realloc(p, n);
}

/* libcurl's allocations, failing like the others unless curl_spared */
static int curl_spared;

static void *curl_malloc(size_t n) {
    return curl_spared ? malloc(n) : check_malloc(n);
}

static void *curl_calloc(size_t n, size_t m) {
    return curl_spared ? calloc(n, m) : check_calloc(n, m);
}

static void *curl_realloc(void *p, size_t n) {
    return curl_spared ? realloc(p, n) : check_realloc(p, n);
}

static char *check_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = curl_malloc(n);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

static void *ossl_malloc(size_t n, const char *file, int line) {
    (void)file;
    (void)line;
    return check_malloc(n);
}

static void *ossl_realloc(void *p, size_t n, const char *file, int line) {
    (void)file;
    (void)line;
    return check_realloc(p, n);
}

static void ossl_free(void *p, const char *file, int line) {
    (void)file;
    (void)line;
    free(p);
}

static void *lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    /* Lua assumes a shrinking block never fails */
    if (ptr != NULL && nsize <= osize)
        return realloc(ptr, nsize);
    return check_realloc(ptr, nsize);
}

/* --- stack ------------------------------------------------------------------ */

static const char *stack_result;

static void *stack_thread(void *arg) {
    lua_State *L = luaL_newstate();
    char *doc;
    int depth, ok = 1;
    (void)arg;
    if (L == NULL) {
        stack_result = "no Lua state";
        return NULL;
    }
    doc = malloc(8 * 1100);
    if (doc == NULL) {
        lua_close(L);
        stack_result = "out of memory";
        return NULL;
    }
    for (depth = 999; depth <= 1001 && ok; depth++) {
        int kind;
        for (kind = 0; kind < 3 && ok; kind++) {
            size_t n = 0;
            int i;
            /* arrays, objects, and both in turn */
            for (i = 0; i < depth; i++) {
                if (kind == 0 || (kind == 2 && i % 2 == 0)) {
                    doc[n++] = '[';
                } else {
                    memcpy(doc + n, "{\"a\":", 5);
                    n += 5;
                }
            }
            doc[n++] = '1';
            for (i = depth - 1; i >= 0; i--)
                doc[n++] = (kind == 0 || (kind == 2 && i % 2 == 0)) ? ']' : '}';
            lua_settop(L, 0);
            lua_pushcfunction(L, imm_json_decode);
            lua_pushlstring(L, doc, n);
            lua_pushboolean(L, 0);
            if (lua_pcall(L, 2, 2, 0) != LUA_OK) {
                stack_result = "json_decode raised";
                ok = 0;
            } else if (depth <= 1000 && !lua_istable(L, -2)) {
                stack_result = "a document within the limit was refused";
                ok = 0;
            } else if (depth > 1000 && !(lua_isnil(L, -2) && lua_isstring(L, -1) &&
                                         strstr(lua_tostring(L, -1), "nested") != NULL)) {
                stack_result = "a document over the limit was not refused as too deep";
                ok = 0;
            }
        }
    }
    free(doc);
    lua_close(L);
    if (ok)
        stack_result = "ok";
    return NULL;
}

static int run_stack(void) {
    pthread_attr_t a;
    pthread_t t;
    size_t size = 64 * 1024;
    pthread_attr_init(&a);
    if (pthread_attr_setstacksize(&a, size) != 0) {
        fprintf(stderr, "core_check: cannot set a %zu-byte stack\n", size);
        return 1;
    }
    if (pthread_create(&t, &a, stack_thread, NULL) != 0) {
        fprintf(stderr, "core_check: pthread_create failed\n");
        return 1;
    }
    pthread_join(t, NULL);
    pthread_attr_destroy(&a);
    printf("stack: json_decode at depths 999-1001 on a %zu KB stack: %s\n", size / 1024,
           stack_result ? stack_result : "(no result)");
    return stack_result != NULL && strcmp(stack_result, "ok") == 0 ? 0 : 1;
}

/* --- alloc ------------------------------------------------------------------ */

/* Calls ops[name]() under pcall. Returns 1 and leaves the result string on
 * the stack (success), 0 for an error value or a Lua memory error, -1 for
 * anything else (with a message printed). */
static int call_op(lua_State *L, const char *name) {
    int rc;
    lua_settop(L, 1); /* the ops table */
    lua_getfield(L, 1, name);
    rc = lua_pcall(L, 0, 2, 0);
    if (rc == LUA_ERRMEM)
        return 0;
    if (rc != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        /* a memory error raised by Lua surfaces as LUA_ERRMEM; imm.core
         * raises "imm.core: out of memory" where it has no value to return */
        if (msg != NULL && (strstr(msg, "not enough memory") != NULL || strstr(msg, "out of memory") != NULL))
            return 0;
        fprintf(stderr, "core_check: %s raised: %s\n", name, msg ? msg : "(not a string)");
        return -1;
    }
    if (lua_type(L, -2) == LUA_TSTRING)
        return 1;
    if (lua_isnil(L, -2) && lua_type(L, -1) == LUA_TSTRING)
        return 0;
    fprintf(stderr, "core_check: %s returned neither a result nor nil, code\n", name);
    return -1;
}

static int sweep(lua_State *L, const char *name, int all_after, long *points) {
    char *ref;
    long n;
    disarm();
    /* ops.spare_curl[name]: libcurl's own allocations do not fail for it */
    lua_getfield(L, 1, "spare_curl");
    curl_spared = lua_istable(L, -1) && lua_getfield(L, -1, name) != LUA_TNIL && lua_toboolean(L, -1);
    lua_settop(L, 1);
    if (call_op(L, name) != 1) {
        fprintf(stderr, "core_check: %s fails without any allocation failure\n", name);
        return -1;
    }
    ref = strdup(lua_tostring(L, -2));
    for (n = 0; n < 20000; n++) {
        int r;
        arm(n, all_after);
        r = call_op(L, name);
        disarm();
        if (r < 0)
            break;
        if (r == 1 && strcmp(lua_tostring(L, -2), ref) != 0) {
            fprintf(stderr, "core_check: %s returned a wrong result with allocation %ld failing\n", name, n);
            r = -1;
            break;
        }
        if (!injected) { /* ran to the end without reaching allocation n */
            *points = n;
            free(ref);
            return 0;
        }
        lua_gc(L, LUA_GCCOLLECT, 0);
        /* the same operation, nothing failing: it must work again. A
         * transfer the failure interrupted may first finish with its error
         * (libcurl reports some allocation failures as connection errors) */
        r = call_op(L, name);
        if (r == 0)
            r = call_op(L, name);
        if (r != 1 || strcmp(lua_tostring(L, -2), ref) != 0) {
            fprintf(stderr, "core_check: %s does not recover after allocation %ld failed: %s\n", name, n,
                    r == 0 && lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "a wrong result");
            break;
        }
    }
    free(ref);
    if (n == 20000)
        fprintf(stderr, "core_check: %s: more than 20000 allocations\n", name);
    return -1;
}

static int run_alloc(const char *driver, const char *url) {
    static const char *const ops[] = {"sign", "rsa", "json", "http", "multi", "fresh_multi", "parked", NULL};
    lua_State *L;
    int i, status = 0;
    disarm();
    L = lua_newstate(lua_alloc, NULL);
    if (L == NULL)
        return 1;
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_imm_core);
    lua_setfield(L, -2, "imm.core");
    lua_pop(L, 1);
    if (luaL_loadfile(L, driver) != LUA_OK) {
        fprintf(stderr, "core_check: %s\n", lua_tostring(L, -1));
        lua_close(L);
        return 1;
    }
    lua_pushstring(L, url);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK || !lua_istable(L, -1)) {
        fprintf(stderr, "core_check: the driver failed: %s\n", lua_tostring(L, -1));
        lua_close(L);
        return 1;
    }
    for (i = 0; ops[i] != NULL && status == 0; i++) {
        int all_after;
        for (all_after = 0; all_after <= 1 && status == 0; all_after++) {
            long points = 0;
            if (sweep(L, ops[i], all_after, &points) != 0) {
                status = 1;
                break;
            }
            printf("alloc: %s: each of %ld allocations%s failed in turn (%s): no crash, an error each time\n",
                   ops[i], points, curl_spared ? " (but libcurl's own)" : "",
                   all_after ? "and every one after it" : "that one alone");
        }
    }
    lua_settop(L, 1);
    lua_getfield(L, 1, "close");
    if (lua_isfunction(L, -1))
        lua_pcall(L, 0, 0, 0);
    lua_close(L);
    return status;
}

int main(int argc, char **argv) {
    int rc;
    main_thread = pthread_self();
    /* before anything allocates through OpenSSL or libcurl */
    CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free);
    if (curl_global_init_mem(CURL_GLOBAL_DEFAULT, curl_malloc, free, curl_realloc, check_strdup,
                             curl_calloc) != CURLE_OK) {
        fprintf(stderr, "core_check: curl_global_init_mem failed\n");
        return 1;
    }
    if (argc >= 2 && strcmp(argv[1], "stack") == 0)
        rc = run_stack();
    else if (argc >= 4 && strcmp(argv[1], "alloc") == 0)
        rc = run_alloc(argv[2], argv[3]);
    else {
        fprintf(stderr, "usage: core_check stack | core_check alloc DRIVER.lua URL\n");
        rc = 2;
    }
    curl_global_cleanup();
    printf("core_check: %s\n", rc == 0 ? "passed" : "FAILED");
    return rc;
}
