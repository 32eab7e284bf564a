/*
 * store.c: entities, messages, sequence numbers, locks and timers.
 *
 * Layout of the file: the emulator clock and logging; two small containers
 * (an open-addressing index from 64-bit keys, and a min-heap of messages by
 * sequence number); the broker and its entities; message parsing and
 * re-encoding; then the broker semantics of protocol.md §10: enqueue (with
 * duplicate detection, scheduling, sessions, topics fan-out and forwarding),
 * take, lock, complete, abandon, release, defer, dead-letter, renew, and the
 * timers (lock expiry, scheduled activation, session lock expiry).
 *
 * Why a heap per entity: a dequeue must not move the queue as a whole, and a
 * message whose lock expires or is abandoned must come back "at or near the
 * front"; ordering the ready set by sequence number gives both in O(log n).
 * Locks of one entity all last the same duration and the clock never goes
 * back, so a FIFO list ordered by lock time is enough for lock expiry: the
 * next deadline of an entity is its first locked message.
 */
#include "emu.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

/* ---------------------------------------------------------------- clock */

int64_t emu_mono_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* UTC at start-up plus monotonic elapsed time: never goes back, anchored to UTC. */
int64_t emu_now(emu_broker_t *b)
{
  static int64_t base_utc = -1, base_mono;
  if (base_utc < 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    base_utc = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    base_mono = emu_mono_ms();
  }
  return base_utc + (emu_mono_ms() - base_mono) + (b ? b->fake_ms + b->skew_ms : 0);
}

int64_t emu_to_wire(const emu_broker_t *b, int64_t t)
{
  if (!b || t == INT64_MAX || t == INT64_MIN) return t;
  return t - b->skew_ms;
}

int64_t emu_from_wire(const emu_broker_t *b, int64_t t)
{
  if (!b || t == INT64_MIN || t >= INT64_MAX - b->skew_ms) return t;
  return t + b->skew_ms;
}

void emu_msg_from_wire(const emu_broker_t *b, emu_msg_t *m)
{
  if (m->scheduled_ms) m->scheduled_ms = emu_from_wire(b, m->scheduled_ms);
}

void emu_log(emu_broker_t *b, int level, const char *fmt, ...)
{
  if (b && level > b->opt.verbose) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "sbus-emulator: ");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* ---------------------------------------------------------------- index */

void idx_init(emu_index_t *x) { memset(x, 0, sizeof *x); }

void idx_free(emu_index_t *x)
{
  free(x->keys);
  free(x->vals);
  free(x->used);
  memset(x, 0, sizeof *x);
}

static size_t idx_slot(uint64_t key, size_t cap)
{
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdULL;
  key ^= key >> 33;
  return (size_t)key & (cap - 1);
}

static void idx_grow(emu_index_t *x)
{
  emu_index_t old = *x;
  size_t cap = old.cap ? old.cap : 16;
  if (old.n * 2 >= cap) cap *= 2;
  x->cap = cap;
  x->n = x->tomb = 0;
  x->keys = calloc(cap, sizeof *x->keys);
  x->vals = calloc(cap, sizeof *x->vals);
  x->used = calloc(cap, 1);
  if (!x->keys || !x->vals || !x->used) abort();
  for (size_t i = 0; i < old.cap; i++)
    if (old.used[i] == 1) idx_put(x, old.keys[i], old.vals[i]);
  free(old.keys);
  free(old.vals);
  free(old.used);
}

static long idx_find(const emu_index_t *x, uint64_t key)
{
  if (!x->cap) return -1;
  for (size_t i = idx_slot(key, x->cap), k = 0; k < x->cap; k++, i = (i + 1) & (x->cap - 1)) {
    if (x->used[i] == 0) return -1;
    if (x->used[i] == 1 && x->keys[i] == key) return (long)i;
  }
  return -1;
}

void *idx_get(const emu_index_t *x, uint64_t key)
{
  long i = idx_find(x, key);
  return i < 0 ? NULL : x->vals[i];
}

bool idx_has(const emu_index_t *x, uint64_t key) { return idx_find(x, key) >= 0; }

void idx_put(emu_index_t *x, uint64_t key, void *val)
{
  long f = idx_find(x, key);
  if (f >= 0) {
    x->vals[f] = val;
    return;
  }
  if ((x->n + x->tomb + 1) * 10 >= x->cap * 7) idx_grow(x);
  size_t i = idx_slot(key, x->cap);
  while (x->used[i] == 1) i = (i + 1) & (x->cap - 1);
  if (x->used[i] == 2) x->tomb--;
  x->used[i] = 1;
  x->keys[i] = key;
  x->vals[i] = val;
  x->n++;
}

void idx_del(emu_index_t *x, uint64_t key)
{
  long i = idx_find(x, key);
  if (i < 0) return;
  x->used[i] = 2;
  x->n--;
  x->tomb++;
}

uint64_t hash_str(const char *s, size_t n)
{
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= 1099511628211ULL;
  }
  return h;
}

/* ---------------------------------------------------------------- heap */

static void heap_set(emu_heap_t *h, size_t i, emu_msg_t *m)
{
  h->v[i] = m;
  m->heap_idx = i;
}

static void heap_up(emu_heap_t *h, size_t i)
{
  emu_msg_t *m = h->v[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (h->v[p]->seq <= m->seq) break;
    heap_set(h, i, h->v[p]);
    i = p;
  }
  heap_set(h, i, m);
}

static void heap_down(emu_heap_t *h, size_t i)
{
  emu_msg_t *m = h->v[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n) break;
    if (c + 1 < h->n && h->v[c + 1]->seq < h->v[c]->seq) c++;
    if (h->v[c]->seq >= m->seq) break;
    heap_set(h, i, h->v[c]);
    i = c;
  }
  heap_set(h, i, m);
}

static void heap_push(emu_heap_t *h, emu_msg_t *m)
{
  if (h->n == h->cap) {
    h->cap = h->cap ? h->cap * 2 : 64;
    h->v = realloc(h->v, h->cap * sizeof *h->v);
    if (!h->v) abort();
  }
  h->v[h->n++] = m;
  heap_up(h, h->n - 1);
}

static void heap_remove(emu_heap_t *h, emu_msg_t *m)
{
  size_t i = m->heap_idx;
  if (i >= h->n || h->v[i] != m) return;
  m->heap_idx = SIZE_MAX;
  h->n--;
  if (i == h->n) return;
  heap_set(h, i, h->v[h->n]);
  heap_down(h, i);
  heap_up(h, h->v[i]->heap_idx);
}

