"""Latency of a host's change, end to end (issue 22): the item `latency` of
bench/run.py.

Set-up: tests/fake_google.py (pushes on, like tests/e2e/test_channels.py)
as Google, tests/e2e/receiver.py as the booking app, the real calsync
between them (debug log), one calendar with its live push channel and
2 x CHANGES events, each with a booking.

Isolated: CHANGES times, one at a time, a host moves one booked event in
the fake (`/_control/events`, a host edit); the clock runs from just before
that call until the receiver has acknowledged (200) the signed
BOOKING_RESCHEDULED of that booking with the new start. After each ack one
`events.list` round trip to the same fake (with calsync's current sync
token: all an inline push handler needs) is timed: the floor, measured in
the same run. GAP (0.6 s) separates an ack from the next change: a host
editing by hand; changes closer together than calsync's push spacing
(0.5 s, docs/performance.md) are a stream, which the burst rows measure.

Burst: CHANGES times, BURST valid `exists` notifications for the same
calendar are sent to calsync's intake over one keep-alive connection,
paced over BURST_S s; at a random point of its middle 80 % (seeded: the
same points every run), the host moves a booked event. The
same clock (change -> ack), and the `events.list` calls the fake served
from the first notification until the calendar is clean again: the lists
per burst.

The timeline of the change with the median latency (calsync's log lines
between the change and its ack, the fake's push and events.list, the
receiver's ack), in ms from the change, and each step's median time over
all the changes (the logs' times are whole milliseconds; the median over
30 changes evens that out) are printed to stderr and kept in
build/bench/results.json.
"""
import http.client
import math
import os
import random
import re
import sqlite3
import statistics
import sys
import time
import urllib.parse
from datetime import datetime, timedelta, timezone

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from fake_google import FakeGoogle  # noqa: E402
from receiver import Receiver  # noqa: E402

