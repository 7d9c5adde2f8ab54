/* apply.c -- matching, classification, policy and application of one
 * changed event. See apply.h.
 *
 * Matching (DESIGN §2 step 4), a booking follows an event when
 *   - its event reference is the event id (a whole event), or
 *   - it follows an occurrence: reference = (series id, original start) and
 *     the event is that occurrence (recurringEventId + originalStartTime,
 *     or both parsed from a stub's instance id), or
 *   - the event carries calsync_booking_uid = its uid (events calsync wrote),
 *   - and a cancelled series master (a bare stub with the series id)
 *     cascades to every occurrence booking of that series.
 *
 * Idempotence: a change is applied to a booking only when the booking does
 * not already reflect it (echo of calsync's own write, same etag, or the
 * same values), and every audit entry carries a dedupe key
 * (calendar, event, etag, booking) that the audit table keeps unique.
 */
#include "apply.h"
#include "fault.h"

#include "calendar.h"

#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "policy.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define APPLY_MAX_MATCH 256

static const struct config *apply_cfg;
static pthread_key_t runner_key;
static pthread_once_t runner_once = PTHREAD_ONCE_INIT;

static void runner_free(void *p)
{
    if (p)
        policy_runner_free(p);
}

static void runner_key_init(void)
{
    pthread_key_create(&runner_key, runner_free);
}

void apply_init(const struct config *cfg)
{
    apply_cfg = cfg;
}

void apply_thread_done(void)
{
    pthread_once(&runner_once, runner_key_init);
    struct policy_runner *r = pthread_getspecific(runner_key);
    if (r) {
        pthread_setspecific(runner_key, NULL);
        policy_runner_free(r);
    }
}

static struct policy_runner *runner(void)
{
    pthread_once(&runner_once, runner_key_init);
    struct policy_runner *r = pthread_getspecific(runner_key);
    if (!r && (r = policy_runner_new(apply_cfg)))
        pthread_setspecific(runner_key, r);
    return r;
}

/* ----------------------------------------------------------- classify */

static int is_cancelled(const struct sync_event *e)
{
    return e->status && strcmp(e->status, "cancelled") == 0;
}

static int str_differs(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") != 0;
}

enum apply_kind apply_classify(const struct sync_event *base,
                               const struct booking *b,
                               const struct sync_event *now)
{
    if (is_cancelled(now))
        return base && is_cancelled(base) ? APPLY_NONE : APPLY_DELETE;
    int64_t bs = base ? base->start_ms : b->start_ms;
    int64_t be = base ? base->end_ms : b->end_ms;
    const char *bt = base ? base->title : b->title;
    if (base && is_cancelled(base)) {
        /* a cancelled event that comes back: judge against the booking */
        bs = b->start_ms;
        be = b->end_ms;
        bt = b->title;
    }
    if (now->start_ms != SYNC_NO_TIME && now->end_ms != SYNC_NO_TIME &&
        (now->start_ms != bs || now->end_ms != be))
        return APPLY_TIME;
    if (now->title && str_differs(now->title, bt))
        return APPLY_TITLE;
    return APPLY_NONE;
}

static const char *kind_name(enum apply_kind k)
{
    switch (k) {
    case APPLY_DELETE: return "delete";
    case APPLY_TIME: return "time_change";
    case APPLY_TITLE: return "title_change";
    default: return "none";
    }
}

/* ------------------------------------------------------------- matching */

struct matches {
    char *uid[APPLY_MAX_MATCH];
    int n;
};

static void add_match(struct matches *m, const char *uid)
{
    if (!uid || m->n == APPLY_MAX_MATCH)
        return;
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->uid[i], uid) == 0)
            return;
    char *d = strdup(uid);
    if (d)
        m->uid[m->n++] = d;
}

static void matches_free(struct matches *m)
{
    for (int i = 0; i < m->n; i++)
        free(m->uid[i]);
    m->n = 0;
}

static int collect(struct store_conn *c, sqlite3_stmt *st, struct matches *m,
                   struct cs_err *err)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        add_match(m, store_col_text(st, 0));
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return cs_err_set(err, "database: %s", sqlite3_errmsg(store_db(c)));
    return 0;
}

