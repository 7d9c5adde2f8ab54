/* status.c -- the status page (see status.h).
 *
 * Each section is fetched as the API's own JSON (the store's *_json
 * functions, in one read snapshot), decoded into the thread's Lua state
 * and written out as HTML table rows. Cells carry data-f="<api field>"
 * and rows data-id, so a test (tests/e2e/test_status.py) can read the
 * rendered page back and compare it with the API field by field.
 */
#include "status.h"

#include "json.h"
#include "log.h"
#include "policy/policy.h"
#include "store/audit.h"
#include "store/bookings.h"
#include "store/calendars.h"
#include "store/channels.h"
#include "store/queue.h"
#include "store/store.h"
#include "version.h"

#include <lauxlib.h>
#include <lua.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define STATUS_CALENDARS 500
#define STATUS_DECISIONS 50
#define STATUS_FLAGGED 100
#define COOKIE_NAME "calsync_status"

static const struct config *status_cfg;
/* "calsync_status=<64 hex>; ..." -- computed once: the answer's
 * Set-Cookie must outlive the handler (http_resp.set_cookie) */
static char status_cookie_hdr[160];
static char status_cookie_val[65];

int status_init(const struct config *cfg)
{
    static const char label[] = "calsync status page v1";
    unsigned char mac[32];
    unsigned int len = 0;
    status_cfg = cfg;
    status_cookie_val[0] = '\0';
    if (!cfg->api_token)
        return 0;
    if (!HMAC(EVP_sha256(), cfg->api_token, (int)strlen(cfg->api_token),
              (const unsigned char *)label, sizeof label - 1, mac, &len) ||
        len != sizeof mac)
        return -1;
    for (unsigned i = 0; i < len; i++)
        snprintf(status_cookie_val + 2 * i, 3, "%02x", mac[i]);
    snprintf(status_cookie_hdr, sizeof status_cookie_hdr,
             COOKIE_NAME "=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200",
             status_cookie_val);
    return 0;
}

int status_escape(struct buf *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        const char *ent = NULL;
        switch (ch) {
        case '&': ent = "&amp;"; break;
        case '<': ent = "&lt;"; break;
        case '>': ent = "&gt;"; break;
        case '"': ent = "&quot;"; break;
        case '\'': ent = "&#39;"; break;
        default: break;
        }
        if (ent) {
            if (buf_puts(out, ent))
                return -1;
        } else if ((ch < 0x20 && ch != '\t' && ch != '\n') || ch == 0x7f) {
            continue;
        } else if (buf_append(out, s + i, 1)) {
            return -1;
        }
    }
    return 0;
}

static void esc(struct buf *out, const char *s)
{
    status_escape(out, s, strlen(s));
}

/* ---------------------------------------------------------------- auth */

/* The value of cookie `name` in a Cookie header into out: 1 found. */
static int cookie_value(const char *hdr, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = hdr;
    while (p && *p) {
        while (*p == ' ' || *p == ';')
            p++;
        const char *end = strchr(p, ';');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > nl && strncmp(p, name, nl) == 0 && p[nl] == '=') {
            size_t vl = len - nl - 1;
            if (vl >= cap)
                return 0;
            memcpy(out, p + nl + 1, vl);
            out[vl] = '\0';
            return 1;
        }
        p = end;
    }
    return 0;
}

static int page_authorized(struct http_req *req)
{
    const char *tok = status_cfg->api_token;
    if (!tok)
        return 1;
    const char *h = http_header(req, "Authorization");
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        h += 7;
        while (*h == ' ')
            h++;
        return secure_equal(h, strlen(h), tok, strlen(tok));
    }
    char v[80];
    const char *c = http_header(req, "Cookie");
    /* an empty cookie value must never match an empty (failed) derivation */
    return c && status_cookie_val[0] && cookie_value(c, COOKIE_NAME, v, sizeof v) &&
           strlen(v) == 64 && secure_equal(v, strlen(v), status_cookie_val, strlen(status_cookie_val));
}

