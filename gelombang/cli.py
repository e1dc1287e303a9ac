"""`gelombang`: the one command-line entry point.

Sub-commands are registered here, the simulator's by the simulator (`simulator.commands`, a
table); each lives in the module that does the work and is imported only when that command
runs, so the service never loads the simulator's code and `--help` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from queue_service.settings import SettingsError, StartupError
from simulator.commands import COMMANDS as SIMULATOR_COMMANDS

# name -> (module, help). Each module has `add_arguments(parser)` and `run(args) -> int`.
# The simulator's commands are registered by the simulator (a table, nothing else imported).
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("queue_service.commands.serve", "run the queue service"),
    "wave": ("queue_service.commands.wave", "admin client: list, show, create and control waves"),
    "keygen": ("queue_service.commands.keygen", "write a new Ed25519 admission signing key"),
    "audit": ("queue_service.commands.audit", "check a wave from public data (draw, order, rate)"),
    **SIMULATOR_COMMANDS,
}


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each command's docstring and epilog kept as written (examples stay readable). Defaults
    are written in each option's own help, where they mean something."""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The full parser; only `command`'s module is imported (all of them when None)."""
    parser = argparse.ArgumentParser(
        prog="gelombang",
        description="Gelombang: a virtual waiting room for registration wave openings.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, formatter_class=_HelpFormatter)
        if command is None or command == name:
            module = importlib.import_module(module_name)
            command_parser.description = (module.__doc__ or help_text).strip()
            command_parser.epilog = getattr(module, "EPILOG", None)
            module.add_arguments(command_parser)
            command_parser.set_defaults(_module=module)
    return parser


def _command_in(argv: Sequence[str]) -> str:
    """The sub-command named on the command line, or '' (then argparse explains)."""
    return next((arg for arg in argv if arg in COMMANDS), "")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command_in(argv)
    args = build_parser(command).parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except (SettingsError, StartupError) as exc:
        # one line, naming the file, variable, flag or wave at fault; nothing left running
        print(f"gelombang {command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader stopped early (`gelombang wave list | head`): that is not an error;
        # point stdout at /dev/null so the interpreter's final flush cannot fail either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
