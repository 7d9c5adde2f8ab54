/* sync.c -- one calendar's sync: the provider's changes into the mirror.
 *
 * The provider (provider.h, picked by the calendar's credential) lists
 * changes page by page and turns each raw event into the shared shape;
 * this file knows no provider.
 *
 * Main objects: struct sync_event (the shared event shape of provider.h,
 * what the mirror keeps), the page loop of sync_calendar(), page_apply(),
 * and the unit runner sync_run_units(): each item of a page, each deletion and
 * each re-link the last page finds is a unit, decided with no transaction
 * open and then applied in short batch transactions that re-check it (DESIGN §2
 * "Policies off the write path"). Pages are validated completely before
 * anything is decided or written, so a truncated or mistyped response
 * touches nothing. A full listing records every id it saw in the
 * connection's TEMP table sync_seen; after the last page's items the sweep
 * reports mirrored events missing from it as deletions. See
 * docs/internals/sync.md.
 */
#include "sync.h"
#include "sync_int.h"
#include "store/events.h"
#include "fault.h"

#include "calendar.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "provider/provider.h"

#include <lauxlib.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static sync_change_fn hook_fn;
static void *hook_ud;
static sync_decide_fn decide_fn;
static void *decide_ud;

void sync_set_change_hook(sync_change_fn fn, void *ud)
{
    hook_fn = fn;
    hook_ud = ud;
}

void sync_set_decide_hook(sync_decide_fn fn, void *ud)
{
    decide_fn = fn;
    decide_ud = ud;
}

const char *sync_source_name(enum sync_source s)
{
    switch (s) {
    case SYNC_SRC_PUSH: return "push";
    case SYNC_SRC_FULL: return "full_sync";
    default: return "poll";
    }
}

/* ========================================================= comparing */

static int str_eq(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

int sync_event_differs(const struct sync_event *old, const struct sync_event *now)
{
    if (!old)
        return 1;
    int oc = str_eq(old->status, "cancelled"), nc = str_eq(now->status, "cancelled");
    if (oc && nc)
        return 0; /* gone before, gone now: nothing new to say */
    if (oc != nc || !str_eq(old->status, now->status) || !str_eq(old->etag, now->etag))
        return 1;
    if (now->start_ms != SYNC_NO_TIME &&
        (now->start_ms != old->start_ms || now->end_ms != old->end_ms ||
         now->all_day != old->all_day))
        return 1;
    if (now->series_id && !str_eq(now->series_id, old->series_id))
        return 1;
    if (now->original_start_ms != SYNC_NO_TIME &&
        now->original_start_ms != old->original_start_ms)
        return 1;
    if (!nc && (!str_eq(now->title, old->title) ||
                !str_eq(now->booking_tag, old->booking_tag) ||
                !str_eq(now->attendees, old->attendees)))
        return 1;
    return 0;
}

/* ============================================================ the mirror */


/* 1 found (row filled), 0 not, -1 error. */
int sync_mirror_load(struct store_conn *c, int64_t cal, const char *id,
                       struct mirror_row *row, struct cs_err *err)
{
    return events_load(c, cal, id, &row->ev, &row->arena, err);
}

/* Full-state upsert (store/events.c). */
int sync_mirror_put(struct store_conn *c, int64_t cal,
                    const struct sync_event *ev, struct cs_err *err)
{
    return events_put(c, cal, ev, err);
}

/* ======================================================== the page loop */


/* Hands one change to the hook in the current pass: 0, SYNC_HOOK_STALE
 * (apply pass) or -1. */
static int report(struct run *x, const struct sync_event *old,
                  const struct sync_event *now, const char *raw, size_t raw_len,
                  struct cs_err *err)
{
    if (x->info.pass == SYNC_PASS_APPLY)
        x->stats->changes++;
    if (!hook_fn)
        return 0;
    return hook_fn(hook_ud, x->db, &x->info, old, now, raw, raw_len, err);
}

/* ------------------------------------------------------- id lists
 * The units of the last page's tail (swept ids, vanished occurrences,
 * re-link pairs), listed before they are decided: a unit may be applied
 * twice (a stale one is rolled back and retried), so each is addressed by
 * its index. */

void sync_ids_init(struct id_list *l)
{
    memset(l, 0, sizeof *l);
    buf_init(&l->arena);
}

void sync_ids_free(struct id_list *l)
{
    buf_free(&l->arena);
    free(l->off);
    l->off = NULL;
    l->n = l->cap = 0;
}

int sync_ids_push(struct id_list *l, const char *id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        size_t *off = realloc(l->off, cap * sizeof *off);
        if (!off)
            return -1;
        l->off = off;
        l->cap = cap;
    }
    l->off[l->n] = l->arena.len;
    if (buf_append(&l->arena, id, strlen(id) + 1))
        return -1;
    l->n++;
    return 0;
}

