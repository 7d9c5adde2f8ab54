"""The admin API of DESIGN §4 against the real binary: contract shapes,
bad input answered with the contract error and nothing changed, auth,
body limits, pagination, restart durability and clean shutdown."""
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from harness import BIN, PG, Calsync, CalsyncCase  # noqa: E402

BOOKING = {"uid": "bk-1", "calendar_id": None, "title": "Intro call",
           "start": "2026-11-24T10:00:00+01:00", "end": "2026-11-24T09:30:00Z",
           "event_id": "evt123"}


class ApiCase(CalsyncCase):
    def setUp(self):
        super().setUp()
        self.start()

    def credential(self):
        st, body, _ = self.svc.request("POST", "/v1/credentials",
                                       {"provider": "google", "refresh_token": "1//rt",
                                        "access_token": "ya29.at",
                                        "expires_at": "2026-11-25T10:00:00Z"})
        self.assertEqual(st, 201, body)
        return body["id"]

    def calendar(self, cred=None, ext="primary", **kw):
        cred = cred or self.credential()
        st, body, _ = self.svc.request("POST", "/v1/calendars",
                                       dict(credential_id=cred, external_id=ext, **kw))
        self.assertIn(st, (200, 201), body)
        return body

    def booking(self, cal_id, **kw):
        b = dict(BOOKING, calendar_id=cal_id)
        b.update(kw)
        return self.svc.request("POST", "/v1/bookings", b)


class TestCredentials(ApiCase):
    def test_secrets_never_returned(self):
        st, body, _ = self.svc.request("POST", "/v1/credentials",
                                       {"provider": "google", "refresh_token": "TOPSECRET",
                                        "access_token": "ALSOSECRET"})
        self.assertEqual(st, 201)
        self.assertIsInstance(body["id"], int)
        self.assertNotIn("TOPSECRET", json.dumps(body))
        cal = self.calendar(cred=body["id"])
        for path in ("/v1/calendars", "/v1/calendars/%d" % cal["id"], "/metrics"):
            _, text, _ = self.svc.request("GET", path, raw=True)
            self.assertNotIn(b"TOPSECRET", text)
            self.assertNotIn(b"ALSOSECRET", text)

    def test_bad_credentials(self):
        before = self.svc.snapshot()
        cases = [
            {"provider": "outlook", "refresh_token": "x"},
            {"provider": "google"},
            {"provider": "google", "refresh_token": ""},
            {"provider": "google", "refresh_token": 5},
            {"provider": "google", "refresh_token": "x", "expires_at": "tomorrow"},
            {"provider": "google", "refresh_token": "x", "extra": 1},
        ]
        for c in cases:
            self.assertError(self.svc.request("POST", "/v1/credentials", c), 400, "bad_request")
        self.assertEqual(self.svc.snapshot(), before)


