"""What real Google users hit (issue 19), end to end against the fake:
usage limits that make a calendar read-only for hours (403 quotaExceeded /
dailyLimitExceeded: transient, DESIGN §2 Quota) and malformed items in a
listing (skipped, counted, logged once; the rest of the page applies)."""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import future  # noqa: E402
from test_forward import ForwardCase  # noqa: E402
from test_google_sync import CAL, timed  # noqa: E402


def metric(text, series):
    m = re.search(re.escape(series.encode()) + rb" (\d+)", text)
    return int(m.group(1)) if m else None


class TestUsageLimits(ForwardCase):
    def test_read_only_calendar_write_waits_and_lands(self):
        cal = self.boot()
        # Google's "Calendar usage limits exceeded": writes refused for
        # hours, reads work (fake: /_control/read_only)
        self.fg.control("POST", "/read_only", {"calendar": CAL, "seconds": 3600,
                                               "reason": "quotaExceeded"})
        self.fg.control("DELETE", "/requests")
        b = self.create(cal, "q1")
        self.assertEqual(b["write_state"], "pending")

        def refused(n):
            rs = [r for r in self.requests(op="events.insert") if r["status"] == 403]
            return len(rs) >= n and rs
        # a second refused insert is the positive sign that the first was
        # taken as transient and retried
        rs = self.wait_for(lambda: refused(2), 30, "the insert retried under quotaExceeded")
        self.assertTrue(all(r.get("limited") == "quotaExceeded" for r in rs), rs)
        b = self.booking("q1")
        self.assertEqual(b["write_state"], "pending", b)      # not failed
        self.assertEqual(self.cal_row(cal)[0], "active")      # and no CALENDAR_ERROR
        self.assertEqual(self.tagged("q1"), [])
        # the limit clears: the next retry lands, one event
        self.fg.control("DELETE", "/read_only")
        b = self.written("q1", timeout=30)
        events = self.tagged("q1")
        self.assertEqual(len(events), 1)
        self.assertEqual(b["event_id"], events[0]["id"])
        self.assertEqual(self.cal_row(cal)[0], "active")
        self.outbox_drained()
        self.assertEqual([d for d in self.rx.accepted()
                          if d.json.get("triggerEvent") == "CALENDAR_ERROR"], [])

    def test_daily_limit_on_listing_leaves_calendar_active(self):
        cal = self.boot()
        last = self.cal_row(cal)[2]
        self.fg.control("DELETE", "/requests")
        self.fg.control("POST", "/faults", {"status": 403, "reason": "dailyLimitExceeded",
                                            "count": 1, "ops": ["events.list"]})
        self.fg.host(CAL, op="create", event=timed(future(3, 9), future(3, 10), summary="X"))
        self.sync_now(cal)
        self.wait_synced(cal, last)
        statuses = [r["status"] for r in self.requests(op="events.list")]
        self.assertEqual(statuses[0], 403)
        self.assertEqual(statuses[-1], 200)
        self.assertEqual(self.cal_row(cal)[0], "active")
        self.assertIn("X", [r["title"] for r in self.mirror(cal).values()])
        # failed, retried -- never an error of the calendar (result=error)
        self.assertIn("result=failed", self.svc.log_text())
        self.assertNotIn("result=error", self.svc.log_text())


class TestMalformedItems(ForwardCase):
    def test_bad_items_skipped_rest_of_page_applies(self):
        a = self.fg.host(CAL, op="create", event=timed(future(3, 9), future(3, 10),
                                                       summary="before"))
        for preset in ("missing_id", "broken_start", "start_not_object"):
            self.fg.control("POST", "/events/%s/inject" % CAL, {"preset": preset})
        b = self.fg.host(CAL, op="create", event=timed(future(3, 11), future(3, 12),
                                                       summary="after"))
        cal = self.boot()          # the first (full) sync succeeds
        self.assertEqual(self.cal_row(cal)[0], "active")
        m = self.mirror(cal)
        self.assertIn(a["id"], m)
        self.assertIn(b["id"], m)
        self.assertEqual(len(m), 2)
        st, text, _ = self.svc.request("GET", "/metrics", raw=True)
        self.assertEqual(metric(text, 'calsync_sync_items_skipped_total{reason="malformed"}'), 3)
        log = self.svc.log_text()
        self.assertEqual(log.count("reason=malformed"), 3, log[-3000:])  # once each

        # an incremental listing with one more bad item among good ones
        self.fg.control("POST", "/events/%s/inject" % CAL, {"preset": "broken_start"})
        c = self.fg.host(CAL, op="create", event=timed(future(4, 9), future(4, 10),
                                                       summary="later"))
        self.sync_and_wait(cal)
        self.assertIn(c["id"], self.mirror(cal))
        self.assertEqual(self.cal_row(cal)[0], "active")
        # the token moved past it: the next sync does not see it again
        self.sync_and_wait(cal)
        st, text, _ = self.svc.request("GET", "/metrics", raw=True)
        self.assertEqual(metric(text, 'calsync_sync_items_skipped_total{reason="malformed"}'), 4)
        self.assertEqual(self.svc.log_text().count("reason=malformed"), 4)
        self.assertIn(b'# TYPE calsync_sync_items_skipped_total counter', text)


