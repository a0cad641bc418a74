"""fleetctl dashboard/publish/state/rejected/tail against a real Redis, and the Python client."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from app.cli import main
from app.client import Controller
from app.control.protocol import Rejected


@pytest.fixture
def cli(redis_url, capsys):
    def run(*args):
        code = main(["--redis-url", redis_url, *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_dashboard_lifecycle_and_publish(cli):
    assert cli("dashboard", "create", "sales", "--title", "Sales")[0] == 0
    code, out, _ = cli("dashboard", "list")
    assert code == 0 and "sales\tSales" in out
    code, out, _ = cli("publish", "sales", "replace", "name=rev", "kind=bar",
                       'data={"c":["a","b"],"v":[1,2]}')
    assert code == 0 and "-" in out.strip()
    code, out, _ = cli("state", "sales", "--json")
    view = json.loads(out)
    assert view["figures"][0]["data"] == {"c": ["a", "b"], "v": [1, 2]}
    assert view["figures"][0]["x_axis_type"] == "categorical"
    code, out, err = cli("dashboard", "delete", "sales")
    assert code == 2 and "--yes" in err
    assert cli("dashboard", "delete", "sales", "--yes")[0] == 0
    code, _, err = cli("state", "sales")
    assert code == 2 and "no dashboard 'sales'" in err


def test_publish_refuses_invalid_commands_with_the_reason(cli):
    cli("dashboard", "create", "d")
    code, _, err = cli("publish", "d", "stream", "name=p", 'data={"a":[1],"b":[]}')
    assert code == 2 and "different lengths" in err
    code, _, err = cli("publish", "d", "stream", "nokeyvalue")
    assert code == 2 and "KEY=VALUE" in err
    code, _, err = cli("publish", "nope", "clear")
    assert code == 2 and "fleetctl dashboard create nope" in err


def test_rejected_lists_reasons(cli, redis_server):
    cli("dashboard", "create", "d")
    r = redis_server.client()
    r.xadd("fleet:{d}:rejected", {"op": "x", "_reason": "op: unknown op 'x'"})
    code, out, _ = cli("rejected", "d")
    assert code == 0 and "unknown op 'x'" in out and "op=x" in out


def test_unreachable_redis_is_one_clear_line(capsys):
    code = main(["--redis-url", "redis://127.0.0.1:1/0", "dashboard", "list"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach Redis at redis://127.0.0.1:1/0" in err and "Traceback" not in err


def test_help_works_without_redis():
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    out = subprocess.run([sys.executable, "-m", "app", "publish", "--help"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert out.returncode == 0 and "fields per op" in out.stdout


def test_controller_client_with_numpy_and_pandas(redis_url):
    with Controller(redis_url) as ctl:
        ctl.create("d")
        ctl.replace("d", "p", kind="line", x_axis_type="datetime",
                    data=pd.DataFrame({"t": pd.to_datetime(["2026-01-01"]), "y": [1.0]}))
        ctl.stream("d", "p", {"t": np.array(["2026-01-02"], dtype="datetime64[ms]"), "y": np.array([2.0])})
        ctl.stream("d", "p", {"t": ["2026-01-03T00:00:00"], "y": [3]}, id="once")
        ctl.stream("d", "p", {"t": ["2026-01-03T00:00:00"], "y": [3]}, id="once")
        ctl.patch("d", "p", {"y": [(0, 10)]})
        ctl.replace("d", "q", kind="table", data={"name": ["a"], "qty": [1]})
        ctl.layout("d", columns=[["q", "p"]])
        ctl.set("d", title="Board")
        with pytest.raises(Rejected):
            ctl.stream("d", "p", {"t": [1], "y": [1, 2]})
        state = ctl.state("d")
        assert list(state.figures["p"].data["y"]) == [10, 2, 3]
        assert state.figures["p"].data["t"][0] == 1767225600000.0
        assert state.layout_mode == "columns" and state.title == "Board"
        assert ctl.state_json("d")["figures"][1]["data"] == {"name": ["a"], "qty": [1]}


def test_controller_publishes_bokeh_figures(redis_url):
    from bokeh.plotting import figure

    fig = figure(title="native")
    fig.scatter([1, 2], [3, 4])
    with Controller(redis_url) as ctl:
        ctl.create("d")
        ctl.figure("d", "native", fig)
        state = ctl.state("d")
    assert state.figures["native"].kind == "model"
    assert state.figures["native"].model["doc"]["roots"]


def test_redis_password_never_printed(capsys):
    code = main(["--redis-url", "redis://default:s3cret@127.0.0.1:1/0", "dashboard", "list"])
    err = capsys.readouterr().err
    assert code == 2 and "s3cret" not in err and "default:***@127.0.0.1:1" in err