static emu_msg_t *heap_pop(emu_heap_t *h)
{
  if (!h->n) return NULL;
  emu_msg_t *m = h->v[0];
  heap_remove(h, m);
  return m;
}

/* ---------------------------------------------------------------- broker */

emu_broker_t *emu_broker_new(const emu_options_t *opt)
{
  emu_broker_t *b = calloc(1, sizeof *b);
  if (!b) abort();
  b->opt = *opt;
  if (!b->opt.max_message_size) b->opt.max_message_size = 262144;
  if (!b->opt.cbs_timeout_ms) b->opt.cbs_timeout_ms = 20000;
  if (!b->opt.idle_timeout_ms) b->opt.idle_timeout_ms = 240000;
  if (getrandom(b->rng, sizeof b->rng, 0) != sizeof b->rng) {
    b->rng[0] = (uint64_t)emu_mono_ms() * 0x9e3779b97f4a7c15ULL;
    b->rng[1] = (uint64_t)(uintptr_t)b ^ 0xdeadbeefcafef00dULL;
  }
  b->rng[0] |= 1;
  return b;
}

static uint64_t rng_next(emu_broker_t *b)
{
  uint64_t s1 = b->rng[0];
  const uint64_t s0 = b->rng[1];
  b->rng[0] = s0;
  s1 ^= s1 << 23;
  b->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
  return b->rng[1] + s0;
}

static void new_token(emu_broker_t *b, unsigned char t[16])
{
  uint64_t a = rng_next(b), c = rng_next(b);
  memcpy(t, &a, 8);
  memcpy(t + 8, &c, 8);
  t[6] = (t[6] & 0x0f) | 0x40; /* version 4 */
  t[8] = (t[8] & 0x3f) | 0x80; /* variant */
}

static uint64_t token_key(const unsigned char t[16])
{
  uint64_t k;
  memcpy(&k, t, 8);
  return k;
}

void emu_props_default(emu_props_t *p)
{
  memset(p, 0, sizeof *p);
  p->lock_ms = 60000;
  p->default_ttl_ms = INT64_MAX;
  p->dup_window_ms = 10 * 60000;
  p->max_delivery = 10;
}

void emu_props_free(emu_props_t *p)
{
  free(p->forward_to);
  free(p->forward_dlq_to);
  p->forward_to = p->forward_dlq_to = NULL;
}

static char *dup_lower(const char *s)
{
  char *r = strdup(s);
  if (!r) abort();
  for (char *p = r; *p; p++)
    if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
  return r;
}

static void props_copy(emu_props_t *d, const emu_props_t *s)
{
  *d = *s;
  d->forward_to = s->forward_to && *s->forward_to ? strdup(s->forward_to) : NULL;
  d->forward_dlq_to = s->forward_dlq_to && *s->forward_dlq_to ? strdup(s->forward_dlq_to) : NULL;
}

static emu_entity_t *entity_alloc(emu_broker_t *b, emu_kind_t kind, const char *name,
                                  emu_entity_t *parent, const emu_props_t *props)
{
  emu_entity_t *e = calloc(1, sizeof *e);
  if (!e) abort();
  e->name = strdup(name);
  e->lname = dup_lower(name);
  e->kind = kind;
  e->parent = parent;
  e->next_seq = 1;
  if (props) props_copy(&e->props, props);
  else emu_props_default(&e->props);
  e->next = b->entities;
  b->entities = e;
  return e;
}

/* A dead-letter sub-queue of e: its own messages and sequence, e's lock duration. */
static emu_entity_t *sub_queue(emu_broker_t *b, emu_entity_t *e, const char *suffix)
{
  char dl[1024];
  snprintf(dl, sizeof dl, "%s/%s", e->name, suffix);
  emu_props_t dp;
  emu_props_default(&dp);
  dp.lock_ms = e->props.lock_ms;
  dp.max_delivery = e->props.max_delivery;
  return entity_alloc(b, ENT_DLQ, dl, e, &dp);
}

emu_entity_t *emu_entity_add(emu_broker_t *b, emu_kind_t kind, const char *name,
                             emu_entity_t *parent, const emu_props_t *props)
{
  emu_entity_t *e = entity_alloc(b, kind, name, parent, props);
  if (kind == ENT_SUBSCRIPTION && parent) {
    parent->subs = realloc(parent->subs, (parent->nsubs + 1) * sizeof *parent->subs);
    if (!parent->subs) abort();
    parent->subs[parent->nsubs++] = e;
  }
  if (kind == ENT_QUEUE || kind == ENT_SUBSCRIPTION) e->dlq = sub_queue(b, e, "$DeadLetterQueue");
  return e;
}

emu_entity_t *emu_tdlq(emu_broker_t *b, emu_entity_t *e)
{
  if (e->kind != ENT_QUEUE && e->kind != ENT_SUBSCRIPTION) return NULL;
  if (!e->tdlq) e->tdlq = sub_queue(b, e, "$Transfer/$DeadLetterQueue");
  return e->tdlq;
}

static void entity_free_messages(emu_broker_t *b, emu_entity_t *e)
{
  while (e->head) emu_remove(b, e->head);
  while (e->sessions) {
    emu_sess_t *s = e->sessions;
    e->sessions = s->next;
    buf_free(&s->state);
    free(s->ready.v);
    free(s->id);
    free(s);
  }
}

static void entity_free(emu_broker_t *b, emu_entity_t *e)
{
  entity_free_messages(b, e);
  free(e->name);
  free(e->lname);
  emu_props_free(&e->props);
  idx_free(&e->by_seq);
  idx_free(&e->dups);
  free(e->ready.v);
  free(e->subs);
  while (e->rules) {
    emu_rule_t *r = e->rules;
    e->rules = r->next;
    emu_rule_free(r);
  }
  while (e->policies) {
    emu_policy_t *p = e->policies;
    e->policies = p->next;
    free(p->name);
    free(p->key);
    free(p);
  }
  free(e);
}

static void unlink_entity(emu_broker_t *b, emu_entity_t *e)
{
  for (emu_entity_t **pp = &b->entities; *pp; pp = &(*pp)->next) {
    if (*pp == e) {
      *pp = e->next;
      return;
    }
  }
}

/* Remove an entity, its DLQ and (topics) its subscriptions. Links must be detached first. */
void emu_entity_remove(emu_broker_t *b, emu_entity_t *e)
{
  while (e->nsubs) emu_entity_remove(b, e->subs[e->nsubs - 1]);
  if (e->kind == ENT_SUBSCRIPTION && e->parent) {
    emu_entity_t *t = e->parent;
    for (size_t i = 0; i < t->nsubs; i++) {
      if (t->subs[i] == e) {
        t->subs[i] = t->subs[--t->nsubs];
        break;
      }
    }
  }
  emu_entity_t *subq[2] = {e->dlq, e->tdlq};
  for (int i = 0; i < 2; i++) {
    if (!subq[i]) continue;
    unlink_entity(b, subq[i]);
    entity_free(b, subq[i]);
  }
  unlink_entity(b, e);
  entity_free(b, e);
}

