"""Policies off the write path (DESIGN §2 Guarantees, issue 14 item 1).

A policy that spends most of its instruction budget on every call, on a
calendar with 2,000 changed events bound to bookings: while that sync runs
(tens of seconds of policy time), booking creations through the API, their
forward writes, and push notifications on other calendars -- with the sync
they cause -- all complete before it ends. Before the decide/apply split the
page's transaction, open for the whole page, held every other writer until
the last decision of the page was made.

And the re-check rule (docs/internals/apply.md "Decide, then apply"): a
booking the app changes after its change was decided and before it is
applied is decided again from what it is now -- a decision is never
applied to a booking it was not made for.

Every instant is relative to now: the events start two days ahead.
Nothing here asserts a latency; only the order in which things complete.
"""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_google_sync import CAL  # noqa: E402
from test_reverse import ReverseCase  # noqa: E402

LIMIT = 1000000              # policy_limits.instructions, set in the config
# `for i = 1, n do s = s + i end` runs 2 VM instructions per iteration
# (FORLOOP, ADD): the hook burns ~80% of the budget on every call, close
# to the limit without reaching it (a limit hit would be a forced flag).
BURN_ITERATIONS = int(0.8 * LIMIT) // 2
SLOW = """
local function burn()
  local s = 0
  for i = 1, %d do s = s + i end
  return s
end
return {
  on_time_change = function(change, booking, ctx)
    burn()
    return { action = "reschedule", reason = "moved in Google" }
  end,
  on_delete = function(change, booking, ctx)
    burn()
    return { action = "cancel", reason = "deleted in Google" }
  end,
}
""" % BURN_ITERATIONS

