/*
 * make_seeds.c - writes the binary seed corpora of fuzz_message and
 * fuzz_mgmt with the engine's own encoder, so the seeds are real messages
 * and real $management answers (protocol.md §8) rather than hand-typed
 * bytes. scripts/fuzz.sh --seeds builds and runs it; its output is
 * committed in tests/fuzz/corpus/{message,mgmt}/ and only needs running
 * again when the wire format changes.
 *
 *   make_seeds OUTDIR      (writes OUTDIR/message/* and OUTDIR/mgmt/*)
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *g_out;

static void put(const char *dir, const char *name, const sbusi_buf_t *b)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/%s", g_out, dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b->p, 1, b->len, f) != b->len) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

static sbus_message_t *full_message(void)
{
    sbus_message_t *m;
    sbus_message_new(&m);
    sbus_message_set_body(m, "hello, world", 12);
    sbus_message_set_prop(m, SBUS_PROP_MESSAGE_ID, "id-1", 4);
    sbus_message_set_prop(m, SBUS_PROP_CORRELATION_ID, "corr", 4);
    sbus_message_set_prop(m, SBUS_PROP_CONTENT_TYPE, "application/json", 16);
    sbus_message_set_prop(m, SBUS_PROP_SUBJECT, "label", 5);
    sbus_message_set_prop(m, SBUS_PROP_TO, "to", 2);
    sbus_message_set_prop(m, SBUS_PROP_REPLY_TO, "reply", 5);
    sbus_message_set_prop(m, SBUS_PROP_REPLY_TO_SESSION_ID, "rs", 2);
    sbus_message_set_prop(m, SBUS_PROP_SESSION_ID, "session", 7);
    sbus_message_set_prop(m, SBUS_PROP_PARTITION_KEY, "session", 7);
    sbus_message_set_field(m, SBUS_FIELD_TIME_TO_LIVE, 60000);
    sbus_message_set_field(m, SBUS_FIELD_SCHEDULED_ENQUEUE_TIME, 1700000000000LL);
    sbus_value_t v;
    v.type = SBUS_VAL_STRING; v.u.s.ptr = "red"; v.u.s.len = 3;
    sbus_message_set_property(m, "color", 5, &v);
    v.type = SBUS_VAL_INT; v.u.i = -5;
    sbus_message_set_property(m, "n", 1, &v);
    v.type = SBUS_VAL_INT; v.u.i = 1LL << 40;
    sbus_message_set_property(m, "big", 3, &v);
    v.type = SBUS_VAL_DOUBLE; v.u.d = 0.5;
    sbus_message_set_property(m, "half", 4, &v);
    v.type = SBUS_VAL_BOOL; v.u.b = 1;
    sbus_message_set_property(m, "flag", 4, &v);
    v.type = SBUS_VAL_BINARY; v.u.s.ptr = "\x00\x01\x02"; v.u.s.len = 3;
    sbus_message_set_property(m, "bin", 3, &v);
    v.type = SBUS_VAL_TIMESTAMP; v.u.i = 1700000000000LL;
    sbus_message_set_property(m, "ts", 2, &v);
    v.type = SBUS_VAL_UUID; memset(v.u.uuid, 0xab, 16);
    sbus_message_set_property(m, "uuid", 4, &v);
    return m;
}

/* A received message as the broker sends it: header, annotations, body. */
static void received_message(sbusi_buf_t *b, const sbus_message_t *m)
{
    /* header: durable, priority, ttl, first-acquirer, delivery-count */
    sbusi_enc_descriptor(b, 0x70);
    size_t at = sbusi_enc_list(b);
    sbusi_enc_bool(b, 1);
    sbusi_enc_null(b);
    sbusi_enc_uint(b, 60000);
    sbusi_enc_bool(b, 0);
    sbusi_enc_uint(b, 3);
    sbusi_enc_end(b, at, 5);
    /* message-annotations as the broker stamps them */
    sbusi_enc_descriptor(b, 0x72);
    at = sbusi_enc_map(b);
    sbusi_enc_sym(b, "x-opt-sequence-number", 21);
    sbusi_enc_long(b, 42);
    sbusi_enc_sym(b, "x-opt-enqueued-time", 19);
    sbusi_enc_timestamp(b, 1700000000000LL);
    sbusi_enc_sym(b, "x-opt-locked-until", 18);
    sbusi_enc_timestamp(b, 1700000060000LL);
    sbusi_enc_sym(b, "x-opt-message-state", 19);
    sbusi_enc_int(b, 0);
    sbusi_enc_sym(b, "x-opt-deadletter-source", 23);
    sbusi_enc_cstr(b, "queue");
    sbusi_enc_end(b, at, 10);
    sbusi_buf_t rest = {0};
    sbusi_message_encode(m, &rest);
    sbusi_buf_put(b, rest.p, rest.len);
    sbusi_buf_free(&rest);
}

/* A management answer: application-properties then an amqp-value body
 * written by `body` (NULL: no body). */
