/* calendars.c -- the calendars table: every SQL text that reads or
 * writes it lives here (with the channels join of the JSON views). */
#include "store/calendars.h"
#include "store/db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    " c.last_synced_at, ch.id, ch.resource_id, ch.expiration, ch.state,"      \
    " c.shadow_policy, c.state_reason"
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
    buf_puts(out, ",\"shadow_policy\":");
    buf_json_strz(out, db_col_text(st, 11));
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
    /* why the calendar is `error` or `revoked` (DESIGN §4); null otherwise */
    buf_puts(out, ",\"reason\":");
    const char *st_state = db_col_text(st, 5);
    if (db_col_null(st, 12) || !st_state ||
        (strcmp(st_state, "error") != 0 && strcmp(st_state, "revoked") != 0))
        buf_puts(out, "null");
    else
        buf_json_strz(out, db_col_text(st, 12));
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

int calendar_load(struct store_conn *c, int64_t id, struct calendar_row *row,
                  struct cs_err *err)
{
    static const char sql[] =
        "SELECT credential_id, state, external_id, sync_token, dirty, policy, settings"
        " FROM calendars WHERE id = ?1";
    memset(row, 0, sizeof *row);
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    int s = db_step(st), rc = -1;
    if (s == DB_DONE) {
        rc = 0;
    } else if (s != DB_ROW) {
        db_error(c, err);
    } else {
        const char *state = db_col_text(st, 1), *ext = db_col_text(st, 2);
        const char *tok = db_col_text(st, 3), *policy = db_col_text(st, 5);
        const char *settings = db_col_text(st, 6);
        row->id = id;
        row->credential_id = db_col_i64(st, 0);
        row->dirty = db_col_i64(st, 4);
        snprintf(row->state, sizeof row->state, "%s", state ? state : "");
        snprintf(row->external_id, sizeof row->external_id, "%s", ext ? ext : "");
        snprintf(row->policy, sizeof row->policy, "%s", policy ? policy : "");
        row->settings = strdup(settings ? settings : "{}");
        row->sync_token = tok ? strdup(tok) : NULL;
        if (!row->settings || (tok && !row->sync_token))
            cs_err_set(err, "out of memory");
        else
            rc = 1;
    }
    db_reset(st);
    return rc;
}

int calendar_shadow_policy(struct store_conn *c, int64_t id, char *out, size_t cap,
                           struct cs_err *err)
{
    static const char sql[] = "SELECT shadow_policy FROM calendars WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    int s = db_step(st), rc = 0;
    out[0] = '\0';
    if (s == DB_ROW) {
        const char *v = db_col_text(st, 0);
        if (v && *v) {
            snprintf(out, cap, "%s", v);
            rc = 1;
        }
    } else if (s != DB_DONE) {
        rc = db_error(c, err);
    }
    db_reset(st);
    return rc;
}

void calendar_row_free(struct calendar_row *row)
{
    free(row->settings);
    free(row->sync_token);
    row->settings = row->sync_token = NULL;
}

