"""Run the shipped gaze model on any photo with LiteRT and write the heat map over the image.

Usage: python examples/gaze_inference.py IMAGE -o heatmap.png [--model saved_models/gaze/gaze.tflite]

Needs only numpy, Pillow, matplotlib and ai-edge-litert (no TensorFlow). The model's JSON
sidecar (same stem) says how to feed it: the whole image resized to its input size, RGB,
`x = pixel / 255` (float file) or `q = pixel - 128` (int8 file). Its output is the natural
log-density of fixations over its H x W pixels; `p = exp(value)` is resized bilinearly to the
photo's size and renormalised, then drawn with a colour map over the photo.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MODEL = os.path.join(HERE, "..", "saved_models", "gaze", "gaze.tflite")


def load_model(path: str):
    """The LiteRT interpreter and the sidecar of `path`."""
    from ai_edge_litert.interpreter import Interpreter

    with open(os.path.splitext(path)[0] + ".json") as f:
        sidecar = json.load(f)
    interpreter = Interpreter(model_path=path, num_threads=1)
    interpreter.allocate_tensors()
    return interpreter, sidecar


def predict_density(interpreter, sidecar: dict, photo: Image.Image) -> np.ndarray:
    """Fixation density over the photo's pixels, (height, width), summing to 1."""
    _, h, w, _ = sidecar["input_shape"]
    pixels = np.asarray(photo.convert("RGB").resize((w, h), Image.BILINEAR), np.float32)
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    if np.issubdtype(inp["dtype"], np.integer):  # int8 file: the sidecar pins q = pixel - 128
        x = (pixels - 128).astype(inp["dtype"])
    else:
        x = pixels / 255.0  # pixel_scale "0-1"
    interpreter.set_tensor(inp["index"], x[None])
    interpreter.invoke()
    log_p = interpreter.get_tensor(out["index"])[0].astype(np.float64)
    if np.issubdtype(out["dtype"], np.integer):
        scale, zero_point = out["quantization"]
        log_p = (log_p - zero_point) * scale
    density = Image.fromarray(np.exp(log_p).astype(np.float32), mode="F")
    big = np.asarray(density.resize(photo.size, Image.BILINEAR), np.float64)
    return big / big.sum()


def overlay(photo: Image.Image, density: np.ndarray, path: str, alpha: float = 0.55) -> None:
    """Blend the density (colour map "inferno", scaled to its max) over the photo; save PNG."""
    from matplotlib import colormaps

    heat = colormaps["inferno"](density / density.max())[..., :3]
    base = np.asarray(photo.convert("RGB"), np.float64) / 255
    mix = (1 - alpha) * base + alpha * heat
    Image.fromarray((mix * 255).round().astype(np.uint8)).save(path)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", help="a photo (any size, any format Pillow reads)")
    parser.add_argument("-o", "--output", default="heatmap.png", help="PNG to write")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=".tflite file (float or int8)")
    args = parser.parse_args(argv)
    interpreter, sidecar = load_model(args.model)
    photo = Image.open(args.image)
    density = predict_density(interpreter, sidecar, photo)
    overlay(photo, density, args.output)
    y, x = np.unravel_index(np.argmax(density), density.shape)
    print(f"wrote {args.output}: most likely fixation at (x={x}, y={y}) of {photo.size}")
    return {"density": density, "peak": (int(y), int(x))}


if __name__ == "__main__":
    main()
