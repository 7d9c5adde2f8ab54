/* test_http.c -- route pattern matching and path parameter capture. */
#include "unit.h"

#include "http.h"

#include <string.h>

static int match(const char *pattern, const char *path, const char **params,
                 int *n)
{
    static char scratch[512];
    return http_match(pattern, path, scratch, params, n);
}

static void test_exact(void **state)
{
    (void)state;
    const char *p[HTTP_MAX_PARAMS];
    int n;
    assert_true(match("/v1/bookings", "/v1/bookings", p, &n));
    assert_int_equal(n, 0);
    assert_false(match("/v1/bookings", "/v1/bookings/", p, &n));
    assert_false(match("/v1/bookings", "/v1/booking", p, &n));
    assert_false(match("/v1/bookings", "/v1/bookingsx", p, &n));
    assert_false(match("/healthz", "/", p, &n));
}

static void test_params(void **state)
{
    (void)state;
    const char *p[HTTP_MAX_PARAMS];
    int n;
    assert_true(match("/v1/bookings/{uid}", "/v1/bookings/abc-1", p, &n));
    assert_int_equal(n, 1);
    assert_string_equal(p[0], "abc-1");
    assert_true(match("/v1/bookings/{uid}/audit", "/v1/bookings/x/audit", p, &n));
    assert_string_equal(p[0], "x");
    assert_false(match("/v1/bookings/{uid}", "/v1/bookings/", p, &n));      /* empty */
    assert_false(match("/v1/bookings/{uid}", "/v1/bookings/a/b", p, &n));   /* two */
    assert_false(match("/v1/bookings/{uid}/audit", "/v1/bookings/a/audits", p, &n));
    assert_true(match("/v1/calendars/{id}/sync", "/v1/calendars/17/sync", p, &n));
    assert_string_equal(p[0], "17");
}

static void test_many_params(void **state)
{
    (void)state;
    const char *p[HTTP_MAX_PARAMS];
    int n;
    assert_true(match("/{a}/{b}/{c}/{d}", "/1/2/3/4", p, &n));
    assert_int_equal(n, 4);
    assert_string_equal(p[3], "4");
    assert_false(match("/{a}/{b}/{c}/{d}/{e}", "/1/2/3/4/5", p, &n)); /* bounded */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_many_params),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
