/* channel.c -- opening, renewing and stopping push channels (the
 * provider's subscriptions, provider.h sub_open/sub_stop; Google's are
 * channels, hence the name).
 *
 * Opening: the row is inserted (state `opening`, random id and token)
 * before the subscription is opened, so a notification that races the
 * answer is already recognised by the intake; the answer fills resource id
 * and expiration and makes it `live`. Renewal opens the new channel first
 * and only then stops the old one; notifications from both during the
 * overlap coalesce in the scheduler. A failed watch leaves the row
 * `failed` (kept, like every channel row).
 */
#include "channel.h"
#include "store/channels.h"
#include "fault.h"
#include "intake.h"

#include "calendar.h"
#include "log.h"
#include "metrics.h"
#include "provider/provider.h"
#include "store/store.h"

#include <lua.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct config *channel_cfg;

void channel_init(const struct config *cfg)
{
    channel_cfg = cfg;
}

int64_t channel_renew_at(int64_t created_ms, int64_t expiration_ms,
                         int64_t renew_before_ms)
{
    int64_t lifetime = expiration_ms - created_ms;
    if (lifetime < renew_before_ms)
        return created_ms + lifetime / 2;
    return expiration_ms - renew_before_ms;
}


/* The lifetime asked for and the renewal lead of a provider's
 * subscriptions: Graph's come from the microsoft table (DESIGN §3), every
 * other provider's from google's channel_ttl/renew_before. Seconds. */
static int64_t sub_ttl_s(const struct provider_ops *ops)
{
    return ops && strcmp(ops->name, "microsoft") == 0 ? channel_cfg->microsoft.subscription_ttl
                                                      : channel_cfg->google.channel_ttl;
}

static int64_t sub_renew_before_ms(const struct provider_ops *ops)
{
    return 1000 * (ops && strcmp(ops->name, "microsoft") == 0
                       ? channel_cfg->microsoft.renew_before
                       : channel_cfg->google.renew_before);
}

/* When a subscription is due for renewal. One renewed in place keeps its
 * first created_at, so its current grant is taken to start a ttl before
 * its expiration (never before it was created). */
static int64_t renew_due(const struct provider_ops *ops, int64_t created, int64_t expiration)
{
    int64_t start = created;
    if (ops && ops->sub_renew) {
        int64_t s = expiration - sub_ttl_s(ops) * 1000;
        if (s > start)
            start = s;
    }
    return channel_renew_at(start, expiration, sub_renew_before_ms(ops));
}

static int set_state(struct store_conn *c, const char *id, const char *state,
                     struct cs_err *err)
{
    int rc = channels_set_state(c, id, state, err);
    intake_channels_changed(); /* a stopped channel must not stay "live" there */
    return rc;
}

/* Stops one channel with the provider and marks it stopped. A channel the
 * provider no longer knows (PROVIDER_GONE) counts as stopped. */
static int stop_channel(struct store_conn *c, int64_t credential_id,
                        const char *id, const char *resource_id,
                        struct cs_err *err)
{
    struct provider_ctx px = {.db = c, .credential_id = credential_id};
    struct provider_sub sub = {.expiration_ms = 0};
    const struct provider_ops *ops;
    int rc = PROVIDER_OK;
    if (resource_id) {
        snprintf(sub.resource_id, sizeof sub.resource_id, "%s", resource_id);
        rc = provider_for_credential(c, credential_id, &ops, err) ? PROVIDER_PERMANENT
             : ops->sub_stop(&px, id, &sub, err);
    }
    int ok = rc == PROVIDER_OK || rc == PROVIDER_GONE;
    metrics_inc(ok ? "calsync_channel_stops_total{result=\"ok\"}"
                   : "calsync_channel_stops_total{result=\"error\"}");
    if (!ok)
        return -1;
    fault_point("channel_after_stop");
    log_info("channel.stopped", "channel=%s", log_q(id));
    return set_state(c, id, "stopped", err);
}

/* Opens a channel; on success *renew_at is set and new_rid (rid_size
 * bytes) holds the resource id Google answered. */
