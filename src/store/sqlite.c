/* sqlite.c -- the SQLite driver: connections, statement cache, the driver
 * seam of store/db.h, transactions, health and schema migrations. The only
 * file that includes sqlite3.h.
 *
 * Durability: WAL with synchronous=NORMAL. A committed transaction survives
 * a process crash (kill -9), which is what the exactly-once guarantee is
 * about; only an OS crash or power loss can drop the last commits, and then
 * Google's sync token (stored in the same transaction) rolls back with
 * them, so the changes are read again rather than lost.
 */
#include "store/db.h"
#include "store/postgres/pg.h"
#include "store/queue.h"
#include "store/store.h"

#include "log.h"
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define STMT_CACHE 128

struct store_conn {
    sqlite3 *db;
    int writing;           /* holds store_write_mu (between BEGIN and COMMIT) */
    int durable_changes;   /* sqlite3_total_changes() when last out of a tx */
    struct {
        const char *sql;
        sqlite3_stmt *st;
    } cache[STMT_CACHE];
};

static char *store_path;
static int store_claim_fd = -1; /* flock()ed database file, see store_claim */
/* SQLite has one writer per database; the threads of this process queue for
 * it here (a futex hand-off) instead of in SQLite's busy handler, which
 * sleeps 1, 2, 5, 10 ... ms between retries. */
static pthread_mutex_t store_write_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t store_key;
static pthread_once_t store_once = PTHREAD_ONCE_INIT;

/* ------------------------------------------------------------- migrations
 * Append only: never edit a migration that has shipped; add a new one. */
