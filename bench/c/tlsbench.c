/*
 * tlsbench.c - core/src/tls.c alone: a client and a server connection in
 * memory, the client sending chunks of plaintext (default 105,000 bytes: a
 * batch of 100 x 1 KB messages), the server answering 40 bytes (a
 * disposition). Prints the CPU time per KiB of plaintext on each side:
 * write + take (the sender) and feed + read (the receiver). No sockets, so
 * the figures do not depend on the emulator or the network stack; run it
 * under valgrind --tool=callgrind for instruction counts that machine load
 * does not disturb.
 *
 * Build (from the repository root) and run against any server certificate,
 * e.g. the one the emulator writes into its state directory:
 *   cc -O2 -g -Icore/src -o bench/work/bin/tlsbench bench/c/tlsbench.c \
 *      core/src/tls.c -lssl -lcrypto
 *   bench/work/bin/tlsbench DIR [CHUNK [ITERATIONS]]
 * DIR holds server.pem, server.key and ca.pem (sbus-emulator --state-dir).
 */
#define _GNU_SOURCE
#include "tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static unsigned char wire[1 << 22], plain[1 << 16];

static void die(const char *what, sbusi_tls_t *t)
{
    fprintf(stderr, "tlsbench: %s: %s\n", what, t ? sbusi_tls_error(t) : "");
    exit(1);
}

/* Moves a's ciphertext into b. */
static void move(sbusi_tls_t *a, sbusi_tls_t *b)
{
    size_t n;
    while ((n = sbusi_tls_pending(a)) > 0) {
        if (n > sizeof wire)
            n = sizeof wire;
        n = sbusi_tls_take(a, wire, n);
        if (sbusi_tls_feed(b, wire, n) != 0)
            die("feed", b);
    }
}

/* Reads all plaintext b has; returns the byte count. */
static size_t drain(sbusi_tls_t *b)
{
    size_t total = 0;
    ssize_t r;
    while ((r = sbusi_tls_read(b, plain, sizeof plain)) > 0)
        total += (size_t)r;
    if (r < 0)
        die("read", b);
    return total;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: tlsbench DIR [CHUNK [ITERATIONS]]\n");
        return 2;
    }
    size_t chunk = argc > 2 ? (size_t)atol(argv[2]) : 105000;
    int iters = argc > 3 ? atoi(argv[3]) : 2000;
    char cert[512], key[512], ca[512], err[512];
    snprintf(cert, sizeof cert, "%s/server.pem", argv[1]);
    snprintf(key, sizeof key, "%s/server.key", argv[1]);
    snprintf(ca, sizeof ca, "%s/ca.pem", argv[1]);
    sbusi_tls_options_t so, co;
    sbusi_tls_options_init(&so);
    so.server = true;
    so.cert_file = cert;
    so.key_file = key;
    sbusi_tls_options_init(&co);
    co.ca_file = ca;
    sbusi_tls_ctx_t *sc = sbusi_tls_ctx_new(&so, err, sizeof err);
    sbusi_tls_ctx_t *cc = sc ? sbusi_tls_ctx_new(&co, err, sizeof err) : NULL;
    if (!sc || !cc) {
        fprintf(stderr, "tlsbench: %s\n", err);
        return 1;
    }
    sbusi_tls_t *c = sbusi_tls_new(cc, "localhost"), *s = sbusi_tls_new(sc, NULL);
    if (!c || !s)
        die("new", NULL);
    for (int i = 0; i < 20 && !(sbusi_tls_established(c) && sbusi_tls_established(s)); i++) {
        move(c, s);
        drain(s);
        move(s, c);
        drain(c);
    }
    if (!sbusi_tls_established(c) || !sbusi_tls_established(s))
        die("handshake", c);
    unsigned char *src = malloc(chunk ? chunk : 1);
    if (!src)
        die("malloc", NULL);
    memset(src, 'x', chunk);
    double tw = 0, tr = 0;
    size_t bytes = 0;
    for (int i = 0; i < iters; i++) {
        double t0 = cpu_now();
        if (sbusi_tls_write(c, src, chunk) != (ssize_t)chunk)
            die("write", c);
        size_t n, got = 0;
        while ((n = sbusi_tls_pending(c)) > 0) {
            if (n > sizeof wire - got)
                die("wire buffer too small for CHUNK", NULL);
            got += sbusi_tls_take(c, wire + got, n);
        }
        double t1 = cpu_now();
        if (sbusi_tls_feed(s, wire, got) != 0)
            die("feed", s);
        bytes += drain(s);
        double t2 = cpu_now();
        tw += t1 - t0;
        tr += t2 - t1;
        if (sbusi_tls_write(s, "0123456789012345678901234567890123456789", 40) != 40)
            die("answer", s);
        move(s, c);
        drain(c);
    }
    printf("chunk %zu x %d: write+take %.1f ns/KiB, feed+read %.1f ns/KiB\n", chunk, iters,
           tw / (double)bytes * 1e9 * 1024, tr / (double)bytes * 1e9 * 1024);
    sbusi_tls_free(c);
    sbusi_tls_free(s);
    sbusi_tls_ctx_free(cc);
    sbusi_tls_ctx_free(sc);
    free(src);
    return 0;
}
