"""Prune during model.fit with the ChannelPruning callback (Molchanov's Taylor criterion).

Usage: python examples/callback.py [--target 0.5] [--signal taylor]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import tfchannelprune as tcp  # noqa: E402
from tfchannelprune.datasets.digits import load_mnist_subset  # noqa: E402
from tfchannelprune.datasets.models import compile_classifier, small_cnn  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", type=float, default=0.5, help="fraction of MACs to keep")
    parser.add_argument("--signal", default="taylor")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args(argv)
    x_train, y_train, x_test, y_test = load_mnist_subset()
    model = compile_classifier(small_cnn())
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
    print("dense accuracy", model.evaluate(x_test, y_test, verbose=0)[1])

    gated = compile_classifier(tcp.wrap(model), learning_rate=5e-4)
    pruning = tcp.ChannelPruning(
        (x_train[:512], y_train[:512]),  # calibration batches for the signal
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        signal=args.signal,
        target_macs=args.target,
        schedule="polynomial",  # reach the target over 3 pruning events
        num_events=3,
        round_to=4,  # widths in multiples of 4
        monitor="val_accuracy",
    )
    gated.fit(x_train, y_train, epochs=5, batch_size=64, verbose=0,
              validation_data=(x_test, y_test), callbacks=[pruning])  # fmt: skip
    small = compile_classifier(tcp.compact(gated))
    print("pruned accuracy", small.evaluate(x_test, y_test, verbose=0)[1])
    print(f"MACs {tcp.count_macs(model):,} -> {tcp.count_macs(small):,}")
    return small


if __name__ == "__main__":
    main()
