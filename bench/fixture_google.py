#!/usr/bin/env python3
"""Benchmark fixture for Google Calendar v3 (Python 3 stdlib, 127.0.0.1 only).

Not a fake with behaviour (that is tests/fake_google.py): a server of
pre-rendered pages, so that it is never the bottleneck of a measurement.

    python3 bench/fixture_google.py        prints "PORT <n>", serves until SIGTERM

Every calendar (the {calendarId} of the URL) is empty unless prepared:

  POST /_bench/prepare {"calendar": C, "events": N, "prefix": "e"}
      renders the full listing of N events of C into pages of 2,500 now
      (time taken is reported back), served for any request without syncToken.
  POST /_bench/change {"calendar": C, "events": M, "shift_min": 60}
      renders M changed events (the first M, moved by shift_min minutes) as the
      answer to the calendar's current sync token; the token after them is new.
  GET  /_bench/stats          {"list": {C: n}, "list_total", "pages_total", "watch", "token", "stop",
                               "first_list_at": {C: epoch s}, "watch_at": {C: epoch s}}
  GET  /_bench/list_at?prefix=P   {C: [epoch s of every events.list first page]} for
                               the calendars whose id starts with P (not reset)
  POST /_bench/reset_stats

Google endpoints: POST /token; GET /calendar/v3/calendars/C/events (pages,
syncToken); GET .../events/ID/instances (empty); POST .../events/watch;
POST /calendar/v3/channels/stop; POST /hook (outbound webhook sink, 200).
"""
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, parse_qs, unquote

