/*
 * proxy.c - the HTTP CONNECT tunnel layer and the HTTP/1.x head parser.
 *
 * Three parts. First, sbusi_layer_fail(), the one helper every layer shares.
 * Second, the head parser: finding where a head ends (incrementally, so a
 * peer that sends a byte at a time costs linear work), collecting it under a
 * fixed bound, and splitting it into a start line and fields. It is strict
 * where leniency would let a hostile peer smuggle something (control bytes,
 * whitespace before a colon, obsolete line folding) and lenient where real
 * proxies differ (HTTP/1.0 answers, an empty reason phrase, bare LF line
 * endings). ws.c uses it for both sides of the WebSocket handshake. Third,
 * the tunnel itself (see proxy.h): it writes CONNECT at creation, waits for
 * the proxy's final answer, then passes bytes through untouched.
 */
#include "proxy.h"

#include <sbus/sbus.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Shared layer helper                                                 */
/* ------------------------------------------------------------------ */

int sbusi_layer_fail(sbusi_layer_t *l, int code, const char *fmt, ...)
{
    if (l->state == SBUSI_LAYER_ERROR) /* the first reason wins */
        return l->code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(l->text, sizeof l->text, fmt, ap);
    va_end(ap);
    l->state = SBUSI_LAYER_ERROR;
    l->code = code;
    return code;
}

/* ------------------------------------------------------------------ */
/* HTTP heads                                                          */
/* ------------------------------------------------------------------ */

size_t sbusi_http_head_end(const uint8_t *p, size_t n, size_t from,
                           size_t *next)
{
    for (size_t i = from; i < n; i++) {
        if (p[i] != '\n')
            continue;
        if (i >= 1 && p[i - 1] == '\n')
            return *next = i + 1, i + 1;
        if (i >= 2 && p[i - 1] == '\r' && p[i - 2] == '\n')
            return *next = i + 1, i + 1;
    }
    *next = n;
    return 0;
}

int sbusi_http_reader_feed(sbusi_http_reader_t *r, const uint8_t *p,
                           size_t n, size_t *used, size_t *head_len)
{
    r->buf.max = SBUSI_HTTP_MAX_HEAD;
    size_t prev = sbusi_fifo_len(&r->buf);
    size_t take = sbusi_fifo_room(&r->buf);
    if (take > n)
        take = n;
    if (sbusi_fifo_put(&r->buf, p, take) < 0)
        return SBUS_ENOMEM;
    size_t len = sbusi_fifo_len(&r->buf);
    size_t end = sbusi_http_head_end(sbusi_fifo_data(&r->buf), len, r->scan,
                                     &r->scan);
    if (end) {
        /* end > prev: had the head ended inside the earlier bytes, the
         * earlier call would have found it. */
        *used = end - prev;
        *head_len = end;
        return 1;
    }
    *used = take;
    return len >= SBUSI_HTTP_MAX_HEAD ? SBUS_ETOOBIG : 0;
}

void sbusi_http_reader_reset(sbusi_http_reader_t *r)
{
    sbusi_fifo_free(&r->buf);
    r->scan = 0;
}

static int is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
        (c >= 'A' && c <= 'Z'))
        return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Visible ASCII, space, tab, or obs-text: what a value or reason may hold. */
