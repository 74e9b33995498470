"""What every command shares."""

from __future__ import annotations

import argparse
import os
import sys


def progress_wanted(args: argparse.Namespace) -> bool:
    """A progress bar only for a person watching: not with --quiet, nor into a log file or a pipe."""
    return not args.quiet and sys.stderr.isatty()


def existing_folder(text: str) -> str:
    """An argparse ``type=`` for a folder that must already exist (``featx cache ...`` never makes one)."""
    if not os.path.isdir(text):
        missing = "" if os.path.exists(text) else " (it does not exist)"
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder{missing}")
    return text
