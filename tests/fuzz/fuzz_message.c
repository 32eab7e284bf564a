/*
 * fuzz_message.c - libFuzzer target for the engine's AMQP message decoder
 * (sbusi_message_decode in core/src/message.c, over the value codec in
 * core/src/codec.c): every message a broker delivers goes through it.
 *
 * Build and run: scripts/fuzz.sh message (clang-14, ASan + UBSan).
 *
 * The input is the bytes of one transfer. Beyond the sanitizers:
 *   - a decoded message can be read through the public getters and
 *     encoded again;
 *   - what the engine encodes, the engine decodes (round trip), with the
 *     same body sections and the same number of application properties;
 *   - the raw codec walks any input to its end or stops with `bad` set,
 *     never past the end.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT(c)                                                                 \
    do {                                                                          \
        if (!(c)) {                                                               \
            fprintf(stderr, "fuzz_message: %s:%d: %s\n", __FILE__, __LINE__, #c); \
            abort();                                                              \
        }                                                                         \
    } while (0)

static void walk(const uint8_t *p, size_t n, int depth)
{
    sbusi_dec_t d = {p, p + n, 0};
    for (int i = 0; i < 64 && d.p < d.end && !d.bad; i++) {
        sbusi_item_t it;
        if (sbusi_dec_item(&d, &it) < 0)
            break;
        ASSERT(it.start >= p && it.stop <= p + n && it.start < it.stop);
        if (it.body && depth < 4 && (it.code == 0xc0 || it.code == 0xd0 ||
                                     it.code == 0xc1 || it.code == 0xd1)) {
            sbusi_dec_t in;
            sbusi_dec_enter(&it, &in);
            ASSERT(in.p >= p && in.end <= p + n);
            walk(in.p, (size_t)(in.end - in.p), depth + 1);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    walk(data, size, 0);

    sbus_message_t *m = NULL;
    int rc = sbusi_message_decode(data, size, &m);
    if (rc < 0) {
        ASSERT(m == NULL);
        return 0;
    }
    ASSERT(m != NULL);
    for (int f = 0; f < SBUS_FIELD__COUNT; f++) {
        int64_t v;
        (void)sbus_message_get_field(m, (sbus_field_t)f, &v);
    }
    size_t nsec = m->nsections, naprops = m->naprops;
    for (size_t i = 0; i < nsec; i++) {
        const void *p;
        size_t n;
        (void)sbus_message_body_at(m, i, &p, &n);
    }
    sbusi_buf_t out = {0};
    if (sbusi_message_encode(m, &out) == 0 && !out.oom) {
        sbus_message_t *m2 = NULL;
        int rc2 = sbusi_message_decode(out.p, out.len, &m2);
        ASSERT(rc2 == 0 && m2);
        ASSERT(m2->nsections == nsec);
        ASSERT(m2->naprops == naprops);
        ASSERT(m2->body_kind == m->body_kind);
        for (size_t i = 0; i < nsec; i++)
            ASSERT(m2->sections[i].n == m->sections[i].n &&
                   (m->sections[i].n == 0 ||
                    memcmp(m2->sections[i].p, m->sections[i].p, m->sections[i].n) == 0));
        sbus_message_free(m2);
    }
    sbusi_buf_free(&out);
    sbus_message_free(m);
    return 0;
}
