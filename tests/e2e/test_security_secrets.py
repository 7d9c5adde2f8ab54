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
from harness import Calsync, CalsyncCase, lua_str  # noqa: E402
from test_google_sync import CAL, GoogleSyncCase, timed  # noqa: E402
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
        # on /metrics a subscriber is its index only: no label holds a URL
        ok_line = 'calsync_webhook_deliveries_total{subscriber="0",result="ok"}'

        def metrics():
            # the receiver answers before the sender counts the answer:
            # wait for the count rather than race it
            st, body, _ = self.svc.request("GET", "/metrics", raw=True, token=False)
            self.assertEqual(st, 200)
            body = body.decode()
            return body if ok_line in body else None
        text = self.wait_for(metrics, what="the delivery counted in /metrics")
        self.assertRegex(text, r'calsync_webhook_deliveries_total\{subscriber="1",'
                               r'result="error"\} \d+')
        self.assertNotIn("://", text)
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


KEY = "5f" * 32
OTHER_KEY = "a0" * 32


class TestTokensEncryptedAtRest(GoogleSyncCase):
    """CALSYNC_TOKEN_KEY: refresh and access tokens are stored sealed
    (AES-256-GCM); Google calls still work; a start without the key or
    with another one fails; plaintext rows of an older database are sealed
    at the first start with a key."""
    refresh_token = "rt-very-secret-refresh"

    def setUp(self):
        super().setUp()
        self.saved_env = {k: os.environ.get(k) for k in ("CALSYNC_TOKEN_KEY",
                                                         "CALSYNC_TOKEN_KEY_FILE")}
        self.addCleanup(self.restore_env)
        os.environ.pop("CALSYNC_TOKEN_KEY_FILE", None)

    def restore_env(self):
        for k, v in self.saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def rows(self):
        with self.svc.db() as con:
            return con.execute("SELECT refresh_token, access_token FROM credentials").fetchall()

    def raw_bytes(self):
        out = b""
        for sfx in ("", "-wal"):
            p = self.svc.db_path + sfx
            if os.path.exists(p):
                with open(p, "rb") as f:
                    out += f.read()
        return out

    def start_fails(self, needle):
        svc = Calsync(self.tmp, api_token=self.api_token, config_extra=self.config_extra,
                      policies=self.policies)
        with self.assertRaises(AssertionError) as cm:
            svc.start()
        svc.log.close()
        self.assertIn("exited 1", str(cm.exception))
        self.assertIn(needle, str(cm.exception))
        self.svc = None

    def test_sealed_tokens_work_and_need_their_key(self):
        os.environ["CALSYNC_TOKEN_KEY"] = KEY
        self.start()
        cred = self.credential()
        cal = self.calendar(cred)
        self.wait_synced(cal)                     # token refresh with the opened token
        self.assertTrue(self.requests(op="events.list"))
        rows = self.rows()
        self.assertEqual(len(rows), 1)
        rt, at = rows[0]
        self.assertTrue(rt.startswith("enc1:"), rt)
        self.assertTrue(at and at.startswith("enc1:"), at)   # the cached access token too
        tok = self.fg.control("GET", "/tokens")["access_tokens"]
        access = [t["access_token"] for t in tok if t["refresh_token"] == self.refresh_token]
        self.assertTrue(access)
        raw = self.raw_bytes()
        self.assertNotIn(self.refresh_token.encode(), raw)
        for a in access:
            self.assertNotIn(a.encode(), raw)
        self.svc.stop()
        os.environ.pop("CALSYNC_TOKEN_KEY")
        self.start_fails("the stored tokens are encrypted: set CALSYNC_TOKEN_KEY")
        os.environ["CALSYNC_TOKEN_KEY"] = OTHER_KEY
        self.start_fails("does not open with this key")
        os.environ["CALSYNC_TOKEN_KEY"] = "not-a-key"
        self.start_fails("CALSYNC_TOKEN_KEY must be 64 hex digits")
        # the key from a file works the same
        os.environ.pop("CALSYNC_TOKEN_KEY")
        kf = os.path.join(self.tmp, "token.key")
        with open(kf, "w") as f:
            f.write(KEY + "\n")
        os.chmod(kf, 0o600)
        os.environ["CALSYNC_TOKEN_KEY_FILE"] = kf
        self.start()
        after = self.sync_now(cal)
        self.wait_synced(cal, after)

    def test_plaintext_rows_sealed_at_first_start_with_a_key(self):
        os.environ.pop("CALSYNC_TOKEN_KEY", None)
        self.start()
        self.credential()
        self.assertEqual(self.rows()[0][0], self.refresh_token)   # no key: as given
        self.svc.stop()
        os.environ["CALSYNC_TOKEN_KEY"] = KEY
        self.start()
        self.assertIn("event=secret.tokens_sealed tokens=1", self.svc.log_text(since_start=True))
        self.assertTrue(self.rows()[0][0].startswith("enc1:"))
        cal = self.calendar(1)
        self.wait_synced(cal)


if __name__ == "__main__":
    import unittest
    unittest.main()
