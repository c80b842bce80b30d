"""Optimizer state through compact(): slots sliced like the weights, iterations carried."""

import keras
import numpy as np
import pytest
import zoo

import tfchannelprune as tcp
from tfchannelprune.prune import optimizer_state

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def trained(optimizer):
    model = zoo.randomize(zoo.resnet_style((8, 8, 3)), seed=4)
    model.compile(optimizer=optimizer, loss=LOSS)
    x, y = zoo.labelled_data(model, 32, 0)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
    return model, x, y


@pytest.mark.parametrize("make", [lambda: keras.optimizers.Adam(1e-2),
                                  lambda: keras.optimizers.SGD(0.05, momentum=0.9)])  # fmt: skip
def test_first_step_after_compaction_equals_the_gated_model(make):
    model, x, y = trained(make())
    slots = optimizer_state.optimizer_slots(model.optimizer, model)
    assert slots and all(len(v) == len(model.trainable_variables) for v in slots.values())
    iterations = int(model.optimizer.iterations.numpy())
    gated = tcp.wrap(model)
    graph = tcp.ChannelGraph(gated)
    tcp.set_kept_channels(gated, zoo.random_plan(graph, seed=1), graph=graph)
    gated.compile(optimizer=optimizer_state.restore_optimizer(model.optimizer, gated, slots,
                                                              iterations), loss=LOSS)  # fmt: skip
    small = tcp.compact(gated, graph=graph)
    carried = optimizer_state.sliced_slots(gated, slots, graph)
    small.compile(optimizer=optimizer_state.restore_optimizer(model.optimizer, small, carried,
                                                              iterations), loss=LOSS)  # fmt: skip
    fresh = tcp.compact(gated, graph=graph)
    fresh.compile(optimizer=make(), loss=LOSS)
    assert int(small.optimizer.iterations.numpy()) == iterations
    losses = []
    for m in (gated, small, fresh):
        m.train_on_batch(x[:16], y[:16])  # BatchNorm in training mode: same batch, same stats
        losses.append(float(m.evaluate(x[16:], y[16:], verbose=0)))
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)  # float32 noise through Adam
    assert abs(losses[2] - losses[0]) > 1e-3 * losses[0]  # a fresh optimizer steps elsewhere


def test_mismatched_slot_is_a_clear_error():
    model, _, _ = trained("adam")
    slots = optimizer_state.optimizer_slots(model.optimizer, model)
    gated = tcp.wrap(model)
    graph = tcp.ChannelGraph(gated)
    tcp.set_kept_channels(gated, zoo.random_plan(graph, seed=2), graph=graph)
    with pytest.raises(ValueError, match="sliced_slots"):
        optimizer_state.restore_optimizer("adam", tcp.compact(gated, graph=graph), slots)


def test_prune_carries_iterations_and_times_epochs():
    model, x, y = trained(keras.optimizers.Adam(1e-3))
    before = int(model.optimizer.iterations.numpy())
    result = tcp.prune(model, (x, y), LOSS, target_macs=0.5, rounds=2, signal="l1_weight",
                       optimizer=model.optimizer, fine_tune_data=(x, y), fine_tune_epochs=1,
                       fit_kwargs={"batch_size": 16}, verbose=0)  # fmt: skip
    assert int(result.model.optimizer.iterations.numpy()) == before + 2 * 2
    assert all(r["epoch_seconds"] > 0 for r in result.history)
