/*
 * test_message.c - messages and batches without a broker: every property
 * and field through encode and decode, application properties of each
 * simple type, body kinds, the identifier limits of protocol.md 6.6, lock
 * tokens from .NET-ordered delivery tags, and batch size accounting.
 */
#include <sbus/sbus.h>

#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures;

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__,        \
                    __LINE__, #cond);                                      \
            failures++;                                                    \
        }                                                                  \
    } while (0)

static int prop_is(const sbus_message_t *m, sbus_prop_t p, const char *want)
{
    const char *s;
    size_t n;
    return sbus_message_get_prop(m, p, &s, &n) == 0 && n == strlen(want) &&
           memcmp(s, want, n) == 0;
}

static sbus_message_t *roundtrip(const sbus_message_t *m)
{
    sbusi_buf_t b = {0};
    CHECK(sbusi_message_encode(m, &b) == 0);
    CHECK(sbus_message_encoded_size(m) == b.len);
    sbus_message_t *out = NULL;
    CHECK(sbusi_message_decode(b.p, b.len, &out) == 0);
    sbusi_buf_free(&b);
    return out;
}

static void test_properties(void)
{
    sbus_message_t *m;
    CHECK(sbus_message_new(&m) == 0);
    const char *vals[] = {"mid", "cid", "application/json", "subj", "to",
                          "reply", "rsid", "sid", "sid", "vpk"};
    for (int p = 0; p <= SBUS_PROP_VIA_PARTITION_KEY; p++)
        CHECK(sbus_message_set_prop(m, p, vals[p], strlen(vals[p])) == 0);
    CHECK(sbus_message_set_field(m, SBUS_FIELD_TIME_TO_LIVE, 60000) == 0);
    CHECK(sbus_message_set_field(m, SBUS_FIELD_SCHEDULED_ENQUEUE_TIME,
                                 1700000000000) == 0);
    CHECK(sbus_message_set_body(m, "body", 4) == 0);
    sbus_value_t v;
    v.type = SBUS_VAL_STRING;
    v.u.s.ptr = "text";
    v.u.s.len = 4;
    CHECK(sbus_message_set_property(m, "s", 1, &v) == 0);
    v.type = SBUS_VAL_INT;
    v.u.i = -5000000000LL;
    CHECK(sbus_message_set_property(m, "big", 3, &v) == 0);
    v.type = SBUS_VAL_UINT;
    v.u.u = 7;
    CHECK(sbus_message_set_property(m, "u", 1, &v) == 0);
    v.type = SBUS_VAL_DOUBLE;
    v.u.d = 2.5;
    CHECK(sbus_message_set_property(m, "d", 1, &v) == 0);
    v.type = SBUS_VAL_BOOL;
    v.u.b = 1;
    CHECK(sbus_message_set_property(m, "b", 1, &v) == 0);
    v.type = SBUS_VAL_TIMESTAMP;
    v.u.i = 1234;
    CHECK(sbus_message_set_property(m, "t", 1, &v) == 0);
    v.type = SBUS_VAL_UUID;
    memset(v.u.uuid, 0xab, 16);
    CHECK(sbus_message_set_property(m, "g", 1, &v) == 0);
    v.type = SBUS_VAL_BINARY;
    v.u.s.ptr = "\x00\x01";
    v.u.s.len = 2;
    CHECK(sbus_message_set_property(m, "bin", 3, &v) == 0);
    v.type = SBUS_VAL_NULL;
    CHECK(sbus_message_set_property(m, "n", 1, &v) == 0);
    CHECK(sbus_message_del_property(m, "n", 1) == 0);
    CHECK(sbus_message_del_property(m, "n", 1) == SBUS_ENOENT);

    sbus_message_t *r = roundtrip(m);
    for (int p = 0; r && p <= SBUS_PROP_VIA_PARTITION_KEY; p++)
        CHECK(prop_is(r, p, vals[p]));
    int64_t x;
    CHECK(sbus_message_get_field(r, SBUS_FIELD_TIME_TO_LIVE, &x) == 0 &&
          x == 60000);
    CHECK(sbus_message_get_field(r, SBUS_FIELD_SCHEDULED_ENQUEUE_TIME, &x) ==
              0 &&
          x == 1700000000000);
    CHECK(sbus_message_property_count(r) == 8);
    const char *k;
    size_t kn;
    CHECK(sbus_message_property_at(r, 1, &k, &kn, &v) == 0 && kn == 3 &&
          v.type == SBUS_VAL_INT && v.u.i == -5000000000LL);
    CHECK(sbus_message_property_at(r, 3, &k, &kn, &v) == 0 &&
          v.type == SBUS_VAL_DOUBLE && v.u.d == 2.5);
    CHECK(sbus_message_property_at(r, 6, &k, &kn, &v) == 0 &&
          v.type == SBUS_VAL_UUID && v.u.uuid[15] == 0xab);
    CHECK(sbus_message_property_at(r, 7, &k, &kn, &v) == 0 &&
          v.type == SBUS_VAL_BINARY && v.u.s.len == 2);
    const void *p;
    size_t n;
    CHECK(sbus_message_body_at(r, 0, &p, &n) == 0 && n == 4 &&
          memcmp(p, "body", 4) == 0);
    sbus_message_t *c;
    CHECK(sbus_message_copy(r, &c) == 0 && prop_is(c, SBUS_PROP_TO, "to"));
    sbus_message_free(c);
    sbus_message_free(r);
    sbus_message_free(m);
}

