"""Self-test of tests/fake_graph.py: starts it as a subprocess on port 0 and
checks each Graph behaviour it models, over real sockets, with a small
notification receiver that answers the validation handshake.

    python3 -m unittest tests/test_fake_graph.py -v
"""
import json
import os
import sys
import threading
import time
import unittest
import urllib.parse
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "e2e"))
from fake_graph import FakeGraph  # noqa: E402
from harness import day_at, ymd  # noqa: E402

UTC = timezone.utc
FIXTURES = os.environ.get("CALSYNC_MICROSOFT_FIXTURES") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "fixtures", "microsoft")


def local(t):
    """A dateTimeTimeZone dateTime (no offset) for an aware datetime in UTC."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def event(start, end, subject="e", tz="UTC", **extra):
    ev = {"subject": subject, "start": {"dateTime": start, "timeZone": tz},
          "end": {"dateTime": end, "timeZone": tz}}
    ev.update(extra)
    return ev


class Receiver:
    """A notification endpoint: answers the validation handshake (echoes
    the decoded validationToken as text/plain) and records every POST.
    ``mode`` changes how it answers: "ok", "encoded" (echoes the token
    still URL-encoded), "html" (wrong content type), "slow" (answers after
    ``slow_s``), or an int status for notifications."""

    def __init__(self):
        self.calls = []        # (kind, query, body)
        self.cv = threading.Condition()
        self.mode = "ok"
        self.notify_status = 202
        self.slow_s = 0
        rx = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                raw_q = self.path.partition("?")[2]
                q = urllib.parse.parse_qs(raw_q)
                kind = "validation" if "validationToken" in q else "notification"
                with rx.cv:
                    rx.calls.append((kind, q, body, self.headers.get("Content-Type")))
                    rx.cv.notify_all()
                if rx.mode == "slow":
                    time.sleep(rx.slow_s)
                if kind == "validation":
                    token = q["validationToken"][0]
                    ctype = "text/plain; charset=utf-8"
                    if rx.mode == "encoded":
                        token = raw_q.split("validationToken=", 1)[1].split("&")[0]
                    if rx.mode == "html":
                        ctype = "text/html"
                    data = token.encode()
                    self.send_response(200)
                    self.send_header("Content-Type", ctype)
                else:
                    data = b""
                    self.send_response(rx.notify_status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass   # the fake gave up waiting (the slow mode)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        self.lifecycle_url = f"http://127.0.0.1:{self.server.server_address[1]}/lifecycle"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def notifications(self, n, timeout=10):
        """The first n notification items (flattened from the batches)."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                items = [it for k, _, b, _ in self.calls if k == "notification"
                         for it in json.loads(b)["value"] if "changeType" in it]
                if len(items) >= n or time.monotonic() > deadline:
                    return items
                self.cv.wait(0.2)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class GraphCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.fg = FakeGraph().start()

    @classmethod
    def tearDownClass(cls):
        assert cls.fg.stop() == 0

    def setUp(self):
        self.fg.control("POST", "/reset")
        self.fg.control("POST", "/config", {"retry_delays": [0.2, 0.2], "batch_ms": 20})
        self.tok = self.fg.access_token()
        self.rx = Receiver()
        self.addCleanup(self.rx.close)

    def api(self, method, path, body=None, query=None, headers=None, token=None):
        return self.fg.api(method, path, body, token=token or self.tok, query=query, headers=headers)

    def ok(self, method, path, body=None, query=None, headers=None):
        st, b, _ = self.api(method, path, body, query, headers)
        self.assertIn(st, (200, 201, 204), b)
        return b

    def assertGraphError(self, resp, status, code):
        st, body, _ = resp
        self.assertEqual(st, status, body)
        self.assertEqual(body["error"]["code"], code, body)
        return body

    def future_event(self, days=3, hour=9, **extra):
        s = day_at(days, hour)
        return event(local(s), local(s + timedelta(hours=1)), **extra)

    def subscribe(self, resource="me/events", minutes=60, lifecycle=True, client_state="cs-1",
                  change_type="created,updated,deleted"):
        body = {"changeType": change_type, "notificationUrl": self.rx.url, "resource": resource,
                "expirationDateTime": (datetime.now(UTC) + timedelta(minutes=minutes)).strftime(
                    "%Y-%m-%dT%H:%M:%S.0000000Z"), "clientState": client_state}
        if lifecycle:
            body["lifecycleNotificationUrl"] = self.rx.lifecycle_url
        return self.api("POST", "/subscriptions", body)


