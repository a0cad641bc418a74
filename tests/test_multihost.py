"""The multi-host Salt roles applied to separate hosts: network namespaces on one machine.

Five namespaces on a private bridge (10.213.0.0/24, only addresses made here, in a
"switch" namespace of their own, so nothing in the root namespace changes): `redis`,
`bokeh1`, `bokeh2`, `web` (nginx + gunicorn + compactor) and `ctl` (a controller and
the browser).  Each host gets its own site directory (var/, supervisord) through its
pillar; masterless ``salt-call --local`` applies its role (top.sls by the grain
``roles``), and its supervisord runs inside its namespace.  Then headless Chromium,
started inside `ctl`, logs in on the web host's address, and a ``redis-cli XADD``
from `ctl` reaches pages served by both Bokeh hosts.  Applied twice: the second run
changes nothing.  Skipped where network namespaces cannot be created.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from app.instance.endpoints import peer_allowed
from app.settings import Settings, read_env_file
from app.stack import render
from fleet_testing.stack import CHROMIUM, CHROMIUM_ARGS, probe, wait_marker
from tests.test_stack_salt import SECRETS, ensure_salt_venv

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("multihost")]

ROOT = Path(__file__).resolve().parents[1]
IP = shutil.which("ip") or "/usr/sbin/ip"
NET = "10.213.0"
ADDR = {"redis": f"{NET}.2", "bokeh1": f"{NET}.11", "bokeh2": f"{NET}.12", "web": f"{NET}.20",
        "ctl": f"{NET}.100"}
ROLES = {"redis": "redis", "bokeh1": "bokeh", "bokeh2": "bokeh", "web": "web"}
HTTP_PORT, WEB_PORT, REDIS_PORT, BASE = 8080, 8000, 6390, 5100
USER, PASSWORD = "viewer", "multihost-viewer-password"
FIGURES: dict[str, object] = {}  # printed at the end (docs/scaling.md quotes them)


def _netns_problem() -> str | None:
    """Why network namespaces cannot be used here, or None."""
    if not Path(IP).exists():
        return "iproute2's `ip` is missing (./deploy/test installs it)"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_SYS_ADMIN + CAP_NET_ADMIN)"
    name = f"fmh-probe-{os.getpid()}"
    res = subprocess.run([IP, "netns", "add", name], capture_output=True, text=True)
    if res.returncode:
        return f"`ip netns add` is not permitted here: {res.stderr.strip()}"
    subprocess.run([IP, "netns", "del", name], capture_output=True)
    return None


def ip(*args: str) -> None:
    res = subprocess.run([IP, *args], capture_output=True, text=True)
    assert res.returncode == 0, f"ip {' '.join(args)}: {res.stderr.strip()}"


class Net:
    """The namespaces, the bridge and the veth pairs; ``destroy`` removes them all."""

    def __init__(self) -> None:
        self.tag = f"fmh{os.getpid()}"
        self.switch = f"{self.tag}-sw"
        self.made: list[str] = []

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def create(self) -> None:
        ip("netns", "add", self.switch)
        self.made.append(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "dev", "br0", "up")
        for i, (host, addr) in enumerate(ADDR.items()):
            ns = self.ns(host)
            ip("netns", "add", ns)
            self.made.append(ns)
            port = f"p{i}"  # the switch's end; the host's end is eth0 in its namespace
            ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", self.switch)
            ip("-n", self.switch, "link", "set", "dev", port, "master", "br0")
            ip("-n", self.switch, "link", "set", "dev", port, "up")
            ip("-n", ns, "link", "set", "dev", "lo", "up")
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            ip("-n", ns, "link", "set", "dev", "eth0", "up")

    def run(self, host: str, *cmd: str, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        return subprocess.run([IP, "netns", "exec", self.ns(host), *cmd], capture_output=True, text=True,
                              timeout=timeout, **kw)

    def destroy(self) -> None:
        """Kill whatever still runs in the namespaces, then delete them (and the veths)."""
        for ns in reversed(self.made):
            pids = subprocess.run([IP, "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run([IP, "netns", "del", ns], capture_output=True)
        self.made.clear()


def _pillar(base: Path, host: str) -> dict:
    """The shared pillar (naming every host) plus this host's own site directory."""
    site = base / host
    return {"fleet": {
        "root": str(ROOT), "venv": sys.prefix, "site": str(site), "user": "fleet",
        "systemd_unit": str(site / "fleet-supervisord.service"),
        "instances": 1, "bokeh_port_base": BASE, "redis_port": REDIS_PORT,
        "redis_host": ADDR["redis"],
        "bokeh_hosts": [{"id": "bokeh1", "address": ADDR["bokeh1"], "instances": 1},
                        {"id": "bokeh2", "address": ADDR["bokeh2"], "instances": 1}],
        "http_host": ADDR["web"], "http_port": HTTP_PORT,
        "web_host": ADDR["web"], "web_port": WEB_PORT,
        # Prometheus would scrape from the controller host
        "metrics_allow": [f"{ADDR['ctl']}/32"],
        "secrets": SECRETS,
    }}


