/* intake.h -- POST /webhooks/google: Google push notifications.
 *
 * The answer never waits for Google: the intake checks the channel and its
 * token, records the notification, marks the calendar dirty and hands the
 * calendar to the scheduler through a hook. Contract (DESIGN §2 Intake):
 *   live channel, token missing/wrong      -> 401, nothing scheduled
 *   unknown or stopped channel             -> 200, nothing scheduled (a
 *                                             stopped one is stopped again)
 *   first `sync` message of a channel      -> 200, nothing scheduled
 *   `exists` / `not_exists`                -> 200, calendar sync requested
 */
#ifndef CALSYNC_INTAKE_H
#define CALSYNC_INTAKE_H

#include "http.h"

#include <stdint.h>

struct intake_hooks {
    /* A sync of the calendar is wanted (coalesced by the scheduler). */
    void (*sync)(int64_t calendar_id);
    /* A channel calsync no longer wants is still sending: stop it with
     * Google (asynchronously). */
    void (*stop_channel)(const char *channel_id);
};

/* Installs the hooks (NULL members are ignored). Call before serving. */
void intake_set_hooks(const struct intake_hooks *hooks);

/* The route handler. */
void intake_handle(struct http_req *req, struct http_resp *resp);

#endif
