/*
 * mgmt.c: request/response plumbing and the $management operations (§4, §8).
 *
 * First the shared parts: decoding a request message (message-id of any
 * type, reply-to, application properties, amqp-value body) and encoding a
 * response (correlation-id = the request's message-id bytes verbatim, status
 * in the spelling of the node: status-code/status-description on $cbs,
 * statusCode/statusDescription/errorCondition on $management) routed to the
 * client's receiving link. Then one function per operation, each reading its
 * map with the codec and answering with the exact AMQP types of §8 (arrays of
 * long/timestamp/uuid, lists of maps, binary messages, 204 when empty).
 */
#include "emu.h"

#include <proton/link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------- plumbing */

bool emu_req_parse(const unsigned char *p, size_t n, emu_req_t *r)
{
  memset(r, 0, sizeof *r);
  while (n > 0) {
    amqp_val_t v;
    long k = amqp_decode(p, n, &v);
    if (k < 0 || !v.described) return false;
    if (v.desc == SEC_PROPERTIES && amqp_is_list(&v)) {
      amqp_iter_t it;
      amqp_val_t f;
      amqp_iter_init(&it, &v);
      for (int i = 0; amqp_iter_next(&it, &f); i++) {
        if (i == 0 && !amqp_is_null(&f)) {
          r->msg_id = f;
          r->has_id = true;
        }
        const char *s;
        size_t sl;
        if (i == 4 && amqp_get_str(&f, &s, &sl) && sl < sizeof r->reply_to) {
          memcpy(r->reply_to, s, sl);
          r->reply_to[sl] = 0;
        }
      }
    } else if (v.desc == SEC_APP_PROPS && amqp_is_map(&v)) {
      r->app = v;
      r->has_app = true;
    } else if (v.desc == SEC_VALUE) {
      /* the content follows the descriptor: re-decode it without the descriptor */
      size_t dl = v.total - (size_t)(v.data - v.start);
      (void)dl;
      const unsigned char *q = v.start + 1;
      amqp_val_t d;
      long dn = amqp_decode(q, v.total - 1, &d); /* descriptor */
      if (dn < 0 || amqp_decode(q + dn, v.total - 1 - (size_t)dn, &r->body) < 0) return false;
      r->has_body = true;
    }
    p += k;
    n -= (size_t)k;
  }
  return true;
}

bool emu_req_app_str(const emu_req_t *r, const char *key, char *out, size_t n)
{
  amqp_val_t v;
  const char *s;
  size_t sl;
  if (!r->has_app || !amqp_map_get(&r->app, key, &v) || !amqp_get_str(&v, &s, &sl) || sl >= n) return false;
  memcpy(out, s, sl);
  out[sl] = 0;
  return true;
}

void emu_send_response(emu_link_t *req, const emu_req_t *r, bool cbs, int status, const char *desc,
                       const char *cond, const emu_buf_t *body)
{
  emu_conn_t *c = req->conn;
  emu_link_t *out = emu_reply_link(c, r->reply_to[0] ? r->reply_to : NULL, req->node);
  if (!out) {
    emu_log(c->broker, 1, "no reply link for a request on %s", req->node);
    return;
  }
  emu_buf_t m = {0};
  enc_descriptor(&m, SEC_PROPERTIES);
  size_t lm = enc_list_begin(&m);
  for (int i = 0; i < 5; i++) enc_null(&m);
  if (r->has_id) buf_put(&m, r->msg_id.start, r->msg_id.total);
  else enc_null(&m);
  enc_compound_end(&m, lm, 6);
  enc_descriptor(&m, SEC_APP_PROPS);
  size_t am = enc_map_begin(&m);
  uint32_t cnt = 4;
  enc_str(&m, cbs ? "status-code" : "statusCode");
  enc_int(&m, status);
  enc_str(&m, cbs ? "status-description" : "statusDescription");
  enc_str(&m, desc ? desc : "");
  if (cond && !cbs) {
    enc_str(&m, "errorCondition");
    enc_sym(&m, cond);
    cnt += 2;
  }
  enc_compound_end(&m, am, cnt);
  enc_descriptor(&m, SEC_VALUE);
  if (body && body->len) buf_put(&m, body->p, body->len);
  else if (cbs) enc_null(&m);
  else enc_compound_end(&m, enc_map_begin(&m), 0);
  bool settled = pn_link_snd_settle_mode(out->pn) == PN_SND_SETTLED;
  emu_link_send_message(out, m.p, m.len, settled);
  buf_free(&m);
}

