"""TEST DOUBLE — not a schema registry for real use.

A small in-memory stand-in for a Confluent-compatible schema registry, because none can be
installed from this project's package sources. It implements the part of the documented REST API
that Headwater and the Python consumer in the tests use:

  POST /subjects/{subject}/versions                     register (same schema -> same id)
  GET  /schemas/ids/{id}                                 schema by id
  GET  /subjects/{subject}/versions/latest               latest version
  GET  /subjects/{subject}/versions/{version}            one version
  GET  /subjects                                         subject names
  POST /compatibility/subjects/{subject}/versions/latest compatibility check
  PUT  /config/{subject}                                 {"compatibility": "BACKWARD" | "NONE"}

Compatibility is a simplified BACKWARD check on record schemas: a field added without a default,
or a field whose type changed, is incompatible. Usage: python3 registry_double.py PORT
"""
import json
import re
import sys
from urllib.parse import urlsplit
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

schemas = {}  # id -> schema text
ids = {}  # canonical schema text -> id
subjects = {}  # subject -> [id, ...]
compatibility = {}  # subject -> level


def canonical(text):
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


def fields(text):
    parsed = json.loads(text)
    if isinstance(parsed, dict) and parsed.get("type") == "record":
        return {f["name"]: f for f in parsed.get("fields", [])}
    return None


def backward_compatible(new_text, old_text):
    new, old = fields(new_text), fields(old_text)
    if new is None or old is None:
        return True
    for name, field in new.items():
        if name not in old:
            if "default" not in field:
                return False
        elif json.dumps(field["type"], sort_keys=True) != json.dumps(old[name]["type"], sort_keys=True):
            return False
    return True


class Handler(BaseHTTPRequestHandler):
    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        length = int(self.headers.get("Content-Length", 0))
        return json.loads(self.rfile.read(length) or b"{}")

    def log_message(self, *args):
        pass

    @property
    def route(self):
        # clients add query parameters (?subject=…, ?deleted=…) that this double ignores
        return urlsplit(self.path).path.rstrip("/")

    def do_GET(self):
        if self.route == "/subjects":
            return self.reply(200, sorted(subjects))
        m = re.fullmatch(r"/schemas/ids/(\d+)", self.route)
        if m:
            schema_id = int(m.group(1))
            if schema_id in schemas:
                return self.reply(200, {"schema": schemas[schema_id]})
            return self.reply(404, {"error_code": 40403, "message": "Schema not found"})
        m = re.fullmatch(r"/subjects/([^/]+)/versions/(latest|\d+)", self.route)
        if m and m.group(1) in subjects:
            versions = subjects[m.group(1)]
            index = len(versions) - 1 if m.group(2) == "latest" else int(m.group(2)) - 1
            if 0 <= index < len(versions):
                schema_id = versions[index]
                return self.reply(200, {"subject": m.group(1), "version": index + 1, "id": schema_id, "schema": schemas[schema_id]})
        return self.reply(404, {"error_code": 40401, "message": "Subject not found"})

    def do_POST(self):
        m = re.fullmatch(r"/subjects/([^/]+)/versions", self.route)
        if m:
            subject, text = m.group(1), self.body()["schema"]
            key = canonical(text)
            versions = subjects.setdefault(subject, [])
            if key in ids and ids[key] in versions:
                return self.reply(200, {"id": ids[key]})
            if versions and compatibility.get(subject, "BACKWARD") != "NONE":
                if not backward_compatible(text, schemas[versions[-1]]):
                    return self.reply(409, {"error_code": 409, "message": f"Schema being registered is incompatible with an earlier schema for subject \"{subject}\""})
            schema_id = ids.setdefault(key, len(schemas) + 1)
            schemas[schema_id] = text
            versions.append(schema_id)
            return self.reply(200, {"id": schema_id})
        m = re.fullmatch(r"/compatibility/subjects/([^/]+)/versions/latest", self.route)
        if m:
            versions = subjects.get(m.group(1), [])
            ok = not versions or backward_compatible(self.body()["schema"], schemas[versions[-1]])
            return self.reply(200, {"is_compatible": ok})
        return self.reply(404, {"error_code": 404, "message": "Not found"})

    def do_PUT(self):
        m = re.fullmatch(r"/config/([^/]+)", self.route)
        if m:
            compatibility[m.group(1)] = self.body()["compatibility"]
            return self.reply(200, {"compatibility": compatibility[m.group(1)]})
        return self.reply(404, {"error_code": 404, "message": "Not found"})


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
