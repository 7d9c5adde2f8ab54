/* intake.c -- Google push notification intake. See intake.h and
 * docs/internals/intake.md.
 *
 * Hot path: one indexed read of the channel (WAL readers never wait for
 * the writer), a constant-time token compare, and one write(2) of a short
 * record to the journal under a mutex. No SQLite write on the HTTP thread:
 * a sync's page transaction can hold the database's single write lock for
 * tens of milliseconds, and the acknowledgement must not queue behind it.
 *
 * The journal is two files used in turn. Handlers append to the current
 * one; the flusher, when it takes the queued batch, switches handlers to
 * the other file in the same critical section, so the file it leaves holds
 * exactly the records of that batch. Once the batch has committed the file
 * is truncated. Records carry the notification row id they will get, so a
 * replay after a crash between COMMIT and truncate inserts nothing twice
 * (INSERT OR IGNORE on the primary key).
 *
 * Record: "<row id> <calendar id> <received ms> <message number|-1>
 * <resource state|-> <channel id>\n". The channel id is last (it is the
 * stored id the header matched, never hostile bytes beyond a header value,
 * which holds no newline); the resource state is reduced to [A-Za-z0-9_].
 */
#include "intake.h"

#include "fault.h"
#include "log.h"
#include "metrics.h"
#include "provider/provider.h"
#include "store/calendars.h"
#include "store/channels.h"
#include "store/notifications.h"
#include "store/store.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define INTAKE_ID_MAX 256
#define INTAKE_STATE_MAX 32
#define INTAKE_QUEUE_MAX 65536 /* notifications journalled, not yet committed */
#define INTAKE_RECORD_MAX (INTAKE_ID_MAX + INTAKE_STATE_MAX + 96)
#define INTAKE_REPLAY_MAX (64L << 20) /* a journal file larger is not ours */
#define INTAKE_CACHE_SLOTS 64      /* per HTTP thread, direct-mapped */
#define INTAKE_CACHE_TOKEN_MAX 128 /* longer stored tokens are not cached */
#define INTAKE_CACHE_TTL_MS 1000   /* bounds staleness after edits made
                                      outside calsync (a database shell) */

struct note {
    int64_t id, calendar_id, at, number; /* number -1: none */
    char rstate[INTAKE_STATE_MAX + 1];   /* "" when absent */
    char channel[INTAKE_ID_MAX + 1];
};

struct queue {
    struct note *v;
    size_t len, cap;
};

static struct intake_hooks intake_hooks;

/* Live channels, per HTTP thread: a hit skips the SQLite read (a read
 * transaction costs several system calls for its WAL locks, the largest
 * part of a notification's cost after the socket I/O). Only live/opening
 * channels are cached; any change calsync makes to a channel row bumps
 * cache_gen, which empties every thread's cache. */
struct chan_entry {
    char id[INTAKE_ID_MAX + 1];
    char token[INTAKE_CACHE_TOKEN_MAX + 1];
    size_t token_len;
    int64_t calendar_id, at;
    uint64_t gen; /* 0: empty */
};
static atomic_uint_least64_t cache_gen = 1;
static _Thread_local struct chan_entry chan_cache[INTAKE_CACHE_SLOTS];

void intake_channels_changed(void)
{
    atomic_fetch_add(&cache_gen, 1);
}

static struct chan_entry *cache_slot(const char *id)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 16777619u;
    return &chan_cache[h % INTAKE_CACHE_SLOTS];
}

/* The cached live channel `id`, or NULL. */
static const struct chan_entry *cache_get(const char *id)
{
    struct chan_entry *e = cache_slot(id);
    if (e->gen != atomic_load(&cache_gen) || strcmp(e->id, id) != 0 ||
        time_mono_ms() - e->at > INTAKE_CACHE_TTL_MS)
        return NULL;
    return e;
}

