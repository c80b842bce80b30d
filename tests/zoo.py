"""A small model zoo covering every layer rule, for the gated == compact invariant."""

from __future__ import annotations

import keras
import numpy as np
from keras import layers as L
from keras import ops

from tfchannelprune.core.gate import leaf_layers


def conv_bn_relu(x, filters, kernel=3, strides=1):
    x = L.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    return L.ReLU()(x)


def plain_cnn(input_shape=(16, 16, 3)):
    inp = keras.Input(input_shape)
    x = conv_bn_relu(inp, 8)
    x = L.MaxPooling2D()(x)
    x = conv_bn_relu(x, 12)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(10, activation="relu")(x)
    x = L.Dropout(0.2)(x)
    return keras.Model(inp, L.Dense(4)(x), name="plain_cnn")


def resnet_style(input_shape=(16, 16, 3)):
    inp = keras.Input(input_shape)
    x = conv_bn_relu(inp, 8)
    for filters, strides in [(8, 1), (16, 2)]:
        y = conv_bn_relu(x, filters, strides=strides)
        y = L.Conv2D(filters, 3, padding="same")(y)
        y = L.BatchNormalization()(y)
        if strides != 1 or x.shape[-1] != filters:  # projection shortcut
            x = L.Conv2D(filters, 1, strides=strides)(x)
            x = L.BatchNormalization()(x)
        x = L.ReLU()(L.Add()([x, y]))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(5)(x), name="resnet_style")


def densenet_style(input_shape=(16, 16, 3)):
    inp = keras.Input(input_shape)
    x = L.Conv2D(8, 3, padding="same")(inp)
    for _ in range(3):
        y = L.BatchNormalization()(x)
        y = L.ReLU()(y)
        y = L.Conv2D(4, 3, padding="same")(y)
        x = L.Concatenate()([x, y])
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.Conv2D(6, 1)(x)  # transition
    x = L.AveragePooling2D(2)(x)
    x = L.GlobalMaxPooling2D()(x)
    return keras.Model(inp, L.Dense(3)(x), name="densenet_style")


def mobilenetv2_style(input_shape=(16, 16, 3)):
    inp = keras.Input(input_shape)
    x = L.Conv2D(8, 3, strides=2, padding="same")(inp)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    for expand, out, strides in [(16, 8, 1), (24, 12, 2), (24, 12, 1)]:
        y = L.Conv2D(expand, 1, use_bias=False)(x)
        y = L.BatchNormalization()(y)
        y = L.ReLU(6.0)(y)
        y = L.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False)(y)
        y = L.BatchNormalization()(y)
        y = L.ReLU(6.0)(y)
        y = L.Conv2D(out, 1, use_bias=False)(y)
        y = L.BatchNormalization()(y)
        x = L.Add()([x, y]) if strides == 1 and x.shape[-1] == out else y
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(4)(x), name="mobilenetv2_style")


def separable_blocks(input_shape=(16, 16, 3)):
    inp = keras.Input(input_shape)
    x = conv_bn_relu(inp, 8)
    y = L.SeparableConv2D(12, 3, padding="same", depth_multiplier=2)(x)
    y = L.BatchNormalization()(y)
    y = L.Activation("relu")(y)
    y = L.SeparableConv2D(12, 3, padding="same")(y)
    y = L.BatchNormalization()(y)
    shortcut = L.BatchNormalization()(L.Conv2D(12, 1)(x))
    x = L.Add()([y, shortcut])
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(3)(x), name="separable_blocks")


def squeeze_excitation(input_shape=(16, 16, 3)):
    inp = keras.Input(input_shape)
    x = conv_bn_relu(inp, 12)
    s = L.GlobalAveragePooling2D(keepdims=True)(x)
    s = L.Conv2D(4, 1, activation="relu")(s)
    s = L.Conv2D(12, 1, activation="sigmoid")(s)
    x = L.Multiply()([x, s])
    x = conv_bn_relu(x, 8)
    # a second SE written with keras.ops and a Dense squeeze
    s = L.GlobalAveragePooling2D()(x)
    s = L.Dense(3, activation="swish")(s)
    s = L.Dense(8, activation="hard_sigmoid")(s)
    s = L.Reshape((1, 1, 8))(s)
    x = x * s
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(3)(x), name="squeeze_excitation")


