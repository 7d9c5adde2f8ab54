#!/usr/bin/env python3
"""Runs the test suites as independent jobs, several at a time, and prints
one closing line "N passed, N failed" (jobs). Python 3 standard library.

    tests/run_all.py [SUITE...]    SUITE: unit asan-unit spec fake pg e2e
                                   e2e-pg e2e-asan memcheck e2e-faketime
                                   (default: all but e2e-faketime)

A job is one program: a unit test binary, the busted specs, the fake
Google's self-test, the throwaway PostgreSQL cluster's self-test
(tests/pg_cluster.py) and the check of the PostgreSQL store's planned SQL
(tests/test_pg_plan.py), or one end-to-end test module against one build (plain,
ASan, valgrind). Most of an end-to-end module's time is spent waiting on
real sockets and real processes, so on a 2-core machine several run well
side by side; CALSYNC_TEST_JOBS sets how many (default 2 x cores). The
longest jobs start first (durations of the last run are kept in
build/test-times.json, seeded from tests/test-times.json on a fresh
checkout), so the run ends close to the longest single job.

Each job's output goes to build/test-logs/<job>.log and is printed whole
when the job fails. Every job gets its own temporary directories (the
harness makes them) and its own ports, so jobs share nothing.
"""
import concurrent.futures
import glob
import json
import os
import subprocess
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
LOGS = os.path.join(ROOT, "build", "test-logs")
TIMES = os.path.join(ROOT, "build", "test-times.json")
# the durations of a reference run (a clean clone on 2 cores), so that a
# fresh checkout starts its longest jobs first too
SEED_TIMES = os.path.join(ROOT, "tests", "test-times.json")
# e2e-faketime is left out: two more minutes of jobs (docs/reliability.md,
# "The clock moved"); run it with `sh tests/run_all.sh e2e-faketime`.
DEFAULT = ["unit", "asan-unit", "spec", "fake", "pg", "e2e", "e2e-pg", "e2e-asan",
           "memcheck"]
# e2e-pg: the e2e modules against PostgreSQL (CALSYNC_DATABASE=postgres, one
# instance; docs/internals/postgres.md). Left out, with the reason: they are
# about SQLite itself, or too long to run twice.
E2E_PG_SKIP = {
    "test_disk": "a full disk under the SQLite file and its journal",
    "test_instances": "one service per SQLite file (flock); several instances "
                      "on PostgreSQL are test_pg_instances",
    "test_security_secrets": "file modes of the .db, -wal, -shm",
    "test_intake": "the local intake journal, which a shared database does not use",
    "test_install": "make install, database independent",
    "test_soak": "long; database independent in what it checks",
    "test_load": "long; the PostgreSQL figures are bench items",
    "test_hardening_http": "opens the SQLite file directly",
    "test_pg_instances": "on PostgreSQL in every suite already",
    "test_slow_policy": "long (a CPU-bound policy over thousands of changes: 300 s); "
                        "policies decided before the write transaction is sync.c's, "
                        "database independent, and e2e and e2e-asan run it",
}
ASAN_ENV = {"CALSYNC_BIN": "build/asan/calsync", "CALSYNC_SANITIZED": "1",
            "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0"}
# The scenarios memcheck runs under valgrind (slow: a few, chosen for the
# paths they cover: the API lifecycle, reverse sync, forward writes with
# their echoes, channels).
MEMCHECK = ["test_api.TestLifecycle", "test_reverse.TestDefaultPolicy",
            "test_forward.TestWrites.test_create_patch_cancel_with_silent_echoes",
            "test_channels"]
VALGRIND = ("valgrind -q --leak-check=full --errors-for-leak-kinds=definite "
            "--error-exitcode=99")
# Moves the clock for calsync, the fake Google and the tests together
# (docs/reliability.md): a test that still depends on the calendar date
# fails here.
FAKETIME_SHIFT = os.environ.get("CALSYNC_FAKETIME", "+400d")


def e2e_modules():
    return sorted(os.path.basename(p)[:-3]
                  for p in glob.glob(os.path.join(ROOT, "tests", "e2e", "test_*.py")))


def unittest_cmd(*names):
    return [sys.executable, "-m", "unittest", "-v"] + list(names)


