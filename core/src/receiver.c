/*
 * receiver.c - receivers: peek-lock and receive-and-delete links, credit,
 * prefetch, receive calls, settlement, and the $management operations that
 * belong to receiving (peek, renew-lock, receive-deferred,
 * update-disposition, session state and lock).
 *
 * Credit. Without prefetch, credit exists only while a receive call is
 * pending (max_count minus what it holds). A receive completes at the end
 * of the input batch in which it got its first messages, or at max_wait
 * with none; then the remaining credit is withdrawn with a drain, and
 * anything that still arrives for nobody is released (outcome `released`,
 * no delivery-count increment). With prefetch N the link keeps N messages
 * ahead in a local queue, which receive calls take from first.
 *
 * Messages and their link. A received message records the receiver's uid
 * and link generation, and its pn_delivery_t, which is only touched after
 * both match (the delivery is alive exactly as long as that link
 * generation). A message from a lost link cannot be settled on the link:
 * its lock went with the link (SBUS_ELOCKLOST).
 *
 * Settlement on the link uses rcv-settle-mode second: we send our outcome
 * unsettled and complete when the broker settles with the same outcome, or
 * with rejected{message-lock-lost}.
 */
#include "internal.h"

#include <proton/codec.h>
#include <proton/condition.h>
#include <stdio.h>
#include <string.h>

#define DOTNET_EPOCH_TICKS 621355968000000000LL

/* ------------------------------ create ----------------------------- */

void sbus_receiver_options_init(sbus_receiver_options_t *o)
{
    memset(o, 0, sizeof *o);
    o->mode = SBUS_PEEK_LOCK;
}

static char *entity_path(const sbus_receiver_options_t *o)
{
    char buf[1024];
    int n = snprintf(buf, sizeof buf, "%s%s%s%s", o->entity,
                     o->subscription ? "/Subscriptions/" : "",
                     o->subscription ? o->subscription : "",
                     o->sub_queue == SBUS_SUBQ_DEAD_LETTER ? "/$DeadLetterQueue"
                     : o->sub_queue == SBUS_SUBQ_TRANSFER_DEAD_LETTER
                         ? "/$Transfer/$DeadLetterQueue"
                         : "");
    if (n < 0 || (size_t)n >= sizeof buf)
        return NULL;
    return sbusi_strdup(buf);
}

int sbus_receiver_new(sbus_conn_t *c, const sbus_receiver_options_t *o,
                      sbus_receiver_t **out)
{
    if (!c || !o || !o->entity || !*o->entity || !out ||
        o->mode > SBUS_RECEIVE_AND_DELETE || o->sub_queue > 2)
        return SBUS_EINVAL;
    if (o->session && o->session_id && strlen(o->session_id) > 128)
        return SBUS_EINVAL;
    sbus_receiver_t *r = sbusi_calloc(1, sizeof *r);
    if (!r)
        return SBUS_ENOMEM;
    sbusi_owner_init(&r->own, SBUSI_OWN_RECEIVER);
    r->conn = c;
    r->uid = c->next_uid++;
    r->o = *o;
    r->o.entity = r->o.subscription = r->o.session_id = NULL;
    char name[96];
    snprintf(name, sizeof name, "receiver-%s-%llu", c->container_id,
             (unsigned long long)r->uid);
    r->name = sbusi_strdup(name);
    r->entity = entity_path(o);
    if (o->session && o->session_id)
        r->session_id = sbusi_strdup(o->session_id);
    r->own.aud = r->entity ? sbusi_audience_get(c, r->entity) : NULL;
    if (!r->name || !r->entity || !r->own.aud ||
        (o->session && o->session_id && !r->session_id)) {
        sbusi_free(r->name);
        sbusi_free(r->entity);
        sbusi_free(r->session_id);
        sbusi_free(r);
        return SBUS_ENOMEM;
    }
    r->next = c->receivers;
    c->receivers = r;
    *out = r;
    return 0;
}

static int closed(const sbus_receiver_t *r)
{
    return r->own.state == SBUSI_L_CLOSING || r->own.state == SBUSI_L_CLOSED ||
           sbusi_conn_closed(r->conn);
}

static void wake(sbus_receiver_t *r)
{
    if (r->own.state == SBUSI_L_FAILED && !r->o.session) {
        r->own.state = SBUSI_L_IDLE;
        r->own.attempts = 0;
        sbusi_audience_retry(r->own.aud);
    }
}

int sbus_receiver_open(sbus_receiver_t *r, void *token)
{
    if (!r)
        return SBUS_EINVAL;
    if (closed(r))
        return SBUS_ESTATE;
    sbusi_op_t *op = sbusi_op_new(r->conn, SBUS_OP_RECEIVER_OPEN, token, r);
    if (!op)
        return SBUS_ENOMEM;
    wake(r);
    op->rcv = r;
    r->opened = 1;
    r->nopen++;
    /* next-available may legitimately wait session_wait_ms for a session */
    if (r->o.session && !r->session_id && r->o.session_wait_ms > 0)
        op->deadline = r->conn->now_mono + r->o.session_wait_ms +
                       r->conn->op_timeout_ms;
    sbusi_op_start(r->conn, op);
    sbusi_process(r->conn);
    return 0;
}

/* ------------------------- messages helpers ------------------------ */

/* Gives a delivery back to the broker unprocessed (no count increment). */
static void release_delivery(sbus_receiver_t *r, sbus_message_t *m)
{
    if (m->dlv && m->rcv_uid == r->uid && m->link_gen == r->own.gen &&
        r->own.link && m->state == SBUS_MSG_UNSETTLED) {
        pn_delivery_update(m->dlv, PN_RELEASED);
        pn_delivery_settle(m->dlv);
        r->released = 1;
    }
    m->dlv = NULL;
}

