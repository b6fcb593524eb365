/* imm_sign.c - Alibaba Cloud V3 and V2 request signing; see imm_sign.h. */
#include "imm_sign.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#define SET_ERR(...)                                    \
    do {                                                \
        if (err != NULL && errlen > 0)                  \
            snprintf(err, errlen, __VA_ARGS__);         \
    } while (0)

/* Explicitly fetched digests avoid OpenSSL 3's implicit fetch on every use.
 * They are written once under pthread_once and only read afterwards. */
static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static EVP_MD *md_table[3];

/* Releases the digests. It runs from atexit() (see md_fetch_all), never
 * while a thread can be inside the module: at exit, or when Lua unloads
 * core.so in lua_close(). */
static void md_free_all(void) {
    size_t i;
    for (i = 0; i < sizeof md_table / sizeof md_table[0]; i++) {
        EVP_MD_free(md_table[i]);
        md_table[i] = NULL;
    }
}

static void md_fetch_all(void) {
    md_table[IMM_HASH_SHA256] = EVP_MD_fetch(NULL, "SHA256", NULL);
    md_table[IMM_HASH_SM3] = EVP_MD_fetch(NULL, "SM3", NULL);
    md_table[IMM_HASH_SHA1] = EVP_MD_fetch(NULL, "SHA1", NULL);
    ERR_clear_error();
    /* Not a destructor: linked into a program (libimm.a), a destructor runs
     * after OpenSSL's own atexit cleanup and would free into a library that
     * is gone. An atexit handler registered here, after OpenSSL has
     * initialised, runs before that cleanup; in core.so, glibc runs it when
     * the module is unloaded. If it cannot be registered the digests are
     * only left to the exiting process. */
    (void)atexit(md_free_all);
}

static const EVP_MD *md_get(imm_hash alg) {
    if ((unsigned)alg > IMM_HASH_SHA1)
        return NULL;
    pthread_once(&md_once, md_fetch_all);
    return md_table[alg];
}

/* ---------------------------------------------------------------------- */

static const char HEXU[] = "0123456789ABCDEF";
static const char HEXL[] = "0123456789abcdef";

static int is_unreserved(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == '~';
}

int imm_percent_encode(imm_buf *out, const char *s, size_t n) {
    size_t i, extra = 0;
    char *w;
    for (i = 0; i < n; i++)
        if (!is_unreserved((unsigned char)s[i]))
            extra += 2;
    if (extra > (size_t)-1 - n || imm_buf_reserve(out, n + extra) != 0)
        return IMM_ENOMEM;
    w = out->p + out->len;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (is_unreserved(c)) {
            *w++ = (char)c;
        } else {
            *w++ = '%';
            *w++ = HEXU[c >> 4];
            *w++ = HEXU[c & 15];
        }
    }
    out->len += n + extra;
    out->p[out->len] = '\0';
    return IMM_OK;
}

void imm_hex(const unsigned char *data, size_t n, char *out) {
    size_t i;
    for (i = 0; i < n; i++) {
        out[2 * i] = HEXL[data[i] >> 4];
        out[2 * i + 1] = HEXL[data[i] & 15];
    }
    out[2 * n] = '\0';
}

int imm_digest(imm_hash alg, const void *data, size_t n,
               unsigned char *out, unsigned int *outlen) {
    const EVP_MD *md = md_get(alg);
    if (md == NULL || !EVP_Digest(data, n, out, outlen, md, NULL)) {
        ERR_clear_error();
        return IMM_ECRYPTO;
    }
    return IMM_OK;
}

