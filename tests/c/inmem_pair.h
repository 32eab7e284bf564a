/*
 * inmem_pair.h - the engine wired to the emulator's broker library in
 * memory, under a fake clock (used by test_inmem.c and
 * test_alloc_failure.c). Header-only: each test is one executable.
 */
#ifndef SBUS_TEST_INMEM_PAIR_H
#define SBUS_TEST_INMEM_PAIR_H

#include <sbus/sbus.h>

#include "config.h"
#include "emu.h"
#include "layer.h"
#include "ws.h"

#include <proton/connection.h>
#include <proton/transport.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC diagnostic ignored "-Wunused-function"

static int failures;

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__,        \
                    __LINE__, #cond);                                      \
            failures++;                                                    \
        }                                                                  \
    } while (0)

#define MAX_DONE 64

/* One completion, copied. */
typedef struct done {
    void *token;               /* its token */
    int code;                  /* error code or 0 */
    sbus_message_t *msgs[16];  /* messages (owned) */
    size_t count;              /* how many */
    int64_t time_ms;           /* time result */
} done_t;

/* The engine and a broker connection, with the fake clock. */
typedef struct pair {
    emu_broker_t *b;           /* the broker */
    emu_conn_t *server;        /* its side of the connection, or NULL */
    sbus_conn_t *c;            /* the engine */
    int64_t mono;              /* fake monotonic clock (ms) */
    done_t done[MAX_DONE];     /* completions not yet taken */
    int ndone;                 /* how many */
    int connects;              /* CONNECT events seen */
    int put_tokens;            /* "put-token" trace lines seen */
    int renew_failed;          /* RENEW_FAILED events seen */
    int renew_failed_code;     /* the last one's code */
    char token_audience[256];  /* last SBUS_EV_TOKEN audience */
    int token_requests;        /* SBUS_EV_TOKEN events seen */
    int64_t deadline;          /* the engine's next deadline */
    int *tok_base;             /* optional: tokens to count completions of */
    int ntok;                  /* how many */
    int tok_seen[64];          /* completions seen per token */
    int drop_on_open;          /* drop every connection once it opens */
    int drop_on_auth;          /* drop every connection once a token was
                                  accepted on it */
    int ws;                    /* 1: a WebSocket server sits in front */
    sbusi_layer_t *wsl;        /* its layer for the current connection */
    int proxy_status;          /* >0: an HTTP proxy answering CONNECT so */
    char proxy_req[1024];      /* the CONNECT request as received */
    size_t proxy_len;          /* its length so far */
    int proxy_done;            /* the proxy answered; bytes pass through */
    emu_buf_t to_engine;       /* bytes waiting for the engine */
    int fed_wire;              /* engine bytes ever reached the server */
    int hold_input;            /* 1: broker bytes wait in to_engine */
    emu_buf_t last_words;      /* what the engine left to flush at its
                                  last DISCONNECT */
} pair_t;

static int64_t unix_now(pair_t *p) { return emu_now(p->b); }

