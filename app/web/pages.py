"""Pages: the index of viewable dashboards, a dashboard page (plain or kiosk, light or
dark), ``/frame/<name>`` for iframes, ``/embed/<name>.js``.

Every page that embeds a dashboard mints a new session id and token (never reused,
never cached) and makes sure the browser has the ``fleet_route`` cookie that nginx
hashes on, so the autoload request and the websocket reach the same instance.
"""

from __future__ import annotations

import json
from pathlib import Path

from flask import Blueprint, Response, abort, g, render_template, request, url_for

from app.bus import activity, registry
from app.bus.keys import DASHBOARD_RE
from app.control.roles import view_only
from app.web import csp_nonce, embed, fleet, humanize
from app.web.auth import LogoutForm, login_required

bp = Blueprint("pages", __name__)
bp.record_once(lambda state: humanize.install(state.app))  # |time_tag & co. in templates
# The status mark and re-authentication, appended to /embed/<name>.js (pages load it).
STATUS_JS = (Path(__file__).parent / "static" / "status.js").read_text()
THEMES = ("light", "dark")
THEME_COOKIE = "fleet_theme"


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


SEARCH_MAX = 100  # characters of the index's search text


def matches(query: str, *texts: str) -> bool:
    """Whether every word of ``query`` is in one of ``texts`` (case-insensitive)."""
    hay = " ".join(texts).casefold()
    return all(word in hay for word in query.casefold().split())


@bp.route("/")
@login_required
def index():
    """The dashboards the user may view, with when each last changed; ``?q=`` searches
    names and titles (a plain GET form: no script needed)."""
    f = fleet()
    dashboards = registry.list_dashboards(f.client, f.keys)
    names = f.accounts.viewable(g.user, dashboards)
    query = request.args.get("q", "").strip()[:SEARCH_MAX]
    items = [{"name": n, "title": dashboards[n].get("title") or n} for n in names]
    shown = [d for d in items if matches(query, d["name"], d["title"])]
    updated = activity.last_updates(f.client, f.keys, [d["name"] for d in shown])
    for d in shown:
        d["last_update"] = updated.get(d["name"])
    return render_template("index.html", dashboards=shown, total=len(items), query=query,
                           logout_form=LogoutForm())


def _theme() -> tuple[str, str | None]:
    """(theme of this page, value to remember or None): ``?theme=dark|light`` wins and
    is remembered in the ``fleet_theme`` cookie (each viewer's own choice), else the
    cookie, else light."""
    asked = request.args.get("theme")
    if asked in THEMES:
        return asked, asked
    kept = request.cookies.get(THEME_COOKIE)
    return (kept if kept in THEMES else "light"), None


@bp.app_context_processor
def _theme_everywhere() -> dict:
    """Every page (index, admin, login) in the viewer's remembered theme."""
    kept = request.cookies.get(THEME_COOKIE)
    return {"theme": kept if kept in THEMES else "light"}


def _flag(name: str) -> bool:
    return request.args.get(name, "").lower() in ("1", "true", "yes", "on")


def _viewer_page(name: str, meta: dict, *, kiosk: bool, frame: bool) -> Response:
    """The dashboard page (plain, kiosk or iframe): the autoload tag, theme, tools."""
    s = fleet().settings
    theme, remember = _theme()
    minted = embed.mint(s, name, g.user)
    elementid = embed.element_id()
    src = embed.autoload_src(embed.app_url(s, request.host_url), minted.token, elementid)
    html = render_template(
        "dashboard.html", name=name, title=meta.get("title") or name,
        tag=embed.autoload_tag(src, elementid, csp_nonce()), logout_form=LogoutForm(),
        # the embed snippet only where it can work: origins listed, and for people who
        # build pages (controllers, admins), not for every viewer
        embed_hint=bool(s.embed_origins) and g.user.has_role("controller") and not kiosk,
        frame_url=url_for("pages.frame", name=name, _external=True),
        kiosk=kiosk, frame=frame, theme=theme,
        renew_url=url_for("auth.renew"), renew_every=_renew_every(s.login_lifetime_seconds),
    )
    resp = Response(html, mimetype="text/html")
    if remember:
        resp.set_cookie(THEME_COOKIE, remember, max_age=365 * 24 * 3600, httponly=True,
                        samesite="Lax", secure=s.cookie_secure, path="/")
    return _route_cookie(resp)


def _renew_every(lifetime: int) -> int:
    """Seconds between a page's login renewals: a quarter of the lifetime, 1 s to 5 min."""
    return max(1, min(300, lifetime // 4))


@bp.route("/d/<name>")
@login_required
def dashboard(name: str):
    """A dashboard; ``?kiosk=1``: no chrome, the whole screen (a display account always
    gets this); ``?theme=dark|light``."""
    meta = _checked(name)
    kiosk = _flag("kiosk") or view_only(g.user.roles)
    return _viewer_page(name, meta, kiosk=kiosk, frame=False)


@bp.route("/frame/<name>")
def frame(name: str):
    """A dashboard for an ``<iframe>`` on a page of ``FLEET_EMBED_ORIGINS`` (pages that
    strip scripts: Confluence, SharePoint): kiosk layout, and a CSP ``frame-ancestors``
    naming those origins (nginx sends no X-Frame-Options for /frame/).  Any other
    origin's frame is refused by the browser.  The iframe is a page of our own origin,
    so it uses the viewer's own login (the session cookie is SameSite=Lax: the
    embedding page must be same-site, e.g. another host of the intranet's domain);
    without one it shows a link that opens the login in a new tab."""
    s = fleet().settings
    g.frame_ancestors = tuple(sorted(embed.embed_origins(s)))
    if g.user is None:
        login = url_for("auth.login", next=url_for("pages.dashboard", name=name), _external=True)
        html = render_template("frame_login.html", login=login, theme=_theme()[0], kiosk=True)
        resp = Response(html, status=401, mimetype="text/html")
        resp.headers["Cache-Control"] = "no-store"
        return resp
    meta = _checked(name)
    return _viewer_page(name, meta, kiosk=True, frame=True)


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