class Fleet:
    """Four Salt-managed hosts (+ the controller namespace) and how to reach them."""

    def __init__(self, base: Path, net: Net) -> None:
        self.base = base
        self.net = net
        self.salt_call = ensure_salt_venv()
        self.apply_seconds: dict[str, list[float]] = {}
        self.first: dict[str, dict] = {}  # the first apply's state results, per host
        for host, role in ROLES.items():
            d = base / "salt" / host
            (d / "pillar").mkdir(parents=True)
            (d / "pillar" / "top.sls").write_text("base:\n  '*': [fleet]\n")
            (d / "pillar" / "fleet.sls").write_text(yaml.safe_dump(_pillar(base, host)))
            (d / "minion").write_text(yaml.safe_dump({
                "file_client": "local", "id": host, "root_dir": str(d / "root"),
                "file_roots": {"base": [str(ROOT / "salt")]}, "pillar_roots": {"base": [str(d / "pillar")]},
                "jinja_env": {"trim_blocks": True, "lstrip_blocks": True},
                "log_level_logfile": "warning", "grains": {"roles": [role]},
            }))

    def apply(self, host: str) -> dict:
        """``salt-call --local state.apply`` (highstate: top.sls picks the role) in the host."""
        t0 = time.monotonic()
        res = self.net.run(host, str(self.salt_call), "--local", "-c", str(self.base / "salt" / host),
                           "--out=json", "state.apply", timeout=300)
        self.apply_seconds.setdefault(host, []).append(time.monotonic() - t0)
        assert res.returncode == 0, f"salt-call on {host} failed:\n{res.stdout[-4000:]}\n{res.stderr[-3000:]}"
        return json.loads(res.stdout)["local"]

    def apply_all(self) -> dict[str, dict]:
        with ThreadPoolExecutor(len(ROLES)) as pool:
            return dict(zip(ROLES, pool.map(self.apply, ROLES), strict=True))

    def var(self, host: str) -> Path:
        return self.base / host / "var"

    def admin_url(self) -> str:
        return f"redis://admin:{SECRETS['redis_password']}@{ADDR['redis']}:{REDIS_PORT}/0"

    def redis_cli(self, *args: str) -> str:
        """A controller on the `ctl` host: plain redis-cli against the Redis host."""
        res = self.net.run("ctl", "redis-cli", "--no-auth-warning", "-u", self.admin_url(), *args)
        assert res.returncode == 0 and not res.stdout.startswith(("ERR", "WRONGPASS", "NOPERM")), res
        return res.stdout.strip()

    def fleetctl(self, *args: str, input: str | None = None) -> str:
        env = {"PATH": os.environ.get("PATH", ""), "FLEET_REDIS_URL": self.admin_url()}
        res = self.net.run("ctl", str(Path(sys.prefix) / "bin" / "fleetctl"), *args, env=env,
                           cwd=self.base, input=input, timeout=60)
        assert res.returncode == 0, f"fleetctl {args}: {res.stdout}{res.stderr}"
        return res.stdout

    def http(self, frm: str, url: str) -> tuple[int, str]:
        """(status, body) of a GET made from host ``frm`` (0: no connection)."""
        res = self.net.run(frm, "curl", "-s", "-m", "3", "-o", "-", "-w", "\n%{http_code}", url)
        body, _, code = res.stdout.rpartition("\n")
        return int(code or 0), body

    def sessions(self, host: str, dashboard: str) -> int:
        """Live sessions of ``dashboard`` on a Bokeh host's instance (its /metrics, read
        from the controller host, as Prometheus would)."""
        status, text = self.http("ctl", f"http://{ADDR[host]}:{BASE + 1}/metrics")
        assert status == 200, (status, text[:200])
        for line in text.splitlines():
            if line.startswith(f'fleet_sessions{{dashboard="{dashboard}"}}'):
                return int(float(line.split()[-1]))
        return 0

    def wait(self, what: str, check, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = check()
            if last is True:
                return
            time.sleep(0.3)
        raise AssertionError(f"{what} not ready after {timeout}s (last: {last})\n{self.logs()}")

    def logs(self, tail: int = 12) -> str:
        out = []
        for host in ROLES:
            for f in sorted((self.var(host) / "log").glob("*.log")):
                lines = f.read_text(errors="replace").splitlines()[-tail:]
                out.append(f"== {host}/{f.name}\n" + "\n".join(lines))
        return "\n".join(out)

    def uids(self, host: str, needle: str) -> list[int]:
        """Real uids of the processes in ``host`` whose command line contains ``needle``."""
        out = []
        for pid in subprocess.run([IP, "netns", "pids", self.net.ns(host)], capture_output=True,
                                  text=True).stdout.split():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            if needle in cmd:
                out.append(int(next(ln for ln in status.splitlines() if ln.startswith("Uid:")).split()[1]))
        return out

    def stop(self) -> None:
        for host in ROLES:
            conf = self.base / host / "supervisord.conf"
            if (self.var(host) / "run" / "supervisord.pid").exists():
                subprocess.run([str(Path(sys.prefix) / "bin" / "supervisorctl"), "-c", str(conf), "shutdown"],
                               capture_output=True, timeout=60)


def _failed(results: dict) -> dict:
    return {k: v.get("comment") for k, v in results.items() if v.get("result") is not True}


@pytest.fixture(scope="module")
def fleet():
    problem = _netns_problem()
    if problem:
        pytest.skip(f"multi-host test needs network namespaces: {problem}")
    net = Net()
    base = Path(tempfile.mkdtemp(prefix="fleet-mh-"))
    os.chmod(base, 0o711)  # the programs' user traverses to its site
    f = None
    try:
        net.create()
        f = Fleet(base, net)
        f.first = f.apply_all()
        bad = {h: _failed(r) for h, r in f.first.items() if _failed(r)}
        assert not bad, f"{bad}\n{f.logs()}"
        urls = [f"http://{ADDR[h]}:{BASE + 1}/healthz" for h in ("bokeh1", "bokeh2")]
        urls.append(f"http://{ADDR['web']}:{HTTP_PORT}/auth/login")
        for url in urls:  # from the controller host, across the bridge
            f.wait(url, lambda u=url: (lambda st: st == 200 or st)(f.http("ctl", u)[0]))
        f.fleetctl("dashboard", "create", "mh")
        f.fleetctl("users", "add", USER, "--role", "viewer", "--password-stdin", input=PASSWORD + "\n")
        f.fleetctl("access", "grant", "--dashboard", "mh", "--user", USER)
        yield f
    finally:
        try:
            if f is not None:
                f.stop()
        finally:
            net.destroy()
            shutil.rmtree(base, ignore_errors=True)
            if FIGURES:
                print("\nmultihost figures:", json.dumps(FIGURES, indent=1))


# --- pure parts (no namespaces) ---------------------------------------------------------
def test_metrics_peer_allow_list():
    allow = ("10.213.0.100/32", "192.0.2.0/24")
    assert peer_allowed("127.0.0.1", "10.213.0.11", ())
    assert peer_allowed("::1", "::1", ())
    assert peer_allowed("10.213.0.11", "10.213.0.11", ())  # the host itself, on its bridge address
    assert peer_allowed("10.213.0.100", "10.213.0.11", allow)
    assert peer_allowed("::ffff:192.0.2.7", "::ffff:10.213.0.11", allow)
    assert not peer_allowed("10.213.0.20", "10.213.0.11", allow)  # nginx's host is not Prometheus
    assert not peer_allowed("10.213.0.100", "10.213.0.11", ())
    assert not peer_allowed("not-an-ip", "10.213.0.11", allow)


def test_render_prometheus_targets(tmp_path):
    s = Settings(instances=3, bokeh_host="10.0.0.21", http_host="10.0.0.20", http_port=8080, run_user="")
    secrets = {"SECRET_KEY": "k" * 32, "FLASK_SECRET": "f" * 32,
               **{render.role_password_name(r): "pw" for r in ("admin", *render.REDIS_ROLES.values())}}
    ctx = render.build_context(s, secrets, var_dir=tmp_path / "var")
    groups = json.loads(render.prometheus_targets(ctx))
    assert groups == [{"targets": ["10.0.0.21:5101", "10.0.0.21:5102", "10.0.0.21:5103"],
                       "labels": {"fleet_role": "bokeh"}},
                      {"targets": ["10.0.0.20:8080"], "labels": {"fleet_role": "web"}},
                      {"targets": ["127.0.0.1:8000"], "labels": {"fleet_role": "web_app"}},
                      {"targets": ["127.0.0.1:5100"], "labels": {"fleet_role": "compactor"}}]
    out = tmp_path / "sd.json"
    res = subprocess.run([str(Path(sys.prefix) / "bin" / "fleetctl"), "render", "--out", str(tmp_path / "var"),
                          "--prometheus", str(out)], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "FLEET_INSTANCES": "2", "FLEET_RUN_USER": "",
                              "FLEET_BOKEH_HOST": "10.0.0.22"})
    assert res.returncode == 0, res.stderr
    assert json.loads(out.read_text())[0]["targets"] == ["10.0.0.22:5101", "10.0.0.22:5102"]
    assert not (tmp_path / "var" / "supervisor").exists()  # only the target list


