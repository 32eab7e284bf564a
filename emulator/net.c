/*
 * net.c: non-blocking sockets, listeners and the single-threaded poll loop.
 *
 * Three kinds of listeners: plain AMQP, AMQP over TLS (the sans-I/O filter of
 * core/src/tls.c between the socket and Proton's driver) and the HTTP control
 * surface. A step of the loop: poll() with a timeout equal to the nearest
 * deadline (broker timers, Proton idle ticks, CBS, token expiry, delayed
 * dispositions), so an idle broker sleeps in poll and costs no CPU; read the
 * input; then fire the broker's timers, drain Proton events of every
 * connection, dispatch, move output to the sockets and close what is
 * finished. Plain input goes straight into Proton's read buffer; TLS input
 * goes through the filter and waits there while Proton's buffer is full.
 * WebSocket listeners (ws, wss) put the engine's RFC 6455 layer (core/src/
 * ws.c, server role, subprotocol AMQPWSB10 at /$servicebus/websocket)
 * between the socket (or TLS) and Proton: plaintext is staged in `wsin`,
 * offered to the layer, and the layer's payload goes to Proton.
 */
#include "net.h"

/* WebSocket support needs the engine's ws layer (core/src/ws.c, proxy.c, alloc.c); builds
 * that link only the broker files (scripts/fuzz.sh) leave SBUS_EMU_WS undefined. */
#ifdef SBUS_EMU_WS
#include "ws.h"
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <proton/connection.h>
#include <proton/transport.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_LISTENERS 8
#define HTTP_MAX 1048576

/* One accepted socket. */
typedef struct sock {
  int fd;                  /* socket */
  emu_net_kind_t kind;     /* what it speaks */
  sbusi_tls_t *tls;        /* TLS filter (NET_AMQPS, NET_WSS) */
#ifdef SBUS_EMU_WS
  sbusi_layer_t *ws;       /* WebSocket layer (NET_WS, NET_WSS) */
#else
  void *ws;                /* always NULL: built without WebSocket support */
#endif
  emu_buf_t wsin;          /* plaintext not yet accepted by the WebSocket layer */
  emu_conn_t *conn;        /* AMQP connection (NET_AMQP/S) */
  emu_buf_t out;           /* bytes waiting for the socket (TLS and HTTP) */
  emu_buf_t in;            /* HTTP request bytes */
  bool eof;                /* the peer closed its side */
  bool done;               /* close once out is flushed */
  bool tls_stalled;        /* TLS/WebSocket input waits for room in Proton's read buffer */
  struct sock *next;       /* next socket */
} sock_t;

struct emu_net {
  emu_broker_t *b;                     /* broker */
  sbusi_tls_ctx_t *tls;                /* server TLS context or NULL */
  int lfd[MAX_LISTENERS];              /* listening sockets */
  emu_net_kind_t lkind[MAX_LISTENERS]; /* their kinds */
  int nl;                              /* number of listeners */
  sock_t *socks;                       /* accepted sockets */
  struct pollfd *pfd;                  /* poll array */
  sock_t **pidx;                       /* poll slot -> socket */
  size_t pcap;                         /* capacity of both */
  int watch_fd;                        /* stop when this fd reaches EOF (-1: off) */
  int stop_fd;                         /* stop when this fd is readable (-1: off) */
  bool stopped;                        /* watch_fd reached EOF */
};

emu_net_t *emu_net_new(emu_broker_t *b, sbusi_tls_ctx_t *tls)
{
  emu_net_t *n = calloc(1, sizeof *n);
  if (!n) abort();
  n->b = b;
  n->tls = tls;
  n->watch_fd = -1;
  n->stop_fd = -1;
  return n;
}

static void sock_free(emu_net_t *n, sock_t *s)
{
  for (sock_t **pp = &n->socks; *pp; pp = &(*pp)->next) {
    if (*pp == s) {
      *pp = s->next;
      break;
    }
  }
  if (s->conn) emu_conn_free(s->conn);
  sbusi_tls_free(s->tls);
#ifdef SBUS_EMU_WS
  sbusi_layer_free(s->ws);
#endif
  buf_free(&s->wsin);
  buf_free(&s->out);
  buf_free(&s->in);
  close(s->fd);
  free(s);
}

