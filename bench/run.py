#!/usr/bin/env python3
"""calsync benchmark driver: `make bench` runs it from the repository root.

Starts the real binary (build/calsync) against bench/fixture_google.py on
127.0.0.1, measures every item of issue 8 with baselines measured in the same
run, and prints ONE table. Medians of REPS repetitions. Also writes
build/bench/results.json, build/bench/scaling.dat and, when gnuplot is there,
docs/performance-scaling.png.

    python3 bench/run.py [--reps N] [--quick] [--only ITEM,...]

Items: intake fullsync apply policy google memory scaling, instances and
google3 (issue 15: PostgreSQL, 1 and 3 instances; bench/instances.py), and load
(tests/e2e/test_load.py's scenario: intake latency while syncs hold the
write lock), reload (a policy saved by rename until it is live) and graph
(bench/graph.py: Outlook full sync through calendarView/delta and the
/webhooks/microsoft intake, against tests/fake_graph.py). The
functional tests assert outcomes only; the latencies are judged here.

Every process it starts is stopped by its pid at the end. No traffic leaves
loopback. See docs/performance.md for the method of each item.
"""
import argparse
import hashlib
import http.client
import json
import math
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

import pgdb

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = os.environ.get("BENCH_CALSYNC_BIN") or os.path.join(ROOT, "build", "calsync")   # another build: compare a patch
BENCH = os.path.join(ROOT, "build", "bench")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROCS = []
SINK_PORT = None   # webhook sink: a bare_mhd started by main()
# The fixture's events and the bookings and mirror rows seeded here start at
# BASE_MS: midnight UTC 30 days ahead of the run, so that they are in the
# future whatever the date (bench/fixture_google.py gets it by environment).
BASE_MS = (int(time.time()) // 86400 + 30) * 86400 * 1000


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_port(argv, **kw):
    """Start a helper that prints 'PORT n' on its first line."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, **kw)
    PROCS.append(p)
    line = p.stdout.readline().decode()
    m = re.match(r"PORT (\d+)", line)
    if not m:
        raise SystemExit("bench: %s did not start: %r" % (argv[0], line))
    return p, int(m.group(1))


def stop(p, sig=signal.SIGTERM):
    if p and p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in PROCS:
        PROCS.remove(p)


def http_req(port, method, path, body=None, headers=None, conn=None, timeout=30):
    own = conn is None
    if own:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    hdrs = dict(headers or {})
    if isinstance(body, (dict, list)):
        hdrs["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=hdrs)
    r = conn.getresponse()
    raw = r.read()
    if own:
        conn.close()
    try:
        return r.status, json.loads(raw) if raw else None
    except ValueError:
        return r.status, raw


def proc_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK   # utime + stime


def proc_status(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])   # kB
    return 0


class Fixture:
    def __init__(self):
        self.proc, self.port = spawn_port([sys.executable, os.path.join(ROOT, "bench", "fixture_google.py")],
                                          env=dict(os.environ, BENCH_BASE_MS=str(BASE_MS)))

    def post(self, path, body):
        return http_req(self.port, "POST", path, body)[1]

    def stats(self):
        return http_req(self.port, "GET", "/_bench/stats")[1]

    def close(self):
        stop(self.proc)


class Service:
    """The real binary on a free loopback port, its own DB and policies."""

    def __init__(self, fx, workers=4, poll_interval=600, hooks=True, extra="", google=None, webhooks=None,
                 log_level="warn", bin=None, pg=None):
        """pg: a bench/pgdb.py PgDatabase (a database on the bench's
        PostgreSQL cluster) instead of a SQLite file in the service's
        directory; several Services may share one (instances)."""
        self.bin = bin or BIN
        self.dir = tempfile.mkdtemp(prefix="calsync-bench-")
        self.pg = pg
        self.db_path = pg.url if pg else os.path.join(self.dir, "calsync.db")
        self.log = None
        self.port = free_port()
        pol = os.path.join(self.dir, "policies")
        shutil.copytree(os.path.join(ROOT, "policies"), pol)
        cfg = [
            'listen = "127.0.0.1:%d"' % self.port,
            'public_url = "http://127.0.0.1:%d"' % self.port,
            'database = "%s"' % self.db_path,
            'policies = "%s"' % pol,
            "workers = %d" % workers,
            "poll_interval = %d" % poll_interval,
            'log_level = "%s"' % log_level,
            # request budgets off (0): the bench measures calsync, and one
            # credential for 10,000 calendars would wait out Google's quota
            google or ('google = { client_id = "bench", client_secret = "bench",'
                       ' api_base = "http://127.0.0.1:%d/calendar/v3",'
                       ' token_url = "http://127.0.0.1:%d/token",'
                       ' requests_per_minute = 0, project_requests_per_minute = 0 }'
                       % (fx.port, fx.port)),
        ]
        if webhooks:
            cfg.append(webhooks)
        elif hooks:
            # outbound webhooks go to the C sink (bare_mhd answers 200 to
            # anything), so that the receiver costs little CPU
            cfg.append('webhooks = { { url = "http://127.0.0.1:%d/hook", secret = "s" } }'
                       % (SINK_PORT or fx.port))
        cfg.append(extra)
        self.cfg_path = os.path.join(self.dir, "calsync.conf.lua")
        with open(self.cfg_path, "w") as f:
            f.write("\n".join(cfg) + "\n")
        self.proc = None

    def migrate(self):
        subprocess.run([self.bin, "migrate", "-c", self.cfg_path], check=True, cwd=self.dir, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def start(self):
        self.log_path = os.path.join(self.dir, "calsync.log")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.bin, "serve", "-c", self.cfg_path], cwd=self.dir,
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        PROCS.append(self.proc)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                # answering at all means started: /healthz is 503 without
                # any policy (the intake item runs with none), 200 otherwise
                if http_req(self.port, "GET", "/healthz", timeout=2)[0] in (200, 503):
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit("bench: calsync exited at start; see %s" % self.dir)
            time.sleep(0.02)
        raise SystemExit("bench: calsync did not start")

    def api(self, method, path, body=None):
        return http_req(self.port, method, path, body)

    def db(self):
        """sqlite3 connection, or on PostgreSQL the database's one psql
        session (sqlite3's execute/fetchone shape, autocommit)."""
        if self.pg:
            return self.pg.session()
        return sqlite3.connect(self.db_path, timeout=30)

    def q(self, sql, args=()):
        with self.db() as con:
            return con.execute(sql, args).fetchone()[0]

    def cpu(self):
        return proc_cpu(self.proc.pid)

    def hwm_mib(self):
        return proc_status(self.proc.pid, "VmHWM") / 1024.0

    def close(self):
        stop(self.proc)
        if self.log:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def credential(self):
        st, b = self.api("POST", "/v1/credentials", {"provider": "google", "refresh_token": "rt-bench"})
        assert st == 201, (st, b)
        return b["id"]

    def calendar(self, cred, ext):
        st, b = self.api("POST", "/v1/calendars", {"credential_id": cred, "external_id": ext})
        assert st in (200, 201), (st, b)
        return b["id"]

    def wait(self, sql, args=(), timeout=300, every=0.01):
        """Poll until sql returns a truthy value; returns the time it did."""
        deadline = time.time() + timeout
        with self.db() as con:
            while time.time() < deadline:
                if con.execute(sql, args).fetchone()[0]:
                    return time.time()
                time.sleep(every)
        raise SystemExit("bench: timeout waiting for: " + sql)


def populate(svc, n_cal, ev_per_cal, dirty=1, prefix="idle"):
    """Fill a migrated, stopped DB directly: one credential, n_cal active
    calendars (external ids <prefix>00001...) with a sync token and a live
    channel each, ev_per_cal mirrored events per calendar."""
    now = int(time.time() * 1000)
    if svc.pg:
        # the same rows, made by the server (generate_series): 1M rows
        # through psql one by one would take longer than the measurement
        svc.pg.script(pgdb.bind(
            "INSERT INTO credentials (id, provider, refresh_token, access_token, expires_at, created_at)"
            " VALUES (1, 'google', 'rt-bench', 'bench-at', ?, ?);\n"
            "INSERT INTO calendars (id, credential_id, external_id, state, sync_token, last_synced_at, dirty,"
            " created_at, updated_at) SELECT i, 1, ? || lpad(i::text, 5, '0'), 'active', 'g0', ?, ?, ?, ?"
            " FROM generate_series(1, ?) i;\n"
            "INSERT INTO channels (id, calendar_id, resource_id, token, expiration, state, created_at)"
            " SELECT 'ch-' || i, i, 'res-' || i, 'tok-' || i, ?, 'live', ? FROM generate_series(1, ?) i;\n"
            "INSERT INTO events (calendar_id, id, etag, status, start_ms, end_ms, updated, title)"
            " SELECT c, 'e' || lpad(e::text, 7, '0'), '\"1' || lpad(e::text, 8, '0') || '\"', 'confirmed',"
            " ? + e::bigint * 3600000, ? + e::bigint * 3600000 + 1800000, '2026-11-21T10:00:00.000Z', 'Booking ' || e"
            " FROM generate_series(1, ?) c, generate_series(0, ? - 1) e;\n"
            # explicit ids do not move an identity's sequence: the API's
            # next calendar would collide with calendar 1
            "SELECT setval(pg_get_serial_sequence('credentials', 'id'), 1);\n"
            "SELECT setval(pg_get_serial_sequence('calendars', 'id'), greatest(?, 1));",
            (now + 3600 * 1000, now, prefix, now, dirty, now, now, n_cal, now + 6 * 86400 * 1000, now, n_cal,
             BASE_MS, BASE_MS, n_cal, ev_per_cal, n_cal)))
        return
    con = svc.db()
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("INSERT INTO credentials (id, provider, refresh_token, access_token, expires_at, created_at)"
                " VALUES (1, 'google', 'rt-bench', 'bench-at', ?, ?)", (now + 3600 * 1000, now))
    con.executemany(
        "INSERT INTO calendars (id, credential_id, external_id, state, sync_token, last_synced_at, dirty,"
        " created_at, updated_at) VALUES (?, 1, ?, 'active', 'g0', ?, ?, ?, ?)",
        ((i, "%s%05d" % (prefix, i), now, dirty, now, now) for i in range(1, n_cal + 1)))
    con.executemany(
        "INSERT INTO channels (id, calendar_id, resource_id, token, expiration, state, created_at)"
        " VALUES (?, ?, ?, ?, ?, 'live', ?)",
        (("ch-%d" % i, i, "res-%d" % i, "tok-%d" % i, now + 6 * 86400 * 1000, now)
         for i in range(1, n_cal + 1)))
    base = BASE_MS

    def rows():
        for c in range(1, n_cal + 1):
            for e in range(ev_per_cal):
                s = base + e * 3600000
                yield (c, "e%07d" % e, '"1%08d"' % e, s, s + 1800000, "Booking %d" % e)
    con.executemany(
        "INSERT INTO events (calendar_id, id, etag, status, start_ms, end_ms, updated, title)"
        " VALUES (?, ?, ?, 'confirmed', ?, ?, '2026-11-21T10:00:00.000Z', ?)", rows())
    con.commit()
    con.close()


# ---------------------------------------------------------------- items

def run_wrk(port, seconds, conns, env):
    out = subprocess.run(["wrk", "-t2", "-c%d" % conns, "-d%ds" % seconds, "--timeout", "5s",
                          "-s", os.path.join(ROOT, "bench", "notify.lua"),
                          "http://127.0.0.1:%d/webhooks/google" % port],
                         capture_output=True, text=True, env=dict(os.environ, **env))
    m = re.search(r"BENCH (.*)", out.stdout)
    if not m:
        raise SystemExit("bench: wrk failed:\n" + out.stdout + out.stderr)
    d = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    d["rps"] = d["requests"] / (d["duration_us"] / 1e6)
    return d


def intake_service(fx, bin=None):
    """A calsync with one synced calendar and a live channel ch-bench."""
    svc = Service(fx, bin=bin).start()
    cred = svc.credential()
    cal = svc.calendar(cred, "intake")
    svc.wait("SELECT last_synced_at IS NOT NULL FROM calendars WHERE id = ?", (cal,))
    now = int(time.time() * 1000)
    with svc.db() as con:
        con.execute("INSERT INTO channels (id, calendar_id, resource_id, token, expiration, state, created_at)"
                    " VALUES ('ch-bench', ?, 'res-bench', 'tok-bench', ?, 'live', ?)",
                    (cal, now + 86400 * 1000, now))
    return svc, cal


def intake_run(fx, svc, cal, seconds, env):
    """One wrk run on svc; returns (wrk figures, every accepted one recorded and synced)."""
    n0 = svc.q("SELECT count(*) FROM notifications WHERE channel_id = 'ch-bench'")
    l0 = fx.stats()["list"].get("intake", 0)
    cpu0 = svc.cpu()
    w = run_wrk(svc.port, seconds, 64, env)
    w["cpu_us"] = (svc.cpu() - cpu0) / w["requests"] * 1e6
    t_end = int(time.time() * 1000)
    # every accepted notification recorded (the intake journal reaches
    # the table a few ms after the 200), and the calendar synced after
    # the last one
    svc.wait("SELECT count(*) >= ? FROM notifications WHERE channel_id = 'ch-bench'",
             (n0 + w["requests"],), timeout=30)
    svc.wait("SELECT dirty = 0 AND last_synced_at >= ? FROM calendars WHERE id = ?", (t_end - 1000, cal),
             timeout=30)
    n1 = svc.q("SELECT count(*) FROM notifications WHERE channel_id = 'ch-bench'")
    l1 = fx.stats()["list"].get("intake", 0)
    w["recorded"] = n1 - n0
    w["lists"] = l1 - l0
    # wrk counts completed responses; up to one request per connection is
    # still in flight at the cut-off and is recorded without being counted.
    ok = (w["errors_status"] == 0 and w["requests"] <= w["recorded"] <= w["requests"] + 64
          and w["lists"] >= 1)
    return w, ok


def item_intake(fx, reps, seconds, R, baseline_bin=None):
    """wrk keep-alive load on the bare libmicrohttpd ceiling and on calsync,
    interleaved (bare, calsync, bare, calsync ...) so that a noisy neighbour
    hits both alike. CPU per request from /proc of each server process.
    With baseline_bin, another calsync build (main, say) is measured in the
    same rounds (bare, baseline, calsync, ...) and compared."""
    env = {"BENCH_CHANNEL": "ch-bench", "BENCH_TOKEN": "tok-bench"}
    bare, bport = spawn_port([os.path.join(BENCH, "bare_mhd"), "0"])
    base, runs, checks, bruns = [], [], [], []
    if baseline_bin:
        # Two services at once are not alike: the same build measured
        # against itself, the one started first was the slower in every
        # round (A/A: 0.70-0.90; swapped: 0.92-1.27). So each round starts
        # a fresh pair, in alternating order, and runs them in alternating
        # order; an even number of rounds cancels that in the geometric
        # mean of the paired ratios. A round's ratio still moves by +-15 %
        # here, so at least 8 rounds.
        reps = max(reps + reps % 2, 8)
    else:
        svc, cal = intake_service(fx)
        time.sleep(0.3)
    for i in range(reps):
        log("intake: run %d/%d: bare libmicrohttpd, calsync%s" % (i + 1, reps, " and the baseline build" if baseline_bin else ""))
        if baseline_bin:
            pair = [None, None]
            for k in ((0, 1) if i % 2 == 0 else (1, 0)):
                pair[k] = intake_service(fx, baseline_bin if k else None)
            (svc, cal), other = pair
            time.sleep(0.3)
        c0 = proc_cpu(bare.pid)
        b = run_wrk(bport, seconds, 64, env)
        b["cpu_us"] = (proc_cpu(bare.pid) - c0) / b["requests"] * 1e6
        base.append(b)
        if baseline_bin and i % 2 == 1:
            bruns.append(intake_run(fx, other[0], other[1], seconds, env)[0])
        w, ok = intake_run(fx, svc, cal, seconds, env)
        runs.append(w)
        checks.append(ok)
        if baseline_bin and i % 2 == 0:
            bruns.append(intake_run(fx, other[0], other[1], seconds, env)[0])
        if baseline_bin:
            svc.close()
            other[0].close()
    if not baseline_bin:
        svc.close()
    stop(bare)
    b_rps = median([b["rps"] for b in base])
    c_rps = median([r["rps"] for r in runs])
    R["intake"] = {"bare": base, "calsync": runs, "checks": checks, "baseline_build": bruns}
    rows = [
        ("intake: notifications/s", c_rps, "1/s", b_rps, ">= 20000 and >= 0.5 x ceiling",
         c_rps >= 20000 and c_rps >= 0.5 * b_rps),
    ]
    if bruns:
        # paired: the two builds of a round ran back to back, under the same
        # neighbours; the ratio of medians would mix rounds a minute apart
        ratios = [r["rps"] / o["rps"] for r, o in zip(runs, bruns)]
        pr = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        R["intake"]["paired_ratios"] = ratios
        rows.append(("intake: baseline build, notifications/s", median([o["rps"] for o in bruns]), "1/s",
                     b_rps, "", None))
        rows.append(("intake: this / baseline build (geomean of %d rounds)" % len(ratios), pr, "ratio", 1.0,
                     ">= 0.95", pr >= 0.95))
        cr = [r["cpu_us"] / o["cpu_us"] for r, o in zip(runs, bruns)]
        rows.append(("intake: CPU per notification, this / baseline", math.exp(sum(map(math.log, cr)) / len(cr)),
                     "ratio", 1.0, "", None))
    rows += [
        ("intake: p50 latency", median([r["p50_us"] for r in runs]) / 1000, "ms",
         median([b["p50_us"] for b in base]) / 1000, "", None),
        ("intake: p99 latency", median([r["p99_us"] for r in runs]) / 1000, "ms",
         median([b["p99_us"] for b in base]) / 1000, "", None),
        ("intake: server CPU per notification", median([r["cpu_us"] for r in runs]), "us",
         median([b["cpu_us"] for b in base]), "", None),
        ("intake: every accepted one recorded + synced", sum(checks), "runs ok", len(checks),
         "all runs", all(checks)),
        ("intake: events.list per 1k notifications", 1000.0 * sum(r["lists"] for r in runs) /
         max(1, sum(r["recorded"] for r in runs)), "calls", 1000.0, "coalesced (< naive)", None),
    ]
    return rows, c_rps


def item_burst(fx, R, n=1000):
    log("google: burst of %d notifications" % n)
    svc = Service(fx).start()
    cred = svc.credential()
    cal = svc.calendar(cred, "burst")
    svc.wait("SELECT last_synced_at IS NOT NULL FROM calendars WHERE id = ?", (cal,))
    now = int(time.time() * 1000)
    with svc.db() as con:
        con.execute("INSERT INTO channels (id, calendar_id, resource_id, token, expiration, state, created_at)"
                    " VALUES ('ch-burst', ?, 'res-burst', 'tok-burst', ?, 'live', ?)", (cal, now + 86400000, now))
    time.sleep(0.5)
    results = []
    for _ in range(3):
        l0 = fx.stats()["list"].get("burst", 0)
        conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=10)
        t0 = time.time()
        for i in range(n):
            st, _ = http_req(svc.port, "POST", "/webhooks/google", b"", conn=conn, headers={
                "X-Goog-Channel-ID": "ch-burst", "X-Goog-Channel-Token": "tok-burst",
                "X-Goog-Resource-State": "exists", "X-Goog-Message-Number": str(i + 2),
                "X-Goog-Resource-ID": "res-burst"})
            assert st == 200
        burst_s = time.time() - t0
        conn.close()
        t_end = int(time.time() * 1000)
        svc.wait("SELECT dirty = 0 AND last_synced_at >= ? FROM calendars WHERE id = ?", (t_end, cal), timeout=30)
        time.sleep(0.3)
        results.append((fx.stats()["list"].get("burst", 0) - l0, burst_s))
        time.sleep(0.5)
    svc.close()
    R["burst"] = results
    lists = median([r[0] for r in results])
    # a push sync starts at once, then at most one per 0.5 s while the burst
    # lasts (scheduler.h SCHED_PUSH_SPACING_MS; docs/performance.md)
    import latency
    return [("google: events.list per burst of %d" % n, lists, "calls", float(n),
             "<= 1 + ceil(s / 0.5) per burst of s", all(l <= latency.lists_bound(s) for l, s in results))]


def item_idle(fx, R, n_cal=1000, poll=10, window=30):
    log("google: %d idle calendars, poll_interval=%d s, %d s window" % (n_cal, poll, window))
    svc = Service(fx, poll_interval=poll)
    svc.migrate()
    populate(svc, n_cal, 0, dirty=0)
    svc.start()
    time.sleep(poll)   # past the first interval: the steady state
    s0 = fx.stats()
    t0 = time.time()
    time.sleep(window)
    s1 = fx.stats()
    el = time.time() - t0
    svc.close()
    calls = s1["list_total"] - s0["list_total"]
    per_cal_interval = calls / n_cal / (el / poll)
    per_hour_600 = per_cal_interval * 1000 * 3600 / 600
    R["idle"] = {"calls": calls, "seconds": el, "per_cal_interval": per_cal_interval,
                 "tokens": s1["token"] - s0["token"]}
    return [("google: list calls/h, 1k idle cals @600s", per_hour_600, "calls/h", 6000.0,
             "~1 per calendar per poll_interval", per_cal_interval <= 1.25)]


def item_fullsync(fx, R, sizes=(100000,), reps=3, workers=4):
    """Full sync of a prepared calendar: events/s and CPU s per 100k events."""
    out = {}
    for n in sizes:
        rs = []
        for r in range(reps):
            ext = "full%d_%d" % (n, r)
            fx.post("/_bench/prepare", {"calendar": ext, "events": n})
            svc = Service(fx, workers=workers).start()
            cred = svc.credential()
            time.sleep(0.2)
            cpu0 = svc.cpu()
            t0 = time.time()
            cal = svc.calendar(cred, ext)
            t1 = svc.wait("SELECT last_synced_at IS NOT NULL FROM calendars WHERE id = ?", (cal,), every=0.02)
            cpu = svc.cpu() - cpu0
            got = svc.q("SELECT count(*) FROM events WHERE calendar_id = ?", (cal,))
            assert got == n, (got, n)
            # the sync proper: first events.list request (fixture clock) to
            # the commit of the last page (last_synced_at, same wall clock)
            t_list = fx.stats()["first_list_at"][ext]
            t_done = svc.q("SELECT last_synced_at FROM calendars WHERE id = ?", (cal,)) / 1000.0
            rs.append({"eps": n / (t_done - t_list), "eps_e2e": n / (t1 - t0),
                       "cpu_per_100k": cpu * 100000 / n, "seconds": t_done - t_list})
            svc.close()
        out[n] = rs
        log("full sync %d: %.0f events/s" % (n, median([x["eps"] for x in rs])))
    R.setdefault("fullsync", {}).update({str(k): v for k, v in out.items()})
    return out


def link_bookings(svc, cal, prefix, n):
    """Writes n bookings <prefix>-<i> of calendar cal straight into the
    database, each linked to the prepared event e<i> (an hour apart from
    BASE_MS), as the app would have with POST /v1/bookings and event_id."""
    now = int(time.time() * 1000)
    if svc.pg:
        svc.pg.script(pgdb.bind(
            "INSERT INTO bookings (uid, calendar_id, title, start_ms, end_ms, event_id, created_at, updated_at)"
            " SELECT ? || '-' || i, ?, 'Booking ' || i, ? + i::bigint * 3600000, ? + i::bigint * 3600000 + 1800000,"
            " 'e' || lpad(i::text, 7, '0'), ?, ? FROM generate_series(0, ? - 1) i;\n"
            "INSERT INTO booking_refs (calendar_id, event_id, original_start_ms, booking_uid)"
            " SELECT ?, 'e' || lpad(i::text, 7, '0'), -1, ? || '-' || i FROM generate_series(0, ? - 1) i;",
            (prefix, cal, BASE_MS, BASE_MS, now, now, n, cal, prefix, n)))
        return
    with svc.db() as con:
        con.executemany(
            "INSERT INTO bookings (uid, calendar_id, title, start_ms, end_ms, event_id, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (("%s-%d" % (prefix, i), cal, "Booking %d" % i, BASE_MS + i * 3600000,
              BASE_MS + i * 3600000 + 1800000, "e%07d" % i, now, now) for i in range(n)))
        con.executemany(
            "INSERT INTO booking_refs (calendar_id, event_id, original_start_ms, booking_uid) VALUES (?, ?, -1, ?)",
            ((cal, "e%07d" % i, "%s-%d" % (prefix, i)) for i in range(n)))