void emu_broker_free(emu_broker_t *b)
{
  if (!b) return;
  while (b->conns) emu_conn_free(b->conns);
  while (b->entities) {
    emu_entity_t *e = b->entities;
    b->entities = e->next;
    entity_free(b, e);
  }
  while (b->policies) {
    emu_policy_t *p = b->policies;
    b->policies = p->next;
    free(p->name);
    free(p->key);
    free(p);
  }
  idx_free(&b->tokens);
  buf_free(&b->scratch);
  free(b->ns_name);
  free(b);
}

emu_entity_t *emu_entity_find(emu_broker_t *b, const char *path)
{
  for (emu_entity_t *e = b->entities; e; e = e->next)
    if (strcasecmp(e->lname, path) == 0) return e;
  static const char tsuffix[] = "/$transfer/$deadletterqueue";
  size_t n = strlen(path), sl = sizeof tsuffix - 1;
  if (n <= sl || strcasecmp(path + n - sl, tsuffix) != 0) return NULL;
  char *owner = strndup(path, n - sl);
  if (!owner) abort();
  emu_entity_t *e = emu_entity_find(b, owner);
  free(owner);
  return e ? emu_tdlq(b, e) : NULL;
}

/* ---------------------------------------------------------------- messages */

void msg_free(emu_msg_t *m)
{
  if (!m) return;
  free(m->data);
  free(m->message_id);
  free(m->dl_source);
  free(m);
}

static emu_msg_t *msg_alloc(void)
{
  emu_msg_t *m = calloc(1, sizeof *m);
  if (!m) abort();
  m->heap_idx = SIZE_MAX;
  m->expires_ms = INT64_MAX;
  m->priority = 4;
  return m;
}

emu_msg_t *msg_clone(const emu_msg_t *s)
{
  emu_msg_t *m = msg_alloc();
  size_t n = s->ann_len + s->props_len + s->app_len + s->body_len;
  m->data = malloc(n ? n : 1);
  if (!m->data) abort();
  memcpy(m->data, s->data, n);
  m->ann_len = s->ann_len;
  m->ann_count = s->ann_count;
  m->props_len = s->props_len;
  m->app_len = s->app_len;
  m->body_len = s->body_len;
  m->ttl_ms = s->ttl_ms;
  m->durable = s->durable;
  m->priority = s->priority;
  m->scheduled_ms = s->scheduled_ms;
  m->delivery_count = s->delivery_count;
  m->hops = s->hops;
  m->message_id = s->message_id ? strdup(s->message_id) : NULL;
  m->dl_source = s->dl_source ? strdup(s->dl_source) : NULL;
  return m;
}

/* Annotation keys the broker owns: dropped on input, stamped on output. */
static bool broker_owned_key(const amqp_val_t *k)
{
  static const char *const owned[] = {
    "x-opt-sequence-number", "x-opt-enqueued-time", "x-opt-locked-until", "x-opt-lock-token",
    "x-opt-message-state", "x-opt-enqueue-sequence-number", "x-opt-deadletter-source", NULL};
  for (int i = 0; owned[i]; i++)
    if (amqp_str_eq(k, owned[i])) return true;
  return false;
}

static void parse_header(emu_msg_t *m, const amqp_val_t *v)
{
  amqp_iter_t it;
  amqp_val_t f;
  amqp_iter_init(&it, v);
  for (int i = 0; amqp_iter_next(&it, &f); i++) {
    int64_t x = 0;
    bool bv = false;
    if (i == 0 && amqp_get_bool(&f, &bv)) m->durable = bv;
    if (i == 1 && amqp_get_i64(&f, &x)) m->priority = (uint8_t)x;
    if (i == 2 && amqp_get_i64(&f, &x) && x > 0) m->ttl_ms = (uint32_t)x;
  }
}

static void parse_annotations(emu_msg_t *m, const amqp_val_t *v, emu_buf_t *ann)
{
  amqp_iter_t it;
  amqp_val_t k, val;
  amqp_iter_init(&it, v);
  while (amqp_iter_next(&it, &k) && amqp_iter_next(&it, &val)) {
    if (broker_owned_key(&k)) continue;
    int64_t t;
    if (amqp_str_eq(&k, "x-opt-scheduled-enqueue-time") && amqp_get_i64(&val, &t)) m->scheduled_ms = t;
    buf_put(ann, k.start, k.total);
    buf_put(ann, val.start, val.total);
    m->ann_count += 2;
  }
}

static char *id_to_text(const amqp_val_t *v)
{
  char tmp[64];
  int64_t x;
  unsigned char u[16];
  char *s = amqp_dup_str(v);
  if (s) return s;
  if (v->code == AMQP_UUID && amqp_get_uuid(v, u)) {
    uuid_format(tmp, u);
    return strdup(tmp);
  }
  if (amqp_get_i64(v, &x)) {
    snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)x);
    return strdup(tmp);
  }
  if (v->code == AMQP_VBIN8 || v->code == AMQP_VBIN32) {
    char *h = malloc(v->size * 2 + 1);
    if (!h) abort();
    for (size_t i = 0; i < v->size; i++) sprintf(h + 2 * i, "%02x", v->data[i]);
    h[v->size * 2] = 0;
    return h;
  }
  return NULL;
}

/* Assemble m->data from its parts. */
static void msg_assemble(emu_msg_t *m, const emu_buf_t *ann, const void *props, size_t pl,
                         const void *app, size_t al, const void *body, size_t bl)
{
  size_t n = ann->len + pl + al + bl;
  unsigned char *d = malloc(n ? n : 1);
  if (!d) abort();
  if (ann->len) memcpy(d, ann->p, ann->len);
  if (pl) memcpy(d + ann->len, props, pl);
  if (al) memcpy(d + ann->len + pl, app, al);
  if (bl) memcpy(d + ann->len + pl + al, body, bl);
  free(m->data);
  m->data = d;
  m->ann_len = ann->len;
  m->props_len = pl;
  m->app_len = al;
  m->body_len = bl;
}

