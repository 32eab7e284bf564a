/*
 * wire.c - the byte boundary between the host and Proton, and the layers
 * in between.
 *
 * Without layers the host reads straight into Proton's read buffer, and
 * outgoing bytes pass through the frame filter (frame.c) into c->out, which
 * the host writes. With layers (layer.h), bottom to top: the HTTP CONNECT
 * tunnel (proxy.c, when a proxy is set), TLS (tls.c through the small
 * adapter below), WebSocket (ws.c, for AMQP over WebSockets). The host
 * reads into c->in, which enters the bottom layer; what comes out of the
 * top goes to Proton. Proton's output goes through the frame filter into
 * c->plain, into the top layer, and the host writes what comes out of the
 * bottom straight from that layer (wire_data); c->out only keeps what is
 * left when the layers stop.
 *
 * TLS, the costliest layer, copies least (issue 7): next to the wire the
 * host reads into tls.c's input queue instead of c->in and writes from its
 * queue of records. (Decrypting straight into Proton's read buffer was
 * tried and is slower: Proton offers 2-8 KiB at a time, so SSL_read is
 * called three times as often; decrypting into up 16 KiB at a time and
 * copying is cheaper.)
 *
 * A layer failure ends the transport with the layer's code: SBUS_ETLS
 * (handshake, verification), SBUS_EPROXY (the proxy refused) are not
 * retried; SBUS_ECONNECTION (a broken WebSocket) is.
 *
 * Every byte bound for Proton, on both paths, first passes the incoming
 * guard (sbusi_frame_scan_in, frame.c): a frame that would trip an
 * assertion in Proton 0.37 never reaches it; the transport ends instead
 * as a connection error (SBUS_ECONNECTION, amqp:invalid-field), which the
 * retry policy treats like any other loss.
 */
#include "frame.h"
#include "internal.h"
#include "layer.h"
#include "proxy.h"
#include "tls.h"
#include "ws.h"

#include <openssl/rand.h>

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

/* ------------------------- the TLS adapter ------------------------ */

/* tls.c's API as a layer: ciphertext below, plaintext above. */
typedef struct tls_layer {
    sbusi_layer_t l;  /* the layer (must be first) */
    sbusi_tls_t *t;   /* the TLS state (owned) */
    int at_wire;      /* bottom of the stack: the host writes straight from
                         tls.c's queue (wire_data), down stays empty */
} tls_layer_t;

/* Moves what TLS has to send into down, as far as down has room. */
static void tls_to_down(tls_layer_t *x)
{
    size_t n;
    if (x->at_wire)
        return;
    while ((n = sbusi_tls_pending(x->t)) > 0) {
        size_t room = sbusi_fifo_room(&x->l.down);
        if (n > room)
            n = room;
        uint8_t *w = n ? sbusi_fifo_reserve(&x->l.down, n) : NULL;
        if (!w)
            return;
        sbusi_fifo_commit(&x->l.down, sbusi_tls_take(x->t, w, n));
    }
}

/* Moves decrypted bytes into up, as far as up has room. */
static int tls_to_up(tls_layer_t *x)
{
    for (;;) {
        size_t room = sbusi_fifo_room(&x->l.up);
        size_t n = room < 16384 ? room : 16384;
        uint8_t *w = n ? sbusi_fifo_reserve(&x->l.up, n) : NULL;
        if (!w)
            return 0;
        ssize_t got = sbusi_tls_read(x->t, w, n);
        if (got > 0) {
            sbusi_fifo_commit(&x->l.up, (size_t)got);
            continue;
        }
        if (got == SBUSI_TLS_EOF) {
            x->l.state = SBUSI_LAYER_CLOSED;
            snprintf(x->l.text, sizeof x->l.text, "TLS closed by the peer");
        } else if (got == SBUSI_TLS_FAIL) {
            return sbusi_layer_fail(&x->l, SBUS_ETLS, "TLS: %s",
                                    sbusi_tls_error(x->t));
        }
        return 0;
    }
}

static int tls_input(sbusi_layer_t *l, const uint8_t *p, size_t n, size_t *used)
{
    tls_layer_t *x = (tls_layer_t *)l;
    *used = 0;
    if (l->state == SBUSI_LAYER_ERROR)
        return l->code;
    if (n && sbusi_tls_feed(x->t, p, n) < 0)
        return sbusi_layer_fail(l, SBUS_ETLS, "TLS: %s", sbusi_tls_error(x->t));
    *used = n;
    int rc = tls_to_up(x);
    tls_to_down(x);
    if (rc == 0 && l->state == SBUSI_LAYER_HANDSHAKE &&
        sbusi_tls_established(x->t))
        l->state = SBUSI_LAYER_READY;
    return rc;
}

