"""The Python controller client: one method per op of wire protocol v1.

    from app.client import Controller
    ctl = Controller("redis://127.0.0.1:6390/0")
    ctl.create("sales")
    ctl.replace("sales", "revenue", kind="line", data={"t": [1, 2], "eur": [10.0, 12.5]})
    ctl.stream("sales", "revenue", {"t": [3], "eur": [11.0]})
    ctl.stream("sales", "revenue", df)          # a pandas DataFrame travels as Arrow

Commands are validated before they are published (``Rejected`` says what is wrong).
Every method returns the stream id of the published entry.  What that
acknowledgement guarantees follows ``FLEET_REDIS_DURABILITY`` (settings): with
``everysec`` the command is in Redis's memory and on its disk within about a second;
with ``always`` it was on disk before the reply; with ``replica`` at least one replica
has it, or ``app.bus.publisher.NotDurable`` is raised (send again with the same
``id=``: a repeated command id is applied once).  With ``FLEET_REDIS_SENTINELS`` set
the controller finds the master through Sentinel and follows a failover.

Least privilege: ``fleetctl controllers add --dashboard sales`` prints a Redis URL
whose ACL user may XADD to ``sales`` only and read its keys (app/bus/acl.py); that
is all ``replace``/``stream``/... and ``state``/``rejected`` of ``sales`` need.
``create``/``delete``/``dashboards`` are the operator's (admin URL).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from app.bus import registry
from app.bus.connection import sync_client
from app.bus.keys import Keys
from app.bus.publisher import publish, publish_many
from app.bus.store import read_rejected, read_state
from app.control import snapshot
from app.control.protocol import Limits, encode
from app.control.state import DashboardState
from app.settings import Settings, load


class Controller:
    def __init__(self, redis_url: str | None = None, *, settings: Settings | None = None,
                 stamp: bool = True) -> None:
        self.settings = settings or (load(redis_url=redis_url) if redis_url else load())
        self.keys = Keys(self.settings.key_prefix)
        self.redis = sync_client(self.settings)
        self.limits = Limits.from_settings(self.settings)
        self.stamp = stamp  # add ts= (publish time, ms) for latency figures

    def close(self) -> None:
        self.redis.close()

    def __enter__(self) -> "Controller":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- dashboards ---------------------------------------------------------------------
    def create(self, dashboard: str, title: str = "") -> bool:
        return registry.create_dashboard(self.redis, self.keys, dashboard, title)

    def delete(self, dashboard: str) -> bool:
        return registry.delete_dashboard(self.redis, self.keys, dashboard)

    def dashboards(self) -> dict[str, dict]:
        return registry.list_dashboards(self.redis, self.keys)

    def state(self, dashboard: str) -> DashboardState:
        return read_state(self.redis, self.keys, dashboard, self.settings)[0]

    def state_json(self, dashboard: str) -> dict[str, Any]:
        return snapshot.view(self.state(dashboard))

    def rejected(self, dashboard: str, count: int = 100) -> list[dict]:
        return read_rejected(self.redis, self.keys, dashboard, count)

    # --- ops -------------------------------------------------------------------------------
    def send(self, dashboard: str, op: str, *, id: str | None = None, **params: Any) -> str:
        """Publish any op with keyword fields (see docs/protocol.md)."""
        return publish(self.redis, self.keys, dashboard, self._fields(op, id, params), self.limits,
                       durability=self.settings.redis_durability, wait_ms=self.settings.redis_wait_ms)

    def send_many(self, dashboard: str, commands: Iterable[tuple[str, Mapping[str, Any]]]) -> list[str]:
        """Publish several ``(op, params)`` at once, atomically, in order."""
        batch = [self._fields(op, p.get("id"), {k: v for k, v in p.items() if k != "id"})
                 for op, p in commands]
        return publish_many(self.redis, self.keys, dashboard, batch, self.limits,
                            durability=self.settings.redis_durability, wait_ms=self.settings.redis_wait_ms)

    def _fields(self, op: str, cmd_id: str | None, params: dict[str, Any]) -> dict:
        if self.stamp:
            params.setdefault("ts", f"{time.time() * 1000:.3f}")
        return encode(op, cmd_id=cmd_id, **params)

    def replace(self, dashboard: str, name: str, *, kind: str = "line", data: Any = None,
                columns: list[str] | None = None, x: str | None = None, y: Any = None,
                title: str | None = None, x_label: str | None = None, y_label: str | None = None,
                x_axis_type: str | None = None, rollover: int | None = None,
                tooltips: Any = None, id: str | None = None) -> str:
        return self.send(dashboard, "replace", id=id, name=name, kind=kind, data=data, columns=columns,
                         x=x, y=y, title=title, x_label=x_label, y_label=y_label,
                         x_axis_type=x_axis_type, rollover=rollover, tooltips=tooltips)

    def stream(self, dashboard: str, name: str, data: Any, *, rollover: int | None = None,
               id: str | None = None) -> str:
        return self.send(dashboard, "stream", id=id, name=name, data=data, rollover=rollover)

    def patch(self, dashboard: str, name: str, patches: Mapping[str, list], *, id: str | None = None) -> str:
        return self.send(dashboard, "patch", id=id, name=name,
                         patches={k: [list(p) for p in v] for k, v in patches.items()})

    def clear(self, dashboard: str, name: str | None = None, *, id: str | None = None) -> str:
        return self.send(dashboard, "clear", id=id, name=name)

    def remove(self, dashboard: str, name: str, *, id: str | None = None) -> str:
        return self.send(dashboard, "remove", id=id, name=name)

    def layout(self, dashboard: str, rows: list[list[str]] | None = None, *,
               columns: list[list[str]] | None = None, id: str | None = None) -> str:
        return self.send(dashboard, "layout", id=id, rows=rows, columns_layout=columns)

    def set(self, dashboard: str, name: str | None = None, *, id: str | None = None, **props: Any) -> str:
        return self.send(dashboard, "set", id=id, name=name, **props)

    def figure(self, dashboard: str, name: str, fig: Any, *, title: str | None = None,
               id: str | None = None) -> str:
        """Publish a whole Bokeh model (e.g. from bokeh.plotting.figure)."""
        from bokeh.embed import json_item  # controllers may use Bokeh; the fold does not

        return self.send(dashboard, "figure", id=id, name=name, model=json_item(fig), title=title)