int imm_digest_file(imm_hash alg, const char *path, unsigned char *out, unsigned int *outlen) {
    const EVP_MD *md = md_get(alg);
    unsigned char block[16384];
    EVP_MD_CTX *ctx;
    FILE *f;
    size_t got;
    int ok, rc = IMM_OK;
    if (md == NULL)
        return IMM_ECRYPTO;
    f = fopen(path, "rb");
    if (f == NULL)
        return IMM_EINVAL;
    ctx = EVP_MD_CTX_new();
    ok = ctx != NULL && EVP_DigestInit_ex(ctx, md, NULL);
    while (ok && (got = fread(block, 1, sizeof block, f)) > 0)
        ok = EVP_DigestUpdate(ctx, block, got);
    if (ok && ferror(f))
        rc = IMM_EINVAL;
    else if (!ok || !EVP_DigestFinal_ex(ctx, out, outlen))
        rc = IMM_ECRYPTO;
    fclose(f);
    EVP_MD_CTX_free(ctx);
    if (rc == IMM_ECRYPTO)
        ERR_clear_error();
    return rc;
}

/* HMAC (RFC 2104) over the digest fetched once. OpenSSL 3's one-shot
 * HMAC() fetches the HMAC method and the digest by name on every call,
 * which cost a quarter of a request's signing; the two passes here reuse
 * the digest we hold. Every key-derived byte is wiped before returning. */
#define HMAC_BLOCK_MAX 128

int imm_hmac(imm_hash alg, const void *key, size_t keylen,
             const void *data, size_t n, unsigned char *out, unsigned int *outlen) {
    const EVP_MD *md = md_get(alg);
    unsigned char k0[HMAC_BLOCK_MAX], pad[HMAC_BLOCK_MAX], inner[EVP_MAX_MD_SIZE];
    unsigned int ilen = 0;
    EVP_MD_CTX *ctx;
    int block, i, ok;
    if (md == NULL || (block = EVP_MD_get_block_size(md)) <= 0 || block > HMAC_BLOCK_MAX)
        goto fail;
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL)
        goto fail;
    memset(k0, 0, sizeof k0);
    if (keylen > (size_t)block) {
        /* a key longer than a block is hashed first */
        ok = EVP_DigestInit_ex(ctx, md, NULL) && EVP_DigestUpdate(ctx, key, keylen) &&
             EVP_DigestFinal_ex(ctx, k0, &ilen);
        if (!ok) {
            EVP_MD_CTX_free(ctx);
            OPENSSL_cleanse(k0, sizeof k0);
            goto fail;
        }
    } else if (keylen > 0) {
        memcpy(k0, key, keylen);
    }
    for (i = 0; i < block; i++)
        pad[i] = (unsigned char)(k0[i] ^ 0x36);
    ok = EVP_DigestInit_ex(ctx, md, NULL) && EVP_DigestUpdate(ctx, pad, (size_t)block) &&
         EVP_DigestUpdate(ctx, data, n) && EVP_DigestFinal_ex(ctx, inner, &ilen);
    for (i = 0; ok && i < block; i++)
        pad[i] = (unsigned char)(k0[i] ^ 0x5c);
    ok = ok && EVP_DigestInit_ex(ctx, md, NULL) && EVP_DigestUpdate(ctx, pad, (size_t)block) &&
         EVP_DigestUpdate(ctx, inner, ilen) && EVP_DigestFinal_ex(ctx, out, outlen);
    EVP_MD_CTX_free(ctx);
    OPENSSL_cleanse(k0, sizeof k0);
    OPENSSL_cleanse(pad, sizeof pad);
    OPENSSL_cleanse(inner, sizeof inner);
    if (ok)
        return IMM_OK;
fail:
    ERR_clear_error();
    return IMM_ECRYPTO;
}

struct imm_hmac_key {
    imm_hash alg;
    EVP_MD_CTX *inner, *outer; /* after the ipad and the opad block */
    EVP_MD_CTX *work;          /* a copy of one of them per use */
};

void imm_hmac_key_free(imm_hmac_key *k) {
    if (k == NULL)
        return;
    /* the digests' freectx wipe their states */
    EVP_MD_CTX_free(k->inner);
    EVP_MD_CTX_free(k->outer);
    EVP_MD_CTX_free(k->work);
    free(k);
}

