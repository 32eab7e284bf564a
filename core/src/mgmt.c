/*
 * mgmt.c - request/response over $cbs and <entity>/$management.
 *
 * First part: the request/response plumbing both nodes share: encoding a
 * request (ulong message-id, reply-to = our receiving link's target) and
 * decoding a response (correlation-id, either spelling of the status keys,
 * errorCondition, the amqp-value body), protocol.md section 4.
 *
 * Second part: $management link pairs, one per entity per connection,
 * created on first use. Operations (schedule, cancel, renew-lock, peek,
 * receive-deferred, update-disposition, session state and lock) arrive
 * with their application-properties and body already encoded in
 * op->payload; they wait in the connection's op list until the pair is
 * attached, go out with a fresh message-id, and complete when the response
 * with that correlation-id arrives, when their deadline passes, or when
 * the link or connection is lost (then they are retried under the
 * policy, being idempotent or harmless to repeat).
 *
 * Third part: reading each operation's result from the response body.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

#define MGMT_CREDIT 16

/* --------------------------- plumbing ------------------------------ */

int sbusi_rpc_send(sbus_conn_t *c, pn_link_t *l, uint64_t id, const char *to,
                   const char *reply_to, const sbusi_buf_t *rest)
{
    sbusi_buf_t b = {0};
    sbusi_enc_descriptor(&b, 0x73);
    size_t at = sbusi_enc_list(&b);
    sbusi_enc_ulong(&b, id);
    sbusi_enc_null(&b);
    sbusi_enc_cstr(&b, to);
    sbusi_enc_null(&b);
    sbusi_enc_cstr(&b, reply_to);
    sbusi_enc_end(&b, at, 5);
    sbusi_buf_put(&b, rest->p, rest->len);
    if (b.oom) {
        sbusi_buf_free(&b);
        return SBUS_ENOMEM;
    }
    uint64_t tag = c->next_tag++;
    pn_delivery_t *d = pn_delivery(l, pn_dtag((const char *)&tag, sizeof tag));
    int rc = 0;
    if (!d || pn_link_send(l, (const char *)b.p, b.len) < 0)
        rc = SBUS_ENOMEM;
    if (d) {
        pn_link_advance(l);
        pn_delivery_settle(d);
    }
    memset(b.p, 0, b.len); /* may hold a token */
    sbusi_buf_free(&b);
    return rc;
}

static int key_is(const sbusi_item_t *k, const char *s)
{
    size_t n = strlen(s);
    return k->v.type == SBUS_VAL_STRING && k->v.u.s.len == n &&
           memcmp(k->v.u.s.ptr, s, n) == 0;
}

static void read_status(const sbusi_item_t *map, sbusi_rpc_reply_t *r)
{
    sbusi_dec_t d;
    sbusi_dec_enter(map, &d);
    for (uint32_t i = 0; i < map->count; i += 2) {
        sbusi_item_t k, v;
        int64_t x;
        if (sbusi_dec_item(&d, &k) < 0 || sbusi_dec_item(&d, &v) < 0)
            return;
        if ((key_is(&k, "statusCode") || key_is(&k, "status-code")) &&
            sbusi_item_int(&v, &x) == 0)
            r->status = (int)x;
        else if (key_is(&k, "statusDescription") ||
                 key_is(&k, "status-description"))
            sbusi_item_cstr(&v, r->desc, sizeof r->desc);
        else if (key_is(&k, "errorCondition") ||
                 key_is(&k, "error-condition"))
            sbusi_item_cstr(&v, r->cond, sizeof r->cond);
    }
}

int sbusi_rpc_decode(const uint8_t *p, size_t n, sbusi_rpc_reply_t *r)
{
    memset(r, 0, sizeof *r);
    sbusi_dec_t d = {p, p + n, 0};
    while (d.p < d.end) {
        sbusi_item_t it;
        if (sbusi_dec_item(&d, &it) < 0 || !it.described)
            return -1;
        if (it.descriptor == 0x73 && it.body) {
            sbusi_dec_t f;
            sbusi_dec_enter(&it, &f);
            sbusi_item_t x;
            for (uint32_t i = 0; i < it.count && i <= 5; i++)
                if (sbusi_dec_item(&f, &x) < 0)
                    return -1;
            if (it.count > 5 && x.v.type == SBUS_VAL_UINT) {
                r->has_corr = 1;
                r->corr = x.v.u.u;
            }
        } else if (it.descriptor == 0x74 && it.body) {
            read_status(&it, r);
        } else if (it.descriptor == 0x77) {
            /* the value after the descriptor: re-read it without one */
            sbusi_dec_t v = {it.start + 1, it.stop, 0};
            sbusi_item_t desc;
            sbusi_dec_item(&v, &desc);
            if (sbusi_dec_item(&v, &r->body) == 0)
                r->has_body = 1;
        }
    }
    return 0;
}

