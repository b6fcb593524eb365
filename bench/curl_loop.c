/*
 * curl_loop.c - the limits imm is measured against: libcurl alone (the I/O
 * limit) and, built with -DBENCH_CJSON, libcurl plus lua-cjson's
 * cjson.decode of each body through the Lua C API (the limit with
 * lua-cjson), linked with Lua 5.4, or with LuaJIT when -DBENCH_LUAJIT is
 * given too.
 *
 *   curl_loop --url http://127.0.0.1:PORT --tokens FILE [--ca CA.crt]
 *             [--page-size 100] [--seconds 3] [--warmup 200] [--check]
 *
 * FILE holds the chain's NextToken values, one a line, the first line empty
 * (page 1). The loop POSTs to the same URLs imm asks for, in NextToken order,
 * over one reused easy handle set up as imm_http.c sets up its own (gzip
 * accepted, TCP keep-alive, no signals, the CA file), with header lines of
 * the same names and sizes as imm's signed ones but fixed values: no
 * signing, no Lua, the body appended to one reused buffer. The cjson build
 * then pushes the body as a Lua string and calls cjson.decode (from the
 * system's package.cpath) on it, and counts the Bindings of the result.
 *
 * Prints one JSON line like the other runners: calls, bindings, wall and
 * cpu seconds (CLOCK_PROCESS_CPUTIME_ID, timed part only), VmHWM and VmRSS
 * in KiB.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#ifdef BENCH_CJSON
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#if LUA_VERSION_NUM < 502 /* LuaJIT */
#define lua_rawlen lua_objlen
#endif
#ifndef LUA_OK
#define LUA_OK 0
#endif
#ifdef BENCH_LUAJIT
#include <luajit.h>
#define BENCH_LUA LUAJIT_VERSION
#else
#define BENCH_LUA LUA_RELEASE
#endif
#endif

#define MAX_PAGES 64

typedef struct buf {
    char *p;
    size_t len, cap;
} buf;

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud) {
    buf *b = ud;
    size_t n = size * nmemb;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        char *p;
        while (cap < b->len + n + 1)
            cap *= 2;
        p = realloc(b->p, cap);
        if (p == NULL)
            return 0;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return n;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud) {
    (void)data;
    (void)ud;
    return size * nmemb;
}