static void cache_put(const char *id, const char *token, int64_t calendar_id,
                      uint64_t gen)
{
    size_t tl = token ? strlen(token) : 0;
    if (!token || tl > INTAKE_CACHE_TOKEN_MAX)
        return;
    struct chan_entry *e = cache_slot(id);
    snprintf(e->id, sizeof e->id, "%s", id);
    memcpy(e->token, token, tl + 1);
    e->token_len = tl;
    e->calendar_id = calendar_id;
    e->at = time_mono_ms();
    e->gen = gen;
}

/* Stops asked for by pushes on unknown or stopped channels. These pushes
 * carry no token calsync can check, so each must not become a Google call
 * (nor a log line, nor a table scan): a stop happens at most once per key
 * (resource id for a foreign channel, channel id for a stopped one) per
 * INTAKE_STOP_INTERVAL_MS, within one global budget. A channel that keeps
 * sending after its stop is stopped again after the interval. */
struct recent {
    char key[INTAKE_ID_MAX + 1];
    int64_t at; /* monotonic ms; 0: empty */
};
static pthread_mutex_t stop_mu = PTHREAD_MUTEX_INITIALIZER;
static struct recent recent_res[INTAKE_STOP_MEMORY], recent_chan[INTAKE_STOP_MEMORY];
static unsigned recent_res_next, recent_chan_next;
static struct rate_limit stop_budget = RATE_LIMIT_INIT(INTAKE_STOPS_PER_MINUTE, 60000);
/* resource lookups for unknown channels (an unindexed read) per second */
static struct rate_limit lookup_budget = RATE_LIMIT_INIT(50, 1000);
static struct rate_limit log_unknown = RATE_LIMIT_INIT(INTAKE_LOG_LINES, INTAKE_LOG_WINDOW_MS);
static struct rate_limit log_stopped = RATE_LIMIT_INIT(INTAKE_LOG_LINES, INTAKE_LOG_WINDOW_MS);
static struct rate_limit log_bad_token = RATE_LIMIT_INIT(INTAKE_LOG_LINES, INTAKE_LOG_WINDOW_MS);

/* Everything below is guarded by j_mu, except what the flusher owns. */
static pthread_mutex_t j_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t j_more = PTHREAD_COND_INITIALIZER;    /* flusher wakes */
static pthread_cond_t j_flushed; /* intake_flush; CLOCK_MONOTONIC, see flushed_once */
static pthread_once_t j_flushed_once = PTHREAD_ONCE_INIT;
static int j_fd[2] = {-1, -1};
static off_t j_size[2];
static int j_cur;             /* file handlers append to */
static struct queue j_queue;  /* journalled, not yet taken by the flusher */
static int64_t j_next_id;     /* notification row id of the next record */
static uint64_t j_queued, j_committed; /* counters, for intake_flush */
static int j_running, j_stopping;
/* Shared database (PostgreSQL, several instances): no local journal; each
 * notification is committed to the database before its 200, so any
 * instance's record is every instance's and none needs replaying. */
static int j_direct;
static pthread_t j_thread;

/* j_flushed is made once, by intake_start() or an intake_flush() before
 * it; the flusher and intake_stop() use it only after intake_start(). */
static void flushed_init(void)
{
    cond_init_monotonic(&j_flushed);
}

static void flushed_once(void)
{
    pthread_once(&j_flushed_once, flushed_init);
}

void intake_set_hooks(const struct intake_hooks *hooks)
{
    intake_hooks = *hooks;
}

static void count(const char *outcome)
{
    char series[128];
    snprintf(series, sizeof series,
             "calsync_notifications_total{outcome=\"%s\"}", outcome);
    metrics_inc(series);
}

/* ------------------------------------------------------------ records */

static int format_record(const struct note *n, char *out, size_t cap)
{
    int len = snprintf(out, cap, "%lld %lld %lld %lld %s %s\n", (long long)n->id,
                       (long long)n->calendar_id, (long long)n->at,
                       (long long)n->number, n->rstate[0] ? n->rstate : "-",
                       n->channel);
    return len > 0 && (size_t)len < cap ? len : -1;
}

