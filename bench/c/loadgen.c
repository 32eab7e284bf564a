/*
 * loadgen.c - the broker load generator of the benchmark harness.
 *
 * One C program, written on Proton's proactor, drives every broker that the
 * harness compares (our sbus-emulator and Proton's example broker) with the
 * same traffic, so that the broker's CPU per message is the only thing that
 * differs. It also fills and drains queues for the client benchmarks, where
 * the filler must be fast and independent of the client being measured.
 *
 * Modes (--mode):
 *   both   a sender connection and a receiver connection at once: N messages
 *          go through the broker while they are being consumed;
 *   send   only the sender: puts N messages on the queue (prefill);
 *   recv   only the receiver: takes up to N messages, stopping early after
 *          --idle-ms without a message (drain and count).
 * Receiver settlement (--settle):
 *   rad    ReceiveAndDelete: the link asks for pre-settled deliveries;
 *   peek   PeekLock + complete: each delivery is accepted and settled as it
 *          arrives (the broker sees one disposition per message).
 * Authentication (--sas-key-name/--sas-key): after SASL ANONYMOUS each
 * connection puts a SAS token on $cbs for the queue's audience, as Service
 * Bus clients do; without it the links attach at once (Proton's broker).
 *
 * Every message is a 1 KB (--size) data body with a message-id. The encoded
 * message is built once and only its id digits are patched per message, so
 * the generator spends its CPU on the wire, not on encoding.
 *
 * Output: one JSON line on stdout with counts, seconds, rate and the
 * generator's own CPU. Exit 0 when the requested work was done, 1 on a
 * timeout or a refusal (the JSON line still says how far it got), 2 on
 * usage errors.
 *
 * The file is divided into: options, the SAS token, message templates,
 * connection state, the event handler, main.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <proton/condition.h>
#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/event.h>
#include <proton/link.h>
#include <proton/message.h>
#include <proton/proactor.h>
#include <proton/sasl.h>
#include <proton/session.h>
#include <proton/terminus.h>
#include <proton/transport.h>

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

typedef struct options {
    const char *host;        /* broker address (loopback only) */
    const char *port;        /* broker port */
    const char *queue;       /* queue name, the link address */
    const char *mode;        /* "both", "send" or "recv" */
    const char *settle;      /* "rad" or "peek" */
    const char *sas_key_name;/* policy name; NULL: no CBS */
    const char *sas_key;     /* policy key text */
    const char *audience_host; /* host in the token audience (localhost) */
    long n;                  /* messages to move */
    long size;               /* body bytes */
    long credit;             /* receiver credit window */
    long max_inflight;       /* sender: unsettled deliveries per link at most */
    long links;              /* sender links on the sender connection */
    long idle_ms;            /* recv: stop after this long without a message */
    long stall_ms;           /* fail after this long without progress */
    double timeout_s;        /* give up after this long */
} options_t;

static options_t opt = {
    .host = "127.0.0.1", .port = "5672", .queue = "bench", .mode = "both",
    .settle = "rad", .audience_host = "localhost", .n = 100000, .size = 1024,
    .credit = 1000, .max_inflight = 2000, .links = 1, .idle_ms = 2000, .stall_ms = 5000, .timeout_s = 120,
};

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen [--host H] [--port P] [--queue Q] [--mode both|send|recv]\n"
            "               [--settle rad|peek] [--n N] [--size BYTES] [--credit C]\n"
            "               [--max-inflight M] [--links K] [--idle-ms MS] [--stall-ms MS] [--timeout S]\n"
            "               [--sas-key-name NAME --sas-key KEY [--audience-host H]]\n");
    exit(2);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* ------------------------------------------------------------------ */
/* The SAS token: HMAC-SHA256 over "<url-encoded uri>\n<expiry>"       */
/* ------------------------------------------------------------------ */

/* Percent-encodes s into out (RFC 3986 unreserved characters kept). */
static void url_encode(const char *s, char *out, size_t cap) {
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = 0;
}

