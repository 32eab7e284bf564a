/*
 * conn.c - the connection: the sans-I/O boundary and the engine's heart.
 *
 * Divided into: options and creation; the event queue; operations (accept,
 * complete, retry, cancel); link owners (the attach state machine shared
 * by senders, receivers, CBS and $management pairs); the transport life
 * cycle (CONNECT, Proton driver per attempt, loss, reconnect under the
 * retry policy, close, abort); Proton event dispatch; the byte boundary
 * (read/write buffers); time (tick and deadlines); and free.
 *
 * Flow of control: every public entry point changes some state and then
 * calls sbusi_process(), which drains Proton's events, lets every part
 * "pump" (attach what is wanted, send what is queued, grant credit), and
 * repeats until Proton has nothing more to say. Completions are queued as
 * events and pulled by the host, so no host code ever runs inside.
 */
#include "frame.h"
#include "internal.h"

#include <openssl/rand.h>
#include <proton/codec.h>
#include <proton/condition.h>
#include <proton/event.h>
#include <proton/logger.h>
#include <proton/sasl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#ifdef __linux__
#include <sys/random.h>
#endif

/* ------------------------------------------------------------------ */
/* Options and creation                                                */
/* ------------------------------------------------------------------ */

void sbus_conn_options_init(sbus_conn_options_t *o)
{
    memset(o, 0, sizeof *o);
    o->use_tls = -1;
    o->verify = 1;
    o->retry_total = 3;
    o->retry_backoff_ms = 800;
    o->retry_backoff_max_ms = 120000;
    o->operation_timeout_ms = 60000;
    o->token_lifetime_s = 3600;
}

static int set_err(char *err, size_t errlen, int code, const char *text)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", text);
    return code;
}

/* Takes host[:port] from a namespace, stripping any scheme:// prefix and
 * any path. */
static int parse_namespace(sbus_conn_t *c, const char *ns)
{
    const char *p = strstr(ns, "://");
    p = p ? p + 3 : ns;
    size_t n = strcspn(p, "/");
    const char *colon = memchr(p, ':', n);
    size_t hn = colon ? (size_t)(colon - p) : n;
    if (!hn)
        return SBUS_EINVAL;
    if (colon)
        c->port = atoi(colon + 1);
    c->host = sbusi_strndup(p, hn);
    return c->host ? 0 : SBUS_ENOMEM;
}

static int endpoint_from(sbus_conn_t *c, const sbus_conn_options_t *o,
                         int *use_emulator, char *err, size_t errlen)
{
    if (o->connection_string) {
        sbus_connstr_t cs;
        int rc = sbus_connstr_parse(o->connection_string, &cs, err, errlen);
        if (rc < 0)
            return rc;
        c->host = cs.host;
        c->port = cs.port;
        c->key_name = cs.key_name;
        c->key = cs.key;
        c->sas_token = cs.sas;
        *use_emulator = cs.use_emulator;
        cs.host = cs.key_name = cs.key = cs.sas = NULL;
        sbus_connstr_clear(&cs);
        return 0;
    }
    if (!o->namespace_)
        return set_err(err, errlen, SBUS_EINVAL,
                       "either connection_string or namespace_ is needed");
    int rc = parse_namespace(c, o->namespace_);
    if (rc < 0)
        return set_err(err, errlen, rc, "invalid namespace");
    int creds = (o->sas_key ? 1 : 0) + (o->sas_token ? 1 : 0) +
                (o->host_tokens ? 1 : 0);
    if (creds != 1 || (o->sas_key && !o->sas_key_name))
        return set_err(err, errlen, SBUS_EINVAL,
                       "exactly one credential is needed: sas_key_name + "
                       "sas_key, sas_token, or host_tokens");
    c->key_name = sbusi_strdup(o->sas_key_name);
    c->key = sbusi_strdup(o->sas_key);
    c->sas_token = sbusi_strdup(o->sas_token);
    c->host_tokens = o->host_tokens;
    if ((o->sas_key && (!c->key || !c->key_name)) ||
        (o->sas_token && !c->sas_token))
        return set_err(err, errlen, SBUS_ENOMEM, "out of memory");
    return 0;
}

