/*
 * ws.c - the WebSocket layer (RFC 6455), both roles; see ws.h.
 *
 * Divided in five parts: small helpers (masks, UTF-8, the accept key);
 * writing frames (data split to fit the bound of down, control frames);
 * reading frames, a streaming parser that copies each payload byte once,
 * unmasking it on the way into up, so a frame never has to be whole in
 * memory and byte-at-a-time input works; the handshake, client and server,
 * built on the head parser of proxy.c; and the layer ops that tie them
 * together.
 *
 * Reading is a two-state machine: HDR collects the 2 to 14 header bytes in
 * a small array and checks them as soon as they are known (so a bad frame
 * fails before its payload is read); PAYLOAD moves payload bytes to up
 * (data) or to a 125-byte array (control frames, acted on when complete).
 */
#include "ws.h"
#include "proxy.h"

#include <sbus/sbus.h>

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum { OP_CONT = 0, OP_TEXT = 1, OP_BIN = 2, OP_CLOSE = 8, OP_PING = 9,
       OP_PONG = 10 };
enum { R_HDR, R_PAYLOAD };

typedef struct ws {
    sbusi_layer_t base;        /* must come first: the layer callers see */
    sbusi_ws_role_t role;      /* client or server */
    char *path;                /* server: path served (no trailing '/') */
    char *subprotocol;         /* required subprotocol */
    char accept[29];           /* client: the Sec-WebSocket-Accept expected */
    char *target;              /* server: the request-target received */
    sbusi_http_reader_t rd;    /* the handshake head being collected */
    sbusi_fifo_t held;         /* output offered before READY */
    /* masking (client) */
    sbusi_ws_rng_fn rng;       /* caller's mask source, or NULL */
    void *rng_ctx;             /* its context */
    uint8_t seed[16];          /* seed of derived masks */
    uint64_t mask_ctr;         /* blocks of masks derived so far */
    uint8_t mask_pool[20];     /* a derived block: five masks */
    size_t mask_left;          /* masks not yet used from mask_pool */
    /* limits */
    uint64_t max_frame;        /* largest incoming frame payload */
    uint64_t max_message;      /* largest incoming message */
    size_t out_fragment;       /* largest outgoing payload, 0: no limit */
    /* the frame being read */
    int rstate;                /* R_HDR or R_PAYLOAD */
    uint8_t hdr[14];           /* header bytes so far */
    size_t hdr_len;            /* how many */
    size_t hdr_need;           /* how many the header has (2 until known) */
    int opcode;                /* its opcode */
    int fin;                   /* its FIN bit */
    int masked;                /* its MASK bit */
    uint8_t mask[4];           /* its masking key */
    uint64_t remaining;        /* payload bytes still to read */
    uint64_t pos;              /* payload bytes read (mask phase) */
    uint8_t ctl[125];          /* a control frame's payload */
    size_t ctl_len;            /* bytes in ctl */
    int in_message;            /* a fragmented data message is open */
    uint64_t msg_len;          /* payload of the open message so far */
    /* closing */
    uint16_t sent_code;        /* close code we sent, 0 if none */
    uint16_t peer_code;        /* close code received, 0 if none */
    char peer_reason[124];     /* close reason received, NUL-terminated */
} ws_t;

static ws_t *W(sbusi_layer_t *l) { return (ws_t *)l; }

/* ------------------------------------------------------------------ */
/* Helpers                                                             */
/* ------------------------------------------------------------------ */

int sbusi_ws_accept(const char *key, size_t key_len, char out[29])
{
    static const char guid[] = WS_GUID;
    uint8_t buf[128], md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (key_len > sizeof buf - (sizeof guid - 1))
        key_len = sizeof buf - (sizeof guid - 1); /* keys are 24 bytes */
    memcpy(buf, key, key_len);
    memcpy(buf + key_len, guid, sizeof guid - 1);
    if (!EVP_Digest(buf, key_len + sizeof guid - 1, md, &md_len, EVP_sha1(),
                    NULL) || md_len != 20)
        return SBUS_ENOMEM;
    EVP_EncodeBlock((unsigned char *)out, md, 20);
    return 0;
}

