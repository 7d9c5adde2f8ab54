/* fuzz_json_api -- the admin API's request body decoding.
 *
 * api.c's body_object/str_field/time_field/id_field/attendees_field are
 * static, so this target replays them through the public pieces they are
 * built from (json_decode_object, json_only_keys, json_get_*,
 * json_encode_value, time_parse_rfc3339), in the order the handlers call
 * them. The first input byte picks the handler, the rest is the body.
 *
 * Properties: the decoder's Lua stack is back where it started after every
 * getter (a leak there grows the per-thread state forever); a decode
 * failure pushes nothing; a re-encoded `settings` object decodes again.
 * Then the same bytes go through buf_json_str: the output always decodes
 * to a string, equal to the input when the input is valid UTF-8.
 */
#include "booking.h"
#include "calendar.h"
#include "fuzz.h"
#include "json.h"
#include "util.h"

#include <lua.h>
#include <string.h>

static lua_State *L;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    L = json_state();
    if (!L)
        abort();
    return 0;
}

/* ---- the handlers' field readers, as api.c writes them ---- */

static int str_field(const char *key, size_t max, int required, const char **out)
{
    struct cs_err err;
    size_t n = 0;
    int top = lua_gettop(L);
    int r = json_get_str(L, -1, key, out, &n, &err);
    FUZZ_CHECK(lua_gettop(L) == top);
    if (r < 0 || (r == 0 && required))
        return -1;
    if (r == 1) {
        FUZZ_CHECK(*out != NULL && (*out)[n] == '\0');
        if (n > max || strlen(*out) != n)
            return -1;
    }
    if (r == 0)
        *out = NULL;
    return r;
}

static int time_field(const char *key, int required, int64_t *ms)
{
    const char *s;
    int r = str_field(key, 64, required, &s);
    if (r <= 0)
        return r;
    return time_parse_rfc3339(s, strlen(s), ms) ? -1 : 1;
}

static int id_field(const char *key, int64_t *id)
{
    struct cs_err err;
    int top = lua_gettop(L);
    lua_getfield(L, -1, key);
    int t = lua_type(L, -1);
    lua_pop(L, 1);
    int r;
    if (t == LUA_TSTRING) {
        const char *s;
        r = json_get_str(L, -1, key, &s, NULL, &err);
        if (r == 1 && (parse_i64(s, id) || *id <= 0))
            r = -1;
    } else {
        r = json_get_int(L, -1, key, id, &err);
        if (r == 1 && *id <= 0)
            r = -1;
    }
    FUZZ_CHECK(lua_gettop(L) == top);
    return r == 1 ? 0 : -1;
}

static int attendees_field(struct buf *out)
{
    struct cs_err err;
    int top = lua_gettop(L);
    lua_getfield(L, -1, "attendees");
    int rc = -1;
    if (lua_isnil(L, -1) || lua_islightuserdata(L, -1)) {
        rc = 0;
        goto done;
    }
    size_t n = lua_istable(L, -1) ? lua_rawlen(L, -1) : 0, keys = 0;
    if (lua_istable(L, -1)) {
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            lua_pop(L, 1);
            keys++;
        }
    }
    if (!lua_istable(L, -1) || keys != n || n > 100)
        goto done;
    static const char *const allowed[] = {"email", "displayName", "optional", NULL};
    buf_puts(out, "[");
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i);
        const char *email = NULL, *name = NULL;
        size_t el = 0, nl = 0;
        int opt = 0, ro;
        int t2 = lua_gettop(L);
        if (!lua_istable(L, -1) || json_only_keys(L, -1, allowed, &err) ||
            json_get_str(L, -1, "email", &email, &el, &err) != 1 || el == 0 ||
            el > 320 || !strchr(email, '@') || strlen(email) != el ||
            json_get_str(L, -1, "displayName", &name, &nl, &err) < 0 || nl > 256 ||
            (ro = json_get_bool(L, -1, "optional", &opt, &err)) < 0) {
            FUZZ_CHECK(lua_gettop(L) == t2);
            lua_pop(L, 1);
            buf_reset(out);
            goto done;
        }
        FUZZ_CHECK(lua_gettop(L) == t2);
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
    FUZZ_CHECK(lua_gettop(L) == top);
    return rc;
}

/* body_object(): decode, require an object, refuse unknown keys. */
static int body_object(const char *body, size_t len, const char *const *allowed)
{
    struct cs_err err;
    int top = lua_gettop(L);
    if (len == 0)
        return -1;
    if (json_decode_object(L, body, len, &err)) {
        FUZZ_CHECK(lua_gettop(L) == top);
        FUZZ_CHECK(err.msg[0] != '\0');
        return -1;
    }
    FUZZ_CHECK(lua_gettop(L) == top + 1 && lua_istable(L, -1));
    if (allowed && json_only_keys(L, -1, allowed, &err)) {
        FUZZ_CHECK(lua_gettop(L) == top + 1);
        return -1;
    }
    FUZZ_CHECK(lua_gettop(L) == top + 1);
    return 0;
}