def conv1d_model(input_shape=(32, 4)):
    inp = keras.Input(input_shape)
    x = L.Conv1D(8, 5, padding="same")(inp)
    x = L.BatchNormalization()(x)
    x = L.LeakyReLU(0.1)(x)
    x = L.MaxPooling1D()(x)
    x = L.SeparableConv1D(10, 3, padding="same")(x)
    x = L.ELU()(x)
    x = L.DepthwiseConv1D(3, padding="same", depth_multiplier=2)(x)
    x = L.UpSampling1D()(x)
    x = L.Conv1D(6, 3)(x)
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, L.Dense(2)(x), name="conv1d_model")


def flatten_dense(input_shape=(12, 12, 2)):
    inp = keras.Input(input_shape)
    x = conv_bn_relu(inp, 6)
    x = L.MaxPooling2D()(x)
    x = L.Conv2D(5, 3)(x)
    x = L.PReLU(shared_axes=[1, 2])(x)
    x = L.Flatten()(x)
    x = L.Dense(16, activation="tanh")(x)
    x = L.Dense(8)(x)
    x = L.BatchNormalization()(x)
    x = L.Activation("relu")(x)
    return keras.Model(inp, L.Dense(3)(x), name="flatten_dense")


def nested_functional(input_shape=(16, 16, 3)):
    inner_in = keras.Input((16, 16, 3))
    y = conv_bn_relu(inner_in, 8)
    y = conv_bn_relu(y, 10)
    backbone = keras.Model(inner_in, y, name="backbone")
    head_in = keras.Input((8, 8, 10))
    h = L.Conv2D(6, 3, padding="same", activation="relu")(head_in)
    inp = keras.Input(input_shape)
    x = backbone(inp)
    x = L.MaxPooling2D()(x)
    seq = keras.Sequential(
        [keras.Input((8, 8, 10)), L.Conv2D(7, 3, padding="same"), L.BatchNormalization(),
         L.ReLU()],
        name="seq_block",
    )  # fmt: skip
    x = seq(x)
    x = keras.Model(head_in, h, name="head")(L.Conv2D(10, 1)(x))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(3)(x), name="nested_functional")


def sequential_model(input_shape=(12, 12, 1)):
    return keras.Sequential(
        [
            keras.Input(input_shape),
            L.Conv2D(6, 3, activation="relu"),
            L.BatchNormalization(),
            L.Conv2D(8, 3, activation="relu"),
            L.Flatten(),
            L.Dense(12, activation="relu"),
            L.Dense(3),
        ],
        name="sequential_model",
    )


def ops_model(input_shape=(16, 16, 3)):
    """Functional graph written with keras.ops on symbolic tensors."""
    inp = keras.Input(input_shape)
    a = L.Conv2D(8, 3, padding="same")(inp)
    b = L.Conv2D(8, 1)(inp)
    x = ops.relu(a + b)
    x = ops.concatenate([x, L.Conv2D(4, 1)(x)], axis=-1)
    x = L.Conv2D(6, 3, padding="same")(x * 0.5)
    x = ops.maximum(x, L.Conv2D(6, 1)(x)) - L.Conv2D(6, 1)(inp)
    x = ops.sigmoid(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(2)(x), name="ops_model")


def layer_mix(input_shape=(16, 16, 3)):
    """Up/down sampling, padding, cropping, transpose conv, merges, norms, Rescaling."""
    inp = keras.Input(input_shape)
    x = L.Rescaling(1 / 255.0, offset=-0.5)(inp)
    x = L.Conv2D(8, 3, padding="same")(x)
    x = L.GroupNormalization(groups=8)(x)
    x = L.ReLU()(x)
    x = L.ZeroPadding2D(1)(x)
    x = L.Cropping2D(1)(x)
    a = L.Conv2D(8, 3, strides=2, padding="same", activation="elu")(x)
    b = L.Conv2D(8, 3, strides=2, padding="same")(x)
    x = L.Average()([a, b])
    x = L.Maximum()([x, L.Conv2D(8, 1)(x)])
    x = L.Minimum()([x, L.Conv2D(8, 1)(x)])
    x = L.Subtract()([x, L.Conv2D(8, 1)(x)])
    x = L.SpatialDropout2D(0.1)(x)
    x = L.Conv2DTranspose(6, 3, strides=2, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.UpSampling2D()(x)
    x = L.AveragePooling2D(4)(x)
    x = L.Conv2D(8, 1)(x)
    x = L.LayerNormalization()(x)  # normalises across channels: blocks its input group
    x = L.Conv2D(8, 1, groups=2)(x)  # grouped conv: unprunable around it
    x = L.Conv2D(5, 1)(x)
    x = L.Conv2D(5, 3, groups=5, padding="same")(x)  # one channel per group: channel-wise
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(2)(x), name="layer_mix")


