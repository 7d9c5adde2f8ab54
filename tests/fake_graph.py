#!/usr/bin/env python3
"""Fake Microsoft Graph (Outlook calendar) and Microsoft identity platform
token endpoint for calsync tests. Standard library only. Start it with

    python3 tests/fake_graph.py --port 0

It prints one line ``PORT <n>`` when it is ready and serves until SIGTERM or
SIGINT (exit 0). Graph is under ``/v1.0``, the token endpoint under
``/{tenant}/oauth2/v2.0/token``, and the JSON control API the tests use to
play the mailbox owner under ``/_control``. Which fixture or Microsoft
document each behaviour comes from, and what is simplified, is in
docs/internals/fake-graph.md.

Layout: utilities (time zones, times, ids, errors) -> recurrence
(patternedRecurrence expansion) -> Store (mailbox, events, subscriptions,
delta, one lock) -> Notifier (change and lifecycle notifications, with
retries and faults) -> FaultInjector -> HTTP layer (GraphApi, TokenEndpoint,
ControlApi, Handler) -> FakeGraph helper -> main().
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
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
import uuid
from collections import deque
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# time.sleep under libfaketime (the clock-moved run): see faketime_sleep.py
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faketime_sleep  # noqa: E402,F401

UTC = timezone.utc
API_PREFIX = "/v1.0"
CONTROL_PREFIX = "/_control"
TOKEN_RE = re.compile(r"^/([^/]+)/oauth2/v2\.0/token$")
MAX_BODY = 1 << 20

DEFAULT_CONFIG = {
    "access_token_ttl": 3599,          # expires_in (fixture token-refresh-response)
    # subscriptions
    "max_subscription_minutes": 10080,  # Outlook event cap, 2024 docs (4230 before)
    "expiry_policy": "reject",         # or "clamp": past the cap -> 400, or cut to the cap
    "validation_timeout": 10.0,        # s for the validation handshake
    "notification_timeout": 3.0,       # s for a 2xx to a notification
    "retry_delays": [1.0, 2.0],        # s between redeliveries (Graph: up to 4 h)
    "missed_on_drop": True,            # a dropped notification -> "missed" lifecycle
    "batch_ms": 50,                    # notifications due within this are batched
    # delta
    "delta_page_size": 10,             # without Prefer: odata.maxpagesize
    # events
    "if_match": True,                  # If-Match on PATCH/DELETE -> 412 on mismatch
    "transaction_id_mode": "return_existing",  # or "conflict" (409)
    "strict_query": True,              # unsupported query options -> 400
    "log_limit": 10000,
}

# ---------------------------------------------------------------------------
# Time zones and times
# ---------------------------------------------------------------------------

# Windows zone names Graph uses (fixtures: "Pacific Standard Time", "Eastern
# Standard Time") -> IANA. IANA names are accepted as they are.
WINDOWS_ZONES = {
    "UTC": "UTC", "Coordinated Universal Time": "UTC",
    "Pacific Standard Time": "America/Los_Angeles",
    "Mountain Standard Time": "America/Denver",
    "Central Standard Time": "America/Chicago",
    "Eastern Standard Time": "America/New_York",
    "GMT Standard Time": "Europe/London",
    "W. Europe Standard Time": "Europe/Berlin",
    "Romance Standard Time": "Europe/Paris",
    "Central Europe Standard Time": "Europe/Budapest",
    "India Standard Time": "Asia/Kolkata",
    "Tokyo Standard Time": "Asia/Tokyo",
    "AUS Eastern Standard Time": "Australia/Sydney",
}
_ZONES: dict[str, ZoneInfo] = {}


class GraphError(Exception):
    """An error answered in Graph's shape:
    {"error": {"code", "message", "innerError": {"date", "request-id",
    "client-request-id"}}} (fixture error-response-shape.json)."""

    def __init__(self, status, code, message, headers=None, body=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self._body = body

    def body(self):
        if self._body is not None:
            return self._body
        rid = str(uuid.uuid4())
        return {"error": {"code": self.code, "message": self.message,
                          "innerError": {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                                         "request-id": rid, "client-request-id": rid}}}


def bad_request(message, code="ErrorInvalidRequest"):
    return GraphError(400, code, message)


def not_found():
    # Outlook's answer for an unknown or deleted item
    return GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def throttled(retry_after="2.128"):
    """429 exactly as the fixture throttling-429-response.http shows it."""
    rid = str(uuid.uuid4())
    body = {"error": {"code": "TooManyRequests",
                      "innerError": {"code": "429",
                                     "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                                     "message": "Please retry after", "request-id": rid,
                                     "status": "429"},
                      "message": "Please retry again later."}}
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return GraphError(429, "TooManyRequests", "Please retry again later.", headers, body)


def get_zone(name):
    if not isinstance(name, str) or not name or len(name) > 64:
        raise ValueError(name)
    z = _ZONES.get(name)
    if z is None:
        try:
            z = ZoneInfo(WINDOWS_ZONES.get(name, name))
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(name) from None
        _ZONES[name] = z
    return z


def zone_or_400(name):
    try:
        return get_zone(name)
    except ValueError:
        raise GraphError(400, "TimeZoneNotSupportedException",
                         "A valid TimeZone value must be specified. The following TimeZone "
                         f"value is not supported: '{name}'.") from None


_LOCAL = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?(Z|[+-]\d{2}:\d{2})?$")


def parse_dtz(obj, field):
    """A dateTimeTimeZone {"dateTime": local, "timeZone": name} -> (aware UTC
    datetime, zone name). 400 as Graph for anything else."""
    if not isinstance(obj, dict) or not isinstance(obj.get("dateTime"), str):
        raise bad_request(f"{field} must be a dateTimeTimeZone object.", "ErrorInvalidParameter")
    tzname = obj.get("timeZone") or "UTC"
    z = zone_or_400(tzname)
    m = _LOCAL.match(obj["dateTime"])
    if not m:
        raise bad_request(f"Cannot convert the literal '{obj['dateTime']}' to the expected type "
                          "'Edm.DateTimeOffset'.", "BadRequest")
    y, mo, d, h, mi, s, frac, off = m.groups()
    try:
        naive = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s or 0))
    except ValueError:
        raise bad_request(f"Invalid {field} time.", "BadRequest") from None
    if off:
        t = datetime.fromisoformat(naive.isoformat() + ("+00:00" if off == "Z" else off))
    else:
        t = naive.replace(tzinfo=z)
    return t.astimezone(UTC), tzname


def parse_instant(text, name):
    """A query-string instant (startDateTime etc.): with an offset, or UTC."""
    m = _LOCAL.match(text or "")
    if not m:
        raise bad_request(f"The parameter '{name}' is not a valid date and time.",
                          "ErrorInvalidParameter")
    y, mo, d, h, mi, s, frac, off = m.groups()
    try:
        naive = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s or 0))
    except ValueError:
        raise bad_request(f"The parameter '{name}' is not a valid date and time.",
                          "ErrorInvalidParameter") from None
    if off and off != "Z":
        return datetime.fromisoformat(naive.isoformat() + off).astimezone(UTC)
    return naive.replace(tzinfo=UTC)


def fmt7(t):
    """Graph's timestamp: 7 fractional digits and Z."""
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}0Z"


def fmt7_offset(t):
    """subscriptionExpirationDateTime in notifications: +00:00 (fixtures)."""
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond:06d}0+00:00"


def fmt_local(t, tzname):
    """dateTimeTimeZone.dateTime: local wall clock, no offset, 7 digits."""
    loc = t.astimezone(get_zone(tzname))
    return loc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{loc.microsecond:06d}0"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode_token(payload):
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return b64url(hashlib.sha1(raw).digest()[:4] + raw)


def decode_token(text):
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        if hashlib.sha1(raw[4:]).digest()[:4] != raw[:4]:
            raise ValueError("checksum")
        p = json.loads(raw[4:].decode())
    except (ValueError, UnicodeDecodeError, TypeError) as exc:
        raise ValueError("bad token") from exc
    if not isinstance(p, dict):
        raise ValueError("bad token")
    return p


def new_item_id():
    # Exchange ids are long base64 strings ending in "=" (fixtures)
    return "AAMkAD" + base64.b64encode(os.urandom(33)).decode().replace("/", "-") + "="


def occurrence_id(master_id, key):
    return "AAMkOC" + b64url(f"{master_id}|{fmt7(key)}".encode())


def parse_occurrence_id(oid):
    if not oid.startswith("AAMkOC"):
        return None
    try:
        text = base64.urlsafe_b64decode(oid[6:] + "=" * (-len(oid[6:]) % 4)).decode()
        master, _, stamp = text.rpartition("|")
        return master, datetime.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except (ValueError, UnicodeDecodeError):
        return None


# ---------------------------------------------------------------------------
# Recurrence: patternedRecurrence (pattern + range), expanded on the wall
# clock of the recurrence time zone
# ---------------------------------------------------------------------------

DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
PATTERNS = ("daily", "weekly", "absoluteMonthly", "absoluteYearly")
RANGES = ("endDate", "noEnd", "numbered")
_MAX_SCAN = 100000


def normalize_recurrence(rec, start_utc, start_tz):
    """Validate a patternedRecurrence and fill in what Graph echoes back
    (fixture event-create-recurring-seriesmaster-response.http: month 0,
    dayOfMonth 0, firstDayOfWeek sunday, index first, recurrenceTimeZone,
    numberOfOccurrences 0)."""
    bad = bad_request("Invalid recurrence pattern.", "ErrorInvalidRecurrence")
    if not isinstance(rec, dict) or not isinstance(rec.get("pattern"), dict) \
            or not isinstance(rec.get("range"), dict):
        raise bad
    p, r = rec["pattern"], rec["range"]
    ptype = p.get("type")
    if ptype not in PATTERNS:
        # relativeMonthly/relativeYearly exist in Graph; refused loudly here
        raise bad_request(f"Recurrence pattern type {ptype!r} is not supported by the fake.",
                          "ErrorInvalidRecurrence")
    interval = p.get("interval", 1)
    if not isinstance(interval, int) or isinstance(interval, bool) or not 1 <= interval <= 99:
        raise bad
    days = [d.lower() for d in p.get("daysOfWeek") or [] if isinstance(d, str)]
    if any(d not in DAYS for d in days) or (ptype == "weekly" and not days):
        raise bad
    fdow = (p.get("firstDayOfWeek") or "sunday").lower()
    if fdow not in DAYS:
        raise bad
    month = p.get("month", 0) or 0
    dom = p.get("dayOfMonth", 0) or 0
    if ptype in ("absoluteMonthly", "absoluteYearly") and not (isinstance(dom, int) and 1 <= dom <= 31):
        raise bad
    if ptype == "absoluteYearly" and not (isinstance(month, int) and 1 <= month <= 12):
        raise bad
    rtype = r.get("type")
    if rtype not in RANGES:
        raise bad
    rtz = r.get("recurrenceTimeZone") or start_tz
    zone_or_400(rtz)
    try:
        sdate = date.fromisoformat(r["startDate"]) if r.get("startDate") else \
            start_utc.astimezone(get_zone(rtz)).date()
        edate = date.fromisoformat(r["endDate"]) if rtype == "endDate" else None
    except (ValueError, TypeError, KeyError):
        raise bad from None
    if rtype == "endDate" and edate is None:
        raise bad
    count = r.get("numberOfOccurrences", 0) or 0
    if rtype == "numbered" and not (isinstance(count, int) and count >= 1):
        raise bad
    return {"pattern": {"type": ptype, "interval": interval, "month": month, "dayOfMonth": dom,
                        "daysOfWeek": days, "firstDayOfWeek": fdow, "index": "first"},
            "range": {"type": rtype, "startDate": sdate.isoformat(),
                      "endDate": edate.isoformat() if edate else "0001-01-01",
                      "recurrenceTimeZone": rtz,
                      "numberOfOccurrences": count if rtype == "numbered" else 0}}


def _pattern_dates(rec):
    p, r = rec["pattern"], rec["range"]
    start = date.fromisoformat(r["startDate"])
    ptype, interval = p["type"], p["interval"]
    if ptype == "daily":
        d = start
        while True:
            yield d
            d += timedelta(days=interval)
    elif ptype == "weekly":
        fdow = DAYS.index(p["firstDayOfWeek"])
        week0 = start - timedelta(days=(start.weekday() - fdow) % 7)
        offsets = sorted((DAYS.index(d) - fdow) % 7 for d in p["daysOfWeek"])
        w = 0
        while True:
            for off in offsets:
                d = week0 + timedelta(days=7 * w + off)
                if d >= start:
                    yield d
            w += interval
    else:
        k = 0
        while True:
            if ptype == "absoluteMonthly":
                m = start.month - 1 + k
                y, mo = start.year + m // 12, m % 12 + 1
            else:
                y, mo = start.year + k, p["month"]
            try:
                d = date(y, mo, p["dayOfMonth"])
            except ValueError:
                d = None
            if d is not None and d >= start:
                yield d
            k += interval
            if y > 9000:
                return