/* dst[i] = src[i] ^ mask[(off + i) % 4], eight bytes at a time. */
static void xor_copy(uint8_t *dst, const uint8_t *src, size_t n,
                     const uint8_t mask[4], uint64_t off)
{
    uint8_t m8[8];
    for (int i = 0; i < 8; i++)
        m8[i] = mask[(off + (uint64_t)i) & 3];
    uint64_t m;
    memcpy(&m, m8, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= m;
        memcpy(dst + i, &w, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ m8[i & 7];
}

/* The next 4 mask bytes: the caller's rng, or SHA-1(seed || counter). */
static int next_mask(ws_t *ws, uint8_t out[4])
{
    if (ws->rng) {
        ws->rng(ws->rng_ctx, out, 4);
        return 0;
    }
    if (ws->mask_left == 0) {
        uint8_t in[24], md[EVP_MAX_MD_SIZE];
        unsigned int md_len = 0;
        memcpy(in, ws->seed, 16);
        for (int i = 0; i < 8; i++)
            in[16 + i] = (uint8_t)(ws->mask_ctr >> (56 - 8 * i));
        ws->mask_ctr++;
        if (!EVP_Digest(in, sizeof in, md, &md_len, EVP_sha1(), NULL))
            return SBUS_ENOMEM;
        memcpy(ws->mask_pool, md, 20);
        ws->mask_left = 5;
    }
    memcpy(out, ws->mask_pool + 4 * (5 - ws->mask_left), 4);
    ws->mask_left--;
    return 0;
}

/* 1 if p[0..n) is well-formed UTF-8 (no overlongs, surrogates, > U+10FFFF). */
static int utf8_ok(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t k;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            k = 1, cp = c & 0x1f, min = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2, cp = c & 0x0f, min = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i <= k)
            return 0;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k + 1;
    }
    return 1;
}

/* Close codes an endpoint may send or receive (RFC 6455 7.4, IANA). */
static int close_code_ok(unsigned code)
{
    if (code >= 3000 && code <= 4999)
        return 1;
    if (code >= 1000 && code <= 1003)
        return 1;
    return code >= 1007 && code <= 1014;
}

/* ------------------------------------------------------------------ */
/* Writing frames                                                      */
/* ------------------------------------------------------------------ */

static size_t hdr_size(const ws_t *ws, size_t n)
{
    size_t h = n < 126 ? 2 : n <= 0xffff ? 4 : 10;
    return h + (ws->role == SBUSI_WS_CLIENT ? 4 : 0);
}