void emu_net_free(emu_net_t *n)
{
  if (!n) return;
  while (n->socks) sock_free(n, n->socks);
  for (int i = 0; i < n->nl; i++) close(n->lfd[i]);
  free(n->pfd);
  free(n->pidx);
  free(n);
}

static void nonblock(int fd)
{
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  fcntl(fd, F_SETFD, FD_CLOEXEC);
}

int emu_net_listen(emu_net_t *n, emu_net_kind_t kind, const char *host, int port, int *bound,
                   char *err, size_t errlen)
{
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
#ifndef SBUS_EMU_WS
  if (kind == NET_WS || kind == NET_WSS) {
    snprintf(err, errlen, "this sbus-emulator was built without WebSocket support");
    return -1;
  }
#endif
  if (n->nl == MAX_LISTENERS || getaddrinfo(host, ps, &hints, &ai) != 0) {
    snprintf(err, errlen, "cannot resolve %s", host);
    return -1;
  }
  int fd = socket(ai->ai_family, SOCK_STREAM, 0), one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 128) != 0) {
    snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(errno));
    if (fd >= 0) close(fd);
    freeaddrinfo(ai);
    return -1;
  }
  freeaddrinfo(ai);
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &sl);
  *bound = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
  nonblock(fd);
  n->lfd[n->nl] = fd;
  n->lkind[n->nl++] = kind;
  return 0;
}

static void on_accept(emu_net_t *n, int lfd, emu_net_kind_t kind)
{
  for (;;) {
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) return;
    nonblock(fd);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sock_t *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->fd = fd;
    s->kind = kind;
    if (kind == NET_AMQPS || kind == NET_WSS) s->tls = sbusi_tls_new(n->tls, NULL);
#ifdef SBUS_EMU_WS
    if (kind == NET_WS || kind == NET_WSS) {
      sbusi_ws_opts_t o;
      sbusi_ws_opts_init(&o, SBUSI_WS_SERVER);
      if (sbusi_ws_new(&o, &s->ws) != 0) s->ws = NULL;
    }
#endif
    if (kind != NET_CONTROL) s->conn = emu_conn_new(n->b, s);
    s->next = n->socks;
    n->socks = s;
    static const char *names[] = {"AMQP", "TLS", "WebSocket", "secure WebSocket", "control"};
    emu_log(n->b, 1, "accepted a %s connection", names[kind]);
  }
}

/* ---------------------------------------------------------------- AMQP I/O */

#ifdef SBUS_EMU_WS
/* Bytes for the wire: through TLS when there is a filter, else into the socket buffer. */
static void wire_out(sock_t *s, const uint8_t *p, size_t n)
{
  if (!n) return;
  if (s->tls) {
    if (sbusi_tls_write(s->tls, p, n) < 0) pn_connection_driver_close(&s->conn->driver);
    return;
  }
  buf_put(&s->out, p, n);
}

