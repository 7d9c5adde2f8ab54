/* test_queue.c -- the durable queue under the writer's jobs and the
 * outbox (src/store/queue.c): claims are exclusive (also between threads
 * claiming at once on their own connections), an expired lease makes an
 * item claimable again, done and retry-at release it, a job can fail for
 * good, lanes split a queue, and the outbox hands out one booking's rows
 * strictly in order. */
#include "unit.h"

#include "store/db.h"
#include "store/queue.h"
#include "store/store.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[64];

static int setup(void **state)
{
    (void)state;
    struct cs_err err;
    snprintf(path, sizeof path, "/tmp/calsync-queue-%d.db", (int)getpid());
    unlink(path);
    return store_init(path, &err);
}

static int teardown(void **state)
{
    (void)state;
    store_shutdown();
    char p[80];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
    return 0;
}

/* each test starts from empty queues */
static int empty(void **state)
{
    (void)state;
    struct cs_err err;
    return db_script(store_conn(&err), "DELETE FROM jobs; DELETE FROM outbox;", &err);
}

static int64_t add_job(const char *uid, int64_t cal)
{
    struct cs_err err;
    struct store_conn *c = store_conn(&err);
    assert_int_equal(queue_enqueue_job(c, "insert", uid, cal, NULL, &err), 0);
    return db_last_id(c);
}

static int64_t add_delivery(const char *uid, const char *sub)
{
    static int n;
    char id[32];
    struct cs_err err;
    struct store_conn *c = store_conn(&err);
    snprintf(id, sizeof id, "dlv_%d", ++n);
    assert_int_equal(queue_enqueue_delivery(c, id, sub, uid, "T", "{}", &err), 0);
    return db_last_id(c);
}

static int claim_jobs(const char *claimer, int parts, int part, int max, int64_t *ids,
                      int64_t *next_due)
{
    struct queue_job j[64];
    int n = -1;
    int64_t nd = 0;
    struct cs_err err;
    assert_int_equal(queue_claim_jobs(store_conn(&err), claimer, parts, part, max, j, &n,
                                      &nd, &err), 0);
    for (int i = 0; i < n; i++) {
        ids[i] = j[i].id;
        free(j[i].payload);
    }
    if (next_due)
        *next_due = nd;
    return n;
}

static int claim_deliveries(const char *claimer, const char *sub, int64_t *ids,
                            int64_t *next_due)
{
    struct queue_delivery d[64];
    int n = -1;
    int64_t nd = 0;
    struct cs_err err;
    assert_int_equal(queue_claim_deliveries(store_conn(&err), claimer, sub, 64, d, &n, &nd,
                                            &err), 0);
    for (int i = 0; i < n; i++) {
        ids[i] = d[i].id;
        free(d[i].body);
    }
    if (next_due)
        *next_due = nd;
    return n;
}

static int64_t col_i64(const char *sql, int64_t id)
{
    struct cs_err err;
    struct db_stmt *st = db_stmt(store_conn(&err), sql, &err);
    assert_non_null(st);
    db_bind_i64(st, 1, id);
    assert_int_equal(db_step(st), DB_ROW);
    int64_t v = db_col_i64(st, 0);
    db_reset(st);
    return v;
}

static void test_two_claimers_never_share(void **state)
{
    (void)state;
    int64_t a[64], b[64], again[64];
    for (int i = 0; i < 10; i++) {
        char uid[16];
        snprintf(uid, sizeof uid, "u%d", i);
        add_job(uid, 1);
    }
    assert_int_equal(claim_jobs("A", 1, 0, 4, a, NULL), 4);
    assert_int_equal(claim_jobs("B", 1, 0, 64, b, NULL), 6);
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 6; k++)
            assert_true(a[i] != b[k]);
    /* in id order within a claim */
    for (int i = 1; i < 6; i++)
        assert_true(b[i - 1] < b[i]);
    /* nothing left for a third; next_due is when the leases end */
    int64_t next = 0, before = time_now_ms();
    assert_int_equal(claim_jobs("C", 1, 0, 64, again, &next), 0);
    assert_true(next >= before + QUEUE_LEASE_MS - 1000);
    /* a claimer's own claims are its to take again (an outcome it could
     * not record is retried now, not after the lease) */
    assert_int_equal(claim_jobs("A", 1, 0, 64, again, NULL), 4);
    assert_memory_equal(a, again, 4 * sizeof a[0]);
}

