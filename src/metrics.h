/* metrics.h -- Prometheus counters, gauges and histograms for GET /metrics.
 *
 * Every family is declared once, with its type and HELP text, in the
 * table at the top of metrics.c (and listed in docs/operations.md): the
 * exposition always carries HELP and TYPE for every family, from the first
 * scrape on, whether or not anything has been counted yet.
 *
 * A series is named by its full text, labels included:
 *   metrics_inc("calsync_policy_errors_total{kind=\"runtime\"}");
 * Label values that come from outside must be passed through
 * metrics_label() first, and no label may hold a URL (/metrics needs no
 * token: a secret in a query string or path would leak). Thread-safe.
 */
#ifndef CALSYNC_METRICS_H
#define CALSYNC_METRICS_H

#include "util.h"

#include <stdint.h>

/* A family declared outside metrics.c (a provider's own, see
 * provider.h): its name, type, HELP text and the series created at zero
 * at start (NULL-terminated, or NULL). */
enum metrics_type { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM, METRICS_COLLECTED };
struct metrics_family {
    const char *name;
    enum metrics_type type;
    const char *help;
    const char *const *init;
};
#define METRICS_INIT(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Adds n families to those metrics.c declares itself. Call before any
 * thread records or renders (the table is read without a lock); the
 * definitions must outlive the process. A name declared twice is kept
 * once. 0, or -1 when more than METRICS_MAX_DECLARED are declared. */
#define METRICS_MAX_DECLARED 32
int metrics_declare(const struct metrics_family *fams, int n);

#define METRICS_MAX_SERIES 1024
#define METRICS_MAX_HISTOGRAMS 32

/* Adds n to a counter (created at 0 on first use). When the table is full
 * the update is dropped and calsync_metrics_dropped_total counts it. */
void metrics_add(const char *series, int64_t n);
void metrics_inc(const char *series);
/* Sets a gauge. */
void metrics_set(const char *series, int64_t v);

/* Records one observation (seconds) in a histogram series, e.g.
 * "calsync_sync_duration_seconds{kind=\"full\"}". The family must be a
 * histogram of the table; buckets are fixed (5 ms .. 60 s). */
void metrics_observe(const char *series, double seconds);
/* Same, for a duration measured on the monotonic clock in milliseconds. */
void metrics_observe_ms(const char *series, int64_t ms);
/* Same, for the total time of the last transfer of a curl easy handle
 * (a CURL *; void * so callers need not include curl here). */
void metrics_observe_curl(const char *series, void *curl_handle);
/* Monotonic clock in seconds, for timing what metrics_observe records. */
double metrics_clock(void);

/* A collector appends gauge lines computed at scrape time (for example
 * rows counted in the database). Up to 16; registered once at start.
 * Its `# TYPE` lines get the HELP text of the family table. */
typedef void (*metrics_collector)(struct buf *out);
void metrics_register_collector(metrics_collector fn);

/* The collector of the gauges read from the database: calendars by state,
 * the age of the stalest successful sync, the age of the oldest pending
 * webhook. Registered by service.c once the store is up. */
void metrics_store_collector(struct buf *out);

/* Escapes a label value (backslash, quote, newline) into out (cap bytes,
 * truncated). Returns out. */
char *metrics_label(const char *in, char *out, size_t cap);

/* Appends the whole exposition text. 0, or -1 on OOM. */
int metrics_render(struct buf *out);

/* Calls fn(name, type, help) for every declared family (tests, docs). */
void metrics_families(void (*fn)(const char *name, const char *type,
                                 const char *help, void *ud), void *ud);

/* Drops every series (tests). */
void metrics_reset(void);

#endif
