/* ops.c -- the Microsoft Graph provider's provider_ops: the engine's calls
 * mapped onto Graph (calendarView/delta, instances, events, subscriptions),
 * Graph's answers onto provider classes (parse.c), and Graph's push
 * requests (validation handshake, JSON batches of change and lifecycle
 * notifications) onto provider_push messages.
 *
 * Idempotent insert: Graph assigns event ids, so calsync's key goes out as
 * the event's transactionId (Graph answers a repeat with the event the
 * first create made) and the booking uid as an extended property; a 409
 * for a duplicate transactionId looks the event up by that property.
 *
 * The subscription's clientState is "<calsync channel id>.<token>": Graph
 * names a subscription by its own id, which calsync learns only from the
 * create answer, while a notification can race that answer. The channel
 * id lets the intake find the row (and check the token, in constant time)
 * exactly as for a Google channel; Graph's subscription id is the
 * channel's resource id.
 */
#include "provider/microsoft/msgraph.h"

#include "fault.h"
#include "http.h"
#include "json.h"
#include "log.h"

#include <lua.h>
#include <stdio.h>
#include <string.h>

#define PREFER_UTC "Prefer: outlook.timezone=\"UTC\""
#define PREFER_DELTA "Prefer: outlook.timezone=\"UTC\", odata.maxpagesize=200"
#define SUB_CHANGES "created,updated,deleted"
#define SUB_MAX_S (10080LL * 60)  /* Graph's cap for event subscriptions */

/* Runs the Graph call's outcome into the context: last answer, class. */
static int done_call(struct provider_ctx *px, enum provider_op op, int g,
                     struct phttp_resp *resp)
{
    return phttp_finish(px, op, g, resp, msgraph_classify);
}

static int page_out(struct provider_ctx *px, enum provider_op op, int g,
                    struct phttp_resp *resp, int listing, struct provider_page *out,
                    struct cs_err *err)
{
    int rc = done_call(px, op, g, resp);
    return rc != PROVIDER_OK ? rc : pjson_page_top(listing, &msgraph_page_keys, out, err);
}

/* A next or delta link is followed only under api_base: it carries the
 * bearer token, and it came from the network (or from the database). */
static int link_url(struct phttp_call *c, const char *link)
{
    const char *base = msgraph_config()->microsoft.api_base;
    size_t bl = strlen(base), n = strlen(link);
    if (n <= bl || strncmp(link, base, bl) != 0 || (link[bl] != '/' && link[bl] != '?') ||
        n > PROVIDER_CURSOR_MAX) {
        c->invalid = "next or delta link";
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)link[i] <= 0x20 || link[i] == 0x7f || link[i] == '#') {
            c->invalid = "next or delta link";
            return 0;
        }
    return buf_puts(&c->url, link);
}

static int window(struct buf *u)
{
    char a[TIME_RFC3339_MAX], b[TIME_RFC3339_MAX];
    int64_t now = time_now_ms();
    time_format_rfc3339(now - MSGRAPH_WINDOW_PAST_S * 1000, a);
    time_format_rfc3339(now + MSGRAPH_WINDOW_AHEAD_S * 1000, b);
    return buf_puts(u, "startDateTime=") || msgraph_url_escape(u, a) ||
           buf_puts(u, "&endDateTime=") || msgraph_url_escape(u, b);
}

static int m_list_changes(struct provider_ctx *px, const char *calendar,
                          const char *cursor, const char *page,
                          struct provider_page *out, struct cs_err *err)
{
    struct phttp_auth a = {px->db, px->credential_id, px->budget_ms};
    struct phttp_resp resp;
    struct phttp_call c = {.what = "calendarView.delta", .method = "GET",
                           .headers = {PREFER_DELTA}, .push = 1};
    int bad;
    phttp_resp_init(&resp);
    buf_init(&c.url);
    if (page || cursor)
        bad = link_url(&c, page ? page : cursor);
    else
        bad = msgraph_url_calendar(&c, calendar) ||
              buf_puts(&c.url, "/calendarView/delta?") || window(&c.url);
    int g = phttp_call_run(&msgraph_http, &a, &c, bad, &resp, err);
    return page_out(px, cursor ? PROVIDER_OP_LIST : PROVIDER_OP_LIST_FULL, g, &resp, 1,
                    out, err);
}

