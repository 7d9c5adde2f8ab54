/* test_outbox.c -- webhook delivery over real sockets to an in-process
 * libmicrohttpd receiver: body shape, signature, stable delivery id across
 * retries, per-booking order, backoff after failures. */
#include "unit.h"

#include "booking.h"
#include "json.h"
#include "outbox.h"
#include "store/db.h"
#include "store/store.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <lua.h>
#include <microhttpd.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_REQ 64

struct received {
    char body[4096];
    char sig[80];
    char delivery[80];
    int status_sent;
    int64_t at_ms;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct received reqs[MAX_REQ];
static int nreqs;
static int fail_next;      /* answer 500 to this many requests */
static struct MHD_Daemon *rx;
static char dbpath[64];
static struct config cfg;
static struct config_webhook hook;

static enum MHD_Result on_req(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version,
                              const char *data, size_t *size, void **ptr)
{
    (void)cls; (void)url; (void)method; (void)version;
    struct received *r = *ptr;
    if (!r) {
        r = calloc(1, sizeof *r);
        *ptr = r;
        return MHD_YES;
    }
    if (*size) {
        size_t l = strlen(r->body);
        if (l + *size < sizeof r->body)
            memcpy(r->body + l, data, *size);
        *size = 0;
        return MHD_YES;
    }
    const char *s = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Cal-Signature-256");
    const char *d = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Calsync-Delivery");
    snprintf(r->sig, sizeof r->sig, "%s", s ? s : "");
    snprintf(r->delivery, sizeof r->delivery, "%s", d ? d : "");
    pthread_mutex_lock(&mu);
    r->status_sent = fail_next > 0 ? 500 : 200;
    if (fail_next > 0)
        fail_next--;
    r->at_ms = time_mono_ms();
    if (nreqs < MAX_REQ)
        reqs[nreqs++] = *r;
    int status = r->status_sent;
    pthread_mutex_unlock(&mu);
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    enum MHD_Result ret = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void on_done(void *cls, struct MHD_Connection *c, void **ptr,
                    enum MHD_RequestTerminationCode t)
{
    (void)cls; (void)c; (void)t;
    free(*ptr);
    *ptr = NULL;
}

static int setup(void **state)
{
    (void)state;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(dbpath, sizeof dbpath, "/tmp/calsync-outbox-%d.db", (int)getpid());
    unlink(dbpath);
    struct cs_err err;
    if (store_init(dbpath, &err))
        return -1;
    rx = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, on_req, NULL,
                          MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL, MHD_OPTION_END);
    if (!rx)
        return -1;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(rx, MHD_DAEMON_INFO_BIND_PORT);
    static char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/hook", di->port);
    hook.url = url;
    hook.secret = (char *)"whsec_test";
    memset(&cfg, 0, sizeof cfg);
    cfg.webhooks = &hook;
    cfg.n_webhooks = 1;
    return outbox_start(&cfg, &err);
}

static int teardown(void **state)
{
    (void)state;
    outbox_stop();
    MHD_stop_daemon(rx);
    store_shutdown();
    char p[80];
    unlink(dbpath);
    snprintf(p, sizeof p, "%s-wal", dbpath);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", dbpath);
    unlink(p);
    curl_global_cleanup();
    return 0;
}

static int wait_for(int n, int timeout_ms)
{
    int64_t end = time_mono_ms() + timeout_ms;
    while (time_mono_ms() < end) {
        pthread_mutex_lock(&mu);
        int have = nreqs;
        pthread_mutex_unlock(&mu);
        if (have >= n)
            return have;
        usleep(10000);
    }
    return nreqs;
}

static struct booking mk(const char *uid, const char *title)
{
    struct booking b;
    memset(&b, 0, sizeof b);
    b.uid = (char *)uid;
    b.title = (char *)title;
    b.calendar_id = 7;
    b.start_ms = 1795510800000LL;
    b.end_ms = b.start_ms + 1800000;
    strcpy(b.status, "cancelled");
    return b;
}

static void enqueue(const char *uid, const char *trigger, const char *title)
{
    struct cs_err err;
    struct store_conn *c = store_conn(&err);
    assert_non_null(c);
    struct booking now = mk(uid, title), prev = mk(uid, "before");
    strcpy(prev.status, "accepted");
    assert_int_equal(store_begin(c, &err), 0);
    assert_int_equal(outbox_enqueue_booking(c, trigger, &now, &prev, "host deleted it",
                                            "push", "default", "0123456789ab", &err), 0);
    assert_int_equal(store_commit(c, &err), 0);
    outbox_kick();
}

static void expect_signature(const struct received *r)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int n;
    char hex[80];
    HMAC(EVP_sha256(), "whsec_test", 10, (const unsigned char *)r->body,
         strlen(r->body), mac, &n);
    for (unsigned i = 0; i < n; i++)
        sprintf(hex + 2 * i, "%02x", mac[i]);
    assert_string_equal(r->sig, hex);
}

