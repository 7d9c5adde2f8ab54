/* parse.c -- Google's JSON in the shared shapes: an event resource as a
 * struct provider_event (instance ids "<series>_<UTC>Z" / "_<YYYYMMDD>"
 * naming an occurrence's series and original start, bare cancelled stubs),
 * the calendar#events page envelope, the event body calsync writes, the
 * stub and event JSON handed to policies for engine-made changes, and
 * Google's status and reason codes as provider error classes. Pure: no
 * network, no database. See docs/internals/google.md.
 */
#include "provider/google/google.h"
#include "provider/pjson.h"

#include "json.h"
#include "log.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

/* ========================================================= event parsing */

/* 1 when the object at idx has no `key` at all. */
static int field_absent(lua_State *L, int idx, const char *key)
{
    lua_pushstring(L, key);
    int absent = lua_rawget(L, idx) == LUA_TNIL;
    lua_pop(L, 1);
    return absent;
}


static int all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

int google_split_instance_id(const char *id, size_t n, size_t *series_len,
                           int64_t *original_start_ms, int *all_day)
{
    const char *us = NULL;
    for (size_t i = n; i > 0; i--) {
        if (id[i - 1] == '_') {
            us = id + i - 1;
            break;
        }
    }
    if (!us || us == id)
        return 0;
    const char *s = us + 1;
    size_t sl = n - (size_t)(s - id);
    char iso[32];
    if (sl == 8 && all_digits(s, 8)) {
        snprintf(iso, sizeof iso, "%.4s-%.2s-%.2s", s, s + 4, s + 6);
        if (time_parse_date(iso, strlen(iso), original_start_ms))
            return 0;
        *all_day = 1;
    } else if (sl == 16 && all_digits(s, 8) && s[8] == 'T' && all_digits(s + 9, 6) &&
               s[15] == 'Z') {
        snprintf(iso, sizeof iso, "%.4s-%.2s-%.2sT%.2s:%.2s:%.2sZ", s, s + 4, s + 6,
                 s + 9, s + 11, s + 13);
        if (time_parse_rfc3339(iso, strlen(iso), original_start_ms))
            return 0;
        *all_day = 0;
    } else {
        return 0;
    }
    *series_len = (size_t)(us - id);
    return 1;
}

/* json_get_obj that also refuses a non-empty array (cjson decodes both
 * to tables). */
static int obj_field(lua_State *L, int obj, const char *key, struct cs_err *err)
{
    int r = json_get_obj(L, obj, key, err);
    if (r == 1 && lua_rawlen(L, -1) > 0) {
        lua_pop(L, 1);
        return cs_err_set(err, "'%s' must be an object, not an array", key);
    }
    return r;
}

/* Reads {dateTime} or {date} under key: 1 found, 0 absent, -1 error. */
static int time_field(lua_State *L, int ev, const char *key, int64_t *ms,
                      int *all_day, struct cs_err *err)
{
    const char *s;
    size_t n;
    int r = obj_field(L, ev, key, err);
    if (r <= 0)
        return r;
    int t = lua_gettop(L), rc = -1;
    if ((r = json_get_str(L, t, "dateTime", &s, &n, err)) < 0)
        goto done;
    if (r == 1) {
        if (n > 64 || time_parse_rfc3339(s, n, ms)) {
            cs_err_set(err, "'%s.dateTime' is not an RFC 3339 date-time", key);
            goto done;
        }
        *all_day = 0;
        rc = 1;
        goto done;
    }
    if ((r = json_get_str(L, t, "date", &s, &n, err)) < 0)
        goto done;
    if (r == 0 || n > 16 || time_parse_date(s, n, ms)) {
        cs_err_set(err, "'%s' needs a 'dateTime' or a 'date'", key);
        goto done;
    }
    *all_day = 1;
    rc = 1;
done:
    lua_settop(L, t - 1);
    return rc;
}

/* Appends the JSON string s (n bytes) to dst[*len], escaped; 0, or -1
 * when it does not fit in cap (dst[*len] unchanged then). */
