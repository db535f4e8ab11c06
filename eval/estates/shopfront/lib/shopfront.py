"""The shopfront services' shared runtime: config, flags, logs, an HTTP server with health and metrics.

Standard library only, so a service starts in a few tens of milliseconds with `python3`. Each
service is a release folder (`<component>/releases/<version>/shopfront_<component>.py`) run
through its `<component>/current` symlink; this module is found through `PYTHONPATH=lib`, which
the estate file sets. Every service:

- reads a config file of `key = value` lines and exits with a FATAL line on a bad one;
- re-reads its feature flags (a JSON object) whenever the flags file changes, without a restart;
- logs to standard output, which the estate backend appends to the component's log file;
- answers `GET /health` (200, or 503 with the reason; the time the check took is in the body),
  `GET /metrics` (Prometheus text format) and `POST /admin/leak?mb=N` (allocates N MB and holds
  it: the memory-leak fault uses it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}

Schema = dict[str, tuple[type, Any]]
Response = tuple[int, Any]


class ConfigError(Exception):
    """A config file the service cannot run with; the message names the file and the line."""


class UpstreamError(Exception):
    """A service this one calls did not answer."""


def _convert(value: str, kind: type) -> Any:
    if kind is bool:
        if value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ValueError(value)
    return kind(value)


def read_config(path: str, schema: Schema) -> dict[str, Any]:
    """Read `key = value` lines (`#` starts a comment); every key must be one `schema` knows.

    Args:
        path: The config file.
        schema: key -> (type, default).

    Raises:
        ConfigError: The file is unreadable, a line is not `key = value`, a key is unknown or a
            value has the wrong type; the message names the line.
    """
    values = {key: default for key, (_kind, default) in schema.items()}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep or not key:
            raise ConfigError(f"{path} line {number}: expected 'key = value', got {raw.strip()!r}")
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ConfigError(f"{path} line {number}: unknown setting {key!r} (known: {known})")
        kind = schema[key][0]
        try:
            values[key] = _convert(value, kind)
        except ValueError:
            raise ConfigError(f"{path} line {number}: {key} must be {kind.__name__}, got {value!r}") from None
    return values


class Log:
    """Timestamped lines on standard output: `2025-05-01T10:00:00.123 INFO api[4242]: message`."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._lock = threading.Lock()

    def __call__(self, level: str, message: str) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        with self._lock:
            sys.stdout.write(f"{stamp} {level} {self.service}[{os.getpid()}]: {message}\n")
            sys.stdout.flush()


class Flags:
    """Feature flags from a JSON object file, read again whenever the file changes."""

    def __init__(self, path: str | None, log: Log) -> None:
        self.path = path
        self._log = log
        self._values: dict[str, Any] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._lock = threading.Lock()
        self._refresh()

    def get(self, name: str, default: Any = None) -> Any:
        self._refresh()
        return self._values.get(name, default)

    def all(self) -> dict[str, Any]:
        self._refresh()
        return dict(self._values)

    def _refresh(self) -> None:
        if self.path is None:
            return
        with self._lock:
            try:
                st = os.stat(self.path)
            except OSError as exc:
                if self._stamp != (0, 0, 0):
                    self._log("ERROR", f"flags file {self.path} unreadable ({exc}); keeping the last values")
                    self._stamp = (0, 0, 0)
                return
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            self._stamp = stamp
            try:
                data = json.loads(Path(self.path).read_text(encoding="utf-8"))
                if not isinstance(data, dict):
                    raise ValueError("not a JSON object")
            except ValueError as exc:
                self._log("ERROR", f"flags file {self.path} is not valid ({exc}); keeping the last values")
                return
            for name, value in sorted(data.items()):
                if self._values.get(name) != value:
                    self._log("INFO", f"flag {name} = {json.dumps(value)}")
            self._values = data


def call_json(url: str, body: Any = None, timeout: float = 1.0) -> tuple[int, Any]:
    """GET (or POST with a JSON body) and parse a JSON answer; 4xx and 5xx answers are returned too.

    Raises:
        UpstreamError: No answer (connection refused, timeout).
    """
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"null")
        except ValueError:
            return exc.code, None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UpstreamError(f"{url}: {reason}") from None


