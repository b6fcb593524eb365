/* imm_castore.c - a CA file parsed lazily, certificate by certificate, as
 * TLS handshakes name them; see imm_castore.h for why. */
#include "imm_castore.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

/* A CA bundle is well under a megabyte (Debian's: 220 KB); anything past
 * this stays with libcurl rather than being held in memory twice. */
#define CASTORE_MAX_FILE (8u * 1024u * 1024u)
/* Stores kept for new handles; older ones live on while handles use them. */
#define CASTORE_CACHE_MAX 8
/* A path is read again after this long, as libcurl's CA cache does
 * (CURLOPT_CA_CACHE_TIMEOUT's default): the system bundle is keyed by its
 * path only, and a long-running process then sees its updates. */
#define CASTORE_MAX_AGE_S 86400

typedef struct cert_entry {
    size_t off, len;             /* the certificate's DER in s->der */
    size_t subj_off, subj_len;   /* its subject Name's DER, within it */
    unsigned long hash;          /* X509_NAME_hash_ex of the subject, once hashed */
    int bad;                     /* the subject or the certificate did not parse */
    X509 *x;                     /* parsed on first match, then shared by every store */
} cert_entry;

/* What reading the file made of it. */
enum { CA_UNREAD = 0, CA_INDEXED, CA_FULL, CA_FAILED };

struct imm_castore {
    char *path;                  /* the cache key: the path as handed to us */
    int state;                   /* CA_*, under lock */
    unsigned char *der;          /* CA_INDEXED: every certificate's DER, one after another */
    cert_entry *e;
    size_t n;
    X509_STORE *full;            /* CA_FULL: the file as OpenSSL reads it, for files the
                                  * index does not take (other blocks, such as TRUSTED
                                  * CERTIFICATE); its objects are handed out as named */
    size_t parsed;               /* certificates parsed so far (the specs read it) */
    pthread_mutex_t lock;        /* all of the above */
    int wanted;                  /* a handshake uses it: imm_castore_prepare reads it (cache_lock) */
    int refs;                    /* under cache_lock */
    time_t loaded_at;            /* CLOCK_MONOTONIC seconds */
    imm_castore *next;           /* in the cache */
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static imm_castore *cache;       /* newest first */
/* Set (under cache_lock) when a store is wanted, so that
 * imm_castore_prepare, which runs after every multi perform, takes the
 * process-wide lock only when there is something to read. */
static int wanted_any;

static time_t now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec;
}

/* Takes the cached store for path out of the cache when it is too old.
 * Under cache_lock; returns it when its last reference went with it. */
static imm_castore *expire(const char *path) {
    imm_castore **pp, *s;
    time_t now = now_s();
    for (pp = &cache; (s = *pp) != NULL; pp = &s->next) {
        if (strcmp(s->path, path) == 0) {
            if (now - s->loaded_at < CASTORE_MAX_AGE_S)
                return NULL;
            *pp = s->next;
            return --s->refs == 0 ? s : NULL;
        }
    }
    return NULL;
}

/* --- splitting the file ------------------------------------------------ */

/* One DER header at *p (below end): a single-byte tag and a definite
 * length. Sets the content's start and length; 0 when malformed. */
static int der_header(const unsigned char *p, const unsigned char *end, unsigned char *tag,
                      const unsigned char **content, size_t *len) {
    size_t n, i, nbytes;
    if (end - p < 2)
        return 0;
    *tag = p[0];
    if ((p[0] & 0x1f) == 0x1f) /* a multi-byte tag: not in a certificate's outer fields */
        return 0;
    if (p[1] < 0x80) {
        n = p[1];
        p += 2;
    } else {
        nbytes = p[1] & 0x7f;
        if (nbytes == 0 || nbytes > 4 || (size_t)(end - p) < 2 + nbytes)
            return 0; /* indefinite, or longer than any bundle */
        n = 0;
        for (i = 0; i < nbytes; i++)
            n = (n << 8) | p[2 + i];
        p += 2 + nbytes;
    }
    if ((size_t)(end - p) < n)
        return 0;
    *content = p;
    *len = n;
    return 1;
}