# --- the deployment ------------------------------------------------------------------------
def test_every_process_binds_its_host_address_not_loopback(fleet):
    """No listener on 127.0.0.1 or a wildcard: each binds the address its role names."""
    expect = {"redis": {f"{ADDR['redis']}:{REDIS_PORT}"},
              "bokeh1": {f"{ADDR['bokeh1']}:{BASE + 1}"}, "bokeh2": {f"{ADDR['bokeh2']}:{BASE + 1}"},
              "web": {f"{ADDR['web']}:{HTTP_PORT}", f"{ADDR['web']}:{WEB_PORT}",
                      f"{ADDR['web']}:{BASE}"}}  # the compactor's /metrics (FLEET_COMPACTOR_METRICS_PORT)
    for host, want in expect.items():
        out = fleet.net.run(host, "ss", "-Hltn").stdout
        listening = {line.split()[3] for line in out.splitlines() if line.strip()}
        assert listening == want, (host, listening)
    env = read_env_file(fleet.var("web") / "fleet.env")
    assert env["FLEET_TRUSTED_PROXIES"] == f"{ADDR['web']},127.0.0.1,::1"  # nginx -> gunicorn
    assert env["FLEET_ALLOWED_ORIGINS"].startswith(f"{ADDR['web']}:{HTTP_PORT},")
    assert env["FLEET_INSTANCES"] == "0"  # no local instance for `fleetctl health` to look for
    programs = (fleet.var("bokeh1") / "supervisor" / "fleet.conf").read_text()
    assert f"@{ADDR['redis']}:{REDIS_PORT}/0" in programs and "127.0.0.1:6390" not in programs
    assert "user=fleet" in programs  # the programs run unprivileged, as with fleetctl render
    fleet_uid = pwd.getpwnam("fleet").pw_uid
    for host, program in (("redis", "redis-server"), ("bokeh1", "fleetctl instance"), ("web", "gunicorn"),
                          ("web", "nginx: worker")):
        uids = fleet.uids(host, program)
        assert uids and set(uids) == {fleet_uid}, (host, program, uids)
    # one heartbeat per instance, although both hosts share a hostname and a port
    fleet.wait("both heartbeats", lambda: len(fleet.redis_cli("KEYS", "fleet:instance:*").split()) == 2 or
               fleet.redis_cli("KEYS", "fleet:instance:*"), 30)
    beats = fleet.redis_cli("KEYS", "fleet:instance:*").split()
    assert {":".join(b.split(":")[-2:]) for b in beats} == {f"{ADDR[h]}:{BASE + 1}" for h in ("bokeh1", "bokeh2")}
    nginx = (fleet.var("web") / "nginx" / "nginx.conf").read_text()
    assert f"server {ADDR['bokeh1']}:{BASE + 1} " in nginx and f"server {ADDR['bokeh2']}:{BASE + 1} " in nginx


