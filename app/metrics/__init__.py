"""Prometheus metrics of every fleet process, with ``prometheus_client``.

Each long-running process (Bokeh instance, compactor) builds its own registry with
:func:`process_registry`: the standard ``process_*`` and ``python_*`` metrics, and
``fleet_build_info``; its own figures come from a collector read at scrape time
(:mod:`app.metrics.instance`, :mod:`app.metrics.compactor`).  The web app runs under
gunicorn in multiprocess mode (:mod:`app.metrics.web`).

Who may scrape is decided on the TCP peer, never on headers (:func:`peer_allowed`):
loopback, the host itself, and FLEET_METRICS_ALLOW.

Naming (checked by tests/test_metrics_conventions.py on a real stack): ``fleet_``
prefix, base units in the name (``_seconds``, ``_bytes``, ``_ratio``), counters end
in ``_total``, every label has a bounded set of values.
"""

from __future__ import annotations

import functools
import ipaddress
import platform
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import choose_encoder

# Counters as the text format has them (``x_total``), without a ``x_created`` twin per series.
prometheus_client.disable_created_metrics()

#: what a scrape answers with (text format 0.0.4 unless the scraper asks for OpenMetrics)
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("bokeh-fleet")
    except PackageNotFoundError:  # pragma: no cover - a bare source tree
        return "unknown"


@functools.lru_cache(maxsize=1)
def build_labels() -> dict[str, str]:
    import bokeh

    return {"version": version(), "bokeh": bokeh.__version__, "python": platform.python_version()}


class BuildInfo:
    """``fleet_build_info{version,bokeh,python,program}`` = 1 (join on it in queries)."""

    def __init__(self, program: str) -> None:
        self.program = program

    def collect(self) -> Any:
        labels = {**build_labels(), "program": self.program}
        g = GaugeMetricFamily("fleet_build_info", "Versions this fleet process runs (always 1).",
                              labels=list(labels))
        g.add_metric(list(labels.values()), 1)
        yield g


def process_registry(program: str) -> CollectorRegistry:
    """A registry with the standard process, platform and GC metrics and build info."""
    registry = CollectorRegistry()
    prometheus_client.ProcessCollector(registry=registry)
    prometheus_client.PlatformCollector(registry=registry)
    prometheus_client.GCCollector(registry=registry)
    registry.register(BuildInfo(program))
    return registry


def exposition(registry: Any, accept: str | None) -> tuple[bytes, str]:
    """(body, content type) of a scrape of ``registry`` for an ``Accept`` header."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


@functools.lru_cache(maxsize=8)
def _networks(items: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(i.strip(), strict=False) for i in items if i.strip())


def peer_allowed(peer: str | None, local: str | None, allow: tuple[str, ...]) -> bool:
    """Whether TCP peer ``peer`` may read /metrics and /healthz: loopback, this host
    itself (the peer is the address it connected to: a health check on the bridge
    address), or an address in ``allow`` (FLEET_METRICS_ALLOW, e.g. Prometheus)."""
    if not peer:
        return True  # a unix socket: local by definition
    try:
        ip = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # IPv6 only
    if mapped is not None:
        ip = mapped
    if ip.is_loopback or (local and peer == local):
        return True
    return any(ip in net for net in _networks(tuple(allow)))