int calendar_set_state(struct store_conn *c, int64_t id, const char *state,
                       const char *reason, int if_live, int *changed,
                       struct cs_err *err)
{
    static const char sql[] =
        "UPDATE calendars SET state = ?2, state_reason = ?3, updated_at = ?4"
        " WHERE id = ?1";
    static const char live_sql[] =
        "UPDATE calendars SET state = ?2, state_reason = ?3, updated_at = ?4"
        " WHERE id = ?1 AND state IN ('syncing', 'active')";
    struct db_stmt *st = db_stmt(c, if_live ? live_sql : sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    db_bind_text(st, 2, state);
    db_bind_text(st, 3, reason);
    db_bind_i64(st, 4, time_now_ms());
    if (db_exec(c, st, err))
        return -1;
    if (changed)
        *changed = db_changes(c) > 0;
    return 0;
}

int calendar_next_live_of_credential(struct store_conn *c, int64_t credential_id,
                                     int64_t *id, struct cs_err *err)
{
    static const char sql[] =
        "SELECT id FROM calendars WHERE credential_id = ?1"
        " AND state NOT IN ('stopped', 'revoked') ORDER BY id LIMIT 1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, credential_id);
    int s = db_step(st);
    if (s == DB_ROW)
        *id = db_col_i64(st, 0);
    db_reset(st);
    if (s == DB_ROW)
        return 1;
    return s == DB_DONE ? 0 : db_error(c, err);
}

int calendar_siblings(struct store_conn *c, int64_t credential_id, int64_t except,
                      int64_t *ids, char (*ext)[CAL_EXTERNAL_ID_MAX + 1], int max,
                      int *n, struct cs_err *err)
{
    static const char sql[] =
        "SELECT id, external_id FROM calendars WHERE credential_id = ?1 AND id <> ?2"
        " AND state NOT IN ('stopped', 'revoked') ORDER BY id LIMIT ?3";
    struct db_stmt *st = db_stmt(c, sql, err);
    *n = 0;
    if (!st)
        return -1;
    db_bind_i64(st, 1, credential_id);
    db_bind_i64(st, 2, except);
    db_bind_i64(st, 3, max);
    int s;
    while ((s = db_step(st)) == DB_ROW && *n < max) {
        const char *e = db_col_text(st, 1);
        ids[*n] = db_col_i64(st, 0);
        if (ext)
            snprintf(ext[*n], CAL_EXTERNAL_ID_MAX + 1, "%s", e ? e : "");
        (*n)++;
    }
    db_reset(st);
    return s == DB_DONE || s == DB_ROW ? 0 : db_error(c, err);
}

int calendar_mark_dirty(struct store_conn *c, int64_t id, int if_live, struct cs_err *err)
{
    static const char sql[] = "UPDATE calendars SET dirty = dirty + 1 WHERE id = ?1";
    static const char live_sql[] =
        "UPDATE calendars SET dirty = dirty + 1"
        " WHERE id = ?1 AND state NOT IN ('stopped', 'revoked')";
    struct db_stmt *st = db_stmt(c, if_live ? live_sql : sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    return db_exec(c, st, err);
}

int calendar_drop_sync_token(struct store_conn *c, int64_t id, struct cs_err *err)
{
    static const char sql[] = "UPDATE calendars SET sync_token = NULL WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    return db_exec(c, st, err);
}

int calendar_sync_done(struct store_conn *c, int64_t id, const char *sync_token,
                       int64_t dirty_seen, struct cs_err *err)
{
    static const char sql[] =
        "UPDATE calendars SET sync_token = ?2, last_synced_at = ?3, updated_at = ?3,"
        /* only the marks this sync covers: one set after it began (a
         * notification meanwhile) keeps the calendar dirty, crash or not */
        " dirty = CASE WHEN dirty = ?4 THEN 0 ELSE dirty END,"
        " state_reason = CASE WHEN state IN ('syncing', 'error') THEN NULL"
        "                ELSE state_reason END,"
        " state = CASE WHEN state IN ('syncing', 'error') THEN 'active'"
        "         ELSE state END"
        " WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    db_bind_text(st, 2, sync_token);
    db_bind_i64(st, 3, time_now_ms());
    db_bind_i64(st, 4, dirty_seen);
    return db_exec(c, st, err);
}

int calendar_each_sched(struct store_conn *c,
                        int (*fn)(void *ud, const struct calendar_sched *row), void *ud,
                        struct cs_err *err)
{
    static const char sql[] =
        "SELECT id, state NOT IN ('stopped', 'revoked'), dirty,"
        " coalesce(last_synced_at, -1) FROM calendars ORDER BY id";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    int s, rc = 0;
    while ((s = db_step(st)) == DB_ROW) {
        struct calendar_sched r = {db_col_i64(st, 0), db_col_int(st, 1),
                                   db_col_int(st, 2), db_col_i64(st, 3)};
        if ((rc = fn(ud, &r)) != 0)
            break;
    }
    if (rc == 0 && s != DB_DONE)
        rc = db_error(c, err);
    db_reset(st);
    return rc;
}

int calendar_stats(struct store_conn *c, const char *const *states, int n,
                   int64_t *counts, int64_t *stalest_at, struct cs_err *err)
{
    static const char states_sql[] =
        "SELECT state, count(*) FROM calendars GROUP BY state";
    static const char stalest_sql[] =
        "SELECT min(coalesce(last_synced_at, created_at)) FROM calendars"
        " WHERE state IN ('syncing', 'active', 'error')";
    int s;
    for (int i = 0; i < n; i++)
        counts[i] = 0;
    *stalest_at = 0;
    struct db_stmt *st = db_stmt(c, states_sql, err);
    if (!st)
        return -1;
    while ((s = db_step(st)) == DB_ROW) {
        const char *state = db_col_text(st, 0);
        for (int i = 0; state && i < n; i++)
            if (strcmp(state, states[i]) == 0)
                counts[i] = db_col_i64(st, 1);
    }
    db_reset(st);
    if (s != DB_DONE)
        return db_error(c, err);
    if (!(st = db_stmt(c, stalest_sql, err)))
        return -1;
    s = db_step(st);
    if (s == DB_ROW && !db_col_null(st, 0))
        *stalest_at = db_col_i64(st, 0);
    db_reset(st);
    return s == DB_ROW || s == DB_DONE ? 0 : db_error(c, err);
}

/* Negative keys: the driver's own advisory locks use two positive ones. */
int calendar_lease_try(struct store_conn *c, int64_t id, struct cs_err *err)
{
    static const char sql[] = "SELECT pg_try_advisory_lock(?1)";
    if (!db_postgres())
        return 1;
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, -1 - id);
    int rc = db_step(st);
    int got = rc == DB_ROW && db_col_int(st, 0);
    db_reset(st);
    return rc == DB_ROW ? got : db_error(c, err);
}

void calendar_lease_release(struct store_conn *c, int64_t id)
{
    static const char sql[] = "SELECT pg_advisory_unlock(?1)";
    if (!db_postgres())
        return;
    struct db_stmt *st = db_stmt(c, sql, NULL);
    if (!st)
        return;
    db_bind_i64(st, 1, -1 - id);
    db_step(st);
    db_reset(st);
}

int calendar_sync_mark(struct store_conn *c, int64_t id, int64_t *last_synced,
                       int64_t *dirty, struct cs_err *err)
{
    static const char sql[] =
        "SELECT coalesce(last_synced_at, -1), dirty FROM calendars WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    int64_t v[2];
    int rc = db_row_i64(c, st, v, 2, err);
    if (rc == 1) {
        *last_synced = v[0];
        *dirty = v[1];
    }
    return rc;
}

/* --------------------------------------------- PATCH, re-authorisation */

int calendar_policy_get(struct store_conn *c, int64_t id, char *policy, size_t pcap,
                        char *shadow, size_t scap, struct buf *settings,
                        struct cs_err *err)
{
    static const char sql[] =
        "SELECT policy, coalesce(shadow_policy, ''), settings FROM calendars WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    int s = db_step(st), rc = 0;
    if (s == DB_ROW) {
        snprintf(policy, pcap, "%s", db_col_text(st, 0));
        snprintf(shadow, scap, "%s", db_col_text(st, 1));
        rc = buf_puts(settings, db_col_text(st, 2)) ? cs_err_set(err, "out of memory") : 1;
    } else if (s != DB_DONE) {
        rc = db_error(c, err);
    }
    db_reset(st);
    return rc;
}

int calendar_policy_set(struct store_conn *c, int64_t id, const char *policy,
                        const char *shadow, const char *settings_json,
                        struct cs_err *err)
{
    static const char sql[] =
        "UPDATE calendars SET policy = ?2, shadow_policy = ?3, settings = ?4,"
        " updated_at = ?5 WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    db_bind_text(st, 2, policy);
    if (shadow && *shadow)
        db_bind_text(st, 3, shadow);
    db_bind_text(st, 4, settings_json);
    db_bind_i64(st, 5, time_now_ms());
    return db_exec(c, st, err);
}

int calendar_resume_revoked(struct store_conn *c, int64_t credential_id, int64_t *ids,
                            int max, int *n, struct cs_err *err)
{
    /* one statement: every revoked calendar of the credential goes back to
     * syncing with no sync token (the next listing is full) and a dirty
     * mark; RETURNING names them for the scheduler */
    static const char sql[] =
        "UPDATE calendars SET state = 'syncing', state_reason = NULL,"
        " sync_token = NULL, dirty = dirty + 1, updated_at = ?2"
        " WHERE credential_id = ?1 AND state = 'revoked' RETURNING id";
    struct db_stmt *st = db_stmt(c, sql, err);
    *n = 0;
    if (!st)
        return -1;
    db_bind_i64(st, 1, credential_id);
    db_bind_i64(st, 2, time_now_ms());
    int s;
    while ((s = db_step(st)) == DB_ROW)
        if (*n < max)
            ids[(*n)++] = db_col_i64(st, 0);
    db_reset(st);
    return s == DB_DONE ? 0 : db_error(c, err);
}
