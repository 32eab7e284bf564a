/*
 * codec.c - the AMQP 1.0 type system, bytes in and bytes out.
 *
 * The engine encodes and decodes message sections, CBS and $management
 * bodies itself instead of going through pn_data_t: one pass, no
 * intermediate tree, strings and binaries left in place when decoding.
 * First half: encoders that append to an sbusi_buf_t (compounds are always
 * written in their 32-bit form and patched at the end). Second half: a
 * cursor decoder that reads one item at a time, skips any type by its
 * format code's width class, and a few lookup helpers for maps.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>

static void put8(sbusi_buf_t *b, uint8_t v) { sbusi_buf_put(b, &v, 1); }

static void put32(sbusi_buf_t *b, uint32_t v)
{
    uint8_t x[4] = {v >> 24, v >> 16, v >> 8, v};
    sbusi_buf_put(b, x, 4);
}

static void put64(sbusi_buf_t *b, uint64_t v)
{
    put32(b, (uint32_t)(v >> 32));
    put32(b, (uint32_t)v);
}

void sbusi_enc_null(sbusi_buf_t *b) { put8(b, 0x40); }
void sbusi_enc_bool(sbusi_buf_t *b, int v) { put8(b, v ? 0x41 : 0x42); }

void sbusi_enc_uint(sbusi_buf_t *b, uint32_t v)
{
    if (v == 0) {
        put8(b, 0x43);
    } else if (v < 256) {
        uint8_t x[2] = {0x52, (uint8_t)v};
        sbusi_buf_put(b, x, 2);
    } else {
        put8(b, 0x70);
        put32(b, v);
    }
}

void sbusi_enc_ulong(sbusi_buf_t *b, uint64_t v)
{
    if (v == 0) {
        put8(b, 0x44);
    } else if (v < 256) {
        uint8_t x[2] = {0x53, (uint8_t)v};
        sbusi_buf_put(b, x, 2);
    } else {
        put8(b, 0x80);
        put64(b, v);
    }
}

void sbusi_enc_int(sbusi_buf_t *b, int32_t v)
{
    if (v >= -128 && v <= 127) {
        uint8_t x[2] = {0x54, (uint8_t)(int8_t)v};
        sbusi_buf_put(b, x, 2);
    } else {
        put8(b, 0x71);
        put32(b, (uint32_t)v);
    }
}

void sbusi_enc_long(sbusi_buf_t *b, int64_t v)
{
    if (v >= -128 && v <= 127) {
        uint8_t x[2] = {0x55, (uint8_t)(int8_t)v};
        sbusi_buf_put(b, x, 2);
    } else {
        put8(b, 0x81);
        put64(b, (uint64_t)v);
    }
}

void sbusi_enc_double(sbusi_buf_t *b, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    put8(b, 0x82);
    put64(b, u);
}

void sbusi_enc_timestamp(sbusi_buf_t *b, int64_t ms)
{
    put8(b, 0x83);
    put64(b, (uint64_t)ms);
}

void sbusi_enc_uuid(sbusi_buf_t *b, const uint8_t u[16])
{
    put8(b, 0x98);
    sbusi_buf_put(b, u, 16);
}

static void enc_var(sbusi_buf_t *b, uint8_t small, uint8_t big,
                    const void *p, size_t n)
{
    if (n < 256) {
        uint8_t x[2] = {small, (uint8_t)n};
        sbusi_buf_put(b, x, 2);
    } else {
        put8(b, big);
        put32(b, (uint32_t)n);
    }
    sbusi_buf_put(b, p, n);
}

void sbusi_enc_str(sbusi_buf_t *b, const char *s, size_t n)
{
    enc_var(b, 0xa1, 0xb1, s, n);
}

void sbusi_enc_cstr(sbusi_buf_t *b, const char *s)
{
    if (!s)
        sbusi_enc_null(b);
    else
        sbusi_enc_str(b, s, strlen(s));
}

void sbusi_enc_sym(sbusi_buf_t *b, const char *s, size_t n)
{
    enc_var(b, 0xa3, 0xb3, s, n);
}

void sbusi_enc_bin(sbusi_buf_t *b, const void *p, size_t n)
{
    enc_var(b, 0xa0, 0xb0, p, n);
}

void sbusi_enc_descriptor(sbusi_buf_t *b, uint64_t code)
{
    put8(b, 0x00);
    sbusi_enc_ulong(b, code);
}

void sbusi_enc_value(sbusi_buf_t *b, const sbus_value_t *v)
{
    switch (v->type) {
    case SBUS_VAL_NULL: sbusi_enc_null(b); break;
    case SBUS_VAL_BOOL: sbusi_enc_bool(b, v->u.b); break;
    case SBUS_VAL_INT:
        if (v->u.i >= INT32_MIN && v->u.i <= INT32_MAX)
            sbusi_enc_int(b, (int32_t)v->u.i);
        else
            sbusi_enc_long(b, v->u.i);
        break;
    case SBUS_VAL_UINT:
        if (v->u.u <= UINT32_MAX)
            sbusi_enc_uint(b, (uint32_t)v->u.u);
        else
            sbusi_enc_ulong(b, v->u.u);
        break;
    case SBUS_VAL_DOUBLE: sbusi_enc_double(b, v->u.d); break;
    case SBUS_VAL_STRING: sbusi_enc_str(b, v->u.s.ptr, v->u.s.len); break;
    case SBUS_VAL_BINARY: sbusi_enc_bin(b, v->u.s.ptr, v->u.s.len); break;
    case SBUS_VAL_TIMESTAMP: sbusi_enc_timestamp(b, v->u.i); break;
    case SBUS_VAL_UUID: sbusi_enc_uuid(b, v->u.uuid); break;
    case SBUS_VAL_AMQP: sbusi_buf_put(b, v->u.s.ptr, v->u.s.len); break;
    default: sbusi_enc_null(b); break;
    }
}

static size_t enc_compound(sbusi_buf_t *b, uint8_t code)
{
    size_t at = b->len;
    put8(b, code);
    put32(b, 0);
    put32(b, 0);
    return at;
}

size_t sbusi_enc_list(sbusi_buf_t *b) { return enc_compound(b, 0xd0); }
size_t sbusi_enc_map(sbusi_buf_t *b) { return enc_compound(b, 0xd1); }

size_t sbusi_enc_array(sbusi_buf_t *b, uint8_t elem)
{
    size_t at = enc_compound(b, 0xf0);
    put8(b, elem);
    return at;
}

void sbusi_enc_end(sbusi_buf_t *b, size_t at, uint32_t count)
{
    if (b->oom)
        return;
    uint32_t size = (uint32_t)(b->len - at - 5);
    uint8_t *p = b->p + at + 1;
    p[0] = size >> 24; p[1] = size >> 16; p[2] = size >> 8; p[3] = size;
    p[4] = count >> 24; p[5] = count >> 16; p[6] = count >> 8; p[7] = count;
}

void sbusi_enc_array_long(sbusi_buf_t *b, int64_t v) { put64(b, (uint64_t)v); }

void sbusi_enc_array_uuid(sbusi_buf_t *b, const uint8_t u[16])
{
    sbusi_buf_put(b, u, 16);
}

/* ---------------------------- decoding ---------------------------- */

