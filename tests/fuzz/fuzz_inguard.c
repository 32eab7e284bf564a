/*
 * fuzz_inguard.c - libFuzzer target for the engine's incoming guard
 * (sbusi_frame_scan_in in core/src/frame.c), which reads every frame a
 * broker sends before Proton does.
 *
 * Build and run: scripts/fuzz.sh inguard (clang-14, ASan + UBSan).
 *
 * The input is a byte stream after the AMQP protocol header (one is put in
 * front unless the input starts with "AMQP", so SASL streams are reached
 * too). Beyond the sanitizers:
 *   - the guard never lets more bytes pass than it was given, and lets all
 *     pass when it finds nothing;
 *   - its verdict does not depend on how the stream is split into reads,
 *     unless the last frame was left unfinished.
 */
#include "frame.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT(c)                                                                 \
    do {                                                                          \
        if (!(c)) {                                                               \
            fprintf(stderr, "fuzz_inguard: %s:%d: %s\n", __FILE__, __LINE__, #c); \
            abort();                                                              \
        }                                                                         \
    } while (0)

/* Scans s[n] in pieces of step bytes (0: one piece): 1 when the guard
 * stopped the stream; *passed, *undecided (bytes of a kept unit). */
static int scan(const uint8_t *s, size_t n, size_t step, size_t *passed,
                size_t *undecided)
{
    sbusi_frame_t f;
    memset(&f, 0, sizeof f);
    int stopped = 0;
    *passed = 0;
    for (size_t off = 0; off < n;) {
        size_t k = step && n - off > step ? step : n - off;
        size_t pass;
        int rc = sbusi_frame_scan_in(&f, s + off, k, &pass);
        ASSERT(pass <= k);
        if (rc < 0) {
            ASSERT(f.iwhy != NULL);
            *passed += pass;
            stopped = 1;
            break;
        }
        ASSERT(pass == k);
        *passed += k;
        off += k;
    }
    *undecided = f.ipend.len;
    sbusi_frame_reset(&f);
    return stopped;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t buf[65536 + 8];
    size_t n = 0;
    if (size < 4 || memcmp(data, "AMQP", 4) != 0) {
        memcpy(buf, "AMQP\x00\x01\x00\x00", 8);
        n = 8;
    }
    if (size > sizeof buf - n)
        size = sizeof buf - n;
    memcpy(buf + n, data, size);
    n += size;
    size_t whole, split, left1, left2;
    int a = scan(buf, n, 0, &whole, &left1);
    if (!a)
        ASSERT(whole == n);
    size_t step = 1 + (size ? data[size - 1] % 29 : 0);
    int b = scan(buf, n, step, &split, &left2);
    if (!b)
        ASSERT(split == n);
    if (!left1 && !left2)
        ASSERT(a == b);
    return 0;
}
