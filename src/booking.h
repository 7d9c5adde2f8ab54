/* booking.h -- bookings, their event references and their audit trail.
 *
 * A booking follows one Google event (event_id), or one occurrence of a
 * recurring series (event_id = series id, original_start set). Times are
 * int64 milliseconds UTC; text only at the JSON edge. Every change of a
 * booking appends an audit entry in the same transaction.
 */
#ifndef CALSYNC_BOOKING_H
#define CALSYNC_BOOKING_H

#include "store/store.h"
#include "util.h"

#include <stdint.h>

#define BOOKING_UID_MAX 255
#define BOOKING_TITLE_MAX 1024
#define BOOKING_EVENT_ID_MAX 1024
#define BOOKING_REASON_MAX 1024

struct booking {
    int64_t seq;
    char *uid;
    int64_t calendar_id;
    char *title;
    int64_t start_ms, end_ms;
    char status[16];          /* accepted | cancelled */
    int needs_review;
    char *event_id;           /* may be NULL */
    int has_original;
    int64_t original_start_ms;
    char *cancelled_by;       /* may be NULL */
    char *cancel_reason;      /* may be NULL */
    char *etag;               /* etag of calsync's last write, may be NULL */
    char write_state[16];     /* none | pending | failed */
    char *write_error;
    int64_t updated_ms;
};

/* Releases the strings of b (not b itself). */
void booking_free(struct booking *b);

/* Loads a booking: 1 found (b filled, free with booking_free), 0 not found,
 * -1 error. */
int booking_get(struct store_conn *c, const char *uid, struct booking *b,
                struct cs_err *err);

/* Inserts b (uid, calendar, title, times, event refs) and its event
 * reference. Returns 0, 1 when the uid exists already, or -1. Run inside a
 * transaction. */
int booking_insert(struct store_conn *c, const struct booking *b,
                   struct cs_err *err);

/* Writes title, times, status, needs_review, cancelled_by, cancel_reason
 * and updated_at of b back. 0 or -1. */
int booking_save(struct store_conn *c, const struct booking *b,
                 struct cs_err *err);

/* The API view of GET /v1/bookings/{uid}, appended to out. */
void booking_json(const struct booking *b, struct buf *out);
/* The {start,end,title,status} snapshot used in audit before/after. */
void booking_snapshot_json(const struct booking *b, struct buf *out);

/* A page of bookings (filters may be 0/NULL) after seq `after`:
 * appends {"bookings":[..],"next_cursor":..}. 0 or -1. */
int booking_list_json(struct store_conn *c, int64_t calendar_id,
                      const char *status, int64_t after, int limit,
                      struct buf *out, struct cs_err *err);

struct audit_entry {
    const char *booking_uid;
    const char *source;   /* push | poll | full_sync | api */
    const char *change;   /* delete | time_change | title_change | create | cancel */
    const char *action;   /* cancel | reschedule | update | ignore | flag | create */
    const char *reason;   /* may be NULL */
    const char *policy;   /* may be NULL (api) */
    const char *policy_version;
    const char *before;   /* JSON text or NULL */
    const char *after;    /* JSON text or NULL */
    const char *dedupe_key; /* NULL, or a key that makes the append once-only */
};

/* Appends an entry. Returns 0, 1 when dedupe_key was already used (nothing
 * written), or -1. */
int audit_append(struct store_conn *c, const struct audit_entry *e,
                 struct cs_err *err);

/* {"entries":[..]} oldest first, appended to out. 0 or -1. */
int audit_list_json(struct store_conn *c, const char *uid, struct buf *out,
                    struct cs_err *err);

#endif
