"""Self-test of tests/fake_google.py: starts it as a subprocess on port 0 and
checks the Google behaviour it models and its control API.

    python3 -m unittest tests/test_fake_google.py -v
"""
import json
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time
import unittest
from datetime import datetime, time as dtime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "e2e"))
from fake_google import FakeGoogle  # noqa: E402
from harness import TODAY, future, id_time, local, next_dst_change, rfc3339  # noqa: E402

# The captured Google payloads live outside the repository; where they are
# available the error bodies are compared with them byte for byte in content.
FIXTURES = os.environ.get("CALSYNC_GOOGLE_FIXTURES") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "fixtures", "google")

CAL = "primary"
EVENTS = "/calendars/primary/events"


def timed(start, end, tz=None, **extra):
    ev = {"start": {"dateTime": start}, "end": {"dateTime": end}}
    if tz:
        ev["start"]["timeZone"] = ev["end"]["timeZone"] = tz
    ev.update(extra)
    return ev


class Receiver:
    """A local webhook endpoint that records every push it gets."""

    def __init__(self, status=200):
        self.calls = []
        self.cv = threading.Condition()
        receiver = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                with receiver.cv:
                    receiver.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                    receiver.cv.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/google"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait(self, n, timeout=5):
        deadline = time.monotonic() + timeout
        with self.cv:
            while len(self.calls) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cv.wait(left)
            return list(self.calls)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class FakeGoogleCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fg = FakeGoogle().start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.fg.stop()
        assert rc == 0, f"fake_google exited {rc}"

    def setUp(self):
        self.fg.control("POST", "/reset")
        self.tok = self.fg.access_token()

    # -- helpers -----------------------------------------------------------

    def api(self, method, path, body=None, query=None, headers=None, token=None):
        return self.fg.api(method, path, body, token=token or self.tok, query=query, headers=headers)

    def ok(self, method, path, body=None, query=None, headers=None):
        st, b, _ = self.api(method, path, body, query, headers)
        self.assertIn(st, (200, 204), b)
        return b

    def insert(self, ev, cal_path=EVENTS):
        return self.ok("POST", cal_path, ev)

    def list_all(self, query):
        """Every page; returns (items, pages)."""
        items, pages, q = [], [], dict(query)
        while True:
            page = self.ok("GET", EVENTS, query=q)
            pages.append(page)
            items += page["items"]
            if "nextPageToken" not in page:
                return items, pages
            q = dict(query, pageToken=page["nextPageToken"])

    def full_sync(self, **extra):
        items, pages = self.list_all(dict(extra))
        return items, pages[-1]["nextSyncToken"]

    def incremental(self, token, **extra):
        items, pages = self.list_all(dict(extra, syncToken=token))
        return items, pages[-1]["nextSyncToken"]

    def assertGoogleError(self, resp, status, reason):
        st, body, _ = resp
        self.assertEqual(st, status, body)
        self.assertEqual(body["error"]["code"], status)
        self.assertEqual(body["error"]["errors"][0]["reason"], reason)
        return body

    def assertFixtureBody(self, body, name):
        """Equal to the captured error body, when the fixtures are present."""
        path = os.path.join(FIXTURES, name)
        if os.path.exists(path):
            with open(path) as f:
                self.assertEqual(body, json.load(f)["response"]["body"])