static int tls_output(sbusi_layer_t *l, const uint8_t *p, size_t n,
                      size_t *used)
{
    tls_layer_t *x = (tls_layer_t *)l;
    *used = 0;
    if (l->state == SBUSI_LAYER_ERROR)
        return l->code;
    if (n && sbusi_tls_write(x->t, p, n) < 0)
        return sbusi_layer_fail(l, SBUS_ETLS, "TLS: %s", sbusi_tls_error(x->t));
    *used = n;
    tls_to_down(x);
    return 0;
}

static int tls_shutdown(sbusi_layer_t *l)
{
    tls_layer_t *x = (tls_layer_t *)l;
    sbusi_tls_close(x->t);
    tls_to_down(x);
    l->state = SBUSI_LAYER_CLOSING;
    return 0;
}

static int tls_eof(sbusi_layer_t *l)
{
    if (l->state != SBUSI_LAYER_CLOSED && l->state != SBUSI_LAYER_ERROR) {
        l->state = SBUSI_LAYER_CLOSED;
        snprintf(l->text, sizeof l->text, "the peer closed the connection");
    }
    return 0;
}

static void tls_destroy(sbusi_layer_t *l)
{
    tls_layer_t *x = (tls_layer_t *)l;
    sbusi_tls_free(x->t);
    sbusi_fifo_free(&l->up);
    sbusi_fifo_free(&l->down);
    sbusi_free(x);
}

static const sbusi_layer_ops_t g_tls_ops = {
    "tls", tls_input, tls_output, tls_shutdown, tls_eof, tls_destroy,
};

static int tls_layer_new(sbus_conn_t *c, sbusi_layer_t **out)
{
    tls_layer_t *x = sbusi_calloc(1, sizeof *x);
    if (!x)
        return SBUS_ENOMEM;
    x->l.ops = &g_tls_ops;
    x->t = sbusi_tls_new(c->tls_ctx, c->host);
    if (!x->t) {
        sbusi_free(x);
        return SBUS_ENOMEM;
    }
    tls_to_down(x); /* the ClientHello */
    *out = &x->l;
    return 0;
}

/* ----------------------------- the stack --------------------------- */

static int ws_layer_new(sbus_conn_t *c, sbusi_layer_t **out)
{
    sbusi_ws_opts_t o;
    sbusi_ws_opts_init(&o, SBUSI_WS_CLIENT);
    char host[300];
    if (c->port == (c->tls_ctx ? 443 : 80))
        snprintf(host, sizeof host, "%s", c->host);
    else
        snprintf(host, sizeof host, "%s:%d", c->host, c->port);
    o.host = host;
    if (RAND_bytes(o.key, sizeof o.key) != 1 ||
        RAND_bytes(o.mask_seed, sizeof o.mask_seed) != 1)
        return SBUS_ENOMEM;
    return sbusi_ws_new(&o, out);
}

static int proxy_layer_new(sbus_conn_t *c, sbusi_layer_t **out)
{
    sbusi_proxy_opts_t o;
    sbusi_proxy_opts_init(&o);
    o.host = c->host;
    o.port = (uint16_t)c->port;
    o.username = c->proxy_user;
    o.password = c->proxy_password;
    return sbusi_proxy_new(&o, out);
}

/* The next bytes for the wire, in order, *n of them (borrowed until the
 * next call on the stack): what the bottom layer's down FIFO holds, then,
 * with TLS at the wire, tls.c's own queue of records. NULL without layers
 * or bytes. */
static const uint8_t *wire_data(sbus_conn_t *c, size_t *n)
{
    *n = 0;
    if (!c->nlayers)
        return NULL;
    sbusi_layer_t *b = c->layers[0];
    if (sbusi_fifo_len(&b->down)) {
        *n = sbusi_fifo_len(&b->down);
        return sbusi_fifo_data(&b->down);
    }
    if (b->ops == &g_tls_ops && ((tls_layer_t *)b)->at_wire) {
        const uint8_t *p = sbusi_tls_out_data(((tls_layer_t *)b)->t, n);
        return *n ? p : NULL;
    }
    return NULL;
}

