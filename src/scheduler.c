/* scheduler.c -- scheduler thread, run queue and sync workers.
 *
 * Main objects: the slot table (one struct slot per calendar, sorted by id,
 * guarded by sched_mu), the FIFO run queue of calendar ids, the scheduler
 * thread (reloads calendars, queues the due ones) and the workers (pop an
 * id, run sync_calendar(), record the outcome). A slot is never queued or
 * run twice at once: `queued` and `running` are the coalescing. The only
 * blocking work (Google, SQLite) happens with the mutex released.
 */
#include "scheduler.h"

#include "channel.h"
#include "log.h"
#include "metrics.h"
#include "provider/provider.h"
#include "store/calendars.h"
#include "store/store.h"
#include "sync.h"

#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct slot {
    int64_t id;
    int active;            /* in the table and neither stopped nor revoked */
    int queued, running;
    int pending;           /* run (again) as soon as allowed */
    int urgent;            /* the pending request bypasses the backoff */
    enum sync_source pending_src;
    int failures;
    int64_t next_poll;     /* mono ms */
    int64_t not_before;    /* mono ms: error backoff */
    int64_t channel_due;   /* mono ms: open or renew the push channel */
    int64_t push_after;    /* mono ms: the next push sync starts no sooner */
    int channel_now;       /* renew the subscription now, due or not */
};

/* Work that must run on a worker (it calls Google) but is not a sync:
 * stopping channels of a deleted calendar, or one still sending. */
struct chore {
    int64_t calendar_id;   /* > 0, no channel: stop the calendar's channels */
    char channel_id[257];  /* else: stop this channel, ours... */
    char resource_id[257]; /* ...or, when set, a foreign one of calendar_id */
};

#define SCHED_MAX_CHORES 1024
#define SCHED_CHANNEL_RETRY_MS 60000

static pthread_mutex_t sched_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t sched_wake;  /* scheduler; CLOCK_MONOTONIC, made by sched_start */
static pthread_cond_t work_wake = PTHREAD_COND_INITIALIZER;   /* workers */
static const struct config *s_cfg;
static int s_running, s_stopping;
static struct slot *slots;
static size_t n_slots, cap_slots;
static int64_t *queue;         /* ring of calendar ids */
static size_t q_head, q_len, q_cap;
static pthread_t sched_thread;
static pthread_t *workers;
static int n_workers;
static struct chore chores[SCHED_MAX_CHORES];
static size_t n_chores;

/* ----------------------------------------------------------- slot table */

static int64_t poll_ms(void)
{
    int64_t p = s_cfg->poll_interval * 1000;
    return p > 0 ? p : 1000;
}

/* poll_interval shortened by up to 10%, so the bound holds with jitter */
static int64_t poll_period(void)
{
    int64_t p = poll_ms();
    return p - (int64_t)(random_u64() % (uint64_t)(p / 10 + 1));
}