static int put_json_str(char *dst, size_t cap, size_t *len, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t k = *len;
    if (k + 1 >= cap)
        return -1;
    dst[k++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (k + 7 >= cap)
            return -1;
        if (ch == '"' || ch == '\\') {
            dst[k++] = '\\';
            dst[k++] = (char)ch;
        } else if (ch < 0x20) {
            memcpy(dst + k, "\\u00", 4);
            k += 4;
            dst[k++] = hex[ch >> 4];
            dst[k++] = hex[ch & 15];
        } else {
            dst[k++] = (char)ch;
        }
    }
    if (k + 1 >= cap)
        return -1;
    dst[k++] = '"';
    *len = k;
    return 0;
}

/* Appends the text s to dst[*len]: 0, or -1 when it does not fit. */
static int put_raw(char *dst, size_t cap, size_t *len, const char *s)
{
    size_t n = strlen(s);
    if (*len + n >= cap)
        return -1;
    memcpy(dst + *len, s, n);
    *len += n;
    return 0;
}

/* attendees[] (email, responseStatus) as ev->attendees, in Google's
 * order. Entries without both strings, or with a response Google does not
 * document, are left out, as are those past PROVIDER_ATTENDEES_MAX: the
 * attendees are what a policy may look at, never a reason to refuse the
 * event. */
static void read_attendees(lua_State *L, int idx, struct provider_event *ev)
{
    static const char *const known[] = {"accepted", "declined", "tentative",
                                        "needsAction"};
    int top = lua_gettop(L);
    char *d = ev->attendees_buf_;
    size_t cap = sizeof ev->attendees_buf_, len = 1;
    int n = 0;
    lua_getfield(L, idx, "attendees");
    if (!lua_istable(L, -1))
        goto done;
    d[0] = '[';
    for (lua_Integer i = 1; i <= 1000; i++) {
        if (lua_rawgeti(L, top + 1, i) == LUA_TNIL)
            break;
        const char *email = NULL, *resp = NULL;
        size_t el = 0, rl = 0;
        if (lua_istable(L, -1)) {
            if (lua_getfield(L, -1, "email") == LUA_TSTRING)
                email = lua_tolstring(L, -1, &el);
            if (lua_getfield(L, -2, "responseStatus") == LUA_TSTRING)
                resp = lua_tolstring(L, -1, &rl);
        }
        int ok = 0;
        for (size_t k = 0; resp && k < sizeof known / sizeof known[0]; k++)
            ok |= strcmp(resp, known[k]) == 0;
        if (email && ok && el <= 320 && strlen(email) == el) {
            size_t save = len;
            if ((n && put_raw(d, cap, &len, ",")) || put_raw(d, cap, &len, "{\"email\":") ||
                put_json_str(d, cap, &len, email, el) ||
                put_raw(d, cap, &len, ",\"response\":") ||
                put_json_str(d, cap, &len, resp, rl) || put_raw(d, cap, &len, "}") ||
                len + 2 >= cap) {
                len = save; /* no room: the rest is left out */
                break;
            }
            n++;
        }
        lua_settop(L, top + 1);
    }
    if (n > 0) {
        d[len++] = ']';
        d[len] = '\0';
        ev->attendees = d;
    }
done:
    lua_settop(L, top);
}

