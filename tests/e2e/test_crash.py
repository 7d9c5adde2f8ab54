"""Crash consistency (DESIGN §2 Guarantees "Exactly once", issue 7): kill -9
at named points (src/fault.c, docs/internals/fault.md), restart, and check
that the state converges to what the default policy must produce.

Each cycle: calsync is started with CALSYNC_FAULT=<point>:<n>; a host edit
in the fake Google (made while calsync was down, so the start-up sync
drives it) or an API call drives execution through the point; the process
must die by SIGKILL there (returncode -9, `event=fault.kill point=<point>`
in its log); it is restarted WITHOUT the fault and waited on until quiet
(a sync after the restart has completed, no pending outbox row, no pending
job). Then, for every booking of the scenario:

- the booking's state is what the default policy decides (cancel on
  delete, reschedule on move, ignore title changes);
- its audit trail is exactly the expected list of (change, action): no
  entry lost, none duplicated;
- every outbox row was delivered, each at least once, every attempt of one
  row under one X-Calsync-Delivery id with the same body, and no change got
  two webhooks (two rows for one decision);
- for forward writes: exactly one event in the fake carries the booking's
  calsync_booking_uid tag (listed with privateExtendedProperty), and it is
  the booking's event, at the booking's time (or cancelled).

A seed (CALSYNC_CRASH_SEED, default 7) shuffles the order of cycles in
the scenarios and picks the hit number where a point is hit more than once.
"""
import concurrent.futures
import http.client
import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import PG, day_at, future, id_time, instance_id, local, rfc3339  # noqa: E402
from test_google_sync import CAL, timed  # noqa: E402
from test_reverse import ReverseCase  # noqa: E402

SEED = int(os.environ.get("CALSYNC_CRASH_SEED", "7"))
SURVIVED = []          # (test, point) of every kill survived, for the summary


def tearDownModule():
    if SURVIVED:
        sys.stderr.write("\ntest_crash: %d kill points survived (%d distinct points), seed %d\n"
                         % (len(SURVIVED), len({p for _, p in SURVIVED}), SEED))


def day(n, hh="10"):
    """hh:00 UTC, n (>= 2) days after the run's first day: in the future,
    so that the default policy decides every change (not on_past)."""
    return future(n, int(hh))


