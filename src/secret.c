/* secret.c -- OAuth tokens encrypted at rest (see secret.h).
 *
 * AES-256-GCM from libcrypto (already linked for HMAC and SHA-256), a
 * random 96-bit nonce per value (RAND_bytes), the column name as AAD.
 * Values are small (tokens of a few hundred bytes), so everything is done
 * in one EVP call each way, into a buffer the caller owns.
 */
#include "secret.h"
#include "store/credentials.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16
#define SEALED_MAX (64 * 1024) /* bytes of a stored value we agree to open */

static unsigned char secret_key[KEY_LEN];
static int secret_have_key;

void secret_reset(void)
{
    OPENSSL_cleanse(secret_key, sizeof secret_key);
    secret_have_key = 0;
}

int secret_enabled(void)
{
    return secret_have_key;
}

static int hexval(int c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* 64 hex digits, surrounding white space allowed (a file's newline). */
static int parse_key(const char *s, size_t n, unsigned char out[KEY_LEN])
{
    while (n && strchr(" \t\r\n", s[n - 1]))
        n--;
    while (n && strchr(" \t\r\n", *s)) {
        s++;
        n--;
    }
    if (n != 2 * KEY_LEN)
        return -1;
    for (size_t i = 0; i < KEY_LEN; i++) {
        int h = hexval((unsigned char)s[2 * i]), l = hexval((unsigned char)s[2 * i + 1]);
        if (h < 0 || l < 0)
            return -1;
        out[i] = (unsigned char)(h << 4 | l);
    }
    return 0;
}

/* Reads the key file: a regular file, never blocking, at most 1 KiB. */
static int read_key_file(const char *path, unsigned char out[KEY_LEN], struct cs_err *err)
{
    char text[1025];
    int rc = -1;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    struct stat st;
    ssize_t n = 0;
    if (fd < 0) {
        cs_err_set(err, "%s: %s: %s", SECRET_KEY_FILE_ENV, path, strerror(errno));
        goto done;
    }
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        cs_err_set(err, "%s: %s: not a regular file", SECRET_KEY_FILE_ENV, path);
        goto done;
    }
    if (st.st_mode & 077)
        log_warn("secret.key_file_readable", "file=%s mode=%04o note=%s", log_q(path),
                 (unsigned)(st.st_mode & 07777), log_q("chmod 600 it"));
    n = read(fd, text, sizeof text - 1);
    if (n < 0 || parse_key(text, (size_t)n, out)) {
        cs_err_set(err, "%s: %s must hold 64 hex digits (32 bytes), e.g. from "
                   "`openssl rand -hex 32`", SECRET_KEY_FILE_ENV, path);
        goto done;
    }
    rc = 0;
done:
    OPENSSL_cleanse(text, sizeof text);
    if (fd >= 0)
        close(fd);
    return rc;
}

int secret_init(struct cs_err *err)
{
    const char *hex = getenv(SECRET_KEY_ENV);
    const char *file = getenv(SECRET_KEY_FILE_ENV);
    secret_reset();
    if (hex && *hex && file && *file)
        return cs_err_set(err, "set %s or %s, not both", SECRET_KEY_ENV, SECRET_KEY_FILE_ENV);
    if (hex && *hex) {
        if (parse_key(hex, strlen(hex), secret_key))
            return cs_err_set(err, "%s must be 64 hex digits (32 bytes), e.g. from "
                              "`openssl rand -hex 32`", SECRET_KEY_ENV);
        secret_have_key = 1;
    } else if (file && *file) {
        if (read_key_file(file, secret_key, err))
            return -1;
        secret_have_key = 1;
    }
    return 0;
}

int secret_seal(const char *column, const char *plain, struct buf *out,
                struct cs_err *err)
{
    if (!secret_have_key)
        return buf_puts(out, plain) ? cs_err_set(err, "out of memory") : 0;
    size_t n = strlen(plain);
    if (n > SEALED_MAX / 2)
        return cs_err_set(err, "token too long to store");
    int rc = -1, len = 0, fin = 0;
    size_t raw_len = NONCE_LEN + n + TAG_LEN;
    unsigned char *raw = malloc(raw_len);
    unsigned char *b64 = malloc(4 * ((raw_len + 2) / 3) + 1);
    EVP_CIPHER_CTX *cx = EVP_CIPHER_CTX_new();
    if (!raw || !b64 || !cx) {
        cs_err_set(err, "out of memory");
        goto done;
    }
    if (RAND_bytes(raw, NONCE_LEN) != 1 ||
        EVP_EncryptInit_ex(cx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
        EVP_EncryptInit_ex(cx, NULL, NULL, secret_key, raw) != 1 ||
        EVP_EncryptUpdate(cx, NULL, &len, (const unsigned char *)column,
                          (int)strlen(column)) != 1 ||
        EVP_EncryptUpdate(cx, raw + NONCE_LEN, &len, (const unsigned char *)plain,
                          (int)n) != 1 ||
        EVP_EncryptFinal_ex(cx, raw + NONCE_LEN + len, &fin) != 1 ||
        EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, raw + NONCE_LEN + n) != 1) {
        cs_err_set(err, "token encryption failed (libcrypto)");
        goto done;
    }
    int bl = EVP_EncodeBlock(b64, raw, (int)raw_len);
    if (buf_puts(out, SECRET_PREFIX) || buf_append(out, b64, (size_t)bl)) {
        cs_err_set(err, "out of memory");
        goto done;
    }
    rc = 0;
done:
    EVP_CIPHER_CTX_free(cx);
    if (raw)
        OPENSSL_cleanse(raw, raw_len);
    free(raw);
    free(b64);
    return rc;
}

int secret_open(const char *column, const char *stored, struct buf *out,
                struct cs_err *err)
{
    size_t pl = sizeof SECRET_PREFIX - 1;
    if (strncmp(stored, SECRET_PREFIX, pl) != 0)
        return buf_puts(out, stored) ? cs_err_set(err, "out of memory") : 0;
    if (!secret_have_key)
        return cs_err_set(err, "the stored tokens are encrypted: set %s (or %s)",
                          SECRET_KEY_ENV, SECRET_KEY_FILE_ENV);
    const char *b64 = stored + pl;
    size_t bl = strlen(b64);
    if (bl > SEALED_MAX || bl % 4 || bl < 4 * ((NONCE_LEN + TAG_LEN + 2) / 3))
        return cs_err_set(err, "a stored token is damaged");
    int rc = -1, len = 0, fin = 0;
    unsigned char *raw = malloc(bl / 4 * 3 + 1);
    EVP_CIPHER_CTX *cx = EVP_CIPHER_CTX_new();
    int raw_len = raw ? EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)bl) : -1;
    if (!raw || !cx) {
        cs_err_set(err, "out of memory");
        goto done;
    }
    /* EVP_DecodeBlock counts the '=' padding as zero bytes */
    if (raw_len >= 0 && bl >= 1 && b64[bl - 1] == '=')
        raw_len--;
    if (raw_len >= 0 && bl >= 2 && b64[bl - 2] == '=')
        raw_len--;
    if (raw_len < NONCE_LEN + TAG_LEN) {
        cs_err_set(err, "a stored token is damaged");
        goto done;
    }
    int n = raw_len - NONCE_LEN - TAG_LEN;
    if (buf_reserve(out, (size_t)n + 1)) {
        cs_err_set(err, "out of memory");
        goto done;
    }
    unsigned char *dst = (unsigned char *)out->data + out->len;
    if (EVP_DecryptInit_ex(cx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) != 1 ||
        EVP_DecryptInit_ex(cx, NULL, NULL, secret_key, raw) != 1 ||
        EVP_DecryptUpdate(cx, NULL, &len, (const unsigned char *)column,
                          (int)strlen(column)) != 1 ||
        EVP_DecryptUpdate(cx, dst, &len, raw + NONCE_LEN, n) != 1 ||
        EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_GCM_SET_TAG, TAG_LEN,
                            raw + NONCE_LEN + n) != 1 ||
        EVP_DecryptFinal_ex(cx, dst + len, &fin) != 1) {
        OPENSSL_cleanse(dst, (size_t)n);
        cs_err_set(err, "a stored token does not open with this key (another %s?)",
                   SECRET_KEY_ENV);
        goto done;
    }
    if (memchr(dst, 0, (size_t)n)) {
        OPENSSL_cleanse(dst, (size_t)n);
        cs_err_set(err, "a stored token is damaged");
        goto done;
    }
    out->len += (size_t)n;
    out->data[out->len] = '\0';
    rc = 0;
