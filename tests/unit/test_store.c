/* test_store.c -- migrations, the statement cache, and the health signal
 * when writes fail for a reason outside calsync (a full disk, simulated
 * with SQLite's max_page_count on the thread's own connection, or with a
 * file-size limit that makes the COMMIT's WAL write fail). The end-to-end
 * proof on a really full filesystem is tests/e2e/test_disk.py. */
#include "unit.h"

#include "calendar.h"
#include "store/db.h"
#include "store/store.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static char path[64];

static int setup(void **state)
{
    (void)state;
    struct cs_err err;
    snprintf(path, sizeof path, "/tmp/calsync-store-%d.db", (int)getpid());
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

static void pragma(const char *sql)
{
    struct cs_err err;
    assert_int_equal(db_script(store_conn(&err), sql, &err), 0);
}

static void test_schema_current(void **state)
{
    (void)state;
    struct cs_err err;
    struct store_conn *c = store_conn(&err);
    assert_non_null(c);
    assert_int_equal(store_disk_version(c), store_schema_version());
    /* the same SQL text gives the same cached statement */
    static const char sql[] = "SELECT 1";
    assert_ptr_equal(db_stmt(c, sql, &err), db_stmt(c, sql, &err));
}

static void test_full_disk_write_fails_cleanly(void **state)
{
    (void)state;
    struct cs_err err;
    struct store_conn *c = store_conn(&err);
    assert_true(store_healthy());
    /* the disk "fills": no page may be added any more */
    pragma("PRAGMA max_page_count = 1");
    int failed = 0;
    char token[2048];
    memset(token, 'x', sizeof token - 1);
    token[sizeof token - 1] = '\0';
    for (int i = 0; i < 200 && !failed; i++) {
        int64_t id;
        failed = credential_insert(c, "google", token, NULL, 0, &id, &err) != 0;
    }
    assert_true(failed);
    assert_non_null(strstr(err.msg, "full"));
    /* a small probe write still fits in the pages the file has, so the
     * health check notices at once that writes work again */
    assert_true(store_healthy());
    pragma("PRAGMA max_page_count = 1073741823");
}

static void test_read_only_database_is_unhealthy_until_writable(void **state)
{
    (void)state;
    struct cs_err err;
    struct store_conn *c = store_conn(&err);
    int64_t id;
    pragma("PRAGMA query_only = 1");          /* the database turns read-only */
    assert_int_equal(credential_insert(c, "google", "rt", NULL, 0, &id, &err), -1);
    assert_false(store_healthy());
    assert_false(store_healthy());            /* the probe write fails too */
    pragma("PRAGMA query_only = 0");          /* writable again */
    assert_true(store_healthy());
    assert_int_equal(credential_insert(c, "google", "rt", NULL, 0, &id, &err), 0);
}

/* In WAL mode the statements of a transaction only fill the page cache;
 * the COMMIT writes the WAL, so on a full disk it is the COMMIT that fails.
 * That must mark the store unhealthy, and only a write that reached the
 * disk may clear it again. */
static void test_failed_commit_is_a_failed_write(void **state)
{
    (void)state;
    struct cs_err err;
    struct store_conn *c = store_conn(&err);
    struct rlimit old, tiny;
    int64_t id;
    assert_true(store_healthy());
    assert_false(store_writes_failing());
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    tiny = old;
    tiny.rlim_cur = 1;                        /* any write past byte 1: EFBIG */
    signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(store_begin(c, &err), 0);
    assert_int_equal(credential_insert(c, "google", "rt", NULL, 0, &id, &err), 0);
    assert_false(store_writes_failing());     /* in the page cache only */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &tiny), 0);
    int committed = store_commit(c, &err);
    int healthy = store_healthy();            /* its probe write fails too */
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
    assert_int_equal(committed, -1);
    assert_false(healthy);
    assert_true(store_writes_failing());
    /* no proof that writes work: a statement inside a transaction, ... */
    assert_int_equal(store_begin(c, &err), 0);
    assert_int_equal(credential_insert(c, "google", "rt", NULL, 0, &id, &err), 0);
    assert_true(store_writes_failing());
    store_rollback(c);
    assert_true(store_writes_failing());
    /* ... nor the COMMIT of a transaction that changed nothing */
    assert_int_equal(store_begin(c, &err), 0);
    assert_int_equal(store_commit(c, &err), 0);
    assert_true(store_writes_failing());
    /* a write that reaches the disk (here the probe) clears it */
    assert_true(store_healthy());
    assert_false(store_writes_failing());
    assert_int_equal(credential_insert(c, "google", "rt", NULL, 0, &id, &err), 0);
    signal(SIGXFSZ, SIG_DFL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_current),
        cmocka_unit_test(test_full_disk_write_fails_cleanly),
        cmocka_unit_test(test_read_only_database_is_unhealthy_until_writable),
        cmocka_unit_test(test_failed_commit_is_a_failed_write),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