class CrashCase(ReverseCase):
    def setUp(self):
        super().setUp()
        # pushes off (ReverseCase turned them on): the start-up sync and
        # explicit syncs drive these scenarios deterministically
        self.pushes(False)
        # a kill in the middle of a POST resets the receiver's connection:
        # expected here, not worth a traceback on stderr
        self.rx.server.handle_error = lambda request, address: None
        self.rng = random.Random("%s:%s" % (SEED, self.id()))
        self.expect_audit = {}     # uid -> [(change, action)]
        self.kills = 0

    def mirrored(self, cal, eid, timeout=20):
        """Syncs now (pushes are off) and waits until `eid` is mirrored."""
        self.sync_now(cal)
        self.wait_for(lambda: eid in self.mirror(cal), timeout, "%s mirrored" % eid)

    def pushes(self, on):
        self.fg.control("DELETE", "/notification_faults")
        if not on:
            self.fg.control("POST", "/notification_faults",
                            {"action": "drop", "count": 1000000, "state": "exists"})

    # -- process control -------------------------------------------------------

    def start_with(self, fault=None):
        """(Re)starts the same service (same port, database, config), with
        CALSYNC_FAULT set only for this process."""
        old = os.environ.pop("CALSYNC_FAULT", None)
        if fault:
            os.environ["CALSYNC_FAULT"] = fault
        try:
            if self.svc is None:
                self.start()
            else:
                self.svc.start()
        except AssertionError:
            # the point can be hit before the harness sees service.started
            # (the start-up sync races the log line): that is a kill too
            if not (fault and self.svc and self.svc.proc and
                    self.svc.proc.wait(10) == -9):
                raise
        finally:
            os.environ.pop("CALSYNC_FAULT", None)
            if old is not None:
                os.environ["CALSYNC_FAULT"] = old
        if PG and self.svc.proc and self.svc.proc.poll() is None:
            self.start_up_syncs()

    def start_up_syncs(self):
        """What the start-up poll does with SQLite. On a shared database a
        scheduled poll of a calendar that any instance (here: this one's
        previous run) synced within half a poll interval is skipped
        (scheduler.c, sched.poll_shared), so the host edits made while
        calsync was down are driven by an explicit sync request instead.
        The fault may kill the process before it answers."""
        with self.svc.db() as con:
            cals = [r[0] for r in con.execute("SELECT id FROM calendars").fetchall()]
        try:
            for cal in cals:
                self.svc.request("POST", "/v1/calendars/%d/sync" % cal)
        except (OSError, http.client.HTTPException):
            pass

    def wait_killed(self, point, timeout=60):
        proc = self.svc.proc
        try:
            rc = proc.wait(timeout)
        except Exception:
            self.fail("calsync did not die at %s:\n%s" % (point, self.svc.log_text()[-3000:]))
        self.assertEqual(rc, -9, "calsync exited %s, not by SIGKILL at %s" % (rc, point))
        self.svc.kill9()   # reaped already: closes the log
        self.assertIn("event=fault.kill point=%s " % point, self.svc.log_text(),
                      "died, but not at %s" % point)
        self.kills += 1
        SURVIVED.append((self.id().split(".")[-1], point))

    def cal_synced_at(self, cal):
        row = self.cal_row(cal)
        return row[2] if row else None

    def crash_cycle(self, point, n=1, before=None, drive=None, cal=None,
                    before_restart=None):
        """Stops the running service cleanly, runs `before` (calsync down),
        starts with the fault, runs `drive`, waits for the kill, restarts
        without the fault and waits until quiet."""
        if self.svc and self.svc.proc:
            self.svc.stop()
        if before:
            before()
        self.start_with("%s:%d" % (point, n))
        if drive:
            drive()
        self.wait_killed(point)
        after = self.cal_synced_at(cal) if cal else None
        if before_restart:
            before_restart()
        self.start_with(None)
        # unset, the variable arms nothing: the points are inert
        self.assertNotIn("event=fault.", self.svc.log_text(since_start=True))
        self.quiesce(cal, after)

    def quiesce(self, cal=None, after=None, timeout=30):
        if cal:
            self.wait_synced(cal, after, timeout)

        def quiet():
            with self.svc.db() as con:
                o = con.execute("SELECT count(*) FROM outbox WHERE state = 'pending'").fetchone()[0]
                j = con.execute("SELECT count(*) FROM jobs WHERE state = 'pending'").fetchone()[0]
            return o == 0 and j == 0
        self.wait_for(quiet, timeout, "no pending outbox rows or jobs")

    # -- expectations ----------------------------------------------------------

    def book(self, cal, uid, event, **kw):
        b = super().book(cal, uid, event, **kw)
        self.expect_audit[uid] = [tuple(e) for e in
                                  ((x["change"], x["action"]) for x in self.audit(uid))]
        return b

    def book_many(self, cal, items):
        """book() for many (uid, event) pairs: the POSTs four at a time (the
        API's threads), the audit trails read back in one query. On
        PostgreSQL each booking is a round trip per statement: one at a
        time, a thousand of them took minutes."""
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            for f in [pool.submit(ReverseCase.book, self, cal, uid, e) for uid, e in items]:
                f.result()
        trails = self.audit_all()
        for uid, _ in items:
            self.expect_audit[uid] = trails.get(uid, [])

    def audit_all(self):
        """{uid: [(change, action)]} of every booking, in the order the
        API lists a booking's audit (by id), read in one query."""
        out = {}
        with self.svc.db() as con:
            for uid, change, action in con.execute(
                    "SELECT booking_uid, change, action FROM audit ORDER BY id").fetchall():
                out.setdefault(uid, []).append((change, action))
        return out

    def expect(self, uid, change, action):
        self.expect_audit[uid].append((change, action))

    def check_audit(self):
        # every trail from the table, a sample (or all, when few) through
        # the API too: the same lists
        trails = self.audit_all()
        uids = sorted(self.expect_audit)
        sample = uids if len(uids) <= 16 else self.rng.sample(uids, 16)
        for uid in sample:
            got = [(e["change"], e["action"]) for e in self.audit(uid)]
            self.assertEqual(got, trails.get(uid, []), "audit of %s (API)" % uid)
        for uid, want in self.expect_audit.items():
            self.assertEqual(trails.get(uid, []), want, "audit of %s" % uid)
        with self.svc.db() as con:
            dup = con.execute(
                "SELECT booking_uid, change, action, count(*) FROM audit"
                " WHERE action != 'ignore'"   # an ignore leaves before == after
                " GROUP BY booking_uid, change, action, before, after"
                " HAVING count(*) > 1").fetchall()
        self.assertEqual(dup, [], "duplicate audit entries")

    def check_webhooks(self):
        with self.svc.db() as con:
            rows = con.execute("SELECT delivery_id, booking_uid, trigger, body, state"
                               " FROM outbox").fetchall()
        by_id = {r[0]: r for r in rows}
        for r in rows:
            self.assertEqual(r[4], "delivered", r)
        seen = {}
        for d in list(self.rx.deliveries):
            self.assertIn(d.id, by_id, "a delivery calsync has no row for")
            self.assertEqual(d.body.decode(), by_id[d.id][3],
                             "attempts of %s differ in body" % d.id)
            self.assertTrue(self.rx.signature_ok(d))
            if d.status == 200:
                seen[d.id] = seen.get(d.id, 0) + 1
        for r in rows:
            self.assertGreaterEqual(seen.get(r[0], 0), 1, "never acknowledged: %s" % (r,))
        # one decision, one webhook: no two rows announce the same change
        keys = {}
        for r in rows:
            p = json.loads(r[3])["payload"]
            k = (r[1], r[2], p.get("startTime"), p.get("endTime"), p.get("status"),
                 json.dumps(p.get("previous"), sort_keys=True))
            self.assertNotIn(k, keys, "two webhooks for one change: %s and %s"
                             % (keys.get(k), r[0]))
            keys[k] = r[0]
        return rows

    def hooks(self, uid, trigger=None):
        """Webhook rows (one per decision) for a booking."""
        with self.svc.db() as con:
            rows = con.execute("SELECT delivery_id, trigger FROM outbox WHERE booking_uid = ?",
                               (uid,)).fetchall()
        return [r for r in rows if trigger is None or r[1] == trigger]

    def tagged(self, uid):
        tok = self.fg.access_token("listing-only")
        st, b, _ = self.fg.api("GET", "/calendars/%s/events" % CAL, token=tok,
                               query={"privateExtendedProperty": "calsync_booking_uid=" + uid,
                                      "showDeleted": "true", "maxResults": "2500"})
        self.assertEqual(st, 200, b)
        return b.get("items", [])

    def check_all(self):
        self.check_audit()
        self.check_webhooks()


