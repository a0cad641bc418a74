"""Read supervisord's process states over its XML-RPC interface on a unix socket, and
restart a process (the admin page's restart button).

The client itself is :func:`app.stack.health.supervisor_proxy` (standard library,
short timeout, so a wedged supervisord cannot hang a web worker).
"""

from __future__ import annotations

import http.client
import xmlrpc.client
from pathlib import Path
from typing import Any

from app.stack import names
from app.stack.health import SUPERVISOR_TIMEOUT as TIMEOUT
from app.stack.health import supervisor_proxy as proxy


def process_states(sock_path: Path | str, timeout: float = TIMEOUT) -> dict[str, Any]:
    """``{"ok": True, "state": supervisord state, "processes": [...]}`` or ``{"ok": False, "error"}``."""
    try:
        p = proxy(sock_path, timeout)
        state = p.supervisor.getState()
        infos = p.supervisor.getAllProcessInfo()
    except (OSError, xmlrpc.client.Error, http.client.HTTPException) as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "socket": str(sock_path)}
    procs = [{
        "name": names.process_key(i["group"], i["name"]),
        "state": i["statename"], "pid": i["pid"], "description": i["description"],
        "exitstatus": i["exitstatus"], "start": i["start"], "stop": i["stop"],
        "spawnerr": i["spawnerr"],
    } for i in infos]
    return {"ok": True, "state": state.get("statename"), "processes": procs}


RESTART_TIMEOUT = 25.0  # supervisord stops a process within its stopwaitsecs (15 s) + start


class RestartError(Exception):
    """The restart did not happen; the message says why (for the admin)."""


def restart_process(sock_path: Path | str, name: str, timeout: float = RESTART_TIMEOUT) -> str:
    """Stop (waiting for it to go) and start ``name`` (``fleet:bokeh_01``); returns the
    new state, e.g. ``RUNNING``.  A process that is not running is just started."""
    try:
        p = proxy(sock_path, timeout)
        try:
            p.supervisor.stopProcess(name, True)
        except xmlrpc.client.Fault as exc:
            if "NOT_RUNNING" not in exc.faultString:
                raise
        p.supervisor.startProcess(name, True)
        return str(p.supervisor.getProcessInfo(name).get("statename", "?"))
    except xmlrpc.client.Fault as exc:
        raise RestartError(f"supervisord refused: {exc.faultString}") from None
    except (OSError, xmlrpc.client.Error, http.client.HTTPException) as exc:
        raise RestartError(f"supervisord not reachable: {type(exc).__name__}: {exc}") from None