done:
    EVP_CIPHER_CTX_free(cx);
    free(raw);
    return rc;
}

/* Seals one plaintext column value of credential `id`. */
static int seal_one(struct store_conn *c, const char *column, int64_t id,
                    const char *plain, struct cs_err *err)
{
    struct buf b;
    buf_init(&b);
    int rc = -1;
    if (secret_seal(column, plain, &b, err))
        goto done;
    rc = credential_raw_set(c, id, strcmp(column, "refresh_token") == 0 ? 1 : 2, b.data,
                            b.len, err);
done:
    if (b.data)
        OPENSSL_cleanse(b.data, b.len);
    buf_free(&b);
    return rc;
}

/* The first pass of secret_start over the stored tokens. */
struct scan {
    struct buf plain_ids, probe;
    int sealed, checked;
    int64_t nplain;
    struct cs_err *err;
};

static int scan_row(void *ud, int64_t id, const char *refresh, const char *access)
{
    struct scan *sc = ud;
    const char *vals[2] = {refresh, access};
    for (int k = 1; k <= 2; k++) {
        const char *v = vals[k - 1];
        if (!v)
            continue;
        const char *col = k == 1 ? "refresh_token" : "access_token";
        if (strncmp(v, SECRET_PREFIX, sizeof SECRET_PREFIX - 1) == 0) {
            sc->sealed++;
            if (!sc->checked) { /* one proves the key; all would cost a start */
                buf_reset(&sc->probe);
                if (secret_open(col, v, &sc->probe, sc->err))
                    return 1;
                sc->checked = 1;
            }
        } else if (secret_have_key) {
            if (buf_printf(&sc->plain_ids, "%lld %d\n", (long long)id, k)) {
                cs_err_set(sc->err, "out of memory");
                return 1;
            }
            sc->nplain++;
        }
    }
    return 0;
}

