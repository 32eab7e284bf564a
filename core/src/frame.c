/*
 * frame.c - stamps message-format on batch transfers.
 *
 * Proton-C 0.37 has no API to set a transfer's message-format: it always
 * writes 0. Service Bus batches need 0x80013700 (protocol.md 6.4). So the
 * engine passes Proton's output through this small filter, which follows
 * the frame boundaries of the outgoing stream (protocol headers are 8
 * bytes starting with "AMQP"; frames start with their 4-byte size) and
 * rewrites the performative of transfer frames whose delivery tag carries
 * the batch mark (SBUSI_BATCH_TAG_MARK as the first of 9 tag bytes):
 * the transfer list is re-encoded with field 3 = 0x80013700, the payload
 * after it copied unchanged, and the frame size fixed. Every other byte
 * passes through untouched.
 */
#include "frame.h"

#include <string.h>

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

static void wr32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

/* Is this transfer performative (a list item) one of a batch? */
static int is_batch(const sbusi_item_t *list)
{
    sbusi_dec_t d;
    sbusi_dec_enter(list, &d);
    sbusi_item_t it;
    for (uint32_t i = 0; i < list->count && i < 3; i++)
        if (sbusi_dec_item(&d, &it) < 0)
            return 0;
    return list->count >= 3 && list->count <= 11 &&
           it.v.type == SBUS_VAL_BINARY &&
           it.v.u.s.len == 9 && (uint8_t)it.v.u.s.ptr[0] == SBUSI_BATCH_TAG_MARK;
}

/* Encodes a transfer performative from the fields of `perf`, with
 * message-format = batch and, when more >= 0, field 5 (more) = more. Only
 * the first `keep` fields are copied (the rest become null); a
 * continuation frame keeps handle, settled and more only. */
static void enc_transfer(sbusi_buf_t *out, const sbusi_item_t *perf, int more,
                         int continuation)
{
    sbusi_enc_descriptor(out, 0x14);
    size_t at = sbusi_enc_list(out);
    sbusi_dec_t f;
    sbusi_dec_enter(perf, &f);
    uint32_t n = perf->count < 4 ? 4 : perf->count;
    if (more >= 0 && n < 6)
        n = 6;
    for (uint32_t i = 0; i < n; i++) {
        sbusi_item_t it = {0};
        int have = i < perf->count && sbusi_dec_item(&f, &it) == 0;
        if (i == 3)
            sbusi_enc_uint(out, SBUSI_BATCH_FORMAT);
        else if (i == 5 && more >= 0)
            sbusi_enc_bool(out, more);
        else if (have && (!continuation || i == 0 || i == 4 || i == 5))
            sbusi_buf_put(out, it.start, (size_t)(it.stop - it.start));
        else
            sbusi_enc_null(out);
    }
    sbusi_enc_end(out, at, n);
}

/* Writes one frame: header bytes hdr[doff] (size patched), performative
 * from `perf`, then payload[len]. */
static void put_frame(sbusi_buf_t *out, const uint8_t *hdr, size_t doff,
                      const sbusi_item_t *perf, int more, int continuation,
                      const uint8_t *payload, size_t len)
{
    size_t start = out->len;
    sbusi_buf_put(out, hdr, doff);
    enc_transfer(out, perf, more, continuation);
    sbusi_buf_put(out, payload, len);
    if (!out->oom)
        wr32(out->p + start, (uint32_t)(out->len - start));
}

/* The more flag of a transfer performative (0 when absent). */
static int more_of(const sbusi_item_t *perf)
{
    sbusi_dec_t f;
    sbusi_dec_enter(perf, &f);
    sbusi_item_t it = {0};
    for (uint32_t i = 0; i < perf->count && i <= 5; i++)
        if (sbusi_dec_item(&f, &it) < 0)
            return 0;
    return perf->count > 5 && it.v.type == SBUS_VAL_BOOL && it.v.u.b;
}

/* Writes the frame at p (size bytes) to out, rewritten if it is a batch
 * transfer. The rewrite makes the performative a few bytes longer; if that
 * pushes the frame past the peer's max-frame-size, the payload's tail goes
 * into a continuation transfer frame. */
static void emit_frame(const uint8_t *p, uint32_t size, uint32_t max_frame,
                       sbusi_buf_t *out)
{
    size_t doff = (size_t)p[4] * 4;
    if (size < 8 || doff < 8 || doff > size || p[5] != 0) {
        sbusi_buf_put(out, p, size);
        return;
    }
    const uint8_t *body = p + doff, *end = p + size;
    sbusi_dec_t d = {body, end, 0};
    sbusi_item_t perf;
    if (body + 3 > end || body[0] != 0 || body[1] != 0x53 || body[2] != 0x14 ||
        sbusi_dec_item(&d, &perf) < 0 || !perf.body || !is_batch(&perf)) {
        sbusi_buf_put(out, p, size);
        return;
    }
    const uint8_t *payload = perf.stop;
    size_t len = (size_t)(end - payload);
    size_t start = out->len;
    put_frame(out, p, doff, &perf, -1, 0, payload, len);
    if (out->oom || !max_frame || out->len - start <= max_frame)
        return;
    /* too big now: split the payload over two frames */
    out->len = start;
    int more = more_of(&perf);
    sbusi_buf_t probe = {0};
    enc_transfer(&probe, &perf, 1, 0);
    size_t head = doff + probe.len;
    sbusi_buf_free(&probe);
    if (probe.oom || head >= max_frame || max_frame - head >= len) {
        /* cannot be split sensibly (a peer limit below any transfer):
           send it as it is and let the peer refuse it */
        put_frame(out, p, doff, &perf, -1, 0, payload, len);
        return;
    }
    size_t room = max_frame - head;
    put_frame(out, p, doff, &perf, 1, 0, payload, room);
    put_frame(out, p, doff, &perf, more, 1, payload + room, len - room);
}

/* Length of the complete unit at p[n] (header or frame), 0 if partial. */
static size_t unit_len(const uint8_t *p, size_t n)
{
    if (n >= 4 && memcmp(p, "AMQP", 4) == 0)
        return n >= 8 ? 8 : 0;
    if (n < 4)
        return 0;
    uint32_t size = rd32(p);
    if (size < 8)
        return n >= 8 ? 8 : 0; /* malformed: pass 8 bytes on, peer fails */
    return n >= size ? size : 0;
}

static size_t feed_units(const uint8_t *p, size_t n, uint32_t max_frame,
                         sbusi_buf_t *out)
{
    size_t used = 0;
    for (;;) {
        size_t u = unit_len(p + used, n - used);
        if (!u)
            return used;
        if (u == 8 && memcmp(p + used, "AMQP", 4) == 0)
            sbusi_buf_put(out, p + used, 8);
        else
            emit_frame(p + used, (uint32_t)u, max_frame, out);
        used += u;
    }
}

void sbusi_frame_feed(sbusi_frame_t *f, const uint8_t *p, size_t n,
                      sbusi_buf_t *out)
{
    if (f->pend.len == 0) {
        size_t used = feed_units(p, n, f->max_frame, out);
        sbusi_buf_put(&f->pend, p + used, n - used);
        return;
    }
    sbusi_buf_put(&f->pend, p, n);
    size_t used = feed_units(f->pend.p, f->pend.len, f->max_frame, out);
    memmove(f->pend.p, f->pend.p + used, f->pend.len - used);
    f->pend.len -= used;
}

void sbusi_frame_reset(sbusi_frame_t *f) { sbusi_buf_free(&f->pend); }
