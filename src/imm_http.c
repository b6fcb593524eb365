/* imm_http.c - HTTP over reused libcurl easy handles, always through the
 * multi interface; see imm_http.h. */
#include "imm_http.h"
#include "imm_castore.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* curl_multi_socket_all (below) is marked deprecated in favour of
 * curl_multi_socket_action, which would need the caller to say which socket
 * is ready; it stays in libcurl's API and ABI. */
#define CURL_DISABLE_DEPRECATION 1
#include <curl/curl.h>
#include <openssl/ssl.h>
#include <zlib.h>

#define IMM_ORIGIN_MAX 160
#define IMM_HTTP_MAX_HEAD_BYTES (1024 * 1024) /* libcurl 7.88's DYN_HTTP_REQUEST */
#define IMM_HTTP_HEAD_MARGIN (16 * 1024)
#define IMM_H2_ORIGINS 16

/* Pre-connected sockets (imm_multi_preconnect) need Linux: libcurl 7.88
 * calls connect() on a socket it is handed even when told it is connected
 * (fixed in 8.0), and only Linux answers 0 to that for a non-blocking
 * connect whose handshake is over; TCP_INFO tells a new connection from a
 * reused one. */
#ifdef __linux__
#define IMM_PRECONNECT 1
#include <fcntl.h>
#include <linux/tcp.h> /* TCP_INFO's tcpi_bytes_received; glibc's netinet/tcp.h lacks it */
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#endif
#define IMM_PRECONNECT_MAX 32

struct imm_http {
    CURL *curl;
    imm_buf body;
    imm_buf headers;
    size_t max_body;
    int too_large;              /* set by the write callback when over cap */
    int headers_too_large;      /* set by the header callback when over its cap */
    long timeout_ms;            /* the handle's own total timeout (0: none) */
    char errbuf[CURL_ERROR_SIZE];
    struct curl_slist *req_headers; /* this exchange's header list, libcurl reads it */
    imm_http_phase state;
    CURLcode rc;                /* the transfer's outcome once done */
    long id;
    imm_multi *multi;           /* attached to, or NULL */
    imm_multi *own;             /* private multi for blocking calls, made on first use */
    imm_http *prev, *next;      /* in multi->attached */
    imm_multi *parked;          /* done during another handle's blocking call, not yet reported */
    imm_http *parked_next;
    char origin[IMM_ORIGIN_MAX]; /* "scheme://host:port" of the current exchange */
    int capath_cleared;         /* the default CURLOPT_CAPATH dropped: a CA file is in use */
    imm_castore *castore;       /* the CA file, read lazily by our SSL_CTX callback; NULL:
                                 * libcurl reads it (insecure, or a file imm_castore leaves) */
    int pipewait;               /* the last transfer waited to multiplex on an h2 connection */
    int sends;                  /* requests this exchange has put on a connection */
    int resend_refused;         /* libcurl's re-send of the request was stopped (on_prereq) */
    int tls_resumed;            /* this exchange's TLS connection resumed a session (test hook) */
    int proxied;                /* 1: a proxy option, 0: none, -1: the environment's, if any */
    int pc_hooked;              /* the pre-connect socket callbacks are set */
    curl_socket_t pc_handed;    /* the pre-connected socket just handed to libcurl */
};

/* A socket libcurl waits on, as its socket callback last described it. */
typedef struct imm_sock {
    curl_socket_t fd;
    int what;                   /* CURL_POLL_IN, _OUT or _INOUT */
} imm_sock;

