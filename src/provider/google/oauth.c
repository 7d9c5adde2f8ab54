/* oauth.c -- the Google provider's OAuth: Google's token endpoint and the
 * form it takes for the shared refresh (poauth.h), which caches the access
 * token (sealed, secret.h) in the credentials row and revokes the
 * credential and its calendars on invalid_grant. See google.h.
 */
#include "provider/google/google.h"

/* google.token_url with grant_type=refresh_token and the client's id and
 * secret, both required. */
static int token_request(const struct config *cfg, const char *refresh, struct buf *url,
                         struct buf *form, struct cs_err *err)
{
    if (!cfg->google.client_id || !*cfg->google.client_id ||
        !cfg->google.client_secret || !*cfg->google.client_secret) {
        cs_err_set(err, "google.client_id and google.client_secret are not configured");
        /* permanent until an operator configures the client and restarts:
         * the calendar shows `error` with this reason (docs/operations.md) */
        return GOOGLE_EINVAL;
    }
    if (buf_puts(url, cfg->google.token_url) ||
        poauth_form_add(form, "grant_type", "refresh_token") ||
        poauth_form_add(form, "refresh_token", refresh) ||
        poauth_form_add(form, "client_id", cfg->google.client_id) ||
        poauth_form_add(form, "client_secret", cfg->google.client_secret)) {
        cs_err_set(err, "out of memory");
        return GOOGLE_ETRANSPORT;
    }
    return GOOGLE_OK;
}

/* Google does not rotate refresh tokens: rotate_max 0. */
static const struct poauth_client google_oauth = {
    .http = &google_http,
    .token_request = token_request,
    .rotate_max = 0,
};

int google_access_token(struct google_auth *a, int force, char *out,
                        size_t cap, struct google_resp *resp,
                        struct cs_err *err)
{
    return poauth_access_token(&google_oauth, a, force, out, cap, resp, err);
}
