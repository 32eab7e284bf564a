/*
 * batch.c - message batches: messages encoded once, as they are added,
 * into the body of a batch envelope (message-format 0x80013700, one data
 * section per message), so that sending a batch costs no re-encoding and
 * its size is always exact.
 */
#include "internal.h"

#include <string.h>

#define DEFAULT_LIMIT 262144

struct sbus_batch {
    size_t max_size;     /* limit in bytes; 0 = the sender's link limit */
    size_t count;        /* messages added */
    sbusi_buf_t env;     /* the envelope: one data section per message */
    size_t first_off;    /* offset of message 0's bytes inside env */
    size_t first_len;    /* length of message 0's bytes */
};

int sbus_batch_new(size_t max_size, sbus_batch_t **out)
{
    if (!out)
        return SBUS_EINVAL;
    sbus_batch_t *b = sbusi_calloc(1, sizeof *b);
    if (!b)
        return SBUS_ENOMEM;
    b->max_size = max_size;
    *out = b;
    return 0;
}

void sbus_batch_free(sbus_batch_t *b)
{
    if (!b)
        return;
    sbusi_buf_free(&b->env);
    sbusi_free(b);
}

static size_t limit(const sbus_batch_t *b)
{
    return b->max_size ? b->max_size : DEFAULT_LIMIT;
}

int sbus_batch_add(sbus_batch_t *b, const sbus_message_t *m)
{
    if (!b || !m)
        return SBUS_EINVAL;
    if (sbusi_message_validate(m) < 0)
        return SBUS_EINVAL;
    sbusi_buf_t one = {0};
    if (sbusi_message_encode(m, &one) < 0) {
        sbusi_buf_free(&one);
        return SBUS_ENOMEM;
    }
    size_t cost = 3 + (one.len < 256 ? 2 : 5) + one.len;
    if (b->env.len + cost > limit(b)) {
        sbusi_buf_free(&one);
        return SBUS_ETOOBIG;
    }
    size_t keep = b->env.len;
    sbusi_enc_descriptor(&b->env, 0x75);
    sbusi_enc_bin(&b->env, one.p, one.len);
    if (b->env.oom) {
        b->env.oom = 0; /* the batch stays as it was */
        b->env.len = keep;
        sbusi_buf_free(&one);
        return SBUS_ENOMEM;
    }
    if (b->count == 0) {
        b->first_len = one.len;
        b->first_off = b->env.len - one.len;
    }
    b->count++;
    sbusi_buf_free(&one);
    return 0;
}

size_t sbus_batch_count(const sbus_batch_t *b) { return b ? b->count : 0; }
size_t sbus_batch_size(const sbus_batch_t *b) { return b ? b->env.len : 0; }
size_t sbus_batch_max_size(const sbus_batch_t *b)
{
    return b ? limit(b) : 0;
}

/* The transfer payload: message 0 alone when there is one, else the
 * envelope. */
const uint8_t *sbusi_batch_bytes(const sbus_batch_t *b, size_t *len)
{
    if (b->count == 1) {
        *len = b->first_len;
        return b->env.p + b->first_off;
    }
    *len = b->env.len;
    return b->env.p;
}