/* Releases n bytes that wire_data handed out (the host wrote them). */
static void wire_consume(sbus_conn_t *c, size_t n)
{
    sbusi_layer_t *b = c->layers[0];
    if (sbusi_fifo_len(&b->down))
        sbusi_fifo_consume(&b->down, n);
    else if (b->ops == &g_tls_ops && ((tls_layer_t *)b)->at_wire)
        sbusi_tls_out_consume(((tls_layer_t *)b)->t, n);
}

int sbusi_wire_start(sbus_conn_t *c)
{
    c->out.len = c->out_head = 0; /* what the old socket did not take */
    sbusi_frame_reset(c->frame); /* the guard starts at a protocol header */
    c->layers_shut = 0;
    c->nlayers = 0;
    int rc = 0;
    if (c->proxy_host)
        rc = proxy_layer_new(c, &c->layers[c->nlayers++]);
    if (rc == 0 && c->tls_ctx)
        rc = tls_layer_new(c, &c->layers[c->nlayers++]);
    if (rc == 0 && c->websocket)
        rc = ws_layer_new(c, &c->layers[c->nlayers++]);
    if (rc < 0) {
        c->nlayers--; /* the failed one was not made */
        sbusi_wire_stop(c);
        return rc;
    }
    if (c->nlayers && c->layers[0]->ops == &g_tls_ops)
        ((tls_layer_t *)c->layers[0])->at_wire = 1;
    return rc;
}

static void free_layers(sbus_conn_t *c)
{
    for (size_t i = 0; i < c->nlayers; i++)
        sbusi_layer_free(c->layers[i]);
    c->nlayers = 0;
}

/* The transport ended. What c->out still holds (the AMQP close, TLS
 * close_notify) stays for the host to flush on SBUS_EV_DISCONNECT. */
void sbusi_wire_stop(sbus_conn_t *c)
{
    sbusi_frame_reset(c->frame);
    c->plain.len = 0;
    c->in_staged = 0;
    /* bytes for the wire the host has not taken yet (the AMQP close,
       close_notify) outlive the layers */
    size_t n;
    const uint8_t *p;
    while ((p = wire_data(c, &n)) != NULL) {
        sbusi_buf_put(&c->out, p, n);
        c->out.oom = 0;
        wire_consume(c, n);
    }
    free_layers(c);
}

void sbusi_wire_free(sbus_conn_t *c)
{
    if (c->frame)
        sbusi_frame_reset(c->frame);
    sbusi_buf_free(&c->out);
    sbusi_buf_free(&c->plain);
    sbusi_buf_free(&c->in);
    free_layers(c);
    if (c->tls_ctx)
        sbusi_tls_ctx_free(c->tls_ctx);
    c->tls_ctx = NULL;
}

/* A layer failed: end this transport with its code and reason. */
static void layer_failed(sbus_conn_t *c, int code, const char *text)
{
    char why[SBUSI_DESC_MAX];
    snprintf(why, sizeof why, "%s", text && *text ? text : sbus_strerror(code));
    sbusi_set_conn_error(c, code, NULL, why);
    sbusi_emit_disconnect(c);
    sbusi_transport_gone(c, why);
}

static void pull_output(sbus_conn_t *c);

/* The guard stopped the input: end this transport. The peer is told why,
 * as Proton tells it of its own framing errors: a close carrying the
 * condition, which the transport's end keeps in c->out for the host to
 * flush on SBUS_EV_DISCONNECT. */
static void guard_failed(sbus_conn_t *c)
{
    char why[SBUSI_DESC_MAX];
    const char *cond = c->frame->icond ? c->frame->icond
                                       : "amqp:connection:framing-error";
    snprintf(why, sizeof why, "protocol violation by the peer: %s",
             c->frame->iwhy ? c->frame->iwhy : "malformed input");
    sbusi_set_conn_error(c, SBUS_ECONNECTION, c->frame->icond, why);
    if (c->have_driver) {
        pn_connection_t *pc = c->driver.connection;
        pn_condition_t *pcond = pn_connection_condition(pc);
        pn_condition_set_name(pcond, cond);
        pn_condition_set_description(pcond, why);
        pn_connection_close(pc);
        pull_output(c);
    }
    sbusi_emit_disconnect(c);
    sbusi_transport_gone(c, why);
}

