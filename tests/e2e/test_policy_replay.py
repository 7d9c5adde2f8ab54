"""Replayable decisions and shadow policies (issue 18 items 1 and 3; DESIGN
§2 "Replayable decisions", §3 `policy replay`, §5 shadow_policy): changes
made by a host in the fake Google are decided live under the default
policy, recorded with their complete inputs; `calsync policy replay`
re-decides them under another policy and reports exactly the decisions
whose action differs; a shadow policy decides every change beside the
live one, is recorded and counted, and is never applied or announced."""
import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BIN, UTC, future, rfc3339  # noqa: E402
from test_google_sync import CAL, timed  # noqa: E402
from test_reverse import ReverseCase  # noqa: E402


def soon(hours):
    """An instant `hours` from now, whole minutes (lead_time's 24 h window
    is measured from the decision's ctx.now, so these are relative to the
    clock, never to the calendar date)."""
    t = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=hours)
    return rfc3339(t)


def version_of(text):
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class ReplayCase(ReverseCase):
    def sources(self):
        """{(name, version): source} of the policy_sources table."""
        with self.svc.db() as con:
            return {(n, v): s for n, v, s in
                    con.execute("SELECT name, version, source FROM policy_sources")}

    def files(self):
        """{(name, version): source} of the policies directory now."""
        out = {}
        for f in os.listdir(self.svc.policies_dir):
            if f.endswith(".lua"):
                with open(os.path.join(self.svc.policies_dir, f)) as fh:
                    src = fh.read()
                out[(f[:-4], version_of(src))] = src
        return out

    def replay(self, *args, expect_rc=0):
        p = subprocess.run([BIN, "policy", "replay", "-c", self.svc.config_path] + list(args),
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, expect_rc, p.stdout + p.stderr)
        return p

    def replay_json(self, *args):
        return json.loads(self.replay(*(list(args) + ["--json"])).stdout)

    def series(self, cal):
        """Five bookings and one host change each, decided under the
        calendar's live policy; the uids whose last audit entry is that
        decision, in order."""
        far = timed(future(10, 10), future(10, 10, 30), summary="Far delete")
        near = timed(soon(3), soon(3.5), summary="Near delete")
        near_move = timed(soon(4), soon(4.5), summary="Near move")
        far_move = timed(future(11, 10), future(11, 10, 30), summary="Far move")
        retitle = timed(future(12, 10), future(12, 10, 30), summary="Retitle")
        ev = {}
        for uid, body in (("far", far), ("near", near), ("near-move", near_move),
                          ("far-move", far_move), ("retitle", retitle)):
            ev[uid] = self.fg.host(CAL, op="create", event=body)
            self.book(cal, uid, ev[uid])
        self.wait_for(lambda: ev["retitle"]["id"] in self.mirror(cal), what="events mirrored")
        self.fg.host(CAL, op="delete", id=ev["far"]["id"])
        self.fg.host(CAL, op="delete", id=ev["near"]["id"])
        self.fg.host(CAL, op="move", id=ev["near-move"]["id"], start=soon(5), end=soon(5.5))
        self.fg.host(CAL, op="move", id=ev["far-move"]["id"], start=future(11, 15),
                     end=future(11, 16))
        self.fg.host(CAL, op="retitle", id=ev["retitle"]["id"], summary="Renamed by host")
        for uid in ev:
            self.wait_audit(uid, 2)
        return ev


