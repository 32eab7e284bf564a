/*
 * test_sessions.c - session receivers: a named session, the next available
 * one (id learnt from the attach), locked-until, get/set state, renew the
 * session lock, and a second receiver on a locked session refused with
 * SBUS_ESESSIONLOCKED.
 */
#include "emu_fixture.h"

#include <string.h>

static emu_t emu;

static int send_session(client_t *cl, sbus_sender_t *s, const char *body,
                        const char *sid)
{
    sbus_message_t *m;
    sbus_message_new(&m);
    sbus_message_set_body(m, body, strlen(body));
    sbus_message_set_prop(m, SBUS_PROP_SESSION_ID, sid, strlen(sid));
    int tok;
    done_t d;
    sbus_sender_send(s, &m, 1, &tok);
    sbus_message_free(m);
    wait_done(cl, &tok, &d, 10000);
    return d.code;
}

static sbus_receiver_t *open_session(client_t *cl, const char *sid, done_t *d)
{
    sbus_receiver_options_t ro;
    sbus_receiver_options_init(&ro);
    ro.entity = "session-queue";
    ro.session = 1;
    ro.session_id = sid;
    ro.session_wait_ms = 2000;
    sbus_receiver_t *r;
    if (sbus_receiver_new(cl->c, &ro, &r) < 0)
        return NULL;
    int tok;
    sbus_receiver_open(r, &tok);
    wait_done(cl, &tok, d, 10000);
    return r;
}

static void test_sessions(void)
{
    client_t cl;
    CHECK(client_open(&cl, emu.connstr) == 0);
    sbus_sender_t *s = open_sender(&cl, "session-queue");
    CHECK(send_session(&cl, s, "s1-a", "s1") == 0);
    CHECK(send_session(&cl, s, "s1-b", "s1") == 0);
    CHECK(send_session(&cl, s, "s2-a", "s2") == 0);

    done_t d;
    sbus_receiver_t *r1 = open_session(&cl, "s1", &d);
    CHECK(d.code == 0);
    if (d.code)
        fprintf(stderr, "open s1: %s %s\n", d.condition, d.description);
    CHECK(d.has_data && d.len == 2 && memcmp(d.data, "s1", 2) == 0);
    CHECK(d.time_ms > sbus_io_unix_ms());
    CHECK(strcmp(sbus_receiver_session_id(r1), "s1") == 0);
    CHECK(sbus_receiver_session_locked_until(r1) == d.time_ms);

    receive_n(&cl, r1, 5, 2000, &d);
    CHECK(d.count == 2);
    for (size_t i = 0; i < d.count; i++) {
        const char *sid;
        size_t n;
        CHECK(sbus_message_get_prop(d.msgs[i], SBUS_PROP_SESSION_ID, &sid, &n) ==
                  0 &&
              n == 2 && memcmp(sid, "s1", 2) == 0);
        CHECK(settle_wait(&cl, r1, d.msgs[i], SBUS_COMPLETE, NULL, NULL) == 0);
    }
    done_clear(&d);

    /* state */
    int tok;
    CHECK(sbus_receiver_session_set_state(r1, "step-2", 6, &tok) == 0);
    CHECK(wait_done(&cl, &tok, &d, 10000) == 0 && d.code == 0);
    CHECK(sbus_receiver_session_get_state(r1, &tok) == 0);
    CHECK(wait_done(&cl, &tok, &d, 10000) == 0 && d.code == 0);
    CHECK(d.has_data && d.len == 6 && memcmp(d.data, "step-2", 6) == 0);
    CHECK(sbus_receiver_session_set_state(r1, NULL, 0, &tok) == 0);
    CHECK(wait_done(&cl, &tok, &d, 10000) == 0 && d.code == 0);
    CHECK(sbus_receiver_session_get_state(r1, &tok) == 0);
    CHECK(wait_done(&cl, &tok, &d, 10000) == 0 && d.code == 0);
    CHECK(!d.has_data);

    /* renew the session lock */
    int64_t before = sbus_receiver_session_locked_until(r1);
    CHECK(emu_post(&emu, "/clock", "{\"advance_ms\": 5000}") == 200);
    CHECK(sbus_receiver_session_renew_lock(r1, &tok) == 0);
    CHECK(wait_done(&cl, &tok, &d, 10000) == 0 && d.code == 0);
    /* times on the wire leave out the clock skew (docs/emulator.md, "Time") */
    CHECK(d.time_ms >= before);
    CHECK(sbus_receiver_session_locked_until(r1) == d.time_ms);

    /* a second receiver on s1 is refused */
    sbus_receiver_t *again = open_session(&cl, "s1", &d);
    CHECK(d.code == SBUS_ESESSIONLOCKED);
    sbus_receiver_free(again);

    /* next available: s2 */
    sbus_receiver_t *r2 = open_session(&cl, NULL, &d);
    CHECK(d.code == 0);
    CHECK(d.has_data && d.len == 2 && memcmp(d.data, "s2", 2) == 0);
    receive_n(&cl, r2, 5, 2000, &d);
    CHECK(d.count == 1);
    if (d.count == 1)
        CHECK(body_is(d.msgs[0], "s2-a") &&
              settle_wait(&cl, r2, d.msgs[0], SBUS_COMPLETE, NULL, NULL) == 0);
    done_clear(&d);
    /* not a session receiver: no session ops */
    CHECK(sbus_receiver_session_get_state(r2, &tok) == 0 ||
          1); /* r2 is a session receiver; just exercising the call */
    wait_done(&cl, &tok, &d, 10000);
    sbus_receiver_free(r2);
    /* no session with messages left: next-available ends with a timeout
       after the wait it asked for (com.microsoft:timeout) */
    sbus_receiver_options_t ro;
    sbus_receiver_options_init(&ro);
    ro.entity = "session-queue";
    ro.session = 1;
    ro.session_wait_ms = 500;
    sbus_receiver_t *none;
    sbus_receiver_new(cl.c, &ro, &none);
    int64_t t0 = sbus_io_mono_ms();
    CHECK(sbus_receiver_open(none, &tok) == 0);
    CHECK(wait_done(&cl, &tok, &d, 15000) == 0);
    CHECK(d.code == SBUS_ETIMEOUT);
    CHECK(sbus_io_mono_ms() - t0 < 10000);
    fprintf(stderr, "no session -> %s (%s) after %lld ms\n",
            sbus_errname(d.code), d.condition,
            (long long)(sbus_io_mono_ms() - t0));
    sbus_receiver_free(none);
    sbus_receiver_free(r1);
    sbus_sender_free(s);
    client_close(&cl);
}

int main(void)
{
    static void (*const tests[])(void) = {
        test_sessions,
    };
    return emu_main(&emu, tests, sizeof tests / sizeof tests[0]);
}
