/* booking.c -- booking rows, event references and the audit trail. */
#include "booking.h"
#include "store/db.h"

#include <stdlib.h>
#include <string.h>
#include <stdio.h>

#define BOOKING_COLS                                                          \
    "seq, uid, calendar_id, title, start_ms, end_ms, status, needs_review,"   \
    " event_id, original_start_ms, cancelled_by, cancel_reason, etag,"        \
    " write_state, write_error, updated_at"

static char *dup_col(struct db_stmt *st, int col)
{
    const char *s = db_col_text(st, col);
    return s ? strdup(s) : NULL;
}

static void from_row(struct db_stmt *st, struct booking *b)
{
    memset(b, 0, sizeof *b);
    b->seq = db_col_i64(st, 0);
    b->uid = dup_col(st, 1);
    b->calendar_id = db_col_i64(st, 2);
    b->title = dup_col(st, 3);
    b->start_ms = db_col_i64(st, 4);
    b->end_ms = db_col_i64(st, 5);
    snprintf(b->status, sizeof b->status, "%s", db_col_text(st, 6));
    b->needs_review = db_col_int(st, 7);
    b->event_id = dup_col(st, 8);
    b->has_original = !db_col_null(st, 9);
    b->original_start_ms = db_col_i64(st, 9);
    b->cancelled_by = dup_col(st, 10);
    b->cancel_reason = dup_col(st, 11);
    b->etag = dup_col(st, 12);
    snprintf(b->write_state, sizeof b->write_state, "%s", db_col_text(st, 13));
    b->write_error = dup_col(st, 14);
    b->updated_ms = db_col_i64(st, 15);
}

void booking_free(struct booking *b)
{
    free(b->uid);
    free(b->title);
    free(b->event_id);
    free(b->cancelled_by);
    free(b->cancel_reason);
    free(b->etag);
    free(b->write_error);
    memset(b, 0, sizeof *b);
}

int booking_get(struct store_conn *c, const char *uid, struct booking *b,
                struct cs_err *err)
{
    static const char sql[] = "SELECT " BOOKING_COLS " FROM bookings WHERE uid = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, uid);
    int rc = db_step(st);
    if (rc == DB_ROW) {
        from_row(st, b);
        db_reset(st);
        if (!b->uid || !b->title) {
            booking_free(b);
            return cs_err_set(err, "out of memory");
        }
        return 1;
    }
    db_reset(st);
    if (rc == DB_DONE)
        return 0;
    return db_error(c, err);
}

int booking_insert(struct store_conn *c, const struct booking *b,
                   struct cs_err *err)
{
    static const char sql[] =
        "INSERT INTO bookings (uid, calendar_id, title, start_ms, end_ms,"
        " event_id, original_start_ms, write_state, created_at, updated_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)"
        " ON CONFLICT (uid) DO NOTHING";
    static const char ref_sql[] =
        "INSERT OR IGNORE INTO booking_refs (calendar_id, event_id,"
        " original_start_ms, booking_uid) VALUES (?1, ?2, ?3, ?4)";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, b->uid);
    db_bind_i64(st, 2, b->calendar_id);
    db_bind_text(st, 3, b->title);
    db_bind_i64(st, 4, b->start_ms);
    db_bind_i64(st, 5, b->end_ms);
    if (b->event_id)
        db_bind_text(st, 6, b->event_id);
    if (b->has_original)
        db_bind_i64(st, 7, b->original_start_ms);
    db_bind_text(st, 8, b->write_state[0] ? b->write_state : "none");
    db_bind_i64(st, 9, b->updated_ms ? b->updated_ms : time_now_ms());
    if (db_exec(c, st, err))
        return -1;
    if (db_changes(c) == 0)
        return 1;
    if (!b->event_id)
        return 0;
    st = db_stmt(c, ref_sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, b->calendar_id);
    db_bind_text(st, 2, b->event_id);
    db_bind_i64(st, 3, b->has_original ? b->original_start_ms : -1);
    db_bind_text(st, 4, b->uid);
    return db_exec(c, st, err);
}

int booking_save(struct store_conn *c, const struct booking *b,
                 struct cs_err *err)
{
    static const char sql[] =
        "UPDATE bookings SET title = ?2, start_ms = ?3, end_ms = ?4,"
        " status = ?5, needs_review = ?6, cancelled_by = ?7,"
        " cancel_reason = ?8, updated_at = ?9 WHERE uid = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, b->uid);
    db_bind_text(st, 2, b->title);
    db_bind_i64(st, 3, b->start_ms);
    db_bind_i64(st, 4, b->end_ms);
    db_bind_text(st, 5, b->status);
    db_bind_i64(st, 6, b->needs_review);
    if (b->cancelled_by)
        db_bind_text(st, 7, b->cancelled_by);
    if (b->cancel_reason)
        db_bind_text(st, 8, b->cancel_reason);
    db_bind_i64(st, 9, b->updated_ms);
    return db_exec(c, st, err);
}

static void put_time(struct buf *out, const char *key, int64_t ms)
{
    char ts[TIME_RFC3339_MAX];
    time_format_rfc3339(ms, ts);
    buf_printf(out, ",\"%s\":\"%s\"", key, ts);
}

