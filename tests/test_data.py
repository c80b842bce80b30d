"""Bundled MNIST subset and the tfds path (mocked: never the network)."""

import os
import sys

import numpy as np
import pytest

from tfchannelprune.datasets.digits import load_mnist_subset, load_tfds


@pytest.fixture
def tfds():
    """tensorflow-datasets is in the [test] extra: its absence is an error, not a skip (and
    only the tests that mock it need it)."""
    import tensorflow_datasets

    return tensorflow_datasets


def test_mnist_subset_is_real_and_shuffled():
    x_train, y_train, x_test, y_test = load_mnist_subset(seed=0)
    assert x_train.shape == (4000, 28, 28, 1) and x_test.shape == (1000, 28, 28, 1)
    assert 0.0 <= x_train.min() and x_train.max() == 1.0
    assert set(np.unique(y_train)) == set(range(10))
    assert len(np.unique(y_train[:50])) > 5  # shuffled, not sorted by class
    assert not np.array_equal(load_mnist_subset(seed=1)[1], y_train)


@pytest.mark.parametrize("name", ["mnist", "cifar10", "oxford_flowers102", "caltech_birds2011"])
def test_load_tfds_mocked(name, tfds):
    with tfds.testing.mock_data(num_examples=12):
        (x_train, y_train), (x_test, y_test) = load_tfds(name, image_size=16)
    assert x_train.shape[1:] == (16, 16, x_train.shape[-1]) and len(x_train) == len(y_train)
    assert x_train.dtype == np.float32 and 0 <= x_train.min() and x_train.max() <= 1
    assert len(x_test) > 0 and y_test.dtype == np.int64


def test_demo_runs_on_a_mocked_tfds_dataset(tmp_path, tfds):
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
    import demo

    with tfds.testing.mock_data(num_examples=48):
        rows = demo.main(["--dataset", "cifar10", "--image-size", "16", "--epochs", "1",
                          "--fine-tune-epochs", "2", "--models", "small_cnn",
                          "--signals", "taylor", "--out", str(tmp_path)])  # fmt: skip
    names = [r["model"] for r in rows]
    assert names == ["small_cnn", "small_cnn_taylor_50", "small_cnn_taylor_25"]
    assert rows[2]["macs"] <= 0.25 * rows[0]["macs"]
    assert (tmp_path / "accuracy_vs_macs.png").exists()
    assert (tmp_path / "small_cnn_taylor_25.tflite").exists()
