"""Is the stack up?  supervisord's view, every instance's ``/healthz``, the site, and
what a browser needs through nginx: BokehJS from ``/bokeh/static/`` (nginx's workers
must be able to read it: a checkout in a 0700 directory once served blank pages)
and the Bokeh websocket route (nginx answers an unauthenticated upgrade with 401
from the web app's ``/auth/check``, not with a 5xx).

Used by ``deploy/run --detach`` (return once healthy), ``deploy/rolling-restart``
(wait for one instance) and the tests.  Standard library only.
"""

from __future__ import annotations

import http.client
import socket
import time
import urllib.error
import urllib.request
import xmlrpc.client
from pathlib import Path
from typing import Any, Protocol, cast

from app.settings import Settings
from app.stack import names

SUPERVISOR_TIMEOUT = 2.0


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.path)
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__()
        self.path, self.timeout = path, timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixHTTPConnection(self.path, self.timeout)


class SupervisorRPC(Protocol):
    """The part of supervisord's ``supervisor.*`` XML-RPC namespace the fleet calls."""

    def getState(self) -> dict[str, Any]: ...
    def getAllProcessInfo(self) -> list[dict[str, Any]]: ...
    def getProcessInfo(self, name: str) -> dict[str, Any]: ...
    def startProcess(self, name: str, wait: bool = True) -> bool: ...
    def stopProcess(self, name: str, wait: bool = True) -> bool: ...
    def signalProcess(self, name: str, signal: str) -> bool: ...


class SupervisorProxy(Protocol):
    supervisor: SupervisorRPC


def supervisor_proxy(sock: Path | str, timeout: float = SUPERVISOR_TIMEOUT) -> SupervisorProxy:
    """supervisord's XML-RPC interface on its unix socket (the fleet's one client for it).

    Standard library only, with a timeout, so a wedged supervisord cannot hang a web
    worker, a health check or the event listener.  Typed by :class:`SupervisorProxy`
    (supervisord's documented XML-RPC API; xmlrpc itself types every answer as any
    marshallable value).
    """
    proxy = xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=_UnixTransport(str(sock), timeout))
    return cast(SupervisorProxy, proxy)


def supervisor_problems(sock: Path) -> list[str]:
    try:
        infos = supervisor_proxy(sock).supervisor.getAllProcessInfo()
    except (OSError, xmlrpc.client.Error, http.client.HTTPException) as exc:
        return [f"supervisord not reachable at {sock}: {exc}"]
    return [f"{names.process_key(i['group'], i['name'])} is {i['statename']}"
            for i in infos if i["statename"] != "RUNNING"]


def http_status(url: str, timeout: float = 2.0) -> int | str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError as exc:
        return str(getattr(exc, "reason", exc))


def instance_url(settings: Settings, n: int) -> str:
    host = "127.0.0.1" if settings.bokeh_host in ("0.0.0.0", "") else settings.bokeh_host
    return f"http://{host}:{settings.bokeh_port(n)}/healthz"


def site_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::", "") else settings.http_host
    return f"http://{host}:{settings.http_port}"


#: a BokehJS file every dashboard page loads, relative to ``<bokeh_prefix>/static/``
BOKEHJS_ASSET = "js/bokeh.min.js"


def asset_problem(settings: Settings, timeout: float = 5.0) -> str | None:
    """BokehJS through nginx: 200 and a body, else what went wrong."""
    url = f"{site_url(settings)}/{settings.bokeh_prefix.strip('/')}/static/{BOKEHJS_ASSET}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            if resp.status == 200 and len(resp.read(4096)) == 4096:
                return None
            return f"site: {url} -> {resp.status} with a short body"
    except urllib.error.HTTPError as exc:
        return f"site: {url} -> {exc.code} (can nginx's workers read BokehJS? see var/log/nginx.log)"
    except OSError as exc:
        return f"site: {url} -> {getattr(exc, 'reason', exc)}"


def websocket_problem(settings: Settings, timeout: float = 5.0) -> str | None:
    """The Bokeh websocket route through nginx: an upgrade without credentials must be
    refused by the web app's auth check (401), which proves nginx -> auth -> upstream
    routing is in place; 5xx or no answer is a problem."""
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::", "") else settings.http_host
    path = "/" + settings.bokeh_prefix.strip("/") + "/dashboard/ws"
    conn = http.client.HTTPConnection(host, settings.http_port, timeout=timeout)
    try:
        conn.request("GET", path, headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Host": f"{host}:{settings.http_port}"})
        status = conn.getresponse().status
    except OSError as exc:
        return f"site: websocket {path} -> {exc}"
    finally:
        conn.close()
    return None if status == 401 else f"site: websocket {path} without login -> {status} (expected 401)"


def problems(settings: Settings, instances: list[int] | None = None, site: bool = True,
             supervisor: bool = True) -> list[str]:
    out: list[str] = []
    if supervisor:
        out += supervisor_problems(settings.var_dir / "supervisor.sock")
    for n in instances if instances is not None else range(1, settings.instances + 1):
        status = http_status(instance_url(settings, n))
        if status != 200:
            out.append(f"instance {n}: {instance_url(settings, n)} -> {status}")
    if site:
        status = http_status(site_url(settings) + "/auth/login")
        if status != 200:
            out.append(f"site: {site_url(settings)}/auth/login -> {status}")
        else:
            out += [p for p in (asset_problem(settings), websocket_problem(settings)) if p]
    return out


def wait_healthy(settings: Settings, timeout: float, **kw) -> list[str]:
    """Poll until :func:`problems` is empty (returns []) or ``timeout`` (returns them)."""
    deadline = time.monotonic() + timeout
    while True:
        found = problems(settings, **kw)
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)
