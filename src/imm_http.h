/*
 * imm_http.h - HTTP exchanges over reused libcurl easy handles, all driven
 * through libcurl's multi interface. HTTP/1.1 in plain text; over TLS,
 * libcurl offers h2 by ALPN and uses it when the server agrees. No Lua, no JSON: bytes in,
 * status + headers + body out.
 *
 * One HTTP path: an exchange is always imm_http_start(), then transfer on an
 * imm_multi, then imm_http_finish(). A blocking call (imm_http_perform) is
 * that same sequence driven to completion on the handle's own private multi,
 * or on a multi shared by many handles (imm_http_perform_on); the
 * non-blocking mode attaches many handles to one shared multi that the
 * host's frame loop drives (imm_multi_perform / imm_multi_wait).
 *
 * Why reused handles: libcurl keeps the TLS session in the easy handle and
 * the connections in the multi handle, so keep-alive and session resumption
 * carry over between calls for free, and between handles that share a multi.
 * The CA file is read once per process, and its certificates parsed only as
 * handshakes name them (imm_castore.h).
 *
 * Ownership: imm_http_new() returns a handle that the caller releases with
 * imm_http_free() (safe on NULL; it detaches the handle from its multi). The
 * response buffers are owned by the handle, are valid until the next start
 * or imm_http_free(), and are never touched by libcurl after the transfer
 * is done. imm_multi_free() detaches every handle still attached.
 *
 * Thread safety: a handle and a multi belong to one thread at a time.
 * Different handles and multis may be used on different threads at once;
 * global libcurl initialisation happens once, under pthread_once. There is no
 * other mutable global state.
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
    IMM_HTTP_ECANCELLED,  /* removed from its multi mid-transfer: Cancelled */
    IMM_HTTP_EPROXYAUTH,  /* the proxy refused our credentials (407, SOCKS auth): ProxyAuthenticationRequired */
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
    int no_proxy;               /* 1: never use a proxy, whatever the environment says */
    const char *proxy;          /* CURLOPT_PROXY: a proxy URL, "" for none (the environment
                                 * ignored); NULL: the environment's (http_proxy, ...) */
    const char *noproxy;        /* CURLOPT_NOPROXY: hosts that bypass the proxy, "" for none
                                 * (no_proxy of the environment ignored); NULL: the environment's */
} imm_http_options;

/* The most response header bytes (of one response) a handle accepts; more
 * is a hostile or broken server: IMM_HTTP_ERESPONSE. */
#define IMM_HTTP_MAX_HEADER_BYTES (64 * 1024)

typedef struct imm_http imm_http;
typedef struct imm_multi imm_multi;

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
    long timeout_ms;             /* > 0: this exchange must end within it (the lower of
                                  * it and the handle's timeout_ms); 0: the handle's */
} imm_http_request;

/* Performs one exchange, blocking: start, then the handle's own multi
 * driven to completion, then finish. Returns IMM_HTTP_OK when a complete
 * response was received, whatever its status code. On failure the message
 * goes to err, *status still holds the HTTP status when one had been
 * received, and *sent says whether any request byte reached the network
 * (0 means a retry cannot repeat a side effect). */
imm_http_status imm_http_perform(imm_http *h, const imm_http_request *req,
                                 long *status, int *sent, char *err, size_t errlen);

/* imm_http_perform on a given multi instead of the handle's private one, so
 * blocking calls of many handles share its connection cache and TLS
 * sessions. Transfers of other handles on m that end meanwhile are kept for
 * imm_multi_next_done, which reports them first. */
imm_http_status imm_http_perform_on(imm_http *h, imm_multi *m, const imm_http_request *req,
                                    long *status, int *sent, char *err, size_t errlen);

/* The two halves of an exchange, for the non-blocking mode.
 * imm_http_start() prepares the handle for req (copying everything it needs,
 * so req may be freed at once); the handle is then added to a multi.
 * imm_http_finish() reads the outcome once the multi reports it done (or
 * after imm_multi_remove), with the same results as imm_http_perform. */
imm_http_status imm_http_start(imm_http *h, const imm_http_request *req, char *err, size_t errlen);
imm_http_status imm_http_finish(imm_http *h, long *status, int *sent, char *err, size_t errlen);

/* Where a handle's exchange is. */
typedef enum imm_http_phase {
    IMM_HTTP_IDLE = 0,  /* no exchange: imm_http_start may begin one */
    IMM_HTTP_ATTACHED,  /* started and attached to a multi, in flight */
    IMM_HTTP_DONE       /* done (or removed), awaiting imm_http_finish */
} imm_http_phase;
imm_http_phase imm_http_state(const imm_http *h);
/* An id unique within the handle's multi, set by imm_multi_add. */
long imm_http_id(const imm_http *h);
/* For tests: was CURLOPT_CAPATH unset (a CA file is in use), and did the
 * last transfer wait to multiplex (CURLOPT_PIPEWAIT, an HTTP/2 origin)? */