API_CAL = "api@example.com"      # the app creates bookings here meanwhile
PUSH_CAL = "push@example.com"    # the host edits here meanwhile: a push


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class SlowPolicyCase(ReverseCase):
    policies = {"slow": SLOW}

    def setUp(self):
        super().setUp()
        self.config_extra += "\npolicy_limits = { instructions = %d }" % LIMIT
        # two days ahead, on the hour: never past, whatever the date
        self.base = (int(time.time()) // 3600 + 48) * 3600

    def bulk(self, cal, ops):
        return self.fg.control("POST", "/events/%s/bulk" % cal, {"ops": ops})["events"]

    def slot(self, i, shift=0):
        s = self.base + i * 3600 + shift
        return iso(s), iso(s + 1800)

    def booked_events(self, cal, n, prefix):
        """n events in the fake's CAL, each followed by a booking."""
        ops = []
        for i in range(n):
            start, end = self.slot(i)
            ops.append({"op": "create", "event": {
                "id": "%sev%05d" % (prefix, i), "summary": "Booking %d" % i,
                "start": {"dateTime": start}, "end": {"dateTime": end}}})
        before = self.cal_row(cal)[2]
        evs = self.bulk(CAL, ops)       # one push: one sync mirrors them
        self.wait_synced(cal, before, timeout=120)
        self.assertGreaterEqual(len(self.mirror(cal)), n)
        for i, e in enumerate(evs):
            self.book(cal, "%s%05d" % (prefix, i), e)
        return evs

    def move_all(self, evs, shift=3600):
        ops = []
        for i, e in enumerate(evs):
            start, end = self.slot(i, shift)
            ops.append({"op": "move", "id": e["id"], "start": start, "end": end})
        self.bulk(CAL, ops)

    def metric(self, name):
        st, text, _ = self.svc.request("GET", "/metrics", raw=True)
        self.assertEqual(st, 200)
        m = re.search(r"^%s (\d+)" % re.escape(name), text.decode(), re.M)
        return int(m.group(1)) if m else 0

    def decided(self):
        return self.metric('calsync_policy_decisions_total{policy="slow",action="reschedule"}')

    def applied(self, cal):
        """Time changes of the slow calendar applied so far (audited)."""
        with self.svc.db() as con:
            return con.execute("SELECT count(*) FROM audit a JOIN bookings b ON b.uid = a.booking_uid"
                               " WHERE b.calendar_id = ? AND a.change = 'time_change'",
                               (cal,)).fetchone()[0]


class TestSlowPolicy(SlowPolicyCase):
    N = 2000

    def test_other_writers_do_not_wait_for_a_slow_sync(self):
        self.start()
        cred = self.credential()
        slow = self.add_calendar(cred, CAL, policy="slow")
        api_cal = self.add_calendar(cred, API_CAL)
        push_cal = self.add_calendar(cred, PUSH_CAL)
        evs = self.booked_events(slow, self.N, "s")
        synced_before = self.cal_row(slow)[2]

        self.move_all(evs)
        self.sync_now(slow)
        # the slow sync is under way: its policy is deciding
        self.wait_for(lambda: self.decided() >= 1, 60, "the slow sync deciding")

        # the app creates bookings on another calendar: each answered 201
        # and written to Google by the forward writer
        for i in range(5):
            start, end = self.slot(i)
            st, b, _ = self.svc.request("POST", "/v1/bookings", {
                "uid": "app%d" % i, "calendar_id": api_cal, "title": "App %d" % i,
                "start": start, "end": end})
            self.assertEqual(st, 201, b)
        self.wait_for(lambda: all(self.booking("app%d" % i).get("event_id")
                                  for i in range(5)), 60, "the app's events written to Google")
        # the host edits another calendar: the push is answered 200 and
        # that calendar's sync runs and completes
        pushed_before = self.cal_row(push_cal)[2]
        ev = self.fg.host(PUSH_CAL, op="create", event={
            "summary": "Host", "start": {"dateTime": self.slot(3)[0]},
            "end": {"dateTime": self.slot(3)[1]}})
        self.wait_for(lambda: ev["id"] in self.mirror(push_cal), 60,
                      "the pushed change synced")
        self.assertGreater(self.cal_row(push_cal)[2], pushed_before)
        pushes = self.fg.control("GET", "/notifications?calendar=" + PUSH_CAL)["notifications"]
        self.assertTrue([p for p in pushes if p.get("resource_state") == "exists"
                         and p.get("http_status") == 200], pushes)

        # ... all of it while the slow sync had not ended
        self.assertEqual(self.cal_row(slow)[2], synced_before,
                         "the slow sync ended before the other writers were done:"
                         " nothing was proved")
        self.assertLess(self.applied(slow), self.N)

        # and the slow sync itself ends with every change applied once
        self.wait_synced(slow, synced_before, timeout=600)
        self.assertEqual(self.applied(slow), self.N)
        with self.svc.db() as con:
            acts = con.execute(
                "SELECT a.action, count(*) FROM audit a JOIN bookings b ON b.uid = a.booking_uid"
                " WHERE b.calendar_id = ? AND a.change = 'time_change' GROUP BY a.action",
                (slow,)).fetchall()
        self.assertEqual(acts, [("reschedule", self.N)])   # no limit hit: no forced flag
        for i in (0, self.N - 1):
            self.assertEqual(self.booking("s%05d" % i)["start"], self.slot(i, 3600)[0])


class TestRecheck(SlowPolicyCase):
    N = 300   # within one decide window (SYNC_DECIDE_WINDOW = 1024)

    def test_a_booking_changed_after_its_decision_is_decided_again(self):
        self.start()
        cred = self.credential()
        slow = self.add_calendar(cred, CAL, policy="slow")
        evs = self.booked_events(slow, self.N, "r")
        synced_before = self.cal_row(slow)[2]
        self.move_all(evs)
        self.sync_now(slow)
        # r00003 and r00004 are decided early in the first window, whose
        # changes are applied only once all 300 are decided
        self.wait_for(lambda: self.decided() >= 10, 60, "the first decisions")
        st, b, _ = self.svc.request("POST", "/v1/bookings/r00003/cancel", {"reason": "app"})
        self.assertEqual(st, 200, b)
        st, b, _ = self.svc.request("PATCH", "/v1/bookings/r00004", {"title": "Renamed by the app"})
        self.assertEqual(st, 200, b)
        self.assertEqual(self.applied(slow), 0,
                         "changes were applied before the app's edits: nothing was proved")
        self.wait_synced(slow, synced_before, timeout=300)
        # the cancelled booking: its decided reschedule was not applied
        # (cancelled since: dropped), no webhook
        b = self.booking("r00003")
        self.assertEqual((b["status"], b["cancelled_by"]), ("cancelled", "app"))
        self.assertEqual([e["change"] for e in self.audit("r00003")], ["create", "cancel"])
        # the renamed one: decided again, from the booking as renamed
        e = [e for e in self.audit("r00004") if e["change"] == "time_change"]
        self.assertEqual(len(e), 1, self.audit("r00004"))
        self.assertEqual((e[0]["action"], e[0]["before"]["title"]),
                         ("reschedule", "Renamed by the app"))
        self.assertEqual(self.booking("r00004")["start"], self.slot(4, 3600)[0])
        self.assertGreaterEqual(self.metric("calsync_sync_redecided_total"), 1)
        # everything else: once
        self.assertEqual(self.applied(slow), self.N - 1)


if __name__ == "__main__":
    import unittest
    unittest.main()
