/* pg_sql.c -- SQL text for the PostgreSQL store driver: ?N -> $N.
 *
 * A small lexer, not a parser: it only has to know where SQL proper is,
 * i.e. skip what PostgreSQL's own lexer (scan.l) treats as one token that
 * may contain a '?': string literals (standard ones, where a backslash is
 * an ordinary character since standard_conforming_strings is on by
 * default, and E'' ones, where it escapes), quoted identifiers, comments
 * (block comments nest in PostgreSQL, unlike C and SQLite) and
 * dollar-quoted bodies. Each ?N becomes $N in place: one byte for one, so
 * offsets in PostgreSQL's error messages match the source text.
 */
#include "store/postgres/pg_sql.h"

#include <stdlib.h>
#include <string.h>

/* ASCII only, no locale: identifiers are what PostgreSQL's lexer calls
 * ident_start / ident_cont (bytes >= 0x80 count as letters there too). */
static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int is_ident_start(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static int is_ident_cont(unsigned char c)
{
    return is_ident_start(c) || is_digit(c) || c == '$';
}

/* Offset just past the string literal opening at s[i] ('), or 0 if it is
 * not terminated. `escapes`: an E'' literal, where \x escapes x. */
static size_t skip_literal(const char *s, size_t i, int escapes)
{
    for (size_t j = i + 1; s[j]; j++) {
        if (escapes && s[j] == '\\' && s[j + 1]) {
            j++;
        } else if (s[j] == '\'') {
            if (s[j + 1] != '\'')
                return j + 1;
            j++;                    /* '' is a quote inside the literal */
        }
    }
    return 0;
}

/* Offset just past the quoted identifier opening at s[i] ("), or 0. */
static size_t skip_quoted_ident(const char *s, size_t i)
{
    for (size_t j = i + 1; s[j]; j++) {
        if (s[j] == '"') {
            if (s[j + 1] != '"')
                return j + 1;
            j++;
        }
    }
    return 0;
}

/* Offset just past the (possibly nested) block comment opening at s[i],
 * or 0 if it is not closed. */
static size_t skip_block_comment(const char *s, size_t i)
{
    size_t depth = 0;
    for (size_t j = i; s[j]; j++) {
        if (s[j] == '/' && s[j + 1] == '*') {
            depth++;
            j++;
        } else if (s[j] == '*' && s[j + 1] == '/') {
            j++;
            if (--depth == 0)
                return j + 1;
        }
    }
    return 0;
}

/* At s[i] == '$' (not inside an identifier): if a dollar-quote opener
 * ($$ or $tag$) starts here, stores the offset just past its closing
 * delimiter in *end (0 when it is not closed) and returns 1; returns 0
 * when this '$' opens no dollar quote. */
static int skip_dollar_quote(const char *s, size_t i, size_t *end)
{
    size_t j = i + 1;
    if (s[j] != '$') {
        if (!is_ident_start((unsigned char)s[j]))
            return 0;
        while (is_ident_cont((unsigned char)s[j]) && s[j] != '$')
            j++;
        if (s[j] != '$')
            return 0;
    }
    size_t taglen = j + 1 - i;      /* "$tag$" */
    const char *close = s + j + 1;
    *end = 0;
    while ((close = strchr(close, '$')) != NULL) {
        if (strncmp(close, s + i, taglen) == 0) {
            *end = (size_t)(close - s) + taglen;
            break;
        }
        close++;
    }
    return 1;
}

int pg_sql_rewrite(const char *sql, char **out, int *nparams, struct cs_err *err)
{
    int rc = -1, max = 0;
    char *res = NULL;
    size_t len, i = 0, end;

    *out = NULL;
    *nparams = 0;
    if (!sql) {
        cs_err_set(err, "pg_sql: no statement");
        goto done;
    }
    len = strnlen(sql, PG_SQL_MAX_LEN + 1);
    if (len > PG_SQL_MAX_LEN) {
        cs_err_set(err, "pg_sql: statement longer than %d bytes", PG_SQL_MAX_LEN);
        goto done;
    }
    res = malloc(len + 1);
    if (!res) {
        cs_err_set(err, "pg_sql: out of memory");
        goto done;
    }
    memcpy(res, sql, len + 1);

    while (i < len) {
        unsigned char c = (unsigned char)sql[i];
        unsigned char prev = i ? (unsigned char)sql[i - 1] : 0;
        if (c == '\'') {
            /* E'...' (e'...'): the E must start a word, not end one (name'x') */
            int esc = (prev == 'E' || prev == 'e') &&
                      (i < 2 || !is_ident_cont((unsigned char)sql[i - 2]));
            if (!(end = skip_literal(sql, i, esc))) {
                cs_err_set(err, "pg_sql: offset %zu: unterminated string literal", i);
                goto done;
            }
            i = end;
        } else if (c == '"') {
            if (!(end = skip_quoted_ident(sql, i))) {
                cs_err_set(err, "pg_sql: offset %zu: unterminated quoted identifier", i);
                goto done;
            }
            i = end;
        } else if (c == '-' && sql[i + 1] == '-') {
            const char *nl = strchr(sql + i, '\n');
            i = nl ? (size_t)(nl - sql) + 1 : len;
        } else if (c == '/' && sql[i + 1] == '*') {
            if (!(end = skip_block_comment(sql, i))) {
                cs_err_set(err, "pg_sql: offset %zu: unterminated comment", i);
                goto done;
            }
            i = end;
        } else if (c == '$' && !is_ident_cont(prev)) {
            if (is_digit((unsigned char)sql[i + 1])) {
                cs_err_set(err, "pg_sql: offset %zu: $%c in the input: write ?N", i, sql[i + 1]);
                goto done;
            }
            if (skip_dollar_quote(sql, i, &end)) {
                if (!end) {
                    cs_err_set(err, "pg_sql: offset %zu: unterminated dollar quote", i);
                    goto done;
                }
                i = end;
            } else {
                i++;
            }
        } else if (c == '?') {
            size_t j = i + 1;
            int n = 0;
            if (!is_digit((unsigned char)sql[j])) {
                cs_err_set(err, "pg_sql: offset %zu: bare ? (number it: ?1, ?2, ...)", i);
                goto done;
            }
            /* LIMIT?1 is LIMIT and ?1 to SQLite, but LIMIT$1 is one
             * identifier to PostgreSQL: refuse rather than change meaning */
            if (i && is_ident_cont(prev)) {
                cs_err_set(err, "pg_sql: offset %zu: ? right after a word (add a space)", i);
                goto done;
            }
            if (sql[j] == '0') {
                cs_err_set(err, "pg_sql: offset %zu: parameter numbers start at ?1, "
                           "without leading zeros", i);
                goto done;
            }
            while (is_digit((unsigned char)sql[j])) {
                n = n * 10 + (sql[j] - '0');
                if (n > PG_SQL_MAX_PARAM) {
                    cs_err_set(err, "pg_sql: offset %zu: parameter above ?%d", i,
                               PG_SQL_MAX_PARAM);
                    goto done;
                }
                j++;
            }
            if (is_ident_cont((unsigned char)sql[j])) {
                cs_err_set(err, "pg_sql: offset %zu: ?%d runs into '%c'", i, n, sql[j]);
                goto done;
            }
            res[i] = '$';
            if (n > max)
                max = n;
            i = j;
        } else if (is_ident_start(c) || is_digit(c)) {
            /* a whole word, so a '$' inside it (a$b) is not a dollar quote */
            while (i < len && is_ident_cont((unsigned char)sql[i]))
                i++;
        } else {
            i++;
        }
    }
    *out = res;
    *nparams = max;
    res = NULL;
    rc = 0;
done:
    free(res);
    return rc;
}
