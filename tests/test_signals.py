"""The signal taxonomy: ids, presets, errors, and each base against a NumPy computation."""

import warnings

import keras
import numpy as np
import pytest
import zoo

import tfchannelprune as tcp
from tfchannelprune.saliency import signals, taxonomy
from tfchannelprune.saliency.collect import SaliencyAccumulator, collect_saliency

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


data_for = zoo.labelled_data


@pytest.fixture(scope="module")
def plain():
    keras.utils.set_random_seed(5)
    gated = tcp.wrap(zoo.randomize(zoo.plain_cnn(), seed=5))
    return gated, data_for(gated)


# ---------------------------------------------------------------------- ids and presets
def test_enumerate_lists_hundreds_of_unique_round_tripping_signals():
    found = signals.enumerate()
    assert 300 <= len(found) < 1000
    ids = [s.id for s in found]
    assert len(set(ids)) == len(ids)
    for s in found:
        assert signals.get(s.id) == s
        assert signals.Signal.from_config(s.get_config()) == s
        if s.scaling in taxonomy.COST_SCALINGS:
            assert s.nonnegative
    bases = {s.base for s in found}
    assert bases == set(taxonomy.BASES)
    assert {s.scaling for s in found} == set(taxonomy.SCALINGS)
    # every preset except fisher's 1/2 factor is itself an enumerated combination
    for name, sid in signals.PRESETS.items():
        assert (sid in ids) == (name not in ("fisher", "fisher_gate")), name


def test_presets_resolve_to_their_ids():
    assert signals.get("taylor").id == "mask_delta|abs,mean_n|none"
    assert signals.get("taylor_gate").id == "zero_delta|mean_hw,abs,mean_n|none"
    assert signals.get("fisher").parsed.factor == 0.5
    assert signals.get("apoz").parsed.pointwise == "nonzero"
    assert signals.get(" l1_weight ") == signals.get("weight|abs,sum_all|none")
    sig = signals.get("mrs")
    assert signals.get(sig) is sig
    config = signals.get("random").get_config()
    assert signals.get({**config, "seed": 3}).id == "random|seed=3|none"


@pytest.mark.parametrize(
    "bad, message",
    [
        ("taylr", r"Unknown signal 'taylr'.*Did you mean 'taylor'"),
        ("nonsense", r"Unknown signal 'nonsense'.*Received: signal='nonsense'"),
        ("pixels|mean_nhw|none", r"Unknown signal base 'pixels'"),
        ("activation|mean_nhw|cost", r"Unknown scaling 'cost'"),
        ("activation|mean_k|none", r"needs its stages to reduce over"),
        ("activation|median_nhw|none", r"unknown token 'median_nhw'"),
        ("activation|mean_hw,nonzero,mean_n|none", r"'nonzero' is elementwise"),
        ("activation|abs,mean_nhw,square|none", r"at most one pointwise op"),
        ("zero_delta|mean_hw,mean_n|macs", r"only ranks correctly a signal that is never"),
        ("weight|x2,sum_all|none", r"must come last"),
        ("random|mean_nhw|none", r"random\|seed=0\|none"),
    ],
)
def test_bad_signals_are_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        signals.get(bad)


def test_non_string_signal_is_a_type_error():
    with pytest.raises(TypeError, match="Received: signal of type int"):
        signals.get(3)


# ---------------------------------------------------------------------- static bases
def kernel(model, name):
    return [layer for layer in zoo.leaf_layers(model) if layer.name == name][0].kernel.numpy()


def test_weight_presets_equal_numpy_and_sum_coupled_producers():
    gated = tcp.wrap(zoo.randomize(zoo.resnet_style(), seed=1))
    graph = tcp.ChannelGraph(gated)
    scores = collect_saliency(gated, None, signals=["l1_weight", "l2_weight", "min_weight"])
    for group in graph.prunable_groups:
        l1 = sum(np.abs(kernel(gated, p)).sum(axis=(0, 1, 2)) for p in group.producers)
        l2 = sum(np.sqrt(np.square(kernel(gated, p)).sum(axis=(0, 1, 2))) for p in group.producers)
        mw = sum(np.square(kernel(gated, p)).mean(axis=(0, 1, 2)) for p in group.producers)
        np.testing.assert_allclose(scores["l1_weight"][group.name], l1, rtol=1e-6)
        np.testing.assert_allclose(scores["l2_weight"][group.name], l2, rtol=1e-6)
        np.testing.assert_allclose(scores["min_weight"][group.name], mw, rtol=1e-6)
    assert any(len(g.producers) > 1 for g in graph.prunable_groups)


