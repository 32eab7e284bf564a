/*
 * test_ws.c - the WebSocket layer (core/src/ws.c), client and server, in
 * memory: no sockets, no sleeps.
 *
 * Divided as the layer is: known vectors (RFC 6455's accept key, the
 * request the client writes); client<->server round trips through both
 * layers, fed in chunks from one byte up, with fragmentation, pings, the
 * close handshake and held output; the client's checks of the 101 answer;
 * the server's checks of the upgrade request; every frame-level violation
 * with the close code the RFC assigns to it, hand-built frames being fed
 * to a ready peer; backpressure through small FIFO bounds; the end of the
 * stream; and a sweep that makes each allocation fail in turn. Regression
 * cases found by fuzzing are at the end, each naming its cause.
 */
#include "ws.h"
#include "proxy.h"

#include <sbus/sbus.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The engine's allocator hook (alloc.c). */
void sbus_set_allocator(void *(*m)(size_t), void *(*r)(void *, size_t),
                        void (*f)(void *));

static int failures;
#define CHECK(c)                                                             \
    do {                                                                     \
        if (!(c)) {                                                          \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, \
                    #c);                                                     \
            failures++;                                                      \
        }                                                                    \
    } while (0)
#define CHECK_TEXT(l, s)                                                     \
    do {                                                                     \
        const char *t_;                                                      \
        sbusi_layer_error((l), &t_);                                         \
        if (!strstr(t_, (s))) {                                              \
            fprintf(stderr, "%s:%d: text \"%s\" lacks \"%s\"\n", __FILE__,   \
                    __LINE__, t_, (s));                                      \
            failures++;                                                      \
        }                                                                    \
    } while (0)

static const uint8_t KEY[16] = "the sample nonce"; /* RFC 6455 1.3 */

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

static sbusi_layer_t *client_with(sbusi_ws_opts_t *o)
{
    sbusi_layer_t *l = NULL;
    int rc = sbusi_ws_new(o, &l);
    CHECK(rc == 0);
    return l;
}

static void client_opts(sbusi_ws_opts_t *o)
{
    sbusi_ws_opts_init(o, SBUSI_WS_CLIENT);
    o->host = "ns.servicebus.windows.net";
    memcpy(o->key, KEY, 16);
    memcpy(o->mask_seed, "0123456789abcdef", 16);
}

static sbusi_layer_t *client(void)
{
    sbusi_ws_opts_t o;
    client_opts(&o);
    return client_with(&o);
}

static sbusi_layer_t *server_with(sbusi_ws_opts_t *o)
{
    sbusi_layer_t *l = NULL;
    CHECK(sbusi_ws_new(o, &l) == 0);
    return l;
}

static sbusi_layer_t *server(void)
{
    sbusi_ws_opts_t o;
    sbusi_ws_opts_init(&o, SBUSI_WS_SERVER);
    return server_with(&o);
}

/* Feeds p[0..n) to l in chunks of `chunk`, draining nothing; returns the
 * last return code. Stops early on error. */
static int feed(sbusi_layer_t *l, const void *p, size_t n, size_t chunk)
{
    const uint8_t *b = p;
    size_t off = 0;
    int rc = 0;
    while (off < n && rc == 0) {
        size_t k = n - off < chunk ? n - off : chunk, used = 0;
        rc = sbusi_layer_input(l, b + off, k, &used);
        CHECK(used <= k);
        if (rc == 0 && used == 0)
            break; /* up is full: caller drains */
        off += used;
    }
    return rc;
}

static int feed_str(sbusi_layer_t *l, const char *s)
{
    return feed(l, s, strlen(s), (size_t)-1);
}

/* Moves a's down FIFO into b, `chunk` bytes per input call. */
static int move(sbusi_layer_t *a, sbusi_layer_t *b, size_t chunk)
{
    int rc = 0;
    while (sbusi_fifo_len(&a->down) && rc == 0) {
        size_t n = sbusi_fifo_len(&a->down), used = 0;
        if (n > chunk)
            n = chunk;
        rc = sbusi_layer_input(b, sbusi_fifo_data(&a->down), n, &used);
        sbusi_fifo_consume(&a->down, used);
        if (used == 0)
            break;
    }
    return rc;
}

/* Shuttles bytes both ways until neither side has anything to send. */
static void shuttle(sbusi_layer_t *a, sbusi_layer_t *b, size_t chunk)
{
    for (int i = 0; i < 100000; i++) {
        if (!sbusi_fifo_len(&a->down) && !sbusi_fifo_len(&b->down))
            return;
        move(a, b, chunk);
        move(b, a, chunk);
    }
    CHECK(!"shuttle did not settle");
}

/* Takes everything from l's up FIFO into out (cap bytes), returns count. */
static size_t take_up(sbusi_layer_t *l, uint8_t *out, size_t cap)
{
    size_t n = sbusi_fifo_len(&l->up);
    if (n > cap)
        n = cap;
    memcpy(out, sbusi_fifo_data(&l->up), n);
    sbusi_fifo_consume(&l->up, n);
    return n;
}

/* Writes all of p through l's output, draining nothing. */
static int out_all(sbusi_layer_t *l, const void *p, size_t n)
{
    size_t used = 0;
    int rc = sbusi_layer_output(l, p, n, &used);
    CHECK(rc != 0 || used == n);
    return rc;
}

/* The 101 answer the client with KEY expects, plus `extra` fields. */
static void answer_101(char *out, size_t cap, const char *extra,
                       const char *proto)
{
    char acc[29];
    sbusi_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", 24, acc);
    snprintf(out, cap,
             "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s%s%s%s"
             "\r\n", acc, proto ? "Sec-WebSocket-Protocol: " : "",
             proto ? proto : "", proto ? "\r\n" : "", extra);
}

/* A client that received a valid 101; its down FIFO emptied. */
static sbusi_layer_t *ready_client(sbusi_ws_opts_t *o)
{
    char ans[512];
    sbusi_ws_opts_t d;
    if (!o) {
        client_opts(&d);
        o = &d;
    }
    sbusi_layer_t *c = client_with(o);
    answer_101(ans, sizeof ans, "", "AMQPWSB10");
    CHECK(feed_str(c, ans) == 0);
    CHECK(sbusi_layer_ready(c));
    sbusi_fifo_consume(&c->down, (size_t)-1);
    return c;
}