class TestAuth(GraphCase):
    def test_refresh_rotates_and_revoked_grant_is_invalid_grant(self):
        form = "client_id=c1&grant_type=refresh_token&refresh_token=rt-1&scope=Calendars.ReadWrite"
        st, tok, _ = self.fg.request("POST", "/common/oauth2/v2.0/token", form,
                                     {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(st, 200, tok)
        self.assertEqual((tok["token_type"], tok["expires_in"]), ("Bearer", 3599))
        self.assertNotEqual(tok["refresh_token"], "rt-1")
        self.assertEqual(self.api("GET", "/me/events", token=tok["access_token"])[0], 200)
        # the new refresh token belongs to the same grant: revoking one revokes both
        self.fg.control("POST", "/revoke", {"refresh_token": tok["refresh_token"]})
        for rt in ("rt-1", tok["refresh_token"]):
            st, err, _ = self.fg.request("POST", "/tenant-x/oauth2/v2.0/token",
                                         f"client_id=c1&grant_type=refresh_token&refresh_token={rt}",
                                         {"Content-Type": "application/x-www-form-urlencoded"})
            self.assertEqual((st, err["error"], err["error_codes"]), (400, "invalid_grant", [50173]))
            self.assertTrue(err["error_description"].startswith("AADSTS50173: "))
            for k in ("timestamp", "trace_id", "correlation_id"):
                self.assertIn(k, err)
        self.assertGraphError(self.api("GET", "/me/events", token=tok["access_token"]), 401,
                              "InvalidAuthenticationToken")
        st, err, _ = self.fg.request("POST", "/common/oauth2/v2.0/token", "grant_type=refresh_token",
                                     {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual((st, err["error"]), (400, "invalid_request"))

    def test_expired_access_token_is_401(self):
        self.fg.control("POST", "/expire_access_tokens")
        st, body, h = self.api("GET", "/me/events")
        self.assertEqual((st, body["error"]["code"]), (401, "InvalidAuthenticationToken"))
        self.assertIn("www-authenticate", h)


class TestEvents(GraphCase):
    def test_create_get_patch_delete_and_etags(self):
        ev = self.ok("POST", "/me/events", self.future_event(subject="lunch", attendees=[
            {"emailAddress": {"address": "a@example.com", "name": "A"}, "type": "required"}]))
        self.assertTrue(ev["@odata.etag"].startswith('W/"'))
        self.assertEqual(ev["@odata.etag"], f'W/"{ev["changeKey"]}"')
        self.assertEqual((ev["type"], ev["seriesMasterId"], ev["isCancelled"]), ("singleInstance", None, False))
        self.assertEqual(ev["attendees"][0]["status"], {"response": "none", "time": "0001-01-01T00:00:00Z"})
        self.assertRegex(ev["start"]["dateTime"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}$")
        self.assertEqual(ev["start"]["timeZone"], "UTC")
        got = self.ok("GET", f"/me/events/{ev['id']}")
        self.assertEqual(got["@odata.etag"], ev["@odata.etag"])
        # conditional PATCH: a stale etag -> 412, the current one works and changes it
        upd = self.ok("PATCH", f"/me/events/{ev['id']}", {"subject": "brunch"},
                      headers={"If-Match": ev["@odata.etag"]})
        self.assertNotEqual(upd["changeKey"], ev["changeKey"])
        self.assertEqual(upd["subject"], "brunch")
        self.assertGraphError(self.api("PATCH", f"/me/events/{ev['id']}", {"subject": "x"},
                                       headers={"If-Match": ev["@odata.etag"]}), 412,
                              "ErrorIrresolvableConflict")
        self.assertGraphError(self.api("DELETE", f"/me/events/{ev['id']}",
                                       headers={"If-Match": ev["@odata.etag"]}), 412,
                              "ErrorIrresolvableConflict")
        # the switch turns the check off
        self.fg.control("POST", "/config", {"if_match": False})
        self.ok("PATCH", f"/me/events/{ev['id']}", {"subject": "y"}, headers={"If-Match": ev["@odata.etag"]})
        st, body, _ = self.api("DELETE", f"/me/events/{ev['id']}")
        self.assertEqual((st, body), (204, None))
        self.assertGraphError(self.api("GET", f"/me/events/{ev['id']}"), 404, "ErrorItemNotFound")
        self.assertGraphError(self.api("DELETE", f"/me/events/{ev['id']}"), 404, "ErrorItemNotFound")

    def test_prefer_outlook_timezone(self):
        s = day_at(3, 17)   # 17:00 UTC
        ev = self.ok("POST", "/me/events", event(local(s), local(s + timedelta(hours=1))))
        st, got, h = self.api("GET", f"/me/events/{ev['id']}",
                              headers={"Prefer": 'outlook.timezone="Pacific Standard Time"'})
        self.assertEqual(h["preference-applied"], 'outlook.timezone="Pacific Standard Time"')
        self.assertEqual(got["start"]["timeZone"], "Pacific Standard Time")
        pst = s.astimezone(__import__("zoneinfo").ZoneInfo("America/Los_Angeles"))
        self.assertEqual(got["start"]["dateTime"], pst.strftime("%Y-%m-%dT%H:%M:%S.0000000"))
        self.assertEqual(got["originalStartTimeZone"], "UTC")
        bad = event(local(s), local(s + timedelta(hours=1)), tz="Mars Standard Time")
        self.assertGraphError(self.api("POST", "/me/events", bad), 400, "TimeZoneNotSupportedException")

    def test_transaction_id_guards_duplicate_creates(self):
        # Not documented by Microsoft (fixtures README §7): the fake returns the
        # first event for a repeated transactionId, or 409 in "conflict" mode.
        body = self.future_event(transactionId="7E163156-7762-4BEB-A1C6-729EA81755A7")
        a = self.ok("POST", "/me/events", body)
        b = self.ok("POST", "/me/events", body)
        self.assertEqual((a["id"], a["transactionId"]), (b["id"], body["transactionId"]))
        self.assertEqual(len(self.ok("GET", "/me/events")["value"]), 1)
        self.fg.control("POST", "/config", {"transaction_id_mode": "conflict"})
        self.assertGraphError(self.api("POST", "/me/events", body), 409, "ErrorDuplicateTransactionId")
        # a deleted event frees its transactionId
        self.ok("DELETE", f"/me/events/{a['id']}")
        self.assertNotEqual(self.ok("POST", "/me/events", body)["id"], a["id"])

    def test_extended_property_tag_and_open_extension(self):
        pid = "String {66f5a359-4659-4830-9070-00040ec6ac6e} Name calsync_booking_uid"
        ev = self.ok("POST", "/me/events", self.future_event(
            singleValueExtendedProperties=[{"id": pid, "value": "bk-1"}]))
        self.assertNotIn("singleValueExtendedProperties", ev)       # not returned without $expand
        got = self.ok("GET", f"/me/events/{ev['id']}",
                      query={"$expand": f"singleValueExtendedProperties($filter=id eq '{pid}')"})
        self.assertEqual(got["singleValueExtendedProperties"], [{"id": pid, "value": "bk-1"}])
        self.ok("POST", "/me/events", self.future_event(days=4))
        found = self.ok("GET", "/me/events", query={
            "$filter": f"singleValueExtendedProperties/Any(ep: ep/id eq '{pid}' and ep/value eq 'bk-1')"})
        self.assertEqual([e["id"] for e in found["value"]], [ev["id"]])
        self.assertGraphError(self.api("POST", "/me/events", self.future_event(
            singleValueExtendedProperties=[{"id": "calsync", "value": "x"}])), 400,
            "ErrorInvalidExtendedProperty")
        ext = self.ok("POST", f"/me/events/{ev['id']}/extensions",
                      {"@odata.type": "microsoft.graph.openTypeExtension",
                       "extensionName": "com.example.calsync", "bookingUid": "bk-1"})
        self.assertEqual((ext["id"], ext["bookingUid"]),
                         ("microsoft.graph.openTypeExtension.com.example.calsync", "bk-1"))
        self.assertGraphError(self.api("POST", f"/me/events/{ev['id']}/extensions",
                                       {"@odata.type": "microsoft.graph.openTypeExtension",
                                        "extensionName": "com.example.calsync"}), 409, "NameAlreadyExists")
        got = self.ok("GET", f"/me/events/{ev['id']}", query={
            "$expand": "extensions($filter=id eq 'microsoft.graph.openTypeExtension.com.example.calsync')"})
        self.assertEqual(got["extensions"][0]["bookingUid"], "bk-1")
        self.assertEqual(self.ok("GET", f"/me/events/{ev['id']}/extensions/com.example.calsync")["bookingUid"],
                         "bk-1")

    def test_series_master_occurrences_exceptions_instances(self):
        first = day_at(3, 15)
        master = self.ok("POST", "/me/events", event(
            local(first), local(first + timedelta(minutes=30)), subject="standup",
            recurrence={"pattern": {"type": "daily", "interval": 1},
                        "range": {"type": "numbered", "startDate": ymd(3), "numberOfOccurrences": 4}}))
        self.assertEqual((master["type"], master["seriesMasterId"]), ("seriesMaster", None))
        self.assertEqual(master["recurrence"]["range"]["recurrenceTimeZone"], "UTC")
        self.assertEqual(master["recurrence"]["pattern"]["firstDayOfWeek"], "sunday")
        window = {"startDateTime": local(day_at(2)) + "Z", "endDateTime": local(day_at(10)) + "Z"}
        inst = self.ok("GET", f"/me/events/{master['id']}/instances", query=window)["value"]
        self.assertEqual([i["type"] for i in inst], ["occurrence"] * 4)
        self.assertTrue(all(i["seriesMasterId"] == master["id"] for i in inst))
        self.assertEqual(inst[1]["originalStart"], local(first + timedelta(days=1)) + "Z")
        # an occurrence edited becomes an exception with the same id; one deleted vanishes
        exc = self.ok("PATCH", f"/me/events/{inst[1]['id']}", {"subject": "moved",
                      "start": {"dateTime": local(first + timedelta(days=1, hours=2)), "timeZone": "UTC"},
                      "end": {"dateTime": local(first + timedelta(days=1, hours=3)), "timeZone": "UTC"}})
        self.assertEqual((exc["id"], exc["type"], exc["seriesMasterId"]), (inst[1]["id"], "exception", master["id"]))
        self.ok("DELETE", f"/me/events/{inst[2]['id']}")
        inst2 = self.ok("GET", f"/me/events/{master['id']}/instances", query=window)["value"]
        self.assertEqual([(i["id"], i["type"]) for i in inst2],
                         [(inst[0]["id"], "occurrence"), (inst[1]["id"], "exception"),
                          (inst[3]["id"], "occurrence")])
        view = self.ok("GET", "/me/calendarView", query=window)["value"]
        self.assertEqual(len(view), 3)
        self.assertEqual([e["type"] for e in self.ok("GET", "/me/events")["value"]], ["seriesMaster"])
        self.assertGraphError(self.api("GET", f"/me/events/{master['id']}/instances"), 400,
                              "ErrorInvalidParameter")
        # deleting the master removes the series
        self.ok("DELETE", f"/me/events/{master['id']}")
        self.assertEqual(self.ok("GET", "/me/calendarView", query=window)["value"], [])

    def test_host_operations(self):
        s = day_at(3, 9)
        ev = self.fg.host(op="create", event=event(local(s), local(s + timedelta(minutes=45)), attendees=[
            {"emailAddress": {"address": "guest@example.com"}}]))
        moved = self.fg.host(op="move", id=ev["id"], start=local(s + timedelta(hours=2)) + "Z")
        self.assertEqual((moved["start"]["dateTime"], moved["end"]["dateTime"]),
                         (local(s + timedelta(hours=2)) + ".0000000",
                          local(s + timedelta(hours=2, minutes=45)) + ".0000000"))
        self.assertNotEqual(moved["changeKey"], ev["changeKey"])
        got = self.fg.host(op="respond", id=ev["id"], email="GUEST@example.com", response="declined")
        self.assertEqual(got["attendees"][0]["status"]["response"], "declined")
        self.assertEqual(self.ok("GET", f"/me/events/{ev['id']}")["attendees"][0]["status"]["response"],
                         "declined")
        st, _, _ = self.fg.request("POST", "/_control/events", {"op": "respond", "id": ev["id"],
                                                               "email": "nobody@example.com",
                                                               "response": "accepted"})
        self.assertEqual(st, 404)
        series = self.fg.host(op="create", event=event(local(s), local(s + timedelta(minutes=30)), recurrence={
            "pattern": {"type": "daily", "interval": 1},
            "range": {"type": "endDate", "startDate": ymd(3), "endDate": ymd(5)}}))
        exc = self.fg.host(op="update", series=series["id"], original_start=local(day_at(4, 9)) + "Z",
                           event={"subject": "host exception"})
        self.assertEqual((exc["type"], exc["subject"]), ("exception", "host exception"))
        self.fg.control("POST", "/events", {"op": "delete", "series": series["id"],
                                            "original_start": local(day_at(5, 9)) + "Z"})
        inst = self.ok("GET", f"/me/events/{series['id']}/instances", query={
            "startDateTime": local(day_at(2)) + "Z", "endDateTime": local(day_at(8)) + "Z"})["value"]
        self.assertEqual([i["type"] for i in inst], ["occurrence", "exception"])
        self.assertEqual(len(self.fg.control("GET", "/requests")["requests"]), 2)  # host edits are not API calls

    def test_weekly_series_keeps_wall_clock_across_dst(self):
        tz = "Eastern Standard Time"
        s = day_at(3, 10, tz="America/New_York")
        self.ok("POST", "/me/events", {
            "subject": "weekly", "start": {"dateTime": s.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": tz},
            "end": {"dateTime": (s + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": tz},
            "recurrence": {"pattern": {"type": "weekly", "interval": 1,
                                       "daysOfWeek": [s.strftime("%A")]},
                           "range": {"type": "numbered", "startDate": s.date().isoformat(),
                                     "numberOfOccurrences": 30}}})
        view = self.ok("GET", "/me/calendarView", query={
            "startDateTime": local(day_at(2)) + "Z", "endDateTime": local(day_at(3 + 7 * 31)) + "Z"},
            headers={"Prefer": f'outlook.timezone="{tz}"'})["value"]
        self.assertEqual(len(view), 30)
        self.assertEqual({v["start"]["dateTime"][11:] for v in view}, {"10:00:00.0000000"})


class TestSubscriptions(GraphCase):
    def test_create_validates_both_urls_and_answers_the_subscription(self):
        st, sub, _ = self.subscribe()
        self.assertEqual(st, 201, sub)
        for k in ("id", "resource", "applicationId", "changeType", "clientState", "expirationDateTime",
                  "notificationUrl", "lifecycleNotificationUrl", "creatorId", "latestSupportedTlsVersion"):
            self.assertIn(k, sub)
        vals = [c for c in self.rx.calls if c[0] == "validation"]
        self.assertEqual(len(vals), 2)
        token = vals[0][1]["validationToken"][0]
        self.assertIn(" ", token)          # needs URL-decoding, as Graph's do
        self.assertEqual(vals[0][3], "text/plain; charset=utf-8")
        self.assertEqual(self.ok("GET", f"/subscriptions/{sub['id']}")["clientState"], "cs-1")

    def test_failed_handshake_fails_the_create(self):
        for mode in ("encoded", "html"):
            with self.subTest(mode=mode):
                self.rx.mode = mode
                self.assertGraphError(self.subscribe(), 400, "InvalidRequest")
        self.rx.mode = "slow"
        self.rx.slow_s = 1.5
        self.fg.control("POST", "/config", {"validation_timeout": 0.5})
        self.assertGraphError(self.subscribe(lifecycle=False), 400, "InvalidRequest")
        self.rx.mode = "ok"
        self.assertEqual(self.ok("GET", "/subscriptions")["value"], [])
        st, _, _ = self.api("POST", "/subscriptions", {
            "changeType": "created", "resource": "me/events", "notificationUrl": "http://127.0.0.1:9/x",
            "expirationDateTime": (datetime.now(UTC) + timedelta(hours=1)).isoformat()})
        self.assertEqual(st, 400)
        vals = self.fg.control("GET", "/notifications?kind=validation")["notifications"]
        self.assertTrue(vals and all(v["status"] == "failed" for v in vals))

    def test_expiry_cap_renew_delete_and_reauthorize(self):
        self.assertGraphError(self.subscribe(minutes=10081), 400, "InvalidRequest")
        self.assertGraphError(self.subscribe(minutes=-5), 400, "InvalidRequest")
        st, sub, _ = self.subscribe(minutes=10079)
        self.assertEqual(st, 201, sub)
        self.fg.control("POST", "/config", {"max_subscription_minutes": 4230, "expiry_policy": "clamp"})
        new_exp = (datetime.now(UTC) + timedelta(minutes=9000)).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
        ren = self.ok("PATCH", f"/subscriptions/{sub['id']}", {"expirationDateTime": new_exp})
        granted = datetime.fromisoformat(ren["expirationDateTime"].replace("0Z", "+00:00"))
        self.assertLessEqual(granted, datetime.now(UTC) + timedelta(minutes=4230, seconds=5))
        self.assertGreater(granted, datetime.now(UTC) + timedelta(minutes=4229))
        self.assertGraphError(self.api("PATCH", f"/subscriptions/{sub['id']}",
                                       {"lifecycleNotificationUrl": self.rx.lifecycle_url}), 400, "InvalidRequest")
        st, body, _ = self.api("POST", f"/subscriptions/{sub['id']}/reauthorize")
        self.assertEqual(st, 204)
        self.assertEqual(self.ok("GET", f"/subscriptions/{sub['id']}")["expirationDateTime"],
                         ren["expirationDateTime"])
        st, body, _ = self.api("DELETE", f"/subscriptions/{sub['id']}")
        self.assertEqual((st, body), (204, None))
        self.assertGraphError(self.api("GET", f"/subscriptions/{sub['id']}"), 404, "ResourceNotFound")

    def test_change_notifications_are_batched_thin_and_echo_client_state(self):
        _, sub, _ = self.subscribe()
        ev = self.ok("POST", "/me/events", self.future_event())
        self.ok("PATCH", f"/me/events/{ev['id']}", {"subject": "new"})
        host = self.fg.host(op="create", event=self.future_event(days=4))
        self.ok("DELETE", f"/me/events/{ev['id']}")
        items = self.rx.notifications(4)
        self.assertEqual([i["changeType"] for i in items], ["created", "updated", "created", "deleted"])
        h = self.fg.control("GET", "/health")
        for i in items:
            self.assertEqual((i["subscriptionId"], i["clientState"], i["tenantId"]),
                             (sub["id"], "cs-1", h["tenant_id"]))
            self.assertEqual(set(i["resourceData"]), {"@odata.type", "@odata.id", "@odata.etag", "id"})
            self.assertEqual(i["resourceData"]["@odata.type"], "#Microsoft.Graph.Event")
            self.assertEqual(i["resource"], f"Users/{h['user_id']}/Events/{i['resourceData']['id']}")
            self.assertTrue(i["subscriptionExpirationDateTime"].endswith("+00:00"))
            self.assertNotIn("subject", i)
        self.assertEqual(items[2]["resourceData"]["id"], host["id"])
        # the bodies are {"value": [...]} batches
        for kind, _, body, ctype in self.rx.calls:
            if kind == "notification":
                self.assertEqual(list(json.loads(body)), ["value"])
                self.assertTrue(ctype.startswith("application/json"))

    def test_change_type_and_calendar_scoping(self):
        cal = self.fg.control("POST", "/calendars", {"id": "AAMkCALother=", "name": "Other"})["id"]
        st, sub, _ = self.subscribe(resource=f"me/calendars/{cal}/events", change_type="deleted")
        self.assertEqual(st, 201, sub)
        a = self.ok("POST", "/me/events", self.future_event())               # default calendar
        b = self.ok("POST", f"/me/calendars/{cal}/events", self.future_event())
        self.ok("DELETE", f"/me/events/{a['id']}")
        self.ok("DELETE", f"/me/events/{b['id']}")
        items = self.rx.notifications(1)
        self.assertTrue(self.fg.control("POST", "/notifications/drain", {})["drained"])
        self.assertEqual([(i["changeType"], i["resourceData"]["id"]) for i in self.rx.notifications(1)],
                         [("deleted", b["id"])])
        self.assertEqual(len(items), 1)

    def test_redelivery_then_drop_then_missed(self):
        self.subscribe()
        self.rx.notify_status = 500
        self.ok("POST", "/me/events", self.future_event())
        recs = self.fg.control("GET", "/notifications?kind=lifecycle&wait_count=1&timeout_ms=8000")
        change = self.fg.control("GET", "/notifications?kind=change")["notifications"]
        self.assertEqual((change[0]["status"], change[0]["attempts"], change[0]["http_status"]),
                         ("dropped", 3, 500))
        self.assertEqual(recs["notifications"][0]["item"]["lifecycleEvent"], "missed")
        # the receiver refuses the missed notice too: it is tried as often, then dropped
        self.assertEqual(recs["notifications"][0]["status"], "dropped")
        posted = [c for c in self.rx.calls if c[0] == "notification"]
        self.assertEqual(len(posted), 3 + 3)

    def test_lifecycle_notifications(self):
        _, sub, _ = self.subscribe()
        r = self.fg.control("POST", "/lifecycle", {"subscription": sub["id"], "event": "reauthorizationRequired"})
        self.ok("POST", "/me/events", self.future_event())
        self.assertTrue(self.fg.control("POST", "/notifications/drain", {})["drained"])
        recs = self.fg.control("GET", "/notifications")["notifications"]
        life = [x for x in recs if x["kind"] == "lifecycle"]
        change = [x for x in recs if x["kind"] == "change"]
        self.assertEqual(life[0]["seq"], r["sent"])
        self.assertEqual(set(life[0]["item"]), {"subscriptionId", "subscriptionExpirationDateTime",
                                                "tenantId", "clientState", "lifecycleEvent"})
        self.assertEqual((change[0]["status"], change[0]["error"]), ("skipped", "reauthorization required"))
        lpost = [json.loads(c[2]) for c in self.rx.calls if c[0] == "notification"
                 and c[1] == {} and json.loads(c[2])["value"][0].get("lifecycleEvent")]
        self.assertEqual(lpost[0]["value"][0]["lifecycleEvent"], "reauthorizationRequired")
        self.assertEqual(self.api("POST", f"/subscriptions/{sub['id']}/reauthorize")[0], 204)
        self.ok("POST", "/me/events", self.future_event(days=5))
        self.assertEqual(self.rx.notifications(1)[-1]["changeType"], "created")
        self.fg.control("POST", "/lifecycle", {"subscription": sub["id"], "event": "subscriptionRemoved"})
        self.assertGraphError(self.api("GET", f"/subscriptions/{sub['id']}"), 404, "ResourceNotFound")
        self.fg.control("POST", "/notifications/drain", {})
        events = [x["item"]["lifecycleEvent"] for x in
                  self.fg.control("GET", "/notifications?kind=lifecycle")["notifications"]]
        self.assertEqual(events, ["reauthorizationRequired", "subscriptionRemoved"])

    def test_expired_subscription_is_silent_and_faults_drop_duplicate(self):
        _, sub, _ = self.subscribe()
        self.fg.control("POST", "/notification_faults", {"action": "drop"})
        self.fg.control("POST", "/notification_faults", {"action": "duplicate"})
        self.ok("POST", "/me/events", self.future_event())
        self.ok("POST", "/me/events", self.future_event(days=4))
        self.fg.control("POST", "/notifications/drain", {})
        recs = self.fg.control("GET", "/notifications?kind=change")["notifications"]
        self.assertEqual([(r["status"], r["duplicate"]) for r in recs],
                         [("dropped", False), ("delivered", False), ("delivered", True)])
        forged = self.fg.control("POST", "/notify", {"subscription": sub["id"], "client_state": "forged"})
        self.assertTrue(forged["sent"])
        self.assertEqual(self.rx.notifications(3)[-1]["clientState"], "forged")
        self.fg.control("POST", "/subscriptions/expire", {"id": sub["id"]})
        n = len(self.rx.notifications(3))
        self.ok("POST", "/me/events", self.future_event(days=5))
        self.fg.control("POST", "/notifications/drain", {})
        self.assertEqual(len(self.rx.notifications(n, timeout=0.3)), n)
        self.assertEqual(self.ok("GET", "/subscriptions")["value"], [])


class TestDelta(GraphCase):
    def window(self):
        return {"startDateTime": local(day_at(-1)) + "Z", "endDateTime": local(day_at(20)) + "Z"}

    def full(self, page=2):
        """All pages of a first round; (items, deltaLink, pages)."""
        pages = []
        st, body, h = self.api("GET", "/me/calendarView/delta", query=self.window(),
                               headers={"Prefer": f"odata.maxpagesize={page}"})
        self.assertEqual(st, 200, body)
        self.assertIn(f"odata.maxpagesize={page}", h["preference-applied"])
        pages.append(body)
        while "@odata.nextLink" in body:
            self.assertNotIn("@odata.deltaLink", body)
            body = self.follow(body["@odata.nextLink"], page)
            pages.append(body)
        return [i for p in pages for i in p["value"]], body["@odata.deltaLink"], pages

    def follow(self, link, page=2):
        path = link.split(str(self.fg.port), 1)[1]
        st, body, _ = self.fg.request("GET", path, headers={"Authorization": "Bearer " + self.tok,
                                                            "Prefer": f"odata.maxpagesize={page}"})
        self.assertEqual(st, 200, body)
        return body

    def test_rounds_pages_and_removed(self):
        ids = [self.ok("POST", "/me/events", self.future_event(days=d))["id"] for d in (2, 3, 4, 5, 6)]
        outside = self.ok("POST", "/me/events", self.future_event(days=40))["id"]
        items, delta, pages = self.full()
        self.assertEqual(len(pages), 3)
        self.assertIn("$skiptoken=", pages[0]["@odata.nextLink"])
        self.assertIn("$deltatoken=", delta)
        self.assertEqual([i["id"] for i in items], ids)
        self.assertEqual(items[0]["@odata.type"], "#microsoft.graph.event")
        # no change: an empty round with a new deltaLink
        again = self.follow(delta)
        self.assertEqual(again["value"], [])
        # next round: an update, a delete, a move out of the window, a create outside
        self.ok("PATCH", f"/me/events/{ids[0]}", {"subject": "changed"})
        self.ok("DELETE", f"/me/events/{ids[1]}")
        s = day_at(60, 9)
        self.fg.host(op="move", id=ids[2], start=local(s) + "Z")
        created_out = self.ok("POST", "/me/events", self.future_event(days=50))["id"]
        self.ok("PATCH", f"/me/events/{outside}", {"subject": "still outside"})
        nxt = self.follow(again["@odata.deltaLink"], page=50)
        removed = {i["id"] for i in nxt["value"] if "@removed" in i}
        changed = {i["id"]: i for i in nxt["value"] if "@removed" not in i}
        self.assertEqual(removed, {ids[1], ids[2], created_out, outside})
        for i in nxt["value"]:
            if "@removed" in i:
                self.assertEqual(i, {"@odata.type": "#microsoft.graph.event", "id": i["id"],
                                     "@removed": {"reason": "deleted"}})
        self.assertEqual(list(changed), [ids[0]])
        self.assertEqual(changed[ids[0]]["subject"], "changed")

    def test_series_in_delta(self):
        first = day_at(3, 15)
        master = self.ok("POST", "/me/events", event(
            local(first), local(first + timedelta(minutes=30)),
            recurrence={"pattern": {"type": "daily", "interval": 1},
                        "range": {"type": "numbered", "startDate": ymd(3), "numberOfOccurrences": 3}}))
        items, delta, _ = self.full(page=10)
        self.assertEqual([i["type"] for i in items], ["occurrence"] * 3)
        self.ok("DELETE", f"/me/events/{items[1]['id']}")
        nxt = self.follow(delta, 10)
        self.assertEqual([(i["id"], "@removed" in i) for i in nxt["value"]], [(items[1]["id"], True)])
        # changing the series' time replaces the occurrences (new ids, old ones removed)
        self.ok("PATCH", f"/me/events/{master['id']}", {
            "start": {"dateTime": local(first + timedelta(hours=1)), "timeZone": "UTC"},
            "end": {"dateTime": local(first + timedelta(hours=1, minutes=30)), "timeZone": "UTC"}})
        last = self.follow(nxt["@odata.deltaLink"], 10)["value"]
        self.assertEqual({i["id"] for i in last if "@removed" in i}, {items[0]["id"], items[2]["id"]})
        self.assertEqual(len([i for i in last if "@removed" not in i]), 3)

    def test_expired_token_modes(self):
        self.ok("POST", "/me/events", self.future_event())
        _, delta, _ = self.full()
        path = delta.split(str(self.fg.port), 1)[1]
        auth = {"Authorization": "Bearer " + self.tok}
        self.fg.control("POST", "/expire_delta_tokens", {})
        st, body, _ = self.fg.request("GET", path, headers=auth)
        self.assertEqual((st, body["error"]["code"]), (410, "SyncStateNotFound"))
        self.assertTrue(body["error"]["message"].startswith("The sync state generation is not found"))
        _, delta, _ = self.full()
        path = delta.split(str(self.fg.port), 1)[1]
        self.fg.control("POST", "/expire_delta_tokens", {"mode": "resyncRequired"})
        st, body, _ = self.fg.request("GET", path, headers=auth)
        self.assertEqual((st, body["error"]["code"]), (410, "resyncRequired"))
        _, delta, _ = self.full()
        path = delta.split(str(self.fg.port), 1)[1]
        self.fg.control("POST", "/expire_delta_tokens", {"mode": "location"})
        st, body, h = self.fg.request("GET", path, headers=auth)
        self.assertEqual(st, 410)
        self.assertTrue(h["location"].endswith("$deltatoken="))
        # following the Location starts over: a full round of the same window
        st, body, _ = self.fg.request("GET", h["location"].split(str(self.fg.port), 1)[1], headers=auth)
        self.assertEqual((st, len(body["value"])), (200, 1))
        self.assertGraphError(self.api("GET", "/me/calendarView/delta"), 400, "ErrorInvalidParameter")
        self.assertGraphError(self.api("GET", "/me/calendarView/delta",
                                       query=dict(self.window(), **{"$select": "subject"})), 400,
                              "ErrorInvalidUrlQuery")


class TestThrottlingAndLogs(GraphCase):
    def test_429_retry_after_and_5xx(self):
        self.fg.control("POST", "/faults", {"status": 429, "retry_after": "2.128", "ops": "events.list"})
        self.fg.control("POST", "/faults", {"status": 503, "retry_after": 1})
        self.fg.control("POST", "/faults", {"status": 504})
        st, body, h = self.api("GET", "/me/events")
        self.assertEqual((st, h["retry-after"]), (429, "2.128"))
        self.assertEqual(body["error"]["code"], "TooManyRequests")
        self.assertEqual(body["error"]["innerError"]["status"], "429")
        path = os.path.join(FIXTURES, "throttling-429-response.http")
        if os.path.exists(path):
            with open(path) as f:
                want = json.loads(f.read().split("\n\n", 1)[1])
            self.assertEqual(set(body["error"]), set(want["error"]))
            self.assertEqual(set(body["error"]["innerError"]), set(want["error"]["innerError"]))
            self.assertEqual(body["error"]["message"], want["error"]["message"])
        st, body, h = self.api("GET", "/me/events")
        self.assertEqual((st, h["retry-after"], body["error"]["code"]), (503, "1", "serviceNotAvailable"))
        st, body, h = self.api("GET", "/me/events")
        self.assertEqual(st, 504)
        self.assertNotIn("retry-after", h)
        self.ok("GET", "/me/events")
        reqs = self.fg.control("GET", "/requests?op=events.list")["requests"]
        self.assertEqual([r["status"] for r in reqs], [429, 503, 504, 200])
        use = self.fg.control("GET", "/usage")["credentials"]
        self.assertEqual(use[0]["by_op"]["events.list"], 4)
        self.assertEqual(sum(use[0]["per_second"].values()), use[0]["total"])

    def test_faulted_create_not_applied_unless_apply_and_disconnect(self):
        self.fg.control("POST", "/faults", {"status": 503, "ops": "events.create"})
        self.fg.control("POST", "/faults", {"mode": "disconnect", "ops": "events.create", "apply": True})
        self.assertEqual(self.api("POST", "/me/events", self.future_event())[0], 503)
        self.assertEqual(self.ok("GET", "/me/events")["value"], [])
        with self.assertRaises(Exception):
            self.api("POST", "/me/events", self.future_event())
        self.assertEqual(len(self.ok("GET", "/me/events")["value"]), 1)

    def test_bad_input_never_crashes(self):
        for method, path, body in (("POST", "/me/events", "not json"), ("POST", "/me/events", [1]),
                                   ("POST", "/me/events", {"start": 5}),
                                   ("POST", "/me/events", {"start": {"dateTime": "x"}, "end": {}}),
                                   ("PATCH", "/me/events/nope", {}), ("GET", "/me/nothing", None),
                                   ("POST", "/subscriptions", {"resource": 1}),
                                   ("GET", "/users/someone-else/events", None),
                                   ("GET", "/me/calendarView/delta?$deltatoken=garbage", None),
                                   ("GET", "/me/calendarView/delta?$skiptoken=garbage", None)):
            st, b, _ = self.api(method, path, body)
            self.assertTrue(400 <= st < 500, (method, path, st, b))
            self.assertIn("code", b["error"])


if __name__ == "__main__":
    unittest.main()
