/*
 * test_decode_fuzz.c - what a peer sends cannot crash the engine: valid
 * messages and $management answers, mutated (bit flips, byte overwrites,
 * truncation, length fields made huge) a few hundred thousand times with a
 * fixed seed, go through the message decoder, the request/response
 * decoder and the batch-frame filter. The test passes when nothing
 * crashes; ASan/UBSan and valgrind runs make it meaningful.
 */
#include <sbus/sbus.h>

#include "frame.h"
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t g_rng = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

/* A rich message, encoded. */
static void sample_message(sbusi_buf_t *b)
{
    sbus_message_t *m;
    sbus_message_new(&m);
    sbus_message_set_body(m, "hello fuzz", 10);
    sbus_message_add_body_section(m, "second", 6);
    sbus_message_set_prop(m, SBUS_PROP_MESSAGE_ID, "mid", 3);
    sbus_message_set_prop(m, SBUS_PROP_SESSION_ID, "s", 1);
    sbus_message_set_prop(m, SBUS_PROP_PARTITION_KEY, "s", 1);
    sbus_message_set_field(m, SBUS_FIELD_TIME_TO_LIVE, 1000);
    sbus_message_set_field(m, SBUS_FIELD_SCHEDULED_ENQUEUE_TIME, 5);
    sbus_value_t v = {.type = SBUS_VAL_STRING};
    v.u.s.ptr = "val";
    v.u.s.len = 3;
    sbus_message_set_property(m, "k", 1, &v);
    v.type = SBUS_VAL_UUID;
    memset(v.u.uuid, 7, 16);
    sbus_message_set_property(m, "u", 1, &v);
    /* one value of every compound kind, and a char and a decimal */
    sbus_amqp_writer_t *w;
    sbus_amqp_writer_new(&w);
    sbus_amqp_begin(w, SBUS_AMQP_MAP);
    v.type = SBUS_VAL_STRING;
    sbus_amqp_write_value(w, &v);
    sbus_amqp_begin(w, SBUS_AMQP_LIST);
    sbus_value_t c = {.type = SBUS_VAL_UINT, .u.u = 0x20ac};
    sbus_amqp_write(w, SBUS_AMQP_CHAR, &c);
    static const uint8_t dec[8] = {0x31, 0xc0, 0, 0, 0, 0, 0, 7};
    sbus_value_t d = {.type = SBUS_VAL_BINARY};
    d.u.s.ptr = (const char *)dec;
    d.u.s.len = 8;
    sbus_amqp_write(w, SBUS_AMQP_DECIMAL64, &d);
    sbus_amqp_begin(w, SBUS_AMQP_ARRAY);
    sbus_amqp_write(w, SBUS_AMQP_SYMBOL, &v);
    sbus_amqp_write(w, SBUS_AMQP_SYMBOL, &v);
    sbus_amqp_end(w);
    sbus_amqp_begin(w, SBUS_AMQP_DESCRIBED);
    sbus_amqp_write(w, SBUS_AMQP_ULONG, &c);
    sbus_amqp_write_value(w, &v);
    sbus_amqp_end(w);
    sbus_amqp_end(w);
    sbus_amqp_end(w);
    const void *wp;
    size_t wn;
    if (sbus_amqp_writer_result(w, &wp, &wn) == 0) {
        sbus_value_t a = {.type = SBUS_VAL_AMQP};
        a.u.s.ptr = wp;
        a.u.s.len = wn;
        sbus_message_set_property(m, "rich", 4, &a);
    }
    sbus_amqp_writer_free(w);
    sbusi_message_encode(m, b);
    sbus_message_free(m);
}

/* A $management answer with a list of messages and arrays. */
static void sample_reply(sbusi_buf_t *b, const sbusi_buf_t *msg)
{
    sbusi_enc_descriptor(b, 0x73);
    size_t at = sbusi_enc_list(b);
    for (int i = 0; i < 5; i++)
        sbusi_enc_null(b);
    sbusi_enc_ulong(b, 42);
    sbusi_enc_end(b, at, 6);
    sbusi_enc_descriptor(b, 0x74);
    at = sbusi_enc_map(b);
    sbusi_enc_str(b, "statusCode", 10);
    sbusi_enc_int(b, 200);
    sbusi_enc_end(b, at, 2);
    sbusi_enc_descriptor(b, 0x77);
    at = sbusi_enc_map(b);
    sbusi_enc_str(b, "messages", 8);
    size_t l = sbusi_enc_list(b);
    size_t e = sbusi_enc_map(b);
    sbusi_enc_str(b, "message", 7);
    sbusi_enc_bin(b, msg->p, msg->len);
    sbusi_enc_end(b, e, 2);
    sbusi_enc_end(b, l, 1);
    sbusi_enc_str(b, "expirations", 11);
    size_t arr = sbusi_enc_array(b, 0x83);
    sbusi_enc_array_long(b, 1);
    sbusi_enc_array_long(b, 2);
    sbusi_enc_end(b, arr, 2);
    sbusi_enc_end(b, at, 4);
}

/* Reads every item of an encoded value as a binding would. */
static void walk(sbus_amqp_reader_t *r, int depth)
{
    sbus_amqp_item_t it;
    while (sbus_amqp_read(r, &it) == 1) {
        char txt[48];
        if (it.type >= SBUS_AMQP_DECIMAL32 && it.type <= SBUS_AMQP_DECIMAL128)
            sbus_amqp_decimal_format(it.v.u.s.ptr, it.v.u.s.len, txt,
                                     sizeof txt);
        sbus_amqp_reader_t in;
        if (depth < 8 && sbus_amqp_enter(&it, &in) == 0)
            walk(&in, depth + 1);
    }
}

