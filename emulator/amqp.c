/*
 * amqp.c: the broker's AMQP side, reacting to Proton events.
 *
 * One emu_conn_t per Proton connection driver, in server mode with the
 * emulator's SASL plugin. The file is divided as: connection life cycle;
 * attach (address normalisation, authorisation by CBS claims, sessions and
 * their filter echo, refusal with a null terminus then detach, §14.10);
 * incoming transfers (multi-frame append, size limit, batches, enqueue and
 * the settled disposition); outgoing deliveries (dispatch under credit,
 * drain, lock token tags) and the settle-mode "second" handshake for
 * outcomes; then fault injection and forced detaches for the control surface.
 */
#include "emu.h"

#include <proton/codec.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/disposition.h>
#include <proton/event.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define PRODUCER_CREDIT 5000      /* credit granted to senders, topped up at half */
#define SESSION_CAPACITY (1u << 30) /* incoming bytes per AMQP session */
#define NEXT_SESSION_WAIT_MS 15000 /* default wait for "next available session" */

static const char *SESSION_FILTER = "com.microsoft:session-filter";

/* ---------------------------------------------------------------- life cycle */

emu_conn_t *emu_conn_new(emu_broker_t *b, void *host)
{
  emu_conn_t *c = calloc(1, sizeof *c);
  if (!c) abort();
  if (pn_connection_driver_init(&c->driver, NULL, NULL) != 0) abort();
  pn_transport_t *t = c->driver.transport;
  pn_transport_set_server(t);
  emu_sasl_install(t);
  pn_transport_set_max_frame(t, 65536);
  pn_transport_set_idle_timeout(t, b->opt.idle_timeout_ms);
  pn_connection_set_context(c->driver.connection, c);
  c->broker = b;
  c->host = host;
  c->id = ++b->next_conn_id;
  c->opened_mono = emu_mono_ms();
  c->opened_emu = emu_now(b);
  c->linkless_since = INT64_MAX;
  c->idle_check = b->opt.conn_no_link_ms > 0 ? c->opened_emu + b->opt.conn_no_link_ms : INT64_MAX;
  c->next = b->conns;
  if (b->conns) b->conns->prev = c;
  b->conns = c;
  return c;
}

static emu_link_t *link_of(pn_link_t *pl) { return pl ? pn_link_get_context(pl) : NULL; }

static void consumer_unlink(emu_link_t *l)
{
  emu_entity_t *e = l->ent;
  if (!e || !l->cnext) return;
  if (l->cnext == l) {
    e->consumers = NULL;
  } else {
    l->cprev->cnext = l->cnext;
    l->cnext->cprev = l->cprev;
    if (e->consumers == l) e->consumers = l->cnext;
  }
  l->cnext = l->cprev = NULL;
}

static void consumer_link(emu_link_t *l)
{
  emu_entity_t *e = l->ent;
  if (!e->consumers) {
    e->consumers = l->cnext = l->cprev = l;
    return;
  }
  emu_link_t *h = e->consumers;
  l->cnext = h;
  l->cprev = h->cprev;
  h->cprev->cnext = l;
  h->cprev = l;
}

/* Forget our context of a link: locks stay until they expire (§13 q7). */
static void link_drop(emu_link_t *l)
{
  emu_conn_t *c = l->conn;
  if (l->kind == LINK_CONSUMER) {
    consumer_unlink(l);
    for (pn_delivery_t *d = pn_unsettled_head(l->pn); d; d = pn_unsettled_next(d)) {
      emu_msg_t *m = pn_delivery_get_context(d);
      if (m) m->dlv = NULL;
      pn_delivery_set_context(d, NULL);
    }
    if (l->sess && l->sess->owner == l) emu_sess_release(c->broker, l->sess);
  }
  for (emu_link_t **pp = &c->links; *pp; pp = &(*pp)->next) {
    if (*pp == l) {
      *pp = l->next;
      break;
    }
  }
  if (!c->links) {
    /* the last link went: the connection's own idle timer starts (protocol.md §1.6) */
    c->linkless_since = emu_now(c->broker);
    if (c->broker->opt.conn_idle_ms > 0 && c->linkless_since + c->broker->opt.conn_idle_ms < c->idle_check)
      c->idle_check = c->linkless_since + c->broker->opt.conn_idle_ms;
  }
  emu_wire_unclaim(l->wl);
  pn_link_set_context(l->pn, NULL);
  buf_free(&l->rx);
  free(l->node);
  free(l->target);
  free(l);
}

static void conn_teardown(emu_conn_t *c)
{
  while (c->links) link_drop(c->links);
  while (c->tokens) {
    emu_token_t *t = c->tokens;
    c->tokens = t->next;
    free(t->path);
    free(t);
  }
  while (c->delayed) {
    emu_delayed_t *d = c->delayed;
    c->delayed = d->next;
    free(d);
  }
}

void emu_conn_free(emu_conn_t *c)
{
  emu_broker_t *b = c->broker;
  conn_teardown(c);
  emu_wire_free(&c->wire);
  buf_free(&c->obuf);
  if (c->prev) c->prev->next = c->next;
  else b->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  pn_connection_driver_destroy(&c->driver);
  free(c);
}

void emu_conn_drop(emu_conn_t *c, const char *cond, const char *desc)
{
  pn_condition_t *pc = pn_connection_condition(c->driver.connection);
  if (cond) pn_condition_set_name(pc, cond);
  if (desc) pn_condition_set_description(pc, desc);
  pn_connection_close(c->driver.connection);
  /* the close frame goes out first; a peer that never answers is cut off after 2 s */
  if (!c->kill_at) c->kill_at = emu_mono_ms() + 2000;
}

/* ---------------------------------------------------------------- helpers */

static void set_cond(pn_condition_t *pc, const char *cond, const char *desc)
{
  pn_condition_set_name(pc, cond);
  if (desc) pn_condition_set_description(pc, desc);
}

static void link_close_err(pn_link_t *pl, const char *cond, const char *desc)
{
  set_cond(pn_link_condition(pl), cond, desc);
  pn_link_close(pl);
}

/* Refuse a link: attach with null source and target, then detach with the error. */
static void refuse(pn_link_t *pl, const char *cond, const char *desc)
{
  pn_terminus_set_type(pn_link_source(pl), PN_UNSPECIFIED);
  pn_terminus_set_type(pn_link_target(pl), PN_UNSPECIFIED);
  pn_link_open(pl);
  link_close_err(pl, cond, desc);
}

