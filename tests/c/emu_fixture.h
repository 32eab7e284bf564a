/*
 * emu_fixture.h - helpers for C tests that run against the emulator
 * binary: start it on a free port, build connections to it, and drive
 * operations to their completion with the POSIX driver.
 */
#ifndef SBUS_TEST_EMU_FIXTURE_H
#define SBUS_TEST_EMU_FIXTURE_H

#include <sbus/io.h>
#include <sbus/sbus.h>
#include <stdio.h>

extern int failures;

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__,        \
                    __LINE__, #cond);                                      \
            failures++;                                                    \
        }                                                                  \
    } while (0)

/* A running emulator. */
typedef struct emu {
    int pid;          /* its process id */
    int port;         /* plain AMQP port */
    int control;      /* control HTTP port */
    int amqps;        /* AMQP over TLS port */
    int ws;           /* AMQP over WebSocket port (0: not offered) */
    int wss;          /* AMQP over secure WebSocket port (0: not offered) */
    char ca[256];     /* the CA file its certificate chains to */
    char connstr[256]; /* a connection string for it */
} emu_t;

/* Starts the emulator (SBUS_EMULATOR, else SBUS_EMULATOR_DEFAULT) with
 * SBUS_EMULATOR_CONFIG; 0 or -1. */
int emu_start(emu_t *e);
/* The same with WebSocket listeners too (emulators without them fail). */
int emu_start_ws(emu_t *e);
/* Stops it (SIGTERM, wait). */
void emu_stop(emu_t *e);
/* POSTs a JSON body to the control surface; returns the HTTP status. */
int emu_post(emu_t *e, const char *path, const char *json);

/* A connection with its driver. */
typedef struct client {
    sbus_conn_t *c;  /* the connection */
    sbus_io_t *io;   /* its driver */
} client_t;

/* Connects with connection string cs (NULL: the emulator's) and opens. */
int client_open(client_t *cl, const char *cs);
void client_close(client_t *cl);

/* The completion of one operation, copied out of its event. */
typedef struct done {
    int code;                 /* 0 or the error code */
    char condition[128];      /* error condition, "" if none */
    char description[400];    /* error description */
    sbus_message_t **msgs;    /* messages (owned: free with done_clear) */
    size_t count;             /* messages or sequence numbers */
    int64_t seqs[64];         /* SCHEDULE results */
    int64_t time_ms;          /* time result */
    char data[256];           /* data result (session id / state) */
    size_t len;               /* its length */
    int has_data;             /* data was non-NULL */
} done_t;

/* Opens a connection with extra options (retry/timeout/trace...). */
int client_open_opts(client_t *cl, sbus_conn_options_t *o);
/* Sends one text message (body, optional message id) and waits. */
int send_text(client_t *cl, sbus_sender_t *s, const char *body, const char *id);
/* Receives up to n messages within wait_ms. */
int receive_n(client_t *cl, sbus_receiver_t *r, uint32_t n, int64_t wait_ms,
              done_t *d);
/* Settles and waits; returns the completion's code. */
int settle_wait(client_t *cl, sbus_receiver_t *r, sbus_message_t *m,
                sbus_outcome_t how, const char *reason, const char *desc);
/* Empties a queue (receive-and-delete). */
void drain_queue(client_t *cl, const char *queue);
/* 1 if m's first data section equals `want`. */
int body_is(const sbus_message_t *m, const char *want);

/* A sender / receiver (defaults but the mode) on cl for entity; NULL if
 * sbus_*_new failed. */
sbus_sender_t *open_sender(client_t *cl, const char *entity);
sbus_receiver_t *open_receiver(client_t *cl, const char *entity,
                               sbus_receive_mode_t mode);

/* The whole main() of an emulator test: starts e, runs the tests in order,
 * stops it, reports the failure count; returns the exit status. */
int emu_main(emu_t *e, void (*const *tests)(void), size_t n);

/* Runs the driver until the op with `token` completes or timeout_ms. */
int wait_done(client_t *cl, void *token, done_t *d, int64_t timeout_ms);
void done_clear(done_t *d);

#endif
