/*
 * test_inmem.c - the engine wired to the emulator's broker in memory,
 * under a fake clock: no sockets, no sleeps. Time-driven behaviour is
 * tested here by moving both clocks forward: token refresh before expiry,
 * automatic lock renewal of messages and sessions (and its failure event),
 * host-supplied tokens (SBUS_EV_TOKEN), operation timeouts, reconnect
 * after the broker drops the connection, and the peer's idle-time-out.
 */
#include "inmem_pair.h"

#include "internal.h"

static void test_token_refresh(void)
{
    pair_t p;
    sbus_conn_options_t o;
    default_opts(&o);
    o.token_lifetime_s = 120;
    pair_open(&p, &o);
    sbus_sender_t *s = sender(&p, "queue.1");
    CHECK(send_one(&p, s, "t0") == 0);
    CHECK(p.put_tokens == 1);
    /* a 120 s token is refreshed at half its life */
    advance(&p, 61000);
    CHECK(p.put_tokens == 2);
    advance(&p, 61000);
    CHECK(p.put_tokens == 3);
    /* two lifetimes later the link still works */
    CHECK(send_one(&p, s, "t1") == 0);
    sbus_sender_free(s);
    pair_close(&p);
}

static void test_auto_renew(void)
{
    pair_t p;
    pair_open_default(&p);
    sbus_sender_t *s = sender(&p, "demo"); /* LockDuration 30 s */
    sbus_receiver_t *r = receiver(&p, "demo");
    CHECK(send_one(&p, s, "keep") == 0);
    CHECK(send_one(&p, s, "lose") == 0);
    int tok;
    done_t d;
    CHECK(sbus_receiver_receive(r, 2, 5000, &tok) == 0);
    take(&p, &tok, &d);
    CHECK(d.count == 2);
    if (d.count == 2) {
        CHECK(sbus_receiver_auto_renew(r, d.msgs[0], 300000) == 0);
        advance(&p, 90000); /* three lock durations */
        CHECK(p.renew_failed == 0);
        CHECK(settle_one(&p, r, d.msgs[1]) == SBUS_ELOCKLOST);
        CHECK(settle_one(&p, r, d.msgs[0]) == 0);
        /* settled: no longer registered */
        CHECK(sbus_receiver_auto_renew_stop(r, d.msgs[0]) == SBUS_ENOENT);
    }
    done_clear(&d);
    sbus_receiver_free(r);
    sbus_sender_free(s);
    pair_close(&p);
}

/* Several locks due together go in one renew-lock request; when one of
 * them is gone the shared request fails, and each is asked for alone: the
 * lost one is reported, the others keep being renewed. */
static void test_auto_renew_many(void)
{
    pair_t p;
    pair_open_default(&p);
    sbus_sender_t *s = sender(&p, "demo");
    sbus_receiver_t *r = receiver(&p, "demo");
    for (int i = 0; i < 3; i++)
        CHECK(send_one(&p, s, "many") == 0);
    int tok;
    done_t d;
    CHECK(sbus_receiver_receive(r, 3, 5000, &tok) == 0);
    take(&p, &tok, &d);
    CHECK(d.count == 3);
    for (size_t i = 0; i < d.count; i++)
        CHECK(sbus_receiver_auto_renew(r, d.msgs[i], 300000) == 0);
    advance(&p, 45000);
    CHECK(p.renew_failed == 0);
    if (d.count == 3) {
        /* the broker forgets message 1's lock */
        uint8_t lock[16];
        sbus_message_lock_token(d.msgs[1], lock);
        emu_msg_t *em = emu_find_token(p.b, lock);
        CHECK(em != NULL);
        if (em)
            emu_unlock(p.b, em, false);
        advance(&p, 45000);
        CHECK(p.renew_failed == 1);
        CHECK(p.renew_failed_code == SBUS_ELOCKLOST);
        for (int i = 0; i < 3; i += 2) {
            CHECK(settle_one(&p, r, d.msgs[i]) == 0);
        }
    }
    done_clear(&d);
    sbus_receiver_free(r);
    sbus_sender_free(s);
    pair_close(&p);
}

static void test_auto_renew_failure_and_free(void)
{
    pair_t p;
    pair_open_default(&p);
    sbus_sender_t *s = sender(&p, "demo");
    sbus_receiver_t *r = receiver(&p, "demo");
    CHECK(send_one(&p, s, "gone") == 0);
    CHECK(send_one(&p, s, "freed") == 0);
    int tok;
    done_t d;
    CHECK(sbus_receiver_receive(r, 2, 5000, &tok) == 0);
    take(&p, &tok, &d);
    CHECK(d.count == 2);
    if (d.count == 2) {
        /* the lock expires before the renewal is due: clock jumps */
        CHECK(sbus_receiver_auto_renew(r, d.msgs[0], 300000) == 0);
        CHECK(sbus_receiver_auto_renew(r, d.msgs[1], 300000) == 0);
        /* freeing a registered message unregisters it */
        sbus_message_free(d.msgs[1]);
        d.msgs[1] = NULL;
        p.b->fake_ms += 40000;
        p.mono += 40000; /* both clocks jump, with no tick in between */
        emu_tick(p.b);
        advance(&p, 1000);
        if (p.renew_failed != 1)
            fprintf(stderr, "renew_failed=%d\n", p.renew_failed);
        CHECK(p.renew_failed == 1);
        CHECK(p.renew_failed_code == SBUS_ELOCKLOST);
        sbus_message_free(d.msgs[0]);
        d.msgs[0] = NULL;
        advance(&p, 60000);
        CHECK(p.renew_failed == 1);
    }
    d.count = 0;
    sbus_receiver_free(r);
    sbus_sender_free(s);
    pair_close(&p);
}