static void test_bodies(void)
{
    sbus_message_t *m;
    sbus_message_new(&m);
    CHECK(sbus_message_body_count(m) == 1); /* one empty data section */
    CHECK(sbus_message_add_body_section(m, "two", 3) == 0);
    sbus_message_t *r = roundtrip(m);
    CHECK(r && sbus_message_body_count(r) == 2);
    sbus_message_free(r);
    sbus_value_t v = {.type = SBUS_VAL_STRING};
    v.u.s.ptr = "as value";
    v.u.s.len = 8;
    CHECK(sbus_message_set_body_value(m, &v) == 0);
    CHECK(sbus_message_body_kind(m) == SBUS_BODY_VALUE);
    CHECK(sbus_message_add_body_section(m, "x", 1) == SBUS_ESTATE);
    r = roundtrip(m);
    sbus_value_t got;
    CHECK(r && sbus_message_body_kind(r) == SBUS_BODY_VALUE);
    CHECK(r && sbus_message_body_value(r, &got) == 0 &&
          got.type == SBUS_VAL_STRING && got.u.s.len == 8);
    const void *p;
    size_t n;
    CHECK(sbus_message_body_at(r, 0, &p, &n) == SBUS_ESTATE);
    sbus_message_free(r);
    sbus_message_free(m);
}

static void test_limits(void)
{
    sbus_message_t *m;
    sbus_message_new(&m);
    char id[130];
    memset(id, 'i', sizeof id);
    CHECK(sbus_message_set_prop(m, SBUS_PROP_MESSAGE_ID, id, 128) == 0);
    CHECK(sbus_message_set_prop(m, SBUS_PROP_MESSAGE_ID, id, 129) ==
          SBUS_EINVAL);
    CHECK(sbus_message_set_prop(m, SBUS_PROP_SESSION_ID, id, 129) ==
          SBUS_EINVAL);
    CHECK(sbus_message_set_prop(m, SBUS_PROP_DEAD_LETTER_REASON, "r", 1) ==
          SBUS_EINVAL); /* read-only */
    CHECK(sbus_message_set_field(m, SBUS_FIELD_SEQUENCE_NUMBER, 1) ==
          SBUS_EINVAL);
    CHECK(sbus_message_set_field(m, SBUS_FIELD_TIME_TO_LIVE, -1) ==
          SBUS_EINVAL);
    /* partition key must equal the session id */
    sbus_message_set_prop(m, SBUS_PROP_SESSION_ID, "a", 1);
    sbus_message_set_prop(m, SBUS_PROP_PARTITION_KEY, "b", 1);
    sbus_batch_t *b;
    sbus_batch_new(0, &b);
    CHECK(sbus_batch_add(b, m) == SBUS_EINVAL);
    sbus_message_set_prop(m, SBUS_PROP_PARTITION_KEY, "a", 1);
    CHECK(sbus_batch_add(b, m) == 0);
    sbus_batch_free(b);
    sbus_message_free(m);
}

static void test_batch_limit(void)
{
    sbus_batch_t *b;
    CHECK(sbus_batch_new(1000, &b) == 0);
    CHECK(sbus_batch_max_size(b) == 1000);
    sbus_message_t *m;
    sbus_message_new(&m);
    char body[300];
    memset(body, 'x', sizeof body);
    sbus_message_set_body(m, body, sizeof body);
    size_t one = sbus_message_encoded_size(m);
    CHECK(sbus_batch_add(b, m) == 0);
    CHECK(sbus_batch_add(b, m) == 0);
    CHECK(sbus_batch_add(b, m) == 0);
    size_t before = sbus_batch_size(b);
    CHECK(before == 3 * (one + 3 + 5));
    CHECK(sbus_batch_add(b, m) == SBUS_ETOOBIG);
    CHECK(sbus_batch_count(b) == 3 && sbus_batch_size(b) == before);
    sbus_batch_free(b);
    sbus_message_free(m);
}

