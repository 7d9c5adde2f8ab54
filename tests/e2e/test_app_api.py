"""The booking app's side of every outcome (issue 16, DESIGN §4): a flag's
held-back change (`proposed`) and POST /v1/bookings/{uid}/resolve, PATCH
/v1/calendars, GET/PUT /v1/credentials (re-authorisation resumes revoked
calendars), GET /v1/decisions -- end to end against the fake Google."""
import http.client
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import future  # noqa: E402
from test_google_sync import CAL, ms, timed  # noqa: E402
from test_reverse import ReverseCase  # noqa: E402

FLAG_EVERYTHING = """
return {
  on_delete = function() return { action = "flag", reason = "review the deletion" } end,
  on_time_change = function() return { action = "flag", reason = "review the move" } end,
  on_title_change = function() return { action = "flag", reason = "review the title" } end,
}
"""

IGNORE_EVERYTHING = """
return {
  on_delete = function() return { action = "ignore", reason = "shadow ignores" } end,
  on_time_change = function() return { action = "ignore", reason = "shadow ignores" } end,
}
"""


class AppCase(ReverseCase):
    policies = {"flag_everything": FLAG_EVERYTHING, "ignore_everything": IGNORE_EVERYTHING}

    def resolve(self, uid, action):
        return self.svc.request("POST", "/v1/bookings/%s/resolve" % uid, {"action": action})

    def created(self, cal, uid, start, end, title="Call"):
        """A booking whose event calsync creates; waits until it is written
        and mirrored (so a host edit is judged against it)."""
        st, b, _ = self.svc.request("POST", "/v1/bookings", {
            "uid": uid, "calendar_id": cal, "title": title, "start": start, "end": end})
        self.assertEqual(st, 201, b)
        b = self.wait_for(lambda: (lambda x: x["event_id"] and x["write_state"] == "none"
                                   and x)(self.booking(uid)), what="the event of " + uid)
        self.wait_for(lambda: b["event_id"] in self.mirror(cal), what="mirrored " + uid)
        return b

    def google_event(self, eid):
        return self.fg.control("GET", "/events/%s/%s" % (CAL, eid))["event"]

    def written(self, uid):
        return self.wait_for(lambda: (lambda x: x["write_state"] == "none" and x)(
            self.booking(uid)), what="the write of " + uid)


