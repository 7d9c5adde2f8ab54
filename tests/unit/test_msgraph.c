/* test_msgraph.c -- the pure logic of the Microsoft Graph provider:
 * Graph's error shape, what is retried, fractional Retry-After, ids,
 * dateTimeTimeZone, the event reader (single events, occurrences,
 * exceptions, @removed stubs, the tag property), the delta page envelope,
 * the event calsync writes and the error classes. Shapes follow
 * ../shared/fixtures/microsoft, written here by hand. The wire is covered
 * by tests/e2e/test_outlook.py against the fake Graph server. */
#include "unit.h"

#include "json.h"
#include "provider/microsoft/msgraph.h"

#include <lua.h>
#include <stdio.h>
#include <string.h>

static lua_State *L;

static int setup(void **state)
{
    (void)state;
    L = json_state();
    return L ? 0 : -1;
}

static int parse(const char *json, struct provider_event *ev, struct cs_err *err)
{
    lua_settop(L, 0);
    assert_int_equal(json_decode_object(L, json, strlen(json), err), 0);
    return msgraph_event_parse(L, 1, ev, err);
}

static void test_errors_and_retry(void **state)
{
    (void)state;
    char reason[64], msg[256];
    const char *e = "{\"error\":{\"code\":\"SyncStateNotFound\",\"message\":\"The sync state"
                    " generation is not found\",\"innerError\":{\"date\":\"x\"}}}";
    assert_int_equal(msgraph_parse_error(e, strlen(e), reason, sizeof reason, msg, sizeof msg), 0);
    assert_string_equal(reason, "SyncStateNotFound");
    assert_non_null(strstr(msg, "generation"));
    const char *o = "{\"error\":\"invalid_grant\",\"error_description\":\"AADSTS50173: revoked\"}";
    assert_int_equal(msgraph_parse_error(o, strlen(o), reason, sizeof reason, msg, sizeof msg), 0);
    assert_string_equal(reason, "invalid_grant");
    assert_int_equal(msgraph_parse_error("nope", 4, reason, sizeof reason, msg, sizeof msg), -1);
    assert_true(msgraph_retryable(429, ""));
    assert_true(msgraph_retryable(503, ""));
    assert_true(msgraph_retryable(504, ""));
    assert_false(msgraph_retryable(412, ""));
    assert_false(msgraph_retryable(410, ""));
    int64_t w = -1;
    assert_int_equal(msgraph_parse_retry_after("2.128", 5, 0, &w), 0);
    assert_int_equal(w, 2128);
    assert_int_equal(msgraph_parse_retry_after("7", 1, 0, &w), 0);
    assert_int_equal(w, 7000);
    assert_int_equal(msgraph_parse_retry_after("0.5", 3, 0, &w), 0);
    assert_int_equal(w, 500);
    assert_int_equal(msgraph_parse_retry_after("1.", 2, 0, &w), -1);
    assert_int_equal(msgraph_parse_retry_after("1.2.3", 5, 0, &w), -1);
    assert_int_equal(msgraph_parse_retry_after("99999999", 8, 0, &w), 0);
    assert_int_equal(w, MSGRAPH_RETRY_AFTER_MAX_MS);
}

