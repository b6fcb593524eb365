/*
 * imm_castore.h - a CA file whose certificates are parsed only when a TLS
 * handshake asks for one of their names.
 *
 * Why: libcurl hands a CA file to OpenSSL, which parses every certificate in
 * it before the first handshake can be verified. OpenSSL 3.0 decodes each
 * public key through its provider machinery, so the system bundle (about 140
 * certificates) costs some 237 million instructions, 30 ms, per process:
 * 45% of everything a 10,000-binding parallel listing executes. A handshake
 * needs one or two of those certificates. Here the file is split into its
 * DER certificates once (base64 only), each subject's hash is computed on
 * the first lookup, and a certificate is parsed when a chain names it, as
 * OpenSSL's own hashed-directory lookup does for a directory.
 *
 * Verification stays OpenSSL's: the store only supplies the certificates of
 * the file whose subject matches the name asked for (all of them, as the
 * directory lookup does), with the flags libcurl sets on its own store
 * (trusted first, partial chains).
 *
 * A file the index does not take (anything but CERTIFICATE blocks, such as
 * CRLs or TRUSTED CERTIFICATE; a certificate it cannot walk to its subject)
 * is read whole by OpenSSL's PEM reader, as libcurl would, once per process.
 * A file that reads to no certificate fails the handshake, as with libcurl.
 * An indexed certificate that does not parse is skipped where OpenSSL's
 * reader would refuse the whole file: never more trust than the file gives.
 * A path with a ':' stays libcurl's (see imm_http.c).
 *
 * Thread safety: stores are cached for the process, keyed by path, and
 * shared by handles on any thread; a mutex guards the cache and one guards
 * each store's certificates.
 */
#ifndef IMM_CASTORE_H
#define IMM_CASTORE_H

#include <stddef.h>

typedef struct imm_castore imm_castore;

/* The store for the CA file at path, from the cache or made now (the file
 * is read on the first handshake that needs it); the caller owns one
 * reference. NULL for a path with a ':', or when memory ran out: then
 * libcurl reads the file. */
imm_castore *imm_castore_get(const char *path);

/* Drops a reference (NULL is fine). */
void imm_castore_release(imm_castore *s);

/* Gives ssl_ctx (an OpenSSL SSL_CTX) a certificate store of its own that
 * looks certificates up in s. 1 on success, 0 when out of memory, -1 when
 * the file was read before and holds no usable certificate. */
int imm_castore_attach(imm_castore *s, void *ssl_ctx);

/* The store of a PEM text held in memory, under key (what imm_castore_get
 * does once the file is read; not cached). NULL as for imm_castore_get. */
imm_castore *imm_castore_parse(const char *key, const char *text, size_t len);

/* The lookup a handshake makes, for the fuzzer and the C checks: a
 * certificate of s whose subject is the DER-encoded name, as an X509 * the
 * caller frees (X509_free), or NULL. */
void *imm_castore_find(imm_castore *s, const void *name_der, size_t len);

/* Reads the files that handshakes have just asked for (imm_castore_attach
 * marks them): called once a multi has sent what it could, so the reading
 * overlaps the round trip to the server rather than delaying the
 * ClientHello. Cheap when there is nothing to read. */
void imm_castore_prepare(void);

/* For the specs: "unread", "indexed", "whole" (OpenSSL's reader has the
 * file) or "failed" (no usable certificate). */
const char *imm_castore_mode(imm_castore *s);

/* For the specs: how many certificates the index holds, and how many a
 * handshake has parsed so far (both 0 until the file is read and indexed,
 * and when OpenSSL's own reader has it). */
void imm_castore_counts(imm_castore *s, size_t *certs, size_t *parsed);

/* The path s was made for (imm_castore_get's), valid while s is held. */
const char *imm_castore_path(const imm_castore *s);

#endif
