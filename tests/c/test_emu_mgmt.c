/*
 * test_emu_mgmt.c: $management requests and the exact AMQP types of their responses.
 *
 * Requests are built with Proton's message API the way uamqp sends them
 * (ulong message-id, reply-to = the node); responses are decoded with the
 * emulator's own codec so that the wire types are checked, not Proton's
 * interpretation: statusCode int, errorCondition symbol, correlation-id of
 * the request's type, arrays of long / timestamp, lists of maps, 204 empty.
 */
#include "test_emu_harness.h"

typedef struct resp {
  int status;                 /* statusCode */
  char cond[128];             /* errorCondition */
  emu_buf_t raw;              /* whole response message */
  amqp_val_t body;            /* amqp-value content */
  bool has_body;              /* present */
  uint8_t corr_code;          /* constructor of correlation-id */
} resp_t;

static pn_link_t *g_req;
static uint64_t g_id;

/* Send a request whose body map is filled by fill(); decode the response into r. */
static void request(harness_t *h, const char *op, void (*fill)(pn_data_t *, void *), void *arg, resp_t *r)
{
  pn_message_t *m = pn_message();
  pn_message_set_id(m, (pn_atom_t){.type = PN_ULONG, .u.as_ulong = ++g_id});
  pn_message_set_reply_to(m, "q1/$management");
  pn_data_t *ap = pn_message_properties(m);
  pn_data_put_map(ap);
  pn_data_enter(ap);
  pn_data_put_string(ap, pn_bytes(9, "operation"));
  pn_data_put_string(ap, pn_bytes(strlen(op), op));
  pn_data_exit(ap);
  pn_data_t *body = pn_message_body(m);
  pn_data_put_map(body);
  pn_data_enter(body);
  if (fill) fill(body, arg);
  pn_data_exit(body);
  char *buf;
  size_t n = h_encode(m, &buf);
  int before = h->nrx;
  h_send_bytes(h, g_req, buf, n);
  free(buf);
  pn_message_free(m);
  memset(r, 0, sizeof *r);
  r->status = -1;
  if (h->nrx <= before) return;
  rx_t *x = &h->rx[before];
  buf_put(&r->raw, x->data, x->len);
  emu_req_t q;
  CHECK(emu_req_parse(r->raw.p, r->raw.len, &q));
  amqp_val_t v;
  int64_t st;
  if (q.has_app && amqp_map_get(&q.app, "statusCode", &v) && v.code == AMQP_INT && amqp_get_i64(&v, &st)) r->status = (int)st;
  if (q.has_app && amqp_map_get(&q.app, "errorCondition", &v)) {
    CHECK(v.code == AMQP_SYM8 || v.code == AMQP_SYM32);
    snprintf(r->cond, sizeof r->cond, "%.*s", (int)v.size, (const char *)v.data);
  }
  r->body = q.body;
  r->has_body = q.has_body;
  /* correlation-id: properties field 5 */
  amqp_val_t props, f;
  long k = amqp_decode(r->raw.p, r->raw.len, &props);
  CHECK(k > 0 && props.desc == SEC_PROPERTIES);
  amqp_iter_t it;
  amqp_iter_init(&it, &props);
  for (int i = 0; amqp_iter_next(&it, &f); i++)
    if (i == 5) r->corr_code = f.code;
}

static void put_key(pn_data_t *d, const char *k) { pn_data_put_string(d, pn_bytes(strlen(k), k)); }

static void fill_peek(pn_data_t *d, void *arg)
{
  put_key(d, "from-sequence-number");
  pn_data_put_long(d, 1);
  put_key(d, "message-count");
  pn_data_put_int(d, *(int *)arg);
}

static void fill_seqs(pn_data_t *d, void *arg)
{
  int64_t *seqs = arg;
  put_key(d, "sequence-numbers");
  pn_data_put_array(d, false, PN_LONG);
  pn_data_enter(d);
  for (int i = 1; i <= seqs[0]; i++) pn_data_put_long(d, seqs[i]);
  pn_data_exit(d);
  put_key(d, "receiver-settle-mode");
  pn_data_put_uint(d, 1);
}

static void fill_tokens(pn_data_t *d, void *arg)
{
  put_key(d, "lock-tokens");
  pn_data_put_array(d, false, PN_UUID);
  pn_data_enter(d);
  pn_uuid_t u;
  memcpy(u.bytes, arg, 16);
  pn_data_put_uuid(d, u);
  pn_data_exit(d);
}

static void fill_add_rule(pn_data_t *d, void *arg)
{
  put_key(d, "rule-name");
  put_key(d, (const char *)arg);
  put_key(d, "rule-description");
  pn_data_put_map(d);
  pn_data_enter(d);
  put_key(d, "sql-filter");
  pn_data_put_map(d);
  pn_data_enter(d);
  put_key(d, "expression");
  put_key(d, "color = 'red'");
  pn_data_exit(d);
  pn_data_exit(d);
}

static void fill_rule_name(pn_data_t *d, void *arg)
{
  put_key(d, "rule-name");
  put_key(d, (const char *)arg);
}