static int need(sbusi_dec_t *d, size_t n)
{
    if (d->bad || (size_t)(d->end - d->p) < n) {
        d->bad = 1;
        return -1;
    }
    return 0;
}

static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

static inline uint64_t rd64(const uint8_t *p)
{
    return (uint64_t)rd32(p) << 32 | rd32(p + 4);
}

/* Fills the simple value of a fixed-width item from its bytes. */
static void fixed_value(uint8_t code, const uint8_t *p, sbus_value_t *v)
{
    v->type = SBUS_VAL_NULL;
    switch (code) {
    case 0x41: v->type = SBUS_VAL_BOOL; v->u.b = 1; break;
    case 0x42: v->type = SBUS_VAL_BOOL; v->u.b = 0; break;
    case 0x56: v->type = SBUS_VAL_BOOL; v->u.b = p[0] != 0; break;
    case 0x43: case 0x44: v->type = SBUS_VAL_UINT; v->u.u = 0; break;
    case 0x50: case 0x52: case 0x53:
        v->type = SBUS_VAL_UINT; v->u.u = p[0]; break;
    case 0x60: v->type = SBUS_VAL_UINT; v->u.u = (uint16_t)(p[0] << 8 | p[1]); break;
    case 0x70: v->type = SBUS_VAL_UINT; v->u.u = rd32(p); break;
    case 0x80: v->type = SBUS_VAL_UINT; v->u.u = rd64(p); break;
    case 0x51: case 0x54: case 0x55:
        v->type = SBUS_VAL_INT; v->u.i = (int8_t)p[0]; break;
    case 0x61: v->type = SBUS_VAL_INT; v->u.i = (int16_t)(p[0] << 8 | p[1]); break;
    case 0x71: v->type = SBUS_VAL_INT; v->u.i = (int32_t)rd32(p); break;
    case 0x81: v->type = SBUS_VAL_INT; v->u.i = (int64_t)rd64(p); break;
    case 0x72: {
        uint32_t u = rd32(p);
        float f;
        memcpy(&f, &u, 4);
        v->type = SBUS_VAL_DOUBLE;
        v->u.d = f;
        break;
    }
    case 0x82: {
        uint64_t u = rd64(p);
        v->type = SBUS_VAL_DOUBLE;
        memcpy(&v->u.d, &u, 8);
        break;
    }
    case 0x83: v->type = SBUS_VAL_TIMESTAMP; v->u.i = (int64_t)rd64(p); break;
    case 0x98: v->type = SBUS_VAL_UUID; memcpy(v->u.uuid, p, 16); break;
    default: break;
    }
}

/* Width of the fixed part of a format code: the high nibble says it. */
static int fixed_width(uint8_t code)
{
    switch (code >> 4) {
    case 0x4: return 0;
    case 0x5: return 1;
    case 0x6: return 2;
    case 0x7: return 4;
    case 0x8: return 8;
    case 0x9: return 16;
    default: return -1;
    }
}

/* A count a peer cannot back with bytes is a lie: every list or map item
 * takes at least one byte, every array element its width (arrays of
 * zero-width elements are capped), so consumers may size arrays by it. */
static int plausible_count(const sbusi_item_t *it)
{
    if (it->code >> 4 < 0xe)
        return it->count <= it->size;
    int w = fixed_width(it->elem);
    if (w > 0)
        return (uint64_t)it->count * (uint64_t)w <= it->size;
    return w == 0 ? it->count <= 65536 : it->count <= it->size;
}