static void test_auto_renew_session(void)
{
    pair_t p;
    pair_open_default(&p);
    sbus_sender_t *s = sender(&p, "session-queue");
    sbus_message_t *m;
    sbus_message_new(&m);
    sbus_message_set_prop(m, SBUS_PROP_SESSION_ID, "kept", 4);
    int tok;
    done_t d;
    CHECK(sbus_sender_send(s, &m, 1, &tok) == 0);
    take(&p, &tok, &d);
    CHECK(d.code == 0);
    sbus_message_free(m);
    sbus_receiver_options_t ro;
    sbus_receiver_options_init(&ro);
    ro.entity = "session-queue";
    ro.session = 1;
    ro.session_id = "kept";
    sbus_receiver_t *r;
    sbus_receiver_new(p.c, &ro, &r);
    CHECK(sbus_receiver_open(r, &tok) == 0);
    take(&p, &tok, &d);
    CHECK(d.code == 0);
    int64_t first = sbus_receiver_session_locked_until(r);
    CHECK(first > 0);
    CHECK(sbus_receiver_auto_renew_session(r, 300000) == 0);
    advance(&p, 90000); /* three lock durations of 30 s */
    CHECK(p.renew_failed == 0);
    CHECK(sbus_receiver_session_locked_until(r) > first + 60000);
    CHECK(sbus_receiver_receive(r, 1, 2000, &tok) == 0);
    take(&p, &tok, &d);
    CHECK(d.count == 1);
    if (d.count == 1) {
        CHECK(settle_one(&p, r, d.msgs[0]) == 0);
    }
    done_clear(&d);
    sbus_receiver_free(r);
    sbus_sender_free(s);
    pair_close(&p);
}

static void test_host_tokens(void)
{
    pair_t p;
    sbus_conn_options_t o;
    sbus_conn_options_init(&o);
    o.namespace_ = "sb://localhost";
    o.host_tokens = 1;
    o.use_tls = 0;
    pair_open(&p, &o);
    sbus_sender_t *s = sender(&p, "queue.1");
    sbus_message_t *m;
    sbus_message_new(&m);
    int tok;
    CHECK(sbus_sender_send(s, &m, 1, &tok) == 0);
    sbus_message_free(m);
    pump(&p);
    CHECK(p.token_requests == 1);
    CHECK(strcmp(p.token_audience, "sb://localhost/queue.1") == 0);
    /* the host signs one itself (here with the engine's helper) */
    char t[512];
    int64_t exp = unix_now(&p) / 1000 + 3600;
    sbus_sas_token(p.token_audience, "RootManageSharedAccessKey",
                   "SAS_KEY_VALUE", exp, t, sizeof t);
    CHECK(sbus_conn_set_token(p.c, p.token_audience, t, exp, NULL) == 0);
    done_t d;
    take(&p, &tok, &d);
    CHECK(d.code == 0);
    /* refresh: the engine asks again before expiry */
    advance(&p, 3000000);
    CHECK(p.token_requests == 2);
    /* a host that cannot get a token fails the waiting operations */
    sbus_sender_t *s2 = sender(&p, "demo");
    sbus_message_new(&m);
    CHECK(sbus_sender_send(s2, &m, 1, &tok) == 0);
    sbus_message_free(m);
    pump(&p);
    CHECK(p.token_requests == 3);
    CHECK(sbus_conn_set_token(p.c, "sb://localhost/demo", NULL, 0,
                              "credential unavailable") == 0);
    take(&p, &tok, &d);
    CHECK(d.code == SBUS_EAUTH);
    sbus_sender_free(s2);
    sbus_sender_free(s);
    pair_close(&p);
}

static void test_timeout_and_reconnect(void)
{
    pair_t p;
    sbus_conn_options_t o;
    default_opts(&o);
    o.operation_timeout_ms = 5000;
    pair_open(&p, &o);
    sbus_sender_t *s = sender(&p, "queue.1");
    sbus_receiver_t *r = receiver(&p, "queue.1");
    CHECK(send_one(&p, s, "warm") == 0);
    int tok;
    done_t d;
    CHECK(sbus_receiver_receive(r, 1, 5000, &tok) == 0);
    take(&p, &tok, &d);
    CHECK(d.count == 1);
    /* the broker sits on settlements longer than our deadline */
    p.b->faults.delay_disp_ms = 20000;
    if (d.count == 1) {
        CHECK(settle_one(&p, r, d.msgs[0]) == SBUS_ETIMEOUT);
    }
    done_clear(&d);
    advance(&p, 20000);
    p.b->faults.delay_disp_ms = 0;
    sbus_receiver_free(r);
    /* the broker drops us: the next send reconnects */
    emu_conn_drop(p.server, "amqp:connection:forced", "test drop");
    pump(&p);
    advance(&p, 1000);
    CHECK(send_one(&p, s, "after") == 0);
    CHECK(p.connects == 2);
    sbus_sender_free(s);
    pair_close(&p);
}

/* A send whose connection dies every time it is on the wire ends with an
 * error after the policy's attempts, and the engine backs off between
 * connections instead of reconnecting in a loop (regression: a reconnect
 * storm of hundreds of connections a second). */
