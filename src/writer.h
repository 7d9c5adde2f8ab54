/* writer.h -- forward sync: bookings written to the calendar's provider
 * (DESIGN §2, §4; provider.h: insert, patch, remove).
 *
 * API calls that change a booking enqueue a job (insert, patch, delete) in
 * the same transaction as the change. Writer threads run the jobs, oldest
 * first and one at a time per booking, so a booking's writes reach Google in
 * order and a cancel after a pending create never leaves an orphan event.
 * Transient failures (PROVIDER_TRANSIENT: 429/5xx, network) back off and
 * retry; permanent ones
 * mark the booking `failed` and send CALENDAR_ERROR.
 *
 * Echo suppression: the result of every write (id, etag, times, title) goes
 * into the booking and the event mirror in one transaction, so the sync
 * that later reads the same event version finds nothing changed.
 */
#ifndef CALSYNC_WRITER_H
#define CALSYNC_WRITER_H

#include "config.h"
#include "store/store.h"
#include "util.h"

enum writer_kind { WRITER_INSERT, WRITER_PATCH, WRITER_DELETE };

/* Enqueues a job for the booking; call inside the API's transaction, then
 * writer_kick() after commit. `attendees_json` (insert only, may be NULL)
 * is a JSON array for the event's attendees. 0 or -1. */
int writer_enqueue(struct store_conn *c, enum writer_kind kind,
                   const char *booking_uid, int64_t calendar_id,
                   const char *attendees_json, struct cs_err *err);

/* Called (from a writer thread) when a write met a conflicting host edit,
 * so the calendar is synced and the policy decides the host's change. */
void writer_set_sync_hook(void (*fn)(int64_t calendar_id));

/* The key calsync gives the event of booking `uid` (provider_write.key;
 * Google uses it as the event id): "cs" + 40 hex digits of SHA-256(uid)
 * (base32hex-safe, as Google requires). Deterministic, so inserts are
 * idempotent. */
#define WRITER_EVENT_ID_LEN 42
void writer_event_id(const char *uid, char out[WRITER_EVENT_ID_LEN + 1]);

int writer_start(const struct config *cfg, struct cs_err *err);
void writer_kick(void);
void writer_stop(void);


#endif
