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
 *
 * The second half of the file is the incoming guard (see its section):
 * it reads, in place, every frame the peer sends before Proton does, and
 * stops a stream that would trip an assertion in Proton 0.37.
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

void sbusi_frame_reset(sbusi_frame_t *f)
{
    sbusi_buf_free(&f->pend);
    sbusi_buf_free(&f->ipend);
    sbusi_buf_free(&f->imid);
    f->iwant = f->iskip = 0;
    f->istate = SBUSI_IN_HEADER;
    f->iwhy = f->icond = NULL;
}

/* ------------------------- the incoming guard ------------------------ */
/*
 * Proton 0.37 asserts (and Debian's build keeps assertions) when a
 * transfer begins a multi-transfer delivery without a delivery-id, so a
 * broken or hostile peer could abort the whole process. The guard follows
 * the incoming stream as Proton will read it - the protocol header, SASL
 * frames until the outcome, the next header, AMQP frames - and reads the
 * performative of every frame. It remembers which links are in the middle
 * of a multi-transfer delivery (a transfer with more set and not aborted,
 * keyed by channel and handle; forgotten at the last transfer, a detach,
 * a re-attach or the end of the session) and stops the stream at a
 * transfer that begins a delivery without a delivery-id Proton can read
 * (a uint: uint, smalluint or uint0, not described), or whose fields or
 * handle do not decode. AMQP 1.0 2.7.5 requires the id on the first
 * transfer, so a conforming peer never meets the guard; it is stricter
 * than Proton (more=false, aborted) on purpose.
 */

#define MID_KEY 8 /* a (channel, handle) pair in imid */

static void mid_key(uint8_t k[MID_KEY], uint16_t ch, uint32_t h)
{
    k[0] = ch >> 8; k[1] = (uint8_t)ch; k[2] = k[3] = 0;
    wr32(k + 4, h);
}

static long mid_find(const sbusi_frame_t *f, uint16_t ch, uint32_t h)
{
    uint8_t k[MID_KEY];
    mid_key(k, ch, h);
    for (size_t i = 0; i < f->imid.len; i += MID_KEY)
        if (memcmp(f->imid.p + i, k, MID_KEY) == 0)
            return (long)i;
    return -1;
}

static void mid_del(sbusi_frame_t *f, long at)
{
    f->imid.len -= MID_KEY;
    memmove(f->imid.p + at, f->imid.p + f->imid.len, MID_KEY);
}

/* Forgets the links of channel ch (all when handle is absent: h < 0). */
static void mid_forget(sbusi_frame_t *f, uint16_t ch, int64_t h)
{
    for (size_t i = 0; i < f->imid.len;) {
        const uint8_t *k = f->imid.p + i;
        if ((uint16_t)(k[0] << 8 | k[1]) == ch && (h < 0 || rd32(k + 4) == h))
            mid_del(f, (long)i);
        else
            i += MID_KEY;
    }
}

/* The guard reads frames in place with skim(), which moves past one
 * value without decoding it: it runs for every frame, so it must cost
 * next to nothing. */
enum { SKIM_OK = 0, SKIM_BAD = -1, SKIM_DESCRIBED = 1 };

/* Moves *pp (< end) past one value that is not described, giving its
 * constructor and the bytes after the constructor (and size). SKIM_BAD
 * when truncated or malformed; SKIM_DESCRIBED (nothing moved) for a
 * described value. */
static int skim(const uint8_t **pp, const uint8_t *end, uint8_t *code,
                const uint8_t **val, size_t *len)
{
    const uint8_t *p = *pp;
    if (p >= end)
        return SKIM_BAD;
    uint8_t c = *p++;
    size_t n;
    switch (c >> 4) {
    case 0x0: return c == 0x00 ? SKIM_DESCRIBED : SKIM_BAD;
    case 0x4: n = 0; break;
    case 0x5: n = 1; break;
    case 0x6: n = 2; break;
    case 0x7: n = 4; break;
    case 0x8: n = 8; break;
    case 0x9: n = 16; break;
    case 0xa: case 0xc: case 0xe:
        if (p >= end)
            return SKIM_BAD;
        n = *p++;
        break;
    case 0xb: case 0xd: case 0xf:
        if (end - p < 4)
            return SKIM_BAD;
        n = rd32(p);
        p += 4;
        break;
    default: return SKIM_BAD;
    }
    if ((size_t)(end - p) < n)
        return SKIM_BAD;
    *code = c;
    *val = p;
    *len = n;
    *pp = p + n;
    return SKIM_OK;
}