static void test_lock_token_and_uuid(void)
{
    uint8_t u[16];
    for (int i = 0; i < 16; i++)
        u[i] = (uint8_t)i;
    char s[37];
    sbus_uuid_format(u, s);
    CHECK(strcmp(s, "00010203-0405-0607-0809-0a0b0c0d0e0f") == 0);
    sbus_message_t *m;
    sbus_message_new(&m);
    CHECK(sbus_message_lock_token(m, u) == SBUS_ENOENT);
    CHECK(sbus_message_settle_state(m) == SBUS_MSG_UNSETTLED);
    sbus_message_free(m);
}

/* Regression (fuzz: tests/fuzz/regressions/message/): AMQP 1.0 §3.2 allows
 * data sections, or sequence sections, or exactly one amqp-value. A mix was
 * accepted and left data bytes posing as an encoded value. */
static void test_mixed_body_sections_refused(void)
{
    static const uint8_t data_then_value[] = {0x00, 0x53, 0x75, 0xa0, 0x01, 'x',
                                              0x00, 0x53, 0x77, 0xa1, 0x01, 'y'};
    static const uint8_t value_then_value[] = {0x00, 0x53, 0x77, 0xa1, 0x01, 'x',
                                               0x00, 0x53, 0x77, 0xa1, 0x01, 'y'};
    static const uint8_t value_then_data[] = {0x00, 0x53, 0x77, 0xa1, 0x01, 'x',
                                              0x00, 0x53, 0x75, 0xa0, 0x01, 'y'};
    static const uint8_t seq_then_seq[] = {0x00, 0x53, 0x76, 0x45,
                                           0x00, 0x53, 0x76, 0x45};
    sbus_message_t *m = NULL;
    CHECK(sbusi_message_decode(data_then_value, sizeof data_then_value, &m) == SBUS_EINVAL);
    CHECK(sbusi_message_decode(value_then_value, sizeof value_then_value, &m) == SBUS_EINVAL);
    CHECK(sbusi_message_decode(value_then_data, sizeof value_then_data, &m) == SBUS_EINVAL);
    CHECK(sbusi_message_decode(seq_then_seq, sizeof seq_then_seq, &m) == 0);
    CHECK(m && sbus_message_body_kind(m) == SBUS_BODY_SEQUENCE);
    sbus_message_free(m);
}

/* A writer holding a map with one of every kind sbus_value_t has no
 * member for (char, decimals, lists, arrays, described values, maps),
 * plus exact integer types and a symbol. */
static const uint8_t DEC32[4] = {0x22, 0x50, 0x00, 0x07};
static const uint8_t DEC64[8] = {0x22, 0x38, 0, 0, 0, 0, 0, 0x2a};
static const uint8_t DEC128[16] = {0x22, 0x08, 0, 0, 0, 0, 0, 0,
                                   0, 0, 0, 0, 0, 0, 0x01, 0x00};

static sbus_value_t sv(const char *s)
{
    sbus_value_t v = {.type = SBUS_VAL_STRING};
    v.u.s.ptr = s;
    v.u.s.len = strlen(s);
    return v;
}

static sbus_value_t bv(const void *p, size_t n)
{
    sbus_value_t v = {.type = SBUS_VAL_BINARY};
    v.u.s.ptr = p;
    v.u.s.len = n;
    return v;
}

static sbus_value_t iv(int64_t i)
{
    sbus_value_t v = {.type = SBUS_VAL_INT};
    v.u.i = i;
    return v;
}

static sbus_value_t uv(uint64_t u)
{
    sbus_value_t v = {.type = SBUS_VAL_UINT};
    v.u.u = u;
    return v;
}

