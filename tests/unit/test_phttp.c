/* test_phttp.c -- the HTTP exchange the providers share (src/provider/
 * phttp.c) and its JSON helpers (pjson.c), driven through a third,
 * made-up provider client: what a provider gives as data and hooks (which
 * answers are retried, fractional Retry-After, the error shape, the
 * budget, the token) decides what the shared code does. The wire part
 * runs against a small HTTP server on a real socket in this process.
 * Google's and Graph's own uses are covered by test_google.c and
 * test_msgraph.c. */
#include "unit.h"

#include "json.h"
#include "provider/phttp.h"
#include "provider/pjson.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <lua.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------- the made-up provider */

static int teapot_retryable(long status, const char *reason)
{
    (void)reason;
    return status == 418; /* nothing else, not even 503 */
}

static int teapot_classify(enum provider_op op, long status, const char *reason)
{
    (void)op, (void)reason;
    return status == 503 ? PROVIDER_PERMANENT : PROVIDER_TRANSIENT;
}

/* {"error":{"kind":"...","text":"..."}} */
static void kind_detail(lua_State *L, int idx, char *reason, size_t rcap, char *message,
                        size_t mcap)
{
    phttp_copy_field(L, idx, "kind", reason, rcap);
    phttp_copy_field(L, idx, "text", message, mcap);
}

static int budget_calls, token_calls, token_forced;

static int count_budget(int64_t credential_id, int64_t deadline, struct cs_err *err)
{
    (void)credential_id, (void)deadline, (void)err;
    budget_calls++;
    return 0;
}

static int fake_token(struct phttp_auth *a, int force, char *out, size_t cap,
                      struct phttp_resp *resp, struct cs_err *err)
{
    (void)a, (void)resp, (void)err;
    token_calls++;
    token_forced += force;
    snprintf(out, cap, "%s", force ? "tok-2" : "tok-1");
    return PHTTP_OK;
}

static struct phttp_client testprov = {
    .name = "testprov",
    .display = "Testprov",
    .user_agent = "testprov-agent",
    .retry_after_fraction = 1,
    .retryable = teapot_retryable,
    .error_detail = kind_detail,
    .budget = count_budget,
    .access_token = fake_token,
};

/* ------------------------------------------------------- pure pieces */

static void test_retry_after_fraction_is_the_providers(void **state)
{
    (void)state;
    int64_t w = -1;
    assert_int_equal(phttp_parse_retry_after("2.128", 5, 0, 1, &w), 0);
    assert_int_equal(w, 2128);
    assert_int_equal(phttp_parse_retry_after("2.128", 5, 0, 0, &w), -1);
    assert_int_equal(phttp_parse_retry_after(" 3 ", 3, 0, 0, &w), 0);
    assert_int_equal(w, 3000);
    assert_int_equal(phttp_parse_retry_after("1.", 2, 0, 1, &w), -1);
    assert_int_equal(phttp_parse_retry_after("99999999.9", 10, 0, 1, &w), 0);
    assert_int_equal(w, PHTTP_RETRY_AFTER_MAX_MS);
    int64_t now;
    assert_int_equal(time_parse_rfc3339("2015-10-21T07:27:50Z", 20, &now), 0);
    const char *d = "Wed, 21 Oct 2015 07:28:00 GMT";
    for (int f = 0; f < 2; f++) {
        assert_int_equal(phttp_parse_retry_after(d, strlen(d), now, f, &w), 0);
        assert_int_equal(w, 10000);
    }
}

static void test_error_shape_is_the_providers(void **state)
{
    (void)state;
    char reason[16], msg[32];
    const char *own = "{\"error\":{\"kind\":\"teaTime\",\"text\":\"short\\nand stout\"}}";
    assert_int_equal(phttp_parse_error(&testprov, own, strlen(own), reason, sizeof reason,
                                       msg, sizeof msg), 0);
    assert_string_equal(reason, "teaTime");
    assert_string_equal(msg, "short and stout"); /* control bytes made spaces */
    /* Google's shape means nothing to this provider: recognised, empty */
    const char *other = "{\"error\":{\"errors\":[{\"reason\":\"rateLimitExceeded\"}]}}";
    assert_int_equal(phttp_parse_error(&testprov, other, strlen(other), reason,
                                       sizeof reason, msg, sizeof msg), 0);
    assert_string_equal(reason, "");
    /* OAuth's shape is read for every provider, cut to the caps */
    const char *oauth = "{\"error\":\"invalid_grant_and_more_text\",\"error_description\":\"x\"}";
    assert_int_equal(phttp_parse_error(&testprov, oauth, strlen(oauth), reason,
                                       sizeof reason, msg, sizeof msg), 0);
    assert_string_equal(reason, "invalid_grant_a");
    assert_string_equal(msg, "x");
    assert_int_equal(phttp_parse_error(&testprov, "[1]", 3, reason, sizeof reason, msg,
                                       sizeof msg), -1);
    assert_string_equal(reason, "");
}

