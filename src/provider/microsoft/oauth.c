/* oauth.c -- the Microsoft identity platform's OAuth for the Graph
 * provider: a fresh-enough access token per credential, cached (sealed,
 * secret.h) in its credentials row, refreshed with the refresh token
 * (grant_type=refresh_token on <tenant>/oauth2/v2.0/token, scope
 * offline_access + Calendars.ReadWrite); invalid_grant (AADSTS50173 and
 * friends) revokes the credential and its calendars, as for Google.
 */
#include "provider/microsoft/msgraph.h"

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
    return msgraph_url_escape(b, v ? v : "");
}

#define MSGRAPH_REFRESH_MAX 8192 /* bytes: larger answers keep the old token */

static int refresh_token(struct msgraph_auth *a, const char *refresh, char *out,
                         size_t cap, struct msgraph_resp *r, struct cs_err *err)
{
    const struct config *cfg = msgraph_config();
    struct buf form;
    lua_State *L = json_state();
    int rc = MSGRAPH_ETRANSPORT, top = L ? lua_gettop(L) : 0;
    buf_init(&form);
    if (!L) {
        cs_err_set(err, "out of memory");
        goto done;
    }
    if (!cfg->microsoft.client_id || !*cfg->microsoft.client_id) {
        /* never send a refresh token with no client: Entra would refuse
         * it, and an unconfigured test instance must not reach Microsoft */
        cs_err_set(err, "microsoft.client_id is not configured");
        goto done;
    }
    char url[1024];
    if (*cfg->microsoft.token_url)
        snprintf(url, sizeof url, "%s", cfg->microsoft.token_url);
    else
        snprintf(url, sizeof url, "https://login.microsoftonline.com/%s/oauth2/v2.0/token",
                 cfg->microsoft.tenant);
    /* a public client (no secret) is allowed: Entra's mobile/desktop
     * registrations refresh without one */
    if (form_add(&form, "grant_type", "refresh_token") ||
        form_add(&form, "refresh_token", refresh) ||
        form_add(&form, "client_id", cfg->microsoft.client_id) ||
        form_add(&form, "scope", "offline_access https://graph.microsoft.com/Calendars.ReadWrite") ||
        (*cfg->microsoft.client_secret &&
         form_add(&form, "client_secret", cfg->microsoft.client_secret))) {
        cs_err_set(err, "out of memory");
        goto done;
    }
    struct msgraph_exchange e = {
        .method = "POST", .url = url,
        .ctype = "application/x-www-form-urlencoded",
        .body = form.data, .body_len = form.len,
    };
    if (msgraph_exchange_retry("oauth.token", &e, r, time_mono_ms() + MSGRAPH_RETRY_BUDGET_MS,
                       err))
        goto done;
    if (r->status == 400 || r->status == 401) {
        if (strcmp(r->reason, "invalid_grant") == 0) {
            struct cs_err e2;
            char why[sizeof r->message + 32];
            snprintf(why, sizeof why, "invalid_grant%s%s", r->message[0] ? ": " : "",
                     r->message);
            if (credential_revoke(a->db, a->credential_id, why, &e2))
                log_error("microsoft.revoke_failed", "credential=%lld err=%s",
                          (long long)a->credential_id, log_q(e2.msg));
            log_warn("microsoft.credential_revoked", "credential=%lld reason=%s",
                     (long long)a->credential_id, log_q(why));
            cs_err_set(err, "refresh token refused: %s", why);
            rc = MSGRAPH_EREVOKED;
            goto done;
        }
    }
    if (r->status < 200 || r->status > 299) {
        cs_err_set(err, "token endpoint: HTTP %ld %s %s", r->status, r->reason,
                   r->message);
        rc = MSGRAPH_EHTTP;
        goto done;
    }
    const char *tok;
    size_t n;
    int64_t expires_in = 3600;
    if (json_decode_object(L, r->body.data ? r->body.data : "", r->body.len, err)) {
        rc = MSGRAPH_EBADRESP;
        goto done;
    }
    if (json_get_str(L, -1, "access_token", &tok, &n, err) != 1 || n == 0 ||
        n >= cap || strlen(tok) != n ||
        json_get_int(L, -1, "expires_in", &expires_in, err) < 0 ||
        expires_in <= 0 || expires_in > 86400 * 366) {
        cs_err_set(err, "token endpoint: malformed answer");
        rc = MSGRAPH_EBADRESP;
        goto done;
    }
    memcpy(out, tok, n + 1);
    if (token_store(a->db, a->credential_id, out, time_now_ms() + expires_in * 1000,
                    err)) {
        rc = MSGRAPH_ETRANSPORT;
        goto done;
    }
    /* Microsoft rotates refresh tokens: keep the newest (the old one
     * lasts only until its own expiry). A missing or unusable one leaves
     * the stored token as it is. */
    const char *rt;
    size_t rn;
    if (json_get_str(L, -1, "refresh_token", &rt, &rn, NULL) == 1 && rn > 0 &&
        rn <= MSGRAPH_REFRESH_MAX && strlen(rt) == rn && strcmp(rt, refresh) != 0 &&
        credential_refresh_store(a->db, a->credential_id, rt, err)) {
        rc = MSGRAPH_ETRANSPORT;
        goto done;
    }
    metrics_inc("calsync_microsoft_token_refreshes_total");
    log_info("microsoft.token_refreshed", "credential=%lld expires_in=%lld",
             (long long)a->credential_id, (long long)expires_in);
    rc = MSGRAPH_OK;
done:
    if (L)
        lua_settop(L, top);
    buf_free(&form);
    return rc;
}

int msgraph_access_token(struct msgraph_auth *a, int force, char *out,
                        size_t cap, struct msgraph_resp *resp,
                        struct cs_err *err)
{
    struct buf refresh;
    int64_t exp = 0;
    int revoked = 0, rc;
    buf_init(&refresh);
    msgraph_resp_reset(resp);
    if (token_load(a->db, a->credential_id, &refresh, out, cap, &exp, &revoked, err)) {
        rc = MSGRAPH_ETRANSPORT;
        goto done;
    }
    if (revoked) {
        cs_err_set(err, "credential %lld is revoked", (long long)a->credential_id);
        rc = MSGRAPH_EREVOKED;
        goto done;
    }
    if (!force && out[0] && exp > time_now_ms() + MSGRAPH_REFRESH_AHEAD_MS) {
        rc = MSGRAPH_OK;
        goto done;
    }
    rc = refresh_token(a, refresh.data ? refresh.data : "", out, cap, resp, err);
done:
    buf_free(&refresh);
    return rc;
}