static char *make_container_id(void)
{
    uint8_t r[8];
    char buf[32];
    /* A name, not a secret: the kernel's random bytes do. OpenSSL's
       generator costs ~8 M instructions to seed on its first use, which a
       plain connection would otherwise pay only for this. */
#ifdef __linux__
    if (getrandom(r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
#endif
        if (RAND_bytes(r, sizeof r) != 1)
            memset(r, 0x5a, sizeof r);
    snprintf(buf, sizeof buf, "sbus-%02x%02x%02x%02x%02x%02x%02x%02x", r[0],
             r[1], r[2], r[3], r[4], r[5], r[6], r[7]);
    return sbusi_strdup(buf);
}

static int configure(sbus_conn_t *c, const sbus_conn_options_t *o,
                     int use_emulator, char *err, size_t errlen)
{
    c->websocket = o->transport == SBUS_TRANSPORT_WEBSOCKET;
    c->use_tls = o->use_tls < 0 ? !use_emulator : o->use_tls != 0;
    if (o->port)
        c->port = o->port;
    else if (!c->port) /* an explicit port in the endpoint is kept */
        c->port = c->websocket ? (c->use_tls ? 443 : 80)
                               : (c->use_tls ? 5671 : 5672);
    if (o->proxy_host) {
        if (o->proxy_port <= 0 || o->proxy_port > 65535 ||
            (o->proxy_password && !o->proxy_user))
            return set_err(err, errlen, SBUS_EINVAL,
                           "a proxy needs a port, and a password needs a "
                           "user");
        c->proxy_host = sbusi_strdup(o->proxy_host);
        c->proxy_port = o->proxy_port;
        c->proxy_user = sbusi_strdup(o->proxy_user);
        c->proxy_password = sbusi_strdup(o->proxy_password);
        if (!c->proxy_host || (o->proxy_user && !c->proxy_user) ||
            (o->proxy_password && !c->proxy_password))
            return set_err(err, errlen, SBUS_ENOMEM, "out of memory");
    }
    c->retry_total = o->retry_total < 0 ? 0 : o->retry_total;
    c->backoff_ms = o->retry_backoff_ms;
    c->backoff_max_ms = o->retry_backoff_max_ms;
    c->op_timeout_ms = o->operation_timeout_ms > 0 ? o->operation_timeout_ms
                                                   : 60000;
    c->token_lifetime_s = o->token_lifetime_s > 0 ? o->token_lifetime_s
                                                  : 3600;
    c->idle_timeout_ms = o->idle_timeout_ms;
    c->trace = o->trace;
    char ua[512];
    snprintf(ua, sizeof ua, "%s%ssbus-c/%s", o->user_agent ? o->user_agent : "",
             o->user_agent ? " " : "", SBUS_VERSION);
    c->user_agent = sbusi_strdup(ua);
    c->container_id = o->container_id ? sbusi_strdup(o->container_id)
                                      : make_container_id();
    c->frame = sbusi_calloc(1, sizeof *c->frame);
    if (!c->user_agent || !c->container_id || !c->frame)
        return set_err(err, errlen, SBUS_ENOMEM, "out of memory");
    if (!c->use_tls)
        return 0;
    c->tls_noverify = o->verify == 0;
    return sbusi_wire_tls_config(c, o->ca_file, o->verify != 0, err, errlen);
}

int sbus_conn_new(sbus_conn_t **out, const sbus_conn_options_t *o, char *err,
                  size_t errlen)
{
    if (!out || !o)
        return set_err(err, errlen, SBUS_EINVAL, "no options");
    sbus_conn_t *c = sbusi_calloc(1, sizeof *c);
    if (!c)
        return set_err(err, errlen, SBUS_ENOMEM, "out of memory");
    c->ops.next = c->ops.prev = &c->ops;
    c->op_due = INT64_MAX;
    c->next_req = 1;
    c->next_uid = 1;
    sbusi_owner_init(&c->cbs.snd, SBUSI_OWN_CBS);
    sbusi_owner_init(&c->cbs.rcv, SBUSI_OWN_CBS);
    int use_emulator = 0;
    int rc = endpoint_from(c, o, &use_emulator, err, errlen);
    if (rc == 0)
        rc = configure(c, o, use_emulator, err, errlen);
    if (rc < 0) {
        sbus_conn_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int sbus_conn_is_open(const sbus_conn_t *c)
{
    return c && c->state == SBUSI_C_UP && c->wire_open;
}

const char *sbus_conn_host(const sbus_conn_t *c) { return c ? c->host : NULL; }

int sbusi_conn_closed(const sbus_conn_t *c)
{
    return c->state == SBUSI_C_CLOSING || c->state == SBUSI_C_CLOSED;
}

int sbusi_wire_ready(const sbus_conn_t *c)
{
    return c->state == SBUSI_C_UP && c->wire_open && c->session;
}

void sbusi_conn_progress(sbus_conn_t *c)
{
    if (c->have_driver && c->wire_open)
        c->progress = 1;
}

/* ------------------------------------------------------------------ */
/* Events                                                              */
/* ------------------------------------------------------------------ */

void sbusi_ev_push(sbus_conn_t *c, sbusi_ev_t *ev)
{
    if (ev->queued)
        return;
    ev->queued = 1;
    ev->next = NULL;
    if (c->evq_tail)
        c->evq_tail->next = ev;
    else
        c->evq_head = ev;
    c->evq_tail = ev;
}

static void release_current(sbus_conn_t *c)
{
    sbusi_ev_t *ev = c->current;
    c->current = NULL;
    if (ev && ev->release)
        ev->release(ev);
}

int sbus_conn_next_event(sbus_conn_t *c, sbus_event_t *ev)
{
    if (!c || !ev)
        return 0;
    release_current(c);
    sbusi_ev_t *e = c->evq_head;
    if (!e)
        return 0;
    c->evq_head = e->next;
    if (!c->evq_head)
        c->evq_tail = NULL;
    e->queued = 0;
    e->next = NULL;
    *ev = e->e;
    c->current = e;
    return 1;
}

void sbusi_ev_forget_object(sbus_conn_t *c, const void *object)
{
    for (sbusi_ev_t *e = c->evq_head; e; e = e->next)
        if (e->e.object == object)
            e->e.object = NULL;
    if (c->current && c->current->e.object == object)
        c->current->e.object = NULL;
}

sbus_event_type_t sbus_conn_peek_event(const sbus_conn_t *c)
{
    return c && c->evq_head ? c->evq_head->e.type : SBUS_EV_NONE;
}

static void log_release(sbusi_ev_t *ev) { sbusi_free(ev); }

static void log_push(sbus_conn_t *c, int level, const char *fmt, va_list ap)
{
    sbusi_ev_t *ev = sbusi_calloc(1, sizeof *ev);
    if (!ev)
        return; /* a lost log line is the only thing OOM may drop */
    vsnprintf(ev->desc, sizeof ev->desc, fmt, ap);
    ev->e.type = SBUS_EV_LOG;
    ev->e.text = ev->desc;
    ev->e.level = level;
    ev->release = log_release;
    sbusi_ev_push(c, ev);
}

void sbusi_log(sbus_conn_t *c, const char *fmt, ...)
{
    if (!c->trace)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_push(c, 0, fmt, ap);
    va_end(ap);
}

void sbusi_warn(sbus_conn_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_push(c, 1, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------------ */
/* Operations                                                          */
/* ------------------------------------------------------------------ */

void sbusi_opq_push(sbusi_op_t **head, sbusi_op_t **tail, sbusi_op_t *op)
{
    op->qnext = NULL;
    op->qprev = *tail;
    if (*tail)
        (*tail)->qnext = op;
    else
        *head = op;
    *tail = op;
    op->queued = 1;
}

void sbusi_opq_remove(sbusi_op_t **head, sbusi_op_t **tail, sbusi_op_t *op)
{
    if (!op->queued)
        return;
    if (op->qprev)
        op->qprev->qnext = op->qnext;
    else
        *head = op->qnext;
    if (op->qnext)
        op->qnext->qprev = op->qprev;
    else
        *tail = op->qprev;
    op->qnext = op->qprev = NULL;
    op->queued = 0;
}

/* Finished ops kept per connection for reuse; enough for the settles of
 * a prefetch-sized batch in flight. None under AddressSanitizer, so that
 * a use of a finished op still shows as a use after free. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SBUSI_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(SBUSI_ASAN)
#define SPARE_OPS_MAX 0
#else
#define SPARE_OPS_MAX 512
#endif

static void op_free(sbusi_op_t *op)
{
    sbusi_free(op->renews);
    sbusi_buf_free(&op->payload);
    sbusi_free(op->msgs);
    sbusi_free(op->seqs);
    sbus_conn_t *c = op->conn;
    static const size_t spare_max = SPARE_OPS_MAX;
    if (c && c->nspare_ops < spare_max) {
        op->next = c->spare_ops;
        c->spare_ops = op;
        c->nspare_ops++;
        return;
    }
    sbusi_free(op);
}

static void op_release(sbusi_ev_t *ev) { op_free(ev->owner); }

sbusi_op_t *sbusi_op_new(sbus_conn_t *c, sbus_op_t kind, void *token,
                         void *object)
{
    sbusi_op_t *op = c->spare_ops;
    if (op) {
        c->spare_ops = op->next;
        c->nspare_ops--;
        /* All but the event's two error strings (416 of the op's ~900
           bytes), which sbusi_error_set() writes whole before anything
           points at them. */
        size_t from = offsetof(sbusi_op_t, ev) + offsetof(sbusi_ev_t, cond);
        size_t to = offsetof(sbusi_op_t, ev) + offsetof(sbusi_ev_t, queued);
        memset(op, 0, from);
        memset((char *)op + to, 0, sizeof *op - to);
        op->ev.cond[0] = 0;
        op->ev.desc[0] = 0;
    } else {
        op = sbusi_calloc(1, sizeof *op);
        if (!op)
            return NULL;
    }
    op->conn = c;
    op->kind = kind;
    op->token = token;
    op->deadline = -1;
    op->retry_at = -1;
    op->ev.e.type = SBUS_EV_DONE;
    op->ev.e.op = kind;
    op->ev.e.token = token;
    op->ev.e.object = object;
    op->ev.release = op_release;
    op->ev.owner = op;
    return op;
}

/* Frees an op that was never started (a synchronous failure). */
void sbusi_op_discard(sbusi_op_t *op)
{
    if (op->msg)
        sbusi_message_unref_op(op->msg, op);
    op_free(op);
}

static void ensure_connecting(sbus_conn_t *c);

void sbusi_op_start(sbus_conn_t *c, sbusi_op_t *op)
{
    op->prev = c->ops.prev;
    op->next = &c->ops;
    c->ops.prev->next = op;
    c->ops.prev = op;
    if (op->deadline < 0 && op->kind != SBUS_OP_RECEIVE)
        op->deadline = c->now_mono + c->op_timeout_ms;
    if (op->deadline >= 0 && op->deadline < c->op_due)
        c->op_due = op->deadline;
    ensure_connecting(c);
}

static void op_unlink(sbusi_op_t *op)
{
    if (op->next) {
        op->prev->next = op->next;
        op->next->prev = op->prev;
    }
    op->next = op->prev = NULL;
}

/* Detaches an in-flight delivery from op so nothing refers back to it. */
static void op_forget_delivery(sbusi_op_t *op)
{
    if (op->dlv && op->dlv_gen == (op->snd   ? op->snd->own.gen
                                   : op->rcv ? op->rcv->own.gen
                                             : op->dlv_gen))
        pn_delivery_set_context(op->dlv, NULL);
    op->dlv = NULL;
}

/* A settlement that failed because the lock is gone leaves its message
 * unsettled (and without a delivery): settling or renewing it again then
 * reports lock-lost too, rather than "already settled". */
static void settle_failed(sbusi_op_t *op)
{
    int code = op->ev.err.code;
    if (op->kind == SBUS_OP_SETTLE && op->msg &&
        (code == SBUS_ELOCKLOST || code == SBUS_ESESSIONLOCKLOST))
        op->msg->state = SBUS_MSG_UNSETTLED;
}

void sbusi_op_done(sbusi_op_t *op, int code, const char *cond,
                   const char *desc)
{
    sbus_conn_t *c = op->conn;
    op_unlink(op);
    if (op->queued && op->snd)
        sbusi_sender_forget(op->snd, op);
    if (op->queued && op->rcv)
        sbusi_receiver_forget(op->rcv, op);
    if (op->kind == SBUS_OP_SENDER_OPEN && op->snd)
        op->snd->nopen--;
    if (op->kind == SBUS_OP_RECEIVER_OPEN && op->rcv)
        op->rcv->nopen--;
    op_forget_delivery(op);
    sbus_event_t *e = &op->ev.e;
    if (code || cond) {
        sbusi_error_set(&op->ev.err, op->ev.cond, sizeof op->ev.cond,
                        op->ev.desc, sizeof op->ev.desc, code, cond, desc);
        e->error = &op->ev.err;
        settle_failed(op);
    }
    if (op->msg) {
        sbusi_message_unref_op(op->msg, op);
        op->msg = NULL;
    }
    /* the service answered something: this connection was worth having
       (an empty receive or the open itself prove nothing) */
    if (!code && !cond && op->kind != SBUS_OP_CONN_OPEN &&
        (op->kind != SBUS_OP_RECEIVE || op->nmsgs))
        sbusi_conn_progress(c);
    if (op->on_done) {
        op->on_done(op);
        return;
    }
    if (op->kind == SBUS_OP_RECEIVE || op->kind == SBUS_OP_PEEK ||
        op->kind == SBUS_OP_RECEIVE_DEFERRED) {
        e->messages = op->msgs;
        e->count = op->nmsgs;
    } else if (op->kind == SBUS_OP_SCHEDULE) {
        e->seqs = op->seqs;
        e->count = code || cond ? 0 : op->nseqs;
    }
    sbusi_ev_push(c, &op->ev);
}

void sbusi_op_fail_from(sbusi_op_t *op, const sbusi_ev_t *src)
{
    sbusi_op_done(op, src->err.code, src->err.condition,
                  src->err.description);
}

int64_t sbusi_backoff(const sbus_conn_t *c, int attempt)
{
    if (attempt <= 0)
        return 0;
    int64_t d = c->backoff_ms;
    for (int i = 1; i < attempt && d < c->backoff_max_ms; i++)
        d *= 2;
    return d < c->backoff_max_ms ? d : c->backoff_max_ms;
}

void sbusi_op_retry_or_fail(sbusi_op_t *op, int code, const char *cond,
                            const char *desc)
{
    sbus_error_t e;
    char cb[SBUSI_COND_MAX], db[SBUSI_DESC_MAX];
    sbusi_error_set(&e, cb, sizeof cb, db, sizeof db, code, cond, desc);
    op_forget_delivery(op);
    op->req_id = 0;
    if (!e.retriable || op->attempts >= op->conn->retry_total) {
        sbusi_op_done(op, e.code, e.condition, e.description);
        return;
    }
    op->attempts++;
    op->stage = SBUSI_S_BACKOFF;
    op->retry_at = op->conn->now_mono + sbusi_backoff(op->conn, op->attempts);
    op->deadline = op->user_deadline ? op->user_deadline : -1;
    if (op->deadline >= 0 && op->deadline < op->conn->op_due)
        op->conn->op_due = op->deadline;
    if (op->retry_at < op->conn->op_due)
        op->conn->op_due = op->retry_at;
}

/* Completes every pending op (optionally only those on one object). */
static void fail_all(sbus_conn_t *c, void *object, int code, const char *cond,
                     const char *desc, sbusi_op_t *except)
{
    sbusi_op_t *op = c->ops.next;
    while (op != &c->ops) {
        sbusi_op_t *next = op->next;
        if (op != except && (!object || op->ev.e.object == object))
            sbusi_op_done(op, code, cond, desc);
        op = next;
    }
}

void sbusi_fail_object(sbus_conn_t *c, void *object, int code,
                       const char *desc)
{
    fail_all(c, object, code, NULL, desc, NULL);
}

void sbusi_fail_object_kind(sbus_conn_t *c, void *object, sbus_op_t kind,
                            int code, const char *desc)
{
    sbusi_op_t *op = c->ops.next;
    while (op != &c->ops) {
        sbusi_op_t *next = op->next;
        if (op->ev.e.object == object && op->kind == kind)
            sbusi_op_done(op, code, NULL, desc);
        op = next;
    }
}

void sbusi_op_requeue(sbusi_op_t *op)
{
    if (op->kind == SBUS_OP_SEND && op->snd)
        sbusi_sender_requeue(op->snd, op);
}

void sbusi_op_timeout(sbusi_op_t *op)
{
    if (op->kind == SBUS_OP_SEND && op->snd)
        sbusi_sender_forget(op->snd, op);
    sbusi_op_done(op, SBUS_ETIMEOUT, NULL,
                  "the operation did not complete within operation_timeout");
}

static void cancel_op(sbusi_op_t *op);

int sbus_conn_cancel(sbus_conn_t *c, void *token)
{
    if (!c)
        return SBUS_EINVAL;
    for (sbusi_op_t *op = c->ops.next; op != &c->ops; op = op->next) {
        if (op->token != token)
            continue;
        cancel_op(op);
        sbusi_process(c);
        return 0;
    }
    return SBUS_ENOENT;
}

int sbus_conn_set_op_timeout(sbus_conn_t *c, void *token, int64_t timeout_ms)
{
    if (!c || timeout_ms <= 0)
        return SBUS_EINVAL;
    for (sbusi_op_t *op = c->ops.next; op != &c->ops; op = op->next) {
        if (op->token != token)
            continue;
        if (op->kind == SBUS_OP_RECEIVE) {
            if (!op->rcv)
                return SBUS_EINVAL;
            sbusi_receiver_set_timeout(op->rcv, op, timeout_ms);
            return 0;
        }
        op->user_deadline = c->now_mono + timeout_ms;
        op->deadline = op->user_deadline;
        if (op->deadline < c->op_due)
            c->op_due = op->deadline;
        return 0;
    }
    return SBUS_ENOENT;
}

static void cancel_op(sbusi_op_t *op)
{
    if (op->kind == SBUS_OP_RECEIVE && op->rcv) {
        sbusi_receiver_cancel(op->rcv, op);
        return;
    }
    sbusi_op_done(op, SBUS_ECANCELLED, NULL, "cancelled by the caller");
}

/* ------------------------------------------------------------------ */
/* Link owners                                                         */
/* ------------------------------------------------------------------ */

void sbusi_owner_init(sbusi_owner_t *o, int kind)
{
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->retry_at = -1;
}

void sbusi_owner_set_error(sbusi_owner_t *o, int code, const char *cond,
                           const char *desc)
{
    sbusi_error_set(&o->last_err.err, o->last_err.cond,
                    sizeof o->last_err.cond, o->last_err.desc,
                    sizeof o->last_err.desc, code, cond, desc);
    o->has_err = 1;
}

void sbusi_owner_error_from_link(sbusi_owner_t *o, pn_link_t *l)
{
    pn_condition_t *cond = pn_link_remote_condition(l);
    if (cond && pn_condition_is_set(cond)) {
        sbusi_owner_set_error(o, 0, pn_condition_get_name(cond),
                              pn_condition_get_description(cond));
        return;
    }
    o->has_err = 0;
}

/* The link went away (detach, or the transport with it). */
void sbusi_owner_lost(sbusi_owner_t *o)
{
    if (o->link)
        pn_link_set_context(o->link, NULL);
    o->link = NULL;
    o->gen++;
}

/* Detaches on our side (close/free); the link frees itself later. */
void sbusi_owner_detach(sbusi_owner_t *o)
{
    pn_link_t *l = o->link;
    sbusi_owner_lost(o);
    if (l && pn_link_state(l) & PN_LOCAL_ACTIVE)
        pn_link_close(l);
}

/* Links we hold a reference on carry this attachment. Holding one keeps a
 * delivery coming and going from taking the link to a count of zero, where
 * Proton's finalizer re-parents it and climbs to the session and the
 * connection, several times per message. A link a peer attached on its own
 * (nothing we asked for) has no mark and is never released here. */
static const char held_key;
#define HELD ((pn_handle_t)&held_key)

static void hold_link(pn_link_t *l)
{
    pn_record_t *r = pn_link_attachments(l);
    pn_record_def(r, HELD, PN_VOID);
    pn_record_set(r, HELD, l);
    pn_incref(l);
}

/* 1 when we held a reference on l: the mark is cleared and the caller
 * drops the reference (after pn_link_free(), which needs the link). */
static int unmark_held(pn_link_t *l)
{
    pn_record_t *r = pn_link_attachments(l);
    if (!pn_record_get(r, HELD))
        return 0;
    pn_record_set(r, HELD, NULL);
    return 1;
}

pn_link_t *sbusi_link_new(sbus_conn_t *c, sbusi_owner_t *o, int sender,
                          const char *name)
{
    pn_link_t *l = sender ? pn_sender(c->session, name)
                          : pn_receiver(c->session, name);
    if (!l)
        return NULL;
    hold_link(l); /* dropped by release_link() or driver_stop() */
    pn_link_set_context(l, o);
    o->link = l;
    o->state = SBUSI_L_ATTACHING;
    return l;
}

/* The token for an owner's audience was refused or not answered: back off
 * and put it again when that may help (busy, timeout), else fail. */
static int token_failed(sbus_conn_t *c, sbusi_owner_t *o)
{
    const sbus_error_t *e = &o->aud->fail.err;
    sbusi_owner_set_error(o, e->code, e->condition, e->description);
    if (e->retriable && o->attempts < c->retry_total) {
        o->attempts++;
        o->state = SBUSI_L_BACKOFF;
        o->retry_at = c->now_mono + sbusi_backoff(c, o->attempts);
        sbusi_audience_retry(o->aud);
        return 0;
    }
    o->state = SBUSI_L_FAILED;
    return -1;
}

/* Where an owner stands: 1 attached, 0 waiting, -1 failed (o->last_err),
 * 2 ready to attach now (token in place, wire open). */
int sbusi_owner_attach(sbus_conn_t *c, sbusi_owner_t *o)
{
    switch (o->state) {
    case SBUSI_L_ATTACHED: return 1;
    case SBUSI_L_ATTACHING: return 0;
    case SBUSI_L_FAILED: return -1;
    case SBUSI_L_CLOSING:
    case SBUSI_L_CLOSED: return 0;
    case SBUSI_L_BACKOFF:
        if (c->now_mono < o->retry_at)
            return 0;
        o->state = SBUSI_L_WANT;
        break;
    default:
        o->state = SBUSI_L_WANT;
        break;
    }
    if (!sbusi_wire_ready(c))
        return 0;
    if (o->aud) {
        int r = sbusi_audience_ready(c, o->aud);
        if (r < 0)
            return token_failed(c, o);
        if (r == 0)
            return 0;
    }
    return 2;
}

/* After a remote detach: back off and retry when retriable, else fail. */
void sbusi_owner_after_detach(sbus_conn_t *c, sbusi_owner_t *o)
{
    if (o->state == SBUSI_L_CLOSING || o->state == SBUSI_L_CLOSED) {
        o->state = SBUSI_L_CLOSED;
        return;
    }
    if (!o->has_err) {
        o->state = SBUSI_L_IDLE; /* plain detach: re-attach on next use */
        return;
    }
    if (o->last_err.err.retriable && o->attempts < c->retry_total) {
        o->attempts++;
        o->state = SBUSI_L_BACKOFF;
        o->retry_at = c->now_mono + sbusi_backoff(c, o->attempts);
        return;
    }
    o->state = SBUSI_L_FAILED;
}

/* ------------------------------------------------------------------ */
/* Transport life cycle                                                */
/* ------------------------------------------------------------------ */

/* A connection open this long before it was lost counts as healthy. */
#define STABLE_MS 10000

static void emit_connect(sbus_conn_t *c)
{
    sbusi_ev_t *ev = &c->connect_ev;
    ev->e.type = SBUS_EV_CONNECT;
    ev->e.host = c->proxy_host ? c->proxy_host : c->host;
    ev->e.port = c->proxy_host ? c->proxy_port : c->port;
    c->state = SBUSI_C_CONNECTING;
    c->connect_mono = c->now_mono;
    sbusi_ev_push(c, ev);
}

static void ensure_connecting(sbus_conn_t *c)
{
    if (c->state == SBUSI_C_IDLE && c->opened)
        emit_connect(c);
}

int sbus_conn_open(sbus_conn_t *c, void *token)
{
    if (!c)
        return SBUS_EINVAL;
    if (c->state == SBUSI_C_CLOSING || c->state == SBUSI_C_CLOSED)
        return SBUS_ESTATE;
    sbusi_op_t *op = sbusi_op_new(c, SBUS_OP_CONN_OPEN, token, NULL);
    if (!op)
        return SBUS_ENOMEM;
    if (!c->opened && c->tls_noverify)
        sbusi_warn(c, "TLS certificate verification is off (verify=0): the "
                      "identity of %s is not checked", c->host);
    c->opened = 1;
    sbusi_op_start(c, op);
    if (sbus_conn_is_open(c))
        sbusi_op_done(op, 0, NULL, NULL); /* open already */
    sbusi_process(c);
    return 0;
}

/* Copies msg into out[cap], replacing what follows every "sig=" (up to the
 * next separator) so that no signature ever reaches a log. */
static void redact(const char *msg, char *out, size_t cap)
{
    size_t j = 0;
    while (*msg && j + 1 < cap) {
        if (strncmp(msg, "sig=", 4) == 0) {
            j += (size_t)snprintf(out + j, cap - j, "sig=REDACTED");
            if (j >= cap)
                j = cap - 1;
            msg += 4;
            msg += strcspn(msg, "&\" \\");
            continue;
        }
        out[j++] = *msg++;
    }
    out[j] = 0;
}

static void log_sink(intptr_t ctx, pn_log_subsystem_t sub, pn_log_level_t lvl,
                     const char *msg)
{
    char line[SBUSI_DESC_MAX];
    redact(msg, line, sizeof line);
    sbusi_log((sbus_conn_t *)ctx, "%s", line);
}

static int set_properties(sbus_conn_t *c, pn_connection_t *pc)
{
    pn_data_t *d = pn_connection_properties(pc);
    pn_data_put_map(d);
    pn_data_enter(d);
    const char *kv[][2] = {{"product", "sbus-c"},
                           {"version", SBUS_VERSION},
                           {"framework", "C"},
                           {"platform", "POSIX"},
                           {"user-agent", c->user_agent}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) {
        pn_data_put_symbol(d, pn_bytes(strlen(kv[i][0]), kv[i][0]));
        pn_data_put_string(d, pn_bytes(strlen(kv[i][1]), kv[i][1]));
    }
    pn_data_exit(d);
    return 0;
}

static int driver_start(sbus_conn_t *c)
{
    pn_connection_t *pc = pn_connection();
    pn_transport_t *t = pn_transport();
    if (!pc || !t || pn_connection_driver_init(&c->driver, pc, t) != 0) {
        if (pc)
            pn_connection_free(pc);
        if (t)
            pn_transport_free(t);
        return SBUS_ENOMEM;
    }
    c->have_driver = 1;
    c->progress = 0;
    if (sbusi_wire_start(c) < 0)
        return SBUS_ENOMEM;
    pn_sasl_allowed_mechs(pn_sasl(t), "ANONYMOUS");
    if (c->idle_timeout_ms)
        pn_transport_set_idle_timeout(t, c->idle_timeout_ms);
    if (c->trace) {
        pn_logger_t *lg = pn_transport_logger(t);
        pn_logger_set_log_sink(lg, log_sink, (intptr_t)c);
        pn_logger_set_mask(lg, PN_SUBSYSTEM_AMQP | PN_SUBSYSTEM_SASL,
                           PN_LEVEL_FRAME);
    }
    pn_connection_set_container(pc, c->container_id);
    pn_connection_set_hostname(pc, c->host);
    set_properties(c, pc);
    pn_connection_open(pc);
    c->session = pn_session(pc);
    if (c->session) {
        pn_incref(c->session); /* as for links: dropped by driver_stop() */
        pn_session_set_incoming_capacity(c->session, 64u << 20);
        pn_session_open(c->session);
    }
    return 0;
}

static void driver_stop(sbus_conn_t *c)
{
    if (!c->have_driver)
        return;
    /* every link goes with the driver: tell each owner first */
    sbusi_cbs_lost(c);
    sbusi_mgmt_lost(c);
    for (sbus_sender_t *s = c->senders; s; s = s->next)
        sbusi_sender_lost(s);
    for (sbus_receiver_t *r = c->receivers; r; r = r->next)
        sbusi_receiver_lost(r);
    /* the references sbusi_link_new() and driver_start() took: every link
       not yet released is still in the connection's list */
    pn_connection_t *pc = c->driver.connection;
    pn_link_t *l = pn_link_head(pc, 0);
    while (l) {
        pn_link_t *next = pn_link_next(l, 0);
        if (unmark_held(l))
            pn_decref(l);
        l = next;
    }
    if (c->session)
        pn_decref(c->session);
    pn_connection_driver_destroy(&c->driver);
    c->have_driver = 0;
    c->session = NULL;
    c->wire_open = 0;
    sbusi_wire_stop(c);
}

void sbusi_set_conn_error(sbus_conn_t *c, int code, const char *cond,
                          const char *desc)
{
    sbusi_error_set(&c->conn_err.err, c->conn_err.cond, sizeof c->conn_err.cond,
                    c->conn_err.desc, sizeof c->conn_err.desc, code, cond, desc);
    c->has_conn_err = 1;
}

static int has_pending_work(sbus_conn_t *c)
{
    if (c->ops.next != &c->ops)
        return 1;
    for (sbus_receiver_t *r = c->receivers; r; r = r->next)
        if (r->own.state == SBUSI_L_ATTACHED || r->own.state == SBUSI_L_WANT)
            return 1;
    for (sbus_sender_t *s = c->senders; s; s = s->next)
        if (s->own.state == SBUSI_L_ATTACHED)
            return 1;
    return 0;
}

void sbusi_emit_disconnect(sbus_conn_t *c)
{
    c->disconnect_ev.e.type = SBUS_EV_DISCONNECT;
    sbusi_ev_push(c, &c->disconnect_ev);
}

/* The transport is gone, for whatever reason. Decide what next. */
void sbusi_transport_gone(sbus_conn_t *c, const char *why)
{
    int was_open = c->wire_open;
    int progress = c->progress;
    driver_stop(c);
    c->progress = 0;
    if (c->state == SBUSI_C_CLOSING || c->state == SBUSI_C_CLOSED) {
        fail_all(c, NULL, 0, NULL, NULL, NULL); /* close ops: success */
        c->state = SBUSI_C_CLOSED;
        return;
    }
    if (!c->has_conn_err)
        sbusi_set_conn_error(c, SBUS_ECONNECTION, NULL, why);
    int fatal = c->conn_err.err.code != SBUS_ECONNECTION &&
                !c->conn_err.err.retriable;
    /* A connection that did useful work (a token accepted, a link
       attached, an operation completed) or lived a while was lost by bad
       luck: reconnect at once (but not sooner than retry_backoff_ms after
       the previous connect, so that a service killing every connection
       right after some work cannot cause a reconnect storm either), and
       the count of failed attempts starts again, however often that
       happens. One that never got that far (refused, or killed right
       after the AMQP open) counts as a failed attempt and backs off, and
       pending operations end after retry_total + 1 such attempts. */
    int stable = was_open &&
                 (progress || c->now_mono - c->open_mono >= STABLE_MS);
    c->reconnects = stable ? 1 : c->reconnects + 1;
    if (fatal || c->reconnects > c->retry_total + 1 || !has_pending_work(c)) {
        fail_all(c, NULL, c->conn_err.err.code, c->conn_err.err.condition,
                 c->conn_err.err.description, NULL);
        c->state = SBUSI_C_IDLE;
        c->reconnects = 0;
        c->has_conn_err = 0;
        return;
    }
    c->state = SBUSI_C_BACKOFF;
    if (stable) {
        int64_t earliest = c->connect_mono + c->backoff_ms;
        c->reconnect_at = earliest > c->now_mono ? earliest : c->now_mono;
    } else {
        c->reconnect_at = c->now_mono + sbusi_backoff(c, c->reconnects - 1);
    }
    sbusi_log(c, "transport lost (%s); reconnecting", why ? why : "");
}

void sbus_conn_transport_up(sbus_conn_t *c)
{
    if (!c || c->state != SBUSI_C_CONNECTING)
        return;
    c->has_conn_err = 0;
    if (driver_start(c) < 0) {
        sbusi_set_conn_error(c, SBUS_ENOMEM, NULL, "out of memory starting AMQP");
        sbusi_emit_disconnect(c);
        sbusi_transport_gone(c, "out of memory");
        return;
    }
    c->state = SBUSI_C_UP;
    sbusi_process(c);
}

void sbus_conn_transport_down(sbus_conn_t *c, const char *why)
{
    if (!c)
        return;
    if (c->state != SBUSI_C_UP && c->state != SBUSI_C_CONNECTING &&
        c->state != SBUSI_C_CLOSING)
        return;
    sbusi_transport_gone(c, why ? why : "connection lost");
    sbusi_process(c);
}

int sbus_conn_close(sbus_conn_t *c, void *token)
{
    if (!c)
        return SBUS_EINVAL;
    if (sbusi_conn_closed(c))
        return SBUS_ESTATE;
    sbusi_op_t *op = sbusi_op_new(c, SBUS_OP_CONN_CLOSE, token, NULL);
    if (!op)
        return SBUS_ENOMEM;
    fail_all(c, NULL, SBUS_ECLOSED, NULL, "the connection was closed", NULL);
    op->prev = c->ops.prev; /* not via op_start: no reconnect for close */
    op->next = &c->ops;
    c->ops.prev->next = op;
    c->ops.prev = op;
    op->deadline = c->now_mono + c->op_timeout_ms;
    if (op->deadline < c->op_due)
        c->op_due = op->deadline;
    if (c->state == SBUSI_C_UP && c->have_driver) {
        c->state = SBUSI_C_CLOSING;
        pn_connection_close(c->driver.connection);
    } else {
        if (c->state == SBUSI_C_CONNECTING)
            sbusi_emit_disconnect(c); /* the host's socket is not wanted */
        c->state = SBUSI_C_CLOSED;
        sbusi_op_done(op, 0, NULL, NULL);
    }
    sbusi_process(c);
    return 0;
}

void sbus_conn_abort(sbus_conn_t *c, const char *reason)
{
    if (!c)
        return;
    int had = c->have_driver || c->state == SBUSI_C_CONNECTING;
    c->state = SBUSI_C_CLOSED;
    driver_stop(c);
    c->out.len = c->out_head = 0; /* no I/O: nothing more to write */
    fail_all(c, NULL, SBUS_ECLOSED, NULL,
             reason ? reason : "the connection was aborted", NULL);
    if (had)
        sbusi_emit_disconnect(c);
}

/* ------------------------------------------------------------------ */
/* Proton event dispatch                                               */
/* ------------------------------------------------------------------ */

static sbusi_owner_t *link_owner(pn_link_t *l)
{
    return l ? pn_link_get_context(l) : NULL;
}

static void on_remote_close_conn(sbus_conn_t *c)
{
    pn_connection_t *pc = c->driver.connection;
    pn_condition_t *cond = pn_connection_remote_condition(pc);
    if (cond && pn_condition_is_set(cond))
        sbusi_set_conn_error(c, 0, pn_condition_get_name(cond),
                       pn_condition_get_description(cond));
    if (c->state == SBUSI_C_CLOSING)
        fail_all(c, NULL, 0, NULL, NULL, NULL);
    if (pn_connection_state(pc) & PN_LOCAL_ACTIVE)
        pn_connection_close(pc);
}

static void on_transport_error(sbus_conn_t *c)
{
    pn_condition_t *cond = pn_transport_condition(c->driver.transport);
    if (!cond || !pn_condition_is_set(cond) || c->has_conn_err)
        return;
    const char *name = pn_condition_get_name(cond);
    const char *desc = pn_condition_get_description(cond);
    if (name && strstr(name, "unauthorized"))
        sbusi_set_conn_error(c, SBUS_EAUTH, name, desc);
    else
        sbusi_set_conn_error(c, SBUS_ECONNECTION, name, desc);
}

/* A link both ends have detached and nobody owns any more is freed, so
 * that opening and closing links for a long time does not grow memory.
 * Proton keeps what its transport still needs (the detach to write). */
static void release_link(pn_link_t *l)
{
    if (pn_link_state(l) & PN_LOCAL_ACTIVE)
        pn_link_close(l);
    pn_link_set_context(l, NULL);
    int held = unmark_held(l);
    pn_link_free(l);
    if (held)
        pn_decref(l); /* sbusi_link_new()'s reference */
}

static void on_link_event(sbus_conn_t *c, pn_event_t *e, pn_link_t *l,
                          pn_delivery_t *d)
{
    sbusi_owner_t *o = link_owner(l);
    pn_event_type_t t = pn_event_type(e);
    int detached = t == PN_LINK_REMOTE_CLOSE || t == PN_LINK_REMOTE_DETACH;
    if (!o) {
        if (detached) {
            release_link(l);
        } else if (t == PN_DELIVERY) {
            if (d && !pn_link_is_sender(l) && !pn_delivery_partial(d))
                pn_delivery_settle(d); /* for nobody: drop */
        }
        return;
    }
    switch (o->kind) {
    case SBUSI_OWN_SENDER:
        sbusi_sender_on_event((sbus_sender_t *)o, e, l, d);
        break;
    case SBUSI_OWN_RECEIVER:
        sbusi_receiver_on_event((sbus_receiver_t *)o, e, l, d);
        break;
    case SBUSI_OWN_CBS: sbusi_cbs_on_event(c, o, e); break;
    case SBUSI_OWN_MGMT: sbusi_mgmt_on_event(c, o, e); break;
    }
    if (detached && !pn_link_get_context(l))
        release_link(l); /* its owner let go of it */
}

static void dispatch(sbus_conn_t *c, pn_event_t *e)
{
    switch (pn_event_type(e)) {
    case PN_CONNECTION_REMOTE_OPEN:
        c->wire_open = 1;
        c->open_mono = c->now_mono;
        for (sbusi_op_t *op = c->ops.next; op != &c->ops;) {
            sbusi_op_t *next = op->next;
            if (op->kind == SBUS_OP_CONN_OPEN)
                sbusi_op_done(op, 0, NULL, NULL);
            op = next;
        }
        break;
    case PN_CONNECTION_REMOTE_CLOSE: on_remote_close_conn(c); break;
    case PN_TRANSPORT_ERROR: on_transport_error(c); break;
    case PN_LINK_REMOTE_OPEN:
    case PN_LINK_REMOTE_CLOSE:
    case PN_LINK_REMOTE_DETACH:
    case PN_LINK_FLOW:
        on_link_event(c, e, pn_event_link(e), NULL);
        break;
    case PN_DELIVERY: {
        /* the delivery's link directly: pn_event_link() finds it through
           the event's class, ~50 instructions a message */
        pn_delivery_t *d = pn_event_delivery(e);
        on_link_event(c, e, d ? pn_delivery_link(d) : NULL, d);
        break;
    }
    default: break;
    }
}

static void pump(sbus_conn_t *c)
{
    if (!sbusi_wire_ready(c))
        return;
    sbusi_cbs_pump(c);
    for (sbus_sender_t *s = c->senders; s; s = s->next)
        sbusi_sender_pump(s);
    for (sbus_receiver_t *r = c->receivers; r; r = r->next)
        sbusi_receiver_pump(r);
    sbusi_mgmt_pump(c);
}

void sbusi_process(sbus_conn_t *c)
{
    if (c->in_process)
        return;
    c->in_process = 1;
    for (int round = 0; round < 1000; round++) {
        if (c->have_driver) {
            pn_event_t *e;
            while (c->have_driver &&
                   (e = pn_connection_driver_next_event(&c->driver))) {
                if (pn_event_type(e) == PN_TRANSPORT_CLOSED) {
                    sbusi_emit_disconnect(c);
                    sbusi_transport_gone(c, c->has_conn_err
                                          ? c->conn_err.err.description
                                          : "the connection was closed");
                    break;
                }
                dispatch(c, e);
            }
        }
        pump(c);
        if (!c->have_driver || !pn_connection_driver_has_event(&c->driver))
            break;
    }
    for (sbus_receiver_t *r = c->receivers; r; r = r->next)
        sbusi_receiver_batch_end(r);
    c->in_process = 0;
    /* batch_end may have queued flows or drains */
    if (c->have_driver && pn_connection_driver_has_event(&c->driver))
        sbusi_process(c);
}

/* ------------------------------------------------------------------ */
/* Time                                                                */
/* ------------------------------------------------------------------ */

static int64_t min_deadline(int64_t a, int64_t b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

/* Fires due retries and timeouts, and computes op_due again. Runs only
 * when op_due has passed, so that ticking with thousands of operations in
 * flight costs nothing until one of them is due. */
static void expire_ops(sbus_conn_t *c)
{
    if (c->now_mono < c->op_due)
        return;
    sbusi_op_t *op = c->ops.next;
    while (op != &c->ops) {
        sbusi_op_t *next = op->next;
        if (op->stage == SBUSI_S_BACKOFF && op->retry_at >= 0 &&
            c->now_mono >= op->retry_at) {
            op->stage = SBUSI_S_QUEUED;
            op->retry_at = -1;
            op->deadline = c->now_mono + c->op_timeout_ms;
            if (op->user_deadline && op->user_deadline < op->deadline)
                op->deadline = op->user_deadline;
            c->mgmt_dirty = 1;
            sbusi_op_requeue(op);
        } else if (op->deadline >= 0 && c->now_mono >= op->deadline &&
                   op->kind != SBUS_OP_RECEIVE) {
            sbusi_op_timeout(op);
        }
        op = next;
    }
    int64_t due = INT64_MAX;
    for (op = c->ops.next; op != &c->ops; op = op->next) {
        if (op->deadline >= 0 && op->deadline < due)
            due = op->deadline;
        if (op->retry_at >= 0 && op->retry_at < due)
            due = op->retry_at;
    }
    c->op_due = due;
}

int64_t sbus_conn_tick(sbus_conn_t *c, int64_t mono_ms, int64_t unix_ms)
{
    if (!c)
        return -1;
    if (!c->ticked) {
        /* deadlines set before the first tick counted from 0: shift them */
        for (sbusi_op_t *op = c->ops.next; op != &c->ops; op = op->next) {
            if (op->deadline >= 0)
                op->deadline += mono_ms;
            if (op->retry_at >= 0)
                op->retry_at += mono_ms;
        }
        c->op_due = 0; /* scan once with the real times */
        c->ticked = 1;
    }
    c->now_mono = mono_ms;
    c->now_unix = unix_ms;
    int64_t next = -1;
    if (c->have_driver) {
        int64_t t = pn_transport_tick(c->driver.transport, mono_ms);
        if (t)
            next = (int64_t)t;
    }
    if (c->state == SBUSI_C_BACKOFF && mono_ms >= c->reconnect_at)
        emit_connect(c);
    expire_ops(c);
    c->mgmt_dirty = 1; /* pairs in backoff may be due */
    sbusi_cbs_tick(c);
    for (sbus_receiver_t *r = c->receivers; r; r = r->next)
        sbusi_receiver_tick(r);
    sbusi_process(c);
    if (c->state == SBUSI_C_BACKOFF)
        next = min_deadline(next, c->reconnect_at);
    if (c->op_due != INT64_MAX)
        next = min_deadline(next, c->op_due);
    next = min_deadline(next, sbusi_cbs_deadline(c));
    for (sbus_receiver_t *r = c->receivers; r; r = r->next)
        next = min_deadline(next, sbusi_receiver_deadline(r));
    for (sbus_sender_t *s = c->senders; s; s = s->next)
        if (s->own.state == SBUSI_L_BACKOFF)
            next = min_deadline(next, s->own.retry_at);
    for (sbusi_mgmt_t *m = c->mgmts; m; m = m->next) {
        if (m->snd.state == SBUSI_L_BACKOFF)
            next = min_deadline(next, m->snd.retry_at);
        if (m->rcv.state == SBUSI_L_BACKOFF)
            next = min_deadline(next, m->rcv.retry_at);
    }
    return next;
}

/* ------------------------------------------------------------------ */
/* Free                                                                */
/* ------------------------------------------------------------------ */

static void discard_events(sbus_conn_t *c)
{
    release_current(c);
    while (c->evq_head) {
        sbusi_ev_t *e = c->evq_head;
        c->evq_head = e->next;
        e->queued = 0;
        for (size_t i = 0; e->e.messages && i < e->e.count; i++)
            sbus_message_free(e->e.messages[i]);
        if (e->release)
            e->release(e);
    }
    c->evq_tail = NULL;
}

void sbus_conn_free(sbus_conn_t *c)
{
    if (!c)
        return;
    sbus_conn_abort(c, "the connection was freed");
    while (c->senders)
        sbus_sender_free(c->senders);
    while (c->receivers)
        sbus_receiver_free(c->receivers);
    discard_events(c);
    sbusi_cbs_free(c);
    sbusi_mgmt_free(c);
    discard_events(c);
    sbusi_wire_free(c);
    sbusi_free(c->frame);
    sbusi_buf_free(&c->scratch);
    sbusi_free(c->host);
    sbusi_free(c->key_name);
    if (c->key)
        memset(c->key, 0, strlen(c->key));
    sbusi_free(c->key);
    sbusi_free(c->sas_token);
    sbusi_free(c->proxy_host);
    sbusi_free(c->proxy_user);
    if (c->proxy_password)
        memset(c->proxy_password, 0, strlen(c->proxy_password));
    sbusi_free(c->proxy_password);
    sbusi_free(c->container_id);
    sbusi_free(c->user_agent);
    while (c->spare_ops) {
        sbusi_op_t *op = c->spare_ops;
        c->spare_ops = op->next;
        sbusi_free(op);
    }
    sbusi_msgpool_close(c->msgpool);
    sbusi_free(c);
}
