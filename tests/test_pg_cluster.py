"""Self-test of tests/pg_cluster.py: real PostgreSQL clusters, started,
used with psql, stopped, and checked to leave nothing behind.

    python3 -m unittest -v tests/test_pg_cluster.py

Run as root (CI) the servers run as the `postgres` user, and one test runs
the module as `nobody` to cover the non-root path; run as a normal user,
every test is the non-root path and that test runs it as the same user.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pg_cluster  # noqa: E402
from pg_cluster import PgCluster, PgError  # noqa: E402


def wait_for(pred, what, timeout=60.0):
    """Polls pred() until true; the timeout only bounds a hang."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("still waiting for: " + what)
        time.sleep(0.05)


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return True
    except OSError:
        return False


def uid_of(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1))


class Base(unittest.TestCase):
    def assertGone(self, pg, port, tmpdir):
        """Nothing of the cluster is left: no process with its name, no
        listener on its port, no directory."""
        self.assertEqual(pg.processes(), [], "server processes left behind")
        self.assertEqual(pg_cluster.processes_with(pg.marker), [])
        self.assertFalse(port_open(port), "port %d still accepts connections" % port)
        self.assertFalse(os.path.exists(tmpdir), "%s left behind" % tmpdir)
        self.assertIsNone(pg.dir)