static const char *const migrations[] = {
    /* 1: the whole schema of DESIGN §6 */
    "CREATE TABLE credentials ("
    "  id INTEGER PRIMARY KEY,"
    "  provider TEXT NOT NULL,"
    "  refresh_token TEXT NOT NULL,"
    "  access_token TEXT,"
    "  expires_at INTEGER,"                 /* ms */
    "  state TEXT NOT NULL DEFAULT 'active'," /* active | revoked */
    "  created_at INTEGER NOT NULL"
    ");"
    "CREATE TABLE calendars ("
    "  id INTEGER PRIMARY KEY,"
    "  credential_id INTEGER NOT NULL REFERENCES credentials(id),"
    "  external_id TEXT NOT NULL,"
    "  policy TEXT NOT NULL DEFAULT 'default',"
    "  settings TEXT NOT NULL DEFAULT '{}',"
    "  state TEXT NOT NULL DEFAULT 'syncing',"
    "  state_reason TEXT,"
    "  sync_token TEXT,"
    "  last_synced_at INTEGER,"
    "  dirty INTEGER NOT NULL DEFAULT 0,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL,"
    "  UNIQUE (credential_id, external_id)"
    ");"
    "CREATE TABLE channels ("
    "  id TEXT PRIMARY KEY,"                /* channel id sent to Google */
    "  calendar_id INTEGER NOT NULL REFERENCES calendars(id),"
    "  resource_id TEXT,"
    "  token TEXT NOT NULL,"
    "  expiration INTEGER,"                 /* ms, as Google returned */
    "  state TEXT NOT NULL DEFAULT 'opening'," /* opening|live|stopped|expired */
    "  created_at INTEGER NOT NULL,"
    "  stopped_at INTEGER"
    ");"
    "CREATE INDEX channels_calendar ON channels(calendar_id, state);"
    "CREATE TABLE notifications ("
    "  id INTEGER PRIMARY KEY,"
    "  channel_id TEXT NOT NULL,"
    "  message_number INTEGER,"
    "  resource_state TEXT,"
    "  received_at INTEGER NOT NULL"
    ");"
    "CREATE TABLE events ("
    "  calendar_id INTEGER NOT NULL REFERENCES calendars(id),"
    "  id TEXT NOT NULL,"
    "  etag TEXT,"
    "  status TEXT NOT NULL,"
    "  start_ms INTEGER,"
    "  end_ms INTEGER,"
    "  all_day INTEGER NOT NULL DEFAULT 0,"
    "  series_id TEXT,"
    "  original_start_ms INTEGER,"
    "  updated TEXT,"
    "  title TEXT,"
    "  booking_tag TEXT,"                   /* calsync_booking_uid */
    "  PRIMARY KEY (calendar_id, id)"
    ") WITHOUT ROWID;"
    "CREATE INDEX events_series ON events(calendar_id, series_id, original_start_ms);"
    "CREATE TABLE bookings ("
    "  seq INTEGER PRIMARY KEY,"            /* cursor order */
    "  uid TEXT NOT NULL UNIQUE,"
    "  calendar_id INTEGER NOT NULL REFERENCES calendars(id),"
    "  title TEXT NOT NULL,"
    "  start_ms INTEGER NOT NULL,"
    "  end_ms INTEGER NOT NULL,"
    "  status TEXT NOT NULL DEFAULT 'accepted'," /* accepted | cancelled */
    "  needs_review INTEGER NOT NULL DEFAULT 0,"
    "  event_id TEXT,"
    "  original_start_ms INTEGER,"
    "  cancelled_by TEXT,"
    "  cancel_reason TEXT,"
    "  etag TEXT,"                          /* of calsync's last write */
    "  write_state TEXT NOT NULL DEFAULT 'none'," /* none|pending|failed */
    "  write_error TEXT,"
    "  created_at INTEGER NOT NULL,"
    "  updated_at INTEGER NOT NULL"
    ");"
    "CREATE INDEX bookings_calendar ON bookings(calendar_id, status, seq);"
    "CREATE TABLE booking_refs ("           /* event -> booking matching */
    "  calendar_id INTEGER NOT NULL,"
    "  event_id TEXT NOT NULL,"
    "  original_start_ms INTEGER NOT NULL DEFAULT -1," /* -1: whole event */
    "  booking_uid TEXT NOT NULL REFERENCES bookings(uid),"
    "  PRIMARY KEY (calendar_id, event_id, original_start_ms, booking_uid)"
    ") WITHOUT ROWID;"
    "CREATE INDEX booking_refs_uid ON booking_refs(booking_uid);"
    "CREATE TABLE audit ("
    "  id INTEGER PRIMARY KEY,"
    "  booking_uid TEXT NOT NULL,"
    "  at INTEGER NOT NULL,"
    "  source TEXT NOT NULL,"
    "  change TEXT NOT NULL,"
    "  action TEXT NOT NULL,"
    "  reason TEXT,"
    "  policy TEXT,"
    "  policy_version TEXT,"
    "  before TEXT,"
    "  after TEXT,"
    "  dedupe_key TEXT UNIQUE"              /* calendar/event/etag: once only */
    ");"
    "CREATE INDEX audit_booking ON audit(booking_uid, id);"
    "CREATE TABLE outbox ("
    "  id INTEGER PRIMARY KEY,"
    "  delivery_id TEXT NOT NULL UNIQUE,"
    "  subscriber TEXT NOT NULL,"           /* url */
    "  booking_uid TEXT,"                   /* ordering key; NULL: calendar */
    "  trigger TEXT NOT NULL,"
    "  body TEXT NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'pending'," /* pending | delivered */
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_at INTEGER NOT NULL,"
    "  last_status INTEGER,"
    "  created_at INTEGER NOT NULL,"
    "  delivered_at INTEGER"
    ");"
    "CREATE INDEX outbox_pending ON outbox(state, next_at);"
    "CREATE TABLE jobs ("
    "  id INTEGER PRIMARY KEY,"
    "  kind TEXT NOT NULL,"                 /* insert | patch | delete */
    "  booking_uid TEXT NOT NULL,"
    "  calendar_id INTEGER NOT NULL,"
    "  payload TEXT,"
    "  state TEXT NOT NULL DEFAULT 'pending'," /* pending|done|failed */
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  next_at INTEGER NOT NULL,"
    "  last_error TEXT,"
    "  created_at INTEGER NOT NULL"
    ");"
    "CREATE INDEX jobs_pending ON jobs(state, next_at);",
    /* 2: the outbox's per-booking ordering check (outbox.c load_due) is an
     *    index search, not a scan of every pending row: O(pending^2) before,
     *    measured by bench/ (docs/performance.md) */
    "CREATE INDEX outbox_booking_pending ON outbox(booking_uid, state, id);",
    /* 3: a one-row table /healthz writes to while writes are failing, to
     *    notice that space (or write access) came back */
    "CREATE TABLE health_probe (id INTEGER PRIMARY KEY, at INTEGER NOT NULL);",
    /* 4: the intake finds a channel it does not know by the resource it
     *    watches (the push's resource id), to stop it (intake.c) */
    "CREATE INDEX channels_resource ON channels(resource_id);",
    /* 5: an event's `created`, which Google copies to the new series of a
     *    "this and following" split: how sync.c finds the successor of a
     *    series whose new id has no `_R` link (docs/internals/apply.md) */
    "ALTER TABLE events ADD COLUMN created TEXT;",
    /* 6: the outbox's due rows in id order. load_due asks for the first
     *    OUTBOX_BATCH pending rows by id; with only (state, next_at) SQLite
     *    read every pending row and sorted them, once per batch: O(pending)
     *    a batch, seconds of CPU to drain 10,000 webhooks. Since syncs
     *    commit in short batches (docs/internals/sync.md "Decide, then
     *    apply") that drain runs while the sync does, on the same cores. */
    "CREATE INDEX outbox_pending_id ON outbox(state, id);",
    /* 7: claims on the durable queue (store/queue.c): who holds an item
     *    and until when; a lease that expires frees it for another
     *    claimer (a second instance, the next issue) */
    "ALTER TABLE jobs ADD COLUMN claimed_by TEXT;"
    "ALTER TABLE jobs ADD COLUMN claimed_until INTEGER;"
    "ALTER TABLE outbox ADD COLUMN claimed_by TEXT;"
    "ALTER TABLE outbox ADD COLUMN claimed_until INTEGER;",
    /* 8: issue 16 (the booking-app API): the change a flag held back
     *    (a booking's `proposed`, what POST .../resolve applies), a
     *    calendar's shadow policy (PATCH /v1/calendars; issue 18 decides
     *    with it), and the calendar an audit entry was decided for, so
     *    GET /v1/decisions filters by calendar even after a booking moved */
    "ALTER TABLE bookings ADD COLUMN proposed_kind TEXT;"
    "ALTER TABLE bookings ADD COLUMN proposed_start_ms INTEGER;"
    "ALTER TABLE bookings ADD COLUMN proposed_end_ms INTEGER;"
    "ALTER TABLE bookings ADD COLUMN proposed_title TEXT;"
    "ALTER TABLE calendars ADD COLUMN shadow_policy TEXT;"
    "ALTER TABLE audit ADD COLUMN calendar_id INTEGER;"
    /*    and the booking's own event fields: description, location, the
     *    IANA zone its event is written in, attendees (API form JSON) */
    "ALTER TABLE bookings ADD COLUMN description TEXT;"
    "ALTER TABLE bookings ADD COLUMN location TEXT;"
    "ALTER TABLE bookings ADD COLUMN time_zone TEXT;"
    "ALTER TABLE bookings ADD COLUMN attendees TEXT;",
    /* 9: replayable decisions (DESIGN §2): each policy decision's complete
     *    inputs beside its audit entry, the shadow's decision, and every
     *    policy source that decided, by version (store/decisions.c) */
    "CREATE TABLE decision_inputs ("
    "  audit_id INTEGER PRIMARY KEY REFERENCES audit(id),"
    "  calendar_id INTEGER NOT NULL,"
    "  inputs TEXT NOT NULL,"               /* `policy test` CHANGE.json shape */
    "  can_reschedule INTEGER NOT NULL,"    /* what apply.c's check saw */
    "  can_update INTEGER NOT NULL,"
    "  shadow TEXT"                         /* {"policy","policy_version","action","reason"} */
    ");"
    "CREATE INDEX decision_inputs_calendar ON decision_inputs(calendar_id, audit_id);"
    "CREATE TABLE policy_sources ("
    "  name TEXT NOT NULL,"
    "  version TEXT NOT NULL,"
    "  source TEXT NOT NULL,"
    "  first_at INTEGER NOT NULL,"          /* ms: its first recorded decision */
    "  PRIMARY KEY (name, version)"
    ") WITHOUT ROWID;",
    /* 10: retention (src/retention.c): the old finished rows of each pruned
     * table are found by an index range, not by a scan of the table */
    "CREATE INDEX notifications_received ON notifications(received_at);"
    "CREATE INDEX outbox_delivered ON outbox(state, delivered_at);"
    "CREATE INDEX jobs_finished ON jobs(state, created_at);"
    "CREATE INDEX audit_at ON audit(at);",
    /* 11: the attendees' responses calsync last saw of an event (JSON,
     *    provider_event.attendees), so a change of a response alone is
     *    told apart: kind `response`, on_response (issue 19) */
    "ALTER TABLE events ADD COLUMN attendees TEXT;",
    /* 12: a booking's conference: what the app asked for ("meet") and the
     *    link Google made (issue 19) */
    "ALTER TABLE bookings ADD COLUMN conference TEXT;"
    "ALTER TABLE bookings ADD COLUMN conference_url TEXT;",
};

