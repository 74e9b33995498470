"""The network's arguments, added to every command that builds a network from one declaration: the
fields of :class:`~featx.models.spec.NetworkSpec` and of :class:`~featx.engines.base.RunOptions` that
declare a command-line help (:func:`featx.options.declared`), with their choices and checks."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from featx.engines.base import RunOptions
from featx.models.spec import NetworkSpec
from featx.options import Choice, DeviceName, Interval


def add_network_arguments(parser: argparse.ArgumentParser, *, backbones: str = "one") -> None:
    """``--backbone``, ``--weights``, ``--layer``... and ``--batch-size``, ``--num-workers``,
    ``--max-pixels``. ``backbones="several"`` lets ``--backbone`` repeat (``featx compare --report``)."""
    group = parser.add_argument_group("the network")
    for field in dataclasses.fields(NetworkSpec):
        kwargs = _argument(field)
        if field.name == "backbone" and backbones == "several":
            kwargs.update(action="append", default=None, help=f"{kwargs['help']} (repeat for several)")
        group.add_argument(_flag(field), **kwargs)
    running = parser.add_argument_group("how it runs")
    for field in dataclasses.fields(RunOptions):
        if field.metadata:
            running.add_argument(_flag(field), **_argument(field))


def network_spec(args: argparse.Namespace, **changes: Any) -> NetworkSpec:
    """The spec the parsed arguments describe (``changes``: a field the command sets itself)."""
    values = {
        field.name: _value(field, getattr(args, field.name)) for field in dataclasses.fields(NetworkSpec)
    }
    return NetworkSpec(**{**values, **changes})


def run_options(args: argparse.Namespace, **fixed: Any) -> RunOptions:
    """How the parsed arguments ask the network to run (``fixed``: progress, fail_fast)."""
    values = {
        field.name: getattr(args, field.name) for field in dataclasses.fields(RunOptions) if field.metadata
    }
    return RunOptions(**values, **fixed)


def _value(field: dataclasses.Field, given: Any) -> Any:
    """A parsed argument as the field holds it: ``--compile on`` is ``compile=True``."""
    words = field.metadata.get("words")
    return words[given] if words else given


def _flag(field: dataclasses.Field) -> str:
    return "--" + field.name.replace("_", "-")


def _argument(field: dataclasses.Field) -> dict[str, Any]:
    """argparse's keywords for a declared field: its default, help, and choices or check."""
    metadata, constraint = field.metadata, field.metadata["constraint"]
    shown = "" if "default" in metadata["help"] or field.default is None else f" (default: {field.default})"
    kwargs: dict[str, Any] = {"default": field.default, "help": metadata["help"] + shown}
    if "words" in metadata:  # the command line's spelling: --compile on|off|auto
        words = metadata["words"]
        kwargs.update(
            choices=list(words), type=str, default=next(w for w, v in words.items() if v == field.default)
        )
    elif isinstance(constraint, Choice):
        kwargs["choices"] = constraint
    elif isinstance(constraint, Interval | DeviceName):
        kwargs["type"] = constraint.parse
    if "metavar" in metadata:
        kwargs["metavar"] = metadata["metavar"]
    return kwargs
