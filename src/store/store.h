/* store.h -- persistence: connections, transactions, health, migrations.
 *
 * The interface the rest of calsync sees; no database-library type appears
 * here. One connection per thread (created on first use, closed when the
 * thread exits). Queries are the business of the store layer (src/store/):
 * the driver seam (store/db.h) is what a backend implements, the table
 * modules beside it own the SQL (docs/internals/store.md).
 *
 * The schema is a list of numbered migrations applied in order, tracked by
 * PRAGMA user_version; `calsync migrate` and `serve` apply them.
 */
#ifndef CALSYNC_STORE_H
#define CALSYNC_STORE_H

#include "util.h"

#include <stdint.h>

struct store_conn;

/* Sets the database path used by every thread, opens it once and applies
 * pending migrations. Returns 0, or -1 with err set. */
int store_init(const char *path, struct cs_err *err);

/* Claims the SQLite database file for this process (DESIGN §2 Instances:
 * one service owns a database): an exclusive flock() on the file, held
 * until store_shutdown(). A second process's claim fails with err naming
 * the file. flock() locks are independent of the POSIX locks SQLite takes,
 * so they neither block SQLite nor stop readers such as `policy replay`.
 * Creates the file (0600) if missing. 0, or -1 with err set. */
int store_claim(const char *path, struct cs_err *err);

/* 1 when the database may be shared by several instances (PostgreSQL,
 * after store_claim or store_init): no process-local state may then stand
 * in for a database record. */
int store_shared(void);

/* Closes the calling thread's connection; other threads close theirs at
 * exit. Call last, after every thread that used the store has stopped. */
void store_shutdown(void);

/* The calling thread's connection, opened on first use. NULL with err set
 * when the database cannot be opened. Owned by the thread. */
struct store_conn *store_conn(struct cs_err *err);

/* Transactions. begin is BEGIN IMMEDIATE (writers queue on the busy
 * timeout instead of failing mid-way). 0 or -1 with err set; rollback
 * never fails from the caller's point of view. */
int store_begin(struct store_conn *c, struct cs_err *err);
int store_commit(struct store_conn *c, struct cs_err *err);
void store_rollback(struct store_conn *c);

/* A read transaction: one consistent snapshot for several reads (in WAL
 * mode it blocks no writer and takes no write lock). End it with
 * store_rollback (nothing to keep) or store_commit. 0 or -1. */
int store_begin_read(struct store_conn *c, struct cs_err *err);

/* 1 inside a transaction (read or write). */
int store_in_tx(struct store_conn *c);

/* The schema version the binary knows, and the one on disk. */
int store_schema_version(void);
int store_disk_version(struct store_conn *c);

/* 1 when a trivial query succeeds and writes work (for /healthz): while
 * writes are failing (a full disk, a read-only database), each call tries
 * one probe write, and 0 until one succeeds. */
int store_healthy(void);

/* 1 while writes are failing (the last write failed with SQLITE_FULL,
 * READONLY, IOERR or CANTOPEN and none has reached the disk since); no I/O.
 * store_healthy() is what notices that they work again. */
int store_writes_failing(void);

#endif
