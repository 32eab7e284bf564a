/*
 * io.c - the optional POSIX driver for a connection (see <sbus/io.h>).
 *
 * It answers the engine's SBUS_EV_CONNECT (getaddrinfo, a non-blocking
 * connect tried address by address) and SBUS_EV_DISCONNECT (flush what it
 * can, close), moves bytes between one socket and the engine, and ticks
 * the engine with CLOCK_MONOTONIC and the wall clock. Every other event is
 * left queued in the connection for the caller, who pulls it with
 * sbus_io_next_event(). Two ways to run it: sbus_io_wait() blocks in
 * poll(); the step API lets an outside loop watch the descriptor.
 */
#define _POSIX_C_SOURCE 200809L
#include <sbus/io.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct sbus_io {
    sbus_conn_t *c;          /* the connection (borrowed) */
    int fd;                  /* socket, -1 when none */
    int connecting;          /* non-blocking connect in progress */
    struct addrinfo *ai;     /* resolved addresses (owned) */
    struct addrinfo *ai_cur; /* the one being tried */
    int64_t deadline;        /* engine's next deadline (mono ms), -1 none */
    int blocked;             /* the socket refused bytes: wait for POLLOUT */
    void (*close_hook)(void *ud, int fd); /* called before each close */
    void *close_ud;          /* its argument */
    char why[160];           /* last socket error text */
};

int64_t sbus_io_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t sbus_io_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void tick(sbus_io_t *io);

int sbus_io_new(sbus_conn_t *c, sbus_io_t **out)
{
    if (!c || !out)
        return SBUS_EINVAL;
    sbus_io_t *io = calloc(1, sizeof *io);
    if (!io)
        return SBUS_ENOMEM;
    io->c = c;
    io->fd = -1;
    io->deadline = -1;
    *out = io;
    tick(io); /* the engine learns the time before any operation starts */
    return 0;
}

void sbus_io_set_close_hook(sbus_io_t *io, void (*fn)(void *ud, int fd),
                            void *ud)
{
    if (!io)
        return;
    io->close_hook = fn;
    io->close_ud = ud;
}

/* Closes fd, telling the hook first. */
static void close_fd(sbus_io_t *io, int fd)
{
    if (io->close_hook)
        io->close_hook(io->close_ud, fd);
    close(fd);
}

static void close_socket(sbus_io_t *io)
{
    if (io->fd >= 0)
        close_fd(io, io->fd);
    io->fd = -1;
    io->connecting = 0;
    io->blocked = 0;
    if (io->ai)
        freeaddrinfo(io->ai);
    io->ai = io->ai_cur = NULL;
}

void sbus_io_free(sbus_io_t *io)
{
    if (!io)
        return;
    close_socket(io);
    free(io);
}

static void tick(sbus_io_t *io)
{
    io->deadline = sbus_conn_tick(io->c, sbus_io_mono_ms(), sbus_io_unix_ms());
}

/* Starts connecting to the current address; moves on when it fails at
 * once. Returns 0 while an attempt is under way or done, -1 when none is
 * left. */
static int try_connect(sbus_io_t *io)
{
    for (; io->ai_cur; io->ai_cur = io->ai_cur->ai_next) {
        struct addrinfo *a = io->ai_cur;
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC,
                        a->ai_protocol);
        if (fd < 0)
            continue;
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            io->fd = fd;
            io->connecting = 0;
            sbus_conn_transport_up(io->c);
            return 0;
        }
        if (errno == EINPROGRESS) {
            io->fd = fd;
            io->connecting = 1;
            return 0;
        }
        snprintf(io->why, sizeof io->why, "connect: %s", strerror(errno));
        close(fd); /* never handed out: no hook */
    }
    return -1;
}

static void on_connect(sbus_io_t *io, const char *host, int port)
{
    close_socket(io);
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {0};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, ps, &hints, &io->ai);
    if (rc != 0) {
        io->ai = NULL;
        snprintf(io->why, sizeof io->why, "cannot resolve %s: %s", host,
                 gai_strerror(rc));
        sbus_conn_transport_down(io->c, io->why);
        return;
    }
    io->ai_cur = io->ai;
    if (try_connect(io) < 0) {
        close_socket(io);
        sbus_conn_transport_down(io->c, io->why);
    }
}

/* Writes what the engine has; 0, or -1 if the socket failed. */
static int flush(sbus_io_t *io)
{
    while (io->fd >= 0 && !io->connecting) {
        size_t len;
        const uint8_t *p = sbus_conn_write_buffer(io->c, &len);
        if (!len)
            return 0;
        ssize_t n = send(io->fd, p, len, MSG_NOSIGNAL);
        io->blocked = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return 0;
            snprintf(io->why, sizeof io->why, "send: %s", strerror(errno));
            return -1;
        }
        sbus_conn_write_done(io->c, (size_t)n);
    }
    return 0;
}

static void on_disconnect(sbus_io_t *io)
{
    flush(io);
    close_socket(io);
}

/* Handles CONNECT/DISCONNECT at the head of the queue; 1 if a caller
 * event is waiting. */
static int handle_internal(sbus_io_t *io)
{
    for (;;) {
        sbus_event_type_t t = sbus_conn_peek_event(io->c);
        if (t != SBUS_EV_CONNECT && t != SBUS_EV_DISCONNECT)
            return t != SBUS_EV_NONE;
        sbus_event_t ev;
        sbus_conn_next_event(io->c, &ev);
        if (t == SBUS_EV_CONNECT)
            on_connect(io, ev.host, ev.port);
        else
            on_disconnect(io);
    }
}

static void socket_failed(sbus_io_t *io)
{
    close_socket(io);
    sbus_conn_transport_down(io->c, io->why);
}