static void page_head(struct buf *b, const char *title)
{
    buf_puts(b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta name=\"referrer\" content=\"no-referrer\"><title>");
    esc(b, title);
    buf_puts(b, "</title><style>"
                "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}"
                "table{border-collapse:collapse;margin:.5em 0 1.5em}"
                "th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;"
                "vertical-align:top;max-width:32em;overflow-wrap:anywhere}"
                "th{background:#f3f3f3}.none{color:#999}"
                ".st-error,.st-revoked,.err{color:#b00;font-weight:bold}"
                ".st-active{color:#070}.st-syncing{color:#a60}"
                "</style></head><body>\n");
}

static void login_form(struct http_resp *resp, const char *msg)
{
    resp->status = 401;
    resp->content_type = "text/html; charset=utf-8";
    buf_reset(&resp->body);
    page_head(&resp->body, "calsync: sign in");
    buf_puts(&resp->body, "<h1>calsync status</h1>");
    if (msg) {
        buf_puts(&resp->body, "<p class=\"err\" id=\"login-error\">");
        esc(&resp->body, msg);
        buf_puts(&resp->body, "</p>");
    }
    buf_puts(&resp->body,
             "<form method=\"post\" action=\"/login\">"
             "<label>API token <input type=\"password\" name=\"token\" "
             "autocomplete=\"current-password\" required></label> "
             "<button type=\"submit\">Sign in</button></form>"
             "<p>The token is the service's <code>api_token</code>; the page sets a "
             "cookie that only opens this page.</p></body></html>\n");
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The url-decoded value of field `name` of a form body into out (cap
 * bytes): 1 found, 0 absent or malformed or too long. */
static int form_field(const char *body, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = body;
    while (p && *p) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len >= nl && strncmp(p, name, nl) == 0 && (len == nl || p[nl] == '=')) {
            size_t o = 0;
            for (size_t i = nl + 1; i < len; i++) {
                int ch = (unsigned char)p[i];
                if (ch == '+') {
                    ch = ' ';
                } else if (ch == '%') {
                    int hi = i + 2 < len ? hexval(p[i + 1]) : -1;
                    int lo = i + 2 < len ? hexval(p[i + 2]) : -1;
                    if (hi < 0 || lo < 0)
                        return 0;
                    ch = hi * 16 + lo;
                    i += 2;
                }
                if (o + 1 >= cap || ch == 0)
                    return 0;
                out[o++] = (char)ch;
            }
            out[o] = '\0';
            return 1;
        }
        p = end ? end + 1 : NULL;
    }
    return 0;
}

void status_login(struct http_req *req, struct http_resp *resp)
{
    const char *tok = status_cfg->api_token;
    char given[1024];
    if (!tok) { /* nothing to sign in to */
        resp->status = 303;
        resp->location = "/";
        resp->content_type = "text/plain; charset=utf-8";
        buf_puts(&resp->body, "see /\n");
        return;
    }
    if (!form_field(req->body, "token", given, sizeof given) ||
        !secure_equal(given, strlen(given), tok, strlen(tok))) {
        log_warn("status.login_failed", "msg=%s", log_q("wrong or missing token"));
        login_form(resp, "Wrong token.");
        return;
    }
    log_info("status.login", "msg=%s", log_q("status page cookie issued"));
    resp->status = 303;
    resp->location = "/";
    resp->set_cookie = status_cookie_hdr;
    resp->content_type = "text/plain; charset=utf-8";
    buf_puts(&resp->body, "signed in; see /\n");
}

/* ------------------------------------------------------------ rendering */

/* One cell: <td data-f="key">value</td> for the field key of the table at
 * idx; strings escaped, integers and booleans printed, null/absent as an
 * empty cell marked none; data-f is `as`. With cls_prefix, the cell gets class
 * cls_prefix+value (states). */
