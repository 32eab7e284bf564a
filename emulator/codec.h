/*
 * codec.h: a tiny AMQP 1.0 type codec for the emulator.
 *
 * Proton encodes performatives; everything the broker itself puts on the wire
 * (message annotations, management and CBS bodies, re-encoded messages) goes
 * through this encoder so that the exact AMQP types of protocol.md §8/§14 are
 * used: descriptors as smallulong 0x53, compounds always list32/map32 (never
 * list0), arrays with one primitive element constructor. The decoder is a
 * zero-copy view over encoded bytes: a value is a constructor, a pointer and
 * a size; compounds are walked with an iterator. Nothing here allocates
 * except the growable output buffer.
 */
#ifndef EMU_CODEC_H
#define EMU_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* AMQP constructor codes used by name in the emulator. */
enum {
  AMQP_NULL = 0x40, AMQP_TRUE = 0x41, AMQP_FALSE = 0x42, AMQP_BOOL = 0x56,
  AMQP_UBYTE = 0x50, AMQP_BYTE = 0x51, AMQP_USHORT = 0x60, AMQP_SHORT = 0x61,
  AMQP_UINT = 0x70, AMQP_SMALLUINT = 0x52, AMQP_UINT0 = 0x43,
  AMQP_ULONG = 0x80, AMQP_SMALLULONG = 0x53, AMQP_ULONG0 = 0x44,
  AMQP_INT = 0x71, AMQP_SMALLINT = 0x54, AMQP_LONG = 0x81, AMQP_SMALLLONG = 0x55,
  AMQP_FLOAT = 0x72, AMQP_DOUBLE = 0x82, AMQP_CHAR = 0x73,
  AMQP_TIMESTAMP = 0x83, AMQP_UUID = 0x98,
  AMQP_VBIN8 = 0xa0, AMQP_VBIN32 = 0xb0, AMQP_STR8 = 0xa1, AMQP_STR32 = 0xb1,
  AMQP_SYM8 = 0xa3, AMQP_SYM32 = 0xb3,
  AMQP_LIST0 = 0x45, AMQP_LIST8 = 0xc0, AMQP_LIST32 = 0xd0,
  AMQP_MAP8 = 0xc1, AMQP_MAP32 = 0xd1, AMQP_ARRAY8 = 0xe0, AMQP_ARRAY32 = 0xf0
};

/* Message section descriptors (AMQP 1.0 §3.2). */
enum {
  SEC_HEADER = 0x70, SEC_DELIVERY_ANN = 0x71, SEC_MESSAGE_ANN = 0x72,
  SEC_PROPERTIES = 0x73, SEC_APP_PROPS = 0x74, SEC_DATA = 0x75,
  SEC_SEQUENCE = 0x76, SEC_VALUE = 0x77, SEC_FOOTER = 0x78
};

/* Growable byte buffer; the owner frees p. */
typedef struct emu_buf {
  unsigned char *p; /* bytes, malloc'd */
  size_t len;       /* bytes used */
  size_t cap;       /* bytes allocated */
} emu_buf_t;

/* A decoded view of one AMQP value (borrowed from the input bytes). */
typedef struct amqp_val {
  uint8_t code;             /* constructor of the value (after any descriptor) */
  bool described;           /* a descriptor preceded the value */
  uint64_t desc;            /* numeric descriptor; UINT64_MAX when symbolic */
  const unsigned char *data; /* payload: fixed bytes, var bytes, or first element */
  size_t size;              /* payload size in bytes (elements only for compounds) */
  uint32_t count;           /* element count of list/map/array (map: keys+values) */
  uint8_t elem_code;        /* arrays: the shared element constructor */
  const unsigned char *start; /* first byte of the whole encoding (descriptor incl.) */
  size_t total;             /* bytes of the whole encoding */
} amqp_val_t;

/* Iterator over the elements of a list, map or array. */
typedef struct amqp_iter {
  const unsigned char *p; /* next element */
  size_t left;            /* bytes left */
  uint32_t remaining;     /* elements left */
  uint8_t elem_code;      /* arrays: shared constructor; 0 for list/map */
} amqp_iter_t;

void buf_free(emu_buf_t *b);
int buf_reserve(emu_buf_t *b, size_t more);
void buf_put(emu_buf_t *b, const void *p, size_t n);
void buf_u8(emu_buf_t *b, uint8_t v);
void buf_be16(emu_buf_t *b, uint16_t v);
void buf_be32(emu_buf_t *b, uint32_t v);
void buf_be64(emu_buf_t *b, uint64_t v);

/* Decoding. Each returns the number of bytes consumed, or -1 on malformed input. */
long amqp_decode(const unsigned char *p, size_t n, amqp_val_t *v);
void amqp_iter_init(amqp_iter_t *it, const amqp_val_t *compound);
bool amqp_iter_next(amqp_iter_t *it, amqp_val_t *v);
bool amqp_is_null(const amqp_val_t *v);
bool amqp_get_str(const amqp_val_t *v, const char **s, size_t *n); /* string or symbol */
bool amqp_get_i64(const amqp_val_t *v, int64_t *out);  /* any integer or timestamp */
bool amqp_get_bool(const amqp_val_t *v, bool *out);
bool amqp_get_uuid(const amqp_val_t *v, unsigned char out[16]);
bool amqp_get_bin(const amqp_val_t *v, const unsigned char **p, size_t *n);
bool amqp_is_map(const amqp_val_t *v);
bool amqp_is_list(const amqp_val_t *v);
bool amqp_is_array(const amqp_val_t *v);
/* Find a string- or symbol-keyed entry in a map. */
bool amqp_map_get(const amqp_val_t *map, const char *key, amqp_val_t *out);
bool amqp_str_eq(const amqp_val_t *v, const char *s);
/* Copy a string/symbol value as a NUL-terminated malloc'd string (NULL if not one). */
char *amqp_dup_str(const amqp_val_t *v);

/* Encoding into a buffer (allocation failure aborts: the emulator is a test tool). */
void enc_null(emu_buf_t *b);
void enc_bool(emu_buf_t *b, bool v);
void enc_uint(emu_buf_t *b, uint32_t v);
void enc_int(emu_buf_t *b, int32_t v);
void enc_long(emu_buf_t *b, int64_t v);
void enc_ulong(emu_buf_t *b, uint64_t v);
void enc_timestamp(emu_buf_t *b, int64_t ms);
void enc_uuid(emu_buf_t *b, const unsigned char u[16]);
void enc_str(emu_buf_t *b, const char *s);
void enc_strn(emu_buf_t *b, const char *s, size_t n);
void enc_sym(emu_buf_t *b, const char *s);
void enc_bin(emu_buf_t *b, const void *p, size_t n);
void enc_descriptor(emu_buf_t *b, uint64_t code); /* 0x00 + smallulong or ulong */
size_t enc_list_begin(emu_buf_t *b);              /* list32; returns a mark */
size_t enc_map_begin(emu_buf_t *b);               /* map32; returns a mark */
void enc_compound_end(emu_buf_t *b, size_t mark, uint32_t count);
size_t enc_array_begin(emu_buf_t *b, uint8_t elem_code); /* array32 */
void enc_array_end(emu_buf_t *b, size_t mark, uint32_t count);

/* .NET GUID byte order <-> RFC 4122 (uuid) byte order: swap the first three groups. */
void guid_swap(unsigned char out[16], const unsigned char in[16]);
void uuid_format(char out[37], const unsigned char u[16]);

#endif
