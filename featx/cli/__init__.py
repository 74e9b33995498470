"""The ``featx`` command: list backbones, run the caching job, compare classifiers, maintain the cache."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from featx.cli import backbones, cache, compare, extract, tune
from featx.cli._common import one_line
from featx.errors import FeatxError

# the commands that build a network, and how many --backbone each takes (featx.cli._network)
NETWORK_COMMANDS = {"extract": "one", "compare": "several", "tune": "one"}


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # the command named first: only its network arguments are built (they import torch, seconds that
    # `featx --help` and `featx cache info` need not wait)
    named = next((arg for arg in argv if not arg.startswith("-")), "")
    args = parser(named).parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print(
            "\ninterrupted: finished batches are cached; run the same command again to resume",
            file=sys.stderr,
        )
        return 130
    except (FeatxError, OSError, ImportError) as error:
        # featx's own errors and the OS errors a job expects (a full disk, a read-only folder) end in one
        # line; anything else is a bug and keeps its traceback.
        print(f"featx: error: {one_line(error)}", file=sys.stderr)
        return 1


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``featx`` parser; a command that builds a network gets its network arguments where it is
    ``command``, or where ``command`` is None (every command whole: the manual checks them all)."""
    parser = argparse.ArgumentParser(prog="featx", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    for module in (backbones, extract, compare, tune, cache):
        name = module.__name__.rpartition(".")[2]
        subparser = module.add_parser(commands)
        if name in NETWORK_COMMANDS and command in (name, None):
            from featx.cli._network import add_network_arguments

            add_network_arguments(subparser, backbones=NETWORK_COMMANDS[name])
    return parser
