/* mem_provider.c -- see mem_provider.h. */
#include "mem_provider.h"

#include "calendar.h"
#include "json.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MEM_MAX 512

struct mem_event {
    char id[128];
    char title[128];
    char series[128];  /* "" when none */
    int64_t start_ms, end_ms, original_start_ms;
    int version;
    int cancelled, bare, dropped;
    int broken;        /* listed malformed: its id, a state of the wrong type */
    long seq;          /* sequence of its last change */
};

static struct mem_event events[MEM_MAX];
static int n_events;
static long seq;
static long epoch;           /* cursors of an earlier epoch are expired */
static int page_size = 100;
static int fail_rc, fail_n, fail_after;
static int list_calls, full_list_calls, occurrence_calls;

void mem_reset(void)
{
    memset(events, 0, sizeof events);
    n_events = 0;
    seq = 0;
    epoch = 0;
    page_size = 100;
    fail_rc = fail_n = fail_after = 0;
    list_calls = full_list_calls = occurrence_calls = 0;
}

static struct mem_event *find(const char *id)
{
    for (int i = 0; i < n_events; i++)
        if (strcmp(events[i].id, id) == 0)
            return &events[i];
    return NULL;
}

void mem_put(const char *id, const char *title, int64_t start_ms, int64_t end_ms,
             const char *series, int64_t original_start_ms)
{
    struct mem_event *e = find(id);
    if (!e) {
        e = &events[n_events++];
        snprintf(e->id, sizeof e->id, "%s", id);
    }
    snprintf(e->title, sizeof e->title, "%s", title);
    snprintf(e->series, sizeof e->series, "%s", series ? series : "");
    e->start_ms = start_ms;
    e->end_ms = end_ms;
    e->original_start_ms = original_start_ms;
    e->cancelled = e->bare = e->dropped = e->broken = 0;
    e->version++;
    e->seq = ++seq;
}

void mem_cancel(const char *id, int bare)
{
    struct mem_event *e = find(id);
    if (!e)
        return;
    e->cancelled = 1;
    e->bare = bare;
    e->version++;
    e->seq = ++seq;
}

void mem_break(const char *id)
{
    struct mem_event *e = find(id);
    if (e) {
        e->broken = 1;
        e->seq = ++seq;
    }
}

void mem_drop(const char *id)
{
    struct mem_event *e = find(id);
    if (e)
        e->dropped = 1;
}

void mem_set_page_size(int n)
{
    page_size = n;
}

void mem_expire_cursors(void)
{
    epoch++;
}

void mem_fail_next(int rc, int n, int after)
{
    fail_rc = rc;
    fail_n = n;
    fail_after = after;
}

int mem_list_calls(void)
{
    return list_calls;
}

int mem_full_list_calls(void)
{
    return full_list_calls;
}

int mem_occurrence_calls(void)
{
    return occurrence_calls;
}

/* ------------------------------------------------------------ raw shape
 * {id, version, state = "live"|"gone", from, to, name, series?, slot?}:
 * deliberately unlike Google's. A bare stub is {id, state = "gone"}. */

