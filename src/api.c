/* api.c -- admin API handlers.
 *
 * Error policy (docs/api.md): 400 for a body or parameter that is not
 * well-formed or breaks a rule of its own (wrong type, bad time, start not
 * before end, unknown field); 404 for an unknown id in the path; 409 for a
 * state conflict (duplicate uid, already cancelled); 422 for a well-formed
 * request naming something unusable (unknown calendar, credential or
 * policy); 413 for bodies over 1 MiB (http.c). 503 when the database is
 * not usable.
 */
#include "api.h"
#include "store/channels.h"

#include "booking.h"
#include "calendar.h"
#include "health.h"
#include "intake.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "policy/policy.h"
#include "scheduler.h"
#include "store/store.h"
#include "writer.h"

#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGE_DEFAULT 50
#define PAGE_MAX 500

static const struct config *api_cfg;

/* Common prologue: the thread's DB connection and JSON state. */
struct ctx {
    struct store_conn *db;
    lua_State *L;
    int top;
    struct cs_err err;
};

static int ctx_open(struct ctx *x, struct http_resp *resp)
{
    x->db = store_conn(&x->err);
    x->L = json_state();
    if (!x->db || !x->L) {
        http_error(resp, 503, "database unavailable: %s",
                   x->db ? "out of memory" : x->err.msg);
        return -1;
    }
    x->top = lua_gettop(x->L);
    return 0;
}

static void ctx_close(struct ctx *x)
{
    if (x->L)
        lua_settop(x->L, x->top);
}

static void db_fail(struct http_resp *resp, struct ctx *x)
{
    log_error("api.db_error", "err=%s", log_q(x->err.msg));
    http_error(resp, 503, "database error: %s", x->err.msg);
}

/* Decodes the body into an object at the stack top; on failure answers
 * 400 and returns -1. */
static int body_object(struct ctx *x, struct http_req *req,
                       struct http_resp *resp, const char *const *allowed)
{
    if (req->body_len == 0) {
        http_error(resp, 400, "a JSON object body is required");
        return -1;
    }
    if (json_decode_object(x->L, req->body, req->body_len, &x->err) ||
        (allowed && json_only_keys(x->L, -1, allowed, &x->err))) {
        http_error(resp, 400, "%s", x->err.msg);
        return -1;
    }
    return 0;
}

/* Empty body, or an object whose keys are in `allowed`. Pushes a table
 * either way. */
static int optional_body(struct ctx *x, struct http_req *req,
                         struct http_resp *resp, const char *const *allowed)
{
    size_t i = 0;
    /* strchr finds the terminator too: a NUL byte is not white space */
    while (i < req->body_len && req->body[i] && strchr(" \t\r\n", req->body[i]))
        i++;
    if (i == req->body_len) {
        lua_newtable(x->L);
        return 0;
    }
    return body_object(x, req, resp, allowed);
}

/* A string field with a length bound (and no NUL). Returns 1/0/-1 as the
 * json getters and answers 400 on -1 or when required and absent. */
static int str_field(struct ctx *x, struct http_resp *resp, const char *key,
                     size_t max, int required, const char **out)
{
    size_t n = 0;
    int r = json_get_str(x->L, -1, key, out, &n, &x->err);
    if (r < 0) {
        http_error(resp, 400, "%s", x->err.msg);
        return -1;
    }
    if (r == 0 && required) {
        http_error(resp, 400, "'%s' is required", key);
        return -1;
    }
    if (r == 1 && (n > max || strlen(*out) != n)) {
        http_error(resp, 400, "'%s' must be at most %zu bytes without NUL", key, max);
        return -1;
    }
    if (r == 0)
        *out = NULL;
    return r;
}

static int time_field(struct ctx *x, struct http_resp *resp, const char *key,
                      int required, int64_t *ms)
{
    const char *s;
    int r = str_field(x, resp, key, 64, required, &s);
    if (r <= 0)
        return r;
    if (time_parse_rfc3339(s, strlen(s), ms)) {
        http_error(resp, 400, "'%s' must be an RFC 3339 date-time such as "
                   "2026-11-24T09:00:00Z", key);
        return -1;
    }
    return 1;
}

