"""Named exceptions of tfchannelprune."""


class UnsupportedLayerError(ValueError):
    """A layer whose channels cannot be removed was asked to lose channels.

    The graph never prunes such a layer silently: its channels are marked unprunable with the
    reason, and asking to prune them raises this error.
    """


class UnsupportedModelError(TypeError):
    """The model cannot be analysed at all (for example a subclassed model)."""


class NonFiniteInputError(ValueError):
    """Data given to tfchannelprune holds NaN or infinite values where they would make the
    answer wrong (dead-channel statistics, calibration data, representative data, parity
    samples), or a model computed them from finite data.

    The message names the input and how many values are not finite. Clean the data (or fix
    the model's weights) and call again: nothing was changed.
    """


class TargetNotReachedWarning(UserWarning):
    """``ChannelPruning`` ended with ``fit`` before its target was reached."""
