"""A stand-in for the Prometheus Pushgateway, for machines without Debian's binary (a newcomer's `make test`
without root). It speaks the part of the push API our jobs use, with the Pushgateway's semantics:

- ``PUT /metrics/job/<job>{/<label>/<value>}``: replaces every metric of that grouping key;
- ``POST`` on the same path: replaces only the metric families the body names;
- ``DELETE`` on the same path: removes the group;
- a ``<label>@base64/<value>`` segment carries a base64url value (how clients send ``/`` or an empty value);
- every group has an ``instance`` label, empty unless the grouping key sets it;
- ``GET /metrics``: every group's samples with the grouping labels added (they win over pushed labels of the
  same name, as in the Pushgateway), plus ``push_time_seconds`` per group; ``GET /-/ready`` and ``/-/healthy``.

A body that is not the text exposition format is refused with 400 and changes nothing. CI keeps the real
Pushgateway (.ci/run installs it); ``devharness.Pushgateway`` starts this only where it is absent.

Run: ``python -m devharness.pushgateway_standin --listen 127.0.0.1:9091``.
"""

from __future__ import annotations

import argparse
import base64
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString  # type: ignore[attr-defined]

Group = tuple[tuple[str, str], ...]  # the grouping key's labels, job first


def grouping_key(path: str) -> Group:
    """``/metrics/job/a/instance/b`` -> (("job", "a"), ("instance", "b")); ValueError when malformed."""
    parts = path.removeprefix("/metrics/").split("/")
    if len(parts) < 2 or len(parts) % 2 or parts[0] not in ("job", "job@base64"):
        raise ValueError(f"not a grouping key: {path}")
    key = []
    for segment, raw in zip(parts[::2], parts[1::2], strict=True):
        name, value = segment.removesuffix("@base64"), unquote(raw)
        if segment.endswith("@base64"):
            value = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        if not name or (name == "job" and not value):
            raise ValueError(f"empty label name or job in {path}")
        key.append((name, value))
    if "instance" not in dict(key):
        key.append(("instance", ""))  # as the Pushgateway does: every group has an instance label
    return tuple(key)


def _go(value: float) -> str:
    """A sample value as Go (and the Pushgateway) prints it."""
    return str(floatToGoString(value))  # type: ignore[no-untyped-call]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _families(body: str, group: Group) -> dict[str, list[str]]:
    """The pushed families as exposition lines, grouping labels merged in; ValueError if not parseable."""
    out: dict[str, list[str]] = {}
    for fam in text_string_to_metric_families(body):
        lines = [f"# HELP {fam.name} {fam.documentation}", f"# TYPE {fam.name} {fam.type}"]
        for s in fam.samples:
            labels = {**s.labels, **dict(group)}
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            lines.append(f"{s.name}{{{text}}} {_go(s.value)}")
        out[fam.name] = lines
    return out


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.groups: dict[Group, tuple[float, dict[str, list[str]]]] = {}

    def push(self, group: Group, body: str, replace_all: bool) -> None:
        families = _families(body, group)  # parse first: a bad body changes nothing
        with self.lock:
            kept = {} if replace_all else dict(self.groups.get(group, (0.0, {}))[1])
            self.groups[group] = (time.time(), {**kept, **families})

    def delete(self, group: Group) -> None:
        with self.lock:
            self.groups.pop(group, None)

    def exposition(self) -> str:
        with self.lock:
            groups = dict(self.groups)
        lines = ["# HELP push_time_seconds Last Unix time when changing this group in the Pushgateway succeeded."]
        lines.append("# TYPE push_time_seconds gauge")
        for group, (pushed, _) in groups.items():
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(group))
            lines.append(f"push_time_seconds{{{text}}} {_go(pushed)}")
        for _, families in groups.values():
            for fam_lines in families.values():
                lines.extend(fam_lines)
        return "\n".join(lines) + "\n"


class Handler(BaseHTTPRequestHandler):
    state = State()

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _reply(self, code: int, body: str = "", content_type: str = "text/plain; charset=utf-8") -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path in ("/-/ready", "/-/healthy"):
            self._reply(200, "OK\n")
        elif self.path == "/metrics":
            self._reply(200, self.state.exposition(), "text/plain; version=0.0.4; charset=utf-8")
        else:
            self._reply(404, "not found\n")

    def _change(self, method: str) -> None:
        try:
            group = grouping_key(self.path)
            if method == "DELETE":
                self.state.delete(group)
            else:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode()
                self.state.push(group, body, replace_all=method == "PUT")
        except (ValueError, UnicodeDecodeError) as e:
            self._reply(400, f"{e}\n")
            return
        self._reply(200 if method != "DELETE" else 202)

    def do_PUT(self) -> None:
        self._change("PUT")

    def do_POST(self) -> None:
        self._change("POST")

    def do_DELETE(self) -> None:
        self._change("DELETE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="host:port")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    ThreadingHTTPServer((host, int(port)), Handler).serve_forever()


if __name__ == "__main__":
    main()