imm_hmac_key *imm_hmac_key_new(imm_hash alg, const void *key, size_t keylen) {
    const EVP_MD *md = md_get(alg);
    unsigned char k0[HMAC_BLOCK_MAX], pad[HMAC_BLOCK_MAX];
    unsigned int klen = 0;
    imm_hmac_key *k;
    int block, i, ok;
    if (md == NULL || (block = EVP_MD_get_block_size(md)) <= 0 || block > HMAC_BLOCK_MAX)
        goto fail0;
    k = calloc(1, sizeof *k);
    if (k == NULL)
        goto fail0;
    k->alg = alg;
    k->inner = EVP_MD_CTX_new();
    k->outer = EVP_MD_CTX_new();
    k->work = EVP_MD_CTX_new();
    memset(k0, 0, sizeof k0);
    ok = k->inner != NULL && k->outer != NULL && k->work != NULL;
    if (ok && keylen > (size_t)block)
        /* a key longer than a block is hashed first */
        ok = EVP_DigestInit_ex(k->work, md, NULL) && EVP_DigestUpdate(k->work, key, keylen) &&
             EVP_DigestFinal_ex(k->work, k0, &klen);
    else if (ok && keylen > 0)
        memcpy(k0, key, keylen);
    for (i = 0; i < block; i++)
        pad[i] = (unsigned char)(k0[i] ^ 0x36);
    ok = ok && EVP_DigestInit_ex(k->inner, md, NULL) && EVP_DigestUpdate(k->inner, pad, (size_t)block);
    for (i = 0; i < block; i++)
        pad[i] = (unsigned char)(k0[i] ^ 0x5c);
    ok = ok && EVP_DigestInit_ex(k->outer, md, NULL) && EVP_DigestUpdate(k->outer, pad, (size_t)block);
    OPENSSL_cleanse(k0, sizeof k0);
    OPENSSL_cleanse(pad, sizeof pad);
    if (ok)
        return k;
    imm_hmac_key_free(k);
fail0:
    ERR_clear_error();
    return NULL;
}

imm_hash imm_hmac_key_alg(const imm_hmac_key *k) {
    return k->alg;
}

int imm_hmac_keyed(imm_hmac_key *k, const void *data, size_t n, unsigned char *out,
                   unsigned int *outlen) {
    unsigned char inner[EVP_MAX_MD_SIZE];
    unsigned int ilen = 0;
    int ok = EVP_MD_CTX_copy_ex(k->work, k->inner) && EVP_DigestUpdate(k->work, data, n) &&
             EVP_DigestFinal_ex(k->work, inner, &ilen) && EVP_MD_CTX_copy_ex(k->work, k->outer) &&
             EVP_DigestUpdate(k->work, inner, ilen) && EVP_DigestFinal_ex(k->work, out, outlen);
    OPENSSL_cleanse(inner, sizeof inner);
    if (ok)
        return IMM_OK;
    ERR_clear_error();
    return IMM_ECRYPTO;
}

/* No passphrase, ever: OpenSSL's default callback would prompt on the
 * terminal for an encrypted PEM block. */
static int no_passphrase(char *buf, int size, int rwflag, void *u) {
    (void)buf; (void)size; (void)rwflag; (void)u;
    return 0;
}

/* Did OpenSSL fail for want of memory? Then a parse or verification
 * failure says nothing about the input, and must not be reported as if. */
static int malloc_failed(void) {
    unsigned long e;
    while ((e = ERR_get_error()) != 0)
        if (ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE)
            return 1;
    return 0;
}

/* The public key of the first certificate in pem, else of the first public
 * key; NULL if neither parses. */
static EVP_PKEY *pem_public_key(const char *pem, size_t pemlen) {
    EVP_PKEY *pkey = NULL;
    X509 *cert = NULL;
    BIO *bio = BIO_new_mem_buf(pem, (int)pemlen);
    if (bio == NULL)
        return NULL;
    cert = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL);
    if (cert != NULL) {
        pkey = X509_get_pubkey(cert);
        X509_free(cert);
    } else {
        /* a second BIO: a read-only memory BIO cannot be rewound portably */
        BIO_free(bio);
        bio = BIO_new_mem_buf(pem, (int)pemlen);
        if (bio != NULL)
            pkey = PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
    }
    BIO_free(bio);
    return pkey;
}