static void build_rich(sbus_amqp_writer_t *w)
{
    sbus_value_t k, v;
    CHECK(sbus_amqp_begin(w, SBUS_AMQP_MAP) == 0);
    k = sv("char");
    CHECK(sbus_amqp_write_value(w, &k) == 0);
    v = uv(0x1F600);
    CHECK(sbus_amqp_write(w, SBUS_AMQP_CHAR, &v) == 0);
    k = sv("dec32");
    sbus_amqp_write_value(w, &k);
    v = bv(DEC32, 4);
    CHECK(sbus_amqp_write(w, SBUS_AMQP_DECIMAL32, &v) == 0);
    k = sv("dec64");
    sbus_amqp_write_value(w, &k);
    v = bv(DEC64, 8);
    CHECK(sbus_amqp_write(w, SBUS_AMQP_DECIMAL64, &v) == 0);
    k = sv("dec128");
    sbus_amqp_write_value(w, &k);
    v = bv(DEC128, 16);
    CHECK(sbus_amqp_write(w, SBUS_AMQP_DECIMAL128, &v) == 0);
    k = sv("list");
    sbus_amqp_write_value(w, &k);
    CHECK(sbus_amqp_begin(w, SBUS_AMQP_LIST) == 0);
    v = uv(7);
    CHECK(sbus_amqp_write(w, SBUS_AMQP_UBYTE, &v) == 0);
    v = iv(-3);
    CHECK(sbus_amqp_write(w, SBUS_AMQP_SHORT, &v) == 0);
    v = sv("sym");
    CHECK(sbus_amqp_write(w, SBUS_AMQP_SYMBOL, &v) == 0);
    CHECK(sbus_amqp_write(w, SBUS_AMQP_NULL, NULL) == 0);
    v.type = SBUS_VAL_DOUBLE;
    v.u.d = 1.5;
    CHECK(sbus_amqp_write(w, SBUS_AMQP_FLOAT, &v) == 0);
    CHECK(sbus_amqp_begin(w, SBUS_AMQP_LIST) == 0); /* empty */
    CHECK(sbus_amqp_end(w) == 0);
    CHECK(sbus_amqp_end(w) == 0);
    k = sv("array");
    sbus_amqp_write_value(w, &k);
    CHECK(sbus_amqp_begin(w, SBUS_AMQP_ARRAY) == 0);
    for (int i = 1; i <= 3; i++) {
        v = iv(i * 1000);
        CHECK(sbus_amqp_write(w, SBUS_AMQP_INT, &v) == 0);
    }
    v = iv(4); /* one type per array */
    CHECK(sbus_amqp_write(w, SBUS_AMQP_LONG, &v) == SBUS_EINVAL);
    CHECK(sbus_amqp_begin(w, SBUS_AMQP_LIST) == SBUS_ENOTSUP);
    CHECK(sbus_amqp_end(w) == 0);
    k = sv("described");
    sbus_amqp_write_value(w, &k);
    CHECK(sbus_amqp_begin(w, SBUS_AMQP_DESCRIBED) == 0);
    v = uv(0x1234);
    CHECK(sbus_amqp_write(w, SBUS_AMQP_ULONG, &v) == 0);
    CHECK(sbus_amqp_end(w) == SBUS_EINVAL); /* needs its value too */
    v = sv("x");
    CHECK(sbus_amqp_write(w, SBUS_AMQP_STRING, &v) == 0);
    CHECK(sbus_amqp_write(w, SBUS_AMQP_STRING, &v) == SBUS_EINVAL);
    CHECK(sbus_amqp_end(w) == 0);
    k = sv("map");
    sbus_amqp_write_value(w, &k);
    CHECK(sbus_amqp_begin(w, SBUS_AMQP_MAP) == 0);
    k = sv("odd");
    sbus_amqp_write_value(w, &k);
    CHECK(sbus_amqp_end(w) == SBUS_EINVAL); /* a key without value */
    v = iv(INT64_MIN);
    CHECK(sbus_amqp_write_value(w, &v) == 0);
    CHECK(sbus_amqp_end(w) == 0);
    CHECK(sbus_amqp_end(w) == 0);
}

