"""Several calsync instances on one PostgreSQL database (DESIGN §2
Instances, issue 15): three `serve` processes share a database made on a
throwaway PostgreSQL cluster (tests/pg_cluster.py) and one fake Google;
API calls and sync requests are spread over all three, one is killed with
kill -9 in the middle of a sync and another in the middle of a delivery,
and everything converges with nothing lost or doubled, counted as Google
writes per booking, decisions per change and delivery ids per webhook.
TestDeadOwnersClaims: kill -9 of the instance holding a claimed job and of
the one holding claimed webhooks, taken over by a survivor's release of
the dead owner's claims (store.claims_released), and a live instance's
claims left alone by another's release passes.

Runs on PostgreSQL whatever CALSYNC_DATABASE says (so it is in `e2e` and
`e2e-asan`; `e2e-pg` leaves it out, see tests/run_all.py)."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import pg_cluster  # noqa: E402
from harness import Calsync, future  # noqa: E402
from test_google_sync import CAL, timed  # noqa: E402
from test_reverse import FLAG_ALL, ReverseCase  # noqa: E402


class InstancesCase(ReverseCase):
    """self.svcs: three instances on one database; self.svc is the first
    (ReverseCase's helpers read through it: the database is shared)."""

    def start_all(self, n=3):
        url = pg_cluster.shared_cluster().create_database()
        self.svcs = []
        for i in range(n):
            d = os.path.join(self.tmp, "i%d" % i)
            os.makedirs(d)
            svc = Calsync(d, api_token=self.api_token, config_extra=self.config_extra,
                          policies=self.policies)
            svc.db_url = url
            self.svcs.append(svc)
        for svc in self.svcs:
            svc.start()
        self.svc = self.svcs[0]

    def tearDown(self):
        try:
            for svc in getattr(self, "svcs", [])[1:]:
                if svc.proc:
                    svc.stop()
        finally:
            super().tearDown()

    def instance_of_pid(self, pid):
        for svc in self.svcs:
            if svc.proc and svc.proc.pid == pid:
                return svc
        return None

    def tagged(self, uid):
        tok = self.fg.access_token("listing-only")
        q = {"privateExtendedProperty": "calsync_booking_uid=" + uid}
        st, b, _ = self.fg.api("GET", "/calendars/%s/events" % CAL, token=tok, query=q)
        self.assertEqual(st, 200, b)
        return b["items"]

    def svc_alive(self):
        return [s for s in self.svcs if s.proc][0]

    def claiming_instance(self, table="outbox"):
        """The instance holding a claim on a pending row of `table` (the
        claimer name is "<liveness key>/<pid>.<start>/<role>.<tid>"), or
        None when the row is answered already."""
        with self.svc_alive().db() as con:
            rows = con.execute("SELECT claimed_by FROM %s WHERE state = 'pending'"
                               " AND claimed_by IS NOT NULL" % table).fetchall()
        for (who,) in rows:
            m = re.match(r"(\d+)/(\d+)\.", who or "")
            if m:
                svc = self.instance_of_pid(int(m.group(2)))
                if svc is not None:
                    return svc
        return None

    def owner_keys(self, svc):
        return re.findall(r"event=store\.owner_key key=(\d+)", svc.log_text())

    def checks(self, svc):
        return len(re.findall(r"event=store\.claims_checked ", svc.log_text()))

    def released(self, svc):
        return sum(int(n) for n in
                   re.findall(r"event=store\.claims_released items=(\d+)", svc.log_text()))

    def pending(self, table):
        with self.svc.db() as con:
            return con.execute("SELECT count(*) FROM %s WHERE state = 'pending'" % table
                               ).fetchone()[0]


class TestThreeInstances(InstancesCase):
    policies = {"flagger": FLAG_ALL}

    def test_spread_work_kills_converge(self):
        self.start_all()
        a, b, c = self.svcs
        cred = self.credential()
        st, cal, _ = b.request("POST", "/v1/calendars",
                               {"credential_id": cred, "external_id": CAL, "policy": "flagger"})
        self.assertEqual(st, 201, cal)
        cal = cal["id"]
        self.wait_synced(cal)
        # one live channel for the calendar, whichever instance opened it
        self.wait_for(lambda: self.live_channels(cal) == 1, what="one live channel")

        # -- forward writes, API calls spread over the three instances
        uids = ["fw%d" % i for i in range(9)]
        for i, uid in enumerate(uids):
            svc = self.svcs[i % 3]
            body = {"uid": uid, "calendar_id": cal, "title": "Call %d" % i,
                    "start": future(10 + i, 10), "end": future(10 + i, 10, 30)}
            st, bk, _ = svc.request("POST", "/v1/bookings", body)
            self.assertEqual(st, 201, bk)
        self.wait_for(lambda: self.pending("jobs") == 0, 60, "every forward write done")
        for uid in uids:
            self.assertEqual(len(self.tagged(uid)), 1, uid)            # one event each
            self.assertEqual(self.booking(uid)["write_state"], "none", uid)
        inserts = self.requests(op="events.insert")
        self.assertEqual(len(inserts), len(uids))                       # one write each

        # -- host changes: pushes to the channel's instance, syncs asked of all
        events = {uid: self.tagged(uid)[0] for uid in uids}
        for i, uid in enumerate(uids[:6]):
            ev = events[uid]
            self.fg.host(CAL, op="move", id=ev["id"], start=future(10 + i, 14),
                         end=future(10 + i, 14, 30))
            st, _, _ = self.svcs[i % 3].request("POST", "/v1/calendars/%d/sync" % cal)
            self.assertEqual(st, 202)
        for uid in uids[:6]:
            self.wait_audit_source(uid, 1)

        # -- kill -9 mid-sync: the listing is held while the instance syncs
        hold = self.fg.control("POST", "/faults", {"delay_ms": 4000, "count": 1,
                                                   "ops": ["events.list"]})
        ev = events[uids[6]]
        self.fg.host(CAL, op="move", id=ev["id"], start=future(16, 15), end=future(16, 15, 30))
        st, _, _ = c.request("POST", "/v1/calendars/%d/sync" % cal)
        self.assertEqual(st, 202)
        self.wait_for(lambda: self.fault_hits(hold) >= 1, what="a listing held")
        syncing = self.syncing_instance()
        syncing.kill9()
        survivors = [s for s in self.svcs if s.proc]
        st, _, _ = survivors[0].request("POST", "/v1/calendars/%d/sync" % cal)
        self.assertEqual(st, 202)
        self.wait_audit_source(uids[6], 1, timeout=30)
        self.wait_for(lambda: self.dirty(cal) == 0, 30, "the calendar synced by a survivor")

        # -- kill -9 mid-delivery: the receiver holds the POST
        self.outbox_drained(timeout=60)
        self.rx.delay = 3.0
        arrived = self.rx.arrived
        ev = events[uids[7]]
        self.fg.host(CAL, op="move", id=ev["id"], start=future(17, 15), end=future(17, 15, 30))
        st, _, _ = survivors[0].request("POST", "/v1/calendars/%d/sync" % cal)
        self.assertEqual(st, 202)
        self.wait_for(lambda: self.rx.arrived > arrived, 30, "a delivery in flight")
        sender = self.wait_for(self.claiming_instance, 10, "the instance posting it")
        others = [s for s in survivors if s is not sender]
        released = [self.released(s) for s in others]
        sender.kill9()
        self.rx.delay = 0.0
        # a survivor releases the dead instance's claim (its liveness key is
        # gone) and delivers it: the release, not the 30 s lease, frees it
        self.outbox_drained(timeout=60)
        self.assertTrue(any(self.released(s) > n
                            for s, n in zip(others, released)),
                        "no survivor logged store.claims_released")

        # -- converged: nothing lost, nothing doubled
        for i, uid in enumerate(uids[:8]):
            self.assertEqual(len(self.google_sources(uid)), 1, uid)     # one decision per change
        self.assertEqual(self.google_sources(uids[8]), [])
        for uid in uids:
            self.assertEqual(len(self.tagged(uid)), 1, uid)
        with self.svc_alive().db() as con:
            rows = con.execute("SELECT delivery_id, booking_uid FROM outbox"
                               " ORDER BY id").fetchall()
        ids = [r[0] for r in rows]
        self.assertEqual(len(ids), len(set(ids)))                      # one id per webhook
        self.assertEqual(len(rows), 8)                                  # one webhook per change
        got = {d.id for d in self.rx.accepted()}
        self.assertEqual(set(ids), got)                                 # every one delivered
        self.assertEqual(len(self.requests(op="events.insert")), len(uids))
        self.assertEqual(self.live_channels(cal), 1)

    # -- helpers ---------------------------------------------------------------

    def google_sources(self, uid):
        st, b, _ = self.svc_alive().request("GET", "/v1/bookings/%s/audit" % uid)
        return [e for e in b["entries"] if e["source"] != "api"]

    def wait_audit_source(self, uid, n, timeout=30):
        return self.wait_for(lambda: len(self.google_sources(uid)) >= n, timeout,
                             "%d decisions for %s" % (n, uid))

    def live_channels(self, cal):
        with self.svc_alive().db() as con:
            return con.execute("SELECT count(*) FROM channels WHERE calendar_id = ?"
                               " AND state = 'live'", (cal,)).fetchone()[0]

    def syncing_instance(self):
        """The instance whose log shows the held sync starting last."""
        best, at = None, ""
        for s in self.svcs:
            if not s.proc:
                continue
            m = re.findall(r"ts=(\S+) level=debug event=sched\.sync_start", s.log_text())
            if m and m[-1] > at:
                best, at = s, m[-1]
        self.assertIsNotNone(best)
        return best


class TestDeadOwnersClaims(InstancesCase):
    """Claims on the queues name their instance's liveness key (a session
    advisory lock held for the process's life); every instance releases,
    every few seconds, the claims whose key nobody holds. So after kill -9
    the survivors carry on with the dead instance's jobs and deliveries
    without waiting out the 30 s lease -- the survivor's
    store.claims_released line is the proof that the release, not the
    lease, freed them -- and a live instance's claims are never released by
    another."""

    def claims(self, table):
        """{row id: claimed_by} of the pending rows of `table` claimed now."""
        with self.svc_alive().db() as con:
            return dict(con.execute("SELECT id, claimed_by FROM %s WHERE state = 'pending'"
                                    " AND claimed_by IS NOT NULL" % table).fetchall())

    def owner(self, claimed_by):
        key = claimed_by.split("/")[0]
        found = [s for s in self.svcs if s.proc and key in self.owner_keys(s)]
        self.assertEqual(len(found), 1, "the instance with liveness key %s" % key)
        return found[0]

    def test_dead_owner_released_live_owner_kept(self):
        self.start_all()
        for svc in self.svcs:   # each took a key of its own at start
            self.assertEqual(len(self.owner_keys(svc)), 1, svc.log_text()[-2000:])
        self.assertEqual(len({self.owner_keys(s)[0] for s in self.svcs}), 3)
        cred = self.credential()
        st, cal, _ = self.svcs[1].request("POST", "/v1/calendars",
                                          {"credential_id": cred, "external_id": CAL})
        self.assertEqual(st, 201, cal)
        cal = cal["id"]
        self.wait_synced(cal)
        uids = ["d%d" % i for i in range(8)]
        for i, uid in enumerate(uids):
            st, bk, _ = self.svcs[i % 3].request("POST", "/v1/bookings", {
                "uid": uid, "calendar_id": cal, "title": "Call %d" % i,
                "start": future(10 + i, 10), "end": future(10 + i, 10, 30)})
            self.assertEqual(st, 201, bk)
        self.wait_for(lambda: self.pending("jobs") == 0, 60, "every forward write done")

        # -- jobs: kill -9 of the instance holding a claimed job mid-insert
        hold = self.fg.control("POST", "/faults", {"delay_ms": 5000, "count": 1,
                                                   "ops": ["events.insert"]})
        st, bk, _ = self.svcs[0].request("POST", "/v1/bookings", {
            "uid": "k0", "calendar_id": cal, "title": "Killed",
            "start": future(20, 10), "end": future(20, 10, 30)})
        self.assertEqual(st, 201, bk)
        self.wait_for(lambda: self.fault_hits(hold) >= 1, what="the insert held")
        writer = self.wait_for(lambda: self.claiming_instance("jobs"), 10,
                               "the instance writing k0")
        survivors = [s for s in self.svcs if s is not writer]
        before = {s: self.released(s) for s in survivors}
        writer.kill9()
        self.wait_for(lambda: self.pending("jobs") == 0, 30, "k0 written by a survivor")
        self.assertTrue(any(self.released(s) > before[s] for s in survivors),
                        "no survivor logged store.claims_released")
        self.assertEqual(len(self.tagged("k0")), 1)      # adopted, never inserted twice
        st, bk, _ = self.svc_alive().request("GET", "/v1/bookings/k0")
        self.assertEqual(bk["write_state"], "none")

        # -- deliveries: 8 webhooks claimed in one batch by one instance (P),
        # each POST held 3 s by the receiver, so P holds the rest meanwhile
        self.outbox_drained(timeout=60)
        self.rx.delay = 3.0
        arrived = self.rx.arrived
        for i, uid in enumerate(uids):
            ev = self.tagged(uid)[0]
            self.fg.host(CAL, op="move", id=ev["id"], start=future(10 + i, 15),
                         end=future(10 + i, 15, 30))
        st, _, _ = survivors[0].request("POST", "/v1/calendars/%d/sync" % cal)
        self.assertEqual(st, 202)
        self.wait_for(lambda: self.rx.arrived > arrived, 30, "a delivery in flight")
        held = self.wait_for(lambda: self.claims("outbox"), 10, "claimed webhooks")
        p = self.owner(list(held.values())[0])
        q = [s for s in survivors if s is not p][0]
        q_released = self.released(q)
        # a live owner's claims stay: two release passes of the other
        # instance later, every row P claimed and has not answered yet is
        # still P's, under the same claim
        n = self.checks(q)
        self.wait_for(lambda: self.checks(q) >= n + 2, 20, "two release passes of the other")
        with self.svc_alive().db() as con:
            now = dict(con.execute("SELECT id, claimed_by FROM outbox"
                                   " WHERE state = 'pending'").fetchall())
        still = [i for i in held if i in now]
        self.assertTrue(still, "P delivered every row before the other's passes: "
                        "nothing left to prove")
        for i in still:
            self.assertEqual(now[i], held[i], "row %d's live claim was released or "
                             "changed hands" % i)
        self.assertEqual(self.released(q), q_released, "the other released live claims")

        # -- then P dies holding them: Q releases them and delivers the rest
        p.kill9()
        self.rx.delay = 0.0
        self.outbox_drained(timeout=60)
        self.assertGreater(self.released(q), q_released, "Q logged no store.claims_released")
        with self.svc_alive().db() as con:
            ids = [r[0] for r in con.execute("SELECT delivery_id FROM outbox").fetchall()]
        self.assertEqual(len(ids), len(set(ids)))
        self.assertEqual(len(ids), len(uids))             # one webhook per change
        got = [d.id for d in self.rx.accepted()]
        self.assertEqual(set(ids), set(got))              # every one delivered
        # the POST in flight at the kill may be posted again (same id);
        # nothing else twice: the other never took a live claim
        twice = [i for i in set(got) if got.count(i) > 1]
        self.assertLessEqual(len(twice), 1, twice)
