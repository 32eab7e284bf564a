/*
 * tls.c: sans-I/O TLS over in-memory BIOs, client and server mode.
 *
 * Each connection owns an SSL object whose read BIO receives the network's
 * ciphertext (sbusi_tls_feed) and whose write BIO collects ciphertext for the
 * network (sbusi_tls_take). Plaintext written once the handshake is done goes
 * straight into SSL_write; plaintext written before (or left by a write that
 * has to wait for the peer) is kept in a pending buffer and pushed through
 * SSL_write as soon as the handshake allows. SSL_write never sees a partial
 * record because SSL_MODE_ENABLE_PARTIAL_WRITE is off and the BIOs never
 * block on write.
 *
 * The two BIOs are a small BIO method of ours rather than BIO_s_mem(): a
 * byte queue that appends and consumes with one memcpy each. OpenSSL 3's
 * memory BIO zero-fills every region it appends before copying into it
 * (BUF_MEM_grow_clean) and compacts with memmove; on the bulk path (a batch
 * of 100 x 1 KB messages is ~105 KB of records) that was about a fifth of
 * this layer's instructions besides the cipher itself (callgrind, issue 7).
 *
 * The file: the byte-queue BIO, context creation (certificates,
 * verification), connection creation (SNI and host/IP verification in
 * client mode), the byte pumps, and error text built from OpenSSL's error
 * queue and verify result.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* The byte-queue BIO                                                  */
/* ------------------------------------------------------------------ */

/* Bytes p[head .. len) are queued; cap is the allocation. */
typedef struct bq {
  unsigned char *p;
  size_t head, len, cap;
} bq_t;

/* Room for n more bytes at q->p + q->len (sliding or growing); false without memory. */
static bool bq_room(bq_t *q, size_t n)
{
  if (q->head == q->len) q->head = q->len = 0;
  if (q->len + n > q->cap && q->head) { /* slide the unread bytes to the front */
    memmove(q->p, q->p + q->head, q->len - q->head);
    q->len -= q->head;
    q->head = 0;
  }
  if (q->len + n > q->cap) {
    size_t cap = q->cap ? q->cap : 16384;
    while (cap < q->len + n) cap *= 2;
    unsigned char *np = realloc(q->p, cap);
    if (!np) return false;
    q->p = np;
    q->cap = cap;
  }
  return true;
}

static int bq_write(BIO *b, const char *in, int inl)
{
  bq_t *q = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  if (inl <= 0) return 0;
  size_t n = (size_t)inl;
  if (!bq_room(q, n)) return -1;
  memcpy(q->p + q->len, in, n);
  q->len += n;
  return inl;
}

static int bq_read(BIO *b, char *out, int outl)
{
  bq_t *q = BIO_get_data(b);
  BIO_clear_retry_flags(b);
  size_t avail = q->len - q->head;
  if (!avail) {
    BIO_set_retry_read(b); /* like a memory BIO with eof_return -1: wait for more */
    return -1;
  }
  if (outl <= 0) return 0;
  size_t n = (size_t)outl < avail ? (size_t)outl : avail;
  memcpy(out, q->p + q->head, n);
  q->head += n;
  if (q->head == q->len) q->head = q->len = 0;
  return (int)n;
}

static long bq_ctrl(BIO *b, int cmd, long num, void *ptr)
{
  (void)num;
  (void)ptr;
  bq_t *q = BIO_get_data(b);
  switch (cmd) {
  case BIO_CTRL_PENDING: return (long)(q->len - q->head);
  case BIO_CTRL_WPENDING: return 0;
  case BIO_CTRL_FLUSH: return 1;
  case BIO_CTRL_EOF: return q->len == q->head;
  case BIO_CTRL_DUP: return 1;
  default: return 0;
  }
}

static int bq_create(BIO *b)
{
  bq_t *q = calloc(1, sizeof *q);
  if (!q) return 0;
  BIO_set_data(b, q);
  BIO_set_init(b, 1);
  return 1;
}

static int bq_destroy(BIO *b)
{
  bq_t *q = BIO_get_data(b);
  if (q) {
    free(q->p);
    free(q);
  }
  BIO_set_data(b, NULL);
  return 1;
}