class TestReverseApplyCrash(CrashCase):
    """Kill points inside the page transaction (apply, sync): the host's
    edit is made while calsync is down, the start-up sync applies it and
    dies mid-transaction or right after the commit; the restarted service
    applies each change exactly once."""

    def test_apply_and_page_points(self):
        cal = self.boot()
        evs = {}
        for i in range(1, 14):
            evs[i] = self.fg.host(CAL, op="create", event=timed(day(i + 1), day(i + 1, "11"),
                                                                summary="Call %d" % i))
        for i, e in evs.items():
            self.book(cal, "b%d" % i, e)
        self.mirrored(cal, evs[13]["id"])

        def delete(i):
            return lambda: self.fg.host(CAL, op="delete", id=evs[i]["id"])

        def move(i):
            return lambda: self.fg.host(CAL, op="move", id=evs[i]["id"],
                                        start=day(i + 1, "15"), end=day(i + 1, "16"))

        cycles = [
            ("apply_after_audit", 1, delete(1), [("b1", "delete", "cancel")]),
            ("apply_after_booking_save", 1, move(2), [("b2", "time_change", "reschedule")]),
            ("apply_after_outbox_enqueue", 1, delete(3), [("b3", "delete", "cancel")]),
            ("sync_batch_before_commit", 1, move(4), [("b4", "time_change", "reschedule")]),
            ("sync_last_page_after_commit", 1, delete(5), [("b5", "delete", "cancel")]),
            ("apply_after_audit", 1,
             lambda: self.fg.host(CAL, op="retitle", id=evs[6]["id"], summary="Renamed"),
             [("b6", "title_change", "ignore")]),
            ("apply_after_audit", 2, lambda: (delete(7)(), move(8)()),
             [("b7", "delete", "cancel"), ("b8", "time_change", "reschedule")]),
            ("apply_after_outbox_enqueue", 2, lambda: (move(9)(), delete(10)()),
             [("b9", "time_change", "reschedule"), ("b10", "delete", "cancel")]),
            # decided with no transaction open, nothing written yet
            ("sync_after_decide", 1, lambda: (delete(12)(), move(13)()),
             [("b12", "delete", "cancel"), ("b13", "time_change", "reschedule")]),
        ]
        self.rng.shuffle(cycles)
        for point, n, host_edit, effects in cycles:
            self.crash_cycle(point, n, before=host_edit, cal=cal)
            for uid, change, action in effects:
                self.expect(uid, change, action)
            self.check_all()
        # the final state of every booking, as the default policy decides
        for i in (1, 3, 5, 7, 10, 12):
            b = self.booking("b%d" % i)
            self.assertEqual((b["status"], b["cancelled_by"]), ("cancelled", "google"), i)
            self.assertEqual(len(self.hooks("b%d" % i, "BOOKING_CANCELLED")), 1, i)
        for i in (2, 4, 8, 9, 13):
            b = self.booking("b%d" % i)
            self.assertEqual((b["status"], b["start"], b["end"]),
                             ("accepted", day(i + 1, "15"), day(i + 1, "16")), i)
            self.assertEqual(len(self.hooks("b%d" % i, "BOOKING_RESCHEDULED")), 1, i)
        self.assertEqual(self.booking("b6")["title"], "Call 6")
        self.assertEqual(self.hooks("b6"), [])
        self.assertEqual(self.booking("b11")["status"], "accepted")
        self.assertEqual(len(self.audit("b11")), 1)
        self.assertEqual(self.kills, len(cycles))

    def test_full_resync_and_cascade_points(self):
        cal = self.boot()
        keep = self.fg.host(CAL, op="create", event=timed(day(3), day(3, "11"), summary="keep"))
        gone = self.fg.host(CAL, op="create", event=timed(day(4), day(4, "11"), summary="gone"))
        master = self.fg.host(CAL, op="create", event=dict(
            timed(local(14, 9), local(14, 9, 30), tz="Europe/Berlin"),
            summary="Standup", recurrence=["RRULE:FREQ=DAILY;COUNT=4"]))
        self.book(cal, "keep", keep)
        self.book(cal, "gone", gone)
        for i, d in enumerate((14, 15)):   # 09:00 in Berlin, as UTC
            start = rfc3339(day_at(d, 9, tz="Europe/Berlin"))
            end = rfc3339(day_at(d, 9, 30, tz="Europe/Berlin"))
            self.book(cal, "occ%d" % i, {"id": master["id"], "summary": "Standup",
                                         "start": {"dateTime": start},
                                         "end": {"dateTime": end}},
                      original_start=start)
        self.mirrored(cal, gone["id"])

        # 410: the token is dropped, then the process dies; the restart must
        # still run a full listing and find the deletion, once
        def expire_and_delete():
            self.fg.host(CAL, op="delete", id=gone["id"])
            self.fg.control("POST", "/invalidate_sync_tokens", {})
        self.crash_cycle("sync_after_token_drop", 1, before=expire_and_delete, cal=cal)
        self.expect("gone", "delete", "cancel")
        self.check_all()
        e = self.audit("gone")[-1]
        self.assertEqual(e["source"], "full_sync")
        self.assertEqual(self.booking("gone")["status"], "cancelled")

        # a whole series deleted: its occurrences are reported one by one
        # inside the page transaction; die after the second report
        self.crash_cycle("sync_after_deleted_reported", 2,
                         before=lambda: self.fg.host(CAL, op="delete", id=master["id"]), cal=cal)
        self.expect("occ0", "delete", "cancel")
        self.expect("occ1", "delete", "cancel")
        self.check_all()
        for uid in ("occ0", "occ1"):
            self.assertEqual(self.booking(uid)["status"], "cancelled")
            self.assertEqual(len(self.hooks(uid)), 1)
        self.assertEqual(self.booking("keep")["status"], "accepted")
        self.assertEqual(self.hooks("keep"), [])


