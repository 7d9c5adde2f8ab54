/* outbox.c -- durable, ordered, signed webhook delivery.
 *
 * Rows: outbox(id, delivery_id, subscriber=url, booking_uid, trigger, body,
 * state pending|delivered|orphaned, attempts, next_at, last_status).
 *
 * Each subscriber has its own thread so a slow or dead receiver never
 * delays the others. A thread picks the oldest pending rows of its
 * subscriber that are due and whose booking has no older pending row
 * (per-booking order), posts each, and records the outcome. A row whose
 * subscriber is no longer configured is marked `orphaned` at start (kept,
 * visible, never sent with a secret that no longer exists).
 */
#include "outbox.h"
#include "store/queue.h"
#include "fault.h"

#include "log.h"
#include "metrics.h"
#include "version.h"

#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define OUTBOX_TIMEOUT_MS 10000
#define OUTBOX_BATCH 32

struct sender {
    pthread_t thread;
    const struct config_webhook *hook;
    int index;         /* in cfg->webhooks: the subscriber's name in logs
                        * and /metrics */
    char shown[160];   /* url_redact(hook->url): scheme://host[:port] only,
                        * since user:password, a ?token= or a secret path
                        * (Slack, Discord hooks) must not reach the
                        * unauthenticated /metrics or the log (issue 21) */
    int started;
};

static const struct config *outbox_cfg;
static struct sender *outbox_senders;
static int outbox_nsenders;
static pthread_mutex_t outbox_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t outbox_cv; /* CLOCK_MONOTONIC: made by cv_once */
static pthread_once_t outbox_cv_once = PTHREAD_ONCE_INIT;
static int outbox_stopping;
static unsigned long outbox_kicks;
/* this thread enqueued rows since its last kick (outbox_kick_enqueued) */
static _Thread_local int outbox_enqueued;

/* ---------------------------------------------------------------- enqueue */

void outbox_sign(const char *secret, const char *body, size_t len, char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)body,
         len, mac, &n);
    for (unsigned i = 0; i < n; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 15];
    }
    out[2 * n] = '\0';
}

static int insert_rows(struct store_conn *c, const char *uid,
                       const char *trigger, const char *body,
                       struct cs_err *err)
{
    for (int i = 0; outbox_cfg && i < outbox_cfg->n_webhooks; i++) {
        char id[40] = "dlv_";
        if (random_hex(id + 4, 16))
            return cs_err_set(err, "random source failed");
        if (queue_enqueue_delivery(c, id, outbox_cfg->webhooks[i].url, uid, trigger, body,
                                   err))
            return -1;
        outbox_enqueued = 1;
    }
    return 0;
}

static void envelope_open(struct buf *b, const char *trigger)
{
    char ts[TIME_RFC3339_MAX];
    time_format_rfc3339(time_now_ms(), ts);
    buf_puts(b, "{\"triggerEvent\":");
    buf_json_strz(b, trigger);
    buf_printf(b, ",\"createdAt\":\"%s\",\"payload\":{", ts);
}

static void put_str(struct buf *b, const char *key, const char *v, int comma)
{
    buf_printf(b, "%s\"%s\":", comma ? "," : "", key);
    buf_json_strz(b, v);
}

static void put_time(struct buf *b, const char *key, int64_t ms)
{
    char ts[TIME_RFC3339_MAX];
    time_format_rfc3339(ms, ts);
    buf_printf(b, ",\"%s\":\"%s\"", key, ts);
}

