/*
 * fuzz_config.c - libFuzzer target for the emulator's configuration loader
 * (emulator/config.c): Microsoft's Config.json with comments, every entity
 * property, ISO-8601 durations, rules with SQL and correlation filters,
 * SharedAccessPolicies; and the same per-entity JSON that the control
 * surface's POST /entities accepts at run time.
 *
 * Build and run: scripts/fuzz.sh config (clang-14, ASan + UBSan).
 *
 * The first byte picks the entry point, the rest is the file text:
 *   even: emu_config_load() on a file holding the text (a fresh broker each
 *         time); a refusal must come with a message naming the file;
 *   odd:  emu_json_parse_commented() then, for an object, the run-time
 *         creators (queue, topic, subscription on a known topic) and the
 *         duration parser on every string value at the top level.
 */
#include "config.h"
#include "emu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ASSERT(c)                                                                \
    do {                                                                         \
        if (!(c)) {                                                              \
            fprintf(stderr, "fuzz_config: %s:%d: %s\n", __FILE__, __LINE__, #c); \
            abort();                                                             \
        }                                                                        \
    } while (0)

static char g_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    snprintf(g_path, sizeof g_path, "/tmp/fuzz_config.%d.json", (int)getpid());
    return 0;
}

static emu_broker_t *broker(void)
{
    emu_options_t o;
    memset(&o, 0, sizeof o);
    o.verbose = -1;
    return emu_broker_new(&o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int mode = data[0] & 1;
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    char err[1024];
    err[0] = 0;
    emu_broker_t *b = broker();
    if (mode == 0) {
        FILE *f = fopen(g_path, "wb");
        ASSERT(f);
        ASSERT(fwrite(text, 1, n, f) == n);
        fclose(f);
        int rc = emu_config_load(b, g_path, err, sizeof err);
        if (rc != 0)
            ASSERT(strncmp(err, g_path, strlen(g_path)) == 0 && strlen(err) > strlen(g_path) + 2);
        emu_broker_free(b);
        return 0;
    }
    char *s = malloc(n + 1);
    memcpy(s, text, n);
    s[n] = 0;
    json_t *j = emu_json_parse_commented(s, err, sizeof err);
    free(s);
    if (!j) {
        ASSERT(err[0]);
        emu_broker_free(b);
        return 0;
    }
    if (json_is_object(j)) {
        const char *k;
        json_t *v;
        json_object_foreach(j, k, v) {
            if (json_is_string(v))
                (void)emu_parse_duration(json_string_value(v));
        }
        (void)emu_config_add_queue(b, j, "Queue", err, sizeof err);
        json_t *t = json_pack("{s:s}", "Name", "fuzz-topic");
        (void)emu_config_add_topic(b, t, "Topic", err, sizeof err);
        json_decref(t);
        (void)emu_config_add_topic(b, j, "Topic", err, sizeof err);
        emu_entity_t *topic = emu_entity_find(b, "fuzz-topic");
        if (topic)
            (void)emu_config_add_subscription(b, topic, j, "Subscription", err, sizeof err);
        emu_rule_t *r = emu_rule_from_json(j, "Rule", err, sizeof err);
        if (r)
            emu_rule_free(r);
    }
    json_decref(j);
    emu_broker_free(b);
    return 0;
}