static const char *rights_name(unsigned r)
{
  return r == RIGHT_SEND ? "Send" : r == RIGHT_LISTEN ? "Listen" : "Manage";
}

bool emu_fault_take(emu_broker_t *b, const char *op, const char **cond)
{
  emu_faults_t *f = &b->faults;
  if (f->fail_next <= 0 || strcmp(f->fail_op, op) != 0) return false;
  f->fail_next--;
  *cond = f->fail_cond[0] ? f->fail_cond : "com.microsoft:server-busy";
  return true;
}

/* The session filter of the remote source: 0 none, 1 plain, 2 described; id copied. */
static int session_filter(pn_link_t *pl, char *id, size_t n, bool *null_id, uint64_t *desc)
{
  pn_data_t *f = pn_terminus_filter(pn_link_remote_source(pl));
  if (!f) return 0;
  pn_data_rewind(f);
  if (!pn_data_next(f) || pn_data_type(f) != PN_MAP) return 0;
  size_t count = pn_data_get_map(f);
  pn_data_enter(f);
  int form = 0;
  for (size_t i = 0; i + 1 < count + 1 && pn_data_next(f); i += 2) {
    pn_type_t kt = pn_data_type(f);
    pn_bytes_t k = kt == PN_SYMBOL ? pn_data_get_symbol(f) : kt == PN_STRING ? pn_data_get_string(f) : pn_bytes(0, NULL);
    if (!pn_data_next(f)) break;
    if (k.size != strlen(SESSION_FILTER) || strncasecmp(k.start, SESSION_FILTER, k.size) != 0) continue;
    form = 1;
    if (pn_data_type(f) == PN_DESCRIBED) {
      form = 2;
      pn_data_enter(f);
      pn_data_next(f);
      *desc = pn_data_get_ulong(f);
      pn_data_next(f);
    }
    *null_id = pn_data_type(f) != PN_STRING;
    if (!*null_id) {
      pn_bytes_t s = pn_data_get_string(f);
      size_t len = s.size < n - 1 ? s.size : n - 1;
      memcpy(id, s.start, len);
      id[len] = 0;
    }
    break;
  }
  pn_data_exit(f);
  return form;
}

static void echo_session_filter(pn_link_t *pl, int form, uint64_t desc, const char *id)
{
  pn_data_t *f = pn_terminus_filter(pn_link_source(pl));
  pn_data_clear(f);
  pn_data_put_map(f);
  pn_data_enter(f);
  pn_data_put_symbol(f, pn_bytes(strlen(SESSION_FILTER), SESSION_FILTER));
  if (form == 2) {
    pn_data_put_described(f);
    pn_data_enter(f);
    pn_data_put_ulong(f, desc);
  }
  pn_data_put_string(f, pn_bytes(strlen(id), id));
  if (form == 2) pn_data_exit(f);
  pn_data_exit(f);
}

static void set_locked_until_prop(pn_link_t *pl, int64_t until_ms)
{
  const char *key = "com.microsoft:locked-until-utc";
  pn_data_t *p = pn_link_properties(pl);
  if (!p) return;
  pn_data_clear(p);
  pn_data_put_map(p);
  pn_data_enter(p);
  pn_data_put_symbol(p, pn_bytes(strlen(key), key));
  pn_data_put_long(p, 621355968000000000LL + until_ms * 10000); /* .NET ticks */
  pn_data_exit(p);
}

static int64_t link_timeout_prop(pn_link_t *pl)
{
  pn_data_t *p = pn_link_remote_properties(pl);
  if (!p) return -1;
  pn_data_rewind(p);
  if (!pn_data_next(p) || pn_data_type(p) != PN_MAP) return -1;
  size_t count = pn_data_get_map(p);
  pn_data_enter(p);
  int64_t r = -1;
  for (size_t i = 0; i < count / 2 && pn_data_next(p); i++) {
    pn_bytes_t k = pn_data_type(p) == PN_SYMBOL ? pn_data_get_symbol(p) : pn_bytes(0, NULL);
    if (!pn_data_next(p)) break;
    if (k.size == 21 && memcmp(k.start, "com.microsoft:timeout", 21) == 0) {
      pn_type_t t = pn_data_type(p);
      r = t == PN_UINT ? pn_data_get_uint(p) : t == PN_INT ? pn_data_get_int(p)
        : t == PN_ULONG ? (int64_t)pn_data_get_ulong(p) : t == PN_LONG ? pn_data_get_long(p) : -1;
    }
  }
  pn_data_exit(p);
  return r;
}

/* ---------------------------------------------------------------- attach */

static emu_link_t *link_new(emu_conn_t *c, pn_link_t *pl, emu_link_kind_t kind, char *node)
{
  emu_link_t *l = calloc(1, sizeof *l);
  if (!l) abort();
  l->pn = pl;
  l->conn = c;
  l->kind = kind;
  l->node = node;
  const char *t = pn_terminus_get_address(pn_link_remote_target(pl));
  l->target = t ? strdup(t) : NULL;
  l->wl = c->pending_wl;
  c->pending_wl = NULL;
  l->active_ms = emu_now(c->broker);
  c->had_link = true;
  c->linkless_since = INT64_MAX;
  if ((kind == LINK_PRODUCER || kind == LINK_CONSUMER) && c->broker->opt.link_idle_ms > 0 &&
      l->active_ms + c->broker->opt.link_idle_ms < c->idle_check)
    c->idle_check = l->active_ms + c->broker->opt.link_idle_ms;
  l->next = c->links;
  c->links = l;
  pn_link_set_context(pl, l);
  return l;
}

static void open_echo(pn_link_t *pl)
{
  pn_terminus_copy(pn_link_source(pl), pn_link_remote_source(pl));
  pn_terminus_copy(pn_link_target(pl), pn_link_remote_target(pl));
  pn_link_set_snd_settle_mode(pl, pn_link_remote_snd_settle_mode(pl));
  pn_link_set_rcv_settle_mode(pl, pn_link_remote_rcv_settle_mode(pl));
}

