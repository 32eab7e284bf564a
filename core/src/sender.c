/*
 * sender.c - senders: one link to a queue or topic, plus the $management
 * operations that belong to sending (schedule, cancel scheduled).
 *
 * A send encodes its messages at once (the caller keeps its own) into
 * op->payload and joins the sender's queue. The pump attaches the link
 * (after the token for the entity is in place) and moves queued sends onto
 * the wire while the broker gives credit; each becomes one delivery whose
 * context is its op. The broker's disposition completes it: accepted =
 * success, rejected = the mapped error (retried when retriable), released
 * or modified = retried. When the link or the transport goes, sends in
 * flight go back to the queue and are sent again on the next link (one
 * attempt counted each time).
 */
#include "frame.h"
#include "internal.h"

#include <openssl/rand.h>
#include <proton/condition.h>
#include <stdio.h>
#include <string.h>

void sbus_sender_options_init(sbus_sender_options_t *o)
{
    memset(o, 0, sizeof *o);
}

int sbus_sender_new(sbus_conn_t *c, const sbus_sender_options_t *o,
                    sbus_sender_t **out)
{
    if (!c || !o || !o->entity || !*o->entity || !out)
        return SBUS_EINVAL;
    sbus_sender_t *s = sbusi_calloc(1, sizeof *s);
    if (!s)
        return SBUS_ENOMEM;
    sbusi_owner_init(&s->own, SBUSI_OWN_SENDER);
    s->conn = c;
    char name[64];
    snprintf(name, sizeof name, "sender-%s-%llu", c->container_id,
             (unsigned long long)c->next_uid++);
    s->entity = sbusi_strdup(o->entity);
    s->name = sbusi_strdup(name);
    s->own.aud = s->entity ? sbusi_audience_get(c, s->entity) : NULL;
    if (!s->entity || !s->name || !s->own.aud) {
        sbusi_free(s->entity);
        sbusi_free(s->name);
        sbusi_free(s);
        return SBUS_ENOMEM;
    }
    s->next = c->senders;
    c->senders = s;
    *out = s;
    return 0;
}

/* ------------------------------ queue ------------------------------ */

static void q_push(sbus_sender_t *s, sbusi_op_t *op)
{
    sbusi_opq_push(&s->q_head, &s->q_tail, op);
}

static void q_remove(sbus_sender_t *s, sbusi_op_t *op)
{
    sbusi_opq_remove(&s->q_head, &s->q_tail, op);
}

/* Makes a failed or idle link worth trying again (a new operation). */
static void wake(sbus_sender_t *s)
{
    if (s->own.state == SBUSI_L_FAILED) {
        s->own.state = SBUSI_L_IDLE;
        s->own.attempts = 0;
        sbusi_audience_retry(s->own.aud);
    }
}

static int start(sbus_sender_t *s, sbusi_op_t *op)
{
    if (sbusi_conn_closed(s->conn)) {
        sbusi_op_discard(op);
        return SBUS_ESTATE;
    }
    wake(s);
    op->snd = s;
    if (op->kind == SBUS_OP_SENDER_OPEN)
        s->nopen++;
    sbusi_op_start(s->conn, op);
    if (op->kind == SBUS_OP_SEND)
        q_push(s, op);
    sbusi_process(s->conn);
    return 0;
}

int sbus_sender_open(sbus_sender_t *s, void *token)
{
    if (!s)
        return SBUS_EINVAL;
    if (s->own.state == SBUSI_L_CLOSING || s->own.state == SBUSI_L_CLOSED)
        return SBUS_ESTATE;
    sbusi_op_t *op = sbusi_op_new(s->conn, SBUS_OP_SENDER_OPEN, token, s);
    if (!op)
        return SBUS_ENOMEM;
    return start(s, op);
}

static int send_payload(sbus_sender_t *s, sbusi_op_t *op)
{
    if (s->own.state == SBUSI_L_CLOSING || s->own.state == SBUSI_L_CLOSED) {
        sbusi_op_discard(op);
        return SBUS_ESTATE;
    }
    if (op->payload.oom) {
        sbusi_op_discard(op);
        return SBUS_ENOMEM;
    }
    if (s->max_size && op->payload.len > s->max_size) {
        sbusi_op_discard(op);
        return SBUS_ETOOBIG;
    }
    return start(s, op);
}

