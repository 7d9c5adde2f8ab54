/* channels.c -- the channels table. */
#include "store/channels.h"
#include "store/db.h"

#include <stdio.h>

int channels_insert_opening(struct store_conn *c, const char *id, int64_t calendar_id,
                            const char *token, int64_t created_ms, struct cs_err *err)
{
    static const char sql[] =
        "INSERT INTO channels (id, calendar_id, token, state, created_at)"
        " VALUES (?1, ?2, ?3, 'opening', ?4)";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, id);
    db_bind_i64(st, 2, calendar_id);
    db_bind_text(st, 3, token);
    db_bind_i64(st, 4, created_ms);
    return db_exec(c, st, err);
}

int channels_set_live(struct store_conn *c, const char *id, const char *resource_id,
                      int64_t expiration_ms, struct cs_err *err)
{
    static const char sql[] =
        "UPDATE channels SET resource_id = ?2, expiration = ?3, state = 'live'"
        " WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, id);
    db_bind_text(st, 2, resource_id);
    db_bind_i64(st, 3, expiration_ms);
    return db_exec(c, st, err);
}

int channels_set_expiration(struct store_conn *c, const char *id, int64_t expiration_ms,
                            struct cs_err *err)
{
    static const char sql[] = "UPDATE channels SET expiration = ?2 WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, id);
    db_bind_i64(st, 2, expiration_ms);
    return db_exec(c, st, err);
}

int channels_set_state(struct store_conn *c, const char *id, const char *state,
                       struct cs_err *err)
{
    static const char sql[] =
        "UPDATE channels SET state = ?2, stopped_at = CASE WHEN ?2 IN ('stopped','failed')"
        " THEN ?3 ELSE stopped_at END WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, id);
    db_bind_text(st, 2, state);
    db_bind_i64(st, 3, time_now_ms());
    return db_exec(c, st, err);
}

int channels_live(struct store_conn *c, int64_t calendar_id, struct channels_live *out,
                  int cap, int *n, struct cs_err *err)
{
    static const char sql[] =
        "SELECT id, resource_id, created_at, coalesce(expiration, 0) FROM channels"
        " WHERE calendar_id = ?1 AND state IN ('live', 'opening')"
        " ORDER BY created_at DESC";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, calendar_id);
    *n = 0;
    int rc;
    while ((rc = db_step(st)) == DB_ROW && *n < cap) {
        struct channels_live *l = &out[(*n)++];
        const char *id = db_col_text(st, 0);
        snprintf(l->id, sizeof l->id, "%s", id ? id : "");
        l->has_resource = !db_col_null(st, 1);
        snprintf(l->resource_id, sizeof l->resource_id, "%s",
                 l->has_resource ? db_col_text(st, 1) : "");
        l->created = db_col_i64(st, 2);
        l->expiration = db_col_i64(st, 3);
    }
    db_reset(st);
    if (rc != DB_DONE && rc != DB_ROW)
        return db_error(c, err);
    return 0;
}

int channels_stop_target(struct store_conn *c, const char *id, char *rid, size_t cap,
                         int64_t *credential_id, struct cs_err *err)
{
    static const char sql[] =
        "SELECT ch.resource_id, c.credential_id FROM channels ch"
        " JOIN calendars c ON c.id = ch.calendar_id WHERE ch.id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, id);
    int s = db_step(st), have = 0;
    if (s == DB_ROW && !db_col_null(st, 0)) {
        snprintf(rid, cap, "%s", db_col_text(st, 0));
        *credential_id = db_col_i64(st, 1);
        have = 1;
    } else if (s != DB_ROW && s != DB_DONE) {
        have = db_error(c, err);
    }
    db_reset(st);
    return have;
}

int channels_calendar_by_resource(struct store_conn *c, const char *rid,
                                  int64_t *calendar_id, struct cs_err *err)
{
    static const char sql[] =
        "SELECT calendar_id FROM channels WHERE resource_id = ?1"
        " ORDER BY created_at DESC LIMIT 1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, rid);
    int s = db_step(st);
    if (s == DB_ROW)
        *calendar_id = db_col_i64(st, 0);
    db_reset(st);
    if (s == DB_ROW)
        return 1;
    return s == DB_DONE ? 0 : db_error(c, err);
}

int channels_lookup(struct store_conn *c, const char *id, int64_t *calendar_id,
                    struct buf *token, char state[16], struct cs_err *err)
{
    static const char sql[] = "SELECT calendar_id, token, state FROM channels WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, id);
    int rc = db_step(st), found = 0;
    if (rc == DB_ROW) {
        const char *want = db_col_text(st, 1), *s = db_col_text(st, 2);
        *calendar_id = db_col_i64(st, 0);
        snprintf(state, 16, "%s", s ? s : "");
        found = 1;
        if (want && buf_puts(token, want))
            found = cs_err_set(err, "out of memory");
    } else if (rc != DB_DONE) {
        found = db_error(c, err);
    }
    db_reset(st);
    return found;
}

int channels_list_json(struct store_conn *c, struct buf *out, struct cs_err *err)
{
    static const char sql[] =
        "SELECT id, calendar_id, resource_id, expiration, state FROM channels"
        " ORDER BY created_at, id";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    buf_puts(out, "{\"channels\":[");
    int rc, n = 0;
    while ((rc = db_step(st)) == DB_ROW) {
        buf_puts(out, n++ ? ",{\"id\":" : "{\"id\":");
        buf_json_strz(out, db_col_text(st, 0));
        buf_printf(out, ",\"calendar_id\":%lld,\"resource_id\":", (long long)db_col_i64(st, 1));
        buf_json_strz(out, db_col_text(st, 2));
        buf_puts(out, ",\"expiration\":");
        if (db_col_null(st, 3)) {
            buf_puts(out, "null");
        } else {
            char ts[TIME_RFC3339_MAX];
            time_format_rfc3339(db_col_i64(st, 3), ts);
            buf_json_strz(out, ts);
        }
        buf_puts(out, ",\"state\":");
        buf_json_strz(out, db_col_text(st, 4));
        buf_puts(out, "}");
    }
    db_reset(st);
    buf_puts(out, "]}");
    return rc == DB_DONE ? 0 : db_error(c, err);
}
