/* intake.c -- Google push notification intake. See intake.h.
 *
 * Hot path: one indexed lookup of the channel and one small transaction
 * (notification row + dirty flag). The token compare is constant-time.
 */
#include "intake.h"
#include "fault.h"

#include "log.h"
#include "metrics.h"
#include "store.h"

#include <stdio.h>
#include <string.h>

#define INTAKE_ID_MAX 256

static struct intake_hooks intake_hooks;

void intake_set_hooks(const struct intake_hooks *hooks)
{
    intake_hooks = *hooks;
}

static void count(const char *outcome)
{
    char series[128];
    snprintf(series, sizeof series,
             "calsync_notifications_total{outcome=\"%s\"}", outcome);
    metrics_inc(series);
}

void intake_handle(struct http_req *req, struct http_resp *resp)
{
    static const char find_sql[] =
        "SELECT calendar_id, token, state FROM channels WHERE id = ?1";
    static const char note_sql[] =
        "INSERT INTO notifications (channel_id, message_number, resource_state,"
        " received_at) VALUES (?1, ?2, ?3, ?4)";
    static const char dirty_sql[] =
        "UPDATE calendars SET dirty = 1 WHERE id = ?1 AND state NOT IN ('stopped', 'revoked')";
    struct cs_err err = {{0}};
    const char *id = http_header(req, "X-Goog-Channel-ID");
    const char *token = http_header(req, "X-Goog-Channel-Token");
    const char *rstate = http_header(req, "X-Goog-Resource-State");
    const char *msgno = http_header(req, "X-Goog-Message-Number");
    int64_t number = -1, calendar_id = 0;
    char state[16] = "";
    int in_tx = 0;

    resp->status = 200;
    buf_puts(&resp->body, "{}");
    if (!id || !*id || strlen(id) > INTAKE_ID_MAX) {
        count("unknown");
        return;
    }
    if (msgno && parse_i64(msgno, &number))
        number = -1;
    struct store_conn *c = store_conn(&err);
    sqlite3_stmt *st = c ? store_stmt(c, find_sql, &err) : NULL;
    if (!st)
        goto db_fail;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int match = 0;
    if (rc == SQLITE_ROW) {
        calendar_id = sqlite3_column_int64(st, 0);
        const char *want = store_col_text(st, 1);
        snprintf(state, sizeof state, "%s", store_col_text(st, 2));
        match = token && want && secure_equal(token, strlen(token), want, strlen(want));
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        goto db_fail;
    if (rc == SQLITE_DONE) {
        count("unknown");
        log_info("intake.unknown_channel", "channel=%s", log_q(id));
        return;
    }
    if (strcmp(state, "live") != 0 && strcmp(state, "opening") != 0) {
        count("stopped");
        log_info("intake.stopped_channel", "channel=%s state=%s", log_q(id), state);
        if (intake_hooks.stop_channel)
            intake_hooks.stop_channel(id);
        return;
    }
    if (!match) {
        count("bad_token");
        log_warn("intake.bad_token", "channel=%s", log_q(id));
        http_error(resp, 401, "channel token missing or wrong");
        return;
    }
    int is_sync = rstate && strcmp(rstate, "sync") == 0;
    if (store_begin(c, &err))
        goto db_fail;
    in_tx = 1;
    st = store_stmt(c, note_sql, &err);
    if (!st)
        goto db_fail;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (number >= 0)
        sqlite3_bind_int64(st, 2, number);
    if (rstate)
        sqlite3_bind_text(st, 3, rstate, (int)strnlen(rstate, 32), SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, time_now_ms());
    if (store_exec(c, st, &err))
        goto db_fail;
    if (!is_sync) {
        st = store_stmt(c, dirty_sql, &err);
        if (!st)
            goto db_fail;
        sqlite3_bind_int64(st, 1, calendar_id);
        if (store_exec(c, st, &err))
            goto db_fail;
    }
    fault_point("intake_before_commit");
    if (store_commit(c, &err)) {
        in_tx = 0;
        goto db_fail;
    }
    fault_point("intake_after_commit");
    in_tx = 0;
    count(is_sync ? "sync" : "accepted");
    if (!is_sync && intake_hooks.sync)
        intake_hooks.sync(calendar_id);
    return;
db_fail:
    if (in_tx)
        store_rollback(c);
    /* Google retries non-2xx with backoff; polling covers the rest. */
    count("error");
    log_error("intake.db_error", "err=%s", log_q(err.msg));
    http_error(resp, 503, "database unavailable");
}
