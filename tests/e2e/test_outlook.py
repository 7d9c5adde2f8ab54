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
from fake_google import FakeGoogle  # noqa: E402


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
        # the identity platform rotated the refresh token: the newest is kept
        # (the first one would stop working at its own expiry)
        with self.svc.db() as con:
            stored = con.execute("SELECT refresh_token FROM credentials").fetchone()[0]
        self.assertNotEqual(stored, self.refresh_token)
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

    def test_occurrence_move_and_delete(self):
        cal = self.boot()
        first = future(20, 9)
        master = self.fg.host(op="create", event=gevent(first, future(20, 9, 30), "Weekly", recurrence={
            "pattern": {"type": "weekly", "interval": 1,
                        "daysOfWeek": [self.weekday(first)]},
            "range": {"type": "numbered", "startDate": first[:10], "numberOfOccurrences": 4}}))
        occ2, occ3 = future(27, 9), future(34, 9)
        self.wait_for(lambda: len([r for r in self.mirror(cal).values()
                                   if r[4] == master["id"]]) == 4,
                      what="4 occurrences mirrored")
        # booked by series and original start, as for Google
        self.book(cal, "o2", start=occ2, end=future(27, 9, 30), event_id=master["id"],
                  original_start=occ2)
        self.book(cal, "o3", start=occ3, end=future(34, 9, 30), event_id=master["id"],
                  original_start=occ3)
        # one occurrence moved in Outlook: an exception -> rescheduled
        self.fg.host(op="move", series=master["id"], original_start=occ2,
                     start=future(27, 14), end=future(27, 14, 30))
        self.wait_audit("o2", 2)
        b = self.booking("o2")
        self.assertEqual((b["start"], b["status"]), (future(27, 14), "accepted"))
        # another occurrence deleted: it vanishes (@removed) -> cancelled
        self.fg.host(op="delete", series=master["id"], original_start=occ3)
        entries = self.wait_audit("o3", 2)
        self.assertEqual((entries[1]["change"], entries[1]["action"]), ("delete", "cancel"))
        self.assertEqual(self.booking("o3")["status"], "cancelled")
        self.assertEqual(self.booking("o2")["status"], "accepted")
        # the whole series deleted: every occurrence and the exception go
        # (@removed each) -> the remaining bookings of the series cancelled
        occ4 = future(41, 9)
        self.book(cal, "o4", start=occ4, end=future(41, 9, 30), event_id=master["id"],
                  original_start=occ4)
        self.fg.host(op="delete", id=master["id"])
        for uid in ("o2", "o4"):
            self.wait_for(lambda: self.booking(uid)["status"] == "cancelled",
                          what="%s cancelled with its series" % uid)
        self.assertEqual([e["action"] for e in self.audit("o4")][-1], "cancel")

    @staticmethod
    def weekday(t):
        from datetime import datetime
        return datetime.strptime(t[:10], "%Y-%m-%d").strftime("%A").lower()

    def test_forged_client_state_ignored_and_counted(self):
        cal = self.boot()
        e = self.fg.host(op="create", event=gevent(future(5, 10), future(5, 11), "Call"))
        self.book(cal, "f", e)
        sub = self.live_subscriptions()[0]
        self.fg.control("POST", "/notifications/drain", {})
        before = self.metric('calsync_notifications_total{outcome="bad_token"}')

        def recorded():
            with self.svc.db() as con:
                return con.execute("SELECT count(*) FROM notifications").fetchone()[0]
        # every accepted notification flushed from the intake's journal
        # first, so a late flush is not taken for the forged one
        journalled = (self.metric('calsync_notifications_total{outcome="accepted"}') +
                      self.metric('calsync_notifications_total{outcome="sync"}'))
        self.wait_for(lambda: recorded() >= journalled, what="the journal flushed")
        n0 = recorded()
        # the right channel id, a wrong secret: ignored and counted, 202
        channel = self.channels()[0]["id"]
        self.fg.control("POST", "/notify", {"subscription": sub["id"], "id": e["id"],
                                            "client_state": channel + ".forged"})
        self.wait_for(lambda: self.metric(
            'calsync_notifications_total{outcome="bad_token"}') > before,
            what="the forged notification counted")
        recs = self.fg.control("GET", "/notifications?kind=change&wait_count=1&timeout_ms=5000"
                               )["notifications"]
        self.assertEqual(recs[-1]["http_status"], 202, recs[-1])
        with self.svc.db() as con:
            self.assertEqual(con.execute("SELECT count(*) FROM notifications").fetchone()[0], n0)
        # no clientState at all, naming calsync's live subscription: counted
        # unknown, and the subscription is NOT deleted on its word
        unknown = self.metric('calsync_notifications_total{outcome="unknown"}')
        self.fg.control("POST", "/notify", {"subscription": sub["id"], "id": e["id"],
                                            "client_state": None})
        self.wait_for(lambda: self.metric('calsync_notifications_total{outcome="unknown"}')
                      > unknown, what="the anonymous notification counted")
        self.fg.control("POST", "/notifications/drain", {})
        self.assertEqual(self.graph_requests(op="subscriptions.delete"), [])
        self.assertEqual([x["id"] for x in self.live_subscriptions()], [sub["id"]])
        # the handshake: the decoded token, as text/plain
        st, body, h = self.svc.request("POST", "/webhooks/microsoft?validationToken="
                                       "Validation%3A%20Testing%20client%20application",
                                       token=False, raw=True)
        self.assertEqual((st, body), (200, b"Validation: Testing client application"))
        self.assertTrue(h["content-type"].startswith("text/plain"), h)
        # a body over the bound is refused unread; a non-batch is a 400
        st, _, _ = self.svc.request("POST", "/webhooks/microsoft", "x" * 70000, token=False)
        self.assertEqual(st, 413)
        st, _, _ = self.svc.request("POST", "/webhooks/microsoft", {"value": "nope"}, token=False)
        self.assertEqual(st, 400)

    def metric(self, series):
        st, text, _ = self.svc.request("GET", "/metrics", raw=True)
        for line in text.decode().splitlines():
            if line.startswith(series + " "):
                return float(line.split()[-1])
        return 0.0

    def test_delta_state_gone_means_full_resync(self):
        cal = self.boot()
        e = self.fg.host(op="create", event=gevent(future(6, 10), future(6, 11), "Call"))
        self.book(cal, "r", e)
        self.wait_for(lambda: e["id"] in self.mirror(cal), what="mirrored")
        for mode in ("syncStateNotFound", "resyncRequired"):
            self.fg.control("POST", "/expire_delta_tokens", {"mode": mode})
            self.fg.control("DELETE", "/requests")
            synced = self.cal_row(cal)[2]
            self.svc.request("POST", "/v1/calendars/%d/sync" % cal)
            self.wait_synced(cal, after=synced)
            reqs = self.graph_requests(op="calendarView.delta")
            self.assertIn(410, [r["status"] for r in reqs], reqs)
            # the new round starts with the window, not with a token
            self.assertTrue(any("startDateTime" in r["query"] for r in reqs), reqs)
            self.assertIn("sync.full_resync", self.svc.log_text())
        # the booking is untouched by the resyncs
        self.assertEqual(len(self.audit("r")), 1)
        self.assertEqual(self.booking("r")["status"], "accepted")


