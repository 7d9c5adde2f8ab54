/* ops.c -- the Google provider's provider_ops: the engine's calls mapped
 * onto the Calendar calls (events.c, channels.c), Google's answers onto
 * provider classes (parse.c), and the X-Goog-* headers of a push.
 *
 * Idempotent insert: the event id is the write's key (calsync derives it
 * from the booking uid, writer.c writer_event_id), so a repeated insert
 * gets 409 and adopts the event that exists: a uid never gets two events.
 */
#include "provider/google/google.h"

#include "fault.h"
#include "json.h"
#include "log.h"

#include <lua.h>
#include <stdio.h>
#include <string.h>

/* Runs the Google call's outcome into the context: last answer, class. */
static int done_call(struct provider_ctx *px, enum provider_op op, int g,
                     struct google_resp *resp)
{
    return phttp_finish(px, op, g, resp, google_classify);
}

static int page_out(struct provider_ctx *px, enum provider_op op, int g,
                    struct google_resp *resp, int listing, struct provider_page *out,
                    struct cs_err *err)
{
    int rc = done_call(px, op, g, resp);
    return rc != PROVIDER_OK ? rc : pjson_page_top(listing, &google_page_keys, out, err);
}

static int g_list_changes(struct provider_ctx *px, const char *calendar,
                          const char *cursor, const char *page,
                          struct provider_page *out, struct cs_err *err)
{
    struct google_auth a = {px->db, px->credential_id, px->budget_ms};
    struct google_resp resp;
    struct google_list_params p = {
        .sync_token = cursor, .page_token = page, .show_deleted = 1,
    };
    google_resp_init(&resp);
    int g = google_events_list(&a, calendar, &p, &resp, err);
    return page_out(px, cursor ? PROVIDER_OP_LIST : PROVIDER_OP_LIST_FULL, g, &resp, 1,
                    out, err);
}

static int g_occurrences(struct provider_ctx *px, const char *calendar,
                         const char *series, const char *page,
                         struct provider_page *out, struct cs_err *err)
{
    struct google_auth a = {px->db, px->credential_id, px->budget_ms};
    struct google_resp resp;
    google_resp_init(&resp);
    int g = google_events_instances(&a, calendar, series, page, &resp, err);
    return page_out(px, PROVIDER_OP_OCCURRENCES, g, &resp, 0, out, err);
}

static int g_get(struct provider_ctx *px, const char *calendar, const char *id,
                 struct cs_err *err)
{
    struct google_auth a = {px->db, px->credential_id, px->budget_ms};
    struct google_resp resp;
    google_resp_init(&resp);
    int g = google_events_get(&a, calendar, id, &resp, err);
    return done_call(px, PROVIDER_OP_READ, g, &resp);
}

static int g_insert(struct provider_ctx *px, const char *calendar,
                    const struct provider_write *w, struct cs_err *err)
{
    struct google_auth a = {px->db, px->credential_id, px->budget_ms};
    struct google_resp resp;
    struct buf body;
    google_resp_init(&resp);
    buf_init(&body);
    int g;
    if (google_event_write(w, &body) ||
        (w->conference && google_event_body_meet(&body, w->key))) {
        buf_free(&body);
        cs_err_set(err, "out of memory");
        return PROVIDER_TRANSIENT;
    }
    g = google_events_insert_v(&a, calendar, body.data, w->conference ? 1 : 0, &resp, err);
    fault_point(g == GOOGLE_OK ? "writer_after_insert" : NULL);
    if (g == GOOGLE_EHTTP && resp.status == 409 && w->key) {
        /* the id exists: an earlier attempt (a lost answer, a crash
         * before the commit) created it -- adopt that event */
        log_info("writer.adopted", "booking=%s event=%s", log_q(w->booking_tag), w->key);
        g = google_events_get(&a, calendar, w->key, &resp, err);
        fault_point(g == GOOGLE_OK ? "writer_after_adopt" : NULL);
    }
    buf_free(&body);
    return done_call(px, PROVIDER_OP_WRITE, g, &resp);
}

static int g_patch(struct provider_ctx *px, const char *calendar, const char *id,
                   const struct provider_write *w, const char *if_match,
                   struct cs_err *err)
{
    struct google_auth a = {px->db, px->credential_id, px->budget_ms};
    struct google_resp resp;
    struct buf body;
    google_resp_init(&resp);
    buf_init(&body);
    struct provider_write pw = *w; /* a patch sends no id and no tag */
    pw.key = pw.booking_tag = NULL;
    if (google_event_write(&pw, &body)) {
        buf_free(&body);
        cs_err_set(err, "out of memory");
        return PROVIDER_TRANSIENT;
    }
    int g = google_events_patch(&a, calendar, id, body.data, if_match, &resp, err);
    buf_free(&body);
    return done_call(px, PROVIDER_OP_WRITE, g, &resp);
}

static int g_remove(struct provider_ctx *px, const char *calendar, const char *id,
                    const char *if_match, struct cs_err *err)
{
    struct google_auth a = {px->db, px->credential_id, px->budget_ms};
    struct google_resp resp;
    google_resp_init(&resp);
    int g = google_events_delete(&a, calendar, id, if_match, &resp, err);
    return done_call(px, PROVIDER_OP_WRITE, g, &resp);
}

