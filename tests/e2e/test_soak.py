"""Model-based soak (issue 7): a seeded random mix of host edits in the fake
Google (single events, and occurrences of daily series: move, retitle,
delete one, delete this and following, delete the series), booking-app
calls, Google faults, notification faults and calsync restarts (clean and
kill -9), then quiescence; the expected state of every
booking, audit trail and webhook stream is computed from the default
policy's rules and checked.

    CALSYNC_SOAK_SECONDS  duration of the random phase (default 60; 20 under ASan)
    CALSYNC_SOAK_SEED     seed (default 1)

Retention runs with short ages (RETAIN seconds, every second), and the soak
samples the database as it goes: its size and the rows of the pruned
tables, printed at the end -- the pruned tables stay bounded while the
record (bookings, audit) grows with the bookings made -- and, after a
pruning run that began after quiescence, nothing older than the ages is
left (issue 17 item 7).
`make soak DURATION=600 SEED=7` runs a long one; each run prints what it covered.
"""
import collections
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SANITIZED  # noqa: E402
from test_google_sync import CAL, timed  # noqa: E402
from test_reverse import ReverseCase  # noqa: E402

DAY = 86400
RETAIN = 10      # seconds: retention ages for the soak
SAMPLE = 5       # seconds between database samples


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class Soak(ReverseCase):
    poll_interval = 4

    def setUp(self):
        super().setUp()
        self.seconds = float(os.environ.get("CALSYNC_SOAK_SECONDS", "20" if SANITIZED else "60"))
        self.seed = int(os.environ.get("CALSYNC_SOAK_SEED", "1"))
        self.rng = random.Random(self.seed)
        self.covered = collections.Counter()
        self.base = int(time.time()) // 3600 * 3600 + 3 * DAY   # all bookings in the future
        self.config_extra += ("\nretention = { notifications = %d, outbox_delivered = %d,"
                              " jobs_finished = %d, interval = 1, batch = 50 }"
                              % (RETAIN, RETAIN, RETAIN))
        self.samples = []

    # -- database size ------------------------------------------------------------

    def sample(self, t0):
        """(seconds, file bytes with WAL, bytes in use, bytes of the pruned
        tables with their indexes, rows of notifications, delivered outbox,
        finished jobs, audit, bookings)."""
        size = sum(os.path.getsize(p) for p in (self.svc.db_path, self.svc.db_path + "-wal")
                   if os.path.exists(p))
        with self.svc.db() as con:
            q = lambda sql: con.execute(sql).fetchone()[0]  # noqa: E731
            used = (q("PRAGMA page_count") - q("PRAGMA freelist_count")) * q("PRAGMA page_size")
            # dbstat: pages per table and index (SQLite's own accounting)
            pruned = q("SELECT coalesce(sum(d.pgsize), 0) FROM dbstat d"
                       " JOIN sqlite_schema s ON s.name = d.name"
                       " WHERE s.tbl_name IN ('notifications', 'outbox', 'jobs')")
            row = (round(time.time() - t0), size, used, pruned,
                   q("SELECT count(*) FROM notifications"),
                   q("SELECT count(*) FROM outbox WHERE state = 'delivered'"),
                   q("SELECT count(*) FROM jobs WHERE state IN ('done', 'failed')"),
                   q("SELECT count(*) FROM audit"), q("SELECT count(*) FROM bookings"))
        self.samples.append(row)

    def check_pruned(self):
        """Waits for a pruning run that began now or later, then: no
        notification (but the newest) and no delivered webhook older than
        RETAIN seconds before that run's start."""
        import re
        n = len(re.findall(r"event=retention\.done ", self.svc.log_text()))
        def later_run():
            runs = re.findall(r"event=retention\.done now=(\d+)", self.svc.log_text())
            return int(runs[-1]) if len(runs) > n else None
        now = self.wait_for(later_run, 30, "a pruning run")
        cut = now - RETAIN * 1000
        with self.svc.db() as con:
            old_n = con.execute("SELECT count(*) FROM notifications WHERE received_at < ?",
                                (cut,)).fetchone()[0]
            old_o = con.execute("SELECT count(*) FROM outbox WHERE state = 'delivered'"
                                " AND delivered_at < ?", (cut,)).fetchone()[0]
        self.assertLessEqual(old_n, 1)
        self.assertEqual(old_o, 0)
        return {"notifications older than the age (the newest kept)": old_n,
                "delivered webhooks older than the age": old_o}

    # -- actions ----------------------------------------------------------------

    def slot(self):
        start = self.base + self.rng.randrange(0, 20 * 24) * 3600
        return start, start + self.rng.choice((1800, 3600))

    def live(self):
        return [u for u, m in self.model.items()
                if not m["app_cancelled"] and not m["host_deleted"]]

    def hosted(self):
        """Live single-event bookings whose event exists in Google (the host
        can edit it)."""
        return [u for u in self.live() if not self.model[u].get("series") and self.event_id(u)]

    def occ_bookings(self, sid=None):
        return [u for u in self.live() if self.model[u].get("series") and
                (sid is None or self.model[u]["series"] == sid)]

    def act_series(self, cal):
        """Occurrence bookings: a booking follows the occurrence of series
        `series` whose originalStartTime is `orig` (DESIGN §2 Occurrences)."""
        r = self.rng.random()
        live_series = [x for x in self.series if not x["deleted"]]
        if r < 0.25 or not live_series:
            if len(self.series) >= 8:
                return
            first = self.base // DAY * DAY + self.rng.randrange(0, 12) * DAY + 12 * 3600
            sid = "soakseries%d" % len(self.series)
            self.fg.host(CAL, op="create", event={
                "id": sid, "summary": sid,
                "start": {"dateTime": iso(first), "timeZone": "UTC"},
                "end": {"dateTime": iso(first + 1800), "timeZone": "UTC"},
                "recurrence": ["RRULE:FREQ=DAILY;COUNT=8"]})
            self.series.append({"id": sid, "first": first, "deleted": False,
                                "cut": first + 8 * DAY, "gone": set()})
            for k in self.rng.sample(range(8), 3):
                occ = first + k * DAY
                uid = "s%d" % len(self.model)
                st, b, _ = self.svc.request("POST", "/v1/bookings", {
                    "uid": uid, "calendar_id": cal, "title": sid, "start": iso(occ),
                    "end": iso(occ + 1800), "event_id": sid, "original_start": iso(occ)})
                self.assertEqual(st, 201, b)
                self.model[uid] = {"event": sid, "series": sid, "orig": occ,
                                   "app_cancelled": False, "host_deleted": False}
            self.covered["host series + 3 occurrence bookings"] += 1
            return
        if r < 0.55:
            uids = self.occ_bookings()
            if uids:
                u = self.rng.choice(uids)
                m = self.model[u]
                start = m["orig"] + self.rng.choice((-3, -1, 1, 2, 5)) * 3600
                self.fg.host(CAL, op="move", series=m["series"], original_start=iso(m["orig"]),
                             start=iso(start), end=iso(start + 3600))
                self.host_edits[u]["time_change"] += 1
                self.covered["host move occurrence"] += 1
        elif r < 0.7:
            uids = self.occ_bookings()
            if uids:
                u = self.rng.choice(uids)
                m = self.model[u]
                self.fg.host(CAL, op="retitle", series=m["series"], original_start=iso(m["orig"]),
                             summary="occ retitled %d" % self.rng.randrange(1000))
                self.host_edits[u]["title_change"] += 1
                self.covered["host retitle occurrence"] += 1
        elif r < 0.85:
            uids = self.occ_bookings()
            if uids:
                u = self.rng.choice(uids)
                m = self.model[u]
                self.fg.host(CAL, op="delete", series=m["series"], original_start=iso(m["orig"]))
                next(x for x in self.series if x["id"] == m["series"])["gone"].add(m["orig"])
                m["host_deleted"] = True
                self.host_edits[u]["delete"] += 1
                self.covered["host delete occurrence"] += 1
        elif r < 0.93:
            x = self.rng.choice(live_series)
            cuts = [x["first"] + k * DAY for k in range(2, 8)]
            cuts = [c for c in cuts if c < x["cut"] and c not in x["gone"]]
            if not cuts:
                return
            cut = self.rng.choice(cuts)
            x["cut"] = cut
            self.fg.host(CAL, op="truncate", series=x["id"], original_start=iso(cut))
            for u in self.occ_bookings(x["id"]):
                if self.model[u]["orig"] >= cut:
                    self.model[u]["host_deleted"] = True
                    self.host_edits[u]["delete"] += 1
            self.covered["host delete this and following"] += 1
        else:
            x = self.rng.choice(live_series)
            self.fg.host(CAL, op="delete", id=x["id"])
            x["deleted"] = True
            for u in self.occ_bookings(x["id"]):
                self.model[u]["host_deleted"] = True
                self.host_edits[u]["delete"] += 1
            self.covered["host delete series"] += 1

    def act(self, cal):
        if self.rng.random() < 0.2:
            return self.act_series(cal)
        r = self.rng.random()
        if r < 0.14 or len(self.model) < 3:
            s, e = self.slot()
            title = "host %d" % len(self.model)
            ev = self.fg.host(CAL, op="create", event=timed(iso(s), iso(e), summary=title))
            uid = "h%d" % len(self.model)
            # linked with the event's own title and times: nothing to decide
            # until the host edits it
            st, b, _ = self.svc.request("POST", "/v1/bookings", {
                "uid": uid, "calendar_id": cal, "title": title, "start": iso(s), "end": iso(e),
                "event_id": ev["id"]})
            self.assertEqual(st, 201, b)
            self.model[uid] = {"event": ev["id"], "app_cancelled": False, "host_deleted": False}
            self.covered["host create + link booking"] += 1
        elif r < 0.24:
            s, e = self.slot()
            uid = "a%d" % len(self.model)
            st, b, _ = self.svc.request("POST", "/v1/bookings", {
                "uid": uid, "calendar_id": cal, "title": "app", "start": iso(s), "end": iso(e)})
            self.assertEqual(st, 201, b)
            self.model[uid] = {"event": None, "app_cancelled": False, "host_deleted": False}
            self.covered["app create (forward insert)"] += 1
        elif r < 0.44:
            uids = self.hosted()
            if uids:
                u = self.rng.choice(uids)
                s, e = self.slot()
                self.fg.host(CAL, op="move", id=self.event_id(u), start=iso(s), end=iso(e))
                self.host_edits[u]["time_change"] += 1
                self.covered["host move"] += 1
        elif r < 0.52:
            uids = self.hosted()
            if uids:
                u = self.rng.choice(uids)
                self.fg.host(CAL, op="retitle", id=self.event_id(u),
                             summary="retitled %d" % self.rng.randrange(1000))
                self.host_edits[u]["title_change"] += 1
                self.covered["host retitle"] += 1
        elif r < 0.58:
            uids = self.hosted()
            if uids:
                u = self.rng.choice(uids)
                self.fg.host(CAL, op="delete", id=self.event_id(u))
                self.model[u]["host_deleted"] = True
                self.host_edits[u]["delete"] += 1
                self.covered["host delete"] += 1
        elif r < 0.72:
            # occurrence bookings' app-side changes stay local (docs/sync.md),
            # so only single-event bookings are rescheduled by the app here
            uids = [u for u in self.live() if not self.model[u].get("series")]
            if uids:
                u = self.rng.choice(uids)
                s, e = self.slot()
                st, _, _ = self.svc.request("PATCH", "/v1/bookings/" + u, {"start": iso(s), "end": iso(e)})
                self.assertIn(st, (200, 409))          # 409: the host cancelled it meanwhile
                self.covered["app reschedule"] += 1
        elif r < 0.77:
            uids = self.live()
            if uids:
                u = self.rng.choice(uids)
                st, _, _ = self.svc.request("POST", "/v1/bookings/%s/cancel" % u, {"reason": "app"})
                self.assertIn(st, (200, 409))
                if st == 200:
                    self.model[u]["app_cancelled"] = True
                self.covered["app cancel"] += 1
        elif r < 0.92:
            self.fault()
        elif r < 0.96:
            self.svc.stop()
            self.svc.start()
            self.covered["calsync restart (SIGTERM)"] += 1
        else:
            self.svc.kill9()
            self.svc.start()
            self.covered["calsync kill -9 + restart"] += 1

    def fault(self):
        f = self.rng.choice(["drop", "duplicate", "delay", "reorder", "429", "503", "403rate",
                             "410", "expire", "slow"])
        if f in ("drop", "duplicate", "delay", "reorder"):
            rule = {"action": f, "count": self.rng.randrange(1, 4)}
            if f == "delay":
                rule["delay_ms"] = self.rng.randrange(200, 3000)
            if f == "reorder":
                rule["count"] = 2
                rule["window_ms"] = 1500
            self.fg.control("POST", "/notification_faults", rule)
        elif f == "429":
            self.fg.control("POST", "/faults", {"status": 429, "count": 2, "retry_after": 1})
        elif f == "503":
            self.fg.control("POST", "/faults", {"status": 503, "count": self.rng.randrange(1, 4)})
        elif f == "403rate":
            self.fg.control("POST", "/faults", {"status": 403, "reason": "rateLimitExceeded", "count": 1})
        elif f == "410":
            self.fg.control("POST", "/invalidate_sync_tokens", {})
        elif f == "expire":
            self.fg.control("POST", "/expire_access_tokens", {})
        elif f == "slow":
            self.fg.control("POST", "/faults", {"delay_ms": 1500, "count": 1})
        self.covered["fault " + f] += 1

    # -- model ------------------------------------------------------------------

    def event_id(self, uid):
        m = self.model[uid]
        if not m["event"]:
            b = self.booking(uid)
            m["event"] = b and b.get("event_id")
        return m["event"]

    def google_events(self):
        return {it["id"]: it for it in self.google_items(timeZone="UTC")}

    def google_occurrences(self):
        """(series id, original start as epoch) -> occurrence, cancelled
        ones included (singleEvents=true, showDeleted=true)."""
        out = {}
        for it in self.google_items(singleEvents="true", timeZone="UTC"):
            ost = (it.get("originalStartTime") or {}).get("dateTime")
            if it.get("recurringEventId") and ost:
                out[(it["recurringEventId"], self.epoch(ost))] = it
        return out

    @staticmethod
    def epoch(rfc3339):
        from datetime import datetime
        return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp())

    def quiesce(self, cal):
        self.fg.control("DELETE", "/faults")
        self.fg.control("DELETE", "/notification_faults")
        deadline = time.time() + 120

        def settled():
            with self.svc.db() as con:
                jobs = con.execute("SELECT count(*) FROM jobs WHERE state='pending'").fetchone()[0]
                out = con.execute("SELECT count(*) FROM outbox WHERE state='pending'").fetchone()[0]
            return jobs == 0 and out == 0

        while time.time() < deadline and not settled():
            time.sleep(0.5)
        self.assertTrue(settled(), "jobs or webhooks still pending after 120 s")
        for _ in range(2):                      # two full rounds of reading Google
            last = self.sync_now(cal)
            self.wait_synced(cal, last, timeout=60)
        while time.time() < deadline and not settled():
            time.sleep(0.5)
        self.assertTrue(settled())

    # -- the test ---------------------------------------------------------------

    def test_soak(self):
        cal = self.boot()
        self.model = {}
        self.series = []
        self.host_edits = collections.defaultdict(collections.Counter)
        end = time.time() + self.seconds
        steps = 0
        t0 = next_sample = time.time()
        while time.time() < end:
            self.act(cal)
            steps += 1
            if time.time() >= next_sample and self.svc.proc:
                self.sample(t0)
                next_sample += SAMPLE
            time.sleep(self.rng.uniform(0.02, 0.25))
        self.quiesce(cal)
        self.sample(t0)
        pruned = self.check_pruned()
        google = self.google_events()
        occurrences = self.google_occurrences()
        bookings = {u: self.booking(u) for u in self.model}
        deliveries = self.rx.accepted()
        checked = collections.Counter()

        for uid, m in self.model.items():
            b = bookings[uid]
            if m.get("series"):
                # the occurrence the booking follows: same series, same
                # original start, wherever the host or the app moved it
                self.assertEqual((b["event_id"], b["original_start"]),
                                 (m["series"], iso(m["orig"])), uid)
                ev = occurrences.get((m["series"], m["orig"]))
            else:
                ev = google.get(b["event_id"]) if b["event_id"] else None
            audit = self.audit(uid)
            if m["app_cancelled"]:
                self.assertEqual(b["status"], "cancelled", uid)
                # an occurrence booking is not written to Google: its
                # occurrence stays
                if ev is not None and not m.get("series"):
                    self.assertEqual(ev["status"], "cancelled", (uid, "orphan event"))
                checked["cancelled by the app, event gone"] += 1
            elif m.get("series") and (ev is None or ev["status"] == "cancelled"):
                self.assertTrue(m["host_deleted"], (uid, "occurrence gone", audit))
                self.assertEqual(b["status"], "cancelled", (uid, audit))
                self.assertEqual(b["cancelled_by"], "google", uid)
                checked["occurrence deleted by the host, booking cancelled"] += 1
            elif ev is not None and ev["status"] == "cancelled":
                self.assertEqual(b["status"], "cancelled", (uid, audit))
                self.assertEqual(b["cancelled_by"], "google", uid)
                checked["deleted by the host, booking cancelled"] += 1
            else:
                self.assertIsNotNone(ev, (uid, b))
                self.assertEqual(b["status"], "accepted", (uid, audit))
                self.assertEqual((b["start"], b["end"]),
                                 (ev["start"]["dateTime"].replace("+00:00", "Z"),
                                  ev["end"]["dateTime"].replace("+00:00", "Z")), (uid, audit))
                checked["live occurrence, booking times == occurrence times"
                        if m.get("series") else "live, booking times == event times"] += 1
            # a uid never has two events
            tagged = [e for e in google.values()
                      if e.get("extendedProperties", {}).get("private", {}).get("calsync_booking_uid") == uid
                      and e["status"] != "cancelled"]
            self.assertLessEqual(len(tagged), 1, uid)
            # nothing applied twice: never more decisions of a kind than host
            # edits of that kind (coalesced edits may make fewer)
            kinds = collections.Counter(e["change"] for e in audit
                                        if e["source"] not in ("api",) and e["change"] != "conflict")
            for kind, n in kinds.items():
                self.assertLessEqual(n, self.host_edits[uid][kind], (uid, kind, audit))
            # webhooks: exactly one acknowledged delivery per announced decision, in order
            want = [{"cancel": "BOOKING_CANCELLED", "reschedule": "BOOKING_RESCHEDULED",
                     "update": "BOOKING_UPDATED", "flag": "BOOKING_FLAGGED"}[e["action"]]
                    for e in audit if e["source"] != "api" and e["action"] != "ignore"]
            got, seen = [], set()
            for d in deliveries:
                if d.json["payload"].get("uid") == uid and d.id not in seen:
                    seen.add(d.id)
                    got.append(d.json["triggerEvent"])
            self.assertEqual(got, want, uid)
            checked["webhook streams"] += 1
        for d in self.rx.deliveries:
            self.assertTrue(self.rx.signature_ok(d))
        # at least once: a kill -9 between the app's 2xx and the outbox's
        # record re-sends a webhook -- under the same delivery id, so the
        # app can drop it
        ids = collections.Counter(d.id for d in deliveries)
        resent = sum(n - 1 for n in ids.values())
        checked["webhooks acknowledged again after a crash (same id)"] = resent
        self.svc.stop()
        print("\nsoak database (s, bytes with WAL, bytes in use, bytes of the pruned"
              " tables, rows: notifications, delivered webhooks, finished jobs, audit,"
              " bookings):", file=sys.stderr)
        for row in self.samples:
            print("  %4d %9d %9d %9d %6d %6d %6d %6d %6d" % row, file=sys.stderr)
        print("  retention: %s" % pruned, file=sys.stderr)
        print("\nsoak: seed=%d seconds=%.0f steps=%d bookings=%d webhooks=%d\n  covered: %s\n  checked: %s"
              % (self.seed, self.seconds, steps, len(self.model), len(ids),
                 dict(sorted(self.covered.items())), dict(checked)), file=sys.stderr)
