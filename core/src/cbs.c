/*
 * cbs.c - claims-based security: tokens on the $cbs node.
 *
 * Each entity a link touches needs a token for its audience
 * "sb://<host>/<entity path>" on this connection before the attach
 * (protocol.md 3). Audiences are kept per connection; each walks
 * NONE -> (HOST: waiting for the host's token) -> PUT (put-token in
 * flight) -> VALID, or FAILED with the service's reason. A valid token is
 * put again before it expires (refresh), in the background: links keep
 * working meanwhile. Tokens belong to a connection, so a lost transport
 * sends every audience back to NONE.
 *
 * Tokens come from one of three places: signed here from the SAS key
 * (resource = audience, lifetime opts.token_lifetime_s), the fixed
 * SharedAccessSignature of the connection string (cannot be refreshed), or
 * the host (SBUS_EV_TOKEN, sbus_conn_set_token).
 */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

enum { A_NONE = 0, A_HOST, A_PUT, A_VALID, A_FAILED };

#define CBS_CREDIT 16
#define REFRESH_MARGIN_MS (10 * 60 * 1000)

static const char *CBS_REPLY = "sbus-cbs-reply";

sbusi_audience_t *sbusi_audience_get(sbus_conn_t *c, const char *entity)
{
    char name[1024];
    snprintf(name, sizeof name, "sb://%s/%s", c->host, entity);
    for (sbusi_audience_t *a = c->auds; a; a = a->next)
        if (strcmp(a->name, name) == 0)
            return a;
    sbusi_audience_t *a = sbusi_calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->name = sbusi_strdup(name);
    if (!a->name) {
        sbusi_free(a);
        return NULL;
    }
    a->refresh_mono = -1;
    a->next = c->auds;
    c->auds = a;
    return a;
}

static void fail_audience(sbus_conn_t *c, sbusi_audience_t *a, int code,
                          const char *cond, const char *desc)
{
    sbusi_error_set(&a->fail.err, a->fail.cond, sizeof a->fail.cond,
                    a->fail.desc, sizeof a->fail.desc, code, cond, desc);
    a->state = A_FAILED;
    a->req_id = 0;
}

static void ask_host(sbus_conn_t *c, sbusi_audience_t *a)
{
    a->state = A_HOST;
    a->tok_ev.e.type = SBUS_EV_TOKEN;
    a->tok_ev.e.audience = a->name;
    sbusi_ev_push(c, &a->tok_ev);
}

int sbusi_audience_ready(sbus_conn_t *c, sbusi_audience_t *a)
{
    switch (a->state) {
    case A_VALID: return 1;
    case A_FAILED: return -1;
    case A_NONE:
        if (c->host_tokens && !a->host_token) {
            ask_host(c, a);
            return 0;
        }
        a->state = A_PUT; /* sent by sbusi_cbs_pump once $cbs is attached */
        a->req_id = 0;
        return 0;
    default: return 0;
    }
}

/* Puts the token text for audience a into *tok (owned by the caller when
 * *owned). */
static int token_for(sbus_conn_t *c, sbusi_audience_t *a, char *buf,
                     size_t cap, const char **tok, int64_t *expiry)
{
    if (a->host_token) {
        *tok = a->host_token;
        *expiry = a->host_expiry;
        return 0;
    }
    if (c->sas_token) {
        *tok = c->sas_token;
        *expiry = sbusi_sas_expiry(c->sas_token);
        return 0;
    }
    *expiry = c->now_unix / 1000 + c->token_lifetime_s;
    int n = sbus_sas_token(a->name, c->key_name, c->key, *expiry, buf, cap);
    if (n < 0)
        return n;
    *tok = buf;
    return 0;
}

static void send_put_token(sbus_conn_t *c, sbusi_audience_t *a)
{
    char buf[2048];
    const char *tok;
    int64_t expiry;
    int rc = token_for(c, a, buf, sizeof buf, &tok, &expiry);
    if (rc < 0) {
        fail_audience(c, a, rc, NULL, "cannot build a token for the audience");
        return;
    }
    sbusi_buf_t rest = {0};
    sbusi_enc_descriptor(&rest, 0x74);
    size_t at = sbusi_enc_map(&rest);
    sbusi_enc_str(&rest, "operation", 9);
    sbusi_enc_str(&rest, "put-token", 9);
    sbusi_enc_str(&rest, "type", 4);
    int sas = strncmp(tok, "SharedAccessSignature", 21) == 0;
    sbusi_enc_cstr(&rest, sas ? "servicebus.windows.net:sastoken" : "jwt");
    sbusi_enc_str(&rest, "name", 4);
    sbusi_enc_cstr(&rest, a->name);
    sbusi_enc_end(&rest, at, 6);
    sbusi_enc_descriptor(&rest, 0x77);
    sbusi_enc_cstr(&rest, tok);
    uint64_t id = c->next_req++;
    rc = sbusi_rpc_send(c, c->cbs.snd.link, id, "$cbs", CBS_REPLY, &rest);
    memset(buf, 0, sizeof buf);
    if (rest.p)
        memset(rest.p, 0, rest.len);
    sbusi_buf_free(&rest);
    if (rc < 0) {
        fail_audience(c, a, rc, NULL, "cannot send put-token");
        return;
    }
    a->req_id = id;
    a->sent_mono = c->now_mono;
    a->expires_unix_s = expiry;
    sbusi_log(c, "put-token %s", a->name);
}

