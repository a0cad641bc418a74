"""Large series: a reduced view in the document, detail for each viewer over HTTP.

A line/step/area/scatter figure with more than :data:`REDUCE_ABOVE_ROWS` rows and a
sorted numeric (or datetime) x shows, in the document every viewer shares, the M4
min-max reduction of the whole series to :data:`OVERVIEW_BUCKETS` buckets
(:func:`overview`; at most 4 rows per bucket and y column), computed once per
state and shared by every session.  The fold keeps every row; no wire change: a
figure opts in by its size.  While rows stream in, the view is re-reduced at most
every :data:`REDUCE_INTERVAL_S` (:func:`reduce_now`, one decision per command,
the same in every session); in between, the new rows are appended to the reduced
view as they are (exact, and cheap).

A viewer who zooms or pans needs more than the shared view holds.  Its page
(``app/web/static/series.js``) asks ``GET /bokeh/series`` (:class:`SeriesHandler`)
for the rows of one figure inside its x range at its plot's pixel width, and sets
them into that figure's data source in its own browser only.  The request carries
the page's Bokeh token (``X-Fleet-Token``), checked like the websocket's: signed
with the instance secret, naming the dashboard (the only one it may read), its user
still allowed to view it (:meth:`Instance.access_refusal`).  A token past its expiry
is still good while a viewer connection opened with it is live on this instance (the websocket
outlives the token; the access re-check closes it when access is revoked).  nginx's
``auth_request`` guards ``/bokeh/`` as for every other request.
"""

from __future__ import annotations

import json
import logging
import math
import time
import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
from bokeh.util.token import get_session_id
from tornado.web import RequestHandler

from app import tokens
from app.control import columns as cols
from app.control import reduce
from app.control.state import Figure

if TYPE_CHECKING:
    from app.instance.server import Instance

log = logging.getLogger("fleet.instance.series")

REDUCE_ABOVE_ROWS = 50_000  # figures longer than this show a reduced view (FLEET_REDUCE_ABOVE_ROWS; 0: never)
OVERVIEW_BUCKETS = 2000  # the shared view: at most 4 rows per bucket and y column
REDUCE_INTERVAL_S = 0.5  # while streaming, re-reduce the shared view at most this often
MAX_PX = 8192  # detail requests: plot width in pixels (buckets) at most
TAG = "fleet-reduced"  # tags of a data source that holds a reduced view (series.js looks for it)
KINDS = ("line", "step", "area", "scatter")

_overviews: weakref.WeakKeyDictionary[Figure, dict | None] = weakref.WeakKeyDictionary()
_facts: weakref.WeakKeyDictionary[Figure, tuple[bool, float | None, float | None, bool]] = weakref.WeakKeyDictionary()
_decisions: weakref.WeakKeyDictionary[Figure, bool] = weakref.WeakKeyDictionary()
_last_reduced: dict[tuple[str, str, int], float] = {}
stats = {"overviews": 0, "detail_requests": 0, "detail_refused": 0}


# --- the shared, reduced view -------------------------------------------------------------
def configure(settings: Any) -> None:
    """Take ``FLEET_REDUCE_ABOVE_ROWS`` (the instance calls this once at start-up)."""
    global REDUCE_ABOVE_ROWS
    REDUCE_ABOVE_ROWS = int(settings.reduce_above_rows)


def reducible(fig: Figure) -> bool:
    """Whether ``fig`` is long enough and of a kind to show reduced (x order not checked)."""
    if REDUCE_ABOVE_ROWS <= 0 or fig.length <= REDUCE_ABOVE_ROWS:
        return False
    if fig.kind not in KINDS or fig.x_axis_type == "categorical":
        return False
    return all(c in fig.data and cols.kind_of(fig.data[c]) == "number" for c in (fig.x, *fig.y))


def x_facts(fig: Figure) -> tuple[bool, float | None, float | None, bool]:
    """(x sorted, first finite x, last finite x, x holds NaN) of ``fig``, computed once per
    figure state (passes over every row: too slow to repeat for each detail request)."""
    facts = _facts.get(fig)
    if facts is None:
        x = fig.data[fig.x]
        ok = reduce.is_sorted(x)
        finite = np.flatnonzero(np.isfinite(x)) if ok else np.empty(0, dtype=np.intp)
        facts = (ok, float(x[finite[0]]) if len(finite) else None, float(x[finite[-1]]) if len(finite) else None,
                 bool(ok and len(finite) < len(x)))
        _facts[fig] = facts
    return facts


def overview(fig: Figure) -> dict[str, np.ndarray] | None:
    """The reduced columns of ``fig`` (None: not reducible, or x not sorted), computed
    once per figure state: every session showing that state shares the arrays."""
    if not reducible(fig):
        return None
    if fig in _overviews:
        return _overviews[fig]
    x = fig.data[fig.x]
    out = None
    if x_facts(fig)[0]:
        idx = reduce.minmax(x, [fig.data[y] for y in fig.y], OVERVIEW_BUCKETS)
        out = {c: _frozen(a[idx]) for c, a in fig.data.items()}
        stats["overviews"] += 1
    _overviews[fig] = out
    return out


