/* queue.c -- the durable queue (jobs, outbox): enqueue, claim with a
 * lease, complete, retry, fail. See queue.h for the model.
 *
 * Every SQL text of the jobs and outbox tables lives here. A claim is one
 * UPDATE ... WHERE id IN (SELECT the due items ... LIMIT n) RETURNING the
 * items, in a write transaction: with SQLite the transaction is the only
 * writer, so the select and the mark are atomic; PostgreSQL needs
 * FOR UPDATE SKIP LOCKED in the subquery (docs/internals/store.md).
 *
 * A claimer's own claims are free to it: it claims only between batches,
 * so an item it still holds then is one whose outcome it could not
 * record (a full disk, a stop) and must be tried again now, not after
 * the lease -- as before claims, when the item simply stayed due.
 */
#include "store/queue.h"
#include "store/db.h"
#include "store/postgres/pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The claims this thread holds, renewed as it completes items: the
 * queue, the claimer and when the lease was last set. */
static _Thread_local struct {
    int active;
    enum queue_name q;
    char claimer[QUEUE_CLAIMER_MAX + 1];
    int64_t leased_at;
} queue_held;

void queue_claimer(const char *role, char out[QUEUE_CLAIMER_MAX + 1])
{
    static int64_t started;
    if (!started)
        started = time_now_ms();
    int64_t key = db_postgres() ? pg_owner_key() : 0;
    if (key > 0) /* named after the owner's liveness key: queue_release_dead */
        snprintf(out, QUEUE_CLAIMER_MAX + 1, "%lld/%ld.%lld/%s.%ld", (long long)key,
                 (long)getpid(), (long long)started, role, (long)gettid());
    else
        snprintf(out, QUEUE_CLAIMER_MAX + 1, "%ld.%lld/%s.%ld", (long)getpid(),
                 (long long)started, role, (long)gettid());
}

/* ---------------------------------------------------------------- enqueue */

int queue_enqueue_job(struct store_conn *c, const char *kind, const char *uid,
                      int64_t calendar_id, const char *payload, struct cs_err *err)
{
    static const char sql[] =
        "INSERT INTO jobs (kind, booking_uid, calendar_id, next_at, created_at, payload)"
        " VALUES (?1, ?2, ?3, ?4, ?4, ?5)";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, kind);
    db_bind_text(st, 2, uid);
    db_bind_i64(st, 3, calendar_id);
    db_bind_i64(st, 4, time_now_ms());
    db_bind_text(st, 5, payload);
    return db_exec(c, st, err);
}

int queue_enqueue_delivery(struct store_conn *c, const char *delivery_id,
                           const char *subscriber, const char *uid,
                           const char *trigger, const char *body, struct cs_err *err)
{
    static const char sql[] =
        "INSERT INTO outbox (delivery_id, subscriber, booking_uid, trigger,"
        " body, next_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, delivery_id);
    db_bind_text(st, 2, subscriber);
    db_bind_text(st, 3, uid);
    db_bind_text(st, 4, trigger);
    db_bind_text(st, 5, body);
    db_bind_i64(st, 6, time_now_ms());
    return db_exec(c, st, err);
}

/* ------------------------------------------------------------------ claim */

/* Runs a claim statement (bound by the caller but for nothing else) in
 * its own write transaction, handing each returned row to `row`; then,
 * when nothing was claimed, `next_sql` (bound by `bind_next`) for the
 * earliest claimable time. Rows come back from RETURNING in no promised
 * order: the callers sort them by id. */
struct claim_ops {
    int (*row)(void *ud, int i, struct db_stmt *st);
    void (*bind_next)(void *ud, struct db_stmt *st);
    void *ud;
};

static int claim_run(struct store_conn *c, enum queue_name q, const char *claimer,
                     struct db_stmt *st, const char *next_sql, int max, int *n,
                     int64_t *next_due, const struct claim_ops *ops, struct cs_err *err)
{
    int s;
    *n = 0;
    *next_due = 0;
    while ((s = db_step(st)) == DB_ROW && *n < max) {
        if (ops->row(ops->ud, *n, st)) {
            cs_err_set(err, "out of memory");
            goto done;
        }
        (*n)++;
    }
    if (s != DB_ROW && s != DB_DONE) {
        db_error(c, err);
        goto done;
    }
    db_reset(st);
    if (store_commit(c, err))
        goto done;
    queue_held.active = *n > 0;
    queue_held.q = q;
    snprintf(queue_held.claimer, sizeof queue_held.claimer, "%s", claimer);
    queue_held.leased_at = time_now_ms();
    if (*n == 0) {
        struct db_stmt *nx = db_stmt(c, next_sql, err);
        if (!nx)
            return -1;
        ops->bind_next(ops->ud, nx);
        if (db_step(nx) == DB_ROW && !db_col_null(nx, 0))
            *next_due = db_col_i64(nx, 0);
        db_reset(nx);
    }
    return 0;
done:
    db_reset(st);
    store_rollback(c);
    return -1;
}