static int open_channel(struct store_conn *c, int64_t calendar_id,
                        const struct calendar_ref *cal, int64_t *renew_at,
                        char *new_rid, size_t rid_size, struct cs_err *err)
{
    char id[48] = "calsync-", token[65], address[2048];
    int64_t created = time_now_ms();
    if (random_hex(id + 8, 16) || random_hex(token, 32))
        return cs_err_set(err, "random source failed");
    const struct provider_ops *ops;
    int pr = provider_for_credential(c, cal->credential_id, &ops, err);
    if (pr)
        return -1; /* an unknown provider: the sync reports it (state error) */
    snprintf(address, sizeof address, "%s/webhooks/%s", channel_cfg->public_url,
             ops->name);
    if (channels_insert_opening(c, id, calendar_id, token, created, err))
        return -1;
    fault_point("channel_after_opening_row");

    struct provider_ctx px = {.db = c, .credential_id = cal->credential_id};
    struct provider_sub_req req = {.id = id, .token = token, .address = address,
                                   .ttl_s = sub_ttl_s(ops)};
    struct provider_sub sub;
    int rc = -1;
    int g = ops->sub_open(&px, cal->external_id, &req, &sub, err);
    if (g != PROVIDER_OK && g != PROVIDER_MALFORMED) {
        set_state(c, id, "failed", NULL);
        metrics_inc("calsync_channel_opens_total{result=\"error\"}");
        goto done;
    }
    fault_point("channel_after_watch");
    const char *rid = sub.resource_id;
    int64_t expiration = sub.expiration_ms;
    if (g == PROVIDER_MALFORMED || expiration <= created) {
        cs_err_set(err, "events.watch: answer lacks resourceId or a valid expiration");
        set_state(c, id, "failed", NULL);
        goto done;
    }
    if (channels_set_live(c, id, rid, expiration, err))
        goto done;
    fault_point("channel_after_live");
    metrics_inc("calsync_channel_opens_total{result=\"ok\"}");
    snprintf(new_rid, rid_size, "%s", rid);
    *renew_at = renew_due(ops, created, expiration);
    log_info("channel.opened", "channel=%s calendar=%lld expires_in_s=%lld",
             id, (long long)calendar_id, (long long)((expiration - created) / 1000));
    rc = 0;
done:
    return rc;
}

struct live {
    char id[64];
    char resource_id[256];
    int has_resource;
    int64_t created, expiration;
};

/* Live (or half-open) channels of a calendar, newest first. */
static int load_live(struct store_conn *c, int64_t calendar_id, struct live *out,
                     int cap, int *n, struct cs_err *err)
{
    struct channels_live rows[8];
    if (cap > 8)
        cap = 8;
    if (channels_live(c, calendar_id, rows, cap, n, err))
        return -1;
    for (int i = 0; i < *n; i++) {
        struct live *l = &out[i];
        memcpy(l->id, rows[i].id, sizeof l->id);
        memcpy(l->resource_id, rows[i].resource_id, sizeof l->resource_id);
        l->has_resource = rows[i].has_resource;
        l->created = rows[i].created;
        l->expiration = rows[i].expiration;
    }
    return 0;
}

/* Extends the live subscription l in place (provider_ops.sub_renew) and
 * stores its new expiration. 0 renewed (*next_check_ms set); 1 when the
 * provider no longer knows it (the caller opens a new one, and this row
 * is marked stopped); -1 failed (retried at the next check). */
static int renew_in_place(struct store_conn *c, int64_t credential_id,
                          const struct provider_ops *ops, const struct live *l,
                          int64_t *next_check_ms, struct cs_err *err)
{
    struct provider_ctx px = {.db = c, .credential_id = credential_id};
    struct provider_sub sub = {.expiration_ms = l->expiration};
    snprintf(sub.resource_id, sizeof sub.resource_id, "%s", l->resource_id);
    int g = ops->sub_renew(&px, l->id, &sub, err);
    if (g == PROVIDER_GONE) {
        metrics_inc("calsync_channel_renewals_total{result=\"gone\"}");
        log_info("channel.renew_gone", "channel=%s", log_q(l->id));
        set_state(c, l->id, "stopped", NULL);
        if (err)
            err->msg[0] = '\0'; /* not a failure: a new one is opened */
        return 1;
    }
    if (g != PROVIDER_OK || sub.expiration_ms <= time_now_ms()) {
        metrics_inc("calsync_channel_renewals_total{result=\"error\"}");
        if (g == PROVIDER_OK)
            cs_err_set(err, "renewal answered an expiration in the past");
        return -1;
    }
    fault_point("channel_after_renew");
    if (channels_set_expiration(c, l->id, sub.expiration_ms, err))
        return -1;
    intake_channels_changed();
    metrics_inc("calsync_channel_renewals_total{result=\"ok\"}");
    *next_check_ms = renew_due(ops, l->created, sub.expiration_ms);
    log_info("channel.renewed", "channel=%s expires_in_s=%lld", log_q(l->id),
             (long long)((sub.expiration_ms - time_now_ms()) / 1000));
    return 0;
}

static int maintain(int64_t calendar_id, int force, int64_t *next_check_ms,
                    struct cs_err *err);

int channel_maintain(int64_t calendar_id, int64_t *next_check_ms, struct cs_err *err)
{
    return maintain(calendar_id, 0, next_check_ms, err);
}

int channel_renew_now(int64_t calendar_id, int64_t *next_check_ms, struct cs_err *err)
{
    return maintain(calendar_id, 1, next_check_ms, err);
}

