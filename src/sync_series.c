/* sync_series.c -- series reconciliation and split re-links, the part of a
 * calendar's sync that reasons about recurring series (DESIGN §8): the
 * occurrences a series change removed without a stub, and those a "this
 * and following" split moved to a new series, found again by time.
 * Called by the page loop (sync.c) through sync_int.h; see
 * docs/internals/sync.md and docs/internals/apply.md "Splits".
 */
#include "sync_int.h"

#include "fault.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

static sync_change_fn relink_fn;
static void *relink_ud;

int sync_relinks(void)
{
    return relink_fn != NULL;
}

void sync_set_relink_hook(sync_change_fn fn, void *ud)
{
    relink_fn = fn;
    relink_ud = ud;
}

/* ------------------------------------------------ series reconciliation
 * With singleEvents=true, "delete this and following" and "edit this and
 * following" move the old series' UNTIL and Google sends no stub for the
 * occurrences that disappear (fixture recurring-delete-this-and-
 * following.json; the fake models it). So when an incremental sync sees
 * any occurrence of a series, it asks events.instances for the series'
 * current occurrences and, in the last page's transaction, reports the
 * mirrored live occurrences missing from it as deletions. */

void sync_touch_series(struct run *x, const char *series)
{
    for (size_t o = 0; o < x->touched.len;) {
        const char *s = x->touched.data + o;
        if (strcmp(s, series) == 0)
            return;
        o += strlen(s) + 1;
    }
    if (x->n_touched >= SYNC_MAX_SERIES_CHECK) {
        log_warn("sync.series_unchecked", "calendar=%lld series=%s",
                 (long long)x->info.calendar_id, log_q(series));
        return;
    }
    if (buf_append(&x->touched, series, strlen(series) + 1) == 0)
        x->n_touched++;
}

static int live_reset(struct run *x, struct cs_err *err)
{
    return events_live_reset(x->db, err);
}

/* Records an occurrence Google lists for the series: live, or cancelled
 * (a deleted single occurrence is listed; one a split removed is not). */
static int live_add(struct run *x, const char *series, const char *id, int live,
                    struct cs_err *err)
{
    return events_live_add(x->db, series, id, live, err);
}

/* Fetches the live occurrences of every touched series into
 * temp.sync_live (no transaction open: it calls the provider). 0, -1, or
 * SYNC_REVOKED. A series the provider calls gone gets no rows, so
 * every mirrored occurrence of it is reported. */
int sync_series_fetch(struct run *x, struct sync_event *scratch,
                        struct cs_err *err)
{
    lua_State *L = x->L;
    struct buf pt;
    int rc = -1, top = lua_gettop(L);
    buf_init(&pt);
    if (live_reset(x, err))
        goto done;
    for (size_t o = 0; o < x->touched.len;) {
        const char *series = x->touched.data + o;
        o += strlen(series) + 1;
        buf_reset(&pt);
        for (int page = 0;; page++) {
            if (page >= SYNC_MAX_PAGES) {
                cs_err_set(err, "instances of %.64s: more than %d pages", series,
                           SYNC_MAX_PAGES);
                goto done;
            }
            struct provider_page pg;
            int g = x->ops->occurrences(x->px, x->info.external_id, series,
                                        pt.len ? pt.data : NULL, &pg, err);
            if (g == PROVIDER_REVOKED) {
                rc = SYNC_REVOKED;
                goto done;
            }
            if (g == PROVIDER_GONE)
                break;
            if (g != PROVIDER_OK)
                goto done;
            const char *next = pg.next_page;
            for (int i = 1; i <= pg.n; i++) {
                lua_rawgeti(L, pg.items, i);
                int r = x->ops->normalise(L, -1, scratch, err);
                /* a malformed occurrence that names its id counts as
                 * live: a broken item is no evidence of a deletion */
                if (r != 0 && r != PROVIDER_EVENT_SKIP && scratch->id)
                    r = sync_skip_item(x, 1, err) ||
                        live_add(x, series, scratch->id, 1, err);
                else if (r != 0)
                    r = sync_skip_item(x, r != PROVIDER_EVENT_SKIP, err);
                else if (r == 0)
                    r = live_add(x, series, scratch->id,
                                 strcmp(scratch->status, "cancelled") != 0, err);
                lua_pop(L, 1);
                if (r)
                    goto done;
            }
            buf_reset(&pt);
            if (next && buf_puts(&pt, next)) {
                cs_err_set(err, "out of memory");
                goto done;
            }
            lua_settop(L, top);
            if (!next)
                break;
        }
    }
    rc = 0;
done:
    lua_settop(L, top);
    buf_free(&pt);
    return rc;
}

