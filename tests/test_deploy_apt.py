"""deploy/lib.sh's dependency step asks apt for every command that is missing.

Regression: ``ensure_apt`` used ``[ -x nginx ]``, which is true in the checkout root
because of its own ``nginx/`` folder, so a fresh machine got redis-server but no
nginx.  The test runs the real shell function from the checkout root with a PATH
that holds only a stub ``apt-get`` (recording its arguments) and basic tools.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_ensure_apt(tmp_path: Path, *pairs: str, extra_bins: dict[str, str] | None = None) -> list[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "apt-args"
    stub = bin_dir / "apt-get"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    stub.chmod(0o755)
    # the few tools lib.sh itself needs, nothing else (no nginx, no redis-server)
    for tool in ("id", "cat", "dirname", "printf", "sha1sum", "cut"):
        path = shutil.which(tool)
        assert path, tool
        (bin_dir / tool).symlink_to(path)
    for name, body in (extra_bins or {}).items():
        p = bin_dir / name
        p.write_text(body)
        p.chmod(0o755)
    assert (ROOT / "nginx").is_dir()  # the trap: a folder named like the command
    script = f'source deploy/lib.sh; ensure_apt {" ".join(pairs)}'
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "FLEET_SBIN_DIRS": ""}
    if os.geteuid() != 0:  # ordinary users go through sudo: make it a pass-through
        (bin_dir / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
        (bin_dir / "sudo").chmod(0o755)
    bash = shutil.which("bash")
    assert bash
    res = subprocess.run([bash, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0, res.stderr
    return record.read_text().splitlines() if record.exists() else []


def test_missing_nginx_and_redis_are_both_installed(tmp_path: Path) -> None:
    calls = _run_ensure_apt(tmp_path, "redis-server:redis-server", "nginx:nginx")
    installs = [c for c in calls if c.split()[:1] != ["update"] and "install" in c.split()]
    assert len(installs) == 1, calls
    words = installs[0].split()
    assert "nginx" in words and "redis-server" in words, calls


def test_present_commands_are_not_installed(tmp_path: Path) -> None:
    calls = _run_ensure_apt(tmp_path, "redis-server:redis-server", "nginx:nginx",
                            extra_bins={"redis-server": "#!/bin/sh\n", "nginx": "#!/bin/sh\n"})
    assert calls == []


def test_absolute_path_is_checked_as_a_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such" / "chromium"
    calls = _run_ensure_apt(tmp_path, f"{missing}:chromium")
    assert any("chromium" in c.split() for c in calls), calls
