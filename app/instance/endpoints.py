"""``/healthz`` and ``/metrics`` on the instance port (plain tornado handlers)."""

from __future__ import annotations

import functools
import ipaddress
import os
import resource
from typing import TYPE_CHECKING, Any

from tornado.web import RequestHandler

from app.instance import wire

if TYPE_CHECKING:
    from app.instance.server import Instance


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc, else peak RSS)."""
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


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
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped  # type: ignore[union-attr]
    if ip.is_loopback or (local and peer == local):
        return True
    return any(ip in net for net in _networks(tuple(allow)))


def _addresses(handler: RequestHandler) -> tuple[str | None, str | None]:
    """(TCP peer, local address) of the request's connection: the real socket, never
    X-Real-IP/X-Forwarded-For (the instance's HTTPServer applies those to remote_ip)."""
    conn = handler.request.connection
    addr = getattr(getattr(conn, "context", None), "address", None)
    peer = addr[0] if isinstance(addr, tuple) and addr else None
    local = None
    try:
        local = conn.stream.socket.getsockname()[0]  # type: ignore[union-attr]
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


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class MetricsHandler(_Base):
    """Prometheus text exposition format 0.0.4."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(render_metrics(self.instance))


def histogram(lines: list[str], name: str, h: Any, help_: str) -> None:
    lines.append(f"# HELP {name} {help_}")
    lines.append(f"# TYPE {name} histogram")
    for b, c in zip(h.buckets, h.counts, strict=True):
        lines.append(f'{name}_bucket{{le="{b:g}"}} {c}')
    lines.append(f'{name}_bucket{{le="+Inf"}} {h.total}')
    lines.append(f"{name}_sum {h.sum:.6f}")
    lines.append(f"{name}_count {h.total}")


def render_metrics(instance: Instance) -> str:
    fan = instance.fanout
    reader = instance.reader
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{labels} {value:g}" if isinstance(value, float) else f"{name}{labels} {value}")

    dashboards = sorted(set(fan.session_count()) | set(fan.applied) | set(fan.rejected)
                        | set(getattr(reader, "feeds", {}) or {}))
    counts = fan.session_count()
    metric("fleet_sessions", "gauge", "Live Bokeh sessions per dashboard.",
           [(f'{{dashboard="{_label(d)}"}}', counts.get(d, 0)) for d in dashboards])
    metric("fleet_commands_applied_total", "counter", "Commands applied, per dashboard.",
           [(f'{{dashboard="{_label(d)}"}}', fan.applied.get(d, 0)) for d in dashboards])
    metric("fleet_commands_rejected_total", "counter", "Commands rejected by validation, per dashboard.",
           [(f'{{dashboard="{_label(d)}"}}', fan.rejected.get(d, 0)) for d in dashboards])
    metric("fleet_resyncs_total", "counter", "Dashboard resets (appeared, resynced, deleted).",
           [(f'{{dashboard="{_label(d)}"}}', fan.resets.get(d, 0)) for d in dashboards])
    ok, _ = instance.health()
    metric("fleet_reader_up", "gauge", "1 when the reader has caught up with Redis and is reading.",
           [("", 1 if ok else 0)])
    metric("fleet_reader_lag_seconds", "gauge", "Age of the newest entry read, when it was read.",
           [("", float(getattr(reader, "lag_ms", 0.0) or 0.0) / 1000.0)])
    stats = getattr(reader, "stats", {}) or {}
    metric("fleet_history_rewinds_total", "counter",
           "Times Redis's history went backwards under this reader (data set replaced, an older "
           "AOF/RDB, a promoted replica or a crash lost entries it had applied); each resynced "
           "the dashboard's sessions from the fold Redis holds.",
           [("", stats.get("history_rewinds", 0))])
    for key in ("reconnects", "duplicates", "listener_errors"):
        metric(f"fleet_reader_{key}_total", "counter", f"Reader counter {key}.", [("", stats.get(key, 0))])
    for key, help_ in (("session_updates", "Updates applied to session documents (after coalescing)."),
                       ("coalesced", "Stream commands merged into a previous one for a lagging session."),
                       ("sessions_opened", "Sessions opened."), ("sessions_closed", "Sessions closed."),
                       ("sessions_refused", "Session requests refused (token or dashboard)."),
                       ("delivery_errors", "Session documents rebuilt after a failed update."),
                       ("sessions_revoked", "Live sessions closed because their user lost access."),
                       ("viewers_cut", "Viewer connections closed for falling behind (FLEET_VIEWER_BUFFER_BYTES "
                                       "unsent); each page reconnects and pulls the current state.")):
        metric(f"fleet_{key}_total", "counter", help_, [("", fan.stats.get(key, 0))])
    metric("fleet_messages_serialised_total", "counter",
           "Session update messages serialised (one per command when sessions share it).",
           [("", wire.stats["serialised"])])
    metric("fleet_messages_shared_total", "counter",
           "Session update messages reused from another session instead of serialised again.",
           [("", wire.stats["shared"])])
    histogram(lines, "fleet_fanout_seconds", fan.fanout_seconds,
              "Time from a command's arrival to its application in every live session.")
    histogram(lines, "fleet_command_age_seconds", fan.age_seconds,
              "Time from a command's publication (its ts field) to its application in every live session.")
    if getattr(instance, "loop_lag", None) is not None:
        histogram(lines, "fleet_loop_lag_seconds", instance.loop_lag,
                  "How late a 5 ms timer on the instance's event loop fired (loop stalls).")
        histogram(lines, "fleet_loop_stall_seconds", instance.loop_stall,
                  "The part of that lateness the loop thread spent running callbacks (its CPU time).")
        metric("fleet_loop_lag_max_seconds", "gauge", "Latest a 5 ms timer fired, since start.",
               [("", float(instance.loop_lag_max))])
        metric("fleet_loop_stall_max_seconds", "gauge", "Longest loop stall (callbacks) since start.",
               [("", float(instance.loop_stall_max))])
    metric("fleet_process_resident_memory_bytes", "gauge", "Resident memory of this instance.",
           [("", rss_bytes())])
    mem = getattr(instance, "redis_memory", None) or {}
    if mem:
        metric("fleet_redis_used_memory_bytes", "gauge", "Redis used_memory (INFO memory).",
               [("", mem["used_memory"])])
        metric("fleet_redis_maxmemory_bytes", "gauge", "Redis maxmemory (0 = no limit).",
               [("", mem["maxmemory"])])
        metric("fleet_redis_memory_ratio", "gauge", "Redis used_memory / maxmemory (0 without a limit).",
               [("", float(mem["ratio"]))])
        metric("fleet_redis_memory_alarm", "gauge",
               "1 when Redis memory reached FLEET_REDIS_MEMORY_ALARM_RATIO of maxmemory (or has no "
               "maxmemory): with noeviction, a full Redis refuses publishes.",
               [("", 1 if mem["alarm"] or mem["no_limit"] else 0)])
    return "\n".join(lines) + "\n"