static void test_no_reconnect_storm(void)
{
    pair_t p;
    pair_open_retry(&p, 3, 1000);
    sbus_sender_t *s = sender(&p, "queue.1");
    CHECK(send_one(&p, s, "warm") == 0);
    /* from now on every connection dies as soon as it opens */
    p.drop_on_open = 1;
    emu_conn_drop(p.server, "amqp:connection:forced", "test drop");
    pump(&p);
    sbus_message_t *m;
    sbus_message_new(&m);
    int tok;
    CHECK(sbus_sender_send(s, &m, 1, &tok) == 0);
    sbus_message_free(m);
    int found = 0;
    done_t d = {0};
    for (int i = 0; i < 600 && !found; i++) {
        advance(&p, 100);
        for (int j = 0; j < p.ndone; j++)
            if (p.done[j].token == &tok) {
                d = p.done[j];
                p.done[j] = p.done[--p.ndone];
                found = 1;
            }
    }
    CHECK(found);
    CHECK(d.code == SBUS_ECONNECTION);
    CHECK(p.connects <= 2 + 3 + 1);
    fprintf(stderr, "connections while failing: %d\n", p.connects);
    p.drop_on_open = 0;
    sbus_sender_free(s);
    pair_close(&p);
}

/* The broker cuts the connection every 700 ms of fake time, many more
 * times than retry_total + 1, while a receive waits across each cut. Every
 * connection gets its work done (token, links, messages) before it dies,
 * so no cut counts as a failed attempt: nothing fails, and the engine
 * reconnects at once each time (the cuts come further apart than
 * retry_backoff_ms) (regression: a connection had to live 10 s to count as
 * healthy, so the fifth cut failed every pending operation with a
 * connection error). */
static void test_frequent_cuts(void)
{
    pair_t p;
    pair_open_retry(&p, 3, 500);
    sbus_sender_t *s = sender(&p, "queue.1");
    sbus_receiver_t *r = receiver(&p, "queue.1");
    int cuts = 0, received = 0;
    for (int round = 0; round < 12; round++) {
        int rtok;
        CHECK(sbus_receiver_receive(r, 10, 60000, &rtok) == 0);
        pump(&p);
        advance(&p, 300);
        CHECK(p.server != NULL); /* reconnected at once, no backoff */
        if (!p.server)
            break;
        emu_conn_drop(p.server, "amqp:connection:forced", "cut");
        cuts++;
        pump(&p);
        advance(&p, 200);
        CHECK(send_one(&p, s, "through the cuts") == 0);
        done_t d;
        CHECK(take(&p, &rtok, &d) == 0);
        CHECK(d.code == 0);
        CHECK(d.count == 1);
        received += (int)d.count;
        for (size_t i = 0; i < d.count; i++)
            CHECK(settle_one(&p, r, d.msgs[i]) == 0);
        done_clear(&d);
        advance(&p, 200);
    }
    CHECK(cuts == 12 && received == 12);
    CHECK(p.connects == 1 + cuts);
    fprintf(stderr, "frequent cuts: %d cuts, %d received, %d connections\n",
            cuts, received, p.connects);
    sbus_receiver_free(r);
    sbus_sender_free(s);
    pair_close(&p);
}

/* A service that kills every connection right after accepting its token
 * (work done, so no failed attempt is counted) still gets at most one
 * connection per retry_backoff_ms, not a reconnect storm. */
static void test_no_storm_after_progress(void)
{
    pair_t p;
    pair_open_retry(&p, 3, 500);
    sbus_receiver_t *r = receiver(&p, "queue.1");
    p.drop_on_auth = 1;
    int tok;
    CHECK(sbus_receiver_receive(r, 1, 10000, &tok) == 0);
    int before = p.connects;
    done_t d;
    CHECK(take(&p, &tok, &d) == 0);
    CHECK(d.code == 0 && d.count == 0); /* max_wait, as if nothing came */
    int n = p.connects - before;
    fprintf(stderr, "connections in 10 s of kills after the token: %d\n", n);
    CHECK(n >= 5 && n <= 10000 / 500 + 2);
    p.drop_on_auth = 0;
    sbus_receiver_free(r);
    pair_close(&p);
}

/* A per-operation timeout (the SDKs' timeout= keyword) overrides the
 * connection's operation_timeout for that operation only. */
static void test_per_op_timeout(void)
{
    pair_t p;
    sbus_conn_options_t o;
    default_opts(&o);
    o.operation_timeout_ms = 60000;
    pair_open(&p, &o);
    sbus_sender_t *s = sender(&p, "queue.1");
    sbus_receiver_t *r = receiver(&p, "queue.1");
    CHECK(send_one(&p, s, "slow") == 0);
    int tok;
    done_t d;
    CHECK(sbus_receiver_receive(r, 1, 5000, &tok) == 0);
    take(&p, &tok, &d);
    CHECK(d.count == 1);
    CHECK(sbus_conn_set_op_timeout(p.c, &tok, 1000) == SBUS_ENOENT);
    p.b->faults.delay_disp_ms = 20000;
    if (d.count == 1) {
        done_t sd;
        CHECK(sbus_receiver_settle(r, d.msgs[0], SBUS_COMPLETE, NULL, NULL,
                                   &tok) == 0);
        CHECK(sbus_conn_set_op_timeout(p.c, &tok, 2000) == 0);
        int64_t t0 = p.mono;
        take(&p, &tok, &sd);
        CHECK(sd.code == SBUS_ETIMEOUT);
        CHECK(p.mono - t0 <= 3000);
    }
    done_clear(&d);
    advance(&p, 20000);
    p.b->faults.delay_disp_ms = 0;
    sbus_receiver_free(r);
    sbus_sender_free(s);
    pair_close(&p);
}

