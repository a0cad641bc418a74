"""The op registry: one registration carries an op through every layer.

A toy op ``shout`` (registered here only, as docs/architecture.md "How to add an op"
walks through) goes parse -> fold -> a real Bokeh document -> every viewer of the
instance's shared document, with no other change anywhere.  Pure and in-process: no
Redis, no server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
from bokeh_fleet import wire

from app.control import EMPTY, Rejected, encode, ops, parse, step
from app.control.state import DashboardState, FoldConfig
from fleet_testing.pages import Page
from tests.test_instance_documents import Feed


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


APPLIED: list[str] = []  # the texts apply_shout was given, in order


def apply_shout(dd, cmd: Shout, after: DashboardState) -> None:
    APPLIED.append(cmd.text)
    dd._set_title(after)  # the document shows the state's title


SHOUT = ops.OpSpec("shout", Shout, fields=frozenset({"text"}), required=frozenset({"text"}),
                   parse=parse_shout, fold=fold_shout, apply=apply_shout)


@pytest.fixture
def shout():
    import app.instance.documents  # noqa: F401  (attaches the built-in ops' document hooks)

    ops.register(SHOUT)
    APPLIED.clear()
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
    """Applied once to the dashboard's shared document, whatever the number of viewers."""
    feed = Feed()
    feed.publish("replace", name="p", kind="line", data={"x": [0], "y": [1]})
    pages = [Page(feed.fanout).pull() for _ in range(3)]
    feed.publish("shout", text="hi")
    for page in pages:
        assert page.sync().doc.title == "HI!"
    board = feed.fanout.boards["d"]
    assert "HI!" in board.dd.header.text and board.doc.title == "HI!"
    assert board.dd.state is feed.state
    assert APPLIED == ["hi"]  # once, not once per viewer


def test_every_viewer_sees_the_toy_op_in_order(shout):
    """The frames the fan-out writes carry the op's effect to every viewer's own
    document; a viewer that opens later pulls the current state."""
    feed = Feed()
    feed.publish("replace", name="p", kind="line", data={"x": [0], "y": [1]})
    early = [Page(feed.fanout).pull() for _ in range(2)]
    for i in range(3):
        feed.publish("shout", text=f"n{i}")
    late = Page(feed.fanout).pull()
    for page in [*early, late]:
        page.sync()
        assert page.doc is not None and page.doc.title == "N2!"
    assert APPLIED == ["n0", "n1", "n2"]


def test_builtin_ops_are_the_wire_tables():
    """The server's registry and the client's wire tables (the wire format's one source)
    list the same ops with the same fields; the instance attaches every one's hook."""
    import app.instance.documents  # noqa: F401

    assert tuple(ops.REGISTRY) == wire.OPS
    assert ops.OP_FIELDS == wire.OP_FIELDS
    assert {k: v for k, v in ops.REQUIRED.items() if v} == wire.REQUIRED
    for name, spec in ops.REGISTRY.items():
        assert spec.command.op == name and spec.apply is not None, name
