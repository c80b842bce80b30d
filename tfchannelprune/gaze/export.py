"""LiteRT export of a gaze model with a JSON sidecar for a mobile app.

`export_gaze` converts with `tfchannelprune.export_tflite` (parity checked against Keras),
checks that the LiteRT output is still a log-density (`logsumexp` over pixels = 0: the spatial
log-softmax is inside the file, as one `LOG_SOFTMAX` kernel) and writes `<file>.json` beside the
`.tflite` file saying how to feed it and read it: input size and pixel scaling, int8
quantization parameters, the output's meaning (natural-log density over pixels, its shape) and
the centre bias that is already part of the model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping

import keras
import numpy as np

from tfchannelprune.core.cost import count_macs, count_params
from tfchannelprune.deploy.export import export_tflite, write_atomic
from tfchannelprune.deploy.latency import run_tflite
from tfchannelprune.gaze.layers import BlurredUpsampling, GaussianKernel
from tfchannelprune.gaze.model import centre_bias_layer

__all__ = ["GazeExport", "export_gaze", "log_density_normalisation_error", "sidecar_path"]

SIDECAR_FORMAT = "tfchannelprune.gaze.tflite/1"
# int8 LOG_SOFTMAX has the fixed output scale 16/256 and zero point 127 in TFLite.
_INT8_NOTE = "int8 LOG_SOFTMAX: values below lowest_value (about -15.9) are clipped to it"


@dataclasses.dataclass(frozen=True)
class GazeExport:
    """What `export_gaze` wrote.

    Attributes:
        path: the `.tflite` file; `sidecar`: its JSON description.
        report: the `ExportReport` of the parity check against Keras.
        max_abs_logsumexp: max over the sample images of |logsumexp over pixels| of the LiteRT
            output (0 for an exact log-density; int8 rounding makes it about 1e-3).
        metadata: the sidecar's content.
    """

    path: str
    sidecar: str
    report: object
    max_abs_logsumexp: float
    metadata: dict


def sidecar_path(path: str | os.PathLike) -> str:
    """`model.tflite` -> `model.json`."""
    return os.path.splitext(os.fspath(path))[0] + ".json"


def log_density_normalisation_error(log_densities) -> float:
    """max_n |logsumexp_{y,x} log_densities[n]|, in float64: 0 for normalised log-densities."""
    logp = np.asarray(log_densities, np.float64)
    flat = logp.reshape(len(logp), -1)
    peak = flat.max(axis=1, keepdims=True)
    lse = peak[:, 0] + np.log(np.exp(flat - peak).sum(axis=1))
    return float(np.max(np.abs(lse)))


def export_gaze(
    model: keras.Model,
    path: str | os.PathLike,
    quantize: str | None = None,
    representative_data: np.ndarray | None = None,
    sample_inputs: np.ndarray | None = None,
    centre_bias: Mapping | None = None,
    metrics: Mapping | None = None,
    include_centre_bias_map: bool = False,
) -> GazeExport:
    """Export a gaze model to `.tflite` and write a JSON sidecar for an app.

    Args:
        model: a compact (or gated) gaze model with an (N, H, W) log-density output.
        path: the `.tflite` path; the sidecar is `sidecar_path(path)`.
        quantize: None, "float16", "dynamic" or "int8" (see `export_tflite`).
        representative_data: images (N, H, W, 3) in [0, 1] to calibrate int8 ranges (the
            input range is pinned to [0, 1]: an app feeds `uint8 pixel - 128`).
        sample_inputs: images for the parity and normalisation checks (default: the first 32
            representative images, else 8 random images in [0, 1]).
        centre_bias: how the model's centre bias was made, e.g.
            `{"source": "training fixations", "sigma": 0.05, "uniform_weight": 0.01}`.
        metrics: measured quality to record (e.g. AUC, information gain on held-out images).
        include_centre_bias_map: also write the (H, W) log centre-bias map (4 decimals).

    Returns:
        A `GazeExport`.

    Raises:
        ValueError: a model whose output is not (N, H, W) with H, W its input size.
    """
    _check_gaze_model(model)
    h, w = model.input_shape[1], model.input_shape[2]
    if sample_inputs is None:
        if representative_data is not None:
            sample_inputs = np.asarray(representative_data)[:32]
        else:
            sample_inputs = np.random.default_rng(0).uniform(size=(8, h, w, 3))
    sample_inputs = np.asarray(sample_inputs, np.float32)
    if representative_data is not None:
        representative_data = _pin_pixel_range(representative_data)
    report = export_tflite(model, path, quantize=quantize, representative_data=representative_data,
                           sample_inputs=sample_inputs)
    lse_error = log_density_normalisation_error(run_tflite(report.path, [sample_inputs])[0])
    metadata = _metadata(model, report, lse_error, len(sample_inputs), centre_bias, metrics)
    if include_centre_bias_map:
        log_cb = np.asarray(centre_bias_layer(model).log_density, np.float64)
        metadata["centre_bias"]["log_density"] = np.round(log_cb, 4).tolist()
    sidecar = sidecar_path(report.path)
    write_atomic(sidecar, (json.dumps(metadata, indent=2) + "\n").encode())
    return GazeExport(report.path, sidecar, report, lse_error, metadata)


def _pin_pixel_range(images) -> np.ndarray:
    """A copy whose first image has one black and one white pixel.

    int8 calibration takes the input range from the data; pinning it to [0, 1] gives the input
    the scale 1/255 and zero point -128, so an app feeds `uint8 pixel - 128` exactly. Two
    pixels of one image barely move the calibrated activation ranges.
    """
    images = np.array(images, dtype=np.float32)
    images[0, 0, 0, :] = 0.0
    images[0, 0, -1, :] = 1.0
    return images


def _check_gaze_model(model: keras.Model) -> None:
    out, inp = model.output_shape, model.input_shape
    if not (isinstance(out, tuple) and len(out) == 3 and tuple(out[1:]) == tuple(inp[1:3])):
        raise ValueError(
            "export_gaze needs a gaze model with one (N, H, W) log-density output of the input's "
            f"size, e.g. from tfchannelprune.gaze.build_student. Received: input_shape={inp}, "
            f"output_shape={out}"
        )


def _io_details(path: str) -> tuple[dict, dict]:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=path).get_signature_runner("serving_default")
    return runner.get_input_details()["input_0"], runner.get_output_details()["output_0"]


def _quantization(detail: dict, direction: str) -> dict | None:
    if not np.issubdtype(detail["dtype"], np.integer):
        return None
    scale, zero_point = (float(v) for v in detail["quantization"])
    out = {"scale": scale, "zero_point": int(zero_point)}
    if direction == "input":
        out["formula"] = "q = clamp(round(x / scale) + zero_point, -128, 127), x = pixel / 255"
        if math.isclose(scale * 255, 1.0, rel_tol=1e-4) and zero_point == -128:
            out["from_uint8_pixel"] = "q = pixel - 128 (exact)"
    else:
        out["formula"] = "value = (q - zero_point) * scale"
        out["lowest_value"] = (-128 - zero_point) * scale
    return out


def _metadata(model, report, lse_error, n_samples, centre_bias, metrics) -> dict:
    h, w = model.input_shape[1], model.input_shape[2]
    inp, out = _io_details(report.path)
    log_cb = np.asarray(centre_bias_layer(model).log_density, np.float64)
    blur = [layer.sigma for layer in model.layers if isinstance(layer, BlurredUpsampling)]
    blur += [
        layer.depthwise_initializer.sigma
        for layer in model.layers
        if isinstance(getattr(layer, "depthwise_initializer", None), GaussianKernel)
    ]
    out_q = _quantization(out, "output")
    meaning = (
        "log-density of fixation locations over the pixels of the input image: "
        "value[0, y, x] = ln p(fixation at row y, column x | image); "
        "sum over all H*W pixels of exp(value) = 1"
    )
    return {
        "format": SIDECAR_FORMAT,
        "model_file": os.path.basename(report.path),
        "input_shape": [1, h, w, 3],
        "pixel_scale": "0-1",
        "output": "log_density",
        "upsampling": {
            "output_size": [h, w],
            "to_image": "resize p = exp(value) bilinearly from (H, W) to the image's size, then "
            "divide by its sum (a density over the image's pixels); for display only the "
            "shape matters",
        },
        "model": {
            "name": model.name,
            "macs": int(count_macs(model)),
            "params": int(count_params(model)),
            "quantize": report.quantize,
            "size_bytes": report.size_bytes,
            "ops": sorted(set(report.ops)),
            "blur_sigma_pixels": blur[0] if blur else None,
        },
        "input": {
            "name": "input_0",
            "shape": [1, h, w, 3],
            "dtype": np.dtype(inp["dtype"]).name,
            "layout": "NHWC, RGB",
            "resize": f"resize the whole image (or frame) to {w}x{h} pixels (width x height)",
            "normalization": "x = pixel / 255, float in [0, 1] per RGB channel; no mean or std",
            "scale": 1 / 255,
            "offset": 0.0,
            "quantization": _quantization(inp, "input"),
        },
        "output_details": {
            "name": "output_0",
            "shape": [1, h, w],
            "axes": ["batch", "y (row, top to bottom)", "x (column, left to right)"],
            "dtype": np.dtype(out["dtype"]).name,
            "meaning": meaning,
            "log_base": "e (natural log); divide by ln 2 for bits",
            "to_probability": "p = exp(value)",
            "quantization": out_q,
            "note": None if out_q is None else _INT8_NOTE,
        },
        "centre_bias": {
            "in_model": True,
            "note": "already added (as a log-density) before the spatial softmax; do not add it "
            "again. Subtract it (needs include_centre_bias_map) to show image-driven saliency.",
            "shape": [h, w],
            "log_density_min": float(log_cb.min()),
            "log_density_max": float(log_cb.max()),
            **dict(centre_bias or {}),
        },
        "checks": {
            "samples": n_samples,
            "max_abs_error_vs_keras": report.max_abs_error,
            "max_rel_error_vs_keras": report.max_rel_error,
            "parity_ok": report.parity_ok,
            "max_abs_logsumexp": lse_error,
        },
        "metrics": dict(metrics or {}),
    }
