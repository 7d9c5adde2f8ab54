"""Operator-facing behaviour (issue 17): /metrics passes promtool and
matches docs/operations.md, /healthz says why, start warnings, secrets from
env() and file(), JSON-lines logs, the list of log events in step with the
source, and `make demo`. Real binary, real sockets; quick (a few seconds)."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from fake_google import FakeGoogle  # noqa: E402
from harness import BIN, ROOT, CalsyncCase, lua_str, service_env  # noqa: E402

DOC = os.path.join(ROOT, "docs", "operations.md")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def doc_metric_families():
    """Every family named in the metrics table of docs/operations.md."""
    text = read(DOC)
    section = text[text.index("- `GET /metrics`"):text.index("## Outbound webhooks")]
    fams = set()
    for line in section.splitlines():
        if line.startswith("| `calsync_"):
            first_cell = line.split("|")[1]
            fams.update(re.findall(r"`(calsync_[a-z_]+)", first_cell))
    return fams


def exposition_families(text):
    """{family: type} from the # TYPE lines."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def promtool(text):
    p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=30)
    return p.returncode, (p.stdout + p.stderr).decode()


class MetricsTest(CalsyncCase):
    def scrape(self):
        st, body, h = self.svc.request("GET", "/metrics", raw=True)
        self.assertEqual(st, 200)
        return body.decode()

    def test_promtool_passes_and_docs_match_from_the_first_scrape(self):
        # a subscriber URL with a secret in its path and query: no label may show it
        self.start(config_extra='webhooks = { { url = "https://hooks.example.com/T0/'
                                'SECRETPATH?token=SECRETQUERY", secret = "s" } }')
        text = self.scrape()
        rc, out = promtool(text)
        self.assertEqual(rc, 0, "promtool check metrics:\n" + out)
        fams = exposition_families(text)
        documented = doc_metric_families()
        self.assertEqual(set(fams) - documented, set(), "exposed but not in docs/operations.md")
        self.assertEqual(documented - set(fams), set(),
                         "documented but absent from the first scrape")
        for f in fams:
            self.assertIn("# HELP %s " % f, text)
        for h in ("calsync_google_request_duration_seconds", "calsync_sync_duration_seconds",
                  "calsync_policy_decision_duration_seconds",
                  "calsync_webhook_delivery_duration_seconds"):
            self.assertEqual(fams[h], "histogram")
        self.assertRegex(text, r'(?m)^calsync_build_info\{version="[^"]+"\} 1$')
        for state in ("syncing", "active", "revoked", "error", "stopped"):
            self.assertIn('calsync_calendars{state="%s"} 0' % state, text)
        self.assertRegex(text, r"(?m)^calsync_sync_stalest_age_seconds 0")
        self.assertRegex(text, r"(?m)^calsync_outbox_oldest_age_seconds 0")
        self.assertNotIn("SECRET", text)
        self.assertNotIn("://", text, "a label holds a URL")

    def test_gauges_and_histograms_move(self):
        # no Google client configured: the sync fails at once, for good
        # (the calendar enters `error`), which is what is counted
        self.start()
        st, cred, _ = self.svc.request("POST", "/v1/credentials",
                                       {"provider": "google", "refresh_token": "rt"})
        self.assertEqual(st, 201)
        st, cal, _ = self.svc.request("POST", "/v1/calendars",
                                      {"credential_id": cred["id"], "external_id": "primary"})
        self.assertEqual(st, 201)
        deadline = time.time() + 20
        while time.time() < deadline:
            text = self.scrape()
            m = re.search(r'(?m)^calsync_sync_duration_seconds_count\{kind="full"\} (\d+)', text)
            if m and int(m.group(1)) >= 1:
                break
            time.sleep(0.05)
        else:
            self.fail("no full sync observed:\n" + text)
        self.assertRegex(text, r'(?m)^calsync_syncs_total\{kind="full",result="error"\} [1-9]')
        # the gauge is read at scrape time: the error is committed by then
        self.assertIn('calsync_calendars{state="error"} 1', text)
        # never synced: its age counts from when it was added, so it grows
        age = float(re.search(r"(?m)^calsync_sync_stalest_age_seconds (\S+)", text).group(1))
        self.assertGreater(age, 0)
        rc, out = promtool(text)
        self.assertEqual(rc, 0, out)