#define N_MIGRATIONS ((int)(sizeof migrations / sizeof migrations[0]))

int store_schema_version(void)
{
    if (store_pg)
        return pg_schema_version();
    return N_MIGRATIONS;
}

/* --------------------------------------------------------- connections */

static void conn_close(void *p)
{
    struct store_conn *c = p;
    if (!c)
        return;
    for (int i = 0; i < STMT_CACHE; i++)
        if (c->cache[i].st)
            sqlite3_finalize(c->cache[i].st);
    sqlite3_close_v2(c->db);
    free(c);
}

static void key_init(void)
{
    /* Before the first connection: SQLite's memory statistics take one
     * process-wide mutex on every allocation, which every connection (one
     * per thread) then contends for; calsync reads none of them. Fails
     * harmlessly (SQLITE_MISUSE) if SQLite was initialised already. */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    pthread_key_create(&store_key, conn_close);
}

static int exec_sql(sqlite3 *db, const char *sql, struct cs_err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        cs_err_set(err, "database: %s", msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static struct store_conn *conn_open(struct cs_err *err)
{
    struct store_conn *c = calloc(1, sizeof *c);
    if (!c) {
        cs_err_set(err, "out of memory");
        return NULL;
    }
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    if (sqlite3_open_v2(store_path, &c->db, flags, NULL) != SQLITE_OK) {
        cs_err_set(err, "database %s: %s", store_path,
                   c->db ? sqlite3_errmsg(c->db) : "cannot open");
        goto fail;
    }
    sqlite3_busy_timeout(c->db, 10000);
    sqlite3_extended_result_codes(c->db, 1);
    if (exec_sql(c->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                        "PRAGMA foreign_keys=ON;", err))
        goto fail;
    return c;
fail:
    sqlite3_close_v2(c->db);
    free(c);
    return NULL;
}

struct store_conn *store_conn(struct cs_err *err)
{
    if (store_pg)
        return pg_store_conn(err);
    pthread_once(&store_once, key_init);
    struct store_conn *c = pthread_getspecific(store_key);
    if (c)
        return c;
    if (!store_path) {
        cs_err_set(err, "store not initialised");
        return NULL;
    }
    c = conn_open(err);
    if (c)
        pthread_setspecific(store_key, c);
    return c;
}

/* The driver's statement is SQLite's: struct db_stmt is never defined,
 * only converted, so the seam costs no allocation or indirection. */
#define ST(s) ((sqlite3_stmt *)(s))

static sqlite3_stmt *store_stmt(struct store_conn *c, const char *sql,
                                struct cs_err *err)
{
    size_t h = ((uintptr_t)sql >> 3) % STMT_CACHE;
    for (size_t i = 0; i < STMT_CACHE; i++) {
        size_t k = (h + i) % STMT_CACHE;
        if (c->cache[k].sql == sql) {
            sqlite3_reset(c->cache[k].st);
            sqlite3_clear_bindings(c->cache[k].st);
            return c->cache[k].st;
        }
        if (!c->cache[k].sql) {
            sqlite3_stmt *st;
            if (sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT,
                                   &st, NULL) != SQLITE_OK) {
                cs_err_set(err, "database: prepare: %s", sqlite3_errmsg(c->db));
                return NULL;
            }
            c->cache[k].sql = sql;
            c->cache[k].st = st;
            return st;
        }
    }
    cs_err_set(err, "database: statement cache full");
    return NULL;
}

/* Set while writes fail for a reason outside calsync (disk full, database
 * read-only, I/O error): /healthz reports unhealthy until a write succeeds. */
static atomic_int store_write_failing;

/* Records what the result `rc` of a write (a data-changing statement, BEGIN
 * IMMEDIATE or COMMIT) says about the disk. A failure marks writes failing.
 * Only a write that reached the disk clears it: a data-changing statement
 * that ended a transaction (autocommit, or the COMMIT) having changed rows.
 * A statement inside BEGIN ... COMMIT proves nothing: in WAL mode its pages
 * stay in the page cache and the COMMIT is what writes them, so on a full
 * disk each statement of a transaction succeeds and only the COMMIT fails.
 * Judging by statements (sqlite3_stmt_readonly() is true for COMMIT) kept
 * /healthz at 200 on a really full disk while every API write got 503. */
static void note_write(struct store_conn *c, int rc)
{
    int primary = rc & 0xff;
    if (primary == SQLITE_FULL || primary == SQLITE_READONLY ||
        primary == SQLITE_IOERR || primary == SQLITE_CANTOPEN) {
        if (!atomic_exchange(&store_write_failing, 1))
            log_error("store.writes_failing", "err=%s", log_q(sqlite3_errstr(rc)));
        if (sqlite3_get_autocommit(c->db)) /* whatever it counted is gone */
            c->durable_changes = sqlite3_total_changes(c->db);
        return;
    }
    if (rc != SQLITE_DONE || !sqlite3_get_autocommit(c->db))
        return;
    int changes = sqlite3_total_changes(c->db);
    if (changes != c->durable_changes) {
        c->durable_changes = changes;
        if (atomic_exchange(&store_write_failing, 0))
            log_info("store.writes_recovered", "%s", "");
    }
}

/* Steps st once (a write when `write`), sets err on failure, resets st. */
static int step(struct store_conn *c, sqlite3_stmt *st, int write,
                struct cs_err *err)
{
    int rc = sqlite3_step(st);
    if (write)
        note_write(c, rc);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        cs_err_set(err, "database: %s", sqlite3_errmsg(c->db));
        sqlite3_reset(st);
        return -1;
    }
    sqlite3_reset(st);
    return 0;
}