/* ---------------------------------------------------------------- dispatcher */

typedef struct mgmt_ctx {
  emu_link_t *l;        /* request link */
  emu_broker_t *b;      /* broker */
  emu_entity_t *e;      /* entity of the node */
  const emu_req_t *r;   /* request */
  amqp_val_t map;       /* request body map */
  bool has_map;         /* the body is a map */
} mgmt_ctx_t;

#define MAX_ITEMS 4096

static void reply(mgmt_ctx_t *x, int status, const char *desc, const char *cond, const emu_buf_t *body)
{
  emu_send_response(x->l, x->r, false, status, desc, cond, body);
}

static bool get_key(mgmt_ctx_t *x, const char *key, amqp_val_t *v)
{
  return x->has_map && amqp_map_get(&x->map, key, v);
}

static bool get_i64(mgmt_ctx_t *x, const char *key, int64_t *out)
{
  amqp_val_t v;
  return get_key(x, key, &v) && amqp_get_i64(&v, out);
}

static bool get_str(mgmt_ctx_t *x, const char *key, char *out, size_t n)
{
  amqp_val_t v;
  const char *s;
  size_t sl;
  if (!get_key(x, key, &v) || !amqp_get_str(&v, &s, &sl) || sl >= n) return false;
  memcpy(out, s, sl);
  out[sl] = 0;
  return true;
}

/* Read an array (or list) of longs; returns the count or -1. */
static int get_longs(mgmt_ctx_t *x, const char *key, int64_t *out, int max)
{
  amqp_val_t v, it;
  if (!get_key(x, key, &v) || !(amqp_is_array(&v) || amqp_is_list(&v))) return -1;
  amqp_iter_t i;
  amqp_iter_init(&i, &v);
  int n = 0;
  while (n < max && amqp_iter_next(&i, &it))
    if (!amqp_get_i64(&it, &out[n++])) return -1;
  return n;
}

static int get_uuids(mgmt_ctx_t *x, const char *key, unsigned char (*out)[16], int max)
{
  amqp_val_t v, it;
  if (!get_key(x, key, &v) || !(amqp_is_array(&v) || amqp_is_list(&v))) return -1;
  amqp_iter_t i;
  amqp_iter_init(&i, &v);
  int n = 0;
  while (n < max && amqp_iter_next(&i, &it))
    if (!amqp_get_uuid(&it, out[n++])) return -1;
  return n;
}

static void bad_arg(mgmt_ctx_t *x, const char *what)
{
  char d[256];
  snprintf(d, sizeof d, "The request is missing or has a malformed '%s'.", what);
  reply(x, 400, d, "com.microsoft:argument-error", NULL);
}

static void lock_lost(mgmt_ctx_t *x)
{
  reply(x, 410, "The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue.",
        "com.microsoft:message-lock-lost", NULL);
}

static void session_lock_lost(mgmt_ctx_t *x)
{
  reply(x, 410, "The session lock has expired on the MessageSession. Accept a new MessageSession.",
        "com.microsoft:session-lock-lost", NULL);
}

/* A single-key map body: { key: <encoded by the caller> }. Returns the mark. */
static size_t body_begin(emu_buf_t *b, const char *key)
{
  size_t mark = enc_map_begin(b);
  enc_str(b, key);
  return mark;
}

/* ---------------------------------------------------------------- messages */

static void op_renew_lock(mgmt_ctx_t *x)
{
  static unsigned char tok[MAX_ITEMS][16];
  int n = get_uuids(x, "lock-tokens", tok, MAX_ITEMS);
  if (n < 0) return bad_arg(x, "lock-tokens");
  emu_buf_t b = {0};
  size_t mark = body_begin(&b, "expirations");
  size_t am = enc_array_begin(&b, AMQP_TIMESTAMP);
  for (int i = 0; i < n; i++) {
    emu_msg_t *m = emu_find_token(x->b, tok[i]);
    if (!m) {
      buf_free(&b);
      return lock_lost(x);
    }
    buf_be64(&b, (uint64_t)emu_to_wire(x->b, emu_renew(x->b, m)));
  }
  enc_array_end(&b, am, (uint32_t)n);
  enc_compound_end(&b, mark, 2);
  reply(x, 200, "OK", NULL, &b);
  buf_free(&b);
}

