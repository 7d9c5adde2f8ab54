/* audit.h -- the audit table (owner of its SQL): every decision about a
 * booking, appended in the transaction that applies it. */
#ifndef CALSYNC_STORE_AUDIT_H
#define CALSYNC_STORE_AUDIT_H

#include "store/store.h"
#include "util.h"

struct audit_entry {
    const char *booking_uid;
    const char *source;   /* push | poll | full_sync | api */
    const char *change;   /* delete | time_change | title_change | create | cancel */
    const char *action;   /* cancel | reschedule | update | ignore | flag | create */
    const char *reason;   /* may be NULL */
    const char *policy;   /* may be NULL (api) */
    const char *policy_version;
    const char *before;   /* JSON text or NULL */
    const char *after;    /* JSON text or NULL */
    const char *dedupe_key; /* NULL, or a key that makes the append once-only */
    int64_t calendar_id;  /* the calendar decided for; 0: the booking's */
    int64_t *id_out;        /* NULL, or set to the new entry's id */
};

/* Appends an entry. Returns 0, 1 when dedupe_key was already used (nothing
 * written), or -1. */
int audit_append(struct store_conn *c, const struct audit_entry *e,
                 struct cs_err *err);

/* GET /v1/decisions: the policy decisions (every source but `api`),
 * newest first, filtered by calendar (0: any), booking uid, action (NULL:
 * any) and time (at >= since_ms; 0: any), after the cursor `before_id`
 * (0: from the newest). Appends {"decisions":[..],"next_cursor":..}. 0 or
 * -1. */
int audit_decisions_json(struct store_conn *c, int64_t calendar_id, const char *uid,
                         const char *action, int64_t since_ms, int64_t before_id,
                         int limit, struct buf *out, struct cs_err *err);

/* {"entries":[..]} oldest first, appended to out; an entry whose decision
 * had a shadow policy carries its "shadow" (store/decisions.h). 0 or -1. */
int audit_list_json(struct store_conn *c, const char *uid, struct buf *out,
                    struct cs_err *err);

/* Retention, only when configured (retention.audit): deletes at most limit
 * entries written before before_ms; *n gets how many. 0 or -1. */
int audit_prune(struct store_conn *c, int64_t before_ms, int limit, int64_t *n,
                struct cs_err *err);

#endif