int store_begin(struct store_conn *c, struct cs_err *err)
{
    if (store_pg)
        return pg_store_begin(c, err);
    static const char sql[] = "BEGIN IMMEDIATE";
    sqlite3_stmt *st = store_stmt(c, sql, err);
    if (!st)
        return -1;
    if (!c->writing) {
        pthread_mutex_lock(&store_write_mu);
        c->writing = 1;
    }
    if (step(c, st, 1, err)) {
        c->writing = 0;
        pthread_mutex_unlock(&store_write_mu);
        return -1;
    }
    return 0;
}

int store_in_tx(struct store_conn *c)
{
    if (store_pg)
        return pg_store_in_tx(c);
    return !sqlite3_get_autocommit(c->db);
}

static void write_done(struct store_conn *c)
{
    if (c->writing && sqlite3_get_autocommit(c->db)) {
        c->writing = 0;
        pthread_mutex_unlock(&store_write_mu);
    }
}

int store_commit(struct store_conn *c, struct cs_err *err)
{
    if (store_pg)
        return pg_store_commit(c, err);
    static const char sql[] = "COMMIT";
    sqlite3_stmt *st = store_stmt(c, sql, err);
    if (!st || step(c, st, 1, err)) {
        store_rollback(c);
        return -1;
    }
    write_done(c);
    return 0;
}

