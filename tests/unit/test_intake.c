/* test_intake.c -- POST /webhooks/<provider> for a provider that is not
 * Google: the route picks the provider (mem_provider.c, whose pushes are
 * headers of its own), a handshake is answered with the provider's text, a
 * batch of messages is checked message by message (a wrong token does not
 * refuse its neighbours) and answered 202, a request the provider refuses
 * is 400, a route naming no provider 404. Real HTTP server on a loopback
 * port, real journal, real database. */
#include "unit.h"

#include "mem_provider.h"

#include "config.h"
#include "http.h"
#include "intake.h"
#include "store/db.h"
#include "store/store.h"

#include <curl/curl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dbpath[96];
static struct config cfg;
static atomic_int synced[3]; /* per calendar id 1, 2 */

static void on_sync(int64_t cal)
{
    if (cal >= 1 && cal <= 2)
        atomic_fetch_add(&synced[cal], 1);
}

static const struct http_route routes[] = {
    {"POST", "/webhooks/mem", intake_handle, HTTP_INLINE},
    {"POST", "/webhooks/nope", intake_handle, HTTP_INLINE},
    {NULL, NULL, NULL, 0},
};

static int setup(void **state)
{
    (void)state;
    struct cs_err err = {{0}};
    if (provider_register(&mem_provider))
        return -1;
    snprintf(dbpath, sizeof dbpath, "/tmp/calsync-intake-unit-%d.db", (int)getpid());
    unlink(dbpath);
    if (config_defaults(&cfg) || store_init(dbpath, &err))
        return -1;
    if (db_script(store_conn(&err),
                     "INSERT INTO credentials (id, provider, refresh_token, created_at)"
                     " VALUES (1, 'mem', 'r', 0);"
                     "INSERT INTO calendars (id, credential_id, external_id, state,"
                     " created_at, updated_at) VALUES (1, 1, 'a', 'active', 0, 0),"
                     " (2, 1, 'b', 'active', 0, 0);"
                     "INSERT INTO channels (id, calendar_id, resource_id, token, expiration,"
                     " state, created_at) VALUES"
                     " ('sub-a', 1, 'ra', 'tok-a', 9999999999999, 'live', 0),"
                     " ('sub-b', 2, 'rb', 'tok-b', 9999999999999, 'live', 0);",
                  &err))
        return -1;
    struct intake_hooks hooks = {.sync = on_sync};
    intake_set_hooks(&hooks);
    if (intake_start(dbpath, &err))
        return -1;
    free(cfg.listen);
    cfg.listen = strdup("127.0.0.1:0");
    cfg.listen_port = 0;
    return http_start(&cfg, routes, &err);
}

static int teardown(void **state)
{
    (void)state;
    char side[128];
    http_stop();
    intake_stop();
    store_shutdown();
    unlink(dbpath);
    for (int i = 0; i < 2; i++) {
        snprintf(side, sizeof side, "%s-intake.%d", dbpath, i);
        unlink(side);
    }
    snprintf(side, sizeof side, "%s-wal", dbpath);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", dbpath);
    unlink(side);
    return 0;
}

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    strncat(ud, p, 255 - strlen(ud) < sz * n ? 255 - strlen(ud) : sz * n);
    return sz * n;
}

/* POSTs to path with one extra header; the status, the body into body[256]. */
static long post(const char *path, const char *header, char *body)
{
    char url[128];
    long status = 0;
    body[0] = '\0';
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", http_port(), path);
    CURL *h = curl_easy_init();
    struct curl_slist *hd = curl_slist_append(NULL, header);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
    assert_int_equal(curl_easy_perform(h), CURLE_OK);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(hd);
    curl_easy_cleanup(h);
    return status;
}

/* Sync requests of calendar cal once everything answered so far is
 * committed (the flusher calls the sync hook before it counts a batch as
 * committed, so the count is final when intake_flush returns). */
static int synced_after_flush(int cal)
{
    assert_int_equal(intake_flush(10000), 0);
    return atomic_load(&synced[cal]);
}

static void test_handshake(void **state)
{
    (void)state;
    char body[256];
    assert_int_equal(post("/webhooks/mem", "X-Mem-Handshake: echo-me-42", body), 200);
    assert_string_equal(body, "echo-me-42");
}

static void test_batch(void **state)
{
    (void)state;
    char body[256];
    int a = synced_after_flush(1), b = synced_after_flush(2);
    assert_int_equal(post("/webhooks/mem",
                          "X-Mem-Push: sub-a:tok-a:updated,sub-b:tok-b:updated", body), 202);
    assert_int_equal(synced_after_flush(1), a + 1);
    assert_int_equal(synced_after_flush(2), b + 1);
    /* a forged message (wrong token) in a batch is refused on its own; its
     * neighbour still counts */
    assert_int_equal(post("/webhooks/mem",
                          "X-Mem-Push: sub-a:forged:updated,sub-b:tok-b:updated", body), 202);
    assert_int_equal(synced_after_flush(1), a + 1);
    assert_int_equal(synced_after_flush(2), b + 2);
    /* one message: answered like Google's */
    assert_int_equal(post("/webhooks/mem", "X-Mem-Push: sub-a:tok-a:updated", body), 200);
    assert_int_equal(synced_after_flush(1), a + 2);
    /* a subscription's first message asks for nothing */
    assert_int_equal(post("/webhooks/mem", "X-Mem-Push: sub-b:tok-b:sync", body), 200);
    assert_int_equal(synced_after_flush(2), b + 2);
}

static void test_refused(void **state)
{
    (void)state;
    char body[256];
    assert_int_equal(post("/webhooks/mem", "X-Mem-Push: garbage", body), 400);
    assert_int_equal(post("/webhooks/mem", "X-Other: 1", body), 400);
    assert_int_equal(post("/webhooks/nope", "X-Mem-Push: sub-a:tok-a:updated", body), 404);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake),
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_refused),
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
