/* service.c -- the serve lifecycle and signal handling.
 *
 * Signals are blocked in every thread (the mask is set before any thread
 * is created, and threads inherit it) and taken synchronously here with
 * sigwait(), so no handler ever runs in async-signal context: SIGHUP
 * reloads policies, SIGTERM/SIGINT stop the service in reverse start order.
 */
#include "service.h"

#include "api.h"
#include "apply.h"
#include "channel.h"
#include "health.h"
#include "http.h"
#include "intake.h"
#include "log.h"
#include "metrics.h"
#include "provider/provider.h"
#include "outbox.h"
#include "policy/policy.h"
#include "retention.h"
#include "scheduler.h"
#include "store/queue.h"
#include "store/store.h"
#include "sync.h"
#include "version.h"
#include "writer.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

/* Several instances (PostgreSQL): proves this instance alive and frees
 * the queue claims of instances that are not (queue_release_dead). On the
 * main thread, between signals: it is otherwise idle, and a pass is two
 * short statements. -1 when the pass failed (logged). */
static int release_dead_claims(void)
{
    struct cs_err err = {{0}};
    struct store_conn *c = store_conn(&err);
    int n = c ? queue_release_dead(c, &err) : -1;
    if (n < 0) {
        log_warn("store.claims_release_failed", "err=%s", log_q(err.msg));
        return -1;
    }
    if (n > 0)
        log_info("store.claims_released", "items=%d", n);
    else
        log_debug("store.claims_checked", "items=%d", n);
    return 0;
}

int service_run(const struct config *cfg)
{
    struct cs_err err = {{0}};
    sigset_t set;
    int sig = 0, rc = 1;
    int policies_up = 0, outbox_up = 0, sched_up = 0, writer_up = 0, intake_up = 0;
    int retention_up = 0;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* A file-size limit (RLIMIT_FSIZE) reached by a database write must
     * become a write error that the store reports (503, /healthz unhealthy)
     * like a full disk, not kill the service: SIGXFSZ's default action is
     * to terminate. Ignored, the write fails with EFBIG instead. */
    signal(SIGXFSZ, SIG_IGN);

    /* before anything starts: a configuration that would serve the API
     * unauthenticated to other machines is refused (docs/operations.md) */
    if (http_check_config(cfg, &err)) {
        log_error("service.start_failed", "what=config err=%s", log_q(err.msg));
        return 1;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        log_error("service.start_failed", "what=curl");
        return 1;
    }
    /* the two claims first, before any work: a second service on the
     * same database or port exits here, having synced nothing */
    if (store_claim(cfg->database, &err)) {
        log_error("service.start_failed", "what=database err=%s", log_q(err.msg));
        goto out;
    }
    if (http_listen(cfg, &err)) {
        log_error("service.start_failed", "what=listen err=%s", log_q(err.msg));
        goto out;
    }
    if (store_init(cfg->database, &err)) {
        log_error("service.start_failed", "what=store err=%s", log_q(err.msg));
        goto out;
    }
    /* before anything claims: the instance's liveness key names its claims,
     * and a dead instance's (this one's last run too) are freed now */
    if (store_shared() && release_dead_claims()) {
        log_error("service.start_failed", "what=%s", "liveness");
        goto out;
    }
    metrics_register_collector(metrics_store_collector);
    if (provider_metrics_declare())
        log_warn("service.metrics_full", "msg=%s",
                 log_q("too many provider metric families: some have no HELP"));
    health_init(cfg);
    /* before the scheduler: a replayed journal marks calendars dirty, which
     * the scheduler's first read of the calendars turns into syncs */
    if (intake_start(cfg->database, &err)) {
        log_error("service.start_failed", "what=intake err=%s", log_q(err.msg));
        goto out;
    }
    intake_up = 1;
    if (policy_engine_start(cfg, &err)) {
        log_error("service.start_failed", "what=policies err=%s", log_q(err.msg));
        goto out;
    }
    policies_up = 1;
    if (outbox_start(cfg, &err)) {
        log_error("service.start_failed", "what=outbox err=%s", log_q(err.msg));
        goto out;
    }
    outbox_up = 1;
    channel_init(cfg);
    apply_init(cfg);
    sync_set_change_hook(apply_change, NULL);
    sync_set_relink_hook(apply_relink, NULL);
    sync_set_decide_hook(apply_decide, NULL);
    sync_set_move_hook(apply_move, NULL);
    if (sched_start(cfg, &err)) {
        log_error("service.start_failed", "what=sched err=%s", log_q(err.msg));
        goto out;
    }
    sched_up = 1;
    writer_set_sync_hook(sched_request_sync);
    if (writer_start(cfg, &err)) {
        log_error("service.start_failed", "what=writer err=%s", log_q(err.msg));
        goto out;
    }
    writer_up = 1;
    if (retention_start(cfg, &err)) {
        log_error("service.start_failed", "what=retention err=%s", log_q(err.msg));
        goto out;
    }
    retention_up = 1;
    {
        /* committed notifications reach the scheduler directly (the dirty
         * mark the intake also sets is the crash-safe path) */
        static const struct intake_hooks hooks = {
            .sync = sched_request_push,
            .stop_channel = sched_stop_channel,
            .stop_foreign = sched_stop_foreign,
            .renew_channel = sched_request_channel};
        intake_set_hooks(&hooks);
    }
    if (http_start(cfg, api_routes(cfg), &err)) {
        log_error("service.start_failed", "what=http err=%s", log_q(err.msg));
        goto out;
    }
    /* a postgresql:// database carries its password: shown redacted */
    char db_shown[160];
    log_info("service.started", "version=%s listen=%s:%d database=%s policies=%s",
             CALSYNC_VERSION, cfg->listen_host, http_port(),
             log_q(strstr(cfg->database, "://")
                       ? url_redact(cfg->database, db_shown, sizeof db_shown)
                       : cfg->database),
             log_q(cfg->policies));
    health_log_warnings();
    int64_t release_at = time_mono_ms() + QUEUE_RELEASE_EVERY_MS;
    for (;;) {
        if (!store_shared()) {
            if (sigwait(&set, &sig) != 0)
                continue;
        } else {
            int64_t left = release_at - time_mono_ms();
            struct timespec ts = {left > 0 ? left / 1000 : 0,
                                  left > 0 ? (left % 1000) * 1000000 : 0};
            sig = left > 0 ? sigtimedwait(&set, NULL, &ts) : -1;
            if (sig < 0) {
                if (left <= 0 || errno == EAGAIN) {
                    release_dead_claims();
                    release_at = time_mono_ms() + QUEUE_RELEASE_EVERY_MS;
                }
                continue;
            }
        }
        if (sig == SIGHUP) {
            /* asked, not waited for: a policy file that blocks must not
             * keep this thread from taking the SIGTERM that follows */
            policy_reload_request();
            log_info("service.sighup", "%s", "policies=reload_requested");
            continue;
        }
        break;
    }
    log_info("service.stopping", "signal=%d", sig);
    http_stop();
    rc = 0;
out:
    http_stop(); /* no-op when stopped above; frees a socket never served */
    if (retention_up)
        retention_stop(); /* between two batches: never a half-done one */
    if (intake_up)
        intake_stop(); /* the last batch, while the scheduler still listens */
    if (writer_up)
        writer_stop();
    if (sched_up)
        sched_stop();
    if (outbox_up)
        outbox_stop();
    if (policies_up)
        policy_engine_stop();
    store_shutdown();
    curl_global_cleanup();
    if (rc == 0)
        log_info("service.stopped", "%s", "");
    return rc;
}
