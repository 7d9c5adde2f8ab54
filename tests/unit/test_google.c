/* test_google.c -- the pure logic of the Google provider (client and
 * parse.c: the event normalisation): error JSON -> (status, reason), what is retried, backoff
 * bounds, Retry-After, URL escaping, instance ids, and the event reader
 * (shapes as in the captured payloads of ../shared/fixtures/google,
 * written here by hand). */
#include "unit.h"

#include "calendar.h"
#include "config.h"
#include "provider/google/google.h"
#include "json.h"
#include "store/db.h"
#include "store/store.h"
#include "sync.h"

#include <curl/curl.h>
#include <lua.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static lua_State *L;

static int setup(void **state)
{
    (void)state;
    L = json_state();
    return L ? 0 : -1;
}

/* ------------------------------------------------------------ errors */

static void test_parse_error_api(void **state)
{
    (void)state;
    char reason[64], msg[256];
    const char *b410 =
        "{\"error\":{\"errors\":[{\"domain\":\"calendar\",\"reason\":\"fullSyncRequired\","
        "\"message\":\"Sync token is no longer valid, a full sync is required.\","
        "\"locationType\":\"parameter\",\"location\":\"syncToken\"}],\"code\":410,"
        "\"message\":\"Sync token is no longer valid, a full sync is required.\"}}";
    assert_int_equal(google_parse_error(b410, strlen(b410), reason, sizeof reason,
                                        msg, sizeof msg), 0);
    assert_string_equal(reason, "fullSyncRequired");
    assert_non_null(strstr(msg, "full sync"));
    const char *rl = "{\"error\":{\"errors\":[{\"domain\":\"usageLimits\","
                     "\"reason\":\"rateLimitExceeded\"}],\"code\":403}}";
    assert_int_equal(google_parse_error(rl, strlen(rl), reason, sizeof reason,
                                        msg, sizeof msg), 0);
    assert_string_equal(reason, "rateLimitExceeded");
    assert_string_equal(msg, "");
    const char *st = "{\"error\":{\"code\":401,\"status\":\"UNAUTHENTICATED\"}}";
    assert_int_equal(google_parse_error(st, strlen(st), reason, sizeof reason,
                                        msg, sizeof msg), 0);
    assert_string_equal(reason, "UNAUTHENTICATED");
}

static void test_parse_error_oauth_and_garbage(void **state)
{
    (void)state;
    char reason[16], msg[8];
    const char *ig = "{\"error\":\"invalid_grant\",\"error_description\":\"Bad Request\"}";
    assert_int_equal(google_parse_error(ig, strlen(ig), reason, sizeof reason,
                                        msg, sizeof msg), 0);
    assert_string_equal(reason, "invalid_grant");
    assert_string_equal(msg, "Bad Req"); /* bounded by the caller's buffer */
    const char *bad[] = {"", "<html>502</html>", "{\"error\":", "[1]",
                         "{\"error\":{\"errors\":\"x\"}}", "{\"other\":1}",
                         "{\"error\":{\"errors\":[{\"reason\":5}]}}"};
    int top = lua_gettop(L);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        google_parse_error(bad[i], strlen(bad[i]), reason, sizeof reason, msg, sizeof msg);
        assert_string_equal(reason, "");
        assert_int_equal(lua_gettop(L), top);
    }
    /* control characters never reach logs or metric labels */
    const char *ctl = "{\"error\":\"a\\nb\"}";
    google_parse_error(ctl, strlen(ctl), reason, sizeof reason, msg, sizeof msg);
    assert_string_equal(reason, "a b");
}

static void test_retryable(void **state)
{
    (void)state;
    assert_true(google_retryable(429, ""));
    assert_true(google_retryable(500, ""));
    assert_true(google_retryable(503, "backendError"));
    assert_true(google_retryable(403, "rateLimitExceeded"));
    assert_true(google_retryable(403, "userRateLimitExceeded"));
    assert_false(google_retryable(403, "forbidden"));
    assert_false(google_retryable(403, ""));
    assert_false(google_retryable(400, "invalid"));
    assert_false(google_retryable(401, "authError"));
    assert_false(google_retryable(404, "notFound"));
    assert_false(google_retryable(410, "fullSyncRequired"));
    assert_false(google_retryable(412, "conditionNotMet"));
    assert_false(google_retryable(200, ""));
}

/* "Calendar usage limits exceeded" and a spent daily quota clear by
 * themselves (DESIGN §2 Quota): transient for every call, unlike other
 * 403s, and not retried inside the call. */
static void test_classify_usage_limits(void **state)
{
    (void)state;
    static const enum provider_op ops[] = {
        PROVIDER_OP_LIST, PROVIDER_OP_LIST_FULL, PROVIDER_OP_OCCURRENCES,
        PROVIDER_OP_READ, PROVIDER_OP_WRITE, PROVIDER_OP_SUBSCRIBE};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        assert_int_equal(google_classify(ops[i], 403, "quotaExceeded"), PROVIDER_TRANSIENT);
        assert_int_equal(google_classify(ops[i], 403, "dailyLimitExceeded"),
                         PROVIDER_TRANSIENT);
    }
    /* where another 403 is for good */
    assert_int_equal(google_classify(PROVIDER_OP_LIST, 403, "forbidden"), PROVIDER_PERMANENT);
    assert_int_equal(google_classify(PROVIDER_OP_WRITE, 403, "forbidden"), PROVIDER_PERMANENT);
    assert_false(google_retryable(403, "quotaExceeded"));
    assert_false(google_retryable(403, "dailyLimitExceeded"));
}

/* ------------------------------------------------------------ backoff */

