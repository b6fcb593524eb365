/*
 * fuzz_alloc.h - a lua_Alloc that fails once a budget of allocations is
 * spent, for the fuzz targets' passes under memory pressure. Header-only
 * and static: each fuzz target is a program of its own.
 *
 * fuzz_pcall_starved() runs one call under a budget (a number drawn from
 * the input, so a crash reproduces) and restores the limit after it.
 */
#ifndef FUZZ_ALLOC_H
#define FUZZ_ALLOC_H

#include <stdlib.h>

#include <lua.h>

/* allocations left before the allocator fails; negative: no limit */
static long alloc_budget = -1;

static void *fuzz_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    (void)osize;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    if (alloc_budget == 0 && nsize > osize)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return realloc(ptr, nsize);
}

/* Calls the function below its nargs arguments with `budget` allocations
 * left. 0 when it returned, or failed with a string (Lua's memory error
 * message is preallocated: always a string); -1 on any other error. */
static int fuzz_pcall_starved(lua_State *L, int nargs, int nresults, long budget) {
    int rc;
    /* Finalizers still pending from earlier work run now, with memory to
     * spare: Lua drops a finalizer whose call fails (calling it may grow
     * the stack), and the C buffer it would free then leaks. That is
     * Lua's limit under exhaustion, not the code under test. */
    lua_gc(L, LUA_GCCOLLECT, 0);
    alloc_budget = budget;
    rc = lua_pcall(L, nargs, nresults, 0);
    alloc_budget = -1;
    return rc == LUA_OK || lua_type(L, -1) == LUA_TSTRING ? 0 : -1;
}

#endif
