"""`snn-edge`: one console script, sub-commands registered by small modules.

Each module in COMMAND_MODULES has `register(subparsers)`, which adds its sub-commands and sets
`func` on them. Modules import their heavy dependencies (tonic, onnxruntime, serial) inside the
handlers, so `snn-edge --help` stays fast and a board-only install never needs tonic.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from edge.errors import SnnEdgeError

COMMAND_MODULES = [
    "host_tools.cmd_data",
    "host_tools.cmd_train",
    "host_tools.cmd_convert",
    "host_tools.cmd_board",
    "host_tools.cmd_device",
    "host_tools.cmd_stream",
    "host_tools.cmd_demo",
    "host_tools.cmd_sweep",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="snn-edge",
        description="Train spiking neural networks on a laptop, run and adapt them on a microcontroller.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that part of the CLI is not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except SnnEdgeError as exc:
        print(f"snn-edge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("snn-edge: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
