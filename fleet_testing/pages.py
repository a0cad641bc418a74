"""In-memory viewer connections for driving :class:`app.instance.sessions.Fanout` directly.

:class:`Stream` stands in for a tornado ``IOStream`` (what was written; what a slow
peer left unsent).  :class:`Page` is a viewer on such a stream that decodes the bytes
written to it the way BokehJS does: websocket frames -> Bokeh messages -> a
client-side :class:`bokeh.document.Document` built from PULL-DOC-REPLY and moved by
every PATCH-DOC.
"""

from __future__ import annotations

import struct
from typing import Any

from bokeh.document import Document
from bokeh.models import ColumnDataSource
from bokeh.protocol import Protocol
from bokeh.protocol.receiver import Receiver


def _done(coro: Any) -> Any:
    """Run a coroutine that never awaits (Receiver.consume) to its result."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("the coroutine awaited something")


class Stream:
    """A connection's write side: ``out`` reached the peer; with ``slow`` set, writes
    stay in ``_write_buffer`` (the unsent queue the fan-out measures)."""

    def __init__(self) -> None:
        self._write_buffer = bytearray()
        self._connecting = False
        self.out = bytearray()
        self.slow = False

    def write(self, data: bytes) -> None:
        (self._write_buffer if self.slow else self.out).extend(data)

    def drain(self) -> None:
        self.out += self._write_buffer
        self._write_buffer.clear()


class Page:
    """One viewer connection plus the document its browser would show."""

    def __init__(self, fanout: Any, dashboard: str = "d", user: str = "alice") -> None:
        self.fanout = fanout
        self.stream = Stream()
        self.closed: list[tuple[int, str]] = []
        self.viewer = fanout.open_viewer(self.stream, dashboard, user, ("viewer",),
                                         close=lambda code, reason: self.closed.append((code, reason)))
        self.receiver = Receiver(Protocol())
        self.pos = 0
        self.doc: Document | None = None
        self.kinds: list[str] = []
        self.streamed: list[Any] = []  # every ColumnsStreamed event's data, in arrival order

    def pull(self, reqid: str = "pull-1") -> Page:
        self.fanout.pull(self.viewer, reqid)
        return self.sync()

    def frames(self) -> list[tuple[int, bytes]]:
        buf, pos, out = self.stream.out, self.pos, []
        while len(buf) - pos >= 2:
            opcode, n, head = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, 2
            if n == 126:
                n, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
            elif n == 127:
                n, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
            if len(buf) - pos < head + n:
                break
            out.append((opcode, bytes(buf[pos + head:pos + head + n])))
            pos += head + n
        self.pos = pos
        return out

    def sync(self) -> Page:
        """Apply everything written so far, as BokehJS would."""
        for opcode, payload in self.frames():
            if opcode not in (1, 2):
                continue  # ping
            msg = _done(self.receiver.consume(payload.decode() if opcode == 1 else payload))
            if msg is None:
                continue
            kind = msg.header["msgtype"]
            self.kinds.append(kind)
            if kind == "PULL-DOC-REPLY":
                self.doc = Document()
                msg.push_to_document(self.doc)
            elif kind == "PATCH-DOC":
                assert self.doc is not None, "PATCH-DOC before the document"
                for ev in msg.content["events"]:
                    if ev.get("kind") == "ColumnsStreamed":
                        self.streamed.append(ev)
                msg.apply_to_document(self.doc)
        return self

    def sources(self) -> dict[str, dict[str, list]]:
        assert self.doc is not None
        return {m.name: {k: list(v) for k, v in m.data.items()} for m in self.doc.models
                if isinstance(m, ColumnDataSource) and m.name}