static BIO_METHOD *g_bq_method;
static CRYPTO_ONCE g_bq_once = CRYPTO_ONCE_STATIC_INIT;

static void bq_method_init(void)
{
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "sbus byte queue");
  if (!m) return;
  if (!BIO_meth_set_write(m, bq_write) || !BIO_meth_set_read(m, bq_read) ||
      !BIO_meth_set_ctrl(m, bq_ctrl) || !BIO_meth_set_create(m, bq_create) ||
      !BIO_meth_set_destroy(m, bq_destroy)) {
    BIO_meth_free(m);
    return;
  }
  g_bq_method = m; /* one per process, like OpenSSL's own methods */
}

/* A new byte-queue BIO, or NULL. */
static BIO *bq_new(void)
{
  if (!CRYPTO_THREAD_run_once(&g_bq_once, bq_method_init) || !g_bq_method) return NULL;
  return BIO_new(g_bq_method);
}

/* ------------------------------------------------------------------ */
/* Contexts and connections                                            */
/* ------------------------------------------------------------------ */

struct sbusi_tls_ctx {
  SSL_CTX *ssl_ctx;  /* OpenSSL context */
  bool server;       /* server mode */
  bool verify;       /* client: verify the peer */
};

struct sbusi_tls {
  SSL *ssl;              /* the connection */
  BIO *in;               /* ciphertext from the network (read by SSL) */
  BIO *out;              /* ciphertext for the network (written by SSL) */
  bool server;           /* server mode */
  bool established;      /* handshake completed */
  bool failed;           /* a fatal error happened */
  unsigned char *pend;   /* plaintext waiting for the handshake */
  size_t pend_len;       /* bytes in pend */
  size_t pend_cap;       /* capacity of pend */
  size_t in_at;          /* sbusi_tls_feed_buffer: where the host reads to ... */
  size_t in_room;        /* ... and how many bytes it may read there */
  char err[512];         /* last failure reason */
};

void sbusi_tls_options_init(sbusi_tls_options_t *o)
{
  memset(o, 0, sizeof *o);
  o->verify_peer = true;
}

static void ossl_reason(char *err, size_t n, const char *what)
{
  unsigned long e = ERR_get_error();
  char buf[256] = "";
  if (e) ERR_error_string_n(e, buf, sizeof buf);
  snprintf(err, n, "%s%s%s", what, e ? ": " : "", buf);
  ERR_clear_error();
}

sbusi_tls_ctx_t *sbusi_tls_ctx_new(const sbusi_tls_options_t *o, char *err, size_t errlen)
{
  sbusi_tls_ctx_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->server = o->server;
  c->verify = !o->server && o->verify_peer;
  c->ssl_ctx = SSL_CTX_new(o->server ? TLS_server_method() : TLS_client_method());
  if (!c->ssl_ctx) {
    ossl_reason(err, errlen, "SSL_CTX_new failed");
    goto fail;
  }
  SSL_CTX_set_min_proto_version(c->ssl_ctx, TLS1_2_VERSION);
  if (o->cert_file && SSL_CTX_use_certificate_chain_file(c->ssl_ctx, o->cert_file) != 1) {
    ossl_reason(err, errlen, "cannot load the certificate");
    goto fail;
  }
  if (o->key_file && SSL_CTX_use_PrivateKey_file(c->ssl_ctx, o->key_file, SSL_FILETYPE_PEM) != 1) {
    ossl_reason(err, errlen, "cannot load the private key");
    goto fail;
  }
  if (o->server && (!o->cert_file || !o->key_file)) {
    snprintf(err, errlen, "server mode needs a certificate and a key");
    goto fail;
  }
  if (c->verify) {
    int ok = o->ca_file ? SSL_CTX_load_verify_locations(c->ssl_ctx, o->ca_file, NULL)
                        : SSL_CTX_set_default_verify_paths(c->ssl_ctx);
    if (ok != 1) {
      ossl_reason(err, errlen, "cannot load the CA certificates");
      goto fail;
    }
    SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER, NULL);
  }
  return c;
fail:
  sbusi_tls_ctx_free(c);
  return NULL;
}

void sbusi_tls_ctx_free(sbusi_tls_ctx_t *c)
{
  if (!c) return;
  SSL_CTX_free(c->ssl_ctx);
  free(c);
}

