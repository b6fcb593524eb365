/*
 * libFuzzer target: percent-encoding and the V3/V2 signers with arbitrary
 * bytes (NUL and invalid UTF-8 included) in keys, values and headers.
 *
 * Input layout: fields separated by 0xFF bytes; the first field is the
 * secret, then alternating keys and values (query pairs, then header pairs
 * after a field equal to "H").
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "imm_sign.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXKV 64

static int is_hex_upper(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

/* True when b holds only unreserved bytes, %XX triples (upper-case hex)
 * and bytes from `extra`. */
static int only_encoded(const imm_buf *b, const char *extra) {
    size_t i;
    for (i = 0; i < b->len; i++) {
        unsigned char c = (unsigned char)b->p[i];
        if (c == '%') {
            if (i + 2 >= b->len || !is_hex_upper((unsigned char)b->p[i + 1]) ||
                !is_hex_upper((unsigned char)b->p[i + 2]))
                return 0;
            i += 2;
        } else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '_' || c == '.' || c == '~' || (c && strchr(extra, c)))) {
            return 0;
        }
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *fields[2 * MAXKV + 2];
    size_t lens[2 * MAXKV + 2], nf = 0, i, start = 0;
    imm_kv q[MAXKV], h[MAXKV];
    size_t nq = 0, nh = 0;
    int in_headers = 0;
    imm_buf enc = IMM_BUF_INIT;

    for (i = 0; i <= size && nf < 2 * MAXKV + 2; i++) {
        if (i == size || data[i] == 0xFF) {
            fields[nf] = (const char *)data + start;
            lens[nf] = i - start;
            nf++;
            start = i + 1;
        }
    }
    if (nf == 0)
        return 0;

    /* the encoder alone: output is only unreserved bytes and %XX triples */
    if (imm_percent_encode(&enc, (const char *)data, size) == IMM_OK) {
        if (!only_encoded(&enc, "") || enc.len < size || enc.len > 3 * size)
            abort();
    }
    imm_buf_free(&enc);

    for (i = 1; i + 1 < nf; i += 2) {
        if (!in_headers && lens[i] == 1 && fields[i][0] == 'H') {
            in_headers = 1;
            i--; /* the marker takes one field */
            continue;
        }
        if (in_headers && nh < MAXKV) {
            h[nh].k = fields[i]; h[nh].klen = lens[i];
            h[nh].v = fields[i + 1]; h[nh].vlen = lens[i + 1];
            nh++;
        } else if (!in_headers && nq < MAXKV) {
            q[nq].k = fields[i]; q[nq].klen = lens[i];
            q[nq].v = fields[i + 1]; q[nq].vlen = lens[i + 1];
            nq++;
        }
    }

    {
        imm_v3_input in;
        imm_v3_output out;
        imm_v2_output out2;
        char err[256];
        int alg;
        for (alg = 0; alg < 2; alg++) {
            memset(&in, 0, sizeof in);
            in.alg = alg ? IMM_HASH_SM3 : IMM_HASH_SHA256;
            in.method = "POST";
            in.path = "/";
            in.query = q;
            in.nquery = nq;
            in.headers = h;
            in.nheaders = nh;
            in.payload_hash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
            in.access_key_id = "id";
            in.secret = fields[0];
            in.secret_len = lens[0];
            imm_v3_output_init(&out);
            if (imm_sign_v3(&in, &out, err, sizeof err) == IMM_OK) {
                /* the canonical query is fully encoded; no raw byte can
                 * escape into the request line or a header */
                if (!only_encoded(&out.canonical_query, "=&"))
                    abort();
                if (out.authorization.p == NULL || strstr(out.authorization.p, ",Signature=") == NULL ||
                    strchr(out.canonical_request.p, '\r') != NULL)
                    abort();
            }
            imm_v3_output_free(&out);
        }
        imm_v2_output_init(&out2);
        if (imm_sign_v2("POST", q, nq, fields[0], lens[0], &out2, err, sizeof err) == IMM_OK) {
            if (strlen(out2.signature) != 28)
                abort();
        }
        imm_v2_output_free(&out2);
    }
    return 0;
}