static void on_event(pair_t *p, sbus_event_t *ev)
{
    switch (ev->type) {
    case SBUS_EV_CONNECT:
        p->connects++;
        p->server = emu_conn_new(p->b, p);
        sbus_conn_transport_up(p->c);
        break;
    case SBUS_EV_DISCONNECT: {
        /* a host flushes what the engine still holds, then closes */
        size_t n;
        const uint8_t *w = sbus_conn_write_buffer(p->c, &n);
        p->last_words.len = 0;
        if (w && n) {
            buf_put(&p->last_words, w, n);
            sbus_conn_write_done(p->c, n);
        }
        if (p->server)
            emu_conn_free(p->server);
        p->server = NULL;
        break;
    }
    case SBUS_EV_LOG:
        if (getenv("SBUS_TRACE"))
            fprintf(stderr, "trace: %s\n", ev->text);
        if (strncmp(ev->text, "put-token ", 10) == 0 &&
            !strstr(ev->text, "refused"))
            p->put_tokens++;
        for (const char *q = strstr(ev->text, "sig="); q;
             q = strstr(q + 4, "sig="))
            if (strncmp(q, "sig=REDACTED", 12) != 0) {
                fprintf(stderr, "a signature reached the log: %s\n", ev->text);
                failures++;
            }
        break;
    case SBUS_EV_TOKEN:
        p->token_requests++;
        snprintf(p->token_audience, sizeof p->token_audience, "%s",
                 ev->audience);
        break;
    case SBUS_EV_RENEW_FAILED:
        p->renew_failed++;
        p->renew_failed_code = ev->error ? ev->error->code : 0;
        break;
    case SBUS_EV_DONE: {
        if (p->tok_base && (int *)ev->token >= p->tok_base &&
            (int *)ev->token < p->tok_base + p->ntok)
            p->tok_seen[(int *)ev->token - p->tok_base]++;
        if (p->ndone == MAX_DONE) {
            for (size_t i = 0; i < ev->count && ev->messages; i++)
                sbus_message_free(ev->messages[i]);
            break;
        }
        done_t *d = &p->done[p->ndone++];
        memset(d, 0, sizeof *d);
        d->token = ev->token;
        d->code = ev->error ? ev->error->code : 0;
        d->time_ms = ev->time_ms;
        for (size_t i = 0; i < ev->count && ev->messages; i++) {
            if (i < 16)
                d->msgs[d->count++] = ev->messages[i];
            else
                sbus_message_free(ev->messages[i]);
        }
        break;
    }
    default: break;
    }
}

static void on_connect_layers(pair_t *p)
{
    p->proxy_len = 0;
    p->proxy_done = 0;
    p->to_engine.len = 0;
    if (p->wsl)
        sbusi_layer_free(p->wsl);
    p->wsl = NULL;
    if (p->ws) {
        sbusi_ws_opts_t o;
        sbusi_ws_opts_init(&o, SBUSI_WS_SERVER);
        sbusi_ws_new(&o, &p->wsl);
    }
}

/* Engine bytes for the broker side: through the fake proxy and the
 * WebSocket server, into the broker. Returns how many were taken. */
static size_t to_server(pair_t *p, const uint8_t *b, size_t n)
{
    size_t used = 0;
    if (p->proxy_status && !p->proxy_done) {
        while (used < n && p->proxy_len + 1 < sizeof p->proxy_req) {
            p->proxy_req[p->proxy_len++] = (char)b[used++];
            p->proxy_req[p->proxy_len] = 0;
            if (strstr(p->proxy_req, "\r\n\r\n"))
                break;
        }
        if (!strstr(p->proxy_req, "\r\n\r\n"))
            return used;
        char ans[128];
        snprintf(ans, sizeof ans, "HTTP/1.1 %d %s\r\n\r\n", p->proxy_status,
                 p->proxy_status == 200 ? "Connection established"
                                        : "Proxy Authentication Required");
        buf_put(&p->to_engine, ans, strlen(ans));
        p->proxy_done = 1;
        if (p->proxy_status != 200)
            return n; /* a refusing proxy swallows the rest */
    }
    const uint8_t *q = b + used;
    size_t m = n - used;
    if (p->wsl) {
        size_t u = 0;
        sbusi_layer_input(p->wsl, q, m, &u);
        buf_put(&p->to_engine, sbusi_fifo_data(&p->wsl->down),
                sbusi_fifo_len(&p->wsl->down));
        sbusi_fifo_consume(&p->wsl->down, sbusi_fifo_len(&p->wsl->down));
        q = sbusi_fifo_data(&p->wsl->up);
        m = sbusi_fifo_len(&p->wsl->up);
        used += u;
    } else {
        used = n;
    }
    size_t done = 0;
    while (done < m) {
        pn_rwbytes_t in = pn_connection_driver_read_buffer(&p->server->driver);
        size_t k = m - done < in.size ? m - done : in.size;
        if (!k)
            break;
        memcpy(in.start, q + done, k);
        emu_conn_read_done(p->server, in.start, k);
        done += k;
        p->fed_wire = 1;
    }
    if (p->wsl)
        sbusi_fifo_consume(&p->wsl->up, done);
    return used;
}