class TestCluster(Base):
    def test_start_psql_table_stop(self):
        pg = PgCluster().start()
        port, tmpdir, pid = pg.port, pg.dir, pg.pid
        try:
            self.assertTrue(os.path.isdir(os.path.join(tmpdir, "data")))
            # postmaster, checkpointer, writers ...: all named by the marker
            procs = pg.processes()
            self.assertIn(pid, procs)
            self.assertGreater(len(procs), 1)
            self.assertTrue(pg.running)
            if os.geteuid() == 0:
                # PostgreSQL refuses root: the servers run unprivileged,
                # in a directory that user owns
                self.assertNotEqual(uid_of(pid), 0)
                self.assertEqual(os.stat(tmpdir).st_uid, uid_of(pid))
            url = pg.create_database()
            self.assertRegex(url, r"^postgresql://calsync:[0-9a-f]{32}@127\.0\.0\.1:%d/t_1_[0-9a-f]{8}$"
                             % port)
            out = pg.psql(url, "CREATE TABLE booking (uid text PRIMARY KEY, n int);"
                               "INSERT INTO booking VALUES ('a', 1), ('b', 2);"
                               "SELECT count(*), sum(n) FROM booking;")
            self.assertEqual(out.strip(), "2|3")
            # the same database through the Unix socket (no TCP port)
            name = url.rsplit("/", 1)[1]
            out = pg.psql(pg.socket_url(name),
                          "SELECT uid FROM booking ORDER BY uid; SELECT inet_server_port() IS NULL;")
            self.assertEqual(out.split(), ["a", "b", "t"])
            # the password is checked (scram-sha-256): a wrong one is refused
            rc, _, err = pg.psql(url.replace(pg.password, "0" * 32), "SELECT 1", check=False)
            self.assertNotEqual(rc, 0)
            self.assertIn("password authentication failed", err)
            # a second database is another, empty one
            url2 = pg.create_database()
            self.assertNotEqual(url, url2)
            rc, _, err = pg.psql(url2, "SELECT * FROM booking", check=False)
            self.assertIn('relation "booking" does not exist', err)
            pg.drop_database(url2.rsplit("/", 1)[1])
            rc, _, err = pg.psql(url2, "SELECT 1", check=False)
            self.assertIn("does not exist", err)
        finally:
            pg.stop()
        self.assertGone(pg, port, tmpdir)
        self.assertFalse(pg.running)
        pg.stop()   # idempotent

    def test_stop_ends_open_sessions(self):
        # a calsync instance still connected must not keep the server up:
        # stop() is a fast shutdown, which terminates sessions
        with PgCluster() as pg:
            url = pg.create_database()
            port, tmpdir = pg.port, pg.dir
            psql = subprocess.Popen(
                [os.path.join(pg.bindir, "psql"), "-X", "-q", "-d", url],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            try:
                psql.stdin.write(b"BEGIN; CREATE TABLE t (x int);\n")
                psql.stdin.flush()
                q = ("SELECT pid FROM pg_stat_activity WHERE datname = '%s' "
                     "AND state = 'idle in transaction'" % url.rsplit("/", 1)[1])
                wait_for(lambda: pg.psql(pg.url(), q).strip(), "the open transaction")
                pid = int(pg.psql(pg.url(), q))
                self.assertIn(pid, pg.processes())
            finally:
                pg.stop()
                psql.stdin.close()
                psql.wait(60)
                psql.stdout.close()
        self.assertGone(pg, port, tmpdir)

    def test_clusters_side_by_side(self):
        with PgCluster() as a, PgCluster() as b:
            self.assertNotEqual(a.port, b.port)
            self.assertNotEqual(a.dir, b.dir)
            ua, ub = a.create_database("same_name"), b.create_database("same_name")
            a.psql(ua, "CREATE TABLE only_in_a (x int);")
            self.assertEqual(a.psql(ua, "SELECT to_regclass('only_in_a') IS NOT NULL").strip(), "t")
            self.assertEqual(b.psql(ub, "SELECT to_regclass('only_in_a') IS NULL").strip(), "t")
            b.stop()
            # stopping one leaves the other running
            self.assertEqual(a.psql(ua, "SELECT 1").strip(), "1")
            self.assertEqual(b.processes(), [])

    def test_failed_test_leaves_nothing(self):
        seen = {}
        with self.assertRaises(ZeroDivisionError):
            with PgCluster() as pg:
                seen.update(port=pg.port, dir=pg.dir)
                pg.psql(pg.create_database(), "CREATE TABLE t (x int);")
                1 / 0
        self.assertGone(pg, seen["port"], seen["dir"])

    def test_bad_sql_and_names(self):
        with PgCluster() as pg:
            url = pg.create_database()
            with self.assertRaises(PgError) as cm:
                pg.psql(url, "SELEC 1;")
            self.assertIn("syntax error", str(cm.exception))
            for bad in ("x; DROP DATABASE postgres", "Upper", "", "a" * 64, "1abc", None):
                with self.assertRaises(ValueError):
                    pg.create_database(bad) if bad is not None else pg.url(bad)
            self.assertEqual(pg.psql(pg.url(), "SELECT count(*) FROM pg_database "
                                               "WHERE datname = 'postgres'").strip(), "1")


class TestQuery(unittest.TestCase):
    """PgCluster.query / PgConnection: sqlite3's shape over psql, for the
    e2e tests that read tables when the database is PostgreSQL."""

    @classmethod
    def setUpClass(cls):
        cls.pg = PgCluster().start()
        cls.url = cls.pg.create_database()
        cls.pg.query(cls.url, "CREATE TABLE t (id bigint PRIMARY KEY, s text, b bytea, "
                              "at bigint)")

    @classmethod
    def tearDownClass(cls):
        cls.pg.stop()

    def test_values_round_trip(self):
        nasty = ["'); DROP TABLE t; --", "back\\slash \\x00 :'p1' ?", "line\nbreak\ttab",
                 "unicode \u00e9\u2603\U0001f600", "", "x" * 5000]
        con = self.pg.connect(self.url)
        with con:
            for i, v in enumerate(nasty):
                con.execute("INSERT INTO t (id, s, at) VALUES (?, ?, ?)",
                            (i, v, -2 ** 62 + i))
        rows = con.execute("SELECT id, s, at FROM t WHERE id < ? ORDER BY id",
                           (len(nasty),)).fetchall()
        self.assertEqual(rows, [(i, v, -2 ** 62 + i) for i, v in enumerate(nasty)])
        # NULL both ways, bytes, a ? inside a literal left alone
        con.execute("INSERT INTO t (id, s, b) VALUES (?, ?, ?)", (100, None, b"\x00\xffab"))
        self.assertEqual(con.execute("SELECT s, b = ?, '?' FROM t WHERE id = ?",
                                     (b"\x00\xffab", 100)).fetchone(), (None, True, "?"))
        self.assertEqual(self.pg.query(self.url, "SELECT count(*) FROM t WHERE id <= 100"),
                         [(len(nasty) + 1,)])

    def test_shapes(self):
        q = self.pg.query
        # two columns of one name both come back, in order
        self.assertEqual(q(self.url, "SELECT 1 AS a, 'two' AS a"), [(1, "two")])
        self.assertEqual(q(self.url, "SELECT 1 WHERE false"), [])
        q(self.url, "INSERT INTO t (id, s) VALUES (?, ?)", (200, "old"))
        # DML without RETURNING: no rows; with RETURNING: its rows
        self.assertEqual(q(self.url, "UPDATE t SET s = ? WHERE id = ?", ("mid", 200)), [])
        self.assertEqual(q(self.url, "UPDATE t SET s = ? WHERE id = ? RETURNING id, s;",
                           ("new", 200)), [(200, "new")])
        self.assertEqual(q(self.url, "WITH x AS (SELECT ? AS v) SELECT v FROM x", ("w",)),
                         [("w",)])
        cur = self.pg.connect(self.url).execute("SELECT id FROM t WHERE id >= ? ORDER BY id",
                                                (200,))
        self.assertEqual(list(cur), [(200,)])

    def test_errors(self):
        with self.assertRaises(ValueError):
            self.pg.query(self.url, "SELECT ?, ?", (1,))
        with self.assertRaises(ValueError):
            self.pg.query(self.url, "SELECT 1", (1,))
        with self.assertRaises(TypeError):
            self.pg.query(self.url, "SELECT ?", "1")
        with self.assertRaises(TypeError):
            self.pg.query(self.url, "SELECT ?", (object(),))
        with self.assertRaises(ValueError):
            self.pg.query(self.url, "SELECT ?", ("a\0b",))
        with self.assertRaises(PgError) as cm:
            self.pg.query(self.url, "SELECT nope FROM t")
        self.assertIn('column "nope" does not exist', str(cm.exception))


class TestShared(Base):
    def test_one_cluster_per_process(self):
        a = pg_cluster.shared_cluster()
        try:
            self.assertIs(pg_cluster.shared_cluster(), a)
            u1, u2 = a.create_database(), a.create_database()
            self.assertNotEqual(u1, u2)
            self.assertEqual(a.query(u1, "SELECT current_database()"),
                             [(u1.rsplit("/", 1)[1],)])
        finally:
            port, tmpdir = a.port, a.dir
            a.stop()
        self.assertGone(a, port, tmpdir)
        # stopped (here by hand; normally at exit): the next use starts another
        b = pg_cluster.shared_cluster()
        self.assertIsNot(b, a)
        b.stop()


class TestPorts(Base):
    def setUp(self):
        # a port that is taken: bound and listening on 127.0.0.1
        self.blocker = socket.socket()
        self.blocker.bind(("127.0.0.1", 0))
        self.blocker.listen(1)
        self.taken = self.blocker.getsockname()[1]
        self.addCleanup(self.blocker.close)

    def test_port_taken_meanwhile_is_retried(self):
        # the race a parallel job causes between picking a free port and
        # the server binding it: the first pick is a taken port
        real, picks = pg_cluster._free_port, []

        def pick():
            picks.append(self.taken if not picks else real())
            return picks[-1]
        pg_cluster._free_port = pick
        try:
            with PgCluster() as pg:
                self.assertEqual(picks[0], self.taken)
                self.assertEqual(len(picks), 2)
                self.assertEqual(pg.port, picks[1])
                with open(pg.log_path) as f:
                    self.assertIn("Address already in use", f.read())
                self.assertEqual(pg.psql(pg.url(), "SELECT 1").strip(), "1")
        finally:
            pg_cluster._free_port = real

    def test_fixed_port_taken_is_an_error(self):
        pg = PgCluster(port=self.taken)
        with self.assertRaises(PgError) as cm:
            pg.start()
        self.assertIn("Address already in use", str(cm.exception))
        self.assertIsNone(pg.dir)
        self.assertEqual(pg.processes(), [])
        self.assertEqual(pg_cluster._live, set())


class TestProcessEnds(Base):
    def python(self):
        # a python3 that `nobody` can run (this one may live under /root)
        exe = sys.executable
        if os.geteuid() == 0 and not PgCluster._traversable(os.path.dirname(exe)):
            exe = shutil.which("python3", path="/usr/bin:/bin")
        return exe

    def test_killed_test_process_leaves_no_server(self):
        # SIGKILL: no atexit, no finally; the kernel's parent-death signal
        # stops the server, and the next start removes the directory
        proc = subprocess.Popen([sys.executable, os.path.join(HERE, "pg_cluster.py")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            marker = proc.stdout.readline().decode().split()
            url = proc.stdout.readline().decode().split()
            self.assertEqual(marker[0], "MARKER", marker)
            self.assertEqual(url[0], "URL", url)
            marker = marker[1]
            port = int(re.search(r":(\d+)/", url[1]).group(1))
            self.assertTrue(pg_cluster.processes_with(marker))
            self.assertTrue(port_open(port))
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        wait_for(lambda: not pg_cluster.processes_with(marker),
                 "the killed process's server to stop")
        self.assertFalse(port_open(port))
        stale = [d for d in os.listdir(pg_cluster.tempfile.gettempdir())
                 if d.startswith("calsync-pg-%d-" % proc.pid)]
        self.assertEqual(len(stale), 1, stale)   # SIGKILL skipped the removal ...
        with PgCluster():
            pass
        self.assertFalse(os.path.exists(os.path.join(pg_cluster.tempfile.gettempdir(),
                                                     stale[0])))   # ... the next start did it

    def test_sigterm_stops_and_removes(self):
        proc = subprocess.Popen([sys.executable, os.path.join(HERE, "pg_cluster.py")],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            marker = proc.stdout.readline().decode().split()[1]
            proc.stdout.readline()
            self.assertTrue(pg_cluster.processes_with(marker))
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(120), 0)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        self.assertEqual(pg_cluster.processes_with(marker), [])
        self.assertEqual([d for d in os.listdir(pg_cluster.tempfile.gettempdir())
                          if d.startswith("calsync-pg-%d-" % proc.pid)], [])

    def test_as_unprivileged_user(self):
        # as root: the same module run by `nobody` (no home, no postgres
        # user switch); as anyone else: run as that same user
        prog = ("import sys; sys.path.insert(0, %r)\n"
                "import os, pg_cluster\n"
                "with pg_cluster.PgCluster() as pg:\n"
                "    assert os.stat(pg.dir).st_uid == os.geteuid()\n"
                "    u = pg.create_database()\n"
                "    print(pg.psql(u, 'CREATE TABLE t (x int); INSERT INTO t VALUES (7);"
                " SELECT x, current_user FROM t;').strip())\n"
                "    m = pg.marker\n"
                "print('left', pg_cluster.processes_with(m))\n" % HERE)
        argv = [self.python(), "-c", prog]
        if os.geteuid() == 0:
            argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                    "--"] + argv
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           cwd="/", env=dict(os.environ, HOME="/nonexistent"), timeout=300)
        out = r.stdout.decode()
        self.assertEqual(r.returncode, 0, out)
        self.assertEqual(out.split("\n")[:2], ["7|calsync", "left []"], out)


if __name__ == "__main__":
    unittest.main()
