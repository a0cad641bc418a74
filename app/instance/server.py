"""The Bokeh instance process: Bokeh's HTTP side, the viewers' websockets, the reader.

* URL prefix ``settings.bokeh_prefix`` (``/bokeh``), one application at
  ``/bokeh/dashboard``; session ids are external-signed with ``settings.secret_key``
  (passed explicitly: ``BOKEH_*`` variables are never relied upon); no cookie or
  header is copied into tokens.
* A viewer shows the dashboard named in its signed token payload (``"dashboard"``);
  a request without a valid, unexpired token for a known dashboard is refused (HTTP
  403 / websocket closed 1008).  ``autoload.js`` creates no Bokeh session: it only
  checks the token and hands it back to the page.
* The websocket (:class:`ViewerHandler`) is a connection to the dashboard's one shared
  document (:mod:`app.instance.sessions`), not a Bokeh session: it answers ACK,
  serves PULL-DOC-REQ from the cached serialisation, and acknowledges everything the
  browser sends back (range changes, legend toggles, selections, initialisation
  events) without applying it, so view state stays in each viewer's page.
* The reader (:class:`app.bus.reader.Reader`) starts on the server's event loop
  after start-up and feeds :class:`app.instance.sessions.Fanout`.
* Websockets run with ``TCP_NODELAY`` and without compression: one message is written
  as one buffer of pre-built frames, the same bytes for every viewer.
* ``/healthz`` and ``/metrics`` (also under the prefix); a heartbeat to Redis.
* Access bites: a viewer connects only while its token's user may view its dashboard
  with the roles the token names (:mod:`app.bus.access`), and every
  ``access_recheck_seconds`` the users of all live connections are checked again; the
  websockets of a removed user, a user whose access was revoked or whose roles
  changed are closed (1008).  The same loop reads Redis memory for ``/metrics``.
* A websocket whose URL also carries a ``bokeh-token`` is refused: the token nginx's
  ``/auth/check`` approved and the one the connection uses must be the same.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import uvloop
from bokeh import __version__ as bokeh_version
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
from tornado.netutil import bind_sockets

from app import tokens
from app.bus import heartbeat
from app.bus.keys import Keys
from app.control import columns
from app.control.feeds import FeedReader
from app.instance import bokeh_compat, series, teardown, wire
from app.instance.endpoints import HealthHandler, MetricsHandler
from app.instance.pagestatus import PageStatus
from app.instance.series import SeriesHandler
from app.instance.sessions import Fanout, Histogram, Viewer
from app.settings import Settings

log = logging.getLogger("fleet.instance")
access_log = logging.getLogger("fleet.instance.access")

APP_PATH = "/dashboard"
ACK = wire.simple("ACK")
SERVER_INFO = {"version_info": {"bokeh": bokeh_version, "server": bokeh_version}}
# Loop lag histogram buckets (seconds): how late a 5 ms timer fires.
LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


#: the ``reason`` label of fleet_sessions_refused_total (a bounded set; the log line has the detail)
REFUSAL_KINDS = ("token", "dashboard", "access", "request")


class Refused(Exception):
    """A request that must not be served; the message says why, ``kind`` (one of
    :data:`REFUSAL_KINDS`) is what the metrics count it as."""

    def __init__(self, message: str, kind: str = "request") -> None:
        super().__init__(message)
        self.kind = kind if kind in REFUSAL_KINDS else "request"


class ViewerHandler(WSHandler):
    """A viewer's websocket: admitted by its token, then a connection to the shared
    document of the token's dashboard (the server half of the Bokeh protocol, without
    a Bokeh session).

    Bokeh's ``WSHandler`` is the base for its origin check and subprotocol parsing only.
    """

    viewer: Viewer | None = None
    _parts: list | None = None
    _need = 0

    def get_compression_options(self) -> None:
        return None  # frames are built once for every viewer: never per-connection deflate

    async def open(self) -> None:
        try:
            self.set_nodelay(True)
        except Exception:  # pragma: no cover - stream already closed
            pass
        app = self.application
        token = bokeh_compat.websocket_token(self)
        if not isinstance(app, FleetTornado):  # pragma: no cover - always ours
            self.close(1011, "not a fleet instance")
            return
        try:
            if self.selected_subprotocol != "bokeh" or not token:
                raise Refused("no token in the subprotocol header", "token")
            if self.request.query_arguments.get("bokeh-token"):
                raise Refused("token in the URL as well as in the subprotocol header")
            payload = app.check_token(token)
            await app.check_access(token)
        except Refused as exc:  # one log line and one counter for every refusal
            app._refuse(exc, f"websocket from {self.request.remote_ip}", self.request)
            self.close(1008, "session refused")
            return
        conn = self.ws_connection
        if conn is None or conn.is_closing():  # gone during the access check
            return
        roles = payload.get("roles")
        try:
            self.viewer = app.instance.fanout.open_viewer(
                conn.stream, payload["dashboard"], str(payload.get("user", ""))[:80],
                tuple(roles) if isinstance(roles, list) else None, close=self._end, gen=payload.get("gen"),
                sid=get_session_id(token))
        except LookupError as exc:
            app._refuse(Refused(str(exc), "dashboard"), f"websocket from {self.request.remote_ip}", self.request)
            self.close(1008, "session refused")
            return
        self.viewer.send(ACK)

    def _end(self, code: int, reason: str) -> None:
        """Close from the server side: 1008 with a close frame; a viewer too far behind
        is dropped at once (its close frame would wait behind the backlog)."""
        conn = self.ws_connection
        if conn is None:
            return
        if code == 1008:
            self.close(code, reason)
        elif conn.stream is not None:
            conn.stream.close()

    def on_message(self, message: str | bytes) -> None:  # type: ignore[override]
        """Assemble one Bokeh message (header, metadata, content, buffers) and answer it."""
        viewer = self.viewer
        if viewer is None:
            return
        if self._parts is None:
            try:
                header = json.loads(message)
                self._need = 3 + 2 * int(header.get("num_buffers", 0) or 0)
                msgtype, msgid = str(header["msgtype"]), str(header["msgid"])
            except Exception:
                log.info("viewer protocol error: bad message header; closing it")
                self.close(1003, "bad message header")
                return
            self._parts = [msgtype, msgid]
            self._need -= 1
            if self._need > 0:
                return
        else:
            self._need -= 1
            if self._need > 0:
                return
        msgtype, msgid = self._parts
        self._parts = None
        fanout = self.application.instance.fanout  # type: ignore[attr-defined]
        if msgtype == "PULL-DOC-REQ":
            fanout.pull(viewer, msgid)
        elif msgtype == "SERVER-INFO-REQ":
            viewer.send(wire.simple("SERVER-INFO-REPLY", msgid, SERVER_INFO))
        else:
            # PATCH-DOC (ranges, legend toggles, selections, initialisation events), EVENT,
            # PUSH-DOC: that viewer's own business, acknowledged and never applied.
            fanout.stats["viewer_messages_ignored"] += 1
            viewer.send(wire.simple("OK", msgid))

    def on_close(self) -> None:
        if self.viewer is not None:
            self.application.instance.fanout.close_viewer(self.viewer)  # type: ignore[attr-defined]
            self.viewer = None


class FleetHandler(Handler):
    """The application's handler.  It builds nothing: autoload.js creates no Bokeh
    session, and viewers see the shared documents of :mod:`app.instance.sessions`."""

    def modify_document(self, doc: Document) -> None:
        pass


class TokenSession:
    """What Bokeh's autoload.js (and document page) handler gets instead of a session:
    the checked token to hand back to the page, and an empty document for the page's
    title.  The websocket then connects to the dashboard's shared document."""

    _document = Document()

    def __init__(self, token: str) -> None:
        self.token = token
        self.id = get_session_id(token)
        self.document = self._document