int google_event_parse(lua_State *L, int idx, struct provider_event *ev,
                       struct cs_err *err)
{
    const char *s;
    size_t n;
    int r, ad_end = 0;
    int top = lua_gettop(L);
    idx = lua_absindex(L, idx);
    /* ids go back into URLs (events.get/patch/delete/instances): one that
     * Google cannot have issued ("..", "a/b", control bytes, over-long) is
     * skipped */
    if ((r = pjson_event_begin(L, idx, ev, id_valid_event, "Google", err)) != 0)
        return r;
    if (pjson_str_bounded(L, idx, "etag", PROVIDER_ETAG_MAX, &ev->etag, err) < 0 ||
        pjson_str_bounded(L, idx, "status", 32, &ev->status, err) < 0 ||
        pjson_str_bounded(L, idx, "updated", 64, &ev->updated, err) < 0 ||
        pjson_str_bounded(L, idx, "created", PROVIDER_CREATED_MAX, &ev->created, err) < 0 ||
        (r = json_get_str(L, idx, "recurringEventId", &ev->series_id, &n, err)) < 0)
        goto bad;
    if (r == 1 && !id_valid_event(ev->series_id, n)) {
        cs_err_set(err, "event %.64s: recurringEventId of %zu bytes is not one Google "
                   "can have issued", ev->id, n);
        lua_settop(L, top);
        return PROVIDER_EVENT_SKIP;
    }
    if (r == 0)
        ev->series_id = NULL;
    if (!ev->status)
        ev->status = "confirmed";
    int cancelled = strcmp(ev->status, "cancelled") == 0;
    /* {kind, etag, id, status} and nothing else: see provider_event.bare */
    ev->bare = cancelled && field_absent(L, idx, "recurringEventId") &&
               field_absent(L, idx, "originalStartTime");
    if ((r = json_get_str(L, idx, "summary", &s, &n, err)) < 0)
        goto bad;
    if (r == 1)
        ev->title = pjson_cut_utf8(s, strnlen(s, n), ev->title_buf_, PROVIDER_TITLE_MAX);
    if ((r = time_field(L, idx, "start", &ev->start_ms, &ev->all_day, err)) < 0 ||
        time_field(L, idx, "end", &ev->end_ms, &ad_end, err) < 0)
        goto bad;
    if (!cancelled && (ev->start_ms == PROVIDER_NO_TIME || ev->end_ms == PROVIDER_NO_TIME))
        return cs_err_set(err, "event %.64s: no 'start' or 'end'", ev->id);
    int orig_ad = 0;
    if (time_field(L, idx, "originalStartTime", &ev->original_start_ms, &orig_ad,
                   err) < 0)
        goto bad;
    /* extendedProperties.private.calsync_booking_uid */
    if ((r = obj_field(L, idx, "extendedProperties", err)) < 0)
        goto bad;
    if (r == 1) {
        if ((r = obj_field(L, -1, "private", err)) < 0)
            goto bad;
        if (r == 1) {
            if ((r = json_get_str(L, -1, "calsync_booking_uid", &s, &n, err)) < 0)
                goto bad;
            if (r == 1) {
                if (n <= PROVIDER_TAG_MAX && strlen(s) == n)
                    ev->booking_tag = s;
                else
                    log_warn("sync.tag_ignored", "event_id=%s len=%zu", log_q(ev->id), n);
            }
        }
        lua_settop(L, top);
    }
    read_attendees(L, idx, ev);
    /* hangoutLink: the Meet link (read-only, set once the conference
     * exists); anything but a bounded https URL is left out */
    if (json_get_str(L, idx, "hangoutLink", &s, &n, NULL) == 1 && n <= 512 &&
        strlen(s) == n && strncmp(s, "https://", 8) == 0)
        ev->conference_url = s;
    /* a stub carries its series only in its id: "<series>_<suffix>" */
    if (!ev->series_id || ev->original_start_ms == PROVIDER_NO_TIME) {
        size_t sl;
        int64_t o;
        int ad;
        if ((cancelled || ev->series_id) &&
            google_split_instance_id(ev->id, strlen(ev->id), &sl, &o, &ad) && sl > 0 &&
            (!ev->series_id || (strlen(ev->series_id) == sl &&
                                memcmp(ev->series_id, ev->id, sl) == 0))) {
            memcpy(ev->series_buf_, ev->id, sl);
            ev->series_buf_[sl] = '\0';
            ev->series_id = ev->series_buf_;
            if (ev->original_start_ms == PROVIDER_NO_TIME)
                ev->original_start_ms = o;
        }
    }
    lua_settop(L, top);
    return 0;
bad:
    lua_settop(L, top);
    return pjson_event_error(err, ev->id);
}

/* ==================================================== the page envelope */

const struct pjson_page_keys google_page_keys = {"nextPageToken", "nextSyncToken",
                                                 "items"};

/* ============================================================ writing */

int google_event_body(const char *id, const char *uid, const char *title,
                      int64_t start_ms, int64_t end_ms,
                      const char *attendees_json, struct buf *out)
{
    struct provider_write w = {.key = id, .booking_tag = uid, .title = title,
                               .start_ms = start_ms, .end_ms = end_ms,
                               .attendees_json = attendees_json};
    return google_event_write(&w, out);
}

/* Appends the attendees as Google takes them: the booking's form
 * [{"email","name"?,"optional"?}] (displayName accepted too: jobs queued
 * before the booking kept attendees) to {"email","displayName"?,
 * "optional"?}. The API validated the text; anything else is skipped.
 * 0 or -1 (memory). */
