"""Names of importance criteria: ``get(identifier) -> Importance`` and ``register_importance``.

A name resolves to a registered ``Importance`` class first (``"fpgm"``), then to a taxonomy
signal (a preset such as ``"taylor"`` or an id ``"base|plan|scaling"``), wrapped in a
``SignalImportance``.
"""

from __future__ import annotations

from collections.abc import Mapping

from tfchannelprune.saliency import signals as signals_lib
from tfchannelprune.saliency.fpgm import FPGM
from tfchannelprune.saliency.importance import FunctionImportance, Importance, SignalImportance

_REGISTRY: dict[str, type] = {"fpgm": FPGM}


def register_importance(name: str, cls: type) -> type:
    """Make ``signal=name`` resolve to ``cls()`` (and ``{"class_name": name, "config": ...}``
    to ``cls.from_config(config)``) everywhere a signal is accepted.

    Returns ``cls``, so it can be used as ``register_importance("mine", Mine)``.

    Raises:
        TypeError: ``cls`` is not an ``Importance`` subclass.
        ValueError: ``name`` is taken by a taxonomy preset.
    """
    if not (isinstance(cls, type) and issubclass(cls, Importance)):
        raise TypeError(
            "register_importance needs a subclass of tfchannelprune.Importance. "
            f"Received: cls={cls!r}"
        )
    if not isinstance(name, str) or not name or name in signals_lib.PRESETS or "|" in name:
        raise ValueError(
            "An importance name is a non-empty string that is not a signal preset or id. "
            f"Received: name={name!r}"
        )
    _REGISTRY[name] = cls
    return cls


def names() -> list[str]:
    """Registered importance names (the taxonomy presets come on top of these)."""
    return sorted(_REGISTRY)


def get(identifier) -> Importance:
    """An ``Importance`` from a name, a signal id, a config, a ``Signal``, an ``Importance``
    or a function ``fn(context) -> {group: scores}``.

    Raises:
        ValueError: an unknown name (listing the presets and registered names).
        TypeError: anything else.
    """
    if isinstance(identifier, Importance):
        return identifier
    if isinstance(identifier, signals_lib.Signal):
        return SignalImportance(identifier)
    if isinstance(identifier, str):
        name = identifier.strip()
        if name in _REGISTRY:
            return _REGISTRY[name]()
        try:
            return SignalImportance(name)
        except ValueError as error:
            raise ValueError(f"{error} Registered importances: {', '.join(names())}.") from None
    if isinstance(identifier, Mapping):
        if identifier.get("class_name") in _REGISTRY:
            return _REGISTRY[identifier["class_name"]].from_config(identifier.get("config", {}))
        if "signal" in identifier:
            return SignalImportance(identifier["signal"])
        return SignalImportance(signals_lib.Signal.from_config(identifier))
    if callable(identifier):
        return FunctionImportance(identifier)
    raise TypeError(
        "A signal is a preset name, an id string, a config dict, a Signal, an Importance or "
        f"a function fn(context) -> {{group: scores}}. Received: signal of type "
        f"{type(identifier).__name__}"
    )


def serialize(importance: Importance) -> dict:
    """A config that ``get`` turns back into an equal importance."""
    if isinstance(importance, SignalImportance):
        return importance.get_config()
    for name, cls in _REGISTRY.items():
        if type(importance) is cls:
            return {"class_name": name, "config": importance.get_config()}
    raise ValueError(
        f"{type(importance).__name__} is not registered; call register_importance(name, "
        f"{type(importance).__name__}) to serialise it. Received: {importance!r}"
    )