static char *dup_or_null(const char *s, int *oom)
{
    char *d = s ? strdup(s) : NULL;
    if (s && !d)
        *oom = 1;
    return d;
}

struct job_claim {
    struct queue_job *out;
    int parts, part;
    const char *claimer;
};

static int job_row(void *ud, int i, struct db_stmt *st)
{
    struct job_claim *jc = ud;
    struct queue_job *j = &jc->out[i];
    int oom = 0;
    const char *kind = db_col_text(st, 1), *uid = db_col_text(st, 2);
    j->id = db_col_i64(st, 0);
    snprintf(j->kind, sizeof j->kind, "%s", kind ? kind : "");
    snprintf(j->uid, sizeof j->uid, "%s", uid ? uid : "");
    j->calendar_id = db_col_i64(st, 3);
    j->attempts = db_col_int(st, 4);
    j->payload = dup_or_null(db_col_text(st, 5), &oom);
    return oom ? -1 : 0;
}

static void job_next(void *ud, struct db_stmt *st)
{
    struct job_claim *jc = ud;
    db_bind_i64(st, 1, jc->parts);
    db_bind_i64(st, 2, jc->part);
    db_bind_text(st, 3, jc->claimer);
}

static int job_cmp(const void *a, const void *b)
{
    const struct queue_job *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

int queue_claim_jobs(struct store_conn *c, const char *claimer, int parts, int part,
                     int max, struct queue_job *out, int *n, int64_t *next_due,
                     struct cs_err *err)
{
    /* an item behind an older pending one of its booking waits for it,
     * claimed or not: per-booking order */
    static const char sql[] =
        "UPDATE jobs SET claimed_by = ?5, claimed_until = ?1 + ?6"
        " WHERE id IN (SELECT j.id FROM jobs j"
        "   WHERE j.state = 'pending' AND j.next_at <= ?1 AND j.calendar_id % ?2 = ?3"
        "     AND (j.claimed_until IS NULL OR j.claimed_until <= ?1 OR j.claimed_by = ?5)"
        "     AND NOT EXISTS (SELECT 1 FROM jobs p WHERE p.booking_uid = j.booking_uid"
        "       AND p.state = 'pending' AND p.id < j.id)"
        "   ORDER BY j.id LIMIT ?4)"
        " RETURNING id, kind, booking_uid, calendar_id, attempts, payload";
    static const char next_sql[] =
        "SELECT min(CASE WHEN claimed_until > next_at AND claimed_by <> ?3"
        "   THEN claimed_until ELSE next_at END)"
        " FROM jobs WHERE state = 'pending' AND calendar_id % ?1 = ?2";
    struct job_claim jc = {out, parts < 1 ? 1 : parts, part, claimer};
    struct claim_ops ops = {job_row, job_next, &jc};
    *n = 0;
    if (store_begin(c, err))
        return -1;
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st) {
        store_rollback(c);
        return -1;
    }
    int64_t now = time_now_ms();
    db_bind_i64(st, 1, now);
    db_bind_i64(st, 2, jc.parts);
    db_bind_i64(st, 3, part);
    db_bind_i64(st, 4, max);
    db_bind_text(st, 5, claimer);
    db_bind_i64(st, 6, QUEUE_LEASE_MS);
    int rc = claim_run(c, QUEUE_JOBS, claimer, st, next_sql, max, n, next_due, &ops, err);
    if (rc) {
        for (int i = 0; i < *n; i++)
            free(out[i].payload);
        *n = 0;
        return -1;
    }
    qsort(out, (size_t)*n, sizeof *out, job_cmp);
    return 0;
}

struct delivery_claim {
    struct queue_delivery *out;
    const char *subscriber;
    const char *claimer;
};

static int delivery_row(void *ud, int i, struct db_stmt *st)
{
    struct delivery_claim *dc = ud;
    struct queue_delivery *d = &dc->out[i];
    int oom = 0;
    const char *id = db_col_text(st, 1), *body = db_col_text(st, 2);
    d->id = db_col_i64(st, 0);
    snprintf(d->delivery_id, sizeof d->delivery_id, "%s", id ? id : "");
    d->body = dup_or_null(body ? body : "", &oom);
    d->attempts = db_col_int(st, 3);
    return oom ? -1 : 0;
}

