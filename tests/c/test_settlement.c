/*
 * test_settlement.c - every way to settle a peek-locked message, and the
 * errors: abandon (redelivered, delivery count up), defer (then received
 * by sequence number and completed through update-disposition),
 * dead-letter (reason and description reach the dead-letter queue), lock
 * expiry (settle and renew give SBUS_ELOCKLOST), renew-lock, peek
 * (PEEKED messages refuse settlement), settle twice.
 */
#include "emu_fixture.h"

#include <string.h>

static emu_t emu;

typedef struct fixture {
    client_t cl;          /* connection */
    sbus_sender_t *s;     /* sender to the queue */
    sbus_receiver_t *r;   /* peek-lock receiver on it */
} fixture_t;

static void setup(fixture_t *f, const char *queue)
{
    CHECK(client_open(&f->cl, emu.connstr) == 0);
    drain_queue(&f->cl, queue);
    sbus_sender_options_t so;
    sbus_sender_options_init(&so);
    so.entity = queue;
    CHECK(sbus_sender_new(f->cl.c, &so, &f->s) == 0);
    sbus_receiver_options_t ro;
    sbus_receiver_options_init(&ro);
    ro.entity = queue;
    CHECK(sbus_receiver_new(f->cl.c, &ro, &f->r) == 0);
}

static void teardown(fixture_t *f)
{
    sbus_receiver_free(f->r);
    sbus_sender_free(f->s);
    client_close(&f->cl);
}

/* Receives exactly one message into *m (owned by the caller). */
static sbus_message_t *receive_one(fixture_t *f)
{
    done_t d;
    receive_n(&f->cl, f->r, 1, 5000, &d);
    CHECK(d.code == 0 && d.count == 1);
    sbus_message_t *m = d.count ? d.msgs[0] : NULL;
    if (d.count)
        d.count = 0; /* keep the message */
    done_clear(&d);
    return m;
}

static void test_abandon(void)
{
    fixture_t f;
    setup(&f, "test-queue");
    CHECK(send_text(&f.cl, f.s, "abandon me", NULL) == 0);
    sbus_message_t *m = receive_one(&f);
    int64_t dc = -1;
    if (m) {
        sbus_message_get_field(m, SBUS_FIELD_DELIVERY_COUNT, &dc);
        CHECK(dc == 0);
        CHECK(settle_wait(&f.cl, f.r, m, SBUS_ABANDON, NULL, NULL) == 0);
        CHECK(sbus_message_settle_state(m) == SBUS_MSG_SETTLED);
        CHECK(settle_wait(&f.cl, f.r, m, SBUS_ABANDON, NULL, NULL) ==
              SBUS_ESETTLED);
        sbus_message_free(m);
    }
    m = receive_one(&f);
    if (m) {
        CHECK(body_is(m, "abandon me"));
        sbus_message_get_field(m, SBUS_FIELD_DELIVERY_COUNT, &dc);
        CHECK(dc == 1);
        CHECK(settle_wait(&f.cl, f.r, m, SBUS_COMPLETE, NULL, NULL) == 0);
        sbus_message_free(m);
    }
    teardown(&f);
}

static void test_defer_and_receive_deferred(void)
{
    fixture_t f;
    setup(&f, "test-queue");
    CHECK(send_text(&f.cl, f.s, "defer me", NULL) == 0);
    sbus_message_t *m = receive_one(&f);
    int64_t seq = -1;
    if (m) {
        sbus_message_get_field(m, SBUS_FIELD_SEQUENCE_NUMBER, &seq);
        CHECK(settle_wait(&f.cl, f.r, m, SBUS_DEFER, NULL, NULL) == 0);
        sbus_message_free(m);
    }
    /* not delivered again by a plain receive */
    done_t d;
    receive_n(&f.cl, f.r, 1, 500, &d);
    CHECK(d.code == 0 && d.count == 0);
    done_clear(&d);
    /* but by its sequence number */
    int tok;
    CHECK(sbus_receiver_receive_deferred(f.r, &seq, 1, &tok) == 0);
    CHECK(wait_done(&f.cl, &tok, &d, 10000) == 0);
    CHECK(d.code == 0 && d.count == 1);
    if (d.code)
        fprintf(stderr, "receive_deferred: %s %s\n", d.condition, d.description);
    if (d.count == 1) {
        sbus_message_t *dm = d.msgs[0];
        int64_t state = -1;
        CHECK(body_is(dm, "defer me"));
        sbus_message_get_field(dm, SBUS_FIELD_STATE, &state);
        CHECK(state == 1);
        uint8_t lock[16];
        CHECK(sbus_message_lock_token(dm, lock) == 0);
        CHECK(settle_wait(&f.cl, f.r, dm, SBUS_COMPLETE, NULL, NULL) == 0);
    }
    done_clear(&d);
    /* gone: asking again fails with message-not-found */
    CHECK(sbus_receiver_receive_deferred(f.r, &seq, 1, &tok) == 0);
    CHECK(wait_done(&f.cl, &tok, &d, 10000) == 0);
    CHECK(d.code == SBUS_EMSGNOTFOUND);
    done_clear(&d);
    teardown(&f);
}

