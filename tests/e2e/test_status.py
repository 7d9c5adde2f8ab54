"""The status page at GET / (issue 17 item 8, docs/operations.md "Status
page"), rendered by headless Chromium (Debian's `chromium`): what the
browser shows matches the API field by field, hostile titles stay text, and
with api_token the page opens only with the bearer token or the login
form's cookie. Screenshots are kept under build/screenshots/ for review."""
import html.parser
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ROOT, future  # noqa: E402
from test_google_sync import CAL, timed  # noqa: E402
from test_reverse import FLAG_ALL, ReverseCase  # noqa: E402

SHOTS = os.path.join(ROOT, "build", "screenshots")
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>&amp; \"q\" 'a'"


def chromium(*args, timeout=90):
    """Runs headless Chromium with a throwaway profile; its stdout."""
    exe = shutil.which("chromium")
    if not exe:
        raise AssertionError("chromium is not installed (sh tools/deps.sh installs it)")
    prof = tempfile.mkdtemp(prefix="calsync-chromium-")
    # the browser only displays what the service rendered: it runs on the
    # real clock, without the sanitizer or libfaketime preloads of a suite
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FAKETIME", "LD_PRELOAD", "ASAN_", "UBSAN_"))}
    try:
        # --no-sandbox: the tests run as root in a container, where
        # Chromium's sandbox cannot start; the page is our own
        r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu",
                            "--no-first-run", "--user-data-dir=" + prof] + list(args),
                           capture_output=True, timeout=timeout, env=env)
    finally:
        shutil.rmtree(prof, ignore_errors=True)
    if r.returncode != 0:
        raise AssertionError("chromium failed %s: %s" % (r.returncode, r.stderr[-2000:]))
    return r.stdout.decode("utf-8")


class Page(html.parser.HTMLParser):
    """The DOM as Chromium dumped it: for each section, its rows
    ({data-f: text}) keyed by data-id, the text of elements with an id,
    and every tag seen."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.sections, self.ids, self.tags = {}, {}, []
        self._sec = self._row = self._cell = self._id = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self._sec = self.sections.setdefault(a["id"], {})
        elif tag == "tr" and "data-id" in a and self._sec is not None:
            self._row = self._sec.setdefault(a["data-id"], {})
        elif tag == "td" and "data-f" in a and self._row is not None:
            self._cell = a["data-f"]
            self._row[self._cell] = None if "none" in a.get("class", "").split() else ""
        if "id" in a and tag != "section":
            self._id = a["id"]
            self.ids[self._id] = ""

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None
        elif tag == "tr":
            self._row = None
        elif tag == "section":
            self._sec = None
        if self._id and tag in ("span", "td", "time", "p"):
            self._id = None

    def handle_data(self, data):
        if self._cell is not None and self._row is not None:
            self._row[self._cell] = (self._row[self._cell] or "") + data
        if self._id:
            self.ids[self._id] += data


def text(v):
    """An API value as the page shows it."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


class StatusPageCase(ReverseCase):
    policies = {"flagger": FLAG_ALL, "spare": "return {}\n"}

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.svc.port, path)

    def populate(self):
        """A synced calendar with a live channel, a flagged booking whose
        title is hostile, a policy decision, an undeliverable webhook and a
        policy whose last load failed."""
        self.rx.fail_next = 10 ** 6          # every delivery refused: a backlog
        cal = self.boot("flagger")
        e1 = self.fg.host(CAL, op="create", event=timed(future(10, 10), future(10, 11),
                                                        summary=HOSTILE))
        self.book(cal, "u<1>", e1, title=HOSTILE)
        self.wait_for(lambda: e1["id"] in self.mirror(cal), what="event mirrored")
        self.fg.host(CAL, op="delete", id=e1["id"])
        self.wait_for(lambda: self.booking("u<1>")["needs_review"], what="booking flagged")
        self.wait_for(lambda: self.outbox("u<1>"), what="the flag's webhook queued")
        with open(os.path.join(self.svc.policies_dir, "spare.lua"), "w") as f:
            f.write("return {\n")
        st, b, _ = self.svc.request("POST", "/v1/policies/reload")
        self.assertEqual(st, 422, b)
        return cal

    def api(self, path):
        st, b, _ = self.svc.request("GET", path)
        self.assertEqual(st, 200, b)
        return b