class TestProposedAndResolve(AppCase):
    def test_flag_carries_proposed_and_apply_applies_it(self):
        cal = self.boot(policy="flag_everything")
        ev = {}
        for uid, day in (("del", 10), ("mov", 11), ("ttl", 12), ("keep", 13)):
            ev[uid] = self.fg.host(CAL, op="create", event=timed(
                future(day, 10), future(day, 10, 30), summary="Call " + uid))
            self.book(cal, uid, ev[uid])
        self.wait_for(lambda: ev["keep"]["id"] in self.mirror(cal), what="mirrored")
        self.fg.host(CAL, op="delete", id=ev["del"]["id"])
        self.fg.host(CAL, op="move", id=ev["mov"]["id"], start=future(11, 15),
                     end=future(11, 16))
        self.fg.host(CAL, op="retitle", id=ev["ttl"]["id"], summary="Renamed")
        for uid in ("del", "mov", "ttl"):
            self.wait_audit(uid, 2)
        # the booking shows what the flag held back ...
        self.assertEqual(self.booking("del")["proposed"], {"kind": "delete"})
        b = self.booking("mov")
        self.assertIs(b["needs_review"], True)
        self.assertEqual(b["start"], future(11, 10))
        self.assertEqual(b["proposed"], {"kind": "time_change", "start": future(11, 15),
                                         "end": future(11, 16), "title": "Call mov"})
        self.assertEqual(self.booking("ttl")["proposed"]["kind"], "title_change")
        self.assertEqual(self.booking("ttl")["proposed"]["title"], "Renamed")
        self.assertNotIn("proposed", self.booking("keep"))
        # ... and so does BOOKING_FLAGGED
        hooks = self.rx.wait(lambda ds: len(ds) >= 3)
        by_uid = {d.json["payload"]["uid"]: d.json["payload"] for d in hooks}
        self.assertEqual(by_uid["del"]["proposed"], {"kind": "delete"})
        self.assertEqual(by_uid["mov"]["proposed"], {
            "kind": "time_change", "startTime": future(11, 15), "endTime": future(11, 16),
            "title": "Call mov"})
        self.assertEqual(by_uid["mov"]["startTime"], future(11, 10))
        self.assertEqual(by_uid["ttl"]["proposed"]["title"], "Renamed")
        self.outbox_drained()
        outbox_before = {u: self.outbox(u) for u in ev}
        jobs_before = self.svc.db().execute("SELECT count(*) FROM jobs").fetchone()[0]
        # apply: the held-back change becomes the booking's
        st, b, _ = self.resolve("del", "apply")
        self.assertEqual(st, 200, b)
        self.assertEqual((b["status"], b["cancelled_by"], b["needs_review"]),
                         ("cancelled", "google", False))
        self.assertNotIn("proposed", b)
        st, b, _ = self.resolve("mov", "apply")
        self.assertEqual(st, 200, b)
        self.assertEqual((b["start"], b["end"], b["needs_review"]),
                         (future(11, 15), future(11, 16), False))
        st, b, _ = self.resolve("ttl", "apply")
        self.assertEqual((st, b["title"], b["needs_review"]), (200, "Renamed", False))
        for uid, action, change in (("del", "cancel", "delete"),
                                    ("mov", "reschedule", "time_change"),
                                    ("ttl", "update", "title_change")):
            e = self.audit(uid)[-1]
            self.assertEqual((e["source"], e["action"], e["change"]), ("api", action, change))
            self.assertEqual(e["before"]["status"], "accepted")
        # no webhook (the app made the change) and no Google write (Google has it)
        self.assertEqual({u: self.outbox(u) for u in ev}, outbox_before)
        self.assertEqual(self.svc.db().execute("SELECT count(*) FROM jobs").fetchone()[0],
                         jobs_before)
        # the next sync decides nothing for them: Google already agrees
        self.sync_and_wait(cal)
        self.assertEqual(len(self.audit("mov")), 3)
        self.assertEqual(len(self.audit("ttl")), 3)

    def test_resolve_errors_change_nothing(self):
        cal = self.boot(policy="flag_everything")
        e = self.fg.host(CAL, op="create", event=timed(future(10, 10), future(10, 11)))
        self.book(cal, "plain", e)
        snap = self.svc.snapshot()
        self.assertError(self.resolve("plain", "apply"), 409)
        self.assertError(self.resolve("nobody", "apply"), 404)
        self.assertError(self.resolve("plain", "undo"), 400)
        self.assertError(self.svc.request("POST", "/v1/bookings/plain/resolve", {}), 400)
        self.assertError(self.svc.request("POST", "/v1/bookings/plain/resolve",
                                          {"action": "apply", "extra": 1}), 400)
        self.assertEqual(self.svc.snapshot(), snap)
        # flagged, then cancelled by the app: resolve answers 409 as any change
        self.fg.host(CAL, op="move", id=e["id"], start=future(10, 12), end=future(10, 13))
        self.wait_audit("plain", 2)
        st, _, _ = self.svc.request("POST", "/v1/bookings/plain/cancel")
        self.assertEqual(st, 200)
        self.assertError(self.resolve("plain", "dismiss"), 409)

    def test_revert_restores_and_moves_back_dismiss_leaves_google(self):
        cal = self.boot(policy="flag_everything")
        d = self.created(cal, "r-del", future(10, 10), future(10, 11), "Deleted")
        m = self.created(cal, "r-mov", future(11, 10), future(11, 11), "Moved")
        t = self.created(cal, "r-ttl", future(12, 10), future(12, 11), "Titled")
        self.fg.host(CAL, op="delete", id=d["event_id"])
        self.fg.host(CAL, op="move", id=m["event_id"], start=future(11, 14),
                     end=future(11, 15))
        self.fg.host(CAL, op="retitle", id=t["event_id"], summary="Host's title")
        for uid in ("r-del", "r-mov", "r-ttl"):
            self.wait_audit(uid, 2)
        self.assertEqual(self.google_event(d["event_id"])["status"], "cancelled")
        # revert a deletion: the event comes back, under its id and tag
        st, b, _ = self.resolve("r-del", "revert")
        self.assertEqual(st, 200, b)
        self.assertIs(b["needs_review"], False)
        self.assertEqual(b["status"], "accepted")
        # revert a move: the event goes back to the booking's time
        st, b, _ = self.resolve("r-mov", "revert")
        self.assertEqual((st, b["start"]), (200, future(11, 10)))
        # dismiss: the flag goes, Google keeps the host's title
        st, b, _ = self.resolve("r-ttl", "dismiss")
        self.assertEqual((st, b["title"], b["needs_review"]), (200, "Titled", False))
        b = self.written("r-del")
        self.assertEqual(b["event_id"], d["event_id"])
        g = self.google_event(d["event_id"])
        self.assertEqual(g["status"], "confirmed")
        self.assertEqual(ms(g["start"]["dateTime"]), ms(future(10, 10)))
        self.assertEqual(g["extendedProperties"]["private"]["calsync_booking_uid"], "r-del")
        self.written("r-mov")
        g = self.google_event(m["event_id"])
        self.assertEqual(ms(g["start"]["dateTime"]), ms(future(11, 10)))
        self.assertEqual(self.google_event(t["event_id"])["summary"], "Host's title")
        # both writes echo back: no policy, no audit entry, no webhook
        self.sync_and_wait(cal)
        self.sync_and_wait(cal)
        for uid, action in (("r-del", "revert"), ("r-mov", "revert"), ("r-ttl", "dismiss")):
            entries = self.audit(uid)
            self.assertEqual([e["action"] for e in entries], ["create", "flag", action], uid)
            self.assertEqual(entries[-1]["source"], "api")
        self.assertIs(self.booking("r-del")["needs_review"], False)
        # the restored event is followed again: a later host move is decided
        self.fg.host(CAL, op="move", id=d["event_id"], start=future(10, 16),
                     end=future(10, 17))
        self.wait_audit("r-del", 4)
        self.assertEqual(self.booking("r-del")["proposed"]["start"], future(10, 16))