/* Writes "SharedAccessSignature sr=..&sig=..&se=..&skn=.." for uri. */
static void sas_token(const char *uri, char *out, size_t cap) {
    char sr[512], sig_enc[256], to_sign[600];
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    unsigned char b64[128];
    long long expiry = (long long)time(NULL) + 3600;
    url_encode(uri, sr, sizeof sr);
    int len = snprintf(to_sign, sizeof to_sign, "%s\n%lld", sr, expiry);
    HMAC(EVP_sha256(), opt.sas_key, (int)strlen(opt.sas_key), (unsigned char *)to_sign,
         (size_t)len, mac, &maclen);
    EVP_EncodeBlock(b64, mac, (int)maclen);
    url_encode((char *)b64, sig_enc, sizeof sig_enc);
    snprintf(out, cap, "SharedAccessSignature sr=%s&sig=%s&se=%lld&skn=%s", sr, sig_enc, expiry,
             opt.sas_key_name);
}

/* ------------------------------------------------------------------ */
/* Message templates                                                   */
/* ------------------------------------------------------------------ */

/* An encoded message and where its message-id digits sit. */
typedef struct encoded {
    char *bytes;       /* the encoded AMQP message */
    size_t len;        /* its length */
    size_t id_digits;  /* offset of the 12 digits to patch, or SIZE_MAX */
} encoded_t;

static void encode(pn_message_t *m, encoded_t *out) {
    size_t cap = 4096 + (size_t)opt.size;
    out->bytes = malloc(cap);
    out->len = cap;
    if (pn_message_encode(m, out->bytes, &out->len) != 0) {
        fprintf(stderr, "loadgen: cannot encode a message\n");
        exit(2);
    }
}

/* The data message: body of opt.size bytes, message-id "lg-<12 digits>". */
static void make_data_template(encoded_t *t) {
    static const char id0[] = "lg-000000000000";
    pn_message_t *m = pn_message();
    pn_data_t *id = pn_message_id(m);
    pn_data_put_string(id, pn_bytes(sizeof id0 - 1, id0));
    char *body = malloc((size_t)opt.size);
    for (long i = 0; i < opt.size; i++) body[i] = (char)('a' + i % 26);
    pn_data_t *b = pn_message_body(m);
    pn_data_put_binary(b, pn_bytes((size_t)opt.size, body));
    pn_message_set_inferred(m, true); /* binary body -> data section */
    pn_message_set_durable(m, true);
    encode(m, t);
    char *at = memmem(t->bytes, t->len, id0, sizeof id0 - 1);
    t->id_digits = at ? (size_t)(at - t->bytes) + 3 : SIZE_MAX;
    pn_message_free(m);
    free(body);
}

static void patch_id(encoded_t *t, long n) {
    if (t->id_digits == SIZE_MAX) return;
    char *p = t->bytes + t->id_digits + 12;
    for (int i = 0; i < 12; i++) {
        *--p = (char)('0' + n % 10);
        n /= 10;
    }
}

/* The CBS put-token request for uri. */
static void make_put_token(const char *uri, encoded_t *t) {
    char token[1024];
    sas_token(uri, token, sizeof token);
    pn_message_t *m = pn_message();
    pn_data_put_ulong(pn_message_id(m), 0);
    pn_message_set_reply_to(m, "$cbs");
    pn_data_t *props = pn_message_properties(m);
    pn_data_put_map(props);
    pn_data_enter(props);
    pn_data_put_string(props, pn_bytes(9, "operation"));
    pn_data_put_string(props, pn_bytes(9, "put-token"));
    pn_data_put_string(props, pn_bytes(4, "type"));
    pn_data_put_string(props, pn_bytes(31, "servicebus.windows.net:sastoken"));
    pn_data_put_string(props, pn_bytes(4, "name"));
    pn_data_put_string(props, pn_bytes(strlen(uri), uri));
    pn_data_exit(props);
    pn_data_put_string(pn_message_body(m), pn_bytes(strlen(token), token));
    encode(m, t);
    pn_message_free(m);
}

/* ------------------------------------------------------------------ */
/* Connection state                                                    */
/* ------------------------------------------------------------------ */

typedef enum role { ROLE_SENDER, ROLE_RECEIVER } role_t;

#define MAX_LINKS 256