static bool in_session(const emu_msg_t *m, const char *sid)
{
  if (!sid) return true;
  return m->sess && strcmp(m->sess->id, sid) == 0;
}

static void op_peek(mgmt_ctx_t *x)
{
  int64_t from = 1, count = 1;
  char sid[256];
  bool has_sid = get_str(x, "session-id", sid, sizeof sid);
  get_i64(x, "from-sequence-number", &from);
  if (!get_i64(x, "message-count", &count) || count <= 0) return bad_arg(x, "message-count");
  if (count > 250) count = 250;
  emu_sweep_expired(x->b, x->e);
  emu_buf_t b = {0}, enc = {0};
  size_t mark = body_begin(&b, "messages");
  size_t lm = enc_list_begin(&b);
  uint32_t n = 0;
  for (emu_msg_t *m = x->e->head; m && n < count; m = m->next) {
    if (m->seq < from || !in_session(m, has_sid ? sid : NULL)) continue;
    enc.len = 0;
    msg_encode(x->b, m, &enc, 1);
    size_t em = enc_map_begin(&b);
    enc_str(&b, "message");
    enc_bin(&b, enc.p, enc.len);
    enc_compound_end(&b, em, 2);
    n++;
  }
  enc_compound_end(&b, lm, n);
  enc_compound_end(&b, mark, 2);
  if (n) reply(x, 200, "OK", NULL, &b);
  else reply(x, 204, "No messages to peek.", NULL, NULL);
  buf_free(&b);
  buf_free(&enc);
}

static int64_t next_seq_of(emu_entity_t *e) { return e->next_seq; }

static void op_schedule(mgmt_ctx_t *x)
{
  amqp_val_t list, item, bin;
  if (!get_key(x, "messages", &list) || !(amqp_is_list(&list) || amqp_is_array(&list))) return bad_arg(x, "messages");
  emu_buf_t b = {0};
  size_t mark = body_begin(&b, "sequence-numbers");
  size_t am = enc_array_begin(&b, AMQP_LONG);
  uint32_t n = 0;
  amqp_iter_t it;
  amqp_iter_init(&it, &list);
  while (amqp_iter_next(&it, &item)) {
    const unsigned char *p;
    size_t len;
    const char *err = "malformed message";
    if (!amqp_map_get(&item, "message", &bin) || !amqp_get_bin(&bin, &p, &len)) goto bad;
    emu_msg_t *m = msg_parse(p, len, &err);
    if (!m) goto bad;
    emu_msg_from_wire(x->b, m);
    int64_t seq = next_seq_of(x->e);
    const char *cond = NULL;
    char desc[512];
    if (emu_enqueue(x->b, x->e, m, &cond, desc, sizeof desc) < 0) {
      buf_free(&b);
      return reply(x, 400, desc, cond, NULL);
    }
    buf_be64(&b, (uint64_t)seq);
    n++;
  }
  enc_array_end(&b, am, n);
  enc_compound_end(&b, mark, 2);
  reply(x, 200, "OK", NULL, &b);
  buf_free(&b);
  return;
bad:
  buf_free(&b);
  bad_arg(x, "messages");
}

static bool cancel_one(emu_broker_t *b, emu_entity_t *e, int64_t seq)
{
  emu_msg_t *m = emu_find_seq(e, seq);
  if (!m || m->state != MSG_SCHEDULED) return false;
  emu_remove(b, m);
  return true;
}

static void op_cancel(mgmt_ctx_t *x)
{
  static int64_t seqs[MAX_ITEMS];
  int n = get_longs(x, "sequence-numbers", seqs, MAX_ITEMS);
  if (n < 0) return bad_arg(x, "sequence-numbers");
  for (int i = 0; i < n; i++) {
    bool found = false;
    if (x->e->kind == ENT_TOPIC) {
      for (size_t k = 0; k < x->e->nsubs; k++) found = cancel_one(x->b, x->e->subs[k], seqs[i]) || found;
    } else {
      found = cancel_one(x->b, x->e, seqs[i]);
    }
    if (!found && x->e->kind != ENT_TOPIC) {
      char d[256];
      snprintf(d, sizeof d, "The scheduled message with sequence number %lld was not found.", (long long)seqs[i]);
      return reply(x, 404, d, "com.microsoft:message-not-found", NULL);
    }
  }
  reply(x, 200, "OK", NULL, NULL);
}

