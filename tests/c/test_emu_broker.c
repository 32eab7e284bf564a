/*
 * test_emu_broker.c: the emulator's AMQP behaviour, in memory.
 *
 * Each test wires a Proton client driver to an emulator connection (see
 * test_emu_harness.h) and checks what crosses the wire: CBS put-token status,
 * refusals with the right condition, multi-frame transfers, peek-lock
 * delivery tags and annotations, the settle-mode second reply, RAD, drain,
 * lock expiry under the emulator clock, oversize rejection, batches, and
 * that garbage input closes only the offending connection.
 */
#include "test_emu_harness.h"

static emu_broker_t *broker_with_queue(const char *name, int max_delivery)
{
  emu_broker_t *b = h_broker();
  emu_props_t p;
  emu_props_default(&p);
  p.lock_ms = 30000;
  p.max_delivery = max_delivery;
  emu_entity_add(b, ENT_QUEUE, name, NULL, &p);
  return b;
}

/* Queue q1 and a client connected to it (with a token for q1 when auth);
 * h_stop() ends both. */
static emu_broker_t *h_start(harness_t *h, int auth)
{
  emu_broker_t *b = broker_with_queue("q1", 10);
  h_open(h, b);
  if (auth)
    CHECK(h_auth(h, "q1") == 202);
  return b;
}

static void h_stop(harness_t *h)
{
  emu_broker_t *b = h->b;
  h_close(h);
  emu_broker_free(b);
}

static void test_cbs_and_refusals(void)
{
  harness_t h;
  h_start(&h, 0);
  pn_link_t *s = h_sender(&h, "early", "q1");
  CHECK(pn_link_state(s) & PN_REMOTE_CLOSED);
  CHECK(!strcmp(pn_condition_get_name(pn_link_remote_condition(s)), "amqp:unauthorized-access"));
  char tok[1024];
  h_sas(tok, sizeof tok, "sb://localhost/q1", "RootManageSharedAccessKey", "WRONG", 3600);
  CHECK(h_put_token(&h, "sb://localhost/q1", tok) == 401);
  h_sas(tok, sizeof tok, "sb://localhost/q1", "RootManageSharedAccessKey", "SAS_KEY_VALUE", -10);
  CHECK(h_put_token(&h, "sb://localhost/q1", tok) == 401);
  h_sas(tok, sizeof tok, "sb://localhost/q1", "RootManageSharedAccessKey", "SAS_KEY_VALUE", 3600);
  CHECK(h_put_token(&h, "sb://localhost/other", tok) == 401); /* audience outside sr */
  CHECK(h_put_token(&h, "amqps://127.0.0.1:5671/Q1", tok) == 202); /* host, port, case ignored */
  s = h_sender(&h, "ok", "amqps://localhost/q1");
  CHECK(pn_link_state(s) & PN_REMOTE_ACTIVE);
  CHECK(!(pn_link_state(s) & PN_REMOTE_CLOSED));
  CHECK(pn_link_remote_max_message_size(s) == 262144);
  CHECK(pn_link_credit(s) > 100);
  pn_link_t *nf = h_sender(&h, "nf", "missing");
  CHECK(pn_link_state(nf) & PN_REMOTE_CLOSED);
  CHECK(!strcmp(pn_condition_get_name(pn_link_remote_condition(nf)), "amqp:not-found"));
  CHECK(strstr(pn_condition_get_description(pn_link_remote_condition(nf)), "The messaging entity 'missing' could not be found") != NULL);
  CHECK(pn_terminus_get_type(pn_link_remote_target(nf)) == PN_UNSPECIFIED);
  h_stop(&h);
}

