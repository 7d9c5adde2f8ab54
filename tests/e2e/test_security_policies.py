"""Issue 21, items 3 and 11, end to end: hostile policy files and hostile
decisions.

Item 3: a policy file that blocks on open (a FIFO) or on load (a top-level
C call that does not return) wedged POST /v1/policies/reload, then /healthz
and the intake (two HTTP threads), and SIGTERM. Now reloads run on a worker
thread; files are read without blocking, regular files only; a compile is
abandoned after its timeout. Each test measures how long the answers took.

Item 11: a decision whose action holds a NUL ("cancel\\0x") was read as
cancel; a flag's reason (and its webhook) carried the server's absolute
policy path.
"""
import os
import signal
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import CalsyncCase  # noqa: E402
from test_google_sync import CAL, timed  # noqa: E402
from test_reverse import ReverseCase  # noqa: E402

# one C call no instruction hook can interrupt: table.move over 2^53 nils
ENDLESS = "table.move({}, 1, 2^53, 2)\nreturn {}\n"
GOOD = "return { on_delete = function() return { action = 'ignore', reason = 'v2' } end }\n"
FIGURES = []  # (what, seconds): printed at the end for docs/reliability.md


def timed_call(fn):
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0


def note(what, secs):
    FIGURES.append((what, secs))


def tearDownModule():
    if FIGURES and os.environ.get("CALSYNC_FIGURES"):
        for what, secs in FIGURES:
            sys.stderr.write("figure: %-60s %.3f s\n" % (what, secs))


# What these tests guard against is a wait that never ends (a reload, a
# /healthz or a stop wedged behind a policy file), so each is bounded by a
# generous deadline, not a latency: the figures are printed (note()) and
# measured, not asserted. The two tighter bounds left below each separate
# two behaviours a few seconds apart (a 3 s compile timeout paid or not).
HANG = 20.0

class PolicyFileCase(CalsyncCase):
    def path(self, name):
        return os.path.join(self.svc.policies_dir if self.svc else
                            os.path.join(self.tmp, "policies"), name + ".lua")

    def reload(self, timeout=30):
        return timed_call(lambda: self.svc.request("POST", "/v1/policies/reload",
                                                   timeout=timeout))

    def healthz(self):
        return timed_call(lambda: self.svc.request("GET", "/healthz", timeout=5))

    def listing(self):
        st, b, _ = self.svc.request("GET", "/v1/policies")
        self.assertEqual(st, 200, b)
        return {p["name"]: p for p in b["policies"]}

    def stop_timed(self):
        (rc, secs) = timed_call(lambda: self.svc.stop(timeout=30))
        self.assertEqual(rc, 0)
        return secs


class TestBlockingFiles(PolicyFileCase):
    def test_fifo_fails_at_once_and_wedges_nothing(self):
        self.start()
        os.mkfifo(self.path("x"))
        (st, body, _), secs = self.reload()
        note("FIFO x.lua: POST /v1/policies/reload answered", secs)
        self.assertEqual(st, 422, body)
        self.assertLess(secs, HANG)
        errs = {e["name"]: e["error"] for e in body["error"]["errors"]}
        self.assertIn("x.lua:1: a FIFO, not a regular file", errs["x"])
        self.assertNotIn(self.svc.policies_dir, str(body))
        # the HTTP threads are free: /healthz answers (503: x has no live
        # version, which is the contract), twice in a row, and so does a
        # second reload
        for _ in range(2):
            (st, hb, _), secs = self.healthz()
            self.assertEqual(st, 503, hb)
            self.assertIs(hb["policies"], False)
            self.assertLess(secs, HANG)
        note("FIFO x.lua: GET /healthz answered", secs)
        (st, body, _), secs = self.reload()
        self.assertEqual(st, 422, body)
        self.assertLess(secs, HANG)
        self.assertIn("a FIFO", self.listing()["x"]["error"])
        self.assertIsNotNone(self.listing()["default"]["version"])
        secs = self.stop_timed()
        note("FIFO x.lua: SIGTERM to exit 0", secs)
        self.assertLess(secs, HANG)

    def test_fifo_and_friends_at_start(self):
        """Present before the service starts: the first load does not wait
        on them either. A symlink to a regular file is followed."""
        pol = os.path.join(self.tmp, "policies")
        os.makedirs(pol, exist_ok=True)
        os.mkfifo(os.path.join(pol, "x.lua"))
        os.mkdir(os.path.join(pol, "adir.lua"))
        os.symlink("/dev/zero", os.path.join(pol, "zero.lua"))
        with open(os.path.join(pol, "real-file"), "w") as f:
            f.write(GOOD)
        os.symlink(os.path.join(pol, "real-file"), os.path.join(pol, "linked.lua"))
        _, secs = timed_call(self.start)
        note("FIFO, directory, /dev/zero link at start: service started", secs)
        pols = self.listing()
        self.assertIn("a FIFO", pols["x"]["error"])
        self.assertIn("a directory", pols["adir"]["error"])
        self.assertIn("a character device", pols["zero"]["error"])
        self.assertIsNotNone(pols["linked"]["version"])
        self.assertNotIn("error", pols["linked"])
        (st, _, _), secs = self.healthz()
        self.assertEqual(st, 503)
        self.assertLess(secs, HANG)
        self.assertLess(self.stop_timed(), HANG)

    def test_endless_top_level_call(self):
        """A compile that never returns: the reload answers within the load
        timeout (3 s) plus a margin naming the file, /healthz answers while
        it runs, other files still reload, SIGTERM still exits 0."""
        self.start()
        with open(self.path("hang"), "w") as f:
            f.write(ENDLESS)
        answers = {}

        def probe():
            # while the reload waits on the compile: the other HTTP thread
            time.sleep(0.5)
            answers["healthz"] = self.healthz()
            answers["at"] = time.monotonic()
        th = threading.Thread(target=probe)
        th.start()
        (st, body, _), secs = self.reload()
        reload_at = time.monotonic()
        th.join()
        note("endless top-level call: POST /v1/policies/reload answered", secs)
        self.assertEqual(st, 422, body)
        self.assertLess(secs, HANG)
        errs = {e["name"]: e["error"] for e in body["error"]["errors"]}
        self.assertIn("hang", errs)
        self.assertTrue(errs["hang"].startswith("hang.lua:"), errs)
        timed_out = "did not finish within" in errs["hang"] or "still loading" in errs["hang"]
        (hst, _, _), hsecs = answers["healthz"]
        note("endless top-level call: GET /healthz during the reload", hsecs)
        self.assertIn(hst, (200, 503))
        if timed_out:
            # an outcome, not a latency: /healthz was answered while the
            # reload still waited on the compile
            self.assertLess(answers["at"], reload_at)
        if timed_out:
            # the same content is not compiled again: the next reload is quick
            (st, body, _), secs = self.reload()
            self.assertEqual(st, 422, body)
            note("endless top-level call: second reload answered", secs)
            self.assertLess(secs, 2.0)
        # another file still goes live through inotify alone
        t0 = time.monotonic()
        with open(self.path("fresh"), "w") as f:
            f.write(GOOD)
        while time.monotonic() - t0 < HANG and not self.listing().get("fresh", {}).get("version"):
            time.sleep(0.05)
        note("endless top-level call: a new good file live after", time.monotonic() - t0)
        self.assertTrue(self.listing().get("fresh", {}).get("version"), self.listing())
        secs = self.stop_timed()
        note("endless top-level call: SIGTERM to exit 0 (compile still running)", secs)
        self.assertLess(secs, HANG)

    def test_sighup_does_not_wait(self):
        """SIGHUP only asks the reload worker: a SIGTERM right after it is
        taken at once, even with a file that never finishes loading."""
        self.start()
        with open(self.path("hang"), "w") as f:
            f.write(ENDLESS)
        self.svc.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        (st, _, _), secs = self.healthz()
        self.assertLess(secs, HANG)
        secs = self.stop_timed()
        note("endless file, SIGHUP then SIGTERM: exit 0", secs)
        self.assertLess(secs, 2.0)   # the shutdown does not wait out the load timeout