/* The subject of the certificate der[0..len): Certificate is a SEQUENCE of
 * tbsCertificate, ...; tbsCertificate a SEQUENCE of [0] version
 * (optional), serialNumber, signature, issuer, validity, subject. Sets the
 * certificate's whole length (its DER may be followed by nothing else) and
 * the subject element's offset and length; 0 when it does not walk. */
static int find_subject(const unsigned char *der, size_t len, size_t *total, size_t *off, size_t *slen) {
    const unsigned char *end = der + len, *c, *tbs, *tend, *p;
    size_t n, tn;
    unsigned char tag;
    int field;
    if (!der_header(der, end, &tag, &c, &n) || tag != 0x30)
        return 0;
    *total = (size_t)(c - der) + n;
    end = c + n;
    if (!der_header(c, end, &tag, &tbs, &tn) || tag != 0x30)
        return 0;
    tend = tbs + tn;
    p = tbs;
    /* version [0] (optional), serial, signature, issuer, validity: skipped */
    for (field = 0; field < 6; field++) {
        const unsigned char *fc;
        size_t fn;
        if (!der_header(p, tend, &tag, &fc, &fn))
            return 0;
        if (field == 0 && tag != 0xa0) {
            field++; /* no version: this is the serial */
        }
        if (field == 5) {
            if (tag != 0x30)
                return 0;
            *off = (size_t)(p - der);
            *slen = (size_t)(fc - p) + fn;
            return 1;
        }
        p = fc + fn;
    }
    return 0;
}

/* Appends one base64 block's certificate to the store's arrays. 1 on
 * success, 0 when it is not a certificate this reader can index, -1 when
 * out of memory. */
static int add_block(imm_castore *s, size_t *cap, size_t *used, const char *b64, size_t b64len) {
    size_t pad = 0, total, off, slen, outmax;
    int got;
    cert_entry *e;
    if (b64len == 0 || b64len % 4 != 0 || b64len > (size_t)0x7fffffff)
        return 0;
    while (pad < 2 && b64[b64len - 1 - pad] == '=')
        pad++;
    outmax = b64len / 4 * 3;
    if (*used + outmax > *cap) {
        size_t ncap = (*cap ? *cap : 4096);
        unsigned char *nd;
        while (ncap < *used + outmax)
            ncap *= 2;
        nd = realloc(s->der, ncap);
        if (nd == NULL)
            return -1;
        s->der = nd;
        *cap = ncap;
    }
    got = EVP_DecodeBlock(s->der + *used, (const unsigned char *)b64, (int)b64len);
    if (got < 0 || (size_t)got < pad)
        return 0;
    got -= (int)pad;
    if (!find_subject(s->der + *used, (size_t)got, &total, &off, &slen) || total != (size_t)got)
        return 0;
    e = realloc(s->e, (s->n + 1) * sizeof *s->e);
    if (e == NULL)
        return -1;
    s->e = e;
    memset(&e[s->n], 0, sizeof e[s->n]);
    e[s->n].off = *used;
    e[s->n].len = total;
    e[s->n].subj_off = *used + off;
    e[s->n].subj_len = slen;
    s->n++;
    *used += total;
    return 1;
}

/* Splits the PEM text into certificates: 1 when every block is a
 * CERTIFICATE this reader indexed and there is at least one; 0 otherwise;
 * -1 when out of memory. Lines outside blocks are ignored, as OpenSSL's PEM
 * reader ignores them. */
