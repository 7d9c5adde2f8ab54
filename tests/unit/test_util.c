/* test_util.c -- RFC 3339 parsing/formatting, JSON string escaping,
 * constant-time compare, integer parsing, the retry backoff and its jitter
 * source. */
#include "unit.h"

#include "util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t parse(const char *s)
{
    int64_t ms = 0;
    assert_int_equal(time_parse_rfc3339(s, strlen(s), &ms), 0);
    return ms;
}

static void reject(const char *s)
{
    int64_t ms;
    if (time_parse_rfc3339(s, strlen(s), &ms) == 0)
        fail_msg("accepted invalid time '%s'", s);
}

static void test_time_valid(void **state)
{
    (void)state;
    assert_int_equal(parse("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(parse("2026-11-24T09:00:00Z"), 1795510800000LL);
    /* offsets are the same instant in UTC */
    assert_int_equal(parse("2026-11-24T10:00:00+01:00"), parse("2026-11-24T09:00:00Z"));
    assert_int_equal(parse("2026-11-24T04:30:00-04:30"), parse("2026-11-24T09:00:00Z"));
    assert_int_equal(parse("2026-11-24t09:00:00z"), parse("2026-11-24T09:00:00Z"));
    assert_int_equal(parse("2026-11-24T09:00:00.5Z"), 1795510800500LL);
    assert_int_equal(parse("2026-11-24T09:00:00.123456789Z"), 1795510800123LL);
    assert_int_equal(parse("2024-02-29T00:00:00Z") + 86400000, parse("2024-03-01T00:00:00Z"));
    assert_int_equal(parse("1969-12-31T23:59:59Z"), -1000);
}

static void test_time_invalid(void **state)
{
    (void)state;
    const char *bad[] = {"", "2026-11-24", "2026-11-24T09:00:00", "2026-11-24 09:00:00Z",
                         "2026-13-01T00:00:00Z", "2026-02-29T00:00:00Z",
                         "2026-11-31T00:00:00Z", "2026-11-24T24:00:00Z",
                         "2026-11-24T09:60:00Z", "2026-11-24T09:00:60Z",
                         "2026-11-24T09:00:00.Z", "2026-11-24T09:00:00+0100",
                         "2026-11-24T09:00:00+01", "2026-11-24T09:00:00Zjunk",
                         "26-11-24T09:00:00Z", "2026-1-24T09:00:00Z",
                         "2026-11-24T09:00:00+24:00", "+2026-11-24T09:00:00Z",
                         "2026-11-24T09:00:00.1234567890Z"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        reject(bad[i]);
    /* embedded NUL: the length given counts */
    int64_t ms;
    assert_int_equal(time_parse_rfc3339("2026-11-24T09:00:00Z\0x", 22, &ms), -1);
}

static void test_time_format_roundtrip(void **state)
{
    (void)state;
    char out[TIME_RFC3339_MAX];
    time_format_rfc3339(1795510800000LL, out);
    assert_string_equal(out, "2026-11-24T09:00:00Z");
    time_format_rfc3339(1795510800007LL, out);
    assert_string_equal(out, "2026-11-24T09:00:00.007Z");
    time_format_rfc3339(-1000, out);
    assert_string_equal(out, "1969-12-31T23:59:59Z");
    /* log lines: whole seconds keep their ".000" (CI once saw a log "ts"
     * without milliseconds, one line in a thousand) */
    time_format_rfc3339_ms(1795510800000LL, out);
    assert_string_equal(out, "2026-11-24T09:00:00.000Z");
    time_format_rfc3339_ms(1795510800120LL, out);
    assert_string_equal(out, "2026-11-24T09:00:00.120Z");
    for (int64_t ms = -86400000LL * 400; ms < 86400000LL * 365 * 60;
         ms += 86400000LL * 37 + 3601007) {
        time_format_rfc3339(ms, out);
        assert_int_equal(parse(out), ms);
    }
}

static void test_date(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(time_parse_date("2026-11-24", 10, &ms), 0);
    assert_int_equal(ms, parse("2026-11-24T00:00:00Z"));
    assert_int_equal(time_parse_date("2026-11-24T", 11, &ms), -1);
    assert_int_equal(time_parse_date("2026-02-30", 10, &ms), -1);
}

static void test_json_str(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    assert_int_equal(buf_json_str(&b, "a\"b\\c\n\x01", 7), 0);
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\n\\u0001\"");
    buf_reset(&b);
    /* valid UTF-8 passes, invalid bytes become U+FFFD, overlongs too */
    assert_int_equal(buf_json_str(&b, "\xc3\xa9\xff\xc0\xaf", 5), 0);
    assert_string_equal(b.data, "\"\xc3\xa9\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    buf_reset(&b);
    assert_int_equal(buf_json_strz(&b, NULL), 0);
    assert_string_equal(b.data, "null");
    buf_free(&b);
}

static void test_buf_growth(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(buf_printf(&b, "%d,", i % 10), 0);
    assert_int_equal(b.len, 20000);
    assert_int_equal(b.data[b.len], '\0');
    buf_free(&b);
    assert_null(b.data);
}

static void test_secure_equal(void **state)
{
    (void)state;
    assert_true(secure_equal("abc", 3, "abc", 3));
    assert_false(secure_equal("abc", 3, "abd", 3));
    assert_false(secure_equal("abc", 3, "abcd", 4));
    assert_true(secure_equal("", 0, "", 0));
}

static void test_parse_i64(void **state)
{
    (void)state;
    int64_t v;
    assert_int_equal(parse_i64("42", &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(parse_i64("-7", &v), 0);
    assert_int_equal(parse_i64("", &v), -1);
    assert_int_equal(parse_i64("4x", &v), -1);
    assert_int_equal(parse_i64(" 4", &v), -1);
    assert_int_equal(parse_i64("99999999999999999999", &v), -1);
}

static void test_random_hex(void **state)
{
    (void)state;
    char a[65], b[65];
    assert_int_equal(random_hex(a, 32), 0);
    assert_int_equal(random_hex(b, 32), 0);
    assert_int_equal(strlen(a), 64);
    assert_string_not_equal(a, b);
}

static void test_random_u64(void **state)
{
    (void)state;
    uint64_t or_all = 0, and_all = UINT64_MAX, first = random_u64();
    int same = 1;
    for (int i = 0; i < 256; i++) {
        uint64_t v = random_u64();
        or_all |= v;
        and_all &= v;
        same &= v == first;
    }
    assert_false(same);
    /* every bit varies across 256 draws (each stuck with probability 2^-255) */
    assert_true(or_all == UINT64_MAX && and_all == 0);
}

/* Draws backoff_ms(attempt, base, cap) n times: every draw in
 * [ceil(d/2), d], and the draws spread over that range (the smallest in
 * its lowest quarter, the largest in its highest; for n = 2000 a uniform
 * draw misses a quarter with probability 0.75^2000, i.e. never). */
static void check_backoff(int attempt, int64_t base, int64_t cap, int64_t d, int n)
{
    int64_t lo = d - d / 2, min = INT64_MAX, max = INT64_MIN;
    for (int k = 0; k < n; k++) {
        int64_t w = backoff_ms(attempt, base, cap);
        if (w < lo || w > d)
            fail_msg("backoff_ms(%d, %lld, %lld) = %lld, not in [%lld, %lld]", attempt,
                     (long long)base, (long long)cap, (long long)w, (long long)lo,
                     (long long)d);
        min = w < min ? w : min;
        max = w > max ? w : max;
    }
    int64_t q = (d - lo) / 4;
    if (n >= 2000 && (min > lo + q || max < d - q))
        fail_msg("backoff_ms(%d, ...) draws [%lld, %lld] do not cover [%lld, %lld]",
                 attempt, (long long)min, (long long)max, (long long)lo, (long long)d);
}

static void test_backoff(void **state)
{
    (void)state;
    /* the contract's: 1 s doubling to 60 s, never below half */
    const int64_t full[] = {1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000};
    for (int a = 1; a <= 9; a++)
        check_backoff(a, BACKOFF_BASE_MS, BACKOFF_MAX_MS, full[a - 1], 2000);
    check_backoff(0, BACKOFF_BASE_MS, BACKOFF_MAX_MS, 1000, 200);  /* < 1 counts as 1 */
    check_backoff(-5, BACKOFF_BASE_MS, BACKOFF_MAX_MS, 1000, 200);
    check_backoff(1000, BACKOFF_BASE_MS, BACKOFF_MAX_MS, 60000, 200);
    check_backoff(INT32_MAX, BACKOFF_BASE_MS, BACKOFF_MAX_MS, 60000, 200);
    /* the scheduler's cap, min(300 s, poll_interval): here 5 s */
    const int64_t sched[] = {1000, 2000, 4000, 5000, 5000};
    for (int a = 1; a <= 5; a++)
        check_backoff(a, 1000, 5000, sched[a - 1], 2000);
    /* an odd cap: half rounds up, so no wait is ever below half */
    check_backoff(2, 1000, 1001, 1001, 2000);
    check_backoff(1, 3, 3, 3, 200); /* [2, 3] */
    /* a cap below the base caps the first wait too */
    check_backoff(1, 1000, 400, 400, 200);
    /* nothing to wait */
    assert_int_equal(backoff_ms(1, 0, 60000), 0);
    assert_int_equal(backoff_ms(3, 1000, 0), 0);
    /* a huge cap: doubling stops at it, no overflow */
    check_backoff(200, 1000, INT64_MAX / 2, INT64_MAX / 2, 200);
}

/* ------------------------------------------------------ ids and URLs */

static int ev_ok(const char *s) { return id_valid_event(s, strlen(s)); }
static int cal_ok(const char *s) { return id_valid_calendar(s, strlen(s)); }

static void test_event_ids(void **state)
{
    (void)state;
    /* every shape Google issues or accepts (fixtures README) */
    const char *good[] = {
        "68k0p6ackplecqs9fuvbs1fju0",                  /* base32hex */
        "72o12msae3t6au1lim41i8tu6j_20250328T150000Z", /* timed instance */
        "2j96gmk1tgebtfpm9nvdl1o9tp_20211117",         /* all-day instance */
        "68k0p6ackplecqs9fuvbs1fju0_R20250326T123000", /* split series */
        "_60q30c1g60o30e1i60o4ac1g60rj8gpl88rj2c1h84s34h9g60s30c1g60o30c1g", /* Gmail */
        "cs0123456789abcdef0123456789abcd",            /* calsync's own */
        "evt123", "ev-1", "a",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!ev_ok(good[i]))
            fail_msg("refused event id '%s'", good[i]);
    const char *bad[] = {
        "", ".", "..", "...", "a.b", "../x", "a/b", "/", "a%2Fb", "%2E%2E", "a?b",
        "a#b", "a b", "a\tb", "a\nb", "a\x7f", "\xc3\xa9t\xc3\xa9", "a@b", "a+b",
        "a;b", "a=b", "a&b",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (ev_ok(bad[i]))
            fail_msg("accepted event id '%s'", bad[i]);
    /* NUL inside the length: the C string would stop short of it */
    assert_int_equal(id_valid_event("ab\0cd", 5), 0);
    assert_int_equal(id_valid_event(NULL, 0), 0);
    /* length bounds */
    char *big = malloc(ID_MAX + 2);
    assert_non_null(big);
    memset(big, 'a', ID_MAX + 1);
    big[ID_MAX + 1] = '\0';
    assert_int_equal(id_valid_event(big, ID_MAX), 1);
    assert_int_equal(id_valid_event(big, ID_MAX + 1), 0);
    assert_int_equal(id_valid_calendar(big, ID_MAX), 1);
    assert_int_equal(id_valid_calendar(big, ID_MAX + 1), 0);
    free(big);
}

static void test_calendar_ids(void **state)
{
    (void)state;
    const char *good[] = {
        "primary", "user@example.com", "first.last+tag@example.co.uk",
        "1cgehsm0iuibloe9ntag9l60sk@group.calendar.google.com",
        "en.usa#holiday@group.v.calendar.google.com", "p#weather@group.v.calendar.google.com",
        "addressbook#contacts@group.v.calendar.google.com", "redacted-calendar-1@example.com",
        "p", "a", "AAMkAGI2TG93AAA=", ".hidden", "a..b", "a.",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        if (!cal_ok(good[i]))
            fail_msg("refused calendar id '%s'", good[i]);
    const char *bad[] = {
        "", ".", "..", "...", "../x", "a/b", "/", "a%40b", "a?b", "a b", "a\tb", "a\r\nb",
        "\xc3\xa9@example.com", "a\\b", "a;b", "a&b", "a,b", "\"a\"@b",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (cal_ok(bad[i]))
            fail_msg("accepted calendar id '%s'", bad[i]);
    assert_int_equal(id_valid_calendar("primary\0x", 9), 0);
    assert_int_equal(id_valid_calendar(NULL, 0), 0);
}

/* Every "id" and "recurringEventId" of the captured real payloads passes
 * (calendar ids in calendar-list.json, event and channel ids elsewhere),
 * when the fixtures are on this machine ($CALSYNC_GOOGLE_FIXTURES or
 * ../shared/fixtures/google); skipped otherwise. */
static void test_fixture_ids(void **state)
{
    (void)state;
    const char *dir = getenv("CALSYNC_GOOGLE_FIXTURES");
    char def[4096];
    if (!dir) {
        snprintf(def, sizeof def, "%s", "../shared/fixtures/google");
        dir = def;
    }
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "fixtures not found at %s: skipped\n", dir);
        skip();
    }
    int checked = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l < 6 || strcmp(de->d_name + l - 5, ".json") != 0 ||
            strstr(de->d_name, "discovery"))
            continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        static char text[1 << 20];
        size_t n = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[n] = '\0';
        int calendars = strcmp(de->d_name, "calendar-list.json") == 0;
        static const char *const keys[] = {"\"id\": \"", "\"recurringEventId\": \""};
        for (int k = 0; k < 2; k++) {
            for (const char *p = text; (p = strstr(p, keys[k]));) {
                p += strlen(keys[k]);
                const char *q = strchr(p, '"');
                assert_non_null(q);
                size_t il = (size_t)(q - p);
                int ok = calendars ? id_valid_calendar(p, il) : id_valid_event(p, il);
                if (!ok)
                    fail_msg("%s: refused id '%.*s'", de->d_name, (int)il, p);
                checked++;
                p = q;
            }
        }
    }
    closedir(d);
    fprintf(stderr, "fixture ids checked: %d\n", checked);
    assert_true(checked > 50);
}

static void test_url_redact(void **state)
{
    (void)state;
    char out[256];
    const char *cases[][2] = {
        {"https://user:pass@hooks.example.com:8443/p/T000/B000/XXXX?token=secret#frag",
         "https://hooks.example.com:8443"},
        {"http://127.0.0.1:9/hooks?token=secret", "http://127.0.0.1:9"},
        {"http://a:b@c@evil.example/x", "http://evil.example"},
        {"https://hooks.slack.com/services/T0/B0/secretpath", "https://hooks.slack.com"},
        {"http://[::1]:80/x", "http://[::1]:80"},
        {"postgresql://calsync:pw@db.internal/calsync?sslmode=require",
         "postgresql://db.internal"},
        {"http://host", "http://host"},
        {"http://ho st/x", "http://ho"},
        {"calsync.db", "(not a URL)"},
        {"://x", "(not a URL)"},
        {"ht tp://x", "(not a URL)"},
        {"", "(not a URL)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_string_equal(url_redact(cases[i][0], out, sizeof out), cases[i][1]);
    assert_string_equal(url_redact(NULL, out, sizeof out), "(not a URL)");
    /* cut to fit, still terminated */
    char small[10];
    assert_string_equal(url_redact("https://hooks.example.com/x", small, sizeof small),
                        "https://h");
}

static void test_rate_limit(void **state)
{
    (void)state;
    struct rate_limit r = RATE_LIMIT_INIT(3, 1000);
    long sup = -1;
    assert_int_equal(rate_limit_take(&r, 5000, &sup), 1);
    assert_int_equal(sup, 0);
    assert_int_equal(rate_limit_take(&r, 5100, NULL), 1);
    assert_int_equal(rate_limit_take(&r, 5200, NULL), 1);
    for (int i = 0; i < 7; i++)
        assert_int_equal(rate_limit_take(&r, 5900, &sup), 0);
    /* the next window allows again and reports what was refused */
    assert_int_equal(rate_limit_take(&r, 6000, &sup), 1);
    assert_int_equal(sup, 7);
    assert_int_equal(rate_limit_take(&r, 6001, &sup), 1);
    assert_int_equal(sup, 0);
    /* a clock that steps back starts a window instead of refusing forever */
    assert_int_equal(rate_limit_take(&r, 10, &sup), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_valid),
        cmocka_unit_test(test_time_invalid),
        cmocka_unit_test(test_time_format_roundtrip),
        cmocka_unit_test(test_date),
        cmocka_unit_test(test_json_str),
        cmocka_unit_test(test_buf_growth),
        cmocka_unit_test(test_secure_equal),
        cmocka_unit_test(test_parse_i64),
        cmocka_unit_test(test_random_u64),
        cmocka_unit_test(test_random_hex),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_event_ids),
        cmocka_unit_test(test_calendar_ids),
        cmocka_unit_test(test_fixture_ids),
        cmocka_unit_test(test_url_redact),
        cmocka_unit_test(test_rate_limit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
