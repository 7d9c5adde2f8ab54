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
        " attendees, start_ms, end_ms, all_day, original_start_ms"
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
    long off[9];
    buf_reset(arena);
    for (int i = 0; i < 9; i++) {
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
    const char **f[9] = {&ev->id, &ev->etag, &ev->status,
                         &ev->series_id, &ev->updated, &ev->title,
                         &ev->booking_tag, &ev->created, &ev->attendees};
    for (int i = 0; i < 9; i++)
        *f[i] = off[i] < 0 ? NULL : arena->data + off[i];
    ev->start_ms = col_time(st, 9);
    ev->end_ms = col_time(st, 10);
    ev->all_day = db_col_int(st, 11);
    ev->original_start_ms = col_time(st, 12);
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
        " created, attendees)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        " ON CONFLICT (calendar_id, id) DO UPDATE SET"
        " etag = excluded.etag, status = excluded.status,"
        " start_ms = coalesce(excluded.start_ms, events.start_ms),"
        " end_ms = coalesce(excluded.end_ms, events.end_ms),"
        " all_day = CASE WHEN excluded.start_ms IS NULL THEN events.all_day"
        "           ELSE excluded.all_day END,"
        " series_id = coalesce(excluded.series_id, events.series_id),"
        " original_start_ms = coalesce(excluded.original_start_ms, events.original_start_ms),"
        " updated = coalesce(excluded.updated, events.updated),"
        " title = CASE WHEN excluded.status = 'cancelled'"
        "         THEN coalesce(excluded.title, events.title) ELSE excluded.title END,"
        " booking_tag = CASE WHEN excluded.status = 'cancelled'"
        "         THEN coalesce(excluded.booking_tag, events.booking_tag)"
        "         ELSE excluded.booking_tag END,"
        " created = coalesce(excluded.created, events.created),"
        " attendees = CASE WHEN excluded.status = 'cancelled'"
        "         THEN coalesce(excluded.attendees, events.attendees) ELSE excluded.attendees END";
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
    bind_str(st, 14, ev->attendees);
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
    int64_t v[2];
    int rc = db_row_i64(c, st, v, 2, err);
    if (rc == 1) {
        *start_ms = v[0];
        *end_ms = v[1];
    }
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

/* ----------------------------------------------------------- a sync's scans */

int events_ids(struct store_conn *c, int64_t cal, enum events_list which, const char *arg,
               int (*fn)(void *ud, const char *id), void *ud, struct cs_err *err)
{
    static const char *const sql[] = {
        [EVENTS_SERIES_LIVE] =
            "SELECT id FROM events WHERE calendar_id = ?1 AND series_id = ?2"
            " AND status != 'cancelled'",
        [EVENTS_UNSEEN] =
            "SELECT id FROM events WHERE calendar_id = ?1 AND status != 'cancelled'"
            " AND id NOT IN (SELECT id FROM sync_seen)",
        [EVENTS_SERIES_GONE] =
            "SELECT id FROM events WHERE calendar_id = ?1 AND series_id = ?2"
            " AND status != 'cancelled'"
            " AND id NOT IN (SELECT id FROM sync_live WHERE series = ?2 AND live = 1)",
    };
    struct db_stmt *st = db_stmt(c, sql[which], err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, cal);
    if (arg)
        db_bind_text(st, 2, arg);
    int s, rc = 0;
    while ((s = db_step(st)) == DB_ROW) {
        const char *id = db_col_text(st, 0);
        if (id && (rc = fn(ud, id)) != 0)
            break;
    }
    if (rc == 0 && s != DB_DONE)
        rc = db_error(c, err);
    db_reset(st);
    return rc;
}

/* Runs a statement of one text parameter and no rows. */
static int exec_text(struct store_conn *c, const char *sql, const char *v,
                     struct cs_err *err)
{
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, v);
    return db_exec(c, st, err);
}

int events_seen_reset(struct store_conn *c, struct cs_err *err)
{
    /* WITHOUT ROWID is SQLite's (a smaller table); PostgreSQL has no such
     * clause. The bare names reach the TEMP tables on both. */
    if (db_postgres())
        return db_script(c,
                         "CREATE TEMP TABLE IF NOT EXISTS sync_seen (id TEXT PRIMARY KEY);"
                         " DELETE FROM sync_seen;",
                         err);
    return db_script(c,
                     "CREATE TEMP TABLE IF NOT EXISTS sync_seen (id TEXT PRIMARY KEY)"
                     " WITHOUT ROWID; DELETE FROM sync_seen;",
                     err);
}

int events_seen_add(struct store_conn *c, const char *id, struct cs_err *err)
{
    static const char sql[] =
        "INSERT INTO sync_seen (id) VALUES (?1) ON CONFLICT DO NOTHING";
    return exec_text(c, sql, id, err);
}

