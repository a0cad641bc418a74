"""Identity: login/logout, trusted-header SSO, role checks and nginx's ``/auth/check``.

``g.user`` is loaded once per request: from the SSO header when it is enabled and the
TCP peer is a trusted proxy, else from the Flask session.  The session holds only the
user name, the user's ``gen`` and a server-side login id (``sid``, see
:func:`bind_login_session`); passwd/remove change ``gen`` and so end every existing
session of that user, and logout deletes the login id, so a copied session cookie
stops working at logout.  ``/auth/password``: users change their own password.
Failed logins are counted in Redis per user+client
address (and, more loosely, per client address) so the limit holds across all
gunicorn workers; lock-outs back off exponentially.  The client address is the one
nginx puts in X-Forwarded-For (see :mod:`app.web.proxy`).  Requests for a Host the
site does not serve get 400.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf import FlaskForm
from wtforms import HiddenField, PasswordField, StringField
from wtforms.validators import DataRequired, Length

from app import passwords, tokens
from app.bus import ratelimit
from app.bus.accounts import USERNAME_RE, AccountError, User
from app.control.roles import view_only
from app.metrics.web import LOGINS
from app.web import fleet
from app.web.proxy import is_trusted

bp = Blueprint("auth", __name__, url_prefix="/auth")

ADDRESS_FACTOR = 5  # an address may fail this many times more often than one user+address


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=100)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    next = HiddenField()


class LogoutForm(FlaskForm):
    """Empty form: carries the CSRF token of the logout button."""


class PasswordChangeForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired(), Length(max=1024)])
    new = PasswordField("New password", validators=[DataRequired(), Length(max=1024)])
    confirm = PasswordField("New password again", validators=[DataRequired(), Length(max=1024)])


def client_addr() -> str:
    return request.remote_addr or ""


def sso_user() -> User | None:
    """The user named by the SSO header, if SSO is on and the TCP peer is nginx.

    nginx strips every client-supplied copy of the header and sets it only for
    requests whose peer is one of ``FLEET_SSO_PROXIES``; gunicorn listens on loopback
    and only nginx (a ``FLEET_TRUSTED_PROXIES`` peer) reaches it, so the header is
    believed from trusted peers only, and only one copy of it.
    """
    f = fleet()
    header = f.settings.sso_header
    if not header:
        return None
    if not is_trusted(request.environ.get("fleet.peer"), f.networks):
        return None
    values = request.headers.getlist(header)
    if len(values) != 1:
        return None  # absent, or several copies: nobody can tell which one the proxy set
    name = values[0].strip()
    if not name:
        return None
    user = f.accounts.get_user(name)
    if user is None:
        if not USERNAME_RE.match(name):
            return None
        user = User(name, ("viewer",))  # known to the intranet, not to us: a plain viewer
    return user


def _default_port(scheme: str) -> str:
    return "443" if scheme == "https" else "80"


def _split_host(host: str, scheme: str) -> tuple[str, str]:
    """``host[:port]`` lower-cased, as (host, port) with the scheme's default port."""
    host = host.strip().lower()
    if host.startswith("["):  # IPv6 literal
        end = host.find("]")
        name, rest = host[: end + 1], host[end + 1:]
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    return name, port or _default_port(scheme)


def allowed_hosts() -> tuple[str, ...]:
    s = fleet().settings
    return s.allowed_hosts or s.allowed_origins


def host_allowed(host: str, allowed: tuple[str, ...], scheme: str) -> bool:
    """Whether the request's Host is one the site serves (``*`` = any)."""
    if "*" in allowed:
        return True
    if not host or any(c in host for c in "/\\@ \r\n\t"):
        return False
    name, port = _split_host(host, scheme)
    for entry in allowed:
        e_name, e_port = _split_host(entry, scheme)
        if e_port not in (port, "*"):
            continue
        if name == e_name or ("*" in e_name and "[" not in e_name
                              and fnmatch.fnmatchcase(name, e_name)):  # Bokeh-style "*.corp"
            return True
    return False