static void cell_as(struct buf *b, lua_State *L, int idx, const char *key,
                    const char *as, const char *cls_prefix)
{
    lua_getfield(L, idx, key);
    int t = lua_type(L, -1);
    buf_printf(b, "<td data-f=\"%s\"", as);
    if (t == LUA_TSTRING) {
        if (cls_prefix) {
            buf_printf(b, " class=\"%s", cls_prefix);
            esc(b, lua_tostring(L, -1));
            buf_puts(b, "\"");
        }
        buf_puts(b, ">");
        esc(b, lua_tostring(L, -1));
    } else if (t == LUA_TNUMBER) {
        /* cjson decodes every number as a float: ids print as integers */
        int exact = 0;
        lua_Integer v = lua_tointegerx(L, -1, &exact);
        if (exact)
            buf_printf(b, ">%lld", (long long)v);
        else
            buf_printf(b, ">%g", (double)lua_tonumber(L, -1));
    } else if (t == LUA_TBOOLEAN) {
        buf_printf(b, ">%s", lua_toboolean(L, -1) ? "true" : "false");
    } else {
        buf_puts(b, " class=\"none\">");
    }
    buf_puts(b, "</td>");
    lua_pop(L, 1);
}

/* The string field key of the table at idx, or NULL (valid while the
 * table is on the stack: the string is held by it). */
static const char *sfield(lua_State *L, int idx, const char *key)
{
    lua_getfield(L, idx, key);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
    return s;
}

/* Decodes json and pushes its array member `list`; -1 if it is not one. */
static int push_list(lua_State *L, struct buf *json, const char *list)
{
    struct cs_err err;
    if (json_decode_object(L, json->data ? json->data : "", json->len, &err))
        return -1;
    lua_getfield(L, -1, list);
    if (lua_type(L, -1) != LUA_TTABLE)
        return -1;
    return 0;
}

static void section(struct buf *b, const char *id, const char *title)
{
    buf_printf(b, "<section id=\"%s\"><h2>%s</h2>\n", id, title);
}

/* A table of the page, as data: which list of the API's JSON it shows,
 * the field naming each row (data-id) and its columns. */
struct col {
    const char *head;      /* the <th> text */
    const char *field;     /* the row's field, or "object.field" inside one */
    const char *as;        /* data-f; NULL: the field's own name */
    const char *cls;       /* class = cls + the value (states), or NULL */
    const char *cls_fixed; /* class when the value is there ("err"), or NULL */
};

struct table {
    const char *list;                    /* the JSON's array member */
    const char *what;                    /* "<what> unavailable" */
    const char *id;                      /* the field of each row's data-id */
    const struct col *cols;              /* ends with {NULL} */
    int (*keep)(lua_State *L, int row);  /* NULL: every row is shown */
};

/* One column's cell of the row table at row. */
static void col_cell(struct buf *b, lua_State *L, int row, const struct col *c)
{
    const char *dot = strchr(c->field, '.');
    const char *as = c->as ? c->as : dot ? dot + 1 : c->field;
    if (dot) {
        char obj[32];
        snprintf(obj, sizeof obj, "%.*s", (int)(dot - c->field), c->field);
        lua_getfield(L, row, obj);
        if (lua_type(L, -1) == LUA_TTABLE)
            cell_as(b, L, lua_gettop(L), dot + 1, as, c->cls);
        else
            buf_printf(b, "<td data-f=\"%s\" class=\"none\"></td>", as);
        lua_pop(L, 1);
    } else if (c->cls_fixed) {
        lua_getfield(L, row, c->field);
        if (lua_type(L, -1) == LUA_TSTRING) {
            buf_printf(b, "<td data-f=\"%s\" class=\"%s\">", as, c->cls_fixed);
            esc(b, lua_tostring(L, -1));
            buf_puts(b, "</td>");
        } else {
            buf_printf(b, "<td data-f=\"%s\" class=\"none\"></td>", as);
        }
        lua_pop(L, 1);
    } else {
        cell_as(b, L, row, c->field, as, c->cls);
    }
}