struct racer {
    char name[8];
    int64_t ids[256];
    int n;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    struct cs_err err;
    struct store_conn *c = store_conn(&err);
    struct queue_job j[8];
    for (int round = 0; round < 200 && c; round++) {
        int n = 0;
        int64_t nd;
        if (queue_claim_jobs(c, r->name, 1, 0, 3, j, &n, &nd, &err))
            break;
        for (int i = 0; i < n; i++) {
            r->ids[r->n++] = j[i].id;
            free(j[i].payload);
            /* completed: a retry must not hand it out again */
            queue_done(c, QUEUE_JOBS, j[i].id, 0, NULL, &err);
        }
    }
    return NULL;
}

static void test_concurrent_claims_are_exclusive(void **state)
{
    (void)state;
    enum { N = 120 };
    for (int i = 0; i < N; i++) {
        char uid[16];
        snprintf(uid, sizeof uid, "r%d", i);
        add_job(uid, 7);
    }
    struct racer r[3] = {{.name = "t0"}, {.name = "t1"}, {.name = "t2"}};
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&t[i], NULL, race, &r[i]), 0);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    static char seen[4096];
    memset(seen, 0, sizeof seen);
    int total = 0;
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < r[i].n; k++) {
            int64_t id = r[i].ids[k];
            assert_true(id > 0 && id < (int64_t)sizeof seen);
            assert_int_equal(seen[id], 0); /* never handed out twice */
            seen[id] = 1;
            total++;
        }
    assert_int_equal(total, N);
}

static void test_expired_lease_is_reclaimed(void **state)
{
    (void)state;
    static const char expire_sql[] = "UPDATE jobs SET claimed_until = ?1 WHERE id = ?2";
    int64_t ids[8];
    int64_t id = add_job("lease", 1);
    assert_int_equal(claim_jobs("dead", 1, 0, 8, ids, NULL), 1);
    assert_int_equal(claim_jobs("alive", 1, 0, 8, ids, NULL), 0);
    /* the claimer died: its lease runs out */
    struct cs_err err;
    struct store_conn *c = store_conn(&err);
    struct db_stmt *st = db_stmt(c, expire_sql, &err);
    db_bind_i64(st, 1, time_now_ms() - 1);
    db_bind_i64(st, 2, id);
    assert_int_equal(db_exec(c, st, &err), 0);
    assert_int_equal(claim_jobs("alive", 1, 0, 8, ids, NULL), 1);
    assert_int_equal(ids[0], id);
    /* and a start that owns the database releases every claim at once */
    assert_int_equal(claim_jobs("dead", 1, 0, 8, ids, NULL), 0);
    assert_int_equal(queue_release_all(c, &err), 1);
    assert_int_equal(claim_jobs("dead", 1, 0, 8, ids, NULL), 1);
}

