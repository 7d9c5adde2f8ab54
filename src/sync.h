/* sync.h -- one calendar's sync: the provider's changes into the `events`
 * mirror.
 *
 * sync_calendar() reads a calendar's changes from its provider (provider.h,
 * picked by the credential's `provider`): incremental with its stored sync
 * cursor, or a full listing when it has none or the provider calls it
 * expired (PROVIDER_RESYNC); and applies them page by page. Each item of a
 * page (and each deletion or re-link the last page finds) is a unit: what
 * it writes -- its mirror row, and through the change hook its bookings,
 * audit entries and webhooks -- commits together. Units are applied in
 * short transactions of a few hundred at most; the policy decisions they
 * need are made before, with no transaction open (DESIGN §2 "Policies off
 * the write path"): the hook is called twice per unit, once to decide and
 * once to apply (enum sync_pass). The new sync token, last_synced_at and
 * the state change syncing/error -> active are written after every unit of
 * the last page has committed, so a crash or a bad page leaves the old
 * token and the next sync reads the changes again (the mirror diff makes
 * that harmless: a committed unit's event no longer differs).
 *
 * Threads: call from worker threads only (it blocks on the provider); each
 * thread uses its own store connection and JSON state.
 */
#ifndef CALSYNC_SYNC_H
#define CALSYNC_SYNC_H

#include "provider/provider.h"
#include "store/store.h"
#include "util.h"

#include <lua.h>
#include <stdint.h>

/* The shared event shape is provider.h's struct provider_event; the engine
 * (apply.c, writer.c, the hooks below) still spells it struct sync_event,
 * a transitional alias kept so this change does not rename it in files
 * other branches are editing. */
#define sync_event provider_event

#define SYNC_NO_TIME PROVIDER_NO_TIME  /* start/end/original start unknown */
#define SYNC_ID_MAX PROVIDER_ID_MAX
#define SYNC_TITLE_MAX PROVIDER_TITLE_MAX
#define SYNC_ETAG_MAX PROVIDER_ETAG_MAX
#define SYNC_TAG_MAX PROVIDER_TAG_MAX
#define SYNC_MAX_PAGES 10000    /* a listing longer than this fails */
#define SYNC_MAX_SERIES_CHECK 1000 /* series re-listed per incremental sync */
/* A vanished occurrence of a split series is found again in the successor
 * series when an occurrence of it starts less than this far from the
 * vanished one's original start (docs/internals/apply.md). */
#define SYNC_SPLIT_WINDOW_MS (12 * 3600 * 1000LL)
#define SYNC_MAX_RELINK 100000  /* occurrences per series considered for it */
/* Decisions and transactions (docs/internals/sync.md "Decide, then
 * apply"): units whose decisions are made ahead in one decide pass; units
 * per apply transaction at most, and milliseconds (a batch closes after
 * the unit that crosses it), so that other writers wait for one short
 * batch, never for a page; and how often one unit may be found stale
 * (what its decision depended on changed before its transaction) and
 * decided again before the sync gives up and is retried later. Measured
 * on the 10,000-change apply (docs/performance.md): 1,024 / 1,024 /
 * 25 ms against 256 / 256 / 10 ms, about 20% more decisions/s (fewer
 * commits, fewer window starts); the API's POST p99 during a slow-policy
 * sync stays far below its target either way. */
#define SYNC_DECIDE_WINDOW 1024
#define SYNC_APPLY_BATCH 1024
#define SYNC_APPLY_BATCH_MS 25
#define SYNC_DECIDE_TRIES 3

/* Why the sync runs; reported to the hook as DESIGN §5's change.source. */
enum sync_source {
    SYNC_SRC_POLL = 0, /* scheduled or requested through the API */
    SYNC_SRC_PUSH,     /* a push notification */
    SYNC_SRC_FULL,     /* a full listing (first sync, expired cursor) */
};
const char *sync_source_name(enum sync_source s);

/* Which of its two calls the hook is in (DESIGN §2 "Policies off the
 * write path"; docs/internals/sync.md "Decide, then apply"). */
enum sync_pass {
    SYNC_PASS_APPLY = 0, /* inside the unit's transaction: re-read, look the
                          * decisions up, write. Runs no policy. */
    SYNC_PASS_DECIDE,    /* no transaction open, no write lock held: read,
                          * run the policy, keep the decisions. Writes
                          * nothing. */
};

/* Returned by the hook in the apply pass when a decision it needs was not
 * made from what it reads now (the booking or the mirror row changed since
 * the decide pass, or the unit was never decided): the sync rolls the
 * unit back, calls the hook again in the decide pass and retries. */
#define SYNC_HOOK_STALE 1

struct sync_info {
    int64_t calendar_id;
    int64_t credential_id;
    const char *external_id;
    enum sync_source source;  /* SYNC_SRC_FULL for every change of a full listing */
    enum sync_pass pass;
    /* Changes when a new decide window starts: decisions the hook kept for
     * an earlier window are applied or dropped and may be forgotten. */
    unsigned window;
};

