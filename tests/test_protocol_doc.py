"""Every redis-cli example in docs/protocol.md, run as written, is applied (none rejected)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

from app.bus import registry
from app.bus.keys import Keys
from app.bus.store import read_state
from app.control.protocol import Rejected, parse
from app.control.state import EMPTY, step
from app.settings import Settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"


def examples() -> list[list[str]]:
    cmds = []
    for block in re.findall(r"```\n(redis-cli.*?)```", DOC.read_text(), re.S):
        for cmd in re.split(r"\n(?=redis-cli)", block.strip()):
            cmds.append(shlex.split(cmd.replace("\\\n", " ")))
    return cmds


def test_every_documented_example_is_applied(redis_server):
    cmds = examples()
    assert len(cmds) >= 9
    r = redis_server.client()
    registry.create_dashboard(r, Keys(), "sales")
    cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
    for argv in cmds:
        assert argv[0] == "redis-cli"
        subprocess.run([cli, "-p", str(redis_server.port), *argv[1:]], check=True, capture_output=True)
    state = EMPTY
    for _eid, fields in r.xrange(Keys().commands("sales")):
        try:
            state, _ = step(state, parse(fields))
        except Rejected as exc:  # pragma: no cover - the failure message is the point
            raise AssertionError(f"documented example rejected: {exc}: {fields}") from None
    assert state.applied == len(cmds)
    assert read_state(r, Keys(), "sales", Settings(redis_url=redis_server.url))[0].title == "Sales floor"
