"""The web app's metrics: logins by outcome, API publishes per token, request latency.

gunicorn runs several worker processes; each counts into files under
``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode, set up by
``app/web/gunicorn_conf.py``: a private directory under var/run, wiped at start, a
dead worker's files merged by the ``child_exit`` hook) and a scrape of ``/metrics``
adds them all up.  Without that variable (the Flask test client) the counters live
in this process's default registry.

The ``process_*`` metrics of a multi-process server describe the gunicorn master and
its workers together (:class:`ProcessTreeCollector`): memory, CPU and open files summed.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from app.metrics import BuildInfo, exposition, peer_allowed

LOGIN_OUTCOMES = ("success", "failure", "locked", "invalid")

LOGINS = Counter("fleet_web_logins", "Password logins by outcome: success, failure (wrong name or password), "
                 "locked (too many failures: 429), invalid (form or CSRF check failed).", ["outcome"])
API_PUBLISHES = Counter("fleet_api_publishes", "Accepted publish requests of the HTTP API, per API token.",
                        ["token"])
API_COMMANDS = Counter("fleet_api_commands_published", "Commands published through the HTTP API, per API token.",
                       ["token"])
REQUEST_SECONDS = Histogram(
    "fleet_web_request_duration_seconds",
    "Time the web app took to answer, per route (Flask endpoint), method and status class.",
    ["endpoint", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))

for _outcome in LOGIN_OUTCOMES:  # every outcome present from the first scrape on
    LOGINS.labels(_outcome)

_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


def observe_request(endpoint: str | None, method: str, status: int, seconds: float) -> None:
    """Count one request; labels stay bounded (unknown routes and methods are lumped)."""
    REQUEST_SECONDS.labels(endpoint or "unmatched", method if method in _METHODS else "other",
                           f"{status // 100}xx").observe(seconds)


def multiproc_dir() -> str:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


class ProcessTreeCollector:
    """``process_*`` of the gunicorn master and its workers (summed; the master's start
    time and fd limit), read from /proc when scraped."""

    SUMMED = ("process_cpu_seconds_total", "process_resident_memory_bytes",
              "process_virtual_memory_bytes", "process_open_fds")

    def __init__(self, master: int) -> None:
        self.master = master

    def collect(self) -> Any:
        pids = [self.master, *_children(self.master)]
        total: dict[str, float] = {}
        first: dict[str, float] = {}
        for pid in pids:
            for fam in ProcessCollector(registry=None, pid=functools.partial(int, pid)).collect():
                for s in fam.samples:
                    total[s.name] = total.get(s.name, 0.0) + s.value
                    first.setdefault(s.name, s.value)
        helps = {
            "process_cpu_seconds_total": "Total user and system CPU time of the gunicorn master and workers.",
            "process_resident_memory_bytes": "Resident memory of the gunicorn master and workers.",
            "process_virtual_memory_bytes": "Virtual memory of the gunicorn master and workers.",
            "process_open_fds": "Open file descriptors of the gunicorn master and workers.",
            "process_start_time_seconds": "Start time of the gunicorn master (Unix time).",
            "process_max_fds": "Maximum number of open file descriptors of the gunicorn master.",
        }
        for name, help_ in helps.items():
            if name not in first:
                continue
            value = total[name] if name in self.SUMMED else first[name]
            if name.endswith("_total"):
                yield CounterMetricFamily(name.removesuffix("_total"), help_, value=value)
            else:
                yield GaugeMetricFamily(name, help_, value=value)
        yield GaugeMetricFamily("fleet_web_workers", "gunicorn worker processes alive.", value=len(pids) - 1)


_build_registered = False


def scrape(accept: str | None) -> tuple[bytes, str]:
    """The body and content type of the web app's ``/metrics``."""
    global _build_registered
    if multiproc_dir():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(BuildInfo("web"))
        registry.register(ProcessTreeCollector(os.getppid()))
        return exposition(registry, accept)
    if not _build_registered:
        REGISTRY.register(BuildInfo("web"))
        _build_registered = True
    return exposition(REGISTRY, accept)


class MetricsEndpoint:
    """WSGI middleware answering ``GET /metrics`` before the app: the TCP peer (never a
    header) must be loopback, this host or in FLEET_METRICS_ALLOW; others get 403."""

    def __init__(self, app: Any, allow: tuple[str, ...]) -> None:
        self.app = app
        self.allow = tuple(allow)

    def __call__(self, environ: dict, start_response: Any) -> Any:
        if environ.get("PATH_INFO") != "/metrics":
            return self.app(environ, start_response)
        sock = environ.get("gunicorn.socket")
        try:
            local = sock.getsockname()[0] if sock is not None else None
        except (OSError, IndexError, TypeError, AttributeError):
            local = None
        headers = [("Cache-Control", "no-store")]
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [*headers, ("Allow", "GET, HEAD"),
                                                      ("Content-Type", "text/plain; charset=utf-8")])
            return [b"GET /metrics\n"]
        if not peer_allowed(environ.get("REMOTE_ADDR") or None, local, self.allow):
            start_response("403 Forbidden", [*headers, ("Content-Type", "text/plain; charset=utf-8")])
            return [b"forbidden: this peer is not in FLEET_METRICS_ALLOW\n"]
        body, content_type = scrape(environ.get("HTTP_ACCEPT"))
        start_response("200 OK", [*headers, ("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]
