"""A full disk, end to end (issue 7; docs/reliability.md): the real binary
with its database on a filesystem that really runs out of space. While
writes fail, the service keeps answering: API writes get 503 with the
contract's error body and change nothing, /healthz is 503, reads and
/metrics answer as usual, a Google push notification gets a non-2xx (so
Google retries it) and is not half-recorded. When space returns, /healthz
is 200 again at the next check, writes succeed, nothing committed before the
disk filled is lost, and the forward and reverse paths work as before.

How the disk fills (the test prints which one ran):

- tmpfs: a small tmpfs mounted by the test holds the database, its -wal and
  -shm; a filler file takes every free block (ENOSPC), and deleting it is
  "space returns". Needs CAP_SYS_ADMIN (root on a normal machine or CI).
- fsize: where mount is not permitted, the service's RLIMIT_FSIZE is
  lowered to 1 byte with prlimit(2) (any write at an offset past it fails
  with EFBIG, which SQLite reports like a full disk), and raised back for
  recovery. The service ignores SIGXFSZ for this (src/service.c). The
  service's own log lines are lost while the limit holds (they are writes
  too).

CALSYNC_DISK_MECHANISM=tmpfs|fsize forces one (tmpfs then fails instead of
falling back). The full-disk scenario never skips: one of the two always
runs. Only TestReadOnlyAtStart needs mount (there is no unprivileged way to
make a filesystem read-only for root) and reports itself skipped, with the
reason, where mount is not permitted.
"""
import errno
import gc
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Calsync, future  # noqa: E402
from test_forward import BOOKING, ForwardCase  # noqa: E402
from test_google_sync import CAL, timed  # noqa: E402

MECHANISM = os.environ.get("CALSYNC_DISK_MECHANISM", "")
TMPFS_SIZE = 8 << 20      # room for the database and a WAL of a few hundred frames
HEALTH_WAIT = 10          # s: /healthz runs the probe write on every call


def say(msg):
    sys.stderr.write("\n[test_disk] %s\n" % msg)
    sys.stderr.flush()


