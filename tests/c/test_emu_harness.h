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
  emu_buf_t wire;          /* client bytes not yet handed to the emulator */
  uint32_t next_format;    /* message-format to write into the next first transfer (0: none) */
  size_t chunk;            /* hand the emulator at most this many bytes at once (0: no limit) */
  emu_buf_t *seen;         /* when set, every byte the emulator wrote is appended here */
} harness_t;

static uint32_t h_be32(const unsigned char *p)
{
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Bytes of one encoded AMQP value at p, or -1 (the harness's own decoder, not the broker's). */
static long h_skip(const unsigned char *p, size_t n)
{
  if (!n) return -1;
  if (p[0] == 0x00) {
    long a = h_skip(p + 1, n - 1);
    if (a < 0) return -1;
    long b = h_skip(p + 1 + a, n - 1 - (size_t)a);
    return b < 0 ? -1 : 1 + a + b;
  }
  size_t w;
  switch (p[0] >> 4) {
  case 0x4: w = 0; break;
  case 0x5: w = 1; break;
  case 0x6: w = 2; break;
  case 0x7: w = 4; break;
  case 0x8: w = 8; break;
  case 0x9: w = 16; break;
  case 0xa: case 0xc: case 0xe: if (n < 2) return -1; w = 1 + (size_t)p[1]; break;
  case 0xb: case 0xd: case 0xf: if (n < 5) return -1; w = 4 + (size_t)h_be32(p + 1); break;
  default: return -1;
  }
  return 1 + w <= n ? (long)(1 + w) : -1;
}

/* Proton 0.37 cannot set a delivery's message-format: rewrite the first transfer frame in
 * h->wire to carry h->next_format (field 3), re-encoding its field list as list32. */
static void h_rewrite_format(harness_t *h)
{
  size_t off = 0;
  while (h->next_format && off + 8 <= h->wire.len) {
    unsigned char *f = h->wire.p + off;
    uint32_t size = h_be32(f);
    if (size < 8 || off + size > h->wire.len) return;
    size_t doff = (size_t)f[4] * 4;
    unsigned char *q = f + doff;
    if (f[5] != 0 || size < doff + 4 || q[0] != 0 || q[1] != 0x53 || q[2] != 0x14) {
      off += size;
      continue;
    }
    const unsigned char *l = q + 3, *fp;
    uint32_t count;
    size_t hdr;
    if (l[0] == 0xc0) { count = l[2]; hdr = 3; }
    else if (l[0] == 0xd0) { count = h_be32(l + 5); hdr = 9; }
    else { count = 0; hdr = 1; }
    fp = l + hdr;
    const unsigned char *end = f + size;
    emu_buf_t fields = {0};
    for (uint32_t i = 0; i < (count > 4 ? count : 4); i++) {
      long k = i < count ? h_skip(fp, (size_t)(end - fp)) : 0;
      if (i == 3) {
        buf_u8(&fields, 0x70);
        buf_be32(&fields, h->next_format);
      } else if (i < count) {
        buf_put(&fields, fp, (size_t)k);
      } else {
        buf_u8(&fields, 0x40);
      }
      if (i < count) fp += k;
    }
    uint32_t nfields = count > 4 ? count : 4;
    size_t payload = (size_t)(end - fp);
    emu_buf_t frame = {0};
    buf_be32(&frame, (uint32_t)(doff + 3 + 9 + fields.len + payload));
    buf_put(&frame, f + 4, doff - 4);
    buf_put(&frame, "\x00\x53\x14\xd0", 4);
    buf_be32(&frame, (uint32_t)(4 + fields.len));
    buf_be32(&frame, nfields);
    buf_put(&frame, fields.p, fields.len);
    buf_put(&frame, fp, payload);
    emu_buf_t rest = {0};
    buf_put(&rest, h->wire.p + off + size, h->wire.len - off - size);
    h->wire.len = off;
    buf_put(&h->wire, frame.p, frame.len);
    buf_put(&h->wire, rest.p, rest.len);
    buf_free(&rest);
    buf_free(&frame);
    buf_free(&fields);
    h->next_format = 0;
  }
}

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

/* Bytes of whole frames at the start of h->wire (what may go to the emulator while a
 * format rewrite waits for its transfer frame to be complete). */
static size_t h_whole_frames(const harness_t *h)
{
  size_t off = 0;
  while (off + 8 <= h->wire.len) {
    size_t size = memcmp(h->wire.p + off, "AMQP", 4) == 0 ? 8 : h_be32(h->wire.p + off);
    if (size < 8 || off + size > h->wire.len) break;
    off += size;
  }
  return off;
}

/* Move bytes both ways and process events until nothing moves. */
static void h_pump(harness_t *h)
{
  int rounds = h->chunk ? 10000000 : 1000; /* 1-byte handovers need a round per byte */
  for (int round = 0; round < rounds; round++) {
    bool moved = false;
    pn_connection_driver_t *s = &h->server->driver, *c = &h->client;
    pn_bytes_t out = pn_connection_driver_write_buffer(c);
    if (out.size) {
      buf_put(&h->wire, out.start, out.size);
      pn_connection_driver_write_done(c, out.size);
      moved = true;
    }
    h_rewrite_format(h);
    if (h->wire.len) {
      pn_rwbytes_t in = pn_connection_driver_read_buffer(s);
      size_t n = h->wire.len < in.size ? h->wire.len : in.size;
      if (h->chunk && n > h->chunk) n = h->chunk;
      if (h->next_format && n > h_whole_frames(h)) n = h_whole_frames(h);
      if (n) {
        memcpy(in.start, h->wire.p, n);
        emu_conn_read_done(h->server, in.start, n);
        memmove(h->wire.p, h->wire.p + n, h->wire.len - n);
        h->wire.len -= n;
        moved = true;
      }
    }
    emu_conn_process(h->server);
    emu_dispatch_all(h->b);
    out = emu_conn_output(h->server); /* what a host writes to the socket */
    if (out.size) {
      pn_rwbytes_t in = pn_connection_driver_read_buffer(c);
      size_t n = out.size < in.size ? out.size : in.size;
      if (n) {
        memcpy(in.start, out.start, n);
        if (h->seen) buf_put(h->seen, out.start, n);
        pn_connection_driver_read_done(c, n);
        emu_conn_output_done(h->server, n);
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
  buf_free(&h->wire);
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