const char *sync_ids_at(const struct id_list *l, size_t i)
{
    return l->arena.data + l->off[i];
}

/* ==================================================== decide, then apply
 * A unit is everything one item of a page (or one swept deletion, one
 * vanished occurrence, one re-link pair) writes: its mirror row and,
 * through the hooks, its bookings, audit entries and webhooks. A unit
 * function is called in one of two passes (x->info.pass):
 *
 *   decide  it reads (under one read transaction for the whole pass: a
 *           WAL snapshot, no write lock) and the hooks gather what their
 *           policies need; it writes nothing. Then the read transaction
 *           ends and the decide hook runs the policies, with no
 *           transaction open and no lock held;
 *   apply   inside a batch transaction: it re-reads and writes, and the
 *           hooks apply the kept decisions, or answer SYNC_HOOK_STALE
 *           when what a decision was made from changed (the batch is
 *           then rolled back, the units before the stale one applied
 *           again, and the stale one decided again outside the
 *           transaction and retried).
 *
 * sync_run_units() applies optimistically: a unit that needs no decision (most
 * items of a full listing: no booking follows them) is applied without a
 * decide pass. The first unit that needs one opens a decide window: it
 * and up to SYNC_DECIDE_WINDOW - 1 units after it are decided in one go,
 * then applied in batches. Decisions are
 * deterministic given their inputs (DESIGN §5), and the apply pass rebuilds
 * those inputs from fresh reads, so applying a kept decision is the same
 * as deciding inside the transaction; a changed input is never applied
 * with an old decision. */


/* Applies units [i, limit) in one transaction, until SYNC_APPLY_BATCH
 * units or SYNC_APPLY_BATCH_MS have gone by or a unit is stale, and
 * commits those applied. *end is the first unit not applied. 0, or
 * SYNC_HOOK_STALE (unit i is stale: nothing was written), or -1 (rolled
 * back).
 *
 * A stale unit may have written part of itself already (one booking of
 * several, a series master before its cascade): the whole batch is rolled
 * back and the units before it are applied again, without it, in a fresh
 * transaction. Savepoints per unit would save that redo, but SQLite
 * journals every page a unit touches under its savepoint (the sub-journal):
 * measured, 7 times the bytes written per change of the sync (205 MB for
 * 10,000 changes, against 30 MB for one transaction per page) and twice
 * its CPU. The redo is rare: a batch ends where the decided window ends,
 * so the first unit that needs a new window comes first in its batch. */
static int apply_batch(struct run *x, size_t i, size_t limit, size_t n, unit_fn fn,
                       void *ud, size_t *end, struct cs_err *err)
{
    struct sync_stats kept = *x->stats;
    *end = i;
    x->info.pass = SYNC_PASS_APPLY;
    for (;;) {
        int64_t t0 = time_mono_ms();
        size_t j = i;
        int r = 0;
        if (store_begin(x->db, err))
            return -1;
        while (j < limit && j - i < SYNC_APPLY_BATCH &&
               (j == i || time_mono_ms() - t0 < SYNC_APPLY_BATCH_MS)) {
            if ((r = fn(x, j, ud, err)) != 0)
                break;
            j++;
        }
        if (r == 0) {
            fault_point("sync_batch_before_commit");
            if (store_commit(x->db, err))
                return -1;
            outbox_kick_enqueued(); /* the batch's webhooks are visible now */
            *end = j;
            fault_point(j < n ? "sync_batch_after_commit" : NULL);
            return 0;
        }
        store_rollback(x->db);
        *x->stats = kept;
        if (r < 0)
            return -1;
        if (j == i)
            return SYNC_HOOK_STALE;
        limit = j; /* again, up to the stale unit */
    }
}

/* Decides units [i, end): the unit functions read, under one read
 * transaction (a WAL snapshot: it blocks no writer and takes no write
 * lock; one snapshot rather than one per statement, each of which costs
 * its own lock calls), and the hooks gather; then, that transaction
 * ended, the decide hook runs the policies. 0 or -1. */
