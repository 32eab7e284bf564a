/*
 * codec.c: the emulator's AMQP 1.0 type codec (see codec.h for the rules).
 *
 * The file has three parts: the growable buffer, the decoder (a value view
 * plus an element iterator, bounds-checked on every read so that malformed
 * input can only yield -1, never an out-of-bounds access), and the encoder,
 * which always writes the widest compound forms (list32/map32/array32) and
 * smallulong descriptors so stricter peers (uamqp, pyamqp) decode them.
 */
#include "codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- buffer */

void buf_free(emu_buf_t *b)
{
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
}

int buf_reserve(emu_buf_t *b, size_t more)
{
  if (b->len + more <= b->cap) return 0;
  size_t cap = b->cap ? b->cap : 256;
  while (cap < b->len + more) cap *= 2;
  unsigned char *p = realloc(b->p, cap);
  if (!p) abort();
  b->p = p;
  b->cap = cap;
  return 0;
}

void buf_put(emu_buf_t *b, const void *p, size_t n)
{
  if (!n) return;
  buf_reserve(b, n);
  memcpy(b->p + b->len, p, n);
  b->len += n;
}

void buf_u8(emu_buf_t *b, uint8_t v) { buf_put(b, &v, 1); }

void buf_be16(emu_buf_t *b, uint16_t v)
{
  unsigned char x[2] = {(unsigned char)(v >> 8), (unsigned char)v};
  buf_put(b, x, 2);
}

void buf_be32(emu_buf_t *b, uint32_t v)
{
  unsigned char x[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                        (unsigned char)(v >> 8), (unsigned char)v};
  buf_put(b, x, 4);
}

void buf_be64(emu_buf_t *b, uint64_t v)
{
  buf_be32(b, (uint32_t)(v >> 32));
  buf_be32(b, (uint32_t)v);
}

static void put_be32_at(unsigned char *p, uint32_t v)
{
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
}