static int m_occurrences(struct provider_ctx *px, const char *calendar,
                         const char *series, const char *page,
                         struct provider_page *out, struct cs_err *err)
{
    (void)calendar;
    struct phttp_auth a = {px->db, px->credential_id, px->budget_ms};
    struct phttp_resp resp;
    struct phttp_call c = {.what = "events.instances", .method = "GET",
                           .headers = {PREFER_UTC}, .push = 1};
    int bad;
    phttp_resp_init(&resp);
    buf_init(&c.url);
    if (page)
        bad = link_url(&c, page);
    else
        bad = msgraph_url_event(&c, series) || buf_puts(&c.url, "/instances?") ||
              window(&c.url);
    int g = phttp_call_run(&msgraph_http, &a, &c, bad, &resp, err);
    return page_out(px, PROVIDER_OP_OCCURRENCES, g, &resp, 0, out, err);
}

/* "?$expand=singleValueExtendedProperties($filter=id eq '<tag prop>')":
 * the tag is returned only when asked for. */
static int expand_tag(struct buf *u)
{
    return buf_puts(u, "?%24expand=") ||
           msgraph_url_escape(u, "singleValueExtendedProperties($filter=id eq '"
                                 MSGRAPH_TAG_PROP "')");
}

static int m_get(struct provider_ctx *px, const char *calendar, const char *id,
                 struct cs_err *err)
{
    (void)calendar;
    struct phttp_auth a = {px->db, px->credential_id, px->budget_ms};
    struct phttp_resp resp;
    struct phttp_call c = {.what = "events.get", .method = "GET", .headers = {PREFER_UTC},
                           .push = 1};
    phttp_resp_init(&resp);
    buf_init(&c.url);
    int bad = msgraph_url_event(&c, id) || (!c.invalid && expand_tag(&c.url));
    int g = phttp_call_run(&msgraph_http, &a, &c, bad, &resp, err);
    return done_call(px, PROVIDER_OP_READ, g, &resp);
}

/* The calendar's event carrying tag uid, pushed; MSGRAPH_EHTTP 404 when
 * none does. For a create whose answer was lost. */
static int find_by_tag(struct phttp_auth *a, const char *calendar, const char *uid,
                       struct phttp_resp *resp, struct cs_err *err)
{
    struct phttp_call c = {.what = "events.list", .method = "GET", .headers = {PREFER_UTC},
                           .push = 1};
    struct buf f;
    buf_init(&f);
    buf_init(&c.url);
    int bad = buf_puts(&f, "singleValueExtendedProperties/Any(ep: ep/id eq '" MSGRAPH_TAG_PROP
                           "' and ep/value eq '");
    for (const char *p = uid; !bad && *p; p++) /* OData quotes ' as '' */
        bad = *p == '\'' ? buf_puts(&f, "''") : buf_append(&f, p, 1);
    bad = bad || buf_puts(&f, "')") || msgraph_url_calendar(&c, calendar) ||
          buf_puts(&c.url, "/events?%24filter=") ||
          msgraph_url_escape(&c.url, f.data ? f.data : "") ||
          buf_puts(&c.url, "&%24expand=") ||
          msgraph_url_escape(&c.url, "singleValueExtendedProperties($filter=id eq '"
                                     MSGRAPH_TAG_PROP "')");
    buf_free(&f);
    int g = phttp_call_run(&msgraph_http, a, &c, bad, resp, err);
    if (g != MSGRAPH_OK)
        return g;
    lua_State *L = json_state();
    int top = lua_gettop(L);
    lua_getfield(L, top, "value");
    if (lua_istable(L, -1)) {
        lua_rawgeti(L, -1, 1);
        if (lua_istable(L, -1)) {
            lua_replace(L, top); /* the event replaces the listing */
            lua_settop(L, top);
            return MSGRAPH_OK;
        }
    }
    lua_settop(L, top - 1);
    resp->status = 404;
    snprintf(resp->reason, sizeof resp->reason, "ErrorItemNotFound");
    cs_err_set(err, "events.list: no event carries booking %.64s", uid);
    return MSGRAPH_EHTTP;
}