static int parse_field(const char **p, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(*p, &end, 10);
    if (errno || end == *p || *end != ' ')
        return -1;
    *out = v;
    *p = end + 1;
    return 0;
}

/* Parses one record (without its newline) of len bytes. 0 or -1. */
static int parse_record(const char *s, size_t len, struct note *n)
{
    char line[INTAKE_RECORD_MAX + 1];
    if (len == 0 || len > INTAKE_RECORD_MAX || memchr(s, '\0', len))
        return -1;
    memcpy(line, s, len);
    line[len] = '\0';
    const char *p = line;
    if (parse_field(&p, &n->id) || parse_field(&p, &n->calendar_id) ||
        parse_field(&p, &n->at) || parse_field(&p, &n->number) || n->id <= 0)
        return -1;
    const char *sp = strchr(p, ' ');
    if (!sp || sp == p || (size_t)(sp - p) > INTAKE_STATE_MAX)
        return -1;
    size_t sl = (size_t)(sp - p);
    if (sl == 1 && *p == '-') {
        n->rstate[0] = '\0';
    } else {
        memcpy(n->rstate, p, sl);
        n->rstate[sl] = '\0';
    }
    const char *ch = sp + 1;
    size_t cl = strlen(ch);
    if (cl == 0 || cl > INTAKE_ID_MAX)
        return -1;
    memcpy(n->channel, ch, cl + 1);
    return 0;
}

static int queue_push(struct queue *q, const struct note *n)
{
    if (q->len == q->cap) {
        size_t nc = q->cap ? q->cap * 2 : 256;
        struct note *v = realloc(q->v, nc * sizeof *v);
        if (!v)
            return -1;
        q->v = v;
        q->cap = nc;
    }
    q->v[q->len++] = *n;
    return 0;
}

/* ------------------------------------------------------------- commit */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The calendars a batch asks to sync (not the `sync` handshakes), sorted
 * and distinct, into *cals (owned by the caller, realloc'd). Returns the
 * count, or -1 when out of memory. */
static long batch_calendars(const struct note *v, size_t n, int64_t **cals)
{
    int64_t *c = realloc(*cals, (n ? n : 1) * sizeof *c);
    if (!c)
        return -1;
    *cals = c;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i].rstate, "sync") != 0)
            c[k++] = v[i].calendar_id;
    qsort(c, k, sizeof *c, cmp_i64);
    size_t d = 0;
    for (size_t i = 0; i < k; i++)
        if (d == 0 || c[d - 1] != c[i])
            c[d++] = c[i];
    return (long)d;
}

/* One transaction: every row of the batch (ignored when already there: a
 * replay), and one dirty mark per calendar. The mark is a generation
 * (dirty + 1): a sync clears only the value it read when it started, so a
 * notification during a sync keeps the calendar dirty across a crash. */
static int commit_batch(const struct note *v, size_t n, const int64_t *cals,
                        size_t ncal, struct cs_err *err)
{
    struct store_conn *c = store_conn(err);
    if (!c || store_begin(c, err))
        return -1;
    for (size_t i = 0; i < n; i++)
        if (notification_insert(c, v[i].id, v[i].channel, v[i].number, v[i].rstate,
                                v[i].at, err))
            goto fail;
    for (size_t i = 0; i < ncal; i++)
        if (calendar_mark_dirty(c, cals[i], 1, err))
            goto fail;
    fault_point("intake_flush_before_commit");
    if (store_commit(c, err))
        return -1;
    fault_point("intake_flush_after_commit");
    return 0;
fail:
    store_rollback(c);
    return -1;
}

