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
#include "policy/tz.h"
#include "provider/provider.h"
#include "scheduler.h"
#include "status.h"
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

/* An event id of either provider's shape: Google's (util.h
 * id_valid_event) or Graph's base64 (also '=' and '+'). Never a '/', '.',
 * '%' or anything else that could change a path; each provider checks the
 * id against its own shape again before it goes into a URL. */
static int event_id_shape_ok(const char *s)
{
    size_t n = strlen(s);
    if (id_valid_event(s, n))
        return 1;
    if (n == 0 || n > 512)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '=' || c == '+'))
            return 0;
    }
    return 1;
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
    if (strcmp(provider, "google") != 0 && strcmp(provider, "microsoft") != 0) {
        http_error(resp, 400, "provider must be \"google\" or \"microsoft\"");
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
    buf_printf(&resp->body, "{\"id\":%lld,\"provider\":\"%s\"}", (long long)id, provider);
done:
    ctx_close(&x);
}

static void h_credentials_get(struct http_req *req, struct http_resp *resp)
{
    struct ctx x = {0};
    int64_t id;
    if (ctx_open(&x, resp) || path_id(req, resp, &id))
        goto done;
    int r = credential_json(x.db, id, &resp->body, &x.err);
    if (r < 0)
        db_fail(resp, &x);
    else if (r == 0)
        http_error(resp, 404, "no credential %lld", (long long)id);
done:
    ctx_close(&x);
}

#define RESUME_MAX 1024

/* Re-authorisation: new tokens for a credential (DESIGN §4). Its revoked
 * calendars go back to syncing with their sync tokens dropped, so the
 * scheduler watches them again and the next sync of each is full: what
 * changed in Google while the credential was dead reaches the policies.
 * Bookings stay where they are. */