/* ----------------------------------- splits: occurrences found again by time
 * "Edit this and following" ends series S with UNTIL and starts a series
 * S' under a new id: `<S>_R<start>`, or an unrelated id whose events carry
 * S's `created` (fixture recurring-edit-this-and-following-change-time).
 * "All events" with new times keeps S but moves every original start: S
 * itself is then the successor of its vanished occurrences.
 * The occurrences that vanished from S are paired with occurrences of S'
 * by original start (docs/internals/apply.md "Splits"): in order of their
 * original start, each takes the closest unused occurrence of a successor
 * less than SYNC_SPLIT_WINDOW_MS away (a tie goes to the earlier one,
 * then to the smaller id). A successor must be listed live by this sync's
 * events.instances (so it changed in the same listing) and must not start
 * before the first vanished occurrence minus the window (a series created
 * in the same second long before is no successor). */

struct occ {
    size_t id;      /* offset of the id in the list's arena */
    size_t series;  /* offset of the series id */
    int64_t orig;   /* original start, ms */
    int used;
};

struct occ_list {
    struct occ *v;  /* owned */
    size_t n, cap;
    struct buf arena;
};

static void occ_free(struct occ_list *l)
{
    free(l->v);
    buf_free(&l->arena);
    l->v = NULL;
    l->n = l->cap = 0;
}

static int occ_push(struct occ_list *l, const char *id, const char *series,
                    int64_t orig)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        struct occ *v = realloc(l->v, cap * sizeof *v);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    struct occ *o = &l->v[l->n];
    o->id = l->arena.len;
    if (buf_append(&l->arena, id, strlen(id) + 1))
        return -1;
    o->series = l->arena.len;
    if (buf_append(&l->arena, series, strlen(series) + 1))
        return -1;
    o->orig = orig;
    o->used = 0;
    l->n++;
    return 0;
}

/* Appends an occurrence a relink scan found (store/events.h); `taken`:
 * a booking follows it already. */
static int occ_add(void *ud, const char *id, const char *series, int64_t orig, int taken)
{
    struct occ_list *l = ud;
    if (occ_push(l, id, series, orig))
        return 1;
    l->v[l->n - 1].used = taken;
    return 0;
}

/* Hands one (vanished, successor) pair to the re-link hook, in the
 * current pass. 0, SYNC_HOOK_STALE or -1. */
static int relink_one(struct run *x, const char *from, const char *to,
                      struct cs_err *err)
{
    int r = sync_mirror_load(x->db, x->info.calendar_id, from, &x->old, err);
    if (r <= 0)
        return r;
    if ((r = sync_mirror_load(x->db, x->info.calendar_id, to, &x->succ, err)) <= 0)
        return r;
    if (x->succ.ev.start_ms == SYNC_NO_TIME || x->succ.ev.end_ms == SYNC_NO_TIME)
        return 0;
    if (x->ops->encode(&x->succ.ev, PROVIDER_ENC_EVENT, &x->raw))
        return cs_err_set(err, "out of memory");
    if (x->info.pass == SYNC_PASS_DECIDE)
        return relink_fn(relink_ud, x->db, &x->info, &x->old.ev, &x->succ.ev,
                         x->raw.data, x->raw.len, err) < 0 ? -1 : 0;
    /* each successor occurrence is taken once per sync, whatever series */
    if (events_relinked_add(x->db, to, err))
        return -1;
    x->stats->relinked++;
    x->stats->changes++;
    if ((r = relink_fn(relink_ud, x->db, &x->info, &x->old.ev, &x->succ.ev, x->raw.data,
                       x->raw.len, err)))
        return r;
    log_info("sync.relinked", "calendar=%lld from=%s to=%s", (long long)x->info.calendar_id,
             log_q(from), log_q(to));
    fault_point("sync_after_relink");
    return 0;
}