static void test_ids_and_times(void **state)
{
    (void)state;
    const char *ok = "AAMkAGI2TG93AAA=";
    assert_true(msgraph_id_valid(ok, strlen(ok)));
    assert_true(msgraph_id_valid("AAMkAD+x-y_z/w==", 16));
    assert_false(msgraph_id_valid("..", 2));
    assert_false(msgraph_id_valid("a.b", 3));
    assert_false(msgraph_id_valid("a b", 3));
    assert_false(msgraph_id_valid("a?b", 3));
    assert_false(msgraph_id_valid("", 0));
    char big[MSGRAPH_ID_MAX + 2];
    memset(big, 'A', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_false(msgraph_id_valid(big, strlen(big)));
    struct buf b;
    buf_init(&b);
    assert_int_equal(msgraph_url_escape(&b, "a/b=+."), 0);
    assert_string_equal(b.data, "a%2Fb%3D%2B%2E");
    buf_free(&b);
    int64_t ms = 0, ref = 0;
    assert_int_equal(time_parse_rfc3339("2026-03-01T09:30:00Z", 20, &ref), 0);
    assert_int_equal(msgraph_parse_datetime("2026-03-01T09:30:00.0000000", 27, &ms), 0);
    assert_true(ms == ref);
    assert_int_equal(msgraph_parse_datetime("2026-03-01T09:30:00Z", 20, &ms), 0);
    assert_true(ms == ref);
    assert_int_equal(msgraph_parse_datetime("2026-03-01T09:30:00+01:00", 25, &ms), -1);
    assert_int_equal(msgraph_parse_datetime("2026-03-01", 10, &ms), -1);
}

static void test_event_single_occurrence_removed(void **state)
{
    (void)state;
    struct provider_event ev;
    struct cs_err err = {{0}};
    const char *single =
        "{\"@odata.etag\":\"W/\\\"DwAAABYAAAA=\\\"\",\"id\":\"AAMkADsingle=\","
        "\"createdDateTime\":\"2026-01-01T10:00:00.0000000Z\","
        "\"lastModifiedDateTime\":\"2026-01-02T10:00:00.0000000Z\",\"subject\":\"Intro\","
        "\"isAllDay\":false,\"isCancelled\":false,\"seriesMasterId\":null,"
        "\"type\":\"singleInstance\",\"start\":{\"dateTime\":\"2026-03-01T09:30:00.0000000\","
        "\"timeZone\":\"UTC\"},\"end\":{\"dateTime\":\"2026-03-01T10:00:00.0000000\","
        "\"timeZone\":\"UTC\"},\"singleValueExtendedProperties\":[{\"id\":\""
        "String {8d3a1c56-4e1b-4c6e-9b1f-6a2c7f0e5d41} Name calsync_booking_uid\","
        "\"value\":\"bk-1\"}]}";
    assert_int_equal(parse(single, &ev, &err), 0);
    assert_string_equal(ev.id, "AAMkADsingle=");
    assert_string_equal(ev.etag, "W/\"DwAAABYAAAA=\"");
    assert_string_equal(ev.status, "confirmed");
    assert_string_equal(ev.title, "Intro");
    assert_string_equal(ev.booking_tag, "bk-1");
    assert_null(ev.series_id);
    assert_int_equal(ev.bare, 0);
    int64_t s;
    time_parse_rfc3339("2026-03-01T09:30:00Z", 20, &s);
    assert_true(ev.start_ms == s);
    assert_true(ev.end_ms == s + 30 * 60000);

    const char *occ =
        "{\"@odata.type\":\"#microsoft.graph.event\",\"id\":\"AAMkOCocc\",\"subject\":\"Weekly\","
        "\"type\":\"exception\",\"seriesMasterId\":\"AAMkADmaster=\","
        "\"originalStart\":\"2026-03-08T09:00:00Z\",\"isCancelled\":false,"
        "\"start\":{\"dateTime\":\"2026-03-08T14:00:00.0000000\",\"timeZone\":\"UTC\"},"
        "\"end\":{\"dateTime\":\"2026-03-08T14:30:00.0000000\",\"timeZone\":\"UTC\"}}";
    assert_int_equal(parse(occ, &ev, &err), 0);
    assert_string_equal(ev.series_id, "AAMkADmaster=");
    time_parse_rfc3339("2026-03-08T09:00:00Z", 20, &s);
    assert_true(ev.original_start_ms == s);

    const char *gone = "{\"@odata.type\":\"#microsoft.graph.event\",\"id\":\"AAMkOCgone\","
                       "\"@removed\":{\"reason\":\"deleted\"}}";
    assert_int_equal(parse(gone, &ev, &err), 0);
    assert_string_equal(ev.status, "cancelled");
    assert_int_equal(ev.bare, 1);
    assert_null(ev.series_id);

    /* hostile items: a path id is skipped, a foreign zone refused */
    assert_int_equal(parse("{\"id\":\"../x\"}", &ev, &err), PROVIDER_EVENT_SKIP);
    assert_int_equal(parse("{\"id\":\"AAMk=\",\"start\":{\"dateTime\":"
                           "\"2026-03-01T09:30:00.0000000\",\"timeZone\":\"Pacific Standard Time\"},"
                           "\"end\":{\"dateTime\":\"2026-03-01T10:00:00\",\"timeZone\":\"UTC\"}}",
                           &ev, &err), -1);
    assert_int_equal(parse("{\"id\":\"AAMk=\",\"subject\":5,\"start\":{}}", &ev, &err), -1);
    assert_int_equal(parse("{\"id\":\"AAMk=\",\"isCancelled\":false}", &ev, &err), -1);
    lua_settop(L, 0);
}

static void test_page_body_classes(void **state)
{
    (void)state;
    struct provider_page p;
    struct cs_err err = {{0}};
    const char *page = "{\"@odata.nextLink\":\"https://g/v1.0/me/calendarView/delta?$skiptoken=a\","
                       "\"value\":[{\"id\":\"A=\"},{\"id\":\"B=\"}]}";
    lua_settop(L, 0);
    assert_int_equal(json_decode_object(L, page, strlen(page), &err), 0);
    assert_int_equal(msgraph_page_read(L, 1, 1, &p, &err), 0);
    assert_int_equal(p.n, 2);
    assert_non_null(p.next_page);
    assert_null(p.next_cursor);
    const char *both = "{\"@odata.nextLink\":\"x\",\"@odata.deltaLink\":\"y\",\"value\":[]}";
    lua_settop(L, 0);
    assert_int_equal(json_decode_object(L, both, strlen(both), &err), 0);
    assert_int_equal(msgraph_page_read(L, 1, 1, &p, &err), -1);
    const char *neither = "{\"value\":[]}";
    lua_settop(L, 0);
    assert_int_equal(json_decode_object(L, neither, strlen(neither), &err), 0);
    assert_int_equal(msgraph_page_read(L, 1, 1, &p, &err), -1);
    assert_int_equal(msgraph_page_read(L, 1, 0, &p, &err), 0); /* instances: no link needed */
    lua_settop(L, 0);

    struct buf b;
    buf_init(&b);
    assert_int_equal(msgraph_event_body("tx-1", "bk\"1", "T", 0, 3600000, NULL, &b), 0);
    assert_non_null(strstr(b.data, "\"transactionId\":\"tx-1\""));
    assert_non_null(strstr(b.data, "\"value\":\"bk\\\"1\""));
    assert_non_null(strstr(b.data, "\"dateTime\":\"1970-01-01T00:00:00\",\"timeZone\":\"UTC\""));
    buf_free(&b);

    assert_int_equal(msgraph_classify(PROVIDER_OP_LIST, 410, "SyncStateNotFound"), PROVIDER_RESYNC);
    assert_int_equal(msgraph_classify(PROVIDER_OP_LIST, 410, "resyncRequired"), PROVIDER_RESYNC);
    assert_int_equal(msgraph_classify(PROVIDER_OP_LIST_FULL, 400, "ErrorInvalidParameter"),
                     PROVIDER_PERMANENT);
    assert_int_equal(msgraph_classify(PROVIDER_OP_WRITE, 412, "ErrorIrresolvableConflict"),
                     PROVIDER_CONFLICT);
    assert_int_equal(msgraph_classify(PROVIDER_OP_WRITE, 404, "ErrorItemNotFound"), PROVIDER_GONE);
    assert_int_equal(msgraph_classify(PROVIDER_OP_SUBSCRIBE, 404, "ResourceNotFound"),
                     PROVIDER_GONE);
    assert_int_equal(msgraph_classify(PROVIDER_OP_READ, 429, "TooManyRequests"),
                     PROVIDER_TRANSIENT);
    assert_int_equal(msgraph_classify(PROVIDER_OP_OCCURRENCES, 404, ""), PROVIDER_GONE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors_and_retry),
        cmocka_unit_test(test_ids_and_times),
        cmocka_unit_test(test_event_single_occurrence_removed),
        cmocka_unit_test(test_page_body_classes),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
