"""docs/openapi.yaml as a test oracle (issue 16 item 6).

check_document() validates the document: every Schema Object against the
JSON Schema 2020-12 meta-schema (python3-jsonschema, Debian), every $ref
resolving, every operation answering something, every route of src/api.c
described and nothing described that src/api.c does not route; and, where
the openapi-spec-validator package is installed (PyPI only, not in Debian
12), the whole document against the OpenAPI 3.1 schema as well.

validate_response() and validate_webhook() check one answer or webhook
body against its schema; tests/e2e/harness.py calls the first on every
response the end-to-end suite receives, tests/e2e/receiver.py the second
on every webhook it is sent.
"""
import copy
import json
import os
import re
import sys
import warnings

import jsonschema
import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DOC_PATH = os.path.join(ROOT, "docs", "openapi.yaml")
API_C = os.path.join(ROOT, "src", "api.c")
META = jsonschema.Draft202012Validator

# Statuses http.c may answer on any route before the handler runs (Host,
# Origin, token, body size and type, saturation): always an Error body.
ANY_ROUTE = {"400", "401", "403", "404", "413", "415", "503"}
METHODS = ("get", "put", "post", "delete", "patch")

_doc = None
_routes = None


def doc():
    global _doc, _routes
    if _doc is None:
        with open(DOC_PATH) as f:
            _doc = yaml.safe_load(f)
        _routes = []
        for path, item in _doc["paths"].items():
            rx = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")
            _routes.append((rx, path, item))
    return _doc


def _walk_schemas(node, where, out):
    """Every Schema Object of the document (those under a `schema` key and
    components.schemas), with where it is."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "schema" and isinstance(v, dict):
                out.append((where + "/schema", v))
            _walk_schemas(v, where + "/" + str(k), out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _walk_schemas(v, "%s/%d" % (where, i), out)


def _refs(node, out):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                out.append(v)
            else:
                _refs(v, out)
    elif isinstance(node, list):
        for v in node:
            _refs(v, out)


def _pointer(d, ref):
    assert ref.startswith("#/"), "only local $refs: " + ref
    node = d
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or part not in node:
            raise KeyError(ref)
        node = node[part]
    return node


def api_routes():
    """(METHOD, path) of every route in src/api.c's table."""
    with open(API_C) as f:
        text = f.read()
    return set(re.findall(r'\{"(GET|POST|PUT|PATCH|DELETE)", "(/[^"]*)"', text))


def check_document():
    """A list of problems with the document (empty when it is valid)."""
    d = doc()
    problems = []
    if d.get("openapi", "")[:4] != "3.1.":
        problems.append("openapi must be 3.1.x")
    for key in ("info", "paths", "components"):
        if key not in d:
            problems.append("missing " + key)
    schemas = []
    _walk_schemas(d, "#", schemas)
    for name, s in d.get("components", {}).get("schemas", {}).items():
        schemas.append(("#/components/schemas/" + name, s))
    for where, s in schemas:
        try:
            META.check_schema(s)
        except jsonschema.SchemaError as e:
            problems.append("%s: %s" % (where, e.message))
    refs = []
    _refs(d, refs)
    for ref in refs:
        try:
            _pointer(d, ref)
        except (KeyError, AssertionError):
            problems.append("unresolved $ref " + ref)
    described = set()
    for path, item in d["paths"].items():
        for m in METHODS:
            if m in item:
                described.add((m.upper(), path))
                if not item[m].get("responses"):
                    problems.append("%s %s: no responses" % (m.upper(), path))
    routed = api_routes()
    for r in sorted(routed - described):
        problems.append("route not described: %s %s" % r)
    for r in sorted(described - routed):
        problems.append("described but not routed: %s %s" % r)
    for name in ("booking", "calendarError"):
        if name not in d.get("webhooks", {}):
            problems.append("webhook not described: " + name)
    try:
        from openapi_spec_validator import validate as oas_validate
    except ImportError:
        oas_validate = None
    if oas_validate:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                oas_validate(copy.deepcopy(d))
        except Exception as e:  # noqa: BLE001 -- its error classes vary by version
            problems.append("openapi-spec-validator: %s" % e)
    return problems


def _validate(schema, instance, what):
    """Validates instance against a schema of the document; its $refs are
    resolved against the document's components."""
    d = doc()
    root = dict(schema)
    root["components"] = d["components"]
    errors = sorted(META(root).iter_errors(instance), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        raise AssertionError("%s does not match docs/openapi.yaml: %s at %s\nbody: %s"
                             % (what, e.message, "/".join(map(str, e.path)) or "(root)",
                                json.dumps(instance)[:2000]))


def _resolve(node):
    while isinstance(node, dict) and "$ref" in node:
        node = _pointer(doc(), node["$ref"])
    return node


def validate_response(method, url, status, body_bytes, content_type):
    """Raises AssertionError when the answer does not match the document."""
    d = doc()
    path = url.split("?", 1)[0]
    what = "%s %s -> %s" % (method, path, status)
    status = str(status)
    ctype = (content_type or "").split(";")[0].strip().lower()
    op = None
    for rx, _, item in _routes:
        if rx.match(path) and method.lower() in item:
            op = item[method.lower()]
            break
    if op is None or (status not in op["responses"] and status in ANY_ROUTE):
        # no such route or method, or an answer http.c gives before routing
        if status not in ANY_ROUTE:
            raise AssertionError("%s: not described in docs/openapi.yaml" % what)
        if ctype == "application/json" and body_bytes:
            _validate({"$ref": "#/components/schemas/Error"}, json.loads(body_bytes), what)
        return
    resp = op["responses"].get(status)
    if resp is None:
        raise AssertionError("%s: status not described in docs/openapi.yaml" % what)
    resp = _resolve(resp)
    content = resp.get("content")
    if not content:
        return
    if ctype not in content:
        raise AssertionError("%s: Content-Type %r, described %s" % (what, ctype, list(content)))
    schema = content[ctype].get("schema")
    if schema is not None and ctype == "application/json":
        _validate(schema, json.loads(body_bytes), what)


def validate_webhook(body):
    """body: the parsed JSON of one outbound webhook."""
    name = "calendarError" if body.get("triggerEvent") == "CALENDAR_ERROR" else "booking"
    op = doc()["webhooks"][name]["post"]
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    _validate(schema, body, "webhook " + str(body.get("triggerEvent")))


if __name__ == "__main__":
    found = check_document()
    for p in found:
        print("docs/openapi.yaml: " + p)
    if not found:
        print("docs/openapi.yaml: valid (%d paths, %d schemas)"
              % (len(doc()["paths"]), len(doc()["components"]["schemas"])))
    sys.exit(1 if found else 0)
