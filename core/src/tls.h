/*
 * tls.h: a sans-I/O TLS filter over in-memory BIOs of its own (internal, sbusi_).
 *
 * The filter never touches a socket. The host moves bytes:
 *   network -> sbusi_tls_feed()  (ciphertext in)
 *   sbusi_tls_read()  -> plaintext for the layer above (AMQP)
 *   plaintext from above -> sbusi_tls_write()  (always accepted, buffered
 *                                              until the handshake allows it)
 *   sbusi_tls_take()  -> ciphertext for the network
 * and calls sbusi_tls_pending() to know whether ciphertext waits.
 *
 * A context (sbusi_tls_ctx_t) holds configuration shared by many
 * connections: server mode with a certificate and key, or client mode with
 * peer verification against a CA file or the system store. In client mode
 * each connection sends SNI (for DNS names) and verifies the certificate
 * against the host name or IP literal given to sbusi_tls_new().
 *
 * Errors: functions return a negative value and sbusi_tls_error() gives the
 * reason from OpenSSL (verification failures include the X509 reason, e.g.
 * "certificate verify failed: self-signed certificate in certificate chain").
 * One connection is used by one thread; contexts may be shared read-only.
 */
#ifndef SBUSI_TLS_H
#define SBUSI_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct sbusi_tls_ctx sbusi_tls_ctx_t;
typedef struct sbusi_tls sbusi_tls_t;

/* Configuration of a context; initialise with sbusi_tls_options_init(). */
typedef struct sbusi_tls_options {
  bool server;            /* server mode (needs cert_file and key_file) */
  const char *cert_file;  /* PEM certificate (chain) presented to the peer, borrowed */
  const char *key_file;   /* PEM private key of cert_file, borrowed */
  const char *ca_file;    /* client: PEM bundle to trust; NULL = system store, borrowed */
  bool verify_peer;       /* client: verify the chain and the host name (default true) */
} sbusi_tls_options_t;

/* Results of sbusi_tls_read() besides a byte count. */
enum { SBUSI_TLS_EOF = -2, SBUSI_TLS_FAIL = -1 };

void sbusi_tls_options_init(sbusi_tls_options_t *o);

/* New context; NULL with the reason copied into err on failure. Free with sbusi_tls_ctx_free. */
sbusi_tls_ctx_t *sbusi_tls_ctx_new(const sbusi_tls_options_t *o, char *err, size_t errlen);
void sbusi_tls_ctx_free(sbusi_tls_ctx_t *ctx);

/* New connection on ctx. hostname (client mode: SNI and verification; copied) may be NULL
 * in server mode. A client starts its handshake at once (see sbusi_tls_pending). */
sbusi_tls_t *sbusi_tls_new(sbusi_tls_ctx_t *ctx, const char *hostname);
void sbusi_tls_free(sbusi_tls_t *t);

/* Ciphertext from the network (copied). 0, or SBUSI_TLS_FAIL. */
int sbusi_tls_feed(sbusi_tls_t *t, const void *p, size_t n);
/* Zero-copy form of sbusi_tls_feed for a host that reads the socket itself: a place for up
 * to n bytes of ciphertext at the tail of the input queue, or NULL (failed connection,
 * n == 0, no memory). Read into it, then call sbusi_tls_feed_done with the count actually
 * read (0 is fine): same result as feed. The place stays valid until sbusi_tls_feed_done;
 * in between, only sbusi_tls_read, _write, _take, _out_data/_consume, _pending may be called. */
void *sbusi_tls_feed_buffer(sbusi_tls_t *t, size_t n);
int sbusi_tls_feed_done(sbusi_tls_t *t, size_t n);
/* Plaintext for the layer above: >0 bytes, 0 nothing yet, SBUSI_TLS_EOF after the peer's
 * close_notify, SBUSI_TLS_FAIL on error (handshake or record failure). */
ssize_t sbusi_tls_read(sbusi_tls_t *t, void *p, size_t n);
/* Plaintext to send (copied, buffered until the handshake is done). n, or SBUSI_TLS_FAIL. */
ssize_t sbusi_tls_write(sbusi_tls_t *t, const void *p, size_t n);
/* Bytes of ciphertext waiting for the network. */
size_t sbusi_tls_pending(sbusi_tls_t *t);
/* Copy up to n bytes of waiting ciphertext into p and consume them; returns the count. */
size_t sbusi_tls_take(sbusi_tls_t *t, void *p, size_t n);
/* Zero-copy form of sbusi_tls_take: the waiting ciphertext in place (*n bytes, borrowed
 * until the next call on t), to be written to the socket and then released with
 * sbusi_tls_out_consume (n larger than what waits releases all). */
const void *sbusi_tls_out_data(sbusi_tls_t *t, size_t *n);
void sbusi_tls_out_consume(sbusi_tls_t *t, size_t n);
/* Queue a close_notify alert. */
void sbusi_tls_close(sbusi_tls_t *t);
/* True once the handshake completed. */
bool sbusi_tls_established(const sbusi_tls_t *t);
/* The last failure reason (borrowed, valid until the next call), or "". */
const char *sbusi_tls_error(const sbusi_tls_t *t);

#endif
