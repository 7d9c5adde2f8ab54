/* fuzz_google_event -- decoding and normalising what Google sends.
 *
 * The bytes are decoded with json_decode (the one decoder) and handed to
 * google_event_parse as one event, and, when they hold an "items" array (an
 * events.list page), item by item as sync.c does. The same bytes then go
 * to google_parse_error and google_parse_retry_after.
 *
 * Properties of a parsed event: the stack is left as found; an id is set,
 * non-empty and within SYNC_ID_MAX; strings are NUL-terminated within their
 * caps; a non-cancelled event has a start and an end; an all-day start is
 * midnight UTC; a series id taken from the id is a prefix of it; an event
 * never differs from itself. google_parse_error leaves NUL-terminated,
 * control-free text within the caps; a Retry-After wait lies in
 * [0, GOOGLE_RETRY_AFTER_MAX_MS].
 */
#include "fuzz.h"
#include "provider/google/google.h"
#include "json.h"
#include "log.h"
#include "sync.h"

#include <lua.h>
#include <string.h>

static lua_State *L;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_ERROR); /* sync.tag_ignored warnings: noise here */
    L = json_state();
    if (!L)
        abort();
    return 0;
}

static void check_str(const char *s, size_t max)
{
    if (s)
        FUZZ_CHECK(strnlen(s, max + 1) <= max);
}

static void one_event(int idx)
{
    struct sync_event *ev = malloc(sizeof *ev);
    struct cs_err err = {{0}};
    if (!ev)
        return;
    int top = lua_gettop(L);
    int rc = google_event_parse(L, idx, ev, &err);
    FUZZ_CHECK(lua_gettop(L) == top);
    if (rc != 0) {
        /* PROVIDER_EVENT_SKIP: an id Google cannot have issued (issue 21) */
        FUZZ_CHECK((rc == -1 || rc == PROVIDER_EVENT_SKIP) && err.msg[0] != '\0');
        free(ev);
        return;
    }
    FUZZ_CHECK(ev->id && ev->id[0] != '\0');
    /* what is read is fit for a URL path: never ".", "..", '/', '%' ... */
    FUZZ_CHECK(id_valid_event(ev->id, strlen(ev->id)));
    FUZZ_CHECK(!ev->series_id || id_valid_event(ev->series_id, strlen(ev->series_id)));
    check_str(ev->id, SYNC_ID_MAX);
    check_str(ev->etag, SYNC_ETAG_MAX);
    check_str(ev->series_id, SYNC_ID_MAX);
    check_str(ev->booking_tag, SYNC_TAG_MAX);
    check_str(ev->status, 32);
    check_str(ev->updated, 64);
    check_str(ev->created, PROVIDER_CREATED_MAX);
    FUZZ_CHECK(ev->status != NULL);
    if (ev->title) {
        /* cut at a character boundary, never past the cap */
        size_t tl = strlen(ev->title);
        if (ev->title == ev->title_buf_)
            FUZZ_CHECK(tl <= SYNC_TITLE_MAX);
    }
    if (strcmp(ev->status, "cancelled") != 0)
        FUZZ_CHECK(ev->start_ms != SYNC_NO_TIME && ev->end_ms != SYNC_NO_TIME);
    if (ev->all_day && ev->start_ms != SYNC_NO_TIME)
        FUZZ_CHECK(ev->start_ms % 86400000 == 0);
    if (ev->series_id == ev->series_buf_) {
        size_t sl = strlen(ev->series_id);
        FUZZ_CHECK(sl > 0 && strncmp(ev->series_id, ev->id, sl) == 0 &&
                   ev->id[sl] == '_');
    }
    FUZZ_CHECK(sync_event_differs(ev, ev) == 0);
    free(ev);
}

static void events(const uint8_t *data, size_t size)
{
    struct cs_err err = {{0}};
    int top = lua_gettop(L);
    if (json_decode(L, (const char *)data, size, &err)) {
        FUZZ_CHECK(lua_gettop(L) == top);
        return;
    }
    FUZZ_CHECK(lua_gettop(L) == top + 1);
    one_event(-1);
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "items");
        if (lua_istable(L, -1)) {
            lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
            for (lua_Integer i = 1; i <= n && i <= 64; i++) {
                lua_rawgeti(L, -1, i);
                one_event(-1);
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 1);
    }
    FUZZ_CHECK(lua_gettop(L) == top + 1);
    lua_settop(L, top);
}

static void errors(const uint8_t *data, size_t size)
{
    char reason[64], message[256];
    memset(reason, 'X', sizeof reason);
    memset(message, 'X', sizeof message);
    int top = lua_gettop(L);
    int rc = google_parse_error((const char *)data, size, reason, sizeof reason,
                                message, sizeof message);
    FUZZ_CHECK(lua_gettop(L) == top);
    FUZZ_CHECK(rc == 0 || rc == -1);
    size_t rl = strnlen(reason, sizeof reason), ml = strnlen(message, sizeof message);
    FUZZ_CHECK(rl < sizeof reason && ml < sizeof message);
    if (rc == -1)
        FUZZ_CHECK(rl == 0 && ml == 0);
    for (size_t i = 0; i < rl; i++)
        FUZZ_CHECK((unsigned char)reason[i] >= 0x20);
    for (size_t i = 0; i < ml; i++)
        FUZZ_CHECK((unsigned char)message[i] >= 0x20);
    /* a tiny cap must still be honoured */
    char r1[1], m1[2];
    google_parse_error((const char *)data, size, r1, sizeof r1, m1, sizeof m1);
    FUZZ_CHECK(r1[0] == '\0' && strnlen(m1, 2) < 2);
}

static void retry_after(const uint8_t *data, size_t size)
{
    /* a fixed wall clock: 2026-11-24T09:00:00Z */
    int64_t wait = -7;
    if (google_parse_retry_after((const char *)data, size, 1795510800000LL, &wait) == 0)
        FUZZ_CHECK(wait >= 0 && wait <= GOOGLE_RETRY_AFTER_MAX_MS);
    else
        FUZZ_CHECK(wait == -7);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    events(data, size);
    errors(data, size);
    retry_after(data, size);
    return 0;
}
