/* oauth.c -- the Google provider's OAuth: a fresh-enough access token per
 * credential, cached (sealed, secret.h) in its credentials row, refreshed
 * with the refresh token; invalid_grant revokes the credential and its
 * calendars (calendar.c: credential_revoke). See google.h.
 */
#include "provider/google/google.h"

#include "calendar.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "secret.h"
#include "store/credentials.h"

#include <lua.h>
#include <stdio.h>
#include <string.h>

static int token_load(struct store_conn *db, int64_t cred, struct buf *refresh,
                      char *access, size_t cap, int64_t *expires_at,
                      int *revoked, struct cs_err *err)
{
    return credential_tokens_load(db, cred, refresh, access, cap, expires_at, revoked, err);
}

static int token_store(struct store_conn *db, int64_t cred, const char *access,
                       int64_t expires_at, struct cs_err *err)
{
    return credential_access_store(db, cred, access, expires_at, err);
}

/* Builds "k=v&k=v" form text. */
static int form_add(struct buf *b, const char *k, const char *v)
{
    if ((b->len && buf_append(b, "&", 1)) || buf_puts(b, k) || buf_append(b, "=", 1))
        return -1;
    return google_url_escape(b, v ? v : "");
}

static int refresh_token(struct google_auth *a, const char *refresh, char *out,
                         size_t cap, struct google_resp *r, struct cs_err *err)
{
    const struct config *cfg = google_config();
    struct buf form;
    lua_State *L = json_state();
    int rc = GOOGLE_ETRANSPORT, top = L ? lua_gettop(L) : 0;
    buf_init(&form);
    if (!L) {
        cs_err_set(err, "out of memory");
        goto done;
    }
    if (!cfg->google.client_id || !*cfg->google.client_id ||
        !cfg->google.client_secret || !*cfg->google.client_secret) {
        /* never send a refresh token with no client: Google would refuse
         * it, and an unconfigured test instance must not reach Google */
        cs_err_set(err, "google.client_id and google.client_secret are not configured");
        /* permanent until an operator configures the client and restarts:
         * the calendar shows `error` with this reason (docs/operations.md) */
        rc = GOOGLE_EINVAL;
        goto done;
    }
    if (form_add(&form, "grant_type", "refresh_token") ||
        form_add(&form, "refresh_token", refresh) ||
        form_add(&form, "client_id", cfg->google.client_id) ||
        form_add(&form, "client_secret", cfg->google.client_secret)) {
        cs_err_set(err, "out of memory");
        goto done;
    }
    struct google_exchange e = {
        .method = "POST", .url = cfg->google.token_url,
        .ctype = "application/x-www-form-urlencoded",
        .body = form.data, .body_len = form.len,
    };
    int64_t budget = a->budget_ms > 0 ? a->budget_ms : GOOGLE_RETRY_BUDGET_MS;
    if (google_exchange_retry("oauth.token", &e, r, time_mono_ms() + budget, err))
        goto done;
    if (r->status == 400 || r->status == 401) {
        if (strcmp(r->reason, "invalid_grant") == 0) {
            struct cs_err e2;
            char why[sizeof r->message + 32];
            snprintf(why, sizeof why, "invalid_grant%s%s", r->message[0] ? ": " : "",
                     r->message);
            if (credential_revoke(a->db, a->credential_id, why, &e2))
                log_error("google.revoke_failed", "credential=%lld err=%s",
                          (long long)a->credential_id, log_q(e2.msg));
            log_warn("google.credential_revoked", "credential=%lld reason=%s",
                     (long long)a->credential_id, log_q(why));
            cs_err_set(err, "refresh token refused: %s", why);
            rc = GOOGLE_EREVOKED;
            goto done;
        }
    }
    if (r->status < 200 || r->status > 299) {
        cs_err_set(err, "token endpoint: HTTP %ld %s %s", r->status, r->reason,
                   r->message);
        rc = GOOGLE_EHTTP;
        goto done;
    }
    const char *tok;
    size_t n;
    int64_t expires_in = 3600;
    if (json_decode_object(L, r->body.data ? r->body.data : "", r->body.len, err)) {
        rc = GOOGLE_EBADRESP;
        goto done;
    }
    if (json_get_str(L, -1, "access_token", &tok, &n, err) != 1 || n == 0 ||
        n >= cap || strlen(tok) != n ||
        json_get_int(L, -1, "expires_in", &expires_in, err) < 0 ||
        expires_in <= 0 || expires_in > 86400 * 366) {
        cs_err_set(err, "token endpoint: malformed answer");
        rc = GOOGLE_EBADRESP;
        goto done;
    }
    memcpy(out, tok, n + 1);
    if (token_store(a->db, a->credential_id, out, time_now_ms() + expires_in * 1000,
                    err)) {
        rc = GOOGLE_ETRANSPORT;
        goto done;
    }
    metrics_inc("calsync_google_token_refreshes_total");
    log_info("google.token_refreshed", "credential=%lld expires_in=%lld",
             (long long)a->credential_id, (long long)expires_in);
    rc = GOOGLE_OK;
done:
    if (L)
        lua_settop(L, top);
    buf_free(&form);
    return rc;
}

int google_access_token(struct google_auth *a, int force, char *out,
                        size_t cap, struct google_resp *resp,
                        struct cs_err *err)
{
    struct buf refresh;
    int64_t exp = 0;
    int revoked = 0, rc;
    buf_init(&refresh);
    google_resp_reset(resp);
    if (token_load(a->db, a->credential_id, &refresh, out, cap, &exp, &revoked, err)) {
        rc = GOOGLE_ETRANSPORT;
        goto done;
    }
    if (revoked) {
        cs_err_set(err, "credential %lld is revoked", (long long)a->credential_id);
        rc = GOOGLE_EREVOKED;
        goto done;
    }
    if (!force && out[0] && exp > time_now_ms() + GOOGLE_REFRESH_AHEAD_MS) {
        rc = GOOGLE_OK;
        goto done;
    }
    rc = refresh_token(a, refresh.data ? refresh.data : "", out, cap, resp, err);
done:
    buf_free(&refresh);
    return rc;
}
