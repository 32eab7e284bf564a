/*
 * control.c: the HTTP control surface for tests (see docs/emulator.md).
 *
 * GET /health, GET /entities (counters per entity), POST /clock (move the
 * emulator clock forward), POST /faults (drop connections, force-detach an
 * entity's links, fail the next N operations of a kind, delay settlement
 * replies), POST /entities and DELETE /entities/<path> (create and delete
 * queues, topics and subscriptions at run time, in Microsoft's per-entity
 * JSON format). Bodies are JSON (jansson); answers are JSON. net.c does the
 * HTTP framing; this file only maps a request to broker actions.
 */
#include "config.h"
#include "net.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static int answer(emu_buf_t *resp, int status, json_t *j)
{
  char *s = json_dumps(j, JSON_COMPACT);
  buf_put(resp, s, strlen(s));
  free(s);
  json_decref(j);
  return status;
}

static int error(emu_buf_t *resp, int status, const char *msg)
{
  return answer(resp, status, json_pack("{s:s}", "error", msg));
}

static const char *kind_name(emu_kind_t k)
{
  return k == ENT_QUEUE ? "queue" : k == ENT_TOPIC ? "topic" : k == ENT_SUBSCRIPTION ? "subscription" : "deadletter";
}

static int get_entities(emu_broker_t *b, emu_buf_t *resp)
{
  json_t *o = json_object();
  for (emu_entity_t *e = b->entities; e; e = e->next) {
    if (e->kind == ENT_DLQ) continue;
    emu_sweep_expired(b, e);
    emu_counts_t c = e->counts;
    size_t dl = e->dlq ? e->dlq->counts.total : 0, tdl = e->tdlq ? e->tdlq->counts.total : 0;
    json_object_set_new(o, e->name, json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "kind", kind_name(e->kind),
                                              "active", (json_int_t)c.active, "scheduled", (json_int_t)c.scheduled,
                                              "deferred", (json_int_t)c.deferred, "dead_lettered", (json_int_t)dl,
                                              "transfer_dead_lettered", (json_int_t)tdl,
                                              "locked", (json_int_t)c.locked, "total", (json_int_t)c.total));
  }
  return answer(resp, 200, o);
}

static int post_clock(emu_broker_t *b, json_t *j, emu_buf_t *resp)
{
  json_t *ms = json_object_get(j, "advance_ms"), *sec = json_object_get(j, "advance");
  int64_t add;
  if (json_is_number(ms)) add = (int64_t)json_number_value(ms);
  else if (json_is_number(sec)) add = (int64_t)(json_number_value(sec) * 1000);
  else return error(resp, 400, "expected {\"advance_ms\": N} or {\"advance\": seconds}");
  if (add < 0) return error(resp, 400, "the clock only moves forward");
  b->skew_ms += add;
  emu_tick(b);
  for (emu_entity_t *e = b->entities; e; e = e->next) emu_sweep_expired(b, e);
  emu_dispatch_all(b);
  return answer(resp, 200, json_pack("{s:I,s:I}", "skew_ms", (json_int_t)b->skew_ms, "now_ms", (json_int_t)emu_now(b)));
}

static int post_faults(emu_broker_t *b, json_t *j, emu_buf_t *resp)
{
  emu_faults_t *f = &b->faults;
  json_t *v;
  if (json_is_true(json_object_get(j, "reset"))) memset(f, 0, sizeof *f);
  if (json_is_true(json_object_get(j, "drop_connections"))) {
    for (emu_conn_t *c = b->conns; c; c = c->next)
      emu_conn_drop(c, "amqp:connection:forced", "The connection was dropped by the emulator's control surface.");
  }
  if ((v = json_object_get(j, "detach"))) {
    const char *cond = json_string_value(json_object_get(j, "condition"));
    if (!json_is_string(v)) return error(resp, 400, "detach needs an entity name");
    emu_detach_entity(b, json_string_value(v), cond ? cond : "amqp:link:detach-forced");
  }
  if ((v = json_object_get(j, "fail_next"))) {
    const char *op = json_string_value(json_object_get(j, "op"));
    const char *cond = json_string_value(json_object_get(j, "condition"));
    if (!json_is_integer(v) || !op || (strcmp(op, "send") && strcmp(op, "receive") && strcmp(op, "settle") &&
                                       strcmp(op, "mgmt") && strcmp(op, "cbs")))
      return error(resp, 400, "fail_next needs an integer and op send|receive|settle|mgmt|cbs");
    f->fail_next = (int)json_integer_value(v);
    snprintf(f->fail_op, sizeof f->fail_op, "%s", op);
    snprintf(f->fail_cond, sizeof f->fail_cond, "%s", cond ? cond : "com.microsoft:server-busy");
  }
  if ((v = json_object_get(j, "delay_dispositions_ms"))) {
    if (!json_is_integer(v)) return error(resp, 400, "delay_dispositions_ms must be an integer");
    f->delay_disp_ms = json_integer_value(v);
  }
  return answer(resp, 200, json_pack("{s:i,s:s,s:s,s:I}", "fail_next", f->fail_next, "op", f->fail_op,
                                     "condition", f->fail_cond, "delay_dispositions_ms", (json_int_t)f->delay_disp_ms));
}