struct imm_multi {
    CURLM *m;
    /* TLS sessions shared by every easy handle while it is attached: each
     * client (and each chain of a parallel listing) has its own handle, and
     * libcurl keeps sessions per handle otherwise, so every new connection
     * of a fan-out did a full handshake. libcurl only resumes a session
     * whose SSL config (CA file path included) matches, so the curl
     * transport's spellings of a replaced CA file keep them apart. NULL if
     * it could not be made: handles then keep their own. */
    CURLSH *share;
    imm_http *attached;         /* every handle added and not yet removed */
    int count;
    long next_id;
    imm_sock *socks;            /* kept by on_socket: any fd number, unlike an fd_set */
    size_t nsocks, socks_cap;
    imm_http *parked;           /* done handles to report from imm_multi_next_done first */
    int nparked;
    /* Origins that answered over HTTP/2: later transfers there wait for that
     * connection (PIPEWAIT) and share it instead of opening their own. Not
     * for HTTP/1.1 hosts, where waiting only delays the new connection. */
    char h2[IMM_H2_ORIGINS][IMM_ORIGIN_MAX];
    int nh2;
#ifdef IMM_PRECONNECT
    /* Pre-connected sockets (imm_multi_preconnect): pc_watch's peer is
     * learnt in on_socket, pc_want connections to it are opened in
     * imm_multi_perform, and on_opensocket hands them to libcurl. */
    imm_http *pc_watch;
    int pc_want;
    struct sockaddr_storage pc_peer;
    socklen_t pc_peerlen;       /* 0: no peer known */
    curl_socket_t pc_wfd;       /* the watched transfer's socket, once its peer is known */
    curl_socket_t pc_fd[IMM_PRECONNECT_MAX];
    int pc_n;
#endif
    long pc_opened, pc_used;    /* test hook */
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void global_init(void) {
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* curl_version() rewrites one static buffer on every call (and starts
 * libldap's SASL, which never frees its memory), so the version string is
 * built once from curl_version_info(), under its own once-only guard, and
 * the copy is shared. */
static pthread_once_t backend_once = PTHREAD_ONCE_INIT;
static char backend_version[256];

static void backend_init(void) {
    const curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    snprintf(backend_version, sizeof backend_version, "libcurl/%s%s%s zlib/%s", v->version,
             v->ssl_version ? " " : "", v->ssl_version ? v->ssl_version : "",
             v->libz_version ? v->libz_version : "none");
}

#define SET_ERR(...)                                    \
    do {                                                \
        if (err != NULL && errlen > 0)                  \
            snprintf(err, errlen, __VA_ARGS__);         \
    } while (0)

/* curl_global_init, once per process; 0, or -1 with err set. */
static int global_ready(char *err, size_t errlen) {
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK) {
        SET_ERR("curl_global_init failed: %s", curl_easy_strerror(global_rc));
        return -1;
    }
    return 0;
}

/* libcurl callbacks only copy bytes: no Lua is ever called from here. */
static size_t on_body(char *data, size_t size, size_t nmemb, void *ud) {
    imm_http *h = ud;
    size_t n = size * nmemb;
    if (h->max_body > 0 && h->body.len + n > h->max_body) {
        h->too_large = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    return imm_buf_add(&h->body, data, n) == 0 ? n : 0;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *ud) {
    imm_http *h = ud;
    size_t n = size * nmemb;
    /* A new status line starts a new response (after 100-continue or a
     * proxy's CONNECT reply): keep only the last block. */
    if (n >= 5 && memcmp(data, "HTTP/", 5) == 0)
        imm_buf_clear(&h->headers);
    /* A reply's headers are a few hundred bytes; megabytes of them are a
     * broken or hostile server, not a reason to grow a buffer. */
    if (h->headers.len + n > IMM_HTTP_MAX_HEADER_BYTES) {
        h->headers_too_large = 1;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    return imm_buf_add(&h->headers, data, n) == 0 ? n : 0;
}

#if LIBCURL_VERSION_NUM >= 0x075000 /* CURLOPT_PREREQFUNCTION: 7.80 */
/* libcurl sends a request again, on a new connection and with the same
 * bytes, when a reused connection died before any byte of the reply. The
 * same bytes carry the same signature nonce, which the service refuses
 * (SignatureNonceUsed). This callback runs before each send of a transfer:
 * a second one is that re-send, so it fails the exchange instead, and the
 * client retries a read with a new signature. */
static int on_prereq(void *ud, char *primary_ip, char *local_ip, int primary_port, int local_port) {
    imm_http *h = ud;
    (void)primary_ip;
    (void)local_ip;
    (void)primary_port;
    (void)local_port;
    {
        /* A test hook (imm_http_tls_resumed), read here while the
         * connection is the transfer's. */
        struct curl_tlssessioninfo *ti = NULL;
        h->tls_resumed = curl_easy_getinfo(h->curl, CURLINFO_TLS_SSL_PTR, &ti) == CURLE_OK &&
                         ti != NULL && ti->backend == CURLSSLBACKEND_OPENSSL &&
                         ti->internals != NULL && SSL_session_reused(ti->internals) == 1;
    }
    if (h->sends++ > 0) {
        h->resend_refused = 1;
        return CURL_PREREQFUNC_ABORT;
    }
    return CURL_PREREQFUNC_OK;
}
#endif

/* CURLOPT_SSL_CTX_FUNCTION: the connection's CA store reads h->castore. */
static CURLcode on_ssl_ctx(CURL *c, void *ssl_ctx, void *clientp) {
    int r = imm_castore_attach(clientp, ssl_ctx);
    (void)c;
    return r > 0 ? CURLE_OK : r < 0 ? CURLE_SSL_CACERT_BADFILE : CURLE_OUT_OF_MEMORY;
}

imm_http *imm_http_new(const imm_http_options *opt, char *err, size_t errlen) {
    imm_http *h;
    CURL *c;
    if (global_ready(err, errlen) != 0)
        return NULL;
    h = calloc(1, sizeof *h);
    if (h == NULL) {
        SET_ERR("out of memory");
        return NULL;
    }
    imm_buf_init(&h->body);
    imm_buf_init(&h->headers);
    h->max_body = opt->max_response_bytes;
    h->timeout_ms = opt->timeout_ms > 0 ? opt->timeout_ms : 0;
    h->proxied = opt->no_proxy ? 0 : opt->proxy != NULL ? opt->proxy[0] != '\0' : -1;
    h->pc_handed = CURL_SOCKET_BAD;
    c = h->curl = curl_easy_init();
    if (c == NULL) {
        free(h);
        SET_ERR("curl_easy_init failed");
        return NULL;
    }
#define OPT(o, v)                                                              \
    do {                                                                       \
        CURLcode rc_ = curl_easy_setopt(c, o, v);                              \
        if (rc_ != CURLE_OK) {                                                 \
            SET_ERR("curl_easy_setopt(%s): %s", #o, curl_easy_strerror(rc_));  \
            imm_http_free(h);                                                  \
            return NULL;                                                       \
        }                                                                      \
    } while (0)
    /* NOSIGNAL: never let libcurl touch signals in a host program. */
    OPT(CURLOPT_NOSIGNAL, 1L);
    OPT(CURLOPT_PRIVATE, (void *)h); /* the multi maps finished transfers back */
    OPT(CURLOPT_ERRORBUFFER, h->errbuf);
    OPT(CURLOPT_WRITEFUNCTION, on_body);
    OPT(CURLOPT_WRITEDATA, h);
    OPT(CURLOPT_HEADERFUNCTION, on_header);
    OPT(CURLOPT_HEADERDATA, h);
#if LIBCURL_VERSION_NUM >= 0x075000
    OPT(CURLOPT_PREREQFUNCTION, on_prereq);
    OPT(CURLOPT_PREREQDATA, h);
#endif
    /* gzip only, so the request bytes match the cosocket transport's. */
    OPT(CURLOPT_ACCEPT_ENCODING, "gzip");
    OPT(CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    OPT(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    OPT(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    OPT(CURLOPT_TCP_KEEPALIVE, 1L);
    if (opt->connect_timeout_ms > 0)
        OPT(CURLOPT_CONNECTTIMEOUT_MS, opt->connect_timeout_ms);
    if (opt->timeout_ms > 0)
        OPT(CURLOPT_TIMEOUT_MS, opt->timeout_ms);
    if (opt->user_agent != NULL)
        OPT(CURLOPT_USERAGENT, opt->user_agent);
    if (opt->ca_file != NULL)
        OPT(CURLOPT_CAINFO, opt->ca_file);
    {
        /* Debian's libcurl sets a default CApath as well as its CA file, and
         * libcurl keeps the parsed CA store for the next connection only when
         * no CApath is set: otherwise every handshake parses the whole bundle
         * again (17-21 ms for the system bundle). A CA file holds every CA
         * we trust, so the default CApath is dropped whenever one is in use
         * (where imm_castore reads the file, the CApath is then set to the
         * file itself, below). */
        const char *cainfo = opt->ca_file;
#if LIBCURL_VERSION_NUM >= 0x075400 /* CURLINFO_CAINFO: 7.84 */
        char *deflt = NULL;
        if (cainfo == NULL && curl_easy_getinfo(c, CURLINFO_CAINFO, &deflt) == CURLE_OK)
            cainfo = deflt;
#endif
        if (cainfo != NULL && cainfo[0] != '\0' && !opt->insecure) {
            OPT(CURLOPT_CAPATH, (char *)NULL);
            h->capath_cleared = 1;
            /* Our SSL_CTX callback gives each connection a store that parses
             * only the certificates a handshake names (imm_castore.h), so
             * libcurl is given no CA file to parse. The CA file's path
             * becomes the CApath instead: libcurl keys connections and TLS
             * sessions by it, so nothing verified against one file is
             * reused for another (transport/curl.lua spells a rewritten
             * file's path anew); and as a directory it names nothing, a
             * regular file having no <hash>.0 under it. */
            h->castore = imm_castore_get(cainfo);
            if (h->castore != NULL &&
                (curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx) != CURLE_OK ||
                 curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, (void *)h->castore) != CURLE_OK)) {
                curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, NULL); /* a TLS backend without it */
                imm_castore_release(h->castore);
                h->castore = NULL;
            }
            if (h->castore != NULL) {
                /* the store's own copy of the path: deflt is libcurl's
                 * string, which unsetting CAINFO frees */
                OPT(CURLOPT_CAINFO, (char *)NULL);
                OPT(CURLOPT_CAPATH, imm_castore_path(h->castore));
            }
        }
    }
    OPT(CURLOPT_SSL_VERIFYPEER, opt->insecure ? 0L : 1L);
    OPT(CURLOPT_SSL_VERIFYHOST, opt->insecure ? 0L : 2L);
    /* An https:// proxy (ours or the environment's) is trusted as the
     * endpoint is: the same CA file, or the system store, and the same
     * insecure; its CApath is dropped for the reason above. */
    if (opt->ca_file != NULL)
        OPT(CURLOPT_PROXY_CAINFO, opt->ca_file);
    if (h->capath_cleared)
        OPT(CURLOPT_PROXY_CAPATH, (char *)NULL);
    OPT(CURLOPT_PROXY_SSL_VERIFYPEER, opt->insecure ? 0L : 1L);
    OPT(CURLOPT_PROXY_SSL_VERIFYHOST, opt->insecure ? 0L : 2L);
    /* libcurl keeps proxied and direct connections apart in its cache by
     * itself (it matches the proxy, its credentials and the tunnel). */
    if (opt->proxy != NULL)
        OPT(CURLOPT_PROXY, opt->proxy);
    /* "*" matches every host: http_proxy and friends are ignored */
    if (opt->no_proxy)
        OPT(CURLOPT_NOPROXY, "*");
    else if (opt->noproxy != NULL)
        OPT(CURLOPT_NOPROXY, opt->noproxy);
#undef OPT
    return h;
}

static void detach(imm_http *h);
static void unpark(imm_http *h);

/* Lets go of the started exchange's header list, which libcurl reads
 * until the transfer ends. */
static void drop_request(imm_http *h) {
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(h->req_headers);
    h->req_headers = NULL;
}

void imm_http_free(imm_http *h) {
    if (h == NULL)
        return;
    detach(h);
    unpark(h);
    imm_multi_free(h->own);
    if (h->curl != NULL)
        curl_easy_cleanup(h->curl);
    curl_slist_free_all(h->req_headers);
    imm_buf_free(&h->body);
    imm_buf_free(&h->headers);
    /* after the easy handle: its connections' SSL_CTXs hold references of their own */
    imm_castore_release(h->castore);
    free(h);
}

static imm_http_status classify(CURLcode rc, int too_large) {
    switch (rc) {
    case CURLE_OK:
        return IMM_HTTP_OK;
    case CURLE_OPERATION_TIMEDOUT:
        return IMM_HTTP_ETIMEOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    /* A reply cut short by the server's close: with a FIN (content-length
     * or chunks left unread) just as with a reset, the reply was lost on
     * the way, not malformed, so a read may be sent again. */
    case CURLE_PARTIAL_FILE:
        return IMM_HTTP_ECONNECT;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_USE_SSL_FAILED:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
        return IMM_HTTP_ETLS;
    case CURLE_WRITE_ERROR:
        return too_large ? IMM_HTTP_ERESPONSE : IMM_HTTP_ENOMEM;
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return IMM_HTTP_ERESPONSE;
    case CURLE_OUT_OF_MEMORY:
        return IMM_HTTP_ENOMEM;
    case CURLE_ABORTED_BY_CALLBACK: /* imm_multi_remove mid-transfer */
        return IMM_HTTP_ECANCELLED;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return IMM_HTTP_EINVAL;
#if LIBCURL_VERSION_NUM >= 0x074900 /* CURLE_PROXY: 7.73 */
    case CURLE_PROXY: /* a SOCKS proxy's refusal; credentials are told apart in finish */
        return IMM_HTTP_ECONNECT;
#endif
    default:
        return IMM_HTTP_EOTHER;
    }
}

imm_http_status imm_http_start(imm_http *h, const imm_http_request *req, char *err, size_t errlen) {
    struct curl_slist *list = NULL, *tmp;
    size_t i;
    int is_post = strcmp(req->method, "POST") == 0;
    long timeout_ms;

    if (h->state != IMM_HTTP_IDLE) {
        SET_ERR("the HTTP handle is busy with another transfer");
        return IMM_HTTP_EINVAL;
    }
    /* The method goes on the request line as is (CURLOPT_CUSTOMREQUEST):
     * only a plain token, or CR/LF in it would smuggle a second request. */
    for (i = 0; req->method[i] != '\0'; i++)
        if (req->method[i] < 'A' || req->method[i] > 'Z' || i >= 16)
            break;
    if (i == 0 || req->method[i] != '\0') {
        SET_ERR("the HTTP method must be 1 to 16 letters A-Z");
        return IMM_HTTP_EINVAL;
    }
    {
        /* libcurl 7.88 builds the request line and headers in 1 MiB at
         * most and takes a URL of 8000000 bytes at most, and fails either
         * as out of memory: refused here as the bad input it is. A margin
         * is kept for the headers libcurl adds (Host, User-Agent, ...). */
        size_t head = strlen(req->url) + 32;
        for (i = 0; i < req->nheaders; i++)
            head += strlen(req->headers[i]) + 2;
        if (head > IMM_HTTP_MAX_HEAD_BYTES - IMM_HTTP_HEAD_MARGIN) {
            SET_ERR("the request line and headers would take %zu bytes; libcurl sends at most %d, "
                    "its own headers included", head, IMM_HTTP_MAX_HEAD_BYTES);
            return IMM_HTTP_EINVAL;
        }
    }
    imm_buf_clear(&h->body);
    imm_buf_clear(&h->headers);
    h->too_large = 0;
    h->headers_too_large = 0;
    h->sends = 0;
    h->resend_refused = 0;
    h->tls_resumed = 0;
    {
        /* the origin, for the multi's list of HTTP/2 hosts */
        const char *sep = strstr(req->url, "://");
        size_t n = sep != NULL ? strcspn(sep + 3, "/?#") + (size_t)(sep + 3 - req->url) : 0;
        if (n >= sizeof h->origin)
            n = 0; /* too long to remember: never multiplexed */
        memcpy(h->origin, req->url, n);
        h->origin[n] = '\0';
    }
    h->errbuf[0] = '\0';
    h->rc = CURLE_OK;

    for (i = 0; i < req->nheaders; i++) {
        const char *line = req->headers[i];
        if (strchr(line, '\r') != NULL || strchr(line, '\n') != NULL) {
            curl_slist_free_all(list);
            SET_ERR("header line contains CR or LF");
            return IMM_HTTP_EINVAL;
        }
        tmp = curl_slist_append(list, line);
        if (tmp == NULL)
            goto nomem;
        list = tmp;
    }
    /* libcurl would add these on its own; the signature does not cover
     * them and the service does not want them for an empty RPC body. */
    if (is_post && req->body_len == 0) {
        tmp = curl_slist_append(list, "Content-Type:");
        if (tmp == NULL)
            goto nomem;
        list = tmp;
    }
    tmp = curl_slist_append(list, "Expect:");
    if (tmp == NULL)
        goto nomem;
    list = tmp;

    /* libcurl copies the URL and (COPYPOSTFIELDS) the body, so the caller's
     * strings may go away while a non-blocking transfer is in flight. */
    if (curl_easy_setopt(h->curl, CURLOPT_URL, req->url) != CURLE_OK)
        goto nomem;
    curl_easy_setopt(h->curl, CURLOPT_FRESH_CONNECT, req->fresh_connect ? 1L : 0L);
    /* this exchange's cap, or the handle's own again after one had a cap */
    timeout_ms = h->timeout_ms;
    if (req->timeout_ms > 0 && (timeout_ms == 0 || req->timeout_ms < timeout_ms))
        timeout_ms = req->timeout_ms;
    curl_easy_setopt(h->curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, list);
    h->req_headers = list;
    if (is_post) {
        curl_easy_setopt(h->curl, CURLOPT_POST, 1L);
        curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        if (curl_easy_setopt(h->curl, CURLOPT_COPYPOSTFIELDS, req->body_len ? req->body : "") != CURLE_OK) {
            drop_request(h);
            SET_ERR("out of memory");
            return IMM_HTTP_ENOMEM;
        }
        curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, NULL);
    } else {
        curl_easy_setopt(h->curl, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST,
                         strcmp(req->method, "GET") == 0 ? NULL : req->method);
    }
    return IMM_HTTP_OK;
nomem:
    curl_slist_free_all(list);
    SET_ERR("out of memory");
    return IMM_HTTP_ENOMEM;
}

/* Whether a header block ends with its blank line. */
static int headers_complete(const imm_buf *b) {
    return (b->len >= 2 && memcmp(b->p + b->len - 2, "\n\n", 2) == 0) ||
           (b->len >= 4 && memcmp(b->p + b->len - 4, "\r\n\r\n", 4) == 0);
}

/* Did the transfer fail because the proxy refused our credentials: a 407
 * to CONNECT, or a SOCKS5 proxy rejecting the user (or wanting one)? */
static int proxy_refused_credentials(imm_http *h) {
    long code = 0;
    if (curl_easy_getinfo(h->curl, CURLINFO_HTTP_CONNECTCODE, &code) == CURLE_OK && code == 407)
        return 1;
#if LIBCURL_VERSION_NUM >= 0x074900 /* CURLINFO_PROXY_ERROR: 7.73 */
    if (h->rc == CURLE_PROXY) {
        long px = 0;
        if (curl_easy_getinfo(h->curl, CURLINFO_PROXY_ERROR, &px) == CURLE_OK &&
            (px == CURLPX_USER_REJECTED || px == CURLPX_NO_AUTH))
            return 1;
    }
#endif
    return 0;
}

imm_http_status imm_http_finish(imm_http *h, long *status, int *sent, char *err, size_t errlen) {
    imm_http_status st;
    curl_off_t req_size = 0;
    *status = 0;
    *sent = 0;
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, status);
    /* libcurl counts request bytes once they were written to a socket;
     * zero means the exchange failed before (DNS, connect, TLS), so the
     * service cannot have seen it. Any byte written: it may have acted. */
    {
        long n = 0;
        curl_easy_getinfo(h->curl, CURLINFO_REQUEST_SIZE, &n);
        req_size = n;
    }
    *sent = req_size > 0 || *status > 0;
    drop_request(h);
    unpark(h); /* read now: nothing is left to report */
    h->state = IMM_HTTP_IDLE;

    st = classify(h->rc, h->too_large || h->headers_too_large);
    if (st != IMM_HTTP_OK && proxy_refused_credentials(h)) {
        /* the proxy said no before anything reached the service; 407 is
         * what an HTTP proxy answers, a SOCKS one has no status */
        *sent = 0;
        *status = 407;
        SET_ERR("the proxy refused the credentials in the proxy URL (%s)",
                h->errbuf[0] ? h->errbuf : curl_easy_strerror(h->rc));
        return IMM_HTTP_EPROXYAUTH;
    }
    if (h->resend_refused) {
        /* the request went out once, on a connection that then died */
        *sent = 1;
        SET_ERR("the connection closed before the reply (a reused keep-alive connection); "
                "not re-sent with the same signature");
        return IMM_HTTP_ECONNECT;
    }
    /* libcurl refuses a header line over its own cap (100 KB, before our
     * callback sees it) with "out of memory": when that happens between
     * the request and the end of the reply's headers, it is the reply's
     * fault, not the machine's */
    if (h->rc == CURLE_OUT_OF_MEMORY && *sent && h->body.len == 0 && !headers_complete(&h->headers)) {
        h->headers_too_large = 1;
        st = IMM_HTTP_ERESPONSE;
    }
    /* "unsupported protocol" once the request went out is an HTTP/0.9
     * answer: bytes that are no HTTP reply. On a reused connection they are
     * what a broken server left there after an earlier reply (more than its
     * Content-Length), which libcurl's liveness check misses when they
     * arrive late: the connection was stale and our reply was lost, as with
     * a reset. On a new connection the server itself answered that way. */
    if (st == IMM_HTTP_EINVAL && *sent) {
        long connects = 1;
        curl_easy_getinfo(h->curl, CURLINFO_NUM_CONNECTS, &connects);
        st = connects == 0 ? IMM_HTTP_ECONNECT : IMM_HTTP_ERESPONSE;
    }
    if (st != IMM_HTTP_OK) {
        if (h->headers_too_large && h->rc == CURLE_OUT_OF_MEMORY)
            SET_ERR("a response header line is too long (libcurl refused it as out of memory)");
        else if (h->headers_too_large)
            SET_ERR("response headers exceed %d bytes", IMM_HTTP_MAX_HEADER_BYTES);
        else if (h->too_large)
            SET_ERR("response body exceeds max_response_bytes (%zu)", h->max_body);
        else
            SET_ERR("%s", h->errbuf[0] ? h->errbuf : curl_easy_strerror(h->rc));
    }
    return st;
}

static imm_http *next_done_fresh(imm_multi *m);

/* Remembers a done handle that a blocking call on the same multi took off
 * libcurl's queue, for imm_multi_next_done to report. */
static void park(imm_multi *m, imm_http *h) {
    imm_http **p = &m->parked;
    while (*p != NULL)
        p = &(*p)->parked_next;
    *p = h;
    h->parked_next = NULL;
    h->parked = m;
    m->nparked++;
}

static void unpark(imm_http *h) {
    imm_http **p;
    if (h->parked == NULL)
        return;
    for (p = &h->parked->parked; *p != NULL; p = &(*p)->parked_next) {
        if (*p == h) {
            *p = h->parked_next;
            h->parked->nparked--;
            break;
        }
    }
    h->parked = NULL;
    h->parked_next = NULL;
}

imm_http_status imm_http_perform(imm_http *h, const imm_http_request *req,
                                 long *status, int *sent, char *err, size_t errlen) {
    *status = 0;
    *sent = 0;
    if (h->own == NULL && (h->own = imm_multi_new(err, errlen)) == NULL)
        return IMM_HTTP_ENOMEM;
    return imm_http_perform_on(h, h->own, req, status, sent, err, errlen);
}

imm_http_status imm_http_perform_on(imm_http *h, imm_multi *m, const imm_http_request *req,
                                    long *status, int *sent, char *err, size_t errlen) {
    imm_http_status st;
    int running = 1;
    *status = 0;
    *sent = 0;
    st = imm_http_start(h, req, err, errlen);
    if (st != IMM_HTTP_OK)
        return st;
    {
        long id = imm_multi_add(m, h, err, errlen);
        if (id <= 0) {
            drop_request(h);
            return id < 0 ? IMM_HTTP_ENOMEM : IMM_HTTP_EOTHER;
        }
    }
    /* The blocking call is the non-blocking one driven to completion. It
     * ends when libcurl ends the transfer: with a timeout set (the Lua
     * client always sets one) that is bounded; with none, a server that
     * stays silent keeps it waiting. Other transfers on a shared multi move
     * along too; those that end are parked for their owner's next
     * imm_multi_next_done. */
    while (h->state == IMM_HTTP_ATTACHED) {
        imm_http *d;
        if (imm_multi_perform(m, &running, err, errlen) != 0)
            break;
        while ((d = next_done_fresh(m)) != NULL) {
            if (d != h)
                park(m, d);
        }
        if (h->state != IMM_HTTP_ATTACHED)
            break;
        if (imm_multi_wait(m, 1000, err, errlen) != 0)
            break;
    }
    if (h->state == IMM_HTTP_ATTACHED) { /* the multi itself failed: abort, report it */
        char keep[CURL_ERROR_SIZE];
        snprintf(keep, sizeof keep, "%s", err != NULL ? err : "");
        imm_multi_remove(m, h);
        imm_http_finish(h, status, sent, NULL, 0);
        SET_ERR("%s", keep);
        return IMM_HTTP_EOTHER;
    }
    return imm_http_finish(h, status, sent, err, errlen);
}

imm_http_phase imm_http_state(const imm_http *h) {
    return h->state;
}

void imm_http_debug(const imm_http *h, int *capath_cleared, int *pipewait) {
    *capath_cleared = h->capath_cleared;
    *pipewait = h->pipewait;
}

const char *imm_http_ca_counts(const imm_http *h, size_t *certs, size_t *parsed) {
    if (h->castore == NULL)
        return NULL;
    imm_castore_counts(h->castore, certs, parsed);
    return imm_castore_mode(h->castore);
}

int imm_http_tls_resumed(const imm_http *h) {
    return h->tls_resumed;
}

int imm_multi_h2_origins(const imm_multi *m) {
    return m->nh2;
}

long imm_http_id(const imm_http *h) {
    return h->id;
}

/* --- the multi -------------------------------------------------------- */

#ifdef IMM_PRECONNECT
static void pc_learn(imm_multi *m, curl_socket_t fd);
#endif

/* libcurl's socket callback: keeps the list of sockets and what each waits
 * for. curl_multi_fdset would do without it, but an fd_set cannot hold a
 * descriptor numbered FD_SETSIZE (1024) or above, and libcurl leaves those
 * out, so a host with many files open would be told of no socket at all. */
static int on_socket(CURL *e, curl_socket_t fd, int what, void *ud, void *sockp) {
    imm_multi *m = ud;
    size_t i;
    (void)e;
    (void)sockp;
#ifdef IMM_PRECONNECT
    if (m->pc_watch != NULL && e == m->pc_watch->curl && what != CURL_POLL_REMOVE)
        pc_learn(m, fd);
#endif
    for (i = 0; i < m->nsocks; i++)
        if (m->socks[i].fd == fd)
            break;
    if (what == CURL_POLL_REMOVE) {
        if (i < m->nsocks)
            m->socks[i] = m->socks[--m->nsocks];
        return 0;
    }
    if (i == m->nsocks) {
        if (m->nsocks == m->socks_cap) {
            size_t cap = m->socks_cap ? 2 * m->socks_cap : 8;
            imm_sock *p = realloc(m->socks, cap * sizeof *p);
            /* Not -1: libcurl would give the whole multi up, and every
             * transfer on it would end as if cancelled. imm_multi_add
             * reserves room, so this is rare; the socket is then missing
             * from imm_multi_sockets, while libcurl's own poll still sees it. */
            if (p == NULL)
                return 0;
            m->socks = p;
            m->socks_cap = cap;
        }
        m->socks[m->nsocks++].fd = fd;
    }
    m->socks[i].what = what;
    return 0;
}

/* --- pre-connected sockets ---------------------------------------------- */

#ifdef IMM_PRECONNECT
/* A socket of the watched transfer: its peer once TCP is up (getpeername
 * fails while connecting; the threaded resolver's socketpair is no TCP
 * peer). A connection that has received bytes is a reused one, whose
 * fan-out has idle connections to reuse too: nothing to open then. */
static void pc_learn(imm_multi *m, curl_socket_t fd) {
    struct sockaddr_storage peer;
    socklen_t len = sizeof peer;
    struct tcp_info ti;
    socklen_t tlen = sizeof ti;
    int type = 0;
    socklen_t ylen = sizeof type;
    if (getpeername(fd, (struct sockaddr *)&peer, &len) != 0 ||
        (peer.ss_family != AF_INET && peer.ss_family != AF_INET6) ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &ylen) != 0 || type != SOCK_STREAM)
        return;
    m->pc_watch = NULL;
    /* an older kernel than the headers fills less of tcp_info */
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tlen) != 0 ||
        tlen < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof ti.tcpi_bytes_received ||
        ti.tcpi_bytes_received > 0) {
        m->pc_want = 0;
        return;
    }
    m->pc_peer = peer;
    m->pc_peerlen = len;
    m->pc_wfd = fd;
}

