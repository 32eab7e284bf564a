/*
 * test_message.c - messages and batches without a broker: every property
 * and field through encode and decode, application properties of each
 * simple type, body kinds, the identifier limits of protocol.md 6.6, lock
 * tokens from .NET-ordered delivery tags, and batch size accounting.
 */
#include <sbus/sbus.h>

#include "internal.h"

#include <stdio.h>
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

int main(void)
{
    test_properties();
    test_bodies();
    test_limits();
    test_batch_limit();
    test_lock_token_and_uuid();
    test_mixed_body_sections_refused();
    if (failures)
        fprintf(stderr, "%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
