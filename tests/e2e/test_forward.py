"""Forward sync end to end (DESIGN §2, §4; issue 6): bookings written to
(fake) Google as tagged events, app changes patched with If-Match and
cancels deleted, echoes of calsync's own writes silent, transient Google
failures retried, permanent ones reported, a host's racing edit left to the
policy, and edits from both sides converging without a loop."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import future  # noqa: E402
from test_reverse import ReverseCase  # noqa: E402
from test_google_sync import CAL, timed  # noqa: E402

# ten days ahead: a host's later edit of it is decided, not handed to on_past
BOOKING = {"title": "Intro call", "start": future(10, 10), "end": future(10, 10, 30)}


class ForwardCase(ReverseCase):
    def create(self, cal, uid, **kw):
        body = dict(BOOKING, uid=uid, calendar_id=cal)
        body.update(kw)
        st, b, _ = self.svc.request("POST", "/v1/bookings", body)
        self.assertEqual(st, 201, b)
        return b

    def tagged(self, uid, show_deleted=False):
        tok = self.fg.access_token("listing-only")
        q = {"privateExtendedProperty": "calsync_booking_uid=" + uid, "timeZone": "UTC"}
        if show_deleted:
            q["showDeleted"] = "true"
        st, b, _ = self.fg.api("GET", "/calendars/%s/events" % CAL, token=tok, query=q)
        self.assertEqual(st, 200, b)
        return b["items"]

    def written(self, uid, timeout=20):
        return self.wait_for(lambda: self.booking(uid)["write_state"] == "none"
                             and self.booking(uid), timeout, "the write of " + uid)

    def google_sources(self, uid):
        return [e for e in self.audit(uid) if e["source"] != "api"]

    def jobs_done(self, timeout=30):
        """Waits until no forward write is pending."""
        def done():
            with self.svc.db() as con:
                return con.execute("SELECT count(*) FROM jobs WHERE state = 'pending'"
                                   ).fetchone()[0] == 0
        self.wait_for(done, timeout, "no pending write")


class TestWrites(ForwardCase):
    def test_create_patch_cancel_with_silent_echoes(self):
        cal = self.boot()
        b = self.create(cal, "fw1", attendees=[{"email": "guest@example.com"}])
        self.assertEqual(b["write_state"], "pending")       # exists at once
        b = self.written("fw1")
        events = self.tagged("fw1")
        self.assertEqual(len(events), 1)
        ev = events[0]
        self.assertEqual(b["event_id"], ev["id"])
        self.assertEqual(ev["extendedProperties"]["private"]["calsync_booking_uid"], "fw1")
        self.assertEqual(ev["summary"], "Intro call")
        self.assertEqual(ev["start"]["dateTime"][:19], future(10, 10)[:19])
        self.assertEqual([a["email"] for a in ev["attendees"]], ["guest@example.com"])
        # the push that echoes calsync's insert reaches no policy: a sync
        # that began after the insert has read it back
        self.sync_and_wait(cal)
        self.assertEqual(self.google_sources("fw1"), [])
        # reschedule via the API -> the event is patched with If-Match
        self.fg.control("DELETE", "/requests")
        st, p, _ = self.svc.request("PATCH", "/v1/bookings/fw1",
                                    {"start": future(10, 14), "end": future(10, 15)})
        self.assertEqual(st, 200, p)
        self.written("fw1")
        ev = self.tagged("fw1")[0]
        self.assertEqual(ev["start"]["dateTime"][:19], future(10, 14)[:19])
        patches = self.requests(op="events.patch")
        self.assertEqual(len(patches), 1)
        self.assertTrue(patches[0]["headers"].get("if-match") or patches[0]["headers"].get("If-Match"))
        self.sync_and_wait(cal)
        self.assertEqual(self.google_sources("fw1"), [])     # echo silent
        self.assertEqual(self.outbox("fw1"), [])             # no webhook for app changes
        self.assertEqual(self.hooks_for("fw1"), [])
        # a host's later edit of the same event is still seen
        self.fg.host(CAL, op="move", id=ev["id"], start=future(10, 16), end=future(10, 17))
        self.wait_for(lambda: self.google_sources("fw1"), what="the host's edit")
        self.assertEqual(self.booking("fw1")["start"], future(10, 16))
        # cancel via the API -> the event is deleted
        st, c, _ = self.svc.request("POST", "/v1/bookings/fw1/cancel", {"reason": "no show"})
        self.assertEqual(st, 200)
        self.written("fw1")
        self.assertEqual(self.tagged("fw1"), [])
        gone = self.tagged("fw1", show_deleted=True)
        self.assertEqual([e["status"] for e in gone], ["cancelled"])
        n = len(self.audit("fw1"))
        self.sync_and_wait(cal)
        self.assertEqual(len(self.audit("fw1")), n)           # deletion echo dropped
        self.outbox_drained()
        self.assertEqual(len(self.outbox("fw1")), 1)          # only the host's move
        self.assertEqual(len(self.hooks_for("fw1")), 1)

    def test_google_down_then_recovers(self):
        cal = self.boot()
        self.fg.control("POST", "/faults", {"status": 503, "count": 3, "ops": ["events.insert"]})
        b = self.create(cal, "fw2")
        self.assertEqual(b["write_state"], "pending")
        b = self.written("fw2", timeout=30)
        self.assertEqual(len(self.tagged("fw2")), 1)
        inserts = self.requests(op="events.insert")
        self.assertGreaterEqual(len(inserts), 4)               # 3 refused + 1 accepted

    def test_insert_whose_answer_was_lost_is_not_repeated(self):
        # Google creates the event but the answer is lost (503 after the
        # insert was applied): the retry carries the same event id, gets
        # 409 and adopts the event -- one event, not two.
        cal = self.boot()
        self.fg.control("POST", "/faults", {"status": 503, "count": 1, "apply": True,
                                            "ops": ["events.insert"]})
        self.create(cal, "lost")
        b = self.written("lost", timeout=30)
        events = self.tagged("lost")
        self.assertEqual(len(events), 1)
        self.assertEqual(b["event_id"], events[0]["id"])
        self.assertEqual([r["status"] for r in self.requests(op="events.insert")], [503, 409])

    def test_permanent_failure_shown_and_announced(self):
        cal = self.boot()
        self.fg.control("POST", "/faults", {"status": 403, "reason": "forbidden", "count": 1,
                                            "ops": ["events.insert"]})
        self.create(cal, "fw3")
        b = self.wait_for(lambda: self.booking("fw3")["write_state"] == "failed" and self.booking("fw3"),
                          what="a failed write")
        self.assertIn("403", b["write_error"])
        d = self.rx.wait(lambda ds: any(x.json["triggerEvent"] == "CALENDAR_ERROR" for x in ds))
        err = [x for x in d if x.json["triggerEvent"] == "CALENDAR_ERROR"][0].json["payload"]
        self.assertEqual((err["calendarId"], err["state"]), (cal, "error"))
        self.assertEqual(self.tagged("fw3"), [])

    def test_cancel_after_pending_create_leaves_no_orphan(self):
        cal = self.boot()
        self.fg.control("POST", "/faults", {"status": 503, "count": 2, "ops": ["events.insert"]})
        self.create(cal, "fw4")
        st, _, _ = self.svc.request("POST", "/v1/bookings/fw4/cancel")
        self.assertEqual(st, 200)
        self.written("fw4", timeout=30)
        self.assertEqual(self.tagged("fw4"), [])              # nothing live left behind


class TestConflicts(ForwardCase):
    def test_412_race_host_moved_first(self):
        cal = self.boot()
        self.create(cal, "race")
        b = self.written("race")
        # no sync may be under way or due when the host moves the event: the
        # push that echoes the insert is delivered (or dropped from now on)
        # and a sync after it has completed -- else that sync, started by a
        # late push (or after the push spacing), can read the move before
        # the app's patch
        self.fg.control("POST", "/notification_faults", {"action": "drop", "count": 100})
        self.assertEqual(self.fg.control("POST", "/notifications/drain")["drained"], True)
        self.sync_and_wait(cal)
        # the host moves the event; calsync has not synced it yet
        self.fg.host(CAL, op="move", id=b["event_id"], start=future(10, 18),
                     end=future(10, 18, 30))
        self.fg.control("DELETE", "/requests")
        st, _, _ = self.svc.request("PATCH", "/v1/bookings/race", {"title": "App title"})
        self.assertEqual(st, 200)
        self.wait_for(lambda: any(e["change"] == "conflict" for e in self.audit("race")),
                      what="the conflict entry")
        patches = self.requests(op="events.patch")
        self.assertEqual([p["status"] for p in patches], [412])
        # the host's move is not overwritten; the policy decides it
        self.wait_for(lambda: self.booking("race")["start"] == future(10, 18),
                      what="the host's time applied by the policy")
        ev = self.tagged("race")[0]
        self.assertEqual(ev["start"]["dateTime"][:19], future(10, 18)[:19])
        # decided by the policy on the reverse path (source poll, or push when
        # a notification's sync was already pending)
        google = [(e["change"], e["action"]) for e in self.audit("race")
                  if e["source"] in ("poll", "push")]
        self.assertEqual(google, [("time_change", "reschedule")])

    def test_ping_pong_converges_without_loop(self):
        cal = self.boot()
        self.create(cal, "pp")
        b = self.written("pp")
        self.fg.control("DELETE", "/requests")
        for i in range(10):
            hour = 8 + i
            # app side
            st, _, _ = self.svc.request("PATCH", "/v1/bookings/pp", {
                "start": future(11, hour), "end": future(11, hour, 30)})
            self.assertEqual(st, 200)
            self.written("pp")
            # host side
            self.fg.host(CAL, op="move", id=b["event_id"], start=future(12, hour),
                         end=future(12, hour, 30))
            self.wait_for(lambda: self.booking("pp")["start"] == future(12, hour),
                          what="host edit %d applied" % i)

        def quiescent():
            """A sync that began after everything so far has completed, no
            write is pending and every webhook is acknowledged: a loop
            (an echo written back, a write echoed into a decision) would
            show as one more patch, job or audit entry."""
            self.sync_and_wait(cal)
            self.jobs_done()
            self.outbox_drained()
            return (len(self.requests(op="events.patch")), len(self.audit("pp")),
                    len(self.outbox("pp")))
        before = quiescent()
        final = self.booking("pp")
        ev = self.tagged("pp")[0]
        self.assertEqual(final["start"], future(12, 17))
        self.assertEqual(ev["start"]["dateTime"][:19], future(12, 17)[:19])
        patches = self.requests(op="events.patch")
        self.assertEqual(len(patches), 10)                     # one per app edit, no echo writes
        hooks = self.hooks_for("pp")
        self.assertEqual(len(hooks), 10)                       # one per host edit
        google = self.google_sources("pp")
        self.assertEqual(len(google), 10)
        # and nothing more after a further sync: the two sides converged
        self.assertEqual(quiescent(), before)


class TestDeletedBeforeWrite(ForwardCase):
    def test_patch_landing_on_a_deleted_event_still_cancels_the_booking(self):
        """The host deletes an event calsync has not read yet (no version
        for If-Match), then the app reschedules its booking: Google patches
        the cancelled event without complaint. That answer is not calsync's
        own version of a live event: the deletion still reaches the policy
        (cancel), once."""
        cal = self.boot()
        # the pushes of the host's create and delete are dropped: a push
        # starts a sync at once, which would read both before the write
        self.fg.control("POST", "/notification_faults", {"action": "drop", "count": 2, "state": "exists"})
        ev = self.fg.host(CAL, op="create", event=timed(
            future(11, 10), future(11, 10, 30), summary="linked"))
        self.book(cal, "dl1", ev)
        self.fg.host(CAL, op="delete", id=ev["id"])        # pushes are dropped here
        st, b, _ = self.svc.request("PATCH", "/v1/bookings/dl1",
                                    {"start": future(11, 12), "end": future(11, 12, 30)})
        self.assertEqual(st, 200, b)
        self.wait_for(lambda: self.booking("dl1")["status"] == "cancelled", 20,
                      "the host's deletion applied")
        b = self.booking("dl1")
        self.assertEqual(b["cancelled_by"], "google")
        self.assertEqual([(e["change"], e["action"]) for e in self.google_sources("dl1")],
                         [("delete", "cancel")])
        patches = self.requests(op="events.patch")
        self.assertEqual(len(patches), 1)

    def test_a_401_after_the_refresh_is_retried_not_failed(self):
        """Google rejects the token, calsync refreshes once within the call,
        and the new token is rejected too (expired again meanwhile): the job
        is retried later with a fresh token, not failed for good."""
        cal = self.boot()
        self.fg.control("POST", "/faults", {"status": 401, "count": 2, "ops": ["events.insert"]})
        self.create(cal, "au1")
        b = self.written("au1", timeout=30)
        self.assertEqual(b["write_state"], "none")
        self.assertEqual(len(self.tagged("au1")), 1)
        ops = [r["status"] for r in self.requests(op="events.insert")]
        self.assertEqual(ops, [401, 401, 200])
