"""Policy limits end to end (issue 21, item 1; DESIGN §5 "Each call is
bounded in instructions and memory ... An error, a limit hit or an invalid
decision becomes flag with the reason -- never a destructive action -- and
is counted"): a policy whose hook calls a C function that used to never
return (string.rep("", math.maxinteger), table.move({}, 1, 2^40, 2), ...)
on a real change from the fake Google. Each change must be decided once,
as a flag naming the bound, with one audit entry and one BOOKING_FLAGGED
webhook; the sync moves on; the service keeps answering and stops cleanly;
and a kill -9 in the middle of such a decision does not wedge the restart.

Event times are relative to now (future events: a past one goes to on_past).
"""
import datetime
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_google_sync import CAL, timed  # noqa: E402
from test_reverse import ReverseCase  # noqa: E402

# name -> (hook body, reason prefix, what the reason must contain). The
# hook flags with "survived" if the call returned: that must not happen.
ATTACKS = {
    "rep_empty": ('string.rep("", math.maxinteger)', "policy error: ",
                  "string.rep: count of 9.22e+18 exceeds the sandbox limit of 1048576"),
    "rep_method": ('("").rep("", "9223372036854775807")', "policy error: ",
                   "string.rep: count of 9.22e+18 exceeds the sandbox limit of 1048576"),
    "move": ("table.move({}, 1, 2^40, 2)", "policy stopped: ",
             "instruction limit of 1000000 exceeded"),
    "sort": ('local s = string.rep("a", 1048576) local t = {} '
             "for i = 1, 200000 do t[i] = s end table.sort(t)", "policy stopped: ",
             "instruction limit of 1000000 exceeded"),
    "backref": ('string.find(string.rep("a", 30000), "(a*)%1%1b")', "policy error: ",
                "string.find: pattern too costly: up to 18006750780023 steps on a "
                "30000-byte subject, over the sandbox limit of 16777216 steps per call"),
    "set500": ('string.find(string.rep("a", 32768), "[" .. string.rep("b", 500) .. "]*c")',
               "policy error: ", "string.find: pattern too costly"),
    "unpack": ('select("#", table.unpack({}, 1, 1e9))', "policy error: ",
               "table.unpack: 1000000000 results exceed the sandbox limit of 8192"),
    "format": ('string.format("%99999d", 1)', "policy error: ",
               "invalid conversion specification: '%99999d'"),
    "concat": ('table.concat(setmetatable({}, { __index = tostring }), "", 1, 2^40)',
               "policy stopped: ", "instruction limit of 1000000 exceeded"),
    "insert": ("table.insert(setmetatable({}, { __len = function() "
               "return math.maxinteger - 1 end }), 1, 1)", "policy stopped: ",
               "instruction limit of 1000000 exceeded"),
    "gmatch": ('local it = string.gmatch(string.rep("a", 200000), "b") '
               "for i = 1, 1e6 do it() end", "policy stopped: ",
               "instruction limit of 1000000 exceeded"),
    "gsub": ('string.gsub(string.rep("a", 200000), "", string.rep("b", 1048576))',
             "policy error: ", "string.gsub: pattern and replacement too costly"),
    "pack": ('string.pack("c1000000000", "")', "policy error: ",
             "string.pack: result of 1000000000 bytes exceeds the sandbox limit of 1048576"),
    "codes": ('local s = "a" .. string.rep("\\x80", 1048000) local f = utf8.codes(s, true) '
              "for i = 1, 1e6 do pcall(f, s, 1) end", "policy stopped: ",
              "instruction limit of 1000000 exceeded"),
    "load": ('local s = "--" .. string.rep("x", 1048000) for i = 1, 1e6 do load(s) end',
             "policy stopped: ", "instruction limit of 1000000 exceeded"),
    "swallow": ('while true do pcall(string.rep, "", math.maxinteger) end',
                "policy stopped: ", "instruction limit of 1000000 exceeded"),
    # what only the VM does (one instruction compares two long strings): the
    # wall-clock backstop of 2 s stops it
    "compare": ('local a, b = string.rep("x", 1048576), string.rep("x", 1048575) .. "x" '
                "while true do local _ = a < b end", "policy stopped: ",
                "instruction limit: still running after 2000 ms"),
}


def attacks_policy():
    """on_delete runs the attack named by the booking's title; "fine"
    cancels, to show the decisions after the attacks are ordinary."""
    lines = ["local attacks = {"]
    for name, (body, _, _) in sorted(ATTACKS.items()):
        lines.append("  %s = function() %s end," % (name, body))
    lines += [
        "}",
        "return {",
        "  on_delete = function(change, booking, ctx)",
        "    if booking.title == 'fine' then",
        "      return { action = 'cancel', reason = 'fine' }",
        "    end",
        "    ctx.log('deciding ' .. booking.uid)",
        "    attacks[booking.title]()",
        "    return { action = 'cancel', reason = 'survived' }",
        "  end,",
        "}",
        "",
    ]
    return "\n".join(lines)


