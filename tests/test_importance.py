"""The importance protocol: objects and functions accepted wherever a signal name is."""

import keras
import numpy as np
import pytest
import zoo

import tfchannelprune as tcp
from tfchannelprune.saliency import registry
from tfchannelprune.saliency.importance import SignalImportance, scoring_context

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def resnet():
    keras.utils.set_random_seed(0)
    gated = tcp.wrap(zoo.randomize(zoo.resnet_style(), seed=2))
    return gated, zoo.labelled_data(gated, 16, 0)


class KernelMax(tcp.Importance):
    """Largest |w| of each channel's producer kernels (a criterion outside the taxonomy)."""

    def __call__(self, context):
        scores = {g.name: np.zeros(g.size) for g in context.groups}
        for layer in context.model.layers:
            for group in context.groups:
                if layer.path in group.producers or layer.name in group.producers:
                    top = np.abs(layer.kernel.numpy()).reshape(-1, group.size).max(axis=0)
                    scores[group.name] = np.maximum(scores[group.name], top)
        return scores


def test_importance_object_and_function_in_collect_saliency(resnet):
    gated, _ = resnet
    scores = tcp.collect_saliency(gated, None, None, signal=KernelMax())
    graph = tcp.ChannelGraph(gated)
    assert set(scores) == {g.name for g in graph.prunable_groups}
    assert all(np.all(s > 0) for s in scores.values())

    def by_index(context):
        return {g.name: np.arange(g.size, dtype=float) for g in context.groups}

    both = tcp.collect_saliency(gated, None, signals=[KernelMax(), by_index])
    assert set(both) == {"kernel_max", "by_index"}
    last = graph.prunable_groups[-1]
    np.testing.assert_array_equal(both["by_index"][last.name], np.arange(last.size))


def test_taxonomy_signal_through_the_protocol_equals_collect(resnet):
    gated, (x, y) = resnet
    importance = registry.get("taylor")
    assert isinstance(importance, SignalImportance) and importance.needs_data
    assert importance.needs_gradients
    context = scoring_context(gated, (x, y), LOSS)
    direct = importance(context)
    collected = tcp.collect_saliency(gated, (x, y), LOSS, signal="taylor")
    for group in collected:
        np.testing.assert_allclose(direct[group], collected[group], rtol=1e-6)
    assert not registry.get("l1_weight").needs_data


def test_context_describes_the_event(resnet):
    gated, (x, y) = resnet
    group = tcp.ChannelGraph(gated).prunable_groups[-1]
    tcp.set_kept_channels(gated, {group.name: list(range(group.size - 4))})
    try:
        context = scoring_context(gated, (x, y), LOSS, step=7)
        assert context.masks[group.name].sum() == group.size - 4 and context.step == 7
        assert [g.name for g in context.groups] == list(context.masks)
        xs = next(iter(context.batches(labels=False)))
        assert xs.shape[1:] == x.shape[1:]
    finally:
        tcp.set_kept_channels(gated, {group.name: list(range(group.size))})
    with pytest.raises(ValueError, match="needs data"):
        scoring_context(gated).batches()


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda c: [1, 2], "must return"),
        (lambda c: {"nope": np.ones(3)}, "not a prunable group"),
        (lambda c: {c.groups[0].name: np.ones(3)}, "one score per channel"),
        (lambda c: {c.groups[0].name: np.full(c.groups[0].size, np.nan)}, "non-finite"),
    ],
)
def test_bad_scores_are_clear_errors(resnet, bad, match):
    gated, _ = resnet
    with pytest.raises((TypeError, ValueError), match=match):
        tcp.collect_saliency(gated, None, None, signal=bad)


