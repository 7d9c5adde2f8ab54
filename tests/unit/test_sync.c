/* test_sync.c -- the real sync loop (sync.c) and the change classification
 * (apply_classify) against the in-memory provider (mem_provider.c) and a
 * temporary SQLite store: new, moved and deleted events, an expired cursor
 * and the full resync it causes, the sweep of events a full listing no
 * longer shows, paging, a series' occurrences, a split series re-linked,
 * items with ids the provider cannot have issued, and the error classes
 * (transient: the next sync redoes it; revoked: the calendar stops;
 * permanent or an unknown provider: the calendar is in error). The hooks
 * here record what the sync reports instead of running policies. */
#include "unit.h"

#include "mem_provider.h"

#include "apply.h"
#include "calendar.h"
#include "json.h"
#include "store/db.h"
#include "store/store.h"
#include "sync.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HOUR (3600 * 1000LL)
#define DAY (24 * HOUR)

static char path[64];
static int64_t cred, cal;
static int64_t t0;  /* a whole hour some days from now: instants are built from it */

/* ------------------------------------------------------ recorded changes */

struct change {
    char id[64];
    int had_old;
    char old_status[16];
    char status[16];
    char series[64];
    int64_t start_ms, original_start_ms;
    char raw[256];
    int relink;
    char to[64];          /* relink: the successor occurrence */
    enum apply_kind kind; /* against the booking `booked` */
};

static struct change changes[256];
static int n_changes;
/* what a booking following every event would hold: classification input */
static struct booking booked;

static int record(const struct sync_info *info, const struct sync_event *old,
                  const struct sync_event *now, const char *raw, size_t raw_len,
                  int relink)
{
    if (info->pass != SYNC_PASS_APPLY || n_changes >= 256)
        return 0;
    struct change *c = &changes[n_changes++];
    memset(c, 0, sizeof *c);
    snprintf(c->id, sizeof c->id, "%s", relink ? old->id : now->id);
    c->had_old = old != NULL;
    snprintf(c->old_status, sizeof c->old_status, "%s", old ? old->status : "");
    snprintf(c->status, sizeof c->status, "%s", now->status);
    snprintf(c->series, sizeof c->series, "%s", now->series_id ? now->series_id : "");
    c->start_ms = now->start_ms;
    c->original_start_ms = now->original_start_ms;
    snprintf(c->raw, sizeof c->raw, "%.*s", (int)raw_len, raw);
    c->relink = relink;
    if (relink)
        snprintf(c->to, sizeof c->to, "%s", now->id);
    c->kind = apply_classify(old, &booked, now);
    return 0;
}

static int on_change(void *ud, struct store_conn *c, const struct sync_info *info,
                     const struct sync_event *old, const struct sync_event *now,
                     const char *raw, size_t raw_len, struct cs_err *err)
{
    (void)ud, (void)c, (void)err;
    return record(info, old, now, raw, raw_len, 0);
}

static int on_relink(void *ud, struct store_conn *c, const struct sync_info *info,
                     const struct sync_event *old, const struct sync_event *now,
                     const char *raw, size_t raw_len, struct cs_err *err)
{
    (void)ud, (void)c, (void)err;
    return record(info, old, now, raw, raw_len, 1);
}

static const struct change *find_change(const char *id)
{
    for (int i = n_changes - 1; i >= 0; i--)
        if (strcmp(changes[i].id, id) == 0)
            return &changes[i];
    return NULL;
}

/* ---------------------------------------------------------------- setup */

static int setup_once(void **state)
{
    (void)state;
    return provider_register(&mem_provider);
}

