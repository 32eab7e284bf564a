/*
 * test_alloc_failure.c - the engine survives running out of memory at
 * every allocation of a full scenario (connect, CBS, send, batch, receive,
 * settle, peek, schedule, cancel, renew, close), in memory against the
 * emulator's broker library.
 *
 * A counting allocator (sbus_set_allocator) fails the Nth allocation and
 * every later one for a few allocations (a short burst, as real memory
 * pressure looks), for N = 1 .. the scenario's total. For each N: no
 * crash, every accepted operation completes exactly once (after the final
 * abort, which must work even out of memory), and no engine allocation is
 * left when everything is freed.
 */
#include "inmem_pair.h"

#define NTOK 16

static long g_count;      /* allocations so far */
static long g_fail_at;    /* first allocation to fail (0: never) */
static long g_fail_len;   /* how many fail from there */
static long g_live;       /* blocks outstanding */
static long g_failed;     /* allocations refused */

typedef union hdr {
    size_t size;          /* user size */
    max_align_t align;    /* keeps the user block aligned */
} hdr_t;

static int should_fail(void)
{
    g_count++;
    if (g_fail_at && g_count >= g_fail_at && g_count < g_fail_at + g_fail_len) {
        g_failed++;
        return 1;
    }
    return 0;
}

static void *t_malloc(size_t n)
{
    if (should_fail())
        return NULL;
    hdr_t *h = malloc(sizeof *h + n);
    if (!h)
        return NULL;
    h->size = n;
    g_live++;
    return h + 1;
}

static void *t_realloc(void *p, size_t n)
{
    if (!p)
        return t_malloc(n);
    if (should_fail())
        return NULL;
    hdr_t *h = realloc((hdr_t *)p - 1, sizeof *h + n);
    if (!h)
        return NULL;
    h->size = n;
    return h + 1;
}

static void t_free(void *p)
{
    if (!p)
        return;
    g_live--;
    free((hdr_t *)p - 1);
}

/* Takes a completion if the op was accepted. */
static done_t op(pair_t *p, int rc, int *tok, int *accepted)
{
    done_t d;
    memset(&d, 0, sizeof d);
    d.code = rc;
    if (rc == 0) {
        accepted[tok - p->tok_base] = 1;
        take(p, tok, &d);
    }
    if (!g_fail_at && getenv("ALLOC_TEST_VERBOSE"))
        fprintf(stderr, "op %d: rc %d code %d count %zu\n",
                (int)(tok - p->tok_base), rc, d.code, d.count);
    return d;
}

static sbus_message_t *msg(const char *body)
{
    sbus_message_t *m = NULL;
    if (sbus_message_new(&m) < 0)
        return NULL;
    if (sbus_message_set_body(m, body, strlen(body)) < 0) {
        sbus_message_free(m);
        return NULL;
    }
    return m;
}

static void traffic(pair_t *p, int *tok, int *acc)
{
    sbus_sender_options_t so;
    sbus_sender_options_init(&so);
    so.entity = "test-queue";
    sbus_sender_t *s = NULL;
    sbus_receiver_options_t ro;
    sbus_receiver_options_init(&ro);
    ro.entity = "test-queue";
    sbus_receiver_t *r = NULL;
    if (sbus_sender_new(p->c, &so, &s) < 0 ||
        sbus_receiver_new(p->c, &ro, &r) < 0)
        goto out;
    sbus_message_t *ms[2] = {msg("one"), msg("two")};
    done_t d;
    if (ms[0] && ms[1]) {
        d = op(p, sbus_sender_send(s, ms, 1, &tok[1]), &tok[1], acc);
        d = op(p, sbus_sender_send(s, ms, 2, &tok[2]), &tok[2], acc);
        d = op(p, sbus_sender_schedule(s, ms, 1, unix_now(p) + 60000, &tok[3]),
               &tok[3], acc);
        d = op(p, sbus_sender_cancel_scheduled(s, &(int64_t){1}, 1, &tok[4]),
               &tok[4], acc);
    }
    sbus_message_free(ms[0]);
    sbus_message_free(ms[1]);
    d = op(p, sbus_receiver_receive(r, 3, 2000, &tok[5]), &tok[5], acc);
    for (size_t i = 0; i < d.count && i < 3; i++) {
        done_t x;
        if (i == 0)
            x = op(p, sbus_receiver_renew_lock(r, d.msgs[i], &tok[6]), &tok[6],
                   acc);
        if (i == 1)
            sbus_receiver_auto_renew(r, d.msgs[i], 60000);
        x = op(p, sbus_receiver_settle(r, d.msgs[i], i ? SBUS_ABANDON
                                                        : SBUS_COMPLETE,
                                       NULL, NULL, &tok[7 + i]),
               &tok[7 + i], acc);
        (void)x;
    }
    done_clear(&d);
    d = op(p, sbus_receiver_peek(r, 5, 1, &tok[10]), &tok[10], acc);
    done_clear(&d);
    advance(p, 2000);
out:
    sbus_receiver_free(r);
    sbus_sender_free(s);
}