int sbusi_read_delivery(sbus_conn_t *c, pn_delivery_t *d)
{
    if (!pn_delivery_readable(d) || pn_delivery_partial(d))
        return -1;
    pn_link_t *l = pn_delivery_link(d);
    size_t n = pn_delivery_pending(d);
    c->scratch.len = 0;
    if (sbusi_buf_reserve(&c->scratch, n) < 0) {
        c->scratch.oom = 0;
        return -1; /* leave it buffered in Proton; tried again later */
    }
    ssize_t got = pn_link_recv(l, (char *)c->scratch.p, n);
    c->scratch.len = got > 0 ? (size_t)got : 0;
    pn_link_advance(l);
    return 0;
}

/* ------------------------- link pairs ------------------------------ */

static sbusi_mgmt_t *pair_get(sbus_conn_t *c, const char *entity)
{
    for (sbusi_mgmt_t *m = c->mgmts; m; m = m->next)
        if (strcmp(m->entity, entity) == 0)
            return m;
    sbusi_mgmt_t *m = sbusi_calloc(1, sizeof *m);
    if (!m)
        return NULL;
    char reply[64];
    snprintf(reply, sizeof reply, "sbus-mgmt-reply-%llu",
             (unsigned long long)c->next_uid++);
    m->entity = sbusi_strdup(entity);
    m->reply_to = sbusi_strdup(reply);
    sbusi_owner_init(&m->snd, SBUSI_OWN_MGMT);
    sbusi_owner_init(&m->rcv, SBUSI_OWN_MGMT);
    m->snd.aud = m->rcv.aud = sbusi_audience_get(c, entity);
    if (!m->entity || !m->reply_to || !m->snd.aud) {
        sbusi_free(m->entity);
        sbusi_free(m->reply_to);
        sbusi_free(m);
        return NULL;
    }
    m->next = c->mgmts;
    c->mgmts = m;
    return m;
}

int sbusi_mgmt_submit(sbus_conn_t *c, const char *entity, sbusi_op_t *op)
{
    sbusi_mgmt_t *m = pair_get(c, entity);
    if (!m)
        return SBUS_ENOMEM;
    op->mgmt = m;
    op->stage = SBUSI_S_QUEUED;
    c->mgmt_dirty = 1;
    if (m->snd.state == SBUSI_L_FAILED || m->rcv.state == SBUSI_L_FAILED) {
        m->snd.state = m->rcv.state = SBUSI_L_IDLE;
        sbusi_audience_retry(m->snd.aud);
    }
    return 0;
}

int sbusi_mgmt_start(sbus_conn_t *c, const char *entity, sbusi_op_t *op,
                     int closed)
{
    int rc = closed            ? SBUS_ESTATE
             : op->payload.oom ? SBUS_ENOMEM
                               : sbusi_mgmt_submit(c, entity, op);
    if (rc < 0) {
        sbusi_op_discard(op);
        return rc;
    }
    sbusi_op_start(c, op);
    sbusi_process(c);
    return 0;
}

static void attach_pair(sbus_conn_t *c, sbusi_mgmt_t *m)
{
    char addr[1100], name[1200];
    snprintf(addr, sizeof addr, "%s/$management", m->entity);
    if (m->snd.state != SBUSI_L_ATTACHING && m->snd.state != SBUSI_L_ATTACHED) {
        snprintf(name, sizeof name, "%s-sender", addr);
        pn_link_t *l = sbusi_link_new(c, &m->snd, 1, name);
        if (l) {
            pn_terminus_set_address(pn_link_target(l), addr);
            pn_terminus_set_address(pn_link_source(l), m->reply_to);
            pn_link_open(l);
        }
    }
    if (m->rcv.state != SBUSI_L_ATTACHING && m->rcv.state != SBUSI_L_ATTACHED) {
        snprintf(name, sizeof name, "%s-receiver", addr);
        pn_link_t *l = sbusi_link_new(c, &m->rcv, 0, name);
        if (l) {
            pn_terminus_set_address(pn_link_source(l), addr);
            pn_terminus_set_address(pn_link_target(l), m->reply_to);
            pn_link_flow(l, MGMT_CREDIT);
            pn_link_open(l);
        }
    }
}

