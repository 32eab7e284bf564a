/*
 * frame.h - the outgoing-frame filter that stamps message-format on batch
 * transfers (Proton 0.37 cannot), and the incoming-frame guard that keeps
 * frames which would trip an assertion in Proton 0.37 away from it. See
 * frame.c.
 */
#ifndef SBUS_FRAME_H
#define SBUS_FRAME_H

#include "internal.h"

/* First byte of a 9-byte delivery tag that marks a batch transfer. */
#define SBUSI_BATCH_TAG_MARK 0xBA

typedef struct sbusi_frame {
    sbusi_buf_t pend;   /* bytes of an incomplete frame, kept until the rest */
    uint32_t max_frame; /* the peer's max-frame-size (0: unlimited) */
    /* the incoming side (sbusi_frame_scan_in) */
    sbusi_buf_t ipend;  /* the start of a unit split across reads */
    size_t iwant;       /* bytes of that unit needed to decide on it */
    size_t iskip;       /* bytes of the current frame still to pass */
    int istate;         /* what comes next: SBUSI_IN_* */
    sbusi_buf_t imid;   /* links inside a multi-transfer delivery:
                           (channel, handle) pairs, 8 bytes each */
    const char *iwhy;   /* the violation found, NULL while none */
    const char *icond;  /* its AMQP condition (NULL: out of memory) */
} sbusi_frame_t;

/* The incoming stream's states (0 is the start of a transport). */
enum {
    SBUSI_IN_HEADER = 0, /* an 8-byte protocol header */
    SBUSI_IN_SASL,       /* SASL frames until the outcome */
    SBUSI_IN_AMQP,       /* AMQP frames */
    SBUSI_IN_OFF,        /* malformed framing: Proton rejects it itself */
    SBUSI_IN_BROKEN      /* a violation was found: nothing more passes */
};

/* Scans p[n], the next bytes of the peer's stream that are meant for
 * Proton (after TLS and WebSocket). Returns 0 when all may go on; -1 when
 * a frame must not reach Proton: then only the first *pass bytes may, the
 * transport must end, and f->iwhy says why. Today's reason: a transfer
 * that begins a delivery (it is not a continuation of a multi-transfer
 * delivery on its link) without a delivery-id encoded as a uint, or whose
 * fields do not decode - Proton 0.37 asserts on such a first transfer of
 * a multi-transfer delivery (AMQP 1.0 2.7.5 requires the id). The frame
 * head is read in place when it is contiguous; only a unit split across
 * calls is copied, and nothing is allocated per frame. */
int sbusi_frame_scan_in(sbusi_frame_t *f, const uint8_t *p, size_t n,
                        size_t *pass);

/* Passes p[n] (Proton output) to out, rewriting batch transfers. */
void sbusi_frame_feed(sbusi_frame_t *f, const uint8_t *p, size_t n,
                      sbusi_buf_t *out);
/* Forgets partial state, both directions (new transport). */
void sbusi_frame_reset(sbusi_frame_t *f);

#endif