class TestCalendarsAndCredentials(AppCase):
    def test_patch_calendar_policy_shadow_settings(self):
        cal = self.boot()
        path = "/v1/calendars/%d" % cal
        st, c, _ = self.svc.request("GET", path)
        self.assertEqual((c["policy"], c["shadow_policy"], c["settings"]),
                         ("default", None, {}))
        st, c, _ = self.svc.request("PATCH", path, {
            "policy": "lead_time", "settings": {"lead_time_hours": 2},
            "shadow_policy": "ignore_everything"})
        self.assertEqual(st, 200, c)
        self.assertEqual((c["policy"], c["shadow_policy"], c["settings"]),
                         ("lead_time", "ignore_everything", {"lead_time_hours": 2}))
        self.assertEqual(self.svc.request("GET", path)[1], c)
        snap = self.svc.snapshot()
        # settings the schema rejects, a policy change that the settings do
        # not suit, unknown policies: 422 naming the problem, nothing changed
        st, e, _ = self.svc.request("PATCH", path, {"settings": {"lead_tme_hours": 1}})
        self.assertEqual(st, 422, e)
        self.assertIn("lead_tme_hours", e["error"]["message"])
        st, e, _ = self.svc.request("PATCH", path, {"settings": {"lead_time_hours": -1}})
        self.assertEqual(st, 422, e)
        st, e, _ = self.svc.request("PATCH", path, {"policy": "default"})
        self.assertEqual(st, 422, e)
        self.assertIn("lead_time_hours", e["error"]["message"])
        self.assertError(self.svc.request("PATCH", path, {"policy": "nope"}), 422)
        self.assertError(self.svc.request("PATCH", path, {"shadow_policy": "nope"}), 422)
        self.assertError(self.svc.request("PATCH", path, {}), 400)
        self.assertError(self.svc.request("PATCH", path, {"policy": None}), 400)
        self.assertError(self.svc.request("PATCH", path, {"colour": "red"}), 400)
        self.assertError(self.svc.request("PATCH", path, {"settings": "lead"}), 400)
        self.assertError(self.svc.request("PATCH", "/v1/calendars/999", {"policy": "default"}), 404)
        self.assertEqual(self.svc.snapshot(), snap)
        # a policy change with settings that suit it; shadow null removes it
        st, c, _ = self.svc.request("PATCH", path, {"policy": "flag_everything",
                                                    "settings": {}, "shadow_policy": None})
        self.assertEqual(st, 200, c)
        self.assertEqual((c["policy"], c["shadow_policy"], c["settings"]),
                         ("flag_everything", None, {}))
        # it applies to the next change decided
        e = self.fg.host(CAL, op="create", event=timed(future(10, 10), future(10, 11)))
        self.book(cal, "p1", e)
        self.wait_for(lambda: e["id"] in self.mirror(cal), what="mirrored")
        self.fg.host(CAL, op="delete", id=e["id"])
        entry = self.wait_audit("p1", 2)[1]
        self.assertEqual((entry["action"], entry["policy"]), ("flag", "flag_everything"))

    def test_reauthorise_resumes_revoked_calendars(self):
        e = self.fg.host(CAL, op="create", event=timed(future(5, 10), future(5, 11),
                                                       summary="Before"))
        self.start()
        cred = self.credential()
        cal = self.add_calendar(cred, CAL)
        self.book(cal, "kept", e)
        st, c, _ = self.svc.request("GET", "/v1/credentials/%d" % cred)
        self.assertEqual((st, c), (200, {"id": cred, "provider": "google",
                                         "state": "active", "calendars": [cal]}))
        self.assertNotIn(self.refresh_token, repr(c))
        self.assertError(self.svc.request("GET", "/v1/credentials/999"), 404)
        # the host revokes access: calendar revoked
        self.fg.control("POST", "/revoke", {"refresh_token": self.refresh_token})
        self.fg.control("POST", "/expire_access_tokens", {})
        self.sync_now(cal)
        self.wait_for(lambda: self.svc.request("GET", "/v1/calendars/%d" % cal)[1]["state"]
                      == "revoked", what="revoked")
        self.assertEqual(self.svc.request("GET", "/v1/credentials/%d" % cred)[1]["state"],
                         "revoked")
        # meanwhile the host moves the booked event
        self.fg.host(CAL, op="move", id=e["id"], start=future(5, 14), end=future(5, 15))
        # the booking's webhook is delivered in the background (the outbox
        # row turns delivered); wait for that before comparing snapshots
        def delivered():
            rows = self.svc.snapshot({"outbox": "state"})["outbox"]
            return rows and all(r[0] != "pending" for r in rows)
        self.wait_for(delivered, what="the booking's webhook delivered")
        # bad bodies change nothing
        snap = self.svc.snapshot()
        path = "/v1/credentials/%d" % cred
        self.assertError(self.svc.request("PUT", path, {}), 400)
        self.assertError(self.svc.request("PUT", path, {"refresh_token": ""}), 400)
        self.assertError(self.svc.request("PUT", path, {"refresh_token": "x", "scope": 1}), 400)
        self.assertError(self.svc.request("PUT", "/v1/credentials/999",
                                          {"refresh_token": "x"}), 404)
        self.assertEqual(self.svc.snapshot(), snap)
        # re-authorised: the same credential, calendar and booking carry on
        st, c, _ = self.svc.request("PUT", path, {"refresh_token": "rt-new"})
        self.assertEqual(st, 200, c)
        self.assertEqual((c["state"], c["calendars"]), ("active", [cal]))
        self.wait_for(lambda: self.svc.request("GET", "/v1/calendars/%d" % cal)[1]["state"]
                      == "active", what="active again")
        # the full sync found the move made while it was revoked
        self.wait_audit("kept", 2)
        b = self.booking("kept")
        self.assertEqual(b["start"], future(5, 14))
        # watched again: a live channel
        self.wait_for(lambda: self.svc.request("GET", "/v1/calendars/%d" % cal)[1]["channel"],
                      what="a live channel")
        with self.svc.db() as con:
            self.assertEqual(con.execute("SELECT count(*) FROM credentials").fetchone()[0], 1)


