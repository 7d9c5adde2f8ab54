/* calendar.c -- credential and calendar rows and their JSON views. */
#include "calendar.h"
#include "store/db.h"

#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "secret.h"

#include <stdio.h>
#include <string.h>

int credential_insert(struct store_conn *c, const char *provider,
                      const char *refresh_token, const char *access_token,
                      int64_t expires_at_ms, int64_t *id_out,
                      struct cs_err *err)
{
    static const char sql[] =
        "INSERT INTO credentials (provider, refresh_token, access_token,"
        " expires_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5)";
    struct buf rt, at; /* as stored: sealed when a key is set (secret.h) */
    buf_init(&rt);
    buf_init(&at);
    int rc = -1;
    if (secret_seal("refresh_token", refresh_token, &rt, err) ||
        (access_token && secret_seal("access_token", access_token, &at, err)))
        goto done;
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        goto done;
    db_bind_text(st, 1, provider);
    db_bind_textn(st, 2, rt.data, rt.len);
    if (access_token)
        db_bind_textn(st, 3, at.data, at.len);
    if (expires_at_ms > 0)
        db_bind_i64(st, 4, expires_at_ms);
    db_bind_i64(st, 5, time_now_ms());
    if (db_exec(c, st, err))
        goto done;
    *id_out = db_last_id(c);
    rc = 0;
done:
    buf_free(&rt);
    buf_free(&at);
    return rc;
}

int credential_exists(struct store_conn *c, int64_t id, struct cs_err *err)
{
    static const char sql[] = "SELECT 1 FROM credentials WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    int rc = db_step(st);
    db_reset(st);
    if (rc == DB_ROW)
        return 1;
    if (rc == DB_DONE)
        return 0;
    return db_error(c, err);
}

int calendar_upsert(struct store_conn *c, int64_t credential_id,
                    const char *external_id, const char *policy,
                    const char *settings_json, int64_t *id_out, int *created,
                    struct cs_err *err)
{
    static const char find_sql[] =
        "SELECT id, state FROM calendars WHERE credential_id = ?1 AND external_id = ?2";
    static const char ins_sql[] =
        "INSERT INTO calendars (credential_id, external_id, policy, settings,"
        " created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)";
    static const char revive_sql[] =
        "UPDATE calendars SET state = 'syncing', state_reason = NULL,"
        " updated_at = ?2 WHERE id = ?1";
    int64_t now = time_now_ms();
    struct db_stmt *st = db_stmt(c, find_sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, credential_id);
    db_bind_text(st, 2, external_id);
    int rc = db_step(st);
    if (rc == DB_ROW) {
        *id_out = db_col_i64(st, 0);
        int stopped = strcmp(db_col_text(st, 1), "stopped") == 0;
        db_reset(st);
        *created = 0;
        if (stopped) {
            struct db_stmt *u = db_stmt(c, revive_sql, err);
            if (!u)
                return -1;
            db_bind_i64(u, 1, *id_out);
            db_bind_i64(u, 2, now);
            return db_exec(c, u, err);
        }
        return 0;
    }
    db_reset(st);
    if (rc != DB_DONE)
        return db_error(c, err);
    st = db_stmt(c, ins_sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, credential_id);
    db_bind_text(st, 2, external_id);
    db_bind_text(st, 3, policy);
    db_bind_text(st, 4, settings_json);
    db_bind_i64(st, 5, now);
    if (db_exec(c, st, err))
        return -1;
    *id_out = db_last_id(c);
    *created = 1;
    return 0;
}

#define CAL_COLS                                                              \
    "c.id, c.credential_id, c.external_id, c.policy, c.settings, c.state,"    \
    " c.last_synced_at, ch.id, ch.resource_id, ch.expiration, ch.state"
#define CAL_FROM                                                              \
    " FROM calendars c LEFT JOIN channels ch ON ch.id = ("                    \
    "   SELECT id FROM channels WHERE calendar_id = c.id AND state = 'live'"  \
    "   ORDER BY expiration DESC LIMIT 1)"

static void row_json(struct db_stmt *st, struct buf *out)
{
    char ts[TIME_RFC3339_MAX];
    buf_printf(out, "{\"id\":%lld,\"credential_id\":%lld,\"external_id\":",
               (long long)db_col_i64(st, 0),
               (long long)db_col_i64(st, 1));
    buf_json_strz(out, db_col_text(st, 2));
    buf_puts(out, ",\"policy\":");
    buf_json_strz(out, db_col_text(st, 3));
    buf_puts(out, ",\"settings\":");
    buf_puts(out, db_col_text(st, 4)); /* stored as encoded JSON */
    buf_puts(out, ",\"state\":");
    buf_json_strz(out, db_col_text(st, 5));
    buf_puts(out, ",\"last_synced_at\":");
    if (db_col_null(st, 6)) {
        buf_puts(out, "null");
    } else {
        time_format_rfc3339(db_col_i64(st, 6), ts);
        buf_json_strz(out, ts);
    }
    buf_puts(out, ",\"channel\":");
    if (db_col_null(st, 7)) {
        buf_puts(out, "null");
    } else {
        buf_puts(out, "{\"id\":");
        buf_json_strz(out, db_col_text(st, 7));
        buf_puts(out, ",\"resource_id\":");
        buf_json_strz(out, db_col_text(st, 8));
        buf_puts(out, ",\"expiration\":");
        if (db_col_null(st, 9)) {
            buf_puts(out, "null");
        } else {
            time_format_rfc3339(db_col_i64(st, 9), ts);
            buf_json_strz(out, ts);
        }
        buf_puts(out, ",\"state\":");
        buf_json_strz(out, db_col_text(st, 10));
        buf_puts(out, "}");
    }
    buf_puts(out, "}");
}

