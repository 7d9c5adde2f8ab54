/* budget.c -- token-bucket request budgets for Google calls.
 *
 * Main objects: struct google_bucket (pure arithmetic over an injected
 * clock, unit-tested in tests/unit/test_google_budget.c), one bucket per
 * credential (Google's per-user rate, 600/min documented) and one for the
 * project (the per-project per-minute quota), both behind one mutex, and a
 * thread-local priority. google_budget_acquire is google_http's budget hook:
 * phttp_call_run() takes from both before every authenticated request, so
 * every Calendar method is covered.
 */
#include "provider/google/budget.h"
#include "provider/google/google.h"

#include "metrics.h"
#include "provider/provider.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* A tenth of each bucket is kept for high-priority calls. */
#define BUDGET_RESERVE_FRACTION 0.1
/* Longest single sleep, so google_cancel() is seen quickly. */
#define BUDGET_SLICE_MS 50

struct cred_bucket {
    int64_t id;
    struct google_bucket b;
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static int64_t g_per_cred = 600;
static int64_t g_per_project = 10000;
static struct google_bucket g_project;
static int g_project_ready;
static struct cred_bucket *g_creds; /* owned here; google_budget_reset frees */
static size_t g_n, g_cap;

void google_bucket_init(struct google_bucket *b, int64_t per_minute, int64_t now_ms)
{
    if (per_minute < 1)
        per_minute = 1;
    b->cap = (double)per_minute / 6.0;
    if (b->cap < 1.0)
        b->cap = 1.0;
    double refill = (double)per_minute - b->cap;
    if (refill < 1.0)
        refill = 1.0;
    b->per_ms = refill / 60000.0;
    b->tokens = b->cap;
    b->last_ms = now_ms;
}

int64_t google_bucket_wait_ms(struct google_bucket *b, int64_t now_ms, double reserve)
{
    if (now_ms > b->last_ms) {
        b->tokens += (double)(now_ms - b->last_ms) * b->per_ms;
        if (b->tokens > b->cap)
            b->tokens = b->cap;
        b->last_ms = now_ms;
    }
    /* A reserve as large as the bucket would starve low priority forever. */
    if (reserve > b->cap - 1.0)
        reserve = b->cap - 1.0;
    if (reserve < 0)
        reserve = 0;
    double need = reserve + 1.0 - b->tokens;
    if (need <= 0)
        return 0;
    int64_t ms = (int64_t)(need / b->per_ms) + 1;
    return ms < 1 ? 1 : ms;
}

void google_bucket_take(struct google_bucket *b)
{
    b->tokens -= 1.0;
}

void google_budget_reset(void)
{
    pthread_mutex_lock(&g_mu);
    free(g_creds);
    g_creds = NULL;
    g_n = g_cap = 0;
    g_project_ready = 0;
    pthread_mutex_unlock(&g_mu);
}

void google_budget_configure(int64_t per_credential, int64_t per_project)
{
    google_budget_reset();
    pthread_mutex_lock(&g_mu);
    g_per_cred = per_credential;
    g_per_project = per_project;
    pthread_mutex_unlock(&g_mu);
}

/* The credential's bucket, created full on first use; NULL on OOM (the
 * caller then goes on without a credential budget rather than failing). */
static struct google_bucket *cred_bucket(int64_t id, int64_t now)
{
    for (size_t i = 0; i < g_n; i++)
        if (g_creds[i].id == id)
            return &g_creds[i].b;
    if (g_n == g_cap) {
        size_t ncap = g_cap ? g_cap * 2 : 64;
        struct cred_bucket *n = realloc(g_creds, ncap * sizeof *n);
        if (!n)
            return NULL;
        g_creds = n;
        g_cap = ncap;
    }
    g_creds[g_n].id = id;
    google_bucket_init(&g_creds[g_n].b, g_per_cred, now);
    return &g_creds[g_n++].b;
}

static double reserve_of(const struct google_bucket *b, enum provider_prio p)
{
    return p == PROVIDER_PRIO_HIGH ? 0.0 : b->cap * BUDGET_RESERVE_FRACTION;
}

/* One attempt under the lock: 0 when both tokens were taken, else the ms to
 * wait and which budget is short in *which. */
static int64_t try_take(int64_t cred, int64_t now, enum provider_prio p, const char **which)
{
    int64_t wc = 0, wp = 0;
    struct google_bucket *cb = NULL;
    pthread_mutex_lock(&g_mu);
    if (g_per_cred > 0) {
        cb = cred_bucket(cred, now);
        if (cb)
            wc = google_bucket_wait_ms(cb, now, reserve_of(cb, p));
    }
    if (g_per_project > 0) {
        if (!g_project_ready) {
            google_bucket_init(&g_project, g_per_project, now);
            g_project_ready = 1;
        }
        wp = google_bucket_wait_ms(&g_project, now, reserve_of(&g_project, p));
    }
    if (wc == 0 && wp == 0) {
        if (cb)
            google_bucket_take(cb);
        if (g_per_project > 0)
            google_bucket_take(&g_project);
    }
    pthread_mutex_unlock(&g_mu);
    *which = wc >= wp ? "credential" : "project";
    return wc > wp ? wc : wp;
}

int google_budget_acquire(int64_t credential_id, int64_t deadline, struct cs_err *err)
{
    enum provider_prio p = provider_priority();
    int64_t start = time_mono_ms();
    const char *which = "credential";
    int waited = 0, rc = 0;
    for (;;) {
        int64_t now = time_mono_ms();
        int64_t w = try_take(credential_id, now, p, &which);
        if (w == 0)
            break;
        if (!waited)
            waited = 1;
        if (google_cancelled()) {
            rc = cs_err_set(err, "cancelled (shutting down)");
            goto done;
        }
        if (now + w > deadline) {
            rc = cs_err_set(err, "request budget (%s) exhausted until past the call's deadline",
                            which);
            goto done;
        }
        if (w > BUDGET_SLICE_MS)
            w = BUDGET_SLICE_MS;
        struct timespec ts = {0, (long)w * 1000000L};
        nanosleep(&ts, NULL);
    }
done:
    if (waited) {
        char series[160];
        snprintf(series, sizeof series,
                 "calsync_google_budget_wait_seconds{budget=\"%s\",priority=\"%s\"}", which,
                 p == PROVIDER_PRIO_HIGH ? "high" : "low");
        metrics_observe_ms(series, time_mono_ms() - start);
    }
    return rc;
}
