/* retention.h -- pruning of finished rows (issue 17 item 7).
 *
 * One thread wakes every retention.interval seconds and deletes, table by
 * table, the rows older than their configured age: push notifications
 * (read once, by the intake), delivered outbox rows, finished (done or
 * failed) write jobs, and -- only when retention.audit is set -- audit
 * entries. Each batch is one DELETE of at most retention.batch rows in its
 * own short transaction, with a pause between batches, so a writer (a
 * sync, the intake, the API) never waits for a whole pruning run behind
 * SQLite's single write lock. docs/operations.md, "Retention".
 */
#ifndef CALSYNC_RETENTION_H
#define CALSYNC_RETENTION_H

#include "config.h"
#include "util.h"

#include <stdint.h>

/* Starts the thread (cfg must outlive it); the first run is at once.
 * 0, or -1 with err set. */
int retention_start(const struct config *cfg, struct cs_err *err);

/* Stops the thread, waiting for a batch in progress (never for a whole
 * run: the loop checks between batches). Safe to call when not started. */
void retention_stop(void);

/* One pruning run on the calling thread's connection, with `now` (ms) as
 * the present: rows per table deleted into counts (notifications, outbox,
 * jobs, audit), if not NULL. 0 or -1 with err set. For the thread and
 * tests. */
int retention_run(const struct config *cfg, int64_t now, int64_t counts[4],
                  struct cs_err *err);

#endif
