"""The controller: one method per op of wire protocol v1, over Redis or HTTP.

    from bokeh_fleet import Controller
    ctl = Controller("redis://ctl-sales:PASSWORD@127.0.0.1:6390/0", strict=True)
    ctl.replace("sales", "revenue", kind="line", data=df)
    ctl.stream("sales", "revenue", {"t": [now], "eur": [11.0]})

Commands are checked before they are published (op, fields, names, data shapes);
with ``strict=True`` each call also waits until the instances have folded the
command and raises :class:`Rejected` with their reason if they refused it.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar

from bokeh_fleet import data as _data
from bokeh_fleet import wire
from bokeh_fleet.wire import Fields, Rejected

#: seconds ``state``/``frame`` wait at least for the compactor's snapshot (Redis mode)
SNAPSHOT_WAIT = 15.0


class NotApplied(TimeoutError):
    """No instance folded the command within the timeout (are the instances running?)."""


class FleetError(RuntimeError):
    """The server or Redis refused a request for a reason other than the command itself."""


def _frame(state: Mapping[str, Any], dashboard: str, name: str) -> Any:
    """One figure of a state view (``GET .../state``) as a pandas DataFrame."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("Controller.frame needs pandas: pip install pandas") from None
    for fig in state.get("figures", []):
        if fig["name"] == name:
            df = pd.DataFrame({k: pd.Series(v, dtype=object if v and isinstance(
                next((x for x in v if x is not None), 0), str) else None) for k, v in fig["data"].items()})
            x = fig.get("x")
            if fig.get("x_axis_type") == "datetime" and x in df.columns:
                df[x] = pd.to_datetime(df[x].astype("float64"), unit="ms")
            return df
    raise Rejected(f"dashboard {dashboard!r} has no figure {name!r}", "name")


_C = TypeVar("_C", bound="_Commands")
# redis-py client options of both controllers (socket timeout above any server-side wait)
REDIS_OPTIONS: Dict[str, Any] = {"socket_timeout": 30, "socket_connect_timeout": 5, "health_check_interval": 30}


class _Commands:
    """What the sync and async controllers share: configuration, HTTP mode, and the
    fields of each op; subclasses connect (:meth:`_connect`) and publish."""

    def __init__(self, redis_url: str = "redis://127.0.0.1:6390/0", *, prefix: str = "fleet",
                 strict: bool = False, timeout: float = 5.0, stamp: bool = True) -> None:
        self.prefix = prefix
        self.strict = strict
        self.timeout = timeout
        self.stamp = stamp
        self._http: Optional[_Http] = None
        self.redis: Any = self._connect(redis_url) if redis_url else None
        self._sent: OrderedDict[str, str] = OrderedDict()  # id -> dashboard, for wait_applied(id)

    def _connect(self, redis_url: str) -> Any:
        raise NotImplementedError

    @classmethod
    def http(cls: Type[_C], url: str, token: str, *, strict: bool = False, timeout: float = 5.0,
             stamp: bool = True) -> _C:
        """A controller that talks to the fleet's HTTP API (``url`` = the site, e.g.
        ``http://dash.example:8080``; ``token`` from ``fleetctl tokens create``), for
        controllers that may not reach Redis.  Same methods; only standard library
        (the async controller runs the requests in a thread)."""
        ctl = cls("", strict=strict, timeout=timeout, stamp=stamp)
        ctl._http = _Http(url, token)
        return ctl

    def _fields(self, op: str, cmd_id: Optional[str], params: Dict[str, Any]) -> Fields:
        if self.stamp:
            params.setdefault("ts", f"{time.time() * 1000:.3f}")
        return wire.encode(op, cmd_id=cmd_id, **params)

    def _replace(self, name: str, kind: str, data: Any, columns: Optional[Sequence[str]], x: Optional[str],
                 y: Any, x_axis_type: Optional[str], id: Optional[str], extra: Dict[str, Any]) -> Fields:
        enc = _data.encode_data(data) if data is not None else None
        if enc is not None and x_axis_type is None and kind != "table":
            xcol = x or (enc.columns[0] if enc.columns else None)
            if xcol in enc.datetime_columns:
                x_axis_type = "datetime"  # datetimes on x: a datetime axis, not numbers
        return self._fields("replace", id, dict(name=name, kind=kind, data=enc, columns=columns, x=x, y=y,
                                                x_axis_type=x_axis_type, **extra))


