/* bookings.h -- the bookings and booking_refs tables (owner of their
 * SQL): a booking's row and the event references that match Google events
 * to bookings.
 *
 * A booking follows one Google event (event_id), or one occurrence of a
 * recurring series (event_id = series id, original_start set). Times are
 * int64 milliseconds UTC.
 */
#ifndef CALSYNC_STORE_BOOKINGS_H
#define CALSYNC_STORE_BOOKINGS_H

#include "store/store.h"
#include "util.h"

#include <stdint.h>

#define BOOKING_UID_MAX 255
#define BOOKING_TITLE_MAX 1024
#define BOOKING_EVENT_ID_MAX 1024
#define BOOKING_REASON_MAX 1024
#define BOOKING_DESCRIPTION_MAX 8192
#define BOOKING_LOCATION_MAX 1024

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
    /* the change a flag held back (DESIGN §4 `proposed`), kept while
     * needs_review: kind "" when none; start/end -1 and title NULL when
     * the change has none (a delete) */
    char proposed_kind[16];
    int64_t proposed_start_ms, proposed_end_ms;
    char *proposed_title;
    /* the event's other fields the app sets (DESIGN §4); NULL when not
     * given. attendees: JSON [{"email","name"?,"optional"?}] */
    char *description, *location, *time_zone, *attendees;
    char *conference;         /* the conference asked for ("meet"), may be NULL */
    char *conference_url;     /* its link once Google made it, may be NULL */
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

/* Writes title, times, status, needs_review, cancelled_by, cancel_reason,
 * the proposed change (cleared when needs_review is 0), description,
 * location, time_zone, attendees and updated_at of b back. 0 or -1. */
int booking_save(struct store_conn *c, const struct booking *b,
                 struct cs_err *err);

/* A page of bookings (filters may be 0/NULL) after seq `after`:
 * appends {"bookings":[..],"next_cursor":..}. 0 or -1. */
int booking_list_json(struct store_conn *c, int64_t calendar_id,
                      const char *status, int64_t after, int limit,
                      struct buf *out, struct cs_err *err);

/* The bookings waiting for a human (needs_review), newest change first,
 * at most limit: appends {"bookings":[..]} (items as in booking_list_json)
 * and sets *total to how many there are in all (for the status page).
 * 0 or -1. */
int booking_flagged_json(struct store_conn *c, int limit, struct buf *out,
                         int64_t *total, struct cs_err *err);

/* --------------------------------------------------------- booking_refs
 * An event reference: (calendar, event id, original start or -1 for the
 * whole event) -> booking uid. */

/* Calls fn(ud, uid) for each booking referencing the occurrence
 * (cal, event_id, original_start) (-1: the whole event). 0 or -1. */
int booking_refs_at(struct store_conn *c, int64_t cal, const char *event_id,
                    int64_t original_start, void (*fn)(void *ud, const char *uid),
                    void *ud, struct cs_err *err);

/* The same for every occurrence booking of series `series_id`. */
int booking_refs_of_series(struct store_conn *c, int64_t cal, const char *series_id,
                           void (*fn)(void *ud, const char *uid), void *ud,
                           struct cs_err *err);

/* fn(ud, uid) when booking `uid` exists on calendar cal (an event tagged
 * with it). 0 or -1. */
int booking_on_calendar(struct store_conn *c, const char *uid, int64_t cal,
                        void (*fn)(void *ud, const char *uid), void *ud,
                        struct cs_err *err);

/* Moves booking `uid` from occurrence (old_series, old_start) of cal to
 * (new_series, new_start): its reference and, when the booking's own
 * event is that occurrence, bookings.event_id/original_start_ms. 0 or -1. */
int booking_ref_move(struct store_conn *c, int64_t cal, const char *uid,
                     const char *old_series, int64_t old_start, const char *new_series,
                     int64_t new_start, struct cs_err *err);

/* Moves booking `uid` that follows event `event_id` (a whole event) from
 * calendar `from` to calendar `to`: bookings.calendar_id and its
 * whole-event reference (the event kept its id: Google's events.move).
 * Nothing when the booking is not on `from` any more. 0 or -1. */
int booking_move_calendar(struct store_conn *c, const char *uid, int64_t from,
                          int64_t to, const char *event_id, struct cs_err *err);

/* The link of the conference Google made for the booking's event. 0 or
 * -1. */
int booking_set_conference_url(struct store_conn *c, const char *uid, const char *url,
                               struct cs_err *err);

/* calsync wrote the booking's event: its id and etag on the booking, and
 * the whole-event reference. 0 or -1. */
int booking_event_written(struct store_conn *c, const char *uid, int64_t cal,
                          const char *event_id, const char *etag, struct cs_err *err);

/* The booking moves to calendar `cal` (PATCH calendar_id): it follows no
 * event until the writer creates one there (event_id and etag cleared),
 * and its event references go, so the old event's later changes (the
 * deletion calsync itself makes included) match it no more. 0 or -1. */
int booking_move(struct store_conn *c, const char *uid, int64_t cal, struct cs_err *err);

/* ----------------------------------------------------------- write state */

/* A write job was queued for the booking: write_state 'pending'. 0 or -1. */
int booking_write_pending(struct store_conn *c, const char *uid, struct cs_err *err);

/* A write job of the booking ended (`failed`, with error, or done): its
 * write_state becomes failed, else pending while another job of it is
 * pending (the jobs table), else stays failed or turns none. 0 or -1. */
int booking_write_ended(struct store_conn *c, const char *uid, int failed,
                        const char *error, struct cs_err *err);

#endif