int imm_rsa_verify(const char *pem, size_t pemlen, const void *data, size_t n,
                   const unsigned char *sig, size_t siglen, imm_hash alg,
                   int *verified, char *err, size_t errlen) {
    const EVP_MD *md = md_get(alg);
    EVP_PKEY *pkey = NULL;
    EVP_MD_CTX *ctx = NULL;
    int rc = IMM_OK;
    *verified = 0;
    if (md == NULL) {
        SET_ERR("digest unavailable in this OpenSSL");
        rc = IMM_ECRYPTO;
        goto done;
    }
    if (pemlen == 0 || pemlen > INT_MAX) {
        SET_ERR("not a PEM certificate or public key");
        rc = IMM_EINVAL;
        goto done;
    }
    pkey = pem_public_key(pem, pemlen);
    if (pkey == NULL) {
        rc = malloc_failed() ? IMM_ENOMEM : IMM_EINVAL;
        SET_ERR(rc == IMM_ENOMEM ? "out of memory" : "not a PEM certificate or public key");
        goto done;
    }
    if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_RSA) {
        SET_ERR("the key is not an RSA key");
        rc = IMM_EINVAL;
        goto done;
    }
    ctx = EVP_MD_CTX_new();
    if (ctx == NULL) {
        SET_ERR("out of memory");
        rc = IMM_ENOMEM;
        goto done;
    }
    if (EVP_DigestVerifyInit(ctx, NULL, md, NULL, pkey) != 1) {
        rc = malloc_failed() ? IMM_ENOMEM : IMM_ECRYPTO;
        SET_ERR(rc == IMM_ENOMEM ? "out of memory" : "RSA verification unavailable in this OpenSSL");
        goto done;
    }
    /* 0 is a mismatch, a negative value a malformed signature: both are
     * "not verified", since the signature is the sender's input. OpenSSL
     * reports some allocation failures inside the RSA operation as a bad
     * signature too: that fails closed, and is caught below when it can be */
    ERR_clear_error();
    *verified = EVP_DigestVerify(ctx, sig, siglen, data, n) == 1;
    if (!*verified && malloc_failed()) {
        SET_ERR("out of memory");
        rc = IMM_ENOMEM;
    }
done:
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    return rc;
}

int imm_redact(imm_buf *out, const char *s, size_t n, const char *secret, size_t slen,
               const char *mask, size_t mlen) {
    imm_buf forms[2] = {IMM_BUF_INIT, IMM_BUF_INIT}, pass[2] = {IMM_BUF_INIT, IMM_BUF_INIT};
    const char *cur = s;
    size_t curlen = n;
    int rc = IMM_ENOMEM, f, k = 0;
    forms[0].sensitive = forms[1].sensitive = pass[0].sensitive = pass[1].sensitive = 1;
    if (slen == 0)
        return imm_buf_add(out, s, n) == 0 ? IMM_OK : IMM_ENOMEM;
    /* forms[1]: encoded once; forms[0]: twice. Longest first, so a form
     * is never cut by masking a shorter one inside it. */
    if (imm_percent_encode(&forms[1], secret, slen) != IMM_OK ||
        imm_percent_encode(&forms[0], forms[1].p, forms[1].len) != IMM_OK)
        goto done;
    for (f = 0; f < 3; f++) {
        const char *form = f == 0 ? forms[0].p : f == 1 ? forms[1].p : secret;
        size_t flen = f == 0 ? forms[0].len : f == 1 ? forms[1].len : slen, i = 0;
        imm_buf *o = f == 2 ? out : &pass[k];
        if (o != out)
            imm_buf_clear(o);
        while (i < curlen) {
            if (curlen - i >= flen && memcmp(cur + i, form, flen) == 0) {
                if (imm_buf_add(o, mask, mlen) != 0)
                    goto done;
                i += flen;
            } else {
                const char *next = memchr(cur + i + 1, form[0], curlen - i - 1);
                size_t run = next != NULL ? (size_t)(next - (cur + i)) : curlen - i;
                if (imm_buf_add(o, cur + i, run) != 0)
                    goto done;
                i += run;
            }
        }
        if (imm_buf_add(o, "", 0) != 0) /* a NUL-terminated, non-NULL p */
            goto done;
        cur = o->p;
        curlen = o->len;
        k ^= 1;
    }
    rc = IMM_OK;
done:
    imm_buf_free(&forms[0]);
    imm_buf_free(&forms[1]);
    imm_buf_free(&pass[0]);
    imm_buf_free(&pass[1]);
    return rc;
}