class TestEventFields(AppCase):
    def test_description_location_zone_attendees_written_and_patchable(self):
        cal = self.boot()
        st, b, _ = self.svc.request("POST", "/v1/bookings", {
            "uid": "f1", "calendar_id": cal, "title": "Intro", "start": future(10, 9),
            "end": future(10, 10), "description": "Agenda: intro", "location": "Room 4",
            "time_zone": "Europe/Berlin",
            "attendees": [{"email": "ann@example.com", "name": "Ann"},
                          {"email": "bob@example.com"}]})
        self.assertEqual(st, 201, b)
        self.assertEqual((b["description"], b["location"], b["time_zone"]),
                         ("Agenda: intro", "Room 4", "Europe/Berlin"))
        self.assertEqual(b["attendees"], [{"email": "ann@example.com", "name": "Ann"},
                                          {"email": "bob@example.com"}])
        b = self.written("f1")
        g = self.google_event(b["event_id"])
        self.assertEqual((g["description"], g["location"]), ("Agenda: intro", "Room 4"))
        self.assertEqual((g["start"]["timeZone"], g["end"]["timeZone"]),
                         ("Europe/Berlin", "Europe/Berlin"))
        self.assertEqual(ms(g["start"]["dateTime"]), ms(future(10, 9)))
        self.assertEqual([(a["email"], a.get("displayName")) for a in g["attendees"]],
                         [("ann@example.com", "Ann"), ("bob@example.com", None)])
        # without a zone, no timeZone is sent: Google shows the calendar's own
        st, b2, _ = self.svc.request("POST", "/v1/bookings", {
            "uid": "f2", "calendar_id": cal, "title": "Plain", "start": future(11, 9),
            "end": future(11, 10)})
        self.assertEqual(st, 201, b2)
        b2 = self.written("f2")
        self.assertNotIn("time_zone", b2)
        g2 = self.google_event(b2["event_id"])
        self.assertNotIn("timeZone", g2["start"])
        inserts = [r for r in self.requests() if r["op"] == "events.insert"]
        self.assertTrue(inserts)
        self.assertNotIn('"UTC"', repr([r.get("body") for r in inserts]))
        # patchable: each field, null clears, attendees replace
        st, b, _ = self.svc.request("PATCH", "/v1/bookings/f1", {
            "description": None, "location": "Room 5", "time_zone": "America/New_York",
            "attendees": [{"email": "cy@example.com", "optional": True}]})
        self.assertEqual(st, 200, b)
        self.assertNotIn("description", b)
        self.assertEqual((b["location"], b["time_zone"]), ("Room 5", "America/New_York"))
        self.assertEqual(b["attendees"], [{"email": "cy@example.com", "optional": True}])
        self.assertEqual(self.audit("f1")[-1]["change"], "details")
        self.written("f1")
        g = self.google_event(b["event_id"])
        self.assertEqual((g["location"], g["start"]["timeZone"]), ("Room 5", "America/New_York"))
        self.assertEqual([a["email"] for a in g["attendees"]], ["cy@example.com"])
        # the next sync sees calsync's own write: nothing decided
        self.sync_and_wait(cal)
        self.assertEqual([e["source"] for e in self.audit("f1")], ["api", "api"])
        # invalid fields: 400, nothing changed
        snap = self.svc.snapshot()
        for body in ({"time_zone": "Mars/Olympus"}, {"time_zone": "../etc/passwd"},
                     {"time_zone": 5}, {"location": ["x"]},
                     {"attendees": [{"email": "nobody"}]},
                     {"attendees": {"email": "a@b.c"}},
                     {"description": "x" * 9000}):
            self.assertError(self.svc.request("PATCH", "/v1/bookings/f1", body), 400)
        self.assertEqual(self.svc.snapshot(), snap)


