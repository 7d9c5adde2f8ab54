/* bookings.c -- the bookings and booking_refs tables. */
#include "store/bookings.h"
#include "store/db.h"

#include "booking.h" /* booking_json: the list's items */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BOOKING_COLS                                                          \
    "seq, uid, calendar_id, title, start_ms, end_ms, status, needs_review,"   \
    " event_id, original_start_ms, cancelled_by, cancel_reason, etag,"        \
    " write_state, write_error, updated_at, proposed_kind, proposed_start_ms," \
    " proposed_end_ms, proposed_title, description, location, time_zone,"    \
    " attendees, conference, conference_url"

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
    const char *pk = db_col_text(st, 16);
    snprintf(b->proposed_kind, sizeof b->proposed_kind, "%s", pk ? pk : "");
    b->proposed_start_ms = db_col_null(st, 17) ? -1 : db_col_i64(st, 17);
    b->proposed_end_ms = db_col_null(st, 18) ? -1 : db_col_i64(st, 18);
    b->proposed_title = dup_col(st, 19);
    b->description = dup_col(st, 20);
    b->location = dup_col(st, 21);
    b->time_zone = dup_col(st, 22);
    b->attendees = dup_col(st, 23);
    b->conference = dup_col(st, 24);
    b->conference_url = dup_col(st, 25);
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
    free(b->proposed_title);
    free(b->description);
    free(b->location);
    free(b->time_zone);
    free(b->attendees);
    free(b->conference);
    free(b->conference_url);
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
        " event_id, original_start_ms, write_state, created_at, updated_at,"
        " description, location, time_zone, attendees, conference)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10, ?11, ?12, ?13, ?14)"
        " ON CONFLICT (uid) DO NOTHING";
    static const char ref_sql[] =
        "INSERT INTO booking_refs (calendar_id, event_id,"
        " original_start_ms, booking_uid) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING";
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
    const char *extra[] = {b->description, b->location, b->time_zone, b->attendees};
    for (int i = 0; i < 4; i++)
        if (extra[i])
            db_bind_text(st, 10 + i, extra[i]);
    if (b->conference)
        db_bind_text(st, 14, b->conference);
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
        " cancel_reason = ?8, updated_at = ?9, proposed_kind = ?10,"
        " proposed_start_ms = ?11, proposed_end_ms = ?12, proposed_title = ?13,"
        " description = ?14, location = ?15, time_zone = ?16, attendees = ?17"
        " WHERE uid = ?1";
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
    if (b->needs_review && b->proposed_kind[0]) {
        db_bind_text(st, 10, b->proposed_kind);
        if (b->proposed_start_ms >= 0)
            db_bind_i64(st, 11, b->proposed_start_ms);
        if (b->proposed_end_ms >= 0)
            db_bind_i64(st, 12, b->proposed_end_ms);
        if (b->proposed_title)
            db_bind_text(st, 13, b->proposed_title);
    }
    const char *extra[] = {b->description, b->location, b->time_zone, b->attendees};
    for (int i = 0; i < 4; i++)
        if (extra[i])
            db_bind_text(st, 14 + i, extra[i]);
    return db_exec(c, st, err);
}

