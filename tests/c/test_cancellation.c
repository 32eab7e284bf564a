/*
 * test_cancellation.c - exactly one completion per accepted operation on
 * the paths that are not success: cancel (SBUS_ECANCELLED, credit
 * withdrawn), receiver free and close (SBUS_ECLOSED), connection abort
 * (everything pending completes with SBUS_ECLOSED), and an unknown token
 * (SBUS_ENOENT, no event).
 */
#include "emu_fixture.h"

#include <string.h>

static emu_t emu;

/* Counts DONE events per token among `n` tokens until all arrived or
 * timeout; returns how many arrived. */
static int collect(client_t *cl, int *tokens, int *seen, int *codes, int n,
                   int64_t timeout_ms)
{
    int64_t end = sbus_io_mono_ms() + timeout_ms;
    int got = 0;
    while (sbus_io_mono_ms() < end) {
        sbus_event_t ev;
        while (sbus_io_next_event(cl->io, &ev)) {
            if (ev.type != SBUS_EV_DONE)
                continue;
            for (size_t i = 0; ev.messages && i < ev.count; i++)
                sbus_message_free(ev.messages[i]);
            for (int i = 0; i < n; i++)
                if (ev.token == &tokens[i]) {
                    seen[i]++;
                    codes[i] = ev.error ? ev.error->code : 0;
                    got++;
                }
        }
        int all = 1;
        for (int i = 0; i < n; i++)
            all &= seen[i] > 0;
        if (all)
            break;
        sbus_io_wait(cl->io, 50);
    }
    return got;
}

static void test_cancel_receive(void)
{
    client_t cl;
    CHECK(client_open(&cl, emu.connstr) == 0);
    /* opening an open connection completes at once (it hung before) */
    int again;
    done_t od;
    CHECK(sbus_conn_open(cl.c, &again) == 0);
    CHECK(wait_done(&cl, &again, &od, 2000) == 0 && od.code == 0);
    drain_queue(&cl, "test-queue");
    sbus_receiver_t *r = open_receiver(&cl, "test-queue", SBUS_PEEK_LOCK);
    int tok[1], seen[1] = {0}, codes[1];
    CHECK(sbus_receiver_receive(r, 5, -1, &tok[0]) == 0);
    sbus_io_wait(cl.io, 200); /* let the credit reach the broker */
    CHECK(sbus_conn_cancel(cl.c, &tok[0]) == 0);
    CHECK(sbus_conn_cancel(cl.c, &tok[0]) == SBUS_ENOENT);
    collect(&cl, tok, seen, codes, 1, 2000);
    CHECK(seen[0] == 1 && codes[0] == SBUS_ECANCELLED);
    /* a message sent now is not locked for the cancelled call */
    sbus_sender_t *s = open_sender(&cl, "test-queue");
    CHECK(send_text(&cl, s, "after cancel", NULL) == 0);
    sbus_receiver_t *r2 = open_receiver(&cl, "test-queue", SBUS_PEEK_LOCK);
    done_t d;
    receive_n(&cl, r2, 1, 3000, &d);
    CHECK(d.count == 1);
    if (d.count) {
        int64_t dc = -1;
        sbus_message_get_field(d.msgs[0], SBUS_FIELD_DELIVERY_COUNT, &dc);
        CHECK(dc == 0);
        CHECK(settle_wait(&cl, r2, d.msgs[0], SBUS_COMPLETE, NULL, NULL) == 0);
    }
    done_clear(&d);
    sbus_receiver_free(r2);
    sbus_sender_free(s);
    sbus_receiver_free(r);
    client_close(&cl);
}

static void test_free_and_close_complete_pending(void)
{
    client_t cl;
    CHECK(client_open(&cl, emu.connstr) == 0);
    sbus_receiver_options_t ro;
    sbus_receiver_options_init(&ro);
    ro.entity = "test-queue-2";
    sbus_receiver_t *r1, *r2;
    sbus_receiver_new(cl.c, &ro, &r1);
    sbus_receiver_new(cl.c, &ro, &r2);
    int tok[3], seen[3] = {0}, codes[3];
    CHECK(sbus_receiver_receive(r1, 1, -1, &tok[0]) == 0);
    CHECK(sbus_receiver_receive(r2, 1, -1, &tok[1]) == 0);
    sbus_io_wait(cl.io, 100);
    sbus_receiver_free(r1);
    CHECK(sbus_receiver_close(r2, &tok[2]) == 0);
    collect(&cl, tok, seen, codes, 3, 3000);
    CHECK(seen[0] == 1 && codes[0] == SBUS_ECLOSED);
    CHECK(seen[1] == 1 && codes[1] == SBUS_ECLOSED);
    CHECK(seen[2] == 1 && codes[2] == 0);
    sbus_receiver_free(r2);
    client_close(&cl);
}