/* Whether the watched socket has sent its first bytes (the ClientHello, or
 * the request over plain HTTP). The connections are opened only then, so
 * their socket() and connect() calls never hold up that first flight: on
 * loopback libcurl learns the peer one perform before it writes. An older
 * kernel without tcpi_bytes_sent (4.19) opens them at once, as before. */
static int pc_sent(curl_socket_t fd) {
    struct tcp_info ti;
    socklen_t tlen = sizeof ti;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &tlen) != 0)
        return 0;
    if (tlen < offsetof(struct tcp_info, tcpi_bytes_sent) + sizeof ti.tcpi_bytes_sent)
        return 1;
    return ti.tcpi_bytes_sent > 0;
}

/* Opens the wanted connections, non-blocking. Only a connect() left in
 * progress is kept: libcurl 7.88 connects a handed socket again, and Linux
 * answers 0 to that only while the socket is still marked connecting. */
static void pc_open(imm_multi *m) {
    while (m->pc_want > 0 && m->pc_n < IMM_PRECONNECT_MAX) {
        int fd = socket(m->pc_peer.ss_family, SOCK_STREAM, IPPROTO_TCP);
        int fl = fd >= 0 ? fcntl(fd, F_GETFL, 0) : -1;
        m->pc_want--;
        if (fl < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
            connect(fd, (struct sockaddr *)&m->pc_peer, m->pc_peerlen) == 0 || errno != EINPROGRESS) {
            if (fd >= 0)
                close(fd);
            break;
        }
        m->pc_fd[m->pc_n++] = fd;
        m->pc_opened++;
    }
    m->pc_want = 0;
}