static void release_and_free(sbus_receiver_t *r, sbus_message_t *m)
{
    release_delivery(r, m);
    sbus_message_free(m);
}

static void free_queue(sbus_receiver_t *r, int release)
{
    while (r->q_head) {
        sbus_message_t *m = r->q_head;
        r->q_head = m->qnext;
        m->qnext = NULL;
        if (release)
            release_delivery(r, m);
        sbus_message_free(m);
    }
    r->q_tail = NULL;
    r->q_len = 0;
}

static sbusi_op_t *first_receive(sbus_receiver_t *r) { return r->rq_head; }

static void rq_push(sbus_receiver_t *r, sbusi_op_t *op)
{
    sbusi_opq_push(&r->rq_head, &r->rq_tail, op);
}

void sbusi_receiver_forget(sbus_receiver_t *r, sbusi_op_t *op)
{
    sbusi_opq_remove(&r->rq_head, &r->rq_tail, op);
}

/* ------------------------- receive timeouts ------------------------ */

/* A receive given an operation timeout may wait for its link (connection
 * down, reconnect backoff, attach retries) at most that long in a row: the
 * clock runs while the link is not attached and starts again each time it
 * is lost. While the link is attached the receive's own max_wait governs. */
static int link_up(const sbus_receiver_t *r)
{
    return r->own.state == SBUSI_L_ATTACHED && r->own.link;
}

static void arm_timeout(sbus_receiver_t *r, sbusi_op_t *op)
{
    if (!op->user_timeout)
        return;
    if (link_up(r))
        op->user_deadline = 0; /* running: max_wait governs */
    else if (!op->user_deadline)
        op->user_deadline = r->conn->now_mono + op->user_timeout;
}

/* The link attached or went away: start or stop the waiting clocks. */
static void arm_timeouts(sbus_receiver_t *r)
{
    for (sbusi_op_t *op = r->rq_head; op; op = op->qnext)
        arm_timeout(r, op);
}

void sbusi_receiver_set_timeout(sbus_receiver_t *r, sbusi_op_t *op,
                                int64_t ms)
{
    op->user_timeout = ms;
    op->user_deadline = 0;
    arm_timeout(r, op);
}

/* ------------------------------ credit ----------------------------- */

static void maybe_drain(sbus_receiver_t *r)
{
    pn_link_t *l = r->own.link;
    if (!l || r->own.state != SBUSI_L_ATTACHED || r->o.prefetch ||
        r->draining || first_receive(r) || pn_link_credit(l) <= 0)
        return;
    pn_link_drain(l, 0);
    r->draining = 1;
}

static void grant_credit(sbus_receiver_t *r)
{
    pn_link_t *l = r->own.link;
    sbusi_op_t *op = first_receive(r);
    int64_t want = op ? (int64_t)op->max_count - (int64_t)op->nmsgs : 0;
    if (r->o.prefetch > r->q_len)
        want += r->o.prefetch - r->q_len;
    int64_t cur = pn_link_credit(l);
    if (want <= cur)
        return;
    if (r->draining) {
        pn_link_set_drain(l, false);
        r->draining = 0;
    }
    /* Proton writes a link's flow before its dispositions. A released
       message must be back in the queue before the broker sees new
       credit, or it hands out the next one first and the order is lost:
       have the transport write what is pending now, ahead of this flow. */
    if (r->released && r->conn->have_driver)
        pn_transport_pending(r->conn->driver.transport);
    r->released = 0;
    pn_link_flow(l, (int)(want - cur));
}

/* ------------------------------ attach ----------------------------- */

static void set_filter(sbus_receiver_t *r, pn_link_t *l)
{
    pn_data_t *f = pn_terminus_filter(pn_link_source(l));
    pn_data_put_map(f);
    pn_data_enter(f);
    pn_data_put_symbol(f, pn_bytes(28, "com.microsoft:session-filter"));
    if (r->session_id)
        pn_data_put_string(f, pn_bytes(strlen(r->session_id), r->session_id));
    else
        pn_data_put_null(f);
    pn_data_exit(f);
    if (!r->session_id && r->o.session_wait_ms > 0) {
        pn_data_t *p = pn_link_properties(l);
        pn_data_put_map(p);
        pn_data_enter(p);
        pn_data_put_symbol(p, pn_bytes(21, "com.microsoft:timeout"));
        int64_t w = r->o.session_wait_ms;
        pn_data_put_uint(p, w > UINT32_MAX ? UINT32_MAX : (uint32_t)w);
        pn_data_exit(p);
    }
}

static void attach(sbus_receiver_t *r)
{
    pn_link_t *l = sbusi_link_new(r->conn, &r->own, 0, r->name);
    if (!l)
        return;
    pn_terminus_set_address(pn_link_source(l), r->entity);
    pn_terminus_set_address(pn_link_target(l), r->name);
    if (r->o.mode == SBUS_PEEK_LOCK) {
        pn_link_set_snd_settle_mode(l, PN_SND_UNSETTLED);
        pn_link_set_rcv_settle_mode(l, PN_RCV_SECOND);
    } else {
        pn_link_set_snd_settle_mode(l, PN_SND_SETTLED);
        pn_link_set_rcv_settle_mode(l, PN_RCV_FIRST);
    }
    if (r->o.session)
        set_filter(r, l);
    r->draining = 0;
    pn_link_open(l);
}

