/*
 * host.c - a C program that embeds Lua (5.4, or LuaJIT) and imm (libimm.a), and lists
 * the bindings of a project from the endpoint in IMM_ENDPOINT, with the
 * keys from ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET.
 *
 *   host list PROJECT [EXPECTED]         one state, prints every binding
 *   host threads N PROJECT [EXPECTED]    N threads, each with its own
 *                                        lua_State and client, list at once
 *   host frame N PROJECT [EXPECTED]      one state, N async listings as imm
 *                                        tasks, driven by a C frame loop
 *                                        that calls imm.poll(0) each frame
 *
 * With EXPECTED, any other count is an error. In thread mode every thread
 * must also count the same, non-zero number. Exit status: 0 when all is
 * well, 1 on any error, 2 on bad usage.
 *
 * `make -C examples/host` builds it; `make host-check` runs it against the
 * local IMM server, also under ThreadSanitizer and valgrind.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "imm.h"

#ifndef LUA_OK /* 5.1; LuaJIT 2.1 has it */
#define LUA_OK 0
#endif

#define MAX_THREADS 64

/* Run in each state: makes a client, returns a function that lists with the
 * pager and returns the count. Creating the client first keeps start-up
 * out of the concurrent part. */
static const char LISTER[] =
    "local project, page_size = ...\n"
    "local imm = require 'imm'\n"
    "local client, err = imm.new { endpoint = os.getenv 'IMM_ENDPOINT', timeout = 60 }\n"
    "if not client then error(tostring(err), 0) end\n"
    "return function(print_rows)\n"
    "  local n = 0\n"
    "  for b, e in client:bindings({ ProjectName = project }, { page_size = page_size }) do\n"
    "    if not b then client:close() error(tostring(e), 0) end\n"
    "    n = n + 1\n"
    "    if print_rows then print(b.DatasetName, b.URI, b.State) end\n"
    "  end\n"
    "  client:close()\n"
    "  return n\n"
    "end\n";

/* Frame mode: starts n listings as imm tasks on one async client and
 * returns imm.poll and a function that collects the counts. */
static const char FRAMER[] =
    "local project, n = ...\n"
    "local imm = require 'imm'\n"
    "local client = assert(imm.new { endpoint = os.getenv 'IMM_ENDPOINT', timeout = 60, async = true })\n"
    "local tasks = {}\n"
    "for i = 1, n do\n"
    "  tasks[i] = imm.spawn(function()\n"
    "    local count = 0\n"
    "    for b, e in client:bindings({ ProjectName = project }, { page_size = 20 }) do\n"
    "      if not b then error(tostring(e), 0) end\n"
    "      count = count + 1\n"
    "    end\n"
    "    return count\n"
    "  end)\n"
    "end\n"
    "return imm.poll, function()\n"
    "  local first\n"
    "  for i, t in ipairs(tasks) do\n"
    "    local ok, count = t:result()\n"
    "    if not ok then error('task ' .. i .. ': ' .. tostring(count), 0) end\n"
    "    if first and count ~= first then error('the tasks disagree', 0) end\n"
    "    first = count\n"
    "  end\n"
    "  client:close()\n"
    "  return first\n"
    "end\n";

typedef struct job {
    const char *project;
    int page_size;
    int print_rows;
    pthread_barrier_t *start; /* NULL in list mode */
    pthread_t tid;
    /* results, written by the job's thread, read by main after join */
    long count;
    double t_start, t_end; /* monotonic seconds around the listing */
    char err[512];
} job;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int traceback(lua_State *L) {
    luaL_traceback(L, L, lua_tostring(L, 1), 1);
    return 1;
}

/* The embedding itself, run under lua_pcall since the API may raise.
 * imm_preload registers imm.core in package.preload too, which is all a
 * LuaJIT host (the 5.1 API, without luaL_requiref) can do; a 5.2+ host may
 * open it at once as well. */
