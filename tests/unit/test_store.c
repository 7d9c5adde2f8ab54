/* test_store.c -- migrations, the statement cache, and the health signal
 * when writes fail for a reason outside calsync (a full disk, simulated
 * with SQLite's max_page_count on the thread's own connection). */
#include "unit.h"

#include "calendar.h"
#include "store.h"

#include <stdio.h>
#include <string.h>
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
    sqlite3 *db = store_db(store_conn(&err));
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
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
    assert_ptr_equal(store_stmt(c, sql, &err), store_stmt(c, sql, &err));
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_current),
        cmocka_unit_test(test_full_disk_write_fails_cleanly),
        cmocka_unit_test(test_read_only_database_is_unhealthy_until_writable),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
