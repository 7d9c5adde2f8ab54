/* notifications.c -- the notifications table. */
#include "store/notifications.h"
#include "store/db.h"

int notification_insert(struct store_conn *c, int64_t id, const char *channel_id,
                        int64_t number, const char *resource_state, int64_t received_at,
                        struct cs_err *err)
{
    static const char sql[] =
        "INSERT INTO notifications (id, channel_id, message_number,"
        " resource_state, received_at) VALUES (?1, ?2, ?3, ?4, ?5)"
        " ON CONFLICT DO NOTHING";
    /* id <= 0: the database numbers the row (shared database: an id
     * counted in one instance's memory would clash with another's) */
    static const char sql_auto[] =
        "INSERT INTO notifications (channel_id, message_number,"
        " resource_state, received_at) VALUES (?1, ?2, ?3, ?4)";
    struct db_stmt *st = db_stmt(c, id > 0 ? sql : sql_auto, err);
    if (!st)
        return -1;
    int k = id > 0; /* parameters shift by one when the id is bound */
    if (id > 0)
        db_bind_i64(st, 1, id);
    db_bind_text(st, k + 1, channel_id);
    if (number >= 0)
        db_bind_i64(st, k + 2, number);
    if (resource_state && resource_state[0])
        db_bind_text(st, k + 3, resource_state);
    db_bind_i64(st, k + 4, received_at);
    return db_exec(c, st, err);
}

int notification_next_id(struct store_conn *c, int64_t *out, struct cs_err *err)
{
    static const char sql[] = "SELECT coalesce(max(id), 0) + 1 FROM notifications";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    int rc = db_step(st);
    if (rc == DB_ROW)
        *out = db_col_i64(st, 0);
    db_reset(st);
    return rc == DB_ROW ? 0 : db_error(c, err);
}

int notification_prune(struct store_conn *c, int64_t before_ms, int limit, int64_t *n,
                       struct cs_err *err)
{
    /* the newest row always stays: notification_next_id() continues from
     * it, so ids never go back to 1 after a quiet week */
    static const char sql[] =
        "DELETE FROM notifications WHERE id IN (SELECT id FROM notifications"
        " WHERE received_at < ?1 AND id < (SELECT max(id) FROM notifications)"
        " ORDER BY received_at LIMIT ?2)";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, before_ms);
    db_bind_i64(st, 2, limit);
    if (db_exec(c, st, err))
        return -1;
    *n = db_changes(c);
    return 0;
}