class FleetTornado(BokehTornado):
    """BokehTornado that admits a viewer only for a valid token naming a known dashboard."""

    instance: Instance
    MAX_BOUND = 200_000  # session ids remembered (oldest forgotten first)

    def check_token(self, token: str | None, session_id: str | None = None) -> dict:
        """Return the token's payload, or raise Refused.  A session id stays bound to the
        first dashboard a token showed with it (for the token lifetime): a token naming
        another dashboard on the same id is refused."""
        assert self.secret_key is not None  # Instance requires it (settings.require_secrets)
        payload = tokens.check(token, self.secret_key, session_id=session_id)
        if isinstance(payload, str):
            raise Refused(payload, "token")
        dashboard = payload["dashboard"]
        if self.instance.state_of(dashboard) is None:
            raise Refused(f"unknown dashboard {dashboard!r}", "dashboard")
        assert token is not None  # tokens.check refuses a missing one
        self._bind(get_session_id(token), dashboard)
        return payload

    def _bind(self, sid: str, dashboard: str) -> None:
        bound = self.__dict__.setdefault("_bound", OrderedDict())
        now = time.monotonic()
        while bound and (len(bound) > self.MAX_BOUND or next(iter(bound.values()))[1] < now):
            bound.popitem(last=False)
        seen = bound.get(sid)
        if seen is not None and seen[0] != dashboard:
            raise Refused("session exists for another dashboard")
        if seen is None:
            bound[sid] = (dashboard, now + float(self.instance.settings.session_token_expiration))

    async def check_access(self, token: str | None) -> None:
        """Raise Refused unless the token's user may (still) view its dashboard."""
        payload = (tokens.read(token) or {}) if token else {}
        reason = await self.instance.access_refusal(payload)
        if reason:
            raise Refused(reason, "access")

    def _refuse(self, exc: Refused, who: str, request: Any = None) -> None:
        self.instance.fanout.stats["sessions_refused"] += 1
        self.instance.refusals[exc.kind] += 1
        log.warning("session refused: %s (%s)", exc, who, extra={"request_id": _request_id(request)})

    def log_request(self, handler: Any) -> None:
        """One access line per request with nginx's request id (the path only: queries
        carry tokens); health checks and scrapes are not logged."""
        req = handler.request
        if req.path.endswith(("/healthz", "/metrics")):
            return
        status = handler.get_status()
        level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
        access_log.log(level, "%d %s %s %.1fms", status, req.method, req.path, 1000.0 * req.request_time(),
                       extra={"request_id": _request_id(req)})

    async def create_session(self, application_context: Any, request: Any) -> Any:
        values = request.arguments.get("bokeh-token") or []
        token = values[-1].decode("utf-8", "replace") if values else None
        try:
            if len(values) > 1:
                raise Refused("more than one token in the request")
            self.check_token(token)
            await self.check_access(token)
        except Refused as exc:
            self._refuse(exc, f"http from {request.remote_ip}", request)
            raise SessionError(403, str(exc)) from None
        assert token is not None
        return TokenSession(token)


