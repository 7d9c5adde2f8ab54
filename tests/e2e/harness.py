"""End-to-end harness: starts the real calsync binary on a free port with a
temporary config, database and policies directory, and talks to it over
real HTTP. Python 3 standard library only.

    svc = Calsync(self.tmp).start()
    status, body, headers = svc.request("POST", "/v1/credentials", {...})
    svc.stop()            # SIGTERM, expects exit 0 and a clean sanitizer log

The binary is $CALSYNC_BIN (default build/calsync). Under sanitizers
($CALSYNC_SANITIZED=1) stop() also fails the test on any ASan/UBSan/LSan
report in the service's stderr.
"""
import http.client
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import sys
import subprocess
import tempfile
import time
import unittest
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import openapi_check  # noqa: E402 -- every answer is checked against docs/openapi.yaml
BIN = os.path.join(ROOT, os.environ.get("CALSYNC_BIN", "build/calsync"))
SANITIZED = os.environ.get("CALSYNC_SANITIZED") == "1"
# e.g. "valgrind --leak-check=full --error-exitcode=99 --errors-for-leak-kinds=definite"
WRAPPER = os.environ.get("CALSYNC_WRAPPER", "").split()
# CALSYNC_DATABASE=postgres: every Calsync gets a fresh database on one
# throwaway PostgreSQL cluster per test process (tests/pg_cluster.py)
# instead of a SQLite file; svc.db() then speaks to it in sqlite3's shape.
PG = os.environ.get("CALSYNC_DATABASE") == "postgres"
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "runtime error:",
                   "ERROR: LeakSanitizer", "SUMMARY: UndefinedBehaviorSanitizer")


# ---------------------------------------------------------------- the clock
#
# No test depends on the calendar date (issue 13): an instant that must lie
# in the future or in the past -- a booking the default policy must not hand
# to on_past, an event the fake Google must still expand -- is built here,
# relative to the day the run started. TODAY is fixed when this module is
# imported, so one run's instants do not shift when it crosses midnight:
# future(days >= 2) is more than a day ahead for the whole run, past(days
# >= 1) is behind it. Everything is UTC unless a zone is named.
# docs/reliability.md ("The clock moved") runs the suite 400 days ahead.

UTC = timezone.utc
TODAY = datetime.fromtimestamp(time.time(), UTC).replace(hour=0, minute=0, second=0,
                                                         microsecond=0)


def day_at(days, hour=0, minute=0, tz=None):
    """An aware datetime: hour:minute on the day `days` after the run's first
    day (negative: before it), in UTC or, given `tz` (an IANA zone), as the
    wall-clock time there on that date."""
    d = (TODAY + timedelta(days=days)).date()
    return datetime(d.year, d.month, d.day, hour, minute,
                    tzinfo=ZoneInfo(tz) if tz else UTC)


