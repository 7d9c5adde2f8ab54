"""End-to-end: calsync's Google client and sync against tests/fake_google.py.

Real binary, real sockets: the fake runs as a subprocess, calsync is pointed
at it through `google = {...}` in its config, and the tests look at three
things only: the fake's request log (/_control/requests), calsync's SQLite
mirror (svc.db()) and calsync's API.
"""
import os
import re
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fake_google import FakeGoogle  # noqa: E402
from harness import PG, CalsyncCase, future, instance_id, lua_str, ymd  # noqa: E402
from receiver import Receiver  # noqa: E402

CAL = "primary"


def timed(start, end, tz=None, **extra):
    ev = {"start": {"dateTime": start}, "end": {"dateTime": end}}
    if tz:
        ev["start"]["timeZone"] = ev["end"]["timeZone"] = tz
    ev.update(extra)
    return ev


def ms(rfc3339):
    from datetime import datetime
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


class GoogleSyncCase(CalsyncCase):
    poll_interval = 600
    refresh_token = "rt-calsync"

    def setUp(self):
        super().setUp()
        self.fg = FakeGoogle().start()
        self.addCleanup(self.fg.stop)
        self.fg.control("POST", "/config", {"client_id": "x", "client_secret": "y"})
        # These tests drive syncs themselves (API, polling); pushes from the
        # channel calsync opens would add syncs at random points, so they
        # are dropped here. test_channels covers the push path.
        self.fg.control("POST", "/notification_faults",
                        {"action": "drop", "count": 1000000, "state": "exists"})
        self.config_extra = "\n".join([
            "google = { api_base = %s, token_url = %s, client_id = \"x\","
            " client_secret = \"y\" }" % (lua_str(self.fg.api_base), lua_str(self.fg.token_url)),
            "poll_interval = %d" % self.poll_interval,
        ])

    # -- helpers ---------------------------------------------------------------

    def wait_for(self, fn, timeout=20, what="condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = fn()
            if v:
                return v
            time.sleep(0.05)
        self.fail("timed out waiting for " + what + "\n" + self.svc.log_text()[-3000:])

    def credential(self, **extra):
        body = {"provider": "google", "refresh_token": self.refresh_token}
        body.update(extra)
        st, b, _ = self.svc.request("POST", "/v1/credentials", body)
        self.assertEqual(st, 201, b)
        return b["id"]

    def calendar(self, cred):
        st, b, _ = self.svc.request("POST", "/v1/calendars",
                                    {"credential_id": cred, "external_id": CAL})
        self.assertEqual(st, 201, b)
        return b["id"]

    def cal_row(self, cal):
        with self.svc.db() as con:
            return con.execute("SELECT state, sync_token, last_synced_at, state_reason"
                               " FROM calendars WHERE id = ?", (cal,)).fetchone()

    def wait_synced(self, cal, after=None, timeout=30):
        """Waits for a successful sync that ends after `after` (a
        last_synced_at value); returns the new last_synced_at."""
        def done():
            row = self.cal_row(cal)
            if row and row[2] is not None and (after is None or row[2] > after):
                return row[2]
            return None
        # PostgreSQL: a statement is a round trip, not a call into the
        # process; 5,000 events of a full listing take tens of seconds on
        # a loaded 2-core machine (docs/performance.md)
        return self.wait_for(done, timeout * (3 if PG else 1), "a sync of calendar %s" % cal)

    def sync_now(self, cal):
        before = self.cal_row(cal)[2]
        st, b, _ = self.svc.request("POST", "/v1/calendars/%d/sync" % cal)
        self.assertEqual(st, 202, b)
        return before

    def dirty(self, cal):
        with self.svc.db() as con:
            return con.execute("SELECT dirty FROM calendars WHERE id = ?", (cal,)).fetchone()[0]

    def sync_and_wait(self, cal, timeout=30):
        """Requests a sync and waits until one that BEGAN after the request
        has completed: the positive sign that everything Google held before
        this call has been read and decided (and each decision's audit entry
        and outbox rows committed with it). The request raises
        calendars.dirty, a generation that only a sync which read it at its
        start clears (docs/internals/intake.md); a sync already running, or
        one that fails, leaves it set."""
        self.sync_now(cal)
        self.wait_for(lambda: self.dirty(cal) == 0, timeout,
                      "a sync of calendar %s that began after the request" % cal)

    def mirror(self, cal):
        with self.svc.db() as con:
            rows = con.execute(
                "SELECT id, etag, status, start_ms, end_ms, all_day, series_id,"
                " original_start_ms, updated, title, booking_tag FROM events"
                " WHERE calendar_id = ?", (cal,)).fetchall()
        keys = ("id", "etag", "status", "start_ms", "end_ms", "all_day", "series_id",
                "original_start_ms", "updated", "title", "booking_tag")
        return {r[0]: dict(zip(keys, r)) for r in rows}

    def google_items(self, **query):
        """Every item of the fake's calendar, all pages, deleted ones too;
        `query` adds or overrides events.list parameters."""
        tok = self.fg.access_token("listing-only")
        out, page = [], None
        while True:
            q = {"showDeleted": "true", "maxResults": "2500"}
            q.update(query)
            if page:
                q["pageToken"] = page
            st, b, _ = self.fg.api("GET", "/calendars/%s/events" % CAL, token=tok, query=q)
            self.assertEqual(st, 200, b)
            out.extend(b.get("items", []))
            page = b.get("nextPageToken")
            if not page:
                return out

    def google_listing(self):
        """Every event of the fake's calendar as calsync should mirror it:
        singleEvents=true, showDeleted=true, all pages."""
        return {it["id"]: it for it in self.google_items(singleEvents="true")}

    def requests(self, **q):
        qs = urllib.parse.urlencode(q)
        return self.fg.control("GET", "/requests" + ("?" + qs if qs else ""))["requests"]

    def fault_hits(self, fault):
        """How many requests a fault rule (as POST /_control/faults returned
        it) has caught so far. A rule is taken when its request arrives, so
        a delay rule with a hit is a request the fake is holding."""
        rules = self.fg.control("GET", "/faults")["faults"]
        return [r["hits"] for r in rules if r["id"] == fault["id"]][0]

    def assert_mirror_equals_google(self, cal):
        g = self.google_listing()
        m = self.mirror(cal)
        live_m = {k for k, v in m.items() if v["status"] != "cancelled"}
        live_g = {k for k, v in g.items() if v.get("status") != "cancelled"}
        self.assertEqual(live_m, live_g)
        for eid in live_g:
            ev, row = g[eid], m[eid]
            self.assertEqual(row["etag"], ev["etag"], eid)
            self.assertEqual(row["title"], ev.get("summary"), eid)
            s, e = ev["start"], ev["end"]
            if "date" in s:
                self.assertEqual(row["all_day"], 1)
                self.assertEqual(row["start_ms"], ms(s["date"] + "T00:00:00Z"))
            else:
                self.assertEqual(row["all_day"], 0)
                self.assertEqual(row["start_ms"], ms(s["dateTime"]), eid)
                self.assertEqual(row["end_ms"], ms(e["dateTime"]), eid)
            self.assertEqual(row["series_id"], ev.get("recurringEventId"), eid)
        return m

    def start_synced(self, **cred_extra):
        self.start()
        cred = self.credential(**cred_extra)
        cal = self.calendar(cred)
        last = self.wait_synced(cal)
        return cred, cal, last


class FullAndIncrementalTest(GoogleSyncCase):
    def test_full_sync_over_pages_then_incremental(self):
        # 5,000 events: two daily series of 2,499 occurrences (the fake
        # expands them: singleEvents=true) plus two one-off events, so the
        # full listing takes two pages of maxResults=2500.
        self.fg.control("POST", "/config", {"expand_days": 20000, "max_instances": 5000})
        a = self.fg.host(CAL, op="create", event=timed(
            future(2, 9), future(2, 9, 30), tz="UTC", summary="Standup",
            recurrence=["RRULE:FREQ=DAILY;COUNT=2499"]))
        self.fg.host(CAL, op="create", event=timed(
            future(2, 15), future(2, 15, 45), tz="UTC", summary="Review",
            recurrence=["RRULE:FREQ=DAILY;COUNT=2499"]))
        one = self.fg.host(CAL, op="create", event=timed(
            future(3, 10), future(3, 11), summary="One-off",
            extendedProperties={"private": {"calsync_booking_uid": "bk-1"}}))
        day = self.fg.host(CAL, op="create", event={
            "start": {"date": ymd(20)}, "end": {"date": ymd(21)}, "summary": "Holiday"})
        cred, cal, last = self.start_synced()
        lists = self.requests(op="events.list")
        self.assertEqual(len(lists), 2, [r["query"] for r in lists])
        for r in lists:
            q = r["query"]
            self.assertEqual(q["singleEvents"], ["true"])
            self.assertEqual(q["maxResults"], ["2500"])
            self.assertEqual(q["showDeleted"], ["true"])
            self.assertNotIn("syncToken", q)
        self.assertNotIn("pageToken", lists[0]["query"])
        self.assertIn("pageToken", lists[1]["query"])
        m = self.assert_mirror_equals_google(cal)
        self.assertEqual(len(m), 5000)
        self.assertRegex(self.svc.log_text(), r"event=sync\.done .*kind=full .*pages=2 events=5000 ")
        self.assertEqual(m[one["id"]]["booking_tag"], "bk-1")
        self.assertEqual(m[day["id"]]["all_day"], 1)
        inst = instance_id(a["id"], future(4, 9))
        self.assertEqual(m[inst]["series_id"], a["id"])
        self.assertEqual(m[inst]["original_start_ms"], ms(future(4, 9)))
        st, b, _ = self.svc.request("GET", "/v1/calendars/%d" % cal)
        self.assertEqual(b["state"], "active")
        self.assertIsNotNone(b["last_synced_at"])
        token1 = self.cal_row(cal)[1]
        self.assertTrue(token1)

        # incremental: insert, move, delete, occurrence exceptions
        self.fg.control("DELETE", "/requests")
        new = self.fg.host(CAL, op="create", event=timed(
            future(4, 10), future(4, 11), summary="New"))
        self.fg.host(CAL, op="move", id=one["id"], start=future(3, 12), end=future(3, 13))
        self.fg.host(CAL, op="delete", id=day["id"])
        self.fg.host(CAL, op="move", series=a["id"], original_start=future(5, 9),
                     start=future(5, 10), end=future(5, 10, 30))
        self.fg.host(CAL, op="delete", series=a["id"], original_start=future(6, 9))
        self.sync_now(cal)
        self.wait_synced(cal, last)
        lists = self.requests(op="events.list")
        self.assertTrue(lists)
        for r in lists:
            self.assertEqual(r["query"]["syncToken"], [token1])
            for refused in ("timeMin", "timeMax", "updatedMin", "orderBy", "q", "iCalUID"):
                self.assertNotIn(refused, r["query"])
        m = self.assert_mirror_equals_google(cal)
        self.assertEqual(m[new["id"]]["title"], "New")
        self.assertEqual(m[one["id"]]["start_ms"], ms(future(3, 12)))
        self.assertEqual(m[day["id"]]["status"], "cancelled")
        self.assertEqual(m[day["id"]]["title"], "Holiday")  # kept for matching
        moved = m[instance_id(a["id"], future(5, 9))]
        self.assertEqual(moved["start_ms"], ms(future(5, 10)))
        self.assertEqual(moved["original_start_ms"], ms(future(5, 9)))
        gone = m[instance_id(a["id"], future(6, 9))]
        self.assertEqual(gone["status"], "cancelled")
        self.assertEqual(gone["series_id"], a["id"])
        self.assertNotEqual(self.cal_row(cal)[1], token1)

        # deleting the whole series cascades to every occurrence
        before = self.cal_row(cal)[2]
        self.fg.host(CAL, op="delete", id=a["id"])
        self.sync_now(cal)
        self.wait_synced(cal, before)
        m = self.mirror(cal)
        live = [k for k, v in m.items() if v["series_id"] == a["id"] and v["status"] != "cancelled"]
        self.assertEqual(live, [])
        self.svc.stop()

    def test_410_full_resync_and_bad_token_400(self):
        e1 = self.fg.host(CAL, op="create", event=timed(
            future(2, 10), future(2, 11), summary="Keep"))
        e2 = self.fg.host(CAL, op="create", event=timed(
            future(2, 12), future(2, 13), summary="Drop"))
        cred, cal, last = self.start_synced()
        old_token = self.cal_row(cal)[1]
        self.fg.control("POST", "/invalidate_sync_tokens", {})
        self.fg.host(CAL, op="delete", id=e2["id"])
        self.fg.control("DELETE", "/requests")
        self.sync_now(cal)
        last = self.wait_synced(cal, last)
        lists = self.requests(op="events.list")
        self.assertEqual(lists[0]["query"].get("syncToken"), [old_token])
        self.assertEqual(lists[0]["status"], 410)
        self.assertNotIn("syncToken", lists[1]["query"])
        self.assertEqual(lists[-1]["status"], 200)
        m = self.mirror(cal)
        self.assertEqual(m[e2["id"]]["status"], "cancelled")
        self.assertEqual(m[e1["id"]]["status"], "confirmed")
        self.assertNotEqual(self.cal_row(cal)[1], old_token)
        self.assertEqual(self.cal_row(cal)[0], "active")

        # a malformed token gives 400 "invalid" on Google (fixture
        # error-400-invalid-sync-token-value.json): also a full resync
        with self.svc.db() as con:
            con.execute("UPDATE calendars SET sync_token = 'x' WHERE id = ?", (cal,))
        self.fg.control("DELETE", "/requests")
        self.sync_now(cal)
        self.wait_synced(cal, last)
        lists = self.requests(op="events.list")
        self.assertEqual(lists[0]["status"], 400)
        self.assertNotIn("syncToken", lists[1]["query"])
        self.assertNotEqual(self.cal_row(cal)[1], "x")
        self.assert_mirror_equals_google(cal)
        self.svc.stop()

    def test_events_missing_from_full_listing_are_swept(self):
        e1 = self.fg.host(CAL, op="create", event=timed(
            future(2, 10), future(2, 11), summary="Keep"))
        cred, cal, last = self.start_synced()
        # a mirrored event Google no longer lists at all (beyond its
        # retention of deleted events)
        with self.svc.db() as con:
            con.execute("INSERT INTO events (calendar_id, id, etag, status, start_ms, end_ms,"
                        " title) VALUES (?, 'ghost', '\"1\"', 'confirmed', 0, 1, 'Ghost')", (cal,))
            con.execute("UPDATE calendars SET sync_token = NULL WHERE id = ?", (cal,))
        self.sync_now(cal)
        self.wait_synced(cal, last)
        m = self.mirror(cal)
        self.assertEqual(m["ghost"]["status"], "cancelled")
        self.assertEqual(m["ghost"]["title"], "Ghost")
        self.assertEqual(m[e1["id"]]["status"], "confirmed")
        self.assertIn('kind="full",result="ok"', self.svc.request("GET", "/metrics", raw=True)[1].decode())
        self.svc.stop()


class FailuresTest(GoogleSyncCase):
    def test_429_retry_after_is_honoured(self):
        self.fg.host(CAL, op="create", event=timed(
            future(2, 10), future(2, 11), summary="A"))
        cred, cal, last = self.start_synced()
        self.fg.control("DELETE", "/requests")
        self.fg.control("POST", "/faults", {"status": 429, "count": 2, "retry_after": 2,
                                            "ops": ["events.list"]})
        self.sync_now(cal)
        self.wait_synced(cal, last, timeout=30)
        lists = self.requests(op="events.list")
        self.assertEqual([r["status"] for r in lists], [429, 429, 200])
        t = [ms(r["time"]) for r in lists]
        self.assertGreaterEqual(t[1] - t[0], 2000 - 50)
        self.assertGreaterEqual(t[2] - t[1], 2000 - 50)
        # waited as given, not longer: the wait calsync chose, from its log
        # (how long the wait really took depends on the machine)
        waits = re.findall(r"event=google\.retry method=events\.list status=429 .*wait_ms=(\d+)",
                           self.svc.log_text())
        self.assertEqual(waits, ["2000", "2000"])
        body = self.svc.request("GET", "/metrics", raw=True)[1].decode()
        self.assertIn('calsync_google_retries_total{method="events.list"} 2', body)
        self.assertIn('calsync_google_requests_total{method="events.list",status="429"} 2', body)
        self.svc.stop()

    def test_403_rate_limit_and_503_back_off_but_404_does_not_retry(self):
        self.fg.host(CAL, op="create", event=timed(
            future(2, 10), future(2, 11), summary="A"))
        cred, cal, last = self.start_synced()
        self.fg.control("DELETE", "/requests")
        self.fg.control("POST", "/faults", {"status": 403, "reason": "rateLimitExceeded",
                                            "count": 1, "ops": ["events.list"]})
        self.fg.control("POST", "/faults", {"status": 503, "count": 1, "ops": ["events.list"]})
        self.sync_now(cal)
        last = self.wait_synced(cal, last)
        lists = self.requests(op="events.list")
        self.assertEqual([r["status"] for r in lists], [403, 503, 200])
        t = [ms(r["time"]) for r in lists]
        self.assertGreaterEqual(t[1] - t[0], 500 - 50)    # 1 s, jitter >= half
        self.assertGreaterEqual(t[2] - t[1], 1000 - 50)   # 2 s, jitter >= half

        # a 403 that is not a rate limit is not retried: the calendar errs
        self.fg.control("DELETE", "/requests")
        self.fg.control("POST", "/faults", {"status": 403, "reason": "forbidden",
                                            "count": 1, "ops": ["events.list"]})
        self.sync_now(cal)
        self.wait_for(lambda: self.cal_row(cal)[0] == "error", what="state error")
        self.assertEqual(len(self.requests(op="events.list")), 1)
        # and recovers with the next good sync
        self.sync_now(cal)
        self.wait_for(lambda: self.cal_row(cal)[0] == "active", what="state active")
        self.svc.stop()

    def test_truncated_and_mistyped_responses_fail_cleanly(self):
        e1 = self.fg.host(CAL, op="create", event=timed(
            future(2, 10), future(2, 11), summary="A"))
        cred, cal, last = self.start_synced()
        def failures():
            return self.svc.log_text().count("event=sync.failed ")
        for mode in ("truncated_json", "wrong_types", "html"):
            with self.subTest(mode=mode):
                self.fg.host(CAL, op="retitle", id=e1["id"], summary="B-" + mode)
                snap = self.svc.snapshot({"events": "*"})
                row = self.cal_row(cal)
                failed = failures()
                self.fg.control("DELETE", "/requests")
                self.fg.control("POST", "/faults", {"mode": mode, "count": 1,
                                                    "ops": ["events.list"]})
                self.sync_now(cal)
                self.wait_for(lambda: self.requests(op="events.list"), what="the list call")
                # this sync's failure, logged once it has rolled back: the
                # positive sign that it is over (not the previous mode's)
                self.wait_for(lambda: failures() > failed, what="the failure logged")
                after = self.svc.snapshot({"events": "*"})
                self.assertEqual(snap["events"], after["events"])
                self.assertEqual(self.cal_row(cal)[:3], row[:3])  # token untouched
                self.sync_now(cal)
                last = self.wait_synced(cal, last)
                self.assertEqual(self.mirror(cal)[e1["id"]]["title"], "B-" + mode)
        self.svc.stop()


class OAuthTest(GoogleSyncCase):
    def test_refresh_ahead_of_expiry_and_401_refreshes_once(self):
        # a stored token that expires within the refresh margin is renewed
        # before the call, not after a 401
        tok = self.fg.access_token(self.refresh_token, expires_in=3600)
        soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30))
        self.start()
        cred = self.credential(access_token=tok, expires_at=soon)
        cal = self.calendar(cred)
        last = self.wait_synced(cal)
        reqs = self.requests()
        self.assertEqual(reqs[0]["op"], "token")
        self.assertEqual(reqs[0]["body"]["grant_type"], "refresh_token")
        self.assertEqual(reqs[0]["body"]["refresh_token"], self.refresh_token)
        self.assertEqual(reqs[0]["body"]["client_id"], "x")
        self.assertEqual(reqs[0]["body"]["client_secret"], "y")
        self.assertEqual([r["status"] for r in reqs if r["op"] == "events.list"], [200])
        with self.svc.db() as con:
            at, exp = con.execute("SELECT access_token, expires_at FROM credentials"
                                  " WHERE id = ?", (cred,)).fetchone()
        self.assertNotEqual(at, tok)
        self.assertGreater(exp, time.time() * 1000 + 3000 * 1000)

        # Google expires the token early: 401 -> one refresh -> retry
        self.fg.control("POST", "/expire_access_tokens", {})
        self.fg.control("DELETE", "/requests")
        self.sync_now(cal)
        self.wait_synced(cal, last)
        ops = [(r["op"], r["status"]) for r in self.requests()]
        self.assertEqual(ops, [("events.list", 401), ("token", 200), ("events.list", 200)])
        self.svc.stop()

    def test_invalid_grant_revokes_calendar_and_deletes_nothing(self):
        self.fg.host(CAL, op="create", event=timed(
            future(2, 10), future(2, 11), summary="A"))
        rx = Receiver().start()
        self.addCleanup(rx.stop)
        self.config_extra += "\n" + rx.config()
        cred, cal, last = self.start_synced()
        st, b, _ = self.svc.request("POST", "/v1/calendars",
                                    {"credential_id": cred, "external_id": "other@example.com"})
        other = b["id"]
        self.wait_synced(other)
        mirror = self.mirror(cal)
        self.assertEqual(len(mirror), 1)
        self.fg.control("POST", "/revoke", {"refresh_token": self.refresh_token})
        self.fg.control("POST", "/expire_access_tokens", {})
        self.fg.control("DELETE", "/requests")
        self.sync_now(cal)
        self.wait_for(lambda: self.svc.request("GET", "/v1/calendars/%d" % cal)[1]["state"]
                      == "revoked", what="state revoked")
        self.assertIn("invalid_grant", self.cal_row(cal)[3])
        self.assertEqual(self.mirror(cal), mirror)
        ops = [(r["op"], r["status"]) for r in self.requests()]
        self.assertEqual(ops, [("events.list", 401), ("token", 400)])
        # it stops syncing: a sync request is refused, no call reaches Google
        st, _, _ = self.svc.request("POST", "/v1/calendars/%d/sync" % cal)
        self.assertEqual(st, 409)
        self.assertEqual(self.cal_row(other)[0], "revoked")
        # ... as a later sync shows: a calendar of another credential, added
        # after the refusal, is synced (the scheduler and the workers ran
        # since), and still only the two calls above carry the revoked
        # credential or its calendars
        third = self.svc.request("POST", "/v1/calendars", {
            "credential_id": self.credential(refresh_token="rt-another"),
            "external_id": "third@example.com"})[1]["id"]
        self.wait_synced(third)
        def theirs(r):        # the new credential's and its calendar's calls
            return "third" in r["path"] or (r["op"] == "token" and (
                r.get("body") or {}).get("refresh_token") == "rt-another")
        self.assertTrue([r for r in self.requests() if theirs(r)])
        self.assertEqual([(r["op"], r["status"]) for r in self.requests() if not theirs(r)],
                         [("events.list", 401), ("token", 400)])
        body = self.svc.request("GET", "/metrics", raw=True)[1].decode()
        self.assertIn('calsync_calendar_errors_total{state="revoked"} 2', body)
        # one CALENDAR_ERROR per calendar of the credential: two outbox rows,
        # both acknowledged, and no other webhook
        with self.svc.db() as con:
            rows = con.execute("SELECT trigger FROM outbox").fetchall()
        self.assertEqual(rows, [("CALENDAR_ERROR",), ("CALENDAR_ERROR",)])

        def drained():
            with self.svc.db() as con:
                return con.execute("SELECT count(*) FROM outbox WHERE state = 'pending'"
                                   ).fetchone()[0] == 0
        self.wait_for(drained, what="both webhooks acknowledged")
        errs = [d.json for d in rx.deliveries if d.json["triggerEvent"] == "CALENDAR_ERROR"]
        self.assertEqual(sorted(e["payload"]["calendarId"] for e in errs), sorted([cal, other]))
        for e in errs:
            self.assertEqual(e["payload"]["state"], "revoked")
            self.assertIn("invalid_grant", e["payload"]["reason"])
        self.svc.stop()