/* An id given as a JSON integer or a string of digits. */
static int id_field(struct ctx *x, struct http_resp *resp, const char *key,
                    int64_t *id)
{
    lua_getfield(x->L, -1, key);
    int t = lua_type(x->L, -1);
    lua_pop(x->L, 1);
    int r;
    if (t == LUA_TSTRING) {
        const char *s;
        r = json_get_str(x->L, -1, key, &s, NULL, &x->err);
        if (r == 1 && (parse_i64(s, id) || *id <= 0)) {
            http_error(resp, 400, "'%s' must be a positive integer id", key);
            return -1;
        }
    } else {
        r = json_get_int(x->L, -1, key, id, &x->err);
        if (r < 0) {
            http_error(resp, 400, "%s", x->err.msg);
            return -1;
        }
        if (r == 1 && *id <= 0) {
            http_error(resp, 400, "'%s' must be a positive integer id", key);
            return -1;
        }
    }
    if (r == 0) {
        http_error(resp, 400, "'%s' is required", key);
        return -1;
    }
    return 0;
}

static int path_id(struct http_req *req, struct http_resp *resp, int64_t *id)
{
    if (parse_i64(req->params[0], id) || *id <= 0) {
        http_error(resp, 404, "no such id: %s", req->params[0]);
        return -1;
    }
    return 0;
}

static int cursor_param(struct http_req *req, struct http_resp *resp,
                        int64_t *after, int *limit)
{
    const char *c = http_query(req, "cursor");
    const char *l = http_query(req, "limit");
    int64_t v;
    *after = 0;
    *limit = PAGE_DEFAULT;
    if (c && *c && (parse_i64(c, after) || *after < 0)) {
        http_error(resp, 400, "invalid cursor");
        return -1;
    }
    if (l && *l) {
        if (parse_i64(l, &v) || v < 1 || v > PAGE_MAX) {
            http_error(resp, 400, "limit must be an integer from 1 to %d", PAGE_MAX);
            return -1;
        }
        *limit = (int)v;
    }
    return 0;
}

/* ----------------------------------------------------------- credentials */

static void h_credentials_create(struct http_req *req, struct http_resp *resp)
{
    static const char *const allowed[] = {"provider", "refresh_token",
                                          "access_token", "expires_at", NULL};
    struct ctx x = {0};
    const char *provider, *refresh, *access;
    int64_t expires = 0, id;
    if (ctx_open(&x, resp) || body_object(&x, req, resp, allowed))
        goto done;
    if (str_field(&x, resp, "provider", 32, 1, &provider) < 0 ||
        str_field(&x, resp, "refresh_token", CRED_TOKEN_MAX, 1, &refresh) < 0 ||
        str_field(&x, resp, "access_token", CRED_TOKEN_MAX, 0, &access) < 0 ||
        time_field(&x, resp, "expires_at", 0, &expires) < 0)
        goto done;
    if (strcmp(provider, "google") != 0) {
        http_error(resp, 400, "provider must be \"google\"");
        goto done;
    }
    if (!*refresh) {
        http_error(resp, 400, "'refresh_token' must not be empty");
        goto done;
    }
    if (credential_insert(x.db, provider, refresh, access, expires, &id, &x.err)) {
        db_fail(resp, &x);
        goto done;
    }
    log_info("api.credential_created", "id=%lld", (long long)id);
    resp->status = 201;
    buf_printf(&resp->body, "{\"id\":%lld,\"provider\":\"google\"}", (long long)id);
done:
    ctx_close(&x);
}

/* -------------------------------------------------------------- calendars */

