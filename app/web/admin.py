"""Admin page (admin role): fleet status at a glance, refreshing itself.

Instances' heartbeats (sessions, lag, last ids, history rewinds), the compactor status,
rejected commands per dashboard, supervisord process states and Redis health, with an
alarm when Redis memory nears ``maxmemory`` (where publishes start failing).  The page polls
``/admin/status.json`` every few seconds; the same JSON serves scripts and probes.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, Response, jsonify, render_template

from app.bus import compactor, health, heartbeat, process_events, registry, store
from app.bus.connection import CONNECTION_ERRORS
from app.web import fleet
from app.web.auth import LogoutForm, role_required
from app.web.supervisor import process_states

bp = Blueprint("admin", __name__, url_prefix="/admin")

REJECTED_PER_DASHBOARD = 20
EVENTS_SHOWN = 20  # latest supervisord / watchdog events on the page
REFRESH_SECONDS = 3


def status() -> dict[str, Any]:
    f = fleet()
    out: dict[str, Any] = {"time": time.time(),
                           "redis": health.redis_health(f.client, f.settings.redis_memory_alarm_ratio)}
    if out["redis"]["ok"]:
        try:
            out["instances"] = heartbeat.read_heartbeats(f.client, f.keys)
            out["compactor"] = compactor.read_status(f.client, f.keys)
            dashboards = registry.list_dashboards(f.client, f.keys)
            out["dashboards"] = [
                {"name": n, "title": meta.get("title") or n,
                 "rejected": store.read_rejected(f.client, f.keys, n, REJECTED_PER_DASHBOARD)}
                for n, meta in dashboards.items()
            ]
            out["events"] = process_events.recent(f.client, f.keys, EVENTS_SHOWN)
        except CONNECTION_ERRORS as exc:  # Redis went away between the ping and here
            out["redis"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    out.setdefault("instances", [])
    # Redis history that went backwards under the live instances (each time resynced)
    out["history_rewinds"] = sum(int(hb.get("history_rewinds") or 0) for hb in out["instances"])
    out.setdefault("compactor", {})
    out.setdefault("dashboards", [])
    out.setdefault("events", [])
    out["supervisor"] = process_states(f.settings.var_dir / "supervisor.sock")
    return out


@bp.get("/")
@role_required("admin")
def index() -> Response:
    html = render_template("admin.html", s=status(), refresh=REFRESH_SECONDS, logout_form=LogoutForm())
    resp = Response(html, mimetype="text/html")
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/status.json")
@role_required("admin")
def status_json() -> Response:
    resp = jsonify(status())
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/panel")
@role_required("admin")
def panel() -> Response:
    """The page body alone: the page swaps it in every few seconds."""
    resp = Response(render_template("admin_panel.html", s=status()), mimetype="text/html")
    resp.headers["Cache-Control"] = "no-store"
    return resp