/* Reads the granted session id and lock expiry from the attach reply. */
static void read_session(sbus_receiver_t *r, pn_link_t *l)
{
    pn_data_t *f = pn_terminus_filter(pn_link_remote_source(l));
    pn_data_rewind(f);
    if (pn_data_next(f) && pn_data_type(f) == PN_MAP) {
        pn_data_enter(f);
        while (pn_data_next(f)) {
            pn_bytes_t k = pn_data_get_symbol(f);
            if (!pn_data_next(f))
                break;
            if (k.size != 28 || memcmp(k.start, "com.microsoft:session-filter", 28))
                continue;
            if (pn_data_type(f) == PN_DESCRIBED) {
                pn_data_enter(f);
                pn_data_next(f);
                pn_data_next(f);
            }
            if (pn_data_type(f) == PN_STRING || pn_data_type(f) == PN_SYMBOL) {
                pn_bytes_t v = pn_data_type(f) == PN_STRING ? pn_data_get_string(f)
                                                            : pn_data_get_symbol(f);
                char *s = sbusi_strndup(v.start, v.size);
                if (s) {
                    sbusi_free(r->session_id);
                    r->session_id = s;
                }
            }
            break;
        }
    }
    pn_data_t *p = pn_link_remote_properties(l);
    pn_data_rewind(p);
    if (pn_data_next(p) && pn_data_type(p) == PN_MAP) {
        pn_data_enter(p);
        while (pn_data_next(p)) {
            pn_bytes_t k = pn_data_get_symbol(p);
            if (!pn_data_next(p))
                break;
            if (k.size == 30 &&
                memcmp(k.start, "com.microsoft:locked-until-utc", 30) == 0 &&
                pn_data_type(p) == PN_LONG)
                r->session_locked_until =
                    (pn_data_get_long(p) - DOTNET_EPOCH_TICKS) / 10000;
        }
    }
}

static void complete_opens(sbus_receiver_t *r, const sbusi_ev_t *err)
{
    while (err && r->rq_head)
        sbusi_op_fail_from(r->rq_head, err);
    if (!r->nopen)
        return;
    sbus_conn_t *c = r->conn;
    for (sbusi_op_t *op = c->ops.next; op != &c->ops && r->nopen;) {
        sbusi_op_t *next = op->next;
        if (op->rcv == r && op->kind == SBUS_OP_RECEIVER_OPEN) {
            if (err) {
                sbusi_op_fail_from(op, err);
            } else {
                op->ev.e.data = r->session_id;
                op->ev.e.len = r->session_id ? strlen(r->session_id) : 0;
                op->ev.e.time_ms = r->session_locked_until;
                sbusi_op_done(op, 0, NULL, NULL);
            }
        }
        op = next;
    }
}

static int has_work(sbus_receiver_t *r)
{
    return r->nopen || r->rq_head || (r->opened && r->o.prefetch);
}

void sbusi_receiver_pump(sbus_receiver_t *r)
{
    if (closed(r))
        return;
    if (r->own.state != SBUSI_L_ATTACHED && !has_work(r))
        return;
    int st = sbusi_owner_attach(r->conn, &r->own);
    if (st == 2)
        attach(r);
    if (st < 0)
        complete_opens(r, &r->own.last_err);
    if (st != 1)
        return;
    complete_opens(r, NULL);
    grant_credit(r);
}

/* ----------------------------- deliveries -------------------------- */

/* .NET GUID byte order (first three groups little-endian) -> RFC 4122. */
static void lock_from_tag(const uint8_t *t, uint8_t out[16])
{
    out[0] = t[3];
    out[1] = t[2];
    out[2] = t[1];
    out[3] = t[0];
    out[4] = t[5];
    out[5] = t[4];
    out[6] = t[7];
    out[7] = t[6];
    memcpy(out + 8, t + 8, 8);
}

static void hand_over(sbus_receiver_t *r, sbus_message_t *m)
{
    sbusi_op_t *op = first_receive(r);
    if (op) {
        op->msgs[op->nmsgs++] = m;
        if (op->nmsgs >= op->max_count)
            sbusi_op_done(op, 0, NULL, NULL);
        return;
    }
    /* kept for the next receive: prefetched ones, and receive-and-delete
       ones, which the broker has already deleted (releasing them would
       lose them) */
    if (r->o.prefetch || m->state == SBUS_MSG_PRESETTLED) {
        if (r->q_tail)
            r->q_tail->qnext = m;
        else
            r->q_head = m;
        r->q_tail = m;
        r->q_len++;
        return;
    }
    release_and_free(r, m); /* arrived after its receive call ended */
}

static void on_message(sbus_receiver_t *r, pn_delivery_t *d)
{
    sbus_conn_t *c = r->conn;
    pn_delivery_tag_t tag = pn_delivery_tag(d);
    int presettled = pn_delivery_settled(d) ||
                     r->o.mode == SBUS_RECEIVE_AND_DELETE;
    /* the payload goes from Proton straight into the message's own
       allocation, which the body then points into: one allocation and
       one copy per message */
    uint8_t *payload;
    size_t n = pn_delivery_pending(d);
    sbus_message_t *m = sbusi_message_alloc_payload(&c->msgpool, n, &payload);
    if (!m)
        return; /* left buffered in Proton; tried again later */
    pn_link_t *l = pn_delivery_link(d);
    ssize_t got = pn_link_recv(l, (char *)payload, n);
    pn_link_advance(l);
    if (sbusi_message_decode_payload(m, got > 0 ? (size_t)got : 0) < 0) {
        pn_delivery_update(d, PN_RELEASED); /* let the broker keep it */
        pn_delivery_settle(d);
        sbusi_log(c, "could not decode a message; released it");
        return;
    }
    m->rcv_uid = r->uid;
    m->link_gen = r->own.gen;
    if (presettled) {
        pn_delivery_settle(d);
        m->state = SBUS_MSG_PRESETTLED;
        m->has_lock = 0;
    } else {
        m->dlv = d;
        m->state = SBUS_MSG_UNSETTLED;
        if (tag.size == 16) {
            lock_from_tag((const uint8_t *)tag.start, m->lock_token);
            m->has_lock = 1;
        }
    }
    int64_t seq;
    if (sbus_message_get_field(m, SBUS_FIELD_SEQUENCE_NUMBER, &seq) == 0 &&
        seq > r->last_seq)
        r->last_seq = seq;
    hand_over(r, m);
}