static int valid_policy_name(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

static void h_calendars_create(struct http_req *req, struct http_resp *resp)
{
    static const char *const allowed[] = {"credential_id", "external_id",
                                          "policy", "settings", NULL};
    struct ctx x = {0};
    int64_t cred, id;
    const char *ext, *policy;
    struct buf settings;
    int created = 0;
    buf_init(&settings);
    if (ctx_open(&x, resp) || body_object(&x, req, resp, allowed))
        goto done;
    if (id_field(&x, resp, "credential_id", &cred) ||
        str_field(&x, resp, "external_id", CAL_EXTERNAL_ID_MAX, 1, &ext) < 0 ||
        str_field(&x, resp, "policy", CAL_POLICY_NAME_MAX, 0, &policy) < 0)
        goto done;
    if (!*ext) {
        http_error(resp, 400, "'external_id' must not be empty");
        goto done;
    }
    /* it goes into every Google URL of the calendar: "." or ".." would
     * turn an events call into one on the calendar itself (issue 21) */
    if (!id_valid_calendar(ext, strlen(ext))) {
        http_error(resp, 400, "'external_id' must be a Google calendar id: \"primary\" or "
                   "an address such as \"abc@group.calendar.google.com\" (letters, digits "
                   "and . _ - + @ # ~ =, not only dots)");
        goto done;
    }
    if (!policy)
        policy = "default";
    if (!valid_policy_name(policy)) {
        http_error(resp, 400, "'policy' must be a name of letters, digits, '_' or '-'");
        goto done;
    }
    int r = json_get_obj(x.L, -1, "settings", &x.err);
    if (r < 0) {
        http_error(resp, 400, "%s", x.err.msg);
        goto done;
    }
    if (r == 1) {
        if (json_encode_value(x.L, -1, &settings, &x.err)) {
            http_error(resp, 400, "'settings': %s", x.err.msg);
            goto done;
        }
        lua_pop(x.L, 1);
        if (settings.len > CAL_SETTINGS_MAX) {
            http_error(resp, 400, "'settings' larger than %d bytes", CAL_SETTINGS_MAX);
            goto done;
        }
    } else {
        buf_puts(&settings, "{}");
    }
    if (!policy_is_live(policy)) {
        http_error(resp, 422, "unknown policy '%s'", policy);
        goto done;
    }
    char why[300]; /* the policy's settings schema (DESIGN §5) */
    if ((r = policy_settings_validate(policy, settings.data, why, sizeof why)) != 0) {
        http_error(resp, r > 0 ? 422 : 503, "%s", why);
        goto done;
    }
    if (store_begin(x.db, &x.err)) {
        db_fail(resp, &x);
        goto done;
    }
    r = credential_exists(x.db, cred, &x.err);
    if (r == 0) {
        store_rollback(x.db);
        http_error(resp, 422, "unknown credential_id %lld", (long long)cred);
        goto done;
    }
    if (r < 0 || calendar_upsert(x.db, cred, ext, policy, settings.data, &id,
                                 &created, &x.err) ||
        store_commit(x.db, &x.err)) {
        store_rollback(x.db);
        db_fail(resp, &x);
        goto done;
    }
    if (calendar_json(x.db, id, &resp->body, &x.err) != 1) {
        db_fail(resp, &x);
        goto done;
    }
    sched_request_sync(id); /* the first full sync (or a catch-up) */
    resp->status = created ? 201 : 200;
    log_info("api.calendar_upserted", "id=%lld created=%d", (long long)id, created);
done:
    buf_free(&settings);
    ctx_close(&x);
}

static void h_calendars_list(struct http_req *req, struct http_resp *resp)
{
    struct ctx x = {0};
    int64_t after;
    int limit;
    if (ctx_open(&x, resp) || cursor_param(req, resp, &after, &limit))
        goto done;
    if (calendar_list_json(x.db, after, limit, &resp->body, &x.err))
        db_fail(resp, &x);
done:
    ctx_close(&x);
}

static void h_calendars_get(struct http_req *req, struct http_resp *resp)
{
    struct ctx x = {0};
    int64_t id;
    if (ctx_open(&x, resp) || path_id(req, resp, &id))
        goto done;
    int r = calendar_json(x.db, id, &resp->body, &x.err);
    if (r < 0)
        db_fail(resp, &x);
    else if (r == 0)
        http_error(resp, 404, "no calendar %lld", (long long)id);
done:
    ctx_close(&x);
}

static void h_calendars_delete(struct http_req *req, struct http_resp *resp)
{
    struct ctx x = {0};
    int64_t id;
    char state[32];
    if (ctx_open(&x, resp) || path_id(req, resp, &id))
        goto done;
    int r = calendar_state(x.db, id, state, sizeof state, &x.err);
    if (r == 0) {
        http_error(resp, 404, "no calendar %lld", (long long)id);
        goto done;
    }
    if (r < 0 || calendar_set_state(x.db, id, "stopped", "deleted", 0, NULL, &x.err) ||
        calendar_json(x.db, id, &resp->body, &x.err) != 1) {
        db_fail(resp, &x);
        goto done;
    }
    sched_forget(id);
    sched_stop_channels(id);
    log_info("api.calendar_stopped", "id=%lld", (long long)id);
done:
    ctx_close(&x);
}

static void h_calendars_sync(struct http_req *req, struct http_resp *resp)
{
    struct ctx x = {0};
    int64_t id;
    char state[32];
    if (ctx_open(&x, resp) || path_id(req, resp, &id))
        goto done;
    int r = calendar_state(x.db, id, state, sizeof state, &x.err);
    if (r == 0) {
        http_error(resp, 404, "no calendar %lld", (long long)id);
        goto done;
    }
    if (r > 0 && (strcmp(state, "stopped") == 0 || strcmp(state, "revoked") == 0)) {
        http_error(resp, 409, "calendar %lld is %s", (long long)id, state);
        goto done;
    }
    if (r < 0 || calendar_mark_dirty(x.db, id, 0, &x.err)) {
        db_fail(resp, &x);
        goto done;
    }
    sched_request_sync(id);
    resp->status = 202;
    buf_printf(&resp->body, "{\"calendar_id\":%lld,\"sync\":\"scheduled\"}", (long long)id);
done:
    ctx_close(&x);
}

/* --------------------------------------------------------------- bookings */

static int valid_uid(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if ((unsigned char)*s < 0x21 || *s == '/' || *s == 0x7f || *s == '?' || *s == '#')
            return 0;
    return 1;
}

static void audit_api(struct ctx *x, const struct booking *before,
                      const struct booking *after, const char *change,
                      const char *action, const char *reason, int *failed)
{
    struct buf b, a;
    buf_init(&b);
    buf_init(&a);
    if (before)
        booking_snapshot_json(before, &b);
    if (after)
        booking_snapshot_json(after, &a);
    struct audit_entry e = {
        .booking_uid = after ? after->uid : before->uid,
        .source = "api", .change = change, .action = action, .reason = reason,
        .before = before ? b.data : NULL, .after = after ? a.data : NULL,
    };
    if (audit_append(x->db, &e, &x->err) < 0)
        *failed = 1;
    buf_free(&b);
    buf_free(&a);
}

/* Optional "attendees": a list (at most 100) of {"email", "displayName"?,
 * "optional"?}. Rendered into out as the JSON array Google takes; out stays
 * empty when absent. 0, or -1 after answering 400. */
static int attendees_field(struct ctx *x, struct http_resp *resp, struct buf *out)
{
    lua_State *L = x->L;
    lua_getfield(L, -1, "attendees");
    int rc = -1;
    if (lua_isnil(L, -1) || lua_islightuserdata(L, -1)) {
        rc = 0;
        goto done;
    }
    size_t n = lua_istable(L, -1) ? lua_rawlen(L, -1) : 0;
    size_t keys = 0;
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            lua_pop(L, 1);
            keys++;
        }
    }
    if (!lua_istable(L, -1) || keys != n || n > 100) {
        http_error(resp, 400, "'attendees' must be a list of at most 100 "
                   "{\"email\": ...} objects");
        goto done;
    }
    static const char *const allowed[] = {"email", "displayName", "optional", NULL};
    buf_puts(out, "[");
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i);
        const char *email = NULL, *name = NULL;
        size_t el = 0, nl = 0;
        int opt = 0, ro;
        if (!lua_istable(L, -1) || json_only_keys(L, -1, allowed, &x->err) ||
            json_get_str(L, -1, "email", &email, &el, &x->err) != 1 ||
            el == 0 || el > 320 || !strchr(email, '@') || strlen(email) != el ||
            json_get_str(L, -1, "displayName", &name, &nl, &x->err) < 0 || nl > 256 ||
            (ro = json_get_bool(L, -1, "optional", &opt, &x->err)) < 0) {
            lua_pop(L, 1);
            buf_reset(out);
            http_error(resp, 400, "'attendees[%zu]' must be {\"email\": \"a@b\", "
                       "\"displayName\"?: string, \"optional\"?: boolean}", i);
            goto done;
        }
        buf_puts(out, i > 1 ? ",{\"email\":" : "{\"email\":");
        buf_json_str(out, email, el);
        if (name) {
            buf_puts(out, ",\"displayName\":");
            buf_json_str(out, name, nl);
        }
        if (ro == 1)
            buf_puts(out, opt ? ",\"optional\":true" : ",\"optional\":false");
        buf_puts(out, "}");
        lua_pop(L, 1);
    }
    buf_puts(out, "]");
    rc = 0;
