/* test_fuzz_regress.c -- one test per input the fuzzers (fuzz/) found to
 * crash or break a property, replayed against the fixed code. Each test
 * names its target and the artifact it came from; docs/reliability.md
 * ("Fuzzing") lists them. Run under ASan+UBSan too (build/asan/tests). */
#include "unit.h"

#include "api.h"
#include "config.h"
#include "http.h"
#include "store/store.h"
#include "util.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* fuzz_rfc3339, crash-89c2350f: an offset pushed year 0000 before the
 * first instant time_format_rfc3339 can write, so the API stored one
 * instant and answered another ("0000-01-01T00:00:00Z"). Such inputs are
 * now refused; the edges themselves still parse and round-trip. */
static void test_rfc3339_offset_past_year_range(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "0000-01-01T09:00:00+23:04", /* the artifact */
        "0000-01-01T00:00:00+00:01",
        "9999-12-31T23:59:59-00:01",
        "9999-12-31T23:30:00.5-01:00",
    };
    int64_t ms = 42;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (time_parse_rfc3339(bad[i], strlen(bad[i]), &ms) == 0)
            fail_msg("accepted '%s' (ms %lld)", bad[i], (long long)ms);
    }
    assert_int_equal(ms, 42);
    static const char *const edge[] = {
        "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z",
        "0000-01-01T00:00:00-00:01", "9999-12-31T23:59:59+00:01",
    };
    for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) {
        char out[TIME_RFC3339_MAX];
        int64_t back;
        assert_int_equal(time_parse_rfc3339(edge[i], strlen(edge[i]), &ms), 0);
        time_format_rfc3339(ms, out);
        assert_int_equal(time_parse_rfc3339(out, strlen(out), &back), 0);
        assert_int_equal(back, ms);
    }
}

/* fuzz_rfc3339, crash-8a643eec (first minute of the first run): formatting
 * an int64 near INT64_MIN -- the value of SYNC_NO_TIME -- overflowed
 * (signed overflow, UBSan). Every int64 now formats to a bounded,
 * parseable text; out of range gives the year-0 text it always gave. */
static void test_rfc3339_format_any_int64(void **state)
{
    (void)state;
    const int64_t v[] = {INT64_MIN, INT64_MIN + 8, -62167219200001LL,
                         253402300800000LL, INT64_MAX};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        char out[TIME_RFC3339_MAX];
        int64_t back;
        time_format_rfc3339(v[i], out);
        assert_true(strlen(out) < TIME_RFC3339_MAX);
        assert_string_equal(out, "0000-01-01T00:00:00Z");
        assert_int_equal(time_parse_rfc3339(out, strlen(out), &back), 0);
    }
}

/* fuzz_config (found reviewing the target, not by the fuzzer in its
 * runs): one instruction can compare or concatenate strings of megabytes,
 * so the 10M-instruction cap let a six-line file keep the loader busy for
 * tens of minutes -- `calsync serve` never started and never said why.
 * The loader now also stops at a wall-clock limit (2 s). */
static void test_config_time_bound(void **state)
{
    (void)state;
    static const char *const src[] = {
        /* equal 4 MiB strings compared: a full memcmp per instruction */
        "local s = 'xxxxxxxx'\n"
        "for i = 1, 19 do s = s .. s end\n"
        "local t = 'xxxxxxxx'\n"
        "for i = 1, 19 do t = t .. t end\n"
        "while true do local a = s == t end\n",
        /* an 8 MiB string built per instruction */
        "local s = 'xxxxxxxx'\n"
        "for i = 1, 19 do s = s .. s end\n"
        "while true do local u = s .. s end\n",
    };
    for (size_t i = 0; i < sizeof src / sizeof src[0]; i++) {
        struct config cfg;
        struct cs_err err = {{0}};
        /* the outcome, not a latency: the wall-clock limit (not the
         * instruction cap, which these files would take minutes to reach)
         * is what stopped the loader */
        assert_int_equal(config_load_string(&cfg, "c.lua", src[i], strlen(src[i]), &err), -1);
        if (!strstr(err.msg, "ran too long (time limit)"))
            fail_msg("config %zu: unexpected error: %s", i, err.msg);
    }
}

/* fuzz_json_api (found writing the target's replay of api.c): the
 * cancel endpoint takes an empty body, and skipped "white space" with
 * strchr(" \t\r\n", c) -- which also finds c == NUL, so a body of NUL
 * bytes passed as empty and the booking was cancelled instead of 400.
 * Driven through the real handler on an empty database: a NUL body is
 * now 400; an empty or blank one still reaches the lookup (404). */
static void cancel_status(const char *body, size_t len, int want)
{
    struct config cfg;
    assert_int_equal(config_defaults(&cfg), 0);
    const struct http_route *r = api_routes(&cfg);
    while (r->method && !(strcmp(r->method, "POST") == 0 &&
                          strcmp(r->pattern, "/v1/bookings/{uid}/cancel") == 0))
        r++;
    assert_non_null(r->method);
    struct http_req req = {.method = "POST", .path = "/v1/bookings/nope/cancel",
                           .params = {"nope"}, .nparams = 1,
                           .body = body, .body_len = len};
    struct http_resp resp = {.status = 200};
    buf_init(&resp.body);
    r->fn(&req, &resp);
    if (resp.status != want)
        fail_msg("body of %zu bytes: status %d, want %d (%s)", len, resp.status,
                 want, resp.body.data ? resp.body.data : "");
    buf_free(&resp.body);
    config_free(&cfg);
}

static void test_cancel_nul_body(void **state)
{
    (void)state;
    char db[64];
    struct cs_err err = {{0}};
    snprintf(db, sizeof db, "/tmp/calsync-fuzzreg-%d.db", (int)getpid());
    unlink(db);
    if (store_init(db, &err))
        fail_msg("store_init: %s", err.msg);
    cancel_status("\0", 1, 400);
    cancel_status("\0\0 ", 3, 400);
    cancel_status(" \0", 2, 400);
    cancel_status("", 0, 404);
    cancel_status(" \r\n", 3, 404);
    cancel_status("{}", 2, 404);
    store_shutdown();
    char side[80];
    unlink(db);
    snprintf(side, sizeof side, "%s-wal", db);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", db);
    unlink(side);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc3339_offset_past_year_range),
        cmocka_unit_test(test_rfc3339_format_any_int64),
        cmocka_unit_test(test_config_time_bound),
        cmocka_unit_test(test_cancel_nul_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
