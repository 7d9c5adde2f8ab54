/* decisions.h -- the record of policy decisions (owner of the SQL of
 * decision_inputs and policy_sources): what `calsync policy replay`
 * re-decides from (DESIGN §2 "Replayable decisions", §3).
 *
 * decision_inputs: one row per policy decision, keyed by its audit entry,
 * written in the transaction that appends the entry. `inputs` is a
 * document of the shape `calsync policy test` reads (change, booking, now,
 * settings, calendar_id), so a replay and a dry run parse the same text.
 * policy_sources: the source of every policy version that went live or
 * decided (name, version), so a recorded decision names code that still
 * exists.
 */
#ifndef CALSYNC_STORE_DECISIONS_H
#define CALSYNC_STORE_DECISIONS_H

#include "store/store.h"
#include "util.h"

#include <stddef.h>
#include <stdint.h>

struct decision_record {
    int64_t audit_id;
    int64_t calendar_id;
    const char *inputs;       /* JSON text */
    int can_reschedule, can_update;
    const char *shadow;       /* JSON object text, or NULL */
};

/* Appends the record (inside the apply transaction). 0 or -1. */
int decision_record_add(struct store_conn *c, const struct decision_record *r,
                        struct cs_err *err);

/* Keeps the source of (name, version) unless already kept. 0 or -1. */
int policy_source_keep(struct store_conn *c, const char *name, const char *version,
                       const char *src, size_t len, struct cs_err *err);

/* The source of (name, version): 1 with *out (owned by the caller, free()),
 * 0 when not kept, -1 error. */
int policy_source_get(struct store_conn *c, const char *name, const char *version,
                      char **out, size_t *len, struct cs_err *err);

/* One recorded decision as a replay reads it; strings valid during the
 * callback only. */
struct decision_row {
    int64_t audit_id;
    int64_t at_ms;
    int64_t calendar_id;
    const char *booking_uid, *source, *change, *action, *reason, *policy,
        *policy_version, *inputs;
    int can_reschedule, can_update;
};

/* Calls fn for every recorded decision at or after since_ms (INT64_MIN:
 * all) of calendar_id (0: every calendar), oldest first; a non-zero return
 * stops the walk and is returned. 0, that value, or -1 (err set). */
int decision_each(struct store_conn *c, int64_t since_ms, int64_t calendar_id,
                  int (*fn)(void *ud, const struct decision_row *row), void *ud,
                  struct cs_err *err);

/* Retention of the audit (store/audit.c's audit_prune): deletes the
 * recorded inputs of the audit entries audit_prune is about to delete
 * (the `limit` oldest written before before_ms, the same order), inside
 * the caller's transaction, so no input outlives its entry (PostgreSQL
 * enforces the reference; SQLite would keep orphans). 0 or -1. */
int decision_prune_for_audit(struct store_conn *c, int64_t before_ms, int limit,
                             struct cs_err *err);

#endif
