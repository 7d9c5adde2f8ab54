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
 */
#include "reload.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
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
