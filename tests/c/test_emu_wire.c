/*
 * test_emu_wire.c: batches are recognised by the transfer's message-format.
 *
 * Proton 0.37 neither sends nor reports a delivery's message-format, so the
 * harness rewrites the client's first transfer frame to carry 0x80013700
 * (h->next_format) and the emulator reads the field with its frame scanner
 * (emulator/wire.c). Checked: a batch becomes one message per data section;
 * the same bytes without the batch format stay one message (what content
 * sniffing got wrong); multi-frame batches; input split into 1-byte reads;
 * two links in one read; descriptors written as ulong; wire links freed after
 * detach; random input never upsets the scanner.
 */
#include "test_emu_harness.h"

#define BATCH 0x80013700u

static emu_broker_t *broker_with(const char *a, const char *b2)
{
  emu_broker_t *b = h_broker();
  emu_props_t p;
  emu_props_default(&p);
  emu_entity_add(b, ENT_QUEUE, a, NULL, &p);
  if (b2) {
    emu_props_default(&p);
    emu_entity_add(b, ENT_QUEUE, b2, NULL, &p);
  }
  return b;
}

/* An envelope body: one data section per inner message "<prefix><i>" (+ pad bytes of 'p'). */
static void envelope(emu_buf_t *env, int n, const char *prefix, size_t pad)
{
  for (int i = 0; i < n; i++) {
    pn_message_t *m = pn_message();
    char *t = malloc(pad + 32);
    int k = snprintf(t, 32, "%s%d", prefix, i);
    memset(t + k, 'p', pad);
    pn_data_put_binary(pn_message_body(m), pn_bytes((size_t)k + pad, t));
    size_t cap = pad + 4096;
    char *inner = malloc(cap);
    CHECK(pn_message_encode(m, inner, &cap) == 0);
    enc_descriptor(env, SEC_DATA);
    enc_bin(env, inner, cap);
    free(inner);
    free(t);
    pn_message_free(m);
  }
}

static size_t wire_links(const emu_conn_t *c, const char *name)
{
  size_t n = 0;
  for (const emu_wlink_t *x = c->wire.links; x; x = x->next)
    if (!name || !strcmp(x->name, name)) n++;
  return n;
}

static void test_batch_format_splits_and_plain_body_stays_one(void)
{
  emu_broker_t *b = broker_with("q1", NULL);
  harness_t h;
  h_open(&h, b);
  CHECK(h_auth(&h, "q1") == 202);
  pn_link_t *s = h_sender(&h, "s", "q1");
  emu_buf_t env = {0};
  envelope(&env, 3, "b", 0);
  emu_entity_t *q = emu_entity_find(b, "q1");

  /* the envelope as a normal message (format 0): one message, body kept as sent */
  pn_delivery_t *d = h_send_bytes(&h, s, (char *)env.p, env.len);
  CHECK(pn_delivery_remote_state(d) == PN_ACCEPTED);
  CHECK(q->counts.active == 1);
  emu_msg_t *m = emu_find_seq(q, 1);
  CHECK(m && m->body_len == env.len && !memcmp(m->data + m->ann_len + m->props_len + m->app_len, env.p, env.len));

  /* the same bytes with the batch format: three messages, own sequence numbers */
  h.next_format = BATCH;
  d = h_send_bytes(&h, s, (char *)env.p, env.len);
  CHECK(pn_delivery_remote_state(d) == PN_ACCEPTED);
  CHECK(q->counts.active == 4);
  for (int64_t i = 2; i <= 4; i++) CHECK(emu_find_seq(q, i) != NULL);

  /* they are delivered as three messages b0, b1, b2 after the plain one */
  h_receiver(&h, "r", "q1", true, 10);
  CHECK(h.nrx >= 5); /* the CBS response, then four messages */
  char body[64];
  h_body(&h.rx[h.nrx - 3], body, sizeof body);
  CHECK(!strcmp(body, "b0"));
  h_body(&h.rx[h.nrx - 1], body, sizeof body);
  CHECK(!strcmp(body, "b2"));
  CHECK(h.rx[h.nrx - 4].len > env.len); /* the plain one arrives whole, data sections intact */

  /* a batch whose data section is not a message is refused as a whole */
  emu_buf_t bad = {0};
  enc_descriptor(&bad, SEC_DATA);
  enc_bin(&bad, "not a message", 13);
  h.next_format = BATCH;
  d = h_send_bytes(&h, s, (char *)bad.p, bad.len);
  CHECK(pn_delivery_remote_state(d) == PN_REJECTED);
  CHECK(!strcmp(pn_condition_get_name(pn_disposition_condition(pn_delivery_remote(d))), "amqp:decode-error"));
  CHECK(q->counts.total == 0);
  buf_free(&bad);
  buf_free(&env);
  h_close(&h);
  emu_broker_free(b);
}

