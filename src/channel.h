/* channel.h -- the push channel registry (DESIGN §2 Channels, §7).
 *
 * One live channel per calendar row, i.e. per (credential, Google
 * calendar). Rows are never deleted: a stopped channel keeps its id,
 * resource id and credential so it can always be stopped again.
 * Every function here calls Google: run them on worker threads only,
 * never inside a transaction.
 */
#ifndef CALSYNC_CHANNEL_H
#define CALSYNC_CHANNEL_H

#include "config.h"
#include "util.h"

#include <stdint.h>

void channel_init(const struct config *cfg);

/* Makes sure the calendar has a live channel that is not due for renewal:
 * opens a new one when there is none or the live one is due (new first,
 * then the old one stopped). Sets *next_check_ms to when it is next due.
 * 0, or -1 with err (the calendar keeps polling meanwhile). */
int channel_maintain(int64_t calendar_id, int64_t *next_check_ms,
                     struct cs_err *err);

/* Stops every live channel of the calendar (DELETE /v1/calendars) if it is
 * still stopped or revoked; one reactivated meanwhile keeps its channel.
 * Callers hold the calendar's scheduler lock (sched_calendar_lock). */
/* channel_maintain, renewing the live subscription now even when it is
 * not due (a provider's lifecycle notification asked for it). */
int channel_renew_now(int64_t calendar_id, int64_t *next_check_ms, struct cs_err *err);

int channel_stop_calendar(int64_t calendar_id, struct cs_err *err);

/* Stops a channel calsync no longer wants (by id), e.g. one that still
 * sends after being stopped. Unknown ids are ignored. */
int channel_stop_one(const char *channel_id, struct cs_err *err);

/* Stops a channel calsync has no row for (opened before a database
 * restore, say) that watches resource_id, with calendar_id's credential.
 * Google's 404 (no such channel) counts as stopped. 0 or -1. */
int channel_stop_foreign(int64_t calendar_id, const char *channel_id,
                         const char *resource_id, struct cs_err *err);

/* When a channel granted `lifetime_ms` at `created_ms` expiring at
 * `expiration_ms` is due for renewal: renew_before ahead of expiry, or at
 * half the granted lifetime when Google granted less than renew_before.
 * Pure; for tests. */
int64_t channel_renew_at(int64_t created_ms, int64_t expiration_ms,
                         int64_t renew_before_ms);

#endif