def test_fleetctl_health_on_each_host(fleet):
    """An operator on any host: its supervisord, its own instances, the site."""
    for host in ROLES:
        res = fleet.net.run(host, str(Path(sys.prefix) / "bin" / "fleetctl"), "--site", str(fleet.base / host),
                            "health", "--wait", "30", timeout=60, cwd=fleet.base)
        assert res.returncode == 0 and res.stdout.strip().endswith("healthy"), (host, res.stdout, res.stderr)


def test_prometheus_scrapes_from_another_host_only_if_allowed(fleet):
    for host in ("bokeh1", "bokeh2"):
        url = f"http://{ADDR[host]}:{BASE + 1}/metrics"
        status, body = fleet.http("ctl", url)  # FLEET_METRICS_ALLOW: the controller host
        assert status == 200 and "fleet_reader_up 1" in body
        assert fleet.http("redis", url)[0] == 403  # another host, not in the list
        assert fleet.http("web", url.replace("/metrics", "/healthz"))[0] == 403
        assert fleet.http(host, url.replace("/metrics", "/healthz"))[0] == 200  # the host itself
    # the web app's gunicorn and the compactor (beside it on the web host): the same rule
    for url, name in ((f"http://{ADDR['web']}:{WEB_PORT}/metrics", "fleet_web_request_duration_seconds"),
                      (f"http://{ADDR['web']}:{BASE}/metrics", "fleet_compactor_leader 1")):
        status, body = fleet.http("ctl", url)
        assert status == 200 and name in body, (url, status, body[:300])
        assert fleet.http("redis", url)[0] == 403
    assert fleet.http("ctl", f"http://{ADDR['web']}:{HTTP_PORT}/metrics")[0] == 404  # never through the site
    targets = json.loads((fleet.var("web") / "prometheus" / "targets.json").read_text())
    assert targets[0]["targets"] == [f"{ADDR['bokeh1']}:{BASE + 1}", f"{ADDR['bokeh2']}:{BASE + 1}"]
    assert targets[1]["targets"] == [f"{ADDR['web']}:{HTTP_PORT}"]