static int decide_units(struct run *x, size_t i, size_t end, unit_fn fn, void *ud,
                        struct cs_err *err)
{
    int rc = store_begin_read(x->db, err);
    x->info.pass = SYNC_PASS_DECIDE;
    for (; i < end && rc == 0; i++)
        rc = fn(x, i, ud, err) < 0 ? -1 : 0;
    x->info.pass = SYNC_PASS_APPLY;
    /* a read transaction: nothing to keep, nothing to lose */
    if (store_in_tx(x->db))
        store_rollback(x->db);
    if (rc == 0 && decide_fn)
        rc = decide_fn(decide_ud, &x->info, err);
    return rc;
}

/* Names a decide window, unique in the process: the hooks keep the
 * decisions of one window only, and must never take one kept by another
 * sync (made by another policy version, say) for theirs. */
static unsigned next_window(void)
{
    static atomic_uint windows;
    return atomic_fetch_add(&windows, 1) + 1;
}

/* Decides and applies units [0, n) (see above). 0 or -1: units applied
 * before a failure stay committed (each is whole), the rest are read
 * again by the next sync. */
int sync_run_units(struct run *x, size_t n, unit_fn fn, void *ud, struct cs_err *err)
{
    size_t i = 0, decided = 0, last_stale = (size_t)-1;
    int tries = 0;
    x->info.window = next_window(); /* nothing decided for these units yet */
    while (i < n) {
        size_t j;
        /* a batch stops where the decided window does: the unit after it
         * will be stale (undecided), and is better first in a batch */
        int r = apply_batch(x, i, i < decided ? decided : n, n, fn, ud, &j, err);
        if (r < 0)
            return -1;
        i = j;
        if (r == 0)
            continue;
        if (i >= decided) {
            /* the first unit of a new window that needs a policy: decide
             * it and the next ones before any transaction */
            decided = i + SYNC_DECIDE_WINDOW < n ? i + SYNC_DECIDE_WINDOW : n;
            x->info.window = next_window();
            last_stale = i;
            tries = 0;
            if (decide_units(x, i, decided, fn, ud, err))
                return -1;
            fault_point("sync_after_decide");
            continue;
        }
        /* decided already, and stale: what the decision was made from
         * changed meanwhile (the app changed the booking, or a unit before
         * it in this window applied something to the same booking).
         * Decide it again, outside the transaction. A unit that keeps
         * changing under its decision fails the sync: what is committed
         * stays, and the next sync (after the backoff) reads the rest again. */
        if (i != last_stale) {
            last_stale = i;
            tries = 0;
        }
        if (++tries > SYNC_DECIDE_TRIES)
            return cs_err_set(err, "a booking changed %d times while its change was "
                              "being decided; retrying later", SYNC_DECIDE_TRIES);
        metrics_inc("calsync_sync_redecided_total");
        if (decide_units(x, i, i + 1, fn, ud, err))
            return -1;
    }
    return 0;
}

/* Reports the mirrored event `id` as a deletion stub and (apply pass)
 * marks it cancelled. 0, SYNC_HOOK_STALE or -1. */
static int report_deleted(struct run *x, const char *id, struct cs_err *err)
{
    int rc = sync_mirror_load(x->db, x->info.calendar_id, id, &x->old, err);
    if (rc <= 0)
        return rc;
    rc = -1;
    struct sync_event *stub = calloc(1, sizeof *stub);
    if (!stub)
        return cs_err_set(err, "out of memory");
    stub->id = x->old.ev.id;
    stub->status = "cancelled";
    stub->start_ms = stub->end_ms = stub->original_start_ms = SYNC_NO_TIME;
    /* an occurrence keeps its (series, original start): that is what
     * its bookings follow (like Google's own full stub) */
    int occ = x->old.ev.series_id && x->old.ev.original_start_ms != SYNC_NO_TIME;
    if (occ) {
        stub->series_id = x->old.ev.series_id;
        stub->original_start_ms = x->old.ev.original_start_ms;
    }
    stub->all_day = x->old.ev.all_day; /* of the original start */
    if (x->ops->encode(stub, PROVIDER_ENC_STUB, &x->raw)) {
        cs_err_set(err, "out of memory");
        goto done;
    }
    rc = report(x, &x->old.ev, stub, x->raw.data, x->raw.len, err);
    if (rc != 0 || x->info.pass == SYNC_PASS_DECIDE)
        goto done;
    rc = -1;
    x->stats->swept++;
    rc = events_set_cancelled(x->db, x->info.calendar_id, id, err);
    fault_point("sync_after_deleted_reported");
done:
    free(stub);
    return rc;
}