int booking_list_json(struct store_conn *c, int64_t calendar_id,
                      const char *status, int64_t after, int limit,
                      struct buf *out, struct cs_err *err)
{
    static const char sql[] =
        "SELECT " BOOKING_COLS " FROM bookings WHERE seq > ?1"
        " AND (?2 = 0 OR calendar_id = ?2) AND (CAST(?3 AS TEXT) IS NULL OR status = ?3)"
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

int booking_flagged_json(struct store_conn *c, int limit, struct buf *out,
                         int64_t *total, struct cs_err *err)
{
    static const char sql[] =
        "SELECT " BOOKING_COLS " FROM bookings WHERE needs_review = 1"
        " ORDER BY updated_at DESC, seq DESC LIMIT ?1";
    static const char count_sql[] =
        "SELECT count(*) FROM bookings WHERE needs_review = 1";
    struct db_stmt *st = db_stmt(c, count_sql, err);
    if (!st)
        return -1;
    int rc = db_step(st);
    *total = rc == DB_ROW ? db_col_i64(st, 0) : 0;
    db_reset(st);
    if (rc != DB_ROW)
        return db_error(c, err);
    if (!(st = db_stmt(c, sql, err)))
        return -1;
    db_bind_i64(st, 1, limit);
    buf_puts(out, "{\"bookings\":[");
    int n = 0;
    while ((rc = db_step(st)) == DB_ROW) {
        struct booking b;
        from_row(st, &b);
        if (n++)
            buf_puts(out, ",");
        booking_json(&b, out);
        booking_free(&b);
    }
    db_reset(st);
    buf_puts(out, "]}");
    return rc == DB_DONE ? 0 : db_error(c, err);
}

/* ----------------------------------------------------------- booking_refs */

static int each_uid(struct store_conn *c, struct db_stmt *st,
                    void (*fn)(void *ud, const char *uid), void *ud, struct cs_err *err)
{
    int rc;
    while ((rc = db_step(st)) == DB_ROW)
        fn(ud, db_col_text(st, 0));
    db_reset(st);
    return rc == DB_DONE ? 0 : db_error(c, err);
}

int booking_refs_at(struct store_conn *c, int64_t cal, const char *event_id,
                    int64_t original_start, void (*fn)(void *ud, const char *uid),
                    void *ud, struct cs_err *err)
{
    static const char sql[] =
        "SELECT booking_uid FROM booking_refs WHERE calendar_id = ?1"
        " AND event_id = ?2 AND original_start_ms = ?3";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, cal);
    db_bind_text(st, 2, event_id);
    db_bind_i64(st, 3, original_start);
    return each_uid(c, st, fn, ud, err);
}

int booking_refs_of_series(struct store_conn *c, int64_t cal, const char *series_id,
                           void (*fn)(void *ud, const char *uid), void *ud,
                           struct cs_err *err)
{
    static const char sql[] =
        "SELECT booking_uid FROM booking_refs WHERE calendar_id = ?1"
        " AND event_id = ?2 AND original_start_ms >= 0";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, cal);
    db_bind_text(st, 2, series_id);
    return each_uid(c, st, fn, ud, err);
}

int booking_on_calendar(struct store_conn *c, const char *uid, int64_t cal,
                        void (*fn)(void *ud, const char *uid), void *ud,
                        struct cs_err *err)
{
    static const char sql[] = "SELECT uid FROM bookings WHERE uid = ?1 AND calendar_id = ?2";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, uid);
    db_bind_i64(st, 2, cal);
    return each_uid(c, st, fn, ud, err);
}

int booking_ref_move(struct store_conn *c, int64_t cal, const char *uid,
                     const char *old_series, int64_t old_start, const char *new_series,
                     int64_t new_start, struct cs_err *err)
{
    static const char add_sql[] =
        "INSERT INTO booking_refs (calendar_id, event_id,"
        " original_start_ms, booking_uid) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING";
    static const char del_sql[] =
        "DELETE FROM booking_refs WHERE calendar_id = ?1 AND event_id = ?2"
        " AND original_start_ms = ?3 AND booking_uid = ?4";
    static const char own_sql[] =
        "UPDATE bookings SET event_id = ?2, original_start_ms = ?3"
        " WHERE uid = ?1 AND calendar_id = ?4 AND event_id = ?5"
        " AND original_start_ms = ?6";
    struct db_stmt *st = db_stmt(c, add_sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, cal);
    db_bind_text(st, 2, new_series);
    db_bind_i64(st, 3, new_start);
    db_bind_text(st, 4, uid);
    if (db_exec(c, st, err) || !(st = db_stmt(c, del_sql, err)))
        return -1;
    db_bind_i64(st, 1, cal);
    db_bind_text(st, 2, old_series);
    db_bind_i64(st, 3, old_start);
    db_bind_text(st, 4, uid);
    if (db_exec(c, st, err) || !(st = db_stmt(c, own_sql, err)))
        return -1;
    db_bind_text(st, 1, uid);
    db_bind_text(st, 2, new_series);
    db_bind_i64(st, 3, new_start);
    db_bind_i64(st, 4, cal);
    db_bind_text(st, 5, old_series);
    db_bind_i64(st, 6, old_start);
    return db_exec(c, st, err);
}

