/* parse.c -- Microsoft Graph's JSON in the shared shapes: an event (or a
 * delta round's @removed stub) as a provider_event, a delta or instances
 * page as a provider_page, the event calsync writes, the raw shape of a
 * stub or mirror row, and Graph's status codes as provider classes.
 *
 * Times: calsync asks Graph for UTC (Prefer: outlook.timezone="UTC"), so
 * a dateTimeTimeZone whose zone is not UTC is refused, never guessed: a
 * wrong instant would move a booking.
 */
#include "provider/microsoft/msgraph.h"
#include "provider/pjson.h"

#include "json.h"
#include "log.h"

#include <lua.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

int msgraph_parse_datetime(const char *s, size_t n, int64_t *ms)
{
    /* "YYYY-MM-DDTHH:MM:SS[.fffffff][Z]": Graph's 7-digit fraction is cut
     * to what RFC 3339 parsing takes */
    char t[40];
    if (n < 19 || n > 34)
        return -1;
    size_t k = 19;
    memcpy(t, s, 19);
    size_t i = 19;
    if (i < n && s[i] == '.') {
        t[k++] = '.';
        i++;
        size_t d = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            if (d++ < 3)
                t[k++] = s[i];
            i++;
        }
        if (d == 0)
            return -1;
    }
    if (i < n && s[i] == 'Z')
        i++;
    if (i != n)
        return -1; /* an offset: calsync asked for UTC and gets it */
    t[k++] = 'Z';
    return time_parse_rfc3339(t, k, ms);
}

/* Reads {dateTime, timeZone} under key: 1 found, 0 absent, -1 error. */
static int time_field(lua_State *L, int ev, const char *key, int64_t *ms,
                      struct cs_err *err)
{
    const char *s, *tz;
    size_t n;
    lua_getfield(L, ev, key);
    if (lua_isnil(L, -1) || lua_type(L, -1) == LUA_TLIGHTUSERDATA) {
        lua_pop(L, 1);
        return 0;
    }
    int t = lua_gettop(L), rc = -1;
    if (!lua_istable(L, t)) {
        cs_err_set(err, "'%s' must be an object", key);
        goto done;
    }
    if (json_get_str(L, t, "dateTime", &s, &n, err) != 1 ||
        msgraph_parse_datetime(s, n, ms)) {
        cs_err_set(err, "'%s.dateTime' is not a date-time", key);
        goto done;
    }
    if (pjson_str_bounded(L, t, "timeZone", 64, &tz, err) < 0)
        goto done;
    if (tz && strcasecmp(tz, "UTC") != 0 && strcasecmp(tz, "Etc/UTC") != 0) {
        cs_err_set(err, "'%s.timeZone' is \"%.64s\", not the UTC calsync asked for", key, tz);
        goto done;
    }
    rc = 1;
done:
    lua_settop(L, t - 1);
    return rc;
}

/* singleValueExtendedProperties: [{"id": MSGRAPH_TAG_PROP, "value": uid}] */
static int read_tag(lua_State *L, int idx, struct provider_event *ev, struct cs_err *err)
{
    lua_getfield(L, idx, "singleValueExtendedProperties");
    int arr = lua_gettop(L), rc = 0;
    if (!lua_istable(L, arr))
        goto done;
    lua_Unsigned n = lua_rawlen(L, arr);
    for (lua_Unsigned i = 1; i <= n && i <= 64; i++) {
        lua_rawgeti(L, arr, (lua_Integer)i);
        const char *id, *v;
        int el = lua_gettop(L);
        if (lua_istable(L, el) && pjson_str_bounded(L, el, "id", 256, &id, err) == 1 &&
            strcasecmp(id, MSGRAPH_TAG_PROP) == 0) {
            size_t vn;
            if (json_get_str(L, el, "value", &v, &vn, err) == 1) {
                if (vn <= PROVIDER_TAG_MAX && strlen(v) == vn)
                    ev->booking_tag = v;
                else
                    log_warn("sync.tag_ignored", "event_id=%s len=%zu", log_q(ev->id), vn);
            }
        }
        lua_pop(L, 1);
    }
done:
    lua_settop(L, arr - 1);
    return rc;
}

