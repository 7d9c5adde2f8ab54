/* metrics.c -- an in-memory table of Prometheus series.
 *
 * Series are few (routes x statuses, policy outcomes, Google calls), so a
 * sorted array under one mutex is enough. The families are declared in
 * one table below, with their type and HELP text: rendering walks that
 * table, so every family is exposed from the first scrape (HELP, TYPE and,
 * where the label values are known up front, zero-valued samples), and a
 * family is documented in exactly one place in the code. Histograms have
 * fixed buckets; they sit in a second, smaller table.
 */
#include "metrics.h"

#include "store/calendars.h"
#include "store/queue.h"
#include "store/store.h"
#include "version.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------ families */

/* struct metrics_family (metrics.h): init lists the series created at
 * zero when the table is set up, so that a scrape before the first event
 * already shows them. */

static const struct metrics_family metrics_fams[] = {
    {"calsync_build_info", METRICS_GAUGE,
     "Always 1; the version label is the running binary's version.", NULL},
    {"calsync_http_requests_total", METRICS_COUNTER,
     "HTTP answers by route pattern, method and status (refusals included).", NULL},
    {"calsync_http_connections_refused_total", METRICS_COUNTER,
     "Connections closed at accept: http.connections or connections_per_ip reached.",
     METRICS_INIT("calsync_http_connections_refused_total")},
    {"calsync_http_timeouts_total", METRICS_COUNTER,
     "Connections closed for not sending a request header or body in time.",
     METRICS_INIT("calsync_http_timeouts_total{phase=\"body\"}",
          "calsync_http_timeouts_total{phase=\"header\"}")},
    {"calsync_notifications_total", METRICS_COUNTER,
     "Google push notifications by outcome.",
     METRICS_INIT("calsync_notifications_total{outcome=\"accepted\"}",
          "calsync_notifications_total{outcome=\"sync\"}")},
    {"calsync_intake_stop_requests_total", METRICS_COUNTER,
     "channels.stop calls asked for by pushes on unknown or stopped channels.", NULL},
    {"calsync_intake_flush_failures_total", METRICS_COUNTER,
     "Journalled notifications the database refused to take (retried).",
     METRICS_INIT("calsync_intake_flush_failures_total")},
    {"calsync_calendars", METRICS_COLLECTED,
     "Calendars by state (syncing, active, revoked, error, stopped).", NULL},
    {"calsync_sync_stalest_age_seconds", METRICS_COLLECTED,
     "Seconds since the least recently synced calendar (syncing, active or error) "
     "last completed a sync (since it was added, if never); 0 with none.", NULL},
    {"calsync_syncs_total", METRICS_COUNTER, "Syncs by kind and result.",
     METRICS_INIT("calsync_syncs_total{kind=\"full\",result=\"failed\"}",
          "calsync_syncs_total{kind=\"full\",result=\"ok\"}",
          "calsync_syncs_total{kind=\"incremental\",result=\"failed\"}",
          "calsync_syncs_total{kind=\"incremental\",result=\"ok\"}")},
    {"calsync_sync_duration_seconds", METRICS_HISTOGRAM,
     "Time a sync of one calendar took, by kind (successful or not).",
     METRICS_INIT("calsync_sync_duration_seconds{kind=\"full\"}",
          "calsync_sync_duration_seconds{kind=\"incremental\"}")},
    {"calsync_sync_full_resyncs_total", METRICS_COUNTER,
     "Full resyncs forced by Google (410 Gone, invalid sync token).",
     METRICS_INIT("calsync_sync_full_resyncs_total")},
    {"calsync_sync_redecided_total", METRICS_COUNTER,
     "Changes decided again because their inputs changed before the transaction.",
     METRICS_INIT("calsync_sync_redecided_total")},
    {"calsync_sync_items_skipped_total", METRICS_COUNTER,
     "Items of a Google listing left out, by reason (should stay 0).",
     METRICS_INIT("calsync_sync_items_skipped_total{reason=\"invalid_id\"}",
                  "calsync_sync_items_skipped_total{reason=\"malformed\"}")},
    {"calsync_sync_event_moves_total", METRICS_COUNTER,
     "Events that moved between two watched calendars of one credential, their "
     "bookings following them.",
     METRICS_INIT("calsync_sync_event_moves_total")},
    {"calsync_channel_renewals_total", METRICS_COUNTER,
     "Subscriptions renewed in place (Graph), by result (ok, gone, error).", NULL},
    {"calsync_calendar_errors_total", METRICS_COUNTER,
     "Calendars entering the revoked or error state.",
     METRICS_INIT("calsync_calendar_errors_total{state=\"error\"}",
          "calsync_calendar_errors_total{state=\"revoked\"}")},
    {"calsync_sched_queue_depth", METRICS_GAUGE, "Calendars waiting for a sync worker.",
     METRICS_INIT("calsync_sched_queue_depth")},
    {"calsync_policy_decisions_total", METRICS_COUNTER, "Policy decisions by policy and action.",
     NULL},
    {"calsync_policy_decision_duration_seconds", METRICS_HISTOGRAM,
     "Time one policy decision took in the sandbox.",
     METRICS_INIT("calsync_policy_decision_duration_seconds")},
    {"calsync_policy_errors_total", METRICS_COUNTER,
     "Policy errors turned into a flag, by policy and kind.", NULL},
    {"calsync_policy_load_errors_total", METRICS_COUNTER, "Failed policy (re)loads by policy.",
     NULL},
    {"calsync_policy_shadow_decisions_total", METRICS_COUNTER,
     "Shadow policy decisions by live policy, shadow policy and outcome (agree: the "
     "same action as the live policy's; disagree: another).", NULL},
    {"calsync_echoes_total", METRICS_COUNTER,
     "Changes recognised as echoes of calsync's own writes.",
     METRICS_INIT("calsync_echoes_total")},
    {"calsync_writes_total", METRICS_COUNTER, "Forward writes to Google by result.",
     METRICS_INIT("calsync_writes_total{result=\"conflict\"}",
          "calsync_writes_total{result=\"deleted\"}",
          "calsync_writes_total{result=\"failed\"}",
          "calsync_writes_total{result=\"ok\"}",
          "calsync_writes_total{result=\"retry\"}")},
    {"calsync_channel_opens_total", METRICS_COUNTER, "Push channels opened, by result.",
     METRICS_INIT("calsync_channel_opens_total{result=\"error\"}",
          "calsync_channel_opens_total{result=\"ok\"}")},
    {"calsync_channel_stops_total", METRICS_COUNTER, "Push channels stopped, by result.", NULL},
    {"calsync_webhook_deliveries_total", METRICS_COUNTER,
     "Outbound webhook attempts by subscriber index and result (ok, error).", NULL},
    {"calsync_webhook_delivery_duration_seconds", METRICS_HISTOGRAM,
     "Time of one outbound webhook POST, answered or not.",
     METRICS_INIT("calsync_webhook_delivery_duration_seconds")},
    {"calsync_outbox_pending", METRICS_COLLECTED, "Webhooks not yet acknowledged.", NULL},
    {"calsync_outbox_orphaned", METRICS_COLLECTED,
     "Webhooks whose subscriber was removed from the configuration.", NULL},
    {"calsync_outbox_oldest_age_seconds", METRICS_COLLECTED,
     "Age of the oldest webhook not yet acknowledged; 0 when none is pending.", NULL},
    {"calsync_metrics_dropped_total", METRICS_COUNTER,
     "Series not recorded because the table was full (should stay 0).", NULL},
};
#define NBUILTIN (int)(sizeof metrics_fams / sizeof metrics_fams[0])

