"""`gelombang`: the one command-line entry point.

Sub-commands are registered here; each lives in the module that does the work and is imported
only when used, so `gelombang --help` stays fast and the service does not load the simulator.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, help). Each module has `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("queue_service.commands.serve", "run the queue service"),
    "wave": ("queue_service.commands.wave", "admin client: list, show, create and control waves"),
    "keygen": ("queue_service.commands.keygen", "write a new Ed25519 admission signing key"),
    "origin": ("simulator.commands.origin", "run the sample Prakerja-like registration origin"),
    "simulate": ("simulator.commands.simulate", "drive synthetic registrants at a live wave"),
    "demo": ("simulator.commands.demo", "embedded Redis + origin + queue + a simulated wave"),
    "plan": ("simulator.commands.plan", "offline wave model: what rate clears a wave in time"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gelombang",
        description="Gelombang: a virtual waiting room for registration wave openings.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        command_parser = sub.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip().splitlines()[0],
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        module.add_arguments(command_parser)
        command_parser.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
