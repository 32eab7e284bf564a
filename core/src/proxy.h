/*
 * proxy.h - the HTTP CONNECT tunnel layer, and the HTTP/1.x head parser it
 * shares with the WebSocket handshake (ws.c).
 *
 * The tunnel (design.md: the bottom layer, right above the wire) asks an
 * HTTP proxy to open a byte stream to host:port, optionally with basic
 * authentication, then gets out of the way:
 *
 *     sbusi_proxy_opts_t o;
 *     sbusi_proxy_opts_init(&o);
 *     o.host = "ns.servicebus.windows.net"; o.port = 443;
 *     o.username = "u"; o.password = "p";          (optional, both or none)
 *     sbusi_layer_t *l;
 *     sbusi_proxy_new(&o, &l);    l->down now holds the CONNECT request
 *
 * The host connects its socket to the proxy (not to host:port), writes
 * l->down, and feeds whatever the proxy answers into sbusi_layer_input().
 * On "HTTP/1.x 200" the layer becomes READY; bytes that came after the
 * answer's head, and everything later, pass up unchanged; output() passes
 * down unchanged (bytes offered before READY are held and sent after). Any
 * other status fails with SBUS_EPROXY and a text that names the proxy's
 * status line, e.g. "proxy refused CONNECT: HTTP/1.1 407 Proxy
 * Authentication Required (check the proxy user name and password)" (the
 * hint is added to 407 and 401: tinyproxy answers wrong credentials with
 * 401). Interim 1xx answers are skipped. A head larger
 * than SBUSI_HTTP_MAX_HEAD or malformed fails with SBUS_EPROXY too. The
 * end of the stream before an answer fails with SBUS_ECONNECTION.
 *
 * The password is used once, to build the request; the request's bytes are
 * wiped when the layer is freed.
 */
#ifndef SBUS_PROXY_H
#define SBUS_PROXY_H

#include "layer.h"

/* ------------------------------------------------------------------ */
/* HTTP/1.x heads                                                      */
/* ------------------------------------------------------------------ */

#define SBUSI_HTTP_MAX_HEAD 16384  /* bytes in a head, terminator included */
#define SBUSI_HTTP_MAX_HEADERS 64  /* header fields in a head */

/* One header field. Pointers borrow the parsed bytes. */
typedef struct sbusi_http_field {
    const char *name;  /* field name, not NUL-terminated */
    size_t name_len;   /* its length */
    const char *value; /* value without surrounding whitespace */
    size_t value_len;  /* its length (may be 0) */
} sbusi_http_field_t;

/*
 * A parsed request or response head. All pointers borrow the bytes given
 * to the parser, which must outlive the struct's use.
 */
typedef struct sbusi_http_head {
    const char *line;   /* first line without its line ending */
    size_t line_len;    /* its length */
    int minor;          /* HTTP/1.<minor> */
    int status;         /* response: 100..999; request: 0 */
    const char *method; /* request: method token; response: NULL */
    size_t method_len;  /* its length */
    const char *target; /* request: request-target; response: NULL */
    size_t target_len;  /* its length */
    size_t nfields;     /* header fields used in `fields` */
    sbusi_http_field_t fields[SBUSI_HTTP_MAX_HEADERS]; /* in wire order */
} sbusi_http_head_t;

/*
 * Finds the end of a head in p[0..n): returns the head's length including
 * its empty line, or 0 if it is not complete yet. `from` is where a
 * previous call on a prefix of the same bytes stopped (*next is set for the
 * next call), so feeding a byte at a time stays linear. Lines end in CRLF
 * or a bare LF.
 */
size_t sbusi_http_head_end(const uint8_t *p, size_t n, size_t from,
                           size_t *next);

/*
 * Parses a complete head p[0..n) (n as sbusi_http_head_end returned) as a
 * response (is_request 0: "HTTP/1.x SSS reason") or a request ("METHOD
 * target HTTP/1.x"). 0, or SBUS_EINVAL for anything malformed: bad start
 * line, field without a colon, whitespace before the colon, obsolete line
 * folding, control characters, more than SBUSI_HTTP_MAX_HEADERS fields.
 */
int sbusi_http_parse(const uint8_t *p, size_t n, int is_request,
                     sbusi_http_head_t *h);

/* The first field named `name` (case-insensitive), or NULL. */
const sbusi_http_field_t *sbusi_http_find(const sbusi_http_head_t *h,
                                          const char *name);

/*
 * 1 if any field named `name` holds `token` in its comma-separated list
 * (tokens compared case-insensitively unless case_sensitive), else 0.
 */
int sbusi_http_has_token(const sbusi_http_head_t *h, const char *name,
                         const char *token, int case_sensitive);

/*
 * Collects a head that arrives in pieces, bounded by SBUSI_HTTP_MAX_HEAD.
 * Zero-initialise; sbusi_http_reader_reset() frees and rearms it.
 */
typedef struct sbusi_http_reader {
    sbusi_fifo_t buf; /* bytes of the head seen so far */
    size_t scan;      /* where sbusi_http_head_end() resumes */
} sbusi_http_reader_t;

/*
 * Offers p[0..n). Returns 0 when the head is still incomplete (all of p
 * used), 1 when it is complete: its bytes are sbusi_fifo_data(&r->buf)
 * [0..*head_len) and *used says how many bytes of p belonged to it (the
 * rest is not the head's: parse it as what follows). SBUS_ETOOBIG when the
 * head outgrows SBUSI_HTTP_MAX_HEAD, SBUS_ENOMEM.
 */
int sbusi_http_reader_feed(sbusi_http_reader_t *r, const uint8_t *p,
                           size_t n, size_t *used, size_t *head_len);

void sbusi_http_reader_reset(sbusi_http_reader_t *r);

/* Copies the first line into out[0..size) with control and non-ASCII
 * bytes shown as '?', truncated to fit: safe to put in error texts. */
void sbusi_http_line_text(const sbusi_http_head_t *h, char *out, size_t size);

/* ------------------------------------------------------------------ */
/* The CONNECT tunnel                                                  */
/* ------------------------------------------------------------------ */

/* Options; sbusi_proxy_opts_init() sets the defaults. Strings are copied
 * (borrowed for the call of sbusi_proxy_new only). */
typedef struct sbusi_proxy_opts {
    const char *host;     /* where the tunnel should lead (not the proxy);
                             an IPv6 literal is bracketed for you */
    uint16_t port;        /* its port */
    const char *username; /* basic auth user (no ':'), or NULL for none */
    const char *password; /* basic auth password, or NULL */
    size_t buf_max;       /* bound of each FIFO; 0: SBUSI_FIFO_DEFAULT_MAX */
} sbusi_proxy_opts_t;

void sbusi_proxy_opts_init(sbusi_proxy_opts_t *o);

/*
 * Creates a tunnel layer whose down FIFO holds the CONNECT request.
 * *out transfers to the caller (free with sbusi_layer_free). SBUS_EINVAL
 * for a missing or malformed host (spaces, control characters), port 0, a
 * user name with ':' or control characters, or a password without a user;
 * SBUS_ENOMEM.
 */
int sbusi_proxy_new(const sbusi_proxy_opts_t *o, sbusi_layer_t **out);

/* The status code of the proxy's final answer, 0 before it came. */
int sbusi_proxy_status(const sbusi_layer_t *l);

#endif /* SBUS_PROXY_H */