/* 1: connected, the server has neither sent nor closed; 0: still
 * connecting; -1: failed or closed. */
static int pc_state(curl_socket_t fd) {
    struct pollfd p;
    int e = 0;
    socklen_t len = sizeof e;
    p.fd = fd;
    p.events = POLLIN | POLLOUT;
    p.revents = 0;
    if (poll(&p, 1, 0) < 0)
        return -1;
    if (p.revents == 0)
        return 0;
    return p.revents == POLLOUT && getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) == 0 && e == 0 ? 1 : -1;
}

static int pc_same_peer(const imm_multi *m, const struct curl_sockaddr *a) {
    struct sockaddr_storage s;
    if (a->addrlen != m->pc_peerlen || a->addrlen > sizeof s)
        return 0;
    memcpy(&s, &a->addr, a->addrlen);
    if (s.ss_family == AF_INET && m->pc_peer.ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)&s, *y = (const void *)&m->pc_peer;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (s.ss_family == AF_INET6 && m->pc_peer.ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)&s, *y = (const void *)&m->pc_peer;
        return x->sin6_port == y->sin6_port && x->sin6_scope_id == y->sin6_scope_id &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
    }
    return 0;
}

/* libcurl's socket(): a pre-connected socket to exactly this address if
 * one is ready, else a new one as libcurl would make it. */