static int g_sub_open(struct provider_ctx *px, const char *calendar,
                      const struct provider_sub_req *req, struct provider_sub *out,
                      struct cs_err *err)
{
    struct google_auth a = {px->db, px->credential_id, px->budget_ms};
    struct google_resp resp;
    google_resp_init(&resp);
    lua_State *L = json_state();
    int top = L ? lua_gettop(L) : 0;
    int g = google_events_watch(&a, calendar, req->id, req->token, req->address,
                                req->ttl_s, &resp, err);
    int rc = done_call(px, PROVIDER_OP_SUBSCRIBE, g, &resp);
    if (rc != PROVIDER_OK)
        return rc;
    const char *rid = NULL, *exp = NULL;
    size_t n = 0;
    int64_t expiration = 0;
    if (json_get_str(L, -1, "resourceId", &rid, &n, err) != 1 ||
        n >= sizeof out->resource_id ||
        json_get_str(L, -1, "expiration", &exp, NULL, err) != 1 ||
        parse_i64(exp, &expiration)) {
        cs_err_set(err, "events.watch: answer lacks resourceId or a valid expiration");
        rc = PROVIDER_MALFORMED;
    } else {
        memcpy(out->resource_id, rid, n + 1);
        out->expiration_ms = expiration;
    }
    lua_settop(L, top);
    return rc;
}

static int g_sub_stop(struct provider_ctx *px, const char *sub_id,
                      const struct provider_sub *sub, struct cs_err *err)
{
    struct google_auth a = {px->db, px->credential_id, px->budget_ms};
    struct google_resp resp;
    google_resp_init(&resp);
    int g = google_channels_stop(&a, sub_id, sub->resource_id, &resp, err);
    return done_call(px, PROVIDER_OP_SUBSCRIBE, g, &resp);
}

/* Google's push is headers only: X-Goog-Channel-ID/-Token name the
 * channel and carry its token, X-Goog-Resource-State says "sync" (the
 * channel's first message), "exists" or "not_exists". */
static int g_push_parse(struct http_req *req, struct provider_push_batch *b,
                        struct cs_err *err)
{
    (void)err;
    struct provider_push *out = &b->msg[0];
    b->n = 1;
    out->subscription = http_header(req, "X-Goog-Channel-ID");
    out->token = http_header(req, "X-Goog-Channel-Token");
    out->state = http_header(req, "X-Goog-Resource-State");
    out->sequence = http_header(req, "X-Goog-Message-Number");
    out->resource = http_header(req, "X-Goog-Resource-ID");
    return 0;
}

/* Google's own /metrics families (docs/operations.md lists them). */
static const struct metrics_family google_metrics[] = {
    {"calsync_google_requests_total", METRICS_COUNTER,
     "Google API calls by method and HTTP status (0: no answer).", NULL},
    {"calsync_google_request_duration_seconds", METRICS_HISTOGRAM,
     "Time of one Google HTTP exchange (each attempt, OAuth included).",
     METRICS_INIT("calsync_google_request_duration_seconds")},
    {"calsync_google_retries_total", METRICS_COUNTER, "Google calls retried, by method.", NULL},
    {"calsync_google_token_refreshes_total", METRICS_COUNTER, "OAuth access token refreshes.",
     METRICS_INIT("calsync_google_token_refreshes_total")},
    {"calsync_google_invalid_ids_total", METRICS_COUNTER,
     "Google calls refused before any request for an id Google cannot have issued.",
     METRICS_INIT("calsync_google_invalid_ids_total")},
    {"calsync_google_budget_wait_seconds", METRICS_HISTOGRAM,
     "Time a Google call waited for its request budget, by budget (credential or "
     "project) and priority (high: push syncs and app writes).", NULL},
};

/* The client is configured in calsync.conf's google table. */
static const char *google_unconfigured(const struct config *cfg)
{
    if (cfg->google.client_id && *cfg->google.client_id && cfg->google.client_secret &&
        *cfg->google.client_secret)
        return NULL;
    return "google.client_id and google.client_secret are not configured: Google "
           "credentials and calendars are accepted but none can sync "
           "(docs/google-setup.md)";
}

const struct provider_ops google_provider = {
    .name = "google",
    .metrics = google_metrics,
    .n_metrics = (int)(sizeof google_metrics / sizeof google_metrics[0]),
    .unconfigured = google_unconfigured,
    .init = google_init,
    .cancel = google_cancel,
    .thread_release = google_thread_release,
    .list_changes = g_list_changes,
    .occurrences = g_occurrences,
    .get = g_get,
    .insert = g_insert,
    .patch = g_patch,
    .remove = g_remove,
    .sub_open = g_sub_open,
    .sub_renew = NULL, /* a channel cannot be extended: open anew, stop the old */
    .sub_stop = g_sub_stop,
    .push_parse = g_push_parse,
    .normalise = google_event_parse,
    .encode = google_event_encode,
    .classify = google_classify,
};