static void finish_connect(sbus_io_t *io)
{
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err == 0) {
        io->connecting = 0;
        sbus_conn_transport_up(io->c);
        return;
    }
    snprintf(io->why, sizeof io->why, "connect: %s", strerror(err));
    close_fd(io, io->fd);
    io->fd = -1;
    io->ai_cur = io->ai_cur ? io->ai_cur->ai_next : NULL;
    if (try_connect(io) < 0)
        socket_failed(io);
}

static void read_some(sbus_io_t *io)
{
    for (int i = 0; i < 64 && io->fd >= 0; i++) {
        size_t cap;
        uint8_t *p = sbus_conn_read_buffer(io->c, &cap);
        if (!p || !cap)
            return;
        ssize_t n = recv(io->fd, p, cap, 0);
        if (n > 0) {
            sbus_conn_read_done(io->c, (size_t)n);
            if ((size_t)n < cap)
                return; /* drained: back to poll, no EAGAIN read */
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        snprintf(io->why, sizeof io->why, "%s",
                 n == 0 ? "the peer closed the connection" : strerror(errno));
        socket_failed(io);
        return;
    }
}

int sbus_io_fd(const sbus_io_t *io) { return io ? io->fd : -1; }

/* 1 while the engine has bytes to write. Asking pulls the output of
 * operations started since the last step out of the engine (io->c is not
 * const, only the driver's own fields are). */
static int output_pending(const sbus_io_t *io)
{
    size_t len = 0;
    sbus_conn_write_buffer(io->c, &len);
    return len > 0;
}

/* POLLOUT while the socket refused bytes or the engine has bytes waiting:
 * an operation started outside step() (no write per operation) wakes a
 * step host through the descriptor it already watches. */
static int poll_events(const sbus_io_t *io, int ask_engine)
{
    if (!io || io->fd < 0)
        return 0;
    if (io->connecting)
        return POLLOUT;
    if (io->blocked || (ask_engine && output_pending(io)))
        return POLLIN | POLLOUT;
    return POLLIN;
}

int sbus_io_events(const sbus_io_t *io) { return poll_events(io, 1); }

/* Ticks the engine first (an operation started since the last step may
 * have brought its deadline forward); 0 while events are queued (step()
 * answers CONNECT/DISCONNECT, the caller pulls the others). */
int64_t sbus_io_timeout(const sbus_io_t *io)
{
    if (!io)
        return -1;
    int64_t now = sbus_io_mono_ms();
    int64_t deadline = sbus_conn_tick(io->c, now, sbus_io_unix_ms());
    sbus_event_type_t t = sbus_conn_peek_event(io->c);
    if (t != SBUS_EV_NONE)
        return 0; /* CONNECT/DISCONNECT for step() or events to pull */
    if (deadline < 0)
        return -1;
    return deadline > now ? deadline - now : 0;
}

/* One round of non-blocking work, with poll results in `revents`. */
static int step(sbus_io_t *io, int revents)
{
    tick(io);
    handle_internal(io);
    if (io->fd >= 0 && io->connecting && (revents & (POLLOUT | POLLERR | POLLHUP)))
        finish_connect(io);
    if (io->fd >= 0 && !io->connecting && (revents & (POLLIN | POLLERR | POLLHUP)))
        read_some(io);
    handle_internal(io);
    if (flush(io) < 0)
        socket_failed(io);
    tick(io); /* the work above may have moved the deadline */
    if (flush(io) < 0)
        socket_failed(io);
    return handle_internal(io);
}

int sbus_io_flush(sbus_io_t *io)
{
    if (!io)
        return SBUS_EINVAL;
    if (io->fd < 0 || io->connecting || io->blocked)
        return 0; /* step() writes once the socket can take it */
    if (flush(io) < 0)
        socket_failed(io); /* the engine learns it; events follow */
    return 0;
}

int sbus_io_step(sbus_io_t *io)
{
    if (!io)
        return SBUS_EINVAL;
    int revents = 0;
    if (io->fd >= 0) {
        struct pollfd p = {io->fd, (short)poll_events(io, 0), 0};
        if (poll(&p, 1, 0) > 0)
            revents = p.revents;
    }
    return step(io, revents);
}

int sbus_io_wait(sbus_io_t *io, int64_t timeout_ms)
{
    if (!io)
        return SBUS_EINVAL;
    int64_t end = timeout_ms < 0 ? -1 : sbus_io_mono_ms() + timeout_ms;
    int revents = 0;
    for (;;) {
        if (step(io, revents))
            return 1;
        int64_t now = sbus_io_mono_ms();
        if (end >= 0 && now >= end)
            return 0;
        int64_t wait = io->deadline < 0 ? -1 : io->deadline - now;
        if (end >= 0 && (wait < 0 || end - now < wait))
            wait = end - now;
        if (wait < 0 && io->fd < 0 && sbus_conn_peek_event(io->c) == SBUS_EV_NONE &&
            end < 0)
            wait = 1000; /* nothing to wait for: do not hang forever */
        if (wait > 0x7fffffff)
            wait = 0x7fffffff;
        /* step() just flushed: POLLOUT only if the socket refused bytes */
        struct pollfd p = {io->fd, (short)poll_events(io, 0), 0};
        int n = poll(io->fd >= 0 ? &p : NULL, io->fd >= 0 ? 1 : 0,
                     wait < 0 ? -1 : (int)wait);
        revents = n > 0 ? p.revents : 0;
    }
}

int sbus_io_next_event(sbus_io_t *io, sbus_event_t *ev)
{
    if (!io || !ev)
        return 0;
    handle_internal(io);
    if (sbus_conn_peek_event(io->c) == SBUS_EV_NONE)
        return 0;
    return sbus_conn_next_event(io->c, ev);
}