static void fail_pair_ops(sbus_conn_t *c, sbusi_mgmt_t *m,
                          const sbusi_owner_t *o)
{
    for (sbusi_op_t *op = c->ops.next; op != &c->ops;) {
        sbusi_op_t *next = op->next;
        if (op->mgmt == m && op->stage == SBUSI_S_QUEUED)
            sbusi_op_fail_from(op, &o->last_err);
        op = next;
    }
}

static void send_op(sbus_conn_t *c, sbusi_mgmt_t *m, sbusi_op_t *op)
{
    uint64_t id = c->next_req++;
    int rc = sbusi_rpc_send(c, m->snd.link, id, NULL, m->reply_to,
                            &op->payload);
    if (rc < 0) {
        sbusi_op_done(op, rc, NULL, "cannot send the request");
        return;
    }
    op->req_id = id;
    op->stage = SBUSI_S_INFLIGHT;
}

static void pump_pair(sbus_conn_t *c, sbusi_mgmt_t *m)
{
    int queued = 0;
    for (sbusi_op_t *op = c->ops.next; op != &c->ops; op = op->next)
        queued |= op->mgmt == m && op->stage == SBUSI_S_QUEUED;
    if (!queued)
        return;
    int a = sbusi_owner_attach(c, &m->snd);
    int b = sbusi_owner_attach(c, &m->rcv);
    if (a < 0 || b < 0) {
        fail_pair_ops(c, m, a < 0 ? &m->snd : &m->rcv);
        return;
    }
    if (a == 2 || b == 2)
        attach_pair(c, m);
    if (a != 1 || b != 1)
        return;
    for (sbusi_op_t *op = c->ops.next; op != &c->ops;) {
        sbusi_op_t *next = op->next;
        if (op->mgmt == m && op->stage == SBUSI_S_QUEUED &&
            pn_link_credit(m->snd.link) > 0)
            send_op(c, m, op);
        op = next;
    }
}

/* Pumps the pairs only when something may be waiting (an op was queued,
 * a pair attached or got credit, a connection was lost): the scan of the
 * op list must not run on every event. */
void sbusi_mgmt_pump(sbus_conn_t *c)
{
    if (!c->mgmt_dirty)
        return;
    c->mgmt_dirty = 0;
    for (sbusi_mgmt_t *m = c->mgmts; m; m = m->next)
        pump_pair(c, m);
}

static void on_reply(sbus_conn_t *c, const uint8_t *p, size_t n)
{
    sbusi_rpc_reply_t r;
    if (sbusi_rpc_decode(p, n, &r) < 0 || !r.has_corr)
        return;
    sbusi_op_t *op = c->ops.next;
    while (op != &c->ops && !(op->req_id && op->req_id == r.corr))
        op = op->next;
    if (op == &c->ops)
        return;
    op->req_id = 0;
    if (r.status >= 200 && r.status < 300) {
        int rc = sbusi_mgmt_result(op, r.has_body ? &r.body : NULL);
        if (rc < 0)
            sbusi_op_done(op, rc, NULL, "cannot read the service's answer");
        else
            sbusi_op_done(op, 0, NULL, NULL);
        return;
    }
    const char *cond = r.cond[0] ? r.cond : sbusi_status_condition(r.status);
    char desc[SBUSI_DESC_MAX + 32];
    snprintf(desc, sizeof desc, "%s (status %d)",
             r.desc[0] ? r.desc : "the service refused the request", r.status);
    sbusi_op_retry_or_fail(op, 0, cond, desc);
}

static sbusi_mgmt_t *pair_of(sbus_conn_t *c, sbusi_owner_t *o)
{
    for (sbusi_mgmt_t *m = c->mgmts; m; m = m->next)
        if (&m->snd == o || &m->rcv == o)
            return m;
    return NULL;
}