/* Offer staged plaintext to the WebSocket layer, its payload to Proton, its own output to the wire. */
static void ws_pump(sock_t *s)
{
  pn_connection_driver_t *d = &s->conn->driver;
  while (s->wsin.len) {
    size_t used = 0;
    int rc = sbusi_layer_input(s->ws, s->wsin.p, s->wsin.len, &used);
    memmove(s->wsin.p, s->wsin.p + used, s->wsin.len - used);
    s->wsin.len -= used;
    if (rc < 0 || !used) break;
  }
  sbusi_fifo_t *up = &s->ws->up;
  while (sbusi_fifo_len(up)) {
    pn_rwbytes_t rb = pn_connection_driver_read_buffer(d);
    if (!rb.size) break;
    size_t k = sbusi_fifo_len(up) < rb.size ? sbusi_fifo_len(up) : rb.size;
    memcpy(rb.start, sbusi_fifo_data(up), k);
    emu_conn_read_done(s->conn, rb.start, k);
    sbusi_fifo_consume(up, k);
  }
  s->tls_stalled = sbusi_fifo_len(up) > 0 || s->wsin.len > 0; /* waiting for room in Proton */
  sbusi_fifo_t *down = &s->ws->down;
  wire_out(s, sbusi_fifo_data(down), sbusi_fifo_len(down));
  sbusi_fifo_consume(down, sbusi_fifo_len(down));
  if (s->ws->state == SBUSI_LAYER_ERROR || s->ws->state == SBUSI_LAYER_CLOSED) {
    if (s->ws->state == SBUSI_LAYER_ERROR) emu_log(s->conn->broker, 1, "WebSocket: %s", s->ws->text);
    pn_connection_driver_close(d);
  }
}

#else
static void ws_pump(sock_t *s) { (void)s; }
#endif

/* Move decrypted bytes into Proton as far as its read buffer allows (the rest stays in the filter). */
static void tls_pump_in(sock_t *s)
{
  pn_connection_driver_t *d = &s->conn->driver;
  s->tls_stalled = false;
  if (s->ws) {
    /* decrypt straight into the WebSocket layer's staging buffer */
    ssize_t r;
    do {
      if (s->wsin.len >= (1u << 20)) break;
      buf_reserve(&s->wsin, 65536);
      r = sbusi_tls_read(s->tls, s->wsin.p + s->wsin.len, 65536);
      if (r > 0) s->wsin.len += (size_t)r;
    } while (r > 0);
    bool more = s->wsin.len >= (1u << 20);
    ws_pump(s);
    s->tls_stalled = s->tls_stalled || more;
    return;
  }
  for (;;) {
    pn_rwbytes_t rb = pn_connection_driver_read_buffer(d);
    if (!rb.size) {
      s->tls_stalled = !pn_connection_driver_read_closed(d);
      return;
    }
    ssize_t r = sbusi_tls_read(s->tls, rb.start, rb.size);
    if (r > 0) {
      emu_conn_read_done(s->conn, rb.start, (size_t)r);
      continue;
    }
    if (r == SBUSI_TLS_EOF) pn_connection_driver_read_close(d);
    if (r == SBUSI_TLS_FAIL) {
      emu_log(s->conn->broker, 1, "TLS: %s", sbusi_tls_error(s->tls));
      pn_connection_driver_close(d);
    }
    return;
  }
}

/* Can this socket take input now? Plain AMQP reads straight into Proton's buffer. */
static bool wants_input(sock_t *s)
{
  if (s->eof) return false;
  if (s->kind != NET_AMQP) return s->kind != NET_WS || s->wsin.len < (1u << 20);
  /* after Proton closed its input, keep reading (and discarding) to notice the peer's EOF */
  if (pn_connection_driver_read_closed(&s->conn->driver)) return true;
  return pn_connection_driver_read_buffer(&s->conn->driver).size > 0;
}