int events_live_reset(struct store_conn *c, struct cs_err *err)
{
    if (db_postgres())
        return db_script(c,
                         "CREATE TEMP TABLE IF NOT EXISTS sync_live (series TEXT, id TEXT,"
                         " live INTEGER NOT NULL, PRIMARY KEY (series, id));"
                         " DELETE FROM sync_live;"
                         "CREATE TEMP TABLE IF NOT EXISTS sync_relinked (id TEXT PRIMARY KEY);"
                         " DELETE FROM sync_relinked;",
                         err);
    return db_script(c,
                     "CREATE TEMP TABLE IF NOT EXISTS sync_live (series TEXT, id TEXT,"
                     " live INTEGER NOT NULL, PRIMARY KEY (series, id)) WITHOUT ROWID;"
                     " DELETE FROM sync_live;"
                     "CREATE TEMP TABLE IF NOT EXISTS sync_relinked (id TEXT PRIMARY KEY)"
                     " WITHOUT ROWID; DELETE FROM sync_relinked;",
                     err);
}

int events_live_add(struct store_conn *c, const char *series, const char *id, int live,
                    struct cs_err *err)
{
    static const char sql[] =
        "INSERT INTO sync_live (series, id, live) VALUES (?1, ?2, ?3)"
        " ON CONFLICT DO NOTHING";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, series);
    db_bind_text(st, 2, id);
    db_bind_i64(st, 3, live);
    return db_exec(c, st, err);
}

int events_relinked_add(struct store_conn *c, const char *id, struct cs_err *err)
{
    static const char sql[] =
        "INSERT INTO sync_relinked (id) VALUES (?1) ON CONFLICT DO NOTHING";
    return exec_text(c, sql, id, err);
}

/* Hands each (id, series, original start[, taken]) row of st to fn. */
static int each_occ(struct store_conn *c, struct db_stmt *st, int has_taken,
                    events_occ_fn fn, void *ud, struct cs_err *err)
{
    int s, rc = 0;
    while ((s = db_step(st)) == DB_ROW) {
        const char *id = db_col_text(st, 0), *series = db_col_text(st, 1);
        if (id && series &&
            (rc = fn(ud, id, series, db_col_i64(st, 2),
                     has_taken ? db_col_int(st, 3) != 0 : 0)) != 0)
            break;
    }
    if (rc == 0 && s != DB_DONE)
        rc = db_error(c, err);
    db_reset(st);
    return rc;
}

int events_vanished(struct store_conn *c, int64_t cal, const char *series, int max,
                    events_occ_fn fn, void *ud, struct cs_err *err)
{
    static const char sql[] =
        "SELECT id, series_id, original_start_ms FROM events"
        " WHERE calendar_id = ?1 AND series_id = ?2 AND status != 'cancelled'"
        " AND original_start_ms IS NOT NULL"
        " AND id NOT IN (SELECT id FROM sync_live WHERE series = ?2)"
        " ORDER BY original_start_ms, id LIMIT ?3";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, cal);
    db_bind_text(st, 2, series);
    db_bind_i64(st, 3, max);
    return each_occ(c, st, 0, fn, ud, err);
}

int events_series_created(struct store_conn *c, int64_t cal, const char *series,
                          struct buf *out, struct cs_err *err)
{
    static const char sql[] =
        "SELECT created FROM events WHERE calendar_id = ?1 AND series_id = ?2"
        " AND created IS NOT NULL LIMIT 1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, cal);
    db_bind_text(st, 2, series);
    int s = db_step(st), rc = 0;
    if (s == DB_ROW) {
        rc = 1;
        if (buf_puts(out, db_col_text(st, 0)))
            rc = cs_err_set(err, "out of memory");
    } else if (s != DB_DONE) {
        rc = db_error(c, err);
    }
    db_reset(st);
    return rc;
}

int events_successors(struct store_conn *c, int64_t cal, const char *series,
                      const char *created, int max, events_occ_fn fn, void *ud,
                      struct cs_err *err)
{
    /* successors: a split's new series, or the series itself after an
     * "all events" change of its times (every occurrence gets a new
     * original start, so the old instance ids vanish). An occurrence of
     * the series itself that a booking already follows is not free (4th
     * column: reads booking_refs), but still counts for the series' first
     * occurrence. */
    static const char sql[] =
        "SELECT e.id, l.series, e.original_start_ms,"
        " l.series = ?2 AND EXISTS (SELECT 1 FROM booking_refs r WHERE r.calendar_id = ?1"
        "   AND r.event_id = ?2 AND r.original_start_ms = e.original_start_ms)"
        " FROM sync_live l"
        " JOIN events e ON e.calendar_id = ?1 AND e.id = l.id AND e.series_id = l.series"
        " WHERE l.live = 1 AND e.status != 'cancelled'"
        " AND e.original_start_ms IS NOT NULL"
        " AND (l.series = ?2 OR substr(l.series, 1, length(?2) + 2) = ?2 || '_R'"
        "      OR (CAST(?3 AS TEXT) IS NOT NULL AND e.created = ?3))"
        " AND e.id NOT IN (SELECT id FROM sync_relinked)"
        " ORDER BY e.original_start_ms, e.id LIMIT ?4";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, cal);
    db_bind_text(st, 2, series);
    db_bind_text(st, 3, created);
    db_bind_i64(st, 4, max);
    return each_occ(c, st, 1, fn, ud, err);
}
