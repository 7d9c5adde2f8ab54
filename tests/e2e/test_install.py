"""`make install` into a DESTDIR, then the installed binary run from another
directory (issue 17 item 1): policy check finds the installed policies,
serve resolves the configuration's relative paths beside the file, /healthz
is 200, SIGTERM stops it. Also checks the installed man pages (groff, no
warnings), the systemd unit (systemd-analyze verify, hardening settings)
and the sample configuration."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ROOT, service_env  # noqa: E402

PREFIX = "/usr/local"


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


class InstallTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="calsync-install-")
        cls.dest = os.path.join(cls.tmp, "dest")
        # -o build/calsync: install the binary the suite built, never rebuild
        # it here (other test jobs are running it)
        p = subprocess.run(["make", "-s", "-C", ROOT, "-o", "build/calsync", "install",
                            "DESTDIR=" + cls.dest, "PREFIX=" + PREFIX],
                           capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            raise AssertionError("make install failed:\n" + p.stdout + p.stderr)
        cls.root = cls.dest + PREFIX
        cls.bin = os.path.join(cls.root, "bin", "calsync")
        cls.elsewhere = os.path.join(cls.tmp, "elsewhere")
        os.makedirs(cls.elsewhere)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_bin(self, *args):
        return subprocess.run([self.bin] + list(args), cwd=self.elsewhere,
                              capture_output=True, text=True, timeout=60)

    def test_files_are_installed(self):
        for rel in ("bin/calsync", "share/calsync/policies/default.lua",
                    "share/calsync/calsync.conf.lua.sample", "etc/calsync/calsync.conf.lua",
                    "share/man/man1/calsync.1", "share/man/man5/calsync.conf.5",
                    "lib/systemd/system/calsync.service", "share/doc/calsync/LICENSE",
                    "share/doc/calsync/CHANGELOG.md"):
            self.assertTrue(os.path.isfile(os.path.join(self.root, rel)), rel)
        self.assertTrue(os.access(self.bin, os.X_OK))

    def test_policy_check_from_another_directory(self):
        p = self.run_bin("policy", "check")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        shipped = sorted(f for f in os.listdir(os.path.join(ROOT, "policies")) if f.endswith(".lua"))
        for name in shipped:
            self.assertIn(os.path.join(self.root, "share/calsync/policies", name) + ": ok",
                          p.stdout)
        # the installed sample configuration is valid as shipped
        p = self.run_bin("policy", "check", "-c",
                         os.path.join(self.root, "etc/calsync/calsync.conf.lua"))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("%d file(s) checked, 0 failed" % len(shipped), p.stdout)

    def test_serve_healthz_stop_from_another_directory(self):
        conf_dir = os.path.join(self.tmp, "conf")
        os.makedirs(os.path.join(conf_dir, "state"), exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        conf = os.path.join(conf_dir, "calsync.conf.lua")
        with open(conf, "w") as f:
            f.write('listen = "127.0.0.1:%d"\ndatabase = "state/calsync.db"\n'
                    'google = { api_base = "http://127.0.0.1:9/c", token_url = "http://127.0.0.1:9/t" }\n'
                    % port)
        log = os.path.join(self.tmp, "serve.log")
        with open(log, "wb") as lf:
            p = subprocess.Popen([self.bin, "serve", "-c", conf], cwd=self.elsewhere,
                                 stderr=lf, env=service_env())
        try:
            deadline = time.time() + 15
            while "event=service.started" not in read(log):
                self.assertIsNone(p.poll(), read(log))
                self.assertLess(time.time(), deadline, read(log))
                time.sleep(0.02)
            with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=10) as r:
                self.assertEqual(r.status, 200)
            with urllib.request.urlopen("http://127.0.0.1:%d/v1/policies" % port, timeout=10) as r:
                names = re.findall(rb'"name":"([a-z_]+)"', r.read())
            self.assertIn(b"default", names)
        finally:
            p.send_signal(signal.SIGTERM)
            rc = p.wait(20)
        self.assertEqual(rc, 0, read(log))
        text = read(log)
        self.assertIn("database=%s" % os.path.join(conf_dir, "state", "calsync.db"), text)
        self.assertIn("policies=%s" % os.path.join(self.root, "share/calsync/policies"), text)
        self.assertTrue(os.path.exists(os.path.join(conf_dir, "state", "calsync.db")))
        self.assertEqual(os.listdir(self.elsewhere), [], "wrote into the working directory")

    def test_man_pages_render_without_warnings(self):
        for page in ("man1/calsync.1", "man5/calsync.conf.5"):
            p = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8",
                                os.path.join(self.root, "share/man", page)],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual((p.returncode, p.stderr), (0, ""), page)
        text = read(os.path.join(self.root, "share/man/man5/calsync.conf.5"))
        for key in ("listen", "database", "policies", "public_url", "api_token",
                    "poll_interval", "workers", "log_level", "log_format", "google",
                    "webhooks", "policy_limits", "http"):
            self.assertRegex(text, r"(?m)^\.B %s$" % key)

    def test_systemd_unit_is_hardened_and_verifies(self):
        unit = read(os.path.join(self.root, "lib/systemd/system/calsync.service"))
        self.assertIn("ExecStart=%s/bin/calsync serve -c %s/etc/calsync/calsync.conf.lua"
                      % (PREFIX, PREFIX), unit)
        for line in ("DynamicUser=yes", "StateDirectory=calsync", "ProtectSystem=strict",
                     "NoNewPrivileges=yes", "ProtectHome=yes", "PrivateTmp=yes",
                     "ExecReload=/bin/kill -HUP $MAINPID"):
            self.assertIn("\n" + line + "\n", unit)
        self.assertNotIn("@", re.sub(r"(?m)^#.*$|@system-service|@privileged", "", unit))
        # verified with the binary path pointing into the DESTDIR tree
        staged = os.path.join(self.tmp, "calsync.service")
        with open(staged, "w") as f:
            f.write(unit.replace("ExecStart=%s/bin/" % PREFIX, "ExecStart=%s/" % os.path.dirname(self.bin)))
        p = subprocess.run(["systemd-analyze", "verify", "--man=no", staged],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_sample_config_is_never_overwritten(self):
        conf = os.path.join(self.root, "etc/calsync/calsync.conf.lua")
        with open(conf, "a") as f:
            f.write("-- edited by the operator\n")
        p = subprocess.run(["make", "-s", "-C", ROOT, "-o", "build/calsync", "install",
                            "DESTDIR=" + self.dest, "PREFIX=" + PREFIX],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(read(conf).endswith("-- edited by the operator\n"))


if __name__ == "__main__":
    unittest.main()
