/*
 * main.c: the sbus-emulator command line and its run loop.
 *
 *   sbus-emulator --config FILE [--host 127.0.0.1] [--amqp-port N] [--amqps-port N]
 *                 [--ws-port N] [--wss-port N] [--control-port N] [--tls-cert PEM --tls-key PEM] [--state-dir DIR]
 *                 [--max-message-size BYTES] [--cbs-timeout-ms MS] [--exit-on-stdin-eof]
 *                 [--link-idle-ms MS] [--connection-idle-ms MS] [--connection-no-link-ms MS]
 *                 [--allow-jwt] [--verbose]
 *
 * The amqp listener defaults to 5672 (use --amqp-port -1 to switch it off);
 * amqps, ws, wss and control are off unless their port is given; port 0
 * picks a free one. When every listener is up, exactly one line is printed on stdout:
 *   sbus-emulator ready amqp=H:P amqps=H:P [ws=H:P wss=H:P] control=H:P ca=/path/ca.pem
 * Exit codes: 0 after SIGINT/SIGTERM, 2 for an invalid config or usage, 1
 * for start-up failures (ports, certificates).
 */
#include "certgen.h"
#include "config.h"
#include "net.h"
#include "admin.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile sig_atomic_t stop_flag;
static int stop_pipe[2] = {-1, -1};

/* SIGINT/SIGTERM: set the flag and wake poll() through the pipe, so that a signal that
 * lands after the loop checked the flag but before it entered poll() is not lost (poll
 * would otherwise sleep until its next deadline, up to a minute or for ever). */
static void on_signal(int sig)
{
  (void)sig;
  int saved = errno;
  stop_flag = 1;
  if (stop_pipe[1] >= 0) {
    ssize_t w = write(stop_pipe[1], "x", 1); /* non-blocking: a full pipe already wakes poll */
    (void)w;
  }
  errno = saved;
}

static int make_stop_pipe(void)
{
  if (pipe(stop_pipe) != 0) return -1;
  for (int i = 0; i < 2; i++) {
    fcntl(stop_pipe[i], F_SETFL, fcntl(stop_pipe[i], F_GETFL) | O_NONBLOCK);
    fcntl(stop_pipe[i], F_SETFD, FD_CLOEXEC);
  }
  return 0;
}

/* Parsed command line. */
typedef struct args {
  const char *config;     /* --config */
  const char *host;       /* --host */
  int amqp, amqps, ctl;   /* ports; -1 = off */
  int ws, wss;            /* WebSocket ports; -1 = off */
  const char *cert, *key; /* --tls-cert, --tls-key */
  const char *state_dir;  /* --state-dir */
  bool watch_stdin;       /* --exit-on-stdin-eof */
  emu_options_t opt;      /* broker options */
} args_t;

static void usage(void)
{
  fprintf(stderr, "usage: sbus-emulator --config FILE [--host 127.0.0.1] [--amqp-port N] [--amqps-port N]\n"
                  "                     [--ws-port N] [--wss-port N] [--control-port N]\n"
                  "                     [--tls-cert PEM --tls-key PEM] [--state-dir DIR]\n"
                  "                     [--max-message-size BYTES] [--cbs-timeout-ms MS] [--exit-on-stdin-eof]\n"
                  "                     [--link-idle-ms MS] [--connection-idle-ms MS] [--connection-no-link-ms MS]\n"
                  "                     [--allow-jwt] [--verbose]\n");
}

/* A non-negative duration in ms; 0 means off. */
static int ms_arg(const char *opt, const char *v, int64_t *out)
{
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (errno || end == v || *end || x < 0) {
    fprintf(stderr, "sbus-emulator: %s needs a number of milliseconds >= 0 (0 = off), not '%s'\n", opt, v);
    return -1;
  }
  *out = x;
  return 0;
}

static int parse_args(int argc, char **argv, args_t *a)
{
  memset(a, 0, sizeof *a);
  a->host = "127.0.0.1";
  a->amqp = 5672;
  a->amqps = a->ctl = a->ws = a->wss = -1;
  /* the service's idle timers (protocol.md §1.6); 0 switches one off */
  a->opt.link_idle_ms = 600000;
  a->opt.conn_idle_ms = 300000;
  a->opt.conn_no_link_ms = 60000;
  for (int i = 1; i < argc; i++) {
    const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(o, "--verbose") || !strcmp(o, "-v")) { a->opt.verbose++; continue; }
    if (!strcmp(o, "--help") || !strcmp(o, "-h")) { usage(); exit(0); }
    if (!strcmp(o, "--exit-on-stdin-eof")) { a->watch_stdin = true; continue; }
    if (!strcmp(o, "--allow-jwt")) { a->opt.allow_jwt = true; continue; }
    if (!v) { fprintf(stderr, "sbus-emulator: %s needs a value\n", o); return -1; }
    i++;
    if (!strcmp(o, "--config")) a->config = v;
    else if (!strcmp(o, "--host")) a->host = v;
    else if (!strcmp(o, "--amqp-port")) a->amqp = atoi(v);
    else if (!strcmp(o, "--amqps-port")) a->amqps = atoi(v);
    else if (!strcmp(o, "--control-port")) a->ctl = atoi(v);
    else if (!strcmp(o, "--ws-port")) a->ws = atoi(v);
    else if (!strcmp(o, "--wss-port")) a->wss = atoi(v);
    else if (!strcmp(o, "--tls-cert")) a->cert = v;
    else if (!strcmp(o, "--tls-key")) a->key = v;
    else if (!strcmp(o, "--state-dir")) a->state_dir = v;
    else if (!strcmp(o, "--max-message-size")) a->opt.max_message_size = strtoull(v, NULL, 10);
    else if (!strcmp(o, "--cbs-timeout-ms")) a->opt.cbs_timeout_ms = strtoll(v, NULL, 10);
    else if (!strcmp(o, "--link-idle-ms")) { if (ms_arg(o, v, &a->opt.link_idle_ms)) return -1; }
    else if (!strcmp(o, "--connection-idle-ms")) { if (ms_arg(o, v, &a->opt.conn_idle_ms)) return -1; }
    else if (!strcmp(o, "--connection-no-link-ms")) { if (ms_arg(o, v, &a->opt.conn_no_link_ms)) return -1; }
    else { fprintf(stderr, "sbus-emulator: unknown option %s\n", o); return -1; }
  }
  if (!a->config) { fprintf(stderr, "sbus-emulator: --config FILE is required\n"); return -1; }
  if (!a->cert != !a->key) { fprintf(stderr, "sbus-emulator: --tls-cert and --tls-key go together\n"); return -1; }
  return 0;
}

