/* calendar.c -- what happens when a calendar fails: the CALENDAR_ERROR
 * hook, and revoking a credential with its calendars. The rows are the
 * store's (store/calendars.c, store/credentials.c). */
#include "calendar.h"

#include "log.h"
#include "metrics.h"
#include "outbox.h"
#include "secret.h"

#include <stdio.h>
#include <string.h>

/* ------------------------------------------------ added for Google I/O */

int calendar_error_notify(struct store_conn *c, int64_t calendar_id,
                          const char *state, const char *reason,
                          struct cs_err *err)
{
    /* one CALENDAR_ERROR per subscriber, in the caller's transaction;
     * the caller kicks the outbox after its commit */
    if (outbox_enqueue_calendar_error(c, calendar_id, state, reason, err))
        return -1;
    char series[96];
    snprintf(series, sizeof series, "calsync_calendar_errors_total{state=\"%s\"}",
             strcmp(state, "revoked") == 0 ? "revoked" : "error");
    metrics_inc(series);
    log_warn("calendar.error", "calendar=%lld state=%s reason=%s",
             (long long)calendar_id, state, log_q(reason));
    return 0;
}

int credential_revoke(struct store_conn *c, int64_t credential_id,
                      const char *reason, struct cs_err *err)
{
    int rc = -1;
    if (store_begin(c, err))
        return -1;
    if (credential_mark_revoked(c, credential_id, err))
        goto done;
    for (;;) {
        /* one calendar at a time: the hook may run statements of its own */
        int64_t id;
        int r = calendar_next_live_of_credential(c, credential_id, &id, err);
        if (r < 0)
            goto done;
        if (r == 0)
            break;
        if (calendar_set_state(c, id, "revoked", reason, 0, NULL, err) ||
            calendar_error_notify(c, id, "revoked", reason, err))
            goto done;
    }
    rc = store_commit(c, err);
    if (rc == 0)
        outbox_kick();
done:
    if (rc)
        store_rollback(c);
    return rc;
}