static int split_pem(imm_castore *s, const char *text, size_t len) {
    static const char begin[] = "-----BEGIN ", label[] = "CERTIFICATE-----", endl[] = "-----END CERTIFICATE-----";
    const char *p = text, *end = text + len;
    size_t cap = 0, used = 0, b64cap = 0, b64len = 0;
    char *b64 = NULL;
    int in = 0, rc = 1;
    while (p < end && rc == 1) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end, *next = nl ? nl + 1 : end;
        size_t ll;
        while (le > p && (le[-1] == '\r' || le[-1] == ' ' || le[-1] == '\t'))
            le--;
        ll = (size_t)(le - p);
        if (!in) {
            if (ll >= sizeof begin - 1 && memcmp(p, begin, sizeof begin - 1) == 0) {
                /* a block of any other kind (a CRL, a key, TRUSTED
                 * CERTIFICATE) is libcurl's to read */
                if (ll != sizeof begin - 1 + sizeof label - 1 ||
                    memcmp(p + sizeof begin - 1, label, sizeof label - 1) != 0)
                    rc = 0;
                in = 1;
                b64len = 0;
            }
        } else if (ll == sizeof endl - 1 && memcmp(p, endl, ll) == 0) {
            int r = add_block(s, &cap, &used, b64, b64len);
            if (r != 1)
                rc = r;
            in = 0;
        } else {
            size_t i;
            if (b64len + ll > b64cap) {
                size_t ncap = b64cap ? b64cap : 4096;
                char *nb;
                while (ncap < b64len + ll)
                    ncap *= 2;
                nb = realloc(b64, ncap);
                if (nb == NULL) {
                    rc = -1;
                    break;
                }
                b64 = nb;
                b64cap = ncap;
            }
            for (i = 0; i < ll; i++) {
                char ch = p[i];
                if (ch == ' ' || ch == '\t' || ch == '\r')
                    continue;
                if (ch == ':' || ch == '-') {
                    rc = 0; /* a header (Proc-Type: ...) or a stray marker */
                    break;
                }
                b64[b64len++] = ch;
            }
        }
        p = next;
    }
    free(b64);
    if (rc == 1 && (in || s->n == 0))
        rc = 0; /* an unterminated block, or no certificate */
    return rc;
}

/* Lets go of the index: the certificates, their DER and what was parsed. */
static void drop_index(imm_castore *s) {
    size_t i;
    for (i = 0; i < s->n; i++)
        X509_free(s->e[i].x);
    free(s->e);
    free(s->der);
    s->e = NULL;
    s->der = NULL;
    s->n = 0;
}