emu_msg_t *msg_parse(const unsigned char *p, size_t n, const char **err)
{
  emu_msg_t *m = msg_alloc();
  emu_buf_t ann = {0}, body = {0};
  const unsigned char *props = NULL, *app = NULL;
  size_t pl = 0, al = 0;
  bool has_body = false;
  while (n > 0) {
    amqp_val_t v;
    long k = amqp_decode(p, n, &v);
    if (k < 0 || !v.described || v.desc < SEC_HEADER || v.desc > SEC_FOOTER) {
      *err = "malformed message section";
      goto fail;
    }
    switch (v.desc) {
    case SEC_HEADER: parse_header(m, &v); break;
    case SEC_DELIVERY_ANN: break;
    case SEC_MESSAGE_ANN: parse_annotations(m, &v, &ann); break;
    case SEC_PROPERTIES: props = p; pl = (size_t)k; break;
    case SEC_APP_PROPS: app = p; al = (size_t)k; break;
    default: buf_put(&body, p, (size_t)k); has_body = has_body || v.desc != SEC_FOOTER; break;
    }
    p += k;
    n -= (size_t)k;
  }
  if (!has_body) {
    *err = "message without a body section";
    goto fail;
  }
  msg_assemble(m, &ann, props, pl, app, al, body.p, body.len);
  amqp_val_t id;
  if (msg_prop(m, 0, &id)) m->message_id = id_to_text(&id);
  buf_free(&ann);
  buf_free(&body);
  return m;
fail:
  buf_free(&ann);
  buf_free(&body);
  msg_free(m);
  return NULL;
}

bool msg_prop(const emu_msg_t *m, int field, amqp_val_t *v)
{
  if (!m->props_len) return false;
  amqp_val_t l;
  if (amqp_decode(m->data + m->ann_len, m->props_len, &l) < 0 || !amqp_is_list(&l)) return false;
  amqp_iter_t it;
  amqp_iter_init(&it, &l);
  for (int i = 0; amqp_iter_next(&it, v); i++)
    if (i == field) return !amqp_is_null(v);
  return false;
}

bool msg_app_prop(const emu_msg_t *m, const char *name, amqp_val_t *v)
{
  if (!m->app_len) return false;
  amqp_val_t map;
  if (amqp_decode(m->data + m->ann_len + m->props_len, m->app_len, &map) < 0) return false;
  return amqp_map_get(&map, name, v);
}

static void rebuild_keep_ann(emu_msg_t *m, const void *props, size_t pl, const void *app, size_t al)
{
  emu_buf_t ann = {0};
  buf_put(&ann, m->data, m->ann_len);
  emu_buf_t body = {0};
  buf_put(&body, m->data + m->ann_len + m->props_len + m->app_len, m->body_len);
  msg_assemble(m, &ann, props, pl, app, al, body.p, body.len);
  buf_free(&ann);
  buf_free(&body);
}

void msg_app_merge(emu_msg_t *m, const amqp_val_t *map, char *reason, char *desc, size_t n)
{
  if (!amqp_is_map(map)) return;
  amqp_iter_t it;
  amqp_val_t k, v;
  amqp_iter_init(&it, map);
  while (amqp_iter_next(&it, &k) && amqp_iter_next(&it, &v)) {
    char *name = amqp_dup_str(&k);
    if (!name || !name[0] || amqp_is_null(&v)) {
      free(name);
      continue;
    }
    char *dst = !reason ? NULL : !strcmp(name, "DeadLetterReason") ? reason
              : !strcmp(name, "DeadLetterErrorDescription") ? desc : NULL;
    const char *s;
    size_t sl;
    if (dst) {
      if (amqp_get_str(&v, &s, &sl)) {
        if (sl > n - 1) sl = n - 1;
        memcpy(dst, s, sl);
        dst[sl] = 0;
      }
    } else {
      msg_app_set(m, name, v.start, v.total);
    }
    free(name);
  }
}

void msg_app_set(emu_msg_t *m, const char *name, const unsigned char *val, size_t vlen)
{
  emu_buf_t out = {0};
  enc_descriptor(&out, SEC_APP_PROPS);
  size_t mark = enc_map_begin(&out);
  uint32_t count = 0;
  amqp_val_t map, k, v;
  if (m->app_len && amqp_decode(m->data + m->ann_len + m->props_len, m->app_len, &map) > 0) {
    amqp_iter_t it;
    amqp_iter_init(&it, &map);
    while (amqp_iter_next(&it, &k) && amqp_iter_next(&it, &v)) {
      if (amqp_str_eq(&k, name)) continue;
      buf_put(&out, k.start, k.total);
      buf_put(&out, v.start, v.total);
      count += 2;
    }
  }
  if (val) {
    enc_str(&out, name);
    buf_put(&out, val, vlen);
    count += 2;
  }
  enc_compound_end(&out, mark, count);
  emu_buf_t props = {0};
  buf_put(&props, m->data + m->ann_len, m->props_len);
  rebuild_keep_ann(m, props.p, props.len, out.p, out.len);
  buf_free(&props);
  buf_free(&out);
}

void msg_props_set(emu_msg_t *m, int field, const unsigned char *val, size_t vlen)
{
  emu_buf_t out = {0};
  enc_descriptor(&out, SEC_PROPERTIES);
  size_t mark = enc_list_begin(&out);
  amqp_val_t l, f;
  amqp_iter_t it = {0};
  bool have = m->props_len && amqp_decode(m->data + m->ann_len, m->props_len, &l) > 0 && amqp_is_list(&l);
  if (have) amqp_iter_init(&it, &l);
  int n = 0;
  for (; n < 13; n++) {
    bool got = have && amqp_iter_next(&it, &f);
    if (n == field) {
      if (val) buf_put(&out, val, vlen);
      else enc_null(&out);
    } else if (got) {
      buf_put(&out, f.start, f.total);
    } else {
      enc_null(&out);
    }
  }
  enc_compound_end(&out, mark, 13);
  emu_buf_t app = {0};
  buf_put(&app, m->data + m->ann_len + m->props_len, m->app_len);
  rebuild_keep_ann(m, out.p, out.len, app.p, app.len);
  buf_free(&app);
  buf_free(&out);
  if (field == 0) {
    free(m->message_id);
    m->message_id = NULL;
    amqp_val_t id;
    if (msg_prop(m, 0, &id)) m->message_id = id_to_text(&id);
  }
}

static void enc_header(emu_buf_t *o, const emu_msg_t *m)
{
  enc_descriptor(o, SEC_HEADER);
  size_t mark = enc_list_begin(o);
  enc_bool(o, m->durable);
  buf_u8(o, AMQP_UBYTE);
  buf_u8(o, m->priority);
  if (m->ttl_ms) enc_uint(o, m->ttl_ms);
  else enc_null(o);
  enc_bool(o, false);
  enc_uint(o, m->delivery_count);
  enc_compound_end(o, mark, 5);
}

