"""The Bokeh internals app/instance/bokeh_compat.py relies on are still there (unit)."""

from __future__ import annotations

import pytest
from bokeh.document import Document
from bokeh.models import ColumnDataSource
from bokeh.protocol import Protocol
from bokeh.server.session import ServerSession

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

    session = ServerSession("sid", doc)
    assert bokeh_compat.pending_writes(session) is None  # outside the document lock
    seen = []

    async def run():
        await bokeh_compat.locked_on_loop(session, lambda: seen.append(bokeh_compat.pending_writes(session)))

    import asyncio
    asyncio.run(run())
    assert seen == [[]] and bokeh_compat.pending_writes(session) is None

    message = Protocol().create("ACK")
    assert bokeh_compat.message_buffers(message) == []
    assert bokeh_compat.cached_frames(message) is None
    bokeh_compat.cache_frames(message, b"x")
    assert bokeh_compat.cached_frames(message) == b"x"


def test_a_moved_internal_is_reported(monkeypatch):
    """missing() is not vacuous: an internal that goes away is named."""
    import bokeh.document.document as bokeh_document

    monkeypatch.delattr(ServerSession, "_send_pending_patches")
    monkeypatch.setattr(bokeh_document, "gc", None)
    assert bokeh_compat.missing() == ["bokeh.server.session.ServerSession._send_pending_patches",
                                      "bokeh.document.document.gc (collected in Document.destroy)"]
