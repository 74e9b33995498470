"""Every error featx raises on purpose, under one root (as ``httpx/_exceptions.py`` opens with its tree).

::

    FeatxError
      ParameterError(ValueError)        an argument outside its vocabulary or range
      ImageError(ValueError)            one input that could not become an image (index, source, kind)
      WeightsUnavailableError(RuntimeError)  weights neither cached nor downloadable
      OutputError(OSError)              a cache, feature or errors file that cannot be written
      ShardReadError(OSError)           a tar shard that cannot be opened or ends early

Each keeps the standard base it always had, so ``except ValueError`` still works. The command line
catches ``FeatxError`` (and the OS errors it expects) and prints one line; anything else is a bug in featx
and keeps its traceback.
"""

from __future__ import annotations


class FeatxError(Exception):
    """The root of featx's own errors."""


class ParameterError(FeatxError, ValueError):
    """A parameter's value is not one featx accepts; the message names the parameter and the choices."""


class WeightsUnavailableError(FeatxError, RuntimeError):
    """The requested weights are neither cached locally nor downloadable."""


class OutputError(FeatxError, OSError):
    """An output (cache, feature file, errors file) cannot be written; the message names the path and cause."""


class ShardReadError(FeatxError, OSError):
    """A shard that cannot be opened or that ends early; ``member`` is the member being read, if any."""

    def __init__(self, member: str | None, cause: BaseException):
        self.member, self.cause = member, cause
        super().__init__(
            f"{type(cause).__name__}: {cause}" + (f" (reading member {member})" if member else "")
        )


class ImageError(FeatxError, ValueError):
    """One input that could not become an image. ``kind`` is one of `ERROR_KINDS`."""

    def __init__(self, index: int, source: str, kind: str, reason: str):
        self.index, self.source, self.kind, self.reason = index, source, kind, reason
        super().__init__(f"input {index} ({source}): {kind}: {reason}")

    def at(self, index: int, source: str | None = None) -> ImageError:
        """The same failure, for input ``index`` (another input with the same content, or its row), named
        ``source`` where that input has its own name."""
        return ImageError(index, self.source if source is None else source, self.kind, self.reason)

    def __reduce__(self):  # crosses DataLoader worker processes intact
        return ImageError, (self.index, self.source, self.kind, self.reason)


ERROR_KINDS = (
    "missing",
    "permission",
    "unreadable",
    "unreachable",
    "empty",
    "not_an_image",
    "truncated",
    "decompression_bomb",
    "too_large",
    "unsupported_mode",
    "ambiguous",
    "invalid_array",
    "unsupported_type",
    "not_a_file",
)
