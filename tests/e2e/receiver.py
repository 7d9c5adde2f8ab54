"""A fake booking-app webhook receiver for end-to-end tests (standard
library only). Runs in the test process on a free port and records every
POST with its headers and raw body; can be told to fail the next N
deliveries or to be slow.

    rx = Receiver(secret="whsec").start()
    config_extra = rx.config()           # webhooks = { { url=..., secret=... } }
    rx.wait(lambda ds: len(ds) >= 1)
    rx.verified()                         # deliveries whose signature checks
"""
import hashlib
import hmac
import http.server
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import openapi_check  # noqa: E402 -- every webhook body is checked against docs/openapi.yaml


class Delivery:
    def __init__(self, headers, body, status):
        self.headers = headers
        self.body = body
        self.status = status
        self.json = json.loads(body) if body else None
        self.at = time.monotonic()

    @property
    def id(self):
        return self.headers.get("x-calsync-delivery")


class Receiver:
    def __init__(self, secret="whsec_test"):
        self.secret = secret
        self.deliveries = []
        self.fail_next = 0
        self.delay = 0.0
        self.arrived = 0      # POSTs read so far, answered or not (yet)
        self.lock = threading.Condition()
        self.schema_errors = []   # webhook bodies that do not match docs/openapi.yaml
        rx = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                try:
                    openapi_check.validate_webhook(json.loads(body))
                except (AssertionError, ValueError) as e:
                    with rx.lock:
                        rx.schema_errors.append(str(e))
                with rx.lock:
                    rx.arrived += 1
                if rx.delay:
                    time.sleep(rx.delay)
                with rx.lock:
                    status = 200
                    if rx.fail_next > 0:
                        rx.fail_next -= 1
                        status = 503
                    rx.deliveries.append(Delivery(
                        {k.lower(): v for k, v in self.headers.items()}, body, status))
                    rx.lock.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/hooks/calsync" % self.server.server_address[1]

    def start(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
        self.check_schema()

    def check_schema(self):
        """Fails when a webhook body did not match docs/openapi.yaml."""
        with self.lock:
            if self.schema_errors:
                raise AssertionError(self.schema_errors[0])

    def config(self):
        return 'webhooks = { { url = "%s", secret = "%s" } }' % (self.url, self.secret)

    def signature_ok(self, d):
        want = hmac.new(self.secret.encode(), d.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(want, d.headers.get("x-cal-signature-256", ""))

    def wait(self, pred, timeout=20):
        self.check_schema()
        end = time.monotonic() + timeout
        with self.lock:
            while not pred(self.deliveries):
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError("receiver: condition not met; got %d deliveries: %s"
                                         % (len(self.deliveries),
                                            [d.json for d in self.deliveries][-5:]))
                self.lock.wait(left)
            return list(self.deliveries)

    def accepted(self):
        """Acknowledged deliveries (one per webhook, as the app sees them)."""
        with self.lock:
            return [d for d in self.deliveries if d.status == 200]