class Controller(_Commands):
    """A synchronous controller over Redis (default) or HTTP (:meth:`http`).

    ``redis_url``: a controller URL from ``fleetctl controllers add`` (least privilege:
    its ACL user may publish to and read its own dashboards only).  ``strict``: wait
    for the instances after each publish and raise :class:`Rejected` if they refused
    the command (:class:`NotApplied` after ``timeout`` seconds).  ``stamp`` adds
    ``ts`` (publish time, for latency figures).
    """

    def _connect(self, redis_url: str) -> Any:
        import redis

        return redis.Redis.from_url(redis_url, **REDIS_OPTIONS)

    def close(self) -> None:
        """Close the Redis connection pool."""
        if self.redis is not None:
            self.redis.close()

    def __enter__(self) -> Controller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- publishing --------------------------------------------------------------------
    def _remember(self, dashboard: str, ids: List[str]) -> None:
        for i in ids:
            self._sent[i] = dashboard
        while len(self._sent) > 10_000:
            self._sent.popitem(last=False)

    def _publish(self, dashboard: str, batch: List[Fields]) -> List[str]:
        wire.check_dashboard(dashboard)
        if self._http is not None:
            ids = self._http.publish(dashboard, batch, wait=self.strict, timeout=self.timeout)
            self._remember(dashboard, ids)
            return ids
        keys = wire.keys(self.prefix, dashboard)
        if not self.redis.hexists(f"{self.prefix}:dashboards", dashboard):
            raise Rejected(f"no dashboard {dashboard!r} (create it with: fleetctl dashboard create "
                           f"{dashboard})", "dashboard")
        pipe = self.redis.pipeline(transaction=True)
        for fields in batch:
            pipe.xadd(keys["commands"], dict(fields))
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in pipe.execute()]
        self._remember(dashboard, ids)
        if self.strict:
            for i in ids:
                self.wait_applied(i, self.timeout, dashboard=dashboard)
        return ids

    def send(self, dashboard: str, op: str, *, id: Optional[str] = None, **params: Any) -> str:
        """Publish any op with keyword fields (docs/protocol.md); returns the stream id."""
        return self._publish(dashboard, [self._fields(op, id, params)])[0]

    def send_many(self, dashboard: str, commands: Iterable[Tuple[str, Mapping[str, Any]]]) -> List[str]:
        """Publish several ``(op, params)`` at once; returns their ids.  Every command is
        checked before any is published, then all go out in order in one transaction
        (viewers never see half of the batch, e.g. figures without their layout)."""
        batch = [self._fields(op, p.get("id"), {k: v for k, v in p.items() if k != "id"})
                 for op, p in commands]
        return self._publish(dashboard, batch)

    def replace(self, dashboard: str, name: str, *, kind: str = "line", data: Any = None,
                columns: Optional[Sequence[str]] = None, x: Optional[str] = None, y: Any = None,
                title: Optional[str] = None, x_label: Optional[str] = None, y_label: Optional[str] = None,
                x_axis_type: Optional[str] = None, rollover: Optional[int] = None,
                tooltips: Any = None, id: Optional[str] = None, **panel: Any) -> str:
        """Create or replace figure ``name``; x defaults to the first column (a
        datetime x column gets a datetime axis).  ``panel``: ``height`` (pixels, any
        kind), ``unit`` (stat, gauge), ``min``/``max`` (gauge), ``text`` (Markdown of a
        text panel); see docs/protocol.md.  Returns the stream id."""
        f = self._replace(name, kind, data, columns, x, y, x_axis_type, id,
                          dict(title=title, x_label=x_label, y_label=y_label, rollover=rollover,
                               tooltips=tooltips, **panel))
        return self._publish(dashboard, [f])[0]

    def stream(self, dashboard: str, name: str, data: Any, *, rollover: Optional[int] = None,
               id: Optional[str] = None) -> str:
        """Append rows (same columns as the figure), keeping the last ``rollover``."""
        return self.send(dashboard, "stream", id=id, name=name, data=data, rollover=rollover)

    def patch(self, dashboard: str, name: str, patches: Mapping[str, Sequence[Sequence[Any]]], *,
              id: Optional[str] = None) -> str:
        """Change single values: ``{"y": [[index, value], ...]}`` (negative index = from the end)."""
        return self.send(dashboard, "patch", id=id, name=name,
                         patches={k: [list(p) for p in v] for k, v in patches.items()})

    def clear(self, dashboard: str, name: Optional[str] = None, *, id: Optional[str] = None) -> str:
        """Empty figure ``name``'s data (every figure without a name)."""
        return self.send(dashboard, "clear", id=id, name=name)

    def remove(self, dashboard: str, name: str, *, id: Optional[str] = None) -> str:
        """Remove figure ``name`` from the dashboard."""
        return self.send(dashboard, "remove", id=id, name=name)

    def layout(self, dashboard: str, rows: Optional[List[List[str]]] = None, *,
               columns: Optional[List[List[str]]] = None, id: Optional[str] = None) -> str:
        """Arrange figures by rows (or by ``columns``: lists of figure names, top to
        bottom; the wire field ``cols``)."""
        return self.send(dashboard, "layout", id=id, rows=rows, cols=columns)

    def set(self, dashboard: str, name: Optional[str] = None, *, id: Optional[str] = None,
            **props: Any) -> str:
        """Change title / x_label / y_label / rollover / tooltips / height (and a panel's
        unit / min / max / text) of a figure, or the dashboard title."""
        return self.send(dashboard, "set", id=id, name=name, **props)

    def figure(self, dashboard: str, name: str, fig: Any, *, title: Optional[str] = None,
               id: Optional[str] = None) -> str:
        """Publish a whole Bokeh model: a ``bokeh.embed.json_item`` dict, or a Bokeh model
        (needs bokeh installed)."""
        model = fig
        if not isinstance(fig, Mapping):
            from bokeh.embed import json_item  # only this method needs Bokeh

            model = json_item(fig)
        return self.send(dashboard, "figure", id=id, name=name, model=model, title=title)

    # --- reading back ------------------------------------------------------------------
    def wait_applied(self, id: str, timeout: Optional[float] = None, *,
                     dashboard: Optional[str] = None) -> None:
        """Wait until the instances folded command ``id``; raise :class:`Rejected` with
        their reason if they refused it, :class:`NotApplied` after ``timeout`` s."""
        dashboard = dashboard or self._sent.get(id)
        if dashboard is None:
            raise ValueError(f"unknown command id {id!r}: pass dashboard=")
        limit = self.timeout if timeout is None else timeout
        if self._http is not None:
            return self._http.wait(dashboard, id, limit)
        keys = wire.keys(self.prefix, dashboard)
        deadline = time.monotonic() + limit
        pause = 0.005
        while True:
            pipe = self.redis.pipeline(transaction=False)
            pipe.get(keys["applied"])
            pipe.xrange(keys["rejected"], min=id, max=id, count=1)
            last, rejected = pipe.execute()
            if last is not None and wire.id_tuple(last) >= wire.id_tuple(id):
                if rejected:
                    reason = rejected[0][1].get(b"_reason", b"").decode("utf-8", "replace")
                    raise Rejected(f"the instances rejected command {id}: {reason}")
                return None
            if time.monotonic() >= deadline:
                raise NotApplied(f"no instance applied command {id} of {dashboard!r} within {limit:g} s "
                                 "(are the Bokeh instances running?)")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def rejected(self, dashboard: str, count: int = 100) -> List[Dict[str, Any]]:
        """Newest first: ``{"id", "reason", "fields"}`` of the dashboard's rejected commands."""
        wire.check_dashboard(dashboard)
        if self._http is not None:
            return self._http.get(f"/api/v1/dashboards/{dashboard}/rejected?count={int(count)}")["rejected"]
        out = []
        for eid, fields in self.redis.xrevrange(wire.keys(self.prefix, dashboard)["rejected"], count=count):
            f = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in fields.items()}
            out.append({"id": eid.decode(), "reason": f.pop("_reason", ""), "fields": f})
        return out

    def state(self, dashboard: str) -> Dict[str, Any]:
        """The dashboard's current state as plain JSON (figures with columns as lists).

        Over HTTP this is the server's fold of snapshot + log.  Over Redis it is the
        compactor's snapshot, waited for until it covers every command published
        before the call (the compactor writes one every FLEET_SNAPSHOT_EVERY_SECONDS,
        10 s by default; waits up to ``max(timeout, 15)`` s, then :class:`NotApplied`).
        """
        wire.check_dashboard(dashboard)
        if self._http is not None:
            return self._http.get(f"/api/v1/dashboards/{dashboard}/state")["state"]
        return _snapshot_state(self.redis, self.prefix, dashboard, max(self.timeout, SNAPSHOT_WAIT))

    def frame(self, dashboard: str, name: str) -> Any:
        """Figure ``name``'s current data as a pandas DataFrame (needs pandas); a
        datetime x column comes back as naive UTC ``datetime64``."""
        return _frame(self.state(dashboard), dashboard, name)

    # --- operator's (admin Redis URL) -----------------------------------------------------
    def create(self, dashboard: str, title: str = "") -> bool:
        """Register a dashboard (admin URL only); False if it existed."""
        wire.check_dashboard(dashboard)
        meta = json.dumps({"title": title or dashboard, "created": time.time()})
        if not self.redis.hsetnx(f"{self.prefix}:dashboards", dashboard, meta):
            return False
        self.redis.xadd(f"{self.prefix}:registry", {"event": "created", "dashboard": dashboard},
                        maxlen=1000, approximate=True)
        return True

    def dashboards(self) -> List[str]:
        """Names of the dashboards this controller may use."""
        if self._http is not None:
            return list(self._http.get("/api/v1/dashboards")["dashboards"])
        return sorted(k.decode() for k in self.redis.hkeys(f"{self.prefix}:dashboards"))


