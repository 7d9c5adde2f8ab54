/* retention.c -- the pruning thread (see retention.h). */
#include "retention.h"

#include "log.h"
#include "store/audit.h"
#include "store/notifications.h"
#include "store/queue.h"
#include "store/store.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

/* Pause between two batches of one table: long enough for a writer queued
 * on the busy timeout to take the lock, short enough that a backlog of a
 * million rows still clears in minutes. */
#define RETENTION_PAUSE_MS 20

static const struct config *ret_cfg;
static pthread_t ret_thread;
static int ret_running;
static pthread_mutex_t ret_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ret_cv;
static int ret_stop;

static int stopping(void)
{
    pthread_mutex_lock(&ret_mu);
    int s = ret_stop;
    pthread_mutex_unlock(&ret_mu);
    return s;
}

/* Sleeps ms or until retention_stop(); 1 when stopping. */
static int pause_ms(int64_t ms)
{
    int64_t until = time_mono_ms() + ms;
    pthread_mutex_lock(&ret_mu);
    while (!ret_stop) {
        int64_t left = until - time_mono_ms();
        if (left <= 0)
            break;
        cond_wait_ms(&ret_cv, &ret_mu, left);
    }
    int s = ret_stop;
    pthread_mutex_unlock(&ret_mu);
    return s;
}

enum { T_NOTIFICATIONS, T_OUTBOX, T_JOBS, T_AUDIT, T_N };

static int prune_batch(struct store_conn *c, int t, int64_t before, int limit,
                       int64_t *n, struct cs_err *err)
{
    switch (t) {
    case T_NOTIFICATIONS: return notification_prune(c, before, limit, n, err);
    case T_OUTBOX: return queue_prune(c, QUEUE_OUTBOX, before, limit, n, err);
    case T_JOBS: return queue_prune(c, QUEUE_JOBS, before, limit, n, err);
    default: return audit_prune(c, before, limit, n, err);
    }
}

int retention_run(const struct config *cfg, int64_t now, int64_t counts[4],
                  struct cs_err *err)
{
    static const char *const names[T_N] = {"notifications", "outbox", "jobs", "audit"};
    const int64_t ages[T_N] = {cfg->retention.notifications,
                               cfg->retention.outbox_delivered,
                               cfg->retention.jobs_finished, cfg->retention.audit};
    struct store_conn *c = store_conn(err);
    int64_t done[T_N] = {0};
    if (!c)
        return -1;
    for (int t = 0; t < T_N; t++) {
        int64_t total = 0, t0 = time_mono_ms();
        if (counts)
            counts[t] = 0;
        if (ages[t] <= 0 || stopping())
            continue; /* kept forever; or the service is stopping */
        int64_t before = now - ages[t] * 1000;
        for (;;) {
            int64_t n = 0;
            /* one statement, its own transaction: the write lock is held
             * for one batch only */
            if (prune_batch(c, t, before, (int)cfg->retention.batch, &n, err))
                return -1;
            total += n;
            if (n < cfg->retention.batch || stopping())
                break;
            if (pause_ms(RETENTION_PAUSE_MS))
                break;
        }
        done[t] = total;
        if (counts)
            counts[t] = total;
        if (total > 0)
            log_info("retention.pruned", "table=%s rows=%lld age_s=%lld ms=%lld", names[t],
                     (long long)total, (long long)ages[t],
                     (long long)(time_mono_ms() - t0));
    }
    /* every run, also one that found nothing: what `make soak` waits for
     * before it checks that nothing older than the ages is left */
    log_debug("retention.done", "now=%lld notifications=%lld outbox=%lld jobs=%lld audit=%lld",
              (long long)now, (long long)done[T_NOTIFICATIONS], (long long)done[T_OUTBOX],
              (long long)done[T_JOBS], (long long)done[T_AUDIT]);
    return 0;
}

static void *retention_main(void *arg)
{
    (void)arg;
    do {
        struct cs_err err;
        if (retention_run(ret_cfg, time_now_ms(), NULL, &err))
            log_warn("retention.failed", "err=%s", log_q(err.msg));
    } while (!pause_ms(ret_cfg->retention.interval * 1000));
    return NULL;
}

int retention_start(const struct config *cfg, struct cs_err *err)
{
    ret_cfg = cfg;
    ret_stop = 0;
    int e = cond_init_monotonic(&ret_cv);
    if (e)
        return cs_err_set(err, "retention: %s", strerror(e));
    if ((e = pthread_create(&ret_thread, NULL, retention_main, NULL)))
        return cs_err_set(err, "retention thread: %s", strerror(e));
    ret_running = 1;
    return 0;
}

void retention_stop(void)
{
    if (!ret_running)
        return;
    pthread_mutex_lock(&ret_mu);
    ret_stop = 1;
    pthread_cond_broadcast(&ret_cv);
    pthread_mutex_unlock(&ret_mu);
    pthread_join(ret_thread, NULL);
    ret_running = 0;
}
