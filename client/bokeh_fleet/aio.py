"""``AsyncController``: the controller for asyncio programs (redis.asyncio), same methods.

    from bokeh_fleet import AsyncController
    async with AsyncController(url, strict=True) as ctl:
        await ctl.stream("sales", "revenue", {"t": [now], "eur": [11.0]})
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from bokeh_fleet import wire
from bokeh_fleet.controller import REDIS_OPTIONS, SNAPSHOT_WAIT, NotApplied, _Commands, _frame, _view
from bokeh_fleet.wire import Fields, Rejected


class AsyncController(_Commands):
    """Asyncio twin of :class:`bokeh_fleet.Controller` (every method is a coroutine)."""

    def _connect(self, redis_url: str) -> Any:
        import redis.asyncio as aioredis

        return aioredis.Redis.from_url(redis_url, **REDIS_OPTIONS)

    async def close(self) -> None:
        """Close the Redis connection pool."""
        if self.redis is not None:
            await self.redis.aclose() if hasattr(self.redis, "aclose") else await self.redis.close()

    async def __aenter__(self) -> AsyncController:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _publish(self, dashboard: str, batch: List[Fields]) -> List[str]:
        wire.check_dashboard(dashboard)
        if self._http is not None:
            ids = await asyncio.to_thread(self._http.publish, dashboard, batch,
                                          wait=self.strict, timeout=self.timeout)
        else:
            if not await self.redis.hexists(f"{self.prefix}:dashboards", dashboard):
                raise Rejected(f"no dashboard {dashboard!r} (create it with: fleetctl dashboard "
                               f"create {dashboard})", "dashboard")
            key = wire.keys(self.prefix, dashboard)["commands"]
            async with self.redis.pipeline(transaction=True) as pipe:
                for fields in batch:
                    pipe.xadd(key, dict(fields))
                ids = [i.decode() if isinstance(i, bytes) else str(i) for i in await pipe.execute()]
        for i in ids:
            self._sent[i] = dashboard
        while len(self._sent) > 10_000:
            self._sent.popitem(last=False)
        if self.strict and self._http is None:
            for i in ids:
                await self.wait_applied(i, self.timeout, dashboard=dashboard)
        return ids

    async def send(self, dashboard: str, op: str, *, id: Optional[str] = None, **params: Any) -> str:
        """Publish any op with keyword fields (docs/protocol.md); returns the stream id."""
        return (await self._publish(dashboard, [self._fields(op, id, params)]))[0]

    async def send_many(self, dashboard: str, commands: Iterable[Tuple[str, Mapping[str, Any]]]) -> List[str]:
        """Publish several ``(op, params)`` at once, checked first, then atomically and in
        order (see :meth:`bokeh_fleet.Controller.send_many`)."""
        batch = [self._fields(op, p.get("id"), {k: v for k, v in p.items() if k != "id"})
                 for op, p in commands]
        return await self._publish(dashboard, batch)

    async def replace(self, dashboard: str, name: str, *, kind: str = "line", data: Any = None,
                      columns: Optional[Sequence[str]] = None, x: Optional[str] = None, y: Any = None,
                      title: Optional[str] = None, x_label: Optional[str] = None,
                      y_label: Optional[str] = None, x_axis_type: Optional[str] = None,
                      rollover: Optional[int] = None, tooltips: Any = None,
                      id: Optional[str] = None, **panel: Any) -> str:
        """Create or replace figure ``name`` (see :meth:`bokeh_fleet.Controller.replace`)."""
        f = self._replace(name, kind, data, columns, x, y, x_axis_type, id,
                          dict(title=title, x_label=x_label, y_label=y_label, rollover=rollover,
                               tooltips=tooltips, **panel))
        return (await self._publish(dashboard, [f]))[0]

    async def stream(self, dashboard: str, name: str, data: Any, *, rollover: Optional[int] = None,
                     id: Optional[str] = None) -> str:
        """Append rows to figure ``name``."""
        return await self.send(dashboard, "stream", id=id, name=name, data=data, rollover=rollover)

    async def patch(self, dashboard: str, name: str, patches: Mapping[str, Sequence[Sequence[Any]]], *,
                    id: Optional[str] = None) -> str:
        """Change single values: ``{"y": [[index, value], ...]}``."""
        return await self.send(dashboard, "patch", id=id, name=name,
                               patches={k: [list(p) for p in v] for k, v in patches.items()})

    async def clear(self, dashboard: str, name: Optional[str] = None, *, id: Optional[str] = None) -> str:
        """Empty figure ``name``'s data (every figure without a name)."""
        return await self.send(dashboard, "clear", id=id, name=name)

    async def remove(self, dashboard: str, name: str, *, id: Optional[str] = None) -> str:
        """Remove figure ``name``."""
        return await self.send(dashboard, "remove", id=id, name=name)

    async def layout(self, dashboard: str, rows: Optional[List[List[str]]] = None, *,
                     columns: Optional[List[List[str]]] = None, id: Optional[str] = None) -> str:
        """Arrange figures by rows (or by ``columns``: lists of figure names, top to
        bottom; the wire field ``cols``)."""
        return await self.send(dashboard, "layout", id=id, rows=rows, cols=columns)

    async def set(self, dashboard: str, name: Optional[str] = None, *, id: Optional[str] = None,
                  **props: Any) -> str:
        """Change title / labels / rollover / tooltips."""
        return await self.send(dashboard, "set", id=id, name=name, **props)

    async def figure(self, dashboard: str, name: str, fig: Any, *, title: Optional[str] = None,
                     id: Optional[str] = None) -> str:
        """Publish a whole Bokeh model (a ``json_item`` dict, or a model: needs bokeh)."""
        model = fig
        if not isinstance(fig, Mapping):
            from bokeh.embed import json_item

            model = json_item(fig)
        return await self.send(dashboard, "figure", id=id, name=name, model=model, title=title)

    async def create(self, dashboard: str, title: str = "") -> bool:
        """Register a dashboard (admin URL only); False if it existed."""
        import json

        wire.check_dashboard(dashboard)
        meta = json.dumps({"title": title or dashboard, "created": time.time()})
        if not await self.redis.hsetnx(f"{self.prefix}:dashboards", dashboard, meta):
            return False
        await self.redis.xadd(f"{self.prefix}:registry", {"event": "created", "dashboard": dashboard},
                              maxlen=1000, approximate=True)
        return True

    async def dashboards(self) -> List[str]:
        """Names of the dashboards this controller may use."""
        if self._http is not None:
            return list((await asyncio.to_thread(self._http.get, "/api/v1/dashboards"))["dashboards"])
        return sorted(k.decode() for k in await self.redis.hkeys(f"{self.prefix}:dashboards"))

    async def wait_applied(self, id: str, timeout: Optional[float] = None, *,
                           dashboard: Optional[str] = None) -> None:
        """Wait until the instances folded command ``id``; :class:`Rejected` with their
        reason if they refused it, :class:`NotApplied` after ``timeout`` s."""
        dashboard = dashboard or self._sent.get(id)
        if dashboard is None:
            raise ValueError(f"unknown command id {id!r}: pass dashboard=")
        limit = self.timeout if timeout is None else timeout
        if self._http is not None:
            return await asyncio.to_thread(self._http.wait, dashboard, id, limit)
        keys = wire.keys(self.prefix, dashboard)
        deadline = time.monotonic() + limit
        pause = 0.005
        while True:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.get(keys["applied"])
                pipe.xrange(keys["rejected"], min=id, max=id, count=1)
                last, rejected = await pipe.execute()
            if last is not None and wire.id_tuple(last) >= wire.id_tuple(id):
                if rejected:
                    reason = rejected[0][1].get(b"_reason", b"").decode("utf-8", "replace")
                    raise Rejected(f"the instances rejected command {id}: {reason}")
                return None
            if time.monotonic() >= deadline:
                raise NotApplied(f"no instance applied command {id} of {dashboard!r} within {limit:g} s "
                                 "(are the Bokeh instances running?)")
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    async def rejected(self, dashboard: str, count: int = 100) -> List[Dict[str, Any]]:
        """Newest first: ``{"id", "reason", "fields"}`` of rejected commands."""
        wire.check_dashboard(dashboard)
        if self._http is not None:
            path = f"/api/v1/dashboards/{dashboard}/rejected?count={int(count)}"
            return (await asyncio.to_thread(self._http.get, path))["rejected"]
        out = []
        for eid, fields in await self.redis.xrevrange(wire.keys(self.prefix, dashboard)["rejected"], count=count):
            f = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in fields.items()}
            out.append({"id": eid.decode(), "reason": f.pop("_reason", ""), "fields": f})
        return out

    async def state(self, dashboard: str) -> Dict[str, Any]:
        """The dashboard's current state as plain JSON (see :meth:`bokeh_fleet.Controller.state`)."""
        import json

        wire.check_dashboard(dashboard)
        if self._http is not None:
            return (await asyncio.to_thread(self._http.get, f"/api/v1/dashboards/{dashboard}/state"))["state"]
        keys = wire.keys(self.prefix, dashboard)
        deadline = time.monotonic() + max(self.timeout, SNAPSHOT_WAIT)
        last = await self.redis.xrevrange(keys["commands"], count=1)
        while True:
            raw = await self.redis.get(keys["snapshot"])
            snap = json.loads(raw) if raw else None
            if snap is not None and (not last or wire.id_tuple(snap["last_id"]) >= wire.id_tuple(last[0][0])):
                return _view(snap["state"])
            if snap is None and not last:
                return {"title": dashboard, "figures": [], "layout": []}
            if time.monotonic() >= deadline:
                raise NotApplied(f"the snapshot of {dashboard!r} does not cover the latest commands yet; "
                                 "use AsyncController.http for an exact state")
            await asyncio.sleep(0.1)

    async def frame(self, dashboard: str, name: str) -> Any:
        """Figure ``name``'s current data as a pandas DataFrame (needs pandas)."""
        return _frame(await self.state(dashboard), dashboard, name)
