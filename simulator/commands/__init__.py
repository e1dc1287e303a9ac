"""The simulator's `gelombang` sub-commands, registered with the one entry point
(`gelombang.cli`) from here: each module has `add_arguments(parser)` and `run(args) -> int`,
and is imported only when its command runs."""

from __future__ import annotations

COMMANDS: dict[str, tuple[str, str]] = {
    "origin": ("simulator.commands.origin", "run the sample Prakerja-like registration origin"),
    "simulate": ("simulator.commands.simulate", "drive synthetic registrants at a live wave"),
    "demo": ("simulator.commands.demo", "embedded Redis + origin + queue + a simulated wave"),
    "plan": ("simulator.commands.plan", "offline wave model: what rate clears a wave in time"),
}
"""name -> (module, help)"""