static struct slot *find(int64_t id)
{
    size_t lo = 0, hi = n_slots;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (slots[mid].id == id)
            return &slots[mid];
        if (slots[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Inserts a slot for id (sorted); NULL on OOM. Caller holds sched_mu. */
static struct slot *insert(int64_t id)
{
    if (n_slots == cap_slots) {
        size_t nc = cap_slots ? cap_slots * 2 : 64;
        struct slot *p = realloc(slots, nc * sizeof *p);
        if (!p)
            return NULL;
        slots = p;
        cap_slots = nc;
    }
    size_t i = n_slots;
    while (i > 0 && slots[i - 1].id > id)
        i--;
    memmove(&slots[i + 1], &slots[i], (n_slots - i) * sizeof *slots);
    n_slots++;
    slots[i] = (struct slot){.id = id, .active = 1, .next_poll = time_mono_ms()};
    return &slots[i];
}

static int enqueue(int64_t id)
{
    if (q_len == q_cap) {
        size_t nc = q_cap ? q_cap * 2 : 64;
        int64_t *p = malloc(nc * sizeof *p);
        if (!p)
            return -1;
        for (size_t i = 0; i < q_len; i++)
            p[i] = queue[(q_head + i) % q_cap];
        free(queue);
        queue = p;
        q_cap = nc;
        q_head = 0;
    }
    queue[(q_head + q_len) % q_cap] = id;
    q_len++;
    return 0;
}

/* When slot s's pending request may start (mono ms): at once when urgent;
 * else after the error backoff, and a push-only request also no sooner
 * than SCHED_PUSH_SPACING_MS after the previous push sync started. */
static int64_t pending_at(const struct slot *s)
{
    if (s->urgent)
        return 0;
    if (s->pending_src == SYNC_SRC_PUSH && s->push_after > s->not_before)
        return s->push_after;
    return s->not_before;
}

/* Queues slot s for a worker now when its pending request may run and it
 * is neither queued nor running (the coalescing). Wakes one worker. 1 when
 * queued. Caller holds sched_mu. */
static int try_queue(struct slot *s, int64_t now)
{
    if (!s->active || s->queued || s->running || !s->pending ||
        now < pending_at(s) || enqueue(s->id))
        return 0;
    s->queued = 1;
    pthread_cond_signal(&work_wake);
    return 1;
}

static void request(int64_t id, enum sync_source src, int urgent)
{
    pthread_mutex_lock(&sched_mu);
    if (s_running && !s_stopping) {
        struct slot *s = find(id);
        int revived = !s || !s->active;
        int was_pending = s && s->pending, was_urgent = s && s->urgent;
        if (!s)
            s = insert(id);
        if (s) {
            /* a calendar reactivated after DELETE (or one the table has
             * not seen yet) is watched again at once: its old channel_due
             * still points at the renewal of a channel that was stopped */
            if (revived) {
                s->channel_due = time_mono_ms();
                s->failures = 0;
                s->not_before = 0;
            }
            s->active = 1;
            if (!s->pending || src == SYNC_SRC_PUSH)
                s->pending_src = src;
            s->pending = 1;
            s->urgent |= urgent;
            /* idle: a worker starts the sync at once; queued or running:
             * `pending` is the one more sync, queued when this one ends;
             * in backoff or push spacing: the scheduler thread queues it
             * (woken once, not for every notification of a burst) */
            if (!try_queue(s, time_mono_ms()) && !s->queued && !s->running &&
                (revived || !was_pending || (s->urgent && !was_urgent)))
                pthread_cond_signal(&sched_wake);
        }
    }
    pthread_mutex_unlock(&sched_mu);
}

void sched_request_sync(int64_t calendar_id)
{
    request(calendar_id, SYNC_SRC_POLL, 1);
}

void sched_request_push(int64_t calendar_id)
{
    request(calendar_id, SYNC_SRC_PUSH, 0);
}

void sched_request_channel(int64_t calendar_id)
{
    pthread_mutex_lock(&sched_mu);
    struct slot *s = s_running && !s_stopping ? find(calendar_id) : NULL;
    if (s && s->active) {
        s->channel_due = time_mono_ms();
        s->channel_now = 1;
    }
    pthread_mutex_unlock(&sched_mu);
    /* the worker that runs the sync maintains the channel first */
    request(calendar_id, SYNC_SRC_PUSH, 0);
}

/* ------------------------------------------------- per-calendar exclusion */

static pthread_mutex_t lock_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t lock_cv = PTHREAD_COND_INITIALIZER;
static int64_t locked[256];   /* at most workers + writer threads held */
static size_t n_locked;

static int is_locked(int64_t id)
{
    for (size_t i = 0; i < n_locked; i++)
        if (locked[i] == id)
            return 1;
    return 0;
}

void sched_calendar_lock(int64_t calendar_id)
{
    pthread_mutex_lock(&lock_mu);
    while (is_locked(calendar_id) || n_locked == sizeof locked / sizeof locked[0])
        pthread_cond_wait(&lock_cv, &lock_mu);
    locked[n_locked++] = calendar_id;
    pthread_mutex_unlock(&lock_mu);
    /* several instances on one database: the calendar's lease too, waited
     * for while another instance syncs or writes it (that sync then counts
     * as this one's "one more"). A database error goes on without it: its
     * writes fail the same way (store/calendars.h). */
    if (!store_shared())
        return;
    for (int waits = 0;; waits++) {
        struct cs_err err = {{0}};
        struct store_conn *c = store_conn(&err);
        int got = c ? calendar_lease_try(c, calendar_id, &err) : -1;
        if (got == 1)
            return;
        if (got < 0) {
            log_warn("sched.lease_failed", "calendar=%lld err=%s",
                     (long long)calendar_id, log_q(err.msg));
            return;
        }
        if (waits == 0)
            log_debug("sched.lease_wait", "calendar=%lld", (long long)calendar_id);
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

void sched_calendar_unlock(int64_t calendar_id)
{
    if (store_shared()) {
        struct store_conn *c = store_conn(NULL);
        if (c)
            calendar_lease_release(c, calendar_id);
    }
    pthread_mutex_lock(&lock_mu);
    for (size_t i = 0; i < n_locked; i++) {
        if (locked[i] == calendar_id) {
            locked[i] = locked[--n_locked];
            break;
        }
    }
    pthread_cond_broadcast(&lock_cv);
    pthread_mutex_unlock(&lock_mu);
}

static void add_chore(int64_t calendar_id, const char *channel_id,
                      const char *resource_id)
{
    pthread_mutex_lock(&sched_mu);
    if (s_running && n_chores < SCHED_MAX_CHORES) {
        struct chore *c = &chores[n_chores++];
        c->calendar_id = calendar_id;
        snprintf(c->channel_id, sizeof c->channel_id, "%s", channel_id ? channel_id : "");
        snprintf(c->resource_id, sizeof c->resource_id, "%s",
                 resource_id ? resource_id : "");
        pthread_cond_signal(&work_wake);
    }
    pthread_mutex_unlock(&sched_mu);
}

void sched_stop_channels(int64_t calendar_id)
{
    add_chore(calendar_id, NULL, NULL);
}

void sched_stop_channel(const char *channel_id)
{
    if (channel_id && strlen(channel_id) < sizeof chores[0].channel_id)
        add_chore(0, channel_id, NULL);
}

void sched_stop_foreign(const char *channel_id, const char *resource_id,
                        int64_t calendar_id)
{
    if (channel_id && *channel_id && strlen(channel_id) < sizeof chores[0].channel_id &&
        resource_id && *resource_id && strlen(resource_id) < sizeof chores[0].resource_id &&
        calendar_id > 0)
        add_chore(calendar_id, channel_id, resource_id);
}

void sched_forget(int64_t calendar_id)
{
    pthread_mutex_lock(&sched_mu);
    struct slot *s = find(calendar_id);
    if (s) {
        s->pending = s->urgent = 0;
        s->active = 0;
    }
    pthread_mutex_unlock(&sched_mu);
}

/* -------------------------------------------------------------- reload */

struct row {
    int64_t id;
    int active, dirty;
    int64_t last_synced_at; /* wall ms, -1 when never */
};

struct row_list {
    struct row *v;
    size_t len, cap;
};

static int row_add(void *ud, const struct calendar_sched *r)
{
    struct row_list *l = ud;
    if (l->len == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        struct row *p = realloc(l->v, nc * sizeof *p);
        if (!p)
            return 1;
        l->v = p;
        l->cap = nc;
    }
    l->v[l->len++] = (struct row){r->id, r->runnable, r->dirty, r->last_synced};
    return 0;
}

/* Reads every calendar (ordered by id) without the mutex held. */
static int load_rows(struct row **out, size_t *n, struct cs_err *err)
{
    struct store_conn *c = store_conn(err);
    struct row_list l = {0};
    if (!c)
        return -1;
    int rc = calendar_each_sched(c, row_add, &l, err);
    if (rc) {
        if (rc > 0)
            cs_err_set(err, "out of memory");
        free(l.v);
        return -1;
    }
    *out = l.v;
    *n = l.len;
    return 0;
}

/* Merges rows into the slot table. Caller holds sched_mu. */
static void merge(const struct row *rows, size_t n)
{
    int64_t now = time_mono_ms(), wall = time_now_ms();
    for (size_t i = 0; i < n_slots; i++)
        slots[i].active = -slots[i].active - 1; /* mark: not seen (yet) */
    for (size_t i = 0; i < n; i++) {
        struct slot *s = find(rows[i].id);
        int fresh = !s;
        if (fresh && !(s = insert(rows[i].id)))
            return;
        if (!fresh)
            s->active = -s->active - 1; /* unmark */
        int was_active = s->active;
        s->active = rows[i].active;
        if (!s->active) {
            s->pending = s->urgent = 0;
            continue;
        }
        if (fresh || !was_active) {
            int64_t due = now;
            if (rows[i].last_synced_at >= 0) {
                int64_t left = rows[i].last_synced_at + poll_period() - wall;
                due = now + (left < 0 ? 0 : left > poll_ms() ? poll_ms() : left);
            }
            s->next_poll = due;
            s->channel_due = now;
            s->failures = 0;
            s->not_before = 0;
        }
        /* a notification recorded in the database (also before a restart) */
        if (rows[i].dirty && !s->queued && !s->running && !s->pending) {
            s->pending = 1;
            s->pending_src = SYNC_SRC_PUSH;
        }
    }
    for (size_t i = 0; i < n_slots; i++) {
        if (slots[i].active < 0) { /* gone from the table */
            slots[i].active = 0;
            slots[i].pending = slots[i].urgent = 0;
        }
    }
}

/* ----------------------------------------------------------- the threads */

static void *scheduler_main(void *arg)
{
    (void)arg;
    int64_t next_reload = 0;
    pthread_mutex_lock(&sched_mu);
    while (!s_stopping) {
        int64_t now = time_mono_ms();
        if (now >= next_reload) {
            struct row *rows = NULL;
            size_t n = 0;
            struct cs_err err;
            pthread_mutex_unlock(&sched_mu);
            int rc = load_rows(&rows, &n, &err);
            pthread_mutex_lock(&sched_mu);
            if (rc == 0)
                merge(rows, n);
            else
                log_error("sched.reload_failed", "err=%s", log_q(err.msg));
            free(rows);
            now = time_mono_ms();
            next_reload = now + SCHED_RELOAD_MS;
        }
        int64_t wake = next_reload;
        int queued = 0;
        for (size_t i = 0; i < n_slots; i++) {
            struct slot *s = &slots[i];
            if (!s->active || s->queued || s->running)
                continue;
            int allowed = now >= s->not_before;
            int due = (s->pending && now >= pending_at(s)) ||
                      (allowed && (now >= s->next_poll || now >= s->channel_due));
            if (due) {
                if (enqueue(s->id) == 0) {
                    s->queued = 1;
                    queued++;
                }
                continue;
            }
            int64_t next = s->next_poll < s->channel_due ? s->next_poll : s->channel_due;
            int64_t t = next > s->not_before ? next : s->not_before;
            if (s->pending && pending_at(s) < t)
                t = pending_at(s);
            if (t < wake)
                wake = t;
        }
        if (queued)
            pthread_cond_broadcast(&work_wake);
        metrics_set("calsync_sched_queue_depth", (int64_t)q_len);
        int64_t ms = wake - time_mono_ms();
        cond_wait_ms(&sched_wake, &sched_mu, ms);
    }
    pthread_mutex_unlock(&sched_mu);
    return NULL;
}

/* The error backoff's cap, min(300 s, poll_interval): a failing calendar
 * is still tried at least once per poll period. */
static int64_t backoff_cap(void)
{
    return poll_ms() < SCHED_BACKOFF_MAX_MS ? poll_ms() : SCHED_BACKOFF_MAX_MS;
}

/* Several instances on one database (store_shared): every instance
 * schedules every calendar, and learns of every notification through the
 * dirty mark, so each would poll and push-sync each calendar. Under the
 * calendar's lease, what the database says another instance did decides:
 *   - a poll of a calendar synced by anyone less than a poll period ago,
 *     with no notification waiting, is skipped; the next one is due a
 *     period after that sync (what one instance would have done);
 *   - a push whose notifications were all synced since (dirty 0) is
 *     skipped: another instance did that sync;
 *   - a push within SCHED_PUSH_SPACING_MS of anyone's last sync waits
 *     for the spacing, as it would behind this instance's own push sync.
 * So Google sees as many listings as with one instance. Returns -1: sync
 * now; else skipped, and the wait (ms) before the next poll (poll) or the
 * deferred push (push; 0: nothing left to do). */
static int64_t shared_skip(int64_t id, enum sync_source src, int urgent)
{
    int64_t last = -1, dirty = 0;
    struct store_conn *sc = store_shared() && !urgent ? store_conn(NULL) : NULL;
    if (!sc || calendar_sync_mark(sc, id, &last, &dirty, NULL) != 1 || last < 0)
        return -1;
    int64_t since = time_now_ms() - last, left;
    if (src == SYNC_SRC_POLL) {
        left = poll_period() - since;
        if (dirty || left <= 0)
            return -1;
        log_debug("sched.poll_shared", "calendar=%lld next_ms=%lld", (long long)id,
                  (long long)left);
        return left;
    }
    if (src != SYNC_SRC_PUSH)
        return -1;
    if (!dirty) {
        log_debug("sched.push_shared", "calendar=%lld", (long long)id);
        return 0;
    }
    left = SCHED_PUSH_SPACING_MS - since;
    if (left <= 0)
        return -1;
    log_debug("sched.push_spaced", "calendar=%lld wait_ms=%lld", (long long)id,
              (long long)left);
    return left;
}

static void *worker_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&sched_mu);
    for (;;) {
        while (!s_stopping && q_len == 0 && n_chores == 0)
            pthread_cond_wait(&work_wake, &sched_mu);
        if (s_stopping)
            break;
        if (n_chores) {
            struct chore ch = chores[--n_chores];
            pthread_mutex_unlock(&sched_mu);
            struct cs_err cerr = {{0}};
            int crc;
            if (ch.resource_id[0]) {
                crc = channel_stop_foreign(ch.calendar_id, ch.channel_id,
                                           ch.resource_id, &cerr);
            } else if (ch.calendar_id > 0) {
                /* under the calendar's lock, like channel_maintain: a
                 * calendar reactivated meanwhile keeps (or reopens) its
                 * channel, never loses the one just opened */
                sched_calendar_lock(ch.calendar_id);
                crc = channel_stop_calendar(ch.calendar_id, &cerr);
                sched_calendar_unlock(ch.calendar_id);
            } else {
                crc = channel_stop_one(ch.channel_id, &cerr);
            }
            if (crc)
                log_warn("sched.chore_failed", "calendar=%lld channel=%s err=%s",
                         (long long)ch.calendar_id, log_q(ch.channel_id), log_q(cerr.msg));
            pthread_mutex_lock(&sched_mu);
            continue;
        }
        int64_t id = queue[q_head];
        q_head = (q_head + 1) % q_cap;
        q_len--;
        struct slot *s = find(id);
        if (!s || !s->active) {
            if (s)
                s->queued = 0;
            continue;
        }
        enum sync_source src = s->pending ? s->pending_src : SYNC_SRC_POLL;
        int64_t slot_channel_due = s->channel_due;
        int urgent = s->urgent;
        int channel_now = s->channel_now;
        s->channel_now = 0;
        if (src == SYNC_SRC_PUSH)
            s->push_after = time_mono_ms() + SCHED_PUSH_SPACING_MS;
        s->queued = 0;
        s->running = 1;
        s->pending = s->urgent = 0;
        pthread_mutex_unlock(&sched_mu);

        struct cs_err err = {{0}};
        int64_t channel_due = -1;
        sched_calendar_lock(id);
        if (time_mono_ms() >= slot_channel_due) {
            /* the push channel first: a change made while the first full
             * sync runs then arrives as a notification, never in between */
            int64_t renew_wall = 0;
            if ((channel_now ? channel_renew_now(id, &renew_wall, &err)
                             : channel_maintain(id, &renew_wall, &err)) == 0 &&
                renew_wall > 0)
                channel_due = time_mono_ms() + (renew_wall - time_now_ms());
            else
                channel_due = time_mono_ms() + SCHED_CHANNEL_RETRY_MS;
            if (err.msg[0])
                log_warn("sched.channel_failed", "calendar=%lld err=%s",
                         (long long)id, log_q(err.msg));
            err.msg[0] = '\0';
        }
        int rc;
        int64_t shared_wait = shared_skip(id, src, urgent);
        if (shared_wait >= 0) {
            rc = SYNC_OK;
        } else {
            log_debug("sched.sync_start", "calendar=%lld source=%s", (long long)id,
                      sync_source_name(src));
            rc = sync_calendar(id, src, NULL, &err);
        }
        sched_calendar_unlock(id);

        pthread_mutex_lock(&sched_mu);
        s = find(id); /* the table may have moved */
        if (!s)
            continue;
        s->running = 0;
        if (channel_due >= 0)
            s->channel_due = channel_due;
        int64_t now = time_mono_ms();
        switch (rc) {
        case SYNC_OK:
            s->failures = 0;
            s->not_before = 0;
            if (shared_wait < 0) {
                s->next_poll = now + poll_period();
            } else if (src == SYNC_SRC_POLL) {
                s->next_poll = now + shared_wait;
            } else if (shared_wait > 0) {
                /* a push too soon after another instance's sync: still
                 * due, at the spacing, with whatever came meanwhile */
                s->pending = 1;
                s->pending_src = SYNC_SRC_PUSH;
                s->push_after = now + shared_wait;
            }
            break;
        case SYNC_SKIPPED:
        case SYNC_REVOKED:
            s->active = 0;
            s->pending = s->urgent = 0;
            break;
        default:
            if (s_stopping)
                break;
            s->failures++;
            s->not_before = now + backoff_ms(s->failures, BACKOFF_BASE_MS, backoff_cap());
            s->next_poll = s->not_before;
            log_info("sched.backoff", "calendar=%lld failures=%d wait_ms=%lld",
                     (long long)id, s->failures, (long long)(s->not_before - now));
        }
        /* requests during the sync: the one more, at once (this worker or
         * another takes it); else the scheduler thread re-plans its wake */
        if (!try_queue(s, now))
            pthread_cond_signal(&sched_wake);
    }
    pthread_mutex_unlock(&sched_mu);
    return NULL;
}

/* ------------------------------------------------------------- start/stop */

static void reset_state(void)
{
    free(slots);
    free(queue);
    free(workers);
    slots = NULL;
    queue = NULL;
    workers = NULL;
    n_slots = cap_slots = q_head = q_len = q_cap = 0;
    n_workers = 0;
    n_chores = 0;
}

/* Stops and joins every thread started (the scheduler thread only when
 * `with_sched`), cancelling provider waits, and frees the state. Shared by
 * sched_stop() and a failed sched_start(). */
static void shut_down(int with_sched)
{
    pthread_mutex_lock(&sched_mu);
    s_stopping = 1;
    pthread_cond_broadcast(&sched_wake);
    pthread_cond_broadcast(&work_wake);
    pthread_mutex_unlock(&sched_mu);
    provider_cancel_all();
    if (with_sched)
        pthread_join(sched_thread, NULL);
    for (int i = 0; i < n_workers; i++)
        pthread_join(workers[i], NULL);
    pthread_mutex_lock(&sched_mu);
    s_running = 0;
    reset_state();
    pthread_mutex_unlock(&sched_mu);
    pthread_cond_destroy(&sched_wake);
}

int sched_start(const struct config *cfg, struct cs_err *err)
{
    int n = cfg->workers > 0 ? cfg->workers : 1;
    int rc = -1, sched_up = 0;
    provider_init_all(cfg);
    pthread_mutex_lock(&sched_mu);
    if (s_running) {
        pthread_mutex_unlock(&sched_mu);
        return cs_err_set(err, "scheduler already running");
    }
    if ((errno = cond_init_monotonic(&sched_wake))) {
        pthread_mutex_unlock(&sched_mu);
        return cs_err_set(err, "cannot make the scheduler's condition variable: %s",
                          strerror(errno));
    }
    s_cfg = cfg;
    s_stopping = 0;
    s_running = 1;
    workers = calloc((size_t)n, sizeof *workers);
    pthread_mutex_unlock(&sched_mu);
    if (!workers) {
        cs_err_set(err, "out of memory");
        goto done;
    }
    if ((errno = pthread_create(&sched_thread, NULL, scheduler_main, NULL))) {
        cs_err_set(err, "cannot start the scheduler thread: %s", strerror(errno));
        goto done;
    }
    sched_up = 1;
    for (; n_workers < n; n_workers++) {
        if ((errno = pthread_create(&workers[n_workers], NULL, worker_main, NULL))) {
            cs_err_set(err, "cannot start worker %d: %s", n_workers, strerror(errno));
            goto done;
        }
    }
    log_info("sched.started", "workers=%d poll_interval=%lld", n,
             (long long)cfg->poll_interval);
    rc = 0;
done:
    if (rc)
        shut_down(sched_up);
    return rc;
}

void sched_stop(void)
{
    pthread_mutex_lock(&sched_mu);
    if (!s_running) {
        pthread_mutex_unlock(&sched_mu);
        return;
    }
    pthread_mutex_unlock(&sched_mu);
    shut_down(1);
    log_info("sched.stopped", "%s", "");
}