static int find_bookings(struct store_conn *c, int64_t cal,
                         const struct sync_event *now, struct matches *m,
                         struct cs_err *err)
{
    static const char by_event[] =
        "SELECT booking_uid FROM booking_refs WHERE calendar_id = ?1"
        " AND event_id = ?2 AND original_start_ms = ?3";
    static const char by_series[] =
        "SELECT booking_uid FROM booking_refs WHERE calendar_id = ?1"
        " AND event_id = ?2 AND original_start_ms >= 0";
    static const char by_tag[] =
        "SELECT uid FROM bookings WHERE uid = ?1 AND calendar_id = ?2";
    sqlite3_stmt *st = store_stmt(c, by_event, err);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, cal);
    sqlite3_bind_text(st, 2, now->id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, -1);
    if (collect(c, st, m, err))
        return -1;
    if (now->series_id && now->original_start_ms != SYNC_NO_TIME) {
        if (!(st = store_stmt(c, by_event, err)))
            return -1;
        sqlite3_bind_int64(st, 1, cal);
        sqlite3_bind_text(st, 2, now->series_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, now->original_start_ms);
        if (collect(c, st, m, err))
            return -1;
    }
    if (is_cancelled(now) && !now->series_id) {
        /* a cancelled master: every occurrence booking of the series */
        if (!(st = store_stmt(c, by_series, err)))
            return -1;
        sqlite3_bind_int64(st, 1, cal);
        sqlite3_bind_text(st, 2, now->id, -1, SQLITE_STATIC);
        if (collect(c, st, m, err))
            return -1;
    }
    if (now->booking_tag) {
        if (!(st = store_stmt(c, by_tag, err)))
            return -1;
        sqlite3_bind_text(st, 1, now->booking_tag, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, cal);
        if (collect(c, st, m, err))
            return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- apply */

struct cal_row {
    char policy[CAL_POLICY_NAME_MAX + 1];
    char *settings;
};

static int load_calendar(struct store_conn *c, int64_t id, struct cal_row *r,
                         struct cs_err *err)
{
    static const char sql[] = "SELECT policy, settings FROM calendars WHERE id = ?1";
    sqlite3_stmt *st = store_stmt(c, sql, err);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        snprintf(r->policy, sizeof r->policy, "%s", store_col_text(st, 0));
        r->settings = strdup(store_col_text(st, 1));
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW || !r->settings)
        return cs_err_set(err, "calendar %lld: cannot load", (long long)id);
    return 0;
}

static const char *trigger_for(const char *action)
{
    if (strcmp(action, "cancel") == 0) return "BOOKING_CANCELLED";
    if (strcmp(action, "reschedule") == 0) return "BOOKING_RESCHEDULED";
    if (strcmp(action, "update") == 0) return "BOOKING_UPDATED";
    if (strcmp(action, "flag") == 0) return "BOOKING_FLAGGED";
    return NULL;
}

/* Turns an action the change cannot support into flag. */
static void check_applicable(struct policy_decision *d, enum apply_kind k,
                             const struct sync_event *now)
{
    const char *why = NULL;
    if (strcmp(d->action, "reschedule") == 0 &&
        (k == APPLY_DELETE || now->start_ms == SYNC_NO_TIME))
        why = "reschedule needs the event's new times";
    else if (strcmp(d->action, "update") == 0 && (k == APPLY_DELETE || !now->title))
        why = "update needs the event's new title";
    if (why) {
        snprintf(d->reason, sizeof d->reason, "invalid decision: %s", why);
        snprintf(d->action, sizeof d->action, "flag");
        d->forced = 1;
        metrics_inc("calsync_policy_errors_total{kind=\"decision\"}");
    }
}