static double now(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long proc_status_kb(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            v = strtol(line + n + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

static void die(const char *what) {
    fprintf(stderr, "curl_loop: %s\n", what);
    exit(1);
}

typedef struct loop {
    CURL *curl;
    struct curl_slist *headers;
    char *urls[MAX_PAGES];
    int npages;
    buf body;
    long calls, bindings;
    int check;
#ifdef BENCH_CJSON
    lua_State *L;
#endif
} loop;

#ifndef BENCH_CJSON
/* Counts "ProjectName" keys: the bindings in a body, for the libcurl-only
 * loop, which must not parse. Done only in --check mode. */
static long count_bindings_raw(const char *s) {
    long n = 0;
    while ((s = strstr(s, "\"ProjectName\"")) != NULL) {
        n++;
        s++;
    }
    return n;
}
#endif

static void one_call(loop *lp, int page) {
    CURLcode rc;
    long status = 0;
    lp->body.len = 0;
    curl_easy_setopt(lp->curl, CURLOPT_URL, lp->urls[page]);
    rc = curl_easy_perform(lp->curl);
    if (rc != CURLE_OK) {
        fprintf(stderr, "curl_loop: %s: %s\n", lp->urls[page], curl_easy_strerror(rc));
        exit(1);
    }
    curl_easy_getinfo(lp->curl, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        fprintf(stderr, "curl_loop: %s: HTTP %ld\n", lp->urls[page], status);
        exit(1);
    }
    lp->calls++;
#ifdef BENCH_CJSON
    {
        lua_State *L = lp->L;
        lua_getfield(L, LUA_REGISTRYINDEX, "bench.decode");
        lua_pushlstring(L, lp->body.p, lp->body.len);
        lua_call(L, 1, 1);
        if (lua_type(L, -1) != LUA_TTABLE)
            die("cjson.decode did not return a table");
        lua_getfield(L, -1, "Bindings");
        lp->bindings += (long)lua_rawlen(L, -1);
        lua_pop(L, 2);
    }
#else
    lp->bindings += lp->check ? count_bindings_raw(lp->body.p ? lp->body.p : "") : 0;
#endif
}

int main(int argc, char **argv) {
    const char *url = NULL, *tokens = NULL, *ca = NULL;
    int page_size = 100, check = 0, i;
    double seconds = 3, t0, c0, wall, cpu, deadline;
    long warmup = 200;
    loop lp;
    FILE *f;
    char line[512];

    memset(&lp, 0, sizeof lp);
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--check") == 0) {
            check = 1;
            continue;
        }
        if (i + 1 >= argc)
            die("an option is missing its value");
        if (strcmp(a, "--url") == 0) url = argv[++i];
        else if (strcmp(a, "--tokens") == 0) tokens = argv[++i];
        else if (strcmp(a, "--ca") == 0) ca = argv[++i];
        else if (strcmp(a, "--page-size") == 0) page_size = atoi(argv[++i]);
        else if (strcmp(a, "--seconds") == 0) seconds = atof(argv[++i]);
        else if (strcmp(a, "--warmup") == 0) warmup = atol(argv[++i]);
        else die("unknown option");
    }
    if (url == NULL || tokens == NULL)
        die("usage: curl_loop --url URL --tokens FILE [--ca CA] [--page-size N] [--seconds S] [--warmup N] [--check]");
    lp.check = check;

    /* The URLs imm sends: its canonical query, sorted by name. */
    f = fopen(tokens, "r");
    if (f == NULL)
        die("cannot open the tokens file");
    while (fgets(line, sizeof line, f) != NULL && lp.npages < MAX_PAGES) {
        size_t n = strcspn(line, "\r\n");
        size_t cap = strlen(url) + n + 128;
        line[n] = '\0';
        lp.urls[lp.npages] = malloc(cap);
        if (lp.urls[lp.npages] == NULL)
            die("out of memory");
        if (n > 0)
            snprintf(lp.urls[lp.npages], cap, "%s/?MaxResults=%d&NextToken=%s&ProjectName=immtest", url, page_size, line);
        else
            snprintf(lp.urls[lp.npages], cap, "%s/?MaxResults=%d&ProjectName=immtest", url, page_size);
        lp.npages++;
    }
    fclose(f);
    if (lp.npages == 0)
        die("no tokens");

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        die("curl_global_init failed");
    lp.curl = curl_easy_init();
    if (lp.curl == NULL)
        die("curl_easy_init failed");
    curl_easy_setopt(lp.curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(lp.curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(lp.curl, CURLOPT_WRITEDATA, &lp.body);
    curl_easy_setopt(lp.curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(lp.curl, CURLOPT_ACCEPT_ENCODING, "gzip");
    curl_easy_setopt(lp.curl, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(lp.curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(lp.curl, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(lp.curl, CURLOPT_USERAGENT, "imm-lua/0.1.0 (Lua 5.4)");
    if (ca != NULL)
        curl_easy_setopt(lp.curl, CURLOPT_CAINFO, ca);
    curl_easy_setopt(lp.curl, CURLOPT_POST, 1L);
    curl_easy_setopt(lp.curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    curl_easy_setopt(lp.curl, CURLOPT_POSTFIELDS, "");
    {
        /* imm's header lines, with fixed values of the same length */
        static const char *const h[] = {
            "accept: application/json",
            "x-acs-version: 2020-09-30",
            "authorization: ACS3-HMAC-SHA256 Credential=bench-id,SignedHeaders=host;x-acs-action;"
            "x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,"
            "Signature=0f408e00bb45c6c67e4f350fb04882e24271575283f7cb200e05a491cdf053e9",
            "x-acs-action: ListBindings",
            "x-acs-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "x-acs-date: 2024-06-07T10:00:00Z",
            "x-acs-signature-nonce: 529a5bab5dbe2ac11455ffc05088f8e6",
            "Content-Type:",
            "Expect:",
        };
        size_t k;
        for (k = 0; k < sizeof h / sizeof h[0]; k++) {
            struct curl_slist *t = curl_slist_append(lp.headers, h[k]);
            if (t == NULL)
                die("out of memory");
            lp.headers = t;
        }
        curl_easy_setopt(lp.curl, CURLOPT_HTTPHEADER, lp.headers);
    }

#ifdef BENCH_CJSON
    lp.L = luaL_newstate();
    if (lp.L == NULL)
        die("luaL_newstate failed");
    luaL_openlibs(lp.L);
    if (luaL_dostring(lp.L, "return require('cjson').decode") != LUA_OK) {
        fprintf(stderr, "curl_loop: %s\n", lua_tostring(lp.L, -1));
        return 1;
    }
    lua_setfield(lp.L, LUA_REGISTRYINDEX, "bench.decode");
#endif

    if (check) {
        for (i = 0; i < lp.npages; i++) {
            long before = lp.bindings;
            one_call(&lp, i);
            printf("%s{\"page\":%d,\"bytes\":%zu,\"bindings\":%ld}", i ? "," : "{\"check\":true,\"pages\":[",
                   i + 1, lp.body.len, lp.bindings - before);
        }
        printf("],\"calls\":%ld,\"bindings\":%ld}\n", lp.calls, lp.bindings);
        return 0;
    }

    while (lp.calls < warmup)
        for (i = 0; i < lp.npages; i++)
            one_call(&lp, i);
    lp.calls = lp.bindings = 0;
    c0 = now(CLOCK_PROCESS_CPUTIME_ID);
    t0 = now(CLOCK_MONOTONIC);
    deadline = t0 + seconds;
    do {
        for (i = 0; i < lp.npages; i++)
            one_call(&lp, i);
    } while (now(CLOCK_MONOTONIC) < deadline);
    wall = now(CLOCK_MONOTONIC) - t0;
    cpu = now(CLOCK_PROCESS_CPUTIME_ID) - c0;
#ifndef BENCH_CJSON
    lp.bindings = lp.calls * page_size; /* not parsed: every page is full */
#endif
    printf("{\"calls\":%ld,\"bindings\":%ld,\"wall\":%.6f,\"cpu\":%.6f,\"hwm_kb\":%ld,\"rss_kb\":%ld,"
           "\"runtime\":\"%s%s\"}\n",
           lp.calls, lp.bindings, wall, cpu, proc_status_kb("VmHWM"), proc_status_kb("VmRSS"),
           curl_version(),
#ifdef BENCH_CJSON
           ", " BENCH_LUA " + lua-cjson"
#else
           ""
#endif
    );
    curl_slist_free_all(lp.headers);
    curl_easy_cleanup(lp.curl);
    curl_global_cleanup();
    return 0;
}
