/* oauth.c -- the Microsoft identity platform's token endpoint for the
 * shared refresh (poauth.h): grant_type=refresh_token on
 * <tenant>/oauth2/v2.0/token, scope offline_access + Calendars.ReadWrite.
 * Microsoft rotates refresh tokens, so the newest is kept; invalid_grant
 * (AADSTS50173 and friends) revokes the credential and its calendars, as
 * for Google.
 */
#include "provider/microsoft/msgraph.h"

#define MSGRAPH_REFRESH_MAX 8192 /* bytes: larger answers keep the old token */

static int token_request(const struct config *cfg, const char *refresh, struct buf *url,
                         struct buf *form, struct cs_err *err)
{
    if (!cfg->microsoft.client_id || !*cfg->microsoft.client_id) {
        cs_err_set(err, "microsoft.client_id is not configured");
        /* permanent until an operator configures it and restarts, as for
         * Google: the calendar shows `error` with this reason rather than
         * retrying in silence (docs/operations.md "Calendar errors") */
        return MSGRAPH_EINVAL;
    }
    int bad = *cfg->microsoft.token_url
                  ? buf_puts(url, cfg->microsoft.token_url)
                  : buf_printf(url, "https://login.microsoftonline.com/%s/oauth2/v2.0/token",
                               cfg->microsoft.tenant);
    /* a public client (no secret) is allowed: Entra's mobile/desktop
     * registrations refresh without one */
    if (bad || poauth_form_add(form, "grant_type", "refresh_token") ||
        poauth_form_add(form, "refresh_token", refresh) ||
        poauth_form_add(form, "client_id", cfg->microsoft.client_id) ||
        poauth_form_add(form, "scope",
                        "offline_access https://graph.microsoft.com/Calendars.ReadWrite") ||
        (*cfg->microsoft.client_secret &&
         poauth_form_add(form, "client_secret", cfg->microsoft.client_secret))) {
        cs_err_set(err, "out of memory");
        return MSGRAPH_ETRANSPORT;
    }
    return MSGRAPH_OK;
}

static const struct poauth_client msgraph_oauth = {
    .http = &msgraph_http,
    .token_request = token_request,
    .rotate_max = MSGRAPH_REFRESH_MAX,
};

int msgraph_access_token(struct phttp_auth *a, int force, char *out, size_t cap,
                         struct phttp_resp *resp, struct cs_err *err)
{
    return poauth_access_token(&msgraph_oauth, a, force, out, cap, resp, err);
}
