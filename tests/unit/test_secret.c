/* test_secret.c -- tokens encrypted at rest (src/secret.c): the key from
 * the environment or a file, seal/open, what does not open, and the start
 * that seals old plaintext rows and refuses a missing or wrong key. */
#include "unit.h"

#include "calendar.h"
#include "secret.h"
#include "store/db.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY1 "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
#define KEY2 "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100"

static void use_key(const char *hex)
{
    unsetenv(SECRET_KEY_FILE_ENV);
    if (hex)
        setenv(SECRET_KEY_ENV, hex, 1);
    else
        unsetenv(SECRET_KEY_ENV);
    struct cs_err err = {{0}};
    assert_int_equal(secret_init(&err), 0);
}

static void test_no_key_is_plaintext(void **state)
{
    (void)state;
    struct cs_err err = {{0}};
    struct buf b;
    buf_init(&b);
    use_key(NULL);
    assert_int_equal(secret_enabled(), 0);
    assert_int_equal(secret_seal("refresh_token", "1//rt-abc", &b, &err), 0);
    assert_string_equal(b.data, "1//rt-abc");
    buf_reset(&b);
    assert_int_equal(secret_open("refresh_token", "1//rt-abc", &b, &err), 0);
    assert_string_equal(b.data, "1//rt-abc");
    /* a sealed value without the key: refused, saying what to do */
    buf_reset(&b);
    assert_int_equal(secret_open("refresh_token", SECRET_PREFIX "AAAA", &b, &err), -1);
    assert_non_null(strstr(err.msg, SECRET_KEY_ENV));
    buf_free(&b);
}

static void test_seal_open(void **state)
{
    (void)state;
    struct cs_err err = {{0}};
    struct buf a, b, p;
    buf_init(&a);
    buf_init(&b);
    buf_init(&p);
    use_key(KEY1);
    assert_int_equal(secret_enabled(), 1);
    const char *tok = "1//0gLq-refresh-token_with.many/chars+=";
    assert_int_equal(secret_seal("refresh_token", tok, &a, &err), 0);
    assert_int_equal(secret_seal("refresh_token", tok, &b, &err), 0);
    assert_int_equal(strncmp(a.data, SECRET_PREFIX, strlen(SECRET_PREFIX)), 0);
    assert_null(strstr(a.data, "refresh"));     /* not in clear */
    assert_string_not_equal(a.data, b.data);    /* a fresh nonce each time */
    assert_int_equal(secret_open("refresh_token", a.data, &p, &err), 0);
    assert_string_equal(p.data, tok);
    /* the empty token too */
    buf_reset(&a);
    buf_reset(&p);
    assert_int_equal(secret_seal("access_token", "", &a, &err), 0);
    assert_int_equal(secret_open("access_token", a.data, &p, &err), 0);
    assert_string_equal(p.data ? p.data : "", "");
    /* another column (the AAD), another key, altered bytes: no */
    buf_reset(&a);
    assert_int_equal(secret_seal("refresh_token", tok, &a, &err), 0);
    buf_reset(&p);
    assert_int_equal(secret_open("access_token", a.data, &p, &err), -1);
    assert_non_null(strstr(err.msg, "does not open"));
    assert_int_equal(p.len, 0);
    for (size_t i = strlen(SECRET_PREFIX); i < a.len; i += 7) {
        char *t = strdup(a.data);
        t[i] = t[i] == 'A' ? 'B' : 'A';
        buf_reset(&p);
        if (secret_open("refresh_token", t, &p, &err) == 0 && strcmp(p.data, tok) != 0)
            fail_msg("altered byte %zu opened to something else", i);
        free(t);
    }
    const char *junk[] = {SECRET_PREFIX, SECRET_PREFIX "AAAA", SECRET_PREFIX "!!!!!!!!",
                          SECRET_PREFIX "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        buf_reset(&p);
        assert_int_equal(secret_open("refresh_token", junk[i], &p, &err), -1);
    }
    use_key(KEY2);
    buf_reset(&p);
    assert_int_equal(secret_open("refresh_token", a.data, &p, &err), -1);
    buf_free(&a);
    buf_free(&b);
    buf_free(&p);
    use_key(NULL);
}