static bool authorize(emu_conn_t *c, pn_link_t *pl, const char *path, unsigned right)
{
  unsigned have = emu_claims_for(c, path);
  if (have & (right | RIGHT_MANAGE)) return true;
  char d[512];
  snprintf(d, sizeof d, "Unauthorized access. '%s' claim(s) are required to perform this operation. Resource: 'sb://%s/%s'.",
           rights_name(right), c->broker->ns_name ? c->broker->ns_name : "localhost", path);
  refuse(pl, "amqp:unauthorized-access", d);
  return false;
}

static void not_found(pn_link_t *pl, const char *name)
{
  char d[512];
  snprintf(d, sizeof d, "The messaging entity '%s' could not be found. To know more visit https://aka.ms/sbResourceMgrExceptions.", name);
  refuse(pl, "amqp:not-found", d);
}

static void attach_special(emu_conn_t *c, pn_link_t *pl, char *node)
{
  emu_link_kind_t kind = pn_link_is_sender(pl) ? LINK_REPLY : LINK_REQ;
  emu_entity_t *e = NULL;
  size_t n = strlen(node);
  if (strcmp(node, "$cbs") != 0) {
    node[n - strlen("/$management")] = 0;
    e = emu_entity_find(c->broker, node);
    if (!e) {
      not_found(pl, node);
      free(node);
      return;
    }
    node[n - strlen("/$management")] = '/';
    if (!emu_claims_for(c, node)) {
      char d[512];
      snprintf(d, sizeof d, "Unauthorized access. A token for '%s' is required to use its $management node.", e->name);
      refuse(pl, "amqp:unauthorized-access", d);
      free(node);
      return;
    }
  }
  emu_link_t *l = link_new(c, pl, kind, node);
  l->ent = e;
  open_echo(pl);
  pn_link_open(pl);
  if (kind == LINK_REQ) pn_link_flow(pl, 100);
}

static const char ENTITY_DISABLED[] = "com.microsoft:entity-disabled";

/* The refusal text of an entity whose Status switched a direction off. */
static const char *disabled_text(const emu_entity_t *e, char *buf, size_t n)
{
  snprintf(buf, n, "Messaging entity '%s' is currently disabled.", e->name);
  return buf;
}

static void attach_producer(emu_conn_t *c, pn_link_t *pl, emu_entity_t *e, char *node)
{
  char why[1200];
  if (!authorize(c, pl, e->lname, RIGHT_SEND)) goto fail;
  if (e->kind == ENT_SUBSCRIPTION || e->kind == ENT_DLQ) {
    refuse(pl, "amqp:not-allowed", "Cannot send to a subscription or a dead-letter queue.");
    goto fail;
  }
  if (e->off & EMU_SEND_OFF) {
    refuse(pl, ENTITY_DISABLED, disabled_text(e, why, sizeof why));
    goto fail;
  }
  emu_link_t *l = link_new(c, pl, LINK_PRODUCER, node);
  l->ent = e;
  open_echo(pl);
  pn_link_set_rcv_settle_mode(pl, PN_RCV_FIRST);
  pn_link_set_max_message_size(pl, c->broker->opt.max_message_size);
  pn_link_open(pl);
  pn_link_flow(pl, PRODUCER_CREDIT);
  return;
fail:
  free(node);
}

static void lock_session(emu_broker_t *b, emu_link_t *l, emu_sess_t *s)
{
  s->owner = l;
  s->locked_until = emu_now(b) + l->ent->props.lock_ms;
  l->sess = s;
  echo_session_filter(l->pn, l->session_form ? l->session_form : 1, l->session_desc, s->id);
  set_locked_until_prop(l->pn, emu_to_wire(b, s->locked_until));
}

/* Lock a session for a consumer; returns false when refused (link closed) or waiting. */
static bool attach_session(emu_conn_t *c, pn_link_t *pl, emu_link_t *l, const char *id, bool null_id)
{
  emu_broker_t *b = c->broker;
  emu_sess_t *s = null_id ? emu_sess_next_free(b, l->ent) : emu_sess_get(l->ent, id, true);
  if (!s) {
    int64_t wait = link_timeout_prop(pl);
    l->waiting = true;
    l->wait_until = emu_now(b) + (wait > 0 ? wait : NEXT_SESSION_WAIT_MS);
    consumer_link(l);
    return false;
  }
  if (s->owner) {
    char d[512];
    snprintf(d, sizeof d, "The requested session '%s' cannot be accepted. It may be locked by another receiver.", s->id);
    refuse(pl, "com.microsoft:session-cannot-be-locked", d);
    emu_sess_maybe_free(s);
    l->refused = true;
    return false;
  }
  lock_session(b, l, s);
  return true;
}

/* Answer waiting next-available session receivers of e: a free session, or the timeout. */
static void serve_waiting(emu_broker_t *b, emu_entity_t *e)
{
  if (!e->consumers) return;
  int64_t now = emu_now(b);
  emu_link_t *l = e->consumers;
  do {
    emu_link_t *next = l->cnext;
    if (l->waiting) {
      emu_sess_t *s = emu_sess_next_free(b, e);
      if (s) {
        l->waiting = false;
        lock_session(b, l, s);
        pn_link_open(l->pn);
      } else if (now >= l->wait_until) {
        l->waiting = false;
        l->refused = true;
        consumer_unlink(l);
        refuse(l->pn, "com.microsoft:timeout", "There are no available sessions to accept.");
        if (!e->consumers) return;
        if (next == l) return;
      }
    }
    l = next;
  } while (e->consumers && l != e->consumers);
}

int64_t emu_waiting_deadline(emu_entity_t *e)
{
  int64_t d = INT64_MAX;
  emu_link_t *l = e->consumers;
  if (!l) return d;
  do {
    if (l->waiting && l->wait_until < d) d = l->wait_until;
    l = l->cnext;
  } while (l != e->consumers);
  return d;
}

