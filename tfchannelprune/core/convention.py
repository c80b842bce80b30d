"""The calling convention of the public entry points (docs/api.md), and its transition.

Every entry point takes the model first, then the data (or what it works on: a path, a plan),
and every option after those by keyword only, with one name and one default library-wide
(``DEFAULTS``). ``keyword_only`` keeps the calls written before the convention working: the
positional arguments a function used to take after its first ones are mapped, in their old
order, to the keywords they became, with a ``DeprecationWarning`` that gives the new spelling;
more positional arguments than that are a ``TypeError`` that gives it too.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable

# The option names shared by the entry points, and their one default.
DEFAULTS = {
    "loss": None,
    "signal": "taylor",
    "batch_size": 32,
    "steps": None,
    "training": False,
    "min_channels": 1,
    "ignored_layers": (),
    "verbose": 1,
}

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def keyword_only(
    *legacy: str | Callable[[object], str],
    renamed: dict[str, str] | None = None,
    exclusive: tuple[str, ...] = (),
) -> Callable:
    """Decorate an entry point whose options became keyword-only.

    Args:
        *legacy: the names, in their former positional order, of the arguments that used to
            follow the positional ones; an entry may be a function ``value -> name`` (e.g. a
            list of signals goes to ``signals``, one signal to ``signal``).
        renamed: {former keyword: new keyword}, accepted with a ``DeprecationWarning``.
        exclusive: keywords that cannot be given together (``TypeError``).

    Returns:
        The decorator; the decorated function keeps its signature (``inspect.signature``).
    """
    renamed = dict(renamed or {})

    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn)
        positional = [p.name for p in signature.parameters.values() if p.kind in _POSITIONAL]
        allowed = len(positional)
        bound = 1 if positional[:1] in (["self"], ["cls"]) else 0  # not a user argument
        owner = fn.__qualname__.replace(".__init__", "")

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if len(args) > allowed:
                kwargs = _map_positional(owner, args[allowed:], legacy, kwargs, allowed - bound)
                args = args[:allowed]
            for old, new in renamed.items():
                if old in kwargs:
                    kwargs = _rename(owner, old, new, kwargs)
            both = [k for k in exclusive if k in kwargs]
            if len(both) > 1:
                raise TypeError(
                    f"{owner}() takes {' or '.join(exclusive)}, not both. "
                    f"Received: {', '.join(f'{k}={kwargs[k]!r}' for k in both)}"
                )
            return fn(*args, **kwargs)

        return wrapper

    return decorate


def _map_positional(owner, extra, legacy, kwargs, first) -> dict:
    if len(extra) > len(legacy):
        names = [n for n in legacy if isinstance(n, str)]
        raise TypeError(
            f"{owner}() takes {first} positional argument(s); give the options by keyword "
            f"({', '.join(f'{n}=...' for n in names)} ...; see docs/api.md). "
            f"Received: {first + len(extra)} positional arguments"
        )
    mapped = {}
    for value, name in zip(extra, legacy):
        mapped[name(value) if callable(name) else name] = value
    clash = sorted(set(mapped) & set(kwargs))
    if clash:
        raise TypeError(f"{owner}() got multiple values for {clash}. Received: {clash}")
    spelling = ", ".join(f"{k}=..." for k in mapped)
    warnings.warn(
        f"{owner}(): options after the first {first} argument(s) are keyword-only "
        f"(docs/api.md); write {owner}(..., {spelling}). Positional options will stop "
        "working in a later release.",
        DeprecationWarning,
        stacklevel=3,
    )
    return {**kwargs, **mapped}


def _rename(owner, old, new, kwargs) -> dict:
    if new in kwargs:
        raise TypeError(
            f"{owner}() got both {old}= (its former name) and {new}=. "
            f"Received: {old}={kwargs[old]!r}, {new}={kwargs[new]!r}"
        )
    warnings.warn(
        f"{owner}(): {old}= is now {new}= (docs/api.md); {old}= will stop working in a "
        "later release.",
        DeprecationWarning,
        stacklevel=3,
    )
    kwargs = dict(kwargs)
    kwargs[new] = kwargs.pop(old)
    return kwargs


def one_or_several(signal, signals) -> tuple[list, bool]:
    """``(criteria, one)``: ``signal=`` is ONE criterion (scores ``{group: scores}``),
    ``signals=`` a list of them (scores keyed by criterion); the caller's keyword decides.

    Raises:
        TypeError: a list given as ``signal``, or a single value as ``signals``.
        ValueError: an empty ``signals``.
    """
    if isinstance(signal, (list, tuple)):
        raise TypeError(
            "signal= is one criterion, scored as {group: scores}; for several in one pass "
            "write signals=[...], which gives {signal: {group: scores}}. "
            f"Received: signal={signal!r}"
        )
    if signals is None:
        return [signal], True
    if not isinstance(signals, (list, tuple)):
        raise TypeError(
            f"signals= is a list of criteria; for one, write signal=... Received: signals={signals!r}"
        )
    if not signals:
        raise ValueError("Give at least one signal. Received: signals=[]")
    return list(signals), False


def signal_or_signals(value) -> str:
    """The keyword a former positional signal argument maps to: a list or tuple of criteria
    is ``signals`` (scores keyed by criterion), anything else ``signal``."""
    return "signals" if isinstance(value, (list, tuple)) else "signal"
