"""What every command shares."""

from __future__ import annotations

import argparse
import sys


def progress_wanted(args: argparse.Namespace) -> bool:
    """A progress bar only for a person watching: not with --quiet, nor into a log file or a pipe."""
    return not args.quiet and sys.stderr.isatty()