def jobs_for(suite):
    """[(name, argv, env, cwd)] for one suite."""
    out = []
    e2e_dir = os.path.join(ROOT, "tests", "e2e")
    if suite == "unit":
        for t in sorted(glob.glob(os.path.join(ROOT, "build", "tests", "test_*"))):
            out.append(("unit:" + os.path.basename(t), [t], {}, ROOT))
    elif suite == "asan-unit":
        for t in sorted(glob.glob(os.path.join(ROOT, "build", "asan", "tests", "test_*"))):
            out.append(("asan-unit:" + os.path.basename(t), [t],
                        {"ASAN_OPTIONS": "detect_leaks=1"}, ROOT))
    elif suite == "spec":
        if glob.glob(os.path.join(ROOT, "spec", "*_spec.lua")):
            out.append(("spec", ["lua5.4", "/usr/bin/busted"], {}, ROOT))
    elif suite == "fake":
        out.append(("fake-google", unittest_cmd("tests/test_fake_google.py"), {}, ROOT))
        out.append(("fake-graph", unittest_cmd("tests/test_fake_graph.py"), {}, ROOT))
    elif suite == "pg":
        out.append(("pg-cluster", unittest_cmd("tests/test_pg_cluster.py"), {}, ROOT))
        out.append(("pg-plan", unittest_cmd("tests/test_pg_plan.py"), {}, ROOT))
    elif suite == "e2e":
        for m in e2e_modules():
            out.append(("e2e:" + m, unittest_cmd(m), {"CALSYNC_BIN": "build/calsync"}, e2e_dir))
    elif suite == "e2e-pg":
        for m in e2e_modules():
            if m not in E2E_PG_SKIP:
                out.append(("e2e-pg:" + m, unittest_cmd(m),
                            {"CALSYNC_BIN": "build/calsync", "CALSYNC_DATABASE": "postgres"},
                            e2e_dir))
    elif suite == "e2e-asan":
        for m in e2e_modules():
            out.append(("e2e-asan:" + m, unittest_cmd(m), dict(ASAN_ENV), e2e_dir))
    elif suite == "memcheck":
        # any valgrind error or definite leak makes the service exit 99,
        # which fails the clean stop
        for m in MEMCHECK:
            out.append(("memcheck:" + m, unittest_cmd(m),
                        {"CALSYNC_BIN": "build/calsync", "CALSYNC_WRAPPER": VALGRIND}, e2e_dir))
    elif suite == "e2e-faketime":
        # -m: the multithreaded libfaketime (calsync's condition waits).
        # --exclude-monotonic: Python keeps the real monotonic clock, or its
        # timed lock waits (sem_clockwait, not intercepted) last the shift;
        # the harness moves calsync's monotonic clock with the wall clock
        # (docs/reliability.md, "The clock moved")
        for m in e2e_modules():
            out.append(("e2e-faketime:" + m,
                        ["faketime", "-m", "--exclude-monotonic", "-f", FAKETIME_SHIFT]
                        + unittest_cmd(m),
                        {"CALSYNC_BIN": "build/calsync"}, e2e_dir))
    else:
        raise SystemExit("unknown suite %s (unit asan-unit spec fake pg e2e e2e-pg e2e-asan "
                         "memcheck e2e-faketime)" % suite)
    return out


def main(argv):
    suites = argv or DEFAULT
    jobs = [j for s in suites for j in jobs_for(s)]
    os.makedirs(LOGS, exist_ok=True)
    times = {}
    for path in (SEED_TIMES, TIMES):   # this machine's last run wins
        try:
            with open(path) as f:
                times.update(json.load(f))
        except (OSError, ValueError):
            pass
    # longest first; unknown jobs are assumed long (they may be new e2e modules)
    jobs.sort(key=lambda j: -times.get(j[0], 60.0))
    width = int(os.environ.get("CALSYNC_TEST_JOBS", "0")) or 2 * (os.cpu_count() or 1)
    print("running %d jobs, %d at a time (logs in build/test-logs/)" % (len(jobs), width),
          flush=True)
    lock = threading.Lock()
    results = {}
    t_all = time.time()

    def run(job):
        name, cmd, env, cwd = job
        log = os.path.join(LOGS, name.replace("/", "_") + ".log")
        t0 = time.time()
        with open(log, "wb") as f:
            try:
                rc = subprocess.call(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=dict(os.environ, **env))
            except OSError as e:
                f.write(("cannot run %s: %s\n" % (cmd[0], e)).encode())
                rc = 127
        dt = time.time() - t0
        with lock:
            results[name] = (rc, dt)
            print("%-6s %-60s %6.1fs" % ("ok" if rc == 0 else "FAIL", name, dt), flush=True)
            if rc != 0:
                with open(log, "rb") as f:
                    sys.stdout.write(f.read().decode("utf-8", "replace")[-20000:])
                sys.stdout.flush()

    with concurrent.futures.ThreadPoolExecutor(max_workers=width) as pool:
        list(pool.map(run, jobs))
    times.update({n: round(dt, 1) for n, (rc, dt) in results.items()})
    try:
        with open(TIMES, "w") as f:
            json.dump(times, f, indent=1, sort_keys=True)
    except OSError:
        pass
    failed = sorted(n for n, (rc, _) in results.items() if rc != 0)
    print()
    print("wall time %.0fs" % (time.time() - t_all))
    if failed:
        print("failed jobs: " + " ".join(failed))
    print("%d passed, %d failed" % (len(results) - len(failed), len(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
