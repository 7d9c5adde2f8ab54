"""Several calsync instances on one PostgreSQL database (DESIGN §2
Instances, issue 15): three `serve` processes share a database made on a
throwaway PostgreSQL cluster (tests/pg_cluster.py) and one fake Google;
API calls and sync requests are spread over all three, one is killed with
kill -9 in the middle of a sync and another in the middle of a delivery,
and everything converges with nothing lost or doubled, counted as Google
writes per booking, decisions per change and delivery ids per webhook.

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
        sender.kill9()
        self.rx.delay = 0.0
        # the others deliver it once its claim expires (30 s lease)
        self.outbox_drained(timeout=60)

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

    def svc_alive(self):
        return [s for s in self.svcs if s.proc][0]

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

    def claiming_instance(self):
        """The instance holding a claim on a pending outbox row (the claimer
        name starts with its pid), or None when the row is answered already."""
        with self.svc.db() as con:
            rows = con.execute("SELECT claimed_by FROM outbox WHERE state = 'pending'"
                               " AND claimed_by IS NOT NULL").fetchall()
        for (who,) in rows:
            m = re.match(r"(\d+)\.", who or "")
            if m:
                svc = self.instance_of_pid(int(m.group(1)))
                if svc is not None:
                    return svc
        return None