int booking_move_calendar(struct store_conn *c, const char *uid, int64_t from,
                          int64_t to, const char *event_id, struct cs_err *err)
{
    static const char book_sql[] =
        "UPDATE bookings SET calendar_id = ?3 WHERE uid = ?1 AND calendar_id = ?2";
    static const char add_sql[] =
        "INSERT INTO booking_refs (calendar_id, event_id, original_start_ms, booking_uid)"
        " SELECT ?3, event_id, original_start_ms, booking_uid FROM booking_refs"
        " WHERE booking_uid = ?1 AND calendar_id = ?2 AND event_id = ?4"
        " AND original_start_ms = -1 ON CONFLICT DO NOTHING";
    static const char del_sql[] =
        "DELETE FROM booking_refs WHERE booking_uid = ?1 AND calendar_id = ?2"
        " AND event_id = ?4 AND original_start_ms = -1";
    const char *const sqls[] = {book_sql, add_sql, del_sql};
    for (int i = 0; i < 3; i++) {
        struct db_stmt *st = db_stmt(c, sqls[i], err);
        if (!st)
            return -1;
        db_bind_text(st, 1, uid);
        db_bind_i64(st, 2, from);
        db_bind_i64(st, 3, to);
        if (i > 0)
            db_bind_text(st, 4, event_id);
        if (db_exec(c, st, err))
            return -1;
    }
    return 0;
}

int booking_set_conference_url(struct store_conn *c, const char *uid, const char *url,
                               struct cs_err *err)
{
    static const char sql[] = "UPDATE bookings SET conference_url = ?2 WHERE uid = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, uid);
    db_bind_text(st, 2, url);
    return db_exec(c, st, err);
}

int booking_event_written(struct store_conn *c, const char *uid, int64_t cal,
                          const char *event_id, const char *etag, struct cs_err *err)
{
    static const char book_sql[] =
        "UPDATE bookings SET event_id = ?2, etag = ?3 WHERE uid = ?1";
    static const char ref_sql[] =
        "INSERT INTO booking_refs (calendar_id, event_id,"
        " original_start_ms, booking_uid) VALUES (?1, ?2, -1, ?3) ON CONFLICT DO NOTHING";
    struct db_stmt *st = db_stmt(c, book_sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, uid);
    db_bind_text(st, 2, event_id);
    db_bind_text(st, 3, etag);
    if (db_exec(c, st, err) || !(st = db_stmt(c, ref_sql, err)))
        return -1;
    db_bind_i64(st, 1, cal);
    db_bind_text(st, 2, event_id);
    db_bind_text(st, 3, uid);
    return db_exec(c, st, err);
}

int booking_move(struct store_conn *c, const char *uid, int64_t cal, struct cs_err *err)
{
    static const char book_sql[] =
        "UPDATE bookings SET calendar_id = ?2, event_id = NULL, etag = NULL WHERE uid = ?1";
    static const char refs_sql[] = "DELETE FROM booking_refs WHERE booking_uid = ?1";
    struct db_stmt *st = db_stmt(c, book_sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, uid);
    db_bind_i64(st, 2, cal);
    if (db_exec(c, st, err) || !(st = db_stmt(c, refs_sql, err)))
        return -1;
    db_bind_text(st, 1, uid);
    return db_exec(c, st, err);
}

/* ------------------------------------------------------------ write state */

int booking_write_pending(struct store_conn *c, const char *uid, struct cs_err *err)
{
    static const char sql[] =
        "UPDATE bookings SET write_state = 'pending', write_error = NULL WHERE uid = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, uid);
    return db_exec(c, st, err);
}

int booking_write_ended(struct store_conn *c, const char *uid, int failed,
                        const char *error, struct cs_err *err)
{
    /* reads the jobs table (store/queue.c's): whether another write of the
     * booking is still queued */
    static const char sql[] =
        "UPDATE bookings SET write_state = CASE"
        "  WHEN CAST(?2 AS TEXT) = 'failed' THEN 'failed'"
        "  WHEN EXISTS (SELECT 1 FROM jobs WHERE booking_uid = ?1 AND state = 'pending') THEN 'pending'"
        "  WHEN write_state = 'failed' THEN 'failed'"
        "  ELSE 'none' END,"
        " write_error = CASE WHEN CAST(?2 AS TEXT) = 'failed' THEN ?3 ELSE write_error END"
        " WHERE uid = ?1";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, uid);
    db_bind_text(st, 2, failed ? "failed" : "done");
    db_bind_text(st, 3, error);
    return db_exec(c, st, err);
}
