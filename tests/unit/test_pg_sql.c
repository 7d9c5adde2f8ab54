/* test_pg_sql.c -- the PostgreSQL driver's placeholder rewrite (?N -> $N):
 * what is rewritten, what is copied as is (literals, identifiers,
 * comments, dollar quotes), what is refused, and, over random input, that
 * it never reads past the end, never changes the length and never changes
 * anything but a '?' into a '$'. */
#include "unit.h"

#include "store/postgres/pg_sql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rewrites `in`, expects success with `want` and `want_n` parameters. */
static void ok(const char *in, const char *want, int want_n)
{
    struct cs_err err = {{0}};
    char *out = (char *)"untouched";
    int n = -7;
    if (pg_sql_rewrite(in, &out, &n, &err) != 0)
        fail_msg("refused [%s]: %s", in, err.msg);
    assert_string_equal(out, want);
    assert_int_equal(n, want_n);
    assert_int_equal(strlen(out), strlen(in));
    free(out);
}

/* Expects `in` to be refused with `needle` in the message, and *out NULL. */
static void refused(const char *in, const char *needle)
{
    struct cs_err err = {{0}};
    char *out = (char *)"untouched";
    int n = -7;
    if (pg_sql_rewrite(in, &out, &n, &err) == 0)
        fail_msg("accepted [%s] as [%s]", in, out);
    assert_null(out);
    assert_int_equal(n, 0);
    if (!strstr(err.msg, needle))
        fail_msg("[%s]: message '%s' lacks '%s'", in, err.msg, needle);
}

static void test_rewrites(void **state)
{
    (void)state;
    ok("", "", 0);
    ok("SELECT 1", "SELECT 1", 0);
    ok("SELECT id FROM jobs WHERE calendar_id = ?1 AND booking_uid = ?2",
       "SELECT id FROM jobs WHERE calendar_id = $1 AND booking_uid = $2", 2);
    /* calsync's shapes: reused, out of order, gaps (SQLite binds by number) */
    ok("UPDATE calendars SET dirty = CASE WHEN dirty = ?4 THEN 0 ELSE dirty END"
       " WHERE id = ?1 AND ?4 > 0",
       "UPDATE calendars SET dirty = CASE WHEN dirty = $4 THEN 0 ELSE dirty END"
       " WHERE id = $1 AND $4 > 0", 4);
    ok("VALUES (?10,?2,?999)", "VALUES ($10,$2,$999)", 999);
    ok("x=?1::bigint", "x=$1::bigint", 1);
    ok("(?1)", "($1)", 1);
    ok("?1", "$1", 1);
    ok("a=?12\n", "a=$12\n", 12);
    ok("INSERT INTO t VALUES (?1) ON CONFLICT DO NOTHING RETURNING id",
       "INSERT INTO t VALUES ($1) ON CONFLICT DO NOTHING RETURNING id", 1);
}

static void test_copied_as_is(void **state)
{
    (void)state;
    /* string literals, '' inside, a backslash is ordinary in '' */
    ok("SELECT '?1', 'it''s ?2', ?3", "SELECT '?1', 'it''s ?2', $3", 3);
    ok("SELECT 'a\\', ?1", "SELECT 'a\\', $1", 1);
    /* E'' literals: \' does not end them */
    ok("SELECT E'it\\'s ?1', ?2", "SELECT E'it\\'s ?1', $2", 2);
    ok("SELECT e'\\\\', ?1", "SELECT e'\\\\', $1", 1);
    /* a word ending in e is not an E prefix: name'x' ... (not valid SQL,
     * but the backslash must then count as ordinary) */
    ok("SELECT some'\\', ?1", "SELECT some'\\', $1", 1);
    /* quoted identifiers */
    ok("SELECT \"what?1\", \"a\"\"?\" FROM t WHERE x = ?1",
       "SELECT \"what?1\", \"a\"\"?\" FROM t WHERE x = $1", 1);
    /* comments, nested block comments (PostgreSQL nests them) */
    ok("SELECT ?1 -- why? ?2\n, ?3", "SELECT $1 -- why? ?2\n, $3", 3);
    ok("SELECT 1 -- ?9 at the end", "SELECT 1 -- ?9 at the end", 0);
    ok("/* ? /* ?1 */ ?2 */ ?3", "/* ? /* ?1 */ ?2 */ $3", 3);
    ok("SELECT 4/2, 3-1, ?1", "SELECT 4/2, 3-1, $1", 1);
    /* dollar quotes, with and without a tag, a $ inside a word */
    ok("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 WHERE '?' = ? $$; SELECT ?1",
       "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 WHERE '?' = ? $$; SELECT $1",
       1);
    ok("DO $body$ ?1 $$ ?2 $body$; SELECT ?3", "DO $body$ ?1 $$ ?2 $body$; SELECT $3", 3);
    ok("SELECT a$b, x$1 FROM t WHERE c = ?1", "SELECT a$b, x$1 FROM t WHERE c = $1", 1);
}