typedef struct conn {
    role_t role;             /* what this connection does */
    pn_connection_t *pc;     /* the Proton connection */
    pn_session_t *ssn;       /* the one session */
    pn_link_t *cbs_out;      /* $cbs request link, or NULL */
    pn_link_t *cbs_in;       /* $cbs response link, or NULL */
    pn_link_t *link;         /* the (first) queue link once attached */
    pn_link_t *links[MAX_LINKS]; /* sender: all its queue links */
    long link_inflight[MAX_LINKS]; /* sender: unsettled per link */
    int nlinks;              /* sender: how many */
    bool closed;             /* the transport is gone */
} conn_t;

static pn_proactor_t *proactor;
static encoded_t data_msg;   /* the message template */
static long sent, acked, rejected, received; /* counters */
static long inflight;        /* sent but not yet settled by the broker */
static double t_first = 0, t_last = 0; /* first send/receive, last one */
static double last_rx_at = 0; /* when the last message arrived */
static double last_progress = 0; /* when the last ack or message came */
static char failure[512];    /* why we stopped early, empty if not */
static bool done_send, done_recv;
static conn_t conns[2];
static int nconns;

static void fail(const char *fmt, ...) {
    if (failure[0]) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(failure, sizeof failure, fmt, ap);
    va_end(ap);
}

static void stamp(void) {
    double t = now_s();
    if (t_first == 0) t_first = t;
    t_last = t;
}

/* Attaches the queue link of c (after CBS, or at once). */
static void attach_queue_link(conn_t *c) {
    if (c->role == ROLE_SENDER) {
        for (int i = 0; i < opt.links; i++) {
            char name[32];
            snprintf(name, sizeof name, "loadgen-sender-%d", i);
            pn_link_t *l = pn_sender(c->ssn, name);
            pn_terminus_set_address(pn_link_target(l), opt.queue);
            pn_link_set_snd_settle_mode(l, PN_SND_UNSETTLED);
            pn_link_set_rcv_settle_mode(l, PN_RCV_FIRST);
            pn_link_set_context(l, (void *)(intptr_t)(i + 1));
            c->links[c->nlinks++] = l;
            if (i > 0) pn_link_open(l);
        }
        c->link = c->links[0];
    } else {
        c->link = pn_receiver(c->ssn, "loadgen-receiver");
        pn_terminus_set_address(pn_link_source(c->link), opt.queue);
        bool rad = strcmp(opt.settle, "rad") == 0;
        pn_link_set_snd_settle_mode(c->link, rad ? PN_SND_SETTLED : PN_SND_UNSETTLED);
        pn_link_set_rcv_settle_mode(c->link, PN_RCV_FIRST);
    }
    pn_link_open(c->link);
    if (c->role == ROLE_RECEIVER) pn_link_flow(c->link, (int)opt.credit);
}

/* Sends on every link while the broker gives credit and the per-link
 * in-flight cap allows. */
static void pump_sender(conn_t *c) {
    if (!c->nlinks || done_send) return;
    for (int i = 0; i < c->nlinks && sent < opt.n; i++) {
        pn_link_t *l = c->links[i];
        while (sent < opt.n && pn_link_credit(l) > 0 && c->link_inflight[i] < opt.max_inflight) {
            uint64_t tag = (uint64_t)sent;
            pn_delivery(l, pn_dtag((const char *)&tag, sizeof tag));
            patch_id(&data_msg, sent);
            pn_link_send(l, data_msg.bytes, data_msg.len);
            pn_link_advance(l);
            sent++;
            inflight++;
            c->link_inflight[i]++;
            if (sent == 1 && t_first == 0) t_first = now_s();
        }
    }
}

static void put_token(conn_t *c) {
    char uri[512];
    encoded_t req;
    snprintf(uri, sizeof uri, "sb://%s/%s", opt.audience_host, opt.queue);
    make_put_token(uri, &req);
    c->cbs_out = pn_sender(c->ssn, "$cbs-sender");
    pn_terminus_set_address(pn_link_target(c->cbs_out), "$cbs");
    pn_terminus_set_address(pn_link_source(c->cbs_out), "$cbs");
    c->cbs_in = pn_receiver(c->ssn, "$cbs-receiver");
    pn_terminus_set_address(pn_link_source(c->cbs_in), "$cbs");
    pn_terminus_set_address(pn_link_target(c->cbs_in), "$cbs");
    pn_link_open(c->cbs_out);
    pn_link_open(c->cbs_in);
    pn_link_flow(c->cbs_in, 1);
    /* Proton buffers the delivery until the broker grants credit. */
    pn_delivery(c->cbs_out, pn_dtag("cbs0", 4));
    pn_link_send(c->cbs_out, req.bytes, req.len);
    pn_link_advance(c->cbs_out);
    free(req.bytes);
}