class TestWrites(AppCase):
    def test_write_error_keeps_googles_words_and_retry_writes_again(self):
        cal = self.boot()
        self.fg.control("POST", "/faults", {"status": 400, "reason": "invalid", "count": 1,
                                            "message": "Invalid attendee email",
                                            "ops": ["events.insert"]})
        st, b, _ = self.svc.request("POST", "/v1/bookings", {
            "uid": "w1", "calendar_id": cal, "title": "T", "start": future(10, 9),
            "end": future(10, 10), "attendees": [{"email": "x@example.com"}]})
        self.assertEqual(st, 201, b)
        b = self.wait_for(lambda: (lambda x: x["write_state"] == "failed" and x)(
            self.booking("w1")), what="a failed write")
        self.assertIn("HTTP 400", b["write_error"])
        self.assertIn("invalid", b["write_error"])
        self.assertIn("Invalid attendee email", b["write_error"])
        self.assertIsNone(b["event_id"])
        # retry: written again as the booking stands, the error cleared
        st, r, _ = self.svc.request("POST", "/v1/bookings/w1/retry")
        self.assertEqual(st, 200, r)
        self.assertNotIn("write_error", r)
        b = self.written("w1")
        g = self.google_event(b["event_id"])
        self.assertEqual([a["email"] for a in g["attendees"]], ["x@example.com"])
        # nothing failed now: 409; unknown: 404
        self.assertError(self.svc.request("POST", "/v1/bookings/w1/retry"), 409)
        self.assertError(self.svc.request("POST", "/v1/bookings/nope/retry"), 404)
        # a failed patch is retried as a patch with the booking's fields
        self.fg.control("POST", "/faults", {"status": 400, "reason": "invalid", "count": 1,
                                            "message": "Bad location",
                                            "ops": ["events.patch"]})
        st, _, _ = self.svc.request("PATCH", "/v1/bookings/w1", {"location": "Room 9"})
        self.assertEqual(st, 200)
        b = self.wait_for(lambda: (lambda x: x["write_state"] == "failed" and x)(
            self.booking("w1")), what="a failed patch")
        self.assertIn("Bad location", b["write_error"])
        st, _, _ = self.svc.request("POST", "/v1/bookings/w1/retry")
        self.assertEqual(st, 200)
        b = self.written("w1")
        self.assertEqual(self.google_event(b["event_id"])["location"], "Room 9")

    def test_linking_checks_the_event_with_google(self):
        cal = self.boot()
        e = self.fg.host(CAL, op="create", event=timed(future(10, 10), future(10, 11)))
        gone = self.fg.host(CAL, op="create", event=timed(future(11, 10), future(11, 11)))
        self.fg.host(CAL, op="delete", id=gone["id"])
        snap = self.svc.snapshot()
        body = {"uid": "l1", "calendar_id": cal, "title": "T", "start": future(10, 10),
                "end": future(10, 11)}
        st, err, _ = self.svc.request("POST", "/v1/bookings", dict(body, event_id="nosuchevent"))
        self.assertEqual(st, 422, err)
        self.assertIn("nosuchevent", err["error"]["message"])
        st, err, _ = self.svc.request("POST", "/v1/bookings", dict(body, event_id=gone["id"]))
        self.assertEqual(st, 422, err)
        self.assertEqual(self.svc.snapshot(), snap)
        st, b, _ = self.svc.request("POST", "/v1/bookings", dict(body, event_id=e["id"]))
        self.assertEqual(st, 201, b)
        # Google unable to answer: the link is accepted, the sync judges it
        self.fg.control("POST", "/faults", {"status": 503, "count": -1,
                                            "ops": ["events.get"]})
        st, b, _ = self.svc.request("POST", "/v1/bookings",
                                    dict(body, uid="l2", event_id="unknowable"))
        self.assertEqual(st, 201, b)
        self.fg.control("DELETE", "/faults")


