/*
 * fuzz_mgmt.c - libFuzzer target for the $management / $cbs response
 * decoder (sbusi_rpc_decode in core/src/mgmt.c) and the per-operation
 * result readers behind it (sbusi_mgmt_result: schedule's sequence
 * numbers, peek and receive-deferred's message lists, renew-lock's
 * expirations, session lock and state).
 *
 * Build and run: scripts/fuzz.sh mgmt (clang-14, ASan + UBSan).
 *
 * The input is one response message as the service sends it. Every decoded
 * body is handed to every operation kind's reader, as if it had come back
 * for that request: a hostile or broken broker can answer anything to
 * anything. Beyond the sanitizers: status, condition and description are
 * bounded NUL-terminated strings; a reader fails with a negative code or
 * fills its results consistently (counts match arrays).
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT(c)                                                              \
    do {                                                                       \
        if (!(c)) {                                                            \
            fprintf(stderr, "fuzz_mgmt: %s:%d: %s\n", __FILE__, __LINE__, #c); \
            abort();                                                           \
        }                                                                      \
    } while (0)

static const sbus_op_t KINDS[] = {
    SBUS_OP_SCHEDULE,           SBUS_OP_PEEK,        SBUS_OP_RECEIVE_DEFERRED,
    SBUS_OP_RENEW_LOCK,         SBUS_OP_SESSION_RENEW_LOCK,
    SBUS_OP_SESSION_GET_STATE,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sbusi_rpc_reply_t r;
    memset(&r, 0, sizeof r);
    if (sbusi_rpc_decode(data, size, &r) < 0)
        return 0;
    ASSERT(memchr(r.cond, 0, sizeof r.cond) != NULL);
    ASSERT(memchr(r.desc, 0, sizeof r.desc) != NULL);
    if (!r.has_body)
        return 0;
    ASSERT(r.body.start >= data && r.body.stop <= data + size);
    for (size_t k = 0; k < sizeof KINDS / sizeof KINDS[0]; k++) {
        sbusi_op_t op;
        memset(&op, 0, sizeof op);
        op.kind = KINDS[k];
        int rc = sbusi_mgmt_result(&op, &r.body);
        ASSERT(rc <= 0);
        if (rc == 0 && op.kind == SBUS_OP_SESSION_GET_STATE && op.ev.e.data)
            ASSERT(op.ev.e.len == op.payload.len);
        for (size_t i = 0; i < op.nmsgs; i++) {
            ASSERT(op.msgs[i]);
            sbus_message_free(op.msgs[i]);
        }
        sbusi_free(op.msgs);
        sbusi_free(op.seqs);
        sbusi_buf_free(&op.payload);
    }
    return 0;
}