class TestOutlookForward(OutlookCase):
    def test_create_patch_cancel_with_transaction_id_if_match_and_no_echo(self):
        cal = self.boot()
        b = self.book(cal, "w1", start=future(8, 10), end=future(8, 11), title="Intro")
        booking = self.wait_for(lambda: self.booking("w1").get("event_id") and self.booking("w1"),
                                what="the event created")
        ev_id = booking["event_id"]
        creates = self.graph_requests(op="events.create")
        self.assertEqual(len(creates), 1, creates)
        body = creates[0]["body"]
        self.assertTrue(body["transactionId"], body)
        self.assertEqual(body["singleValueExtendedProperties"][0]["value"], "w1")
        stored = [x for x in self.fg.control("GET", "/events")["events"] if x["id"] == ev_id]
        self.assertEqual(len(stored), 1)
        self.assertEqual(stored[0]["event"]["transactionId"], body["transactionId"])
        self.assertEqual(stored[0]["event"]["subject"], "Intro")
        # the app moves it: PATCH with If-Match on the etag calsync saw
        st, _, _ = self.svc.request("PATCH", "/v1/bookings/w1",
                                    {"start": future(8, 12), "end": future(8, 13)})
        self.assertEqual(st, 200)
        patches = self.wait_for(lambda: self.graph_requests(op="events.update"),
                                what="the PATCH")
        self.assertTrue(patches[0]["headers"].get("if-match", "").startswith('W/"'), patches[0])
        ev = self.wait_for(lambda: [x for x in self.fg.control("GET", "/events")["events"]
                                    if x["id"] == ev_id and x["event"]["start"][
                                        "dateTime"].startswith(future(8, 12)[:16])],
                           what="the event moved in Graph")
        self.assertTrue(ev)
        # Graph notifies calsync of its own writes: echoes, never decided
        self.fg.control("POST", "/notifications/drain", {})
        synced = self.cal_row(cal)[2]
        self.svc.request("POST", "/v1/calendars/%d/sync" % cal)
        self.wait_synced(cal, after=synced)
        self.assertEqual([e["source"] for e in self.audit("w1")], ["api", "api"])
        self.assertEqual(self.booking("w1")["start"], future(8, 12))
        # cancelled by the app: DELETE
        st, _, _ = self.svc.request("POST", "/v1/bookings/w1/cancel", {})
        self.assertEqual(st, 200)
        self.wait_for(lambda: self.graph_requests(op="events.delete"), what="the DELETE")
        self.wait_for(lambda: not [x for x in self.fg.control("GET", "/events")["events"]
                                   if x["id"] == ev_id and not x.get("deleted")],
                      what="the event deleted in Graph")

    def test_duplicate_transaction_id_adopts_the_first_event(self):
        self.start()
        cred = self.credential()
        cal = self.add_calendar(cred)
        self.fg.control("POST", "/config", {"transaction_id_mode": "conflict"})
        # the first create happens, its answer is lost (a 503 after applying)
        self.fg.control("POST", "/faults", {"status": 503, "ops": "events.create",
                                            "apply": True, "count": 1, "retry_after": "0.05"})
        self.book(cal, "dup", start=future(9, 10), end=future(9, 11), title="Once")
        b = self.wait_for(lambda: self.booking("dup").get("event_id") and self.booking("dup"),
                          what="the event adopted")
        live = [x for x in self.fg.control("GET", "/events")["events"] if not x.get("deleted")]
        self.assertEqual(len(live), 1, live)
        self.assertEqual(live[0]["id"], b["event_id"])