static void attach_consumer(emu_conn_t *c, pn_link_t *pl, emu_entity_t *e, char *node)
{
  const char *fc;
  if (!authorize(c, pl, e->lname, RIGHT_LISTEN)) goto fail;
  if (e->kind == ENT_TOPIC) {
    refuse(pl, "amqp:not-allowed", "Cannot receive from a topic; receive from a subscription.");
    goto fail;
  }
  if (e->off & EMU_RECV_OFF) {
    char why[1200];
    refuse(pl, ENTITY_DISABLED, disabled_text(e, why, sizeof why));
    goto fail;
  }
  if (emu_fault_take(c->broker, "receive", &fc)) {
    refuse(pl, fc, "Injected fault.");
    goto fail;
  }
  char id[256] = "";
  bool null_id = true;
  uint64_t desc = 0;
  int form = session_filter(pl, id, sizeof id, &null_id, &desc);
  bool sessionful = e->props.requires_session && e->kind != ENT_DLQ;
  if (sessionful && !form) {
    refuse(pl, "amqp:not-allowed", "It is not possible for an entity that requires sessions to create a non-sessionful message receiver.");
    goto fail;
  }
  emu_link_t *l = link_new(c, pl, LINK_CONSUMER, node);
  l->ent = e;
  l->session_form = form;
  l->session_desc = desc;
  open_echo(pl);
  l->rad = pn_link_remote_snd_settle_mode(pl) == PN_SND_SETTLED;
  pn_link_set_max_message_size(pl, c->broker->opt.max_message_size);
  if (sessionful && !attach_session(c, pl, l, id, null_id)) return;
  pn_link_open(pl);
  consumer_link(l);
  return;
fail:
  free(node);
}

static void link_open(emu_conn_t *c, pn_link_t *pl);

static void on_link_open(emu_conn_t *c, pn_link_t *pl)
{
  if (pn_link_state(pl) & PN_LOCAL_ACTIVE) return;
  /* the wire link of this attach: taken by link_new, else (refused) let go */
  c->pending_wl = pn_link_is_receiver(pl) ? emu_wire_claim(&c->wire, pn_link_name(pl)) : NULL;
  link_open(c, pl);
  emu_wire_unclaim(c->pending_wl);
  c->pending_wl = NULL;
}

static void link_open(emu_conn_t *c, pn_link_t *pl)
{
  bool sender = pn_link_is_sender(pl);
  pn_terminus_t *t = sender ? pn_link_remote_source(pl) : pn_link_remote_target(pl);
  const char *addr = pn_terminus_get_address(t);
  if (!addr) {
    refuse(pl, "amqp:invalid-field", "The link has no address.");
    return;
  }
  char *node = emu_path_normalize(addr);
  size_t n = strlen(node);
  if (strcmp(node, "$cbs") == 0 || (n > 12 && strcmp(node + n - 12, "/$management") == 0)) {
    attach_special(c, pl, node);
    return;
  }
  emu_entity_t *e = emu_entity_find(c->broker, node);
  if (!e) {
    not_found(pl, node);
    free(node);
    return;
  }
  if (sender) attach_consumer(c, pl, e, node);
  else attach_producer(c, pl, e, node);
}

/* ---------------------------------------------------------------- incoming */

static void reject(pn_delivery_t *d, const char *cond, const char *desc)
{
  set_cond(pn_disposition_condition(pn_delivery_local(d)), cond, desc);
  pn_delivery_update(d, PN_REJECTED);
  pn_delivery_settle(d);
}

static void enqueue_all(emu_link_t *l, pn_delivery_t *d, emu_msg_t **v, int n)
{
  emu_broker_t *b = l->conn->broker;
  const char *cond = NULL;
  char desc[512] = "";
  int failed = 0;
  for (int i = 0; i < n; i++) {
    if (failed) msg_free(v[i]);
    else if (emu_enqueue(b, l->ent, v[i], &cond, desc, sizeof desc) < 0) failed = 1;
  }
  if (failed) {
    reject(d, cond, desc);
    return;
  }
  pn_delivery_update(d, PN_ACCEPTED);
  pn_delivery_settle(d);
}

#define BATCH_FORMAT 0x80013700u /* protocol.md §6.4 */

static void on_message(emu_link_t *l, pn_delivery_t *d, uint32_t format)
{
  emu_broker_t *b = l->conn->broker;
  const char *err = "malformed message";
  const char *fc;
  if (l->rx_oversize) {
    char desc[256];
    snprintf(desc, sizeof desc, "The received message (delivery-id:%u, size:%zu bytes) exceeds the limit (%llu bytes) currently allowed on the link.",
             0u, l->rx_total, (unsigned long long)b->opt.max_message_size);
    reject(d, "amqp:link:message-size-exceeded", desc);
    return;
  }
  if (emu_fault_take(b, "send", &fc)) {
    reject(d, fc, "Injected fault.");
    return;
  }
  if (format == BATCH_FORMAT) {
    emu_msg_t **v = NULL;
    int n = msg_split_batch(l->rx.p, l->rx.len, &v, &err);
    if (n < 0) {
      reject(d, "amqp:decode-error", err);
      return;
    }
    for (int i = 0; i < n; i++) emu_msg_from_wire(b, v[i]);
    enqueue_all(l, d, v, n);
    free(v);
    return;
  }
  emu_msg_t *m = msg_parse(l->rx.p, l->rx.len, &err);
  if (!m) {
    reject(d, "amqp:decode-error", err);
    return;
  }
  emu_msg_from_wire(b, m);
  enqueue_all(l, d, &m, 1);
}

static void on_request(emu_link_t *l, pn_delivery_t *d)
{
  /* §14.2: settle the request before sending its response. */
  pn_delivery_update(d, PN_ACCEPTED);
  pn_delivery_settle(d);
  /* Proton coalesces dispositions and writes them after transfers of the same round;
   * producing output now puts the disposition on the wire before the response. */
  pn_transport_pending(l->conn->driver.transport);
  if (strcmp(l->node, "$cbs") == 0) emu_cbs_request(l, l->rx.p, l->rx.len);
  else emu_mgmt_request(l, l->rx.p, l->rx.len);
}