void store_rollback(struct store_conn *c)
{
    if (store_pg) {
        pg_store_rollback(c);
        return;
    }
    if (!sqlite3_get_autocommit(c->db))
        sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    /* the rolled-back changes never reached the disk */
    c->durable_changes = sqlite3_total_changes(c->db);
    write_done(c);
}

static int store_exec(struct store_conn *c, sqlite3_stmt *st, struct cs_err *err)
{
    int write = !sqlite3_stmt_readonly(st);
    if (!write || c->writing)
        return step(c, st, write, err);
    /* A write outside BEGIN ... COMMIT is a transaction of its own: it
     * queues here with the others. Taking SQLite's lock without the mutex
     * made it collide with a thread that holds the mutex and is about to
     * BEGIN IMMEDIATE, and whichever lost slept in SQLite's busy handler
     * (1, 2, 5, 10 ... ms): with syncs committing every few milliseconds
     * (docs/internals/sync.md "Decide, then apply") the outbox's delivery
     * records alone cost the sync most of its time. */
    pthread_mutex_lock(&store_write_mu);
    int rc = step(c, st, 1, err);
    pthread_mutex_unlock(&store_write_mu);
    return rc;
}

int store_begin_read(struct store_conn *c, struct cs_err *err)
{
    if (store_pg)
        return pg_store_begin_read(c, err);
    static const char sql[] = "BEGIN DEFERRED";
    sqlite3_stmt *st = store_stmt(c, sql, err);
    return st ? store_exec(c, st, err) : -1;
}

