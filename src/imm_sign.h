/*
 * imm_sign.h - Alibaba Cloud request signing: RFC 3986 percent-encoding, the
 * V3 signature (ACS3-HMAC-SHA256 and ACS3-HMAC-SM3) and the legacy V2 RPC
 * signature (HMAC-SHA1). Pure C over OpenSSL 3; no Lua, no I/O.
 *
 * Conventions:
 *  - Functions return IMM_OK (0) or a negative IMM_E* status and, on failure,
 *    write a one-line reason into the caller's `err` buffer (when non-NULL).
 *  - Output buffers (imm_buf) belong to the caller, who frees them with
 *    imm_buf_free() whatever the result. Inputs are only read.
 *  - Secrets are never copied into output buffers or error messages; buffers
 *    derived from a secret are wiped with OPENSSL_cleanse before release.
 *  - Thread safety: no mutable global state. Digests are fetched once
 *    (pthread_once) and then shared read-only, which OpenSSL 3 permits.
 */
#ifndef IMM_SIGN_H
#define IMM_SIGN_H

#include <stddef.h>

#include "imm_buf.h"

#define IMM_OK 0
#define IMM_ENOMEM (-1)    /* out of memory */
#define IMM_EINVAL (-2)    /* bad input, e.g. CR/LF in a header value */
#define IMM_ECRYPTO (-3)   /* OpenSSL failed (algorithm unavailable, ...) */

/* A key/value pair of (not necessarily NUL-terminated) byte strings. */
typedef struct imm_kv {
    const char *k;
    size_t klen;
    const char *v;
    size_t vlen;
} imm_kv;

typedef enum imm_hash {
    IMM_HASH_SHA256 = 0,
    IMM_HASH_SM3 = 1,
    IMM_HASH_SHA1 = 2
} imm_hash;

/* Longest digest we produce (SHA-256 and SM3: 32 bytes). */
#define IMM_MAX_DIGEST 32

/* Appends the RFC 3986 encoding of s[0..n) to out: only A-Z a-z 0-9 - _ . ~
 * stay as they are; every other byte (NUL and invalid UTF-8 included)
 * becomes %XX with upper-case hex. */
int imm_percent_encode(imm_buf *out, const char *s, size_t n);

/* Appends `k=v&k=v...`: each key and value percent-encoded, pairs sorted by
 * raw key (bytes), then by raw value (so the order is total), as the
 * official openapi-util sorts. This is both the V3 canonical query and the
 * V2 canonicalized query. */
int imm_canonical_query(imm_buf *out, const imm_kv *pairs, size_t n,
                        char *err, size_t errlen);

/* Appends s[0..n) to out with every occurrence of the secret, raw and
 * percent-encoded once and twice, replaced by mask. The encoded copies of
 * the secret live only in buffers wiped (OPENSSL_cleanse) before they are
 * freed, as is every intermediate copy; out is the caller's (set its
 * `sensitive` to have it wiped too). An empty secret copies s as is.
 * Returns IMM_OK or IMM_ENOMEM (out is still valid and must be freed). */
int imm_redact(imm_buf *out, const char *s, size_t n, const char *secret, size_t slen,
               const char *mask, size_t mlen);

/* digest of data[0..n) into out (IMM_MAX_DIGEST bytes at least); *outlen
 * receives its size. */
int imm_digest(imm_hash alg, const void *data, size_t n,
               unsigned char *out, unsigned int *outlen);

/* digest of the file at path, read in blocks (no copy of it is held), as
 * imm_digest. IMM_EINVAL when it cannot be read. */
int imm_digest_file(imm_hash alg, const char *path, unsigned char *out, unsigned int *outlen);

/* Lower-case hex of data[0..n) into out (2n+1 bytes, NUL-terminated). */
void imm_hex(const unsigned char *data, size_t n, char *out);

/* HMAC(key, data) with the given hash; out must hold IMM_MAX_DIGEST bytes. */
int imm_hmac(imm_hash alg, const void *key, size_t keylen,
             const void *data, size_t n, unsigned char *out, unsigned int *outlen);

/* An HMAC key with its two padded-key blocks already hashed (the inner
 * and outer digest states), so a client that signs every request with the
 * same secret hashes them once, not twice per request. Owns OpenSSL
 * contexts; free with imm_hmac_key_free (the states are wiped). */