class TestOutlookFailures(OutlookCase):
    def test_revoked_credential(self):
        cal = self.boot()
        self.fg.control("POST", "/revoke", {"refresh_token": self.refresh_token})
        self.fg.control("POST", "/expire_access_tokens", {})
        self.svc.request("POST", "/v1/calendars/%d/sync" % cal)
        self.wait_for(lambda: self.cal_row(cal)[1] == "revoked", what="calendar revoked")
        self.wait_for(lambda: "microsoft.credential_revoked" in self.svc.log_text(),
                      what="the revocation logged")
        self.wait_for(lambda: [d for d in self.rx.accepted()
                               if d.json["triggerEvent"] == "CALENDAR_ERROR"],
                      what="CALENDAR_ERROR webhook")

    def test_throttled_then_synced(self):
        self.start()
        cred = self.credential()
        self.fg.control("POST", "/faults", {"status": 429, "retry_after": "0.2", "count": 2,
                                            "ops": "calendarView.delta"})
        cal = self.add_calendar(cred)
        statuses = [r["status"] for r in self.graph_requests(op="calendarView.delta")]
        self.assertEqual(statuses[:3], [429, 429, 200], statuses)
        self.assertIn("microsoft.retry", self.svc.log_text())

    def test_link_check_keeps_to_the_api_budget(self):
        # Graph unable to answer the link check: the booking is accepted
        # (the sync judges the link) within the API's short retry budget,
        # not after the provider's two-minute one (a request would time out)
        cal = self.boot(live_channel=False)
        e = self.fg.host(op="create", event=gevent(future(8, 10), future(8, 11), "Call"))
        self.fg.control("POST", "/faults", {"status": 503, "count": -1, "ops": "events.get"})
        body = {"uid": "lk", "calendar_id": cal, "title": "Call", "event_id": e["id"],
                "start": future(8, 10), "end": future(8, 11)}
        st, b, _ = self.svc.request("POST", "/v1/bookings", body, timeout=30)
        self.assertEqual(st, 201, b)
        self.assertTrue(self.graph_requests(op="events.get"))
        self.fg.control("DELETE", "/faults")

    def test_missed_notifications_caught_by_polling(self):
        self.config_extra += "\npoll_interval = 2"
        cal = self.boot()
        e = self.fg.host(op="create", event=gevent(future(7, 10), future(7, 11), "Call"))
        self.book(cal, "m", e)
        self.wait_for(lambda: e["id"] in self.mirror(cal), what="mirrored")
        self.fg.control("POST", "/notification_faults", {"action": "drop", "count": -1})
        self.fg.host(op="delete", id=e["id"])
        entries = self.wait_audit("m", 2)
        self.assertEqual((entries[1]["source"], entries[1]["action"]), ("poll", "cancel"))