/* Writes one frame into w (hdr_size(n) + n bytes). */
static int write_frame(ws_t *ws, uint8_t *w, int opcode, int fin,
                       const uint8_t *p, size_t n)
{
    int client = ws->role == SBUSI_WS_CLIENT;
    size_t h = 2;
    w[0] = (uint8_t)((fin ? 0x80 : 0) | opcode);
    if (n < 126) {
        w[1] = (uint8_t)n;
    } else if (n <= 0xffff) {
        w[1] = 126;
        w[2] = (uint8_t)(n >> 8);
        w[3] = (uint8_t)n;
        h = 4;
    } else {
        w[1] = 127;
        for (int i = 0; i < 8; i++)
            w[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
        h = 10;
    }
    if (!client) {
        if (n)
            memcpy(w + h, p, n);
        return 0;
    }
    w[1] |= 0x80;
    if (next_mask(ws, w + h) < 0)
        return SBUS_ENOMEM;
    xor_copy(w + h + 4, p, n, w + h, 0);
    return 0;
}

/* Like sbusi_fifo_reserve, allowing `slack` bytes beyond f's bound: the
 * handshake and control frames must get out even when data filled down. */
static uint8_t *reserve_over(sbusi_fifo_t *f, size_t n, size_t slack)
{
    size_t max = f->max;
    f->max = sbusi_fifo_bound(f) + slack;
    uint8_t *w = sbusi_fifo_reserve(f, n);
    f->max = max;
    return w;
}

static int put_over(sbusi_fifo_t *f, const void *p, size_t n)
{
    uint8_t *w = reserve_over(f, n, n);
    if (!w)
        return -1;
    memcpy(w, p, n);
    sbusi_fifo_commit(f, n);
    return 0;
}

/* Queues a control frame; fails the layer if down has no room even with
 * 1 KiB of slack (a peer pinging faster than the host drains down). */
static int put_control(ws_t *ws, int opcode, const uint8_t *p, size_t n)
{
    size_t total = hdr_size(ws, n) + n;
    uint8_t *w = reserve_over(&ws->base.down, total, 1024);
    if (!w)
        return sbusi_layer_fail(&ws->base, SBUS_ETOOBIG,
                                "websocket: output buffer full");
    if (write_frame(ws, w, opcode, 1, p, n) < 0)
        return sbusi_layer_fail(&ws->base, SBUS_ENOMEM,
                                "websocket: out of memory");
    sbusi_fifo_commit(&ws->base.down, total);
    return 0;
}

static int put_close(ws_t *ws, uint16_t code, const char *reason)
{
    uint8_t b[125];
    size_t n = reason ? strlen(reason) : 0;
    if (n > 123)
        n = 123;
    b[0] = (uint8_t)(code >> 8);
    b[1] = (uint8_t)code;
    if (n)
        memcpy(b + 2, reason, n);
    ws->sent_code = code;
    return put_control(ws, OP_CLOSE, b, 2 + n);
}

/* How much of n payload bytes fits in `room` bytes as frames of at most
 * `frag` payload bytes (0: unlimited). */
static size_t plan(const ws_t *ws, size_t n, size_t frag, size_t room)
{
    size_t done = 0;
    while (done < n) {
        size_t chunk = n - done;
        if (frag && chunk > frag)
            chunk = frag;
        size_t h = hdr_size(ws, chunk);
        if (room <= h)
            break;
        if (chunk > room - h)
            chunk = room - h;
        done += chunk;
        room -= h + chunk;
    }
    return done;
}

/* Frames as much of p[0..n) as down can take as one binary message. */
static int put_data(ws_t *ws, const uint8_t *p, size_t n, size_t *used)
{
    size_t frag = ws->out_fragment;
    size_t take = plan(ws, n, frag, sbusi_fifo_room(&ws->base.down));
    *used = 0;
    for (size_t done = 0; done < take;) {
        size_t chunk = take - done;
        if (frag && chunk > frag)
            chunk = frag;
        size_t total = hdr_size(ws, chunk) + chunk;
        uint8_t *w = sbusi_fifo_reserve(&ws->base.down, total);
        int op = done == 0 ? OP_BIN : OP_CONT;
        if (!w || write_frame(ws, w, op, done + chunk == take, p + done,
                              chunk) < 0)
            return sbusi_layer_fail(&ws->base, SBUS_ENOMEM,
                                    "websocket: out of memory");
        sbusi_fifo_commit(&ws->base.down, total);
        done += chunk;
        *used = done;
    }
    return 0;
}

static int flush_held(ws_t *ws)
{
    size_t used = 0;
    int rc = put_data(ws, sbusi_fifo_data(&ws->held),
                      sbusi_fifo_len(&ws->held), &used);
    sbusi_fifo_consume(&ws->held, used);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Reading frames                                                      */
/* ------------------------------------------------------------------ */

/* Fails the connection: sends a close frame with `code` unless one was
 * sent already, enters ERROR with the reason. */
static int fail(ws_t *ws, uint16_t code, const char *what)
{
    if (ws->base.state == SBUSI_LAYER_ERROR)
        return ws->base.code;
    if (!ws->sent_code && ws->base.state != SBUSI_LAYER_HANDSHAKE)
        put_close(ws, code, NULL);
    if (!ws->sent_code)
        ws->sent_code = code;
    return sbusi_layer_fail(&ws->base, SBUS_ECONNECTION,
                            "websocket: %s (close code %u)", what,
                            (unsigned)code);
}

/* Checks the first two header bytes; sets hdr_need. */
static int check_start(ws_t *ws)
{
    uint8_t b0 = ws->hdr[0], b1 = ws->hdr[1];
    ws->fin = b0 >> 7;
    ws->opcode = b0 & 0x0f;
    ws->masked = b1 >> 7;
    unsigned len7 = b1 & 0x7f;
    int control = ws->opcode >= 8;
    if (b0 & 0x70)
        return fail(ws, 1002, "reserved bits set in a frame");
    if (ws->opcode > OP_BIN && !control)
        return fail(ws, 1002, "unknown opcode");
    if (control && ws->opcode > OP_PONG)
        return fail(ws, 1002, "unknown opcode");
    if (ws->opcode == OP_TEXT)
        return fail(ws, 1003, "text frame (AMQPWSB10 carries binary)");
    if (control && !ws->fin)
        return fail(ws, 1002, "fragmented control frame");
    if (control && len7 > 125)
        return fail(ws, 1002, "control frame longer than 125 bytes");
    if (ws->opcode == OP_CONT && !ws->in_message)
        return fail(ws, 1002, "continuation frame without a message");
    if (ws->opcode == OP_BIN && ws->in_message)
        return fail(ws, 1002, "new message inside a fragmented one");
    if (ws->role == SBUSI_WS_SERVER && !ws->masked)
        return fail(ws, 1002, "unmasked frame from the client");
    if (ws->role == SBUSI_WS_CLIENT && ws->masked)
        return fail(ws, 1002, "masked frame from the server");
    ws->hdr_need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) +
                   (ws->masked ? 4 : 0);
    return 0;
}

/* Checks the complete header and enters PAYLOAD. */
static int check_header(ws_t *ws)
{
    unsigned len7 = ws->hdr[1] & 0x7f;
    uint64_t len = len7;
    size_t at = 2;
    if (len7 == 126) {
        len = (uint64_t)ws->hdr[2] << 8 | ws->hdr[3];
        at = 4;
        if (len < 126)
            return fail(ws, 1002, "length not minimally encoded");
    } else if (len7 == 127) {
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | ws->hdr[2 + i];
        at = 10;
        if (len >> 63)
            return fail(ws, 1002, "64-bit length with the top bit set");
        if (len <= 0xffff)
            return fail(ws, 1002, "length not minimally encoded");
    }
    if (ws->masked)
        memcpy(ws->mask, ws->hdr + at, 4);
    if (len > ws->max_frame)
        return fail(ws, 1009, "frame larger than the limit");
    if (ws->opcode < 8) {
        uint64_t prior = ws->opcode == OP_CONT ? ws->msg_len : 0;
        if (len > ws->max_message - prior)
            return fail(ws, 1009, "message larger than the limit");
        ws->msg_len = prior + len;
        ws->in_message = !ws->fin;
    }
    ws->remaining = len;
    ws->pos = 0;
    ws->ctl_len = 0;
    ws->rstate = R_PAYLOAD;
    return 0;
}

static int on_close_frame(ws_t *ws)
{
    const uint8_t *p = ws->ctl;
    size_t n = ws->ctl_len;
    if (n == 1)
        return fail(ws, 1002, "close frame with a 1-byte payload");
    uint16_t code = n ? (uint16_t)(p[0] << 8 | p[1]) : 1005;
    if (n && !close_code_ok(code))
        return fail(ws, 1002, "invalid close code");
    if (n > 2 && !utf8_ok(p + 2, n - 2))
        return fail(ws, 1007, "close reason is not UTF-8");
    ws->peer_code = code;
    if (n > 2)
        memcpy(ws->peer_reason, p + 2, n - 2);
    ws->peer_reason[n > 2 ? n - 2 : 0] = 0;
    int ours = ws->sent_code != 0; /* the peer answers our close */
    if (!ours && put_close(ws, n ? code : 1000, NULL) < 0)
        return ws->base.code;
    ws->base.state = SBUSI_LAYER_CLOSED;
    snprintf(ws->base.text, sizeof ws->base.text, "websocket closed %s: %u%s%s",
             ours ? "(the peer answered our close)" : "by the peer",
             (unsigned)code, ws->peer_reason[0] ? " " : "", ws->peer_reason);
    return 0;
}

/* A whole frame has been read: act on it. */
static int frame_done(ws_t *ws)
{
    ws->rstate = R_HDR;
    ws->hdr_len = 0;
    ws->hdr_need = 2;
    switch (ws->opcode) {
    case OP_PING:
        if (ws->sent_code) /* no frames after our close but the close */
            return 0;
        return put_control(ws, OP_PONG, ws->ctl, ws->ctl_len);
    case OP_CLOSE:
        return on_close_frame(ws);
    default: /* pong: unsolicited or not, nothing to do; data: streamed */
        return 0;
    }
}

/* Moves payload bytes of the current frame; returns bytes taken (0 with
 * the layer in ERROR when memory ran out). */
static size_t read_payload(ws_t *ws, const uint8_t *p, size_t n)
{
    size_t k = ws->remaining < n ? (size_t)ws->remaining : n;
    uint8_t *dst;
    if (ws->opcode >= 8) {
        dst = ws->ctl + ws->ctl_len;
        ws->ctl_len += k;
    } else {
        size_t room = sbusi_fifo_room(&ws->base.up);
        if (k > room)
            k = room;
        if (k == 0)
            return 0; /* up is full: the caller drains it first */
        dst = sbusi_fifo_reserve(&ws->base.up, k);
        if (!dst) { /* not backpressure: the caller would spin forever */
            sbusi_layer_fail(&ws->base, SBUS_ENOMEM, "websocket: no memory");
            return 0;
        }
        sbusi_fifo_commit(&ws->base.up, k);
    }
    if (ws->masked)
        xor_copy(dst, p, k, ws->mask, ws->pos);
    else if (k)
        memcpy(dst, p, k);
    ws->pos += k;
    ws->remaining -= k;
    return k;
}

/* Parses frames from p[0..n), adding what it took to *used. */
static int read_frames(ws_t *ws, const uint8_t *p, size_t n, size_t *used)
{
    size_t i = 0;
    int rc = 0;
    while (rc == 0 && (ws->base.state == SBUSI_LAYER_READY ||
                       ws->base.state == SBUSI_LAYER_CLOSING)) {
        if (ws->rstate == R_HDR) {
            if (i == n)
                break;
            ws->hdr[ws->hdr_len++] = p[i++];
            if (ws->hdr_len == 2)
                rc = check_start(ws);
            if (rc == 0 && ws->hdr_len == ws->hdr_need && ws->hdr_len >= 2)
                rc = check_header(ws);
        } else {
            size_t k = read_payload(ws, p + i, n - i);
            i += k;
            if (ws->remaining == 0)
                rc = frame_done(ws);
            else if (k == 0)
                break; /* input ended, up is full, or no memory */
        }
    }
    if (ws->base.state == SBUSI_LAYER_CLOSED)
        i = n; /* nothing after the close matters */
    *used += i;
    if (rc < 0)
        return rc;
    return ws->base.state == SBUSI_LAYER_ERROR ? ws->base.code : 0;
}

/* ------------------------------------------------------------------ */
/* Handshake                                                           */
/* ------------------------------------------------------------------ */

static int client_check(ws_t *ws, const sbusi_http_head_t *h)
{
    char line[160], msg[300];
    sbusi_http_line_text(h, line, sizeof line);
    const char *why = NULL;
    const sbusi_http_field_t *acc = sbusi_http_find(h, "Sec-WebSocket-Accept");
    const sbusi_http_field_t *sp = sbusi_http_find(h, "Sec-WebSocket-Protocol");
    if (h->status != 101)
        return sbusi_layer_fail(&ws->base, SBUS_ECONNECTION,
                                "websocket upgrade refused: %s", line);
    if (h->minor != 1)
        why = "is not HTTP/1.1";
    else if (!sbusi_http_has_token(h, "Upgrade", "websocket", 0))
        why = "lacks \"Upgrade: websocket\"";
    else if (!sbusi_http_has_token(h, "Connection", "upgrade", 0))
        why = "lacks \"Connection: Upgrade\"";
    else if (!acc || acc->value_len != 28 || memcmp(acc->value, ws->accept, 28))
        why = "has a wrong Sec-WebSocket-Accept";
    else if (sbusi_http_find(h, "Sec-WebSocket-Extensions"))
        why = "chose an extension that was not offered";
    if (why)
        return sbusi_layer_fail(&ws->base, SBUS_ECONNECTION,
                                "websocket upgrade answer %s: %s", why, line);
    if (!sp)
        return sbusi_layer_fail(&ws->base, SBUS_ECONNECTION,
                                "websocket server did not accept subprotocol "
                                "%s: %s", ws->subprotocol, line);
    if (sp->value_len != strlen(ws->subprotocol) ||
        memcmp(sp->value, ws->subprotocol, sp->value_len)) {
        snprintf(msg, sizeof msg, "%.*s",
                 (int)(sp->value_len < 64 ? sp->value_len : 64), sp->value);
        return sbusi_layer_fail(&ws->base, SBUS_ECONNECTION,
                                "websocket server chose subprotocol '%s' "
                                "instead of %s: %s", msg, ws->subprotocol,
                                line);
    }
    return 0;
}

/* Queues an HTTP error answer for a refused upgrade and fails. */
static int refuse(ws_t *ws, int status, const char *reason, const char *why)
{
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\n%sContent-Type: text/plain\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s\n",
                     status, reason,
                     status == 426 ? "Sec-WebSocket-Version: 13\r\n" : "",
                     strlen(why) + 1, why);
    if (n > 0 && (size_t)n < sizeof head)
        put_over(&ws->base.down, head, (size_t)n);
    return sbusi_layer_fail(&ws->base, SBUS_ECONNECTION,
                            "websocket upgrade refused with %d %s: %s",
                            status, reason, why);
}

