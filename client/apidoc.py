"""Write docs/client-api.md: the API reference of bokeh_fleet, from its docstrings and
signatures (``python client/apidoc.py``; tests/test_client_docs.py checks it is current)."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "client-api.md"


def _doc(obj: object) -> str:
    return inspect.cleandoc(inspect.getdoc(obj) or "(undocumented)")


def render() -> str:
    """The reference as Markdown."""
    import bokeh_fleet

    lines = ["# bokeh_fleet API reference", "",
             "Generated from the docstrings by `python client/apidoc.py`; do not edit.", "",
             _doc(bokeh_fleet), ""]
    for name in bokeh_fleet.__all__:
        obj = getattr(bokeh_fleet, name)
        if not inspect.isclass(obj):
            lines += [f"## `{name}` = `{obj!r}`", ""]
            continue
        lines += [f"## class `{name}`", "", _doc(obj), ""]
        members: dict = {}
        for klass in reversed([c for c in obj.__mro__ if c.__module__.startswith("bokeh_fleet")]):
            for n, m in vars(klass).items():
                fn = m.__func__ if isinstance(m, classmethod) else m
                if not n.startswith("_") and inspect.isfunction(fn):
                    members[n] = fn
        if "__init__" in vars(obj):
            lines += [f"`{name}{inspect.signature(obj.__init__)}`".replace("(self, ", "(", 1), ""]
        for mname in sorted(members):
            fn = members[mname]
            sig = str(inspect.signature(fn)).replace("(self, ", "(", 1).replace("(self)", "()").replace(
                "(cls, ", "(", 1)
            prefix = "async " if inspect.iscoroutinefunction(fn) else ""
            lines += [f"### `{prefix}{name}.{mname}{sig}`", "", _doc(fn), ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if OUT.read_text() == text else "docs/client-api.md is out of date: python client/apidoc.py")
    OUT.write_text(text)