/* A unit per (vanished, successor) pair, listed as ids 2i and 2i + 1. */
static int unit_relink(struct run *x, size_t i, void *ud, struct cs_err *err)
{
    return relink_one(x, sync_ids_at(ud, 2 * i), sync_ids_at(ud, 2 * i + 1), err);
}

/* The occurrences of `series` that Google's instances no longer list at
 * all, paired with the occurrences of its split successors: every pair is
 * found first (reading only), then each is a unit. */
static int relink_split(struct run *x, const char *series, struct cs_err *err)
{
    struct occ_list gone = {0}, succ = {0}, seen = {0};
    struct buf created;
    struct id_list pairs;
    int rc = -1;
    sync_ids_init(&pairs);
    buf_init(&gone.arena);
    buf_init(&succ.arena);
    buf_init(&seen.arena);
    buf_init(&created);
    int r = events_vanished(x->db, x->info.calendar_id, series, SYNC_MAX_RELINK, occ_add,
                            &gone, err);
    if (r) {
        if (r > 0)
            cs_err_set(err, "out of memory");
        goto done;
    }
    if (gone.n == 0) {
        rc = 0;
        goto done;
    }
    if (events_series_created(x->db, x->info.calendar_id, series, &created, err) < 0)
        goto done;
    r = events_successors(x->db, x->info.calendar_id, series,
                          created.len ? created.data : NULL, SYNC_MAX_RELINK, occ_add, &succ,
                          err);
    if (r) {
        if (r > 0)
            cs_err_set(err, "out of memory");
        goto done;
    }
    /* a successor starts at the split: one with an earlier occurrence is
     * some other series (rows come in original-start order, so the first
     * row of a series is its earliest) */
    int64_t bound = gone.v[0].orig - SYNC_SPLIT_WINDOW_MS;
    for (size_t i = 0; i < succ.n; i++) {
        const char *sid = succ.arena.data + succ.v[i].series;
        size_t k;
        for (k = 0; k < seen.n; k++)
            if (strcmp(seen.arena.data + seen.v[k].series, sid) == 0)
                break;
        if (k == seen.n) {
            if (occ_push(&seen, "", sid, succ.v[i].orig)) {
                cs_err_set(err, "out of memory");
                goto done;
            }
            seen.v[k].used = succ.v[i].orig < bound; /* used = rejected */
        }
        succ.v[i].used = succ.v[i].used || seen.v[k].used;
    }
    size_t lo = 0;
    for (size_t i = 0; i < gone.n; i++) {
        int64_t t = gone.v[i].orig;
        while (lo < succ.n && succ.v[lo].orig <= t - SYNC_SPLIT_WINDOW_MS)
            lo++;
        size_t best = succ.n;
        int64_t best_d = 0;
        for (size_t j = lo; j < succ.n && succ.v[j].orig < t + SYNC_SPLIT_WINDOW_MS; j++) {
            if (succ.v[j].used)
                continue;
            int64_t d = succ.v[j].orig > t ? succ.v[j].orig - t : t - succ.v[j].orig;
            if (best == succ.n || d < best_d) {
                best = j;
                best_d = d;
            }
        }
        if (best == succ.n)
            continue;
        succ.v[best].used = 1;
        if (sync_ids_push(&pairs, gone.arena.data + gone.v[i].id) ||
            sync_ids_push(&pairs, succ.arena.data + succ.v[best].id)) {
            cs_err_set(err, "out of memory");
            goto done;
        }
    }
    rc = sync_run_units(x, pairs.n / 2, unit_relink, &pairs, err);
done:
    sync_ids_free(&pairs);
    occ_free(&gone);
    occ_free(&succ);
    occ_free(&seen);
    buf_free(&created);
    return rc;
}

int sync_series_reconcile(struct run *x, struct cs_err *err)
{
    for (size_t o = 0; o < x->touched.len;) {
        const char *series = x->touched.data + o;
        o += strlen(series) + 1;
        /* found again first: what follows a re-linked occurrence has moved
         * (committed), so its deletion below, listed and decided after,
         * reaches only what follows it by id */
        if (relink_fn && relink_split(x, series, err))
            return -1;
        if (sync_report_listed(x, EVENTS_SERIES_GONE, series, err))
            return -1;
    }
    return 0;
}