/* Decodes json and pushes the object and its list t->list; the list's
 * length in *n. When there is no such list, writes "<what> unavailable"
 * and returns -1 (the caller restores the stack either way). */
static int table_open(struct buf *b, lua_State *L, struct buf *json,
                      const struct table *t, lua_Integer *n)
{
    if (push_list(L, json, t->list)) {
        buf_printf(b, "<p class=\"err\">%s unavailable</p>", t->what);
        return -1;
    }
    *n = (lua_Integer)lua_rawlen(L, -1);
    return 0;
}

/* Writes the table of the list on top of the stack (table_open): the
 * head, then one row per object t->keep keeps. Returns the rows shown. */
static lua_Integer table_rows(struct buf *b, lua_State *L, const struct table *t)
{
    int list = lua_gettop(L);
    lua_Integer n = (lua_Integer)lua_rawlen(L, list), shown = 0;
    buf_puts(b, "<table><thead><tr>");
    for (const struct col *c = t->cols; c->head; c++)
        buf_printf(b, "<th>%s</th>", c->head);
    buf_puts(b, "</tr></thead><tbody>\n");
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, list, i);
        int row = lua_gettop(L);
        if (lua_type(L, row) == LUA_TTABLE && (!t->keep || t->keep(L, row))) {
            buf_puts(b, "<tr data-id=\"");
            lua_getfield(L, row, t->id);
            if (lua_type(L, -1) == LUA_TNUMBER)
                buf_printf(b, "%lld", (long long)lua_tointeger(L, -1));
            else if (lua_type(L, -1) == LUA_TSTRING)
                esc(b, lua_tostring(L, -1));
            lua_pop(L, 1);
            buf_puts(b, "\">");
            for (const struct col *c = t->cols; c->head; c++)
                col_cell(b, L, row, c);
            buf_puts(b, "</tr>\n");
            shown++;
        }
        lua_settop(L, row - 1);
    }
    buf_puts(b, "</tbody></table>");
    return shown;
}