static void store_free(imm_castore *s) {
    if (s == NULL)
        return;
    drop_index(s);
    X509_STORE_free(s->full);
    free(s->path);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static imm_castore *store_new(const char *key) {
    imm_castore *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    if ((s->path = strdup(key)) == NULL || pthread_mutex_init(&s->lock, NULL) != 0) {
        free(s->path);
        free(s);
        return NULL;
    }
    s->refs = 1;
    return s;
}

/* Hashes every subject (X509_NAME_hash_ex, OpenSSL's canonical form, as
 * its directory lookup names files), marking what does not parse. */
static void hash_subjects(imm_castore *s) {
    size_t i;
    for (i = 0; i < s->n; i++) {
        cert_entry *e = &s->e[i];
        const unsigned char *p = s->der + e->subj_off;
        X509_NAME *nm = d2i_X509_NAME(NULL, &p, (long)e->subj_len);
        int ok = 0;
        if (nm != NULL)
            e->hash = X509_NAME_hash_ex(nm, NULL, NULL, &ok);
        if (!ok)
            e->bad = 1;
        X509_NAME_free(nm);
    }
}

/* The file's whole text, or NULL (unreadable, or over CASTORE_MAX_FILE). */
static char *read_file(const char *path, size_t *lenp) {
    FILE *f = fopen(path, "rb");
    char *text = NULL;
    size_t len = 0, cap = 0, got;
    int ok = 1;
    if (f == NULL)
        return NULL;
    do {
        if (len == cap) {
            char *nt;
            size_t ncap = cap ? cap * 2 : 256 * 1024;
            if (ncap > CASTORE_MAX_FILE + 1)
                ncap = CASTORE_MAX_FILE + 1;
            /* ncap == cap: too large */
            if (ncap == cap || (nt = realloc(text, ncap)) == NULL) {
                ok = 0;
                break;
            }
            text = nt;
            cap = ncap;
        }
        got = fread(text + len, 1, cap - len, f);
        len += got;
    } while (got > 0);
    ok = ok && !ferror(f);
    fclose(f);
    if (!ok) {
        free(text);
        return NULL;
    }
    *lenp = len;
    return text;
}

/* Indexes the text (CA_INDEXED); a text the index does not take goes to
 * OpenSSL's own reader (CA_FULL), as libcurl would have handed it over;
 * one that does not load there either is CA_FAILED. Under s->lock. */
static void load_text(imm_castore *s, const char *text, size_t len) {
    int r;
    ERR_set_mark(); /* what fails to parse here is no error of a handshake */
    r = split_pem(s, text, len);
    if (r == 1) {
        hash_subjects(s);
        s->state = CA_INDEXED;
    } else {
        drop_index(s);
        s->state = CA_FAILED;
        if (r == 0) { /* not out of memory: a file for OpenSSL's reader */
            BIO *b = BIO_new_mem_buf(text, len > 0x7fffffff ? 0x7fffffff : (int)len);
            X509_STORE *full = X509_STORE_new();
            STACK_OF(X509_INFO) *infos = b ? PEM_X509_INFO_read_bio(b, NULL, NULL, NULL) : NULL;
            int i2, added = 0;
            for (i2 = 0; full != NULL && infos != NULL && i2 < sk_X509_INFO_num(infos); i2++) {
                X509_INFO *inf = sk_X509_INFO_value(infos, i2);
                if (inf->x509 != NULL && X509_STORE_add_cert(full, inf->x509))
                    added++;
                if (inf->crl != NULL && X509_STORE_add_crl(full, inf->crl))
                    added++;
            }
            if (infos != NULL && added > 0) {
                s->full = full;
                full = NULL;
                s->state = CA_FULL;
            }
            sk_X509_INFO_pop_free(infos, X509_INFO_free);
            X509_STORE_free(full);
            BIO_free(b);
        }
    }
    ERR_pop_to_mark();
}

/* Reads the file if no one has. Under s->lock. */
static void ensure_loaded(imm_castore *s) {
    char *text;
    size_t len = 0;
    if (s->state != CA_UNREAD)
        return;
    text = read_file(s->path, &len);
    if (text == NULL) {
        s->state = CA_FAILED;
        return;
    }
    load_text(s, text, len);
    free(text);
}

imm_castore *imm_castore_parse(const char *key, const char *text, size_t len) {
    imm_castore *s = store_new(key);
    if (s == NULL)
        return NULL;
    load_text(s, text, len);
    if (s->state != CA_INDEXED) {
        store_free(s);
        return NULL;
    }
    return s;
}

imm_castore *imm_castore_get(const char *path) {
    imm_castore *s, **pp, *evicted, *made;
    int count = 0;
    if (path == NULL || path[0] == '\0' || strchr(path, ':') != NULL)
        return NULL; /* the path doubles as libcurl's CApath, where ':' separates directories */
    pthread_mutex_lock(&cache_lock);
    evicted = expire(path);
    for (s = cache; s != NULL; s = s->next) {
        if (strcmp(s->path, path) == 0) {
            s->refs++;
            pthread_mutex_unlock(&cache_lock);
            store_free(evicted);
            return s;
        }
    }
    /* a miss: nothing is read here (the first handshake does that) */
    made = store_new(path);
    if (made == NULL) {
        pthread_mutex_unlock(&cache_lock);
        store_free(evicted);
        return NULL;
    }
    made->refs++; /* the cache's, beside the caller's */
    made->loaded_at = now_s();
    made->next = cache;
    cache = made;
    /* the oldest past CASTORE_CACHE_MAX leaves the cache; handles keep theirs */
    for (pp = &cache; *pp != NULL; pp = &(*pp)->next) {
        if (++count > CASTORE_CACHE_MAX) {
            imm_castore *old = *pp;
            *pp = old->next;
            if (--old->refs == 0) {
                store_free(evicted);
                evicted = old;
            }
            break;
        }
    }
    pthread_mutex_unlock(&cache_lock);
    store_free(evicted);
    return made;
}

void imm_castore_release(imm_castore *s) {
    int last;
    if (s == NULL)
        return;
    pthread_mutex_lock(&cache_lock);
    last = --s->refs == 0;
    pthread_mutex_unlock(&cache_lock);
    if (last)
        store_free(s);
}

void imm_castore_prepare(void) {
    if (!__atomic_load_n(&wanted_any, __ATOMIC_ACQUIRE))
        return;
    for (;;) {
        imm_castore *s, *todo = NULL;
        pthread_mutex_lock(&cache_lock);
        /* cleared before the walk: a store wanted after it sets it again */
        __atomic_store_n(&wanted_any, 0, __ATOMIC_RELEASE);
        for (s = cache; s != NULL && todo == NULL; s = s->next) {
            if (s->wanted) {
                s->wanted = 0;
                s->refs++;
                todo = s;
            }
        }
        pthread_mutex_unlock(&cache_lock);
        if (todo == NULL)
            return;
        pthread_mutex_lock(&todo->lock);
        ensure_loaded(todo);
        pthread_mutex_unlock(&todo->lock);
        imm_castore_release(todo);
    }
}

const char *imm_castore_mode(imm_castore *s) {
    static const char *const names[] = { "unread", "indexed", "whole", "failed" };
    int st;
    pthread_mutex_lock(&s->lock);
    st = s->state;
    pthread_mutex_unlock(&s->lock);
    return names[st];
}

void imm_castore_counts(imm_castore *s, size_t *certs, size_t *parsed) {
    pthread_mutex_lock(&s->lock);
    *certs = s->n;
    *parsed = s->parsed;
    pthread_mutex_unlock(&s->lock);
}

const char *imm_castore_path(const imm_castore *s) {
    return s->path;
}

/* --- the lookup OpenSSL calls ------------------------------------------ */

/* Adds x to the handshake's store; the first one added is also found
 * (with a reference of its own), as by_subject returns it. */
static void offer(X509_STORE *store, X509 *x, X509 **found) {
    if (X509_STORE_add_cert(store, x) && *found == NULL && X509_up_ref(x))
        *found = x;
}

/* Adds every certificate of the file whose subject is name to the
 * lookup's store (as OpenSSL's directory lookup adds every <hash>.N) and
 * returns one of them in ret, with the references OpenSSL's
 * X509_LOOKUP_meth_new(3) asks of a lookup method. */
static int by_subject(X509_LOOKUP *lu, X509_LOOKUP_TYPE type, const X509_NAME *name, X509_OBJECT *ret) {
    imm_castore *s = X509_LOOKUP_get_method_data(lu);
    X509_STORE *store = X509_LOOKUP_get_store(lu);
    X509 *found = NULL;
    size_t i;
    int ok = 0;
    if (type != X509_LU_X509 || s == NULL || store == NULL || name == NULL)
        return 0;
    ERR_set_mark(); /* what fails to parse here is no error of the handshake */
    pthread_mutex_lock(&s->lock);
    ensure_loaded(s); /* at once, when imm_castore_prepare did not run first */
    if (s->state == CA_INDEXED) {
        unsigned long h = X509_NAME_hash_ex(name, NULL, NULL, &ok);
        for (i = 0; ok && i < s->n; i++) {
            cert_entry *e = &s->e[i];
            if (e->bad || e->hash != h)
                continue;
            if (e->x == NULL) {
                const unsigned char *p = s->der + e->off;
                e->x = d2i_X509(NULL, &p, (long)e->len);
                if (e->x == NULL) {
                    e->bad = 1;
                    continue;
                }
                s->parsed++;
            }
            if (X509_NAME_cmp(X509_get_subject_name(e->x), name) != 0)
                continue; /* the same hash, another name */
            offer(store, e->x, &found);
        }
    } else if (s->state == CA_FULL && X509_STORE_lock(s->full)) {
        STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(s->full);
        int j, n = sk_X509_OBJECT_num(objs);
        for (j = 0; j < n; j++) {
            X509 *x = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, j));
            if (x == NULL || X509_NAME_cmp(X509_get_subject_name(x), name) != 0)
                continue;
            offer(store, x, &found);
        }
        X509_STORE_unlock(s->full);
    }
    pthread_mutex_unlock(&s->lock);
    ERR_pop_to_mark();
    if (found == NULL)
        return 0;
    ok = X509_OBJECT_set1_X509(ret, found);
    X509_free(found); /* our hold */
    if (!ok)
        return 0;
    /* X509_STORE_CTX_get_by_subject takes a reference of its own */
    X509_free(found);
    return 1;
}

