"""Command line of the viewer: ``python -m tl_circuits.viewer serve GRAPH`` or ``export GRAPH OUT``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run ``serve`` or ``export``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m tl_circuits.viewer",
                                     description="View attribution graphs in a local web page.")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve a graph at http://127.0.0.1:PORT/")
    s.add_argument("graph", nargs="+", help="graph files (Graph.save) or exported graph JSON, or one folder")
    s.add_argument("--dashboards", help="directory written by tl_circuits.build_dashboards")
    s.add_argument("--port", type=int, default=8765)
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--annotations", help="annotations file (default: <graph stem>.annotations.json beside it)")
    e = sub.add_parser("export", help="write Neuronpedia-style JSON (and feature JSON) or a standalone HTML")
    e.add_argument("graph")
    e.add_argument("out", help="output .json, or .html for a single self-contained page")
    e.add_argument("--dashboards")
    e.add_argument("--node-threshold", type=float, default=0.8)
    e.add_argument("--edge-threshold", type=float, default=0.98)
    args = parser.parse_args(argv)

    from ..errors import TLCircuitsError

    try:
        if args.command == "serve":
            from .server import serve

            if args.host not in ("127.0.0.1", "localhost", "::1"):
                sys.stderr.write(f"warning: binding {args.host}: other machines may reach this viewer\n")
            serve(args.graph[0] if len(args.graph) == 1 else args.graph, dashboards=args.dashboards,
                  host=args.host, port=args.port, annotations_path=args.annotations,
                  announce=lambda url: sys.stderr.write(f"tl_circuits viewer on {url}  (Ctrl-C stops)\n"))
        else:
            from .publish import export_file

            export_file(args.graph, args.out, dashboards=args.dashboards,
                        node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
    except TLCircuitsError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2
    return 0



if __name__ == "__main__":
    sys.exit(main())
