"""The op registry: one registration carries an op through every layer.

A toy op ``shout`` (registered here only, as docs/architecture.md "How to add an op"
walks through) goes parse -> fold -> a real Bokeh document -> the fan-out's
coalescing, with no other change anywhere.  Pure and in-process: no Redis, no server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import ClassVar

import pytest
from bokeh.document import Document
from bokeh_fleet import wire

from app.control import EMPTY, Rejected, encode, ops, parse, step
from app.control.state import DashboardState, FoldConfig
from tests.test_instance_documents import FakeContext, Feed


# --- the toy op, as the walkthrough writes it ---------------------------------------------
@dataclass(frozen=True, eq=False, kw_only=True)
class Shout(ops.Command):
    """Set the dashboard title to ``text``, shouted."""

    op: ClassVar[str] = "shout"
    text: str = ""


def parse_shout(fields, limits) -> dict:
    text = fields["text"].decode("utf-8", "replace")
    if not 0 < len(text) <= 40:
        raise Rejected("1-40 characters", "text")
    return {"text": text}


def fold_shout(state: DashboardState, cmd: Shout, cfg: FoldConfig):
    if state.title.endswith("!!!"):
        raise Rejected("the dashboard is hoarse", "text")
    return {"title": cmd.text.upper() + "!"}, cmd


RUNS: list[int] = []  # lengths of the runs apply_run was given


def apply_shout(dd, cmd: Shout, after: DashboardState) -> None:
    dd._set_title(after)  # the document shows the state's title


def apply_shout_run(dd, cmds: list[Shout], after: DashboardState) -> None:
    RUNS.append(len(cmds))
    dd._set_title(after)  # only the last one shows: set it once


SHOUT = ops.OpSpec("shout", Shout, fields=frozenset({"text"}), required=frozenset({"text"}),
                   parse=parse_shout, fold=fold_shout, coalesce=lambda cmd: "title",
                   apply=apply_shout, apply_run=apply_shout_run)


@pytest.fixture
def shout():
    import app.instance.documents  # noqa: F401  (attaches the built-in ops' document hooks)

    ops.register(SHOUT)
    RUNS.clear()
    yield
    ops.unregister("shout")


# --- tests ---------------------------------------------------------------------------------
def test_an_unregistered_op_is_refused_everywhere():
    with pytest.raises(Rejected, match="unknown op 'shout'") as exc:
        parse({"op": "shout", "text": "hi"})
    assert exc.value.field == "op"
    with pytest.raises(Rejected, match="unknown op"):
        encode("shout", text="hi")


def test_toy_op_parses_encodes_and_folds(shout):
    cmd = parse({"op": "shout", "text": b"hello", "id": "s1", "ts": "5"})
    assert type(cmd) is Shout and (cmd.op, cmd.text, cmd.cmd_id, cmd.ts) == ("shout", "hello", "s1", 5.0)
    assert parse(encode("shout", text="hi", cmd_id="s2")).text == "hi"
    # the registry's field check and the op's own parser both speak
    with pytest.raises(Rejected, match="unknown field for op shout") as exc:
        parse({"op": "shout", "text": "hi", "name": "p"})
    assert exc.value.field == "name"
    with pytest.raises(Rejected, match="required by op shout"):
        parse({"op": "shout"})
    with pytest.raises(Rejected, match="1-40 characters"):
        parse({"op": "shout", "text": "x" * 41})

    state, resolved = step(EMPTY, cmd)
    assert state.title == "HELLO!" and state.applied == 1 and state.seen == ("s1",) and resolved is cmd
    assert step(state, cmd) == (state, None)  # the id was seen: a duplicate, not folded twice
    state = step(state, parse({"op": "set", "title": "loud!!!"}))[0]
    with pytest.raises(Rejected, match="hoarse"):
        step(state, parse({"op": "shout", "text": "again"}))


def test_toy_op_reaches_a_bokeh_document(shout):
    feed = Feed()
    feed.publish("replace", name="p", kind="line", data={"x": [0], "y": [1]})
    doc = Document()
    view = feed.fanout.open_session("s", "d", doc)  # no Bokeh session yet: applied at once
    feed.publish("shout", text="hi")
    assert "HI!" in view.dd.header.text and doc.title == "HI!"
    assert view.dd.state is feed.state
    assert RUNS == []  # one command at a time: never a run


def test_a_lagging_session_coalesces_the_toy_op(shout):
    async def main():
        feed = Feed()
        feed.publish("replace", name="p", kind="line", data={"x": [0], "y": [1]})
        doc = Document()
        view = feed.fanout.open_session("s", "d", doc, context=FakeContext())
        for i in range(5):  # no await in between: the session falls behind
            feed.publish("shout", text=f"n{i}")
        feed.publish("stream", name="p", data={"x": [1], "y": [2]})
        for i in range(3):
            feed.publish("shout", text=f"m{i}")
        await feed.fanout.drain_all()
        assert RUNS == [5, 3]
        assert feed.fanout.stats["coalesced"] == 4 + 2
        assert doc.title == "M2!" and "M2!" in view.dd.header.text
        assert list(view.dd.views["p"].source.data["x"]) == [0, 1]

    asyncio.run(main())


def test_builtin_ops_are_the_wire_tables():
    """The server's registry and the client's wire tables (the wire format's one source)
    list the same ops with the same fields; the instance attaches every one's hook."""
    import app.instance.documents  # noqa: F401

    assert tuple(ops.REGISTRY) == wire.OPS
    assert ops.OP_FIELDS == wire.OP_FIELDS
    assert {k: v for k, v in ops.REQUIRED.items() if v} == wire.REQUIRED
    for name, spec in ops.REGISTRY.items():
        assert spec.command.op == name and spec.apply is not None, name