int main(void)
{
  emu_broker_t *b = h_broker();
  emu_props_t p;
  emu_props_default(&p);
  emu_entity_t *q = emu_entity_add(b, ENT_QUEUE, "q1", NULL, &p);
  emu_entity_t *t = emu_entity_add(b, ENT_TOPIC, "t1", NULL, &p);
  emu_entity_add(b, ENT_SUBSCRIPTION, "t1/Subscriptions/s1", t, &p);
  harness_t h;
  h_open(&h, b);
  CHECK(h_auth(&h, "q1") == 202);
  pn_link_t *s = h_sender(&h, "s", "q1");
  g_req = h_sender(&h, "mgmt-s", "q1/$management");
  h_receiver(&h, "mgmt-r", "q1/$management", false, 100);
  resp_t r;
  int count = 10;
  request(&h, "com.microsoft:peek-message", fill_peek, &count, &r);
  CHECK(r.status == 204);
  CHECK(r.corr_code == AMQP_ULONG || r.corr_code == AMQP_SMALLULONG);
  buf_free(&r.raw);
  for (int i = 0; i < 3; i++) h_send_text(&h, s, "peek me", NULL);
  request(&h, "com.microsoft:peek-message", fill_peek, &count, &r);
  CHECK(r.status == 200);
  amqp_val_t v, item, bin;
  CHECK(amqp_map_get(&r.body, "messages", &v) && amqp_is_list(&v) && v.count == 3);
  amqp_iter_t it;
  amqp_iter_init(&it, &v);
  CHECK(amqp_iter_next(&it, &item) && amqp_is_map(&item) && amqp_map_get(&item, "message", &bin) && (bin.code == AMQP_VBIN8 || bin.code == AMQP_VBIN32));
  CHECK(q->counts.locked == 0);
  buf_free(&r.raw);
  /* renew-lock on a held lock: array of timestamp; on an unknown token: 410 lock lost */
  emu_msg_t *m = emu_take(b, q, NULL);
  emu_lock(b, m);
  request(&h, "com.microsoft:renew-lock", fill_tokens, m->token, &r);
  CHECK(r.status == 200);
  CHECK(amqp_map_get(&r.body, "expirations", &v) && amqp_is_array(&v) && v.elem_code == AMQP_TIMESTAMP && v.count == 1);
  buf_free(&r.raw);
  unsigned char bogus[16] = {1};
  request(&h, "com.microsoft:renew-lock", fill_tokens, bogus, &r);
  CHECK(r.status == 410 && !strcmp(r.cond, "com.microsoft:message-lock-lost"));
  buf_free(&r.raw);
  /* defer, then receive-by-sequence-number: lock-token uuid + binary message */
  emu_defer(b, m);
  int64_t seqs[2] = {1, m->seq};
  request(&h, "com.microsoft:receive-by-sequence-number", fill_seqs, seqs, &r);
  CHECK(r.status == 200);
  CHECK(amqp_map_get(&r.body, "messages", &v) && amqp_is_list(&v) && v.count == 1);
  amqp_iter_init(&it, &v);
  CHECK(amqp_iter_next(&it, &item) && amqp_map_get(&item, "lock-token", &bin) && bin.code == AMQP_UUID);
  buf_free(&r.raw);
  int64_t missing[2] = {1, 999};
  request(&h, "com.microsoft:receive-by-sequence-number", fill_seqs, missing, &r);
  CHECK(r.status == 404 && !strcmp(r.cond, "com.microsoft:message-not-found"));
  buf_free(&r.raw);
  /* unknown operation, malformed map */
  request(&h, "com.microsoft:frobnicate", NULL, NULL, &r);
  CHECK(r.status == 501 && !strcmp(r.cond, "amqp:not-implemented"));
  buf_free(&r.raw);
  request(&h, "com.microsoft:peek-message", NULL, NULL, &r);
  CHECK(r.status == 400 && !strcmp(r.cond, "com.microsoft:argument-error"));
  buf_free(&r.raw);
  h_close(&h);
  /* rules on a subscription's management node */
  harness_t h2;
  h_open(&h2, b);
  CHECK(h_auth(&h2, "t1") == 202);
  g_req = h_sender(&h2, "mgmt-s", "t1/Subscriptions/s1/$management");
  pn_link_t *rr = h_receiver(&h2, "mgmt-r", "t1/Subscriptions/s1/$management", false, 100);
  (void)rr;
  request(&h2, "com.microsoft:add-rule", fill_add_rule, "red", &r);
  CHECK(r.status == 200);
  buf_free(&r.raw);
  request(&h2, "com.microsoft:add-rule", fill_add_rule, "red", &r);
  CHECK(r.status == 409 && !strcmp(r.cond, "com.microsoft:entity-already-exists"));
  buf_free(&r.raw);
  request(&h2, "com.microsoft:enumerate-rules", NULL, NULL, &r);
  CHECK(r.status == 200);
  CHECK(amqp_map_get(&r.body, "rules", &v) && v.count == 1);
  amqp_iter_init(&it, &v);
  amqp_val_t desc;
  CHECK(amqp_iter_next(&it, &item) && amqp_map_get(&item, "rule-description", &desc));
  CHECK(desc.described && desc.desc == 0x0000013700000004ULL && desc.count == 4);
  amqp_iter_init(&it, &desc);
  amqp_val_t filter;
  CHECK(amqp_iter_next(&it, &filter) && filter.described && filter.desc == 0x0000001370000006ULL);
  buf_free(&r.raw);
  request(&h2, "com.microsoft:remove-rule", fill_rule_name, "red", &r);
  CHECK(r.status == 200);
  buf_free(&r.raw);
  request(&h2, "com.microsoft:remove-rule", fill_rule_name, "red", &r);
  CHECK(r.status == 404 && !strcmp(r.cond, "amqp:not-found"));
  buf_free(&r.raw);
  h_close(&h2);
  emu_broker_free(b);
  if (g_failures) fprintf(stderr, "%d check(s) failed\n", g_failures);
  else printf("test_emu_mgmt: all passed\n");
  return g_failures ? 1 : 0;
}
