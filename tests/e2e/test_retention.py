"""Retention (issue 17 item 7, docs/operations.md "Retention"): old push
notifications, delivered outbox rows and finished jobs are pruned in small
batches; pending work, recent rows and (unless configured) the audit are
kept -- exactly those, row by row."""
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import BIN, CalsyncCase  # noqa: E402

HOUR = 3600


class RetentionTest(CalsyncCase):
    def conf(self, audit=0):
        # batch 2: every table needs several batches, so the batch loop is
        # what is tested, not one DELETE
        return ("retention = { notifications = %d, outbox_delivered = %d,"
                " jobs_finished = %d, audit = %d, interval = 1, batch = 2 }"
                % (HOUR, HOUR, HOUR, audit))

    def seed(self):
        """Rows on both sides of the one-hour age, in every state; returns
        the ids that must survive, per table."""
        now = int(time.time() * 1000)
        old, recent = now - 48 * HOUR * 1000, now - 60 * 1000
        far = now + 365 * 86400 * 1000   # pending work nobody claims now
        keep = {"notifications": set(), "outbox": set(), "jobs": set(), "audit": set()}
        with self.svc.db() as con:
            for i in range(1, 8):        # 1..7 old, 8..9 recent, 10 old but newest id
                at = old if i <= 7 else recent
                con.execute("INSERT INTO notifications (id, channel_id, received_at)"
                            " VALUES (?, 'ch', ?)", (i, at))
                if i > 7:
                    keep["notifications"].add(i)
            con.execute("INSERT INTO notifications (id, channel_id, received_at)"
                        " VALUES (10, 'ch', ?)", (old,))
            keep["notifications"].add(10)   # the newest id stays (ids continue from it)

            def outbox(state, created, delivered):
                cur = con.execute(
                    "INSERT INTO outbox (delivery_id, subscriber, trigger, body, state,"
                    " next_at, created_at, delivered_at) VALUES (?, 'http://127.0.0.1:9/x',"
                    " 'BOOKING_UPDATED', '{}', ?, ?, ?, ?) RETURNING id",
                    ("d%d-%s" % (created, os.urandom(4).hex()), state, far, created, delivered))
                return cur.fetchone()[0]
            for _ in range(5):
                outbox("delivered", old, old)                      # pruned
            keep["outbox"].add(outbox("delivered", old, recent))   # delivered lately
            keep["outbox"].add(outbox("delivered", recent, recent))
            keep["outbox"].add(outbox("pending", old, None))       # never delivered

            def job(state, created):
                cur = con.execute(
                    "INSERT INTO jobs (kind, booking_uid, calendar_id, state, next_at,"
                    " created_at) VALUES ('patch', 'b', 1, ?, ?, ?) RETURNING id",
                    (state, far, created))
                return cur.fetchone()[0]
            for _ in range(3):
                job("done", old)                                   # pruned
            for _ in range(2):
                job("failed", old)                                 # pruned
            keep["jobs"].add(job("pending", old))                  # not finished
            keep["jobs"].add(job("done", recent))
            for i in range(6):
                cur = con.execute(
                    "INSERT INTO audit (booking_uid, at, source, change, action)"
                    " VALUES ('b', ?, 'push', 'delete', 'cancel') RETURNING id",
                    (old if i < 4 else recent,))
                aid = cur.fetchone()[0]
                keep["audit"].add(aid)
                # each decision's recorded inputs go with its entry
                con.execute("INSERT INTO decision_inputs (audit_id, calendar_id, inputs,"
                            " can_reschedule, can_update) VALUES (?, 1, '{}', 1, 1)", (aid,))
        return keep

    def ids(self):
        q = {"notifications": "SELECT id FROM notifications",
             "outbox": "SELECT id FROM outbox", "jobs": "SELECT id FROM jobs",
             "audit": "SELECT id FROM audit"}
        with self.svc.db() as con:
            return {t: {r[0] for r in con.execute(sql)} for t, sql in q.items()}

    def pruned(self, table):
        return [int(m.group(1)) for m in re.finditer(
            r"event=retention\.pruned table=%s rows=(\d+)" % table, self.svc.log_text())]

    def wait_until(self, fn, what, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if fn():
                return
            time.sleep(0.05)
        self.fail("timed out waiting for %s\n%s" % (what, self.svc.log_text()[-3000:]))

    def test_prunes_exactly_the_old_finished_rows(self):
        self.start(config_extra=self.conf())
        self.svc.stop()
        keep = self.seed()
        audit_all = set(keep["audit"])
        self.svc.start()
        for table in ("notifications", "outbox", "jobs"):
            self.wait_until(lambda: self.pruned(table), "the %s pruned" % table)
        self.assertEqual(sum(self.pruned("notifications")), 7)
        self.assertEqual(sum(self.pruned("outbox")), 5)
        self.assertEqual(sum(self.pruned("jobs")), 5)
        self.assertEqual(self.pruned("audit"), [])
        got = self.ids()
        self.assertEqual(got["notifications"], keep["notifications"])
        self.assertEqual(got["outbox"], keep["outbox"])
        self.assertEqual(got["jobs"], keep["jobs"])
        self.assertEqual(got["audit"], audit_all)   # the record is kept by default
        self.svc.stop()

        # configured, old audit entries go too -- and only those
        with self.svc.db() as con:
            old = {r[0] for r in con.execute(
                "SELECT id FROM audit WHERE at < ?", (int(time.time() * 1000) - HOUR * 1000,))}
        self.assertEqual(len(old), 4)
        self.svc.config_extra = self.conf(audit=HOUR)
        self.svc.start()
        self.wait_until(lambda: self.pruned("audit"), "the audit pruned")
        self.assertEqual(sum(self.pruned("audit")), 4)
        self.assertEqual(self.ids()["audit"], audit_all - old)
        with self.svc.db() as con:
            inputs = {r[0] for r in con.execute("SELECT audit_id FROM decision_inputs")}
        self.assertEqual(inputs, audit_all - old)
        self.assertEqual(self.ids()["jobs"], keep["jobs"])

    def test_unknown_or_negative_retention_keys_are_refused(self):
        for bad, want in (("retention = { notificatons = 1 }", "notificatons"),
                          ("retention = { audit = -1 }", "audit"),
                          ("retention = { batch = 0 }", "batch")):
            path = os.path.join(self.tmp, "bad.conf.lua")
            with open(path, "w") as f:
                f.write(bad + "\n")
            r = subprocess.run([BIN, "migrate", "-c", path], capture_output=True, text=True,
                               cwd=self.tmp, timeout=30)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn(want, r.stderr)