static void reply(sbusi_buf_t *b, int status, const char *cond, const char *desc,
                  void (*body)(sbusi_buf_t *))
{
    sbusi_enc_descriptor(b, 0x73); /* properties: correlation-id at 5 */
    size_t at = sbusi_enc_list(b);
    for (int i = 0; i < 5; i++)
        sbusi_enc_null(b);
    sbusi_enc_ulong(b, 7);
    sbusi_enc_end(b, at, 6);
    sbusi_enc_descriptor(b, 0x74);
    at = sbusi_enc_map(b);
    uint32_t n = 2;
    sbusi_enc_cstr(b, "statusCode");
    sbusi_enc_int(b, status);
    if (cond) {
        sbusi_enc_cstr(b, "errorCondition");
        sbusi_enc_sym(b, cond, strlen(cond));
        n += 2;
    }
    if (desc) {
        sbusi_enc_cstr(b, "statusDescription");
        sbusi_enc_cstr(b, desc);
        n += 2;
    }
    sbusi_enc_end(b, at, n);
    if (body) {
        sbusi_enc_descriptor(b, 0x77);
        body(b);
    }
}

static void body_seqs(sbusi_buf_t *b)
{
    size_t at = sbusi_enc_map(b);
    sbusi_enc_cstr(b, "sequence-numbers");
    size_t arr = sbusi_enc_array(b, 0x81);
    sbusi_enc_array_long(b, 1);
    sbusi_enc_array_long(b, 2);
    sbusi_enc_array_long(b, 3);
    sbusi_enc_end(b, arr, 3);
    sbusi_enc_end(b, at, 2);
}

static void body_expirations(sbusi_buf_t *b)
{
    size_t at = sbusi_enc_map(b);
    sbusi_enc_cstr(b, "expirations");
    size_t arr = sbusi_enc_array(b, 0x83);
    sbusi_enc_array_long(b, 1700000060000LL);
    sbusi_enc_end(b, arr, 1);
    sbusi_enc_end(b, at, 2);
}

static void body_expiration(sbusi_buf_t *b)
{
    size_t at = sbusi_enc_map(b);
    sbusi_enc_cstr(b, "expiration");
    sbusi_enc_timestamp(b, 1700000060000LL);
    sbusi_enc_end(b, at, 2);
}

static void body_state(sbusi_buf_t *b)
{
    size_t at = sbusi_enc_map(b);
    sbusi_enc_cstr(b, "session-state");
    sbusi_enc_bin(b, "state bytes", 11);
    sbusi_enc_end(b, at, 2);
}

static void body_messages(sbusi_buf_t *b)
{
    size_t at = sbusi_enc_map(b);
    sbusi_enc_cstr(b, "messages");
    size_t list = sbusi_enc_list(b);
    for (int i = 0; i < 2; i++) {
        size_t e = sbusi_enc_map(b);
        sbusi_enc_cstr(b, "message");
        sbusi_buf_t msg = {0};
        sbus_message_t *m = full_message();
        received_message(&msg, m);
        sbus_message_free(m);
        sbusi_enc_bin(b, msg.p, msg.len);
        sbusi_buf_free(&msg);
        sbusi_enc_cstr(b, "lock-token");
        uint8_t tok[16];
        memset(tok, 0x11 * (i + 1), 16);
        sbusi_enc_uuid(b, tok);
        sbusi_enc_end(b, e, 4);
    }
    sbusi_enc_end(b, list, 2);
    sbusi_enc_end(b, at, 2);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_seeds OUTDIR\n");
        return 2;
    }
    g_out = argv[1];
    sbusi_buf_t b = {0};

    sbus_message_t *m = full_message();
    sbusi_message_encode(m, &b);
    put("message", "full_sent", &b);
    b.len = 0;
    received_message(&b, m);
    put("message", "full_received", &b);
    sbus_message_free(m);

    sbus_message_new(&m);
    b.len = 0;
    sbusi_message_encode(m, &b);
    put("message", "empty", &b);
    sbus_message_add_body_section(m, "a", 1);
    sbus_message_add_body_section(m, "bc", 2);
    b.len = 0;
    sbusi_message_encode(m, &b);
    put("message", "two_sections", &b);
    sbus_message_free(m);

    sbus_message_new(&m);
    sbus_value_t v = {.type = SBUS_VAL_STRING};
    v.u.s.ptr = "a value body";
    v.u.s.len = 12;
    sbus_message_set_body_value(m, &v);
    b.len = 0;
    sbusi_message_encode(m, &b);
    put("message", "value_body", &b);
    sbus_message_free(m);

    b.len = 0; reply(&b, 200, NULL, NULL, body_seqs); put("mgmt", "schedule_200", &b);
    b.len = 0; reply(&b, 200, NULL, NULL, body_messages); put("mgmt", "peek_200", &b);
    b.len = 0; reply(&b, 204, NULL, "no messages", NULL); put("mgmt", "peek_204", &b);
    b.len = 0; reply(&b, 200, NULL, NULL, body_expirations); put("mgmt", "renew_200", &b);
    b.len = 0; reply(&b, 200, NULL, NULL, body_expiration); put("mgmt", "session_renew_200", &b);
    b.len = 0; reply(&b, 200, NULL, NULL, body_state); put("mgmt", "get_state_200", &b);
    b.len = 0;
    reply(&b, 410, "com.microsoft:message-lock-lost", "The lock supplied is invalid.", NULL);
    put("mgmt", "lock_lost_410", &b);
    b.len = 0;
    reply(&b, 503, "com.microsoft:server-busy", "busy", NULL);
    put("mgmt", "busy_503", &b);
    sbusi_buf_free(&b);
    return 0;
}
