#!/usr/bin/env python3
"""Lists every log event of the C sources with its fields, read from the
log_debug/info/warn/error(...) and log_event(LEVEL, ...) calls: the event
name is the string literal, the fields are the `key=` words of the format
string (adjacent literals joined).

    python3 tools/log_events.py            # the Markdown table of docs/operations.md
    python3 tools/log_events.py --check    # exit 1 if docs/operations.md differs

tests/e2e/test_ops.py runs --check, so the documented list cannot drift
from the code. Python 3 standard library only."""
import glob
import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DOC = os.path.join(ROOT, "docs", "operations.md")
BEGIN = "<!-- log-events:begin (tools/log_events.py writes this table) -->"
END = "<!-- log-events:end -->"

CALL = re.compile(
    r'\blog_(debug|info|warn|error)\(\s*"([^"]+)"\s*,\s*((?:"(?:[^"\\]|\\.)*"\s*)+)'
    r'|\blog_event\(\s*([^,]+?)\s*,\s*"([^"]+)"\s*,\s*((?:"(?:[^"\\]|\\.)*"\s*)+)',
    re.S)
# log_info(phttp_ev(c, "retry", ev, sizeof ev), "key=%s"): an event of the
# shared provider exchange (src/provider/phttp.h), logged as <name>.retry
# by every provider that declares a struct phttp_client named <name>
SHARED = re.compile(
    r'\blog_(debug|info|warn|error)\(\s*phttp_ev\([^,]+,\s*"([^"]+)"[^)]*\)\s*,\s*'
    r'((?:"(?:[^"\\]|\\.)*"\s*)+)', re.S)
CLIENT = re.compile(r'struct\s+phttp_client\s+\w+\s*=\s*\{[^}]*?\.name\s*=\s*"([a-z0-9_]+)"',
                    re.S)
# log_info("x", "%s", "key=value"): the fields are in the argument
LITERAL_ARG = re.compile(r'\s*,\s*"((?:[^"\\]|\\.)*)"')
LITERAL = re.compile(r'"((?:[^"\\]|\\.)*)"')
FIELD = re.compile(r'(?:^|\s)([a-z_][a-z0-9_]*)=')


def level_of(expr):
    found = re.findall(r"LOG_(DEBUG|INFO|WARN|ERROR)", expr)
    return "/".join(sorted({f.lower() for f in found},
                           key=["debug", "info", "warn", "error"].index)) or expr


def events(root=ROOT):
    """{event: (levels set, fields list in first-seen order, files set)}"""
    out = {}
    files = sorted(glob.glob(os.path.join(root, "src", "**", "*.c"), recursive=True))
    texts, clients, shared = {}, [], []
    for path in files:
        if os.path.basename(path) == "log.c":
            continue
        text = open(path, encoding="utf-8").read()
        # comments out, so an example in a comment is not an event
        texts[path] = re.sub(r"/\*.*?\*/", lambda m: " " * len(m.group(0)), text, flags=re.S)
        clients += CLIENT.findall(texts[path])

    def add(name, level, fmt, path):
        fields = FIELD.findall("".join(LITERAL.findall(fmt)))
        lv, fl, fs = out.setdefault(name, (set(), [], set()))
        lv.update(level.split("/"))
        for f in fields:
            if f not in fl:
                fl.append(f)
        fs.add(os.path.relpath(path, os.path.join(root, "src")))

    for path, text in texts.items():
        for m in CALL.finditer(text):
            if m.group(1):
                level, name, fmt = m.group(1), m.group(2), m.group(3)
            else:
                level, name, fmt = level_of(m.group(4)), m.group(5), m.group(6)
            if "".join(LITERAL.findall(fmt)) == "%s":
                arg = LITERAL_ARG.match(text, m.end())
                fmt = '"%s"' % arg.group(1) if arg else ""
            add(name, level, fmt, path)
        for m in SHARED.finditer(text):
            for client in clients:
                add("%s.%s" % (client, m.group(2)), m.group(1), m.group(3), path)
    return out


def table(evs):
    order = ["debug", "info", "warn", "error"]
    rows = ["| event | level | fields |", "|---|---|---|"]
    for name in sorted(evs):
        lv, fields, files = evs[name]
        rows.append("| `%s` | %s | %s |" % (
            name, "/".join(sorted(lv, key=order.index)),
            " ".join("`%s`" % f for f in fields) or "-"))
    return "\n".join(rows)


def documented(doc_text):
    a, b = doc_text.find(BEGIN), doc_text.find(END)
    if a < 0 or b < 0:
        return None
    return doc_text[a + len(BEGIN):b].strip()


def main():
    want = table(events())
    if "--check" in sys.argv:
        got = documented(open(DOC, encoding="utf-8").read())
        if got != want:
            import difflib
            sys.stdout.writelines(difflib.unified_diff(
                (got or "").splitlines(True), want.splitlines(True),
                "docs/operations.md", "the source"))
            print("\nlog events: docs/operations.md is out of step with src/ "
                  "(python3 tools/log_events.py --write)")
            return 1
        print("log events: %d documented, in step with src/" % len(events()))
        return 0
    if "--write" in sys.argv:
        text = open(DOC, encoding="utf-8").read()
        a, b = text.find(BEGIN), text.find(END)
        text = text[:a + len(BEGIN)] + "\n" + want + "\n" + text[b:]
        open(DOC, "w", encoding="utf-8").write(text)
        return 0
    print(want)
    return 0


if __name__ == "__main__":
    sys.exit(main())