static curl_socket_t on_opensocket(void *ud, curlsocktype purpose, struct curl_sockaddr *a) {
    imm_http *h = ud;
    imm_multi *m = h->multi;
    h->pc_handed = CURL_SOCKET_BAD;
    if (m != NULL && m->pc_n > 0 && purpose == CURLSOCKTYPE_IPCXN && a->socktype == SOCK_STREAM &&
        pc_same_peer(m, a)) {
        int i = 0;
        while (i < m->pc_n) {
            curl_socket_t fd = m->pc_fd[i];
            int st = pc_state(fd);
            if (st == 0) {
                i++;
                continue;
            }
            m->pc_fd[i] = m->pc_fd[--m->pc_n];
            if (st < 0) {
                close(fd);
                continue;
            }
            m->pc_used++;
            h->pc_handed = fd;
            return fd;
        }
    }
    return socket(a->family, a->socktype, a->protocol);
}

static int on_sockopt(void *ud, curl_socket_t fd, curlsocktype purpose) {
    imm_http *h = ud;
    (void)purpose;
    if (fd != CURL_SOCKET_BAD && fd == h->pc_handed) {
        h->pc_handed = CURL_SOCKET_BAD;
        return CURL_SOCKOPT_ALREADY_CONNECTED;
    }
    return CURL_SOCKOPT_OK;
}

