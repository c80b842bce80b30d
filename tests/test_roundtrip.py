"""Saving and loading gated and compact models; TFLite conversion of a compact model."""

import keras
import numpy as np
import tensorflow as tf
import zoo

import tfchannelprune as tcp


def test_gated_model_keras_roundtrip(tmp_path):
    model = zoo.randomize(zoo.resnet_style())
    gated = tcp.wrap(model)
    plan = zoo.random_plan(tcp.ChannelGraph(gated), seed=4)
    tcp.set_kept_channels(gated, plan)
    path = tmp_path / "gated.keras"
    gated.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects needed
    assert tcp.get_kept_channels(loaded) == tcp.get_kept_channels(gated)
    x = zoo.sample_input(model)
    np.testing.assert_allclose(loaded(x), gated(x), atol=1e-6)


def test_compact_model_keras_roundtrip(tmp_path):
    model = zoo.randomize(zoo.squeeze_excitation())
    small = tcp.compact(model, zoo.random_plan(tcp.ChannelGraph(model)))
    path = tmp_path / "small.keras"
    small.save(path)
    loaded = keras.saving.load_model(path)
    x = zoo.sample_input(model)
    np.testing.assert_allclose(loaded(x), small(x), atol=1e-6)
    assert loaded.count_params() == small.count_params()


def test_nested_and_ops_compact_roundtrip(tmp_path):
    for build in (zoo.nested_functional, zoo.ops_model):
        model = zoo.randomize(build())
        small = tcp.compact(model, zoo.random_plan(tcp.ChannelGraph(model)))
        path = tmp_path / f"{model.name}.keras"
        small.save(path)
        x = zoo.sample_input(model)
        np.testing.assert_allclose(keras.saving.load_model(path)(x), small(x), atol=1e-6)


def test_compact_model_converts_to_tflite():
    from ai_edge_litert.interpreter import Interpreter

    model = zoo.randomize(zoo.mobilenetv2_style())
    small = tcp.compact(model, zoo.random_plan(tcp.ChannelGraph(model)))
    flatbuffer = tf.lite.TFLiteConverter.from_keras_model(small).convert()
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    x = zoo.sample_input(small, batch=1)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(out["index"]), small(x), atol=1e-4)


def test_strip_restores_all_channels():
    model = zoo.randomize(zoo.plain_cnn())
    gated = tcp.wrap(model)
    tcp.set_kept_channels(gated, zoo.random_plan(tcp.ChannelGraph(gated)))
    stripped = tcp.strip(gated)
    x = zoo.sample_input(model)
    np.testing.assert_allclose(stripped(x), model(x), atol=1e-6)
    assert stripped.count_params() == model.count_params()
