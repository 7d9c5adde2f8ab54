/* booking.h -- bookings, their event references and their audit trail:
 * the rows are the store's (store/bookings.h, store/audit.h, included here
 * for the callers); this module has their JSON views.
 *
 * A booking follows one Google event (event_id), or one occurrence of a
 * recurring series (event_id = series id, original_start set). Times are
 * int64 milliseconds UTC; text only at the JSON edge. Every change of a
 * booking appends an audit entry in the same transaction.
 */
#ifndef CALSYNC_BOOKING_H
#define CALSYNC_BOOKING_H

#include "store/audit.h"
#include "store/bookings.h"
#include "store/store.h"
#include "util.h"

#include <stdint.h>

/* The API view of GET /v1/bookings/{uid}, appended to out. */
void booking_json(const struct booking *b, struct buf *out);
/* The {start,end,title,status} snapshot used in audit before/after. */
void booking_snapshot_json(const struct booking *b, struct buf *out);

#endif
