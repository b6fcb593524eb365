/* imm_http.c - HTTP over a reused libcurl easy handle; see imm_http.h. */
#include "imm_http.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <zlib.h>

struct imm_http {
    CURL *curl;
    imm_buf body;
    imm_buf headers;
    size_t max_body;
    int too_large;              /* set by the write callback when over cap */
    int sent;                   /* the last perform wrote request bytes to a connection */
    char errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void global_init(void) {
    global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

#define SET_ERR(...)                                    \
    do {                                                \
        if (err != NULL && errlen > 0)                  \
            snprintf(err, errlen, __VA_ARGS__);         \
    } while (0)

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
    return imm_buf_add(&h->headers, data, n) == 0 ? n : 0;
}

imm_http *imm_http_new(const imm_http_options *opt, char *err, size_t errlen) {
    imm_http *h;
    CURL *c;
    pthread_once(&global_once, global_init);
    if (global_rc != CURLE_OK) {
        SET_ERR("curl_global_init failed: %s", curl_easy_strerror(global_rc));
        return NULL;
    }
    h = calloc(1, sizeof *h);
    if (h == NULL) {
        SET_ERR("out of memory");
        return NULL;
    }
    imm_buf_init(&h->body);
    imm_buf_init(&h->headers);
    h->max_body = opt->max_response_bytes;
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
    OPT(CURLOPT_ERRORBUFFER, h->errbuf);
    OPT(CURLOPT_WRITEFUNCTION, on_body);
    OPT(CURLOPT_WRITEDATA, h);
    OPT(CURLOPT_HEADERFUNCTION, on_header);
    OPT(CURLOPT_HEADERDATA, h);
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
    OPT(CURLOPT_SSL_VERIFYPEER, opt->insecure ? 0L : 1L);
    OPT(CURLOPT_SSL_VERIFYHOST, opt->insecure ? 0L : 2L);
#undef OPT
    return h;
}

void imm_http_free(imm_http *h) {
    if (h == NULL)
        return;
    if (h->curl != NULL)
        curl_easy_cleanup(h->curl);
    imm_buf_free(&h->body);
    imm_buf_free(&h->headers);
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
    case CURLE_PARTIAL_FILE:
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return IMM_HTTP_ERESPONSE;
    case CURLE_OUT_OF_MEMORY:
        return IMM_HTTP_ENOMEM;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
        return IMM_HTTP_EINVAL;
    default:
        return IMM_HTTP_EOTHER;
    }
}

imm_http_status imm_http_perform(imm_http *h, const imm_http_request *req,
                                 long *status, char *err, size_t errlen) {
    struct curl_slist *list = NULL, *tmp;
    CURLcode rc;
    imm_http_status st;
    size_t i;
    int is_post = strcmp(req->method, "POST") == 0;

    *status = 0;
    h->sent = 0;
    imm_buf_clear(&h->body);
    imm_buf_clear(&h->headers);
    h->too_large = 0;
    h->errbuf[0] = '\0';

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

    curl_easy_setopt(h->curl, CURLOPT_URL, req->url);
    curl_easy_setopt(h->curl, CURLOPT_FRESH_CONNECT, req->fresh_connect ? 1L : 0L);
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, list);
    if (is_post) {
        curl_easy_setopt(h->curl, CURLOPT_POST, 1L);
        curl_easy_setopt(h->curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
        curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, req->body_len ? req->body : "");
        curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST, NULL);
    } else {
        curl_easy_setopt(h->curl, CURLOPT_HTTPGET, 1L);
        curl_easy_setopt(h->curl, CURLOPT_CUSTOMREQUEST,
                         strcmp(req->method, "GET") == 0 ? NULL : req->method);
    }

    rc = curl_easy_perform(h->curl);
    curl_easy_getinfo(h->curl, CURLINFO_RESPONSE_CODE, status);
    {
        /* libcurl counts request bytes once they were written to a socket;
         * zero means the exchange failed before (DNS, connect, TLS). */
        long request_size = 0;
        h->sent = curl_easy_getinfo(h->curl, CURLINFO_REQUEST_SIZE, &request_size) != CURLE_OK ||
                  request_size > 0;
    }
    /* Drop the references to this call's memory before returning. */
    curl_easy_setopt(h->curl, CURLOPT_HTTPHEADER, NULL);
    curl_easy_setopt(h->curl, CURLOPT_POSTFIELDS, NULL);
    curl_slist_free_all(list);

    st = classify(rc, h->too_large);
    if (st != IMM_HTTP_OK) {
        if (h->too_large)
            SET_ERR("response body exceeds max_response_bytes (%zu)", h->max_body);
        else
            SET_ERR("%s", h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc));
    }
    return st;
nomem:
    curl_slist_free_all(list);
    SET_ERR("out of memory");
    return IMM_HTTP_ENOMEM;
}

int imm_http_request_sent(const imm_http *h) {
    return h->sent;
}

const imm_buf *imm_http_body(const imm_http *h) {
    return &h->body;
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
    imm_http_status st = IMM_HTTP_OK;
    memset(&zs, 0, sizeof zs);
    /* 32 + MAX_WBITS: accept gzip and zlib headers alike */
    if (inflateInit2(&zs, 32 + MAX_WBITS) != Z_OK) {
        SET_ERR("inflateInit2 failed");
        return IMM_HTTP_ENOMEM;
    }
    zs.next_in = (Bytef *)(uintptr_t)in;
    do {
        size_t chunk = n > 0 ? n * 4 : 1024;
        uInt avail_in_before;
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
        avail_in_before = zs.avail_in;
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
        if (zrc == Z_STREAM_END)
            break;
        if (zrc != Z_OK && !(zrc == Z_BUF_ERROR && zs.avail_out == 0)) {
            SET_ERR("corrupt gzip body (%s)", zs.msg ? zs.msg : "inflate failed");
            st = IMM_HTTP_ERESPONSE;
            break;
        }
        if (zs.avail_in == 0 && avail_in_before == 0 && zs.avail_out != 0) {
            SET_ERR("truncated gzip body");
            st = IMM_HTTP_ERESPONSE;
            break;
        }
    } while (1);
    inflateEnd(&zs);
    return st;
}

const char *imm_http_backend_version(void) {
    return curl_version();
}
