/*
 * renew.c - automatic lock renewal (the seed's AutoLockRenew), as engine
 * timers driven by sbus_conn_tick.
 *
 * A registration ties a message (or, with msg NULL, the receiver's session
 * lock) to a receiver until a maximum time. When the lock comes within a
 * margin of its expiry, an internal renew-lock (or renew-session-lock)
 * operation runs; the message locks due at the same tick go in one request
 * with several lock tokens (when such a shared request fails, each is
 * retried alone at once to learn whose lock it was). Its completion never
 * reaches the host (op->on_done)
 * except as SBUS_EV_RENEW_FAILED when it fails, which also ends the
 * registration. Settling, freeing the message, stopping, or closing the
 * receiver ends it silently. A registration whose failure event is still
 * queued belongs to that event and is freed when the host pulls the next
 * event.
 */
#include "internal.h"

#include <string.h>

#define MARGIN_MS 10000

static int64_t locked_until(const sbusi_renew_t *rn)
{
    if (!rn->msg)
        return rn->rcv->session_locked_until;
    int64_t t;
    return sbus_message_get_field(rn->msg, SBUS_FIELD_LOCKED_UNTIL, &t) == 0
               ? t
               : 0;
}

static void schedule(sbusi_renew_t *rn)
{
    sbus_conn_t *c = rn->rcv->conn;
    int64_t left = locked_until(rn) - c->now_unix;
    int64_t margin = left / 2 < MARGIN_MS ? left / 2 : MARGIN_MS;
    int64_t wait = left - margin;
    rn->next_mono = c->now_mono + (wait > 0 ? wait : 0);
}

static void list_remove(sbusi_renew_t *rn)
{
    if (!rn->rcv)
        return;
    for (sbusi_renew_t **pp = &rn->rcv->renews; *pp; pp = &(*pp)->next)
        if (*pp == rn) {
            *pp = rn->next;
            break;
        }
    rn->next = NULL;
}

static void release_failed(sbusi_ev_t *ev) { sbusi_free(ev->owner); }

/* Takes rn out of the op renewing it (the op may outlive it). */
static void leave_op(sbusi_renew_t *rn)
{
    sbusi_op_t *op = rn->op;
    for (size_t i = 0; op && i < op->nrenews; i++)
        if (op->renews[i] == rn)
            op->renews[i] = NULL;
    rn->op = NULL;
}

void sbusi_renew_unlink(sbusi_renew_t *rn)
{
    list_remove(rn);
    if (rn->msg)
        rn->msg->renew = NULL;
    rn->msg = NULL;
    leave_op(rn);
    rn->dead = 1;
    if (!rn->fail.queued)
        sbusi_free(rn);
}

static void fail(sbusi_renew_t *rn, const sbus_error_t *err)
{
    sbus_conn_t *c = rn->rcv->conn;
    list_remove(rn);
    sbusi_error_set(&rn->fail.err, rn->fail.cond, sizeof rn->fail.cond,
                    rn->fail.desc, sizeof rn->fail.desc, err->code,
                    err->condition, err->description);
    rn->fail.e.type = SBUS_EV_RENEW_FAILED;
    rn->fail.e.error = &rn->fail.err;
    rn->fail.e.object = rn->rcv;
    rn->fail.e.message = rn->msg;
    rn->fail.release = release_failed;
    rn->fail.owner = rn;
    if (rn->msg)
        rn->msg->renew = NULL;
    rn->msg = NULL;
    rn->rcv = NULL;
    leave_op(rn);
    rn->dead = 1;
    sbusi_ev_push(c, &rn->fail);
}

static void renew_done(sbusi_op_t *op)
{
    const sbus_error_t *err = op->ev.e.error;
    for (size_t i = 0; i < op->nrenews; i++) {
        sbusi_renew_t *rn = op->renews[i];
        if (!rn)
            continue;
        rn->op = NULL;
        rn->inflight = 0;
        if (err && op->nrenews > 1) {
            rn->solo = 1; /* whose lock? ask for each alone */
            rn->next_mono = rn->rcv->conn->now_mono;
        } else if (err) {
            fail(rn, err);
        } else {
            if (rn->msg && i < op->nseqs)
                sbusi_message_set_locked_until(rn->msg, op->seqs[i]);
            rn->solo = 0;
            schedule(rn);
        }
    }
    sbusi_free(op->renews);
    sbusi_buf_free(&op->payload);
    sbusi_free(op->msgs);
    sbusi_free(op->seqs);
    sbusi_free(op);
}

static sbusi_op_t *session_renew_op(sbus_receiver_t *r)
{
    sbusi_op_t *op = sbusi_op_new(r->conn, SBUS_OP_SESSION_RENEW_LOCK, NULL, r);
    if (!op)
        return NULL;
    sbusi_buf_t *b = &op->payload;
    sbusi_enc_descriptor(b, 0x74);
    size_t at = sbusi_enc_map(b);
    sbusi_enc_str(b, "operation", 9);
    sbusi_enc_cstr(b, "com.microsoft:renew-session-lock");
    sbusi_enc_end(b, at, 2);
    sbusi_enc_descriptor(b, 0x77);
    at = sbusi_enc_map(b);
    sbusi_enc_str(b, "session-id", 10);
    sbusi_enc_cstr(b, r->session_id ? r->session_id : "");
    sbusi_enc_end(b, at, 2);
    return op;
}

