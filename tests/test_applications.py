"""The invariant on real architectures from keras.applications (weights=None, offline)."""

import keras
import pytest
import zoo
from test_invariant import check_invariant

import tfchannelprune as tcp

A = keras.applications
COMMON = dict(input_shape=(32, 32, 3), weights=None, classes=10, classifier_activation=None)
APPS = {
    "MobileNetV2": lambda: A.MobileNetV2(alpha=0.35, **COMMON),
    "MobileNetV3Small": lambda: A.MobileNetV3Small(**COMMON),
    "EfficientNetB0": lambda: A.EfficientNetB0(**COMMON),
    "ResNet50": lambda: A.ResNet50(**COMMON),
    "DenseNet121": lambda: A.DenseNet121(**COMMON),
}


@pytest.mark.parametrize("name", sorted(APPS))
def test_application_invariant(name):
    model = APPS[name]()
    gated, small, plan = check_invariant(model, seed=1)
    graph = tcp.ChannelGraph(model)
    # nearly every group of these CNNs is prunable; only input and output are not
    assert len(graph.prunable_groups) >= len(graph.groups) - 3
    assert small.count_params() < 0.6 * model.count_params()


def test_convnext_layernorm_blocks_residual_stream():
    model = A.ConvNeXtTiny(**COMMON)
    graph = tcp.ChannelGraph(model)
    blocked = [g for g in graph.groups if not g.prunable]
    assert any("LayerNormalization" in g.reason for g in blocked)
    # the per-pixel Dense expansions inside each block stay prunable
    assert len(graph.prunable_groups) == 18
    zoo.randomize(model)
    check_invariant(model, seed=2)