def rfc3339(t):
    """RFC 3339 UTC with seconds, as calsync's API writes times: an aware
    datetime, epoch seconds or an RFC 3339 string with any offset."""
    if isinstance(t, str):
        t = datetime.fromisoformat(t.replace("Z", "+00:00"))
    elif isinstance(t, (int, float)):
        t = datetime.fromtimestamp(t, UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def future(days, hour=0, minute=0):
    """hour:minute UTC, `days` (>= 2) days after the run's first day."""
    if days < 2:
        raise ValueError("future(days=%r): less than two days ahead can be the past"
                         " before a long run ends" % days)
    return rfc3339(day_at(days, hour, minute))


def past(days, hour=0, minute=0):
    """hour:minute UTC, `days` (>= 1) days before the run's first day."""
    if days < 1:
        raise ValueError("past(days=%r) is not in the past" % days)
    return rfc3339(day_at(-days, hour, minute))


def ymd(days):
    """The date `days` after the run's first day: YYYY-MM-DD."""
    return (TODAY + timedelta(days=days)).strftime("%Y-%m-%d")


def local(days, hour=0, minute=0):
    """A wall-clock time without offset, for an event's start/end with a
    timeZone: YYYY-MM-DDTHH:MM:00 on the day `days` after the first day."""
    return "%sT%02d:%02d:00" % (ymd(days), hour, minute)


def id_time(t):
    """The instant part of a recurring event's instance id (Google's
    `<seriesId>_20261208T080000Z`): YYYYMMDDTHHMMSSZ of the UTC instant."""
    return rfc3339(t).replace("-", "").replace(":", "")


def instance_id(series, start):
    """Instance id of the occurrence of `series` that starts (originally) at
    `start`: `<seriesId>_<YYYYMMDDTHHMMSS>Z` (timed events only)."""
    return "%s_%s" % (series, id_time(start))


def next_dst_change(zone, after=None):
    """The first instant after `after` (an aware datetime; default: the
    run's first day) at which `zone`'s UTC offset changes, as a UTC
    datetime on the minute; None if it has none within two years. Tests of
    daylight-saving shifts use the next real transition, never a fixed
    year's."""
    z = ZoneInfo(zone)
    t = (after or TODAY).astimezone(UTC).replace(second=0, microsecond=0)
    off = t.astimezone(z).utcoffset()
    hour, minute = timedelta(hours=1), timedelta(minutes=1)
    for _ in range(2 * 366 * 24):
        if (t + hour).astimezone(z).utcoffset() != off:
            while (t + minute).astimezone(z).utcoffset() == off:
                t += minute
            return t + minute
        t += hour
    return None


# time.sleep under libfaketime (the clock-moved run): see tests/faketime_sleep.py
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import faketime_sleep  # noqa: E402,F401


def service_env():
    """The environment calsync runs with. Under libfaketime the Python side
    keeps the monotonic clock real (FAKETIME_DONT_FAKE_MONOTONIC=1: Python's
    timed lock waits are not intercepted), but calsync must have it moved
    with the wall clock: libfaketime 0.9.10 converts a pthread_cond_timedwait
    deadline on a CLOCK_MONOTONIC condition as if it were, so with the real
    monotonic clock the scheduler's wait would return at once, every time."""
    env = dict(os.environ)
    if "faketime" in env.get("LD_PRELOAD", ""):
        env.pop("FAKETIME_DONT_FAKE_MONOTONIC", None)
    return env


def lua_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Calsync:
    def __init__(self, workdir, api_token=None, config_extra="",
                 policies=None, copy_shipped_policies=True):
        self.dir = workdir
        self.api_token = api_token
        self.config_extra = config_extra
        self.proc = None
        self.port = None
        self.log_path = os.path.join(workdir, "calsync.log")
        self.db_path = os.path.join(workdir, "calsync.db")
        # a URL to share (several instances on one database), or None
        self.db_url = None
        if PG:
            sys.path.insert(0, os.path.join(ROOT, "tests"))
            import pg_cluster
            # one database per service directory, as one SQLite file is:
            # a second Calsync on the same directory (a restart, a probe)
            # finds the first one's
            mark = os.path.join(workdir, "pg-database-url")
            if os.path.exists(mark):
                with open(mark) as f:
                    self.db_url = f.read().strip()
            else:
                self.db_url = pg_cluster.shared_cluster().create_database()
                with open(mark, "w") as f:
                    f.write(self.db_url)
        self.policies_dir = os.path.join(workdir, "policies")
        os.makedirs(self.policies_dir, exist_ok=True)
        shipped = os.path.join(ROOT, "policies")
        if copy_shipped_policies and os.path.isdir(shipped):
            for name in os.listdir(shipped):
                if name.endswith(".lua"):
                    shutil.copy(os.path.join(shipped, name), self.policies_dir)
        if not os.path.exists(os.path.join(self.policies_dir, "default.lua")):
            with open(os.path.join(self.policies_dir, "default.lua"), "w") as f:
                f.write("return {}\n")
        for name, src in (policies or {}).items():
            with open(os.path.join(self.policies_dir, name + ".lua"), "w") as f:
                f.write(src)
        self.config_path = os.path.join(workdir, "calsync.conf.lua")

    def write_config(self):
        # A fixed free port per instance (kept across restarts), so that
        # public_url -- where the fake Google pushes -- is known up front.
        if not getattr(self, "fixed_port", None):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.fixed_port = s.getsockname()[1]
            self.port_picked = True
        lines = [
            'listen = "127.0.0.1:%d"' % self.fixed_port,
            'public_url = "http://127.0.0.1:%d"' % self.fixed_port,
            "database = " + lua_str(self.db_url or self.db_path),
            "policies = " + lua_str(self.policies_dir),
            'log_level = "debug"',
        ]
        if self.api_token:
            lines.append("api_token = " + lua_str(self.api_token))
        if "google" not in self.config_extra:
            # never the real Google from a test: a closed loopback port
            lines.append('google = { api_base = "http://127.0.0.1:9/calendar/v3",'
                         ' token_url = "http://127.0.0.1:9/token" }')
        if "microsoft" not in self.config_extra:
            # nor the real Microsoft Graph
            lines.append('microsoft = { api_base = "http://127.0.0.1:9/v1.0",'
                         ' token_url = "http://127.0.0.1:9/token" }')
        lines.append(self.config_extra)
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout=60 if WRAPPER else 15):
        # The port is picked free, then bound by calsync: a test running
        # in parallel may take it in between, and calsync (rightly) exits 1
        # on a busy port. Only a first start may move to another port: a
        # restart keeps the one its channels were registered with.
        for attempt in range(5):
            try:
                return self._start(timeout)
            except AssertionError as e:
                if not (getattr(self, "port_picked", False) and attempt < 4
                        and not getattr(self, "started_once", False)
                        and "is already in use" in str(e)):
                    raise
                self.log.close()
                self.fixed_port = None

    def _start(self, timeout):
        self.write_config()
        self.log = open(self.log_path, "ab")
        self._log_offset = self.log.tell()
        self.proc = subprocess.Popen(WRAPPER + [BIN, "serve", "-c", self.config_path],
                                     stdout=subprocess.DEVNULL, stderr=self.log,
                                     cwd=self.dir, env=service_env())
        # `timeout` is how long a start may go without a sign of progress
        # (a new log line): under valgrind on a loaded machine, migrations
        # and the first policy load alone can take a minute, and that is
        # slowness, not a hang. A hard cap still ends a start that logs
        # forever without listening.
        now = time.time()
        deadline, cap, seen = now + timeout, now + 10 * timeout, 0
        while time.time() < min(deadline, cap):
            text = self.log_text(since_start=True)
            if len(text) > seen:
                seen = len(text)
                deadline = max(deadline, time.time() + timeout)
            m = re.search(r"event=service\.started .*listen=[0-9.]+:(\d+)", text)
            if m:
                self.port = int(m.group(1))
                self.started_once = True
                return self
            if self.proc.poll() is not None:
                raise AssertionError("calsync exited %s at start:\n%s"
                                     % (self.proc.returncode, text))
            time.sleep(0.02)
        # never leave it running behind the failed test (under valgrind a
        # stray service outlived the whole suite)
        self.proc.kill()
        self.proc.wait()
        raise AssertionError("calsync did not start:\n" + self.log_text())

    def log_text(self, since_start=False):
        with open(self.log_path, "rb") as f:
            if since_start:
                f.seek(self._log_offset)
            return f.read().decode("utf-8", "replace")

    def request(self, method, path, body=None, headers=None, token=True,
                raw=False, timeout=10):
        hdrs = dict(headers or {})
        if token and self.api_token and "Authorization" not in hdrs:
            hdrs["Authorization"] = "Bearer " + self.api_token
        data = body
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
        elif isinstance(body, str):
            data = body.encode()
        if data:
            # the API takes JSON bodies only, declared as such (415 otherwise)
            hdrs.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            payload = r.read()
            rh = {k.lower(): v for k, v in r.getheaders()}
        finally:
            conn.close()
        # every answer the suite receives must match docs/openapi.yaml
        openapi_check.validate_response(method, path, r.status, payload,
                                        rh.get("content-type"))
        if raw:
            return r.status, payload, rh
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = payload.decode("utf-8", "replace")
        return r.status, parsed, rh

    def stop(self, sig=signal.SIGTERM, timeout=120 if WRAPPER else 20, expect_rc=0):
        if not self.proc:
            return None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("calsync did not stop within %ss" % timeout)
        finally:
            self.log.close()
            self.proc = None
        self.check_sanitizers()
        if expect_rc is not None and rc != expect_rc:
            raise AssertionError("calsync exited %s (expected %s):\n%s"
                                 % (rc, expect_rc, self.log_text()[-4000:]))
        return rc

    def kill9(self):
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.log.close()
            self.proc = None

    def check_sanitizers(self):
        text = self.log_text()
        for mark in SANITIZER_MARKS:
            if mark in text:
                raise AssertionError("sanitizer report in calsync log:\n" + text[-6000:])

    def db(self):
        if self.db_url:
            import pg_cluster
            return pg_cluster.shared_cluster().connect(self.db_url)
        return sqlite3.connect(self.db_path, timeout=10)

    # What an API request may change. Channels, notifications, the mirror and
    # the calendars' sync columns also change in the background (watches,
    # polls), so "a rejected request changed nothing" is checked on these.
    API_STATE = {
        "credentials": "id, provider, refresh_token",
        "calendars": "id, credential_id, external_id, policy, settings",
        "bookings": "*", "booking_refs": "*", "audit": "*", "outbox": "*",
        # a job's attempts/next_at move while the writer retries in the background
        "jobs": "id, kind, booking_uid, calendar_id, payload, created_at",
    }

    def snapshot(self, tables=None):
        """Rows of the API-owned tables (or of `tables`: {name: columns}),
        to assert that a request changed nothing."""
        tables = tables or self.API_STATE
        with self.db() as con:
            return {t: con.execute("SELECT %s FROM %s ORDER BY 1" % (cols, t)).fetchall()
                    for t, cols in sorted(tables.items())}


class CalsyncCase(unittest.TestCase):
    """Base class: self.tmp is a fresh directory, removed after the test;
    self.svc is started by start() and stopped (cleanly) at tearDown."""
    api_token = None
    config_extra = ""
    policies = None

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="calsync-e2e-")
        self.svc = None

    def wait_for(self, fn, timeout=30, what="condition"):
        """Polls fn until it returns something true and returns that: a
        positive sign of progress, never a fixed sleep."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            v = fn()
            if v:
                return v
            time.sleep(0.02)
        self.fail("timed out waiting for " + what)

    def start(self, **kw):
        kw.setdefault("api_token", self.api_token)
        kw.setdefault("config_extra", self.config_extra)
        kw.setdefault("policies", self.policies)
        self.svc = Calsync(self.tmp, **kw).start()
        return self.svc

    def tearDown(self):
        try:
            if self.svc and self.svc.proc:
                self.svc.stop()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def assertError(self, resp, status, code=None):
        st, body, _ = resp
        self.assertEqual(st, status, body)
        self.assertIsInstance(body, dict, body)
        self.assertIn("error", body)
        self.assertIsInstance(body["error"].get("message"), str)
        if code:
            self.assertEqual(body["error"]["code"], code)
