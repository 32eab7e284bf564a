/*
 * fuzz_ws.c - libFuzzer target for the WebSocket layer (core/src/ws.c):
 * the handshake parsers of both roles and the frame parsers of both roles.
 *
 * Build (from the repository root):
 *   clang-14 -g -O1 -fsanitize=fuzzer,address,undefined -Icore/include \
 *     -Icore/src tests/fuzz/fuzz_ws.c core/src/ws.c core/src/proxy.c \
 *     core/src/alloc.c -lcrypto -o fuzz_ws
 *   ./fuzz_ws tests/fuzz/corpus/ws
 *
 * The first input byte picks a mode, the second a chunk size and FIFO
 * bound; the rest is what the peer sends:
 *   0 client in HANDSHAKE (the bytes are the server's answer, then frames)
 *   1 server in HANDSHAKE (the bytes are the client's request, then frames)
 *   2 client already READY (the bytes are server frames)
 *   3 server already READY (the bytes are client frames)
 *   4 round trip: the bytes are payload, sent client->server and back with
 *     fragmentation and backpressure; what arrives must equal what left.
 *   5 like 0-3 (picked by the third byte), with the engine's allocator
 *     failing after a number of allocations (the fourth byte): every
 *     failure must surface as an error, never a crash or a leak.
 * Beyond the sanitizers, it checks the layer's contract: *used never
 * exceeds what was offered, FIFOs stay near their bound, an ERROR carries a
 * negative code and a reason, and errors are sticky.
 */
#include "ws.h"

