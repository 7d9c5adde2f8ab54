/* test_http.c -- route pattern matching and path parameter capture; the
 * pure admission checks (Host, Content-Type, origins, exposed listen). */
#include "unit.h"

#include "http.h"

#include <stdlib.h>
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

static void test_host(void **state)
{
    (void)state;
    const char *pub = "calsync.example.com";
    assert_true(http_host_allowed("127.0.0.1:8080", pub));
    assert_true(http_host_allowed("127.0.0.1", pub));
    assert_true(http_host_allowed("10.1.2.3:80", pub));
    assert_true(http_host_allowed("[::1]:8080", pub));
    assert_true(http_host_allowed("[::1]", pub));
    assert_true(http_host_allowed("localhost:8080", pub));
    assert_true(http_host_allowed("LocalHost", pub));
    assert_true(http_host_allowed("calsync.example.com", pub));
    assert_true(http_host_allowed("CALSYNC.example.com:443", pub));
    assert_true(http_host_allowed("", pub)); /* no authority: nothing to rebind */
    /* a rebinding page's own name */
    assert_false(http_host_allowed("evil.example:8080", pub));
    assert_false(http_host_allowed("localhost.evil.example", pub));
    assert_false(http_host_allowed("calsync.example.com.evil.example", pub));
    assert_false(http_host_allowed("127.0.0.1.nip.io", pub));
    assert_false(http_host_allowed("localhost.", pub));
    assert_false(http_host_allowed("evil.example", NULL));
    assert_false(http_host_allowed("evil.example", ""));
    /* malformed */
    assert_false(http_host_allowed("127.0.0.1:80x", pub));
    assert_false(http_host_allowed("127.0.0.1:", pub));
    assert_false(http_host_allowed("[::1", pub));
    assert_false(http_host_allowed("[nothex]:80", pub));
    assert_false(http_host_allowed(":80", pub));
}

static void test_json_type(void **state)
{
    (void)state;
    assert_true(http_is_json("application/json"));
    assert_true(http_is_json("Application/JSON"));
    assert_true(http_is_json("application/json; charset=utf-8"));
    assert_true(http_is_json(" application/json ;charset=UTF-8"));
    assert_false(http_is_json(NULL));
    assert_false(http_is_json(""));
    assert_false(http_is_json("text/plain"));
    assert_false(http_is_json("application/jsonx"));
    assert_false(http_is_json("application/json-patch+json"));
    assert_false(http_is_json("application/x-www-form-urlencoded"));
    assert_false(http_is_json("multipart/form-data; boundary=application/json"));
}

static void test_origin(void **state)
{
    (void)state;
    char o[300], h[256];
    assert_int_equal(http_url_origin("https://Calsync.Example.com/base/", o, sizeof o,
                                     h, sizeof h), 0);
    assert_string_equal(o, "https://calsync.example.com");
    assert_string_equal(h, "calsync.example.com");
    assert_int_equal(http_url_origin("https://x.example:443", o, sizeof o, NULL, 0), 0);
    assert_string_equal(o, "https://x.example");
    assert_int_equal(http_url_origin("http://x.example:8080?q", o, sizeof o, NULL, 0), 0);
    assert_string_equal(o, "http://x.example:8080");
    assert_int_equal(http_url_origin("HTTP://user:pw@127.0.0.1:80/", o, sizeof o, h, sizeof h), 0);
    assert_string_equal(o, "http://127.0.0.1");
    assert_string_equal(h, "127.0.0.1");
    assert_int_equal(http_url_origin("http://[::1]:8080/x", o, sizeof o, h, sizeof h), 0);
    assert_string_equal(o, "http://[::1]:8080");
    assert_int_equal(http_url_origin("null", o, sizeof o, NULL, 0), -1);
    assert_int_equal(http_url_origin("ftp://x", o, sizeof o, NULL, 0), -1);
    assert_int_equal(http_url_origin("http://", o, sizeof o, NULL, 0), -1);
    assert_int_equal(http_url_origin("http://x:0", o, sizeof o, NULL, 0), -1);
    assert_int_equal(http_url_origin("http://x:99999", o, sizeof o, NULL, 0), -1);
    assert_int_equal(http_url_origin("http://x:8a", o, sizeof o, NULL, 0), -1);
    assert_int_equal(http_url_origin("http://x", o, 8, NULL, 0), -1); /* does not fit */
}

static void test_exposed_listen(void **state)
{
    (void)state;
    struct config cfg;
    struct cs_err err = {{0}};
    assert_int_equal(config_defaults(&cfg), 0);
    assert_int_equal(http_check_config(&cfg, &err), 0); /* 127.0.0.1 */
    strcpy(cfg.listen_host, "127.5.6.7");
    assert_int_equal(http_check_config(&cfg, &err), 0);
    strcpy(cfg.listen_host, "0.0.0.0");
    assert_int_equal(http_check_config(&cfg, &err), -1);
    assert_non_null(strstr(err.msg, "api_token"));
    strcpy(cfg.listen_host, "*");
    assert_int_equal(http_check_config(&cfg, &err), -1);
    strcpy(cfg.listen_host, "192.168.1.2");
    assert_int_equal(http_check_config(&cfg, &err), -1);
    cfg.api_token = strdup("t");
    assert_int_equal(http_check_config(&cfg, &err), 0);
    strcpy(cfg.listen_host, "*");
    assert_int_equal(http_check_config(&cfg, &err), 0);
    strcpy(cfg.listen_host, "example.com");
    assert_int_equal(http_check_config(&cfg, &err), -1);
    assert_non_null(strstr(err.msg, "IPv4"));
    config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact),
        cmocka_unit_test(test_params),
        cmocka_unit_test(test_many_params),
        cmocka_unit_test(test_host),
        cmocka_unit_test(test_json_type),
        cmocka_unit_test(test_origin),
        cmocka_unit_test(test_exposed_listen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