static bool is_ip_literal(const char *h)
{
  unsigned char tmp[16];
  return inet_pton(AF_INET, h, tmp) == 1 || inet_pton(AF_INET6, h, tmp) == 1;
}

static int client_setup(sbusi_tls_t *t, const sbusi_tls_ctx_t *c, const char *host)
{
  if (!host) return 0;
  bool ip = is_ip_literal(host);
  if (!ip && SSL_set_tlsext_host_name(t->ssl, host) != 1) return -1;
  if (!c->verify) return 0;
  X509_VERIFY_PARAM *vp = SSL_get0_param(t->ssl);
  if (ip) return X509_VERIFY_PARAM_set1_ip_asc(vp, host) == 1 ? 0 : -1;
  X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  return X509_VERIFY_PARAM_set1_host(vp, host, 0) == 1 ? 0 : -1;
}

sbusi_tls_t *sbusi_tls_new(sbusi_tls_ctx_t *c, const char *hostname)
{
  sbusi_tls_t *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->server = c->server;
  t->ssl = SSL_new(c->ssl_ctx);
  t->in = bq_new();
  t->out = bq_new();
  if (!t->ssl || !t->in || !t->out) goto fail;
  SSL_set_bio(t->ssl, t->in, t->out);
  /* a write that had to wait is retried from the pending buffer, which may move */
  SSL_set_mode(t->ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (c->server) {
    SSL_set_accept_state(t->ssl);
    return t;
  }
  SSL_set_connect_state(t->ssl);
  if (client_setup(t, c, hostname) != 0) goto fail_ssl;
  SSL_do_handshake(t->ssl);
  return t;
fail:
  BIO_free(t->in);
  BIO_free(t->out);
fail_ssl:
  SSL_free(t->ssl);
  free(t);
  return NULL;
}

void sbusi_tls_free(sbusi_tls_t *t)
{
  if (!t) return;
  SSL_free(t->ssl); /* frees both BIOs */
  free(t->pend);
  free(t);
}

static void set_failure(sbusi_tls_t *t, const char *what)
{
  long vr = SSL_get_verify_result(t->ssl);
  ossl_reason(t->err, sizeof t->err, what);
  if (vr != X509_V_OK) {
    size_t k = strlen(t->err);
    snprintf(t->err + k, sizeof t->err - k, " (%s)", X509_verify_cert_error_string(vr));
  }
  t->failed = true;
}

/* Advance the handshake; false on a fatal error. */
static bool handshake(sbusi_tls_t *t)
{
  if (t->established) return true;
  int r = SSL_do_handshake(t->ssl);
  if (r == 1) {
    t->established = true;
    return true;
  }
  int e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return true;
  set_failure(t, "TLS handshake failed");
  return false;
}

static bool flush_pending(sbusi_tls_t *t)
{
  while (t->established && t->pend_len) {
    int r = SSL_write(t->ssl, t->pend, (int)(t->pend_len > 1 << 30 ? 1 << 30 : t->pend_len));
    if (r <= 0) {
      int e = SSL_get_error(t->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return true;
      set_failure(t, "TLS write failed");
      return false;
    }
    memmove(t->pend, t->pend + r, t->pend_len - (size_t)r);
    t->pend_len -= (size_t)r;
  }
  return true;
}

void *sbusi_tls_feed_buffer(sbusi_tls_t *t, size_t n)
{
  if (t->failed || !n) return NULL;
  bq_t *q = BIO_get_data(t->in);
  t->in_room = 0;
  if (!bq_room(q, n)) return NULL;
  t->in_at = q->len;
  t->in_room = n;
  return q->p + q->len;
}

int sbusi_tls_feed_done(sbusi_tls_t *t, size_t n)
{
  if (t->failed) return SBUSI_TLS_FAIL;
  bq_t *q = BIO_get_data(t->in);
  if (n > t->in_room) n = t->in_room;
  t->in_room = 0;
  /* Only reading can have changed the queue since feed_buffer, and reading never moves
     the storage: at most it emptied the queue and rewound it to the start. */
  if (n && q->len != t->in_at) memmove(q->p + q->len, q->p + t->in_at, n);
  q->len += n;
  if (!handshake(t) || !flush_pending(t)) return SBUSI_TLS_FAIL;
  return 0;
}

int sbusi_tls_feed(sbusi_tls_t *t, const void *p, size_t n)
{
  if (t->failed) return SBUSI_TLS_FAIL;
  for (const char *q = p; n;) {
    int k = (int)(n > 1 << 30 ? 1 << 30 : n);
    if (BIO_write(t->in, q, k) != k) {
      set_failure(t, "BIO_write failed");
      return SBUSI_TLS_FAIL;
    }
    q += k;
    n -= (size_t)k;
  }
  if (!handshake(t) || !flush_pending(t)) return SBUSI_TLS_FAIL;
  return 0;
}

ssize_t sbusi_tls_read(sbusi_tls_t *t, void *p, size_t n)
{
  if (t->failed) return SBUSI_TLS_FAIL;
  if (!handshake(t)) return SBUSI_TLS_FAIL;
  if (!t->established) return 0;
  if (!flush_pending(t)) return SBUSI_TLS_FAIL;
  int r = SSL_read(t->ssl, p, (int)(n > 1 << 30 ? 1 << 30 : n));
  if (r > 0) return r;
  int e = SSL_get_error(t->ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
  if (e == SSL_ERROR_ZERO_RETURN) return SBUSI_TLS_EOF;
  set_failure(t, "TLS read failed");
  return SBUSI_TLS_FAIL;
}

/* Appends p[0..n) to the plaintext waiting for SSL_write; false without memory. */
static bool pend_put(sbusi_tls_t *t, const void *p, size_t n)
{
  if (t->pend_len + n > t->pend_cap) {
    size_t cap = t->pend_cap ? t->pend_cap : 16384;
    while (cap < t->pend_len + n) cap *= 2;
    unsigned char *q = realloc(t->pend, cap);
    if (!q) {
      snprintf(t->err, sizeof t->err, "out of memory");
      return false;
    }
    t->pend = q;
    t->pend_cap = cap;
  }
  memcpy(t->pend + t->pend_len, p, n);
  t->pend_len += n;
  return true;
}

ssize_t sbusi_tls_write(sbusi_tls_t *t, const void *p, size_t n)
{
  if (t->failed) return SBUSI_TLS_FAIL;
  const unsigned char *q = p;
  size_t left = n;
  /* The usual case, handshake done and nothing waiting: encrypt straight from the
     caller's bytes. Whatever SSL_write cannot take now waits in pend, in order. */
  while (t->established && !t->pend_len && left) {
    int r = SSL_write(t->ssl, q, (int)(left > 1 << 30 ? 1 << 30 : left));
    if (r <= 0) {
      int e = SSL_get_error(t->ssl, r);
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
      set_failure(t, "TLS write failed");
      return SBUSI_TLS_FAIL;
    }
    q += r;
    left -= (size_t)r;
  }
  if (left && !pend_put(t, q, left)) return SBUSI_TLS_FAIL;
  if (!handshake(t) || !flush_pending(t)) return SBUSI_TLS_FAIL;
  return (ssize_t)n;
}

size_t sbusi_tls_pending(sbusi_tls_t *t) { return BIO_ctrl_pending(t->out); }

const void *sbusi_tls_out_data(sbusi_tls_t *t, size_t *n)
{
  bq_t *q = BIO_get_data(t->out);
  *n = q->len - q->head;
  return q->p ? q->p + q->head : (const void *)"";
}

void sbusi_tls_out_consume(sbusi_tls_t *t, size_t n)
{
  bq_t *q = BIO_get_data(t->out);
  size_t avail = q->len - q->head;
  q->head += n < avail ? n : avail;
  if (q->head == q->len) q->head = q->len = 0;
}

size_t sbusi_tls_take(sbusi_tls_t *t, void *p, size_t n)
{
  int r = BIO_read(t->out, p, (int)(n > 1 << 30 ? 1 << 30 : n));
  return r > 0 ? (size_t)r : 0;
}

void sbusi_tls_close(sbusi_tls_t *t)
{
  if (t->established && !t->failed) SSL_shutdown(t->ssl);
}

bool sbusi_tls_established(const sbusi_tls_t *t) { return t->established; }

const char *sbusi_tls_error(const sbusi_tls_t *t) { return t->err; }