static int id_add(void *ud, const char *id)
{
    return sync_ids_push(ud, id) ? 1 : 0;
}

/* Appends the ids of a mirror list (store/events.h) with argument arg. */
static int collect_ids(struct run *x, enum events_list which, const char *arg,
                       struct id_list *out, struct cs_err *err)
{
    int rc = events_ids(x->db, x->info.calendar_id, which, arg, id_add, out, err);
    if (rc > 0)
        return cs_err_set(err, "out of memory");
    return rc;
}

/* A cancelled series master takes every occurrence of the series with it:
 * Google may send one bare stub for a deleted series (DESIGN §8). */
static int cascade_series(struct run *x, const char *series, struct cs_err *err)
{
    struct id_list ids;
    sync_ids_init(&ids);
    int rc = collect_ids(x, EVENTS_SERIES_LIVE, series, &ids, err);
    /* part of the master's unit: all of the series or none of it */
    for (size_t i = 0; rc == 0 && i < ids.n; i++)
        rc = report_deleted(x, sync_ids_at(&ids, i), err);
    sync_ids_free(&ids);
    return rc;
}

/* A unit per listed id: reported as deleted. */
static int unit_deleted(struct run *x, size_t i, void *ud, struct cs_err *err)
{
    return report_deleted(x, sync_ids_at(ud, i), err);
}

/* Reports the mirrored ids that list `which` has as deletions, one unit
 * each. */
int sync_report_listed(struct run *x, enum events_list which, const char *arg,
                         struct cs_err *err)
{
    struct id_list ids;
    sync_ids_init(&ids);
    int rc = collect_ids(x, which, arg, &ids, err);
    if (rc == 0)
        rc = sync_run_units(x, ids.n, unit_deleted, &ids, err);
    sync_ids_free(&ids);
    return rc;
}

static int sweep_unseen(struct run *x, struct cs_err *err)
{
    return sync_report_listed(x, EVENTS_UNSEEN, NULL, err);
}

static int seen_add(struct run *x, const char *id, struct cs_err *err)
{
    return events_seen_add(x->db, id, err);
}

static int seen_reset(struct run *x, struct cs_err *err)
{
    return events_seen_reset(x->db, err);
}

static int series_touched(const struct run *x, const char *series)
{
    for (size_t o = 0; o < x->touched.len;) {
        const char *s = x->touched.data + o;
        if (strcmp(s, series) == 0)
            return 1;
        o += strlen(s) + 1;
    }
    return 0;
}

/* An item whose id the provider cannot have issued (normalise gave
 * PROVIDER_EVENT_SKIP, reason in err): logged and counted, then left out --
 * never mirrored, matched or put into a URL. Always 0. */
int sync_skip_item(const struct run *x, int malformed, struct cs_err *err)
{
    metrics_inc(malformed ? "calsync_sync_items_skipped_total{reason=\"malformed\"}"
                          : "calsync_sync_items_skipped_total{reason=\"invalid_id\"}");
    log_warn("sync.item_skipped", "calendar=%lld reason=%s err=%s",
             (long long)x->info.calendar_id, malformed ? "malformed" : "invalid_id",
             log_q(err ? err->msg : "invalid id"));
    return 0;
}

/* A bare cancelled stub ({kind, etag, id, status}: no recurringEventId, no
 * originalStartTime) for a live mirrored occurrence of a series this
 * incremental sync re-lists is left to series reconciliation (last page).
 * Google sends that shape for occurrences beyond a series' new end
 * (fixture recurring-delete-this-and-following-past-cancelled-instance;
 * the fake sends it for every occurrence a series change removed), and a
 * "this and following" split removes occurrences that must be found again
 * in the new series, not deleted; the new series may come on a later
 * page. A deleted single occurrence comes as a full stub and is decided
 * at once, as before. The mirror row stays untouched until the last page,
 * so a crash before it re-reads the stub and defers it again. */