static int outcome_matches(int outcome, uint64_t state)
{
    switch (outcome) {
    case SBUS_COMPLETE: return state == PN_ACCEPTED;
    case SBUS_ABANDON:
    case SBUS_DEFER: return state == PN_MODIFIED || state == PN_RELEASED;
    default: return 0;
    }
}

static void on_settled(sbusi_op_t *op, pn_delivery_t *d)
{
    uint64_t state = pn_delivery_remote_state(d);
    if (!state && !pn_delivery_settled(d))
        return;
    pn_delivery_set_context(d, NULL);
    op->dlv = NULL;
    pn_condition_t *cond = state == PN_REJECTED
                               ? pn_disposition_condition(pn_delivery_remote(d))
                               : NULL;
    const char *name = cond ? pn_condition_get_name(cond) : NULL;
    pn_delivery_settle(d);
    if (outcome_matches(op->outcome, state) || !state ||
        (op->outcome == SBUS_DEAD_LETTER && state == PN_REJECTED &&
         (!name || strcmp(name, "com.microsoft:dead-letter") == 0))) {
        sbusi_op_done(op, 0, NULL, NULL);
        return;
    }
    sbusi_op_done(op, name ? 0 : SBUS_ESERVICE,
                  name ? name : NULL,
                  cond && pn_condition_get_description(cond)
                      ? pn_condition_get_description(cond)
                      : "the service refused the settlement");
}

static void on_delivery(sbus_receiver_t *r, pn_delivery_t *d)
{
    sbusi_op_t *op = pn_delivery_get_context(d);
    if (op) {
        on_settled(op, d);
        return;
    }
    if (pn_delivery_readable(d) && !pn_delivery_partial(d)) {
        if (pn_delivery_aborted(d)) {
            pn_delivery_settle(d);
            return;
        }
        on_message(r, d);
    }
}

/* ------------------------------ events ----------------------------- */

static void fail_settles(sbus_receiver_t *r)
{
    sbus_conn_t *c = r->conn;
    for (sbusi_op_t *op = c->ops.next; op != &c->ops;) {
        sbusi_op_t *next = op->next;
        if (op->rcv == r && op->kind == SBUS_OP_SETTLE && op->dlv) {
            op->dlv = NULL;
            sbusi_op_done(op, SBUS_ELOCKLOST, NULL,
                          "the link the message came from was lost, and its "
                          "lock with it");
        }
        op = next;
    }
}

void sbusi_receiver_lost(sbus_receiver_t *r)
{
    fail_settles(r);
    free_queue(r, 0);
    sbusi_owner_lost(&r->own);
    r->draining = 0;
    arm_timeouts(r);
    if (r->own.state == SBUSI_L_ATTACHED || r->own.state == SBUSI_L_ATTACHING) {
        /* a session receiver asks for the same session again on next
           use (relock) */
        if (r->o.session && r->own.state == SBUSI_L_ATTACHED)
            r->relock = 1;
        r->own.state = SBUSI_L_IDLE;
    }
}

/* A session link was detached by the service (or its attach refused).
 * One that held its session (forced detach, e.g. for idleness) re-attaches
 * to the same session id on next use, as plain receivers do; a retriable
 * refusal of that re-attach backs off under the retry policy. Any other
 * failure of a receiver that held a session means the session is gone for
 * it (locked by someone else now, or its lock expired): session-lock-lost.
 * A first attach that fails fails the open, as before. */
static void session_detached(sbus_receiver_t *r, int was_attached)
{
    sbusi_owner_t *o = &r->own;
    if (was_attached)
        r->relock = 1;
    const sbus_error_t *e = &o->last_err.err;
    if (!o->has_err || (r->relock && e->retriable))
        sbusi_owner_after_detach(r->conn, o); /* IDLE or BACKOFF */
    else
        o->state = SBUSI_L_FAILED;
    if (o->state != SBUSI_L_FAILED || !r->relock ||
        e->code == SBUS_ESESSIONLOCKLOST)
        return;
    char cond[SBUSI_COND_MAX], desc[SBUSI_DESC_MAX];
    snprintf(cond, sizeof cond, "%s", e->condition ? e->condition : "");
    snprintf(desc, sizeof desc, "the session lock was lost: %s",
             e->description);
    sbusi_owner_set_error(o, SBUS_ESESSIONLOCKLOST, cond[0] ? cond : NULL,
                          desc);
}

static void on_remote_close(sbus_receiver_t *r, pn_link_t *l)
{
    int was_attached = r->own.state == SBUSI_L_ATTACHED;
    sbusi_owner_error_from_link(&r->own, l);
    if (pn_link_state(l) & PN_LOCAL_ACTIVE)
        pn_link_close(l);
    fail_settles(r);
    free_queue(r, 0);
    sbusi_owner_lost(&r->own);
    r->draining = 0;
    arm_timeouts(r);
    if (r->own.state == SBUSI_L_CLOSING) {
        r->own.state = SBUSI_L_CLOSED;
        sbusi_fail_object_kind(r->conn, r, SBUS_OP_RECEIVER_CLOSE, 0, NULL);
        return;
    }
    if (r->o.session)
        session_detached(r, was_attached);
    else
        sbusi_owner_after_detach(r->conn, &r->own);
    if (r->own.state == SBUSI_L_FAILED)
        complete_opens(r, &r->own.last_err);
}