static int setup(void **state)
{
    (void)state;
    struct cs_err err;
    int created;
    snprintf(path, sizeof path, "/tmp/calsync-sync-%d.db", (int)getpid());
    unlink(path);
    if (store_init(path, &err))
        return -1;
    struct store_conn *c = store_conn(&err);
    if (!c || credential_insert(c, "mem", "refresh", NULL, 0, &cred, &err) ||
        calendar_upsert(c, cred, "cal-1", "default", "{}", &cal, &created, &err))
        return -1;
    mem_reset();
    n_changes = 0;
    t0 = (time_now_ms() / HOUR + 24 * 3) * HOUR;
    memset(&booked, 0, sizeof booked);
    booked.start_ms = t0;
    booked.end_ms = t0 + HOUR;
    booked.title = "Booked";
    sync_set_change_hook(on_change, NULL);
    sync_set_relink_hook(on_relink, NULL);
    sync_set_decide_hook(NULL, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char p[80];
    store_shutdown();
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
    return 0;
}

static int sync_now(struct sync_stats *st)
{
    struct cs_err err = {{0}};
    n_changes = 0;
    int rc = sync_calendar(cal, SYNC_SRC_POLL, st, &err);
    if (rc != SYNC_OK && rc != SYNC_SKIPPED)
        print_message("sync: %s\n", err.msg);
    return rc;
}

/* One text column of the calendar row (NULL: SQL NULL) into out. The
 * statements go through the store's driver seam (store/db.h), as the
 * store's own tests do. */
static const char *cal_col(const char *col, char *out, size_t cap)
{
    static const char q_state[] = "SELECT state FROM calendars WHERE id = ?1";
    static const char q_reason[] = "SELECT state_reason FROM calendars WHERE id = ?1";
    static const char q_token[] = "SELECT sync_token FROM calendars WHERE id = ?1";
    struct cs_err err;
    const char *sql = strcmp(col, "state") == 0 ? q_state
                      : strcmp(col, "state_reason") == 0 ? q_reason : q_token;
    struct db_stmt *st = db_stmt(store_conn(&err), sql, &err);
    assert_non_null(st);
    db_bind_i64(st, 1, cal);
    assert_int_equal(db_step(st), DB_ROW);
    const char *t = db_col_text(st, 0);
    snprintf(out, cap, "%s", t ? t : "");
    db_reset(st);
    return t ? out : NULL;
}

/* The mirror's status of an event ("" when it has no row). */
static const char *mirror_status(const char *id, char *out, size_t cap)
{
    static const char sql[] =
        "SELECT status FROM events WHERE calendar_id = ?1 AND id = ?2";
    struct cs_err err;
    struct db_stmt *st = db_stmt(store_conn(&err), sql, &err);
    assert_non_null(st);
    db_bind_i64(st, 1, cal);
    db_bind_text(st, 2, id);
    out[0] = '\0';
    if (db_step(st) == DB_ROW)
        snprintf(out, cap, "%s", db_col_text(st, 0));
    db_reset(st);
    return out;
}

static int mirror_count(void)
{
    static const char sql[] = "SELECT count(*) FROM events WHERE calendar_id = ?1";
    struct cs_err err;
    struct db_stmt *st = db_stmt(store_conn(&err), sql, &err);
    assert_non_null(st);
    db_bind_i64(st, 1, cal);
    assert_int_equal(db_step(st), DB_ROW);
    int n = db_col_int(st, 0);
    db_reset(st);
    return n;
}

/* ---------------------------------------------------------------- tests */

static void test_new_moved_deleted(void **state)
{
    (void)state;
    struct sync_stats st;
    char s[32];
    mem_put("a", "Booked", t0, t0 + HOUR, NULL, SYNC_NO_TIME);
    mem_put("b", "Other", t0 + DAY, t0 + DAY + HOUR, NULL, SYNC_NO_TIME);
    assert_int_equal(sync_now(&st), SYNC_OK);
    /* first sync: a full listing, every event new */
    assert_int_equal(st.full, 1);
    assert_int_equal(st.changes, 2);
    assert_int_equal(find_change("a")->had_old, 0);
    assert_int_equal(mirror_count(), 2);
    assert_string_equal(cal_col("state", s, sizeof s), "active");
    assert_non_null(cal_col("sync_token", s, sizeof s));
    /* the policy sees the provider's own raw shape */
    assert_non_null(strstr(find_change("a")->raw, "\"name\":\"Booked\""));

    /* nothing changed: an incremental sync reports nothing */
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_int_equal(st.full, 0);
    assert_int_equal(st.changes, 0);

    /* moved */
    mem_put("a", "Booked", t0 + 2 * HOUR, t0 + 3 * HOUR, NULL, SYNC_NO_TIME);
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_int_equal(st.full, 0);
    assert_int_equal(st.changes, 1);
    const struct change *c = find_change("a");
    assert_int_equal(c->had_old, 1);
    assert_true(c->start_ms == t0 + 2 * HOUR);
    assert_int_equal(c->kind, APPLY_TIME);

    /* renamed */
    mem_put("b", "Renamed", t0 + DAY, t0 + DAY + HOUR, NULL, SYNC_NO_TIME);
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_string_equal(find_change("b")->status, "confirmed");
    /* judged against the mirror row: same times, new title */
    assert_int_equal(find_change("b")->kind, APPLY_TITLE);

    /* deleted */
    mem_cancel("a", 0);
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_int_equal(st.changes, 1);
    assert_string_equal(find_change("a")->status, "cancelled");
    assert_int_equal(find_change("a")->kind, APPLY_DELETE);
    assert_string_equal(mirror_status("a", s, sizeof s), "cancelled");
    /* reported once: the next sync has nothing to say about it */
    mem_put("c", "New", t0, t0 + HOUR, NULL, SYNC_NO_TIME);
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_int_equal(st.changes, 1);
    assert_null(find_change("a"));
}

static void test_classification(void **state)
{
    (void)state;
    struct sync_stats st;
    mem_put("e", "Booked", t0, t0 + HOUR, NULL, SYNC_NO_TIME);
    assert_int_equal(sync_now(&st), SYNC_OK);
    /* no mirror row yet: judged against the booking, which it matches */
    assert_int_equal(find_change("e")->kind, APPLY_NONE);
    mem_put("e", "Booked, renamed", t0, t0 + HOUR, NULL, SYNC_NO_TIME);
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_int_equal(find_change("e")->kind, APPLY_TITLE);
    mem_put("e", "Booked, renamed", t0 + HOUR, t0 + 2 * HOUR, NULL, SYNC_NO_TIME);
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_int_equal(find_change("e")->kind, APPLY_TIME);
    /* a new version with nothing the booking cares about */
    mem_put("e", "Booked, renamed", t0 + HOUR, t0 + 2 * HOUR, NULL, SYNC_NO_TIME);
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_int_equal(st.changes, 1); /* the version differs: reported */
    assert_int_equal(find_change("e")->kind, APPLY_NONE);
    mem_cancel("e", 0);
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_int_equal(find_change("e")->kind, APPLY_DELETE);
}

static void test_expired_cursor_resyncs_and_sweeps(void **state)
{
    (void)state;
    struct sync_stats st;
    char s[32];
    mem_put("keep", "K", t0, t0 + HOUR, NULL, SYNC_NO_TIME);
    mem_put("lost", "L", t0 + HOUR, t0 + 2 * HOUR, NULL, SYNC_NO_TIME);
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_int_equal(mem_full_list_calls(), 1);
    /* "lost" disappears without a stub, and the cursor expires: only a
     * full listing can notice, and the sweep reports it */
    mem_drop("lost");
    mem_expire_cursors();
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_int_equal(mem_full_list_calls(), 2);
    assert_int_equal(st.full, 1);
    assert_int_equal(st.swept, 1);
    const struct change *c = find_change("lost");
    assert_non_null(c);
    assert_string_equal(c->status, "cancelled");
    assert_int_equal(c->had_old, 1);
    /* the stub is in the provider's shape (provider_ops.encode) */
    assert_string_equal(c->raw, "{\"state\":\"gone\",\"id\":\"lost\"}");
    assert_null(find_change("keep")); /* unchanged: not reported again */
    assert_string_equal(mirror_status("lost", s, sizeof s), "cancelled");
    /* and the next sync is incremental again */
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_int_equal(st.full, 0);
    assert_int_equal(st.changes, 0);
}

static void test_paging(void **state)
{
    (void)state;
    struct sync_stats st;
    char id[16], s[32];
    mem_set_page_size(3);
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "p%d", i);
        mem_put(id, "P", t0 + i * HOUR, t0 + i * HOUR + HOUR, NULL, SYNC_NO_TIME);
    }
    /* the third page fails: the two before are committed, the cursor is
     * not (so the next sync lists from the start again) */
    mem_fail_next(PROVIDER_TRANSIENT, 1, 2);
    assert_int_equal(sync_now(&st), SYNC_FAILED);
    assert_int_equal(st.pages, 2);
    assert_int_equal(mirror_count(), 6);
    assert_null(cal_col("sync_token", s, sizeof s));
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_int_equal(st.pages, 4);
    assert_int_equal(st.events, 10);
    assert_int_equal(st.changes, 4); /* the six committed before are no news */
    assert_int_equal(mirror_count(), 10);
    /* incremental across pages too */
    for (int i = 0; i < 7; i++) {
        snprintf(id, sizeof id, "p%d", i);
        mem_put(id, "P2", t0 + i * HOUR, t0 + i * HOUR + HOUR, NULL, SYNC_NO_TIME);
    }
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_int_equal(st.full, 0);
    assert_int_equal(st.pages, 3);
    assert_int_equal(st.changes, 7);
}

