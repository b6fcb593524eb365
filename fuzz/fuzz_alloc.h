/*
 * fuzz_alloc.h - a lua_Alloc that fails once a budget of allocations is
 * spent, for the fuzz targets' passes under memory pressure. Header-only
 * and static: each fuzz target is a program of its own.
 *
 * Set alloc_budget before the call under test (a number drawn from the
 * input, so a crash reproduces) and back to -1 after it.
 */
#ifndef FUZZ_ALLOC_H
#define FUZZ_ALLOC_H

#include <stdlib.h>

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

#endif
