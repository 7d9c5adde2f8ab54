"""Issue 21, item 2, end to end: no id from the API or from Google can
change the path of a Google request. An `event_id` of ".." turned a
booking's PATCH into `PATCH /calendar/v3/calendars/primary/` and its cancel
into `DELETE /calendar/v3/calendars/primary` (calendars.delete on real
Google deletes a secondary calendar with every event).

Each test reads the fake Google's request log (/_control/requests) and
checks the path of every request calsync sent. Times are relative to now.
"""
import os
import re
import sys
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_google_sync import CAL, GoogleSyncCase, timed  # noqa: E402

# Every path calsync may send, raw (as on the wire): a calendar's events
# collection, one event (and its instances), watch, channels.stop, the
# token endpoint. A segment is unreserved characters or %XX escapes only,
# so "." and ".." can never be one.
SEG = r"(?:[A-Za-z0-9_~-]|%[0-9A-F]{2})+"
ALLOWED = re.compile(r"^(?:/token|/calendar/v3/channels/stop|"
                     r"/calendar/v3/calendars/%s/events(?:/watch|/%s(?:/instances)?)?)$"
                     % (SEG, SEG))


def rfc3339(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def slot(days, hours=0, minutes=30):
    start = (datetime.now(timezone.utc).replace(microsecond=0, second=0, minute=0)
             + timedelta(days=days, hours=hours))
    return rfc3339(start), rfc3339(start + timedelta(minutes=minutes))


# ids that must never reach a URL
BAD_EVENT_IDS = ["..", ".", "...", "a/b", "../..", "x?y", "x#y", "a b", "a\nb",
                 "%2E%2E", "a.b", "e\u00e9", "a" * 1025, "evil\u0000"]
BAD_CALENDAR_IDS = [".", "..", "...", "a/b", "primary/..", "../primary", "x y",
                    "p%40x", "a?b", "a\tb", "c" * 1025, "primary\u0000x"]


class IdsCase(GoogleSyncCase):
    def boot(self):
        self.start()
        cred = self.credential()
        st, cal, _ = self.svc.request("POST", "/v1/calendars",
                                      {"credential_id": cred, "external_id": CAL})
        self.assertEqual(st, 201, cal)
        self.wait_synced(cal["id"])
        return cred, cal["id"]

    def assert_paths_safe(self):
        """Every request calsync sent has an allowed raw path; none is on
        the calendar itself, and none has a dot segment. Returns them."""
        reqs = self.requests()
        for r in reqs:
            raw = r.get("raw_path") or r["path"]
            self.assertRegex(raw, ALLOWED, "unexpected request %s %s" % (r["method"], raw))
            self.assertNotRegex(r["path"], r"/calendars/[^/]+/?$")
            self.assertNotIn("/./", raw + "/")
            self.assertNotIn("/../", raw + "/")
        return reqs


class TestApiIds(IdsCase):
    def test_bad_ids_rejected_and_nothing_sent(self):
        cred, cal = self.boot()
        self.fg.control("DELETE", "/requests")
        before = self.svc.snapshot()
        start, end = slot(3)
        for i, eid in enumerate(BAD_EVENT_IDS):
            st, b, _ = self.svc.request("POST", "/v1/bookings", {
                "uid": "bad-%d" % i, "calendar_id": cal, "title": "t",
                "start": start, "end": end, "event_id": eid})
            self.assertEqual(st, 400, (eid, b))
            self.assertEqual(b["error"]["code"], "bad_request")
        st, b, _ = self.svc.request("POST", "/v1/bookings", {
            "uid": "bad-occ", "calendar_id": cal, "title": "t", "start": start,
            "end": end, "event_id": "..", "original_start": start})
        self.assertEqual(st, 400, b)
        for ext in BAD_CALENDAR_IDS:
            st, b, _ = self.svc.request("POST", "/v1/calendars",
                                        {"credential_id": cred, "external_id": ext})
            self.assertEqual(st, 400, (ext, b))
            self.assertIn("external_id", b["error"]["message"])
        self.assertEqual(self.svc.snapshot(), before)     # nothing stored
        # a sync that began after the refusals has completed and no write is
        # pending: whatever calsync sent Google meanwhile is in the log
        self.sync_and_wait(cal)
        with self.svc.db() as con:
            self.assertEqual(con.execute("SELECT count(*) FROM jobs WHERE state = 'pending'"
                                         ).fetchone()[0], 0)
        reqs = self.assert_paths_safe()
        self.assertEqual([r for r in reqs if r["method"] in ("PATCH", "DELETE", "PUT")], [])
        if os.environ.get("CALSYNC_FIGURES"):
            sys.stderr.write("figure: %d event ids and %d calendar ids refused with 400; "
                             "%d requests after, none PATCH/DELETE\n"
                             % (len(BAD_EVENT_IDS) + 1, len(BAD_CALENDAR_IDS), len(reqs)))

    def test_every_real_id_shape_accepted(self):
        cred, cal = self.boot()
        start, end = slot(4)
        good = ["68k0p6ackplecqs9fuvbs1fju0", "72o12msae3t6au1lim41i8tu6j_20250328T150000Z",
                "2j96gmk1tgebtfpm9nvdl1o9tp_20211117",
                "68k0p6ackplecqs9fuvbs1fju0_R20250326T123000",
                "_60q30c1g60o30e1i60o4ac1g60rj8gpl88rj2c1h84s34h9g60s30c1g60o30c1g"]
        # these events are not in the fake: linking asks Google (issue 16),
        # and a Google that cannot tell (403 here) lets the link through --
        # this test is about the id shapes the API accepts
        self.fg.control("POST", "/faults", {"status": 403, "reason": "forbidden", "count": -1,
                                            "ops": ["events.get"]})
        for i, eid in enumerate(good):
            st, b, _ = self.svc.request("POST", "/v1/bookings", {
                "uid": "good-%d" % i, "calendar_id": cal, "title": "t",
                "start": start, "end": end, "event_id": eid})
            self.assertEqual(st, 201, (eid, b))
            self.assertEqual(b["event_id"], eid)
        for ext in ("user@example.com", "1cgehsm0iuibloe9ntag9l60sk@group.calendar.google.com",
                    "en.usa#holiday@group.v.calendar.google.com"):
            st, b, _ = self.svc.request("POST", "/v1/calendars",
                                        {"credential_id": cred, "external_id": ext})
            self.assertIn(st, (200, 201), (ext, b))
            self.assertEqual(b["external_id"], ext)
        # the dotted calendar id reaches Google escaped, as the same calendar
        holiday = "en.usa#holiday@group.v.calendar.google.com"
        self.wait_for(lambda: self.requests(calendar=holiday, op="events.list"),
                      what="a listing of the holiday calendar")
        for r in self.requests(calendar=holiday):
            self.assertIn("/calendars/en%2Eusa%23holiday%40group%2Ev%2Ecalendar%2Egoogle%2Ecom/",
                          r["raw_path"])
        self.assert_paths_safe()


class TestStoredIds(IdsCase):
    def test_row_from_before_the_check_never_reaches_google(self):
        """A booking whose event_id was stored as ".." (by a version that
        did not check) is patched and cancelled through the API: the writer
        refuses both jobs; no request goes out on the calendar's path."""
        cred, cal = self.boot()
        start, end = slot(5)
        ev = self.fg.host(CAL, op="create", event=timed(start, end, summary="linked"))
        st, b, _ = self.svc.request("POST", "/v1/bookings", {
            "uid": "planted", "calendar_id": cal, "title": "linked",
            "start": start, "end": end, "event_id": ev["id"]})
        self.assertEqual(st, 201, b)
        with self.svc.db() as con:
            con.execute("UPDATE bookings SET event_id = '..' WHERE uid = 'planted'")
        self.fg.control("DELETE", "/requests")
        st, b, _ = self.svc.request("PATCH", "/v1/bookings/planted", {"title": "new title"})
        self.assertEqual(st, 200, b)
        st, b, _ = self.svc.request("POST", "/v1/bookings/planted/cancel", {"reason": "x"})
        self.assertEqual(st, 200, b)

        def jobs_done():
            with self.svc.db() as con:
                rows = con.execute("SELECT kind, state, last_error FROM jobs"
                                   " WHERE booking_uid = 'planted'").fetchall()
            return rows if rows and all(r[1] != "pending" for r in rows) else None
        rows = self.wait_for(jobs_done, what="the writer's verdict")
        self.assertEqual(sorted((r[0], r[1]) for r in rows),
                         [("delete", "failed"), ("patch", "failed")])
        for r in rows:
            self.assertIn("refused", r[2])
        reqs = self.assert_paths_safe()
        self.assertEqual([r for r in reqs if r["method"] in ("PATCH", "DELETE", "PUT")], [])
        # the calendar and its event are still there
        self.assertIn(ev["id"], self.google_listing())
        st, text, _ = self.svc.request("GET", "/metrics", raw=True)
        self.assertRegex(text.decode(), r"calsync_google_invalid_ids_total [1-9]")

    def test_external_id_from_before_the_check(self):
        """A calendar stored with external_id ".." goes to state error at
        its first sync, without a request."""
        cred, cal = self.boot()
        st, c2, _ = self.svc.request("POST", "/v1/calendars",
                                     {"credential_id": cred, "external_id": "other@example.com"})
        self.assertEqual(st, 201, c2)
        self.wait_synced(c2["id"])
        with self.svc.db() as con:
            con.execute("UPDATE calendars SET external_id = '..' WHERE id = ?", (c2["id"],))
        self.fg.control("DELETE", "/requests")
        self.sync_now(c2["id"])
        self.wait_for(lambda: self.cal_row(c2["id"])[0] == "error", what="state error")
        self.assertIn("refused", self.cal_row(c2["id"])[3])
        self.assert_paths_safe()


class TestGoogleIds(IdsCase):
    def test_items_with_bad_ids_skipped(self):
        """Items Google (here: the fake, which lets a host set any id of
        [A-Za-z0-9_.-]) sends with ids it cannot have issued are skipped
        and logged; the rest of the page syncs; none is ever put into a URL,
        not even by a deletion or a series re-listing."""
        cred, cal = self.boot()
        s1, e1 = slot(3)
        s2, e2 = slot(3, hours=2)
        s3, e3 = slot(3, hours=4)
        self.fg.host(CAL, op="create", event=dict(timed(s1, e1, summary="dots"), id=".."))
        self.fg.host(CAL, op="create", event=dict(timed(s2, e2, summary="dotted"), id="a.b"))
        good = self.fg.host(CAL, op="create", event=timed(s3, e3, summary="fine"))
        # a recurring series with a dotted id: its instances carry it in
        # recurringEventId and in their own ids
        self.fg.host(CAL, op="create", event=dict(timed(s1, e1, tz="UTC", summary="series"),
                                                  id="ser.ies", recurrence=["RRULE:FREQ=DAILY;COUNT=3"]))
        after = self.sync_now(cal)
        self.wait_synced(cal, after)
        mirror = self.mirror(cal)
        self.assertIn(good["id"], mirror)
        self.assertEqual([k for k in mirror if "." in k], [])
        log = self.svc.log_text()
        self.assertGreaterEqual(log.count("event=sync.item_skipped"), 5)   # 2 + series' 3
        self.assertEqual(self.cal_row(cal)[0], "active")
        # deleting them in Google: still nothing goes out for them
        self.fg.host(CAL, op="delete", id="..")
        self.fg.host(CAL, op="delete", id="ser.ies")
        after = self.sync_now(cal)
        self.wait_synced(cal, after)
        # and a full resync (410) skips them the same way
        self.fg.control("POST", "/invalidate_sync_tokens", {})
        after = self.sync_now(cal)
        self.wait_synced(cal, after)
        self.assertEqual(self.cal_row(cal)[0], "active")
        self.assert_paths_safe()
        st, text, _ = self.svc.request("GET", "/metrics", raw=True)
        m = re.search(rb'calsync_sync_items_skipped_total\{reason="invalid_id"\} (\d+)', text)
        self.assertIsNotNone(m, text)
        self.assertGreaterEqual(int(m.group(1)), 5)
        if os.environ.get("CALSYNC_FIGURES"):
            sys.stderr.write("figure: items skipped %s, requests sent %d, all paths allowed\n"
                             % (m.group(1).decode(), len(self.requests())))


if __name__ == "__main__":
    import unittest
    unittest.main()
