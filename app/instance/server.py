"""The Bokeh instance process: Bokeh's server run programmatically, plus the reader.

* URL prefix ``settings.bokeh_prefix`` (``/bokeh``), one application at
  ``/bokeh/dashboard``; session ids are external-signed with ``settings.secret_key``
  (passed explicitly: ``BOKEH_*`` variables are never relied upon); no cookie or
  header is copied into tokens.
* A session shows the dashboard named in its signed token payload (``"dashboard"``);
  a request without a valid, unexpired token for a known dashboard is refused (HTTP
  403 / websocket closed) before any document is built.
* The reader (:class:`app.bus.reader.Reader`) starts on the server's event loop
  after start-up and feeds :class:`app.instance.sessions.Fanout`.
* Websockets run with ``TCP_NODELAY`` (a Bokeh message is several frames; with
  Nagle on, later frames wait for a delayed ACK).
* ``/healthz`` and ``/metrics`` (also under the prefix); a heartbeat to Redis.
* Access bites: a session opens only while its token's user may view its dashboard
  with the roles the token names (:mod:`app.bus.access`), and every
  ``access_recheck_seconds`` the users of all live sessions are checked again; the
  websockets of a removed user, a user whose access was revoked or whose roles
  changed are closed (1008).  The same loop reads Redis memory for ``/metrics``.
* A websocket whose URL also carries a ``bokeh-token`` is refused: the token nginx's
  ``/auth/check`` approved and the one the session uses must be the same.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import uvloop
from bokeh.application import Application
from bokeh.application.handlers.handler import Handler
from bokeh.document import Document
from bokeh.server.core import SessionError
from bokeh.server.server import BaseServer
from bokeh.server.tornado import BokehTornado
from bokeh.server.views.ws import WSHandler
from bokeh.util.token import get_session_id
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.iostream import StreamClosedError
from tornado.netutil import bind_sockets

from app import tokens
from app.bus.keys import Keys
from app.control import columns
from app.instance import bokeh_compat, series, teardown, wire
from app.instance.endpoints import HealthHandler, MetricsHandler
from app.instance.pagestatus import PageStatus
from app.instance.series import SeriesHandler
from app.instance.sessions import Fanout
from app.settings import Settings

log = logging.getLogger("fleet.instance")

APP_PATH = "/dashboard"


class Refused(Exception):
    """A session request that must not get a document; the message says why."""


class NoDelayWSHandler(WSHandler):
    """Bokeh's websocket handler with Nagle's algorithm off, writing each message in
    one piece (see :func:`app.instance.wire.frames`)."""

    async def send_message(self, message: Any) -> None:  # type: ignore[override]
        conn = self.ws_connection
        if conn is None or bokeh_compat.websocket_compressed(conn) or getattr(conn, "mask_outgoing", True):
            return await super().send_message(message)
        data = wire.frames(message)
        try:
            with await self.write_lock.acquire():
                if conn.is_closing():
                    raise StreamClosedError()
                await conn.stream.write(data)
        except StreamClosedError:
            log.debug("message not sent: connection closed")  # on_close() handles the rest

    def open(self) -> None:  # type: ignore[override]
        try:
            self.set_nodelay(True)
        except Exception:  # pragma: no cover - stream already closed
            pass
        app = self.application
        if isinstance(app, FleetTornado) and self.selected_subprotocol == "bokeh":
            try:
                if self.request.query_arguments.get("bokeh-token"):
                    raise Refused("token in the URL as well as in the subprotocol header")
                app.check_token(bokeh_compat.websocket_token(self))
            except Refused as exc:  # one log line and one counter for every refusal
                app._refuse(str(exc), f"websocket from {self.request.remote_ip}")
                self.close(1008, "session refused")
                return None
        return super().open()


class FleetHandler(Handler):
    """Builds each session's document from the in-memory state of its dashboard.

    Runs in ``on_session_created`` (always on the event loop thread, like the
    reader), not in ``modify_document`` (which Bokeh 3.10 may run in a worker).
    """

    def __init__(self, instance: Instance) -> None:
        super().__init__()
        self.instance = instance

    def modify_document(self, doc: Document) -> None:
        pass

    async def on_session_created(self, session_context: Any) -> None:
        payload = session_context.token_payload
        doc = bokeh_compat.session_document(session_context)
        self.instance.fanout.open_session(session_context.id, payload["dashboard"], doc,
                                          context=session_context, user=str(payload.get("user", ""))[:80])

    async def on_session_destroyed(self, session_context: Any) -> None:
        payload = session_context.token_payload
        self.instance.fanout.close_session(session_context.id, payload.get("dashboard", ""))


class FleetTornado(BokehTornado):
    """BokehTornado that admits a session only for a valid token naming a known dashboard."""

    instance: Instance

    def check_token(self, token: str | None, session_id: str | None = None) -> str:
        """Return the token's dashboard, or raise Refused."""
        payload = tokens.check(token, self.secret_key, session_id=session_id)
        if isinstance(payload, str):
            raise Refused(payload)
        dashboard = payload["dashboard"]
        if self.instance.state_of(dashboard) is None:
            raise Refused(f"unknown dashboard {dashboard!r}")
        return dashboard

    async def check_access(self, token: str | None) -> None:
        """Raise Refused unless the token's user may (still) view its dashboard."""
        payload = (tokens.read(token) or {}) if token else {}
        reason = await self.instance.access_refusal(payload)
        if reason:
            raise Refused(reason)

    def _refuse(self, reason: str, who: str) -> None:
        self.instance.fanout.stats["sessions_refused"] += 1
        log.warning("session refused: %s (%s)", reason, who)

    async def create_session(self, application_context: Any, request: Any) -> Any:
        values = request.arguments.get("bokeh-token") or []
        token = values[-1].decode("utf-8", "replace") if values else None
        try:
            if len(values) > 1:
                raise Refused("more than one token in the request")
            dashboard = self.check_token(token)
            self._check_existing(application_context, token, dashboard)
            await self.check_access(token)
        except Refused as exc:
            self._refuse(str(exc), f"http from {request.remote_ip}")
            raise SessionError(403, str(exc)) from None
        return await super().create_session(application_context, request)

    async def create_session_if_needed(self, application_context: Any, session_id: Any,
                                       request: Any = None, token: str | None = None) -> Any:
        try:
            dashboard = self.check_token(token, session_id)
            self._check_existing(application_context, token, dashboard)
            await self.check_access(token)
        except Refused as exc:
            from bokeh.protocol.exceptions import ProtocolError

            self._refuse(str(exc), f"websocket from {getattr(request, 'remote_ip', '?')}")
            raise ProtocolError(f"session refused: {exc}") from None
        return await super().create_session_if_needed(application_context, session_id, request, token)

    @staticmethod
    def _check_existing(application_context: Any, token: str | None, dashboard: str) -> None:
        sid = get_session_id(token) if token else None
        ctx = bokeh_compat.session_contexts(application_context).get(sid) if sid else None
        if ctx is not None and ctx.token_payload.get("dashboard") != dashboard:
            raise Refused("session exists for another dashboard")


