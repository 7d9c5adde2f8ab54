"""POST /webhooks/google against the real binary (DESIGN §2 Intake):
token checks, sync messages, unknown and stopped channels. The channel rows
are written into the database directly here, so the intake is tested on
its own; test_channels covers channels opened through Google."""
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import CalsyncCase  # noqa: E402


class TestIntake(CalsyncCase):
    def setUp(self):
        super().setUp()
        svc = self.start()
        st, cred, _ = svc.request("POST", "/v1/credentials", {"provider": "google", "refresh_token": "r"})
        st, cal, _ = svc.request("POST", "/v1/calendars", {"credential_id": cred["id"], "external_id": "primary"})
        self.cal = cal["id"]
        with svc.db() as con:
            con.execute("UPDATE calendars SET dirty = 0")
            con.execute("INSERT INTO channels (id, calendar_id, resource_id, token, expiration, state, created_at)"
                        " VALUES ('ch-live', ?, 'res-1', 'tok-123', 9999999999999, 'live', 0)", (self.cal,))
            con.execute("INSERT INTO channels (id, calendar_id, resource_id, token, expiration, state, created_at)"
                        " VALUES ('ch-old', ?, 'res-0', 'tok-old', 0, 'stopped', 0)", (self.cal,))

    def notify(self, channel, state="exists", token=None, number="2"):
        headers = {"X-Goog-Channel-ID": channel, "X-Goog-Resource-State": state,
                   "X-Goog-Message-Number": number, "X-Goog-Resource-ID": "res-1",
                   "X-Goog-Resource-URI": "https://www.googleapis.com/calendar/v3/calendars/primary/events",
                   "X-Goog-Channel-Expiration": "Tue, 25 Jan 2022 19:22:58 GMT"}
        if token is not None:
            headers["X-Goog-Channel-Token"] = token
        return self.svc.request("POST", "/webhooks/google", b"", headers=headers)

    def state(self, notes=0, timeout=10):
        """(dirty, notifications) once `notes` rows are in the database: a
        200 means journalled; the row follows within milliseconds."""
        deadline = time.monotonic() + timeout
        while True:
            with self.svc.db() as con:
                dirty = con.execute("SELECT dirty FROM calendars WHERE id = ?", (self.cal,)).fetchone()[0]
                rows = con.execute("SELECT channel_id, message_number, resource_state FROM notifications"
                                   " ORDER BY id").fetchall()
            if len(rows) >= notes or time.monotonic() > deadline:
                return dirty, rows
            time.sleep(0.02)

    def barrier(self):
        """A valid `sync` message: once it is recorded, everything sent
        before it has been decided (nothing else may follow it)."""
        st, _, _ = self.notify("ch-live", state="sync", token="tok-123", number="999")
        self.assertEqual(st, 200)
        dirty, rows = self.state(notes=1)
        self.assertEqual(rows[-1], ("ch-live", 999, "sync"))
        return dirty, rows[:-1]

    def test_token_checked_in_constant_time_path(self):
        for tok in (None, "", "tok-12", "tok-1234", "TOK-123"):
            st, body, _ = self.notify("ch-live", token=tok)
            self.assertEqual(st, 401, tok)
            self.assertEqual(body["error"]["code"], "unauthorized")
        self.assertEqual(self.barrier(), (0, []))

    def test_sync_message_schedules_nothing(self):
        st, _, _ = self.notify("ch-live", state="sync", token="tok-123", number="1")
        self.assertEqual(st, 200)
        dirty, notes = self.state(notes=1)
        self.assertEqual(dirty, 0)
        self.assertEqual(notes, [("ch-live", 1, "sync")])

    def test_exists_marks_calendar_dirty(self):
        st, _, _ = self.notify("ch-live", token="tok-123")
        self.assertEqual(st, 200)
        dirty, notes = self.state(notes=1)
        self.assertEqual(notes, [("ch-live", 2, "exists")])
        self.assertEqual(dirty, 1)

    def test_unknown_and_stopped_channels_200_nothing_scheduled(self):
        for ch in ("ch-unknown", "ch-old", "x" * 1000):
            st, _, _ = self.notify(ch, token="tok-old")
            self.assertEqual(st, 200, ch)
        self.assertEqual(self.barrier(), (0, []))
        st, _, _ = self.svc.request("POST", "/webhooks/google", b"")   # no headers at all
        self.assertEqual(st, 200)
        st, text, _ = self.svc.request("GET", "/metrics", raw=True)
        self.assertIn(b'calsync_notifications_total{outcome="stopped"} 1', text)
        self.assertIn(b'calsync_notifications_total{outcome="unknown"} 3', text)

    def test_unknown_and_stopped_channel_floods_are_rate_limited(self):
        """Pushes on unknown or stopped channels carry no token calsync can
        check. 200 with random channel ids on a resource calsync watches and
        50 on a stopped channel: one stop each (per resource id, per channel
        id, per minute), and at most 10 log lines per kind, the next one
        counting the suppressed ones."""
        log0 = len(self.svc.log_text())
        for i in range(200):
            st, _, _ = self.svc.request("POST", "/webhooks/google", b"", headers={
                "X-Goog-Channel-ID": "forged-%d-%s" % (i, os.urandom(4).hex()),
                "X-Goog-Resource-ID": "res-1", "X-Goog-Resource-State": "exists"})
            self.assertEqual(st, 200)
        for i in range(50):
            st, _, _ = self.notify("ch-old", token="tok-old", number=str(i + 2))
            self.assertEqual(st, 200)
        self.assertEqual(self.barrier(), (0, []))
        log = self.svc.log_text()[log0:]
        self.assertLessEqual(log.count("event=intake.unknown_channel"), 10)
        self.assertLessEqual(log.count("event=intake.stopped_channel"), 10)
        self.assertEqual(log.count("event=intake.foreign_channel"), 1)
        self.assertRegex(log, r"event=intake\.unknown_channel channel=\S+ suppressed=0")
        st, text, _ = self.svc.request("GET", "/metrics", raw=True)
        self.assertIn(b'calsync_notifications_total{outcome="unknown"} 200', text)
        self.assertIn(b'calsync_notifications_total{outcome="stopped"} 50', text)
        self.assertIn(b'calsync_intake_stop_requests_total{result="queued"} 2', text)
        self.assertIn(b'calsync_intake_stop_requests_total{result="recent"} 49', text)

    def test_every_notification_recorded(self):
        for i in range(200):
            st, _, _ = self.notify("ch-live", token="tok-123", number=str(i + 2))
            self.assertEqual(st, 200)
        notes = self.state(notes=200)[1]
        self.assertEqual([n[1] for n in notes], list(range(2, 202)))

    def test_answer_does_not_wait_for_the_database_write_lock(self):
        """Another writer holds SQLite's write lock (as a sync's page
        transaction can): notifications are still answered at once, and
        recorded when the lock is released."""
        con = sqlite3.connect(self.svc.db_path, isolation_level=None, timeout=10)
        con.execute("BEGIN IMMEDIATE")
        try:
            # the lock is released only after the last answer: an intake that
            # waited for it would answer 503 (busy) or not at all, never 200.
            # (How fast the answers come under lock contention is `make
            # bench`'s to measure, item "load".)
            for i in range(20):
                st, _, _ = self.notify("ch-live", token="tok-123", number=str(i + 2))
                self.assertEqual(st, 200)
            self.assertEqual(self.state()[1], [])   # not committed: lock held
        finally:
            con.execute("ROLLBACK")
            con.close()
        notes = self.state(notes=20)[1]
        self.assertEqual([n[1] for n in notes], list(range(2, 22)))
        self.assertGreaterEqual(self.state()[0], 1)   # marked dirty

    def test_journal_is_replayed_after_kill(self):
        """Journalled but not committed when the process died: the next
        start moves it into the database and syncs the calendar."""
        con = sqlite3.connect(self.svc.db_path, isolation_level=None, timeout=10)
        con.execute("BEGIN IMMEDIATE")
        try:
            for i in range(5):
                st, _, _ = self.notify("ch-live", token="tok-123", number=str(i + 2))
                self.assertEqual(st, 200)
            self.svc.kill9()
        finally:
            con.execute("ROLLBACK")
            con.close()
        with self.svc.db() as c:
            self.assertEqual(c.execute("SELECT count(*) FROM notifications").fetchone()[0], 0)
        self.svc.start()
        dirty, notes = self.state(notes=5)
        self.assertEqual([n[1] for n in notes], list(range(2, 7)))
        for i in (0, 1):
            self.assertEqual(os.path.getsize(self.svc.db_path + "-intake.%d" % i), 0)
        # a second restart replays nothing again
        self.svc.stop()
        self.svc.start()
        self.assertEqual(len(self.state()[1]), 5)

    def test_torn_or_foreign_journal_lines_are_skipped(self):
        """A journal with a torn tail (power loss) or bytes that are not
        records: the whole records are replayed, the rest skipped with a
        warning, and the service starts."""
        self.svc.stop()
        # received now: retention (notifications older than 7 days are
        # pruned) must not take the replayed row while the test counts
        now_ms = int(time.time() * 1000)
        with open(self.svc.db_path + "-intake.1", "wb") as f:
            f.write(b"7 %d %d 5 exists ch-live\n" % (self.cal, now_ms))
            f.write(b"garbage line\n\x00\xff\n8 %d 17000 x exists ch-live\n" % self.cal)
            f.write(b"9 %d %d 6 exi" % (self.cal, now_ms + 1))   # torn: no newline
        self.svc.start()
        dirty, notes = self.state(notes=1)
        self.assertEqual(notes, [("ch-live", 5, "exists")])
        self.assertGreaterEqual(dirty, 1)
        self.assertIn("intake.journal_bad_records", self.svc.log_text())
        self.assertEqual(os.path.getsize(self.svc.db_path + "-intake.1"), 0)
        # row ids continue after the replayed one
        st, _, _ = self.notify("ch-live", token="tok-123", number="6")
        self.assertEqual(st, 200)
        with self.svc.db() as con:
            self.wait_rows(con, 2)
            ids = [r[0] for r in con.execute("SELECT id FROM notifications ORDER BY id")]
        self.assertEqual(ids, [7, 8])

    def wait_rows(self, con, n, timeout=10):
        deadline = time.monotonic() + timeout
        while con.execute("SELECT count(*) FROM notifications").fetchone()[0] < n:
            self.assertLess(time.monotonic(), deadline, "rows not recorded")
            time.sleep(0.02)