/* Reads back what build_rich wrote, checking every exact type. */
static void check_rich(const void *p, size_t n)
{
    sbus_amqp_reader_t r, in, in2;
    sbus_amqp_item_t it, k, x;
    CHECK(sbusi_amqp_check(p, n) == 0);
    sbus_amqp_reader_init(&r, p, n);
    CHECK(sbus_amqp_read(&r, &it) == 1);
    CHECK(it.type == SBUS_AMQP_MAP && it.count == 16);
    CHECK(it.v.type == SBUS_VAL_AMQP && it.encoded_len == n);
    CHECK(sbus_amqp_read(&r, &x) == 0);
    CHECK(sbus_amqp_enter(&it, &in) == 0);
    int seen = 0;
    while (sbus_amqp_read(&in, &k) == 1) {
        CHECK(k.type == SBUS_AMQP_STRING);
        CHECK(sbus_amqp_read(&in, &it) == 1);
        const char *key = k.v.u.s.ptr;
        size_t kl = k.v.u.s.len;
#define KEY(s) (kl == strlen(s) && memcmp(key, s, kl) == 0)
        if (KEY("char")) {
            CHECK(it.type == SBUS_AMQP_CHAR && it.v.type == SBUS_VAL_UINT &&
                  it.v.u.u == 0x1F600);
        } else if (KEY("dec32")) {
            CHECK(it.type == SBUS_AMQP_DECIMAL32 && it.v.u.s.len == 4 &&
                  memcmp(it.v.u.s.ptr, DEC32, 4) == 0);
        } else if (KEY("dec64")) {
            CHECK(it.type == SBUS_AMQP_DECIMAL64 && it.v.u.s.len == 8 &&
                  memcmp(it.v.u.s.ptr, DEC64, 8) == 0);
        } else if (KEY("dec128")) {
            CHECK(it.type == SBUS_AMQP_DECIMAL128 && it.v.u.s.len == 16 &&
                  memcmp(it.v.u.s.ptr, DEC128, 16) == 0);
        } else if (KEY("list")) {
            CHECK(it.type == SBUS_AMQP_LIST && it.count == 6);
            CHECK(sbus_amqp_enter(&it, &in2) == 0);
            sbus_amqp_item_t e[6];
            for (int i = 0; i < 6; i++)
                CHECK(sbus_amqp_read(&in2, &e[i]) == 1);
            CHECK(sbus_amqp_read(&in2, &x) == 0);
            CHECK(e[0].type == SBUS_AMQP_UBYTE && e[0].v.u.u == 7);
            CHECK(e[1].type == SBUS_AMQP_SHORT && e[1].v.u.i == -3);
            CHECK(e[2].type == SBUS_AMQP_SYMBOL && e[2].v.u.s.len == 3);
            CHECK(e[3].type == SBUS_AMQP_NULL);
            CHECK(e[4].type == SBUS_AMQP_FLOAT && e[4].v.u.d == 1.5);
            CHECK(e[5].type == SBUS_AMQP_LIST && e[5].count == 0);
        } else if (KEY("array")) {
            CHECK(it.type == SBUS_AMQP_ARRAY && it.count == 3);
            CHECK(sbus_amqp_enter(&it, &in2) == 0);
            for (int i = 1; i <= 3; i++)
                CHECK(sbus_amqp_read(&in2, &x) == 1 &&
                      x.type == SBUS_AMQP_INT && x.v.u.i == i * 1000);
            CHECK(sbus_amqp_read(&in2, &x) == 0);
        } else if (KEY("described")) {
            CHECK(it.type == SBUS_AMQP_DESCRIBED && it.count == 2);
            CHECK(sbus_amqp_enter(&it, &in2) == 0);
            CHECK(sbus_amqp_read(&in2, &x) == 1 &&
                  x.type == SBUS_AMQP_ULONG && x.v.u.u == 0x1234);
            CHECK(sbus_amqp_read(&in2, &x) == 1 &&
                  x.type == SBUS_AMQP_STRING && x.v.u.s.len == 1);
            CHECK(sbus_amqp_read(&in2, &x) == 0);
        } else if (KEY("map")) {
            CHECK(it.type == SBUS_AMQP_MAP && it.count == 2);
            CHECK(sbus_amqp_enter(&it, &in2) == 0);
            CHECK(sbus_amqp_read(&in2, &x) == 1 && x.type == SBUS_AMQP_STRING);
            CHECK(sbus_amqp_read(&in2, &x) == 1 &&
                  x.type == SBUS_AMQP_LONG && x.v.u.i == INT64_MIN);
        } else {
            CHECK(!"unexpected key");
        }
#undef KEY
        seen++;
    }
    CHECK(seen == 8);
}

