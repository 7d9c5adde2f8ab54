/* calendar.h -- calendars and credentials: the rows are the store's
 * (store/calendars.h, store/credentials.h, included here for the callers);
 * this module adds what a calendar's failure sets off. Secrets live in the
 * credentials table and never leave it through any JSON view.
 */
#ifndef CALSYNC_CALENDAR_H
#define CALSYNC_CALENDAR_H

#include "store/calendars.h"
#include "store/credentials.h"
#include "store/store.h"
#include "util.h"

#include <stdint.h>

/* ------------------------------------------------ added for Google I/O */

/* Marks the credential revoked (its access token forgotten) and every
 * calendar of it that is not stopped as state 'revoked' with `reason`,
 * calling calendar_error_notify() for each, in one transaction. Deletes
 * nothing. Must not be called inside a transaction. 0 or -1. */
int credential_revoke(struct store_conn *c, int64_t credential_id,
                      const char *reason, struct cs_err *err);

/* Hook: a calendar just entered state `state` ('revoked' or 'error')
 * for `reason`. Runs inside the caller's transaction: enqueues DESIGN §4's
 * CALENDAR_ERROR webhook (outbox_enqueue_calendar_error), logs and counts.
 * The caller calls outbox_kick() after committing. 0 or -1 (the caller
 * rolls back). */
int calendar_error_notify(struct store_conn *c, int64_t calendar_id,
                          const char *state, const char *reason,
                          struct cs_err *err);

#endif
