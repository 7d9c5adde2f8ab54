/* calendars.h -- the calendars table (owner of its SQL): rows, lookups,
 * state, sync bookkeeping and the API's JSON views.
 *
 * A calendar row is one (credential, Google calendar) pair; the booking
 * app's POST /v1/calendars is idempotent on that pair.
 */
#ifndef CALSYNC_STORE_CALENDARS_H
#define CALSYNC_STORE_CALENDARS_H

#include "store/store.h"
#include "util.h"

#include <stddef.h>
#include <stdint.h>

#define CAL_EXTERNAL_ID_MAX 1024
#define CAL_POLICY_NAME_MAX 64
#define CAL_SETTINGS_MAX 65536

/* A calendars row, as the sync and the apply path read it. */
struct calendar_row {
    int64_t id;
    int64_t credential_id;
    int64_t dirty;          /* the dirty generation (see calendar_mark_dirty) */
    char state[16];         /* syncing | active | error | revoked | stopped */
    char policy[CAL_POLICY_NAME_MAX + 1];
    char external_id[CAL_EXTERNAL_ID_MAX + 1];
    char *settings;         /* owned: the settings JSON text */
    char *sync_token;       /* owned; NULL: none (the next sync is full) */
};

/* Loads row `id` into *row (free it with calendar_row_free, also after a
 * failure). 1 found, 0 not, -1 error (err set). */
int calendar_load(struct store_conn *c, int64_t id, struct calendar_row *row,
                  struct cs_err *err);
void calendar_row_free(struct calendar_row *row);

/* The calendar's shadow policy name into out (cap bytes): 1 set, 0 none
 * (or no such calendar), -1 error (err set). Read per decision, so a
 * change of it applies to changes decided after it. */
int calendar_shadow_policy(struct store_conn *c, int64_t id, char *out, size_t cap,
                           struct cs_err *err);

/* Creates the calendar for (credential, external_id), or returns the one
 * that exists (state 'stopped' is turned back to 'syncing').
 * *created is 1 when a row was inserted. 0 or -1. */
int calendar_upsert(struct store_conn *c, int64_t credential_id,
                    const char *external_id, const char *policy,
                    const char *settings_json, int64_t *id_out, int *created,
                    struct cs_err *err);

/* Appends the calendar's JSON view to out. 1 found, 0 not, -1 error. */
int calendar_json(struct store_conn *c, int64_t id, struct buf *out,
                  struct cs_err *err);

/* A page of calendars after `after_id`, ordered by id; appends the list
 * object {"calendars":[..],"next_cursor":..}. 0 or -1. */
int calendar_list_json(struct store_conn *c, int64_t after_id, int limit,
                       struct buf *out, struct cs_err *err);

/* What the Google-facing code needs of a calendar row. */
struct calendar_ref {
    int64_t credential_id;
    char external_id[CAL_EXTERNAL_ID_MAX + 1];
    char state[16];
};

/* Loads it: 1 found, 0 not, -1 error (err set). */
int calendar_ref_load(struct store_conn *c, int64_t id, struct calendar_ref *out,
                      struct cs_err *err);

/* Current state into buf (cap bytes): 1 found, 0 not, -1 error. */
int calendar_state(struct store_conn *c, int64_t id, char *state, size_t cap,
                   struct cs_err *err);

/* Sets state and its reason (may be NULL). With `if_live`, only a
 * calendar that is 'syncing' or 'active' changes (Google refused the
 * calendar: an error must not overwrite stopped or revoked). *changed (may
 * be NULL) is 1 when the row changed. 0 or -1. */
int calendar_set_state(struct store_conn *c, int64_t id, const char *state,
                       const char *reason, int if_live, int *changed,
                       struct cs_err *err);

/* The next calendar of the credential that is neither stopped nor
 * revoked, in *id: 1 found, 0 none, -1 error. */
int calendar_next_live_of_credential(struct store_conn *c, int64_t credential_id,
                                     int64_t *id, struct cs_err *err);

/* The other calendars of the credential that are neither stopped nor
 * revoked (all but `except`), lowest id first, at most max of them: ids[i]
 * and, when ext is not NULL, their external ids into ext[i]. *n is how
 * many. 0 or -1. (An event moved with events.move keeps its id: these are
 * where it can go, sync_move.c.) */
