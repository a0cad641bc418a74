"""``/healthz`` and ``/metrics`` on the instance port (plain tornado handlers)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tornado.web import RequestHandler

from app.metrics import peer_allowed

__all__ = ["HealthHandler", "MetricsHandler", "peer_allowed"]

if TYPE_CHECKING:
    from app.instance.server import Instance


def _addresses(handler: RequestHandler) -> tuple[str | None, str | None]:
    """(TCP peer, local address) of the request's connection: the real socket, never
    X-Real-IP/X-Forwarded-For (the instance's HTTPServer applies those to remote_ip)."""
    conn = handler.request.connection
    addr = getattr(getattr(conn, "context", None), "address", None)
    peer = addr[0] if isinstance(addr, tuple) and addr else None
    local = None
    try:
        local = conn.stream.socket.getsockname()[0]  # type: ignore[union-attr]  # None: AttributeError, caught
    except (AttributeError, OSError, TypeError, IndexError):
        pass
    return peer, local


class _Base(RequestHandler):
    def initialize(self, instance: Instance) -> None:
        self.instance = instance

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")

    def prepare(self) -> None:
        peer, local = _addresses(self)
        if not peer_allowed(peer, local, self.instance.settings.metrics_allow):
            self.set_status(403)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish("forbidden: this peer is not in FLEET_METRICS_ALLOW\n")


class HealthHandler(_Base):
    """200 ``ok`` once the reader has caught up with Redis; 503 and the reason otherwise."""

    def get(self) -> None:
        ok, reason = self.instance.health()
        self.set_status(200 if ok else 503)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(reason + "\n")

    head = get


class MetricsHandler(_Base):
    """Prometheus exposition (text 0.0.4, or OpenMetrics when the scraper asks) of the
    instance's registry (:mod:`app.metrics.instance`)."""

    def get(self) -> None:
        from app.metrics import exposition

        body, content_type = exposition(self.instance.metrics_registry(), self.request.headers.get("Accept"))
        self.set_header("Content-Type", content_type)
        self.finish(body)
