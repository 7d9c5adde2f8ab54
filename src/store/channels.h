/* channels.h -- the channels table (owner of its SQL): every push channel
 * ever opened (id, resource id, token, expiry, state), never deleted, so
 * an old channel can always be stopped (DESIGN §7).
 */
#ifndef CALSYNC_STORE_CHANNELS_H
#define CALSYNC_STORE_CHANNELS_H

#include "store/store.h"
#include "util.h"

#include <stddef.h>
#include <stdint.h>

/* Records a channel about to be opened: state 'opening'. 0 or -1. */
int channels_insert_opening(struct store_conn *c, const char *id, int64_t calendar_id,
                            const char *token, int64_t created_ms, struct cs_err *err);

/* Google answered the watch: resource id, expiration, state 'live'. */
int channels_set_live(struct store_conn *c, const char *id, const char *resource_id,
                      int64_t expiration_ms, struct cs_err *err);

/* Sets the state ('stopped' and 'failed' also record stopped_at). A
 * channel without a row is left alone. 0 or -1. */
/* A subscription renewed in place (Graph): its new expiration. 0 or -1. */
int channels_set_expiration(struct store_conn *c, const char *id, int64_t expiration_ms,
                            struct cs_err *err);

int channels_set_state(struct store_conn *c, const char *id, const char *state,
                       struct cs_err *err);

struct channels_live {
    char id[64];
    char resource_id[256];
    int has_resource;
    int64_t created, expiration; /* ms; expiration 0: unknown */
};

/* The live (or half-open) channels of a calendar, newest first, at most
 * cap into out, *n of them. 0 or -1. */
int channels_live(struct store_conn *c, int64_t calendar_id, struct channels_live *out,
                  int cap, int *n, struct cs_err *err);

/* What stopping channel `id` takes: its resource id (into rid, cap bytes)
 * and the credential of its calendar. 1 found with a resource id, 0 not,
 * -1 error. */
int channels_stop_target(struct store_conn *c, const char *id, char *rid, size_t cap,
                         int64_t *credential_id, struct cs_err *err);

/* The calendar of the newest channel watching resource `rid`: 1 found
 * (*calendar_id), 0 not, -1 error. */
int channels_calendar_by_resource(struct store_conn *c, const char *rid,
                                  int64_t *calendar_id, struct cs_err *err);

/* The intake's lookup of a notification's channel: its calendar, token
 * (appended to `token`) and state (state[16]). 1 found, 0 not, -1 error. */
int channels_lookup(struct store_conn *c, const char *id, int64_t *calendar_id,
                    struct buf *token, char state[16], struct cs_err *err);

/* GET /v1/channels: {"channels":[..]} in creation order, appended to out.
 * 0 or -1 (out then holds a partial list: the caller answers an error). */
int channels_list_json(struct store_conn *c, struct buf *out, struct cs_err *err);

#endif
