/* credentials.c -- the credentials table: every SQL text that touches it
 * outside the token sealing at start (secret.c) lives here. */
#include "store/credentials.h"
#include "store/db.h"

#include "secret.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The statement sql with a credential's tokens as stored (sealed when a
 * key is set, secret.h) bound at ?2 (refresh), ?3 (access, NULL when
 * none) and ?4 (expiry, NULL when <= 0); the rest is the caller's to
 * bind. rt and at hold the sealed texts: the caller frees them after the
 * statement ran. NULL with err set. */
static struct db_stmt *token_stmt(struct store_conn *c, const char *sql,
                                  const char *refresh_token, const char *access_token,
                                  int64_t expires_at_ms, struct buf *rt, struct buf *at,
                                  struct cs_err *err)
{
    if (secret_seal("refresh_token", refresh_token, rt, err) ||
        (access_token && secret_seal("access_token", access_token, at, err)))
        return NULL;
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return NULL;
    db_bind_textn(st, 2, rt->data, rt->len);
    if (access_token)
        db_bind_textn(st, 3, at->data, at->len);
    if (expires_at_ms > 0)
        db_bind_i64(st, 4, expires_at_ms);
    return st;
}

int credential_insert(struct store_conn *c, const char *provider,
                      const char *refresh_token, const char *access_token,
                      int64_t expires_at_ms, int64_t *id_out,
                      struct cs_err *err)
{
    static const char sql[] =
        "INSERT INTO credentials (provider, refresh_token, access_token,"
        " expires_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5)";
    struct buf rt, at;
    buf_init(&rt);
    buf_init(&at);
    int rc = -1;
    struct db_stmt *st = token_stmt(c, sql, refresh_token, access_token, expires_at_ms,
                                    &rt, &at, err);
    if (!st)
        goto done;
    db_bind_text(st, 1, provider);
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

int credential_tokens_load(struct store_conn *c, int64_t id, struct buf *refresh,
                           char *access, size_t cap, int64_t *expires_at, int *revoked,
                           struct cs_err *err)
{
    static const char sql[] =
        "SELECT refresh_token, access_token, expires_at, state FROM credentials"
        " WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    int rc = -1;
    int s = db_step(st);
    if (s == DB_DONE) {
        cs_err_set(err, "no credential %lld", (long long)id);
        goto done;
    }
    if (s != DB_ROW) {
        db_error(c, err);
        goto done;
    }
    const char *rt = db_col_text(st, 0);
    const char *at = db_col_text(st, 1);
    const char *state = db_col_text(st, 3);
    /* stored sealed when a token key is set (secret.h) */
    if (secret_open("refresh_token", rt ? rt : "", refresh, err))
        goto done;
    access[0] = '\0';
    if (at) {
        struct buf ab;
        buf_init(&ab);
        int bad = secret_open("access_token", at, &ab, err);
        if (!bad && ab.len < cap)
            memcpy(access, ab.data, ab.len + 1);
        buf_free(&ab);
        if (bad)
            goto done;
    }
    *expires_at = db_col_null(st, 2) ? 0 : db_col_i64(st, 2);
    *revoked = state && strcmp(state, "revoked") == 0;
    rc = 0;
done:
    db_reset(st);
    return rc;
}

/* Seals v (secret.h, under the column's name) and runs sql with (id, v)
 * and, when expires_at >= 0, ?3 = expires_at. 0 or -1. */
static int store_sealed(struct store_conn *c, const char *sql, const char *column,
                        int64_t id, const char *v, int64_t expires_at, struct cs_err *err)
{
    struct buf sealed;
    buf_init(&sealed);
    if (secret_seal(column, v, &sealed, err))
        return -1;
    struct db_stmt *st = db_stmt(c, sql, err);
    int rc = -1;
    if (st) {
        db_bind_i64(st, 1, id);
        db_bind_textn(st, 2, sealed.data, sealed.len);
        if (expires_at >= 0)
            db_bind_i64(st, 3, expires_at);
        rc = db_exec(c, st, err);
    }
    buf_free(&sealed);
    return rc;
}

int credential_access_store(struct store_conn *c, int64_t id, const char *access,
                            int64_t expires_at, struct cs_err *err)
{
    static const char sql[] =
        "UPDATE credentials SET access_token = ?2, expires_at = ?3 WHERE id = ?1"
        " AND state = 'active'";
    return store_sealed(c, sql, "access_token", id, access, expires_at < 0 ? 0 : expires_at,
                        err);
}

int credential_mark_revoked(struct store_conn *c, int64_t id, struct cs_err *err)
{
    static const char sql[] =
        "UPDATE credentials SET state = 'revoked', access_token = NULL,"
        " expires_at = NULL WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    return db_exec(c, st, err);
}

/* --------------------------------------------------------------- as stored */

int credential_raw_each(struct store_conn *c,
                        int (*fn)(void *ud, int64_t id, const char *refresh,
                                  const char *access),
                        void *ud, struct cs_err *err)
{
    static const char sql[] =
        "SELECT id, refresh_token, access_token FROM credentials ORDER BY id";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    int s, rc = 0;
    while ((s = db_step(st)) == DB_ROW)
        if ((rc = fn(ud, db_col_i64(st, 0), db_col_text(st, 1), db_col_text(st, 2))) != 0)
            break;
    if (rc == 0 && s != DB_DONE)
        rc = db_error(c, err);
    db_reset(st);
    return rc;
}

int credential_raw_get(struct store_conn *c, int64_t id, int col, char **out,
                       struct cs_err *err)
{
    static const char sql[] = "SELECT refresh_token, access_token FROM credentials WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    *out = NULL;
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    int s = db_step(st), rc = 0;
    if (s == DB_ROW) {
        const char *v = db_col_text(st, col == 1 ? 0 : 1);
        rc = 1;
        if (v && !(*out = strdup(v)))
            rc = cs_err_set(err, "out of memory");
    } else if (s != DB_DONE) {
        rc = db_error(c, err);
    }
    db_reset(st);
    return rc;
}

int credential_raw_set(struct store_conn *c, int64_t id, int col, const char *v, size_t n,
                       struct cs_err *err)
{
    static const char upd_refresh[] = "UPDATE credentials SET refresh_token = ?2 WHERE id = ?1";
    static const char upd_access[] = "UPDATE credentials SET access_token = ?2 WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, col == 1 ? upd_refresh : upd_access, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    db_bind_textn(st, 2, v, n);
    return db_exec(c, st, err);
}

int credential_provider(struct store_conn *c, int64_t id, char *name, size_t cap,
                        struct cs_err *err)
{
    static const char sql[] = "SELECT provider FROM credentials WHERE id = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    int s = db_step(st), rc = 0;
    if (s == DB_ROW) {
        const char *p = db_col_text(st, 0);
        snprintf(name, cap, "%s", p ? p : "");
        rc = 1;
    } else if (s != DB_DONE) {
        rc = db_error(c, err);
    }
    db_reset(st);
    return rc;
}

int credential_json(struct store_conn *c, int64_t id, struct buf *out,
                    struct cs_err *err)
{
    /* reads the calendars table (store/calendars.c's) for the id list */
    static const char sql[] = "SELECT provider, state FROM credentials WHERE id = ?1";
    static const char cals_sql[] =
        "SELECT id FROM calendars WHERE credential_id = ?1 ORDER BY id";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, id);
    int s = db_step(st);
    if (s != DB_ROW) {
        db_reset(st);
        return s == DB_DONE ? 0 : db_error(c, err);
    }
    buf_printf(out, "{\"id\":%lld,\"provider\":", (long long)id);
    buf_json_strz(out, db_col_text(st, 0));
    buf_puts(out, ",\"state\":");
    buf_json_strz(out, db_col_text(st, 1));
    db_reset(st);
    if (!(st = db_stmt(c, cals_sql, err)))
        return -1;
    db_bind_i64(st, 1, id);
    buf_puts(out, ",\"calendars\":[");
    int n = 0;
    while ((s = db_step(st)) == DB_ROW)
        buf_printf(out, "%s%lld", n++ ? "," : "", (long long)db_col_i64(st, 0));
    db_reset(st);
    buf_puts(out, "]}");
    return s == DB_DONE ? 1 : db_error(c, err);
}

int credential_replace_tokens(struct store_conn *c, int64_t id, const char *refresh_token,
                              const char *access_token, int64_t expires_at_ms,
                              struct cs_err *err)
{
    static const char sql[] =
        "UPDATE credentials SET refresh_token = ?2, access_token = ?3,"
        " expires_at = ?4, state = 'active' WHERE id = ?1";
    struct buf rt, at;
    buf_init(&rt);
    buf_init(&at);
    int rc = -1;
    struct db_stmt *st = token_stmt(c, sql, refresh_token, access_token, expires_at_ms,
                                    &rt, &at, err);
    if (!st)
        goto done;
    db_bind_i64(st, 1, id);
    rc = db_exec(c, st, err);
done:
    buf_free(&rt);
    buf_free(&at);
    return rc;
}

int credential_refresh_store(struct store_conn *c, int64_t id, const char *refresh,
                             struct cs_err *err)
{
    static const char sql[] =
        "UPDATE credentials SET refresh_token = ?2 WHERE id = ?1 AND state = 'active'";
    return store_sealed(c, sql, "refresh_token", id, refresh, -1, err);
}
