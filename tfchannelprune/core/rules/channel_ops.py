"""Rules for operations that move, reduce or slice tensors without mixing channels: spatial
reductions (``ops.mean``/``sum``/``max`` over spatial axes), padding, casts, transposes that
keep the channel axis last, ``ops.reshape``, resizing, ``x[...]`` indexing and ``ops.split``
(on the channel axis both slice the layout; ``compact`` moves the bounds to the kept channels).

For a ``keras.ops`` operation, ``cut`` returns a config for a new operation of the same class,
or (GetItem, whose key is a call argument) a replacement callable taking the same arguments."""

from __future__ import annotations

import numpy as np

from tfchannelprune import _keras
from tfchannelprune.core.rules.base import AS_IS, Passthrough, Rule, masked
from tfchannelprune.core.rules.layout import FlattenRule
from tfchannelprune.errors import UnsupportedLayerError


def _axes(axis, rank: int) -> set[int] | None:
    if axis is None:
        return None
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return {int(a) % rank for a in axes}


class SpatialReduceRule(Passthrough):
    """``ops.mean``/``sum``/``max``/``min`` over spatial axes: channel c stays channel c."""

    def check(self, fn):
        rank = len(fn.input_shapes[0])
        axes = _axes(getattr(fn.op, "axis", None), rank)
        if axes is None or rank - 1 in axes:
            return "reduces over the channel axis"
        return super().check(fn)


class PadRule(Passthrough):
    """``ops.pad`` that leaves the channel axis alone (any mode maps a zero channel to a zero
    channel as long as the constant is 0)."""

    def check(self, fn):
        width = np.asarray(getattr(fn.op, "pad_width", [[0, 0]]))
        if width.ndim == 2 and len(width) == len(fn.input_shapes[0]) and np.any(width[-1]):
            return "pads the channel axis"
        return super().check(fn)

    def zero_preserving(self, fn) -> bool:
        value = _keras.node_kwargs(fn.node).get("constant_values")
        constants = _keras.node_constant_args(fn.node)
        return value in (None, 0) and all(np.all(np.asarray(c) == 0) for c in constants[1:])


class ChannelLastPermuteRule(Passthrough):
    """``ops.transpose`` / ``Permute`` that keep the channel axis last."""

    def check(self, fn):
        rank = len(fn.input_shapes[0])
        dims = getattr(fn.op, "dims", None)  # Permute: 1-based, without the batch axis
        axes = getattr(fn.op, "axes", None) if dims is None else [0, *dims]
        if axes is None or int(axes[-1]) % rank != rank - 1:
            return "moves the channel axis"
        return super().check(fn)


class GetItemRule(Passthrough):
    """``x[...]`` indexing: spatial crops and strides keep the layout; a ``a:b`` slice of the
    channel axis (say, one part of a concatenation) takes those positions of the layout, and
    ``compact`` moves its bounds to the kept channels."""

    def _key(self, fn) -> tuple | None:
        """The key with one entry per axis, or None for keys that add or drop axes."""
        args = _keras.node_args(fn.node)
        key = args[1] if len(args) > 1 else _keras.node_kwargs(fn.node).get("key")
        key = key if isinstance(key, tuple) else (key,)
        rank = len(fn.input_shapes[0])
        if any(k is None for k in key) or key.count(Ellipsis) > 1:
            return None
        if Ellipsis in key:
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (rank - len(key) + 1) + key[i + 1 :]
        key = key + (slice(None),) * (rank - len(key))
        return key if len(key) == rank else None

    def check(self, fn):
        key = self._key(fn)
        if key is None:
            return "indexing that adds axes"
        last = key[-1]
        if not isinstance(last, slice) or last.step not in (None, 1):
            return "indexing that takes single channels or strides over the channel axis"
        return super().check(fn)

    def subset(self, fn):
        if self._key(fn)[-1] != slice(None):
            return masked("the channel slice's bounds are positions of the full tensor")
        return super().subset(fn)

    def propagate(self, ctx, fn) -> None:
        layout = ctx.layout(fn.inputs[0])
        last = self._key(fn)[-1]
        ctx.set(fn.outputs[0], type(layout)(layout.gid[last], layout.ch[last]))

    def cut(self, layer, fn, in_keep, out_keep):
        """A replacement call: the same key with the channel slice over the kept positions."""
        key = self._key(fn)
        width = fn.input_shapes[0][-1]
        start, stop, _ = key[-1].indices(width)
        kept = np.asarray(in_keep)
        new = slice(int(np.sum(kept < start)), int(np.sum(kept < stop)))
        if new.stop <= new.start:
            raise UnsupportedLayerError(
                f"Indexing {fn.path!r} would take no channel: keep at least one of positions "
                f"{start}..{stop - 1}. Received: {len(kept)} kept positions"
            )
        new_key = key[:-1] + (new,)
        return (lambda x, *args, **kwargs: x[new_key]), None


class SplitRule(Rule):
    """``ops.split``: on the channel axis, output i holds positions [b_i, b_{i+1}) of the
    input's layout; on another axis every output keeps the layout."""

    mixes = False

    def check(self, fn):
        return None if len(fn.inputs) == 1 else "split of several tensors"

    def zero_preserving(self, fn) -> bool:
        return True

    def carries_constants(self, fn) -> bool:
        return True

    def _on_channels(self, fn) -> bool:
        rank = len(fn.input_shapes[0])
        return int(getattr(fn.op, "axis", 0)) % rank == rank - 1

    def subset(self, fn):
        return masked("the split points are positions of the full tensor") if (
            self._on_channels(fn)
        ) else AS_IS

    def _bounds(self, fn) -> list[int]:
        return np.cumsum([s[-1] for s in fn.output_shapes]).tolist()

    def propagate(self, ctx, fn) -> None:
        layout = ctx.layout(fn.inputs[0])
        if self._on_channels(fn):
            layout = ctx.split_at(layout, self._bounds(fn))
        start = 0
        for t, end in zip(fn.outputs, self._bounds(fn)):
            if self._on_channels(fn):
                ctx.set(t, type(layout)(layout.gid[start:end], layout.ch[start:end]))
                start = end
            else:
                ctx.set(t, layout)

    def cut(self, layer, fn, in_keep, out_keep):
        if not self._on_channels(fn):
            return None
        counts = [int(np.sum(np.asarray(in_keep) < b)) for b in self._bounds(fn)]
        if any(b <= a for a, b in zip([0, *counts], counts)):
            raise UnsupportedLayerError(
                f"Split {fn.path!r} would give an empty part: keep at least one channel in "
                f"each of its {len(counts)} parts. Received: kept counts up to each part "
                f"end={counts}"
            )
        config = layer.get_config()
        config["indices_or_sections"] = counts[:-1]
        return config, None


class ReshapeOpRule(FlattenRule):
    """``ops.reshape`` keeping the channel axis last or flattening (h, w, c): as the Reshape
    layer, with the new shape's last entry (when not -1) set to the kept width."""

    def subset(self, fn):
        return masked("the reshape's new shape holds the full channel count")

    def cut(self, layer, fn, in_keep, out_keep):
        shape = list(layer.get_config()["newshape"])
        if shape[-1] == -1:
            return None
        shape[-1] = len(out_keep)
        return {**layer.get_config(), "newshape": tuple(shape)}, None
