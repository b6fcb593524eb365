/* imm_buf.c - growable byte buffer; see imm_buf.h. */
#include "imm_buf.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

void imm_buf_init(imm_buf *b) {
    b->p = NULL;
    b->len = b->cap = 0;
    b->sensitive = 0;
}

void imm_buf_free(imm_buf *b) {
    if (b->p != NULL) {
        if (b->sensitive)
            OPENSSL_cleanse(b->p, b->cap);
        free(b->p);
    }
    b->p = NULL;
    b->len = b->cap = 0;
}

void imm_buf_clear(imm_buf *b) {
    if (b->p != NULL) {
        if (b->sensitive)
            OPENSSL_cleanse(b->p, b->len);
        b->p[0] = '\0';
    }
    b->len = 0;
}

int imm_buf_reserve(imm_buf *b, size_t extra) {
    size_t need, cap;
    char *np;
    if (extra > (size_t)-1 - b->len - 1)
        return -1;
    need = b->len + extra + 1;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > ((size_t)-1) / 2 ? need : cap * 2;
    if (b->sensitive) {
        /* realloc could leave a copy of a secret behind; move it by hand */
        np = malloc(cap);
        if (np == NULL)
            return -1;
        if (b->p != NULL) {
            memcpy(np, b->p, b->len + 1);
            OPENSSL_cleanse(b->p, b->cap);
            free(b->p);
        }
    } else {
        np = realloc(b->p, cap);
        if (np == NULL)
            return -1;
    }
    if (b->p == NULL)
        np[0] = '\0';
    b->p = np;
    b->cap = cap;
    return 0;
}

int imm_buf_add(imm_buf *b, const void *data, size_t n) {
    if (imm_buf_reserve(b, n) != 0)
        return -1;
    if (n > 0)
        memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int imm_buf_adds(imm_buf *b, const char *s) {
    return imm_buf_add(b, s, strlen(s));
}

int imm_buf_addc(imm_buf *b, char c) {
    return imm_buf_add(b, &c, 1);
}
