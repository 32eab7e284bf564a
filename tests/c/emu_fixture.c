/*
 * emu_fixture.c - see emu_fixture.h.
 */
#define _POSIX_C_SOURCE 200809L
#include "emu_fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int failures;

static const char *emulator_path(void)
{
    const char *p = getenv("SBUS_EMULATOR");
    if (p && *p)
        return p;
    p = getenv("SBUS_EMULATOR_DEFAULT");
    return p && *p ? p : "sbus-emulator";
}

static int start(emu_t *e, int ws);

int emu_start(emu_t *e) { return start(e, 0); }
int emu_start_ws(emu_t *e) { return start(e, 1); }

/* The port after "key=host:" in a ready line, 0 if absent. */
static int port_of(const char *line, const char *key)
{
    const char *k = strstr(line, key);
    const char *colon = k ? strchr(k + strlen(key), ':') : NULL;
    return colon ? atoi(colon + 1) : 0;
}

static int start(emu_t *e, int ws)
{
    memset(e, 0, sizeof *e);
    const char *cfg = getenv("SBUS_EMULATOR_CONFIG");
    int fds[2];
    if (!cfg || pipe(fds) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        if (ws)
            execl(emulator_path(), "sbus-emulator", "--config", cfg, "--host",
                  "127.0.0.1", "--amqp-port", "0", "--control-port", "0",
                  "--amqps-port", "0", "--ws-port", "0", "--wss-port", "0",
                  (char *)NULL);
        else
            execl(emulator_path(), "sbus-emulator", "--config", cfg, "--host",
                  "127.0.0.1", "--amqp-port", "0", "--control-port", "0",
                  "--amqps-port", "0", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    e->pid = pid;
    FILE *f = fdopen(fds[0], "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
        char *p = strstr(line, "amqp=");
        if (strncmp(line, "sbus-emulator ready", 19) == 0 && p) {
            char *colon = strchr(p + 5, ':');
            e->port = colon ? atoi(colon + 1) : 0;
            char *ctl = strstr(line, "control=");
            char *cc = ctl ? strchr(ctl + 8, ':') : NULL;
            e->control = cc ? atoi(cc + 1) : 0;
            char *tl = strstr(line, "amqps=");
            char *tc = tl ? strchr(tl + 6, ':') : NULL;
            e->amqps = tc ? atoi(tc + 1) : 0;
            e->ws = port_of(line, " ws=");
            e->wss = port_of(line, " wss=");
            char *ca = strstr(line, "ca=");
            if (ca)
                sscanf(ca + 3, "%255s", e->ca);
            break;
        }
    }
    if (f)
        fclose(f);
    if (!e->port) {
        emu_stop(e);
        return -1;
    }
    snprintf(e->connstr, sizeof e->connstr,
             "Endpoint=sb://localhost:%d;SharedAccessKeyName="
             "RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;"
             "UseDevelopmentEmulator=true;",
             e->port);
    return 0;
}

void emu_stop(emu_t *e)
{
    if (e->pid > 0) {
        kill(e->pid, SIGTERM);
        /* SIGTERM should be enough; do not hang the suite if it is not */
        for (int i = 0; i < 200; i++) {
            if (waitpid(e->pid, NULL, WNOHANG) == e->pid) {
                e->pid = 0;
                return;
            }
            if (i % 20 == 19)
                kill(e->pid, SIGTERM);
            struct timespec ts = {0, 10000000};
            nanosleep(&ts, NULL);
        }
        fprintf(stderr, "emulator did not exit on SIGTERM; killing it\n");
        kill(e->pid, SIGKILL);
        waitpid(e->pid, NULL, 0);
    }
    e->pid = 0;
}

int emu_post(emu_t *e, const char *path, const char *json)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)e->control);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "POST %s HTTP/1.1\r\nHost: localhost\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s",
                     path, strlen(json), json);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return -1;
    }
    char resp[2048];
    ssize_t got = 0, r;
    while ((r = read(fd, resp + got, sizeof resp - 1 - (size_t)got)) > 0)
        got += r;
    close(fd);
    resp[got] = 0;
    int status = 0;
    sscanf(resp, "HTTP/1.%*d %d", &status);
    return status;
}