class Tmpfs:
    """The database directory is a tmpfs of its own; fill() takes every
    free block with a filler file, free() deletes it."""
    name = "tmpfs"

    def __init__(self, case):
        self.dir = tempfile.mkdtemp(prefix="calsync-disk-")
        try:
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d,mode=0700" % TMPFS_SIZE,
                                "calsync-test", self.dir], capture_output=True, text=True)
            why = (r.stderr or r.stdout).strip()
        except OSError as e:                  # no mount(8) at all
            r, why = None, str(e)
        if not r or r.returncode != 0:
            os.rmdir(self.dir)
            raise PermissionError("mount -t tmpfs: " + why)
        case.addCleanup(self.cleanup)
        self.filler = os.path.join(self.dir, "filler")

    def cleanup(self):
        # The test's own sqlite3 handles (svc.db(): `with` commits but does
        # not close) keep the filesystem busy until collected.
        gc.collect()
        if subprocess.run(["umount", self.dir], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", self.dir], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def free_bytes(self):
        st = os.statvfs(self.dir)
        return st.f_bavail * st.f_frsize

    def fill(self, svc):
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for chunk in (1 << 20, 64 << 10, 4096, 1):
                data = b"\0" * chunk
                while True:
                    try:
                        os.write(fd, data)
                    except OSError as e:
                        if e.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        return "filler of %d bytes, %d bytes free" % (os.path.getsize(self.filler),
                                                      self.free_bytes())

    def free(self, svc):
        os.unlink(self.filler)
        return "%d bytes free" % self.free_bytes()


class FileSizeLimit:
    """No privilege: the service's RLIMIT_FSIZE (soft) is set to 1 byte."""
    name = "fsize"

    def __init__(self, case):
        self.dir = os.path.join(case.tmp, "db")
        os.makedirs(self.dir)

    def fill(self, svc):
        self.saved = resource.prlimit(svc.proc.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(svc.proc.pid, resource.RLIMIT_FSIZE, (1, self.saved[1]))
        return "RLIMIT_FSIZE of pid %d = 1 byte" % svc.proc.pid

    def free(self, svc):
        resource.prlimit(svc.proc.pid, resource.RLIMIT_FSIZE, self.saved)
        return "RLIMIT_FSIZE of pid %d back to %s" % (svc.proc.pid, self.saved)


def make_disk(case):
    if MECHANISM not in ("", "tmpfs", "fsize"):
        raise AssertionError("CALSYNC_DISK_MECHANISM must be tmpfs or fsize")
    if MECHANISM != "fsize":
        try:
            return Tmpfs(case)
        except PermissionError as e:
            if MECHANISM == "tmpfs":
                raise AssertionError("tmpfs forced but not available: %s" % e)
            say("mount not permitted (%s); falling back to RLIMIT_FSIZE" % e)
    return FileSizeLimit(case)


class DiskCase(ForwardCase):
    """The database lives in self.disk.dir, on the chosen mechanism."""

    def make_disk(self):
        return make_disk(self)

    def setUp(self):
        super().setUp()
        self.disk = self.make_disk()
        say("mechanism: %s (database in %s)" % (self.disk.name, self.disk.dir))

    def start(self, **kw):
        kw.setdefault("api_token", self.api_token)
        kw.setdefault("config_extra", self.config_extra)
        kw.setdefault("policies", self.policies)
        svc = Calsync(self.tmp, **kw)
        svc.db_path = os.path.join(self.disk.dir, "calsync.db")
        self.svc = svc.start()
        return self.svc

    # -- helpers ---------------------------------------------------------------

    def health(self):
        st, body, _ = self.svc.request("GET", "/healthz")
        return st, body

    def assert_alive(self):
        self.assertIsNone(self.svc.proc.poll(), "calsync exited:\n" + self.svc.log_text()[-3000:])

    def live_channel(self, cal):
        with self.svc.db() as con:
            return con.execute("SELECT id, token FROM channels WHERE calendar_id = ?"
                               " AND state = 'live'", (cal,)).fetchone()

    def push(self, channel, number):
        cid, token = channel
        return self.svc.request("POST", "/webhooks/google", b"", headers={
            "X-Goog-Channel-ID": cid, "X-Goog-Channel-Token": token,
            "X-Goog-Resource-State": "exists", "X-Goog-Message-Number": str(number),
            "X-Goog-Resource-ID": "r", "X-Goog-Resource-URI": "u"})

    def undelivered(self):
        with self.svc.db() as con:
            return con.execute("SELECT count(*) FROM outbox WHERE state != 'delivered'"
                               ).fetchone()[0]

    def notifications(self):
        with self.svc.db() as con:
            return con.execute("SELECT count(*) FROM notifications").fetchone()[0]


class TestFullDisk(DiskCase):
    def test_full_disk_then_space_returns(self):
        t0 = time.monotonic()
        cal = self.boot()
        channel = self.wait_for(lambda: self.live_channel(cal), what="a live channel")
        # state written before the disk fills: a booking synced to Google, one
        # linked to a host's event, an app change and a cancel
        self.create(cal, "before-1")
        self.written("before-1")
        host_ev = self.fg.host(CAL, op="create", event=timed(
            future(14, 10), future(14, 10, 30), summary="Host call"))
        self.book(cal, "before-2", host_ev)
        st, _, _ = self.svc.request("PATCH", "/v1/bookings/before-1", {"title": "Renamed"})
        self.assertEqual(st, 200)
        self.written("before-1")
        self.create(cal, "before-3")
        self.written("before-3")
        st, _, _ = self.svc.request("POST", "/v1/bookings/before-3/cancel", {"reason": "x"})
        self.assertEqual(st, 200)
        self.written("before-3")
        host_ev4 = self.fg.host(CAL, op="create", event=timed(
            future(15, 10), future(15, 10, 30), summary="Host call 4"))
        self.book(cal, "before-4", host_ev4)
        self.assertEqual(self.health()[0], 200)
        bookings_before = {uid: self.booking(uid)
                           for uid in ("before-1", "before-2", "before-3", "before-4")}
        # work in flight when the disk fills, whose result cannot be recorded:
        # a webhook the app acknowledges late (for the host's move of
        # before-4, applied and committed before the disk fills) and a Google
        # insert that answers late
        self.rx.delay = 2.5
        self.fg.host(CAL, op="move", id=host_ev4["id"], start=future(15, 16),
                     end=future(15, 16, 30))
        self.wait_for(lambda: self.booking("before-4")["start"] == future(15, 16),
                      what="the host's move of before-4")
        bookings_before["before-4"] = self.booking("before-4")
        self.wait_for(lambda: self.rx.arrived, what="the webhook of before-4 posted")
        self.fg.control("DELETE", "/requests")
        hold = self.fg.control("POST", "/faults", {"delay_ms": 4000, "count": 1,
                                                   "ops": ["events.insert"]})
        self.create(cal, "inflight")
        # the insert on its way (the fake holds it) before the disk fills:
        # the writer's claim is a write, and a disk full before it would
        # fail the claim instead (CI saw that once under load)
        self.wait_for(lambda: self.fault_hits(hold) >= 1, what="the insert held by Google")
        committed = self.svc.snapshot()

        # -- the disk fills ----------------------------------------------------------
        say("fill: " + self.disk.fill(self.svc))
        t_fill = time.monotonic()
        self.rx.delay = 0
        # an API write: 503 with the contract's error shape, nothing changed
        resp = self.svc.request("POST", "/v1/bookings", dict(BOOKING, uid="during", calendar_id=cal))
        say("POST /v1/bookings while full -> %s %s" % (resp[0], resp[1]))
        self.assertError(resp, 503, "unavailable")
        self.assertEqual(self.booking("during").get("error", {}).get("code"), "not_found")
        resp = self.svc.request("PATCH", "/v1/bookings/before-2", {"title": "nope"})
        say("PATCH /v1/bookings/before-2 while full -> %s %s" % (resp[0], resp[1]))
        self.assertError(resp, 503, "unavailable")
        resp = self.svc.request("POST", "/v1/bookings/before-2/cancel")
        self.assertError(resp, 503, "unavailable")
        # health: 503, database false, stays 503 while the disk is full
        for _ in range(3):
            st, body = self.health()
            self.assertEqual(st, 503, body)
            self.assertEqual((body["status"], body["database"]), ("unhealthy", False))
            time.sleep(0.2)
        say("GET /healthz while full -> %s %s" % (st, body))
        # reads answer
        st, b, _ = self.svc.request("GET", "/v1/bookings/before-1")
        self.assertEqual((st, b["title"]), (200, "Renamed"))
        st, b, _ = self.svc.request("GET", "/v1/bookings?calendar_id=%d" % cal)
        self.assertEqual(st, 200, b)
        self.assertEqual({x["uid"] for x in b["bookings"]}, set(bookings_before) | {"inflight"})
        st, b, _ = self.svc.request("GET", "/v1/bookings/before-1/audit")
        self.assertEqual(st, 200, b)
        st, text, _ = self.svc.request("GET", "/metrics", raw=True)
        self.assertEqual(st, 200)
        self.assertIn(b"calsync_http_requests_total", text)
        # a push notification: non-2xx, so Google delivers it again; not recorded
        n = self.notifications()
        st, body, _ = self.push(channel, 900)
        say("POST /webhooks/google while full -> %s %s" % (st, body))
        self.assertFalse(200 <= st < 300, (st, body))
        self.assertEqual(st, 503, body)
        self.assertEqual(self.notifications(), n)
        # a host edit in Google meanwhile (its push fails the same way)
        self.fg.host(CAL, op="move", id=host_ev["id"], start=future(14, 15),
                     end=future(14, 15, 30))
        # the late answers arrive and cannot be recorded; nothing is repeated
        # in a loop meanwhile (before the fix: about 14 Google calls and as
        # many duplicate webhooks a second, for as long as the disk was full)
        # first a positive sign that the insert reached Google (on a loaded
        # machine under ASan it may arrive seconds after the fill), then
        # 4.5 s of watching for a retry loop from that point on
        self.wait_for(lambda: "events.insert" in [r["op"] for r in self.requests()],
                      what="the in-flight insert reaching Google")
        t_seen = time.monotonic()
        time.sleep(max(0.0, max(t_fill, t_seen) + 4.5 - time.monotonic()))
        self.assert_alive()
        self.assertEqual(self.health()[0], 503)
        ops = [r["op"] for r in self.requests()]
        writes = [op for op in ops if op in ("events.insert", "events.get", "events.patch",
                                             "events.delete")]
        hooks = [d for d in self.rx.deliveries if d.json["payload"].get("uid") == "before-4"]
        say("while full for 4.5 s: Google calls %s, webhook posts %d (first answered %.1f s"
            " after the fill)" % (ops, len(hooks), hooks[0].at - t_fill if hooks else -1))
        self.assertEqual(writes[:1], ["events.insert"])   # it was in flight
        self.assertLessEqual(len(writes), 2, writes)
        self.assertTrue(hooks and hooks[0].at > t_fill, "the webhook was not in flight")
        self.assertLessEqual(len(hooks), 2)
        self.assertEqual(self.svc.snapshot(), committed)    # nothing half-applied

        # -- space returns -------------------------------------------------------------
        say("free: " + self.disk.free(self.svc))
        t_free = time.monotonic()
        st, body = self.wait_for(lambda: self.health()[0] == 200 and self.health(),
                                 HEALTH_WAIT, "/healthz 200 after space returned")
        say("GET /healthz after space returned -> %s %s (%.2f s)"
            % (st, body, time.monotonic() - t_free))
        # nothing committed before the disk filled is lost
        for uid, b in bookings_before.items():
            now = self.booking(uid)
            if uid == "before-2":      # the host's move may already be applied
                now = dict(now, start=b["start"], end=b["end"], updated_at=b["updated_at"])
            self.assertEqual(now, b, uid)
        # writes succeed again, and a new booking syncs to Google as usual
        b = self.create(cal, "after")
        say("POST /v1/bookings after recovery -> 201 write_state=%s" % b["write_state"])
        b = self.written("after")
        events = self.tagged("after")
        self.assertEqual([e["id"] for e in events], [b["event_id"]])
        self.assertEqual(events[0]["summary"], BOOKING["title"])
        # pushes are recorded again, and the host's move made while the disk
        # was full reaches the booking
        st, body, _ = self.push(channel, 901)
        self.assertEqual(st, 200, body)
        self.wait_for(lambda: self.booking("before-2")["start"] == future(14, 15),
                      what="the host's move made while the disk was full")
        self.assertEqual(len(self.tagged("before-1")), 1)
        self.assertEqual(self.tagged("before-3"), [])
        # the work in flight is completed: one event, the webhook acknowledged
        # (again, under its one delivery id: at least once)
        b = self.written("inflight")
        self.assertEqual([e["id"] for e in self.tagged("inflight")], [b["event_id"]])
        self.wait_for(lambda: self.hooks_for("before-4"), what="before-4's webhook acknowledged")
        self.assertEqual(len({d.id for d in self.rx.deliveries
                              if d.json["payload"].get("uid") == "before-4"}), 1)
        self.wait_for(lambda: self.undelivered() == 0, what="the outbox drained")
        self.assertEqual([d.json["triggerEvent"] for d in self.hooks_for("before-2")],
                         ["BOOKING_RESCHEDULED"])
        self.assert_alive()
        say("scenario took %.1f s" % (time.monotonic() - t0))


class TestReadOnlyAtStart(DiskCase):
    """A database on a filesystem that is read-only when calsync starts: it
    refuses to start, with a clear error, not a crash; once the filesystem
    is writable it starts with everything intact. (A filesystem cannot be
    remounted read-only under the running service: the kernel refuses,
    EBUSY, while files are open for writing; a database turning read-only
    at run time, e.g. errors=remount-ro, fails writes like the full disk
    above, which tests/unit/test_store.c covers with PRAGMA query_only.)"""

    def make_disk(self):
        try:
            return Tmpfs(self)
        except PermissionError as e:
            self.skipTest("a read-only filesystem needs mount: %s" % e)

    def remount(self, mode):
        for _ in range(50):                  # the test's own sqlite handles close lazily
            gc.collect()
            r = subprocess.run(["mount", "-o", "remount," + mode, self.disk.dir],
                               capture_output=True, text=True)
            if r.returncode == 0:
                return
            time.sleep(0.1)
        self.fail("mount -o remount,%s: %s" % (mode, r.stderr.strip()))

    def test_read_only_database_at_start(self):
        cal = self.boot()
        self.create(cal, "ro-a")
        before = self.written("ro-a")
        self.svc.stop()
        self.remount("ro")
        svc = Calsync(self.tmp, api_token=self.api_token, config_extra=self.config_extra,
                      policies=self.policies)
        svc.db_path = os.path.join(self.disk.dir, "calsync.db")
        with self.assertRaisesRegex(AssertionError, "exited 1 at start"):
            svc.start()
        svc.log.close()
        svc.check_sanitizers()
        self.assertRegex(svc.log_text(since_start=True),
                         r"event=service\.start_failed what=database err=.*Read-only file system")
        say("start on a read-only filesystem -> exit %s: %s"
            % (svc.proc.returncode, svc.log_text(since_start=True).strip().splitlines()[-1]))
        self.remount("rw")
        self.start()
        self.assertEqual(self.health()[0], 200)
        self.assertEqual(self.booking("ro-a"), before)
        self.create(cal, "ro-b")
        b = self.written("ro-b")
        self.assertEqual([e["id"] for e in self.tagged("ro-b")], [b["event_id"]])


if __name__ == "__main__":
    import unittest
    unittest.main()