static void pc_drop(imm_multi *m) {
    while (m->pc_n > 0)
        close(m->pc_fd[--m->pc_n]);
    m->pc_watch = NULL;
    m->pc_want = 0;
    m->pc_peerlen = 0;
}

/* Whether libcurl may send h's transfers through a proxy: its option, or
 * any proxy variable libcurl 7.88 reads (no_proxy is not weighed). */
static int pc_proxied(const imm_http *h) {
    static const char *const vars[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"};
    size_t i;
    if (h->proxied >= 0)
        return h->proxied;
    for (i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v != NULL && v[0] != '\0')
            return 1;
    }
    return 0;
}
#endif

int imm_multi_preconnect(imm_multi *m, imm_http *h, int n) {
#ifdef IMM_PRECONNECT
    pc_drop(m);
    if (h == NULL || n <= 0 || h->multi != m || pc_proxied(h))
        return 0;
    m->pc_watch = h;
    m->pc_want = n < IMM_PRECONNECT_MAX ? n : IMM_PRECONNECT_MAX;
    return 1;
#else
    (void)m;
    (void)h;
    (void)n;
    return 0;
#endif
}

void imm_multi_preconnected(const imm_multi *m, long *opened, long *used, int *idle) {
    *opened = m->pc_opened;
    *used = m->pc_used;
#ifdef IMM_PRECONNECT
    *idle = m->pc_n;
#else
    *idle = 0;
#endif
}

