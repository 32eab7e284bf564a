/*
 * test_emu_tls.c: the sans-I/O TLS filter (core/src/tls.c) in both roles.
 *
 * A client and a server filter are pumped against each other in memory with
 * certificates from the emulator's generator: handshake, plaintext both
 * ways (1 MB, many records), host name and IP verification, failure reasons
 * from OpenSSL, and an unverified client.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "certgen.h"
#include "tls.h"

static int g_failures;
#define CHECK(c)                                                              \
  do {                                                                        \
    if (!(c)) {                                                               \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);   \
      g_failures++;                                                           \
    }                                                                         \
  } while (0)

/* Move ciphertext from a to b; returns bytes moved or -1 on a feed failure. */
static long move(sbusi_tls_t *a, sbusi_tls_t *b)
{
  unsigned char buf[16384];
  long total = 0;
  size_t n;
  while ((n = sbusi_tls_take(a, buf, sizeof buf)) > 0) {
    if (sbusi_tls_feed(b, buf, n) != 0) return -1;
    total += (long)n;
  }
  return total;
}

/* Pump until quiet; plaintext read on each side is appended to its buffer. */
static int pump(sbusi_tls_t *c, sbusi_tls_t *s, unsigned char *cin, size_t *cn, unsigned char *sin, size_t *sn, size_t cap)
{
  for (int i = 0; i < 10000; i++) {
    long a = move(c, s), b = move(s, c);
    if (a < 0 || b < 0) return -1;
    ssize_t r;
    while ((r = sbusi_tls_read(s, sin + *sn, cap - *sn)) > 0) *sn += (size_t)r;
    if (r == SBUSI_TLS_FAIL) return -1;
    while ((r = sbusi_tls_read(c, cin + *cn, cap - *cn)) > 0) *cn += (size_t)r;
    if (r == SBUSI_TLS_FAIL) return -1;
    if (!a && !b && !sbusi_tls_pending(c) && !sbusi_tls_pending(s)) return 0;
  }
  return -1;
}

static sbusi_tls_ctx_t *server_ctx(const emu_certs_t *certs)
{
  char err[256];
  sbusi_tls_options_t o;
  sbusi_tls_options_init(&o);
  o.server = true;
  o.cert_file = certs->cert;
  o.key_file = certs->key;
  sbusi_tls_ctx_t *x = sbusi_tls_ctx_new(&o, err, sizeof err);
  if (!x) fprintf(stderr, "server ctx: %s\n", err);
  return x;
}

static sbusi_tls_ctx_t *client_ctx(const char *ca, bool verify)
{
  char err[256];
  sbusi_tls_options_t o;
  sbusi_tls_options_init(&o);
  o.ca_file = ca;
  o.verify_peer = verify;
  return sbusi_tls_ctx_new(&o, err, sizeof err);
}

/* Connect a client to a server; returns 0 when both sides are established. */
static int connect_pair(sbusi_tls_ctx_t *cc, sbusi_tls_ctx_t *sc, const char *host, char *why, size_t n)
{
  sbusi_tls_t *c = sbusi_tls_new(cc, host), *s = sbusi_tls_new(sc, NULL);
  static unsigned char cin[1 << 21], sin[1 << 21];
  size_t cn = 0, sn = 0;
  int rc = pump(c, s, cin, &cn, sin, &sn, sizeof sin);
  snprintf(why, n, "%s", sbusi_tls_error(c));
  if (rc == 0 && sbusi_tls_established(c) && sbusi_tls_established(s)) {
    unsigned char *big = malloc(1 << 20);
    for (size_t i = 0; i < (1u << 20); i++) big[i] = (unsigned char)(i * 7);
    CHECK(sbusi_tls_write(c, big, 1 << 20) == 1 << 20);
    CHECK(sbusi_tls_write(s, "pong", 4) == 4);
    CHECK(pump(c, s, cin, &cn, sin, &sn, sizeof sin) == 0);
    CHECK(sn == (1u << 20) && memcmp(sin, big, sn) == 0);
    CHECK(cn == 4 && memcmp(cin, "pong", 4) == 0);
    sbusi_tls_close(c);
    move(c, s);
    CHECK(sbusi_tls_read(s, sin, 16) == SBUSI_TLS_EOF);
    free(big);
  } else {
    rc = -1;
  }
  sbusi_tls_free(c);
  sbusi_tls_free(s);
  return rc;
}

int main(void)
{
  char dir[] = "/tmp/test_emu_tls_XXXXXX", err[256], why[512];
  CHECK(mkdtemp(dir) != NULL);
  emu_certs_t certs;
  CHECK(emu_certgen(dir, "127.0.0.1", &certs, err, sizeof err) == 0);
  sbusi_tls_ctx_t *sc = server_ctx(&certs);
  sbusi_tls_ctx_t *trust = client_ctx(certs.ca, true);
  sbusi_tls_ctx_t *sysstore = client_ctx(NULL, true);
  sbusi_tls_ctx_t *blind = client_ctx(NULL, false);
  CHECK(sc && trust && sysstore && blind);
  CHECK(connect_pair(trust, sc, "localhost", why, sizeof why) == 0);
  CHECK(connect_pair(trust, sc, "127.0.0.1", why, sizeof why) == 0);
  CHECK(connect_pair(trust, sc, "example.com", why, sizeof why) != 0);
  CHECK(strstr(why, "certificate verify failed") != NULL && strstr(why, "hostname mismatch") != NULL);
  CHECK(connect_pair(trust, sc, "127.0.0.2", why, sizeof why) != 0);
  CHECK(strstr(why, "IP address mismatch") != NULL);
  CHECK(connect_pair(sysstore, sc, "localhost", why, sizeof why) != 0);
  CHECK(strstr(why, "certificate verify failed") != NULL);
  CHECK(connect_pair(blind, sc, "anything", why, sizeof why) == 0);
  sbusi_tls_options_t o;
  sbusi_tls_options_init(&o);
  o.server = true;
  CHECK(sbusi_tls_ctx_new(&o, err, sizeof err) == NULL && strstr(err, "certificate") != NULL);
  o.cert_file = "/nonexistent.pem";
  o.key_file = "/nonexistent.key";
  CHECK(sbusi_tls_ctx_new(&o, err, sizeof err) == NULL && strstr(err, "cannot load the certificate") != NULL);
  sbusi_tls_ctx_free(sc);
  sbusi_tls_ctx_free(trust);
  sbusi_tls_ctx_free(sysstore);
  sbusi_tls_ctx_free(blind);
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  CHECK(system(cmd) == 0);
  if (g_failures) fprintf(stderr, "%d check(s) failed\n", g_failures);
  else printf("test_emu_tls: all passed\n");
  return g_failures ? 1 : 0;
}
