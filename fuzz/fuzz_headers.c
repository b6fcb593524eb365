/*
 * libFuzzer target: response header parsing (imm_http_next_header) and the
 * capped gzip decoder (imm_http_gunzip) on arbitrary bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imm_http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *cur = (const char *)data, *end = (const char *)data + size;
    const char *name, *value;
    size_t nlen, vlen, count = 0;
    imm_buf out = IMM_BUF_INIT;
    char err[128];

    while (imm_http_next_header(&cur, end, &name, &nlen, &value, &vlen)) {
        /* every field lies inside the input, and the cursor only advances */
        if (name < (const char *)data || name + nlen > end || value < (const char *)data ||
            value + vlen > end || nlen == 0 || memchr(name, ':', nlen) != NULL)
            abort();
        if (++count > size)
            abort();
    }
    if (cur != end)
        abort();

    /* the decoder never produces more than the cap, whatever the input */
    if (imm_http_gunzip((const char *)data, size, 1 << 20, &out, err, sizeof err) == IMM_HTTP_OK &&
        out.len > (1 << 20))
        abort();
    imm_buf_free(&out);
    return 0;
}