class TestStatusPageMatchesApi(StatusPageCase):
    def test_page_in_chromium_matches_the_api(self):
        cal = self.populate()
        dom = chromium("--dump-dom", self.url())
        page = Page(dom)
        os.makedirs(SHOTS, exist_ok=True)
        shot = os.path.join(SHOTS, "status-page.png")
        if os.path.exists(shot):
            os.remove(shot)
        chromium("--screenshot=" + shot, "--window-size=1500,1400", self.url())
        self.assertGreater(os.path.getsize(shot), 1000)

        # hostile text stays text: no element came out of a title
        self.assertNotIn("script", page.tags)
        self.assertNotIn("img", page.tags)

        # calendars: every field the page shows, as the API says
        cals = self.api("/v1/calendars")["calendars"]
        self.assertEqual(page.ids["calendars-count"], str(len(cals)))
        for c in cals:
            row = page.sections["calendars"][str(c["id"])]
            for k in ("id", "external_id", "credential_id", "policy", "state",
                      "reason", "last_synced_at"):
                self.assertEqual(row[k], text(c[k]), k)
            self.assertEqual(row["channel"], c["channel"]["id"])
            self.assertEqual(row["expiration"], c["channel"]["expiration"])
        self.assertEqual(page.sections["calendars"][str(cal)]["state"], "active")

        # live channels and their expiry
        live = [ch for ch in self.api("/v1/channels")["channels"] if ch["state"] == "live"]
        self.assertTrue(live)
        self.assertEqual(page.ids["channels-live"], str(len(live)))
        for ch in live:
            row = page.sections["channels"][ch["id"]]
            for k in ("calendar_id", "resource_id", "expiration", "state"):
                self.assertEqual(row[k], text(ch[k]), k)

        # the flagged booking, its hostile title shown verbatim
        b = self.booking("u<1>")
        self.assertEqual(page.ids["flagged-count"], "1")
        row = page.sections["flagged"]["u<1>"]
        self.assertEqual(row["title"], HOSTILE)
        for k in ("uid", "calendar_id", "start", "end", "updated_at"):
            self.assertEqual(row[k], text(b[k]), k)
        if "proposed" in b:
            self.assertEqual(row["kind"], b["proposed"]["kind"])

        # the decision, with its policy version, as the booking's audit has it
        dec = [e for e in self.audit("u<1>") if e["source"] != "api"]
        self.assertEqual(len(dec), 1, dec)
        rows = [r for r in page.sections["decisions"].values() if r["booking"] == "u<1>"]
        self.assertEqual(len(rows), 1, page.sections["decisions"])
        for k in ("at", "source", "change", "action", "reason", "policy", "policy_version"):
            self.assertEqual(rows[0][k], text(dec[0][k]), k)
        self.assertEqual(rows[0]["calendar_id"], str(cal))
        self.assertRegex(rows[0]["policy_version"], r"^[0-9a-f]{12}$")

        # outbox backlog: the refused webhook is still pending
        with self.svc.db() as con:
            pending = con.execute("SELECT count(*) FROM outbox WHERE state = 'pending'"
                                  ).fetchone()[0]
        self.assertGreaterEqual(pending, 1)
        self.assertEqual(page.ids["outbox-pending"], str(pending))
        self.assertRegex(page.ids["outbox-oldest"], r"^\d{4}-\d\d-\d\dT.* s ago\)$")

        # policies: live versions, and the failed load of spare.lua
        for p in self.api("/v1/policies")["policies"]:
            row = page.sections["policies"][p["name"]]
            for k in ("version", "loaded_at", "error"):
                self.assertEqual(row[k], text(p.get(k)), k)
        self.assertRegex(page.sections["policies"]["spare"]["error"], r"^spare\.lua:\d+: ")


class TestStatusPageAuth(StatusPageCase):
    api_token = "s3cret-token"

    def get(self, headers=None, path="/"):
        return self.svc.request("GET", path, headers=headers, token=False, raw=True)

    def login(self, token):
        body = urllib.parse.urlencode({"token": token})
        return self.svc.request("POST", "/login", body=body, token=False, raw=True,
                                headers={"Content-Type": "application/x-www-form-urlencoded"})

    def test_bearer_or_login_cookie_and_nothing_else(self):
        self.start()
        # no credentials: 401 with the login form, and none of the data
        st, body, h = self.get()
        self.assertEqual(st, 401)
        self.assertTrue(h["content-type"].startswith("text/html"))
        self.assertIn(b'action="/login"', body)
        self.assertNotIn(b'id="calendars"', body)
        self.assertIn("default-src 'none'", h["content-security-policy"])
        # the bearer token opens it
        st, body, _ = self.get({"Authorization": "Bearer s3cret-token"})
        self.assertEqual(st, 200)
        self.assertIn(b'<section id="calendars">', body)
        self.assertEqual(self.get({"Authorization": "Bearer wrong"})[0], 401)
        # a wrong token at the form: 401 again, no cookie
        st, body, h = self.login("wrong")
        self.assertEqual(st, 401)
        self.assertNotIn("set-cookie", h)
        self.assertIn(b"Wrong token", body)
        # the right one: 303 to / with an HttpOnly SameSite=Strict cookie
        st, _, h = self.login("s3cret-token")
        self.assertEqual((st, h["location"]), (303, "/"))
        cookie = h["set-cookie"]
        self.assertIn("HttpOnly", cookie)
        self.assertIn("SameSite=Strict", cookie)
        self.assertNotIn("s3cret-token", cookie)
        pair = cookie.split(";")[0]
        self.assertEqual(self.get({"Cookie": "a=b; " + pair})[0], 200)
        # the cookie opens the page only, never the API
        self.assertEqual(self.get({"Cookie": pair}, path="/v1/calendars")[0], 401)
        # a forged or empty cookie does nothing
        self.assertEqual(self.get({"Cookie": "calsync_status=" + "0" * 64})[0], 401)
        self.assertEqual(self.get({"Cookie": "calsync_status="})[0], 401)
        # DNS rebinding: a foreign Host is refused before any check
        self.assertEqual(self.get({"Host": "evil.example",
                                   "Authorization": "Bearer s3cret-token"})[0], 400)
        # a login from another origin is refused
        st, _, _ = self.svc.request("POST", "/login", body="token=s3cret-token", token=False,
                                    raw=True, headers={
                                        "Content-Type": "application/x-www-form-urlencoded",
                                        "Origin": "http://evil.example"})
        self.assertEqual(st, 403)
        # the form takes a small urlencoded body only
        st, _, _ = self.svc.request("POST", "/login", body={"token": "s3cret-token"},
                                    token=False, raw=True)
        self.assertEqual(st, 415)
        st, _, _ = self.svc.request("POST", "/login", body="token=" + "x" * 5000, token=False,
                                    raw=True, headers={
                                        "Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(st, 413)
        # what a browser shows without the token: the form
        os.makedirs(SHOTS, exist_ok=True)
        dom = chromium("--dump-dom", self.url())
        self.assertIn('action="/login"', dom)
        self.assertNotIn('id="calendars"', dom)
        chromium("--screenshot=" + os.path.join(SHOTS, "status-login.png"),
                 "--window-size=900,500", self.url())