static void credentials(const char *body, size_t len)
{
    static const char *const allowed[] = {"provider", "refresh_token",
                                          "access_token", "expires_at", NULL};
    const char *provider, *refresh, *access;
    int64_t expires = 0;
    if (body_object(body, len, allowed))
        return;
    (void)(str_field("provider", 32, 1, &provider) < 0 ||
           str_field("refresh_token", CRED_TOKEN_MAX, 1, &refresh) < 0 ||
           str_field("access_token", CRED_TOKEN_MAX, 0, &access) < 0 ||
           time_field("expires_at", 0, &expires) < 0);
}

static void calendars(const char *body, size_t len)
{
    static const char *const allowed[] = {"credential_id", "external_id",
                                          "policy", "settings", NULL};
    struct cs_err err;
    int64_t cred;
    const char *ext, *policy;
    if (body_object(body, len, allowed))
        return;
    if (id_field("credential_id", &cred) ||
        str_field("external_id", CAL_EXTERNAL_ID_MAX, 1, &ext) < 0 ||
        str_field("policy", CAL_POLICY_NAME_MAX, 0, &policy) < 0)
        return;
    int top = lua_gettop(L);
    int r = json_get_obj(L, -1, "settings", &err);
    FUZZ_CHECK(lua_gettop(L) == top + (r == 1));
    if (r == 1) {
        struct buf s;
        buf_init(&s);
        if (json_encode_value(L, -1, &s, &err) == 0) {
            FUZZ_CHECK(lua_gettop(L) == top + 1);
            /* what is stored must read back as JSON */
            FUZZ_CHECK(json_decode(L, s.data ? s.data : "", s.len, &err) == 0);
            lua_pop(L, 1);
        }
        FUZZ_CHECK(lua_gettop(L) == top + 1);
        lua_pop(L, 1);
        buf_free(&s);
    }
}

static void bookings_create(const char *body, size_t len)
{
    static const char *const allowed[] = {"uid", "calendar_id", "title", "start",
                                          "end", "event_id", "original_start",
                                          "attendees", NULL};
    const char *uid, *title, *event_id;
    int64_t cal, start, end, orig;
    if (body_object(body, len, allowed))
        return;
    if (str_field("uid", BOOKING_UID_MAX, 1, &uid) < 0 || id_field("calendar_id", &cal) ||
        str_field("title", BOOKING_TITLE_MAX, 1, &title) < 0 ||
        time_field("start", 1, &start) < 0 || time_field("end", 1, &end) < 0 ||
        str_field("event_id", BOOKING_EVENT_ID_MAX, 0, &event_id) < 0 ||
        time_field("original_start", 0, &orig) < 0)
        return;
    struct buf att;
    buf_init(&att);
    if (attendees_field(&att) == 0 && att.len) {
        /* what Google will be sent must be JSON */
        struct cs_err err;
        FUZZ_CHECK(json_decode(L, att.data, att.len, &err) == 0);
        lua_pop(L, 1);
    }
    buf_free(&att);
}

static void bookings_patch(const char *body, size_t len)
{
    static const char *const allowed[] = {"start", "end", "title", NULL};
    int64_t start, end;
    const char *title;
    if (body_object(body, len, allowed))
        return;
    int rs = time_field("start", 0, &start);
    int re = rs < 0 ? -1 : time_field("end", 0, &end);
    (void)(re < 0 ? -1 : str_field("title", BOOKING_TITLE_MAX, 0, &title));
}

static void bookings_cancel(const char *body, size_t len)
{
    static const char *const allowed[] = {"reason", NULL};
    const char *reason;
    size_t i = 0;
    while (i < len && body[i] && strchr(" \t\r\n", body[i]))
        i++;
    if (i == len)
        return; /* empty body: an empty table, nothing to read */
    if (body_object(body, len, allowed))
        return;
    (void)str_field("reason", BOOKING_REASON_MAX, 0, &reason);
}

/* ---- buf_json_str ---- */

static int valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i], len, cp;
        if (c < 0x80) { i++; continue; }
        if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
        else return 0;
        if (i + len > n)
            return 0;
        for (unsigned k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

static void json_str(const uint8_t *data, size_t size)
{
    struct buf b;
    struct cs_err err;
    buf_init(&b);
    if (buf_json_str(&b, (const char *)data, size) != 0) {
        buf_free(&b);
        return;
    }
    int top = lua_gettop(L);
    FUZZ_CHECK(json_decode(L, b.data, b.len, &err) == 0);
    FUZZ_CHECK(lua_type(L, -1) == LUA_TSTRING);
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    if (valid_utf8(data, size))
        FUZZ_CHECK(n == size && memcmp(s, data, size) == 0);
    else
        FUZZ_CHECK(valid_utf8((const unsigned char *)s, n));
    lua_settop(L, top);
    buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    int top = lua_gettop(L);
    const char *body = (const char *)data + 1;
    size_t len = size - 1;
    switch (data[0] % 5) {
    case 0: credentials(body, len); break;
    case 1: calendars(body, len); break;
    case 2: bookings_create(body, len); break;
    case 3: bookings_patch(body, len); break;
    default: bookings_cancel(body, len); break;
    }
    /* handlers end with ctx_close(): settop back to where they began */
    FUZZ_CHECK(lua_gettop(L) <= top + 1);
    lua_settop(L, top);
    json_str(data + 1, size - 1);
    return 0;
}
