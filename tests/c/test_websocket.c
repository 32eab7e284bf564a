/*
 * test_websocket.c - AMQP over WebSockets against the emulator's ws and
 * wss listeners: the engine does the HTTP upgrade (AMQPWSB10), masking and
 * framing itself, and over wss TLS below it, verified against the
 * emulator's CA. Skipped (exit 77) with an emulator without WebSocket
 * listeners.
 */
#include "emu_fixture.h"

#include <string.h>

static emu_t emu;

static void roundtrip_over(int tls, int port)
{
    sbus_conn_options_t o;
    sbus_conn_options_init(&o);
    o.connection_string = emu.connstr;
    o.transport = SBUS_TRANSPORT_WEBSOCKET;
    o.use_tls = tls;
    o.port = port;
    o.ca_file = tls ? emu.ca : NULL;
    client_t cl;
    CHECK(client_open_opts(&cl, &o) == 0);
    sbus_sender_options_t so;
    sbus_sender_options_init(&so);
    so.entity = "test-queue-2";
    sbus_sender_t *s;
    sbus_sender_new(cl.c, &so, &s);
    /* bigger than one WebSocket frame of the emulator's, and a batch */
    static char big[100000];
    memset(big, 'w', sizeof big - 1);
    CHECK(send_text(&cl, s, big, NULL) == 0);
    CHECK(send_text(&cl, s, tls ? "wss" : "ws", NULL) == 0);
    sbus_receiver_options_t ro;
    sbus_receiver_options_init(&ro);
    ro.entity = "test-queue-2";
    sbus_receiver_t *r;
    sbus_receiver_new(cl.c, &ro, &r);
    size_t got = 0;
    for (int i = 0; i < 10 && got < 2; i++) {
        done_t d;
        receive_n(&cl, r, 2, 2000, &d);
        for (size_t k = 0; k < d.count; k++) {
            if (got == 0)
                CHECK(body_is(d.msgs[k], big));
            else
                CHECK(body_is(d.msgs[k], tls ? "wss" : "ws"));
            CHECK(settle_wait(&cl, r, d.msgs[k], SBUS_COMPLETE, NULL, NULL) == 0);
            got++;
        }
        done_clear(&d);
    }
    CHECK(got == 2);
    sbus_receiver_free(r);
    sbus_sender_free(s);
    client_close(&cl);
}

int main(void)
{
    if (emu_start_ws(&emu) < 0) {
        fprintf(stderr, "the emulator has no WebSocket listeners: skipped\n");
        return 77;
    }
    if (!emu.ws || !emu.wss) {
        emu_stop(&emu);
        fprintf(stderr, "the emulator has no WebSocket listeners: skipped\n");
        return 77;
    }
    roundtrip_over(0, emu.ws);
    roundtrip_over(1, emu.wss);
    emu_stop(&emu);
    if (failures)
        fprintf(stderr, "%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