static void op_receive_by_seq(mgmt_ctx_t *x)
{
  static int64_t seqs[MAX_ITEMS];
  int64_t mode = 1;
  int n = get_longs(x, "sequence-numbers", seqs, MAX_ITEMS);
  if (n < 0) return bad_arg(x, "sequence-numbers");
  get_i64(x, "receiver-settle-mode", &mode);
  for (int i = 0; i < n; i++) {
    emu_msg_t *m = emu_find_seq(x->e, seqs[i]);
    if (!m || m->state != MSG_DEFERRED || m->locked) {
      char d[256];
      snprintf(d, sizeof d, "The message with sequence number %lld was not found or is not deferred.", (long long)seqs[i]);
      return reply(x, 404, d, "com.microsoft:message-not-found", NULL);
    }
  }
  emu_buf_t b = {0}, enc = {0};
  size_t mark = body_begin(&b, "messages");
  size_t lm = enc_list_begin(&b);
  for (int i = 0; i < n; i++) {
    emu_msg_t *m = emu_find_seq(x->e, seqs[i]);
    size_t em = enc_map_begin(&b);
    uint32_t cnt = 2;
    enc.len = 0;
    if (mode != 0) {
      emu_lock(x->b, m);
      enc_str(&b, "lock-token");
      enc_uuid(&b, m->token);
      cnt += 2;
      msg_encode(x->b, m, &enc, 2);
    } else {
      msg_encode(x->b, m, &enc, 0);
      emu_remove(x->b, m);
    }
    enc_str(&b, "message");
    enc_bin(&b, enc.p, enc.len);
    enc_compound_end(&b, em, cnt);
  }
  enc_compound_end(&b, lm, (uint32_t)n);
  enc_compound_end(&b, mark, 2);
  reply(x, 200, "OK", NULL, &b);
  buf_free(&b);
  buf_free(&enc);
}

/* Apply a properties-to-modify map (string keys) to m's application properties. */
static void apply_modify(mgmt_ctx_t *x, emu_msg_t *m)
{
  amqp_val_t map;
  if (get_key(x, "properties-to-modify", &map)) msg_app_merge(m, &map, NULL, NULL, 0);
}

static void op_update_disposition(mgmt_ctx_t *x)
{
  static unsigned char tok[MAX_ITEMS][16];
  char status[32], reason[4096], desc[4096];
  if (!get_str(x, "disposition-status", status, sizeof status)) return bad_arg(x, "disposition-status");
  int n = get_uuids(x, "lock-tokens", tok, MAX_ITEMS);
  if (n < 0) return bad_arg(x, "lock-tokens");
  bool has_r = get_str(x, "deadletter-reason", reason, sizeof reason) && reason[0];
  bool has_d = get_str(x, "deadletter-description", desc, sizeof desc) && desc[0];
  for (int i = 0; i < n; i++)
    if (!emu_find_token(x->b, tok[i])) return lock_lost(x);
  for (int i = 0; i < n; i++) {
    emu_msg_t *m = emu_find_token(x->b, tok[i]);
    if (!m) continue;
    if (!strcasecmp(status, "completed")) {
      emu_remove(x->b, m);
      continue;
    }
    apply_modify(x, m);
    if (!strcasecmp(status, "abandoned")) emu_abandon(x->b, m);
    else if (!strcasecmp(status, "suspended")) emu_deadletter(x->b, m, has_r ? reason : NULL, has_d ? desc : NULL);
    else if (!strcasecmp(status, "defered") || !strcasecmp(status, "deferred")) emu_defer(x->b, m);
    else return bad_arg(x, "disposition-status");
  }
  reply(x, 200, "OK", NULL, NULL);
}

/* ---------------------------------------------------------------- sessions */

/* The session named in the request (or held by the associated link), locked by this connection. */
static emu_sess_t *owned_session(mgmt_ctx_t *x)
{
  char sid[256];
  if (!get_str(x, "session-id", sid, sizeof sid)) return NULL;
  emu_sess_t *s = emu_sess_get(x->e, sid, false);
  if (!s || !s->owner || s->owner->conn != x->l->conn || s->locked_until <= emu_now(x->b)) return NULL;
  return s;
}