/* An operation timeout on a receive: max_wait still decides when a
 * receive on a working link returns; the timeout bounds how long the
 * receive waits for a link it cannot have (connection down, reconnecting),
 * counted from the loss. */
static void test_receive_op_timeout(void)
{
    pair_t p;
    pair_open_retry(&p, 10, 1000);
    sbus_receiver_t *r = receiver(&p, "queue.1");
    int tok;
    done_t d;
    /* a working link: an empty return after max_wait, not a timeout */
    CHECK(sbus_receiver_receive(r, 1, 5000, &tok) == 0);
    CHECK(sbus_conn_set_op_timeout(p.c, &tok, 1000) == 0);
    int64_t t0 = p.mono;
    CHECK(take(&p, &tok, &d) == 0);
    CHECK(d.code == 0 && d.count == 0);
    CHECK(p.mono - t0 >= 5000);
    /* the link works for 3 s, then every connection dies as it opens: the
       receive ends about 2 s after the loss, long before max_wait */
    CHECK(sbus_receiver_receive(r, 1, 60000, &tok) == 0);
    CHECK(sbus_conn_set_op_timeout(p.c, &tok, 2000) == 0);
    advance(&p, 3000);
    CHECK(p.ndone == 0);
    p.drop_on_open = 1;
    emu_conn_drop(p.server, "amqp:connection:forced", "cut");
    pump(&p);
    t0 = p.mono;
    CHECK(take(&p, &tok, &d) == 0);
    CHECK(d.code == SBUS_ETIMEOUT);
    CHECK(p.mono - t0 >= 2000 && p.mono - t0 <= 2200);
    /* a receive started while the connection is down */
    CHECK(sbus_receiver_receive(r, 1, -1, &tok) == 0);
    CHECK(sbus_conn_set_op_timeout(p.c, &tok, 1500) == 0);
    t0 = p.mono;
    CHECK(take(&p, &tok, &d) == 0);
    CHECK(d.code == SBUS_ETIMEOUT);
    CHECK(p.mono - t0 >= 1500 && p.mono - t0 <= 1700);
    /* the broker lets us in again: receives work */
    p.drop_on_open = 0;
    sbus_sender_t *s = sender(&p, "queue.1");
    CHECK(send_one(&p, s, "back") == 0);
    CHECK(sbus_receiver_receive(r, 1, 5000, &tok) == 0);
    CHECK(sbus_conn_set_op_timeout(p.c, &tok, 1000) == 0);
    CHECK(take(&p, &tok, &d) == 0);
    CHECK(d.code == 0 && d.count == 1);
    done_clear(&d);
    sbus_sender_free(s);
    sbus_receiver_free(r);
    pair_close(&p);
}

static sbus_receiver_t *session_receiver(pair_t *p, const char *sid)
{
    sbus_receiver_options_t ro;
    sbus_receiver_options_init(&ro);
    ro.entity = "session-queue";
    ro.session = 1;
    ro.session_id = sid;
    ro.session_wait_ms = 1000;
    sbus_receiver_t *r = NULL;
    sbus_receiver_new(p->c, &ro, &r);
    return r;
}

/* Receives one message on r; returns its completion code, *m the message
 * (NULL if none). */
static int receive_one(pair_t *p, sbus_receiver_t *r, sbus_message_t **m)
{
    int tok;
    done_t d;
    *m = NULL;
    if (sbus_receiver_receive(r, 1, 3000, &tok) != 0)
        return -1;
    take(p, &tok, &d);
    if (d.count)
        *m = d.msgs[0];
    for (size_t i = 1; i < d.count; i++)
        sbus_message_free(d.msgs[i]);
    return d.code;
}

static int msg_session_is(const sbus_message_t *m, const char *sid)
{
    const char *v;
    size_t n;
    return m && sbus_message_get_prop(m, SBUS_PROP_SESSION_ID, &v, &n) == 0 &&
           n == strlen(sid) && memcmp(v, sid, n) == 0;
}

/* A session receiver whose link is force-detached or lost with the
 * connection re-attaches to the same session on next use; messages from
 * the old link cannot be settled (their locks went with it); when the
 * session was taken by someone else meanwhile, or its lock expired, the
 * next operation fails with session-lock-lost, and so do later ones. */
