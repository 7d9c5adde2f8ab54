/* decisions.c -- decision_inputs and policy_sources (decisions.h). */
#include "store/decisions.h"
#include "store/db.h"

#include <stdlib.h>
#include <string.h>

int decision_record_add(struct store_conn *c, const struct decision_record *r,
                        struct cs_err *err)
{
    static const char sql[] =
        "INSERT INTO decision_inputs (audit_id, calendar_id, inputs, can_reschedule,"
        " can_update, shadow) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, r->audit_id);
    db_bind_i64(st, 2, r->calendar_id);
    db_bind_text(st, 3, r->inputs);
    db_bind_i64(st, 4, r->can_reschedule);
    db_bind_i64(st, 5, r->can_update);
    db_bind_text(st, 6, r->shadow);
    return db_exec(c, st, err);
}

int policy_source_keep(struct store_conn *c, const char *name, const char *version,
                       const char *src, size_t len, struct cs_err *err)
{
    /* ON CONFLICT: the common case (a version already kept) writes nothing */
    static const char sql[] =
        "INSERT INTO policy_sources (name, version, source, first_at)"
        " VALUES (?1, ?2, ?3, ?4) ON CONFLICT (name, version) DO NOTHING";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, name);
    db_bind_text(st, 2, version);
    db_bind_textn(st, 3, src, len);
    db_bind_i64(st, 4, time_now_ms());
    return db_exec(c, st, err);
}

int policy_source_get(struct store_conn *c, const char *name, const char *version,
                      char **out, size_t *len, struct cs_err *err)
{
    static const char sql[] =
        "SELECT source FROM policy_sources WHERE name = ?1 AND version = ?2";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_text(st, 1, name);
    db_bind_text(st, 2, version);
    int s = db_step(st), rc = 0;
    *out = NULL;
    *len = 0;
    if (s == DB_ROW) {
        const char *v = db_col_text(st, 0);
        if (!(*out = strdup(v ? v : ""))) {
            rc = cs_err_set(err, "out of memory");
        } else {
            *len = strlen(*out);
            rc = 1;
        }
    } else if (s != DB_DONE) {
        rc = db_error(c, err);
    }
    db_reset(st);
    return rc;
}

int decision_each(struct store_conn *c, int64_t since_ms, int64_t calendar_id,
                  int (*fn)(void *ud, const struct decision_row *row), void *ud,
                  struct cs_err *err)
{
    /* reads audit too: a decision is its audit entry plus its inputs */
    static const char sql[] =
        "SELECT a.id, a.at, d.calendar_id, a.booking_uid, a.source, a.change, a.action,"
        " a.reason, a.policy, a.policy_version, d.inputs, d.can_reschedule, d.can_update"
        " FROM decision_inputs d JOIN audit a ON a.id = d.audit_id"
        " WHERE a.at >= ?1 AND (?2 = 0 OR d.calendar_id = ?2) ORDER BY a.id";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, since_ms);
    db_bind_i64(st, 2, calendar_id);
    int s, rc = 0;
    while ((s = db_step(st)) == DB_ROW) {
        struct decision_row r = {
            .audit_id = db_col_i64(st, 0),
            .at_ms = db_col_i64(st, 1),
            .calendar_id = db_col_i64(st, 2),
            .booking_uid = db_col_text(st, 3),
            .source = db_col_text(st, 4),
            .change = db_col_text(st, 5),
            .action = db_col_text(st, 6),
            .reason = db_col_text(st, 7),
            .policy = db_col_text(st, 8),
            .policy_version = db_col_text(st, 9),
            .inputs = db_col_text(st, 10),
            .can_reschedule = db_col_int(st, 11),
            .can_update = db_col_int(st, 12),
        };
        if ((rc = fn(ud, &r)) != 0)
            break;
    }
    if (rc == 0 && s != DB_DONE)
        rc = db_error(c, err);
    db_reset(st);
    return rc;
}

int decision_prune_for_audit(struct store_conn *c, int64_t before_ms, int limit,
                             struct cs_err *err)
{
    static const char sql[] =
        "DELETE FROM decision_inputs WHERE audit_id IN (SELECT id FROM audit"
        " WHERE at < ?1 ORDER BY at, id LIMIT ?2)";
    struct db_stmt *st = db_stmt(c, sql, err);
    if (!st)
        return -1;
    db_bind_i64(st, 1, before_ms);
    db_bind_i64(st, 2, limit);
    return db_exec(c, st, err);
}