static void lookup_free(X509_LOOKUP *lu) {
    imm_castore_release(X509_LOOKUP_get_method_data(lu));
}

static X509_LOOKUP_METHOD *method;
static pthread_once_t method_once = PTHREAD_ONCE_INIT;

static void method_init(void) {
    X509_LOOKUP_METHOD *m = X509_LOOKUP_meth_new("imm CA file, read lazily");
    if (m == NULL)
        return;
    if (!X509_LOOKUP_meth_set_get_by_subject(m, by_subject) || !X509_LOOKUP_meth_set_free(m, lookup_free)) {
        X509_LOOKUP_meth_free(m);
        return;
    }
    method = m;
}

/* A new store whose one lookup (*lup) reads s; NULL when out of memory. */
static X509_STORE *new_store(imm_castore *s, X509_LOOKUP **lup) {
    X509_STORE *store;
    X509_LOOKUP *lu;
    pthread_once(&method_once, method_init);
    if (method == NULL)
        return NULL;
    store = X509_STORE_new();
    if (store == NULL)
        return NULL;
    lu = X509_STORE_add_lookup(store, method);
    if (lu == NULL) {
        X509_STORE_free(store);
        return NULL;
    }
    pthread_mutex_lock(&cache_lock);
    s->refs++; /* the lookup's, dropped by lookup_free */
    pthread_mutex_unlock(&cache_lock);
    X509_LOOKUP_set_method_data(lu, s);
    *lup = lu;
    return store;
}