#include <sbus/sbus.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT(c)                                                            \
    do {                                                                     \
        if (!(c)) {                                                          \
            fprintf(stderr, "fuzz_ws: %s:%d: %s\n", __FILE__, __LINE__, #c); \
            abort();                                                         \
        }                                                                    \
    } while (0)

static const uint8_t KEY[16] = "the sample nonce";

/* The engine's allocator hook (alloc.c) and a budget for mode 5. */
void sbus_set_allocator(void *(*m)(size_t), void *(*r)(void *, size_t),
                        void (*f)(void *));
static long budget = -1; /* allocations left; -1: unlimited */

static void *budget_malloc(size_t n)
{
    if (budget == 0)
        return NULL;
    if (budget > 0)
        budget--;
    return malloc(n);
}

static void *budget_realloc(void *p, size_t n)
{
    if (budget == 0)
        return NULL;
    if (budget > 0)
        budget--;
    return realloc(p, n);
}

static const char REQUEST[] =
    "GET /$servicebus/websocket/ HTTP/1.1\r\nHost: h\r\n"
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: AMQPWSB10\r\n\r\n";

static const char ANSWER[] =
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    "Sec-WebSocket-Protocol: AMQPWSB10\r\n\r\n";

static void check_layer(const sbusi_layer_t *l, size_t bound)
{
    const char *text;
    int code = sbusi_layer_error(l, &text);
    if (l->state == SBUSI_LAYER_ERROR)
        ASSERT(code < 0 && text[0]);
    else
        ASSERT(code == 0);
    ASSERT(sbusi_fifo_len(&l->up) <= bound);
    /* down may exceed the bound by a handshake head or control frames */
    ASSERT(sbusi_fifo_len(&l->down) <= bound + 2048);
}

static sbusi_layer_t *make(sbusi_ws_role_t role, size_t bound, size_t frag)
{
    sbusi_ws_opts_t o;
    sbusi_ws_opts_init(&o, role);
    o.host = "h";
    memcpy(o.key, KEY, 16);
    o.buf_max = bound;
    o.out_fragment = frag;
    o.max_frame = 4096;
    o.max_message = 16384;
    sbusi_layer_t *l = NULL;
    int rc = sbusi_ws_new(&o, &l);
    ASSERT(rc == 0 || (budget >= 0 && rc == SBUS_ENOMEM && l == NULL));
    return l;
}

/* Feeds p[0..n) in chunks, draining up and down as a host would. */
static void feed(sbusi_layer_t *l, const uint8_t *p, size_t n, size_t chunk,
                 size_t bound)
{
    size_t off = 0;
    for (int guard = 0; off < n && guard < 1000000; guard++) {
        size_t k = n - off < chunk ? n - off : chunk, used = 0;
        int rc = sbusi_layer_input(l, p + off, k, &used);
        ASSERT(used <= k);
        check_layer(l, bound);
        if (rc < 0) {
            ASSERT(l->state == SBUSI_LAYER_ERROR || rc == SBUS_ESTATE);
            size_t u2 = 1;
            ASSERT(sbusi_layer_input(l, p, n, &u2) == rc && u2 == 0);
            return;
        }
        off += used;
        sbusi_fifo_consume(&l->up, (size_t)-1);
        sbusi_fifo_consume(&l->down, (size_t)-1);
    }
    ASSERT(off == n);
}

static void one_side(sbusi_ws_role_t role, int ready, const uint8_t *p,
                     size_t n, size_t chunk, size_t bound)
{
    sbusi_layer_t *l = make(role, bound, chunk % 7);
    if (!l)
        return;
    if (ready) {
        const char *h = role == SBUSI_WS_CLIENT ? ANSWER : REQUEST;
        feed(l, (const uint8_t *)h, strlen(h), 4096, bound);
        ASSERT(sbusi_layer_ready(l) ||
               (budget >= 0 && sbusi_layer_error(l, NULL) == SBUS_ENOMEM));
    }
    feed(l, p, n, chunk, bound);
    size_t used = 0;
    if (sbusi_layer_ready(l)) {
        int rc = sbusi_layer_output(l, p, n, &used);
        ASSERT((rc == 0 || (budget >= 0 && rc == SBUS_ENOMEM)) && used <= n);
        ASSERT(sbusi_ws_ping(l, p, n < 125 ? n : 125) == 0 ||
               l->state == SBUSI_LAYER_ERROR);
    }
    sbusi_layer_shutdown(l);
    sbusi_layer_eof(l);
    check_layer(l, bound);
    sbusi_layer_free(l);
}

/* Moves a's down into b's input; payload that b yields goes to out. */
static void move(sbusi_layer_t *a, sbusi_layer_t *b)
{
    size_t used = 0;
    int rc = sbusi_layer_input(b, sbusi_fifo_data(&a->down),
                               sbusi_fifo_len(&a->down), &used);
    ASSERT(rc == 0);
    sbusi_fifo_consume(&a->down, used);
}

static void round_trip(const uint8_t *p, size_t n, size_t chunk, size_t bound)
{
    sbusi_layer_t *c = make(SBUSI_WS_CLIENT, bound, chunk % 300);
    sbusi_layer_t *s = make(SBUSI_WS_SERVER, bound, chunk % 5);
    uint8_t *got_s = malloc(n + 1), *got_c = malloc(n + 1);
    size_t sent_c = 0, sent_s = 0, rs = 0, rc = 0;
    for (int guard = 0; guard < 100000; guard++) {
        int open = sbusi_layer_ready(c) && sbusi_layer_ready(s);
        if (open && rs == n && rc == n)
            break;
        size_t used = 0;
        ASSERT(sbusi_layer_output(c, p + sent_c, n - sent_c, &used) == 0);
        sent_c += used;
        if (sbusi_layer_ready(s)) {
            ASSERT(sbusi_layer_output(s, p + sent_s, n - sent_s, &used) == 0);
            sent_s += used;
        }
        move(c, s);
        move(s, c);
        size_t k = sbusi_fifo_len(&s->up);
        ASSERT(rs + k <= n);
        memcpy(got_s + rs, sbusi_fifo_data(&s->up), k);
        sbusi_fifo_consume(&s->up, k);
        rs += k;
        k = sbusi_fifo_len(&c->up);
        ASSERT(rc + k <= n);
        memcpy(got_c + rc, sbusi_fifo_data(&c->up), k);
        sbusi_fifo_consume(&c->up, k);
        rc += k;
    }
    ASSERT(rs == n && rc == n);
    ASSERT(memcmp(got_s, p, n) == 0 && memcmp(got_c, p, n) == 0);
    ASSERT(sbusi_layer_shutdown(c) == 0);
    move(c, s);
    move(s, c);
    ASSERT(sbusi_layer_closed(c) && sbusi_layer_closed(s));
    free(got_s);
    free(got_c);
    sbusi_layer_free(c);
    sbusi_layer_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    int mode = data[0] % 6;
    size_t chunk = (size_t)data[1] % 64 + 1;
    size_t bound = data[1] & 0x80 ? 4096 : (size_t)data[1] % 61 + 64;
    data += 2;
    size_t n = size - 2;
    switch (mode) {
    case 0:
        one_side(SBUSI_WS_CLIENT, 0, data, n, chunk, bound);
        break;
    case 1:
        one_side(SBUSI_WS_SERVER, 0, data, n, chunk, bound);
        break;
    case 2:
        one_side(SBUSI_WS_CLIENT, 1, data, n, chunk, bound);
        break;
    case 3:
        one_side(SBUSI_WS_SERVER, 1, data, n, chunk, bound);
        break;
    case 4:
        round_trip(data, n, chunk, bound);
        break;
    default:
        if (n < 2)
            return 0;
        sbus_set_allocator(budget_malloc, budget_realloc, free);
        budget = data[1] % 24;
        one_side(data[0] & 1 ? SBUSI_WS_SERVER : SBUSI_WS_CLIENT,
                 data[0] >> 1 & 1, data + 2, n - 2, chunk, bound);
        budget = -1;
        sbus_set_allocator(NULL, NULL, NULL);
    }
    return 0;
}