static void test_peek_lock_round_trip(void)
{
  harness_t h;
  emu_broker_t *b = h_start(&h, 1);
  pn_link_t *s = h_sender(&h, "s", "q1");
  /* a 200 KB body crosses several 64 KB frames both ways */
  char *big = malloc(200001);
  memset(big, 'z', 200000);
  big[200000] = 0;
  pn_delivery_t *d = h_send_text(&h, s, big, "id-big");
  CHECK(pn_delivery_remote_state(d) == PN_ACCEPTED);
  CHECK(pn_delivery_settled(d));
  h_send_text(&h, s, "second", NULL);
  CHECK(b->entities->counts.active == 2 || emu_entity_find(b, "q1")->counts.active == 2);
  pn_link_t *r = h_receiver(&h, "r", "q1", false, 1);
  CHECK(h.nrx >= 2); /* 2 CBS replies + 1 message */
  rx_t *m = &h.rx[h.nrx - 1];
  char body[200010];
  h_body(m, body, sizeof body);
  CHECK(strlen(body) == 200000);
  pn_delivery_tag_t tag = pn_delivery_tag(m->d);
  CHECK(tag.size == 16);
  emu_entity_t *q = emu_entity_find(b, "q1");
  CHECK(q->counts.locked == 1);
  /* the tag is the lock token in .NET byte order */
  unsigned char tok[16];
  guid_swap(tok, (const unsigned char *)tag.start);
  CHECK(emu_find_token(b, tok) != NULL);
  pn_message_t *pm = pn_message();
  CHECK(pn_message_decode(pm, (char *)m->data, m->len) == 0);
  pn_data_t *ann = pn_message_annotations(pm);
  pn_data_rewind(ann);
  CHECK(pn_data_next(ann) && pn_data_type(ann) == PN_MAP);
  size_t cnt = pn_data_get_map(ann);
  pn_data_enter(ann);
  int found = 0;
  for (size_t i = 0; i < cnt / 2; i++) {
    pn_data_next(ann);
    pn_bytes_t k = pn_data_get_symbol(ann);
    pn_data_next(ann);
    if (k.size == 21 && !memcmp(k.start, "x-opt-sequence-number", 21)) found += pn_data_type(ann) == PN_LONG && pn_data_get_long(ann) == 1;
    if (k.size == 19 && !memcmp(k.start, "x-opt-enqueued-time", 19)) found += pn_data_type(ann) == PN_TIMESTAMP;
    if (k.size == 18 && !memcmp(k.start, "x-opt-locked-until", 18)) found += pn_data_type(ann) == PN_TIMESTAMP;
  }
  CHECK(found == 3);
  pn_message_free(pm);
  /* settle-mode second: the client's unsettled accept gets a settled accept back */
  pn_delivery_update(m->d, PN_ACCEPTED);
  h_pump(&h);
  CHECK(pn_delivery_settled(m->d));
  CHECK(pn_delivery_remote_state(m->d) == PN_ACCEPTED);
  pn_delivery_settle(m->d);
  CHECK(q->counts.total == 1);
  /* abandon: delivery count +1 on redelivery */
  pn_link_flow(r, 1);
  h_pump(&h);
  rx_t *m2 = &h.rx[h.nrx - 1];
  h_body(m2, body, sizeof body);
  CHECK(!strcmp(body, "second"));
  pn_delivery_update(m2->d, PN_MODIFIED);
  pn_disposition_set_failed(pn_delivery_local(m2->d), true);
  h_pump(&h);
  pn_delivery_settle(m2->d);
  pn_link_flow(r, 1);
  h_pump(&h);
  pn_message_t *pm3 = pn_message();
  pn_message_decode(pm3, (char *)h.rx[h.nrx - 1].data, h.rx[h.nrx - 1].len);
  CHECK(pn_message_get_delivery_count(pm3) == 1);
  pn_message_free(pm3);
  /* lock expiry under the emulator clock: redelivered with count 2, old settle -> lock lost */
  rx_t *m3 = &h.rx[h.nrx - 1];
  b->skew_ms += 31000;
  emu_tick(b);
  CHECK(q->counts.locked == 0);
  pn_delivery_update(m3->d, PN_ACCEPTED);
  h_pump(&h);
  CHECK(pn_delivery_remote_state(m3->d) == PN_REJECTED);
  CHECK(!strcmp(pn_condition_get_name(pn_disposition_condition(pn_delivery_remote(m3->d))), "com.microsoft:message-lock-lost"));
  CHECK(q->counts.total == 1);
  free(big);
  h_stop(&h);
}