/* Hands p[n] to Proton's read buffer rb (n <= rb.size) after the guard;
 * 0, or -1 after ending the transport. */
static int to_proton(sbus_conn_t *c, pn_rwbytes_t rb, const uint8_t *p,
                     size_t n)
{
    size_t pass;
    int rc = sbusi_frame_scan_in(c->frame, p, n, &pass);
    if (pass) {
        if (p != (const uint8_t *)rb.start)
            memcpy(rb.start, p, pass);
        pn_connection_driver_read_done(&c->driver, pass);
    }
    if (rc < 0) {
        guard_failed(c);
        return -1;
    }
    return 0;
}

/* Checks every layer after moving bytes; 0, or -1 after ending the
 * transport. */
static int check_layers(sbus_conn_t *c, int rc)
{
    for (size_t i = 0; i < c->nlayers; i++) {
        const char *text;
        int code = sbusi_layer_error(c->layers[i], &text);
        if (code || rc < 0) {
            layer_failed(c, code ? code : rc, text);
            return -1;
        }
    }
    return 0;
}

/* Moves what the top layer produced into Proton, as far as it has room;
 * passes the end of the stream on when a layer closed. 0, or -1 when the
 * guard ended the transport (the layers are gone). */
static int stack_to_proton(sbus_conn_t *c)
{
    sbusi_layer_t *top = c->layers[c->nlayers - 1];
    while (c->have_driver && sbusi_fifo_len(&top->up)) {
        pn_rwbytes_t rb = pn_connection_driver_read_buffer(&c->driver);
        if (!rb.size)
            return 0;
        size_t n = sbusi_fifo_len(&top->up);
        if (n > rb.size)
            n = rb.size;
        const uint8_t *data = sbusi_fifo_data(&top->up);
        if (to_proton(c, rb, data, n) < 0)
            return -1;
        sbusi_fifo_consume(&top->up, n);
    }
    for (size_t i = 0; c->have_driver && i < c->nlayers; i++)
        if (sbusi_layer_closed(c->layers[i]) && !c->tls_eof) {
            c->tls_eof = 1;
            pn_connection_driver_read_close(&c->driver);
        }
    return 0;
}

/* Feeds p[n] from the socket into the stack and on up to Proton. */
static void stack_input(sbus_conn_t *c, const uint8_t *p, size_t n)
{
    size_t off = 0;
    for (int rounds = 0; rounds < 10000; rounds++) {
        size_t used = 0;
        int rc = sbusi_layer_input(c->layers[0], p + off, n - off, &used);
        if (rc == 0)
            rc = sbusi_stack_pump(c->layers, c->nlayers);
        if (check_layers(c, rc) < 0)
            return;
        off += used;
        if (stack_to_proton(c) < 0)
            return;
        if (off == n || (!used && !c->have_driver))
            return;
    }
    layer_failed(c, SBUS_ECONNECTION, "input stalled in the byte layers");
}