int imm_random(unsigned char *out, size_t n) {
    if (n > 0x7fffffff || RAND_bytes(out, (int)n) != 1) {
        ERR_clear_error();
        return IMM_ECRYPTO;
    }
    return IMM_OK;
}

#define NONCE_POOL 32

#if defined(__GNUC__)
/* per thread: no lock, and no nonce handed to two threads */
static __thread unsigned char nonce_pool[NONCE_POOL * 16];
static __thread int nonce_left;
static __thread pid_t nonce_pid;

int imm_nonce16(unsigned char out[16]) {
    pid_t pid = getpid();
    unsigned char *n;
    if (nonce_left == 0 || nonce_pid != pid) {
        if (imm_random(nonce_pool, sizeof nonce_pool) != IMM_OK) {
            nonce_left = 0;
            return IMM_ECRYPTO;
        }
        nonce_left = NONCE_POOL;
        nonce_pid = pid;
    }
    n = nonce_pool + (size_t)(--nonce_left) * 16;
    memcpy(out, n, 16);
    OPENSSL_cleanse(n, 16);
    return IMM_OK;
}
#else
int imm_nonce16(unsigned char out[16]) {
    return imm_random(out, 16);
}
#endif

/* ---------------------------------------------------------------------- */

/* An encoded pair lives in one shared buffer; offsets survive reallocation.
 * raw is the caller's pair, which decides the order. */
typedef struct enc_pair {
    size_t koff, klen, voff, vlen;
    const char *base;
    const imm_kv *raw;
} enc_pair;

static int cmp_bytes(const char *a, size_t alen, const char *b, size_t blen) {
    size_t m = alen < blen ? alen : blen;
    int c = memcmp(a, b, m);
    if (c != 0)
        return c;
    return alen < blen ? -1 : (alen > blen);
}

/* By raw name, as the official openapi-util does (Object.keys(q).sort(),
 * then encode): the encoded name would order "A{" ("A%7B") before "Ab".
 * Raw bytes compare as code points do for UTF-8 (JavaScript compares
 * UTF-16 units, which differs only between U+E000-U+FFFF and astral
 * characters). Equal names, possible only from C, go by raw value. */
static int cmp_enc_pair(const void *x, const void *y) {
    const enc_pair *a = x, *b = y;
    int c = cmp_bytes(a->raw->k, a->raw->klen, b->raw->k, b->raw->klen);
    if (c != 0)
        return c;
    return cmp_bytes(a->raw->v, a->raw->vlen, b->raw->v, b->raw->vlen);
}

int imm_canonical_query(imm_buf *out, const imm_kv *pairs, size_t n,
                        char *err, size_t errlen) {
    imm_buf tmp = IMM_BUF_INIT;
    enc_pair *ep;
    size_t i;
    int rc = IMM_OK;
    if (n == 0)
        return imm_buf_add(out, "", 0) == 0 ? IMM_OK : IMM_ENOMEM;
    if (n > ((size_t)-1) / sizeof *ep) {
        SET_ERR("too many query parameters");
        return IMM_EINVAL;
    }
    ep = malloc(n * sizeof *ep);
    if (ep == NULL)
        goto nomem;
    for (i = 0; i < n; i++) {
        ep[i].koff = tmp.len;
        if (imm_percent_encode(&tmp, pairs[i].k, pairs[i].klen) != IMM_OK)
            goto nomem;
        ep[i].klen = tmp.len - ep[i].koff;
        ep[i].voff = tmp.len;
        if (imm_percent_encode(&tmp, pairs[i].v, pairs[i].vlen) != IMM_OK)
            goto nomem;
        ep[i].vlen = tmp.len - ep[i].voff;
    }
    for (i = 0; i < n; i++) {
        ep[i].base = tmp.p;
        ep[i].raw = &pairs[i];
    }
    qsort(ep, n, sizeof *ep, cmp_enc_pair);
    for (i = 0; i < n; i++) {
        if ((i > 0 && imm_buf_addc(out, '&') != 0) ||
            imm_buf_add(out, tmp.p + ep[i].koff, ep[i].klen) != 0 ||
            imm_buf_addc(out, '=') != 0 ||
            imm_buf_add(out, tmp.p + ep[i].voff, ep[i].vlen) != 0)
            goto nomem;
    }
    goto done;
nomem:
    SET_ERR("out of memory building the canonical query");
    rc = IMM_ENOMEM;
done:
    free(ep);
    imm_buf_free(&tmp);
    return rc;
}

