/* db.h -- the driver seam: a neutral prepared-statement API.
 *
 * What a storage backend implements (src/store/sqlite.c today; a libpq
 * driver for the PostgreSQL issue is a new file with these functions).
 * SQL text is a string literal whose address keys a per-connection cache
 * of prepared statements: every query is prepared once per connection and
 * bound, never built from strings. Placeholders are `?N` (1-based), which
 * a PostgreSQL driver rewrites to `$N` once, at prepare time.
 *
 * Only the store layer (src/store/) is meant to include this header.
 */
#ifndef CALSYNC_STORE_DB_H
#define CALSYNC_STORE_DB_H

#include "store/store.h"
#include "util.h"

#include <stddef.h>
#include <stdint.h>

struct db_stmt; /* owned by its connection's cache: never freed by callers */

/* db_step results */
#define DB_ROW 1
#define DB_DONE 0
#define DB_ERROR (-1)

/* A reset, unbound statement for `sql` (a string literal: its address is
 * the cache key). NULL with err set on error. */
struct db_stmt *db_stmt(struct store_conn *c, const char *sql, struct cs_err *err);

/* Binds parameter i (1-based). Text is borrowed until the next reset:
 * the caller keeps it alive while the statement runs; NULL binds NULL.
 * _copy takes a copy (for a buffer that dies before the step). */
void db_bind_i64(struct db_stmt *st, int i, int64_t v);
void db_bind_null(struct db_stmt *st, int i);
void db_bind_text(struct db_stmt *st, int i, const char *s);
void db_bind_textn(struct db_stmt *st, int i, const char *s, size_t n);
void db_bind_text_copy(struct db_stmt *st, int i, const char *s);

/* Steps a read: DB_ROW, DB_DONE or DB_ERROR (db_error() then names it).
 * Writes go through db_exec, which keeps the write lock and the health
 * mark right. */
int db_step(struct db_stmt *st);

/* Columns of the current row (0-based). Text is valid until the next
 * step or reset; NULL for SQL NULL. */
int64_t db_col_i64(struct db_stmt *st, int col);
int db_col_int(struct db_stmt *st, int col);
const char *db_col_text(struct db_stmt *st, int col);
int db_col_null(struct db_stmt *st, int col);

/* Ends a read early (or after DB_DONE): releases the statement's read
 * snapshot. */
void db_reset(struct db_stmt *st);

/* Runs a statement that returns no rows (after binding) and resets it;
 * a write outside a transaction queues on the process's write lock.
 * 0 or -1 with err set. */
int db_exec(struct store_conn *c, struct db_stmt *st, struct cs_err *err);

/* Steps a read expected to give at most one row, copies its first n
 * integer columns into out, and resets st: 1 a row, 0 none, -1 error
 * (err set). */
int db_row_i64(struct store_conn *c, struct db_stmt *st, int64_t *out, int n,
               struct cs_err *err);

/* Runs fixed SQL text with no parameters and no result rows (several
 * statements allowed: scratch tables of a sync run). 0 or -1. */
int db_script(struct store_conn *c, const char *sql, struct cs_err *err);

/* Rows changed by the last write of c; the id the last insert of c made. */
int64_t db_changes(struct store_conn *c);
int64_t db_last_id(struct store_conn *c);

/* 1 inside BEGIN ... COMMIT. */
int db_in_tx(struct store_conn *c);

/* Sets err to "database: <driver message>" for c; returns -1. */
int db_error(struct store_conn *c, struct cs_err *err);

/* Ends a cursor page: `rc` is the last db_step() result (DB_ROW means a
 * further row exists), `last` the cursor of the last row written. Resets
 * st and appends `],"next_cursor":"<last>"}` or `...:null}` to out. 0, or
 * -1 (err set) when rc is an error. */
int db_page_end(struct store_conn *c, struct db_stmt *st, int rc, int64_t last,
                struct buf *out, struct cs_err *err);

/* 1 when the database is PostgreSQL (store/postgres/pg.h): for the few
 * statements whose SQL must differ, kept side by side in their owner
 * module. Everything else is written once, in SQL both accept. */
int db_postgres(void);

#endif
