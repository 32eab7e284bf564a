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

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

static uint64_t rd64(const uint8_t *p)
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

int sbusi_dec_item(sbusi_dec_t *d, sbusi_item_t *it)
{
    memset(it, 0, sizeof *it);
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
        sbusi_item_t desc;
        if (sbusi_dec_item(d, &desc) < 0)
            return -1;
        it->described = 1;
        if (desc.v.type == SBUS_VAL_UINT)
            it->descriptor = desc.v.u.u;
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

void sbusi_dec_enter(const sbusi_item_t *it, sbusi_dec_t *inner)
{
    inner->p = it->body;
    inner->end = it->body ? it->body + it->size : NULL;
    inner->bad = 0;
}

int sbusi_dec_array_elem(sbusi_dec_t *d, uint8_t elem, sbusi_item_t *it)
{
    memset(it, 0, sizeof *it);
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