/* Reads the put-token response: status-code 200/202 means go on. */
static void on_cbs_response(conn_t *c, pn_delivery_t *d) {
    char buf[8192];
    ssize_t n = pn_link_recv(c->cbs_in, buf, sizeof buf);
    pn_delivery_update(d, PN_ACCEPTED);
    pn_delivery_settle(d);
    if (n <= 0) { fail("empty $cbs response"); return; }
    pn_message_t *m = pn_message();
    long status = -1;
    const char *desc = "";
    char descbuf[256] = "";
    if (pn_message_decode(m, buf, (size_t)n) == 0) {
        pn_data_t *p = pn_message_properties(m);
        pn_data_rewind(p);
        if (pn_data_next(p) && pn_data_type(p) == PN_MAP) {
            pn_data_enter(p);
            while (pn_data_next(p)) {
                pn_bytes_t k = pn_data_get_string(p);
                if (pn_data_type(p) == PN_SYMBOL) k = pn_data_get_symbol(p);
                if (!pn_data_next(p)) break;
                if (k.size == 11 && memcmp(k.start, "status-code", 11) == 0) {
                    switch (pn_data_type(p)) {
                    case PN_INT: status = pn_data_get_int(p); break;
                    case PN_LONG: status = (long)pn_data_get_long(p); break;
                    case PN_UINT: status = (long)pn_data_get_uint(p); break;
                    default: break;
                    }
                } else if (k.size == 18 && memcmp(k.start, "status-description", 18) == 0 &&
                           pn_data_type(p) == PN_STRING) {
                    pn_bytes_t s = pn_data_get_string(p);
                    snprintf(descbuf, sizeof descbuf, "%.*s", (int)s.size, s.start);
                    desc = descbuf;
                }
            }
        }
    }
    pn_message_free(m);
    if (status != 200 && status != 202) {
        fail("put-token refused: status %ld %s", status, desc);
        return;
    }
    attach_queue_link(c);
}

static conn_t *conn_of(pn_connection_t *pc) {
    for (int i = 0; i < nconns; i++)
        if (conns[i].pc == pc) return &conns[i];
    return NULL;
}

/* Asks every open connection to close. Proton connections may only be
 * touched from their own event batch, so this wakes them and the close
 * happens in PN_CONNECTION_WAKE. */
static bool closing;
static void close_all(void) {
    if (closing) return;
    closing = true;
    for (int i = 0; i < nconns; i++)
        if (!conns[i].closed) pn_connection_wake(conns[i].pc);
}

static void check_done(void) {
    if (done_send && done_recv) close_all();
}

/* ------------------------------------------------------------------ */
/* The event handler                                                   */
/* ------------------------------------------------------------------ */

static void on_delivery(conn_t *c, pn_delivery_t *d) {
    pn_link_t *l = pn_delivery_link(d);
    if (l == c->cbs_in) {
        if (pn_delivery_readable(d) && !pn_delivery_partial(d)) on_cbs_response(c, d);
        return;
    }
    if (l == c->cbs_out) {
        if (pn_delivery_updated(d)) pn_delivery_settle(d);
        return;
    }
    if (c->role == ROLE_SENDER) {
        if (!pn_delivery_updated(d)) return;
        uint64_t state = pn_delivery_remote_state(d);
        last_progress = now_s();
        if (state == PN_ACCEPTED) {
            acked++;
        } else {
            rejected++;
            pn_condition_t *cond = pn_disposition_condition(pn_delivery_remote(d));
            pn_delivery_tag_t tag = pn_delivery_tag(d);
            uint64_t no = 0;
            memcpy(&no, tag.start, tag.size < 8 ? tag.size : 8);
            fail("delivery %" PRIu64 " refused (state 0x%" PRIx64 "): %s %s", no, state,
                 pn_condition_get_name(cond) ? pn_condition_get_name(cond) : "",
                 pn_condition_get_description(cond) ? pn_condition_get_description(cond) : "");
        }
        intptr_t idx = (intptr_t)pn_link_get_context(l);
        if (idx > 0) c->link_inflight[idx - 1]--;
        pn_delivery_settle(d);
        inflight--;
        if (acked + rejected >= opt.n) {
            done_send = true;
            stamp();
            check_done();
        } else {
            pump_sender(c);
        }
        return;
    }
    /* receiver */
    if (!pn_delivery_readable(d) || pn_delivery_partial(d)) return;
    static char scratch[1 << 16];
    while (pn_link_recv(l, scratch, sizeof scratch) > 0) {
    }
    if (strcmp(opt.settle, "peek") == 0) pn_delivery_update(d, PN_ACCEPTED);
    pn_delivery_settle(d);
    received++;
    stamp();
    last_progress = t_last;
    last_rx_at = t_last;
    if (received >= opt.n) {
        done_recv = true;
        pn_link_close(l);
        check_done();
        return;
    }
    /* Top the window up in chunks so that flow frames stay rare. */
    if (pn_link_credit(l) < opt.credit / 2) pn_link_flow(l, (int)(opt.credit - pn_link_credit(l)));
}

