"""Read supervisord's process states over its XML-RPC interface on a unix socket.

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