static void test_amqp_values(void)
{
    sbus_amqp_writer_t *w;
    CHECK(sbus_amqp_writer_new(&w) == 0);
    const void *wp;
    size_t n = 0;
    CHECK(sbus_amqp_writer_result(w, &wp, &n) == SBUS_ESTATE); /* empty */
    build_rich(w);
    CHECK(sbus_amqp_writer_result(w, &wp, &n) == 0);
    uint8_t *p = malloc(n); /* the writer's bytes change with it */
    memcpy(p, wp, n);
    sbus_value_t one = iv(1);
    CHECK(sbus_amqp_write_value(w, &one) == SBUS_ESTATE); /* one value */
    check_rich(p, n);
    /* truncated or trailing bytes are not one value */
    CHECK(sbusi_amqp_check(p, n - 1) == SBUS_EINVAL);
    uint8_t *two = malloc(n + 1);
    memcpy(two, p, n);
    two[n] = 0x40;
    CHECK(sbusi_amqp_check(two, n + 1) == SBUS_EINVAL);
    free(two);
    /* compact encodings another client may send: map8 with a char and
       list0, array8 of smallint */
    static const uint8_t compact[] = {0xc1, 0x0d, 0x04, 0xa1, 0x01, 'a',
                                      0x73, 0x00, 0x00, 0x00, 0x41, 0xa1,
                                      0x01, 'b',  0x45};
    static const uint8_t arr8[] = {0xe0, 0x05, 0x03, 0x54, 0x01, 0x02, 0xfe};
    sbus_amqp_reader_t r, in;
    sbus_amqp_item_t it, x;
    CHECK(sbusi_amqp_check(compact, sizeof compact) == 0);
    sbus_amqp_reader_init(&r, compact, sizeof compact);
    CHECK(sbus_amqp_read(&r, &it) == 1 && it.type == SBUS_AMQP_MAP);
    CHECK(sbus_amqp_enter(&it, &in) == 0);
    CHECK(sbus_amqp_read(&in, &x) == 1 && x.type == SBUS_AMQP_STRING);
    CHECK(sbus_amqp_read(&in, &x) == 1 && x.type == SBUS_AMQP_CHAR &&
          x.v.u.u == 'A');
    CHECK(sbus_amqp_read(&in, &x) == 1 && x.type == SBUS_AMQP_STRING);
    CHECK(sbus_amqp_read(&in, &x) == 1 && x.type == SBUS_AMQP_LIST &&
          x.count == 0);
    CHECK(sbusi_amqp_check(arr8, sizeof arr8) == 0);
    sbus_amqp_reader_init(&r, arr8, sizeof arr8);
    CHECK(sbus_amqp_read(&r, &it) == 1 && it.type == SBUS_AMQP_ARRAY);
    CHECK(sbus_amqp_enter(&it, &in) == 0);
    int64_t sum = 0;
    while (sbus_amqp_read(&in, &x) == 1)
        sum += x.v.u.i;
    CHECK(sum == 1 + 2 - 2);
    static const uint8_t bad_map[] = {0xc1, 0x03, 0x01, 0xa1, 0x00};
    CHECK(sbusi_amqp_check(bad_map, sizeof bad_map) == SBUS_EINVAL);

    /* in a message: an application property and an amqp-value body of any
       type, and an amqp-sequence body, survive encode and decode byte for
       byte */
    sbus_message_t *m;
    sbus_message_new(&m);
    sbus_value_t v = {.type = SBUS_VAL_AMQP};
    v.u.s.ptr = (const char *)p;
    v.u.s.len = n;
    CHECK(sbus_message_set_property(m, "rich", 4, &v) == 0);
    v.u.s.len = n - 1;
    CHECK(sbus_message_set_property(m, "broken", 6, &v) == SBUS_EINVAL);
    v.u.s.len = n;
    CHECK(sbus_message_set_body_sequence(m, p, n) == SBUS_EINVAL); /* map */
    sbus_amqp_writer_reset(w);
    CHECK(sbus_amqp_begin(w, SBUS_AMQP_LIST) == 0);
    sbus_value_t s1 = sv("first");
    CHECK(sbus_amqp_write_value(w, &s1) == 0);
    CHECK(sbus_amqp_write_value(w, &v) == 0); /* the map, inside */
    CHECK(sbus_amqp_end(w) == 0);
    const void *lp;
    size_t ln;
    CHECK(sbus_amqp_writer_result(w, &lp, &ln) == 0);
    CHECK(sbus_message_add_body_sequence(m, lp, ln) == SBUS_ESTATE);
    CHECK(sbus_message_set_body_sequence(m, lp, ln) == 0);
    CHECK(sbus_message_add_body_sequence(m, lp, ln) == 0);
    CHECK(sbus_message_body_kind(m) == SBUS_BODY_SEQUENCE);
    CHECK(sbus_message_body_count(m) == 0); /* data sections only */
    sbus_message_t *rt = roundtrip(m);
    CHECK(rt && sbus_message_body_kind(rt) == SBUS_BODY_SEQUENCE);
    CHECK(rt && sbus_message_body_sequence_count(rt) == 2);
    for (size_t i = 0; rt && i < 2; i++) {
        const void *q;
        size_t qn;
        CHECK(sbus_message_body_sequence_at(rt, i, &q, &qn) == 0 &&
              qn == ln && memcmp(q, lp, ln) == 0);
    }
    const void *q;
    size_t qn;
    CHECK(rt && sbus_message_body_sequence_at(rt, 2, &q, &qn) == SBUS_ENOENT);
    const char *key;
    size_t kl;
    sbus_value_t got;
    CHECK(rt && sbus_message_property_count(rt) == 1);
    CHECK(rt && sbus_message_property_at(rt, 0, &key, &kl, &got) == 0 &&
          got.type == SBUS_VAL_AMQP && got.u.s.len == n &&
          memcmp(got.u.s.ptr, p, n) == 0);
    if (rt)
        check_rich(got.u.s.ptr, got.u.s.len);
    sbus_message_free(rt);
    CHECK(sbus_message_set_body_value(m, &v) == 0);
    rt = roundtrip(m);
    CHECK(rt && sbus_message_body_kind(rt) == SBUS_BODY_VALUE);
    CHECK(rt && sbus_message_body_value(rt, &got) == 0 &&
          got.type == SBUS_VAL_AMQP && got.u.s.len == n &&
          memcmp(got.u.s.ptr, p, n) == 0);
    sbus_message_t *cp = NULL;
    CHECK(rt && sbus_message_copy(rt, &cp) == 0);
    CHECK(cp && sbus_message_property_at(cp, 0, &key, &kl, &got) == 0 &&
          got.type == SBUS_VAL_AMQP && got.u.s.len == n);
    sbus_message_free(cp);
    sbus_message_free(rt);
    sbus_message_free(m);
    sbus_amqp_writer_free(w);
    free(p);
}