def rss_bytes() -> int:
    """Resident memory of this process (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Metrics:
    """Request counts and latency histograms by route, plus gauges, in Prometheus text format."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = {}
        self._histograms: dict[str, list[float]] = {}  # route -> bucket counts..., sum, count
        self.gauges: list[Callable[[], list[tuple[str, str, dict[str, str], float]]]] = []

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (method, route, status)
            self._requests[key] = self._requests.get(key, 0) + 1
            row = self._histograms.setdefault(route, [0.0] * (len(BUCKETS) + 2))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    row[i] += 1
            row[-2] += seconds
            row[-1] += 1

    def _labels(self, extra: dict[str, str]) -> str:
        pairs = {"service": self.service, **extra}
        return "{" + ",".join(f'{k}="{v}"' for k, v in pairs.items()) + "}"

    def render(self) -> str:
        out = [
            "# HELP shopfront_http_requests_total HTTP requests handled, by route and status.",
            "# TYPE shopfront_http_requests_total counter",
        ]
        with self._lock:
            for (method, route, status), n in sorted(self._requests.items()):
                labels = self._labels({"method": method, "route": route, "status": str(status)})
                out.append(f"shopfront_http_requests_total{labels} {n}")
            out += [
                "# HELP shopfront_http_request_duration_seconds Time to answer a request, by route.",
                "# TYPE shopfront_http_request_duration_seconds histogram",
            ]
            for route, row in sorted(self._histograms.items()):
                for i, bound in enumerate(BUCKETS):
                    labels = self._labels({"route": route, "le": f"{bound:g}"})
                    out.append(f"shopfront_http_request_duration_seconds_bucket{labels} {row[i]:g}")
                labels = self._labels({"route": route, "le": "+Inf"})
                out.append(f"shopfront_http_request_duration_seconds_bucket{labels} {row[-1]:g}")
                plain = self._labels({"route": route})
                out.append(f"shopfront_http_request_duration_seconds_sum{plain} {row[-2]:.6f}")
                out.append(f"shopfront_http_request_duration_seconds_count{plain} {row[-1]:g}")
        seen: set[str] = set()
        for gauge in self.gauges:
            for name, help_text, labels, value in gauge():
                if name not in seen:
                    out += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
                    seen.add(name)
                out.append(f"{name}{self._labels(labels)} {value:g}")
        return "\n".join(out) + "\n"


class Request:
    """One HTTP request as a handler sees it."""

    def __init__(self, method: str, path: str, query: dict[str, str], params: dict[str, str], body: bytes):
        self.method, self.path, self.query, self.params, self.body = method, path, query, params, body

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None


Handler = Callable[[Request], Response]


