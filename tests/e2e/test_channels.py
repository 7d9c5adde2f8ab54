"""Push channels end to end (DESIGN §2 Intake, Channels; §7) against the
fake Google: watch on first sync, real push notifications reaching the
intake, renewal ahead of the expiration Google granted (new channel first,
then the old one stopped), restart keeping channels, stop on delete."""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import future  # noqa: E402
from test_google_sync import CAL, GoogleSyncCase, timed  # noqa: E402


class ChannelCase(GoogleSyncCase):
    def setUp(self):
        super().setUp()
        self.fg.control("DELETE", "/notification_faults")   # pushes on

    def live_channels(self):
        return [c for c in self.svc.request("GET", "/v1/channels")[1]["channels"]
                if c["state"] == "live"]

    def fake_channels(self):
        return self.fg.control("GET", "/channels")["channels"]


class TestWatch(ChannelCase):
    def test_first_sync_opens_one_channel_and_pushes_sync_the_calendar(self):
        self.start()
        cal = self.calendar(self.credential())
        self.wait_synced(cal)
        live = self.wait_for(self.live_channels, what="a live channel")
        self.assertEqual(len(live), 1)
        ch = live[0]
        self.assertEqual(ch["calendar_id"], cal)
        self.assertTrue(ch["resource_id"])
        self.assertTrue(ch["expiration"].endswith("Z"))
        st, c, _ = self.svc.request("GET", "/v1/calendars/%d" % cal)
        self.assertEqual(c["channel"]["id"], ch["id"])
        fake = [f for f in self.fake_channels() if f["id"] == ch["id"]]
        self.assertEqual(len(fake), 1)
        self.assertEqual(fake[0]["address"], "http://127.0.0.1:%d/webhooks/google" % self.svc.port)
        self.assertEqual(len(fake[0]["token"]), 64)             # random per channel
        watch = self.requests(op="events.watch")
        self.assertEqual(len(watch), 1)
        # the first `sync` message arrived (recorded, nothing scheduled)
        with self.svc.db() as con:
            self.wait_for(lambda: con.execute(
                "SELECT count(*) FROM notifications WHERE resource_state='sync'").fetchone()[0] == 1,
                what="the sync handshake")
        # a host edit reaches calsync by push, well inside poll_interval
        last = self.cal_row(cal)[2]
        ev = self.fg.host(CAL, op="create", event=timed(
            future(3, 10), future(3, 11), summary="pushed"))
        self.wait_for(lambda: ev["id"] in self.mirror(cal), timeout=10,
                      what="the pushed event in the mirror")
        self.assertGreater(self.cal_row(cal)[2], last)
        with self.svc.db() as con:
            n = con.execute("SELECT count(*) FROM notifications WHERE resource_state='exists'"
                            ).fetchone()[0]
        self.assertGreaterEqual(n, 1)

    def test_wrong_token_on_a_real_channel_is_401(self):
        self.start()
        cal = self.calendar(self.credential())
        ch = self.wait_for(self.live_channels, what="a live channel")[0]
        st, body, _ = self.svc.request("POST", "/webhooks/google", b"", headers={
            "X-Goog-Channel-ID": ch["id"], "X-Goog-Channel-Token": "forged",
            "X-Goog-Resource-State": "exists", "X-Goog-Message-Number": "9"})
        self.assertEqual(st, 401)
        self.assertEqual(body["error"]["code"], "unauthorized")
        del cal

    def test_restart_keeps_the_stored_channel(self):
        self.start()
        cal = self.calendar(self.credential())
        self.wait_synced(cal)
        ch = self.wait_for(self.live_channels, what="a live channel")[0]
        self.svc.stop()
        self.fg.control("DELETE", "/requests")
        self.svc.start()
        self.sync_now(cal)
        self.wait_for(lambda: self.requests(op="events.list"), what="a sync after restart")
        self.assertEqual(self.requests(op="events.watch"), [])   # no new watch
        self.assertEqual([c["id"] for c in self.live_channels()], [ch["id"]])
        # and its token still works
        ev = self.fg.host(CAL, op="create", event=timed(
            future(4, 10), future(4, 11), summary="after restart"))
        self.wait_for(lambda: ev["id"] in self.mirror(cal), timeout=10,
                      what="a push through the kept channel")