/* The change hook: called for each event whose mirror row is new or
 * differs (etag or any field above), with the previous row (`old`, NULL
 * if never seen) and the event now; twice per unit: in the decide pass
 * (no transaction: decide and remember) and then in the apply pass
 * (inside the unit's transaction, before the mirror row is updated:
 * apply what was decided), see enum sync_pass. For a
 * deletion found by a full listing (mirrored, not cancelled, absent from
 * the complete listing) or cascaded from a cancelled series master, `now`
 * is a stub {id, status "cancelled"} (for an occurrence also its
 * series_id and original start) and raw_json is that stub in the
 * provider's shape (provider_ops.encode).
 * Otherwise raw_json is the event as the provider sent it (re-encoded).
 * Return 0; SYNC_HOOK_STALE (apply pass only) to have the unit rolled
 * back, decided again and retried; or -1 with err set to roll the batch
 * back and fail the sync. Do not call the provider from it. */
typedef int (*sync_change_fn)(void *ud, struct store_conn *c,
                              const struct sync_info *info,
                              const struct sync_event *old,
                              const struct sync_event *now,
                              const char *raw_json, size_t raw_len,
                              struct cs_err *err);

/* Installs the hook (NULL: none). Set before sched_start(); not
 * thread-safe against running syncs. */
void sync_set_change_hook(sync_change_fn fn, void *ud);

/* The re-link hook, same signature and passes: called after the last
 * page's items are applied, when an occurrence of series S vanished from
 * the provider's occurrences of S and was found again by time in the series a
 * "this and following" split created. `old` is the vanished occurrence's
 * mirror row (series S), `now` the successor occurrence's mirror row
 * (series S'), raw_json that row as an event resource. In the apply pass
 * the hook moves what follows (S, old original start) to (S', now's
 * original start) and applies the change from old to now, once; in the
 * decide pass it decides that change for the bookings as they will be
 * once moved, and moves nothing. Afterwards the vanished occurrence is
 * reported as deleted like any other (to what still follows it by id).
 * Without a re-link hook vanished occurrences are only deletions.
 * Install like sync_set_change_hook. */
void sync_set_relink_hook(sync_change_fn fn, void *ud);

/* The move hook: event `event_id` (a whole event, not an occurrence)
 * moved from calendar `from` to calendar `to`, both watched with the
 * credential of the calendar being synced (info->calendar_id is one of
 * the two): the provider moved it keeping its id (Google's events.move).
 * Called in the apply pass only, in its own unit's transaction, before the
 * page's items: it moves what follows the event on `from` to `to` (no
 * policy decides a move; DESIGN §4 bookings follow their event). 0, or -1
 * with err set. See sync_move.c and docs/sync.md. Install like
 * sync_set_change_hook. */
typedef int (*sync_move_fn)(void *ud, struct store_conn *c,
                            const struct sync_info *info, const char *event_id,
                            int64_t from, int64_t to, struct cs_err *err);
void sync_set_move_hook(sync_move_fn fn, void *ud);

/* The decide hook: called after each decide pass, once sync.c has ended
 * that pass's read transaction, so with no transaction open and no lock
 * held. The change and re-link hooks only gather in the decide pass (they
 * read, under one read snapshot per pass); this one runs the policies for
 * what they gathered in info->window. 0, or -1 with err set to fail the
 * sync. Install like sync_set_change_hook; needed whenever those hooks
 * gather. */
typedef int (*sync_decide_fn)(void *ud, const struct sync_info *info,
                              struct cs_err *err);
void sync_set_decide_hook(sync_decide_fn fn, void *ud);

enum sync_rc {
    SYNC_OK = 0,
    SYNC_SKIPPED,  /* calendar gone, stopped or revoked: nothing done */
    SYNC_FAILED,   /* transient: network, budget, bad response, database */
    SYNC_REVOKED,  /* refresh token refused; calendars now revoked */
    SYNC_ERROR,    /* the provider refused the calendar (PROVIDER_PERMANENT),
                      or the credential names no known provider: state error */
};

struct sync_stats {
    int full;      /* 1 when the run ended as a full listing */
    int pages;
    int events;    /* items read */
    int changes;   /* hook calls (changed, new, swept) */
    int swept;     /* deletions found by the full listing or by cascade */
    int relinked;  /* vanished occurrences found again in a split's successor */
};

/* Syncs one calendar. Returns an enum sync_rc; err describes anything but
 * SYNC_OK/SYNC_SKIPPED. stats may be NULL. */
int sync_calendar(int64_t calendar_id, enum sync_source src,
                  struct sync_stats *stats, struct cs_err *err);

/* Upserts one event into the mirror (inside the caller's transaction).
 * The forward path records its own writes here, so the sync that reads
 * them back finds nothing changed. 0 or -1. */
int sync_mirror_put(struct store_conn *c, int64_t cal,
                    const struct sync_event *ev, struct cs_err *err);

/* ----------------------------------------------------- pure pieces (tests) */

/* 1 when the mirror should report a change from old to now. */
int sync_event_differs(const struct sync_event *old, const struct sync_event *now);

#endif