static void op_renew_session_lock(mgmt_ctx_t *x)
{
  emu_sess_t *s = owned_session(x);
  if (!s) return session_lock_lost(x);
  s->locked_until = emu_now(x->b) + x->e->props.lock_ms;
  for (emu_msg_t *m = x->e->head; m; m = m->next)
    if (m->sess == s && m->locked) m->locked_until = s->locked_until;
  emu_buf_t b = {0};
  size_t mark = body_begin(&b, "expiration");
  enc_timestamp(&b, emu_to_wire(x->b, s->locked_until));
  enc_compound_end(&b, mark, 2);
  reply(x, 200, "OK", NULL, &b);
  buf_free(&b);
}

static void op_set_session_state(mgmt_ctx_t *x)
{
  emu_sess_t *s = owned_session(x);
  amqp_val_t v;
  const unsigned char *p;
  size_t n;
  if (!s) return session_lock_lost(x);
  buf_free(&s->state);
  s->has_state = false;
  if (get_key(x, "session-state", &v) && amqp_get_bin(&v, &p, &n)) {
    buf_put(&s->state, p, n);
    s->has_state = true;
  }
  s->state_updated = emu_now(x->b);
  reply(x, 200, "OK", NULL, NULL);
}

static void op_get_session_state(mgmt_ctx_t *x)
{
  emu_sess_t *s = owned_session(x);
  if (!s) return session_lock_lost(x);
  emu_buf_t b = {0};
  size_t mark = body_begin(&b, "session-state");
  if (s->has_state) enc_bin(&b, s->state.p, s->state.len);
  else enc_null(&b);
  enc_compound_end(&b, mark, 2);
  reply(x, 200, "OK", NULL, &b);
  buf_free(&b);
}

static void op_get_sessions(mgmt_ctx_t *x)
{
  int64_t since = 253402300799999LL, skip = 0, top = INT32_MAX;
  get_i64(x, "last-updated-time", &since);
  get_i64(x, "skip", &skip);
  get_i64(x, "top", &top);
  bool with_messages = since >= 253402300799000LL;
  if (!with_messages) since = emu_from_wire(x->b, since);
  emu_buf_t b = {0};
  size_t mark = enc_map_begin(&b);
  enc_str(&b, "skip");
  enc_int(&b, (int32_t)skip);
  enc_str(&b, "sessions-ids");
  size_t am = enc_array_begin(&b, AMQP_STR32);
  uint32_t n = 0;
  int64_t seen = 0;
  for (emu_sess_t *s = x->e->sessions; s && n < top; s = s->next) {
    bool hit = with_messages ? s->nmsgs > 0 : (s->has_state && s->state_updated > since);
    if (!hit || seen++ < skip) continue;
    buf_be32(&b, (uint32_t)strlen(s->id));
    buf_put(&b, s->id, strlen(s->id));
    n++;
  }
  enc_array_end(&b, am, n);
  enc_compound_end(&b, mark, 4);
  if (n) reply(x, 200, "OK", NULL, &b);
  else reply(x, 204, "No sessions.", NULL, NULL);
  buf_free(&b);
}

/* ---------------------------------------------------------------- rules */

static char *map_str(const amqp_val_t *map, const char *key)
{
  amqp_val_t v;
  return amqp_map_get(map, key, &v) ? amqp_dup_str(&v) : NULL;
}

static emu_rule_t *rule_from_desc(const amqp_val_t *d, const char *name, char *err, size_t n)
{
  static const char *const corr_keys[8] = {"correlation-id", "message-id", "to", "reply-to", "label",
                                           "session-id", "reply-to-session-id", "content-type"};
  amqp_val_t f, props, k, v;
  emu_rule_t *r = calloc(1, sizeof *r);
  if (!r) abort();
  r->name = strdup(name);
  r->kind = FILTER_TRUE;
  if (amqp_map_get(d, "sql-filter", &f) && amqp_is_map(&f)) {
    r->kind = FILTER_SQL;
    r->sql = map_str(&f, "expression");
    if (!r->sql || !(r->expr = sql_parse_filter(r->sql, err, n))) goto bad;
  } else if (amqp_map_get(d, "correlation-filter", &f) && amqp_is_map(&f)) {
    r->kind = FILTER_CORRELATION;
    for (int i = 0; i < 8; i++) r->corr[i] = map_str(&f, corr_keys[i]);
    if (amqp_map_get(&f, "properties", &props) && amqp_is_map(&props)) {
      amqp_iter_t it;
      amqp_iter_init(&it, &props);
      while (amqp_iter_next(&it, &k) && amqp_iter_next(&it, &v)) {
        emu_corr_prop_t *cp = calloc(1, sizeof *cp);
        if (!cp) abort();
        cp->name = amqp_dup_str(&k);
        buf_put(&cp->value, v.start, v.total);
        cp->next = r->corr_props;
        r->corr_props = cp;
        if (!cp->name) goto bad;
      }
    }
  }
  if (amqp_map_get(d, "sql-rule-action", &f) && amqp_is_map(&f)) {
    r->action_sql = map_str(&f, "expression");
    if (!r->action_sql || !(r->action = sql_parse_action(r->action_sql, err, n))) goto bad;
  }
  return r;
bad:
  if (!err[0]) snprintf(err, n, "malformed rule description");
  emu_rule_free(r);
  return NULL;
}