static void delivery_next(void *ud, struct db_stmt *st)
{
    struct delivery_claim *dc = ud;
    db_bind_text(st, 1, dc->subscriber);
    db_bind_text(st, 2, dc->claimer);
}

static int delivery_cmp(const void *a, const void *b)
{
    const struct queue_delivery *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

/* Row o is the oldest pending row of its booking for subscriber ?1 (the
 * calendar rows, booking_uid NULL, are one ordering key of their own).
 * Written as two lookups of index outbox_booking_pending, `=` and `IS
 * NULL`, rather than one NULL-safe equality: PostgreSQL cannot use an
 * index for `IS NOT DISTINCT FROM`, and each claim then read every
 * pending row once per pending row (3,000 pending: 1.3-2.9 s a claim,
 * against 55 ms; bench item instances). */
#define OUTBOX_FIRST_OF_BOOKING                                                       \
    "NOT EXISTS (SELECT 1 FROM outbox p WHERE p.booking_uid = o.booking_uid"          \
    "  AND p.state = 'pending' AND p.subscriber = ?1 AND p.id < o.id)"                \
    " AND (o.booking_uid IS NOT NULL OR NOT EXISTS (SELECT 1 FROM outbox p"           \
    "  WHERE p.booking_uid IS NULL AND p.state = 'pending' AND p.subscriber = ?1"      \
    "  AND p.id < o.id))"

int queue_claim_deliveries(struct store_conn *c, const char *claimer,
                           const char *subscriber, int max, struct queue_delivery *out,
                           int *n, int64_t *next_due, struct cs_err *err)
{
    /* `+o.next_at`: walk the pending rows in id order (index
     * outbox_pending_id) and stop at the batch, rather than read every
     * pending row through (state, next_at) and sort them: O(batch) instead
     * of O(pending) per call (migration 6). */
    static const char sql[] =
        "UPDATE outbox SET claimed_by = ?4, claimed_until = ?2 + ?5"
        " WHERE id IN (SELECT o.id FROM outbox o"
        "   WHERE o.subscriber = ?1 AND o.state = 'pending' AND +o.next_at <= ?2"
        "     AND (o.claimed_until IS NULL OR o.claimed_until <= ?2 OR o.claimed_by = ?4)"
        "     AND " OUTBOX_FIRST_OF_BOOKING
        "   ORDER BY o.id LIMIT ?3)"
        " RETURNING id, delivery_id, body, attempts";
    /* a due row behind an older pending one of its booking waits for that
     * one's retry: counting it would make the sender spin until then */
    static const char next_sql[] =
        "SELECT min(CASE WHEN o.claimed_until > o.next_at AND o.claimed_by <> ?2"
        "   THEN o.claimed_until"
        "   ELSE o.next_at END) FROM outbox o"
        " WHERE o.subscriber = ?1 AND o.state = 'pending'"
        "   AND " OUTBOX_FIRST_OF_BOOKING;
    struct delivery_claim dc = {out, subscriber, claimer};
    struct claim_ops ops = {delivery_row, delivery_next, &dc};
    *n = 0;
    if (store_begin(c, err))
        return -1;
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st) {
        store_rollback(c);
        return -1;
    }
    int64_t now = time_now_ms();
    db_bind_text(st, 1, subscriber);
    db_bind_i64(st, 2, now);
    db_bind_i64(st, 3, max);
    db_bind_text(st, 4, claimer);
    db_bind_i64(st, 5, QUEUE_LEASE_MS);
    int rc = claim_run(c, QUEUE_OUTBOX, claimer, st, next_sql, max, n, next_due, &ops, err);
    if (rc) {
        for (int i = 0; i < *n; i++)
            free(out[i].body);
        *n = 0;
        return -1;
    }
    qsort(out, (size_t)*n, sizeof *out, delivery_cmp);
    return 0;
}

/* ------------------------------------------------------ complete / retry */

/* Once half the lease has passed since it was set, extends the lease of
 * the claims this thread still holds: a batch whose items take long
 * (Google calls, slow subscribers) keeps them. No write otherwise. */