class TestCalendars(ApiCase):
    def test_create_is_idempotent_and_reactivates(self):
        cred = self.credential()
        st, a, _ = self.svc.request("POST", "/v1/calendars",
                                    {"credential_id": cred, "external_id": "primary",
                                     "policy": "working_hours",  # its settings schema
                                     "settings": {"zone": "Europe/Berlin", "work_days": "1,2"}})
        self.assertEqual(st, 201, a)
        for key in ("id", "credential_id", "external_id", "policy", "settings",
                    "state", "last_synced_at", "channel"):
            self.assertIn(key, a)
        self.assertEqual(a["policy"], "working_hours")
        self.assertEqual(a["state"], "syncing")
        self.assertIsNone(a["last_synced_at"])
        self.assertEqual(a["settings"], {"zone": "Europe/Berlin", "work_days": "1,2"})
        st, b, _ = self.svc.request("POST", "/v1/calendars",
                                    {"credential_id": str(cred), "external_id": "primary"})
        self.assertEqual(st, 200)
        self.assertEqual(b["id"], a["id"])
        st, c, _ = self.svc.request("DELETE", "/v1/calendars/%d" % a["id"])
        self.assertEqual(st, 200)
        self.assertEqual(c["state"], "stopped")
        st, d, _ = self.svc.request("POST", "/v1/calendars",
                                    {"credential_id": cred, "external_id": "primary"})
        self.assertEqual(st, 200)
        self.assertEqual(d["id"], a["id"])
        self.assertNotEqual(d["state"], "stopped")

    def test_unknown_policy_and_credential_422(self):
        cred = self.credential()
        before = self.svc.snapshot()
        self.assertError(self.svc.request("POST", "/v1/calendars",
                                          {"credential_id": cred, "external_id": "primary",
                                           "policy": "nope"}), 422, "unprocessable")
        self.assertError(self.svc.request("POST", "/v1/calendars",
                                          {"credential_id": 999, "external_id": "primary"}),
                         422, "unprocessable")
        for bad in ({"credential_id": cred}, {"external_id": "primary"},
                    {"credential_id": "abc", "external_id": "p"},
                    {"credential_id": 1.5, "external_id": "p"},
                    {"credential_id": cred, "external_id": ["p"]},
                    {"credential_id": cred, "external_id": "p", "settings": "x"},
                    {"credential_id": cred, "external_id": "p", "policy": "../etc/passwd"}):
            self.assertError(self.svc.request("POST", "/v1/calendars", bad), 400)
        self.assertEqual(self.svc.snapshot(), before)

    def test_get_list_and_404(self):
        cred = self.credential()
        ids = [self.calendar(cred=cred, ext="cal%d@example.com" % i)["id"] for i in range(5)]
        st, page, _ = self.svc.request("GET", "/v1/calendars?limit=2")
        self.assertEqual(st, 200)
        seen = [c["id"] for c in page["calendars"]]
        while page["next_cursor"] is not None:
            st, page, _ = self.svc.request("GET", "/v1/calendars?limit=2&cursor=%s" % page["next_cursor"])
            self.assertEqual(st, 200)
            seen += [c["id"] for c in page["calendars"]]
        self.assertEqual(seen, ids)
        self.assertError(self.svc.request("GET", "/v1/calendars/424242"), 404, "not_found")
        self.assertError(self.svc.request("GET", "/v1/calendars/abc"), 404)
        self.assertError(self.svc.request("DELETE", "/v1/calendars/424242"), 404)
        self.assertError(self.svc.request("POST", "/v1/calendars/424242/sync"), 404)
        self.assertError(self.svc.request("GET", "/v1/calendars?cursor=zz"), 400)

    def test_sync_accepts_empty_body(self):
        cal = self.calendar()
        st, _, _ = self.svc.request("POST", "/v1/calendars/%d/sync" % cal["id"])
        self.assertEqual(st, 202)
        st, _, _ = self.svc.request("POST", "/v1/calendars/%d/sync" % cal["id"], "",
                                    headers={"Content-Type": "application/json"})
        self.assertEqual(st, 202)