class TestReplay(ReplayCase):
    def test_replay_lead_time_differs_exactly_where_expected(self):
        cal = self.boot()
        self.series(cal)
        live = {uid: self.audit(uid)[1]["action"] for uid in
                ("far", "near", "near-move", "far-move", "retitle")}
        self.assertEqual(live, {"far": "cancel", "near": "cancel", "near-move": "reschedule",
                                "far-move": "reschedule", "retitle": "ignore"})

        # the live policy over its own decisions: none differ
        out = self.replay_json("default")
        self.assertEqual((out["replayed"], out["differ"], out["decisions"]), (5, 0, []))

        # lead_time (24 h): the two changes within a day of the start differ
        out = self.replay_json("lead_time")
        self.assertEqual((out["replayed"], out["differ"]), (5, 2), out)
        got = {d["booking"]: d for d in out["decisions"]}
        self.assertEqual(set(got), {"near", "near-move"})
        near = got["near"]
        self.assertEqual(set(near), {"decision_id", "at", "booking", "calendar_id", "change",
                                     "live", "candidate"})
        self.assertEqual((near["calendar_id"], near["change"]), (cal, "delete"))
        self.assertEqual(near["live"]["action"], "cancel")
        self.assertEqual(near["live"]["policy"], "default")
        self.assertRegex(near["live"]["policy_version"], r"^[0-9a-f]{12}$")
        self.assertEqual(near["candidate"]["action"], "flag")
        self.assertIn("review before cancelling", near["candidate"]["reason"])
        self.assertRegex(near["at"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
        mv = got["near-move"]
        self.assertEqual((mv["change"], mv["live"]["action"], mv["candidate"]["action"]),
                         ("time_change", "reschedule", "flag"))

        # a file as the candidate, the table output, the filters
        path = os.path.join(self.svc.policies_dir, "lead_time.lua")
        table = self.replay(path).stdout
        self.assertRegex(table.splitlines()[0],
                         r"^replayed 5 decision\(s\) under lead_time [0-9a-f]{12}: 2 differ$")
        self.assertEqual(len(table.splitlines()), 4, table)  # summary, header, two rows
        self.assertRegex(table, r"near\s+%d\s+delete\s+cancel \(default [0-9a-f]{12}\)\s+flag"
                         % cal)
        self.assertEqual(self.replay_json("lead_time", "--calendar", str(cal + 1))["replayed"], 0)
        self.assertEqual(self.replay_json("lead_time", "--since", "1h")["replayed"], 5)
        self.assertEqual(self.replay_json("lead_time", "--since", future(2))["replayed"], 0)

        # every live source is kept by version, the one that decided too
        self.assertEqual(self.sources(), self.files())
        self.assertIn(("default", near["live"]["policy_version"]), self.sources())

    def test_replay_is_the_same_after_the_live_policy_changes(self):
        # the recorded inputs, not today's state: a booking cancelled since,
        # and a policy whose file changed, replay as they were decided
        cal = self.boot()
        self.series(cal)
        before = self.replay_json("lead_time")
        kept = self.sources()
        with open(os.path.join(self.svc.policies_dir, "default.lua"), "a") as f:
            f.write("-- edited\n")
        st, body, _ = self.svc.request("POST", "/v1/policies/reload")
        self.assertEqual(st, 200, body)
        self.assertEqual(self.replay_json("lead_time"), before)
        # the new live version is kept beside the one that decided
        self.wait_for(lambda: len(self.sources()) == len(kept) + 1, what="new source kept")
        self.assertEqual(self.sources(), {**kept, **self.files()})

    def test_replay_errors(self):
        cal = self.boot()
        self.assertEqual(self.replay_json("default"),
                         {"replayed": 0, "differ": 0, "decisions": []})
        del cal
        bad = os.path.join(self.tmp, "bad.lua")
        with open(bad, "w") as f:
            f.write("return {\n")
        p = self.replay(bad, expect_rc=1)
        self.assertRegex(p.stderr, r"bad\.lua:\d+: ")
        self.replay("lead_time", "--since", "yesterday", expect_rc=2)
        self.replay("lead_time", "--calendar", "x", expect_rc=2)
        # a database that is not there is not created
        conf = os.path.join(self.tmp, "missing.conf.lua")
        with open(conf, "w") as f:
            f.write('database = "%s"\npolicies = "%s"\n'
                    % (os.path.join(self.tmp, "nope.db"), self.svc.policies_dir))
        p = subprocess.run([BIN, "policy", "replay", "-c", conf, "default"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("cannot read database", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "nope.db")))


def set_shadow(case, cal, policy):
    """PATCH /v1/calendars/{id} {"shadow_policy"} (DESIGN §4). On a base
    without that endpoint yet (the API branch adds it), the column the
    PATCH writes is set directly: the shadow is read per decision."""
    st, body, _ = case.svc.request("PATCH", "/v1/calendars/%d" % cal, {"shadow_policy": policy})
    if st == 200:
        case.assertEqual(body.get("shadow_policy"), policy, body)
        return
    case.assertIn(st, (404, 405), body)
    with case.svc.db() as con:
        con.execute("UPDATE calendars SET shadow_policy = ? WHERE id = ?", (policy, cal))


class TestShadow(ReplayCase):
    def test_shadow_decides_records_and_never_applies(self):
        cal = self.boot()
        set_shadow(self, cal, "lead_time")
        ev = self.series(cal)
        # live: the default policy's decisions were applied and announced
        self.assertEqual(self.booking("near")["status"], "cancelled")
        self.assertFalse(self.booking("near")["needs_review"])
        mv = self.booking("near-move")
        self.assertFalse(mv["needs_review"])
        self.assertNotEqual(mv["start"], ev["near-move"]["start"]["dateTime"])  # rescheduled
        # each decision's audit entry carries the shadow's decision
        shadows = {uid: self.audit(uid)[1] for uid in ev}
        for uid, e in shadows.items():
            self.assertEqual(e["policy"], "default")
            s = e["shadow"]
            self.assertEqual(set(s), {"policy", "policy_version", "action", "reason"})
            self.assertEqual(s["policy"], "lead_time")
            self.assertRegex(s["policy_version"], r"^[0-9a-f]{12}$")
        self.assertEqual({uid: e["shadow"]["action"] for uid, e in shadows.items()},
                         {"far": "cancel", "near": "flag", "near-move": "flag",
                          "far-move": "reschedule", "retitle": "ignore"})
        # the app's own creation is not a decision: no shadow there
        self.assertNotIn("shadow", self.audit("near")[0])
        # GET /v1/decisions carries the same shadow object (DESIGN §4)
        st, body, _ = self.svc.request("GET", "/v1/decisions?calendar_id=%d" % cal)
        self.assertEqual(st, 200, body)
        listed = {d["booking"]: d for d in body["decisions"]}
        for uid, e in shadows.items():
            self.assertEqual(listed[uid]["shadow"], e["shadow"], listed[uid])
        # never announced: webhooks are the live decisions' only
        self.outbox_drained()
        triggers = sorted(d.json["triggerEvent"] for d in self.rx.accepted())
        self.assertEqual(triggers, ["BOOKING_CANCELLED", "BOOKING_CANCELLED",
                                    "BOOKING_RESCHEDULED", "BOOKING_RESCHEDULED"])
        # counted per (policy, shadow), with HELP and TYPE
        st, text, _ = self.svc.request("GET", "/metrics", raw=True)
        text = text.decode()
        self.assertIn("# TYPE calsync_policy_shadow_decisions_total counter", text)
        self.assertIn("# HELP calsync_policy_shadow_decisions_total ", text)
        lbl = 'policy="default",shadow="lead_time"'
        self.assertRegex(text, r'calsync_policy_shadow_decisions_total\{%s,outcome="agree"\} 3\n'
                         % lbl)
        self.assertRegex(text, r'calsync_policy_shadow_decisions_total\{%s,'
                         r'outcome="disagree"\} 2\n' % lbl)
        # shadow decisions are not the live policy's decisions
        self.assertNotRegex(text, r'calsync_policy_decisions_total\{policy="lead_time"')
        # and the replay of the shadow agrees with what it recorded
        out = self.replay_json("lead_time")
        self.assertEqual({d["booking"] for d in out["decisions"]}, {"near", "near-move"})

    def test_removing_the_shadow_stops_it(self):
        cal = self.boot()
        set_shadow(self, cal, "lead_time")
        set_shadow(self, cal, None)
        e = self.fg.host(CAL, op="create", event=timed(future(10, 10), future(10, 10, 30)))
        self.book(cal, "x", e)
        self.wait_for(lambda: e["id"] in self.mirror(cal), what="event mirrored")
        self.fg.host(CAL, op="delete", id=e["id"])
        entry = self.wait_audit("x", 2)[1]
        self.assertEqual(entry["action"], "cancel")
        self.assertNotIn("shadow", entry)