class PollingTest(GoogleSyncCase):
    poll_interval = 1

    def test_polls_without_requests(self):
        cred, cal, last = self.start_synced()
        self.fg.control("DELETE", "/requests")
        # polls keep coming with no request, push or change (how often, on
        # an idle machine, is `make bench`'s to measure: "google idle")
        lists = self.wait_for(lambda: (lambda ls: len(ls) >= 3 and ls)(
            self.requests(op="events.list")), 60, "three polls")
        # and never in a busy loop: one poll_interval (less its 10 % jitter)
        # lies between two, however slow the machine
        t = [ms(r["time"]) for r in lists]
        for a, b in zip(t, t[1:]):
            self.assertGreaterEqual(b - a, 1000 * self.poll_interval * 0.9 - 50, t)
        self.svc.stop()


class SchedulerTest(GoogleSyncCase):
    def test_requests_during_a_sync_cause_exactly_one_more(self):
        cred, cal, last = self.start_synced()
        self.fg.control("DELETE", "/requests")
        hold = self.fg.control("POST", "/faults", {"delay_ms": 3000, "count": 1,
                                                   "ops": ["events.list"]})
        self.sync_now(cal)
        # the first sync is waiting on Google: the fake holds its list call
        self.wait_for(lambda: self.fault_hits(hold) == 1, what="the first sync's list held")
        for _ in range(5):
            self.sync_now(cal)
        # a sync that began after the five requests has completed ...
        self.wait_for(lambda: self.dirty(cal) == 0, 30, "the sync after the requests")
        self.assertEqual([r["fault"] is not None for r in self.requests(op="events.list")],
                         [True, False])
        # ... and exactly one: a sync asked for now is the third, not a fourth
        self.sync_and_wait(cal)
        self.assertEqual(len(self.requests(op="events.list")), 3)
        self.svc.stop()

    def test_slow_calendar_does_not_delay_another(self):
        self.start()
        cred = self.credential()
        slow = self.calendar(cred)
        st, b, _ = self.svc.request("POST", "/v1/calendars",
                                    {"credential_id": cred, "external_id": "other@example.com"})
        self.assertEqual(st, 201, b)
        fast = b["id"]
        l_slow, l_fast = self.wait_synced(slow), self.wait_synced(fast)
        # the slow calendar's next call is held 10 s: a generous margin for
        # the other's whole sync on a loaded machine, under the sanitizers
        hold = self.fg.control("POST", "/faults", {"delay_ms": 10000, "count": 1,
                                                   "paths": "/calendars/primary/"})
        self.sync_now(slow)
        self.wait_for(lambda: self.fault_hits(hold) == 1, what="the slow calendar's call held")
        self.sync_now(fast)
        self.wait_synced(fast, l_fast)
        st, _, _ = self.svc.request("GET", "/healthz")   # HTTP is not held up either
        self.assertEqual(st, 200)
        self.assertEqual(self.cal_row(slow)[2], l_slow)  # still waiting on Google
        self.wait_synced(slow, l_slow)
        self.svc.stop()

    def test_dirty_flag_in_the_database_is_picked_up(self):
        cred, cal, last = self.start_synced()
        with self.svc.db() as con:
            con.execute("UPDATE calendars SET dirty = 1 WHERE id = ?", (cal,))
        self.wait_synced(cal, last, timeout=5)
        self.assertEqual(self.cal_row(cal)[0], "active")
        with self.svc.db() as con:
            self.assertEqual(con.execute("SELECT dirty FROM calendars WHERE id = ?",
                                         (cal,)).fetchone()[0], 0)
        self.svc.stop()

    def test_stop_during_a_retry_wait_is_prompt_and_clean(self):
        self.fg.host(CAL, op="create", event=timed(
            future(2, 10), future(2, 11), summary="A"))
        cred, cal, last = self.start_synced()
        row, mirror = self.cal_row(cal), self.mirror(cal)
        self.fg.host(CAL, op="create", event=timed(
            future(3, 10), future(3, 11), summary="B"))
        self.fg.control("POST", "/faults", {"status": 429, "count": 5, "retry_after": 60,
                                            "ops": ["events.list"]})
        self.sync_now(cal)
        self.wait_for(lambda: self.requests(op="events.list", status=429), what="a 429")
        # prompt: well inside the 60 s Retry-After (stop fails the test if
        # the process is not gone within its timeout)
        self.svc.stop(timeout=20)
        self.svc = None
        from harness import Calsync
        # nothing of the interrupted sync was applied
        probe = Calsync(self.tmp)
        with probe.db() as con:
            self.assertEqual(con.execute("SELECT state, sync_token, last_synced_at,"
                                         " state_reason FROM calendars WHERE id = ?",
                                         (cal,)).fetchone(), row)
        self.svc = probe
        self.assertEqual(self.mirror(cal), mirror)
        self.svc = None


