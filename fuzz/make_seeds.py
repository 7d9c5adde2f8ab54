#!/usr/bin/env python3
"""Generates seed inputs for the fuzz targets from the project's own tests
and, when present, the shared Google fixtures. Nothing generated here is
committed: fuzz/run.sh writes it under build/fuzz/seeds/<target>/ at run
time (hand-made seeds live in fuzz/seeds/<target>/).

Sources:
  tests/e2e/*.py, tests/*.py   dict literals (request bodies, Google-shaped
                               events), path strings, header dicts
  tests/unit/*.c               C string literals (times, ids, JSON, configs)
  $CALSYNC_FIXTURES or /work/shared/fixtures/google   real Google payloads:
                               whole pages, each item, error bodies, ids

Usage: make_seeds.py OUTDIR
"""
import ast
import glob
import hashlib
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.environ.get("CALSYNC_FIXTURES", "/work/shared/fixtures/google")
MAX_SEED = 64 * 1024

out_dir = sys.argv[1]
seeds = {}   # target -> set(bytes)


def add(target, data):
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if 0 < len(data) <= MAX_SEED:
        seeds.setdefault(target, set()).add(data)


TIME_RE = re.compile(r"\d{4}-\d\d-\d\d(?:[Tt]\d\d:\d\d:\d\d(?:\.\d+)?(?:[Zz]|[+-]\d\d:\d\d)?)?")
API_KEYS = [("refresh_token", 0), ("credential_id", 1), ("uid", 2), ("title", 3),
            ("start", 3), ("reason", 4)]


def add_api_body(d):
    body = json.dumps(d)
    picked = {sel for key, sel in API_KEYS if key in d}
    for sel in picked or range(5):
        add("fuzz_json_api", bytes([sel]) + body.encode())


def add_event_like(d):
    if any(k in d for k in ("items", "error", "start", "etag", "originalStartTime")):
        add("fuzz_google_event", json.dumps(d))
    if isinstance(d.get("id"), str):
        add("fuzz_instance_id", d["id"])


INTAKE_HEADERS = ["x-goog-channel-id", "x-goog-channel-token",
                  "x-goog-resource-state", "x-goog-message-number"]


def add_intake(headers):
    """fuzz_intake_headers input: a byte of which headers are present, then
    their values joined by newlines; also with the target's known channel."""
    h = {str(k).lower(): str(v) for k, v in headers.items()}
    for cid, tok in ((None, None), ("ch-live", "tok-123"), ("ch-old", "tok-old")):
        vals, flags = [], 0
        for i, name in enumerate(INTAKE_HEADERS):
            v = h.get(name)
            if name.endswith("channel-id") and cid:
                v = cid
            if name.endswith("channel-token") and tok:
                v = tok
            if v is not None:
                flags |= 1 << i
            vals.append(v or "")
        add("fuzz_intake_headers", bytes([flags]) + "\n".join(vals).encode())


def walk_text(text):
    for m in TIME_RE.finditer(text):
        add("fuzz_rfc3339", m.group(0))
    for m in re.finditer(r"[A-Za-z0-9]+_\d{8}(?:T\d{6}Z)?", text):
        add("fuzz_instance_id", m.group(0))


# ---- Python tests: dict literals, path strings, header dicts
def literal(node):
    try:
        return ast.literal_eval(node)
    except Exception:
        return None


def fstring_text(node):
    parts = []
    for v in node.values:
        if isinstance(v, ast.Constant) and isinstance(v.value, str):
            parts.append(v.value)
        else:
            parts.append("1")
    return "".join(parts)


for path in sorted(glob.glob(os.path.join(ROOT, "tests", "**", "*.py"), recursive=True)):
    src = open(path, encoding="utf-8").read()
    walk_text(src)
    try:
        tree = ast.parse(src)
    except SyntaxError:
        continue
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            d = literal(node)
            if isinstance(d, dict):
                try:
                    add_api_body(d) if not any(k.lower().startswith("x-goog") for k in d if isinstance(k, str)) else None
                    add_event_like(d)
                except TypeError:
                    pass
                if any(isinstance(k, str) and k.lower().startswith("x-goog") for k in d):
                    add_intake(d)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            s = node.value
            if s.startswith(("/v1", "/webhooks", "/healthz", "/metrics")):
                add("fuzz_http_match", s.split("?")[0])
            if s.lstrip().startswith("{"):
                add("fuzz_json_api", b"\x02" + s.encode())
                add("fuzz_google_event", s)
        elif isinstance(node, ast.JoinedStr):
            s = fstring_text(node)
            if s.startswith(("/v1", "/webhooks")):
                add("fuzz_http_match", s.split("?")[0])

# ---- C unit tests: string literals (adjacent ones joined)
C_STR = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
ESC = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "0": "\0"}


def c_unescape(s):
    return re.sub(r"\\(x[0-9a-fA-F]{1,2}|.)",
                  lambda m: chr(int(m.group(1)[1:], 16)) if m.group(1)[0] == "x"
                  else ESC.get(m.group(1), m.group(1)), s)


for path in sorted(glob.glob(os.path.join(ROOT, "tests", "unit", "*.c"))):
    src = open(path, encoding="utf-8").read()
    walk_text(src)
    # join literals separated only by whitespace: C concatenation
    for m in re.finditer(r'(?:"(?:[^"\\\n]|\\.)*"\s*)+', src):
        s = "".join(c_unescape(x) for x in C_STR.findall(m.group(0)))
        name = os.path.basename(path)
        if name == "test_config.c" and ("=" in s or s == ""):
            add("fuzz_config", s)
        if s.startswith("/"):
            add("fuzz_http_match", s)
        if s.lstrip().startswith("{"):
            add("fuzz_google_event", s)
            add("fuzz_json_api", b"\x02" + s.encode())
        if name == "test_util.c":
            add("fuzz_rfc3339", s)
            add("fuzz_json_api", b"\x03" + s.encode())

# ---- Google fixtures (optional)
for path in sorted(glob.glob(os.path.join(FIXTURES, "*.json"))):
    if "discovery" in path:
        continue
    raw = open(path, "rb").read()
    walk_text(raw.decode("utf-8", "replace"))
    try:
        doc = json.loads(raw)
    except ValueError:
        continue
    if isinstance(doc, dict):
        if any(k.lower().startswith("x-goog") for k in doc):
            add_intake(doc)
            continue
        add("fuzz_google_event", json.dumps(doc))
        for item in doc.get("items", []) if isinstance(doc.get("items"), list) else []:
            if isinstance(item, dict):
                add_event_like(item)
                add("fuzz_google_event", json.dumps({"items": [item]}))

for target, items in sorted(seeds.items()):
    d = os.path.join(out_dir, target)
    os.makedirs(d, exist_ok=True)
    for data in items:
        with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
            f.write(data)
    print(f"seeds: {target}: {len(items)}")