static void handle(pn_event_t *e) {
    pn_connection_t *pc = pn_event_connection(e);
    conn_t *c = pc ? conn_of(pc) : NULL;
    switch (pn_event_type(e)) {
    case PN_CONNECTION_INIT:
        pn_connection_set_container(pc, c->role == ROLE_SENDER ? "loadgen-send" : "loadgen-recv");
        pn_connection_set_hostname(pc, opt.audience_host);
        pn_connection_open(pc);
        c->ssn = pn_session(pc);
        pn_session_open(c->ssn);
        if (opt.sas_key_name)
            put_token(c);
        else
            attach_queue_link(c);
        break;
    case PN_CONNECTION_WAKE:
        if (closing && c && !c->closed) pn_connection_close(pc);
        break;
    case PN_LINK_FLOW:
        if (c && c->role == ROLE_SENDER && pn_link_get_context(pn_event_link(e))) pump_sender(c);
        break;
    case PN_DELIVERY:
        if (c) on_delivery(c, pn_event_delivery(e));
        break;
    case PN_LINK_REMOTE_CLOSE: {
        pn_condition_t *cond = pn_link_remote_condition(pn_event_link(e));
        if (pn_condition_is_set(cond))
            fail("link detached: %s %s", pn_condition_get_name(cond),
                 pn_condition_get_description(cond));
        pn_link_close(pn_event_link(e));
        break;
    }
    case PN_CONNECTION_REMOTE_CLOSE: {
        pn_condition_t *cond = pn_connection_remote_condition(pc);
        if (pn_condition_is_set(cond))
            fail("connection closed: %s %s", pn_condition_get_name(cond),
                 pn_condition_get_description(cond));
        pn_connection_close(pc);
        break;
    }
    case PN_TRANSPORT_CLOSED: {
        pn_condition_t *cond = pn_transport_condition(pn_event_transport(e));
        if (c) c->closed = true;
        if (!(done_send && done_recv) && pn_condition_is_set(cond))
            fail("transport: %s %s", pn_condition_get_name(cond),
                 pn_condition_get_description(cond));
        else if (!(done_send && done_recv))
            fail("transport closed early");
        break;
    }
    default:
        break;
    }
}

/* ------------------------------------------------------------------ */
/* main                                                                */
/* ------------------------------------------------------------------ */

static void parse(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--host")) opt.host = v;
        else if (!strcmp(a, "--port")) opt.port = v;
        else if (!strcmp(a, "--queue")) opt.queue = v;
        else if (!strcmp(a, "--mode")) opt.mode = v;
        else if (!strcmp(a, "--settle")) opt.settle = v;
        else if (!strcmp(a, "--n")) opt.n = atol(v);
        else if (!strcmp(a, "--size")) opt.size = atol(v);
        else if (!strcmp(a, "--credit")) opt.credit = atol(v);
        else if (!strcmp(a, "--max-inflight")) opt.max_inflight = atol(v);
        else if (!strcmp(a, "--links")) opt.links = atol(v);
        else if (!strcmp(a, "--idle-ms")) opt.idle_ms = atol(v);
        else if (!strcmp(a, "--stall-ms")) opt.stall_ms = atol(v);
        else if (!strcmp(a, "--timeout")) opt.timeout_s = atof(v);
        else if (!strcmp(a, "--sas-key-name")) opt.sas_key_name = v;
        else if (!strcmp(a, "--sas-key")) opt.sas_key = v;
        else if (!strcmp(a, "--audience-host")) opt.audience_host = v;
        else usage();
    }
    if (strcmp(opt.mode, "both") && strcmp(opt.mode, "send") && strcmp(opt.mode, "recv")) usage();
    if (strcmp(opt.settle, "rad") && strcmp(opt.settle, "peek")) usage();
    if (opt.n < 0 || opt.size < 0 || opt.credit < 1 || opt.max_inflight < 1) usage();
    if (opt.links < 1 || opt.links > MAX_LINKS) usage();
    if ((opt.sas_key_name == NULL) != (opt.sas_key == NULL)) usage();
}

