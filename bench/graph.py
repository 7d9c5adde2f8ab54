"""Microsoft Graph intake and sync (issue 20): the item `graph` of
bench/run.py.

Set-up: tests/fake_graph.py as Microsoft Graph (real sockets, the real
delta paging of 200 items a page that calsync asks for), the real calsync
with `microsoft = {...}` pointed at it, one Outlook calendar.

- full sync: N single events are created in the fake mailbox (owner
  edits), then the calendar is added; the clock runs from the POST until
  last_synced_at is set and N events are mirrored: events/s through
  calendarView/delta, JSON decoding, normalisation and the mirror.
- intake: Graph notification batches ({"value": [16 items]}, the right
  clientState) are POSTed to /webhooks/microsoft over one keep-alive
  connection for SECONDS s: notifications journalled per second (each
  item is checked in constant time and journalled on its own), and the
  syncs they coalesce into.

The fake is Python, so full-sync figures include its paging cost; they
are a regression guard, not Graph's speed.
"""
import http.client
import json
import os
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from fake_graph import FakeGraph  # noqa: E402


def _lua(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _api(port, method, path, body=None, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    data = json.dumps(body).encode() if body is not None else None
    c.request(method, path, body=data,
              headers={"Content-Type": "application/json"} if data else {})
    r = c.getresponse()
    raw = r.read()
    if conn is None:
        c.close()
    return r.status, (json.loads(raw) if raw and raw[:1] in b"{[" else raw)


def item_graph(start_service, R, n_events=2000, seconds=5.0):
    """start_service(extra=...) -> a started bench Service. Rows for the
    table: (name, value, unit, baseline, target, ok)."""
    fg = FakeGraph().start()
    rows = []
    try:
        base = time.time()
        for i in range(n_events):
            t = time.gmtime(base + 30 * 86400 + i * 3600)
            s = time.strftime("%Y-%m-%dT%H:%M:%S", t)
            e = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + 30 * 86400 + i * 3600 + 1800))
            fg.host(op="create", event={"subject": "b%d" % i,
                                        "start": {"dateTime": s, "timeZone": "UTC"},
                                        "end": {"dateTime": e, "timeZone": "UTC"}})
        fg.control("POST", "/config", {"delta_page_size": 200})
        extra = ("microsoft = { client_id = \"bench\", api_base = %s, token_url = %s }"
                 % (_lua(fg.graph_base), _lua(fg.token_url)))
        svc = start_service(extra=extra)
        try:
            st, cred = svc.api("POST", "/v1/credentials", {"provider": "microsoft",
                                                          "refresh_token": "rt-bench"})
            assert st == 201, cred
            t0 = time.time()
            st, cal = svc.api("POST", "/v1/calendars", {"credential_id": cred["id"],
                                                       "external_id": "primary"})
            assert st == 201, cal
            svc.wait("SELECT last_synced_at IS NOT NULL FROM calendars WHERE id = ?",
                     (cal["id"],), every=0.02)
            t1 = time.time()
            got = svc.q("SELECT count(*) FROM events WHERE calendar_id = ?", (cal["id"],))
            assert got == n_events, (got, n_events)
            eps = n_events / (t1 - t0)
            rows.append(("graph: full sync events/s (%d events)" % n_events, eps, "1/s",
                         None, "", None))
            # intake: batches with the channel's own clientState
            svc.wait("SELECT count(*) FROM channels WHERE state = 'live'", every=0.02)
            with svc.db() as con:
                ch, tok = con.execute("SELECT id, token FROM channels WHERE state = 'live'"
                                      ).fetchone()
            item = {"subscriptionId": "x", "changeType": "updated",
                    "clientState": "%s.%s" % (ch, tok), "resource": "Users/u/Events/e",
                    "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "id": "e"}}
            batch = json.dumps({"value": [item] * 16}).encode()
            syncs0 = svc.q("SELECT count(*) FROM notifications")
            conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=30)
            sent, t0 = 0, time.time()
            while time.time() - t0 < seconds:
                conn.request("POST", "/webhooks/microsoft", body=batch,
                             headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                assert r.status == 202, r.status
                sent += 16
            dt = time.time() - t0
            conn.close()
            journalled = svc.q("SELECT count(*) FROM notifications") - syncs0
            rows.append(("graph: intake notifications/s (batches of 16)", sent / dt, "1/s",
                         None, "", None))
            R["graph"] = {"events": n_events, "full_sync_eps": eps, "intake_sent": sent,
                          "intake_seconds": dt, "intake_journalled": journalled}
        finally:
            svc.close()
    finally:
        fg.stop()
    return rows