static void test_rad_and_drain(void)
{
  harness_t h;
  emu_broker_t *b = h_start(&h, 1);
  pn_link_t *s = h_sender(&h, "s", "q1");
  for (int i = 0; i < 5; i++) h_send_text(&h, s, "m", NULL);
  int before = h.nrx;
  pn_link_t *r = h_receiver(&h, "r", "q1", true, 3);
  CHECK(h.nrx - before == 3);
  CHECK(h.rx[h.nrx - 1].settled);
  emu_entity_t *q = emu_entity_find(b, "q1");
  CHECK(q->counts.total == 2);
  /* drain with 10 credit: 2 messages, then credit returned */
  pn_link_drain(r, 10);
  h_pump(&h);
  CHECK(h.nrx - before == 5);
  CHECK(pn_link_credit(r) == 0);
  CHECK(!pn_link_draining(r));
  CHECK(q->counts.total == 0);
  h_stop(&h);
}

static void test_oversize_and_batch(void)
{
  harness_t h;
  emu_broker_t *b = h_start(&h, 1);
  pn_link_t *s = h_sender(&h, "s", "q1");
  char *big = malloc(300001);
  memset(big, 'x', 300000);
  big[300000] = 0;
  pn_delivery_t *d = h_send_text(&h, s, big, NULL);
  CHECK(pn_delivery_remote_state(d) == PN_REJECTED);
  CHECK(!strcmp(pn_condition_get_name(pn_disposition_condition(pn_delivery_remote(d))), "amqp:link:message-size-exceeded"));
  free(big);
  /* batch: an envelope whose data sections are complete messages */
  emu_buf_t env = {0};
  for (int i = 0; i < 3; i++) {
    pn_message_t *m = pn_message();
    char t[8];
    snprintf(t, sizeof t, "b%d", i);
    pn_data_put_binary(pn_message_body(m), pn_bytes(2, t));
    char *inner;
    size_t n = h_encode(m, &inner);
    enc_descriptor(&env, SEC_DATA);
    enc_bin(&env, inner, n);
    free(inner);
    pn_message_free(m);
  }
  h.next_format = 0x80013700; /* the batch message-format, protocol.md §6.4 */
  d = h_send_bytes(&h, s, (char *)env.p, env.len);
  CHECK(pn_delivery_remote_state(d) == PN_ACCEPTED);
  emu_entity_t *q = emu_entity_find(b, "q1");
  CHECK(q->counts.active == 3);
  CHECK(emu_find_seq(q, 1) && emu_find_seq(q, 3));
  buf_free(&env);
  /* garbage as a message: rejected with decode-error, link stays usable */
  d = h_send_bytes(&h, s, "\x00\x53\x75\xff", 4);
  CHECK(pn_delivery_remote_state(d) == PN_REJECTED);
  h_stop(&h);
}

static void test_garbage_closes_only_that_connection(void)
{
  emu_broker_t *b = broker_with_queue("q1", 10);
  harness_t good;
  h_open(&good, b);
  CHECK(h_auth(&good, "q1") == 202);
  emu_conn_t *bad = emu_conn_new(b, NULL);
  const char junk[] = "AMQP\x03\x01\x00\x00garbage-garbage-garbage-garbage";
  pn_rwbytes_t in = pn_connection_driver_read_buffer(&bad->driver);
  memcpy(in.start, junk, sizeof junk);
  pn_connection_driver_read_done(&bad->driver, sizeof junk);
  emu_conn_process(bad);
  pn_bytes_t out;
  while ((out = pn_connection_driver_write_buffer(&bad->driver)).size) pn_connection_driver_write_done(&bad->driver, out.size);
  emu_conn_process(bad);
  CHECK(pn_connection_driver_finished(&bad->driver));
  emu_conn_free(bad);
  pn_link_t *s = h_sender(&good, "s", "q1");
  pn_delivery_t *d = h_send_text(&good, s, "still fine", NULL);
  CHECK(pn_delivery_remote_state(d) == PN_ACCEPTED);
  h_close(&good);
  emu_broker_free(b);
}

static void test_cbs_timeout_closes_connection(void)
{
  emu_broker_t *b = broker_with_queue("q1", 10);
  b->opt.cbs_timeout_ms = 1;
  harness_t h;
  h_open(&h, b);
  struct timespec ts = {0, 3000000};
  nanosleep(&ts, NULL); /* the CBS deadline is on the real clock, 1 ms here */
  h_pump(&h);
  CHECK(pn_connection_state(h.client.connection) & PN_REMOTE_CLOSED);
  CHECK(!strcmp(pn_condition_get_name(pn_connection_remote_condition(h.client.connection)), "amqp:unauthorized-access"));
  h_stop(&h);
}

