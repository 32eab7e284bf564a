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
} mgmt_ctx_t;

static void reply(mgmt_ctx_t *x, int status, const char *desc, const char *cond, const emu_buf_t *body)
{
  emu_send_response(x->l, x->r, false, status, desc, cond, body);
}

static void op_unknown(mgmt_ctx_t *x, const char *op)
{
  char d[256];
  snprintf(d, sizeof d, "The operation '%s' is not supported by sbus-emulator.", op);
  reply(x, 501, d, "amqp:not-implemented", NULL);
}

void emu_mgmt_request(emu_link_t *l, const unsigned char *p, size_t n)
{
  emu_req_t r;
  char op[128];
  mgmt_ctx_t x = {.l = l, .b = l->conn->broker, .e = l->ent, .r = &r};
  if (!emu_req_parse(p, n, &r) || !emu_req_app_str(&r, "operation", op, sizeof op)) {
    emu_send_response(l, &r, false, 400, "Malformed management request.", "com.microsoft:argument-error", NULL);
    return;
  }
  if (r.has_body) x.map = r.body;
  op_unknown(&x, op);
}