static int audience_needs_put(const sbus_conn_t *c, const sbusi_audience_t *a)
{
    if (a->state == A_PUT && a->req_id == 0)
        return 1;
    return a->state == A_VALID && a->refresh_mono >= 0 &&
           c->now_mono >= a->refresh_mono && a->req_id == 0;
}

static void attach_cbs(sbus_conn_t *c)
{
    if (c->cbs.snd.state != SBUSI_L_ATTACHING &&
        c->cbs.snd.state != SBUSI_L_ATTACHED) {
        pn_link_t *l = sbusi_link_new(c, &c->cbs.snd, 1, "$cbs-sender");
        if (l) {
            pn_terminus_set_address(pn_link_target(l), "$cbs");
            pn_terminus_set_address(pn_link_source(l), CBS_REPLY);
            pn_link_open(l);
        }
    }
    if (c->cbs.rcv.state != SBUSI_L_ATTACHING &&
        c->cbs.rcv.state != SBUSI_L_ATTACHED) {
        pn_link_t *l = sbusi_link_new(c, &c->cbs.rcv, 0, "$cbs-receiver");
        if (l) {
            pn_terminus_set_address(pn_link_source(l), "$cbs");
            pn_terminus_set_address(pn_link_target(l), CBS_REPLY);
            pn_link_flow(l, CBS_CREDIT);
            pn_link_open(l);
        }
    }
}

void sbusi_cbs_pump(sbus_conn_t *c)
{
    int want = 0;
    for (sbusi_audience_t *a = c->auds; a; a = a->next)
        want |= audience_needs_put(c, a);
    if (!want)
        return;
    if (c->cbs.snd.state != SBUSI_L_ATTACHED ||
        c->cbs.rcv.state != SBUSI_L_ATTACHED) {
        attach_cbs(c);
        return;
    }
    for (sbusi_audience_t *a = c->auds; a; a = a->next)
        if (audience_needs_put(c, a) && pn_link_credit(c->cbs.snd.link) > 0)
            send_put_token(c, a);
}

static sbusi_audience_t *find_req(sbus_conn_t *c, uint64_t id)
{
    for (sbusi_audience_t *a = c->auds; a; a = a->next)
        if (a->req_id && a->req_id == id)
            return a;
    return NULL;
}

static void on_reply(sbus_conn_t *c, const uint8_t *p, size_t n)
{
    sbusi_rpc_reply_t r;
    if (sbusi_rpc_decode(p, n, &r) < 0 || !r.has_corr)
        return;
    sbusi_audience_t *a = find_req(c, r.corr);
    if (!a)
        return;
    a->req_id = 0;
    if (r.status != 200 && r.status != 202) {
        const char *cond = r.cond[0] ? r.cond : sbusi_status_condition(r.status);
        fail_audience(c, a, 0, cond, r.desc[0] ? r.desc : "put-token refused");
        sbusi_log(c, "put-token %s refused: %d", a->name, r.status);
        return;
    }
    a->state = A_VALID;
    sbusi_conn_progress(c);
    int64_t left_ms = a->expires_unix_s * 1000 - c->now_unix;
    if (c->sas_token && !a->host_token) {
        a->refresh_mono = -1; /* a fixed signature cannot be renewed */
    } else if (left_ms > 0) {
        int64_t wait = left_ms - REFRESH_MARGIN_MS;
        if (wait < left_ms / 2)
            wait = left_ms / 2;
        a->refresh_mono = c->now_mono + wait;
    }
    sbusi_free(a->host_token);
    a->host_token = NULL;
}