static void test_session_reattach(void)
{
    pair_t p;
    pair_open_default(&p);
    sbus_sender_t *s = sender(&p, "session-queue");
    for (int i = 0; i < 4; i++)
        CHECK(send_one_sid(&p, s, "for ra", "ra") == 0);
    CHECK(send_one_sid(&p, s, "for rb", "rb") == 0);
    CHECK(send_one_sid(&p, s, "for rb", "rb") == 0);
    /* next available: learns its session from the attach */
    sbus_receiver_t *r = session_receiver(&p, NULL);
    int tok;
    done_t d;
    CHECK(sbus_receiver_open(r, &tok) == 0);
    take(&p, &tok, &d);
    CHECK(d.code == 0);
    char sid[16] = "";
    if (sbus_receiver_session_id(r))
        snprintf(sid, sizeof sid, "%s", sbus_receiver_session_id(r));
    CHECK(strcmp(sid, "ra") == 0 || strcmp(sid, "rb") == 0);
    sbus_message_t *m1, *m2;
    CHECK(receive_one(&p, r, &m1) == 0 && msg_session_is(m1, sid));
    /* the service force-detaches the link (e.g. idle) */
    emu_detach_entity(p.b, "session-queue", "amqp:link:detach-forced");
    pump(&p);
    CHECK(settle_one(&p, r, m1) == SBUS_ELOCKLOST);
    sbus_message_free(m1);
    CHECK(receive_one(&p, r, &m2) == 0 && msg_session_is(m2, sid));
    CHECK(strcmp(sbus_receiver_session_id(r), sid) == 0);
    CHECK(settle_one(&p, r, m2) == 0);
    sbus_message_free(m2);
    /* the connection is lost: the same again */
    CHECK(receive_one(&p, r, &m1) == 0 && msg_session_is(m1, sid));
    emu_conn_drop(p.server, "amqp:connection:forced", "cut");
    pump(&p);
    CHECK(settle_one(&p, r, m1) == SBUS_ELOCKLOST);
    sbus_message_free(m1);
    CHECK(p.connects == 2);
    if (strcmp(sid, "ra") == 0) {
        CHECK(receive_one(&p, r, &m2) == 0 && msg_session_is(m2, sid));
        CHECK(settle_one(&p, r, m2) == 0);
        sbus_message_free(m2);
    }
    CHECK(p.connects == 2);
    /* detached again, and someone else takes the session meanwhile */
    emu_detach_entity(p.b, "session-queue", "amqp:link:detach-forced");
    pump(&p);
    sbus_receiver_t *other = session_receiver(&p, sid);
    CHECK(sbus_receiver_open(other, &tok) == 0);
    take(&p, &tok, &d);
    CHECK(d.code == 0);
    CHECK(receive_one(&p, r, &m1) == SBUS_ESESSIONLOCKLOST && !m1);
    CHECK(receive_one(&p, r, &m1) == SBUS_ESESSIONLOCKLOST && !m1);
    sbus_receiver_free(r);
    /* a lock that expires: the service detaches with session-lock-lost */
    advance(&p, 31000);
    CHECK(receive_one(&p, other, &m1) == SBUS_ESESSIONLOCKLOST && !m1);
    sbus_receiver_free(other);
    sbus_sender_free(s);
    pair_close(&p);
}

/* Frees w and returns its value's length; *out a malloc'd copy. */
static size_t writer_take(sbus_amqp_writer_t *w, uint8_t **out)
{
    const void *p;
    size_t len = 0;
    CHECK(sbus_amqp_writer_result(w, &p, &len) == 0);
    *out = malloc(len ? len : 1);
    memcpy(*out, p, len);
    sbus_amqp_writer_free(w);
    return len;
}

/* Encodes one value with the public writer; *out malloc'd. */
static size_t encode_list_of(sbus_amqp_type_t t, const sbus_value_t *items,
                             size_t n, uint8_t **out)
{
    sbus_amqp_writer_t *w;
    sbus_amqp_writer_new(&w);
    CHECK(sbus_amqp_begin(w, SBUS_AMQP_LIST) == 0);
    for (size_t i = 0; i < n; i++)
        CHECK(sbus_amqp_write(w, t, &items[i]) == 0);
    CHECK(sbus_amqp_end(w) == 0);
    return writer_take(w, out);
}

static size_t encode_one(sbus_amqp_type_t t, const sbus_value_t *v,
                         uint8_t **out)
{
    sbus_amqp_writer_t *w;
    sbus_amqp_writer_new(&w);
    if (t == SBUS_AMQP_MAP) { /* {"k": v as a symbol, "n": null} */
        sbus_amqp_begin(w, SBUS_AMQP_MAP);
        sbus_value_t k = {.type = SBUS_VAL_STRING};
        k.u.s.ptr = "k";
        k.u.s.len = 1;
        sbus_amqp_write_value(w, &k);
        CHECK(sbus_amqp_write(w, SBUS_AMQP_SYMBOL, v) == 0);
        k.u.s.ptr = "n";
        sbus_amqp_write_value(w, &k);
        sbus_amqp_write(w, SBUS_AMQP_NULL, NULL);
        sbus_amqp_end(w);
    } else {
        CHECK(sbus_amqp_write(w, t, v) == 0);
    }
    return writer_take(w, out);
}

static int aprop_bytes_are(const sbus_message_t *m, const char *key,
                           const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < sbus_message_property_count(m); i++) {
        const char *k;
        size_t kl;
        sbus_value_t v;
        sbus_message_property_at(m, i, &k, &kl, &v);
        if (kl == strlen(key) && memcmp(k, key, kl) == 0)
            return v.type == SBUS_VAL_AMQP && v.u.s.len == n &&
                   memcmp(v.u.s.ptr, p, n) == 0;
    }
    return 0;
}

/* Application properties of any AMQP type (list, map, char, decimal)
 * and amqp-sequence / amqp-value bodies of any type go through the
 * emulator and come back byte for byte (regression: such properties were
 * dropped on receive, and a sequence body could not be set). */
