/*
 * sbbench.c - the C engine (libsbus + the POSIX driver in core/io) as a
 * benchmark client: the same workloads, arguments and JSON line as
 * bench/clients/py_client.py, so that "ours-Python is within 70% of the C
 * engine" compares like with like.
 *
 * Usage: sbbench WORKLOAD QUEUE N
 *   WORKLOAD  send_batch | send_single | recv_peeklock | recv_rad | latency | idle
 * Environment: SB_CONN (connection string), SB_CA (CA file, optional),
 * SB_TRANSPORT (amqp, the default, or websocket: AMQP over WebSockets; TLS
 * or not follows the connection string, as for plain AMQP),
 * SB_LAT_RATE (latency workload, messages/s), SB_IDLE_S (idle wait, s),
 * SB_BATCH (messages per batch in send_batch, 1..100, default 100).
 *
 * The call pattern is the Python client's: one batch (or one message) in
 * flight at a time when sending; when receiving, one receive of up to 300
 * with prefetch 300, then all its completions in flight at once, then the
 * next receive. Only the measured phase is timed; CPU is getrusage
 * (user + sys), peak RSS is ru_maxrss.
 *
 * Divided into: clock and output, the event pump, the workloads, main.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <sbus/io.h>
#include <sbus/sbus.h>

#define PREFETCH 300
#define BODY_SIZE 1024

/* ------------------------------------------------------------------ */
/* Clock and output                                                    */
/* ------------------------------------------------------------------ */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CPU seconds of this process so far; *sys gets the kernel's part. */
static double cpu_s(double *sys) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *sys = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + *sys;
}

static long max_rss_kb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

typedef struct meter {
    double t0, c0, s0;        /* at start */
    double seconds, cpu, sys; /* at stop: wall, user + sys, sys */
} meter_t;

static void meter_start(meter_t *m) {
    m->t0 = now_s();
    m->c0 = cpu_s(&m->s0);
}

static void meter_stop(meter_t *m) {
    m->seconds = now_s() - m->t0;
    m->cpu = cpu_s(&m->sys) - m->c0;
    m->sys -= m->s0;
}

/* Prints the failure JSON line and exits 1. */
static void die(const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) *p = '\'';
    printf("{\"ok\":false,\"error\":\"%s\",\"rss_kb\":%ld}\n", msg, max_rss_kb());
    exit(1);
}

/* ------------------------------------------------------------------ */
/* The event pump                                                      */
/* ------------------------------------------------------------------ */

/*
 * Tokens are small integers. Token 1..9 name one-off operations; settle
 * operations use SETTLE_BASE + i, and their completions only decrement a
 * counter of settles in flight.
 */
enum {
    T_OPEN = 1,
    T_SENDER_OPEN,
    T_RECEIVER_OPEN,
    T_SEND,
    T_RECEIVE,
    T_CLOSE,
    SETTLE_BASE = 1000,
};

static sbus_conn_t *conn;
static sbus_io_t *io;
static long settles_in_flight;
static sbus_message_t **received;   /* messages of the last RECEIVE */
static size_t nreceived, received_cap;
static int done_flags[SETTLE_BASE];  /* one-off operations completed */

/* Handles one event; fatal errors end the run. */
static void on_event(const sbus_event_t *ev) {
    if (ev->type != SBUS_EV_DONE) return;
    uintptr_t tok = (uintptr_t)ev->token;
    if (ev->error)
        die("operation %d failed: %s (%s)", (int)ev->op, ev->error->description,
            ev->error->condition ? ev->error->condition : sbus_errname(ev->error->code));
    if (tok >= SETTLE_BASE) {
        settles_in_flight--;
        return;
    }
    if (ev->op == SBUS_OP_RECEIVE) {
        if (nreceived + ev->count > received_cap) {
            received_cap = (nreceived + ev->count) * 2;
            received = realloc(received, received_cap * sizeof *received);
        }
        memcpy(received + nreceived, ev->messages, ev->count * sizeof *received);
        nreceived += ev->count;
    }
    done_flags[tok] = 1;
}