def at(hours):
    """An RFC 3339 UTC instant `hours` from now, on the minute."""
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=hours)
    return t.replace(second=0, microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


class PolicyLimitsCase(ReverseCase):
    policies = {"attacks": attacks_policy()}

    def event(self, hours, title):
        return self.fg.host(CAL, op="create",
                            event=timed(at(hours), at(hours + 0.5), summary=title))

    def sync_token(self, cal):
        return self.cal_row(cal)[1]

    def flags_for(self, uid):
        return [d for d in self.hooks_for(uid) if d.status == 200
                and d.json["triggerEvent"] == "BOOKING_FLAGGED"]

    def assert_decided_once(self, uid, prefix, needle):
        entries = self.audit(uid)
        self.assertEqual(len(entries), 2, entries)   # the booking, one decision
        e = entries[1]
        self.assertEqual((e["change"], e["action"], e["policy"]),
                         ("delete", "flag", "attacks"), e)
        self.assertTrue(e["reason"].startswith(prefix), e["reason"])
        self.assertIn(needle, e["reason"])
        self.assertNotIn("survived", e["reason"])
        b = self.booking(uid)
        self.assertEqual((b["status"], b["needs_review"]), ("accepted", True), b)

    def assert_serving(self):
        st, body, _ = self.svc.request("GET", "/healthz")
        self.assertEqual(st, 200, body)


class TestPolicyLimits(PolicyLimitsCase):
    def test_every_unbounded_call_is_flagged_once_and_the_sync_moves_on(self):
        cal = self.boot(policy="attacks")
        names = sorted(ATTACKS)
        events = {}
        for i, name in enumerate(names):
            events[name] = self.event(48 + i, name)
            self.book(cal, name, events[name])
        fine = self.event(24, "fine")
        self.book(cal, "fine", fine)
        self.wait_for(lambda: fine["id"] in self.mirror(cal), what="events mirrored")
        token = self.sync_token(cal)

        t0 = time.monotonic()
        for name in names:
            self.fg.host(CAL, op="delete", id=events[name]["id"])
        for name in names:
            self.wait_audit(name, 2, timeout=60)
        # 17 decisions, one stopped by the 2 s wall clock: each one is bounded
        self.assertLess(time.monotonic() - t0, 45)
        for name in names:
            _, prefix, needle = ATTACKS[name]
            with self.subTest(attack=name):
                self.assert_decided_once(name, prefix, needle)
        self.assertNotEqual(self.sync_token(cal), token)
        self.assert_serving()

        # the sync moved on: a later change is decided as usual
        self.fg.host(CAL, op="delete", id=fine["id"])
        e = self.wait_audit("fine", 2)[1]
        self.assertEqual((e["action"], e["reason"]), ("cancel", "fine"))

        # one BOOKING_FLAGGED webhook per attack, and no second decision
        self.rx.wait(lambda ds: all(len(self.flags_for(n)) >= 1 for n in names), timeout=30)
        self.sync_and_wait(cal)      # a later sync decided nothing more ...
        self.outbox_drained()        # ... and every webhook is in
        for name in names:
            with self.subTest(attack=name):
                self.assertEqual(len(self.flags_for(name)), 1)
                self.assertEqual(len(self.audit(name)), 2)
                p = self.flags_for(name)[0].json["payload"]
                self.assertEqual((p["uid"], p["policy"]), (name, "attacks"))

        st, text, _ = self.svc.request("GET", "/metrics", raw=True)
        text = text.decode()
        kinds = {"runtime": 0, "instructions": 0}
        for _, prefix, _ in ATTACKS.values():
            kinds["runtime" if prefix == "policy error: " else "instructions"] += 1
        for kind, n in kinds.items():
            self.assertRegex(text, r'calsync_policy_errors_total\{policy="attacks",kind="%s"\} %d\b'
                             % (kind, n))
        self.assert_serving()
        self.assertEqual(self.svc.stop(), 0)

    def test_kill_9_in_the_middle_of_a_decision_does_not_wedge_the_restart(self):
        cal = self.boot(policy="attacks")
        ev = self.event(30, "compare")   # 2 s per decision: time to kill it
        self.book(cal, "compare", ev)
        self.wait_for(lambda: ev["id"] in self.mirror(cal), what="event mirrored")
        self.fg.host(CAL, op="delete", id=ev["id"])
        self.wait_for(lambda: "msg=\"deciding compare\"" in self.svc.log_text(),
                      what="the decision under way")
        self.svc.kill9()
        self.assertEqual(len(self.audit_db("compare")), 1)   # nothing committed

        self.svc.start()
        self.assert_serving()
        self.sync_now(cal)
        self.wait_audit("compare", 2, timeout=30)
        _, prefix, needle = ATTACKS["compare"]
        self.assert_decided_once("compare", prefix, needle)
        self.rx.wait(lambda ds: len(self.flags_for("compare")) >= 1, timeout=30)
        self.sync_and_wait(cal)      # a later sync decided nothing more ...
        self.outbox_drained()        # ... and every webhook is in
        self.assertEqual(len(self.flags_for("compare")), 1)
        self.assertEqual(len(self.audit("compare")), 2)
        # decided once after the restart, not once per restart: another
        # restart finds nothing left to decide
        self.assertEqual(self.svc.stop(), 0)
        self.svc.start()
        self.sync_and_wait(cal)      # a later sync decided nothing more ...
        self.outbox_drained()        # ... and every webhook is in
        self.assertEqual(len(self.audit("compare")), 2)
        self.assert_serving()
        self.assertEqual(self.svc.stop(), 0)

    def audit_db(self, uid):
        with self.svc.db() as con:
            return con.execute("SELECT action FROM audit WHERE booking_uid = ?",
                               (uid,)).fetchall()


if __name__ == "__main__":
    import unittest
    unittest.main()