/* Reads the body of an item whose constructor `code` was just read. */
static int dec_body(sbusi_dec_t *d, uint8_t code, sbusi_item_t *it)
{
    it->code = code;
    int w = fixed_width(code);
    if (w >= 0) {
        if (need(d, (size_t)w) < 0)
            return -1;
        fixed_value(code, d->p, &it->v);
        d->p += w;
        return 0;
    }
    uint8_t hi = code >> 4;
    size_t lenw = (hi == 0xa || hi == 0xc || hi == 0xe) ? 1 : 4;
    if (hi < 0xa || hi > 0xf || need(d, lenw) < 0) {
        d->bad = 1;
        return -1;
    }
    size_t size = lenw == 1 ? d->p[0] : rd32(d->p);
    d->p += lenw;
    if (need(d, size) < 0)
        return -1;
    const uint8_t *body = d->p;
    d->p += size;
    if (hi == 0xa || hi == 0xb) {
        it->v.type = (code & 0x0f) == 0 ? SBUS_VAL_BINARY : SBUS_VAL_STRING;
        it->is_symbol = (code & 0x0f) == 3;
        it->v.u.s.ptr = (const char *)body;
        it->v.u.s.len = size;
        return 0;
    }
    /* list, map, array: a count follows the size */
    if (size < lenw) {
        d->bad = 1;
        return -1;
    }
    it->count = lenw == 1 ? body[0] : rd32(body);
    it->body = body + lenw;
    it->size = size - lenw;
    it->v.type = SBUS_VAL_NULL;
    if (hi >= 0xe) {
        if (it->size < 1) {
            d->bad = 1;
            return -1;
        }
        it->elem = it->body[0];
        it->body++;
        it->size--;
    }
    if (!plausible_count(it)) {
        d->bad = 1;
        return -1;
    }
    return 0;
}

/* Empties an item field by field: a memset of the whole struct compiles
 * to `rep stos`, whose start-up cost showed as the largest single item of
 * decoding a received message. */
static void item_clear(sbusi_item_t *it)
{
    it->code = 0;
    it->described = 0;
    it->descriptor = 0;
    it->v.type = SBUS_VAL_NULL;
    it->v.u.s.ptr = NULL;
    it->v.u.s.len = 0;
    it->is_symbol = 0;
    it->body = NULL;
    it->size = 0;
    it->count = 0;
    it->elem = 0;
    it->start = NULL;
    it->stop = NULL;
}

/* The fast path of sbusi_dec_item() for what every section and
 * performative is: a smallulong descriptor (00 53 xx) and a list, map or
 * binary with an 8- or 32-bit size. Returns 1 when it read the item, 0
 * when the general path must (which then also finds any fault). */
static int dec_described_fast(sbusi_dec_t *d, sbusi_item_t *it)
{
    const uint8_t *p = d->p;
    size_t left = (size_t)(d->end - p);
    if (d->bad || left < 5 || p[0] != 0x00 || p[1] != 0x53)
        return 0;
    uint8_t code = p[3];
    size_t lenw = (code & 0x10) ? 4 : 1;
    if (code != 0xc0 && code != 0xc1 && code != 0xd0 && code != 0xd1 &&
        code != 0xa0 && code != 0xb0)
        return 0;
    if (left - 4 < lenw)
        return 0;
    size_t size = lenw == 1 ? p[4] : rd32(p + 4);
    const uint8_t *body = p + 4 + lenw;
    if (left - 4 - lenw < size)
        return 0;
    item_clear(it);
    it->start = p;
    it->described = 1;
    it->descriptor = p[2];
    it->code = code;
    if (code == 0xa0 || code == 0xb0) {
        it->v.type = SBUS_VAL_BINARY;
        it->v.u.s.ptr = (const char *)body;
        it->v.u.s.len = size;
    } else {
        if (size < lenw)
            return 0;
        it->count = lenw == 1 ? body[0] : rd32(body);
        it->body = body + lenw;
        it->size = size - lenw;
        if (it->count > it->size) /* plausible_count() */
            return 0;
    }
    d->p = body + size;
    it->stop = d->p;
    return 1;
}

int sbusi_dec_item(sbusi_dec_t *d, sbusi_item_t *it)
{
    if (dec_described_fast(d, it))
        return 0;
    item_clear(it);
    if (need(d, 1) < 0)
        return -1;
    it->start = d->p;
    uint8_t code = *d->p++;
    if (code == 0x45) { /* list0 */
        it->code = code;
        it->stop = d->p;
        return 0;
    }
    if (code == 0x00) {
        if (d->end - d->p >= 2 && d->p[0] == 0x53) {
            /* smallulong, as every section and performative is
               described: read without decoding a whole item */
            it->descriptor = d->p[1];
            d->p += 2;
        } else {
            sbusi_item_t desc;
            /* a descriptor is a ulong or a symbol, never itself described:
               refusing that bounds the recursion (a chain of 0x00 bytes in
               a message from the peer would otherwise exhaust the stack) */
            if (d->p < d->end && d->p[0] == 0x00)
                return -1;
            if (sbusi_dec_item(d, &desc) < 0)
                return -1;
            if (desc.v.type == SBUS_VAL_UINT)
                it->descriptor = desc.v.u.u;
        }
        it->described = 1;
        if (need(d, 1) < 0)
            return -1;
        code = *d->p++;
        if (code == 0x45) {
            it->code = code;
            it->stop = d->p;
            return 0;
        }
    }
    int rc = dec_body(d, code, it);
    it->stop = d->p;
    return rc;
}

