"""supervisorctl knows the fleet: ``fleet status``, ``fleet lag``, ``fleet rolling-restart``.

A supervisorctl plugin, declared in the top-level ``supervisord.conf`` (supervisorctl
reads plugins from that file only, not from its ``[include]``)::

    [ctlplugin:fleet]
    supervisor.ctl_factory = app.stack.ctlplugin:make_fleet_controllerplugin

The site is the directory of that config file (its ``var/fleet.env`` gives the
instance ports and the Redis URL; FLEET_* variables in supervisorctl's environment
win, as for fleetctl).  Every figure comes from the running processes: supervisord
(state, pid, uptime), each instance's ``/metrics`` and ``/healthz``, and Redis (the
stream heads and the instances' heartbeats) for ``fleet lag``.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import xmlrpc.client
from pathlib import Path
from typing import Any

from supervisor.supervisorctl import ControllerPluginBase, LSBInitExitStatuses

GROUP = "fleet"
HTTP_TIMEOUT = 2.0
#: ``fleet lag`` counts at most this many entries behind (then shows ">=N")
LAG_COUNT_CAP = 10_000

USAGE = """\
fleet status                 per Bokeh instance: state, sessions, lag behind the stream,
                             last resync, health (exit 1 when one is unhealthy)
fleet lag                    per instance and dashboard: stream entries and seconds not
                             yet applied (from the heartbeats and the streams in Redis)