static pn_link_t *session_receiver(harness_t *h, const char *name, const char *addr, const char *sid)
{
  pn_link_t *l = pn_receiver(h->ssn, name);
  pn_terminus_set_address(pn_link_source(l), addr);
  pn_data_t *f = pn_terminus_filter(pn_link_source(l));
  pn_data_put_map(f);
  pn_data_enter(f);
  pn_data_put_symbol(f, pn_bytes(28, "com.microsoft:session-filter"));
  if (sid) pn_data_put_string(f, pn_bytes(strlen(sid), sid));
  else pn_data_put_null(f);
  pn_data_exit(f);
  pn_link_set_rcv_settle_mode(l, PN_RCV_SECOND);
  pn_link_open(l);
  pn_link_flow(l, 10);
  h_pump(h);
  return l;
}

/* Go's form: the filter value is described (0x0000013700000000C) and must be echoed so. */
static pn_link_t *described_session_receiver(harness_t *h, const char *name, const char *addr, const char *sid)
{
  pn_link_t *l = pn_receiver(h->ssn, name);
  pn_terminus_set_address(pn_link_source(l), addr);
  pn_data_t *f = pn_terminus_filter(pn_link_source(l));
  pn_data_put_map(f);
  pn_data_enter(f);
  pn_data_put_symbol(f, pn_bytes(28, "com.microsoft:session-filter"));
  pn_data_put_described(f);
  pn_data_enter(f);
  pn_data_put_ulong(f, 0x000001370000000CULL);
  pn_data_put_string(f, pn_bytes(strlen(sid), sid));
  pn_data_exit(f);
  pn_data_exit(f);
  pn_link_set_rcv_settle_mode(l, PN_RCV_SECOND);
  pn_link_open(l);
  pn_link_flow(l, 10);
  h_pump(h);
  return l;
}

static void send_in_session(harness_t *h, pn_link_t *s, const char *sid, const char *body)
{
  pn_message_t *m = pn_message();
  pn_message_set_group_id(m, sid);
  pn_data_put_binary(pn_message_body(m), pn_bytes(strlen(body), body));
  char *buf;
  size_t n = h_encode(m, &buf);
  pn_delivery_t *d = h_send_bytes(h, s, buf, n);
  CHECK(pn_delivery_remote_state(d) == PN_ACCEPTED);
  free(buf);
  pn_message_free(m);
}

