/* reload.c -- the inotify watcher behind policy hot reload.
 *
 * What it is for: noticing, within a fraction of a second, that a policy
 * file was saved, replaced by rename, added or removed, and asking the
 * engine to rescan (the engine reads and hashes each file once, so an
 * unchanged file costs a read and a hash, never a recompile).
 *
 * Main object: struct reload_watcher, one thread polling two fds: the
 * inotify descriptor and a pipe that reload_watch_stop() writes to.
 * Events are only a trigger; what changed is decided by the rescan, so a
 * queue overflow (IN_Q_OVERFLOW) needs no special recovery beyond it.
 *
 * Also here: the reload worker (the one thread that runs reloads, asked by
 * the watcher, SIGHUP and the API) and bounded calls (a compile on its own
 * thread, abandoned when it does not return in time), so that no policy
 * file can wedge a thread that anything else waits for.
 */
#include "policy/reload.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

#define RELOAD_MASK                                                       \
    (IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM | \
     IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

struct reload_watcher {
    char *dir;
    int delay_ms;
    reload_fn fn;
    void *ud;
    int ifd;
    int wd;
    int stop_pipe[2];
    pthread_t thread;
};

/* ---------------------------------------------------------------- thread */

static int is_policy_name(const char *name, uint32_t len)
{
    size_t n = strnlen(name, len);
    return n > 4 && strcmp(name + n - 4, ".lua") == 0;
}

/* Adds the watch if missing. Returns 1 when it was just (re)added. */
static int ensure_watch(struct reload_watcher *w)
{
    if (w->wd >= 0)
        return 0;
    w->wd = inotify_add_watch(w->ifd, w->dir, RELOAD_MASK);
    if (w->wd < 0)
        return 0;
    log_info("policy.watching", "dir=%s", log_q(w->dir));
    return 1;
}

/* Reads pending events; returns 1 when one of them matters. */
static int drain(struct reload_watcher *w)
{
    char ev[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    int relevant = 0;
    for (;;) {
        ssize_t n = read(w->ifd, ev, sizeof ev);
        if (n <= 0)
            break;
        for (char *p = ev; p < ev + n;) {
            const struct inotify_event *e = (const struct inotify_event *)p;
            if (e->mask & IN_Q_OVERFLOW) {
                log_warn("policy.watch_overflow", "dir=%s", log_q(w->dir));
                relevant = 1;
            }
            if (e->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) {
                if (w->wd >= 0 && !(e->mask & IN_IGNORED))
                    inotify_rm_watch(w->ifd, w->wd);
                w->wd = -1; /* re-added by path when it is back */
                relevant = 1;
            }
            if (e->len && is_policy_name(e->name, e->len))
                relevant = 1;
            p += sizeof *e + e->len;
        }
    }
    return relevant;
}

static void *watch_main(void *arg)
{
    struct reload_watcher *w = arg;
    int64_t due = -1;
    for (;;) {
        int timeout = -1;
        if (due >= 0) {
            int64_t left = due - time_mono_ms();
            timeout = left < 0 ? 0 : (int)left;
        }
        if (w->wd < 0 && (timeout < 0 || timeout > 1000))
            timeout = 1000;
        struct pollfd p[2] = {{w->ifd, POLLIN, 0}, {w->stop_pipe[0], POLLIN, 0}};
        int r = poll(p, 2, timeout);
        if (r < 0 && errno != EINTR)
            break;
        if (r > 0 && p[1].revents)
            break;
        int relevant = 0;
        if (r > 0 && (p[0].revents & POLLIN))
            relevant = drain(w);
        if (ensure_watch(w))
            relevant = 1;
        if (relevant && due < 0)
            due = time_mono_ms() + w->delay_ms;
        if (due >= 0 && time_mono_ms() >= due) {
            due = -1;
            w->fn(w->ud);
        }
    }
    return NULL;
}

/* ------------------------------------------------------------ start/stop */

struct reload_watcher *reload_watch_start(const char *dir, int delay_ms,
                                          reload_fn fn, void *ud,
                                          struct cs_err *err)
{
    struct reload_watcher *w = calloc(1, sizeof *w);
    if (!w) {
        cs_err_set(err, "out of memory");
        return NULL;
    }
    w->ifd = w->stop_pipe[0] = w->stop_pipe[1] = w->wd = -1;
    w->delay_ms = delay_ms;
    w->fn = fn;
    w->ud = ud;
    if (!(w->dir = strdup(dir))) {
        cs_err_set(err, "out of memory");
        goto fail;
    }
    w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->ifd < 0) {
        cs_err_set(err, "inotify_init1: %s", strerror(errno));
        goto fail;
    }
    if (pipe2(w->stop_pipe, O_CLOEXEC)) {
        cs_err_set(err, "pipe: %s", strerror(errno));
        goto fail;
    }
    ensure_watch(w); /* before returning: no event after start is missed */
    int rc = pthread_create(&w->thread, NULL, watch_main, w);
    if (rc) {
        cs_err_set(err, "pthread_create: %s", strerror(rc));
        goto fail;
    }
    return w;
fail:
    if (w->ifd >= 0)
        close(w->ifd);
    if (w->stop_pipe[0] >= 0) {
        close(w->stop_pipe[0]);
        close(w->stop_pipe[1]);
    }
    free(w->dir);
    free(w);
    return NULL;
}

void reload_watch_stop(struct reload_watcher *w)
{
    if (!w)
        return;
    ssize_t n = write(w->stop_pipe[1], "x", 1);
    (void)n;
    pthread_join(w->thread, NULL);
    close(w->ifd);
    close(w->stop_pipe[0]);
    close(w->stop_pipe[1]);
    free(w->dir);
    free(w);
}

/* --------------------------------------------------------- reload worker */

struct reload_worker {
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* cond_init_monotonic: requests, runs done, stop */
    uint64_t requested;     /* tickets handed out */
    uint64_t started;       /* the last ticket a run started for */
    uint64_t finished;      /* the last ticket a run finished for */
    int stop;
    reload_fn fn;
    void *ud;
    pthread_t thread;
};

static void *worker_main(void *arg)
{
    struct reload_worker *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->stop && w->started == w->requested)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->stop)
            break;
        uint64_t t = w->requested; /* covers every request made so far */
        w->started = t;
        pthread_mutex_unlock(&w->mu);
        w->fn(w->ud);
        pthread_mutex_lock(&w->mu);
        w->finished = t;
        pthread_cond_broadcast(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

struct reload_worker *reload_worker_start(reload_fn fn, void *ud,
                                          struct cs_err *err)
{
    struct reload_worker *w = calloc(1, sizeof *w);
    if (!w) {
        cs_err_set(err, "out of memory");
        return NULL;
    }
    w->fn = fn;
    w->ud = ud;
    if (pthread_mutex_init(&w->mu, NULL)) {
        free(w);
        cs_err_set(err, "pthread_mutex_init failed");
        return NULL;
    }
    if (cond_init_monotonic(&w->cv)) {
        pthread_mutex_destroy(&w->mu);
        free(w);
        cs_err_set(err, "pthread_cond_init failed");
        return NULL;
    }
    int rc = pthread_create(&w->thread, NULL, worker_main, w);
    if (rc) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        cs_err_set(err, "pthread_create: %s", strerror(rc));
        return NULL;
    }
    return w;
}