def expand(rec, start_utc, upper):
    """Occurrence start instants (UTC) of a series, in order, up to (not
    including) ``upper``. The local time of day of the master's start is
    kept across daylight-saving changes."""
    r = rec["range"]
    z = get_zone(r["recurrenceTimeZone"])
    tod = start_utc.astimezone(z).time()
    end_date = date.fromisoformat(r["endDate"]) if r["type"] == "endDate" else None
    n = 0
    for i, d in enumerate(_pattern_dates(rec)):
        if i > _MAX_SCAN or (end_date is not None and d > end_date):
            return
        if r["type"] == "numbered" and n >= r["numberOfOccurrences"]:
            return
        t = datetime.combine(d, tod).replace(tzinfo=z).astimezone(UTC)
        if t >= upper:
            return
        n += 1
        yield t


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------

CLIENT_FIELDS = ("subject", "body", "categories", "importance", "sensitivity", "showAs",
                 "isReminderOn", "reminderMinutesBeforeStart", "allowNewTimeProposals",
                 "isOnlineMeeting", "onlineMeetingProvider", "hideAttendees", "location",
                 "locations", "responseRequested", "transactionId", "isAllDay")
STRING_FIELDS = ("subject", "importance", "sensitivity", "showAs", "onlineMeetingProvider",
                 "transactionId")
SVEP_ID = re.compile(r"^(String|Integer|Boolean|SystemTime|Binary|Double|Float|Long|Short|Currency|CLSID) "
                     r"(\{[0-9A-Fa-f-]{36}\} (Name \S.*|Id 0x[0-9A-Fa-f]{1,4})|0x[0-9A-Fa-f]{1,4})$",
                     re.IGNORECASE)
ATTENDEE_RESPONSES = ("none", "organizer", "tentativelyAccepted", "accepted", "declined",
                      "notResponded")


class Ev:
    """One stored item: a single instance, a series master, or an exception
    (modified or cancelled occurrence, stored under its occurrence id)."""

    def __init__(self, eid, cal_id, kind):
        self.id = eid
        self.cal = cal_id
        self.type = kind               # singleInstance | seriesMaster | exception
        self.fields = {}
        self.start = self.end = None   # aware UTC
        self.start_tz = self.end_tz = "UTC"
        self.recurrence = None
        self.master_id = None
        self.original_start = None     # aware UTC, exceptions
        self.created = self.modified = None
        self.change_key = ""
        self.rev = 0
        self.deleted = False
        self.svep = []                 # singleValueExtendedProperties [{id, value}]
        self.extensions = {}           # extensionName -> open extension
        self.attendees = []
        self.ical = ""

    @property
    def etag(self):
        return f'W/"{self.change_key}"'