class TestSplitCrash(CrashCase):
    """"This and following" splits (docs/internals/apply.md "Splits"): the
    bookings on occurrences after the split are re-linked to the new series
    and decided in the last page's transaction. Killed while re-linking, or
    after the first page of a split spread over several pages, the restart
    reads the whole listing again and decides each booking exactly once."""

    def occ(self, series, d, hh):
        return {"id": series, "summary": "Standup",
                "start": {"dateTime": future(d, int(hh))},
                "end": {"dateTime": future(d, int(hh), 30)}}

    def split(self, series, d, hh, new_hh, new_id=None):
        body = {"op": "split", "series": series,
                "original_start": future(d, int(hh)),
                "event": {"start": {"dateTime": future(d, int(new_hh))},
                          "end": {"dateTime": future(d, int(new_hh), 30)}}}
        if new_id:
            body["new_id"] = new_id
        return self.fg.host(CAL, **body)

    def test_relink_points(self):
        cal = self.boot()
        master = self.fg.host(CAL, op="create", event=dict(
            timed(future(7, 8), future(7, 8, 30), tz="UTC"),
            summary="Standup", recurrence=["RRULE:FREQ=DAILY;COUNT=10"]))
        for d in range(7, 17):
            self.book(cal, "s%d" % d, self.occ(master["id"], d, "08"),
                      original_start=future(d, 8))
        self.mirrored(cal, instance_id(master["id"], future(16, 8)))
        a = "e5srrkr361upjc2be22u6ti4pe"
        # a time change from the 9th, new random id: killed after the 2nd re-link
        self.crash_cycle("sync_after_relink", 2, cal=cal,
                         before=lambda: self.split(master["id"], 9, "08", "07", new_id=a))
        for d in range(9, 17):
            self.expect("s%d" % d, "time_change", "reschedule")
        self.check_all()
        # the new series split again from the 12th (`_R` id): killed after
        # the first booking's references moved, before its decision
        self.crash_cycle("apply_after_relink_refs", 1, cal=cal,
                         before=lambda: self.split(a, 12, "07", "06"))
        for d in range(12, 17):
            self.expect("s%d" % d, "time_change", "reschedule")
        self.check_all()
        # "delete this and following" on the newest series: cancelled
        r = a + "_R" + id_time(future(12, 7))[:-1]     # Google's `_R` + the split's start
        self.crash_cycle("sync_after_deleted_reported", 1, cal=cal,
                         before=lambda: self.fg.host(CAL, op="truncate", series=r,
                                                     original_start=future(15, 6)))
        for d in (15, 16):
            self.expect("s%d" % d, "delete", "cancel")
        self.check_all()
        for d in range(7, 17):
            b = self.booking("s%d" % d)
            hh = "08" if d < 9 else "07" if d < 12 else "06"
            series = master["id"] if d < 9 else a if d < 12 else r
            self.assertEqual((b["start"], b["event_id"], b["original_start"]),
                             (future(d, int(hh)), series, future(d, int(hh))), d)
            self.assertEqual(b["status"], "cancelled" if d >= 15 else "accepted", d)
            n = (d >= 9) + (d >= 12)
            self.assertEqual(len(self.hooks("s%d" % d, "BOOKING_RESCHEDULED")), n, d)
        self.assertEqual(self.kills, 3)

    def test_kill_between_pages_of_a_split(self):
        # ~2700 occurrences: the split's listing (old series re-sent, stubs
        # for what it lost, the new series) spans three pages, the new series
        # after the first; killed after the first page's commit
        self.fg.control("POST", "/config", {"expand_days": 2700, "max_instances": 3000})
        cal = self.boot()
        master = self.fg.host(CAL, op="create", event=dict(
            timed(future(2, 9), future(2, 9, 30), tz="UTC"),
            summary="Daily", recurrence=["RRULE:FREQ=DAILY"]))
        # days of the series: before the split, after it, and on its last page
        days = [2 + 4, 2 + 19, 2 + 2374]
        for i, d in enumerate(days):
            self.book(cal, "p%d" % i, {"id": master["id"], "summary": "Daily",
                                       "start": {"dateTime": future(d, 9)},
                                       "end": {"dateTime": future(d, 9, 30)}},
                      original_start=future(d, 9))
        self.mirrored(cal, instance_id(master["id"], future(days[2], 9)), timeout=120)
        if self.svc.proc:
            self.svc.stop()
        self.fg.host(CAL, op="split", series=master["id"], original_start=future(2 + 9, 9),
                     new_id="k1g3n2q8random0split0id00",
                     event={"start": {"dateTime": future(2 + 9, 10)},
                            "end": {"dateTime": future(2 + 9, 10, 30)}})
        self.start_with("sync_page_after_commit:1")
        self.wait_killed("sync_page_after_commit", timeout=120)
        with self.svc.db() as con:
            self.assertEqual(con.execute("SELECT count(*) FROM audit WHERE change != 'create'"
                                         " AND booking_uid LIKE 'p%'").fetchone()[0], 0)
        after = self.cal_synced_at(cal)
        self.start_with(None)
        self.quiesce(cal, after, timeout=120)
        for uid in ("p1", "p2"):
            self.expect(uid, "time_change", "reschedule")
            self.assertEqual(len(self.hooks(uid)), 1)
            self.assertEqual(self.booking(uid)["event_id"], "k1g3n2q8random0split0id00")
        self.assertEqual(self.booking("p1")["start"], future(days[1], 10))
        self.assertEqual(self.booking("p2")["start"], future(days[2], 10))
        self.assertEqual(self.booking("p0")["start"], future(days[0], 9))
        self.check_all()