static int apply_one(struct store_conn *c, const struct sync_info *info,
                     const struct sync_event *old, const struct sync_event *now,
                     const char *raw, size_t raw_len, const char *uid,
                     const struct cal_row *cal, struct cs_err *err)
{
    struct booking b, before;
    int rc = booking_get(c, uid, &b, err);
    if (rc <= 0)
        return rc; /* gone: nothing to do */
    rc = -1;
    before = b;
    before.title = NULL;
    struct buf snap_before, snap_after;
    buf_init(&snap_before);
    buf_init(&snap_after);
    char *new_title = NULL;

    if (strcmp(b.status, "cancelled") == 0) {
        rc = 0; /* changes to cancelled bookings are dropped */
        goto done;
    }
    if (now->etag && b.etag && strcmp(now->etag, b.etag) == 0) {
        metrics_inc("calsync_echoes_total");
        rc = 0; /* the echo of calsync's own write */
        goto done;
    }
    if (!old && strcmp(b.write_state, "pending") == 0 && !is_cancelled(now)) {
        /* First sight of an event the app is changing right now: the
         * booking shows the app's pending write, not what Google had, so
         * comparing with it would mistake the app's own change for the
         * host's. The event becomes the baseline (the mirror) and the
         * pending write goes on top of it. Not a deletion, though: no
         * write goes on top of a deleted event (Google would patch it and
         * leave it cancelled), so the policy decides it now. */
        rc = 0;
        goto done;
    }
    enum apply_kind kind = apply_classify(old, &b, now);
    /* the booking already reflects it: nothing to decide (re-reads, echoes
     * of writes whose etag was not recorded yet) */
    if ((kind == APPLY_TIME && now->start_ms == b.start_ms && now->end_ms == b.end_ms &&
         !str_differs(now->title, b.title)) ||
        (kind == APPLY_TITLE && !str_differs(now->title, b.title)))
        kind = APPLY_NONE;
    if (kind == APPLY_NONE) {
        rc = 0;
        goto done;
    }
    int64_t now_ms = time_now_ms();
    int past = b.end_ms <= now_ms || (kind == APPLY_TIME && now->end_ms <= now_ms);
    struct policy_input in = {
        .kind = kind_name(kind),
        .event_json = raw,
        .event_len = raw_len,
        .old_start_ms = b.start_ms,
        .old_end_ms = b.end_ms,
        .old_title = b.title,
        .has_new = kind != APPLY_DELETE,
        .new_start_ms = now->start_ms != SYNC_NO_TIME ? now->start_ms : b.start_ms,
        .new_end_ms = now->end_ms != SYNC_NO_TIME ? now->end_ms : b.end_ms,
        .new_title = now->title ? now->title : b.title,
        .is_instance = now->series_id && now->original_start_ms != SYNC_NO_TIME,
        .series_id = now->series_id,
        .original_start_ms = now->original_start_ms,
        .past = past,
        .source = sync_source_name(info->source),
        .booking = &b,
        .now_ms = now_ms,
        .calendar_id = info->calendar_id,
        .settings_json = cal->settings,
    };
    struct policy_decision d;
    memset(&d, 0, sizeof d);
    struct policy_runner *r = runner();
    if (!r || policy_decide(r, cal->policy, &in, &d) != 0) {
        snprintf(d.action, sizeof d.action, "flag");
        snprintf(d.reason, sizeof d.reason, "policy '%s' has no live version",
                 cal->policy);
        snprintf(d.policy, sizeof d.policy, "%.63s", cal->policy);
        d.forced = 1;
    }
    check_applicable(&d, kind, now);

    booking_snapshot_json(&b, &snap_before);
    if (!(before.title = strdup(b.title))) {
        cs_err_set(err, "out of memory");
        goto done;
    }
    if (strcmp(d.action, "cancel") == 0) {
        snprintf(b.status, sizeof b.status, "cancelled");
        free(b.cancelled_by);
        free(b.cancel_reason);
        b.cancelled_by = strdup("google");
        b.cancel_reason = strdup(d.reason);
    } else if (strcmp(d.action, "reschedule") == 0) {
        b.start_ms = now->start_ms;
        b.end_ms = now->end_ms;
    } else if (strcmp(d.action, "update") == 0) {
        if (!(new_title = strdup(now->title))) {
            cs_err_set(err, "out of memory");
            goto done;
        }
        free(b.title);
        b.title = new_title;
    } else if (strcmp(d.action, "flag") == 0) {
        b.needs_review = 1;
    }
    int changed = strcmp(d.action, "ignore") != 0;
    if (changed)
        b.updated_ms = now_ms;
    booking_snapshot_json(&b, &snap_after);
    /* the audit entry goes first: its dedupe key refuses a second decision
     * for the same event version, and then nothing else is written */
    char key[512];
    snprintf(key, sizeof key, "%lld|%s|%s|%s", (long long)info->calendar_id,
             now->id, now->etag ? now->etag : "-", uid);
    struct audit_entry e = {
        .booking_uid = uid, .source = in.source, .change = in.kind,
        .action = d.action, .reason = d.reason, .policy = d.policy,
        .policy_version = d.version[0] ? d.version : NULL,
        .before = snap_before.data, .after = snap_after.data, .dedupe_key = key,
    };
    int dup = audit_append(c, &e, err);
    if (dup != 0) {
        rc = dup < 0 ? -1 : 0;
        goto done;
    }
    fault_point("apply_after_audit");
    if (changed && booking_save(c, &b, err))
        goto done;
    fault_point("apply_after_booking_save");
    const char *trigger = trigger_for(d.action);
    if (trigger && outbox_enqueue_booking(c, trigger, &b, &before, d.reason,
                                          in.source, d.policy,
                                          d.version[0] ? d.version : NULL, err))
        goto done;
    fault_point("apply_after_outbox_enqueue");
    /* the sender is woken after the page's commit (sync.c), not here: a
     * kick inside the transaction finds the row not yet visible */
    log_info("apply.decision", "booking=%s change=%s action=%s policy=%s version=%s source=%s",
             log_q(uid), in.kind, d.action, log_q(d.policy), d.version, in.source);
    rc = 0;
done:
    free(before.title);
    buf_free(&snap_before);
    buf_free(&snap_after);
    booking_free(&b);
    return rc;
}

/* Decides the change for every booking in m, with the calendar's policy
 * and settings loaded once. 0 (also for no booking) or -1. */