/* Broker output for the engine: through the WebSocket server. */
static void from_server(pair_t *p)
{
    pn_bytes_t sout = emu_conn_output(p->server);
    if (!sout.size || (p->proxy_status && !p->proxy_done))
        return;
    if (p->wsl) {
        size_t u = 0;
        sbusi_layer_output(p->wsl, (const uint8_t *)sout.start, sout.size, &u);
        emu_conn_output_done(p->server, u);
        buf_put(&p->to_engine, sbusi_fifo_data(&p->wsl->down),
                sbusi_fifo_len(&p->wsl->down));
        sbusi_fifo_consume(&p->wsl->down, sbusi_fifo_len(&p->wsl->down));
        return;
    }
    buf_put(&p->to_engine, sout.start, sout.size);
    emu_conn_output_done(p->server, sout.size);
}

/* Moves bytes both ways and handles events until nothing moves. */
static void pump(pair_t *p)
{
    for (int round = 0; round < 10000; round++) {
        int moved = 0;
        sbus_event_t ev;
        while (sbus_conn_next_event(p->c, &ev)) {
            int was = p->server != NULL;
            on_event(p, &ev);
            if (!was && p->server)
                on_connect_layers(p);
            moved = 1;
        }
        if (!p->server)
            return;
        size_t len;
        const uint8_t *out = sbus_conn_write_buffer(p->c, &len);
        if (len) {
            size_t n = to_server(p, out, len);
            if (n) {
                sbus_conn_write_done(p->c, n);
                moved = 1;
            }
        }
        if (!p->server)
            return;
        emu_conn_process(p->server);
        emu_dispatch_all(p->b);
        if (p->drop_on_open && !p->server->dead &&
            (pn_connection_state(p->server->driver.connection) &
             PN_REMOTE_ACTIVE))
            emu_conn_drop(p->server, "amqp:connection:forced", "test drop");
        if (p->drop_on_auth && !p->server->dead && p->server->authed)
            emu_conn_drop(p->server, "amqp:connection:forced", "test drop");
        from_server(p);
        if (p->to_engine.len && !p->hold_input) {
            size_t cap;
            uint8_t *in = sbus_conn_read_buffer(p->c, &cap);
            size_t n = p->to_engine.len < cap ? p->to_engine.len : cap;
            if (in && n) {
                memcpy(in, p->to_engine.p, n);
                memmove(p->to_engine.p, p->to_engine.p + n,
                        p->to_engine.len - n);
                p->to_engine.len -= n;
                sbus_conn_read_done(p->c, n);
                moved = 1;
            }
        }
        if (p->server && pn_connection_driver_finished(&p->server->driver)) {
            emu_conn_free(p->server);
            p->server = NULL;
            sbus_conn_transport_down(p->c, "the broker closed the connection");
            moved = 1;
        }
        if (!moved)
            return;
    }
}

static void tick(pair_t *p)
{
    p->deadline = sbus_conn_tick(p->c, p->mono, unix_now(p));
    pump(p);
}

/* Moves both clocks forward by ms, in steps, ticking both sides. */
static void advance(pair_t *p, int64_t ms)
{
    while (ms > 0) {
        int64_t step = ms < 1000 ? ms : 1000;
        p->mono += step;
        p->b->fake_ms += step;
        ms -= step;
        emu_tick(p->b);
        tick(p);
        if (p->server)
            pn_transport_tick(p->server->driver.transport, p->mono);
        pump(p);
    }
}

/* Takes the completion of `token`, ticking until it arrives (max 20 s of
 * fake time, 100 ms at a time). */
static int take(pair_t *p, void *token, done_t *out)
{
    for (int i = 0; i < 200; i++) {
        pump(p);
        for (int j = 0; j < p->ndone; j++) {
            if (p->done[j].token != token)
                continue;
            *out = p->done[j];
            p->done[j] = p->done[--p->ndone];
            return 0;
        }
        advance(p, 100);
    }
    memset(out, 0, sizeof *out);
    out->code = -9999;
    return -1;
}

