"""Write docs/api.md from the docstrings of the public names (``tl_circuits.__all__``, viewer, ...).

Run ``python docs/gen_api.py`` after changing a public signature or docstring;
``tests/test_docs.py`` fails while docs/api.md is stale. ``--check`` exits 1 when it is.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

API_MD = Path(__file__).resolve().parent / "api.md"
HEADER = """# API reference

Generated from the docstrings by `python docs/gen_api.py` (do not edit by hand; `tests/test_docs.py`
checks it is current). Concepts and worked examples: [index.md](index.md).
"""


def _signature(obj: Any) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def _doc(obj: Any) -> str:
    return (inspect.getdoc(obj) or "").strip()


def _block(title: str, signature: str, doc: str, level: str) -> list[str]:
    lines = [f"{level} `{title}`", "", "```python", f"{title.split('.')[-1]}{signature}", "```", ""]
    return lines + [doc, ""] if doc else lines


def _real(obj: Any, module: str) -> Any:
    """For a lazy wrapper ``f(*args, **kwargs)`` in a package, the function it forwards to."""
    if not inspect.isfunction(obj):
        return obj
    params = [p.kind for p in inspect.signature(obj).parameters.values()]
    if params == [inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD]:
        import importlib

        server = importlib.import_module(f"{module}.server")
        return getattr(server, obj.__name__, obj)
    return obj


def _members(cls: type) -> list[tuple[str, Any]]:
    out = []
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, (classmethod, staticmethod)):
            member = member.__func__
        if isinstance(member, property) or inspect.isfunction(member):
            out.append((name, member))
    return sorted(out)


def _section(qualname: str, obj: Any) -> list[str]:
    if inspect.isclass(obj):
        bases = [b.__name__ for b in obj.__bases__ if b is not object]
        lines = [f"### `{qualname}`" + (f" ({', '.join(bases)})" if bases else ""), ""]
        init = obj.__init__ if "__init__" in vars(obj) or not issubclass(obj, Exception) else None
        if init is not None and init is not object.__init__:
            lines += ["```python", f"{obj.__name__}{_signature(obj)}", "```", ""]
        lines += [_doc(obj), ""]
        for name, member in _members(obj):
            if isinstance(member, property):
                lines += [f"#### `{obj.__name__}.{name}` (property)", "", _doc(member), ""]
            else:
                lines += _block(f"{obj.__name__}.{name}", _signature(member), _doc(member), "####")
        return lines
    if callable(obj):
        return _block(qualname, _signature(obj), _doc(obj), "###")
    return [f"### `{qualname}`", "", f"`{obj!r}`", ""]


def render() -> str:
    """The text of docs/api.md for the installed tl_circuits."""
    import tl_circuits
    import tl_circuits.hosts
    import tl_circuits.models
    import tl_circuits.viewer

    lines = [HEADER]
    for module, names in (("tl_circuits", tl_circuits.__all__),
                          ("tl_circuits.viewer", tl_circuits.viewer.__all__),
                          ("tl_circuits.hosts", ["as_host"]),
                          ("tl_circuits.models", ["load_default"])):
        mod = sys.modules[module]
        lines += [f"## `{module}`", "", (inspect.getdoc(mod) or "").split("\n\n")[0], ""]
        for name in sorted(names, key=lambda n: (n.startswith("_"), n.lower())):
            obj = _real(getattr(mod, name), module)
            lines += _section(f"{module}.{name}", obj)
    text = "\n".join(lines)
    return "\n".join(line.rstrip() for line in text.splitlines()).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write docs/api.md, or with ``--check`` return 1 when it differs from the docstrings."""
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in argv:
        current = API_MD.read_text() if API_MD.exists() else ""
        if current != text:
            sys.stderr.write("docs/api.md is stale: run python docs/gen_api.py\n")
            return 1
        return 0
    API_MD.write_text(text)
    sys.stdout.write(f"wrote {API_MD}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
