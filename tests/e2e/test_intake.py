"""POST /webhooks/google against the real binary (DESIGN §2 Intake):
token checks, sync messages, unknown and stopped channels. The channel rows
are written into the database directly here, so the intake is tested on
its own; test_channels covers channels opened through Google."""
import os
import sys

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

    def state(self):
        with self.svc.db() as con:
            dirty = con.execute("SELECT dirty FROM calendars WHERE id = ?", (self.cal,)).fetchone()[0]
            notes = con.execute("SELECT channel_id, message_number, resource_state FROM notifications"
                                " ORDER BY id").fetchall()
        return dirty, notes

    def test_token_checked_in_constant_time_path(self):
        for tok in (None, "", "tok-12", "tok-1234", "TOK-123"):
            st, body, _ = self.notify("ch-live", token=tok)
            self.assertEqual(st, 401, tok)
            self.assertEqual(body["error"]["code"], "unauthorized")
        self.assertEqual(self.state(), (0, []))

    def test_sync_message_schedules_nothing(self):
        st, _, _ = self.notify("ch-live", state="sync", token="tok-123", number="1")
        self.assertEqual(st, 200)
        dirty, notes = self.state()
        self.assertEqual(dirty, 0)
        self.assertEqual(notes, [("ch-live", 1, "sync")])

    def test_exists_marks_calendar_dirty(self):
        st, _, _ = self.notify("ch-live", token="tok-123")
        self.assertEqual(st, 200)
        dirty, notes = self.state()
        self.assertEqual(notes, [("ch-live", 2, "exists")])
        self.assertEqual(dirty, 1)

    def test_unknown_and_stopped_channels_200_nothing_scheduled(self):
        for ch in ("ch-unknown", "ch-old", "x" * 1000):
            st, _, _ = self.notify(ch, token="tok-old")
            self.assertEqual(st, 200, ch)
        self.assertEqual(self.state(), (0, []))
        st, _, _ = self.svc.request("POST", "/webhooks/google", b"")   # no headers at all
        self.assertEqual(st, 200)
        st, text, _ = self.svc.request("GET", "/metrics", raw=True)
        self.assertIn(b'calsync_notifications_total{outcome="stopped"} 1', text)
        self.assertIn(b'calsync_notifications_total{outcome="unknown"} 3', text)

    def test_every_notification_recorded(self):
        for i in range(200):
            st, _, _ = self.notify("ch-live", token="tok-123", number=str(i + 2))
            self.assertEqual(st, 200)
        notes = self.state()[1]
        self.assertEqual([n[1] for n in notes], list(range(2, 202)))
