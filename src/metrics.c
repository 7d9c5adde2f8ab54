/* metrics.c -- an in-memory table of Prometheus series.
 *
 * Series are few (routes x statuses, policy outcomes, Google calls), so a
 * sorted array under one mutex is enough; rendering walks it in name order,
 * which keeps every family's samples together under one # TYPE line.
 */
#include "metrics.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct series {
    char *name;
    int64_t value;
    int gauge;
};

static pthread_mutex_t metrics_mu = PTHREAD_MUTEX_INITIALIZER;
static struct series metrics_tab[METRICS_MAX_SERIES];
static int metrics_n;
static int64_t metrics_dropped;
static metrics_collector metrics_collectors[16];
static int metrics_ncollectors;

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

static void update(const char *name, int64_t v, int gauge)
{
    pthread_mutex_lock(&metrics_mu);
    int i = find(name);
    if (i < 0) {
        char *copy;
        if (metrics_n == METRICS_MAX_SERIES || !(copy = strdup(name))) {
            metrics_dropped++;
            pthread_mutex_unlock(&metrics_mu);
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
    pthread_mutex_unlock(&metrics_mu);
}

void metrics_add(const char *series, int64_t n) { update(series, n, 0); }
void metrics_inc(const char *series) { update(series, 1, 0); }
void metrics_set(const char *series, int64_t v) { update(series, v, 1); }

void metrics_register_collector(metrics_collector fn)
{
    pthread_mutex_lock(&metrics_mu);
    if (metrics_ncollectors < 16)
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

static size_t family_len(const char *name)
{
    const char *b = strchr(name, '{');
    return b ? (size_t)(b - name) : strlen(name);
}

int metrics_render(struct buf *out)
{
    int rc = 0;
    pthread_mutex_lock(&metrics_mu);
    const char *prev = NULL;
    size_t prev_len = 0;
    for (int i = 0; i < metrics_n && rc == 0; i++) {
        const char *n = metrics_tab[i].name;
        size_t fl = family_len(n);
        if (!prev || fl != prev_len || strncmp(prev, n, fl) != 0) {
            rc |= buf_printf(out, "# TYPE %.*s %s\n", (int)fl, n,
                             metrics_tab[i].gauge ? "gauge" : "counter");
            prev = n;
            prev_len = fl;
        }
        rc |= buf_printf(out, "%s %lld\n", n, (long long)metrics_tab[i].value);
    }
    rc |= buf_printf(out, "# TYPE calsync_metrics_dropped_total counter\n"
                          "calsync_metrics_dropped_total %lld\n",
                     (long long)metrics_dropped);
    int nc = metrics_ncollectors;
    metrics_collector cs[16];
    memcpy(cs, metrics_collectors, sizeof cs);
    pthread_mutex_unlock(&metrics_mu);
    for (int i = 0; i < nc; i++)
        cs[i](out);
    return rc ? -1 : 0;
}

void metrics_reset(void)
{
    pthread_mutex_lock(&metrics_mu);
    for (int i = 0; i < metrics_n; i++)
        free(metrics_tab[i].name);
    metrics_n = 0;
    metrics_dropped = 0;
    metrics_ncollectors = 0;
    pthread_mutex_unlock(&metrics_mu);
}
