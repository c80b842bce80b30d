"""save_plan / apply_plan and the apply-plan command: a plan replayed on a fresh instance."""

import json

import keras
import numpy as np
import pytest
import zoo

import tfchannelprune as tcp
from tfchannelprune.cli import main


@pytest.fixture
def saved(tmp_path):
    model = zoo.randomize(zoo.resnet_style(), seed=6)
    gated = tcp.wrap(model)
    graph = tcp.ChannelGraph(gated)
    tcp.set_kept_channels(gated, zoo.random_plan(graph, seed=3), graph=graph)
    path = str(tmp_path / "plan.json")
    doc = tcp.save_plan(gated, path)
    return model, gated, path, doc


def test_fresh_instance_gives_the_same_compact_model(saved):
    model, gated, path, doc = saved
    assert json.load(open(path)) == doc and doc["format"] == "tfchannelprune.plan"
    fresh = zoo.resnet_style()  # another instance: other automatic layer names
    assert {g["name"] for g in doc["groups"]} != {g.name for g in
                                                  tcp.ChannelGraph(fresh).prunable_groups}  # fmt: skip
    fresh.set_weights(model.get_weights())
    small = tcp.apply_plan(fresh, path)
    expected = tcp.compact(gated)
    x = zoo.sample_input(model, batch=4)
    np.testing.assert_allclose(small(x), expected(x), atol=1e-5)
    assert [w.shape for w in small.weights] == [w.shape for w in expected.weights]
    assert tcp.count_macs(small) < tcp.count_macs(model)


def test_other_architecture_is_refused(saved):
    _, _, path, _ = saved
    with pytest.raises(ValueError, match="architecture"):
        tcp.apply_plan(zoo.plain_cnn(), path)
    wider = zoo.resnet_style((16, 16, 3))
    doc = json.load(open(path))
    doc["groups"][0]["size"] += 1
    json.dump(doc, open(path, "w"))
    with pytest.raises(ValueError, match="not the same architecture"):
        tcp.apply_plan(wider, path)
    with pytest.raises(ValueError, match="no ChannelGate"):
        tcp.save_plan(wider, path)


def test_apply_plan_command(saved, tmp_path, capsys):
    model, gated, path, _ = saved
    model_path, out = str(tmp_path / "model.keras"), str(tmp_path / "small.keras")
    model.save(model_path)
    assert main(["apply-plan", model_path, path, "-o", out]) == 0
    assert "MACs" in capsys.readouterr().out
    small = keras.saving.load_model(out)
    x = zoo.sample_input(model, batch=2)
    np.testing.assert_allclose(small(x), tcp.compact(gated)(x), atol=1e-5)
    assert main(["apply-plan", model_path, model_path, "-o", out]) == 2  # not a plan file