/* Moves *pp past a described value. Descriptors nest, and a peer's chain
 * of them must not become a recursion as deep as its frame: count the
 * values still owed instead. */
static int skip_described(const uint8_t **pp, const uint8_t *end)
{
    for (size_t owed = 1; owed;) {
        uint8_t c;
        const uint8_t *v;
        size_t n;
        int rc = skim(pp, end, &c, &v, &n);
        if (rc == SKIM_BAD)
            return SKIM_BAD;
        if (rc == SKIM_DESCRIBED) { /* a descriptor, then the value */
            (*pp)++;
            owed++;
            continue;
        }
        owed--;
    }
    return SKIM_OK;
}

/* One field of a performative: constructor 0 when described. */
static int field(const uint8_t **pp, const uint8_t *end, uint8_t *code,
                 const uint8_t **val)
{
    size_t n;
    int rc = skim(pp, end, code, val, &n);
    if (rc != SKIM_DESCRIBED)
        return rc;
    *code = 0;
    return skip_described(pp, end);
}

/* A uint as Proton 0.37 reads one (consume_uint): uint, smalluint,
 * uint0, not described. */
static int is_uint(uint8_t code)
{
    return code == 0x70 || code == 0x52 || code == 0x43;
}

/* The bytes of a uint as Proton reads one, constructor included; 0 for
 * anything else. */
static size_t uint_width(uint8_t code)
{
    return code == 0x43 ? 1 : code == 0x52 ? 2 : code == 0x70 ? 5 : 0;
}

static uint32_t uint_of(uint8_t code, const uint8_t *v)
{
    return code == 0x70 ? rd32(v) : code == 0x52 ? v[0] : 0;
}

/* A true boolean as Proton 0.37 reads one (consume_bool). */
static int is_true(uint8_t code, const uint8_t *v)
{
    return code == 0x41 || (code == 0x56 && v[0]);
}

static void in_violation(sbusi_frame_t *f, const char *cond, const char *why)
{
    f->istate = SBUSI_IN_BROKEN;
    f->icond = cond;
    f->iwhy = why;
}

/* A transfer on channel ch: count fields at p[end]. Only the fields up
 * to the last that matters are read: handle and delivery-id, more when
 * present, aborted when present (Proton reads them in order, so what
 * follows cannot change them). */
static void in_transfer(sbusi_frame_t *f, uint16_t ch, uint32_t count,
                        const uint8_t *p, const uint8_t *end)
{
    uint32_t n = count > 9 ? 10 : count > 5 ? 6 : count > 2 ? 2 : count;
    int handle_ok = 0, id_ok = 0, more = 0, aborted = 0;
    uint32_t handle = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t c;
        const uint8_t *v;
        if (field(&p, end, &c, &v) != SKIM_OK) {
            in_violation(f, "amqp:invalid-field",
                         "a transfer whose fields do not decode");
            return;
        }
        switch (i) {
        case 0: handle_ok = is_uint(c); handle = uint_of(c, v); break;
        case 1: id_ok = is_uint(c); break;
        case 5: more = is_true(c, v); break;
        case 9: aborted = is_true(c, v); break;
        default: break;
        }
    }
    if (!handle_ok) {
        in_violation(f, "amqp:invalid-field", "a transfer without a handle");
        return;
    }
    long at = f->imid.len ? mid_find(f, ch, handle) : -1;
    if (at < 0 && !id_ok) {
        in_violation(f, "amqp:invalid-field",
                     "the first transfer of a delivery has no delivery-id");
        return;
    }
    if (more && !aborted) {
        if (at < 0) {
            uint8_t k[MID_KEY];
            mid_key(k, ch, handle);
            sbusi_buf_put(&f->imid, k, MID_KEY);
            if (f->imid.oom)
                in_violation(f, NULL, "out of memory following deliveries");
        }
    } else if (at >= 0) {
        mid_del(f, at);
    }
}