/* Runs the connection until one-off operation tok is done, or deadline. */
static void wait_for(int tok, double timeout_s) {
    double deadline = now_s() + timeout_s;
    while (!done_flags[tok]) {
        double left = deadline - now_s();
        if (left <= 0) die("timeout waiting for operation %d", tok);
        sbus_io_wait(io, (int64_t)(left * 1000) + 1);
        sbus_event_t ev;
        while (sbus_io_next_event(io, &ev)) on_event(&ev);
    }
    done_flags[tok] = 0;
}

/* Runs the connection until no settle is in flight. */
static void wait_settles(double timeout_s) {
    double deadline = now_s() + timeout_s;
    while (settles_in_flight > 0) {
        double left = deadline - now_s();
        if (left <= 0) die("timeout waiting for %ld completions", settles_in_flight);
        sbus_io_wait(io, (int64_t)(left * 1000) + 1);
        sbus_event_t ev;
        while (sbus_io_next_event(io, &ev)) on_event(&ev);
    }
}

static void check(int rc, const char *what) {
    if (rc < 0) die("%s: %s", what, sbus_strerror(rc));
}

static sbus_message_t *make_message(const char *id) {
    static char body[BODY_SIZE];
    if (!body[0]) memset(body, 'x', sizeof body);
    sbus_message_t *m;
    check(sbus_message_new(&m), "sbus_message_new");
    check(sbus_message_set_body(m, body, sizeof body), "sbus_message_set_body");
    if (id) check(sbus_message_set_prop(m, SBUS_PROP_MESSAGE_ID, id, strlen(id)), "set id");
    return m;
}

static sbus_sender_t *open_sender(const char *queue) {
    sbus_sender_options_t o;
    sbus_sender_options_init(&o);
    o.entity = queue;
    sbus_sender_t *s;
    check(sbus_sender_new(conn, &o, &s), "sbus_sender_new");
    check(sbus_sender_open(s, (void *)(uintptr_t)T_SENDER_OPEN), "sbus_sender_open");
    wait_for(T_SENDER_OPEN, 30);
    return s;
}

static sbus_receiver_t *open_receiver(const char *queue, sbus_receive_mode_t mode) {
    sbus_receiver_options_t o;
    sbus_receiver_options_init(&o);
    o.entity = queue;
    o.mode = mode;
    o.prefetch = PREFETCH;
    sbus_receiver_t *r;
    check(sbus_receiver_new(conn, &o, &r), "sbus_receiver_new");
    check(sbus_receiver_open(r, (void *)(uintptr_t)T_RECEIVER_OPEN), "sbus_receiver_open");
    wait_for(T_RECEIVER_OPEN, 30);
    return r;
}

static void send_n(sbus_sender_t *s, sbus_message_t *const *msgs, size_t n) {
    check(sbus_sender_send(s, msgs, n, (void *)(uintptr_t)T_SEND), "sbus_sender_send");
    wait_for(T_SEND, 60);
}

/* ------------------------------------------------------------------ */
/* The workloads                                                       */
/* ------------------------------------------------------------------ */

/* Every message sent is made for its send and freed after it, as the Python, Lua and JS
 * clients make theirs: the engine's cost of a message includes building it. */
static long w_send(const char *queue, long n, size_t per_call, meter_t *mt) {
    sbus_sender_t *s = open_sender(queue);
    sbus_message_t *msgs[100];
    if (per_call > 1 && getenv("SB_BATCH")) { /* batch size override, for bisecting */
        long b = atol(getenv("SB_BATCH"));
        if (b >= 1 && b <= 100) per_call = (size_t)b;
    }
    msgs[0] = make_message(NULL);
    send_n(s, msgs, 1); /* warm-up, not counted */
    sbus_message_free(msgs[0]);
    meter_start(mt);
    for (long done = 0; done < n;) {
        size_t k = (size_t)(n - done) < per_call ? (size_t)(n - done) : per_call;
        for (size_t i = 0; i < k; i++) msgs[i] = make_message(NULL);
        send_n(s, msgs, k);
        for (size_t i = 0; i < k; i++) sbus_message_free(msgs[i]);
        done += (long)k;
    }
    meter_stop(mt);
    sbus_sender_close(s, (void *)(uintptr_t)T_CLOSE);
    wait_for(T_CLOSE, 10);
    sbus_sender_free(s);
    return n;
}