done:
    lua_pop(L, 1);
    return rc;
}

static void h_bookings_create(struct http_req *req, struct http_resp *resp)
{
    static const char *const allowed[] = {"uid", "calendar_id", "title", "start",
                                          "end", "event_id", "original_start",
                                          "attendees", "conference", NULL};
    struct ctx x = {0};
    struct booking b;
    memset(&b, 0, sizeof b);
    const char *uid, *title, *event_id, *conference;
    char state[32];
    int failed = 0;
    struct buf attendees;
    buf_init(&attendees);
    if (ctx_open(&x, resp) || body_object(&x, req, resp, allowed))
        goto done;
    if (str_field(&x, resp, "uid", BOOKING_UID_MAX, 1, &uid) < 0 ||
        id_field(&x, resp, "calendar_id", &b.calendar_id) ||
        str_field(&x, resp, "title", BOOKING_TITLE_MAX, 1, &title) < 0 ||
        time_field(&x, resp, "start", 1, &b.start_ms) < 0 ||
        time_field(&x, resp, "end", 1, &b.end_ms) < 0 ||
        str_field(&x, resp, "event_id", BOOKING_EVENT_ID_MAX, 0, &event_id) < 0 ||
        str_field(&x, resp, "conference", 16, 0, &conference) < 0)
        goto done;
    /* "meet": calsync asks Google for a Meet link when it creates the
     * event (conferenceData.createRequest); the only kind there is */
    if (conference && strcmp(conference, "meet") != 0) {
        http_error(resp, 400, "'conference' must be \"meet\"");
        goto done;
    }
    if (conference && event_id) {
        http_error(resp, 400, "'conference' only applies when calsync creates the event");
        goto done;
    }
    b.conference = (char *)conference;
    int r = time_field(&x, resp, "original_start", 0, &b.original_start_ms);
    if (r < 0)
        goto done;
    b.has_original = r;
    if (!valid_uid(uid)) {
        http_error(resp, 400, "'uid' must be printable, without spaces, '/', '?' or '#'");
        goto done;
    }
    if (b.start_ms >= b.end_ms) {
        http_error(resp, 400, "'start' must be before 'end'");
        goto done;
    }
    if (b.has_original && !event_id) {
        http_error(resp, 400, "'original_start' needs 'event_id' (the series id)");
        goto done;
    }
    if (event_id && !*event_id) {
        http_error(resp, 400, "'event_id' must not be empty (leave it out to "
                   "create the event)");
        goto done;
    }
    /* it goes into the URL of every later patch and delete: ".." made a
     * cancel DELETE the calendar itself (issue 21) */
    if (event_id && !id_valid_event(event_id, strlen(event_id))) {
        http_error(resp, 400, "'event_id' must be a Google event id: letters, digits, "
                   "'_' and '-' (such as \"68k0p6ackplecqs9fuvbs1fju0\" or "
                   "\"68k0p6ackplecqs9fuvbs1fju0_20250324T123000Z\")");
        goto done;
    }
    if (attendees_field(&x, resp, &attendees))
        goto done;
    if (attendees.len && event_id) {
        http_error(resp, 400, "'attendees' only applies when calsync creates the event");
        goto done;
    }
    if (!event_id)
        snprintf(b.write_state, sizeof b.write_state, "pending");
    b.uid = (char *)uid;
    b.title = (char *)title;
    b.event_id = (char *)event_id;
    snprintf(b.status, sizeof b.status, "accepted");
    b.updated_ms = time_now_ms();
    if (store_begin(x.db, &x.err)) {
        db_fail(resp, &x);
        goto done;
    }
    r = calendar_state(x.db, b.calendar_id, state, sizeof state, &x.err);
    if (r == 0 || (r > 0 && strcmp(state, "stopped") == 0)) {
        store_rollback(x.db);
        http_error(resp, 422, r == 0 ? "unknown calendar_id %lld"
                                     : "calendar %lld is stopped",
                   (long long)b.calendar_id);
        goto done;
    }
    r = r < 0 ? -1 : booking_insert(x.db, &b, &x.err);
    if (r == 1) {
        store_rollback(x.db);
        http_error(resp, 409, "booking '%s' exists already", uid);
        goto done;
    }
    if (r == 0)
        audit_api(&x, NULL, &b, "create", "create", NULL, &failed);
    if (r == 0 && !failed && !event_id &&
        writer_enqueue(x.db, WRITER_INSERT, uid, b.calendar_id,
                       attendees.len ? attendees.data : NULL, &x.err))
        failed = 1;
    if (r < 0 || failed || store_commit(x.db, &x.err)) {
        store_rollback(x.db);
        db_fail(resp, &x);
        goto done;
    }
    struct booking saved;
    if (booking_get(x.db, uid, &saved, &x.err) != 1) {
        db_fail(resp, &x);
        goto done;
    }
    if (!event_id)
        writer_kick();
    resp->status = 201;
    booking_json(&saved, &resp->body);
    booking_free(&saved);
    log_info("api.booking_created", "uid=%s calendar=%lld", log_q(uid),
             (long long)b.calendar_id);
done:
    buf_free(&attendees);
    ctx_close(&x);
}

