"""The `graphc` subcommands: one module per command, registered below by name.

A command module (graphc/commands/NAME.py) defines
    HELP: str                                             one line for `graphc --help`
    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int                  the process exit code
and keeps its module-level imports light (argparse builds every command's parser), doing
the heavy imports inside run(). To add a command, write its module and add it to COMMANDS.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> module; the order is the order `graphc --help` lists them.
COMMANDS: dict[str, str] = {
    "train": "graphc.commands.train",
    "bench": "graphc.commands.bench",
    "inspect": "graphc.commands.inspect",
    "check": "graphc.commands.check",
    "export": "graphc.commands.export",
}


def load(name: str) -> ModuleType:
    return importlib.import_module(COMMANDS[name])
