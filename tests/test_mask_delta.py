"""Exact coupled-group derivatives: "taylor" and "fisher" against an independent reference.

The reference builds the same network from the same layer objects with ONE explicit mask
variable per channel group, multiplied in at every producer's output (after BatchNorm and
activation, before pooling), and takes batch-1 gradients of each example's own loss with
respect to those masks. It shares no code with the library's accumulation.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers as L

import tfchannelprune as tcp
from tfchannelprune.saliency.collect import collect_saliency

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# The groups along each gate wrap() puts into these two networks (checked by the test): the
# reference puts its masks at the same places, so that a mask at 0 removes the channel.
GATES = {
    "residual": [["c0"], ["c1"], ["c0"], ["c3"]],
    "concat": [["ca"], ["ca", "cb", "ca"], ["cd", "ce"]],
}


def gate_groups(graph):
    runs = []
    for path in graph.gate_paths:
        names = [n for n, _ in graph.gate_layout(path)]
        runs.append([n for i, n in enumerate(names) if i == 0 or names[i - 1] != n])
    return runs


def masked(t, m, groups):
    """``t`` times one shared mask per channel: ``groups`` lists the groups along the axis."""
    return t if m is None else t * tf.concat([m[g] for g in groups], axis=0)


def residual_net():
    """Group "c0" = c0 + c2 through a residual add, read before c1 and, max-pooled, before
    c3: two gates in series on the same channels."""
    keras.utils.set_random_seed(11)
    lay = {
        "c0": L.Conv2D(6, 3, padding="same", name="c0"), "b0": L.BatchNormalization(),
        "c1": L.Conv2D(5, 3, padding="same", name="c1"), "b1": L.BatchNormalization(),
        "c2": L.Conv2D(6, 3, padding="same", name="c2"), "b2": L.BatchNormalization(),
        "c3": L.Conv2D(4, 3, padding="same", name="c3"), "pool": L.MaxPooling2D(),
        "gap": L.GlobalAveragePooling2D(), "out": L.Dense(3, name="out"),
    }  # fmt: skip
    relu = keras.ops.relu

    def forward(x, m=None, training=False):
        a0 = masked(relu(lay["b0"](lay["c0"](x), training=training)), m, ["c0"])
        a1 = masked(relu(lay["b1"](lay["c1"](a0), training=training)), m, ["c1"])
        s = relu(a0 + lay["b2"](lay["c2"](a1), training=training))
        p = masked(lay["pool"](s), m, ["c0"])
        feats = masked(lay["gap"](relu(lay["c3"](p))), m, ["c3"])
        return lay["out"](feats)

    inp = keras.Input((8, 8, 3))
    a0 = relu(lay["b0"](lay["c0"](inp)))
    s = relu(a0 + lay["b2"](lay["c2"](relu(lay["b1"](lay["c1"](a0))))))
    out = lay["out"](lay["gap"](relu(lay["c3"](lay["pool"](s)))))
    return keras.Model(inp, out), forward, {"c0": 6, "c1": 5, "c3": 4}


def concat_net():
    """Group "ca" is read at full resolution by ce and twice in one concatenation, average-
    pooled, by cd: three positions on two gates."""
    keras.utils.set_random_seed(12)
    lay = {
        "ca": L.Conv2D(5, 3, padding="same", name="ca"), "ba": L.BatchNormalization(),
        "cb": L.Conv2D(4, 3, padding="same", name="cb"), "bb": L.BatchNormalization(),
        "cd": L.Conv2D(6, 1, name="cd"), "ce": L.Conv2D(3, 3, padding="same", name="ce"),
        "pool": L.AveragePooling2D(2), "gap1": L.GlobalAveragePooling2D(),
        "gap2": L.GlobalAveragePooling2D(), "out": L.Dense(3, name="out"),
    }  # fmt: skip
    relu = keras.ops.relu

    def build(x, m, training, concat):
        a = masked(relu(lay["ba"](lay["ca"](x), training=training)), m, ["ca"])
        b = relu(lay["bb"](lay["cb"](x), training=training))
        p = masked(lay["pool"](concat([a, b, a])), m, ["ca", "cb", "ca"])
        d, e = relu(lay["cd"](p)), relu(lay["ce"](a))
        feats = masked(concat([lay["gap1"](d), lay["gap2"](e)]), m, ["cd", "ce"])
        return lay["out"](feats)

    def forward(x, m=None, training=False):
        return build(x, m, training, lambda ts: tf.concat(ts, axis=-1))

    inp = keras.Input((8, 8, 3))
    out = build(inp, None, None, lambda ts: L.Concatenate()(ts))
    return keras.Model(inp, out), forward, {"ca": 5, "cb": 4, "cd": 6, "ce": 3}


def reference(forward, sizes, x, y):
    """Per example n, d_n = dl_n/dm at m = 1; returns (taylor, fisher) per group."""
    masks = {g: tf.Variable(tf.ones(n)) for g, n in sizes.items()}

    @tf.function
    def grads(xi, yi):
        with tf.GradientTape() as tape:
            loss = LOSS(yi, forward(xi, masks))
        return tape.gradient(loss, masks)

    d = {g: [] for g in sizes}
    for i in range(len(y)):
        g = grads(x[i : i + 1], y[i : i + 1])
        for name in sizes:
            d[name].append(g[name].numpy().astype(np.float64))
    d = {k: np.stack(v) for k, v in d.items()}
    taylor = {k: np.mean(np.abs(v), axis=0) for k, v in d.items()}
    fisher = {k: np.mean(np.square(v), axis=0) / 2 for k, v in d.items()}
    return taylor, fisher


def data(n=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 3)).astype("float32"), rng.integers(0, 3, n)


@pytest.mark.parametrize("name, net", [("residual", residual_net), ("concat", concat_net)])
def test_taylor_fisher_are_derivatives_of_one_shared_mask(name, net):
    model, forward, sizes = net()
    x, y = data()
    # the functional model and the reference forward share their layers and outputs
    np.testing.assert_allclose(model(x[:2]), forward(x[:2]), atol=1e-5)
    gated = tcp.wrap(model)
    graph = tcp.ChannelGraph(gated)
    assert gate_groups(graph) == GATES[name]
    assert {g.name for g in graph.prunable_groups} == set(sizes)
    coupled = [g for g in sizes if len(graph.group(g).gates) > 1]
    assert coupled  # the test exercises a channel read at several places
    ref_taylor, ref_fisher = reference(forward, sizes, x, y)
    got = collect_saliency(gated, (x, y), LOSS, ["taylor", "fisher"], batch_size=4)
    for g in sizes:
        np.testing.assert_allclose(got["taylor"][g], ref_taylor[g], rtol=1e-4, atol=1e-9,
                                   err_msg=g)  # fmt: skip
        np.testing.assert_allclose(got["fisher"][g], ref_fisher[g], rtol=1e-4, atol=1e-12,
                                   err_msg=g)  # fmt: skip
    # the formulas before: abs / square per gate (and per position), then summed
    old = collect_saliency(gated, (x, y), LOSS, ["zero_delta|sum_hw,abs,mean_n|none",
                                                 "fisher_gate"], batch_size=4)  # fmt: skip
    for g in coupled:
        t_old = old["zero_delta|sum_hw,abs,mean_n|none"][g]
        assert np.max(np.abs(t_old - ref_taylor[g]) / ref_taylor[g]) > 1e-2, g
        f_old = old["fisher_gate"][g]
        assert np.max(np.abs(f_old - ref_fisher[g]) / ref_fisher[g]) > 1e-2, g


def test_signed_and_l2_mask_plans_from_the_same_sums():
    model, forward, sizes = residual_net()
    x, y = data(6, seed=1)
    gated = tcp.wrap(model)
    ids = ["mask_delta|mean_n|none", "mask_delta|l2_n|none", "mask_delta|abs,std_n|none"]
    got = collect_saliency(gated, (x, y), LOSS, ids, batch_size=3)
    masks = {g: tf.Variable(tf.ones(n)) for g, n in sizes.items()}
    d = {g: [] for g in sizes}
    for i in range(len(y)):
        with tf.GradientTape() as tape:
            loss = LOSS(y[i : i + 1], forward(x[i : i + 1], masks))
        for g, v in tape.gradient(loss, masks).items():
            d[g].append(-v.numpy().astype(np.float64))  # d = -dl/dm: the loss change
    for g in sizes:
        v = np.stack(d[g])
        np.testing.assert_allclose(got[ids[0]][g], v.mean(0), rtol=1e-4, atol=1e-9)
        np.testing.assert_allclose(got[ids[1]][g], np.sqrt((v**2).sum(0)), rtol=1e-4)
        np.testing.assert_allclose(got[ids[2]][g], np.abs(v).std(0), rtol=1e-3, atol=1e-9)


def test_mask_plans_that_sums_cannot_give_are_refused():
    with pytest.raises(ValueError, match="mask_delta signals reduce examples"):
        tcp.SaliencyAccumulator(tcp.wrap(residual_net()[0]), "mask_delta|max_n|none", LOSS)