static int is_text(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int is_ows(unsigned char c) { return c == ' ' || c == '\t'; }

/* The next line of p[*pos..n): sets [*s, *e) without its line ending and
 * moves *pos past it. -1 if a bare CR sits inside or no LF ends it. */
static int next_line(const uint8_t *p, size_t n, size_t *pos, size_t *s,
                     size_t *e)
{
    const uint8_t *lf = memchr(p + *pos, '\n', n - *pos);
    if (!lf)
        return -1;
    *s = *pos;
    *e = (size_t)(lf - p);
    *pos = *e + 1;
    if (*e > *s && p[*e - 1] == '\r')
        (*e)--;
    for (size_t i = *s; i < *e; i++)
        if (p[i] == '\r' || p[i] == 0)
            return -1;
    return 0;
}

/* Parses "HTTP/1.<d>" at p[0..n); returns the digit or -1. */
static int parse_version(const char *p, size_t n)
{
    if (n != 8 || memcmp(p, "HTTP/1.", 7) != 0 || p[7] < '0' || p[7] > '9')
        return -1;
    return p[7] - '0';
}

static int parse_status_line(const char *p, size_t n, sbusi_http_head_t *h)
{
    if (n < 12 || (h->minor = parse_version(p, 8)) < 0 || p[8] != ' ')
        return -1;
    for (int i = 9; i < 12; i++)
        if (p[i] < '0' || p[i] > '9')
            return -1;
    h->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    if (h->status < 100)
        return -1;
    if (n > 12 && p[12] != ' ')
        return -1;
    for (size_t i = 12; i < n; i++)
        if (!is_text((unsigned char)p[i]))
            return -1;
    return 0;
}

static int parse_request_line(const char *p, size_t n, sbusi_http_head_t *h)
{
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i >= n || p[i] != ' ')
        return -1;
    h->method = p;
    h->method_len = i;
    size_t t = ++i;
    while (i < n && p[i] > 0x20 && p[i] != 0x7f)
        i++;
    if (i == t || i >= n || p[i] != ' ')
        return -1;
    h->target = p + t;
    h->target_len = i - t;
    h->minor = parse_version(p + i + 1, n - i - 1);
    return h->minor < 0 ? -1 : 0;
}

static int parse_field(const char *p, size_t n, sbusi_http_field_t *f)
{
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)p[i]))
        i++;
    if (i == 0 || i >= n || p[i] != ':')
        return -1;
    f->name = p;
    f->name_len = i;
    size_t s = i + 1, e = n;
    while (s < e && is_ows((unsigned char)p[s]))
        s++;
    while (e > s && is_ows((unsigned char)p[e - 1]))
        e--;
    for (size_t k = s; k < e; k++)
        if (!is_text((unsigned char)p[k]))
            return -1;
    f->value = p + s;
    f->value_len = e - s;
    return 0;
}

int sbusi_http_parse(const uint8_t *p, size_t n, int is_request,
                     sbusi_http_head_t *h)
{
    memset(h, 0, sizeof *h);
    size_t pos = 0, s, e;
    if (next_line(p, n, &pos, &s, &e) < 0)
        return SBUS_EINVAL;
    h->line = (const char *)p + s;
    h->line_len = e - s;
    int rc = is_request ? parse_request_line(h->line, h->line_len, h)
                        : parse_status_line(h->line, h->line_len, h);
    if (rc < 0)
        return SBUS_EINVAL;
    for (;;) {
        if (next_line(p, n, &pos, &s, &e) < 0)
            return SBUS_EINVAL;
        if (s == e) /* the empty line: it must be the last */
            return pos == n ? 0 : SBUS_EINVAL;
        if (h->nfields == SBUSI_HTTP_MAX_HEADERS || is_ows(p[s]))
            return SBUS_EINVAL; /* too many, or obsolete line folding */
        if (parse_field((const char *)p + s, e - s, &h->fields[h->nfields]))
            return SBUS_EINVAL;
        h->nfields++;
    }
}

static int name_is(const sbusi_http_field_t *f, const char *name)
{
    size_t n = strlen(name);
    if (f->name_len != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char a = (unsigned char)f->name[i], b = (unsigned char)name[i];
        if (a >= 'A' && a <= 'Z')
            a += 32;
        if (b >= 'A' && b <= 'Z')
            b += 32;
        if (a != b)
            return 0;
    }
    return 1;
}

const sbusi_http_field_t *sbusi_http_find(const sbusi_http_head_t *h,
                                          const char *name)
{
    for (size_t i = 0; i < h->nfields; i++)
        if (name_is(&h->fields[i], name))
            return &h->fields[i];
    return NULL;
}