/* Read the link's current delivery; true when it was complete and handled. */
static bool incoming_one(emu_link_t *l, pn_delivery_t *d)
{
  pn_link_t *pl = l->pn;
  uint64_t max = l->conn->broker->opt.max_message_size;
  for (;;) {
    buf_reserve(&l->rx, 65536);
    ssize_t r = pn_link_recv(pl, (char *)l->rx.p + l->rx.len, l->rx.cap - l->rx.len);
    if (r <= 0) break;
    l->rx.len += (size_t)r;
    l->rx_total += (size_t)r;
    if (l->kind == LINK_PRODUCER && l->rx.len > max + 4096) {
      l->rx_oversize = true;
      l->rx.len = 0;
    }
  }
  if (pn_delivery_partial(d) && !pn_delivery_aborted(d)) return false;
  pn_delivery_tag_t tag = pn_delivery_tag(d);
  uint32_t format = emu_wire_format(l->wl, (const unsigned char *)tag.start, tag.size);
  bool closing = pn_connection_state(l->conn->driver.connection) & PN_LOCAL_CLOSED;
  if (pn_delivery_aborted(d) || closing) {
    pn_delivery_settle(d); /* aborted, or arrived after we closed: dropped like on a cut connection */
  } else if (l->kind == LINK_PRODUCER) {
    if (l->rx.len > max) l->rx_oversize = true;
    on_message(l, d, format);
  } else if (l->kind == LINK_REQ) {
    on_request(l, d);
  } else {
    pn_delivery_settle(d);
  }
  /* every path above settled d, and settling the current delivery advances the link */
  l->rx.len = 0;
  l->rx_oversize = false;
  l->rx_total = 0;
  if (l->rx.cap > (1u << 20)) buf_free(&l->rx);
  return true;
}

/* Handle every delivery that has fully arrived, in order (pn_link_recv reads the current one). */
static void on_incoming(emu_link_t *l)
{
  pn_link_t *pl = l->pn;
  pn_delivery_t *d;
  while ((d = pn_link_current(pl)) && incoming_one(l, d)) {}
  int credit = pn_link_credit(pl);
  int want = l->kind == LINK_PRODUCER ? PRODUCER_CREDIT : 100;
  if (credit < want / 2) pn_link_flow(pl, want - credit);
}

/* ---------------------------------------------------------------- outgoing */

void emu_link_send_message(emu_link_t *l, const unsigned char *p, size_t n, bool settled)
{
  char tag[8];
  uint64_t t = ++l->tags;
  memcpy(tag, &t, 8);
  pn_delivery_t *d = pn_delivery(l->pn, pn_dtag(tag, 8));
  pn_link_send(l->pn, (const char *)p, n);
  pn_link_advance(l->pn);
  if (settled) pn_delivery_settle(d);
}

static void deliver(emu_link_t *l, emu_msg_t *m)
{
  emu_broker_t *b = l->conn->broker;
  char tag[16];
  size_t tn = 16;
  if (!l->rad) {
    emu_lock(b, m);
    guid_swap((unsigned char *)tag, m->token);
  } else {
    uint64_t t = ++l->tags;
    memcpy(tag, &t, 8);
    tn = 8;
  }
  b->scratch.len = 0;
  msg_encode(b, m, &b->scratch, 0);
  pn_delivery_t *d = pn_delivery(l->pn, pn_dtag(tag, tn));
  pn_link_send(l->pn, (const char *)b->scratch.p, b->scratch.len);
  pn_link_advance(l->pn);
  l->active_ms = emu_now(b);
  b->stat_out++;
  if (l->rad) {
    pn_delivery_settle(d);
    emu_remove(b, m);
    return;
  }
  m->dlv = d;
  pn_delivery_set_context(d, m);
}

static bool consumer_ready(emu_link_t *l)
{
  if (l->refused || l->waiting || !(pn_link_state(l->pn) & PN_LOCAL_ACTIVE) || (pn_link_state(l->pn) & PN_REMOTE_CLOSED))
    return false;
  return pn_link_credit(l->pn) > 0;
}

/* Serve one consumer from its entity or session; true if a message was sent. */
static bool serve_one(emu_broker_t *b, emu_link_t *l)
{
  if (!consumer_ready(l)) return false;
  emu_entity_t *e = l->ent;
  bool sessionful = e->props.requires_session && e->kind != ENT_DLQ;
  if (sessionful && !l->sess) return false;
  emu_msg_t *m = emu_take(b, e, l->sess);
  if (!m) return false;
  deliver(l, m);
  return true;
}

static void finish_drain(emu_link_t *l)
{
  if (l->kind == LINK_CONSUMER && pn_link_get_drain(l->pn) && pn_link_credit(l->pn) > 0)
    pn_link_drained(l->pn);
}

void emu_dispatch(emu_broker_t *b, emu_entity_t *e)
{
  e->dirty = false;
  serve_waiting(b, e);
  bool progress = true;
  while (progress && e->consumers) {
    progress = false;
    emu_link_t *start = e->consumers, *l = start;
    do {
      emu_link_t *next = l->cnext;
      int burst = 0;
      while (burst < 64 && serve_one(b, l)) burst++;
      if (burst) progress = true;
      l = next;
    } while (l != start && e->consumers);
    if (e->consumers) e->consumers = e->consumers->cnext;
  }
  if (!e->consumers) return;
  emu_link_t *l = e->consumers;
  do {
    finish_drain(l);
    l = l->cnext;
  } while (l != e->consumers);
}

void emu_dispatch_all(emu_broker_t *b)
{
  for (emu_entity_t *e = b->entities; e; e = e->next)
    if (e->dirty) emu_dispatch(b, e);
}

static void on_flow(emu_link_t *l)
{
  if (l->kind != LINK_CONSUMER) return;
  emu_dispatch(l->conn->broker, l->ent);
  finish_drain(l);
}

/* Apply a map of property changes (a modified outcome's annotations or a rejected outcome's
 * info) to m. Proton holds the map decoded; it is encoded again so that each value is kept as
 * it was sent. */
static void apply_props(emu_msg_t *m, pn_data_t *map, char *reason, char *desc, size_t n)
{
  if (!map) return;
  pn_data_rewind(map);
  if (!pn_data_next(map) || pn_data_type(map) != PN_MAP) return;
  emu_buf_t enc = {0};
  ssize_t el;
  for (;;) {
    if (buf_reserve(&enc, enc.cap ? enc.cap * 2 : 4096) != 0) abort();
    el = pn_data_encode(map, (char *)enc.p, enc.cap);
    if (el != PN_OVERFLOW) break;
  }
  amqp_val_t v;
  if (el > 0 && amqp_decode(enc.p, (size_t)el, &v) > 0) msg_app_merge(m, &v, reason, desc, n);
  buf_free(&enc);
}