class TestMove(AppCase):
    OTHER = "other@example.com"

    def tagged(self, calendar, uid):
        """The live events of a fake calendar tagged with the booking."""
        evs = self.fg.control("GET", "/events/" + calendar)["events"]
        return [e["event"]["id"] for e in evs
                if e["event"].get("status") != "cancelled" and
                e["event"].get("extendedProperties", {}).get("private", {})
                .get("calsync_booking_uid") == uid]

    def test_move_to_a_calendar_of_another_credential(self):
        cal = self.boot()
        other = self.add_calendar(self.credential(refresh_token="rt-other-host"), self.OTHER)
        b = self.created(cal, "mv1", future(10, 9), future(10, 10), "Handed over")
        old_event = b["event_id"]
        st, m, _ = self.svc.request("PATCH", "/v1/bookings/mv1", {"calendar_id": other,
                                                                   "location": "Room 2"})
        self.assertEqual(st, 200, m)
        self.assertEqual((m["calendar_id"], m["location"]), (other, "Room 2"))
        m = self.written("mv1")
        self.assertEqual(self.tagged(self.OTHER, "mv1"), [m["event_id"]])
        self.assertEqual(self.tagged(CAL, "mv1"), [])
        self.assertEqual(self.google_event(old_event)["status"], "cancelled")
        # each write with its own credential: the insert in the other
        # calendar and the delete in the first carry different tokens
        reqs = {r["op"]: r["headers"].get("authorization") for r in self.requests()
                if r["op"] in ("events.insert", "events.delete")}
        self.assertNotEqual(reqs["events.insert"], reqs["events.delete"])
        # both echoes suppressed, one audit entry
        self.sync_and_wait(cal)
        self.sync_and_wait(other)
        entries = self.audit("mv1")
        self.assertEqual([(e["change"], e["action"]) for e in entries],
                         [("create", "create"), ("calendar_change", "move")])
        self.assertIn("moved from calendar", entries[1]["reason"])
        self.assertEqual(self.booking("mv1")["status"], "accepted")
        # the host's later move in the new calendar reaches the policy
        self.fg.host(self.OTHER, op="move", id=m["event_id"], start=future(10, 15),
                     end=future(10, 16))
        self.wait_audit("mv1", 3)
        self.assertEqual(self.booking("mv1")["start"], future(10, 15))
        # refusals change nothing
        self.assertError(self.svc.request("PATCH", "/v1/bookings/mv1", {"calendar_id": 999}), 422)
        st, _, _ = self.svc.request("DELETE", "/v1/calendars/%d" % cal)
        self.assertEqual(st, 200)
        snap = self.svc.snapshot()
        self.assertError(self.svc.request("PATCH", "/v1/bookings/mv1", {"calendar_id": cal}), 422)
        self.assertError(self.svc.request("PATCH", "/v1/bookings/mv1", {"calendar_id": "x"}), 400)
        self.assertEqual(self.svc.snapshot(), snap)

    def crash_move(self, point):
        cal = self.boot()
        other = self.add_calendar(self.credential(), self.OTHER)
        b = self.created(cal, "mvc", future(12, 9), future(12, 10), "Crashy")
        self.svc.stop()
        os.environ["CALSYNC_FAULT"] = point + ":1"
        try:
            self.svc.start()
        finally:
            os.environ.pop("CALSYNC_FAULT", None)
        try:
            st, _, _ = self.svc.request("PATCH", "/v1/bookings/mvc", {"calendar_id": other})
            self.assertEqual(st, 200)
        except (OSError, http.client.HTTPException):
            # the writer, woken by the committed PATCH, may reach its kill
            # point before the answer is sent; after the restart the move
            # must be carried out all the same (checked below)
            pass
        self.assertEqual(self.svc.proc.wait(30), -9)
        self.svc.kill9()
        self.assertIn("event=fault.kill point=" + point, self.svc.log_text())
        self.svc.start()
        m = self.written("mvc")
        self.assertEqual(m["calendar_id"], other)
        # exactly one live event, in the new calendar; the old one gone
        self.assertEqual(self.tagged(self.OTHER, "mvc"), [m["event_id"]])
        self.assertEqual(self.tagged(CAL, "mvc"), [])
        self.assertEqual(self.google_event(b["event_id"])["status"], "cancelled")
        self.sync_and_wait(cal)
        self.sync_and_wait(other)
        self.assertEqual([e["action"] for e in self.audit("mvc")], ["create", "move"])

    def test_kill_after_the_insert_reached_google(self):
        self.crash_move("writer_after_insert")

    def test_kill_between_the_insert_and_the_delete(self):
        self.crash_move("writer_after_commit")


