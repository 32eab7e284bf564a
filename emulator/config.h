/*
 * config.h: loading Microsoft's emulator Config.json (plus our additions).
 *
 * The loader strips // and block comments (Microsoft's sample has them),
 * parses with jansson, validates every field it knows, and reports the first
 * problem as "<file>: <JSON path>: <problem>". The per-entity functions are
 * also used by the control surface to create entities at run time from the
 * same per-entity JSON objects.
 */
#ifndef EMU_CONFIG_H
#define EMU_CONFIG_H

#include <jansson.h>
#include <stddef.h>

#include "emu.h"

/* Load FILE into b; 0 on success, -1 with err filled. */
int emu_config_load(emu_broker_t *b, const char *file, char *err, size_t errlen);
/* Parse JSON text that may contain comments; NULL with err filled on failure. */
json_t *emu_json_parse_commented(const char *text, char *err, size_t errlen);
/* Create entities from per-entity JSON; path is the JSON path used in errors. */
int emu_config_add_queue(emu_broker_t *b, json_t *q, const char *path, char *err, size_t errlen);
int emu_config_add_topic(emu_broker_t *b, json_t *t, const char *path, char *err, size_t errlen);
int emu_config_add_subscription(emu_broker_t *b, emu_entity_t *topic, json_t *s, const char *path,
                                char *err, size_t errlen);
/* Parse an ISO-8601 duration ("PT1M", "P1DT2H", "PT0.5S") into ms; -1 if invalid. */
int64_t emu_parse_duration(const char *s);
/* Build a rule from a Rules[] item or a management rule description. */
emu_rule_t *emu_rule_from_json(json_t *r, const char *path, char *err, size_t errlen);

#endif
