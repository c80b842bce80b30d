"""The shipped gaze model (saved_models/gaze/): it loads, runs on a real photo, outputs a
normalised log-density, matches its sidecar, and the inference example writes the heat map."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from skimage import data, transform

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SHIPPED = os.path.join(ROOT, "saved_models", "gaze")
EXAMPLE = os.path.join(ROOT, "examples", "gaze_inference.py")
# float32 log-softmax: rounding only; int8: the output is rounded to 1/16 nat
TOLERANCE = {"gaze.tflite": 1e-4, "gaze_int8.tflite": 0.05}


def _logsumexp(log_p: np.ndarray) -> np.ndarray:
    flat = log_p.reshape(len(log_p), -1).astype(np.float64)
    peak = flat.max(axis=1)
    return peak + np.log(np.exp(flat - peak[:, None]).sum(axis=1))


@pytest.mark.parametrize("name", sorted(TOLERANCE))
def test_shipped_tflite_outputs_a_log_density_on_a_real_photo(name):
    from ai_edge_litert.interpreter import Interpreter

    path = os.path.join(SHIPPED, name)
    assert os.path.getsize(path) < 8 * 2**20
    with open(os.path.splitext(path)[0] + ".json") as f:
        sidecar = json.load(f)
    assert sidecar["output"] == "log_density" and sidecar["pixel_scale"] == "0-1"
    _, h, w, c = sidecar["input_shape"]
    assert c == 3 and sidecar["upsampling"]["output_size"] == [h, w]
    interpreter = Interpreter(model_path=path)
    interpreter.allocate_tensors()
    (inp,), out = interpreter.get_input_details(), interpreter.get_output_details()[0]
    assert list(inp["shape"]) == [1, h, w, 3] and list(out["shape"]) == [1, h, w]
    photo = transform.resize(data.chelsea(), (h, w), anti_aliasing=True)  # RGB in [0, 1]
    if np.issubdtype(inp["dtype"], np.integer):
        x = (np.round(photo * 255) - 128).astype(inp["dtype"])  # the sidecar's q = pixel - 128
    else:
        x = photo.astype(np.float32)
    interpreter.set_tensor(inp["index"], x[None])
    interpreter.invoke()
    log_p = interpreter.get_tensor(out["index"]).astype(np.float64)
    if np.issubdtype(out["dtype"], np.integer):
        scale, zero_point = out["quantization"]
        log_p = (log_p - zero_point) * scale
    assert abs(_logsumexp(log_p)[0]) < TOLERANCE[name]
    assert np.ptp(log_p) > 1.0  # not a uniform map: the photo changes the prediction


def test_inference_example_writes_the_heat_map(tmp_path):
    from PIL import Image

    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(data.astronaut()).save(photo)
    for model in ("gaze.tflite", "gaze_int8.tflite"):
        heatmap = tmp_path / f"heat_{model}.png"
        out = subprocess.run(
            [sys.executable, EXAMPLE, str(photo), "-o", str(heatmap),
             "--model", os.path.join(SHIPPED, model)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        written = Image.open(heatmap)
        assert written.format == "PNG" and written.size == (512, 512)
        assert "most likely fixation" in out.stdout