static void on_readable(sock_t *s)
{
  unsigned char buf[65536];
  for (int rounds = 0; rounds < 16 && wants_input(s); rounds++) {
    ssize_t r;
    pn_rwbytes_t rb = {0, NULL};
    bool discard = s->kind == NET_AMQP && pn_connection_driver_read_closed(&s->conn->driver);
    unsigned char *tin = NULL; /* TLS: the filter's input queue, read into in place */
    bool staged = false;       /* WebSocket: read straight into the staging buffer */
    if (s->kind == NET_AMQP && !discard) {
      rb = pn_connection_driver_read_buffer(&s->conn->driver);
      r = recv(s->fd, rb.start, rb.size, 0);
    } else if (s->tls && (tin = sbusi_tls_feed_buffer(s->tls, sizeof buf))) {
      r = recv(s->fd, tin, sizeof buf, 0);
    } else if (s->ws && !s->tls && buf_reserve(&s->wsin, sizeof buf) == 0) {
      staged = true;
      r = recv(s->fd, s->wsin.p + s->wsin.len, sizeof buf, 0);
    } else {
      r = recv(s->fd, buf, sizeof buf, 0);
    }
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (r <= 0) {
      s->eof = true;
#ifdef SBUS_EMU_WS
      if (s->ws) sbusi_layer_eof(s->ws);
#endif
      if (s->conn) pn_connection_driver_read_close(&s->conn->driver);
      return;
    }
    if (discard) continue;
    if (s->kind == NET_CONTROL) {
      if (s->in.len + (size_t)r > HTTP_MAX) s->done = true;
      else buf_put(&s->in, buf, (size_t)r);
    } else if (s->tls) {
      int fed = tin ? sbusi_tls_feed_done(s->tls, (size_t)r) : sbusi_tls_feed(s->tls, buf, (size_t)r);
      if (fed == 0) tls_pump_in(s);
      else pn_connection_driver_close(&s->conn->driver);
    } else if (s->ws) {
      if (staged) s->wsin.len += (size_t)r;
      else buf_put(&s->wsin, buf, (size_t)r);
      ws_pump(s);
    } else {
      emu_conn_read_done(s->conn, rb.start, (size_t)r);
    }
  }
}

/* Move Proton's output into the socket (plain) or the TLS filter. */
/* Sends what the socket takes now of p[n]: the byte count (0 when it would block), or -1
 * when the peer is gone. Only for bytes with nothing waiting ahead of them in s->out. */
static ssize_t send_now(sock_t *s, const void *p, size_t n)
{
  ssize_t w = send(s->fd, p, n, MSG_NOSIGNAL);
  if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) w = 0;
  return w;
}

static void amqp_output(sock_t *s)
{
  pn_connection_driver_t *d = &s->conn->driver;
  for (;;) {
    pn_bytes_t wb = emu_conn_output(s->conn); /* Proton's output, empty lists re-encoded */
    if (!wb.size) break;
#ifdef SBUS_EMU_WS
    if (s->ws) {
      size_t used = 0;
      if (sbusi_layer_output(s->ws, (const uint8_t *)wb.start, wb.size, &used) < 0) {
        pn_connection_driver_close(d);
        return;
      }
      emu_conn_output_done(s->conn, used);
      sbusi_fifo_t *down = &s->ws->down;
      wire_out(s, sbusi_fifo_data(down), sbusi_fifo_len(down));
      sbusi_fifo_consume(down, sbusi_fifo_len(down));
      if (!used) break;
      continue;
    }
#endif
    if (s->tls) {
      if (sbusi_tls_write(s->tls, wb.start, wb.size) < 0) {
        pn_connection_driver_close(d);
        return;
      }
      emu_conn_output_done(s->conn, wb.size);
      continue;
    }
    if (s->out.len) {
      buf_put(&s->out, wb.start, wb.size);
      emu_conn_output_done(s->conn, wb.size);
      continue;
    }
    ssize_t w = send_now(s, wb.start, wb.size);
    if (w < 0) {
      pn_connection_driver_close(d);
      return;
    }
    emu_conn_output_done(s->conn, (size_t)w);
    if ((size_t)w < wb.size) break;
  }
  if (s->tls) {
    /* ciphertext goes to the socket from the filter's own queue; only what the socket
       does not take now is copied into out */
    size_t p;
    const void *data = sbusi_tls_out_data(s->tls, &p);
    if (p && !s->out.len) {
      ssize_t w = send_now(s, data, p);
      if (w < 0) {
        s->eof = true; /* as flush_out does: the peer is gone */
        sbusi_tls_out_consume(s->tls, p);
        return;
      }
      sbusi_tls_out_consume(s->tls, (size_t)w);
      data = sbusi_tls_out_data(s->tls, &p);
    }
    if (p) {
      buf_put(&s->out, data, p);
      sbusi_tls_out_consume(s->tls, p);
    }
  }
}

