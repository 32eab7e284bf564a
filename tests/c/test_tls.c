/*
 * test_tls.c - the engine's TLS layer against the emulator's TLS listener:
 * verified against the emulator's CA (send and receive work), refused
 * against the system store (SBUS_ETLS, not retried, with the reason), and
 * accepted with verification off.
 */
#include "emu_fixture.h"

#include <string.h>

static emu_t emu;

static int open_tls(client_t *cl, const char *ca, int verify, done_t *d)
{
    sbus_conn_options_t o;
    sbus_conn_options_init(&o);
    o.connection_string = emu.connstr;
    o.use_tls = 1;
    o.port = emu.amqps;
    o.ca_file = ca;
    o.verify = verify;
    o.retry_backoff_ms = 50;
    memset(cl, 0, sizeof *cl);
    char err[256];
    o.operation_timeout_ms = 10000;
    if (sbus_conn_new(&cl->c, &o, err, sizeof err) < 0) {
        fprintf(stderr, "conn_new: %s\n", err);
        return -1;
    }
    sbus_io_new(cl->c, &cl->io);
    static int tok;
    sbus_conn_open(cl->c, &tok);
    return wait_done(cl, &tok, d, 15000);
}

static void test_verified(void)
{
    client_t cl;
    done_t d;
    CHECK(open_tls(&cl, emu.ca, 1, &d) == 0);
    CHECK(d.code == 0);
    if (d.code)
        fprintf(stderr, "tls open: %s\n", d.description);
    sbus_sender_options_t so;
    sbus_sender_options_init(&so);
    so.entity = "test-queue";
    sbus_sender_t *s;
    sbus_sender_new(cl.c, &so, &s);
    CHECK(send_text(&cl, s, "over tls", NULL) == 0);
    sbus_receiver_options_t ro;
    sbus_receiver_options_init(&ro);
    ro.entity = "test-queue";
    ro.mode = SBUS_RECEIVE_AND_DELETE;
    sbus_receiver_t *r;
    sbus_receiver_new(cl.c, &ro, &r);
    receive_n(&cl, r, 1, 3000, &d);
    CHECK(d.count == 1 && body_is(d.msgs[0], "over tls"));
    done_clear(&d);
    sbus_receiver_free(r);
    sbus_sender_free(s);
    client_close(&cl);
}

static void test_untrusted(void)
{
    client_t cl;
    done_t d;
    CHECK(open_tls(&cl, NULL, 1, &d) == 0);
    CHECK(d.code == SBUS_ETLS);
    CHECK(strstr(d.description, "verify") != NULL);
    fprintf(stderr, "untrusted -> %s: %s\n", sbus_errname(d.code),
            d.description);
    client_close(&cl);
}

static void test_unverified(void)
{
    client_t cl;
    done_t d;
    CHECK(open_tls(&cl, NULL, 0, &d) == 0);
    CHECK(d.code == 0);
    client_close(&cl);
}

int main(void)
{
    if (emu_start(&emu) < 0 || !emu.amqps || !emu.ca[0]) {
        fprintf(stderr, "cannot start the emulator with TLS\n");
        emu_stop(&emu);
        return 1;
    }
    test_verified();
    test_untrusted();
    test_unverified();
    emu_stop(&emu);
    if (failures)
        fprintf(stderr, "%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
