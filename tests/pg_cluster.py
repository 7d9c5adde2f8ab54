#!/usr/bin/env python3
"""A throwaway PostgreSQL cluster for the tests (issue 15). Python 3
standard library only; the server is Debian's (`postgresql`, installed by
tools/deps.sh).

    from pg_cluster import PgCluster
    with PgCluster() as pg:              # initdb + postgres, ready to use
        url = pg.create_database()       # postgresql://calsync:...@127.0.0.1:N/t_1_...
        pg.psql(url, "SELECT 1")         # runs psql, returns its stdout
        pg.query(url, "SELECT id FROM t WHERE x = ?", (5,))   # [(1,), ...] like sqlite3
        con = pg.connect(url)            # sqlite3.Connection's shape (execute/fetchall)
    # here the server and all its processes are gone, and so is its directory

    python3 tests/pg_cluster.py          # start one, print its URL, serve until
                                         # Ctrl-C or SIGTERM

What it does, and why:

- `initdb` into a fresh temporary directory, then the `postgres` binary
  itself as a child process (not `pg_ctl start`, which daemonizes): the
  harness then owns the postmaster's pid, reads its log and can always
  stop it.
- Tests run as root in CI, and PostgreSQL refuses to run as root. As root,
  initdb and the server run as the `postgres` system user (created by the
  `postgresql-common` package; CALSYNC_PG_USER names another), switched to
  with util-linux's `setpriv` (supplementary groups cleared); the temporary
  directory is chowned to that user first. As any other user they run as
  that user.
- The server listens on 127.0.0.1 on a free port picked at start and on a
  Unix socket in the temporary directory. Picking a port and binding it are
  two steps, so a parallel job can take the port in between: the server
  then exits with "Address already in use" and the start is retried on
  another port (a positive sign, read from the log, not a guess). The
  socket directory is private, so sockets never clash.
- Readiness is positive: `pg_isready` over TCP answers 0 ("accepting
  connections"). The deadline (CALSYNC_PG_START_TIMEOUT, 120 s) only bounds
  a hang; a server that exits during start fails at once with its log.
- Test speed over durability: fsync, synchronous_commit and
  full_page_writes off, initdb --no-sync, autovacuum off, small
  shared_buffers (several clusters run side by side on a 2-core machine).
  max_connections is 300: calsync opens one connection per thread, and a
  test may run several instances on one database.
- Authentication is scram-sha-256 with a random password for TCP and the
  socket: the cluster is reachable by every local user while it runs, and
  a URL with a password exercises libpq's URI parsing as operators use it.
- Stop: SIGINT (fast shutdown: sessions are terminated, the postmaster
  waits for its children and exits); past a bound SIGQUIT (immediate),
  then SIGKILL. Every server process carries the cluster's unique
  `cluster_name` in its process title, so stop() then checks positively,
  through /proc, that none is left, before removing the directory.
- Stop happens on `with` exit (also when the test failed), on stop(), and
  at interpreter exit (atexit) for clusters still running. If the test
  process is killed (SIGKILL, where atexit does not run), the postmaster
  gets SIGQUIT from the kernel (setpriv --pdeathsig) when started from the
  main thread; only the temporary directory is then left behind.

Binaries: /usr/lib/postgresql/<highest version>/bin (Debian's layout), or
CALSYNC_PG_BINDIR. psql and pg_isready are taken from there too, not
/usr/bin's pg_wrapper, which picks a version from the system's clusters.
"""
import atexit
import glob
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

SUPERUSER = "calsync"
START_TIMEOUT = float(os.environ.get("CALSYNC_PG_START_TIMEOUT", "120"))
STOP_TIMEOUT = 60.0
# A database name the helpers accept: lower-case identifiers only, so a
# name never needs quoting and can never inject SQL into CREATE DATABASE.
DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_live = set()          # clusters started and not yet stopped (for atexit)
_live_lock = threading.Lock()
_counter = [0]


class PgError(RuntimeError):
    """A cluster could not be created, started, used or stopped."""