static void test_decimal_format(void)
{
    static const struct {
        uint8_t b[16];
        size_t n;
        const char *want;
    } cases[] = {
        {{0x32, 0x80, 0x00, 0x07}, 4, "7E0"},
        {{0x6c, 0xb8, 0x96, 0x7f}, 4, "9999999E0"},  /* implicit 100 */
        {{0xb2, 0x80, 0x00, 0x07}, 4, "-7E0"},
        {{0x78, 0, 0, 0}, 4, "Infinity"},
        {{0xf8, 0, 0, 0}, 4, "-Infinity"},
        {{0x7c, 0, 0, 0}, 4, "NaN"},
        {{0x7e, 0, 0, 0}, 4, "sNaN"},
        {{0x31, 0xc0, 0, 0, 0, 0, 0, 0x01}, 8, "1E0"},
        {{0x31, 0xa0, 0, 0, 0, 0, 0x30, 0x39}, 8, "12345E-1"},
        {{0x30, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x30, 0x39}, 16,
         "12345E0"},
        {{0x30, 0x3c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x64}, 16,
         "100E-2"},
        /* 10^34 - 1, the largest coefficient */
        {{0x30, 0x41, 0xed, 0x09, 0xbe, 0xad, 0x87, 0xc0, 0x37, 0x8d, 0x8e,
          0x63, 0xff, 0xff, 0xff, 0xff}, 16,
         "9999999999999999999999999999999999E0"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[48];
        int n = sbus_amqp_decimal_format(cases[i].b, cases[i].n, out,
                                         sizeof out);
        if (n < 0 || strcmp(out, cases[i].want) != 0)
            fprintf(stderr, "decimal case %zu: got %s\n", i,
                    n < 0 ? "(error)" : out);
        CHECK(n == (int)strlen(cases[i].want) &&
              strcmp(out, cases[i].want) == 0);
    }
    char small[3];
    CHECK(sbus_amqp_decimal_format(cases[0].b, 4, small, sizeof small) ==
          SBUS_ETOOBIG);
    CHECK(sbus_amqp_decimal_format(cases[0].b, 5, small, sizeof small) ==
          SBUS_EINVAL);
}

/* A reset message encodes exactly as a new one, whatever it carried; a
 * received one cannot be reset. */
static void test_reset(void)
{
    sbus_message_t *fresh, *m;
    CHECK(sbus_message_new(&fresh) == 0 && sbus_message_new(&m) == 0);
    for (int round = 0; round < 2; round++) {
        for (int p = 0; p <= SBUS_PROP_VIA_PARTITION_KEY; p++)
            CHECK(sbus_message_set_prop(m, p, "value", 5) == 0);
        CHECK(sbus_message_set_field(m, SBUS_FIELD_TIME_TO_LIVE, 60000) == 0);
        sbus_value_t v;
        v.type = SBUS_VAL_STRING;
        v.u.s.ptr = "text";
        v.u.s.len = 4;
        CHECK(sbus_message_set_property(m, "k", 1, &v) == 0);
        CHECK(sbus_message_set_body(m, "body", 4) == 0);
        CHECK(sbus_message_add_body_section(m, "more", 4) == 0);
        if (round)
            CHECK(sbus_message_set_body_value(m, &v) == 0);
        CHECK(sbus_message_reset(m) == 0);
        sbusi_buf_t a = {0}, b = {0};
        CHECK(sbusi_message_encode(fresh, &a) == 0);
        CHECK(sbusi_message_encode(m, &b) == 0);
        CHECK(a.len == b.len && memcmp(a.p, b.p, a.len) == 0);
        CHECK(sbus_message_property_count(m) == 0);
        CHECK(sbus_message_body_kind(m) == SBUS_BODY_DATA &&
              sbus_message_body_count(m) == 1);
        sbusi_buf_free(&a);
        sbusi_buf_free(&b);
    }
    sbus_message_t *rx = roundtrip(m); /* decoded: a received message */
    CHECK(rx && sbus_message_reset(rx) == SBUS_ESTATE);
    CHECK(sbus_message_reset(NULL) == SBUS_EINVAL);
    sbus_message_free(rx);
    sbus_message_free(m);
    sbus_message_free(fresh);
}

/* A referenced body encodes like a copied one, and every path that drops or
 * copies it leaves the host's bytes alone (valgrind_test_message: no free of
 * the caller's buffer, no leak, no read after it changes). */
static void test_body_ref(void)
{
    char buf[64];
    memset(buf, 'r', sizeof buf);
    sbus_message_t *copied, *ref;
    CHECK(sbus_message_new(&copied) == 0 && sbus_message_new(&ref) == 0);
    CHECK(sbus_message_set_body(copied, buf, sizeof buf) == 0);
    CHECK(sbus_message_set_body_ref(ref, buf, sizeof buf) == 0);
    sbusi_buf_t a = {0}, b = {0};
    CHECK(sbusi_message_encode(copied, &a) == 0);
    CHECK(sbusi_message_encode(ref, &b) == 0);
    CHECK(a.len == b.len && memcmp(a.p, b.p, a.len) == 0);
    sbusi_buf_free(&a);
    sbusi_buf_free(&b);
    const void *p;
    size_t n;
    CHECK(sbus_message_body_at(ref, 0, &p, &n) == 0 && p == (const void *)buf &&
          n == sizeof buf);
    /* a copy owns its bytes: changing the host's buffer does not reach it */
    CHECK(sbus_message_add_body_section(ref, "two", 3) == 0);
    sbus_message_t *dup = NULL;
    CHECK(sbus_message_copy(ref, &dup) == 0);
    buf[0] = 'X';
    CHECK(dup && sbus_message_body_at(dup, 0, &p, &n) == 0 && p != (const void *)buf &&
          n == sizeof buf && ((const char *)p)[0] == 'r');
    sbus_message_free(dup);
    /* replacing, resetting and freeing never free the host's buffer */
    CHECK(sbus_message_set_body(ref, "own", 3) == 0);
    CHECK(sbus_message_set_body_ref(ref, buf, sizeof buf) == 0);
    CHECK(sbus_message_reset(ref) == 0);
    CHECK(sbus_message_body_count(ref) == 1 &&
          sbus_message_body_at(ref, 0, &p, &n) == 0 && n == 0);
    CHECK(sbus_message_set_body_ref(ref, buf, 0) == 0);
    CHECK(sbus_message_set_body_ref(ref, NULL, 1) == SBUS_EINVAL);
    CHECK(sbus_message_set_body_ref(NULL, buf, 1) == SBUS_EINVAL);
    CHECK(sbus_message_set_body_ref(ref, buf, sizeof buf) == 0);
    sbus_message_free(ref);
    sbus_message_free(copied);
}

int main(void)
{
    test_properties();
    test_body_ref();
    test_reset();
    test_bodies();
    test_limits();
    test_batch_limit();
    test_lock_token_and_uuid();
    test_mixed_body_sections_refused();
    test_amqp_values();
    test_decimal_format();
    if (failures)
        fprintf(stderr, "%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
