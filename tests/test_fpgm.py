"""FPGM (He et al. 2019, arXiv:1811.00250): sum of distances to the other filters."""

import keras
import numpy as np
import pytest
import zoo
from keras import layers as L

import tfchannelprune as tcp
from tfchannelprune.saliency.fpgm import FPGM
from tfchannelprune.saliency.importance import scoring_context


def one_by_one(filters: np.ndarray) -> keras.Model:
    """Input -> 1x1 conv whose filters (columns) are ``filters`` (in, out) -> ReLU -> 1x1 conv."""
    fan_in, width = filters.shape
    inp = keras.Input((4, 4, fan_in))
    conv = L.Conv2D(width, 1, use_bias=False, name="conv")
    x = L.Conv2D(2, 1, name="head")(L.ReLU()(conv(inp)))
    model = keras.Model(inp, x)
    conv.kernel.assign(filters.reshape(1, 1, fan_in, width).astype("float32"))
    return model


def test_matches_hand_computation():
    # filters (0,0), (1,0), (0,1), (3,4): pairwise distances 1, 1, 5, sqrt2, sqrt20, sqrt18
    filters = np.array([[0, 1, 0, 3], [0, 0, 1, 4]], np.float64)
    scores = tcp.collect_saliency(one_by_one(filters), None, None, signal="fpgm")["conv"]
    r2, r18, r20 = np.sqrt(2), np.sqrt(18), np.sqrt(20)
    expected = [1 + 1 + 5, 1 + r2 + r20, 1 + r2 + r18, 5 + r20 + r18]
    np.testing.assert_allclose(scores, expected, rtol=1e-6)
    l1 = tcp.collect_saliency(one_by_one(filters), None, None, signal=FPGM(norm="l1"))["conv"]
    np.testing.assert_allclose(l1, [1 + 1 + 7, 1 + 2 + 6, 1 + 2 + 6, 7 + 6 + 6], rtol=1e-6)


def test_differs_from_distance_to_the_mean():
    # 1-D filters 0, .1, .2, .3, 10: the geometric median is .2, the mean 2.12 is nearest .3
    values = np.array([[0.0, 0.1, 0.2, 0.3, 10.0]])
    fpgm = tcp.collect_saliency(one_by_one(values), None, None, signal="fpgm")["conv"]
    to_mean = np.abs(values[0] - values[0].mean())
    assert np.argmin(fpgm) == 2 and np.argmin(to_mean) == 3
    assert list(np.argsort(fpgm)) != list(np.argsort(to_mean))


def test_residual_group_concatenates_every_producer():
    model = zoo.randomize(zoo.resnet_style(), seed=4)
    gated = tcp.wrap(model)
    graph = tcp.ChannelGraph(gated)
    scores = tcp.collect_saliency(gated, None, None, signal="fpgm")
    kernels = {
        layer.path: layer.kernel.numpy() for layer in gated.layers if hasattr(layer, "kernel")
    }
    residual = [g for g in graph.prunable_groups if len(g.producers) > 1]
    assert residual, "resnet_style has a residual group"
    for group in graph.prunable_groups:
        rows = [
            np.concatenate([kernels[p][..., k].ravel() for p in group.producers])
            for k in range(group.size)
        ]
        expected = [sum(np.linalg.norm(a - b) for b in rows) for a in rows]
        np.testing.assert_allclose(scores[group.name], expected, rtol=1e-5, err_msg=group.name)
        width = sum(kernels[p][..., 0].size for p in group.producers)
        assert scoring_context(gated).filters()[group.name].shape == (group.size, width)


def test_config_and_errors():
    assert FPGM.from_config(FPGM(norm="l1").get_config()).norm == "l1"
    assert not FPGM.needs_data and FPGM().name == "fpgm"
    with pytest.raises(ValueError, match="norm must be"):
        FPGM(norm="cosine")


def test_switched_off_filters_are_not_neighbours():
    # the scores of the kept filters are those of the model without the switched-off ones
    model = zoo.randomize(zoo.resnet_style(), seed=4)
    gated = tcp.wrap(model)
    graph = tcp.ChannelGraph(gated)
    plan = zoo.random_plan(graph, seed=3)
    tcp.set_kept_channels(gated, plan, graph=graph)
    scores = tcp.collect_saliency(gated, None, None, signal="fpgm")
    filters = scoring_context(gated).filters()
    for group in graph.prunable_groups:
        kept = np.asarray(plan[group.name])
        expected = np.zeros(group.size)
        expected[kept] = FPGM().distance_sums(filters[group.name][kept])
        np.testing.assert_allclose(scores[group.name], expected, rtol=1e-6, err_msg=group.name)
        full = FPGM().distance_sums(filters[group.name])[kept]
        assert not np.allclose(full, expected[kept])  # the others would have counted