/* A series: master S and occurrences S/1..S/3 a day apart. */
static void put_series(void)
{
    mem_put("S", "Weekly", t0, t0 + HOUR, NULL, SYNC_NO_TIME);
    for (int i = 1; i <= 3; i++) {
        char id[16];
        snprintf(id, sizeof id, "S/%d", i);
        int64_t at = t0 + (i - 1) * DAY;
        mem_put(id, "Weekly", at, at + HOUR, "S", at);
    }
}

static void test_series_occurrences(void **state)
{
    (void)state;
    struct sync_stats st;
    char s[32];
    put_series();
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_int_equal(st.changes, 4);
    assert_string_equal(find_change("S/2")->series, "S");
    assert_true(find_change("S/2")->original_start_ms == t0 + DAY);
    /* a full listing needs no occurrence listing */
    assert_int_equal(mem_occurrence_calls(), 0);
    /* one occurrence moves and one vanishes without a stub (a series
     * change): the occurrence listing finds the vanished one */
    mem_put("S/1", "Weekly", t0 + HOUR, t0 + 2 * HOUR, "S", t0);
    mem_drop("S/3");
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_int_equal(mem_occurrence_calls(), 1);
    assert_int_equal(st.swept, 1);
    assert_string_equal(find_change("S/3")->status, "cancelled");
    assert_string_equal(mirror_status("S/3", s, sizeof s), "cancelled");
    assert_string_equal(mirror_status("S/2", s, sizeof s), "confirmed");
    /* the master cancelled: every live occurrence goes with it */
    mem_cancel("S", 0);
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_string_equal(mirror_status("S/1", s, sizeof s), "cancelled");
    assert_string_equal(mirror_status("S/2", s, sizeof s), "cancelled");
    assert_string_equal(find_change("S/2")->status, "cancelled");
}