class TestOutlookSubscriptions(OutlookCase):
    subscription_ttl = 120
    renew_before = 116

    def test_renewed_in_place_one_subscription(self):
        cal = self.boot()
        sub = self.live_subscriptions()[0]
        ch = self.channels()[0]
        self.wait_for(lambda: self.graph_requests(op="subscriptions.update"),
                      timeout=30, what="a renewal PATCH")
        self.wait_for(lambda: self.channels()[0]["expiration"] != ch["expiration"],
                      what="the new expiration stored")
        subs = self.live_subscriptions()
        self.assertEqual([s["id"] for s in subs], [sub["id"]])
        self.assertEqual([c["state"] for c in self.channels()], ["live"])
        self.assertEqual(self.graph_requests(op="subscriptions.create")[1:], [])
        # the validation handshake was answered (Graph created it at all)
        vals = self.fg.control("GET", "/notifications?kind=validation")["notifications"]
        self.assertTrue(vals and all(v["status"] == "delivered" for v in vals), vals)


class TestOutlookLifecycle(OutlookCase):
    def test_reauthorization_and_removal(self):
        cal = self.boot()
        e = self.fg.host(op="create", event=gevent(future(5, 10), future(5, 11), "Call"))
        self.book(cal, "l", e)
        sub = self.live_subscriptions()[0]
        # reauthorizationRequired -> renewed now (PATCH), notifications flow again
        self.fg.control("POST", "/lifecycle", {"subscription": sub["id"],
                                               "event": "reauthorizationRequired"})
        self.wait_for(lambda: self.graph_requests(op="subscriptions.update"),
                      what="a renewal after reauthorizationRequired")
        self.wait_for(lambda: [s for s in self.live_subscriptions() if s["state"] == "live"],
                      what="the subscription live again")
        # subscriptionRemoved -> a new subscription, and a sync
        self.fg.control("POST", "/lifecycle", {"subscription": sub["id"],
                                               "event": "subscriptionRemoved"})
        new = self.wait_for(lambda: [s for s in self.live_subscriptions() if s["id"] != sub["id"]],
                            what="a new subscription")
        self.assertEqual(len(self.live_subscriptions()), 1)
        self.wait_for(lambda: [c for c in self.channels() if c["state"] == "live"
                               and c["resource_id"] == new[0]["id"]], what="its channel live")
        # missed -> a sync; a change made meanwhile arrives
        self.fg.control("POST", "/notification_faults", {"action": "drop", "count": 1,
                                                         "kind": "change"})
        self.fg.host(op="delete", id=e["id"])
        self.fg.control("POST", "/notifications/drain", {})
        self.assertEqual(len(self.audit("l")), 1)      # nothing arrived
        self.fg.control("POST", "/lifecycle", {"subscription": new[0]["id"], "event": "missed"})
        entries = self.wait_audit("l", 2)
        self.assertEqual((entries[1]["source"], entries[1]["action"]), ("push", "cancel"))
        self.assertEqual(self.booking("l")["status"], "cancelled")


