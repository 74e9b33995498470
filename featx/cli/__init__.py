"""The ``featx`` command: list backbones, run the caching job, compare classifiers, maintain the cache."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from featx.cli import backbones, cache, compare, extract, tune
from featx.cli._common import one_line
from featx.errors import FeatxError


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="featx", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    for command in (backbones, extract, compare, tune, cache):
        command.add_parser(commands)
    return parser


if __name__ == "__main__":
    sys.exit(main())