static int m_insert(struct provider_ctx *px, const char *calendar,
                    const struct provider_write *w, struct cs_err *err)
{
    struct phttp_auth a = {px->db, px->credential_id, px->budget_ms};
    struct phttp_resp resp;
    struct buf body;
    struct phttp_call c = {.what = "events.create", .method = "POST",
                           .headers = {PREFER_UTC}, .push = 1};
    phttp_resp_init(&resp);
    buf_init(&body);
    buf_init(&c.url);
    if (msgraph_event_body(w->key, w->booking_tag, w->title, w->start_ms, w->end_ms,
                           w->attendees_json, &body)) {
        buf_free(&body);
        cs_err_set(err, "out of memory");
        return PROVIDER_TRANSIENT;
    }
    c.body = body.data;
    int bad = msgraph_url_calendar(&c, calendar) || buf_puts(&c.url, "/events");
    int g = phttp_call_run(&msgraph_http, &a, &c, bad, &resp, err);
    fault_point(g == MSGRAPH_OK ? "writer_after_insert" : NULL);
    if (g == MSGRAPH_EHTTP && resp.status == 409 && w->booking_tag) {
        /* the transactionId was used: an earlier attempt created it */
        log_info("writer.adopted", "booking=%s provider=microsoft", log_q(w->booking_tag));
        g = find_by_tag(&a, calendar, w->booking_tag, &resp, err);
        fault_point(g == MSGRAPH_OK ? "writer_after_adopt" : NULL);
    }
    buf_free(&body);
    return done_call(px, PROVIDER_OP_WRITE, g, &resp);
}

static int m_patch(struct provider_ctx *px, const char *calendar, const char *id,
                   const struct provider_write *w, const char *if_match,
                   struct cs_err *err)
{
    (void)calendar;
    struct phttp_auth a = {px->db, px->credential_id, px->budget_ms};
    struct phttp_resp resp;
    struct buf body;
    struct phttp_call c = {.what = "events.update", .method = "PATCH",
                           .headers = {PREFER_UTC}, .if_match = if_match, .push = 1};
    phttp_resp_init(&resp);
    buf_init(&body);
    buf_init(&c.url);
    if (msgraph_event_body(NULL, NULL, w->title, w->start_ms, w->end_ms, NULL, &body)) {
        buf_free(&body);
        cs_err_set(err, "out of memory");
        return PROVIDER_TRANSIENT;
    }
    c.body = body.data;
    int bad = msgraph_url_event(&c, id);
    int g = phttp_call_run(&msgraph_http, &a, &c, bad, &resp, err);
    buf_free(&body);
    return done_call(px, PROVIDER_OP_WRITE, g, &resp);
}

static int m_remove(struct provider_ctx *px, const char *calendar, const char *id,
                    const char *if_match, struct cs_err *err)
{
    (void)calendar;
    struct phttp_auth a = {px->db, px->credential_id, px->budget_ms};
    struct phttp_resp resp;
    struct phttp_call c = {.what = "events.delete", .method = "DELETE",
                           .if_match = if_match};
    phttp_resp_init(&resp);
    buf_init(&c.url);
    int bad = msgraph_url_event(&c, id);
    int g = phttp_call_run(&msgraph_http, &a, &c, bad, &resp, err);
    return done_call(px, PROVIDER_OP_WRITE, g, &resp);
}

/* Graph's expirationDateTime: "2026-...Z", with 7 fraction digits, or
 * "+00:00". */
static int parse_expiry(const char *s, int64_t *ms)
{
    size_t n = strlen(s);
    return msgraph_parse_datetime(s, n, ms) == 0 || time_parse_rfc3339(s, n, ms) == 0 ? 0 : -1;
}

static int64_t ttl_s(int64_t asked)
{
    int64_t t = asked > 0 ? asked : msgraph_config()->microsoft.subscription_ttl;
    return t > SUB_MAX_S - 60 ? SUB_MAX_S - 60 : t;
}