static int put_attendees(struct buf *out, const char *json)
{
    lua_State *L = json_state();
    if (!L)
        return -1;
    int top = lua_gettop(L), rc = 0;
    if (json_decode(L, json, strlen(json), NULL) || !lua_istable(L, -1)) {
        lua_settop(L, top);
        return buf_puts(out, ",\"attendees\":[]");
    }
    rc |= buf_puts(out, ",\"attendees\":[");
    int n = 0;
    for (lua_Integer i = 1; i <= (lua_Integer)lua_rawlen(L, -1); i++) {
        lua_rawgeti(L, -1, i);
        const char *email = NULL, *name = NULL;
        int opt = 0, has_opt = 0;
        if (lua_istable(L, -1) && json_get_str(L, -1, "email", &email, NULL, NULL) == 1) {
            if (json_get_str(L, -1, "name", &name, NULL, NULL) != 1 &&
                json_get_str(L, -1, "displayName", &name, NULL, NULL) != 1)
                name = NULL;
            has_opt = json_get_bool(L, -1, "optional", &opt, NULL) == 1;
            rc |= buf_puts(out, n++ ? ",{\"email\":" : "{\"email\":");
            rc |= buf_json_strz(out, email);
            if (name) {
                rc |= buf_puts(out, ",\"displayName\":");
                rc |= buf_json_strz(out, name);
            }
            if (has_opt)
                rc |= buf_puts(out, opt ? ",\"optional\":true" : ",\"optional\":false");
            rc |= buf_puts(out, "}");
        }
        lua_pop(L, 1);
    }
    rc |= buf_puts(out, "]");
    lua_settop(L, top);
    return rc ? -1 : 0;
}

int google_event_write(const struct provider_write *w, struct buf *out)
{
    char s[TIME_RFC3339_MAX], e[TIME_RFC3339_MAX];
    time_format_rfc3339(w->start_ms, s);
    time_format_rfc3339(w->end_ms, e);
    int rc = buf_puts(out, "{");
    if (w->key)
        rc |= buf_printf(out, "\"id\":\"%s\",", w->key);
    rc |= buf_puts(out, "\"summary\":");
    rc |= buf_json_strz(out, w->title);
    /* With a zone, Google shows the event in it; without one, in the
     * calendar's own zone (its default for single events) -- never UTC
     * unless asked, which is what hosts saw before (issue 16). The instant
     * is the same either way: dateTime carries its offset. */
    for (int i = 0; i < 2; i++) {
        rc |= buf_printf(out, ",\"%s\":{\"dateTime\":\"%s\"", i ? "end" : "start",
                         i ? e : s);
        if (w->time_zone) {
            rc |= buf_puts(out, ",\"timeZone\":");
            rc |= buf_json_strz(out, w->time_zone);
        }
        rc |= buf_puts(out, "}");
    }
    if (w->booking_tag) {
        rc |= buf_puts(out, ",\"extendedProperties\":{\"private\":{\"calsync_booking_uid\":");
        rc |= buf_json_strz(out, w->booking_tag);
        rc |= buf_puts(out, "}}");
    }
    if (w->description) {
        rc |= buf_puts(out, ",\"description\":");
        rc |= buf_json_strz(out, w->description);
    }
    if (w->location) {
        rc |= buf_puts(out, ",\"location\":");
        rc |= buf_json_strz(out, w->location);
    }
    if (w->attendees_json)
        rc |= put_attendees(out, w->attendees_json);
    if (w->restore) /* Google keeps a deleted event under its id: this restores it */
        rc |= buf_puts(out, ",\"status\":\"confirmed\"");
    rc |= buf_puts(out, "}");
    return rc ? -1 : 0;
}

int google_event_body_meet(struct buf *out, const char *request_id)
{
    /* google_event_body ends the object with its one closing brace */
    if (out->len == 0 || out->data[out->len - 1] != '}')
        return -1;
    out->len--;
    int rc = buf_puts(out, ",\"conferenceData\":{\"createRequest\":{\"requestId\":");
    rc |= buf_json_strz(out, request_id);
    rc |= buf_puts(out, ",\"conferenceSolutionKey\":{\"type\":\"hangoutsMeet\"}}}}");
    return rc ? -1 : 0;
}