class TestUserAgent(AppCase):
    def test_outbound_requests_say_calsync_and_its_version(self):
        import subprocess
        from harness import BIN
        version = subprocess.run([BIN, "version"], capture_output=True, text=True,
                                 check=True).stdout.split()[-1]
        cal = self.boot(policy="flag_everything")
        e = self.fg.host(CAL, op="create", event=timed(future(10, 10), future(10, 11)))
        self.book(cal, "ua", e)
        self.wait_for(lambda: e["id"] in self.mirror(cal), what="mirrored")
        self.fg.host(CAL, op="delete", id=e["id"])
        hooks = self.rx.wait(lambda ds: len(ds) >= 1)
        self.assertEqual(hooks[0].headers.get("user-agent"), "calsync/" + version)
        agents = {r["headers"].get("user-agent") for r in self.requests()}
        self.assertEqual(agents, {"calsync/" + version})


class TestDecisions(AppCase):
    def test_decisions_newest_first_filters_cursor(self):
        cal = self.boot()
        cal2 = self.add_calendar(self.credential(), "other@example.com",
                                 policy="flag_everything")
        evs = []
        for i in range(3):
            e = self.fg.host(CAL, op="create", event=timed(future(10 + i, 10),
                                                           future(10 + i, 11)))
            self.book(cal, "d%d" % i, e)
            evs.append(e)
        o = self.fg.host("other@example.com", op="create",
                         event=timed(future(20, 10), future(20, 11)))
        self.book(cal2, "o1", o)
        self.wait_for(lambda: evs[2]["id"] in self.mirror(cal), what="mirrored")
        self.wait_for(lambda: o["id"] in self.mirror(cal2), what="mirrored 2")
        self.fg.host(CAL, op="delete", id=evs[0]["id"])
        self.wait_audit("d0", 2)
        self.fg.host(CAL, op="move", id=evs[1]["id"], start=future(11, 15), end=future(11, 16))
        self.wait_audit("d1", 2)
        self.fg.host(CAL, op="retitle", id=evs[2]["id"], summary="x")
        self.wait_audit("d2", 2)
        self.fg.host("other@example.com", op="delete", id=o["id"])
        self.wait_audit("o1", 2)
        st, d, _ = self.svc.request("GET", "/v1/decisions")
        self.assertEqual(st, 200, d)
        self.assertIsNone(d["next_cursor"])
        got = [(x["booking"], x["action"]) for x in d["decisions"]]
        # newest first; the app's own creates are not decisions
        self.assertEqual(got, [("o1", "flag"), ("d2", "ignore"), ("d1", "reschedule"),
                               ("d0", "cancel")])
        x = d["decisions"][1]
        self.assertEqual((x["calendar_id"], x["source"], x["change"], x["policy"]),
                         (cal, "push", "title_change", "default"))
        self.assertRegex(x["policy_version"], r"^[0-9a-f]{12}$")
        self.assertIsInstance(x["id"], int)
        q = lambda s: [y["booking"] for y in self.svc.request("GET", "/v1/decisions?" + s)[1]["decisions"]]  # noqa: E731
        self.assertEqual(q("calendar_id=%d" % cal2), ["o1"])
        self.assertEqual(q("booking=d1"), ["d1"])
        self.assertEqual(q("action=cancel"), ["d0"])
        self.assertEqual(q("since=" + future(2)), [])
        self.assertEqual(q("since=2000-01-01T00:00:00Z"), ["o1", "d2", "d1", "d0"])
        # pages of two, newest first, the cursor carrying on
        st, p1, _ = self.svc.request("GET", "/v1/decisions?limit=2")
        self.assertEqual([y["booking"] for y in p1["decisions"]], ["o1", "d2"])
        self.assertIsInstance(p1["next_cursor"], str)
        st, p2, _ = self.svc.request("GET", "/v1/decisions?limit=2&cursor=" + p1["next_cursor"])
        self.assertEqual([y["booking"] for y in p2["decisions"]], ["d1", "d0"])
        self.assertIsNone(p2["next_cursor"])
        for bad in ("limit=0", "cursor=x", "calendar_id=-1", "action=explode", "since=today"):
            self.assertError(self.svc.request("GET", "/v1/decisions?" + bad), 400)


if __name__ == "__main__":
    import unittest
    unittest.main()