static void test_body_and_signature(void **state)
{
    (void)state;
    nreqs = 0;
    enqueue("bk-1", "BOOKING_CANCELLED", "Intro");
    assert_int_equal(wait_for(1, 5000), 1);
    const struct received *r = &reqs[0];
    expect_signature(r);
    assert_int_equal(strncmp(r->delivery, "dlv_", 4), 0);
    /* the body is the contract's shape */
    lua_State *L = json_state();
    struct cs_err err;
    assert_int_equal(json_decode_object(L, r->body, strlen(r->body), &err), 0);
    const char *s;
    assert_int_equal(json_get_str(L, -1, "triggerEvent", &s, NULL, &err), 1);
    assert_string_equal(s, "BOOKING_CANCELLED");
    assert_int_equal(json_get_str(L, -1, "createdAt", &s, NULL, &err), 1);
    assert_int_equal(json_get_obj(L, -1, "payload", &err), 1);
    assert_int_equal(json_get_str(L, -1, "uid", &s, NULL, &err), 1);
    assert_string_equal(s, "bk-1");
    int64_t cal;
    assert_int_equal(json_get_int(L, -1, "calendarId", &cal, &err), 1);
    assert_int_equal(cal, 7);
    assert_int_equal(json_get_str(L, -1, "startTime", &s, NULL, &err), 1);
    assert_string_equal(s, "2026-11-24T09:00:00Z");
    assert_int_equal(json_get_str(L, -1, "status", &s, NULL, &err), 1);
    assert_string_equal(s, "cancelled");
    assert_int_equal(json_get_str(L, -1, "policyVersion", &s, NULL, &err), 1);
    assert_int_equal(json_get_obj(L, -1, "previous", &err), 1);
    assert_int_equal(json_get_str(L, -1, "title", &s, NULL, &err), 1);
    assert_string_equal(s, "before");
    lua_settop(L, 0);
}

static void test_retry_keeps_delivery_id_and_order(void **state)
{
    (void)state;
    pthread_mutex_lock(&mu);
    nreqs = 0;
    fail_next = 2;
    pthread_mutex_unlock(&mu);
    enqueue("bk-2", "BOOKING_RESCHEDULED", "first");
    enqueue("bk-2", "BOOKING_UPDATED", "second");
    /* 2 failures of the first, then first ok, then second */
    assert_int_equal(wait_for(4, 15000), 4);
    assert_int_equal(reqs[0].status_sent, 500);
    assert_int_equal(reqs[1].status_sent, 500);
    assert_int_equal(reqs[2].status_sent, 200);
    assert_string_equal(reqs[0].delivery, reqs[1].delivery);
    assert_string_equal(reqs[1].delivery, reqs[2].delivery);
    assert_string_not_equal(reqs[2].delivery, reqs[3].delivery);
    assert_non_null(strstr(reqs[2].body, "\"first\""));
    assert_non_null(strstr(reqs[3].body, "\"second\""));
    assert_string_equal(reqs[0].body, reqs[2].body); /* same bytes each try */
    /* backoff: >= 0.5 s before the 2nd try, >= 1 s before the 3rd */
    assert_true(reqs[1].at_ms - reqs[0].at_ms >= 450);
    assert_true(reqs[2].at_ms - reqs[1].at_ms >= 950);
    /* the database agrees: both delivered, attempts counted (the sender
     * records the 4th answer just after the server saw the request: wait
     * for it rather than race it) */
    struct cs_err err;
    struct store_conn *c = store_conn(&err);
    static const char sql[] =
        "SELECT attempts, state FROM outbox WHERE booking_uid = 'bk-2' ORDER BY id";
    static const char done_sql[] =
        "SELECT count(*) FROM outbox WHERE booking_uid = 'bk-2' AND state = 'delivered'";
    struct db_stmt *st;
    for (int64_t end = time_mono_ms() + 5000; time_mono_ms() < end; usleep(10000)) {
        st = db_stmt(c, done_sql, &err);
        assert_int_equal(db_step(st), DB_ROW);
        int n = db_col_int(st, 0);
        db_reset(st);
        if (n == 2)
            break;
    }
    st = db_stmt(c, sql, &err);
    assert_int_equal(db_step(st), DB_ROW);
    assert_int_equal(db_col_int(st, 0), 3);
    assert_string_equal(db_col_text(st, 1), "delivered");
    assert_int_equal(db_step(st), DB_ROW);
    assert_int_equal(db_col_int(st, 0), 1);
    db_reset(st);
}

static void test_calendar_error(void **state)
{
    (void)state;
    nreqs = 0;
    struct cs_err err;
    struct store_conn *c = store_conn(&err);
    assert_int_equal(outbox_enqueue_calendar_error(c, 3, "revoked", "invalid_grant", &err), 0);
    outbox_kick();
    assert_int_equal(wait_for(1, 5000), 1);
    assert_non_null(strstr(reqs[0].body, "\"triggerEvent\":\"CALENDAR_ERROR\""));
    assert_non_null(strstr(reqs[0].body, "\"payload\":{\"calendarId\":3,\"state\":\"revoked\",\"reason\":\"invalid_grant\"}"));
    expect_signature(&reqs[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_body_and_signature),
        cmocka_unit_test(test_retry_keeps_delivery_id_and_order),
        cmocka_unit_test(test_calendar_error),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