/* Reads id and expirationDateTime of the subscription object on the stack
 * top into out (pops it). */
static int sub_answer(struct provider_sub *out, int want_id, struct cs_err *err)
{
    lua_State *L = json_state();
    int top = lua_gettop(L), rc = PROVIDER_OK;
    const char *id = NULL, *exp = NULL;
    size_t n = 0;
    int64_t e = 0;
    if ((want_id && (json_get_str(L, top, "id", &id, &n, err) != 1 ||
                     !msgraph_id_valid(id, n) || n >= sizeof out->resource_id)) ||
        json_get_str(L, top, "expirationDateTime", &exp, NULL, err) != 1 ||
        parse_expiry(exp, &e)) {
        cs_err_set(err, "subscriptions: answer lacks an id or a valid expirationDateTime");
        rc = PROVIDER_MALFORMED;
    } else {
        if (want_id)
            memcpy(out->resource_id, id, n + 1);
        out->expiration_ms = e;
    }
    lua_settop(L, top - 1);
    return rc;
}

static int m_sub_open(struct provider_ctx *px, const char *calendar,
                      const struct provider_sub_req *req, struct provider_sub *out,
                      struct cs_err *err)
{
    struct phttp_auth a = {px->db, px->credential_id, px->budget_ms};
    struct phttp_resp resp;
    struct phttp_call c = {.what = "subscriptions.create", .method = "POST", .push = 1};
    struct buf body, state;
    char exp[TIME_RFC3339_MAX];
    phttp_resp_init(&resp);
    buf_init(&body);
    buf_init(&state);
    buf_init(&c.url);
    memset(out, 0, sizeof *out);
    time_format_rfc3339(time_now_ms() + ttl_s(req->ttl_s) * 1000, exp);
    int bad = 0;
    if (strcmp(calendar, "primary") != 0 && !msgraph_id_valid(calendar, strlen(calendar)))
        c.invalid = "calendar id";
    /* clientState: "<channel id>.<token>" (at most 128 characters) */
    bad |= buf_printf(&state, "%s.%s", req->id, req->token);
    if (state.len > 128)
        c.invalid = "channel id and token (clientState over 128 characters)";
    bad |= buf_puts(&body, "{\"changeType\":\"" SUB_CHANGES "\",\"notificationUrl\":") ||
           buf_json_strz(&body, req->address) ||
           buf_puts(&body, ",\"lifecycleNotificationUrl\":") ||
           buf_json_strz(&body, req->address) || buf_puts(&body, ",\"resource\":\"");
    if (strcmp(calendar, "primary") == 0)
        bad |= buf_puts(&body, "me/calendar/events");
    else if (!c.invalid)
        bad |= buf_puts(&body, "me/calendars/") || buf_puts(&body, calendar) ||
               buf_puts(&body, "/events");
    bad |= buf_printf(&body, "\",\"expirationDateTime\":\"%s\",\"clientState\":", exp) ||
           buf_json_strz(&body, state.data ? state.data : "") || buf_puts(&body, "}");
    bad |= buf_puts(&c.url, msgraph_config()->microsoft.api_base) ||
           buf_puts(&c.url, "/subscriptions");
    c.body = body.data;
    int g = phttp_call_run(&msgraph_http, &a, &c, bad, &resp, err);
    buf_free(&body);
    buf_free(&state);
    int rc = done_call(px, PROVIDER_OP_SUBSCRIBE, g, &resp);
    return rc == PROVIDER_OK ? sub_answer(out, 1, err) : rc;
}