static void truncate_file(int i)
{
    if (ftruncate(j_fd[i], 0) != 0)
        log_warn("intake.journal_truncate_failed", "errno=%d", errno);
    j_size[i] = 0;
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void *flusher_main(void *arg)
{
    (void)arg;
    struct queue batch = {0};
    int64_t *cals = NULL;
    pthread_mutex_lock(&j_mu);
    for (;;) {
        while (j_queue.len == 0 && !j_stopping)
            pthread_cond_wait(&j_more, &j_mu);
        if (j_queue.len == 0)
            break; /* stopping, and nothing left */
        /* take the batch and move handlers to the other (empty) file */
        struct queue t = j_queue;
        j_queue = batch;
        j_queue.len = 0;
        batch = t;
        int file = j_cur;
        j_cur = 1 - j_cur;
        pthread_mutex_unlock(&j_mu);

        struct cs_err err = {{0}};
        long ncal = -1;
        int ok = 0;
        for (int attempt = 1;; attempt++) {
            ncal = batch_calendars(batch.v, batch.len, &cals);
            if (ncal < 0)
                cs_err_set(&err, "out of memory");
            else if (commit_batch(batch.v, batch.len, cals, (size_t)ncal, &err) == 0) {
                ok = 1;
                break;
            }
            log_error("intake.flush_failed", "notifications=%zu attempt=%d err=%s",
                      batch.len, attempt, log_q(err.msg));
            metrics_inc("calsync_intake_flush_failures_total");
            pthread_mutex_lock(&j_mu);
            int stopping = j_stopping;
            pthread_mutex_unlock(&j_mu);
            if (stopping)
                break; /* the batch stays in its file for the next start */
            /* the database is failing (full disk, read-only): retry; the
             * journal keeps the batch, new notifications queue behind it */
            sleep_ms(attempt < 6 ? 50L << attempt : 2000);
        }
        pthread_mutex_lock(&j_mu);
        if (ok) {
            truncate_file(file);
            pthread_mutex_unlock(&j_mu);
            log_debug("intake.flushed", "notifications=%zu calendars=%ld", batch.len, ncal);
            for (long i = 0; intake_hooks.sync && i < ncal; i++)
                intake_hooks.sync(cals[i]);
            pthread_mutex_lock(&j_mu);
        }
        j_committed += batch.len;
        pthread_cond_broadcast(&j_flushed);
        if (!ok)
            break; /* stopping: never truncate or reuse `file` in this run */
        batch.len = 0;
    }
    /* what is left (a failed stop) is accounted so intake_flush returns */
    j_committed += j_queue.len;
    pthread_cond_broadcast(&j_flushed);
    pthread_mutex_unlock(&j_mu);
    free(batch.v);
    free(cals);
    return NULL;
}

/* ------------------------------------------------------------- replay */

/* Reads journal file `path` (absent: nothing) and appends its records to q.
 * Malformed lines (a torn tail after a power loss) are skipped with a
 * warning. 0, or -1 with err set. */
static int replay_read(const char *path, struct queue *q, struct cs_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        return cs_err_set(err, "intake journal %s: %s", path, strerror(errno));
    }
    struct buf data;
    buf_init(&data);
    char chunk[65536];
    size_t got;
    int rc = -1;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (data.len + got > INTAKE_REPLAY_MAX) {
            cs_err_set(err, "intake journal %s: larger than %ld bytes", path,
                       INTAKE_REPLAY_MAX);
            goto done;
        }
        if (buf_append(&data, chunk, got)) {
            cs_err_set(err, "out of memory");
            goto done;
        }
    }
    if (ferror(f)) {
        cs_err_set(err, "intake journal %s: read error", path);
        goto done;
    }
    size_t bad = 0;
    for (size_t off = 0; off < data.len;) {
        const char *nl = memchr(data.data + off, '\n', data.len - off);
        size_t len = nl ? (size_t)(nl - (data.data + off)) : data.len - off;
        struct note n;
        if (nl && parse_record(data.data + off, len, &n) == 0) {
            if (queue_push(q, &n)) {
                cs_err_set(err, "out of memory");
                goto done;
            }
        } else {
            bad++;
        }
        off += len + 1;
    }
    if (bad)
        log_warn("intake.journal_bad_records", "file=%s skipped=%zu", log_q(path), bad);
    rc = 0;