void imm_http_debug(const imm_http *h, int *capath_cleared, int *pipewait);
/* The handle's lazily read CA file (imm_castore.h): how it was read
 * (imm_castore_mode), how many certificates the index holds and how many
 * handshakes have parsed. NULL when libcurl reads the file. */
const char *imm_http_ca_counts(const imm_http *h, size_t *certs, size_t *parsed);
/* For tests: did the last exchange's TLS connection resume a session
 * (OpenSSL's SSL_session_reused)? The handles of one multi share their TLS
 * sessions while attached to it. */
int imm_http_tls_resumed(const imm_http *h);
/* For tests: how many origins the multi knows to speak HTTP/2. */
int imm_multi_h2_origins(const imm_multi *m);

/* --- the multi: many transfers at once, driven by the caller ----------- */
imm_multi *imm_multi_new(char *err, size_t errlen);
void imm_multi_free(imm_multi *m);
/* Attaches a started handle; returns its id (> 0), or with err set -1 when
 * out of memory and 0 for any other failure. */
long imm_multi_add(imm_multi *m, imm_http *h, char *err, size_t errlen);
/* Detaches a handle, aborting its transfer (cancellation). */
void imm_multi_remove(imm_multi *m, imm_http *h);
/* Moves every transfer as far as it goes without waiting; *running gets the
 * number still in flight. Returns 0, or -1 with err set. */
int imm_multi_perform(imm_multi *m, int *running, char *err, size_t errlen);
/* The next handle whose transfer is done (detached, awaiting finish), or
 * NULL when there is none. */
imm_http *imm_multi_next_done(imm_multi *m);
/* Waits at most timeout_ms for activity on the transfers' sockets (or
 * libcurl's own timers); 0 returns at once. */
int imm_multi_wait(imm_multi *m, int timeout_ms, char *err, size_t errlen);
/* The longest a caller may wait before calling imm_multi_perform, in ms
 * (-1: no timer set). */
long imm_multi_timeout(imm_multi *m);
/* The sockets libcurl waits on: calls fn(fd, want_read, want_write, ud)
 * for each, whatever its number (kept from libcurl's socket callback, not
 * an fd_set). For hosts that run their own event loop. Returns how many. */
int imm_multi_sockets(imm_multi *m, void (*fn)(int fd, int rd, int wr, void *ud), void *ud);
/* Handles attached now. */
int imm_multi_count(const imm_multi *m);
/* Handles attached or parked: the most imm_multi_next_done can return
 * before the next imm_multi_perform. */
int imm_multi_unreported(const imm_multi *m);
/* Pre-connected sockets, to save a fan-out's TCP round trip: once h's
 * transfer (attached to m) is on a new connection, imm_multi_perform opens
 * n (at most 32) more TCP connections to the same peer address and port,
 * and m's later transfers that open a connection to exactly that address
 * take one whose handshake is complete instead of connecting themselves
 * (TLS and the request are libcurl's as ever). Never when h may go through
 * a proxy (its proxy option or the environment's), on a reused connection,
 * or outside Linux. n = 0 (or h NULL) disarms and closes the unused
 * sockets, as imm_multi_free does. Returns 1 when armed, else 0. */
int imm_multi_preconnect(imm_multi *m, imm_http *h, int n);
/* For tests: sockets pre-connected, handed to libcurl, and waiting now. */
void imm_multi_preconnected(const imm_multi *m, long *opened, long *used, int *idle);

/* The last response's body and raw header block (of the final response,
 * after any 1xx). Owned by the handle. */
const imm_buf *imm_http_body(const imm_http *h);
const imm_buf *imm_http_header_block(const imm_http *h);
/* Swaps the handle's body buffer with *b: the binding decodes a body in
 * place from a buffer it owns meanwhile, so that a request started by Lua
 * code run during the decoding (a finalizer) cannot free it under the
 * decoder, then gives it back for reuse. */
void imm_http_swap_body(imm_http *h, imm_buf *b);

/* Walks a raw header block: each call yields the next "name: value" field
 * (name and value trimmed, the status line skipped) and returns 1, or 0 at
 * the end. `*cursor` starts at block->p. Pure parsing, no I/O. */
int imm_http_next_header(const char **cursor, const char *end,
                         const char **name, size_t *nlen,
                         const char **value, size_t *vlen);

/* Decodes a gzip (or zlib) stream into out, refusing to produce more than
 * max_out bytes (0: unlimited) so a compression bomb cannot exhaust memory.
 * Every gzip member is decoded (RFC 1952 allows several, concatenated);
 * bytes after the last one that do not start a member are refused.
 * For transports that read raw bytes themselves (ngx_lua cosockets); the
 * libcurl path decodes inside libcurl. Returns IMM_HTTP_OK, or
 * IMM_HTTP_ERESPONSE for a corrupt or truncated stream (the message says
 * which), trailing garbage, or one over the cap. */
imm_http_status imm_http_gunzip(const char *in, size_t n, size_t max_out, imm_buf *out,
                                char *err, size_t errlen);

/* "libcurl/7.88.1 OpenSSL/3.0.x ..." */
const char *imm_http_backend_version(void);

#endif
