"""Input checks shared by the entry points: finite data, writable output paths, models,
layer-name lists.

Bad input must give a clear error before any work is done, never a wrong model or a check
that passes (issue 21): a NaN pixel makes every channel's variance NaN (so "dead"), a NaN in
parity samples makes ``max(0.0, nan)`` report zero error, and an output path that cannot be
written fails only after the work, naming a temp file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

import numpy as np
from keras import tree

from tfchannelprune.errors import NonFiniteInputError


def count_non_finite(data) -> tuple[int, int]:
    """(non-finite values, values) over the floating-point arrays of ``data`` (a structure of
    arrays or tensors); integer and other arrays count as finite."""
    bad = total = 0
    for leaf in tree.flatten(data):
        if leaf is None:
            continue
        try:
            array = np.asarray(leaf)
        except (TypeError, ValueError):  # ragged, sparse ...: not checked here
            continue
        if not np.issubdtype(array.dtype, np.floating) and array.dtype.kind != "c":
            continue
        total += array.size
        bad += int(array.size - np.count_nonzero(np.isfinite(array)))
    return bad, total


def non_finite_error(what: str, bad: int, total: int, hint: str = "") -> NonFiniteInputError:
    """The one wording of a non-finite input: which input, how many values."""
    return NonFiniteInputError(
        f"{what} is not finite: {bad} NaN or infinite value{'s' if bad != 1 else ''} of "
        f"{total:,}; "
        f"{hint or 'every statistic computed from it would be NaN and the answer wrong'}. "
        f"Clean or drop those examples and call again. Received: {what} with {bad} non-finite "
        "values"
    )


def check_finite(data, what: str, hint: str = "") -> None:
    """Raise ``NonFiniteInputError`` when ``data`` holds NaN or inf.

    Args:
        data: an array, a tensor or a structure of them.
        what: the input's name as the user knows it (e.g. "sample_inputs").
        hint: why it matters here (replaces the generic reason).
    """
    bad, total = count_non_finite(data)
    if bad:
        raise non_finite_error(what, bad, total, hint)


class FiniteTally:
    """Counts non-finite values over a stream of batches; ``check()`` raises at the end.

    Example:
        >>> tally = FiniteTally("data")
        >>> for x in batches:
        ...     tally.add(x)
        >>> tally.check()
    """

    def __init__(self, what: str, hint: str = ""):
        self.what, self.hint = what, hint
        self.bad = self.total = 0

    def add(self, batch) -> None:
        bad, total = count_non_finite(batch)
        self.bad += bad
        self.total += total

    def check(self) -> None:
        if self.bad:
            raise non_finite_error(self.what, self.bad, self.total, self.hint)


def check_output_path(path, name: str = "path") -> str:
    """``path`` as a string when a file can be created there, checked by creating (and
    removing) a temp file beside it: ``os.access`` says yes to root on read-only places.

    Args:
        path: the output file the user gave.
        name: the argument's name as the user wrote it (``"path"``, ``"output"``).

    Raises:
        IsADirectoryError / NotADirectoryError / FileNotFoundError / PermissionError: with
        the user's path in the message.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    problem = None
    if os.path.isdir(path):
        problem = IsADirectoryError("The output path is a directory, not a file.")
    elif os.path.exists(directory) and not os.path.isdir(directory):
        problem = NotADirectoryError(f"The output's parent {directory!r} is not a directory.")
    elif not os.path.isdir(directory):
        problem = FileNotFoundError(
            f"The output directory {directory!r} does not exist; create it first."
        )
    else:
        try:
            fd, probe = tempfile.mkstemp(dir=directory, prefix=".tfchannelprune-probe")
        except OSError as error:
            problem = PermissionError(
                f"The output directory {directory!r} is not writable ({error.strerror})."
            )
        else:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.remove(probe)
    if problem is not None:
        raise type(problem)(f"{problem} Received: {name}={path}")
    return path


def layer_names(value, name: str = "ignored_layers") -> tuple[str, ...]:
    """One layer name or a sequence of them, as a tuple (a str is one name, not its
    characters).

    Raises:
        TypeError: anything other than a str or a sequence of str.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    names = tuple(value)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise TypeError(
            f"{name} is one layer name or a list of them. Received: {name}={value!r}"
        )
    return names