class TestBookings(ApiCase):
    def test_create_get_times_in_utc(self):
        cal = self.calendar()
        st, b, _ = self.booking(cal["id"])
        self.assertEqual(st, 201, b)
        self.assertEqual(b["start"], "2026-11-24T09:00:00Z")
        self.assertEqual(b["end"], "2026-11-24T09:30:00Z")
        self.assertEqual(b["status"], "accepted")
        self.assertIs(b["needs_review"], False)
        self.assertEqual(b["event_id"], "evt123")
        self.assertIn("updated_at", b)
        st, g, _ = self.svc.request("GET", "/v1/bookings/bk-1")
        self.assertEqual(st, 200)
        self.assertEqual(g, b)

    def test_duplicate_uid_409_changes_nothing(self):
        cal = self.calendar()
        self.assertEqual(self.booking(cal["id"])[0], 201)
        before = self.svc.snapshot()
        self.assertError(self.booking(cal["id"], title="other"), 409, "conflict")
        self.assertEqual(self.svc.snapshot(), before)

    def test_bad_bookings_400_changes_nothing(self):
        cal = self.calendar()
        before = self.svc.snapshot()
        cases = [
            dict(end="2026-11-24T08:00:00Z"),                    # end before start
            dict(end="2026-11-24T09:00:00Z"),                    # end == start
            dict(start="2026-11-24 10:00"),                      # not RFC 3339
            dict(start="2026-02-30T10:00:00Z"),
            dict(start=1764000000),                              # wrong type
            dict(title=None, uid=None),                          # missing
            dict(uid=""),
            dict(uid="a/b"),
            dict(uid="x" * 300),
            dict(title=["t"]),
            dict(calendar_id="seven"),
            dict(original_start="yesterday"),
            dict(colour="red"),                                   # unknown field
        ]
        for c in cases:
            body = dict(BOOKING, calendar_id=cal["id"])
            body.update(c)
            body = {k: v for k, v in body.items() if v is not None}
            self.assertError(self.svc.request("POST", "/v1/bookings", body), 400, "bad_request")
        for raw in ('{"uid":', "[]", "null", "not json", '{"uid": "x"} trailing'):
            self.assertError(self.svc.request("POST", "/v1/bookings", raw), 400, "bad_request")
        self.assertError(self.svc.request("POST", "/v1/bookings", ""), 400)
        self.assertError(self.booking(4242), 422, "unprocessable")   # unknown calendar
        no_event = {k: v for k, v in dict(BOOKING, calendar_id=cal["id"]).items()
                    if k != "event_id"}
        for att in ("x", [{"name": "x"}], [{"email": "no-at-sign"}], [{"email": 5}],
                    [{"email": "a@b", "role": "x"}], [{"email": "a@b"}] * 101, {"email": "a@b"}):
            self.assertError(self.svc.request("POST", "/v1/bookings",
                                              dict(no_event, attendees=att)), 400)
        self.assertError(self.booking(cal["id"], event_id=""), 400)
        self.assertError(self.booking(cal["id"], attendees=[{"email": "a@b"}]), 400)
        self.assertEqual(self.svc.snapshot(), before)

    def test_patch_and_cancel_with_audit(self):
        cal = self.calendar()
        self.booking(cal["id"])
        st, p, _ = self.svc.request("PATCH", "/v1/bookings/bk-1",
                                    {"start": "2026-11-25T09:00:00Z", "end": "2026-11-25T10:00:00Z"})
        self.assertEqual(st, 200, p)
        self.assertEqual(p["start"], "2026-11-25T09:00:00Z")
        st, p, _ = self.svc.request("PATCH", "/v1/bookings/bk-1", {"title": "Renamed"})
        self.assertEqual(p["title"], "Renamed")
        # a no-op patch writes no audit entry
        self.svc.request("PATCH", "/v1/bookings/bk-1", {"title": "Renamed"})
        # the writer's patch (no Google client here: it fails for good)
        # changes the row; wait for its outcome before comparing snapshots
        self.wait_for(lambda: self.svc.request("GET", "/v1/bookings/bk-1")[1]
                      .get("write_state") != "pending", what="the patch's outcome")
        before = self.svc.snapshot()
        self.assertError(self.svc.request("PATCH", "/v1/bookings/bk-1",
                                          {"end": "2026-11-25T08:00:00Z"}), 400)
        self.assertError(self.svc.request("PATCH", "/v1/bookings/bk-1", {}), 400)
        self.assertError(self.svc.request("PATCH", "/v1/bookings/bk-1", {"status": "x"}), 400)
        self.assertError(self.svc.request("PATCH", "/v1/bookings/nope", {"title": "x"}), 404)
        self.assertEqual(self.svc.snapshot(), before)
        st, c, _ = self.svc.request("POST", "/v1/bookings/bk-1/cancel", {"reason": "host sick"})
        self.assertEqual(st, 200, c)
        self.assertEqual(c["status"], "cancelled")
        self.assertEqual(c["cancelled_by"], "app")
        self.assertEqual(c["cancel_reason"], "host sick")
        # the writer's delete (no Google client here: it fails for good)
        # changes the row; wait for it to settle before comparing snapshots
        self.wait_for(lambda: self.svc.request("GET", "/v1/bookings/bk-1")[1]
                      .get("write_state") != "pending", what="the delete's outcome")
        before = self.svc.snapshot()
        self.assertError(self.svc.request("POST", "/v1/bookings/bk-1/cancel"), 409, "conflict")
        self.assertError(self.svc.request("PATCH", "/v1/bookings/bk-1", {"title": "x"}), 409)
        self.assertEqual(self.svc.snapshot(), before)
        st, audit, _ = self.svc.request("GET", "/v1/bookings/bk-1/audit")
        self.assertEqual(st, 200)
        entries = audit["entries"]
        self.assertEqual([e["action"] for e in entries],
                         ["create", "reschedule", "update", "cancel"])
        for e in entries:
            self.assertEqual(e["source"], "api")
            for k in ("at", "source", "change", "action", "reason", "policy",
                      "policy_version", "before", "after"):
                self.assertIn(k, e)
        self.assertEqual(entries[1]["before"]["start"], "2026-11-24T09:00:00Z")
        self.assertEqual(entries[1]["after"]["start"], "2026-11-25T09:00:00Z")
        self.assertEqual(entries[3]["reason"], "host sick")
        self.assertError(self.svc.request("GET", "/v1/bookings/nope/audit"), 404)

    def test_cancel_accepts_empty_body(self):
        cal = self.calendar()
        self.booking(cal["id"])
        st, c, _ = self.svc.request("POST", "/v1/bookings/bk-1/cancel", "",
                                    headers={"Content-Type": "application/json"})
        self.assertEqual(st, 200, c)
        self.assertNotIn("cancel_reason", c)

    def test_list_filters_and_cursor(self):
        cal1 = self.calendar(ext="a")
        cal2 = self.calendar(ext="b")
        for i in range(7):
            self.booking(cal1["id"] if i % 2 == 0 else cal2["id"], uid="u%d" % i)
        self.svc.request("POST", "/v1/bookings/u0/cancel")
        seen, cursor = [], ""
        while True:
            st, page, _ = self.svc.request("GET", "/v1/bookings?limit=3&cursor=" + cursor)
            self.assertEqual(st, 200)
            seen += [b["uid"] for b in page["bookings"]]
            if page["next_cursor"] is None:
                break
            cursor = page["next_cursor"]
        self.assertEqual(seen, ["u%d" % i for i in range(7)])
        st, page, _ = self.svc.request("GET", "/v1/bookings?calendar_id=%d&status=accepted" % cal1["id"])
        self.assertEqual([b["uid"] for b in page["bookings"]], ["u2", "u4", "u6"])
        self.assertIsNone(page["next_cursor"])
        st, page, _ = self.svc.request("GET", "/v1/bookings?status=cancelled")
        self.assertEqual([b["uid"] for b in page["bookings"]], ["u0"])
        self.assertError(self.svc.request("GET", "/v1/bookings?status=maybe"), 400)
        self.assertError(self.svc.request("GET", "/v1/bookings?calendar_id=x"), 400)
        self.assertError(self.svc.request("GET", "/v1/bookings?limit=0"), 400)


