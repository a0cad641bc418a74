"""A checkout in a private directory (issue 11 item 2) and unprivileged programs
(issue 10 item 8): the whole stack from a copy of the checkout, venv included,
inside a 0700 directory, started as the user running the tests (root in CI).

As root, every program but supervisord runs as FLEET_RUN_USER (``fleet``), nginx's
workers too, and render grants that user exactly the traverse permission it lacks
(POSIX ACL) on the private ancestors; pages must render in Chromium (BokehJS and the
websocket through nginx), and the health check covers both.  Log files are not
world-readable.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from app.stack import health
from fleet_testing.stack import ROOT, Stack, login, open_dashboard, probe

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("private_dir")]

PASSWORD = "private-dir-viewer"


def copy_checkout(dest: Path) -> tuple[Path, Path]:
    """The tracked files of this checkout and its venv (hard links: fast; the files
    that name the old location are rewritten into new files, never in place)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src, dst = ROOT / rel, dest / rel
        if not src.exists() and not src.is_symlink():
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
    venv_src, venv = Path(sys.prefix), dest / ".venv"
    subprocess.run(["cp", "-al", str(venv_src), str(venv)], check=True)
    site = venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    for f in [*(venv / "bin").iterdir(), *site.glob("__editable__*")]:
        if f.is_symlink() or not f.is_file():
            continue
        data = f.read_bytes()
        for old, new in ((str(venv_src), str(venv)), (str(ROOT), str(dest))):
            data = data.replace(old.encode(), new.encode())
        tmp = f.with_name(f.name + ".tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, stat.S_IMODE(f.stat().st_mode))
        os.replace(tmp, f)  # a new inode: the original venv is untouched
    for pyc in site.glob("__pycache__/__editable__*"):
        pyc.unlink()
    return dest, venv


@pytest.fixture(scope="module")
def private():
    outer = Path(tempfile.mkdtemp(prefix="fleet-private-"))  # mode 0700, like /root or ~
    assert stat.S_IMODE(outer.stat().st_mode) == 0o700
    checkout, venv = copy_checkout(outer / "checkout")
    s = Stack(instances=1, demo=True, site_dir=checkout, root=checkout, venv=venv)
    try:
        assert s.ctx["bokeh_static"].startswith(str(venv))
        s.start_healthy()
        s.add_user("viewer", PASSWORD, "demo")
        yield s
    finally:
        s.stop()
        shutil.rmtree(outer, ignore_errors=True)


def test_dashboard_renders_from_a_checkout_in_a_0700_directory(private, browser):
    assert not health.problems(private.effective_settings())  # BokehJS + websocket via nginx
    ctx, page = login(browser, private.url, "viewer", PASSWORD)
    try:
        open_dashboard(page, private.url, "demo")
        assert "Line" in probe(page)["glyphs"]
        rows = ("() => { let n = 0; for (const m of Bokeh.documents[0].all_models)"
                " if (String(m.type).endsWith('ColumnDataSource')) n = Math.max(n, m.get_length() || 0);"
                " return n; }")
        first = page.evaluate(rows)
        page.wait_for_function(f"() => ({rows})() > {first}", timeout=15000)  # rows keep arriving
    finally:
        ctx.close()


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])  # real uid
    raise AssertionError(f"no Uid in /proc/{pid}/status")


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split()
        out += [int(k) for k in kids]
    return out


@pytest.mark.skipif(os.geteuid() != 0, reason="programs change user only when started as root")
def test_programs_run_unprivileged_and_logs_are_private(private):
    fleet_uid = pwd.getpwnam("fleet").pw_uid
    status = private.status()
    names = [n for n in status if n.startswith("fleet:") or n.startswith("fleet_events")]
    assert {"fleet:redis", "fleet:bokeh_01", "fleet:web", "fleet:compactor", "fleet:nginx",
            "fleet:demo"} <= set(names), status
    for name in names:
        state, pid = status[name]
        assert state == "RUNNING" and pid, (name, state)
        if name == "fleet:nginx":  # the master binds and reads its config as root
            workers = _children(pid)
            assert workers and all(_uid(w) == fleet_uid for w in workers), name
        else:
            assert _uid(pid) == fleet_uid, name
    logs = list((private.var / "log").glob("*.log"))
    assert len(logs) >= 5
    for f in logs:
        assert not stat.S_IMODE(f.stat().st_mode) & 0o007, f"{f.name} is world-accessible"
    assert not stat.S_IMODE((private.var / "log").stat().st_mode) & 0o007
    data = private.var / "redis" / "data"
    assert data.stat().st_uid == fleet_uid
    # the admin page (web, as fleet) still reads supervisord's process states; others cannot
    sock = private.var / "supervisor.sock"
    assert stat.S_IMODE(sock.stat().st_mode) & 0o007 == 0
    res = subprocess.run([str(Path(sys.prefix) / "bin" / "supervisorctl"), "-c", str(private.conf),
                          "status", "fleet:web"], user="fleet", group="fleet", extra_groups=[],
                         capture_output=True, text=True, timeout=30)
    assert "RUNNING" in res.stdout, res


@pytest.mark.skipif(os.geteuid() != 0, reason="nginx workers change user only when started as root")
def test_health_reports_bokehjs_nginx_cannot_read():
    """The old set-up (programs as root, nginx workers as www-data, no grants) in a
    private directory: the site answers, but the health check must say BokehJS fails."""
    outer = Path(tempfile.mkdtemp(prefix="fleet-private-"))
    try:
        checkout, venv = copy_checkout(outer / "checkout")
        s = Stack(instances=1, site_dir=checkout, root=checkout, venv=venv, run_user="root",
                  programs={"compactor": False, "events": False})
        try:
            assert s.ctx["nginx_user"] == "www-data" and s.ctx["run_as"] == ""
            s.start()
            s.wait_http("/auth/login", timeout=60, ok=(200,))
            problem = health.asset_problem(s.effective_settings())
            assert problem and "/bokeh/static/js/bokeh.min.js -> 403" in problem, problem
            assert any("bokeh.min.js" in p for p in health.problems(s.effective_settings(), instances=[],
                                                                     supervisor=False))
        finally:
            s.stop()
    finally:
        shutil.rmtree(outer, ignore_errors=True)