static void test_multi_frame_batch_and_one_byte_reads(void)
{
  emu_broker_t *b = broker_with("q1", NULL);
  harness_t h;
  h_open(&h, b);
  CHECK(h_auth(&h, "q1") == 202);
  pn_link_t *s = h_sender(&h, "s", "q1");
  emu_entity_t *q = emu_entity_find(b, "q1");
  /* The harness writes the format into a full 64 KB frame, making it 8 bytes longer than the
   * limit the client was given; let the emulator's Proton read such frames in this test. */
  pn_transport_set_max_frame(h.server->driver.transport, 1 << 20);
  /* ~180 KB: several 64 KB transfer frames; only the first carries the format */
  emu_buf_t env = {0};
  envelope(&env, 3, "big", 60000);
  h.next_format = BATCH;
  pn_delivery_t *d = h_send_bytes(&h, s, (char *)env.p, env.len);
  CHECK(pn_delivery_remote_state(d) == PN_ACCEPTED);
  CHECK(q->counts.active == 3);
  /* then a plain multi-frame message: one */
  d = h_send_bytes(&h, s, (char *)env.p, env.len);
  CHECK(pn_delivery_remote_state(d) == PN_ACCEPTED);
  CHECK(q->counts.active == 4);
  buf_free(&env);
  /* a small batch and a plain envelope handed over one byte at a time */
  envelope(&env, 2, "x", 0);
  h.chunk = 1;
  h.next_format = BATCH;
  h_send_bytes(&h, s, (char *)env.p, env.len);
  CHECK(q->counts.active == 6);
  h_send_bytes(&h, s, (char *)env.p, env.len);
  CHECK(q->counts.active == 7);
  h.chunk = 0;
  buf_free(&env);
  h_close(&h);
  emu_broker_free(b);
}

static void test_two_links_in_one_read(void)
{
  emu_broker_t *b = broker_with("q1", "q2");
  harness_t h;
  h_open(&h, b);
  CHECK(h_auth(&h, "q1") == 202);
  CHECK(h_auth(&h, "q2") == 202);
  /* attach both and send on both before the emulator sees any of it */
  pn_link_t *s1 = pn_sender(h.ssn, "s1"), *s2 = pn_sender(h.ssn, "s2");
  pn_terminus_set_address(pn_link_target(s1), "q1");
  pn_terminus_set_address(pn_link_target(s2), "q2");
  pn_link_open(s1);
  pn_link_open(s2);
  h_pump(&h);
  emu_buf_t env = {0};
  envelope(&env, 3, "m", 0);
  uint64_t t1 = 1, t2 = 1; /* the same tag on both links */
  for (int round = 0; round < 2; round++) {
    pn_delivery(s1, pn_dtag((char *)&t1, 8));
    pn_link_send(s1, (char *)env.p, env.len);
    pn_link_advance(s1);
    pn_delivery(s2, pn_dtag((char *)&t2, 8));
    pn_link_send(s2, (char *)env.p, env.len);
    pn_link_advance(s2);
  }
  h.next_format = BATCH; /* the first transfer in the wire: s1's first delivery */
  h_pump(&h);
  CHECK(emu_entity_find(b, "q1")->counts.active == 4); /* a batch of 3, then a plain one */
  CHECK(emu_entity_find(b, "q2")->counts.active == 2);
  /* detached links leave no wire state behind */
  CHECK(wire_links(h.server, "s1") == 1);
  pn_link_close(s1);
  h_pump(&h);
  CHECK(wire_links(h.server, "s1") == 0);
  CHECK(wire_links(h.server, "s2") == 1);
  buf_free(&env);
  h_close(&h);
  emu_broker_free(b);
}

static void put_frame(emu_buf_t *o, uint16_t ch, const unsigned char *body, size_t n)
{
  buf_be32(o, (uint32_t)(8 + n));
  buf_u8(o, 2);
  buf_u8(o, 0);
  buf_be16(o, ch);
  buf_put(o, body, n);
}