/* Families declared by others (metrics_declare), after the built-ins;
 * written before any thread starts, read without a lock afterwards. */
static const struct metrics_family *metrics_declared[METRICS_MAX_DECLARED];
static int metrics_ndeclared;

#define NFAMS (NBUILTIN + metrics_ndeclared)
static const struct metrics_family *fam_at(int i)
{
    return i < NBUILTIN ? &metrics_fams[i] : metrics_declared[i - NBUILTIN];
}

int metrics_declare(const struct metrics_family *fams, int n)
{
    for (int i = 0; i < n; i++) {
        int known = 0;
        for (int k = 0; k < NFAMS && !known; k++)
            known = strcmp(fam_at(k)->name, fams[i].name) == 0;
        if (known)
            continue;
        if (metrics_ndeclared == METRICS_MAX_DECLARED)
            return -1;
        metrics_declared[metrics_ndeclared++] = &fams[i];
    }
    return 0;
}

/* 5 ms to 60 s: a policy decision sits in the first buckets, a full sync
 * of a large calendar or a slow webhook subscriber in the last. */
static const double metrics_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                        0.5, 1, 2.5, 5, 10, 30, 60};
#define NBOUNDS (int)(sizeof metrics_bounds / sizeof metrics_bounds[0])

struct series {
    char *name;
    int64_t value;
    int gauge;
};

