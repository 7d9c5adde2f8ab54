/* credentials.h -- the credentials table (owner of its SQL).
 *
 * Tokens are stored sealed when a token key is set (secret.h): these
 * functions seal on the way in and open on the way out, so no caller
 * sees a sealed value and no plaintext token reaches the table.
 */
#ifndef CALSYNC_STORE_CREDENTIALS_H
#define CALSYNC_STORE_CREDENTIALS_H

#include "store/store.h"
#include "util.h"

#include <stddef.h>
#include <stdint.h>

#define CRED_TOKEN_MAX 4096

/* Inserts a credential; *id_out gets its id. 0 or -1 (err set). */
int credential_insert(struct store_conn *c, const char *provider,
                      const char *refresh_token, const char *access_token,
                      int64_t expires_at_ms, int64_t *id_out,
                      struct cs_err *err);

/* 1 exists, 0 not, -1 error. */
int credential_exists(struct store_conn *c, int64_t id, struct cs_err *err);

/* The tokens of credential `id`, opened: refresh into `refresh` (appended),
 * access into access[cap] ("" when none or longer than cap), its expiry
 * (ms, 0: unknown) and whether it is revoked. 0, or -1 with err set (also
 * "no credential N"). */
int credential_tokens_load(struct store_conn *c, int64_t id, struct buf *refresh,
                           char *access, size_t cap, int64_t *expires_at, int *revoked,
                           struct cs_err *err);

/* Stores a new access token (sealed) and its expiry, unless the
 * credential was revoked meanwhile. 0 or -1. */
int credential_access_store(struct store_conn *c, int64_t id, const char *access,
                            int64_t expires_at, struct cs_err *err);

/* Marks the credential revoked and forgets its access token. 0 or -1. */
int credential_mark_revoked(struct store_conn *c, int64_t id, struct cs_err *err);

#endif