int sbusi_dec_value(sbusi_dec_t *d, sbus_value_t *v)
{
    /* The fast path: one primitive item (a fixed-width scalar, or a
       string, symbol or binary), read without filling an item. The bytes
       are checked exactly as dec_body() checks them. */
    const uint8_t *p = d->p;
    size_t left = (size_t)(d->end - p);
    if (!d->bad && left >= 1) {
        uint8_t code = p[0];
        uint8_t hi = code >> 4;
        if (hi >= 0x4 && hi <= 0x9) {
            int w = fixed_width(code);
            if (left - 1 < (size_t)w) {
                d->bad = 1;
                return -1;
            }
            fixed_value(code, p + 1, v);
            d->p = p + 1 + w;
            return 0;
        }
        if (hi == 0xa || hi == 0xb) {
            size_t lenw = hi == 0xa ? 1 : 4;
            if (left - 1 < lenw) {
                d->bad = 1;
                return -1;
            }
            size_t size = lenw == 1 ? p[1] : rd32(p + 1);
            if (left - 1 - lenw < size) {
                d->bad = 1;
                return -1;
            }
            v->type = (code & 0x0f) == 0 ? SBUS_VAL_BINARY : SBUS_VAL_STRING;
            v->u.s.ptr = (const char *)p + 1 + lenw;
            v->u.s.len = size;
            d->p = p + 1 + lenw + size;
            return 0;
        }
    }
    sbusi_item_t it;
    int rc = sbusi_dec_item(d, &it);
    *v = it.v;
    return rc;
}

void sbusi_dec_enter(const sbusi_item_t *it, sbusi_dec_t *inner)
{
    inner->p = it->body;
    inner->end = it->body ? it->body + it->size : NULL;
    inner->bad = 0;
}

int sbusi_dec_array_elem(sbusi_dec_t *d, uint8_t elem, sbusi_item_t *it)
{
    item_clear(it);
    it->start = d->p;
    int rc = dec_body(d, elem, it);
    it->stop = d->p;
    return rc;
}

int sbusi_map_find(const sbusi_item_t *map, const char *key,
                   sbusi_item_t *val)
{
    if (map->code != 0xc1 && map->code != 0xd1)
        return -1;
    sbusi_dec_t d;
    sbusi_dec_enter(map, &d);
    size_t klen = strlen(key);
    for (uint32_t i = 0; i < map->count; i += 2) {
        sbusi_item_t k;
        if (sbusi_dec_item(&d, &k) < 0 || sbusi_dec_item(&d, val) < 0)
            return -1;
        if (k.v.type == SBUS_VAL_STRING && k.v.u.s.len == klen &&
            memcmp(k.v.u.s.ptr, key, klen) == 0)
            return 0;
    }
    return -1;
}

int sbusi_item_int(const sbusi_item_t *it, int64_t *out)
{
    switch (it->v.type) {
    case SBUS_VAL_INT:
    case SBUS_VAL_TIMESTAMP: *out = it->v.u.i; return 0;
    case SBUS_VAL_UINT: *out = (int64_t)it->v.u.u; return 0;
    default: return -1;
    }
}

void sbusi_item_cstr(const sbusi_item_t *it, char *out, size_t cap)
{
    if (!cap)
        return;
    size_t n = 0;
    if (it->v.type == SBUS_VAL_STRING) {
        n = it->v.u.s.len < cap - 1 ? it->v.u.s.len : cap - 1;
        memcpy(out, it->v.u.s.ptr, n);
    }
    out[n] = 0;
}

/* ------------------ public reader and writer (sbus.h) --------------- */

/* The exact type of a format code, -1 if none. */
static int type_of(uint8_t code)
{
    switch (code) {
    case 0x40: return SBUS_AMQP_NULL;
    case 0x41: case 0x42: case 0x56: return SBUS_AMQP_BOOL;
    case 0x50: return SBUS_AMQP_UBYTE;
    case 0x60: return SBUS_AMQP_USHORT;
    case 0x43: case 0x52: case 0x70: return SBUS_AMQP_UINT;
    case 0x44: case 0x53: case 0x80: return SBUS_AMQP_ULONG;
    case 0x51: return SBUS_AMQP_BYTE;
    case 0x61: return SBUS_AMQP_SHORT;
    case 0x54: case 0x71: return SBUS_AMQP_INT;
    case 0x55: case 0x81: return SBUS_AMQP_LONG;
    case 0x72: return SBUS_AMQP_FLOAT;
    case 0x82: return SBUS_AMQP_DOUBLE;
    case 0x74: return SBUS_AMQP_DECIMAL32;
    case 0x84: return SBUS_AMQP_DECIMAL64;
    case 0x94: return SBUS_AMQP_DECIMAL128;
    case 0x73: return SBUS_AMQP_CHAR;
    case 0x83: return SBUS_AMQP_TIMESTAMP;
    case 0x98: return SBUS_AMQP_UUID;
    case 0xa0: case 0xb0: return SBUS_AMQP_BINARY;
    case 0xa1: case 0xb1: return SBUS_AMQP_STRING;
    case 0xa3: case 0xb3: return SBUS_AMQP_SYMBOL;
    case 0x45: case 0xc0: case 0xd0: return SBUS_AMQP_LIST;
    case 0xc1: case 0xd1: return SBUS_AMQP_MAP;
    case 0xe0: case 0xf0: return SBUS_AMQP_ARRAY;
    default: return -1;
    }
}

void sbus_amqp_reader_init(sbus_amqp_reader_t *r, const void *p, size_t n)
{
    memset(r, 0, sizeof *r);
    r->p = p;
    r->end = r->p ? r->p + n : NULL;
}