class Instance:
    """One Bokeh instance: server, fan-out, reader, heartbeat."""

    def __init__(self, settings: Settings, port: int, host: str = "127.0.0.1",
                 reader_factory: Callable[[Settings, Fanout], FeedReader] | None = None) -> None:
        settings.require_secrets("secret_key")
        self.settings = settings
        self.port = port
        self.host = host
        # host:port; with a specific bind address the address too (several "hosts" may
        # share one hostname, e.g. network namespaces: ids must not collide)
        where = port if host in ("", "0.0.0.0", "::", "127.0.0.1", "::1", "localhost") else f"{host}:{port}"
        self.instance_id = settings.instance_id or f"{socket.gethostname()}:{where}"
        self.keys = Keys(settings.key_prefix)
        self.fanout = Fanout(self.state_of, viewer_buffer_bytes=settings.viewer_buffer_bytes,
                             pull_cache_seconds=settings.pull_cache_seconds)
        self.loop_lag = Histogram(LAG_BUCKETS)  # how late a 5 ms timer fires (stalls of the loop)
        self.loop_lag_max = 0.0
        self.loop_stall = Histogram(LAG_BUCKETS)  # the part of it the loop spent in its own callbacks
        self.loop_stall_max = 0.0
        self._reader_factory = reader_factory or _bus_reader
        self.reader: FeedReader | None = None
        self.server: BaseServer | None = None
        self.tornado: FleetTornado | None = None
        self._tasks: list[asyncio.Task] = []
        self._stopped = asyncio.Event()
        self._access_client: Any = None
        self.redis_memory: dict[str, Any] = {}  # from app.bus.health.memory_status
        self.refusals: Counter[str] = Counter()  # refused session requests by Refused.kind
        self._metrics: Any = None

    def metrics_registry(self) -> Any:
        """This instance's Prometheus registry (built on first use)."""
        if self._metrics is None:
            from app.metrics.instance import registry_for

            self._metrics = registry_for(self)
        return self._metrics

    # --- state -----------------------------------------------------------------------
    def state_of(self, dashboard: str):
        feed = self.reader.feeds.get(dashboard) if self.reader is not None else None
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
        teardown.install()
        s = self.settings
        prefix = s.bokeh_prefix
        origins = list(s.allowed_origins) + [f"{self.host}:{self.port}", f"127.0.0.1:{self.port}",
                                             f"localhost:{self.port}"]
        origins += [urlsplit(o).netloc for o in s.embed_origins if "://" in o]  # /embed/X.js pages
        common = {"instance": self}
        self.tornado = FleetTornado(
            {APP_PATH: Application(FleetHandler())},
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
                rule.target = ViewerHandler
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
        self._tasks.append(asyncio.get_running_loop().create_task(self._keepalive(), name="keepalive"))
        self._tasks.append(asyncio.get_running_loop().create_task(self._lag(), name="loop-lag"))
        log.info("instance %s serving http://%s:%d%s%s (pid %d)", self.instance_id, self.host, self.port,
                 self.settings.bokeh_prefix, APP_PATH, os.getpid())

    async def stop(self) -> None:
        for t in self._tasks:
            if t.get_name() in ("heartbeat", "page-status", "watch", "keepalive", "loop-lag"):
                t.cancel()
        if self.reader is not None:
            await self.reader.stop()
        await self._clear_heartbeat()
        if self._access_client is not None:
            try:
                await asyncio.wait_for(self._access_client.aclose(), 2)
            except Exception:
                pass
        self.fanout.close()
        if self.server is not None:
            try:  # orderly, but never hang a supervisord stop on slow session teardown
                await asyncio.wait_for(self.server.stop_async(), 5)
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
        feeds = self.reader.feeds if self.reader is not None else {}
        ok, reason = self.health()
        counts = self.fanout.session_count()
        return {
            "host": self.host, "hostname": socket.gethostname(), "port": self.port, "pid": os.getpid(),
            "sessions": sum(counts.values()), "sessions_by_dashboard": counts,
            "last_ids": {name: feed.last_id for name, feed in feeds.items()},
            "healthy": ok, "reason": reason,
            # times Redis's history went backwards under this instance (admin page)
            "history_rewinds": int(getattr(self.reader, "stats", {}).get("history_rewinds", 0)),
            # who is viewing what (admin page): bounded, see app.bus.heartbeat.viewers
            "viewers": heartbeat.viewers((v.dashboard, v.user) for v in self.fanout.all_viewers()),
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
        key = (user, roles, dashboard, payload.get("gen"))  # gen: stale after a password change
        try:
            found = await asyncio.wait_for(
                verdicts(self._access(), self.keys, [key], sso=bool(self.settings.sso_header)), 2.0)
        except Exception as exc:
            # Fail open while Redis is away (nginx's /auth/check needs Redis too, so no
            # session opens through the site then); the periodic re-check closes the
            # session once Redis answers again, if its user may no longer view it.
            log.warning("session access not checked: Redis: %s: %s", type(exc).__name__, exc)
            return None
        return found.get(key)

    async def recheck_sessions(self) -> int:
        """Close the connections whose user may no longer view their dashboard; returns how many."""
        from app.bus.access import verdicts

        live = self.fanout.all_viewers()
        if not live:
            return 0
        asks = list({(v.user, v.roles, v.dashboard, v.gen): None for v in live})  # gen: see access_refusal
        found = await verdicts(self._access(), self.keys, asks, sso=bool(self.settings.sso_header))
        closed = 0
        for viewer in live:
            reason = found.get((viewer.user, viewer.roles, viewer.dashboard, viewer.gen))
            if reason:
                closed += self.fanout.revoke(viewer, reason)
        return closed

    async def _keepalive(self) -> None:
        """A websocket ping to every viewer every ``keep_alive_ms`` (proxies close idle ones)."""
        seconds = max(1.0, self.settings.keep_alive_ms / 1000)
        while True:
            await asyncio.sleep(seconds)
            self.fanout.ping_all()

    async def _lag(self, period: float = 0.005) -> None:
        """How late a ``period`` timer fires (``fleet_loop_lag_seconds``), and how much of
        that the loop itself spent running callbacks (``fleet_loop_stall_seconds``: the
        loop thread's CPU time in the late window; on a busy machine the rest is other
        processes holding the cores)."""
        while True:
            t, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(period)
            lag = max(0.0, time.perf_counter() - t - period)
            stall = min(lag, time.thread_time() - cpu)
            self.loop_lag.observe(lag)
            self.loop_stall.observe(stall)
            self.loop_lag_max = max(self.loop_lag_max, lag)
            self.loop_stall_max = max(self.loop_stall_max, stall)

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


def _request_id(request: Any) -> str:
    """nginx's X-Request-ID of a tornado request, if well-formed (else '')."""
    from app.logsetup import clean_request_id

    headers = getattr(request, "headers", None)
    return clean_request_id(headers.get("X-Request-ID") if headers is not None else None)


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
