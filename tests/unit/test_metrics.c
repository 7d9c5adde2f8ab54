/* test_metrics.c -- the exposition: every declared family with HELP and
 * TYPE before anything is counted, histograms cumulative, undeclared
 * series still shown (and marked). */
#include "unit.h"

#include "metrics.h"
#include "provider/provider.h"

#include <stdio.h>
#include <string.h>

static char *render(struct buf *b)
{
    buf_init(b);
    assert_int_equal(metrics_render(b), 0);
    assert_int_equal(buf_append(b, "", 1), 0);
    return b->data;
}

static void count_family(const char *name, const char *type, const char *help, void *ud)
{
    (void)type;
    assert_true(strlen(help) > 10);
    assert_true(strncmp(name, "calsync_", 8) == 0);
    (*(int *)ud)++;
}

static void test_every_family_from_the_start(void **state)
{
    (void)state;
    metrics_reset();
    /* the providers' own families, declared at start as service.c does */
    assert_int_equal(provider_metrics_declare(), 0);
    assert_int_equal(provider_metrics_declare(), 0); /* twice: kept once */
    struct buf b;
    char *t = render(&b);
    int n = 0;
    metrics_families(count_family, &n);
    assert_true(n > 30);
    assert_int_equal((int)(strstr(t, "# HELP calsync_google_requests_total ") != NULL), 1);
    assert_null(strstr(strstr(t, "# HELP calsync_google_requests_total ") + 1,
                       "# HELP calsync_google_requests_total "));
    assert_non_null(strstr(t, "# HELP calsync_writes_total "));
    assert_non_null(strstr(t, "# TYPE calsync_writes_total counter\n"
                              "calsync_writes_total{result=\"conflict\"} 0\n"));
    assert_non_null(strstr(t, "# TYPE calsync_policy_decisions_total counter\n"));
    assert_non_null(strstr(t, "calsync_build_info{version=\""));
    assert_non_null(strstr(t, "calsync_sync_duration_seconds_bucket{kind=\"full\",le=\"+Inf\"} 0\n"));
    assert_non_null(strstr(t, "calsync_google_request_duration_seconds_bucket{le=\"0.005\"} 0\n"));
    buf_free(&b);
}

static void test_histogram_is_cumulative(void **state)
{
    (void)state;
    metrics_reset();
    metrics_observe("calsync_policy_decision_duration_seconds", 0.001);
    metrics_observe("calsync_policy_decision_duration_seconds", 0.2);
    metrics_observe_ms("calsync_policy_decision_duration_seconds", 90000);
    metrics_observe("calsync_policy_decision_duration_seconds", -1); /* clock went back: 0 */
    struct buf b;
    char *t = render(&b);
    const char *f = "calsync_policy_decision_duration_seconds";
    char want[200];
    snprintf(want, sizeof want, "%s_bucket{le=\"0.005\"} 2\n", f);
    assert_non_null(strstr(t, want));
    snprintf(want, sizeof want, "%s_bucket{le=\"0.25\"} 3\n", f);
    assert_non_null(strstr(t, want));
    snprintf(want, sizeof want, "%s_bucket{le=\"60\"} 3\n%s_bucket{le=\"+Inf\"} 4\n", f, f);
    assert_non_null(strstr(t, want));
    snprintf(want, sizeof want, "%s_sum 90.201000\n%s_count 4\n", f, f);
    assert_non_null(strstr(t, want));
    buf_free(&b);
}

static void test_undeclared_series_is_marked(void **state)
{
    (void)state;
    metrics_reset();
    metrics_inc("calsync_not_declared_total{x=\"1\"}");
    struct buf b;
    char *t = render(&b);
    assert_non_null(strstr(t, "# HELP calsync_not_declared_total (undeclared family)\n"
                              "# TYPE calsync_not_declared_total counter\n"
                              "calsync_not_declared_total{x=\"1\"} 1\n"));
    buf_free(&b);
}

static void collector(struct buf *out)
{
    buf_printf(out, "# TYPE calsync_outbox_pending gauge\ncalsync_outbox_pending 3\n");
}

static void test_collector_gets_help(void **state)
{
    (void)state;
    metrics_reset();
    metrics_register_collector(collector);
    metrics_register_collector(collector); /* once only */
    struct buf b;
    char *t = render(&b);
    const char *h = strstr(t, "# HELP calsync_outbox_pending Webhooks not yet acknowledged.\n"
                              "# TYPE calsync_outbox_pending gauge\ncalsync_outbox_pending 3\n");
    assert_non_null(h);
    assert_null(strstr(h + 1, "# HELP calsync_outbox_pending"));
    buf_free(&b);
    metrics_reset();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_family_from_the_start),
        cmocka_unit_test(test_histogram_is_cumulative),
        cmocka_unit_test(test_undeclared_series_is_marked),
        cmocka_unit_test(test_collector_gets_help),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