/* ---------------------------------------------------------------------- */

const char *imm_v3_algorithm_name(imm_hash alg) {
    return alg == IMM_HASH_SM3 ? "ACS3-HMAC-SM3" : "ACS3-HMAC-SHA256";
}

void imm_v3_output_init(imm_v3_output *o) {
    imm_buf_init(&o->canonical_query);
    imm_buf_init(&o->canonical_request);
    imm_buf_init(&o->string_to_sign);
    imm_buf_init(&o->authorization);
}

void imm_v3_output_free(imm_v3_output *o) {
    imm_buf_free(&o->canonical_query);
    imm_buf_free(&o->canonical_request);
    imm_buf_free(&o->string_to_sign);
    imm_buf_free(&o->authorization);
}

/* A signed header: lower-cased name (in a shared buffer) and trimmed value. */
typedef struct hdr {
    size_t noff, nlen;
    const char *v;
    size_t vlen;
    const char *base;
} hdr;

static int cmp_hdr(const void *x, const void *y) {
    const hdr *a = x, *b = y;
    return cmp_bytes(a->base + a->noff, a->nlen, b->base + b->noff, b->nlen);
}

static int is_signed_header(const char *lname, size_t n) {
    return (n == 4 && memcmp(lname, "host", 4) == 0) ||
           (n == 12 && memcmp(lname, "content-type", 12) == 0) ||
           (n >= 6 && memcmp(lname, "x-acs-", 6) == 0);
}

/* A header name must be an RFC 9110 token, or it would corrupt the
 * canonical request and the Authorization header built from it. */
static int is_token(const char *s, size_t n) {
    size_t i;
    if (n == 0)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("!#$%&'*+-.^_`|~", c) != NULL) || c == '\0')
            return 0;
    }
    return 1;
}

/* CR or LF would smuggle a header; NUL would truncate it on the wire. */
static int bad_value(const char *s, size_t n) {
    return memchr(s, '\r', n) != NULL || memchr(s, '\n', n) != NULL || memchr(s, '\0', n) != NULL;
}

/* Canonical URI: each path segment percent-encoded, '/' kept. */
static int canonical_path(imm_buf *out, const char *path) {
    const char *seg = path;
    if (path == NULL || *path == '\0')
        return imm_buf_addc(out, '/') == 0 ? IMM_OK : IMM_ENOMEM;
    while (*seg) {
        const char *slash = strchr(seg, '/');
        size_t n = slash ? (size_t)(slash - seg) : strlen(seg);
        if (imm_percent_encode(out, seg, n) != IMM_OK)
            return IMM_ENOMEM;
        if (slash == NULL)
            break;
        if (imm_buf_addc(out, '/') != 0)
            return IMM_ENOMEM;
        seg = slash + 1;
    }
    return IMM_OK;
}

