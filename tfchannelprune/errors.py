"""Named exceptions of tfchannelprune."""


class UnsupportedLayerError(ValueError):
    """A layer whose channels cannot be removed was asked to lose channels.

    The graph never prunes such a layer silently: its channels are marked unprunable with the
    reason, and asking to prune them raises this error.
    """


class UnsupportedModelError(TypeError):
    """The model cannot be analysed at all (for example a subclassed model)."""
