"""The ``tl-circuits`` command line: demo, attribute, prune, export, serve, train, dashboards,
intervene, transcoders.

Each sub-command is one ``add_*`` function (in :mod:`.graphs` for commands on graphs, :mod:`.build`
for commands that make things) that adds a parser and sets ``func``; adding one is a new function
and one line in :func:`build_parser`. User errors (a ``TLCircuitsError``, a missing
file, a bad argument) print one line to stderr and exit with code 2; nothing is loaded before the
arguments are checked, so a mistake is reported in a second, not after loading a model.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tl_circuits.cli.build import add_dashboards, add_demo, add_train, add_transcoders
from tl_circuits.cli.common import Parser
from tl_circuits.cli.graphs import add_attribute, add_export, add_intervene, add_prune, add_serve
from tl_circuits.errors import TLCircuitsError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = Parser(prog="tl-circuits", description=__doc__.split("\n\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_demo, add_attribute, add_prune, add_export, add_serve, add_train,
                add_dashboards, add_intervene, add_transcoders):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``tl-circuits``; returns the exit code (2 for a usage or input error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (TLCircuitsError, FileNotFoundError, IsADirectoryError, NotADirectoryError,
            PermissionError) as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        sys.stderr.write(f"tl-circuits {args.command}: error: {message}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; run the same command again to resume.\n")
        return 130