@bp.before_app_request
def load_user() -> Response | None:
    g.user = None
    g.sso = False
    # URLs with tokens are built from the Host header: answer only the site's hosts.
    if not host_allowed(request.host, allowed_hosts(), request.scheme):
        if request.endpoint == "auth.check":
            # nginx's auth_request passes 401/403 on and turns anything else into a 500
            return Response(status=403, headers={"Cache-Control": "no-store"})
        abort(400, f"unknown host {request.host[:100]!r}: the site answers only "
                   "FLEET_ALLOWED_HOSTS (default: the hosts of FLEET_ALLOWED_ORIGINS)")
    if request.endpoint == "static":
        return None
    user = sso_user()
    if user is not None:
        g.user, g.sso = user, True
        return None
    name = session.get("user")
    if name:
        user = fleet().accounts.get_user(name)
        if user is None or user.gen != session.get("gen") or not login_session_live(name):
            session.clear()  # removed, password/roles changed, or logged out since this login
            return None
        g.user = user
    return None


def login_required(view: Callable) -> Callable:
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if g.user is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped


def role_required(role: str) -> Callable[[Callable], Callable]:
    def deco(view: Callable) -> Callable:
        @functools.wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if not g.user.has_role(role):
                abort(403, f"needs the {role} role")
            return view(*args, **kwargs)

        return wrapped

    return deco