static int m_sub_renew(struct provider_ctx *px, const char *sub_id,
                       struct provider_sub *sub, struct cs_err *err)
{
    (void)sub_id;
    struct phttp_auth a = {px->db, px->credential_id, px->budget_ms};
    struct phttp_resp resp;
    struct phttp_call c = {.what = "subscriptions.update", .method = "PATCH", .push = 1};
    struct buf body;
    char exp[TIME_RFC3339_MAX];
    phttp_resp_init(&resp);
    buf_init(&body);
    buf_init(&c.url);
    time_format_rfc3339(time_now_ms() + ttl_s(0) * 1000, exp);
    int bad = buf_printf(&body, "{\"expirationDateTime\":\"%s\"}", exp);
    if (!msgraph_id_valid(sub->resource_id, strlen(sub->resource_id)))
        c.invalid = "subscription id";
    else
        bad |= buf_puts(&c.url, msgraph_config()->microsoft.api_base) ||
               buf_puts(&c.url, "/subscriptions/") ||
               msgraph_url_escape(&c.url, sub->resource_id);
    c.body = body.data;
    int g = phttp_call_run(&msgraph_http, &a, &c, bad, &resp, err);
    buf_free(&body);
    int rc = done_call(px, PROVIDER_OP_SUBSCRIBE, g, &resp);
    return rc == PROVIDER_OK ? sub_answer(sub, 0, err) : rc;
}

static int m_sub_stop(struct provider_ctx *px, const char *sub_id,
                      const struct provider_sub *sub, struct cs_err *err)
{
    (void)sub_id;
    struct phttp_auth a = {px->db, px->credential_id, px->budget_ms};
    struct phttp_resp resp;
    struct phttp_call c = {.what = "subscriptions.delete", .method = "DELETE"};
    phttp_resp_init(&resp);
    buf_init(&c.url);
    int bad = 0;
    if (!msgraph_id_valid(sub->resource_id, strlen(sub->resource_id)))
        c.invalid = "subscription id";
    else
        bad = buf_puts(&c.url, msgraph_config()->microsoft.api_base) ||
              buf_puts(&c.url, "/subscriptions/") ||
              msgraph_url_escape(&c.url, sub->resource_id);
    int g = phttp_call_run(&msgraph_http, &a, &c, bad, &resp, err);
    return done_call(px, PROVIDER_OP_SUBSCRIBE, g, &resp);
}

/* ---------------------------------------------------------------- pushes
 * The messages' strings are copied into a per-thread arena (push_parse
 * runs on the HTTP thread that holds the request): valid until the next
 * push_parse on this thread, which is after the request is answered. */
#define ARENA_MAX (PROVIDER_PUSH_MAX * 640)
static _Thread_local char arena[ARENA_MAX];

struct arena_pos {
    size_t used;
};

/* Copies field key of the object at idx (a string of at most max bytes,
 * no NUL) into the arena: the copy, or NULL when absent or unusable. */
static const char *take(lua_State *L, int idx, const char *key, size_t max,
                        struct arena_pos *ap)
{
    lua_getfield(L, idx, key);
    const char *r = NULL;
    size_t n;
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
    if (s && n <= max && strlen(s) == n && ap->used + n + 1 <= ARENA_MAX) {
        memcpy(arena + ap->used, s, n + 1);
        r = arena + ap->used;
        ap->used += n + 1;
    }
    lua_pop(L, 1);
    return r;
}