def reduce_now(key: tuple[str, str, int], fig: Figure) -> bool:
    """For a stream into a reduced figure: re-reduce now (True), or append the new rows
    to the reduced view (False)?  Decided once per figure state (the first session to
    ask), so every session does the same and their messages stay identical."""
    decided = _decisions.get(fig)
    if decided is None:
        now = time.monotonic()
        decided = now - _last_reduced.get(key, -math.inf) >= REDUCE_INTERVAL_S
        if decided:
            _last_reduced[key] = now
            if len(_last_reduced) > 10_000:  # figures come and go: forget the oldest
                for k in list(_last_reduced)[:5000]:
                    del _last_reduced[k]
        _decisions[fig] = decided
    return decided


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


# --- detail for one viewer ----------------------------------------------------------------
class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def _float(handler: RequestHandler, name: str) -> float | None:
    raw = handler.get_query_argument(name, None)
    if raw is None or raw == "":
        return None
    try:
        val = float(raw)
    except ValueError:
        raise Refused(400, f"{name}: expected a number, got {raw[:40]!r}") from None
    if not math.isfinite(val):
        raise Refused(400, f"{name}: must be finite")
    return val


def detail(fig: Figure, x0: float | None, x1: float | None, px: int, method: str = "minmax") -> dict[str, Any]:
    """The rows of ``fig`` in ``[x0, x1]`` (plus one on each side) reduced to ``px``
    pixel columns; every row when there are few enough (``exact``)."""
    x = fig.data[fig.x]
    ok, x_min, x_max, has_nan = x_facts(fig)
    if not ok:
        raise Refused(409, f"figure {fig.name!r}: x is not sorted; no detail view")
    lo, hi = reduce.window(x, x0, x1, has_nan=has_nan)
    if method == "lttb":
        ys = fig.data[fig.y[0]] if fig.y else x
        idx = lo + reduce.lttb(x[lo:hi], ys[lo:hi], max(3, 2 * px))
    else:
        idx = reduce.minmax(x, [fig.data[y] for y in fig.y], px, lo, hi)
    return {
        "figure": fig.name, "version": fig.version, "rows": fig.length, "x_min": x_min, "x_max": x_max,
        "lo": lo, "hi": hi, "exact": len(idx) == hi - lo,
        "columns": {c: cols.to_jsonable(a[idx]) for c, a in fig.data.items()},
    }


class SeriesHandler(RequestHandler):
    """``GET /bokeh/series?figure=F&x0=&x1=&px=&method=minmax|lttb`` with the page's
    Bokeh token in ``X-Fleet-Token``: JSON columns of figure F of the token's dashboard."""

    def initialize(self, instance: Instance) -> None:
        self.instance = instance

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("Content-Type", "application/json; charset=utf-8")

    def _fail(self, status: int, reason: str) -> None:
        self.set_status(status)
        self.finish(json.dumps({"error": {"status": status, "message": reason}}))

    async def get(self) -> None:
        stats["detail_requests"] += 1
        try:
            dashboard = await self._authorise(self.request.headers.get("X-Fleet-Token"))
            name = self.get_query_argument("figure", "")
            current = self.instance.state_of(dashboard)
            fig = current[0].figures.get(name) if current is not None else None
            if fig is None or fig.kind not in KINDS or fig.x not in fig.data:
                raise Refused(404, f"no plotted figure {name[:64]!r} on this dashboard")
            x0, x1 = _float(self, "x0"), _float(self, "x1")
            try:
                px = int(self.get_query_argument("px", "1000"))
            except ValueError:
                raise Refused(400, "px: expected an integer") from None
            if not 1 <= px <= MAX_PX:
                raise Refused(400, f"px: must be between 1 and {MAX_PX}")
            method = self.get_query_argument("method", "minmax")
            if method not in ("minmax", "lttb"):
                raise Refused(400, "method: minmax or lttb")
            body = detail(fig, x0, x1, px, method)
        except Refused as exc:
            if exc.status in (401, 403):
                stats["detail_refused"] += 1
                log.warning("series request refused: %s (from %s)", exc, self.request.remote_ip)
            return self._fail(exc.status, str(exc))
        self.finish(json.dumps(body, allow_nan=False, separators=(",", ":")))

    async def _authorise(self, token: str | None) -> str:
        """The dashboard the token may read, or Refused."""
        secret = self.instance.settings.secret_key
        payload = tokens.check(token, secret)
        if payload == "token expired" and token and self._session_live(token):
            payload = tokens.check(token, secret, now=0.0)  # live session: the expiry was for opening it
        if isinstance(payload, str):
            raise Refused(401 if not token else 403, payload)
        reason = await self.instance.access_refusal(payload)
        if reason:
            raise Refused(403, reason)
        return payload["dashboard"]

    def _session_live(self, token: str) -> bool:
        """Whether a viewer connection opened with this token's session id is live here."""
        try:
            sid = get_session_id(token)
        except Exception:
            return False
        return any(v.sid == sid and not v.closed for v in self.instance.fanout.all_viewers())
