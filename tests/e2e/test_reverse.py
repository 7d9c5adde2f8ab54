"""Reverse sync end to end (DESIGN §2, §4 webhooks, §5): a host's change in
(fake) Google reaches the booking through a push notification, is decided
by the calendar's policy, audited, and announced as a signed webhook."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from receiver import Receiver  # noqa: E402
from test_google_sync import CAL, GoogleSyncCase, timed  # noqa: E402

FLAG_ALL = """
return {
  on_delete = function(change, booking, ctx)
    return { action = "flag", reason = "check " .. booking.uid .. " by hand" }
  end,
  on_time_change = function() error("boom") end,
}
"""


class ReverseCase(GoogleSyncCase):
    policies = {"flagger": FLAG_ALL}

    def setUp(self):
        super().setUp()
        self.fg.control("DELETE", "/notification_faults")   # pushes on
        self.rx = Receiver().start()
        self.addCleanup(self.rx.stop)
        self.config_extra += "\n" + self.rx.config()

    def boot(self, policy=None):
        self.start()
        cred = self.credential()
        body = {"credential_id": cred, "external_id": CAL}
        if policy:
            body["policy"] = policy
        st, cal, _ = self.svc.request("POST", "/v1/calendars", body)
        self.assertEqual(st, 201, cal)
        self.wait_synced(cal["id"])
        return cal["id"]

    def book(self, cal, uid, event, **kw):
        body = {"uid": uid, "calendar_id": cal, "title": event.get("summary", "t"),
                "start": event["start"]["dateTime"], "end": event["end"]["dateTime"],
                "event_id": event["id"]}
        body.update(kw)
        st, b, _ = self.svc.request("POST", "/v1/bookings", body)
        self.assertEqual(st, 201, b)
        return b

    def booking(self, uid):
        return self.svc.request("GET", "/v1/bookings/" + uid)[1]

    def audit(self, uid):
        return self.svc.request("GET", "/v1/bookings/%s/audit" % uid)[1]["entries"]

    def wait_audit(self, uid, n, timeout=15):
        return self.wait_for(lambda: len(self.audit(uid)) >= n and self.audit(uid),
                             timeout, "%d audit entries for %s" % (n, uid))

    def hooks_for(self, uid):
        return [d for d in self.rx.accepted() if d.json["payload"].get("uid") == uid]


class TestDefaultPolicy(ReverseCase):
    def test_delete_move_retitle(self):
        cal = self.boot()
        e1 = self.fg.host(CAL, op="create", event=timed("2026-12-10T10:00:00Z", "2026-12-10T10:30:00Z", summary="Call A"))
        e2 = self.fg.host(CAL, op="create", event=timed("2026-12-11T10:00:00Z", "2026-12-11T10:30:00Z", summary="Call B"))
        e3 = self.fg.host(CAL, op="create", event=timed("2026-12-12T10:00:00Z", "2026-12-12T10:30:00Z", summary="Call C"))
        for uid, e in (("a", e1), ("b", e2), ("c", e3)):
            self.book(cal, uid, e)
        self.wait_for(lambda: e3["id"] in self.mirror(cal), what="events mirrored")
        # deleted in Google -> cancelled
        self.fg.host(CAL, op="delete", id=e1["id"])
        entries = self.wait_audit("a", 2)
        b = self.booking("a")
        self.assertEqual(b["status"], "cancelled")
        self.assertEqual(b["cancelled_by"], "google")
        self.assertEqual(b["cancel_reason"], "event deleted in Google Calendar")
        e = entries[1]
        self.assertEqual((e["source"], e["change"], e["action"], e["policy"]),
                         ("push", "delete", "cancel", "default"))
        self.assertRegex(e["policy_version"], r"^[0-9a-f]{12}$")
        self.assertEqual(e["before"]["status"], "accepted")
        self.assertEqual(e["after"]["status"], "cancelled")
        # moved in Google -> rescheduled
        self.fg.host(CAL, op="move", id=e2["id"], start="2026-12-11T15:00:00Z",
                     end="2026-12-11T16:00:00Z")
        self.wait_audit("b", 2)
        b = self.booking("b")
        self.assertEqual((b["start"], b["end"], b["status"]),
                         ("2026-12-11T15:00:00Z", "2026-12-11T16:00:00Z", "accepted"))
        # retitled -> ignore: audited, booking unchanged, no webhook
        self.fg.host(CAL, op="retitle", id=e3["id"], summary="Renamed by host")
        entries = self.wait_audit("c", 2)
        self.assertEqual(entries[1]["action"], "ignore")
        self.assertEqual(entries[1]["change"], "title_change")
        self.assertEqual(self.booking("c")["title"], "Call C")
        # webhooks: one per decision but ignore, signed, contract shape
        hooks = self.rx.wait(lambda ds: len([d for d in ds if d.status == 200]) >= 2)
        by_uid = {d.json["payload"]["uid"]: d for d in hooks if d.status == 200}
        self.assertEqual(set(by_uid), {"a", "b"})
        for d in by_uid.values():
            self.assertTrue(self.rx.signature_ok(d))
            self.assertTrue(re.match(r"^dlv_[0-9a-f]{32}$", d.id))
        a = by_uid["a"].json
        self.assertEqual(a["triggerEvent"], "BOOKING_CANCELLED")
        p = a["payload"]
        self.assertEqual(p["calendarId"], cal)
        self.assertEqual((p["status"], p["source"], p["policy"]), ("cancelled", "push", "default"))
        self.assertEqual(p["previous"]["startTime"], "2026-12-10T10:00:00Z")
        self.assertRegex(p["policyVersion"], r"^[0-9a-f]{12}$")
        bp = by_uid["b"].json
        self.assertEqual(bp["triggerEvent"], "BOOKING_RESCHEDULED")
        self.assertEqual(bp["payload"]["startTime"], "2026-12-11T15:00:00Z")
        self.assertEqual(bp["payload"]["previous"]["startTime"], "2026-12-11T10:00:00Z")
        time.sleep(0.5)
        self.assertEqual(self.hooks_for("c"), [])
        # a change to a cancelled booking is dropped: no audit, no webhook
        n = len(self.audit("a"))
        self.fg.host(CAL, op="create", event=dict(timed("2026-12-13T10:00:00Z", "2026-12-13T11:00:00Z"), summary="other"))
        self.sync_now(cal)
        time.sleep(1)
        self.assertEqual(len(self.audit("a")), n)

    def test_occurrences_follow_series_and_original_start(self):
        cal = self.boot()
        master = self.fg.host(CAL, op="create", event=dict(
            timed("2026-12-07T09:00:00", "2026-12-07T09:30:00", tz="Europe/Berlin"),
            summary="Standup", recurrence=["RRULE:FREQ=DAILY;COUNT=5"]))
        self.wait_for(lambda: any(k.startswith(master["id"] + "_") for k in self.mirror(cal)),
                      what="occurrences mirrored")
        # 09:00 Berlin = 08:00Z
        days = ["2026-12-07", "2026-12-08", "2026-12-09"]
        for i, d in enumerate(days):
            self.book(cal, "occ%d" % i, {"id": master["id"], "summary": "Standup",
                                         "start": {"dateTime": d + "T08:00:00Z"},
                                         "end": {"dateTime": d + "T08:30:00Z"}},
                      original_start=d + "T08:00:00Z")
        inst = master["id"] + "_20261208T080000Z"
        self.fg.host(CAL, op="move", id=inst, start="2026-12-08T12:00:00+01:00",
                     end="2026-12-08T12:30:00+01:00")
        self.wait_audit("occ1", 2)
        self.assertEqual(self.booking("occ1")["start"], "2026-12-08T11:00:00Z")
        # moving it again is still matched by (series, originalStartTime)
        self.fg.host(CAL, op="move", id=inst, start="2026-12-08T14:00:00Z",
                     end="2026-12-08T14:30:00Z")
        self.wait_audit("occ1", 3)
        self.assertEqual(self.booking("occ1")["start"], "2026-12-08T14:00:00Z")
        self.assertEqual(len(self.audit("occ0")), 1)     # untouched
        # one occurrence deleted -> only its booking cancelled
        self.fg.host(CAL, op="delete", id=master["id"] + "_20261209T080000Z")
        self.wait_audit("occ2", 2)
        self.assertEqual(self.booking("occ2")["status"], "cancelled")
        self.assertEqual(self.booking("occ0")["status"], "accepted")
        # the whole series deleted -> every remaining occurrence booking cancelled
        self.fg.host(CAL, op="delete", id=master["id"])
        self.wait_audit("occ0", 2)
        self.wait_for(lambda: self.booking("occ1")["status"] == "cancelled", what="cascade")
        self.assertEqual(self.booking("occ0")["status"], "cancelled")

    def test_past_booking_goes_to_on_past(self):
        cal = self.boot()
        ev = self.fg.host(CAL, op="create", event=timed("2026-11-20T10:00:00Z", "2026-11-20T11:00:00Z", summary="old"))
        self.book(cal, "past", ev)
        self.wait_for(lambda: ev["id"] in self.mirror(cal), what="mirrored")
        self.fg.host(CAL, op="delete", id=ev["id"])
        e = self.wait_audit("past", 2)[1]
        self.assertEqual(e["action"], "ignore")
        self.assertEqual(e["reason"], "booking is in the past")
        self.assertEqual(self.booking("past")["status"], "accepted")


class TestPolicyOutcomes(ReverseCase):
    def test_flag_and_policy_error_become_flag(self):
        cal = self.boot(policy="flagger")
        e1 = self.fg.host(CAL, op="create", event=timed("2026-12-10T10:00:00Z", "2026-12-10T10:30:00Z"))
        e2 = self.fg.host(CAL, op="create", event=timed("2026-12-11T10:00:00Z", "2026-12-11T10:30:00Z"))
        self.book(cal, "f1", e1)
        self.book(cal, "f2", e2)
        self.wait_for(lambda: e2["id"] in self.mirror(cal), what="mirrored")
        self.fg.host(CAL, op="delete", id=e1["id"])
        e = self.wait_audit("f1", 2)[1]
        self.assertEqual((e["action"], e["reason"], e["policy"]), ("flag", "check f1 by hand", "flagger"))
        b = self.booking("f1")
        self.assertIs(b["needs_review"], True)
        self.assertEqual(b["status"], "accepted")
        # a hook that raises: flag with the runtime's reason, never destructive
        self.fg.host(CAL, op="move", id=e2["id"], start="2026-12-11T12:00:00Z", end="2026-12-11T12:30:00Z")
        e = self.wait_audit("f2", 2)[1]
        self.assertEqual(e["action"], "flag")
        self.assertIn("boom", e["reason"])
        self.assertEqual(self.booking("f2")["start"], "2026-12-11T10:00:00Z")
        hooks = self.rx.wait(lambda ds: len([d for d in ds if d.status == 200]) >= 2)
        self.assertEqual({d.json["triggerEvent"] for d in hooks}, {"BOOKING_FLAGGED"})
        st, text, _ = self.svc.request("GET", "/metrics", raw=True)
        self.assertIn(b'calsync_policy_errors_total{policy="flagger",kind="runtime"} 1', text)


class TestResilience(ReverseCase):
    poll_interval = 3

    def test_dropped_notifications_are_caught_by_polling(self):
        cal = self.boot()
        ev = self.fg.host(CAL, op="create", event=timed("2026-12-10T10:00:00Z", "2026-12-10T10:30:00Z"))
        self.book(cal, "p1", ev)
        self.wait_for(lambda: ev["id"] in self.mirror(cal), what="mirrored")
        self.fg.control("POST", "/notification_faults", {"action": "drop", "count": 100})
        self.fg.host(CAL, op="delete", id=ev["id"])
        e = self.wait_audit("p1", 2, timeout=15)[1]
        self.assertEqual((e["source"], e["action"]), ("poll", "cancel"))

    def test_duplicate_notifications_apply_once(self):
        cal = self.boot()
        ev = self.fg.host(CAL, op="create", event=timed("2026-12-10T10:00:00Z", "2026-12-10T10:30:00Z"))
        self.book(cal, "d1", ev)
        self.wait_for(lambda: ev["id"] in self.mirror(cal), what="mirrored")
        self.fg.control("POST", "/notification_faults", {"action": "duplicate", "count": 10})
        self.fg.host(CAL, op="move", id=ev["id"], start="2026-12-10T12:00:00Z", end="2026-12-10T12:30:00Z")
        self.wait_audit("d1", 2)
        self.sync_now(cal)
        time.sleep(1.5)
        self.assertEqual(len(self.audit("d1")), 2)
        self.assertEqual(len(self.hooks_for("d1")), 1)

    def test_full_resync_after_410_finds_deletions_applies_nothing_twice(self):
        cal = self.boot()
        keep = self.fg.host(CAL, op="create", event=timed("2026-12-10T10:00:00Z", "2026-12-10T10:30:00Z"))
        gone = self.fg.host(CAL, op="create", event=timed("2026-12-11T10:00:00Z", "2026-12-11T10:30:00Z"))
        self.book(cal, "keep", keep)
        self.book(cal, "gone", gone)
        self.wait_for(lambda: gone["id"] in self.mirror(cal), what="mirrored")
        self.fg.control("POST", "/notification_faults", {"action": "drop", "count": 100})
        self.wait_synced(cal, self.sync_now(cal))     # no push-driven sync left in flight
        self.fg.control("POST", "/invalidate_sync_tokens", {})
        self.fg.host(CAL, op="delete", id=gone["id"])
        e = self.wait_audit("gone", 2, timeout=15)[1]
        self.assertEqual(e["action"], "cancel")
        self.assertEqual(e["source"], "full_sync")
        self.assertEqual(len(self.audit("keep")), 1)
        self.assertEqual(self.hooks_for("keep"), [])


class TestSplitSeries(ReverseCase):
    """"This and following" (DESIGN §8, fixtures recurring-edit-this-and-
    following*.json): the old series ends with UNTIL and a new series starts
    under a new id, so a booking on an occurrence after the split must be
    found again by time in the new series, not cancelled. "Delete this and
    following" has no new series: those bookings are cancelled."""

    DAYS = ["2026-12-%02d" % d for d in range(7, 12)]   # 5 daily occurrences, 08:00Z

    def series(self, cal, summary="Standup"):
        master = self.fg.host(CAL, op="create", event=dict(
            timed("2026-12-07T08:00:00Z", "2026-12-07T08:30:00Z", tz="UTC"),
            summary=summary, recurrence=["RRULE:FREQ=DAILY;COUNT=5"]))
        last = master["id"] + "_20261211T080000Z"
        self.wait_for(lambda: last in self.mirror(cal), what="occurrences mirrored")
        for i, d in enumerate(self.DAYS):
            self.book(cal, "occ%d" % i, {"id": master["id"], "summary": summary,
                                         "start": {"dateTime": d + "T08:00:00Z"},
                                         "end": {"dateTime": d + "T08:30:00Z"}},
                      original_start=d + "T08:00:00Z")
        return master

    def quiet(self, cal):
        """Another sync after the change's, then a moment for webhooks."""
        self.wait_synced(cal, self.sync_now(cal))
        time.sleep(0.5)

    def test_split_with_time_change_reschedules_following_bookings(self):
        cal = self.boot()
        master = self.series(cal)
        # like fixture recurring-edit-this-and-following-change-time.json:
        # new time and title, new series under an unrelated random id that
        # carries the old series' `created`
        new_id = "e5srrkr361upjc2be22u6ti4pe"
        new = self.fg.host(CAL, op="split", series=master["id"],
                           original_start="2026-12-09T08:00:00Z", new_id=new_id,
                           event={"summary": "Standup (early)",
                                  "start": {"dateTime": "2026-12-09T07:00:00Z", "timeZone": "UTC"},
                                  "end": {"dateTime": "2026-12-09T07:30:00Z", "timeZone": "UTC"}})
        self.assertEqual(new["id"], new_id)
        self.assertEqual(new["created"], master["created"])
        for i in (2, 3, 4):
            self.wait_audit("occ%d" % i, 2)
        # webhooks are delivered asynchronously: wait for the three
        self.rx.wait(lambda ds: len({d.json["payload"].get("uid") for d in ds
                                     if d.status == 200}) >= 3)
        self.quiet(cal)
        for i, d in enumerate(self.DAYS):
            b, entries = self.booking("occ%d" % i), self.audit("occ%d" % i)
            self.assertEqual(b["status"], "accepted", i)
            if i < 2:   # before the split: untouched
                self.assertEqual((b["start"], b["event_id"], len(entries)),
                                 (d + "T08:00:00Z", master["id"], 1), i)
                self.assertEqual(self.hooks_for("occ%d" % i), [], i)
                continue
            self.assertEqual((b["start"], b["end"]), (d + "T07:00:00Z", d + "T07:30:00Z"), i)
            self.assertEqual((b["event_id"], b["original_start"]), (new_id, d + "T07:00:00Z"), i)
            self.assertEqual(len(entries), 2, entries)
            e = entries[1]
            self.assertEqual((e["source"], e["change"], e["action"], e["policy"]),
                             ("push", "time_change", "reschedule", "default"))
            hooks = [d for d in self.hooks_for("occ%d" % i) if d.status == 200]
            self.assertEqual(len(hooks), 1, i)
            p = hooks[0].json["payload"]
            self.assertEqual(hooks[0].json["triggerEvent"], "BOOKING_RESCHEDULED")
            self.assertEqual((p["startTime"], p["previous"]["startTime"]),
                             (d + "T07:00:00Z", d + "T08:00:00Z"))
        # the old occurrences after the split are gone from the mirror
        m = self.mirror(cal)
        self.assertEqual(m[master["id"] + "_20261210T080000Z"]["status"], "cancelled")
        self.assertEqual(m[new_id + "_20261210T070000Z"]["status"], "confirmed")
        # (4) a later edit of a successor occurrence finds the booking by its
        # new reference (new series, new original start)
        self.fg.host(CAL, op="move", id=new_id + "_20261210T070000Z",
                     start="2026-12-10T12:00:00Z", end="2026-12-10T12:45:00Z")
        e = self.wait_audit("occ3", 3)[2]
        self.assertEqual((e["change"], e["action"]), ("time_change", "reschedule"))
        b = self.booking("occ3")
        self.assertEqual((b["start"], b["end"], b["original_start"]),
                         ("2026-12-10T12:00:00Z", "2026-12-10T12:45:00Z", "2026-12-10T07:00:00Z"))
        # deleting that occurrence of the new series cancels it
        self.fg.host(CAL, op="delete", id=new_id + "_20261211T070000Z")
        e = self.wait_audit("occ4", 3)[2]
        self.assertEqual((e["change"], e["action"]), ("delete", "cancel"))
        self.quiet(cal)
        self.assertEqual(len(self.audit("occ2")), 2)
        self.assertEqual(len(self.audit("occ3")), 3)
        self.assertEqual(self.booking("occ4")["status"], "cancelled")

    def test_title_only_split_with_R_id_keeps_bookings(self):
        cal = self.boot()
        master = self.series(cal)
        new = self.fg.host(CAL, op="split", series=master["id"],
                           original_start="2026-12-10T08:00:00Z",
                           event={"summary": "Standup v2"})
        new_id = master["id"] + "_R20261210T080000"
        self.assertEqual(new["id"], new_id)
        for i in (3, 4):
            self.wait_audit("occ%d" % i, 2)
        self.quiet(cal)
        for i, d in enumerate(self.DAYS):
            b, entries = self.booking("occ%d" % i), self.audit("occ%d" % i)
            self.assertEqual((b["status"], b["start"], b["title"]),
                             ("accepted", d + "T08:00:00Z", "Standup"), i)
            self.assertEqual(self.hooks_for("occ%d" % i), [], i)
            if i < 3:
                self.assertEqual((b["event_id"], len(entries)), (master["id"], 1), i)
                continue
            self.assertEqual((b["event_id"], b["original_start"]), (new_id, d + "T08:00:00Z"), i)
            # the default policy ignores title changes: audited, no webhook
            self.assertEqual([(e["change"], e["action"]) for e in entries[1:]],
                             [("title_change", "ignore")], i)

    def test_identical_split_decides_nothing(self):
        cal = self.boot()
        master = self.series(cal)
        self.fg.host(CAL, op="split", series=master["id"],
                     original_start="2026-12-10T08:00:00Z", event={})
        new_id = master["id"] + "_R20261210T080000"
        self.wait_for(lambda: self.booking("occ4")["event_id"] == new_id, what="re-linked")
        self.quiet(cal)
        for i in range(5):
            self.assertEqual(len(self.audit("occ%d" % i)), 1, i)
            self.assertEqual(self.booking("occ%d" % i)["status"], "accepted", i)
            self.assertEqual(self.hooks_for("occ%d" % i), [], i)
        self.assertEqual(self.booking("occ3")["event_id"], new_id)

    def test_all_events_time_change_reschedules_every_booking(self):
        """"All events" moved one hour later: the series keeps its id but
        every occurrence gets a new originalStartTime (and instance id), so
        each booking is found again by time in the same series and
        rescheduled once, not cancelled."""
        cal = self.boot()
        master = self.series(cal)
        self.fg.host(CAL, op="patch", id=master["id"], event={
            "start": {"dateTime": "2026-12-07T09:00:00Z", "timeZone": "UTC"},
            "end": {"dateTime": "2026-12-07T09:30:00Z", "timeZone": "UTC"}})
        for i in range(5):
            self.wait_audit("occ%d" % i, 2)
        self.rx.wait(lambda ds: len({d.json["payload"].get("uid") for d in ds
                                     if d.status == 200}) >= 5)
        self.quiet(cal)
        for i, d in enumerate(self.DAYS):
            b, entries = self.booking("occ%d" % i), self.audit("occ%d" % i)
            self.assertEqual(b["status"], "accepted", (i, entries))
            self.assertEqual((b["start"], b["end"]), (d + "T09:00:00Z", d + "T09:30:00Z"), i)
            self.assertEqual((b["event_id"], b["original_start"]), (master["id"], d + "T09:00:00Z"), i)
            self.assertEqual([(e["change"], e["action"]) for e in entries[1:]],
                             [("time_change", "reschedule")], i)
            hooks = [h for h in self.hooks_for("occ%d" % i) if h.status == 200]
            self.assertEqual([h.json["triggerEvent"] for h in hooks], ["BOOKING_RESCHEDULED"], i)
        # later edits find the bookings by their new reference
        self.fg.host(CAL, op="delete", series=master["id"], original_start="2026-12-08T09:00:00Z")
        self.wait_for(lambda: self.booking("occ1")["status"] == "cancelled", what="occ1 cancelled")
        self.quiet(cal)
        self.assertEqual(self.booking("occ2")["status"], "accepted")

    def test_delete_this_and_following_cancels(self):
        cal = self.boot()
        master = self.series(cal)
        self.fg.host(CAL, op="truncate", series=master["id"],
                     original_start="2026-12-10T08:00:00Z")
        for i in (3, 4):
            self.wait_audit("occ%d" % i, 2)
        self.rx.wait(lambda ds: len({d.json["payload"].get("uid") for d in ds
                                     if d.status == 200}) >= 2)
        self.quiet(cal)
        for i in range(5):
            b, entries = self.booking("occ%d" % i), self.audit("occ%d" % i)
            if i < 3:
                self.assertEqual((b["status"], len(entries)), ("accepted", 1), i)
                self.assertEqual(self.hooks_for("occ%d" % i), [], i)
                continue
            self.assertEqual((b["status"], b["cancelled_by"], b["event_id"]),
                             ("cancelled", "google", master["id"]), i)
            self.assertEqual([(e["change"], e["action"]) for e in entries[1:]],
                             [("delete", "cancel")], i)
            hooks = [d for d in self.hooks_for("occ%d" % i) if d.status == 200]
            self.assertEqual([d.json["triggerEvent"] for d in hooks], ["BOOKING_CANCELLED"], i)