def conv3d_model(input_shape=(6, 8, 8, 2)):
    inp = keras.Input(input_shape)
    x = L.Conv3D(6, 3, padding="same", activation="relu")(inp)
    x = L.MaxPooling3D()(x)
    x = L.Conv3DTranspose(5, 2, strides=2)(x)
    x = L.Conv3D(4, 1)(x)
    x = L.GlobalAveragePooling3D()(x)
    return keras.Model(inp, L.Dense(2)(x), name="conv3d_model")


def lambda_barrier(input_shape=(8, 8, 3)):
    inp = keras.Input(input_shape)
    x = L.Conv2D(6, 3, padding="same")(inp)
    y = L.Conv2D(6, 3, padding="same")(inp)
    x = L.Lambda(lambda t: t * 2.0, name="double")(x)
    x = L.Concatenate()([x, y])
    x = L.Conv2D(4, 1)(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(2)(x), name="lambda_barrier")


ZOO = {
    f.__name__: f
    for f in [
        plain_cnn, resnet_style, densenet_style, mobilenetv2_style, separable_blocks,
        squeeze_excitation, conv1d_model, flatten_dense, nested_functional, sequential_model,
        ops_model, layer_mix, conv3d_model, lambda_barrier,
    ]
}  # fmt: skip


def randomize(model, seed=0):
    """Non-trivial weights, biases and BatchNorm statistics, so no channel is a no-op."""
    rng = np.random.default_rng(seed)
    for layer in leaf_layers(model):
        if isinstance(layer, L.BatchNormalization):
            values = {
                "gamma": rng.uniform(0.5, 1.5, layer.gamma.shape) if layer.scale else None,
                "beta": rng.normal(0, 0.5, layer.beta.shape) if layer.center else None,
                "moving_mean": rng.normal(0, 0.5, layer.moving_mean.shape),
                "moving_variance": rng.uniform(0.5, 1.5, layer.moving_variance.shape),
            }
            for v in layer.weights:
                if values.get(v.name) is not None:
                    v.assign(values[v.name].astype("float32"))
        else:
            for v in layer.weights:
                if v.name == "bias":
                    v.assign(rng.normal(0, 0.2, v.shape).astype("float32"))
                elif v.name == "gamma" or type(layer).__name__ == "LayerScale":
                    # LayerNorm scale; ConvNeXt's LayerScale starts at 1e-6
                    v.assign(rng.uniform(0.5, 1.5, v.shape).astype("float32"))
    return model


def labelled_data(model, n=16, seed=0):
    """Random inputs for ``model`` and integer labels over its output units."""
    x = sample_input(model, batch=n, seed=seed)
    y = np.random.default_rng(seed).integers(0, model.outputs[0].shape[-1], n)
    return x, y


def tiny_digits(n=96, seed=0):
    """(n, 8, 8, 1) inputs whose mean encodes one of 3 labels: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 8, 8, 1)).astype("float32") + y[:, None, None, None]
    return x, y


def sample_input(model, batch=3, seed=1):
    rng = np.random.default_rng(seed)
    shapes = [tuple(t.shape[1:]) for t in model.inputs]
    xs = [rng.normal(size=(batch, *s)).astype("float32") for s in shapes]
    return xs[0] if len(xs) == 1 else xs


def random_plan(graph, seed=0, fraction=0.5):
    rng = np.random.default_rng(seed)
    plan = {}
    for g in graph.prunable_groups:
        k = max(1, int(round(g.size * fraction)))
        plan[g.name] = np.sort(rng.choice(g.size, k, replace=False)).tolist()
    return plan
