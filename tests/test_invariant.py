"""The invariant: a gated model with channels switched off == its compacted model."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import zoo

import tfchannelprune as tcp
from tfchannelprune.core.gate import ChannelGate


def max_rel_diff(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(a)))))


def check_invariant(model, seed=0, fraction=0.5):
    zoo.randomize(model, seed)
    x = zoo.sample_input(model)
    gated = tcp.wrap(model)
    # all gates open: the wrapped model is the original
    assert max_rel_diff(model(x), gated(x)) <= 1e-6
    graph = tcp.ChannelGraph(gated)
    plan = zoo.random_plan(graph, seed, fraction)
    tcp.set_kept_channels(gated, plan, graph=graph)
    small = tcp.compact(gated, graph=graph)
    y_gated = gated(x)
    assert max_rel_diff(y_gated, small(x)) <= 1e-5
    assert not any(isinstance(layer, ChannelGate) for layer in zoo.leaf_layers(small))
    if plan:
        # the switched-off channels mattered, so the check above was not vacuous
        assert max_rel_diff(model(x), y_gated) > 1e-4
        assert small.count_params() < model.count_params()
        assert tcp.count_params(gated) == small.count_params()
        assert tcp.count_macs(gated) == tcp.count_macs(small)
    return gated, small, plan


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_gated_equals_compact(name):
    model = zoo.ZOO[name]()
    check_invariant(model)


@pytest.mark.parametrize("name", ["resnet_style", "densenet_style", "ops_model", "layer_mix"])
@pytest.mark.parametrize("fraction", [0.1, 0.9])
def test_gated_equals_compact_other_fractions(name, fraction):
    check_invariant(zoo.ZOO[name](), seed=3, fraction=fraction)


def test_group_names_stable_under_wrap():
    model = zoo.resnet_style()
    before = {(g.name, g.size, g.prunable) for g in tcp.ChannelGraph(model).groups}
    after = {(g.name, g.size, g.prunable) for g in tcp.ChannelGraph(tcp.wrap(model)).groups}
    assert before == after


def test_residual_groups_are_coupled():
    graph = tcp.ChannelGraph(zoo.resnet_style())
    coupled = [g for g in graph.prunable_groups if len(g.producers) > 1]
    # stem + identity block share one group; the projection block's two producers another
    assert len(coupled) == 2
    assert all(g.gates == () for g in graph.groups)  # not wrapped yet


def test_gates_after_batchnorm_and_activation():
    gated = tcp.wrap(zoo.plain_cnn())
    for layer in zoo.leaf_layers(gated):
        if isinstance(layer, ChannelGate):
            producer = layer._inbound_nodes[0].parent_nodes[0].operation
            assert not isinstance(producer, (keras.layers.Conv2D, keras.layers.BatchNormalization))


def test_lambda_is_traced_and_an_untraceable_one_is_a_barrier_with_reason():
    # keras.ops inside a Lambda are traced: its input channels are prunable
    graph = tcp.ChannelGraph(zoo.lambda_barrier())
    assert all(g.prunable for g in graph.groups if g.reason not in ("model input", "model output"))
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, name="feeds_lambda")(inp)
    x = keras.layers.Lambda(lambda t: tf.roll(t, 1, axis=-1), name="double")(x)
    graph = tcp.ChannelGraph(keras.Model(inp, keras.layers.Conv2D(2, 1)(x)))
    reason = graph.group("feeds_lambda").reason
    assert "Lambda" in reason and "double" in reason and "tf.roll" in reason


def test_layer_norm_blocks_channels_and_grouped_conv_does_not():
    graph = tcp.ChannelGraph(zoo.layer_mix())
    reasons = " ".join(g.reason for g in graph.groups)
    assert "LayerNormalization" in reasons
    assert "grouped convolution" not in reasons


def test_inputs_and_outputs_never_pruned():
    graph = tcp.ChannelGraph(zoo.plain_cnn())
    by_reason = {g.reason for g in graph.groups if not g.prunable}
    assert {"model input", "model output"} <= by_reason


def test_compact_from_plan_on_unwrapped_model():
    model = zoo.randomize(zoo.mobilenetv2_style())
    graph = tcp.ChannelGraph(model)
    plan = zoo.random_plan(graph, seed=5)
    small = tcp.compact(model, plan)
    gated = tcp.wrap(model)
    tcp.set_kept_channels(gated, plan)
    x = zoo.sample_input(model)
    assert max_rel_diff(gated(x), small(x)) <= 1e-5
    assert small.count_params() < model.count_params()


def test_compact_model_trains():
    model = zoo.resnet_style()
    small = tcp.compact(model, zoo.random_plan(tcp.ChannelGraph(model)))
    small.compile(optimizer="adam", loss=keras.losses.MeanSquaredError())
    x = zoo.sample_input(small, batch=8)
    y = np.zeros((8, 5), "float32")
    history = small.fit(x, y, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