static void test_done_retry_fail(void **state)
{
    (void)state;
    struct cs_err err;
    struct store_conn *c = store_conn(&err);
    int64_t ids[8], next = 0;
    int64_t done = add_job("d", 1), retry = add_job("r", 1), fail = add_job("f", 1);
    assert_int_equal(claim_jobs("A", 1, 0, 8, ids, NULL), 3);
    assert_int_equal(queue_done(c, QUEUE_JOBS, done, 0, NULL, &err), 0);
    int64_t at = time_now_ms() + 3600000;
    assert_int_equal(queue_retry(c, QUEUE_JOBS, retry, at, 0, "HTTP 503", &err), 0);
    assert_int_equal(queue_fail(c, fail, "HTTP 400", &err), 0);
    /* none is claimable now, not even by its claimer; the retry is due at `at` */
    assert_int_equal(claim_jobs("A", 1, 0, 8, ids, &next), 0);
    assert_int_equal(next, at);
    assert_int_equal(col_i64("SELECT attempts FROM jobs WHERE id = ?1", retry), 1);
    assert_int_equal(col_i64("SELECT state = 'done' FROM jobs WHERE id = ?1", done), 1);
    assert_int_equal(col_i64("SELECT state = 'failed' FROM jobs WHERE id = ?1", fail), 1);
    assert_int_equal(col_i64("SELECT claimed_by IS NULL FROM jobs WHERE id = ?1", retry), 1);
    /* once due, the retry comes back with its attempt counted */
    static const char due_sql[] = "UPDATE jobs SET next_at = 0 WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, due_sql, &err);
    db_bind_i64(st, 1, retry);
    assert_int_equal(db_exec(c, st, &err), 0);
    struct queue_job j[4];
    int n = 0;
    assert_int_equal(queue_claim_jobs(c, "B", 1, 0, 4, j, &n, &next, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(j[0].id, retry);
    assert_int_equal(j[0].attempts, 1);
    assert_string_equal(j[0].uid, "r");
    assert_string_equal(j[0].kind, "insert");
    assert_int_equal(j[0].calendar_id, 1);
    free(j[0].payload);
}

static void test_lanes_and_booking_order_for_jobs(void **state)
{
    (void)state;
    int64_t ids[8];
    int64_t first = add_job("same", 2), second = add_job("same", 2), odd = add_job("x", 3);
    /* lane calendar_id % 2 = 1 takes calendar 3 only */
    assert_int_equal(claim_jobs("L1", 2, 1, 8, ids, NULL), 1);
    assert_int_equal(ids[0], odd);
    /* lane 0: the second job of booking "same" waits for the first */
    assert_int_equal(claim_jobs("L0", 2, 0, 8, ids, NULL), 1);
    assert_int_equal(ids[0], first);
    struct cs_err err;
    assert_int_equal(queue_done(store_conn(&err), QUEUE_JOBS, first, 0, NULL, &err), 0);
    assert_int_equal(claim_jobs("L0", 2, 0, 8, ids, NULL), 1);
    assert_int_equal(ids[0], second);
}

static void test_outbox_keeps_booking_order(void **state)
{
    (void)state;
    struct cs_err err;
    struct store_conn *c = store_conn(&err);
    int64_t ids[16], next = 0;
    int64_t a1 = add_delivery("a", "http://s1"), a2 = add_delivery("a", "http://s1");
    int64_t b1 = add_delivery("b", "http://s1");
    int64_t n1 = add_delivery(NULL, "http://s1"), n2 = add_delivery(NULL, "http://s1");
    int64_t other = add_delivery("a", "http://s2");
    /* the first row of each booking (NULL: the calendar rows, one key) */
    assert_int_equal(claim_deliveries("S1", "http://s1", ids, NULL), 3);
    assert_int_equal(ids[0], a1);
    assert_int_equal(ids[1], b1);
    assert_int_equal(ids[2], n1);
    /* another subscriber's rows are its own lane */
    assert_int_equal(claim_deliveries("S2", "http://s2", ids, NULL), 1);
    assert_int_equal(ids[0], other);
    /* a1 fails and waits for its retry: a2 stays behind it, whoever asks */
    int64_t at = time_now_ms() + 3600000;
    assert_int_equal(queue_retry(c, QUEUE_OUTBOX, a1, at, 500, NULL, &err), 0);
    assert_int_equal(queue_done(c, QUEUE_OUTBOX, b1, 200, NULL, &err), 0);
    assert_int_equal(queue_done(c, QUEUE_OUTBOX, n1, 204, NULL, &err), 0);
    assert_int_equal(claim_deliveries("S1b", "http://s1", ids, &next), 1);
    assert_int_equal(ids[0], n2);
    assert_int_equal(queue_done(c, QUEUE_OUTBOX, n2, 200, NULL, &err), 0);
    assert_int_equal(claim_deliveries("S1b", "http://s1", ids, &next), 0);
    assert_int_equal(next, at);
    assert_int_equal(col_i64("SELECT last_status FROM outbox WHERE id = ?1", a1), 500);
    assert_int_equal(col_i64("SELECT state = 'delivered' FROM outbox WHERE id = ?1", b1), 1);
    /* once a1 is delivered, a2 follows */
    assert_int_equal(queue_done(c, QUEUE_OUTBOX, a1, 200, NULL, &err), 0);
    assert_int_equal(claim_deliveries("S1b", "http://s1", ids, NULL), 1);
    assert_int_equal(ids[0], a2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_two_claimers_never_share, empty),
        cmocka_unit_test_setup(test_concurrent_claims_are_exclusive, empty),
        cmocka_unit_test_setup(test_expired_lease_is_reclaimed, empty),
        cmocka_unit_test_setup(test_done_retry_fail, empty),
        cmocka_unit_test_setup(test_lanes_and_booking_order_for_jobs, empty),
        cmocka_unit_test_setup(test_outbox_keeps_booking_order, empty),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