/* An attach (handle is field 1), detach (field 0) or end: a link that
 * was in the middle of a delivery is no longer. */
static void in_link_end(sbusi_frame_t *f, uint16_t ch, uint64_t code,
                        uint32_t count, const uint8_t *p, const uint8_t *end)
{
    if (code == 0x17) {
        mid_forget(f, ch, -1);
        return;
    }
    uint32_t want = code == 0x12 ? 2 : 1;
    uint8_t c = 0;
    const uint8_t *v = NULL;
    for (uint32_t i = 0; i < want && i < count; i++)
        if (field(&p, end, &c, &v) != SKIM_OK)
            return; /* Proton refuses it */
    if (count >= want && is_uint(c))
        mid_forget(f, ch, uint_of(c, v));
}

/* Decides on the unit (protocol header or frame) at u, of which avail
 * bytes are here. Returns its length, or 0 when more bytes are needed:
 * *want from its start. Sets istate (SBUSI_IN_BROKEN on a violation). */
static size_t in_unit(sbusi_frame_t *f, const uint8_t *u, size_t avail,
                      size_t *want)
{
    *want = 8;
    if (avail < 8)
        return 0;
    if (f->istate == SBUSI_IN_HEADER) {
        if (memcmp(u, "AMQP", 4) != 0 || (u[4] != 0 && u[4] != 3))
            f->istate = SBUSI_IN_OFF; /* Proton refuses it */
        else
            f->istate = u[4] == 3 ? SBUSI_IN_SASL : SBUSI_IN_AMQP;
        return 8;
    }
    uint32_t size = rd32(u);
    size_t doff = (size_t)u[4] * 4;
    if (size < 8 || doff < 8 || doff > size) {
        f->istate = SBUSI_IN_OFF; /* Proton refuses the framing */
        return 8;
    }
    if (doff == size)
        return size; /* empty (a heartbeat) */
    size_t have = avail < size ? avail : size;
    *want = avail * 2 < size ? avail * 2 : size;
    const uint8_t *p = u + doff, *end = u + have;
    uint8_t c = 0;
    const uint8_t *v = NULL;
    size_t n = 0;
    uint64_t code;
    int rc;
    if (end - p >= 3 && p[0] == 0x00 && p[1] == 0x53) {
        code = p[2]; /* the usual smallulong descriptor */
        p += 3;
    } else {
        /* the descriptor: 0x00, then a ulong of any width */
        const uint8_t *q = p + 1;
        rc = p < end && *p == 0x00 ? skim(&q, end, &c, &v, &n) : SKIM_BAD;
        if (rc == SKIM_BAD && have < size)
            return 0;
        if (rc != SKIM_OK)
            return size; /* no performative Proton can read: it refuses it */
        switch (c) {
        case 0x53: case 0x50: case 0x52: code = v[0]; break;
        case 0x44: case 0x43: code = 0; break;
        case 0x60: code = (uint64_t)(v[0] << 8 | v[1]); break;
        case 0x70: code = rd32(v); break;
        case 0x80: code = (uint64_t)rd32(v) << 32 | rd32(v + 4); break;
        default: return size; /* not a descriptor Proton knows */
        }
        p = v + n;
    }
    if (f->istate == SBUSI_IN_SASL) {
        if (code == 0x44) /* sasl-outcome: the AMQP header follows */
            f->istate = SBUSI_IN_HEADER;
        return size;
    }
    int transfer = code == 0x14;
    int link_end = f->imid.len && (code == 0x12 || code == 0x16 || code == 0x17);
    if (!transfer && !link_end)
        return size;
    /* the performative's list */
    uint32_t count = 0;
    rc = p < end ? skim(&p, end, &c, &v, &n) : SKIM_BAD;
    if (rc == SKIM_BAD && have < size)
        return 0; /* not all here yet */
    if (rc == SKIM_OK && c == 0xc0 && n >= 1) {
        count = v[0];
        v += 1, n -= 1;
    } else if (rc == SKIM_OK && c == 0xd0 && n >= 4) {
        count = rd32(v);
        v += 4, n -= 4;
    } else if (!(rc == SKIM_OK && c == 0x45)) {
        if (transfer)
            in_violation(f, "amqp:invalid-field",
                         "a transfer whose fields do not decode");
        return size;
    }
    uint16_t ch = (uint16_t)(u[6] << 8 | u[7]);
    if (transfer)
        in_transfer(f, ch, count, v, v + n);
    else
        in_link_end(f, ch, code, count, v, v + n);
    return size;
}

