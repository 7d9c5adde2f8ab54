/* metrics.h -- Prometheus counters and gauges, rendered for GET /metrics.
 *
 * A series is named by its full text, labels included:
 *   metrics_inc("calsync_policy_errors_total{kind=\"runtime\"}");
 * Label values that come from outside must be passed through
 * metrics_label() first. Thread-safe.
 */
#ifndef CALSYNC_METRICS_H
#define CALSYNC_METRICS_H

#include "util.h"

#include <stdint.h>

#define METRICS_MAX_SERIES 1024

/* Adds n to a counter (created at 0 on first use). When the table is full
 * the update is dropped and calsync_metrics_dropped_total counts it. */
void metrics_add(const char *series, int64_t n);
void metrics_inc(const char *series);
/* Sets a gauge. */
void metrics_set(const char *series, int64_t v);

/* A collector appends gauge lines computed at scrape time (for example
 * rows counted in the database). Up to 16; registered once at start. */
typedef void (*metrics_collector)(struct buf *out);
void metrics_register_collector(metrics_collector fn);

/* Escapes a label value (backslash, quote, newline) into out (cap bytes,
 * truncated). Returns out. */
char *metrics_label(const char *in, char *out, size_t cap);

/* Appends the whole exposition text. 0, or -1 on OOM. */
int metrics_render(struct buf *out);

/* Drops every series (tests). */
void metrics_reset(void);

#endif