static int maintain(int64_t calendar_id, int force, int64_t *next_check_ms,
                    struct cs_err *err)
{
    struct store_conn *c = store_conn(err);
    struct calendar_ref cal;
    struct live lv[8];
    int n = 0;
    *next_check_ms = 0;
    provider_set_priority(PROVIDER_PRIO_LOW); /* renewals leave the reserve alone */
    if (!c)
        return -1;
    int r = calendar_ref_load(c, calendar_id, &cal, err);
    if (r <= 0)
        return r;
    if (strcmp(cal.state, "stopped") == 0 || strcmp(cal.state, "revoked") == 0)
        return channel_stop_calendar(calendar_id, err);
    if (load_live(c, calendar_id, lv, 8, &n, err))
        return -1;
    const struct provider_ops *ops = NULL;
    if (provider_for_credential(c, cal.credential_id, &ops, err) < 0)
        return -1;
    int64_t now = time_now_ms();
    /* the newest channel that is live and not yet due keeps serving */
    if (n > 0 && lv[0].has_resource && lv[0].expiration > now) {
        int64_t due = renew_due(ops, lv[0].created, lv[0].expiration);
        if (due > now && !force) {
            *next_check_ms = due;
            /* older channels left over (a crash during a renewal); one
             * whose watch answer was lost to a crash has no resource id
             * recorded, but watches the same resource as the live one */
            for (int i = 1; i < n; i++)
                stop_channel(c, cal.credential_id, lv[i].id,
                             lv[i].has_resource ? lv[i].resource_id : lv[0].resource_id,
                             NULL);
            return 0;
        }
    }
    /* a provider that extends a subscription in place (Graph) keeps it:
     * one live subscription per calendar, no overlap to coalesce */
    if (n > 0 && ops && ops->sub_renew && lv[0].has_resource && lv[0].expiration > now) {
        int r2 = renew_in_place(c, cal.credential_id, ops, &lv[0], next_check_ms, err);
        if (r2 == 0) {
            for (int i = 1; i < n; i++)
                stop_channel(c, cal.credential_id, lv[i].id,
                             lv[i].has_resource ? lv[i].resource_id : NULL, NULL);
            return 0;
        }
        if (r2 < 0)
            return -1;
        /* gone (expired or removed by the provider): open a new one */
    }
    int64_t renew_at = 0;
    char new_rid[256] = "";
    if (open_channel(c, calendar_id, &cal, &renew_at, new_rid, sizeof new_rid, err))
        return -1;
    *next_check_ms = renew_at;
    fault_point(n > 0 ? "channel_after_open_before_stop" : NULL);
    for (int i = 0; i < n; i++) {
        struct cs_err e2;
        /* a row left `opening` by a crash may still be live in Google
         * (the watch succeeded, its answer was lost): Google's resource id
         * is per watched calendar, so the new channel's one stops it */
        if (stop_channel(c, cal.credential_id, lv[i].id,
                         lv[i].has_resource ? lv[i].resource_id : new_rid, &e2))
            log_warn("channel.stop_failed", "channel=%s err=%s", log_q(lv[i].id),
                     log_q(e2.msg));
    }
    return 0;
}

int channel_stop_calendar(int64_t calendar_id, struct cs_err *err)
{
    struct store_conn *c = store_conn(err);
    struct calendar_ref cal;
    struct live lv[8];
    int n = 0, rc = 0;
    if (!c || calendar_ref_load(c, calendar_id, &cal, err) <= 0)
        return c ? 0 : -1;
    /* reactivated since the stop was asked: its channel serves again */
    if (strcmp(cal.state, "stopped") != 0 && strcmp(cal.state, "revoked") != 0)
        return 0;
    if (load_live(c, calendar_id, lv, 8, &n, err))
        return -1;
    for (int i = 0; i < n; i++)
        if (stop_channel(c, cal.credential_id, lv[i].id,
                         lv[i].has_resource ? lv[i].resource_id : NULL, err))
            rc = -1;
    return rc;
}

int channel_stop_one(const char *channel_id, struct cs_err *err)
{
    struct store_conn *c = store_conn(err);
    if (!c)
        return -1;
    char rid[256];
    int64_t cred = 0;
    if (channels_stop_target(c, channel_id, rid, sizeof rid, &cred, err) != 1)
        return 0;
    return stop_channel(c, cred, channel_id, rid, err);
}

int channel_stop_foreign(int64_t calendar_id, const char *channel_id,
                         const char *resource_id, struct cs_err *err)
{
    struct store_conn *c = store_conn(err);
    struct calendar_ref cal;
    if (!c)
        return -1;
    int r = calendar_ref_load(c, calendar_id, &cal, err);
    if (r <= 0)
        return r; /* the calendar went away meanwhile: nothing to stop with */
    /* no row to mark: stop_channel's state update touches nothing */
    return stop_channel(c, cal.credential_id, channel_id, resource_id, err);
}