def item_apply(fx, R, n=10000, reps=3):
    log("apply: %d changed events on %d bookings" % (n, n))
    fx.post("/_bench/prepare", {"calendar": "apply", "events": n})
    svc = Service(fx).start()
    cred = svc.credential()
    cal = svc.calendar(cred, "apply")
    svc.wait("SELECT last_synced_at IS NOT NULL FROM calendars WHERE id = ?", (cal,))
    link_bookings(svc, cal, "bk", n)
    rs = []
    for r in range(reps):
        a0 = svc.q("SELECT count(*) FROM audit")
        o0 = svc.q("SELECT count(*) FROM outbox")
        p0 = svc.q("SELECT count(*) FROM outbox WHERE state = 'pending'")
        fx.post("/_bench/change", {"calendar": "apply", "events": n, "shift_min": 60 * (r + 1)})
        cpu0 = svc.cpu()
        t0 = time.time()
        assert svc.api("POST", "/v1/calendars/%d/sync" % cal)[0] == 202
        t1 = svc.wait("SELECT count(*) >= ? FROM audit", (a0 + n,), every=0.01)
        cpu = svc.cpu() - cpu0
        a1 = svc.q("SELECT count(*) FROM audit")
        o1 = svc.q("SELECT count(*) FROM outbox")
        acts = svc.q("SELECT count(*) FROM audit WHERE action = 'reschedule' AND id > ?", (a0,))
        # the outbox delivers to the fixture's /hook meanwhile; wait until it
        # is drained so that the next repetition starts from the same state
        try:
            t2 = svc.wait("SELECT count(*) = 0 FROM outbox WHERE state = 'pending'", every=0.05, timeout=20)
            drain = n / (t2 - t0)
        except SystemExit:   # not drained in 20 s: the rate so far
            drain = (p0 + n - svc.q("SELECT count(*) FROM outbox WHERE state = 'pending'")) / (time.time() - t0)
        rs.append({"dps": n / (t1 - t0), "seconds": t1 - t0, "audit": a1 - a0, "outbox": o1 - o0,
                   "reschedule": acts, "cpu": cpu, "webhooks_per_s": drain,
                   "cpu_us_per_decision": cpu / n * 1e6})
    svc.close()
    R["apply"] = rs
    dps = median([x["dps"] for x in rs])
    ok_rows = all(x["audit"] == n and x["outbox"] == n and x["reschedule"] == n for x in rs)
    return [("apply: decisions/s (audit+outbox)", dps, "1/s", None, ">= 10000", dps >= 10000),
            ("apply: engine CPU per decision", median([x["cpu_us_per_decision"] for x in rs]), "us",
             None, "", None),
            ("apply: webhooks delivered/s (outbox drain)", median([x["webhooks_per_s"] for x in rs]), "1/s",
             None, "", None),
            ("apply: audit, outbox rows per change", 1.0 if ok_rows else 0.0, "each", 1.0, "1 and 1", ok_rows)]


