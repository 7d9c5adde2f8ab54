/* calendar.h -- credentials and calendars: rows, lookups, JSON views.
 *
 * A calendar row is one (credential, Google calendar) pair; the booking
 * app's POST /v1/calendars is idempotent on that pair. Secrets live in the
 * credentials table and never leave it through any JSON view.
 */
#ifndef CALSYNC_CALENDAR_H
#define CALSYNC_CALENDAR_H

#include "store/store.h"
#include "util.h"

#include <stdint.h>

#define CAL_EXTERNAL_ID_MAX 1024
#define CAL_POLICY_NAME_MAX 64
#define CAL_SETTINGS_MAX 65536
#define CRED_TOKEN_MAX 4096

/* Inserts a credential; *id_out gets its id. 0 or -1 (err set). */
int credential_insert(struct store_conn *c, const char *provider,
                      const char *refresh_token, const char *access_token,
                      int64_t expires_at_ms, int64_t *id_out,
                      struct cs_err *err);
/* 1 exists, 0 not, -1 error. */
int credential_exists(struct store_conn *c, int64_t id, struct cs_err *err);

/* Creates the calendar for (credential, external_id), or returns the one
 * that exists (state 'stopped' is turned back to 'syncing').
 * *created is 1 when a row was inserted. 0 or -1. */
int calendar_upsert(struct store_conn *c, int64_t credential_id,
                    const char *external_id, const char *policy,
                    const char *settings_json, int64_t *id_out, int *created,
                    struct cs_err *err);

/* Appends the calendar's JSON view to out. 1 found, 0 not, -1 error. */
int calendar_json(struct store_conn *c, int64_t id, struct buf *out,
                  struct cs_err *err);

/* A page of calendars after `after_id`, ordered by id; appends the list
 * object {"calendars":[..],"next_cursor":..}. 0 or -1. */
int calendar_list_json(struct store_conn *c, int64_t after_id, int limit,
                       struct buf *out, struct cs_err *err);

/* What the Google-facing code needs of a calendar row. */
struct calendar_ref {
    int64_t credential_id;
    char external_id[CAL_EXTERNAL_ID_MAX + 1];
    char state[16];
};

/* Loads it: 1 found, 0 not, -1 error (err set). */
int calendar_ref_load(struct store_conn *c, int64_t id, struct calendar_ref *out,
                      struct cs_err *err);

/* Current state into buf (cap bytes): 1 found, 0 not, -1 error. */
int calendar_state(struct store_conn *c, int64_t id, char *state, size_t cap,
                   struct cs_err *err);

/* Sets state (and its reason, may be NULL). 0 or -1. */
int calendar_set_state(struct store_conn *c, int64_t id, const char *state,
                       const char *reason, struct cs_err *err);



/* ------------------------------------------------ added for Google I/O */

/* Marks the credential revoked (its access token forgotten) and every
 * calendar of it that is not stopped as state 'revoked' with `reason`,
 * calling calendar_error_notify() for each, in one transaction. Deletes
 * nothing. Must not be called inside a transaction. 0 or -1. */
int credential_revoke(struct store_conn *c, int64_t credential_id,
                      const char *reason, struct cs_err *err);

/* Hook: a calendar just entered state `state` ('revoked' or 'error')
 * for `reason`. Runs inside the caller's transaction: enqueues DESIGN §4's
 * CALENDAR_ERROR webhook (outbox_enqueue_calendar_error), logs and counts.
 * The caller calls outbox_kick() after committing. 0 or -1 (the caller
 * rolls back). */
int calendar_error_notify(struct store_conn *c, int64_t calendar_id,
                          const char *state, const char *reason,
                          struct cs_err *err);

#endif
