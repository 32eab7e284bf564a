/*
 * emu_fixture.c - see emu_fixture.h.
 */
#define _POSIX_C_SOURCE 200809L
#include "emu_fixture.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
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

int emu_start(emu_t *e)
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
        execl(emulator_path(), "sbus-emulator", "--config", cfg, "--host",
              "127.0.0.1", "--amqp-port", "0", (char *)NULL);
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
        waitpid(e->pid, NULL, 0);
    }
    e->pid = 0;
}

int client_open(client_t *cl, const char *cs)
{
    memset(cl, 0, sizeof *cl);
    sbus_conn_options_t o;
    sbus_conn_options_init(&o);
    o.connection_string = cs;
    o.operation_timeout_ms = 10000;
    o.trace = getenv("SBUS_TRACE") != NULL;
    char err[256];
    if (sbus_conn_new(&cl->c, &o, err, sizeof err) < 0) {
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

void client_close(client_t *cl)
{
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

int wait_done(client_t *cl, void *token, done_t *d, int64_t timeout_ms)
{
    memset(d, 0, sizeof *d);
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
                for (size_t i = 0; i < ev.count && ev.messages; i++)
                    sbus_message_free(ev.messages[i]);
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