int client_open(client_t *cl, const char *cs)
{
    sbus_conn_options_t o;
    sbus_conn_options_init(&o);
    o.connection_string = cs;
    return client_open_opts(cl, &o);
}

int client_open_opts(client_t *cl, sbus_conn_options_t *o)
{
    memset(cl, 0, sizeof *cl);
    if (!o->operation_timeout_ms || o->operation_timeout_ms == 60000)
        o->operation_timeout_ms = 10000;
    o->trace = o->trace || getenv("SBUS_TRACE") != NULL;
    char err[256];
    if (sbus_conn_new(&cl->c, o, err, sizeof err) < 0) {
        fprintf(stderr, "conn_new: %s\n", err);
        return -1;
    }
    if (sbus_io_new(cl->c, &cl->io) < 0)
        return -1;
    static int tok;
    if (sbus_conn_open(cl->c, &tok) < 0)
        return -1;
    done_t d;
    if (wait_done(cl, &tok, &d, 10000) < 0 || d.code) {
        fprintf(stderr, "open: %s\n", d.description);
        return -1;
    }
    return 0;
}

static void stash_forget(sbus_conn_t *c);

void client_close(client_t *cl)
{
    stash_forget(cl->c);
    static int tok;
    if (cl->c && sbus_conn_close(cl->c, &tok) == 0) {
        done_t d;
        wait_done(cl, &tok, &d, 5000);
        done_clear(&d);
    }
    sbus_io_free(cl->io);
    sbus_conn_free(cl->c);
    memset(cl, 0, sizeof *cl);
}

static void copy_done(const sbus_event_t *ev, done_t *d)
{
    if (ev->error) {
        d->code = ev->error->code;
        snprintf(d->condition, sizeof d->condition, "%s",
                 ev->error->condition ? ev->error->condition : "");
        snprintf(d->description, sizeof d->description, "%s",
                 ev->error->description);
    }
    d->count = ev->count;
    if (ev->messages && ev->count) {
        d->msgs = calloc(ev->count, sizeof *d->msgs);
        memcpy(d->msgs, ev->messages, ev->count * sizeof *d->msgs);
    }
    for (size_t i = 0; ev->seqs && i < ev->count && i < 64; i++)
        d->seqs[i] = ev->seqs[i];
    d->time_ms = ev->time_ms;
    d->has_data = ev->data != NULL;
    d->len = ev->len < sizeof d->data ? ev->len : sizeof d->data - 1;
    if (ev->data)
        memcpy(d->data, ev->data, d->len);
}

/* Completions that arrived while waiting for another token. */
static struct {
    sbus_conn_t *c;  /* connection it came from */
    void *token;     /* its token */
    done_t d;        /* its copy */
} stash[32];

static int from_stash(client_t *cl, void *token, done_t *d)
{
    for (size_t i = 0; i < sizeof stash / sizeof stash[0]; i++)
        if (stash[i].token == token && stash[i].c == cl->c) {
            *d = stash[i].d;
            stash[i].token = NULL;
            return 1;
        }
    return 0;
}

static void to_stash(client_t *cl, const sbus_event_t *ev)
{
    for (size_t i = 0; i < sizeof stash / sizeof stash[0]; i++)
        if (!stash[i].token) {
            stash[i].c = cl->c;
            stash[i].token = ev->token;
            memset(&stash[i].d, 0, sizeof stash[i].d);
            copy_done(ev, &stash[i].d);
            return;
        }
    for (size_t i = 0; ev->messages && i < ev->count; i++)
        sbus_message_free(ev->messages[i]);
}

int wait_done(client_t *cl, void *token, done_t *d, int64_t timeout_ms)
{
    memset(d, 0, sizeof *d);
    if (from_stash(cl, token, d))
        return 0;
    int64_t end = sbus_io_mono_ms() + timeout_ms;
    for (;;) {
        sbus_event_t ev;
        while (sbus_io_next_event(cl->io, &ev)) {
            if (ev.type == SBUS_EV_LOG) {
                fprintf(stderr, "trace: %s\n", ev.text);
                continue;
            }
            if (ev.type == SBUS_EV_DONE && ev.token == token) {
                copy_done(&ev, d);
                return 0;
            }
            if (ev.type == SBUS_EV_DONE)
                to_stash(cl, &ev);
        }
        int64_t left = end - sbus_io_mono_ms();
        if (left <= 0) {
            snprintf(d->description, sizeof d->description, "test timeout");
            d->code = -9999;
            return -1;
        }
        sbus_io_wait(cl->io, left);
    }
}