int store_disk_version(struct store_conn *c)
{
    if (store_pg)
        return pg_store_disk_version(c);
    static const char sql[] = "PRAGMA user_version";
    sqlite3_stmt *st = store_stmt(c, sql, NULL);
    int v = -1;
    if (st && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    if (st)
        sqlite3_reset(st);
    return v;
}

static int migrate(struct store_conn *c, struct cs_err *err)
{
    int have = store_disk_version(c);
    if (have < 0)
        return cs_err_set(err, "database: cannot read user_version: %s",
                          sqlite3_errmsg(c->db));
    if (have > N_MIGRATIONS)
        return cs_err_set(err, "database schema version %d is newer than this "
                          "calsync knows (%d); refusing to run", have, N_MIGRATIONS);
    for (int v = have; v < N_MIGRATIONS; v++) {
        char pragma[64];
        if (exec_sql(c->db, "BEGIN IMMEDIATE", err))
            return -1;
        snprintf(pragma, sizeof pragma, "PRAGMA user_version=%d", v + 1);
        if (exec_sql(c->db, migrations[v], err) || exec_sql(c->db, pragma, err)) {
            exec_sql(c->db, "ROLLBACK", NULL);
            return -1;
        }
        if (exec_sql(c->db, "COMMIT", err))
            return -1;
        log_info("store.migrated", "version=%d", v + 1);
    }
    return 0;
}

/* Makes `path` mode 0600 if it is a regular file with more: 1 when it was
 * tightened, 0 when nothing was to do or it does not exist, -1 when it
 * could not be (logged). By path, never through a descriptor: closing any
 * descriptor of the database or its -shm drops every POSIX lock this
 * process holds on it, SQLite's included (see store_shutdown). */
static int tighten(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode) || !(st.st_mode & 077))
        return 0;
    if (chmod(path, 0600) == 0) {
        log_warn("store.mode_tightened", "file=%s mode_was=%04o mode=0600", log_q(path),
                 (unsigned)(st.st_mode & 07777));
        return 1;
    }
    log_error("store.mode_not_tightened", "file=%s mode=%04o err=%s", log_q(path),
              (unsigned)(st.st_mode & 07777), log_q(strerror(errno)));
    return -1;
}

/* The database holds refresh and access tokens: it, its WAL and its
 * shared-memory file are 0600 whatever the umask, and those an older
 * version left readable (0644 under umask 022) are tightened. The main
 * file is created 0600 by store_claim (serve, migrate) or here when it is
 * missing (O_EXCL: no connection can hold a lock on a file just made);
 * SQLite creates -wal, -shm and -journal later, lazily, with the main
 * file's permissions (its unix VFS fchmods them to match), so they
 * follow. In-memory and URI names are left to SQLite. */
static void secure_files(const char *path)
{
    static const char *const side[] = {"-wal", "-shm", "-journal"};
    if (!*path || strcmp(path, ":memory:") == 0 || strncmp(path, "file:", 5) == 0 ||
        strstr(path, "://"))
        return;
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOCTTY | O_CLOEXEC, 0600);
    if (fd >= 0)
        close(fd);
    tighten(path);
    for (size_t i = 0; i < sizeof side / sizeof side[0]; i++) {
        char p[4096];
        if ((size_t)snprintf(p, sizeof p, "%s%s", path, side[i]) < sizeof p)
            tighten(p);
    }
}