class TestListing(FakeGoogleCase):
    def test_paging_next_sync_token_only_on_last_page(self):
        ids = {self.insert(timed(f"2026-12-0{i}T09:00:00Z", f"2026-12-0{i}T10:00:00Z",
                                 summary=f"e{i}"))["id"] for i in range(1, 8)}
        items, pages = self.list_all({"maxResults": "3"})
        self.assertEqual([len(p["items"]) for p in pages], [3, 3, 1])
        for p in pages[:-1]:
            self.assertIn("nextPageToken", p)
            self.assertNotIn("nextSyncToken", p)
        self.assertIn("nextSyncToken", pages[-1])
        self.assertNotIn("nextPageToken", pages[-1])
        self.assertEqual({i["id"] for i in items}, ids)
        self.assertEqual(pages[0]["kind"], "calendar#events")
        # a fresh calendar: incremental listing with no changes is empty
        again, _ = self.incremental(pages[-1]["nextSyncToken"])
        self.assertEqual(again, [])

    def test_incremental_after_insert_move_delete_and_exception(self):
        a = self.insert(timed("2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z", summary="a"))
        b = self.insert(timed("2026-12-02T09:00:00Z", "2026-12-02T10:00:00Z", summary="b"))
        series = self.insert(timed("2026-12-07T10:00:00", "2026-12-07T10:30:00", "America/Chicago",
                                   summary="daily", recurrence=["RRULE:FREQ=DAILY;COUNT=5"]))
        _, token = self.full_sync()

        c = self.insert(timed("2026-12-03T09:00:00Z", "2026-12-03T10:00:00Z", summary="c"))
        moved = self.ok("PATCH", f"{EVENTS}/{a['id']}",
                        {"start": {"dateTime": "2026-12-01T11:00:00Z"},
                         "end": {"dateTime": "2026-12-01T12:00:00Z"}})
        self.assertEqual(moved["sequence"], 1)
        self.ok("DELETE", f"{EVENTS}/{b['id']}")
        inst = series["id"] + "_20261208T160000Z"
        exc = self.ok("PATCH", f"{EVENTS}/{inst}", {"summary": "only this one"})
        self.assertEqual(exc["id"], inst)
        self.assertEqual(exc["sequence"], 0, "a title-only edit keeps sequence")

        items, token2 = self.incremental(token)
        by_id = {i["id"]: i for i in items}
        self.assertEqual(set(by_id), {a["id"], b["id"], c["id"], series["id"], inst})
        self.assertEqual(by_id[b["id"]], {"kind": "calendar#event", "etag": by_id[b["id"]]["etag"],
                                          "id": b["id"], "status": "cancelled"})
        self.assertEqual(by_id[a["id"]]["start"]["dateTime"], "2026-12-01T05:00:00-06:00")
        # the master is re-sent with the exception, one shared etag
        self.assertEqual(by_id[series["id"]]["etag"], by_id[inst]["etag"])
        self.assertNotEqual(by_id[series["id"]]["etag"], series["etag"])
        self.assertEqual(by_id[inst]["recurringEventId"], series["id"])
        self.assertEqual(by_id[inst]["originalStartTime"],
                         {"dateTime": "2026-12-08T10:00:00-06:00", "timeZone": "America/Chicago"})

        # deleting one occurrence: a full stub, master re-sent
        self.ok("DELETE", f"{EVENTS}/{series['id']}_20261209T160000Z")
        items, token3 = self.incremental(token2)
        stub = {i["id"]: i for i in items}[series["id"] + "_20261209T160000Z"]
        self.assertEqual(set(stub), {"kind", "etag", "id", "status", "recurringEventId",
                                     "originalStartTime"})
        # deleting the whole series: ONE bare stub, both singleEvents modes
        self.ok("DELETE", f"{EVENTS}/{series['id']}")
        for single in ("false", "true"):
            items, _ = self.incremental(token3, singleEvents=single)
            self.assertEqual(items, [{"kind": "calendar#event", "etag": items[0]["etag"],
                                      "id": series["id"], "status": "cancelled"}], single)

    def test_full_listing_hides_cancelled_unless_show_deleted(self):
        a = self.insert(timed("2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z"))
        self.insert(timed("2026-12-02T09:00:00Z", "2026-12-02T10:00:00Z"))
        self.ok("DELETE", f"{EVENTS}/{a['id']}")
        items, _ = self.full_sync()
        self.assertNotIn(a["id"], [i["id"] for i in items])
        items, _ = self.full_sync(showDeleted="true")
        self.assertIn(a["id"], [i["id"] for i in items])

    def test_private_extended_property_filter(self):
        self.insert(timed("2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z",
                          extendedProperties={"private": {"calsync_booking_uid": "bk-1"}}))
        self.insert(timed("2026-12-02T09:00:00Z", "2026-12-02T10:00:00Z",
                          extendedProperties={"private": {"calsync_booking_uid": "bk-2"}}))
        page = self.ok("GET", EVENTS, query={"privateExtendedProperty": "calsync_booking_uid=bk-2"})
        self.assertEqual([i["extendedProperties"]["private"]["calsync_booking_uid"]
                          for i in page["items"]], ["bk-2"])

    def test_sync_token_refuses_params(self):
        _, token = self.full_sync()
        for name, value in (("iCalUID", "x@google.com"), ("orderBy", "updated"),
                            ("privateExtendedProperty", "a=b"), ("q", "x"),
                            ("sharedExtendedProperty", "a=b"),
                            ("timeMin", "2026-01-01T00:00:00Z"),
                            ("timeMax", "2027-01-01T00:00:00Z"),
                            ("updatedMin", "2026-01-01T00:00:00Z")):
            with self.subTest(name=name):
                self.assertGoogleError(self.api("GET", EVENTS, query={"syncToken": token, name: value}),
                                       400, "invalid")

    def test_malformed_sync_token_is_400_invalid(self):
        body = self.assertGoogleError(self.api("GET", EVENTS, query={"syncToken": "x"}), 400, "invalid")
        self.assertEqual(body["error"]["message"], "Invalid Value")
        self.assertFixtureBody(body, "error-400-invalid-sync-token-value.json")

    def test_invalidated_sync_token_is_410_full_sync_required(self):
        _, token = self.full_sync()
        self.fg.control("POST", "/invalidate_sync_tokens", {"calendar": CAL})
        body = self.assertGoogleError(self.api("GET", EVENTS, query={"syncToken": token}),
                                      410, "fullSyncRequired")
        self.assertEqual(body["error"]["errors"][0]["domain"], "calendar")
        self.assertEqual(body["error"]["errors"][0]["location"], "syncToken")
        self.assertFixtureBody(body, "error-410-full-sync-required.json")
        # a new full sync gives a token that works
        _, token = self.full_sync()
        self.ok("GET", EVENTS, query={"syncToken": token})

    def test_sync_token_retention(self):
        _, token = self.full_sync()
        self.fg.control("POST", "/config", {"sync_token_max_age": 0})
        time.sleep(1.1)
        self.assertGoogleError(self.api("GET", EVENTS, query={"syncToken": token}), 410,
                               "fullSyncRequired")

    def test_if_match_and_delete_semantics(self):
        ev = self.insert(timed("2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z", summary="x"))
        path = f"{EVENTS}/{ev['id']}"
        body = self.assertGoogleError(
            self.api("PATCH", path, {"summary": "y"}, headers={"If-Match": '"1"'}),
            412, "conditionNotMet")
        self.assertEqual(body["error"]["errors"][0]["location"], "If-Match")
        patched = self.ok("PATCH", path, {"summary": "y"}, headers={"If-Match": ev["etag"]})
        self.assertNotEqual(patched["etag"], ev["etag"])
        self.assertGreater(patched["updated"], ev["updated"])
        self.assertGoogleError(self.api("DELETE", path, headers={"If-Match": ev["etag"]}),
                               412, "conditionNotMet")
        st, _, _ = self.api("DELETE", path)
        self.assertEqual(st, 204)
        self.assertGoogleError(self.api("DELETE", path), 410, "deleted")
        self.assertGoogleError(self.api("DELETE", f"{EVENTS}/nosuchevent1"), 404, "notFound")
        self.assertGoogleError(self.api("GET", f"{EVENTS}/nosuchevent1"), 404, "notFound")

    def test_calendar_ids_are_url_decoded(self):
        path = "/calendars/team%23room%40group.calendar.google.com/events"
        ev = self.insert(timed("2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z"), cal_path=path)
        dump = self.fg.control("GET", "/events/team%23room%40group.calendar.google.com")
        self.assertEqual(dump["calendar"]["id"], "team#room@group.calendar.google.com")
        self.assertEqual([e["event"]["id"] for e in dump["events"]], [ev["id"]])

    def test_bulk_host_edits(self):
        _, token = self.full_sync()
        evs = self.fg.control("POST", "/events/primary/bulk", {"ops": [
            {"op": "create", "event": dict(timed("2030-01-0%dT09:00:00Z" % i,
                                                 "2030-01-0%dT10:00:00Z" % i),
                                           id="bulk%d" % i, summary="b%d" % i)}
            for i in range(1, 4)] + [
            {"op": "move", "id": "bulk2", "start": "2030-01-02T11:00:00Z"}]})["events"]
        self.assertEqual([e["id"] for e in evs], ["bulk1", "bulk2", "bulk3", "bulk2"])
        self.assertNotEqual(evs[3]["start"], evs[1]["start"])   # moved, duration kept
        self.assertNotEqual(evs[3]["end"], evs[1]["end"])
        items, token = self.incremental(token)
        self.assertEqual(sorted(i["id"] for i in items), ["bulk1", "bulk2", "bulk3"])
        # a bad op stops the batch; the ops before it stay applied
        with self.assertRaises(RuntimeError):
            self.fg.control("POST", "/events/primary/bulk", {"ops": [
                {"op": "retitle", "id": "bulk1", "summary": "kept"},
                {"op": "nope"}, {"op": "retitle", "id": "bulk3", "summary": "never"}]})
        items, _ = self.incremental(token)
        self.assertEqual([(i["id"], i["summary"]) for i in items], [("bulk1", "kept")])

    def test_update_replaces_and_validation(self):
        ev = self.insert(timed("2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z",
                               summary="x", description="d"))
        upd = self.ok("PUT", f"{EVENTS}/{ev['id']}",
                      timed("2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z", summary="z"))
        self.assertNotIn("description", upd)
        self.assertGoogleError(self.api("POST", EVENTS, {"summary": "no times"}), 400, "required")
        self.assertGoogleError(self.api("POST", EVENTS, timed("2026-12-01T10:00:00Z",
                                                              "2026-12-01T09:00:00Z")),
                               400, "timeRangeEmpty")


