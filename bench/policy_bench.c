/* policy_bench.c -- cost of one hook call through the runtime.
 *
 * Loads the shipped default policy from policies/ (run from the repository
 * root) and times policy_decide() for a time change: dispatch, the
 * argument tables and their read-only proxies, the call, the validation,
 * the metrics. Prints the median, p90 and p99 nanoseconds per call over
 * batches of calls.
 *
 *   cc ... -o build/bench/policy_bench bench/policy_bench.c $(LIB_OBJ) $(LDLIBS_ALL)
 *   build/bench/policy_bench [CALLS]
 */
#include "config.h"
#include "log.h"
#include "policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 1000

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    long calls = argc > 1 ? atol(argv[1]) : 200000;
    struct config cfg;
    struct cs_err err = {{0}};
    if (config_defaults(&cfg))
        return 1;
    log_set_level(LOG_WARN);
    if (policy_engine_start(&cfg, &err)) {
        fprintf(stderr, "policy_bench: %s\n", err.msg);
        return 1;
    }
    struct booking b = {.uid = "bk-1", .calendar_id = 1, .title = "Intro call",
                        .start_ms = 1795600800000LL, .end_ms = 1795602600000LL,
                        .status = "accepted", .event_id = "ev-1",
                        .updated_ms = 1795500000000LL};
    const char *ev = "{\"id\":\"ev-1\",\"status\":\"confirmed\",\"summary\":\"Intro call\","
                     "\"start\":{\"dateTime\":\"2026-11-25T11:00:00Z\"},"
                     "\"end\":{\"dateTime\":\"2026-11-25T11:30:00Z\"}}";
    struct policy_input in = {
        .kind = "time_change", .event_json = ev, .event_len = strlen(ev),
        .old_start_ms = b.start_ms, .old_end_ms = b.end_ms, .old_title = b.title,
        .has_new = 1, .new_start_ms = b.start_ms + 3600000, .new_end_ms = b.end_ms + 3600000,
        .new_title = b.title, .source = "push", .booking = &b,
        .now_ms = 1795510800000LL, .calendar_id = 1, .settings_json = "{}",
    };
    struct policy_runner *r = policy_runner_new(&cfg);
    struct policy_decision d;
    for (int i = 0; i < 1000; i++) /* warm up: state built, caches hot */
        policy_decide(r, "default", &in, &d);
    if (strcmp(d.action, "reschedule") != 0) {
        fprintf(stderr, "policy_bench: unexpected decision %s: %s\n", d.action, d.reason);
        return 1;
    }
    long batches = calls / BATCH > 0 ? calls / BATCH : 1;
    double *per = calloc((size_t)batches, sizeof *per);
    for (long k = 0; k < batches; k++) {
        int64_t t0 = now_ns();
        for (int i = 0; i < BATCH; i++)
            policy_decide(r, "default", &in, &d);
        per[k] = (double)(now_ns() - t0) / BATCH;
    }
    qsort(per, (size_t)batches, sizeof *per, cmp);
    printf("policy_decide(default, time_change): median %.0f ns/call, p90 %.0f, "
           "p99 %.0f (%ld calls)\n", per[batches / 2], per[batches * 9 / 10],
           per[batches * 99 / 100], batches * BATCH);
    free(per);
    policy_runner_free(r);
    policy_engine_stop();
    config_free(&cfg);
    return 0;
}