def _snapshot_state(client: Any, prefix: str, dashboard: str, timeout: float) -> Dict[str, Any]:
    keys = wire.keys(prefix, dashboard)
    deadline = time.monotonic() + timeout
    last = client.xrevrange(keys["commands"], count=1)  # what was published before this call
    while True:
        raw = client.get(keys["snapshot"])
        snap = json.loads(raw) if raw else None
        if snap is not None and (not last or wire.id_tuple(snap["last_id"]) >= wire.id_tuple(last[0][0])):
            return _view(snap["state"])
        if snap is None and not last:
            return {"title": dashboard, "figures": [], "layout": []}
        if time.monotonic() >= deadline:
            raise NotApplied(f"the snapshot of {dashboard!r} does not cover the latest commands yet "
                             f"(the compactor writes one every few seconds); use Controller.http for "
                             "an exact state")
        time.sleep(0.1)


def _view(state: Dict[str, Any]) -> Dict[str, Any]:
    """A snapshot's state with columns decoded to lists (NaN -> None)."""
    import numpy as np

    out = dict(state)
    figs = []
    for f in state["figures"]:
        data = {}
        for n, col in f["data"].items():
            if col["kind"] == "text":
                data[n] = col["values"]
            else:
                arr = np.frombuffer(base64.b64decode(col["b64"]),
                                    dtype=np.float64 if col["kind"] == "number" else np.bool_)
                data[n] = [None if (isinstance(v, float) and v != v) else v for v in arr.tolist()]
        figs.append({**f, "data": data})
    out["figures"] = figs
    return out


