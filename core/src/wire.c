/*
 * wire.c - the byte boundary between the host and Proton, and the layers
 * in between.
 *
 * Without TLS the host reads straight into Proton's read buffer; outgoing
 * bytes pass through the frame filter (frame.c) into c->out, which the
 * host writes. With TLS (core/src/tls.c, memory BIOs) the host reads
 * ciphertext into c->in, which is fed to TLS, whose plaintext goes on to
 * Proton; Proton's output goes through the frame filter into c->plain,
 * then through TLS into c->out. WebSocket and HTTP CONNECT layers
 * (layer.h) will sit between TLS and the host in the same two places:
 * read_done (bytes up) and pull_output (bytes down).
 *
 * A TLS failure (handshake, verification, record) ends the transport with
 * SBUS_ETLS, which is not retried: a certificate does not get better.
 */
#include "frame.h"
#include "internal.h"
#include "tls.h"

#include <stdio.h>
#include <string.h>

#define IN_CHUNK 65536

int sbusi_wire_tls_config(sbus_conn_t *c, const char *ca_file, int verify,
                          char *err, size_t errlen)
{
    sbusi_tls_options_t o;
    sbusi_tls_options_init(&o);
    o.ca_file = ca_file;
    o.verify_peer = verify != 0;
    c->tls_ctx = sbusi_tls_ctx_new(&o, err, errlen);
    return c->tls_ctx ? 0 : SBUS_ETLS;
}

int sbusi_wire_start(sbus_conn_t *c)
{
    c->tls_eof = 0;
    if (!c->tls_ctx)
        return 0;
    c->tls = sbusi_tls_new(c->tls_ctx, c->host);
    return c->tls ? 0 : SBUS_ENOMEM;
}

void sbusi_wire_stop(sbus_conn_t *c)
{
    sbusi_frame_reset(c->frame);
    c->out.len = c->out_head = 0;
    c->plain.len = 0;
    if (c->tls)
        sbusi_tls_free(c->tls);
    c->tls = NULL;
}

void sbusi_wire_free(sbus_conn_t *c)
{
    if (c->frame)
        sbusi_frame_reset(c->frame);
    sbusi_buf_free(&c->out);
    sbusi_buf_free(&c->plain);
    sbusi_buf_free(&c->in);
    if (c->tls)
        sbusi_tls_free(c->tls);
    c->tls = NULL;
    if (c->tls_ctx)
        sbusi_tls_ctx_free(c->tls_ctx);
    c->tls_ctx = NULL;
}

/* The TLS layer failed: end this transport for good. */
static void tls_failed(sbus_conn_t *c)
{
    char why[SBUSI_DESC_MAX];
    snprintf(why, sizeof why, "TLS: %s", sbusi_tls_error(c->tls));
    sbusi_set_conn_error(c, SBUS_ETLS, NULL, why);
    sbusi_emit_disconnect(c);
    sbusi_transport_gone(c, why);
}

/* Moves decrypted bytes into Proton while it has room. */
static void tls_up(sbus_conn_t *c)
{
    while (c->have_driver && c->tls && !c->tls_eof) {
        pn_rwbytes_t rb = pn_connection_driver_read_buffer(&c->driver);
        if (!rb.size)
            return;
        ssize_t n = sbusi_tls_read(c->tls, rb.start, rb.size);
        if (n > 0) {
            pn_connection_driver_read_done(&c->driver, (size_t)n);
            continue;
        }
        if (n == SBUSI_TLS_EOF) {
            c->tls_eof = 1;
            pn_connection_driver_read_close(&c->driver);
        } else if (n == SBUSI_TLS_FAIL) {
            tls_failed(c);
        }
        return;
    }
}

uint8_t *sbus_conn_read_buffer(sbus_conn_t *c, size_t *cap)
{
    if (!c || !cap)
        return NULL;
    *cap = 0;
    if (!c->have_driver)
        return NULL;
    if (!c->tls) {
        pn_rwbytes_t rb = pn_connection_driver_read_buffer(&c->driver);
        *cap = rb.size;
        return (uint8_t *)rb.start;
    }
    c->in.len = 0;
    if (sbusi_buf_reserve(&c->in, IN_CHUNK) < 0) {
        c->in.oom = 0;
        return NULL;
    }
    *cap = IN_CHUNK;
    return c->in.p;
}

void sbus_conn_read_done(sbus_conn_t *c, size_t n)
{
    if (!c || !c->have_driver)
        return;
    if (!c->tls) {
        pn_connection_driver_read_done(&c->driver, n);
    } else if (sbusi_tls_feed(c->tls, c->in.p, n) < 0) {
        tls_failed(c);
    } else {
        tls_up(c);
    }
    sbusi_process(c);
}

/* Appends what TLS has to send to c->out. */
static void tls_down(sbus_conn_t *c)
{
    if (c->plain.len) {
        if (sbusi_tls_write(c->tls, c->plain.p, c->plain.len) < 0) {
            tls_failed(c);
            return;
        }
        c->plain.len = 0;
    }
    size_t n;
    while (c->tls && (n = sbusi_tls_pending(c->tls)) > 0) {
        if (sbusi_buf_reserve(&c->out, n) < 0) {
            c->out.oom = 0;
            return;
        }
        c->out.len += sbusi_tls_take(c->tls, c->out.p + c->out.len, n);
    }
}

/* Moves Proton's output through the frame filter (and TLS) into c->out. */
static void pull_output(sbus_conn_t *c)
{
    sbusi_buf_t *dst = c->tls ? &c->plain : &c->out;
    if (c->have_driver)
        c->frame->max_frame =
            pn_transport_get_remote_max_frame(c->driver.transport);
    while (c->have_driver) {
        pn_bytes_t wb = pn_connection_driver_write_buffer(&c->driver);
        if (!wb.size)
            break;
        size_t keep = dst->len;
        sbusi_frame_feed(c->frame, (const uint8_t *)wb.start, wb.size, dst);
        if (dst->oom) {
            dst->oom = 0; /* retry later; nothing was consumed */
            dst->len = keep;
            break;
        }
        pn_connection_driver_write_done(&c->driver, wb.size);
    }
    if (c->tls)
        tls_down(c);
}

const uint8_t *sbus_conn_write_buffer(sbus_conn_t *c, size_t *len)
{
    if (!c || !len)
        return NULL;
    if (c->out_head == c->out.len) {
        c->out.len = c->out_head = 0;
        if (c->tls)
            tls_up(c); /* plaintext left over when Proton was full */
        pull_output(c);
        sbusi_process(c);
    }
    *len = c->out.len - c->out_head;
    return c->out.p ? c->out.p + c->out_head : (const uint8_t *)"";
}

void sbus_conn_write_done(sbus_conn_t *c, size_t n)
{
    if (!c)
        return;
    size_t avail = c->out.len - c->out_head;
    c->out_head += n < avail ? n : avail;
    if (c->out_head == c->out.len)
        c->out.len = c->out_head = 0;
    sbusi_process(c);
}