static void flush_out(sock_t *s)
{
  size_t off = 0;
  while (off < s->out.len) {
    ssize_t w = send(s->fd, s->out.p + off, s->out.len - off, MSG_NOSIGNAL);
    if (w <= 0) {
      if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        s->eof = true;
        s->out.len = off = 0;
      }
      break;
    }
    off += (size_t)w;
  }
  if (off) {
    memmove(s->out.p, s->out.p + off, s->out.len - off);
    s->out.len -= off;
  }
}

/* ---------------------------------------------------------------- HTTP */

static void http_respond(sock_t *s, int status, const emu_buf_t *body)
{
  const char *reason = status == 200 ? "OK" : status == 201 ? "Created" : status == 204 ? "No Content"
                     : status == 400 ? "Bad Request" : status == 404 ? "Not Found"
                     : status == 405 ? "Method Not Allowed" : status == 409 ? "Conflict" : "Error";
  char hdr[256];
  int k = snprintf(hdr, sizeof hdr,
                   "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                   status, reason, body->len);
  buf_put(&s->out, hdr, (size_t)k);
  buf_put(&s->out, body->p, body->len);
  s->done = true;
}

static void http_try(emu_net_t *n, sock_t *s)
{
  if (s->done || !s->in.len) return;
  buf_reserve(&s->in, 1);
  s->in.p[s->in.len] = 0;
  char *req = (char *)s->in.p;
  char *end = strstr(req, "\r\n\r\n");
  if (!end) return;
  size_t hlen = (size_t)(end - req) + 4, clen = 0;
  for (char *h = strstr(req, "\r\n"); h && h < end; h = strstr(h + 2, "\r\n"))
    if (strncasecmp(h + 2, "Content-Length:", 15) == 0) clen = strtoul(h + 17, NULL, 10);
  if (s->in.len < hlen + clen) return;
  char method[16] = "", path[1024] = "";
  sscanf(req, "%15s %1023s", method, path);
  emu_buf_t body = {0};
  int status = emu_control_handle(n->b, method, path, req + hlen, clen, &body);
  http_respond(s, status, &body);
  buf_free(&body);
}

/* ---------------------------------------------------------------- loop */

static void process_all(emu_net_t *n)
{
  emu_tick(n->b);
  for (sock_t *s = n->socks; s; s = s->next) {
    if (s->tls) tls_pump_in(s);
    else if (s->ws) ws_pump(s);
    if (s->conn) emu_conn_process(s->conn);
  }
  emu_dispatch_all(n->b);
  for (sock_t *s = n->socks, *next; s; s = next) {
    next = s->next;
    if (s->kind == NET_CONTROL) http_try(n, s);
    else amqp_output(s);
    flush_out(s);
    if (s->conn && s->conn->kill_at && emu_mono_ms() >= s->conn->kill_at) s->eof = true;
    bool finished = s->conn && emu_conn_finished(s->conn);
    if ((finished || s->done || s->eof) && (!s->out.len || s->eof) && (!s->conn || finished || s->eof)) {
      if (s->conn && !finished) {
        pn_connection_driver_close(&s->conn->driver);
        emu_conn_process(s->conn);
      }
      sock_free(n, s);
    }
  }
}

static int next_timeout(emu_net_t *n)
{
  int64_t mono = emu_mono_ms(), best = INT64_MAX;
  int64_t d = emu_next_deadline(n->b);
  if (d != INT64_MAX) best = d - emu_now(n->b);
  for (sock_t *s = n->socks; s; s = s->next) {
    if (!s->conn) continue;
    if (pn_connection_driver_has_event(&s->conn->driver)) return 0; /* e.g. TRANSPORT_CLOSED */
    /* decrypted input waited for room in Proton's buffer and there is room now: do not sleep */
    if (s->tls_stalled && pn_connection_driver_read_buffer(&s->conn->driver).size) return 0;
    int64_t t = pn_transport_tick(s->conn->driver.transport, mono);
    if (t > 0 && t - mono < best) best = t - mono;
    if (!s->conn->authed) {
      int64_t c = s->conn->opened_mono + n->b->opt.cbs_timeout_ms - mono + 1;
      if (c < best) best = c;
    }
    if (s->conn->kill_at && s->conn->kill_at - mono < best) best = s->conn->kill_at - mono;
    if (s->conn->tokens) {
      int64_t t = s->conn->token_check_ms - emu_utc_ms() + 1;
      if (t < best) best = t;
    }
    for (emu_delayed_t *x = s->conn->delayed; x; x = x->next)
      if (x->due_ms - mono < best) best = x->due_ms - mono;
  }
  if (best == INT64_MAX) return -1;
  if (best < 0) return 0;
  return best > 60000 ? 60000 : (int)best;
}

static void ensure_poll(emu_net_t *n, size_t need)
{
  if (need <= n->pcap) return;
  n->pcap = need * 2;
  n->pfd = realloc(n->pfd, n->pcap * sizeof *n->pfd);
  n->pidx = realloc(n->pidx, n->pcap * sizeof *n->pidx);
  if (!n->pfd || !n->pidx) abort();
}

void emu_net_watch(emu_net_t *n, int fd) { n->watch_fd = fd; }

void emu_net_stop_fd(emu_net_t *n, int fd) { n->stop_fd = fd; }

size_t emu_net_sockets(const emu_net_t *n)
{
  size_t k = 0;
  for (const sock_t *s = n->socks; s; s = s->next) k++;
  return k;
}

bool emu_net_stopped(const emu_net_t *n) { return n->stopped; }

void emu_net_step(emu_net_t *n)
{
  size_t cnt = (size_t)n->nl + 1;
  for (sock_t *s = n->socks; s; s = s->next) cnt++;
  ensure_poll(n, cnt + 2);
  size_t k = 0;
  for (int i = 0; i < n->nl; i++) {
    n->pfd[k] = (struct pollfd){.fd = n->lfd[i], .events = POLLIN};
    n->pidx[k++] = NULL;
  }
  for (sock_t *s = n->socks; s; s = s->next) {
    short ev = wants_input(s) ? POLLIN : 0;
    if (s->out.len || (s->conn && emu_conn_output_pending(s->conn))) ev |= POLLOUT;
    n->pfd[k] = (struct pollfd){.fd = s->fd, .events = ev};
    n->pidx[k++] = s;
  }
  size_t socks_end = k, watch_slot = k, stop_slot = k;
  if (n->watch_fd >= 0) n->pfd[watch_slot = k++] = (struct pollfd){.fd = n->watch_fd, .events = POLLIN};
  if (n->stop_fd >= 0) n->pfd[stop_slot = k++] = (struct pollfd){.fd = n->stop_fd, .events = POLLIN};
  int r = poll(n->pfd, k, next_timeout(n));
  if (n->stop_fd >= 0 && r > 0 && n->pfd[stop_slot].revents) {
    n->stopped = true; /* a signal: leave at once, whatever else is pending */
    return;
  }
  if (r <= 0) {
    process_all(n); /* timers, ticks */
    return;
  }
  if (n->watch_fd >= 0 && n->pfd[watch_slot].revents) {
    char tmp[256];
    ssize_t got = read(n->watch_fd, tmp, sizeof tmp);
    if (got <= 0) n->stopped = true;
  }
  k = socks_end;
  for (size_t i = 0; i < k; i++) {
    short re = n->pfd[i].revents;
    if (!re) continue;
    if (i < (size_t)n->nl) {
      on_accept(n, n->lfd[i], n->lkind[i]);
      continue;
    }
    sock_t *s = n->pidx[i];
    if (re & (POLLIN | POLLHUP | POLLERR)) on_readable(s);
    if (re & POLLOUT) {
      flush_out(s);
      if (s->conn && !s->out.len) amqp_output(s);
    }
  }
  /* react to the input at once: events, dispatch, output, closing */
  process_all(n);
}