OTHER = "team@example.com"


class TestEventsMove(ForwardCase):
    """events.move: the event keeps its id; the booking follows it to another
    watched calendar of the same credential, whichever calendar syncs first
    (docs/sync.md "Moves between calendars")."""

    def setUp(self):
        super().setUp()
        # the test decides which calendar syncs first: no pushes
        self.fg.control("POST", "/notification_faults",
                        {"action": "drop", "count": 1000000, "state": "exists"})

    def two_calendars(self):
        self.start()
        cred = self.credential()
        a = self.add_calendar(cred, CAL)
        b = self.add_calendar(cred, OTHER)
        ev = self.fg.host(CAL, op="create", event=timed(future(5, 9), future(5, 10),
                                                        summary="Consult"))
        self.sync_and_wait(a)
        self.book(a, "mv", ev)
        return a, b, ev

    def moved_once(self, uid, a, b, ev):
        bk = self.booking(uid)
        self.assertEqual((bk["calendar_id"], bk["event_id"], bk["status"]),
                         (b, ev["id"], "accepted"), bk)
        moves = [e for e in self.audit(uid) if e["change"] == "calendar_move"]
        self.assertEqual(len(moves), 1, self.audit(uid))
        self.assertEqual(moves[0]["action"], "move")
        # no policy decided anything: the move is the only non-API entry
        self.assertEqual([e["change"] for e in self.audit(uid) if e["source"] != "api"],
                         ["calendar_move"])
        self.outbox_drained()
        hooks = self.hooks_for(uid)
        self.assertEqual([h.json["triggerEvent"] for h in hooks], ["BOOKING_UPDATED"])
        self.assertEqual(hooks[0].json["payload"]["calendarId"], b)

    def check_order(self, first, second):
        a, b, ev = self.two_calendars()
        order = {"source": (a, b), "destination": (b, a)}[first]
        self.fg.host(CAL, op="move_calendar", id=ev["id"], destination=OTHER)
        self.sync_and_wait(order[0])
        self.assertEqual(self.booking("mv")["calendar_id"], b)   # moved at once
        self.sync_and_wait(order[1])
        self.moved_once("mv", a, b, ev)
        # and it follows the event there: a host edit on the new calendar
        self.fg.host(OTHER, op="move", id=ev["id"], start=future(5, 14), end=future(5, 15))
        self.sync_and_wait(b)
        self.assertEqual(self.booking("mv")["start"], future(5, 14))
        self.assertEqual(self.booking("mv")["calendar_id"], b)

    def test_source_syncs_first(self):
        self.check_order("source", "destination")

    def test_destination_syncs_first(self):
        self.check_order("destination", "source")

    def test_move_to_unwatched_calendar_is_a_deletion(self):
        a, b, ev = self.two_calendars()
        self.fg.host(CAL, op="move_calendar", id=ev["id"], destination="elsewhere@example.com")
        self.sync_and_wait(a)
        self.sync_and_wait(b)
        bk = self.booking("mv")
        self.assertEqual((bk["status"], bk["calendar_id"]), ("cancelled", a), bk)
        self.assertEqual([e["change"] for e in self.audit("mv") if e["source"] != "api"],
                         ["delete"])


