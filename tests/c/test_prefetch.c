/*
 * test_prefetch.c - credit: with prefetch N the receiver keeps messages
 * ahead and a receive takes them at once; without prefetch a receive asks
 * for exactly what it wants and leaves nothing locked for nobody.
 */
#include "emu_fixture.h"

#include <string.h>

static emu_t emu;

static sbus_receiver_t *receiver(client_t *cl, const char *q, uint32_t prefetch)
{
    sbus_receiver_options_t ro;
    sbus_receiver_options_init(&ro);
    ro.entity = q;
    ro.prefetch = prefetch;
    sbus_receiver_t *r = NULL;
    sbus_receiver_new(cl->c, &ro, &r);
    return r;
}

static void test_prefetch_buffers(void)
{
    client_t cl;
    CHECK(client_open(&cl, emu.connstr) == 0);
    drain_queue(&cl, "test-queue");
    sbus_sender_t *s = open_sender(&cl, "test-queue");
    for (int i = 0; i < 3; i++)
        CHECK(send_text(&cl, s, "pf", NULL) == 0);
    sbus_receiver_t *r = receiver(&cl, "test-queue", 5);
    done_t d;
    receive_n(&cl, r, 1, 3000, &d);
    CHECK(d.count == 1);
    for (size_t i = 0; i < d.count; i++)
        CHECK(settle_wait(&cl, r, d.msgs[i], SBUS_COMPLETE, NULL, NULL) == 0);
    done_clear(&d);
    /* the other two are already here: a receive with no wait gets them */
    receive_n(&cl, r, 5, 0, &d);
    CHECK(d.count == 2);
    for (size_t i = 0; i < d.count; i++)
        CHECK(settle_wait(&cl, r, d.msgs[i], SBUS_COMPLETE, NULL, NULL) == 0);
    done_clear(&d);
    sbus_receiver_free(r);
    sbus_sender_free(s);
    client_close(&cl);
}

static void test_no_prefetch_takes_only_what_it_asks(void)
{
    client_t cl;
    CHECK(client_open(&cl, emu.connstr) == 0);
    drain_queue(&cl, "test-queue");
    sbus_sender_t *s = open_sender(&cl, "test-queue");
    for (int i = 0; i < 3; i++)
        CHECK(send_text(&cl, s, "np", NULL) == 0);
    sbus_receiver_t *r1 = receiver(&cl, "test-queue", 0);
    done_t d;
    receive_n(&cl, r1, 1, 3000, &d);
    CHECK(d.count == 1);
    /* keep that one locked; the other two must be free for r2 */
    sbus_receiver_t *r2 = receiver(&cl, "test-queue", 0);
    done_t d2;
    receive_n(&cl, r2, 5, 2000, &d2);
    CHECK(d2.count == 2);
    for (size_t i = 0; i < d2.count; i++) {
        int64_t dc = -1;
        sbus_message_get_field(d2.msgs[i], SBUS_FIELD_DELIVERY_COUNT, &dc);
        CHECK(dc == 0);
        CHECK(settle_wait(&cl, r2, d2.msgs[i], SBUS_COMPLETE, NULL, NULL) == 0);
    }
    done_clear(&d2);
    if (d.count)
        CHECK(settle_wait(&cl, r1, d.msgs[0], SBUS_COMPLETE, NULL, NULL) == 0);
    done_clear(&d);
    sbus_receiver_free(r1);
    sbus_receiver_free(r2);
    sbus_sender_free(s);
    client_close(&cl);
}

int main(void)
{
    static void (*const tests[])(void) = {
        test_prefetch_buffers,
        test_no_prefetch_takes_only_what_it_asks,
    };
    return emu_main(&emu, tests, sizeof tests / sizeof tests[0]);
}