/* Appends {"dateTime": ...} or {"date": ...} for ms. 0 or -1 (memory). */
static int put_time(struct buf *b, int64_t ms, int all_day)
{
    char t[TIME_RFC3339_MAX];
    time_format_rfc3339(ms, t);
    if (all_day)
        return buf_printf(b, "{\"date\":\"%.10s\"}", t);
    return buf_printf(b, "{\"dateTime\":\"%s\"}", t);
}

/* A deletion as Google's full stub: id, status and, for an occurrence,
 * recurringEventId and originalStartTime (what its bookings follow). */
static int encode_stub(const struct provider_event *e, struct buf *b)
{
    int occ = e->series_id && e->original_start_ms != PROVIDER_NO_TIME;
    if (buf_puts(b, "{\"id\":") || buf_json_strz(b, e->id) ||
        buf_puts(b, ",\"status\":\"cancelled\"") ||
        (occ && (buf_puts(b, ",\"recurringEventId\":") ||
                 buf_json_strz(b, e->series_id) ||
                 buf_puts(b, ",\"originalStartTime\":") ||
                 put_time(b, e->original_start_ms, e->all_day))))
        return -1;
    return buf_puts(b, "}");
}

/* A mirror row as an event resource (what the policy sees as the event of
 * a re-linked occurrence). */
static int encode_event(const struct provider_event *e, struct buf *b)
{
    if (buf_puts(b, "{\"kind\":\"calendar#event\",\"id\":") || buf_json_strz(b, e->id) ||
        buf_puts(b, ",\"etag\":") || buf_json_strz(b, e->etag) ||
        buf_puts(b, ",\"status\":") || buf_json_strz(b, e->status) ||
        buf_puts(b, ",\"summary\":") || buf_json_strz(b, e->title) ||
        buf_puts(b, ",\"created\":") || buf_json_strz(b, e->created) ||
        buf_puts(b, ",\"updated\":") || buf_json_strz(b, e->updated) ||
        buf_puts(b, ",\"recurringEventId\":") || buf_json_strz(b, e->series_id) ||
        buf_puts(b, ",\"originalStartTime\":") ||
        put_time(b, e->original_start_ms, e->all_day) ||
        buf_puts(b, ",\"start\":") || put_time(b, e->start_ms, e->all_day) ||
        buf_puts(b, ",\"end\":") || put_time(b, e->end_ms, e->all_day))
        return -1;
    if (e->booking_tag &&
        (buf_puts(b, ",\"extendedProperties\":{\"private\":{\"calsync_booking_uid\":") ||
         buf_json_strz(b, e->booking_tag) || buf_puts(b, "}}")))
        return -1;
    return buf_puts(b, "}");
}

int google_event_encode(const struct provider_event *ev, enum provider_encode how,
                        struct buf *out)
{
    buf_reset(out);
    return how == PROVIDER_ENC_STUB ? encode_stub(ev, out) : encode_event(ev, out);
}

/* ====================================================== error classes */

int google_classify(enum provider_op op, long status, const char *reason)
{
    if (!reason)
        reason = "";
    /* retried within the call already (google_retryable) and still
     * failing, or a 401 after the one refresh (the new token expired or
     * was revoked meanwhile: a dead credential shows as invalid_grant) */
    if (google_retryable(status, reason) || status == 401)
        return PROVIDER_TRANSIENT;
    /* "Calendar usage limits exceeded": the calendar is read-only for
     * hours (writes refused, reads work), or the day's quota is spent.
     * Both clear by themselves (DESIGN §2 Quota): transient for every
     * call, so a write waits in the queue's backoff instead of failing and
     * a listing leaves the calendar active. Not retried inside the call
     * (google_retryable): seconds of in-call retries cannot outwait hours,
     * and would hold a writer thread that other calendars share. */
    if (status == 403 && (strcmp(reason, "quotaExceeded") == 0 ||
                          strcmp(reason, "dailyLimitExceeded") == 0))
        return PROVIDER_TRANSIENT;
    /* a dead sync token: 410 fullSyncRequired, or 400 invalid */
    if (op == PROVIDER_OP_LIST &&
        (status == 410 || (status == 400 && strcmp(reason, "invalid") == 0)))
        return PROVIDER_RESYNC;
    /* the rest is what the status means to every provider: Google refused
     * the calendar itself (400/403/404 to a listing), a channel Google no
     * longer knows is stopped (404), 412 a moved-on etag ... */
    return phttp_status_class(op, status);
}