class TestAttendeeResponses(ForwardCase):
    """attendees[].responseStatus: a change of responses alone is kind
    `response`, dispatched to on_response (DESIGN §5)."""

    def booked(self, policy, uid):
        self.start()
        cal = self.add_calendar(self.credential(), CAL, policy)
        self.create(cal, uid, attendees=[{"email": "Ann@example.com"},
                                         {"email": "bob@example.com"}])
        b = self.written(uid)
        self.sync_and_wait(cal)     # the insert's echo: silent
        self.assertEqual(self.google_sources(uid), [])
        return cal, b

    def respond(self, cal, b, email, response):
        self.fg.host(CAL, op="respond", id=b["event_id"], email=email, response=response)
        self.sync_and_wait(cal)

    def test_all_declined_policy_flags(self):
        cal, b = self.booked("all_declined", "r1")
        self.respond(cal, b, "ann@example.com", "declined")
        d = self.google_sources("r1")
        self.assertEqual([(e["change"], e["action"]) for e in d], [("response", "ignore")])
        self.assertEqual(d[0]["reason"], "not every attendee declined")
        self.respond(cal, b, "bob@example.com", "declined")
        d = self.google_sources("r1")
        self.assertEqual([(e["change"], e["action"]) for e in d],
                         [("response", "ignore"), ("response", "flag")])
        self.assertEqual(d[1]["reason"], "all 2 attendee(s) declined in Google Calendar")
        bk = self.booking("r1")
        self.assertTrue(bk["needs_review"])
        self.assertEqual(bk["status"], "accepted")
        self.outbox_drained()
        self.assertEqual([h.json["triggerEvent"] for h in self.hooks_for("r1")],
                         ["BOOKING_FLAGGED"])
        # the same responses re-read decide nothing again
        self.sync_and_wait(cal)
        self.assertEqual(len(self.google_sources("r1")), 2)

    def test_default_policy_ignores_responses(self):
        cal, b = self.booked(None, "r2")
        self.respond(cal, b, "bob@example.com", "accepted")
        d = self.google_sources("r2")
        self.assertEqual([(e["change"], e["action"]) for e in d], [("response", "ignore")])
        bk = self.booking("r2")
        self.assertFalse(bk["needs_review"])
        self.assertEqual(self.outbox("r2"), [])
        # a time change is still a time change, not a response
        self.fg.host(CAL, op="move", id=b["event_id"], start=future(10, 12),
                     end=future(10, 12, 30))
        self.sync_and_wait(cal)
        self.assertEqual(self.google_sources("r2")[-1]["change"], "time_change")


class TestConferenceLinks(ForwardCase):
    def test_meet_link_on_booking_and_webhooks(self):
        cal = self.boot()
        self.fg.control("DELETE", "/requests")
        b = self.create(cal, "c1", conference="meet")
        self.assertEqual(b["conference"], "meet")
        self.assertNotIn("conference_url", b)               # not made yet
        b = self.written("c1")
        ev = self.tagged("c1")[0]
        link = ev["hangoutLink"]
        self.assertRegex(link, r"^https://meet\.google\.com/[a-z]{3}-[a-z]{4}-[a-z]{3}$")
        self.assertEqual(b["conference_url"], link)
        ins = self.requests(op="events.insert")
        self.assertEqual(len(ins), 1)
        self.assertEqual(ins[0]["query"].get("conferenceDataVersion"), ["1"])
        self.assertEqual(ins[0]["body"]["conferenceData"]["createRequest"]
                         ["conferenceSolutionKey"], {"type": "hangoutsMeet"})
        # the booking's webhooks carry it: a host move -> BOOKING_RESCHEDULED
        self.fg.host(CAL, op="move", id=ev["id"], start=future(11, 10), end=future(11, 11))
        self.wait_for(lambda: self.hooks_for("c1"), 30, "the webhook")
        h = self.hooks_for("c1")[0].json
        self.assertEqual(h["triggerEvent"], "BOOKING_RESCHEDULED")
        self.assertEqual(h["payload"]["conferenceUrl"], link)

    def test_bad_conference_values_refused(self):
        cal = self.boot()
        for body in ({"conference": "zoom"}, {"conference": 1},
                     {"conference": "meet", "event_id": "abcdefghij"}):
            full = {"uid": "cx", "calendar_id": cal, "title": "t",
                    "start": future(10, 10), "end": future(10, 11)}
            full.update(body)
            st, r, _ = self.svc.request("POST", "/v1/bookings", full)
            self.assertEqual(st, 400, (body, r))
        # without it: no conference asked for, none made
        b = self.written(self.create(cal, "c2")["uid"])
        self.assertNotIn("conference", b)
        self.assertNotIn("hangoutLink", self.tagged("c2")[0])