static sbusi_tls_ctx_t *make_tls(const args_t *a, char *ca, size_t calen)
{
  char err[512];
  emu_certs_t certs;
  sbusi_tls_options_t o;
  sbusi_tls_options_init(&o);
  o.server = true;
  if (a->cert) {
    o.cert_file = a->cert;
    o.key_file = a->key;
    snprintf(ca, calen, "%s", a->cert);
  } else {
    char dir[1024];
    if (a->state_dir) {
      snprintf(dir, sizeof dir, "%s", a->state_dir);
      mkdir(dir, 0700);
    } else {
      snprintf(dir, sizeof dir, "%s/sbus-emulator-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
      if (!mkdtemp(dir)) {
        fprintf(stderr, "sbus-emulator: cannot create a state directory: %s\n", strerror(errno));
        return NULL;
      }
    }
    if (emu_certgen(dir, a->host, &certs, err, sizeof err) != 0) {
      fprintf(stderr, "sbus-emulator: %s\n", err);
      return NULL;
    }
    o.cert_file = certs.cert;
    o.key_file = certs.key;
    snprintf(ca, calen, "%s", certs.ca);
  }
  sbusi_tls_ctx_t *ctx = sbusi_tls_ctx_new(&o, err, sizeof err);
  if (!ctx) fprintf(stderr, "sbus-emulator: TLS: %s\n", err);
  return ctx;
}

static int start_listeners(emu_net_t *n, const args_t *a, char *line, size_t len, const char *ca)
{
  const int ports[5] = {a->amqp, a->amqps, a->ws, a->wss, a->ctl};
  const char *names[5] = {"amqp", "amqps", "ws", "wss", "control"};
  const emu_net_kind_t kinds[5] = {NET_AMQP, NET_AMQPS, NET_WS, NET_WSS, NET_CONTROL};
  size_t k = (size_t)snprintf(line, len, "sbus-emulator ready");
  for (int i = 0; i < 5; i++) {
    if (ports[i] < 0) continue;
    char err[512];
    int bound = 0;
    if (emu_net_listen(n, kinds[i], a->host, ports[i], &bound, err, sizeof err) != 0) {
      fprintf(stderr, "sbus-emulator: %s\n", err);
      return -1;
    }
    k += (size_t)snprintf(line + k, len - k, " %s=%s:%d", names[i], a->host, bound);
  }
  if (ca[0]) snprintf(line + k, len - k, " ca=%s", ca);
  return 0;
}

int main(int argc, char **argv)
{
  args_t a;
  char err[2048], ca[1024] = "", line[4096];
  int rc = 1;
  if (parse_args(argc, argv, &a) != 0) {
    usage();
    return 2;
  }
  emu_broker_t *b = emu_broker_new(&a.opt);
  if (emu_config_load(b, a.config, err, sizeof err) != 0) {
    fprintf(stderr, "sbus-emulator: invalid config: %s\n", err);
    emu_broker_free(b);
    return 2;
  }
  sbusi_tls_ctx_t *tls = NULL;
  if ((a.amqps >= 0 || a.wss >= 0) && !(tls = make_tls(&a, ca, sizeof ca))) goto out;
  emu_net_t *n = emu_net_new(b, tls);
  if (start_listeners(n, &a, line, sizeof line, ca) != 0) {
    emu_net_free(n);
    goto out;
  }
  if (make_stop_pipe() != 0) {
    fprintf(stderr, "sbus-emulator: pipe: %s\n", strerror(errno));
    emu_net_free(n);
    goto out;
  }
  emu_net_stop_fd(n, stop_pipe[0]);
  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
  printf("%s\n", line);
  fflush(stdout);
  if (a.watch_stdin) emu_net_watch(n, 0);
  while (!stop_flag && !emu_net_stopped(n)) emu_net_step(n);
  emu_net_free(n);
  rc = 0;
out:
  for (int i = 0; i < 2; i++)
    if (stop_pipe[i] >= 0) close(stop_pipe[i]);
  sbusi_tls_ctx_free(tls);
  emu_admin_free(b);
  emu_broker_free(b);
  return rc;
}
