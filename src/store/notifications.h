/* notifications.h -- the notifications table (owner of its SQL): the
 * push notifications the intake accepted, kept for the record. */
#ifndef CALSYNC_STORE_NOTIFICATIONS_H
#define CALSYNC_STORE_NOTIFICATIONS_H

#include "store/store.h"
#include "util.h"

#include <stdint.h>

/* Records a notification under the id the intake's journal gave it; an
 * id recorded already (a journal replayed after a crash) is left as it
 * is; id <= 0 lets the database number the row. number < 0 and an empty or NULL resource state store NULL. 0 or -1. */
int notification_insert(struct store_conn *c, int64_t id, const char *channel_id,
                        int64_t number, const char *resource_state, int64_t received_at,
                        struct cs_err *err);

/* The id after the highest recorded (1 when none), in *out. 0 or -1. */
/* Retention: deletes at most limit notifications received before
 * before_ms (ms), never the newest one; *n gets how many. One statement:
 * its own transaction unless the caller holds one. 0 or -1. */
int notification_prune(struct store_conn *c, int64_t before_ms, int limit, int64_t *n,
                       struct cs_err *err);

int notification_next_id(struct store_conn *c, int64_t *out, struct cs_err *err);

#endif