int imm_castore_attach(imm_castore *s, void *ssl_ctx) {
    X509_STORE *store;
    X509_LOOKUP *lu;
    int failed;
    if (s == NULL)
        return 0;
    pthread_mutex_lock(&s->lock);
    failed = s->state == CA_FAILED;
    pthread_mutex_unlock(&s->lock);
    if (failed)
        return -1; /* read before, to nothing usable */
    store = new_store(s, &lu);
    if (store == NULL)
        return 0;
    /* read once the ClientHello is out (imm_castore_prepare), not before */
    pthread_mutex_lock(&cache_lock);
    s->wanted = 1;
    __atomic_store_n(&wanted_any, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&cache_lock);
    /* what libcurl sets on the store it fills itself */
    X509_STORE_set_flags(store, X509_V_FLAG_TRUSTED_FIRST | X509_V_FLAG_PARTIAL_CHAIN);
    SSL_CTX_set_cert_store((SSL_CTX *)ssl_ctx, store); /* the context owns it now */
    return 1;
}

void *imm_castore_find(imm_castore *s, const void *name_der, size_t len) {
    const unsigned char *p = name_der;
    X509_NAME *nm = d2i_X509_NAME(NULL, &p, (long)len);
    X509_LOOKUP *lu = NULL;
    X509_STORE *store = nm ? new_store(s, &lu) : NULL;
    X509_OBJECT *obj = X509_OBJECT_new();
    X509 *x = NULL;
    if (store != NULL && obj != NULL) {
        /* obj plays OpenSSL's stack object, which holds the result without
         * a reference of its own: it gets one before it is freed, and the
         * caller another, as X509_STORE_CTX_get_by_subject gives its caller */
        if (by_subject(lu, X509_LU_X509, nm, obj) && X509_OBJECT_up_ref_count(obj)) {
            x = X509_OBJECT_get0_X509(obj);
            if (x != NULL && !X509_up_ref(x))
                x = NULL;
        }
    }
    X509_OBJECT_free(obj);
    X509_STORE_free(store);
    X509_NAME_free(nm);
    return x;
}
