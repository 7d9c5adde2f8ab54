/* pg.h -- the PostgreSQL driver (issue 15), behind the seam of store/db.h.
 *
 * `database = "postgresql://..."` (or "postgres://") selects it; the
 * public store and db_* functions in sqlite.c hand over to the pg_*
 * functions below when store_pg is set (once, by store_claim/store_init,
 * before any connection exists). Only src/store/ includes this header.
 *
 * Concurrency model (docs/internals/postgres.md "What the driver does"):
 * every write transaction, and every write outside one, runs under one
 * transaction-scoped advisory lock, so writers are serialised across all
 * instances the way SQLite serialises them inside one file. Reads never
 * take it. That keeps every read-check-write of the table modules as
 * correct with several instances as with one, at the price of write
 * throughput (one writer at a time cluster-wide).
 */
#ifndef CALSYNC_STORE_PG_H
#define CALSYNC_STORE_PG_H

#include "store/db.h"

/* 1 when the configured database is PostgreSQL. */
extern int store_pg;

/* 1 when `database` names a PostgreSQL URI. */
int pg_is_url(const char *database);

int pg_store_init(const char *url, struct cs_err *err);
void pg_store_shutdown(void);
struct store_conn *pg_store_conn(struct cs_err *err);
int pg_store_begin(struct store_conn *c, struct cs_err *err);
int pg_store_commit(struct store_conn *c, struct cs_err *err);
void pg_store_rollback(struct store_conn *c);
int pg_store_begin_read(struct store_conn *c, struct cs_err *err);
int pg_store_in_tx(struct store_conn *c);
int pg_store_disk_version(struct store_conn *c);
int pg_store_healthy(void);
int pg_schema_version(void);

/* Liveness (pg.c "liveness"): takes, or checks and retakes, this
 * instance's session advisory lock on a key of its own. First call: opens
 * the liveness connection and takes a key; later calls: 0 at once when
 * the session answers, else a new connection and a new key (the old
 * key's claims are then anyone's to release). Logs store.owner_key and
 * store.owner_lost. 0, or -1 with err set (no key held). Call from one
 * thread only. */
int pg_owner_check(struct cs_err *err);
/* The key taken last (0 before the first), for claim names. Any thread. */
int64_t pg_owner_key(void);

struct db_stmt *pg_db_stmt(struct store_conn *c, const char *sql, struct cs_err *err);
void pg_db_bind_i64(struct db_stmt *st, int i, int64_t v);
void pg_db_bind_null(struct db_stmt *st, int i);
void pg_db_bind_textn(struct db_stmt *st, int i, const char *s, size_t n);
int pg_db_step(struct db_stmt *st);
int64_t pg_db_col_i64(struct db_stmt *st, int col);
const char *pg_db_col_text(struct db_stmt *st, int col);
int pg_db_col_null(struct db_stmt *st, int col);
void pg_db_reset(struct db_stmt *st);
int pg_db_exec(struct store_conn *c, struct db_stmt *st, struct cs_err *err);
int pg_db_script(struct store_conn *c, const char *sql, struct cs_err *err);
int64_t pg_db_changes(struct store_conn *c);
int64_t pg_db_last_id(struct store_conn *c);
int pg_db_error(struct store_conn *c, struct cs_err *err);

#endif
