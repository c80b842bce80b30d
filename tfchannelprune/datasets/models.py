"""Small reference CNNs used by the demo, the benchmarks and the examples."""

from __future__ import annotations

import keras

L = keras.layers


def _bn():
    # momentum 0.9: the moving statistics converge within the few hundred steps of a demo
    return L.BatchNormalization(momentum=0.9)


def small_cnn(input_shape=(28, 28, 1), classes=10, width=32) -> keras.Model:
    """Four 3x3 conv/BN/ReLU layers in two stages, global pooling, a hidden Dense."""
    inp = keras.Input(input_shape)
    x = inp
    for filters in (width, 2 * width):
        for _ in range(2):
            x = L.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = L.ReLU()(_bn()(x))
        x = L.MaxPooling2D()(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(2 * width, activation="relu")(x)
    return keras.Model(inp, L.Dense(classes)(x), name="small_cnn")


def resnet_cnn(input_shape=(28, 28, 1), classes=10, width=32) -> keras.Model:
    """A stem and three residual blocks (identity and projection shortcuts)."""
    inp = keras.Input(input_shape)
    x = L.ReLU()(_bn()(L.Conv2D(width, 3, padding="same", use_bias=False)(inp)))
    for filters, strides in ((width, 1), (2 * width, 2), (2 * width, 1)):
        y = L.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
        y = L.ReLU()(_bn()(y))
        y = _bn()(L.Conv2D(filters, 3, padding="same", use_bias=False)(y))
        if strides != 1 or x.shape[-1] != filters:
            x = _bn()(L.Conv2D(filters, 1, strides=strides, use_bias=False)(x))
        x = L.ReLU()(L.Add()([x, y]))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(classes)(x), name="resnet_cnn")


def compile_classifier(model, learning_rate=1e-3) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model