static void test_split_series_relinked(void **state)
{
    (void)state;
    struct sync_stats st;
    char s[32];
    put_series();
    assert_int_equal(sync_now(&st), SYNC_OK);
    /* "this and following" from S/2, one hour later: S ends before S/2
     * (S/2 and S/3 leave as bare stubs), the successor series S_R2 (the
     * `<series>_R<start>` naming the engine recognises) starts */
    mem_cancel("S/2", 1);
    mem_cancel("S/3", 1);
    mem_put("S_R2", "Weekly", t0 + DAY + HOUR, t0 + DAY + 2 * HOUR, NULL, SYNC_NO_TIME);
    mem_put("S_R2/1", "Weekly", t0 + DAY + HOUR, t0 + DAY + 2 * HOUR, "S_R2",
            t0 + DAY + HOUR);
    mem_put("S_R2/2", "Weekly", t0 + 2 * DAY + HOUR, t0 + 2 * DAY + 2 * HOUR, "S_R2",
            t0 + 2 * DAY + HOUR);
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_int_equal(st.relinked, 2);
    const struct change *c = NULL;
    for (int i = 0; i < n_changes; i++)
        if (changes[i].relink && strcmp(changes[i].id, "S/2") == 0)
            c = &changes[i];
    assert_non_null(c);
    assert_string_equal(c->to, "S_R2/1");
    assert_true(c->start_ms == t0 + DAY + HOUR);
    assert_int_equal(c->kind, APPLY_TIME);
    /* the successor's row as the provider's raw shape */
    assert_non_null(strstr(c->raw, "\"id\":\"S_R2/1\""));
    /* the vanished occurrences end cancelled, S/1 stays */
    assert_string_equal(mirror_status("S/2", s, sizeof s), "cancelled");
    assert_string_equal(mirror_status("S/3", s, sizeof s), "cancelled");
    assert_string_equal(mirror_status("S/1", s, sizeof s), "confirmed");
}