class RecurringTest(GoogleSyncCase):
    def test_split_and_truncate_series(self):
        s = self.fg.host(CAL, op="create", event=timed(
            future(2, 9), future(2, 9, 30), tz="UTC", summary="Daily",
            recurrence=["RRULE:FREQ=DAILY;COUNT=10"]))
        cred, cal, last = self.start_synced()
        self.assertEqual(len(self.mirror(cal)), 10)
        # "this and following" from the 6th: the old series ends, a new one starts
        self.fg.host(CAL, op="split", series=s["id"], original_start=future(7, 9),
                     event={"summary": "Daily (new)"})
        self.sync_now(cal)
        last = self.wait_synced(cal, last)
        m = self.assert_mirror_equals_google(cal)
        old_live = [k for k, v in m.items() if v["series_id"] == s["id"] and v["status"] != "cancelled"]
        self.assertEqual(len(old_live), 5)
        new = [v for v in m.values() if v["title"] == "Daily (new)" and v["status"] != "cancelled"]
        self.assertEqual(len(new), 5)
        # "delete this and following" on the old half: only UNTIL moves
        self.fg.host(CAL, op="truncate", series=s["id"], original_start=future(5, 9))
        self.sync_now(cal)
        self.wait_synced(cal, last)
        m = self.assert_mirror_equals_google(cal)
        old_live = [k for k, v in m.items() if v["series_id"] == s["id"] and v["status"] != "cancelled"]
        self.assertEqual(len(old_live), 3)
        self.svc.stop()