int imm_sign_v3(const imm_v3_input *in, imm_v3_output *out, char *err, size_t errlen) {
    imm_buf names = IMM_BUF_INIT, signed_names = IMM_BUF_INIT;
    hdr *hs = NULL;
    size_t i, j, nh = 0;
    unsigned char md[IMM_MAX_DIGEST];
    unsigned int mdlen = 0;
    char hex[2 * IMM_MAX_DIGEST + 1];
    const char *algname;
    int rc = IMM_OK;

    if (in->alg != IMM_HASH_SHA256 && in->alg != IMM_HASH_SM3) {
        SET_ERR("unsupported V3 hash");
        return IMM_EINVAL;
    }
    if (in->method == NULL || in->payload_hash == NULL || in->access_key_id == NULL) {
        SET_ERR("method, payload hash and access key id are required");
        return IMM_EINVAL;
    }
    algname = imm_v3_algorithm_name(in->alg);

    /* Collect, lower-case, trim and sort the headers that take part. */
    if (in->nheaders > 0) {
        hs = calloc(in->nheaders, sizeof *hs);
        if (hs == NULL)
            goto nomem;
    }
    for (i = 0; i < in->nheaders; i++) {
        const imm_kv *h = &in->headers[i];
        size_t off = names.len;
        const char *v = h->v;
        size_t vlen = h->vlen;
        if (imm_buf_reserve(&names, h->klen) != 0)
            goto nomem;
        for (j = 0; j < h->klen; j++) {
            char c = h->k[j];
            names.p[off + j] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        }
        if (!is_signed_header(names.p + off, h->klen))
            continue;
        if (!is_token(h->k, h->klen)) {
            SET_ERR("a signed header name is not an HTTP token");
            rc = IMM_EINVAL;
            goto done;
        }
        if (bad_value(h->v, h->vlen)) {
            SET_ERR("header %.*s contains CR, LF or NUL", (int)(h->klen > 64 ? 64 : h->klen), h->k);
            rc = IMM_EINVAL;
            goto done;
        }
        while (vlen > 0 && (*v == ' ' || *v == '\t')) {
            v++;
            vlen--;
        }
        while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
            vlen--;
        names.len += h->klen;
        names.p[names.len] = '\0';
        hs[nh].noff = off;
        hs[nh].nlen = h->klen;
        hs[nh].v = v;
        hs[nh].vlen = vlen;
        nh++;
    }
    for (i = 0; i < nh; i++)
        hs[i].base = names.p;
    if (nh > 1)
        qsort(hs, nh, sizeof *hs, cmp_hdr);
    for (i = 1; i < nh; i++) {
        if (cmp_hdr(&hs[i - 1], &hs[i]) == 0) {
            SET_ERR("duplicate signed header %.*s", (int)(hs[i].nlen > 64 ? 64 : hs[i].nlen),
                    names.p + hs[i].noff);
            rc = IMM_EINVAL;
            goto done;
        }
    }

    /* canonical request */
    rc = imm_canonical_query(&out->canonical_query, in->query, in->nquery, err, errlen);
    if (rc != IMM_OK)
        goto done;
    {
        imm_buf *cr = &out->canonical_request;
        if (imm_buf_adds(cr, in->method) != 0 || imm_buf_addc(cr, '\n') != 0 ||
            canonical_path(cr, in->path) != IMM_OK || imm_buf_addc(cr, '\n') != 0 ||
            imm_buf_add(cr, out->canonical_query.p, out->canonical_query.len) != 0 ||
            imm_buf_addc(cr, '\n') != 0)
            goto nomem;
        for (i = 0; i < nh; i++) {
            if (imm_buf_add(cr, names.p + hs[i].noff, hs[i].nlen) != 0 ||
                imm_buf_addc(cr, ':') != 0 || imm_buf_add(cr, hs[i].v, hs[i].vlen) != 0 ||
                imm_buf_addc(cr, '\n') != 0)
                goto nomem;
            if ((i > 0 && imm_buf_addc(&signed_names, ';') != 0) ||
                imm_buf_add(&signed_names, names.p + hs[i].noff, hs[i].nlen) != 0)
                goto nomem;
        }
        if (imm_buf_addc(cr, '\n') != 0 ||
            imm_buf_add(cr, signed_names.p ? signed_names.p : "", signed_names.len) != 0 ||
            imm_buf_addc(cr, '\n') != 0 || imm_buf_adds(cr, in->payload_hash) != 0)
            goto nomem;
    }

    /* string to sign */
    rc = imm_digest(in->alg, out->canonical_request.p, out->canonical_request.len, md, &mdlen);
    if (rc != IMM_OK) {
        SET_ERR("%s digest unavailable in this OpenSSL", algname);
        goto done;
    }
    imm_hex(md, mdlen, hex);
    if (imm_buf_adds(&out->string_to_sign, algname) != 0 ||
        imm_buf_addc(&out->string_to_sign, '\n') != 0 ||
        imm_buf_adds(&out->string_to_sign, hex) != 0)
        goto nomem;

    /* signature and Authorization */
    if (in->key != NULL)
        rc = in->key->alg == in->alg ? imm_hmac_keyed(in->key, out->string_to_sign.p,
                                                      out->string_to_sign.len, md, &mdlen)
                                     : IMM_ECRYPTO;
    else
        rc = imm_hmac(in->alg, in->secret, in->secret_len, out->string_to_sign.p,
                      out->string_to_sign.len, md, &mdlen);
    if (rc != IMM_OK) {
        SET_ERR("HMAC with %s failed", algname);
        goto done;
    }
    imm_hex(md, mdlen, hex);
    if (imm_buf_adds(&out->authorization, algname) != 0 ||
        imm_buf_adds(&out->authorization, " Credential=") != 0 ||
        imm_buf_adds(&out->authorization, in->access_key_id) != 0 ||
        imm_buf_adds(&out->authorization, ",SignedHeaders=") != 0 ||
        imm_buf_add(&out->authorization, signed_names.p ? signed_names.p : "", signed_names.len) != 0 ||
        imm_buf_adds(&out->authorization, ",Signature=") != 0 ||
        imm_buf_adds(&out->authorization, hex) != 0)
        goto nomem;
    rc = IMM_OK;
    goto done;
nomem:
    SET_ERR("out of memory while signing");
    rc = IMM_ENOMEM;
done:
    OPENSSL_cleanse(md, sizeof md);
    free(hs);
    imm_buf_free(&names);
    imm_buf_free(&signed_names);
    return rc;
}

