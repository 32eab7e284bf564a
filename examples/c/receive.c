/*
 * receive.c - receives messages from a queue (peek-lock) with the POSIX
 * driver, prints them and completes them.
 *
 *   sbus-receive "<connection string>" <queue> [max_count] [max_wait_ms]
 *
 * Prints one line per message: its sequence number and body. Stops after
 * one receive call (up to max_count messages, default 10, waiting up to
 * max_wait_ms, default 5000).
 */
#include <sbus/io.h>
#include <sbus/sbus.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The completion of one operation (messages transfer to us). */
typedef struct result {
    int code;                /* 0 or the error code */
    sbus_message_t **msgs;   /* received messages (owned) */
    size_t count;            /* how many */
} result_t;

static void wait_for(sbus_io_t *io, void *token, result_t *res)
{
    memset(res, 0, sizeof *res);
    for (;;) {
        sbus_event_t ev;
        while (sbus_io_next_event(io, &ev)) {
            if (ev.type != SBUS_EV_DONE || ev.token != token)
                continue;
            if (ev.error) {
                fprintf(stderr, "error: %s: %s\n",
                        sbus_errname(ev.error->code), ev.error->description);
                res->code = ev.error->code;
            }
            if (ev.count && ev.messages) {
                res->msgs = malloc(ev.count * sizeof *res->msgs);
                memcpy(res->msgs, ev.messages, ev.count * sizeof *res->msgs);
                res->count = ev.count;
            }
            return;
        }
        sbus_io_wait(io, -1);
    }
}

static void print_message(const sbus_message_t *m)
{
    int64_t seq = 0;
    sbus_message_get_field(m, SBUS_FIELD_SEQUENCE_NUMBER, &seq);
    const void *p = "";
    size_t n = 0;
    sbus_message_body_at(m, 0, &p, &n);
    printf("#%" PRId64 " %.*s\n", seq, (int)n, (const char *)p);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s CONNECTION_STRING QUEUE [MAX [WAIT_MS]]\n",
                argv[0]);
        return 2;
    }
    uint32_t max = argc > 3 ? (uint32_t)atoi(argv[3]) : 10;
    int64_t wait_ms = argc > 4 ? atoll(argv[4]) : 5000;
    sbus_conn_options_t o;
    sbus_conn_options_init(&o);
    o.connection_string = argv[1];
    sbus_conn_t *c;
    char err[256];
    if (sbus_conn_new(&c, &o, err, sizeof err) < 0) {
        fprintf(stderr, "error: %s\n", err);
        return 1;
    }
    sbus_io_t *io;
    sbus_io_new(c, &io);
    sbus_receiver_options_t ro;
    sbus_receiver_options_init(&ro);
    ro.entity = argv[2];
    sbus_receiver_t *r;
    sbus_receiver_new(c, &ro, &r);

    int tok, close_tok;
    result_t res;
    sbus_conn_open(c, &tok);
    wait_for(io, &tok, &res);
    if (res.code == 0) {
        sbus_receiver_receive(r, max ? max : 1, wait_ms, &tok);
        wait_for(io, &tok, &res);
    }
    int rc = res.code;
    for (size_t i = 0; i < res.count; i++) {
        result_t sres;
        print_message(res.msgs[i]);
        sbus_receiver_settle(r, res.msgs[i], SBUS_COMPLETE, NULL, NULL, &tok);
        wait_for(io, &tok, &sres);
        rc = rc ? rc : sres.code;
        sbus_message_free(res.msgs[i]);
    }
    free(res.msgs);
    printf("received %zu message(s) from %s\n", res.count, argv[2]);
    sbus_receiver_free(r);
    if (sbus_conn_close(c, &close_tok) == 0)
        wait_for(io, &close_tok, &res);
    sbus_io_free(io);
    sbus_conn_free(c);
    return rc ? 1 : 0;
}
