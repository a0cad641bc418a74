"""Read supervisord's process states over its XML-RPC interface on a unix socket.

Standard library only (``xmlrpc.client`` over an ``AF_UNIX`` HTTP connection) with a
short timeout, so a wedged supervisord cannot hang a web worker.
"""

from __future__ import annotations

import http.client
import socket
import xmlrpc.client
from pathlib import Path
from typing import Any

TIMEOUT = 2.0


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


def proxy(sock_path: Path | str, timeout: float = TIMEOUT) -> xmlrpc.client.ServerProxy:
    return xmlrpc.client.ServerProxy("http://localhost/RPC2",
                                     transport=_UnixTransport(str(sock_path), timeout))


def process_states(sock_path: Path | str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """``{"ok": True, "state": supervisord state, "processes": [...]}`` or ``{"ok": False, "error"}``."""
    try:
        p = proxy(sock_path, timeout)
        state = p.supervisor.getState()
        infos = p.supervisor.getAllProcessInfo()
    except (OSError, xmlrpc.client.Error, http.client.HTTPException) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "socket": str(sock_path)}
    procs = [{
        "name": (i["group"] + ":" + i["name"]) if i["group"] != i["name"] else i["name"],
        "state": i["statename"], "pid": i["pid"], "description": i["description"],
        "exitstatus": i["exitstatus"], "start": i["start"], "stop": i["stop"],
        "spawnerr": i["spawnerr"],
    } for i in infos]
    return {"ok": True, "state": state.get("statename"), "processes": procs}
