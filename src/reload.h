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

#endif