static void test_amqp_types_roundtrip(void)
{
    pair_t p;
    pair_open_default(&p);
    sbus_value_t strs[3] = {{.type = SBUS_VAL_STRING},
                            {.type = SBUS_VAL_STRING},
                            {.type = SBUS_VAL_STRING}};
    const char *words[3] = {"alpha", "", "gamma"};
    for (int i = 0; i < 3; i++) {
        strs[i].u.s.ptr = words[i];
        strs[i].u.s.len = strlen(words[i]);
    }
    uint8_t *list, *map, *chr, *dec, *seq2;
    size_t nlist = encode_list_of(SBUS_AMQP_STRING, strs, 3, &list);
    size_t nseq2 = encode_list_of(SBUS_AMQP_SYMBOL, strs, 2, &seq2);
    size_t nmap = encode_one(SBUS_AMQP_MAP, &strs[2], &map);
    sbus_value_t c = {.type = SBUS_VAL_UINT};
    c.u.u = 0x20AC; /* the euro sign */
    size_t nchr = encode_one(SBUS_AMQP_CHAR, &c, &chr);
    static const uint8_t d128[16] = {0x30, 0x40, 0, 0, 0, 0, 0, 0,
                                     0, 0, 0, 0, 0, 0, 0x30, 0x39};
    sbus_value_t d = {.type = SBUS_VAL_BINARY};
    d.u.s.ptr = (const char *)d128;
    d.u.s.len = 16;
    size_t ndec = encode_one(SBUS_AMQP_DECIMAL128, &d, &dec);

    sbus_message_t *m[2];
    sbus_message_new(&m[0]);
    sbus_message_new(&m[1]);
    sbus_value_t v = {.type = SBUS_VAL_AMQP};
    struct { const char *key; uint8_t *p; size_t n; } props[] = {
        {"list", list, nlist}, {"map", map, nmap}, {"char", chr, nchr},
        {"decimal", dec, ndec}};
    for (size_t i = 0; i < 4; i++) {
        v.u.s.ptr = (const char *)props[i].p;
        v.u.s.len = props[i].n;
        CHECK(sbus_message_set_property(m[0], props[i].key,
                                        strlen(props[i].key), &v) == 0);
    }
    CHECK(sbus_message_set_property(m[0], "plain", 5, &strs[0]) == 0);
    CHECK(sbus_message_set_body_sequence(m[0], list, nlist) == 0);
    CHECK(sbus_message_add_body_sequence(m[0], seq2, nseq2) == 0);
    v.u.s.ptr = (const char *)map;
    v.u.s.len = nmap;
    CHECK(sbus_message_set_body_value(m[1], &v) == 0);
    sbus_sender_t *s = sender(&p, "test-queue-2");
    int tok;
    done_t dn;
    CHECK(sbus_sender_send(s, m, 2, &tok) == 0); /* as one batch */
    take(&p, &tok, &dn);
    CHECK(dn.code == 0);
    sbus_message_free(m[0]);
    sbus_message_free(m[1]);
    sbus_receiver_t *r = receiver(&p, "test-queue-2");
    CHECK(sbus_receiver_receive(r, 2, 5000, &tok) == 0);
    take(&p, &tok, &dn);
    CHECK(dn.code == 0 && dn.count == 2);
    if (dn.count == 2) {
        const sbus_message_t *a = dn.msgs[0], *b = dn.msgs[1];
        for (size_t i = 0; i < 4; i++)
            CHECK(aprop_bytes_are(a, props[i].key, props[i].p, props[i].n));
        CHECK(sbus_message_property_count(a) == 5);
        CHECK(sbus_message_body_kind(a) == SBUS_BODY_SEQUENCE);
        CHECK(sbus_message_body_sequence_count(a) == 2);
        const void *q;
        size_t qn;
        CHECK(sbus_message_body_sequence_at(a, 0, &q, &qn) == 0 &&
              qn == nlist && memcmp(q, list, nlist) == 0);
        CHECK(sbus_message_body_sequence_at(a, 1, &q, &qn) == 0 &&
              qn == nseq2 && memcmp(q, seq2, nseq2) == 0);
        sbus_value_t got;
        CHECK(sbus_message_body_kind(b) == SBUS_BODY_VALUE);
        CHECK(sbus_message_body_value(b, &got) == 0 &&
              got.type == SBUS_VAL_AMQP && got.u.s.len == nmap &&
              memcmp(got.u.s.ptr, map, nmap) == 0);
        for (int i = 0; i < 2; i++) {
            CHECK(settle_one(&p, r, dn.msgs[i]) == 0);
        }
    }
    done_clear(&dn);
    free(list);
    free(seq2);
    free(map);
    free(chr);
    free(dec);
    sbus_receiver_free(r);
    sbus_sender_free(s);
    pair_close(&p);
}

/* AMQP over WebSockets (AMQPWSB10), through an HTTP CONNECT proxy, and a
 * proxy that refuses (SBUS_EPROXY, not retried). */
static void pair_open_transport(pair_t *p, int ws, int proxy_status)
{
    pair_broker(p);
    p->ws = ws;
    p->proxy_status = proxy_status;
    sbus_conn_options_t o;
    default_opts(&o);
    if (ws)
        o.transport = SBUS_TRANSPORT_WEBSOCKET;
    if (proxy_status) {
        o.proxy_host = "proxy.example";
        o.proxy_port = 3128;
        o.proxy_user = "u";
        o.proxy_password = "p";
    }
    o.trace = 1;
    char err[256];
    CHECK(sbus_conn_new(&p->c, &o, err, sizeof err) == 0);
    tick(p);
}