int sbus_sender_send(sbus_sender_t *s, sbus_message_t *const *msgs, size_t n,
                     void *token)
{
    if (!s || !msgs || !n)
        return SBUS_EINVAL;
    sbusi_op_t *op = sbusi_op_new(s->conn, SBUS_OP_SEND, token, s);
    if (!op)
        return SBUS_ENOMEM;
    int rc = sbusi_encode_payload(msgs, n, &op->payload, &op->format);
    if (rc < 0) {
        sbusi_op_discard(op);
        return rc;
    }
    return send_payload(s, op);
}

int sbus_sender_send_batch(sbus_sender_t *s, const sbus_batch_t *b,
                           void *token)
{
    if (!s || !b || !sbus_batch_count(b))
        return SBUS_EINVAL;
    sbusi_op_t *op = sbusi_op_new(s->conn, SBUS_OP_SEND, token, s);
    if (!op)
        return SBUS_ENOMEM;
    size_t len;
    const uint8_t *p = sbusi_batch_bytes(b, &len);
    sbusi_buf_put(&op->payload, p, len);
    op->format = sbus_batch_count(b) > 1 ? SBUSI_BATCH_FORMAT : 0;
    return send_payload(s, op);
}

uint64_t sbus_sender_max_message_size(const sbus_sender_t *s)
{
    return s ? s->max_size : 0;
}

/* ------------------------------ wire ------------------------------- */

static void attach(sbus_sender_t *s)
{
    pn_link_t *l = sbusi_link_new(s->conn, &s->own, 1, s->name);
    if (!l)
        return;
    pn_terminus_set_address(pn_link_target(l), s->entity);
    pn_terminus_set_address(pn_link_source(l), s->name);
    pn_link_set_snd_settle_mode(l, PN_SND_UNSETTLED);
    pn_link_set_rcv_settle_mode(l, PN_RCV_FIRST);
    pn_link_open(l);
}

static void transfer(sbus_sender_t *s, sbusi_op_t *op)
{
    sbus_conn_t *c = s->conn;
    uint8_t tag[9];
    uint64_t t = c->next_tag++;
    size_t tlen = 8;
    memcpy(tag, &t, 8);
    if (op->format == SBUSI_BATCH_FORMAT) {
        memmove(tag + 1, tag, 8);
        tag[0] = SBUSI_BATCH_TAG_MARK;
        tlen = 9;
    }
    pn_link_t *l = s->own.link;
    pn_delivery_t *d = pn_delivery(l, pn_dtag((const char *)tag, tlen));
    if (!d) {
        sbusi_op_done(op, SBUS_ENOMEM, NULL, "cannot create a delivery");
        return;
    }
    q_remove(s, op);
    pn_delivery_set_context(d, op);
    pn_link_send(l, (const char *)op->payload.p, op->payload.len);
    pn_link_advance(l);
    op->dlv = d;
    op->dlv_gen = s->own.gen;
    op->stage = SBUSI_S_INFLIGHT;
}

static void complete_opens(sbus_sender_t *s, const sbusi_ev_t *err)
{
    while (err && s->q_head)
        sbusi_op_fail_from(s->q_head, err);
    if (!s->nopen)
        return;
    sbus_conn_t *c = s->conn;
    for (sbusi_op_t *op = c->ops.next; op != &c->ops && s->nopen;) {
        sbusi_op_t *next = op->next;
        if (op->snd == s && op->kind == SBUS_OP_SENDER_OPEN) {
            if (err)
                sbusi_op_fail_from(op, err);
            else
                sbusi_op_done(op, 0, NULL, NULL);
        }
        op = next;
    }
}

static int has_work(sbus_sender_t *s) { return s->q_head || s->nopen; }

