"""prune(): rounds of score -> remove -> compact -> fine-tune, no callback needed.

The model really shrinks between rounds, so each fine-tuning round is faster than the last.

Usage: python examples/prune_loop.py [--target 0.3] [--rounds 3]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import tfchannelprune as tcp  # noqa: E402
from tfchannelprune.datasets.digits import load_mnist_subset  # noqa: E402
from tfchannelprune.datasets.models import compile_classifier, resnet_cnn  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", type=float, default=0.3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--signal", default="fisher")
    args = parser.parse_args(argv)
    x_train, y_train, x_test, y_test = load_mnist_subset()
    model = compile_classifier(resnet_cnn())
    model.fit(x_train, y_train, epochs=3, batch_size=64, verbose=0)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    result = tcp.prune(
        model, (x_train[:512], y_train[:512]), loss=loss, target_macs=args.target,
        rounds=args.rounds, signal=args.signal, fine_tune_data=(x_train, y_train),
        fine_tune_epochs=1, optimizer=keras.optimizers.Adam(5e-4), metrics=["accuracy"],
        validation_data=(x_test, y_test), beta="auto",  # Theis: saliency per MAC saved
    )  # fmt: skip
    print(f"MACs {tcp.count_macs(model):,} -> {tcp.count_macs(result.model):,}")
    return result


if __name__ == "__main__":
    main()