int outbox_enqueue_booking(struct store_conn *c, const char *trigger,
                           const struct booking *now, const struct booking *prev,
                           const char *reason, const char *source,
                           const char *policy, const char *policy_version,
                           struct cs_err *err)
{
    if (!outbox_cfg || outbox_cfg->n_webhooks == 0)
        return 0;
    struct buf b;
    buf_init(&b);
    envelope_open(&b, trigger);
    put_str(&b, "uid", now->uid, 0);
    buf_printf(&b, ",\"calendarId\":%lld", (long long)now->calendar_id);
    put_str(&b, "title", now->title, 1);
    put_time(&b, "startTime", now->start_ms);
    put_time(&b, "endTime", now->end_ms);
    put_str(&b, "status", now->status, 1);
    if (now->conference_url)
        put_str(&b, "conferenceUrl", now->conference_url, 1);
    buf_puts(&b, ",\"previous\":{");
    if (prev) {
        char ts[TIME_RFC3339_MAX];
        time_format_rfc3339(prev->start_ms, ts);
        buf_printf(&b, "\"startTime\":\"%s\"", ts);
        put_time(&b, "endTime", prev->end_ms);
        put_str(&b, "title", prev->title, 1);
    }
    buf_puts(&b, "}");
    put_str(&b, "reason", reason, 1);
    put_str(&b, "source", source, 1);
    put_str(&b, "policy", policy, 1);
    put_str(&b, "policyVersion", policy_version, 1);
    if (strcmp(trigger, "BOOKING_FLAGGED") == 0 && now->proposed_kind[0]) {
        /* the change the flag held back, for the app to show and resolve */
        buf_puts(&b, ",\"proposed\":{\"kind\":");
        buf_json_strz(&b, now->proposed_kind);
        if (now->proposed_start_ms >= 0)
            put_time(&b, "startTime", now->proposed_start_ms);
        if (now->proposed_end_ms >= 0)
            put_time(&b, "endTime", now->proposed_end_ms);
        if (now->proposed_title)
            put_str(&b, "title", now->proposed_title, 1);
        buf_puts(&b, "}");
    }
    int rc = buf_puts(&b, "}}");
    if (rc == 0)
        rc = insert_rows(c, now->uid, trigger, b.data, err);
    else
        cs_err_set(err, "out of memory");
    buf_free(&b);
    return rc;
}

int outbox_enqueue_calendar_error(struct store_conn *c, int64_t calendar_id,
                                  const char *state, const char *reason,
                                  struct cs_err *err)
{
    if (!outbox_cfg || outbox_cfg->n_webhooks == 0)
        return 0;
    struct buf b;
    buf_init(&b);
    envelope_open(&b, "CALENDAR_ERROR");
    buf_printf(&b, "\"calendarId\":%lld", (long long)calendar_id);
    put_str(&b, "state", state, 1);
    put_str(&b, "reason", reason, 1);
    int rc = buf_puts(&b, "}}");
    if (rc == 0)
        rc = insert_rows(c, NULL, "CALENDAR_ERROR", b.data, err);
    else
        cs_err_set(err, "out of memory");
    buf_free(&b);
    return rc;
}

/* --------------------------------------------------------------- delivery */

struct row {
    int64_t id;
    char delivery_id[64];
    char *body;
    int attempts;
};

static size_t discard(char *p, size_t s, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return s * n;
}

/* Posts one row; returns the HTTP status, or 0 on a transport error. */
static long post(CURL *h, const struct sender *sd, const struct row *r)
{
    const struct config_webhook *hook = sd->hook;
    char sig[80], hdr_sig[128], hdr_id[128];
    outbox_sign(hook->secret, r->body, strlen(r->body), sig);
    snprintf(hdr_sig, sizeof hdr_sig, "X-Cal-Signature-256: %s", sig);
    snprintf(hdr_id, sizeof hdr_id, "X-Calsync-Delivery: %s", r->delivery_id);
    struct curl_slist *hs = NULL, *t;
    long status = 0;
    if (!(t = curl_slist_append(hs, "Content-Type: application/json")))
        goto done;
    hs = t;
    if (!(t = curl_slist_append(hs, hdr_sig)))
        goto done;
    hs = t;
    if (!(t = curl_slist_append(hs, hdr_id)))
        goto done;
    hs = t;
    if (!(t = curl_slist_append(hs, "Expect:")))
        goto done;
    hs = t;
    char ua[96]; /* the booking app sees who calls (curl copies it) */
    snprintf(ua, sizeof ua, "calsync/%s", CALSYNC_VERSION);
    curl_easy_setopt(h, CURLOPT_USERAGENT, ua);
    curl_easy_setopt(h, CURLOPT_URL, hook->url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hs);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(r->body));
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)OUTBOX_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)5000);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode cc = curl_easy_perform(h);
    metrics_observe_curl("calsync_webhook_delivery_duration_seconds", h);
    if (cc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    else
        log_warn("outbox.transport_error", "subscriber=%d endpoint=%s err=%s", sd->index,
                 log_q(sd->shown), log_q(curl_easy_strerror(cc)));
done:
    curl_slist_free_all(hs);
    return status;
}

/* Claims up to OUTBOX_BATCH due rows for the subscriber on the durable
 * queue (store/queue.h), in id order, none behind an older pending row of
 * its booking. When none is due, sets *next_due to the earliest time one
 * can be sent (0: none pending). */
