"""Minting Bokeh session ids and tokens, and the autoload tag that uses them.

The instances run with ``--session-ids external-signed``: only ids signed with the
shared ``settings.secret_key`` are accepted, and the instance shows the one dashboard
named in the token payload.  The token is built here, with exactly the payload we
choose: no cookies or headers are copied into it (Bokeh's default would copy them,
HttpOnly session cookie included, where page JavaScript can read them).

``bokeh.embed.server_document`` cannot carry an external-signed id and
``server_session`` sends only the id (the instance would then build its own token
without our payload), so :func:`autoload_src` mirrors their URL format and passes
``bokeh-token`` as a query argument, which the autoload handler reads.
"""

from __future__ import annotations

import json
import secrets
from urllib.parse import quote, urlencode

from markupsafe import Markup

from app import tokens
from app.bus.accounts import User
from app.settings import Settings
from app.tokens import Minted

APP_NAME = "dashboard"
ROUTE_COOKIE = "fleet_route"


def mint(settings: Settings, dashboard: str, user: User, origin: str | None = None) -> Minted:
    """A fresh signed session id and a short-lived token for ``dashboard`` only.

    ``origin`` (``/embed/X.js``): the page origin the token was minted for; it goes
    into the signed payload and ``/auth/check`` refuses the token from any other
    ``Origin``, so a token that leaks is no use to a page elsewhere.
    """
    return tokens.mint(settings.secret_key, dashboard, user.name, user.effective_roles, origin=origin,
                       gen=user.gen, expiration=settings.session_token_expiration)


def normalize_origin(value: str | None) -> str | None:
    """``scheme://host[:port]`` lower-cased, default port dropped; None if not an origin."""
    from urllib.parse import urlsplit

    if not value or value == "null" or any(ord(c) < 0x21 for c in value):
        return None
    try:
        u = urlsplit(value.strip())
        port = u.port
    except ValueError:
        return None
    if u.scheme not in ("http", "https") or not u.hostname:
        return None
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    if port is not None and port != {"http": 80, "https": 443}[u.scheme]:
        host += f":{port}"
    return f"{u.scheme}://{host}"


def embed_origins(settings: Settings) -> frozenset[str]:
    """``FLEET_EMBED_ORIGINS``, normalized (entries that are not origins are ignored)."""
    return frozenset(o for o in map(normalize_origin, settings.embed_origins) if o)


def page_origin(headers, own: str, allowed: frozenset[str]) -> tuple[str | None, str]:
    """(origin of the page asking for ``/embed/X.js``, or None with the reason).

    A ``<script src>`` load carries the page's origin in ``Origin`` (with
    ``crossorigin``) or, by default, in ``Referer``; ``Sec-Fetch-Site`` says whether
    the page is ours.  Browsers set these, pages cannot: a page that hides them
    (``referrerpolicy="no-referrer"``) gets no token.
    """
    if headers.get("Sec-Fetch-Mode") == "navigate" or headers.get("Sec-Fetch-Dest") not in (None, "script"):
        return None, "load this as a <script src>, not as a page"
    site = headers.get("Sec-Fetch-Site")
    origin = normalize_origin(headers.get("Origin")) or normalize_origin(headers.get("Referer"))
    if site == "same-origin" or (site is None and origin == own):
        return own, ""
    if origin is None:
        return None, "the embedding page sent neither Origin nor Referer"
    if origin != own and origin in allowed:
        return origin, ""
    return None, f"pages on {origin} may not embed dashboards (FLEET_EMBED_ORIGINS)"


def app_url(settings: Settings, base_url: str) -> str:
    """Absolute URL of the Bokeh app behind nginx, e.g. http://host:8080/bokeh/dashboard."""
    return base_url.rstrip("/") + "/" + settings.bokeh_prefix.strip("/") + "/" + APP_NAME


def element_id() -> str:
    return "fleet-" + secrets.token_hex(8)


def autoload_src(url: str, token: str, elementid: str) -> str:
    """The autoload.js URL, in the format of ``bokeh.embed.server.server_session``."""
    from urllib.parse import urlparse

    app_path = urlparse(url).path.rstrip("/") or "/"
    src = url + "/autoload.js?" + urlencode({"bokeh-autoload-element": elementid})
    if app_path != "/":
        src += "&bokeh-app-path=" + quote(app_path)
    src += "&bokeh-absolute-url=" + quote(url, safe=":/")
    src += "&" + urlencode({"bokeh-token": token})
    return src


def loader_js(src: str, elementid: str) -> str:
    """JavaScript that fetches autoload.js and runs it (what Bokeh's autoload tag does).

    Only the XHR carries the URL with the token; it is never put in the page URL or
    a ``src`` attribute that Referer headers or history would leak.  When the fetch
    fails (instances restarting: 502; token refused: 403; network), the page reloads
    itself after a jittered, growing delay (1 s, 2 s, ... 30 s), so it goes back
    through Flask for a fresh session instead of staying dead.
    """
    el = f"document.getElementById({json.dumps(elementid)})"
    return (
        "(function(){"
        "var k='fleet-load-retries';"
        "function retry(code){var n=+(sessionStorage.getItem(k)||0);sessionStorage.setItem(k,n+1);"
        "var d=Math.min(30000,1000*Math.pow(2,n))*(0.5+Math.random());"
        f"var el={el};"
        "if(el){el.textContent='Dashboard unavailable ('+code+'), retrying in '+Math.ceil(d/1000)+' s.';}"
        "setTimeout(function(){location.reload();},d);}"
        "var xhr=new XMLHttpRequest();xhr.responseType='blob';"
        f"xhr.open('GET',{json.dumps(src)},true);"
        "xhr.onerror=function(){retry('network error');};"
        "xhr.onload=function(ev){if(xhr.status!==200){retry(xhr.status);return;}"
        "var s=document.createElement('script');s.src=URL.createObjectURL(ev.target.response);"
        "document.body.appendChild(s);"
        # the websocket may still fail before the document arrives: check it did
        "setTimeout(function(){var b=window.Bokeh,ds=(b&&b.documents)||[];"
        "if(ds.length&&ds[0].roots().length){sessionStorage.removeItem(k);}else{retry('no document');}},20000);};"
        "xhr.send();})();"
    )


def autoload_tag(src: str, elementid: str, nonce: str = "") -> Markup:
    """``<div>`` target + ``<script>`` for a page we render ourselves (``nonce``: the
    page's CSP nonce, see app.web.content_security_policy)."""
    js = loader_js(src, elementid).replace("</", "<\\/")
    attr = f' nonce="{nonce}"' if nonce else ""
    return Markup(f'<div id="{elementid}" class="fleet-dashboard"></div>\n<script{attr}>{js}</script>')


def new_route_value() -> str:
    return secrets.token_urlsafe(12)