static uint32_t be32(const unsigned char *p)
{
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint64_t be64(const unsigned char *p)
{
  return ((uint64_t)be32(p) << 32) | be32(p + 4);
}

/* ---------------------------------------------------------------- decoder */

/* Size in bytes of a fixed-width payload for constructor c, or -1 if c is not fixed. */
static int fixed_width(uint8_t c)
{
  switch (c >> 4) {
  case 0x4: return 0;
  case 0x5: return 1;
  case 0x6: return 2;
  case 0x7: return 4;
  case 0x8: return 8;
  case 0x9: return 16;
  default: return -1;
  }
}

/* Decode the payload of constructor c at p (n bytes available) into v; returns bytes used. */
static long decode_payload(uint8_t c, const unsigned char *p, size_t n, amqp_val_t *v)
{
  v->code = c;
  v->count = 0;
  v->elem_code = 0;
  int w = fixed_width(c);
  if (w >= 0) {
    if ((size_t)w > n) return -1;
    v->data = p;
    v->size = (size_t)w;
    return w;
  }
  size_t hdr, size;
  switch (c >> 4) {
  case 0xa: case 0xc: case 0xe:
    if (n < 1) return -1;
    size = p[0];
    hdr = 1;
    break;
  case 0xb: case 0xd: case 0xf:
    if (n < 4) return -1;
    size = be32(p);
    hdr = 4;
    break;
  default:
    return -1;
  }
  if (size > n - hdr) return -1;
  const unsigned char *q = p + hdr;
  if ((c >> 4) == 0xa || (c >> 4) == 0xb) {
    v->data = q;
    v->size = size;
    return (long)(hdr + size);
  }
  /* compound or array: count follows */
  size_t cw = hdr;
  if (size < cw) return -1;
  v->count = cw == 1 ? q[0] : be32(q);
  v->data = q + cw;
  v->size = size - cw;
  if ((c >> 4) >= 0xe) {
    if (v->size < 1) return -1;
    v->elem_code = v->data[0];
    if (v->elem_code == 0x00) return -1; /* described arrays unsupported */
    v->data++;
    v->size--;
  }
  return (long)(hdr + size);
}

long amqp_decode(const unsigned char *p, size_t n, amqp_val_t *v)
{
  memset(v, 0, sizeof *v);
  v->start = p;
  size_t off = 0;
  if (n < 1) return -1;
  if (p[0] == 0x00) {
    /* A descriptor is never itself described: refusing 0x00 0x00 here keeps
     * the recursion one level deep, so a run of zero bytes (a 200 kB body of
     * zeros probed as a possible batch) cannot exhaust the stack. */
    if (n < 2 || p[1] == 0x00) return -1;
    amqp_val_t d;
    long dn = amqp_decode(p + 1, n - 1, &d);
    if (dn < 0 || d.described) return -1;
    int64_t code;
    v->described = true;
    if (d.code == AMQP_SMALLULONG || d.code == AMQP_ULONG || d.code == AMQP_ULONG0) {
      amqp_get_i64(&d, &code);
      v->desc = (uint64_t)code;
    } else {
      v->desc = UINT64_MAX;
    }
    off = 1 + (size_t)dn;
    if (off >= n) return -1;
  }
  uint8_t c = p[off];
  long m = decode_payload(c, p + off + 1, n - off - 1, v);
  if (m < 0) return -1;
  v->start = p;
  v->total = off + 1 + (size_t)m;
  return (long)v->total;
}

void amqp_iter_init(amqp_iter_t *it, const amqp_val_t *c)
{
  it->p = c->data;
  it->left = c->size;
  it->remaining = c->count;
  it->elem_code = c->elem_code;
  if (c->code == AMQP_LIST0 || !(amqp_is_list(c) || amqp_is_map(c) || amqp_is_array(c)))
    it->remaining = 0;
}

bool amqp_iter_next(amqp_iter_t *it, amqp_val_t *v)
{
  if (!it->remaining) return false;
  long m;
  if (it->elem_code) {
    memset(v, 0, sizeof *v);
    m = decode_payload(it->elem_code, it->p, it->left, v);
    v->start = it->p;
    v->total = m > 0 ? (size_t)m : 0;
  } else {
    m = amqp_decode(it->p, it->left, v);
  }
  if (m < 0) {
    it->remaining = 0;
    return false;
  }
  it->p += m;
  it->left -= (size_t)m;
  it->remaining--;
  return true;
}

bool amqp_is_null(const amqp_val_t *v) { return v->code == AMQP_NULL; }
bool amqp_is_map(const amqp_val_t *v) { return v->code == AMQP_MAP8 || v->code == AMQP_MAP32; }
bool amqp_is_list(const amqp_val_t *v)
{
  return v->code == AMQP_LIST0 || v->code == AMQP_LIST8 || v->code == AMQP_LIST32;
}
bool amqp_is_array(const amqp_val_t *v) { return v->code == AMQP_ARRAY8 || v->code == AMQP_ARRAY32; }

bool amqp_get_str(const amqp_val_t *v, const char **s, size_t *n)
{
  if (v->code != AMQP_STR8 && v->code != AMQP_STR32 && v->code != AMQP_SYM8 && v->code != AMQP_SYM32)
    return false;
  *s = (const char *)v->data;
  *n = v->size;
  return true;
}

bool amqp_get_i64(const amqp_val_t *v, int64_t *out)
{
  const unsigned char *d = v->data;
  switch (v->code) {
  case AMQP_UINT0: case AMQP_ULONG0: *out = 0; return true;
  case AMQP_UBYTE: case AMQP_SMALLUINT: case AMQP_SMALLULONG: *out = d[0]; return true;
  case AMQP_BYTE: case AMQP_SMALLINT: case AMQP_SMALLLONG: *out = (int8_t)d[0]; return true;
  case AMQP_USHORT: *out = (uint16_t)((d[0] << 8) | d[1]); return true;
  case AMQP_SHORT: *out = (int16_t)((d[0] << 8) | d[1]); return true;
  case AMQP_UINT: *out = be32(d); return true;
  case AMQP_INT: *out = (int32_t)be32(d); return true;
  case AMQP_ULONG: case AMQP_LONG: case AMQP_TIMESTAMP: *out = (int64_t)be64(d); return true;
  default: return false;
  }
}

bool amqp_get_bool(const amqp_val_t *v, bool *out)
{
  if (v->code == AMQP_TRUE) *out = true;
  else if (v->code == AMQP_FALSE) *out = false;
  else if (v->code == AMQP_BOOL) *out = v->data[0] != 0;
  else return false;
  return true;
}

bool amqp_get_uuid(const amqp_val_t *v, unsigned char out[16])
{
  if (v->code == AMQP_UUID || ((v->code == AMQP_VBIN8 || v->code == AMQP_VBIN32) && v->size == 16)) {
    memcpy(out, v->data, 16);
    return true;
  }
  return false;
}

bool amqp_get_bin(const amqp_val_t *v, const unsigned char **p, size_t *n)
{
  if (v->code != AMQP_VBIN8 && v->code != AMQP_VBIN32) return false;
  *p = v->data;
  *n = v->size;
  return true;
}

bool amqp_str_eq(const amqp_val_t *v, const char *s)
{
  const char *p;
  size_t n;
  if (!amqp_get_str(v, &p, &n)) return false;
  return strlen(s) == n && memcmp(p, s, n) == 0;
}

bool amqp_map_get(const amqp_val_t *map, const char *key, amqp_val_t *out)
{
  if (!amqp_is_map(map)) return false;
  amqp_iter_t it;
  amqp_iter_init(&it, map);
  amqp_val_t k;
  while (amqp_iter_next(&it, &k)) {
    if (!amqp_iter_next(&it, out)) return false;
    if (amqp_str_eq(&k, key)) return true;
  }
  return false;
}

char *amqp_dup_str(const amqp_val_t *v)
{
  const char *s;
  size_t n;
  if (!amqp_get_str(v, &s, &n)) return NULL;
  char *r = malloc(n + 1);
  if (!r) abort();
  memcpy(r, s, n);
  r[n] = 0;
  return r;
}

/* ---------------------------------------------------------------- encoder */

void enc_null(emu_buf_t *b) { buf_u8(b, AMQP_NULL); }
void enc_bool(emu_buf_t *b, bool v) { buf_u8(b, v ? AMQP_TRUE : AMQP_FALSE); }

void enc_uint(emu_buf_t *b, uint32_t v)
{
  buf_u8(b, AMQP_UINT);
  buf_be32(b, v);
}

void enc_int(emu_buf_t *b, int32_t v)
{
  buf_u8(b, AMQP_INT);
  buf_be32(b, (uint32_t)v);
}

void enc_long(emu_buf_t *b, int64_t v)
{
  buf_u8(b, AMQP_LONG);
  buf_be64(b, (uint64_t)v);
}

void enc_ulong(emu_buf_t *b, uint64_t v)
{
  buf_u8(b, AMQP_ULONG);
  buf_be64(b, v);
}

void enc_timestamp(emu_buf_t *b, int64_t ms)
{
  buf_u8(b, AMQP_TIMESTAMP);
  buf_be64(b, (uint64_t)ms);
}

void enc_uuid(emu_buf_t *b, const unsigned char u[16])
{
  buf_u8(b, AMQP_UUID);
  buf_put(b, u, 16);
}

static void enc_var(emu_buf_t *b, uint8_t c8, uint8_t c32, const void *p, size_t n)
{
  if (n < 256) {
    buf_u8(b, c8);
    buf_u8(b, (uint8_t)n);
  } else {
    buf_u8(b, c32);
    buf_be32(b, (uint32_t)n);
  }
  buf_put(b, p, n);
}

void enc_strn(emu_buf_t *b, const char *s, size_t n) { enc_var(b, AMQP_STR8, AMQP_STR32, s, n); }
void enc_str(emu_buf_t *b, const char *s) { enc_strn(b, s, strlen(s)); }
void enc_sym(emu_buf_t *b, const char *s) { enc_var(b, AMQP_SYM8, AMQP_SYM32, s, strlen(s)); }
void enc_bin(emu_buf_t *b, const void *p, size_t n) { enc_var(b, AMQP_VBIN8, AMQP_VBIN32, p, n); }

void enc_descriptor(emu_buf_t *b, uint64_t code)
{
  buf_u8(b, 0x00);
  if (code < 256) {
    buf_u8(b, AMQP_SMALLULONG);
    buf_u8(b, (uint8_t)code);
  } else {
    enc_ulong(b, code);
  }
}

static size_t enc_compound_begin(emu_buf_t *b, uint8_t code)
{
  buf_u8(b, code);
  size_t mark = b->len;
  buf_be32(b, 0);
  buf_be32(b, 0);
  return mark;
}

size_t enc_list_begin(emu_buf_t *b) { return enc_compound_begin(b, AMQP_LIST32); }
size_t enc_map_begin(emu_buf_t *b) { return enc_compound_begin(b, AMQP_MAP32); }

void enc_compound_end(emu_buf_t *b, size_t mark, uint32_t count)
{
  put_be32_at(b->p + mark, (uint32_t)(b->len - mark - 4));
  put_be32_at(b->p + mark + 4, count);
}

size_t enc_array_begin(emu_buf_t *b, uint8_t elem_code)
{
  size_t mark = enc_compound_begin(b, AMQP_ARRAY32);
  buf_u8(b, elem_code);
  return mark;
}

void enc_array_end(emu_buf_t *b, size_t mark, uint32_t count) { enc_compound_end(b, mark, count); }

/* ---------------------------------------------------------------- GUIDs */

void guid_swap(unsigned char out[16], const unsigned char in[16])
{
  unsigned char t[16];
  memcpy(t, in, 16);
  out[0] = t[3]; out[1] = t[2]; out[2] = t[1]; out[3] = t[0];
  out[4] = t[5]; out[5] = t[4];
  out[6] = t[7]; out[7] = t[6];
  memcpy(out + 8, t + 8, 8);
}

void uuid_format(char out[37], const unsigned char u[16])
{
  snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
           u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
           u[13], u[14], u[15]);
}