int store_init(const char *path, struct cs_err *err)
{
    store_pg = pg_is_url(path);
    if (store_pg)
        return pg_store_init(path, err);
    free(store_path);
    store_path = strdup(path);
    if (!store_path)
        return cs_err_set(err, "out of memory");
    secure_files(store_path);
    if (secret_init(err))
        return -1;
    struct store_conn *c = store_conn(err);
    if (!c)
        return -1;
    /* tokens sealed with a key we do not have must stop the start here,
     * not fail every Google call later */
    if (migrate(c, err) || secret_start(c, err))
        return -1;
    /* A process that owns the database (store_claim: serve, migrate) is
     * its only user, so every claim on the queues is a dead process's:
     * released now rather than after its lease, so a restart carries on
     * at once. Without the claim (tests, tools reading beside a running
     * service) the claims may be live and are left alone. */
    if (store_claim_fd >= 0) {
        int n = queue_release_all(c, err);
        if (n < 0)
            return -1;
        if (n > 0)
            log_info("store.claims_released", "items=%d", n);
    }
    return 0;
}

int store_claim(const char *path, struct cs_err *err)
{
    /* PostgreSQL: any number of instances share the database (pg.h) */
    store_pg = pg_is_url(path);
    if (store_pg)
        return 0;
    if (store_claim_fd >= 0)
        return 0;
    /* O_CREAT: a first start creates the (empty) database file, which
     * SQLite takes as an empty database; 0600 because it holds tokens */
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0)
        return cs_err_set(err, "database %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        if (e == EWOULDBLOCK)
            return cs_err_set(err, "database %s is in use by another calsync "
                              "process (one service owns a SQLite database; "
                              "stop it first)", path);
        return cs_err_set(err, "database %s: lock: %s", path, strerror(e));
    }
    store_claim_fd = fd;
    return 0;
}

void store_shutdown(void)
{
    if (store_pg) {
        pg_store_shutdown();
        return;
    }
    pthread_once(&store_once, key_init);
    struct store_conn *c = pthread_getspecific(store_key);
    if (c) {
        pthread_setspecific(store_key, NULL);
        conn_close(c);
    }
    free(store_path);
    store_path = NULL;
    /* last: closing any descriptor of the file drops this process's POSIX
     * locks on it, SQLite's included, so only once no connection is left */
    if (store_claim_fd >= 0) {
        close(store_claim_fd);
        store_claim_fd = -1;
    }
}

int store_healthy(void)
{
    if (store_pg)
        return pg_store_healthy();
    static const char sql[] = "SELECT count(*) FROM sqlite_master";
    static const char probe_sql[] =
        "INSERT OR REPLACE INTO health_probe (id, at) VALUES (1, ?1)";
    struct store_conn *c = store_conn(NULL);
    if (!c)
        return 0;
    sqlite3_stmt *st = store_stmt(c, sql, NULL);
    if (!st)
        return 0;
    int ok = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_reset(st);
    if (ok && atomic_load(&store_write_failing)) {
        /* writes were failing: try one, which clears the flag on success */
        st = store_stmt(c, probe_sql, NULL);
        if (st) {
            sqlite3_bind_int64(st, 1, time_now_ms());
            store_exec(c, st, NULL);
        }
        ok = !atomic_load(&store_write_failing);
    }
    return ok;
}

int store_writes_failing(void)
{
    return atomic_load(&store_write_failing);
}

/* ------------------------------------------------------ the driver seam */

struct db_stmt *db_stmt(struct store_conn *c, const char *sql, struct cs_err *err)
{
    if (store_pg)
        return pg_db_stmt(c, sql, err);
    return (struct db_stmt *)store_stmt(c, sql, err);
}

void db_bind_i64(struct db_stmt *st, int i, int64_t v)
{
    if (store_pg) {
        pg_db_bind_i64(st, i, v);
        return;
    }
    sqlite3_bind_int64(ST(st), i, v);
}

void db_bind_null(struct db_stmt *st, int i)
{
    if (store_pg) {
        pg_db_bind_null(st, i);
        return;
    }
    sqlite3_bind_null(ST(st), i);
}