static void test_unissuable_ids_skipped(void **state)
{
    (void)state;
    struct sync_stats st;
    char s[32];
    mem_put("bad/x", "B", t0, t0 + HOUR, NULL, SYNC_NO_TIME);
    mem_put("ok", "O", t0, t0 + HOUR, NULL, SYNC_NO_TIME);
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_int_equal(st.changes, 1);
    assert_string_equal(mirror_status("bad/x", s, sizeof s), "");
    assert_string_equal(mirror_status("ok", s, sizeof s), "confirmed");
}

/* A malformed item is skipped and the rest of the page applies; one that
 * names a mirrored id is not swept by a full listing as a deletion. */
static void test_malformed_items_skipped_not_swept(void **state)
{
    (void)state;
    struct sync_stats st;
    char s[32];
    mem_put("a", "A", t0, t0 + HOUR, NULL, SYNC_NO_TIME);
    mem_put("b", "B", t0, t0 + HOUR, NULL, SYNC_NO_TIME);
    assert_int_equal(sync_now(&st), SYNC_OK);
    mem_break("a");
    mem_put("c", "C", t0, t0 + HOUR, NULL, SYNC_NO_TIME);
    assert_int_equal(sync_now(&st), SYNC_OK);          /* incremental */
    assert_string_equal(mirror_status("c", s, sizeof s), "confirmed");
    mem_expire_cursors();                               /* a full listing */
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_true(st.full);
    assert_int_equal(st.swept, 0);
    assert_string_equal(mirror_status("a", s, sizeof s), "confirmed");
    assert_string_equal(mirror_status("b", s, sizeof s), "confirmed");
    assert_string_equal(cal_col("state", s, sizeof s), "active");
}