/* Requests in flight on a lost pair go back to the queue (or fail). */
static void requeue_inflight(sbus_conn_t *c, sbusi_mgmt_t *m)
{
    for (sbusi_op_t *op = c->ops.next; op != &c->ops;) {
        sbusi_op_t *next = op->next;
        if (op->mgmt == m && op->stage == SBUSI_S_INFLIGHT)
            sbusi_op_retry_or_fail(op, SBUS_ECONNECTION, NULL,
                                   "the $management link was lost");
        op = next;
    }
}

void sbusi_mgmt_on_event(sbus_conn_t *c, sbusi_owner_t *o, pn_event_t *e)
{
    sbusi_mgmt_t *m = pair_of(c, o);
    pn_link_t *l = pn_event_link(e);
    if (!m)
        return;
    c->mgmt_dirty = 1;
    switch (pn_event_type(e)) {
    case PN_LINK_REMOTE_OPEN:
        if (o->state == SBUSI_L_ATTACHING) {
            int refused = pn_link_is_sender(l)
                              ? !pn_terminus_get_address(pn_link_remote_target(l))
                              : !pn_terminus_get_address(pn_link_remote_source(l));
            if (!refused) {
                o->state = SBUSI_L_ATTACHED;
                o->attempts = 0;
                sbusi_conn_progress(c);
            }
        }
        break;
    case PN_LINK_REMOTE_CLOSE:
    case PN_LINK_REMOTE_DETACH:
        sbusi_owner_error_from_link(o, l);
        if (pn_link_state(l) & PN_LOCAL_ACTIVE)
            pn_link_close(l);
        sbusi_owner_lost(o);
        sbusi_owner_after_detach(c, o);
        requeue_inflight(c, m);
        if (o->state == SBUSI_L_FAILED)
            fail_pair_ops(c, m, o);
        break;
    case PN_DELIVERY: {
        pn_delivery_t *d = pn_event_delivery(e);
        if (o == &m->snd) {
            if (pn_delivery_updated(d) || pn_delivery_settled(d))
                pn_delivery_settle(d);
            break;
        }
        if (sbusi_read_delivery(c, d) < 0)
            break;
        pn_delivery_update(d, PN_ACCEPTED);
        pn_delivery_settle(d);
        on_reply(c, c->scratch.p, c->scratch.len);
        pn_link_flow(l, 1);
        break;
    }
    default: break;
    }
}

void sbusi_mgmt_lost(sbus_conn_t *c)
{
    c->mgmt_dirty = 1;
    for (sbusi_mgmt_t *m = c->mgmts; m; m = m->next) {
        sbusi_owner_lost(&m->snd);
        sbusi_owner_lost(&m->rcv);
        m->snd.state = m->rcv.state = SBUSI_L_IDLE;
        for (sbusi_op_t *op = c->ops.next; op != &c->ops;) {
            sbusi_op_t *next = op->next;
            if (op->mgmt == m && op->stage == SBUSI_S_INFLIGHT) {
                op->req_id = 0;
                op->stage = SBUSI_S_QUEUED; /* resent after reconnect */
            }
            op = next;
        }
    }
}

void sbusi_mgmt_free(sbus_conn_t *c)
{
    while (c->mgmts) {
        sbusi_mgmt_t *m = c->mgmts;
        c->mgmts = m->next;
        sbusi_free(m->entity);
        sbusi_free(m->reply_to);
        sbusi_free(m);
    }
}

/* ---------------------------- results ------------------------------ */

/* Decodes the encoded messages of a "messages" list into op->msgs. */
static int read_messages(sbusi_op_t *op, const sbusi_item_t *list, int peek)
{
    if (!list->body && list->code != 0x45)
        return SBUS_EINVAL;
    sbusi_dec_t d;
    sbusi_dec_enter(list, &d);
    op->msgs = sbusi_calloc(list->count ? list->count : 1, sizeof *op->msgs);
    if (!op->msgs)
        return SBUS_ENOMEM;
    for (uint32_t i = 0; i < list->count; i++) {
        sbusi_item_t entry, bin, tok;
        if (sbusi_dec_item(&d, &entry) < 0)
            return SBUS_EINVAL;
        if (sbusi_map_find(&entry, "message", &bin) < 0 ||
            bin.v.type != SBUS_VAL_BINARY)
            continue;
        sbus_message_t *m;
        int rc = sbusi_message_decode((const uint8_t *)bin.v.u.s.ptr,
                                      bin.v.u.s.len, &m);
        if (rc < 0)
            return rc;
        op->msgs[op->nmsgs++] = m;
        int64_t seq;
        if (op->rcv && sbus_message_get_field(m, SBUS_FIELD_SEQUENCE_NUMBER,
                                              &seq) == 0 &&
            seq > op->rcv->last_seq)
            op->rcv->last_seq = seq; /* the next peek from 0 starts after it */
        if (peek) {
            m->state = SBUS_MSG_PEEKED;
            m->has_lock = 0;
            continue;
        }
        if (sbusi_map_find(&entry, "lock-token", &tok) == 0 &&
            tok.v.type == SBUS_VAL_UUID) {
            memcpy(m->lock_token, tok.v.u.uuid, 16);
            m->has_lock = 1;
        }
        sbusi_receiver_adopt_deferred(op->rcv, m);
    }
    return 0;
}

