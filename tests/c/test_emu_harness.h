/*
 * test_emu_harness.h: an in-memory client for emulator unit tests.
 *
 * A Proton client connection driver is wired to an emulator connection
 * (emu_conn_t) by copying bytes between their buffers: no sockets, no
 * threads, no sleeps. Time is the emulator clock, moved with skew_ms. The
 * harness records what the client receives (deliveries, dispositions, link
 * errors) so tests can assert on the wire behaviour. Header-only so that each
 * test_emu_*.c stays a single executable.
 */
#ifndef TEST_EMU_HARNESS_H
#define TEST_EMU_HARNESS_H

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/disposition.h>
#include <proton/event.h>
#include <proton/link.h>
#include <proton/message.h>
#include <proton/sasl.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "emu.h"

/* Each test uses a different subset of the helpers below. */
#pragma GCC diagnostic ignored "-Wunused-function"

static int g_failures;
#define CHECK(c)                                                                  \
  do {                                                                            \
    if (!(c)) {                                                                   \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);       \
      g_failures++;                                                               \
    }                                                                             \
  } while (0)

#define MAX_RX 256

/* A received delivery on the client side. */
typedef struct rx {
  pn_delivery_t *d;        /* Proton delivery */
  pn_link_t *link;         /* link it arrived on */
  unsigned char *data;     /* message bytes */
  size_t len;              /* size */
  bool settled;            /* arrived pre-settled */
} rx_t;

/* The client half of a test connection. */
typedef struct harness {
  emu_broker_t *b;         /* broker under test */
  emu_conn_t *server;      /* emulator connection */
  pn_connection_driver_t client; /* Proton client */
  pn_session_t *ssn;       /* one session */
  rx_t rx[MAX_RX];         /* received deliveries */
  int nrx;                 /* count */
  emu_buf_t partial;       /* bytes of a delivery in progress */
} harness_t;

static void h_client_events(harness_t *h)
{
  pn_event_t *ev;
  while ((ev = pn_connection_driver_next_event(&h->client))) {
    if (pn_event_type(ev) != PN_DELIVERY) continue;
    pn_delivery_t *d = pn_event_delivery(ev);
    pn_link_t *l = pn_delivery_link(d);
    if (!pn_link_is_receiver(l) || !pn_delivery_readable(d)) continue;
    char buf[65536];
    ssize_t n;
    while ((n = pn_link_recv(l, buf, sizeof buf)) > 0) buf_put(&h->partial, buf, (size_t)n);
    if (pn_delivery_partial(d)) continue;
    if (h->nrx < MAX_RX) {
      rx_t *r = &h->rx[h->nrx++];
      r->d = d;
      r->link = l;
      r->data = malloc(h->partial.len + 1);
      memcpy(r->data, h->partial.p, h->partial.len);
      r->len = h->partial.len;
      r->settled = pn_delivery_settled(d);
    }
    h->partial.len = 0;
    pn_link_advance(l);
  }
}

/* Move bytes both ways and process events until nothing moves. */
static void h_pump(harness_t *h)
{
  for (int round = 0; round < 1000; round++) {
    bool moved = false;
    pn_connection_driver_t *s = &h->server->driver, *c = &h->client;
    pn_bytes_t out = pn_connection_driver_write_buffer(c);
    if (out.size) {
      pn_rwbytes_t in = pn_connection_driver_read_buffer(s);
      size_t n = out.size < in.size ? out.size : in.size;
      if (n) {
        memcpy(in.start, out.start, n);
        pn_connection_driver_read_done(s, n);
        pn_connection_driver_write_done(c, n);
        moved = true;
      }
    }
    emu_conn_process(h->server);
    emu_dispatch_all(h->b);
    out = pn_connection_driver_write_buffer(s);
    if (out.size) {
      pn_rwbytes_t in = pn_connection_driver_read_buffer(c);
      size_t n = out.size < in.size ? out.size : in.size;
      if (n) {
        memcpy(in.start, out.start, n);
        pn_connection_driver_read_done(c, n);
        pn_connection_driver_write_done(s, n);
        moved = true;
      }
    }
    h_client_events(h);
    if (!moved) return;
  }
}