class TestHttpEdges(ApiCase):
    def test_oversized_body_413_not_processed(self):
        cal = self.calendar()
        before = self.svc.snapshot()
        big = dict(BOOKING, calendar_id=cal["id"], title="x" * (1 << 20))
        self.assertError(self.svc.request("POST", "/v1/bookings", big), 413, "payload_too_large")
        self.assertEqual(self.svc.snapshot(), before)
        # chunked, no Content-Length
        conn = http.client.HTTPConnection("127.0.0.1", self.svc.port, timeout=10)
        def chunks():
            for _ in range(20):
                yield b"x" * 65536
        conn.request("POST", "/v1/bookings", body=chunks(), encode_chunked=True,
                     headers={"Transfer-Encoding": "chunked"})
        r = conn.getresponse()
        self.assertEqual(r.status, 413)
        conn.close()
        self.assertEqual(self.svc.snapshot(), before)
        # absurd declared length: answered at once
        s = socket.create_connection(("127.0.0.1", self.svc.port), timeout=5)
        s.sendall(b"POST /v1/bookings HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
        self.assertIn(b" 413 ", s.recv(4096))
        s.close()

    def test_unknown_routes_404(self):
        self.assertError(self.svc.request("GET", "/v2/nothing"), 404, "not_found")
        self.assertError(self.svc.request("DELETE", "/v1/bookings"), 404)
        self.assertError(self.svc.request("PUT", "/v1/bookings/x"), 404)

    def test_healthz_and_metrics(self):
        st, h, _ = self.svc.request("GET", "/healthz")
        self.assertEqual(st, 200)
        self.assertEqual(h["status"], "ok")
        self.svc.request("GET", "/v1/bookings/missing")
        st, text, hdrs = self.svc.request("GET", "/metrics", raw=True)
        self.assertEqual(st, 200)
        self.assertTrue(hdrs["content-type"].startswith("text/plain"))
        text = text.decode()
        self.assertIn('calsync_http_requests_total{route="/v1/bookings/{uid}",method="GET",status="404"} 1', text)
        self.assertIn("# TYPE calsync_http_requests_total counter", text)

    @unittest.skipIf(PG, "a SQLite file made unusable; the e2e suite runs it")
    def test_migrate_fails_cleanly_on_unusable_database(self):
        # a database path that is a directory: migrate exits 1 naming the database
        self.svc.stop()
        os.remove(self.svc.db_path)
        for ext in ("-wal", "-shm"):
            if os.path.exists(self.svc.db_path + ext):
                os.remove(self.svc.db_path + ext)
        os.mkdir(self.svc.db_path)
        st = subprocess.run([BIN, "migrate", "-c", self.svc.config_path],
                            capture_output=True, text=True)
        self.assertEqual(st.returncode, 1)
        self.assertIn("database", st.stderr)


class TestAuth(CalsyncCase):
    api_token = "t0ken-s3cret"

    def test_bearer_required_on_v1(self):
        svc = self.start()
        before = svc.snapshot()
        for hdr in (None, "Bearer wrong", "Basic dDp0", "Bearer", "bearer t0ken-s3cre"):
            headers = {"Authorization": hdr} if hdr else {}
            resp = svc.request("POST", "/v1/credentials",
                               {"provider": "google", "refresh_token": "x"},
                               headers=headers, token=False)
            self.assertError(resp, 401, "unauthorized")
            self.assertError(svc.request("GET", "/v1/bookings", headers=headers, token=False), 401)
        self.assertEqual(svc.snapshot(), before)
        st, _, _ = svc.request("POST", "/v1/credentials",
                               {"provider": "google", "refresh_token": "x"})
        self.assertEqual(st, 201)
        # health, metrics and Google's webhook need no token
        self.assertEqual(svc.request("GET", "/healthz", token=False)[0], 200)
        self.assertEqual(svc.request("GET", "/metrics", token=False)[0], 200)
        self.assertEqual(svc.request("POST", "/webhooks/google", token=False,
                                     headers={"X-Goog-Channel-ID": "nope"})[0], 200)


class TestLifecycle(CalsyncCase):
    def test_restart_keeps_everything(self):
        svc = self.start()
        st, cred, _ = svc.request("POST", "/v1/credentials", {"provider": "google", "refresh_token": "r"})
        st, cal, _ = svc.request("POST", "/v1/calendars", {"credential_id": cred["id"], "external_id": "p"})
        st, b, _ = svc.request("POST", "/v1/bookings", dict(BOOKING, calendar_id=cal["id"]))
        self.assertEqual(st, 201)
        self.assertEqual(svc.stop(signal.SIGINT), 0)
        svc.start()
        st, again, _ = svc.request("GET", "/v1/bookings/bk-1")
        self.assertEqual(again, b)
        st, audit, _ = svc.request("GET", "/v1/bookings/bk-1/audit")
        self.assertEqual(len(audit["entries"]), 1)
        svc.kill9()
        svc.start()
        self.assertEqual(svc.request("GET", "/v1/bookings/bk-1")[1], b)

    def test_sigterm_exit_0(self):
        svc = self.start()
        self.assertEqual(svc.stop(signal.SIGTERM), 0)
        self.assertIn("event=service.stopped", svc.log_text())


class TestCommandLine(unittest.TestCase):
    def run_cli(self, *args):
        return subprocess.run([BIN] + list(args), capture_output=True, text=True, timeout=20)

    def test_exit_codes(self):
        self.assertEqual(self.run_cli("version").returncode, 0)
        self.assertEqual(self.run_cli("help").returncode, 0)
        self.assertEqual(self.run_cli("-h").returncode, 0)
        for cmd in (["serve", "-h"], ["migrate", "--help"], ["policy", "check", "-h"],
                    ["policy", "test", "-h"], ["version", "-h"]):
            r = self.run_cli(*cmd)
            self.assertEqual(r.returncode, 0, cmd)
            self.assertIn("usage", r.stdout.lower())
        self.assertEqual(self.run_cli("frobnicate").returncode, 2)
        self.assertEqual(self.run_cli().returncode, 2)
        self.assertEqual(self.run_cli("serve", "--bogus").returncode, 2)
        self.assertEqual(self.run_cli("serve", "-c").returncode, 2)

    def test_config_error_exit_1_names_key_and_line(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "c.lua")
            with open(path, "w") as f:
                f.write('database = "x.db"\ngoogle = { client_secrte = "s" }\n')
            r = self.run_cli("serve", "-c", path)
            self.assertEqual(r.returncode, 1)
            self.assertIn("c.lua:2: unknown key 'google.client_secrte'", r.stderr)
            r = self.run_cli("migrate", "-c", os.path.join(d, "missing.lua"))
            self.assertEqual(r.returncode, 1)

    def test_migrate(self):
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "c.lua")
            with open(path, "w") as f:
                f.write('database = "%s/m.db"\n' % d)
            r = self.run_cli("migrate", "-c", path)
            self.assertEqual(r.returncode, 0, r.stderr)
            import sqlite3
            con = sqlite3.connect(os.path.join(d, "m.db"))
            tables = {t for (t,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            for t in ("credentials", "calendars", "channels", "events", "bookings",
                      "booking_refs", "audit", "outbox", "jobs"):
                self.assertIn(t, tables)
            self.assertEqual(con.execute("PRAGMA journal_mode").fetchone()[0], "wal")
            v = con.execute("PRAGMA user_version").fetchone()[0]
            con.close()
            self.assertGreaterEqual(v, 1)
            r = self.run_cli("migrate", "-c", path)   # idempotent
            self.assertEqual(r.returncode, 0)


if __name__ == "__main__":
    unittest.main()