/* One run of the scenario; returns the number of allocations it made. */
static int g_ws; /* run the scenario over WebSockets and a proxy */

static long scenario(long fail_at)
{
    g_count = g_live = 0;
    g_fail_at = fail_at;
    g_fail_len = 3;
    pair_t p;
    memset(&p, 0, sizeof p);
    emu_options_t eo = {0};
    eo.max_message_size = 262144;
    p.b = emu_broker_new(&eo);
    char err[512];
    emu_config_load(p.b, SBUS_SOURCE_ROOT "/examples/emulator-config.json", err,
                    sizeof err);
    p.mono = 1000000;
    int tok[NTOK] = {0}, acc[NTOK] = {0};
    p.tok_base = tok;
    p.ntok = NTOK;
    sbus_conn_options_t o;
    default_opts(&o);
    o.operation_timeout_ms = 3000;
    if (g_ws) {
        p.ws = 1;
        p.proxy_status = 200;
        o.transport = SBUS_TRANSPORT_WEBSOCKET;
        o.proxy_host = "proxy.example";
        o.proxy_port = 3128;
    }
    o.trace = 1; /* trace lines allocate too: exercise them */
    if (sbus_conn_new(&p.c, &o, err, sizeof err) == 0) {
        tick(&p);
        done_t d = op(&p, sbus_conn_open(p.c, &tok[0]), &tok[0], acc);
        if (d.code == 0)
            traffic(&p, tok, acc);
        g_fail_at = 0; /* the end game must work regardless */
        sbus_conn_abort(p.c, "end");
        pump(&p);
        for (int i = 0; i < NTOK; i++) {
            if (acc[i] && p.tok_seen[i] != 1) {
                fprintf(stderr, "fail_at %ld: token %d completed %d times\n",
                        fail_at, i, p.tok_seen[i]);
                failures++;
            }
        }
        for (int i = 0; i < p.ndone; i++)
            done_clear(&p.done[i]);
        sbus_conn_free(p.c);
    }
    if (p.server)
        emu_conn_free(p.server);
    if (p.wsl)
        sbusi_layer_free(p.wsl);
    buf_free(&p.to_engine);
    emu_broker_free(p.b);
    if (g_live != 0) {
        fprintf(stderr, "fail_at %ld: %ld engine blocks leaked\n", fail_at,
                g_live);
        failures++;
    }
    return g_count;
}

static int run_all(void)
{
    long total = scenario(0);
    if (failures) {
        fprintf(stderr, "the scenario fails even with memory\n");
        return 1;
    }
    long refused = 0;
    for (long n = 1; n <= total; n++) {
        g_failed = 0;
        scenario(n);
        refused += g_failed;
        if (failures > 20)
            break;
    }
    fprintf(stderr, "%s: %ld allocations in the scenario; each made to fail "
                    "(%ld refusals in all)\n",
            g_ws ? "websocket+proxy" : "plain", total, refused);
    return failures;
}

int main(void)
{
    sbus_set_allocator(t_malloc, t_realloc, t_free);
    run_all();
    g_ws = 1;
    if (!failures)
        run_all();
    sbus_set_allocator(NULL, NULL, NULL);
    if (failures)
        fprintf(stderr, "%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