CAL = "primary"
UTC = timezone.utc


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def pct(xs, p):
    """p-th percentile, nearest rank (the p99 of 30 samples is the largest)."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def iso(dt):
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_ts(text):
    """RFC 3339 with optional milliseconds -> epoch seconds (float)."""
    text = text.replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


class Bench:
    def __init__(self, make_service, changes, burst, burst_s, gap):
        self.make_service = make_service
        self.changes, self.burst, self.burst_s, self.gap = changes, burst, burst_s, gap
        self.fg = self.rx = self.svc = None
        self.moves = {}   # event id -> number of moves so far

    # ------------------------------------------------------------ set-up
    def setup(self):
        self.fg = FakeGoogle().start()
        self.rx = Receiver(secret="whsec_bench").start()
        base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(days=30)
        self.events = []
        for i in range(2 * self.changes):
            s = base + timedelta(hours=i)
            ev = self.fg.host(CAL, op="create", event={
                "start": {"dateTime": iso(s)}, "end": {"dateTime": iso(s + timedelta(minutes=30))},
                "summary": "Booking %d" % i})
            self.events.append((ev["id"], s))
        self.svc = self.make_service(
            google='google = { api_base = "%s", token_url = "%s", client_id = "x", client_secret = "y" }'
                   % (self.fg.api_base, self.fg.token_url),
            webhooks='webhooks = { { url = "%s", secret = "%s" } }' % (self.rx.url, self.rx.secret),
            log_level="debug")
        st, cred = self.svc.api("POST", "/v1/credentials", {"provider": "google", "refresh_token": "rt-bench"})
        assert st == 201, (st, cred)
        st, cal = self.svc.api("POST", "/v1/calendars", {"credential_id": cred["id"], "external_id": CAL})
        assert st in (200, 201), (st, cal)
        self.cal = cal["id"]
        self.svc.wait("SELECT last_synced_at IS NOT NULL FROM calendars WHERE id = ?", (self.cal,), timeout=60)
        self.svc.wait("SELECT count(*) FROM channels WHERE calendar_id = ? AND state = 'live'", (self.cal,),
                      timeout=60)
        self.svc.wait("SELECT count(*) >= ? FROM events WHERE calendar_id = ?", (len(self.events), self.cal),
                      timeout=60)
        for i, (eid, s) in enumerate(self.events):
            st, b = self.svc.api("POST", "/v1/bookings", {
                "uid": "lat-%d" % i, "calendar_id": self.cal, "title": "Booking %d" % i,
                "start": iso(s), "end": iso(s + timedelta(minutes=30)), "event_id": eid})
            assert st == 201, (st, b)
        with self.svc.db() as con:
            self.ch_id, self.ch_tok = con.execute(
                "SELECT id, token FROM channels WHERE calendar_id = ? AND state = 'live'",
                (self.cal,)).fetchone()
        self.access = self.fg.access_token("bench-floor")
        self.quiesce()

    def close(self):
        for x in (self.svc, self.rx, self.fg):
            try:
                if x:
                    x.close() if hasattr(x, "close") else x.stop()
            except Exception as e:   # noqa: BLE001
                log("latency: clean-up: %r" % e)

    def quiesce(self, after_wall=None, timeout=30):
        """The calendar is clean (no notification waiting for a sync) and,
        when after_wall is given, synced after it."""
        self.svc.wait("SELECT dirty = 0 AND last_synced_at >= ? FROM calendars WHERE id = ?",
                      (int((after_wall or 0) * 1000), self.cal), timeout=timeout, every=0.005)

    # ------------------------------------------------------------ pieces
    def list_seq(self):
        r = self.fg.control("GET", "/requests?op=events.list")["requests"]
        return r[-1]["seq"] if r else 0

    def lists_since(self, seq):
        return self.fg.control("GET", "/requests?op=events.list&since=%d" % seq)["requests"]

    def move(self, i):
        """The host moves event i by a further day; returns (uid, new start)."""
        eid, s = self.events[i]
        k = self.moves[eid] = self.moves.get(eid, 0) + 1
        ns = s + timedelta(days=k)
        self.fg.host(CAL, op="move", id=eid, start=iso(ns), end=iso(ns + timedelta(minutes=30)))
        return "lat-%d" % i, iso(ns)

    def ack_of(self, uid, start, timeout=30):
        def match(d):
            return (d.status == 200 and d.json and d.json.get("triggerEvent") == "BOOKING_RESCHEDULED"
                    and d.json["payload"].get("uid") == uid and d.json["payload"].get("startTime") == start)
        ds = self.rx.wait(lambda ds: any(match(d) for d in ds), timeout=timeout)
        return next(d for d in ds if match(d))

    def floor_once(self):
        with self.svc.db() as con:
            tok = con.execute("SELECT sync_token FROM calendars WHERE id = ?", (self.cal,)).fetchone()[0]
        t0 = time.monotonic()
        st, body, _ = self.fg.api("GET", "/calendars/%s/events" % CAL, token=self.access,
                                  query={"syncToken": tok, "showDeleted": "true", "singleEvents": "true"})
        dt = time.monotonic() - t0
        assert st == 200, (st, body)
        return dt

    def timeline(self, t0w, ackw, fake_seq, list_seq):
        """Every calsync log line between the change and its ack, the fake's
        push and listings and the ack: [(ms from the change, who, what)]."""
        out = []
        with open(self.svc.log_path, "rb") as f:
            for line in f.read().decode("utf-8", "replace").splitlines():
                m = re.match(r"ts=(\S+) level=\S+ event=(\S+)(.*)", line)
                if not m:
                    continue
                t = parse_ts(m.group(1))
                # log times are whole ms: a line of the change's first ms
                # may read up to 1 ms before it
                if t0w - 0.001 <= t <= ackw + 0.001:
                    out.append(((t - t0w) * 1000, "calsync", m.group(2) + m.group(3)[:100]))
        for n in self.fg.control("GET", "/notifications?since=%d" % fake_seq)["notifications"]:
            if n.get("enqueued_at"):
                t = parse_ts(n["enqueued_at"])
                if t <= ackw:
                    out.append(((t - t0w) * 1000, "fake", "push queued (%s)" % n["resource_state"]))
            if n.get("sent_at"):
                t = parse_ts(n["sent_at"])
                if t <= ackw:
                    out.append(((t - t0w) * 1000, "fake", "push answered by calsync (%s)" % n["http_status"]))
        for r in self.lists_since(list_seq):
            t = parse_ts(r["time"])
            if t <= ackw:
                out.append(((t - t0w) * 1000, "fake", "events.list received (served in %.1f ms)"
                            % (r.get("duration_ms") or 0)))
        out.append(((ackw - t0w) * 1000, "receiver", "BOOKING_RESCHEDULED acknowledged"))
        out.sort(key=lambda x: x[0])
        return out

    @staticmethod
    def steps(timelines):
        """Median over the changes of each step's first time (ms from the
        change): the logs' whole-ms times average out."""
        per = {}
        for tl in timelines:
            seen = set()
            for t, who, what in tl:
                key = (who, re.split(r"[ (]", what, 1)[0] if who == "calsync" else what.split(" (")[0])
                if key not in seen:
                    seen.add(key)
                    per.setdefault(key, []).append(t)
        rows = [(statistics.median(ts), len(ts), who, what) for (who, what), ts in per.items()]
        return sorted(rows)

    def notif_seq(self):
        ns = self.fg.control("GET", "/notifications")["notifications"]
        return ns[-1]["seq"] if ns else 0

    # ------------------------------------------------------------ phases
    def isolated(self):
        lats, floors, traces = [], [], []
        for i in range(self.changes):
            nseq, lseq = self.notif_seq(), self.list_seq()
            t0w, t0 = time.time(), time.monotonic()
            uid, start = self.move(i)
            d = self.ack_of(uid, start)
            lat = d.at - t0
            lats.append(lat)
            traces.append((lat, self.timeline(t0w, t0w + lat, nseq, lseq)))
            floors.append(self.floor_once())
            self.quiesce(t0w)
            time.sleep(self.gap)
        self.timelines = [t for _, t in traces]
        return lats, floors, sorted(traces, key=lambda x: x[0])[len(traces) // 2][1], \
            self.steps(self.timelines)

    def bursts(self):
        lats, lists, spans, traces = [], [], [], []
        msg = 10 ** 6
        rnd = random.Random(22)
        hdr = {"X-Goog-Channel-ID": self.ch_id, "X-Goog-Channel-Token": self.ch_tok,
               "X-Goog-Resource-State": "exists", "X-Goog-Resource-ID": "bench"}
        for b in range(self.changes):
            i = self.changes + b
            lseq, nseq = self.list_seq(), self.notif_seq()
            conn = http.client.HTTPConnection("127.0.0.1", self.svc.port, timeout=10)
            ts = time.monotonic()
            t0 = t0w = None
            at = int(self.burst * rnd.uniform(0.1, 0.9))
            for k in range(self.burst):
                target = ts + k * self.burst_s / self.burst
                now = time.monotonic()
                if now < target:
                    time.sleep(target - now)
                if k == at:
                    t0w, t0 = time.time(), time.monotonic()
                    uid, start = self.move(i)
                msg += 1
                conn.request("POST", "/webhooks/google", body=b"", headers=dict(hdr, **{"X-Goog-Message-Number": str(msg)}))
                r = conn.getresponse()
                r.read()
                assert r.status == 200, r.status
            spans.append(time.monotonic() - ts)
            t_end = time.time()
            conn.close()
            d = self.ack_of(uid, start)
            lat = d.at - t0
            lats.append(lat)
            self.quiesce(t_end)
            time.sleep(0.7)   # a spaced follow-up (0.5 s after the last) has run
            lists.append(len(self.lists_since(lseq)))
        return lats, lists, spans


def lists_bound(burst_s, spacing=0.5, flush=0.05):
    """events.list a burst of burst_s seconds may cost: the first push's sync
    at once, then one per push spacing while pushes arrive (the last ones
    reach the scheduler up to a flush later)."""
    return 1 + math.ceil((burst_s + flush) / spacing)


def item_latency(make_service, R, changes=30, burst=1000, burst_s=1.0, gap=0.6):
    log("latency: %d isolated changes, then %d changes amid bursts of %d notifications in %.1f s"
        % (changes, changes, burst, burst_s))
    b = Bench(make_service, changes, burst, burst_s, gap)
    try:
        b.setup()
        lats, floors, trace, steps = b.isolated()
        log("latency: isolated p50 %.1f ms p99 %.1f ms, floor p50 %.2f ms"
            % (statistics.median(lats) * 1000, pct(lats, 99) * 1000, statistics.median(floors) * 1000))
        log("latency: timeline of the median change (ms from the host's change):")
        for t, who, what in trace:
            log("  %8.1f  %-8s %s" % (t, who, what))
        log("latency: each step, median over the changes (ms from the host's change; n = changes with it):")
        for t, n, who, what in steps:
            log("  %8.1f  n=%-3d %-8s %s" % (t, n, who, what))
        blats, blists, spans = b.bursts()
        log("latency: amid bursts p50 %.1f ms p99 %.1f ms; events.list per burst %s; burst spans %.2f-%.2f s"
            % (statistics.median(blats) * 1000, pct(blats, 99) * 1000, blists, min(spans), max(spans)))
    finally:
        b.close()
    R["latency"] = {"isolated_s": lats, "floor_s": floors, "timeline": trace, "steps": steps,
                    "timelines": b.timelines,
                    "burst_s": blats, "burst_lists": blists, "burst_spans": spans}
    p50, p99 = statistics.median(lats) * 1000, pct(lats, 99) * 1000
    f50, f99 = statistics.median(floors) * 1000, pct(floors, 99) * 1000
    bl = statistics.median(blists)
    return [
        ("latency: change -> webhook ack, p50 (%d)" % changes, p50, "ms", f50, "<= 50", p50 <= 50),
        ("latency: change -> webhook ack, p99", p99, "ms", f99, "<= 250", p99 <= 250),
        ("latency: floor, one events.list, p50", f50, "ms", None, "", None),
        ("latency: amid 1k-notification bursts, p50", statistics.median(blats) * 1000, "ms", f50, "", None),
        ("latency: amid 1k-notification bursts, p99", pct(blats, 99) * 1000, "ms", f99, "", None),
        ("latency: events.list per 1k burst (max %d)" % max(blists), bl, "calls", float(burst),
         "a few: <= 1 + ceil(s / 0.5)", all(n <= lists_bound(sp) for n, sp in zip(blists, spans))),
    ]