static int defer_to_reconcile(const struct run *x, const struct sync_event *old,
                              const struct sync_event *ev)
{
    return !x->full && old && sync_relinks() && ev->series_id &&
           strcmp(ev->status, "cancelled") == 0 && !str_eq(old->status, "cancelled") &&
           str_eq(old->series_id, ev->series_id) && ev->bare &&
           series_touched(x, ev->series_id);
}

/* One item of a page, a unit: the hook (if it changed), its mirror row,
 * and a cancelled master's cascade. The decide pass writes nothing, not
 * even the mirror row, so a crash after it leaves the item to be read
 * and decided again. 0, SYNC_HOOK_STALE or -1. */
static int apply_item(struct run *x, int item, struct sync_event *ev,
                      struct cs_err *err)
{
    int p = x->ops->normalise(x->L, item, ev, err);
    if (p != 0) {
        /* logged and counted by page_check. An unreadable item that still
         * names a usable id is seen by a full listing all the same: its
         * mirror row (and booking) stays as it was rather than being swept
         * as a deletion because one version of it was broken. */
        if (p < 0 && ev->id && x->full && x->info.pass == SYNC_PASS_APPLY &&
            seen_add(x, ev->id, err))
            return -1;
        return 0;
    }
    int r = sync_mirror_load(x->db, x->info.calendar_id, ev->id, &x->old, err);
    if (r < 0)
        return -1;
    const struct sync_event *old = r ? &x->old.ev : NULL;
    /* a bare deletion that names no series (Graph's @removed item: only
     * an id) of a mirrored occurrence is that occurrence's deletion: its
     * series and slot come from the mirror, so its bookings are found by
     * them (and it is not taken for a series master to cascade) */
    if (old && ev->bare && !ev->series_id && old->series_id &&
        strlen(old->series_id) < sizeof ev->series_buf_) {
        memcpy(ev->series_buf_, old->series_id, strlen(old->series_id) + 1);
        ev->series_id = ev->series_buf_;
        ev->original_start_ms = old->original_start_ms;
    }
    if (defer_to_reconcile(x, old, ev))
        return 0;
    if (sync_event_differs(old, ev)) {
        buf_reset(&x->raw);
        if (hook_fn && json_encode_value(x->L, item, &x->raw, err))
            return -1;
        if ((r = report(x, old, ev, x->raw.data ? x->raw.data : "", x->raw.len, err)))
            return r;
    }
    int cascade = strcmp(ev->status, "cancelled") == 0 && !ev->series_id;
    if (x->info.pass == SYNC_PASS_DECIDE)
        return cascade ? cascade_series(x, ev->id, err) : 0;
    if (sync_mirror_put(x->db, x->info.calendar_id, ev, err))
        return -1;
    if (x->full && seen_add(x, ev->id, err))
        return -1;
    return cascade ? cascade_series(x, ev->id, err) : 0;
}

struct page_units {
    int items;                  /* absolute index of the page's items table */
    struct sync_event *scratch;
};

static int unit_item(struct run *x, size_t i, void *ud, struct cs_err *err)
{
    struct page_units *p = ud;
    lua_rawgeti(x->L, p->items, (lua_Integer)i + 1);
    int rc = apply_item(x, lua_gettop(x->L), p->scratch, err);
    lua_pop(x->L, 1);
    return rc;
}

static int finish_calendar(struct run *x, const char *sync_token, struct cs_err *err)
{
    if (x->info.pass == SYNC_PASS_DECIDE)
        return 0;
    return calendar_sync_done(x->db, x->info.calendar_id, sync_token, x->dirty, err);
}

/* Checks every item of the page (the provider checked its envelope),
 * touching nothing. An item that does not parse (no id, a broken start, a
 * field of the wrong type, an id the provider cannot have issued) is
 * logged once here, counted, and left out by apply_item: one bad item
 * must not stop its calendar for good (issue 19), since the provider
 * would list it again on every retry. */
static int page_check(struct run *x, const struct provider_page *pg,
                      struct sync_event *scratch, struct cs_err *err)
{
    lua_State *L = x->L;
    for (int i = 1; i <= pg->n; i++) {
        lua_rawgeti(L, pg->items, i);
        int rc = x->ops->normalise(L, -1, scratch, err);
        if (rc != 0)
            rc = sync_skip_item(x, rc != PROVIDER_EVENT_SKIP, err);
        else if (rc == 0 && !x->full && scratch->series_id)
            sync_touch_series(x, scratch->series_id);
        lua_pop(L, 1);
        if (rc)
            return -1;
    }
    return 0;
}