uint8_t *sbus_conn_read_buffer(sbus_conn_t *c, size_t *cap)
{
    if (!c || !cap)
        return NULL;
    *cap = 0;
    if (!c->have_driver)
        return NULL;
    c->in_staged = 0;
    if (!c->nlayers) {
        /* Proton offers what is left of its input buffer (16 KiB at
           first, less a partial frame): with a busy receiver the host
           would make a read syscall, and we a pass over the connection,
           every few messages. When it offers less than IN_CHUNK and our
           buffer can be had, the host reads into ours and read_done feeds
           Proton from it: one copy, far fewer syscalls. */
        pn_rwbytes_t rb = pn_connection_driver_read_buffer(&c->driver);
        c->in.len = 0;
        if (rb.size >= IN_CHUNK || !rb.size ||
            sbusi_buf_reserve(&c->in, IN_CHUNK) < 0) {
            c->in.oom = 0;
            *cap = rb.size;
            return (uint8_t *)rb.start;
        }
        c->in_staged = 1;
        *cap = IN_CHUNK;
        return c->in.p;
    }
    if (c->layers[0]->ops == &g_tls_ops &&
        c->layers[0]->state != SBUSI_LAYER_ERROR) {
        /* TLS next to the wire: the host reads straight into its input
           queue, which SSL_read consumes (one copy less than c->in) */
        uint8_t *p = sbusi_tls_feed_buffer(((tls_layer_t *)c->layers[0])->t,
                                           IN_CHUNK);
        if (p) {
            c->in_staged = 1;
            *cap = IN_CHUNK;
            return p;
        }
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
    if (!c->nlayers && c->in_staged) {
        /* Proton takes each chunk's complete frames as it gets it, so
           its room comes back; none left means its input side closed
           and would discard the rest anyway */
        c->in_staged = 0;
        for (size_t off = 0; off < n && c->have_driver;) {
            pn_rwbytes_t rb = pn_connection_driver_read_buffer(&c->driver);
            if (!rb.size)
                break;
            size_t k = n - off < rb.size ? n - off : rb.size;
            if (to_proton(c, rb, c->in.p + off, k) < 0)
                break;
            off += k;
        }
    } else if (!c->nlayers) {
        /* the host read straight into Proton's buffer */
        pn_rwbytes_t rb = pn_connection_driver_read_buffer(&c->driver);
        to_proton(c, rb, (const uint8_t *)rb.start, n < rb.size ? n : rb.size);
    } else if (c->in_staged) {
        /* the host read into the bottom TLS layer's input queue */
        sbusi_layer_t *l = c->layers[0];
        c->in_staged = 0;
        if (sbusi_tls_feed_done(((tls_layer_t *)l)->t, n) < 0)
            sbusi_layer_fail(l, SBUS_ETLS, "TLS: %s",
                             sbusi_tls_error(((tls_layer_t *)l)->t));
        if (check_layers(c, 0) == 0)
            stack_input(c, (const uint8_t *)"", 0);
    } else
        stack_input(c, c->in.p, n);
    sbusi_process(c);
}

/* Passes c->plain down the stack and what leaves the bottom to c->out. */
static void stack_output(sbus_conn_t *c)
{
    sbusi_layer_t *top = c->layers[c->nlayers - 1];
    size_t used = 0;
    int rc = sbusi_layer_output(top, c->plain.p ? c->plain.p : (uint8_t *)"",
                                c->plain.len, &used);
    if (used) {
        memmove(c->plain.p, c->plain.p + used, c->plain.len - used);
        c->plain.len -= used;
    }
    if (rc == 0)
        rc = sbusi_stack_pump(c->layers, c->nlayers);
    check_layers(c, rc);
    /* what leaves the bottom layer stays in its down FIFO: the host
       writes it from there (sbus_conn_write_buffer), no copy into out */
}

/* Moves Proton's output through the frame filter (and the layers) into
 * c->out. */
static void pull_output(sbus_conn_t *c)
{
    sbusi_buf_t *dst = c->nlayers ? &c->plain : &c->out;
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
    if (c->have_driver && c->nlayers && !c->layers_shut &&
        pn_connection_driver_write_closed(&c->driver) && !c->plain.len) {
        /* AMQP said its last word: close the layers in order (WebSocket
           close frame, TLS close_notify) */
        c->layers_shut = 1;
        for (size_t i = c->nlayers; i-- > 0;)
            sbusi_layer_shutdown(c->layers[i]);
    }
    if (c->have_driver && c->nlayers)
        stack_output(c);
}

const uint8_t *sbus_conn_write_buffer(sbus_conn_t *c, size_t *len)
{
    if (!c || !len)
        return NULL;
    size_t n = 0;
    const uint8_t *p = NULL;
    if (c->out_head == c->out.len && !wire_data(c, &n)) {
        c->out.len = c->out_head = 0;
        if (c->have_driver && c->nlayers)
            stack_to_proton(c); /* input left when Proton was full */
        pull_output(c);
        sbusi_process(c);
    }
    /* with layers, out is empty until they stop: the bytes are handed out
       from the bottom layer (wire_data), not copied into out */
    if (c->out_head == c->out.len && (p = wire_data(c, &n)) != NULL) {
        *len = n;
        return p;
    }
    *len = c->out.len - c->out_head;
    return c->out.p ? c->out.p + c->out_head : (const uint8_t *)"";
}

void sbus_conn_write_done(sbus_conn_t *c, size_t n)
{
    if (!c)
        return;
    size_t avail = c->out.len - c->out_head;
    if (!avail && c->nlayers)
        wire_consume(c, n); /* what was handed out came from wire_data */
    c->out_head += n < avail ? n : avail;
    if (c->out_head == c->out.len)
        c->out.len = c->out_head = 0;
    sbusi_process(c);
}
