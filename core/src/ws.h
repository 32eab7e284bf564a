/*
 * ws.h - the WebSocket layer (RFC 6455), client and server, as an
 * sbusi_layer_t (layer.h). AMQP rides in it as a byte stream: binary frames
 * with subprotocol AMQPWSB10 (protocol.md §1.2, §14).
 *
 * Client (the engine, transport_type=AmqpOverWebsocket):
 *
 *     sbusi_ws_opts_t o;
 *     sbusi_ws_opts_init(&o, SBUSI_WS_CLIENT);
 *     o.host = "ns.servicebus.windows.net";     Host header
 *     memcpy(o.key, 16 random bytes, 16);       Sec-WebSocket-Key nonce
 *     memcpy(o.mask_seed, 16 random bytes, 16); or o.rng = callback
 *     sbusi_layer_t *l;
 *     sbusi_ws_new(&o, &l);     l->down holds "GET /$servicebus/websocket/"
 *
 * The engine has no randomness policy of its own, so the caller supplies
 * the handshake nonce and the masking randomness: either a callback called
 * for 4 bytes per frame, or a 16-byte seed from which masks are derived
 * with SHA-1 in counter mode.
 *
 * The client checks the answer: status 101 (anything else fails naming the
 * status line: "websocket upgrade refused: HTTP/1.1 404 Not Found"),
 * Upgrade and Connection, Sec-WebSocket-Accept, no extension, and the
 * subprotocol (missing or different fails, naming it). Then it is READY:
 * output() becomes masked binary frames (split into continuation frames of
 * out_fragment bytes when set), input() yields the payload of binary
 * frames, answers pings, and runs the close handshake.
 *
 * Server (the emulator): sbusi_ws_new with SBUSI_WS_SERVER, feed what the
 * client sends. A valid upgrade request for `path` (with or without a
 * trailing slash) offering the subprotocol is answered with 101 and the
 * layer is READY; otherwise down holds a 400, 404 or 426 answer, the layer
 * is in ERROR, and the host should flush down and close. The server
 * requires masked frames and sends unmasked ones.
 *
 * Either side fails the connection on a protocol violation with the RFC's
 * close code, which it sends in a close frame left in down (flush it):
 * 1002 (bad header, unmasked client frame, masked server frame, fragmented
 * or oversized control frame, bad continuation, bad close code), 1003 (text
 * frame: AMQPWSB10 carries binary), 1007 (close reason not UTF-8), 1009
 * (frame or message above the limits). Errors are SBUS_ECONNECTION, or
 * SBUS_ENOMEM. A close from the peer is answered and leaves the layer
 * CLOSED with the peer's code in sbusi_ws_peer_close(); an end of stream
 * without a close frame is an error (1006, not sent).
 */
#ifndef SBUS_WS_H
#define SBUS_WS_H

#include "layer.h"

#define SBUSI_WS_SUBPROTOCOL "AMQPWSB10"
#define SBUSI_WS_CLIENT_PATH "/$servicebus/websocket/"
#define SBUSI_WS_SERVER_PATH "/$servicebus/websocket"
#define SBUSI_WS_DEFAULT_MAX_FRAME ((size_t)16 << 20)    /* 16 MiB */
#define SBUSI_WS_DEFAULT_MAX_MESSAGE ((size_t)256 << 20) /* 256 MiB */
#define SBUSI_WS_MIN_BUF 64 /* smallest buf_max: a header and some payload */

typedef enum sbusi_ws_role {
    SBUSI_WS_CLIENT = 0, /* sends the upgrade request, masks frames */
    SBUSI_WS_SERVER = 1, /* answers the upgrade request, frames unmasked */
} sbusi_ws_role_t;

/* Fills out[0..n) with unpredictable bytes; must not fail. */
typedef void (*sbusi_ws_rng_fn)(void *ctx, uint8_t *out, size_t n);

/* Options; sbusi_ws_opts_init() sets the defaults. Strings are copied
 * (borrowed for the call of sbusi_ws_new only). */
typedef struct sbusi_ws_opts {
    sbusi_ws_role_t role;      /* client or server */
    const char *host;          /* client: Host header, "host" or
                                  "host:port" (required) */
    const char *path;          /* client: request target; server: the path
                                  served, trailing '/' optional both ways */
    const char *subprotocol;   /* offered / required; AMQPWSB10 */
    const char *extra_headers; /* client: more "Name: value\r\n" lines, or
                                  NULL; validated, sent verbatim */
    uint8_t key[16];           /* client: random Sec-WebSocket-Key nonce */
    uint8_t mask_seed[16];     /* client: random seed for masks (no rng) */
    sbusi_ws_rng_fn rng;       /* client: mask source; NULL: mask_seed */
    void *rng_ctx;             /* passed to rng */
    size_t max_frame;          /* largest incoming frame payload */
    size_t max_message;        /* largest incoming message (all fragments) */
    size_t out_fragment;       /* largest outgoing frame payload; 0: one
                                  frame per message */
    size_t buf_max;            /* bound of each FIFO; 0: the default, else
                                  at least SBUSI_WS_MIN_BUF */
} sbusi_ws_opts_t;

/* Defaults for `role`: paths above, AMQPWSB10, the default limits, no
 * fragmentation, zero key and seed (set them). */
void sbusi_ws_opts_init(sbusi_ws_opts_t *o, sbusi_ws_role_t role);

/*
 * Creates a WebSocket layer. *out transfers to the caller (free with
 * sbusi_layer_free). A client's down FIFO holds the upgrade request.
 * SBUS_EINVAL for a missing host (client), a path that is not absolute,
 * buf_max below SBUSI_WS_MIN_BUF,
 * a subprotocol that is not a token, extra headers that are not well
 * formed "Name: value\r\n" lines; SBUS_ENOMEM.
 */
int sbusi_ws_new(const sbusi_ws_opts_t *o, sbusi_layer_t **out);

/*
 * Starts the close handshake with `code` (1000-1003, 1007-1014,
 * 3000-4999) and an optional UTF-8 reason (at most 123 bytes, copied).
 * sbusi_layer_shutdown() is this with 1000 and no reason. Before READY
 * there is nothing to send and the layer just becomes CLOSED. 0,
 * SBUS_EINVAL (bad code or reason), the layer's error.
 */
int sbusi_ws_close(sbusi_layer_t *l, uint16_t code, const char *reason);

/* Queues a ping with payload p[0..n), n <= 125 (keep-alive). 0,
 * SBUS_EINVAL, SBUS_ESTATE unless READY, SBUS_ETOOBIG if down is full. */
int sbusi_ws_ping(sbusi_layer_t *l, const uint8_t *p, size_t n);

/* The peer's close code (1005 when its close frame had none, 0 when no
 * close came) and, through *reason if not NULL, its reason (borrowed). */
uint16_t sbusi_ws_peer_close(const sbusi_layer_t *l, const char **reason);

/* The close code this side sent (0 if none): after an ERROR, the RFC code
 * that classifies the violation. */
uint16_t sbusi_ws_sent_close(const sbusi_layer_t *l);

/* Server: the request-target the client asked for (borrowed; "" before the
 * request came). */
const char *sbusi_ws_request_target(const sbusi_layer_t *l);

/*
 * Computes Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64 of the
 * SHA-1 of the key followed by the RFC 6455 GUID, into out (28 characters
 * and a NUL). 0, or SBUS_ENOMEM.
 */
int sbusi_ws_accept(const char *key, size_t key_len, char out[29]);

#endif /* SBUS_WS_H */