static void test_sessions(void)
{
  emu_broker_t *b = h_broker();
  emu_props_t p;
  emu_props_default(&p);
  p.requires_session = true;
  p.lock_ms = 30000;
  emu_entity_t *q = emu_entity_add(b, ENT_QUEUE, "sq", NULL, &p);
  harness_t h;
  h_open(&h, b);
  CHECK(h_auth(&h, "sq") == 202);
  pn_link_t *s = h_sender(&h, "s", "sq");
  /* next-available waits while no session has messages, then takes the first one */
  pn_link_t *r = session_receiver(&h, "r1", "sq", NULL);
  CHECK(!(pn_link_state(r) & PN_REMOTE_ACTIVE));
  int before = h.nrx;
  send_in_session(&h, s, "S1", "hello");
  CHECK(pn_link_state(r) & PN_REMOTE_ACTIVE);
  pn_data_t *f = pn_terminus_filter(pn_link_remote_source(r));
  pn_data_rewind(f);
  CHECK(pn_data_next(f) && pn_data_get_map(f) == 2);
  pn_data_enter(f);
  pn_data_next(f);
  pn_data_next(f);
  CHECK(pn_data_type(f) == PN_STRING && !strncmp(pn_data_get_string(f).start, "S1", 2));
  pn_data_exit(f);
  CHECK(h.nrx == before + 1);
  /* the same session cannot be locked twice */
  pn_link_t *r2 = session_receiver(&h, "r2", "sq", "S1");
  CHECK(pn_link_state(r2) & PN_REMOTE_CLOSED);
  CHECK(!strcmp(pn_condition_get_name(pn_link_remote_condition(r2)), "com.microsoft:session-cannot-be-locked"));
  CHECK(pn_terminus_get_type(pn_link_remote_source(r2)) == PN_UNSPECIFIED);
  /* a plain receiver is refused by a sessionful entity */
  pn_link_t *plain = h_receiver(&h, "plain", "sq", false, 1);
  CHECK(!strcmp(pn_condition_get_name(pn_link_remote_condition(plain)), "amqp:not-allowed"));
  /* no session free: times out on the emulator clock */
  pn_link_t *r3 = session_receiver(&h, "r3", "sq", NULL);
  CHECK(!(pn_link_state(r3) & PN_REMOTE_ACTIVE));
  b->skew_ms += 16000;
  emu_tick(b);
  h_pump(&h);
  CHECK(pn_link_state(r3) & PN_REMOTE_CLOSED);
  CHECK(!strcmp(pn_condition_get_name(pn_link_remote_condition(r3)), "com.microsoft:timeout"));
  /* the session lock lapses: the holder is detached with session-lock-lost */
  b->skew_ms += 31000;
  emu_tick(b);
  h_pump(&h);
  CHECK(pn_link_state(r) & PN_REMOTE_CLOSED);
  CHECK(!strcmp(pn_condition_get_name(pn_link_remote_condition(r)), "com.microsoft:session-lock-lost"));
  CHECK(q->counts.locked == 0 && q->counts.active == 1);
  CHECK(q->head && q->head->delivery_count == 1);
  /* described filter (Go): echoed described, with the locked-until property as .NET ticks */
  pn_link_t *g = described_session_receiver(&h, "go", "sq", "S1");
  CHECK(pn_link_state(g) & PN_REMOTE_ACTIVE);
  pn_data_t *gf = pn_terminus_filter(pn_link_remote_source(g));
  pn_data_rewind(gf);
  CHECK(pn_data_next(gf) && pn_data_type(gf) == PN_MAP);
  pn_data_enter(gf);
  pn_data_next(gf);
  pn_data_next(gf);
  CHECK(pn_data_type(gf) == PN_DESCRIBED);
  pn_data_enter(gf);
  pn_data_next(gf);
  CHECK(pn_data_get_ulong(gf) == 0x000001370000000CULL);
  pn_data_next(gf);
  CHECK(pn_data_type(gf) == PN_STRING && !strncmp(pn_data_get_string(gf).start, "S1", 2));
  pn_data_exit(gf);
  pn_data_exit(gf);
  pn_data_t *gp = pn_link_remote_properties(g);
  pn_data_rewind(gp);
  CHECK(gp && pn_data_next(gp) && pn_data_get_map(gp) == 2);
  pn_data_enter(gp);
  pn_data_next(gp);
  pn_data_next(gp);
  CHECK(pn_data_type(gp) == PN_LONG && pn_data_get_long(gp) > 621355968000000000LL);
  pn_data_exit(gp);
  h_stop(&h);
}

/* Regression: settling the current incoming delivery advances the link; advancing again
 * skipped every other transfer when several arrived in one read. */
static void test_many_transfers_in_one_read(void)
{
  harness_t h;
  emu_broker_t *b = h_start(&h, 1);
  pn_link_t *s = h_sender(&h, "s", "q1");
  pn_message_t *m = pn_message();
  pn_data_put_binary(pn_message_body(m), pn_bytes(3, "abc"));
  char *buf;
  size_t n = h_encode(m, &buf);
  pn_delivery_t *d[50];
  for (int i = 0; i < 50; i++) {
    uint64_t tag = 1000 + (uint64_t)i;
    d[i] = pn_delivery(s, pn_dtag((char *)&tag, sizeof tag));
    pn_link_send(s, buf, n);
    pn_link_advance(s);
  }
  h_pump(&h);
  int accepted = 0;
  for (int i = 0; i < 50; i++) accepted += pn_delivery_remote_state(d[i]) == PN_ACCEPTED;
  CHECK(accepted == 50);
  CHECK(emu_entity_find(b, "q1")->counts.active == 50);
  free(buf);
  pn_message_free(m);
  h_stop(&h);
}

