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

/* The provider name of credential `id` into name (cap bytes, cut).
 * 1 found, 0 no such credential, -1 error (err set). */
int credential_provider(struct store_conn *c, int64_t id, char *name, size_t cap,
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

/* Replaces the refresh token (sealed) of an active credential: a provider
 * that rotates refresh tokens (Microsoft's identity platform returns a new
 * one with every refresh) must keep the newest, or the credential dies
 * when the first one expires. 0 or -1. */
int credential_refresh_store(struct store_conn *c, int64_t id, const char *refresh,
                             struct cs_err *err);

/* Stores a new access token (sealed) and its expiry, unless the
 * credential was revoked meanwhile. 0 or -1. */
int credential_access_store(struct store_conn *c, int64_t id, const char *access,
                            int64_t expires_at, struct cs_err *err);

/* Marks the credential revoked and forgets its access token. 0 or -1. */
int credential_mark_revoked(struct store_conn *c, int64_t id, struct cs_err *err);

/* ------------------------------------------------- as stored (secret.c)
 * The token columns as they are on disk, sealed or not: only for
 * secret_start, which checks the key against them and seals plaintext
 * left from before a key was set. Column 1 is refresh_token, 2
 * access_token. */

/* Calls fn(ud, id, refresh, access) for every credential in id order (the
 * texts valid during the call; access may be NULL). A non-zero return of
 * fn stops the walk and is returned; -1 on a database error. */
int credential_raw_each(struct store_conn *c,
                        int (*fn)(void *ud, int64_t id, const char *refresh,
                                  const char *access),
                        void *ud, struct cs_err *err);

/* A copy of column `col` of credential id into *out (free it; NULL when
 * the value is NULL). 1 found, 0 not, -1 error. */
int credential_raw_get(struct store_conn *c, int64_t id, int col, char **out,
                       struct cs_err *err);

/* Overwrites column `col` of credential id with n bytes of v. 0 or -1. */
int credential_raw_set(struct store_conn *c, int64_t id, int col, const char *v, size_t n,
                       struct cs_err *err);

/* GET /v1/credentials/{id}: {"id","provider","state","calendars":[ids]}
 * appended to out; never a token. 1 found, 0 not, -1 error. */
int credential_json(struct store_conn *c, int64_t id, struct buf *out,
                    struct cs_err *err);

/* Re-authorisation (PUT /v1/credentials/{id}): replaces the tokens
 * (sealed), the expiry (0: unknown) and sets the credential active. 0 or
 * -1. */
int credential_replace_tokens(struct store_conn *c, int64_t id, const char *refresh_token,
                              const char *access_token, int64_t expires_at_ms,
                              struct cs_err *err);

#endif