static int m_push_parse(struct http_req *req, struct provider_push_batch *b,
                        struct cs_err *err)
{
    const char *vt = http_query(req, "validationToken");
    b->batch = 1; /* answered 202 whatever each message's outcome */
    if (vt) {
        /* the handshake: answered with the decoded token, nothing done */
        if (strlen(vt) > 1024)
            return cs_err_set(err, "validationToken longer than 1024 bytes");
        b->handshake = vt;
        return 0;
    }
    if (req->body_len == 0)
        return cs_err_set(err, "a Graph notification needs a JSON body");
    lua_State *L = json_state();
    if (!L)
        return cs_err_set(err, "out of memory");
    int top = lua_gettop(L), rc = -1;
    struct arena_pos ap = {0};
    if (json_decode_object(L, req->body, req->body_len, err))
        goto done;
    lua_getfield(L, top + 1, "value");
    int v = lua_gettop(L);
    if (!lua_istable(L, v)) {
        cs_err_set(err, "a Graph notification is {\"value\": [...]}");
        goto done;
    }
    lua_Unsigned n = lua_rawlen(L, v);
    if (n == 0 || n > PROVIDER_PUSH_MAX) {
        cs_err_set(err, "a Graph notification batch of %llu items (1..%d taken)",
                   (unsigned long long)n, PROVIDER_PUSH_MAX);
        goto done;
    }
    b->n = 0;
    for (lua_Unsigned i = 1; i <= n; i++) {
        lua_rawgeti(L, v, (lua_Integer)i);
        int it = lua_gettop(L);
        struct provider_push *m = &b->msg[b->n++];
        memset(m, 0, sizeof *m);
        if (lua_istable(L, it)) {
            const char *cs = take(L, it, "clientState", 128, &ap);
            /* Graph's subscription id is not handed on as the resource:
             * it is the subscription itself, not a watched resource other
             * subscriptions share, so the intake's "stop the foreign
             * channel on that resource" would delete calsync's own live
             * subscription on an unauthenticated request. An unknown
             * subscription expires by itself within days. */
            const char *gsub = take(L, it, "subscriptionId", 256, &ap);
            m->resource = NULL;
            m->state = take(L, it, "lifecycleEvent", 64, &ap);
            if (m->state)
                /* reauthorizationRequired: renew; subscriptionRemoved:
                 * renewing finds it gone and opens a new one; both, and
                 * missed, also sync (whatever was sent meanwhile) */
                m->renew = strcmp(m->state, "reauthorizationRequired") == 0 ||
                           strcmp(m->state, "subscriptionRemoved") == 0;
            else
                m->state = take(L, it, "changeType", 64, &ap);
            /* "<channel id>.<token>": split in the arena copy */
            char *dot = cs ? strchr(cs, '.') : NULL;
            if (dot) {
                *dot = '\0';
                m->subscription = cs;
                m->token = dot + 1;
            } else {
                m->subscription = gsub; /* no channel named: unknown */
                m->token = NULL;
            }
        }
        lua_settop(L, it - 1);
    }
    rc = 0;
done:
    lua_settop(L, top);
    return rc;
}

/* Microsoft Graph's own /metrics families (docs/operations.md lists them). */
static const struct metrics_family msgraph_metrics[] = {
    {"calsync_microsoft_requests_total", METRICS_COUNTER,
     "Microsoft Graph calls by method and HTTP status (0: no answer).", NULL},
    {"calsync_microsoft_request_duration_seconds", METRICS_HISTOGRAM,
     "Time of one Microsoft Graph HTTP exchange (each attempt, OAuth included).",
     METRICS_INIT("calsync_microsoft_request_duration_seconds")},
    {"calsync_microsoft_retries_total", METRICS_COUNTER, "Graph calls retried, by method.", NULL},
    {"calsync_microsoft_token_refreshes_total", METRICS_COUNTER,
     "Microsoft identity platform access token refreshes.",
     METRICS_INIT("calsync_microsoft_token_refreshes_total")},
    {"calsync_microsoft_invalid_ids_total", METRICS_COUNTER,
     "Graph calls refused before any request for an id or link Graph cannot have issued.",
     METRICS_INIT("calsync_microsoft_invalid_ids_total")},
};

const struct provider_ops microsoft_provider = {
    .name = "microsoft",
    .metrics = msgraph_metrics,
    .n_metrics = (int)(sizeof msgraph_metrics / sizeof msgraph_metrics[0]),
    /* no .unconfigured: a Google-only deployment would be warned about
     * Graph at every start; a Microsoft credential's calendars go to
     * state error naming microsoft.client_id instead */
    .init = msgraph_init,
    .cancel = msgraph_cancel,
    .thread_release = msgraph_thread_release,
    .list_changes = m_list_changes,
    .occurrences = m_occurrences,
    .get = m_get,
    .insert = m_insert,
    .patch = m_patch,
    .remove = m_remove,
    .sub_open = m_sub_open,
    .sub_renew = m_sub_renew,
    .sub_stop = m_sub_stop,
    .push_parse = m_push_parse,
    .normalise = msgraph_event_parse,
    .encode = msgraph_event_encode,
    .classify = msgraph_classify,
};
