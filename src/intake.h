/* intake.h -- POST /webhooks/<provider>: push notifications (for Google,
 * the only provider with a route today, /webhooks/google).
 *
 * The answer never waits for Google, nor for SQLite's write lock (which a
 * sync's page transaction may hold for tens of milliseconds). The handler
 * checks the channel and its token (a read), appends the notification to
 * the intake journal -- a small append-only file next to the database --
 * and answers. One flusher thread moves everything journalled meanwhile
 * into the database in one transaction (the notification rows, the
 * calendar's dirty mark) and then asks the scheduler for a (coalesced)
 * sync. A notification answered 200 is therefore durable (against kill -9;
 * against power loss as much as SQLite's synchronous=NORMAL commits are)
 * before Google hears "200". See docs/internals/intake.md.
 *
 * Contract (DESIGN §2 Intake):
 *   live channel, token missing/wrong      -> 401, nothing scheduled
 *   unknown or stopped channel             -> 200, nothing scheduled (a
 *                                             stopped one is stopped again;
 *                                             an unknown one too, when its
 *                                             resource id is one calsync
 *                                             watches; both rate-
 *                                             limited, see below)
 *   first `sync` message of a channel      -> 200, nothing scheduled
 *   `exists` / `not_exists`                -> 200, calendar sync requested
 *   journal not writable / queue full      -> 503 (Google retries)
 */
#ifndef CALSYNC_INTAKE_H
#define CALSYNC_INTAKE_H

#include "http.h"

#include <stdint.h>

struct intake_hooks {
    /* A sync of the calendar is wanted (coalesced by the scheduler).
     * Called from the flusher thread after the notification committed. */
    void (*sync)(int64_t calendar_id);
    /* A channel calsync no longer wants is still sending: stop it with
     * Google (asynchronously). Called from the HTTP thread, at most once
     * per channel id per INTAKE_STOP_INTERVAL_MS. */
    void (*stop_channel)(const char *channel_id);
    /* A channel calsync has no row for (opened before a database restore,
     * say) sends for a resource one of calsync's channels watches, on
     * calendar_id: stop it with that calendar's credential
     * (asynchronously). Called from the HTTP thread, at most once per
     * resource id per INTAKE_STOP_INTERVAL_MS, whatever the channel ids. */
    void (*stop_foreign)(const char *channel_id, const char *resource_id,
                         int64_t calendar_id);
    /* A checked message asks for the calendar's subscription to be
     * renewed now (provider_push.renew). Called from the HTTP thread;
     * must not block. NULL: renewed at its usual time. */
    void (*renew_channel)(int64_t calendar_id);
};

/* Pushes are unauthenticated until their channel token is checked, and an
 * unknown or stopped channel has no token to check: what they trigger is
 * bounded so that it cannot grow with a flood of them. Each resource id
 * (foreign channels) and each stopped channel id is stopped at most once
 * per interval (the last INTAKE_STOP_MEMORY of each are remembered), all
 * stops together at most INTAKE_STOPS_PER_MINUTE, and their log lines at
 * most INTAKE_LOG_LINES per INTAKE_LOG_WINDOW_MS per kind (the next line
 * carries `suppressed=N`). */
#define INTAKE_STOP_INTERVAL_MS 60000
#define INTAKE_STOP_MEMORY 64
#define INTAKE_STOPS_PER_MINUTE 30
#define INTAKE_LOG_LINES 10
#define INTAKE_LOG_WINDOW_MS 10000

/* Installs the hooks (NULL members are ignored). Call before serving. */
void intake_set_hooks(const struct intake_hooks *hooks);

/* Opens the journal of the database at db_path (files db_path + "-intake.0"
 * and "-intake.1"), moves into the database whatever an earlier process
 * journalled but did not commit (marking those calendars dirty), and starts
 * the flusher. store_init() must have run. 0, or -1 with err set. */
int intake_start(const char *db_path, struct cs_err *err);

/* Waits until every notification journalled before the call is committed
 * to the database, or timeout_ms passes. 0 when flushed, -1 on timeout. */
int intake_flush(int timeout_ms);

/* Commits what is queued (what cannot be committed stays in the journal
 * for the next start), stops the flusher and closes the journal. Call after
 * http_stop(). Safe when intake_start() failed or never ran. */
void intake_stop(void);

/* Channel rows changed (a channel stopped or failed): the intake's
 * per-thread cache of live channels is dropped. Callable from any thread. */
void intake_channels_changed(void);

/* The route handler: the provider named by the route parses the request
 * (provider_ops.push_parse: for Google, its channel headers) and intake_notify
 * runs on what it found; a request the provider refuses is answered 400. */
void intake_handle(struct http_req *req, struct http_resp *resp);

/* The intake proper, on a parsed push (struct provider_push's fields, NULL
 * when absent; resource_state "sync" is a subscription's first message).
 * Fills resp. */
void intake_notify(const char *channel_id, const char *token,
                   const char *resource_state, const char *message_number,
                   const char *resource_id, struct http_resp *resp);

#endif