static void h_bookings_get(struct http_req *req, struct http_resp *resp)
{
    struct ctx x = {0};
    struct booking b;
    if (ctx_open(&x, resp))
        goto done;
    int r = booking_get(x.db, req->params[0], &b, &x.err);
    if (r < 0)
        db_fail(resp, &x);
    else if (r == 0)
        http_error(resp, 404, "no booking '%s'", req->params[0]);
    else {
        booking_json(&b, &resp->body);
        booking_free(&b);
    }
done:
    ctx_close(&x);
}

static void h_bookings_list(struct http_req *req, struct http_resp *resp)
{
    struct ctx x = {0};
    int64_t after, cal = 0;
    int limit;
    if (ctx_open(&x, resp) || cursor_param(req, resp, &after, &limit))
        goto done;
    const char *c = http_query(req, "calendar_id");
    const char *s = http_query(req, "status");
    if (c && *c && (parse_i64(c, &cal) || cal <= 0)) {
        http_error(resp, 400, "calendar_id must be a positive integer");
        goto done;
    }
    if (s && !*s)
        s = NULL;
    if (s && strcmp(s, "accepted") != 0 && strcmp(s, "cancelled") != 0) {
        http_error(resp, 400, "status must be \"accepted\" or \"cancelled\"");
        goto done;
    }
    if (booking_list_json(x.db, cal, s, after, limit, &resp->body, &x.err))
        db_fail(resp, &x);
done:
    ctx_close(&x);
}

