"""One contract per argument: ``data``, ``ignored_layers`` and models without gates mean the
same at every entry point."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
import zoo
from keras import layers as L

import tfchannelprune as tcp
from tfchannelprune.core.batches import as_dataset, first_inputs
from tfchannelprune.core.plans import ignored_groups

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def tiny_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    x = L.ReLU()(L.BatchNormalization(name="bn1")(L.Conv2D(6, 3, padding="same", name="c1")(inp)))
    x = L.MaxPooling2D()(x)
    x = L.ReLU()(L.Conv2D(8, 3, padding="same", name="c2")(x))
    x = L.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inp, L.Dense(3, name="head")(x), name="tiny")


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y=None, batch_size=16):
        super().__init__()
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, i):
        part = slice(i * self.batch_size, (i + 1) * self.batch_size)
        return self.x[part] if self.y is None else (self.x[part], self.y[part])


X, Y = zoo.tiny_digits(n=48)
LABELLED = {
    "tuple": (X, Y),
    "list": [X, Y],
    "weighted": (X, Y, np.ones(len(Y), "float32")),
    "dataset": tf.data.Dataset.from_tensor_slices((X, Y)).batch(16),
    "py_dataset": Batches(X, Y),
}
UNLABELLED = {
    "array": X,
    "dataset": tf.data.Dataset.from_tensor_slices(X).batch(16),
    "py_dataset": Batches(X),
}


@pytest.fixture(scope="module")
def gated():
    return tcp.wrap(tiny_cnn())


def close(a, b):
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("form", sorted(LABELLED))
def test_as_dataset_reads_every_labelled_form(form):
    batches = list(as_dataset(LABELLED[form], 16, labels=True))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), X)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), Y)
    xs = np.concatenate(list(as_dataset(LABELLED[form], 16, labels=False)))
    np.testing.assert_array_equal(xs, X)


@pytest.mark.parametrize("form", sorted(UNLABELLED))
def test_data_without_labels_where_labels_are_needed(gated, form):
    np.testing.assert_array_equal(
        np.concatenate(list(as_dataset(UNLABELLED[form], 16, labels=False))), X
    )
    with pytest.raises(ValueError, match="needs labels"):
        tcp.collect_saliency(gated, UNLABELLED[form], LOSS, signal="taylor")
    with pytest.raises(ValueError, match="needs labels"):
        tcp.prune(tiny_cnn(), UNLABELLED[form], LOSS, target_macs=0.6, rounds=1, verbose=0)


def test_bad_data_is_a_clear_error():
    with pytest.raises(TypeError, match="PyDataset"):
        as_dataset("x.npy", 16)
    with pytest.raises(ValueError, match=r"len\(x\)=48, len\(y\)=4"):
        as_dataset((X, Y[:4]), 16)
    with pytest.raises(ValueError, match="empty"):
        as_dataset(X[:0], 16, labels=False)


READERS = {
    "collect_saliency": lambda m, d: tcp.collect_saliency(m, d, loss=LOSS, signals=["taylor", "fisher"]),
    "find_dead_channels": lambda m, d: tcp.find_dead_channels(m, d).to_dict()["groups"],
    "gate_input_means": lambda m, d: tcp.gate_input_means(m, d),
}


def flatten_result(result):
    if isinstance(result, list):  # DeadReport groups
        return {f"{g['group']}": np.asarray(g["dead"] + [g["size"]]) for g in result}
    if isinstance(next(iter(result.values())), dict):
        return {f"{k}/{g}": v for k, d in result.items() for g, v in d.items()}
    return result


@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_reader_takes_every_form_and_agrees(gated, reader):
    forms = LABELLED if reader == "collect_saliency" else {**LABELLED, **UNLABELLED}
    results = {f: flatten_result(READERS[reader](gated, d)) for f, d in forms.items()}
    for result in results.values():
        close(result, results["tuple"])


@pytest.mark.parametrize("form", ["tuple", "dataset", "py_dataset"])
def test_pruning_entry_points_take_every_form(form):
    data = LABELLED[form]
    kept = []
    for _ in range(2):  # same channels as from (x, y) arrays
        gated = tcp.wrap(tiny_cnn())
        gated.compile(optimizer="sgd", loss=LOSS)
        pruning = tcp.ChannelPruning(data, LOSS, "taylor", target_macs=0.6, verbose=0)
        pruning.set_model(gated)
        pruning.on_train_begin()
        pruning._event(1, 0, None)  # one event, no training: same weights for both forms
        kept.append(tcp.get_kept_channels(gated))
        data = LABELLED["tuple"]
    assert kept[0] == kept[1]
    result = tcp.prune(tiny_cnn(), LABELLED[form], LOSS, target_macs=0.6, rounds=1, verbose=0)
    reference = tcp.prune(tiny_cnn(), (X, Y), LOSS, target_macs=0.6, rounds=1, verbose=0)
    np.testing.assert_allclose(result.model(X[:4]), reference.model(X[:4]), atol=1e-6)


# ---------------------------------------------------------------------- ignored_layers
def kept_whole(entry, names):
    """Groups an entry point left untouched with ``ignored_layers=names``."""
    model = tiny_cnn()
    if entry == "ChannelPruning":
        gated = tcp.wrap(model)
        gated.compile(optimizer="sgd", loss=LOSS)
        pruning = tcp.ChannelPruning(None, LOSS, "l1_weight", target_channels=3,
                                     ignored_layers=names, verbose=0)  # fmt: skip
        gated.fit(X, Y, epochs=1, verbose=0, callbacks=[pruning])
        return {g for g, k in tcp.get_kept_channels(gated).items() if len(k) == 6 + 2 * (g == "c2")}
    if entry == "prune":
        small = tcp.prune(model, None, LOSS, target_macs=0.3, rounds=1, signal="l1_weight",
                          ignored_layers=names, verbose=0).model  # fmt: skip
        widths = {"c1": small.get_layer("c1").filters, "c2": small.get_layer("c2").filters}
        return {g for g, w in widths.items() if w == {"c1": 6, "c2": 8}[g]}
    dyn = tcp.DynamicChannelExecution(active_fraction=0.5, ignored_layers=names)
    dyn.build(model)
    return {g.name for g in dyn.graph.prunable_groups if g.name not in dyn.bandit.names}


ENTRIES = ["ChannelPruning", "prune", "DynamicChannelExecution"]


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize(
    "names, whole",
    [(["c1"], {"c1"}), (["head"], {"c2"}), (["bn1"], {"c1"})],
    ids=["producer", "consumer", "channelwise"],
)
def test_ignored_layers_mean_the_same_everywhere(entry, names, whole):
    # a group is kept whole when any producer, consumer or channel-wise layer is named
    assert kept_whole(entry, names) == whole


def test_full_path_and_bare_name_name_the_same_layer():
    graph = tcp.ChannelGraph(zoo.nested_functional())
    group = graph.prunable_groups[1]
    path = group.producers[0]
    assert "/" in path  # a layer inside a nested model
    by_path = ignored_groups(graph, [path])
    assert group.name in by_path and by_path == ignored_groups(graph, [path.split("/")[-1]])
    assert ignored_groups(graph, path) == by_path  # one name alone, not its characters
    with pytest.raises(TypeError, match="one layer name or a list"):
        ignored_groups(graph, [path, 3])


@pytest.mark.parametrize("entry", ENTRIES)
def test_unknown_ignored_layer_is_a_clear_error(entry):
    with pytest.raises(ValueError, match=r"not in model 'tiny'. Received: \['c3'\]"):
        kept_whole(entry, ["c3"])


# ---------------------------------------------------------------------- models without gates
@pytest.mark.parametrize("reader", sorted(READERS))
def test_readers_score_a_model_without_gates_as_its_wrapped_copy(reader):
    plain = tiny_cnn()
    close(
        flatten_result(READERS[reader](plain, (X, Y))),
        flatten_result(READERS[reader](tcp.wrap(plain), (X, Y))),
    )


@pytest.mark.parametrize("callback", ["ChannelPruning", "DeadChannelMonitor"])
def test_callbacks_refuse_a_model_without_gates_with_one_error(callback):
    model = tiny_cnn()
    model.compile(optimizer="sgd", loss=LOSS)
    cb = (tcp.ChannelPruning((X, Y), LOSS, target_macs=0.5, verbose=0)
          if callback == "ChannelPruning" else tcp.DeadChannelMonitor())  # fmt: skip
    with pytest.raises(ValueError, match=f"{callback} needs a wrapped model, and 'tiny' has no"):
        model.fit(X, Y, epochs=1, verbose=0, callbacks=[cb])


@pytest.mark.parametrize("form", ["tuple", "dataset", "py_dataset", "array"])
def test_first_inputs_of_every_form(form):
    data = {**LABELLED, **UNLABELLED}[form]
    (inputs,) = first_inputs(data, 20)
    np.testing.assert_array_equal(inputs, X[:20])


def test_export_takes_a_dataset_as_representative_data(tmp_path):
    model = tiny_cnn()
    dataset = tf.data.Dataset.from_tensor_slices((X, Y)).batch(16)
    a = tcp.export_tflite(model, tmp_path / "a.tflite", "int8", representative_data=dataset)
    b = tcp.export_tflite(model, tmp_path / "b.tflite", "int8", representative_data=X)
    assert a.parity_ok and b.parity_ok
    assert (tmp_path / "a.tflite").read_bytes() == (tmp_path / "b.tflite").read_bytes()
