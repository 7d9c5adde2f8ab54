"""PostgreSQL for the benchmarks (issue 15): one throwaway cluster per
bench run (tests/pg_cluster.py), a database per measured set-up, and a
query helper cheap enough to poll with.

    import pgdb
    db = pgdb.database("apply_pg3")      # starts the cluster on first use
    db.url                               # postgresql://calsync:...@127.0.0.1:N/apply_pg3
    db.session().execute("SELECT count(*) FROM audit").fetchone()[0]
    db.script(sql)                       # several statements, one psql run
    pgdb.cpu_seconds()                   # utime+stime of the server's processes
    pgdb.stop()                          # bench/run.py calls it at the end

Why a session and not PgCluster.query(): the waits of bench/run.py poll
every 10 ms, and one psql process per poll (fork, exec, connect, SCRAM
authentication) costs a core's worth of milliseconds each on a 2-core
machine that is also running what is measured. A session is one psql
process kept open: a statement goes down its stdin followed by an \\echo
of a marker line, and the rows come back up to the marker.

The cluster runs with PostgreSQL's durability settings, not the test
suite's (tests/pg_cluster.py turns fsync off for speed): fsync and
full_page_writes on, as any server an operator runs, and
synchronous_commit off, which is the guarantee calsync's SQLite store
gives (WAL, synchronous=NORMAL): a commit survives a crash of calsync at
once, and a power cut only once the WAL is flushed (PostgreSQL's WAL
writer does that within 3 x wal_writer_delay = 600 ms), never leaving the
database inconsistent. shared_buffers is PostgreSQL's default.
"""
import os
import re
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import pg_cluster  # noqa: E402

SETTINGS = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "off",
            "shared_buffers": "128MB", "autovacuum": "on"}

_cluster = [None]
_dbs = []
_lock = threading.Lock()


def cluster():
    """The bench's cluster, started on first use (about 2 s)."""
    with _lock:
        if _cluster[0] is None or not _cluster[0].running:
            _cluster[0] = pg_cluster.PgCluster(settings=SETTINGS).start()
        return _cluster[0]


def database(name):
    """A new empty database `name` ([a-z_][a-z0-9_]*) on the cluster."""
    c = cluster()
    db = PgDatabase(c, c.create_database(name))
    _dbs.append(db)
    return db


def cpu_seconds():
    """utime+stime of the cluster's server processes alive now (the
    postmaster's children: one backend per calsync connection, which
    lives as long as the connection)."""
    c = _cluster[0]
    if c is None:
        return 0.0
    tck = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in c.processes():
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass   # exited meanwhile
    return total / tck


def stop():
    """Closes every session and stops the cluster (its directory goes with it)."""
    for db in _dbs:
        db.close()
    del _dbs[:]
    if _cluster[0] is not None:
        _cluster[0].stop()
        _cluster[0] = None


def literal(v):
    """v as an SQL literal (standard_conforming_strings is on, PostgreSQL's
    default since 9.1: inside '...' only the quote is special)."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, int):
        return "(%d)" % v
    if isinstance(v, float):
        return "(%r)" % v
    if isinstance(v, str):
        if "\0" in v:
            raise ValueError("NUL in a string parameter")
        return "'" + v.replace("'", "''") + "'"
    raise TypeError("unsupported parameter type %s" % type(v).__name__)


def bind(sql, args):
    """sql with each ? outside quotes replaced by the literal of the next
    argument (the bench's qmark statements, shared with sqlite3)."""
    out, n, i = [], 0, 0
    while i < len(sql):
        c = sql[i]
        if c in "'\"":
            j = sql.index(c, i + 1)   # the bench never doubles a quote inside one
            out.append(sql[i:j + 1])
            i = j + 1
            continue
        if c == "?":
            if n >= len(args):
                raise ValueError("more ? than the %d arguments: %s" % (len(args), sql))
            out.append(literal(args[n]))
            n += 1
        else:
            out.append(c)
        i += 1
    if n != len(args):
        raise ValueError("%d arguments for %d ?: %s" % (len(args), n, sql))
    return "".join(out)


def _value(s):
    if s == "":
        return None
    if s == "t":
        return True
    if s == "f":
        return False
    if re.match(r"^-?\d+$", s):
        return int(s)
    return s


class _Cursor:
    def __init__(self, rows):
        self.rows = rows

    def fetchone(self):
        return self.rows[0] if self.rows else None

    def fetchall(self):
        return self.rows


class Session:
    """One psql process on one database, statements in autocommit.
    Rows come back as tuples of int, bool, None or str, split on psql's
    unaligned separator: fit for the counts and flags the bench reads,
    not for text that may hold '|' or a newline."""
    END = "--calsync-bench-end--"

    def __init__(self, db):
        self.db = db
        self.err = tempfile.TemporaryFile()
        c = db.cluster
        self.proc = subprocess.Popen(
            [os.path.join(c.bindir, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-d", db.url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
            env=pg_cluster._clean_env(c.dir or "/"))
        self.lock = threading.Lock()

    def execute(self, sql, args=()):
        text = bind(sql, tuple(args)).strip().rstrip(";")
        with self.lock:
            if self.proc.poll() is not None:
                raise pg_cluster.PgError("bench psql session ended: %s" % self._stderr())
            try:
                self.proc.stdin.write(("%s;\n\\echo %s\n" % (text, self.END)).encode())
                self.proc.stdin.flush()
            except BrokenPipeError:
                raise pg_cluster.PgError("bench psql session ended: %s" % self._stderr())
            rows = []
            while True:
                line = self.proc.stdout.readline()
                if not line:   # ON_ERROR_STOP: psql exits at an error
                    self.proc.wait()
                    raise pg_cluster.PgError("%s\n  in: %s" % (self._stderr(), text[:300]))
                line = line.decode().rstrip("\n")
                if line == self.END:
                    return _Cursor(rows)
                if line:
                    rows.append(tuple(_value(x) for x in line.split("|")))

    def _stderr(self):
        self.err.seek(0)
        return self.err.read().decode("utf-8", "replace").strip()[-2000:]

    # sqlite3.Connection's shape for `with svc.db() as con` and con.close():
    # the session is the database's, closed by PgDatabase.close()
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def commit(self):
        pass

    def close(self):
        pass

    def shut(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.err.close()


class PgDatabase:
    def __init__(self, cluster_, url):
        self.cluster, self.url = cluster_, url
        self._session = None

    def session(self):
        """The database's psql session; a new one if the last ended (psql
        exits at an error: ON_ERROR_STOP)."""
        if self._session is not None and self._session.proc.poll() is not None:
            self._session.shut()
            self._session = None
        if self._session is None:
            self._session = Session(self)
        return self._session

    def script(self, sql):
        """Several statements in one psql run, in one transaction (seeding)."""
        return self.cluster.psql(self.url, "BEGIN;\n" + sql + "\nCOMMIT;\n")

    def close(self):
        if self._session is not None:
            self._session.shut()
            self._session = None
