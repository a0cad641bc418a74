"""The fleet's Flask app: login, dashboard pages with signed Bokeh embedding, the
controller HTTP API and the admin page.  Runs under gunicorn (``gunicorn_conf.py``).

Configuration is layered flaskr-style: defaults derived from :class:`app.settings.
Settings` (``FLEET_*`` variables), then ``test_config``.  A test passes its own
settings as ``test_config["FLEET_SETTINGS"]``.  Redis is reached only through
:mod:`app.bus` (one sync client per worker, shared by its threads).
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, g, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from app import settings as settings_mod
from app.bus.accounts import Accounts
from app.bus.connection import CONNECTION_ERRORS, sync_client
from app.bus.keys import Keys
from app.settings import Settings
from app.web.proxy import TrustedProxyFix, parse_networks

csrf = CSRFProtect()


@dataclass
class Fleet:
    """Per-app handles: settings, the Redis client, key names and the account store."""

    settings: Settings
    client: Any
    keys: Keys
    accounts: Accounts
    networks: tuple


def fleet() -> Fleet:
    return current_app.extensions["fleet"]


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    test_config = dict(test_config or {})
    settings: Settings = test_config.pop("FLEET_SETTINGS", None) or settings_mod.load()
    settings.require_secrets("flask_secret", "secret_key")

    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY=settings.flask_secret,
        SESSION_COOKIE_NAME="fleet_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.cookie_secure,
        PERMANENT_SESSION_LIFETIME=dt.timedelta(seconds=settings.login_lifetime_seconds),
        MAX_CONTENT_LENGTH=settings.api_max_body_bytes,
        WTF_CSRF_TIME_LIMIT=None,  # the token is bound to the session; the session expires
        JSON_SORT_KEYS=False,
    )
    app.config.update(test_config)

    client = test_config.get("FLEET_REDIS") or sync_client(settings)
    keys = Keys(settings.key_prefix)
    networks = parse_networks(settings.trusted_proxies)
    app.extensions["fleet"] = Fleet(settings, client, keys, Accounts(client, keys), networks)
    app.wsgi_app = TrustedProxyFix(app.wsgi_app, networks)  # type: ignore[method-assign]  # Flask's documented middleware hook

    csrf.init_app(app)

    from app.web import admin, api, auth, pages

    app.register_blueprint(auth.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(admin.bp)
    csrf.exempt(api.bp)  # bearer tokens, no cookies: nothing for a forged form to ride on

    app.jinja_env.globals["csp_nonce"] = csp_nonce
    _observe(app)

    @app.after_request
    def security_headers(resp):
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        if resp.mimetype == "text/html":
            # a page meant for other origins' iframes (pages.frame) sets its own CSP
            # frame-ancestors and no X-Frame-Options; every other page: ours only
            ancestors = g.get("frame_ancestors")
            if not ancestors:
                resp.headers.setdefault("X-Frame-Options", "SAMEORIGIN")
            resp.headers.setdefault("Content-Security-Policy",
                                    content_security_policy(g.get("csp_nonce"), ancestors))
        return resp

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        return _error_response(400, f"CSRF check failed: {exc.description}")

    def redis_away(exc: Exception):
        current_app.logger.warning("Redis not reachable: %s", exc)
        resp = _error_response(503, "the command bus (Redis) is not reachable; retry shortly")
        return resp[0], 503, {"Retry-After": "2"}

    for exc_class in CONNECTION_ERRORS:
        app.register_error_handler(exc_class, redis_away)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if exc.code is None or exc.code < 400:
            return exc
        if exc.code == 413:
            limit = current_app.config["MAX_CONTENT_LENGTH"]
            return _error_response(413, f"request body too large: the limit is {limit} bytes "
                                        "(FLEET_API_MAX_BODY_BYTES)")
        return _error_response(exc.code, exc.description or exc.name)

    return app


def _observe(app: Flask) -> None:
    """Request ids (nginx's X-Request-ID, into every log line of the request), request
    latency, and ``/metrics`` ahead of Flask (no session, no Host check) for the TCP
    peers FLEET_METRICS_ALLOW lets in (nginx answers 404 for it: scrape gunicorn's
    own address)."""
    import time

    from app import logsetup
    from app.metrics import web as web_metrics

    app.wsgi_app = web_metrics.MetricsEndpoint(  # type: ignore[method-assign]  # Flask's WSGI middleware hook
        app.wsgi_app, app.extensions["fleet"].settings.metrics_allow)

    def start_request() -> None:
        g.request_started = time.perf_counter()
        g.request_id_token = logsetup.request_id.set(
            logsetup.clean_request_id(request.headers.get("X-Request-ID")))

    app.before_request_funcs.setdefault(None, []).insert(0, start_request)  # before the Host check

    @app.after_request
    def observe(resp):
        started = g.get("request_started")
        if started is not None:
            web_metrics.observe_request(request.endpoint, request.method, resp.status_code,
                                        time.perf_counter() - started)
        return resp

    @app.teardown_request
    def end_request(exc: BaseException | None) -> None:
        token = g.pop("request_id_token", None)
        if token is not None:
            logsetup.request_id.reset(token)


def csp_nonce() -> str:
    """This response's CSP nonce (one per request) for our few inline scripts:
    ``<script nonce="{{ csp_nonce() }}">``."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(18)
    return g.csp_nonce


def content_security_policy(nonce: str | None, frame_ancestors: tuple[str, ...] | None = None) -> str:
    """The CSP of every HTML page: scripts only from this origin, the response's nonce
    (inline) and ``blob:`` (the dashboard loader runs Bokeh's autoload.js from a blob,
    so the token-carrying URL is never a ``src``), never inline handlers or ``eval``
    (no 'unsafe-inline'/'unsafe-eval': nothing a controller smuggles into a page can
    run).  Styles need 'unsafe-inline': BokehJS styles its views with ``<style>``
    elements and ``style`` attributes.  ``frame-ancestors 'self'`` matches
    ``X-Frame-Options: SAMEORIGIN`` (``frame_ancestors``: the origins, besides ours,
    that may frame an iframe page); ``connect-src 'self'`` covers the websocket."""
    script = "script-src 'self' blob:" + (f" 'nonce-{nonce}'" if nonce else "")
    return "; ".join((
        "default-src 'self'", script, "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:", "font-src 'self' data:", "connect-src 'self'",
        "object-src 'none'", "base-uri 'none'", " ".join(("frame-ancestors 'self'", *(frame_ancestors or ()))),
        "form-action 'self'",
    ))


def _error_response(code: int, message: str):
    if request.path.startswith("/api/") or request.path == "/auth/check":
        body = {"error": {"status": code, "message": message}}
        return jsonify(body), code
    return render_template("error.html", code=code, message=message), code
