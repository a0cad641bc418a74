"""The supervisord event listener: process state changes -> Redis, and a watchdog.

supervisord speaks a line protocol on the listener's stdin/stdout: we print
``READY``, it sends a header line (``ver:3.0 ... eventname:X len:N``) and an
N-byte payload, we answer ``RESULT 2\\nOK``.  The answer is always OK: if Redis is
away (it is a supervised program too, and may be the process whose state changed)
events wait in a bounded in-memory backlog and go out with the next one.  Nothing
but the protocol may be written to stdout; logs go to stderr.

supervisord restarts a process that exits, not one that hangs.  On ``TICK_5``
events the listener's :class:`HealthWatch` probes every RUNNING Bokeh instance's
``/healthz`` and restarts (through supervisord's XML-RPC) one that has failed for
``FLEET_HEALTH_RESTART_SECONDS``, records that as a ``HEALTH_RESTART`` event, and
then leaves that instance alone for ``FLEET_HEALTH_RESTART_BACKOFF_SECONDS`` (no
restart loops; a restarted instance also gets the full threshold to come up).
"""

from __future__ import annotations

import logging
import socket
import sys
import time
import xmlrpc.client
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

from app.stack import names

log = logging.getLogger(__name__)


def parse_tokens(line: str) -> dict[str, str]:
    """``"a:1 b:2"`` -> ``{"a": "1", "b": "2"}`` (supervisord's header/payload syntax)."""
    out = {}
    for token in line.split():
        key, _, value = token.partition(":")
        out[key] = value
    return out


def event_fields(headers: Mapping[str, str], payload: str, host: str | None = None) -> dict[str, str]:
    """One Redis entry from a supervisord event."""
    first, _, _data = payload.partition("\n")
    body = parse_tokens(first)
    group = body.get("groupname", "")
    name = body.get("processname", "")
    process = names.process_key(group, name)
    fields = {
        "event": headers.get("eventname", ""),
        "process": process,
        "group": group,
        "from_state": body.get("from_state", ""),
        "pid": body.get("pid", ""),
        "expected": body.get("expected", ""),
        "tries": body.get("tries", ""),
        "host": host or socket.gethostname(),
        "ts": str(int(time.time() * 1000)),
    }
    return {k: v for k, v in fields.items() if v != ""}


class Listener:
    """The protocol loop; ``sink(batch)`` stores a list of events (raises on failure)."""

    def __init__(self, sink: Callable[[list[dict[str, str]]], None], backlog: int = 1000,
                 on_tick: Callable[[], None] | None = None) -> None:
        self.sink = sink
        self.backlog: deque[dict[str, str]] = deque(maxlen=backlog)
        self.host = socket.gethostname()
        self.on_tick = on_tick

    def handle(self, headers: Mapping[str, str], payload: str) -> None:
        if headers.get("eventname", "").startswith("TICK_"):  # a clock, not a process event
            if self.on_tick is not None:
                try:
                    self.on_tick()
                except Exception:  # the watchdog must never take the listener down
                    log.exception("health watch failed")
            return
        self.record(event_fields(headers, payload, self.host))

    def record(self, fields: dict[str, str]) -> None:
        """Store one event (with any backlog); kept for the next try if Redis is away."""
        self.backlog.append(fields)
        batch = list(self.backlog)
        try:
            self.sink(batch)
        except Exception as exc:  # Redis down: keep the events for the next try
            log.warning("could not record %d process event(s): %s", len(batch), exc)
            return
        self.backlog.clear()

    def run(self, stdin: BinaryIO, stdout: BinaryIO, max_events: int | None = None) -> None:
        seen = 0
        while max_events is None or seen < max_events:
            stdout.write(b"READY\n")
            stdout.flush()
            line = stdin.readline()
            if not line:
                return  # supervisord went away
            headers = parse_tokens(line.decode("utf-8", "replace"))
            payload = stdin.read(int(headers.get("len", "0"))).decode("utf-8", "replace")
            try:
                self.handle(headers, payload)
            finally:
                stdout.write(b"RESULT 2\nOK")
                stdout.flush()
            seen += 1


STOP_TIMEOUT = 60.0  # seconds for supervisord to stop a hung instance (its stopwaitsecs is 15)


