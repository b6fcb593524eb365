/*
 * imm_http.h - one blocking HTTP/1.1 exchange at a time over a reused libcurl
 * easy handle. No Lua, no JSON: bytes in, status + headers + body out.
 *
 * Why one reused handle per client: libcurl keeps the connection and the TLS
 * session in the easy handle, so keep-alive and session resumption carry over
 * between calls for free.
 *
 * Ownership: imm_http_new() returns a handle that the caller releases with
 * imm_http_free() (safe on NULL). The response buffers are owned by the
 * handle, are valid until the next imm_http_perform() or imm_http_free(),
 * and are never touched by libcurl after perform returns.
 *
 * Thread safety: a handle belongs to one thread at a time. Different handles
 * may be used on different threads at once; global libcurl initialisation
 * happens once, under pthread_once.
 */
#ifndef IMM_HTTP_H
#define IMM_HTTP_H

#include <stddef.h>

#include "imm_buf.h"

/* Failure kinds; each maps to one error code of the Lua API. */
typedef enum imm_http_status {
    IMM_HTTP_OK = 0,
    IMM_HTTP_ECONNECT,    /* DNS, connect, reset, nothing received: ConnectionFailed */
    IMM_HTTP_ETIMEOUT,    /* connect or total timeout: Timeout */
    IMM_HTTP_ETLS,        /* handshake or verification: TLSError */
    IMM_HTTP_ERESPONSE,   /* truncated, bad encoding, too large: InvalidResponse */
    IMM_HTTP_EINVAL,      /* bad request input (CR/LF in a header...): InvalidParameter */
    IMM_HTTP_ENOMEM,
    IMM_HTTP_EOTHER
} imm_http_status;

/* Settings fixed for the life of a handle (per client). Strings are copied
 * by libcurl, so the caller may free them after imm_http_new(). */
typedef struct imm_http_options {
    long connect_timeout_ms;    /* 0: libcurl's default */
    long timeout_ms;            /* whole exchange; 0: none */
    const char *ca_file;        /* NULL: the system store */
    int insecure;               /* 1 disables peer and host verification */
    const char *user_agent;
    size_t max_response_bytes;  /* decoded body cap; 0: unlimited */
} imm_http_options;

typedef struct imm_http imm_http;

imm_http *imm_http_new(const imm_http_options *opt, char *err, size_t errlen);
void imm_http_free(imm_http *h);

typedef struct imm_http_request {
    const char *method;          /* "POST", "GET", ... */
    const char *url;             /* absolute http(s) URL, query included */
    const char *const *headers;  /* "Name: value" lines, no CR/LF */
    size_t nheaders;
    const char *body;            /* may be NULL when body_len is 0 */
    size_t body_len;
    int fresh_connect;           /* 1: open a new connection for this request. libcurl
                                  * sends a request again by itself when a reused
                                  * connection dies before any reply; on a fresh one it
                                  * never does, so a non-idempotent request goes out once */
} imm_http_request;

/* Performs one exchange. Returns IMM_HTTP_OK when a complete response was
 * received, whatever its status code. On failure the message goes to err,
 * and *status still holds the HTTP status when one had been received. */
imm_http_status imm_http_perform(imm_http *h, const imm_http_request *req,
                                 long *status, char *err, size_t errlen);

/* Did the last imm_http_perform() write any of the request to a connection?
 * 0 only when it certainly did not (it failed resolving, connecting or in the
 * TLS handshake), so the service cannot have seen the request and repeating
 * it is safe even for an action that changes something. 1 otherwise, also
 * when the request may only partly have gone out. */
int imm_http_request_sent(const imm_http *h);

/* The last response's body and raw header block (of the final response,
 * after any 1xx). Owned by the handle. */
const imm_buf *imm_http_body(const imm_http *h);
const imm_buf *imm_http_header_block(const imm_http *h);

/* Walks a raw header block: each call yields the next "name: value" field
 * (name and value trimmed, the status line skipped) and returns 1, or 0 at
 * the end. `*cursor` starts at block->p. Pure parsing, no I/O. */
int imm_http_next_header(const char **cursor, const char *end,
                         const char **name, size_t *nlen,
                         const char **value, size_t *vlen);

/* Decodes a gzip (or zlib) stream into out, refusing to produce more than
 * max_out bytes (0: unlimited) so a compression bomb cannot exhaust memory.
 * For transports that read raw bytes themselves (ngx_lua cosockets); the
 * libcurl path decodes inside libcurl. Returns IMM_HTTP_OK, or
 * IMM_HTTP_ERESPONSE for a corrupt stream or one over the cap. */
imm_http_status imm_http_gunzip(const char *in, size_t n, size_t max_out, imm_buf *out,
                                char *err, size_t errlen);

/* "libcurl/7.88.1 OpenSSL/3.0.x ..." */
const char *imm_http_backend_version(void);

#endif