static long w_receive(const char *queue, long n, int peek, meter_t *mt) {
    sbus_receiver_t *r = open_receiver(queue, peek ? SBUS_PEEK_LOCK : SBUS_RECEIVE_AND_DELETE);
    long got = 0;
    uintptr_t next_settle = SETTLE_BASE;
    int started = 0;
    while (got < n) {
        nreceived = 0;
        check(sbus_receiver_receive(r, PREFETCH, 20000, (void *)(uintptr_t)T_RECEIVE),
              "sbus_receiver_receive");
        wait_for(T_RECEIVE, 30);
        if (nreceived == 0) die("only %ld of %ld messages arrived (20 s without one)", got, n);
        if (!started) {
            meter_start(mt);
            started = 1;
        }
        if (peek) {
            for (size_t i = 0; i < nreceived; i++) {
                check(sbus_receiver_settle(r, received[i], SBUS_COMPLETE, NULL, NULL,
                                           (void *)next_settle++),
                      "sbus_receiver_settle");
                settles_in_flight++;
            }
            wait_settles(30);
        }
        for (size_t i = 0; i < nreceived; i++) sbus_message_free(received[i]);
        got += (long)nreceived;
    }
    meter_stop(mt);
    sbus_receiver_close(r, (void *)(uintptr_t)T_CLOSE);
    wait_for(T_CLOSE, 10);
    sbus_receiver_free(r);
    return got;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static long w_latency(const char *queue, long n, meter_t *mt, double *p50, double *p99) {
    const char *rate_s = getenv("SB_LAT_RATE");
    double rate = rate_s ? atof(rate_s) : 200;
    sbus_sender_t *s = open_sender(queue);
    sbus_receiver_t *r = open_receiver(queue, SBUS_PEEK_LOCK);
    double *sent_at = calloc((size_t)n, sizeof *sent_at);
    double *lat = calloc((size_t)n, sizeof *lat);
    long nlat = 0, nsent = 0;
    uintptr_t next_settle = SETTLE_BASE;
    int receiving = 0;
    meter_start(mt);
    double t0 = now_s(), deadline = t0 + n / rate + 60;
    while (nlat < n) {
        if (now_s() > deadline) die("latency: %ld of %ld arrived", nlat, n);
        if (!receiving) {
            nreceived = 0;
            check(sbus_receiver_receive(r, PREFETCH, -1, (void *)(uintptr_t)T_RECEIVE),
                  "receive");
            receiving = 1;
        }
        /* Send what is due; one send in flight at a time, like the others. */
        if (nsent < n && now_s() >= t0 + nsent / rate) {
            char id[32];
            snprintf(id, sizeof id, "lat-%ld", nsent);
            sbus_message_t *m = make_message(id);
            sent_at[nsent++] = now_s();
            check(sbus_sender_send(s, &m, 1, (void *)(uintptr_t)T_SEND), "send");
            sbus_message_free(m);
            while (!done_flags[T_SEND]) {
                sbus_io_wait(io, 1000);
                sbus_event_t ev;
                while (sbus_io_next_event(io, &ev)) on_event(&ev);
            }
            done_flags[T_SEND] = 0;
        }
        double next = nsent < n ? t0 + nsent / rate : now_s() + 1;
        int64_t wait_ms = (int64_t)((next - now_s()) * 1000);
        if (wait_ms < 0) wait_ms = 0;
        if (!done_flags[T_RECEIVE]) sbus_io_wait(io, wait_ms);
        sbus_event_t ev;
        while (sbus_io_next_event(io, &ev)) on_event(&ev);
        if (done_flags[T_RECEIVE]) {
            double t = now_s();
            done_flags[T_RECEIVE] = 0;
            receiving = 0;
            for (size_t i = 0; i < nreceived; i++) {
                const char *id;
                size_t len;
                if (sbus_message_get_prop(received[i], SBUS_PROP_MESSAGE_ID, &id, &len) == 0 &&
                    len > 4 && memcmp(id, "lat-", 4) == 0) {
                    long k = strtol(id + 4, NULL, 10);
                    if (k >= 0 && k < nsent && nlat < n) lat[nlat++] = t - sent_at[k];
                }
                check(sbus_receiver_settle(r, received[i], SBUS_COMPLETE, NULL, NULL,
                                           (void *)next_settle++),
                      "settle");
                settles_in_flight++;
            }
            wait_settles(30);
            for (size_t i = 0; i < nreceived; i++) sbus_message_free(received[i]);
        }
    }
    meter_stop(mt);
    qsort(lat, (size_t)nlat, sizeof *lat, cmp_double);
    *p50 = lat[(size_t)(0.50 * nlat)] * 1000;
    *p99 = lat[(size_t)(0.99 * nlat) < (size_t)nlat ? (size_t)(0.99 * nlat) : (size_t)nlat - 1] *
           1000;
    free(sent_at);
    free(lat);
    return nlat;
}

static double w_idle(const char *queue, meter_t *mt) {
    const char *idle_s = getenv("SB_IDLE_S");
    double wait = idle_s ? atof(idle_s) : 10;
    sbus_receiver_t *r = open_receiver(queue, SBUS_PEEK_LOCK);
    nreceived = 0;
    check(sbus_receiver_receive(r, 1, 1000, (void *)(uintptr_t)T_RECEIVE), "receive");
    wait_for(T_RECEIVE, 30);
    meter_start(mt);
    check(sbus_receiver_receive(r, 1, (int64_t)(wait * 1000), (void *)(uintptr_t)T_RECEIVE),
          "receive");
    wait_for(T_RECEIVE, wait + 30);
    meter_stop(mt);
    return 100.0 * mt->cpu / mt->seconds;
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: sbbench WORKLOAD QUEUE N\n");
        return 2;
    }
    const char *workload = argv[1], *queue = argv[2];
    long n = atol(argv[3]);
    const char *cs = getenv("SB_CONN");
    if (!cs) die("SB_CONN is not set");

    sbus_conn_options_t o;
    sbus_conn_options_init(&o);
    o.connection_string = cs;
    o.ca_file = getenv("SB_CA");
    const char *tr = getenv("SB_TRANSPORT");
    if (tr && !strcmp(tr, "websocket"))
        o.transport = SBUS_TRANSPORT_WEBSOCKET;
    else if (tr && *tr && strcmp(tr, "amqp"))
        die("SB_TRANSPORT must be amqp or websocket, not %s", tr);
    char err[256] = "";
    if (sbus_conn_new(&conn, &o, err, sizeof err) < 0) die("sbus_conn_new: %s", err);
    check(sbus_io_new(conn, &io), "sbus_io_new");
    check(sbus_conn_open(conn, (void *)(uintptr_t)T_OPEN), "sbus_conn_open");
    wait_for(T_OPEN, 30);

    meter_t mt = {0};
    char extra[160] = "";
    long done = 0;
    if (!strcmp(workload, "send_batch")) {
        done = w_send(queue, n, 100, &mt);
        snprintf(extra, sizeof extra, ",\"extra_sent\":1");
    } else if (!strcmp(workload, "send_single")) {
        done = w_send(queue, n, 1, &mt);
        snprintf(extra, sizeof extra, ",\"extra_sent\":1");
    } else if (!strcmp(workload, "recv_peeklock")) {
        done = w_receive(queue, n, 1, &mt);
    } else if (!strcmp(workload, "recv_rad")) {
        done = w_receive(queue, n, 0, &mt);
    } else if (!strcmp(workload, "latency")) {
        double p50 = 0, p99 = 0;
        done = w_latency(queue, n, &mt, &p50, &p99);
        snprintf(extra, sizeof extra, ",\"p50_ms\":%.3f,\"p99_ms\":%.3f", p50, p99);
    } else if (!strcmp(workload, "idle")) {
        double pct = w_idle(queue, &mt);
        snprintf(extra, sizeof extra, ",\"idle_cpu_pct\":%.4f", pct);
    } else {
        die("unknown workload %s", workload);
    }
    sbus_conn_close(conn, (void *)(uintptr_t)T_CLOSE);
    wait_for(T_CLOSE, 10);
    sbus_io_free(io);
    sbus_conn_free(conn);
    printf("{\"ok\":true,\"n\":%ld,\"seconds\":%.6f,\"cpu_s\":%.6f,\"sys_s\":%.6f,\"rss_kb\":%ld%s}\n",
           done, mt.seconds, mt.cpu, mt.sys, max_rss_kb(), extra);
    return 0;
}