class TestMultiPageCrash(CrashCase):
    """A sync of more than one page (Google pages at 2500 items): each page
    commits on its own and the sync token comes with the last one. Killed
    between two pages, the restart lists again from the old token; the
    first page's changes are already in the mirror and are not decided
    twice, the second page's are decided once."""

    def test_kill_between_pages(self):
        # a daily series expanded ~2700 times: two pages per listing
        self.fg.control("POST", "/config", {"expand_days": 2700, "max_instances": 3000})
        cal = self.boot()
        master = self.fg.host(CAL, op="create", event=dict(
            timed(local(2, 9), local(2, 9, 30), tz="UTC"),
            summary="Daily", recurrence=["RRULE:FREQ=DAILY"]))
        # an occurrence on the first page and one on the second
        early, late = 2 + 4, 2 + 2600
        for uid, d in (("early", early), ("late", late)):
            self.book(cal, uid, {"id": master["id"], "summary": "Daily",
                                 "start": {"dateTime": future(d, 9)},
                                 "end": {"dateTime": future(d, 9, 30)}},
                      original_start=future(d, 9))
        late_id = instance_id(master["id"], future(late, 9))
        self.mirrored(cal, late_id, timeout=120)   # ~4 s alone, far more under ASan and load

        def host_edits():
            self.fg.host(CAL, op="delete", id=instance_id(master["id"], future(early, 9)))
            self.fg.host(CAL, op="delete", id=late_id)
        if self.svc.proc:
            self.svc.stop()
        host_edits()
        self.start_with("sync_page_after_commit:1")
        self.wait_killed("sync_page_after_commit", timeout=120)
        # the kill came between the pages: exactly one change is committed
        with self.svc.db() as con:
            done = con.execute("SELECT uid FROM bookings WHERE status = 'cancelled'").fetchall()
        self.assertEqual(len(done), 1, done)
        after = self.cal_synced_at(cal)
        self.start_with(None)
        self.quiesce(cal, after, timeout=120)
        for uid in ("early", "late"):
            self.expect(uid, "delete", "cancel")
            self.assertEqual(self.booking(uid)["status"], "cancelled")
            self.assertEqual(len(self.hooks(uid)), 1)
        self.check_all()


