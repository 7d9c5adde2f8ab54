"""Items `instances` and `google3` of bench/run.py (issue 15, item 5):
calsync on PostgreSQL, one instance and three on one database, against one
instance on SQLite, in the same run. Method and figures:
docs/performance.md, "Several instances on PostgreSQL".

    instances  intake rate (notifications/s accepted) and apply rate
               (decisions/s) for sqlite x1, postgres x1, postgres x3;
               medians of reps, ratios to SQLite from this run
    google3    Google calls per calendar for one workload (polls and
               notifications over a fixed window) with 1 and 3 instances
               on PostgreSQL (and 1 on SQLite for reference); they must
               be equal

M is bench/run.py's module (Service, Fixture, populate, ...), passed in
so that its process list and webhook sink are the ones in use.
"""
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

import pgdb

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
# (name in the table, database, instances)
SETUPS = (("sqlite x1", "sqlite", 1), ("postgres x1", "pg1", 1), ("postgres x3", "pg3", 3))
# the load generator is the same for every set-up: three wrk processes of
# 21 keep-alive connections each (63, about the intake item's 64), process
# i on instance i % k, so only what serves the requests changes
WRK_PROCS, WRK_CONNS = 3, 21


def log(msg):
    print("bench: " + msg, file=sys.stderr, flush=True)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def metric_sum(svc, name):
    """The sum over all label sets of counter `name` on svc's /metrics."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % svc.port, timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"^%s(?:\{[^}]*\})? ([0-9.eE+-]+)$" % re.escape(name), line)
        if m:
            total += float(m.group(1))
    return total


class Setup:
    """k calsync instances on one database: SQLite (k = 1, the file in the
    first instance's directory) or a fresh database on the bench's
    PostgreSQL cluster. Instances are started by start() after the caller
    has migrated and seeded through self.svcs[0]."""

    def __init__(self, M, fx, item, kind, k, **svc_kw):
        self.M, self.kind, self.k = M, kind, k
        self.pg = pgdb.database("%s_%s" % (item, kind)) if kind != "sqlite" else None
        self.svcs = [M.Service(fx, pg=self.pg, **svc_kw) for _ in range(k)]
        self.lead = self.svcs[0]

    def start(self):
        for s in self.svcs:
            s.start()
        return self

    def cpu(self):
        return sum(s.cpu() for s in self.svcs)

    def db_cpu(self):
        return pgdb.cpu_seconds() if self.pg else 0.0

    def close(self):
        for s in self.svcs:
            s.close()
        if self.pg:
            self.pg.close()


# ---------------------------------------------------------------- intake

def intake_setup(M, fx, kind, k):
    st = Setup(M, fx, "intake", kind, k)
    try:
        return _intake_setup(st, kind)
    except BaseException:
        st.close()   # the caller never sees it: its directories and processes go here
        raise


def _intake_setup(st, kind):
    if st.pg:
        st.lead.migrate()   # once, before the three start (concurrent starts: tests/e2e)
    st.start()
    cred = st.lead.credential()
    st.ext = "intake-" + kind
    st.cal = st.lead.calendar(cred, st.ext)
    st.lead.wait("SELECT last_synced_at IS NOT NULL FROM calendars WHERE id = ?", (st.cal,))
    now = int(time.time() * 1000)
    st.channel = "ch-" + kind
    # a week's expiration, as Google's: the newest live channel, far from
    # its renewal. An instance that syncs the calendar for the first time
    # checks its channels and keeps only the newest one not yet due (one
    # live channel per calendar): a channel expiring in a day would be
    # replaced by a new one then, and the notifications to it refused.
    with st.lead.db() as con:
        con.execute("INSERT INTO channels (id, calendar_id, resource_id, token, expiration, state, created_at)"
                    " VALUES (?, ?, 'res-bench', 'tok-bench', ?, 'live', ?)",
                    (st.channel, st.cal, now + 7 * 86400 * 1000, now))
    return st


def wrk_parallel(ports, seconds, env):
    """WRK_PROCS wrk processes at once, process i on ports[i % len(ports)];
    returns their BENCH lines as dicts."""
    procs = []
    for i in range(WRK_PROCS):
        procs.append(subprocess.Popen(
            ["wrk", "-t1", "-c%d" % WRK_CONNS, "-d%ds" % seconds, "--timeout", "5s",
             "-s", os.path.join(ROOT, "bench", "notify.lua"),
             "http://127.0.0.1:%d/webhooks/google" % ports[i % len(ports)]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, **env)))
    out = []
    for p in procs:
        so, se = p.communicate(timeout=seconds + 60)
        m = re.search(r"BENCH (.*)", so)
        if not m:
            raise SystemExit("bench: wrk failed:\n" + so + se)
        d = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
        d["rps"] = d["requests"] / (d["duration_us"] / 1e6)
        out.append(d)
    return out


def intake_round(fx, st, seconds):
    """One load of `seconds` on st; the intake item's checks: every
    accepted notification recorded, none refused, and a sync after it."""
    lead = st.lead
    q_n = "SELECT count(*) FROM notifications WHERE channel_id = ?"
    n0 = lead.q(q_n, (st.channel,))
    l0 = fx.stats()["list"].get(st.ext, 0)
    cpu0, db0 = st.cpu(), st.db_cpu()
    ws = wrk_parallel([s.port for s in st.svcs], seconds,
                      {"BENCH_CHANNEL": st.channel, "BENCH_TOKEN": "tok-bench"})
    req = sum(w["requests"] for w in ws)
    r = {"rps": sum(w["rps"] for w in ws), "requests": req,
         "errors": sum(w["errors_status"] + w["errors_timeout"] + w["errors_connect"] for w in ws),
         "p50_ms": max(w["p50_us"] for w in ws) / 1000.0, "p99_ms": max(w["p99_us"] for w in ws) / 1000.0,
         "cpu_us": (st.cpu() - cpu0) / max(1, req) * 1e6,
         "db_cpu_us": (st.db_cpu() - db0) / max(1, req) * 1e6}
    t_end = int(time.time() * 1000)
    lead.wait("SELECT count(*) >= ? FROM notifications WHERE channel_id = ?", (n0 + req, st.channel),
              timeout=60, every=0.05)
    lead.wait("SELECT dirty = 0 AND last_synced_at >= ? FROM calendars WHERE id = ?", (t_end - 1000, st.cal),
              timeout=60, every=0.05)
    r["recorded"] = lead.q(q_n, (st.channel,)) - n0
    r["lists"] = fx.stats()["list"].get(st.ext, 0) - l0
    # wrk counts completed answers; a request per connection may be in
    # flight at the cut-off, recorded but not counted
    r["ok"] = (r["errors"] == 0 and req <= r["recorded"] <= req + WRK_PROCS * WRK_CONNS
               and r["lists"] >= 1)
    return r


# ---------------------------------------------------------------- apply

def apply_setup(M, fx, kind, k, n_cal, per_cal):
    """n_cal calendars of per_cal mirrored events, each event booked,
    seeded with SQL before the instances start (as the memory item)."""
    st = Setup(M, fx, "apply", kind, k)
    try:
        return _apply_setup(M, st, kind, n_cal, per_cal)
    except BaseException:
        st.close()
        raise


def _apply_setup(M, st, kind, n_cal, per_cal):
    st.lead.migrate()
    prefix = "ap-%s-" % kind
    M.populate(st.lead, n_cal, per_cal, dirty=0, prefix=prefix)
    for c in range(1, n_cal + 1):
        M.link_bookings(st.lead, c, "bk%d" % c, per_cal)
    st.exts = ["%s%05d" % (prefix, c) for c in range(1, n_cal + 1)]
    st.cals = list(range(1, n_cal + 1))
    st.per_cal = per_cal
    st.rounds = 0
    return st.start()


def apply_round(fx, st):
    """Moves every event of every calendar by another hour in the fixture,
    asks for a sync of calendar i on instance i % k, and times the
    decisions (audit rows) of all of them."""
    lead, n = st.lead, st.per_cal * len(st.cals)
    st.rounds += 1
    a0 = lead.q("SELECT coalesce(max(id), 0) FROM audit")
    o0 = lead.q("SELECT count(*) FROM outbox")
    d0 = [M_decisions(s) for s in st.svcs]
    for ext in st.exts:
        fx.post("/_bench/change", {"calendar": ext, "events": st.per_cal, "shift_min": 60 * st.rounds})
    cpu0, db0 = st.cpu(), st.db_cpu()
    t0 = time.time()
    for i, cal in enumerate(st.cals):
        status = st.svcs[i % st.k].api("POST", "/v1/calendars/%d/sync" % cal)[0]
        assert status == 202, status
    # new rows only (by the primary key): a count of the whole table every
    # 20 ms would cost the database more than is being measured
    t1 = lead.wait("SELECT count(*) >= ? FROM audit WHERE id > ?", (n, a0), every=0.02, timeout=600)
    r = {"dps": n / (t1 - t0), "seconds": t1 - t0,
         "cpu_us": (st.cpu() - cpu0) / n * 1e6, "db_cpu_us": (st.db_cpu() - db0) / n * 1e6}
    r["audit"] = lead.q("SELECT count(*) FROM audit WHERE id > ?", (a0,))
    r["reschedule"] = lead.q("SELECT count(*) FROM audit WHERE action = 'reschedule' AND id > ?", (a0,))
    r["outbox"] = lead.q("SELECT count(*) FROM outbox") - o0
    r["per_instance"] = [M_decisions(s) - d for s, d in zip(st.svcs, d0)]
    # the webhooks go to the C sink meanwhile: drained before the next
    # set-up runs, so that one's deliveries do not load another's figure
    try:
        t2 = lead.wait("SELECT count(*) = 0 FROM outbox WHERE state = 'pending'", every=0.1, timeout=180)
        r["webhooks_per_s"] = n / (t2 - t0)
    except SystemExit:
        r["webhooks_per_s"] = float("nan")
    r["ok"] = r["audit"] == n and r["reschedule"] == n and r["outbox"] == n
    return r


def M_decisions(svc):
    return metric_sum(svc, "calsync_policy_decisions_total")


# ---------------------------------------------------------------- item

def _rotations(reps):
    """The set-ups' order in each repetition: rotated, so that none is
    always first after the others' load (or after an idle pause)."""
    for r in range(reps):
        yield r, SETUPS[r % 3:] + SETUPS[:r % 3]


def item_intake_rates(M, fx, R, reps=3, seconds=5):
    """Intake rates of the three set-ups. All are up at once (idle between
    their turns) and each repetition runs them in turn, so that a noisy
    neighbour of the shared machine hits every set-up alike and the
    ratios come from the same minutes."""
    res, setups = {}, {}
    try:
        for name, kind, k in SETUPS:
            log("instances: intake set-up %s" % name)
            setups[name] = intake_setup(M, fx, kind, k)
            res[name] = []
        time.sleep(0.5)
        for r, order in _rotations(reps):
            for name, _, _ in order:
                log("instances: intake run %d/%d, %s" % (r + 1, reps, name))
                res[name].append(intake_round(fx, setups[name], seconds))
    finally:
        for st in setups.values():
            st.close()
    R.setdefault("instances", {})["intake"] = res
    base = median([x["rps"] for x in res["sqlite x1"]])
    rows = []
    for name, _, _ in SETUPS:
        xs = res[name]
        rows.append(("instances: intake/s, %s" % name, median([x["rps"] for x in xs]), "1/s",
                     base if name != "sqlite x1" else None, "all recorded + synced", all(x["ok"] for x in xs)))
    # one calendar under a stream of notifications: each instance spaces
    # its own push syncs (scheduler.h SCHED_PUSH_SPACING_MS), so this is
    # where three instances could list more often than one
    one = median([x["lists"] for x in res["postgres x1"]])
    for name, _, _ in SETUPS:
        xs = res[name]
        lists = median([x["lists"] for x in xs])
        rows.append(("instances: events.list during a %d s load, %s" % (seconds, name), lists, "calls",
                     one if name == "postgres x3" else None, "= postgres x1" if name == "postgres x3" else "",
                     lists <= one * 1.2 if name == "postgres x3" else None))
    for name, _, _ in SETUPS:
        xs = res[name]
        rows.append(("instances: intake p99 (worst wrk), %s" % name, median([x["p99_ms"] for x in xs]), "ms",
                     None, "", None))
    for name, _, _ in SETUPS:
        xs = res[name]
        rows.append(("instances: intake CPU/notif calsync+pg, %s" % name,
                     median([x["cpu_us"] + x["db_cpu_us"] for x in xs]), "us", None, "", None))
        if name != "sqlite x1":
            rows.append(("instances:   of which PostgreSQL, %s" % name,
                         median([x["db_cpu_us"] for x in xs]), "us", None, "", None))
    return rows


def item_apply_rates(M, fx, R, reps=3, n_cal=3, per_cal=2000):
    """Apply rates of the three set-ups, in the same rotation as intake."""
    res, setups = {}, {}
    try:
        for name, kind, k in SETUPS:
            log("instances: apply set-up %s (%d calendars x %d booked events)" % (name, n_cal, per_cal))
            setups[name] = apply_setup(M, fx, kind, k, n_cal, per_cal)
            res[name] = []
        time.sleep(1.0)
        for r, order in _rotations(reps):
            for name, _, _ in order:
                log("instances: apply run %d/%d, %s" % (r + 1, reps, name))
                res[name].append(apply_round(fx, setups[name]))
    finally:
        for st in setups.values():
            st.close()
    R.setdefault("instances", {})["apply"] = res
    base = median([x["dps"] for x in res["sqlite x1"]])
    rows = []
    for name, _, _ in SETUPS:
        xs = res[name]
        rows.append(("instances: decisions/s, %s" % name, median([x["dps"] for x in xs]), "1/s",
                     base if name != "sqlite x1" else None, "1 audit+outbox row each", all(x["ok"] for x in xs)))
    for name, _, _ in SETUPS:
        xs = res[name]
        rows.append(("instances: apply CPU/decision calsync+pg, %s" % name,
                     median([x["cpu_us"] + x["db_cpu_us"] for x in xs]), "us", None, "", None))
        if name != "sqlite x1":
            rows.append(("instances:   of which PostgreSQL, %s" % name,
                         median([x["db_cpu_us"] for x in xs]), "us", None, "", None))
    for name, _, _ in SETUPS:
        xs = res[name]
        rows.append(("instances: webhooks delivered/s, %s" % name, median([x["webhooks_per_s"] for x in xs]),
                     "1/s", None, "", None))
    # calendar i is asked of instance i % 3, but any instance that sees
    # it dirty first may take its lease and sync it (2000/4000/0 in a
    # repetition happens): the check is that over the repetitions every
    # instance decided, i.e. the work is shared at all
    spread = [sum(x) for x in zip(*(r["per_instance"] for r in res["postgres x3"]))]
    rows.append(("instances: x3 decisions per instance, all reps",
                 "/".join("%d" % d for d in spread), "", None, "all three decide",
                 all(d > 0 for d in spread)))
    return rows


# ---------------------------------------------------------------- google3

# calendar groups of item google3: (name, share of the calendars, seconds
# between notifications as a fraction of poll_interval, or None: polled only)
GROUPS = (("pushed often", 0.25, 0.3), ("pushed now and then", 0.25, 0.7), ("polled only", 0.5, None))


def item_google3(M, fx, R, n_cal=200, poll=10, window=30):
    """One workload, three set-ups in turn (sqlite x1, postgres x1, x3):
    n_cal idle calendars seeded with SQL (active, a sync token, a live
    channel), poll_interval = poll, in the groups of GROUPS: a quarter
    gets a notification every 0.3 poll intervals (closer than half an
    interval), a quarter every 0.7 intervals (between half and a whole
    one), half is polled only. Notifications are spread over the instances
    (round-robin) and over the period (calendar j of m at j/m of it).
    After one interval (the steady state), the fixture counts events.list
    calls per calendar over `window` seconds. Also: list calls of a
    polled-only calendar closer than poll/2 to its previous one (a poll
    done twice)."""
    res = {}
    groups, first = [], 1
    for gname, share, every in GROUPS:
        m = int(n_cal * share) if gname != GROUPS[-1][0] else n_cal - first + 1
        groups.append((gname, list(range(first, first + m)), every))
        first += m
    for name, kind, k in SETUPS:
        log("google3: %s, %d calendars, poll_interval %d s, %d s window" % (name, n_cal, poll, window))
        st = Setup(M, fx, "google3", kind, k, poll_interval=poll)
        prefix = "g3-%s-" % kind
        stop = threading.Event()
        sent = [0, 0]   # accepted, refused
        sent_lock = threading.Lock()

        def pusher(cals, period):
            t_begin, m = time.time(), 0
            while True:
                due = t_begin + m * period / len(cals)
                if stop.wait(max(0.0, due - time.time())):
                    return
                cal = cals[m % len(cals)]
                svc = st.svcs[m % st.k]
                try:
                    status = M.http_req(svc.port, "POST", "/webhooks/google", b"", headers={
                        "X-Goog-Channel-ID": "ch-%d" % cal, "X-Goog-Channel-Token": "tok-%d" % cal,
                        "X-Goog-Resource-State": "exists", "X-Goog-Message-Number": str(m + 2),
                        "X-Goog-Resource-ID": "res-%d" % cal, "Content-Length": "0"})[0]
                except OSError:
                    status = 0
                with sent_lock:
                    sent[0 if status == 200 else 1] += 1
                m += 1
        threads = []
        try:
            st.lead.migrate()
            M.populate(st.lead, n_cal, 0, dirty=0, prefix=prefix)
            st.start()
            for _, cals, every in groups:
                if every:
                    threads.append(threading.Thread(target=pusher, args=(cals, every * poll), daemon=True))
                    threads[-1].start()
            time.sleep(poll)   # past the first interval
            s0, t0 = fx.stats(), time.time()
            time.sleep(window)
            s1, t1 = fx.stats(), time.time()
            stop.set()
            for th in threads:
                th.join()
            lists = {}
            for c in range(1, n_cal + 1):
                ext = "%s%05d" % (prefix, c)
                lists[c] = s1["list"].get(ext, 0) - s0["list"].get(ext, 0)
            at = M.http_req(fx.port, "GET", "/_bench/list_at?prefix=" + prefix)[1]
            doubles, gaps = 0, []
            for c in groups[-1][1]:
                ts = sorted(t for t in at.get("%s%05d" % (prefix, c), []) if t0 <= t <= t1)
                doubles += sum(1 for a, b in zip(ts, ts[1:]) if b - a < poll / 2.0)
                gaps += [b - a for a, b in zip(ts, ts[1:])]
            res[name] = {
                "seconds": t1 - t0, "all": sum(lists.values()) / n_cal, "doubles": doubles,
                "poll_gap_s": median(gaps),
                "groups": {g: sum(lists[c] for c in cals) / len(cals) for g, cals, _ in groups},
                "other_calls": (s1["watch"] - s0["watch"]) + (s1["stop"] - s0["stop"]) +
                               (s1["token"] - s0["token"]),
                "notifications": sent[0], "refused": sent[1],
                "syncs_per_instance": [metric_sum(s, "calsync_syncs_total") for s in st.svcs],
                "per_calendar": lists}
            log("google3: %s: %.3f list calls per calendar %r, %d doubles"
                % (name, res[name]["all"], res[name]["groups"], doubles))
        finally:
            stop.set()
            st.close()
    R["google3"] = {k: {kk: vv for kk, vv in v.items() if kk != "per_calendar"} for k, v in res.items()}
    R["google3_per_calendar"] = {k: v["per_calendar"] for k, v in res.items()}
    one, three = res["postgres x1"], res["postgres x3"]
    ratio = three["all"] / one["all"] if one["all"] else float("inf")
    rows = []
    # equal within +-5 %: a calendar's count over a fixed window moves by
    # one call with where its polls fall (the scheduler's 10 % jitter)
    for name, _, _ in SETUPS:
        v = res[name]
        x3 = name == "postgres x3"
        rows.append(("google3: list calls/calendar in %d s, %s" % (window, name), v["all"], "calls",
                     one["all"] if x3 else None, "= postgres x1 (+-5%)" if x3 else "",
                     abs(ratio - 1) <= 0.05 if x3 else None))
    for gname, _, every in groups:
        for name, _, _ in SETUPS:
            x3 = name == "postgres x3"
            rows.append(("google3: %s (%s), %s" % (gname, "every %.1f poll" % every if every else "-", name),
                         res[name]["groups"][gname], "calls", one["groups"][gname] if x3 else None, "", None))
    for name, _, _ in SETUPS:
        v = res[name]
        rows.append(("google3: polls < poll/2 apart, %s" % name, v["doubles"], "calls", None, "0",
                     v["doubles"] == 0))
        rows.append(("google3: polled only, median s between lists, %s" % name, v["poll_gap_s"], "s",
                     float(poll), "", None))
        rows.append(("google3: other Google calls (watch, stop, token), %s" % name, v["other_calls"], "calls",
                     None, "", None))
        rows.append(("google3: notifications accepted/refused, %s" % name,
                     "%d/%d" % (v["notifications"], v["refused"]), "", None, "none refused", v["refused"] == 0))
    if abs(ratio - 1) > 0.05:
        log("!!! google3: NOT EQUAL: 3 instances made %.3f events.list calls per calendar, 1 instance %.3f"
            " (x%.2f); per group: %r vs %r" % (three["all"], one["all"], ratio, three["groups"], one["groups"]))
    return rows