static int same(const char *a, size_t n, const char *b, int case_sensitive)
{
    if (strlen(b) != n)
        return 0;
    if (case_sensitive)
        return memcmp(a, b, n) == 0;
    sbusi_http_field_t f = {a, n, NULL, 0};
    return name_is(&f, b);
}

/* 1 if the comma-separated list v[0..n) holds token. */
static int list_has(const char *v, size_t n, const char *token, int cs)
{
    size_t i = 0;
    while (i <= n) {
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (s < e && is_ows((unsigned char)v[s]))
            s++;
        while (e > s && is_ows((unsigned char)v[e - 1]))
            e--;
        if (same(v + s, e - s, token, cs))
            return 1;
        i++;
    }
    return 0;
}

int sbusi_http_has_token(const sbusi_http_head_t *h, const char *name,
                         const char *token, int case_sensitive)
{
    for (size_t i = 0; i < h->nfields; i++) {
        const sbusi_http_field_t *f = &h->fields[i];
        if (name_is(f, name) &&
            list_has(f->value, f->value_len, token, case_sensitive))
            return 1;
    }
    return 0;
}

void sbusi_http_line_text(const sbusi_http_head_t *h, char *out, size_t size)
{
    if (size == 0)
        return;
    size_t n = h->line_len < size - 1 ? h->line_len : size - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h->line[i];
        out[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    out[n] = 0;
}

/* ------------------------------------------------------------------ */
/* The CONNECT tunnel                                                  */
/* ------------------------------------------------------------------ */

typedef struct proxy {
    sbusi_layer_t base;     /* must come first: the layer callers see */
    sbusi_http_reader_t rd; /* the proxy's answer while in HANDSHAKE */
    sbusi_fifo_t held;      /* output offered before READY */
    int status;             /* status of the final answer, 0 before */
    int sent_auth;          /* 1 if the request carried credentials */
} proxy_t;

void sbusi_proxy_opts_init(sbusi_proxy_opts_t *o)
{
    memset(o, 0, sizeof *o);
}

int sbusi_proxy_status(const sbusi_layer_t *l)
{
    return ((const proxy_t *)l)->status;
}

/* Moves held output into down, as far as down's bound allows. */
static int flush_held(proxy_t *x)
{
    size_t k = sbusi_fifo_len(&x->held);
    size_t room = sbusi_fifo_room(&x->base.down);
    if (k > room)
        k = room;
    if (sbusi_fifo_put(&x->base.down, sbusi_fifo_data(&x->held), k) < 0)
        return sbusi_layer_fail(&x->base, SBUS_ENOMEM, "proxy: out of memory");
    sbusi_fifo_consume(&x->held, k);
    return 0;
}

static int pass(sbusi_layer_t *l, sbusi_fifo_t *to, const uint8_t *p,
                size_t n, size_t *used)
{
    size_t k = sbusi_fifo_room(to);
    if (k > n)
        k = n;
    if (sbusi_fifo_put(to, p, k) < 0)
        return sbusi_layer_fail(l, SBUS_ENOMEM, "proxy: out of memory");
    *used += k;
    return 0;
}

/* Acts on the proxy's complete answer head. 1: keep reading heads (1xx),
 * 0: tunnel open, <0: refused. */
static int on_answer(proxy_t *x, const uint8_t *p, size_t n)
{
    sbusi_http_head_t h;
    if (sbusi_http_parse(p, n, 0, &h) < 0)
        return sbusi_layer_fail(&x->base, SBUS_EPROXY,
                                "proxy sent a malformed answer to CONNECT");
    char line[160];
    sbusi_http_line_text(&h, line, sizeof line);
    if (h.status >= 100 && h.status < 200 && h.status != 101)
        return 1;
    x->status = h.status;
    if (h.status >= 200 && h.status < 300) {
        x->base.state = SBUSI_LAYER_READY;
        return flush_held(x);
    }
    /* 407 is the standard refusal; tinyproxy 1.11 answers wrong
     * credentials with 401, so both get the credentials hint. */
    if (h.status == 407 || h.status == 401)
        return sbusi_layer_fail(
            &x->base, SBUS_EPROXY, "proxy refused CONNECT: %s (%s)", line,
            x->sent_auth ? "check the proxy user name and password"
                         : "the proxy wants a user name and password");
    return sbusi_layer_fail(&x->base, SBUS_EPROXY,
                            "proxy refused CONNECT: %s", line);
}

static int handshake_input(proxy_t *x, const uint8_t *p, size_t n,
                           size_t *used)
{
    size_t k = 0, head_len = 0;
    int rc = sbusi_http_reader_feed(&x->rd, p, n, &k, &head_len);
    *used += k;
    if (rc == SBUS_ETOOBIG)
        return sbusi_layer_fail(&x->base, SBUS_EPROXY,
                                "proxy answer to CONNECT is larger than %d "
                                "bytes", SBUSI_HTTP_MAX_HEAD);
    if (rc < 0)
        return sbusi_layer_fail(&x->base, rc, "proxy: out of memory");
    if (rc == 0)
        return 0;
    rc = on_answer(x, sbusi_fifo_data(&x->rd.buf), head_len);
    sbusi_http_reader_reset(&x->rd);
    return rc < 0 ? rc : 0;
}

static int proxy_input(sbusi_layer_t *l, const uint8_t *p, size_t n,
                       size_t *used)
{
    proxy_t *x = (proxy_t *)l;
    *used = 0;
    if (!p) /* NULL with n == 0: no pointer arithmetic on NULL below */
        p = (const uint8_t *)"", n = 0;
    if (l->state == SBUSI_LAYER_ERROR)
        return l->code;
    if (l->state == SBUSI_LAYER_CLOSED)
        return SBUS_ESTATE;
    while (l->state == SBUSI_LAYER_HANDSHAKE && *used < n) {
        int rc = handshake_input(x, p + *used, n - *used, used);
        if (rc < 0)
            return rc;
    }
    if (l->state != SBUSI_LAYER_READY)
        return 0;
    if (sbusi_fifo_len(&x->held) && flush_held(x) < 0)
        return l->code;
    return pass(l, &l->up, p + *used, n - *used, used);
}

static int proxy_output(sbusi_layer_t *l, const uint8_t *p, size_t n,
                        size_t *used)
{
    proxy_t *x = (proxy_t *)l;
    *used = 0;
    if (l->state == SBUSI_LAYER_ERROR)
        return l->code;
    if (l->state == SBUSI_LAYER_CLOSED)
        return SBUS_ESTATE;
    if (l->state == SBUSI_LAYER_HANDSHAKE)
        return pass(l, &x->held, p, n, used);
    if (sbusi_fifo_len(&x->held)) {
        if (flush_held(x) < 0)
            return l->code;
        if (sbusi_fifo_len(&x->held)) /* keep the order: held goes first */
            return 0;
    }
    return pass(l, &l->down, p, n, used);
}

/* A tunnel has no close handshake of its own: the socket's close ends it.
 * Before the answer came, there is nothing left to wait for. */
static int proxy_shutdown(sbusi_layer_t *l)
{
    if (l->state == SBUSI_LAYER_ERROR)
        return l->code;
    if (l->state == SBUSI_LAYER_HANDSHAKE) {
        l->state = SBUSI_LAYER_CLOSED;
        snprintf(l->text, sizeof l->text, "proxy: closed before the answer");
    }
    return 0;
}

static int proxy_eof(sbusi_layer_t *l)
{
    if (l->state == SBUSI_LAYER_ERROR)
        return l->code;
    if (l->state == SBUSI_LAYER_HANDSHAKE)
        return sbusi_layer_fail(l, SBUS_ECONNECTION,
                                "proxy closed the connection before "
                                "answering CONNECT");
    l->state = SBUSI_LAYER_CLOSED;
    snprintf(l->text, sizeof l->text, "proxy: the tunnel ended");
    return 0;
}

static void proxy_destroy(sbusi_layer_t *l)
{
    proxy_t *x = (proxy_t *)l;
    sbusi_http_reader_reset(&x->rd);
    sbusi_fifo_free(&x->held);
    sbusi_fifo_free(&l->up);
    sbusi_fifo_free(&l->down);
    sbusi_free(x);
}

static const sbusi_layer_ops_t proxy_ops = {
    "proxy", proxy_input, proxy_output, proxy_shutdown, proxy_eof,
    proxy_destroy,
};

/* 1 if s is a usable host: no spaces, controls or URL delimiters. */
static int host_ok(const char *s)
{
    if (!s || !*s)
        return 0;
    for (const char *c = s; *c; c++)
        if ((unsigned char)*c <= 0x20 || *c == 0x7f || strchr("/?#@", *c))
            return 0;
    return 1;
}

static int user_ok(const char *s)
{
    for (const char *c = s; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f || *c == ':')
            return 0;
    return 1;
}

/* Appends "Proxy-Authorization: Basic base64(user:pass)\r\n" to f. */
static int put_auth(sbusi_fifo_t *f, const char *user, const char *pass)
{
    size_t ul = strlen(user), pl = pass ? strlen(pass) : 0;
    size_t raw_len = ul + 1 + pl;
    size_t b64_len = 4 * ((raw_len + 2) / 3);
    uint8_t *raw = sbusi_malloc(raw_len + b64_len + 1);
    if (!raw)
        return SBUS_ENOMEM;
    uint8_t *b64 = raw + raw_len;
    memcpy(raw, user, ul);
    raw[ul] = ':';
    if (pl)
        memcpy(raw + ul + 1, pass, pl);
    EVP_EncodeBlock(b64, raw, (int)raw_len);
    static const char k[] = "Proxy-Authorization: Basic ";
    int rc = sbusi_fifo_put(f, k, sizeof k - 1) ||
             sbusi_fifo_put(f, b64, b64_len) || sbusi_fifo_put(f, "\r\n", 2);
    OPENSSL_cleanse(raw, raw_len + b64_len + 1);
    sbusi_free(raw);
    return rc ? SBUS_ENOMEM : 0;
}

static int put_request(sbusi_fifo_t *f, const sbusi_proxy_opts_t *o)
{
    int v6 = strchr(o->host, ':') && o->host[0] != '[';
    char authority[300];
    int n = snprintf(authority, sizeof authority, "%s%s%s:%u", v6 ? "[" : "",
                     o->host, v6 ? "]" : "", (unsigned)o->port);
    if (n < 0 || (size_t)n >= sizeof authority)
        return SBUS_EINVAL;
    if (sbusi_fifo_put(f, "CONNECT ", 8) ||
        sbusi_fifo_put(f, authority, (size_t)n) ||
        sbusi_fifo_put(f, " HTTP/1.1\r\nHost: ", 17) ||
        sbusi_fifo_put(f, authority, (size_t)n) ||
        sbusi_fifo_put(f, "\r\n", 2))
        return SBUS_ENOMEM;
    if (o->username) {
        int rc = put_auth(f, o->username, o->password);
        if (rc < 0)
            return rc;
    }
    return sbusi_fifo_put(f, "\r\n", 2) ? SBUS_ENOMEM : 0;
}

int sbusi_proxy_new(const sbusi_proxy_opts_t *o, sbusi_layer_t **out)
{
    *out = NULL;
    if (!o || !host_ok(o->host) || o->port == 0)
        return SBUS_EINVAL;
    if ((o->password && !o->username) || (o->username && !user_ok(o->username)))
        return SBUS_EINVAL;
    proxy_t *x = sbusi_malloc(sizeof *x);
    if (!x)
        return SBUS_ENOMEM;
    memset(x, 0, sizeof *x);
    x->base.ops = &proxy_ops;
    x->sent_auth = o->username != NULL;
    int rc = put_request(&x->base.down, o); /* under the default bound */
    if (rc < 0) {
        proxy_destroy(&x->base);
        return rc;
    }
    x->base.up.max = x->base.down.max = x->held.max = o->buf_max;
    *out = &x->base;
    return 0;
}