static const struct col calendar_cols[] = {
    {"id", "id", NULL, NULL, NULL},
    {"external id", "external_id", NULL, NULL, NULL},
    {"credential", "credential_id", NULL, NULL, NULL},
    {"policy", "policy", NULL, NULL, NULL},
    {"state", "state", NULL, "st-", NULL},
    {"reason", "reason", NULL, NULL, NULL},
    {"last synced", "last_synced_at", NULL, NULL, NULL},
    {"channel", "channel.id", "channel", NULL, NULL},
    {"channel expiry", "channel.expiration", NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
static const struct table calendar_table = {"calendars", "calendars", "id", calendar_cols,
                                            NULL};

/* the registry keeps every channel ever opened: the page shows the ones
 * that can still deliver, and counts the rest */
static int channel_deliverable(lua_State *L, int row)
{
    const char *state = sfield(L, row, "state");
    return state && (strcmp(state, "live") == 0 || strcmp(state, "opening") == 0);
}

static const struct col channel_cols[] = {
    {"id", "id", NULL, NULL, NULL},
    {"calendar", "calendar_id", NULL, NULL, NULL},
    {"resource id", "resource_id", NULL, NULL, NULL},
    {"expiration", "expiration", NULL, NULL, NULL},
    {"state", "state", NULL, "st-", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
static const struct table channel_table = {"channels", "channels", "id", channel_cols,
                                           channel_deliverable};

static const struct col decision_cols[] = {
    {"at", "at", NULL, NULL, NULL},
    {"booking", "booking", NULL, NULL, NULL},
    {"calendar", "calendar_id", NULL, NULL, NULL},
    {"source", "source", NULL, NULL, NULL},
    {"change", "change", NULL, NULL, NULL},
    {"action", "action", NULL, "act-", NULL},
    {"reason", "reason", NULL, NULL, NULL},
    {"policy", "policy", NULL, NULL, NULL},
    {"policy version", "policy_version", NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
static const struct table decision_table = {"decisions", "decisions", "id", decision_cols,
                                            NULL};

static const struct col flagged_cols[] = {
    {"uid", "uid", NULL, NULL, NULL},
    {"calendar", "calendar_id", NULL, NULL, NULL},
    {"title", "title", NULL, NULL, NULL},
    {"start", "start", NULL, NULL, NULL},
    {"end", "end", NULL, NULL, NULL},
    {"proposed", "proposed.kind", NULL, NULL, NULL},
    {"updated", "updated_at", NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
static const struct table flagged_table = {"bookings", "flagged bookings", "uid",
                                           flagged_cols, NULL};

static const struct col policy_cols[] = {
    {"name", "name", NULL, NULL, NULL},
    {"version", "version", NULL, NULL, NULL},
    {"loaded at", "loaded_at", NULL, NULL, NULL},
    {"load error", "error", NULL, NULL, "err"},
    {NULL, NULL, NULL, NULL, NULL},
};
static const struct table policy_table = {"policies", "policies", "name", policy_cols, NULL};

static void render_calendars(struct buf *b, lua_State *L, struct buf *json)
{
    int top = lua_gettop(L);
    lua_Integer n;
    if (table_open(b, L, json, &calendar_table, &n) == 0) {
        buf_printf(b, "<p><span id=\"calendars-count\">%lld</span> calendar(s)",
                   (long long)n);
        lua_getfield(L, -2, "next_cursor");
        if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TLIGHTUSERDATA)
            buf_printf(b, " (the first %d; the API lists the rest)", STATUS_CALENDARS);
        lua_pop(L, 1);
        buf_puts(b, "</p>");
        table_rows(b, L, &calendar_table);
    }
    lua_settop(L, top);
}

static void render_channels(struct buf *b, lua_State *L, struct buf *json)
{
    int top = lua_gettop(L);
    lua_Integer n;
    if (table_open(b, L, json, &channel_table, &n) == 0) {
        lua_Integer shown = table_rows(b, L, &channel_table);
        buf_printf(b, "<p><span id=\"channels-live\">%lld</span> live or "
                      "opening; <span id=\"channels-other\">%lld</span> stopped or expired "
                      "(GET /v1/channels lists them)</p>",
                   (long long)shown, (long long)(n - shown));
    }
    lua_settop(L, top);
}

static void render_decisions(struct buf *b, lua_State *L, struct buf *json)
{
    int top = lua_gettop(L);
    lua_Integer n;
    if (table_open(b, L, json, &decision_table, &n) == 0) {
        buf_printf(b, "<p>The newest %d policy decisions, newest first.</p>",
                   STATUS_DECISIONS);
        table_rows(b, L, &decision_table);
    }
    lua_settop(L, top);
}

static void render_flagged(struct buf *b, lua_State *L, struct buf *json, int64_t total)
{
    int top = lua_gettop(L);
    lua_Integer n;
    if (table_open(b, L, json, &flagged_table, &n) == 0) {
        buf_printf(b, "<p><span id=\"flagged-count\">%lld</span> booking(s) wait for a "
                      "human (POST /v1/bookings/{uid}/resolve)%s</p>",
                   (long long)total, total > n ? "; the newest shown" : "");
        table_rows(b, L, &flagged_table);
    }
    lua_settop(L, top);
}

static void render_policies(struct buf *b, lua_State *L, struct buf *json)
{
    int top = lua_gettop(L);
    lua_Integer n;
    if (table_open(b, L, json, &policy_table, &n) == 0)
        table_rows(b, L, &policy_table);
    lua_settop(L, top);
}

void status_page(struct http_req *req, struct http_resp *resp)
{
    struct cs_err err = {0};
    struct buf cals, chans, decs, flagged, pols;
    int64_t pending = 0, orphaned = 0, oldest = 0, nflagged = 0;
    int in_tx = 0;
    buf_init(&cals);
    buf_init(&chans);
    buf_init(&decs);
    buf_init(&flagged);
    buf_init(&pols);
    if (!page_authorized(req)) {
        login_form(resp, NULL);
        goto done;
    }
    struct store_conn *db = store_conn(&err);
    lua_State *L = json_state();
    if (!db || !L) {
        http_error(resp, 503, "database unavailable: %s", db ? "out of memory" : err.msg);
        goto done;
    }
    /* one snapshot: the sections agree with each other */
    if (store_begin_read(db, &err))
        goto dberr;
    in_tx = 1;
    if (calendar_list_json(db, 0, STATUS_CALENDARS, &cals, &err) ||
        channels_list_json(db, &chans, &err) ||
        audit_decisions_json(db, 0, NULL, NULL, 0, 0, STATUS_DECISIONS, &decs, &err) ||
        booking_flagged_json(db, STATUS_FLAGGED, &flagged, &nflagged, &err) ||
        queue_outbox_counts(db, &pending, &orphaned, &err) ||
        queue_outbox_oldest(db, &oldest, &err))
        goto dberr;
    store_rollback(db);
    in_tx = 0;
    if (policy_list_json(&pols)) {
        http_error(resp, 503, "out of memory");
        goto done;
    }

    struct buf *b = &resp->body;
    int64_t now = time_now_ms();
    char ts[TIME_RFC3339_MAX];
    time_format_rfc3339(now, ts);
    resp->status = 200;
    resp->content_type = "text/html; charset=utf-8";
    page_head(b, "calsync status");
    buf_puts(b, "<h1>calsync status</h1><p>Version ");
    esc(b, CALSYNC_VERSION);
    buf_printf(b, "; rendered at <time id=\"rendered-at\">%s</time>. "
                  "The same data as JSON: /v1/calendars, /v1/channels, /v1/policies, "
                  "/healthz, /metrics.</p>\n", ts);

    section(b, "calendars", "Calendars");
    render_calendars(b, L, &cals);
    buf_puts(b, "</section>\n");

    section(b, "channels", "Push channels");
    render_channels(b, L, &chans);
    buf_puts(b, "</section>\n");

    section(b, "flagged", "Flagged bookings waiting for a human");
    render_flagged(b, L, &flagged, nflagged);
    buf_puts(b, "</section>\n");

    section(b, "decisions", "Recent decisions");
    render_decisions(b, L, &decs);
    buf_puts(b, "</section>\n");

    section(b, "outbox", "Webhook outbox");
    buf_printf(b, "<table><tbody><tr><th>pending deliveries</th>"
                  "<td id=\"outbox-pending\">%lld</td></tr>"
                  "<tr><th>orphaned (subscriber removed)</th>"
                  "<td id=\"outbox-orphaned\">%lld</td></tr>"
                  "<tr><th>oldest pending</th><td id=\"outbox-oldest\"",
               (long long)pending, (long long)orphaned);
    if (oldest > 0) {
        time_format_rfc3339(oldest, ts);
        buf_printf(b, ">%s (%lld s ago)</td></tr>", ts,
                   (long long)((now - oldest) / 1000));
    } else {
        buf_puts(b, " class=\"none\">none</td></tr>");
    }
    buf_puts(b, "</tbody></table></section>\n");

    section(b, "policies", "Policies");
    render_policies(b, L, &pols);
    buf_puts(b, "</section>\n</body></html>\n");
    goto done;

dberr:
    if (in_tx)
        store_rollback(db);
    log_error("status.db_error", "err=%s", log_q(err.msg));
    buf_reset(&resp->body);
    http_error(resp, 503, "database error: %s", err.msg);
done:
    buf_free(&cals);
    buf_free(&chans);
    buf_free(&decs);
    buf_free(&flagged);
    buf_free(&pols);
}