void sbusi_sender_pump(sbus_sender_t *s)
{
    if (s->own.state == SBUSI_L_CLOSING || s->own.state == SBUSI_L_CLOSED)
        return;
    if (s->own.state != SBUSI_L_ATTACHED && !has_work(s))
        return;
    int r = sbusi_owner_attach(s->conn, &s->own);
    if (r == 2)
        attach(s);
    if (r < 0)
        complete_opens(s, &s->own.last_err);
    if (r != 1)
        return;
    complete_opens(s, NULL);
    while (s->q_head && pn_link_credit(s->own.link) > 0) {
        sbusi_op_t *op = s->q_head;
        if (s->max_size && op->payload.len > s->max_size) {
            q_remove(s, op);
            sbusi_op_done(op, SBUS_ESIZE, "amqp:link:message-size-exceeded",
                          "the message is larger than the link's "
                          "max-message-size");
            continue;
        }
        transfer(s, op);
    }
}

static void on_outcome(sbus_sender_t *s, pn_delivery_t *d)
{
    sbusi_op_t *op = pn_delivery_get_context(d);
    uint64_t state = pn_delivery_remote_state(d);
    if (!state && !pn_delivery_settled(d))
        return;
    if (!op) { /* its op timed out or was cancelled */
        pn_delivery_settle(d);
        return;
    }
    pn_delivery_set_context(d, NULL);
    op->dlv = NULL;
    pn_delivery_settle(d);
    if (state == PN_ACCEPTED) {
        sbusi_op_done(op, 0, NULL, NULL);
        return;
    }
    if (state == PN_REJECTED) {
        pn_condition_t *cond = pn_disposition_condition(pn_delivery_remote(d));
        const char *name = cond ? pn_condition_get_name(cond) : NULL;
        sbusi_op_retry_or_fail(op, name ? 0 : SBUS_ESERVICE, name,
                               cond ? pn_condition_get_description(cond)
                                    : "the service rejected the message");
    } else {
        sbusi_op_retry_or_fail(op, SBUS_EBUSY, NULL,
                               "the service did not take the message");
    }
    if (op->stage == SBUSI_S_BACKOFF)
        op->dlv = NULL;
}

void sbusi_sender_on_event(sbus_sender_t *s, pn_event_t *e, pn_link_t *l,
                           pn_delivery_t *d)
{
    switch (pn_event_type(e)) {
    case PN_LINK_REMOTE_OPEN:
        if (s->own.state != SBUSI_L_ATTACHING)
            break;
        if (!pn_terminus_get_address(pn_link_remote_target(l)))
            break; /* refused: the detach with the error follows */
        s->own.state = SBUSI_L_ATTACHED;
        s->own.attempts = 0;
        sbusi_conn_progress(s->conn);
        s->max_size = pn_link_remote_max_message_size(l);
        if (!s->max_size)
            s->max_size = 1024 * 1024;
        break;
    case PN_LINK_REMOTE_CLOSE:
    case PN_LINK_REMOTE_DETACH:
        sbusi_owner_error_from_link(&s->own, l);
        if (pn_link_state(l) & PN_LOCAL_ACTIVE)
            pn_link_close(l);
        if (s->own.state == SBUSI_L_CLOSING) {
            /* sends the service answered before its detach are done;
               the others end with the sender */
            sbusi_owner_lost(&s->own);
            s->own.state = SBUSI_L_CLOSED;
            sbusi_fail_object_kind(s->conn, s, SBUS_OP_SEND, SBUS_ECLOSED,
                                   "the sender was closed");
            sbusi_fail_object_kind(s->conn, s, SBUS_OP_SENDER_CLOSE, 0, NULL);
            break;
        }
        sbusi_sender_lost(s);
        sbusi_owner_after_detach(s->conn, &s->own);
        if (s->own.state == SBUSI_L_FAILED)
            complete_opens(s, &s->own.last_err);
        break;
    case PN_DELIVERY:
        on_outcome(s, d);
        break;
    default: break;
    }
}