/* Fills the public item from an internal one. */
static int make_item(const sbusi_item_t *in, sbus_amqp_item_t *it)
{
    memset(it, 0, sizeof *it);
    it->encoded = in->start;
    it->encoded_len = (size_t)(in->stop - in->start);
    if (in->described) {
        /* children: the descriptor and the value, after the 0x00 */
        it->type = SBUS_AMQP_DESCRIBED;
        it->count = 2;
        it->priv_body = in->start + 1;
        it->priv_size = it->encoded_len - 1;
    } else {
        int t = type_of(in->code);
        if (t < 0)
            return SBUS_EINVAL;
        it->type = (sbus_amqp_type_t)t;
        it->v = in->v;
        it->count = in->count;
        it->priv_body = in->body;
        it->priv_size = in->size;
        it->priv_elem = in->elem;
    }
    /* fixed-width values end their encoding: the last `w` bytes */
    int w = it->type == SBUS_AMQP_DECIMAL128 ? 16
            : it->type == SBUS_AMQP_DECIMAL64 ? 8
                                              : 4;
    switch (it->type) {
    case SBUS_AMQP_CHAR:
        it->v.type = SBUS_VAL_UINT;
        it->v.u.u = rd32(in->stop - w);
        break;
    case SBUS_AMQP_DECIMAL32:
    case SBUS_AMQP_DECIMAL64:
    case SBUS_AMQP_DECIMAL128:
        it->v.type = SBUS_VAL_BINARY;
        it->v.u.s.ptr = (const char *)(in->stop - w);
        it->v.u.s.len = (size_t)w;
        break;
    case SBUS_AMQP_LIST:
    case SBUS_AMQP_MAP:
    case SBUS_AMQP_ARRAY:
    case SBUS_AMQP_DESCRIBED:
        it->v.type = SBUS_VAL_AMQP;
        it->v.u.s.ptr = it->encoded;
        it->v.u.s.len = it->encoded_len;
        break;
    default: break;
    }
    if (it->type == SBUS_AMQP_MAP && (it->count & 1))
        return SBUS_EINVAL;
    return 0;
}

int sbus_amqp_read(sbus_amqp_reader_t *r, sbus_amqp_item_t *it)
{
    if (!r || !it)
        return SBUS_EINVAL;
    if (r->bad)
        return SBUS_EINVAL;
    if (r->array ? r->left == 0 : r->p >= r->end)
        return 0;
    sbusi_dec_t d = {r->p, r->end, 0};
    sbusi_item_t in;
    int rc;
    if (r->array) {
        if (r->elem == 0x00) {
            r->bad = 1; /* arrays of described values: not decoded here */
            return SBUS_ENOTSUP;
        }
        rc = sbusi_dec_array_elem(&d, r->elem, &in);
    } else {
        rc = sbusi_dec_item(&d, &in);
    }
    if (rc < 0 || make_item(&in, it) < 0) {
        r->bad = 1;
        return SBUS_EINVAL;
    }
    r->p = d.p;
    if (r->array)
        r->left--;
    return 1;
}

int sbus_amqp_enter(const sbus_amqp_item_t *it, sbus_amqp_reader_t *inner)
{
    if (!it || !inner)
        return SBUS_EINVAL;
    switch (it->type) {
    case SBUS_AMQP_LIST:
    case SBUS_AMQP_MAP:
    case SBUS_AMQP_DESCRIBED:
        sbus_amqp_reader_init(inner, it->priv_body, it->priv_size);
        return 0;
    case SBUS_AMQP_ARRAY:
        sbus_amqp_reader_init(inner, it->priv_body, it->priv_size);
        inner->array = 1;
        inner->left = (uint32_t)it->count;
        inner->elem = it->priv_elem;
        return 0;
    default: return SBUS_EINVAL;
    }
}

static int check_items(sbus_amqp_reader_t *r, size_t want, int depth)
{
    sbus_amqp_item_t it;
    size_t n = 0;
    int rc;
    while ((rc = sbus_amqp_read(r, &it)) == 1) {
        n++;
        if (it.v.type != SBUS_VAL_AMQP)
            continue;
        sbus_amqp_reader_t in;
        if (depth >= 32 || sbus_amqp_enter(&it, &in) < 0 ||
            check_items(&in, it.count, depth + 1) < 0)
            return SBUS_EINVAL;
    }
    if (rc == SBUS_ENOTSUP && r->array)
        return 0; /* described elements: bounded, kept, not walked */
    if (rc < 0 || (want != (size_t)-1 && n != want))
        return SBUS_EINVAL;
    return 0;
}

int sbusi_amqp_check(const void *p, size_t n)
{
    if (!p || !n)
        return SBUS_EINVAL;
    sbus_amqp_reader_t r;
    sbus_amqp_reader_init(&r, p, n);
    return check_items(&r, 1, 0);
}

#define W_DEPTH 32

/* One open compound of a writer. */
typedef struct w_frame {
    int type;       /* SBUS_AMQP_LIST / MAP / ARRAY / DESCRIBED */
    size_t at;      /* where its constructor is */
    uint32_t count; /* items written inside */
    uint8_t elem;   /* ARRAY: element constructor, 0 before the first */
    int etype;      /* ARRAY: element type */
} w_frame_t;

struct sbus_amqp_writer {
    sbusi_buf_t b;         /* the bytes */
    int values;            /* complete top-level values written */
    int depth;             /* open compounds */
    w_frame_t st[W_DEPTH]; /* them, outermost first */
};

