/* reload.h -- watches the policies directory with inotify (DESIGN §5).
 *
 * One thread per watcher. It watches the directory, not the files, so a
 * file replaced by rename (editors, deploy tools) and a new file are seen:
 * IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM on
 * names ending in ".lua"; IN_Q_OVERFLOW and a directory that appears,
 * moves or vanishes also count. Events are coalesced: the callback runs
 * once, `delay_ms` after the first event of a burst, on the watcher thread.
 * The thread inherits the creator's signal mask (calsync blocks every
 * signal in every thread; the main thread takes them with sigwait).
 */
#ifndef CALSYNC_RELOAD_H
#define CALSYNC_RELOAD_H

#include "util.h"

#include <stdatomic.h>
#include <stdint.h>

struct reload_watcher;

typedef void (*reload_fn)(void *ud);

/* Starts watching dir (copied). A directory that does not exist yet is
 * retried every second. Returns NULL with err set when inotify or the
 * thread cannot be created. Release with reload_watch_stop(). */
struct reload_watcher *reload_watch_start(const char *dir, int delay_ms,
                                          reload_fn fn, void *ud,
                                          struct cs_err *err);

/* Stops the thread (waiting for a running callback to return) and frees
 * everything. NULL is allowed. */
void reload_watch_stop(struct reload_watcher *w);

/* ------------------------------------------------------- reload worker
 * One thread that runs `fn` whenever asked. Policy reloads run there, so
 * the HTTP threads, the signal thread and the inotify watcher only ask
 * (and the API waits, with a timeout): a load that blocks wedges none of
 * them (issue 21, item 3). Requests coalesce: any number made while fn
 * runs cause exactly one more run, which starts after the last of them. */
struct reload_worker;

/* Starts the thread. NULL with err set when it cannot be created. */
struct reload_worker *reload_worker_start(reload_fn fn, void *ud,
                                          struct cs_err *err);

/* Asks for a run that starts after this call and returns its ticket for
 * reload_worker_wait(). Never waits for a run. Thread-safe. */
uint64_t reload_worker_request(struct reload_worker *w);

/* Waits until the run of `ticket` has finished: 1, or 0 when timeout_ms
 * passed first (timeout_ms < 0: no limit) or the worker is stopping. */
int reload_worker_wait(struct reload_worker *w, uint64_t ticket, int timeout_ms);

/* Stops the thread once the run in progress returns (fn should return
 * early when its owner is stopping) and frees everything. Requests not
 * started are dropped; waiters get 0. NULL is allowed. */
void reload_worker_stop(struct reload_worker *w);

/* ------------------------------------------------------- bounded calls */

enum reload_call_rc {
    RELOAD_CALL_DONE = 0, /* fn returned in time; the caller keeps arg */
    RELOAD_CALL_TIMEOUT,  /* it did not: its thread is left running,
                           * detached, and calls done(arg) when fn returns
                           * (arg must own everything fn touches) */
    RELOAD_CALL_REFUSED,  /* fn did not run: no thread, or RELOAD_STUCK_MAX
                           * earlier calls are still running after their
                           * timeouts; the caller keeps arg */
    RELOAD_CALL_CANCELLED, /* *cancel became non-zero first: as TIMEOUT
                            * (abandoned, done(arg) called later) */
};

#define RELOAD_STUCK_MAX 4

/* Runs fn(arg) on a new thread and waits at most timeout_ms for it, or
 * until *cancel (polled every RELOAD_CANCEL_POLL_MS; may be NULL) is set,
 * so a shutdown does not wait out the timeout. Lua cannot interrupt a C
 * function (a loop over 2^53 table slots), so a compile that does not
 * return is abandoned, not killed: at most RELOAD_STUCK_MAX such threads
 * at a time. */
#define RELOAD_CANCEL_POLL_MS 50
enum reload_call_rc reload_call_bounded(void (*fn)(void *), void (*done)(void *),
                                        void *arg, int timeout_ms,
                                        const atomic_int *cancel);

/* Calls abandoned after a timeout whose fn has not returned yet. */
int reload_calls_stuck(void);

#endif