class Subscription:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class Store:
    def __init__(self):
        self.lock = threading.RLock()
        self.notifier = None
        self.reset(dict(DEFAULT_CONFIG))

    def reset(self, config):
        self.config = config
        self.generation = b64url(os.urandom(6))
        gen_seed = hashlib.sha1(self.generation.encode()).hexdigest()
        self.user_id = str(uuid.UUID(gen_seed[:32]))
        self.tenant_id = str(uuid.UUID(hashlib.sha1(b"t" + self.generation.encode()).hexdigest()[:32]))
        self.app_id = str(uuid.UUID(hashlib.sha1(b"a" + self.generation.encode()).hexdigest()[:32]))
        self.upn = "user@example.com"
        self.rev = 0
        self.counter = 0
        default = "AAMkCAL" + b64url(hashlib.sha1(b"default" + self.generation.encode()).digest()[:12]) + "="
        self.default_cal = default
        self.calendars = {default: {"id": default, "name": "Calendar", "epoch": 0}}
        self.events: dict[str, Ev] = {}
        self.tombstones = []           # (calendar id, item id, rev)
        self.subscriptions: dict[str, Subscription] = {}
        self.access_tokens = {}        # token -> {"grant", "expires_at"}
        self.grants = {}               # refresh token -> grant id
        self.revoked = set()           # grant ids
        self.delta_sessions = {}       # session id -> {"items", "final"}
        self.transactions = {}         # (calendar, transactionId) -> event id

    # -- clock -------------------------------------------------------------

    def _stamp(self, ev):
        self.rev += 1
        self.counter += 1
        ev.rev = self.rev
        now = datetime.now(UTC)
        if ev.modified is not None and now <= ev.modified:
            now = ev.modified + timedelta(microseconds=1)
        ev.modified = now
        ev.change_key = base64.b64encode(hashlib.sha1(
            f"{self.generation}/{ev.id}/{self.counter}".encode()).digest()[:16]).decode()

    # -- calendars and lookups ----------------------------------------------

    def calendar(self, cid):
        c = self.calendars.get(cid)
        if c is None:
            raise not_found()
        return c

    def resolve(self, eid):
        """("stored", ev) / ("occurrence", master, key) / None."""
        ev = self.events.get(eid)
        if ev is not None:
            return ("stored", ev)
        occ = parse_occurrence_id(eid)
        if occ is None:
            return None
        master = self.events.get(occ[0])
        if master is None or master.deleted or master.type != "seriesMaster":
            return None
        if not self._key_in_series(master, occ[1]):
            return None
        return ("occurrence", master, occ[1])

    def _key_in_series(self, master, key):
        for t in expand(master.recurrence, master.start, key + timedelta(seconds=1)):
            if t == key:
                return True
        return False

    def exceptions_of(self, master_id):
        return [e for e in self.events.values() if e.master_id == master_id]

    # -- validation ------------------------------------------------------------

    def _apply_body(self, ev, body, creating):
        """Copy the writable fields of a create or PATCH body onto ev,
        validating types (400 as Graph). Unknown properties are ignored."""
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.", "BadRequest")
        for f in STRING_FIELDS:
            if f in body and body[f] is not None and not isinstance(body[f], str):
                raise bad_request(f"Invalid value for property '{f}'.", "BadRequest")
        if "body" in body and body["body"] is not None:
            b = body["body"]
            if not isinstance(b, dict) or not isinstance(b.get("content", ""), str):
                raise bad_request("Invalid value for property 'body'.", "BadRequest")
        for f in CLIENT_FIELDS:
            if f in body:
                if body[f] is None:
                    ev.fields.pop(f, None)
                else:
                    ev.fields[f] = copy.deepcopy(body[f])
        if "start" in body or creating:
            if "start" not in body:
                raise bad_request("Your request can't be completed. The start time is missing.",
                                  "ErrorInvalidRequest")
            ev.start, ev.start_tz = parse_dtz(body["start"], "start")
        if "end" in body or creating:
            if "end" not in body:
                raise bad_request("Your request can't be completed. The end time is missing.",
                                  "ErrorInvalidRequest")
            ev.end, ev.end_tz = parse_dtz(body["end"], "end")
        if ev.end < ev.start:
            raise bad_request("The end time must be after the start time.", "ErrorInvalidRequest")
        if ev.fields.get("isAllDay"):
            for t, tz in ((ev.start, ev.start_tz), (ev.end, ev.end_tz)):
                if t.astimezone(get_zone(tz)).time() != datetime.min.time():
                    raise bad_request("Your request can't be completed. If the event is an "
                                      "all-day event, start and end must be at midnight.",
                                      "ErrorInvalidRequest")
        if "attendees" in body:
            att = body["attendees"] or []
            if not isinstance(att, list) or not all(
                    isinstance(a, dict) and isinstance(a.get("emailAddress"), dict)
                    and isinstance(a["emailAddress"].get("address"), str) for a in att):
                raise bad_request("Invalid value for property 'attendees'.", "BadRequest")
            old = {a["emailAddress"]["address"].lower(): a for a in ev.attendees}
            ev.attendees = []
            for a in att:
                prev = old.get(a["emailAddress"]["address"].lower())
                status = prev["status"] if prev else {"response": "none",
                                                      "time": "0001-01-01T00:00:00Z"}
                ev.attendees.append({"type": (a.get("type") or "required").lower(),
                                     "status": copy.deepcopy(status),
                                     "emailAddress": {"name": a["emailAddress"].get("name", ""),
                                                      "address": a["emailAddress"]["address"]}})
        if "singleValueExtendedProperties" in body:
            props = body["singleValueExtendedProperties"] or []
            if not isinstance(props, list) or not all(
                    isinstance(p, dict) and isinstance(p.get("id"), str) and SVEP_ID.match(p["id"])
                    and isinstance(p.get("value"), str) for p in props):
                raise bad_request("Invalid extended property.", "ErrorInvalidExtendedProperty")
            for p in props:
                ev.svep = [q for q in ev.svep if q["id"].lower() != p["id"].lower()]
                ev.svep.append({"id": p["id"], "value": p["value"]})
        if "extensions" in body and creating:
            for x in body["extensions"] or []:
                self._add_extension(ev, x)
        if "recurrence" in body and ev.type != "exception":
            rec = body["recurrence"]
            if rec is None:
                ev.recurrence = None
            else:
                ev.recurrence = normalize_recurrence(rec, ev.start, ev.start_tz)
            ev.type = "seriesMaster" if ev.recurrence else "singleInstance"

    def _add_extension(self, ev, x):
        if not isinstance(x, dict) or not isinstance(x.get("extensionName"), str) \
                or not x["extensionName"]:
            raise bad_request("An open extension needs extensionName.", "BadRequest")
        name = x["extensionName"]
        if name in ev.extensions:
            raise GraphError(409, "NameAlreadyExists", f"An extension named '{name}' already exists.")
        ext = {k: copy.deepcopy(v) for k, v in x.items() if k != "@odata.type"}
        ev.extensions[name] = ext
        return ext

    # -- rendering -----------------------------------------------------------

    def render(self, ev, tz=None, occurrence=None, expand=None):
        """The event as Graph answers it (field order of the fixtures).
        ``occurrence`` = (master, key) renders a generated occurrence."""
        if occurrence is not None:
            master, key = occurrence
            src = master
            eid = occurrence_id(master.id, key)
            start = key
            end = key + (master.end - master.start)
            kind, series, orig = "occurrence", master.id, key
        else:
            src = ev
            eid, start, end, kind = ev.id, ev.start, ev.end, ev.type
            series, orig = ev.master_id, ev.original_start
        f = src.fields if occurrence is not None else ev.fields
        out_tz_s = tz or "UTC"
        out_tz_e = tz or "UTC"
        if tz is None:
            out_tz_s = out_tz_e = "UTC"
        body = f.get("body") or {"contentType": "html", "content": ""}
        body = {"contentType": str(body.get("contentType", "html")).lower(),
                "content": body.get("content", "")}
        preview = re.sub(r"<[^>]*>", "", body["content"]).strip()[:255]
        out = {
            "@odata.etag": src.etag, "id": eid,
            "createdDateTime": fmt7(src.created), "lastModifiedDateTime": fmt7(src.modified),
            "changeKey": src.change_key, "categories": copy.deepcopy(f.get("categories", [])),
        }
        if f.get("transactionId") is not None and occurrence is None:
            out["transactionId"] = f["transactionId"]
        out.update({
            "originalStartTimeZone": src.start_tz, "originalEndTimeZone": src.end_tz,
            "iCalUId": src.ical,
            "reminderMinutesBeforeStart": f.get("reminderMinutesBeforeStart", 15),
            "isReminderOn": f.get("isReminderOn", True), "hasAttachments": False,
            "hideAttendees": f.get("hideAttendees", False),
            "subject": f.get("subject", ""), "bodyPreview": preview,
            "importance": f.get("importance", "normal"),
            "sensitivity": f.get("sensitivity", "normal"),
        })
        if orig is not None:
            out["originalStart"] = fmt7(orig).replace(".0000000Z", "Z")
        out.update({
            "isAllDay": bool(f.get("isAllDay", False)), "isCancelled": False, "isDraft": False,
            "isOrganizer": True, "responseRequested": f.get("responseRequested", True),
            "seriesMasterId": series, "showAs": f.get("showAs", "busy"), "type": kind,
            "webLink": "https://outlook.office365.com/owa/?itemid="
                       + urllib.parse.quote(eid, safe="") + "&exvsurl=1&path=/calendar/item",
            "onlineMeetingUrl": None, "isOnlineMeeting": bool(f.get("isOnlineMeeting", False)),
            "onlineMeetingProvider": f.get("onlineMeetingProvider", "unknown"),
            "onlineMeeting": None, "allowNewTimeProposals": f.get("allowNewTimeProposals", True),
            "responseStatus": {"response": "organizer", "time": "0001-01-01T00:00:00Z"},
            "body": body,
            "start": {"dateTime": fmt_local(start, out_tz_s), "timeZone": out_tz_s},
            "end": {"dateTime": fmt_local(end, out_tz_e), "timeZone": out_tz_e},
            "location": copy.deepcopy(f.get("location") or {"displayName": "", "locationType": "default",
                                                              "uniqueIdType": "unknown"}),
            "locations": copy.deepcopy(f.get("locations") or []),
            "recurrence": copy.deepcopy(src.recurrence) if kind == "seriesMaster" else None,
            "attendees": copy.deepcopy((src if occurrence else ev).attendees),
            "organizer": {"emailAddress": {"name": "Fake User", "address": self.upn}},
        })
        for what, flt in (expand or {}).items():
            if what == "singleValueExtendedProperties":
                props = [p for p in src.svep if flt is None or p["id"].lower() == flt.lower()]
                if props:
                    out[what] = copy.deepcopy(props)
            elif what == "extensions":
                exts = [self._ext_json(x) for n, x in src.extensions.items()
                        if flt is None or self._ext_id(n).lower() == flt.lower()
                        or n.lower() == flt.lower()]
                out[what] = exts
        return out

    @staticmethod
    def _ext_id(name):
        return "microsoft.graph.openTypeExtension." + name

    def _ext_json(self, x):
        out = {"@odata.type": "#microsoft.graph.openTypeExtension", "id": self._ext_id(x["extensionName"])}
        out.update(copy.deepcopy(x))
        return out

    # -- instances -------------------------------------------------------------

    def instances(self, cal_id, lo, hi, master_filter=None):
        """Every live single event, occurrence and exception overlapping
        [lo, hi): [(start, id, ev, occurrence or None, rev)]."""
        out = []
        for ev in list(self.events.values()):
            if ev.cal != cal_id or ev.deleted:
                continue
            if master_filter is not None and ev.id != master_filter and ev.master_id != master_filter:
                continue
            if ev.type == "seriesMaster":
                if master_filter is None or ev.id == master_filter:
                    dur = ev.end - ev.start
                    exc_keys = {e.original_start for e in self.exceptions_of(ev.id)}
                    for t in expand(ev.recurrence, ev.start, hi):
                        if t in exc_keys or t + dur <= lo:
                            continue
                        out.append((t, occurrence_id(ev.id, t), ev, (ev, t), ev.rev))
                continue
            if ev.type == "exception":
                master = self.events.get(ev.master_id)
                if master is None or master.deleted:
                    continue
            if ev.start < hi and ev.end > lo:
                out.append((ev.start, ev.id, ev, None, ev.rev))
        out.sort(key=lambda t: (t[0], t[1]))
        return out

    def _horizon_ids(self, master):
        now = datetime.now(UTC)
        ids = set()
        for t in expand(master.recurrence, master.start, now + timedelta(days=800)):
            if t >= now - timedelta(days=400):
                ids.add(occurrence_id(master.id, t))
            if len(ids) >= 5000:
                break
        return ids

    # -- event operations (API and host alike) ------------------------------

    def _changed(self, ev, change_type):
        if self.notifier is not None:
            self.notifier.changed(self, ev, change_type)

    def create(self, cal_id, body):
        self.calendar(cal_id)
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.", "BadRequest")
        txn = body.get("transactionId")
        if isinstance(txn, str) and (cal_id, txn) in self.transactions:
            old = self.events.get(self.transactions[(cal_id, txn)])
            if old is not None and not old.deleted:
                if self.config["transaction_id_mode"] == "conflict":
                    raise GraphError(409, "ErrorDuplicateTransactionId",
                                     "An event with this transactionId already exists.")
                return old, False
        ev = Ev(new_item_id(), cal_id, "singleInstance")
        ev.created = datetime.now(UTC)
        ev.ical = "040000008200E00074C5B7101A82E008" + hashlib.sha1(ev.id.encode()).hexdigest().upper()
        self._apply_body(ev, body, creating=True)
        self.events[ev.id] = ev
        if isinstance(txn, str):
            self.transactions[(cal_id, txn)] = ev.id
        self._stamp(ev)
        self._changed(ev, "created")
        return ev, True

    def _check_if_match(self, header, ev):
        if header is None or not self.config["if_match"]:
            return
        values = [v.strip() for v in header.split(",")]
        if "*" in values:
            return
        if ev.etag not in values and f'"{ev.change_key}"' not in values and ev.change_key not in values:
            raise GraphError(412, "ErrorIrresolvableConflict",
                             "The send or update operation could not be performed because the "
                             "change key passed in the request does not match the current change "
                             "key for the item.")

    def _materialize(self, master, key):
        """An exception for the occurrence of ``master`` at ``key``."""
        ex = Ev(occurrence_id(master.id, key), master.cal, "exception")
        ex.fields = copy.deepcopy(master.fields)
        ex.fields.pop("transactionId", None)
        ex.start, ex.end = key, key + (master.end - master.start)
        ex.start_tz, ex.end_tz = master.start_tz, master.end_tz
        ex.master_id, ex.original_start = master.id, key
        ex.created, ex.modified = master.created, master.modified
        ex.change_key = master.change_key
        ex.attendees = copy.deepcopy(master.attendees)
        ex.svep = copy.deepcopy(master.svep)
        ex.ical = master.ical
        return ex

    def update(self, eid, body, if_match=None):
        target = self.resolve(eid)
        if target is None or (target[0] == "stored" and target[1].deleted):
            raise not_found()
        if target[0] == "occurrence":
            master, key = target[1], target[2]
            probe = self._materialize(master, key)
            probe.change_key = master.change_key
            self._check_if_match(if_match, master)
            trial = copy.deepcopy(probe)
            self._apply_body(trial, body, creating=False)
            self.events[trial.id] = trial
            self._stamp(trial)
            self._changed(trial, "updated")
            return trial
        ev = target[1]
        self._check_if_match(if_match, ev)
        trial = copy.deepcopy(ev)
        self._apply_body(trial, body, creating=False)   # raises before anything changes
        series_moved = ev.type == "seriesMaster" and (
            trial.recurrence != ev.recurrence or trial.start != ev.start or trial.end != ev.end
            or trial.type != ev.type)
        before = self._horizon_ids(ev) if series_moved else set()
        self.events[ev.id] = trial
        self._stamp(trial)
        if series_moved:
            after = self._horizon_ids(trial) if trial.type == "seriesMaster" else set()
            for exc in self.exceptions_of(ev.id):
                if exc.deleted:
                    after.add(exc.id)      # reported when it was deleted
                elif trial.type != "seriesMaster" or not self._key_in_series(trial, exc.original_start):
                    exc.deleted = True
                    before.add(exc.id)
            for oid in before - after:
                self.tombstones.append((ev.cal, oid, trial.rev))
        self._changed(trial, "updated")
        return trial

    def delete(self, eid, if_match=None):
        target = self.resolve(eid)
        if target is None or (target[0] == "stored" and target[1].deleted):
            raise not_found()
        if target[0] == "occurrence":
            master, key = target[1], target[2]
            self._check_if_match(if_match, master)
            ex = self._materialize(master, key)
            ex.deleted = True
            self.events[ex.id] = ex
            self._stamp(ex)
            self.tombstones.append((ex.cal, ex.id, ex.rev))
            self._changed(ex, "deleted")
            return
        ev = target[1]
        self._check_if_match(if_match, ev)
        ev.deleted = True
        self._stamp(ev)
        self.tombstones.append((ev.cal, ev.id, ev.rev))
        if ev.type == "seriesMaster":
            for oid in self._horizon_ids(ev):
                self.tombstones.append((ev.cal, oid, ev.rev))
            for exc in self.exceptions_of(ev.id):
                exc.deleted = True
                self.tombstones.append((ev.cal, exc.id, ev.rev))
        self._changed(ev, "deleted")

    def get(self, eid):
        target = self.resolve(eid)
        if target is None or (target[0] == "stored" and target[1].deleted):
            raise not_found()
        return target

    # -- delta ---------------------------------------------------------------

    def delta_round(self, cal_id, lo, hi, since, tz):
        """The items of one delta round: everything in the window (first
        round) or what changed since ``since`` (later rounds), with
        {"@removed"} for items deleted, or changed outside the window."""
        inst = self.instances(cal_id, lo, hi)
        items = []
        seen = set()
        for start, iid, ev, occ, rev in inst:
            if since is None or rev > since:
                item = {"@odata.type": "#microsoft.graph.event"}
                item.update(self.render(ev, tz, occ))
                items.append((rev, item))
            seen.add(iid)
        if since is not None:
            gone = {}
            for cal, iid, rev in self.tombstones:
                if cal == cal_id and rev > since and iid not in seen:
                    gone[iid] = max(rev, gone.get(iid, 0))
            for ev in self.events.values():
                # moved out of, or created outside, the window (event-delta doc)
                if ev.cal == cal_id and not ev.deleted and ev.rev > since and ev.id not in seen \
                        and ev.type != "seriesMaster":
                    gone.setdefault(ev.id, ev.rev)
            for iid, rev in gone.items():
                items.append((rev, {"@odata.type": "#microsoft.graph.event", "id": iid,
                                    "@removed": {"reason": "deleted"}}))
            items.sort(key=lambda t: t[0])
        return [item for _, item in items]

    # -- subscriptions ------------------------------------------------------------

    def live_subscriptions(self):
        now = datetime.now(UTC)
        for sid in [s for s, sub in self.subscriptions.items() if sub.expires <= now]:
            # an expired subscription is deleted silently (MODEL 2)
            del self.subscriptions[sid]
        return list(self.subscriptions.values())

    def sub_json(self, sub):
        return {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
                "id": sub.id, "resource": sub.resource, "applicationId": self.app_id,
                "changeType": sub.change_type, "clientState": sub.client_state,
                "notificationUrl": sub.notification_url, "notificationQueryOptions": None,
                "notificationContentType": None,
                "lifecycleNotificationUrl": sub.lifecycle_url,
                "expirationDateTime": fmt7(sub.expires), "creatorId": self.user_id,
                "includeResourceData": None, "latestSupportedTlsVersion": sub.tls,
                "encryptionCertificate": None, "encryptionCertificateId": None,
                "notificationUrlAppId": None}

    # -- OAuth -------------------------------------------------------------------------

    def grant_of(self, refresh_token):
        g = self.grants.get(refresh_token)
        if g is None:
            g = self.grants[refresh_token] = "g-" + b64url(os.urandom(6))
        return g

    def mint(self, grant, ttl=None):
        ttl = int(self.config["access_token_ttl"] if ttl is None else ttl)
        tok = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.fake-" + b64url(os.urandom(24))
        self.access_tokens[tok] = {"grant": grant, "expires_at": time.time() + ttl}
        return tok, ttl


# ---------------------------------------------------------------------------
# Notifications: change notifications (batched), lifecycle notifications,
# redelivery, faults, log
# ---------------------------------------------------------------------------

class ControlError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def _int_field(spec, name, default=None, lo=None, hi=None):
    v = spec.get(name, default)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or (lo is not None and v < lo) \
            or (hi is not None and v > hi):
        raise ControlError(400, f"{name} must be an integer in [{lo}, {hi}]")
    return v