def find_bindir():
    """The directory holding initdb, postgres, pg_isready and psql:
    CALSYNC_PG_BINDIR, or the highest /usr/lib/postgresql/<ver>/bin that
    has them all. Raises PgError naming what to install."""
    need = ("initdb", "postgres", "pg_isready", "psql")
    env = os.environ.get("CALSYNC_PG_BINDIR")
    cands = [env] if env else sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p)], reverse=True)
    for d in cands:
        if all(os.access(os.path.join(d, n), os.X_OK) for n in need):
            return d
    raise PgError("no PostgreSQL server binaries (%s) in %s: run `sh tools/deps.sh` "
                  "(packages postgresql, postgresql-client) or set CALSYNC_PG_BINDIR"
                  % (", ".join(need), env or "/usr/lib/postgresql/*/bin"))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(home):
    """The environment for PostgreSQL's programs: no PG* variable of the
    caller's (PGHOST, PGSSLMODE, PGOPTIONS, ... would change what they do),
    the C locale (English messages, which the port-clash check reads)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", LANG="C", HOME=home)
    return env


def processes_with(marker):
    """Pids of the processes whose command line contains `marker`, from
    /proc (the server's children show it in their process title)."""
    out = []
    mark = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                if mark in f.read():
                    out.append(int(entry))
        except OSError:
            pass    # gone meanwhile, or not ours to read
    return out


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True     # exists, another user's
    return True


def _reap_stale(parent):
    """Removes the directories of clusters whose test process was killed
    (SIGKILL skips every cleanup; the kernel stopped their server, see
    --pdeathsig): calsync-pg-<pid>-* whose <pid> is dead and whose
    postmaster.pid names no live process. A live owner or server keeps
    its directory; a reused pid only delays the removal."""
    for d in glob.glob(os.path.join(parent, "calsync-pg-*-*")):
        m = re.match(r"calsync-pg-(\d+)-", os.path.basename(d))
        if not m or _alive(int(m.group(1))):
            continue
        try:
            with open(os.path.join(d, "data", "postmaster.pid")) as f:
                if _alive(int(f.readline())):
                    continue
        except (OSError, ValueError):
            pass    # no server ever started there, or it is gone
        shutil.rmtree(d, ignore_errors=True)


class PgCluster:
    """One throwaway PostgreSQL cluster. Not started until start() (or
    `with`). Attributes once started: port, host ("127.0.0.1"), socket_dir,
    password, dir (the temporary directory), pid (the postmaster),
    marker (its cluster_name), log_path."""

    def __init__(self, port=None, settings=None):
        """port: a fixed port (a clash is then an error); None picks a free
        one and retries on a clash. settings: extra server settings
        {name: value}, after the test defaults."""
        self.bindir = find_bindir()
        self.fixed_port = port
        self.settings = dict(settings or {})
        self.port = None
        self.host = "127.0.0.1"
        self.proc = None
        self.dir = None
        self.password = None
        self.marker = None
        self._log = None
        self._uid = self._gid = None
        self._db_seq = 0

    # ------------------------------------------------------------ start

    def _as_user(self):
        """argv prefix that runs a server program as the unprivileged user
        when we are root: setpriv, so the uid/gid change is one exec with
        no shell and no PAM session (runuser would open one)."""
        if os.geteuid() != 0:
            return []
        return ["setpriv", "--reuid=%d" % self._uid, "--regid=%d" % self._gid,
                "--clear-groups", "--"]

    def _pick_user(self):
        if os.geteuid() != 0:
            self._uid, self._gid = os.geteuid(), os.getegid()
            return
        import pwd
        name = os.environ.get("CALSYNC_PG_USER", "postgres")
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise PgError("running as root, and PostgreSQL will not: user %r does not "
                          "exist (the postgresql-common package creates `postgres`; "
                          "run `sh tools/deps.sh`, or set CALSYNC_PG_USER)" % name)
        if pw.pw_uid == 0:
            raise PgError("CALSYNC_PG_USER=%s is root; PostgreSQL refuses to run as root" % name)
        self._uid, self._gid = pw.pw_uid, pw.pw_gid

    def _run(self, argv, what, **kw):
        """Runs a program to completion; PgError with its output if it fails."""
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=_clean_env(self.dir),
                           cwd=self.dir, **kw)
        if r.returncode != 0:
            raise PgError("%s failed (exit %d): %s\n%s" % (
                what, r.returncode, " ".join(argv),
                r.stdout.decode("utf-8", "replace")[-4000:]))
        return r.stdout.decode("utf-8", "replace")

    def start(self):
        """initdb, then start the server and wait until it accepts
        connections. Returns self. On failure everything made so far is
        removed and PgError raised."""
        if self.proc is not None:
            raise PgError("cluster already started")
        self._pick_user()
        # under the system temp dir, which the server user must be able to
        # traverse (root's TMPDIR may not be): /tmp is 1777 on Debian
        parent = tempfile.gettempdir()
        if os.geteuid() == 0 and not self._traversable(parent):
            parent = "/tmp"
        _reap_stale(parent)
        # the owner's pid in the name: _reap_stale knows when it is dead
        self.dir = tempfile.mkdtemp(prefix="calsync-pg-%d-" % os.getpid(), dir=parent)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _traversable(path):
        p = os.path.abspath(path)
        while True:
            if not os.stat(p).st_mode & 0o001:
                return False
            if p == "/":
                return True
            p = os.path.dirname(p)

    def _start(self):
        with _live_lock:
            _live.add(self)
            _counter[0] += 1
            n = _counter[0]
        # unique on this machine: our pid, a per-process counter, randomness
        self.marker = "calsync-pg-%d-%d-%s" % (os.getpid(), n, secrets.token_hex(4))
        self.password = secrets.token_hex(16)
        self.socket_dir = os.path.join(self.dir, "sock")
        self.data_dir = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "postgres.log")
        pwfile = os.path.join(self.dir, "pwfile")
        os.mkdir(self.socket_dir, 0o700)
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.password + "\n")
        for p in (self.dir, self.socket_dir, pwfile):
            os.chown(p, self._uid, self._gid)
        os.chmod(self.dir, 0o700)
        self._run(self._as_user() + [
            os.path.join(self.bindir, "initdb"), "-D", self.data_dir,
            "-U", SUPERUSER, "--pwfile", pwfile, "--auth-local=scram-sha-256",
            "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C",
            "--no-sync", "--no-instructions"], "initdb")
        os.unlink(pwfile)
        self._log = open(self.log_path, "ab")
        os.chown(self.log_path, self._uid, self._gid)
        attempts = 1 if self.fixed_port else 20
        for attempt in range(attempts):
            port = self.fixed_port or _free_port()
            offset = self._log.tell()
            if self._launch(port):
                return
            log = self._read_log(offset)
            if self.fixed_port or "Address already in use" not in log:
                raise PgError("postgres did not start on port %d (exit %s); its log:\n%s"
                              % (port, self.proc.returncode, log[-4000:]))
            self.proc = None    # a parallel job took the port: another one
        raise PgError("postgres: %d ports in a row were taken meanwhile" % attempts)

    def _read_log(self, offset):
        self._log.flush()
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")

    def _launch(self, port):
        """Starts the postmaster on `port`; True once it accepts connections,
        False if it exited (the caller reads the log)."""
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": self.socket_dir,
            "cluster_name": self.marker,
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "autovacuum": "off",
            "shared_buffers": "16MB",
            "max_connections": "300",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        settings.update({k: str(v) for k, v in self.settings.items()})
        argv = [os.path.join(self.bindir, "postgres"), "-D", self.data_dir]
        for k, v in settings.items():
            argv += ["-c", "%s=%s" % (k, v)]
        prefix = self._as_user()
        # the kernel stops the server (SIGQUIT: immediate shutdown) if the
        # thread that started it dies without stop(): a killed test run
        # leaves no postmaster. Only from the main thread: the signal
        # follows the parent *thread*, and a worker thread's exit would
        # stop a cluster that is still in use.
        if threading.current_thread() is threading.main_thread():
            prefix = (prefix or ["setpriv", "--"])
            prefix = prefix[:-1] + ["--pdeathsig=SIGQUIT", "--"]
        # its own session: a Ctrl-C at the terminal reaches the test
        # process, which stops the server through stop(), not both at once
        self.proc = subprocess.Popen(prefix + argv, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     env=_clean_env(self.dir), cwd=self.dir,
                                     start_new_session=True)
        self.port = port
        isready = [os.path.join(self.bindir, "pg_isready"), "-q", "-h", self.host,
                   "-p", str(port), "-U", SUPERUSER, "-d", "postgres", "-t", "5"]
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                return False
            # 0: accepting; 1: starting up (rejecting); 2: no answer yet
            rc = subprocess.call(isready, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=_clean_env(self.dir))
            if rc == 0:
                return True
            if rc == 3:
                raise PgError("pg_isready: bad parameters: %s" % " ".join(isready))
            if time.monotonic() > deadline:
                raise PgError("postgres started but did not accept connections within "
                              "%.0f s (CALSYNC_PG_START_TIMEOUT); its log:\n%s"
                              % (START_TIMEOUT, self._read_log(0)[-4000:]))
            time.sleep(0.05)

    # ------------------------------------------------------------ use

    @property
    def running(self):
        """True from a successful start() until stop() (or the server's
        own exit)."""
        return self.proc is not None and self.dir is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def url(self, dbname="postgres"):
        """postgresql:// URL of `dbname` over TCP on the loopback port."""
        self._check_name(dbname)
        return "postgresql://%s:%s@%s:%d/%s" % (SUPERUSER, self.password, self.host,
                                                self.port, dbname)

    def socket_url(self, dbname="postgres"):
        """postgresql:// URL of `dbname` through the Unix socket (libpq
        reads a host that starts with / as the socket directory)."""
        self._check_name(dbname)
        return "postgresql://%s:%s@/%s?host=%s&port=%d" % (
            SUPERUSER, self.password, dbname, self.socket_dir, self.port)

    @staticmethod
    def _check_name(name):
        if not isinstance(name, str) or not DB_NAME.match(name):
            raise ValueError("database name %r: want [a-z_][a-z0-9_]{0,62}" % (name,))

    def psql(self, url, sql, check=True):
        """Runs `sql` (one or more statements) with psql against `url`:
        unaligned, tuples only, stops at the first error. Returns stdout;
        with check=False a (returncode, stdout, stderr) tuple instead of
        raising PgError on failure."""
        argv = [os.path.join(self.bindir, "psql"), "-X", "-q", "-A", "-t",
                "-v", "ON_ERROR_STOP=1", "-d", url]
        r = subprocess.run(argv, input=sql.encode(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=_clean_env(self.dir or "/"))
        out, err = r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")
        if not check:
            return r.returncode, out, err
        if r.returncode != 0:
            raise PgError("psql failed (exit %d): %s" % (r.returncode, err.strip()))
        return out

    def query(self, url, sql, params=()):
        """Runs one statement with sqlite3's qmark parameters (`?`, in
        order) and returns its rows as a list of tuples, as
        sqlite3's fetchall() would: ints, strings, None (JSON types,
        booleans as True/False). A statement that returns no rows (DML
        without RETURNING, DDL) returns []. Values never become SQL text:
        strings go through psql variables (:'p1', quoted by libpq's
        PQescapeLiteral; each travels as one argv entry, so at most 128 KiB),
        numbers are formatted by Python, None is NULL."""
        if isinstance(params, (str, bytes)) or not isinstance(params, (tuple, list)):
            raise TypeError("params: a tuple or list, got %r" % type(params).__name__)
        text, argv_vars = _bind_qmarks(sql, params)
        text = text.strip().rstrip(";")
        returns_rows = re.match(r"(?is)\s*(select|with|values|table)\b", text) or \
            re.search(r"(?i)\breturning\b", text)
        if returns_rows:
            text = ("WITH calsync_q AS (%s) SELECT coalesce(json_agg(row_to_json(calsync_q)),"
                    " '[]') FROM calsync_q" % text)
        argv = [os.path.join(self.bindir, "psql"), "-X", "-q", "-A", "-t",
                "-v", "ON_ERROR_STOP=1", "-d", url] + argv_vars
        r = subprocess.run(argv, input=(text + ";\n").encode(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=_clean_env(self.dir or "/"))
        if r.returncode != 0:
            raise PgError("query failed (exit %d): %s" % (
                r.returncode, r.stderr.decode("utf-8", "replace").strip()))
        if not returns_rows:
            return []
        # object_pairs_hook keeps every column, in order, even two of one name
        return json.loads(r.stdout.decode(), object_pairs_hook=lambda kv: tuple(v for _, v in kv))

    def connect(self, url):
        """A PgConnection on `url`: sqlite3.Connection's shape for tests."""
        return PgConnection(self, url)

    def create_database(self, name=None):
        """Creates an empty database (a fresh unique name if None) and
        returns its postgresql:// URL (TCP)."""
        if self.proc is None:
            raise PgError("cluster not started")
        if name is None:
            self._db_seq += 1
            name = "t_%d_%s" % (self._db_seq, secrets.token_hex(4))
        self._check_name(name)
        self.psql(self.url(), "CREATE DATABASE %s;" % name)
        return self.url(name)

    def drop_database(self, name):
        """Drops `name`, ending its sessions first (WITH (FORCE))."""
        self._check_name(name)
        self.psql(self.url(), "DROP DATABASE IF EXISTS %s WITH (FORCE);" % name)

    def processes(self):
        """Pids of this cluster's server processes still alive."""
        return processes_with(self.marker) if self.marker else []

    # ------------------------------------------------------------ stop

    def stop(self):
        """Stops the server (fast shutdown, then immediate, then SIGKILL),
        checks that none of its processes is left and removes the
        directory. Idempotent; safe after a failed start. Raises PgError
        if a server process survives SIGKILL (never expected)."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self._signal_wait(signal.SIGINT, STOP_TIMEOUT) or \
                    self._signal_wait(signal.SIGQUIT, 15) or \
                    self._signal_wait(signal.SIGKILL, 15)
            # the postmaster waits for its children in fast and immediate
            # shutdown; after a SIGKILL of it, or of a wedged start, some
            # may remain: find them by the cluster's name and end them
            deadline = time.monotonic() + 15
            left = self.processes()
            while left and time.monotonic() < deadline:
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.05)
                left = self.processes()
            if left:
                raise PgError("server processes %s of %s survived SIGKILL" % (left, self.marker))
        finally:
            if self._log:
                self._log.close()
                self._log = None
            if self.dir:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None
            with _live_lock:
                _live.discard(self)

    def _signal_wait(self, sig, timeout):
        try:
            self.proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def _bind_qmarks(sql, params):
    """(sql with each `?` outside quotes replaced, extra psql argv). A `?`
    inside '...' or "..." or a -- comment is left alone."""
    out, argv, n, i = [], [], 0, 0
    while i < len(sql):
        c = sql[i]
        if c in "'\"":
            j = i + 1
            while j < len(sql) and not (sql[j] == c and sql[j + 1:j + 2] != c):
                j += 2 if sql[j] == c else 1
            out.append(sql[i:j + 1])
            i = j + 1
            continue
        if sql.startswith("--", i):
            j = sql.find("\n", i)
            j = len(sql) if j < 0 else j
            out.append(sql[i:j])
            i = j
            continue
        if c == "?":
            if n >= len(params):
                raise ValueError("more ? than the %d parameters given" % len(params))
            v = params[n]
            n += 1
            if v is None:
                out.append("NULL")
            elif isinstance(v, bool):
                out.append("TRUE" if v else "FALSE")
            elif isinstance(v, int):
                out.append("(%d)" % v)
            elif isinstance(v, float):
                out.append("(%r)" % v)
            elif isinstance(v, str):
                if "\0" in v:
                    raise ValueError("parameter %d: NUL in a string" % n)
                argv += ["-v", "p%d=%s" % (n, v)]
                out.append(":'p%d'" % n)
            elif isinstance(v, (bytes, bytearray)):
                argv += ["-v", "p%d=\\x%s" % (n, bytes(v).hex())]
                out.append(":'p%d'::bytea" % n)
            else:
                raise TypeError("parameter %d: unsupported type %s" % (n, type(v).__name__))
            i += 1
            continue
        out.append(c)
        i += 1
    if n != len(params):
        raise ValueError("%d parameters given, %d ? in the statement" % (len(params), n))
    return "".join(out), argv


class _Cursor:
    def __init__(self, rows):
        self._rows = rows

    def fetchall(self):
        rows, self._rows = self._rows, []
        return rows

    def fetchone(self):
        return self._rows.pop(0) if self._rows else None

    def __iter__(self):
        return iter(self.fetchall())


class PgConnection:
    """What the e2e tests use of sqlite3.Connection -- execute(sql,
    params).fetchall()/fetchone(), iteration, `with`, close() -- on a
    PostgreSQL database. One difference: each execute() is its own psql run
    and its own transaction (autocommit), so several statements in one
    `with` block are not applied atomically together."""

    def __init__(self, cluster, url):
        self.cluster, self.url = cluster, url

    def execute(self, sql, params=()):
        return _Cursor(self.cluster.query(self.url, sql, params))

    def commit(self):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@atexit.register
def _stop_all():
    with _live_lock:
        live = list(_live)
    for c in live:
        try:
            c.stop()
        except Exception as e:  # noqa: BLE001 -- report every cluster, stop the rest
            sys.stderr.write("pg_cluster: stopping %s: %s\n" % (c.marker, e))


_shared = [None]
_shared_lock = threading.Lock()     # held across the start: one cluster, not two


def shared_cluster():
    """One cluster per test process, started on first use and stopped at
    exit: an e2e module asks it for a fresh database per test
    (`shared_cluster().create_database()`), which is much cheaper than an
    initdb per test."""
    with _shared_lock:
        if _shared[0] is None or not _shared[0].running:
            _shared[0] = PgCluster().start()
        return _shared[0]


def main():
    import argparse
    ap = argparse.ArgumentParser(description="Start a throwaway PostgreSQL cluster, "
                                 "print its URL, serve until Ctrl-C or SIGTERM, then "
                                 "remove it.")
    ap.add_argument("--database", help="also create this database; print its URL")
    args = ap.parse_args()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with PgCluster() as pg:
        url = pg.create_database(args.database) if args.database else pg.url()
        print("MARKER %s" % pg.marker)
        print("URL %s" % url)
        print("SOCKET %s" % pg.socket_url(args.database or "postgres"), flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
