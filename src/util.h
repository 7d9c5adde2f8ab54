/* util.h -- small shared pieces: error slot, growable buffer, RFC 3339 time,
 * random tokens, constant-time compare, the retry backoff, timed waits.
 *
 * Nothing here keeps global state, so it is unit-tested directly.
 */
#ifndef CALSYNC_UTIL_H
#define CALSYNC_UTIL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* An error message slot passed down by callers; the callee fills it and
 * returns a non-zero status. The caller decides what to do with the text. */
struct cs_err {
    char msg[512];
};

/* printf-style: set err->msg (err may be NULL). Always returns -1 so that
 * `return cs_err_set(err, ...)` reads naturally. */
int cs_err_set(struct cs_err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Growable byte buffer, always NUL-terminated when len > 0 or after any
 * append. The buffer owns `data`; release it with buf_free(). Append
 * functions return 0, or -1 when memory runs out (the buffer is then left
 * as it was before the call, still valid). */
struct buf {
    char *data;
    size_t len;
    size_t cap;
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_puts(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends s (n bytes) as a JSON string literal, quotes included. Invalid
 * UTF-8 bytes are replaced by U+FFFD so the output is always valid JSON. */
int buf_json_str(struct buf *b, const char *s, size_t n);
/* Like buf_json_str, or `null` when s is NULL. */
int buf_json_strz(struct buf *b, const char *s);

/* RFC 3339 date-time ("2026-11-24T09:00:00Z", "2026-11-24T10:00:00.5+01:00").
 * Returns 0 and the instant in milliseconds since the epoch (sub-millisecond
 * digits are truncated), or -1 when the text is not a valid date-time. */
int time_parse_rfc3339(const char *s, size_t n, int64_t *ms_out);
/* A "YYYY-MM-DD" all-day date, as midnight UTC. 0 or -1. */
int time_parse_date(const char *s, size_t n, int64_t *ms_out);
/* Formats ms as UTC "YYYY-MM-DDTHH:MM:SSZ", with ".mmm" only when the
 * milliseconds are not zero. out must hold at least TIME_RFC3339_MAX. */
#define TIME_RFC3339_MAX 32
void time_format_rfc3339(int64_t ms, char *out);
/* The same, always with ".mmm": log lines keep one width and sort as text. */
void time_format_rfc3339_ms(int64_t ms, char *out);
/* Wall clock, milliseconds since the epoch. */
int64_t time_now_ms(void);
/* Monotonic clock, milliseconds. */
int64_t time_mono_ms(void);

/* Fills out with 2*nbytes lowercase hex chars + NUL from a CSPRNG.
 * Returns 0, or -1 if the random source failed. */
int random_hex(char *out, size_t nbytes);
/* A uniform 64-bit draw for jitter (not for secrets: if the CSPRNG fails
 * it falls back to a hash of the monotonic clock). Never fails. */
uint64_t random_u64(void);

/* Constant-time equality of two byte strings (length leaks, content not). */
int secure_equal(const char *a, size_t an, const char *b, size_t bn);

/* The one retry delay of calsync (DESIGN §2 "Google failures": "starts at
 * 1 s and doubles up to 60 s, with jitter that never shortens a wait below
 * half"), used by the Google client, the outbox, the writer and the
 * scheduler's per-calendar error backoff. Before retry number `attempt`
 * (1-based; < 1 counts as 1): d = min(base_ms * 2^(attempt-1), cap_ms),
 * and the result is drawn uniformly from [ceil(d/2), d] with random_u64().
 * 0 when d <= 0. BACKOFF_BASE_MS and BACKOFF_MAX_MS are the contract's. */
#define BACKOFF_BASE_MS 1000
#define BACKOFF_MAX_MS 60000
int64_t backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms);

/* Timed waits. Every condition variable calsync waits on with a timeout is
 * made by cond_init_monotonic(), so the timeout is measured on
 * CLOCK_MONOTONIC: a step of the wall clock (NTP, an operator, libfaketime
 * in the e2e-faketime suite) neither stretches nor cuts a wait. A static
 * PTHREAD_COND_INITIALIZER condition variable is on CLOCK_REALTIME and must
 * not be given to cond_wait_ms(). 0, or an errno value (glibc's
 * pthread_cond_init() never fails with a valid attribute, which is why
 * callers that make one on first use under pthread_once() ignore it). */
int cond_init_monotonic(pthread_cond_t *cv);
/* With mu held: waits on cv (made by cond_init_monotonic) for at most ms
 * milliseconds. 0 when woken -- possibly spuriously, so the caller
 * re-checks its predicate -- or ETIMEDOUT once ms has passed (at once,
 * without releasing mu, when ms <= 0). */
int cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t ms);

/* Parses a base-10 int64 of the whole string; 0 or -1. */
int parse_i64(const char *s, int64_t *out);

/* ------------------------------------------------------ hostile ids, URLs
 * Ids that calsync puts into a Google URL path come from the API and from
 * Google's answers; each is checked here, in one place, before it is
 * stored or used (docs/internals/google.md, "Ids in URLs"). */

#define ID_MAX 1024 /* bytes, both kinds */

/* 1 when s[0..n) can be a Google event id: 1..ID_MAX bytes of ASCII
 * letters, digits, '_' and '-'. That covers what Google issues and
 * accepts -- base32hex ids (a-v, 0-9), instance ids "<id>_20250324T123000Z"
 * and "<id>_20211117", split series "<id>_R20250326T123000", the
 * '_'-prefixed ids of events Gmail creates -- and refuses '.', '/', '%',
 * '?', '#', spaces, control bytes and NUL: nothing that could change the
 * path of the request it is put into. */
int id_valid_event(const char *s, size_t n);

/* 1 when s[0..n) can be a Google calendar id: 1..ID_MAX bytes of ASCII
 * letters, digits and . _ - + @ # ~ =, not made of dots only. That covers
 * "primary", e-mail addresses, "<hash>@group.calendar.google.com" and the
 * special calendars ("en.usa#holiday@group.v.calendar.google.com"), and
 * refuses ".", "..", '/', '%', '?', spaces, control bytes and NUL. */
int id_valid_calendar(const char *s, size_t n);

/* Writes the part of url that is safe to show in logs and /metrics into
 * out (cap bytes, always NUL-terminated, cut to fit): "scheme://host[:port]"
 * -- no user:password, no path (webhook URLs often carry their secret in
 * the path: Slack, Discord), no query, no fragment. Text that is not an
 * absolute URL gives "(not a URL)". Returns out. */
char *url_redact(const char *url, char *out, size_t cap);
/* A fixed-window rate limit: at most `max` events per `window_ms`, for
 * things an outsider can trigger at will (a log line, a Google call) and
 * that must not grow with the attack. Thread-safe; declare it with
 * RATE_LIMIT_INIT. */
struct rate_limit {
    pthread_mutex_t mu;
    int64_t window_ms, start_ms;
    long max, used, suppressed;
};
#define RATE_LIMIT_INIT(max_, window_ms_) \
    {PTHREAD_MUTEX_INITIALIZER, (window_ms_), INT64_MIN, (max_), 0, 0}

/* 1 when one more event is allowed at now_ms (monotonic); *suppressed (may
 * be NULL) is then the number refused since the previous allowed one, and
 * that count restarts. 0 when refused (counted for the next allowed one). */
int rate_limit_take(struct rate_limit *r, int64_t now_ms, long *suppressed);

#endif