/* Closing a sender with sends in flight: each send completes (accepted,
 * or SBUS_ECLOSED), then the close (regression: sends in flight at the
 * close were requeued on a closed sender and never completed). */
static void test_close_sender_with_sends_in_flight(void)
{
    client_t cl;
    CHECK(client_open(&cl, emu.connstr) == 0);
    sbus_sender_t *s = open_sender(&cl, "test-queue-2");
    CHECK(send_text(&cl, s, "attach first", NULL) == 0);
    sbus_message_t *m;
    sbus_message_new(&m);
    int tok[4], seen[4] = {0}, codes[4];
    for (int i = 0; i < 3; i++)
        CHECK(sbus_sender_send(s, &m, 1, &tok[i]) == 0);
    sbus_message_free(m);
    CHECK(sbus_sender_close(s, &tok[3]) == 0);
    collect(&cl, tok, seen, codes, 4, 5000);
    for (int i = 0; i < 4; i++)
        CHECK(seen[i] == 1);
    for (int i = 0; i < 3; i++)
        CHECK(codes[i] == 0 || codes[i] == SBUS_ECLOSED);
    CHECK(codes[3] == 0);
    sbus_sender_free(s);
    drain_queue(&cl, "test-queue-2");
    client_close(&cl);
}

static void test_abort_completes_everything(void)
{
    client_t cl;
    CHECK(client_open(&cl, emu.connstr) == 0);
    sbus_receiver_t *r = open_receiver(&cl, "test-queue-2", SBUS_PEEK_LOCK);
    sbus_sender_t *s = open_sender(&cl, "test-queue-2");
    sbus_message_t *m;
    sbus_message_new(&m);
    int tok[3], seen[3] = {0}, codes[3];
    CHECK(sbus_receiver_receive(r, 1, -1, &tok[0]) == 0);
    CHECK(sbus_sender_send(s, &m, 1, &tok[1]) == 0);
    CHECK(sbus_receiver_peek(r, 1, 1, &tok[2]) == 0);
    sbus_message_free(m);
    sbus_conn_abort(cl.c, "test abort");
    /* events stay pullable after abort */
    sbus_event_t ev;
    int disconnects = 0;
    while (sbus_conn_next_event(cl.c, &ev)) {
        if (ev.type == SBUS_EV_DISCONNECT)
            disconnects++;
        for (int i = 0; i < 3; i++)
            if (ev.type == SBUS_EV_DONE && ev.token == &tok[i]) {
                seen[i]++;
                codes[i] = ev.error ? ev.error->code : 0;
            }
        for (size_t i = 0; ev.messages && i < ev.count; i++)
            sbus_message_free(ev.messages[i]);
    }
    for (int i = 0; i < 3; i++)
        CHECK(seen[i] == 1 && codes[i] == SBUS_ECLOSED);
    CHECK(disconnects == 1);
    /* nothing new is accepted any more, but closing still completes */
    CHECK(sbus_receiver_receive(r, 1, 10, &tok[0]) == SBUS_ESTATE);
    m = NULL;
    sbus_message_new(&m);
    CHECK(sbus_sender_send(s, &m, 1, &tok[1]) == SBUS_ESTATE);
    sbus_message_free(m);
    CHECK(sbus_conn_open(cl.c, &tok[0]) == SBUS_ESTATE);
    CHECK(sbus_receiver_close(r, &tok[2]) == 0);
    int closed = 0;
    while (sbus_conn_next_event(cl.c, &ev))
        closed += ev.type == SBUS_EV_DONE && ev.token == &tok[2] && !ev.error;
    CHECK(closed == 1);
    sbus_sender_free(s);
    sbus_receiver_free(r);
    sbus_io_free(cl.io);
    sbus_conn_free(cl.c);
}

int main(void)
{
    static void (*const tests[])(void) = {
        test_cancel_receive,
        test_free_and_close_complete_pending,
        test_close_sender_with_sends_in_flight,
        test_abort_completes_everything,
    };
    return emu_main(&emu, tests, sizeof tests / sizeof tests[0]);
}