static void delayed_push(emu_conn_t *c, pn_delivery_t *d, uint64_t state)
{
  emu_delayed_t *x = calloc(1, sizeof *x);
  if (!x) abort();
  x->due_ms = emu_mono_ms() + c->broker->faults.delay_disp_ms;
  x->dlv = d;
  x->state = state;
  x->next = c->delayed;
  c->delayed = x;
}

/* Apply an outcome to m; returns the condition of a failure or NULL. */
static const char *apply_outcome(emu_broker_t *b, emu_msg_t *m, pn_delivery_t *d, uint64_t st)
{
  pn_disposition_t *rd = pn_delivery_remote(d);
  char reason[4096] = "", desc[4096] = "";
  switch (st) {
  case PN_ACCEPTED:
    emu_remove(b, m);
    break;
  case PN_MODIFIED:
    apply_props(m, pn_disposition_annotations(rd), NULL, NULL, 0);
    if (pn_disposition_is_undeliverable(rd)) emu_defer(b, m);
    else emu_abandon(b, m);
    break;
  case PN_REJECTED: {
    pn_condition_t *pc = pn_disposition_condition(rd);
    apply_props(m, pn_condition_info(pc), reason, desc, sizeof desc);
    emu_deadletter(b, m, reason[0] ? reason : NULL, desc[0] ? desc : NULL);
    break;
  }
  default: /* released, or settled without an outcome */
    emu_unlock(b, m, false);
    break;
  }
  return NULL;
}

static void on_outcome(emu_link_t *l, pn_delivery_t *d)
{
  emu_broker_t *b = l->conn->broker;
  uint64_t st = pn_delivery_remote_state(d);
  bool settled = pn_delivery_settled(d);
  if (!st && !settled) return;
  if (l->kind == LINK_REPLY) {
    pn_delivery_settle(d);
    return;
  }
  emu_msg_t *m = pn_delivery_get_context(d);
  const char *fail = NULL, *fdesc = NULL;
  if (!m) {
    fail = l->sess ? "com.microsoft:session-lock-lost" : "com.microsoft:message-lock-lost";
    fdesc = "The lock supplied is invalid. Either the lock expired, or the message has already been removed from the queue.";
  } else if (emu_fault_take(b, "settle", &fail)) {
    fdesc = "Injected fault.";
    m->dlv = NULL; /* the delivery is settled below; the lock stays until it expires */
    pn_delivery_set_context(d, NULL);
  } else {
    m->dlv = NULL;
    pn_delivery_set_context(d, NULL);
    apply_outcome(b, m, d, st);
  }
  if (settled) {
    pn_delivery_settle(d);
    return;
  }
  if (fail) {
    set_cond(pn_disposition_condition(pn_delivery_local(d)), fail, fdesc);
    st = PN_REJECTED;
  }
  if (b->faults.delay_disp_ms > 0) {
    delayed_push(l->conn, d, st);
    return;
  }
  pn_delivery_update(d, st ? st : PN_RELEASED);
  pn_delivery_settle(d);
}

static void on_delivery(emu_link_t *l, pn_delivery_t *d)
{
  if (pn_link_is_receiver(l->pn)) {
    on_incoming(l);
    return;
  }
  if (pn_delivery_updated(d) || pn_delivery_settled(d)) on_outcome(l, d);
}

/* ---------------------------------------------------------------- events */

static void on_link_close(emu_conn_t *c, pn_link_t *pl)
{
  emu_link_t *l = link_of(pl);
  if (l) link_drop(l);
  if (!(pn_link_state(pl) & PN_LOCAL_CLOSED)) pn_link_close(pl);
  /* Closed on both ends: free it. Proton keeps the object until our detach
   * is on the wire; without this every attach/detach cycle left a link (and
   * its deliveries) in the connection for its whole life (~2.4 KB each). */
  pn_link_free(pl);
  (void)c;
}

static void handle(emu_conn_t *c, pn_event_t *ev)
{
  pn_link_t *pl = pn_event_link(ev);
  switch (pn_event_type(ev)) {
  case PN_CONNECTION_REMOTE_OPEN:
    if (!(pn_connection_state(c->driver.connection) & PN_LOCAL_ACTIVE)) {
      pn_connection_set_container(c->driver.connection, "sbus-emulator");
      pn_connection_open(c->driver.connection);
    }
    break;
  case PN_SESSION_REMOTE_OPEN: {
    pn_session_t *s = pn_event_session(ev);
    if (!(pn_session_state(s) & PN_LOCAL_ACTIVE)) {
      pn_session_set_incoming_capacity(s, SESSION_CAPACITY);
      pn_session_open(s);
    }
    break;
  }
  case PN_LINK_REMOTE_OPEN: on_link_open(c, pl); break;
  case PN_LINK_FLOW:
    if (link_of(pl)) {
      link_of(pl)->active_ms = emu_now(c->broker);
      on_flow(link_of(pl));
    }
    break;
  case PN_DELIVERY: {
    emu_link_t *l = link_of(pl);
    pn_delivery_t *d = pn_event_delivery(ev);
    if (l) l->active_ms = emu_now(c->broker);
    if (l && !l->refused) on_delivery(l, d);
    else if (pn_link_is_receiver(pl)) {
      pn_link_recv(pl, NULL, 0);
      if (!pn_delivery_partial(d)) pn_delivery_settle(d); /* advances the link */
    }
    break;
  }
  case PN_LINK_REMOTE_CLOSE:
  case PN_LINK_REMOTE_DETACH: on_link_close(c, pl); break;
  case PN_SESSION_REMOTE_CLOSE: {
    pn_session_t *s = pn_event_session(ev);
    for (pn_link_t *x = pn_link_head(c->driver.connection, 0); x; x = pn_link_next(x, 0))
      if (pn_link_session(x) == s && link_of(x)) link_drop(link_of(x));
    pn_session_close(s);
    pn_session_free(s); /* same reason as links: freed once the end is sent */
    break;
  }
  case PN_CONNECTION_REMOTE_CLOSE:
    conn_teardown(c);
    pn_connection_close(c->driver.connection);
    break;
  case PN_TRANSPORT_CLOSED:
    conn_teardown(c);
    c->dead = true;
    break;
  default: break;
  }
}