/* 1 if the target's path (query dropped) is the served path, '/' or not. */
static int path_matches(const ws_t *ws, const char *t, size_t n)
{
    const char *q = memchr(t, '?', n);
    if (q)
        n = (size_t)(q - t);
    if (n > 1 && t[n - 1] == '/')
        n--;
    return strlen(ws->path) == n && memcmp(ws->path, t, n) == 0;
}

static int key_ok(const sbusi_http_field_t *k)
{
    uint8_t raw[24];
    if (!k || k->value_len != 24 || k->value[22] != '=' || k->value[23] != '=')
        return 0;
    for (int i = 0; i < 22; i++) {
        char c = k->value[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
              (c >= '0' && c <= '9') || c == '+' || c == '/'))
            return 0;
    }
    return EVP_DecodeBlock(raw, (const unsigned char *)k->value, 24) == 18;
}

static int server_check(ws_t *ws, const sbusi_http_head_t *h)
{
    ws->target = sbusi_malloc(h->target_len + 1);
    if (!ws->target)
        return sbusi_layer_fail(&ws->base, SBUS_ENOMEM, "websocket: no memory");
    memcpy(ws->target, h->target, h->target_len);
    ws->target[h->target_len] = 0;
    const sbusi_http_field_t *key = sbusi_http_find(h, "Sec-WebSocket-Key");
    const sbusi_http_field_t *ver = sbusi_http_find(h, "Sec-WebSocket-Version");
    if (h->method_len != 3 || memcmp(h->method, "GET", 3) || h->minor < 1)
        return refuse(ws, 400, "Bad Request", "a GET over HTTP/1.1 is needed");
    if (!path_matches(ws, h->target, h->target_len))
        return refuse(ws, 404, "Not Found", "no WebSocket endpoint here");
    if (!sbusi_http_find(h, "Host"))
        return refuse(ws, 400, "Bad Request", "Host header missing");
    if (!sbusi_http_has_token(h, "Upgrade", "websocket", 0) ||
        !sbusi_http_has_token(h, "Connection", "upgrade", 0))
        return refuse(ws, 400, "Bad Request", "not a WebSocket upgrade");
    if (!ver || ver->value_len != 2 || memcmp(ver->value, "13", 2))
        return refuse(ws, 426, "Upgrade Required",
                      "Sec-WebSocket-Version 13 needed");
    if (!key_ok(key))
        return refuse(ws, 400, "Bad Request", "bad Sec-WebSocket-Key");
    if (!sbusi_http_has_token(h, "Sec-WebSocket-Protocol", ws->subprotocol, 1))
        return refuse(ws, 400, "Bad Request",
                      "subprotocol " SBUSI_WS_SUBPROTOCOL " required");
    char acc[29], head[256];
    if (sbusi_ws_accept(key->value, key->value_len, acc) < 0)
        return sbusi_layer_fail(&ws->base, SBUS_ENOMEM, "websocket: no memory");
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket"
                     "\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                     "Sec-WebSocket-Protocol: %s\r\n\r\n", acc,
                     ws->subprotocol);
    if (n < 0 || (size_t)n >= sizeof head ||
        put_over(&ws->base.down, head, (size_t)n) < 0)
        return sbusi_layer_fail(&ws->base, SBUS_ENOMEM, "websocket: no memory");
    return 0;
}