done:
    buf_free(&data);
    fclose(f);
    return rc;
}

static int next_row_id(int64_t *out, struct cs_err *err)
{
    struct store_conn *c = store_conn(err);
    return c ? notification_next_id(c, out, err) : -1;
}

int intake_start(const char *db_path, struct cs_err *err)
{
    struct queue q = {0};
    int64_t *cals = NULL;
    char path[2][4096];
    int rc = -1;
    flushed_once();
    if (j_running || j_direct)
        return cs_err_set(err, "intake already started");
    if (store_shared()) {
        j_direct = 1;
        return 0;
    }
    for (int i = 0; i < 2; i++) {
        if ((size_t)snprintf(path[i], sizeof path[i], "%s-intake.%d", db_path, i) >=
            sizeof path[i])
            return cs_err_set(err, "database path too long for the intake journal");
        if (replay_read(path[i], &q, err))
            goto done;
    }
    if (q.len) {
        long ncal = batch_calendars(q.v, q.len, &cals);
        if (ncal < 0) {
            cs_err_set(err, "out of memory");
            goto done;
        }
        if (commit_batch(q.v, q.len, cals, (size_t)ncal, err))
            goto done;
        log_info("intake.journal_replayed", "notifications=%zu calendars=%ld",
                 q.len, ncal);
    }
    for (int i = 0; i < 2; i++) {
        j_fd[i] = open(path[i], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (j_fd[i] < 0) {
            cs_err_set(err, "intake journal %s: %s", path[i], strerror(errno));
            goto done;
        }
        truncate_file(i); /* replayed and committed above */
    }
    if (next_row_id(&j_next_id, err))
        goto done;
    j_cur = 0;
    j_queued = j_committed = 0;
    j_stopping = 0;
    if (pthread_create(&j_thread, NULL, flusher_main, NULL) != 0) {
        cs_err_set(err, "cannot start the intake flusher");
        goto done;
    }
    j_running = 1;
    rc = 0;
done:
    if (rc) {
        for (int i = 0; i < 2; i++) {
            if (j_fd[i] >= 0)
                close(j_fd[i]);
            j_fd[i] = -1;
        }
    }
    free(q.v);
    free(cals);
    return rc;
}

int intake_flush(int timeout_ms)
{
    flushed_once();
    int64_t end = time_mono_ms() + timeout_ms;
    int rc = 0;
    pthread_mutex_lock(&j_mu);
    uint64_t want = j_queued;
    while (j_running && j_committed < want)
        if (cond_wait_ms(&j_flushed, &j_mu, end - time_mono_ms()) == ETIMEDOUT) {
            rc = -1;
            break;
        }
    pthread_mutex_unlock(&j_mu);
    return rc;
}

void intake_stop(void)
{
    j_direct = 0;
    pthread_mutex_lock(&j_mu);
    int running = j_running;
    j_stopping = 1;
    pthread_cond_broadcast(&j_more);
    pthread_mutex_unlock(&j_mu);
    if (!running)
        return;
    pthread_join(j_thread, NULL);
    pthread_mutex_lock(&j_mu);
    j_running = 0;
    for (int i = 0; i < 2; i++) {
        close(j_fd[i]);
        j_fd[i] = -1;
    }
    free(j_queue.v);
    j_queue = (struct queue){0};
    pthread_cond_broadcast(&j_flushed);
    pthread_mutex_unlock(&j_mu);
}

/* -------------------------------------------------------------- intake */

/* Shared database: commits n (its row and its calendar's dirty mark) in a
 * transaction of its own; the database gives the row its id. One round of
 * transactions per notification instead of the journal's batches: the
 * price of any instance answering Google. 0, or -1 with *why set. */
static int record_direct(struct note *n, const char **why)
{
    struct cs_err err = {{0}};
    /* a `sync` handshake is recorded but asks for no sync (batch_calendars) */
    size_t ncal = strcmp(n->rstate, "sync") != 0;
    n->id = 0;
    if (commit_batch(n, 1, &n->calendar_id, ncal, &err)) {
        log_error("intake.record_failed", "err=%s", log_q(err.msg));
        *why = "cannot record the notification";
        return -1;
    }
    if (ncal && intake_hooks.sync)
        intake_hooks.sync(n->calendar_id);
    return 0;
}

/* Appends n's record to the current journal file and queues n. Assigns
 * n->id. 0, or -1 (nothing written, nothing queued) with *why set. */
static int journal_append(struct note *n, const char **why)
{
    char rec[INTAKE_RECORD_MAX + 2];
    int rc = -1;
    pthread_mutex_lock(&j_mu);
    if (!j_running || j_stopping) {
        *why = "intake not running";
        goto out;
    }
    if (j_queue.len >= INTAKE_QUEUE_MAX) {
        *why = "intake queue full (database not keeping up)";
        goto out;
    }
    /* ids are never reused, even for a record taken back: if taking it
     * back failed, a replay must not let it shadow a later one */
    n->id = j_next_id++;
    int len = format_record(n, rec, sizeof rec);
    if (len < 0) {
        *why = "notification too long";
        goto out;
    }
    int fd = j_fd[j_cur];
    ssize_t w;
    do
        w = write(fd, rec, (size_t)len);
    while (w < 0 && errno == EINTR);
    if (w != len) {
        /* ENOSPC/EFBIG/EIO, or a short write: take back any torn tail so
         * the file stays a sequence of whole records */
        int e = w < 0 ? errno : ENOSPC;
        if (w > 0 && ftruncate(fd, j_size[j_cur]) != 0)
            log_warn("intake.journal_truncate_failed", "errno=%d", errno);
        log_error("intake.journal_write_failed", "errno=%d err=%s", e, log_q(strerror(e)));
        *why = "cannot record the notification";
        goto out;
    }
    if (queue_push(&j_queue, n)) {
        /* written but not queued: take the record back (the flusher would
         * truncate it with a batch it is not part of); Google retries */
        if (ftruncate(fd, j_size[j_cur]) != 0)
            log_warn("intake.journal_truncate_failed", "errno=%d", errno);
        *why = "out of memory";
        goto out;
    }
    j_size[j_cur] += len;
    j_queued++;
    /* the flusher takes the whole queue at once: it needs waking only when
     * the queue was empty (otherwise it is awake or already signalled) */
    if (j_queue.len == 1)
        pthread_cond_signal(&j_more);
    rc = 0;
out:
    pthread_mutex_unlock(&j_mu);
    return rc;
}

/* 1 when `key` was stopped within the interval (stop_mu held). */
static int recent_hit(const struct recent *t, const char *key, int64_t now)
{
    for (unsigned i = 0; i < INTAKE_STOP_MEMORY; i++)
        if (t[i].at && now - t[i].at < INTAKE_STOP_INTERVAL_MS &&
            strcmp(t[i].key, key) == 0)
            return 1;
    return 0;
}

/* 1 when a stop of `key` may be queued now (it is then remembered): not
 * stopped within the interval, and the global budget allows one more. */
static int may_stop(struct recent *t, unsigned *next, const char *key)
{
    int64_t now = time_mono_ms();
    const char *result = "queued";
    pthread_mutex_lock(&stop_mu);
    if (recent_hit(t, key, now)) {
        result = "recent";
    } else if (!rate_limit_take(&stop_budget, now, NULL)) {
        result = "rate_limited";
    } else {
        snprintf(t[*next].key, sizeof t[0].key, "%s", key);
        t[*next].at = now;
        *next = (*next + 1) % INTAKE_STOP_MEMORY;
    }
    pthread_mutex_unlock(&stop_mu);
    char series[96];
    snprintf(series, sizeof series,
             "calsync_intake_stop_requests_total{result=\"%s\"}", result);
    metrics_inc(series);
    return strcmp(result, "queued") == 0;
}

/* An unknown channel: when it watches a resource one of calsync's channels
 * watches, calsync has the credential to stop it (DESIGN §2 Intake). The
 * resource id is unauthenticated: a resource stopped within the interval
 * is not even looked up, and lookups are rate-limited too (the read scans
 * the channels table, which has no index on resource_id). */
static void unknown_channel(struct store_conn *c, const char *id, const char *rid)
{
    struct cs_err err = {{0}};
    if (!intake_hooks.stop_foreign || !rid || !*rid || strlen(rid) > INTAKE_ID_MAX)
        return;
    pthread_mutex_lock(&stop_mu);
    int recent = recent_hit(recent_res, rid, time_mono_ms());
    pthread_mutex_unlock(&stop_mu);
    if (recent || !rate_limit_take(&lookup_budget, time_mono_ms(), NULL))
        return;
    int64_t cal = 0;
    if (channels_calendar_by_resource(c, rid, &cal, &err) != 1)
        cal = 0;
    if (cal > 0 && may_stop(recent_res, &recent_res_next, rid)) {
        log_info("intake.foreign_channel", "channel=%s resource=%s calendar=%lld",
                 log_q(id), log_q(rid), (long long)cal);
        intake_hooks.stop_foreign(id, rid, cal);
    }
}

static void notify(const char *id, const char *token, const char *rstate,
                   const char *msgno, const char *rid, int renew, struct http_resp *resp);

void intake_notify(const char *id, const char *token, const char *rstate,
                   const char *msgno, const char *rid, struct http_resp *resp)
{
    notify(id, token, rstate, msgno, rid, 0, resp);
}

static void notify(const char *id, const char *token, const char *rstate,
                   const char *msgno, const char *rid, int renew, struct http_resp *resp)
{
    struct cs_err err = {{0}};
    struct note n = {.number = -1};
    char state[16] = "";
    const char *why;

    resp->status = 200;
    buf_puts(&resp->body, "{}");
    if (!id || !*id || strlen(id) > INTAKE_ID_MAX) {
        count("unknown");
        return;
    }
    if (msgno && (parse_i64(msgno, &n.number) || n.number < 0))
        n.number = -1;
    const struct chan_entry *hit = cache_get(id);
    int match = 0;
    if (hit) {
        n.calendar_id = hit->calendar_id;
        match = token && secure_equal(token, strlen(token), hit->token, hit->token_len);
    } else {
        /* read the generation first: a change racing the read below then
         * leaves an entry that is already invalid */
        uint64_t gen = atomic_load(&cache_gen);
        struct store_conn *c = store_conn(&err);
        struct buf tok;
        buf_init(&tok);
        int rc = c ? channels_lookup(c, id, &n.calendar_id, &tok, state, &err) : -1;
        const char *want = rc == 1 ? (tok.data ? tok.data : "") : NULL;
        if (want)
            match = token && secure_equal(token, strlen(token), want, strlen(want));
        if (rc < 0) {
            buf_free(&tok);
            goto db_fail;
        }
        if (rc == 0) {
            buf_free(&tok);
            count("unknown");
            long sup;
            if (rate_limit_take(&log_unknown, time_mono_ms(), &sup))
                log_info("intake.unknown_channel", "channel=%s suppressed=%ld",
                         log_q(id), sup);
            unknown_channel(c, id, rid);
            return;
        }
        int usable = strcmp(state, "live") == 0 || strcmp(state, "opening") == 0;
        if (usable && want)
            cache_put(id, want, n.calendar_id, gen);
        buf_free(&tok);
        if (!usable) {
            count("stopped");
            long sup;
            if (rate_limit_take(&log_stopped, time_mono_ms(), &sup))
                log_info("intake.stopped_channel", "channel=%s state=%s suppressed=%ld",
                         log_q(id), state, sup);
            if (intake_hooks.stop_channel && may_stop(recent_chan, &recent_chan_next, id))
                intake_hooks.stop_channel(id);
            return;
        }
    }
    if (!match) {
        count("bad_token");
        long sup;
        if (rate_limit_take(&log_bad_token, time_mono_ms(), &sup))
            log_warn("intake.bad_token", "channel=%s suppressed=%ld", log_q(id), sup);
        http_error(resp, 401, "channel token missing or wrong");
        return;
    }
    int is_sync = rstate && strcmp(rstate, "sync") == 0;
    if (rstate) {
        /* kept as a label: [A-Za-z0-9_], at most 32 bytes */
        size_t i = 0;
        for (; rstate[i] && i < INTAKE_STATE_MAX; i++) {
            char ch = rstate[i];
            int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                     (ch >= '0' && ch <= '9') || ch == '_';
            n.rstate[i] = ok ? ch : '_';
        }
        n.rstate[i] = '\0';
    }
    snprintf(n.channel, sizeof n.channel, "%s", id);
    n.at = time_now_ms();
    if (j_direct ? record_direct(&n, &why) : journal_append(&n, &why)) {
        count("error");
        http_error(resp, 503, "%s", why);
        return;
    }
    fault_point("intake_after_journal");
    if (renew && intake_hooks.renew_channel)
        intake_hooks.renew_channel(n.calendar_id);
    log_debug("intake.journalled", "id=%lld calendar=%lld", (long long)n.id,
              (long long)n.calendar_id);
    count(is_sync ? "sync" : "accepted");
    return;
db_fail:
    /* Google retries non-2xx with backoff; polling covers the rest. */
    count("error");
    log_error("intake.db_error", "err=%s", log_q(err.msg));
    http_error(resp, 503, "database unavailable");
}

void intake_handle(struct http_req *req, struct http_resp *resp)
{
    /* the route names the provider (/webhooks/<name>); it reads its own
     * request shape, the rest is the same for every provider */
    const struct provider_ops *p = provider_for_route(req->path);
    struct provider_push_batch b;
    struct cs_err err = {{0}};
    memset(&b, 0, sizeof b);
    if (!p || !p->push_parse) {
        http_error(resp, 404, "no such provider");
        return;
    }
    if (p->push_parse(req, &b, &err) || b.n < 0 || b.n > PROVIDER_PUSH_MAX) {
        count("bad_request");
        http_error(resp, 400, "%s", err.msg[0] ? err.msg : "not a push");
        return;
    }
    if (b.handshake) {
        resp->status = 200;
        resp->content_type = "text/plain";
        buf_puts(&resp->body, b.handshake);
        return;
    }
    if (b.n == 1 && !b.batch) {
        notify(b.msg[0].subscription, b.msg[0].token, b.msg[0].state,
               b.msg[0].sequence, b.msg[0].resource, b.msg[0].renew, resp);
        return;
    }
    /* a batch: each message on its own; a message that could not be
     * journalled (503) has the whole request retried -- the others are
     * then journalled twice, which only coalesces into the same sync */
    int retry = 0;
    for (int i = 0; i < b.n; i++) {
        struct http_resp one = {.status = 200};
        buf_init(&one.body);
        notify(b.msg[i].subscription, b.msg[i].token, b.msg[i].state,
               b.msg[i].sequence, b.msg[i].resource, b.msg[i].renew, &one);
        retry |= one.status == 503;
        buf_free(&one.body);
    }
    if (retry)
        http_error(resp, 503, "journal unavailable");
    else
        resp->status = 202;
}