static void run_delayed(emu_conn_t *c)
{
  int64_t now = emu_mono_ms();
  for (emu_delayed_t **pp = &c->delayed; *pp;) {
    emu_delayed_t *x = *pp;
    if (x->due_ms > now) {
      pp = &x->next;
      continue;
    }
    *pp = x->next;
    pn_delivery_update(x->dlv, x->state);
    pn_delivery_settle(x->dlv);
    free(x);
  }
}

int64_t emu_utc_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static unsigned right_for(const emu_link_t *l)
{
  if (l->kind == LINK_PRODUCER) return RIGHT_SEND;
  if (l->kind == LINK_CONSUMER) return RIGHT_LISTEN;
  return 0;
}

/* Tokens expired: forget them and detach the links they authorised, as the service does. */
static void expire_tokens(emu_conn_t *c)
{
  int64_t now = emu_utc_ms();
  c->token_check_ms = INT64_MAX;
  for (emu_token_t **pp = &c->tokens; *pp;) {
    emu_token_t *t = *pp;
    if (t->expires_ms <= now) {
      *pp = t->next;
      free(t->path);
      free(t);
      continue;
    }
    if (t->expires_ms < c->token_check_ms) c->token_check_ms = t->expires_ms;
    pp = &t->next;
  }
  for (emu_link_t *l = c->links, *n; l; l = n) {
    n = l->next;
    if (!l->ent || l->refused) continue;
    unsigned need = right_for(l);
    unsigned have = emu_claims_for(c, l->kind == LINK_CONSUMER || l->kind == LINK_PRODUCER ? l->ent->lname : l->node);
    if (need ? (have & need) : have) continue;
    pn_link_t *pl = l->pn;
    link_drop(l);
    link_close_err(pl, "amqp:unauthorized-access", "The token authorising this link has expired.");
  }
}

void emu_conn_process(emu_conn_t *c)
{
  pn_event_t *ev;
  if (c->delayed) run_delayed(c);
  if (!c->authed && !c->dead && emu_mono_ms() - c->opened_mono > c->broker->opt.cbs_timeout_ms) {
    emu_conn_drop(c, "amqp:unauthorized-access", "No valid token was put on $cbs in time.");
    c->opened_mono = INT64_MAX / 2;
  }
  if (c->tokens && emu_utc_ms() >= c->token_check_ms) expire_tokens(c);
  while ((ev = pn_connection_driver_next_event(&c->driver))) handle(c, ev);
  emu_wire_gc(&c->wire);
}