/* Whether an app-side change of b is carried to Google: it follows a
 * whole event (linked or created by calsync, or about to be). Occurrence
 * bookings are not: event_id is then the series, and patching or deleting
 * it would change every occurrence (see docs/sync.md). */
static int writes_to_google(const struct booking *b)
{
    return !b->has_original && (b->event_id || strcmp(b->write_state, "pending") == 0);
}

/* Loads the path's booking for a change, answering 404/409 itself. */
static int load_for_change(struct ctx *x, struct http_req *req,
                           struct http_resp *resp, struct booking *b)
{
    int r = booking_get(x->db, req->params[0], b, &x->err);
    if (r < 0) {
        db_fail(resp, x);
        return -1;
    }
    if (r == 0) {
        http_error(resp, 404, "no booking '%s'", req->params[0]);
        return -1;
    }
    if (strcmp(b->status, "cancelled") == 0) {
        http_error(resp, 409, "booking '%s' is cancelled", req->params[0]);
        booking_free(b);
        return -1;
    }
    return 0;
}

static void h_bookings_patch(struct http_req *req, struct http_resp *resp)
{
    static const char *const allowed[] = {"start", "end", "title", NULL};
    struct ctx x = {0};
    struct booking b, before;
    int have = 0, in_tx = 0, failed = 0;
    int64_t start = 0, end = 0;
    const char *title;
    char *new_title = NULL;
    if (ctx_open(&x, resp) || body_object(&x, req, resp, allowed))
        goto done;
    int rs = time_field(&x, resp, "start", 0, &start);
    int re = rs < 0 ? -1 : time_field(&x, resp, "end", 0, &end);
    int rt = re < 0 ? -1 : str_field(&x, resp, "title", BOOKING_TITLE_MAX, 0, &title);
    if (rs < 0 || re < 0 || rt < 0)
        goto done;
    if (!rs && !re && !rt) {
        http_error(resp, 400, "nothing to change: give start, end or title");
        goto done;
    }
    if (store_begin(x.db, &x.err)) {
        db_fail(resp, &x);
        goto done;
    }
    in_tx = 1;
    if (load_for_change(&x, req, resp, &b))
        goto done;
    have = 1;
    before = b;
    before.title = strdup(b.title);
    if (!before.title) {
        http_error(resp, 503, "out of memory");
        before.uid = NULL;
        goto done;
    }
    if (rs)
        b.start_ms = start;
    if (re)
        b.end_ms = end;
    if (b.start_ms >= b.end_ms) {
        http_error(resp, 400, "'start' must be before 'end'");
        goto done;
    }
    if (rt) {
        new_title = strdup(title);
        if (!new_title) {
            http_error(resp, 503, "out of memory");
            goto done;
        }
        free(b.title);
        b.title = new_title;
    }
    int moved = b.start_ms != before.start_ms || b.end_ms != before.end_ms;
    int retitled = strcmp(b.title, before.title) != 0;
    if (moved || retitled) {
        b.updated_ms = time_now_ms();
        if (booking_save(x.db, &b, &x.err))
            failed = 1;
        else
            audit_api(&x, &before, &b, moved ? "time_change" : "title_change",
                      moved ? "reschedule" : "update", NULL, &failed);
        if (!failed && writes_to_google(&b) &&
            writer_enqueue(x.db, WRITER_PATCH, b.uid, b.calendar_id, NULL, &x.err))
            failed = 1;
        if (failed || store_commit(x.db, &x.err)) {
            db_fail(resp, &x);
            goto done;
        }
        if (writes_to_google(&b))
            writer_kick();
    } else {
        store_rollback(x.db);
    }
    in_tx = 0;
    booking_json(&b, &resp->body);
    log_info("api.booking_patched", "uid=%s moved=%d retitled=%d",
             log_q(b.uid), moved, retitled);
done:
    if (in_tx)
        store_rollback(x.db);
    if (have) {
        free(before.title);
        booking_free(&b);
    }
    ctx_close(&x);
}