uint64_t reload_worker_request(struct reload_worker *w)
{
    pthread_mutex_lock(&w->mu);
    uint64_t t = ++w->requested;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return t;
}

int reload_worker_wait(struct reload_worker *w, uint64_t ticket, int timeout_ms)
{
    int64_t end = time_mono_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
    pthread_mutex_lock(&w->mu);
    while (!w->stop && w->finished < ticket) {
        if (timeout_ms < 0)
            pthread_cond_wait(&w->cv, &w->mu);
        else if (cond_wait_ms(&w->cv, &w->mu, end - time_mono_ms()) == ETIMEDOUT)
            break;
    }
    int done = w->finished >= ticket;
    pthread_mutex_unlock(&w->mu);
    return done;
}

void reload_worker_stop(struct reload_worker *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

/* --------------------------------------------------------- bounded calls */

struct bounded {
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* cond_init_monotonic: fn returned */
    int finished;           /* fn returned */
    int abandoned;          /* the caller gave up: the thread cleans up */
    void (*fn)(void *);
    void (*done)(void *);
    void *arg;
};

static atomic_int bounded_stuck;

static void bounded_free(struct bounded *b)
{
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

static void *bounded_main(void *p)
{
    struct bounded *b = p;
    b->fn(b->arg);
    pthread_mutex_lock(&b->mu);
    b->finished = 1;
    int abandoned = b->abandoned; /* read under the lock: set with the count */
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    if (abandoned) {
        atomic_fetch_sub(&bounded_stuck, 1);
        b->done(b->arg);
        bounded_free(b);
    }
    return NULL;
}

enum reload_call_rc reload_call_bounded(void (*fn)(void *), void (*done)(void *),
                                        void *arg, int timeout_ms,
                                        const atomic_int *cancel)
{
    if (atomic_load(&bounded_stuck) >= RELOAD_STUCK_MAX)
        return RELOAD_CALL_REFUSED;
    struct bounded *b = calloc(1, sizeof *b);
    if (!b)
        return RELOAD_CALL_REFUSED;
    b->fn = fn;
    b->done = done;
    b->arg = arg;
    if (pthread_mutex_init(&b->mu, NULL)) {
        free(b);
        return RELOAD_CALL_REFUSED;
    }
    if (cond_init_monotonic(&b->cv)) {
        pthread_mutex_destroy(&b->mu);
        free(b);
        return RELOAD_CALL_REFUSED;
    }
    pthread_t t;
    if (pthread_create(&t, NULL, bounded_main, b)) {
        bounded_free(b);
        return RELOAD_CALL_REFUSED;
    }
    int64_t end = time_mono_ms() + timeout_ms;
    int cancelled = 0;
    pthread_mutex_lock(&b->mu);
    while (!b->finished) {
        int64_t left = end - time_mono_ms();
        if (left <= 0)
            break;
        if (cancel && atomic_load(cancel)) {
            cancelled = 1;
            break;
        }
        cond_wait_ms(&b->cv, &b->mu, left < RELOAD_CANCEL_POLL_MS ? left : RELOAD_CANCEL_POLL_MS);
    }
    if (b->finished) {
        pthread_mutex_unlock(&b->mu);
        pthread_join(t, NULL);
        bounded_free(b);
        return RELOAD_CALL_DONE;
    }
    b->abandoned = 1;
    atomic_fetch_add(&bounded_stuck, 1);
    pthread_mutex_unlock(&b->mu);
    pthread_detach(t); /* from here on b belongs to the thread */
    return cancelled ? RELOAD_CALL_CANCELLED : RELOAD_CALL_TIMEOUT;
}

int reload_calls_stuck(void)
{
    return atomic_load(&bounded_stuck);
}
