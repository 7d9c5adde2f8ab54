"""Issue 21, items 8 and 9, end to end: secrets at rest and on display.

Item 8: webhook URLs with user:password, a ?token= query or a secret path
appeared in full as a label of the unauthenticated /metrics and in log
lines. Now a subscriber is labelled by its index and its scheme://host:port.

Item 9: the database, its WAL and its shared-memory file took the process
umask (0644 under umask 022) though they hold refresh and access tokens.
Now they are 0600, and an older, readable database is tightened at start.
Times are relative to now.
"""
import os
import re
import stat
import sys
import time
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import CalsyncCase, lua_str  # noqa: E402
from test_google_sync import CAL, timed  # noqa: E402
from test_reverse import ReverseCase  # noqa: E402

SECRETS = ("hookuser", "hookpass", "tok3n-secret", "SECRETPATH", "hunter2", "deadtoken")


def rfc3339(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


class TestWebhookUrlsRedacted(ReverseCase):
    def setUp(self):
        super().setUp()
        port = self.rx.server.server_address[1]
        # subscriber 0: the receiver, reached with credentials and a token;
        # subscriber 1: nobody listens (transport errors get logged), with
        # a secret in the path as Slack and Discord hooks have
        self.config_extra = self.config_extra.replace(self.rx.config(), "") + "\n" + (
            "webhooks = { { url = %s, secret = %s }, { url = %s, secret = %s } }" % (
                lua_str("http://hookuser:hookpass@127.0.0.1:%d/hooks/calsync?token=tok3n-secret#frag"
                        % port), lua_str(self.rx.secret),
                lua_str("http://admin:hunter2@127.0.0.1:9/services/T0/SECRETPATH?token=deadtoken"),
                lua_str("whsec_other")))

    def test_no_credential_or_query_in_metrics_or_log(self):
        cal = self.boot()
        start = datetime.now(timezone.utc).replace(microsecond=0, second=0, minute=0) \
            + timedelta(days=3)
        s, e = rfc3339(start), rfc3339(start + timedelta(minutes=30))
        ev = self.fg.host(CAL, op="create", event=timed(s, e, summary="call"))
        self.book(cal, "redact", ev)
        self.wait_for(lambda: ev["id"] in self.mirror(cal), what="mirrored")
        self.fg.host(CAL, op="delete", id=ev["id"])
        hooks = self.rx.wait(lambda ds: any(d.status == 200 for d in ds))
        d = [h for h in hooks if h.status == 200][0]
        self.assertEqual(d.json["triggerEvent"], "BOOKING_CANCELLED")
        # the delivery itself still used the full URL: credentials and query
        self.assertEqual(d.headers.get("authorization"), "Basic aG9va3VzZXI6aG9va3Bhc3M=")
        # the dead subscriber has failed at least once (a logged error)
        self.wait_for(lambda: "event=outbox.transport_error" in self.svc.log_text(),
                      what="a transport error of subscriber 1")
        st, text, _ = self.svc.request("GET", "/metrics", raw=True, token=False)
        self.assertEqual(st, 200)
        text = text.decode()
        port = self.rx.server.server_address[1]
        self.assertIn('calsync_webhook_deliveries_total{subscriber="0",endpoint='
                      '"http://127.0.0.1:%d",result="ok"}' % port, text)
        self.assertRegex(text, r'calsync_webhook_deliveries_total\{subscriber="1",'
                               r'endpoint="http://127\.0\.0\.1:9",result="error"\} \d+')
        log = self.svc.log_text()
        for secret in SECRETS:
            self.assertNotIn(secret, text, "%s in /metrics" % secret)
            self.assertNotIn(secret, log, "%s in the log" % secret)
        self.assertNotIn("/hooks/calsync", text)
        self.assertRegex(log, r"event=outbox\.transport_error subscriber=1 "
                              r"endpoint=http://127\.0\.0\.1:9 ")


class TestDatabaseModes(CalsyncCase):
    def setUp(self):
        super().setUp()
        self.old_umask = os.umask(0o022)
        self.addCleanup(os.umask, self.old_umask)

    def files(self):
        db = os.path.join(self.tmp, "calsync.db")
        return {p: mode(p) for p in (db, db + "-wal", db + "-shm") if os.path.exists(p)}

    def test_db_wal_shm_are_0600_after_writes(self):
        svc = self.start()
        st, b, _ = svc.request("POST", "/v1/credentials",
                               {"provider": "google", "refresh_token": "rt-secret-1"})
        self.assertEqual(st, 201, b)
        db = svc.db_path
        # -wal and -shm exist while the service runs (WAL mode), after a write
        for suffix in ("", "-wal", "-shm"):
            self.assertTrue(os.path.exists(db + suffix), suffix)
        modes = self.files()
        self.assertEqual(set(modes.values()), {0o600}, {k: oct(v) for k, v in modes.items()})
        # and so is every other file calsync keeps next to it (intake journals)
        for name in os.listdir(self.tmp):
            if name.startswith("calsync.db"):
                self.assertEqual(mode(os.path.join(self.tmp, name)), 0o600, name)
        self.assertNotIn("store.mode_tightened", svc.log_text())

    def test_older_readable_database_is_tightened(self):
        svc = self.start()
        st, b, _ = svc.request("POST", "/v1/credentials",
                               {"provider": "google", "refresh_token": "rt-secret-2"})
        self.assertEqual(st, 201, b)
        svc.stop()
        db = svc.db_path
        for p in (db, db + "-wal", db + "-shm"):
            if os.path.exists(p):
                os.chmod(p, 0o644)         # as an older version left it
        self.start()
        self.assertRegex(self.svc.log_text(since_start=True),
                         r"event=store\.mode_tightened file=\S*calsync\.db mode_was=0644 mode=0600")
        st, b, _ = self.svc.request("POST", "/v1/credentials",
                                    {"provider": "google", "refresh_token": "rt-secret-3"})
        self.assertEqual(st, 201, b)
        modes = self.files()
        self.assertEqual(set(modes.values()), {0o600}, {k: oct(v) for k, v in modes.items()})


if __name__ == "__main__":
    import unittest
    unittest.main()