static void test_websocket_and_proxy(void)
{
    for (int variant = 0; variant < 3; variant++) {
        int ws = variant != 1, proxy = variant >= 1 ? 200 : 0;
        pair_t p;
        pair_open_transport(&p, ws, proxy);
        int tok;
        done_t d;
        CHECK(sbus_conn_open(p.c, &tok) == 0);
        take(&p, &tok, &d);
        CHECK(d.code == 0);
        if (proxy) {
            CHECK(strncmp(p.proxy_req, "CONNECT localhost:", 18) == 0);
            CHECK(strstr(p.proxy_req, "Proxy-Authorization: Basic dTpw") != NULL);
        }
        sbus_sender_t *s = sender(&p, "queue.1");
        CHECK(send_one(&p, s, "over layers") == 0);
        sbus_receiver_options_t ro;
        sbus_receiver_options_init(&ro);
        ro.entity = "queue.1";
        ro.mode = SBUS_RECEIVE_AND_DELETE;
        sbus_receiver_t *r;
        sbus_receiver_new(p.c, &ro, &r);
        CHECK(sbus_receiver_receive(r, 1, 2000, &tok) == 0);
        take(&p, &tok, &d);
        CHECK(d.count == 1);
        done_clear(&d);
        sbus_receiver_free(r);
        sbus_sender_free(s);
        pair_close(&p);
    }
    pair_t p;
    pair_open_transport(&p, 1, 407);
    int tok;
    done_t d;
    CHECK(sbus_conn_open(p.c, &tok) == 0);
    take(&p, &tok, &d);
    CHECK(d.code == SBUS_EPROXY);
    CHECK(p.connects == 1);
    pair_close(&p);
}

/* A put-token the service answers "busy" is tried again under the policy;
 * an unauthorized one is not. */
static void test_token_retry(void)
{
    pair_t p;
    pair_open_default(&p);
    p.b->faults.fail_next = 1;
    snprintf(p.b->faults.fail_op, sizeof p.b->faults.fail_op, "cbs");
    snprintf(p.b->faults.fail_cond, sizeof p.b->faults.fail_cond,
             "com.microsoft:server-busy");
    sbus_sender_t *s = sender(&p, "queue.1");
    CHECK(send_one(&p, s, "after busy cbs") == 0);
    CHECK(p.put_tokens == 2);

    sbus_sender_free(s);
    pair_close(&p);
}

/* Opening and closing links for a long time keeps memory flat: links both
 * ends detached are freed (regression: every closed link stayed). */
static void test_link_churn(void)
{
    pair_t p;
    pair_open_default(&p);
    for (int i = 0; i < 200; i++) {
        sbus_sender_t *s = sender(&p, "queue.1");
        CHECK(send_one(&p, s, "churn") == 0);
        int tok;
        done_t d;
        CHECK(sbus_sender_close(s, &tok) == 0);
        take(&p, &tok, &d);
        sbus_sender_free(s);
        sbus_receiver_t *r = receiver(&p, "queue.1");
        CHECK(sbus_receiver_receive(r, 1, 1000, &tok) == 0);
        take(&p, &tok, &d);
        for (size_t k = 0; k < d.count; k++) {
            CHECK(settle_one(&p, r, d.msgs[k]) == 0);
        }
        done_clear(&d);
        sbus_receiver_free(r); /* freed without a close: detach only */
        pump(&p);
    }
    advance(&p, 1000);
    int links = 0;
    for (pn_link_t *l = pn_link_head(p.c->driver.connection, 0); l;
         l = pn_link_next(l, 0))
        links++;
    CHECK(links < 10); /* $cbs pair and maybe the last ones */
    fprintf(stderr, "links left after 400 opened and closed: %d\n", links);
    pair_close(&p);
}

/* Hands the engine the first AMQP frame waiting in to_engine (plain
 * transport: a frame starts with its 4-byte size). */
static void feed_one_frame(pair_t *p)
{
    CHECK(p->to_engine.len >= 8);
    if (p->to_engine.len < 8)
        return;
    const uint8_t *b = p->to_engine.p;
    size_t n = (size_t)b[0] << 24 | (size_t)b[1] << 16 | (size_t)b[2] << 8 | b[3];
    CHECK(n >= 8 && n <= p->to_engine.len);
    size_t cap;
    uint8_t *in = sbus_conn_read_buffer(p->c, &cap);
    CHECK(in && cap >= n);
    if (!in || cap < n || n > p->to_engine.len)
        return;
    memcpy(in, b, n);
    memmove(p->to_engine.p, b + n, p->to_engine.len - n);
    p->to_engine.len -= n;
    sbus_conn_read_done(p->c, n);
}

static int body_is(const sbus_message_t *m, const char *want)
{
    const void *b;
    size_t n;
    return m && sbus_message_body_at(m, 0, &b, &n) == 0 && n == strlen(want) &&
           memcmp(b, want, n) == 0;
}

/* A message that arrives after its receive call ended is released; when
 * the next receive starts before the release went out, the new credit must
 * not reach the broker first, or the broker hands out the message after it
 * and the queue's order is lost (1, 3, 2). */
static void test_release_before_credit(void)
{
    pair_t p;
    pair_open_default(&p);
    sbus_sender_t *s = sender(&p, "test-queue-2");
    CHECK(send_one(&p, s, "m1") == 0);
    CHECK(send_one(&p, s, "m2") == 0);
    CHECK(send_one(&p, s, "m3") == 0);
    sbus_receiver_t *r = receiver(&p, "test-queue-2");
    int tok;
    done_t d;
    CHECK(sbus_receiver_open(r, &tok) == 0);
    take(&p, &tok, &d);
    CHECK(d.code == 0);

    /* credit 2: the broker sends m1 and m2; the engine sees only m1 */
    p.hold_input = 1;
    int t1;
    CHECK(sbus_receiver_receive(r, 2, 3000, &t1) == 0);
    pump(&p);
    feed_one_frame(&p);
    pump(&p); /* the receive ends with m1; its drain goes out */
    done_t d1;
    CHECK(take(&p, &t1, &d1) == 0 && d1.count == 1 && body_is(d1.msgs[0], "m1"));

    /* m2 arrives late and is released; the next receive starts before
       anything is written */
    while (p.to_engine.len)
        feed_one_frame(&p);
    int t2;
    CHECK(sbus_receiver_receive(r, 5, 1000, &t2) == 0);
    p.hold_input = 0;
    CHECK(take(&p, &t2, &d) == 0 && d.count >= 1);
    CHECK(d.count >= 1 && body_is(d.msgs[0], "m2"));
    for (size_t i = 0; i < d.count; i++)
        CHECK(settle_one(&p, r, d.msgs[i]) == 0);
    for (size_t i = 0; i < d1.count; i++)
        CHECK(settle_one(&p, r, d1.msgs[i]) == 0);
    done_clear(&d);
    done_clear(&d1);
    sbus_receiver_free(r);
    sbus_sender_free(s);
    pair_close(&p);
}