int sbus_amqp_writer_new(sbus_amqp_writer_t **out)
{
    if (!out)
        return SBUS_EINVAL;
    *out = sbusi_calloc(1, sizeof **out);
    return *out ? 0 : SBUS_ENOMEM;
}

void sbus_amqp_writer_free(sbus_amqp_writer_t *w)
{
    if (!w)
        return;
    sbusi_buf_free(&w->b);
    sbusi_free(w);
}

void sbus_amqp_writer_reset(sbus_amqp_writer_t *w)
{
    if (!w)
        return;
    w->b.len = 0;
    w->b.oom = 0;
    w->values = 0;
    w->depth = 0;
}

/* The constructor of type t in its fixed-size (array element) form. */
static uint8_t wide_code(int t)
{
    static const uint8_t codes[] = {
        [SBUS_AMQP_NULL] = 0x40,      [SBUS_AMQP_BOOL] = 0x56,
        [SBUS_AMQP_UBYTE] = 0x50,     [SBUS_AMQP_USHORT] = 0x60,
        [SBUS_AMQP_UINT] = 0x70,      [SBUS_AMQP_ULONG] = 0x80,
        [SBUS_AMQP_BYTE] = 0x51,      [SBUS_AMQP_SHORT] = 0x61,
        [SBUS_AMQP_INT] = 0x71,       [SBUS_AMQP_LONG] = 0x81,
        [SBUS_AMQP_FLOAT] = 0x72,     [SBUS_AMQP_DOUBLE] = 0x82,
        [SBUS_AMQP_DECIMAL32] = 0x74, [SBUS_AMQP_DECIMAL64] = 0x84,
        [SBUS_AMQP_DECIMAL128] = 0x94, [SBUS_AMQP_CHAR] = 0x73,
        [SBUS_AMQP_TIMESTAMP] = 0x83, [SBUS_AMQP_UUID] = 0x98,
        [SBUS_AMQP_BINARY] = 0xb0,    [SBUS_AMQP_STRING] = 0xb1,
        [SBUS_AMQP_SYMBOL] = 0xb3,
    };
    return t >= 0 && t <= SBUS_AMQP_SYMBOL ? codes[t] : 0;
}

/* v as a signed integer within [lo, hi]. */
static int as_int(const sbus_value_t *v, int64_t lo, int64_t hi, int64_t *out)
{
    if (v->type == SBUS_VAL_INT || v->type == SBUS_VAL_TIMESTAMP)
        *out = v->u.i;
    else if (v->type == SBUS_VAL_UINT && v->u.u <= INT64_MAX)
        *out = (int64_t)v->u.u;
    else
        return -1;
    return *out >= lo && *out <= hi ? 0 : -1;
}

/* v as an unsigned integer up to max. */
static int as_uint(const sbus_value_t *v, uint64_t max, uint64_t *out)
{
    if (v->type == SBUS_VAL_UINT)
        *out = v->u.u;
    else if (v->type == SBUS_VAL_INT && v->u.i >= 0)
        *out = (uint64_t)v->u.i;
    else
        return -1;
    return *out <= max ? 0 : -1;
}

/* Writes the body (no constructor) of scalar type t holding v. */
static int put_body(sbusi_buf_t *b, int t, const sbus_value_t *v)
{
    int64_t i;
    uint64_t u;
    size_t declen = t == SBUS_AMQP_DECIMAL32 ? 4 : t == SBUS_AMQP_DECIMAL64 ? 8 : 16;
    switch (t) {
    case SBUS_AMQP_NULL: return 0;
    case SBUS_AMQP_BOOL:
        if (v->type != SBUS_VAL_BOOL)
            return SBUS_EINVAL;
        put8(b, v->u.b ? 1 : 0);
        return 0;
    case SBUS_AMQP_UBYTE:
        if (as_uint(v, UINT8_MAX, &u) < 0)
            return SBUS_EINVAL;
        put8(b, (uint8_t)u);
        return 0;
    case SBUS_AMQP_USHORT:
        if (as_uint(v, UINT16_MAX, &u) < 0)
            return SBUS_EINVAL;
        put8(b, (uint8_t)(u >> 8));
        put8(b, (uint8_t)u);
        return 0;
    case SBUS_AMQP_UINT:
    case SBUS_AMQP_CHAR:
        if (as_uint(v, t == SBUS_AMQP_CHAR ? 0x10ffff : UINT32_MAX, &u) < 0)
            return SBUS_EINVAL;
        put32(b, (uint32_t)u);
        return 0;
    case SBUS_AMQP_ULONG:
        if (as_uint(v, UINT64_MAX, &u) < 0)
            return SBUS_EINVAL;
        put64(b, u);
        return 0;
    case SBUS_AMQP_BYTE:
        if (as_int(v, INT8_MIN, INT8_MAX, &i) < 0)
            return SBUS_EINVAL;
        put8(b, (uint8_t)(int8_t)i);
        return 0;
    case SBUS_AMQP_SHORT:
        if (as_int(v, INT16_MIN, INT16_MAX, &i) < 0)
            return SBUS_EINVAL;
        put8(b, (uint8_t)((uint16_t)i >> 8));
        put8(b, (uint8_t)i);
        return 0;
    case SBUS_AMQP_INT:
        if (as_int(v, INT32_MIN, INT32_MAX, &i) < 0)
            return SBUS_EINVAL;
        put32(b, (uint32_t)i);
        return 0;
    case SBUS_AMQP_LONG:
    case SBUS_AMQP_TIMESTAMP:
        if (as_int(v, INT64_MIN, INT64_MAX, &i) < 0)
            return SBUS_EINVAL;
        put64(b, (uint64_t)i);
        return 0;
    case SBUS_AMQP_FLOAT: {
        if (v->type != SBUS_VAL_DOUBLE)
            return SBUS_EINVAL;
        float f = (float)v->u.d;
        uint32_t x;
        memcpy(&x, &f, 4);
        put32(b, x);
        return 0;
    }
    case SBUS_AMQP_DOUBLE: {
        if (v->type != SBUS_VAL_DOUBLE)
            return SBUS_EINVAL;
        uint64_t x;
        memcpy(&x, &v->u.d, 8);
        put64(b, x);
        return 0;
    }
    case SBUS_AMQP_DECIMAL32:
    case SBUS_AMQP_DECIMAL64:
    case SBUS_AMQP_DECIMAL128:
        if (v->type != SBUS_VAL_BINARY || v->u.s.len != declen || !v->u.s.ptr)
            return SBUS_EINVAL;
        sbusi_buf_put(b, v->u.s.ptr, declen);
        return 0;
    case SBUS_AMQP_UUID:
        if (v->type != SBUS_VAL_UUID)
            return SBUS_EINVAL;
        sbusi_buf_put(b, v->u.uuid, 16);
        return 0;
    case SBUS_AMQP_BINARY:
    case SBUS_AMQP_STRING:
    case SBUS_AMQP_SYMBOL:
        if ((v->type != SBUS_VAL_STRING && v->type != SBUS_VAL_BINARY) ||
            (!v->u.s.ptr && v->u.s.len) || v->u.s.len > UINT32_MAX)
            return SBUS_EINVAL;
        put32(b, (uint32_t)v->u.s.len);
        sbusi_buf_put(b, v->u.s.ptr, v->u.s.len);
        return 0;
    default: return SBUS_EINVAL;
    }
}