class Notifier:
    """One background thread delivers due notifications: items due within
    ``batch_ms`` of each other for the same URL go in one POST
    {"value": [...]}. A non-2xx or a timeout schedules a redelivery after
    each of ``retry_delays``; then the item is dropped and, with
    ``missed_on_drop``, a ``missed`` lifecycle notification is sent."""

    ACTIONS = ("drop", "duplicate", "delay")

    def __init__(self, store, log_limit):
        self.store = store
        self.cv = threading.Condition()
        self.queue = []                # records due for delivery
        self.log = deque(maxlen=log_limit)
        self.seq = itertools.count(1)
        self.rules = []
        self.rule_ids = itertools.count(1)
        self.busy = 0
        self.epoch = 0                 # bumped by a reset: older records are not retried
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="graph-notifier", daemon=True)
        self.thread.start()

    # -- faults ------------------------------------------------------------------

    def add_rule(self, spec):
        if not isinstance(spec, dict) or spec.get("action") not in self.ACTIONS:
            raise ControlError(400, f"action must be one of {list(self.ACTIONS)}")
        unknown = set(spec) - {"action", "count", "delay_ms", "subscription", "kind"}
        if unknown:
            raise ControlError(400, f"unknown keys {sorted(unknown)}")
        count = _int_field(spec, "count", 1, lo=-1)
        if count == 0:
            raise ControlError(400, "count must be >= 1, or -1 for until cleared")
        rule = {"id": f"n{next(self.rule_ids)}", "action": spec["action"], "remaining": count,
                "hits": 0, "delay_ms": _int_field(spec, "delay_ms", 0, lo=0, hi=600000),
                "subscription": spec.get("subscription"), "kind": spec.get("kind", "change")}
        if rule["action"] == "delay" and not rule["delay_ms"]:
            raise ControlError(400, "delay needs delay_ms")
        with self.cv:
            self.rules.append(rule)
        return dict(rule)

    def _take(self, action, rec):
        for r in self.rules:
            if r["action"] != action or r["remaining"] == 0:
                continue
            if r["subscription"] is not None and r["subscription"] != rec["subscription_id"]:
                continue
            if r["kind"] != rec["kind"]:
                continue
            if r["remaining"] > 0:
                r["remaining"] -= 1
            r["hits"] += 1
            return r
        return None

    # -- queueing -----------------------------------------------------------------

    def changed(self, store, ev, change_type):
        """Called under the store lock after every change to an item."""
        subs = store.live_subscriptions()
        for sub in subs:
            if change_type not in sub.change_type.split(","):
                continue
            if sub.calendar is not None and sub.calendar != ev.cal:
                continue
            res = f"Users/{store.user_id}/Events/{ev.id}"
            item = {"subscriptionId": sub.id,
                    "subscriptionExpirationDateTime": fmt7_offset(sub.expires),
                    "changeType": change_type, "resource": res,
                    "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "@odata.id": res,
                                     "@odata.etag": ev.etag, "id": ev.id},
                    "clientState": sub.client_state, "tenantId": store.tenant_id}
            self.enqueue(sub, "change", item, sub.notification_url)

    def lifecycle(self, store, sub, event):
        item = {"subscriptionId": sub.id,
                "subscriptionExpirationDateTime": fmt7_offset(sub.expires),
                "tenantId": store.tenant_id, "clientState": sub.client_state,
                "lifecycleEvent": event}
        return self.enqueue(sub, "lifecycle", item, sub.lifecycle_url)

    def enqueue(self, sub, kind, item, url):
        now = time.time()
        with self.cv:
            rec = {"seq": next(self.seq), "epoch": self.epoch, "kind": kind, "subscription_id": sub.id,
                   "url": url, "item": item, "status": "pending", "attempts": 0,
                   "http_status": None, "error": None, "faults": [], "duplicate": False,
                   "enqueued_at": fmt7(datetime.now(UTC)), "sent_at": None,
                   "due": now + self.store.config["batch_ms"] / 1000.0}
            self.log.append(rec)
            if url is None:
                rec["status"] = "skipped"
                rec["error"] = "no lifecycleNotificationUrl"
                return rec
            if self._take("drop", rec) is not None:
                rec["status"] = "dropped"
                rec["faults"].append("drop")
                return rec
            d = self._take("delay", rec)
            if d is not None:
                rec["due"] += d["delay_ms"] / 1000.0
                rec["faults"].append("delay")
            self.queue.append(rec)
            if self._take("duplicate", rec) is not None:
                rec["faults"].append("duplicate")
                dup = dict(rec, seq=next(self.seq), duplicate=True, faults=["duplicate"],
                           item=copy.deepcopy(item))
                self.log.append(dup)
                self.queue.append(dup)
            self.cv.notify_all()
            return rec

    # -- delivery --------------------------------------------------------------------

    def _run(self):
        while True:
            with self.cv:
                while not self.stopping:
                    now = time.time()
                    due = [r for r in self.queue if r["due"] <= now]
                    if due:
                        break
                    wait = min((r["due"] for r in self.queue), default=now + 0.5) - now
                    self.cv.wait(max(0.005, min(wait, 0.5)))
                if self.stopping:
                    return
                url = due[0]["url"]
                batch = [r for r in due if r["url"] == url][:100]
                for r in batch:
                    self.queue.remove(r)
                self.busy += 1
            try:
                self._deliver(url, batch)
            finally:
                with self.cv:
                    self.busy -= 1
                    self.cv.notify_all()

    def _still_wanted(self, rec):
        with self.store.lock:
            subs = {s.id: s for s in self.store.live_subscriptions()}
            sub = subs.get(rec["subscription_id"])
        if rec["kind"] == "lifecycle":
            return None   # lifecycle notifications go out even for a removed subscription
        if sub is None:
            return "subscription gone"
        if sub.state == "reauthorization_required":
            return "reauthorization required"
        return None

    def _deliver(self, url, batch):
        send = []
        for r in batch:
            why = self._still_wanted(r)
            if why is not None:
                with self.cv:
                    r["status"], r["error"] = "skipped", why
            else:
                send.append(r)
        if not send:
            return
        body = json.dumps({"value": [r["item"] for r in send]}).encode()
        status, error = None, None
        try:
            u = urllib.parse.urlsplit(url)
            conn = http.client.HTTPConnection(u.hostname, u.port or 80,
                                              timeout=self.store.config["notification_timeout"])
            try:
                path = u.path or "/"
                if u.query:
                    path += "?" + u.query
                conn.request("POST", path, body=body, headers={
                    "Content-Type": "application/json; charset=utf-8"})
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            finally:
                conn.close()
        except (OSError, http.client.HTTPException, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        ok = status is not None and 200 <= status < 300
        missed = []
        with self.cv:
            for r in send:
                r["attempts"] += 1
                r["http_status"], r["error"] = status, error
                r["sent_at"] = fmt7(datetime.now(UTC))
                if ok:
                    r["status"] = "delivered"
                    continue
                delays = self.store.config["retry_delays"]
                if r["epoch"] != self.epoch:
                    r["status"] = "dropped"    # sent before a reset: forget it
                elif r["attempts"] <= len(delays):
                    r["status"] = "retrying"
                    r["due"] = time.time() + delays[r["attempts"] - 1]
                    self.queue.append(r)
                else:
                    r["status"] = "dropped"
                    if r["kind"] == "change" and self.store.config["missed_on_drop"]:
                        missed.append(r["subscription_id"])
            self.cv.notify_all()
        for sid in dict.fromkeys(missed):
            with self.store.lock:
                sub = self.store.subscriptions.get(sid)
                if sub is not None and sub.lifecycle_url:
                    self.lifecycle(self.store, sub, "missed")

    # -- log --------------------------------------------------------------------------

    def records(self, since=0, kind=None, subscription=None):
        with self.cv:
            return [self._public(r) for r in self.log if r["seq"] > since
                    and (kind is None or r["kind"] == kind)
                    and (subscription is None or r["subscription_id"] == subscription)]

    @staticmethod
    def _public(r):
        return {k: v for k, v in r.items() if k not in ("due", "epoch")}

    def settled(self, since, kind, subscription):
        return [r for r in self.log if r["seq"] > since
                and (kind is None or r["kind"] == kind)
                and (subscription is None or r["subscription_id"] == subscription)
                and r["status"] not in ("pending", "retrying")]

    def wait(self, n, timeout, since=0, kind=None, subscription=None):
        deadline = time.time() + timeout
        with self.cv:
            while len(self.settled(since, kind, subscription)) < n:
                left = deadline - time.time()
                if left <= 0:
                    break
                self.cv.wait(min(left, 0.2))

    def drain(self, timeout):
        deadline = time.time() + timeout
        with self.cv:
            while self.queue or self.busy:
                left = deadline - time.time()
                if left <= 0:
                    return False
                self.cv.wait(min(left, 0.2))
            return True

    def clear(self):
        with self.cv:
            self.epoch += 1
            self.queue.clear()
            self.log.clear()
            self.rules.clear()
            self.cv.notify_all()

    def stop(self):
        with self.cv:
            self.stopping = True
            self.cv.notify_all()
        self.thread.join(2)


# ---------------------------------------------------------------------------
# Faults on the API and the token endpoint
# ---------------------------------------------------------------------------

DEFAULT_CODE = {400: "BadRequest", 401: "InvalidAuthenticationToken", 403: "ErrorAccessDenied",
                404: "ErrorItemNotFound", 409: "ErrorIrresolvableConflict",
                410: "SyncStateNotFound", 412: "ErrorIrresolvableConflict",
                500: "generalException", 503: "serviceNotAvailable", 504: "UnknownError"}


class FaultInjector:
    MODES = ("disconnect", "truncated_json", "empty_body")
    KEYS = {"status", "count", "retry_after", "code", "message", "ops", "paths", "methods",
            "mode", "delay_ms", "apply"}

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
        delay = _int_field(spec, "delay_ms", 0, lo=0, hi=600000)
        if status is None and mode is None and not delay:
            raise ControlError(400, "a fault needs status, mode or delay_ms")
        count = _int_field(spec, "count", 1, lo=-1)
        if count == 0:
            raise ControlError(400, "count must be >= 1, or -1 for until cleared")
        ra = spec.get("retry_after")
        if ra is not None and (isinstance(ra, bool) or not isinstance(ra, (int, float, str))):
            raise ControlError(400, "retry_after must be a number or a string")
        paths = spec.get("paths")
        if paths is not None:
            try:
                re.compile(paths)
            except (re.error, TypeError):
                raise ControlError(400, "paths must be a regular expression") from None
        ops = spec.get("ops")
        ops = [ops] if isinstance(ops, str) else ops
        methods = spec.get("methods")
        methods = [methods] if isinstance(methods, str) else methods
        apply = spec.get("apply", False)
        if not isinstance(apply, bool):
            raise ControlError(400, "apply must be a boolean")
        rule = {"id": f"f{next(self.ids)}", "status": status, "mode": mode, "count": count,
                "remaining": count, "hits": 0, "retry_after": ra, "code": spec.get("code"),
                "message": spec.get("message"), "ops": ops, "paths": paths,
                "methods": [m.upper() for m in methods] if methods else None,
                "delay_ms": delay, "apply": apply}
        with self.lock:
            self.rules.append(rule)
        return dict(rule)

    def take(self, op, method, path, is_api):
        with self.lock:
            for r in self.rules:
                if r["remaining"] == 0:
                    continue
                if r["ops"] is None and r["paths"] is None and not is_api:
                    continue
                if r["ops"] is not None and op not in r["ops"]:
                    continue
                if r["paths"] is not None and not re.search(r["paths"], path):
                    continue
                if r["methods"] is not None and method not in r["methods"]:
                    continue
                if r["remaining"] > 0:
                    r["remaining"] -= 1
                r["hits"] += 1
                return dict(r)
        return None

    def error_for(self, rule):
        status = rule["status"]
        if status == 429 and rule["code"] in (None, "TooManyRequests"):
            e = throttled(rule["retry_after"])
        else:
            e = GraphError(status, rule["code"] or DEFAULT_CODE.get(status, "generalException"),
                           rule["message"] or http.client.responses.get(status, "Error"))
            if rule["retry_after"] is not None:
                e.headers["Retry-After"] = str(rule["retry_after"])
        return e


# ---------------------------------------------------------------------------
# HTTP layer
# ---------------------------------------------------------------------------

class Request:
    def __init__(self, method, raw_path, raw_query, headers, body):
        self.method = method
        self.raw_path = raw_path
        self.path = urllib.parse.unquote(raw_path)
        self.segs = [urllib.parse.unquote(s) for s in raw_path.strip("/").split("/")] if raw_path.strip("/") else []
        self.query = urllib.parse.parse_qs(raw_query, keep_blank_values=True)
        # Graph's query option names are case-insensitive (the delta fixture
        # sends startdatetime); keep a lower-cased view
        self.lquery = {}
        for k, v in self.query.items():
            self.lquery.setdefault(k.lower(), []).extend(v)
        self.headers = headers
        self.body = body

    def q(self, name):
        v = self.lquery.get(name.lower())
        return v[0] if v else None

    def json(self):
        if not self.body.strip():
            raise bad_request("Empty Payload. JSON content expected.", "BadRequest")
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise bad_request("Unable to read JSON request payload.", "BadRequest") from None


class Response:
    def __init__(self, status, body=None, headers=None, raw=None, content_type="application/json"):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.raw = raw
        self.content_type = content_type
        self.disconnect = False

    def payload(self):
        if self.raw is not None:
            return self.raw
        if self.body is None:
            return b""
        return json.dumps(self.body).encode()


def error_response(e):
    return Response(e.status, e.body(), e.headers)


class GraphApi:
    """/v1.0: events, calendarView, delta, instances, extensions,
    subscriptions."""

    def __init__(self, app):
        self.app = app
        self.store = app.store

    # -- routing ----------------------------------------------------------------------

    def route(self, req):
        """(op, handler, args) for a /v1.0 path, or raises 404/405."""
        s = req.segs[1:]
        m = req.method
        if s[:1] == ["subscriptions"]:
            if len(s) == 1:
                return {"POST": ("subscriptions.create", self.sub_create, ()),
                        "GET": ("subscriptions.list", self.sub_list, ())}.get(m) or self._405()
            if len(s) == 2:
                return {"GET": ("subscriptions.get", self.sub_get, (s[1],)),
                        "PATCH": ("subscriptions.update", self.sub_update, (s[1],)),
                        "DELETE": ("subscriptions.delete", self.sub_delete, (s[1],))}.get(m) or self._405()
            if len(s) == 3 and s[2] == "reauthorize" and m == "POST":
                return ("subscriptions.reauthorize", self.sub_reauthorize, (s[1],))
            raise not_found()
        # the mailbox: me/... or users/{id or upn}/...
        if s[:1] == ["me"]:
            rest = s[1:]
        elif len(s) >= 2 and s[0] == "users":
            if s[1].lower() not in (self.store.user_id, self.store.upn.lower()):
                raise GraphError(404, "ErrorInvalidUser",
                                 f"The requested user '{s[1]}' is invalid.")
            rest = s[2:]
        else:
            raise not_found()
        cal = self.store.default_cal
        if rest[:1] == ["calendar"]:
            rest = rest[1:]
        elif rest[:1] == ["calendars"]:
            if len(rest) == 1:
                if m != "GET":
                    self._405()
                return ("calendars.list", self.calendars_list, ())
            cal = rest[1]
            rest = rest[2:]
        if rest == ["events"]:
            return {"POST": ("events.create", self.ev_create, (cal,)),
                    "GET": ("events.list", self.ev_list, (cal,))}.get(m) or self._405()
        if rest == ["calendarView"]:
            return ("calendarView", self.calendar_view, (cal,)) if m == "GET" else self._405()
        if rest == ["calendarView", "delta"]:
            return ("calendarView.delta", self.delta, (cal,)) if m == "GET" else self._405()
        if len(rest) >= 2 and rest[0] == "events":
            eid = rest[1]
            if len(rest) == 2:
                return {"GET": ("events.get", self.ev_get, (eid,)),
                        "PATCH": ("events.update", self.ev_update, (eid,)),
                        "DELETE": ("events.delete", self.ev_delete, (eid,))}.get(m) or self._405()
            if rest[2:] == ["instances"] and m == "GET":
                return ("events.instances", self.ev_instances, (eid,))
            if rest[2:] == ["extensions"] and m == "POST":
                return ("extensions.create", self.ext_create, (eid,))
            if len(rest) == 4 and rest[2] == "extensions":
                return {"GET": ("extensions.get", self.ext_get, (eid, rest[3])),
                        "DELETE": ("extensions.delete", self.ext_delete, (eid, rest[3]))}.get(m) \
                    or self._405()
        raise not_found()

    @staticmethod
    def _405():
        raise GraphError(405, "Request_BadRequest", "The HTTP method is not allowed on this resource.")

    def handle(self, req, rec):
        try:
            op, handler, args = self.route(req)
        except GraphError as e:
            rec["op"] = None
            return error_response(e)
        rec["op"] = op
        try:
            rec["credential"] = self._check_auth(req)
        except GraphError as e:
            return error_response(e)
        self.app.count(rec["credential"], op)
        return self.app.run_with_faults(req, rec, op, True, lambda: handler(req, *args))

    def _check_auth(self, req):
        h = req.headers.get("Authorization") or ""
        tok = h[7:].strip() if h.startswith("Bearer ") else ""
        with self.store.lock:
            info = self.store.access_tokens.get(tok)
            if not tok or info is None or info["expires_at"] <= time.time() \
                    or info["grant"] in self.store.revoked:
                raise GraphError(401, "InvalidAuthenticationToken",
                                 "Access token has expired or is not yet valid." if info is not None
                                 else "IDX14100: JWT is not well formed.",
                                 headers={"WWW-Authenticate": 'Bearer realm="", '
                                          'authorization_uri="https://login.microsoftonline.com/common/'
                                          'oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"'})
            return info["grant"]

    # -- query helpers --------------------------------------------------------------------

    def _tz(self, req):
        """Prefer: outlook.timezone="<name>" (fixture prefer-outlook-timezone-header.http);
        UTC without it."""
        prefer = req.headers.get("Prefer") or ""
        m = re.search(r'outlook\.timezone\s*=\s*"([^"]+)"', prefer)
        if not m:
            return None
        zone_or_400(m.group(1))
        return m.group(1)

    def _page_size(self, req):
        prefer = req.headers.get("Prefer") or ""
        m = re.search(r"odata\.maxpagesize\s*=\s*(\d+)", prefer)
        if m:
            return max(1, min(int(m.group(1)), 1000))
        return self.store.config["delta_page_size"]

    @staticmethod
    def _applied(tz, size=None):
        parts = []
        if size is not None:
            parts.append(f"odata.maxpagesize={size}")
        if tz is not None:
            parts.append(f'outlook.timezone="{tz}"')
        return {"Preference-Applied": ", ".join(parts)} if parts else {}

    _EXPAND = re.compile(r"^(singleValueExtendedProperties|extensions)"
                         r"(?:\(\$filter=id eq '([^']*)'\))?$", re.IGNORECASE)

    def _expand(self, req):
        v = req.q("$expand")
        if v is None:
            return None
        out = {}
        for part in re.split(r",(?![^(]*\))", v):
            m = self._EXPAND.match(part.strip())
            if not m:
                raise bad_request(f"Parsing OData Select and Expand failed: '{part}' is not "
                                  "supported by the fake.", "BadRequest")
            name = "singleValueExtendedProperties" if m.group(1).lower().startswith("single") \
                else "extensions"
            out[name] = m.group(2)
        return out

    _SVEP_FILTER = re.compile(r"^singleValueExtendedProperties/any\(\s*(\w+)\s*:\s*\1/id eq '([^']*)'"
                              r"\s+and\s+\1/value eq '([^']*)'\s*\)$", re.IGNORECASE)

    def _check_unsupported(self, req, allowed):
        if not self.store.config["strict_query"]:
            return
        for k in req.lquery:
            if k.startswith("$") and k not in allowed:
                raise bad_request(f"The query option '{k}' is not supported by this request.",
                                  "ErrorInvalidUrlQuery")

    def _window(self, req):
        s, e = req.q("startDateTime"), req.q("endDateTime")
        if s is None or e is None:
            raise bad_request("This request requires a time window specified by the query string "
                              "parameters StartDateTime and EndDateTime.", "ErrorInvalidParameter")
        lo, hi = parse_instant(s, "startDateTime"), parse_instant(e, "endDateTime")
        if hi <= lo:
            raise bad_request("The end of the time window must be after its start.",
                              "ErrorInvalidParameter")
        return lo, hi

    # -- events ------------------------------------------------------------------------------

    def ev_create(self, req, cal):
        body = req.json()
        tz = self._tz(req)
        with self.store.lock:
            ev, _ = self.store.create(cal, body)
            out = {"@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#users('{self.store.user_id}')/events/$entity"}
            out.update(self.store.render(ev, tz))
            return Response(201, out, self._applied(tz))

    def ev_list(self, req, cal):
        self._check_unsupported(req, {"$filter", "$expand", "$top"})
        tz = self._tz(req)
        flt = req.q("$filter")
        want = None
        if flt is not None:
            m = self._SVEP_FILTER.match(flt.strip())
            if not m:
                raise bad_request(f"Invalid filter clause: '{flt}' is not supported by the fake.",
                                  "BadRequest")
            want = (m.group(2).lower(), m.group(3))
        expand = self._expand(req)
        with self.store.lock:
            self.store.calendar(cal)
            out = []
            for ev in self.store.events.values():
                if ev.cal != cal or ev.deleted or ev.type == "exception":
                    continue
                if want is not None and not any(p["id"].lower() == want[0] and p["value"] == want[1]
                                                for p in ev.svep):
                    continue
                out.append(self.store.render(ev, tz, expand=expand))
            return Response(200, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(event)",
                                  "value": out}, self._applied(tz))

    def ev_get(self, req, eid):
        self._check_unsupported(req, {"$expand", "$select"})
        tz = self._tz(req)
        expand = self._expand(req)
        with self.store.lock:
            target = self.store.get(eid)
            if target[0] == "occurrence":
                body = self.store.render(target[1], tz, (target[1], target[2]), expand)
            else:
                body = self.store.render(target[1], tz, expand=expand)
            inm = req.headers.get("If-None-Match")
            if inm is not None and body["@odata.etag"] in [v.strip() for v in inm.split(",")]:
                return Response(304)
            return Response(200, body, self._applied(tz))

    def ev_update(self, req, eid):
        body = req.json()
        tz = self._tz(req)
        with self.store.lock:
            ev = self.store.update(eid, body, if_match=req.headers.get("If-Match"))
            return Response(200, self.store.render(ev, tz), self._applied(tz))

    def ev_delete(self, req, eid):
        with self.store.lock:
            self.store.delete(eid, if_match=req.headers.get("If-Match"))
        return Response(204)

    def ev_instances(self, req, eid):
        self._check_unsupported(req, {"$select"})
        tz = self._tz(req)
        lo, hi = self._window(req)
        with self.store.lock:
            ev = self.store.events.get(eid)
            if ev is None or ev.deleted:
                raise not_found()
            if ev.type != "seriesMaster":
                return Response(200, {"value": []})
            items = [self.store.render(e, tz, occ)
                     for _, _, e, occ, _ in self.store.instances(ev.cal, lo, hi, master_filter=eid)]
            return Response(200, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(event)",
                                  "value": items}, self._applied(tz))

    def calendar_view(self, req, cal):
        self._check_unsupported(req, {"$select", "$top"})
        tz = self._tz(req)
        lo, hi = self._window(req)
        with self.store.lock:
            self.store.calendar(cal)
            items = [self.store.render(e, tz, occ) for _, _, e, occ, _ in self.store.instances(cal, lo, hi)]
            return Response(200, {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(event)",
                                  "value": items}, self._applied(tz))

    def calendars_list(self, req):
        with self.store.lock:
            return Response(200, {"value": [{"id": c["id"], "name": c["name"],
                                             "isDefaultCalendar": c["id"] == self.store.default_cal,
                                             "canEdit": True}
                                            for c in self.store.calendars.values()]})

    # -- delta ----------------------------------------------------------------------------------

    def _sync_state_not_found(self):
        # the 410 capture (delta-error-syncstatenotfound-410.issue-capture.fragment.txt)
        return GraphError(410, "SyncStateNotFound",
                          "The sync state generation is not found; generation=149;"
                          "[highest=157][157][155][156].")

    def delta(self, req, cal):
        """calendarView/delta: pages with @odata.nextLink ($skiptoken) and a
        last page with @odata.deltaLink ($deltatoken) (fixtures delta-1..4)."""
        self._check_unsupported(req, {"$skiptoken", "$deltatoken"})
        tz = self._tz(req)
        size = self._page_size(req)
        base = f"{self.app.base_url}{API_PREFIX}/" + "/".join(
            urllib.parse.quote(s, safe="@") for s in req.segs[1:])
        skip, dtok = req.q("$skiptoken"), req.q("$deltatoken")
        with self.store.lock:
            c = self.store.calendar(cal)
            if skip is not None:
                try:
                    p = decode_token(skip)
                except ValueError:
                    raise bad_request("The skip token is invalid.", "ErrorInvalidParameter") from None
                sess = self.store.delta_sessions.get(p.get("k"))
                if p.get("g") != self.store.generation or sess is None or sess["epoch"] != c["epoch"]:
                    raise self._sync_state_not_found()
                items, offset, final = sess["items"], p.get("o", 0), sess["final"]
            else:
                if dtok:
                    try:
                        p = decode_token(dtok)
                    except ValueError:
                        raise bad_request("The delta token is invalid.", "ErrorInvalidParameter") from None
                    if p.get("g") != self.store.generation or p.get("c") != cal:
                        raise self._sync_state_not_found()
                    if p.get("e") != c["epoch"]:
                        raise self._expired(c, base, p)
                    lo, hi = datetime.fromisoformat(p["lo"]), datetime.fromisoformat(p["hi"])
                    since = p["r"]
                else:
                    lo, hi = self._window(req)
                    since = None
                final = {"g": self.store.generation, "c": cal, "e": c["epoch"], "r": self.store.rev,
                         "lo": lo.isoformat(), "hi": hi.isoformat()}
                items = self.store.delta_round(cal, lo, hi, since, tz)
                offset = 0
                sid = b64url(os.urandom(9))
                self.store.delta_sessions[sid] = {"items": items, "final": final, "epoch": c["epoch"]}
                while len(self.store.delta_sessions) > 2000:
                    self.store.delta_sessions.pop(next(iter(self.store.delta_sessions)))
                p = {"k": sid}
            page = items[offset:offset + size]
            out = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(event)"}
            if offset + size < len(items):
                tok = encode_token({"g": self.store.generation, "k": p["k"], "o": offset + size})
                out["@odata.nextLink"] = f"{base}?$skiptoken={tok}"
            else:
                out["@odata.deltaLink"] = f"{base}?$deltatoken={encode_token(final)}"
            out["value"] = page
            return Response(200, out, self._applied(tz, size))

    def _expired(self, c, base, p):
        mode = c.get("expire_mode", "syncStateNotFound")
        if mode == "resyncRequired":
            # errors.md: "The delta token is no longer valid, and the app must
            # reset the sync state."
            return GraphError(410, "resyncRequired",
                              "The delta token is no longer valid, and the app must reset the sync state.")
        e = self._sync_state_not_found()
        if mode == "location":
            # delta-query-overview: 410 with a Location of the initial query
            # and an empty $deltaToken
            qs = urllib.parse.urlencode({"startDateTime": p["lo"][:19] + "Z",
                                         "endDateTime": p["hi"][:19] + "Z"})
            e.headers["Location"] = f"{base}?{qs}&$deltatoken="
        return e

    # -- open extensions ---------------------------------------------------------------------------

    def _stored_for_ext(self, eid):
        target = self.store.get(eid)
        if target[0] == "occurrence":
            raise bad_request("Extensions on an occurrence are not supported by the fake.", "BadRequest")
        return target[1]

    def ext_create(self, req, eid):
        body = req.json()
        with self.store.lock:
            ev = self._stored_for_ext(eid)
            if body.get("@odata.type") not in ("microsoft.graph.openTypeExtension",
                                               "#microsoft.graph.openTypeExtension"):
                raise bad_request("@odata.type must be microsoft.graph.openTypeExtension.", "BadRequest")
            ext = self.store._add_extension(ev, body)
            out = {"@odata.context": f"https://graph.microsoft.com/v1.0/$metadata#users('{self.store.user_id}')"
                                     f"/events('{urllib.parse.quote(ev.id, safe='')}')/extensions/$entity"}
            out.update(self.store._ext_json(ext))
            return Response(201, out)

    def _ext_name(self, ev, xid):
        for n in ev.extensions:
            if xid.lower() in (n.lower(), Store._ext_id(n).lower()):
                return n
        raise not_found()

    def ext_get(self, req, eid, xid):
        with self.store.lock:
            ev = self._stored_for_ext(eid)
            return Response(200, self.store._ext_json(ev.extensions[self._ext_name(ev, xid)]))

    def ext_delete(self, req, eid, xid):
        with self.store.lock:
            ev = self._stored_for_ext(eid)
            del ev.extensions[self._ext_name(ev, xid)]
            return Response(204)

    # -- subscriptions ------------------------------------------------------------------------------

    _RESOURCE = re.compile(r"^/?(?:me|users/([^/]+))(?:/calendar|/calendars/([^/]+))?/events$", re.IGNORECASE)

    def _expiry(self, text, what="create"):
        if not isinstance(text, str):
            raise bad_request("expirationDateTime is required.", "InvalidRequest")
        try:
            exp = parse_instant(text.replace(" ", "T"), "expirationDateTime")
        except GraphError:
            raise bad_request("expirationDateTime is not a valid date and time.", "InvalidRequest") from None
        now = datetime.now(UTC)
        cap = now + timedelta(minutes=self.store.config["max_subscription_minutes"])
        if exp <= now:
            raise bad_request("Subscription expiration can only be in the future.", "InvalidRequest")
        if exp > cap:
            if self.store.config["expiry_policy"] == "clamp":
                return cap
            raise bad_request(f"Subscription expiration can only be {self.store.config['max_subscription_minutes']}"
                              " minutes in the future.", "InvalidRequest")
        return exp

    def _validate_url(self, url, what):
        """The validation handshake (fixtures validation-request.http,
        validation-response-requirements.txt): POST url?validationToken=...
        with text/plain; the endpoint must answer 200, text/plain, the
        decoded token, within validation_timeout seconds."""
        token = ("Validation: Testing client application reachability for subscription Request-Id: "
                 + str(uuid.uuid4()))
        rec = {"seq": next(self.app.notifier.seq), "kind": "validation", "subscription_id": None,
               "url": url, "item": {"validationToken": token, "for": what}, "status": "pending",
               "attempts": 1, "http_status": None, "error": None, "faults": [], "duplicate": False,
               "enqueued_at": fmt7(datetime.now(UTC)), "sent_at": None, "due": 0}
        with self.app.notifier.cv:
            self.app.notifier.log.append(rec)
        ok, why = False, None
        try:
            u = urllib.parse.urlsplit(url)
            if u.scheme not in ("http", "https") or not u.hostname:
                raise ValueError("not an http(s) URL")
            conn = http.client.HTTPConnection(u.hostname, u.port or 80,
                                              timeout=self.store.config["validation_timeout"])
            try:
                sep = "&" if u.query else "?"
                path = (u.path or "/") + (("?" + u.query) if u.query else "") + sep + \
                    "validationToken=" + urllib.parse.quote(token, safe="")
                conn.request("POST", path, body=b"", headers={"Content-Type": "text/plain; charset=utf-8"})
                resp = conn.getresponse()
                data = resp.read(4096)
                rec["http_status"] = resp.status
                ctype = (resp.getheader("Content-Type") or "").split(";")[0].strip().lower()
                if resp.status != 200:
                    why = f"status {resp.status}"
                elif ctype != "text/plain":
                    why = f"content type {ctype!r}"
                elif data.decode("utf-8", "replace") != token:
                    why = "body is not the decoded validation token"
                else:
                    ok = True
            finally:
                conn.close()
        except (OSError, http.client.HTTPException, ValueError) as exc:
            why = f"{type(exc).__name__}: {exc}"
        with self.app.notifier.cv:
            rec["status"] = "delivered" if ok else "failed"
            rec["error"] = why
            rec["sent_at"] = fmt7(datetime.now(UTC))
            self.app.notifier.cv.notify_all()
        if not ok:
            raise bad_request("Subscription validation request failed. Notification endpoint must "
                              f"respond with 200 OK to validation request. ({what}: {why})",
                              "InvalidRequest")

    def sub_create(self, req):
        body = req.json()
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.", "InvalidRequest")
        for name in ("changeType", "notificationUrl", "resource", "expirationDateTime"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise bad_request(f"{name} is required.", "InvalidRequest")
        kinds = body["changeType"].split(",")
        if not kinds or any(k not in ("created", "updated", "deleted") for k in kinds):
            raise bad_request("changeType must be created, updated and/or deleted.", "InvalidRequest")
        m = self._RESOURCE.match(body["resource"])
        if not m:
            raise bad_request(f"Resource '{body['resource']}' is not supported by the fake "
                              "(me/events, users/{id}/events, me/calendars/{id}/events).",
                              "InvalidRequest")
        cs = body.get("clientState")
        if cs is not None and (not isinstance(cs, str) or len(cs) > 128):
            raise bad_request("clientState must be a string of at most 128 characters.", "InvalidRequest")
        if body.get("includeResourceData"):
            raise bad_request("Rich notifications (includeResourceData) need an encryption "
                              "certificate; not supported by the fake.", "InvalidRequest")
        lc = body.get("lifecycleNotificationUrl")
        if lc is not None and not isinstance(lc, str):
            raise bad_request("lifecycleNotificationUrl must be a URL.", "InvalidRequest")
        with self.store.lock:
            exp = self._expiry(body["expirationDateTime"])
            cal = None
            if m.group(2):
                cal = m.group(2)
                self.store.calendar(cal)
            elif "/calendar/" in body["resource"].lower():
                cal = self.store.default_cal
            if m.group(1) and m.group(1).lower() not in (self.store.user_id, self.store.upn.lower()):
                raise GraphError(404, "ErrorInvalidUser", f"The requested user '{m.group(1)}' is invalid.")
        # the handshake runs outside the lock: the endpoint may call us back
        self._validate_url(body["notificationUrl"], "notificationUrl")
        if lc:
            self._validate_url(lc, "lifecycleNotificationUrl")
        with self.store.lock:
            sub = Subscription(id=str(uuid.uuid4()), resource=body["resource"], calendar=cal,
                               change_type=body["changeType"], client_state=cs,
                               notification_url=body["notificationUrl"], lifecycle_url=lc,
                               expires=exp, tls=body.get("latestSupportedTlsVersion", "v1_2"),
                               state="live")
            self.store.subscriptions[sub.id] = sub
            return Response(201, self.store.sub_json(sub))

    def _sub(self, sid):
        for sub in self.store.live_subscriptions():
            if sub.id == sid:
                return sub
        raise GraphError(404, "ResourceNotFound", "The object was not found.")

    def sub_get(self, req, sid):
        with self.store.lock:
            return Response(200, self.store.sub_json(self._sub(sid)))

    def sub_list(self, req):
        with self.store.lock:
            return Response(200, {"value": [self.store.sub_json(s) for s in self.store.live_subscriptions()]})

    def sub_update(self, req, sid):
        body = req.json()
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.", "InvalidRequest")
        if "lifecycleNotificationUrl" in body:
            # webhooks-lifecycle: it can only be set when the subscription is created
            raise bad_request("lifecycleNotificationUrl cannot be changed; recreate the subscription.",
                              "InvalidRequest")
        unknown = set(body) - {"expirationDateTime", "notificationUrl"}
        if unknown:
            raise bad_request(f"Only expirationDateTime and notificationUrl can be updated, not {sorted(unknown)}.",
                              "InvalidRequest")
        with self.store.lock:
            self._sub(sid)
            exp = self._expiry(body["expirationDateTime"]) if "expirationDateTime" in body else None
        if body.get("notificationUrl"):
            self._validate_url(body["notificationUrl"], "notificationUrl")
        with self.store.lock:
            sub = self._sub(sid)
            if exp is not None:
                sub.expires = exp
            if body.get("notificationUrl"):
                sub.notification_url = body["notificationUrl"]
            sub.state = "live"     # a PATCH also answers reauthorizationRequired
            return Response(200, self.store.sub_json(sub))

    def sub_delete(self, req, sid):
        with self.store.lock:
            self._sub(sid)
            del self.store.subscriptions[sid]
        return Response(204)

    def sub_reauthorize(self, req, sid):
        with self.store.lock:
            sub = self._sub(sid)
            sub.state = "live"     # expiry unchanged (MODEL 3)
        return Response(204)


class TokenEndpoint:
    """POST /{tenant}/oauth2/v2.0/token, grant_type=refresh_token (fixtures
    token-refresh-request/response). Every refresh returns a new refresh
    token; the old one keeps working (Entra does not make them single-use)
    until its grant is revoked."""

    def __init__(self, app):
        self.app = app
        self.store = app.store

    def _error(self, status, error, code, text):
        now = datetime.now(UTC)
        trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
        stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
        return Response(status, {
            "error": error,
            "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\n"
                                 f"Correlation ID: {corr}\r\nTimestamp: {stamp}",
            "error_codes": [code], "timestamp": stamp, "trace_id": trace, "correlation_id": corr,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}"})

    def handle(self, req, rec, tenant):
        rec["op"] = "token"
        return self.app.run_with_faults(req, rec, "token", False, lambda: self._grant(req, rec),
                                        oauth=True)

    def _grant(self, req, rec):
        ctype = (req.headers.get("Content-Type") or "").lower()
        if req.method != "POST":
            return self._error(405, "invalid_request", 900561,
                               "The endpoint only accepts POST requests.")
        if "x-www-form-urlencoded" not in ctype:
            return self._error(400, "invalid_request", 900144,
                               "The request body must contain the following parameter: 'grant_type'.")
        form = {k: v[0] for k, v in urllib.parse.parse_qs(req.body.decode("utf-8", "replace"),
                                                          keep_blank_values=True).items()}
        for name in ("client_id", "grant_type"):
            if not form.get(name):
                return self._error(400, "invalid_request", 900144,
                                   f"The request body must contain the following parameter: '{name}'.")
        if form["grant_type"] != "refresh_token":
            return self._error(400, "unsupported_grant_type", 70003,
                               "The app requested an unsupported grant type.")
        rt = form.get("refresh_token")
        if not rt:
            return self._error(400, "invalid_request", 900144,
                               "The request body must contain the following parameter: 'refresh_token'.")
        with self.store.lock:
            grant = self.store.grant_of(rt)
            rec["credential"] = grant
            if grant in self.store.revoked:
                # AADSTS50173 (fixture token-invalid-grant-revoked.aadsts50173.issue-capture.json)
                return self._error(400, "invalid_grant", 50173,
                                   "The provided grant has expired due to it being revoked, a fresh "
                                   "auth token is needed. The user might have changed or reset their "
                                   "password.")
            tok, ttl = self.store.mint(grant)
            new_rt = "M.C5" + b64url(os.urandom(30))
            self.store.grants[new_rt] = grant
        self.app.count(grant, "token")
        return Response(200, {"token_type": "Bearer",
                              "scope": form.get("scope") or "https://graph.microsoft.com/Calendars.ReadWrite",
                              "expires_in": ttl, "ext_expires_in": ttl, "access_token": tok,
                              "refresh_token": new_rt})


class ControlApi:
    def __init__(self, app):
        self.app = app
        self.store = app.store

    def handle(self, req):
        s = tuple(req.segs[1:])
        m = req.method
        routes = {
            ("GET", ("health",)): self.health, ("POST", ("reset",)): self.reset,
            ("GET", ("config",)): self.config_get, ("POST", ("config",)): self.config_set,
            ("GET", ("calendars",)): self.calendars_list, ("POST", ("calendars",)): self.calendars_add,
            ("GET", ("events",)): self.events_dump, ("POST", ("events",)): self.events_host,
            ("GET", ("subscriptions",)): self.subs_list,
            ("POST", ("subscriptions", "expire")): self.subs_expire,
            ("POST", ("lifecycle",)): self.lifecycle,
            ("POST", ("notify",)): self.notify,
            ("POST", ("expire_delta_tokens",)): self.expire_delta,
            ("GET", ("faults",)): self.faults_list, ("POST", ("faults",)): self.faults_add,
            ("DELETE", ("faults",)): self.faults_clear,
            ("GET", ("notification_faults",)): self.nfaults_list,
            ("POST", ("notification_faults",)): self.nfaults_add,
            ("DELETE", ("notification_faults",)): self.nfaults_clear,
            ("GET", ("notifications",)): self.notifications,
            ("DELETE", ("notifications",)): self.notifications_clear,
            ("POST", ("notifications", "drain")): self.drain,
            ("GET", ("requests",)): self.requests_list, ("DELETE", ("requests",)): self.requests_clear,
            ("GET", ("usage",)): self.usage,
            ("POST", ("tokens",)): self.tokens_mint,
            ("POST", ("expire_access_tokens",)): self.expire_access_tokens,
            ("POST", ("revoke",)): self.revoke, ("POST", ("unrevoke",)): self.unrevoke,
        }
        handler = routes.get((m, s))
        try:
            if handler is None:
                raise ControlError(404, f"no control endpoint {m} {req.path}")
            return handler(req)
        except ControlError as e:
            return Response(e.status, {"error": e.message})
        except GraphError as e:
            return Response(e.status, {"error": e.message, "graph_error": e.body()})

    @staticmethod
    def _body(req):
        if not req.body.strip():
            return {}
        try:
            b = json.loads(req.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise ControlError(400, "body is not valid JSON") from None
        if not isinstance(b, dict):
            raise ControlError(400, "body must be a JSON object")
        return b

    def health(self, req):
        with self.store.lock:
            return Response(200, {"ok": True, "base_url": self.app.base_url,
                                  "user_id": self.store.user_id, "upn": self.store.upn,
                                  "tenant_id": self.store.tenant_id,
                                  "default_calendar": self.store.default_cal})

    def reset(self, req):
        body = self._body(req)
        with self.app.faults.lock:
            self.app.faults.rules.clear()
        self.app.notifier.clear()
        with self.store.lock:
            self.store.reset(self.store.config if body.get("keep_config") else dict(DEFAULT_CONFIG))
        with self.app.log_lock:
            self.app.requests.clear()
            self.app.usage.clear()
        return Response(200, {"ok": True})

    CONFIG_CHECK = {
        "access_token_ttl": lambda v: isinstance(v, int) and v > 0,
        "max_subscription_minutes": lambda v: isinstance(v, int) and v > 0,
        "expiry_policy": lambda v: v in ("reject", "clamp"),
        "validation_timeout": lambda v: isinstance(v, (int, float)) and v > 0,
        "notification_timeout": lambda v: isinstance(v, (int, float)) and v > 0,
        "retry_delays": lambda v: isinstance(v, list) and len(v) <= 20 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 3600 for x in v),
        "missed_on_drop": lambda v: isinstance(v, bool),
        "batch_ms": lambda v: isinstance(v, int) and 0 <= v <= 10000,
        "delta_page_size": lambda v: isinstance(v, int) and 1 <= v <= 1000,
        "if_match": lambda v: isinstance(v, bool),
        "transaction_id_mode": lambda v: v in ("return_existing", "conflict"),
        "strict_query": lambda v: isinstance(v, bool),
        "log_limit": lambda v: isinstance(v, int) and v > 0,
    }

    def config_get(self, req):
        with self.store.lock:
            return Response(200, dict(self.store.config))

    def config_set(self, req):
        body = self._body(req)
        for k, v in body.items():
            check = self.CONFIG_CHECK.get(k)
            if check is None:
                raise ControlError(400, f"unknown config key {k!r}")
            if isinstance(v, bool) and k not in ("missed_on_drop", "if_match", "strict_query") or not check(v):
                raise ControlError(400, f"bad value for {k}: {v!r}")
        with self.store.lock:
            self.store.config.update(body)
            return Response(200, dict(self.store.config))

    def calendars_list(self, req):
        with self.store.lock:
            return Response(200, {"calendars": list(self.store.calendars.values()),
                                  "default": self.store.default_cal})

    def calendars_add(self, req):
        body = self._body(req)
        name = body.get("name", "Calendar")
        cid = body.get("id") or ("AAMkCAL" + b64url(os.urandom(12)) + "=")
        if not isinstance(cid, str) or not re.fullmatch(r"[A-Za-z0-9_=+\-]{1,200}", cid) \
                or not isinstance(name, str):
            raise ControlError(400, "id must be [A-Za-z0-9_=+-] and name a string")
        with self.store.lock:
            c = self.store.calendars.setdefault(cid, {"id": cid, "name": name, "epoch": 0})
            c["name"] = name
            return Response(200, c)

    def events_dump(self, req):
        cal = req.q("calendar")
        with self.store.lock:
            out = []
            for ev in self.store.events.values():
                if cal is not None and ev.cal != cal:
                    continue
                out.append({"id": ev.id, "calendar": ev.cal, "type": ev.type, "deleted": ev.deleted,
                            "rev": ev.rev, "singleValueExtendedProperties": ev.svep,
                            "extensions": list(ev.extensions.values()),
                            "event": self.store.render(ev) if not ev.deleted else None})
            return Response(200, {"rev": self.store.rev, "events": out})

    HOST_OPS = ("create", "update", "move", "delete", "respond")

    def _target(self, body):
        if isinstance(body.get("id"), str):
            return body["id"]
        series, orig = body.get("series"), body.get("original_start")
        if isinstance(series, str) and isinstance(orig, str):
            return occurrence_id(series, parse_instant(orig, "original_start"))
        raise ControlError(400, "give id, or series and original_start")

    def events_host(self, req):
        """A change made by the mailbox owner in Outlook: same code as the
        API, so it changes etags, counts for delta and notifies alike."""
        body = self._body(req)
        op = body.get("op", "create")
        if op not in self.HOST_OPS:
            raise ControlError(400, f"op must be one of {list(self.HOST_OPS)}")
        with self.store.lock:
            if op == "create":
                if not isinstance(body.get("event"), dict):
                    raise ControlError(400, "create needs event")
                ev, _ = self.store.create(body.get("calendar") or self.store.default_cal, body["event"])
            elif op == "update":
                if not isinstance(body.get("event"), dict):
                    raise ControlError(400, "update needs event")
                ev = self.store.update(self._target(body), body["event"])
            elif op == "move":
                patch = {}
                for name in ("start", "end"):
                    v = body.get(name)
                    if isinstance(v, str):
                        patch[name] = {"dateTime": v, "timeZone": "UTC"}
                    elif v is not None:
                        patch[name] = v
                if not patch:
                    raise ControlError(400, "move needs start and/or end")
                if len(patch) == 1:
                    kind, ev0 = self.store.get(self._target(body))[0], self.store.get(self._target(body))
                    if kind == "occurrence":
                        m, key = ev0[1], ev0[2]
                        s0, e0 = key, key + (m.end - m.start)
                    else:
                        s0, e0 = ev0[1].start, ev0[1].end
                    if "start" in patch:
                        ns, _ = parse_dtz(patch["start"], "start")
                        patch["end"] = {"dateTime": fmt_local(ns + (e0 - s0), "UTC"), "timeZone": "UTC"}
                    else:
                        ne, _ = parse_dtz(patch["end"], "end")
                        patch["start"] = {"dateTime": fmt_local(ne - (e0 - s0), "UTC"), "timeZone": "UTC"}
                ev = self.store.update(self._target(body), patch)
            elif op == "respond":
                target = self.store.get(self._target(body))
                ev = target[1] if target[0] == "stored" else None
                cur = (ev or target[1]).attendees
                email, resp = body.get("email"), body.get("response")
                if resp not in ATTENDEE_RESPONSES or not isinstance(email, str):
                    raise ControlError(400, f"respond needs email and response in {list(ATTENDEE_RESPONSES)}")
                if not any(a["emailAddress"]["address"].lower() == email.lower() for a in cur):
                    raise ControlError(404, f"no attendee {email!r}")
                ev = self.store.update(self._target(body), {})
                for a in ev.attendees:
                    if a["emailAddress"]["address"].lower() == email.lower():
                        a["status"] = {"response": resp, "time": fmt7(datetime.now(UTC)).replace(".0000000", "")}
            else:
                self.store.delete(self._target(body))
                return Response(200, {"deleted": self._target(body)})
            return Response(200, {"event": self.store.render(ev)})

    def subs_list(self, req):
        with self.store.lock:
            return Response(200, {"subscriptions": [
                dict(self.store.sub_json(s), state=s.state, calendar=s.calendar)
                for s in self.store.live_subscriptions()]})

    def subs_expire(self, req):
        body = self._body(req)
        with self.store.lock:
            sub = self.store.subscriptions.get(body.get("id"))
            if sub is None:
                raise ControlError(404, "no such subscription")
            sub.expires = datetime.now(UTC) - timedelta(seconds=1)
            self.store.live_subscriptions()
        return Response(200, {"expired": body["id"]})

    LIFECYCLE = ("reauthorizationRequired", "subscriptionRemoved", "missed")

    def lifecycle(self, req):
        """Sends a lifecycle notification (webhooks-lifecycle): reauthorizationRequired
        stops change notifications until reauthorize or PATCH;
        subscriptionRemoved deletes the subscription; missed only tells."""
        body = self._body(req)
        event = body.get("event")
        if event not in self.LIFECYCLE:
            raise ControlError(400, f"event must be one of {list(self.LIFECYCLE)}")
        with self.store.lock:
            subs = {s.id: s for s in self.store.live_subscriptions()}
            sub = subs.get(body.get("subscription"))
            if sub is None:
                raise ControlError(404, "no such subscription")
            if event == "reauthorizationRequired":
                sub.state = "reauthorization_required"
            elif event == "subscriptionRemoved":
                del self.store.subscriptions[sub.id]
            rec = self.app.notifier.lifecycle(self.store, sub, event)
        return Response(200, {"sent": rec["seq"], "status": rec["status"]})

    def notify(self, req):
        """A forged or spurious change notification for an item (the test
        decides clientState): {"subscription", "id", "change_type"?, "client_state"?}."""
        body = self._body(req)
        with self.store.lock:
            subs = {s.id: s for s in self.store.live_subscriptions()}
            sub = subs.get(body.get("subscription"))
            if sub is None:
                raise ControlError(404, "no such subscription")
            eid = body.get("id") or new_item_id()
            res = f"Users/{self.store.user_id}/Events/{eid}"
            item = {"subscriptionId": sub.id, "subscriptionExpirationDateTime": fmt7_offset(sub.expires),
                    "changeType": body.get("change_type", "updated"), "resource": res,
                    "resourceData": {"@odata.type": "#Microsoft.Graph.Event", "@odata.id": res,
                                     "@odata.etag": 'W/"forged"', "id": eid},
                    "clientState": body.get("client_state", sub.client_state),
                    "tenantId": self.store.tenant_id}
            rec = self.app.notifier.enqueue(sub, "change", item, sub.notification_url)
        return Response(200, {"sent": rec["seq"]})

    def expire_delta(self, req):
        body = self._body(req)
        mode = body.get("mode", "syncStateNotFound")
        if mode not in ("syncStateNotFound", "resyncRequired", "location"):
            raise ControlError(400, "mode must be syncStateNotFound, resyncRequired or location")
        with self.store.lock:
            cals = [self.store.calendars.get(body["calendar"])] if body.get("calendar") else \
                list(self.store.calendars.values())
            if None in cals:
                raise ControlError(404, "no such calendar")
            for c in cals:
                c["epoch"] += 1
                c["expire_mode"] = mode
            return Response(200, {"expired": [c["id"] for c in cals]})

    def faults_list(self, req):
        return Response(200, {"faults": [dict(r) for r in self.app.faults.rules]})

    def faults_add(self, req):
        return Response(200, self.app.faults.add(self._body(req)))

    def faults_clear(self, req):
        with self.app.faults.lock:
            self.app.faults.rules.clear()
        return Response(200, {"ok": True})

    def nfaults_list(self, req):
        return Response(200, {"rules": [dict(r) for r in self.app.notifier.rules]})

    def nfaults_add(self, req):
        return Response(200, self.app.notifier.add_rule(self._body(req)))

    def nfaults_clear(self, req):
        with self.app.notifier.cv:
            self.app.notifier.rules.clear()
        return Response(200, {"ok": True})

    def _qint(self, req, name, default):
        v = req.q(name)
        if v is None:
            return default
        try:
            return int(v)
        except ValueError:
            raise ControlError(400, f"{name} must be an integer") from None

    def notifications(self, req):
        since = self._qint(req, "since", 0)
        kind, sub = req.q("kind"), req.q("subscription")
        n = self._qint(req, "wait_count", None)
        if n is not None:
            self.app.notifier.wait(n, self._qint(req, "timeout_ms", 5000) / 1000.0, since, kind, sub)
        recs = self.app.notifier.records(since, kind, sub)
        return Response(200, {"notifications": recs, "count": len(recs)})

    def notifications_clear(self, req):
        with self.app.notifier.cv:
            self.app.notifier.log.clear()
        return Response(200, {"ok": True})

    def drain(self, req):
        body = self._body(req)
        ok = self.app.notifier.drain(body.get("timeout_ms", 5000) / 1000.0)
        return Response(200 if ok else 504, {"drained": ok})

    def requests_list(self, req):
        since = self._qint(req, "since", 0)
        op, method = req.q("op"), req.q("method")
        with self.app.log_lock:
            out = [r for r in self.app.requests if r["seq"] > since
                   and (op is None or r["op"] == op) and (method is None or r["method"] == method)]
        return Response(200, {"requests": out, "count": len(out)})

    def requests_clear(self, req):
        with self.app.log_lock:
            self.app.requests.clear()
        return Response(200, {"ok": True})

    def usage(self, req):
        with self.app.log_lock:
            out = []
            for cred, u in sorted(self.app.usage.items()):
                out.append({"credential": cred, "total": u["total"], "by_op": dict(u["by_op"]),
                            "max_per_second": max(u["seconds"].values(), default=0),
                            "per_second": {str(k): v for k, v in sorted(u["seconds"].items())}})
        return Response(200, {"credentials": out})

    def tokens_mint(self, req):
        body = self._body(req)
        rt = body.get("refresh_token", "control")
        if not isinstance(rt, str):
            raise ControlError(400, "refresh_token must be a string")
        with self.store.lock:
            grant = self.store.grant_of(rt)
            tok, ttl = self.store.mint(grant, body.get("expires_in"))
        return Response(200, {"access_token": tok, "expires_in": ttl, "refresh_token": rt,
                              "grant": grant})

    def expire_access_tokens(self, req):
        with self.store.lock:
            for info in self.store.access_tokens.values():
                info["expires_at"] = 0
            return Response(200, {"expired": len(self.store.access_tokens)})

    def revoke(self, req, undo=False):
        rt = self._body(req).get("refresh_token")
        if not isinstance(rt, str):
            raise ControlError(400, "refresh_token required")
        with self.store.lock:
            g = self.store.grant_of(rt)
            (self.store.revoked.discard if undo else self.store.revoked.add)(g)
        return Response(200, {"grant": g, "revoked": not undo})

    def unrevoke(self, req):
        return self.revoke(req, undo=True)


LOGGED_HEADERS = ("authorization", "if-match", "if-none-match", "prefer", "content-type",
                  "user-agent", "client-request-id")


class App:
    def __init__(self, verbose=False):
        self.verbose = verbose
        self.store = Store()
        self.notifier = Notifier(self.store, self.store.config["log_limit"])
        self.store.notifier = self.notifier
        self.faults = FaultInjector()
        self.log_lock = threading.Lock()
        self.requests = deque(maxlen=self.store.config["log_limit"])
        self.req_seq = itertools.count(1)
        self.usage = {}
        self.base_url = "http://127.0.0.1"
        self.graph = GraphApi(self)
        self.token = TokenEndpoint(self)
        self.control = ControlApi(self)

    def count(self, cred, op):
        sec = int(time.time())
        with self.log_lock:
            u = self.usage.setdefault(cred, {"total": 0, "by_op": {}, "seconds": {}})
            u["total"] += 1
            u["by_op"][op] = u["by_op"].get(op, 0) + 1
            u["seconds"][sec] = u["seconds"].get(sec, 0) + 1
            if len(u["seconds"]) > 3600:
                del u["seconds"][min(u["seconds"])]

    @staticmethod
    def _exec(execute):
        try:
            return execute()
        except GraphError as e:
            return error_response(e)

    def run_with_faults(self, req, rec, op, is_api, execute, oauth=False):
        rule = self.faults.take(op, req.method, req.path, is_api)
        if rule is None:
            return self._exec(execute)
        rec["fault"] = rule["id"]
        if rule["delay_ms"]:
            time.sleep(rule["delay_ms"] / 1000.0)
        if rule["status"] is None and rule["mode"] is None:
            return self._exec(execute)
        real = self._exec(execute) if rule["apply"] or rule["mode"] in ("truncated_json", "empty_body") \
            else None
        if rule["mode"] == "disconnect":
            resp = Response(0)
            resp.disconnect = True
        elif rule["mode"] == "truncated_json":
            data = real.payload() or b'{"value": ['
            resp = Response(rule["status"] or real.status, raw=data[:max(1, len(data) // 2)])
        elif rule["mode"] == "empty_body":
            resp = Response(rule["status"] or real.status, raw=b"")
        elif oauth:
            err = {429: "temporarily_unavailable", 503: "temporarily_unavailable",
                   500: "server_error"}.get(rule["status"], rule["code"] or "invalid_request")
            resp = Response(rule["status"], {"error": rule["code"] or err,
                                             "error_description": rule["message"] or "Injected fault."})
            if rule["retry_after"] is not None:
                resp.headers["Retry-After"] = str(rule["retry_after"])
        else:
            resp = error_response(self.faults.error_for(rule))
        return resp

    def handle(self, h, method):
        t0 = time.monotonic()
        raw_path, _, raw_query = h.path.partition("?")
        try:
            body = h.read_body()
        except ValueError:
            body = None
        req = Request(method, raw_path, raw_query, h.headers, body or b"")
        if req.segs[:1] == ["_control"]:
            resp = self.control.handle(req) if body is not None else Response(400, {"error": "bad body"})
            h.send(resp)
            return
        rec = {"time": fmt7(datetime.now(UTC)), "method": method, "path": req.path,
               "query": req.query, "op": None, "credential": None, "fault": None,
               "headers": {k: h.headers[k] for k in LOGGED_HEADERS if h.headers.get(k) is not None}}
        try:
            rec["body"] = json.loads(req.body) if req.body else None
        except ValueError:
            rec["body"] = req.body.decode("utf-8", "replace")[:65536]
        if body is None:
            resp = error_response(bad_request("Malformed request body.", "BadRequest"))
            h.close_connection = True
        elif len(body) > MAX_BODY:
            resp = error_response(GraphError(413, "RequestEntityTooLarge", "Request body too large."))
        elif req.segs[:1] == ["v1.0"]:
            resp = self.graph.handle(req, rec)
        elif TOKEN_RE.match(raw_path):
            resp = self.token.handle(req, rec, TOKEN_RE.match(raw_path).group(1))
        else:
            resp = error_response(GraphError(404, "NotFound", "Not found."))
        rec["status"] = None if resp.disconnect else resp.status
        rec["duration_ms"] = round((time.monotonic() - t0) * 1000, 1)
        with self.log_lock:
            rec["seq"] = next(self.req_seq)
            self.requests.append(rec)
        h.send(resp)

    def close(self):
        self.notifier.drain(1.0)
        self.notifier.stop()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if self.server.app.verbose:
            sys.stderr.write("fake_graph: " + (fmt % args) + "\n")

    def read_body(self):
        cl = self.headers.get("Content-Length")
        if cl is None:
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                raise ValueError("chunked bodies are not supported by the fake")
            return b""
        n = int(cl)
        if n < 0 or n > 16 * MAX_BODY:
            raise ValueError("bad Content-Length")
        return self.rfile.read(n)

    def send(self, resp):
        if resp.disconnect:
            self.close_connection = True
            return
        data = resp.payload()
        self.send_response(resp.status)
        bodiless = resp.status in (204, 304)
        if not bodiless:
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(data)))
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.send_header("request-id", str(uuid.uuid4()))
        self.end_headers()
        if not bodiless:
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
                self.send(error_response(GraphError(500, "generalException", "General exception.")))
            except Exception:
                pass

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PUT(self):
        self._dispatch("PUT")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


# ---------------------------------------------------------------------------
# Test helper
# ---------------------------------------------------------------------------

class FakeGraph:
    """Runs tests/fake_graph.py as a subprocess and talks to it.

        fg = FakeGraph().start()
        fg.graph_base, fg.token_url        # for calsync's config
        fg.control("POST", "/faults", {"status": 429, "retry_after": 1})
        fg.host(op="create", event={...})
        fg.api("GET", "/me/events", token=fg.access_token())
        fg.stop()                          # SIGTERM; the exit status
    """

    def __init__(self, port=0, verbose=False):
        self.port = port
        self.verbose = verbose
        self.proc = None

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}"

    @property
    def graph_base(self):
        return self.base_url + API_PREFIX

    @property
    def token_url(self):
        return self.base_url + "/common/oauth2/v2.0/token"

    def start(self, timeout=10):
        import select
        import subprocess
        cmd = [sys.executable, os.path.abspath(__file__), "--port", str(self.port)]
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
                raise RuntimeError(f"fake_graph did not start (output {line!r})")
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                ch = os.read(self.proc.stdout.fileno(), 1)
                if ch:
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

    def request(self, method, path, body=None, headers=None, timeout=15):
        """(status, parsed JSON or text or None, lower-cased headers)."""
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
        status, parsed, _ = self.request(method, CONTROL_PREFIX + path, body)
        if not 200 <= status < 300:
            raise RuntimeError(f"control {method} {path} -> {status}: {parsed}")
        return parsed

    def host(self, **op):
        return self.control("POST", "/events", op).get("event")

    def access_token(self, refresh_token="test-refresh-token", expires_in=None):
        body = {"refresh_token": refresh_token}
        if expires_in is not None:
            body["expires_in"] = expires_in
        return self.control("POST", "/tokens", body)["access_token"]

    def api(self, method, path, body=None, token=None, query=None, headers=None):
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = "Bearer " + token
        url = path if path.startswith(API_PREFIX + "/") else API_PREFIX + path
        if query:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(query, doseq=True)
        return self.request(method, url, body, hdrs)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Fake Microsoft Graph calendar + token endpoint")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    app = App(verbose=args.verbose)
    server = Server(("127.0.0.1", args.port), Handler)
    server.app = app
    port = server.server_address[1]
    app.base_url = f"http://127.0.0.1:{port}"

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