struct hist {
    char *name;
    uint64_t buckets[NBOUNDS]; /* not cumulative; summed when rendered */
    uint64_t count;
    double sum;
};

static pthread_mutex_t metrics_mu = PTHREAD_MUTEX_INITIALIZER;
static struct series metrics_tab[METRICS_MAX_SERIES];
static int metrics_n;
static struct hist metrics_hist[METRICS_MAX_HISTOGRAMS];
static int metrics_nhist;
static int metrics_ready; /* the INIT series are in the tables */
static int64_t metrics_dropped;
static metrics_collector metrics_collectors[16];
static int metrics_ncollectors;

static size_t family_len(const char *name)
{
    const char *b = strchr(name, '{');
    return b ? (size_t)(b - name) : strlen(name);
}

static const struct metrics_family *family_of(const char *series)
{
    size_t fl = family_len(series);
    for (int i = 0; i < NFAMS; i++)
        if (strlen(fam_at(i)->name) == fl && strncmp(fam_at(i)->name, series, fl) == 0)
            return fam_at(i);
    return NULL;
}

/* Binary search; returns index or -(insert point)-1. Caller holds lock. */
static int find(const char *name)
{
    int lo = 0, hi = metrics_n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(metrics_tab[mid].name, name);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -lo - 1;
}

/* The histogram `name`, created when missing; NULL when the table is full.
 * Caller holds lock. */
static struct hist *hist_find(const char *name)
{
    for (int i = 0; i < metrics_nhist; i++)
        if (strcmp(metrics_hist[i].name, name) == 0)
            return &metrics_hist[i];
    char *copy;
    if (metrics_nhist == METRICS_MAX_HISTOGRAMS || !(copy = strdup(name)))
        return NULL;
    struct hist *h = &metrics_hist[metrics_nhist++];
    memset(h, 0, sizeof *h);
    h->name = copy;
    return h;
}

static void update_locked(const char *name, int64_t v, int gauge);

/* Puts the INIT series in the tables once (again after metrics_reset).
 * Caller holds lock. */
static void ensure_ready(void)
{
    if (metrics_ready)
        return;
    metrics_ready = 1;
    for (int f = 0; f < NFAMS; f++) {
        const struct metrics_family *fam = fam_at(f);
        for (int i = 0; fam->init && fam->init[i]; i++) {
            if (fam->type == METRICS_HISTOGRAM)
                (void)hist_find(fam->init[i]);
            else
                update_locked(fam->init[i], 0, fam->type == METRICS_GAUGE);
        }
    }
}

static void update_locked(const char *name, int64_t v, int gauge)
{
    int i = find(name);
    if (i < 0) {
        char *copy;
        if (metrics_n == METRICS_MAX_SERIES || !(copy = strdup(name))) {
            metrics_dropped++;
            return;
        }
        i = -i - 1;
        memmove(&metrics_tab[i + 1], &metrics_tab[i],
                (size_t)(metrics_n - i) * sizeof metrics_tab[0]);
        metrics_tab[i] = (struct series){copy, 0, gauge};
        metrics_n++;
    }
    if (gauge)
        metrics_tab[i].value = v;
    else
        metrics_tab[i].value += v;
}

static void update(const char *name, int64_t v, int gauge)
{
    pthread_mutex_lock(&metrics_mu);
    ensure_ready();
    update_locked(name, v, gauge);
    pthread_mutex_unlock(&metrics_mu);
}

void metrics_add(const char *series, int64_t n) { update(series, n, 0); }
void metrics_inc(const char *series) { update(series, 1, 0); }
void metrics_set(const char *series, int64_t v) { update(series, v, 1); }

void metrics_observe(const char *series, double seconds)
{
    if (!(seconds >= 0)) /* NaN or a clock that went back */
        seconds = 0;
    pthread_mutex_lock(&metrics_mu);
    ensure_ready();
    struct hist *h = hist_find(series);
    if (!h) {
        metrics_dropped++;
    } else {
        int b = 0;
        while (b < NBOUNDS && seconds > metrics_bounds[b])
            b++;
        if (b < NBOUNDS)
            h->buckets[b]++;
        h->count++;
        h->sum += seconds;
    }
    pthread_mutex_unlock(&metrics_mu);
}

void metrics_observe_ms(const char *series, int64_t ms)
{
    metrics_observe(series, (double)ms / 1000.0);
}