void msg_encode(emu_broker_t *b, const emu_msg_t *m, emu_buf_t *o, int mode)
{
  enc_header(o, m);
  if (mode == 2) {
    enc_descriptor(o, SEC_DELIVERY_ANN);
    size_t mk = enc_map_begin(o);
    enc_sym(o, "x-opt-lock-token");
    enc_uuid(o, m->token);
    enc_sym(o, "x-opt-locked-until");
    enc_timestamp(o, emu_to_wire(b, m->locked_until));
    enc_compound_end(o, mk, 4);
  }
  enc_descriptor(o, SEC_MESSAGE_ANN);
  size_t mark = enc_map_begin(o);
  uint32_t n = 4;
  enc_sym(o, "x-opt-sequence-number");
  enc_long(o, m->seq);
  enc_sym(o, "x-opt-enqueued-time");
  enc_timestamp(o, emu_to_wire(b, m->enqueued_ms));
  if (m->locked && mode != 1) {
    enc_sym(o, "x-opt-locked-until");
    enc_timestamp(o, emu_to_wire(b, m->locked_until));
    n += 2;
  }
  if (m->state != MSG_ACTIVE || mode == 1) {
    enc_sym(o, "x-opt-message-state");
    enc_int(o, m->state);
    n += 2;
  }
  if (m->enq_seq) {
    enc_sym(o, "x-opt-enqueue-sequence-number");
    enc_long(o, m->enq_seq);
    n += 2;
  }
  if (m->dl_source) {
    enc_sym(o, "x-opt-deadletter-source");
    enc_str(o, m->dl_source);
    n += 2;
  }
  buf_put(o, m->data, m->ann_len);
  enc_compound_end(o, mark, n + m->ann_count);
  buf_put(o, m->data + m->ann_len, m->props_len + m->app_len + m->body_len);
}

/* A batch (transfer message-format 0x80013700): every data section of the envelope holds one
 * complete encoded message; the envelope's other sections are ignored. */
int msg_split_batch(const unsigned char *p, size_t n, emu_msg_t ***out, const char **err)
{
  size_t cap = 0, cnt = 0;
  emu_msg_t **v = NULL;
  while (n > 0) {
    amqp_val_t s;
    long k = amqp_decode(p, n, &s);
    if (k < 0 || !s.described) {
      *err = "malformed batch envelope";
      goto bad;
    }
    p += k;
    n -= (size_t)k;
    if (s.desc != SEC_DATA) continue;
    if (cnt == cap) {
      cap = cap ? cap * 2 : 8;
      v = realloc(v, cap * sizeof *v);
      if (!v) abort();
    }
    if (!(v[cnt] = msg_parse(s.data, s.size, err))) goto bad;
    cnt++;
  }
  if (!cnt) {
    *err = "a batch without messages";
    goto bad;
  }
  *out = v;
  return (int)cnt;
bad:
  for (size_t i = 0; i < cnt; i++) msg_free(v[i]);
  free(v);
  return -1;
}

/* ---------------------------------------------------------------- lists */

static void all_insert(emu_entity_t *e, emu_msg_t *m)
{
  emu_msg_t *after = e->tail;
  while (after && after->seq > m->seq) after = after->prev;
  m->prev = after;
  m->next = after ? after->next : e->head;
  if (m->next) m->next->prev = m;
  else e->tail = m;
  if (after) after->next = m;
  else e->head = m;
}

static void all_unlink(emu_entity_t *e, emu_msg_t *m)
{
  if (m->prev) m->prev->next = m->next;
  else e->head = m->next;
  if (m->next) m->next->prev = m->prev;
  else e->tail = m->prev;
  m->prev = m->next = NULL;
}

static void lock_append(emu_entity_t *e, emu_msg_t *m)
{
  m->lnext = NULL;
  m->lprev = e->lock_tail;
  if (e->lock_tail) e->lock_tail->lnext = m;
  else e->lock_head = m;
  e->lock_tail = m;
}

static void lock_unlink(emu_entity_t *e, emu_msg_t *m)
{
  if (m->lprev) m->lprev->lnext = m->lnext;
  else if (e->lock_head == m) e->lock_head = m->lnext;
  if (m->lnext) m->lnext->lprev = m->lprev;
  else if (e->lock_tail == m) e->lock_tail = m->lprev;
  m->lprev = m->lnext = NULL;
}

static void sched_insert(emu_entity_t *e, emu_msg_t *m)
{
  emu_msg_t **pp = &e->sched_head, *prev = NULL;
  while (*pp && (*pp)->scheduled_ms <= m->scheduled_ms) {
    prev = *pp;
    pp = &(*pp)->lnext;
  }
  m->lnext = *pp;
  m->lprev = prev;
  if (*pp) (*pp)->lprev = m;
  *pp = m;
}

static void sched_unlink(emu_entity_t *e, emu_msg_t *m)
{
  if (m->lprev) m->lprev->lnext = m->lnext;
  else e->sched_head = m->lnext;
  if (m->lnext) m->lnext->lprev = m->lprev;
  m->lprev = m->lnext = NULL;
}

/* ---------------------------------------------------------------- sessions */

emu_sess_t *emu_sess_get(emu_entity_t *e, const char *id, bool create)
{
  for (emu_sess_t *s = e->sessions; s; s = s->next)
    if (strcmp(s->id, id) == 0) return s;
  if (!create) return NULL;
  emu_sess_t *s = calloc(1, sizeof *s);
  if (!s) abort();
  s->id = strdup(id);
  s->ent = e;
  s->next = e->sessions;
  e->sessions = s;
  return s;
}

/* Free a session that holds nothing: no messages, no state, no owner. */
void emu_sess_maybe_free(emu_sess_t *s)
{
  if (s->nmsgs || s->has_state || s->owner) return;
  emu_entity_t *e = s->ent;
  for (emu_sess_t **pp = &e->sessions; *pp; pp = &(*pp)->next) {
    if (*pp == s) {
      *pp = s->next;
      break;
    }
  }
  buf_free(&s->state);
  free(s->ready.v);
  free(s->id);
  free(s);
}

emu_sess_t *emu_sess_next_free(emu_broker_t *b, emu_entity_t *e)
{
  emu_sess_t *best = NULL;
  for (emu_sess_t *s = e->sessions; s; s = s->next) {
    if (s->owner || !s->ready.n) continue;
    if (!best || s->ready.v[0]->seq < best->ready.v[0]->seq) best = s;
  }
  (void)b;
  return best;
}