static void test_page_envelope_keys_are_the_providers(void **state)
{
    (void)state;
    lua_State *L = json_state();
    struct cs_err err = {{0}};
    struct provider_page p;
    static const struct pjson_page_keys keys = {"more", "cursor", "rows"};
    const char *last = "{\"cursor\":\"c1\",\"rows\":[{\"id\":\"a\"},{\"id\":\"b\"}]}";
    lua_settop(L, 0);
    assert_int_equal(json_decode_object(L, last, strlen(last), &err), 0);
    assert_int_equal(pjson_page_read(L, 1, 1, &keys, &p, &err), 0);
    assert_int_equal(p.n, 2);
    assert_string_equal(p.next_cursor, "c1");
    assert_null(p.next_page);
    assert_int_equal(lua_gettop(L), 2); /* the rows stay pushed above the page */
    const char *both = "{\"more\":\"m\",\"cursor\":\"c\"}";
    lua_settop(L, 0);
    assert_int_equal(json_decode_object(L, both, strlen(both), &err), 0);
    assert_int_equal(pjson_page_top(1, &keys, &p, &err), PROVIDER_MALFORMED);
    assert_string_equal(err.msg, "page has both more and cursor");
    assert_int_equal(lua_gettop(L), 0); /* popped on failure */
    const char *obj = "{\"more\":\"m\",\"rows\":{\"a\":1}}";
    assert_int_equal(json_decode_object(L, obj, strlen(obj), &err), 0);
    assert_int_equal(pjson_page_read(L, 1, 0, &keys, &p, &err), -1);
    assert_string_equal(err.msg, "'rows' is not an array");
    assert_int_equal(lua_gettop(L), 1);
    lua_settop(L, 0);
    /* bounded strings and cuts */
    const char *s = NULL;
    const char *long_title = "{\"t\":\"abcdef\"}";
    assert_int_equal(json_decode_object(L, long_title, strlen(long_title), &err), 0);
    assert_int_equal(pjson_str_bounded(L, 1, "t", 5, &s, &err), -1);
    assert_null(s);
    assert_int_equal(pjson_str_bounded(L, 1, "t", 6, &s, &err), 1);
    assert_int_equal(pjson_str_bounded(L, 1, "none", 6, &s, &err), 0);
    assert_null(s);
    lua_settop(L, 0);
    char dst[8];
    assert_string_equal(pjson_cut_utf8("ab\xc3\xa9z", 5, dst, 3), "ab"); /* not half an é */
    snprintf(err.msg, sizeof err.msg, "bad start");
    assert_int_equal(pjson_event_error(&err, NULL), -1);
    assert_string_equal(err.msg, "event ?: bad start");
}

static void test_invalid_id_makes_no_request(void **state)
{
    (void)state;
    struct phttp_auth a = {NULL, 7, 0};
    struct phttp_resp r;
    struct cs_err err = {{0}};
    struct phttp_call c = {.what = "things.get", .method = "GET", .invalid = "thing id"};
    phttp_resp_init(&r);
    buf_init(&c.url);
    assert_int_equal(buf_puts(&c.url, "http://127.0.0.1:9/things/.."), 0);
    token_calls = budget_calls = 0;
    assert_int_equal(phttp_call_run(&testprov, &a, &c, 0, &r, &err), PHTTP_EINVAL);
    assert_string_equal(err.msg, "things.get: refused: the thing id is not one Testprov can "
                                 "have issued");
    assert_int_equal(token_calls + budget_calls, 0);
    assert_null(c.url.data); /* freed */
    assert_int_equal(r.status, 0);
    assert_int_equal(phttp_rc_class(PROVIDER_OP_READ, PHTTP_EINVAL, &r, teapot_classify),
                     PROVIDER_PERMANENT);
    phttp_resp_free(&r);
}

/* ------------------------------------------------------------ the wire
 * One server thread answers the scripted responses in order, one
 * connection each (Connection: close), and keeps each request's head. */

#define SCRIPT_MAX 4

struct server {
    int fd, port, n;
    const char *answer[SCRIPT_MAX];
    char request[SCRIPT_MAX][2048];
};