/* Received messages' blocks return to their connection and are reused;
 * a reused block holds only the new message, and a message that outlives
 * its connection stays readable and is freed on its own (valgrind and
 * ASan check the frees). */
static int recv_one(pair_t *p, sbus_receiver_t *r, sbus_message_t **out)
{
    int tok;
    done_t d;
    if (sbus_receiver_receive(r, 1, 1000, &tok) != 0)
        return -1;
    take(p, &tok, &d);
    if (d.code != 0 || d.count != 1) {
        done_clear(&d);
        return -1;
    }
    *out = d.msgs[0];
    d.msgs[0] = NULL;
    d.count = 0;
    done_clear(&d);
    return 0;
}

static int id_is(const sbus_message_t *m, const char *want)
{
    const char *id;
    size_t n;
    return sbus_message_get_prop(m, SBUS_PROP_MESSAGE_ID, &id, &n) == 0 &&
           n == strlen(want) && memcmp(id, want, n) == 0 && id[n] == 0;
}

static void test_message_blocks_reused(void)
{
    pair_t p;
    pair_open_default(&p);
    sbus_sender_t *s = sender(&p, "queue.1");
    char body[3][1100];
    for (int i = 0; i < 3; i++) {
        memset(body[i], 'a' + i, sizeof body[i] - 1);
        body[i][sizeof body[i] - 1] = 0;
        sbus_message_t *m;
        sbus_message_new(&m);
        sbus_message_set_body(m, body[i], strlen(body[i]));
        char id[16];
        snprintf(id, sizeof id, "id-%d", i);
        sbus_message_set_prop(m, SBUS_PROP_MESSAGE_ID, id, strlen(id));
        if (i == 0)
            sbus_message_set_prop(m, SBUS_PROP_SUBJECT, "first", 5);
        int tok;
        done_t d;
        CHECK(sbus_sender_send(s, &m, 1, &tok) == 0);
        sbus_message_free(m);
        take(&p, &tok, &d);
        CHECK(d.code == 0);
    }
    sbus_receiver_t *r = receiver(&p, "queue.1");
    sbus_message_t *m = NULL;
    CHECK(recv_one(&p, r, &m) == 0 && m);
    if (!m)
        return;
    CHECK(body_is(m, body[0]) && id_is(m, "id-0"));
    CHECK(settle_one(&p, r, m) == 0);
    uintptr_t first = (uintptr_t)m;
    sbus_message_free(m);

    m = NULL;
    CHECK(recv_one(&p, r, &m) == 0 && m);
    if (!m)
        return;
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NO_BLOCK_POOL 1 /* message.c keeps no blocks under ASan */
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define NO_BLOCK_POOL 1
#endif
#ifndef NO_BLOCK_POOL
    CHECK((uintptr_t)m == first); /* the same block again */
#else
    (void)first;
#endif
    CHECK(body_is(m, body[1]) && id_is(m, "id-1"));
    const char *subj;
    size_t n;
    CHECK(sbus_message_get_prop(m, SBUS_PROP_SUBJECT, &subj, &n) != 0); /* none of the first's */
    int64_t seq = 0;
    CHECK(sbus_message_get_field(m, SBUS_FIELD_SEQUENCE_NUMBER, &seq) == 0 && seq > 0);
    CHECK(settle_one(&p, r, m) == 0);
    sbus_message_free(m);

    /* the last one outlives its receiver and its connection */
    m = NULL;
    CHECK(recv_one(&p, r, &m) == 0 && m);
    sbus_receiver_free(r);
    sbus_sender_free(s);
    pair_close(&p);
    if (!m)
        return;
    CHECK(body_is(m, body[2]) && id_is(m, "id-2"));
    sbus_message_free(m);
}

static void test_idle_keepalive(void)
{
    pair_t p;
    pair_open_default(&p);
    /* the broker advertises 120 s; ten minutes of silence must not close
       the connection because Proton sends empty frames when ticked */
    advance(&p, 600000);
    CHECK(sbus_conn_is_open(p.c));
    CHECK(p.connects == 1);
    pair_close(&p);
}

int main(void)
{
    test_release_before_credit();
    test_token_refresh();
    test_auto_renew();
    test_auto_renew_failure_and_free();
    test_auto_renew_many();
    test_auto_renew_session();
    test_host_tokens();
    test_timeout_and_reconnect();
    test_idle_keepalive();
    test_per_op_timeout();
    test_token_retry();
    test_link_churn();
    test_websocket_and_proxy();
    test_no_reconnect_storm();
    test_frequent_cuts();
    test_no_storm_after_progress();
    test_receive_op_timeout();
    test_session_reattach();
    test_amqp_types_roundtrip();
    test_message_blocks_reused();
    if (failures)
        fprintf(stderr, "%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
