"""What every command shares."""

from __future__ import annotations

import argparse
import os
import sys

from featx.feature_files import printable_path

# C0 and C1 control characters and DEL: a newline would split a line, an escape sequence drive the terminal
_CONTROLS = {code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7F, 0xA0)]}


def progress_wanted(args: argparse.Namespace) -> bool:
    """A progress bar only for a person watching: not with --quiet, nor into a log file or a pipe."""
    return not args.quiet and sys.stderr.isatty()


def existing_folder(text: str) -> str:
    """An argparse ``type=`` for a folder that must already exist (``featx cache ...`` never makes one)."""
    if not os.path.isdir(text):
        missing = "" if os.path.exists(text) else " (it does not exist)"
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder{missing}")
    return text


def one_line(text: object) -> str:
    """``text`` as one line for a terminal: a file name's undecodable bytes and control characters (a
    newline, an escape sequence) escaped as ``\\xNN``, so a name cannot split a message or drive the
    terminal. Output files keep names verbatim."""
    return printable_path(str(text)).translate(_CONTROLS)