PAGE = 2500
# Every event in the future whatever the date (a past booking would go to
# on_past and measure an `ignore`): midnight UTC 30 days ahead, or the
# instant bench/run.py passes, so that its mirror rows and bookings match.
BASE_MS = int(os.environ.get("BENCH_BASE_MS") or
              (int(time.time()) // 86400 + 30) * 86400 * 1000)

lock = threading.Lock()
full = {}      # cal -> [bytes page]  (page i: nextPageToken "p<i+1>" or nextSyncToken)
gens = {}      # cal -> current sync token generation (int)
changes = {}   # (cal, gen) -> [bytes page]
stats = {"list": {}, "list_total": 0, "pages_total": 0, "watch": 0, "token": 0, "stop": 0}
list_at = {}   # cal -> [epoch s of each first-page events.list], for /_bench/list_at


def iso(ms):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + "Z"


def event(prefix, i, shift_min=0, etag_gen=1):
    start = BASE_MS + i * 3600 * 1000 + shift_min * 60000
    return {
        "kind": "calendar#event", "etag": '"%d%08d"' % (etag_gen, i),
        "id": "%s%07d" % (prefix, i), "status": "confirmed",
        "htmlLink": "https://www.google.com/calendar/event?eid=%s%07d" % (prefix, i),
        "created": "2026-11-01T10:00:00.000Z", "updated": "2026-11-2%dT10:00:00.000Z" % etag_gen,
        "summary": "Booking %d" % i,
        "creator": {"email": "host@example.com", "self": True},
        "organizer": {"email": "host@example.com", "self": True},
        "start": {"dateTime": iso(start), "timeZone": "UTC"},
        "end": {"dateTime": iso(start + 1800 * 1000), "timeZone": "UTC"},
        "iCalUID": "%s%07d@google.com" % (prefix, i), "sequence": etag_gen - 1,
        "reminders": {"useDefault": True}, "eventType": "default",
    }


def render(cal, items, sync_token):
    pages = []
    n = max(1, (len(items) + PAGE - 1) // PAGE)
    for p in range(n):
        body = {"kind": "calendar#events", "etag": '"p%d"' % p, "summary": cal,
                "updated": "2026-11-25T10:00:00.000Z", "timeZone": "UTC",
                "accessRole": "owner", "defaultReminders": [],
                "items": items[p * PAGE:(p + 1) * PAGE]}
        if p + 1 < n:
            body["nextPageToken"] = "p%d" % (p + 1)
        else:
            body["nextSyncToken"] = sync_token
        pages.append(json.dumps(body, separators=(",", ":")).encode())
    return pages


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # headers and body are two writes: no 40 ms delayed-ACK stall

    def log_message(self, *a):
        pass

    def send(self, status, body=b"{}", ctype="application/json"):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return {}

    def do_GET(self):
        u = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        parts = [unquote(p) for p in u.path.split("/") if p]
        if u.path == "/_bench/stats":
            with lock:
                return self.send(200, json.dumps(stats).encode())
        if u.path == "/_bench/list_at":   # ?prefix=P: the calendars whose id starts with P
            with lock:
                return self.send(200, {c: v for c, v in list_at.items() if c.startswith(q.get("prefix", ""))})
        # calendar/v3/calendars/C/events[/ID/instances]
        if len(parts) >= 5 and parts[:2] == ["calendar", "v3"] and parts[2] == "calendars" and parts[4] == "events":
            cal = parts[3]
            if len(parts) == 7 and parts[6] == "instances":
                return self.send(200, {"kind": "calendar#events", "items": []})
            if len(parts) != 5:
                return self.send(404, {"error": {"code": 404, "message": "Not Found"}})
            page = int(q.get("pageToken", "p0")[1:] or 0)
            with lock:
                stats["pages_total"] += 1
                if page == 0:
                    stats.setdefault("first_list_at", {}).setdefault(cal, time.time())
                    stats["list_total"] += 1
                    stats["list"][cal] = stats["list"].get(cal, 0) + 1
                    list_at.setdefault(cal, []).append(time.time())
                gen = gens.get(cal, 0)
                tok = q.get("syncToken")
                if tok is None:
                    pages = full.get(cal)
                    if pages is None:
                        pages = full[cal] = render(cal, [], "g%d" % gen)
                elif tok == "g%d" % gen:   # nothing new since that token
                    pages = render(cal, [], tok)
                else:
                    pages = changes.get((cal, tok))
                    if pages is None:
                        return self.send(410, {"error": {"code": 410, "message": "Sync token is no longer valid, a full sync is required.",
                                                         "errors": [{"domain": "calendar", "reason": "fullSyncRequired"}]}})
            return self.send(200, pages[min(page, len(pages) - 1)])
        return self.send(404, {"error": {"code": 404, "message": "Not Found"}})

    def do_POST(self):
        u = urlsplit(self.path)
        parts = [unquote(p) for p in u.path.split("/") if p]
        b = self.body()
        if u.path == "/token":
            with lock:
                stats["token"] += 1
            return self.send(200, {"access_token": "bench-at", "expires_in": 3599, "token_type": "Bearer"})
        if u.path == "/hook":           # outbound webhook sink: discard
            with lock:
                stats["hooks"] = stats.get("hooks", 0) + 1
            return self.send(200, {})
        if u.path == "/_bench/prepare":
            t0 = time.time()
            cal, n, prefix = b["calendar"], int(b["events"]), b.get("prefix", "e")
            items = [event(prefix, i) for i in range(n)]
            with lock:
                gen = gens.setdefault(cal, 0)
                full[cal] = render(cal, items, "g%d" % gen)
            return self.send(200, {"pages": len(full[cal]), "seconds": time.time() - t0,
                                   "bytes": sum(len(p) for p in full[cal])})
        if u.path == "/_bench/change":
            cal, n = b["calendar"], int(b["events"])
            shift, prefix = int(b.get("shift_min", 60)), b.get("prefix", "e")
            with lock:
                gen = gens.get(cal, 0)
            items = [event(prefix, i, shift, gen + 2) for i in range(n)]
            with lock:
                changes[(cal, "g%d" % gen)] = render(cal, items, "g%d" % (gen + 1))
                gens[cal] = gen + 1
            return self.send(200, {"token": "g%d" % gen})
        if u.path == "/_bench/reset_stats":
            with lock:
                stats.update({"first_list_at": {}, "watch_at": {}, "list": {}, "list_total": 0, "pages_total": 0, "watch": 0, "token": 0, "stop": 0})
            return self.send(200, {})
        if len(parts) == 6 and parts[2] == "calendars" and parts[4:] == ["events", "watch"]:
            with lock:
                stats["watch"] += 1
                stats.setdefault("watch_at", {}).setdefault(parts[3], time.time())
            exp = int(time.time() * 1000) + 7 * 86400 * 1000
            return self.send(200, {"kind": "api#channel", "id": b.get("id", "ch"),
                                   "resourceId": "res-" + parts[3], "resourceUri": "x",
                                   "token": b.get("token"), "expiration": str(exp)})
        if u.path == "/calendar/v3/channels/stop":
            with lock:
                stats["stop"] += 1
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        return self.send(404, {"error": {"code": 404, "message": "Not Found"}})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main():
    srv = Server(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Handler)
    print("PORT %d" % srv.server_address[1], flush=True)
    import signal
    signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=srv.shutdown).start())
    srv.serve_forever()


if __name__ == "__main__":
    main()
