"""The supervisord event listener: process state changes -> Redis.

supervisord speaks a line protocol on the listener's stdin/stdout: we print
``READY``, it sends a header line (``ver:3.0 ... eventname:X len:N``) and an
N-byte payload, we answer ``RESULT 2\\nOK``.  The answer is always OK: if Redis is
away (it is a supervised program too, and may be the process whose state changed)
events wait in a bounded in-memory backlog and go out with the next one.  Nothing
but the protocol may be written to stdout; logs go to stderr.
"""

from __future__ import annotations

import logging
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import BinaryIO

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
    process = f"{group}:{name}" if group and group != name else name
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

    def __init__(self, sink: Callable[[list[dict[str, str]]], None], backlog: int = 1000) -> None:
        self.sink = sink
        self.backlog: deque[dict[str, str]] = deque(maxlen=backlog)
        self.host = socket.gethostname()

    def handle(self, headers: Mapping[str, str], payload: str) -> None:
        self.backlog.append(event_fields(headers, payload, self.host))
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


def main(settings) -> int:  # pragma: no cover - exercised under a real supervisord
    from app.bus import process_events
    from app.bus.connection import sync_client
    from app.bus.keys import Keys

    keys = Keys(settings.key_prefix)
    client = sync_client(settings)
    listener = Listener(lambda batch: process_events.record_many(client, keys, batch))
    listener.run(sys.stdin.buffer, sys.stdout.buffer)
    return 0
