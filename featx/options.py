"""Every option vocabulary, defined once, with one checker and one message form.

Like scikit-learn's ``_parameter_constraints``: the transformer, the engine and the command line (its
``choices=``) all read the same tuples, so a new value is added in one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from featx.errors import ParameterError

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
COMPILES = ("auto", True, False)
COMPILE_WORDS = {"auto": "auto", "on": True, "off": False}  # the command line's spelling of COMPILES
POOLINGS = ("flatten", "avg", "max")
ON_ERROR = ("raise", "nan")  # Python: a failed input raises, or becomes a NaN row
JOB_ON_ERROR = ("skip", "raise")  # batch job: a failed input is listed and left out, or stops the job
ENGINES = ("local", "ray")
DECODINGS = ("reduced", "full")  # JPEGs much larger than the network's input: DCT-scaled decoding, or full


def check_option(name: str, value: Any, choices: Iterable[Any], owner: str = "featx") -> Any:
    """Return ``value`` if it is one of ``choices``; else raise a :class:`ParameterError` that says so."""
    choices = tuple(choices)
    # `True in ("auto", 1)` is True in Python: compare types too, so 1 is not taken for True
    if not any(value == choice and type(value) is type(choice) for choice in choices):
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be one of {_listing(choices)}. Got {value!r} instead."
        )
    return value


def check_positive_int(name: str, value: Any, owner: str = "featx", *, allow_none: bool = False) -> Any:
    """Return ``value`` if it is an integer >= 1 (or None where allowed); else raise :class:`ParameterError`."""
    if value is None and allow_none:
        return value
    if isinstance(value, bool) or not hasattr(value, "__index__") or value < 1:
        accepted = "a positive integer" + (" or None" if allow_none else "")
        raise ParameterError(f"The {name!r} parameter of {owner} must be {accepted}. Got {value!r} instead.")
    return value


def _listing(choices: tuple[Any, ...]) -> str:
    return "{" + ", ".join(repr(c) for c in choices) + "}"
