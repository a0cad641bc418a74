"""A Bokeh instance's own metrics, read from its fan-out and reader at scrape time.

The counters live where the work happens (:class:`app.instance.sessions.Fanout`,
:class:`app.bus.reader.Reader`, plain ``Counter`` objects on the loop thread); this
collector turns them into metric families when Prometheus asks, so the hot path
never takes a prometheus_client lock.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from app.instance import wire

if TYPE_CHECKING:
    from app.instance.server import Instance

FANOUT_STATS = (
    ("session_updates", "Updates written to viewer connections (one per connection per command)."),
    ("sessions_opened", "Viewer connections opened."),
    ("sessions_closed", "Viewer connections closed."),
    ("delivery_errors", "Shared documents dropped after a failed update (their viewers resync)."),
    ("sessions_revoked", "Live viewer connections closed because their user lost access."),
    ("viewers_cut", "Viewer connections closed for falling behind (FLEET_VIEWER_BUFFER_BYTES unsent); "
                    "each page reconnects and pulls the current state."),
    ("pulls_served", "Document pulls served from the cached serialisation."),
    ("snapshots", "Cached document serialisations made (worker thread)."),
    ("viewer_messages_ignored", "Messages a browser sent back (ranges, legend toggles, selections): "
                                "acknowledged, never applied to the shared document."),
)
READER_STATS = (
    ("reconnects", "Times the reader reconnected to Redis."),
    ("duplicates", "Stream entries skipped because their command id was applied already."),
    ("listener_errors", "Errors raised while handing an entry to the sessions (each is logged)."),
)


def _histogram(name: str, help_: str, h: Any) -> HistogramMetricFamily:
    buckets = [(f"{b:g}", c) for b, c in zip(h.buckets, h.counts, strict=True)] + [("+Inf", h.total)]
    return HistogramMetricFamily(name, help_, buckets=buckets, sum_value=h.sum)


class InstanceCollector:
    """Collector of one :class:`~app.instance.server.Instance` (``registry.register``)."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance

    def describe(self) -> list:
        return []  # registered before the reader exists: nothing to check names against

    def collect(self) -> Any:  # noqa: C901 - a flat list of families
        from app.instance.server import REFUSAL_KINDS

        inst = self.instance
        fan = inst.fanout
        reader = inst.reader
        counts = fan.session_count()
        dashboards = sorted(set(counts) | set(fan.applied) | set(fan.rejected)
                            | set(getattr(reader, "feeds", {}) or {}))

        def per_dashboard(family: Any, values: Any) -> Any:
            for d in dashboards:
                family.add_metric([d], values.get(d, 0))
            return family

        yield per_dashboard(GaugeMetricFamily("fleet_sessions", "Live Bokeh sessions per dashboard.",
                                              labels=["dashboard"]), counts)
        yield per_dashboard(CounterMetricFamily("fleet_commands_applied", "Commands applied, per dashboard.",
                                                labels=["dashboard"]), fan.applied)
        yield per_dashboard(CounterMetricFamily("fleet_commands_rejected",
                                                "Commands rejected by validation, per dashboard.",
                                                labels=["dashboard"]), fan.rejected)
        yield per_dashboard(CounterMetricFamily("fleet_resyncs", "Dashboard resets (appeared, resynced, deleted).",
                                                labels=["dashboard"]), fan.resets)
        last = GaugeMetricFamily("fleet_last_resync_timestamp_seconds",
                                 "When the dashboard was last reset here (Unix time; the first load counts).",
                                 labels=["dashboard"])
        for d in dashboards:
            if d in fan.reset_at:
                last.add_metric([d], fan.reset_at[d])
        yield last

        ok, _ = inst.health()
        yield GaugeMetricFamily("fleet_reader_up", "1 when the reader has caught up with Redis and is reading.",
                                value=1 if ok else 0)
        yield GaugeMetricFamily("fleet_reader_lag_seconds",
                                "Age of the newest stream entry read, at the time it was read.",
                                value=float(getattr(reader, "lag_ms", 0.0) or 0.0) / 1000.0)
        stats = getattr(reader, "stats", {}) or {}
        yield CounterMetricFamily(
            "fleet_history_rewinds",
            "Times Redis's history went backwards under this reader (data set replaced, an older AOF/RDB, "
            "a promoted replica or a crash lost entries it had applied); each resynced the dashboard's "
            "sessions from the fold Redis holds.", value=stats.get("history_rewinds", 0))
        for key, help_ in READER_STATS:
            yield CounterMetricFamily(f"fleet_reader_{key}", help_, value=stats.get(key, 0))
        for key, help_ in FANOUT_STATS:
            yield CounterMetricFamily(f"fleet_{key}", help_, value=fan.stats.get(key, 0))
        refused = CounterMetricFamily(
            "fleet_sessions_refused",
            "Session requests refused, by reason: token (missing, forged, expired), dashboard (unknown), "
            "access (the user may not view it), request (malformed).", labels=["reason"])
        for kind in REFUSAL_KINDS:
            refused.add_metric([kind], inst.refusals.get(kind, 0))
        yield refused
        yield CounterMetricFamily("fleet_messages_serialised",
                                  "Update messages serialised (one per command per dashboard: every viewer "
                                  "gets those bytes).", value=wire.stats["serialised"])
        yield CounterMetricFamily("fleet_messages_shared",
                                  "Update messages written to a further viewer without serialising again.",
                                  value=wire.stats["shared"])
        yield _histogram("fleet_fanout_seconds",
                         "Time from a command's arrival to its write to every live viewer connection.",
                         fan.fanout_seconds)
        yield _histogram("fleet_command_age_seconds",
                         "Time from a command's publication (its ts field) to its application in every "
                         "live session.", fan.age_seconds)
        if getattr(inst, "loop_lag", None) is not None:
            yield _histogram("fleet_loop_lag_seconds",
                             "How late a 5 ms timer on the instance's event loop fired (loop stalls).",
                             inst.loop_lag)
            yield _histogram("fleet_loop_stall_seconds",
                             "The part of that lateness the loop thread spent running callbacks "
                             "(its CPU time).", inst.loop_stall)
            yield GaugeMetricFamily("fleet_loop_lag_max_seconds", "Latest a 5 ms timer fired, since start.",
                                    value=float(inst.loop_lag_max))
            yield GaugeMetricFamily("fleet_loop_stall_max_seconds", "Longest loop stall (callbacks) since start.",
                                    value=float(inst.loop_stall_max))
        mem = getattr(inst, "redis_memory", None) or {}
        if mem:
            yield GaugeMetricFamily("fleet_redis_used_memory_bytes", "Redis used_memory (INFO memory).",
                                    value=mem["used_memory"])
            yield GaugeMetricFamily("fleet_redis_maxmemory_bytes", "Redis maxmemory (0 = no limit).",
                                    value=mem["maxmemory"])
            yield GaugeMetricFamily("fleet_redis_memory_ratio", "Redis used_memory / maxmemory (0 without a limit).",
                                    value=float(mem["ratio"]))
            yield GaugeMetricFamily(
                "fleet_redis_memory_alarm",
                "1 when Redis memory reached FLEET_REDIS_MEMORY_ALARM_RATIO of maxmemory (or has no maxmemory): "
                "with noeviction, a full Redis refuses publishes.",
                value=1 if mem["alarm"] or mem["no_limit"] else 0)


def registry_for(instance: Instance) -> Any:
    """The instance's registry: process metrics, build info and :class:`InstanceCollector`."""
    from app.metrics import process_registry

    registry = process_registry("bokeh")
    registry.register(InstanceCollector(instance))
    return registry