/* The last unit of a sync: the new token and the calendar's state. */
static int unit_finish(struct run *x, size_t i, void *ud, struct cs_err *err)
{
    (void)i;
    return finish_calendar(x, ud, err);
}

/* One page (pushed by the provider): check, then its items as units
 * (decided, then applied in short transactions); on the last page the deletions and re-links it
 * implies, then the token. *done set on the last page. 0, -1 or
 * SYNC_REVOKED. */
static int page_apply(struct run *x, const struct provider_page *pg,
                      struct buf *page_token, int *done, struct sync_event *scratch,
                      struct cs_err *err)
{
    int items = pg->items, n = pg->n;
    const char *next_page = pg->next_page, *next_sync = pg->next_cursor;
    if (page_check(x, pg, scratch, err))
        return -1;
    if (next_sync && !x->full && x->n_touched) {
        int r = sync_series_fetch(x, scratch, err);
        if (r)
            return r;
    }
    /* events moved to or from another watched calendar (sync_move.c):
     * found before anything is decided, applied before the items */
    if (sync_moves_fetch(x, pg, scratch, err))
        return -1;
    x->stats->pages++;
    x->stats->events += n;
    struct page_units u = {items, scratch};
    if (sync_moves_apply(x, err) || sync_run_units(x, (size_t)n, unit_item, &u, err))
        return -1;
    if (next_sync) {
        /* listed after every item is applied: the sweep and the series
         * reconciliation see the page's own changes in the mirror */
        if ((x->full && sweep_unseen(x, err)) ||
            (!x->full && x->n_touched && sync_series_reconcile(x, err)) ||
            sync_run_units(x, 1, unit_finish, (void *)next_sync, err))
            return -1;
    }
    fault_point(next_sync ? "sync_last_page_after_commit" : "sync_page_after_commit");
    buf_reset(page_token);
    if (next_page && buf_puts(page_token, next_page))
        return cs_err_set(err, "out of memory");
    *done = next_sync != NULL;
    return 0;
}

/* ===================================================== calendar row I/O */

/* The provider refused the calendar itself: state error, hook once. */
static void cal_set_error(struct store_conn *c, int64_t id, const char *why)
{
    struct cs_err err;
    int changed = 0;
    if (store_begin(c, &err) ||
        calendar_set_state(c, id, "error", why, 1, &changed, &err) ||
        (changed && calendar_error_notify(c, id, "error", why, &err)) ||
        store_commit(c, &err)) {
        store_rollback(c);
        log_error("sync.set_error_failed", "calendar=%lld err=%s", (long long)id,
                  log_q(err.msg));
        return;
    }
    outbox_kick();
}

static void count_sync(int full, const char *result)
{
    char series[128];
    snprintf(series, sizeof series,
             "calsync_syncs_total{kind=\"%s\",result=\"%s\"}",
             full ? "full" : "incremental", result);
    metrics_inc(series);
}

/* ============================================================ sync_calendar */

int sync_calendar(int64_t calendar_id, enum sync_source src,
                  struct sync_stats *stats, struct cs_err *err)
{
    struct cs_err local_err;
    struct sync_stats local = {0};
    struct calendar_row cal = {0};
    struct run x = {0};
    struct provider_ctx px = {0};
    struct buf page_token;
    struct sync_event *scratch = NULL;
    int rc = SYNC_FAILED, top = -1, restarted = 0;
    int64_t t0 = time_mono_ms();
    /* push-driven syncs go ahead of polls and full resyncs in the budget */
    provider_set_priority(src == SYNC_SRC_PUSH ? PROVIDER_PRIO_HIGH : PROVIDER_PRIO_LOW);
    if (!stats)
        stats = &local;
    if (!err)
        err = &local_err;
    memset(stats, 0, sizeof *stats);
    buf_init(&x.old.arena);
    buf_init(&x.succ.arena);
    buf_init(&x.raw);
    buf_init(&x.touched);
    buf_init(&page_token);

