/*
 * frame.h - the outgoing-frame filter that stamps message-format on batch
 * transfers (Proton 0.37 cannot). See frame.c.
 */
#ifndef SBUS_FRAME_H
#define SBUS_FRAME_H

#include "internal.h"

/* First byte of a 9-byte delivery tag that marks a batch transfer. */
#define SBUSI_BATCH_TAG_MARK 0xBA

typedef struct sbusi_frame {
    sbusi_buf_t pend;   /* bytes of an incomplete frame, kept until the rest */
    uint32_t max_frame; /* the peer's max-frame-size (0: unlimited) */
} sbusi_frame_t;

/* Passes p[n] (Proton output) to out, rewriting batch transfers. */
void sbusi_frame_feed(sbusi_frame_t *f, const uint8_t *p, size_t n,
                      sbusi_buf_t *out);
/* Forgets partial state (new transport). */
void sbusi_frame_reset(sbusi_frame_t *f);

#endif
