/*
 * test_emu_net.c: the socket loop, with real loopback sockets.
 *
 * Checks what in-memory tests cannot: a peer that sends a protocol header and
 * closes is cleaned up (no socket left in CLOSE-WAIT), a full AMQP close
 * releases the socket, the HTTP control surface answers /health, and a
 * signal that lands just before poll() (the stop pipe is written while the
 * loop sleeps with nothing due, so poll would wait for ever) still stops the
 * loop at once. An alarm bounds the test in case the loop would block.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net.h"

static int g_failures;
#define CHECK(c)                                                              \
  do {                                                                        \
    if (!(c)) {                                                               \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c);   \
      g_failures++;                                                           \
    }                                                                         \
  } while (0)

static int dial(int port)
{
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) return -1;
  return fd;
}

/* Step the loop until cond holds or 200 steps pass. */
#define STEP_UNTIL(n, cond)                                    \
  for (int _i = 0; _i < 200 && !(cond); _i++) emu_net_step(n)

int main(void)
{
  alarm(20);
  emu_options_t o = {0};
  emu_broker_t *b = emu_broker_new(&o);
  emu_net_t *n = emu_net_new(b, NULL);
  char err[256];
  int amqp = 0, ctl = 0;
  CHECK(emu_net_listen(n, NET_AMQP, "127.0.0.1", 0, &amqp, err, sizeof err) == 0);
  CHECK(emu_net_listen(n, NET_CONTROL, "127.0.0.1", 0, &ctl, err, sizeof err) == 0);
  /* header, answer, then the peer goes away: the socket must be closed on our side */
  int fd = dial(amqp);
  CHECK(fd >= 0);
  CHECK(write(fd, "AMQP\x03\x01\x00\x00", 8) == 8);
  STEP_UNTIL(n, emu_net_sockets(n) == 1);
  emu_net_step(n);
  char buf[512];
  ssize_t r = read(fd, buf, sizeof buf);
  CHECK(r >= 8 && memcmp(buf, "AMQP\x03\x01\x00\x00", 8) == 0);
  close(fd);
  STEP_UNTIL(n, emu_net_sockets(n) == 0);
  CHECK(emu_net_sockets(n) == 0);
  /* garbage instead of a header: answered with a header and closed by us */
  fd = dial(amqp);
  CHECK(write(fd, "GET / HTTP/1.1\r\n\r\n", 18) == 18);
  STEP_UNTIL(n, emu_net_sockets(n) == 0 && _i > 2);
  r = read(fd, buf, sizeof buf);
  CHECK(r >= 0);
  close(fd);
  STEP_UNTIL(n, emu_net_sockets(n) == 0);
  CHECK(emu_net_sockets(n) == 0);
  /* control surface */
  fd = dial(ctl);
  const char *req = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
  CHECK(write(fd, req, strlen(req)) == (ssize_t)strlen(req));
  STEP_UNTIL(n, emu_net_sockets(n) == 0 && _i > 1);
  r = read(fd, buf, sizeof buf - 1);
  buf[r > 0 ? r : 0] = 0;
  CHECK(strstr(buf, "HTTP/1.1 200") == buf);
  CHECK(strstr(buf, "{\"status\":\"healthy\"}") != NULL);
  close(fd);
  /* the stop pipe: written "by a signal handler" after the caller checked its flag */
  CHECK(emu_net_sockets(n) == 0);
  int sp[2];
  CHECK(pipe(sp) == 0);
  fcntl(sp[1], F_SETFL, O_NONBLOCK);
  emu_net_stop_fd(n, sp[0]);
  CHECK(!emu_net_stopped(n));
  CHECK(write(sp[1], "x", 1) == 1);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  emu_net_step(n); /* without the pipe this poll() has no deadline at all */
  clock_gettime(CLOCK_MONOTONIC, &t1);
  CHECK(emu_net_stopped(n));
  CHECK((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 1000);
  close(sp[0]);
  close(sp[1]);
  emu_net_free(n);
  emu_broker_free(b);
  if (g_failures) fprintf(stderr, "%d check(s) failed\n", g_failures);
  else printf("test_emu_net: all passed\n");
  return g_failures ? 1 : 0;
}