static void test_token_expiry_detaches_links(void)
{
  harness_t h;
  h_start(&h, 1);
  pn_link_t *s = h_sender(&h, "s", "q1");
  CHECK(!(pn_link_state(s) & PN_REMOTE_CLOSED));
  /* age the claim instead of waiting: expiry follows the real clock */
  CHECK(h.server->tokens != NULL);
  h.server->tokens->expires_ms = emu_utc_ms() - 1;
  h.server->token_check_ms = h.server->tokens->expires_ms;
  h_pump(&h);
  CHECK(pn_link_state(s) & PN_REMOTE_CLOSED);
  CHECK(!strcmp(pn_condition_get_name(pn_link_remote_condition(s)), "amqp:unauthorized-access"));
  CHECK(h.server->tokens == NULL);
  h_stop(&h);
}

static void test_settlement_faults(void)
{
  harness_t h;
  emu_broker_t *b = h_start(&h, 1);
  pn_link_t *s = h_sender(&h, "s", "q1");
  h_send_text(&h, s, "one", NULL);
  h_send_text(&h, s, "two", NULL);
  pn_link_t *r = h_receiver(&h, "r", "q1", false, 1);
  /* fail_next settle: the outcome is answered rejected with the injected condition */
  snprintf(b->faults.fail_op, sizeof b->faults.fail_op, "settle");
  snprintf(b->faults.fail_cond, sizeof b->faults.fail_cond, "com.microsoft:server-busy");
  b->faults.fail_next = 1;
  rx_t *m = &h.rx[h.nrx - 1];
  pn_delivery_update(m->d, PN_ACCEPTED);
  h_pump(&h);
  CHECK(pn_delivery_remote_state(m->d) == PN_REJECTED);
  CHECK(!strcmp(pn_condition_get_name(pn_disposition_condition(pn_delivery_remote(m->d))), "com.microsoft:server-busy"));
  CHECK(emu_entity_find(b, "q1")->counts.locked == 1); /* the message kept its lock */
  pn_delivery_settle(m->d);
  /* delay_dispositions_ms: the settled reply only comes after the delay (real clock) */
  b->faults.delay_disp_ms = 2;
  pn_link_flow(r, 1);
  h_pump(&h);
  rx_t *m2 = &h.rx[h.nrx - 1];
  pn_delivery_update(m2->d, PN_ACCEPTED);
  h_pump(&h);
  CHECK(!pn_delivery_settled(m2->d));
  struct timespec ts = {0, 5000000};
  nanosleep(&ts, NULL);
  h_pump(&h);
  CHECK(pn_delivery_settled(m2->d) && pn_delivery_remote_state(m2->d) == PN_ACCEPTED);
  /* the lock kept by the failed settlement expires cleanly */
  b->skew_ms += 31000;
  emu_tick(b);
  h_pump(&h);
  CHECK(emu_entity_find(b, "q1")->counts.locked == 0);
  h_stop(&h);
}

static void test_jwt_test_mode(void)
{
  harness_t h;
  emu_broker_t *b = h_start(&h, 0);
  CHECK(h_put_token_typed(&h, "sb://localhost/q1", "eyJhbGciOi.x.y", "jwt") == 401);
  b->opt.allow_jwt = true;
  CHECK(h_put_token_typed(&h, "sb://localhost/q1", "eyJhbGciOi.x.y", "jwt") == 202);
  pn_link_t *s = h_sender(&h, "s", "q1");
  CHECK(!(pn_link_state(s) & PN_REMOTE_CLOSED));
  h_stop(&h);
}

int main(void)
{
  test_jwt_test_mode();
  test_settlement_faults();
  test_token_expiry_detaches_links();
  test_many_transfers_in_one_read();
  test_sessions();
  test_cbs_and_refusals();
  test_peek_lock_round_trip();
  test_rad_and_drain();
  test_oversize_and_batch();
  test_garbage_closes_only_that_connection();
  test_cbs_timeout_closes_connection();
  if (g_failures) fprintf(stderr, "%d check(s) failed\n", g_failures);
  else printf("test_emu_broker: all passed\n");
  return g_failures ? 1 : 0;
}