/* Room for one more value here? Counts it in the open compound. */
static int w_slot(sbus_amqp_writer_t *w)
{
    if (!w->depth && w->values)
        return SBUS_ESTATE; /* one value per writer */
    if (w->depth && w->st[w->depth - 1].type == SBUS_AMQP_DESCRIBED &&
        w->st[w->depth - 1].count >= 2)
        return SBUS_EINVAL;
    return 0;
}

static void w_done(sbus_amqp_writer_t *w)
{
    if (w->depth)
        w->st[w->depth - 1].count++;
    else
        w->values++;
}

int sbus_amqp_write(sbus_amqp_writer_t *w, sbus_amqp_type_t t,
                    const sbus_value_t *v)
{
    static const sbus_value_t null_v = {SBUS_VAL_NULL, {0}};
    if (!w || (int)t < 0 || t > SBUS_AMQP_SYMBOL)
        return SBUS_EINVAL;
    if (!v)
        v = &null_v;
    int rc = w_slot(w);
    if (rc < 0)
        return rc;
    size_t mark = w->b.len;
    uint8_t code = wide_code(t);
    if (w->depth && w->st[w->depth - 1].type == SBUS_AMQP_ARRAY) {
        w_frame_t *a = &w->st[w->depth - 1];
        if (a->elem && a->etype != (int)t)
            return SBUS_EINVAL; /* one type per array */
        rc = put_body(&w->b, t, v);
        if (rc == 0 && !a->elem) {
            a->elem = code;
            a->etype = t;
            w->b.p[a->at + 9] = code; /* reserved by begin */
        }
    } else {
        put8(&w->b, code);
        rc = put_body(&w->b, t, v);
    }
    if (rc < 0) {
        w->b.len = mark;
        return rc;
    }
    if (w->b.oom)
        return SBUS_ENOMEM;
    w_done(w);
    return 0;
}

int sbus_amqp_write_value(sbus_amqp_writer_t *w, const sbus_value_t *v)
{
    if (!w || !v)
        return SBUS_EINVAL;
    if (v->type == SBUS_VAL_AMQP) {
        int rc = w_slot(w);
        if (rc < 0)
            return rc;
        if (w->depth && w->st[w->depth - 1].type == SBUS_AMQP_ARRAY)
            return SBUS_ENOTSUP;
        if (sbusi_amqp_check(v->u.s.ptr, v->u.s.len) < 0)
            return SBUS_EINVAL;
        sbusi_buf_put(&w->b, v->u.s.ptr, v->u.s.len);
        if (w->b.oom)
            return SBUS_ENOMEM;
        w_done(w);
        return 0;
    }
    switch (v->type) {
    case SBUS_VAL_NULL: return sbus_amqp_write(w, SBUS_AMQP_NULL, v);
    case SBUS_VAL_BOOL: return sbus_amqp_write(w, SBUS_AMQP_BOOL, v);
    case SBUS_VAL_INT:
        return sbus_amqp_write(w, v->u.i >= INT32_MIN && v->u.i <= INT32_MAX
                                      ? SBUS_AMQP_INT
                                      : SBUS_AMQP_LONG, v);
    case SBUS_VAL_UINT:
        return sbus_amqp_write(w, v->u.u <= UINT32_MAX ? SBUS_AMQP_UINT
                                                       : SBUS_AMQP_ULONG, v);
    case SBUS_VAL_DOUBLE: return sbus_amqp_write(w, SBUS_AMQP_DOUBLE, v);
    case SBUS_VAL_STRING: return sbus_amqp_write(w, SBUS_AMQP_STRING, v);
    case SBUS_VAL_BINARY: return sbus_amqp_write(w, SBUS_AMQP_BINARY, v);
    case SBUS_VAL_TIMESTAMP: return sbus_amqp_write(w, SBUS_AMQP_TIMESTAMP, v);
    case SBUS_VAL_UUID: return sbus_amqp_write(w, SBUS_AMQP_UUID, v);
    default: return SBUS_EINVAL;
    }
}

