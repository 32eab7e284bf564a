/*
 * test_roundtrip.c - the engine against the emulator binary: send,
 * receive, complete; a batch; receive-and-delete; an empty queue gives no
 * messages after max_wait; a wrong key gives SBUS_EAUTH.
 */
#include "emu_fixture.h"

#include <string.h>

static emu_t emu;

static sbus_message_t *text_message(const char *body, const char *id)
{
    sbus_message_t *m;
    sbus_message_new(&m);
    sbus_message_set_body(m, body, strlen(body));
    if (id)
        sbus_message_set_prop(m, SBUS_PROP_MESSAGE_ID, id, strlen(id));
    return m;
}

static void test_send_receive_complete(void)
{
    client_t cl;
    CHECK(client_open(&cl, emu.connstr) == 0);
    drain_queue(&cl, "queue.1");
    sbus_sender_t *s = open_sender(&cl, "queue.1");
    CHECK(s != NULL);
    sbus_message_t *m = text_message("hello", "id-1");
    sbus_value_t v = {.type = SBUS_VAL_INT, .u.i = 42};
    sbus_message_set_property(m, "answer", 6, &v);
    int tok;
    done_t d;
    CHECK(sbus_sender_send(s, &m, 1, &tok) == 0);
    sbus_message_free(m);
    CHECK(wait_done(&cl, &tok, &d, 10000) == 0);
    CHECK(d.code == 0);
    if (d.code)
        fprintf(stderr, "send: %s %s\n", d.condition, d.description);
    CHECK(sbus_sender_max_message_size(s) > 0);

    sbus_receiver_t *r = open_receiver(&cl, "queue.1", SBUS_PEEK_LOCK);
    CHECK(r != NULL);
    CHECK(sbus_receiver_receive(r, 10, 5000, &tok) == 0);
    CHECK(wait_done(&cl, &tok, &d, 10000) == 0);
    CHECK(d.code == 0);
    CHECK(d.count == 1);
    if (d.count == 1) {
        sbus_message_t *got = d.msgs[0];
        const char *id;
        size_t idn;
        CHECK(body_is(got, "hello"));
        CHECK(sbus_message_get_prop(got, SBUS_PROP_MESSAGE_ID, &id, &idn) == 0 &&
              idn == 4 && memcmp(id, "id-1", 4) == 0);
        int64_t seq, lu;
        CHECK(sbus_message_get_field(got, SBUS_FIELD_SEQUENCE_NUMBER, &seq) == 0);
        CHECK(sbus_message_get_field(got, SBUS_FIELD_LOCKED_UNTIL, &lu) == 0);
        uint8_t lock[16];
        CHECK(sbus_message_lock_token(got, lock) == 0);
        CHECK(sbus_message_property_count(got) == 1);
        CHECK(sbus_message_settle_state(got) == SBUS_MSG_UNSETTLED);
        int stok;
        done_t sd;
        CHECK(sbus_receiver_settle(r, got, SBUS_COMPLETE, NULL, NULL, &stok) == 0);
        CHECK(wait_done(&cl, &stok, &sd, 10000) == 0);
        CHECK(sd.code == 0);
        if (sd.code)
            fprintf(stderr, "complete: %s %s\n", sd.condition, sd.description);
        CHECK(sbus_receiver_settle(r, got, SBUS_COMPLETE, NULL, NULL, &stok) ==
              SBUS_ESETTLED);
    }
    done_clear(&d);
    /* completed: nothing left */
    CHECK(sbus_receiver_receive(r, 10, 500, &tok) == 0);
    CHECK(wait_done(&cl, &tok, &d, 10000) == 0);
    CHECK(d.code == 0 && d.count == 0);
    done_clear(&d);
    sbus_receiver_free(r);
    sbus_sender_free(s);
    client_close(&cl);
}