int calendar_siblings(struct store_conn *c, int64_t credential_id, int64_t except,
                      int64_t *ids, char (*ext)[CAL_EXTERNAL_ID_MAX + 1], int max,
                      int *n, struct cs_err *err);

/* Marks the calendar as needing a sync: dirty + 1, a generation a sync
 * clears only when it is still the one it read (calendar_sync_done), so a
 * mark set during a sync survives it. With `if_live`, stopped and revoked
 * calendars are left alone. 0 or -1. */
int calendar_mark_dirty(struct store_conn *c, int64_t id, int if_live, struct cs_err *err);

/* For /metrics: the number of calendars in each state of `states` (n of
 * them; counts[i] for states[i], 0 when none), and in *stalest_at the
 * oldest last successful sync (or creation, never synced) among calendars
 * that should sync (syncing, active, error); 0 when there are none.
 * 0 or -1. */
int calendar_stats(struct store_conn *c, const char *const *states, int n,
                   int64_t *counts, int64_t *stalest_at, struct cs_err *err);

/* Forgets the sync token: the next listing is full. 0 or -1. */
int calendar_drop_sync_token(struct store_conn *c, int64_t id, struct cs_err *err);

/* A sync of the calendar finished: stores its new sync token, the time,
 * clears the dirty mark when it is still `dirty_seen`, and turns syncing
 * or error into active. 0 or -1. */
int calendar_sync_done(struct store_conn *c, int64_t id, const char *sync_token,
                       int64_t dirty_seen, struct cs_err *err);

/* What the scheduler needs of every calendar. */
struct calendar_sched {
    int64_t id;
    int runnable;          /* neither stopped nor revoked */
    int dirty;             /* the dirty generation; 0: clean */
    int64_t last_synced;   /* ms, -1: never */
};

/* Calls fn for every calendar in id order; a non-zero return stops the
 * walk and is returned. 0, the callback's value, or -1 on a database
 * error (err set). */
int calendar_each_sched(struct store_conn *c,
                        int (*fn)(void *ud, const struct calendar_sched *row), void *ud,
                        struct cs_err *err);

/* The calendar's lease across instances (a shared database): one sync or
 * forward write per calendar at a time, whatever instance runs it. On
 * PostgreSQL a session advisory lock of the calling thread's connection:
 * the server releases it when the session ends, so an instance killed with
 * kill -9 (its kernel closes the socket) frees its calendars at once, and
 * one whose host vanished within the TCP keepalive time the driver sets
 * (about 25 s). The lock also fences: the thread's writes go through the
 * same session, so once the lock is lost with the session they fail too.
 * try: 1 acquired, 0 held by another session, -1 with err set. A database
 * that is not shared (SQLite: one instance) has nothing to lease: 1. */
int calendar_lease_try(struct store_conn *c, int64_t id, struct cs_err *err);
void calendar_lease_release(struct store_conn *c, int64_t id);

/* When calendar id last finished a sync (wall ms, -1: never) and its
 * dirty generation (0: every recorded notification has been synced since),
 * whatever instance did it: on a shared database the scheduler reads them
 * under the calendar's lease to skip a poll or a push another instance
 * has just done. 1 found, 0 no such calendar, -1 with err set. */
int calendar_sync_mark(struct store_conn *c, int64_t id, int64_t *last_synced,
                       int64_t *dirty, struct cs_err *err);

/* The policy, shadow policy ("" when none) and settings JSON (appended to
 * settings) of calendar id, for PATCH /v1/calendars. 1 found, 0 not, -1
 * error. */
int calendar_policy_get(struct store_conn *c, int64_t id, char *policy, size_t pcap,
                        char *shadow, size_t scap, struct buf *settings,
                        struct cs_err *err);

/* Sets policy, shadow policy (NULL or "": none) and settings of calendar
 * id, all three at once (the API validated them together). 0 or -1. */
int calendar_policy_set(struct store_conn *c, int64_t id, const char *policy,
                        const char *shadow, const char *settings_json,
                        struct cs_err *err);

/* The credential was re-authorised: its revoked calendars go back to
 * syncing, without a sync token (their next sync is full) and marked
 * dirty. Their ids (at most max) into ids, the count in *n. 0 or -1. */
int calendar_resume_revoked(struct store_conn *c, int64_t credential_id, int64_t *ids,
                            int max, int *n, struct cs_err *err);

#endif
