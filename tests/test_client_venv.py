"""The controller client on its own: a Python 3.9 venv holding only ``./client[arrow]``,
pandas, polars and pytest runs client/tests against a real Redis, Bokeh instance
and compactor started here; and the README's controller examples run exactly as written.

The venv is built once under var/client-venv-py39 (a few minutes, then cached).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.bus.keys import Keys
from app.bus.registry import create_dashboard
from fleet_testing.bokeh import fleet_environment

# the first run builds the venv (pip, a few minutes); later runs take seconds
pytestmark = [pytest.mark.xdist_group("client_venv"), pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
PY39 = Path(os.environ.get("FLEET_TEST_PY39", "/root/.pyenv/versions/3.9.18/bin/python3"))
VENV = ROOT / "var" / "client-venv-py39"
STAMP = VENV / ".client-installed"


def _client_venv() -> Path:
    py = VENV / "bin" / "python"
    want = (ROOT / "client" / "pyproject.toml").read_text()
    if py.exists() and STAMP.exists() and STAMP.read_text() == want:
        return py
    if not PY39.exists():
        pytest.skip(f"no Python 3.9 at {PY39} (set FLEET_TEST_PY39)")
    if not py.exists():
        subprocess.run([str(PY39), "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    "-e", f"{ROOT / 'client'}[arrow]", "pandas", "polars", "pytest"], check=True, timeout=900)
    STAMP.write_text(want)
    return py


def examples() -> dict[str, str]:
    """The ```python blocks of README.md (controller guide) preceded by ``<!-- example: NAME -->``."""
    text = (ROOT / "README.md").read_text()
    return dict(re.findall(r"<!-- example: (\w+) -->\s*```python\n(.*?)```", text, re.S))


@pytest.fixture(scope="module")
def client_fleet(tmp_path_factory):
    from fleet_testing.bokeh import InstanceProc
    from fleet_testing.ports import free_port
    from fleet_testing.redis import RedisServer

    py = _client_venv()
    tmp = tmp_path_factory.mktemp("client")
    server = RedisServer(tmp / "redis").start()
    env = fleet_environment(server.url, FLEET_SNAPSHOT_EVERY_SECONDS="0.1")
    client = server.client()
    for d in ("ct", "sales"):
        create_dashboard(client, Keys(), d)
    from fleet_testing.bokeh import allow_viewer

    allow_viewer(client, Keys())  # the user of mint_token's tokens
    inst = InstanceProc(env, free_port(), tmp / "instance.log").start()
    log = open(tmp / "compactor.log", "ab")
    comp = subprocess.Popen([sys.executable, "-m", "app", "compactor"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    yield py, server.url, tmp, inst
    comp.terminate()
    comp.wait(10)
    log.close()
    inst.stop()
    server.stop()


def _run(py: Path, args: list[str], url: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "PYTHON"))}
    env.update(FLEET_TEST_REDIS_URL=url, FLEET_REDIS_URL=url)
    return subprocess.run([str(py), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_client_suite_in_py39_venv(client_fleet):
    py, url, tmp, _inst = client_fleet
    # cwd outside the checkout: the server's app/ package must not be importable
    shutil.copytree(ROOT / "client" / "tests", tmp / "ctests", dirs_exist_ok=True)
    r = _run(py, ["-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp / "ctests")], url, tmp)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]


@pytest.mark.parametrize("name", ["pandas", "polars", "asyncio"])
def test_docs_example_runs_as_written(client_fleet, name):
    py, url, tmp, _inst = client_fleet
    code = examples()[name]
    script = tmp / f"example_{name}.py"
    script.write_text(code)
    r = _run(py, [str(script)], url, tmp)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_shapes_reach_a_browser_session(client_fleet):
    """After the suite: a real Bokeh session of ``ct`` holds the columns the client sent,
    and the DataFrame with a DatetimeIndex is plotted on a datetime x axis."""
    import asyncio

    from bokeh.models import DatetimeAxis, Plot

    from fleet_testing.bokeh import BokehClient, mint_token

    _py, _url, _tmp, inst = client_fleet
    state = {}

    async def look():
        c = await BokehClient(inst.ws_url, mint_token(inst.env["FLEET_SECRET_KEY"], "ct")[1]).connect(20)
        try:
            state["polars"] = c.data("polars")
            state["index"] = c.data("df_datetime_index")
            src = c.source("df_datetime_index")
            plot = next(m for m in c.doc.models if isinstance(m, Plot)
                        and any(getattr(r, "data_source", None) is src for r in m.renderers))
            state["axis"] = [type(a).__name__ for a in plot.below]
        finally:
            await c.close()

    if "ctests" not in {p.name for p in _tmp.iterdir()}:
        pytest.skip("runs after test_client_suite_in_py39_venv")
    asyncio.run(look())
    assert state["polars"]["x"] == [1, 2] and state["polars"]["s"] == ["a", "b"]
    assert state["polars"]["y"][0] == 0.5 and state["polars"]["y"][1] != state["polars"]["y"][1]  # NaN
    assert list(state["index"]) == ["index", "y"] and list(state["index"]["y"]) == [1.0, 2.0, 3.0]
    assert state["axis"] == [DatetimeAxis.__name__]
