"""The files an app developer gets: float32 and int8 `.tflite`, their JSON sidecars, a README.

`ship_gaze(model, folder, ...)` writes `gaze.tflite` and `gaze_int8.tflite` (one NHWC RGB image
input in [0, 1], the first output the (1, H, W) natural log-density over pixels), each with the
`export_gaze` sidecar of the same stem, and a README.md saying how to feed and read them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import keras
import numpy as np

from tfchannelprune.deploy.export import write_atomic
from tfchannelprune.gaze.export import GazeExport, export_gaze

__all__ = ["MAX_SHIPPED_BYTES", "ship_experiment", "ship_gaze"]

MAX_SHIPPED_BYTES = 8 * 2**20  # each shipped file stays under 8 MiB


def ship_gaze(
    model: keras.Model,
    folder: str | os.PathLike,
    representative_data: np.ndarray,
    sample_inputs: np.ndarray,
    metrics: Mapping | None = None,
    centre_bias: Mapping | None = None,
    description: str = "",
) -> dict[str, GazeExport]:
    """Export `model` float32 and full int8 into `folder`, with sidecars and a README.

    Raises:
        ValueError: a file over `MAX_SHIPPED_BYTES`.
    """
    os.makedirs(folder, exist_ok=True)
    done = {}
    for stem, quantize in (("gaze", None), ("gaze_int8", "int8")):
        done[stem] = export_gaze(
            model, os.path.join(folder, f"{stem}.tflite"), quantize=quantize,
            representative_data=representative_data if quantize else None,
            sample_inputs=sample_inputs, centre_bias=centre_bias, metrics=metrics,
        )  # fmt: skip
        size = done[stem].report.size_bytes
        if size >= MAX_SHIPPED_BYTES:
            raise ValueError(
                f"Shipped files must stay under 8 MiB. Received: {stem}.tflite, {size} bytes"
            )
    readme = _readme(done, description)
    write_atomic(os.path.join(folder, "README.md"), readme.encode())
    return done


def ship_experiment(result, index: int, folder: str | os.PathLike) -> dict[str, GazeExport]:
    """`ship_gaze` of row `index` of an `experiment.ExperimentResult` (e.g. the chosen student).

    The sidecars record the row's held-out scores and how the centre bias was made; the int8
    ranges are calibrated on 200 training images, the checks run on 32 test images.
    """
    from tfchannelprune.gaze.experiment import TEACHER_BACKBONE

    row, c = result.rows[index], result.config
    keys = ("auc_judd", "information_gain", "explained_information_gain", "nss", "macs")
    scores = {k: row[k] for k in keys}
    scores["split"] = (
        f"{result.test.n_images} held-out synthetic test images, {c.size[0]}x{c.size[1]}"
    )
    centre_bias = {
        "source": f"pooled fixations of the {c.n_train} training images",
        "sigma": c.centre_bias_sigma, "sigma_unit": "fraction of min(H, W)",
        "uniform_weight": c.uniform_weight,
    }  # fmt: skip
    description = (
        f"The chosen student of `make bench-gaze` ({row['model']}, beta={row['beta']}): "
        f"{row['macs']:,} MACs, {row['teacher_ratio']:.1f}x fewer than its DeepGaze-style "
        f"teacher on pretrained VGG16 ({TEACHER_BACKBONE}); held-out AUC-Judd "
        f"{row['auc_judd']:.4f}, IG {row['information_gain']:.3f} bits/fixation over a centre "
        f"bias (seed {c.seed}). Trained on synthetic scenes (`tfchannelprune.gaze.make_dataset`), "
        "not on human eye-tracking data: a working pipeline to try on a phone, not a model to "
        "rank against published saliency models."
    )
    return ship_gaze(
        result.models[index], folder, result.train.images[:200], result.test.images[:32],
        metrics=scores, centre_bias=centre_bias, description=description,
    )  # fmt: skip


def _readme(done: dict[str, GazeExport], description: str) -> str:
    meta = done["gaze"].metadata
    h, w = meta["input_shape"][1:3]
    q = done["gaze_int8"].metadata["input"]["quantization"]
    lines = [
        "# Gaze (saliency) model for phones: a Fisher-pruned FastGaze-style student",
        "",
        description,
        "",
        "| file | what | size | max abs error vs Keras (nats) | max abs logsumexp |",
        "|---|---|---:|---:|---:|",
    ]
    for stem, d in done.items():
        lines.append(
            f"| `{stem}.tflite` (+ `{stem}.json`) | {d.metadata['model']['quantize'] or 'float32'}"
            f" | {d.report.size_bytes / 1024:.1f} KiB | {d.report.max_abs_error:.2e} | "
            f"{d.max_abs_logsumexp:.1e} |"
        )
    lines += [
        "",
        f"* **Input**: one image, NHWC `[1, {h}, {w}, 3]`, RGB, resized (whole image) to "
        f'{w}x{h}, `x = pixel / 255` (pixel_scale "0-1"). int8 file: `q = pixel - 128` '
        f"(scale {q['scale']:.6g}, zero point {q['zero_point']}).",
        f"* **Output** (first output): `[1, {h}, {w}]`, `ln p(fixation at row y, column x | "
        "image)`; `exp` sums to 1 over the pixels. int8 file: `value = (q - 127) / 16`, "
        "values below -15.94 clipped. The centre bias is inside the model.",
        "* **Heat map over the photo**: `p = exp(value)`, resize bilinearly to the photo's size, "
        "renormalise to sum 1, colour-map and blend (`examples/gaze_inference.py`).",
        "* Python: `python examples/gaze_inference.py photo.jpg -o heatmap.png` (ai-edge-litert);"
        " Android/Kotlin: see docs/gaze.md.",
        "* Regenerate: `make gaze-demo`. The sidecars hold `input_shape`, `pixel_scale`, "
        '`output` ("log_density"), `upsampling`, quantization, the checks and the measured '
        "metrics.",
        "",
    ]
    return "\n".join(lines)