class _Http:
    """The controller HTTP API over urllib (no extra dependencies)."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    def request(self, method: str, path: str, body: Optional[bytes] = None,
                content_type: str = "application/json", timeout: float = 30) -> Dict[str, Any]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": content_type,
            "Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                err = json.loads(exc.read()).get("error", {})
            except ValueError:
                err = {}
            msg = err.get("message") or f"HTTP {exc.code}"
            if exc.code in (400, 403, 404, 422):  # the command, its dashboard or its token
                raise Rejected(msg, err.get("field")) from None
            raise FleetError(f"{method} {path}: {exc.code} {msg}") from None

    def get(self, path: str) -> Dict[str, Any]:
        return self.request("GET", path)

    def publish(self, dashboard: str, batch: List[Fields], *, wait: bool, timeout: float) -> List[str]:
        commands = []
        for fields in batch:
            obj: Dict[str, Any] = {}
            for k, v in fields.items():
                obj[k] = base64.b64encode(v).decode("ascii") if isinstance(v, bytes) else v
            commands.append(obj)
        q = f"?wait=1&timeout={min(timeout, 10):g}" if wait else ""
        body = json.dumps({"commands": commands}).encode()
        answer = self.request("POST", f"/api/v1/dashboards/{dashboard}/commands{q}", body,
                              timeout=timeout + 30)
        if wait and not answer.get("applied"):
            raise NotApplied(f"no instance applied command {answer.get('pending')} of {dashboard!r} "
                             f"within {timeout:g} s (it was published; are the instances running?)")
        return answer["ids"]

    def wait(self, dashboard: str, entry_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            st = self.get(f"/api/v1/dashboards/{dashboard}/commands/{entry_id}")
            if st["status"] == "rejected":
                raise Rejected(f"the instances rejected command {entry_id}: {st['reason']}")
            if st["status"] == "applied":
                return None
            if time.monotonic() >= deadline:
                raise NotApplied(f"no instance applied command {entry_id} within {timeout:g} s")
            time.sleep(0.05)