static emu_broker_t *h_broker(void)
{
  emu_options_t o = {0};
  emu_broker_t *b = emu_broker_new(&o);
  emu_policy_t *p = calloc(1, sizeof *p);
  p->name = strdup("RootManageSharedAccessKey");
  p->key = strdup("SAS_KEY_VALUE");
  p->rights = RIGHT_SEND | RIGHT_LISTEN | RIGHT_MANAGE;
  b->policies = p;
  b->ns_name = strdup("sbemulatorns");
  return b;
}

static void h_open(harness_t *h, emu_broker_t *b)
{
  memset(h, 0, sizeof *h);
  h->b = b;
  h->server = emu_conn_new(b, h);
  pn_connection_driver_init(&h->client, NULL, NULL);
  pn_sasl_t *sasl = pn_sasl(h->client.transport);
  pn_sasl_allowed_mechs(sasl, "ANONYMOUS");
  pn_connection_set_container(h->client.connection, "test-client");
  pn_connection_set_hostname(h->client.connection, "localhost");
  pn_connection_open(h->client.connection);
  h->ssn = pn_session(h->client.connection);
  pn_session_open(h->ssn);
  h_pump(h);
}

static void h_close(harness_t *h)
{
  for (int i = 0; i < h->nrx; i++) free(h->rx[i].data);
  buf_free(&h->partial);
  pn_connection_driver_destroy(&h->client);
  emu_conn_free(h->server);
}

/* Make a SAS token the way the SDKs do (independent of the broker's code). */
static void h_sas(char *out, size_t n, const char *uri, const char *key_name, const char *key, long ttl)
{
  char sr[512], tosign[600];
  size_t k = 0;
  for (const char *p = uri; *p && k < sizeof sr - 4; p++) {
    if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("-_.~", *p))
      sr[k++] = *p;
    else k += (size_t)snprintf(sr + k, 4, "%%%02X", (unsigned char)*p);
  }
  sr[k] = 0;
  long se = (long)time(NULL) + ttl;
  snprintf(tosign, sizeof tosign, "%s\n%ld", sr, se);
  unsigned char mac[32];
  unsigned ml = 32;
  HMAC(EVP_sha256(), key, (int)strlen(key), (unsigned char *)tosign, strlen(tosign), mac, &ml);
  char b64[64], sig[128];
  EVP_EncodeBlock((unsigned char *)b64, mac, 32);
  k = 0;
  for (const char *p = b64; *p; p++) {
    if (*p == '+' || *p == '/' || *p == '=') k += (size_t)snprintf(sig + k, 4, "%%%02X", (unsigned char)*p);
    else sig[k++] = *p;
  }
  sig[k] = 0;
  snprintf(out, n, "SharedAccessSignature sr=%s&sig=%s&se=%ld&skn=%s", sr, sig, se, key_name);
}

static pn_link_t *h_sender(harness_t *h, const char *name, const char *addr)
{
  pn_link_t *l = pn_sender(h->ssn, name);
  pn_terminus_set_address(pn_link_target(l), addr);
  pn_terminus_set_address(pn_link_source(l), name);
  pn_link_open(l);
  h_pump(h);
  return l;
}

static pn_link_t *h_receiver(harness_t *h, const char *name, const char *addr, bool rad, int credit)
{
  pn_link_t *l = pn_receiver(h->ssn, name);
  pn_terminus_set_address(pn_link_source(l), addr);
  pn_terminus_set_address(pn_link_target(l), name);
  if (rad) {
    pn_link_set_snd_settle_mode(l, PN_SND_SETTLED);
    pn_link_set_rcv_settle_mode(l, PN_RCV_FIRST);
  } else {
    pn_link_set_snd_settle_mode(l, PN_SND_UNSETTLED);
    pn_link_set_rcv_settle_mode(l, PN_RCV_SECOND);
  }
  pn_link_open(l);
  if (credit) pn_link_flow(l, credit);
  h_pump(h);
  return l;
}

/* Encode a pn_message into a fresh buffer. */
static size_t h_encode(pn_message_t *m, char **out)
{
  size_t cap = 1 << 20;
  *out = malloc(cap);
  pn_message_encode(m, *out, &cap);
  return cap;
}

static pn_delivery_t *h_send_bytes(harness_t *h, pn_link_t *l, const char *p, size_t n)
{
  static uint64_t tag;
  tag++;
  pn_delivery_t *d = pn_delivery(l, pn_dtag((char *)&tag, sizeof tag));
  pn_link_send(l, p, n);
  pn_link_advance(l);
  h_pump(h);
  return d;
}