class HealthWatch:
    """Restarts a hung Bokeh instance: RUNNING for supervisord, failing ``/healthz``.

    ``tick()`` runs on every ``TICK_5``.  An instance's failure time counts from its
    first failed probe, but never from before the process started (so a restarted
    instance gets the whole threshold to come up); after a restart the same instance
    is not restarted again within the backoff window, whatever its health.  An
    instance that answers 503 while Redis is unreachable from here is waiting for
    Redis, not hung, and is left alone.
    """

    def __init__(self, settings: Any, record: Callable[[dict[str, str]], None], *,
                 probe: Callable[[int], int | str] | None = None,
                 rpc: Callable[..., Any] | None = None,
                 redis_ok: Callable[[], bool] = lambda: True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        from app.stack import health

        self.settings = settings
        self.after = float(settings.health_restart_seconds)
        self.backoff = float(settings.health_restart_backoff_seconds)
        self.record = record
        self.probe = probe or (lambda n: health.http_status(health.instance_url(settings, n), timeout=2.0))
        sock = settings.var_dir / "supervisor.sock"
        self.rpc = rpc or (lambda timeout=health.SUPERVISOR_TIMEOUT: health.supervisor_proxy(sock, timeout))
        self.redis_ok = redis_ok
        self.clock = clock
        self.failing_since: dict[str, float] = {}
        self.restarted_at: dict[str, float] = {}
        self.host = socket.gethostname()

    def tick(self) -> None:
        if self.after <= 0:
            return
        infos = self.rpc().supervisor.getAllProcessInfo()
        redis_up: bool | None = None
        for info in infos:
            n = names.instance_number(info["name"])
            if n is None:
                continue
            key = names.process_key(info["group"], info["name"])
            if info["statename"] != "RUNNING":  # starting, backing off or stopped: supervisord's business
                self.failing_since.pop(key, None)
                continue
            status = self.probe(n)
            now = self.clock()
            if status == 200:
                self.failing_since.pop(key, None)
                continue
            if isinstance(status, int):
                # It answered (503: not caught up).  With Redis itself away that is not the
                # instance's fault and a restart would not help: only a silent one is hung.
                if redis_up is None:
                    redis_up = self.redis_ok()
                if not redis_up:
                    self.failing_since.pop(key, None)
                    continue
            since = self.failing_since.setdefault(key, now)
            uptime = max(0.0, float(info.get("now", 0)) - float(info.get("start", 0)))
            failing = min(now - since, uptime)
            if failing < self.after:
                continue
            last = self.restarted_at.get(key)
            if last is not None and now - last < self.backoff:
                continue
            self.restart(key, info, f"/healthz failing for {failing:.0f}s ({str(status)[:120]})")

    def restart(self, key: str, info: Mapping[str, Any], reason: str) -> None:
        """Stop and start ``key`` through supervisord; record the outcome as an event."""
        now = self.clock()
        self.restarted_at[key] = now
        self.failing_since.pop(key, None)
        log.warning("restarting %s (pid %s): %s", key, info.get("pid"), reason)
        # stopProcess waits for the process to go (TERM, then KILL after stopwaitsecs, 15 s).
        rpc = self.rpc(timeout=STOP_TIMEOUT)
        result = "restarted"
        try:
            try:  # a stopped (SIGSTOP) process cannot act on TERM until it is continued
                rpc.supervisor.signalProcess(key, "CONT")
            except xmlrpc.client.Fault:
                pass
            rpc.supervisor.stopProcess(key, True)
            rpc.supervisor.startProcess(key, False)
        except (OSError, xmlrpc.client.Error) as exc:
            result = f"failed: {type(exc).__name__}: {exc}"[:200]
            log.error("restart of %s %s", key, result)
        self.record({"event": "HEALTH_RESTART", "process": key, "group": str(info.get("group", "")),
                     "pid": str(info.get("pid", "")), "reason": reason, "result": result,
                     "host": self.host, "ts": str(int(time.time() * 1000))})


def main(settings) -> int:  # pragma: no cover - exercised under a real supervisord
    from app.bus import process_events
    from app.bus.connection import sync_client
    from app.bus.keys import Keys

    keys = Keys(settings.key_prefix)
    client = sync_client(settings)
    listener = Listener(lambda batch: process_events.record_many(client, keys, batch))

    def redis_ok() -> bool:
        try:
            return bool(client.ping())
        except Exception:
            return False

    listener.on_tick = HealthWatch(settings, listener.record, redis_ok=redis_ok).tick
    listener.run(sys.stdin.buffer, sys.stdout.buffer)
    return 0