/* Release a session lock: its locked messages become available again, uncounted. */
void emu_sess_release(emu_broker_t *b, emu_sess_t *s)
{
  s->owner = NULL;
  emu_entity_t *e = s->ent;
  for (emu_msg_t *m = e->head, *n; m; m = n) {
    n = m->next;
    if (m->sess == s && m->locked) emu_unlock(b, m, false);
  }
  emu_sess_maybe_free(s);
}

/* ---------------------------------------------------------------- semantics */

static emu_heap_t *ready_of(emu_msg_t *m)
{
  return m->sess ? &m->sess->ready : &m->ent->ready;
}

static void make_ready(emu_broker_t *b, emu_msg_t *m)
{
  (void)b;
  heap_push(ready_of(m), m);
  m->ent->dirty = true;
}

/* Take m out of every structure of its entity (not freed). */
static void detach(emu_broker_t *b, emu_msg_t *m)
{
  emu_entity_t *e = m->ent;
  if (m->heap_idx != SIZE_MAX) heap_remove(ready_of(m), m);
  if (m->locked) {
    if (!m->sess) lock_unlink(e, m);
    idx_del(&b->tokens, token_key(m->token));
    e->counts.locked--;
    m->locked = false;
  }
  if (m->state == MSG_SCHEDULED) {
    sched_unlink(e, m);
    e->counts.scheduled--;
  } else if (m->state == MSG_DEFERRED) {
    e->counts.deferred--;
  } else {
    e->counts.active--;
  }
  e->counts.total--;
  if (m->dlv) {
    pn_delivery_set_context(m->dlv, NULL);
    m->dlv = NULL;
  }
  all_unlink(e, m);
  idx_del(&e->by_seq, (uint64_t)m->seq);
  if (m->sess) {
    emu_sess_t *s = m->sess;
    s->nmsgs--;
    m->sess = NULL;
    emu_sess_maybe_free(s);
  }
  m->ent = NULL;
}

void emu_remove(emu_broker_t *b, emu_msg_t *m)
{
  detach(b, m);
  msg_free(m);
}

static bool is_expired(emu_broker_t *b, const emu_msg_t *m)
{
  return m->ent->kind != ENT_DLQ && m->expires_ms <= emu_now(b);
}

static void expire(emu_broker_t *b, emu_msg_t *m)
{
  if (m->ent->props.dl_on_expiration)
    emu_deadletter(b, m, "TTLExpiredException", "The message expired and was dead lettered.");
  else
    emu_remove(b, m);
}

static const char *session_id_of(emu_msg_t *m, char *tmp, size_t n)
{
  amqp_val_t v;
  const char *s;
  size_t len;
  if (!msg_prop(m, 10, &v) || !amqp_get_str(&v, &s, &len)) return NULL;
  if (len >= n) len = n - 1;
  memcpy(tmp, s, len);
  tmp[len] = 0;
  return tmp;
}

/* Store m in e with sequence number seq (already assigned). */
static void store(emu_broker_t *b, emu_entity_t *e, emu_msg_t *m)
{
  int64_t now = emu_now(b);
  m->ent = e;
  m->enqueued_ms = now;
  if (e->kind != ENT_DLQ) {
    int64_t ttl = e->props.default_ttl_ms;
    if (m->ttl_ms && (int64_t)m->ttl_ms < ttl) ttl = m->ttl_ms;
    m->expires_ms = ttl >= INT64_MAX - now ? INT64_MAX : now + ttl;
  } else {
    m->expires_ms = INT64_MAX;
  }
  all_insert(e, m);
  idx_put(&e->by_seq, (uint64_t)m->seq, m);
  e->counts.total++;
  if (e->props.requires_session && e->kind != ENT_DLQ) {
    char tmp[256];
    const char *sid = session_id_of(m, tmp, sizeof tmp);
    m->sess = emu_sess_get(e, sid ? sid : "", true);
    m->sess->nmsgs++;
  }
  if (m->scheduled_ms > now && m->state != MSG_DEFERRED) {
    m->state = MSG_SCHEDULED;
    e->counts.scheduled++;
    sched_insert(e, m);
    return;
  }
  if (m->state == MSG_DEFERRED) {
    e->counts.deferred++;
    return;
  }
  m->state = MSG_ACTIVE;
  e->counts.active++;
  make_ready(b, m);
}

static int64_t take_seq(emu_entity_t *e)
{
  emu_entity_t *src = e->kind == ENT_SUBSCRIPTION ? e->parent : e;
  return src->next_seq++;
}

static bool dup_seen(emu_broker_t *b, emu_entity_t *e, const emu_msg_t *m)
{
  if (!e->props.dup_detect || !m->message_id) return false;
  int64_t now = emu_now(b);
  uint64_t h = hash_str(m->message_id, strlen(m->message_id));
  if (idx_has(&e->dups, h)) {
    int64_t until = (int64_t)(intptr_t)idx_get(&e->dups, h);
    if (until > now) return true;
  }
  if (e->dups.n > 4096 && e->dups.n % 1024 == 0) {
    for (size_t i = 0; i < e->dups.cap; i++)
      if (e->dups.used[i] == 1 && (int64_t)(intptr_t)e->dups.vals[i] <= now) idx_del(&e->dups, e->dups.keys[i]);
  }
  idx_put(&e->dups, h, (void *)(intptr_t)(now + e->props.dup_window_ms));
  return false;
}

static int enqueue_local(emu_broker_t *b, emu_entity_t *e, emu_msg_t *m, int64_t seq,
                         const char **cond, char *desc, size_t dlen);

static void set_str_app(emu_msg_t *m, const char *name, const char *val);

/* Auto-forward m (owned) to the entity named `to`. A message that has passed through four
 * entities already, or whose destination does not exist, goes to from's transfer dead-letter
 * queue instead (DOC-DLQ "Dead-lettering in auto forward scenarios"). */
static int forward(emu_broker_t *b, emu_entity_t *from, const char *to, emu_msg_t *m,
                   const char **cond, char *desc, size_t dlen)
{
  emu_entity_t *t = emu_entity_find(b, to);
  const char *reason = NULL, *why = NULL;
  char what[512];
  if (!t || t->kind == ENT_DLQ) {
    reason = "MessagingEntityNotFound";
    snprintf(what, sizeof what, "The auto-forward destination '%s' could not be found.", to);
    why = what;
  } else if (++m->hops > 4) {
    reason = "MaxTransferHopCountExceeded";
    why = "Maximum transfer hop count exceeded.";
  }
  if (!reason) return emu_enqueue(b, t, m, cond, desc, dlen);
  m->hops = 0;
  emu_entity_t *q = emu_tdlq(b, from);
  if (!q) {
    msg_free(m);
    return 0;
  }
  set_str_app(m, "DeadLetterReason", reason);
  set_str_app(m, "DeadLetterErrorDescription", why);
  m->state = MSG_ACTIVE;
  store(b, q, m);
  return 0;
}