class HealthTest(CalsyncCase):
    def test_warnings_without_google_client_and_healthy(self):
        self.start()
        st, body, _ = self.svc.request("GET", "/healthz")
        self.assertEqual(st, 200, body)
        self.assertEqual(body["status"], "ok")
        self.assertEqual(body["reasons"], [])
        self.assertTrue(any("google.client_id" in w for w in body["warnings"]), body)
        self.assertTrue(any("public_url" in w for w in body["warnings"]), body)
        log = self.svc.log_text()
        self.assertRegex(log, r"level=warn event=service\.provider_unconfigured provider=google msg=")
        self.assertRegex(log, r"level=warn event=service\.push_unavailable msg=")

    def test_no_warning_with_a_client_and_https_public_url(self):
        self.start(config_extra='google = { client_id = "c", client_secret = "s",'
                                ' api_base = "http://127.0.0.1:9/x", token_url = "http://127.0.0.1:9/t" }')
        self.svc.stop()
        # public_url must stay the harness's (pushes); rewrite it to https
        with open(self.svc.config_path) as f:
            conf = f.read()
        self.assertNotIn("provider=google", self.svc.log_text())
        conf = re.sub(r'public_url = "http://', 'public_url = "https://', conf)
        with open(self.svc.config_path, "w") as f:
            f.write(conf)
        self.svc.write_config = lambda: None
        self.svc.start()
        st, body, _ = self.svc.request("GET", "/healthz")
        self.assertEqual((st, body["warnings"]), (200, []), body)

    def test_unhealthy_names_the_reasons(self):
        self.start(policies={"broken": "return {"})
        st, body, _ = self.svc.request("GET", "/healthz")
        self.assertEqual(st, 503, body)
        self.assertEqual((body["status"], body["database"], body["policies"]),
                         ("unhealthy", True, False))
        self.assertEqual(len(body["reasons"]), 1, body)
        self.assertRegex(body["reasons"][0], r"^policy 'broken' has no live version: broken\.lua:1:")

    def test_no_policy_at_all_is_unhealthy(self):
        self.start()
        self.svc.stop()
        for name in os.listdir(self.svc.policies_dir):
            os.remove(os.path.join(self.svc.policies_dir, name))
        self.svc.start()
        st, body, _ = self.svc.request("GET", "/healthz")
        self.assertEqual(st, 503, body)
        self.assertRegex(body["reasons"][0], r"^no policy is loaded from ")