int secret_start(struct store_conn *c, struct cs_err *err)
{
    struct scan sc = {.err = err};
    buf_init(&sc.plain_ids);
    buf_init(&sc.probe);
    int rc = -1, began = 0;
    /* first pass: check what is sealed, remember what is not */
    if (credential_raw_each(c, scan_row, &sc, err))
        goto fail;
    int sealed = sc.sealed;
    int64_t nplain = sc.nplain;
    /* second pass, only when there is something to seal (a start takes no
     * write lock otherwise): seal the plaintext ones, re-read by id since
     * the first statement's texts are gone */
    if (nplain) {
        if (store_begin(c, err))
            goto fail;
        began = 1;
    }
    for (char *p = sc.plain_ids.data; p && *p;) {
        long long id;
        int k, used;
        if (sscanf(p, "%lld %d\n%n", &id, &k, &used) != 2)
            break;
        p += used;
        char *copy;
        int r = credential_raw_get(c, id, k, &copy, err);
        if (r < 0)
            goto fail;
        r = copy ? seal_one(c, k == 1 ? "refresh_token" : "access_token", id, copy, err)
                 : 0;
        if (copy) {
            OPENSSL_cleanse(copy, strlen(copy));
            free(copy);
        }
        if (r)
            goto fail;
    }
    if (began && store_commit(c, err))
        goto fail;
    if (nplain)
        log_warn("secret.tokens_sealed", "tokens=%lld note=%s", (long long)nplain,
                 log_q("plaintext tokens from before the key was set are now encrypted"));
    if (secret_have_key)
        log_info("secret.enabled", "sealed=%d", sealed + (int)nplain);
    rc = 0;
    began = 0; /* committed */
fail:
    if (began)
        store_rollback(c);
    buf_free(&sc.plain_ids);
    if (sc.probe.data)
        OPENSSL_cleanse(sc.probe.data, sc.probe.len);
    buf_free(&sc.probe);
    return rc;
}