static int read_seqs(sbusi_op_t *op, const sbusi_item_t *arr)
{
    if (arr->code != 0xe0 && arr->code != 0xf0)
        return SBUS_EINVAL;
    sbusi_dec_t d;
    sbusi_dec_enter(arr, &d);
    op->seqs = sbusi_calloc(arr->count ? arr->count : 1, sizeof *op->seqs);
    if (!op->seqs)
        return SBUS_ENOMEM;
    for (uint32_t i = 0; i < arr->count; i++) {
        sbusi_item_t it;
        if (sbusi_dec_array_elem(&d, arr->elem, &it) < 0 ||
            sbusi_item_int(&it, &op->seqs[i]) < 0)
            return SBUS_EINVAL;
        op->nseqs++;
    }
    return 0;
}

/* First element of an array of timestamps. */
static int read_first_time(const sbusi_item_t *arr, int64_t *out)
{
    if (arr->code != 0xe0 && arr->code != 0xf0)
        return sbusi_item_int(arr, out);
    if (arr->count < 1)
        return SBUS_EINVAL;
    sbusi_dec_t d;
    sbusi_dec_enter(arr, &d);
    sbusi_item_t it;
    if (sbusi_dec_array_elem(&d, arr->elem, &it) < 0)
        return SBUS_EINVAL;
    return sbusi_item_int(&it, out);
}

int sbusi_mgmt_result(sbusi_op_t *op, const sbusi_item_t *body)
{
    sbusi_item_t v;
    int has = body && body->body;
    switch (op->kind) {
    case SBUS_OP_SCHEDULE:
        if (!has || sbusi_map_find(body, "sequence-numbers", &v) < 0)
            return SBUS_EINVAL;
        return read_seqs(op, &v);
    case SBUS_OP_PEEK:
    case SBUS_OP_RECEIVE_DEFERRED:
        if (!has || sbusi_map_find(body, "messages", &v) < 0)
            return 0; /* 204: none */
        return read_messages(op, &v, op->kind == SBUS_OP_PEEK);
    case SBUS_OP_RENEW_LOCK:
        /* one expiry per lock token, in order (kept in seqs for the
           auto-renew timers that renew several at once) */
        if (!has || sbusi_map_find(body, "expirations", &v) < 0 ||
            read_first_time(&v, &op->ev.e.time_ms) < 0)
            return SBUS_EINVAL;
        if ((v.code == 0xe0 || v.code == 0xf0) && read_seqs(op, &v) < 0)
            return SBUS_EINVAL;
        if (op->msg)
            sbusi_message_set_locked_until(op->msg, op->ev.e.time_ms);
        return 0;
    case SBUS_OP_SESSION_RENEW_LOCK:
        if (!has || sbusi_map_find(body, "expiration", &v) < 0 ||
            sbusi_item_int(&v, &op->ev.e.time_ms) < 0)
            return SBUS_EINVAL;
        if (op->rcv)
            op->rcv->session_locked_until = op->ev.e.time_ms;
        return 0;
    case SBUS_OP_SESSION_GET_STATE:
        if (!has || sbusi_map_find(body, "session-state", &v) < 0 ||
            v.v.type != SBUS_VAL_BINARY)
            return 0; /* none */
        op->payload.len = 0; /* reuse: keep the state bytes */
        sbusi_buf_put(&op->payload, v.v.u.s.ptr, v.v.u.s.len);
        if (op->payload.oom)
            return SBUS_ENOMEM;
        op->ev.e.data = op->payload.p ? (const void *)op->payload.p : "";
        op->ev.e.len = v.v.u.s.len;
        return 0;
    default:
        return 0;
    }
}
