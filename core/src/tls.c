/*
 * tls.c: sans-I/O TLS over OpenSSL memory BIOs, client and server mode.
 *
 * Each connection owns an SSL object whose read BIO receives the network's
 * ciphertext (sbusi_tls_feed) and whose write BIO collects ciphertext for the
 * network (sbusi_tls_take). Plaintext written before the handshake completes
 * is kept in a pending buffer and pushed through SSL_write as soon as the
 * handshake allows; SSL_write never sees a partial record because
 * SSL_MODE_ENABLE_PARTIAL_WRITE is off and memory BIOs never block.
 *
 * The file: context creation (certificates, verification), connection
 * creation (SNI and host/IP verification in client mode), the byte pumps,
 * and error text built from OpenSSL's error queue and verify result.
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
  t->in = BIO_new(BIO_s_mem());
  t->out = BIO_new(BIO_s_mem());
  if (!t->ssl || !t->in || !t->out) goto fail;
  BIO_set_mem_eof_return(t->in, -1);
  SSL_set_bio(t->ssl, t->in, t->out);
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

int sbusi_tls_feed(sbusi_tls_t *t, const void *p, size_t n)
{
  if (t->failed) return SBUSI_TLS_FAIL;
  if (n && BIO_write(t->in, p, (int)n) != (int)n) {
    set_failure(t, "BIO_write failed");
    return SBUSI_TLS_FAIL;
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

ssize_t sbusi_tls_write(sbusi_tls_t *t, const void *p, size_t n)
{
  if (t->failed) return SBUSI_TLS_FAIL;
  if (t->pend_len + n > t->pend_cap) {
    size_t cap = t->pend_cap ? t->pend_cap : 16384;
    while (cap < t->pend_len + n) cap *= 2;
    unsigned char *q = realloc(t->pend, cap);
    if (!q) {
      snprintf(t->err, sizeof t->err, "out of memory");
      return SBUSI_TLS_FAIL;
    }
    t->pend = q;
    t->pend_cap = cap;
  }
  memcpy(t->pend + t->pend_len, p, n);
  t->pend_len += n;
  if (!handshake(t) || !flush_pending(t)) return SBUSI_TLS_FAIL;
  return (ssize_t)n;
}

size_t sbusi_tls_pending(sbusi_tls_t *t) { return BIO_ctrl_pending(t->out); }

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