static void test_refused(void **state)
{
    (void)state;
    refused(NULL, "no statement");
    refused("SELECT ?", "bare ?");
    refused("SELECT * FROM t WHERE x = ? AND y = ?2", "bare ?");
    refused("SELECT j ? 'key' FROM t", "bare ?");        /* jsonb: use jsonb_exists */
    refused("SELECT ?0", "start at ?1");
    refused("SELECT ?01", "start at ?1");
    refused("SELECT ?1000", "above ?999");
    refused("SELECT ?99999999999999999999", "above ?999");
    refused("SELECT ?1abc", "runs into 'a'");
    refused("SELECT ?1_", "runs into '_'");
    refused("SELECT $1", "write ?N");
    refused("SELECT 1 LIMIT?1", "right after a word");    /* LIMIT$1: an identifier */
    refused("SELECT x$?1", "right after a word");
    refused("SELECT 'abc", "unterminated string");
    refused("SELECT 'it''", "unterminated string");
    refused("SELECT E'abc\\'", "unterminated string");
    refused("SELECT \"abc", "unterminated quoted identifier");
    refused("SELECT /* a /* b */", "unterminated comment");
    refused("SELECT $$ abc", "unterminated dollar quote");
    refused("SELECT $x$ abc $y$", "unterminated dollar quote");
    /* the offset names where the trouble starts */
    refused("SELECT 1, ?", "offset 10");

    char *big = malloc(PG_SQL_MAX_LEN + 2);
    assert_non_null(big);
    memset(big, ' ', PG_SQL_MAX_LEN + 1);
    big[PG_SQL_MAX_LEN + 1] = '\0';
    refused(big, "longer than");
    big[PG_SQL_MAX_LEN] = '\0';            /* exactly the limit: fine */
    ok(big, big, 0);
    free(big);
}

/* Random statements from the characters that matter: whatever the input,
 * no crash (ASan checks the reads), and on success the output has the
 * input's length and differs only where a '?' became a '$'. */
static void test_random_input(void **state)
{
    (void)state;
    static const char alphabet[] = "??$$''\"\"--//**\\\\Ee01239ab_ \n";
    unsigned seed = 12345;
    char in[64];
    int accepted = 0;
    for (int round = 0; round < 200000; round++) {
        size_t n = (size_t)(round % 40);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            in[i] = alphabet[(seed >> 16) % (sizeof alphabet - 1)];
        }
        in[n] = '\0';
        char *out = NULL;
        int np = -1;
        struct cs_err err = {{0}};
        if (pg_sql_rewrite(in, &out, &np, &err) != 0) {
            assert_null(out);
            assert_true(err.msg[0] != '\0');
            continue;
        }
        accepted++;
        assert_int_equal(strlen(out), n);
        assert_in_range(np, 0, PG_SQL_MAX_PARAM);
        for (size_t i = 0; i < n; i++)
            if (out[i] != in[i] && !(in[i] == '?' && out[i] == '$'))
                fail_msg("[%s] -> [%s]: byte %zu changed", in, out, i);
        free(out);
    }
    /* the generator must reach both outcomes, or the loop checks nothing */
    assert_true(accepted > 1000);
    assert_true(accepted < 200000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rewrites),
        cmocka_unit_test(test_copied_as_is),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_random_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
