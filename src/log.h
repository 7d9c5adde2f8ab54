/* log.h -- one line per event on stderr: `ts=... level=... event=... k=v`,
 * or with log_format = "json" the same as one JSON object per line:
 * {"ts":"...","level":"info","event":"sync.done","calendar":3,...}.
 *
 * Values are quoted when they hold spaces, quotes or '=' so every line
 * stays machine-splittable; the JSON form is made from that text, so both
 * always carry the same fields. Every event name and its fields are listed
 * in docs/operations.md ("Log events"; tests/e2e/test_ops.py keeps the list
 * in step with the source). Thread-safe (one write(2) per line).
 */
#ifndef CALSYNC_LOG_H
#define CALSYNC_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_set_level(enum log_level lv);
/* 0: key=value lines (the default), 1: JSON lines. */
void log_set_json(int on);

/* Turns a key=value line (without its newline) into one JSON object,
 * written to out (cap bytes); returns its length, or 0 when it does not
 * fit. Bare integers and decimals become numbers, "-" null, everything
 * else a string. Exposed for the unit tests. */
size_t log_kv_to_json(const char *line, size_t len, char *out, size_t cap);
/* Returns 0 and sets *out for "debug"/"info"/"warn"/"error", else -1. */
int log_level_parse(const char *s, enum log_level *out);

/* Logs one event. `fmt` produces the `key=value ...` tail; use log_q() to
 * quote values that came from outside. */
void log_event(enum log_level lv, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Quotes s for a log value into a per-thread ring of 4 buffers (each
 * 256 bytes, truncated with "..."); the result is valid until the same
 * thread calls log_q() four more times. Never NULL. */
const char *log_q(const char *s);

#define log_debug(ev, ...) log_event(LOG_DEBUG, ev, __VA_ARGS__)
#define log_info(ev, ...) log_event(LOG_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...) log_event(LOG_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) log_event(LOG_ERROR, ev, __VA_ARGS__)

#endif