static void done_clear(done_t *d)
{
    for (size_t i = 0; i < d->count; i++)
        sbus_message_free(d->msgs[i]);
    d->count = 0;
}

/* The broker with the example configuration, and the fake clock; no
 * engine yet. */
static void pair_broker(pair_t *p)
{
    memset(p, 0, sizeof *p);
    emu_options_t eo = {0};
    eo.max_message_size = 262144;
    eo.idle_timeout_ms = 120000;
    p->b = emu_broker_new(&eo);
    char err[512];
    if (emu_config_load(p->b, SBUS_SOURCE_ROOT "/examples/emulator-config.json",
                        err, sizeof err) != 0)
        fprintf(stderr, "config: %s\n", err);
    p->mono = 1000000;
}

static void pair_open(pair_t *p, sbus_conn_options_t *o)
{
    pair_broker(p);
    o->trace = getenv("PERF_NO_TRACE") ? 0 : 1;
    char e[256];
    CHECK(sbus_conn_new(&p->c, o, e, sizeof e) == 0);
    tick(p);
    int tok;
    CHECK(sbus_conn_open(p->c, &tok) == 0);
    done_t d;
    CHECK(take(p, &tok, &d) == 0 && d.code == 0);
}

static void pair_close(pair_t *p)
{
    if (p->wsl)
        sbusi_layer_free(p->wsl);
    p->wsl = NULL;
    buf_free(&p->to_engine);
    buf_free(&p->last_words);
    for (int i = 0; i < p->ndone; i++)
        done_clear(&p->done[i]);
    sbus_conn_abort(p->c, "test over");
    pump(p);
    sbus_conn_free(p->c);
    if (p->server)
        emu_conn_free(p->server);
    emu_broker_free(p->b);
}

static void default_opts(sbus_conn_options_t *o)
{
    sbus_conn_options_init(o);
    o->connection_string =
        "Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;"
        "SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;";
    o->retry_backoff_ms = 100;
}

/* Sends one text message (in session sid unless NULL) and waits; returns
 * the completion's code. */
static int send_one_sid(pair_t *p, sbus_sender_t *s, const char *body,
                        const char *sid)
{
    sbus_message_t *m;
    sbus_message_new(&m);
    sbus_message_set_body(m, body, strlen(body));
    if (sid)
        sbus_message_set_prop(m, SBUS_PROP_SESSION_ID, sid, strlen(sid));
    int tok;
    done_t d;
    int rc = sbus_sender_send(s, &m, 1, &tok);
    sbus_message_free(m);
    if (rc)
        return rc;
    take(p, &tok, &d);
    return d.code;
}

static int send_one(pair_t *p, sbus_sender_t *s, const char *body)
{
    return send_one_sid(p, s, body, NULL);
}

static sbus_sender_t *sender(pair_t *p, const char *q)
{
    sbus_sender_options_t so;
    sbus_sender_options_init(&so);
    so.entity = q;
    sbus_sender_t *s = NULL;
    sbus_sender_new(p->c, &so, &s);
    return s;
}

static sbus_receiver_t *receiver(pair_t *p, const char *q)
{
    sbus_receiver_options_t ro;
    sbus_receiver_options_init(&ro);
    ro.entity = q;
    sbus_receiver_t *r = NULL;
    sbus_receiver_new(p->c, &ro, &r);
    return r;
}

static int settle_one(pair_t *p, sbus_receiver_t *r, sbus_message_t *m)
{
    int tok;
    done_t d;
    if (sbus_receiver_settle(r, m, SBUS_COMPLETE, NULL, NULL, &tok) != 0)
        return -1;
    take(p, &tok, &d);
    return d.code;
}

/* pair_open() with default_opts() but this retry policy. */
static void pair_open_retry(pair_t *p, int total, int64_t backoff_ms)
{
    sbus_conn_options_t o;
    default_opts(&o);
    o.retry_total = total;
    o.retry_backoff_ms = backoff_ms;
    pair_open(p, &o);
}

/* pair_open() with default_opts(). */
static void pair_open_default(pair_t *p)
{
    sbus_conn_options_t o;
    default_opts(&o);
    pair_open(p, &o);
}

#endif
