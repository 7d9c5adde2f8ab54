"""One service per SQLite database and per port (DESIGN §2 Instances):
a second `serve` on a port already in use, or on a database file another
service has, exits 1 saying why, before doing any work; the first one keeps
serving alone. `migrate` refuses a database being served as well."""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BIN, WRAPPER, Calsync, CalsyncCase  # noqa: E402


class TestOwnership(CalsyncCase):
    def second(self, **kw):
        d = tempfile.mkdtemp(prefix="calsync-e2e-2-")
        self.addCleanup(shutil.rmtree, d, ignore_errors=True)
        return Calsync(d, **kw)

    def refused(self, svc, pattern):
        """Starts svc, which must exit 1 at start with `pattern` in its log;
        returns the log."""
        with self.assertRaisesRegex(AssertionError, "exited 1 at start"):
            svc.start()
        svc.log.close()
        svc.check_sanitizers()
        text = svc.log_text(since_start=True)
        self.assertRegex(text, pattern)
        self.assertNotIn("event=service.started", text)
        # nothing was done on the way out: no sync, no Google, no migration
        self.assertNotIn("event=sync.", text)
        return text

    def test_second_serve_on_a_busy_port_exits_1(self):
        first = self.start()
        st, cred, _ = first.request("POST", "/v1/credentials",
                                    {"provider": "google", "refresh_token": "r1"})
        self.assertEqual(st, 201, cred)
        other = self.second()
        other.fixed_port = first.fixed_port
        self.refused(other, r"event=service\.start_failed what=listen "
                            r"err=.*port %d is already in use" % first.fixed_port)
        self.assertFalse(os.path.exists(other.db_path) and os.path.getsize(other.db_path))
        # every request still reaches the first service, never a second one
        st, cal, _ = first.request("POST", "/v1/calendars",
                                   {"credential_id": cred["id"], "external_id": "primary"})
        self.assertEqual(st, 201, cal)
        for _ in range(20):
            st, body, _ = first.request("GET", "/v1/calendars")
            self.assertEqual(st, 200, body)
            self.assertEqual([c["id"] for c in body["calendars"]], [cal["id"]])
        with first.db() as con:
            self.assertEqual(con.execute("SELECT count(*) FROM credentials").fetchone()[0], 1)

    def test_second_serve_on_a_served_database_exits_1_naming_it(self):
        first = self.start()
        st, cred, _ = first.request("POST", "/v1/credentials",
                                    {"provider": "google", "refresh_token": "r1"})
        self.assertEqual(st, 201, cred)
        other = self.second()
        other.db_path = first.db_path                 # same file, another port
        text = self.refused(other, r"event=service\.start_failed what=database "
                                   r"err=.*is in use by another calsync")
        self.assertIn(first.db_path, text)
        # the first service is unaffected
        self.assertEqual(first.request("GET", "/healthz")[0], 200)
        st, b, _ = first.request("POST", "/v1/credentials",
                                 {"provider": "google", "refresh_token": "r2"})
        self.assertEqual(st, 201, b)

    def test_migrate_refuses_a_served_database_and_works_after_stop(self):
        first = self.start()
        out = subprocess.run(WRAPPER + [BIN, "migrate", "-c", first.config_path],
                             capture_output=True, text=True, timeout=60, cwd=first.dir)
        self.assertEqual(out.returncode, 1, out)
        self.assertIn("is in use by another calsync", out.stderr)
        self.assertIn(first.db_path, out.stderr)
        first.stop()
        out = subprocess.run(WRAPPER + [BIN, "migrate", "-c", first.config_path],
                             capture_output=True, text=True, timeout=60, cwd=first.dir)
        self.assertEqual(out.returncode, 0, out)
        self.assertIn("schema version", out.stdout)

    def test_restart_on_the_same_port_and_database_works(self):
        """The claims end with the process: a clean stop, or kill -9, frees
        both for the next start (SO_REUSEADDR over TIME_WAIT, flock released
        by the kernel)."""
        svc = self.start()
        port = svc.fixed_port
        svc.request("GET", "/healthz")
        svc.stop()
        svc.start()
        self.assertEqual(svc.port, port)
        svc.kill9()
        svc.start()
        self.assertEqual(svc.port, port)
        self.assertEqual(svc.request("GET", "/healthz")[0], 200)


if __name__ == "__main__":
    import unittest
    unittest.main()
