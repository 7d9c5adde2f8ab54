/* poauth.h -- the OAuth refresh the HTTP providers share: a fresh-enough
 * access token per credential, cached (sealed, secret.h) in its
 * credentials row and refreshed with the refresh token over the shared
 * exchange (phttp.h); invalid_grant from the token endpoint revokes the
 * credential and its calendars (calendar.c: credential_revoke). A provider
 * that rotates refresh tokens (Microsoft) has the newest one kept.
 *
 * What differs per provider is in its struct poauth_client: the token
 * endpoint and the form it takes (a hook), whether refresh tokens rotate.
 * The metric calsync_<name>_token_refreshes_total and the log events
 * <name>.token_refreshed, <name>.credential_revoked and <name>.revoke_failed
 * carry the provider's name (struct phttp_client).
 *
 * Never call these inside a database transaction: they block on the
 * network and write the credentials row.
 */
#ifndef CALSYNC_PROVIDER_POAUTH_H
#define CALSYNC_PROVIDER_POAUTH_H

#include "provider/phttp.h"

#include <stddef.h>

#define POAUTH_REFRESH_AHEAD_MS 60000 /* refresh a token expiring within it */

struct poauth_client {
    struct phttp_client *http; /* the exchange, names, cancellation */
    /* Builds the token endpoint's URL into url and its form (with
     * poauth_form_add: grant_type, the refresh token, the client) into form
     * from cfg. 0, or an enum phttp_rc with err set when no request may be
     * made (say the client is not configured: the provider decides how
     * permanent that is). */
    int (*token_request)(const struct config *cfg, const char *refresh, struct buf *url,
                         struct buf *form, struct cs_err *err);
    /* 0: refresh tokens do not rotate (a new one in the answer is
     * ignored); else the longest new refresh token kept (a longer one
     * leaves the stored token as it is). */
    size_t rotate_max;
};

/* A usable access token for a->credential_id into out (cap bytes),
 * refreshing when it expires within POAUTH_REFRESH_AHEAD_MS or when force
 * is set. PHTTP_OK, PHTTP_EREVOKED (credential revoked, now or before), or
 * another enum phttp_rc with err set; resp holds the token endpoint's
 * answer when one was asked. */
int poauth_access_token(const struct poauth_client *c, struct phttp_auth *a, int force,
                        char *out, size_t cap, struct phttp_resp *resp,
                        struct cs_err *err);

/* Appends "k=v" (v percent-encoded, NULL as empty) to form text b, with a
 * '&' before when b is not empty. 0 or -1 (memory). */
int poauth_form_add(struct buf *b, const char *k, const char *v);

#endif
