/* poauth.c -- the OAuth refresh the HTTP providers share: the cached
 * access token, the refresh over phttp_exchange_retry, invalid_grant as a
 * revocation, rotated refresh tokens kept. See poauth.h.
 */
#include "provider/poauth.h"

#include "calendar.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "store/credentials.h"

#include <lua.h>
#include <stdio.h>
#include <string.h>

int poauth_form_add(struct buf *b, const char *k, const char *v)
{
    if ((b->len && buf_append(b, "&", 1)) || buf_puts(b, k) || buf_append(b, "=", 1))
        return -1;
    return phttp_url_escape(b, v ? v : "");
}

/* invalid_grant: the refresh token is refused for good. Marks the
 * credential and its calendars revoked; PHTTP_EREVOKED. */
static int revoke(const struct poauth_client *c, struct phttp_auth *a,
                  const struct phttp_resp *r, struct cs_err *err)
{
    struct cs_err e2;
    char ev[48];
    char why[sizeof r->message + 32];
    snprintf(why, sizeof why, "invalid_grant%s%s", r->message[0] ? ": " : "", r->message);
    if (credential_revoke(a->db, a->credential_id, why, &e2))
        log_error(phttp_ev(c->http, "revoke_failed", ev, sizeof ev),
                  "credential=%lld err=%s", (long long)a->credential_id, log_q(e2.msg));
    log_warn(phttp_ev(c->http, "credential_revoked", ev, sizeof ev),
             "credential=%lld reason=%s", (long long)a->credential_id, log_q(why));
    cs_err_set(err, "refresh token refused: %s", why);
    return PHTTP_EREVOKED;
}

/* Microsoft rotates refresh tokens: keep the newest (the old one lasts
 * only until its own expiry). A missing or unusable one leaves the stored
 * token as it is. The answer is the object on L's top. 0 or -1 (err). */
static int keep_rotated(const struct poauth_client *c, struct phttp_auth *a, lua_State *L,
                        const char *refresh, struct cs_err *err)
{
    const char *rt;
    size_t rn;
    if (c->rotate_max == 0 ||
        json_get_str(L, -1, "refresh_token", &rt, &rn, NULL) != 1 || rn == 0 ||
        rn > c->rotate_max || strlen(rt) != rn || strcmp(rt, refresh) == 0)
        return 0;
    return credential_refresh_store(a->db, a->credential_id, rt, err);
}

static int refresh_token(const struct poauth_client *c, struct phttp_auth *a,
                         const char *refresh, char *out, size_t cap,
                         struct phttp_resp *r, struct cs_err *err)
{
    struct buf form, url;
    lua_State *L = json_state();
    int rc = PHTTP_ETRANSPORT, top = L ? lua_gettop(L) : 0;
    char ev[48], series[96];
    buf_init(&form);
    buf_init(&url);
    if (!L) {
        cs_err_set(err, "out of memory");
        goto done;
    }
    /* never send a refresh token with no client: the provider would
     * refuse it, and an unconfigured test instance must not reach it */
    if ((rc = c->token_request(c->http->cfg, refresh, &url, &form, err)) != PHTTP_OK)
        goto done;
    rc = PHTTP_ETRANSPORT;
    if (!url.data || !form.data) {
        cs_err_set(err, "out of memory");
        goto done;
    }
    struct phttp_exchange e = {
        .method = "POST", .url = url.data,
        .ctype = "application/x-www-form-urlencoded",
        .body = form.data, .body_len = form.len,
    };
    int64_t budget = a->budget_ms > 0 ? a->budget_ms : PHTTP_RETRY_BUDGET_MS;
    if (phttp_exchange_retry(c->http, "oauth.token", &e, r, time_mono_ms() + budget, err))
        goto done;
    if ((r->status == 400 || r->status == 401) && strcmp(r->reason, "invalid_grant") == 0) {
        rc = revoke(c, a, r, err);
        goto done;
    }
    if (r->status < 200 || r->status > 299) {
        cs_err_set(err, "token endpoint: HTTP %ld %s %s", r->status, r->reason,
                   r->message);
        rc = PHTTP_EHTTP;
        goto done;
    }
    const char *tok;
    size_t n;
    int64_t expires_in = 3600;
    if (json_decode_object(L, r->body.data ? r->body.data : "", r->body.len, err)) {
        rc = PHTTP_EBADRESP;
        goto done;
    }
    if (json_get_str(L, -1, "access_token", &tok, &n, err) != 1 || n == 0 ||
        n >= cap || strlen(tok) != n ||
        json_get_int(L, -1, "expires_in", &expires_in, err) < 0 ||
        expires_in <= 0 || expires_in > 86400 * 366) {
        cs_err_set(err, "token endpoint: malformed answer");
        rc = PHTTP_EBADRESP;
        goto done;
    }
    memcpy(out, tok, n + 1);
    if (credential_access_store(a->db, a->credential_id, out,
                                time_now_ms() + expires_in * 1000, err) ||
        keep_rotated(c, a, L, refresh, err))
        goto done;
    snprintf(series, sizeof series, "calsync_%s_token_refreshes_total", c->http->name);
    metrics_inc(series);
    log_info(phttp_ev(c->http, "token_refreshed", ev, sizeof ev),
             "credential=%lld expires_in=%lld", (long long)a->credential_id,
             (long long)expires_in);
    rc = PHTTP_OK;
done:
    if (L)
        lua_settop(L, top);
    buf_free(&form);
    buf_free(&url);
    return rc;
}

int poauth_access_token(const struct poauth_client *c, struct phttp_auth *a, int force,
                        char *out, size_t cap, struct phttp_resp *resp,
                        struct cs_err *err)
{
    struct buf refresh;
    int64_t exp = 0;
    int revoked = 0, rc;
    buf_init(&refresh);
    phttp_resp_reset(resp);
    if (credential_tokens_load(a->db, a->credential_id, &refresh, out, cap, &exp,
                               &revoked, err)) {
        rc = PHTTP_ETRANSPORT;
        goto done;
    }
    if (revoked) {
        cs_err_set(err, "credential %lld is revoked", (long long)a->credential_id);
        rc = PHTTP_EREVOKED;
        goto done;
    }
    if (!force && out[0] && exp > time_now_ms() + POAUTH_REFRESH_AHEAD_MS) {
        rc = PHTTP_OK;
        goto done;
    }
    rc = refresh_token(c, a, refresh.data ? refresh.data : "", out, cap, resp, err);
done:
    buf_free(&refresh);
    return rc;
}