# ~80% of policy_limits.instructions per call: `for` + add = 2 VM instructions
SLOW_LIMIT = 1000000
SLOW_POLICY = """
local function burn()
  local s = 0
  for i = 1, %d do s = s + i end
  return s
end
return {
  on_time_change = function(change, booking, ctx)
    burn()
    return { action = "reschedule", reason = "moved" }
  end,
}
""" % (int(0.8 * SLOW_LIMIT) // 2)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def item_apiwrite(fx, R, n=2500, reps=3, idle_n=200):
    """API write latency (POST /v1/bookings, one at a time, each a SQLite
    write transaction) while another calendar syncs n changed events through
    a policy that spends ~80% of its instruction budget on every call (a few
    ms each: the sync takes seconds of policy time). Baseline: the same
    requests with no sync running. The bookings link an existing event id,
    so no Google write follows: what is measured is the wait for the write
    lock (DESIGN §2 "Policies off the write path")."""
    log("apiwrite: POST /v1/bookings during a %d-change sync with a slow policy" % n)
    fx.post("/_bench/prepare", {"calendar": "slowpol", "events": n})
    svc = Service(fx, extra="policy_limits = { instructions = %d }" % SLOW_LIMIT)
    with open(os.path.join(svc.dir, "policies", "burn.lua"), "w") as f:
        f.write(SLOW_POLICY)
    svc.start()
    cred = svc.credential()
    st, b = svc.api("POST", "/v1/calendars", {"credential_id": cred, "external_id": "slowpol",
                                              "policy": "burn"})
    assert st == 201, (st, b)
    slow = b["id"]
    other = svc.calendar(cred, "apiwrite")
    svc.wait("SELECT count(*) = 2 FROM calendars WHERE last_synced_at IS NOT NULL")
    link_bookings(svc, slow, "sp", n)
    seq = [0]
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(BASE_MS // 1000))
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(BASE_MS // 1000 + 1800))

    def post():
        seq[0] += 1
        t = time.time()
        st, b = svc.api("POST", "/v1/bookings", {
            "uid": "api-%d" % seq[0], "calendar_id": other, "title": "API %d" % seq[0],
            "start": start, "end": end})  # calsync creates the event (writer):
        # linking an event_id now asks Google first (issue 16), which is not
        # the write path this item measures
        assert st == 201, (st, b)
        return (time.time() - t) * 1000.0

    idle = [post() for _ in range(idle_n)]
    rs = []
    for r in range(reps):
        a0 = svc.q("SELECT count(*) FROM audit WHERE change = 'time_change'")
        fx.post("/_bench/change", {"calendar": "slowpol", "events": n, "shift_min": 60 * (r + 1)})
        t0 = time.time()
        assert svc.api("POST", "/v1/calendars/%d/sync" % slow)[0] == 202
        lat = []
        with svc.db() as con:
            def done():
                return con.execute("SELECT count(*) FROM audit WHERE change = 'time_change'"
                                   ).fetchone()[0] >= a0 + n
            while not done():
                if time.time() - t0 > 600:
                    raise SystemExit("bench: the slow sync did not end in 600 s")
                lat.append(post())
        t1 = time.time()
        acts = svc.q("SELECT count(*) FROM audit WHERE change = 'time_change' AND action = 'reschedule'")
        rs.append({"p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99), "max_ms": max(lat) if lat else None,
                   "requests": len(lat), "sync_s": t1 - t0, "reschedules": acts - a0})
    svc.close()
    R["apiwrite"] = {"idle_p50_ms": pct(idle, 0.5), "idle_p99_ms": pct(idle, 0.99), "runs": rs}
    p99 = median([x["p99_ms"] for x in rs])
    ok = all(x["reschedules"] == n for x in rs)
    return [("apiwrite: POST p50 during slow-policy sync", median([x["p50_ms"] for x in rs]), "ms",
             pct(idle, 0.5), "-", None),
            ("apiwrite: POST p99 during slow-policy sync", p99, "ms", pct(idle, 0.99), "< 100 ms", p99 < 100),
            ("apiwrite: POSTs answered during the sync", median([x["requests"] for x in rs]), "1", None,
             "", None),
            ("apiwrite: slow-policy sync, %d changes" % n, median([x["sync_s"] for x in rs]), "s", None,
             "every change applied", ok)]


def item_policy(R, reps=3):
    log("policy: policy_bench and callgrind")
    pb = os.path.join(BENCH, "policy_bench")
    meds, bares = [], []
    for _ in range(reps):
        out = subprocess.run([pb, "200000"], capture_output=True, text=True, cwd=ROOT, check=True).stdout
        meds.append(float(re.search(r"median (\d+) ns", out).group(1)))
        m = re.search(r"bare lua_pcall: median (\d+) ns", out)
        if m:
            bares.append(float(m.group(1)))

    def ir(calls):
        cg = tempfile.mktemp(prefix="callgrind.", dir="/tmp")
        subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + cg, pb, str(calls), "--no-bare"],
                       capture_output=True, text=True, cwd=ROOT, check=True)
        with open(cg) as f:
            text = f.read()
        os.unlink(cg)
        m = re.search(r"^(?:summary|totals):\s*(\d+)", text, re.M)
        return int(m.group(1))
    lo, hi = 2000, 12000
    ipc = (ir(hi) - ir(lo)) / (hi - lo)
    R["policy"] = {"median_ns": meds, "bare_ns": bares, "instr_per_call": ipc}
    ns = median(meds)
    # baseline: the same Lua hook through a bare lua_pcall with plain tables
    return [("policy: ns per hook call (median)", ns, "ns", median(bares) if bares else None, "< 2000", ns < 2000),
            ("policy: instructions per call (callgrind)", ipc, "instr", None, "", None)]


def item_load(R, reps=3):
    """The scenario of tests/e2e/test_load.py (wrk -t1 -c8 keep-alive on
    the push intake for 5 s while the host retitles a 1,500-occurrence
    series every 0.3 s, so syncs that hold SQLite's write lock run
    throughout), run as that test, which checks the outcomes (every answer
    2xx, every one recorded, a sync after the last) and hands its figures
    back through CALSYNC_LOAD_FIGURES. Judged here: wrk's p99."""
    runs = []
    for i in range(reps):
        log("load: run %d/%d of tests/e2e/test_load.py" % (i + 1, reps))
        fd, path = tempfile.mkstemp(prefix="calsync-load-", suffix=".json")
        os.close(fd)
        try:
            out = subprocess.run([sys.executable, "-m", "unittest", "tests/e2e/test_load.py"],
                                 cwd=ROOT, capture_output=True, text=True, timeout=900,
                                 env=dict(os.environ, CALSYNC_BIN=BIN, CALSYNC_LOAD_FIGURES=path))
            if out.returncode != 0:
                raise SystemExit("bench: test_load failed:\n" + out.stderr[-4000:])
            with open(path) as f:
                r = json.load(f)
        finally:
            os.unlink(path)
        r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
        runs.append(r)
    R["load"] = runs
    p99 = median([r["p99_us"] for r in runs]) / 1000
    return [
        ("load: intake p99 while syncs run", p99, "ms", None, "< 10", p99 < 10),
        ("load: intake p50 while syncs run", median([r["p50_us"] for r in runs]) / 1000, "ms",
         None, "", None),
        ("load: notifications/s (8 connections)", median([r["rps"] for r in runs]), "1/s",
         None, "", None),
        ("load: syncs during the load", median([r["syncs"] for r in runs]), "syncs", None, "", None),
    ]


def item_reload(fx, R, n=20):
    """DESIGN §5: a policy file saved the way editors and deploy tools
    save it (a temp file renamed over it) is live within two seconds. Each
    save is timed from the rename until GET /v1/policies shows its version."""
    log("reload: %d policy saves by rename" % n)
    svc = Service(fx).start()
    pol = os.path.join(svc.dir, "policies")
    took = []
    try:
        for i in range(n):
            src = "return {} -- save %d\n" % i
            ver = hashlib.sha256(src.encode()).hexdigest()[:12]
            tmp = os.path.join(pol, ".bench_reload.lua.swp")
            with open(tmp, "w") as f:
                f.write(src)
            t0 = time.monotonic()
            os.rename(tmp, os.path.join(pol, "bench_reload.lua"))
            while True:
                st, b = svc.api("GET", "/v1/policies")
                if any(p["name"] == "bench_reload" and p.get("version") == ver
                       for p in b["policies"]):
                    break
                if time.monotonic() - t0 > 30:
                    raise SystemExit("bench: a saved policy not live after 30 s")
                time.sleep(0.005)
            took.append(time.monotonic() - t0)
    finally:
        svc.close()
    R["reload"] = took
    return [("reload: rename to live, median", median(took), "s", None, "", None),
            ("reload: rename to live, max of %d" % n, max(took), "s", None, "< 2", max(took) < 2)]


def item_calendars(fx, R, sizes, ev_per_cal=100):
    """N calendars all dirty at once with ev_per_cal mirrored events each:
    syncs/s until all are clean, peak RSS after."""
    out = {}
    for n in sizes:
        log("calendars: %d calendars x %d mirrored events" % (n, ev_per_cal))
        svc = Service(fx, poll_interval=3600)
        svc.migrate()
        populate(svc, n, ev_per_cal, dirty=1)
        t0 = time.time()
        svc.start()
        t1 = svc.wait("SELECT count(*) = 0 FROM calendars WHERE dirty = 1", every=0.05, timeout=600)
        time.sleep(1.0)
        out[n] = {"syncs_per_s": n / (t1 - t0), "hwm_mib": svc.hwm_mib(), "rss_mib": proc_status(svc.proc.pid, "VmRSS") / 1024.0,
                  "events": n * ev_per_cal}
        svc.close()
    R.setdefault("calendars", {}).update({str(k): v for k, v in out.items()})
    return out


def item_idle_rss(fx):
    svc = Service(fx).start()
    time.sleep(1.0)
    v = svc.hwm_mib()
    svc.close()
    return v


def item_workers(fx, R, workers=(1, 2, 4), n_cal=4, per_cal=25000):
    out = {}
    exts = ["w%d" % i for i in range(n_cal)]
    for e in exts:
        fx.post("/_bench/prepare", {"calendar": e, "events": per_cal})
    for w in workers:
        fx.post("/_bench/reset_stats", {})
        log("workers: %d workers, %d calendars x %d events" % (w, n_cal, per_cal))
        svc = Service(fx, workers=w).start()
        cred = svc.credential()
        t0 = time.time()
        for e in exts:
            svc.calendar(cred, e)
        svc.wait("SELECT count(*) = 0 FROM calendars WHERE last_synced_at IS NULL", every=0.02)
        t_list = min(fx.stats()["first_list_at"][e] for e in exts)
        t_done = svc.q("SELECT max(last_synced_at) FROM calendars") / 1000.0
        out[w] = {"eps": n_cal * per_cal / (t_done - t_list), "cpu": svc.cpu()}
        svc.close()
    R["workers"] = {str(k): v for k, v in out.items()}
    return out


# ---------------------------------------------------------------- output

def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if v != v:
        return "nan"
    if abs(v) >= 100:
        return "{:,.0f}".format(v)
    if abs(v) >= 10:
        return "%.1f" % v
    return "%.2f" % v


def print_table(rows):
    hdr = ("name", "value", "unit", "baseline", "ratio", "target", "pass")
    lines = []
    for name, val, unit, base, target, ok in rows:
        ratio = (val / base) if (isinstance(val, (int, float)) and base) else None
        lines.append((name, fmt(val), unit, fmt(base), fmt(ratio) if ratio is not None else "-",
                      target or "-", "-" if ok is None else ("PASS" if ok else "FAIL")))
    w = [max(len(str(x[i])) for x in lines + [hdr]) for i in range(len(hdr))]
    sep = "+".join("-" * (n + 2) for n in w)
    out = [" | ".join(str(h).ljust(w[i]) for i, h in enumerate(hdr)), sep]
    for x in lines:
        out.append(" | ".join((str(c).rjust(w[i]) if i in (1, 3, 4) else str(c).ljust(w[i]))
                              for i, c in enumerate(x)))
    return "\n".join(out)


def plot(R, path):
    dat = os.path.join(BENCH, "scaling")
    os.makedirs(dat, exist_ok=True)
    with open(os.path.join(dat, "events.dat"), "w") as f:
        for n, rs in sorted(R["fullsync"].items(), key=lambda kv: int(kv[0])):
            f.write("%s %.1f %.3f\n" % (n, median([x["eps"] for x in rs]), median([x["cpu_per_100k"] for x in rs])))
    with open(os.path.join(dat, "calendars.dat"), "w") as f:
        for n, v in sorted(R["calendars"].items(), key=lambda kv: int(kv[0])):
            f.write("%s %.1f %.1f\n" % (n, v["syncs_per_s"], v["hwm_mib"]))
    with open(os.path.join(dat, "workers.dat"), "w") as f:
        for n, v in sorted(R["workers"].items(), key=lambda kv: int(kv[0])):
            f.write("%s %.1f\n" % (n, v["eps"]))
    if not shutil.which("gnuplot"):
        log("gnuplot missing: no plot")
        return
    gp = """
set terminal pngcairo size 1500,480 font ',11' noenhanced
set output '%(out)s'
set multiplot layout 1,3 title 'calsync scaling (2 cores, loopback fixture Google)'
set grid
set key top left
set title 'Full sync vs calendar size'
set xlabel 'events in the calendar'
set ylabel 'events/s into the mirror'
set logscale x
set yrange [0:*]
set format x '%%.0s%%c'
set y2label 'CPU s per 100k events'
set y2tics
set y2range [0:*]
plot '%(d)s/events.dat' u 1:2 w lp lw 2 pt 7 t 'events/s', '' u 1:3 axes x1y2 w lp lw 2 pt 5 t 'CPU s / 100k'
set title 'Many calendars (100 mirrored events each), all dirty'
set xlabel 'calendars'
set ylabel 'syncs/s'
set y2label 'peak RSS MiB'
plot '%(d)s/calendars.dat' u 1:2 w lp lw 2 pt 7 t 'syncs/s', '' u 1:3 axes x1y2 w lp lw 2 pt 5 t 'peak RSS (MiB)'
unset logscale x
set format x '%%g'
unset y2tics
unset y2label
set xtics 1
set title 'Workers: 4 calendars x 25k events, full sync'
set xlabel 'workers'
set ylabel 'events/s (all calendars)'
plot '%(d)s/workers.dat' u 1:2 w lp lw 2 pt 7 t 'events/s'
unset multiplot
""" % {"out": path, "d": dat}
    subprocess.run(["gnuplot"], input=gp, text=True, check=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller sizes, for trying the driver")
    ap.add_argument("--only", default="")
    ap.add_argument("--baseline-bin", default=os.environ.get("BENCH_BASELINE_BIN"),
                    help="another calsync build (main, say) whose intake is measured in the same rounds")
    ap.add_argument("--plot", default=os.path.join(ROOT, "docs", "performance-scaling.png"))
    a = ap.parse_args()
    only = set(filter(None, a.only.split(",")))

    def want(x):
        return not only or x in only
    os.makedirs(BENCH, exist_ok=True)
    R = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "nproc": os.cpu_count()}
    rows = []
    t_start = time.time()
    fx = Fixture()
    global SINK_PORT
    sink, SINK_PORT = spawn_port([os.path.join(BENCH, "bare_mhd"), "0"])
    bins = {BIN, a.baseline_bin}

    def guarded(name, fn):
        """One failing item (a crash of the service, a timeout) costs its
        rows, not the table: it is reported as ERROR and the run goes on."""
        try:
            return fn()
        except (Exception, SystemExit) as e:   # noqa: BLE001
            log("%s failed: %r" % (name, e))
            for p in list(PROCS):
                if p.args[0] in bins and p.poll() is not None:
                    log("calsync exited with %s" % p.returncode)
                if p.args[0] in bins:
                    stop(p)
            rows.append(("%s: ERROR (see stderr)" % name, None, "", None, "", False))
            return None
    try:
        if want("intake"):
            r = guarded("intake", lambda: item_intake(fx, a.reps, a.seconds, R, a.baseline_bin))
            rows += r[0] if r else []
        if want("fullsync"):
            big = 20000 if a.quick else 100000
            fs = guarded("full sync", lambda: item_fullsync(fx, R, sizes=(big,), reps=a.reps))
            rs = fs[big] if fs else []
            eps = median([x["eps"] for x in rs])
            rows.append(("full sync: events/s (%dk)" % (big // 1000), eps, "1/s", None, ">= 50000", eps >= 50000))
            rows.append(("full sync: CPU s per 100k events", median([x["cpu_per_100k"] for x in rs]), "s",
                         None, "", None))
        if want("apply"):
            rows += guarded("apply", lambda: item_apply(fx, R, n=2000 if a.quick else 10000, reps=a.reps)) or []
        if want("policy"):
            rows += guarded("policy", lambda: item_policy(R, reps=a.reps)) or []
        if want("reload"):
            rows += guarded("reload", lambda: item_reload(fx, R)) or []
        if want("load"):
            rows += guarded("load", lambda: item_load(R, reps=a.reps)) or []
        if want("latency"):
            import latency
            rows += guarded("latency", lambda: latency.item_latency(
                lambda **kw: Service(fx, **kw).start(), R, changes=10 if a.quick else 30)) or []
        if want("apiwrite"):
            rows += guarded("apiwrite", lambda: item_apiwrite(fx, R, n=1000 if a.quick else 2500,
                                                              reps=a.reps)) or []
        if want("google"):
            rows += guarded("google burst", lambda: item_burst(fx, R)) or []
            rows += guarded("google idle", lambda: item_idle(fx, R, poll=5 if a.quick else 10,
                                                             window=10 if a.quick else 30)) or []
        if want("instances") or want("google3"):
            import instances
            me = sys.modules[__name__]
            if want("instances"):
                rows += guarded("instances intake", lambda: instances.item_intake_rates(
                    me, fx, R, reps=a.reps, seconds=a.seconds)) or []
                rows += guarded("instances apply", lambda: instances.item_apply_rates(
                    me, fx, R, reps=a.reps, per_cal=400 if a.quick else 2000)) or []
            if want("google3"):
                rows += guarded("google3", lambda: instances.item_google3(
                    me, fx, R, n_cal=100 if a.quick else 200, poll=5 if a.quick else 10,
                    window=15 if a.quick else 30)) or []
        if want("graph"):
            import graph
            rows += guarded("graph", lambda: graph.item_graph(
                lambda **kw: Service(fx, **kw).start(), R,
                n_events=500 if a.quick else 2000, seconds=a.seconds)) or []
        if want("memory") or want("scaling"):
            idle = item_idle_rss(fx)
            sizes = (100, 1000, 2000) if a.quick else (100, 1000, 10000)
            cals = guarded("memory", lambda: item_calendars(fx, R, sizes, ev_per_cal=100))
            top = cals[sizes[-1]] if cals else {"hwm_mib": float("nan"), "events": 0}
            rows.append(("memory: peak RSS, %dk cals + %.1fM events" % (sizes[-1] // 1000, top["events"] / 1e6),
                         top["hwm_mib"], "MiB", idle, "< 64 MiB", top["hwm_mib"] < 64))
            R["idle_hwm_mib"] = idle
        if want("scaling"):
            ev_sizes = (5000, 10000, 20000) if a.quick else (10000, 30000)
            guarded("scaling events", lambda: item_fullsync(fx, R, sizes=ev_sizes, reps=1))
            guarded("scaling workers", lambda: item_workers(fx, R, per_cal=5000 if a.quick else 25000))
            for k in ("calendars", "fullsync", "workers"):
                R.setdefault(k, {})
            for n, v in sorted(R["calendars"].items(), key=lambda kv: int(kv[0])):
                rows.append(("scaling: %s calendars: syncs/s" % n, v["syncs_per_s"], "1/s", None, "", None))
            for n, rs in sorted(R["fullsync"].items(), key=lambda kv: int(kv[0])):
                rows.append(("scaling: %sk-event full sync: events/s" % (int(n) // 1000),
                             median([x["eps"] for x in rs]), "1/s", None, "", None))
            for n, v in sorted(R["workers"].items(), key=lambda kv: int(kv[0])):
                rows.append(("scaling: %s workers: events/s (4 cals)" % n, v["eps"], "1/s", None, "", None))
            guarded("plot", lambda: plot(R, a.plot))
    finally:
        fx.close()
        for p in list(PROCS):
            stop(p)
        pgdb.stop()   # the PostgreSQL cluster, if an item started one
    R["rows"] = rows
    R["seconds"] = time.time() - t_start
    with open(os.path.join(BENCH, "results.json"), "w") as f:
        json.dump(R, f, indent=1, default=str)
    print()
    print("calsync benchmarks, %s, %d cores, medians of %d runs (wall %.0f s)" %
          (R["started"], R["nproc"], a.reps, R["seconds"]))
    print(print_table(rows))
    fails = [r[0] for r in rows if r[5] is False]
    print("\n%d targets hold, %d miss%s" % (sum(1 for r in rows if r[5] is True), len(fails),
                                           (": " + "; ".join(fails)) if fails else ""))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        for p in list(PROCS):
            stop(p)
        raise
