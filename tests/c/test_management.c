/*
 * test_management.c - $management operations on the sender side and
 * topic receivers: schedule (sequence numbers back, the messages visible
 * to peek as scheduled, enqueued when their time comes), cancel
 * scheduled, and the entity paths of subscriptions.
 */
#include "emu_fixture.h"

#include <string.h>

static emu_t emu;

static sbus_message_t *text(const char *body)
{
    sbus_message_t *m;
    sbus_message_new(&m);
    sbus_message_set_body(m, body, strlen(body));
    return m;
}

static void test_schedule_and_cancel(void)
{
    client_t cl;
    CHECK(client_open(&cl, emu.connstr) == 0);
    drain_queue(&cl, "test-queue");
    sbus_sender_t *s = open_sender(&cl, "test-queue");
    sbus_message_t *ms[2] = {text("later-1"), text("later-2")};
    int64_t when = sbus_io_unix_ms() + 60000;
    int tok;
    done_t d;
    CHECK(sbus_sender_schedule(s, ms, 2, when, &tok) == 0);
    CHECK(wait_done(&cl, &tok, &d, 10000) == 0);
    CHECK(d.code == 0 && d.count == 2);
    if (d.code)
        fprintf(stderr, "schedule: %s %s\n", d.condition, d.description);
    int64_t seqs[2] = {d.seqs[0], d.seqs[1]};
    CHECK(seqs[0] > 0 && seqs[1] > seqs[0]);
    sbus_message_free(ms[0]);
    sbus_message_free(ms[1]);

    sbus_receiver_t *r = open_receiver(&cl, "test-queue", SBUS_PEEK_LOCK);
    /* scheduled: visible to peek with state 2, not to receive */
    CHECK(sbus_receiver_peek(r, 10, seqs[0], &tok) == 0);
    CHECK(wait_done(&cl, &tok, &d, 10000) == 0);
    CHECK(d.code == 0 && d.count == 2);
    if (d.count >= 1) {
        int64_t state = -1, sched = 0;
        sbus_message_get_field(d.msgs[0], SBUS_FIELD_STATE, &state);
        sbus_message_get_field(d.msgs[0], SBUS_FIELD_SCHEDULED_ENQUEUE_TIME,
                               &sched);
        CHECK(state == 2);
        CHECK(sched == when);
    }
    done_clear(&d);
    receive_n(&cl, r, 1, 300, &d);
    CHECK(d.count == 0);
    done_clear(&d);

    /* cancel the first; the second arrives when the clock gets there */
    CHECK(sbus_sender_cancel_scheduled(s, seqs, 1, &tok) == 0);
    CHECK(wait_done(&cl, &tok, &d, 10000) == 0);
    CHECK(d.code == 0);
    CHECK(emu_post(&emu, "/clock", "{\"advance_ms\": 61000}") == 200);
    receive_n(&cl, r, 5, 2000, &d);
    CHECK(d.count == 1);
    if (d.count == 1) {
        CHECK(body_is(d.msgs[0], "later-2"));
        CHECK(settle_wait(&cl, r, d.msgs[0], SBUS_COMPLETE, NULL, NULL) == 0);
    }
    done_clear(&d);
    sbus_receiver_free(r);
    sbus_sender_free(s);
    client_close(&cl);
}

static void test_topic_subscription(void)
{
    client_t cl;
    CHECK(client_open(&cl, emu.connstr) == 0);
    sbus_receiver_options_t ro;
    sbus_receiver_options_init(&ro);
    ro.entity = "topic.1";
    ro.subscription = "all";
    ro.mode = SBUS_RECEIVE_AND_DELETE;
    sbus_receiver_t *r;
    sbus_receiver_new(cl.c, &ro, &r);
    done_t d;
    do { /* empty the subscription first */
        receive_n(&cl, r, 50, 300, &d);
        size_t n = d.count;
        done_clear(&d);
        if (!n)
            break;
    } while (1);
    sbus_sender_t *s = open_sender(&cl, "topic.1");
    CHECK(send_text(&cl, s, "to all", NULL) == 0);
    receive_n(&cl, r, 5, 3000, &d);
    CHECK(d.code == 0 && d.count == 1);
    if (d.count == 1)
        CHECK(body_is(d.msgs[0], "to all"));
    done_clear(&d);
    sbus_sender_free(s);
    sbus_receiver_free(r);
    client_close(&cl);
}

static void test_not_found(void)
{
    client_t cl;
    CHECK(client_open(&cl, emu.connstr) == 0);
    sbus_sender_t *s = open_sender(&cl, "no-such-queue");
    int rc = send_text(&cl, s, "x", NULL);
    CHECK(rc == SBUS_ENOTFOUND);
    sbus_sender_free(s);
    client_close(&cl);
}

int main(void)
{
    static void (*const tests[])(void) = {
        test_schedule_and_cancel,
        test_topic_subscription,
        test_not_found,
    };
    return emu_main(&emu, tests, sizeof tests / sizeof tests[0]);
}
