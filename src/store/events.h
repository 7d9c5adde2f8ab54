/* events.h -- the events table, the mirror of what calsync last saw of
 * each Google event (owner of its SQL; the sync's scratch tables are
 * still in sync.c, see docs/internals/store.md). */
#ifndef CALSYNC_STORE_EVENTS_H
#define CALSYNC_STORE_EVENTS_H

#include "store/store.h"
#include "sync.h"
#include "util.h"

#include <stddef.h>
#include <stdint.h>

/* Loads the mirror row (cal, id) into *ev, its strings copied into
 * `arena` (reset first; they live until its next use). 1 found, 0 not,
 * -1 error. */
int events_load(struct store_conn *c, int64_t cal, const char *id, struct sync_event *ev,
                struct buf *arena, struct cs_err *err);

/* Full-state upsert; a cancelled stub keeps what the row knew (times,
 * title, tag) so bookings can still be matched to it. 0 or -1. */
int events_put(struct store_conn *c, int64_t cal, const struct sync_event *ev,
               struct cs_err *err);

/* The etag calsync last saw for the event, into etag (cap bytes): 1
 * found (with an etag), 0 not, -1 error. */
int events_etag(struct store_conn *c, int64_t cal, const char *id, char *etag, size_t cap,
                struct cs_err *err);

/* The event's mirrored start and end (ms): 1 found, 0 not, -1 error. */
int events_times(struct store_conn *c, int64_t cal, const char *id, int64_t *start_ms,
                 int64_t *end_ms, struct cs_err *err);

/* Marks the mirrored event cancelled (calsync deleted it). 0 or -1. */
int events_set_cancelled(struct store_conn *c, int64_t cal, const char *id,
                         struct cs_err *err);

#endif