static void test_scanner_direct(void)
{
  emu_wire_t w;
  memset(&w, 0, sizeof w);
  emu_buf_t o = {0};
  buf_put(&o, "AMQP\x03\x01\x00\x00", 8);
  put_frame(&o, 0, (const unsigned char *)"\x00\x53\x40\xc0\x01\x00", 6); /* a SASL-ish frame body */
  o.p[8 + 5] = 1;                                                        /* type 1: SASL */
  buf_put(&o, "AMQP\x00\x01\x00\x00", 8);
  buf_put(&o, "\x00\x00\x00\x08\x02\x00\x00\x00", 8); /* empty frame (heartbeat) */
  /* attach, descriptor as ulong: name "x", handle 7, role sender */
  static const unsigned char attach[] = {0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x12,
                                         0xc0, 0x07, 0x03, 0xa1, 0x01, 'x', 0x52, 0x07, 0x42};
  put_frame(&o, 3, attach, sizeof attach);
  /* a receiver-role attach is not followed */
  static const unsigned char rattach[] = {0x00, 0x53, 0x12, 0xc0, 0x07, 0x03, 0xa1, 0x01, 'y', 0x52, 0x08, 0x41};
  put_frame(&o, 3, rattach, sizeof rattach);
  /* transfer: handle 7, id 0, tag "ab", format batch, then payload */
  static const unsigned char xfer[] = {0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x14,
                                       0xc0, 0x0d, 0x04, 0x52, 0x07, 0x43, 0xa0, 0x02, 'a', 'b',
                                       0x70, 0x80, 0x01, 0x37, 0x00, 'P', 'A', 'Y'};
  put_frame(&o, 3, xfer, sizeof xfer);
  /* the same handle on another channel is another link: ignored */
  put_frame(&o, 4, xfer, sizeof xfer);
  size_t attach_end = o.len;
  /* fed in every split */
  for (size_t cut = 0; cut <= attach_end; cut++) {
    memset(&w, 0, sizeof w);
    emu_wire_scan(&w, o.p, cut);
    emu_wire_scan(&w, o.p + cut, o.len - cut);
    CHECK(!w.broken);
    CHECK(emu_wire_claim(&w, "y") == NULL);
    emu_wlink_t *x = emu_wire_claim(&w, "x");
    CHECK(x != NULL);
    CHECK(emu_wire_claim(&w, "x") == NULL); /* claimed once */
    CHECK(emu_wire_format(x, (const unsigned char *)"zz", 2) == 0);
    CHECK(emu_wire_format(x, (const unsigned char *)"ab", 2) == BATCH);
    CHECK(emu_wire_format(x, (const unsigned char *)"ab", 2) == 0); /* taken */
    emu_wire_free(&w);
  }
  /* a first transfer without a tag (null): recorded with an empty tag */
  memset(&w, 0, sizeof w);
  emu_buf_t o2 = {0};
  put_frame(&o2, 3, attach, sizeof attach);
  static const unsigned char notag[] = {0x00, 0x53, 0x14, 0xc0, 0x0a, 0x04, 0x52, 0x07, 0x43, 0x40,
                                        0x70, 0x80, 0x01, 0x37, 0x00};
  put_frame(&o2, 3, notag, sizeof notag);
  emu_wire_scan(&w, o2.p, o2.len);
  emu_wlink_t *nt = emu_wire_claim(&w, "x");
  CHECK(nt && emu_wire_format(nt, NULL, 0) == BATCH);
  CHECK(emu_wire_claim(&w, NULL) == NULL);
  emu_wire_free(&w);
  buf_free(&o2);
  /* detach: the link stays while claimed, goes after */
  memset(&w, 0, sizeof w);
  static const unsigned char detach[] = {0x00, 0x53, 0x16, 0xc0, 0x04, 0x02, 0x52, 0x07, 0x41};
  put_frame(&o, 3, detach, sizeof detach);
  emu_wire_scan(&w, o.p, o.len);
  emu_wlink_t *x = emu_wire_claim(&w, "x");
  CHECK(x && !x->current);
  emu_wire_gc(&w);
  CHECK(w.links == x);
  emu_wire_unclaim(x);
  emu_wire_gc(&w);
  CHECK(w.links == NULL);
  /* a frame size no AMQP peer sends stops the scanner (Proton closes such a connection) */
  emu_wire_scan(&w, (const unsigned char *)"\xff\xff\xff\xff\x02\x00\x00\x00", 8);
  CHECK(w.broken);
  emu_wire_free(&w);
  buf_free(&o);
}

/* Random frames (valid sizes, random contents) must never crash or leak. */
static void test_scanner_random(void)
{
  uint64_t r = 88172645463325252ULL;
  unsigned char buf[4096];
  for (int iter = 0; iter < 3000; iter++) {
    emu_wire_t w;
    memset(&w, 0, sizeof w);
    for (int f = 0; f < 8; f++) {
      r ^= r << 13, r ^= r >> 7, r ^= r << 17;
      size_t n = 8 + r % 600;
      for (size_t i = 0; i < n; i++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        buf[i] = (unsigned char)r;
      }
      buf[0] = buf[1] = 0;
      buf[2] = (unsigned char)(n >> 8);
      buf[3] = (unsigned char)n;
      buf[4] = 2;
      buf[5] = 0;
      buf[8] = 0;
      buf[9] = (r & 1) ? 0x53 : 0x80;
      buf[10] = (unsigned char)(0x12 + (r >> 8) % 6);
      emu_wire_scan(&w, buf, n);
    }
    /* only a transfer the broker must refuse stops it (see the next test) */
    CHECK(!w.broken || w.violation);
    for (emu_wlink_t *x = w.links; x; x = x->next) emu_wire_format(x, buf, 8);
    emu_wire_gc(&w);
    emu_wire_free(&w);
  }
}