#define MAX_TOKENS 64

/* Starts one renewal op for the n registrations rns (all messages of one
 * receiver, or one session registration). */
static void start_renewal(sbus_receiver_t *r, sbusi_renew_t **rns, size_t n)
{
    sbus_message_t *ms[MAX_TOKENS];
    for (size_t i = 0; i < n; i++)
        ms[i] = rns[i]->msg;
    int rc = 0;
    sbusi_op_t *op = rns[0]->msg ? sbusi_renew_lock_op(r, ms, n, NULL, &rc)
                                 : session_renew_op(r);
    if (!op)
        return; /* out of memory: try again on the next tick */
    op->rcv = r;
    op->on_done = renew_done;
    op->renews = sbusi_memdup(rns, n * sizeof *rns);
    if (!op->renews || op->payload.oom ||
        sbusi_mgmt_submit(r->conn, r->entity, op) < 0) {
        sbusi_message_unref_op(op->msg, op);
        op->nrenews = 0;
        renew_done(op);
        return;
    }
    op->nrenews = n;
    for (size_t i = 0; i < n; i++) {
        rns[i]->op = op;
        rns[i]->inflight = 1;
    }
    sbusi_op_start(r->conn, op);
}

void sbusi_renew_tick(sbus_receiver_t *r)
{
    sbus_conn_t *c = r->conn;
    sbusi_renew_t *due[MAX_TOKENS];
    size_t n = 0;
    sbusi_renew_t *rn = r->renews;
    while (rn) {
        sbusi_renew_t *next = rn->next;
        if (c->now_mono >= rn->until_mono && !rn->inflight) {
            sbusi_renew_unlink(rn);
        } else if (!rn->inflight && c->now_mono >= rn->next_mono) {
            if (!rn->msg || rn->solo)
                start_renewal(r, &rn, 1);
            else if (n < MAX_TOKENS)
                due[n++] = rn;
        }
        rn = next;
    }
    if (n)
        start_renewal(r, due, n);
}

int64_t sbusi_renew_deadline(sbus_receiver_t *r)
{
    int64_t next = -1;
    for (sbusi_renew_t *rn = r->renews; rn; rn = rn->next) {
        if (rn->inflight)
            continue;
        int64_t t = rn->next_mono < rn->until_mono ? rn->next_mono
                                                   : rn->until_mono;
        if (next < 0 || t < next)
            next = t;
    }
    return next;
}

void sbusi_renew_stop_all(sbus_receiver_t *r)
{
    while (r->renews)
        sbusi_renew_unlink(r->renews);
}

void sbusi_renew_free_all(sbus_receiver_t *r) { sbusi_renew_stop_all(r); }

static sbusi_renew_t *find(sbus_receiver_t *r, const sbus_message_t *m)
{
    for (sbusi_renew_t *rn = r->renews; rn; rn = rn->next)
        if (rn->msg == m)
            return rn;
    return NULL;
}

static int add(sbus_receiver_t *r, sbus_message_t *m, int64_t max_ms)
{
    sbus_conn_t *c = r->conn;
    sbusi_renew_t *rn = find(r, m);
    if (!rn) {
        rn = sbusi_calloc(1, sizeof *rn);
        if (!rn)
            return SBUS_ENOMEM;
        rn->rcv = r;
        rn->msg = m;
        rn->next = r->renews;
        r->renews = rn;
        if (m)
            m->renew = rn;
    }
    rn->until_mono = c->now_mono + max_ms;
    schedule(rn);
    sbusi_process(c);
    return 0;
}

int sbus_receiver_auto_renew(sbus_receiver_t *r, sbus_message_t *m,
                             int64_t max_ms)
{
    if (!r || !m || max_ms <= 0 || m->rcv_uid != r->uid)
        return SBUS_EINVAL;
    if (m->state == SBUS_MSG_SETTLED)
        return SBUS_ESETTLED;
    if (r->o.session || m->state != SBUS_MSG_UNSETTLED || !m->has_lock)
        return SBUS_ESTATE;
    if (m->renew && m->renew->rcv != r)
        return SBUS_EINVAL;
    return add(r, m, max_ms);
}

int sbus_receiver_auto_renew_session(sbus_receiver_t *r, int64_t max_ms)
{
    if (!r || max_ms <= 0)
        return SBUS_EINVAL;
    if (!r->o.session || !r->session_id)
        return SBUS_ESTATE;
    return add(r, NULL, max_ms);
}

int sbus_receiver_auto_renew_stop(sbus_receiver_t *r, sbus_message_t *m)
{
    if (!r || !m)
        return SBUS_EINVAL;
    sbusi_renew_t *rn = find(r, m);
    if (!rn)
        return SBUS_ENOENT;
    sbusi_renew_unlink(rn);
    return 0;
}