static void op_add_rule(mgmt_ctx_t *x)
{
  char name[256], err[256] = "";
  amqp_val_t d;
  if (x->e->kind != ENT_SUBSCRIPTION) return reply(x, 400, "Rules exist only on subscriptions.", "amqp:not-allowed", NULL);
  if (!get_str(x, "rule-name", name, sizeof name)) return bad_arg(x, "rule-name");
  if (!get_key(x, "rule-description", &d) || !amqp_is_map(&d)) return bad_arg(x, "rule-description");
  for (emu_rule_t *r = x->e->rules; r; r = r->next)
    if (!strcmp(r->name, name)) return reply(x, 409, "The rule already exists.", "com.microsoft:entity-already-exists", NULL);
  emu_rule_t *r = rule_from_desc(&d, name, err, sizeof err);
  if (!r) return reply(x, 400, err, "com.microsoft:argument-error", NULL);
  r->created_ms = emu_now(x->b);
  emu_rule_t **tail = &x->e->rules;
  while (*tail) tail = &(*tail)->next;
  *tail = r;
  reply(x, 200, "OK", NULL, NULL);
}

static void op_remove_rule(mgmt_ctx_t *x)
{
  char name[256];
  if (!get_str(x, "rule-name", name, sizeof name)) return bad_arg(x, "rule-name");
  for (emu_rule_t **pp = &x->e->rules; *pp; pp = &(*pp)->next) {
    if (strcmp((*pp)->name, name) != 0) continue;
    emu_rule_t *r = *pp;
    *pp = r->next;
    emu_rule_free(r);
    return reply(x, 200, "OK", NULL, NULL);
  }
  char d[512];
  snprintf(d, sizeof d, "The rule '%s' could not be found.", name);
  reply(x, 404, d, "amqp:not-found", NULL);
}

static void enc_opt_str(emu_buf_t *b, const char *s)
{
  if (s) enc_str(b, s);
  else enc_null(b);
}

static void enc_rule(emu_buf_t *b, const emu_rule_t *r, const emu_broker_t *br)
{
  enc_descriptor(b, 0x0000013700000004ULL);
  size_t lm = enc_list_begin(b);
  if (r->kind == FILTER_SQL) {
    enc_descriptor(b, 0x0000001370000006ULL);
    size_t f = enc_list_begin(b);
    enc_str(b, r->sql);
    enc_int(b, 20);
    enc_compound_end(b, f, 2);
  } else if (r->kind == FILTER_CORRELATION) {
    enc_descriptor(b, 0x0000001370000009ULL);
    size_t f = enc_list_begin(b);
    for (int i = 0; i < 8; i++) enc_opt_str(b, r->corr[i]);
    size_t pm = enc_map_begin(b);
    uint32_t pc = 0;
    for (const emu_corr_prop_t *p = r->corr_props; p; p = p->next, pc += 2) {
      enc_str(b, p->name);
      buf_put(b, p->value.p, p->value.len);
    }
    enc_compound_end(b, pm, pc);
    enc_compound_end(b, f, 9);
  } else {
    enc_descriptor(b, r->kind == FILTER_TRUE ? 0x0000001370000007ULL : 0x0000001370000008ULL);
    enc_compound_end(b, enc_list_begin(b), 0);
  }
  if (r->action) {
    enc_descriptor(b, 0x0000013700000006ULL);
    size_t a = enc_list_begin(b);
    enc_str(b, r->action_sql);
    enc_int(b, 20);
    enc_compound_end(b, a, 2);
  } else {
    enc_descriptor(b, 0x0000013700000005ULL);
    enc_compound_end(b, enc_list_begin(b), 0);
  }
  enc_str(b, r->name);
  enc_timestamp(b, r->created_ms ? emu_to_wire(br, r->created_ms) : 0);
  enc_compound_end(b, lm, 4);
}