static int on_head(ws_t *ws, const uint8_t *p, size_t n)
{
    sbusi_http_head_t h;
    int server = ws->role == SBUSI_WS_SERVER;
    if (sbusi_http_parse(p, n, server, &h) < 0) {
        if (server)
            return refuse(ws, 400, "Bad Request", "malformed HTTP request");
        return sbusi_layer_fail(&ws->base, SBUS_ECONNECTION,
                                "websocket: malformed answer to the upgrade "
                                "request");
    }
    int rc = server ? server_check(ws, &h) : client_check(ws, &h);
    if (rc < 0)
        return rc;
    ws->base.state = SBUSI_LAYER_READY;
    return flush_held(ws);
}

static int handshake_input(ws_t *ws, const uint8_t *p, size_t n,
                           size_t *used)
{
    size_t k = 0, head_len = 0;
    int rc = sbusi_http_reader_feed(&ws->rd, p, n, &k, &head_len);
    *used += k;
    if (rc == SBUS_ETOOBIG) {
        if (ws->role == SBUSI_WS_SERVER)
            return refuse(ws, 400, "Bad Request", "request head too large");
        return sbusi_layer_fail(&ws->base, SBUS_ECONNECTION,
                                "websocket: upgrade answer larger than %d "
                                "bytes", SBUSI_HTTP_MAX_HEAD);
    }
    if (rc < 0)
        return sbusi_layer_fail(&ws->base, rc, "websocket: no memory");
    if (rc == 0)
        return 0;
    rc = on_head(ws, sbusi_fifo_data(&ws->rd.buf), head_len);
    sbusi_http_reader_reset(&ws->rd);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Layer ops                                                           */
/* ------------------------------------------------------------------ */

static int ws_input(sbusi_layer_t *l, const uint8_t *p, size_t n,
                    size_t *used)
{
    ws_t *ws = W(l);
    *used = 0;
    if (!p) /* NULL with n == 0: no pointer arithmetic on NULL below */
        p = (const uint8_t *)"", n = 0;
    if (l->state == SBUSI_LAYER_ERROR)
        return l->code;
    if (l->state == SBUSI_LAYER_CLOSED) {
        *used = n;
        return 0;
    }
    if (l->state == SBUSI_LAYER_HANDSHAKE) {
        int rc = handshake_input(ws, p, n, used);
        if (rc < 0 || l->state == SBUSI_LAYER_HANDSHAKE)
            return rc;
    }
    if (l->state == SBUSI_LAYER_READY && sbusi_fifo_len(&ws->held) &&
        flush_held(ws) < 0)
        return l->code;
    return read_frames(ws, p + *used, n - *used, used);
}

static int ws_output(sbusi_layer_t *l, const uint8_t *p, size_t n,
                     size_t *used)
{
    ws_t *ws = W(l);
    *used = 0;
    if (l->state == SBUSI_LAYER_ERROR)
        return l->code;
    if (l->state != SBUSI_LAYER_READY && l->state != SBUSI_LAYER_HANDSHAKE)
        return SBUS_ESTATE;
    if (l->state == SBUSI_LAYER_HANDSHAKE) {
        size_t k = sbusi_fifo_room(&ws->held);
        k = k < n ? k : n;
        if (sbusi_fifo_put(&ws->held, p, k) < 0)
            return sbusi_layer_fail(l, SBUS_ENOMEM, "websocket: no memory");
        *used = k;
        return 0;
    }
    if (sbusi_fifo_len(&ws->held)) {
        if (flush_held(ws) < 0)
            return l->code;
        if (sbusi_fifo_len(&ws->held))
            return 0; /* keep the order: held bytes go first */
    }
    return put_data(ws, p, n, used);
}

int sbusi_ws_close(sbusi_layer_t *l, uint16_t code, const char *reason)
{
    ws_t *ws = W(l);
    size_t rn = reason ? strlen(reason) : 0;
    if (!close_code_ok(code) || rn > 123 ||
        (rn && !utf8_ok((const uint8_t *)reason, rn)))
        return SBUS_EINVAL;
    if (l->state == SBUSI_LAYER_ERROR)
        return l->code;
    if (l->state == SBUSI_LAYER_HANDSHAKE) {
        l->state = SBUSI_LAYER_CLOSED;
        snprintf(l->text, sizeof l->text, "websocket closed before the "
                                          "upgrade finished");
        return 0;
    }
    if (l->state != SBUSI_LAYER_READY)
        return 0;
    if (sbusi_fifo_len(&ws->held) && flush_held(ws) < 0)
        return l->code;
    int rc = put_close(ws, code, reason);
    if (rc < 0)
        return rc;
    l->state = SBUSI_LAYER_CLOSING;
    return 0;
}

static int ws_shutdown(sbusi_layer_t *l) { return sbusi_ws_close(l, 1000, NULL); }

static int ws_eof(sbusi_layer_t *l)
{
    ws_t *ws = W(l);
    switch (l->state) {
    case SBUSI_LAYER_HANDSHAKE:
        ws->sent_code = 1006;
        return sbusi_layer_fail(l, SBUS_ECONNECTION,
                                "websocket: the connection ended during the "
                                "upgrade");
    case SBUSI_LAYER_READY:
        ws->sent_code = 1006;
        return sbusi_layer_fail(l, SBUS_ECONNECTION,
                                "websocket: the connection ended without a "
                                "close frame (close code 1006)");
    case SBUSI_LAYER_CLOSING:
        l->state = SBUSI_LAYER_CLOSED;
        snprintf(l->text, sizeof l->text, "websocket: the peer ended the "
                                          "connection without a close frame");
        return 0;
    case SBUSI_LAYER_ERROR:
        return l->code;
    default:
        return 0;
    }
}

static void ws_destroy(sbusi_layer_t *l)
{
    ws_t *ws = W(l);
    sbusi_http_reader_reset(&ws->rd);
    sbusi_fifo_free(&ws->held);
    sbusi_fifo_free(&l->up);
    sbusi_fifo_free(&l->down);
    sbusi_free(ws->path);
    sbusi_free(ws->subprotocol);
    sbusi_free(ws->target);
    memset(ws->seed, 0, sizeof ws->seed);
    sbusi_free(ws);
}

static const sbusi_layer_ops_t ws_ops = {
    "websocket", ws_input, ws_output, ws_shutdown, ws_eof, ws_destroy,
};

int sbusi_ws_ping(sbusi_layer_t *l, const uint8_t *p, size_t n)
{
    if (n > 125)
        return SBUS_EINVAL;
    if (l->state != SBUSI_LAYER_READY)
        return l->state == SBUSI_LAYER_ERROR ? l->code : SBUS_ESTATE;
    return put_control(W(l), OP_PING, p, n);
}

uint16_t sbusi_ws_peer_close(const sbusi_layer_t *l, const char **reason)
{
    const ws_t *ws = (const ws_t *)l;
    if (reason)
        *reason = ws->peer_reason;
    return ws->peer_code;
}

uint16_t sbusi_ws_sent_close(const sbusi_layer_t *l)
{
    return ((const ws_t *)l)->sent_code;
}

const char *sbusi_ws_request_target(const sbusi_layer_t *l)
{
    const ws_t *ws = (const ws_t *)l;
    return ws->target ? ws->target : "";
}

/* ------------------------------------------------------------------ */
/* Creation                                                            */
/* ------------------------------------------------------------------ */

void sbusi_ws_opts_init(sbusi_ws_opts_t *o, sbusi_ws_role_t role)
{
    memset(o, 0, sizeof *o);
    o->role = role;
    o->path = role == SBUSI_WS_SERVER ? SBUSI_WS_SERVER_PATH
                                      : SBUSI_WS_CLIENT_PATH;
    o->subprotocol = SBUSI_WS_SUBPROTOCOL;
    o->max_frame = SBUSI_WS_DEFAULT_MAX_FRAME;
    o->max_message = SBUSI_WS_DEFAULT_MAX_MESSAGE;
}

static char *dup_str(const char *s, size_t n)
{
    char *d = sbusi_malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static int visible_char(char c)
{
    return (unsigned char)c > 0x20 && c != 0x7f;
}

/* 1 if s has no spaces or control bytes (they would break the head). */
static int visible(const char *s)
{
    for (; *s; s++)
        if (!visible_char(*s))
            return 0;
    return 1;
}

static int token_ok(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++)
        if (!visible_char(*s) || strchr("()<>@,;:\\\"/[]?={}", *s))
            return 0;
    return 1;
}

/* Builds the upgrade request into down and checks it parses back: that
 * rejects hosts, paths and extra headers that would break the head. */
static int put_request(ws_t *ws, const sbusi_ws_opts_t *o)
{
    char key[25];
    EVP_EncodeBlock((unsigned char *)key, o->key, 16);
    if (sbusi_ws_accept(key, 24, ws->accept) < 0)
        return SBUS_ENOMEM;
    const char *extra = o->extra_headers ? o->extra_headers : "";
    size_t cap = strlen(o->host) + strlen(o->path) + strlen(extra) +
                 strlen(ws->subprotocol) + 256;
    uint8_t *w = sbusi_fifo_reserve(&ws->base.down, cap);
    if (!w)
        return SBUS_ENOMEM;
    int n = snprintf((char *)w, cap,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s"
                     "\r\n%s\r\n", o->path, o->host, key, ws->subprotocol,
                     extra);
    if (n < 0 || (size_t)n >= cap)
        return SBUS_EINVAL;
    sbusi_http_head_t h;
    size_t next;
    if (sbusi_http_head_end(w, (size_t)n, 0, &next) != (size_t)n ||
        sbusi_http_parse(w, (size_t)n, 1, &h) < 0)
        return SBUS_EINVAL;
    sbusi_fifo_commit(&ws->base.down, (size_t)n);
    return 0;
}

static int init(ws_t *ws, const sbusi_ws_opts_t *o)
{
    const char *path = o->path ? o->path : "";
    size_t pl = strlen(path);
    if (path[0] != '/' || !visible(path))
        return SBUS_EINVAL;
    if (o->role == SBUSI_WS_SERVER && pl > 1 && path[pl - 1] == '/')
        pl--;
    ws->path = dup_str(path, pl);
    ws->subprotocol = dup_str(o->subprotocol, strlen(o->subprotocol));
    if (!ws->path || !ws->subprotocol)
        return SBUS_ENOMEM;
    if (o->role == SBUSI_WS_CLIENT) {
        if (!o->host || !*o->host || !visible(o->host))
            return SBUS_EINVAL;
        int rc = put_request(ws, o);
        if (rc < 0)
            return rc;
    }
    ws->base.up.max = ws->base.down.max = ws->held.max = o->buf_max;
    return 0;
}

int sbusi_ws_new(const sbusi_ws_opts_t *o, sbusi_layer_t **out)
{
    *out = NULL;
    if (!o || !token_ok(o->subprotocol) ||
        (o->buf_max && o->buf_max < SBUSI_WS_MIN_BUF) ||
        (o->role != SBUSI_WS_CLIENT && o->role != SBUSI_WS_SERVER))
        return SBUS_EINVAL;
    ws_t *ws = sbusi_malloc(sizeof *ws);
    if (!ws)
        return SBUS_ENOMEM;
    memset(ws, 0, sizeof *ws);
    ws->base.ops = &ws_ops;
    ws->role = o->role;
    ws->rng = o->rng;
    ws->rng_ctx = o->rng_ctx;
    memcpy(ws->seed, o->mask_seed, 16);
    ws->max_frame = o->max_frame ? o->max_frame : SBUSI_WS_DEFAULT_MAX_FRAME;
    ws->max_message = o->max_message ? o->max_message
                                     : SBUSI_WS_DEFAULT_MAX_MESSAGE;
    ws->out_fragment = o->out_fragment;
    ws->hdr_need = 2;
    int rc = init(ws, o);
    if (rc < 0) {
        ws_destroy(&ws->base);
        return rc;
    }
    *out = &ws->base;
    return 0;
}
