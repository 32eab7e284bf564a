/*
 * send.c - sends messages to a queue or topic with the POSIX driver.
 *
 *   sbus-send "<connection string>" <queue> [message ...]
 *
 * With no message arguments it sends one "hello from C". Several messages
 * go as one batch. Exit status 0 on success, 1 on failure (the error's
 * symbolic name and description are printed).
 */
#include <sbus/io.h>
#include <sbus/sbus.h>

#include <stdio.h>
#include <string.h>

/* Runs the driver until the operation with `token` completes; returns its
 * error code (0 on success). */
static int wait_for(sbus_io_t *io, void *token)
{
    for (;;) {
        sbus_event_t ev;
        while (sbus_io_next_event(io, &ev)) {
            if (ev.type == SBUS_EV_LOG)
                fprintf(stderr, "trace: %s\n", ev.text);
            if (ev.type != SBUS_EV_DONE || ev.token != token)
                continue;
            if (!ev.error)
                return 0;
            fprintf(stderr, "error: %s: %s\n", sbus_errname(ev.error->code),
                    ev.error->description);
            return ev.error->code;
        }
        sbus_io_wait(io, -1);
    }
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s CONNECTION_STRING QUEUE [MESSAGE...]\n",
                argv[0]);
        return 2;
    }
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
    sbus_sender_options_t so;
    sbus_sender_options_init(&so);
    so.entity = argv[2];
    sbus_sender_t *s;
    sbus_sender_new(c, &so, &s);

    int nmsg = argc > 3 ? argc - 3 : 1;
    sbus_message_t *msgs[64];
    if (nmsg > 64)
        nmsg = 64;
    for (int i = 0; i < nmsg; i++) {
        const char *text = argc > 3 ? argv[3 + i] : "hello from C";
        sbus_message_new(&msgs[i]);
        sbus_message_set_body(msgs[i], text, strlen(text));
    }
    int open_tok, send_tok, close_tok, rc;
    sbus_conn_open(c, &open_tok);
    rc = wait_for(io, &open_tok);
    if (rc == 0 && sbus_sender_send(s, msgs, (size_t)nmsg, &send_tok) == 0)
        rc = wait_for(io, &send_tok);
    if (rc == 0)
        printf("sent %d message(s) to %s\n", nmsg, argv[2]);
    for (int i = 0; i < nmsg; i++)
        sbus_message_free(msgs[i]);
    sbus_sender_free(s);
    if (sbus_conn_close(c, &close_tok) == 0)
        wait_for(io, &close_tok);
    sbus_io_free(io);
    sbus_conn_free(c);
    return rc ? 1 : 0;
}