static void test_key_sources(void **state)
{
    (void)state;
    struct cs_err err = {{0}};
    const char *bad[] = {"abc", KEY1 "0", "zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"};
    unsetenv(SECRET_KEY_FILE_ENV);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv(SECRET_KEY_ENV, bad[i], 1);
        assert_int_equal(secret_init(&err), -1);
        assert_non_null(strstr(err.msg, "64 hex digits"));
        assert_int_equal(secret_enabled(), 0);
    }
    char dir[] = "/tmp/calsync-secret-XXXXXX", path[128];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/key", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(KEY1 "\n", f);
    fclose(f);
    chmod(path, 0600);
    setenv(SECRET_KEY_ENV, KEY1, 1);
    setenv(SECRET_KEY_FILE_ENV, path, 1);
    assert_int_equal(secret_init(&err), -1); /* both: ambiguous */
    unsetenv(SECRET_KEY_ENV);
    assert_int_equal(secret_init(&err), 0);
    assert_int_equal(secret_enabled(), 1);
    setenv(SECRET_KEY_FILE_ENV, dir, 1);      /* a directory */
    assert_int_equal(secret_init(&err), -1);
    setenv(SECRET_KEY_FILE_ENV, "/nonexistent/key", 1);
    assert_int_equal(secret_init(&err), -1);
    unlink(path);
    rmdir(dir);
    use_key(NULL);
}

static const char *stored(struct store_conn *c, int64_t id, int col)
{
    static char out[2][1024];
    struct cs_err err;
    struct db_stmt *st = db_stmt(c, "SELECT refresh_token, access_token"
                                 " FROM credentials WHERE id = ?1", &err);
    assert_non_null(st);
    db_bind_i64(st, 1, id);
    assert_int_equal(db_step(st), DB_ROW);
    const char *v = db_col_text(st, col);
    snprintf(out[col], sizeof out[col], "%s", v ? v : "");
    db_reset(st);
    return out[col];
}

static void test_start_seals_and_checks(void **state)
{
    (void)state;
    struct cs_err err = {{0}};
    char dir[] = "/tmp/calsync-secret-db-XXXXXX", db[128], p[160];
    assert_non_null(mkdtemp(dir));
    snprintf(db, sizeof db, "%s/t.db", dir);
    unsetenv(SECRET_KEY_ENV);
    unsetenv(SECRET_KEY_FILE_ENV);
    assert_int_equal(store_init(db, &err), 0);
    struct store_conn *c = store_conn(&err);
    int64_t id1, id2;
    /* written before there was a key: plaintext */
    assert_int_equal(credential_insert(c, "google", "rt-old", "at-old", 1, &id1, &err), 0);
    assert_string_equal(stored(c, id1, 0), "rt-old");
    /* the key appears: the start seals them, and new rows are sealed */
    use_key(KEY1);
    assert_int_equal(secret_start(c, &err), 0);
    assert_int_equal(strncmp(stored(c, id1, 0), SECRET_PREFIX, 5), 0);
    assert_int_equal(strncmp(stored(c, id1, 1), SECRET_PREFIX, 5), 0);
    assert_int_equal(credential_insert(c, "google", "rt-new", NULL, 0, &id2, &err), 0);
    assert_int_equal(strncmp(stored(c, id2, 0), SECRET_PREFIX, 5), 0);
    struct buf b;
    buf_init(&b);
    assert_int_equal(secret_open("refresh_token", stored(c, id1, 0), &b, &err), 0);
    assert_string_equal(b.data, "rt-old");
    buf_free(&b);
    assert_int_equal(secret_start(c, &err), 0); /* again: nothing to do */
    /* without the key, or with another: the start refuses */
    use_key(NULL);
    assert_int_equal(secret_start(c, &err), -1);
    assert_non_null(strstr(err.msg, SECRET_KEY_ENV));
    use_key(KEY2);
    assert_int_equal(secret_start(c, &err), -1);
    assert_non_null(strstr(err.msg, "does not open"));
    use_key(NULL);
    store_shutdown();
    const char *sfx[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s%s", db, sfx[i]);
        unlink(p);
    }
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_key_is_plaintext),
        cmocka_unit_test(test_seal_open),
        cmocka_unit_test(test_key_sources),
        cmocka_unit_test(test_start_seals_and_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
