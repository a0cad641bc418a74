"""The operator's Python controller: :class:`bokeh_fleet.Controller` plus the server's view.

Controllers should use the client distribution (``pip install ./client``,
``from bokeh_fleet import Controller``; docs/client.md): it needs neither Flask nor
Bokeh.  This subclass is for code that runs beside the server (fleetctl, the demo,
benches, tests): it is built from :class:`app.settings.Settings`, validates every
command with the instances' own parser and limits before publishing, and reads
the exact folded state (``state()`` -> :class:`DashboardState`, ``state_json()``).

What an acknowledgement (the returned stream id) guarantees follows
``FLEET_REDIS_DURABILITY``: with ``everysec`` the command is in Redis's memory and on
its disk within about a second; with ``always`` it was on disk before the reply; with
``replica`` at least one replica has it (``WAIT``), or
:class:`app.bus.publisher.NotDurable` is raised (send again with the same ``id=``: a
repeated command id is applied once).  With ``FLEET_REDIS_SENTINELS`` set the
controller finds the master through Sentinel and follows a failover.

Least privilege: ``fleetctl controllers add --dashboard sales`` prints a Redis URL
whose ACL user may XADD to ``sales`` only and read its keys (app/bus/acl.py).
``create``/``delete``/``dashboards`` are the operator's (admin URL).
"""

from __future__ import annotations

from typing import Any

from bokeh_fleet import Controller as _ClientController
from bokeh_fleet.wire import Fields

from app.bus import registry
from app.bus.connection import sync_client
from app.bus.keys import Keys
from app.bus.publisher import publish_many
from app.bus.store import read_rejected, read_state
from app.control import snapshot
from app.control.protocol import Limits, Rejected, parse
from app.control.state import DashboardState
from app.settings import Settings, load

__all__ = ["Controller", "Rejected"]


class Controller(_ClientController):
    """:class:`bokeh_fleet.Controller` configured from the fleet's settings."""

    def __init__(self, redis_url: str | None = None, *, settings: Settings | None = None,
                 stamp: bool = True, strict: bool = False, timeout: float = 5.0) -> None:
        self.settings = settings or (load(redis_url=redis_url) if redis_url else load())
        super().__init__("", prefix=self.settings.key_prefix, strict=strict, timeout=timeout, stamp=stamp)
        self.keys = Keys(self.settings.key_prefix)
        self.redis = sync_client(self.settings)
        self.limits = Limits.from_settings(self.settings)

    def _fields(self, op: str, cmd_id: str | None, params: dict[str, Any]) -> Fields:
        fields = super()._fields(op, cmd_id, params)
        parse(fields, self.limits)  # the instances' own validator and limits
        return fields

    def delete(self, dashboard: str) -> bool:
        """Unregister a dashboard and delete its keys (admin URL only)."""
        return registry.delete_dashboard(self.redis, self.keys, dashboard)

    def dashboards(self) -> dict[str, dict]:  # type: ignore[override]  # admin URL: the registry, not the HTTP list
        """Every registered dashboard with its metadata (admin URL only)."""
        return registry.list_dashboards(self.redis, self.keys)

    def state(self, dashboard: str) -> DashboardState:  # type: ignore[override]  # the typed fold, not its JSON view
        """The exact folded state: snapshot + fold of the log after it."""
        return read_state(self.redis, self.keys, dashboard, self.settings)[0]

    def state_json(self, dashboard: str) -> dict[str, Any]:
        """:meth:`state` as plain JSON (what ``GET .../state`` answers)."""
        return snapshot.view(self.state(dashboard))

    def frame(self, dashboard: str, name: str) -> Any:
        """Figure ``name``'s current data as a pandas DataFrame (exact fold)."""
        from bokeh_fleet.controller import _frame

        return _frame(self.state_json(dashboard), dashboard, name)

    def rejected(self, dashboard: str, count: int = 100) -> list[dict]:
        """Newest first: ``{"id", "reason", "fields"}`` of rejected commands."""
        return read_rejected(self.redis, self.keys, dashboard, count)

    def _publish(self, dashboard: str, batch: list[Fields]) -> list[str]:
        """Publish through :mod:`app.bus.publisher`, honouring ``FLEET_REDIS_DURABILITY``
        (``replica``: WAIT for a replica after the XADDs, else :class:`NotDurable`)."""
        if self._http is not None:
            return super()._publish(dashboard, batch)
        try:
            ids = publish_many(self.redis, self.keys, dashboard, batch, self.limits,
                               durability=self.settings.redis_durability,
                               wait_ms=self.settings.redis_wait_ms)
        except registry.UnknownDashboard as exc:
            raise Rejected(str(exc), "dashboard") from None
        self._remember(dashboard, ids)
        if self.strict:
            for i in ids:
                self.wait_applied(i, self.timeout, dashboard=dashboard)
        return ids
