/* secret.h -- OAuth tokens encrypted at rest (issue 21, item 9).
 *
 * Optional. With a key -- CALSYNC_TOKEN_KEY (64 hex digits: 32 bytes) or
 * CALSYNC_TOKEN_KEY_FILE (a file holding them) in the environment, never in
 * the configuration file, which is often checked in -- the refresh and
 * access tokens of the credentials table are stored sealed:
 *
 *     "enc1:" base64( nonce[12] | AES-256-GCM ciphertext | tag[16] )
 *
 * with the column name ("refresh_token", "access_token") as additional
 * authenticated data, so a sealed value moved to another column does not
 * open. Without a key they are stored as given. A value without the
 * "enc1:" prefix is plaintext: rows written before a key was set are read
 * as they are and sealed at the next start (secret_start). A database with
 * sealed tokens refuses to start without its key, or with another key.
 *
 * The key is process-wide, read once; everything here is thread-safe
 * after secret_init().
 */
#ifndef CALSYNC_SECRET_H
#define CALSYNC_SECRET_H

#include "store/store.h"
#include "util.h"

#define SECRET_PREFIX "enc1:"
#define SECRET_KEY_ENV "CALSYNC_TOKEN_KEY"
#define SECRET_KEY_FILE_ENV "CALSYNC_TOKEN_KEY_FILE"

/* Reads the key from the environment. 0 (a key or none), or -1 with err
 * when it is set but unusable (not 64 hex digits, both variables set, an
 * unreadable file). Calling it again re-reads. */
int secret_init(struct cs_err *err);

/* 1 when a key is loaded. */
int secret_enabled(void);

/* Appends `plain` as it is stored: sealed with the key, else as given.
 * column is the AAD. 0, or -1 with err (OOM, libcrypto). */
int secret_seal(const char *column, const char *plain, struct buf *out,
                struct cs_err *err);

/* Appends the plaintext of a stored value (sealed or not). -1 with err
 * when it is sealed and there is no key, or it does not open (another
 * key, another column, altered bytes). */
int secret_open(const char *column, const char *stored, struct buf *out,
                struct cs_err *err);

/* At start, after the migrations: with a key, seals every plaintext token
 * of the credentials table (one transaction) and checks that the sealed
 * ones open with this key; without one, refuses a database that holds
 * sealed tokens. 0, or -1 with err (the service must not start). */
int secret_start(struct store_conn *c, struct cs_err *err);

/* Tests: forget the key. */
void secret_reset(void);

#endif
