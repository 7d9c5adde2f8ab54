/* writer.c -- forward sync jobs. See writer.h.
 *
 * Threads: `nthreads` writers, each owning the calendars whose id maps to
 * it (calendar_id % nthreads), so one booking's jobs always run on one
 * thread in id order, and a slow calendar delays only its own partition.
 *
 * Crash safety: a job stays `pending` until the transaction that records
 * its result commits. Inserts carry a key derived from the booking uid
 * (writer_event_id) and the provider's insert is idempotent on it
 * (provider.h), so a repeated insert -- a retry after a lost answer, or
 * the job run again after a crash between the provider's answer and the
 * commit -- adopts the event that exists: a uid never gets two events, and
 * no tag lookup (an extra list call per insert) is needed.
 */
#include "writer.h"
#include "store/events.h"
#include "store/queue.h"
#include "fault.h"

#include "booking.h"
#include "calendar.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "provider/provider.h"
#include "scheduler.h"
#include "sync.h"

#include <lua.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WRITER_BATCH 16
#define WRITER_MAX_THREADS 8

static const struct config *writer_cfg;
static pthread_t writer_threads[WRITER_MAX_THREADS];
static int writer_nthreads;
static pthread_mutex_t writer_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t writer_cv; /* CLOCK_MONOTONIC: made by cv_once */
static pthread_once_t writer_cv_once = PTHREAD_ONCE_INIT;
static int writer_stopping;
static unsigned long writer_kicks;
static void (*writer_sync_hook)(int64_t calendar_id);

static const char *const kind_names[] = {"insert", "patch", "delete"};

void writer_set_sync_hook(void (*fn)(int64_t calendar_id))
{
    writer_sync_hook = fn;
}

/* ---------------------------------------------------------------- enqueue */

int writer_enqueue(struct store_conn *c, enum writer_kind kind,
                   const char *booking_uid, int64_t calendar_id,
                   const char *attendees_json, struct cs_err *err)
{
    if (queue_enqueue_job(c, kind_names[kind], booking_uid, calendar_id, attendees_json,
                          err))
        return -1;
    return booking_write_pending(c, booking_uid, err);
}