def rfc3339(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


HOSTILE = """
return {
  on_delete = function(change, booking, ctx)
    return { action = "cancel\\0x", reason = "looks like cancel to C" }
  end,
  on_time_change = function(change, booking, ctx)
    error("boom")
  end,
}
"""


class TestHostileDecisions(ReverseCase):
    policies = {"hostile": HOSTILE}

    def test_nul_action_and_relative_paths(self):
        cal = self.boot(policy="hostile")
        base = datetime.now(timezone.utc).replace(microsecond=0, second=0, minute=0) \
            + timedelta(days=3)
        s1, e1 = rfc3339(base), rfc3339(base + timedelta(minutes=30))
        s2, e2 = rfc3339(base + timedelta(hours=2)), rfc3339(base + timedelta(hours=3))
        ev1 = self.fg.host(CAL, op="create", event=timed(s1, e1, summary="one"))
        ev2 = self.fg.host(CAL, op="create", event=timed(s2, e2, summary="two"))
        self.book(cal, "nul", ev1)
        self.book(cal, "err", ev2)
        self.wait_for(lambda: ev2["id"] in self.mirror(cal), what="mirrored")
        # deleted in Google: the policy answers "cancel\0x" -> flag, not cancel
        self.fg.host(CAL, op="delete", id=ev1["id"])
        e = self.wait_audit("nul", 2)[1]
        self.assertEqual(e["action"], "flag")
        self.assertEqual(e["reason"], "invalid decision: action holds a NUL byte")
        b = self.booking("nul")
        self.assertEqual(b["status"], "accepted")
        self.assertIs(b["needs_review"], True)
        # moved in Google: the hook raises -> flag whose reason names the
        # file relative to the policies directory
        ns, ne = rfc3339(base + timedelta(hours=5)), rfc3339(base + timedelta(hours=6))
        self.fg.host(CAL, op="move", id=ev2["id"], start=ns, end=ne)
        e = self.wait_audit("err", 2)[1]
        self.assertEqual(e["action"], "flag")
        self.assertRegex(e["reason"], r"^policy error: hostile\.lua:\d+: boom")
        hooks = self.rx.wait(lambda ds: len([d for d in ds if d.status == 200]) >= 2)
        flagged = [d.json for d in hooks if d.json["triggerEvent"] == "BOOKING_FLAGGED"]
        self.assertEqual({h["payload"]["uid"] for h in flagged}, {"nul", "err"})
        for h in flagged:
            text = str(h)
            self.assertNotIn(self.svc.policies_dir, text)
            self.assertNotIn(self.tmp, text)
            self.assertNotIn("/", h["payload"]["reason"])
        for uid in ("nul", "err"):
            for entry in self.audit(uid):
                self.assertNotIn(self.svc.policies_dir, str(entry))
        st, body, _ = self.svc.request("GET", "/v1/policies")
        self.assertNotIn(self.svc.policies_dir, str(body))


if __name__ == "__main__":
    import unittest
    unittest.main()