void booking_json(const struct booking *b, struct buf *out)
{
    buf_puts(out, "{\"uid\":");
    buf_json_strz(out, b->uid);
    buf_printf(out, ",\"calendar_id\":%lld,\"title\":", (long long)b->calendar_id);
    buf_json_strz(out, b->title);
    put_time(out, "start", b->start_ms);
    put_time(out, "end", b->end_ms);
    buf_puts(out, ",\"status\":");
    buf_json_strz(out, b->status);
    buf_printf(out, ",\"needs_review\":%s,\"event_id\":",
               b->needs_review ? "true" : "false");
    buf_json_strz(out, b->event_id);
    if (b->has_original)
        put_time(out, "original_start", b->original_start_ms);
    if (b->cancelled_by) {
        buf_puts(out, ",\"cancelled_by\":");
        buf_json_strz(out, b->cancelled_by);
    }
    if (b->cancel_reason) {
        buf_puts(out, ",\"cancel_reason\":");
        buf_json_strz(out, b->cancel_reason);
    }
    buf_puts(out, ",\"write_state\":");
    buf_json_strz(out, b->write_state);
    if (b->write_error) {
        buf_puts(out, ",\"write_error\":");
        buf_json_strz(out, b->write_error);
    }
    put_time(out, "updated_at", b->updated_ms);
    buf_puts(out, "}");
}

void booking_snapshot_json(const struct booking *b, struct buf *out)
{
    buf_puts(out, "{");
    char ts[TIME_RFC3339_MAX];
    time_format_rfc3339(b->start_ms, ts);
    buf_printf(out, "\"start\":\"%s\"", ts);
    put_time(out, "end", b->end_ms);
    buf_puts(out, ",\"title\":");
    buf_json_strz(out, b->title);
    buf_puts(out, ",\"status\":");
    buf_json_strz(out, b->status);
    buf_puts(out, "}");
}

int booking_list_json(struct store_conn *c, int64_t calendar_id,
                      const char *status, int64_t after, int limit,
                      struct buf *out, struct cs_err *err)
{
    static const char sql[] =
        "SELECT " BOOKING_COLS " FROM bookings WHERE seq > ?1"
        " AND (?2 = 0 OR calendar_id = ?2) AND (?3 IS NULL OR status = ?3)"
        " ORDER BY seq LIMIT ?4";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, after);
    db_bind_i64(st, 2, calendar_id);
    if (status)
        db_bind_text(st, 3, status);
    db_bind_i64(st, 4, limit + 1);
    buf_puts(out, "{\"bookings\":[");
    int n = 0, rc;
    int64_t last = 0;
    while ((rc = db_step(st)) == DB_ROW) {
        if (n == limit)
            break;
        struct booking b;
        from_row(st, &b);
        if (n++)
            buf_puts(out, ",");
        booking_json(&b, out);
        last = b.seq;
        booking_free(&b);
    }
    return db_page_end(c, st, rc, last, out, err);
}

int audit_append(struct store_conn *c, const struct audit_entry *e,
                 struct cs_err *err)
{
    static const char sql[] =
        "INSERT INTO audit (booking_uid, at, source, change, action, reason,"
        " policy, policy_version, before, after, dedupe_key)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
        " ON CONFLICT (dedupe_key) DO NOTHING";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, e->booking_uid);
    db_bind_i64(st, 2, time_now_ms());
    db_bind_text(st, 3, e->source);
    db_bind_text(st, 4, e->change);
    db_bind_text(st, 5, e->action);
    const char *opt[] = {e->reason, e->policy, e->policy_version, e->before,
                         e->after, e->dedupe_key};
    for (int i = 0; i < 6; i++)
        if (opt[i])
            db_bind_text(st, 6 + i, opt[i]);
    if (db_exec(c, st, err))
        return -1;
    return db_changes(c) == 0 ? 1 : 0;
}

int audit_list_json(struct store_conn *c, const char *uid, struct buf *out,
                    struct cs_err *err)
{
    static const char sql[] =
        "SELECT at, source, change, action, reason, policy, policy_version,"
        " before, after FROM audit WHERE booking_uid = ?1 ORDER BY id";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, uid);
    buf_puts(out, "{\"entries\":[");
    int rc, n = 0;
    while ((rc = db_step(st)) == DB_ROW) {
        char ts[TIME_RFC3339_MAX];
        time_format_rfc3339(db_col_i64(st, 0), ts);
        buf_printf(out, "%s{\"at\":\"%s\"", n++ ? "," : "", ts);
        static const char *const keys[] = {"source", "change", "action",
                                           "reason", "policy", "policy_version"};
        for (int i = 0; i < 6; i++) {
            buf_printf(out, ",\"%s\":", keys[i]);
            buf_json_strz(out, db_col_text(st, 1 + i));
        }
        const char *before = db_col_text(st, 7), *after = db_col_text(st, 8);
        buf_printf(out, ",\"before\":%s,\"after\":%s}", before ? before : "null",
                   after ? after : "null");
    }
    db_reset(st);
    buf_puts(out, "]}");
    if (rc != DB_DONE)
        return db_error(c, err);
    return 0;
}