static void connect_one(role_t role) {
    conn_t *c = &conns[nconns++];
    c->role = role;
    c->pc = pn_connection();
    pn_transport_t *t = pn_transport();
    pn_sasl_allowed_mechs(pn_sasl(t), "ANONYMOUS");
    char addr[PN_MAX_ADDR];
    pn_proactor_addr(addr, sizeof addr, opt.host, opt.port);
    pn_proactor_connect2(proactor, c->pc, t, addr);
}

int main(int argc, char **argv) {
    parse(argc, argv);
    make_data_template(&data_msg);
    proactor = pn_proactor();
    bool want_send = strcmp(opt.mode, "recv") != 0;
    bool want_recv = strcmp(opt.mode, "send") != 0;
    done_send = !want_send || opt.n == 0;
    done_recv = !want_recv || opt.n == 0;
    if (want_send) connect_one(ROLE_SENDER);
    if (want_recv) connect_one(ROLE_RECEIVER);

    double cpu0 = cpu_s(), start = now_s(), deadline = start + opt.timeout_s;
    bool timed_out = false;
    for (;;) {
        bool all_closed = true;
        for (int i = 0; i < nconns; i++) all_closed &= conns[i].closed;
        if (all_closed) break;
        if (failure[0]) close_all();
        double t = now_s();
        /* recv mode: an idle queue means it is drained. */
        if (want_recv && !want_send && !done_recv) {
            double since = t - (last_rx_at > 0 ? last_rx_at : start);
            if (since * 1000 > opt.idle_ms) {
                done_recv = true;
                check_done();
            }
        }
        /* A broker that stops acknowledging or delivering: say so early. */
        double since_progress = t - (last_progress > 0 ? last_progress : start);
        if (!closing && want_send && since_progress * 1000 > opt.stall_ms) {
            fail("stalled: no progress for %ld ms (sent %ld, acked %ld, received %ld)",
                 opt.stall_ms, sent, acked, received);
            close_all();
        }
        if (t > deadline && !timed_out) {
            timed_out = true;
            fail("timeout after %.0f s", opt.timeout_s);
            close_all();
        }
        if (t > deadline + 5) break; /* a broker that will not close */
        pn_proactor_set_timeout(proactor, 100);
        pn_event_batch_t *b = pn_proactor_wait(proactor);
        pn_event_t *e;
        while ((e = pn_event_batch_next(b))) handle(e);
        pn_proactor_done(proactor, b);
    }
    double secs = t_last > t_first ? t_last - t_first : 0;
    long moved = want_recv ? received : acked;
    bool ok = !failure[0] && (want_recv && !want_send ? true : moved >= opt.n);
    printf("{\"mode\":\"%s\",\"settle\":\"%s\",\"n\":%ld,\"sent\":%ld,\"acked\":%ld,"
           "\"received\":%ld,\"seconds\":%.6f,\"rate\":%.1f,\"cpu_s\":%.6f,\"ok\":%s,"
           "\"error\":\"",
           opt.mode, opt.settle, opt.n, sent, acked, received, secs,
           secs > 0 ? moved / secs : 0.0, cpu_s() - cpu0, ok ? "true" : "false");
    for (const char *p = failure; *p; p++)
        putchar(*p == '"' || *p == '\\' ? '\'' : (*p < 0x20 ? ' ' : *p));
    printf("\"}\n");
    fflush(stdout);
    pn_proactor_free(proactor);
    free(data_msg.bytes);
    return ok ? 0 : 1;
}
