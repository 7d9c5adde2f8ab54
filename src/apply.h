/* apply.h -- the reverse path's decision step (DESIGN §2 steps 4-6).
 *
 * apply_change() is the sync change hook: for one changed event it finds
 * the bookings that follow it, drops echoes and changes to cancelled
 * bookings, classifies the change against what calsync last saw, asks the
 * calendar's policy, and applies the decision with its audit entry and
 * webhook. It is called twice per change (enum sync_pass): first to
 * gather what the policy needs (reading only), then apply_decide() runs
 * the policy with no transaction open and keeps its decision; then inside
 * the unit's short transaction, to re-read the booking and the mirror row
 * and apply the kept decision -- only if it was made from exactly what it
 * reads now, else SYNC_HOOK_STALE and the sync decides again. So the
 * mirror, the bookings, the audit and the outbox of one change commit
 * together or not at all, and no policy runs while the write lock is held
 * (docs/internals/apply.md).
 */
#ifndef CALSYNC_APPLY_H
#define CALSYNC_APPLY_H

#include "booking.h"
#include "config.h"
#include "sync.h"

/* Sets the configuration used for policy limits. Call before syncs run. */
void apply_init(const struct config *cfg);

/* The sync_change_fn installed with sync_set_change_hook(). */
int apply_change(void *ud, struct store_conn *c, const struct sync_info *info,
                 const struct sync_event *old, const struct sync_event *now,
                 const char *raw_json, size_t raw_len, struct cs_err *err);

/* The re-link hook installed with sync_set_relink_hook(): the bookings
 * that follow occurrence `old` (series S, as the mirror last had it) of a
 * series split by "this and following" move to occurrence `now` of the
 * successor series (booking_refs and the booking's own reference), then
 * each is decided as a change from old to now (time change, title change
 * or nothing), audited and announced once, like apply_change. */
int apply_relink(void *ud, struct store_conn *c, const struct sync_info *info,
                 const struct sync_event *old, const struct sync_event *now,
                 const char *raw_json, size_t raw_len, struct cs_err *err);

/* The decide hook installed with sync_set_decide_hook(): runs the
 * calendar's policy for every request apply_change and apply_relink
 * gathered in the decide pass of info->window (in the order they were
 * gathered), and keeps the decisions for the apply pass. sync.c calls it
 * with no transaction open. 0 or -1 (out of memory). */
int apply_decide(void *ud, const struct sync_info *info, struct cs_err *err);

/* The sync move hook (sync_move_fn): every live booking that follows
 * whole event `event_id` on calendar `from` now follows it on `to`
 * (calendar_id changes), audited (change "calendar_move", action "move")
 * and announced with one BOOKING_UPDATED. No policy decides it: the host
 * moved the event between two calendars calsync watches, and the booking
 * is where its event is. 0 or -1. */
int apply_move(void *ud, struct store_conn *c, const struct sync_info *info,
               const char *event_id, int64_t from, int64_t to, struct cs_err *err);

enum apply_kind { APPLY_NONE = 0, APPLY_DELETE, APPLY_TIME, APPLY_TITLE, APPLY_RESPONSE };

/* Classifies `now` against `base` (the mirror row, or NULL: then the
 * booking's own start/end/title). Pure; exposed for tests. */
enum apply_kind apply_classify(const struct sync_event *base,
                               const struct booking *b,
                               const struct sync_event *now);

/* Releases the calling thread's policy runner and kept decisions (worker
 * exit). */
void apply_thread_done(void);

#endif
