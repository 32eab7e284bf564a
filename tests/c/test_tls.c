/*
 * test_tls.c - the engine's TLS layer against the emulator's TLS listener:
 * verified against the emulator's CA (send and receive work), refused
 * against the system store (SBUS_ETLS, not retried, with the reason), and
 * accepted with verification off. Then core/src/tls.c alone, a client and a
 * server connection in memory with the emulator's certificate: bytes written
 * before and after the handshake, in large and tiny writes, moved in odd
 * chunk sizes and read in small pieces, arrive intact and in order both
 * ways, and close_notify ends the stream.
 */
#include "emu_fixture.h"

#include "../../core/src/tls.h"

#include <stdlib.h>
#include <string.h>

static emu_t emu;

static int open_tls(client_t *cl, const char *ca, int verify, done_t *d)
{
    sbus_conn_options_t o;
    sbus_conn_options_init(&o);
    o.connection_string = emu.connstr;
    o.use_tls = 1;
    o.port = emu.amqps;
    o.ca_file = ca;
    o.verify = verify;
    o.retry_backoff_ms = 50;
    memset(cl, 0, sizeof *cl);
    char err[256];
    o.operation_timeout_ms = 10000;
    if (sbus_conn_new(&cl->c, &o, err, sizeof err) < 0) {
        fprintf(stderr, "conn_new: %s\n", err);
        return -1;
    }
    sbus_io_new(cl->c, &cl->io);
    static int tok;
    sbus_conn_open(cl->c, &tok);
    return wait_done(cl, &tok, d, 15000);
}

static void test_verified(void)
{
    client_t cl;
    done_t d;
    CHECK(open_tls(&cl, emu.ca, 1, &d) == 0);
    CHECK(d.code == 0);
    if (d.code)
        fprintf(stderr, "tls open: %s\n", d.description);
    sbus_sender_options_t so;
    sbus_sender_options_init(&so);
    so.entity = "test-queue";
    sbus_sender_t *s;
    sbus_sender_new(cl.c, &so, &s);
    CHECK(send_text(&cl, s, "over tls", NULL) == 0);
    sbus_receiver_options_t ro;
    sbus_receiver_options_init(&ro);
    ro.entity = "test-queue";
    ro.mode = SBUS_RECEIVE_AND_DELETE;
    sbus_receiver_t *r;
    sbus_receiver_new(cl.c, &ro, &r);
    receive_n(&cl, r, 1, 3000, &d);
    CHECK(d.count == 1 && body_is(d.msgs[0], "over tls"));
    done_clear(&d);
    sbus_receiver_free(r);
    sbus_sender_free(s);
    client_close(&cl);
}

static void test_untrusted(void)
{
    client_t cl;
    done_t d;
    CHECK(open_tls(&cl, NULL, 1, &d) == 0);
    CHECK(d.code == SBUS_ETLS);
    CHECK(strstr(d.description, "verify") != NULL);
    fprintf(stderr, "untrusted -> %s: %s\n", sbus_errname(d.code),
            d.description);
    client_close(&cl);
}

static void test_unverified(void)
{
    client_t cl;
    done_t d;
    CHECK(open_tls(&cl, NULL, 0, &d) == 0);
    CHECK(d.code == 0);
    client_close(&cl);
}

/* ---------------------------------------------------------------- */
/* tls.c alone, in memory                                            */
/* ---------------------------------------------------------------- */

static unsigned char pattern(size_t i) { return (unsigned char)(i * 131u + (i >> 9)); }

/* Moves a's ciphertext into b in pieces of `step` bytes (0: all at once),
 * taking it out in pieces of `take` bytes. */
static int move(sbusi_tls_t *a, sbusi_tls_t *b, size_t take, size_t step)
{
    static unsigned char buf[1 << 16];
    size_t n;
    while ((n = sbusi_tls_pending(a)) > 0) {
        if (n > take)
            n = take;
        size_t got = sbusi_tls_take(a, buf, n);
        if (got != n)
            return -1;
        for (size_t off = 0; off < got;) {
            size_t k = step && got - off > step ? step : got - off;
            if (sbusi_tls_feed(b, buf + off, k) != 0)
                return -1;
            off += k;
        }
    }
    return 0;
}

/* Reads what b has in pieces of `piece` bytes, checking the pattern from
 * *at on; returns bytes read, or -1 on a mismatch or failure. */
