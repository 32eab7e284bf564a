/*
 * io.h - an optional POSIX driver for an sbus_conn_t.
 *
 * For hosts that have no event loop of their own (plain Lua, C tools and
 * examples): it resolves names, connects non-blocking sockets, polls,
 * moves bytes between the socket and the engine, and ticks the engine with
 * CLOCK_MONOTONIC and the wall clock. It answers SBUS_EV_CONNECT and
 * SBUS_EV_DISCONNECT itself; every other event is handed to the caller.
 *
 * Two ways to drive it:
 *   - blocking: sbus_io_wait(io, timeout) runs the connection until at least
 *     one event is ready for the caller or the timeout passes;
 *   - step: an external loop (luv, cqueues) watches sbus_io_fd() for
 *     sbus_io_events(), wakes up no later than sbus_io_timeout(), and calls
 *     sbus_io_step(io) on every wake-up. Operations may be started at any
 *     time: they only queue bytes in the engine (no I/O per operation);
 *     re-read fd, events and timeout after starting some, and the driver
 *     asks for POLLOUT to put them on the wire at the next step.
 * In both cases, then pull events with sbus_io_next_event().
 *
 * Lifecycle: sbus_io_new(conn) ... sbus_io_free(io) (closes the socket;
 * does not free the connection). One thread.
 */
#ifndef SBUS_IO_H
#define SBUS_IO_H

#include <sbus/sbus.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sbus_io sbus_io_t;

/* Wraps c (borrowed: c must outlive io). *out transfers. */
SBUS_API int sbus_io_new(sbus_conn_t *c, sbus_io_t **out);
/* Closes the socket, if any, and frees io. */
SBUS_API void sbus_io_free(sbus_io_t *io);

/* Runs I/O and timers until an event for the caller is ready or
 * timeout_ms passes (-1: no limit). Returns 1 when an event is ready, 0 on
 * timeout, negative on misuse. */
SBUS_API int sbus_io_wait(sbus_io_t *io, int64_t timeout_ms);
/* Pulls the next caller event (CONNECT/DISCONNECT are handled inside):
 * 1 if there was one, 0 if none. The event's data is borrowed until the
 * next sbus_io_next_event(), sbus_io_wait() or sbus_io_step() (these may
 * pull CONNECT/DISCONNECT themselves); messages transfer as with
 * sbus_conn_next_event(). */
SBUS_API int sbus_io_next_event(sbus_io_t *io, sbus_event_t *ev);

/* Step API. The socket to watch, or -1 when there is none right now. */
SBUS_API int sbus_io_fd(const sbus_io_t *io);
/* Poll events wanted on that fd: POLLIN and/or POLLOUT. POLLOUT while
 * connecting, while the socket refuses bytes, and while the engine has
 * bytes to write (e.g. of operations started since the last step); asking
 * pulls those bytes out of the engine, nothing is written. */
SBUS_API int sbus_io_events(const sbus_io_t *io);
/* Milliseconds until the next deadline (-1: none); 0 while events are
 * queued in the connection. Moves the engine's clock on first, so that
 * deadlines of operations started since the last step count. */
SBUS_API int64_t sbus_io_timeout(const sbus_io_t *io);
/* Does all non-blocking work now (read, write, connect progress, timers).
 * Returns 1 if caller events are ready, else 0. */
SBUS_API int sbus_io_step(sbus_io_t *io);

/* Writes what the engine has to the socket now, without blocking, reading
 * or running timers (nothing is written while connecting or while the
 * socket refuses bytes: step() and wait() do it then). For hosts that
 * start many operations between two waits and want the first ones on the
 * wire early, so that the peer works while they start the rest. 0, or
 * negative on misuse; a socket error is reported to the engine (events
 * follow at the next step or wait). */
SBUS_API int sbus_io_flush(sbus_io_t *io);

/* Calls fn(ud, fd) just before the driver closes its socket (on
 * SBUS_EV_DISCONNECT, a socket error, a failed connect attempt, or
 * sbus_io_free), so that an outside loop that watches the descriptor
 * (cqueues, luv) can forget it first. NULL removes the hook. */
SBUS_API void sbus_io_set_close_hook(sbus_io_t *io, void (*fn)(void *ud, int fd),
                                     void *ud);

/* CLOCK_MONOTONIC in milliseconds. */
SBUS_API int64_t sbus_io_mono_ms(void);
/* The wall clock in milliseconds since the Unix epoch. */
SBUS_API int64_t sbus_io_unix_ms(void);

#ifdef __cplusplus
}
#endif
#endif /* SBUS_IO_H */