void sbusi_receiver_on_event(sbus_receiver_t *r, pn_event_t *e, pn_link_t *l,
                             pn_delivery_t *d)
{
    switch (pn_event_type(e)) {
    case PN_LINK_REMOTE_OPEN:
        if (r->own.state != SBUSI_L_ATTACHING ||
            !pn_terminus_get_address(pn_link_remote_source(l)))
            break; /* refused: the detach with the error follows */
        r->own.state = SBUSI_L_ATTACHED;
        r->own.attempts = 0;
        sbusi_conn_progress(r->conn);
        arm_timeouts(r);
        if (r->o.session)
            read_session(r, l);
        break;
    case PN_LINK_REMOTE_CLOSE:
    case PN_LINK_REMOTE_DETACH:
        on_remote_close(r, l);
        break;
    case PN_LINK_FLOW:
        if (r->draining && pn_link_credit(l) <= 0) {
            pn_link_set_drain(l, false);
            r->draining = 0;
        }
        break;
    case PN_DELIVERY:
        on_delivery(r, d);
        break;
    default: break;
    }
}

void sbusi_receiver_batch_end(sbus_receiver_t *r)
{
    sbusi_op_t *op = first_receive(r);
    if (op && op->nmsgs > 0)
        sbusi_op_done(op, 0, NULL, NULL);
    if (r->own.state == SBUSI_L_ATTACHED) {
        if (first_receive(r))
            grant_credit(r);
        else
            maybe_drain(r);
    }
}

void sbusi_receiver_tick(sbus_receiver_t *r)
{
    sbus_conn_t *c = r->conn;
    for (sbusi_op_t *op = r->rq_head; op;) {
        sbusi_op_t *next = op->qnext;
        if (op->deadline >= 0 && c->now_mono >= op->deadline)
            sbusi_op_done(op, 0, NULL, NULL); /* what it has, maybe none */
        else if (op->user_deadline && c->now_mono >= op->user_deadline)
            sbusi_op_done(op, op->nmsgs ? 0 : SBUS_ETIMEOUT, NULL,
                          "the receive could not run within its operation "
                          "timeout: the connection or the link was down");
        op = next;
    }
    sbusi_renew_tick(r);
}

int64_t sbusi_receiver_deadline(sbus_receiver_t *r)
{
    int64_t next = sbusi_renew_deadline(r);
    if (r->own.state == SBUSI_L_BACKOFF && (next < 0 || r->own.retry_at < next))
        next = r->own.retry_at;
    for (sbusi_op_t *op = r->rq_head; op; op = op->qnext)
        if (op->user_deadline && (next < 0 || op->user_deadline < next))
            next = op->user_deadline;
    return next;
}

/* ------------------------------ receive ---------------------------- */

int sbus_receiver_receive(sbus_receiver_t *r, uint32_t max_count,
                          int64_t max_wait_ms, void *token)
{
    if (!r || !max_count)
        return SBUS_EINVAL;
    if (closed(r))
        return SBUS_ESTATE;
    sbus_conn_t *c = r->conn;
    sbusi_op_t *op = sbusi_op_new(c, SBUS_OP_RECEIVE, token, r);
    if (!op)
        return SBUS_ENOMEM;
    op->msgs = sbusi_calloc(max_count, sizeof *op->msgs);
    if (!op->msgs) {
        sbusi_op_discard(op);
        return SBUS_ENOMEM;
    }
    op->rcv = r;
    op->max_count = max_count;
    op->deadline = max_wait_ms < 0 ? -1 : c->now_mono + max_wait_ms;
    wake(r);
    r->opened = 1;
    while (r->q_head && op->nmsgs < max_count && !first_receive(r)) {
        sbus_message_t *m = r->q_head;
        r->q_head = m->qnext;
        if (!r->q_head)
            r->q_tail = NULL;
        m->qnext = NULL;
        r->q_len--;
        op->msgs[op->nmsgs++] = m;
    }
    if (op->nmsgs) {
        sbusi_op_done(op, 0, NULL, NULL); /* prefetched: at once */
    } else {
        sbusi_op_start(c, op);
        rq_push(r, op);
    }
    sbusi_process(c);
    return 0;
}

/* Puts messages a receive call held back at the front of the queue when
 * they cannot be released (receive-and-delete: the broker deleted them
 * already), releases the others. */
static void give_back(sbus_receiver_t *r, sbusi_op_t *op)
{
    for (size_t i = op->nmsgs; i-- > 0;) {
        sbus_message_t *m = op->msgs[i];
        if (m->state != SBUS_MSG_PRESETTLED) {
            release_and_free(r, m);
            continue;
        }
        m->qnext = r->q_head;
        r->q_head = m;
        if (!r->q_tail)
            r->q_tail = m;
        r->q_len++;
    }
    op->nmsgs = 0;
}

void sbusi_receiver_cancel(sbus_receiver_t *r, sbusi_op_t *op)
{
    give_back(r, op);
    sbusi_op_done(op, SBUS_ECANCELLED, NULL, "cancelled by the caller");
    maybe_drain(r);
}

/* ------------------------------ settle ----------------------------- */