static uint32_t out_be32(const unsigned char *p)
{
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Size of the frame or protocol header at p (n bytes available), 0 when unknown. */
static size_t out_unit(const unsigned char *p, size_t n)
{
  if (n < 8) return 0;
  if (memcmp(p, "AMQP", 4) == 0) return 8;
  uint32_t size = out_be32(p);
  return size >= 8 ? size : 0;
}

/* An AMQP frame whose performative is an empty list0: 8 header bytes + 00 53 <code> 45. */
static bool out_list0(const unsigned char *p, size_t unit)
{
  return unit == 12 && p[4] == 2 && p[5] == 0 && p[8] == 0x00 && p[9] == 0x53 && p[11] == 0x45;
}

pn_bytes_t emu_conn_output(emu_conn_t *c)
{
  if (c->opos < c->obuf.len) return pn_bytes(c->obuf.len - c->opos, (const char *)c->obuf.p + c->opos);
  pn_bytes_t wb = pn_connection_driver_write_buffer(&c->driver);
  if (!wb.size || c->out_broken) return wb;
  const unsigned char *p = (const unsigned char *)wb.start;
  size_t off = c->out_left, unit = 0;
  while (off < wb.size && (unit = out_unit(p + off, wb.size - off)) && !out_list0(p + off, unit)) off += unit;
  if (off >= wb.size || !unit) return wb; /* nothing to rewrite: Proton's bytes as they are */
  /* rewrite: copy the whole buffer, list0 performatives as list8 */
  c->obuf.len = c->opos = 0;
  size_t from = 0;
  off = c->out_left;
  while (off < wb.size) {
    unit = out_unit(p + off, wb.size - off);
    if (!unit) break;
    if (out_list0(p + off, unit)) {
      buf_put(&c->obuf, p + from, off - from);
      buf_be32(&c->obuf, 14);
      buf_put(&c->obuf, p + off + 4, 7); /* doff, type, channel, 00 53 <code> */
      buf_put(&c->obuf, "\xc0\x01\x00", 3);
      from = off + unit;
    }
    off += unit;
  }
  buf_put(&c->obuf, p + from, wb.size - from);
  c->out_left = off > wb.size ? off - wb.size : 0;
  if (!unit && off < wb.size) c->out_broken = true;
  pn_connection_driver_write_done(&c->driver, wb.size);
  return pn_bytes(c->obuf.len, (const char *)c->obuf.p);
}

void emu_conn_output_done(emu_conn_t *c, size_t n)
{
  if (c->opos < c->obuf.len) {
    c->opos += n;
    if (c->opos >= c->obuf.len) c->obuf.len = c->opos = 0;
    return;
  }
  if (!c->out_broken) {
    /* follow the frame boundaries through the n bytes written */
    pn_bytes_t wb = pn_connection_driver_write_buffer(&c->driver);
    const unsigned char *p = (const unsigned char *)wb.start;
    size_t off = c->out_left, unit;
    while (off < n) {
      if (!(unit = out_unit(p + off, wb.size - off))) {
        c->out_broken = true;
        break;
      }
      off += unit;
    }
    c->out_left = off > n ? off - n : 0;
  }
  pn_connection_driver_write_done(&c->driver, n);
}

bool emu_conn_output_pending(emu_conn_t *c)
{
  return c->opos < c->obuf.len || pn_connection_driver_write_buffer(&c->driver).size > 0;
}

bool emu_conn_finished(emu_conn_t *c)
{
  return c->opos >= c->obuf.len && pn_connection_driver_finished(&c->driver);
}

void emu_conn_read_done(emu_conn_t *c, const void *p, size_t n)
{
  if (c->wire.violation) return; /* closing: nothing more reaches Proton */
  emu_wire_scan(&c->wire, p, n);
  if (c->wire.violation) {
    /* These bytes never reach Proton (the frame would abort the process); the
       connection closes with the reason, as for any framing error. */
    pn_connection_driver_errorf(&c->driver, "amqp:invalid-field", "%s", c->wire.violation);
    return;
  }
  pn_connection_driver_read_done(&c->driver, n);
}

/* ---------------------------------------------------------------- control */

emu_link_t *emu_reply_link(emu_conn_t *c, const char *reply_to, const char *node)
{
  emu_link_t *l;
  for (l = c->links; reply_to && l; l = l->next)
    if (l->kind == LINK_REPLY && l->target && strcmp(l->target, reply_to) == 0) return l;
  for (l = c->links; reply_to && l; l = l->next)
    if (l->kind == LINK_REPLY && strcmp(pn_link_name(l->pn), reply_to) == 0) return l;
  for (l = c->links; l; l = l->next)
    if (l->kind == LINK_REPLY && strcasecmp(l->node, node) == 0) return l;
  return NULL;
}

/* "00:10:00" for a duration in ms, as the service writes its idle timeout. */
static void hms(char *out, size_t n, int64_t ms)
{
  int64_t s = ms / 1000;
  snprintf(out, n, "%02lld:%02lld:%02lld", (long long)(s / 3600), (long long)(s / 60 % 60), (long long)(s % 60));
}

/* Detach idle sender/receiver links, close a connection without links for too long, and
 * recompute the connection's earliest idle deadline. */
static void conn_idle(emu_conn_t *c, int64_t now)
{
  const emu_options_t *o = &c->broker->opt;
  int64_t next = INT64_MAX;
  if (c->dead || (pn_connection_state(c->driver.connection) & PN_LOCAL_CLOSED)) {
    c->idle_check = INT64_MAX;
    return;
  }
  for (emu_link_t *l = c->links, *n; l && o->link_idle_ms > 0; l = n) {
    n = l->next;
    if (l->kind != LINK_PRODUCER && l->kind != LINK_CONSUMER) continue;
    int64_t due = l->active_ms + o->link_idle_ms;
    if (due > now || l->refused) {
      if (!l->refused && due < next) next = due;
      continue;
    }
    char t[32], d[512];
    hms(t, sizeof t, o->link_idle_ms);
    bool pub = l->kind == LINK_PRODUCER;
    snprintf(d, sizeof d, "The link '%s' is force detached by the broker due to errors occurred in %s. Detach origin: "
             "AmqpMessage%s.IdleTimerExpired: Idle timeout: %s.", pn_link_name(l->pn), pub ? "publisher" : "consumer",
             pub ? "Publisher" : "Consumer", t);
    pn_link_t *pl = l->pn;
    link_drop(l); /* may start the connection's timer: links are checked again below */
    link_close_err(pl, "amqp:link:detach-forced", d);
  }
  if (!c->links) {
    int64_t limit = c->had_link ? o->conn_idle_ms : o->conn_no_link_ms;
    int64_t since = c->had_link ? c->linkless_since : c->opened_emu;
    if (limit > 0 && since + limit <= now) {
      char d[256];
      snprintf(d, sizeof d, "The connection was inactive for more than the allowed %lld milliseconds and is closed by "
               "container 'LinkTracker'.", (long long)limit);
      emu_conn_drop(c, "amqp:connection:forced", d);
      c->idle_check = INT64_MAX;
      return;
    }
    if (limit > 0 && since + limit < next) next = since + limit;
  }
  c->idle_check = next;
}

void emu_conns_idle(emu_broker_t *b, int64_t now)
{
  for (emu_conn_t *c = b->conns; c; c = c->next)
    if (c->idle_check <= now) conn_idle(c, now);
}

int64_t emu_conns_idle_deadline(const emu_broker_t *b)
{
  int64_t d = INT64_MAX;
  for (const emu_conn_t *c = b->conns; c; c = c->next)
    if (c->idle_check < d) d = c->idle_check;
  return d;
}

void emu_conn_release_session_links(emu_sess_t *s)
{
  emu_link_t *l = s->owner;
  if (!l) return;
  s->owner = NULL;
  l->sess = NULL;
  l->refused = true;
  consumer_unlink(l);
  link_close_err(l->pn, "com.microsoft:session-lock-lost",
                 "The session lock has expired on the MessageSession. Accept a new MessageSession.");
  emu_sess_maybe_free(s);
}

void emu_detach_entity(emu_broker_t *b, const char *path, const char *cond)
{
  char *norm = emu_path_normalize(path);
  for (emu_conn_t *c = b->conns; c; c = c->next) {
    for (emu_link_t *l = c->links, *n; l; l = n) {
      n = l->next;
      if (!l->ent || (strcasecmp(l->ent->lname, norm) != 0 && strcasecmp(l->node, norm) != 0)) continue;
      pn_link_t *pl = l->pn;
      link_drop(l);
      link_close_err(pl, cond ? cond : "amqp:link:detach-forced", "The link was detached by the emulator's control surface.");
    }
  }
  free(norm);
}

static bool ent_within(const emu_entity_t *x, const emu_entity_t *e)
{
  for (; x; x = x->parent)
    if (x == e) return true;
  return false;
}

void emu_entity_set_off(emu_broker_t *b, emu_entity_t *e, uint8_t off)
{
  uint8_t newly = off & (uint8_t)~e->off;
  e->off = off;
  if (!newly) return;
  char why[1200];
  disabled_text(e, why, sizeof why);
  for (emu_conn_t *c = b->conns; c; c = c->next) {
    for (emu_link_t *l = c->links, *n; l; l = n) {
      n = l->next;
      if (l->ent != e) continue;
      if (!(l->kind == LINK_PRODUCER ? newly & EMU_SEND_OFF : l->kind == LINK_CONSUMER ? newly & EMU_RECV_OFF : 0))
        continue;
      pn_link_t *pl = l->pn;
      link_drop(l);
      link_close_err(pl, ENTITY_DISABLED, why);
    }
  }
}

/* Detach every link that uses e, its subscriptions or its dead-letter queue. */
void emu_detach_entity_tree(emu_broker_t *b, emu_entity_t *e, const char *cond)
{
  for (emu_conn_t *c = b->conns; c; c = c->next) {
    for (emu_link_t *l = c->links, *n; l; l = n) {
      n = l->next;
      if (!ent_within(l->ent, e)) continue;
      pn_link_t *pl = l->pn;
      link_drop(l);
      link_close_err(pl, cond, "The messaging entity was deleted.");
    }
  }
}
