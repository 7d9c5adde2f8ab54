/* pg_sql -- SQL text for the PostgreSQL store driver (issue 15).
 *
 * calsync's statements number their parameters SQLite's way, ?1 ... ?N,
 * and bind them by number; libpq wants $1 ... $N. The driver rewrites each
 * statement once, when it prepares it, so the SQL the subsystems share is
 * written once (docs/internals/postgres.md, "Placeholders").
 *
 * No libpq here: this is text only, so it is unit-tested without a server
 * and built on machines without libpq-dev. */
#ifndef CALSYNC_PG_SQL_H
#define CALSYNC_PG_SQL_H

#include <stddef.h>

#include "util.h"

/* Longest statement accepted, in bytes (calsync's longest is a few KiB). */
#define PG_SQL_MAX_LEN 65536
/* Highest parameter number accepted (?999). */
#define PG_SQL_MAX_PARAM 999

/* Rewrites `sql`, in which parameters are written ?1 ... ?N, into the same
 * statement with $1 ... $N. Only placeholders in SQL proper are rewritten:
 * a ? inside a string literal ('...', E'...' with backslash escapes), a
 * quoted identifier ("..."), a comment (-- and nested slash-star) or a
 * dollar-quoted body ($$...$$, $tag$...$tag$) is copied as is. Errors,
 * never guesses: a bare ? (SQLite's "next parameter"; also PostgreSQL's
 * jsonb operators, which calsync's SQL must then write as functions), ?0,
 * a leading zero, a number above PG_SQL_MAX_PARAM, digits running into an
 * identifier (?1abc), a ? right after a word (LIMIT?1 would become the
 * identifier LIMIT$1), a $1 in the input (mixed styles), an unterminated
 * literal, identifier, comment or dollar quote, and input longer than
 * PG_SQL_MAX_LEN.
 *
 * On success returns 0, sets *out to a newly allocated NUL-terminated
 * string exactly as long as `sql` (each ? becomes one $), owned by the
 * caller (free()), and *nparams to the highest parameter number used (0
 * when none): the parameter count to give PQprepare. On error returns -1
 * with err naming the byte offset, and sets *out to NULL. */
int pg_sql_rewrite(const char *sql, char **out, int *nparams, struct cs_err *err);

#endif
