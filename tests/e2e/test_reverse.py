"""Reverse sync end to end (DESIGN §2, §4 webhooks, §5): a host's change in
(fake) Google reaches the booking through a push notification, is decided
by the calendar's policy, audited, and announced as a signed webhook."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import day_at, future, id_time, instance_id, local, past, rfc3339, ymd  # noqa: E402
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
        return self.add_calendar(self.credential(), CAL, policy)

    def add_calendar(self, cred, external_id, policy=None):
        """Registers a calendar and waits for its first sync; its id."""
        body = {"credential_id": cred, "external_id": external_id}
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

    def outbox(self, uid):
        """The booking's outbox rows, (trigger, state): one per announced
        decision, written in the decision's own transaction -- so once its
        audit entry is there, the rows a decision will ever have are too."""
        with self.svc.db() as con:
            return con.execute("SELECT trigger, state FROM outbox WHERE booking_uid = ?"
                               " ORDER BY id", (uid,)).fetchall()

    def outbox_drained(self, timeout=30):
        """Waits until no outbox row is pending: every webhook decided so far
        has been acknowledged by the receiver (or given up)."""
        def drained():
            with self.svc.db() as con:
                return con.execute("SELECT count(*) FROM outbox WHERE state = 'pending'"
                                   ).fetchone()[0] == 0
        self.wait_for(drained, timeout, "the outbox drained")


class TestDefaultPolicy(ReverseCase):
    def test_delete_move_retitle(self):
        cal = self.boot()
        e1 = self.fg.host(CAL, op="create", event=timed(future(10, 10), future(10, 10, 30), summary="Call A"))
        e2 = self.fg.host(CAL, op="create", event=timed(future(11, 10), future(11, 10, 30), summary="Call B"))
        e3 = self.fg.host(CAL, op="create", event=timed(future(12, 10), future(12, 10, 30), summary="Call C"))
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
        self.fg.host(CAL, op="move", id=e2["id"], start=future(11, 15), end=future(11, 16))
        self.wait_audit("b", 2)
        b = self.booking("b")
        self.assertEqual((b["start"], b["end"], b["status"]),
                         (future(11, 15), future(11, 16), "accepted"))
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
        self.assertEqual(p["previous"]["startTime"], future(10, 10))
        self.assertRegex(p["policyVersion"], r"^[0-9a-f]{12}$")
        bp = by_uid["b"].json
        self.assertEqual(bp["triggerEvent"], "BOOKING_RESCHEDULED")
        self.assertEqual(bp["payload"]["startTime"], future(11, 15))
        self.assertEqual(bp["payload"]["previous"]["startTime"], future(11, 10))
        # the ignore of c was committed with its audit entry: no outbox row,
        # and every row there is has been delivered -- none for c
        self.assertEqual(self.outbox("c"), [])
        self.outbox_drained()
        self.assertEqual(self.hooks_for("c"), [])
        # a change to a cancelled booking is dropped: no audit, no webhook
        n, hooks = len(self.audit("a")), self.outbox("a")
        self.fg.host(CAL, op="create", event=dict(timed(future(13, 10), future(13, 11)), summary="other"))
        self.sync_and_wait(cal)
        self.assertEqual(len(self.audit("a")), n)
        self.assertEqual(self.outbox("a"), hooks)

    def test_occurrences_follow_series_and_original_start(self):
        cal = self.boot()
        master = self.fg.host(CAL, op="create", event=dict(
            timed(local(7, 9), local(7, 9, 30), tz="Europe/Berlin"),
            summary="Standup", recurrence=["RRULE:FREQ=DAILY;COUNT=5"]))
        self.wait_for(lambda: any(k.startswith(master["id"] + "_") for k in self.mirror(cal)),
                      what="occurrences mirrored")

        def berlin(d, hh, mm=0):   # 09:00 Berlin is 08:00Z in winter, 07:00Z in summer
            return rfc3339(day_at(d, hh, mm, tz="Europe/Berlin"))
        for i, d in enumerate((7, 8, 9)):
            self.book(cal, "occ%d" % i, {"id": master["id"], "summary": "Standup",
                                         "start": {"dateTime": berlin(d, 9)},
                                         "end": {"dateTime": berlin(d, 9, 30)}},
                      original_start=berlin(d, 9))
        inst = instance_id(master["id"], berlin(8, 9))
        # moved with a UTC offset in the times (noon in Berlin)
        self.fg.host(CAL, op="move", id=inst, start=day_at(8, 12, tz="Europe/Berlin").isoformat(),
                     end=day_at(8, 12, 30, tz="Europe/Berlin").isoformat())
        self.wait_audit("occ1", 2)
        self.assertEqual(self.booking("occ1")["start"], berlin(8, 12))
        # moving it again is still matched by (series, originalStartTime)
        self.fg.host(CAL, op="move", id=inst, start=future(8, 14), end=future(8, 14, 30))
        self.wait_audit("occ1", 3)
        self.assertEqual(self.booking("occ1")["start"], future(8, 14))
        self.assertEqual(len(self.audit("occ0")), 1)     # untouched
        # one occurrence deleted -> only its booking cancelled
        self.fg.host(CAL, op="delete", id=instance_id(master["id"], berlin(9, 9)))
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
        ev = self.fg.host(CAL, op="create", event=timed(past(14, 10), past(14, 11), summary="old"))
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
        e1 = self.fg.host(CAL, op="create", event=timed(future(10, 10), future(10, 10, 30)))
        e2 = self.fg.host(CAL, op="create", event=timed(future(11, 10), future(11, 10, 30)))
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
        self.fg.host(CAL, op="move", id=e2["id"], start=future(11, 12), end=future(11, 12, 30))
        e = self.wait_audit("f2", 2)[1]
        self.assertEqual(e["action"], "flag")
        self.assertIn("boom", e["reason"])
        self.assertEqual(self.booking("f2")["start"], future(11, 10))
        hooks = self.rx.wait(lambda ds: len([d for d in ds if d.status == 200]) >= 2)
        self.assertEqual({d.json["triggerEvent"] for d in hooks}, {"BOOKING_FLAGGED"})
        st, text, _ = self.svc.request("GET", "/metrics", raw=True)
        self.assertIn(b'calsync_policy_errors_total{policy="flagger",kind="runtime"} 1', text)


class TestResilience(ReverseCase):
    poll_interval = 3

    def test_dropped_notifications_are_caught_by_polling(self):
        cal = self.boot()
        ev = self.fg.host(CAL, op="create", event=timed(future(10, 10), future(10, 10, 30)))
        self.book(cal, "p1", ev)
        self.wait_for(lambda: ev["id"] in self.mirror(cal), what="mirrored")
        self.fg.control("POST", "/notification_faults", {"action": "drop", "count": 100})
        self.fg.host(CAL, op="delete", id=ev["id"])
        e = self.wait_audit("p1", 2, timeout=15)[1]
        self.assertEqual((e["source"], e["action"]), ("poll", "cancel"))

    def test_duplicate_notifications_apply_once(self):
        cal = self.boot()
        ev = self.fg.host(CAL, op="create", event=timed(future(10, 10), future(10, 10, 30)))
        self.book(cal, "d1", ev)
        self.wait_for(lambda: ev["id"] in self.mirror(cal), what="mirrored")
        self.fg.control("POST", "/notification_faults", {"action": "duplicate", "count": 10})
        self.fg.host(CAL, op="move", id=ev["id"], start=future(10, 12), end=future(10, 12, 30))
        self.wait_audit("d1", 2)
        # every copy of the push answered, then a sync after them all, then
        # every webhook acknowledged: the duplicates were processed
        self.assertEqual(self.fg.control("POST", "/notifications/drain")["drained"], True)
        self.assertTrue(any(n["duplicate"] for n in
                            self.fg.control("GET", "/notifications")["notifications"]))
        self.sync_and_wait(cal)
        self.outbox_drained()
        self.assertEqual(len(self.audit("d1")), 2)
        self.assertEqual(len(self.outbox("d1")), 1)
        self.assertEqual(len(self.hooks_for("d1")), 1)

    def test_full_resync_after_410_finds_deletions_applies_nothing_twice(self):
        cal = self.boot()
        keep = self.fg.host(CAL, op="create", event=timed(future(10, 10), future(10, 10, 30)))
        gone = self.fg.host(CAL, op="create", event=timed(future(11, 10), future(11, 10, 30)))
        self.book(cal, "keep", keep)
        self.book(cal, "gone", gone)
        self.wait_for(lambda: gone["id"] in self.mirror(cal), what="mirrored")
        self.fg.control("POST", "/notification_faults", {"action": "drop", "count": 100})
        self.sync_and_wait(cal)                       # no push-driven sync left in flight
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

    DAYS = [ymd(d) for d in range(7, 12)]   # 5 daily occurrences, 08:00Z, days 7-11 ahead

    def series(self, cal, summary="Standup"):
        master = self.fg.host(CAL, op="create", event=dict(
            timed(future(7, 8), future(7, 8, 30), tz="UTC"),
            summary=summary, recurrence=["RRULE:FREQ=DAILY;COUNT=5"]))
        last = instance_id(master["id"], future(11, 8))
        self.wait_for(lambda: last in self.mirror(cal), what="occurrences mirrored")
        for i, d in enumerate(self.DAYS):
            self.book(cal, "occ%d" % i, {"id": master["id"], "summary": summary,
                                         "start": {"dateTime": d + "T08:00:00Z"},
                                         "end": {"dateTime": d + "T08:30:00Z"}},
                      original_start=d + "T08:00:00Z")
        return master

    def quiet(self, cal):
        """A sync that began after the change's has completed and every
        webhook decided so far is acknowledged: what follows can assert
        that nothing more happened."""
        self.sync_and_wait(cal)
        self.outbox_drained()

    def test_split_with_time_change_reschedules_following_bookings(self):
        cal = self.boot()
        master = self.series(cal)
        # like fixture recurring-edit-this-and-following-change-time.json:
        # new time and title, new series under an unrelated random id that
        # carries the old series' `created`
        new_id = "e5srrkr361upjc2be22u6ti4pe"
        new = self.fg.host(CAL, op="split", series=master["id"],
                           original_start=future(9, 8), new_id=new_id,
                           event={"summary": "Standup (early)",
                                  "start": {"dateTime": future(9, 7), "timeZone": "UTC"},
                                  "end": {"dateTime": future(9, 7, 30), "timeZone": "UTC"}})
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
        self.assertEqual(m[instance_id(master["id"], future(10, 8))]["status"], "cancelled")
        self.assertEqual(m[instance_id(new_id, future(10, 7))]["status"], "confirmed")
        # (4) a later edit of a successor occurrence finds the booking by its
        # new reference (new series, new original start)
        self.fg.host(CAL, op="move", id=instance_id(new_id, future(10, 7)),
                     start=future(10, 12), end=future(10, 12, 45))
        e = self.wait_audit("occ3", 3)[2]
        self.assertEqual((e["change"], e["action"]), ("time_change", "reschedule"))
        b = self.booking("occ3")
        self.assertEqual((b["start"], b["end"], b["original_start"]),
                         (future(10, 12), future(10, 12, 45), future(10, 7)))
        # deleting that occurrence of the new series cancels it
        self.fg.host(CAL, op="delete", id=instance_id(new_id, future(11, 7)))
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
                           original_start=future(10, 8),
                           event={"summary": "Standup v2"})
        new_id = master["id"] + "_R" + id_time(future(10, 8))[:-1]
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
                     original_start=future(10, 8), event={})
        new_id = master["id"] + "_R" + id_time(future(10, 8))[:-1]
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
            "start": {"dateTime": future(7, 9), "timeZone": "UTC"},
            "end": {"dateTime": future(7, 9, 30), "timeZone": "UTC"}})
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
        self.fg.host(CAL, op="delete", series=master["id"], original_start=future(8, 9))
        self.wait_for(lambda: self.booking("occ1")["status"] == "cancelled", what="occ1 cancelled")
        self.quiet(cal)
        self.assertEqual(self.booking("occ2")["status"], "accepted")

    def test_delete_this_and_following_cancels(self):
        cal = self.boot()
        master = self.series(cal)
        self.fg.host(CAL, op="truncate", series=master["id"],
                     original_start=future(10, 8))
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
