"""Every parameter featx takes, declared once: its vocabulary or range, one checker, one message form.

Like scikit-learn's ``_parameter_constraints``: each estimator declares its parameters as a mapping of
name to :class:`Choice` or :class:`Interval`, :func:`validate` checks them all with one message form
("The 'x' parameter of Y must be ... Got ... instead."), and the command line builds its ``choices=`` and
``type=`` from the same declarations, so a value is accepted or refused alike everywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from featx.errors import ParameterError


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of values (compared with their types: 1 is not True)."""

    values: tuple[Any, ...]
    none: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.none
        return any(value == choice and type(value) is type(choice) for choice in self.values)

    def describe(self) -> str:
        return "one of {" + ", ".join(repr(c) for c in self.values) + "}" + (" or None" if self.none else "")

    def __iter__(self) -> Iterator[Any]:  # argparse's choices=
        return iter(self.values)


@dataclass(frozen=True)
class Interval:
    """A number in a range: ``low <= x`` (or ``low < x`` if ``open_low``), ``x <= high``; NaN never."""

    kind: type
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    none: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.none
        kind = numbers.Integral if self.kind is int else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind) or math.isnan(value):
            return False
        above = self.low is None or (value > self.low if self.open_low else value >= self.low)
        return above and (self.high is None or value <= self.high)

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a number"
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.open_low else '>='} {self.low:g}")
        if self.high is not None:
            bounds.append(f"<= {self.high:g}")
        return f"{noun} {' and '.join(bounds)}".strip() + (" or None" if self.none else "")

    def parse(self, text: str) -> Any:
        """An argparse ``type=``: the value of ``text``, or one line saying what is accepted (a flag
        cannot be None: leaving it out is how the command line says that)."""
        try:
            value = self.kind(text)
        except ValueError:
            value = None
        if value is None or not self.accepts(value):
            raise argparse.ArgumentTypeError(
                f"{text!r} is not {dataclasses.replace(self, none=False).describe()}"
            )
        return value


@dataclass(frozen=True)
class DeviceName:
    """A torch device's name ("auto", "cpu", "cuda", "cuda:1", "mps") or a ``torch.device``; whether this
    machine has it is checked where the network is built."""

    def accepts(self, value: Any) -> bool:
        if value == "auto" and isinstance(value, str):
            return True
        if not isinstance(value, str) and type(value).__name__ != "device":
            return False
        import torch  # only once a device other than "auto" is named: `featx --help` stays torch-free

        try:
            torch.device(value)
        except (RuntimeError, TypeError, ValueError):
            return False
        return True

    def describe(self) -> str:
        return "a torch device ('auto', 'cpu', 'cuda', 'cuda:N' or 'mps')"

    def parse(self, text: str) -> str:
        """An argparse ``type=``: ``text``, or one line saying it is not a torch device."""
        if not self.accepts(text):
            raise argparse.ArgumentTypeError(f"{text!r} is not {self.describe()}")
        return text


@dataclass(frozen=True)
class JobCount:
    """joblib's ``n_jobs``: None, or a nonzero integer (-1: every core, -2: all but one). 0 means nothing to
    joblib ("n_jobs == 0 in Parallel has no meaning"), so it is refused here, at the door, in one line."""

    def accepts(self, value: Any) -> bool:
        if value is None:
            return True
        return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value != 0

    def describe(self) -> str:
        return "a nonzero integer (-1: every core) or None"

    def parse(self, text: str) -> int:
        """An argparse ``type=``: the value of ``text``, or one line saying what is accepted."""
        try:
            value = int(text)
        except ValueError:
            value = 0
        if not self.accepts(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a nonzero integer (-1: every core)")
        return value


Constraint = Choice | Interval | DeviceName | JobCount

PRECISIONS = Choice(("auto", "fp32", "bf16", "fp16", "int8"))
COMPILES = Choice(("auto", True, False))
COMPILE_WORDS = {"auto": "auto", "on": True, "off": False}  # the command line's spelling of COMPILES
POOLINGS = Choice(("flatten", "avg", "max", "cls", "tokens_avg"))  # the last two: token outputs
ON_ERROR = Choice(("raise", "nan"))  # Python: a failed input raises, or becomes a NaN row
JOB_ON_ERROR = Choice(("skip", "raise"))  # batch job: a failed input is listed and left out, or stops the job
ENGINES = Choice(("local", "ray"))
BLAS_THREADS = Choice(("auto", "keep"))  # the folds' fits: timed both ways, or BLAS left as it is
CROP_MODES = Choice(("center", "squash"))  # timm's crop modes that featx reproduces
# how images are decoded: big JPEGs DCT-scaled on the CPU, every pixel on the CPU, JPEGs on the network's
# device (nvJPEG on a GPU); "auto" measures on a GPU and takes "reduced" elsewhere
DECODINGS = Choice(("auto", "reduced", "full", "device", "dali"))
PIXEL_DECODINGS = Choice(
    ("reduced", "full", "device", "dali")
)  # what a network's preprocessing holds, resolved
POSITIVE_INT = Interval(int, 1)  # batch sizes, pixel limits, sizes, megabytes
DEVICES = DeviceName()
WORKERS = Interval(int, 0, none=True)  # decoding processes: 0 decodes in the calling process
COUNT = Interval(int, 1, none=True)  # Ray actors; None: one per GPU
COSINE = Interval(float, 0, 1, open_low=True)  # a fidelity bound: 0 would accept anything
MIN_COSINE = 0.99  # the fidelity every automatic choice must keep against fp32 features, by default
FRACTION = Interval(float, 0, 1, open_low=True)
POSITIVE = Interval(float, 0, open_low=True)  # learning rates
NON_NEGATIVE = Interval(float, 0)  # days, regularisation
NON_NEGATIVE_INT = Interval(int, 0)
N_JOBS = JobCount()  # folds fitted in parallel


def check(name: str, value: Any, constraint: Constraint, owner: str = "featx") -> Any:
    """Return ``value`` if ``constraint`` accepts it; else raise a :class:`ParameterError` that says so."""
    if not constraint.accepts(value):
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be {constraint.describe()}. Got {value!r} instead."
        )
    return value


def validate(owner: str, params: Mapping[str, Any], constraints: Mapping[str, Constraint]) -> None:
    """Check every declared parameter of ``params`` (an estimator's ``get_params(deep=False)``)."""
    for name, constraint in constraints.items():
        check(name, params[name], constraint, owner)


def declared(default: Any, help: str, constraint: Constraint | None = None, **cli: Any) -> Any:
    """A dataclass field that declares its constraint and its command-line help (and, where argparse
    needs them, ``metavar``, or ``words``: the command line's spelling of each value)."""
    return dataclasses.field(default=default, metadata={"constraint": constraint, "help": help, **cli})


def check_fields(cls: type, values: Mapping[str, Any], owner: str) -> None:
    """Check ``values`` against the constraints :func:`declared` fields of ``cls`` carry, naming ``owner``;
    None passes where it is the field's default."""
    for field in dataclasses.fields(cls):
        constraint, value = field.metadata.get("constraint"), values.get(field.name, field.default)
        if constraint is not None and not (value is None and field.default is None):
            check(field.name, value, constraint, owner)


def chosen_fields(cls: type, params: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """The values of ``params`` that are fields of ``cls`` (a door's flat parameters), checked naming
    ``owner``: what builds one ``cls`` from them."""
    names = {field.name for field in dataclasses.fields(cls)}
    chosen = {name: value for name, value in params.items() if name in names}
    check_fields(cls, chosen, owner)
    return chosen