int msgraph_event_parse(lua_State *L, int idx, struct provider_event *ev,
                        struct cs_err *err)
{
    const char *s;
    size_t n;
    int r;
    int top = lua_gettop(L);
    idx = lua_absindex(L, idx);
    /* attendees' responses and conference links are not read from Graph
     * yet: left NULL */
    if ((r = pjson_event_begin(L, idx, ev, msgraph_id_valid, "Graph", err)) != 0)
        return r;
    /* a delta round's deletion: {"@odata.type", "id", "@removed"} and
     * nothing else -- deleted, cancelled, or moved out of the window */
    lua_getfield(L, idx, "@removed");
    int removed = lua_istable(L, -1);
    lua_pop(L, 1);
    if (removed) {
        ev->status = "cancelled";
        ev->bare = 1;
        return 0;
    }
    int cancelled = 0;
    if (json_get_bool(L, idx, "isCancelled", &cancelled, err) < 0)
        goto bad;
    ev->status = cancelled ? "cancelled" : "confirmed";
    if (pjson_str_bounded(L, idx, "@odata.etag", PROVIDER_ETAG_MAX, &ev->etag, err) < 0 ||
        pjson_str_bounded(L, idx, "lastModifiedDateTime", 64, &ev->updated, err) < 0 ||
        pjson_str_bounded(L, idx, "createdDateTime", PROVIDER_CREATED_MAX, &ev->created, err) < 0 ||
        pjson_str_bounded(L, idx, "seriesMasterId", MSGRAPH_ID_MAX, &ev->series_id, err) < 0)
        goto bad;
    if (ev->series_id && !msgraph_id_valid(ev->series_id, strlen(ev->series_id))) {
        cs_err_set(err, "event %.64s: seriesMasterId is not one Graph can have issued", ev->id);
        lua_settop(L, top);
        return PROVIDER_EVENT_SKIP;
    }
    if ((r = json_get_str(L, idx, "subject", &s, &n, err)) < 0)
        goto bad;
    if (r == 1)
        ev->title = pjson_cut_utf8(s, strnlen(s, n), ev->title_buf_, PROVIDER_TITLE_MAX);
    if (json_get_bool(L, idx, "isAllDay", &ev->all_day, err) < 0 ||
        time_field(L, idx, "start", &ev->start_ms, err) < 0 ||
        time_field(L, idx, "end", &ev->end_ms, err) < 0)
        goto bad;
    if (!cancelled && (ev->start_ms == PROVIDER_NO_TIME || ev->end_ms == PROVIDER_NO_TIME)) {
        lua_settop(L, top);
        return cs_err_set(err, "event %.64s: no 'start' or 'end'", ev->id);
    }
    const char *orig;
    if (pjson_str_bounded(L, idx, "originalStart", 64, &orig, err) < 0)
        goto bad;
    if (orig && ev->series_id) {
        if (msgraph_parse_datetime(orig, strlen(orig), &ev->original_start_ms)) {
            int64_t t;
            if (time_parse_rfc3339(orig, strlen(orig), &t)) {
                cs_err_set(err, "'originalStart' is not a date-time");
                goto bad;
            }
            ev->original_start_ms = t;
        }
    }
    if (read_tag(L, idx, ev, err))
        goto bad;
    lua_settop(L, top);
    return 0;
bad:
    lua_settop(L, top);
    return pjson_event_error(err, ev->id);
}

const struct pjson_page_keys msgraph_page_keys = {"@odata.nextLink", "@odata.deltaLink",
                                                 "value"};

int msgraph_page_read(lua_State *L, int idx, int listing, struct provider_page *out,
                      struct cs_err *err)
{
    return pjson_page_read(L, idx, listing, &msgraph_page_keys, out, err);
}

/* Appends a dateTimeTimeZone in UTC. */
static int put_dt(struct buf *b, int64_t ms)
{
    char t[TIME_RFC3339_MAX];
    time_format_rfc3339(ms, t);
    /* "2026-01-02T09:00:00Z" -> Graph's zone-less dateTime */
    size_t n = strlen(t);
    if (n && t[n - 1] == 'Z')
        t[n - 1] = '\0';
    return buf_printf(b, "{\"dateTime\":\"%s\",\"timeZone\":\"UTC\"}", t);
}