class TestOnePolicyBothProviders(OutlookCase):
    """The same shipped policy, unchanged, decides the same for a change on
    a Google calendar and on an Outlook calendar."""

    def setUp(self):
        super().setUp()
        self.gg = FakeGoogle().start()
        self.addCleanup(self.gg.stop)
        self.gg.control("POST", "/config", {"client_id": "x", "client_secret": "y"})
        self.config_extra += "\ngoogle = { api_base = %s, token_url = %s, client_id = \"x\"," \
            " client_secret = \"y\" }" % (lua_str(self.gg.api_base), lua_str(self.gg.token_url))

    def test_same_decisions(self):
        self.start()
        ms_cal = self.add_calendar(self.credential("microsoft"), policy="working_hours")
        g_cal = self.add_calendar(self.credential("google", "rt-google"), policy="working_hours")
        self.wait_for(lambda: len([c for c in self.channels() if c["state"] == "live"]) == 2,
                      what="both calendars watched")
        slots = {"del": (future(15, 10), future(15, 11)), "mv": (future(16, 10), future(16, 11)),
                 "ren": (future(17, 10), future(17, 11)), "late": (future(18, 10), future(18, 11))}
        ms_ev, g_ev = {}, {}
        for k, (a, b) in slots.items():
            ms_ev[k] = self.fg.host(op="create", event=gevent(a, b, "Call " + k))
            g_ev[k] = self.gg.host("primary", op="create", event={
                "summary": "Call " + k, "start": {"dateTime": a}, "end": {"dateTime": b}})
            self.book(ms_cal, "ms-" + k, ms_ev[k])
            self.book(g_cal, "g-" + k, start=a, end=b, title="Call " + k, event_id=g_ev[k]["id"])
        # the same host edits on both sides
        self.fg.host(op="delete", id=ms_ev["del"]["id"])
        self.gg.host("primary", op="delete", id=g_ev["del"]["id"])
        self.fg.host(op="move", id=ms_ev["mv"]["id"], start=future(16, 14), end=future(16, 15))
        self.gg.host("primary", op="move", id=g_ev["mv"]["id"], start=future(16, 14),
                     end=future(16, 15))
        self.fg.host(op="update", id=ms_ev["ren"]["id"], event={"subject": "Renamed"})
        self.gg.host("primary", op="retitle", id=g_ev["ren"]["id"], summary="Renamed")
        # outside working hours (the policy's default 09-17): flagged
        self.fg.host(op="move", id=ms_ev["late"]["id"], start=future(18, 21), end=future(18, 22))
        self.gg.host("primary", op="move", id=g_ev["late"]["id"], start=future(18, 21),
                     end=future(18, 22))
        for k in slots:
            ms_a = self.wait_audit("ms-" + k, 2)[1]
            g_a = self.wait_audit("g-" + k, 2)[1]
            keys = ("source", "change", "action", "reason", "policy", "policy_version")
            self.assertEqual({x: ms_a[x] for x in keys}, {x: g_a[x] for x in keys}, k)
            ms_b, g_b = self.booking("ms-" + k), self.booking("g-" + k)
            for x in ("status", "start", "end", "title", "needs_review"):
                self.assertEqual(ms_b[x], g_b[x], (k, x))
        self.assertEqual(self.booking("ms-del")["cancelled_by"], "microsoft")
        self.assertEqual(self.booking("g-del")["cancelled_by"], "google")