static int load_due(struct store_conn *c, const char *url, struct row *rows,
                    int *n, int64_t *next_due, struct cs_err *err)
{
    struct queue_delivery d[OUTBOX_BATCH];
    char claimer[QUEUE_CLAIMER_MAX + 1];
    *n = 0;
    if (store_writes_failing() && !store_healthy()) {
        /* While writes fail (a full disk), a delivery's answer cannot be
         * recorded: the row would be posted again and again, a flood of
         * duplicates. Claim nothing (a claim is a write too) and look
         * again in a second, probing meanwhile. */
        *next_due = time_now_ms() + 1000;
        return 0;
    }
    queue_claimer("outbox", claimer);
    if (queue_claim_deliveries(c, claimer, url, OUTBOX_BATCH, d, n, next_due, err))
        return -1;
    for (int i = 0; i < *n; i++) {
        rows[i].id = d[i].id;
        snprintf(rows[i].delivery_id, sizeof rows[i].delivery_id, "%s", d[i].delivery_id);
        rows[i].body = d[i].body;
        rows[i].attempts = d[i].attempts;
    }
    return 0;
}

static int record(struct store_conn *c, const struct row *r, long status,
                  struct cs_err *err)
{
    if (status >= 200 && status < 300)
        return queue_done(c, QUEUE_OUTBOX, r->id, status, NULL, err);
    return queue_retry(c, QUEUE_OUTBOX, r->id,
                       time_now_ms() +
                           backoff_ms(r->attempts + 1, BACKOFF_BASE_MS, BACKOFF_MAX_MS),
                       status, NULL, err);
}

/* outbox_cv is made on first use by whichever of outbox_start(),
 * outbox_kick() and outbox_stop() comes first (a kick may precede the
 * start); the senders run after outbox_start(). */
static void cv_init(void)
{
    cond_init_monotonic(&outbox_cv);
}

static void cv_once(void)
{
    pthread_once(&outbox_cv_once, cv_init);
}

/* Blocks until kicked (since *seen), stopping, or wait_ms (monotonic)
 * passes; wait_ms < 0: no timeout, only a kick or the stop wakes it. */
static void wait_for_work(unsigned long *seen, int64_t wait_ms)
{
    pthread_mutex_lock(&outbox_mu);
    if (!outbox_stopping && outbox_kicks == *seen) {
        if (wait_ms < 0)
            pthread_cond_wait(&outbox_cv, &outbox_mu);
        else
            cond_wait_ms(&outbox_cv, &outbox_mu, wait_ms);
    }
    *seen = outbox_kicks;
    pthread_mutex_unlock(&outbox_mu);
}

static int stopping(void)
{
    pthread_mutex_lock(&outbox_mu);
    int s = outbox_stopping;
    pthread_mutex_unlock(&outbox_mu);
    return s;
}

static void *sender_main(void *arg)
{
    struct sender *s = arg;
    struct cs_err err = {{0}};
    struct row rows[OUTBOX_BATCH];
    unsigned long seen = 0;
    CURL *h = curl_easy_init();
    char series[600];
    while (h && !stopping()) {
        struct store_conn *c = store_conn(&err);
        int n = 0;
        int64_t next_due = 0;
        if (!c || load_due(c, s->hook->url, rows, &n, &next_due, &err)) {
            log_error("outbox.db_error", "err=%s", log_q(err.msg));
            wait_for_work(&seen, 1000);
            continue;
        }
        if (n > 0 && store_writes_failing() && !store_healthy()) {
            /* While writes fail (a full disk), a delivery's answer cannot
             * be recorded: the row stays due and would be posted again at
             * once, a flood of duplicates to the subscriber. Wait, probing
             * once a second, until the store takes writes again. */
            for (int i = 0; i < n; i++)
                free(rows[i].body);
            wait_for_work(&seen, 1000);
            continue;
        }
        for (int i = 0; i < n; i++) {
            long status = stopping() ? -1 : post(h, s, &rows[i]);
            if (status >= 0) {
                int ok = status >= 200 && status < 300;
                snprintf(series, sizeof series,
                         "calsync_webhook_deliveries_total{subscriber=\"%d\","
                         "result=\"%s\"}", s->index, ok ? "ok" : "error");
                metrics_inc(series);
                fault_point(ok ? "outbox_after_post_ok" : "outbox_after_post_error");
                if (record(c, &rows[i], status, &err))
                    log_error("outbox.db_error", "err=%s", log_q(err.msg));
                fault_point("outbox_after_record");
                log_event(ok ? LOG_DEBUG : LOG_WARN, "outbox.delivery",
                          "subscriber=%d delivery=%s status=%ld attempt=%d", s->index,
                          rows[i].delivery_id, status, rows[i].attempts + 1);
            }
            free(rows[i].body);
        }
        if (n > 0)
            continue; /* more may be due, or unblocked by these */
        /* nothing due: sleep until an enqueue is committed (outbox_kick)
         * or the next retry is due -- no polling tick */
        int64_t wait = -1;
        if (next_due) {
            wait = next_due - time_now_ms();
            if (wait < 1)
                wait = 1;
        }
        /* several instances: rows another instance enqueued (or one it
         * held when it died) kick nobody here; look once a second */
        if (store_shared() && (wait < 0 || wait > 1000))
            wait = 1000;
        wait_for_work(&seen, wait);
    }
    if (h)
        curl_easy_cleanup(h);
    return NULL;
}