static void test_batch_and_rad(void)
{
    client_t cl;
    CHECK(client_open(&cl, emu.connstr) == 0);
    drain_queue(&cl, "demo");
    sbus_sender_t *s = open_sender(&cl, "demo");
    sbus_message_t *ms[3] = {text_message("a", NULL), text_message("b", NULL),
                             text_message("c", NULL)};
    int tok;
    done_t d;
    CHECK(sbus_sender_send(s, ms, 3, &tok) == 0);
    CHECK(wait_done(&cl, &tok, &d, 10000) == 0 && d.code == 0);
    if (d.code)
        fprintf(stderr, "batch: %s %s\n", d.condition, d.description);
    sbus_batch_t *b;
    sbus_batch_new(0, &b);
    CHECK(sbus_batch_add(b, ms[0]) == 0);
    CHECK(sbus_batch_add(b, ms[1]) == 0);
    CHECK(sbus_batch_count(b) == 2);
    CHECK(sbus_sender_send_batch(s, b, &tok) == 0);
    CHECK(wait_done(&cl, &tok, &d, 10000) == 0 && d.code == 0);
    sbus_batch_free(b);
    for (int i = 0; i < 3; i++)
        sbus_message_free(ms[i]);

    sbus_receiver_t *r = open_receiver(&cl, "demo", SBUS_RECEIVE_AND_DELETE);
    size_t total = 0;
    const char *want[5] = {"a", "b", "c", "a", "b"};
    for (int round = 0; round < 10 && total < 5; round++) {
        CHECK(sbus_receiver_receive(r, 5, 2000, &tok) == 0);
        CHECK(wait_done(&cl, &tok, &d, 10000) == 0 && d.code == 0);
        for (size_t i = 0; i < d.count && total < 5; i++, total++) {
            CHECK(body_is(d.msgs[i], want[total]));
            CHECK(sbus_message_settle_state(d.msgs[i]) == SBUS_MSG_PRESETTLED);
            int st;
            CHECK(sbus_receiver_settle(r, d.msgs[i], SBUS_COMPLETE, NULL, NULL,
                                       &st) == SBUS_ESTATE);
        }
        done_clear(&d);
    }
    CHECK(total == 5);
    sbus_receiver_free(r);
    sbus_sender_free(s);
    client_close(&cl);
}

/* A batch larger than the peer's max-frame-size (64 KiB here): the batch
 * transfer spans frames, and the frame that carries the rewritten
 * message-format must still fit the limit (regression: 100 x 1 KB hung). */
static void test_big_batch(void)
{
    client_t cl;
    CHECK(client_open(&cl, emu.connstr) == 0);
    drain_queue(&cl, "test-queue-2");
    sbus_sender_t *s = open_sender(&cl, "test-queue-2");
    sbus_message_t *ms[100];
    char body[1024];
    memset(body, 'b', sizeof body);
    for (int i = 0; i < 100; i++) {
        sbus_message_new(&ms[i]);
        sbus_message_set_body(ms[i], body, sizeof body);
    }
    int tok;
    done_t d;
    CHECK(sbus_sender_send(s, ms, 100, &tok) == 0);
    CHECK(wait_done(&cl, &tok, &d, 10000) == 0);
    CHECK(d.code == 0);
    if (d.code)
        fprintf(stderr, "big batch: %s %s\n", d.condition, d.description);
    for (int i = 0; i < 100; i++)
        sbus_message_free(ms[i]);
    sbus_receiver_t *r = open_receiver(&cl, "test-queue-2", SBUS_RECEIVE_AND_DELETE);
    size_t total = 0;
    for (int round = 0; round < 20 && total < 100; round++) {
        receive_n(&cl, r, 100, 1000, &d);
        for (size_t i = 0; i < d.count; i++) {
            const void *p;
            size_t n;
            CHECK(sbus_message_body_at(d.msgs[i], 0, &p, &n) == 0 && n == 1024);
        }
        total += d.count;
        done_clear(&d);
    }
    CHECK(total == 100);
    if (total != 100)
        fprintf(stderr, "big batch: received %zu of 100\n", total);
    sbus_receiver_free(r);
    sbus_sender_free(s);
    client_close(&cl);
}

static int g_closed_fd = -1, g_closes;

static void on_close(void *ud, int fd)
{
    (void)ud;
    g_closed_fd = fd;
    g_closes++;
}

static void test_empty_queue(void)
{
    client_t cl;
    CHECK(client_open(&cl, emu.connstr) == 0);
    int fd = sbus_io_fd(cl.io);
    CHECK(fd >= 0);
    sbus_io_set_close_hook(cl.io, on_close, NULL);
    drain_queue(&cl, "test-queue");
    sbus_receiver_t *r = open_receiver(&cl, "test-queue", SBUS_PEEK_LOCK);
    int tok;
    done_t d;
    int64_t t0 = sbus_io_mono_ms();
    CHECK(sbus_receiver_receive(r, 5, 700, &tok) == 0);
    CHECK(wait_done(&cl, &tok, &d, 10000) == 0);
    int64_t took = sbus_io_mono_ms() - t0;
    CHECK(d.code == 0 && d.count == 0);
    CHECK(took >= 650 && took < 5000);
    sbus_receiver_free(r);
    client_close(&cl);
    /* the driver told its hook before closing the socket, once */
    CHECK(g_closes == 1 && g_closed_fd == fd);
}

/* A received message larger than the engine's 64 KiB read chunk and
 * Proton's input buffer arrives whole; then a received message (its body
 * and strings live in the message's own allocation) is changed, copied
 * and freed: the changes stick, the copy is independent, and the memory
 * checkers see every byte freed once. */