void writer_event_id(const char *uid, char out[WRITER_EVENT_ID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256((const unsigned char *)uid, strlen(uid), md);
    out[0] = 'c';
    out[1] = 's';
    for (int i = 0; i < (WRITER_EVENT_ID_LEN - 2) / 2; i++) {
        out[2 + 2 * i] = hex[md[i] >> 4];
        out[3 + 2 * i] = hex[md[i] & 15];
    }
    out[WRITER_EVENT_ID_LEN] = '\0';
}

/* ------------------------------------------------------------------- jobs */

struct job {
    int64_t id;
    enum writer_kind kind;
    char uid[BOOKING_UID_MAX + 1];
    int64_t calendar_id;
    int attempts;
    char *payload; /* attendees JSON (insert), owned; may be NULL */
};


/* Marks the job done and recomputes the booking's write_state. */
static int finish_job(struct store_conn *c, const struct job *j, const char *state,
                      const char *error, struct cs_err *err)
{
    int failed = strcmp(state, "failed") == 0;
    if (failed ? queue_fail(c, j->id, error, err)
               : queue_done(c, QUEUE_JOBS, j->id, 0, error, err))
        return -1;
    return booking_write_ended(c, j->uid, failed, error, err);
}

static int retry_later(struct store_conn *c, const struct job *j,
                       const char *error, struct cs_err *err)
{
    return queue_retry(c, QUEUE_JOBS, j->id,
                       time_now_ms() + backoff_ms(j->attempts + 1, BACKOFF_BASE_MS,
                                                  BACKOFF_MAX_MS),
                       0, error, err);
}

/* A permanent failure: job and booking failed, CALENDAR_ERROR sent. */
static int fail_job(struct store_conn *c, const struct job *j, const char *why,
                    struct cs_err *err)
{
    log_warn("writer.failed", "booking=%s job=%s err=%s", log_q(j->uid),
             kind_names[j->kind], log_q(why));
    metrics_inc("calsync_writes_total{result=\"failed\"}");
    if (store_begin(c, err))
        return -1;
    if (finish_job(c, j, "failed", why, err) ||
        outbox_enqueue_calendar_error(c, j->calendar_id, "error", why, err) ||
        store_commit(c, err)) {
        store_rollback(c);
        return -1;
    }
    outbox_kick();
    return 0;
}

/* Records a Google event that calsync wrote: booking reference, etag and
 * the mirror row, so the sync that reads it back sees no change. */
static int record_event(struct store_conn *c, const struct job *j,
                        const struct sync_event *ev, struct cs_err *err)
{
    if (booking_event_written(c, j->uid, j->calendar_id, ev->id, ev->etag, err))
        return -1;
    /* the Meet link the insert asked for (writer_event_id keys it) */
    if (ev->conference_url && booking_set_conference_url(c, j->uid, ev->conference_url, err))
        return -1;
    return sync_mirror_put(c, j->calendar_id, ev, err);
}

static int audit_conflict(struct store_conn *c, const struct booking *b,
                          const char *reason, struct cs_err *err)
{
    struct buf snap;
    buf_init(&snap);
    booking_snapshot_json(b, &snap);
    struct audit_entry e = {.booking_uid = b->uid, .source = "api",
                            .change = "conflict", .action = "ignore",
                            .reason = reason, .before = snap.data, .after = snap.data};
    int rc = audit_append(c, &e, err) < 0 ? -1 : 0;
    buf_free(&snap);
    return rc;
}

/* The etag calsync last saw for an event (for If-Match when the booking
 * links an event calsync did not write). Valid until the next call. */
static const char *mirror_etag(struct store_conn *c, int64_t cal, const char *id)
{
    static _Thread_local char etag[SYNC_ETAG_MAX + 1];
    return events_etag(c, cal, id, etag, sizeof etag, NULL) == 1 ? etag : NULL;
}

/* 1 when the mirror shows the event cancelled (deleted in Google and
 * seen by a sync), else 0 (also when unknown or on error). */
static int mirror_cancelled(struct store_conn *c, int64_t cal, const char *id)
{
    struct buf arena;
    struct sync_event ev;
    buf_init(&arena);
    struct cs_err err = {{0}};
    int r = events_load(c, cal, id, &ev, &arena, &err) == 1 && ev.status &&
            strcmp(ev.status, "cancelled") == 0;
    buf_free(&arena);
    return r;
}

/* After a 412: reads the event and compares its times with what calsync
 * last saw of it (the mirror). 1 when the host moved it (or deleted it),
 * 0 when the times are as seen (fresh = the current etag), -1 when the
 * event could not be read. The decoded event is popped. */
static int host_moved(struct store_conn *c, const struct provider_ops *ops,
                      struct provider_ctx *px,
                      const struct calendar_ref *cal, int64_t calendar_id,
                      const struct booking *b, char fresh[SYNC_ETAG_MAX + 1],
                      struct cs_err *err)
{
    const char *event_id = b->event_id;
    lua_State *L = json_state();
    int top = lua_gettop(L);
    int rc = -1;
    if (ops->get(px, cal->external_id, event_id, err) != PROVIDER_OK)
        goto done;
    struct sync_event ev;
    if (ops->normalise(L, -1, &ev, err))
        goto done;
    snprintf(fresh, SYNC_ETAG_MAX + 1, "%s", ev.etag ? ev.etag : "");
    int64_t seen_start, seen_end;
    int r = events_times(c, calendar_id, event_id, &seen_start, &seen_end, err);
    if (r < 0)
        goto done;
    int same = r == 1 && seen_start == ev.start_ms && seen_end == ev.end_ms;
    /* A kill after Google applied this very patch but before its etag was
     * committed: the event already holds the booking's times, the mirror
     * the old ones. That is calsync's own write, not a host move. */
    same |= ev.start_ms == b->start_ms && ev.end_ms == b->end_ms;
    int cancelled = ev.status && strcmp(ev.status, "cancelled") == 0;
    rc = same && !cancelled && ev.etag ? 0 : 1;
done:
    lua_settop(L, top);
    return rc;
}

/* The event a delete job removes: the job's payload when it names one (the
 * old event of a booking moved to another calendar, PATCH calendar_id),
 * else the booking's event; NULL when there is none. */
static const char *delete_target(const struct job *j, const struct booking *b)
{
    return j->payload && *j->payload ? j->payload : b->event_id;
}

/* After a delete: the mirror shows the event cancelled, so the sync that
 * reads the cancellation back finds no change. */
static int mirror_cancel(struct store_conn *c, int64_t cal, const char *id,
                         struct cs_err *err)
{
    return events_set_cancelled(c, cal, id, err);
}

/* The provider step of a job: an enum provider_rc. On success the raw
 * event (insert/patch) is on the JSON state's top and *have_event is set. */
static int provider_step(struct store_conn *c, const struct provider_ops *ops,
                         struct provider_ctx *px, const struct job *j,
                         const struct booking *b, const struct calendar_ref *cal,
                         int *have_event, int *conflict, struct cs_err *err)
{
    int g = PROVIDER_OK;
    /* attendees go with an insert, and with a patch only when the app
     * changed them (the job's payload): a host's added guest is not
     * overwritten by an unrelated change */
    struct provider_write w = {.title = b->title, .start_ms = b->start_ms,
                               .end_ms = b->end_ms, .description = b->description,
                               .location = b->location, .time_zone = b->time_zone,
                               .attendees_json = j->payload};
    *have_event = 0;
    *conflict = 0;
    switch (j->kind) {
    case WRITER_INSERT: {
        if (b->event_id) /* done before a crash lost only the job row */
            break;
        char id[WRITER_EVENT_ID_LEN + 1];
        writer_event_id(b->uid, id);
        w.key = id;
        w.booking_tag = b->uid;
        if (!w.attendees_json)
            w.attendees_json = b->attendees;
        w.conference = b->conference != NULL;
        g = ops->insert(px, cal->external_id, &w, err);
        *have_event = g == PROVIDER_OK;
        break;
    }
    case WRITER_PATCH:
        if (!b->event_id) {
            g = PROVIDER_GONE;
            px->last.status = 404;
            cs_err_set(err, "booking has no Google event to patch");
            break;
        }
        {
            /* If-Match: the newest version calsync has seen -- the mirror
             * (the reverse path may have read a host edit since calsync's
             * own last write), else the etag of that write */
            const char *seen = mirror_etag(c, j->calendar_id, b->event_id);
            /* The mirror shows the event deleted: calsync has seen the
             * deletion and the policy has decided on it (flagged or
             * ignored), yet the booking stands, so the app wants its event
             * back (POST .../resolve revert, or a PATCH after that): the
             * patch restores it. A deletion calsync has not seen yet is
             * left alone (see the cancelled check in run_job), and so is
             * one the policy answered by cancelling the booking: an app's
             * patch queued before that decision must not bring back an
             * event whose booking is gone (the soak, seed 1). */
            w.restore = strcmp(b->status, "cancelled") != 0 &&
                        mirror_cancelled(c, j->calendar_id, b->event_id);
            g = ops->patch(px, cal->external_id, b->event_id, &w, seen ? seen : b->etag,
                           err);
        }
        fault_point(g == PROVIDER_OK ? "writer_after_patch" : NULL);
        if (g == PROVIDER_CONFLICT) {
            /* Someone edited the event since. Re-read it: if the host moved
             * it, the policy decides (no overwrite); if the host changed
             * something else, the app's change still applies on top. */
            char fresh[SYNC_ETAG_MAX + 1];
            int moved = host_moved(c, ops, px, cal, j->calendar_id, b, fresh, err);
            if (moved != 0) {
                *conflict = moved > 0;
                if (moved < 0)
                    g = PROVIDER_TRANSIENT;
                break;
            }
            g = ops->patch(px, cal->external_id, b->event_id, &w, fresh, err);
            if (g == PROVIDER_CONFLICT) {
                *conflict = 1;
                break;
            }
        }
        *have_event = g == PROVIDER_OK;
        break;
    case WRITER_DELETE:
        /* a moved booking's old event: its id is the job's payload, its
         * calendar (and credential) the job's, not the booking's */
        if (!delete_target(j, b))
            break;
        g = ops->remove(px, cal->external_id, delete_target(j, b), NULL, err);
        if (g == PROVIDER_GONE)
            g = PROVIDER_OK; /* already gone: the goal is met */
        fault_point(g == PROVIDER_OK ? "writer_after_delete" : NULL);
        break;
    }
    return g;
}

static void run_job(struct store_conn *c, const struct job *j)
{
    struct cs_err err = {{0}};
    struct booking b;
    struct calendar_ref cal;
    struct provider_ctx px = {.db = c};
    const struct provider_ops *ops = NULL;
    lua_State *L = json_state();
    int top = L ? lua_gettop(L) : 0;
    provider_set_priority(PROVIDER_PRIO_HIGH); /* the app's writes come first */
    int have_b = 0;

    int r = booking_get(c, j->uid, &b, &err);
    if (r <= 0 || calendar_ref_load(c, j->calendar_id, &cal, &err) <= 0) {
        if (r == 0 || r > 0) {
            if (store_begin(c, &err) == 0 &&
                (finish_job(c, j, "done", "booking or calendar gone", &err) ||
                 store_commit(c, &err)))
                store_rollback(c);
        }
        goto done;
    }
    have_b = 1;
    if (strcmp(cal.state, "revoked") == 0) {
        fail_job(c, j, "calendar access revoked (invalid_grant)", &err);
        goto done;
    }
    px.credential_id = cal.credential_id;
    r = provider_for_credential(c, cal.credential_id, &ops, &err);
    if (r > 0) {
        fail_job(c, j, err.msg, &err);
        goto done;
    }
    if (r < 0) {
        log_error("writer.db_error", "booking=%s err=%s", log_q(b.uid), log_q(err.msg));
        goto done;
    }
    int have_event = 0, conflict = 0;
    int g = provider_step(c, ops, &px, j, &b, &cal, &have_event, &conflict, &err);
    if (conflict) {
        /* The host edited the event after calsync's last write. Do not
         * overwrite it: record the conflict, and let the reverse path read
         * the host's version and hand it to the calendar's policy. */
        char why[300];
        snprintf(why, sizeof why, "the event changed in Google since calsync's last "
                 "write (412); the app's change was not written, the calendar's "
                 "policy decides the host's change");
        if (store_begin(c, &err) == 0 &&
            (audit_conflict(c, &b, why, &err) || finish_job(c, j, "done", "conflict", &err) ||
             store_commit(c, &err)))
            store_rollback(c);
        metrics_inc("calsync_writes_total{result=\"conflict\"}");
        log_info("writer.conflict", "booking=%s", log_q(b.uid));
        if (writer_sync_hook)
            writer_sync_hook(j->calendar_id);
        goto done;
    }
    if (g == PROVIDER_REVOKED) {
        fail_job(c, j, "calendar access revoked (invalid_grant)", &err);
        goto done;
    }
    if (g != PROVIDER_OK) {
        /* the provider's reason and its own message ("Invalid attendee
         * email"), which is what the app can act on */
        char why[600];
        snprintf(why, sizeof why, "%s %.64s: HTTP %ld %.64s%s%.300s", kind_names[j->kind],
                 b.uid, px.last.status, px.last.reason[0] ? px.last.reason : err.msg,
                 px.last.message[0] ? ": " : "", px.last.message);
        if (g == PROVIDER_TRANSIENT) {
            metrics_inc("calsync_writes_total{result=\"retry\"}");
            log_info("writer.retry", "booking=%s err=%s", log_q(b.uid), log_q(why));
            retry_later(c, j, why, &err);
        } else {
            fail_job(c, j, why, &err);
        }
        goto done;
    }
    struct sync_event ev;
    if (have_event && ops->normalise(L, -1, &ev, &err)) {
        fail_job(c, j, err.msg, &err);
        goto done;
    }
    if (have_event && j->kind != WRITER_DELETE && ev.status &&
        strcmp(ev.status, "cancelled") == 0) {
        /* The host deleted the event before this write landed: Google
         * patches (or, after a 409, returns) a cancelled event without
         * complaint, e.g. when calsync had no version to put in If-Match
         * yet. Recording it as calsync's own write would make the deletion
         * an echo, and the booking would never hear of it. Leave the
         * mirror alone and let the reverse path hand the deletion to the
         * policy. */
        log_info("writer.event_deleted", "booking=%s job=%s", log_q(b.uid),
                 kind_names[j->kind]);
        if (store_begin(c, &err) == 0 &&
            (finish_job(c, j, "done", "event deleted in Google meanwhile", &err) ||
             store_commit(c, &err)))
            store_rollback(c);
        metrics_inc("calsync_writes_total{result=\"deleted\"}");
        if (writer_sync_hook)
            writer_sync_hook(j->calendar_id);
        goto done;
    }
    if (store_begin(c, &err))
        goto done;
    if ((have_event && record_event(c, j, &ev, &err)) ||
        (j->kind == WRITER_DELETE && delete_target(j, &b) &&
         mirror_cancel(c, j->calendar_id, delete_target(j, &b), &err)) ||
        finish_job(c, j, "done", NULL, &err) || store_commit(c, &err)) {
        store_rollback(c);
        log_error("writer.db_error", "booking=%s err=%s", log_q(b.uid), log_q(err.msg));
        goto done;
    }
    fault_point("writer_after_commit");
    metrics_inc("calsync_writes_total{result=\"ok\"}");
    log_info("writer.done", "booking=%s job=%s", log_q(b.uid), kind_names[j->kind]);
done:
    if (L)
        lua_settop(L, top);
    if (have_b)
        booking_free(&b);
}

/* Claims up to WRITER_BATCH due jobs of this thread's lane (calendar_id
 * % writer_nthreads = part) on the durable queue (store/queue.h). */
static int load_due(struct store_conn *c, int part, struct job *jobs, int *n,
                    int64_t *next_due, struct cs_err *err)
{
    struct queue_job q[WRITER_BATCH];
    char claimer[QUEUE_CLAIMER_MAX + 1], role[32];
    *n = 0;
    *next_due = 0;
    /* while writes fail (a full disk) nothing is claimed: a claim is a
     * write, and jobs claimed but not run would sit out their lease once
     * the disk is back (writer_main waits and probes meanwhile) */
    if (store_writes_failing() && !store_healthy())
        return 0;
    snprintf(role, sizeof role, "writer-%d", part);
    queue_claimer(role, claimer);
    if (queue_claim_jobs(c, claimer, writer_nthreads, part, WRITER_BATCH, q, n, next_due,
                         err))
        return -1;
    for (int i = 0; i < *n; i++) {
        struct job *j = &jobs[i];
        j->id = q[i].id;
        j->kind = strcmp(q[i].kind, "insert") == 0  ? WRITER_INSERT
                  : strcmp(q[i].kind, "patch") == 0 ? WRITER_PATCH
                                                    : WRITER_DELETE;
        snprintf(j->uid, sizeof j->uid, "%s", q[i].uid);
        j->calendar_id = q[i].calendar_id;
        j->attempts = q[i].attempts;
        j->payload = q[i].payload;
    }
    return 0;
}

/* writer_cv is made on first use by whichever of writer_start(),
 * writer_kick() and writer_stop() comes first (an API write may kick before
 * the start); the writer threads run after writer_start(). */
static void cv_init(void)
{
    cond_init_monotonic(&writer_cv);
}

static void cv_once(void)
{
    pthread_once(&writer_cv_once, cv_init);
}

static int stopping(void)
{
    pthread_mutex_lock(&writer_mu);
    int s = writer_stopping;
    pthread_mutex_unlock(&writer_mu);
    return s;
}

static void *writer_main(void *arg)
{
    int part = (int)(intptr_t)arg;
    unsigned long seen = 0;
    struct job jobs[WRITER_BATCH];
    while (!stopping()) {
        struct cs_err err = {{0}};
        struct store_conn *c = store_conn(&err);
        int n = 0;
        int64_t next_due = 0, wait = 1000;
        if (c && load_due(c, part, jobs, &n, &next_due, &err) == 0) {
            /* While writes fail (a full disk), no job's result can be
             * recorded: each job stays due and would call Google again at
             * once, as fast as Google answers (an insert, a 409 and a get
             * per round), for as long as the disk is full. Wait instead,
             * probing once a second, until the store takes writes again. */
            if (n > 0 && store_writes_failing() && !store_healthy()) {
                for (int i = 0; i < n; i++)
                    free(jobs[i].payload);
                n = 0;
                next_due = 0;
            }
            for (int i = 0; i < n; i++) {
                if (!stopping()) {
                    sched_calendar_lock(jobs[i].calendar_id);
                    run_job(c, &jobs[i]);
                    sched_calendar_unlock(jobs[i].calendar_id);
                }
                free(jobs[i].payload);
            }
            if (n > 0)
                continue;
            if (next_due) {
                wait = next_due - time_now_ms();
                if (wait > 1000)
                    wait = 1000;
            }
        } else {
            log_error("writer.db_error", "err=%s", log_q(err.msg));
        }
        pthread_mutex_lock(&writer_mu);
        if (!writer_stopping && writer_kicks == seen)
            cond_wait_ms(&writer_cv, &writer_mu, wait);
        seen = writer_kicks;
        pthread_mutex_unlock(&writer_mu);
    }
    provider_thread_release_all();
    return NULL;
}

void writer_kick(void)
{
    cv_once();
    pthread_mutex_lock(&writer_mu);
    writer_kicks++;
    pthread_cond_broadcast(&writer_cv);
    pthread_mutex_unlock(&writer_mu);
}

int writer_start(const struct config *cfg, struct cs_err *err)
{
    cv_once();
    writer_cfg = cfg;
    writer_stopping = 0;
    writer_nthreads = cfg->workers / 2 < 1 ? 1 : cfg->workers / 2;
    if (writer_nthreads > WRITER_MAX_THREADS)
        writer_nthreads = WRITER_MAX_THREADS;
    for (int i = 0; i < writer_nthreads; i++) {
        if (pthread_create(&writer_threads[i], NULL, writer_main, (void *)(intptr_t)i)) {
            writer_nthreads = i;
            writer_stop();
            return cs_err_set(err, "cannot start writer threads");
        }
    }
    return 0;
}

void writer_stop(void)
{
    provider_cancel_all(); /* a writer in a retry wait or transfer returns now */
    cv_once();
    pthread_mutex_lock(&writer_mu);
    writer_stopping = 1;
    pthread_cond_broadcast(&writer_cv);
    pthread_mutex_unlock(&writer_mu);
    for (int i = 0; i < writer_nthreads; i++)
        pthread_join(writer_threads[i], NULL);
    writer_nthreads = 0;
}