class TestBatchCrash(CrashCase):
    """A page of more changes than one apply transaction takes
    (SYNC_APPLY_BATCH units or SYNC_APPLY_BATCH_MS, docs/internals/sync.md
    "Decide, then apply"): killed after the first batch committed, part of
    the page is applied; the restart reads the page again from the old
    token, skips what is in the mirror and applies the rest, each change
    once. N is more than SYNC_APPLY_BATCH (1,024), so the page is split
    whatever the machine's speed."""
    N = 1100

    def setUp(self):
        super().setUp()
        # request budgets off: each booking's link check is a Google call,
        # and 1,100 of them would wait out the 600/min credential budget
        # (about a minute) -- not what this scenario is about
        self.config_extra = self.config_extra.replace(
            'client_secret = "y" }', 'client_secret = "y", requests_per_minute = 0 }')
        self.assertIn("requests_per_minute = 0", self.config_extra)

    def slot(self, i, shift=0):
        """Event i: two days ahead (relative to now, never past), hourly."""
        s = self.base + i * 3600 + shift
        return (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s)),
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(s + 1800)))

    def test_kill_between_batches(self):
        self.base = (int(time.time()) // 3600 + 48) * 3600
        cal = self.boot()
        ops = [{"op": "create", "event": dict(timed(*self.slot(i)), id="batch%04d" % i,
                                              summary="B%d" % i)}
               for i in range(self.N)]
        evs = self.fg.control("POST", "/events/%s/bulk" % CAL, {"ops": ops})["events"]
        self.book_many(cal, [("m%d" % i, e) for i, e in enumerate(evs)])
        self.mirrored(cal, evs[-1]["id"])
        if self.svc.proc:
            self.svc.stop()
        self.fg.control("POST", "/events/%s/bulk" % CAL, {"ops": [
            {"op": "move", "id": e["id"], "start": self.slot(i, 1800)[0],
             "end": self.slot(i, 1800)[1]} for i, e in enumerate(evs)]})
        self.start_with("sync_batch_after_commit:1")
        self.wait_killed("sync_batch_after_commit")
        with self.svc.db() as con:
            done = con.execute("SELECT count(*) FROM audit WHERE change = 'time_change'").fetchone()[0]
        self.assertTrue(0 < done < self.N, done)   # killed in the middle of the page
        after = self.cal_synced_at(cal)
        self.start_with(None)
        self.quiesce(cal, after, timeout=60)
        for i in range(self.N):
            self.expect("m%d" % i, "time_change", "reschedule")
        self.check_all()
        for i in (0, 1, self.N // 2, self.N - 1):
            self.assertEqual(self.booking("m%d" % i)["start"], self.slot(i, 1800)[0], i)


class TestSeededKills(CrashCase):
    """Random but seeded rounds (CALSYNC_CRASH_SEED): a random host edit
    made while calsync is down, a random kill point on the path it drives,
    and in some rounds a second kill during the recovery itself."""
    ROUNDS = 6
    IN_TX = ["sync_batch_before_commit", "apply_after_audit",
             "apply_after_booking_save", "apply_after_outbox_enqueue",
             "sync_after_decide"]
    AFTER = ["sync_last_page_after_commit", "outbox_after_post_ok",
             "outbox_after_post_error", "outbox_after_record"]

    def test_seeded_rounds(self):
        cal = self.boot()
        live = {}
        for i in range(8):
            e = self.fg.host(CAL, op="create", event=timed(day(i + 2), day(i + 2, "11")))
            self.book(cal, "s%d" % i, e)
            live["s%d" % i] = (e["id"], i + 2)
        self.mirrored(cal, live["s7"][0])
        want = {uid: {"status": "accepted", "start": day(d)} for uid, (_, d) in live.items()}
        for rnd in range(self.ROUNDS):
            uid = self.rng.choice(sorted(live))
            eid, d = live[uid]
            what = self.rng.choice(["delete", "move", "retitle"])
            if what == "retitle":     # ignored: audit only, no webhook
                first = self.rng.choice(self.IN_TX)
                second = self.rng.choice(self.IN_TX + [None])
            else:
                first = self.rng.choice(self.IN_TX + self.AFTER)
                second = (self.rng.choice(self.IN_TX + ["outbox_after_post_ok"])
                          if first in self.IN_TX else None)
                if first == "outbox_after_post_error":
                    second = None

            def edit(uid=uid, eid=eid, d=d, what=what, rnd=rnd, first=first):
                if first == "outbox_after_post_error":
                    self.rx.fail_next = 1
                if what == "delete":
                    self.fg.host(CAL, op="delete", id=eid)
                elif what == "move":
                    self.fg.host(CAL, op="move", id=eid, start=day(d, "%02d" % (12 + rnd)),
                                 end=day(d, "%02d" % (13 + rnd)))
                else:
                    self.fg.host(CAL, op="retitle", id=eid, summary="Renamed %d" % rnd)
            if self.svc.proc:
                self.svc.stop()
            edit()
            self.start_with("%s:1" % first)
            self.wait_killed(first)
            if second:   # killed again while recovering from the first kill
                self.start_with("%s:1" % second)
                self.wait_killed(second)
            after = self.cal_synced_at(cal)
            self.start_with(None)
            self.quiesce(cal, after)
            if what == "delete":
                self.expect(uid, "delete", "cancel")
                want[uid]["status"] = "cancelled"
                del live[uid]
            elif what == "move":
                self.expect(uid, "time_change", "reschedule")
                want[uid]["start"] = day(d, "%02d" % (12 + rnd))
            else:
                self.expect(uid, "title_change", "ignore")
            self.check_all()
            for u, w in want.items():
                b = self.booking(u)
                self.assertEqual({"status": b["status"], "start": b["start"]}, w,
                                 "round %d (%s %s at %s then %s)" % (rnd, what, uid, first, second))


class TestOutboxCrash(CrashCase):
    """Kill points around a webhook POST: the booking app gets every
    webhook at least once, every attempt under one delivery id."""

    def test_delivery_points(self):
        cal = self.boot()
        evs = [self.fg.host(CAL, op="create", event=timed(day(i + 2), day(i + 2, "11")))
               for i in range(4)]
        for i, e in enumerate(evs):
            self.book(cal, "w%d" % i, e)
        self.mirrored(cal, evs[-1]["id"])

        def fail_once():
            self.rx.fail_next = 1
            self.fg.host(CAL, op="delete", id=evs[2]["id"])
        cycles = [
            ("outbox_after_post_ok", lambda: self.fg.host(CAL, op="delete", id=evs[0]["id"]),
             "w0", "delete", "cancel"),
            ("outbox_after_record", lambda: self.fg.host(
                CAL, op="move", id=evs[1]["id"], start=day(3, "14"), end=day(3, "15")),
             "w1", "time_change", "reschedule"),
            ("outbox_after_post_error", fail_once, "w2", "delete", "cancel"),
        ]
        self.rng.shuffle(cycles)
        for point, host_edit, uid, change, action in cycles:
            self.crash_cycle(point, 1, before=host_edit, cal=cal)
            self.expect(uid, change, action)
            rows = self.check_webhooks()
            self.check_audit()
            mine = [r for r in rows if r[1] == uid]
            self.assertEqual(len(mine), 1, mine)
            attempts = [d for d in self.rx.deliveries if d.id == mine[0][0]]
            if point == "outbox_after_record":
                self.assertEqual(len(attempts), 1)
            else:   # the attempt before the kill, and the one after it
                self.assertGreaterEqual(len(attempts), 2, point)
        self.assertEqual(self.booking("w1")["start"], day(3, "14"))
        self.assertEqual(self.booking("w3")["status"], "accepted")


class TestWriterCrash(CrashCase):
    """Kill points of forward writes: the job stays pending until its
    result is committed, and an insert Google accepted is adopted (its event
    id derives from the uid: the retry gets 409), never inserted twice."""

    def create(self, cal, uid, start, end):
        """POST /v1/bookings; a kill racing the answer is tolerated (the
        booking and its job were committed before the writer ran)."""
        self.expect_audit[uid] = [("create", "create")]
        try:
            st, b, _ = self.svc.request("POST", "/v1/bookings", {
                "uid": uid, "calendar_id": cal, "title": "Meet " + uid,
                "start": start, "end": end})
        except (ConnectionError, http.client.HTTPException):
            return
        self.assertEqual(st, 201, b)

    def assert_one_event(self, uid, status="confirmed"):
        items = self.tagged(uid)
        self.assertEqual(len(items), 1, "events tagged %s: %s" % (uid, [i["id"] for i in items]))
        ev = items[0]
        self.assertEqual(ev.get("status"), status)
        b = self.booking(uid)
        self.assertEqual(b["event_id"], ev["id"])
        return ev, b

    def api_cycle(self, cal, point, call, n=1, before_restart=None):
        def drive():
            try:
                call()
            except (ConnectionError, http.client.HTTPException):
                # the writer can hit the point (the API's transaction has
                # committed and kicked it) before the answer is written
                pass
        self.crash_cycle(point, n, drive=drive, cal=cal, before_restart=before_restart)

    def test_forward_write_points(self):
        cal = self.boot()
        # insert: Google accepted, the local commit never happened
        self.api_cycle(cal, "writer_after_insert",
                       lambda: self.create(cal, "f1", day(20), day(20, "11")))
        ev, b = self.assert_one_event("f1")
        self.assertEqual(b["start"], day(20))
        # insert, killed again while adopting the left-over event
        if self.svc.proc:
            self.svc.stop()
        self.start_with("writer_after_insert:1")
        self.create(cal, "f2", day(21), day(21, "11"))
        self.wait_killed("writer_after_insert")
        self.start_with("writer_after_adopt:1")
        self.wait_killed("writer_after_adopt")
        after = self.cal_synced_at(cal)
        self.start_with(None)
        self.quiesce(cal, after)
        self.assert_one_event("f2")
        # insert, killed after the commit
        self.api_cycle(cal, "writer_after_commit",
                       lambda: self.create(cal, "f3", day(22), day(22, "11")))
        self.assert_one_event("f3")

        # patch: Google accepted the new time, the local commit never happened
        def patch():
            st, b, _ = self.svc.request("PATCH", "/v1/bookings/f1",
                                        {"start": day(20, "13"), "end": day(20, "14")})
            self.assertEqual(st, 200, b)
        # the retried job must run before the start-up sync reads the
        # event back: the mirror then still holds the old version
        slow_list = lambda: self.fg.control("POST", "/faults", {
            "delay_ms": 2500, "ops": ["events.list"], "count": 1})
        self.api_cycle(cal, "writer_after_patch", patch, before_restart=slow_list)
        self.expect("f1", "time_change", "reschedule")
        ev, b = self.assert_one_event("f1")
        self.assertEqual((b["start"], b["end"], b["status"]),
                         (day(20, "13"), day(20, "14"), "accepted"))
        self.assertEqual(self.google_instant(ev["start"]), day(20, "13"))

        # delete: Google deleted the event, the local commit never happened
        def cancel():
            st, b, _ = self.svc.request("POST", "/v1/bookings/f3/cancel", {"reason": "app"})
            self.assertEqual(st, 200, b)
        self.api_cycle(cal, "writer_after_delete", cancel)
        self.expect("f3", "cancel", "cancel")
        self.assert_one_event("f3", status="cancelled")
        self.assertEqual(self.booking("f3")["status"], "cancelled")
        self.assertEqual(self.booking("f3")["cancelled_by"], "app")

        self.check_all()
        # changes the app made are never announced back to it
        self.assertEqual([r for r in self.check_webhooks() if r[1] in ("f1", "f2", "f3")], [])
        # nothing recorded a conflict: calsync's own write is not the host's
        for uid in ("f1", "f2", "f3"):
            self.assertNotIn("conflict", [e["change"] for e in self.audit(uid)], uid)

    def google_instant(self, t):
        from datetime import datetime, timezone
        d = datetime.fromisoformat(t["dateTime"].replace("Z", "+00:00"))
        return d.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class TestIntakeCrash(CrashCase):
    """Kill points in the notification intake: a push journalled but not
    answered (Google does not retry it here), or journalled and not yet
    committed, or committed with its journal not yet truncated, leads to
    exactly one application of the change after the restart."""

    def test_intake_points(self):
        if PG:
            # on a shared database a push is committed to it before the 200
            # (intake.c j_direct): no journal, no flusher, and none of these
            # points is on that path; the crash-safety of a push there is
            # the transaction's
            self.skipTest("PostgreSQL: these kill points are the local intake journal's "
                          "(journal written, batch before/after commit), which a shared "
                          "database does not use: a push is committed before the 200")
        cal = self.boot()
        evs = [self.fg.host(CAL, op="create", event=timed(day(i + 2), day(i + 2, "11")))
               for i in range(3)]
        for i, e in enumerate(evs):
            self.book(cal, "n%d" % i, e)
        self.mirrored(cal, evs[-1]["id"])
        self.pushes(True)
        for i, point in enumerate(("intake_after_journal", "intake_flush_before_commit",
                                   "intake_flush_after_commit")):
            self.crash_cycle(point, 1, cal=cal, drive=lambda i=i: (
                self.wait_synced(cal),
                self.fg.host(CAL, op="delete", id=evs[i]["id"])))
            self.expect("n%d" % i, "delete", "cancel")
            self.wait_for(lambda i=i: self.booking("n%d" % i)["status"] == "cancelled",
                          what="cancelled")
            self.quiesce()
            self.check_all()


class TestChannelCrash(CrashCase):
    """Kill points of channel opening and renewal: after the restart there is
    exactly one live channel per calendar, in calsync and in Google."""
    config_extra = ""

    def live_in_google(self):
        chans = self.fg.control("GET", "/channels")["channels"]
        return [c for c in chans if c["state"] == "live"]

    def live_in_calsync(self):
        return [c for c in self.svc.request("GET", "/v1/channels")[1]["channels"]
                if c["state"] == "live"]

    def assert_one_live(self):
        def one():
            g, c = self.live_in_google(), self.live_in_calsync()
            return len(g) == 1 and len(c) == 1 and g[0]["id"] == c[0]["id"]
        self.wait_for(one, 10, "exactly one live channel (google %s, calsync %s)"
                      % ([c["id"] for c in self.live_in_google()],
                         [c["id"] for c in self.live_in_calsync()]))

    def test_open_points(self):
        self.start()
        cred = self.credential()
        self.svc.stop()
        points = ["channel_after_opening_row", "channel_after_watch", "channel_after_live"]
        self.rng.shuffle(points)
        for i, point in enumerate(points):
            def drive(i=i):
                if i == 0:   # a new calendar: watched at once
                    try:
                        self.svc.request("POST", "/v1/calendars",
                                         {"credential_id": cred, "external_id": CAL})
                    except (ConnectionError, http.client.HTTPException):
                        pass   # the watch can kill it before the answer
                # else: no usable channel left, so the start-up check watches
            if i > 0:
                # make calsync need a new channel: Google expired the old one
                self.svc.stop()
                for c in self.live_in_google():
                    self.fg.control("POST", "/channels/expire", {"id": c["id"]})
                with self.svc.db() as con:
                    con.execute("UPDATE channels SET expiration = 1 WHERE state = 'live'")
            self.crash_cycle(point, 1, drive=drive, cal=None)
            with self.svc.db() as con:
                cal = con.execute("SELECT id FROM calendars").fetchone()[0]
            self.wait_synced(cal)
            self.assert_one_live()


class TestChannelRenewalCrash(CrashCase):
    """Renewal opens the new channel first and stops the old one after;
    a kill between the two, or right after the stop, leaves one channel."""
    config_extra = ""

    def setUp(self):
        super().setUp()
        # lifetime 8 s, renewed at half of it
        self.config_extra = self.config_extra.replace(
            'client_secret = "y" }', 'client_secret = "y", channel_ttl = 8 }')

    live_in_google = TestChannelCrash.live_in_google
    live_in_calsync = TestChannelCrash.live_in_calsync
    assert_one_live = TestChannelCrash.assert_one_live

    def test_renewal_points(self):
        cal = self.boot()
        self.assert_one_live()
        for point in ("channel_after_open_before_stop", "channel_after_stop"):
            self.svc.stop()
            self.start_with(point + ":1")
            self.wait_killed(point)     # the renewal, about 4 s after the open
            self.start_with(None)
            self.wait_synced(cal)
            self.assert_one_live()