void done_clear(done_t *d)
{
    for (size_t i = 0; d->msgs && i < d->count; i++)
        sbus_message_free(d->msgs[i]);
    free(d->msgs);
    d->msgs = NULL;
    d->count = 0;
}

int body_is(const sbus_message_t *m, const char *want)
{
    const void *p;
    size_t n;
    return sbus_message_body_at(m, 0, &p, &n) == 0 && n == strlen(want) &&
           memcmp(p, want, n) == 0;
}

int send_text(client_t *cl, sbus_sender_t *s, const char *body, const char *id)
{
    sbus_message_t *m;
    sbus_message_new(&m);
    sbus_message_set_body(m, body, strlen(body));
    if (id)
        sbus_message_set_prop(m, SBUS_PROP_MESSAGE_ID, id, strlen(id));
    static int tok;
    done_t d;
    int rc = sbus_sender_send(s, &m, 1, &tok);
    sbus_message_free(m);
    if (rc < 0)
        return rc;
    if (wait_done(cl, &tok, &d, 15000) < 0)
        return -9999;
    if (d.code)
        fprintf(stderr, "send: %s %s\n", d.condition, d.description);
    return d.code;
}

int receive_n(client_t *cl, sbus_receiver_t *r, uint32_t n, int64_t wait_ms,
              done_t *d)
{
    static int tok;
    int rc = sbus_receiver_receive(r, n, wait_ms, &tok);
    if (rc < 0) {
        memset(d, 0, sizeof *d);
        d->code = rc;
        return rc;
    }
    return wait_done(cl, &tok, d, wait_ms + 15000);
}

int settle_wait(client_t *cl, sbus_receiver_t *r, sbus_message_t *m,
                sbus_outcome_t how, const char *reason, const char *desc)
{
    static int tok;
    int rc = sbus_receiver_settle(r, m, how, reason, desc, &tok);
    if (rc < 0)
        return rc;
    done_t d;
    if (wait_done(cl, &tok, &d, 15000) < 0)
        return -9999;
    if (d.code)
        fprintf(stderr, "settle: %s %s\n", d.condition, d.description);
    return d.code;
}

void drain_queue(client_t *cl, const char *queue)
{
    sbus_receiver_options_t ro;
    sbus_receiver_options_init(&ro);
    ro.entity = queue;
    ro.mode = SBUS_RECEIVE_AND_DELETE;
    sbus_receiver_t *r;
    if (sbus_receiver_new(cl->c, &ro, &r) < 0)
        return;
    for (int i = 0; i < 100; i++) {
        done_t d;
        receive_n(cl, r, 100, 300, &d);
        size_t n = d.count;
        done_clear(&d);
        if (!n)
            break;
    }
    sbus_receiver_free(r);
}

static void stash_forget(sbus_conn_t *c)
{
    for (size_t i = 0; i < sizeof stash / sizeof stash[0]; i++)
        if (stash[i].token && stash[i].c == c) {
            done_clear(&stash[i].d);
            stash[i].token = NULL;
        }
}

sbus_sender_t *open_sender(client_t *cl, const char *entity)
{
    sbus_sender_options_t so;
    sbus_sender_options_init(&so);
    so.entity = entity;
    sbus_sender_t *s = NULL;
    return sbus_sender_new(cl->c, &so, &s) == 0 ? s : NULL;
}

sbus_receiver_t *open_receiver(client_t *cl, const char *entity,
                               sbus_receive_mode_t mode)
{
    sbus_receiver_options_t ro;
    sbus_receiver_options_init(&ro);
    ro.entity = entity;
    ro.mode = mode;
    sbus_receiver_t *r = NULL;
    return sbus_receiver_new(cl->c, &ro, &r) == 0 ? r : NULL;
}

int emu_main(emu_t *e, void (*const *tests)(void), size_t n)
{
    if (emu_start(e) < 0) {
        fprintf(stderr, "cannot start the emulator\n");
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        tests[i]();
    emu_stop(e);
    if (failures)
        fprintf(stderr, "%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