    if (!(x.db = store_conn(err)))
        goto done;
    if (!(x.L = json_state()) || !(scratch = malloc(sizeof *scratch))) {
        cs_err_set(err, "out of memory");
        goto done;
    }
    top = lua_gettop(x.L);
    int r = calendar_load(x.db, calendar_id, &cal, err);
    if (r < 0)
        goto done;
    if (r == 0 || strcmp(cal.state, "stopped") == 0 ||
        strcmp(cal.state, "revoked") == 0) {
        rc = SYNC_SKIPPED;
        goto done;
    }
    x.stats = stats;
    x.info.calendar_id = calendar_id;
    x.dirty = cal.dirty;
    x.info.credential_id = cal.credential_id;
    x.info.external_id = cal.external_id;
    x.full = !cal.sync_token || !*cal.sync_token;
    r = provider_for_credential(x.db, cal.credential_id, &x.ops, err);
    if (r < 0)
        goto done;
    if (r > 0) { /* names no provider calsync has: nothing to sync with */
        cal_set_error(x.db, calendar_id, err->msg);
        rc = SYNC_ERROR;
        goto done;
    }
    px.db = x.db;
    px.credential_id = cal.credential_id;
    x.px = &px;

restart:
    stats->full = x.full;
    buf_reset(&x.touched);
    x.n_touched = 0;
    x.info.source = x.full ? SYNC_SRC_FULL : src;
    buf_reset(&page_token);
    if (x.full && seen_reset(&x, err))
        goto done;
    for (int page = 0;; page++) {
        if (page >= SYNC_MAX_PAGES) {
            cs_err_set(err, "more than %d pages", SYNC_MAX_PAGES);
            goto done;
        }
        struct provider_page pg;
        int g = x.ops->list_changes(&px, cal.external_id,
                                    x.full ? NULL : cal.sync_token,
                                    page_token.len ? page_token.data : NULL, &pg, err);
        log_debug("sync.listed", "calendar=%lld page=%d status=%ld", (long long)calendar_id,
                  page, px.last.status);
        if (g == PROVIDER_REVOKED) {
            rc = SYNC_REVOKED;
            goto done;
        }
        if (g == PROVIDER_RESYNC && !x.full && !restarted) {
            /* the token is dead: forget it, so a crash during the full
             * listing still leads to a full listing */
            log_info("sync.full_resync", "calendar=%lld status=%ld reason=%s",
                     (long long)calendar_id, px.last.status, log_q(px.last.reason));
            metrics_inc("calsync_sync_full_resyncs_total");
            if (calendar_drop_sync_token(x.db, calendar_id, err))
                goto done;
            fault_point("sync_after_token_drop");
            restarted = 1;
            x.full = 1;
            goto restart;
        }
        if (g == PROVIDER_PERMANENT) {
            /* the provider refused the calendar itself (no access, not
             * found, an external_id stored before ids were checked) */
            cal_set_error(x.db, calendar_id, err->msg);
            rc = SYNC_ERROR;
            goto done;
        }
        if (g != PROVIDER_OK)
            goto done;
        int last = 0;
        r = page_apply(&x, &pg, &page_token, &last, scratch, err);
        lua_settop(x.L, top);
        if (r == SYNC_REVOKED) {
            rc = SYNC_REVOKED;
            goto done;
        }
        if (r)
            goto done;
        if (last)
            break;
    }
    rc = SYNC_OK;
done:
    if (x.L && top >= 0)
        lua_settop(x.L, top);
    if (rc != SYNC_SKIPPED) {
        static const char *const names[] = {"ok", "skipped", "failed", "revoked", "error"};
        count_sync(stats->full, names[rc]);
        metrics_observe_ms(stats->full ? "calsync_sync_duration_seconds{kind=\"full\"}" : "calsync_sync_duration_seconds{kind=\"incremental\"}", time_mono_ms() - t0);
        if (rc == SYNC_OK)
            log_info("sync.done", "calendar=%lld kind=%s source=%s pages=%d events=%d"
                     " changes=%d swept=%d relinked=%d ms=%lld", (long long)calendar_id,
                     stats->full ? "full" : "incremental",
                     sync_source_name(stats->full ? SYNC_SRC_FULL : src),
                     stats->pages, stats->events, stats->changes, stats->swept,
                     stats->relinked,
                     (long long)(time_mono_ms() - t0));
        else
            log_warn("sync.failed", "calendar=%lld result=%s err=%s",
                     (long long)calendar_id, names[rc], log_q(err->msg));
    }
    free(scratch);
    sync_moves_free(&x);
    buf_free(&page_token);
    buf_free(&x.raw);
    buf_free(&x.touched);
    buf_free(&x.old.arena);
    buf_free(&x.succ.arena);
    calendar_row_free(&cal);
    return rc;
}
