/* events.c -- the events table (the mirror). */
#include "store/events.h"
#include "store/db.h"

#include <stdio.h>
#include <string.h>

static int64_t col_time(struct db_stmt *st, int col)
{
    return db_col_null(st, col) ? SYNC_NO_TIME
                                                       : db_col_i64(st, col);
}

static void bind_time(struct db_stmt *st, int i, int64_t v)
{
    if (v == SYNC_NO_TIME)
        db_bind_null(st, i);
    else
        db_bind_i64(st, i, v);
}

static void bind_str(struct db_stmt *st, int i, const char *s)
{
    if (s)
        db_bind_text(st, i, s);
    else
        db_bind_null(st, i);
}

int events_load(struct store_conn *c, int64_t cal, const char *id, struct sync_event *ev,
                struct buf *arena, struct cs_err *err)
{
    static const char sql[] =
        "SELECT id, etag, status, series_id, updated, title, booking_tag, created,"
        " start_ms, end_ms, all_day, original_start_ms"
        " FROM events WHERE calendar_id = ?1 AND id = ?2";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, cal);
    db_bind_text(st, 2, id);
    int s = db_step(st), rc = -1;
    if (s == DB_DONE) {
        rc = 0;
        goto done;
    }
    if (s != DB_ROW) {
        db_error(c, err);
        goto done;
    }
    long off[8];
    buf_reset(arena);
    for (int i = 0; i < 8; i++) {
        const char *t = db_col_text(st, i);
        off[i] = -1;
        if (t) {
            off[i] = (long)arena->len;
            if (buf_append(arena, t, strlen(t) + 1)) {
                cs_err_set(err, "out of memory");
                goto done;
            }
        }
    }
    const char **f[8] = {&ev->id, &ev->etag, &ev->status,
                         &ev->series_id, &ev->updated, &ev->title,
                         &ev->booking_tag, &ev->created};
    for (int i = 0; i < 8; i++)
        *f[i] = off[i] < 0 ? NULL : arena->data + off[i];
    ev->start_ms = col_time(st, 8);
    ev->end_ms = col_time(st, 9);
    ev->all_day = db_col_int(st, 10);
    ev->original_start_ms = col_time(st, 11);
    rc = 1;
done:
    db_reset(st);
    return rc;
}

int events_put(struct store_conn *c, int64_t cal, const struct sync_event *ev,
               struct cs_err *err)
{
    static const char sql[] =
        "INSERT INTO events (calendar_id, id, etag, status, start_ms, end_ms,"
        " all_day, series_id, original_start_ms, updated, title, booking_tag,"
        " created)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
        " ON CONFLICT (calendar_id, id) DO UPDATE SET"
        " etag = excluded.etag, status = excluded.status,"
        " start_ms = coalesce(excluded.start_ms, start_ms),"
        " end_ms = coalesce(excluded.end_ms, end_ms),"
        " all_day = CASE WHEN excluded.start_ms IS NULL THEN all_day"
        "           ELSE excluded.all_day END,"
        " series_id = coalesce(excluded.series_id, series_id),"
        " original_start_ms = coalesce(excluded.original_start_ms, original_start_ms),"
        " updated = coalesce(excluded.updated, updated),"
        " title = CASE WHEN excluded.status = 'cancelled'"
        "         THEN coalesce(excluded.title, title) ELSE excluded.title END,"
        " booking_tag = CASE WHEN excluded.status = 'cancelled'"
        "         THEN coalesce(excluded.booking_tag, booking_tag)"
        "         ELSE excluded.booking_tag END,"
        " created = coalesce(excluded.created, created)";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, cal);
    bind_str(st, 2, ev->id);
    bind_str(st, 3, ev->etag);
    bind_str(st, 4, ev->status);
    bind_time(st, 5, ev->start_ms);
    bind_time(st, 6, ev->end_ms);
    db_bind_i64(st, 7, ev->all_day);
    bind_str(st, 8, ev->series_id);
    bind_time(st, 9, ev->original_start_ms);
    bind_str(st, 10, ev->updated);
    bind_str(st, 11, ev->title);
    bind_str(st, 12, ev->booking_tag);
    bind_str(st, 13, ev->created);
    return db_exec(c, st, err);
}


int events_etag(struct store_conn *c, int64_t cal, const char *id, char *etag, size_t cap,
                struct cs_err *err)
{
    static const char sql[] = "SELECT etag FROM events WHERE calendar_id = ?1 AND id = ?2";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, cal);
    db_bind_text(st, 2, id);
    int s = db_step(st), rc = 0;
    if (s == DB_ROW && db_col_text(st, 0)) {
        snprintf(etag, cap, "%s", db_col_text(st, 0));
        rc = 1;
    } else if (s != DB_ROW && s != DB_DONE) {
        rc = db_error(c, err);
    }
    db_reset(st);
    return rc;
}

int events_times(struct store_conn *c, int64_t cal, const char *id, int64_t *start_ms,
                 int64_t *end_ms, struct cs_err *err)
{
    static const char sql[] =
        "SELECT start_ms, end_ms FROM events WHERE calendar_id = ?1 AND id = ?2";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, cal);
    db_bind_text(st, 2, id);
    int s = db_step(st), rc = 0;
    if (s == DB_ROW) {
        *start_ms = db_col_i64(st, 0);
        *end_ms = db_col_i64(st, 1);
        rc = 1;
    } else if (s != DB_DONE) {
        rc = db_error(c, err);
    }
    db_reset(st);
    return rc;
}

int events_set_cancelled(struct store_conn *c, int64_t cal, const char *id,
                         struct cs_err *err)
{
    static const char sql[] =
        "UPDATE events SET status = 'cancelled' WHERE calendar_id = ?1 AND id = ?2";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, cal);
    db_bind_text(st, 2, id);
    return db_exec(c, st, err);
}