static void set_str(lua_State *L, const char *k, const char *v)
{
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, int64_t v)
{
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

static void push_raw(lua_State *L, const struct mem_event *e)
{
    lua_createtable(L, 0, 8);
    set_str(L, "id", e->id);
    if (e->broken) {
        set_int(L, "state", 7);
        return;
    }
    set_str(L, "state", e->cancelled ? "gone" : "live");
    if (e->cancelled && e->bare)
        return;
    char v[16];
    snprintf(v, sizeof v, "%d", e->version);
    set_str(L, "version", v);
    set_int(L, "from", e->start_ms);
    set_int(L, "to", e->end_ms);
    set_str(L, "name", e->title);
    if (e->series[0]) {
        set_str(L, "series", e->series);
        set_int(L, "slot", e->original_start_ms);
    }
}

/* Pushes {next_page, next_cursor} then its items array, filling out. */
static void push_page(lua_State *L, const struct mem_event **v, int n, int from,
                      int listing, struct provider_page *out)
{
    char next[32];
    int to = from + page_size < n ? from + page_size : n;
    lua_createtable(L, 0, 2);
    if (to < n) {
        snprintf(next, sizeof next, "%d", to);
        set_str(L, "next_page", next);
    } else if (listing) {
        snprintf(next, sizeof next, "c%ld.%ld", seq, epoch);
        set_str(L, "next_cursor", next);
    }
    int page = lua_gettop(L);
    lua_createtable(L, to - from, 0);
    for (int i = from; i < to; i++) {
        push_raw(L, v[i]);
        lua_rawseti(L, -2, i - from + 1);
    }
    out->items = lua_gettop(L);
    out->n = to - from;
    lua_getfield(L, page, "next_page");
    out->next_page = lua_tostring(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, page, "next_cursor");
    out->next_cursor = lua_tostring(L, -1);
    lua_pop(L, 1);
}

static int take_failure(struct provider_ctx *px, struct cs_err *err)
{
    if (fail_n <= 0)
        return PROVIDER_OK;
    if (fail_after > 0) {
        fail_after--;
        return PROVIDER_OK;
    }
    fail_n--;
    px->last.status = 0;
    snprintf(px->last.reason, sizeof px->last.reason, "%s", provider_rc_name(fail_rc));
    cs_err_set(err, "mem: injected %s", provider_rc_name(fail_rc));
    if (fail_rc == PROVIDER_REVOKED) {
        struct cs_err e2;
        credential_revoke(px->db, px->credential_id, "mem: revoked", &e2);
    }
    return fail_rc;
}

static int mem_list_changes(struct provider_ctx *px, const char *calendar,
                            const char *cursor, const char *page,
                            struct provider_page *out, struct cs_err *err)
{
    (void)calendar;
    list_calls++;
    int rc = take_failure(px, err);
    if (rc)
        return rc;
    long since = -1;
    if (cursor) {
        const char *dot = strchr(cursor, '.');
        since = cursor[0] == 'c' ? atol(cursor + 1) : -1;
        if (since < 0 || !dot || atol(dot + 1) != epoch) {
            cs_err_set(err, "mem: cursor %s expired", cursor);
            return PROVIDER_RESYNC;
        }
    } else if (!page) {
        full_list_calls++;
    }
    static const struct mem_event *v[MEM_MAX];
    int n = 0;
    for (int i = 0; i < n_events; i++) {
        const struct mem_event *e = &events[i];
        if (e->dropped)
            continue;
        /* a full listing shows live events (a deletion it shows too, as
         * Google's showDeleted does; only dropped ones vanish) */
        if (since < 0 || e->seq > since)
            v[n++] = e;
    }
    push_page(json_state(), v, n, page ? atoi(page) : 0, 1, out);
    return PROVIDER_OK;
}

static int mem_occurrences(struct provider_ctx *px, const char *calendar,
                           const char *series, const char *page,
                           struct provider_page *out, struct cs_err *err)
{
    (void)px, (void)calendar, (void)err;
    occurrence_calls++;
    const struct mem_event *master = find(series);
    if (master && (master->cancelled || master->dropped))
        return PROVIDER_GONE;
    static const struct mem_event *v[MEM_MAX];
    int n = 0;
    /* an occurrence a series change removed (its bare stub) is not listed
     * at all, as with Google's instances after a split */
    for (int i = 0; i < n_events; i++)
        if (!events[i].dropped && !(events[i].cancelled && events[i].bare) &&
            strcmp(events[i].series, series) == 0)
            v[n++] = &events[i];
    push_page(json_state(), v, n, page ? atoi(page) : 0, 0, out);
    return PROVIDER_OK;
}

static int mem_get(struct provider_ctx *px, const char *calendar, const char *id,
                   struct cs_err *err)
{
    (void)px, (void)calendar;
    const struct mem_event *e = find(id);
    if (!e || e->dropped) {
        cs_err_set(err, "mem: no event %s", id);
        return PROVIDER_GONE;
    }
    push_raw(json_state(), e);
    return PROVIDER_OK;
}

static int mem_insert(struct provider_ctx *px, const char *calendar,
                      const struct provider_write *w, struct cs_err *err)
{
    if (!find(w->key)) /* idempotent on the key */
        mem_put(w->key, w->title, w->start_ms, w->end_ms, NULL, PROVIDER_NO_TIME);
    return mem_get(px, calendar, w->key, err);
}

static int mem_patch(struct provider_ctx *px, const char *calendar, const char *id,
                     const struct provider_write *w, const char *if_match,
                     struct cs_err *err)
{
    struct mem_event *e = find(id);
    char v[32];
    if (!e || e->dropped)
        return cs_err_set(err, "mem: no event %s", id), PROVIDER_GONE;
    snprintf(v, sizeof v, "%d", e->version);
    if (if_match && strcmp(if_match, v) != 0)
        return cs_err_set(err, "mem: version %s is not %s", if_match, v), PROVIDER_CONFLICT;
    mem_put(id, w->title, w->start_ms, w->end_ms, e->series[0] ? e->series : NULL,
            e->original_start_ms);
    return mem_get(px, calendar, id, err);
}

static int mem_remove(struct provider_ctx *px, const char *calendar, const char *id,
                      const char *if_match, struct cs_err *err)
{
    (void)px, (void)calendar, (void)if_match;
    struct mem_event *e = find(id);
    if (!e || e->cancelled)
        return cs_err_set(err, "mem: no event %s", id), PROVIDER_GONE;
    mem_cancel(id, 0);
    return PROVIDER_OK;
}

static int mem_sub_open(struct provider_ctx *px, const char *calendar,
                        const struct provider_sub_req *req, struct provider_sub *out,
                        struct cs_err *err)
{
    (void)px, (void)calendar, (void)req, (void)out;
    cs_err_set(err, "mem: no push");
    return PROVIDER_PERMANENT;
}

static int mem_sub_stop(struct provider_ctx *px, const char *sub_id,
                        const struct provider_sub *sub, struct cs_err *err)
{
    (void)px, (void)sub_id, (void)sub, (void)err;
    return PROVIDER_GONE;
}

/* Pushes in headers (routes without a token take no body):
 *   X-Mem-Handshake: <text>                      a handshake
 *   X-Mem-Push: <sub>:<token>:<state>[,...]      a batch of messages
 * The split copy lives in a per-thread buffer until the next call. */
static int mem_push_parse(struct http_req *req, struct provider_push_batch *out,
                          struct cs_err *err)
{
    static _Thread_local char copy[2048];
    const char *hs = http_header(req, "X-Mem-Handshake");
    const char *v = http_header(req, "X-Mem-Push");
    if (hs) {
        out->handshake = hs;
        return 0;
    }
    if (!v || strlen(v) >= sizeof copy)
        return cs_err_set(err, "mem: no X-Mem-Push");
    memcpy(copy, v, strlen(v) + 1);
    char *save = NULL;
    for (char *m = strtok_r(copy, ",", &save); m; m = strtok_r(NULL, ",", &save)) {
        char *t = strchr(m, ':'), *st = t ? strchr(t + 1, ':') : NULL;
        if (!st || out->n >= PROVIDER_PUSH_MAX)
            return cs_err_set(err, "mem: bad message");
        *t = *st = '\0';
        out->msg[out->n].subscription = m;
        out->msg[out->n].token = t + 1;
        out->msg[out->n].state = st + 1;
        out->n++;
    }
    return 0;
}

/* The shared shape from the raw one. Strings point into the raw table. */
static int mem_normalise(lua_State *L, int idx, struct provider_event *ev,
                         struct cs_err *err)
{
    const char *s = NULL;
    memset(ev, 0, offsetof(struct provider_event, series_buf_));
    ev->start_ms = ev->end_ms = ev->original_start_ms = PROVIDER_NO_TIME;
    if (!lua_istable(L, idx))
        return cs_err_set(err, "mem: event is not an object");
    if (json_get_str(L, idx, "id", &ev->id, NULL, err) != 1)
        return cs_err_set(err, "mem: event without an id");
    if (strncmp(ev->id, "bad/", 4) == 0) {
        cs_err_set(err, "mem: id %s cannot have been issued", ev->id);
        return PROVIDER_EVENT_SKIP;
    }
    if (json_get_str(L, idx, "state", &s, NULL, err) != 1)
        return cs_err_set(err, "mem: event without a state");
    ev->status = strcmp(s, "gone") == 0 ? "cancelled" : "confirmed";
    if (json_get_str(L, idx, "version", &ev->etag, NULL, err) != 1) {
        /* a bare stub: its series is inferred from "<series>/<n>" ids */
        ev->bare = 1;
        const char *slash = strchr(ev->id, '/');
        if (slash && (size_t)(slash - ev->id) < sizeof ev->series_buf_) {
            memcpy(ev->series_buf_, ev->id, (size_t)(slash - ev->id));
            ev->series_buf_[slash - ev->id] = '\0';
            ev->series_id = ev->series_buf_;
        }
        return 0;
    }
    if (json_get_int(L, idx, "from", &ev->start_ms, err) != 1 ||
        json_get_int(L, idx, "to", &ev->end_ms, err) != 1)
        return cs_err_set(err, "mem: event %s without from/to", ev->id);
    json_get_str(L, idx, "name", &ev->title, NULL, err);
    if (json_get_str(L, idx, "series", &ev->series_id, NULL, err) == 1 &&
        json_get_int(L, idx, "slot", &ev->original_start_ms, err) != 1)
        return cs_err_set(err, "mem: occurrence %s without a slot", ev->id);
    return 0;
}

static int mem_encode(const struct provider_event *ev, enum provider_encode how,
                      struct buf *out)
{
    buf_reset(out);
    if (how == PROVIDER_ENC_STUB)
        return buf_puts(out, "{\"state\":\"gone\",\"id\":") || buf_json_strz(out, ev->id) ||
               buf_puts(out, "}");
    return buf_puts(out, "{\"state\":\"live\",\"id\":") || buf_json_strz(out, ev->id) ||
           buf_printf(out, ",\"from\":%lld,\"to\":%lld}", (long long)ev->start_ms,
                      (long long)ev->end_ms);
}

static int mem_classify(enum provider_op op, long status, const char *reason)
{
    (void)op, (void)reason;
    return status >= 500 ? PROVIDER_TRANSIENT : PROVIDER_PERMANENT;
}

const struct provider_ops mem_provider = {
    .name = "mem",
    .list_changes = mem_list_changes,
    .occurrences = mem_occurrences,
    .get = mem_get,
    .insert = mem_insert,
    .patch = mem_patch,
    .remove = mem_remove,
    .sub_open = mem_sub_open,
    .sub_stop = mem_sub_stop,
    .push_parse = mem_push_parse,
    .normalise = mem_normalise,
    .encode = mem_encode,
    .classify = mem_classify,
};