static void set_outcome(pn_delivery_t *d, int outcome, const char *reason,
                        const char *description)
{
    pn_disposition_t *disp = pn_delivery_local(d);
    switch (outcome) {
    case SBUS_COMPLETE: pn_delivery_update(d, PN_ACCEPTED); return;
    case SBUS_ABANDON:
        pn_disposition_set_failed(disp, true);
        pn_delivery_update(d, PN_MODIFIED);
        return;
    case SBUS_DEFER:
        pn_disposition_set_failed(disp, true);
        pn_disposition_set_undeliverable(disp, true);
        pn_delivery_update(d, PN_MODIFIED);
        return;
    default: break;
    }
    pn_condition_t *cond = pn_disposition_condition(disp);
    pn_condition_set_name(cond, "com.microsoft:dead-letter");
    if (description)
        pn_condition_set_description(cond, description);
    pn_data_t *info = pn_condition_info(cond);
    pn_data_put_map(info);
    pn_data_enter(info);
    pn_data_put_symbol(info, pn_bytes(16, "DeadLetterReason"));
    if (reason)
        pn_data_put_string(info, pn_bytes(strlen(reason), reason));
    else
        pn_data_put_null(info);
    pn_data_put_symbol(info, pn_bytes(26, "DeadLetterErrorDescription"));
    if (description)
        pn_data_put_string(info, pn_bytes(strlen(description), description));
    else
        pn_data_put_null(info);
    pn_data_exit(info);
    pn_delivery_update(d, PN_REJECTED);
}

static int settle_check(sbus_receiver_t *r, sbus_message_t *m, int outcome,
                        const char *reason, const char *description)
{
    if (!r || !m || outcome < SBUS_COMPLETE || outcome > SBUS_DEAD_LETTER)
        return SBUS_EINVAL;
    if ((reason && strlen(reason) > 4096) ||
        (description && strlen(description) > 4096))
        return SBUS_EINVAL;
    if (m->state == SBUS_MSG_SETTLED)
        return SBUS_ESETTLED;
    if (m->state == SBUS_MSG_PRESETTLED || m->state == SBUS_MSG_PEEKED)
        return SBUS_ESTATE;
    if (m->rcv_uid != r->uid)
        return SBUS_EINVAL;
    return 0;
}

static void attach_msg(sbusi_op_t *op, sbus_message_t *m)
{
    op->msg = m;
    op->msg_next = m->ops;
    m->ops = op;
}

static int settle_via_mgmt(sbus_receiver_t *r, sbus_message_t *m, int outcome,
                           const char *reason, const char *description,
                           void *token);

int sbus_receiver_settle(sbus_receiver_t *r, sbus_message_t *m,
                         sbus_outcome_t outcome, const char *reason,
                         const char *description, void *token)
{
    int rc = settle_check(r, m, outcome, reason, description);
    if (rc < 0)
        return rc;
    if (sbusi_conn_closed(r->conn))
        return SBUS_ESTATE;
    if (m->via_mgmt)
        return settle_via_mgmt(r, m, outcome, reason, description, token);
    sbus_conn_t *c = r->conn;
    sbusi_op_t *op = sbusi_op_new(c, SBUS_OP_SETTLE, token, r);
    if (!op)
        return SBUS_ENOMEM;
    op->rcv = r;
    op->outcome = outcome;
    m->state = SBUS_MSG_SETTLED;
    attach_msg(op, m);
    if (m->renew)
        sbusi_renew_unlink(m->renew);
    sbusi_op_start(c, op);
    if (!m->dlv || m->link_gen != r->own.gen || !r->own.link) {
        m->dlv = NULL;
        sbusi_op_done(op, SBUS_ELOCKLOST, NULL,
                      "the link the message came from was lost, and its lock "
                      "with it");
        return 0;
    }
    pn_delivery_t *d = m->dlv;
    m->dlv = NULL;
    set_outcome(d, outcome, reason, description);
    pn_delivery_set_context(d, op);
    op->dlv = d;
    op->dlv_gen = r->own.gen;
    op->stage = SBUSI_S_INFLIGHT;
    /* No sbusi_process() here: the disposition only changed Proton's work
       list, which the next sbus_conn_write_buffer() turns into frames, and
       nothing of ours waits on it. Settling 300 messages in a row then
       costs one pass over the connection instead of 300. */
    return 0;
}

/* ---------------------------- management --------------------------- */

static void enc_request_head(sbusi_buf_t *b, const char *operation,
                             const char *link_name)
{
    sbusi_enc_descriptor(b, 0x74);
    size_t at = sbusi_enc_map(b);
    sbusi_enc_str(b, "operation", 9);
    sbusi_enc_cstr(b, operation);
    sbusi_enc_str(b, "associated-link-name", 20);
    sbusi_enc_cstr(b, link_name);
    sbusi_enc_end(b, at, 4);
    sbusi_enc_descriptor(b, 0x77);
}

static uint32_t enc_session_id(sbus_receiver_t *r, sbusi_buf_t *b)
{
    if (!r->o.session || !r->session_id)
        return 0;
    sbusi_enc_str(b, "session-id", 10);
    sbusi_enc_cstr(b, r->session_id);
    return 2;
}

static int submit(sbus_receiver_t *r, sbusi_op_t *op)
{
    op->rcv = r;
    return sbusi_mgmt_start(r->conn, r->entity, op, closed(r));
}

static const char *disposition_status(int outcome)
{
    switch (outcome) {
    case SBUS_COMPLETE: return "completed";
    case SBUS_ABANDON: return "abandoned";
    case SBUS_DEFER: return "defered"; /* sic: the service's spelling */
    default: return "suspended";
    }
}