static long read_check(sbusi_tls_t *b, size_t piece, size_t *at)
{
    static unsigned char buf[4096];
    long total = 0;
    ssize_t r;
    while ((r = sbusi_tls_read(b, buf, piece)) > 0) {
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] != pattern(*at + (size_t)i))
                return -1;
        *at += (size_t)r;
        total += r;
    }
    return r == 0 ? total : -1;
}

/* Writes n pattern bytes from *at on in writes of `piece` bytes. */
static int write_pattern(sbusi_tls_t *t, size_t n, size_t piece, size_t *at)
{
    static unsigned char buf[1 << 20];
    while (n) {
        size_t k = n < piece ? n : piece;
        if (k > sizeof buf)
            k = sizeof buf;
        for (size_t i = 0; i < k; i++)
            buf[i] = pattern(*at + i);
        if (sbusi_tls_write(t, buf, k) != (ssize_t)k)
            return -1;
        *at += k;
        n -= k;
    }
    return 0;
}

/* A server context with the emulator's certificate (beside its CA file)
 * and a client context trusting that CA; 0, or -1 with both NULL. */
static int ctx_pair(sbusi_tls_ctx_t **sc, sbusi_tls_ctx_t **cc)
{
    char dir[256], cert[300], key[300], err[256] = "";
    *sc = *cc = NULL;
    snprintf(dir, sizeof dir, "%s", emu.ca);
    char *slash = strrchr(dir, '/');
    CHECK(slash != NULL);
    if (!slash)
        return -1;
    *slash = 0;
    snprintf(cert, sizeof cert, "%s/server.pem", dir);
    snprintf(key, sizeof key, "%s/server.key", dir);
    sbusi_tls_options_t so, co;
    sbusi_tls_options_init(&so);
    so.server = true;
    so.cert_file = cert;
    so.key_file = key;
    sbusi_tls_options_init(&co);
    co.ca_file = emu.ca;
    *sc = sbusi_tls_ctx_new(&so, err, sizeof err);
    if (*sc)
        *cc = sbusi_tls_ctx_new(&co, err, sizeof err);
    CHECK(*sc && *cc);
    if (*sc && *cc)
        return 0;
    fprintf(stderr, "tls ctx: %s\n", err);
    sbusi_tls_ctx_free(*sc);
    *sc = NULL;
    return -1;
}

static void test_memory_pair(void)
{
    sbusi_tls_ctx_t *sc, *cc;
    if (ctx_pair(&sc, &cc) < 0)
        return;
    sbusi_tls_t *c = sbusi_tls_new(cc, "localhost"), *s = sbusi_tls_new(sc, NULL);
    CHECK(c && s);
    size_t c_out = 0, s_in = 0, s_out = 0, c_in = 0;
    /* written before the handshake: held, then sent once it completes */
    CHECK(write_pattern(c, 70000, 70000, &c_out) == 0);
    CHECK(!sbusi_tls_established(c));
    for (int i = 0; i < 10 && !(sbusi_tls_established(c) && sbusi_tls_established(s)); i++) {
        CHECK(move(c, s, 1000, 7) == 0); /* ClientHello in 7-byte pieces */
        CHECK(read_check(s, 333, &s_in) >= 0);
        CHECK(move(s, c, 100000, 0) == 0);
        CHECK(read_check(c, 4096, &c_in) >= 0);
    }
    CHECK(sbusi_tls_established(c) && sbusi_tls_established(s));
    CHECK(move(c, s, 65536, 0) == 0);
    CHECK(read_check(s, 333, &s_in) >= 0);
    CHECK(s_in == 70000);
    /* after it: one 3 MB write, then 5,000 one-byte writes, moved byte by
       byte for the first part, read in odd pieces */
    CHECK(write_pattern(c, 3000000, 3000000, &c_out) == 0);
    CHECK(move(c, s, 5000, 0) == 0);
    CHECK(read_check(s, 4096, &s_in) >= 0);
    CHECK(write_pattern(c, 5000, 1, &c_out) == 0);
    CHECK(move(c, s, 1, 1) == 0);
    CHECK(read_check(s, 1, &s_in) >= 0);
    CHECK(s_in == c_out);
    /* the other way, interleaved with reads left pending */
    CHECK(write_pattern(s, 200000, 16383, &s_out) == 0);
    CHECK(move(s, c, 333, 0) == 0);
    CHECK(read_check(c, 1000, &c_in) >= 0);
    CHECK(c_in == s_out);
    /* close_notify: the server reads the end of the stream */
    sbusi_tls_close(c);
    CHECK(move(c, s, 65536, 0) == 0);
    unsigned char b[16];
    CHECK(sbusi_tls_read(s, b, sizeof b) == SBUSI_TLS_EOF);
    sbusi_tls_free(c);
    sbusi_tls_free(s);
    sbusi_tls_ctx_free(cc);
    sbusi_tls_ctx_free(sc);
}