static void h_bookings_cancel(struct http_req *req, struct http_resp *resp)
{
    static const char *const allowed[] = {"reason", NULL};
    struct ctx x = {0};
    struct booking b;
    int have = 0, in_tx = 0, failed = 0;
    const char *reason;
    if (ctx_open(&x, resp) || optional_body(&x, req, resp, allowed) ||
        str_field(&x, resp, "reason", BOOKING_REASON_MAX, 0, &reason) < 0)
        goto done;
    if (store_begin(x.db, &x.err)) {
        db_fail(resp, &x);
        goto done;
    }
    in_tx = 1;
    if (load_for_change(&x, req, resp, &b))
        goto done;
    have = 1;
    struct booking before = b;
    char *by = strdup("app"), *why = reason ? strdup(reason) : NULL;
    if (!by || (reason && !why)) {
        free(by);
        free(why);
        http_error(resp, 503, "out of memory");
        goto done;
    }
    snprintf(b.status, sizeof b.status, "cancelled");
    free(b.cancelled_by);
    free(b.cancel_reason);
    b.cancelled_by = by;
    b.cancel_reason = why;
    b.updated_ms = time_now_ms();
    if (booking_save(x.db, &b, &x.err))
        failed = 1;
    else
        audit_api(&x, &before, &b, "cancel", "cancel", reason, &failed);
    if (!failed && writes_to_google(&b) &&
        writer_enqueue(x.db, WRITER_DELETE, b.uid, b.calendar_id, NULL, &x.err))
        failed = 1;
    if (failed || store_commit(x.db, &x.err)) {
        db_fail(resp, &x);
        goto done;
    }
    if (writes_to_google(&b))
        writer_kick();
    in_tx = 0;
    booking_json(&b, &resp->body);
    log_info("api.booking_cancelled", "uid=%s", log_q(b.uid));
done:
    if (in_tx)
        store_rollback(x.db);
    if (have)
        booking_free(&b);
    ctx_close(&x);
}