class ConfigSecretsTest(CalsyncCase):
    def run_check(self, conf, env=None, cwd=None):
        path = os.path.join(self.tmp, "c.conf.lua")
        with open(path, "w") as f:
            f.write(conf + "policies = %s\n" % lua_str(os.path.join(ROOT, "policies")))
        e = dict(os.environ)
        e.update(env or {})
        return subprocess.run([BIN, "policy", "check", "-c", path], capture_output=True,
                              text=True, env=e, cwd=cwd or self.tmp, timeout=30)

    def test_env_and_file_supply_secrets(self):
        with open(os.path.join(self.tmp, "token"), "w") as f:
            f.write("tok-from-file\n")
        os.environ["CALSYNC_TEST_OPS_SECRET"] = "env-secret"
        self.addCleanup(os.environ.pop, "CALSYNC_TEST_OPS_SECRET", None)
        svc = self.start(config_extra='api_token = file("token")\n'
                         'webhooks = { { url = "http://127.0.0.1:9/h",'
                         ' secret = env("CALSYNC_TEST_OPS_SECRET") } }')
        self.assertEqual(svc.request("GET", "/v1/policies", token=False)[0], 401)
        st, _, _ = svc.request("GET", "/v1/policies",
                               headers={"Authorization": "Bearer tok-from-file"}, token=False)
        self.assertEqual(st, 200)

    def test_missing_secrets_stop_the_start_naming_the_line(self):
        p = self.run_check('log_level = "info"\napi_token = env("CALSYNC_TEST_UNSET_X")\n')
        self.assertEqual(p.returncode, 1)
        self.assertIn("c.conf.lua:2: env: CALSYNC_TEST_UNSET_X is not set", p.stderr)
        p = self.run_check('api_token = file("nope")\n')
        self.assertEqual(p.returncode, 1)
        self.assertRegex(p.stderr, r"c\.conf\.lua:1: file: cannot read \S+/nope: No such file")
        os.mkfifo(os.path.join(self.tmp, "fifo"))
        p = self.run_check('api_token = file("fifo")\n')      # never blocks
        self.assertIn("not a regular file", p.stderr)
        p = self.run_check('api_token = env("CALSYNC_TEST_UNSET_X", "dflt")\n'
                           'log_format = "yaml"\n')
        self.assertIn("'log_format' must be \"text\" or \"json\"", p.stderr)
        p = self.run_check('api_token = env("CALSYNC_TEST_UNSET_X", "dflt")\n')
        self.assertEqual(p.returncode, 0, p.stderr)

    def test_relative_paths_are_beside_the_config_file(self):
        conf_dir = os.path.join(self.tmp, "etc")
        os.makedirs(os.path.join(conf_dir, "pol"))
        with open(os.path.join(conf_dir, "pol", "only.lua"), "w") as f:
            f.write("return {}\n")
        with open(os.path.join(conf_dir, "c.lua"), "w") as f:
            f.write('policies = "pol"\n')
        elsewhere = os.path.join(self.tmp, "elsewhere")
        os.makedirs(elsewhere)
        p = subprocess.run([BIN, "policy", "check", "-c", "../etc/c.lua"], cwd=elsewhere,
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn(os.path.join(conf_dir, "pol", "only.lua") + ": ok", p.stdout)


class JsonLogTest(CalsyncCase):
    def test_every_line_is_a_json_object(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        conf = os.path.join(self.tmp, "c.lua")
        with open(conf, "w") as f:
            f.write('listen = "127.0.0.1:%d"\nlog_format = "json"\nlog_level = "debug"\n'
                    'database = "db"\npolicies = %s\n'
                    % (port, lua_str(os.path.join(ROOT, "policies"))))
        log = os.path.join(self.tmp, "log")
        with open(log, "wb") as lf:
            p = subprocess.Popen([BIN, "serve", "-c", conf], stderr=lf, cwd=self.tmp,
                                 env=service_env())
        try:
            deadline = time.time() + 15
            while time.time() < deadline and '"service.started"' not in read(log):
                self.assertIsNone(p.poll(), read(log))
                time.sleep(0.02)
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port) as r:
                self.assertEqual(r.status, 200)
        finally:
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(20), 0)
        lines = read(log).splitlines()
        self.assertGreater(len(lines), 3)
        events = []
        for line in lines:
            obj = json.loads(line)            # every line, whole
            self.assertRegex(obj["ts"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
            self.assertIn(obj["level"], ("debug", "info", "warn", "error"))
            events.append(obj)
        started = [e for e in events if e["event"] == "service.started"][0]
        self.assertEqual(started["listen"], "127.0.0.1:%d" % port)
        self.assertEqual(started["database"], os.path.join(self.tmp, "db"))
        warn = [e for e in events if e["event"] == "service.provider_unconfigured"
                and e["provider"] == "google"][0]
        self.assertIn("google.client_id", warn["msg"])
        self.assertIn("service.stopped", [e["event"] for e in events])


class LogEventsDocTest(CalsyncCase):
    def test_documented_events_match_the_source(self):
        p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "log_events.py"),
                            "--check"], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        # the extractor itself finds what it must: a call split over lines,
        # a log_event with a computed level, a "%s" with a literal argument
        text = read(DOC)
        self.assertRegex(text, r"\| `service\.started` \| info \| `version` `listen` `database` `policies` \|")
        self.assertRegex(text, r"\| `outbox\.delivery` \| debug/warn \| `subscriber`")
        self.assertRegex(text, r"\| `service\.sighup` \| info \| `policies` \|")
        n = len(re.findall(r"(?m)^\| `[a-z_]+\.[a-z_]+` \|", text))
        self.assertGreater(n, 80)


