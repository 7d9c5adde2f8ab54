/* test_tables.c -- round trips through each table module of the store
 * (src/store/): what is written reads back through the typed
 * functions, the conditional forms (if live, once only, on conflict)
 * change only what they should, and the sync's scans list what they
 * claim to. */
#include "unit.h"

#include "booking.h"
#include "calendar.h"
#include "store/channels.h"
#include "store/decisions.h"
#include "store/db.h"
#include "store/events.h"
#include "store/notifications.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[64];
static int64_t cred, cal;

static int setup(void **state)
{
    (void)state;
    struct cs_err err;
    int created = 0;
    snprintf(path, sizeof path, "/tmp/calsync-tables-%d.db", (int)getpid());
    unlink(path);
    if (store_init(path, &err))
        return -1;
    struct store_conn *c = store_conn(&err);
    if (credential_insert(c, "google", "rt-1", "at-1", 1234, &cred, &err) ||
        calendar_upsert(c, cred, "primary", "default", "{\"a\":1}", &cal, &created, &err))
        return -1;
    return created ? 0 : -1;
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

static struct store_conn *conn(void)
{
    struct cs_err err;
    struct store_conn *c = store_conn(&err);
    assert_non_null(c);
    return c;
}

static void test_credentials(void **state)
{
    (void)state;
    struct cs_err err;
    struct store_conn *c = conn();
    struct buf rt;
    char at[64];
    int64_t exp = 0;
    int revoked = -1;
    buf_init(&rt);
    assert_int_equal(credential_exists(c, cred, &err), 1);
    assert_int_equal(credential_exists(c, cred + 100, &err), 0);
    assert_int_equal(credential_tokens_load(c, cred, &rt, at, sizeof at, &exp, &revoked, &err), 0);
    assert_string_equal(rt.data, "rt-1");
    assert_string_equal(at, "at-1");
    assert_int_equal(exp, 1234);
    assert_int_equal(revoked, 0);
    assert_int_equal(credential_access_store(c, cred, "at-2", 5678, &err), 0);
    buf_reset(&rt);
    assert_int_equal(credential_tokens_load(c, cred, &rt, at, sizeof at, &exp, &revoked, &err), 0);
    assert_string_equal(at, "at-2");
    assert_int_equal(exp, 5678);
    /* as stored (no key set: plaintext) */
    char *raw = NULL;
    assert_int_equal(credential_raw_get(c, cred, 2, &raw, &err), 1);
    assert_string_equal(raw, "at-2");
    free(raw);
    /* no credential: an error that names it */
    assert_int_equal(credential_tokens_load(c, 999, &rt, at, sizeof at, &exp, &revoked, &err), -1);
    assert_non_null(strstr(err.msg, "no credential 999"));
    buf_free(&rt);
}

static void test_calendars(void **state)
{
    (void)state;
    struct cs_err err;
    struct store_conn *c = conn();
    struct calendar_row row;
    int64_t id2;
    int created = -1, changed = -1;
    /* idempotent on (credential, external id) */
    assert_int_equal(calendar_upsert(c, cred, "primary", "other", "{}", &id2, &created, &err), 0);
    assert_int_equal(id2, cal);
    assert_int_equal(created, 0);
    assert_int_equal(calendar_load(c, cal, &row, &err), 1);
    assert_int_equal(row.credential_id, cred);
    assert_string_equal(row.external_id, "primary");
    assert_string_equal(row.policy, "default");
    assert_string_equal(row.settings, "{\"a\":1}");
    assert_string_equal(row.state, "syncing");
    assert_null(row.sync_token);
    calendar_row_free(&row);
    assert_int_equal(calendar_load(c, cal + 100, &row, &err), 0);
    calendar_row_free(&row);
    /* a sync's end: token, active, dirty cleared only when unchanged */
    assert_int_equal(calendar_mark_dirty(c, cal, 1, &err), 0);
    assert_int_equal(calendar_load(c, cal, &row, &err), 1);
    int64_t seen = row.dirty;
    calendar_row_free(&row);
    assert_true(seen > 0);
    assert_int_equal(calendar_mark_dirty(c, cal, 0, &err), 0); /* a mark during the sync */
    assert_int_equal(calendar_sync_done(c, cal, "tok-1", seen, &err), 0);
    assert_int_equal(calendar_load(c, cal, &row, &err), 1);
    assert_string_equal(row.sync_token, "tok-1");
    assert_string_equal(row.state, "active");
    assert_int_equal(row.dirty, seen + 1);
    calendar_row_free(&row);
    assert_int_equal(calendar_sync_done(c, cal, "tok-2", seen + 1, &err), 0);
    assert_int_equal(calendar_drop_sync_token(c, cal, &err), 0);
    assert_int_equal(calendar_load(c, cal, &row, &err), 1);
    assert_null(row.sync_token);
    assert_int_equal(row.dirty, 0);
    calendar_row_free(&row);
    /* the if-live setter (Google refused the calendar) touches no stopped one */
    assert_int_equal(calendar_set_state(c, cal, "stopped", "deleted", 0, &changed, &err), 0);
    assert_int_equal(changed, 1);
    assert_int_equal(calendar_set_state(c, cal, "error", "404", 1, &changed, &err), 0);
    assert_int_equal(changed, 0);
    char cstate[16];
    assert_int_equal(calendar_state(c, cal, cstate, sizeof cstate, &err), 1);
    assert_string_equal(cstate, "stopped");
    /* a stopped calendar takes no dirty mark from the intake, and is no
     * live calendar of its credential */
    assert_int_equal(calendar_mark_dirty(c, cal, 1, &err), 0);
    assert_int_equal(calendar_load(c, cal, &row, &err), 1);
    assert_int_equal(row.dirty, 0);
    calendar_row_free(&row);
    int64_t live_id = 0;
    assert_int_equal(calendar_next_live_of_credential(c, cred, &live_id, &err), 0);
    /* upsert revives it */
    assert_int_equal(calendar_upsert(c, cred, "primary", "default", "{}", &id2, &created, &err), 0);
    assert_int_equal(calendar_state(c, cal, cstate, sizeof cstate, &err), 1);
    assert_string_equal(cstate, "syncing");
    assert_int_equal(calendar_next_live_of_credential(c, cred, &live_id, &err), 1);
    assert_int_equal(live_id, cal);
    struct calendar_ref ref;
    assert_int_equal(calendar_ref_load(c, cal, &ref, &err), 1);
    assert_string_equal(ref.external_id, "primary");
    struct buf out;
    buf_init(&out);
    assert_int_equal(calendar_json(c, cal, &out, &err), 1);
    assert_non_null(strstr(out.data, "\"external_id\":\"primary\""));
    buf_free(&out);
}

static int count_sched(void *ud, const struct calendar_sched *r)
{
    if (r->id == cal && r->runnable)
        (*(int *)ud)++;
    return 0;
}

static void test_calendar_scan(void **state)
{
    (void)state;
    struct cs_err err;
    int n = 0;
    assert_int_equal(calendar_each_sched(conn(), count_sched, &n, &err), 0);
    assert_int_equal(n, 1);
}

static void test_channels_and_notifications(void **state)
{
    (void)state;
    struct cs_err err;
    struct store_conn *c = conn();
    int64_t now = time_now_ms(), got = 0;
    assert_int_equal(channels_insert_opening(c, "ch-1", cal, "tok", now, &err), 0);
    assert_int_equal(channels_insert_opening(c, "ch-2", cal, "tok2", now + 1, &err), 0);
    assert_int_equal(channels_set_live(c, "ch-1", "res-1", now + 3600000, &err), 0);
    struct channels_live lv[4];
    int n = 0;
    assert_int_equal(channels_live(c, cal, lv, 4, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(lv[0].id, "ch-2"); /* newest first */
    assert_int_equal(lv[0].has_resource, 0);
    assert_string_equal(lv[1].resource_id, "res-1");
    assert_int_equal(lv[1].expiration, now + 3600000);
    assert_int_equal(channels_calendar_by_resource(c, "res-1", &got, &err), 1);
    assert_int_equal(got, cal);
    assert_int_equal(channels_calendar_by_resource(c, "nope", &got, &err), 0);
    char rid[64];
    int64_t cr = 0;
    assert_int_equal(channels_stop_target(c, "ch-1", rid, sizeof rid, &cr, &err), 1);
    assert_string_equal(rid, "res-1");
    assert_int_equal(cr, cred);
    struct buf tok;
    char st[16];
    buf_init(&tok);
    assert_int_equal(channels_lookup(c, "ch-1", &got, &tok, st, &err), 1);
    assert_string_equal(tok.data, "tok");
    assert_string_equal(st, "live");
    assert_int_equal(channels_set_state(c, "ch-2", "stopped", &err), 0);
    assert_int_equal(channels_live(c, cal, lv, 4, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(channels_lookup(c, "ch-9", &got, &tok, st, &err), 0);
    buf_free(&tok);
    struct buf out;
    buf_init(&out);
    assert_int_equal(channels_list_json(c, &out, &err), 0);
    assert_non_null(strstr(out.data, "\"id\":\"ch-2\""));
    assert_non_null(strstr(out.data, "\"state\":\"stopped\""));
    buf_free(&out);
    /* notifications: a replayed id is recorded once */
    int64_t next = 0;
    assert_int_equal(notification_next_id(c, &next, &err), 0);
    assert_int_equal(notification_insert(c, next, "ch-1", 7, "exists", now, &err), 0);
    assert_int_equal(notification_insert(c, next, "ch-1", 7, "exists", now, &err), 0);
    int64_t after = 0;
    assert_int_equal(notification_next_id(c, &after, &err), 0);
    assert_int_equal(after, next + 1);
}

static void event(struct sync_event *e, const char *id, const char *series, int64_t orig,
                  const char *status)
{
    memset(e, 0, sizeof *e);
    e->id = id;
    e->etag = "\"e1\"";
    e->status = status;
    e->start_ms = 1000;
    e->end_ms = 2000;
    e->series_id = series;
    e->original_start_ms = orig;
    e->title = "T";
    e->created = series ? "2026-01-01T00:00:00.000Z" : NULL;
}

static int add_id(void *ud, const char *id)
{
    struct buf *b = ud;
    return buf_puts(b, id) || buf_puts(b, " ");
}

static int add_occ(void *ud, const char *id, const char *series, int64_t orig, int taken)
{
    (void)series;
    (void)orig;
    struct buf *b = ud;
    return buf_printf(b, "%s%s ", id, taken ? "*" : "");
}

static void test_events(void **state)
{
    (void)state;
    struct cs_err err;
    struct store_conn *c = conn();
    struct sync_event e, back;
    struct buf arena, ids;
    buf_init(&arena);
    buf_init(&ids);
    event(&e, "single", NULL, SYNC_NO_TIME, "confirmed");
    assert_int_equal(events_put(c, cal, &e, &err), 0);
    assert_int_equal(events_load(c, cal, "single", &back, &arena, &err), 1);
    assert_string_equal(back.etag, "\"e1\"");
    assert_int_equal(back.start_ms, 1000);
    assert_int_equal(back.original_start_ms, SYNC_NO_TIME);
    /* a cancelled stub keeps what the row knew */
    struct sync_event stub = {.id = "single", .status = "cancelled", .etag = "\"e2\"",
                              .start_ms = SYNC_NO_TIME, .end_ms = SYNC_NO_TIME,
                              .original_start_ms = SYNC_NO_TIME};
    assert_int_equal(events_put(c, cal, &stub, &err), 0);
    assert_int_equal(events_load(c, cal, "single", &back, &arena, &err), 1);
    assert_string_equal(back.status, "cancelled");
    assert_string_equal(back.title, "T");
    assert_int_equal(back.end_ms, 2000);
    char etag[64];
    int64_t s = 0, en = 0;
    assert_int_equal(events_etag(c, cal, "single", etag, sizeof etag, &err), 1);
    assert_string_equal(etag, "\"e2\"");
    assert_int_equal(events_times(c, cal, "single", &s, &en, &err), 1);
    assert_int_equal(en, 2000);
    assert_int_equal(events_etag(c, cal, "none", etag, sizeof etag, &err), 0);
    /* a series: three occurrences, one of them not listed live any more */
    event(&e, "s_1", "s", 100, "confirmed");
    assert_int_equal(events_put(c, cal, &e, &err), 0);
    event(&e, "s_2", "s", 200, "confirmed");
    assert_int_equal(events_put(c, cal, &e, &err), 0);
    event(&e, "s_R3", "s_R", 300, "confirmed");
    assert_int_equal(events_put(c, cal, &e, &err), 0);
    assert_int_equal(events_ids(c, cal, EVENTS_SERIES_LIVE, "s", add_id, &ids, &err), 0);
    assert_string_equal(ids.data, "s_1 s_2 ");
    assert_int_equal(events_live_reset(c, &err), 0);
    assert_int_equal(events_live_add(c, "s", "s_1", 1, &err), 0);
    assert_int_equal(events_live_add(c, "s", "s_1", 1, &err), 0); /* once */
    assert_int_equal(events_live_add(c, "s_R", "s_R3", 1, &err), 0);
    buf_reset(&ids);
    assert_int_equal(events_ids(c, cal, EVENTS_SERIES_GONE, "s", add_id, &ids, &err), 0);
    assert_string_equal(ids.data, "s_2 ");
    buf_reset(&ids);
    assert_int_equal(events_vanished(c, cal, "s", 10, add_occ, &ids, &err), 0);
    assert_string_equal(ids.data, "s_2 ");
    struct buf created;
    buf_init(&created);
    assert_int_equal(events_series_created(c, cal, "s", &created, &err), 1);
    buf_reset(&ids);
    assert_int_equal(events_successors(c, cal, "s", created.data, 10, add_occ, &ids, &err), 0);
    assert_string_equal(ids.data, "s_1 s_R3 ");
    assert_int_equal(events_relinked_add(c, "s_R3", &err), 0);
    buf_reset(&ids);
    assert_int_equal(events_successors(c, cal, "s", NULL, 10, add_occ, &ids, &err), 0);
    assert_string_equal(ids.data, "s_1 ");
    /* a full listing saw only s_1: the rest not cancelled is unseen */
    assert_int_equal(events_seen_reset(c, &err), 0);
    assert_int_equal(events_seen_add(c, "s_1", &err), 0);
    buf_reset(&ids);
    assert_int_equal(events_ids(c, cal, EVENTS_UNSEEN, NULL, add_id, &ids, &err), 0);
    assert_string_equal(ids.data, "s_2 s_R3 ");
    assert_int_equal(events_set_cancelled(c, cal, "s_2", &err), 0);
    buf_reset(&ids);
    assert_int_equal(events_ids(c, cal, EVENTS_UNSEEN, NULL, add_id, &ids, &err), 0);
    assert_string_equal(ids.data, "s_R3 ");
    buf_free(&created);
    buf_free(&arena);
    buf_free(&ids);
}

static void add_uid(void *ud, const char *uid)
{
    struct buf *b = ud;
    buf_puts(b, uid);
    buf_puts(b, " ");
}

static void test_bookings_refs_and_audit(void **state)
{
    (void)state;
    struct cs_err err;
    struct store_conn *c = conn();
    struct booking b = {.uid = "bk-1", .calendar_id = cal, .title = "Meet",
                        .start_ms = 1000, .end_ms = 2000, .status = "accepted",
                        .event_id = "s", .has_original = 1, .original_start_ms = 100};
    struct booking got;
    struct buf uids;
    buf_init(&uids);
    assert_int_equal(store_begin(c, &err), 0);
    assert_int_equal(booking_insert(c, &b, &err), 0);
    assert_int_equal(booking_insert(c, &b, &err), 1); /* the uid exists */
    assert_int_equal(store_commit(c, &err), 0);
    assert_int_equal(booking_get(c, "bk-1", &got, &err), 1);
    assert_string_equal(got.title, "Meet");
    assert_int_equal(got.original_start_ms, 100);
    assert_string_equal(got.write_state, "none");
    booking_free(&got);
    assert_int_equal(booking_refs_at(c, cal, "s", 100, add_uid, &uids, &err), 0);
    assert_string_equal(uids.data, "bk-1 ");
    buf_reset(&uids);
    assert_int_equal(booking_refs_of_series(c, cal, "s", add_uid, &uids, &err), 0);
    assert_string_equal(uids.data, "bk-1 ");
    /* relinked to a split's successor: the reference and its own event */
    assert_int_equal(booking_ref_move(c, cal, "bk-1", "s", 100, "s_R", 150, &err), 0);
    buf_reset(&uids);
    assert_int_equal(booking_refs_at(c, cal, "s", 100, add_uid, &uids, &err), 0);
    assert_int_equal(uids.len, 0);
    assert_int_equal(booking_refs_at(c, cal, "s_R", 150, add_uid, &uids, &err), 0);
    assert_string_equal(uids.data, "bk-1 ");
    assert_int_equal(booking_get(c, "bk-1", &got, &err), 1);
    assert_string_equal(got.event_id, "s_R");
    assert_int_equal(got.original_start_ms, 150);
    booking_free(&got);
    /* write state follows the jobs */
    assert_int_equal(booking_write_pending(c, "bk-1", &err), 0);
    assert_int_equal(booking_get(c, "bk-1", &got, &err), 1);
    assert_string_equal(got.write_state, "pending");
    booking_free(&got);
    assert_int_equal(booking_write_ended(c, "bk-1", 1, "HTTP 400", &err), 0);
    assert_int_equal(booking_get(c, "bk-1", &got, &err), 1);
    assert_string_equal(got.write_state, "failed");
    assert_string_equal(got.write_error, "HTTP 400");
    booking_free(&got);
    assert_int_equal(booking_event_written(c, "bk-1", cal, "ev-9", "\"x\"", &err), 0);
    buf_reset(&uids);
    assert_int_equal(booking_refs_at(c, cal, "ev-9", -1, add_uid, &uids, &err), 0);
    assert_string_equal(uids.data, "bk-1 ");
    buf_reset(&uids);
    assert_int_equal(booking_on_calendar(c, "bk-1", cal, add_uid, &uids, &err), 0);
    assert_string_equal(uids.data, "bk-1 ");
    buf_reset(&uids);
    assert_int_equal(booking_on_calendar(c, "bk-1", cal + 1, add_uid, &uids, &err), 0);
    assert_int_equal(uids.len, 0);
    buf_free(&uids);
    /* audit: once only per dedupe key, listed oldest first */
    struct audit_entry e = {.booking_uid = "bk-1", .source = "push", .change = "delete",
                            .action = "cancel", .dedupe_key = "k1"};
    assert_int_equal(audit_append(c, &e, &err), 0);
    assert_int_equal(audit_append(c, &e, &err), 1);
    e.dedupe_key = NULL;
    e.action = "ignore";
    assert_int_equal(audit_append(c, &e, &err), 0);
    struct buf out;
    buf_init(&out);
    assert_int_equal(audit_list_json(c, "bk-1", &out, &err), 0);
    char *first = strstr(out.data, "\"action\":\"cancel\"");
    char *second = strstr(out.data, "\"action\":\"ignore\"");
    assert_non_null(first);
    assert_non_null(second);
    assert_true(first < second);
    assert_null(strstr(second + 1, "\"action\":\"cancel\""));
    buf_reset(&out);
    assert_int_equal(booking_list_json(c, cal, NULL, 0, 10, &out, &err), 0);
    assert_non_null(strstr(out.data, "\"uid\":\"bk-1\""));
    buf_free(&out);
}

/* decision_inputs and policy_sources (store/decisions.c), the audit's
 * shadow join and the calendar's shadow policy */
static int collect_decision(void *ud, const struct decision_row *r)
{
    struct buf *b = ud;
    buf_printf(b, "%s|%s|%s|%d%d;", r->booking_uid, r->action, r->inputs,
               r->can_reschedule, r->can_update);
    return 0;
}

static void test_decisions(void **state)
{
    (void)state;
    struct cs_err err;
    struct store_conn *c = conn();
    char name[64];
    assert_int_equal(calendar_shadow_policy(c, cal, name, sizeof name, &err), 0);
    assert_string_equal(name, "");
    int64_t id = 0;
    struct audit_entry e = {.booking_uid = "bk-d", .source = "poll", .change = "delete",
                            .action = "cancel", .policy = "default",
                            .policy_version = "0123456789ab", .id_out = &id};
    assert_int_equal(store_begin(c, &err), 0);
    assert_int_equal(audit_append(c, &e, &err), 0);
    assert_true(id > 0);
    struct decision_record r = {.audit_id = id, .calendar_id = cal,
                                .inputs = "{\"change\":{\"kind\":\"delete\"}}",
                                .can_reschedule = 0, .can_update = 1,
                                .shadow = "{\"policy\":\"lead_time\",\"action\":\"flag\"}"};
    assert_int_equal(decision_record_add(c, &r, &err), 0);
    assert_int_equal(policy_source_keep(c, "default", "0123456789ab", "return {}", 9, &err), 0);
    assert_int_equal(policy_source_keep(c, "default", "0123456789ab", "other", 5, &err), 0);
    assert_int_equal(store_commit(c, &err), 0);

    char *src = NULL;
    size_t len = 0;
    assert_int_equal(policy_source_get(c, "default", "0123456789ab", &src, &len, &err), 1);
    assert_string_equal(src, "return {}"); /* the first one kept */
    assert_int_equal(len, 9);
    free(src);
    assert_int_equal(policy_source_get(c, "default", "ffffffffffff", &src, &len, &err), 0);
    assert_null(src);

    struct buf out;
    buf_init(&out);
    assert_int_equal(decision_each(c, INT64_MIN, 0, collect_decision, &out, &err), 0);
    assert_string_equal(out.data, "bk-d|cancel|{\"change\":{\"kind\":\"delete\"}}|01;");
    buf_reset(&out);
    assert_int_equal(decision_each(c, INT64_MIN, cal + 1, collect_decision, &out, &err), 0);
    assert_int_equal(out.len, 0);
    assert_int_equal(decision_each(c, time_now_ms() + 60000, 0, collect_decision, &out, &err), 0);
    assert_int_equal(out.len, 0);
    /* the audit entry carries the shadow */
    assert_int_equal(audit_list_json(c, "bk-d", &out, &err), 0);
    assert_non_null(strstr(out.data, ",\"shadow\":{\"policy\":\"lead_time\",\"action\":\"flag\"}}"));
    buf_free(&out);
}

static void test_read_transaction(void **state)
{
    (void)state;
    struct cs_err err;
    struct store_conn *c = conn();
    assert_int_equal(store_in_tx(c), 0);
    assert_int_equal(store_begin_read(c, &err), 0);
    assert_int_equal(store_in_tx(c), 1);
    store_rollback(c);
    assert_int_equal(store_in_tx(c), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_credentials),
        cmocka_unit_test(test_calendars),
        cmocka_unit_test(test_calendar_scan),
        cmocka_unit_test(test_channels_and_notifications),
        cmocka_unit_test(test_events),
        cmocka_unit_test(test_bookings_refs_and_audit),
        cmocka_unit_test(test_decisions),
        cmocka_unit_test(test_read_transaction),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
