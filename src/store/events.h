/* events.h -- the events table, the mirror of what calsync last saw of
 * each Google event, and a sync run's scratch sets beside it (owner of
 * their SQL). */
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

/* ------------------------------------------------------- a sync's scans */

/* The mirrored ids a sync reports as deleted, for calendar cal: */
enum events_list {
    EVENTS_SERIES_LIVE, /* occurrences of series `arg` not cancelled */
    EVENTS_UNSEEN,      /* not cancelled, and not marked seen by this full sync */
    EVENTS_SERIES_GONE, /* occurrences of series `arg` not cancelled that Google
                         * no longer lists live (events_live_add) */
};

/* Calls fn(ud, id) for each id of the list; a non-zero return of fn stops
 * the walk and is returned. 0 or -1 on a database error. */
int events_ids(struct store_conn *c, int64_t cal, enum events_list which, const char *arg,
               int (*fn)(void *ud, const char *id), void *ud, struct cs_err *err);

/* Scratch sets of one sync run, private to the connection (the thread):
 * `seen` (the ids a full listing returned), `live` (the occurrences
 * Google lists for the touched series, live or cancelled) and `relinked`
 * (successor occurrences taken this sync). reset empties them (creating
 * them on first use). 0 or -1. */
int events_seen_reset(struct store_conn *c, struct cs_err *err);
int events_seen_add(struct store_conn *c, const char *id, struct cs_err *err);
int events_live_reset(struct store_conn *c, struct cs_err *err);
int events_live_add(struct store_conn *c, const char *series, const char *id, int live,
                    struct cs_err *err);
int events_relinked_add(struct store_conn *c, const char *id, struct cs_err *err);

/* An occurrence found by a relink scan; `taken`: a booking follows it
 * already. A non-zero return stops the scan and is returned. */
typedef int (*events_occ_fn)(void *ud, const char *id, const char *series, int64_t orig,
                             int taken);

/* The mirrored live occurrences of `series` that Google's instances no
 * longer list at all, in original-start order, at most max. 0 or -1. */
int events_vanished(struct store_conn *c, int64_t cal, const char *series, int max,
                    events_occ_fn fn, void *ud, struct cs_err *err);

/* The `created` stamp of the series (a split's successor carries the
 * same), appended to out: 1 found, 0 not, -1 error. */
int events_series_created(struct store_conn *c, int64_t cal, const char *series,
                          struct buf *out, struct cs_err *err);

/* Candidate successors of `series`' vanished occurrences: the live listed
 * occurrences of the series itself, of a split's new series (`<series>_R`
 * prefix, or the same `created`; NULL: none known), not taken yet this
 * sync, in original-start order, at most max. 0 or -1. */
int events_successors(struct store_conn *c, int64_t cal, const char *series,
                      const char *created, int max, events_occ_fn fn, void *ud,
                      struct cs_err *err);

#endif