void db_bind_text(struct db_stmt *st, int i, const char *s)
{
    if (store_pg) {
        pg_db_bind_textn(st, i, s, s ? strlen(s) : 0);
        return;
    }
    sqlite3_bind_text(ST(st), i, s, -1, SQLITE_STATIC);
}

void db_bind_textn(struct db_stmt *st, int i, const char *s, size_t n)
{
    if (store_pg) {
        pg_db_bind_textn(st, i, s, n);
        return;
    }
    if (n > INT32_MAX) /* SQLite's limit is far below; it then fails the step */
        n = INT32_MAX;
    sqlite3_bind_text(ST(st), i, s, (int)n, SQLITE_STATIC);
}

void db_bind_text_copy(struct db_stmt *st, int i, const char *s)
{
    if (store_pg) {
        pg_db_bind_textn(st, i, s, s ? strlen(s) : 0);
        return;
    }
    sqlite3_bind_text(ST(st), i, s, -1, SQLITE_TRANSIENT);
}

int db_step(struct db_stmt *st)
{
    if (store_pg)
        return pg_db_step(st);
    int rc = sqlite3_step(ST(st));
    return rc == SQLITE_ROW ? DB_ROW : rc == SQLITE_DONE ? DB_DONE : DB_ERROR;
}

int64_t db_col_i64(struct db_stmt *st, int col)
{
    if (store_pg)
        return pg_db_col_i64(st, col);
    return sqlite3_column_int64(ST(st), col);
}

int db_col_int(struct db_stmt *st, int col)
{
    if (store_pg)
        return (int)pg_db_col_i64(st, col);
    return sqlite3_column_int(ST(st), col);
}

const char *db_col_text(struct db_stmt *st, int col)
{
    if (store_pg)
        return pg_db_col_text(st, col);
    return (const char *)sqlite3_column_text(ST(st), col);
}

int db_col_null(struct db_stmt *st, int col)
{
    if (store_pg)
        return pg_db_col_null(st, col);
    return sqlite3_column_type(ST(st), col) == SQLITE_NULL;
}

void db_reset(struct db_stmt *st)
{
    if (store_pg) {
        pg_db_reset(st);
        return;
    }
    sqlite3_reset(ST(st));
}

int db_exec(struct store_conn *c, struct db_stmt *st, struct cs_err *err)
{
    if (store_pg)
        return pg_db_exec(c, st, err);
    return store_exec(c, ST(st), err);
}

int db_row_i64(struct store_conn *c, struct db_stmt *st, int64_t *out, int n,
               struct cs_err *err)
{
    int s = db_step(st), rc = 0;
    if (s == DB_ROW) {
        for (int i = 0; i < n; i++)
            out[i] = db_col_i64(st, i);
        rc = 1;
    } else if (s != DB_DONE) {
        rc = db_error(c, err);
    }
    db_reset(st);
    return rc;
}

int db_script(struct store_conn *c, const char *sql, struct cs_err *err)
{
    if (store_pg)
        return pg_db_script(c, sql, err);
    return exec_sql(c->db, sql, err);
}

int64_t db_changes(struct store_conn *c)
{
    if (store_pg)
        return pg_db_changes(c);
    return sqlite3_changes(c->db);
}

int64_t db_last_id(struct store_conn *c)
{
    if (store_pg)
        return pg_db_last_id(c);
    return sqlite3_last_insert_rowid(c->db);
}

int db_in_tx(struct store_conn *c)
{
    if (store_pg)
        return pg_store_in_tx(c);
    return !sqlite3_get_autocommit(c->db);
}

int db_error(struct store_conn *c, struct cs_err *err)
{
    if (store_pg)
        return pg_db_error(c, err);
    return cs_err_set(err, "database: %s", sqlite3_errmsg(c->db));
}

int db_page_end(struct store_conn *c, struct db_stmt *st, int rc, int64_t last,
                struct buf *out, struct cs_err *err)
{
    db_reset(st);
    if (rc != DB_ROW && rc != DB_DONE)
        return db_error(c, err);
    if (rc == DB_ROW)
        buf_printf(out, "],\"next_cursor\":\"%lld\"}", (long long)last);
    else
        buf_puts(out, "],\"next_cursor\":null}");
    return 0;
}

int db_postgres(void)
{
    return store_pg;
}

int store_shared(void)
{
    return store_pg;
}
