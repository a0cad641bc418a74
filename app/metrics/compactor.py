"""The compactor's metrics and its small ``/metrics`` server.

Read at scrape time from :class:`app.bus.compactor.Compactor`: whether it leads,
snapshots written, stream entries trimmed behind them, and per dashboard the age of
the newest snapshot it wrote and the commands folded since (what a reader that
resyncs now must replay).  Served on ``web_host:compactor_metrics_port`` by
tornado on the compactor's own loop; the TCP peer is checked like an instance's.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from tornado.web import Application, RequestHandler

from app.metrics import exposition, peer_allowed, process_registry


class CompactorCollector:
    def __init__(self, compactor: Any) -> None:
        self.compactor = compactor

    def describe(self) -> list:
        return []

    def collect(self) -> Any:
        c = self.compactor
        yield GaugeMetricFamily("fleet_compactor_leader",
                                "1 while this compactor holds the lock and writes snapshots.",
                                value=1 if c.leader else 0)
        yield CounterMetricFamily("fleet_compactor_snapshots_written", "Snapshots written by this compactor.",
                                  value=c.snapshots_written)
        yield CounterMetricFamily("fleet_compactor_trimmed_entries",
                                  "Stream entries trimmed (XTRIM MINID) behind the snapshots this compactor wrote.",
                                  value=c.trimmed_entries)
        age = GaugeMetricFamily("fleet_compactor_snapshot_age_seconds",
                                "Seconds since this compactor last wrote the dashboard's snapshot (it writes one "
                                "only when there are new commands: an idle dashboard's grows).",
                                labels=["dashboard"])
        pending = GaugeMetricFamily("fleet_compactor_unsnapshotted_commands",
                                    "Commands folded since the dashboard's last snapshot (a resync replays them).",
                                    labels=["dashboard"])
        now = time.time()
        reader = c.reader if c.leader else None
        feeds = dict(getattr(reader, "feeds", None) or {})
        for name in sorted(c.snapshot_at):
            age.add_metric([name], max(0.0, now - c.snapshot_at[name]))
        for name, feed in sorted(feeds.items()):
            applied = c._written.get(name, (-1, "", 0.0))[0]
            if applied >= 0:
                pending.add_metric([name], max(0, feed.state.applied - applied))
        yield age
        yield pending


class _MetricsHandler(RequestHandler):
    def initialize(self, registry: Any, allow: tuple[str, ...]) -> None:
        self.registry = registry
        self.allow = allow

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        addr = getattr(getattr(self.request.connection, "context", None), "address", None)
        peer = addr[0] if isinstance(addr, tuple) and addr else None
        try:
            local = self.request.connection.stream.socket.getsockname()[0]  # type: ignore[union-attr]
        except (AttributeError, OSError, TypeError, IndexError):
            local = None
        if not peer_allowed(peer, local, self.allow):
            self.set_status(403)
            self.finish("forbidden: this peer is not in FLEET_METRICS_ALLOW\n")
            return
        body, content_type = exposition(self.registry, self.request.headers.get("Accept"))
        self.set_header("Content-Type", content_type)
        self.finish(body)


def serve(compactor: Any, host: str, port: int, allow: tuple[str, ...]) -> Any:
    """Listen on ``host:port`` (on the running loop) for ``GET /metrics``; returns the server."""
    registry = process_registry("compactor")
    registry.register(CompactorCollector(compactor))
    app = Application([(r"/metrics", _MetricsHandler, {"registry": registry, "allow": tuple(allow)})],
                      log_function=lambda handler: None)
    return app.listen(port, host)
