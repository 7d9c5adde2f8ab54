/* audit.c -- the audit table. */
#include "store/audit.h"
#include "store/decisions.h"
#include "store/db.h"

int audit_append(struct store_conn *c, const struct audit_entry *e,
                 struct cs_err *err)
{
    static const char sql[] =
        "INSERT INTO audit (booking_uid, at, source, change, action, reason,"
        " policy, policy_version, before, after, dedupe_key, calendar_id)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,"
        "  coalesce(?12, (SELECT calendar_id FROM bookings WHERE uid = ?1)))"
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
    if (e->calendar_id > 0)
        db_bind_i64(st, 12, e->calendar_id);
    if (db_exec(c, st, err))
        return -1;
    if (db_changes(c) == 0)
        return 1;
    if (e->id_out)
        *e->id_out = db_last_id(c);
    return 0;
}

int audit_list_json(struct store_conn *c, const char *uid, struct buf *out,
                    struct cs_err *err)
{
    static const char sql[] =
        "SELECT a.at, a.source, a.change, a.action, a.reason, a.policy,"
        " a.policy_version, a.before, a.after, d.shadow FROM audit a"
        " LEFT JOIN decision_inputs d ON d.audit_id = a.id"
        " WHERE a.booking_uid = ?1 ORDER BY a.id";
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
        buf_printf(out, ",\"before\":%s,\"after\":%s", before ? before : "null",
                   after ? after : "null");
        /* written by apply.c from a decision it made: a JSON object */
        const char *shadow = db_col_text(st, 9);
        if (shadow)
            buf_printf(out, ",\"shadow\":%s", shadow);
        buf_puts(out, "}");
    }
    db_reset(st);
    buf_puts(out, "]}");
    if (rc != DB_DONE)
        return db_error(c, err);
    return 0;
}

int audit_decisions_json(struct store_conn *c, int64_t calendar_id, const char *uid,
                         const char *action, int64_t since_ms, int64_t before_id,
                         int limit, struct buf *out, struct cs_err *err)
{
    /* newest first by id (ids grow with time); the cursor is the last id
     * of the page. Rows from before migration 8 have no calendar_id: the
     * booking's calendar stands in. */
    static const char sql[] =
        "SELECT a.id, a.at, a.booking_uid,"
        " coalesce(a.calendar_id, (SELECT calendar_id FROM bookings b"
        "  WHERE b.uid = a.booking_uid)) AS cal,"
        " a.source, a.change, a.action, a.reason, a.policy, a.policy_version,"
        " d.shadow FROM audit a LEFT JOIN decision_inputs d ON d.audit_id = a.id"
        " WHERE a.source <> 'api' AND a.change <> 'calendar_move'" /* no policy decided */
        " AND (?1 = 0 OR a.id < ?1) AND (CAST(?2 AS TEXT) IS NULL OR a.booking_uid = ?2)"
        " AND (CAST(?3 AS TEXT) IS NULL OR a.action = ?3) AND a.at >= ?4"
        " AND (?5 = 0 OR coalesce(a.calendar_id, (SELECT calendar_id FROM bookings b"
        "  WHERE b.uid = a.booking_uid)) = ?5)"
        " ORDER BY a.id DESC LIMIT ?6";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, before_id);
    if (uid)
        db_bind_text(st, 2, uid);
    if (action)
        db_bind_text(st, 3, action);
    db_bind_i64(st, 4, since_ms);
    db_bind_i64(st, 5, calendar_id);
    db_bind_i64(st, 6, limit + 1);
    buf_puts(out, "{\"decisions\":[");
    int rc, n = 0;
    int64_t last = 0;
    while ((rc = db_step(st)) == DB_ROW) {
        if (n == limit)
            break;
        char ts[TIME_RFC3339_MAX];
        last = db_col_i64(st, 0);
        time_format_rfc3339(db_col_i64(st, 1), ts);
        buf_printf(out, "%s{\"id\":%lld,\"at\":\"%s\",\"booking\":", n++ ? "," : "",
                   (long long)last, ts);
        buf_json_strz(out, db_col_text(st, 2));
        if (db_col_null(st, 3))
            buf_puts(out, ",\"calendar_id\":null");
        else
            buf_printf(out, ",\"calendar_id\":%lld", (long long)db_col_i64(st, 3));
        static const char *const keys[] = {"source", "change", "action",
                                           "reason", "policy", "policy_version"};
        for (int i = 0; i < 6; i++) {
            buf_printf(out, ",\"%s\":", keys[i]);
            buf_json_strz(out, db_col_text(st, 4 + i));
        }
        /* the shadow policy's decision (DESIGN §4), stored as JSON text */
        const char *shadow = db_col_text(st, 10);
        if (shadow)
            buf_printf(out, ",\"shadow\":%s", shadow);
        buf_puts(out, "}");
    }
    return db_page_end(c, st, rc, last, out, err);
}

int audit_prune(struct store_conn *c, int64_t before_ms, int limit, int64_t *n,
                struct cs_err *err)
{
    /* the entries' recorded inputs first, in the same transaction and
     * the same order: never an input without its entry */
    static const char sql[] =
        "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < ?1"
        " ORDER BY at, id LIMIT ?2)";
    if (store_begin(c, err))
        return -1;
    struct db_stmt *st = decision_prune_for_audit(c, before_ms, limit, err) ? NULL
                                                                              : db_stmt(c, sql, err);
    if (!st)
        goto fail;
    db_bind_i64(st, 1, before_ms);
    db_bind_i64(st, 2, limit);
    if (db_exec(c, st, err))
        goto fail;
    *n = db_changes(c);
    return store_commit(c, err);
fail:
    store_rollback(c);
    return -1;
}