int msgraph_event_body(const char *txid, const char *uid, const char *title,
                       int64_t start_ms, int64_t end_ms, const char *attendees_json,
                       struct buf *out)
{
    (void)attendees_json; /* attendees: not written to Graph yet (see docs) */
    int rc = buf_puts(out, "{\"subject\":");
    rc |= buf_json_strz(out, title ? title : "");
    rc |= buf_puts(out, ",\"start\":");
    rc |= put_dt(out, start_ms);
    rc |= buf_puts(out, ",\"end\":");
    rc |= put_dt(out, end_ms);
    if (txid) {
        rc |= buf_puts(out, ",\"transactionId\":");
        rc |= buf_json_strz(out, txid);
    }
    if (uid) {
        rc |= buf_puts(out, ",\"singleValueExtendedProperties\":[{\"id\":\"" MSGRAPH_TAG_PROP
                            "\",\"value\":");
        rc |= buf_json_strz(out, uid);
        rc |= buf_puts(out, "}]");
    }
    rc |= buf_puts(out, "}");
    return rc ? -1 : 0;
}

static int put_orig(struct buf *b, int64_t ms)
{
    char t[TIME_RFC3339_MAX];
    time_format_rfc3339(ms, t);
    return buf_json_strz(b, t);
}

int msgraph_event_encode(const struct provider_event *e, enum provider_encode how,
                         struct buf *b)
{
    buf_reset(b);
    int occ = e->series_id && e->original_start_ms != PROVIDER_NO_TIME;
    if (how == PROVIDER_ENC_STUB) {
        /* an @removed stub; an occurrence keeps what its bookings follow */
        if (buf_puts(b, "{\"@odata.type\":\"#microsoft.graph.event\",\"id\":") ||
            buf_json_strz(b, e->id) ||
            buf_puts(b, ",\"@removed\":{\"reason\":\"deleted\"},\"isCancelled\":true") ||
            (occ && (buf_puts(b, ",\"seriesMasterId\":") || buf_json_strz(b, e->series_id) ||
                     buf_puts(b, ",\"originalStart\":") || put_orig(b, e->original_start_ms))))
            return -1;
        return buf_puts(b, "}");
    }
    if (buf_puts(b, "{\"@odata.type\":\"#microsoft.graph.event\",\"id\":") ||
        buf_json_strz(b, e->id) ||
        buf_puts(b, ",\"@odata.etag\":") || buf_json_strz(b, e->etag) ||
        buf_printf(b, ",\"isCancelled\":%s",
                   e->status && strcmp(e->status, "cancelled") == 0 ? "true" : "false") ||
        buf_puts(b, ",\"subject\":") || buf_json_strz(b, e->title) ||
        buf_puts(b, ",\"createdDateTime\":") || buf_json_strz(b, e->created) ||
        buf_puts(b, ",\"lastModifiedDateTime\":") || buf_json_strz(b, e->updated) ||
        buf_puts(b, ",\"seriesMasterId\":") || buf_json_strz(b, e->series_id) ||
        buf_printf(b, ",\"type\":\"%s\"", e->series_id ? "occurrence" : "singleInstance") ||
        buf_printf(b, ",\"isAllDay\":%s", e->all_day ? "true" : "false"))
        return -1;
    if (occ && (buf_puts(b, ",\"originalStart\":") || put_orig(b, e->original_start_ms)))
        return -1;
    if (e->start_ms != PROVIDER_NO_TIME &&
        (buf_puts(b, ",\"start\":") || put_dt(b, e->start_ms)))
        return -1;
    if (e->end_ms != PROVIDER_NO_TIME && (buf_puts(b, ",\"end\":") || put_dt(b, e->end_ms)))
        return -1;
    if (e->booking_tag &&
        (buf_puts(b, ",\"singleValueExtendedProperties\":[{\"id\":\"" MSGRAPH_TAG_PROP
                     "\",\"value\":") ||
         buf_json_strz(b, e->booking_tag) || buf_puts(b, "}]")))
        return -1;
    return buf_puts(b, "}");
}

int msgraph_classify(enum provider_op op, long status, const char *reason)
{
    if (!reason)
        reason = "";
    if (msgraph_retryable(status, reason) || status == 401)
        return PROVIDER_TRANSIENT;
    /* a dead delta link: 410 SyncStateNotFound / resyncRequired */
    if (op == PROVIDER_OP_LIST &&
        (status == 410 || strcasecmp(reason, "SyncStateNotFound") == 0 ||
         strcasecmp(reason, "resyncRequired") == 0))
        return PROVIDER_RESYNC;
    /* a write Graph refuses as conflicting (ErrorIrresolvableConflict) */
    if (status == 409 && (op == PROVIDER_OP_READ || op == PROVIDER_OP_WRITE))
        return PROVIDER_CONFLICT;
    return phttp_status_class(op, status);
}
