/*
 * imm_buf.h - a growable byte buffer used by the signing and HTTP layers.
 *
 * Why our own: the C that signs and fetches must not include Lua headers, so
 * luaL_Buffer is not available there, and neither OpenSSL nor libcurl offers a
 * general-purpose string builder.
 *
 * Ownership: the buffer owns `p`. imm_buf_free() releases it (and wipes it
 * first when `sensitive` is set). All append functions return 0 on success
 * and -1 when memory ran out; after a failure the buffer is still valid and
 * must still be freed.
 */
#ifndef IMM_BUF_H
#define IMM_BUF_H

#include <stddef.h>

typedef struct imm_buf {
    char *p;        /* NUL-terminated contents (NULL until the first append) */
    size_t len;     /* bytes used, excluding the terminating NUL */
    size_t cap;     /* bytes allocated */
    int sensitive;  /* wipe with OPENSSL_cleanse before freeing or growing */
} imm_buf;

#define IMM_BUF_INIT {NULL, 0, 0, 0}

void imm_buf_init(imm_buf *b);
void imm_buf_free(imm_buf *b);
/* Forget the contents but keep the allocation, for reuse between requests. */
void imm_buf_clear(imm_buf *b);
int imm_buf_reserve(imm_buf *b, size_t extra);
int imm_buf_add(imm_buf *b, const void *data, size_t n);
int imm_buf_adds(imm_buf *b, const char *s);
int imm_buf_addc(imm_buf *b, char c);

#endif
