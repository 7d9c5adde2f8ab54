/* outbox.h -- signed outbound webhooks (DESIGN §4), delivered at least once.
 *
 * A webhook is enqueued inside the transaction that made the change (one
 * row per configured subscriber, body fixed at enqueue time so every retry
 * sends the same bytes under the same X-Calsync-Delivery id). One delivery
 * thread per subscriber sends rows in id order; the next row of a booking
 * waits until the previous one is acknowledged (2xx). Failures and timeouts
 * back off 1 s, doubling to 60 s, with jitter never below half.
 */
#ifndef CALSYNC_OUTBOX_H
#define CALSYNC_OUTBOX_H

#include "booking.h"
#include "config.h"
#include "store/store.h"
#include "util.h"

/* Enqueues a booking webhook. `trigger` is BOOKING_CANCELLED,
 * BOOKING_RESCHEDULED, BOOKING_UPDATED or BOOKING_FLAGGED; `now` is the
 * booking after the change, `prev` before it; source/policy/version/reason
 * may be NULL. Call inside the change's transaction, then outbox_kick()
 * after commit. 0 or -1 (err set). */
int outbox_enqueue_booking(struct store_conn *c, const char *trigger,
                           const struct booking *now, const struct booking *prev,
                           const char *reason, const char *source,
                           const char *policy, const char *policy_version,
                           struct cs_err *err);

/* Enqueues CALENDAR_ERROR {"calendarId","state","reason"}. 0 or -1. */
int outbox_enqueue_calendar_error(struct store_conn *c, int64_t calendar_id,
                                  const char *state, const char *reason,
                                  struct cs_err *err);

/* Starts one delivery thread per configured subscriber. cfg must outlive
 * the outbox. 0 or -1. */
int outbox_start(const struct config *cfg, struct cs_err *err);
/* Wakes the delivery threads (cheap; call after committing an enqueue:
 * a kick before the commit wakes a sender that cannot see the row yet, and
 * it then sleeps until the next kick). The senders have no polling tick. */
void outbox_kick(void);
/* outbox_kick() if this thread enqueued a row since its last kick: for a
 * transaction whose enqueues happen deep inside it (a sync page's
 * decisions), called after its commit. */
void outbox_kick_enqueued(void);
/* Stops the threads; an attempt in flight finishes first (bounded by the
 * request timeout). Undelivered rows stay pending for the next start. */
void outbox_stop(void);

/* Lowercase hex HMAC-SHA256 of body under secret into out (65 bytes). */
void outbox_sign(const char *secret, const char *body, size_t len, char *out);

#endif