class Instance:
    """One Bokeh instance: server, fan-out, reader, heartbeat."""

    def __init__(self, settings: Settings, port: int, host: str = "127.0.0.1",
                 reader_factory: Callable[[Settings, Fanout], Any] | None = None) -> None:
        settings.require_secrets("secret_key")
        self.settings = settings
        self.port = port
        self.host = host
        # host:port; with a specific bind address the address too (several "hosts" may
        # share one hostname, e.g. network namespaces: ids must not collide)
        where = port if host in ("", "0.0.0.0", "::", "127.0.0.1", "::1", "localhost") else f"{host}:{port}"
        self.instance_id = settings.instance_id or f"{socket.gethostname()}:{where}"
        self.keys = Keys(settings.key_prefix)
        self.fanout = Fanout(self.state_of)
        self._reader_factory = reader_factory or _bus_reader
        self.reader: Any = None
        self.server: BaseServer | None = None
        self.tornado: FleetTornado | None = None
        self._tasks: list[asyncio.Task] = []
        self._stopped = asyncio.Event()
        self._access_client: Any = None
        self.redis_memory: dict[str, Any] = {}  # from app.bus.health.memory_status

    # --- state -----------------------------------------------------------------------
    def state_of(self, dashboard: str):
        feeds = getattr(self.reader, "feeds", None) or {}
        feed = feeds.get(dashboard)
        return None if feed is None else (feed.state, feed.last_id)

    def health(self) -> tuple[bool, str]:
        if self.reader is None:
            return False, "reader not started"
        return self.reader.health()

    # --- lifecycle --------------------------------------------------------------------
    def _build(self) -> None:
        bokeh_compat.check_version()  # before touching any Bokeh internal
        columns.warm_up()
        series.configure(self.settings)
        wire.install()
        teardown.install()
        s = self.settings
        prefix = s.bokeh_prefix
        origins = list(s.allowed_origins) + [f"{self.host}:{self.port}", f"127.0.0.1:{self.port}",
                                             f"localhost:{self.port}"]
        origins += [urlsplit(o).netloc for o in s.embed_origins if "://" in o]  # /embed/X.js pages
        common = {"instance": self}
        self.tornado = FleetTornado(
            {APP_PATH: Application(FleetHandler(self))},
            prefix=prefix,
            extra_websocket_origins=origins,
            secret_key=s.secret_key.encode(),
            sign_sessions=True,
            generate_session_ids=False,
            keep_alive_milliseconds=s.keep_alive_ms,
            check_unused_sessions_milliseconds=s.check_unused_sessions_ms,
            unused_session_lifetime_milliseconds=s.unused_session_lifetime_ms,
            session_token_expiration=s.session_token_expiration,
            include_cookies=[],
            include_headers=[],
            extra_patterns=[
                (r"/healthz", HealthHandler, common),
                (r"/metrics", MetricsHandler, common),
                (r"/series", SeriesHandler, common),  # detail of long series (app/instance/series.py)
            ],
        )
        self.tornado.instance = self
        # Also at the root of the port (for supervisord checks and scrapers).
        self.tornado.add_handlers(r".*", [(r"/healthz", HealthHandler, common),
                                          (r"/metrics", MetricsHandler, common)])
        for rule in self.tornado.wildcard_router.rules:
            if rule.target is WSHandler:
                rule.target = NoDelayWSHandler
        http = HTTPServer(self.tornado, xheaders=True)
        http.add_sockets(bind_sockets(self.port, self.host))
        self.server = BaseServer(IOLoop.current(), self.tornado, http)

    async def start(self) -> None:
        """Start serving, then start the reader on this loop (never before)."""
        self._build()
        assert self.server is not None
        self.server.start()
        self.reader = self._reader_factory(self.settings, self.fanout)
        self._tasks.append(self.reader.start())
        self._tasks.append(asyncio.get_running_loop().create_task(self._heartbeat(), name="heartbeat"))
        self._tasks.append(asyncio.get_running_loop().create_task(PageStatus(self).run(), name="page-status"))
        self._tasks.append(asyncio.get_running_loop().create_task(self._watch(), name="watch"))
        log.info("instance %s serving http://%s:%d%s%s (pid %d)", self.instance_id, self.host, self.port,
                 self.settings.bokeh_prefix, APP_PATH, os.getpid())

    async def stop(self) -> None:
        for t in self._tasks:
            if t.get_name() in ("heartbeat", "page-status", "watch"):
                t.cancel()
        if self.reader is not None:
            await self.reader.stop()
        await self._clear_heartbeat()
        if self._access_client is not None:
            try:
                await asyncio.wait_for(self._access_client.aclose(), 2)
            except Exception:
                pass
        if self.server is not None:
            try:  # orderly, but never hang a supervisord stop on slow session teardown
                await asyncio.wait_for(self.server.stop_async(), 5)  # type: ignore[attr-defined]
            except (TimeoutError, Exception) as exc:
                log.warning("server stop: %r", exc)
        self._stopped.set()

    async def run_forever(self) -> None:
        await self.start()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("instance %s stopping", self.instance_id)
        await self.stop()

    # --- heartbeat --------------------------------------------------------------------
    def heartbeat_payload(self) -> dict[str, Any]:
        feeds = getattr(self.reader, "feeds", None) or {}
        ok, reason = self.health()
        counts = self.fanout.session_count()
        return {
            "host": self.host, "hostname": socket.gethostname(), "port": self.port, "pid": os.getpid(),
            "sessions": sum(counts.values()), "sessions_by_dashboard": counts,
            "last_ids": {name: feed.last_id for name, feed in feeds.items()},
            "healthy": ok, "reason": reason,
            # times Redis's history went backwards under this instance (admin page)
            "history_rewinds": int(getattr(self.reader, "stats", {}).get("history_rewinds", 0)),
        }

    async def _heartbeat(self) -> None:
        from app.bus.connection import async_client
        from app.bus.heartbeat import write_heartbeat

        self._hb_client = async_client(self.settings, client_name=f"fleet-heartbeat-{self.port}")
        ttl = max(3 * self.settings.heartbeat_seconds, 5.0)

        async def beat() -> None:
            await write_heartbeat(self._hb_client, self.keys, self.instance_id, self.heartbeat_payload(), ttl)

        await _periodically("heartbeat", self.settings.heartbeat_seconds, beat)

    # --- access and Redis memory ------------------------------------------------------
    def _access(self) -> Any:
        if self._access_client is None:
            from app.bus.connection import async_client

            self._access_client = async_client(self.settings, client_name=f"fleet-access-{self.port}")
        return self._access_client

    async def access_refusal(self, payload: dict) -> str | None:
        """Why a token with ``payload`` may not open a session now (None: it may)."""
        from app.bus.access import verdicts

        user, dashboard = payload.get("user"), payload.get("dashboard")
        if not isinstance(user, str) or not user:
            return "token names no user"
        roles = payload.get("roles")
        roles = tuple(roles) if isinstance(roles, list) else None
        try:
            found = await asyncio.wait_for(
                verdicts(self._access(), self.keys, [(user, roles, dashboard)],
                         sso=bool(self.settings.sso_header)), 2.0)
        except Exception as exc:
            # Fail open while Redis is away (nginx's /auth/check needs Redis too, so no
            # session opens through the site then); the periodic re-check closes the
            # session once Redis answers again, if its user may no longer view it.
            log.warning("session access not checked: Redis: %s: %s", type(exc).__name__, exc)
            return None
        return found.get((user, roles, dashboard))

    def _live(self) -> list[tuple[Any, str, tuple[str, ...] | None]]:
        """(view, user, token roles) of every live session."""
        out = []
        for views in self.fanout.views.values():
            for view in views.values():
                payload = getattr(view.context, "token_payload", None) or {}
                roles = payload.get("roles")
                out.append((view, str(payload.get("user", view.user)),
                            tuple(roles) if isinstance(roles, list) else None))
        return out

    async def recheck_sessions(self) -> int:
        """Close the sessions whose user may no longer view them; returns how many."""
        from app.bus.access import verdicts

        live = self._live()
        if not live:
            return 0
        found = await verdicts(self._access(), self.keys, [(u, r, v.dashboard) for v, u, r in live],
                               sso=bool(self.settings.sso_header))
        closed = 0
        for view, user, roles in live:
            reason = found.get((user, roles, view.dashboard))
            if reason:
                closed += self.fanout.revoke_session(view, reason)
        return closed

    async def _watch(self) -> None:
        """Every ``access_recheck_seconds``: re-check live sessions, read Redis memory."""
        from app.bus.health import memory_status

        async def check() -> None:
            await self.recheck_sessions()
            info = await self._access().info("memory")
            self.redis_memory = memory_status(info, self.settings.redis_memory_alarm_ratio)

        await _periodically("access re-check", self.settings.access_recheck_seconds, check)

    async def _clear_heartbeat(self) -> None:
        client = getattr(self, "_hb_client", None)
        if client is None:
            return
        try:
            from app.bus.heartbeat import clear_heartbeat

            await asyncio.wait_for(clear_heartbeat(client, self.keys, self.instance_id), 2)
            await client.aclose()
        except Exception:
            pass


def _bus_reader(settings: Settings, fanout: Fanout) -> Any:
    from app.bus.reader import Reader

    return Reader(settings, fanout, name="reader")


def run(settings: Settings, port: int, host: str = "127.0.0.1") -> int:
    """Run one instance until SIGTERM/SIGINT, on uvloop: measured with bench/fanout.py at
    2 instances x 100 sessions, it halved publish-to-page latency against asyncio's
    default loop (tornado's per-frame and per-future overheads dominate here)."""
    logging.getLogger("tornado.access").setLevel(logging.WARNING)  # no line per health probe
    uvloop.run(Instance(settings, port, host).run_forever())
    return 0


async def _periodically(what: str, seconds: float, step: Callable[[], Awaitable[None]]) -> None:
    """Run ``step`` every ``seconds`` until cancelled; a failure is logged once when it
    starts and once when it ends (Redis away must not flood the log)."""
    failing = False
    while True:
        try:
            await step()
            if failing:
                log.info("%s: working again", what)
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not failing:
                log.warning("%s failed: %s: %s", what, type(exc).__name__, exc)
            failing = True
        await asyncio.sleep(seconds)