int calendar_json(struct store_conn *c, int64_t id, struct buf *out,
                  struct cs_err *err)
{
    static const char sql[] = "SELECT " CAL_COLS CAL_FROM " WHERE c.id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    int rc = db_step(st);
    if (rc == DB_ROW)
        row_json(st, out);
    db_reset(st);
    if (rc == DB_ROW)
        return 1;
    if (rc == DB_DONE)
        return 0;
    return db_error(c, err);
}

int calendar_list_json(struct store_conn *c, int64_t after_id, int limit,
                       struct buf *out, struct cs_err *err)
{
    static const char sql[] =
        "SELECT " CAL_COLS CAL_FROM " WHERE c.id > ?1 ORDER BY c.id LIMIT ?2";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, after_id);
    db_bind_i64(st, 2, limit + 1);
    buf_puts(out, "{\"calendars\":[");
    int n = 0, rc;
    int64_t last = 0;
    while ((rc = db_step(st)) == DB_ROW) {
        if (n == limit)
            break;
        if (n++)
            buf_puts(out, ",");
        last = db_col_i64(st, 0);
        row_json(st, out);
    }
    return db_page_end(c, st, rc, last, out, err);
}

int calendar_ref_load(struct store_conn *c, int64_t id, struct calendar_ref *out,
                      struct cs_err *err)
{
    static const char sql[] =
        "SELECT credential_id, external_id, state FROM calendars WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    int rc = db_step(st);
    if (rc == DB_ROW) {
        out->credential_id = db_col_i64(st, 0);
        snprintf(out->external_id, sizeof out->external_id, "%s", db_col_text(st, 1));
        snprintf(out->state, sizeof out->state, "%s", db_col_text(st, 2));
    }
    db_reset(st);
    if (rc == DB_ROW)
        return 1;
    return rc == DB_DONE ? 0 : db_error(c, err);
}

int calendar_state(struct store_conn *c, int64_t id, char *state, size_t cap,
                   struct cs_err *err)
{
    static const char sql[] = "SELECT state FROM calendars WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    int rc = db_step(st);
    if (rc == DB_ROW)
        snprintf(state, cap, "%s", db_col_text(st, 0));
    db_reset(st);
    if (rc == DB_ROW)
        return 1;
    if (rc == DB_DONE)
        return 0;
    return db_error(c, err);
}

int calendar_set_state(struct store_conn *c, int64_t id, const char *state,
                       const char *reason, struct cs_err *err)
{
    static const char sql[] =
        "UPDATE calendars SET state = ?2, state_reason = ?3, updated_at = ?4"
        " WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    db_bind_text(st, 2, state);
    if (reason)
        db_bind_text(st, 3, reason);
    db_bind_i64(st, 4, time_now_ms());
    return db_exec(c, st, err);
}

/* ------------------------------------------------ added for Google I/O */

int calendar_error_notify(struct store_conn *c, int64_t calendar_id,
                          const char *state, const char *reason,
                          struct cs_err *err)
{
    /* one CALENDAR_ERROR per subscriber, in the caller's transaction;
     * the caller kicks the outbox after its commit */
    if (outbox_enqueue_calendar_error(c, calendar_id, state, reason, err))
        return -1;
    char series[96];
    snprintf(series, sizeof series, "calsync_calendar_errors_total{state=\"%s\"}",
             strcmp(state, "revoked") == 0 ? "revoked" : "error");
    metrics_inc(series);
    log_warn("calendar.error", "calendar=%lld state=%s reason=%s",
             (long long)calendar_id, state, log_q(reason));
    return 0;
}

int credential_revoke(struct store_conn *c, int64_t credential_id,
                      const char *reason, struct cs_err *err)
{
    static const char cred_sql[] =
        "UPDATE credentials SET state = 'revoked', access_token = NULL,"
        " expires_at = NULL WHERE id = ?1";
    static const char list_sql[] =
        "SELECT id FROM calendars WHERE credential_id = ?1"
        " AND state NOT IN ('stopped', 'revoked')";
    static const char cal_sql[] =
        "UPDATE calendars SET state = 'revoked', state_reason = ?2, updated_at = ?3"
        " WHERE id = ?1";
    int rc = -1;
    struct db_stmt *st;
    if (store_begin(c, err))
        return -1;
    if (!(st = db_stmt(c, cred_sql, err)))
        goto done;
    db_bind_i64(st, 1, credential_id);
    if (db_exec(c, st, err))
        goto done;
    for (;;) {
        /* one calendar at a time: the hook may run statements of its own */
        if (!(st = db_stmt(c, list_sql, err)))
            goto done;
        db_bind_i64(st, 1, credential_id);
        int s = db_step(st);
        if (s == DB_DONE) {
            db_reset(st);
            break;
        }
        if (s != DB_ROW) {
            db_error(c, err);
            db_reset(st);
            goto done;
        }
        int64_t id = db_col_i64(st, 0);
        db_reset(st);
        if (!(st = db_stmt(c, cal_sql, err)))
            goto done;
        db_bind_i64(st, 1, id);
        db_bind_text(st, 2, reason);
        db_bind_i64(st, 3, time_now_ms());
        if (db_exec(c, st, err) ||
            calendar_error_notify(c, id, "revoked", reason, err))
            goto done;
    }
    rc = store_commit(c, err);
    if (rc == 0)
        outbox_kick();
done:
    if (rc)
        store_rollback(c);
    return rc;
}
