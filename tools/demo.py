#!/usr/bin/env python3
"""make demo: a one-minute tour of calsync, nothing left running.

Starts the fake Google (tests/fake_google.py), a webhook receiver that
prints every signed webhook it gets, and build/calsync between them; adds a
credential, a calendar and three bookings (two calsync writes to Google,
one an occurrence of a weekly series); then acts as the host in Google:
moves one event, deletes another, moves one occurrence of the series. It
prints each decision calsync made (from the bookings' audit) and each
webhook the app received, with its signature checked. Everything it starts
is stopped, and its temporary directory removed, however it ends.

    python3 tools/demo.py [--bin build/calsync]

Python 3 standard library only; exit 0 when every step was seen."""
import argparse
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
from fake_google import FakeGoogle  # noqa: E402
from harness import future, instance_id, lua_str  # noqa: E402
from receiver import Receiver  # noqa: E402

SECRET = "whsec_demo"
T0 = time.monotonic()


def say(msg=""):
    print("[%5.1fs] %s" % (time.monotonic() - T0, msg) if msg else "", flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Demo:
    def __init__(self, binary):
        self.bin = binary
        self.tmp = tempfile.mkdtemp(prefix="calsync-demo-")
        self.fg = self.rx = self.proc = None
        self.printed = 0

    # ---------------------------------------------------------------- plumbing
    def call(self, method, path, body=None):
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            data = json.dumps(body).encode() if body is not None else None
            c.request(method, path, body=data,
                      headers={"Content-Type": "application/json"} if data else {})
            r = c.getresponse()
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
        finally:
            c.close()

    def wait(self, what, fn, timeout=20):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            v = fn()
            if v:
                return v
            self.print_webhooks()
            time.sleep(0.05)
        raise RuntimeError("timed out waiting for " + what)

    def print_webhooks(self):
        for d in self.rx.accepted()[self.printed:]:
            self.printed += 1
            want = hmac.new(SECRET.encode(), d.body, hashlib.sha256).hexdigest()
            ok = hmac.compare_digest(want, d.headers.get("x-cal-signature-256", ""))
            p = d.json["payload"]
            say("  webhook -> app: %-20s uid=%-12s %s -> %s  signature %s" % (
                d.json["triggerEvent"], p.get("uid"),
                (p.get("previous") or {}).get("startTime", "-"), p.get("startTime"),
                "valid" if ok else "INVALID"))

    def audit(self, uid):
        return self.call("GET", "/v1/bookings/%s/audit" % uid)[1]["entries"]

    def decided(self, uid, n):
        """Waits for the n-th audit entry of uid and prints it."""
        e = self.wait("decision on " + uid, lambda: len(self.audit(uid)) >= n
                      and self.audit(uid)[n - 1])
        say("  decision: booking %-12s change=%-12s -> %-10s (policy %s, %s: %s)" % (
            uid, e["change"], e["action"], e["policy"], e["source"], e["reason"] or "-"))

    # ---------------------------------------------------------------- the tour
    def run(self):
        say("starting the fake Google, a webhook receiver and calsync")
        self.fg = FakeGoogle().start()
        self.fg.control("POST", "/config", {"client_id": "demo", "client_secret": "demo"})
        self.rx = Receiver(secret=SECRET).start()
        port = free_port()
        conf = os.path.join(self.tmp, "calsync.conf.lua")
        with open(conf, "w") as f:
            f.write("\n".join([
                'listen = "127.0.0.1:%d"' % port,
                'public_url = "http://127.0.0.1:%d"' % port,
                'database = "calsync.db"',
                "policies = " + lua_str(os.path.join(ROOT, "policies")),
                "google = { api_base = %s, token_url = %s, client_id = \"demo\","
                " client_secret = \"demo\" }" % (lua_str(self.fg.api_base),
                                                 lua_str(self.fg.token_url)),
                self.rx.config(), ""]))
        self.log = open(os.path.join(self.tmp, "calsync.log"), "wb")
        self.proc = subprocess.Popen([self.bin, "serve", "-c", conf], cwd=self.tmp,
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        self.port = port
        self.wait("calsync to start", lambda: "event=service.started" in self.logtext()
                  or self.proc.poll() is not None)
        if self.proc.poll() is not None:
            raise RuntimeError("calsync exited at start:\n" + self.logtext())
        say("calsync listens on 127.0.0.1:%d" % port)

        say()
        say("the booking app: a credential, a calendar, bookings")
        st, cred = self.call("POST", "/v1/credentials",
                             {"provider": "google", "refresh_token": "rt-demo"})
        say("  POST /v1/credentials -> %d %s" % (st, cred))
        st, cal = self.call("POST", "/v1/calendars",
                            {"credential_id": cred["id"], "external_id": "primary"})
        say("  POST /v1/calendars   -> %d id=%s state=%s" % (st, cal["id"], cal["state"]))
        self.wait("the first full sync", lambda: self.call(
            "GET", "/v1/calendars/%d" % cal["id"])[1]["state"] == "active")
        say("  calendar %d is active (first full sync done)" % cal["id"])
        for uid, day, title in (("intro-call", 10, "Intro call"),
                                ("demo-review", 11, "Demo review")):
            st, b = self.call("POST", "/v1/bookings", {
                "uid": uid, "calendar_id": cal["id"], "title": title,
                "start": future(day, 10), "end": future(day, 10, 30)})
            say("  POST /v1/bookings %-12s -> %d (%s)" % (uid, st, b["start"]))
        series = self.fg.host("primary", op="create", event={
            "summary": "Weekly 1:1", "start": {"dateTime": future(7, 9), "timeZone": "UTC"},
            "end": {"dateTime": future(7, 9, 30), "timeZone": "UTC"},
            "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=4"]})
        st, b = self.call("POST", "/v1/bookings", {
            "uid": "weekly-2", "calendar_id": cal["id"], "title": "Weekly 1:1",
            "start": future(14, 9), "end": future(14, 9, 30),
            "event_id": series["id"], "original_start": future(14, 9)})
        say("  POST /v1/bookings %-12s -> %d (occurrence 2 of a weekly series)" % ("weekly-2", st))
        ev = {}
        for uid in ("intro-call", "demo-review"):
            ev[uid] = self.wait("calsync to write %s to Google" % uid, lambda u=uid: self.call(
                "GET", "/v1/bookings/" + u)[1].get("event_id"))
            say("  calsync wrote %-12s to Google as event %s" % (uid, ev[uid]))
        say()
        say("the host, in Google Calendar:")
        say("  moves 'Intro call' by two hours")
        self.fg.host("primary", op="move", id=ev["intro-call"],
                     start=future(10, 12), end=future(10, 12, 30))
        self.decided("intro-call", 2)
        say("  deletes 'Demo review'")
        self.fg.host("primary", op="delete", id=ev["demo-review"])
        self.decided("demo-review", 2)
        say("  moves only the second occurrence of 'Weekly 1:1' to the afternoon")
        self.fg.host("primary", op="move", id=instance_id(series["id"], future(14, 9)),
                     start=future(14, 15), end=future(14, 15, 30))
        self.decided("weekly-2", 2)
        self.wait("the three webhooks", lambda: len(self.rx.accepted()) >= 3)
        self.print_webhooks()
        say()
        for uid in ("intro-call", "demo-review", "weekly-2"):
            b = self.call("GET", "/v1/bookings/" + uid)[1]
            say("booking %-12s %-9s %s .. %s" % (uid, b["status"], b["start"], b["end"]))
        say("every decision is in GET /v1/bookings/{uid}/audit")

    def logtext(self):
        with open(os.path.join(self.tmp, "calsync.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        rc = None
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.rx:
            self.rx.stop()
        if self.fg:
            self.fg.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
        return rc


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "calsync"))
    args = ap.parse_args()
    d = Demo(os.path.abspath(args.bin))
    ok = False
    try:
        d.run()
        ok = True
    except Exception as e:  # reported, then everything is stopped below
        say("demo failed: %s" % e)
        if d.proc:
            sys.stdout.write("calsync's log:\n" + d.logtext()[-3000:])
    finally:
        rc = d.stop()
    say("stopped calsync (exit %s), the receiver and the fake Google; removed %s"
        % (rc, d.tmp))
    return 0 if ok and rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