static pn_delivery_t *h_send_text(harness_t *h, pn_link_t *l, const char *body, const char *msg_id)
{
  pn_message_t *m = pn_message();
  if (msg_id) pn_message_set_id(m, (pn_atom_t){.type = PN_STRING, .u.as_bytes = pn_bytes(strlen(msg_id), msg_id)});
  pn_data_put_binary(pn_message_body(m), pn_bytes(strlen(body), body));
  char *buf;
  size_t n = h_encode(m, &buf);
  pn_delivery_t *d = h_send_bytes(h, l, buf, n);
  free(buf);
  pn_message_free(m);
  return d;
}

/* Put a token of a type for audience on $cbs; returns the status code of the response. */
static int h_put_token_typed(harness_t *h, const char *audience, const char *token, const char *type)
{
  static int n;
  char sname[32], rname[32];
  snprintf(sname, sizeof sname, "cbs-s-%d", n);
  snprintf(rname, sizeof rname, "cbs-r-%d", n++);
  pn_link_t *s = h_sender(h, sname, "$cbs");
  h_receiver(h, rname, "$cbs", false, 10);
  pn_message_t *m = pn_message();
  pn_message_set_id(m, (pn_atom_t){.type = PN_ULONG, .u.as_ulong = 7});
  pn_message_set_reply_to(m, rname);
  pn_data_t *ap = pn_message_properties(m);
  pn_data_put_map(ap);
  pn_data_enter(ap);
  pn_data_put_string(ap, pn_bytes(9, "operation"));
  pn_data_put_string(ap, pn_bytes(9, "put-token"));
  pn_data_put_string(ap, pn_bytes(4, "type"));
  pn_data_put_string(ap, pn_bytes(strlen(type), type));
  pn_data_put_string(ap, pn_bytes(4, "name"));
  pn_data_put_string(ap, pn_bytes(strlen(audience), audience));
  pn_data_exit(ap);
  pn_data_put_string(pn_message_body(m), pn_bytes(strlen(token), token));
  char *buf;
  size_t len = h_encode(m, &buf);
  int before = h->nrx;
  h_send_bytes(h, s, buf, len);
  free(buf);
  pn_message_free(m);
  int status = -1;
  if (h->nrx > before) {
    pn_message_t *resp = pn_message();
    pn_message_decode(resp, (char *)h->rx[before].data, h->rx[before].len);
    pn_data_t *rp = pn_message_properties(resp);
    pn_data_rewind(rp);
    pn_data_next(rp);
    size_t cnt = pn_data_get_map(rp);
    pn_data_enter(rp);
    for (size_t i = 0; i < cnt / 2; i++) {
      pn_data_next(rp);
      pn_bytes_t k = pn_data_get_string(rp);
      pn_data_next(rp);
      if (k.size == 11 && !memcmp(k.start, "status-code", 11) && pn_data_type(rp) == PN_INT) status = pn_data_get_int(rp);
    }
    pn_message_free(resp);
  }
  return status;
}

static int h_put_token(harness_t *h, const char *audience, const char *token)
{
  return h_put_token_typed(h, audience, token, "servicebus.windows.net:sastoken");
}

static int h_auth(harness_t *h, const char *entity)
{
  char aud[256], tok[1024];
  snprintf(aud, sizeof aud, "sb://localhost/%s", entity);
  h_sas(tok, sizeof tok, aud, "RootManageSharedAccessKey", "SAS_KEY_VALUE", 3600);
  return h_put_token(h, aud, tok);
}

/* Body (first data section) of a received delivery as text. */
static void h_body(const rx_t *r, char *out, size_t n)
{
  pn_message_t *m = pn_message();
  out[0] = 0;
  if (pn_message_decode(m, (char *)r->data, r->len) == 0) {
    pn_data_t *b = pn_message_body(m);
    pn_data_rewind(b);
    if (pn_data_next(b) && pn_data_type(b) == PN_BINARY) {
      pn_bytes_t x = pn_data_get_binary(b);
      size_t k = x.size < n - 1 ? x.size : n - 1;
      memcpy(out, x.start, k);
      out[k] = 0;
    }
  }
  pn_message_free(m);
}

#endif