typedef struct imm_hmac_key imm_hmac_key;
/* NULL when memory or the digest is missing. The key bytes are not kept. */
imm_hmac_key *imm_hmac_key_new(imm_hash alg, const void *key, size_t keylen);
void imm_hmac_key_free(imm_hmac_key *k);
imm_hash imm_hmac_key_alg(const imm_hmac_key *k);
/* The same result as imm_hmac with the key's algorithm and bytes. */
int imm_hmac_keyed(imm_hmac_key *k, const void *data, size_t n, unsigned char *out,
                   unsigned int *outlen);

/* Verifies an RSA (PKCS#1 v1.5) signature sig[0..siglen) over
 * data[0..n), hashed with alg, against the public key of pem[0..pemlen): a
 * PEM certificate or a PEM public key (the first one in the text). Sets
 * *verified to 1 or 0 and returns IMM_OK; a signature of the wrong size or
 * shape is simply not verified. Returns IMM_EINVAL when pem holds neither or
 * the key is not RSA, IMM_ENOMEM, or IMM_ECRYPTO; err says why. Keeps
 * nothing and leaves OpenSSL's error queue empty. No certificate chain is
 * checked: the caller decides where it trusts the certificate from. */
int imm_rsa_verify(const char *pem, size_t pemlen, const void *data, size_t n,
                   const unsigned char *sig, size_t siglen, imm_hash alg,
                   int *verified, char *err, size_t errlen);

/* Fills out[0..n) from OpenSSL's CSPRNG (RAND_bytes). */
int imm_random(unsigned char *out, size_t n);

/* Fills out[0..16) with a signature nonce: CSPRNG bytes as imm_random's,
 * drawn from a per-thread pool refilled 32 nonces at a time, because one
 * RAND_bytes call per request cost more than the HMAC. A pool is dropped
 * when the process id changes (a fork), so a child never repeats its
 * parent's nonces, and every nonce is wiped from the pool as it is taken. */
int imm_nonce16(unsigned char out[16]);

/* --- V3: ACS3-HMAC-SHA256 / ACS3-HMAC-SM3 ------------------------------ */

typedef struct imm_v3_input {
    imm_hash alg;                 /* IMM_HASH_SHA256 or IMM_HASH_SM3 */
    const char *method;           /* "POST" */
    const char *path;             /* "/" ; encoded per segment */
    const imm_kv *query;          /* request parameters (raw, unencoded) */
    size_t nquery;
    const imm_kv *headers;        /* every request header; the signed ones
                                     are host, content-type and x-acs-* */
    size_t nheaders;
    const char *payload_hash;     /* hex hash of the body (x-acs-content-sha256) */
    const char *access_key_id;
    const char *secret;           /* access key secret; read, never copied out */
    size_t secret_len;
    imm_hmac_key *key;            /* or, when not NULL, the secret as an HMAC key
                                     (of the same algorithm as alg) */
} imm_v3_input;

typedef struct imm_v3_output {
    imm_buf canonical_query;      /* also what goes after '?' in the URL */
    imm_buf canonical_request;
    imm_buf string_to_sign;
    imm_buf authorization;        /* the Authorization header value */
} imm_v3_output;

void imm_v3_output_init(imm_v3_output *o);
void imm_v3_output_free(imm_v3_output *o);

/* Signs a V3 request. Header names are compared case-insensitively and must
 * be unique among the signed ones; a CR or LF in a signed header value is
 * refused (IMM_EINVAL) since it would smuggle a header. */
int imm_sign_v3(const imm_v3_input *in, imm_v3_output *out, char *err, size_t errlen);

/* Name of the algorithm for the Authorization header and string to sign. */
const char *imm_v3_algorithm_name(imm_hash alg);

/* --- V2: legacy RPC HMAC-SHA1 ------------------------------------------- */

typedef struct imm_v2_output {
    imm_buf canonical_query;      /* sorted, encoded k=v&...; without Signature */
    imm_buf string_to_sign;       /* METHOD&%2F&enc(canonical_query) */
    char signature[64];           /* base64(HMAC-SHA1(secret + "&", sts)) */
} imm_v2_output;

void imm_v2_output_init(imm_v2_output *o);
void imm_v2_output_free(imm_v2_output *o);

/* Signs V2 parameters. `params` must already hold the common parameters
 * (Action, Version, AccessKeyId, SignatureNonce, Timestamp, ...) and must not
 * hold Signature. */
int imm_sign_v2(const char *method, const imm_kv *params, size_t n,
                const char *secret, size_t secret_len,
                imm_v2_output *out, char *err, size_t errlen);

#endif