/* A delivery whose first transfer has no delivery-id (or one that is not a uint, or fields
 * that do not decode) is a violation: Proton 0.37 would abort the process on it
 * (tests/fuzz/regressions/emulator_amqp/transfer-without-delivery-id). With an id, no. */
static void test_transfer_without_delivery_id_is_a_violation(void)
{
  /* frame head (size, doff 2, AMQP, channel 0), transfer descriptor, list8 of 6 fields:
     handle 0, delivery-id, tag "t", format 0, settled false, more true */
  static const unsigned char with_null[] = {0, 0, 0, 24, 2, 0, 0, 0, 0x00, 0x53, 0x14, 0xc0, 12, 6,
                                            0x43, 0x40, 0xa0, 1, 't', 0x43, 0x42, 0x41, 0, 0, 0, 0};
  static const unsigned char with_id[] = {0, 0, 0, 25, 2, 0, 0, 0, 0x00, 0x53, 0x14, 0xc0, 13, 6,
                                          0x43, 0x52, 7, 0xa0, 1, 't', 0x43, 0x42, 0x41, 0, 0, 0, 0};
  static const unsigned char with_ulong_id[] = {0, 0, 0, 25, 2, 0, 0, 0, 0x00, 0x53, 0x14, 0xc0, 13, 6,
                                                0x43, 0x53, 7, 0xa0, 1, 't', 0x43, 0x42, 0x41, 0, 0, 0, 0};
  emu_wire_t w;
  memset(&w, 0, sizeof w);
  emu_wire_scan(&w, with_id, 24 + 1);
  CHECK(!w.violation && !w.broken);
  emu_wire_free(&w);
  memset(&w, 0, sizeof w);
  emu_wire_scan(&w, with_null, 24);
  CHECK(w.violation != NULL && w.broken);
  emu_wire_free(&w);
  memset(&w, 0, sizeof w);
  emu_wire_scan(&w, with_ulong_id, 25);
  CHECK(w.violation != NULL);
  emu_wire_free(&w);
}

/* Proton writes empty performatives (end, close) as list0; the emulator must not (§1.7). */
static void test_empty_performatives_go_out_as_list8(void)
{
  emu_broker_t *b = broker_with("q1", NULL);
  emu_buf_t seen = {0};
  harness_t h;
  h_open(&h, b);
  h.seen = &seen;
  CHECK(h_auth(&h, "q1") == 202);
  pn_session_t *extra = pn_session(h.client.connection);
  pn_session_open(extra);
  h_pump(&h);
  pn_session_close(extra);
  h_pump(&h);
  CHECK(pn_session_state(extra) & PN_REMOTE_CLOSED);
  pn_connection_close(h.client.connection);
  h_pump(&h);
  CHECK(pn_connection_state(h.client.connection) & PN_REMOTE_CLOSED);
  CHECK(!pn_condition_is_set(pn_transport_condition(h.client.transport))); /* Proton read them */
  int ends = 0, closes = 0, frames = 0;
  for (size_t off = 0; off + 8 <= seen.len;) {
    const unsigned char *f = seen.p + off;
    size_t size = memcmp(f, "AMQP", 4) == 0 ? 8 : h_be32(f);
    CHECK(size >= 8 && off + size <= seen.len);
    if (size < 8) break;
    if (size > 8 && f[5] == 0 && memcmp(f, "AMQP", 4) != 0) {
      const unsigned char *body = f + f[4] * 4;
      frames++;
      CHECK(body[0] == 0x00 && body[1] == 0x53);
      CHECK(body[3] == 0xc0 || body[3] == 0xd0);
      if (body[2] == 0x17) ends++;
      if (body[2] == 0x18) closes++;
    }
    off += size;
  }
  CHECK(frames > 5 && ends == 1 && closes == 1);
  h.seen = NULL;
  buf_free(&seen);
  h_close(&h);
  emu_broker_free(b);
}

int main(void)
{
  test_empty_performatives_go_out_as_list8();
  test_batch_format_splits_and_plain_body_stays_one();
  test_multi_frame_batch_and_one_byte_reads();
  test_two_links_in_one_read();
  test_scanner_direct();
  test_scanner_random();
  test_transfer_without_delivery_id_is_a_violation();
  if (g_failures) fprintf(stderr, "%d check(s) failed\n", g_failures);
  else printf("test_emu_wire: all passed\n");
  return g_failures ? 1 : 0;
}
