/* budget.h -- request budgets for Google calls (issue 19): token buckets per
 * credential and per project, so a restart or a wave of full resyncs stays
 * under Google's per-user and per-project rates instead of turning into
 * 403/429 storms. See docs/internals/google.md "Request budgets".
 */
#ifndef CALSYNC_GOOGLE_BUDGET_H
#define CALSYNC_GOOGLE_BUDGET_H

#include "util.h"

#include <stdint.h>

/* One token bucket. Pure logic over a caller-given clock (ms) so it can be
 * tested without time passing. `per_minute` bounds the requests taken in ANY
 * 60-second window: the burst capacity is per_minute/6 and the refill rate
 * is the remaining 5/6 spread over the minute, so burst + one minute of
 * refill never exceeds per_minute. */
struct google_bucket {
    double tokens;
    double cap;
    double per_ms;
    int64_t last_ms;
};

void google_bucket_init(struct google_bucket *b, int64_t per_minute, int64_t now_ms);

/* Takes one token when more than `reserve` are left after refilling to
 * now_ms: returns 0. Otherwise takes nothing and returns the ms until one
 * could be taken (>= 1). reserve is the part of the capacity only
 * high-priority calls may use (0 for them). */
int64_t google_bucket_wait_ms(struct google_bucket *b, int64_t now_ms, double reserve);
void google_bucket_take(struct google_bucket *b);

/* The priority comes from provider_priority() (provider.h): LOW calls
 * leave a reserve of a tenth of each bucket to HIGH ones. */

/* Sets the rates (requests per minute; 0 disables that budget) and empties
 * the registry. Called by google_init(). */
void google_budget_configure(int64_t per_credential, int64_t per_project);

/* Waits until the credential's and the project's buckets both hold a token
 * for this thread's priority and takes one from each. Waits in slices,
 * returning -1 with err set when google_cancelled() or when the wait would
 * pass deadline (monotonic ms). Each wait is observed in
 * calsync_google_budget_wait_seconds{budget,priority}. */
int google_budget_acquire(int64_t credential_id, int64_t deadline, struct cs_err *err);

/* Frees the registry (tests, shutdown). */
void google_budget_reset(void);

#endif