static void mutate(uint8_t *p, size_t n)
{
    int k = 1 + (int)(rnd() % 4);
    for (int i = 0; i < k && n; i++) {
        size_t at = rnd() % n;
        switch (rnd() % 4) {
        case 0: p[at] ^= (uint8_t)(1u << (rnd() % 8)); break;
        case 1: p[at] = (uint8_t)rnd(); break;
        case 2: p[at] = 0xff; break;
        default: p[at] = 0x00; break;
        }
    }
}

/* A section whose descriptor is itself described, a million times over:
 * refused at once (unbounded, the decoder's recursion would exhaust the
 * stack); so is a $management answer made the same way. */
static int descriptor_chain_is_refused(void)
{
    size_t n = 1000000;
    uint8_t *p = malloc(n + 4);
    if (!p)
        return 1;
    memset(p, 0x00, n);
    p[n] = 0x53; p[n + 1] = 0x75; p[n + 2] = 0xa0; p[n + 3] = 0;
    sbus_message_t *m = NULL;
    int bad = 0;
    if (sbusi_message_decode(p, n + 4, &m) == 0) {
        fprintf(stderr, "a described descriptor chain was accepted\n");
        sbus_message_free(m);
        bad = 1;
    }
    sbusi_rpc_reply_t r;
    memset(&r, 0, sizeof r);
    if (sbusi_rpc_decode(p, n + 4, &r) == 0)
        bad = 1;
    free(p);
    return bad;
}

int main(void)
{
    if (descriptor_chain_is_refused())
        return 1;
    sbusi_buf_t msg = {0}, reply = {0}, work = {0}, out = {0};
    sample_message(&msg);
    sample_reply(&reply, &msg);
    long decoded = 0;
    int rounds = getenv("FUZZ_ROUNDS") ? atoi(getenv("FUZZ_ROUNDS")) : 200000;
    for (int round = 0; round < rounds; round++) {
        if (getenv("FUZZ_TRACE"))
            fprintf(stderr, "round %d\n", round);
        const sbusi_buf_t *src = round % 2 ? &reply : &msg;
        work.len = 0;
        sbusi_buf_put(&work, src->p, src->len);
        mutate(work.p, work.len);
        size_t n = work.len - (rnd() % 4 == 0 ? rnd() % work.len : 0);
        sbus_message_t *m = NULL;
        if (sbusi_message_decode(work.p, n, &m) == 0) {
            decoded++;
            sbus_value_t v;
            const char *k;
            size_t kn;
            for (size_t i = 0; i < sbus_message_property_count(m); i++) {
                sbus_message_property_at(m, i, &k, &kn, &v);
                if (v.type == SBUS_VAL_AMQP) {
                    sbus_amqp_reader_t r;
                    sbus_amqp_reader_init(&r, v.u.s.ptr, v.u.s.len);
                    walk(&r, 0);
                }
            }
            sbus_message_body_value(m, &v);
            sbus_message_free(m);
        }
        sbusi_rpc_reply_t r;
        if (sbusi_rpc_decode(work.p, n, &r) == 0 && r.has_body) {
            static const sbus_op_t kinds[] = {
                SBUS_OP_PEEK, SBUS_OP_RECEIVE_DEFERRED, SBUS_OP_SCHEDULE,
                SBUS_OP_RENEW_LOCK, SBUS_OP_SESSION_GET_STATE,
                SBUS_OP_SESSION_RENEW_LOCK};
            sbusi_op_t op;
            memset(&op, 0, sizeof op);
            op.kind = kinds[rnd() % 6];
            sbusi_mgmt_result(&op, &r.body);
            for (size_t i = 0; i < op.nmsgs; i++)
                sbus_message_free(op.msgs[i]);
            sbusi_free(op.msgs);
            sbusi_free(op.seqs);
            sbusi_buf_free(&op.payload);
        }
        /* as a batch transfer frame for the frame filter, then mutated */
        sbusi_buf_t fr = {0};
        uint8_t hdr[8] = {0, 0, 0, 0, 2, 0, 0, 0};
        sbusi_buf_put(&fr, hdr, 8);
        sbusi_enc_descriptor(&fr, 0x14);
        size_t at = sbusi_enc_list(&fr);
        sbusi_enc_uint(&fr, 0);
        sbusi_enc_uint(&fr, 0);
        uint8_t tag[9] = {SBUSI_BATCH_TAG_MARK, 1, 2, 3, 4, 5, 6, 7, 8};
        sbusi_enc_bin(&fr, tag, 9);
        sbusi_enc_uint(&fr, 0);
        sbusi_enc_bool(&fr, 0);
        sbusi_enc_bool(&fr, (int)(rnd() % 2));
        sbusi_enc_end(&fr, at, 6);
        sbusi_buf_put(&fr, work.p, n);
        uint32_t size = (uint32_t)fr.len;
        fr.p[0] = size >> 24; fr.p[1] = size >> 16; fr.p[2] = size >> 8;
        fr.p[3] = size;
        if (rnd() % 2)
            mutate(fr.p, fr.len);
        sbusi_frame_t f = {0};
        f.max_frame = (uint32_t)(64 + rnd() % 512);
        out.len = 0;
        size_t cut = rnd() % fr.len;
        sbusi_frame_feed(&f, fr.p, cut, &out);
        sbusi_frame_feed(&f, fr.p + cut, fr.len - cut, &out);
        sbusi_buf_free(&fr);
        sbusi_frame_reset(&f);
    }
    printf("%ld of %d mutated inputs still decoded; no crash\n", decoded, rounds);
    sbusi_buf_free(&msg);
    sbusi_buf_free(&reply);
    sbusi_buf_free(&work);
    sbusi_buf_free(&out);
    return 0;
}
