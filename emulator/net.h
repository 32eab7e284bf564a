/*
 * net.h: listeners, sockets and the poll loop of sbus-emulator.
 */
#ifndef EMU_NET_H
#define EMU_NET_H

#include "../core/src/tls.h"
#include "emu.h"

/* Listener kinds: AMQP, AMQP over TLS, AMQP over WebSocket (plain and TLS), HTTP control. */
typedef enum { NET_AMQP, NET_AMQPS, NET_WS, NET_WSS, NET_CONTROL } emu_net_kind_t;

typedef struct emu_net emu_net_t;

emu_net_t *emu_net_new(emu_broker_t *b, sbusi_tls_ctx_t *tls);
void emu_net_free(emu_net_t *n);
/* Listen on host:port (0 = any free port); the bound port is stored in *bound. */
int emu_net_listen(emu_net_t *n, emu_net_kind_t kind, const char *host, int port, int *bound,
                   char *err, size_t errlen);
/* One iteration: timers, Proton events, output, then poll until input or the next deadline. */
void emu_net_step(emu_net_t *n);

/* Stop (emu_net_stopped) when fd reaches end of file: lets a parent's death end us. */
void emu_net_watch(emu_net_t *n, int fd);
/* Stop (emu_net_stopped) as soon as fd is readable. Give it the read end of a pipe that a
 * SIGTERM/SIGINT handler writes to: poll() then wakes for a signal whatever moment it
 * arrives, even between the caller's check of its flag and the call to poll(). */
void emu_net_stop_fd(emu_net_t *n, int fd);
bool emu_net_stopped(const emu_net_t *n);
/* Number of accepted sockets still open (tests). */
size_t emu_net_sockets(const emu_net_t *n);

/* Control surface (control.c): handle one HTTP request; returns the status code. */
int emu_control_handle(emu_broker_t *b, const char *method, const char *path, const char *body,
                       size_t blen, emu_buf_t *resp);

#endif