static void *serve(void *p)
{
    struct server *s = p;
    for (int i = 0; i < s->n; i++) {
        int c = accept(s->fd, NULL, NULL);
        if (c < 0)
            break;
        size_t len = 0;
        while (len < sizeof s->request[i] - 1 && !strstr(s->request[i], "\r\n\r\n")) {
            ssize_t k = read(c, s->request[i] + len, sizeof s->request[i] - 1 - len);
            if (k <= 0)
                break;
            len += (size_t)k;
            s->request[i][len] = '\0';
        }
        if (write(c, s->answer[i], strlen(s->answer[i])) < 0)
            break;
        close(c);
    }
    return NULL;
}

static int server_start(struct server *s, pthread_t *t)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&sa, sizeof sa) ||
        listen(s->fd, 8) || getsockname(s->fd, (struct sockaddr *)&sa, &sl))
        return -1;
    s->port = ntohs(sa.sin_port);
    return pthread_create(t, NULL, serve, s);
}

static const char a_teapot[] =
    "HTTP/1.1 418 I'm a teapot\r\nConnection: close\r\nRetry-After: 0.05\r\n\r\n"
    "{\"error\":{\"kind\":\"teaTime\",\"text\":\"steep\"}}";
static const char a_unauth[] =
    "HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
static const char a_unavailable[] =
    "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
static const char a_ok[] =
    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";

static int run(struct server *s, struct phttp_call *c, struct phttp_resp *r,
               struct cs_err *err)
{
    pthread_t t;
    struct phttp_auth a = {NULL, 7, 5000};
    if (server_start(s, &t))
        return -100;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/things/1", s->port);
    buf_init(&c->url);
    int bad = buf_puts(&c->url, url);
    int rc = phttp_call_run(&testprov, &a, c, bad, r, err);
    pthread_join(t, NULL);
    close(s->fd);
    return rc;
}

static void test_wire_retries_what_the_provider_says(void **state)
{
    (void)state;
    struct server s = {.n = 3, .answer = {a_teapot, a_unauth, a_ok}};
    struct phttp_resp r;
    struct cs_err err = {{0}};
    struct phttp_call c = {.what = "things.get", .method = "GET", .push = 1,
                           .headers = {"X-Extra: one", "Prefer: two"}};
    phttp_resp_init(&r);
    token_calls = token_forced = budget_calls = 0;
    lua_State *L = json_state();
    int top = lua_gettop(L);
    /* 418 is retried (this provider says so, after its fractional
     * Retry-After), the 401 forces one token refresh, then 200 */
    assert_int_equal(run(&s, &c, &r, &err), PHTTP_OK);
    assert_int_equal(r.status, 200);
    assert_int_equal(token_calls, 2);
    assert_int_equal(token_forced, 1);
    assert_int_equal(budget_calls, 2); /* once per authenticated round, not per retry */
    assert_int_equal(lua_gettop(L), top + 1); /* the body, pushed */
    lua_settop(L, top);
    assert_non_null(strstr(s.request[0], "Authorization: Bearer tok-1\r\n"));
    assert_non_null(strstr(s.request[2], "Authorization: Bearer tok-2\r\n"));
    assert_non_null(strstr(s.request[2], "User-Agent: testprov-agent\r\n"));
    assert_non_null(strstr(s.request[2], "X-Extra: one\r\nPrefer: two\r\n"));
    phttp_resp_free(&r);

    /* 503 is not retried by this provider: the answer is final */
    struct server s2 = {.n = 1, .answer = {a_unavailable}};
    struct phttp_call c2 = {.what = "things.get", .method = "GET"};
    phttp_resp_init(&r);
    assert_int_equal(run(&s2, &c2, &r, &err), PHTTP_EHTTP);
    assert_int_equal(r.status, 503);
    assert_int_equal(r.attempts, 1);
    assert_int_equal(phttp_rc_class(PROVIDER_OP_READ, PHTTP_EHTTP, &r, teapot_classify),
                     PROVIDER_PERMANENT);
    phttp_resp_free(&r);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    phttp_init(&testprov, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry_after_fraction_is_the_providers),
        cmocka_unit_test(test_error_shape_is_the_providers),
        cmocka_unit_test(test_page_envelope_keys_are_the_providers),
        cmocka_unit_test(test_invalid_id_makes_no_request),
        cmocka_unit_test(test_wire_retries_what_the_provider_says),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    phttp_thread_release();
    curl_global_cleanup();
    return rc;
}