/* The common case, decided in a few instructions: an AMQP frame (doff
 * 2) of which avail bytes are here, with no delivery in progress, that is
 * no transfer, or a transfer whose short list (2 to 5 fields, so no more
 * flag; all here) starts with a uint handle and a uint delivery-id. Its
 * size when it is one of those (in_unit would pass it too), else 0. */
static size_t fast_unit(const sbusi_frame_t *f, const uint8_t *u,
                        size_t avail)
{
    if (avail < 16 || f->istate != SBUSI_IN_AMQP || f->imid.len ||
        u[4] != 2 || u[8] != 0x00 || u[9] != 0x53)
        return 0;
    uint32_t size = rd32(u);
    if (size < 16)
        return 0;
    if (u[10] != 0x14)
        return size;
    size_t have = avail < size ? avail : size;
    const uint8_t *q = u + 14, *lend = u + 13 + u[12];
    if (u[11] != 0xc0 || u[13] < 2 || u[13] > 5 || lend > u + have)
        return 0;
    size_t a = q < lend ? uint_width(q[0]) : 0;
    size_t b = a && q + a < lend ? uint_width(q[a]) : 0;
    return b && q + a + b <= lend ? size : 0;
}

int sbusi_frame_scan_in(sbusi_frame_t *f, const uint8_t *p, size_t n,
                        size_t *pass)
{
    size_t pos = 0;
    *pass = n;
    while (pos < n) {
        if (f->istate == SBUSI_IN_OFF)
            return 0;
        if (f->istate == SBUSI_IN_BROKEN) {
            *pass = 0;
            return -1;
        }
        if (f->iskip) {
            size_t k = n - pos < f->iskip ? n - pos : f->iskip;
            pos += k;
            f->iskip -= k;
            continue;
        }
        size_t want, len, start = pos;
        if (!f->ipend.len && (len = fast_unit(f, p + pos, n - pos)) != 0) {
            if (len <= n - pos) {
                pos += len;
            } else {
                f->iskip = len - (n - pos);
                pos = n;
            }
            continue;
        }
        if (!f->ipend.len) {
            len = in_unit(f, p + pos, n - pos, &want);
            if (!len) {
                /* split across calls: keep its start until the rest */
                sbusi_buf_put(&f->ipend, p + pos, n - pos);
                if (f->ipend.oom) {
                    in_violation(f, NULL, "out of memory scanning the input");
                    *pass = start;
                    return -1;
                }
                f->iwant = want;
                pos = n;
                continue;
            }
            f->iskip = len;
        } else {
            size_t k = f->iwant - f->ipend.len;
            if (k > n - pos)
                k = n - pos;
            sbusi_buf_put(&f->ipend, p + pos, k);
            if (f->ipend.oom) {
                in_violation(f, NULL, "out of memory scanning the input");
                continue;
            }
            pos += k;
            if (f->ipend.len < f->iwant)
                continue;
            len = in_unit(f, f->ipend.p, f->ipend.len, &want);
            if (!len) {
                f->iwant = want;
                continue;
            }
            f->iskip = len > f->ipend.len ? len - f->ipend.len : 0;
            f->ipend.len = 0;
            start = 0; /* the unit began before p */
        }
        if (f->istate == SBUSI_IN_BROKEN) {
            *pass = start;
            return -1;
        }
    }
    return 0;
}