/* The zero-copy calls: ciphertext taken in place (sbusi_tls_out_data, released in
 * pieces) and fed in place (sbusi_tls_feed_buffer/done), including a read between
 * feed_buffer and feed_done that empties the input queue under the caller's bytes. */
static void test_zero_copy(void)
{
    sbusi_tls_ctx_t *sc, *cc;
    if (ctx_pair(&sc, &cc) < 0)
        return;
    sbusi_tls_t *c = cc ? sbusi_tls_new(cc, "localhost") : NULL;
    sbusi_tls_t *s = sc ? sbusi_tls_new(sc, NULL) : NULL;
    CHECK(c && s);
    size_t c_out = 0, s_in = 0, c_in = 0;
    for (int i = 0; c && s && i < 10 && !(sbusi_tls_established(c) && sbusi_tls_established(s)); i++) {
        CHECK(move(c, s, 65536, 0) == 0);
        CHECK(read_check(s, 4096, &s_in) >= 0);
        CHECK(move(s, c, 65536, 0) == 0);
        CHECK(read_check(c, 4096, &c_in) >= 0);
    }
    CHECK(c && s && sbusi_tls_established(c) && sbusi_tls_established(s));
    if (!c || !s || !sbusi_tls_established(s))
        goto done;
    CHECK(write_pattern(c, 100000, 100000, &c_out) == 0);
    /* a first piece fed in place and left unread in the queue */
    size_t n;
    const unsigned char *data = sbusi_tls_out_data(c, &n);
    CHECK(n == sbusi_tls_pending(c) && n > 10000);
    unsigned char *in = sbusi_tls_feed_buffer(s, 100);
    CHECK(in != NULL);
    if (!in)
        goto done;
    memcpy(in, data, 100);
    CHECK(sbusi_tls_feed_done(s, 100) == 0);
    sbusi_tls_out_consume(c, 100);
    /* the next piece: a read empties the queue before feed_done */
    data = sbusi_tls_out_data(c, &n);
    in = sbusi_tls_feed_buffer(s, 5000);
    CHECK(in != NULL);
    if (!in)
        goto done;
    memcpy(in, data, 5000);
    CHECK(read_check(s, 4096, &s_in) >= 0);
    CHECK(sbusi_tls_feed_done(s, 5000) == 0);
    sbusi_tls_out_consume(c, 5000);
    /* the rest in 7,000-byte pieces, each read before the next, some fed short */
    while ((data = sbusi_tls_out_data(c, &n)), n > 0) {
        size_t k = n < 7000 ? n : 7000;
        in = sbusi_tls_feed_buffer(s, 7000);
        CHECK(in != NULL);
        if (!in)
            goto done;
        memcpy(in, data, k);
        CHECK(sbusi_tls_feed_done(s, k) == 0);
        sbusi_tls_out_consume(c, k);
        CHECK(read_check(s, 4096, &s_in) >= 0);
    }
    CHECK(sbusi_tls_pending(c) == 0);
    CHECK(s_in == c_out);
    CHECK(sbusi_tls_feed_buffer(s, 0) == NULL);
done:
    sbusi_tls_free(c);
    sbusi_tls_free(s);
    sbusi_tls_ctx_free(cc);
    sbusi_tls_ctx_free(sc);
}

int main(void)
{
    if (emu_start(&emu) < 0 || !emu.amqps || !emu.ca[0]) {
        fprintf(stderr, "cannot start the emulator with TLS\n");
        emu_stop(&emu);
        return 1;
    }
    test_verified();
    test_untrusted();
    test_unverified();
    test_memory_pair();
    test_zero_copy();
    emu_stop(&emu);
    if (failures)
        fprintf(stderr, "%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