static const char *REQUEST =
    "GET /$servicebus/websocket/ HTTP/1.1\r\nHost: localhost\r\n"
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: AMQPWSB10\r\n\r\n";

/* A server that accepted REQUEST; its down FIFO emptied. */
static sbusi_layer_t *ready_server(sbusi_ws_opts_t *o)
{
    sbusi_layer_t *s = o ? server_with(o) : server();
    CHECK(feed_str(s, REQUEST) == 0);
    CHECK(sbusi_layer_ready(s));
    sbusi_fifo_consume(&s->down, (size_t)-1);
    return s;
}

/* Builds a frame into out; returns its size. len_form 0: minimal, 126 or
 * 127: force that length encoding. */
static size_t frame(uint8_t *out, int b0, int masked, const void *p, size_t n,
                    int len_form)
{
    static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    size_t h = 2;
    out[0] = (uint8_t)b0;
    int form = len_form ? len_form : n < 126 ? 0 : n <= 0xffff ? 126 : 127;
    if (form == 0) {
        out[1] = (uint8_t)n;
    } else if (form == 126) {
        out[1] = 126;
        out[2] = (uint8_t)(n >> 8);
        out[3] = (uint8_t)n;
        h = 4;
    } else {
        out[1] = 127;
        for (int i = 0; i < 8; i++)
            out[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
        h = 10;
    }
    if (masked) {
        out[1] |= 0x80;
        memcpy(out + h, mask, 4);
        h += 4;
    }
    for (size_t i = 0; i < n; i++)
        out[h + i] = ((const uint8_t *)p)[i] ^ (masked ? mask[i & 3] : 0);
    return h + n;
}

/* Decodes the first frame of l's down FIFO: opcode, and for a close frame
 * its code (0 if none). Returns -1 if down holds no whole frame. */
static int first_frame(sbusi_layer_t *l, int *opcode, unsigned *code)
{
    const uint8_t *p = sbusi_fifo_data(&l->down);
    size_t n = sbusi_fifo_len(&l->down);
    if (n < 2)
        return -1;
    size_t len = p[1] & 0x7f, h = 2;
    if (len >= 126)
        return -1; /* control frames only here */
    uint8_t m[4] = {0, 0, 0, 0};
    if (p[1] & 0x80) {
        memcpy(m, p + 2, 4);
        h = 6;
    }
    if (n < h + len)
        return -1;
    *opcode = p[0] & 0x0f;
    *code = len >= 2 ? (unsigned)((p[h] ^ m[0]) << 8 | (p[h + 1] ^ m[1])) : 0;
    return 0;
}

/* Feeds one frame to a ready client and expects failure with close code
 * `code` sent and `text` in the reason. */
static void client_rejects(const uint8_t *f, size_t n, unsigned code,
                           const char *text)
{
    sbusi_layer_t *c = ready_client(NULL);
    int rc = feed(c, f, n, 3);
    CHECK(rc == SBUS_ECONNECTION);
    CHECK(sbusi_layer_error(c, NULL) == SBUS_ECONNECTION);
    CHECK(sbusi_ws_sent_close(c) == code);
    int op = -1;
    unsigned got = 0;
    CHECK(first_frame(c, &op, &got) == 0 && op == 8 && got == code);
    CHECK_TEXT(c, text);
    size_t used = 99;
    CHECK(sbusi_layer_input(c, f, n, &used) == SBUS_ECONNECTION && used == 0);
    CHECK(sbusi_layer_output(c, f, n, &used) == SBUS_ECONNECTION);
    sbusi_layer_free(c);
}

/* ------------------------------------------------------------------ */
/* Known vectors                                                       */
/* ------------------------------------------------------------------ */

static void test_accept_vector(void)
{
    char out[29];
    CHECK(sbusi_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", 24, out) == 0);
    CHECK(strcmp(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == 0);
}

static void test_client_request(void)
{
    sbusi_ws_opts_t o;
    client_opts(&o);
    o.host = "ns.servicebus.windows.net:443";
    o.extra_headers = "User-Agent: servicebus/0.1\r\n";
    sbusi_layer_t *c = client_with(&o);
    const char *want =
        "GET /$servicebus/websocket/ HTTP/1.1\r\n"
        "Host: ns.servicebus.windows.net:443\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: AMQPWSB10\r\n"
        "User-Agent: servicebus/0.1\r\n\r\n";
    CHECK(sbusi_fifo_len(&c->down) == strlen(want));
    CHECK(memcmp(sbusi_fifo_data(&c->down), want, strlen(want)) == 0);
    CHECK(c->state == SBUSI_LAYER_HANDSHAKE);
    sbusi_layer_free(c);
}

static void test_client_bad_options(void)
{
    sbusi_ws_opts_t o;
    sbusi_layer_t *l = (sbusi_layer_t *)1;
    client_opts(&o);
    o.host = NULL;
    CHECK(sbusi_ws_new(&o, &l) == SBUS_EINVAL && l == NULL);
    client_opts(&o);
    o.host = "evil\r\nX-Injected: 1";
    CHECK(sbusi_ws_new(&o, &l) == SBUS_EINVAL);
    client_opts(&o);
    o.path = "no-slash";
    CHECK(sbusi_ws_new(&o, &l) == SBUS_EINVAL);
    client_opts(&o);
    o.path = "/a b";
    CHECK(sbusi_ws_new(&o, &l) == SBUS_EINVAL);
    client_opts(&o);
    o.extra_headers = "NoColon\r\n";
    CHECK(sbusi_ws_new(&o, &l) == SBUS_EINVAL);
    client_opts(&o);
    o.extra_headers = "X: 1\r\n\r\nGET / HTTP/1.1\r\n";
    CHECK(sbusi_ws_new(&o, &l) == SBUS_EINVAL);
    client_opts(&o);
    o.extra_headers = "X: 1"; /* no line ending */
    CHECK(sbusi_ws_new(&o, &l) == SBUS_EINVAL);
    client_opts(&o);
    o.subprotocol = "AMQP WSB10";
    CHECK(sbusi_ws_new(&o, &l) == SBUS_EINVAL);
    CHECK(sbusi_ws_new(NULL, &l) == SBUS_EINVAL);
}

/* ------------------------------------------------------------------ */
/* Round trips                                                         */
/* ------------------------------------------------------------------ */

static void round_trip(size_t chunk, size_t frag_c, size_t frag_s)
{
    sbusi_ws_opts_t co, so;
    client_opts(&co);
    co.host = "localhost";
    co.out_fragment = frag_c;
    sbusi_ws_opts_init(&so, SBUSI_WS_SERVER);
    so.out_fragment = frag_s;
    sbusi_layer_t *c = client_with(&co), *s = server_with(&so);
    /* AMQP writes its header before the upgrade is done: held. */
    CHECK(out_all(c, "AMQP\x03\x01\x00\x00", 8) == 0);
    CHECK(out_all(s, "early", 5) == 0);
    shuttle(c, s, chunk);
    CHECK(sbusi_layer_ready(c) && sbusi_layer_ready(s));
    CHECK(strcmp(sbusi_ws_request_target(s), "/$servicebus/websocket/") == 0);
    uint8_t got[70000];
    CHECK(take_up(s, got, sizeof got) == 8 && !memcmp(got, "AMQP\x03", 5));
    CHECK(take_up(c, got, sizeof got) == 5 && !memcmp(got, "early", 5));

    static uint8_t big[66000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7 + 3);
    CHECK(out_all(c, big, sizeof big) == 0);
    CHECK(out_all(c, "", 0) == 0);
    CHECK(out_all(c, "tail", 4) == 0);
    CHECK(sbusi_ws_ping(c, (const uint8_t *)"hb", 2) == 0);
    shuttle(c, s, chunk);
    CHECK(take_up(s, got, sizeof got) == sizeof big + 4);
    CHECK(!memcmp(got, big, sizeof big));
    CHECK(!memcmp(got + sizeof big, "tail", 4));
    CHECK(sbusi_fifo_len(&c->up) == 0); /* the pong carries no data */

    CHECK(out_all(s, big, 300) == 0);
    CHECK(sbusi_ws_ping(s, NULL, 0) == 0);
    shuttle(c, s, chunk);
    CHECK(take_up(c, got, sizeof got) == 300 && !memcmp(got, big, 300));

    CHECK(sbusi_ws_close(c, 1001, "going away") == 0);
    CHECK(c->state == SBUSI_LAYER_CLOSING);
    size_t used;
    CHECK(sbusi_layer_output(c, big, 1, &used) == SBUS_ESTATE);
    shuttle(c, s, chunk);
    CHECK(sbusi_layer_closed(c) && sbusi_layer_closed(s));
    const char *why;
    CHECK(sbusi_ws_peer_close(s, &why) == 1001 && !strcmp(why, "going away"));
    CHECK(sbusi_ws_peer_close(c, NULL) == 1001); /* the server echoed it */
    CHECK(strstr(s->text, "closed by the peer: 1001 going away") != NULL);
    CHECK(strstr(c->text, "the peer answered our close") != NULL);
    CHECK(sbusi_layer_input(c, (const uint8_t *)"x", 1, &used) == 0 &&
          used == 1); /* ignored after the close */
    CHECK(sbusi_layer_eof(c) == 0);
    sbusi_layer_free(c);
    sbusi_layer_free(s);
}

static void test_round_trips(void)
{
    round_trip((size_t)-1, 0, 0);
    round_trip(1, 0, 0);      /* a byte at a time */
    round_trip(7, 5, 3);      /* fragmented both ways */
    round_trip(4096, 1000, 0);
    round_trip(1, 65535, 126);
}

static void test_server_paths(void)
{
    static const char *ok[] = {"/$servicebus/websocket",
                               "/$servicebus/websocket/",
                               "/$servicebus/websocket?x=1"};
    for (int i = 0; i < 3; i++) {
        sbusi_ws_opts_t co;
        client_opts(&co);
        co.path = ok[i];
        sbusi_layer_t *c = client_with(&co), *s = server();
        shuttle(c, s, 13);
        CHECK(sbusi_layer_ready(c) && sbusi_layer_ready(s));
        CHECK(strcmp(sbusi_ws_request_target(s), ok[i]) == 0);
        sbusi_layer_free(c);
        sbusi_layer_free(s);
    }
    sbusi_ws_opts_t so;
    sbusi_ws_opts_init(&so, SBUSI_WS_SERVER);
    so.path = "/custom/";
    sbusi_ws_opts_t co;
    client_opts(&co);
    co.path = "/custom";
    sbusi_layer_t *c = client_with(&co), *s = server_with(&so);
    shuttle(c, s, 100);
    CHECK(sbusi_layer_ready(c) && sbusi_layer_ready(s));
    sbusi_layer_free(c);
    sbusi_layer_free(s);
}

static void test_held_output_bounded(void)
{
    sbusi_ws_opts_t o;
    client_opts(&o);
    sbusi_layer_t *c = (sbusi_layer_t *)1;
    o.buf_max = SBUSI_WS_MIN_BUF - 1;
    CHECK(sbusi_ws_new(&o, &c) == SBUS_EINVAL && c == NULL);
    o.buf_max = SBUSI_WS_MIN_BUF;
    c = client_with(&o);
    static uint8_t data[100];
    size_t used = 0;
    CHECK(sbusi_layer_output(c, data, sizeof data, &used) == 0 &&
          used == SBUSI_WS_MIN_BUF);
    sbusi_layer_free(c);
}

/* ------------------------------------------------------------------ */
/* The client's checks of the answer                                   */
/* ------------------------------------------------------------------ */

static void client_answer_fails(const char *answer, const char *text)
{
    sbusi_layer_t *c = client();
    CHECK(feed(c, answer, strlen(answer), 1) == SBUS_ECONNECTION);
    CHECK(c->state == SBUSI_LAYER_ERROR);
    CHECK_TEXT(c, text);
    sbusi_layer_free(c);
}

static void test_client_answer_errors(void)
{
    char a[1024];
    client_answer_fails("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                        "websocket upgrade refused: HTTP/1.1 404 Not Found");
    client_answer_fails("HTTP/1.1 200 OK\r\n\r\n",
                        "websocket upgrade refused: HTTP/1.1 200 OK");
    answer_101(a, sizeof a, "", NULL);
    client_answer_fails(a, "did not accept subprotocol AMQPWSB10: HTTP/1.1 "
                           "101 Switching Protocols");
    answer_101(a, sizeof a, "", "chat");
    client_answer_fails(a, "chose subprotocol 'chat' instead of AMQPWSB10");
    answer_101(a, sizeof a, "", "amqpwsb10");
    client_answer_fails(a, "chose subprotocol 'amqpwsb10'");
    answer_101(a, sizeof a, "Sec-WebSocket-Extensions: permessage-deflate\r\n",
               "AMQPWSB10");
    client_answer_fails(a, "extension");
    client_answer_fails("HTTP/1.1 101 Switching Protocols\r\nUpgrade: "
                        "websocket\r\nConnection: Upgrade\r\n"
                        "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n"
                        "Sec-WebSocket-Protocol: AMQPWSB10\r\n\r\n",
                        "wrong Sec-WebSocket-Accept");
    client_answer_fails("HTTP/1.1 101 Switching Protocols\r\n"
                        "Connection: Upgrade\r\n\r\n",
                        "lacks \"Upgrade: websocket\"");
    client_answer_fails("HTTP/1.1 101 Switching Protocols\r\n"
                        "Upgrade: websocket\r\n\r\n",
                        "lacks \"Connection: Upgrade\"");
    client_answer_fails("HTTP/1.0 101 Switching Protocols\r\n\r\n",
                        "is not HTTP/1.1");
    client_answer_fails("HTTP/1.1 101 Switching Protocols\r\nBad Field\r\n\r\n",
                        "malformed answer");
    client_answer_fails("SSH-2.0-OpenSSH_9.2\r\n\r\n", "malformed answer");
    client_answer_fails("HTTP/1.1 502 Bad\x01Gateway\r\n\r\n",
                        "malformed answer");

    /* a head that never ends */
    sbusi_layer_t *c = client();
    static char junk[SBUSI_HTTP_MAX_HEAD + 10];
    memset(junk, 'a', sizeof junk);
    CHECK(feed(c, junk, sizeof junk, 1000) == SBUS_ECONNECTION);
    CHECK_TEXT(c, "larger than 16384");
    sbusi_layer_free(c);

    /* the stream ends during the upgrade */
    c = client();
    CHECK(feed_str(c, "HTTP/1.1 101 Swi") == 0);
    CHECK(sbusi_layer_eof(c) == SBUS_ECONNECTION);
    CHECK_TEXT(c, "ended during the upgrade");
    sbusi_layer_free(c);

    /* several Connection values and case differences are fine */
    char acc[29];
    sbusi_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", 24, acc);
    snprintf(a, sizeof a,
             "HTTP/1.1 101 OK\nupgrade: WebSocket\nCONNECTION: keep-alive, "
             "upgrade\nsec-websocket-accept:%s\nsec-websocket-protocol: "
             " AMQPWSB10 \n\n", acc);
    c = client();
    CHECK(feed(c, a, strlen(a), 2) == 0 && sbusi_layer_ready(c));
    sbusi_layer_free(c);
}

static void test_bytes_after_the_head(void)
{
    char a[600];
    uint8_t f[64];
    answer_101(a, sizeof a, "", "AMQPWSB10");
    size_t hl = strlen(a);
    size_t fl = frame(f, 0x82, 0, "AMQP\0\1\0\0", 8, 0);
    fl += frame(f + fl, 0x89, 0, "p", 1, 0); /* a ping too */
    memcpy(a + hl, f, fl);
    for (size_t chunk = 1; chunk <= hl + fl; chunk += 37) {
        sbusi_layer_t *c = client();
        sbusi_fifo_consume(&c->down, (size_t)-1);
        CHECK(feed(c, a, hl + fl, chunk) == 0);
        CHECK(sbusi_layer_ready(c));
        CHECK(sbusi_fifo_len(&c->up) == 8 &&
              !memcmp(sbusi_fifo_data(&c->up), "AMQP\0\1\0\0", 8));
        int op;
        unsigned code;
        CHECK(first_frame(c, &op, &code) == 0 && op == 10);
        sbusi_layer_free(c);
    }
    /* and a server that gets frames right behind the request */
    sbusi_layer_t *s = server();
    char r[600];
    size_t rl = strlen(REQUEST);
    memcpy(r, REQUEST, rl);
    size_t n = frame((uint8_t *)r + rl, 0x82, 1, "hello", 5, 0);
    CHECK(feed(s, r, rl + n, (size_t)-1) == 0);
    CHECK(sbusi_fifo_len(&s->up) == 5 &&
          !memcmp(sbusi_fifo_data(&s->up), "hello", 5));
    sbusi_layer_free(s);
}

/* ------------------------------------------------------------------ */
/* The server's checks of the request                                  */
/* ------------------------------------------------------------------ */

static void server_refuses(const char *req, const char *status,
                           const char *text)
{
    sbusi_layer_t *s = server();
    CHECK(feed(s, req, strlen(req), 5) == SBUS_ECONNECTION);
    CHECK(s->state == SBUSI_LAYER_ERROR);
    CHECK_TEXT(s, text);
    size_t n = strlen(status);
    CHECK(sbusi_fifo_len(&s->down) > n &&
          !memcmp(sbusi_fifo_data(&s->down), status, n));
    /* the answer parses, and its Content-Length covers the body */
    sbusi_http_head_t h;
    size_t next, end = sbusi_http_head_end(sbusi_fifo_data(&s->down),
                                           sbusi_fifo_len(&s->down), 0, &next);
    CHECK(end > 0 && sbusi_http_parse(sbusi_fifo_data(&s->down), end, 0, &h) ==
                         0);
    const sbusi_http_field_t *cl = sbusi_http_find(&h, "Content-Length");
    CHECK(cl && (size_t)atoi(cl->value) == sbusi_fifo_len(&s->down) - end);
    sbusi_layer_free(s);
}

static void test_server_refusals(void)
{
    const char *base = "Host: h\r\nUpgrade: websocket\r\nConnection: Upgrade"
                       "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    char r[1024];
    snprintf(r, sizeof r, "GET /other HTTP/1.1\r\n%sSec-WebSocket-Version: 13"
             "\r\nSec-WebSocket-Protocol: AMQPWSB10\r\n\r\n", base);
    server_refuses(r, "HTTP/1.1 404 Not Found", "404");
    snprintf(r, sizeof r, "GET /$servicebus/websocket HTTP/1.1\r\n%s"
             "Sec-WebSocket-Version: 13\r\n\r\n", base);
    server_refuses(r, "HTTP/1.1 400 Bad Request", "subprotocol AMQPWSB10");
    snprintf(r, sizeof r, "GET /$servicebus/websocket HTTP/1.1\r\n%s"
             "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, "
             "superchat\r\n\r\n", base);
    server_refuses(r, "HTTP/1.1 400 Bad Request", "subprotocol AMQPWSB10");
    snprintf(r, sizeof r, "GET /$servicebus/websocket HTTP/1.1\r\n%s"
             "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Protocol: AMQPWSB10"
             "\r\n\r\n", base);
    server_refuses(r, "HTTP/1.1 426 Upgrade Required", "Version 13");
    snprintf(r, sizeof r, "POST /$servicebus/websocket HTTP/1.1\r\n%s"
             "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: AMQPWSB10"
             "\r\n\r\n", base);
    server_refuses(r, "HTTP/1.1 400 Bad Request", "GET");
    server_refuses("GET /$servicebus/websocket HTTP/1.1\r\nHost: h\r\n\r\n",
                   "HTTP/1.1 400 Bad Request", "not a WebSocket upgrade");
    server_refuses("GET /$servicebus/websocket HTTP/1.1\r\nUpgrade: websocket"
                   "\r\nConnection: Upgrade\r\n\r\n",
                   "HTTP/1.1 400 Bad Request", "Host");
    server_refuses("GET /$servicebus/websocket HTTP/1.1\r\nHost: h\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: short==\r\nSec-WebSocket-Version: 13"
                   "\r\nSec-WebSocket-Protocol: AMQPWSB10\r\n\r\n",
                   "HTTP/1.1 400 Bad Request", "Sec-WebSocket-Key");
    server_refuses("GET /$servicebus/websocket HTTP/1.1\r\nHost: h\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25j!!==\r\n"
                   "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: "
                   "AMQPWSB10\r\n\r\n",
                   "HTTP/1.1 400 Bad Request", "Sec-WebSocket-Key");
    server_refuses("GET /$servicebus/websocket HTTP/1.1\r\nHost: h\r\n"
                   " folded\r\n\r\n", "HTTP/1.1 400 Bad Request", "malformed");
    server_refuses("GET /$servicebus/websocket HTTP/1.0\r\n\r\n",
                   "HTTP/1.1 400 Bad Request", "HTTP/1.1");
    static char big[SBUSI_HTTP_MAX_HEAD + 1];
    memset(big, 'G', sizeof big - 1);
    server_refuses(big, "HTTP/1.1 400 Bad Request", "too large");
    /* the client sees the refusal by its status line */
    snprintf(r, sizeof r, "HTTP/1.1 404 Not Found\r\n\r\n");
    client_answer_fails(r, "404 Not Found");
}

static void test_server_protocol_list(void)
{
    const char *req =
        "GET /$servicebus/websocket HTTP/1.1\r\nHost: h\r\n"
        "Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n"
        "Sec-WebSocket-Protocol: x, AMQPWSB10\r\n\r\n";
    sbusi_layer_t *s = server();
    CHECK(feed_str(s, req) == 0 && sbusi_layer_ready(s));
    const char *want = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket"
                       "\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
                       "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol"
                       ": AMQPWSB10\r\n\r\n";
    CHECK(sbusi_fifo_len(&s->down) == strlen(want) &&
          !memcmp(sbusi_fifo_data(&s->down), want, strlen(want)));
    sbusi_layer_free(s);
}

/* ------------------------------------------------------------------ */
/* Frame violations                                                    */
/* ------------------------------------------------------------------ */

static void test_client_frame_errors(void)
{
    uint8_t f[200], pl[130];
    memset(pl, 'x', sizeof pl);
    size_t n;
    n = frame(f, 0x82, 1, "a", 1, 0);
    client_rejects(f, n, 1002, "masked frame from the server");
    n = frame(f, 0xc2, 0, "a", 1, 0);
    client_rejects(f, n, 1002, "reserved bits");
    n = frame(f, 0x83, 0, "a", 1, 0);
    client_rejects(f, n, 1002, "unknown opcode");
    n = frame(f, 0x8b, 0, "a", 1, 0);
    client_rejects(f, n, 1002, "unknown opcode");
    n = frame(f, 0x81, 0, "a", 1, 0);
    client_rejects(f, n, 1003, "text frame");
    n = frame(f, 0x09, 0, "a", 1, 0);
    client_rejects(f, n, 1002, "fragmented control frame");
    n = frame(f, 0x89, 0, pl, 126, 0);
    client_rejects(f, n, 1002, "control frame longer than 125");
    n = frame(f, 0x80, 0, "a", 1, 0);
    client_rejects(f, n, 1002, "continuation frame without a message");
    n = frame(f, 0x02, 0, "a", 1, 0);
    n += frame(f + n, 0x82, 0, "b", 1, 0);
    client_rejects(f, n, 1002, "new message inside a fragmented one");
    n = frame(f, 0x82, 0, "abc", 3, 126);
    client_rejects(f, n, 1002, "not minimally encoded");
    n = frame(f, 0x82, 0, pl, 130, 127);
    client_rejects(f, n, 1002, "not minimally encoded");
    memcpy(f, "\x82\x7f\x80\0\0\0\0\0\0\1", 10);
    client_rejects(f, 10, 1002, "top bit");
    n = frame(f, 0x88, 0, "\x03", 1, 0);
    client_rejects(f, n, 1002, "1-byte payload");
    static const unsigned bad[] = {0, 999, 1004, 1005, 1006, 1015, 1016, 2999,
                                   5000, 65535};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t c[2] = {(uint8_t)(bad[i] >> 8), (uint8_t)bad[i]};
        n = frame(f, 0x88, 0, c, 2, 0);
        client_rejects(f, n, 1002, "invalid close code");
    }
    n = frame(f, 0x88, 0, "\x03\xe8\xc0\xaf", 4, 0); /* overlong '/' */
    client_rejects(f, n, 1007, "not UTF-8");
    n = frame(f, 0x88, 0, "\x03\xe8\xed\xa0\x80", 5, 0); /* a surrogate */
    client_rejects(f, n, 1007, "not UTF-8");
    n = frame(f, 0x88, 0, "\x03\xe8\xf4\x90\x80\x80", 6, 0); /* > U+10FFFF */
    client_rejects(f, n, 1007, "not UTF-8");
    n = frame(f, 0x88, 0, "\x03\xe8\xe2\x82", 4, 0); /* truncated */
    client_rejects(f, n, 1007, "not UTF-8");
}

static void test_limits(void)
{
    sbusi_ws_opts_t o;
    uint8_t f[200];
    client_opts(&o);
    o.max_frame = 10;
    sbusi_layer_t *c = ready_client(&o);
    size_t n = frame(f, 0x82, 0, "0123456789", 10, 0);
    CHECK(feed(c, f, n, 100) == 0 && sbusi_fifo_len(&c->up) == 10);
    n = frame(f, 0x82, 0, "0123456789A", 11, 0);
    CHECK(feed(c, f, n, 100) == SBUS_ECONNECTION);
    CHECK(sbusi_ws_sent_close(c) == 1009);
    CHECK_TEXT(c, "frame larger than the limit");
    CHECK(sbusi_fifo_len(&c->up) == 10); /* nothing of the bad frame */
    sbusi_layer_free(c);

    client_opts(&o);
    o.max_message = 12;
    c = ready_client(&o);
    n = frame(f, 0x02, 0, "01234", 5, 0);
    n += frame(f + n, 0x89, 0, "ping", 4, 0); /* control in between: fine */
    n += frame(f + n, 0x00, 0, "56789", 5, 0);
    n += frame(f + n, 0x80, 0, "AB", 2, 0);
    n += frame(f + n, 0x82, 0, "0123456789AB", 12, 0);
    CHECK(feed(c, f, n, 1) == 0 && sbusi_fifo_len(&c->up) == 24);
    int op;
    unsigned code;
    CHECK(first_frame(c, &op, &code) == 0 && op == 10);
    n = frame(f, 0x02, 0, "0123456", 7, 0);
    n += frame(f + n, 0x80, 0, "789ABC", 6, 0);
    CHECK(feed(c, f, n, 1) == SBUS_ECONNECTION);
    CHECK(sbusi_ws_sent_close(c) == 1009);
    CHECK_TEXT(c, "message larger than the limit");
    sbusi_layer_free(c);
}

static void test_server_frame_errors(void)
{
    uint8_t f[64];
    sbusi_layer_t *s = ready_server(NULL);
    size_t n = frame(f, 0x82, 0, "abc", 3, 0);
    CHECK(feed(s, f, n, 1) == SBUS_ECONNECTION);
    CHECK(sbusi_ws_sent_close(s) == 1002);
    CHECK_TEXT(s, "unmasked frame from the client");
    int op;
    unsigned code;
    /* the server's close frame is unmasked */
    CHECK(first_frame(s, &op, &code) == 0 && op == 8 && code == 1002);
    CHECK((sbusi_fifo_data(&s->down)[1] & 0x80) == 0);
    sbusi_layer_free(s);

    s = ready_server(NULL);
    n = frame(f, 0x82, 1, "abc", 3, 0);
    n += frame(f + n, 0x88, 1, "", 0, 0);
    CHECK(feed(s, f, n, 2) == 0 && sbusi_layer_closed(s));
    CHECK(sbusi_ws_peer_close(s, NULL) == 1005);
    CHECK(first_frame(s, &op, &code) == 0 && op == 8 && code == 1000);
    CHECK(sbusi_fifo_len(&s->up) == 3);
    sbusi_layer_free(s);
}

static void test_close_rules(void)
{
    uint8_t f[64];
    int op;
    unsigned code;
    /* a ping after our close gets no pong; the peer's close completes */
    sbusi_layer_t *c = ready_client(NULL);
    CHECK(sbusi_layer_shutdown(c) == 0 && c->state == SBUSI_LAYER_CLOSING);
    CHECK(first_frame(c, &op, &code) == 0 && op == 8 && code == 1000);
    sbusi_fifo_consume(&c->down, (size_t)-1);
    size_t n = frame(f, 0x89, 0, "p", 1, 0);
    n += frame(f + n, 0x82, 0, "late", 4, 0);
    n += frame(f + n, 0x88, 0, "\x03\xe8ok", 4, 0);
    CHECK(feed(c, f, n, 1) == 0 && sbusi_layer_closed(c));
    CHECK(sbusi_fifo_len(&c->down) == 0);
    CHECK(sbusi_fifo_len(&c->up) == 4); /* data before the close still counts */
    CHECK(sbusi_layer_shutdown(c) == 0); /* idempotent */
    sbusi_layer_free(c);

    /* bad arguments to close and ping */
    c = ready_client(NULL);
    CHECK(sbusi_ws_close(c, 1005, NULL) == SBUS_EINVAL);
    CHECK(sbusi_ws_close(c, 999, NULL) == SBUS_EINVAL);
    CHECK(sbusi_ws_close(c, 1000, "\xff") == SBUS_EINVAL);
    static char long_reason[200];
    memset(long_reason, 'r', 199);
    CHECK(sbusi_ws_close(c, 1000, long_reason) == SBUS_EINVAL);
    uint8_t p126[126] = {0};
    CHECK(sbusi_ws_ping(c, p126, 126) == SBUS_EINVAL);
    CHECK(sbusi_ws_close(c, 4000, "app") == 0);
    CHECK(sbusi_ws_ping(c, p126, 1) == SBUS_ESTATE);
    /* the stream ends while we wait for the peer's close: just closed */
    CHECK(sbusi_layer_eof(c) == 0 && sbusi_layer_closed(c));
    sbusi_layer_free(c);

    /* the stream ends while open: an error with 1006 */
    c = ready_client(NULL);
    CHECK(sbusi_layer_eof(c) == SBUS_ECONNECTION);
    CHECK(sbusi_ws_sent_close(c) == 1006);
    CHECK_TEXT(c, "without a close frame");
    sbusi_layer_free(c);

    /* closing before the upgrade sends nothing */
    c = client();
    size_t before = sbusi_fifo_len(&c->down);
    CHECK(sbusi_layer_shutdown(c) == 0 && sbusi_layer_closed(c));
    CHECK(sbusi_fifo_len(&c->down) == before);
    sbusi_layer_free(c);
}

/* ------------------------------------------------------------------ */
/* Masks, backpressure                                                 */
/* ------------------------------------------------------------------ */

static void fixed_rng(void *ctx, uint8_t *out, size_t n)
{
    int *calls = ctx;
    (*calls)++;
    for (size_t i = 0; i < n; i++)
        out[i] = (uint8_t)(0xa0 + i);
}

static void test_masks(void)
{
    int calls = 0;
    sbusi_ws_opts_t o;
    client_opts(&o);
    o.rng = fixed_rng;
    o.rng_ctx = &calls;
    sbusi_layer_t *c = ready_client(&o);
    CHECK(out_all(c, "abcd", 4) == 0);
    const uint8_t *p = sbusi_fifo_data(&c->down);
    CHECK(calls == 1 && p[0] == 0x82 && p[1] == 0x84);
    CHECK(!memcmp(p + 2, "\xa0\xa1\xa2\xa3", 4));
    CHECK(p[6] == ('a' ^ 0xa0) && p[9] == ('d' ^ 0xa3));
    sbusi_layer_free(c);

    /* seeded masks differ from frame to frame */
    c = ready_client(NULL);
    for (int i = 0; i < 12; i++)
        CHECK(out_all(c, "x", 1) == 0);
    p = sbusi_fifo_data(&c->down);
    int same = 0;
    for (int i = 1; i < 12; i++)
        same += !memcmp(p + 2, p + 7 * i + 2, 4);
    CHECK(same == 0);
    sbusi_layer_free(c);
}

static void test_backpressure(void)
{
    sbusi_ws_opts_t co, so;
    client_opts(&co);
    co.buf_max = 100; /* down holds at most 100 bytes */
    sbusi_ws_opts_init(&so, SBUSI_WS_SERVER);
    so.buf_max = 64;
    sbusi_layer_t *c = client_with(&co), *s = server_with(&so);
    /* the request is larger than the bound: still written whole */
    shuttle(c, s, 1000);
    CHECK(sbusi_layer_ready(c) && sbusi_layer_ready(s));
    static uint8_t data[5000], got[5000];
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (uint8_t)(i * 31);
    size_t sent = 0, recvd = 0;
    for (int guard = 0; guard < 10000 && recvd < sizeof data; guard++) {
        size_t used = 0;
        if (sent < sizeof data) {
            CHECK(sbusi_layer_output(c, data + sent, sizeof data - sent,
                                     &used) == 0);
            CHECK(sbusi_fifo_len(&c->down) <= 100);
            sent += used;
        }
        CHECK(move(c, s, 1000) == 0);
        CHECK(sbusi_fifo_len(&s->up) <= 64);
        recvd += take_up(s, got + recvd, sizeof got - recvd);
    }
    CHECK(recvd == sizeof data && !memcmp(got, data, sizeof data));
    sbusi_layer_free(c);
    sbusi_layer_free(s);
}

/* Output held before the upgrade is larger than down's room afterwards:
 * later output must wait behind it, never overtake it. */
static void test_held_output_keeps_order(void)
{
    sbusi_ws_opts_t o;
    client_opts(&o);
    o.buf_max = 64;
    sbusi_layer_t *c = client_with(&o);
    sbusi_fifo_consume(&c->down, (size_t)-1);
    uint8_t held[64], got[256];
    for (int i = 0; i < 64; i++)
        held[i] = (uint8_t)i;
    size_t used = 0, n = 0;
    CHECK(sbusi_layer_output(c, held, 64, &used) == 0 && used == 64);
    char ans[512];
    answer_101(ans, sizeof ans, "", "AMQPWSB10");
    CHECK(feed_str(c, ans) == 0 && sbusi_layer_ready(c));
    CHECK(sbusi_fifo_len(&c->down) <= 64);
    CHECK(sbusi_layer_output(c, (const uint8_t *)"after", 5, &used) == 0 &&
          used == 0);
    /* a server drains the frames; the payload arrives in order */
    sbusi_layer_t *s = ready_server(NULL);
    for (int round = 0; round < 10; round++) {
        CHECK(move(c, s, 1000) == 0);
        if (round == 0)
            CHECK(sbusi_layer_input(c, NULL, 0, &used) == 0); /* flushes */
        if (round == 1)
            CHECK(sbusi_layer_output(c, (const uint8_t *)"after", 5, &used) ==
                      0 && used == 5);
    }
    n = take_up(s, got, sizeof got);
    CHECK(n == 69 && !memcmp(got, held, 64) && !memcmp(got + 64, "after", 5));
    sbusi_layer_free(c);
    sbusi_layer_free(s);
}

/* A peer that pings while the host never drains down: pongs may exceed
 * the bound by 1 KiB, then the layer fails instead of growing. */
static void test_ping_flood(void)
{
    sbusi_ws_opts_t o;
    client_opts(&o);
    o.buf_max = 64;
    sbusi_layer_t *c = ready_client(&o);
    uint8_t f[200], pl[125];
    memset(pl, 'p', sizeof pl);
    size_t n = frame(f, 0x89, 0, pl, sizeof pl, 0);
    int rc = 0, i;
    for (i = 0; i < 100 && rc == 0; i++)
        rc = feed(c, f, n, (size_t)-1);
    CHECK(rc == SBUS_ETOOBIG && i > 5);
    CHECK_TEXT(c, "output buffer full");
    CHECK(sbusi_fifo_len(&c->down) <= 64 + 1024);
    CHECK(sbusi_layer_eof(c) == SBUS_ETOOBIG); /* sticky */
    sbusi_layer_free(c);
}

static void test_close_reason_utf8(void)
{
    const char reason[] = "caf\xc3\xa9 \xe2\x9c\x93 \xf0\x9d\x84\x9e";
    uint8_t f[64], pl[64];
    pl[0] = 0x0f; /* 4000 */
    pl[1] = 0xa0;
    memcpy(pl + 2, reason, sizeof reason - 1);
    size_t n = frame(f, 0x88, 0, pl, sizeof reason + 1, 0);
    sbusi_layer_t *c = ready_client(NULL);
    CHECK(feed(c, f, n, 2) == 0 && sbusi_layer_closed(c));
    const char *why;
    CHECK(sbusi_ws_peer_close(c, &why) == 4000 && !strcmp(why, reason));
    int op;
    unsigned code;
    CHECK(first_frame(c, &op, &code) == 0 && op == 8 && code == 4000);
    sbusi_layer_free(c);
    c = ready_client(NULL);
    CHECK(sbusi_ws_close(c, 1000, reason) == 0);
    sbusi_layer_free(c);
}

/* ------------------------------------------------------------------ */
/* Allocation failures                                                 */
/* ------------------------------------------------------------------ */

static long alloc_budget = -1; /* allocations left before failing; -1: all */

static void *fail_malloc(size_t n)
{
    if (alloc_budget == 0)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return malloc(n);
}

static void *fail_realloc(void *p, size_t n)
{
    if (alloc_budget == 0)
        return NULL;
    if (alloc_budget > 0)
        alloc_budget--;
    return realloc(p, n);
}

/* A whole session under a budget; returns 1 if it completed. */
static int session_under_budget(void)
{
    sbusi_ws_opts_t co, so;
    client_opts(&co);
    co.out_fragment = 3;
    sbusi_ws_opts_init(&so, SBUSI_WS_SERVER);
    sbusi_layer_t *c = NULL, *s = NULL;
    int done = 0;
    if (sbusi_ws_new(&co, &c) || sbusi_ws_new(&so, &s))
        goto out;
    size_t used;
    if (sbusi_layer_output(c, (const uint8_t *)"early", 5, &used))
        goto out;
    for (int i = 0; i < 8; i++) {
        if (move(c, s, 9) || move(s, c, 9))
            goto out;
    }
    if (!sbusi_layer_ready(c) || !sbusi_layer_ready(s) ||
        sbusi_layer_output(s, (const uint8_t *)"answer", 6, &used) ||
        sbusi_layer_shutdown(c) || move(c, s, 9) || move(s, c, 9))
        goto out;
    done = sbusi_layer_closed(c) && sbusi_layer_closed(s) &&
           sbusi_fifo_len(&s->up) == 5 && sbusi_fifo_len(&c->up) == 6;
out:
    sbusi_layer_free(c);
    sbusi_layer_free(s);
    return done;
}

static void test_allocation_failures(void)
{
    sbus_set_allocator(fail_malloc, fail_realloc, free);
    int completed = 0;
    for (long budget = 0; budget < 200 && !completed; budget++) {
        alloc_budget = budget;
        completed = session_under_budget();
    }
    alloc_budget = -1;
    sbus_set_allocator(NULL, NULL, NULL);
    CHECK(completed);
}

/* ------------------------------------------------------------------ */
/* Regressions found by fuzzing (tests/fuzz/fuzz_ws.c)                 */
/* ------------------------------------------------------------------ */

/* The first crash the fuzzers found was in the harness (an empty round
 * trip closed before the handshake had run). The second was real: when
 * growing `up` for a data frame's payload failed, the layer returned 0
 * with nothing used and no error, exactly like backpressure, so a host
 * would have offered the same bytes forever. It must fail with ENOMEM. */
static void test_regression_oom_in_payload_is_not_backpressure(void)
{
    sbusi_layer_t *c = ready_client(NULL);
    uint8_t f[64];
    size_t n = frame(f, 0x02, 0, "0123456789", 10, 0);
    sbus_set_allocator(fail_malloc, fail_realloc, free);
    alloc_budget = 0;
    size_t used = 0;
    int rc = sbusi_layer_input(c, f, n, &used);
    alloc_budget = -1;
    sbus_set_allocator(NULL, NULL, NULL);
    CHECK(rc == SBUS_ENOMEM && c->state == SBUSI_LAYER_ERROR);
    CHECK_TEXT(c, "no memory");
    sbusi_layer_free(c);
}

int main(void)
{
    test_accept_vector();
    test_client_request();
    test_client_bad_options();
    test_round_trips();
    test_server_paths();
    test_held_output_bounded();
    test_client_answer_errors();
    test_bytes_after_the_head();
    test_server_refusals();
    test_server_protocol_list();
    test_client_frame_errors();
    test_limits();
    test_server_frame_errors();
    test_close_rules();
    test_masks();
    test_backpressure();
    test_held_output_keeps_order();
    test_ping_flood();
    test_close_reason_utf8();
    test_allocation_failures();
    test_regression_oom_in_payload_is_not_backpressure();
    if (failures) {
        fprintf(stderr, "test_ws: %d check(s) failed\n", failures);
        return 1;
    }
    printf("test_ws: all passed\n");
    return 0;
}