void sbusi_sender_lost(sbus_sender_t *s)
{
    sbus_conn_t *c = s->conn;
    sbusi_owner_lost(&s->own);
    if (s->own.state == SBUSI_L_ATTACHED || s->own.state == SBUSI_L_ATTACHING)
        s->own.state = SBUSI_L_IDLE;
    /* sends in flight go back to the queue, in their original order */
    sbusi_op_t *prev;
    for (sbusi_op_t *op = c->ops.prev; op != &c->ops; op = prev) {
        prev = op->prev;
        if (op->snd != s || op->kind != SBUS_OP_SEND ||
            op->stage != SBUSI_S_INFLIGHT)
            continue;
        op->dlv = NULL;
        if (++op->attempts > c->retry_total) {
            /* this send was on the wire each time a connection died */
            sbusi_op_done(op, SBUS_ECONNECTION, NULL,
                          "the connection was lost while the message was "
                          "in flight, more often than the retry policy "
                          "allows");
            continue;
        }
        op->stage = SBUSI_S_QUEUED;
        op->qprev = NULL;
        op->qnext = s->q_head;
        if (s->q_head)
            s->q_head->qprev = op;
        else
            s->q_tail = op;
        s->q_head = op;
        op->queued = 1;
    }
}

void sbusi_sender_requeue(sbus_sender_t *s, sbusi_op_t *op)
{
    if (op->kind == SBUS_OP_SEND && !op->queued)
        q_push(s, op);
}

void sbusi_sender_forget(sbus_sender_t *s, sbusi_op_t *op) { q_remove(s, op); }

/* ----------------------------- close ------------------------------- */

int sbus_sender_close(sbus_sender_t *s, void *token)
{
    if (!s)
        return SBUS_EINVAL;
    if (s->own.state == SBUSI_L_CLOSING || s->own.state == SBUSI_L_CLOSED)
        return SBUS_ESTATE;
    sbusi_op_t *op = sbusi_op_new(s->conn, SBUS_OP_SENDER_CLOSE, token, s);
    if (!op)
        return SBUS_ENOMEM;
    while (s->q_head) {
        sbusi_op_t *q = s->q_head;
        q_remove(s, q);
        sbusi_op_done(q, SBUS_ECLOSED, NULL, "the sender was closed");
    }
    op->snd = s;
    sbusi_op_start(s->conn, op);
    if (s->own.link && sbusi_wire_ready(s->conn)) {
        s->own.state = SBUSI_L_CLOSING;
        pn_link_close(s->own.link);
    } else {
        sbusi_owner_lost(&s->own);
        s->own.state = SBUSI_L_CLOSED;
        /* sends waiting to be retried end with the sender */
        sbusi_fail_object_kind(s->conn, s, SBUS_OP_SEND, SBUS_ECLOSED,
                               "the sender was closed");
        sbusi_op_done(op, 0, NULL, NULL);
    }
    sbusi_process(s->conn);
    return 0;
}

