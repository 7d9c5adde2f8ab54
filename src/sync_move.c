/* sync_move.c -- events moved between two watched calendars of one
 * credential (Google's events.move, issue 19; docs/sync.md "Moves between
 * calendars").
 *
 * A moved event keeps its id: the source calendar lists it cancelled (a
 * bare stub, like a deletion), the destination lists it as new. Either
 * calendar may sync first, so each side checks the other before its page
 * is decided, with no transaction open (the provider is called):
 *
 *   source first   a cancelled whole event that bookings on this calendar
 *                  follow: is it live, same id, on another watched calendar
 *                  of the credential (ops->get)? Then it moved there.
 *   destination    a live whole event this calendar has not mirrored yet,
 *   first          that bookings on another watched calendar of the
 *                  credential follow: is it gone or cancelled there? Then
 *                  it moved here. (Still live there: the same id on two
 *                  calendars is an invitation's copy, not a move.)
 *
 * Each move found is a unit of its own, applied (the move hook: bookings,
 * audit, webhook) before the page's items, so the items are then decided
 * against bookings that already follow the event where it is: the source
 * sees a cancellation no booking follows any more, the destination a new
 * event whose booking already has its times. The second calendar's sync
 * finds nothing left to move. A crash between the move's commit and the
 * page's token leaves the same state: the check finds the booking moved.
 * Occurrences are not followed (a series moves whole, with its own ids).
 */
#include "sync_int.h"

#include "store/bookings.h"
#include "store/calendars.h"
#include "log.h"
#include "metrics.h"

#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* where a moved event is looked for: a credential's other calendars, at
 * most this many (each costs an events.get per moved event) */
#define SYNC_MOVE_SIBLINGS_MAX 16

static sync_move_fn move_fn;
static void *move_ud;

void sync_set_move_hook(sync_move_fn fn, void *ud)
{
    move_fn = fn;
    move_ud = ud;
}

static void count_uid(void *ud, const char *uid)
{
    (void)uid;
    (*(int *)ud)++;
}

/* How many bookings follow whole event id on calendar cal: >= 0, or -1. */
static int followers(struct run *x, int64_t cal, const char *id, struct cs_err *err)
{
    int n = 0;
    if (booking_refs_at(x->db, cal, id, -1, count_uid, &n, err))
        return -1;
    return n;
}

/* Event id on calendar ext: 1 live, 0 gone or cancelled, 2 unknown (the
 * provider refused or failed), -1 transient failure when strict. */
static int probe(struct run *x, const char *ext, const char *id, int strict,
                 struct sync_event *scratch, struct cs_err *err)
{
    int top = lua_gettop(x->L);
    int g = x->ops->get(x->px, ext, id, err);
    int rc;
    if (g == PROVIDER_OK)
        rc = x->ops->normalise(x->L, -1, scratch, err) == 0
                 ? strcmp(scratch->status, "cancelled") != 0
                 : 2;
    else if (g == PROVIDER_GONE)
        rc = 0;
    else if (g == PROVIDER_TRANSIENT && strict)
        rc = -1;
    else
        rc = 2;
    lua_settop(x->L, top);
    return rc;
}

static int push_move(struct run *x, const char *id, int64_t from, int64_t to,
                     struct cs_err *err)
{
    if (x->moved.n == x->moved_cap) {
        size_t cap = x->moved_cap ? x->moved_cap * 2 : 8;
        int64_t *f = realloc(x->moved_from, cap * sizeof *f);
        if (f)
            x->moved_from = f;
        int64_t *t = f ? realloc(x->moved_to, cap * sizeof *t) : NULL;
        if (!f || !t)
            return cs_err_set(err, "out of memory");
        x->moved_to = t;
        x->moved_cap = cap;
    }
    x->moved_from[x->moved.n] = from;
    x->moved_to[x->moved.n] = to;
    if (sync_ids_push(&x->moved, id))
        return cs_err_set(err, "out of memory");
    log_info("sync.event_moved", "event=%s from=%lld to=%lld", log_q(id), (long long)from,
             (long long)to);
    return 0;
}

int sync_moves_fetch(struct run *x, const struct provider_page *pg,
                     struct sync_event *scratch, struct cs_err *err)
{
    int64_t sib[SYNC_MOVE_SIBLINGS_MAX];
    char(*ext)[CAL_EXTERNAL_ID_MAX + 1] = NULL;
    char id[PROVIDER_ID_MAX + 1];
    int n_sib = 0, rc = -1;
    sync_ids_free(&x->moved);
    sync_ids_init(&x->moved);
    if (!move_fn || pg->n == 0)
        return 0;
    if (!(ext = malloc(SYNC_MOVE_SIBLINGS_MAX * sizeof *ext)))
        return cs_err_set(err, "out of memory");
    if (calendar_siblings(x->db, x->info.credential_id, x->info.calendar_id, sib, ext,
                          SYNC_MOVE_SIBLINGS_MAX, &n_sib, err))
        goto done;
    for (int i = 1; i <= pg->n && n_sib > 0; i++) {
        lua_rawgeti(x->L, pg->items, i);
        int r = x->ops->normalise(x->L, -1, scratch, err);
        int whole = r == 0 && !scratch->series_id;
        int cancelled = whole && strcmp(scratch->status, "cancelled") == 0;
        if (whole)
            snprintf(id, sizeof id, "%s", scratch->id);
        lua_pop(x->L, 1);
        if (!whole)
            continue;
        if (cancelled) {
            /* source first: only when something follows it here */
            if ((r = followers(x, x->info.calendar_id, id, err)) < 0)
                goto done;
            for (int s = 0; r > 0 && s < n_sib; s++) {
                /* a wrong "deleted" cancels bookings for good: a failed
                 * look fails the sync, which is retried */
                int p = probe(x, ext[s], id, 1, scratch, err);
                if (p < 0)
                    goto done;
                if (p == 1) {
                    if (push_move(x, id, x->info.calendar_id, sib[s], err))
                        goto done;
                    break;
                }
            }
            continue;
        }
        /* destination first: only an event this calendar never saw */
        if ((r = sync_mirror_load(x->db, x->info.calendar_id, id, &x->old, err)) < 0)
            goto done;
        if (r == 1)
            continue;
        for (int s = 0; s < n_sib; s++) {
            if ((r = followers(x, sib[s], id, err)) < 0)
                goto done;
            if (r == 0)
                continue;
            /* a failed look is no move: the source's own sync checks
             * again when it reads the cancellation */
            if (probe(x, ext[s], id, 0, scratch, err) == 0 &&
                push_move(x, id, sib[s], x->info.calendar_id, err))
                goto done;
            break;
        }
    }
    rc = 0;
done:
    free(ext);
    return rc;
}

static int unit_move(struct run *x, size_t i, void *ud, struct cs_err *err)
{
    (void)ud;
    if (x->info.pass == SYNC_PASS_DECIDE)
        return 0; /* nothing to decide: the booking follows its event */
    metrics_inc("calsync_sync_event_moves_total");
    return move_fn(move_ud, x->db, &x->info, sync_ids_at(&x->moved, i), x->moved_from[i],
                   x->moved_to[i], err);
}

int sync_moves_apply(struct run *x, struct cs_err *err)
{
    if (!move_fn || x->moved.n == 0)
        return 0;
    return sync_run_units(x, x->moved.n, unit_move, NULL, err);
}

void sync_moves_free(struct run *x)
{
    sync_ids_free(&x->moved);
    free(x->moved_from);
    free(x->moved_to);
    x->moved_from = x->moved_to = NULL;
    x->moved_cap = 0;
}
