/* scheduler.h -- the scheduler thread and the pool of sync workers.
 *
 * Keeps one slot per calendar in memory (reloaded from the calendars table
 * every second, so new, deleted and revoked calendars and the durable
 * `dirty` flag are picked up) and runs sync_calendar() on `workers`
 * threads, with these rules:
 *   - at most one sync per calendar at a time; any number of requests
 *     while one runs or waits cause exactly one more;
 *   - a request starts a sync at once (no polling tick, no settle window);
 *     only push syncs are spaced (SCHED_PUSH_SPACING_MS);
 *   - every calendar not stopped or revoked is synced at least every
 *     poll_interval (each period shortened by up to 10% of jitter);
 *   - a failed sync backs that calendar off (1 s doubling, capped at
 *     min(300 s, poll_interval), jittered) without holding a worker:
 *     other calendars keep running;
 *   - sched_stop() lets in-flight syncs finish or roll back.
 *
 * The file is scheduler.h, not sched.h: the build puts src/ on the include
 * path, and a src/sched.h would shadow the system <sched.h> that
 * <pthread.h> includes.
 */
#ifndef CALSYNC_SCHEDULER_H
#define CALSYNC_SCHEDULER_H

#include "config.h"
#include "util.h"

#include <stdint.h>

#define SCHED_RELOAD_MS 1000
/* A push starts a sync at once, unless the calendar's previous push sync
 * started less than this ago: then it starts that long after it, and every
 * push meanwhile rides along. A burst or stream of notifications costs at
 * most one events.list per this interval (the Google budget of the settle
 * window this replaced); a change with no push sync of its calendar in the
 * last interval waits for nothing. */
#define SCHED_PUSH_SPACING_MS 500
#define SCHED_BACKOFF_MAX_MS 300000

/* Starts the scheduler and cfg->workers worker threads (cfg must outlive
 * sched_stop()). Call after store_init() and the policy engine. 0, or -1
 * with err set (nothing left running). */
int sched_start(const struct config *cfg, struct cs_err *err);

/* Stops and joins every thread: Google waits and transfers in progress
 * are cancelled, so their syncs roll back; a transaction in progress
 * commits first. Safe to call when not started. */
void sched_stop(void);

/* Asks for a sync of the calendar as soon as a worker is free, ahead of
 * any error backoff (the API's POST /v1/calendars[/{id}/sync]). Cheap:
 * takes one mutex, never touches the database or Google; callable from
 * any thread. A no-op when the scheduler is not running. */
void sched_request_sync(int64_t calendar_id);

/* The same for a push notification: the change source is "push", and a
 * calendar in error backoff waits for the backoff to end. */
void sched_request_push(int64_t calendar_id);
/* The provider asked for the calendar's subscription to be renewed now
 * (Graph's lifecycle notifications): the next run of the calendar renews
 * it (or opens a new one) before it syncs. Does not block. */
void sched_request_channel(int64_t calendar_id);

/* Stops the calendar's push channels with Google, on a worker (for
 * DELETE /v1/calendars). Cheap; callable from any thread. */
void sched_stop_channels(int64_t calendar_id);

/* Stops one channel calsync no longer wants but that still sends (the
 * intake's stop_channel hook), on a worker. */
void sched_stop_channel(const char *channel_id);

/* Stops a channel calsync has no row for, watching resource_id, with the
 * credential of calendar_id (the intake's stop_foreign hook), on a worker. */
void sched_stop_foreign(const char *channel_id, const char *resource_id,
                        int64_t calendar_id);

/* Per-calendar exclusion between a sync and a forward write of the same
 * calendar: a sync reads a listing and applies it later, and a write that
 * lands in between would be overwritten in the mirror by the listing's
 * older copy (and decided on as if the host had made it). Blocking; held
 * around one sync or one write job, never while taking another calendar's
 * lock. Callable before sched_start. */
void sched_calendar_lock(int64_t calendar_id);
void sched_calendar_unlock(int64_t calendar_id);

/* Drops pending requests for a calendar that was just stopped (a sync in
 * progress finishes). */
void sched_forget(int64_t calendar_id);

#endif