void metrics_observe_curl(const char *series, void *curl_handle)
{
    curl_off_t us = 0;
    if (curl_handle &&
        curl_easy_getinfo((CURL *)curl_handle, CURLINFO_TOTAL_TIME_T, &us) == CURLE_OK)
        metrics_observe(series, (double)us / 1e6);
}

double metrics_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void metrics_register_collector(metrics_collector fn)
{
    pthread_mutex_lock(&metrics_mu);
    int known = 0;
    for (int i = 0; i < metrics_ncollectors; i++)
        known |= metrics_collectors[i] == fn;
    if (!known && metrics_ncollectors < 16)
        metrics_collectors[metrics_ncollectors++] = fn;
    pthread_mutex_unlock(&metrics_mu);
}

char *metrics_label(const char *in, char *out, size_t cap)
{
    size_t o = 0;
    for (; in && *in && o + 3 < cap; in++) {
        if (*in == '\\' || *in == '"') {
            out[o++] = '\\';
            out[o++] = *in;
        } else if (*in == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *in;
        }
    }
    out[o] = '\0';
    return out;
}

void metrics_families(void (*fn)(const char *name, const char *type,
                                 const char *help, void *ud), void *ud)
{
    static const char *const names[] = {"counter", "gauge", "histogram", "gauge"};
    for (int i = 0; i < NFAMS; i++)
        fn(fam_at(i)->name, names[fam_at(i)->type], fam_at(i)->help, ud);
}

/* ---------------------------------------------------------- rendering */

static int render_hist(struct buf *out, const struct hist *h)
{
    size_t fl = family_len(h->name);
    const char *labels = h->name + fl; /* "" or "{...}" */
    size_t ll = *labels ? strlen(labels) - 2 : 0; /* inside the braces */
    const char *sep = ll ? "," : "";
    uint64_t cum = 0;
    int rc = 0;
    for (int b = 0; b < NBOUNDS; b++) {
        cum += h->buckets[b];
        rc |= buf_printf(out, "%.*s_bucket{%.*s%sle=\"%g\"} %llu\n", (int)fl, h->name,
                         (int)ll, labels + (ll ? 1 : 0), sep, metrics_bounds[b],
                         (unsigned long long)cum);
    }
    rc |= buf_printf(out, "%.*s_bucket{%.*s%sle=\"+Inf\"} %llu\n", (int)fl, h->name,
                     (int)ll, labels + (ll ? 1 : 0), sep, (unsigned long long)h->count);
    rc |= buf_printf(out, "%.*s_sum%s %.6f\n%.*s_count%s %llu\n", (int)fl, h->name,
                     labels, h->sum, (int)fl, h->name, labels,
                     (unsigned long long)h->count);
    return rc;
}

static int render_header(struct buf *out, const struct metrics_family *f, const char *type)
{
    return buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
                      type);
}

/* Copies a collector's output, giving each `# TYPE` line the HELP text of
 * its family (collectors write TYPE and samples only). */
static int add_help(struct buf *out, const char *text, size_t len)
{
    int rc = 0;
    const char *p = text, *end = text + len;
    while (p < end && rc == 0) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p + 1) : (size_t)(end - p);
        if (n > 7 && strncmp(p, "# TYPE ", 7) == 0) {
            char name[128];
            size_t k = 0;
            while (7 + k < n && p[7 + k] != ' ' && k + 1 < sizeof name) {
                name[k] = p[7 + k];
                k++;
            }
            name[k] = '\0';
            const struct metrics_family *f = family_of(name);
            rc |= buf_printf(out, "# HELP %s %s\n", name,
                             f ? f->help : "(undeclared family)");
        }
        rc |= buf_append(out, p, n);
        p += n;
    }
    return rc;
}

