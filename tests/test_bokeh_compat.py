"""The Bokeh internals app/instance/bokeh_compat.py relies on are still there (unit)."""

from __future__ import annotations

import asyncio
import inspect
import socket

import pytest
from bokeh.document import Document
from bokeh.models import ColumnDataSource
from bokeh.protocol import Protocol
from tornado.iostream import IOStream, StreamClosedError

from app.instance import bokeh_compat


def test_every_internal_it_uses_exists():
    assert bokeh_compat.missing() == []


def test_installed_bokeh_is_supported():
    assert bokeh_compat.check_version()


@pytest.mark.parametrize("version", ["3.11.0", "4.0.1", "3.9.3", "3.11.0.dev1"])
def test_other_versions_refused_with_a_clear_message(version):
    with pytest.raises(RuntimeError, match=rf"Bokeh {version} is not supported.*bokeh_compat\.py"):
        bokeh_compat.check_version(version)


def test_accessors_on_real_objects():
    source = ColumnDataSource(data={"x": [1]})
    bokeh_compat.set_model_id(source, "fleet:demo:src")
    doc = Document()
    doc.add_root(source)
    assert source.id == "fleet:demo:src" and doc.get_model_by_id("fleet:demo:src") is source

    message = Protocol().create("ACK")
    assert bokeh_compat.message_buffers(message) == []
    assert bokeh_compat.cached_frames(message) is None
    bokeh_compat.cache_frames(message, b"x")
    assert bokeh_compat.cached_frames(message) == b"x"


def test_write_now_on_a_real_iostream_keeps_order_and_counts_what_is_unsent():
    """Straight to the socket while nothing is queued; behind tornado's queue once the
    kernel stops taking bytes; the peer reads everything in the order written."""

    async def main():
        a, b = socket.socketpair()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        stream = IOStream(a)
        assert bokeh_compat.unsent_bytes(stream) == 0
        chunks = [bytes([i % 251]) * 10_000 for i in range(40)]  # 400 KB: far more than the kernel takes
        for c in chunks:
            bokeh_compat.write_now(stream, c)
        assert bokeh_compat.unsent_bytes(stream) > 0  # the rest waits in tornado's queue
        got = bytearray()
        b.setblocking(False)
        while len(got) < sum(map(len, chunks)):
            try:
                got += b.recv(1 << 16)
            except BlockingIOError:
                await asyncio.sleep(0.001)
        assert bytes(got) == b"".join(chunks)
        assert bokeh_compat.unsent_bytes(stream) == 0
        stream.close()
        b.close()
        with pytest.raises(StreamClosedError):
            bokeh_compat.write_now(stream, b"x")

    asyncio.run(main())


def test_a_moved_internal_is_reported(monkeypatch):
    """missing() is not vacuous: an internal that goes away is named."""
    import bokeh.document.document as bokeh_document

    monkeypatch.setattr(bokeh_document, "gc", None)
    monkeypatch.setattr(inspect, "getsource", _without("self._write_buffer ="))
    assert bokeh_compat.missing() == ["tornado.iostream.BaseIOStream._write_buffer",
                                      "bokeh.document.document.gc (collected in Document.destroy)"]


def _without(text):
    real = inspect.getsource

    def getsource(obj):
        return real(obj).replace(text, "")

    return getsource
