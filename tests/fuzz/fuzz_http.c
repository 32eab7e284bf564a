/*
 * fuzz_http.c - libFuzzer target for the HTTP head parser and the CONNECT
 * tunnel that reads a proxy's answer with it (core/src/proxy.c).
 *
 * Build (from the repository root):
 *   clang-14 -g -O1 -fsanitize=fuzzer,address,undefined -Icore/include \
 *     -Icore/src tests/fuzz/fuzz_http.c core/src/proxy.c core/src/alloc.c \
 *     -lcrypto -o fuzz_http
 *   ./fuzz_http tests/fuzz/corpus/http
 *
 * The first byte is a chunk size and FIFO bound; the rest is what the
 * proxy (or, for the parser, a peer) sends. Each input is used three ways:
 *   - the head finder run a byte at a time must agree with one run over
 *     the whole input;
 *   - a complete head is parsed as a response and as a request, and every
 *     parsed pointer must lie inside the head, every field be non-empty
 *     with a name of token characters, statuses be three digits;
 *   - the tunnel is fed the bytes in chunks: once READY, what came up must
 *     be exactly the bytes after the head (and any 1xx heads before it);
 *     in ERROR the code is SBUS_EPROXY or SBUS_ENOMEM with a reason naming
 *     the proxy ("proxy ..."); it never stalls (no progress, no error).
 * When bit 6 of the first byte is set, the second byte is an allocation
 * budget: the engine's allocator fails after that many allocations.
 */
#include "proxy.h"

#include <sbus/sbus.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT(c)                                                              \
    do {                                                                       \
        if (!(c)) {                                                            \
            fprintf(stderr, "fuzz_http: %s:%d: %s\n", __FILE__, __LINE__, #c); \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* The engine's allocator hook (alloc.c) and the budget. */
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

static int inside(const char *p, size_t n, const uint8_t *b, size_t bn)
{
    return (const uint8_t *)p >= b && (const uint8_t *)p + n <= b + bn;
}

static void check_head(const sbusi_http_head_t *h, const uint8_t *b, size_t n,
                       int is_request)
{
    ASSERT(inside(h->line, h->line_len, b, n));
    ASSERT(h->minor >= 0 && h->minor <= 9);
    if (is_request) {
        ASSERT(h->method_len > 0 && inside(h->method, h->method_len, b, n));
        ASSERT(h->target_len > 0 && inside(h->target, h->target_len, b, n));
    } else {
        ASSERT(h->status >= 100 && h->status <= 999);
    }
    ASSERT(h->nfields <= SBUSI_HTTP_MAX_HEADERS);
    for (size_t i = 0; i < h->nfields; i++) {
        const sbusi_http_field_t *f = &h->fields[i];
        ASSERT(f->name_len > 0 && inside(f->name, f->name_len, b, n));
        ASSERT(inside(f->value, f->value_len, b, n));
        for (size_t k = 0; k < f->name_len; k++)
            ASSERT(f->name[k] > 0x20 && f->name[k] != ':');
    }
    char line[32];
    sbusi_http_line_text(h, line, sizeof line);
    ASSERT(strlen(line) < sizeof line);
    sbusi_http_has_token(h, "Connection", "upgrade", 0);
}

static void parser(const uint8_t *p, size_t n)
{
    size_t next = 0, end = 0, whole_next = 0;
    size_t whole = sbusi_http_head_end(p, n, 0, &whole_next);
    for (size_t i = 1; i <= n && !end; i++)
        end = sbusi_http_head_end(p, i, next, &next);
    ASSERT(end == whole);
    if (!end)
        return;
    ASSERT(end <= n);
    sbusi_http_head_t h;
    if (sbusi_http_parse(p, end, 0, &h) == 0)
        check_head(&h, p, end, 0);
    if (sbusi_http_parse(p, end, 1, &h) == 0)
        check_head(&h, p, end, 1);
    /* the parser must refuse a head with bytes after its empty line */
    if (end < n)
        ASSERT(sbusi_http_parse(p, n, 0, &h) != 0 &&
               sbusi_http_parse(p, n, 1, &h) != 0);
}

static void tunnel(const uint8_t *p, size_t n, size_t chunk, size_t bound)
{
    sbusi_proxy_opts_t o;
    sbusi_proxy_opts_init(&o);
    o.host = "h";
    o.port = 443;
    o.username = "u";
    o.password = "p";
    o.buf_max = bound;
    sbusi_layer_t *l = NULL;
    int rc = sbusi_proxy_new(&o, &l);
    ASSERT(rc == 0 || (budget >= 0 && rc == SBUS_ENOMEM && !l));
    if (!l)
        return;
    uint8_t *up = malloc(n + 1);
    size_t off = 0, got = 0, ready_at = 0;
    for (int guard = 0; off < n && guard < 1000000; guard++) {
        size_t k = n - off < chunk ? n - off : chunk, used = 0;
        int was_ready = sbusi_layer_ready(l);
        rc = sbusi_layer_input(l, p + off, k, &used);
        ASSERT(used <= k);
        ASSERT(sbusi_fifo_len(&l->up) <= bound);
        if (!was_ready && sbusi_layer_ready(l))
            ready_at = off + used - sbusi_fifo_len(&l->up);
        off += used;
        size_t u = sbusi_fifo_len(&l->up);
        memcpy(up + got, sbusi_fifo_data(&l->up), u);
        got += u;
        sbusi_fifo_consume(&l->up, u);
        if (rc < 0) {
            const char *t;
            ASSERT(sbusi_layer_error(l, &t) == rc);
            ASSERT(rc == SBUS_EPROXY || rc == SBUS_ENOMEM);
            ASSERT(strncmp(t, "proxy", 5) == 0);
            break;
        }
        ASSERT(used > 0); /* up was drained: no progress means a stall */
    }
    ASSERT(off == n || rc < 0);
    if (sbusi_layer_ready(l)) {
        ASSERT(off == n);
        ASSERT(sbusi_proxy_status(l) >= 200 && sbusi_proxy_status(l) < 300);
        ASSERT(got == n - ready_at && memcmp(up, p + ready_at, got) == 0);
    } else {
        ASSERT(got == 0);
    }
    sbusi_layer_eof(l);
    sbusi_layer_free(l);
    free(up);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)data[0] % 32 + 1;
    size_t bound = data[0] & 0x80 ? 1 << 20 : (size_t)data[0] % 16 + 1;
    if (data[0] & 0x40 && size >= 2) {
        sbus_set_allocator(budget_malloc, budget_realloc, free);
        budget = data[1] % 16;
        tunnel(data + 2, size - 2, chunk, bound);
        budget = -1;
        sbus_set_allocator(NULL, NULL, NULL);
        return 0;
    }
    parser(data + 1, size - 1);
    tunnel(data + 1, size - 1, chunk, bound);
    return 0;
}
