/*
 * test_recovery.c - the engine under adversity, through the emulator's
 * fault surface: a dropped connection is re-established (a new CONNECT)
 * and a pending receive resumes; a message received before the drop can
 * no longer be settled (SBUS_ELOCKLOST: locks belong to links); a
 * force-detached link is re-attached on next use; a throttled send
 * (server-busy) is retried under the policy and succeeds; a
 * non-retriable refusal is reported at once.
 */
#include "emu_fixture.h"

#include <string.h>

static emu_t emu;

static void open_fast_retry(client_t *cl)
{
    sbus_conn_options_t o;
    sbus_conn_options_init(&o);
    o.connection_string = emu.connstr;
    o.retry_backoff_ms = 50;
    o.retry_backoff_max_ms = 200;
    CHECK(client_open_opts(cl, &o) == 0);
}

static void test_drop_and_resume(void)
{
    client_t cl;
    open_fast_retry(&cl);
    drain_queue(&cl, "test-queue");
    sbus_sender_t *s = open_sender(&cl, "test-queue");
    CHECK(send_text(&cl, s, "before drop", NULL) == 0);
    sbus_receiver_t *r = open_receiver(&cl, "test-queue", SBUS_PEEK_LOCK);
    done_t d;
    receive_n(&cl, r, 1, 3000, &d);
    CHECK(d.count == 1);
    sbus_message_t *old = d.count ? d.msgs[0] : NULL;
    d.count = 0;
    done_clear(&d);

    CHECK(emu_post(&emu, "/faults", "{\"drop_connections\": true}") == 200);
    /* a receive started now waits across the reconnect */
    int tok;
    CHECK(sbus_receiver_receive(r, 1, 10000, &tok) == 0);
    sbus_io_wait(cl.io, 300);
    CHECK(send_text(&cl, s, "after drop", NULL) == 0);
    CHECK(wait_done(&cl, &tok, &d, 15000) == 0);
    CHECK(d.code == 0);
    /* the first message's lock went with the old link; it was unlocked
       by the broker, so either message may come back now */
    CHECK(d.count == 1);
    for (size_t i = 0; i < d.count; i++)
        CHECK(settle_wait(&cl, r, d.msgs[i], SBUS_COMPLETE, NULL, NULL) == 0);
    done_clear(&d);
    if (old) {
        CHECK(settle_wait(&cl, r, old, SBUS_COMPLETE, NULL, NULL) ==
              SBUS_ELOCKLOST);
        sbus_message_free(old);
    }
    CHECK(sbus_conn_is_open(cl.c));
    drain_queue(&cl, "test-queue");
    sbus_receiver_free(r);
    sbus_sender_free(s);
    client_close(&cl);
}

static void test_detach_reattach(void)
{
    client_t cl;
    open_fast_retry(&cl);
    sbus_sender_t *s = open_sender(&cl, "test-queue-2");
    CHECK(send_text(&cl, s, "one", NULL) == 0);
    CHECK(emu_post(&emu, "/faults", "{\"detach\": \"test-queue-2\"}") == 200);
    sbus_io_wait(cl.io, 200);
    CHECK(send_text(&cl, s, "two", NULL) == 0);
    drain_queue(&cl, "test-queue-2");
    sbus_sender_free(s);
    client_close(&cl);
}

static void test_busy_is_retried(void)
{
    client_t cl;
    open_fast_retry(&cl);
    sbus_sender_t *s = open_sender(&cl, "test-queue-2");
    CHECK(send_text(&cl, s, "warm up", NULL) == 0);
    CHECK(emu_post(&emu, "/faults",
                   "{\"fail_next\": 2, \"op\": \"send\", "
                   "\"condition\": \"com.microsoft:server-busy\"}") == 200);
    CHECK(send_text(&cl, s, "busy", NULL) == 0);
    /* more failures than the policy allows: the error comes out */
    CHECK(emu_post(&emu, "/faults",
                   "{\"fail_next\": 10, \"op\": \"send\", "
                   "\"condition\": \"com.microsoft:server-busy\"}") == 200);
    CHECK(send_text(&cl, s, "too busy", NULL) == SBUS_EBUSY);
    CHECK(emu_post(&emu, "/faults", "{\"reset\": true}") == 200);
    /* not retriable: at once */
    CHECK(emu_post(&emu, "/faults",
                   "{\"fail_next\": 1, \"op\": \"send\", "
                   "\"condition\": \"amqp:link:message-size-exceeded\"}") == 200);
    CHECK(send_text(&cl, s, "big", NULL) == SBUS_ESIZE);
    CHECK(emu_post(&emu, "/faults", "{\"reset\": true}") == 200);
    drain_queue(&cl, "test-queue-2");
    sbus_sender_free(s);
    client_close(&cl);
}

/* Nobody listening: the open fails with SBUS_ECONNECTION after the
 * policy's attempts, saying why. */
static void test_refused(void)
{
    sbus_conn_options_t o;
    sbus_conn_options_init(&o);
    o.connection_string = "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=k;"
                          "SharedAccessKey=v;UseDevelopmentEmulator=true";
    o.retry_total = 2;
    o.retry_backoff_ms = 10;
    client_t cl;
    memset(&cl, 0, sizeof cl);
    char err[256];
    CHECK(sbus_conn_new(&cl.c, &o, err, sizeof err) == 0);
    sbus_io_new(cl.c, &cl.io);
    int tok;
    done_t d;
    CHECK(sbus_conn_open(cl.c, &tok) == 0);
    CHECK(wait_done(&cl, &tok, &d, 10000) == 0);
    CHECK(d.code == SBUS_ECONNECTION);
    CHECK(strstr(d.description, "refused") != NULL);
    fprintf(stderr, "refused -> %s: %s\n", sbus_errname(d.code), d.description);
    sbus_io_free(cl.io);
    sbus_conn_free(cl.c);
}

int main(void)
{
    test_refused();
    static void (*const tests[])(void) = {
        test_drop_and_resume,
        test_detach_reattach,
        test_busy_is_retried,
    };
    return emu_main(&emu, tests, sizeof tests / sizeof tests[0]);
}