static void h_bookings_audit(struct http_req *req, struct http_resp *resp)
{
    struct ctx x = {0};
    struct booking b;
    if (ctx_open(&x, resp))
        goto done;
    int r = booking_get(x.db, req->params[0], &b, &x.err);
    if (r == 0) {
        http_error(resp, 404, "no booking '%s'", req->params[0]);
        goto done;
    }
    if (r > 0)
        booking_free(&b);
    if (r < 0 || audit_list_json(x.db, req->params[0], &resp->body, &x.err))
        db_fail(resp, &x);
done:
    ctx_close(&x);
}

/* ------------------------------------------------------- channels, policies */

static void h_channels_list(struct http_req *req, struct http_resp *resp)
{
    (void)req;
    struct ctx x = {0};
    if (ctx_open(&x, resp))
        goto done;
    if (channels_list_json(x.db, &resp->body, &x.err))
        db_fail(resp, &x);
done:
    ctx_close(&x);
}

static void h_policies_list(struct http_req *req, struct http_resp *resp)
{
    (void)req;
    if (policy_list_json(&resp->body))
        http_error(resp, 503, "out of memory");
}

static void h_policies_reload(struct http_req *req, struct http_resp *resp)
{
    (void)req;
    struct buf errors;
    buf_init(&errors);
    int failed = policy_reload(&errors);
    if (failed < 0) {
        http_error(resp, 503, "reload failed: out of resources");
    } else if (failed > 0) {
        resp->status = 422;
        buf_printf(&resp->body, "{\"error\":{\"code\":\"unprocessable\","
                   "\"message\":\"%d policy file(s) failed to load; the previous "
                   "versions stay live\",\"errors\":%s}}",
                   failed, errors.data ? errors.data : "[]");
    } else {
        policy_list_json(&resp->body);
    }
    buf_free(&errors);
}

/* ------------------------------------------------------- health, metrics */

static void h_healthz(struct http_req *req, struct http_resp *resp)
{
    (void)req;
    resp->status = health_render(&resp->body);
}

static void h_metrics(struct http_req *req, struct http_resp *resp)
{
    (void)req;
    resp->content_type = "text/plain; version=0.0.4";
    if (metrics_render(&resp->body))
        http_error(resp, 503, "out of memory");
}

static const struct http_route routes[] = {
    {"POST", "/v1/credentials", h_credentials_create, 1},
    {"POST", "/v1/calendars", h_calendars_create, 1},
    {"GET", "/v1/calendars", h_calendars_list, 1},
    {"GET", "/v1/calendars/{id}", h_calendars_get, 1},
    {"DELETE", "/v1/calendars/{id}", h_calendars_delete, 1},
    {"POST", "/v1/calendars/{id}/sync", h_calendars_sync, 1},
    {"POST", "/v1/bookings", h_bookings_create, 1},
    {"GET", "/v1/bookings", h_bookings_list, 1},
    {"GET", "/v1/bookings/{uid}", h_bookings_get, 1},
    {"PATCH", "/v1/bookings/{uid}", h_bookings_patch, 1},
    {"POST", "/v1/bookings/{uid}/cancel", h_bookings_cancel, 1},
    {"GET", "/v1/bookings/{uid}/audit", h_bookings_audit, 1},
    {"GET", "/v1/channels", h_channels_list, 1},
    {"GET", "/v1/policies", h_policies_list, 1},
    {"POST", "/v1/policies/reload", h_policies_reload, 1},
    {"POST", "/webhooks/google", intake_handle, HTTP_INLINE},
    {"GET", "/healthz", h_healthz, 0},
    {"GET", "/metrics", h_metrics, 0},
    {NULL, NULL, NULL, 0},
};

const struct http_route *api_routes(const struct config *cfg)
{
    api_cfg = cfg;
    return routes;
}