class TestRenewal(ChannelCase):
    def test_short_grant_renews_at_half_new_first_then_old_stopped(self):
        # Google may grant less than asked: 6 s here, less than renew_before,
        # so calsync renews at half the granted lifetime.
        self.fg.control("POST", "/max_ttl", {"max_ttl": 6})
        self.start()
        cal = self.calendar(self.credential())
        first = self.wait_for(self.live_channels, what="a live channel")[0]
        def renewed():
            chans = self.svc.request("GET", "/v1/channels")[1]["channels"]
            old = [c for c in chans if c["id"] == first["id"]]
            live = [c for c in chans if c["state"] == "live"]
            return old and old[0]["state"] == "stopped" and len(live) == 1 and live[0]
        new = self.wait_for(renewed, timeout=15, what="a renewal")
        self.assertNotEqual(new["id"], first["id"])
        ops = [(r["op"], (r.get("body") or {}).get("id")) for r in self.requests()
               if r["op"] in ("events.watch", "channels.stop")]
        i_watch = ops.index(("events.watch", new["id"]))
        i_stop = ops.index(("channels.stop", first["id"]))
        self.assertLess(i_watch, i_stop)                # new first, then old stopped
        fake = {c["id"]: c for c in self.fake_channels()}
        self.assertEqual(fake[first["id"]]["state"], "stopped")
        self.assertEqual(fake[new["id"]]["state"], "live")
        # stopped rows are kept
        ids = [c["id"] for c in self.svc.request("GET", "/v1/channels")[1]["channels"]]
        self.assertIn(first["id"], ids)
        del cal


class TestStop(ChannelCase):
    def test_delete_calendar_stops_its_channel(self):
        self.start()
        cal = self.calendar(self.credential())
        ch = self.wait_for(self.live_channels, what="a live channel")[0]
        st, body, _ = self.svc.request("DELETE", "/v1/calendars/%d" % cal)
        self.assertEqual(body["state"], "stopped")
        self.wait_for(lambda: not self.live_channels(), what="the channel stopped")
        fake = {c["id"]: c for c in self.fake_channels()}
        self.assertEqual(fake[ch["id"]]["state"], "stopped")
        # a late push on the stopped channel: 200, nothing scheduled
        st, _, _ = self.svc.request("POST", "/webhooks/google", b"", headers={
            "X-Goog-Channel-ID": ch["id"], "X-Goog-Resource-State": "exists"})
        self.assertEqual(st, 200)

    def test_unknown_channel_on_a_watched_resource_is_stopped_once(self):
        """A channel calsync has no row for (opened before a database
        restore, say) keeps sending for the calendar calsync watches:
        calsync knows the resource id and the credential, so it stops it
        with Google (DESIGN §2 Intake), once, and schedules nothing for it."""
        self.start()
        cal = self.calendar(self.credential())
        ours = self.wait_for(self.live_channels, what="a live channel")[0]
        self.wait_synced(cal)
        tok = self.fg.access_token(self.refresh_token)
        st, b, _ = self.fg.api("POST", "/calendars/%s/events/watch" % CAL, token=tok, body={
            "id": "foreign-1", "type": "web_hook", "token": "whatever",
            "address": "http://127.0.0.1:%d/webhooks/google" % self.svc.port})
        self.assertEqual(st, 200, b)
        self.assertEqual(b["resourceId"], ours["resource_id"])
        for i in range(3):   # each edit pushes on both channels until stopped
            self.fg.host(CAL, op="create", event=timed(future(i + 2, 10), future(i + 2, 11)))
            time.sleep(0.3)
        fake = lambda: {c["id"]: c for c in self.fake_channels()}   # noqa: E731
        self.wait_for(lambda: fake()["foreign-1"]["state"] == "stopped",
                      what="the foreign channel stopped")
        self.assertEqual(fake()[ours["id"]]["state"], "live")
        stops = [r for r in self.requests(op="channels.stop")
                 if (r.get("body") or {}).get("id") == "foreign-1"]
        self.assertEqual(len(stops), 1)
        self.assertEqual(stops[0]["body"]["resourceId"], ours["resource_id"])
        # an unknown channel for a resource calsync does not watch: no stop.
        # The intake decides before it answers: by the 200 it has counted
        # the push as unknown, and a stop would have been asked for (and
        # counted, and logged) already
        def metric(prefix):
            text = self.svc.request("GET", "/metrics", raw=True)[1].decode()
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith(prefix))
        unknown = 'calsync_notifications_total{outcome="unknown"}'
        stops = "calsync_intake_stop_requests_total"
        before = (metric(unknown), metric(stops))
        st, _, _ = self.svc.request("POST", "/webhooks/google", b"", headers={
            "X-Goog-Channel-ID": "stranger", "X-Goog-Resource-ID": "not-ours",
            "X-Goog-Resource-State": "exists"})
        self.assertEqual(st, 200)
        self.assertEqual((metric(unknown), metric(stops)), (before[0] + 1, before[1]))
        log = self.svc.log_text()
        self.assertIsNone(re.search(r'event=intake\.foreign_channel channel="?stranger"?\s', log))
        self.assertRegex(log, r'event=intake\.foreign_channel channel="?foreign-1"?\s')
        self.assertEqual([r for r in self.requests(op="channels.stop")
                          if (r.get("body") or {}).get("id") == "stranger"], [])
        self.assertNotIn("foreign-1", [c["id"] for c in self.live_channels()])