void outbox_kick(void)
{
    cv_once();
    outbox_enqueued = 0;
    pthread_mutex_lock(&outbox_mu);
    outbox_kicks++;
    pthread_cond_broadcast(&outbox_cv);
    pthread_mutex_unlock(&outbox_mu);
}

void outbox_kick_enqueued(void)
{
    if (outbox_enqueued) {
        log_debug("outbox.kick", "%s", "after=commit");
        outbox_kick();
    }
}

static void pending_collector(struct buf *out)
{
    struct store_conn *c = store_conn(NULL);
    int64_t pending = 0, orphaned = 0;
    if (c)
        queue_outbox_counts(c, &pending, &orphaned, NULL);
    buf_printf(out, "# TYPE calsync_outbox_pending gauge\ncalsync_outbox_pending %lld\n"
                    "# TYPE calsync_outbox_orphaned gauge\ncalsync_outbox_orphaned %lld\n",
               (long long)pending, (long long)orphaned);
}

static int orphan_unknown(const struct config *cfg, struct cs_err *err)
{
    struct store_conn *c = store_conn(err);
    if (!c)
        return -1;
    char *subs[64];
    int nsubs = 0;
    if (queue_outbox_subscribers(c, subs, 64, &nsubs, err))
        return -1;
    int rc = 0;
    for (int i = 0; i < nsubs; i++) {
        int known = 0;
        for (int k = 0; k < cfg->n_webhooks; k++)
            known |= strcmp(cfg->webhooks[k].url, subs[i]) == 0;
        int64_t n = 0;
        if (!known) {
            if (queue_outbox_orphan(c, subs[i], &n, err)) {
                rc = -1;
            } else {
                char shown[160];
                log_warn("outbox.orphaned", "endpoint=%s rows=%d",
                         log_q(url_redact(subs[i], shown, sizeof shown)), (int)n);
            }
        }
        free(subs[i]);
    }
    return rc;
}

int outbox_start(const struct config *cfg, struct cs_err *err)
{
    cv_once();
    outbox_cfg = cfg;
    outbox_stopping = 0;
    metrics_register_collector(pending_collector);
    if (orphan_unknown(cfg, err))
        return -1;
    if (cfg->n_webhooks == 0)
        return 0;
    outbox_senders = calloc((size_t)cfg->n_webhooks, sizeof *outbox_senders);
    if (!outbox_senders)
        return cs_err_set(err, "out of memory");
    outbox_nsenders = cfg->n_webhooks;
    for (int i = 0; i < cfg->n_webhooks; i++) {
        outbox_senders[i].hook = &cfg->webhooks[i];
        outbox_senders[i].index = i;
        url_redact(cfg->webhooks[i].url, outbox_senders[i].shown,
                   sizeof outbox_senders[i].shown);
        if (pthread_create(&outbox_senders[i].thread, NULL, sender_main,
                           &outbox_senders[i]) != 0) {
            outbox_stop();
            return cs_err_set(err, "cannot start webhook delivery thread");
        }
        outbox_senders[i].started = 1;
    }
    return 0;
}

void outbox_stop(void)
{
    cv_once();
    pthread_mutex_lock(&outbox_mu);
    outbox_stopping = 1;
    pthread_cond_broadcast(&outbox_cv);
    pthread_mutex_unlock(&outbox_mu);
    for (int i = 0; i < outbox_nsenders; i++)
        if (outbox_senders[i].started)
            pthread_join(outbox_senders[i].thread, NULL);
    free(outbox_senders);
    outbox_senders = NULL;
    outbox_nsenders = 0;
}