def test_registry_names_configs_and_errors(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    assert isinstance(registry.get("fpgm"), tcp.FPGM)
    fpgm = registry.get({"class_name": "fpgm", "config": {"norm": "l1"}})
    assert fpgm.norm == "l1" and registry.serialize(fpgm)["config"] == {"norm": "l1"}
    taylor = registry.get("taylor")
    assert registry.get(registry.serialize(taylor)) == taylor
    with pytest.raises(ValueError, match="Registered importances: .*fpgm"):
        registry.get("fpgn")
    with pytest.raises(TypeError, match="Importance"):
        registry.get(3)
    with pytest.raises(TypeError, match="subclass"):
        tcp.register_importance("mine", object)
    with pytest.raises(ValueError, match="preset"):
        tcp.register_importance("taylor", KernelMax)
    tcp.register_importance("kernel_max", KernelMax)
    assert isinstance(registry.get("kernel_max"), KernelMax)


def tiny_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inp)
    x = keras.layers.MaxPooling2D()(keras.layers.ReLU()(x))
    x = keras.layers.ReLU()(keras.layers.Conv2D(12, 3, padding="same", name="c2")(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(3)(x))


class ByIndex(tcp.Importance):
    """Channel k scores k: the highest indices are kept."""

    def __call__(self, context):
        return {g.name: np.arange(g.size, dtype=float) for g in context.groups}


def top(scores, width):
    return sorted(np.argsort(-scores, kind="stable")[:width].tolist())


def kernels(model):
    return {n: model.get_layer(n).kernel.numpy() for n in ("c1", "c2")}


@pytest.mark.parametrize("signal", ["fpgm", "user", "function"])
def test_channel_pruning_ranks_by_the_importance(signal):
    x, y = zoo.tiny_digits()
    gated = tcp.wrap(tiny_cnn())
    gated.compile(optimizer="sgd", loss=LOSS)
    importance = {"fpgm": "fpgm", "user": ByIndex(), "function": ByIndex().__call__}[signal]
    pruning = tcp.ChannelPruning(None, LOSS, importance, target_macs=0.5, mode="local",
                                  channels_per_step=None, verbose=0)
    gated.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[pruning])
    assert pruning.done and pruning.history[0]["channels_removed"] > 0
    kept = tcp.get_kept_channels(gated)
    # the event came after the epoch's updates, so the weights now are those it scored
    scores = tcp.collect_saliency(
        gated, None, None, signal=ByIndex() if signal != "fpgm" else "fpgm"
    )
    for group, channels in kept.items():
        assert len(channels) < scores[group].size
        assert channels == top(scores[group], len(channels)), group


@pytest.mark.parametrize("signal", ["fpgm", "user"])
def test_prune_ranks_by_the_importance(signal):
    x, y = zoo.tiny_digits()
    model = tiny_cnn()
    before = kernels(model)
    scores = tcp.collect_saliency(
        model, None, None, signal=signal if signal == "fpgm" else ByIndex()
    )
    result = tcp.prune(
        model,
        None,
        LOSS,
        target_macs=0.5,
        rounds=1,
        signal=ByIndex() if signal == "user" else signal,
        mode="local",
        verbose=0,
    )
    after = kernels(result.model)
    assert after["c1"].shape[-1] < before["c1"].shape[-1]
    kept = top(scores["c1"], after["c1"].shape[-1])
    np.testing.assert_array_equal(after["c1"], before["c1"][..., kept])


def test_data_signal_without_data_is_a_clear_error():
    with pytest.raises(ValueError, match="needs calibration data"):
        tcp.ChannelPruning(None, LOSS, "apoz", target_macs=0.5)  # taylor: in the train step


class CountingImportance(tcp.Importance):
    """Accumulated: the number of examples seen times the channel index."""

    accumulated = True
    needs_data = True

    def build(self, context):
        self.built_for = context.model

    def reset(self):
        self.seen = 0

    def update(self, x, y=None):
        self.seen += int(x.shape[0])

    def __call__(self, context):
        return {g.name: self.seen * np.arange(g.size, dtype=float) for g in context.groups}


def test_accumulated_importance_is_fed_the_batches(resnet):
    gated, (x, y) = resnet
    counting = CountingImportance()
    scores = tcp.collect_saliency(gated, (x, y), LOSS, signal=counting, batch_size=5)
    assert counting.built_for is gated and counting.seen == len(y)
    first = tcp.ChannelGraph(gated).prunable_groups[0]
    np.testing.assert_array_equal(scores[first.name], len(y) * np.arange(first.size))
    again = tcp.collect_saliency(gated, (x[:4], y[:4]), LOSS, signal=counting)
    np.testing.assert_array_equal(again[first.name], 4 * np.arange(first.size))  # reset
    with pytest.raises(ValueError, match="needs calibration data"):
        tcp.ChannelPruning(None, LOSS, CountingImportance(), target_macs=0.5)
    with pytest.raises(NotImplementedError, match="update"):
        type("Lazy", (tcp.Importance,), {"accumulated": True})().update(x)


def test_gradient_criteria_without_a_loss_are_a_clear_error(resnet):
    gated, (x, y) = resnet
    with pytest.raises(ValueError, match=r"need gradients of a loss.*loss=None"):
        tcp.collect_saliency(gated, (x, y), signals=["l1_weight", "taylor"])