static int renew(struct store_conn *c, enum queue_name q, struct cs_err *err)
{
    static const char *const sql[] = {
        [QUEUE_JOBS] = "UPDATE jobs SET claimed_until = ?2"
                       " WHERE claimed_by = ?1 AND state = 'pending'",
        [QUEUE_OUTBOX] = "UPDATE outbox SET claimed_until = ?2"
                         " WHERE claimed_by = ?1 AND state = 'pending'",
    };
    int64_t now = time_now_ms();
    if (!queue_held.active || queue_held.q != q ||
        now - queue_held.leased_at < QUEUE_LEASE_MS / 2)
        return 0;
    struct db_stmt *st = db_stmt(c, sql[q], err);
    if (!st)
        return -1;
    db_bind_text(st, 1, queue_held.claimer);
    db_bind_i64(st, 2, now + QUEUE_LEASE_MS);
    if (db_exec(c, st, err))
        return -1;
    queue_held.leased_at = now;
    return 0;
}

int queue_done(struct store_conn *c, enum queue_name q, int64_t id, int64_t status,
               const char *note, struct cs_err *err)
{
    static const char *const sql[] = {
        [QUEUE_JOBS] = "UPDATE jobs SET state = 'done', last_error = ?3,"
                       " attempts = attempts + 1, claimed_by = NULL, claimed_until = NULL"
                       " WHERE id = ?1",
        [QUEUE_OUTBOX] = "UPDATE outbox SET state = 'delivered', attempts = attempts + 1,"
                         " last_status = ?2, delivered_at = ?4,"
                         " claimed_by = NULL, claimed_until = NULL WHERE id = ?1",
    };
    struct db_stmt *st = db_stmt(c, sql[q], err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    if (q == QUEUE_OUTBOX) {
        db_bind_i64(st, 2, status);
        db_bind_i64(st, 4, time_now_ms());
    } else {
        db_bind_text(st, 3, note);
    }
    return db_exec(c, st, err) || renew(c, q, err) ? -1 : 0;
}

int queue_retry(struct store_conn *c, enum queue_name q, int64_t id, int64_t at,
                int64_t status, const char *note, struct cs_err *err)
{
    static const char *const sql[] = {
        [QUEUE_JOBS] = "UPDATE jobs SET attempts = attempts + 1, last_error = ?3,"
                       " next_at = ?4, claimed_by = NULL, claimed_until = NULL"
                       " WHERE id = ?1",
        [QUEUE_OUTBOX] = "UPDATE outbox SET attempts = attempts + 1, last_status = ?2,"
                         " next_at = ?4, claimed_by = NULL, claimed_until = NULL"
                         " WHERE id = ?1",
    };
    struct db_stmt *st = db_stmt(c, sql[q], err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    if (q == QUEUE_OUTBOX)
        db_bind_i64(st, 2, status);
    else
        db_bind_text(st, 3, note);
    db_bind_i64(st, 4, at);
    return db_exec(c, st, err) || renew(c, q, err) ? -1 : 0;
}

int queue_fail(struct store_conn *c, int64_t job_id, const char *why, struct cs_err *err)
{
    static const char sql[] =
        "UPDATE jobs SET state = 'failed', last_error = ?2, attempts = attempts + 1,"
        " claimed_by = NULL, claimed_until = NULL WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, job_id);
    db_bind_text(st, 2, why);
    return db_exec(c, st, err) || renew(c, QUEUE_JOBS, err) ? -1 : 0;
}

int queue_release_all(struct store_conn *c, struct cs_err *err)
{
    static const char jobs_sql[] =
        "UPDATE jobs SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by IS NOT NULL";
    static const char outbox_sql[] =
        "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL"
        " WHERE claimed_by IS NOT NULL";
    int64_t n = 0;
    struct db_stmt *st;
    if (store_begin(c, err))
        return -1;
    if (!(st = db_stmt(c, jobs_sql, err)) || db_exec(c, st, err))
        goto fail;
    n += db_changes(c);
    if (!(st = db_stmt(c, outbox_sql, err)) || db_exec(c, st, err))
        goto fail;
    n += db_changes(c);
    if (store_commit(c, err))
        return -1;
    return (int)n;
fail:
    store_rollback(c);
    return -1;
}

/* PostgreSQL: releases the pending items whose claimer's liveness key
 * (the claim name up to its first '/') no session of this database holds.
 * A bigint advisory lock shows in pg_locks as classid = its high 32 bits,
 * objid = its low 32 bits, objsubid = 1 (2 is the two-int4 key space);
 * `database` keeps another database's keys on the same server apart. A
 * claim with no key (not made by `serve`) matches nothing: released too.
 * One autocommit statement per queue, each under the write lock, so it
 * cannot interleave with a claim. */
int queue_release_dead(struct store_conn *c, struct cs_err *err)
{
#define HELD_KEYS                                                                     \
    " AND split_part(claimed_by, '/', 1) NOT IN (SELECT"                             \
    "   ((l.classid::bigint << 32) | l.objid::bigint)::text FROM pg_locks l"         \
    "  WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted"               \
    "    AND l.database = (SELECT oid FROM pg_database"                              \
    "                       WHERE datname = current_database()))"
    static const char *const sql[] = {
        [QUEUE_JOBS] = "UPDATE jobs SET claimed_by = NULL, claimed_until = NULL"
                       " WHERE state = 'pending' AND claimed_by IS NOT NULL" HELD_KEYS,
        [QUEUE_OUTBOX] = "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL"
                         " WHERE state = 'pending' AND claimed_by IS NOT NULL" HELD_KEYS,
    };
#undef HELD_KEYS
    int64_t n = 0;
    if (!db_postgres())
        return 0;
    if (pg_owner_check(err))
        return -1;
    for (int q = QUEUE_JOBS; q <= QUEUE_OUTBOX; q++) {
        struct db_stmt *st = db_stmt(c, sql[q], err);
        if (!st || db_exec(c, st, err))
            return -1;
        n += db_changes(c);
    }
    return (int)n;
}

/* --------------------------------------------------- outbox bookkeeping */

int queue_outbox_counts(struct store_conn *c, int64_t *pending, int64_t *orphaned,
                        struct cs_err *err)
{
    static const char sql[] =
        "SELECT state, count(*) FROM outbox WHERE state != 'delivered' GROUP BY state";
    struct db_stmt *st = db_stmt(c, sql, err);
    *pending = *orphaned = 0;
    if (!st)
        return -1;
    int s;
    while ((s = db_step(st)) == DB_ROW) {
        const char *state = db_col_text(st, 0);
        if (state && strcmp(state, "pending") == 0)
            *pending = db_col_i64(st, 1);
        else
            *orphaned += db_col_i64(st, 1);
    }
    db_reset(st);
    return s == DB_DONE ? 0 : db_error(c, err);
}

int queue_outbox_subscribers(struct store_conn *c, char **subs, int max, int *n,
                             struct cs_err *err)
{
    static const char sql[] = "SELECT DISTINCT subscriber FROM outbox WHERE state = 'pending'";
    struct db_stmt *st = db_stmt(c, sql, err);
    *n = 0;
    if (!st)
        return -1;
    while (*n < max && db_step(st) == DB_ROW) {
        const char *url = db_col_text(st, 0);
        if (url && (subs[*n] = strdup(url)))
            (*n)++;
    }
    db_reset(st);
    return 0;
}

int queue_outbox_orphan(struct store_conn *c, const char *subscriber, int64_t *n,
                        struct cs_err *err)
{
    static const char sql[] =
        "UPDATE outbox SET state = 'orphaned', claimed_by = NULL, claimed_until = NULL"
        " WHERE subscriber = ?1 AND state = 'pending'";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, subscriber);
    if (db_exec(c, st, err))
        return -1;
    *n = db_changes(c);
    return 0;
}

int queue_outbox_oldest(struct store_conn *c, int64_t *created_at, struct cs_err *err)
{
    static const char sql[] =
        "SELECT min(created_at) FROM outbox WHERE state = 'pending'";
    struct db_stmt *st = db_stmt(c, sql, err);
    *created_at = 0;
    if (!st)
        return -1;
    int s = db_step(st);
    if (s == DB_ROW && !db_col_null(st, 0))
        *created_at = db_col_i64(st, 0);
    db_reset(st);
    return s == DB_ROW || s == DB_DONE ? 0 : db_error(c, err);
}

int queue_prune(struct store_conn *c, enum queue_name q, int64_t before_ms, int limit,
                int64_t *n, struct cs_err *err)
{
    static const char *const sql[] = {
        [QUEUE_JOBS] = "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs"
                       " WHERE state IN ('done', 'failed') AND created_at < ?1"
                       " LIMIT ?2)",
        [QUEUE_OUTBOX] = "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox"
                         " WHERE state = 'delivered' AND delivered_at < ?1"
                         " LIMIT ?2)",
    };
    struct db_stmt *st = db_stmt(c, sql[q], err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, before_ms);
    db_bind_i64(st, 2, limit);
    if (db_exec(c, st, err))
        return -1;
    *n = db_changes(c);
    return 0;
}