static int enqueue_local(emu_broker_t *b, emu_entity_t *e, emu_msg_t *m, int64_t seq,
                         const char **cond, char *desc, size_t dlen)
{
  char tmp[256];
  if (e->props.requires_session && e->kind != ENT_DLQ && !session_id_of(m, tmp, sizeof tmp)) {
    *cond = "amqp:not-allowed";
    snprintf(desc, dlen, "The SessionId was not set on a message, and it cannot be sent to the entity '%s'. Entities that have session support enabled can only receive messages that have the SessionId set to a valid value.", e->name);
    msg_free(m);
    return -1;
  }
  if (e->props.forward_to && e->kind != ENT_DLQ) {
    m->enq_seq = seq;
    m->seq = seq;
    return forward(b, e, e->props.forward_to, m, cond, desc, dlen);
  }
  m->seq = seq;
  store(b, e, m);
  return 0;
}

static int enqueue_topic(emu_broker_t *b, emu_entity_t *t, emu_msg_t *m, const char **cond,
                         char *desc, size_t dlen)
{
  int64_t seq = t->next_seq++;
  for (size_t i = 0; i < t->nsubs; i++) {
    emu_entity_t *s = t->subs[i];
    const emu_rule_t *hit = NULL;
    for (const emu_rule_t *r = s->rules; r && !hit; r = r->next)
      if (emu_rule_match(r, m)) hit = r;
    if (!hit) continue;
    emu_msg_t *c = msg_clone(m);
    if (hit->action) sql_action_apply(hit->action, c);
    const char *cc = NULL;
    char dd[256];
    if (enqueue_local(b, s, c, seq, &cc, dd, sizeof dd) < 0)
      emu_log(b, 1, "subscription %s refused a message: %s", s->name, dd);
  }
  msg_free(m);
  (void)cond;
  (void)desc;
  (void)dlen;
  return 0;
}

/* The service stamps a message-id on messages sent without one (Microsoft's JS SDK relies on
 * it to track lock renewal); like .NET's Guid "N" format: 32 hex digits. */
static void stamp_message_id(emu_broker_t *b, emu_msg_t *m)
{
  unsigned char u[16];
  char hex[33];
  new_token(b, u);
  static const char digits[] = "0123456789abcdef";
  for (int i = 0; i < 16; i++) { /* snprintf per byte was an eighth of the emulator's CPU */
    hex[2 * i] = digits[u[i] >> 4];
    hex[2 * i + 1] = digits[u[i] & 15];
  }
  hex[32] = 0;
  emu_buf_t v = {0};
  enc_str(&v, hex);
  msg_props_set(m, 0, v.p, v.len);
  buf_free(&v);
}

int emu_enqueue(emu_broker_t *b, emu_entity_t *e, emu_msg_t *m, const char **cond, char *desc, size_t dlen)
{
  m->delivery_count = 0;
  m->state = MSG_ACTIVE;
  m->locked = false;
  b->stat_in++;
  if (!m->message_id) stamp_message_id(b, m);
  if (dup_seen(b, e->kind == ENT_SUBSCRIPTION ? e->parent : e, m)) {
    msg_free(m);
    return 0;
  }
  if (e->kind == ENT_TOPIC) return enqueue_topic(b, e, m, cond, desc, dlen);
  return enqueue_local(b, e, m, take_seq(e), cond, desc, dlen);
}

emu_msg_t *emu_take(emu_broker_t *b, emu_entity_t *e, emu_sess_t *s)
{
  emu_heap_t *h = s ? &s->ready : &e->ready;
  for (;;) {
    emu_msg_t *m = heap_pop(h);
    if (!m) return NULL;
    if (!is_expired(b, m)) return m;
    expire(b, m);
  }
}

void emu_lock(emu_broker_t *b, emu_msg_t *m)
{
  emu_entity_t *e = m->ent;
  if (m->heap_idx != SIZE_MAX) heap_remove(ready_of(m), m);
  new_token(b, m->token);
  idx_put(&b->tokens, token_key(m->token), m);
  m->locked = true;
  e->counts.locked++;
  if (m->sess) {
    m->locked_until = m->sess->locked_until;
    return;
  }
  m->locked_until = emu_now(b) + e->props.lock_ms;
  lock_append(e, m);
}

void emu_unlock(emu_broker_t *b, emu_msg_t *m, bool count)
{
  emu_entity_t *e = m->ent;
  if (m->locked) {
    if (!m->sess) lock_unlink(e, m);
    idx_del(&b->tokens, token_key(m->token));
    e->counts.locked--;
    m->locked = false;
  }
  if (m->dlv) {
    pn_delivery_set_context(m->dlv, NULL);
    m->dlv = NULL;
  }
  if (count) m->delivery_count++;
  if (m->state != MSG_ACTIVE) return;
  if (count && e->kind != ENT_DLQ && (int)m->delivery_count >= e->props.max_delivery) {
    char d[128];
    snprintf(d, sizeof d, "Message could not be consumed after %d delivery attempts.", e->props.max_delivery);
    emu_deadletter(b, m, "MaxDeliveryCountExceeded", d);
    return;
  }
  if (is_expired(b, m)) {
    expire(b, m);
    return;
  }
  make_ready(b, m);
}

void emu_abandon(emu_broker_t *b, emu_msg_t *m) { emu_unlock(b, m, true); }

void emu_defer(emu_broker_t *b, emu_msg_t *m)
{
  emu_entity_t *e = m->ent;
  if (m->state == MSG_ACTIVE) {
    e->counts.active--;
    e->counts.deferred++;
    m->state = MSG_DEFERRED;
  }
  emu_unlock(b, m, false);
}

static void set_str_app(emu_msg_t *m, const char *name, const char *val)
{
  emu_buf_t v = {0};
  enc_str(&v, val);
  msg_app_set(m, name, v.p, v.len);
  buf_free(&v);
}

void emu_deadletter(emu_broker_t *b, emu_msg_t *m, const char *reason, const char *desc)
{
  emu_entity_t *e = m->ent;
  if (e->kind == ENT_DLQ || !e->dlq) {
    emu_unlock(b, m, false);
    return;
  }
  detach(b, m);
  if (reason) set_str_app(m, "DeadLetterReason", reason);
  if (desc) set_str_app(m, "DeadLetterErrorDescription", desc);
  m->state = MSG_ACTIVE;
  if (e->props.forward_dlq_to) {
    const char *c;
    char d[256];
    free(m->dl_source);
    m->dl_source = strdup(e->name);
    m->enq_seq = m->seq;
    forward(b, e, e->props.forward_dlq_to, m, &c, d, sizeof d);
    return;
  }
  store(b, e->dlq, m);
}

