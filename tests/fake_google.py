#!/usr/bin/env python3
"""Fake Google Calendar API v3 and OAuth token endpoint for calsync tests.

Standard library only. Start it with

    python3 tests/fake_google.py --port 0 [--state-file F]

It prints one line ``PORT <n>`` when it is ready and serves until SIGTERM or
SIGINT (exit 0). Point calsync at it with

    google = { api_base  = "http://127.0.0.1:<n>/calendar/v3",
               token_url = "http://127.0.0.1:<n>/token" }

Tests steer it through the JSON control API under ``/_control``. Everything
about its behaviour, the control API and which captured Google payload each
modelled behaviour was checked against is in docs/internals/fake-google.md.

Layout of this file:
  utilities (time, ids, errors) -> recurrence expansion (RRule, Recurrence)
  -> model (Event, Calendar, Channel) -> Store (all state, one lock, the
  Google semantics: insert/patch/delete/list/watch) -> Notifier (push
  delivery with its faults) -> FaultInjector (API faults) -> logs
  -> HTTP layer (Router, GoogleApi, TokenEndpoint, ControlApi, Handler)
  -> main().
"""

from __future__ import annotations

import argparse
import base64
import copy
import email.utils
import hashlib
import heapq
import http.client
import itertools
import json
import os
import re
import signal
import sys
import threading
import time
import traceback
import urllib.parse
from collections import deque
from datetime import date, datetime, time as dtime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# time.sleep under libfaketime (the clock-moved run): see faketime_sleep.py
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faketime_sleep  # noqa: E402,F401

UTC = timezone.utc
API_PREFIX = "/calendar/v3"
TOKEN_PATH = "/token"
CONTROL_PREFIX = "/_control"
MAX_BODY = 1 << 20  # 1 MiB, for API, token and control bodies alike
DRAIN_LIMIT = 16 << 20  # larger bodies are not read at all: connection closed
STATE_VERSION = 1

DEFAULT_CONFIG = {
    # OAuth
    "access_token_ttl": 3600,          # expires_in of minted access tokens (s)
    "accept_unknown_access_tokens": False,
    "client_id": None,                 # when set, /token checks it
    "client_secret": None,             # when set, /token checks it
    # channels
    "max_ttl": 2592000,                # longest channel lifetime granted (s)
    "default_ttl": 604800,             # lifetime when the watch asks for none
    "notification_timeout": 5.0,       # per push POST (s)
    # sync tokens
    "sync_token_max_age": None,        # seconds; older tokens -> 410
    # calendars and events
    "default_time_zone": "America/Chicago",
    "primary_id": "user@example.com",  # what calendarId "primary" stands for
    "auto_create_calendars": True,
    "expand_days": 400,                # singleEvents horizon past max(now, series start)
    "max_instances": 2500,             # per series and listing
    "resend_series_on_change": True,   # any series change re-sends master+exceptions
    "strict_params": True,             # unknown query parameters -> 400
    # conference data: "success" (entry points at once) or "pending"
    # (createRequest only; Google generates conferences asynchronously)
    "conference_status": "success",
    # logs
    "log_limit": 10000,
}


# ---------------------------------------------------------------------------
# Utilities
# ---------------------------------------------------------------------------

_ZONES: dict[str, ZoneInfo] = {}


def get_zone(name):
    """ZoneInfo for an IANA name; ValueError for anything else."""
    if not isinstance(name, str) or not name or len(name) > 64:
        raise ValueError("bad time zone")
    z = _ZONES.get(name)
    if z is None:
        try:
            z = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(f"unknown time zone {name!r}") from exc
        _ZONES[name] = z
    return z


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?"
    r"([Zz]|[+-]\d{2}:?\d{2})?")


def parse_rfc3339(text, tzname=None):
    """Aware UTC datetime from RFC 3339 text.

    Without an offset the time is read in ``tzname``; with neither it is a
    ValueError (Google: "offset is required unless a time zone is
    explicitly specified in timeZone").
    """
    if not isinstance(text, str):
        raise ValueError("not a string")
    m = _RFC3339.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not RFC 3339: {text!r}")
    y, mo, d, h, mi, s = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7)
    micro = int((frac[1:] + "000000")[:6]) if frac else 0
    off = m.group(8)
    if off:
        if off in ("Z", "z"):
            tz = UTC
        else:
            sign = -1 if off[0] == "-" else 1
            digits = off[1:].replace(":", "")
            tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
        dt = datetime(y, mo, d, h, mi, s, micro, tzinfo=tz)
    elif tzname:
        dt = datetime(y, mo, d, h, mi, s, micro, tzinfo=get_zone(tzname))
    else:
        raise ValueError("missing offset")
    return dt.astimezone(UTC)


def parse_date(text):
    if not isinstance(text, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ValueError(f"not a date: {text!r}")
    return date.fromisoformat(text)


def fmt_utc(dt):
    """Canonical stored form: 2025-03-24T12:30:00Z."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def fmt_in_zone(dt, tzname):
    """Render an instant as Google does: in the calendar's (or the request's)
    zone with its offset, 'Z' when the offset is zero."""
    local = dt.astimezone(get_zone(tzname))
    if local.utcoffset() == timedelta(0):
        return local.strftime("%Y-%m-%dT%H:%M:%SZ")
    return local.isoformat(timespec="seconds")


def fmt_millis(dt):
    """RFC 3339 with milliseconds and Z, like Google's created/updated."""
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def http_date(epoch_seconds):
    return email.utils.formatdate(epoch_seconds, usegmt=True)


def new_event_id():
    """26 characters of lowercase base32hex, the alphabet Google uses."""
    return base64.b32hexencode(os.urandom(16)).decode().lower().rstrip("=")[:26]