int sbus_amqp_begin(sbus_amqp_writer_t *w, sbus_amqp_type_t t)
{
    if (!w || (t != SBUS_AMQP_LIST && t != SBUS_AMQP_MAP &&
               t != SBUS_AMQP_ARRAY && t != SBUS_AMQP_DESCRIBED))
        return SBUS_EINVAL;
    int rc = w_slot(w);
    if (rc < 0)
        return rc;
    if (w->depth && w->st[w->depth - 1].type == SBUS_AMQP_ARRAY)
        return SBUS_ENOTSUP; /* arrays of compounds */
    if (w->depth == W_DEPTH)
        return SBUS_ENOTSUP;
    w_frame_t *f = &w->st[w->depth];
    memset(f, 0, sizeof *f);
    f->type = t;
    f->at = w->b.len;
    if (t == SBUS_AMQP_DESCRIBED)
        put8(&w->b, 0x00);
    else if (t == SBUS_AMQP_ARRAY)
        sbusi_enc_array(&w->b, 0x40); /* constructor set by the first */
    else
        enc_compound(&w->b, t == SBUS_AMQP_LIST ? 0xd0 : 0xd1);
    if (w->b.oom)
        return SBUS_ENOMEM;
    w->depth++;
    return 0;
}

int sbus_amqp_end(sbus_amqp_writer_t *w)
{
    if (!w)
        return SBUS_EINVAL;
    if (!w->depth)
        return SBUS_ESTATE;
    w_frame_t *f = &w->st[w->depth - 1];
    if ((f->type == SBUS_AMQP_MAP && (f->count & 1)) ||
        (f->type == SBUS_AMQP_DESCRIBED && f->count != 2))
        return SBUS_EINVAL;
    if (f->type != SBUS_AMQP_DESCRIBED)
        sbusi_enc_end(&w->b, f->at, f->count);
    w->depth--;
    if (w->b.oom)
        return SBUS_ENOMEM;
    w_done(w);
    return 0;
}

int sbus_amqp_writer_result(const sbus_amqp_writer_t *w, const void **p,
                            size_t *n)
{
    if (!w || !p || !n)
        return SBUS_EINVAL;
    if (w->b.oom)
        return SBUS_ENOMEM;
    if (w->depth || w->values != 1)
        return SBUS_ESTATE;
    *p = w->b.p;
    *n = w->b.len;
    return 0;
}

/* IEEE 754-2008 decimals in the Binary Integer Decimal encoding (AMQP
 * 1.0 section 1.6.19-21), formatted as [-]<coefficient>E<exponent>. */
int sbus_amqp_decimal_format(const void *p, size_t n, char *out, size_t cap)
{
    int ebits, bias;
    unsigned __int128 max;
    switch (n) {
    case 4: ebits = 8; bias = 101; max = 9999999u; break;
    case 8: ebits = 10; bias = 398; max = 9999999999999999ull; break;
    case 16:
        ebits = 14;
        bias = 6176;
        max = (unsigned __int128)9999999999999999ull * 1000000000000000000ull +
              999999999999999999ull; /* 10^34 - 1 */
        break;
    default: return SBUS_EINVAL;
    }
    if (!p || !out || !cap)
        return SBUS_EINVAL;
    const uint8_t *b = p;
    unsigned __int128 x = 0;
    for (size_t i = 0; i < n; i++)
        x = x << 8 | b[i];
    int bits = (int)n * 8;
    int neg = (int)(x >> (bits - 1)) & 1;
    int top5 = (int)(x >> (bits - 6)) & 0x1f;
    char tmp[64];
    size_t len = 0;
    if (top5 == 0x1e || top5 == 0x1f) {
        const char *s = top5 == 0x1e ? "Infinity"
                        : ((x >> (bits - 7)) & 1) ? "sNaN"
                                                  : "NaN";
        len = (size_t)snprintf(tmp, sizeof tmp, "%s%s",
                               neg && top5 == 0x1e ? "-" : "", s);
    } else {
        int cbits = bits - 1 - ebits;
        unsigned __int128 one = 1;
        int e;
        unsigned __int128 coef;
        if (((x >> (bits - 3)) & 3) != 3) {
            e = (int)((x >> cbits) & ((one << ebits) - 1));
            coef = x & ((one << cbits) - 1);
        } else { /* "11": the coefficient's top bits are an implicit 100 */
            e = (int)((x >> (cbits - 2)) & ((one << ebits) - 1));
            coef = (one << cbits) | (x & ((one << (cbits - 2)) - 1));
        }
        if (coef > max)
            coef = 0; /* non-canonical: zero, as IEEE 754 says */
        char digits[40];
        size_t nd = 0;
        do {
            digits[nd++] = (char)('0' + (int)(coef % 10));
            coef /= 10;
        } while (coef);
        if (neg)
            tmp[len++] = '-';
        while (nd)
            tmp[len++] = digits[--nd];
        len += (size_t)snprintf(tmp + len, sizeof tmp - len, "E%d", e - bias);
    }
    if (len + 1 > cap)
        return SBUS_ETOOBIG;
    memcpy(out, tmp, len + 1);
    return (int)len;
}