# Redis round trips over raw RESP (no client library): p50/p99 in ms, for the figures.
RTT_SNIPPET = r"""
import socket, sys, time
host, port, user, pw = sys.argv[1:5]
s = socket.create_connection((host, int(port)))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def cmd(*a):
    s.sendall(("*%d\r\n" % len(a) + "".join("$%d\r\n%s\r\n" % (len(x), x) for x in a)).encode())
    return s.recv(4096)
assert cmd("AUTH", user, pw).startswith(b"+OK")
t = []
for _ in range(2000):
    t0 = time.perf_counter(); assert cmd("PING") == b"+PONG\r\n"; t.append(time.perf_counter() - t0)
t.sort()
print("%.3f %.3f" % (t[len(t) // 2] * 1e3, t[int(len(t) * 0.99)] * 1e3))
"""


def test_redis_answers_across_the_bridge(fleet):
    """The controller host reaches Redis on the Redis host's address (ACL user admin);
    records the round trip across the bridge against the same from the Redis host."""
    args = (ADDR["redis"], str(REDIS_PORT), "admin", SECRETS["redis_password"])
    for host in ("ctl", "redis"):
        res = fleet.net.run(host, sys.executable, "-c", RTT_SNIPPET, *args)
        assert res.returncode == 0, res.stderr
        FIGURES[f"redis_ping_ms_p50_p99_from_{host}"] = [float(v) for v in res.stdout.split()]


def _new_page(browser, base: str):
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(base + "/auth/login")
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit], input[type=submit]")
    page.wait_for_url(lambda u: "/auth/login" not in u, timeout=30000)
    page.goto(f"{base}/d/mh")
    page.wait_for_function("() => window.Bokeh && Bokeh.documents && Bokeh.documents.length > 0"
                           " && Bokeh.documents[0].roots().length > 0", timeout=60000)
    return ctx, page