static int settle_via_mgmt(sbus_receiver_t *r, sbus_message_t *m, int outcome,
                           const char *reason, const char *description,
                           void *token)
{
    if (!m->has_lock)
        return SBUS_ESTATE;
    sbusi_op_t *op = sbusi_op_new(r->conn, SBUS_OP_SETTLE, token, r);
    if (!op)
        return SBUS_ENOMEM;
    sbusi_buf_t *b = &op->payload;
    enc_request_head(b, "com.microsoft:update-disposition", r->name);
    size_t at = sbusi_enc_map(b);
    uint32_t n = 4;
    sbusi_enc_str(b, "disposition-status", 18);
    sbusi_enc_cstr(b, disposition_status(outcome));
    sbusi_enc_str(b, "lock-tokens", 11);
    size_t arr = sbusi_enc_array(b, 0x98);
    sbusi_enc_array_uuid(b, m->lock_token);
    sbusi_enc_end(b, arr, 1);
    if (outcome == SBUS_DEAD_LETTER) {
        sbusi_enc_str(b, "deadletter-reason", 17);
        sbusi_enc_cstr(b, reason ? reason : "");
        sbusi_enc_str(b, "deadletter-description", 22);
        sbusi_enc_cstr(b, description ? description : "");
        n += 4;
    }
    n += enc_session_id(r, b);
    sbusi_enc_end(b, at, n);
    attach_msg(op, m);
    int rc = submit(r, op);
    if (rc == 0) {
        m->state = SBUS_MSG_SETTLED;
        if (m->renew)
            sbusi_renew_unlink(m->renew);
    }
    return rc;
}

void sbusi_receiver_adopt_deferred(sbus_receiver_t *r, sbus_message_t *m)
{
    if (!r)
        return;
    m->rcv_uid = r->uid;
    m->via_mgmt = 1;
    m->state = r->o.mode == SBUS_RECEIVE_AND_DELETE ? SBUS_MSG_PRESETTLED
                                                    : SBUS_MSG_UNSETTLED;
}

/* Starts a renew-lock request for the n messages ms (one request, several
 * lock tokens); used by the public call (n = 1, the op refers to ms[0])
 * and by the auto-renew timers (with on_done set). */
sbusi_op_t *sbusi_renew_lock_op(sbus_receiver_t *r, sbus_message_t *const *ms,
                                size_t n, void *token, int *rc)
{
    sbusi_op_t *op = sbusi_op_new(r->conn, SBUS_OP_RENEW_LOCK, token, r);
    if (!op) {
        *rc = SBUS_ENOMEM;
        return NULL;
    }
    sbusi_buf_t *b = &op->payload;
    enc_request_head(b, "com.microsoft:renew-lock", r->name);
    size_t at = sbusi_enc_map(b);
    sbusi_enc_str(b, "lock-tokens", 11);
    size_t arr = sbusi_enc_array(b, 0x98);
    for (size_t i = 0; i < n; i++)
        sbusi_enc_array_uuid(b, ms[i]->lock_token);
    sbusi_enc_end(b, arr, (uint32_t)n);
    sbusi_enc_end(b, at, 2);
    if (n == 1)
        attach_msg(op, ms[0]);
    *rc = 0;
    return op;
}

int sbus_receiver_renew_lock(sbus_receiver_t *r, sbus_message_t *m,
                             void *token)
{
    if (!r || !m)
        return SBUS_EINVAL;
    if (r->o.session || m->rcv_uid != r->uid)
        return r->o.session ? SBUS_ESTATE : SBUS_EINVAL;
    if (m->state == SBUS_MSG_SETTLED)
        return SBUS_ESETTLED;
    if (m->state != SBUS_MSG_UNSETTLED || !m->has_lock)
        return SBUS_ESTATE;
    int rc;
    sbusi_op_t *op = sbusi_renew_lock_op(r, &m, 1, token, &rc);
    if (!op)
        return rc;
    rc = submit(r, op);
    return rc;
}

int sbus_receiver_peek(sbus_receiver_t *r, uint32_t max_count,
                       int64_t from_seq, void *token)
{
    if (!r || !max_count || from_seq < 0)
        return SBUS_EINVAL;
    sbusi_op_t *op = sbusi_op_new(r->conn, SBUS_OP_PEEK, token, r);
    if (!op)
        return SBUS_ENOMEM;
    sbusi_buf_t *b = &op->payload;
    enc_request_head(b, "com.microsoft:peek-message", r->name);
    size_t at = sbusi_enc_map(b);
    sbusi_enc_str(b, "from-sequence-number", 20);
    sbusi_enc_long(b, from_seq ? from_seq : r->last_seq + 1);
    sbusi_enc_str(b, "message-count", 13);
    sbusi_enc_int(b, (int32_t)(max_count > INT32_MAX ? INT32_MAX : max_count));
    uint32_t n = 4 + enc_session_id(r, b);
    sbusi_enc_end(b, at, n);
    return submit(r, op);
}

int sbus_receiver_receive_deferred(sbus_receiver_t *r, const int64_t *seqs,
                                   size_t n, void *token)
{
    if (!r || !seqs || !n)
        return SBUS_EINVAL;
    sbusi_op_t *op = sbusi_op_new(r->conn, SBUS_OP_RECEIVE_DEFERRED, token, r);
    if (!op)
        return SBUS_ENOMEM;
    sbusi_buf_t *b = &op->payload;
    enc_request_head(b, "com.microsoft:receive-by-sequence-number", r->name);
    size_t at = sbusi_enc_map(b);
    sbusi_enc_str(b, "sequence-numbers", 16);
    size_t arr = sbusi_enc_array(b, 0x81);
    for (size_t i = 0; i < n; i++)
        sbusi_enc_array_long(b, seqs[i]);
    sbusi_enc_end(b, arr, (uint32_t)n);
    sbusi_enc_str(b, "receiver-settle-mode", 20);
    sbusi_enc_uint(b, r->o.mode == SBUS_PEEK_LOCK ? 1 : 0);
    uint32_t cnt = 4 + enc_session_id(r, b);
    sbusi_enc_end(b, at, cnt);
    return submit(r, op);
}