class TestOutlookCrash(OutlookCase):
    """Killed (SIGKILL) at a named point (src/fault.c), restarted without
    the fault: the state converges, nothing is done twice."""

    def run_killed(self, point, action):
        os.environ["CALSYNC_FAULT"] = point + ":1"
        try:
            self.svc.stop()
            self.svc.start()
        finally:
            os.environ.pop("CALSYNC_FAULT", None)
        action()
        try:
            rc = self.svc.proc.wait(60)
        except Exception:
            # what the fake sent meanwhile, to tell a notification that never
            # reached calsync from one calsync did not act on
            sent = self.fg.control("GET", "/notifications")["notifications"][-5:]
            self.fail("not killed at %s\nlast notifications: %s\n%s"
                      % (point, sent, self.svc.log_text()[-3000:]))
        self.assertEqual(rc, -9)
        self.assertIn("event=fault.kill point=" + point, self.svc.log_text())
        self.svc.log.close()
        self.svc.proc = None
        self.svc.start()

    def test_crash_points(self):
        cal = self.boot()
        # a create that reached Graph, its commit lost: the retry's
        # transactionId answers the same event -- one event, linked
        self.run_killed("writer_after_insert", lambda: self.book(
            cal, "c1", start=future(9, 10), end=future(9, 11), title="Once"))
        b = self.wait_for(lambda: self.booking("c1").get("event_id") and self.booking("c1"),
                          what="the event linked after the restart")
        live = [x for x in self.fg.control("GET", "/events")["events"]
                if not x["deleted"] and x["event"]["subject"] == "Once"]
        self.assertEqual([x["id"] for x in live], [b["event_id"]])
        # a host deletion decided and audited, the transaction killed: decided
        # once after the restart
        e = self.fg.host(op="create", event=gevent(future(10, 10), future(10, 11), "Call"))
        self.book(cal, "c2", e)
        self.wait_for(lambda: e["id"] in self.mirror(cal), what="mirrored")
        self.run_killed("apply_after_audit", lambda: self.fg.host(op="delete", id=e["id"]))
        self.svc.request("POST", "/v1/calendars/%d/sync" % cal)
        self.wait_audit("c2", 2)
        synced = self.cal_row(cal)[2]
        self.svc.request("POST", "/v1/calendars/%d/sync" % cal)
        self.wait_synced(cal, after=synced)
        self.assertEqual([x["action"] for x in self.audit("c2")].count("cancel"), 1)
        self.assertEqual(self.booking("c2")["status"], "cancelled")
        # a renewal that Graph granted, killed before it was stored: renewed
        # again after the restart, still one subscription
        self.run_killed("channel_after_renew", lambda: self.fg.control(
            "POST", "/lifecycle", {"subscription": self.live_subscriptions()[0]["id"],
                                   "event": "reauthorizationRequired"}))
        self.wait_for(lambda: len(self.graph_requests(op="subscriptions.update")) >= 1,
                      what="renewed")
        self.assertEqual(len(self.live_subscriptions()), 1)
        self.assertEqual(len([c for c in self.channels() if c["state"] == "live"]), 1)


if __name__ == "__main__":
    import unittest
    unittest.main()