class TestRecurrence(FakeGoogleCase):
    def test_weekly_expansion_across_dst(self):
        # 10:00 New York, weekly, twice before the next daylight-saving
        # change there and twice after it (the next real one: the test does
        # not age); the instance ids, in UTC, move by the change
        ny = ZoneInfo("America/New_York")
        first = (next_dst_change("America/New_York").astimezone(ny) - timedelta(days=13)).date()
        starts = [datetime.combine(first + timedelta(weeks=k), dtime(10), ny) for k in range(4)]
        off = [s.utcoffset() for s in starts]
        self.assertTrue(off[0] == off[1] != off[2] == off[3], off)
        day = "MO TU WE TH FR SA SU".split()[first.weekday()]
        master = self.insert(timed(starts[0].strftime("%Y-%m-%dT%H:%M:%S"),
                                   (starts[0] + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"),
                                   "America/New_York", summary="weekly",
                                   recurrence=[f"RRULE:FREQ=WEEKLY;BYDAY={day};COUNT=4"]))
        page = self.ok("GET", EVENTS, query={"singleEvents": "true", "timeZone": "UTC"})
        ids = [i["id"] for i in page["items"]]
        mid = master["id"]
        occ = [f"{mid}_{id_time(s)}" for s in starts]
        self.assertEqual(ids, occ)
        for item in page["items"]:
            self.assertEqual(item["recurringEventId"], mid)
            self.assertEqual(item["originalStartTime"], item["start"])
            self.assertEqual(item["etag"], master["etag"])
            self.assertNotIn("recurrence", item)

        # move one occurrence to the next day, 16:00 there (with the UTC
        # offset in the times): originalStartTime stays
        to = starts[2] + timedelta(days=1, hours=6)
        moved = self.ok("PATCH", f"{EVENTS}/{occ[2]}",
                        {"start": {"dateTime": to.isoformat()},
                         "end": {"dateTime": (to + timedelta(hours=1)).isoformat()}})
        self.assertEqual(moved["sequence"], 1)
        self.ok("DELETE", f"{EVENTS}/{occ[3]}")
        page = self.ok("GET", EVENTS, query={"singleEvents": "true", "timeZone": "UTC"})
        by_id = {i["id"]: i for i in page["items"]}
        self.assertNotIn(occ[3], by_id, "cancelled hidden without showDeleted")
        m = by_id[occ[2]]
        self.assertEqual(m["start"]["dateTime"], rfc3339(to))
        self.assertEqual(m["originalStartTime"]["dateTime"], rfc3339(starts[2]))
        page = self.ok("GET", EVENTS, query={"singleEvents": "true", "showDeleted": "true"})
        stub = {i["id"]: i for i in page["items"]}[occ[3]]
        self.assertEqual(stub["status"], "cancelled")
        self.assertEqual(stub["recurringEventId"], mid)
        # singleEvents=false: master + exceptions only
        page = self.ok("GET", EVENTS)
        self.assertEqual(sorted(i["id"] for i in page["items"]), sorted([mid, occ[2], occ[3]]))

    def test_all_day_and_until(self):
        master = self.insert({"summary": "allday", "start": {"date": "2026-03-02"},
                              "end": {"date": "2026-03-03"},
                              "recurrence": ["RRULE:FREQ=DAILY;INTERVAL=2;UNTIL=20260308"]})
        page = self.ok("GET", EVENTS, query={"singleEvents": "true"})
        self.assertEqual([i["id"] for i in page["items"]],
                         [f"{master['id']}_{d}" for d in ("20260302", "20260304", "20260306", "20260308")])

    def test_removed_occurrences_reported_only_with_single_events(self):
        master = self.insert(timed("2026-12-07T09:00:00", "2026-12-07T09:30:00", "America/Chicago",
                                   recurrence=["RRULE:FREQ=DAILY;COUNT=6"]))
        mid = master["id"]
        _, tok_single = self.full_sync(singleEvents="true")
        _, tok_plain = self.full_sync()
        self.fg.host(CAL, op="truncate", series=mid, original_start="2026-12-10T15:00:00Z")
        items, _ = self.incremental(tok_single, singleEvents="true", timeZone="UTC")
        live = sorted(i["id"] for i in items if i["status"] != "cancelled")
        gone = sorted(i["id"] for i in items if i["status"] == "cancelled")
        self.assertEqual(live, [f"{mid}_2026120{d}T150000Z" for d in (7, 8, 9)])
        self.assertEqual(gone, [f"{mid}_202612{d}T150000Z" for d in (10, 11, 12)])
        self.assertTrue(all(set(i) == {"kind", "etag", "id", "status"}
                            for i in items if i["status"] == "cancelled"))
        # singleEvents=false: only the master, with its new UNTIL
        items, _ = self.incremental(tok_plain)
        self.assertEqual([(i["id"], i["recurrence"]) for i in items],
                         [(mid, ["RRULE:FREQ=DAILY;UNTIL=20261210T055959Z"])])

    def test_split_new_series_carries_created_and_old_loses_the_rest(self):
        # fixture recurring-edit-this-and-following-change-time.json: a time
        # change gives an unrelated id; the new master and, expanded, its
        # instances carry the old master's `created`; the old master ends
        # with UNTIL and (singleEvents=true, incremental) the occurrences it
        # lost come as bare stubs
        master = self.insert(timed("2026-12-07T08:00:00", "2026-12-07T09:00:00", "America/Chicago",
                                   summary="Breakfast", recurrence=["RRULE:FREQ=DAILY;COUNT=6"]))
        mid = master["id"]
        _, tok = self.full_sync(singleEvents="true")
        new = self.fg.host(CAL, op="split", series=mid, original_start="2026-12-10T14:00:00Z",
                           new_id="e5srrkr361upjc2be22u6ti4pe",
                           event={"summary": "Avocado",
                                  "start": {"dateTime": "2026-12-10T07:00:00-06:00"},
                                  "end": {"dateTime": "2026-12-10T08:00:00-06:00"}})
        self.assertEqual((new["id"], new["created"]), ("e5srrkr361upjc2be22u6ti4pe", master["created"]))
        self.assertEqual(new["sequence"], master.get("sequence", 0) + 1)
        old = self.ok("GET", f"{EVENTS}/{mid}")
        self.assertEqual(old["recurrence"], ["RRULE:FREQ=DAILY;UNTIL=20261210T055959Z"])
        items, _ = self.incremental(tok, singleEvents="true", timeZone="UTC")
        gone = sorted(i["id"] for i in items if i["status"] == "cancelled")
        self.assertEqual(gone, [f"{mid}_202612{d}T140000Z" for d in (10, 11, 12)])
        self.assertTrue(all(set(i) == {"kind", "etag", "id", "status"}
                            for i in items if i["status"] == "cancelled"))
        succ = [i for i in items if i.get("recurringEventId") == new["id"]]
        self.assertEqual([i["originalStartTime"]["dateTime"] for i in succ],
                         [f"2026-12-{d}T13:00:00Z" for d in (10, 11, 12)])
        self.assertTrue(all(i["created"] == master["created"] for i in succ))
        # the old series' remaining instances are re-sent (its master changed)
        self.assertEqual(sorted(i["id"] for i in items if i.get("recurringEventId") == mid),
                         [f"{mid}_2026120{d}T140000Z" for d in (7, 8, 9)])

    def test_host_operations(self):
        ev = self.fg.host(CAL, op="create", event=timed(
            "2026-12-07T09:00:00", "2026-12-07T09:30:00", "America/Chicago",
            summary="standup", recurrence=["RRULE:FREQ=DAILY"]))
        sid = ev["id"]
        self.fg.host(CAL, op="move", series=sid, original_start="2026-12-08T09:00:00-06:00",
                     start="2026-12-08T14:00:00-06:00")
        self.fg.host(CAL, op="retitle", id=f"{sid}_20261209T150000Z", summary="renamed")
        self.fg.host(CAL, op="delete", series=sid, original_start="2026-12-10T15:00:00Z")
        self.fg.host(CAL, op="truncate", series=sid, original_start="2026-12-12T15:00:00Z")
        page = self.ok("GET", EVENTS, query={"singleEvents": "true", "showDeleted": "true",
                                             "timeZone": "UTC"})
        by_id = {i["id"]: i for i in page["items"]}
        self.assertEqual(sorted(by_id), [f"{sid}_2026120{d}T150000Z" for d in (7, 8, 9)]
                         + [f"{sid}_20261210T150000Z", f"{sid}_20261211T150000Z"])
        self.assertEqual(by_id[f"{sid}_20261208T150000Z"]["end"]["dateTime"], "2026-12-08T20:30:00Z")
        self.assertEqual(by_id[f"{sid}_20261209T150000Z"]["summary"], "renamed")
        self.assertEqual(by_id[f"{sid}_20261210T150000Z"]["status"], "cancelled")
        master = self.ok("GET", f"{EVENTS}/{sid}")
        self.assertEqual(master["recurrence"], ["RRULE:FREQ=DAILY;UNTIL=20261212T055959Z"])
        # split ("this and following") gives a _R series
        new = self.fg.host(CAL, op="split", series=sid, original_start="2026-12-09T15:00:00Z",
                           event={"summary": "standup v2"})
        self.assertEqual(new["id"], f"{sid}_R20261209T150000")
        self.assertEqual(new["iCalUID"], f"{sid}_R20261209T150000@google.com")


class TestWatch(FakeGoogleCase):
    def setUp(self):
        super().setUp()
        self.rx = Receiver()

    def tearDown(self):
        self.rx.close()

    def watch(self, cid="chan-1", ttl="604800", token="tok-1"):
        body = {"id": cid, "type": "web_hook", "address": self.rx.url, "params": {"ttl": ttl}}
        if token is not None:
            body["token"] = token
        return self.ok("POST", EVENTS + "/watch", body)

    def test_sync_then_exists_and_stop(self):
        self.fg.control("POST", "/max_ttl", {"max_ttl": 3600})
        t0 = int(time.time() * 1000)
        ch = self.watch()
        self.assertEqual(ch["kind"], "api#channel")
        self.assertEqual(ch["token"], "tok-1")
        granted = int(ch["expiration"]) - t0
        self.assertTrue(3590_000 <= granted <= 3610_000, granted)   # less than asked
        headers, body = self.rx.wait(1)[0]
        self.assertEqual(body, b"")
        self.assertEqual(headers["x-goog-channel-id"], "chan-1")
        self.assertEqual(headers["x-goog-channel-token"], "tok-1")
        self.assertEqual(headers["x-goog-resource-state"], "sync")
        self.assertEqual(headers["x-goog-message-number"], "1")
        self.assertEqual(headers["x-goog-resource-id"], ch["resourceId"])
        self.assertEqual(headers["x-goog-resource-uri"], ch["resourceUri"])
        self.assertTrue(headers["x-goog-channel-expiration"].endswith(" GMT"))

        self.fg.host(CAL, op="create", event=timed("2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z"))
        headers, _ = self.rx.wait(2)[1]
        self.assertEqual(headers["x-goog-resource-state"], "exists")
        self.assertEqual(headers["x-goog-message-number"], "2")

        st, _, _ = self.api("POST", "/channels/stop", {"id": "chan-1", "resourceId": ch["resourceId"]})
        self.assertEqual(st, 204)
        self.assertGoogleError(self.api("POST", "/channels/stop",
                                        {"id": "chan-1", "resourceId": ch["resourceId"]}),
                               404, "notFound")
        self.insert(timed("2026-12-02T09:00:00Z", "2026-12-02T10:00:00Z"))
        self.fg.control("POST", "/notifications/drain")
        self.assertEqual(len(self.rx.calls), 2, "no push after stop")
        log = self.fg.control("GET", "/notifications")["notifications"]
        self.assertEqual([n["status"] for n in log], ["delivered", "delivered"])

    def test_drop_and_duplicate_faults(self):
        self.watch(token=None)
        self.rx.wait(1)
        self.assertNotIn("x-goog-channel-token", self.rx.calls[0][0])
        self.fg.control("POST", "/notification_faults", {"action": "drop", "count": 1})
        self.fg.control("POST", "/notification_faults", {"action": "duplicate", "count": 1})
        ev = self.insert(timed("2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z"))   # dropped
        self.ok("PATCH", f"{EVENTS}/{ev['id']}", {"summary": "x"})                 # doubled
        calls = self.rx.wait(3)
        self.fg.control("POST", "/notifications/drain")
        self.assertEqual([h["x-goog-message-number"] for h, _ in self.rx.calls], ["1", "3", "3"])
        log = self.fg.control("GET", "/notifications")["notifications"]
        self.assertEqual([(n["message_number"], n["status"], n["duplicate"]) for n in log],
                         [(1, "delivered", False), (2, "dropped", False),
                          (3, "delivered", False), (3, "delivered", True)])
        self.assertEqual(len(calls), 3)

    def test_expired_channel_stops_sending(self):
        self.watch(cid="short")
        self.rx.wait(1)
        self.fg.control("POST", "/channels/expire", {"id": "short"})
        self.insert(timed("2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z"))
        self.fg.control("POST", "/notifications/drain")
        self.assertEqual(len(self.rx.calls), 1)
        chans = self.fg.control("GET", "/channels")["channels"]
        self.assertEqual(chans[0]["state"], "expired")


class TestFaultsAndAuth(FakeGoogleCase):
    def test_429_with_retry_after_then_success(self):
        self.fg.control("POST", "/faults", {"status": 429, "count": 2, "retry_after": 2,
                                            "ops": "events.list"})
        for _ in range(2):
            st, body, headers = self.api("GET", EVENTS)
            self.assertEqual(st, 429)
            self.assertEqual(headers["retry-after"], "2")
            self.assertEqual(body["error"]["errors"][0],
                             {"domain": "usageLimits", "reason": "rateLimitExceeded",
                              "message": "Rate Limit Exceeded"})
        self.ok("GET", EVENTS)
        reqs = self.fg.control("GET", "/requests?op=events.list")["requests"]
        self.assertEqual([r["status"] for r in reqs], [429, 429, 200])
        self.assertTrue(reqs[0]["headers"]["authorization"].startswith("Bearer "))

    def test_403_rate_limit_and_5xx(self):
        self.fg.control("POST", "/faults", {"status": 403, "reason": "userRateLimitExceeded"})
        self.fg.control("POST", "/faults", {"status": 503})
        self.assertGoogleError(self.api("GET", EVENTS), 403, "userRateLimitExceeded")
        self.assertGoogleError(self.api("GET", EVENTS), 503, "backendError")
        self.ok("GET", EVENTS)

    def test_malformed_response_modes(self):
        self.insert(timed("2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z"))
        self.fg.control("POST", "/faults", {"mode": "truncated_json", "ops": "events.list"})
        self.fg.control("POST", "/faults", {"mode": "wrong_types", "ops": "events.list"})
        self.fg.control("POST", "/faults", {"mode": "html", "status": 502, "ops": "events.list"})
        st, body, _ = self.api("GET", EVENTS)
        self.assertEqual(st, 200)
        self.assertIsInstance(body, str)           # not parseable JSON
        st, body, _ = self.api("GET", EVENTS)
        self.assertIsInstance(body["items"], str)
        st, body, h = self.api("GET", EVENTS)
        self.assertEqual((st, h["content-type"].split(";")[0]), (502, "text/html"))
        self.ok("GET", EVENTS)

    def test_faulted_write_not_applied_unless_apply(self):
        self.fg.control("POST", "/faults", {"status": 500, "ops": "events.insert"})
        self.fg.control("POST", "/faults", {"status": 503, "ops": "events.insert", "apply": True})
        self.assertGoogleError(self.api("POST", EVENTS, timed("2026-12-01T09:00:00Z",
                                                              "2026-12-01T10:00:00Z")), 500, "backendError")
        self.assertEqual(self.fg.control("GET", "/events/primary")["events"], [])
        self.assertGoogleError(self.api("POST", EVENTS, timed("2026-12-01T09:00:00Z",
                                                              "2026-12-01T10:00:00Z")), 503, "backendError")
        self.assertEqual(len(self.fg.control("GET", "/events/primary")["events"]), 1)

    def test_access_token_expiry_refresh_and_invalid_grant(self):
        st, body, _ = self.fg.request("POST", "/token",
                                      "grant_type=refresh_token&refresh_token=rt-1&client_id=c&client_secret=s",
                                      {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(st, 200)
        self.assertEqual(body["token_type"], "Bearer")
        self.assertEqual(body["expires_in"], 3600)
        tok = body["access_token"]
        self.assertEqual(self.fg.api("GET", EVENTS, token=tok)[0], 200)
        self.fg.control("POST", "/expire_access_tokens")
        st, body, headers = self.fg.api("GET", EVENTS, token=tok)
        self.assertEqual(st, 401)
        self.assertEqual(body["error"]["status"], "UNAUTHENTICATED")
        self.assertEqual(body["error"]["errors"][0]["reason"], "authError")
        self.assertEqual(self.fg.api("GET", EVENTS)[0], 401, "no token at all")
        # refresh gives a working token
        st, body, _ = self.fg.request("POST", "/token", "grant_type=refresh_token&refresh_token=rt-1",
                                      {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(self.fg.api("GET", EVENTS, token=body["access_token"])[0], 200)
        # revoked refresh token: invalid_grant, and its access tokens die too
        self.fg.control("POST", "/revoke", {"refresh_token": "rt-1"})
        self.assertEqual(self.fg.api("GET", EVENTS, token=body["access_token"])[0], 401)
        st, body, _ = self.fg.request("POST", "/token", "grant_type=refresh_token&refresh_token=rt-1",
                                      {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual((st, body["error"]), (400, "invalid_grant"))
        self.assertFixtureBody(body, "error-invalid-grant.json")
        self.fg.control("POST", "/config", {"access_token_ttl": 1})
        st, body, _ = self.fg.request("POST", "/token", "grant_type=refresh_token&refresh_token=rt-2",
                                      {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(body["expires_in"], 1)

    def test_bad_input_never_crashes(self):
        self.assertGoogleError(self.api("POST", EVENTS, "{not json"), 400, "parseError")
        self.assertGoogleError(self.api("POST", EVENTS, [1, 2]), 400, "badRequest")
        self.assertGoogleError(self.api("GET", EVENTS, query={"singleEvent": "true"}), 400,
                               "invalidParameter")
        self.assertGoogleError(self.api("GET", EVENTS, query={"maxResults": "many"}), 400, "invalid")
        self.assertGoogleError(self.api("GET", EVENTS, query={"pageToken": "garbage"}), 400, "invalid")
        st, _, _ = self.api("POST", EVENTS, "x" * (1024 * 1024 + 1))
        self.assertEqual(st, 413)
        self.assertGoogleError(self.api("POST", EVENTS, {"start": {"dateTime": "tomorrow"},
                                                         "end": {"dateTime": "later"}}),
                               400, "invalid")
        self.assertGoogleError(self.api("POST", EVENTS, timed(
            "2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z", "UTC", recurrence=["RRULE:FREQ=HOURLY"])),
            400, "invalid")
        self.assertEqual(self.fg.control("GET", "/health")["ok"], True)


# Google's "Handle API errors" guide
# (https://developers.google.com/workspace/calendar/api/guides/errors):
# the complete bodies of the usage-limit errors.
def usage_body(code, reason, message):
    return {"error": {"errors": [{"domain": "usageLimits", "reason": reason, "message": message}],
                      "code": code, "message": message}}


class TestUsageLimits(FakeGoogleCase):
    """Issue 19: usage-limit 403s, a calendar gone read-only, per-credential
    rate limits and the per-credential request counter."""

    def test_one_shot_usage_faults_have_the_guides_bodies(self):
        for reason, message in (("quotaExceeded", "Calendar usage limits exceeded."),
                                ("dailyLimitExceeded", "Daily Limit Exceeded"),
                                ("userRateLimitExceeded", "User Rate Limit Exceeded"),
                                ("rateLimitExceeded", "Rate Limit Exceeded")):
            with self.subTest(reason=reason):
                self.fg.control("POST", "/faults", {"status": 403, "reason": reason})
                st, body, _ = self.api("GET", EVENTS)
                self.assertEqual((st, body), (403, usage_body(403, reason, message)))
        self.fg.control("POST", "/faults", {"status": 429})
        st, body, _ = self.api("GET", EVENTS)
        self.assertEqual((st, body), (429, usage_body(429, "rateLimitExceeded", "Rate Limit Exceeded")))
        self.ok("GET", EVENTS)

    def test_read_only_calendar_refuses_writes_reads_work_until_it_lifts(self):
        ev = self.insert(timed(future(3, 9), future(3, 10)))
        other = "/calendars/other%40example.com/events"
        ro = self.fg.control("POST", "/read_only", {"calendar": "primary", "seconds": 1.5,
                                                    "retry_after": True})
        self.assertEqual((ro["calendar"], ro["reason"]), ("user@example.com", "quotaExceeded"))
        self.assertEqual(len(self.fg.control("GET", "/read_only")["read_only"]), 1)
        expected = usage_body(403, "quotaExceeded", "Calendar usage limits exceeded.")
        for method, path, body in (("POST", EVENTS, timed(future(3, 11), future(3, 12))),
                                   ("PATCH", f"{EVENTS}/{ev['id']}", {"summary": "x"}),
                                   ("PUT", f"{EVENTS}/{ev['id']}", timed(future(3, 9), future(3, 10))),
                                   ("DELETE", f"{EVENTS}/{ev['id']}", None)):
            st, got, headers = self.api(method, path, body)
            self.assertEqual((st, got), (403, expected), method)
            self.assertGreaterEqual(int(headers["retry-after"]), 1)
        # reads work, and so do writes to another calendar
        self.assertEqual([i["id"] for i in self.ok("GET", EVENTS)["items"]], [ev["id"]])
        self.ok("GET", f"{EVENTS}/{ev['id']}")
        self.ok("POST", other, timed(future(3, 9), future(3, 10)))
        self.assertEqual(self.ok("GET", f"{EVENTS}/{ev['id']}")["etag"], ev["etag"])
        # it lifts by itself: wait for the positive sign, a write that succeeds
        deadline = time.monotonic() + 10
        while True:
            st, got, _ = self.api("PATCH", f"{EVENTS}/{ev['id']}", {"summary": "after"})
            if st == 200 or time.monotonic() > deadline:
                break
            self.assertEqual(st, 403)
            time.sleep(0.1)
        self.assertEqual((st, got["summary"]), (200, "after"))
        self.assertEqual(self.fg.control("GET", "/read_only")["read_only"], [])
        use = self.fg.control("GET", "/usage?credential=test-refresh-token")["credentials"][0]
        self.assertGreaterEqual(use["read_only"], 4)

    def test_read_only_all_calendars_with_daily_limit_reason_and_clear(self):
        self.fg.control("POST", "/read_only", {"seconds": 600, "reason": "dailyLimitExceeded"})
        st, got, headers = self.api("POST", "/calendars/any%40example.com/events",
                                    timed(future(3, 9), future(3, 10)))
        self.assertEqual((st, got), (403, usage_body(403, "dailyLimitExceeded", "Daily Limit Exceeded")))
        self.assertNotIn("retry-after", headers)
        self.fg.control("DELETE", "/read_only")
        self.ok("POST", EVENTS, timed(future(3, 9), future(3, 10)))
        for bad in ({"seconds": 0}, {"seconds": 5, "reason": "nope"}, {"seconds": "5"}):
            st, _, _ = self.fg.request("POST", "/_control/read_only", bad)
            self.assertEqual(st, 400, bad)

    def test_per_credential_rate_limit_and_counter(self):
        self.fg.control("POST", "/rate_limit", {"per_minute": 5, "refresh_token": "rt-a"})
        self.fg.control("POST", "/rate_limit", {"per_minute": 3, "refresh_token": "rt-b",
                                                "status": 429, "retry_after": True})
        a1, a2 = self.fg.access_token("rt-a"), self.fg.access_token("rt-a")
        b = self.fg.access_token("rt-b")
        # rt-a: five requests a minute, whichever of its access tokens is used
        for i in range(5):
            st, _, _ = self.api("GET", EVENTS, token=a1 if i % 2 else a2)
            self.assertEqual(st, 200, i)
        st, body, headers = self.api("GET", EVENTS, token=a1)
        self.assertEqual((st, body), (403, usage_body(403, "rateLimitExceeded", "Rate Limit Exceeded")))
        self.assertNotIn("retry-after", headers)
        # rt-b: three, then 429 with Retry-After; the default credential is free
        for _ in range(3):
            self.assertEqual(self.api("GET", EVENTS, token=b)[0], 200)
        st, body, headers = self.api("GET", EVENTS, token=b)
        self.assertEqual((st, body), (429, usage_body(429, "rateLimitExceeded", "Rate Limit Exceeded")))
        self.assertTrue(1 <= int(headers["retry-after"]) <= 60)
        for _ in range(10):
            self.ok("GET", EVENTS)
        use = {u["credential"]: u for u in self.fg.control("GET", "/usage")["credentials"]}
        self.assertEqual((use["rt-a"]["total"], use["rt-a"]["rate_limited"]), (6, 1))
        self.assertEqual((use["rt-b"]["total"], use["rt-b"]["rate_limited"]), (4, 1))
        self.assertEqual(use["test-refresh-token"]["total"], 10)
        for u in use.values():
            self.assertEqual(sum(u["per_second"].values()), u["total"])
            self.assertEqual(u["max_per_second"], max(u["per_second"].values()))
            self.assertGreaterEqual(u["max_per_minute"], u["max_per_second"])
            self.assertLessEqual(u["max_per_minute"], u["total"])
        # the log says which requests were limited
        reqs = self.fg.control("GET", "/requests?status=429")["requests"]
        self.assertEqual([r.get("limited") for r in reqs], ["rateLimitExceeded"])
        # a limit for every credential, then lifted
        self.fg.control("POST", "/rate_limit", {"per_minute": 1, "reason": "userRateLimitExceeded"})
        self.ok("GET", EVENTS)
        self.assertGoogleError(self.api("GET", EVENTS), 403, "userRateLimitExceeded")
        self.fg.control("POST", "/rate_limit", {"per_minute": None})
        self.ok("GET", EVENTS)
        self.fg.control("DELETE", "/usage")
        self.assertEqual(self.fg.control("GET", "/usage")["credentials"], [])
        st, _, _ = self.fg.request("POST", "/_control/rate_limit", {"per_minute": 0})
        self.assertEqual(st, 400)


class TestMove(FakeGoogleCase):
    """Issue 19: events.move (discovery: calendar.events.move)."""

    OTHER = "/calendars/other%40example.com/events"

    def test_move_keeps_id_leaves_source_cancelled_and_appears_in_destination(self):
        ev = self.insert(timed(future(3, 9), future(3, 10), summary="m"))
        _, src_tok = self.full_sync()
        dst_tok = self.ok("GET", self.OTHER)["nextSyncToken"]
        moved = self.ok("POST", f"{EVENTS}/{ev['id']}/move", query={"destination": "other@example.com"})
        self.assertEqual((moved["id"], moved["summary"]), (ev["id"], "m"))
        self.assertNotEqual(moved["etag"], ev["etag"])
        self.assertGreater(moved["updated"], ev["updated"])
        self.assertEqual(moved["organizer"], {"email": "other@example.com", "self": True})
        self.assertEqual(moved["iCalUID"], ev["iCalUID"])
        src_items, _ = self.incremental(src_tok)
        self.assertEqual(src_items, [{"kind": "calendar#event", "etag": src_items[0]["etag"],
                                      "id": ev["id"], "status": "cancelled"}])
        dst_items = self.ok("GET", self.OTHER, query={"syncToken": dst_tok})["items"]
        self.assertEqual([(i["id"], i["etag"], i["status"]) for i in dst_items],
                         [(ev["id"], moved["etag"], "confirmed")])
        self.assertEqual(self.ok("GET", f"{EVENTS}/{ev['id']}")["status"], "cancelled")
        # moving it again from the source is a 404; moving it back works
        self.assertGoogleError(self.api("POST", f"{EVENTS}/{ev['id']}/move",
                                        query={"destination": "other@example.com"}), 404, "notFound")
        back = self.ok("POST", f"{self.OTHER}/{ev['id']}/move", query={"destination": "primary"})
        self.assertEqual(back["organizer"]["email"], "user@example.com")
        self.assertEqual(self.ok("GET", f"{EVENTS}/{ev['id']}")["status"], "confirmed")
        self.assertEqual(self.ok("GET", f"{self.OTHER}/{ev['id']}")["status"], "cancelled")

    def test_move_errors_and_series_with_exceptions(self):
        sid = self.insert(timed(local(3, 9), local(3, 10), "America/Chicago",
                                recurrence=["RRULE:FREQ=DAILY;COUNT=3"]))["id"]
        inst = self.ok("GET", f"{EVENTS}/{sid}/instances")["items"]
        self.ok("PATCH", f"{EVENTS}/{inst[1]['id']}", {"summary": "exc"})
        self.assertGoogleError(self.api("POST", f"{EVENTS}/{inst[0]['id']}/move",
                                        query={"destination": "other@example.com"}),
                               400, "cannotChangeOrganizerOfInstance")
        self.assertGoogleError(self.api("POST", f"{EVENTS}/{sid}/move"), 400, "required")
        self.assertGoogleError(self.api("POST", f"{EVENTS}/nosuchevent1/move",
                                        query={"destination": "other@example.com"}), 404, "notFound")
        self.ok("POST", f"{EVENTS}/{sid}/move", query={"destination": "other@example.com"})
        got = {i["id"]: i for i in self.ok("GET", self.OTHER, query={"singleEvents": "true"})["items"]}
        self.assertEqual(len(got), 3)
        self.assertEqual(got[inst[1]["id"]]["summary"], "exc")
        # a live event with that id at the destination -> 409 duplicate
        ev = self.insert(timed(future(3, 9), future(3, 10)))
        self.ok("POST", self.OTHER, dict(timed(future(3, 9), future(3, 10)), id=ev["id"]))
        self.assertGoogleError(self.api("POST", f"{EVENTS}/{ev['id']}/move",
                                        query={"destination": "other@example.com"}), 409, "duplicate")

    def test_host_move_calendar_notifies_and_is_logged_as_host(self):
        ev = self.fg.host(CAL, op="create", event=timed(future(3, 9), future(3, 10)))
        rev_before = self.fg.control("GET", "/events/other@example.com")["rev"]
        moved = self.fg.host(CAL, op="move_calendar", id=ev["id"], destination="other@example.com")
        self.assertEqual((moved["id"], moved["organizer"]["email"]), (ev["id"], "other@example.com"))
        dump = self.fg.control("GET", "/events/other@example.com")
        self.assertGreater(dump["rev"], rev_before)
        self.assertEqual([e["event"]["id"] for e in dump["events"]], [ev["id"]])
        self.assertEqual(self.fg.control("GET", "/requests?op=events.move")["requests"], [])


class TestAttendeesConferenceAndInjection(FakeGoogleCase):
    def test_attendee_response_status_set_by_host(self):
        ev = self.insert(timed(future(3, 9), future(3, 10), attendees=[
            {"email": "a@example.com"}, {"email": "b@example.com", "responseStatus": "tentative"}]))
        self.assertEqual([a["responseStatus"] for a in ev["attendees"]], ["needsAction", "tentative"])
        _, tok = self.full_sync()
        for response in ("accepted", "declined", "tentative", "needsAction"):
            with self.subTest(response=response):
                before = self.ok("GET", f"{EVENTS}/{ev['id']}")
                got = self.fg.host(CAL, op="respond", id=ev["id"], email="A@example.com",
                                   response=response)
                self.assertEqual(got["attendees"][0]["responseStatus"], response)
                self.assertNotEqual(got["etag"], before["etag"])
                self.assertGreater(got["updated"], before["updated"])
                self.assertEqual(got["sequence"], before["sequence"])
                items, tok = self.incremental(tok)
                self.assertEqual([(i["id"], i["attendees"][0]["responseStatus"]) for i in items],
                                 [(ev["id"], response)])
        self.assertEqual(self.ok("GET", f"{EVENTS}/{ev['id']}")["attendees"][1]["responseStatus"],
                         "tentative")
        for bad, status in (({"email": "a@example.com", "response": "maybe"}, 400),
                            ({"email": "nobody@example.com", "response": "accepted"}, 404)):
            st, _, _ = self.fg.request("POST", "/_control/events/primary",
                                       dict(bad, op="respond", id=ev["id"]))
            self.assertEqual(st, status, bad)
        self.assertGoogleError(self.api("POST", EVENTS, timed(future(3, 9), future(3, 10), attendees=[
            {"email": "a@example.com", "responseStatus": "maybe"}])), 400, "invalid")

    def test_conference_data_create_request(self):
        req = {"createRequest": {"requestId": "req-1",
                                 "conferenceSolutionKey": {"type": "hangoutsMeet"}}}
        # without conferenceDataVersion the createRequest is ignored
        plain = self.insert(timed(future(3, 9), future(3, 10), conferenceData=req))
        self.assertNotIn("conferenceData", plain)
        self.assertNotIn("hangoutLink", plain)
        ev = self.ok("POST", EVENTS, timed(future(3, 9), future(3, 10), conferenceData=req),
                     query={"conferenceDataVersion": "1"})
        cd = ev["conferenceData"]
        code = cd["conferenceId"]
        self.assertRegex(code, r"^[a-z]{3}-[a-z]{4}-[a-z]{3}$")
        self.assertEqual(ev["hangoutLink"], f"https://meet.google.com/{code}")
        self.assertEqual(cd["entryPoints"], [{"entryPointType": "video",
                                              "uri": f"https://meet.google.com/{code}",
                                              "label": f"meet.google.com/{code}"}])
        self.assertEqual(cd["createRequest"]["status"], {"statusCode": "success"})
        self.assertEqual(cd["conferenceSolution"]["key"], {"type": "hangoutsMeet"})
        self.assertEqual(self.ok("GET", f"{EVENTS}/{ev['id']}")["conferenceData"], cd)
        # a patch without the version leaves it alone, even when it sends null
        got = self.ok("PATCH", f"{EVENTS}/{ev['id']}", {"summary": "s", "conferenceData": None})
        self.assertEqual((got["conferenceData"], got["hangoutLink"]), (cd, ev["hangoutLink"]))
        # the same requestId again is ignored; a new one makes a new conference
        got = self.ok("PATCH", f"{EVENTS}/{ev['id']}", {"conferenceData": req},
                      query={"conferenceDataVersion": "1"})
        self.assertEqual(got["conferenceData"]["conferenceId"], code)
        req2 = {"createRequest": dict(req["createRequest"], requestId="req-2")}
        got = self.ok("PATCH", f"{EVENTS}/{ev['id']}", {"conferenceData": req2},
                      query={"conferenceDataVersion": "1"})
        self.assertNotEqual(got["conferenceData"]["conferenceId"], code)
        # version 1 and null removes it
        got = self.ok("PATCH", f"{EVENTS}/{ev['id']}", {"conferenceData": None},
                      query={"conferenceDataVersion": "1"})
        self.assertNotIn("conferenceData", got)
        self.assertNotIn("hangoutLink", got)
        bad_type = {"createRequest": {"requestId": "r", "conferenceSolutionKey": {"type": "eventHangout"}}}
        for query, body in (({"conferenceDataVersion": "2"}, req), ({"conferenceDataVersion": "1"}, bad_type),
                            ({"conferenceDataVersion": "1"}, {"notes": "no solution"})):
            self.assertEqual(self.api("POST", EVENTS, timed(future(3, 9), future(3, 10), conferenceData=body),
                                      query=query)[0], 400, (query, body))
        # conferences Google has not finished creating yet
        self.fg.control("POST", "/config", {"conference_status": "pending"})
        ev = self.ok("POST", EVENTS, timed(future(3, 9), future(3, 10), conferenceData=req),
                     query={"conferenceDataVersion": "1"})
        self.assertEqual(ev["conferenceData"], {"createRequest": {
            "requestId": "req-1", "conferenceSolutionKey": {"type": "hangoutsMeet"},
            "status": {"statusCode": "pending"}}})
        self.assertNotIn("hangoutLink", ev)

    def test_injected_malformed_items_in_the_change_feed(self):
        ev = self.insert(timed(future(3, 9), future(3, 10)))
        _, tok = self.full_sync()
        no_id = self.fg.control("POST", "/events/primary/inject", {"preset": "missing_id"})["item"]
        self.assertNotIn("id", no_id)
        broken = self.fg.control("POST", "/events/primary/inject", {"preset": "broken_start"})["item"]
        self.assertEqual(broken["start"], {"dateTime": "not-a-time"})
        raw = self.fg.control("POST", "/events/primary/inject",
                              {"item": {"kind": "calendar#event", "status": 7}})["item"]
        items, tok2 = self.incremental(tok)
        self.assertEqual(items, [no_id, broken, raw])
        self.assertEqual(self.incremental(tok2)[0], [])        # delivered once per token
        full, _ = self.full_sync()
        self.assertEqual(full, [self.ok("GET", f"{EVENTS}/{ev['id']}"), no_id, broken, raw])
        # pages still work around them
        items, pages = self.list_all({"maxResults": "1"})
        self.assertEqual((len(items), len(pages)), (4, 4))
        for bad in ({}, {"preset": "nope"}, {"item": [1]}, {"item": {}, "preset": "missing_id"}):
            st, _, _ = self.fg.request("POST", "/_control/events/primary/inject", bad)
            self.assertEqual(st, 400, bad)
        self.fg.control("POST", "/reset")
        self.tok = self.fg.access_token()
        self.assertEqual(self.ok("GET", EVENTS)["items"], [])


class TestConvergence(FakeGoogleCase):
    """Random API and host edits; a client that mirrors a full sync and then
    applies every incremental delta (upsert; cancelled -> drop, a series
    stub dropping its instances) must end up equal to a fresh full listing,
    in both singleEvents modes. This is what calsync relies on."""

    INSTANCE = re.compile(r"^(.+)_(\d{8}(T\d{6}Z)?)$")

    # Days around the next two daylight-saving changes in New York (a week
    # ahead at least), where the random edits land: every series starts in
    # the future, so the fake's expansion window (series start + 60 days)
    # is the same size whatever the date, and never moves during the test
    _first = next_dst_change("America/New_York", TODAY + timedelta(days=7))
    _second = next_dst_change("America/New_York", _first + timedelta(days=7))
    DAYS = [(c + timedelta(days=d)).strftime("%Y-%m-%d")
            for c, ds in ((_first, (-3, -1)), (_second, (-2, 1))) for d in ds]
    MOVE_TO = (rfc3339(_first + timedelta(days=1, hours=8)),      # just after the first
               rfc3339(_first + timedelta(days=1, hours=9)))
    SHIFT_TO = (rfc3339(_first - timedelta(days=2, hours=-6)),    # just before it
                rfc3339(_first - timedelta(days=2, hours=-7)))
    UNTIL = id_time(_second + timedelta(days=9))

    def listing(self, query):
        items, pages = self.list_all(query)
        return items, pages[-1]["nextSyncToken"]

    def apply(self, mirror, items):
        for it in items:
            if it["status"] != "cancelled":
                mirror[it["id"]] = it
                continue
            mirror.pop(it["id"], None)
            for k in list(mirror):
                m = self.INSTANCE.match(k)
                if m and m.group(1) == it["id"]:
                    del mirror[k]

    @staticmethod
    def live(items):
        return {i["id"]: i["etag"] for i in items if i["status"] != "cancelled"}

    def random_edit(self, rnd):
        stored = [e["event"] for e in self.fg.control("GET", "/events/primary")["events"]]
        ids = [e["id"] for e in stored]
        cancelled = [e["id"] for e in stored if e["status"] == "cancelled"]
        masters = [e["id"] for e in stored if e.get("recurrence") and e["status"] != "cancelled"]
        instances = list(self.live(self.listing({"singleEvents": "true"})[0]))
        tz = rnd.choice(["America/New_York", "Europe/Berlin", "UTC"])
        day = rnd.choice(self.DAYS)                                 # around both DST changes
        h = rnd.randint(0, 22)
        t = lambda hour: {"dateTime": f"{day}T{hour:02d}:00:00", "timeZone": tz}
        r = rnd.random()
        if r < 0.15:
            self.api("POST", EVENTS, {"summary": "s", "start": t(h), "end": t(h + 1)})
        elif r < 0.27:
            rule = rnd.choice(["RRULE:FREQ=DAILY;COUNT=6", "RRULE:FREQ=WEEKLY;BYDAY=MO,TH;COUNT=5",
                               "RRULE:FREQ=DAILY", "RRULE:FREQ=DAILY;INTERVAL=2;UNTIL=" + self.UNTIL])
            self.fg.host(CAL, op="create", event={"summary": "r", "start": t(h), "end": t(h + 1),
                                                  "recurrence": [rule]})
        elif r < 0.42 and instances + ids:
            self.api("PATCH", f"{EVENTS}/{rnd.choice(instances + ids)}", {"summary": f"t{rnd.randint(0, 99)}"})
        elif r < 0.55 and instances:
            self.api("PATCH", f"{EVENTS}/{rnd.choice(instances)}",
                     {"start": {"dateTime": self.MOVE_TO[0]}, "end": {"dateTime": self.MOVE_TO[1]}})
        elif r < 0.7 and instances + ids:
            self.api("DELETE", f"{EVENTS}/{rnd.choice(instances + ids)}")
        elif r < 0.8 and masters:
            m = rnd.choice(masters)
            occ = [k for k in instances if self.INSTANCE.match(k) and self.INSTANCE.match(k).group(1) == m]
            if occ:
                self.fg.request("POST", "/_control/events/primary",
                                {"op": rnd.choice(["truncate", "split"]), "id": rnd.choice(occ),
                                 "event": {"summary": "after split"}})
        elif r < 0.9 and masters:
            self.api("PATCH", f"{EVENTS}/{rnd.choice(masters)}", rnd.choice([
                {"recurrence": ["RRULE:FREQ=DAILY;COUNT=3"]}, {"recurrence": None},
                {"start": {"dateTime": self.SHIFT_TO[0]},
                 "end": {"dateTime": self.SHIFT_TO[1]}}]))
        elif cancelled:
            self.api("PATCH", f"{EVENTS}/{rnd.choice(cancelled)}", {"status": "confirmed"})

    def check_seed(self, seed, ops=60):
        rnd = random.Random(seed)
        self.fg.control("POST", "/config", {"expand_days": 60})
        modes = {"plain": {}, "single": {"singleEvents": "true", "maxResults": "37"}}
        state = {}
        for name, q in modes.items():
            items, token = self.listing(q)
            state[name] = ({i["id"]: i for i in items if i["status"] != "cancelled"}, token)
        for i in range(ops):
            self.random_edit(rnd)
            if rnd.random() < 0.3 or i == ops - 1:
                for name, q in modes.items():
                    mirror, token = state[name]
                    items, token = self.listing(dict(q, syncToken=token))
                    self.apply(mirror, items)
                    state[name] = (mirror, token)
                    full = self.live(self.listing(q)[0])
                    self.assertEqual({k: v["etag"] for k, v in mirror.items()}, full,
                                     f"seed {seed}, edit {i}, mode {name}")

    def test_incremental_sync_converges(self):
        for seed in (1, 3):
            with self.subTest(seed=seed):
                self.setUp()
                self.check_seed(seed)


class TestStateFile(unittest.TestCase):
    def test_restart_keeps_state(self):
        tmp = tempfile.mkdtemp(prefix="fake-google-")
        try:
            fg = FakeGoogle(state_file=os.path.join(tmp, "state.json")).start()
            try:
                tok = fg.access_token("rt-keep")
                st, ev, _ = fg.api("POST", EVENTS, timed("2026-12-01T09:00:00Z", "2026-12-01T10:00:00Z"),
                                   token=tok)
                self.assertEqual(st, 200)
                st, page, _ = fg.api("GET", EVENTS, token=tok)
                port = fg.port
                fg.restart()
                self.assertEqual(fg.port, port)
                st, page2, _ = fg.api("GET", EVENTS, token=tok, query={"syncToken": page["nextSyncToken"]})
                self.assertEqual((st, page2["items"]), (200, []))
                st, got, _ = fg.api("GET", f"{EVENTS}/{ev['id']}", token=tok)
                self.assertEqual((st, got["etag"]), (200, ev["etag"]))
            finally:
                self.assertEqual(fg.stop(), 0)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
