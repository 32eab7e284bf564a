/*
 * fuzz_sql.c - libFuzzer target for the emulator's SQL filter and action
 * parser and evaluator (emulator/sql.c), which subscription rules from the
 * config, the control surface and $management add-rule all reach.
 *
 * Build and run: scripts/fuzz.sh sql (clang-14, ASan + UBSan).
 *
 * The first byte picks the grammar (bit 0: action, else filter), the rest
 * is the expression text. A parsed filter is evaluated against two
 * messages (one with string, integer, double and boolean properties, one
 * with none); a parsed action is applied to a copy of each. A refusal must
 * come with a message. Beyond the sanitizers: evaluation terminates and
 * the same filter gives the same answer twice (it has no hidden state).
 */
#include "emu.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT(c)                                                             \
    do {                                                                      \
        if (!(c)) {                                                           \
            fprintf(stderr, "fuzz_sql: %s:%d: %s\n", __FILE__, __LINE__, #c); \
            abort();                                                          \
        }                                                                     \
    } while (0)

static emu_msg_t *g_full, *g_empty;

/* A minimal AMQP message: one data section holding "x". */
static const unsigned char DATA_ONLY[] = {0x00, 0x53, 0x75, 0xa0, 0x01, 'x'};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *err = NULL;
    g_full = msg_parse(DATA_ONLY, sizeof DATA_ONLY, &err);
    g_empty = msg_parse(DATA_ONLY, sizeof DATA_ONLY, &err);
    if (!g_full || !g_empty)
        abort();
    static const unsigned char red[] = {0xa1, 0x03, 'r', 'e', 'd'};
    static const unsigned char five[] = {0x71, 0x00, 0x00, 0x00, 0x05};
    static const unsigned char big[] = {0x81, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    static const unsigned char half[] = {0x82, 0x3f, 0xe0, 0, 0, 0, 0, 0, 0};
    static const unsigned char yes[] = {0x41};
    static const unsigned char pct[] = {0xa1, 0x04, 'a', '%', '_', 'b'};
    msg_app_set(g_full, "color", red, sizeof red);
    msg_app_set(g_full, "n", five, sizeof five);
    msg_app_set(g_full, "big", big, sizeof big);
    msg_app_set(g_full, "half", half, sizeof half);
    msg_app_set(g_full, "flag", yes, sizeof yes);
    msg_app_set(g_full, "like", pct, sizeof pct);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int action = data[0] & 1;
    char *s = malloc(size);
    memcpy(s, data + 1, size - 1);
    s[size - 1] = 0;
    char err[512];
    err[0] = 0;
    if (!action) {
        sql_expr_t *e = sql_parse_filter(s, err, sizeof err);
        if (!e) {
            ASSERT(err[0]);
        } else {
            bool a = sql_filter_match(e, g_full);
            ASSERT(sql_filter_match(e, g_full) == a);
            bool c = sql_filter_match(e, g_empty);
            ASSERT(sql_filter_match(e, g_empty) == c);
            sql_expr_free(e);
        }
    } else {
        sql_action_t *a = sql_parse_action(s, err, sizeof err);
        if (!a) {
            ASSERT(err[0]);
        } else {
            emu_msg_t *m1 = msg_clone(g_full), *m2 = msg_clone(g_empty);
            ASSERT(m1 && m2);
            sql_action_apply(a, m1);
            sql_action_apply(a, m2);
            msg_free(m1);
            msg_free(m2);
            sql_action_free(a);
        }
    }
    free(s);
    return 0;
}