void sbusi_cbs_on_event(sbus_conn_t *c, sbusi_owner_t *o, pn_event_t *e)
{
    pn_link_t *l = pn_event_link(e);
    switch (pn_event_type(e)) {
    case PN_LINK_REMOTE_OPEN:
        if (o->state == SBUSI_L_ATTACHING)
            o->state = SBUSI_L_ATTACHED;
        break;
    case PN_LINK_REMOTE_CLOSE:
    case PN_LINK_REMOTE_DETACH:
        sbusi_owner_error_from_link(o, l);
        if (pn_link_state(l) & PN_LOCAL_ACTIVE)
            pn_link_close(l);
        sbusi_owner_lost(o);
        o->state = SBUSI_L_IDLE;
        for (sbusi_audience_t *a = c->auds; a; a = a->next)
            if (a->req_id) {
                if (o->has_err)
                    fail_audience(c, a, o->last_err.err.code,
                                  o->last_err.err.condition,
                                  o->last_err.err.description);
                else
                    a->req_id = 0;
            }
        break;
    case PN_DELIVERY: {
        pn_delivery_t *d = pn_event_delivery(e);
        if (o == &c->cbs.snd) {
            if (pn_delivery_updated(d) || pn_delivery_settled(d))
                pn_delivery_settle(d);
            break;
        }
        if (sbusi_read_delivery(c, d) < 0)
            break;
        on_reply(c, c->scratch.p, c->scratch.len);
        pn_link_flow(l, 1);
        break;
    }
    default: break;
    }
}

void sbusi_cbs_lost(sbus_conn_t *c)
{
    sbusi_owner_lost(&c->cbs.snd);
    sbusi_owner_lost(&c->cbs.rcv);
    c->cbs.snd.state = c->cbs.rcv.state = SBUSI_L_IDLE;
    for (sbusi_audience_t *a = c->auds; a; a = a->next) {
        a->req_id = 0;
        a->refresh_mono = -1;
        if (a->state == A_PUT || a->state == A_VALID)
            a->state = A_NONE;
    }
}

void sbusi_cbs_tick(sbus_conn_t *c)
{
    for (sbusi_audience_t *a = c->auds; a; a = a->next) {
        if (a->req_id && c->now_mono - a->sent_mono >= c->op_timeout_ms)
            fail_audience(c, a, SBUS_ETIMEOUT, NULL,
                          "no answer to put-token in time");
        if (a->state == A_VALID && c->host_tokens && a->refresh_mono >= 0 &&
            c->now_mono >= a->refresh_mono && !a->host_token &&
            !a->tok_ev.queued) {
            a->refresh_mono = -1;
            a->tok_ev.e.type = SBUS_EV_TOKEN;
            a->tok_ev.e.audience = a->name;
            sbusi_ev_push(c, &a->tok_ev);
        }
    }
}

int64_t sbusi_cbs_deadline(sbus_conn_t *c)
{
    int64_t next = -1;
    for (sbusi_audience_t *a = c->auds; a; a = a->next) {
        int64_t t = -1;
        if (a->req_id)
            t = a->sent_mono + c->op_timeout_ms;
        else if (a->state == A_VALID)
            t = a->refresh_mono;
        if (t >= 0 && (next < 0 || t < next))
            next = t;
    }
    return next;
}

/* Resets a failed audience so that the next use tries again. */
void sbusi_audience_retry(sbusi_audience_t *a)
{
    if (a && a->state == A_FAILED)
        a->state = A_NONE;
}

int sbus_conn_set_token(sbus_conn_t *c, const char *audience,
                        const char *token, int64_t expires_unix_s,
                        const char *err_text)
{
    if (!c || !audience)
        return SBUS_EINVAL;
    sbusi_audience_t *a = c->auds;
    while (a && strcmp(a->name, audience) != 0)
        a = a->next;
    if (!a)
        return SBUS_ENOENT;
    if (!token) {
        fail_audience(c, a, SBUS_EAUTH, NULL,
                      err_text ? err_text : "the host could not get a token");
        sbusi_process(c);
        return 0;
    }
    char *t = sbusi_strdup(token);
    if (!t)
        return SBUS_ENOMEM;
    sbusi_free(a->host_token);
    a->host_token = t;
    a->host_expiry = expires_unix_s;
    if (a->state == A_HOST || a->state == A_FAILED || a->state == A_NONE)
        a->state = A_PUT;
    a->req_id = 0;
    if (a->state == A_VALID)
        a->refresh_mono = c->now_mono; /* put the new one now */
    sbusi_process(c);
    return 0;
}

void sbusi_cbs_free(sbus_conn_t *c)
{
    while (c->auds) {
        sbusi_audience_t *a = c->auds;
        c->auds = a->next;
        sbusi_free(a->name);
        sbusi_free(a->host_token);
        sbusi_free(a);
    }
}