def safe_next(target: str | None) -> str:
    """Only same-site relative paths; anything else goes to the index."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("pages.index")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return url_for("pages.index")  # CR/LF & co. would split the Location header
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return url_for("pages.index")
    return target


def _human(seconds: int) -> str:
    return f"{seconds} s" if seconds < 120 else f"{-(-seconds // 60)} minutes"


@bp.route("/login", methods=("GET", "POST"))
def login():
    form = LoginForm()
    if request.method == "GET":
        form.next.data = request.args.get("next", "")
        return render_template("login.html", form=form)
    if not form.validate_on_submit():
        LOGINS.labels("invalid").inc()
        return render_template("login.html", form=form), 400
    f = fleet()
    s = f.settings
    acc = f.accounts
    # Buckets are (user, client address) and, more loosely, the client address: a
    # client's failures lock out that client only, never the user everywhere.
    name, addr = form.username.data.strip(), client_addr()
    limit, window = s.login_rate_limit, s.login_rate_window_seconds
    wait = max(ratelimit.locked_for(f.client, f.keys, "login", name.lower(), addr),
               ratelimit.locked_for(f.client, f.keys, "login-addr", addr))
    if wait:
        resp = Response(render_template(
            "login.html", form=form,
            error=f"Too many failed logins from your address. Try again in {_human(wait)}."), 429)
        resp.headers["Retry-After"] = str(wait)
        LOGINS.labels("locked").inc()
        return resp
    user = passwords.authenticate(acc, name, form.password.data)
    if user is None:
        ratelimit.fail(f.client, f.keys, "login", name.lower(), addr, limit=limit,
                       window=window, max_lock=s.login_max_lock_seconds)
        ratelimit.fail(f.client, f.keys, "login-addr", addr, limit=limit * ADDRESS_FACTOR,
                       window=window, max_lock=s.login_max_lock_seconds)
        LOGINS.labels("failure").inc()
        return render_template("login.html", form=form, error="Wrong user name or password."), 401
    ratelimit.reset(f.client, f.keys, "login", name.lower(), addr)
    LOGINS.labels("success").inc()
    session.clear()
    session.permanent = True
    session["user"] = user.name
    session["gen"] = user.gen
    session["login_at"] = int(time.time())
    return redirect(safe_next(form.next.data))


@bp.route("/logout", methods=("POST",))
def logout():
    """End this login on the server too: its id is deleted, so a copy of the session
    cookie (taken before the logout) no longer loads the user."""
    LogoutForm()  # CSRFProtect has already checked the token
    fleet().accounts.close_web_session(session.get("sid"))
    session.clear()
    flash("Logged out.")
    return redirect(url_for("auth.login"))


@bp.route("/password", methods=("GET", "POST"))
def password():
    """Users change their own password: the current one first (wrong guesses count
    against the same lock-out as logins), then the new one twice.  The user's other
    logins end and their open dashboards close everywhere (the account ``gen`` changes:
    see :mod:`app.bus.access`); this login goes on."""
    if g.user is None:
        return redirect(url_for("auth.login", next=request.path))
    form = PasswordChangeForm()

    def page(status: int, error: str | None = None) -> tuple[str, int]:
        return render_template("password.html", form=form, error=error, logout_form=LogoutForm()), status

    if g.sso:
        return page(400, "You are logged in through single sign-on: change your password there.")
    if view_only(g.user.roles):
        return page(403, "A display account cannot change its password: ask an administrator.")
    if request.method == "GET":
        return page(200)
    if not form.validate_on_submit():
        return page(400)
    f = fleet()
    s = f.settings
    name, addr = g.user.name, client_addr()
    wait = ratelimit.locked_for(f.client, f.keys, "login", name.lower(), addr)
    if wait:
        resp = Response(page(429, f"Too many wrong passwords. Try again in {_human(wait)}.")[0], 429)
        resp.headers["Retry-After"] = str(wait)
        return resp
    if passwords.authenticate(f.accounts, name, form.current.data) is None:
        ratelimit.fail(f.client, f.keys, "login", name.lower(), addr, limit=s.login_rate_limit,
                       window=s.login_rate_window_seconds, max_lock=s.login_max_lock_seconds)
        return page(403, "The current password is wrong.")
    if form.new.data != form.confirm.data:
        return page(400, "The new passwords differ.")
    if form.new.data == form.current.data:
        return page(400, "The new password is the current one.")
    try:
        user = f.accounts.set_password(name, passwords.hash_password(form.new.data))
    except AccountError as exc:
        return page(400, str(exc))
    ratelimit.reset(f.client, f.keys, "login", name.lower(), addr)
    session["gen"] = user.gen  # this login goes on; every other one ends
    logging.getLogger("fleet.audit").info("user=%s addr=%s action=password.change", name, addr)
    flash("Password changed. Your other logins and open dashboards were closed.")
    return redirect(url_for("pages.index"))


@bp.route("/renew")
def renew():
    """Keep the login alive while a dashboard page is open and connected.

    The page (app/web/static/viewer.js) calls this every quarter of the login lifetime
    (at most every 5 minutes) while its websocket is up: the request itself renews
    the session cookie (a permanent session is re-sent on every request) and the
    server-side login id (:func:`login_session_live` in :func:`load_user`), so a
    wall display stays logged in for weeks while a closed page's login still ends.
    JSON, never cached: 200 ``{"user", "lifetime"}``, or 401 when the login is gone.
    """
    lifetime = int(current_app.permanent_session_lifetime.total_seconds())
    if g.user is None:
        resp = jsonify({"error": {"status": 401, "message": "not logged in"}})
        resp.status_code = 401
    else:
        resp = jsonify({"user": g.user.name, "lifetime": lifetime, "sso": bool(g.sso)})
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.before_request
def embed_origin_binding():
    """``/auth/check``: a token minted for an embedding page (payload ``origin``) is
    good only from that page's origin: the websocket and the cross-origin autoload
    request carry ``Origin``; a same-origin request carries none, and then the token
    must be for our own origin."""
    if request.endpoint != "auth.check":
        return None
    from app.web.embed import normalize_origin

    own = normalize_origin(request.host_url)
    sent = request.headers.get("Origin")
    for token in _request_tokens() or []:
        payload = tokens.read(token)  # unchecked: check() refuses a garbled or forged one anyway
        bound = payload.get("origin") if payload is not None else None
        if bound is None:
            continue
        came_from = normalize_origin(sent) if sent else own
        if not isinstance(bound, str) or came_from != bound:
            resp = Response(status=401)
            resp.headers["Cache-Control"] = "no-store"
            return resp
    return None



def login_session_live(name: str) -> bool:
    """Whether the Flask session's server-side login id for ``name`` is still open
    (refreshing its lifetime: it lasts as long as the sliding cookie)."""
    ttl = int(current_app.permanent_session_lifetime.total_seconds())
    return fleet().accounts.web_session_live(session.get("sid"), name, ttl)


@bp.after_app_request
def bind_login_session(resp: Response) -> Response:
    """Give every login (whatever put the user into the Flask session) a server-side
    id that logout can delete; sessions without one are not accepted (load_user)."""
    name = session.get("user")
    if name and not session.get("sid") and not g.get("sso"):
        ttl = int(current_app.permanent_session_lifetime.total_seconds())
        session["sid"] = fleet().accounts.open_web_session(name, ttl)
    return resp


def _request_tokens() -> list[str] | None:
    """Every Bokeh token the original request carries: ``bokeh-token`` values of
    X-Original-URI (autoload.js; a websocket URL may carry one too) and the websocket
    subprotocol header (``bokeh, <token>``).  None if that header is not exactly one
    ``bokeh, <token>`` pair (a second header or pair would be a second token)."""
    tokens: list[str] = []
    uri = request.headers.get("X-Original-URI", "")
    if uri:
        tokens += parse_qs(urlsplit(uri).query, keep_blank_values=True).get("bokeh-token", [])
    protos = [p for p in request.headers.getlist("Sec-WebSocket-Protocol") if p.strip()]
    if len(protos) > 1:
        return None
    if protos:
        parts = [p.strip() for p in protos[0].split(",")]
        if len(parts) != 2 or parts[0] != "bokeh":
            return None
        tokens.append(parts[1])
    return tokens


def _token_payload(token: str) -> dict | None:
    """The payload of a signed, unexpired Flask-minted Bokeh token naming a dashboard."""
    payload = tokens.check(token, fleet().settings.secret_key)
    return payload if isinstance(payload, dict) else None


@bp.route("/check")
def check():
    """For nginx ``auth_request`` in front of ``/bokeh/``: 204 or 401, no templates.

    A request may carry at most one Bokeh token (URL or websocket subprotocol, never
    both: the instance uses the subprotocol one for websockets, so two could pair an
    approved token with another).  With a token, the token's own user (the one the
    instance shows the session to) must exist, still hold the roles the token names
    and may view its dashboard; this also serves pages on other intranet origins that
    embed through ``/embed/X.js`` without our cookie.  Without a token (BokehJS
    static files), a logged-in user (session or SSO) is enough.
    """
    empty = Response(status=401)
    empty.headers["Cache-Control"] = "no-store"
    tokens = _request_tokens()
    if tokens is None or len(tokens) > 1:
        return empty
    accounts = fleet().accounts
    user = g.user
    if tokens:
        payload = _token_payload(tokens[0])
        if payload is None:
            return empty  # a forged, garbled or expired token: never let it through
        name = payload["user"]
        user = g.user if g.user is not None and g.user.name == name else accounts.get_user(name)
        roles = payload.get("roles")
        if user is None or (roles is not None and user.effective_roles != User("", roles).effective_roles):
            return empty  # removed, or roles changed since the token was minted
        if "gen" in payload and payload["gen"] != user.gen:
            return empty  # password (or roles) changed since: the user's open pages end
        if not accounts.can_view(user, payload["dashboard"]):
            return empty
    if user is None:
        return empty
    ok = Response(status=204)
    ok.headers["Cache-Control"] = "no-store"
    ok.headers["X-Fleet-User"] = user.name
    return ok