static int decide_all(struct store_conn *c, const struct sync_info *info,
                      const struct sync_event *old, const struct sync_event *now,
                      const char *raw_json, size_t raw_len, const struct matches *m,
                      struct cs_err *err)
{
    struct cal_row cal = {{0}, NULL};
    int rc = -1;
    if (m->n == 0)
        return 0;
    if (load_calendar(c, info->calendar_id, &cal, err))
        goto done;
    for (int i = 0; i < m->n; i++)
        if (apply_one(c, info, old, now, raw_json, raw_len, m->uid[i], &cal, err))
            goto done;
    rc = 0;
done:
    free(cal.settings);
    return rc;
}

/* Moves booking `uid` from (cal, old series, old original start) to the
 * successor occurrence: its booking_refs row and, when the booking's own
 * reference is that occurrence, bookings.event_id/original_start_ms. */
static int move_ref(struct store_conn *c, int64_t cal, const struct sync_event *old,
                    const struct sync_event *now, const char *uid, struct cs_err *err)
{
    static const char add_sql[] =
        "INSERT OR IGNORE INTO booking_refs (calendar_id, event_id,"
        " original_start_ms, booking_uid) VALUES (?1, ?2, ?3, ?4)";
    static const char del_sql[] =
        "DELETE FROM booking_refs WHERE calendar_id = ?1 AND event_id = ?2"
        " AND original_start_ms = ?3 AND booking_uid = ?4";
    static const char own_sql[] =
        "UPDATE bookings SET event_id = ?2, original_start_ms = ?3"
        " WHERE uid = ?1 AND calendar_id = ?4 AND event_id = ?5"
        " AND original_start_ms = ?6";
    sqlite3_stmt *st = store_stmt(c, add_sql, err);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, cal);
    sqlite3_bind_text(st, 2, now->series_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now->original_start_ms);
    sqlite3_bind_text(st, 4, uid, -1, SQLITE_STATIC);
    if (store_exec(c, st, err) || !(st = store_stmt(c, del_sql, err)))
        return -1;
    sqlite3_bind_int64(st, 1, cal);
    sqlite3_bind_text(st, 2, old->series_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, old->original_start_ms);
    sqlite3_bind_text(st, 4, uid, -1, SQLITE_STATIC);
    if (store_exec(c, st, err) || !(st = store_stmt(c, own_sql, err)))
        return -1;
    sqlite3_bind_text(st, 1, uid, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, now->series_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now->original_start_ms);
    sqlite3_bind_int64(st, 4, cal);
    sqlite3_bind_text(st, 5, old->series_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, old->original_start_ms);
    return store_exec(c, st, err);
}

int apply_relink(void *ud, struct store_conn *c, const struct sync_info *info,
                 const struct sync_event *old, const struct sync_event *now,
                 const char *raw_json, size_t raw_len, struct cs_err *err)
{
    static const char by_occ[] =
        "SELECT booking_uid FROM booking_refs WHERE calendar_id = ?1"
        " AND event_id = ?2 AND original_start_ms = ?3";
    (void)ud;
    struct matches m = {{0}, 0};
    int rc = -1;
    if (!old->series_id || old->original_start_ms == SYNC_NO_TIME ||
        !now->series_id || now->original_start_ms == SYNC_NO_TIME)
        return 0;
    sqlite3_stmt *st = store_stmt(c, by_occ, err);
    if (!st)
        goto done;
    sqlite3_bind_int64(st, 1, info->calendar_id);
    sqlite3_bind_text(st, 2, old->series_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, old->original_start_ms);
    if (collect(c, st, &m, err))
        goto done;
    if (m.n == 0) {
        rc = 0;
        goto done;
    }
    for (int i = 0; i < m.n; i++)
        if (move_ref(c, info->calendar_id, old, now, m.uid[i], err))
            goto done;
    fault_point("apply_after_relink_refs");
    for (int i = 0; i < m.n; i++)
        log_info("apply.relink", "booking=%s from=%s to=%s", log_q(m.uid[i]),
                 log_q(old->id), log_q(now->id));
    /* only the bookings that moved are decided here, against the vanished
     * occurrence as calsync last saw it: the change they see is the split */
    rc = decide_all(c, info, old, now, raw_json, raw_len, &m, err);
done:
    matches_free(&m);
    return rc;
}

int apply_change(void *ud, struct store_conn *c, const struct sync_info *info,
                 const struct sync_event *old, const struct sync_event *now,
                 const char *raw_json, size_t raw_len, struct cs_err *err)
{
    (void)ud;
    struct matches m = {{0}, 0};
    int rc = find_bookings(c, info->calendar_id, now, &m, err);
    if (rc == 0)
        rc = decide_all(c, info, old, now, raw_json, raw_len, &m, err);
    matches_free(&m);
    return rc;
}
