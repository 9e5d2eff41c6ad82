"""The `graphc` console script: parses the command line and dispatches to graphc.commands.

Errors that graphc anticipates (GraphcError: a bad option, a missing or corrupt file) are
printed as one message, without a traceback, and exit with status 1; argparse's usage
errors exit with 2; an interrupt that a command did not handle exits with 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from graphc import __version__, commands
from graphc.errors import GraphcError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphc",
        description="graphc: a deep-learning framework that is a compiler.",
    )
    parser.add_argument("--version", action="version", version=f"graphc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in commands.COMMANDS:
        module = commands.load(name)
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except (GraphcError, OSError) as e:  # OSError: e.g. an unwritable --checkpoint path
        print(f"graphc {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ngraphc {args.command}: aborted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
