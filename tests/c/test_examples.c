/*
 * test_examples.c - the C examples of docs/c.md still do what the page
 * says: sbus-send sends three messages to the emulator, sbus-receive prints
 * and completes them, and a wrong key makes sbus-send fail with
 * "unauthorized". Paths of the two binaries come from CMake.
 */
#define _POSIX_C_SOURCE 200809L
#include "emu_fixture.h"

#include <stdlib.h>
#include <string.h>

static emu_t emu;

/* Runs cmd, captures up to cap-1 bytes of its stdout+stderr; exit status. */
static int run(const char *cmd, char *out, size_t cap)
{
    FILE *f = popen(cmd, "r");
    if (!f)
        return -1;
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    int st = pclose(f);
    return st;
}

int main(void)
{
    const char *send = getenv("SBUS_EXAMPLE_SEND");
    const char *recv = getenv("SBUS_EXAMPLE_RECEIVE");
    if (!send || !recv || emu_start(&emu) < 0) {
        fprintf(stderr, "examples or emulator missing\n");
        return 1;
    }
    char cmd[1024], out[4096];
    snprintf(cmd, sizeof cmd, "%s '%s' demo one two three 2>&1", send,
             emu.connstr);
    CHECK(run(cmd, out, sizeof out) == 0);
    CHECK(strstr(out, "sent 3 message(s) to demo") != NULL);
    snprintf(cmd, sizeof cmd, "%s '%s' demo 10 2000 2>&1", recv, emu.connstr);
    CHECK(run(cmd, out, sizeof out) == 0);
    CHECK(strstr(out, " one\n") && strstr(out, " two\n") &&
          strstr(out, " three\n"));
    CHECK(strstr(out, "received 3 message(s) from demo") != NULL);
    snprintf(cmd, sizeof cmd,
             "%s 'Endpoint=sb://localhost:%d;SharedAccessKeyName=Root"
             "ManageSharedAccessKey;SharedAccessKey=WRONG;"
             "UseDevelopmentEmulator=true' demo x 2>&1",
             send, emu.port);
    CHECK(run(cmd, out, sizeof out) != 0);
    CHECK(strstr(out, "unauthorized") != NULL);
    emu_stop(&emu);
    if (failures)
        fprintf(stderr, "%d failure(s)\n%s\n", failures, out);
    return failures ? 1 : 0;
}
