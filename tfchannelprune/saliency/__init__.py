"""How important a channel is: Persand's taxonomy of signals and its presets, the reductions
they are made of, and the passes over data (GradientTape) that collect them.

Modules: ``taxonomy`` (the components and their combinations), ``signals`` (named presets and
weight-only signals), ``reductions`` (per-example loss and tensor reductions), ``accumulator``
(statistics gathered batch by batch), ``collect`` (``collect_saliency``).
"""