def test_browser_on_another_host_sees_xadd_from_the_controller_host_on_both_bokeh_hosts(fleet):
    from playwright.sync_api import sync_playwright

    # Chromium runs in the `ctl` namespace: a client on another host than nginx.
    wrapper = fleet.base / "chromium-in-ctl"
    wrapper.write_text(f'#!/bin/sh\nexec {IP} netns exec {fleet.net.ns("ctl")} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    base = f"http://{ADDR['web']}:{HTTP_PORT}"
    fleet.redis_cli("XADD", "fleet:{mh}:commands", "*", "op", "replace", "name", "probe", "kind", "line",
                    "data", json.dumps({"x": [1, 2, 3], "y": [1.0, 4.0, 2.0]}))
    contexts, pages, served = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(wrapper), args=CHROMIUM_ARGS, headless=True)
        try:
            # the web app believes nginx (on the web host's address, not loopback): a
            # failed login is counted against the browser's address, not nginx's
            ctx = browser.new_context()
            contexts.append(ctx)
            page = ctx.new_page()
            page.goto(base + "/auth/login")
            page.fill("input[name=username]", USER)
            page.fill("input[name=password]", "wrong-password")
            page.click("button[type=submit], input[type=submit]")
            page.wait_for_selector("text=Wrong user name", timeout=30000)
            def bucket(addr: str) -> str:
                return "fleet:ratelimit:login-addr:" + hashlib.sha256(addr.encode()).hexdigest()[:32]

            assert fleet.redis_cli("EXISTS", bucket(ADDR["ctl"])) == "1"
            assert fleet.redis_cli("EXISTS", bucket(ADDR["web"])) == "0"
            for _ in range(12):  # the fleet_route cookie picks the host: open until both serve
                before = {h: fleet.sessions(h, "mh") for h in ("bokeh1", "bokeh2")}
                ctx, page = _new_page(browser, base)
                contexts.append(ctx)
                pages.append(page)
                route = next(c["value"] for c in ctx.cookies() if c["name"] == "fleet_route")
                fleet.wait("the new session in /metrics", lambda before=before: sum(
                    fleet.sessions(h, "mh") for h in ("bokeh1", "bokeh2")) > sum(before.values()), 30)
                grew = [h for h in ("bokeh1", "bokeh2") if fleet.sessions(h, "mh") > before[h]]
                served.append((route[:8], grew))
                if {"bokeh1", "bokeh2"} <= {h for _, g in served for h in g}:
                    break
            hosts = {h for _, g in served for h in g}
            assert hosts == {"bokeh1", "bokeh2"}, f"pages never spread over both Bokeh hosts: {served}"
            for pg in pages:
                assert "Line" in probe(pg)["glyphs"]
            times = []
            for i in range(6):  # the first one warms up the path
                marker = 5150.5 + i
                t0 = time.monotonic()
                fleet.redis_cli("XADD", "fleet:{mh}:commands", "*", "op", "stream", "name", "probe",
                                "data", json.dumps({"x": [10 + i], "y": [marker]}))
                wait_marker(pages, marker, timeout=20)
                times.append(time.monotonic() - t0)  # includes spawning redis-cli in `ctl`
            t0 = time.monotonic()
            fleet.redis_cli("PING")
            FIGURES["redis_cli_spawn_and_ping_s"] = round(time.monotonic() - t0, 3)
            FIGURES["pages"] = len(pages)
            FIGURES["served_by"] = served
            FIGURES["xadd_to_all_pages_s"] = [round(t, 3) for t in times]
            FIGURES["xadd_to_all_pages_median_warm_s"] = round(statistics.median(times[1:]), 3)
            assert statistics.median(times[1:]) < 2.0, times
        finally:
            for c in contexts:
                c.close()
            browser.close()


def test_second_salt_apply_changes_nothing(fleet):
    again = fleet.apply_all()
    bad = {h: _failed(r) for h, r in again.items() if _failed(r)}
    assert not bad, bad
    changed = {h: {k: v["changes"] for k, v in r.items() if v.get("changes")} for h, r in again.items()}
    assert not any(changed.values()), changed
    FIGURES["salt_apply_seconds"] = {h: [round(t, 1) for t in ts] for h, ts in fleet.apply_seconds.items()}
    FIGURES["states_per_host"] = {h: len(r) for h, r in again.items()}
    # and the first run did change things (it deployed): the check above is not vacuous
    assert all(any(v.get("changes") for v in r.values()) for r in fleet.first.values())
