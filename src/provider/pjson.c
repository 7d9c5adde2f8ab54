/* pjson.c -- the JSON reading the providers share (pjson.h): bounded
 * strings, UTF-8 cuts, the page envelope, an event's error text.
 */
#include "provider/pjson.h"

#include "json.h"

#include <stdio.h>
#include <string.h>

int pjson_str_bounded(lua_State *L, int obj, const char *key, size_t max,
                      const char **out, struct cs_err *err)
{
    size_t n;
    int r = json_get_str(L, obj, key, out, &n, err);
    if (r == 1 && (n > max || strlen(*out) != n)) {
        cs_err_set(err, "'%s' longer than %zu bytes or holding NUL", key, max);
        r = -1;
    }
    if (r != 1)
        *out = NULL;
    return r;
}

const char *pjson_cut_utf8(const char *s, size_t n, char *dst, size_t max)
{
    if (n <= max)
        return s;
    size_t k = max;
    while (k > 0 && ((unsigned char)s[k] & 0xC0) == 0x80)
        k--;
    memcpy(dst, s, k);
    dst[k] = '\0';
    return dst;
}

int pjson_page_read(lua_State *L, int idx, int listing, const struct pjson_page_keys *k,
                    struct provider_page *out, struct cs_err *err)
{
    idx = lua_absindex(L, idx);
    out->items = out->n = 0;
    out->next_page = out->next_cursor = NULL;
    if (pjson_str_bounded(L, idx, k->next_page, PROVIDER_CURSOR_MAX, &out->next_page,
                          err) < 0)
        return -1;
    if (listing) {
        if (pjson_str_bounded(L, idx, k->next_cursor, PROVIDER_CURSOR_MAX,
                              &out->next_cursor, err) < 0)
            return -1;
        if (!out->next_page == !out->next_cursor)
            return cs_err_set(err, "page has %s %s and %s",
                              out->next_page ? "both" : "neither", k->next_page,
                              k->next_cursor);
    }
    int r = json_get_obj(L, idx, k->items, err);
    if (r <= 0)
        return r;
    int items = lua_gettop(L);
    /* cjson decodes objects and arrays to tables: only 1..n keys make an
     * array */
    lua_Unsigned n = lua_rawlen(L, items), keys = 0;
    lua_pushnil(L);
    while (lua_next(L, items)) {
        lua_pop(L, 1);
        keys++;
    }
    if (keys != n || n > PROVIDER_PAGE_MAX) {
        lua_pop(L, 1);
        return cs_err_set(err, "'%s' is not an array", k->items);
    }
    out->items = items;
    out->n = (int)n;
    return 0;
}

int pjson_page_top(int listing, const struct pjson_page_keys *k, struct provider_page *out,
                   struct cs_err *err)
{
    lua_State *L = json_state();
    int top = lua_gettop(L);
    if (pjson_page_read(L, top, listing, k, out, err)) {
        lua_settop(L, top - 1);
        return PROVIDER_MALFORMED;
    }
    return PROVIDER_OK;
}

int pjson_event_begin(lua_State *L, int idx, struct provider_event *ev,
                      int (*valid_id)(const char *s, size_t n), const char *who,
                      struct cs_err *err)
{
    const char *s;
    size_t n;
    int r;
    ev->id = ev->etag = ev->status = ev->series_id = ev->updated = NULL;
    ev->title = ev->booking_tag = ev->created = NULL;
    ev->attendees = ev->conference_url = NULL;
    ev->start_ms = ev->end_ms = ev->original_start_ms = PROVIDER_NO_TIME;
    ev->all_day = ev->bare = 0;
    if (!lua_istable(L, idx))
        return cs_err_set(err, "event is not an object");
    if ((r = json_get_str(L, idx, "id", &s, &n, err)) < 0)
        return -1;
    if (r == 0)
        return cs_err_set(err, "event without an 'id'");
    if (!valid_id(s, n)) {
        cs_err_set(err, "event id of %zu bytes is not one %s can have issued", n, who);
        return PROVIDER_EVENT_SKIP;
    }
    ev->id = s;
    return 0;
}

int pjson_event_error(struct cs_err *err, const char *id)
{
    char m[sizeof err->msg];
    snprintf(m, sizeof m, "%s", err ? err->msg : "");
    return cs_err_set(err, "event %.64s: %.400s", id ? id : "?", m);
}