void sbus_sender_free(sbus_sender_t *s)
{
    if (!s)
        return;
    sbus_conn_t *c = s->conn;
    while (s->q_head)
        q_remove(s, s->q_head);
    sbusi_fail_object(c, s, SBUS_ECLOSED, "the sender was freed");
    sbusi_ev_forget_object(c, s);
    sbusi_owner_detach(&s->own);
    for (sbus_sender_t **pp = &c->senders; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    sbusi_free(s->entity);
    sbusi_free(s->name);
    sbusi_free(s);
    sbusi_process(c);
}

/* ------------------------ schedule / cancel ------------------------ */

static void enc_app_op(sbusi_buf_t *b, const char *op)
{
    sbusi_enc_descriptor(b, 0x74);
    size_t at = sbusi_enc_map(b);
    sbusi_enc_str(b, "operation", 9);
    sbusi_enc_cstr(b, op);
    sbusi_enc_end(b, at, 2);
    sbusi_enc_descriptor(b, 0x77);
}

static int submit_mgmt(sbus_sender_t *s, sbusi_op_t *op)
{
    op->snd = s;
    return sbusi_mgmt_start(s->conn, s->entity, op, sbusi_conn_closed(s->conn));
}

/* One entry of a schedule-message request. */
static int enc_schedule_entry(sbusi_buf_t *b, const sbus_message_t *m,
                              int64_t unix_ms, sbusi_buf_t *tmp)
{
    sbus_message_t *copy;
    if (sbus_message_copy(m, &copy) < 0)
        return SBUS_ENOMEM;
    const char *id;
    size_t idn;
    int rc = sbus_message_set_field(copy, SBUS_FIELD_SCHEDULED_ENQUEUE_TIME,
                                    unix_ms);
    if (rc == 0 &&
        sbus_message_get_prop(copy, SBUS_PROP_MESSAGE_ID, &id, &idn) < 0) {
        /* the service needs a message-id: make one, as the SDKs do */
        uint8_t u[16];
        char gen[37];
        rc = RAND_bytes(u, 16) == 1 ? 0 : SBUS_ENOMEM;
        u[6] = (u[6] & 0x0f) | 0x40;
        u[8] = (u[8] & 0x3f) | 0x80;
        sbus_uuid_format(u, gen);
        if (rc == 0)
            rc = sbus_message_set_prop(copy, SBUS_PROP_MESSAGE_ID, gen, 36);
        if (rc == 0)
            rc = sbus_message_get_prop(copy, SBUS_PROP_MESSAGE_ID, &id, &idn);
    }
    if (rc < 0) {
        sbus_message_free(copy);
        return rc == SBUS_EINVAL ? SBUS_EINVAL : SBUS_ENOMEM;
    }
    tmp->len = 0;
    sbusi_message_encode(copy, tmp);
    size_t at = sbusi_enc_map(b);
    uint32_t n = 4;
    sbusi_enc_str(b, "message-id", 10);
    sbusi_enc_str(b, id, idn);
    const char *sid;
    size_t sidn;
    if (sbus_message_get_prop(copy, SBUS_PROP_SESSION_ID, &sid, &sidn) == 0) {
        sbusi_enc_str(b, "session-id", 10);
        sbusi_enc_str(b, sid, sidn);
        n += 2;
    }
    if (sbus_message_get_prop(copy, SBUS_PROP_PARTITION_KEY, &sid, &sidn) == 0) {
        sbusi_enc_str(b, "partition-key", 13);
        sbusi_enc_str(b, sid, sidn);
        n += 2;
    }
    sbusi_enc_str(b, "message", 7);
    sbusi_enc_bin(b, tmp->p, tmp->len);
    sbusi_enc_end(b, at, n);
    sbus_message_free(copy);
    return tmp->oom ? SBUS_ENOMEM : 0;
}

int sbus_sender_schedule(sbus_sender_t *s, sbus_message_t *const *msgs,
                         size_t n, int64_t unix_ms, void *token)
{
    if (!s || !msgs || !n)
        return SBUS_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!msgs[i] || sbusi_message_validate(msgs[i]) < 0)
            return SBUS_EINVAL;
    sbusi_op_t *op = sbusi_op_new(s->conn, SBUS_OP_SCHEDULE, token, s);
    if (!op)
        return SBUS_ENOMEM;
    sbusi_buf_t *b = &op->payload, tmp = {0};
    enc_app_op(b, "com.microsoft:schedule-message");
    size_t at = sbusi_enc_map(b);
    sbusi_enc_str(b, "messages", 8);
    size_t lat = sbusi_enc_list(b);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = enc_schedule_entry(b, msgs[i], unix_ms, &tmp);
    sbusi_enc_end(b, lat, (uint32_t)n);
    sbusi_enc_end(b, at, 2);
    sbusi_buf_free(&tmp);
    if (rc < 0) {
        sbusi_op_discard(op);
        return rc;
    }
    return submit_mgmt(s, op);
}

int sbus_sender_cancel_scheduled(sbus_sender_t *s, const int64_t *seqs,
                                 size_t n, void *token)
{
    if (!s || !seqs || !n)
        return SBUS_EINVAL;
    sbusi_op_t *op = sbusi_op_new(s->conn, SBUS_OP_CANCEL_SCHEDULED, token, s);
    if (!op)
        return SBUS_ENOMEM;
    sbusi_buf_t *b = &op->payload;
    enc_app_op(b, "com.microsoft:cancel-scheduled-message");
    size_t at = sbusi_enc_map(b);
    sbusi_enc_str(b, "sequence-numbers", 16);
    size_t arr = sbusi_enc_array(b, 0x81);
    for (size_t i = 0; i < n; i++)
        sbusi_enc_array_long(b, seqs[i]);
    sbusi_enc_end(b, arr, (uint32_t)n);
    sbusi_enc_end(b, at, 2);
    return submit_mgmt(s, op);
}
