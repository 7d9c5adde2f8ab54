/* sync_int.h -- what the sync's files share (sync.c: the page loop and the
 * unit runner; sync_series.c: series reconciliation and split re-links).
 * Internal to the sync: nothing outside src/sync*.c includes it.
 */
#ifndef CALSYNC_SYNC_INT_H
#define CALSYNC_SYNC_INT_H

#include "store/store.h"
#include "store/events.h"
#include "provider/provider.h"
#include "sync.h"
#include "util.h"

#include <lua.h>

/* A mirror row read back: the event plus the arena its strings live in. */
struct mirror_row {
    struct sync_event ev;
    struct buf arena;
};

/* a list of ids (below) */
struct id_list {
    struct buf arena;  /* NUL-terminated ids */
    size_t *off;       /* owned: offset of the i-th id in arena */
    size_t n, cap;
};

struct run {
    struct store_conn *db;
    lua_State *L;
    struct sync_info info;
    struct sync_stats *stats;
    struct mirror_row old;
    struct mirror_row succ;  /* a split's successor occurrence (relink) */
    struct buf raw;
    int full;
    const struct provider_ops *ops;
    struct provider_ctx *px;
    struct buf touched;   /* series ids seen by an incremental sync, NUL-separated */
    int n_touched;
    int64_t dirty;        /* calendars.dirty read before the first listing */
    struct id_list moved; /* this page's moved events (sync_move.c) ... */
    int64_t *moved_from, *moved_to; /* owned: ... from and to, per index */
    size_t moved_cap;
};

/* ------------------------------------------------------- id lists
 * The units of the last page's tail (swept ids, vanished occurrences,
 * re-link pairs), listed before they are decided: a unit may be applied
 * twice (a stale one is rolled back and retried), so each is addressed by
 * its index. */

void sync_ids_init(struct id_list *l);
void sync_ids_free(struct id_list *l);
/* 0, or -1 (memory). */
int sync_ids_push(struct id_list *l, const char *id);
const char *sync_ids_at(const struct id_list *l, size_t i);

/* 0, SYNC_HOOK_STALE (apply pass) or -1. */
typedef int (*unit_fn)(struct run *x, size_t i, void *ud, struct cs_err *err);

/* Decides and applies units [0, n) (sync.c, "decide, then apply"). 0 or -1. */
int sync_run_units(struct run *x, size_t n, unit_fn fn, void *ud, struct cs_err *err);

/* 1 found (row filled), 0 not, -1 error. */
int sync_mirror_load(struct store_conn *c, int64_t cal, const char *id,
                     struct mirror_row *row, struct cs_err *err);

/* Reports the mirrored ids that list `which` has as deletions, one unit
 * each. 0 or -1. */
int sync_report_listed(struct run *x, enum events_list which, const char *arg,
                       struct cs_err *err);

/* Logs and counts an item normalise refused (reason in err; malformed: it
 * answered -1, else PROVIDER_EVENT_SKIP). Always 0. */
int sync_skip_item(const struct run *x, int malformed, struct cs_err *err);

/* sync_series.c: remembers a series an incremental sync saw; fetches the
 * touched series' live occurrences (no transaction open; 0, -1 or
 * SYNC_REVOKED); reports the occurrences they lost, after re-linking
 * those a split moved (last page). */
void sync_touch_series(struct run *x, const char *series);
/* 1 when a re-link hook is set (sync_set_relink_hook). */
int sync_relinks(void);
int sync_series_fetch(struct run *x, struct sync_event *scratch, struct cs_err *err);
int sync_series_reconcile(struct run *x, struct cs_err *err);

/* sync_move.c: finds the page's events that moved between this calendar
 * and another watched calendar of its credential (asks the provider; no
 * transaction open: 0 or -1), then applies each move as a unit before the
 * page's items (0 or -1). sync_moves_free releases the lists. */
int sync_moves_fetch(struct run *x, const struct provider_page *pg,
                     struct sync_event *scratch, struct cs_err *err);
int sync_moves_apply(struct run *x, struct cs_err *err);
void sync_moves_free(struct run *x);

#endif