class GoogleSetupDocTest(CalsyncCase):
    """docs/google-setup.md's checking block, run as written against the
    fake Google (its URLs through the variables the block reads)."""

    def block(self):
        text = read(os.path.join(ROOT, "docs", "google-setup.md"))
        m = re.search(r"```sh\n(# google-setup: check.*?)```", text, re.S)
        self.assertIsNotNone(m, "the checking block is gone from docs/google-setup.md")
        return m.group(1)

    def run_block(self, fg, **env):
        e = dict(os.environ)
        e.update(TOKEN_URL=fg.token_url, API=fg.api_base, CLIENT_ID="cid",
                 CLIENT_SECRET="csecret", REFRESH_TOKEN="rt-doc",
                 PUBLIC_URL="http://127.0.0.1:%d" % self.svc.port,
                 CALSYNC="http://127.0.0.1:%d" % self.svc.port, CALSYNC_TOKEN="doc-token")
        e.update(env)
        return subprocess.run(["bash", "-c", self.block()], capture_output=True, text=True,
                              env=e, timeout=90)

    def test_documented_checks_pass_and_catch_a_wrong_secret(self):
        fg = FakeGoogle().start()
        self.addCleanup(fg.stop)
        fg.control("POST", "/config", {"client_id": "cid", "client_secret": "csecret"})
        self.start(api_token="doc-token", config_extra=(
            "google = { api_base = %s, token_url = %s, client_id = \"cid\","
            " client_secret = \"csecret\" }" % (lua_str(fg.api_base), lua_str(fg.token_url))))
        p = self.run_block(fg)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        for step in range(1, 6):
            self.assertRegex(p.stdout, r"(?m)^%d ok: " % step)
        # a busier exposition (Google calls, a sync, a channel) still passes
        st, body, _ = self.svc.request("GET", "/metrics", raw=True)
        text = body.decode()
        self.assertRegex(text, r'(?m)^calsync_google_request_duration_seconds_count [1-9]')
        self.assertRegex(text, r'(?m)^calsync_calendars\{state="active"\} 1$')
        rc, out = promtool(text)
        self.assertEqual(rc, 0, out)
        # a wrong client secret fails at step 1, before anything else
        p = self.run_block(fg, CLIENT_SECRET="wrong")
        self.assertNotEqual(p.returncode, 0)
        self.assertNotIn("1 ok", p.stdout)


class DemoTest(CalsyncCase):
    def test_make_demo_runs_the_tour_and_leaves_nothing(self):
        before = set(os.listdir("/tmp"))
        p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "demo.py"),
                            "--bin", BIN], capture_output=True, text=True, timeout=120,
                           env=service_env())
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        out = p.stdout
        for want in (r"decision: booking intro-call +change=time_change +-> reschedule",
                     r"decision: booking demo-review +change=delete +-> cancel",
                     r"decision: booking weekly-2 +change=time_change +-> reschedule",
                     r"webhook -> app: BOOKING_RESCHEDULED +uid=intro-call .*signature valid",
                     r"webhook -> app: BOOKING_CANCELLED +uid=demo-review .*signature valid",
                     r"webhook -> app: BOOKING_RESCHEDULED +uid=weekly-2 .*signature valid",
                     r"stopped calsync \(exit 0\)"):
            self.assertRegex(out, want)
        self.assertNotIn("INVALID", out)
        tmp = re.search(r"removed (\S+)", out).group(1)
        self.assertFalse(os.path.exists(tmp))
        self.assertNotIn(os.path.basename(tmp), set(os.listdir("/tmp")) - before)