fleet rolling-restart [--timeout S] [--pause S]
                             restart the instances one at a time, each healthy before the
                             next (default --timeout 120, --pause 3)"""


def _host(host: str) -> str:
    return "127.0.0.1" if host in ("", "0.0.0.0") else "::1" if host == "::" else host


def _get(url: str) -> tuple[int, str]:
    """(status, body) of a GET; (0, error) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except OSError as e:
        return 0, str(getattr(e, "reason", e))


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """sample name -> [(labels, value)] (prometheus_client's parser)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def ago(ts: float | None, now: float | None = None) -> str:
    if not ts:
        return "-"
    secs = max(0, int((now or time.time()) - ts))
    if secs < 120:
        return f"{secs}s ago"
    if secs < 7200:
        return f"{secs // 60}m ago"
    return f"{secs // 3600}h ago"


def id_ms(entry_id: str) -> int:
    try:
        return int(str(entry_id).split("-", 1)[0])
    except ValueError:
        return 0


class FleetControllerPlugin(ControllerPluginBase):
    name = "fleet"

    def __init__(self, controller: Any, site: str = "", **config: Any) -> None:
        self.ctl = controller
        self.site = Path(site or getattr(controller.options, "here", None) or ".")

    # --- helpers ------------------------------------------------------------------------
    def settings(self) -> Any:
        from app import settings as settings_mod

        env = settings_mod.operator_environ(settings_mod.find_site(site=self.site))
        return settings_mod.load(env=env.environ)

    def instances(self) -> list[dict[str, Any]]:
        """supervisord's info of every ``fleet:bokeh_NN`` process, in order."""
        infos = self.ctl.get_supervisor().getAllProcessInfo()
        return sorted((i for i in infos if i["group"] == GROUP and i["name"].startswith("bokeh_")),
                      key=lambda i: i["name"])

    def fail(self, message: str) -> None:
        self.ctl.output(f"fleet: {message}")
        self.ctl.exitstatus = LSBInitExitStatuses.GENERIC

    def _run(self, what: Any, *args: Any) -> None:
        from app.settings import SettingsError

        try:
            what(*args)
        except (SettingsError, OSError, xmlrpc.client.Fault) as exc:
            self.fail(str(exc))

    # --- fleet --------------------------------------------------------------------------
    def do_fleet(self, arg: str) -> None:
        words = arg.split()
        if not words or words[0] in ("-h", "--help", "help"):
            self.help_fleet()
            return
        sub, rest = words[0], words[1:]
        commands = {"status": self.status, "lag": self.lag, "rolling-restart": self.rolling_restart}
        if sub not in commands:
            self.fail(f"unknown command {sub!r}")
            self.help_fleet()
            return
        self._run(commands[sub], rest)

    def help_fleet(self) -> None:
        self.ctl.output(USAGE)

    def status(self, args: list[str]) -> None:
        if args:
            return self.fail("status takes no arguments")
        s = self.settings()
        host = _host(s.bokeh_host)
        rows: list[tuple[str, ...]] = [("NAME", "STATE", "PID", "UPTIME", "SESSIONS", "LAG", "LAST RESYNC", "HEALTH")]
        unhealthy = 0
        now = time.time()
        for info in self.instances():
            n = int(info["name"].rsplit("_", 1)[1])
            base = f"http://{host}:{s.bokeh_port(n)}"
            code, health = _get(base + "/healthz")
            health = health.strip() if code == 200 else f"{code or 'down'}: {health.strip()[:60]}"
            sessions = lag = resync = "-"
            mcode, text = _get(base + "/metrics")
            if mcode == 200:
                m = parse_metrics(text)
                sessions = str(int(sum(v for _, v in m.get("fleet_sessions", []))))
                lag = f"{sum(v for _, v in m.get('fleet_reader_lag_seconds', [])):.3f}s"
                resync = ago(max((v for _, v in m.get("fleet_last_resync_timestamp_seconds", [])), default=0), now)
            uptime = "-"
            if info["statename"] == "RUNNING" and info.get("start"):
                secs = max(0, int(info["now"] - info["start"]))
                uptime = f"{secs // 3600}:{secs % 3600 // 60:02d}:{secs % 60:02d}"
            if code != 200:
                unhealthy += 1
            rows.append((f"{GROUP}:{info['name']}", info["statename"], str(info["pid"] or "-"), uptime,
                         sessions, lag, resync, health))
        if len(rows) == 1:
            return self.fail("no fleet:bokeh_* programs in this supervisord")
        self._table(rows)
        if unhealthy:
            self.ctl.exitstatus = LSBInitExitStatuses.GENERIC

    def lag(self, args: list[str]) -> None:
        if args:
            return self.fail("lag takes no arguments")
        from app.bus.connection import sync_client
        from app.bus.heartbeat import read_heartbeats
        from app.bus.keys import Keys

        s = self.settings()
        keys = Keys(s.key_prefix)
        client = sync_client(s)
        try:
            beats = read_heartbeats(client, keys)
            rows: list[tuple[str, ...]] = [
                ("INSTANCE", "DASHBOARD", "APPLIED", "STREAM HEAD", "ENTRIES BEHIND", "SECONDS BEHIND")]
            for beat in sorted(beats, key=lambda b: (str(b.get("hostname")), int(b.get("port") or 0))):
                who = f"{beat.get('hostname', '?')}:{beat.get('port', '?')}"
                for dashboard, applied in sorted((beat.get("last_ids") or {}).items()):
                    head = client.xrevrange(keys.commands(dashboard), count=1)
                    head_id = head[0][0] if head else "0-0"
                    head_id = head_id.decode() if isinstance(head_id, bytes) else str(head_id)
                    behind = 0
                    if head and head_id != applied:
                        behind = len(client.xrange(keys.commands(dashboard), min=f"({applied}",
                                                   count=LAG_COUNT_CAP) or ())
                    count = f">={LAG_COUNT_CAP}" if behind >= LAG_COUNT_CAP else str(behind)
                    secs = max(0, id_ms(head_id) - id_ms(applied)) / 1000 if behind else 0.0
                    rows.append((who, dashboard, applied, head_id, count, f"{secs:.3f}"))
        finally:
            client.close()
        if len(rows) == 1:
            return self.fail("no instance heartbeats in Redis: is the fleet running?")
        self._table(rows)

    def rolling_restart(self, args: list[str]) -> None:
        timeout, pause = 120.0, 3.0
        it = iter(args)
        for a in it:
            try:
                if a == "--timeout":
                    timeout = float(next(it))
                elif a == "--pause":
                    pause = float(next(it))
                else:
                    return self.fail(f"rolling-restart: unknown option {a!r}")
            except (StopIteration, ValueError):
                return self.fail(f"rolling-restart: {a} needs a number of seconds")
        s = self.settings()
        host = _host(s.bokeh_host)
        sup = self.ctl.get_supervisor()
        names = [f"{GROUP}:{i['name']}" for i in self.instances()]
        if not names:
            return self.fail("no fleet:bokeh_* programs in this supervisord")
        for k, name in enumerate(names):
            n = int(name.rsplit("_", 1)[1])
            self.ctl.output(f"{name}: restarting")
            try:
                sup.stopProcess(name, True)
            except xmlrpc.client.Fault as exc:
                if "NOT_RUNNING" not in exc.faultString:
                    raise
            sup.startProcess(name, True)
            url = f"http://{host}:{s.bokeh_port(n)}/healthz"
            deadline = time.monotonic() + timeout
            while (code := _get(url))[0] != 200:
                if time.monotonic() > deadline:
                    return self.fail(f"{name} not healthy after {timeout:g}s ({code[0]}: {code[1].strip()[:80]}); "
                                     f"stopped here: see var/log/bokeh_{n:02d}.log")
                time.sleep(0.2)
            self.ctl.output(f"{name}: healthy")
            if k + 1 < len(names):
                time.sleep(pause)  # nginx puts it back in rotation (fail_timeout=2s) first
        self.ctl.output(f"fleet: {len(names)} instances restarted")

    def _table(self, rows: list[tuple[str, ...]]) -> None:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            self.ctl.output("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def make_fleet_controllerplugin(controller: Any, **config: Any) -> FleetControllerPlugin:
    """supervisorctl's ``supervisor.ctl_factory``."""
    return FleetControllerPlugin(controller, **config)