int64_t emu_renew(emu_broker_t *b, emu_msg_t *m)
{
  if (!m->locked) return -1;
  if (m->sess) return m->locked_until;
  m->locked_until = emu_now(b) + m->ent->props.lock_ms;
  lock_unlink(m->ent, m);
  lock_append(m->ent, m);
  return m->locked_until;
}

emu_msg_t *emu_find_token(emu_broker_t *b, const unsigned char token[16])
{
  emu_msg_t *m = idx_get(&b->tokens, token_key(token));
  if (!m || memcmp(m->token, token, 16) != 0 || !m->locked) return NULL;
  return m;
}

emu_msg_t *emu_find_seq(emu_entity_t *e, int64_t seq) { return idx_get(&e->by_seq, (uint64_t)seq); }

/* ---------------------------------------------------------------- timers */

static void activate(emu_broker_t *b, emu_msg_t *m)
{
  emu_entity_t *e = m->ent;
  sched_unlink(e, m);
  e->counts.scheduled--;
  all_unlink(e, m);
  idx_del(&e->by_seq, (uint64_t)m->seq);
  m->seq = take_seq(e);
  all_insert(e, m);
  idx_put(&e->by_seq, (uint64_t)m->seq, m);
  m->state = MSG_ACTIVE;
  m->enqueued_ms = emu_now(b);
  e->counts.active++;
  make_ready(b, m);
}

static void session_lock_expired(emu_broker_t *b, emu_sess_t *s)
{
  emu_link_t *owner = s->owner;
  emu_entity_t *e = s->ent;
  for (emu_msg_t *m = e->head, *n; m; m = n) {
    n = m->next;
    if (m->sess == s && m->locked) emu_unlock(b, m, true); /* counts, may dead-letter */
  }
  if (owner) emu_conn_release_session_links(s);
}

static void entity_tick(emu_broker_t *b, emu_entity_t *e, int64_t now)
{
  while (e->lock_head && e->lock_head->locked_until <= now) emu_unlock(b, e->lock_head, true);
  while (e->sched_head && e->sched_head->scheduled_ms <= now) activate(b, e->sched_head);
  if (emu_waiting_deadline(e) <= now) e->dirty = true;
  for (emu_sess_t *s = e->sessions, *n; s; s = n) {
    n = s->next;
    if (s->owner && s->locked_until <= now) session_lock_expired(b, s);
  }
}

void emu_tick(emu_broker_t *b)
{
  int64_t now = emu_now(b);
  for (emu_entity_t *e = b->entities; e; e = e->next) entity_tick(b, e, now);
  emu_conns_idle(b, now);
  emu_dispatch_all(b);
}

int64_t emu_next_deadline(emu_broker_t *b)
{
  int64_t d = INT64_MAX;
  for (emu_entity_t *e = b->entities; e; e = e->next) {
    if (e->lock_head && e->lock_head->locked_until < d) d = e->lock_head->locked_until;
    if (e->sched_head && e->sched_head->scheduled_ms < d) d = e->sched_head->scheduled_ms;
    for (emu_sess_t *s = e->sessions; s; s = s->next)
      if (s->owner && s->locked_until < d) d = s->locked_until;
    int64_t w = emu_waiting_deadline(e);
    if (w < d) d = w;
  }
  int64_t c = emu_conns_idle_deadline(b);
  return c < d ? c : d;
}

void emu_sweep_expired(emu_broker_t *b, emu_entity_t *e)
{
  for (emu_msg_t *m = e->head, *n; m; m = n) {
    n = m->next;
    if (m->state == MSG_ACTIVE && !m->locked && is_expired(b, m)) expire(b, m);
  }
}

void emu_counts(emu_entity_t *e, emu_counts_t *c) { *c = e->counts; }

/* ---------------------------------------------------------------- rules */

void emu_rule_free(emu_rule_t *r)
{
  if (!r) return;
  free(r->name);
  free(r->sql);
  sql_expr_free(r->expr);
  for (int i = 0; i < 8; i++) free(r->corr[i]);
  while (r->corr_props) {
    emu_corr_prop_t *p = r->corr_props;
    r->corr_props = p->next;
    free(p->name);
    buf_free(&p->value);
    free(p);
  }
  free(r->action_sql);
  sql_action_free(r->action);
  free(r);
}

/* Compare two AMQP values by meaning: strings by text, numbers by value. */
static bool value_equal(const amqp_val_t *a, const amqp_val_t *b)
{
  const char *s, *t;
  size_t n, k;
  int64_t x, y;
  bool p, q;
  if (amqp_get_str(a, &s, &n) && amqp_get_str(b, &t, &k)) return n == k && memcmp(s, t, n) == 0;
  if (amqp_get_i64(a, &x) && amqp_get_i64(b, &y)) return x == y;
  if (amqp_get_bool(a, &p) && amqp_get_bool(b, &q)) return p == q;
  return a->total == b->total && memcmp(a->start, b->start, a->total) == 0;
}

static bool prop_text_eq(const emu_msg_t *m, int field, const char *want)
{
  amqp_val_t v;
  if (!msg_prop(m, field, &v)) return false;
  char *t = id_to_text(&v);
  bool eq = t && strcmp(t, want) == 0;
  free(t);
  return eq;
}

static bool corr_match(const emu_rule_t *r, const emu_msg_t *m)
{
  /* properties field numbers for CORR_* */
  static const int field[8] = {5, 0, 2, 4, 3, 10, 12, 6};
  for (int i = 0; i < 8; i++)
    if (r->corr[i] && !prop_text_eq(m, field[i], r->corr[i])) return false;
  for (const emu_corr_prop_t *p = r->corr_props; p; p = p->next) {
    amqp_val_t have, want;
    if (!msg_app_prop(m, p->name, &have)) return false;
    if (amqp_decode(p->value.p, p->value.len, &want) < 0 || !value_equal(&have, &want)) return false;
  }
  return true;
}

bool emu_rule_match(const emu_rule_t *r, const emu_msg_t *m)
{
  switch (r->kind) {
  case FILTER_TRUE: return true;
  case FILTER_FALSE: return false;
  case FILTER_SQL: return r->expr && sql_filter_match(r->expr, m);
  case FILTER_CORRELATION: return corr_match(r, m);
  }
  return false;
}