static void test_dead_letter(void)
{
    fixture_t f;
    setup(&f, "test-queue-2");
    drain_queue(&f.cl, "test-queue-2/$DeadLetterQueue");
    CHECK(send_text(&f.cl, f.s, "poison", NULL) == 0);
    sbus_message_t *m = receive_one(&f);
    if (m) {
        CHECK(settle_wait(&f.cl, f.r, m, SBUS_DEAD_LETTER, "BadInput",
                          "could not parse") == 0);
        sbus_message_free(m);
    }
    sbus_receiver_options_t ro;
    sbus_receiver_options_init(&ro);
    ro.entity = "test-queue-2";
    ro.sub_queue = SBUS_SUBQ_DEAD_LETTER;
    sbus_receiver_t *dlq;
    CHECK(sbus_receiver_new(f.cl.c, &ro, &dlq) == 0);
    done_t d;
    receive_n(&f.cl, dlq, 1, 5000, &d);
    CHECK(d.code == 0 && d.count == 1);
    if (d.count == 1) {
        const char *s;
        size_t n;
        CHECK(body_is(d.msgs[0], "poison"));
        CHECK(sbus_message_get_prop(d.msgs[0], SBUS_PROP_DEAD_LETTER_REASON, &s,
                                    &n) == 0 &&
              n == 8 && memcmp(s, "BadInput", 8) == 0);
        CHECK(sbus_message_get_prop(d.msgs[0], SBUS_PROP_DEAD_LETTER_DESCRIPTION,
                                    &s, &n) == 0 &&
              n == 15 && memcmp(s, "could not parse", 15) == 0);
        CHECK(settle_wait(&f.cl, dlq, d.msgs[0], SBUS_COMPLETE, NULL, NULL) == 0);
    }
    done_clear(&d);
    sbus_receiver_free(dlq);
    teardown(&f);
}

static void test_lock_lost_and_renew(void)
{
    fixture_t f;
    setup(&f, "demo"); /* LockDuration 30 s */
    CHECK(send_text(&f.cl, f.s, "renew me", NULL) == 0);
    CHECK(send_text(&f.cl, f.s, "lose me", NULL) == 0);
    done_t d;
    receive_n(&f.cl, f.r, 2, 5000, &d);
    CHECK(d.code == 0 && d.count == 2);
    if (d.count == 2) {
        int64_t before = 0, after = 0;
        sbus_message_get_field(d.msgs[0], SBUS_FIELD_LOCKED_UNTIL, &before);
        CHECK(emu_post(&emu, "/clock", "{\"advance_ms\": 20000}") == 200);
        int tok;
        done_t rd;
        CHECK(sbus_receiver_renew_lock(f.r, d.msgs[0], &tok) == 0);
        CHECK(wait_done(&f.cl, &tok, &rd, 10000) == 0);
        CHECK(rd.code == 0);
        /* times on the wire leave out the clock skew (docs/emulator.md,
           "Time"): the renewed lock ends lock-duration after the real now */
        CHECK(rd.time_ms >= before);
        sbus_message_get_field(d.msgs[0], SBUS_FIELD_LOCKED_UNTIL, &after);
        CHECK(after == rd.time_ms);
        /* 20 s more: message 1's lock (not renewed) is gone, 0's is not */
        CHECK(emu_post(&emu, "/clock", "{\"advance_ms\": 20000}") == 200);
        CHECK(settle_wait(&f.cl, f.r, d.msgs[1], SBUS_COMPLETE, NULL, NULL) ==
              SBUS_ELOCKLOST);
        CHECK(settle_wait(&f.cl, f.r, d.msgs[0], SBUS_COMPLETE, NULL, NULL) == 0);
        /* a lost lock stays lost: renewing or settling again says so */
        CHECK(sbus_receiver_renew_lock(f.r, d.msgs[1], &tok) == 0);
        CHECK(wait_done(&f.cl, &tok, &rd, 10000) == 0);
        CHECK(rd.code == SBUS_ELOCKLOST);
        CHECK(settle_wait(&f.cl, f.r, d.msgs[1], SBUS_COMPLETE, NULL, NULL) ==
              SBUS_ELOCKLOST);
    }
    done_clear(&d);
    drain_queue(&f.cl, "demo");
    teardown(&f);
}

static void test_peek(void)
{
    fixture_t f;
    setup(&f, "test-queue");
    CHECK(send_text(&f.cl, f.s, "p1", NULL) == 0);
    CHECK(send_text(&f.cl, f.s, "p2", NULL) == 0);
    int tok;
    done_t d;
    CHECK(sbus_receiver_peek(f.r, 10, 1, &tok) == 0);
    CHECK(wait_done(&f.cl, &tok, &d, 10000) == 0);
    CHECK(d.code == 0 && d.count == 2);
    if (d.count == 2) {
        CHECK(body_is(d.msgs[0], "p1") && body_is(d.msgs[1], "p2"));
        CHECK(sbus_message_settle_state(d.msgs[0]) == SBUS_MSG_PEEKED);
        uint8_t lock[16];
        CHECK(sbus_message_lock_token(d.msgs[0], lock) == SBUS_ENOENT);
        CHECK(sbus_receiver_settle(f.r, d.msgs[0], SBUS_COMPLETE, NULL, NULL,
                                   &tok) == SBUS_ESTATE);
    }
    done_clear(&d);
    /* peek again from after the last peeked: nothing new */
    CHECK(sbus_receiver_peek(f.r, 10, 0, &tok) == 0);
    CHECK(wait_done(&f.cl, &tok, &d, 10000) == 0);
    CHECK(d.code == 0 && d.count == 0);
    done_clear(&d);
    /* still there for a receive */
    receive_n(&f.cl, f.r, 2, 5000, &d);
    CHECK(d.count >= 1);
    done_clear(&d);
    teardown(&f);
}

int main(void)
{
    static void (*const tests[])(void) = {
        test_abandon,
        test_defer_and_receive_deferred,
        test_dead_letter,
        test_lock_lost_and_renew,
        test_peek,
    };
    return emu_main(&emu, tests, sizeof tests / sizeof tests[0]);
}