static void test_large_message_and_edits(void)
{
    client_t cl;
    CHECK(client_open(&cl, emu.connstr) == 0);
    drain_queue(&cl, "queue.1");
    sbus_sender_t *s = open_sender(&cl, "queue.1");
    enum { BIG = 200000 };
    static char big[BIG];
    for (size_t i = 0; i < BIG; i++)
        big[i] = (char)('a' + (i * 7 + i / 251) % 26);
    sbus_message_t *ms[2];
    sbus_message_new(&ms[0]);
    sbus_message_set_body(ms[0], big, BIG);
    sbus_message_set_prop(ms[0], SBUS_PROP_MESSAGE_ID, "big-1", 5);
    ms[1] = text_message("small", "small-1");
    int tok;
    done_t d;
    for (int i = 0; i < 2; i++) {
        CHECK(sbus_sender_send(s, &ms[i], 1, &tok) == 0);
        CHECK(wait_done(&cl, &tok, &d, 10000) == 0 && d.code == 0);
        sbus_message_free(ms[i]);
    }
    sbus_receiver_t *r = open_receiver(&cl, "queue.1", SBUS_RECEIVE_AND_DELETE);
    sbus_message_t *got[2] = {NULL, NULL};
    size_t n = 0;
    for (int round = 0; round < 10 && n < 2; round++) {
        CHECK(sbus_receiver_receive(r, 2, 2000, &tok) == 0);
        CHECK(wait_done(&cl, &tok, &d, 10000) == 0 && d.code == 0);
        for (size_t i = 0; i < d.count; i++) {
            if (n < 2)
                got[n++] = d.msgs[i];
            else
                sbus_message_free(d.msgs[i]);
        }
        d.count = 0; /* the messages are ours now */
        done_clear(&d);
    }
    CHECK(n == 2);
    if (n == 2) {
        const void *p;
        size_t len;
        const char *id;
        size_t idn;
        CHECK(sbus_message_body_at(got[0], 0, &p, &len) == 0 && len == BIG &&
              memcmp(p, big, BIG) == 0);
        CHECK(sbus_message_get_prop(got[0], SBUS_PROP_MESSAGE_ID, &id, &idn) ==
                  0 && idn == 5 && memcmp(id, "big-1", 5) == 0);
        /* change a received message: new id, new body, then copy it */
        sbus_message_t *m = got[1];
        CHECK(sbus_message_set_prop(m, SBUS_PROP_MESSAGE_ID, "changed", 7) == 0);
        CHECK(sbus_message_set_prop(m, SBUS_PROP_SUBJECT, "subj", 4) == 0);
        CHECK(sbus_message_set_body(m, "new body", 8) == 0);
        CHECK(sbus_message_add_body_section(m, "more", 4) == 0);
        sbus_message_t *c = NULL;
        CHECK(sbus_message_copy(m, &c) == 0);
        CHECK(sbus_message_set_prop(m, SBUS_PROP_MESSAGE_ID, NULL, 0) == 0);
        CHECK(sbus_message_get_prop(m, SBUS_PROP_MESSAGE_ID, &id, &idn) ==
              SBUS_ENOENT);
        CHECK(sbus_message_get_prop(c, SBUS_PROP_MESSAGE_ID, &id, &idn) == 0 &&
              idn == 7 && memcmp(id, "changed", 7) == 0);
        CHECK(sbus_message_body_count(c) == 2);
        CHECK(sbus_message_body_at(c, 0, &p, &len) == 0 && len == 8 &&
              memcmp(p, "new body", 8) == 0);
        CHECK(sbus_message_body_at(c, 1, &p, &len) == 0 && len == 4 &&
              memcmp(p, "more", 4) == 0);
        sbus_message_free(c);
    }
    sbus_message_free(got[0]);
    sbus_message_free(got[1]);
    sbus_receiver_free(r);
    sbus_sender_free(s);
    client_close(&cl);
}

static void test_wrong_key(void)
{
    char cs[300];
    snprintf(cs, sizeof cs,
             "Endpoint=sb://localhost:%d;SharedAccessKeyName="
             "RootManageSharedAccessKey;SharedAccessKey=WRONG;"
             "UseDevelopmentEmulator=true;",
             emu.port);
    client_t cl;
    CHECK(client_open(&cl, cs) == 0); /* the connection itself opens */
    sbus_sender_t *s = open_sender(&cl, "queue.1");
    sbus_message_t *m = text_message("x", NULL);
    int tok;
    done_t d;
    CHECK(sbus_sender_send(s, &m, 1, &tok) == 0);
    CHECK(wait_done(&cl, &tok, &d, 10000) == 0);
    CHECK(d.code == SBUS_EAUTH);
    CHECK(strcmp(sbus_errname(d.code), "unauthorized") == 0);
    fprintf(stderr, "wrong key -> %s: %s (%s)\n", sbus_errname(d.code),
            d.description, d.condition);
    sbus_message_free(m);
    sbus_sender_free(s);
    client_close(&cl);
}

int main(void)
{
    static void (*const tests[])(void) = {
        test_send_receive_complete,
        test_batch_and_rad,
        test_big_batch,
        test_empty_queue,
        test_large_message_and_edits,
        test_wrong_key,
    };
    return emu_main(&emu, tests, sizeof tests / sizeof tests[0]);
}