const char *sbus_receiver_session_id(const sbus_receiver_t *r)
{
    return r && r->o.session ? r->session_id : NULL;
}

int64_t sbus_receiver_session_locked_until(const sbus_receiver_t *r)
{
    return r ? r->session_locked_until : 0;
}

static sbusi_op_t *session_op(sbus_receiver_t *r, sbus_op_t kind,
                              const char *operation, void *token, int *rc)
{
    *rc = SBUS_ESTATE;
    if (!r->o.session || !r->session_id)
        return NULL;
    sbusi_op_t *op = sbusi_op_new(r->conn, kind, token, r);
    *rc = SBUS_ENOMEM;
    if (!op)
        return NULL;
    enc_request_head(&op->payload, operation, r->name);
    *rc = 0;
    return op;
}

int sbus_receiver_session_get_state(sbus_receiver_t *r, void *token)
{
    if (!r)
        return SBUS_EINVAL;
    int rc;
    sbusi_op_t *op = session_op(r, SBUS_OP_SESSION_GET_STATE,
                                "com.microsoft:get-session-state", token, &rc);
    if (!op)
        return rc;
    size_t at = sbusi_enc_map(&op->payload);
    sbusi_enc_end(&op->payload, at, enc_session_id(r, &op->payload));
    return submit(r, op);
}

int sbus_receiver_session_set_state(sbus_receiver_t *r, const void *p,
                                    size_t n, void *token)
{
    if (!r || (!p && n))
        return SBUS_EINVAL;
    int rc;
    sbusi_op_t *op = session_op(r, SBUS_OP_SESSION_SET_STATE,
                                "com.microsoft:set-session-state", token, &rc);
    if (!op)
        return rc;
    sbusi_buf_t *b = &op->payload;
    size_t at = sbusi_enc_map(b);
    uint32_t cnt = enc_session_id(r, b) + 2;
    sbusi_enc_str(b, "session-state", 13);
    if (p)
        sbusi_enc_bin(b, p, n);
    else
        sbusi_enc_null(b);
    sbusi_enc_end(b, at, cnt);
    return submit(r, op);
}

int sbus_receiver_session_renew_lock(sbus_receiver_t *r, void *token)
{
    if (!r)
        return SBUS_EINVAL;
    int rc;
    sbusi_op_t *op = session_op(r, SBUS_OP_SESSION_RENEW_LOCK,
                                "com.microsoft:renew-session-lock", token, &rc);
    if (!op)
        return rc;
    size_t at = sbusi_enc_map(&op->payload);
    sbusi_enc_end(&op->payload, at, enc_session_id(r, &op->payload));
    return submit(r, op);
}

/* ------------------------------- close ----------------------------- */

static void drop_receives(sbus_receiver_t *r, int code, const char *desc)
{
    while (r->rq_head) {
        sbusi_op_t *op = r->rq_head;
        for (size_t i = 0; i < op->nmsgs; i++)
            release_and_free(r, op->msgs[i]);
        op->nmsgs = 0;
        sbusi_op_done(op, code, NULL, desc);
    }
}

int sbus_receiver_close(sbus_receiver_t *r, void *token)
{
    if (!r)
        return SBUS_EINVAL;
    /* on a closed connection this still works (and completes at once) */
    if (r->own.state == SBUSI_L_CLOSING || r->own.state == SBUSI_L_CLOSED)
        return SBUS_ESTATE;
    sbus_conn_t *c = r->conn;
    sbusi_op_t *op = sbusi_op_new(c, SBUS_OP_RECEIVER_CLOSE, token, r);
    if (!op)
        return SBUS_ENOMEM;
    drop_receives(r, SBUS_ECLOSED, "the receiver was closed");
    sbusi_fail_object_kind(c, r, SBUS_OP_RECEIVER_OPEN, SBUS_ECLOSED,
                           "the receiver was closed");
    free_queue(r, 1);
    sbusi_renew_stop_all(r);
    op->rcv = r;
    sbusi_op_start(c, op);
    if (r->own.link && sbusi_wire_ready(c) && r->own.state == SBUSI_L_ATTACHED) {
        r->own.state = SBUSI_L_CLOSING;
        pn_link_close(r->own.link);
    } else {
        sbusi_owner_detach(&r->own);
        r->own.state = SBUSI_L_CLOSED;
        sbusi_op_done(op, 0, NULL, NULL);
    }
    sbusi_process(c);
    return 0;
}

void sbus_receiver_free(sbus_receiver_t *r)
{
    if (!r)
        return;
    sbus_conn_t *c = r->conn;
    drop_receives(r, SBUS_ECLOSED, "the receiver was freed");
    sbusi_fail_object(c, r, SBUS_ECLOSED, "the receiver was freed");
    free_queue(r, 1);
    sbusi_renew_stop_all(r);
    sbusi_renew_free_all(r);
    sbusi_ev_forget_object(c, r);
    sbusi_owner_detach(&r->own);
    for (sbus_receiver_t **pp = &c->receivers; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    sbusi_free(r->name);
    sbusi_free(r->entity);
    sbusi_free(r->session_id);
    sbusi_free(r);
    sbusi_process(c);
}