static void h_credentials_put(struct http_req *req, struct http_resp *resp)
{
    static const char *const allowed[] = {"refresh_token", "access_token", "expires_at",
                                          NULL};
    struct ctx x = {0};
    const char *refresh, *access;
    int64_t expires = 0, id;
    int64_t *ids = NULL;
    int n = 0;
    if (ctx_open(&x, resp) || path_id(req, resp, &id) ||
        body_object(&x, req, resp, allowed))
        goto done;
    if (str_field(&x, resp, "refresh_token", CRED_TOKEN_MAX, 1, &refresh) < 0 ||
        str_field(&x, resp, "access_token", CRED_TOKEN_MAX, 0, &access) < 0 ||
        time_field(&x, resp, "expires_at", 0, &expires) < 0)
        goto done;
    if (!*refresh) {
        http_error(resp, 400, "'refresh_token' must not be empty");
        goto done;
    }
    if (!(ids = calloc(RESUME_MAX, sizeof *ids))) {
        http_error(resp, 503, "out of memory");
        goto done;
    }
    if (store_begin(x.db, &x.err)) {
        db_fail(resp, &x);
        goto done;
    }
    int r = credential_exists(x.db, id, &x.err);
    if (r == 0) {
        store_rollback(x.db);
        http_error(resp, 404, "no credential %lld", (long long)id);
        goto done;
    }
    if (r < 0 || credential_replace_tokens(x.db, id, refresh, access, expires, &x.err) ||
        calendar_resume_revoked(x.db, id, ids, RESUME_MAX, &n, &x.err) ||
        store_commit(x.db, &x.err)) {
        store_rollback(x.db);
        db_fail(resp, &x);
        goto done;
    }
    for (int i = 0; i < n; i++)
        sched_request_sync(ids[i]); /* watched again, then the full sync */
    if (credential_json(x.db, id, &resp->body, &x.err) != 1) {
        db_fail(resp, &x);
        goto done;
    }
    log_info("api.credential_reauthorised", "id=%lld resumed=%d", (long long)id, n);
done:
    free(ids);
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

/* Whether the object at the top has `key`: 0 absent, 1 JSON null, 2 a
 * value. */
static int field_presence(struct ctx *x, const char *key)
{
    lua_getfield(x->L, -1, key);
    int r = lua_isnil(x->L, -1) ? 0 : lua_islightuserdata(x->L, -1) ? 1 : 2;
    lua_pop(x->L, 1);
    return r;
}

/* A policy name field: NULL when absent or null, else checked for shape
 * and liveness (400 / 422). 0, or -1 after answering. */
static int policy_field(struct ctx *x, struct http_resp *resp, const char *key,
                        const char **out)
{
    if (str_field(x, resp, key, CAL_POLICY_NAME_MAX, 0, out) < 0)
        return -1;
    if (!*out)
        return 0;
    if (!valid_policy_name(*out)) {
        http_error(resp, 400, "'%s' must be a name of letters, digits, '_' or '-'", key);
        return -1;
    }
    if (!policy_is_live(*out)) {
        http_error(resp, 422, "unknown policy '%s'", *out);
        return -1;
    }
    return 0;
}

/* PATCH /v1/calendars/{id}: policy, shadow policy and settings, validated
 * together against the policy the calendar will have, and written in one
 * statement. Decisions already gathered by a running sync were made under
 * the old policy: their inputs no longer match (apply.c's request key
 * holds policy and settings), so they are not applied and the change is
 * decided again under the new one. */
static void h_calendars_patch(struct http_req *req, struct http_resp *resp)
{
    static const char *const allowed[] = {"policy", "shadow_policy", "settings", NULL};
    struct ctx x = {0};
    int64_t id;
    const char *policy, *shadow;
    char cur_policy[CAL_POLICY_NAME_MAX + 1], cur_shadow[CAL_POLICY_NAME_MAX + 1];
    struct buf settings, cur_settings;
    buf_init(&settings);
    buf_init(&cur_settings);
    if (ctx_open(&x, resp) || path_id(req, resp, &id) ||
        body_object(&x, req, resp, allowed))
        goto done;
    int has_policy = field_presence(&x, "policy");
    int has_shadow = field_presence(&x, "shadow_policy");
    int has_settings = field_presence(&x, "settings");
    if (has_policy == 1 || has_settings == 1) {
        http_error(resp, 400, "'%s' must not be null", has_policy == 1 ? "policy" : "settings");
        goto done;
    }
    if (!has_policy && !has_shadow && !has_settings) {
        http_error(resp, 400, "nothing to change: give policy, shadow_policy or settings");
        goto done;
    }
    if (policy_field(&x, resp, "policy", &policy) ||
        policy_field(&x, resp, "shadow_policy", &shadow))
        goto done;
    if (has_settings) {
        int r = json_get_obj(x.L, -1, "settings", &x.err);
        if (r < 0) {
            http_error(resp, 400, "%s", x.err.msg);
            goto done;
        }
        if (json_encode_value(x.L, -1, &settings, &x.err)) {
            lua_pop(x.L, 1);
            http_error(resp, 400, "'settings': %s", x.err.msg);
            goto done;
        }
        lua_pop(x.L, 1);
        if (settings.len > CAL_SETTINGS_MAX) {
            http_error(resp, 400, "'settings' larger than %d bytes", CAL_SETTINGS_MAX);
            goto done;
        }
    }
    if (store_begin(x.db, &x.err)) {
        db_fail(resp, &x);
        goto done;
    }
    int r = calendar_policy_get(x.db, id, cur_policy, sizeof cur_policy, cur_shadow,
                                sizeof cur_shadow, &cur_settings, &x.err);
    if (r <= 0) {
        store_rollback(x.db);
        if (r == 0)
            http_error(resp, 404, "no calendar %lld", (long long)id);
        else
            db_fail(resp, &x);
        goto done;
    }
    const char *new_policy = policy ? policy : cur_policy;
    const char *new_settings = has_settings ? settings.data : cur_settings.data;
    const char *new_shadow = has_shadow ? shadow : cur_shadow;
    /* the settings the calendar will have, under the policy it will have
     * (a policy change alone re-validates the existing settings); a shadow
     * policy decides with the same settings, so they must suit it too */
    char why[300];
    if ((r = policy_settings_validate(new_policy, new_settings, why, sizeof why)) != 0 ||
        (new_shadow && *new_shadow && (has_shadow == 2 || has_settings) &&
         (r = policy_settings_validate(new_shadow, new_settings, why, sizeof why)) != 0)) {
        store_rollback(x.db);
        http_error(resp, r > 0 ? 422 : 503, "%s", why);
        goto done;
    }
    if (calendar_policy_set(x.db, id, new_policy, new_shadow, new_settings, &x.err) ||
        store_commit(x.db, &x.err)) {
        store_rollback(x.db);
        db_fail(resp, &x);
        goto done;
    }
    if (calendar_json(x.db, id, &resp->body, &x.err) != 1) {
        db_fail(resp, &x);
        goto done;
    }
    log_info("api.calendar_patched", "id=%lld policy=%s shadow=%s", (long long)id,
             log_q(new_policy), log_q(new_shadow && *new_shadow ? new_shadow : "-"));
done:
    buf_free(&settings);
    buf_free(&cur_settings);
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

/* Optional "attendees": a list (at most 100) of {"email", "name"?,
 * "optional"?} ("displayName" is taken for "name", as before). Rendered
 * into out as the booking keeps it, [{"email","name"?,"optional"?}]; out
 * stays empty when absent. 0, or -1 after answering 400. */
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
    static const char *const allowed[] = {"email", "name", "displayName", "optional",
                                          NULL};
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
            (!name && json_get_str(L, -1, "name", &name, &nl, &x->err) < 0) || nl > 256 ||
            (ro = json_get_bool(L, -1, "optional", &opt, &x->err)) < 0) {
            lua_pop(L, 1);
            buf_reset(out);
            http_error(resp, 400, "'attendees[%zu]' must be {\"email\": \"a@b\", "
                       "\"name\"?: string, \"optional\"?: boolean}", i);
            goto done;
        }
        buf_puts(out, i > 1 ? ",{\"email\":" : "{\"email\":");
        buf_json_str(out, email, el);
        if (name) {
            buf_puts(out, ",\"name\":");
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

/* The event fields a booking may carry besides its times and title
 * (DESIGN §4), read from the body at the top into *f: 0, or -1 after
 * answering 400. Absent fields stay NULL (have_* 0); `null` clears
 * (have_* 1, value NULL). Strings point into the Lua state. */
struct event_fields {
    int have_description, have_location, have_time_zone, have_attendees;
    const char *description, *location, *time_zone;
    struct buf attendees; /* API form; empty when absent or null */
};

static int event_fields(struct ctx *x, struct http_resp *resp, struct event_fields *f)
{
    f->have_description = field_presence(x, "description") != 0;
    f->have_location = field_presence(x, "location") != 0;
    f->have_time_zone = field_presence(x, "time_zone") != 0;
    f->have_attendees = field_presence(x, "attendees") != 0;
    if (str_field(x, resp, "description", BOOKING_DESCRIPTION_MAX, 0, &f->description) < 0 ||
        str_field(x, resp, "location", BOOKING_LOCATION_MAX, 0, &f->location) < 0 ||
        str_field(x, resp, "time_zone", TZ_NAME_MAX, 0, &f->time_zone) < 0 ||
        attendees_field(x, resp, &f->attendees))
        return -1;
    if (f->time_zone) {
        struct tz_local lt;
        char why[200];
        if (tz_localtime(f->time_zone, strlen(f->time_zone), 0, &lt, why, sizeof why)) {
            http_error(resp, 400, "'time_zone' must be an IANA time zone such as "
                       "\"Europe/Berlin\": %s", why);
            return -1;
        }
    }
    return 0;
}

/* Sets *dst to a copy of src (NULL clears). 0, or -1 (memory). */
static int replace_str(char **dst, const char *src)
{
    char *v = src ? strdup(src) : NULL;
    if (src && !v)
        return -1;
    free(*dst);
    *dst = v;
    return 0;
}

static int str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* How long a link check may wait for Google: one attempt and a short
 * retry, not the writers' two minutes (the app is waiting). */
#define LINK_CHECK_BUDGET_MS 3000

/* Checks with the calendar's provider that the event a booking links
 * exists (DESIGN §4, issue 16): 1 it does, 0 the provider says it does
 * not or it is deleted (the caller answers 422, why says so), 2 the
 * provider could not tell (unreachable, revoked, rate limited: the link
 * is accepted and the sync judges the event). Runs outside any
 * transaction. Leaves the JSON stack as it found it. */
static int link_check(struct ctx *x, int64_t calendar_id, const char *event_id,
                      char *why, size_t cap)
{
    struct calendar_ref cal;
    const struct provider_ops *ops = NULL;
    struct cs_err err = {{0}};
    int top = lua_gettop(x->L), rc = 2;
    if (calendar_ref_load(x->db, calendar_id, &cal, &err) != 1 ||
        strcmp(cal.state, "revoked") == 0 ||
        provider_for_credential(x->db, cal.credential_id, &ops, &err) != 0)
        goto done;
    struct provider_ctx px = {.db = x->db, .credential_id = cal.credential_id,
                              .budget_ms = LINK_CHECK_BUDGET_MS};
    int g = ops->get(&px, cal.external_id, event_id, &err);
    if (g == PROVIDER_GONE || (g != PROVIDER_OK && (px.last.status == 404 ||
                                                    px.last.status == 410))) {
        snprintf(why, cap, "no event '%.200s' in calendar %lld (%.200s)", event_id,
                 (long long)calendar_id, cal.external_id);
        rc = 0;
    } else if (g == PROVIDER_OK) {
        const char *status = NULL;
        rc = 1;
        if (lua_istable(x->L, -1) &&
            json_get_str(x->L, -1, "status", &status, NULL, NULL) == 1 &&
            strcmp(status, "cancelled") == 0) {
            snprintf(why, cap, "event '%.200s' is deleted in calendar %lld", event_id,
                     (long long)calendar_id);
            rc = 0;
        }
    } else {
        log_info("api.link_unchecked", "calendar=%lld event=%s err=%s",
                 (long long)calendar_id, log_q(event_id), log_q(err.msg));
    }
done:
    lua_settop(x->L, top);
    return rc;
}

static void h_bookings_create(struct http_req *req, struct http_resp *resp)
{
    static const char *const allowed[] = {"uid", "calendar_id", "title", "start",
                                          "end", "event_id", "original_start",
                                          "attendees", "description", "location",
                                          "time_zone", "conference", NULL};
    struct ctx x = {0};
    struct booking b;
    memset(&b, 0, sizeof b);
    const char *uid, *title, *event_id, *conference;
    char state[32];
    int failed = 0;
    struct event_fields f = {0};
    buf_init(&f.attendees);
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
    if (event_id && !event_id_shape_ok(event_id)) {
        http_error(resp, 400, "'event_id' must be a Google event id: letters, digits, "
                   "'_' and '-' (such as \"68k0p6ackplecqs9fuvbs1fju0\" or "
                   "\"68k0p6ackplecqs9fuvbs1fju0_20250324T123000Z\"), or an Outlook "
                   "(Microsoft Graph) id, which may also hold '=' and '+'");
        goto done;
    }
    if (event_fields(&x, resp, &f))
        goto done;
    if (f.attendees.len && event_id) {
        http_error(resp, 400, "'attendees' only applies when calsync creates the event");
        goto done;
    }
    if (event_id) {
        /* the calendar must exist for the check; the transaction below
         * answers for an unknown or stopped one */
        char why[600];
        r = calendar_state(x.db, b.calendar_id, state, sizeof state, &x.err);
        if (r > 0 && strcmp(state, "stopped") != 0 &&
            link_check(&x, b.calendar_id, event_id, why, sizeof why) == 0) {
            http_error(resp, 422, "%s", why);
            goto done;
        }
    }
    if (!event_id)
        snprintf(b.write_state, sizeof b.write_state, "pending");
    b.uid = (char *)uid;
    b.title = (char *)title;
    b.event_id = (char *)event_id;
    b.description = (char *)f.description;
    b.location = (char *)f.location;
    b.time_zone = (char *)f.time_zone;
    b.attendees = f.attendees.len ? f.attendees.data : NULL;
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
        writer_enqueue(x.db, WRITER_INSERT, uid, b.calendar_id, NULL, &x.err))
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
    buf_free(&f.attendees);
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

/* Whether booking b may move to calendar `to` (PATCH calendar_id): a live
 * calendar, a booking whose event calsync writes, no write in flight.
 * *old_event gets the id of the event to delete from the old calendar
 * (allocated; NULL when there is none). 0, or -1 after answering. */
static int move_check(struct ctx *x, struct http_resp *resp, const struct booking *b,
                      int64_t to, char **old_event)
{
    char state[32];
    *old_event = NULL;
    int r = calendar_state(x->db, to, state, sizeof state, &x->err);
    if (r < 0) {
        db_fail(resp, x);
        return -1;
    }
    if (r == 0 || strcmp(state, "stopped") == 0) {
        http_error(resp, 422, r == 0 ? "unknown calendar_id %lld" : "calendar %lld is stopped",
                   (long long)to);
        return -1;
    }
    if (b->has_original) {
        http_error(resp, 422, "booking '%s' follows one occurrence of a series, which "
                   "calsync does not write: it cannot move", b->uid);
        return -1;
    }
    if (strcmp(b->write_state, "pending") == 0) {
        http_error(resp, 409, "a write of booking '%s' is in flight: move it once "
                   "write_state is no longer pending", b->uid);
        return -1;
    }
    if (b->event_id && !(*old_event = strdup(b->event_id))) {
        http_error(resp, 503, "out of memory");
        return -1;
    }
    return 0;
}

static void h_bookings_patch(struct http_req *req, struct http_resp *resp)
{
    static const char *const allowed[] = {"start", "end", "title", "description",
                                          "location", "time_zone", "attendees",
                                          "calendar_id", NULL};
    struct ctx x = {0};
    struct booking b, before;
    int have = 0, in_tx = 0, failed = 0;
    int64_t start = 0, end = 0;
    const char *title;
    char *new_title = NULL;
    struct event_fields f = {0};
    buf_init(&f.attendees);
    memset(&before, 0, sizeof before);
    if (ctx_open(&x, resp) || body_object(&x, req, resp, allowed))
        goto done;
    int rs = time_field(&x, resp, "start", 0, &start);
    int re = rs < 0 ? -1 : time_field(&x, resp, "end", 0, &end);
    int rt = re < 0 ? -1 : str_field(&x, resp, "title", BOOKING_TITLE_MAX, 0, &title);
    if (rs < 0 || re < 0 || rt < 0 || event_fields(&x, resp, &f))
        goto done;
    int fields = f.have_description || f.have_location || f.have_time_zone ||
                 f.have_attendees;
    int64_t new_cal = 0;
    int has_cal = field_presence(&x, "calendar_id") != 0;
    if (has_cal && id_field(&x, resp, "calendar_id", &new_cal))
        goto done;
    if (!rs && !re && !rt && !fields && !has_cal) {
        http_error(resp, 400, "nothing to change: give start, end, title, description, "
                   "location, time_zone or attendees");
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
        memset(&before, 0, sizeof before);
        goto done;
    }
    /* before shares b's other strings; they are replaced in b below, so
     * before keeps only what its snapshot reads (times, title, status) */
    before.description = before.location = before.time_zone = before.attendees = NULL;
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
    const char *att = f.attendees.len ? f.attendees.data : NULL;
    int attendees_changed = f.have_attendees && !str_eq(att, b.attendees);
    int details = (f.have_description && !str_eq(f.description, b.description)) ||
                  (f.have_location && !str_eq(f.location, b.location)) ||
                  (f.have_time_zone && !str_eq(f.time_zone, b.time_zone)) ||
                  attendees_changed;
    if ((f.have_description && replace_str(&b.description, f.description)) ||
        (f.have_location && replace_str(&b.location, f.location)) ||
        (f.have_time_zone && replace_str(&b.time_zone, f.time_zone)) ||
        (f.have_attendees && replace_str(&b.attendees, att))) {
        http_error(resp, 503, "out of memory");
        goto done;
    }
    int64_t old_cal = b.calendar_id;
    char *old_event = NULL;
    int relocated = has_cal && new_cal != old_cal;
    if (relocated && move_check(&x, resp, &b, new_cal, &old_event))
        goto done;
    if (moved || retitled || details || relocated) {
        char why[200];
        b.updated_ms = time_now_ms();
        snprintf(why, sizeof why, "moved from calendar %lld to calendar %lld",
                 (long long)old_cal, (long long)new_cal);
        if (booking_save(x.db, &b, &x.err) ||
            (relocated && booking_move(x.db, b.uid, new_cal, &x.err)))
            failed = 1;
        else if (relocated)
            b.calendar_id = new_cal;
        if (!failed)
            audit_api(&x, &before, &b,
                      relocated ? "calendar_change" : moved ? "time_change"
                      : retitled ? "title_change" : "details",
                      relocated ? "move" : moved ? "reschedule" : "update",
                      relocated ? why : NULL, &failed);
        /* a move: the event is created in the new calendar with its
         * credential, then the old one deleted with the old calendar's;
         * the queue runs a booking's jobs in order and retries them across
         * crashes, and the insert is idempotent on its key, so a crash
         * between the two neither loses the event nor leaves two */
        if (relocated && !failed &&
            (writer_enqueue(x.db, WRITER_INSERT, b.uid, new_cal, NULL, &x.err) ||
             (old_event &&
              writer_enqueue(x.db, WRITER_DELETE, b.uid, old_cal, old_event, &x.err))))
            failed = 1;
        if (relocated) {
            if (failed || store_commit(x.db, &x.err)) {
                free(old_event);
                db_fail(resp, &x);
                goto done;
            }
            free(old_event);
            in_tx = 0;
            writer_kick();
            booking_free(&b);
            if (booking_get(x.db, req->params[0], &b, &x.err) != 1) {
                db_fail(resp, &x); /* b is zeroed: booking_free below is safe */
                goto done;
            }
            booking_json(&b, &resp->body);
            log_info("api.booking_moved", "uid=%s from=%lld to=%lld", log_q(b.uid),
                     (long long)old_cal, (long long)new_cal);
            goto done;
        }
        /* the job carries the attendees only when they changed (cleared:
         * an empty list), so an unrelated patch leaves Google's guests */
        if (!failed && writes_to_google(&b) &&
            writer_enqueue(x.db, WRITER_PATCH, b.uid, b.calendar_id,
                           attendees_changed ? (att ? att : "[]") : NULL, &x.err))
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
    log_info("api.booking_patched", "uid=%s moved=%d retitled=%d details=%d",
             log_q(b.uid), moved, retitled, details);
done:
    if (in_tx)
        store_rollback(x.db);
    if (have) {
        free(before.title);
        booking_free(&b);
    }
    buf_free(&f.attendees);
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

/* POST /v1/bookings/{uid}/resolve (DESIGN §4): the app's answer to a
 * flag. `apply` does what the held-back change asked (Google has it
 * already: nothing is written there); `revert` writes the booking back to
 * Google (a patch, which restores a deleted event under its own id, see
 * writer.c); `dismiss` only clears the flag. Audited with source api, no
 * webhook. */
static void h_bookings_resolve(struct http_req *req, struct http_resp *resp)
{
    static const char *const allowed[] = {"action", NULL};
    struct ctx x = {0};
    struct booking b;
    int have = 0, in_tx = 0, failed = 0, write = 0;
    const char *action;
    char *before_title = NULL;
    if (ctx_open(&x, resp) || body_object(&x, req, resp, allowed) ||
        str_field(&x, resp, "action", 16, 1, &action) < 0)
        goto done;
    int apply = strcmp(action, "apply") == 0, revert = strcmp(action, "revert") == 0;
    if (!apply && !revert && strcmp(action, "dismiss") != 0) {
        http_error(resp, 400, "'action' must be \"apply\", \"revert\" or \"dismiss\"");
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
    if (!b.needs_review) {
        http_error(resp, 409, "booking '%s' does not need review", b.uid);
        goto done;
    }
    const char *kind = b.proposed_kind[0] ? b.proposed_kind : NULL;
    if ((apply || revert) && !kind) {
        http_error(resp, 409, "booking '%s' holds no change to %s (flagged before "
                   "calsync kept one): dismiss it", b.uid, action);
        goto done;
    }
    if (revert && (!strcmp(kind, "response") || !writes_to_google(&b))) {
        http_error(resp, 409, "%s", !strcmp(kind, "response")
                   ? "an attendee's response cannot be reverted: apply or dismiss it"
                   : "the booking follows one occurrence of a series, which calsync "
                     "does not write: dismiss it");
        goto done;
    }
    struct booking before = b;
    if (!(before_title = strdup(b.title))) {
        http_error(resp, 503, "out of memory");
        goto done;
    }
    before.title = before_title;
    const char *done_action = revert ? "revert" : apply ? "apply" : "dismiss";
    if (apply && !strcmp(kind, "delete")) {
        char *by = strdup("google"), *why = strdup("a flagged deletion, applied by the app");
        if (!by || !why) {
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
        done_action = "cancel";
    } else if (apply && !strcmp(kind, "time_change") && b.proposed_start_ms >= 0 &&
               b.proposed_end_ms > b.proposed_start_ms) {
        b.start_ms = b.proposed_start_ms;
        b.end_ms = b.proposed_end_ms;
        done_action = "reschedule";
    } else if (apply && !strcmp(kind, "title_change") && b.proposed_title) {
        char *t = strdup(b.proposed_title);
        if (!t) {
            http_error(resp, 503, "out of memory");
            goto done;
        }
        free(b.title);
        b.title = t;
        done_action = "update";
    }
    /* apply of a response (or of a change without its new values) only
     * clears the flag, as dismiss does; its audit action stays "apply" */
    b.needs_review = 0;
    b.updated_ms = time_now_ms();
    write = revert;
    if (booking_save(x.db, &b, &x.err))
        failed = 1;
    else
        audit_api(&x, &before, &b, kind ? kind : "flag", done_action, NULL, &failed);
    if (!failed && write &&
        writer_enqueue(x.db, WRITER_PATCH, b.uid, b.calendar_id, NULL, &x.err))
        failed = 1;
    if (failed || store_commit(x.db, &x.err)) {
        db_fail(resp, &x);
        goto done;
    }
    in_tx = 0;
    if (write)
        writer_kick();
    if (booking_get(x.db, b.uid, &before, &x.err) == 1) { /* write_state as saved */
        booking_json(&before, &resp->body);
        booking_free(&before);
    } else {
        booking_json(&b, &resp->body);
    }
    log_info("api.booking_resolved", "uid=%s action=%s", log_q(b.uid), done_action);
done:
    if (in_tx)
        store_rollback(x.db);
    free(before_title);
    if (have)
        booking_free(&b);
    ctx_close(&x);
}

/* POST /v1/bookings/{uid}/retry: a booking whose write failed for good
 * (write_state "failed") is written again, as it stands now: created when
 * it has no event yet, deleted when it is cancelled, else patched with all
 * its fields (attendees included). The write error is cleared; the answer
 * is the booking with write_state "pending". 409 when no write failed. */
static void h_bookings_retry(struct http_req *req, struct http_resp *resp)
{
    struct ctx x = {0};
    struct booking b;
    int have = 0, in_tx = 0;
    if (ctx_open(&x, resp) || optional_body(&x, req, resp, (const char *const[]){NULL}))
        goto done;
    if (store_begin(x.db, &x.err)) {
        db_fail(resp, &x);
        goto done;
    }
    in_tx = 1;
    int r = booking_get(x.db, req->params[0], &b, &x.err);
    if (r <= 0) {
        if (r == 0)
            http_error(resp, 404, "no booking '%s'", req->params[0]);
        else
            db_fail(resp, &x);
        goto done;
    }
    have = 1;
    if (strcmp(b.write_state, "failed") != 0) {
        http_error(resp, 409, "booking '%s' has no failed write (write_state %s)", b.uid,
                   b.write_state);
        goto done;
    }
    int cancelled = strcmp(b.status, "cancelled") == 0;
    enum writer_kind kind = cancelled ? WRITER_DELETE
                            : b.event_id ? WRITER_PATCH : WRITER_INSERT;
    /* a delete with no event (the insert never succeeded) completes at
     * once in the writer: the failure is cleared, nothing is written */
    if (writer_enqueue(x.db, kind, b.uid, b.calendar_id,
                       kind == WRITER_PATCH && b.attendees ? b.attendees : NULL, &x.err)) {
        db_fail(resp, &x);
        goto done;
    }
    if (store_commit(x.db, &x.err)) {
        db_fail(resp, &x);
        goto done;
    }
    in_tx = 0;
    writer_kick();
    booking_free(&b);
    have = 0;
    if (booking_get(x.db, req->params[0], &b, &x.err) != 1) {
        db_fail(resp, &x);
        goto done;
    }
    have = 1;
    booking_json(&b, &resp->body);
    log_info("api.booking_write_retried", "uid=%s", log_q(b.uid));
done:
    if (in_tx)
        store_rollback(x.db);
    if (have)
        booking_free(&b);
    ctx_close(&x);
}

/* GET /v1/decisions: the policy decisions, newest first. */
static void h_decisions_list(struct http_req *req, struct http_resp *resp)
{
    struct ctx x = {0};
    int64_t before_id, cal = 0, since = 0;
    int limit;
    if (ctx_open(&x, resp) || cursor_param(req, resp, &before_id, &limit))
        goto done;
    const char *c = http_query(req, "calendar_id");
    const char *uid = http_query(req, "booking");
    const char *action = http_query(req, "action");
    const char *s = http_query(req, "since");
    if (c && *c && (parse_i64(c, &cal) || cal <= 0)) {
        http_error(resp, 400, "calendar_id must be a positive integer");
        goto done;
    }
    if (uid && !*uid)
        uid = NULL;
    if (uid && strlen(uid) > BOOKING_UID_MAX) {
        http_error(resp, 400, "booking must be at most %d bytes", BOOKING_UID_MAX);
        goto done;
    }
    if (action && !*action)
        action = NULL;
    static const char *const actions[] = {"cancel", "reschedule", "update", "ignore",
                                          "flag", NULL};
    int ok = !action;
    for (int i = 0; action && actions[i]; i++)
        ok |= strcmp(action, actions[i]) == 0;
    if (!ok) {
        http_error(resp, 400, "action must be one of cancel, reschedule, update, "
                   "ignore, flag");
        goto done;
    }
    if (s && *s && time_parse_rfc3339(s, strlen(s), &since)) {
        http_error(resp, 400, "since must be an RFC 3339 date-time such as "
                   "2026-11-24T09:00:00Z");
        goto done;
    }
    if (audit_decisions_json(x.db, cal, uid, action, since, before_id, limit,
                             &resp->body, &x.err))
        db_fail(resp, &x);
done:
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
    {"GET", "/v1/credentials/{id}", h_credentials_get, 1},
    {"PUT", "/v1/credentials/{id}", h_credentials_put, 1},
    {"POST", "/v1/calendars", h_calendars_create, 1},
    {"GET", "/v1/calendars", h_calendars_list, 1},
    {"GET", "/v1/calendars/{id}", h_calendars_get, 1},
    {"PATCH", "/v1/calendars/{id}", h_calendars_patch, 1},
    {"DELETE", "/v1/calendars/{id}", h_calendars_delete, 1},
    {"POST", "/v1/calendars/{id}/sync", h_calendars_sync, 1},
    {"POST", "/v1/bookings", h_bookings_create, 1},
    {"GET", "/v1/bookings", h_bookings_list, 1},
    {"GET", "/v1/bookings/{uid}", h_bookings_get, 1},
    {"PATCH", "/v1/bookings/{uid}", h_bookings_patch, 1},
    {"POST", "/v1/bookings/{uid}/cancel", h_bookings_cancel, 1},
    {"POST", "/v1/bookings/{uid}/resolve", h_bookings_resolve, 1},
    {"POST", "/v1/bookings/{uid}/retry", h_bookings_retry, 1},
    {"GET", "/v1/bookings/{uid}/audit", h_bookings_audit, 1},
    {"GET", "/v1/decisions", h_decisions_list, 1},
    {"GET", "/v1/channels", h_channels_list, 1},
    {"GET", "/v1/policies", h_policies_list, 1},
    {"POST", "/v1/policies/reload", h_policies_reload, 1},
    {"POST", "/webhooks/google", intake_handle, HTTP_INLINE},
    /* Graph posts JSON batches: a small, bounded body without a token */
    {"POST", "/webhooks/microsoft", intake_handle, HTTP_INLINE | HTTP_PUSH_BODY},
    {"GET", "/healthz", h_healthz, 0},
    {"GET", "/metrics", h_metrics, 0},
    {"GET", "/", status_page, HTTP_PAGE},
    {"POST", "/login", status_login, HTTP_PAGE},
    {NULL, NULL, NULL, 0},
};

const struct http_route *api_routes(const struct config *cfg)
{
    api_cfg = cfg;
    if (status_init(cfg))
        log_error("status.init_failed", "msg=%s",
                  log_q("no status page cookie: only the bearer token opens GET /"));
    return routes;
}