def test_consumer_weight_sums_positions_after_flatten():
    gated = tcp.wrap(zoo.randomize(zoo.flatten_dense(), seed=2))
    graph = tcp.ChannelGraph(gated)
    scores = collect_saliency(gated, None, None, signal="consumer_weight|abs,sum_all|none")
    dense = [layer for layer in gated.layers if isinstance(layer, keras.layers.Dense)][0]
    group = [g for g in graph.prunable_groups if dense.name in g.consumers][0]  # conv, Flatten
    w = dense.kernel.numpy()  # rows p * C + c after Flatten
    expected = np.abs(w).sum(axis=1).reshape(-1, group.size).sum(axis=0)
    np.testing.assert_allclose(scores[group.name], expected, rtol=1e-6)


def test_bn_scale_and_missing_groups_warn(plain):
    gated, _ = plain
    with pytest.warns(UserWarning, match="no value for groups"):
        scores = collect_saliency(gated, None, None, signal="bn_scale")
    bns = [layer for layer in zoo.leaf_layers(gated) if isinstance(layer, keras.layers.BatchNormalization)]  # fmt: skip
    assert len(scores) == len(bns) == 2  # the hidden Dense group has no BatchNorm
    for values, bn in zip(scores.values(), bns, strict=True):
        np.testing.assert_allclose(values, np.abs(bn.gamma.numpy()), rtol=1e-6)


def test_scalings(plain):
    gated, _ = plain
    ids = ["weight|abs,sum_all|" + s for s in taxonomy.SCALINGS]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = collect_saliency(gated, None, signals=ids)
    raw = out[ids[0]]
    macs = tcp.marginal_macs(gated)
    params = tcp.count_params(gated)
    for group, s in raw.items():
        np.testing.assert_allclose(out[ids[1]][group], s / np.linalg.norm(s))
        np.testing.assert_allclose(out[ids[2]][group], s / s.max())
        np.testing.assert_allclose(out[ids[3]][group], s / macs[group])
        size = len(s)
        fewer = params - tcp.count_params(gated, plan={group: list(range(size - 1))})
        np.testing.assert_allclose(out[ids[4]][group], s / fewer)
        assert fewer > 0


def test_random_is_seeded(plain):
    gated, _ = plain
    a = collect_saliency(gated, None, None, signal="random")
    b = collect_saliency(gated, None, None, signal="random|seed=0|none")
    c = collect_saliency(gated, None, None, signal="random|seed=1|none")
    for g in a:
        assert np.array_equal(a[g], b[g]) and not np.array_equal(a[g], c[g])
        assert np.all((a[g] >= 0) & (a[g] < 1))


# ---------------------------------------------------------------------- data bases
def gate_inputs(gated, x):
    """The gate inputs of a (flat) wrapped model, from a sub-model, without the hooks."""
    gates = [layer for layer in gated.layers if isinstance(layer, tcp.ChannelGate)]
    probe = keras.Model(gated.inputs[0], [g.input for g in gates])
    outs = probe(x, training=False)
    return {g.name: np.asarray(o, np.float64) for g, o in zip(gates, outs, strict=True)}


def group_sum(gated, per_gate):
    graph = tcp.ChannelGraph(gated)
    out = {g.name: np.zeros(g.size) for g in graph.prunable_groups}
    for path, values in per_gate.items():
        for p, (group, ch) in enumerate(graph.gate_layout(path)):
            if group in out:
                out[group][ch] += values[p]
    return out


ACTIVATION_FORMULAS = {
    "mean_activation": lambda a: a.mean(axis=(0, 1)),
    "activation_std": lambda a: a.std(axis=(0, 1)),
    "apoz": lambda a: 1.0 - (a == 0).mean(axis=(0, 1)),
    "activation|mean_n,square,mean_hw|none": lambda a: np.square(a.mean(axis=0)).mean(axis=0),
    "activation|max_hw,mean_n,abs|weights": None,  # only checked for shape and finiteness
    "activation|abs,sum_hw,var_n|l2_group": None,
}