class Service:
    """One shopfront service: parse arguments, read config and flags, serve HTTP until SIGTERM."""

    def __init__(self, name: str, release_file: str, schema: Schema) -> None:
        self.name = name
        # The release is the folder the code was loaded from, with the `current` link resolved.
        self.release = Path(release_file).resolve().parent.name
        self.schema = schema
        self.log = Log(name)
        self.parser = argparse.ArgumentParser(prog=f"shopfront-{name}")
        self.parser.add_argument("--port", type=int, required=True)
        self.parser.add_argument("--host", default="127.0.0.1")
        self.parser.add_argument("--config", required=True, help="The config file (key = value lines).")
        self.parser.add_argument("--flags", default=None, help="A JSON object of feature flags.")
        self.routes: list[tuple[str, list[str], str, Handler]] = []
        self.health_check: Callable[[], tuple[bool, dict[str, Any]]] = lambda: (True, {})
        self.on_stop: list[Callable[[], None]] = []
        self.metrics = Metrics(name)
        self.started = time.time()
        self._held: list[bytearray] = []
        self.args: argparse.Namespace = argparse.Namespace()
        self.config: dict[str, Any] = {}
        self.flags = Flags(None, self.log)
        self.metrics.gauges.append(self._process_gauges)
        self.route("GET", "/health")(self._health)
        self.route("GET", "/metrics")(self._metrics)
        self.route("POST", "/admin/leak")(self._leak)

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        """Register a handler; `{name}` segments of the pattern become `request.params[name]`."""

        def register(handler: Handler) -> Handler:
            self.routes.append((method, pattern.strip("/").split("/"), pattern, handler))
            return handler

        return register

    def setup(self, argv: list[str] | None = None) -> None:
        """Parse the arguments and read the config; a bad config ends the process with exit code 2."""
        self.args = self.parser.parse_args(argv)
        try:
            self.config = read_config(self.args.config, self.schema)
        except ConfigError as exc:
            self.log("FATAL", f"bad config, not starting: {exc}")
            sys.exit(2)
        self.flags = Flags(self.args.flags, self.log)

    def serve(self) -> None:
        """Serve until SIGTERM or SIGINT, then run the stop hooks and exit 0."""
        try:
            server = ThreadingHTTPServer((self.args.host, self.args.port), self._handler_class())
        except OSError as exc:
            self.log("FATAL", f"cannot listen on {self.args.host}:{self.args.port}: {exc}")
            sys.exit(1)
        server.daemon_threads = True

        def stop(signum: int, _frame: Any) -> None:
            self.log("INFO", f"{signal.Signals(signum).name} received, stopping")
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        self.log("INFO", f"release {self.release} listening on http://{self.args.host}:{self.args.port}")
        server.serve_forever(poll_interval=0.1)
        server.server_close()
        for hook in self.on_stop:
            hook()
        self.log("INFO", "stopped")

    # -- built-in routes ---------------------------------------------------------------------------

    def _health(self, _request: Request) -> Response:
        began = time.perf_counter()
        try:
            ok, detail = self.health_check()
        except UpstreamError as exc:
            ok, detail = False, {"error": f"upstream unreachable: {exc}"}
            self.log("ERROR", f"health check failed: upstream unreachable: {exc}")
        body = {
            "service": self.name,
            "release": self.release,
            "status": "ok" if ok else "failing",
            "check_ms": round((time.perf_counter() - began) * 1000, 1),
            "uptime_s": round(time.time() - self.started, 1),
            **detail,
        }
        return (200 if ok else 503), body

    def _metrics(self, _request: Request) -> Response:
        return 200, self.metrics.render()

    def _leak(self, request: Request) -> Response:
        try:
            mb = int(request.query.get("mb", "0"))
        except ValueError:
            return 400, {"error": "mb must be a whole number"}
        if not 0 < mb <= 2048:
            return 400, {"error": "mb must be between 1 and 2048"}
        # Repeating one byte writes every page, so the memory is resident, not just reserved.
        self._held.append(bytearray(b"\x01") * (mb * 1024 * 1024))
        held = sum(len(b) for b in self._held) // (1024 * 1024)
        self.log("WARNING", f"holding {mb} MB more at /admin/leak ({held} MB held in all)")
        return 200, {"held_mb": held}

    def _process_gauges(self) -> list[tuple[str, str, dict[str, str], float]]:
        rows = [
            ("process_resident_memory_bytes", "Resident memory of the process.", {}, float(rss_bytes())),
            ("process_start_time_seconds", "Start of the process, Unix time.", {}, self.started),
            ("shopfront_release_info", "The release this process runs.", {"release": self.release}, 1.0),
        ]
        for name, value in sorted(self.flags.all().items()):
            if isinstance(value, bool | int | float):
                rows.append(
                    ("shopfront_flag", "Feature flags (numbers and booleans).", {"flag": name}, value)
                )
        return rows

    # -- request handling --------------------------------------------------------------------------

    def _dispatch(self, method: str, raw_path: str, body: bytes) -> tuple[str, int, Any]:
        parts = urlsplit(raw_path)
        segments = parts.path.strip("/").split("/")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        for route_method, pattern, label, handler in self.routes:
            if route_method != method or len(pattern) != len(segments):
                continue
            params: dict[str, str] = {}
            for want, got in zip(pattern, segments, strict=True):
                if want.startswith("{") and want.endswith("}"):
                    params[want[1:-1]] = got
                elif want != got:
                    break
            else:
                try:
                    status, payload = handler(Request(method, parts.path, query, params, body))
                except Exception as exc:  # a bug in a handler answers 500 and leaves its traceback in the log
                    self.log("ERROR", f"{method} {parts.path} failed: {type(exc).__name__}: {exc}")
                    sys.stdout.write(traceback.format_exc())
                    sys.stdout.flush()
                    status, payload = 500, {"error": f"{type(exc).__name__}: {exc}"}
                return label, status, payload
        return "unmatched", 404, {"error": f"no route for {method} {parts.path}"}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, method: str) -> None:
                began = time.perf_counter()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                label, status, payload = service._dispatch(method, self.path, body)
                if isinstance(payload, str):
                    data, kind = payload.encode(), "text/plain; version=0.0.4; charset=utf-8"
                else:
                    data, kind = json.dumps(payload).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                service.metrics.observe(method, label, status, time.perf_counter() - began)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_POST(self) -> None:
                self._answer("POST")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # one line per request would drown the log; /metrics counts them instead

        return _Handler