/* The client's retry waits without Retry-After are util.c's backoff_ms
 * with the Google knobs (test_util.c tests the function): the k-th retry
 * (k = 1, 2, ...) waits within [d/2, d], d = min(1 s << (k-1), 60 s). */
static void test_backoff_bounds(void **state)
{
    (void)state;
    for (int k = 1; k <= 12; k++) {
        int64_t d = GOOGLE_BACKOFF_BASE_MS;
        for (int i = 1; i < k; i++)
            d = d * 2 > GOOGLE_BACKOFF_MAX_MS ? GOOGLE_BACKOFF_MAX_MS : d * 2;
        for (int n = 0; n < 500; n++) {
            int64_t w = backoff_ms(k, GOOGLE_BACKOFF_BASE_MS, GOOGLE_BACKOFF_MAX_MS);
            assert_true(w >= d / 2); /* jitter never below half */
            assert_true(w <= d);
        }
    }
    assert_int_equal(GOOGLE_BACKOFF_BASE_MS, 1000); /* DESIGN §2 */
    assert_int_equal(GOOGLE_BACKOFF_MAX_MS, 60000);
}

static void test_retry_after(void **state)
{
    (void)state;
    int64_t w = -1;
    assert_int_equal(google_parse_retry_after("2", 1, 0, &w), 0);
    assert_int_equal(w, 2000);
    assert_int_equal(google_parse_retry_after(" 0\r\n", 4, 0, &w), 0);
    assert_int_equal(w, 0);
    assert_int_equal(google_parse_retry_after("999999999999999999999", 21, 0, &w), 0);
    assert_int_equal(w, GOOGLE_RETRY_AFTER_MAX_MS);
    /* HTTP-date, relative to now */
    int64_t now;
    assert_int_equal(time_parse_rfc3339("2015-10-21T07:27:50Z", 20, &now), 0);
    const char *d = "Wed, 21 Oct 2015 07:28:00 GMT";
    assert_int_equal(google_parse_retry_after(d, strlen(d), now, &w), 0);
    assert_int_equal(w, 10000);
    assert_int_equal(google_parse_retry_after(d, strlen(d), now + 60000, &w), 0);
    assert_int_equal(w, 0); /* in the past: retry now */
    const char *bad[] = {"", "  ", "-1", "1.5", "2s", "soon",
                         "Wed, 21 Oct 2015 07:28:00 UTC", "Wed, 32 Oct 2015 07:28:00 GMT",
                         "Wed, 21 Foo 2015 07:28:00 GMT", "Wed, 21 Oct 2015 25:28:00 GMT",
                         "Wed 21 Oct 2015 07:28:00 GMT"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(google_parse_retry_after(bad[i], strlen(bad[i]), 0, &w), -1);
}

static void test_url_escape(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    assert_int_equal(google_url_escape(&b, "user@example.com"), 0);
    assert_string_equal(b.data, "user%40example%2Ecom");
    buf_reset(&b);
    assert_int_equal(google_url_escape(&b, "p#weather@x/../a b&c=d+é"), 0);
    assert_string_equal(b.data, "p%23weather%40x%2F%2E%2E%2Fa%20b%26c%3Dd%2B%C3%A9");
    buf_reset(&b);
    assert_int_equal(google_url_escape(&b, ""), 0);
    assert_string_equal(b.data, "");
    buf_reset(&b);
    /* dots never stay dots: no escaped value is a dot segment */
    const char *dots[] = {".", "..", "...", "a.b", "%2E%2E", "?x#y;z"};
    const char *want[] = {"%2E", "%2E%2E", "%2E%2E%2E", "a%2Eb", "%252E%252E", "%3Fx%23y%3Bz"};
    for (size_t i = 0; i < sizeof dots / sizeof dots[0]; i++) {
        buf_reset(&b);
        assert_int_equal(google_url_escape(&b, dots[i]), 0);
        assert_string_equal(b.data, want[i]);
    }
    /* every byte but unreserved letters, digits, '-', '_', '~' is encoded */
    for (int c = 1; c < 256; c++) {
        char in[2] = {(char)c, 0};
        buf_reset(&b);
        assert_int_equal(google_url_escape(&b, in), 0);
        int keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                   (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '~';
        assert_int_equal(b.len, keep ? 1 : 3);
    }
    buf_free(&b);
}

/* What libcurl does with the path it is given (issue 21, item 2): it
 * removes a literal dot segment -- ".../events/.." became
 * ".../calendars/primary/" on the wire -- but leaves "%2E%2E" alone, so
 * the escaping is enough even without CURLOPT_PATH_AS_IS. */
static void test_curl_keeps_escaped_dots(void **state)
{
    (void)state;
    static const char base[] = "http://127.0.0.1:9/calendar/v3/calendars/primary/events/";
    struct buf b;
    buf_init(&b);
    const char *ids[] = {"..", "."};
    const char *collapsed[] = {"/calendar/v3/calendars/primary/",
                               "/calendar/v3/calendars/primary/events/"};
    for (int i = 0; i < 2; i++) {
        char raw[256], *path = NULL;
        CURLU *u = curl_url();
        assert_non_null(u);
        /* the old, unescaped URL: normalised away */
        snprintf(raw, sizeof raw, "%s%s", base, ids[i]);
        assert_int_equal(curl_url_set(u, CURLUPART_URL, raw, 0), CURLUE_OK);
        assert_int_equal(curl_url_get(u, CURLUPART_PATH, &path, 0), CURLUE_OK);
        assert_string_equal(path, collapsed[i]);
        curl_free(path);
        /* the escaped one: kept as is */
        buf_reset(&b);
        assert_int_equal(buf_puts(&b, base) || google_url_escape(&b, ids[i]), 0);
        assert_int_equal(curl_url_set(u, CURLUPART_URL, b.data, 0), CURLUE_OK);
        assert_int_equal(curl_url_get(u, CURLUPART_PATH, &path, 0), CURLUE_OK);
        snprintf(raw, sizeof raw, "/calendar/v3/calendars/primary/events/%s",
                 i == 0 ? "%2E%2E" : "%2E");
        assert_string_equal(path, raw);
        curl_free(path);
        curl_url_cleanup(u);
    }
    buf_free(&b);
}

/* ------------------------------------------------------- event reading */

static int parse(const char *json, struct sync_event *ev, struct cs_err *err)
{
    if (json_decode_object(L, json, strlen(json), err))
        return -2;
    int rc = google_event_parse(L, -1, ev, err);
    return rc;
}

static void test_instance_ids(void **state)
{
    (void)state;
    size_t sl;
    int64_t o, want;
    int ad;
    const char *a = "72o12msae3t6au1lim41i8tu6j_20250328T150000Z";
    assert_int_equal(google_split_instance_id(a, strlen(a), &sl, &o, &ad), 1);
    assert_int_equal(sl, 26);
    assert_int_equal(ad, 0);
    time_parse_rfc3339("2025-03-28T15:00:00Z", 20, &want);
    assert_int_equal(o, want);
    const char *b = "abc_20211117";
    assert_int_equal(google_split_instance_id(b, strlen(b), &sl, &o, &ad), 1);
    assert_int_equal(sl, 3);
    assert_int_equal(ad, 1);
    time_parse_date("2021-11-17", 10, &want);
    assert_int_equal(o, want);
    /* a split series master and plain ids are not instances */
    const char *no[] = {"68k0p6ackplecqs9fuvbs1fju0_R20250326T123000", "plain",
                        "_20250328T150000Z", "x_2025032", "x_20251328", "x_20250328T250000Z",
                        "x_20250328T150000", "x_2025-03-28"};
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++)
        assert_int_equal(google_split_instance_id(no[i], strlen(no[i]), &sl, &o, &ad), 0);
}

static void test_event_timed_and_tag(void **state)
{
    (void)state;
    struct cs_err err;
    struct sync_event ev;
    int top = lua_gettop(L);
    const char *j =
        "{\"kind\":\"calendar#event\",\"etag\":\"\\\"3485\\\"\",\"id\":\"e1\","
        "\"status\":\"confirmed\",\"summary\":\"Call\",\"updated\":\"2025-03-23T15:41:35.361Z\","
        "\"created\":\"2025-03-24T12:58:18.000Z\","
        "\"start\":{\"dateTime\":\"2025-03-24T07:30:00-05:00\",\"timeZone\":\"America/Chicago\"},"
        "\"end\":{\"dateTime\":\"2025-03-24T08:15:00-05:00\"},"
        "\"extendedProperties\":{\"private\":{\"calsync_booking_uid\":\"bk-9\"}}}";
    assert_int_equal(parse(j, &ev, &err), 0);
    int64_t s, e;
    time_parse_rfc3339("2025-03-24T12:30:00Z", 20, &s);
    time_parse_rfc3339("2025-03-24T13:15:00Z", 20, &e);
    assert_string_equal(ev.id, "e1");
    assert_string_equal(ev.etag, "\"3485\"");
    assert_string_equal(ev.status, "confirmed");
    assert_string_equal(ev.title, "Call");
    assert_string_equal(ev.booking_tag, "bk-9");
    assert_string_equal(ev.created, "2025-03-24T12:58:18.000Z");
    assert_int_equal(ev.start_ms, s);
    assert_int_equal(ev.end_ms, e);
    assert_int_equal(ev.all_day, 0);
    assert_null(ev.series_id);
    assert_true(ev.original_start_ms == SYNC_NO_TIME);
    assert_int_equal(lua_gettop(L), top + 1);
    lua_settop(L, top);
}

static void test_event_all_day_and_instance(void **state)
{
    (void)state;
    struct cs_err err;
    struct sync_event ev;
    int top = lua_gettop(L);
    const char *j =
        "{\"id\":\"m_20211117\",\"status\":\"confirmed\",\"recurringEventId\":\"m\","
        "\"originalStartTime\":{\"date\":\"2021-11-17\"},"
        "\"start\":{\"dateTime\":\"2021-11-17T10:00:00-07:00\"},"
        "\"end\":{\"dateTime\":\"2021-11-17T11:00:00-07:00\"}}";
    assert_int_equal(parse(j, &ev, &err), 0);
    int64_t d;
    time_parse_date("2021-11-17", 10, &d);
    assert_string_equal(ev.series_id, "m");
    assert_int_equal(ev.original_start_ms, d);
    assert_int_equal(ev.all_day, 0); /* became timed; the slot was a date */
    assert_null(ev.title);
    assert_null(ev.created);
    lua_settop(L, top);
    const char *ad = "{\"id\":\"h\",\"start\":{\"date\":\"2026-12-24\"},"
                     "\"end\":{\"date\":\"2026-12-25\"}}";
    assert_int_equal(parse(ad, &ev, &err), 0);
    time_parse_date("2026-12-24", 10, &d);
    assert_int_equal(ev.all_day, 1);
    assert_int_equal(ev.start_ms, d);
    assert_int_equal(ev.end_ms, d + 86400000);
    assert_string_equal(ev.status, "confirmed"); /* absent = confirmed */
    lua_settop(L, top);
}

static void test_event_stubs(void **state)
{
    (void)state;
    struct cs_err err;
    struct sync_event ev;
    int top = lua_gettop(L);
    /* full stub: recurringEventId and originalStartTime, no start/end */
    const char *full =
        "{\"kind\":\"calendar#event\",\"etag\":\"\\\"1\\\"\",\"id\":\"s_20250325T120000Z\","
        "\"status\":\"cancelled\",\"recurringEventId\":\"s\","
        "\"originalStartTime\":{\"dateTime\":\"2025-03-25T07:00:00-05:00\"}}";
    assert_int_equal(parse(full, &ev, &err), 0);
    assert_string_equal(ev.series_id, "s");
    assert_true(ev.start_ms == SYNC_NO_TIME);
    lua_settop(L, top);
    /* bare stub: the series and the slot only in the id */
    const char *bare = "{\"kind\":\"calendar#event\",\"etag\":\"\\\"2\\\"\","
                       "\"id\":\"72o12msae3t6au1lim41i8tu6j_20250328T150000Z\","
                       "\"status\":\"cancelled\"}";
    assert_int_equal(parse(bare, &ev, &err), 0);
    assert_string_equal(ev.series_id, "72o12msae3t6au1lim41i8tu6j");
    int64_t o;
    time_parse_rfc3339("2025-03-28T15:00:00Z", 20, &o);
    assert_int_equal(ev.original_start_ms, o);
    lua_settop(L, top);
    /* a deleted series master: no series, cascades */
    const char *master = "{\"id\":\"68k0p6ackplecqs9fuvbs1fju0\",\"status\":\"cancelled\"}";
    assert_int_equal(parse(master, &ev, &err), 0);
    assert_null(ev.series_id);
    lua_settop(L, top);
}

static void test_event_rejects_wrong_types(void **state)
{
    (void)state;
    struct cs_err err;
    struct sync_event ev;
    int top = lua_gettop(L);
    const char *bad[] = {
        "{\"id\":12345,\"start\":{\"date\":\"2026-01-01\"},\"end\":{\"date\":\"2026-01-02\"}}",
        "{\"start\":{\"date\":\"2026-01-01\"},\"end\":{\"date\":\"2026-01-02\"}}",
        "{\"id\":\"a\",\"start\":\"tomorrow\",\"end\":{\"date\":\"2026-01-02\"}}",
        "{\"id\":\"a\",\"start\":{\"date\":\"2026-01-01\"},\"end\":[\"not\",\"an\",\"object\"]}",
        "{\"id\":\"a\",\"status\":false,\"start\":{\"date\":\"2026-01-01\"},"
        "\"end\":{\"date\":\"2026-01-02\"}}",
        "{\"id\":\"a\",\"etag\":12345,\"start\":{\"date\":\"2026-01-01\"},"
        "\"end\":{\"date\":\"2026-01-02\"}}",
        "{\"id\":\"a\",\"start\":{\"dateTime\":\"2026-01-01 10:00\"},"
        "\"end\":{\"date\":\"2026-01-02\"}}",
        "{\"id\":\"a\",\"start\":{\"date\":\"2026-02-30\"},\"end\":{\"date\":\"2026-03-01\"}}",
        "{\"id\":\"a\",\"start\":{},\"end\":{\"date\":\"2026-01-02\"}}",
        "{\"id\":\"a\",\"status\":\"confirmed\"}", /* no times */
        "{\"id\":\"a\",\"summary\":7,\"start\":{\"date\":\"2026-01-01\"},"
        "\"end\":{\"date\":\"2026-01-02\"}}",
        "{\"id\":\"a\",\"extendedProperties\":[1],\"start\":{\"date\":\"2026-01-01\"},"
        "\"end\":{\"date\":\"2026-01-02\"}}",
        "{\"id\":\"a\",\"extendedProperties\":{\"private\":{\"calsync_booking_uid\":1}},"
        "\"start\":{\"date\":\"2026-01-01\"},\"end\":{\"date\":\"2026-01-02\"}}",
        "{\"id\":\"a\",\"recurringEventId\":{},\"start\":{\"date\":\"2026-01-01\"},"
        "\"end\":{\"date\":\"2026-01-02\"}}",
        "{\"id\":\"a\",\"created\":17,\"start\":{\"date\":\"2026-01-01\"},"
        "\"end\":{\"date\":\"2026-01-02\"}}",
        /* created past PROVIDER_CREATED_MAX (64) bytes */
        "{\"id\":\"a\",\"created\":\"2025-03-24T12:58:18.000Z2025-03-24T12:58:18.000Z"
        "2025-03-24T12:58:18.000Z\",\"start\":{\"date\":\"2026-01-01\"},"
        "\"end\":{\"date\":\"2026-01-02\"}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parse(bad[i], &ev, &err) != -1)
            fail_msg("accepted %s", bad[i]);
        assert_int_equal(lua_gettop(L), top + 1); /* only the document */
        lua_settop(L, top);
    }
    /* not an object at all */
    lua_pushinteger(L, 3);
    assert_int_equal(google_event_parse(L, -1, &ev, &err), -1);
    lua_settop(L, top);
}

/* Ids Google cannot have issued are skipped (PROVIDER_EVENT_SKIP), never
 * read into the event: they would go back into a URL path. */
static void test_event_invalid_ids_skipped(void **state)
{
    (void)state;
    struct cs_err err;
    struct sync_event ev;
    int top = lua_gettop(L);
    const char *ids[] = {"", ".", "..", "a/b", "a%2Fb", "a b", "a\\u0000b", "a\\nb",
                         "caf\\u00e9", "x.y", "?q"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        char j[256];
        snprintf(j, sizeof j, "{\"id\":\"%s\",\"status\":\"cancelled\"}", ids[i]);
        if (parse(j, &ev, &err) != PROVIDER_EVENT_SKIP)
            fail_msg("not skipped: %s", j);
        assert_int_equal(lua_gettop(L), top + 1);
        lua_settop(L, top);
        /* the same as a recurringEventId */
        snprintf(j, sizeof j, "{\"id\":\"abc_20250101\",\"recurringEventId\":\"%s\","
                 "\"status\":\"cancelled\"}", ids[i]);
        if (parse(j, &ev, &err) != PROVIDER_EVENT_SKIP)
            fail_msg("not skipped: %s", j);
        assert_int_equal(lua_gettop(L), top + 1);
        lua_settop(L, top);
    }
    /* a stub whose id has no series part derives no (empty) series */
    assert_int_equal(parse("{\"id\":\"_20250101\",\"status\":\"cancelled\"}", &ev, &err), 0);
    assert_null(ev.series_id);
    lua_settop(L, top);
}

static void test_event_bounds(void **state)
{
    (void)state;
    struct cs_err err;
    struct sync_event ev;
    struct buf j;
    int top = lua_gettop(L);
    buf_init(&j);
    /* a long title is cut at a character boundary, not rejected */
    buf_puts(&j, "{\"id\":\"a\",\"start\":{\"date\":\"2026-01-01\"},"
                 "\"end\":{\"date\":\"2026-01-02\"},\"summary\":\"x");
    for (int i = 0; i < SYNC_TITLE_MAX; i++)
        buf_puts(&j, "\xc3\xa9");
    buf_puts(&j, "\"}");
    assert_int_equal(parse(j.data, &ev, &err), 0);
    size_t n = strlen(ev.title);
    assert_true(n <= SYNC_TITLE_MAX);
    assert_true(n >= SYNC_TITLE_MAX - 1);
    assert_int_equal((unsigned char)ev.title[n - 1], 0xa9); /* whole é */
    lua_settop(L, top);
    /* an id longer than SYNC_ID_MAX is skipped, not stored */
    buf_reset(&j);
    buf_puts(&j, "{\"id\":\"");
    for (int i = 0; i <= SYNC_ID_MAX; i++)
        buf_puts(&j, "a");
    buf_puts(&j, "\",\"start\":{\"date\":\"2026-01-01\"},\"end\":{\"date\":\"2026-01-02\"}}");
    assert_int_equal(parse(j.data, &ev, &err), PROVIDER_EVENT_SKIP);
    lua_settop(L, top);
    /* an oversized booking tag is ignored, the event kept */
    buf_reset(&j);
    buf_puts(&j, "{\"id\":\"a\",\"start\":{\"date\":\"2026-01-01\"},\"end\":{\"date\":"
                 "\"2026-01-02\"},\"extendedProperties\":{\"private\":{"
                 "\"calsync_booking_uid\":\"");
    for (int i = 0; i <= SYNC_TAG_MAX; i++)
        buf_puts(&j, "b");
    buf_puts(&j, "\"}}}");
    assert_int_equal(parse(j.data, &ev, &err), 0);
    assert_null(ev.booking_tag);
    lua_settop(L, top);
    buf_free(&j);
}

static void test_differs(void **state)
{
    (void)state;
    struct sync_event a = {.id = "e", .etag = "1", .status = "confirmed", .start_ms = 10,
                           .end_ms = 20, .title = "T", .original_start_ms = SYNC_NO_TIME};
    struct sync_event b = a;
    assert_true(sync_event_differs(NULL, &a));
    assert_false(sync_event_differs(&a, &b));
    b.etag = "2"; /* a master re-sent unchanged: still handed on */
    assert_true(sync_event_differs(&a, &b));
    b = a;
    b.end_ms = 30;
    assert_true(sync_event_differs(&a, &b));
    b = a;
    b.title = "U";
    assert_true(sync_event_differs(&a, &b));
    b = a;
    b.booking_tag = "bk";
    assert_true(sync_event_differs(&a, &b));
    /* a stub against a live row: a deletion */
    struct sync_event stub = {.id = "e", .etag = "3", .status = "cancelled",
                              .start_ms = SYNC_NO_TIME, .end_ms = SYNC_NO_TIME,
                              .original_start_ms = SYNC_NO_TIME};
    assert_true(sync_event_differs(&a, &stub));
    /* cancelled before and now: nothing new */
    struct sync_event gone = a;
    gone.status = "cancelled";
    assert_false(sync_event_differs(&gone, &stub));
}


/* ================================================================ live
 * The Calendar calls against tests/fake_google.py on a real socket (the
 * fake is started here; the group is skipped when python3 or the fake is
 * not there). Run from the repository root, as tests/run_all.sh does. */

static pid_t fake_pid;
static int fake_port;
static char tmpdir[] = "/tmp/calsync-test-google-XXXXXX";
static char dbpath[sizeof tmpdir + 16];
static struct config cfg;
static struct google_auth auth;
static const char *skip_why;

static int fake_start(void)
{
    int p[2];
    if (access("tests/fake_google.py", R_OK) != 0 || pipe(p) != 0)
        return -1;
    fake_pid = fork();
    if (fake_pid < 0)
        return -1;
    if (fake_pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        execlp("python3", "python3", "tests/fake_google.py", "--port", "0", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    char line[64] = {0};
    size_t n = 0;
    while (n < sizeof line - 1) {
        struct pollfd pf = {p[0], POLLIN, 0};
        if (poll(&pf, 1, 10000) <= 0 || read(p[0], line + n, 1) != 1)
            break;
        if (line[n++] == '\n')
            break;
    }
    close(p[0]);
    if (sscanf(line, "PORT %d", &fake_port) != 1) {
        kill(fake_pid, SIGKILL);
        waitpid(fake_pid, NULL, 0);
        fake_pid = 0;
        return -1;
    }
    return 0;
}

static size_t sink(char *p, size_t sz, size_t nm, void *ud)
{
    (void)p;
    (void)ud;
    return sz * nm;
}

/* A call to the fake's control API; returns the HTTP status. */
static long control(const char *method, const char *path, const char *json)
{
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/_control%s", fake_port, path);
    CURL *h = curl_easy_init();
    struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
    long st = 0;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sink);
    if (json)
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, json);
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    return st;
}

static char *xstrdup_printf(const char *fmt, int port)
{
    char b[256];
    snprintf(b, sizeof b, fmt, port);
    return strdup(b);
}

static int live_setup(void **state)
{
    (void)state;
    struct cs_err err;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (fake_start() != 0) {
        skip_why = "fake_google.py not startable";
        return 0;
    }
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(dbpath, sizeof dbpath, "%s/t.db", tmpdir);
    if (config_defaults(&cfg) || store_init(dbpath, &err))
        return -1;
    free(cfg.google.api_base);
    free(cfg.google.token_url);
    free(cfg.google.client_id);
    free(cfg.google.client_secret);
    cfg.google.api_base = xstrdup_printf("http://127.0.0.1:%d/calendar/v3", fake_port);
    cfg.google.token_url = xstrdup_printf("http://127.0.0.1:%d/token", fake_port);
    cfg.google.client_id = strdup("x");
    cfg.google.client_secret = strdup("y");
    google_init(&cfg);
    auth.db = store_conn(&err);
    if (!auth.db || credential_insert(auth.db, "google", "rt-unit", NULL, 0,
                                      &auth.credential_id, &err))
        return -1;
    return 0;
}

static int live_teardown(void **state)
{
    (void)state;
    if (fake_pid > 0) {
        kill(fake_pid, SIGTERM);
        waitpid(fake_pid, NULL, 0);
        store_shutdown();
        config_free(&cfg);
        char db2[sizeof dbpath + 8];
        unlink(dbpath);
        snprintf(db2, sizeof db2, "%s-wal", dbpath);
        unlink(db2);
        snprintf(db2, sizeof db2, "%s-shm", dbpath);
        unlink(db2);
        rmdir(tmpdir);
    }
    google_thread_release();
    curl_global_cleanup();
    return 0;
}

#define LIVE()                        \
    do {                              \
        if (skip_why) {               \
            print_message("skipped: %s\n", skip_why); \
            skip();                   \
        }                             \
    } while (0)

/* Copies a string field of the pushed object. */
static void field(const char *key, char *out, size_t cap)
{
    const char *s;
    size_t n;
    assert_int_equal(json_get_str(L, -1, key, &s, &n, NULL), 1);
    assert_true(n < cap);
    memcpy(out, s, n + 1);
}

static void test_live_event_crud(void **state)
{
    (void)state;
    LIVE();
    struct google_resp r;
    struct cs_err err;
    char id[128], etag[64], etag2[64];
    int top = lua_gettop(L);
    google_resp_init(&r);
    const char *body = "{\"summary\":\"Booking\",\"start\":{\"dateTime\":\"2026-12-01T10:00:00Z\"},"
                       "\"end\":{\"dateTime\":\"2026-12-01T11:00:00Z\"},\"extendedProperties\":"
                       "{\"private\":{\"calsync_booking_uid\":\"bk-1\"}}}";
    assert_int_equal(google_events_insert(&auth, "primary", body, &r, &err), GOOGLE_OK);
    assert_int_equal(r.status, 200);
    field("id", id, sizeof id);
    field("etag", etag, sizeof etag);
    struct sync_event ev;
    assert_int_equal(google_event_parse(L, -1, &ev, &err), 0);
    assert_string_equal(ev.booking_tag, "bk-1");
    lua_settop(L, top);

    assert_int_equal(google_events_get(&auth, "primary", id, &r, &err), GOOGLE_OK);
    field("etag", etag2, sizeof etag2);
    assert_string_equal(etag, etag2);
    lua_settop(L, top);

    /* If-Match with a stale etag: 412, not retried */
    assert_int_equal(google_events_patch(&auth, "primary", id, "{\"summary\":\"X\"}",
                                         "\"stale\"", &r, &err), GOOGLE_EHTTP);
    assert_int_equal(r.status, 412);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(lua_gettop(L), top);
    assert_int_equal(google_events_patch(&auth, "primary", id, "{\"summary\":\"Moved\"}",
                                         etag, &r, &err), GOOGLE_OK);
    field("etag", etag2, sizeof etag2);
    assert_string_not_equal(etag, etag2);
    lua_settop(L, top);

    assert_int_equal(google_events_delete(&auth, "primary", id, etag, &r, &err), GOOGLE_EHTTP);
    assert_int_equal(r.status, 412);
    assert_int_equal(google_events_delete(&auth, "primary", id, etag2, &r, &err), GOOGLE_OK);
    assert_int_equal(google_events_delete(&auth, "primary", id, NULL, &r, &err), GOOGLE_EHTTP);
    assert_int_equal(r.status, 410);
    assert_string_equal(r.reason, "deleted");
    assert_int_equal(google_events_get(&auth, "nosuch@example.com", "nope", &r, &err),
                     GOOGLE_EHTTP);
    assert_int_equal(r.status, 404);

    /* the listing shows it cancelled */
    struct google_list_params p = {.show_deleted = 1};
    assert_int_equal(google_events_list(&auth, "primary", &p, &r, &err), GOOGLE_OK);
    assert_int_equal(json_get_obj(L, -1, "items", &err), 1);
    lua_rawgeti(L, -1, 1);
    assert_int_equal(google_event_parse(L, -1, &ev, &err), 0);
    assert_string_equal(ev.id, id);
    assert_string_equal(ev.status, "cancelled");
    lua_settop(L, top);
    google_resp_free(&r);
}

static void test_live_watch_and_stop(void **state)
{
    (void)state;
    LIVE();
    struct google_resp r;
    struct cs_err err;
    char rid[128], exp[32];
    int top = lua_gettop(L);
    google_resp_init(&r);
    assert_int_equal(google_events_watch(&auth, "primary", "ch-unit-1", "secret-token",
                                         "http://127.0.0.1:9/webhooks/google", 3600,
                                         &r, &err), GOOGLE_OK);
    field("resourceId", rid, sizeof rid);
    field("expiration", exp, sizeof exp); /* ms as a string */
    int64_t e;
    assert_int_equal(parse_i64(exp, &e), 0);
    assert_true(e > time_now_ms() + 3500 * 1000LL && e <= time_now_ms() + 3600 * 1000LL);
    lua_settop(L, top);
    assert_int_equal(google_channels_stop(&auth, "ch-unit-1", rid, &r, &err), GOOGLE_OK);
    assert_int_equal(r.status, 204);
    assert_int_equal(lua_gettop(L), top);
    google_resp_free(&r);
}

static void test_live_retry_after_and_budget(void **state)
{
    (void)state;
    LIVE();
    struct google_resp r;
    struct cs_err err;
    int top = lua_gettop(L);
    google_resp_init(&r);
    control("DELETE", "/faults", NULL);
    assert_int_equal(control("POST", "/faults", "{\"status\":429,\"count\":2,"
                             "\"retry_after\":1,\"ops\":[\"events.list\"]}"), 200);
    struct google_list_params p = {0};
    int64_t t0 = time_mono_ms();
    assert_int_equal(google_events_list(&auth, "primary", &p, &r, &err), GOOGLE_OK);
    int64_t took = time_mono_ms() - t0;
    lua_settop(L, top);
    assert_int_equal(r.attempts, 3);
    assert_true(took >= 2000);   /* two Retry-After: 1 waited in full */
    assert_true(took < 3500);    /* and not more */
    /* a 400 is never retried */
    assert_int_equal(control("POST", "/faults", "{\"status\":400,\"count\":1,"
                             "\"ops\":[\"events.list\"]}"), 200);
    assert_int_equal(google_events_list(&auth, "primary", &p, &r, &err), GOOGLE_EHTTP);
    assert_int_equal(r.attempts, 1);
    /* a truncated 200 is a bad response, not retried, nothing pushed */
    assert_int_equal(control("POST", "/faults", "{\"mode\":\"truncated_json\",\"count\":1,"
                             "\"ops\":[\"events.list\"]}"), 200);
    assert_int_equal(google_events_list(&auth, "primary", &p, &r, &err), GOOGLE_EBADRESP);
    assert_int_equal(lua_gettop(L), top);
    /* a Retry-After past the budget gives up at once */
    assert_int_equal(control("POST", "/faults", "{\"status\":503,\"count\":1,"
                             "\"retry_after\":3000,\"ops\":[\"events.list\"]}"), 200);
    t0 = time_mono_ms();
    assert_int_equal(google_events_list(&auth, "primary", &p, &r, &err), GOOGLE_ETRANSPORT);
    assert_true(time_mono_ms() - t0 < 1000);
    assert_non_null(strstr(err.msg, "budget"));
    control("DELETE", "/faults", NULL);
    google_resp_free(&r);
}

static void test_live_oauth(void **state)
{
    (void)state;
    LIVE();
    struct google_resp r;
    struct cs_err err;
    char tok[CRED_TOKEN_MAX + 1], tok2[CRED_TOKEN_MAX + 1];
    int top = lua_gettop(L);
    google_resp_init(&r);
    assert_int_equal(google_access_token(&auth, 0, tok, sizeof tok, &r, &err), GOOGLE_OK);
    assert_int_equal(google_access_token(&auth, 0, tok2, sizeof tok2, &r, &err), GOOGLE_OK);
    assert_string_equal(tok, tok2); /* cached in the row */
    /* Google forgets it: the 401 refreshes once */
    assert_int_equal(control("POST", "/expire_access_tokens", "{}"), 200);
    struct google_list_params p = {0};
    assert_int_equal(google_events_list(&auth, "primary", &p, &r, &err), GOOGLE_OK);
    lua_settop(L, top);
    assert_int_equal(google_access_token(&auth, 0, tok2, sizeof tok2, &r, &err), GOOGLE_OK);
    assert_string_not_equal(tok, tok2);
    /* a revoked refresh token: invalid_grant -> credential revoked */
    assert_int_equal(control("POST", "/revoke", "{\"refresh_token\":\"rt-unit\"}"), 200);
    assert_int_equal(control("POST", "/expire_access_tokens", "{}"), 200);
    assert_int_equal(google_events_get(&auth, "primary", "x", &r, &err), GOOGLE_EREVOKED);
    assert_non_null(strstr(err.msg, "invalid_grant"));
    assert_int_equal(lua_gettop(L), top);
    struct db_stmt *st = db_stmt(auth.db, "SELECT state, access_token"
                                 " FROM credentials WHERE id = ?1", &err);
    assert_non_null(st);
    db_bind_i64(st, 1, auth.credential_id);
    assert_int_equal(db_step(st), DB_ROW);
    assert_string_equal(db_col_text(st, 0), "revoked");
    assert_true(db_col_null(st, 1));
    db_reset(st);
    /* and is not sent to the token endpoint again */
    assert_int_equal(google_access_token(&auth, 1, tok, sizeof tok, &r, &err), GOOGLE_EREVOKED);
    assert_int_equal(r.status, 0);
    google_resp_free(&r);
}

/* GET of the fake's control API into out (NUL-terminated); the status. */
static size_t keep_body(char *p, size_t sz, size_t nm, void *ud)
{
    return buf_append(ud, p, sz * nm) ? 0 : sz * nm;
}

static long control_get(const char *path, struct buf *out)
{
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/_control%s", fake_port, path);
    CURL *h = curl_easy_init();
    long st = 0;
    buf_reset(out);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, keep_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    if (curl_easy_perform(h) == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
    curl_easy_cleanup(h);
    buf_append(out, "", 0);
    return st;
}

/* Issue 21, item 2, on the wire: an id Google cannot have issued makes no
 * request at all (GOOGLE_EINVAL), and a calendar id with dots reaches the
 * fake with "%2E" in the raw path, decoded there to the same id. */
static void test_live_ids_on_the_wire(void **state)
{
    (void)state;
    LIVE();
    struct google_resp r;
    struct cs_err err;
    struct buf log;
    int top = lua_gettop(L);
    google_resp_init(&r);
    buf_init(&log);
    assert_int_equal(control("DELETE", "/requests", NULL), 200);
    const char *bad_ev[] = {"..", ".", "", "a/b", "x?y", "a\nb"};
    for (size_t i = 0; i < sizeof bad_ev / sizeof bad_ev[0]; i++) {
        assert_int_equal(google_events_patch(&auth, "primary", bad_ev[i], "{\"summary\":\"X\"}",
                                             NULL, &r, &err), GOOGLE_EINVAL);
        assert_int_equal(google_events_delete(&auth, "primary", bad_ev[i], NULL, &r, &err),
                         GOOGLE_EINVAL);
        assert_int_equal(google_events_get(&auth, "primary", bad_ev[i], &r, &err), GOOGLE_EINVAL);
        assert_int_equal(google_events_instances(&auth, "primary", bad_ev[i], NULL, &r, &err),
                         GOOGLE_EINVAL);
        assert_int_equal(r.status, 0);
        assert_int_equal(r.attempts, 0);
    }
    const char *bad_cal[] = {"..", ".", "a/b", "primary/..", "x y"};
    struct google_list_params p = {0};
    for (size_t i = 0; i < sizeof bad_cal / sizeof bad_cal[0]; i++) {
        assert_int_equal(google_events_list(&auth, bad_cal[i], &p, &r, &err), GOOGLE_EINVAL);
        assert_int_equal(google_events_insert(&auth, bad_cal[i], "{}", &r, &err), GOOGLE_EINVAL);
        assert_int_equal(google_events_delete(&auth, bad_cal[i], "abcde", NULL, &r, &err),
                         GOOGLE_EINVAL);
        assert_non_null(strstr(err.msg, "refused"));
    }
    assert_int_equal(lua_gettop(L), top);
    assert_int_equal(control_get("/requests", &log), 200);
    assert_non_null(strstr(log.data, "\"count\": 0"));
    /* a real id with dots: escaped on the wire, the same id at Google */
    const char *holiday = "en.usa#holiday@group.v.calendar.google.com";
    assert_int_equal(google_events_get(&auth, holiday, "nosuchevent", &r, &err), GOOGLE_EHTTP);
    assert_int_equal(r.status, 404);
    assert_int_equal(control_get("/requests?op=events.get", &log), 200);
    assert_non_null(strstr(log.data, "/calendars/en%2Eusa%23holiday%40group%2Ev%2Ecalendar"
                                     "%2Egoogle%2Ecom/events/nosuchevent"));
    assert_non_null(strstr(log.data, "\"calendar\": \"en.usa#holiday@group.v.calendar.google.com\""));
    buf_free(&log);
    google_resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_error_api),
        cmocka_unit_test(test_parse_error_oauth_and_garbage),
        cmocka_unit_test(test_retryable),
        cmocka_unit_test(test_classify_usage_limits),
        cmocka_unit_test(test_backoff_bounds),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_url_escape),
        cmocka_unit_test(test_curl_keeps_escaped_dots),
        cmocka_unit_test(test_event_invalid_ids_skipped),
        cmocka_unit_test(test_instance_ids),
        cmocka_unit_test(test_event_timed_and_tag),
        cmocka_unit_test(test_event_all_day_and_instance),
        cmocka_unit_test(test_event_stubs),
        cmocka_unit_test(test_event_rejects_wrong_types),
        cmocka_unit_test(test_event_bounds),
        cmocka_unit_test(test_differs),
    };
    const struct CMUnitTest live[] = {
        cmocka_unit_test(test_live_event_crud),
        cmocka_unit_test(test_live_ids_on_the_wire),
        cmocka_unit_test(test_live_watch_and_stop),
        cmocka_unit_test(test_live_retry_after_and_budget),
        cmocka_unit_test(test_live_oauth), /* last: revokes the credential */
    };
    int failed = cmocka_run_group_tests(tests, setup, NULL);
    failed += cmocka_run_group_tests_name("live", live, live_setup, live_teardown);
    return failed;
}