imm_multi *imm_multi_new(char *err, size_t errlen) {
    imm_multi *m;
    if (global_ready(err, errlen) != 0)
        return NULL;
    m = calloc(1, sizeof *m);
    if (m == NULL || (m->m = curl_multi_init()) == NULL) {
        free(m);
        SET_ERR("curl_multi_init failed");
        return NULL;
    }
    if (curl_multi_setopt(m->m, CURLMOPT_SOCKETFUNCTION, on_socket) != CURLM_OK ||
        curl_multi_setopt(m->m, CURLMOPT_SOCKETDATA, m) != CURLM_OK) {
        curl_multi_cleanup(m->m);
        free(m);
        SET_ERR("curl_multi_setopt(CURLMOPT_SOCKETFUNCTION) failed");
        return NULL;
    }
    /* No lock functions: a multi is used by one thread at a time. */
    m->share = curl_share_init();
    if (m->share != NULL &&
        curl_share_setopt(m->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK) {
        curl_share_cleanup(m->share);
        m->share = NULL;
    }
    return m;
}

/* Unlinks h from its multi without touching its state. */
static void detach(imm_http *h) {
    imm_multi *m = h->multi;
    if (m == NULL)
        return;
    curl_multi_remove_handle(m->m, h->curl);
    /* Off the share while idle, so the share never outlives a handle's use
     * of it (curl_share_cleanup refuses a share in use) and a handle can
     * move to another multi. The sessions stay in the share. */
    if (m->share != NULL)
        curl_easy_setopt(h->curl, CURLOPT_SHARE, (CURLSH *)NULL);
#ifdef IMM_PRECONNECT
    if (m->pc_watch == h) /* ended before its peer was known */
        pc_drop(m);
#endif
    if (h->prev != NULL)
        h->prev->next = h->next;
    else
        m->attached = h->next;
    if (h->next != NULL)
        h->next->prev = h->prev;
    h->prev = h->next = NULL;
    h->multi = NULL;
    m->count--;
}

void imm_multi_free(imm_multi *m) {
    if (m == NULL)
        return;
    while (m->parked != NULL)
        unpark(m->parked);
    while (m->attached != NULL) {
        imm_http *h = m->attached;
        detach(h);
        if (h->state == IMM_HTTP_ATTACHED) { /* aborted: finish reports it as cancelled */
            h->rc = CURLE_ABORTED_BY_CALLBACK;
            h->state = IMM_HTTP_DONE;
        }
    }
    curl_multi_cleanup(m->m); /* may still call on_socket: m stays until after */
#ifdef IMM_PRECONNECT
    pc_drop(m);
#endif
    curl_share_cleanup(m->share); /* every handle left it in detach */
    free(m->socks);
    free(m);
}

/* Sockets a transfer may hold at once: happy eyeballs tries two
 * addresses, and the threaded resolver wakes the multi through a socket. */
#define IMM_SOCKS_PER_TRANSFER 4

long imm_multi_add(imm_multi *m, imm_http *h, char *err, size_t errlen) {
    CURLMcode mc;
    size_t want = (size_t)(m->count + 1) * IMM_SOCKS_PER_TRANSFER;
    if (h->multi != NULL || h->state != IMM_HTTP_IDLE) {
        SET_ERR("the HTTP handle is busy with another transfer");
        return 0;
    }
    /* Room for the socket callback, reserved here where running out of
     * memory is an error value (see on_socket). */
    if (m->socks_cap < want) {
        imm_sock *p = realloc(m->socks, want * sizeof *p);
        if (p == NULL) {
            SET_ERR("out of memory");
            return -1;
        }
        m->socks = p;
        m->socks_cap = want;
    }
    {
        int i, h2 = 0;
        for (i = 0; i < m->nh2 && h->origin[0] != '\0'; i++)
            h2 = h2 || strcmp(m->h2[i], h->origin) == 0;
        h->pipewait = h2;
        curl_easy_setopt(h->curl, CURLOPT_PIPEWAIT, (long)h2);
    }
#ifdef IMM_PRECONNECT
    if (!h->pc_hooked) { /* once per handle: the callbacks find the multi through h */
        curl_easy_setopt(h->curl, CURLOPT_OPENSOCKETFUNCTION, on_opensocket);
        curl_easy_setopt(h->curl, CURLOPT_OPENSOCKETDATA, h);
        curl_easy_setopt(h->curl, CURLOPT_SOCKOPTFUNCTION, on_sockopt);
        curl_easy_setopt(h->curl, CURLOPT_SOCKOPTDATA, h);
        h->pc_hooked = 1;
    }
#endif
    /* Set while idle (libcurl refuses it mid-transfer); a failure only
     * costs the resumption. */
    if (m->share != NULL)
        curl_easy_setopt(h->curl, CURLOPT_SHARE, m->share);
    mc = curl_multi_add_handle(m->m, h->curl);
    if (mc != CURLM_OK) {
        if (m->share != NULL)
            curl_easy_setopt(h->curl, CURLOPT_SHARE, (CURLSH *)NULL);
        SET_ERR("curl_multi_add_handle: %s", curl_multi_strerror(mc));
        return mc == CURLM_OUT_OF_MEMORY ? -1 : 0;
    }
    h->multi = m;
    h->prev = NULL;
    h->next = m->attached;
    if (m->attached != NULL)
        m->attached->prev = h;
    m->attached = h;
    m->count++;
    h->state = IMM_HTTP_ATTACHED;
    /* ids only need to tell in-flight transfers apart; wrap long before
     * they could collide */
    if (++m->next_id <= 0 || m->next_id > 0x3fffffffL)
        m->next_id = 1;
    h->id = m->next_id;
    return h->id;
}

void imm_multi_remove(imm_multi *m, imm_http *h) {
    if (h->multi != m)
        return;
    detach(h);
    if (h->state == IMM_HTTP_ATTACHED) {
        h->rc = CURLE_ABORTED_BY_CALLBACK;
        snprintf(h->errbuf, sizeof h->errbuf, "transfer cancelled");
        h->state = IMM_HTTP_DONE;
    }
}

int imm_multi_perform(imm_multi *m, int *running, char *err, size_t errlen) {
    /* curl_multi_perform, then the socket callback for every transfer:
     * curl_multi_perform alone never calls it, so the fd list would go
     * stale */
    CURLMcode mc = curl_multi_socket_all(m->m, running);
    if (mc != CURLM_OK) {
        SET_ERR("curl_multi_perform: %s", curl_multi_strerror(mc));
        return -1;
    }
#ifdef IMM_PRECONNECT
    if (m->pc_want > 0 && m->pc_peerlen > 0 && pc_sent(m->pc_wfd)) /* on_socket learnt the peer */
        pc_open(m);
#endif
    /* a CA file a new connection asked for is read now, its ClientHello sent */
    imm_castore_prepare();
    return 0;
}

/* Adds h's origin to the multi's HTTP/2 origins when its transfer used h2. */
static void learn_h2(imm_multi *m, imm_http *h) {
    long v = 0;
    int i;
    if (h->rc != CURLE_OK || h->origin[0] == '\0' ||
        curl_easy_getinfo(h->curl, CURLINFO_HTTP_VERSION, &v) != CURLE_OK || v != CURL_HTTP_VERSION_2_0)
        return;
    for (i = 0; i < m->nh2; i++) {
        if (strcmp(m->h2[i], h->origin) == 0)
            return;
    }
    i = m->nh2 < IMM_H2_ORIGINS ? m->nh2++ : IMM_H2_ORIGINS - 1; /* full: the newest replaces the last */
    memcpy(m->h2[i], h->origin, sizeof h->origin);
}

/* The next done handle from libcurl's own queue. */
static imm_http *next_done_fresh(imm_multi *m) {
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m->m, &left)) != NULL) {
        imm_http *h = NULL;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&h);
        if (h == NULL || h->multi != m)
            continue;
        h->rc = msg->data.result; /* read before detach invalidates msg */
        detach(h);
        h->state = IMM_HTTP_DONE;
        learn_h2(m, h);
        return h;
    }
    return NULL;
}