static void test_transient_error_retried(void **state)
{
    (void)state;
    struct sync_stats st;
    char tok[64], s[32];
    mem_put("a", "A", t0, t0 + HOUR, NULL, SYNC_NO_TIME);
    assert_int_equal(sync_now(&st), SYNC_OK);
    cal_col("sync_token", tok, sizeof tok);
    mem_put("a", "A", t0 + HOUR, t0 + 2 * HOUR, NULL, SYNC_NO_TIME);
    mem_fail_next(PROVIDER_TRANSIENT, 1, 0);
    assert_int_equal(sync_now(&st), SYNC_FAILED);
    assert_int_equal(n_changes, 0);
    /* nothing moved: same cursor, calendar still active */
    assert_string_equal(cal_col("sync_token", s, sizeof s), tok);
    assert_string_equal(cal_col("state", s, sizeof s), "active");
    /* the next sync (the scheduler's retry) reads the change */
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_int_equal(st.changes, 1);
    assert_true(find_change("a")->start_ms == t0 + HOUR);
    /* a malformed answer counts as transient for the sync too */
    mem_fail_next(PROVIDER_MALFORMED, 1, 0);
    assert_int_equal(sync_now(&st), SYNC_FAILED);
    assert_string_equal(cal_col("state", s, sizeof s), "active");
}

static void test_revoked_stops_calendar(void **state)
{
    (void)state;
    struct sync_stats st;
    char s[32];
    mem_put("a", "A", t0, t0 + HOUR, NULL, SYNC_NO_TIME);
    assert_int_equal(sync_now(&st), SYNC_OK);
    mem_fail_next(PROVIDER_REVOKED, 1, 0);
    assert_int_equal(sync_now(&st), SYNC_REVOKED);
    assert_string_equal(cal_col("state", s, sizeof s), "revoked");
    /* a revoked calendar is not synced any more */
    int calls = mem_list_calls();
    assert_int_equal(sync_now(&st), SYNC_SKIPPED);
    assert_int_equal(mem_list_calls(), calls);
}

static void test_permanent_error_and_unknown_provider(void **state)
{
    (void)state;
    struct sync_stats st;
    struct cs_err err;
    char s[128];
    mem_fail_next(PROVIDER_PERMANENT, 1, 0);
    assert_int_equal(sync_now(&st), SYNC_ERROR);
    assert_string_equal(cal_col("state", s, sizeof s), "error");
    /* an error calendar is synced again (and recovers) */
    mem_put("a", "A", t0, t0 + HOUR, NULL, SYNC_NO_TIME);
    assert_int_equal(sync_now(&st), SYNC_OK);
    assert_string_equal(cal_col("state", s, sizeof s), "active");
    /* a credential naming no provider calsync has: a clear error, no call */
    assert_int_equal(db_script(store_conn(&err),
                               "UPDATE credentials SET provider = 'outlook'", &err), 0);
    int calls = mem_list_calls();
    assert_int_equal(sync_calendar(cal, SYNC_SRC_POLL, &st, &err), SYNC_ERROR);
    assert_non_null(strstr(err.msg, "unknown provider \"outlook\""));
    assert_int_equal(mem_list_calls(), calls);
    assert_string_equal(cal_col("state", s, sizeof s), "error");
    assert_non_null(strstr(cal_col("state_reason", s, sizeof s), "outlook"));
}

static void test_registry(void **state)
{
    (void)state;
    assert_ptr_equal(provider_find("mem"), &mem_provider);
    assert_non_null(provider_find("google"));
    assert_null(provider_find("outlook"));
    assert_null(provider_find(NULL));
    assert_int_equal(provider_register(&mem_provider), -1); /* the name is taken */
    assert_ptr_equal(provider_for_route("/webhooks/google"), provider_find("google"));
    assert_null(provider_for_route("/webhooks/"));
    assert_null(provider_for_route("/v1/webhooks/google"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry),
        cmocka_unit_test_setup_teardown(test_new_moved_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_classification, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expired_cursor_resyncs_and_sweeps, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_paging, setup, teardown),
        cmocka_unit_test_setup_teardown(test_series_occurrences, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_series_relinked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unissuable_ids_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_items_skipped_not_swept, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_transient_error_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revoked_stops_calendar, setup, teardown),
        cmocka_unit_test_setup_teardown(test_permanent_error_and_unknown_provider, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, setup_once, NULL);
}