static int post_entities(emu_broker_t *b, json_t *j, emu_buf_t *resp)
{
  char err[1024];
  json_t *q = json_object_get(j, "Queue"), *t = json_object_get(j, "Topic"), *s = json_object_get(j, "Subscription");
  int rc;
  if (q) rc = emu_config_add_queue(b, q, "Queue", err, sizeof err);
  else if (t) rc = emu_config_add_topic(b, t, "Topic", err, sizeof err);
  else if (s) {
    const char *tn = json_string_value(json_object_get(j, "TopicName"));
    emu_entity_t *te = tn ? emu_entity_find(b, tn) : NULL;
    if (!te || te->kind != ENT_TOPIC) return error(resp, 404, "TopicName must name an existing topic");
    rc = emu_config_add_subscription(b, te, s, "Subscription", err, sizeof err);
  } else {
    return error(resp, 400, "expected {\"Queue\": {...}}, {\"Topic\": {...}} or {\"Subscription\": {...}, \"TopicName\": \"...\"}");
  }
  if (rc) return error(resp, strstr(err, "already exists") ? 409 : 400, err);
  return answer(resp, 201, json_pack("{s:b}", "created", 1));
}

static int delete_entity(emu_broker_t *b, const char *path, emu_buf_t *resp)
{
  char *name = strdup(path);
  emu_url_decode(name);
  emu_entity_t *e = emu_entity_find(b, name);
  if (!e || e->kind == ENT_DLQ) {
    free(name);
    return error(resp, 404, "no such entity");
  }
  free(name);
  emu_detach_entity_tree(b, e, "amqp:not-found");
  emu_entity_remove(b, e);
  return answer(resp, 200, json_pack("{s:b}", "deleted", 1));
}

int emu_control_handle(emu_broker_t *b, const char *method, const char *path, const char *body,
                       size_t blen, emu_buf_t *resp)
{
  if (!strcmp(method, "GET") && !strcmp(path, "/health")) return answer(resp, 200, json_pack("{s:s}", "status", "healthy"));
  if (!strcmp(method, "GET") && !strcmp(path, "/entities")) return get_entities(b, resp);
  if (!strcmp(method, "GET") && !strcmp(path, "/clock"))
    return answer(resp, 200, json_pack("{s:I,s:I}", "skew_ms", (json_int_t)b->skew_ms, "now_ms", (json_int_t)emu_now(b)));
  if (!strcmp(method, "DELETE") && !strncmp(path, "/entities/", 10)) return delete_entity(b, path + 10, resp);
  if (strcmp(method, "POST") != 0) return error(resp, 404, "unknown endpoint");
  json_error_t je;
  json_t *j = json_loadb(body, blen, 0, &je);
  if (!json_is_object(j)) {
    json_decref(j);
    return error(resp, 400, "the body must be a JSON object");
  }
  int st;
  if (!strcmp(path, "/clock")) st = post_clock(b, j, resp);
  else if (!strcmp(path, "/faults")) st = post_faults(b, j, resp);
  else if (!strcmp(path, "/entities")) st = post_entities(b, j, resp);
  else st = error(resp, 404, "unknown endpoint");
  json_decref(j);
  return st;
}