imm_http *imm_multi_next_done(imm_multi *m) {
    imm_http *h = m->parked;
    if (h != NULL) {
        unpark(h);
        return h;
    }
    return next_done_fresh(m);
}

int imm_multi_wait(imm_multi *m, int timeout_ms, char *err, size_t errlen) {
    CURLMcode mc;
    if (timeout_ms <= 0)
        return 0;
    mc = curl_multi_poll(m->m, NULL, 0, timeout_ms, NULL);
    if (mc != CURLM_OK) {
        SET_ERR("curl_multi_poll: %s", curl_multi_strerror(mc));
        return -1;
    }
    return 0;
}

long imm_multi_timeout(imm_multi *m) {
    long ms = -1;
    if (curl_multi_timeout(m->m, &ms) != CURLM_OK)
        return -1;
    return ms;
}

int imm_multi_sockets(imm_multi *m, void (*fn)(int fd, int rd, int wr, void *ud), void *ud) {
    size_t i;
    for (i = 0; i < m->nsocks; i++) {
        int what = m->socks[i].what;
        fn((int)m->socks[i].fd, (what & CURL_POLL_IN) != 0, (what & CURL_POLL_OUT) != 0, ud);
    }
    return (int)m->nsocks;
}

int imm_multi_count(const imm_multi *m) {
    return m->count;
}

int imm_multi_unreported(const imm_multi *m) {
    return m->count + m->nparked;
}

const imm_buf *imm_http_body(const imm_http *h) {
    return &h->body;
}

void imm_http_swap_body(imm_http *h, imm_buf *b) {
    imm_buf t = h->body;
    h->body = *b;
    *b = t;
}

const imm_buf *imm_http_header_block(const imm_http *h) {
    return &h->headers;
}

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

int imm_http_next_header(const char **cursor, const char *end,
                         const char **name, size_t *nlen,
                         const char **value, size_t *vlen) {
    const char *p = *cursor;
    while (p != NULL && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *line = p, *le = eol ? eol : end, *colon;
        p = eol ? eol + 1 : end;
        colon = memchr(line, ':', (size_t)(le - line));
        /* skip the status line, blank lines, nameless fields and obsolete
         * folded continuations (which start with white space) */
        if (colon == NULL || colon == line || is_space(*line) ||
            (le - line >= 5 && memcmp(line, "HTTP/", 5) == 0))
            continue;
        *name = line;
        *nlen = (size_t)(colon - line);
        while (*nlen > 0 && is_space(line[*nlen - 1]))
            (*nlen)--;
        if (*nlen == 0)
            continue;
        colon++;
        while (colon < le && is_space(*colon))
            colon++;
        while (le > colon && is_space(le[-1]))
            le--;
        *value = colon;
        *vlen = (size_t)(le - colon);
        *cursor = p;
        return 1;
    }
    *cursor = end;
    return 0;
}

imm_http_status imm_http_gunzip(const char *in, size_t n, size_t max_out, imm_buf *out,
                                char *err, size_t errlen) {
    z_stream zs;
    int zrc;
    size_t used;
    imm_http_status st = IMM_HTTP_OK;
    memset(&zs, 0, sizeof zs);
    /* 32 + MAX_WBITS: accept gzip and zlib headers alike */
    if (inflateInit2(&zs, 32 + MAX_WBITS) != Z_OK) {
        SET_ERR("inflateInit2 failed");
        return IMM_HTTP_ENOMEM;
    }
    zs.next_in = (Bytef *)(uintptr_t)in;
    for (;;) {
        size_t chunk = n > 0 ? n * 4 : 1024;
        if (chunk < 16384)
            chunk = 16384;
        if (chunk > (1u << 20))
            chunk = 1u << 20;
        if (imm_buf_reserve(out, chunk) != 0) {
            SET_ERR("out of memory");
            st = IMM_HTTP_ENOMEM;
            break;
        }
        /* feed input in slices that fit zlib's 32-bit counters */
        if (zs.avail_in == 0 && (size_t)(zs.next_in - (const Bytef *)in) < n) {
            size_t left = n - (size_t)(zs.next_in - (const Bytef *)in);
            zs.avail_in = left > 0x40000000u ? 0x40000000u : (uInt)left;
        }
        zs.next_out = (Bytef *)out->p + out->len;
        zs.avail_out = (uInt)chunk;
        zrc = inflate(&zs, Z_NO_FLUSH);
        out->len += chunk - zs.avail_out;
        out->p[out->len] = '\0';
        if (max_out > 0 && out->len > max_out) {
            SET_ERR("decoded body exceeds max_response_bytes (%zu)", max_out);
            st = IMM_HTTP_ERESPONSE;
            break;
        }
        used = (size_t)(zs.next_in - (const Bytef *)in);
        if (zrc == Z_STREAM_END) {
            if (used == n)
                break;
            /* another gzip member follows (RFC 1952 2.2), or garbage */
            if ((unsigned char)in[used] == 0x1f && (used + 1 == n || (unsigned char)in[used + 1] == 0x8b)) {
                if (inflateReset(&zs) != Z_OK) {
                    SET_ERR("corrupt gzip body (inflateReset failed)");
                    st = IMM_HTTP_ERESPONSE;
                    break;
                }
                continue;
            }
            SET_ERR("corrupt gzip body (%zu bytes of trailing garbage)", n - used);
            st = IMM_HTTP_ERESPONSE;
            break;
        }
        if (zrc != Z_OK && zrc != Z_BUF_ERROR) {
            SET_ERR("corrupt gzip body (%s)", zs.msg ? zs.msg : "inflate failed");
            st = IMM_HTTP_ERESPONSE;
            break;
        }
        /* every input byte read, room left for output, and no end yet:
         * the stream stops short */
        if (used == n && zs.avail_in == 0 && zs.avail_out != 0) {
            SET_ERR("truncated gzip body (the stream ends before its end marker)");
            st = IMM_HTTP_ERESPONSE;
            break;
        }
    }
    inflateEnd(&zs);
    return st;
}

const char *imm_http_backend_version(void) {
    pthread_once(&global_once, global_init);
    pthread_once(&backend_once, backend_init);
    return backend_version;
}
