"""A calendar deleted and then registered again (DESIGN §4 POST
/v1/calendars: "reactivating it if it was deleted; starts watching") is
watched again: a new live channel, shown by GET /v1/calendars/{id}, and a
host's edit reaches calsync by push, not by the poll (poll_interval is 600 s
here, far beyond the test's deadlines)."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_google_sync import CAL, GoogleSyncCase, timed  # noqa: E402


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class TestReactivation(GoogleSyncCase):
    def setUp(self):
        super().setUp()
        self.fg.control("DELETE", "/notification_faults")   # pushes on

    def channels(self, state=None):
        chans = self.svc.request("GET", "/v1/channels")[1]["channels"]
        return [c for c in chans if state is None or c["state"] == state]

    def test_calendar_reactivated_after_delete_is_watched_again(self):
        self.start()
        cred = self.credential()
        cal = self.calendar(cred)
        self.wait_synced(cal)
        first = self.wait_for(lambda: self.channels("live"), what="a live channel")[0]

        st, body, _ = self.svc.request("DELETE", "/v1/calendars/%d" % cal)
        self.assertEqual((st, body["state"]), (200, "stopped"))
        self.wait_for(lambda: not self.channels("live"), what="the channel stopped")

        st, body, _ = self.svc.request("POST", "/v1/calendars", {
            "credential_id": cred, "external_id": CAL})
        self.assertEqual(st, 200, body)            # the existing pair, reactivated
        self.assertEqual(body["id"], cal)
        self.assertEqual(body["state"], "syncing")

        live = self.wait_for(lambda: self.channels("live"), what="a new live channel")
        self.assertEqual(len(live), 1)
        self.assertNotEqual(live[0]["id"], first["id"])
        self.assertEqual(live[0]["calendar_id"], cal)
        self.wait_for(lambda: self.svc.request("GET", "/v1/calendars/%d" % cal)[1]
                      ["state"] == "active", what="the calendar active again")
        shown = self.svc.request("GET", "/v1/calendars/%d" % cal)[1]["channel"]
        self.assertIsNotNone(shown)
        self.assertEqual(shown["id"], live[0]["id"])
        fake = {c["id"]: c for c in self.fg.control("GET", "/channels")["channels"]}
        self.assertEqual(fake[live[0]["id"]]["state"], "live")
        self.assertEqual(fake[first["id"]]["state"], "stopped")

        # a host edit reaches calsync through the new channel
        t = time.time() + 3 * 86400
        ev = self.fg.host(CAL, op="create", event=timed(
            rfc3339(t), rfc3339(t + 3600), summary="after reactivation"))
        self.wait_for(lambda: ev["id"] in self.mirror(cal), timeout=20,
                      what="the pushed event in the mirror")
        with self.svc.db() as con:
            pushed = con.execute(
                "SELECT count(*) FROM notifications WHERE channel_id = ?"
                " AND resource_state = 'exists'", (live[0]["id"],)).fetchone()[0]
        self.assertGreaterEqual(pushed, 1)


if __name__ == "__main__":
    import unittest
    unittest.main()