static int open_imm(lua_State *L) {
    luaL_openlibs(L);
#if LUA_VERSION_NUM >= 502
    luaL_requiref(L, "imm.core", luaopen_imm_core, 0);
    lua_pop(L, 1);
#endif
    imm_preload(L);
    return 0;
}

/* Runs fn under pcall with a traceback; on error copies it to j->err. */
static int pcall(lua_State *L, int nargs, int nres, job *j) {
    int base = lua_gettop(L) - nargs, rc;
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    rc = lua_pcall(L, nargs, nres, base);
    lua_remove(L, base);
    if (rc != LUA_OK) {
        snprintf(j->err, sizeof j->err, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
        lua_pop(L, 1);
    }
    return rc;
}

static void *run_job(void *arg) {
    job *j = arg;
    lua_State *L = luaL_newstate();
    int ok = 0;
    if (L == NULL) {
        snprintf(j->err, sizeof j->err, "luaL_newstate failed");
    } else {
        lua_pushcfunction(L, open_imm);
        if (pcall(L, 0, 0, j) == LUA_OK) {
            if (luaL_loadbuffer(L, LISTER, sizeof LISTER - 1, "=lister") != LUA_OK) {
                snprintf(j->err, sizeof j->err, "%s", lua_tostring(L, -1));
            } else {
                lua_pushstring(L, j->project);
                lua_pushinteger(L, j->page_size);
                ok = pcall(L, 2, 1, j) == LUA_OK; /* -> the listing function */
            }
        }
    }
    /* every thread waits, even a failed one, so none is left at the barrier */
    if (j->start != NULL)
        pthread_barrier_wait(j->start);
    if (ok) {
        lua_pushboolean(L, j->print_rows);
        j->t_start = now();
        if (pcall(L, 1, 1, j) == LUA_OK) {
            j->t_end = now();
            j->count = (long)lua_tointeger(L, -1);
        }
    }
    if (L != NULL)
        lua_close(L);
    return NULL;
}

static int check_counts(job *jobs, int n, long expected) {
    int i, bad = 0;
    for (i = 0; i < n; i++) {
        if (jobs[i].err[0] != '\0') {
            fprintf(stderr, "host: thread %d failed: %s\n", i, jobs[i].err);
            bad = 1;
        } else if (jobs[i].count <= 0 || jobs[i].count != jobs[0].count ||
                   (expected >= 0 && jobs[i].count != expected)) {
            fprintf(stderr, "host: thread %d counted %ld bindings (thread 0: %ld, expected: %ld)\n",
                    i, jobs[i].count, jobs[0].count, expected);
            bad = 1;
        }
    }
    return bad;
}

/* The frame loop a game or editor runs: each frame it calls imm.poll(0),
 * which never waits, then would draw. Counts frames and the longest one. */
static int run_frames(int n, const char *project, long expected) {
    job j;
    lua_State *L = luaL_newstate();
    long frames = 0, count = -1;
    double longest = 0, t0 = now();
    int rc = 1;
    memset(&j, 0, sizeof j);
    if (L == NULL)
        return 1;
    lua_pushcfunction(L, open_imm);
    if (pcall(L, 0, 0, &j) != LUA_OK)
        goto out;
    if (luaL_loadbuffer(L, FRAMER, sizeof FRAMER - 1, "=framer") != LUA_OK) {
        snprintf(j.err, sizeof j.err, "%s", lua_tostring(L, -1));
        goto out;
    }
    lua_pushstring(L, project);
    lua_pushinteger(L, n);
    if (pcall(L, 2, 2, &j) != LUA_OK) /* -> imm.poll, collect */
        goto out;
    for (;;) {
        double f0 = now();
        lua_Integer running;
        lua_pushvalue(L, -2); /* imm.poll */
        lua_pushinteger(L, 0);
        if (pcall(L, 1, 1, &j) != LUA_OK)
            goto out;
        running = lua_tointeger(L, -1);
        lua_pop(L, 1);
        frames++;
        if (now() - f0 > longest)
            longest = now() - f0;
        if (running == 0)
            break;
        /* a game would draw here */
    }
    if (pcall(L, 0, 1, &j) != LUA_OK) /* collect */
        goto out;
    count = (long)lua_tointeger(L, -1);
    if (count <= 0 || (expected >= 0 && count != expected)) {
        snprintf(j.err, sizeof j.err, "counted %ld bindings, expected %ld", count, expected);
        goto out;
    }
    printf("%d async tasks in one lua_State counted %ld bindings each in project %s\n", n, count, project);
    printf("%ld frames in %.2f s; longest frame %.1f ms\n", frames, now() - t0, longest * 1000);
    rc = 0;
out:
    if (rc != 0)
        fprintf(stderr, "host: frame mode failed: %s\n", j.err);
    lua_close(L);
    return rc;
}

static int usage(void) {
    fprintf(stderr, "usage: host list PROJECT [EXPECTED]\n"
                    "       host threads N PROJECT [EXPECTED]\n"
                    "       host frame N PROJECT [EXPECTED]\n"
                    "(endpoint from IMM_ENDPOINT, keys from ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET)\n");
    return 2;
}

int main(int argc, char **argv) {
    job jobs[MAX_THREADS];
    pthread_barrier_t start;
    int i, n, threaded, bad;
    long expected = -1;
    const char *project;
    double last_start = 0, first_end = 0;

    if (argc >= 3 && strcmp(argv[1], "list") == 0 && argc <= 4) {
        threaded = 0;
        n = 1;
        project = argv[2];
        if (argc == 4)
            expected = atol(argv[3]);
    } else if (argc >= 4 && strcmp(argv[1], "threads") == 0 && argc <= 5) {
        threaded = 1;
        n = atoi(argv[2]);
        project = argv[3];
        if (argc == 5)
            expected = atol(argv[4]);
        if (n < 1 || n > MAX_THREADS)
            return usage();
    } else if (argc >= 4 && strcmp(argv[1], "frame") == 0 && argc <= 5) {
        n = atoi(argv[2]);
        if (n < 1 || n > 1000)
            return usage();
        return run_frames(n, argv[3], argc == 5 ? atol(argv[4]) : -1);
    } else {
        return usage();
    }

    if (threaded && pthread_barrier_init(&start, NULL, (unsigned)n) != 0) {
        fprintf(stderr, "host: pthread_barrier_init failed\n");
        return 1;
    }
    memset(jobs, 0, sizeof jobs);
    for (i = 0; i < n; i++) {
        jobs[i].project = project;
        jobs[i].page_size = threaded ? 10 : 50; /* small pages: more overlap */
        jobs[i].print_rows = !threaded;
        jobs[i].start = threaded ? &start : NULL;
    }
    if (!threaded) {
        run_job(&jobs[0]);
    } else {
        for (i = 0; i < n; i++) {
            if (pthread_create(&jobs[i].tid, NULL, run_job, &jobs[i]) != 0) {
                /* the barrier would never open: give up at once */
                fprintf(stderr, "host: pthread_create failed\n");
                exit(1);
            }
        }
        for (i = 0; i < n; i++)
            pthread_join(jobs[i].tid, NULL);
        pthread_barrier_destroy(&start);
    }

    bad = check_counts(jobs, n, expected);
    if (bad)
        return 1;
    if (!threaded) {
        printf("%ld bindings in project %s\n", jobs[0].count, project);
        return 0;
    }
    /* Did the listings overlap? Yes if the last to start began before the
     * first to finish ended: then all n were mid-listing at that moment. */
    for (i = 0; i < n; i++) {
        if (i == 0 || jobs[i].t_start > last_start)
            last_start = jobs[i].t_start;
        if (i == 0 || jobs[i].t_end < first_end)
            first_end = jobs[i].t_end;
    }
    printf("%d threads, each with its own lua_State, counted %ld bindings in project %s\n",
           n, jobs[0].count, project);
    printf("concurrent: %s\n", last_start < first_end ? "yes (all threads were listing at once)"
                                                     : "no (the listings did not overlap)");
    return 0;
}