def test_activation_signals_equal_numpy(plain):
    gated, (x, y) = plain
    result = collect_saliency(gated, (x, y), loss=LOSS, signals=list(ACTIVATION_FORMULAS),
                              batch_size=6)
    acts = {k: v.reshape(len(x), -1, v.shape[-1]) for k, v in gate_inputs(gated, x).items()}
    for name, formula in ACTIVATION_FORMULAS.items():
        for group, values in result[name].items():
            assert np.all(np.isfinite(values)), (name, group)
        if formula is not None:
            expected = group_sum(gated, {k: formula(a) for k, a in acts.items()})
            for group, values in expected.items():
                np.testing.assert_allclose(result[name][group], values, rtol=1e-5, atol=1e-9)
    apoz = result["apoz"]
    assert any(np.any(v < 1) for v in apoz.values())  # some zeros after the ReLUs


def test_weight_delta_equals_weight_times_mean_gradient(plain):
    import tensorflow as tf

    gated, (x, y) = plain
    conv = [layer for layer in gated.layers if isinstance(layer, keras.layers.Conv2D)][0]
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(LOSS.call(y, gated(x, training=False)))
    grad = tape.gradient(loss, conv.kernel.value).numpy() / len(y)
    expected = np.abs(-conv.kernel.numpy() * grad).sum(axis=(0, 1, 2))
    out = collect_saliency(gated, (x, y), LOSS, signal="weight_delta|abs,sum_all|none")
    np.testing.assert_allclose(out[conv.name], expected, rtol=1e-5, atol=1e-12)


def test_mean_delta_uses_the_data_mean(plain):
    gated, (x, y) = plain
    acc = SaliencyAccumulator(gated, ["mrs", "rs", "gradient|sum_hw,mean_n|none"], LOSS)
    acc.update_means(x)
    acc.update(x, y)
    out = acc.result()
    means = {k: v.reshape(len(x), -1, v.shape[-1]).mean(axis=(0, 1)) for k, v in
             gate_inputs(gated, x).items()}  # fmt: skip
    hw = {k: v[0].size // v.shape[-1] for k, v in gate_inputs(gated, x).items()}
    # mrs = mean_n mean_hw((abar - a) g) = abar * mean_n mean_hw(g) + rs
    graph = tcp.ChannelGraph(gated)
    for gate in means:  # plain_cnn: one gate per group, so the identity holds per group
        group = graph.gate_layout(gate)[0][0]
        expected = (
            means[gate] * out["gradient|sum_hw,mean_n|none"][group] / hw[gate] + out["rs"][group]
        )
        np.testing.assert_allclose(out["mrs"][group], expected, rtol=1e-4, atol=1e-10)


def test_a_sample_of_enumerated_signals_computes(plain):
    gated, (x, y) = plain
    sample = signals.enumerate()[::7]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bn_scale has no value for the Dense group
        out = collect_saliency(gated, (x, y), loss=LOSS, signals=sample, batch_size=8)
    graph = tcp.ChannelGraph(gated)
    sizes = {g.name: g.size for g in graph.prunable_groups}
    assert len(out) == len(sample)
    for key, scores in out.items():
        for group, values in scores.items():
            assert values.shape == (sizes[group],) and np.all(np.isfinite(values)), key


def test_consumer_weight_delta_equals_activation_delta(plain):
    """sum over a consumer's input slice of (0 - W) dL/dW = sum_{n,hw} (0 - a) g / N: the
    weight-gradient path and the activation-gradient path agree (through pooling, the
    global average pooling and the Dense layers of plain_cnn)."""
    gated, (x, y) = plain
    out = collect_saliency(gated, (x, y), loss=LOSS,
                           signals=["consumer_weight_delta|sum_all|none",
                                    "zero_delta|sum_hw,mean_n|none"])  # fmt: skip
    via_weights, via_activations = out.values()
    for group in via_weights:
        np.testing.assert_allclose(via_weights[group], via_activations[group], rtol=1e-4,
                                   atol=1e-7)  # fmt: skip
