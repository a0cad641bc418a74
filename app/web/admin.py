"""Admin page (admin role): the fleet at a glance, and the operator's actions.

Status (refreshing itself): instances' heartbeats (sessions, who is viewing what,
last ids, history rewinds), the compactor, supervisord process states with a restart
button per Bokeh instance, the process event history that the event listener
(:mod:`app.stack.events`) records in Redis, rejected commands per dashboard and Redis
health, with an alarm when Redis memory nears ``maxmemory``.  The page polls
``/admin/panel`` every few seconds; ``/admin/status.json`` serves scripts and probes.

Actions, each a POST with the CSRF token (CSRFProtect checks it before the view),
for the admin role only, answered 4xx with a message on bad input and logged as one
``fleet.audit`` line (who, from where, what): users (add, roles, password, remove),
dashboard access (grant, revoke), API tokens (create, shown once; revoke) and
restarting a Bokeh instance through supervisord.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

from flask import Blueprint, Response, abort, flash, g, jsonify, redirect, render_template, request, session, url_for

from app import passwords
from app.bus import activity, compactor, health, heartbeat, process_events, registry, store
from app.bus.accounts import check_username
from app.bus.connection import CONNECTION_ERRORS
from app.control.roles import ROLES
from app.stack import names
from app.web import fleet, humanize
from app.web.auth import LogoutForm, client_addr, role_required
from app.web.supervisor import RestartError, process_states, restart_process

bp = Blueprint("admin", __name__, url_prefix="/admin")

REJECTED_PER_DASHBOARD = 20
EVENTS_SHOWN = 30  # latest supervisord / watchdog / admin events on the page
REFRESH_SECONDS = 3
#: token lifetimes offered by the form (label -> seconds, None = never expires)
TOKEN_LIFETIMES = {"never": None, "1 day": 86400, "7 days": 7 * 86400, "30 days": 30 * 86400,
                   "90 days": 90 * 86400, "365 days": 365 * 86400}
TOKEN_ID_RE = re.compile(r"^[0-9a-f]{12}\Z")

audit = logging.getLogger("fleet.audit")


@bp.record_once
def _setup(state: Any) -> None:
    humanize.install(state.app)
    if not audit.handlers:  # its own handler: gunicorn leaves the root logger without one
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
        audit.addHandler(handler)
        audit.setLevel(logging.INFO)
        audit.propagate = False


def _audit(action: str, **detail: Any) -> None:
    """One line per admin action: who, from where, what (values repr'd: no line breaks)."""
    parts = " ".join(f"{k}={v!r}" for k, v in detail.items())
    audit.info("admin=%s addr=%s action=%s %s", g.user.name, client_addr(), action, parts)


# --- status ------------------------------------------------------------------------------
def _compactor(raw: dict[str, Any]) -> dict[str, Any]:
    """The compactor's status hash as owner/time/counters and one row per snapshot
    (``snapshot:<name>`` = ``"<last id> <unix time> <bytes>"``)."""
    out: dict[str, Any] = {"owner": None, "time": None, "snapshots_written": None, "snapshots": [], "other": {}}
    for k, v in raw.items():
        if k.startswith("snapshot:"):
            last_id, t, size = (str(v).split() + ["", "", ""])[:3]
            out["snapshots"].append({"dashboard": k[len("snapshot:"):], "last_id": last_id,
                                     "time": humanize._number(t), "bytes": humanize._number(size)})
        elif k in ("owner", "time", "snapshots_written"):
            out[k] = v
        else:
            out["other"][k] = v
    return out


def status() -> dict[str, Any]:
    f = fleet()
    redis_health = health.redis_health(f.client, f.settings.redis_memory_alarm_ratio)
    out: dict[str, Any] = {"time": time.time(), "redis": redis_health}
    if out["redis"]["ok"]:
        try:
            out["instances"] = heartbeat.read_heartbeats(f.client, f.keys)
            out["compactor"] = compactor.read_status(f.client, f.keys)
            dashboards = registry.list_dashboards(f.client, f.keys)
            updated = activity.last_updates(f.client, f.keys, dashboards)
            out["dashboards"] = [
                {"name": n, "title": meta.get("title") or n, "last_update": updated.get(n),
                 "rejected": store.read_rejected(f.client, f.keys, n, REJECTED_PER_DASHBOARD)}
                for n, meta in dashboards.items()
            ]
            # what the event listener (fleet_events) recorded, not supervisord's own view
            out["events"] = process_events.recent(f.client, f.keys, EVENTS_SHOWN)
        except CONNECTION_ERRORS as exc:  # Redis went away between the ping and here
            out["redis"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    out.setdefault("instances", [])
    out["viewers"] = heartbeat.who_views(out["instances"])
    # Redis history that went backwards under the live instances (each time resynced)
    out["history_rewinds"] = sum(int(hb.get("history_rewinds") or 0) for hb in out["instances"])
    out.setdefault("compactor", {})
    out.setdefault("dashboards", [])
    out.setdefault("events", [])
    out["supervisor"] = process_states(_sock())
    return out


def _sock():
    return fleet().settings.var_dir / "supervisor.sock"


def _panel_context() -> dict[str, Any]:
    s = status()
    return {"s": s, "compactor": _compactor(s["compactor"]), "instance_number": names.instance_number}


def _no_store(resp: Response) -> Response:
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _manage() -> dict[str, Any]:
    """What the management forms show: users, access rules, tokens, dashboards."""
    f = fleet()
    return {"users": f.accounts.list_users(), "rules": f.accounts.access_rules(),
            "tokens": f.accounts.list_tokens(), "roles": ROLES, "lifetimes": list(TOKEN_LIFETIMES),
            "dashboard_names": list(registry.list_dashboards(f.client, f.keys))}


@bp.get("/")
@role_required("admin")
def index() -> Response:
    html = render_template("admin.html", refresh=REFRESH_SECONDS, logout_form=LogoutForm(),
                           **_panel_context(), **_manage())
    return _no_store(Response(html, mimetype="text/html"))


@bp.get("/status.json")
@role_required("admin")
def status_json() -> Response:
    return _no_store(jsonify(status()))


@bp.get("/panel")
@role_required("admin")
def panel() -> Response:
    """The page body alone: the page swaps it in every few seconds."""
    return _no_store(Response(render_template("admin_panel.html", **_panel_context()), mimetype="text/html"))


# --- actions -----------------------------------------------------------------------------
def _field(name: str, *, required: bool = True, max_len: int = 200) -> str:
    value = request.form.get(name, "")
    value = value.strip() if name != "password" else value
    if required and not value:
        abort(400, f"missing field {name!r}")
    if len(value) > max_len:
        abort(400, f"field {name!r} longer than {max_len} characters")
    return value


def _role(required: bool = True) -> str:
    role = _field("role", required=required)
    if role and role not in ROLES:
        abort(400, f"unknown role {role!r}: use {', '.join(ROLES)}")
    return role


def _done(message: str, section: str) -> Any:  # werkzeug's redirect Response
    flash(message)
    return redirect(url_for("admin.index") + f"#{section}", code=303)


def _account(call, *args: Any, **kw: Any) -> Any:
    try:
        return call(*args, **kw)
    except ValueError as exc:  # AccountError, or a bad dashboard name (app.bus.keys)
        abort(400, str(exc))


def _known_user(name: str) -> str:
    _account(check_username, name)
    if fleet().accounts.get_user(name) is None:
        abort(404, f"no user {name!r}")
    return name


@bp.post("/users/add")
@role_required("admin")
def user_add() -> Response:
    name, role = _field("name", max_len=100), _role()
    pw_hash = _account(passwords.hash_password, _field("password", max_len=passwords.MAX_PASSWORD))
    _account(fleet().accounts.add_user, name, pw_hash, [role])
    _audit("user.add", user=name, role=role)
    return _done(f"User {name} added ({role}).", "users")


@bp.post("/users/<name>/roles")
@role_required("admin")
def user_roles(name: str) -> Response:
    _known_user(name)
    role = _role()
    if name == g.user.name and role != "admin":
        abort(400, "you cannot take the admin role from yourself here (another admin or fleetctl can)")
    user = _account(fleet().accounts.set_roles, name, [role])
    if name == g.user.name:
        session["gen"] = user.gen  # keep this login; the user's others end
    _audit("user.roles", user=name, role=role)
    return _done(f"User {name} is now {role}; their open sessions were closed.", "users")


@bp.post("/users/<name>/password")
@role_required("admin")
def user_password(name: str) -> Response:
    _known_user(name)
    pw_hash = _account(passwords.hash_password, _field("password", max_len=passwords.MAX_PASSWORD))
    user = _account(fleet().accounts.set_password, name, pw_hash)
    if name == g.user.name:
        session["gen"] = user.gen
    _audit("user.password", user=name)
    return _done(f"Password of {name} set; their logins and open dashboards were closed.", "users")


@bp.post("/users/<name>/remove")
@role_required("admin")
def user_remove(name: str) -> Response:
    _known_user(name)
    if name == g.user.name:
        abort(400, "you cannot remove your own account here (another admin or fleetctl can)")
    fleet().accounts.remove_user(name)
    _audit("user.remove", user=name)
    return _done(f"User {name} removed; their open sessions were closed.", "users")


def _access_args() -> tuple[str, list[str], list[str]]:
    dashboard = _field("dashboard", max_len=200)
    user, role = _field("user", required=False, max_len=100), _role(required=False)
    if not user and not role:
        abort(400, "name a user or a role")
    if user:
        _account(check_username, user)
    return dashboard, [user] if user else [], [role] if role else []


@bp.post("/access/grant")
@role_required("admin")
def access_grant() -> Response:
    dashboard, users, roles = _access_args()
    _account(fleet().accounts.grant_access, dashboard, users=users, roles=roles)
    _audit("access.grant", dashboard=dashboard, users=users, roles=roles)
    return _done(f"Access to {dashboard} granted to {', '.join(users + roles)}.", "access")


@bp.post("/access/revoke")
@role_required("admin")
def access_revoke() -> Response:
    dashboard, users, roles = _access_args()
    _account(fleet().accounts.revoke_access, dashboard, users=users, roles=roles)
    _audit("access.revoke", dashboard=dashboard, users=users, roles=roles)
    return _done(f"Access to {dashboard} revoked from {', '.join(users + roles)}; "
                 "their open sessions of it were closed.", "access")


@bp.post("/tokens/create")
@role_required("admin")
def token_create() -> Response:
    name = _field("name", max_len=100)
    dashboards = [d for d in re.split(r"[\s,]+", _field("dashboards", max_len=2000)) if d]
    lifetime = _field("expires", required=False) or "never"
    if lifetime not in TOKEN_LIFETIMES:
        abort(400, f"unknown lifetime {lifetime!r}: use one of {', '.join(TOKEN_LIFETIMES)}")
    secret, tok = _account(fleet().accounts.create_token, name, dashboards, expires_in=TOKEN_LIFETIMES[lifetime])
    _audit("token.create", token=tok.id, name=name, dashboards=list(tok.dashboards), expires=lifetime)
    # The secret is shown once, in this response only (never in a flash: that is a cookie).
    html = render_template("admin_token.html", token=tok, secret=secret, logout_form=LogoutForm())
    return _no_store(Response(html, status=201, mimetype="text/html"))


@bp.post("/tokens/<ident>/revoke")
@role_required("admin")
def token_revoke(ident: str) -> Response:
    if not TOKEN_ID_RE.match(ident):
        abort(400, "a token id is 12 hex digits")
    f = fleet()
    if not any(t.id == ident and not t.revoked for t in f.accounts.list_tokens()):
        abort(404, f"no live token {ident}")
    revoked = f.accounts.revoke_token(ident, exact_id=True)
    _audit("token.revoke", token=ident, name=revoked[0].name if revoked else "")
    return _done(f"Token {ident} revoked.", "tokens")


@bp.post("/processes/restart")
@role_required("admin")
def process_restart() -> Response:
    name = _field("name", max_len=100)
    group, _, program = name.rpartition(":")
    if names.instance_number(program) is None:
        abort(400, f"{name!r} is not a Bokeh instance (only instances are restarted here)")
    sup = process_states(_sock())
    if not sup["ok"]:
        abort(503, f"supervisord not reachable: {sup['error']}")
    if name not in {p["name"] for p in sup["processes"]}:
        abort(404, f"supervisord has no process {name!r}")
    f = fleet()
    _audit("process.restart", process=name)
    try:
        state = restart_process(_sock(), name)
        result = f"restarted ({state})"
    except RestartError as exc:
        result = f"failed: {exc}"[:200]
    try:  # in the event history beside the listener's own records
        process_events.record_many(f.client, f.keys, [{
            "event": "ADMIN_RESTART", "process": name, "group": group, "reason": f"by {g.user.name}",
            "result": result, "ts": str(int(time.time() * 1000))}])
    except CONNECTION_ERRORS:
        pass
    if result.startswith("failed"):
        abort(502, f"restart of {name} {result}")
    return _done(f"{name} {result}.", "processes")