/* ---------------------------------------------------------------------- */

void imm_v2_output_init(imm_v2_output *o) {
    imm_buf_init(&o->canonical_query);
    imm_buf_init(&o->string_to_sign);
    o->signature[0] = '\0';
}

void imm_v2_output_free(imm_v2_output *o) {
    imm_buf_free(&o->canonical_query);
    imm_buf_free(&o->string_to_sign);
}

int imm_sign_v2(const char *method, const imm_kv *params, size_t n,
                const char *secret, size_t secret_len,
                imm_v2_output *out, char *err, size_t errlen) {
    imm_buf key = IMM_BUF_INIT;
    unsigned char md[IMM_MAX_DIGEST];
    unsigned int mdlen = 0;
    int rc;

    key.sensitive = 1;
    rc = imm_canonical_query(&out->canonical_query, params, n, err, errlen);
    if (rc != IMM_OK)
        goto done;
    if (imm_buf_adds(&out->string_to_sign, method) != 0 ||
        imm_buf_adds(&out->string_to_sign, "&%2F&") != 0 ||
        imm_percent_encode(&out->string_to_sign, out->canonical_query.p,
                           out->canonical_query.len) != IMM_OK)
        goto nomem;
    /* V2 keys the HMAC with secret + "&"; that copy is wiped on free. */
    if (imm_buf_add(&key, secret, secret_len) != 0 || imm_buf_addc(&key, '&') != 0)
        goto nomem;
    rc = imm_hmac(IMM_HASH_SHA1, key.p, key.len, out->string_to_sign.p,
                  out->string_to_sign.len, md, &mdlen);
    if (rc != IMM_OK) {
        SET_ERR("HMAC-SHA1 failed");
        goto done;
    }
    EVP_EncodeBlock((unsigned char *)out->signature, md, (int)mdlen);
    rc = IMM_OK;
    goto done;
nomem:
    SET_ERR("out of memory while signing");
    rc = IMM_ENOMEM;
done:
    OPENSSL_cleanse(md, sizeof md);
    imm_buf_free(&key);
    return rc;
}