int metrics_render(struct buf *out)
{
    static const char *const types[] = {"counter", "gauge", "histogram", "gauge"};
    int rc = 0;
    pthread_mutex_lock(&metrics_mu);
    ensure_ready();
    for (int f = 0; f < NFAMS && rc == 0; f++) {
        const struct metrics_family *fam = fam_at(f);
        size_t fl = strlen(fam->name);
        if (fam->type == METRICS_COLLECTED)
            continue; /* written by its collector below */
        rc |= render_header(out, fam, types[fam->type]);
        if (strcmp(fam->name, "calsync_build_info") == 0) {
            char v[128];
            rc |= buf_printf(out, "calsync_build_info{version=\"%s\"} 1\n",
                             metrics_label(CALSYNC_VERSION, v, sizeof v));
        } else if (strcmp(fam->name, "calsync_metrics_dropped_total") == 0) {
            rc |= buf_printf(out, "calsync_metrics_dropped_total %lld\n",
                             (long long)metrics_dropped);
        } else if (fam->type == METRICS_HISTOGRAM) {
            for (int i = 0; i < metrics_nhist; i++)
                if (family_len(metrics_hist[i].name) == fl &&
                    strncmp(metrics_hist[i].name, fam->name, fl) == 0)
                    rc |= render_hist(out, &metrics_hist[i]);
        } else {
            for (int i = 0; i < metrics_n; i++)
                if (family_len(metrics_tab[i].name) == fl &&
                    strncmp(metrics_tab[i].name, fam->name, fl) == 0)
                    rc |= buf_printf(out, "%s %lld\n", metrics_tab[i].name,
                                     (long long)metrics_tab[i].value);
        }
    }
    /* a series of a family missing from the table above: still exposed
     * (with a HELP that says so) rather than lost; the e2e test of the
     * metrics fails on it */
    const char *prev = NULL;
    size_t prev_len = 0;
    for (int i = 0; i < metrics_n && rc == 0; i++) {
        const char *n = metrics_tab[i].name;
        size_t fl = family_len(n);
        if (family_of(n))
            continue;
        if (!prev || fl != prev_len || strncmp(prev, n, fl) != 0) {
            rc |= buf_printf(out, "# HELP %.*s (undeclared family)\n# TYPE %.*s %s\n",
                             (int)fl, n, (int)fl, n,
                             metrics_tab[i].gauge ? "gauge" : "counter");
            prev = n;
            prev_len = fl;
        }
        rc |= buf_printf(out, "%s %lld\n", n, (long long)metrics_tab[i].value);
    }
    int nc = metrics_ncollectors;
    metrics_collector cs[16];
    memcpy(cs, metrics_collectors, sizeof cs);
    pthread_mutex_unlock(&metrics_mu);
    struct buf tmp;
    buf_init(&tmp);
    for (int i = 0; i < nc; i++)
        cs[i](&tmp);
    if (tmp.len)
        rc |= add_help(out, tmp.data, tmp.len);
    buf_free(&tmp);
    return rc ? -1 : 0;
}

/* Three aggregate reads at scrape time (store/calendars.c, store/queue.c):
 * calendars by state, the stalest successful sync, the oldest pending
 * webhook. Counting in memory instead would need a hook at every state
 * change in sync.c, calendar.c and api.c and would be wrong after a
 * restart until every calendar had changed once. */
void metrics_store_collector(struct buf *out)
{
    static const char *const states[] = {"active", "error", "revoked", "stopped",
                                         "syncing"};
    int64_t counts[5] = {0}, now = time_now_ms(), stalest = 0, oldest = 0, at;
    struct store_conn *c = store_conn(NULL);
    if (c && calendar_stats(c, states, 5, counts, &at, NULL) == 0 && at > 0)
        stalest = now - at;
    if (c && queue_outbox_oldest(c, &at, NULL) == 0 && at > 0)
        oldest = now - at;
    buf_printf(out, "# TYPE calsync_calendars gauge\n");
    for (int i = 0; i < 5; i++)
        buf_printf(out, "calsync_calendars{state=\"%s\"} %lld\n", states[i],
                   (long long)counts[i]);
    buf_printf(out, "# TYPE calsync_sync_stalest_age_seconds gauge\n"
                    "calsync_sync_stalest_age_seconds %.3f\n"
                    "# TYPE calsync_outbox_oldest_age_seconds gauge\n"
                    "calsync_outbox_oldest_age_seconds %.3f\n",
               stalest > 0 ? (double)stalest / 1000.0 : 0.0,
               oldest > 0 ? (double)oldest / 1000.0 : 0.0);
}

void metrics_reset(void)
{
    pthread_mutex_lock(&metrics_mu);
    for (int i = 0; i < metrics_n; i++)
        free(metrics_tab[i].name);
    for (int i = 0; i < metrics_nhist; i++)
        free(metrics_hist[i].name);
    metrics_n = 0;
    metrics_nhist = 0;
    metrics_ready = 0;
    metrics_dropped = 0;
    metrics_ncollectors = 0;
    pthread_mutex_unlock(&metrics_mu);
}
