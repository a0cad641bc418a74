"""Pages: the index of viewable dashboards, a dashboard page, ``/embed/<name>.js``.

Every page that embeds a dashboard mints a new session id and token (never reused,
never cached) and makes sure the browser has the ``fleet_route`` cookie that nginx
hashes on, so the autoload request and the websocket reach the same instance.
"""

from __future__ import annotations

import json
from pathlib import Path

from flask import Blueprint, Response, abort, g, render_template, request, url_for

from app.bus import registry
from app.bus.keys import DASHBOARD_RE
from app.web import csp_nonce, embed, fleet
from app.web.auth import LogoutForm, login_required

bp = Blueprint("pages", __name__)
# The status mark and re-authentication, appended to /embed/<name>.js (pages load it).
STATUS_JS = (Path(__file__).parent / "static" / "status.js").read_text()


def _route_cookie(resp: Response) -> Response:
    if not request.cookies.get(embed.ROUTE_COOKIE):
        resp.set_cookie(
            embed.ROUTE_COOKIE, embed.new_route_value(), max_age=365 * 24 * 3600, httponly=True,
            samesite="Lax", secure=fleet().settings.cookie_secure, path="/",
        )
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _checked(name: str) -> dict:
    """The dashboard's metadata; 404 if unknown, 403 if the user may not view it."""
    f = fleet()
    if not DASHBOARD_RE.match(name):
        abort(404, f"no dashboard {name!r}")
    dashboards = registry.list_dashboards(f.client, f.keys)
    if name not in dashboards:
        abort(404, f"no dashboard {name!r}")
    if not f.accounts.can_view(g.user, name):
        abort(403, f"you may not view dashboard {name!r}")
    return dashboards[name]


@bp.route("/")
@login_required
def index():
    f = fleet()
    dashboards = registry.list_dashboards(f.client, f.keys)
    names = f.accounts.viewable(g.user, dashboards)
    items = [{"name": n, "title": dashboards[n].get("title") or n} for n in names]
    return render_template("index.html", dashboards=items, logout_form=LogoutForm())


@bp.route("/d/<name>")
@login_required
def dashboard(name: str):
    meta = _checked(name)
    s = fleet().settings
    minted = embed.mint(s, name, g.user)
    elementid = embed.element_id()
    src = embed.autoload_src(embed.app_url(s, request.host_url), minted.token, elementid)
    html = render_template(
        "dashboard.html", name=name, title=meta.get("title") or name,
        tag=embed.autoload_tag(src, elementid, csp_nonce()), logout_form=LogoutForm(),
        # the embed snippet only where it can work: origins listed, and for people who
        # build pages (controllers, admins), not for every viewer
        embed_hint=bool(s.embed_origins) and g.user.has_role("controller"),
    )
    return _route_cookie(Response(html, mimetype="text/html"))


def _js(body: str, status: int = 200) -> Response:
    # Always 200: a browser does not run a script served with an error status, and the
    # message is the point.  The real outcome is in X-Fleet-Status.
    resp = Response(body, mimetype="application/javascript")
    resp.headers["X-Fleet-Status"] = str(status)
    return _route_cookie(resp)


def _message_js(text: str, link: str | None = None) -> str:
    """JS that puts a short message (and optional link) where the script tag is."""
    return (
        "(function(){var me=document.currentScript;var d=document.createElement('div');"
        "d.className='fleet-dashboard-message';"
        f"d.appendChild(document.createTextNode({json.dumps(text)}));"
        + (f"var a=document.createElement('a');a.href={json.dumps(link)};a.textContent=' Log in';"
           "d.appendChild(a);" if link else "")
        + "me.parentNode.insertBefore(d,me);})();"
    )


@bp.route("/embed/<name>.js")
def embed_js(name: str):
    """One script tag for another intranet page: ``<script src=".../embed/X.js">``.

    Goes through the same login: without a session it shows a login link; a user who
    may not view the dashboard gets a message, never a token.  Only pages of our own
    origin or of ``FLEET_EMBED_ORIGINS`` get a token (a same-site page on another port
    would otherwise read it out of the script), and the token is bound to that origin.
    """
    f = fleet()
    s = f.settings
    own = embed.normalize_origin(request.host_url)
    origin, why = embed.page_origin(request.headers, own or "", embed.embed_origins(s))
    if origin is None:
        return _js(_message_js(f"This page may not embed dashboards: {why}."), 403)
    if g.user is None:
        login = url_for("auth.login", _external=True)
        return _cors(_js(_message_js("Log in to see this dashboard.", login), 401))
    if not DASHBOARD_RE.match(name) or not registry.dashboard_exists(f.client, f.keys, name):
        return _cors(_js(_message_js(f"No dashboard {name!r}."), 404))
    if not f.accounts.can_view(g.user, name):
        return _cors(_js(_message_js(f"You may not view dashboard {name!r}."), 403))
    minted = embed.mint(s, name, g.user, origin=origin)
    elementid = embed.element_id()
    src = embed.autoload_src(embed.app_url(s, request.host_url), minted.token, elementid)
    body = (
        "(function(){var me=document.currentScript;var d=document.createElement('div');"
        f"d.id={json.dumps(elementid)};d.className='fleet-dashboard';"
        "me.parentNode.insertBefore(d,me);})();\n" + embed.loader_js(src, elementid)
        + "\n" + STATUS_JS
    )
    return _cors(_js(body))


def _cors(resp: Response) -> Response:
    """For ``<script crossorigin="use-credentials">`` from a listed origin (checked by
    :func:`embed.page_origin` before this): let that origin, and only it, read it."""
    origin = embed.normalize_origin(request.headers.get("Origin"))
    if origin and origin in embed.embed_origins(fleet().settings):
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Access-Control-Allow-Credentials"] = "true"
    resp.headers["Vary"] = "Origin, Referer, Sec-Fetch-Site"
    return resp