def b64url(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def encode_token(payload):
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(b"\x08" + raw).decode()


def decode_token(text):
    """Inverse of encode_token; ValueError on anything malformed."""
    if not isinstance(text, str) or not text or len(text) > 4096:
        raise ValueError("empty token")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError("bad base64") from exc
    if not raw.startswith(b"\x08"):
        raise ValueError("bad token prefix")
    try:
        payload = json.loads(raw[1:].decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("bad token body") from exc
    if not isinstance(payload, dict):
        raise ValueError("bad token body")
    return payload


# ---------------------------------------------------------------------------
# Errors in Google's shape
# ---------------------------------------------------------------------------

class ApiError(Exception):
    """An error answered in Google's JSON error shape:
    {"error": {"errors": [{domain, reason, message, ...}], "code", "message"}}.
    """

    def __init__(self, code, reason, message, domain="global", location=None,
                 location_type=None, headers=None, body=None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.domain = domain
        self.location = location
        self.location_type = location_type
        self.headers = dict(headers or {})
        self._body = body

    def body(self):
        if self._body is not None:
            return self._body
        item = {"domain": self.domain, "reason": self.reason, "message": self.message}
        if self.location_type:
            item["locationType"] = self.location_type
        if self.location:
            item["location"] = self.location
        return {"error": {"errors": [item], "code": self.code, "message": self.message}}


def err_invalid(location=None, message="Invalid Value"):
    # fixture error-400-invalid-sync-token-value.json: no location fields
    return ApiError(400, "invalid", message, location=location,
                    location_type="parameter" if location else None)


def err_bad_request(message="Bad Request", reason="badRequest", location=None):
    return ApiError(400, reason, message, location=location,
                    location_type="parameter" if location else None)


def err_required(message, location=None):
    return ApiError(400, "required", message, location=location,
                    location_type="parameter" if location else None)


def err_not_found():
    return ApiError(404, "notFound", "Not Found")


def err_deleted():
    return ApiError(410, "deleted", "Resource has been deleted")


def err_full_sync():
    # fixture error-410-full-sync-required.json, byte for byte in shape
    return ApiError(410, "fullSyncRequired",
                    "Sync token is no longer valid, a full sync is required.",
                    domain="calendar", location="syncToken", location_type="parameter")


def err_precondition():
    return ApiError(412, "conditionNotMet", "Precondition Failed",
                    location="If-Match", location_type="header")


def err_parse():
    return ApiError(400, "parseError", "Parse Error")


def err_auth():
    message = ("Request had invalid authentication credentials. Expected OAuth 2 "
               "access token, login cookie or other valid authentication "
               "credential. See https://developers.google.com/identity/sign-in/"
               "web/devconsole-project.")
    body = {"error": {
        "code": 401,
        "message": message,
        "errors": [{"message": "Invalid Credentials", "domain": "global",
                    "reason": "authError", "location": "Authorization",
                    "locationType": "header"}],
        "status": "UNAUTHENTICATED"}}
    return ApiError(401, "authError", message, body=body, headers={
        "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'})


# (domain, message) for reasons a fault may name; from Google's error guide
KNOWN_REASONS = {
    "rateLimitExceeded": ("usageLimits", "Rate Limit Exceeded"),
    "userRateLimitExceeded": ("usageLimits", "User Rate Limit Exceeded"),
    "quotaExceeded": ("usageLimits", "Calendar usage limits exceeded."),
    "dailyLimitExceeded": ("usageLimits", "Daily Limit Exceeded"),
    "backendError": ("global", "Backend Error"),
    "badRequest": ("global", "Bad Request"),
    "invalid": ("global", "Invalid Value"),
    "notFound": ("global", "Not Found"),
    "deleted": ("global", "Resource has been deleted"),
    "duplicate": ("global", "The requested identifier already exists."),
    "conflict": ("global", "Conflict"),
    "conditionNotMet": ("global", "Precondition Failed"),
    "forbidden": ("global", "Forbidden"),
    "fullSyncRequired": ("calendar", "Sync token is no longer valid, a full sync is required."),
    "updatedMinTooLongAgo": ("calendar", "The requested minimum modification time lies too far in the past."),
}

DEFAULT_REASON_FOR_STATUS = {
    400: "badRequest", 403: "rateLimitExceeded", 404: "notFound", 409: "conflict",
    410: "fullSyncRequired", 412: "conditionNotMet", 429: "rateLimitExceeded",
}


def error_for_fault(status, reason=None, message=None):
    """Google-shaped error for an injected fault."""
    if status == 401 and reason in (None, "authError"):
        return err_auth()
    if reason is None:
        reason = DEFAULT_REASON_FOR_STATUS.get(status, "backendError")
    domain, default_message = KNOWN_REASONS.get(reason, ("global", "Backend Error"))
    if reason == "fullSyncRequired":
        e = err_full_sync()
        e.code = status
        return e
    e = ApiError(status, reason, message or default_message, domain=domain)
    if reason == "conditionNotMet":
        e.location, e.location_type = "If-Match", "header"
    return e


# ---------------------------------------------------------------------------
# Recurrence (RFC 5545 subset, expanded in the event's own time zone)
# ---------------------------------------------------------------------------

WEEKDAYS = {"MO": 0, "TU": 1, "WE": 2, "TH": 3, "FR": 4, "SA": 5, "SU": 6}
_MAX_SCAN = 200000  # candidate dates examined per rule, whatever the rule


class RRule:
    """One RRULE: FREQ DAILY/WEEKLY/MONTHLY/YEARLY, INTERVAL, COUNT, UNTIL,
    BYDAY (plain weekdays, for DAILY and WEEKLY), BYMONTHDAY (MONTHLY), WKST.
    Anything else is refused rather than expanded wrongly."""

    SUPPORTED = {"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "BYMONTHDAY", "WKST"}

    def __init__(self, text):
        parts = {}
        for item in text.split(";"):
            if not item:
                continue
            key, sep, val = item.partition("=")
            if not sep or not val:
                raise ValueError(f"bad RRULE part {item!r}")
            parts[key.strip().upper()] = val.strip()
        unknown = set(parts) - self.SUPPORTED
        if unknown:
            raise ValueError(f"RRULE parts not supported by the fake: {sorted(unknown)}")
        self.freq = parts.get("FREQ", "").upper()
        if self.freq not in ("DAILY", "WEEKLY", "MONTHLY", "YEARLY"):
            raise ValueError(f"FREQ {self.freq!r} not supported")
        self.interval = int(parts.get("INTERVAL", "1"))
        if self.interval < 1 or self.interval > 1000:
            raise ValueError("bad INTERVAL")
        self.count = int(parts["COUNT"]) if "COUNT" in parts else None
        if self.count is not None and self.count < 1:
            raise ValueError("bad COUNT")
        self.until = None
        if "UNTIL" in parts:
            u = parts["UNTIL"].upper()
            if re.fullmatch(r"\d{8}", u):
                self.until = ("date", datetime.strptime(u, "%Y%m%d").date())
            elif re.fullmatch(r"\d{8}T\d{6}Z", u):
                self.until = ("utc", datetime.strptime(u, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC))
            elif re.fullmatch(r"\d{8}T\d{6}", u):
                self.until = ("local", datetime.strptime(u, "%Y%m%dT%H%M%S"))
            else:
                raise ValueError("bad UNTIL")
        self.byday = []
        if "BYDAY" in parts:
            if self.freq not in ("DAILY", "WEEKLY"):
                raise ValueError("BYDAY only supported with DAILY/WEEKLY in the fake")
            for d in parts["BYDAY"].split(","):
                m = re.fullmatch(r"([+-]?\d{1,2})?(MO|TU|WE|TH|FR|SA|SU)", d.strip().upper())
                if not m or m.group(1):
                    raise ValueError(f"BYDAY {d!r} not supported")
                self.byday.append(WEEKDAYS[m.group(2)])
        self.bymonthday = []
        if "BYMONTHDAY" in parts:
            if self.freq != "MONTHLY":
                raise ValueError("BYMONTHDAY only supported with MONTHLY in the fake")
            self.bymonthday = sorted(int(x) for x in parts["BYMONTHDAY"].split(","))
            if any(not 1 <= x <= 31 for x in self.bymonthday):
                raise ValueError("bad BYMONTHDAY")
        wkst = parts.get("WKST", "MO").upper()
        if wkst not in WEEKDAYS:
            raise ValueError("bad WKST")
        self.wkst = WEEKDAYS[wkst]

    def candidates(self, start):
        """Naive local datetimes the rule generates from ``start`` on,
        ascending, before COUNT/UNTIL are applied."""
        scanned = 0
        if self.freq == "DAILY":
            for i in itertools.count():
                scanned += 1
                if scanned > _MAX_SCAN:
                    return
                c = start + timedelta(days=i * self.interval)
                if c.year > 9000:
                    return
                if not self.byday or c.weekday() in self.byday:
                    yield c
        elif self.freq == "WEEKLY":
            days = sorted(set(self.byday or [start.weekday()]),
                          key=lambda d: (d - self.wkst) % 7)
            week0 = start.date() - timedelta(days=(start.weekday() - self.wkst) % 7)
            for w in itertools.count():
                scanned += 1
                if scanned > _MAX_SCAN:
                    return
                base = week0 + timedelta(weeks=w * self.interval)
                if base.year > 9000:
                    return
                for d in days:
                    c = datetime.combine(base + timedelta(days=(d - self.wkst) % 7), start.time())
                    if c >= start:
                        yield c
        elif self.freq == "MONTHLY":
            mdays = self.bymonthday or [start.day]
            for m in itertools.count():
                scanned += 1
                if scanned > _MAX_SCAN:
                    return
                y, mo = divmod(start.month - 1 + m * self.interval, 12)
                y += start.year
                if y > 9000:
                    return
                for md in mdays:
                    try:
                        c = datetime.combine(date(y, mo + 1, md), start.time())
                    except ValueError:
                        continue  # no 31st this month: skipped, as RFC 5545 says
                    if c >= start:
                        yield c
        else:  # YEARLY
            for n in itertools.count():
                scanned += 1
                if scanned > _MAX_SCAN:
                    return
                y = start.year + n * self.interval
                if y > 9000:
                    return
                try:
                    c = start.replace(year=y)
                except ValueError:
                    continue  # 29 Feb
                yield c


class Recurrence:
    """The recurrence lines of a master (RRULE, EXDATE, RDATE), expanded into
    occurrence keys: an aware UTC datetime for timed series, a date for
    all-day series. Timed series are expanded on the wall clock of their
    own zone, so a 10:00 slot stays at 10:00 across DST and its UTC key
    (and therefore its instance id) shifts."""

    def __init__(self, lines, start, tzname):
        self.all_day = "date" in start
        self.tz = get_zone(tzname)
        if self.all_day:
            self.dtstart = datetime.combine(date.fromisoformat(start["date"]), dtime(0))
        else:
            self.dtstart = parse_rfc3339(start["dateTime"]).astimezone(self.tz).replace(tzinfo=None)
        self.rules = []
        self.exdates = set()
        self.rdates = set()
        if not isinstance(lines, list):
            raise ValueError("recurrence must be a list")
        for line in lines:
            if not isinstance(line, str):
                raise ValueError("recurrence lines must be strings")
            name, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"bad recurrence line {line!r}")
            bits = name.split(";")
            prop = bits[0].strip().upper()
            params = {}
            for p in bits[1:]:
                k, _, v = p.partition("=")
                params[k.strip().upper()] = v.strip()
            if prop == "RRULE":
                self.rules.append(RRule(value))
            elif prop in ("EXDATE", "RDATE"):
                target = self.exdates if prop == "EXDATE" else self.rdates
                for v in value.split(","):
                    target.add(self._parse_key(v.strip(), params))
            else:
                raise ValueError(f"recurrence property {prop} not supported")
        if not self.rules and not self.rdates:
            raise ValueError("no RRULE or RDATE")

    def _to_key(self, naive):
        if self.all_day:
            return naive.date()
        # fold=0: a wall time in the spring-forward gap takes the offset
        # before the gap, as RFC 5545 asks
        return naive.replace(tzinfo=self.tz).astimezone(UTC)

    def _parse_key(self, v, params):
        if params.get("VALUE", "").upper() == "DATE" or re.fullmatch(r"\d{8}", v):
            d = datetime.strptime(v, "%Y%m%d").date()
            return d if self.all_day else self._to_key(datetime.combine(d, self.dtstart.time()))
        m = re.fullmatch(r"(\d{8}T\d{6})(Z?)", v)
        if not m:
            raise ValueError(f"bad date-time {v!r}")
        naive = datetime.strptime(m.group(1), "%Y%m%dT%H%M%S")
        if m.group(2):
            instant = naive.replace(tzinfo=UTC)
        else:
            tz = get_zone(params["TZID"]) if "TZID" in params else self.tz
            instant = naive.replace(tzinfo=tz).astimezone(UTC)
        return instant.astimezone(self.tz).date() if self.all_day else instant

    def _until_ok(self, rule, naive):
        if rule.until is None:
            return True
        kind, val = rule.until
        if kind == "date":
            return naive.date() <= val
        if kind == "local":
            return naive <= val
        return naive.replace(tzinfo=self.tz).astimezone(UTC) <= val

    def _rule_keys(self, rule):
        n = 0
        for naive in rule.candidates(self.dtstart):
            if not self._until_ok(rule, naive):
                return
            n += 1
            if rule.count is not None and n > rule.count:
                return
            yield self._to_key(naive)

    def keys(self, stop_after=None):
        """Occurrence keys ascending, EXDATEs removed; stops after
        ``stop_after`` (same key type). Unbounded otherwise: bound it."""
        streams = [self._rule_keys(r) for r in self.rules]
        if self.rdates:
            streams.append(iter(sorted(self.rdates)))
        last = None
        for k in heapq.merge(*streams):
            if stop_after is not None and k > stop_after:
                return
            if k == last:
                continue
            last = k
            if k in self.exdates:
                continue
            yield k

    def contains(self, key):
        for k in self.keys(stop_after=key):
            if k == key:
                return True
        return False

    def index_of(self, key):
        for i, k in enumerate(self.keys(stop_after=key)):
            if k == key:
                return i
        return None


def key_suffix(key):
    """Instance id suffix: UTC start + Z for timed, YYYYMMDD for all-day."""
    if isinstance(key, datetime):
        return key.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return key.strftime("%Y%m%d")


def parse_key_suffix(suffix):
    if re.fullmatch(r"\d{8}T\d{6}Z", suffix):
        return datetime.strptime(suffix, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    if re.fullmatch(r"\d{8}", suffix):
        return datetime.strptime(suffix, "%Y%m%d").date()
    return None


def key_of_time(t):
    """Occurrence key of a canonical {dateTime}/{date} object."""
    if "date" in t:
        return date.fromisoformat(t["date"])
    return parse_rfc3339(t["dateTime"])


def set_until(lines, until_text):
    """Recurrence lines with the RRULE ended by UNTIL (COUNT dropped)."""
    out = []
    for line in lines:
        if line.upper().startswith("RRULE:"):
            parts = [p for p in line[6:].split(";")
                     if p and p.split("=")[0].upper() not in ("UNTIL", "COUNT")]
            parts.append("UNTIL=" + until_text)
            out.append("RRULE:" + ";".join(parts))
        else:
            out.append(line)
    return out


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------

# Field order of an event as Google serialises it (fixtures).
FIELD_ORDER = [
    "kind", "etag", "id", "status", "htmlLink", "created", "updated", "summary",
    "description", "location", "colorId", "creator", "organizer", "start", "end",
    "endTimeUnspecified", "recurrence", "recurringEventId", "originalStartTime",
    "transparency", "visibility", "iCalUID", "sequence", "attendees",
    "hangoutLink", "conferenceData", "extendedProperties", "reminders", "eventType",
]
# Never taken from a client body on patch/update (server-owned or fixed).
READ_ONLY = {"kind", "etag", "id", "htmlLink", "created", "updated", "creator",
             "organizer", "iCalUID", "recurringEventId", "originalStartTime", "sequence",
             "hangoutLink"}
# Never taken from a client body on insert.
INSERT_IGNORED = {"kind", "etag", "htmlLink", "created", "updated", "creator",
                  "organizer", "recurringEventId", "originalStartTime", "hangoutLink"}
# EventAttendee.responseStatus values (discovery document)
RESPONSE_STATUSES = ("needsAction", "declined", "tentative", "accepted")
MEET_ICON = ("https://fonts.gstatic.com/s/i/productlogos/meet_2020q4/v6/"
             "web-512dp/logo_meet_2020q4_color_2x_web_512dp.png")
STRING_FIELDS = ("summary", "description", "location", "colorId", "transparency",
                 "visibility", "eventType", "iCalUID")


def html_link(event_id, calendar_id):
    # fixtures README: eid is base64url of "<eventId> <calendarId>"
    return "https://www.google.com/calendar/event?eid=" + b64url(f"{event_id} {calendar_id}".encode())


def render_time(t, tz_out):
    out = dict(t)
    if "dateTime" in out:
        out["dateTime"] = fmt_in_zone(parse_rfc3339(out["dateTime"]), tz_out)
    return out


def render_full(res, tz_out):
    """An event resource as the API answers it: Google's field order, times
    in the calendar's (or the request's) zone."""
    out = {}
    for k in FIELD_ORDER:
        if k in res:
            out[k] = copy.deepcopy(res[k])
    for k, v in res.items():
        if k not in out:
            out[k] = copy.deepcopy(v)
    for k in ("start", "end", "originalStartTime"):
        if isinstance(out.get(k), dict):
            out[k] = render_time(out[k], tz_out)
    return out


def render_stub(res, tz_out, full):
    """Cancelled stub. Bare: kind, etag, id, status (deleted single event,
    deleted series, occurrence beyond the series' range). Full: plus
    recurringEventId and originalStartTime (cancelled occurrence in range)."""
    out = {"kind": "calendar#event", "etag": res["etag"], "id": res["id"], "status": "cancelled"}
    if full:
        out["recurringEventId"] = res["recurringEventId"]
        out["originalStartTime"] = render_time(res["originalStartTime"], tz_out)
    return out


def merge_patch(target, patch):
    """Patch semantics: named fields replace, objects merge, null removes;
    start/end replace as a whole but keep timeZone when only dateTime is
    given."""
    for k, v in patch.items():
        if k in READ_ONLY:
            continue
        if v is None:
            target.pop(k, None)
            continue
        if k in ("start", "end") and isinstance(v, dict):
            old = target.get(k) if isinstance(target.get(k), dict) else {}
            if v.get("date") is not None or v.get("dateTime") is not None:
                new = {kk: vv for kk, vv in v.items() if vv is not None}
                if "dateTime" in new and "timeZone" not in v and "timeZone" in old:
                    new["timeZone"] = old["timeZone"]
            else:
                new = dict(old)
                new.update({kk: vv for kk, vv in v.items() if vv is not None})
            target[k] = new
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            merged = copy.deepcopy(target[k])
            merge_patch_plain(merged, v)
            target[k] = merged
        else:
            target[k] = copy.deepcopy(v)


def merge_patch_plain(target, patch):
    for k, v in patch.items():
        if v is None:
            target.pop(k, None)
        elif isinstance(v, dict) and isinstance(target.get(k), dict):
            merge_patch_plain(target[k], v)
        else:
            target[k] = copy.deepcopy(v)


def canon_time(obj, field):
    """Canonical stored form of start/end: {"dateTime": UTC Z, "timeZone"?}
    or {"date": YYYY-MM-DD}. Raises 400 as Google would."""
    if not isinstance(obj, dict):
        raise err_bad_request(f"Invalid {field} time.", reason="invalid")
    if obj.get("date") is not None:
        try:
            return {"date": parse_date(obj["date"]).isoformat()}
        except ValueError:
            raise err_bad_request(f"Invalid {field} time.", reason="invalid") from None
    if obj.get("dateTime") is not None:
        tz = obj.get("timeZone")
        if tz is not None:
            try:
                get_zone(tz)
            except ValueError:
                raise err_bad_request(f"Invalid time zone definition for {field} time.",
                                      reason="invalid") from None
        try:
            dt = parse_rfc3339(obj["dateTime"], tz)
        except ValueError:
            raise err_bad_request(f"Invalid {field} time.", reason="invalid") from None
        out = {"dateTime": fmt_utc(dt)}
        if tz:
            out["timeZone"] = tz
        return out
    raise err_required(f"Missing {field} time.")


class Event:
    """One stored event: a single event, a recurring master, or an exception
    (a modified or cancelled occurrence, stored under its instance id).
    ``res`` holds the full resource in canonical form (times in UTC);
    ``seq`` is the creation order, ``rev`` the store revision of its last
    change (what sync tokens compare against). ``gone`` (masters only) maps
    the id suffix of each occurrence a series change removed to the rev of
    that change: singleEvents=true incremental listings report them."""

    __slots__ = ("res", "seq", "rev", "gone")

    def __init__(self, res, seq, rev, gone=None):
        self.res = res
        self.seq = seq
        self.rev = rev
        self.gone = gone or {}

    @property
    def id(self):
        return self.res["id"]

    @property
    def cancelled(self):
        return self.res.get("status") == "cancelled"

    @property
    def is_exception(self):
        return bool(self.res.get("recurringEventId"))

    @property
    def recurring(self):
        return bool(self.res.get("recurrence")) and not self.is_exception

    def to_json(self):
        return {"res": self.res, "seq": self.seq, "rev": self.rev, "gone": self.gone}

    @classmethod
    def from_json(cls, d):
        return cls(d["res"], d["seq"], d["rev"], d.get("gone"))


class Calendar:
    def __init__(self, cid, time_zone, summary=None):
        self.id = cid
        self.time_zone = time_zone
        self.summary = summary or cid
        self.events: dict[str, Event] = {}
        self.updated = fmt_millis(datetime.now(UTC))
        self.epoch = 0          # bumped to invalidate this calendar's sync tokens
        self.next_seq = 1
        # raw items put into listings by POST /_control/events/{cal}/inject
        # (malformed on purpose): [{"rev", "seq", "item"}]
        self.injected: list[dict] = []

    def alloc_seq(self):
        s = self.next_seq
        self.next_seq += 1
        return s

    def exceptions_of(self, master_id):
        return [e for e in self.events.values() if e.res.get("recurringEventId") == master_id]

    def to_json(self):
        return {"id": self.id, "timeZone": self.time_zone, "summary": self.summary,
                "updated": self.updated, "epoch": self.epoch, "next_seq": self.next_seq,
                "events": [e.to_json() for e in self.events.values()],
                "injected": self.injected}

    @classmethod
    def from_json(cls, d):
        cal = cls(d["id"], d["timeZone"], d.get("summary"))
        cal.updated = d["updated"]
        cal.epoch = d["epoch"]
        cal.next_seq = d["next_seq"]
        cal.injected = d.get("injected", [])
        for e in d["events"]:
            ev = Event.from_json(e)
            cal.events[ev.id] = ev
        return cal


class Channel:
    FIELDS = ("id", "resource_id", "resource_uri", "calendar", "address", "token",
              "expiration_ms", "created_ms", "requested_ttl", "state", "message_number")

    def __init__(self, **kw):
        for f in self.FIELDS:
            setattr(self, f, kw.get(f))

    def is_live(self, now_ms=None):
        if self.state != "live":
            return False
        if (now_ms or int(time.time() * 1000)) >= self.expiration_ms:
            self.state = "expired"
            return False
        return True

    def to_json(self):
        return {f: getattr(self, f) for f in self.FIELDS}

    @classmethod
    def from_json(cls, d):
        return cls(**d)


class ListQuery:
    """Parsed, validated events.list / events.instances parameters."""

    def __init__(self):
        self.single = False
        self.show_deleted = False
        self.max_results = 250
        self.page_token = None
        self.sync_token = None
        self.time_min = None
        self.time_max = None
        self.updated_min = None
        self.order_by = None
        self.private = []
        self.shared = []
        self.q = None
        self.ical_uid = None
        self.out_tz = None
        self.original_start = None

    @property
    def sync_capable(self):
        # Google gives no nextSyncToken to listings it could not continue
        # incrementally (orderBy reported by users; the others are the
        # parameters a syncToken refuses, filters rather than ranges)
        return not (self.order_by or self.q or self.private or self.shared or self.ical_uid)


# ---------------------------------------------------------------------------
# Store: all state and the Google semantics, under one lock
# ---------------------------------------------------------------------------

class Store:
    def __init__(self, state_file=None):
        self.lock = threading.RLock()
        self.state_file = state_file
        self.notifier = None
        self._fresh(dict(DEFAULT_CONFIG))
        if state_file and os.path.exists(state_file):
            self._load()

    def _fresh(self, config):
        self.config = config
        self.generation = b64url(os.urandom(6))  # a reset invalidates every old token
        self.rev = 0
        self.last_etag = 0
        self.last_updated_ms = 0
        self.calendars: dict[str, Calendar] = {}
        self.access_tokens: dict[str, dict] = {}
        self.revoked: set[str] = set()
        self.channels: dict[str, Channel] = {}

    def reset(self, keep_config=False):
        with self.lock:
            self._fresh(self.config if keep_config else dict(DEFAULT_CONFIG))
            self.save()

    # -- persistence ------------------------------------------------------

    def save(self):
        if not self.state_file:
            return
        data = {
            "version": STATE_VERSION, "generation": self.generation, "rev": self.rev,
            "last_etag": self.last_etag, "last_updated_ms": self.last_updated_ms,
            "config": self.config,
            "calendars": [c.to_json() for c in self.calendars.values()],
            "access_tokens": self.access_tokens, "revoked": sorted(self.revoked),
            "channels": [c.to_json() for c in self.channels.values()],
        }
        tmp = f"{self.state_file}.tmp.{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)

    def _load(self):
        with open(self.state_file, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"state file version {data.get('version')} not supported")
        config = dict(DEFAULT_CONFIG)
        config.update(data["config"])
        self._fresh(config)
        self.generation = data["generation"]
        self.rev = data["rev"]
        self.last_etag = data["last_etag"]
        self.last_updated_ms = data["last_updated_ms"]
        for c in data["calendars"]:
            cal = Calendar.from_json(c)
            self.calendars[cal.id] = cal
        self.access_tokens = data["access_tokens"]
        self.revoked = set(data["revoked"])
        for c in data["channels"]:
            ch = Channel.from_json(c)
            self.channels[ch.id] = ch

    # -- clock: revisions, etags, updated ------------------------------------

    def _stamp(self):
        """A new (rev, etag, updated). Google's etags are about twice the
        microsecond timestamp of ``updated`` (fixtures), always increasing."""
        now_ms = int(time.time() * 1000)
        if now_ms <= self.last_updated_ms:
            now_ms = self.last_updated_ms + 1
        self.last_updated_ms = now_ms
        self.last_etag = max(self.last_etag + 1, now_ms * 2000)
        self.rev += 1
        dt = datetime.fromtimestamp(now_ms // 1000, UTC).replace(microsecond=(now_ms % 1000) * 1000)
        return self.rev, f'"{self.last_etag}"', fmt_millis(dt)

    def _touch(self, cal, events):
        rev, etag, updated = self._stamp()
        for ev in events:
            ev.rev = rev
            ev.res["etag"] = etag
            ev.res["updated"] = updated
        cal.updated = updated

    def _series_members(self, cal, ev):
        """What one change re-sends. Fixtures: any change to a series re-sends
        the master and every exception, all with one etag and updated."""
        master_id = ev.res.get("recurringEventId") or ev.id
        if not self.config["resend_series_on_change"]:
            return [ev]
        members = []
        master = cal.events.get(master_id)
        if master is not None:
            members.append(master)
        members.extend(cal.exceptions_of(master_id))
        if ev not in members:
            members.append(ev)
        return members

    def _members(self, cal, ev, extra):
        members = self._series_members(cal, ev)
        return members + [e for e in extra if e not in members]

    def _committed(self, cal):
        if self.notifier is not None:
            self.notifier.calendar_changed(cal.id)
        self.save()

    # -- calendars --------------------------------------------------------

    def canonical_id(self, cid):
        return self.config["primary_id"] if cid == "primary" else cid

    def calendar(self, cid, create=None):
        cid = self.canonical_id(cid)
        cal = self.calendars.get(cid)
        if cal is None:
            if create is False or (create is None and not self.config["auto_create_calendars"]):
                raise err_not_found()
            cal = Calendar(cid, self.config["default_time_zone"])
            self.calendars[cid] = cal
        return cal

    def resource_id(self, cal_id):
        return b64url(hashlib.sha1(f"{self.generation}/{cal_id}".encode()).digest())[:27]

    # -- recurrence helpers ------------------------------------------------

    def recurrence(self, cal, master):
        tzname = master.res["start"].get("timeZone") or cal.time_zone
        return Recurrence(master.res["recurrence"], master.res["start"], tzname)

    def instance_resource(self, cal, master, key):
        """The generated occurrence of ``master`` at ``key``: the master's
        fields (etag, created, updated, iCalUID, sequence included) with an
        instance id, recurringEventId and originalStartTime == start."""
        m = master.res
        r = {k: copy.deepcopy(v) for k, v in m.items() if k != "recurrence"}
        iid = f"{m['id']}_{key_suffix(key)}"
        r["id"] = iid
        r["htmlLink"] = html_link(iid, cal.id)
        r["recurringEventId"] = m["id"]
        if isinstance(key, datetime):
            tzname = m["start"].get("timeZone") or cal.time_zone
            tz = get_zone(tzname)
            s0 = parse_rfc3339(m["start"]["dateTime"]).astimezone(tz).replace(tzinfo=None)
            e0 = parse_rfc3339(m["end"]["dateTime"]).astimezone(tz).replace(tzinfo=None)
            local = key.astimezone(tz).replace(tzinfo=None)
            end = (local + (e0 - s0)).replace(tzinfo=tz).astimezone(UTC)
            r["start"] = {"dateTime": fmt_utc(key), "timeZone": tzname}
            r["end"] = {"dateTime": fmt_utc(end), "timeZone": m["end"].get("timeZone", tzname)}
            r["originalStartTime"] = {"dateTime": fmt_utc(key), "timeZone": tzname}
        else:
            span = date.fromisoformat(m["end"]["date"]) - date.fromisoformat(m["start"]["date"])
            r["start"] = {"date": key.isoformat()}
            r["end"] = {"date": (key + span).isoformat()}
            r["originalStartTime"] = {"date": key.isoformat()}
        return r

    def resolve(self, cal, eid):
        """("event", ev, None) for a stored event (exceptions included),
        ("instance", master, key) for a generated occurrence id, or None."""
        ev = cal.events.get(eid)
        if ev is not None:
            return ("event", ev, None)
        base, sep, suffix = eid.rpartition("_")
        if not sep:
            return None
        key = parse_key_suffix(suffix)
        master = cal.events.get(base)
        if key is None or master is None or not master.recurring:
            return None
        rec = self.recurrence(cal, master)
        if isinstance(key, datetime) == rec.all_day or not rec.contains(key):
            return None
        return ("instance", master, key)

    def occurrence_id(self, cal, series_id, original_start):
        """Instance id for (series id, original start) given as RFC 3339 or
        a date; used by the control API."""
        master = cal.events.get(series_id)
        if master is None or not master.recurring:
            raise ControlError(404, f"no recurring event {series_id!r}")
        if "date" in master.res["start"]:
            key = parse_date(original_start)
        else:
            key = parse_rfc3339(original_start)
        return f"{series_id}_{key_suffix(key)}"

    def _key_in_series(self, cal, master, key):
        if master is None or master.cancelled or not master.recurring:
            return False
        rec = self.recurrence(cal, master)
        if isinstance(key, datetime) == rec.all_day:
            return False
        return rec.contains(key)

    def _window_keys(self, cal, master):
        """Occurrence keys a singleEvents=true listing shows now."""
        if master.cancelled or not master.recurring:
            return set()
        rec = self.recurrence(cal, master)
        upper = self._expansion_upper(cal, ListQuery(), master, rec)
        keys = set()
        for k in rec.keys(stop_after=upper):
            if len(keys) >= self.config["max_instances"]:
                break
            keys.add(k)
        return keys

    def _record_gone(self, cal, master, before, after):
        """Remember the occurrences a series change removed (after _touch,
        so they carry the change's rev). Those with an exception are not
        recorded: the exception itself reports them."""
        stored = set(cal.events)
        for k in after:
            master.gone.pop(key_suffix(k), None)
        for k in before - after:
            suffix = key_suffix(k)
            if f"{master.id}_{suffix}" not in stored:
                master.gone[suffix] = master.rev

    def _orphan_exceptions(self, cal, master):
        """Exceptions whose slot the series no longer generates are cancelled
        (fixtures: they come back as bare stubs). Returns them: they changed."""
        changed = []
        for exc in cal.exceptions_of(master.id):
            if exc.cancelled:
                continue
            try:
                key = key_of_time(exc.res["originalStartTime"])
            except (KeyError, ValueError):
                continue
            if not self._key_in_series(cal, master, key):
                exc.res["status"] = "cancelled"
                changed.append(exc)
        return changed

    # -- validation --------------------------------------------------------

    def _normalize(self, cal, res, exception):
        """Validate a would-be stored resource in place (400 as Google)."""
        for f in STRING_FIELDS:
            if f in res and not isinstance(res[f], str):
                raise err_bad_request(f"Invalid value for: {f}", reason="invalid")
        if res.get("status", "confirmed") not in ("confirmed", "tentative", "cancelled"):
            raise err_bad_request("Invalid value for: status", reason="invalid")
        if "start" not in res:
            raise err_required("Missing start time.")
        if "end" not in res:
            raise err_required("Missing end time.")
        res["start"] = canon_time(res["start"], "start")
        res["end"] = canon_time(res["end"], "end")
        s, e = res["start"], res["end"]
        if ("date" in s) != ("date" in e):
            raise err_bad_request("Start and end times must either both be date or both be dateTime.",
                                  reason="invalid")
        if "date" in s:
            empty = e["date"] <= s["date"]
        else:
            empty = parse_rfc3339(e["dateTime"]) < parse_rfc3339(s["dateTime"])
        if empty:
            raise ApiError(400, "timeRangeEmpty", "The specified time range is empty.",
                           domain="calendar")
        if "recurrence" in res:
            rec = res["recurrence"]
            if exception or rec == []:
                res.pop("recurrence")
            else:
                if not isinstance(rec, list) or not all(isinstance(x, str) for x in rec):
                    raise err_bad_request("Invalid value for: recurrence", reason="invalid")
                if "dateTime" in s and not s.get("timeZone"):
                    raise err_bad_request("Missing time zone definition for start time.",
                                          reason="required")
                try:
                    Recurrence(rec, s, s.get("timeZone") or cal.time_zone)
                except (ValueError, KeyError) as exc:
                    raise err_bad_request(f"Invalid recurrence rule. ({exc})",
                                          reason="invalid") from None
        ext = res.get("extendedProperties")
        if ext is not None:
            ok = isinstance(ext, dict) and all(
                k in ("private", "shared") and isinstance(v, dict)
                and all(isinstance(a, str) and isinstance(b, str) for a, b in v.items())
                for k, v in ext.items())
            if not ok:
                raise err_bad_request("Invalid value for: extendedProperties", reason="invalid")
        att = res.get("attendees")
        if att is not None:
            if not isinstance(att, list) or not all(
                    isinstance(a, dict) and isinstance(a.get("email"), str) for a in att):
                raise err_bad_request("Invalid attendee email.", reason="invalid")
            for a in att:
                # Google answers every attendee with a responseStatus,
                # needsAction unless one was given (discovery: EventAttendee)
                a.setdefault("responseStatus", "needsAction")
                if a["responseStatus"] not in RESPONSE_STATUSES:
                    raise err_bad_request("Invalid attendee responseStatus.", reason="invalid")
        if "reminders" in res and not isinstance(res["reminders"], dict):
            raise err_bad_request("Invalid value for: reminders", reason="invalid")

    @staticmethod
    def _check_if_match(header, etag):
        if header is None:
            return
        values = [v.strip() for v in header.split(",") if v.strip()]
        if "*" in values:
            return
        if etag not in values and f"W/{etag}" not in values:
            raise err_precondition()

    # -- event operations (API and host alike) -------------------------------

    def insert(self, cal, body, host=False, conf_version=0):
        """events.insert. ``conf_version`` is the conferenceDataVersion
        parameter (host edits use 1: the UI always handles conferences)."""
        if not isinstance(body, dict):
            raise err_bad_request("The request body must be a JSON object.")
        res = {k: copy.deepcopy(v) for k, v in body.items()
               if k not in INSERT_IGNORED and v is not None}
        eid = res.pop("id", None)
        if eid is None:
            eid = new_event_id()
            while eid in cal.events:
                eid = new_event_id()
        else:
            pattern = r"[A-Za-z0-9_.\-]{1,1024}" if host else r"[a-v0-9]{5,1024}"
            if not isinstance(eid, str) or not re.fullmatch(pattern, eid):
                raise err_bad_request("Invalid resource id value.", reason="invalid")
            if eid in cal.events:
                raise ApiError(409, "duplicate", "The requested identifier already exists.")
        res.setdefault("status", "confirmed")
        self._normalize(cal, res, exception=False)
        now = datetime.now(UTC).replace(microsecond=0)
        me = {"email": cal.id, "self": True}
        stored = {"kind": "calendar#event", "etag": "", "id": eid,
                  "status": res.pop("status"), "htmlLink": html_link(eid, cal.id),
                  "created": fmt_millis(now), "updated": "", "creator": me, "organizer": dict(me)}
        stored.update(res)
        stored.setdefault("iCalUID", f"{eid}@google.com")
        stored["sequence"] = body.get("sequence") if isinstance(body.get("sequence"), int) else 0
        stored.setdefault("reminders", {"useDefault": True})
        stored.setdefault("eventType", "default")
        self._apply_conference(stored, None, 1 if host else conf_version)
        ev = Event(stored, cal.alloc_seq(), 0)
        cal.events[eid] = ev
        self._touch(cal, [ev])
        self._committed(cal)
        return ev

    def get(self, cal, eid):
        target = self.resolve(cal, eid)
        if target is None:
            raise err_not_found()
        kind, ev, key = target
        if kind == "instance":
            if ev.cancelled:
                raise err_not_found()
            return self.instance_resource(cal, ev, key)
        master = cal.events.get(ev.res.get("recurringEventId") or "")
        if master is not None and master.cancelled:
            raise err_not_found()
        return ev.res

    def _replaced(self, current, body):
        """Update (PUT) semantics: the body replaces every writable field."""
        new = {k: copy.deepcopy(current[k]) for k in READ_ONLY | {"eventType"} if k in current}
        for k, v in body.items():
            if k in READ_ONLY or v is None:
                continue
            new[k] = copy.deepcopy(v)
        new.setdefault("status", current.get("status", "confirmed"))
        new.setdefault("reminders", {"useDefault": True})
        return new

    def modify(self, cal, eid, body, replace=False, if_match=None, conf_version=1):
        """events.patch (replace=False) and events.update (replace=True).
        An instance id that has no exception yet becomes one."""
        if not isinstance(body, dict):
            raise err_bad_request("The request body must be a JSON object.")
        target = self.resolve(cal, eid)
        if target is None:
            raise err_not_found()
        kind, ev, key = target
        if kind == "instance":
            master = ev
            if master.cancelled:
                raise err_not_found()
            current = self.instance_resource(cal, master, key)
        else:
            current = ev.res
            master = cal.events.get(current.get("recurringEventId") or "")
            if master is not None and master.cancelled:
                raise err_not_found()
        is_exception = bool(current.get("recurringEventId"))
        self._check_if_match(if_match, current["etag"])
        if replace:
            new = self._replaced(current, body)
        else:
            new = copy.deepcopy(current)
            merge_patch(new, body)
        self._normalize(cal, new, exception=is_exception)
        self._apply_conference(new, current, conf_version)
        times_changed = new["start"] != current["start"] or new["end"] != current["end"]
        if times_changed:
            # fixtures: a move raises sequence, a title-only edit does not
            new["sequence"] = int(current.get("sequence", 0)) + 1
        rec_changed = new.get("recurrence") != current.get("recurrence")
        series_changed = not is_exception and (rec_changed or times_changed)
        before = self._window_keys(cal, ev) if series_changed else set()
        if kind == "instance":
            ev = Event(new, master.seq, 0)
            cal.events[new["id"]] = ev
        else:
            ev.res = new
        orphans = self._orphan_exceptions(cal, ev) if series_changed else []
        self._touch(cal, self._members(cal, ev, orphans))
        if series_changed:
            self._record_gone(cal, ev, before, self._window_keys(cal, ev))
        self._committed(cal)
        return ev

    def delete(self, cal, eid, if_match=None):
        """events.delete: 410 for an already deleted event (Google's error
        guide), an instance id becomes a cancelled exception."""
        target = self.resolve(cal, eid)
        if target is None:
            raise err_not_found()
        kind, ev, key = target
        if kind == "instance":
            master = ev
            if master.cancelled:
                raise err_deleted()
            current = self.instance_resource(cal, master, key)
            self._check_if_match(if_match, current["etag"])
            current["status"] = "cancelled"
            ev = Event(current, master.seq, 0)
            cal.events[current["id"]] = ev
        else:
            if ev.cancelled:
                raise err_deleted()
            master = cal.events.get(ev.res.get("recurringEventId") or "")
            if master is not None and master.cancelled:
                raise err_deleted()
            self._check_if_match(if_match, ev.res["etag"])
            ev.res["status"] = "cancelled"
        self._touch(cal, self._series_members(cal, ev))
        self._committed(cal)
        return ev

    # -- conference data, events.move, attendee responses, injected items ------

    def _apply_conference(self, new, current, version):
        """conferenceDataVersion semantics (discovery, events.insert/patch/
        update): version 0 "ignores conference data in the event's body" (what
        was stored stays); version 1 copies a given conferenceData and turns a
        createRequest into a Google Meet conference. A createRequest whose
        requestId equals the stored one "is ignored". hangoutLink is read-only
        and follows the Meet video entry point."""
        old_cd = (current or {}).get("conferenceData")
        if version == 0:
            new.pop("conferenceData", None)
            new.pop("hangoutLink", None)
            if old_cd is not None:
                new["conferenceData"] = copy.deepcopy(old_cd)
                if "hangoutLink" in current:
                    new["hangoutLink"] = current["hangoutLink"]
            return
        cd = new.get("conferenceData")
        new.pop("hangoutLink", None)
        if cd is None:
            new.pop("conferenceData", None)
            return
        bad = err_bad_request("Invalid conference data.", reason="invalid")
        if not isinstance(cd, dict):
            raise bad
        req = cd.get("createRequest")
        if req is not None:
            if not isinstance(req, dict) or not isinstance(req.get("requestId"), str) \
                    or not req["requestId"] or len(req["requestId"]) > 1024:
                raise bad
            key = req.get("conferenceSolutionKey")
            ctype = key.get("type") if isinstance(key, dict) else None
            if ctype != "hangoutsMeet":
                # eventHangout/eventNamedHangout are deprecated, addOn needs
                # an add-on: only Meet can be created here
                raise err_bad_request("Invalid conference type value.", reason="invalid")
            old_req = (old_cd or {}).get("createRequest") or {}
            if isinstance(old_cd, dict) and old_req.get("requestId") == req["requestId"]:
                new["conferenceData"] = copy.deepcopy(old_cd)
            else:
                new["conferenceData"] = self._meet(new["id"], req["requestId"])
        else:
            eps = cd.get("entryPoints")
            sol = cd.get("conferenceSolution")
            # "Either conferenceSolution and at least one entryPoint, or
            # createRequest is required." (discovery, ConferenceData)
            if not isinstance(sol, dict) or not isinstance(eps, list) or not eps or \
                    not all(isinstance(e, dict) and isinstance(e.get("entryPointType"), str)
                            for e in eps):
                raise bad
        cd = new["conferenceData"]
        for ep in cd.get("entryPoints") or []:
            if ep.get("entryPointType") == "video" and \
                    ((cd.get("conferenceSolution") or {}).get("key") or {}).get("type") == "hangoutsMeet":
                new["hangoutLink"] = ep.get("uri")
                break

    def _meet(self, event_id, request_id):
        """A Google Meet conference as Google returns it (discovery:
        ConferenceData, EntryPoint; conferenceId "the 10-letter meeting
        code, for example aaa-bbbb-ccc"). Deterministic per event and
        requestId."""
        digest = hashlib.sha1(f"{self.generation}/{event_id}/{request_id}".encode()).digest()
        letters = "".join(chr(ord("a") + b % 26) for b in digest[:10])
        code = f"{letters[:3]}-{letters[3:7]}-{letters[7:]}"
        status = self.config["conference_status"]
        cd = {"createRequest": {"requestId": request_id,
                                "conferenceSolutionKey": {"type": "hangoutsMeet"},
                                "status": {"statusCode": status}}}
        if status == "success":
            cd["entryPoints"] = [{"entryPointType": "video",
                                  "uri": f"https://meet.google.com/{code}",
                                  "label": f"meet.google.com/{code}"}]
            cd["conferenceSolution"] = {"key": {"type": "hangoutsMeet"}, "name": "Google Meet",
                                        "iconUri": MEET_ICON}
            cd["conferenceId"] = code
        return cd

    def move(self, src, eid, dst):
        """events.move: the event (a series with its exceptions) leaves
        ``src`` as a cancelled stub and appears in ``dst`` under the same id
        with a new etag and updated; its organizer becomes ``dst``."""
        ev = src.events.get(eid)
        if ev is None or ev.is_exception:
            if ev is not None or self.resolve(src, eid) is not None:
                raise ApiError(400, "cannotChangeOrganizerOfInstance",
                               "Cannot change the organizer of an instance.")
            raise err_not_found()
        if ev.cancelled:
            raise err_not_found()
        if ev.res.get("eventType", "default") != "default":
            # discovery: "only default events can be moved"
            raise ApiError(400, "eventTypeRestriction",
                           "Event type cannot be moved.")
        if dst is src:
            return ev
        there = dst.events.get(eid)
        if there is not None and not there.cancelled:
            raise ApiError(409, "duplicate", "The requested identifier already exists.")
        members = [ev] + (src.exceptions_of(eid) if ev.recurring else [])
        for stale in dst.exceptions_of(eid):   # left there by an earlier move away
            del dst.events[stale.id]
        seq = dst.alloc_seq()
        moved = []
        for m in members:
            res = copy.deepcopy(m.res)
            res["organizer"] = {"email": dst.id, "self": True}
            res["htmlLink"] = html_link(res["id"], dst.id)
            copy_ev = Event(res, seq, 0, dict(m.gone))
            dst.events[res["id"]] = copy_ev
            moved.append(copy_ev)
        self._touch(dst, moved)
        ev.res["status"] = "cancelled"
        self._touch(src, members)
        self._committed(src)
        self._committed(dst)
        return moved[0]

    def respond(self, cal, eid, email, status, comment=None):
        """An attendee answers the invitation (host action): their
        responseStatus changes, which bumps etag and updated (not sequence)
        like any change. On an occurrence it makes an exception."""
        if status not in RESPONSE_STATUSES:
            raise ControlError(400, f"response must be one of {list(RESPONSE_STATUSES)}")
        if not isinstance(email, str) or (comment is not None and not isinstance(comment, str)):
            raise ControlError(400, "email (and comment) must be strings")
        current = self.get(cal, eid)
        attendees = copy.deepcopy(current.get("attendees") or [])
        for a in attendees:
            if a.get("email", "").lower() == email.lower():
                a["responseStatus"] = status
                if comment is not None:
                    a["comment"] = comment
                break
        else:
            raise ControlError(404, f"no attendee {email!r} on {eid!r}")
        return self.modify(cal, eid, {"attendees": attendees})

    def inject(self, cal, item):
        """Put a raw item into the calendar's listings: full ones, and
        incremental ones whose token predates it. It counts as a change
        (notifications go out) and stays until a reset."""
        rev, _, _ = self._stamp()
        cal.injected.append({"rev": rev, "seq": cal.alloc_seq(), "item": copy.deepcopy(item)})
        self._committed(cal)

    # -- host-only operations on series -------------------------------------

    def _occurrence_target(self, cal, eid):
        target = self.resolve(cal, eid)
        if target is None:
            raise ControlError(404, f"no occurrence {eid!r}")
        kind, ev, key = target
        if kind == "event":
            if not ev.is_exception:
                raise ControlError(400, f"{eid!r} is not an occurrence id")
            master = cal.events.get(ev.res["recurringEventId"])
            key = key_of_time(ev.res["originalStartTime"])
            if master is None:
                raise ControlError(404, "series master missing")
            return master, key
        return ev, key

    def _until_before(self, cal, master, key):
        """UNTIL that ends a series just before the occurrence ``key``, as the
        Google UI writes it: local midnight of that day minus 1 s, in UTC."""
        if not isinstance(key, datetime):
            return (key - timedelta(days=1)).strftime("%Y%m%d")
        tz = get_zone(master.res["start"].get("timeZone") or cal.time_zone)
        day = key.astimezone(tz).date()
        midnight = datetime.combine(day, dtime(0)).replace(tzinfo=tz).astimezone(UTC)
        return (midnight - timedelta(seconds=1)).strftime("%Y%m%dT%H%M%SZ")

    def truncate(self, cal, eid):
        """'Delete this and following': only the master's UNTIL moves, no
        stubs for the removed range (fixture recurring-delete-this-and-
        following.json); exceptions beyond it become bare stubs."""
        master, key = self._occurrence_target(cal, eid)
        before = self._window_keys(cal, master)
        master.res["recurrence"] = set_until(master.res["recurrence"], self._until_before(cal, master, key))
        orphans = self._orphan_exceptions(cal, master)
        self._touch(cal, self._members(cal, master, orphans))
        self._record_gone(cal, master, before, self._window_keys(cal, master))
        self._committed(cal)
        return master

    def split(self, cal, eid, patch, new_id=None):
        """'Edit this and following': the old master gets UNTIL, a new master
        <old>_R<UTC start, no Z> (or ``new_id``) starts at the occurrence with
        its own iCalUID, the old created and sequence, and the patch applied
        (fixtures recurring-edit-this-and-following*.json)."""
        master, key = self._occurrence_target(cal, eid)
        old_lines = list(master.res["recurrence"])
        rec = self.recurrence(cal, master)
        index = rec.index_of(key)
        inst = self.instance_resource(cal, master, key)
        if new_id is None:
            suffix = key_suffix(key).rstrip("Z")
            new_id = f"{master.id}_R{suffix}"
        if new_id in cal.events:
            raise ControlError(409, f"event {new_id!r} exists")
        lines = []
        for line in old_lines:
            if line.upper().startswith("RRULE:") and index is not None:
                parts = []
                for p in line[6:].split(";"):
                    k, _, v = p.partition("=")
                    if k.upper() == "COUNT":
                        p = f"COUNT={max(1, int(v) - index)}"
                    parts.append(p)
                line = "RRULE:" + ";".join(parts)
            lines.append(line)
        new = {k: copy.deepcopy(v) for k, v in master.res.items()}
        new.update(id=new_id, htmlLink=html_link(new_id, cal.id), iCalUID=f"{new_id}@google.com",
                   start=inst["start"], end=inst["end"], recurrence=lines)
        before = (copy.deepcopy(new["start"]), copy.deepcopy(new["end"]))
        merge_patch(new, patch or {})
        new["status"] = "confirmed"
        self._normalize(cal, new, exception=False)
        if (new["start"], new["end"]) != before:
            new["sequence"] = int(new.get("sequence", 0)) + 1
        before = self._window_keys(cal, master)
        master.res["recurrence"] = set_until(old_lines, self._until_before(cal, master, key))
        orphans = self._orphan_exceptions(cal, master)
        new_ev = Event(new, cal.alloc_seq(), 0)
        cal.events[new_id] = new_ev
        self._touch(cal, self._members(cal, master, orphans + [new_ev]))
        self._record_gone(cal, master, before, self._window_keys(cal, master))
        self._committed(cal)
        return new_ev

    # -- listing -------------------------------------------------------------

    def _point(self, cal, t):
        """UTC instant of a canonical time (a date is midnight in the
        calendar's zone)."""
        if "date" in t:
            d = date.fromisoformat(t["date"])
            return datetime.combine(d, dtime(0)).replace(tzinfo=get_zone(cal.time_zone)).astimezone(UTC)
        return parse_rfc3339(t["dateTime"])

    def _span(self, cal, res):
        return self._point(cal, res["start"]), self._point(cal, res["end"])

    def _series_span(self, cal, master):
        first_s, first_e = self._span(cal, master.res)
        rec = self.recurrence(cal, master)
        if not all(r.count is not None or r.until is not None for r in rec.rules):
            return first_s, None
        last = None
        for i, k in enumerate(rec.keys()):
            last = k
            if i > 100000:
                break
        if last is None:
            return first_s, first_e
        if isinstance(last, datetime):
            ls = last
        else:
            ls = self._point(cal, {"date": last.isoformat()})
        return first_s, ls + (first_e - first_s)

    def _passes(self, cal, lq, res, span=None):
        if lq.time_min is not None or lq.time_max is not None:
            s, e = span if span is not None else self._span(cal, res)
            if lq.time_max is not None and s >= lq.time_max:
                return False
            if lq.time_min is not None and e is not None and e <= lq.time_min:
                return False
        if lq.updated_min is not None and res.get("updated", "") < fmt_millis(lq.updated_min):
            return False
        ext = res.get("extendedProperties") or {}
        for k, v in lq.private:
            if (ext.get("private") or {}).get(k) != v:
                return False
        for k, v in lq.shared:
            if (ext.get("shared") or {}).get(k) != v:
                return False
        if lq.ical_uid is not None and res.get("iCalUID") != lq.ical_uid:
            return False
        if lq.q:
            hay = " ".join(str(res.get(f, "")) for f in ("summary", "description", "location"))
            hay += " " + " ".join(str(a.get("email", "")) + " " + str(a.get("displayName", ""))
                                  for a in res.get("attendees") or [] if isinstance(a, dict))
            hay = hay.lower()
            if not all(term in hay for term in lq.q.lower().split()):
                return False
        return True

    def _deleted_visible(self, lq, res):
        """May a full (non-incremental) listing show this cancelled item?"""
        if lq.show_deleted:
            return True
        return lq.updated_min is not None and res.get("updated", "") >= fmt_millis(lq.updated_min)

    def _sort_key(self, cal, lq, seq, res, key=None):
        if lq.order_by == "startTime":
            return [fmt_utc(self._point(cal, res["start"])), res["id"]]
        if lq.order_by == "updated":
            return [res.get("updated", ""), res["id"]]
        return [f"{seq:012d}", key_suffix(key) if key is not None else "", res["id"]]

    def _collect(self, cal, lq, since):
        """Every item of a listing, as (sort key, rendered item)."""
        out = []
        tz_out = lq.out_tz or cal.time_zone
        exc_by_master = {}
        for ev in cal.events.values():
            rid = ev.res.get("recurringEventId")
            if rid and rid in cal.events:
                exc_by_master.setdefault(rid, []).append(ev)
        for ev in cal.events.values():
            rid = ev.res.get("recurringEventId")
            master = cal.events.get(rid) if rid else None
            if master is not None:
                if master.cancelled or (lq.single and master.recurring):
                    continue  # under the series' bare stub / with its expansion
                self._emit_plain(out, cal, lq, since, ev, master, tz_out)
            elif ev.recurring and ev.cancelled:
                # A deleted series is ONE bare stub with the master id
                # (fixtures recurring-delete-all*.json). A full listing shows
                # it only with showDeleted and singleEvents=false: with both
                # true Google returns "only single instances of deleted
                # events (but not the underlying recurring events)".
                if since is not None:
                    show = ev.rev > since
                else:
                    timed_filter = lq.time_min is not None or lq.time_max is not None
                    show = (not lq.single and self._deleted_visible(lq, ev.res)
                            and self._passes(cal, lq, ev.res,
                                             self._series_span(cal, ev) if timed_filter else None))
                if show:
                    out.append((self._sort_key(cal, lq, ev.seq, ev.res), render_stub(ev.res, tz_out, False)))
            elif ev.recurring and lq.single:
                self._emit_series(out, cal, lq, since, ev, exc_by_master.get(ev.id, []), tz_out)
                self._emit_gone(out, cal, lq, since, ev)
            else:
                self._emit_plain(out, cal, lq, since, ev, None, tz_out)
                if lq.single and not ev.cancelled:
                    self._emit_gone(out, cal, lq, since, ev)   # recurrence removed
        for inj in cal.injected:
            # as stored, never filtered: the point is a broken item
            if since is None or inj["rev"] > since:
                out.append(([f"{inj['seq']:012d}", "", f"~{inj['seq']}"], copy.deepcopy(inj["item"])))
        return out

    def _emit_gone(self, out, cal, lq, since, master):
        """Bare stubs for occurrences a series change removed, in
        singleEvents=true incremental listings only: there the client has no
        master to learn it from, and a full listing simply lacks them. (With
        singleEvents=false Google sends no stubs for a removed range: fixture
        recurring-delete-this-and-following.json.)"""
        if since is None:
            return
        for suffix, rev in master.gone.items():
            if rev <= since:
                continue
            key = parse_key_suffix(suffix)
            t = ({"dateTime": fmt_utc(key)} if isinstance(key, datetime)
                 else {"date": key.isoformat()})
            res = {"id": f"{master.id}_{suffix}", "etag": master.res["etag"], "start": t, "end": t,
                   "updated": master.res.get("updated", "")}
            out.append((self._sort_key(cal, lq, master.seq, res, key), render_stub(res, None, False)))

    def _emit_plain(self, out, cal, lq, since, ev, master, tz_out):
        """A stored item listed as stored (singleEvents=false, or a single
        event): single event, master, or exception."""
        res = ev.res
        if since is not None:
            if ev.rev <= since:
                return
        else:
            if ev.cancelled:
                # "Cancelled instances of recurring events (but not the
                # underlying recurring event) will still be included if
                # showDeleted and singleEvents are both False."
                if not ((master is not None and not lq.single) or self._deleted_visible(lq, res)):
                    return
            timed_filter = lq.time_min is not None or lq.time_max is not None
            span = self._series_span(cal, ev) if ev.recurring and timed_filter else None
            if not self._passes(cal, lq, res, span):
                return
        key = None
        seq = ev.seq
        if master is not None:
            seq = master.seq
            try:
                key = key_of_time(res["originalStartTime"])
            except (KeyError, ValueError):
                key = None
        if ev.cancelled:
            full = master is not None and key is not None and self._key_in_series(cal, master, key)
            item = render_stub(res, tz_out, full)
        else:
            item = render_full(res, tz_out)
        out.append((self._sort_key(cal, lq, seq, res, key), item))

    def _expansion_upper(self, cal, lq, master, rec):
        if lq.time_max is not None:
            upper = lq.time_max
        else:
            start = self._point(cal, master.res["start"])
            upper = max(datetime.now(UTC), start) + timedelta(days=self.config["expand_days"])
        if rec.all_day:
            return upper.astimezone(get_zone(cal.time_zone)).date()
        return upper

    def _emit_series(self, out, cal, lq, since, master, excs, tz_out):
        """singleEvents=true: a live master becomes its occurrences, each
        overlaid by its exception if one exists."""
        rec = self.recurrence(cal, master)
        master_changed = since is None or master.rev > since
        exc_map = {}
        for exc in excs:
            try:
                exc_map[key_of_time(exc.res["originalStartTime"])] = exc
            except (KeyError, ValueError):
                continue
        generated = set()
        upper = self._expansion_upper(cal, lq, master, rec)
        limit = self.config["max_instances"]
        for key in rec.keys(stop_after=upper):
            if len(generated) >= limit:
                break
            generated.add(key)
            exc = exc_map.get(key)
            if exc is not None:
                self._emit_exception(out, cal, lq, since, master, exc, key, master_changed, True, tz_out)
            elif master_changed:
                res = self.instance_resource(cal, master, key)
                if since is None and not self._passes(cal, lq, res):
                    continue
                out.append((self._sort_key(cal, lq, master.seq, res, key), render_full(res, tz_out)))
        for key, exc in exc_map.items():
            if key in generated:
                continue
            in_range = self._key_in_series(cal, master, key)
            self._emit_exception(out, cal, lq, since, master, exc, key, master_changed, in_range, tz_out)

    def _emit_exception(self, out, cal, lq, since, master, exc, key, master_changed, in_range, tz_out):
        if since is not None and exc.rev <= since and not master_changed:
            return
        if exc.cancelled:
            if since is None and not (self._deleted_visible(lq, exc.res) and self._passes(cal, lq, exc.res)):
                return
            item = render_stub(exc.res, tz_out, in_range)
        else:
            if since is None and not self._passes(cal, lq, exc.res):
                return
            item = render_full(exc.res, tz_out)
        out.append((self._sort_key(cal, lq, master.seq, exc.res, key), item))

    def _check_sync_token(self, cal, token):
        try:
            p = decode_token(token)
        except ValueError:
            raise err_invalid() from None
        if (p.get("t") != "s" or not isinstance(p.get("r"), int) or not isinstance(p.get("e"), int)
                or not isinstance(p.get("i"), int) or p.get("c") != cal.id):
            raise err_invalid()
        if p.get("g") != self.generation or p["e"] != cal.epoch or p["r"] > self.rev:
            raise err_full_sync()
        max_age = self.config["sync_token_max_age"]
        if max_age is not None and time.time() - p["i"] > max_age:
            raise err_full_sync()
        return p["r"]

    def _check_page_token(self, cal, token):
        try:
            p = decode_token(token)
        except ValueError:
            raise err_invalid("pageToken") from None
        if (p.get("t") != "p" or p.get("g") != self.generation or p.get("c") != cal.id
                or not isinstance(p.get("k"), list) or not isinstance(p.get("r"), int)):
            raise err_invalid("pageToken")
        return p

    def envelope(self, cal):
        etag = hashlib.sha1(f"{cal.id}/{self.rev}".encode()).hexdigest()[:14]
        return {"kind": "calendar#events", "etag": f'"p3{etag}"', "summary": cal.summary,
                "description": "", "updated": cal.updated, "timeZone": cal.time_zone,
                "accessRole": "owner", "defaultReminders": [{"method": "popup", "minutes": 30}]}

    def list_events(self, cal, lq, master_id=None):
        """events.list (and events.instances when ``master_id`` is given):
        keyset pages over a stable order; nextSyncToken on the last page
        only, naming the revision the listing started at."""
        since = None
        sync_rev = self.rev
        last_key = None
        if lq.sync_token is not None and master_id is None:
            since = self._check_sync_token(cal, lq.sync_token)
        if lq.page_token is not None:
            p = self._check_page_token(cal, lq.page_token)
            last_key, sync_rev, since = p["k"], p["r"], p.get("s")
        if master_id is not None:
            items = self._instances(cal, lq, master_id)
        else:
            items = self._collect(cal, lq, since)
        items.sort(key=lambda t: t[0])
        if last_key is not None:
            items = [t for t in items if t[0] > last_key]
        page = items[:lq.max_results]
        env = self.envelope(cal)
        if len(items) > len(page):
            env["nextPageToken"] = encode_token({"t": "p", "g": self.generation, "c": cal.id,
                                                 "k": page[-1][0], "r": sync_rev, "s": since})
        elif master_id is None and lq.sync_capable:
            env["nextSyncToken"] = encode_token({"t": "s", "g": self.generation, "c": cal.id,
                                                 "e": cal.epoch, "r": sync_rev,
                                                 "i": int(time.time())})
        env["items"] = [item for _, item in page]
        return env

    def _instances(self, cal, lq, master_id):
        master = cal.events.get(master_id)
        if master is None or not master.recurring:
            raise err_not_found()
        if master.cancelled:
            raise err_deleted()
        out = []
        lq.single = True
        self._emit_series(out, cal, lq, None, master, cal.exceptions_of(master_id),
                          lq.out_tz or cal.time_zone)
        if lq.original_start is not None:
            out = [t for t in out if "originalStartTime" in t[1] and
                   self._point(cal, t[1]["originalStartTime"]) == lq.original_start]
        return out

    # -- channels ------------------------------------------------------------

    def watch(self, cal, body, calendar_id_as_given, base_url):
        if not isinstance(body, dict):
            raise err_bad_request("The request body must be a JSON object.")
        cid = body.get("id")
        if not isinstance(cid, str) or not cid:
            raise err_required("Required", location="id")
        if len(cid) > 256:
            raise err_invalid("id")
        if cid in self.channels:
            raise ApiError(400, "channelIdNotUnique", "Channel id not unique")
        ctype = body.get("type")
        if ctype not in ("web_hook", "webhook"):
            raise ApiError(400, "push.channelTypeNotSupported",
                           f"Channel type '{ctype}' is not supported.")
        address = body.get("address")
        if not isinstance(address, str) or not re.match(r"https?://[^/\s]+", address):
            raise ApiError(400, "push.webhookUrlUnparseable", "WebHook callback must be a URL.")
        token = body.get("token")
        if token is not None and not isinstance(token, str):
            raise err_invalid("token")
        now_ms = int(time.time() * 1000)
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise err_invalid("params")
        try:
            if params.get("ttl") is not None:
                ttl = int(str(params["ttl"]))
            elif body.get("expiration") is not None:
                ttl = (int(str(body["expiration"])) - now_ms) // 1000
            else:
                ttl = int(self.config["default_ttl"])
        except ValueError:
            raise err_invalid("params.ttl") from None
        if ttl <= 0:
            raise err_invalid("params.ttl")
        granted = min(ttl, int(self.config["max_ttl"]))
        quoted = urllib.parse.quote(calendar_id_as_given, safe="")
        ch = Channel(id=cid, resource_id=self.resource_id(cal.id),
                     resource_uri=f"{base_url}{API_PREFIX}/calendars/{quoted}/events?alt=json",
                     calendar=cal.id, address=address, token=token,
                     expiration_ms=now_ms + granted * 1000, created_ms=now_ms,
                     requested_ttl=ttl, state="live", message_number=0)
        self.channels[cid] = ch
        self.save()
        return ch

    def stop_channel(self, body):
        if not isinstance(body, dict):
            raise err_bad_request("The request body must be a JSON object.")
        cid, rid = body.get("id"), body.get("resourceId")
        if not isinstance(cid, str) or not cid:
            raise err_required("Required", location="id")
        if not isinstance(rid, str) or not rid:
            raise err_required("Required", location="resourceId")
        ch = self.channels.get(cid)
        if ch is None or rid != ch.resource_id or not ch.is_live():
            raise ApiError(404, "notFound", f"Channel '{cid}' not found for project '0'")
        ch.state = "stopped"
        self.save()
        return ch

    def live_channels(self, cal_id):
        now_ms = int(time.time() * 1000)
        return [ch for ch in self.channels.values() if ch.calendar == cal_id and ch.is_live(now_ms)]

    # -- OAuth -----------------------------------------------------------------

    def mint_access_token(self, refresh_token, ttl=None):
        ttl = int(self.config["access_token_ttl"] if ttl is None else ttl)
        now = time.time()
        for tok in [t for t, i in self.access_tokens.items() if i["expires_at"] < now - 86400]:
            del self.access_tokens[tok]
        tok = "ya29.fake-" + b64url(os.urandom(24))
        self.access_tokens[tok] = {"refresh_token": refresh_token, "expires_at": now + ttl}
        self.save()
        return tok, ttl

    def access_token_valid(self, tok):
        info = self.access_tokens.get(tok)
        if info is None:
            return bool(self.config["accept_unknown_access_tokens"])
        return info["expires_at"] > time.time()

    def revoke(self, refresh_token):
        self.revoked.add(refresh_token)
        for info in self.access_tokens.values():
            if info["refresh_token"] == refresh_token:
                info["expires_at"] = 0
        self.save()

    def expire_access_tokens(self):
        for info in self.access_tokens.values():
            info["expires_at"] = 0
        self.save()


# ---------------------------------------------------------------------------
# Push notifications
# ---------------------------------------------------------------------------

class ControlError(Exception):
    """Error of the control API: {"error": message} with a status."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def _as_list(value, name):
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ControlError(400, f"{name} must be a string or a list of strings")


def _int_field(spec, name, default=None, lo=None, hi=None):
    v = spec.get(name, default)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
        raise ControlError(400, f"{name} must be an integer")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ControlError(400, f"{name} out of range")
    return v


class Notifier:
    """Delivers push notifications from a background thread, in due order.

    Each change to a calendar sends one ``exists`` message to every live
    channel of it; a new channel first gets ``sync`` (message number 1).
    Faults (drop, duplicate, delay, reorder) act on the next N messages.
    Every message, delivered or not, is in the log."""

    ACTIONS = ("drop", "duplicate", "delay", "reorder")

    def __init__(self, store, log_limit=10000):
        self.store = store
        self.cv = threading.Condition()
        self.heap = []
        self.counter = itertools.count(1)
        self.log = deque(maxlen=log_limit)
        self.log_seq = itertools.count(1)
        self.rules = []
        self.rule_ids = itertools.count(1)
        self.reorder_buf = []
        self.reorder_deadline = None
        self.busy = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="notifier", daemon=True)
        self.thread.start()

    # -- faults --------------------------------------------------------------

    def add_rule(self, spec):
        if not isinstance(spec, dict):
            raise ControlError(400, "body must be a JSON object")
        action = spec.get("action")
        if action not in self.ACTIONS:
            raise ControlError(400, f"action must be one of {list(self.ACTIONS)}")
        unknown = set(spec) - {"action", "count", "delay_ms", "window_ms", "channel_id", "state"}
        if unknown:
            raise ControlError(400, f"unknown keys {sorted(unknown)}")
        count = _int_field(spec, "count", 1, lo=-1)
        if count == 0:
            raise ControlError(400, "count must be >= 1, or -1 for until cleared")
        rule = {"id": f"n{next(self.rule_ids)}", "action": action, "count": count,
                "remaining": count, "hits": 0,
                "delay_ms": _int_field(spec, "delay_ms", 0, lo=0, hi=600000),
                "window_ms": _int_field(spec, "window_ms", 2000, lo=1, hi=600000),
                "channel_id": spec.get("channel_id"), "state": spec.get("state")}
        if action == "delay" and not rule["delay_ms"]:
            raise ControlError(400, "delay needs delay_ms")
        if action == "reorder" and (count < 2):
            raise ControlError(400, "reorder needs count >= 2")
        with self.cv:
            self.rules.append(rule)
        return dict(rule)

    def clear_rules(self):
        with self.cv:
            self.rules.clear()
            self._flush_reorder()
            self.cv.notify_all()

    def list_rules(self):
        with self.cv:
            return [dict(r) for r in self.rules]

    def _take(self, action, rec):
        for r in self.rules:
            if r["action"] != action or r["remaining"] == 0:
                continue
            if r["channel_id"] is not None and r["channel_id"] != rec["channel_id"]:
                continue
            if r["state"] is not None and r["state"] != rec["resource_state"]:
                continue
            if r["remaining"] > 0:
                r["remaining"] -= 1
            r["hits"] += 1
            return r
        return None

    # -- sending ---------------------------------------------------------------

    def calendar_changed(self, cal_id, state="exists"):
        """Called with the store lock held, after a change was applied."""
        for ch in self.store.live_channels(cal_id):
            self.send(ch, state)

    def send(self, ch, state):
        """Queue one message for ``ch`` (store lock held by the caller)."""
        ch.message_number += 1
        headers = {
            "X-Goog-Channel-ID": ch.id,
            "X-Goog-Channel-Expiration": http_date(ch.expiration_ms / 1000),
            "X-Goog-Resource-ID": ch.resource_id,
            "X-Goog-Resource-URI": ch.resource_uri,
            "X-Goog-Resource-State": state,
            "X-Goog-Message-Number": str(ch.message_number),
            "User-Agent": "APIs-Google; (+https://developers.google.com/webmasters/APIs-Google.html)",
            "Accept": "*/*",
        }
        if ch.token is not None:
            headers["X-Goog-Channel-Token"] = ch.token
        rec = {"seq": next(self.log_seq), "channel_id": ch.id, "calendar": ch.calendar,
               "address": ch.address, "resource_state": state,
               "message_number": ch.message_number, "status": "pending",
               "http_status": None, "error": None,
               "enqueued_at": fmt_millis(datetime.now(UTC)), "sent_at": None,
               "duplicate": False, "delayed_ms": 0, "reordered": False, "faults": [],
               "headers": headers}
        with self.cv:
            self.log.append(rec)
            rule = self._take("drop", rec)
            if rule is not None:
                rec["status"] = "dropped"
                rec["faults"].append(rule["id"])
                return
            due = time.monotonic()
            rule = self._take("delay", rec)
            if rule is not None:
                rec["delayed_ms"] = rule["delay_ms"]
                rec["faults"].append(rule["id"])
                due += rule["delay_ms"] / 1000
            jobs = [rec]
            rule = self._take("duplicate", rec)
            if rule is not None:
                rec["faults"].append(rule["id"])
                dup = dict(rec, seq=next(self.log_seq), duplicate=True, faults=list(rec["faults"]))
                self.log.append(dup)
                jobs.append(dup)
            rule = self._take("reorder", rec)
            if rule is not None:
                for j in jobs:
                    j["reordered"] = True
                    j["faults"].append(rule["id"])
                    self.reorder_buf.append((due, j))
                if self.reorder_deadline is None:
                    self.reorder_deadline = time.monotonic() + rule["window_ms"] / 1000
                if rule["remaining"] == 0:
                    self._flush_reorder()
            else:
                for j in jobs:
                    heapq.heappush(self.heap, (due, next(self.counter), j))
            self.cv.notify_all()

    def _flush_reorder(self):
        """Release held messages newest first (cv held)."""
        buf, self.reorder_buf, self.reorder_deadline = self.reorder_buf, [], None
        if not buf:
            return
        base = time.monotonic()
        for i, (due, j) in enumerate(reversed(buf)):
            heapq.heappush(self.heap, (max(due, base) + i * 0.001, next(self.counter), j))
        self.cv.notify_all()

    def _run(self):
        while True:
            with self.cv:
                while True:
                    if self.stopping:
                        return
                    now = time.monotonic()
                    if self.reorder_deadline is not None and now >= self.reorder_deadline:
                        self._flush_reorder()
                    if self.heap and self.heap[0][0] <= now:
                        _, _, rec = heapq.heappop(self.heap)
                        self.busy += 1
                        break
                    waits = [1.0]
                    if self.heap:
                        waits.append(self.heap[0][0] - now)
                    if self.reorder_deadline is not None:
                        waits.append(self.reorder_deadline - now)
                    self.cv.wait(max(0.001, min(waits)))
            try:
                self._deliver(rec)
            except Exception as exc:  # never let the thread die
                with self.cv:
                    rec["status"], rec["error"] = "failed", f"internal: {exc!r}"
            finally:
                with self.cv:
                    self.busy -= 1
                    self.cv.notify_all()

    def _deliver(self, rec):
        ch = self.store.channels.get(rec["channel_id"])
        if ch is None or ch.state == "stopped":
            with self.cv:
                rec["status"], rec["error"] = "skipped", "channel stopped"
            return
        if not ch.is_live():
            with self.cv:
                rec["status"], rec["error"] = "skipped", "channel expired"
            return
        url = urllib.parse.urlsplit(rec["address"])
        conn_cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
        path = (url.path or "/") + (f"?{url.query}" if url.query else "")
        status, error = None, None
        try:
            conn = conn_cls(url.hostname, url.port, timeout=float(self.store.config["notification_timeout"]))
            try:
                conn.request("POST", path, body=b"", headers=rec["headers"])
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            finally:
                conn.close()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        with self.cv:
            rec["sent_at"] = fmt_millis(datetime.now(UTC))
            rec["http_status"] = status
            rec["error"] = error
            rec["status"] = "delivered" if status is not None and 200 <= status < 300 else "failed"

    # -- inspection ------------------------------------------------------------

    def records(self, since=0, channel_id=None, calendar=None):
        with self.cv:
            return [copy.deepcopy(r) for r in self.log
                    if r["seq"] > since
                    and (channel_id is None or r["channel_id"] == channel_id)
                    and (calendar is None or r["calendar"] == calendar)]

    def clear_log(self):
        with self.cv:
            self.log.clear()

    def drain(self, timeout):
        """Wait until nothing is queued, held or in flight."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while self.heap or self.reorder_buf or self.busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cv.wait(min(left, 0.05))
            return True

    def stop(self):
        with self.cv:
            self.stopping = True
            self.cv.notify_all()


# ---------------------------------------------------------------------------
# API faults
# ---------------------------------------------------------------------------

class FaultInjector:
    """Rules answered instead of (or on top of) the real response for the
    next ``count`` matching requests. The first matching rule with calls
    left fires; one rule per request."""

    MODES = ("truncated_json", "wrong_types", "html", "empty_body", "disconnect")
    KEYS = {"status", "count", "retry_after", "reason", "message", "paths", "ops",
            "methods", "mode", "delay_ms", "apply"}

    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []
        self.ids = itertools.count(1)

    def add(self, spec):
        if not isinstance(spec, dict):
            raise ControlError(400, "body must be a JSON object")
        unknown = set(spec) - self.KEYS
        if unknown:
            raise ControlError(400, f"unknown keys {sorted(unknown)}")
        status = _int_field(spec, "status", None, lo=400, hi=599)
        mode = spec.get("mode")
        if mode is not None and mode not in self.MODES:
            raise ControlError(400, f"mode must be one of {list(self.MODES)}")
        delay_ms = _int_field(spec, "delay_ms", 0, lo=0, hi=600000)
        if status is None and mode is None and not delay_ms:
            raise ControlError(400, "a fault needs status, mode or delay_ms")
        count = _int_field(spec, "count", 1, lo=-1)
        if count == 0:
            raise ControlError(400, "count must be >= 1, or -1 for until cleared")
        retry_after = spec.get("retry_after")
        if retry_after is not None and not (isinstance(retry_after, str) or
                                            (isinstance(retry_after, int) and not isinstance(retry_after, bool)
                                             and retry_after >= 0)):
            raise ControlError(400, "retry_after must be seconds or an HTTP-date string")
        paths = spec.get("paths")
        if paths is not None:
            if not isinstance(paths, str):
                raise ControlError(400, "paths must be a regular expression string")
            try:
                re.compile(paths)
            except re.error as exc:
                raise ControlError(400, f"bad paths regex: {exc}") from None
        apply = spec.get("apply")
        if apply is not None and not isinstance(apply, bool):
            raise ControlError(400, "apply must be a boolean")
        for name in ("reason", "message"):
            if spec.get(name) is not None and not isinstance(spec[name], str):
                raise ControlError(400, f"{name} must be a string")
        rule = {"id": f"f{next(self.ids)}", "status": status, "mode": mode,
                "reason": spec.get("reason"), "message": spec.get("message"),
                "retry_after": retry_after, "count": count, "remaining": count, "hits": 0,
                "paths": paths, "ops": _as_list(spec.get("ops"), "ops"),
                "methods": [m.upper() for m in _as_list(spec.get("methods"), "methods") or []] or None,
                "delay_ms": delay_ms,
                "apply": apply if apply is not None else mode not in (None, "disconnect")}
        with self.lock:
            self.rules.append(rule)
        return dict(rule)

    def take(self, op, method, path, is_api):
        with self.lock:
            for r in self.rules:
                if r["remaining"] == 0:
                    continue
                if r["paths"] is None and r["ops"] is None and not is_api:
                    continue  # unscoped rules hit the Calendar API only, not /token
                if r["paths"] is not None and not re.search(r["paths"], path):
                    continue
                if r["ops"] is not None and op not in r["ops"]:
                    continue
                if r["methods"] is not None and method not in r["methods"]:
                    continue
                if r["remaining"] > 0:
                    r["remaining"] -= 1
                r["hits"] += 1
                return dict(r)
        return None

    def list(self):
        with self.lock:
            return [dict(r) for r in self.rules]

    def clear(self):
        with self.lock:
            self.rules.clear()


# ---------------------------------------------------------------------------
# Usage limits: read-only calendars, per-credential rate limits, counters
# ---------------------------------------------------------------------------

WRITE_OPS = ("events.insert", "events.patch", "events.update", "events.delete", "events.move")
USAGE_REASONS = ("quotaExceeded", "dailyLimitExceeded", "rateLimitExceeded",
                 "userRateLimitExceeded")
USAGE_KEEP_SECONDS = 3600  # per-second buckets kept per credential


class Quota:
    """What Google's usage limits do to a client, as modes a test switches
    on: a calendar gone read-only for N seconds (writes get 403
    usageLimits, reads work), a per-credential request-rate limit (a
    sliding 60 s window, 403 or 429), and a count of requests per
    credential per second for budget checks. A credential is the refresh
    token an access token was minted from. Not persisted."""

    def __init__(self):
        self.lock = threading.Lock()
        self.read_only = {}   # calendar id or "*" -> {"until", "reason", "retry_after"}
        self.limits = {}      # credential or "*" -> {"per_minute", "status", "reason", "retry_after"}
        self.windows = {}     # credential -> deque of accepted request times
        self.usage = {}       # credential -> {"total", "rate_limited", "read_only", "seconds": {sec: n}}

    def clear(self):
        with self.lock:
            self.read_only.clear()
            self.limits.clear()
            self.windows.clear()
            self.usage.clear()

    def set_read_only(self, cal_id, seconds, reason, retry_after):
        with self.lock:
            until = time.time() + seconds
            self.read_only[cal_id or "*"] = {"until": until, "reason": reason,
                                            "retry_after": retry_after}
            return until

    def list_read_only(self):
        now = time.time()
        with self.lock:
            return [{"calendar": None if k == "*" else k, "until": fmt_millis(
                datetime.fromtimestamp(v["until"], UTC)), "seconds_left": round(v["until"] - now, 3),
                "reason": v["reason"]} for k, v in self.read_only.items() if v["until"] > now]

    def set_limit(self, cred, spec):
        with self.lock:
            if spec is None:
                self.limits.pop(cred or "*", None)
            else:
                self.limits[cred or "*"] = spec
            self.windows.clear()

    def list_limits(self):
        with self.lock:
            return [dict(v, refresh_token=None if k == "*" else k) for k, v in self.limits.items()]

    def _usage(self, cred):
        u = self.usage.get(cred)
        if u is None:
            u = self.usage[cred] = {"total": 0, "rate_limited": 0, "read_only": 0, "seconds": {}}
        return u

    def admit(self, cred, op, calendars):
        """Count the request and apply the modes; an ApiError to answer
        instead, or None."""
        now = time.time()
        sec = int(now)
        with self.lock:
            u = self._usage(cred)
            u["total"] += 1
            u["seconds"][sec] = u["seconds"].get(sec, 0) + 1
            if len(u["seconds"]) > USAGE_KEEP_SECONDS:
                for old in sorted(u["seconds"])[:len(u["seconds"]) - USAGE_KEEP_SECONDS]:
                    del u["seconds"][old]
            limit = self.limits.get(cred) or self.limits.get("*")
            if limit is not None and limit["per_minute"] is not None:
                w = self.windows.setdefault(cred, deque())
                while w and w[0] <= now - 60:
                    w.popleft()
                if len(w) >= limit["per_minute"]:
                    u["rate_limited"] += 1
                    e = error_for_fault(limit["status"], limit["reason"])
                    if limit["retry_after"]:
                        e.headers["Retry-After"] = str(max(1, int(w[0] + 60 - now + 0.999)))
                    return e
                w.append(now)
            if op in WRITE_OPS:
                for cal_id in list(calendars) + ["*"]:
                    ro = self.read_only.get(cal_id)
                    if ro is not None and ro["until"] > now:
                        u["read_only"] += 1
                        e = error_for_fault(403, ro["reason"])
                        if ro["retry_after"]:
                            e.headers["Retry-After"] = str(max(1, int(ro["until"] - now + 0.999)))
                        return e
        return None

    def report(self, cred=None):
        with self.lock:
            out = []
            for c, u in sorted(self.usage.items()):
                if cred is not None and c != cred:
                    continue
                secs = u["seconds"]
                per_minute = 0
                keys = sorted(secs)
                lo, running = 0, 0
                for k in keys:              # sliding 60 s window over the buckets
                    running += secs[k]
                    while keys[lo] <= k - 60:
                        running -= secs[keys[lo]]
                        lo += 1
                    per_minute = max(per_minute, running)
                out.append({"credential": c, "total": u["total"],
                            "rate_limited": u["rate_limited"], "read_only": u["read_only"],
                            "max_per_second": max(secs.values(), default=0),
                            "max_per_minute": per_minute,
                            "per_second": {str(k): secs[k] for k in keys}})
            return out


# ---------------------------------------------------------------------------
# Request log
# ---------------------------------------------------------------------------

LOGGED_HEADERS = ("authorization", "if-match", "if-none-match", "content-type",
                  "content-length", "user-agent", "accept-encoding", "accept")


class RequestLog:
    def __init__(self, limit=10000):
        self.lock = threading.Lock()
        self.items = deque(maxlen=limit)
        self.seq = itertools.count(1)

    def add(self, rec):
        with self.lock:
            rec["seq"] = next(self.seq)
            self.items.append(rec)

    def query(self, since=0, op=None, method=None, path=None, calendar=None, status=None):
        rx = re.compile(path) if path else None
        with self.lock:
            return [copy.deepcopy(r) for r in self.items
                    if r["seq"] > since
                    and (op is None or r.get("op") == op)
                    and (method is None or r["method"] == method.upper())
                    and (rx is None or rx.search(r["path"]))
                    and (calendar is None or r.get("calendar") == calendar)
                    and (status is None or r.get("status") == status)]

    def clear(self):
        with self.lock:
            self.items.clear()


# ---------------------------------------------------------------------------
# HTTP layer
# ---------------------------------------------------------------------------

class Request:
    def __init__(self, method, raw_path, raw_query, headers, body):
        self.method = method
        self.raw_path = raw_path
        self.raw_query = raw_query
        self.segs = [urllib.parse.unquote(s) for s in raw_path.split("/")[1:]]
        while self.segs and self.segs[-1] == "":
            self.segs.pop()
        self.path = "/" + "/".join(self.segs)
        self.query = urllib.parse.parse_qs(raw_query, keep_blank_values=True)
        self.headers = headers
        self.body = body

    def json_body(self, required=True):
        """The body as JSON; an empty body is {} unless required."""
        if not self.body.strip():
            if required:
                raise err_bad_request("Required request body is missing.", reason="required")
            return {}
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise err_parse() from None

    def one(self, name):
        v = self.query.get(name)
        if not v:
            return None
        if len(v) > 1:
            raise err_invalid(name, f"Multiple values for parameter: {name}")
        return v[0]


class Response:
    def __init__(self, status, body=None, headers=None, raw=None,
                 content_type="application/json; charset=UTF-8"):
        self.status = status
        self.body = body
        self.raw = raw
        self.headers = dict(headers or {})
        self.content_type = content_type
        self.after = []         # callables run after the response is written
        self.disconnect = False

    def payload(self):
        if self.raw is not None:
            return self.raw
        if self.body is None:
            return b""
        return json.dumps(self.body, ensure_ascii=False, indent=1).encode("utf-8")


def error_response(e):
    return Response(e.code, e.body(), headers=e.headers)


class Router:
    """Method + path pattern ("calendars/{cal}/events/{eid}") -> handler."""

    def __init__(self):
        self.routes = []

    def add(self, method, pattern, handler, op):
        self.routes.append((method, pattern.strip("/").split("/") if pattern else [], handler, op))

    def match(self, method, segs):
        path_known = False
        for m, parts, handler, op in self.routes:
            if len(parts) != len(segs):
                continue
            params = {}
            for p, s in zip(parts, segs):
                if p.startswith("{"):
                    if not s:
                        break
                    params[p[1:-1]] = s
                elif p != s:
                    break
            else:
                path_known = True
                if m == method:
                    return handler, params, op
        return None, path_known, None


STANDARD_PARAMS = {"alt", "fields", "key", "oauth_token", "prettyPrint", "quotaUser",
                   "userIp", "access_token", "callback", "upload_protocol", "uploadType", "$.xgafv"}
LIST_PARAMS = {"alwaysIncludeEmail", "eventTypes", "iCalUID", "maxAttendees", "maxResults",
               "orderBy", "pageToken", "privateExtendedProperty", "q", "sharedExtendedProperty",
               "showDeleted", "showHiddenInvitations", "singleEvents", "syncToken", "timeMax",
               "timeMin", "timeZone", "updatedMin"}
WRITE_PARAMS = {"alwaysIncludeEmail", "conferenceDataVersion", "maxAttendees",
                "sendNotifications", "sendUpdates", "supportsAttachments"}
# From the discovery document (calendar-v3-discovery.json), per method.
OP_PARAMS = {
    "events.list": LIST_PARAMS,
    "events.watch": LIST_PARAMS,
    "events.insert": WRITE_PARAMS - {"alwaysIncludeEmail"},
    "events.patch": WRITE_PARAMS,
    "events.update": WRITE_PARAMS,
    "events.delete": {"sendNotifications", "sendUpdates"},
    "events.move": {"destination", "sendNotifications", "sendUpdates"},
    "events.get": {"alwaysIncludeEmail", "maxAttendees", "timeZone"},
    "events.instances": {"alwaysIncludeEmail", "maxAttendees", "maxResults", "originalStart",
                         "pageToken", "showDeleted", "timeMax", "timeMin", "timeZone"},
    "channels.stop": set(),
    "calendars.get": set(),
    "calendarList.list": {"maxResults", "minAccessRole", "pageToken", "showDeleted",
                          "showHidden", "syncToken"},
    "calendarList.get": set(),
}
# "There are several query parameters that cannot be specified together
# with nextSyncToken" (discovery document, events.list syncToken).
SYNC_REFUSED = ("iCalUID", "orderBy", "privateExtendedProperty", "q",
                "sharedExtendedProperty", "timeMin", "timeMax", "updatedMin")


class GoogleApi:
    """Calendar API v3 under /calendar/v3."""

    def __init__(self, app):
        self.app = app
        self.store = app.store
        r = self.router = Router()
        r.add("GET", "calendars/{cal}/events", self.events_list, "events.list")
        r.add("POST", "calendars/{cal}/events", self.events_insert, "events.insert")
        r.add("POST", "calendars/{cal}/events/watch", self.events_watch, "events.watch")
        r.add("GET", "calendars/{cal}/events/{eid}/instances", self.events_instances, "events.instances")
        r.add("POST", "calendars/{cal}/events/{eid}/move", self.events_move, "events.move")
        r.add("GET", "calendars/{cal}/events/{eid}", self.events_get, "events.get")
        r.add("PATCH", "calendars/{cal}/events/{eid}", self.events_patch, "events.patch")
        r.add("PUT", "calendars/{cal}/events/{eid}", self.events_update, "events.update")
        r.add("DELETE", "calendars/{cal}/events/{eid}", self.events_delete, "events.delete")
        r.add("POST", "channels/stop", self.channels_stop, "channels.stop")
        r.add("GET", "calendars/{cal}", self.calendars_get, "calendars.get")
        r.add("GET", "users/me/calendarList", self.calendar_list, "calendarList.list")
        r.add("GET", "users/me/calendarList/{cal}", self.calendar_list_get, "calendarList.get")

    def handle(self, req, rec):
        handler, params, op = self.router.match(req.method, req.segs[2:])
        rec["op"] = op
        if handler is not None and "cal" in params:
            rec["calendar"] = self.store.canonical_id(params["cal"])
        if handler is not None and "eid" in params:
            rec["event_id"] = params["eid"]
        try:
            if handler is None:
                raise err_not_found()
            cred = self._check_auth(req)
            self._check_params(op, req)
            cals = [rec["calendar"]] if rec["calendar"] else []
            if op == "events.move" and req.one("destination"):
                cals.append(self.store.canonical_id(req.one("destination")))
            limited = self.app.quota.admit(cred, op, cals)
            if limited is not None:
                rec["limited"] = limited.reason
                return error_response(limited)
            return self.app.run_with_faults(req, rec, op, True, lambda: handler(req, **params),
                                            lambda rule: self._fault_error(rule))
        except ApiError as e:
            return error_response(e)

    @staticmethod
    def _fault_error(rule):
        e = error_for_fault(rule["status"], rule["reason"], rule["message"])
        return error_response(e)

    def _check_auth(self, req):
        """The credential behind a valid bearer token: the refresh token it
        was minted from (an unknown accepted token counts as itself)."""
        h = req.headers.get("Authorization") or ""
        if not h.startswith("Bearer ") or not h[7:].strip():
            raise err_auth()
        tok = h[7:].strip()
        with self.store.lock:
            if not self.store.access_token_valid(tok):
                raise err_auth()
            info = self.store.access_tokens.get(tok)
            return info["refresh_token"] if info else "token:" + tok[:64]

    @staticmethod
    def _conf_version(req):
        v = req.one("conferenceDataVersion")
        if v is None:
            return 0
        if v not in ("0", "1"):
            raise err_invalid("conferenceDataVersion")
        return int(v)

    def _check_params(self, op, req):
        if not self.store.config["strict_params"]:
            return
        allowed = OP_PARAMS.get(op, set()) | STANDARD_PARAMS
        for name in req.query:
            if name not in allowed:
                raise ApiError(400, "invalidParameter", f"Invalid parameter: {name}",
                               location=name, location_type="parameter")

    # -- parameter parsing -------------------------------------------------------

    @staticmethod
    def _bool(req, name):
        v = req.one(name)
        if v is None:
            return False
        if v.lower() in ("true", "1"):
            return True
        if v.lower() in ("false", "0"):
            return False
        raise err_invalid(name, f"Invalid boolean value: '{v}'")

    @staticmethod
    def _time(req, name):
        v = req.one(name)
        if v is None:
            return None
        try:
            return parse_rfc3339(v)
        except ValueError:
            raise err_bad_request(location=name) from None

    def _list_query(self, req, instances=False):
        lq = ListQuery()
        lq.show_deleted = self._bool(req, "showDeleted")
        lq.single = True if instances else self._bool(req, "singleEvents")
        mr = req.one("maxResults")
        if mr is not None:
            try:
                lq.max_results = int(mr)
            except ValueError:
                raise err_invalid("maxResults") from None
            if lq.max_results < 1:
                raise err_invalid("maxResults")
            lq.max_results = min(lq.max_results, 2500)
        lq.page_token = req.one("pageToken")
        lq.time_min = self._time(req, "timeMin")
        lq.time_max = self._time(req, "timeMax")
        if lq.time_min and lq.time_max and lq.time_min >= lq.time_max:
            raise ApiError(400, "timeRangeEmpty", "The specified time range is empty.",
                           domain="calendar", location="timeMax", location_type="parameter")
        tz = req.one("timeZone")
        if tz is not None:
            try:
                get_zone(tz)
            except ValueError:
                raise err_invalid("timeZone") from None
            lq.out_tz = tz
        if instances:
            v = req.one("originalStart")
            if v is not None:
                try:
                    lq.original_start = parse_rfc3339(v)
                except ValueError:
                    raise err_invalid("originalStart") from None
            return lq
        lq.sync_token = req.one("syncToken")
        lq.updated_min = self._time(req, "updatedMin")
        ob = req.one("orderBy")
        if ob is not None:
            if ob not in ("startTime", "updated"):
                raise err_invalid("orderBy")
            if ob == "startTime" and not lq.single:
                raise err_bad_request("The requested ordering is not available for the particular query.")
            lq.order_by = ob
        for name, target in (("privateExtendedProperty", lq.private),
                             ("sharedExtendedProperty", lq.shared)):
            for v in req.query.get(name, []):
                k, sep, val = v.partition("=")
                if not sep or not k:
                    raise err_invalid(name)
                target.append((k, val))
        lq.q = req.one("q")
        lq.ical_uid = req.one("iCalUID")
        if lq.sync_token is not None:
            for name in SYNC_REFUSED:
                if name in req.query:
                    raise err_bad_request(
                        f"Invalid combination of parameters: syncToken and {name}",
                        reason="invalid", location=name)
        return lq

    # -- handlers ---------------------------------------------------------------

    def events_list(self, req, cal):
        lq = self._list_query(req)
        with self.store.lock:
            c = self.store.calendar(cal)
            return Response(200, self.store.list_events(c, lq))

    def events_instances(self, req, cal, eid):
        lq = self._list_query(req, instances=True)
        with self.store.lock:
            c = self.store.calendar(cal)
            return Response(200, self.store.list_events(c, lq, master_id=eid))

    def events_get(self, req, cal, eid):
        tz = req.one("timeZone")
        with self.store.lock:
            c = self.store.calendar(cal)
            if tz is not None:
                try:
                    get_zone(tz)
                except ValueError:
                    raise err_invalid("timeZone") from None
            res = self.store.get(c, eid)
            inm = req.headers.get("If-None-Match")
            if inm is not None and res["etag"] in [v.strip() for v in inm.split(",")]:
                return Response(304)
            return Response(200, render_full(res, tz or c.time_zone))

    def events_insert(self, req, cal):
        body = req.json_body()
        conf = self._conf_version(req)
        with self.store.lock:
            c = self.store.calendar(cal)
            ev = self.store.insert(c, body, conf_version=conf)
            return Response(200, render_full(ev.res, c.time_zone))

    def _modify(self, req, cal, eid, replace):
        body = req.json_body()
        conf = self._conf_version(req)
        with self.store.lock:
            c = self.store.calendar(cal)
            ev = self.store.modify(c, eid, body, replace=replace, if_match=req.headers.get("If-Match"),
                                   conf_version=conf)
            return Response(200, render_full(ev.res, c.time_zone))

    def events_patch(self, req, cal, eid):
        return self._modify(req, cal, eid, False)

    def events_update(self, req, cal, eid):
        return self._modify(req, cal, eid, True)

    def events_delete(self, req, cal, eid):
        with self.store.lock:
            c = self.store.calendar(cal)
            self.store.delete(c, eid, if_match=req.headers.get("If-Match"))
            return Response(204)

    def events_move(self, req, cal, eid):
        dest = req.one("destination")
        if not dest:
            raise err_required("Required parameter: destination", location="destination")
        with self.store.lock:
            c = self.store.calendar(cal)
            d = self.store.calendar(dest)
            ev = self.store.move(c, eid, d)
            return Response(200, render_full(ev.res, d.time_zone))

    def events_watch(self, req, cal):
        body = req.json_body()
        # watch accepts the list parameters and checks a syncToken like
        # list does (fixtures error-400-*/error-410-* came from watch)
        lq = self._list_query(req)
        with self.store.lock:
            c = self.store.calendar(cal)
            if lq.sync_token is not None:
                self.store._check_sync_token(c, lq.sync_token)
            ch = self.store.watch(c, body, cal, self.app.base_url)
            out = {"kind": "api#channel", "id": ch.id, "resourceId": ch.resource_id,
                   "resourceUri": ch.resource_uri}
            if ch.token is not None:
                out["token"] = ch.token
            out["expiration"] = str(ch.expiration_ms)
        resp = Response(200, out)

        def first_message(ch=ch):
            with self.store.lock:
                if ch.is_live():
                    self.app.notifier.send(ch, "sync")
                    self.store.save()
        resp.after.append(first_message)
        return resp

    def channels_stop(self, req):
        body = req.json_body()
        with self.store.lock:
            self.store.stop_channel(body)
        return Response(204)

    def _calendar_resource(self, c):
        return {"kind": "calendar#calendar",
                "etag": '"' + hashlib.sha1(c.id.encode()).hexdigest()[:16] + '"',
                "id": c.id, "summary": c.summary, "timeZone": c.time_zone}

    def calendars_get(self, req, cal):
        with self.store.lock:
            return Response(200, self._calendar_resource(self.store.calendar(cal)))

    def _list_entry(self, c):
        entry = dict(self._calendar_resource(c), kind="calendar#calendarListEntry",
                     accessRole="owner", defaultReminders=[])
        if c.id == self.store.config["primary_id"]:
            entry["primary"] = True
        return entry

    def calendar_list(self, req):
        with self.store.lock:
            self.store.calendar("primary")
            items = [self._list_entry(c) for c in self.store.calendars.values()]
        return Response(200, {"kind": "calendar#calendarList", "etag": '"p3fake"',
                              "items": items})

    def calendar_list_get(self, req, cal):
        with self.store.lock:
            return Response(200, self._list_entry(self.store.calendar(cal)))


class TokenEndpoint:
    """OAuth 2.0 token endpoint (refresh_token grant only)."""

    def __init__(self, app):
        self.app = app
        self.store = app.store

    @staticmethod
    def _oauth_error(status, error, description):
        return Response(status, {"error": error, "error_description": description},
                        headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _fault_error(self, rule):
        status = rule["status"]
        error = rule["reason"] or ("invalid_grant" if status == 400 else
                                   "invalid_client" if status == 401 else
                                   "rate_limit_exceeded" if status == 429 else
                                   "temporarily_unavailable" if status == 503 else "server_error")
        return self._oauth_error(status, error, rule["message"] or "Fault injected by fake_google")

    def handle(self, req, rec):
        rec["op"] = "token"
        if req.method != "POST":
            return self._oauth_error(405, "invalid_request", "Method not allowed")
        return self.app.run_with_faults(req, rec, "token", False, lambda: self._grant(req),
                                        self._fault_error)

    def _grant(self, req):
        ctype = (req.headers.get("Content-Type") or "").lower()
        try:
            text = req.body.decode("utf-8")
            if "json" in ctype:
                form = json.loads(text or "{}")
                if not isinstance(form, dict):
                    raise ValueError
                form = {k: str(v) for k, v in form.items()}
            else:
                form = {k: v[0] for k, v in urllib.parse.parse_qs(text, keep_blank_values=True).items()}
        except (ValueError, UnicodeDecodeError):
            return self._oauth_error(400, "invalid_request", "Bad Request")
        grant = form.get("grant_type")
        if grant is None:
            return self._oauth_error(400, "invalid_request", "Missing required parameter: grant_type")
        if grant != "refresh_token":
            return self._oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant}")
        rt = form.get("refresh_token")
        if not rt:
            return self._oauth_error(400, "invalid_request", "Missing required parameter: refresh_token")
        cfg = self.store.config
        if cfg["client_id"] is not None and form.get("client_id") != cfg["client_id"]:
            return self._oauth_error(401, "invalid_client", "The OAuth client was not found.")
        if cfg["client_secret"] is not None and form.get("client_secret") != cfg["client_secret"]:
            return self._oauth_error(401, "invalid_client", "Unauthorized")
        with self.store.lock:
            if rt in self.store.revoked:
                # fixture error-invalid-grant.json
                return self._oauth_error(400, "invalid_grant", "Bad Request")
            tok, ttl = self.store.mint_access_token(rt)
        return Response(200, {"access_token": tok, "expires_in": ttl,
                              "scope": "https://www.googleapis.com/auth/calendar",
                              "token_type": "Bearer"},
                        headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def make_wrong_types(resp):
    """Same response with fields of the wrong JSON type."""
    body = resp.body
    if resp.status == 204 or not isinstance(body, dict):
        return 200, ["unexpected", "array"]
    b = copy.deepcopy(body)
    if "items" in b:
        b["items"] = "this should have been a list"
        for k in ("nextSyncToken", "nextPageToken"):
            if k in b:
                b[k] = 12345
    elif "error" in b:
        b["error"] = "this should have been an object"
    else:
        for k, v in (("id", 12345), ("etag", 12345), ("start", "tomorrow"),
                     ("end", ["not", "an", "object"]), ("status", False),
                     ("expiration", 1700000000000), ("access_token", 42),
                     ("expires_in", "soon"), ("resourceId", None)):
            if k in b:
                b[k] = v
    return resp.status, b


HTML_ERROR_PAGE = (
    "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n"
    "  <title>Error 502 (Server Error)!!1</title>\n"
    "  <p><b>502.</b> <ins>That's an error.</ins>\n"
    "  <p>The server encountered a temporary error and could not complete your request."
    "<p>Please try again in 30 seconds.  <ins>That's all we know.</ins>\n")


class ControlApi:
    """JSON control API under /_control (documented in
    docs/internals/fake-google.md). Not authenticated, not logged, never
    subject to faults."""

    def __init__(self, app):
        self.app = app
        self.store = app.store
        r = self.router = Router()
        r.add("GET", "health", self.health, None)
        r.add("POST", "reset", self.reset, None)
        r.add("GET", "config", self.config_get, None)
        r.add("POST", "config", self.config_set, None)
        r.add("POST", "max_ttl", self.max_ttl, None)
        r.add("GET", "calendars", self.calendars_list, None)
        r.add("POST", "calendars", self.calendars_put, None)
        r.add("GET", "events/{cal}", self.events_dump, None)
        r.add("POST", "events/{cal}", self.events_host, None)
        r.add("GET", "events/{cal}/{eid}", self.event_dump, None)
        r.add("POST", "events/{cal}/bulk", self.events_host_bulk, None)
        r.add("POST", "events/{cal}/inject", self.events_inject, None)
        r.add("GET", "read_only", self.read_only_list, None)
        r.add("POST", "read_only", self.read_only_set, None)
        r.add("DELETE", "read_only", self.read_only_clear, None)
        r.add("GET", "rate_limit", self.rate_limit_list, None)
        r.add("POST", "rate_limit", self.rate_limit_set, None)
        r.add("DELETE", "rate_limit", self.rate_limit_clear, None)
        r.add("GET", "usage", self.usage_get, None)
        r.add("DELETE", "usage", self.usage_clear, None)
        r.add("GET", "faults", self.faults_list, None)
        r.add("POST", "faults", self.faults_add, None)
        r.add("DELETE", "faults", self.faults_clear, None)
        r.add("GET", "notification_faults", self.nfaults_list, None)
        r.add("POST", "notification_faults", self.nfaults_add, None)
        r.add("DELETE", "notification_faults", self.nfaults_clear, None)
        r.add("POST", "invalidate_sync_tokens", self.invalidate_sync_tokens, None)
        r.add("POST", "expire_access_tokens", self.expire_access_tokens, None)
        r.add("POST", "revoke", self.revoke, None)
        r.add("POST", "unrevoke", self.unrevoke, None)
        r.add("GET", "tokens", self.tokens_list, None)
        r.add("POST", "tokens", self.tokens_mint, None)
        r.add("GET", "requests", self.requests_list, None)
        r.add("DELETE", "requests", self.requests_clear, None)
        r.add("GET", "notifications", self.notifications_list, None)
        r.add("DELETE", "notifications", self.notifications_clear, None)
        r.add("POST", "notifications/drain", self.notifications_drain, None)
        r.add("GET", "channels", self.channels_list, None)
        r.add("POST", "channels/expire", self.channels_expire, None)
        r.add("POST", "notify", self.notify, None)

    def handle(self, req):
        handler, params, _ = self.router.match(req.method, req.segs[1:])
        try:
            if handler is None:
                if params:
                    raise ControlError(405, f"method {req.method} not allowed on {req.path}")
                raise ControlError(404, f"no control endpoint {req.path}")
            return handler(req, **params)
        except ControlError as e:
            return Response(e.status, {"error": e.message})
        except ApiError as e:
            return Response(e.code, {"error": e.message, "google_error": e.body()})

    # -- helpers ---------------------------------------------------------------

    @staticmethod
    def _body(req):
        if not req.body.strip():
            return {}
        try:
            body = json.loads(req.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise ControlError(400, "body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ControlError(400, "body must be a JSON object")
        return body

    @staticmethod
    def _qint(req, name, default=None):
        v = req.query.get(name)
        if not v:
            return default
        try:
            return int(v[0])
        except ValueError:
            raise ControlError(400, f"{name} must be an integer") from None

    @staticmethod
    def _qstr(req, name):
        v = req.query.get(name)
        return v[0] if v else None

    def _channel_json(self, ch):
        live = ch.is_live()
        return {"id": ch.id, "resource_id": ch.resource_id, "resource_uri": ch.resource_uri,
                "calendar": ch.calendar, "address": ch.address, "token": ch.token,
                "expiration": str(ch.expiration_ms),
                "granted_ttl": (ch.expiration_ms - ch.created_ms) // 1000,
                "requested_ttl": ch.requested_ttl,
                "state": "live" if live else ch.state, "message_number": ch.message_number}

    # -- general -----------------------------------------------------------------

    def health(self, req):
        return Response(200, {"ok": True, "base_url": self.app.base_url})

    def reset(self, req):
        body = self._body(req)
        self.app.faults.clear()
        self.app.quota.clear()
        self.app.notifier.clear_rules()
        self.app.notifier.drain(2.0)
        self.store.reset(keep_config=bool(body.get("keep_config", False)))
        self.app.requests.clear()
        self.app.notifier.clear_log()
        return Response(200, {"ok": True})

    CONFIG_TYPES = {
        "access_token_ttl": "int", "accept_unknown_access_tokens": "bool",
        "client_id": "str?", "client_secret": "str?", "max_ttl": "int", "default_ttl": "int",
        "notification_timeout": "num", "sync_token_max_age": "int?",
        "default_time_zone": "zone", "primary_id": "str", "auto_create_calendars": "bool",
        "expand_days": "int", "max_instances": "int", "resend_series_on_change": "bool",
        "strict_params": "bool", "log_limit": "int", "conference_status": "confstatus",
    }

    def config_get(self, req):
        with self.store.lock:
            return Response(200, dict(self.store.config))

    def config_set(self, req):
        body = self._body(req)
        for k, v in body.items():
            kind = self.CONFIG_TYPES.get(k)
            if kind is None:
                raise ControlError(400, f"unknown config key {k!r}")
            if kind.endswith("?") and v is None:
                continue
            base = kind.rstrip("?")
            ok = {"int": isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                  "num": isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
                  "bool": isinstance(v, bool),
                  "str": isinstance(v, str) and v != "",
                  "zone": isinstance(v, str),
                  "confstatus": v in ("success", "pending")}[base]
            if base == "zone" and ok:
                try:
                    get_zone(v)
                except ValueError:
                    ok = False
            if not ok:
                raise ControlError(400, f"bad value for {k}: {v!r}")
        with self.store.lock:
            self.store.config.update(body)
            self.store.save()
            return Response(200, dict(self.store.config))

    def max_ttl(self, req):
        body = self._body(req)
        v = body.get("max_ttl")
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ControlError(400, "max_ttl must be a positive integer (seconds)")
        with self.store.lock:
            self.store.config["max_ttl"] = v
            self.store.save()
        return Response(200, {"max_ttl": v})

    # -- calendars and events ------------------------------------------------------

    def _cal_json(self, c):
        return {"id": c.id, "timeZone": c.time_zone, "summary": c.summary,
                "updated": c.updated, "epoch": c.epoch,
                "resource_id": self.store.resource_id(c.id), "events": len(c.events)}

    def calendars_list(self, req):
        with self.store.lock:
            return Response(200, {"calendars": [self._cal_json(c) for c in self.store.calendars.values()]})

    def calendars_put(self, req):
        body = self._body(req)
        cid = body.get("id")
        if not isinstance(cid, str) or not cid:
            raise ControlError(400, "id is required")
        tz = body.get("timeZone")
        if tz is not None:
            try:
                get_zone(tz)
            except ValueError:
                raise ControlError(400, f"unknown time zone {tz!r}") from None
        summary = body.get("summary")
        if summary is not None and not isinstance(summary, str):
            raise ControlError(400, "summary must be a string")
        with self.store.lock:
            c = self.store.calendar(cid, create=True)
            if tz is not None:
                c.time_zone = tz
            if summary is not None:
                c.summary = summary
            self.store.save()
            return Response(200, self._cal_json(c))

    def _dump_zone(self, req, c):
        tz = self._qstr(req, "timeZone") or c.time_zone
        try:
            get_zone(tz)
        except ValueError:
            raise ControlError(400, f"unknown time zone {tz!r}") from None
        return tz

    def events_dump(self, req, cal):
        with self.store.lock:
            c = self.store.calendar(cal, create=True)
            tz = self._dump_zone(req, c)
            events = sorted(c.events.values(), key=lambda e: (e.seq, e.id))
            return Response(200, {"calendar": self._cal_json(c), "rev": self.store.rev,
                                  "events": [{"seq": e.seq, "rev": e.rev,
                                              "event": render_full(e.res, tz)} for e in events]})

    def event_dump(self, req, cal, eid):
        with self.store.lock:
            c = self.store.calendar(cal, create=True)
            tz = self._dump_zone(req, c)
            target = self.store.resolve(c, eid)
            if target is None:
                raise ControlError(404, f"no event {eid!r}")
            kind, ev, key = target
            res = ev.res if kind == "event" else self.store.instance_resource(c, ev, key)
            return Response(200, {"stored": kind == "event", "event": render_full(res, tz)})

    @staticmethod
    def _time_arg(v, name):
        if isinstance(v, dict):
            return v
        if isinstance(v, str):
            return {"date": v} if re.fullmatch(r"\d{4}-\d{2}-\d{2}", v) else {"dateTime": v}
        raise ControlError(400, f"{name} must be an RFC 3339 string, a date or an object")

    def _target_id(self, c, body):
        if body.get("id") is not None:
            if not isinstance(body["id"], str):
                raise ControlError(400, "id must be a string")
            return body["id"]
        series, orig = body.get("series"), body.get("original_start")
        if isinstance(series, str) and isinstance(orig, str):
            try:
                return self.store.occurrence_id(c, series, orig)
            except ValueError:
                raise ControlError(400, f"bad original_start {orig!r}") from None
        raise ControlError(400, "give id, or series and original_start")

    HOST_OPS = ("create", "patch", "update", "move", "retitle", "delete", "truncate", "split",
                "move_calendar", "respond")

    def events_host(self, req, cal):
        """Edits made "by the host" in the Google UI: same code paths as the
        API, so they bump etags and send notifications alike."""
        body = self._body(req)
        with self.store.lock:
            c = self.store.calendar(cal, create=True)
            ev = self._host_op(c, body)
            if body.get("op") == "move_calendar":
                c = self.store.calendar(body["destination"])
            return Response(200, {"event": render_full(ev.res, c.time_zone)})

    INJECT_PRESETS = ("missing_id", "broken_start", "start_not_object")

    def _preset_item(self, preset):
        """A listing item Google could plausibly send broken: a timed event
        an hour from now with one thing wrong."""
        now = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
        etag = f'"{int(time.time() * 1000) * 2000}"'
        item = {"kind": "calendar#event", "etag": etag, "id": "inj" + new_event_id()[:20],
                "status": "confirmed", "summary": f"injected {preset}",
                "start": {"dateTime": fmt_utc(now)},
                "end": {"dateTime": fmt_utc(now + timedelta(hours=1))}}
        if preset == "missing_id":
            del item["id"]
        elif preset == "broken_start":
            item["start"] = {"dateTime": "not-a-time"}
        else:
            item["start"] = fmt_utc(now)
        return item

    def events_inject(self, req, cal):
        """{"item": <any JSON object>} or {"preset": "missing_id" |
        "broken_start" | "start_not_object"}: a malformed item in the
        calendar's listings (see Store.inject)."""
        body = self._body(req)
        item, preset = body.get("item"), body.get("preset")
        if (item is None) == (preset is None):
            raise ControlError(400, "give item or preset")
        if preset is not None:
            if preset not in self.INJECT_PRESETS:
                raise ControlError(400, f"preset must be one of {list(self.INJECT_PRESETS)}")
            item = self._preset_item(preset)
        elif not isinstance(item, dict):
            raise ControlError(400, "item must be a JSON object")
        with self.store.lock:
            c = self.store.calendar(cal, create=True)
            self.store.inject(c, item)
        return Response(200, {"item": item})

    # -- usage limits ------------------------------------------------------------

    def read_only_list(self, req):
        return Response(200, {"read_only": self.app.quota.list_read_only()})

    def read_only_set(self, req):
        body = self._body(req)
        seconds = body.get("seconds")
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 < seconds <= 86400:
            raise ControlError(400, "seconds must be a number in (0, 86400]")
        reason = body.get("reason", "quotaExceeded")
        if reason not in USAGE_REASONS:
            raise ControlError(400, f"reason must be one of {list(USAGE_REASONS)}")
        cal = body.get("calendar")
        if cal is not None and not isinstance(cal, str):
            raise ControlError(400, "calendar must be a string")
        retry_after = body.get("retry_after", False)
        if not isinstance(retry_after, bool):
            raise ControlError(400, "retry_after must be a boolean")
        cal_id = self.store.canonical_id(cal) if cal else None
        until = self.app.quota.set_read_only(cal_id, seconds, reason, retry_after)
        return Response(200, {"calendar": cal_id, "reason": reason,
                              "until": fmt_millis(datetime.fromtimestamp(until, UTC))})

    def read_only_clear(self, req):
        with self.app.quota.lock:
            self.app.quota.read_only.clear()
        return Response(200, {"ok": True})

    def rate_limit_list(self, req):
        return Response(200, {"rate_limits": self.app.quota.list_limits()})

    def rate_limit_set(self, req):
        body = self._body(req)
        unknown = set(body) - {"per_minute", "refresh_token", "status", "reason", "retry_after"}
        if unknown:
            raise ControlError(400, f"unknown keys {sorted(unknown)}")
        pm = body.get("per_minute")
        if pm is not None and (not isinstance(pm, int) or isinstance(pm, bool) or pm < 1):
            raise ControlError(400, "per_minute must be a positive integer, or null to lift the limit")
        status = body.get("status", 403)
        if status not in (403, 429):
            raise ControlError(400, "status must be 403 or 429")
        reason = body.get("reason", "rateLimitExceeded")
        if reason not in ("rateLimitExceeded", "userRateLimitExceeded"):
            raise ControlError(400, "reason must be rateLimitExceeded or userRateLimitExceeded")
        rt = body.get("refresh_token")
        if rt is not None and not isinstance(rt, str):
            raise ControlError(400, "refresh_token must be a string")
        retry_after = body.get("retry_after", False)
        if not isinstance(retry_after, bool):
            raise ControlError(400, "retry_after must be a boolean")
        spec = None if pm is None else {"per_minute": pm, "status": status, "reason": reason,
                                        "retry_after": retry_after}
        self.app.quota.set_limit(rt, spec)
        return Response(200, {"rate_limits": self.app.quota.list_limits()})

    def rate_limit_clear(self, req):
        with self.app.quota.lock:
            self.app.quota.limits.clear()
            self.app.quota.windows.clear()
        return Response(200, {"ok": True})

    def usage_get(self, req):
        return Response(200, {"credentials": self.app.quota.report(self._qstr(req, "credential"))})

    def usage_clear(self, req):
        with self.app.quota.lock:
            self.app.quota.usage.clear()
        return Response(200, {"ok": True})

    def events_host_bulk(self, req, cal):
        """Many host edits in one call ({"ops": [op, ...]}, each as for
        POST events/{cal}), applied in order under one lock; one
        notification for the lot, as after a quick series of UI edits.
        Stops at the first bad op (those before it stay applied)."""
        body = self._body(req)
        ops = body.get("ops")
        if not isinstance(ops, list) or not all(isinstance(o, dict) for o in ops):
            raise ControlError(400, "ops must be a list of objects")
        out = []
        with self.store.lock:
            c = self.store.calendar(cal, create=True)
            notifier, self.store.notifier = self.store.notifier, None
            others = {}   # destinations of move_calendar ops: notified too
            try:
                for op in ops:
                    ev = self._host_op(c, op)
                    if op.get("op") == "move_calendar":
                        d = self.store.calendar(op["destination"])
                        others[d.id] = d
                        out.append(render_full(ev.res, d.time_zone))
                    else:
                        out.append(render_full(ev.res, c.time_zone))
            finally:
                self.store.notifier = notifier
            if out:
                self.store._committed(c)
                for d in others.values():
                    if d is not c:
                        self.store._committed(d)
        return Response(200, {"events": out})

    def _host_op(self, c, body):
        """One host edit on calendar c (store lock held); the event after it."""
        op = body.get("op", "create")
        if op not in self.HOST_OPS:
            raise ControlError(400, f"op must be one of {list(self.HOST_OPS)}")
        event = body.get("event")
        if event is not None and not isinstance(event, dict):
            raise ControlError(400, "event must be an object")
        if_match = body.get("if_match")
        if op == "create":
            if event is None:
                raise ControlError(400, "create needs event")
            ev = self.store.insert(c, event, host=True)
        elif op == "move_calendar":
            dest = body.get("destination")
            if not isinstance(dest, str) or not dest:
                raise ControlError(400, "move_calendar needs destination (a calendar id)")
            if not isinstance(body.get("id"), str):
                raise ControlError(400, "move_calendar needs id")
            ev = self.store.move(c, body["id"], self.store.calendar(dest, create=True))
        else:
            eid = self._target_id(c, body)
            if op in ("patch", "update"):
                if event is None:
                    raise ControlError(400, f"{op} needs event")
                ev = self.store.modify(c, eid, event, replace=(op == "update"), if_match=if_match)
            elif op == "move":
                patch = {}
                for name in ("start", "end"):
                    if body.get(name) is not None:
                        patch[name] = self._time_arg(body[name], name)
                if not patch:
                    raise ControlError(400, "move needs start and/or end")
                if "start" in patch and "end" not in patch or "end" in patch and "start" not in patch:
                    # keep the duration: shift the other end by the same amount
                    cur = self.store.get(c, eid)
                    s0, e0 = self.store._span(c, cur)
                    if "start" in patch:
                        ns = self.store._point(c, canon_time(patch["start"], "start"))
                        patch["end"] = self._shifted(cur["end"], e0 + (ns - s0), c)
                    else:
                        ne = self.store._point(c, canon_time(patch["end"], "end"))
                        patch["start"] = self._shifted(cur["start"], s0 + (ne - e0), c)
                ev = self.store.modify(c, eid, patch, if_match=if_match)
            elif op == "retitle":
                if not isinstance(body.get("summary"), str):
                    raise ControlError(400, "retitle needs summary")
                ev = self.store.modify(c, eid, {"summary": body["summary"]}, if_match=if_match)
            elif op == "delete":
                ev = self.store.delete(c, eid, if_match=if_match)
            elif op == "respond":
                ev = self.store.respond(c, eid, body.get("email"), body.get("response"),
                                        body.get("comment"))
            elif op == "truncate":
                ev = self.store.truncate(c, eid)
            else:
                new_id = body.get("new_id")
                if new_id is not None and (not isinstance(new_id, str) or
                                           not re.fullmatch(r"[A-Za-z0-9_.\-]{1,1024}", new_id)):
                    raise ControlError(400, "bad new_id")
                ev = self.store.split(c, eid, event or {}, new_id=new_id)
        return ev

    @staticmethod
    def _shifted(t, instant, c):
        if "date" in t:
            return {"date": instant.astimezone(get_zone(c.time_zone)).date().isoformat()}
        out = {"dateTime": fmt_utc(instant)}
        if "timeZone" in t:
            out["timeZone"] = t["timeZone"]
        return out

    # -- faults ----------------------------------------------------------------------

    def faults_list(self, req):
        return Response(200, {"faults": self.app.faults.list()})

    def faults_add(self, req):
        return Response(200, self.app.faults.add(self._body(req)))

    def faults_clear(self, req):
        self.app.faults.clear()
        return Response(200, {"ok": True})

    def nfaults_list(self, req):
        return Response(200, {"faults": self.app.notifier.list_rules()})

    def nfaults_add(self, req):
        return Response(200, self.app.notifier.add_rule(self._body(req)))

    def nfaults_clear(self, req):
        self.app.notifier.clear_rules()
        return Response(200, {"ok": True})

    # -- tokens -------------------------------------------------------------------------

    def invalidate_sync_tokens(self, req):
        body = self._body(req)
        with self.store.lock:
            if body.get("calendar") is not None:
                cals = [self.store.calendar(body["calendar"], create=True)]
            else:
                cals = list(self.store.calendars.values())
            for c in cals:
                c.epoch += 1
            self.store.save()
            return Response(200, {"invalidated": [c.id for c in cals]})

    def expire_access_tokens(self, req):
        with self.store.lock:
            self.store.expire_access_tokens()
            return Response(200, {"expired": len(self.store.access_tokens)})

    def _refresh_token_arg(self, req):
        rt = self._body(req).get("refresh_token")
        if not isinstance(rt, str) or not rt:
            raise ControlError(400, "refresh_token is required")
        return rt

    def revoke(self, req):
        rt = self._refresh_token_arg(req)
        with self.store.lock:
            self.store.revoke(rt)
        return Response(200, {"revoked": rt})

    def unrevoke(self, req):
        rt = self._refresh_token_arg(req)
        with self.store.lock:
            self.store.revoked.discard(rt)
            self.store.save()
        return Response(200, {"unrevoked": rt})

    def tokens_list(self, req):
        now = time.time()
        with self.store.lock:
            toks = [{"access_token": t, "refresh_token": i["refresh_token"],
                     "expires_at": fmt_millis(datetime.fromtimestamp(i["expires_at"], UTC)),
                     "valid": i["expires_at"] > now}
                    for t, i in self.store.access_tokens.items()]
            return Response(200, {"access_tokens": toks, "revoked": sorted(self.store.revoked)})

    def tokens_mint(self, req):
        body = self._body(req)
        rt = body.get("refresh_token", "control")
        if not isinstance(rt, str):
            raise ControlError(400, "refresh_token must be a string")
        ttl = _int_field(body, "expires_in", None, lo=0)
        with self.store.lock:
            tok, ttl = self.store.mint_access_token(rt, ttl)
            exp = datetime.fromtimestamp(self.store.access_tokens[tok]["expires_at"], UTC)
        return Response(200, {"access_token": tok, "expires_in": ttl,
                              "expires_at": exp.strftime("%Y-%m-%dT%H:%M:%SZ"),
                              "refresh_token": rt})

    # -- logs ----------------------------------------------------------------------------

    def requests_list(self, req):
        path = self._qstr(req, "path")
        if path:
            try:
                re.compile(path)
            except re.error as exc:
                raise ControlError(400, f"bad path regex: {exc}") from None
        items = self.app.requests.query(
            since=self._qint(req, "since", 0), op=self._qstr(req, "op"),
            method=self._qstr(req, "method"), path=path,
            calendar=self.store.canonical_id(self._qstr(req, "calendar")) if self._qstr(req, "calendar") else None,
            status=self._qint(req, "status"))
        return Response(200, {"requests": items, "count": len(items)})

    def requests_clear(self, req):
        self.app.requests.clear()
        return Response(200, {"ok": True})

    def notifications_list(self, req):
        since = self._qint(req, "since", 0)
        channel_id = self._qstr(req, "channel_id")
        calendar = self._qstr(req, "calendar")
        if calendar:
            calendar = self.store.canonical_id(calendar)
        want = self._qint(req, "wait_count")
        deadline = time.monotonic() + min(self._qint(req, "timeout_ms", 5000), 60000) / 1000
        while True:
            recs = self.app.notifier.records(since, channel_id, calendar)
            settled = [r for r in recs if r["status"] != "pending"]
            if want is None or len(settled) >= want or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        return Response(200, {"notifications": recs, "count": len(recs)})

    def notifications_clear(self, req):
        self.app.notifier.clear_log()
        return Response(200, {"ok": True})

    def notifications_drain(self, req):
        body = self._body(req)
        timeout = _int_field(body, "timeout_ms", 5000, lo=0, hi=600000)
        ok = self.app.notifier.drain(timeout / 1000)
        return Response(200 if ok else 504, {"drained": ok})

    # -- channels ------------------------------------------------------------------------

    def channels_list(self, req):
        with self.store.lock:
            return Response(200, {"channels": [self._channel_json(ch) for ch in self.store.channels.values()]})

    def channels_expire(self, req):
        cid = self._body(req).get("id")
        with self.store.lock:
            ch = self.store.channels.get(cid)
            if ch is None:
                raise ControlError(404, f"no channel {cid!r}")
            ch.expiration_ms = min(ch.expiration_ms, int(time.time() * 1000))
            ch.is_live()
            self.store.save()
            return Response(200, self._channel_json(ch))

    def notify(self, req):
        body = self._body(req)
        cal = body.get("calendar")
        state = body.get("state", "exists")
        if not isinstance(cal, str) or not cal:
            raise ControlError(400, "calendar is required")
        if state not in ("exists", "sync", "not_exists"):
            raise ControlError(400, "state must be exists, sync or not_exists")
        with self.store.lock:
            cid = self.store.canonical_id(cal)
            chans = self.store.live_channels(cid)
            for ch in chans:
                self.app.notifier.send(ch, state)
            self.store.save()
        return Response(200, {"sent": [ch.id for ch in chans]})


class BodyTooLarge(Exception):
    pass


class App:
    def __init__(self, state_file=None, verbose=False):
        self.verbose = verbose
        self.store = Store(state_file)
        self.notifier = Notifier(self.store, self.store.config["log_limit"])
        self.store.notifier = self.notifier
        self.faults = FaultInjector()
        self.quota = Quota()
        self.requests = RequestLog(self.store.config["log_limit"])
        self.base_url = "http://127.0.0.1"
        self.google = GoogleApi(self)
        self.token = TokenEndpoint(self)
        self.control = ControlApi(self)

    # -- fault application ---------------------------------------------------------

    @staticmethod
    def _exec(execute):
        try:
            return execute()
        except ApiError as e:
            return error_response(e)

    def run_with_faults(self, req, rec, op, is_api, execute, fault_error):
        rule = self.faults.take(op, req.method, req.path, is_api)
        if rule is None:
            return self._exec(execute)
        rec["fault"] = rule["id"]
        if rule["delay_ms"]:
            time.sleep(rule["delay_ms"] / 1000)
        mode = rule["mode"]
        if mode is None and rule["status"] is None:
            return self._exec(execute)           # a pure delay
        real = self._exec(execute) if rule["apply"] else None
        if mode is None:
            resp = fault_error(rule)
        elif mode == "disconnect":
            resp = Response(0)
            resp.disconnect = True
        else:
            base = real if real is not None else Response(200, {})
            status = rule["status"] or base.status
            if mode == "truncated_json":
                data = base.payload() or b'{"kind": "calendar#event", "id": "trunc'
                resp = Response(200 if status == 204 else status, raw=data[:max(1, len(data) // 2)])
            elif mode == "wrong_types":
                st, body = make_wrong_types(base)
                resp = Response(rule["status"] or st, body)
            elif mode == "html":
                resp = Response(200 if status == 204 else status, raw=HTML_ERROR_PAGE.encode(),
                                content_type="text/html; charset=UTF-8")
            else:  # empty_body
                resp = Response(status, raw=b"")
        if rule["retry_after"] is not None:
            resp.headers["Retry-After"] = str(rule["retry_after"])
        if real is not None:
            resp.after.extend(real.after)
        return resp

    # -- request entry point -----------------------------------------------------------

    @staticmethod
    def _logged_body(req):
        if not req.body:
            return None
        ctype = (req.headers.get("Content-Type") or "").lower()
        try:
            text = req.body.decode("utf-8")
        except UnicodeDecodeError:
            return {"_binary_bytes": len(req.body)}
        if "x-www-form-urlencoded" in ctype:
            return {k: v[0] if len(v) == 1 else v
                    for k, v in urllib.parse.parse_qs(text, keep_blank_values=True).items()}
        try:
            return json.loads(text)
        except ValueError:
            return text[:65536]

    def handle(self, h, method):
        t0 = time.monotonic()
        raw_path, _, raw_query = h.path.partition("?")
        too_large = False
        try:
            body = h.read_body()
        except BodyTooLarge:
            body, too_large = b"", True
        except ValueError:
            body = None
        req = Request(method, raw_path, raw_query, h.headers, body or b"")
        is_control = req.segs[:1] == ["_control"]
        rec = None
        if not is_control:
            rec = {"time": fmt_millis(datetime.now(UTC)), "method": method, "path": req.path,
                   "raw_path": raw_path, "query": req.query,
                   "headers": {k: h.headers[k] for k in LOGGED_HEADERS if h.headers.get(k) is not None},
                   "body": self._logged_body(req), "op": None, "calendar": None,
                   "event_id": None, "fault": None}
        if too_large:
            h.close_connection = True
            resp = Response(413, ApiError(413, "uploadTooLarge", "Request body too large (limit 1 MiB).").body())
        elif body is None:
            h.close_connection = True
            resp = error_response(err_bad_request("Malformed request body framing."))
        elif is_control:
            resp = self.control.handle(req)
        elif req.path == API_PREFIX or req.path.startswith(API_PREFIX + "/"):
            resp = self.google.handle(req, rec)
        elif req.path == TOKEN_PATH:
            resp = self.token.handle(req, rec)
        else:
            resp = error_response(err_not_found())
        if rec is not None:
            rec["status"] = None if resp.disconnect else resp.status
            rec["duration_ms"] = round((time.monotonic() - t0) * 1000, 1)
            self.requests.add(rec)
        h.send(resp, head_only=(method == "HEAD"))
        for fn in resp.after:
            try:
                fn()
            except Exception:
                traceback.print_exc()

    def close(self):
        self.notifier.drain(1.0)
        self.notifier.stop()
        with self.store.lock:
            self.store.save()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def version_string(self):
        return "ESF"  # what Google's front end calls itself (fixtures)

    def log_message(self, fmt, *args):
        if self.server.app.verbose:
            sys.stderr.write("fake_google: " + (fmt % args) + "\n")

    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    raise ValueError("truncated chunked body")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY:
                    raise BodyTooLarge()
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        cl = self.headers.get("Content-Length")
        if cl is None:
            return b""
        n = int(cl)  # ValueError -> 400
        if n < 0:
            raise ValueError("negative Content-Length")
        if n > MAX_BODY:
            if n <= DRAIN_LIMIT:
                # read and drop it, so the client gets to see the 413
                while n > 0:
                    got = self.rfile.read(min(n, 65536))
                    if not got:
                        break
                    n -= len(got)
            raise BodyTooLarge()
        return self.rfile.read(n)

    def send(self, resp, head_only=False):
        if resp.disconnect:
            self.close_connection = True
            return
        data = resp.payload()
        self.send_response(resp.status)
        bodiless = resp.status in (204, 304) or resp.status < 200
        if not bodiless:
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", resp.headers.pop("Cache-Control",
                                                           "no-cache, no-store, max-age=0, must-revalidate"))
        for k, v in resp.headers.items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not bodiless and not head_only:
            self.wfile.write(data)

    def _dispatch(self, method):
        try:
            self.server.app.handle(self, method)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            traceback.print_exc()
            self.close_connection = True
            try:
                self.send(error_response(ApiError(500, "backendError", "Backend Error")))
            except Exception:
                pass

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_HEAD(self):
        self._dispatch("HEAD")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


# ---------------------------------------------------------------------------
# Test helper: run the fake as a subprocess (importable by test code)
# ---------------------------------------------------------------------------

class FakeGoogle:
    """Runs tests/fake_google.py as a subprocess and talks to it.

        fg = FakeGoogle(state_file=None).start()
        fg.api_base, fg.token_url          # for calsync's google config
        fg.control("POST", "/faults", {"status": 503, "count": 2})
        fg.host("primary", op="create", event={...})
        fg.restart()                       # same port, state kept if state_file
        fg.stop()                          # SIGTERM; returns the exit status
    """

    def __init__(self, state_file=None, port=0, verbose=False):
        self.state_file = state_file
        self.port = port
        self.verbose = verbose
        self.proc = None

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self):
        return self.base_url + API_PREFIX

    @property
    def token_url(self):
        return self.base_url + TOKEN_PATH

    def start(self, timeout=10):
        import select
        import subprocess
        cmd = [sys.executable, os.path.abspath(__file__), "--port", str(self.port)]
        if self.state_file:
            cmd += ["--state-file", self.state_file]
        if self.verbose:
            cmd.append("--verbose")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError(f"fake_google did not start (output {line!r})")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                ch = os.read(self.proc.stdout.fileno(), 1)
                if not ch:
                    continue
                line += ch
        m = re.fullmatch(rb"PORT (\d+)\n", line)
        if not m:
            raise RuntimeError(f"unexpected first line {line!r}")
        self.port = int(m.group(1))
        return self

    def stop(self, timeout=10):
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except Exception:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc.stdout.close()
        self.proc = None
        return rc

    def restart(self):
        self.stop()
        return self.start()

    def request(self, method, path, body=None, headers=None, timeout=10):
        """(status, parsed JSON or text or None, headers dict lower-cased)."""
        import http.client
        hdrs = dict(headers or {})
        data = body
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            data = body.encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            r = conn.getresponse()
            raw = r.read()
            rh = {k.lower(): v for k, v in r.getheaders()}
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("utf-8", "replace")
        return r.status, parsed, rh

    def control(self, method, path, body=None):
        """Call /_control<path>; raises on a non-2xx answer. The timeout is
        generous: a control call is the test acting (a bulk edit of
        thousands of events while calsync syncs), not something measured,
        and a loaded machine must not fail it."""
        status, parsed, _ = self.request(method, CONTROL_PREFIX + path, body, timeout=120)
        if not 200 <= status < 300:
            raise RuntimeError(f"control {method} {path} -> {status}: {parsed}")
        return parsed

    def host(self, calendar, **op):
        """A host edit: host("primary", op="create", event={...})."""
        return self.control("POST", "/events/" + urllib.parse.quote(calendar, safe=""), op)["event"]

    def access_token(self, refresh_token="test-refresh-token", expires_in=None):
        body = {"refresh_token": refresh_token}
        if expires_in is not None:
            body["expires_in"] = expires_in
        return self.control("POST", "/tokens", body)["access_token"]

    def api(self, method, path, body=None, token=None, query=None, headers=None):
        """Call the Calendar API: api("GET", "/calendars/primary/events",
        query={"singleEvents": "true"}, token=tok)."""
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = "Bearer " + token
        url = API_PREFIX + path
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        return self.request(method, url, body, hdrs)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fake Google Calendar API v3 + OAuth token endpoint")
    ap.add_argument("--port", type=int, default=0, help="port to bind on 127.0.0.1 (0: any free port)")
    ap.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    ap.add_argument("--state-file", help="JSON file to load state from and save it to on every change")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = ap.parse_args(argv)
    try:
        app = App(args.state_file, verbose=args.verbose)
    except (OSError, ValueError, KeyError) as exc:
        print(f"fake_google: cannot load state file {args.state_file}: {exc}", file=sys.stderr)
        return 1
    server = Server((args.host, args.port), Handler)
    server.app = app
    port = server.server_address[1]
    app.base_url = f"http://{args.host}:{port}"

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"PORT {port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