static void op_enumerate_rules(mgmt_ctx_t *x)
{
  int64_t skip = 0, top = INT32_MAX;
  get_i64(x, "skip", &skip);
  get_i64(x, "top", &top);
  emu_buf_t b = {0};
  size_t mark = body_begin(&b, "rules");
  size_t lm = enc_list_begin(&b);
  uint32_t n = 0;
  int64_t i = 0;
  for (const emu_rule_t *r = x->e->rules; r && n < top; r = r->next) {
    if (i++ < skip) continue;
    size_t m = enc_map_begin(&b);
    enc_str(&b, "rule-description");
    enc_rule(&b, r, x->b);
    enc_compound_end(&b, m, 2);
    n++;
  }
  enc_compound_end(&b, lm, n);
  enc_compound_end(&b, mark, 2);
  if (n) reply(x, 200, "OK", NULL, &b);
  else reply(x, 204, "No rules.", NULL, NULL);
  buf_free(&b);
}

/* ---------------------------------------------------------------- table */

typedef struct op_def {
  const char *name;             /* operation after "com.microsoft:" */
  unsigned right;               /* claim needed */
  void (*fn)(mgmt_ctx_t *x);    /* handler */
} op_def_t;

static const op_def_t OPS[] = {
  {"renew-lock", RIGHT_LISTEN, op_renew_lock},
  {"peek-message", RIGHT_LISTEN, op_peek},
  {"schedule-message", RIGHT_SEND, op_schedule},
  {"cancel-scheduled-message", RIGHT_SEND, op_cancel},
  {"receive-by-sequence-number", RIGHT_LISTEN, op_receive_by_seq},
  {"update-disposition", RIGHT_LISTEN, op_update_disposition},
  {"renew-session-lock", RIGHT_LISTEN, op_renew_session_lock},
  {"set-session-state", RIGHT_LISTEN, op_set_session_state},
  {"get-session-state", RIGHT_LISTEN, op_get_session_state},
  {"get-message-sessions", RIGHT_LISTEN, op_get_sessions},
  {"add-rule", RIGHT_MANAGE, op_add_rule},
  {"remove-rule", RIGHT_MANAGE, op_remove_rule},
  {"enumerate-rules", RIGHT_MANAGE, op_enumerate_rules},
  {NULL, 0, NULL}};

void emu_mgmt_request(emu_link_t *l, const unsigned char *p, size_t n)
{
  emu_req_t r;
  char op[128];
  const char *fc;
  mgmt_ctx_t x = {.l = l, .b = l->conn->broker, .e = l->ent, .r = &r};
  if (!emu_req_parse(p, n, &r) || !emu_req_app_str(&r, "operation", op, sizeof op)) {
    emu_send_response(l, &r, false, 400, "Malformed management request.", "com.microsoft:argument-error", NULL);
    return;
  }
  x.has_map = r.has_body && amqp_is_map(&r.body);
  if (x.has_map) x.map = r.body;
  const char *name = strncmp(op, "com.microsoft:", 14) == 0 ? op + 14 : op;
  if (!x.e) return reply(&x, 404, "The management node has no entity.", "amqp:not-found", NULL);
  for (const op_def_t *d = OPS; d->name; d++) {
    if (strcmp(d->name, name) != 0) continue;
    if (!(emu_claims_for(l->conn, l->node) & d->right)) {
      char desc[256];
      snprintf(desc, sizeof desc, "Unauthorized access. '%s' claim(s) are required to perform this operation.",
               d->right == RIGHT_SEND ? "Send" : d->right == RIGHT_LISTEN ? "Listen" : "Manage");
      return reply(&x, 401, desc, "amqp:unauthorized-access", NULL);
    }
    if (emu_fault_take(x.b, "mgmt", &fc)) return reply(&x, 503, "Injected fault.", fc, NULL);
    d->fn(&x);
    emu_dispatch_all(x.b);
    return;
  }
  char d[256];
  snprintf(d, sizeof d, "The operation '%s' is not supported by sbus-emulator.", op);
  reply(&x, 501, d, "amqp:not-implemented", NULL);
}
