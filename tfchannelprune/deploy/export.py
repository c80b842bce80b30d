"""TFLite / LiteRT export with a parity check, and the ``export`` / ``bench`` commands.

`export_tflite` converts a compact (or gated, compacted on the fly) Keras model with builtin
ops only, runs the result in the LiteRT interpreter beside Keras on sample inputs, and writes
the file atomically. Latency measurement lives in `tfchannelprune.latency`.

Example:

```python
report = export_tflite(model, "model.tflite", quantize="int8", representative_data=x[:200])
assert report.parity_ok, report.summary()
```
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import re
import tempfile
import warnings
from collections.abc import Sequence

import keras
import numpy as np

from tfchannelprune.core.batches import first_inputs, is_batched_source
from tfchannelprune.core.checks import check_finite, check_output_path
from tfchannelprune.core.convention import keyword_only
from tfchannelprune.deploy.latency import list_ops, run_tflite

QUANTIZE_MODES = (None, "float16", "dynamic", "int8")

# Parity bound per mode: max |LiteRT - Keras| over a model output, divided by the output's
# scale (max |Keras|). float16 rounds weights to 11 significant bits; "dynamic" and "int8" round
# weights (and activations) to 8 bits, so their bounds are loose by nature: a small model loses
# 1-3 % of its output scale, and 10 % still catches a wrong scale, zero point or channel order.
PARITY_BOUNDS = {None: 1e-4, "float16": 1e-2, "dynamic": 0.1, "int8": 0.1}
# int8 classifiers must also agree with Keras on the top-1 class of this share of samples.
MIN_TOP1_AGREEMENT = 0.9
# Samples used for the parity check when none are given.
DEFAULT_PARITY_SAMPLES = 8
MAX_REPRESENTATIVE_SAMPLES = 500


class UnsupportedOpError(ValueError):
    """The model uses an op that TFLite builtin kernels (or int8 kernels) cannot run.

    Attributes:
        ops: TensorFlow / TFLite op names that failed, e.g. ``("MatrixInverse",)``.
        layers: Names of the Keras layers or operations that produced them, when known.
    """

    def __init__(self, message: str, ops: Sequence[str] = (), layers: Sequence[str] = ()):
        super().__init__(message)
        self.ops = tuple(ops)
        self.layers = tuple(layers)


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What `export_tflite` wrote and how closely LiteRT matched Keras.

    ``max_rel_error`` is the max absolute error divided by the output scale (max |Keras output|),
    worst over outputs; ``top1_agreement`` is set for int8 classifiers (rank-2 outputs with more
    than one class) and None otherwise. ``ops`` lists the TFLite ops in execution order.
    """

    path: str
    size_bytes: int
    quantize: str | None
    max_abs_error: float
    max_rel_error: float
    top1_agreement: float | None
    ops: tuple[str, ...]
    parity_ok: bool

    def summary(self) -> str:
        top1 = "" if self.top1_agreement is None else f", top-1 agreement {self.top1_agreement:.1%}"
        bound = PARITY_BOUNDS[self.quantize]
        verdict = "ok" if self.parity_ok else "FAILED"
        return (
            f"{self.path}: {self.size_bytes / 1024:.1f} KiB, quantize={self.quantize}, "
            f"{len(self.ops)} ops ({', '.join(sorted(set(self.ops)))}); parity {verdict}: "
            f"max abs error {self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g} "
            f"(bound {bound:g}){top1}"
        )


@keyword_only("quantize", "representative_data", "sample_inputs", "check_ops")
def export_tflite(
    model: keras.Model,
    path: str | os.PathLike,
    *,
    quantize: str | None = None,
    representative_data: np.ndarray | Sequence[np.ndarray] | None = None,
    sample_inputs: np.ndarray | Sequence[np.ndarray] | None = None,
    check_ops: bool = True,
) -> ExportReport:
    """Convert ``model`` to a ``.tflite`` file and check it against Keras in LiteRT.

    The model is traced with batch size 1 (the edge-deployment case). Gated models (with
    ``ChannelGate`` layers) are compacted first with `tfchannelprune.compact`.

    Args:
        model: A functional or sequential Keras model with fixed input shapes.
        path: Where to write the ``.tflite`` file; written atomically (temp file + rename).
        quantize: None (float32), ``"float16"`` (float16 weights), ``"dynamic"`` (int8 weights,
            float activations) or ``"int8"`` (full integer, int8 inputs and outputs).
        representative_data: Inputs used to calibrate int8 activation ranges: an array (one
            model input) or a list of arrays (one per input), samples on axis 0, or a
            ``tf.data.Dataset`` / ``keras.utils.PyDataset`` of batches (labels are dropped;
            the first 500 samples are used). Required for
            ``"int8"``; its first samples are also the default parity inputs then.
        sample_inputs: Inputs for the parity check, same layout. Random normal when None.
        check_ops: Restrict int8 to integer kernels and reject non-builtin ops in the result.
            With False, int8 may fall back to float kernels for ops without an int8 version.

    Returns:
        An `ExportReport`. A failed parity check warns and sets ``parity_ok=False``.

    Raises:
        ValueError: Unknown ``quantize``, int8 without ``representative_data``, or data whose
            shapes do not match the model inputs; ``NonFiniteInputError`` for NaN/inf in them.
        UnsupportedOpError: An op (named, with its layer) has no builtin TFLite kernel.
        FileNotFoundError / NotADirectoryError / PermissionError: ``path`` cannot be written;
            raised before converting.
    """
    if quantize not in QUANTIZE_MODES:
        raise ValueError(
            f"Unknown quantization mode. Expected one of {QUANTIZE_MODES}. "
            f"Received: quantize={quantize!r}"
        )
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "quantize='int8' needs representative_data: a few hundred typical model inputs to "
            "calibrate activation ranges (or use quantize='dynamic', which needs none). "
            "Received: representative_data=None"
        )
    path = check_writable(path)
    specs = _input_specs(model)
    representative = None
    if representative_data is not None:
        representative = _as_arrays(representative_data, specs, "representative_data")
    flatbuffer = convert(_compact_if_gated(model), quantize, representative, check_ops)
    ops = list_ops(flatbuffer)
    if check_ops:
        _check_builtin_ops(ops)
    samples = _parity_inputs(sample_inputs, representative, specs, quantize)
    # Against the model as given: for a gated model this checks the compaction too.
    max_abs, max_rel, top1 = _parity(model, flatbuffer, samples, quantize)
    parity_ok = max_rel <= PARITY_BOUNDS[quantize] and (top1 is None or top1 >= MIN_TOP1_AGREEMENT)
    write_atomic(path, flatbuffer)
    report = ExportReport(
        path, len(flatbuffer), quantize, max_abs, max_rel, top1, tuple(ops), parity_ok
    )
    if not parity_ok:
        warnings.warn(f"LiteRT output differs from Keras: {report.summary()}", stacklevel=2)
    return report


def check_writable(path: str | os.PathLike) -> str:
    """Return ``path`` as a string if a file can be created there; raise an OSError if not
    (``core.checks.check_output_path``: a temp file is created and removed to be sure)."""
    return check_output_path(path, "path")


def write_atomic(path: str, content: bytes) -> None:
    """Write ``content`` to a temp file beside ``path`` and rename it: all or nothing."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def convert(
    model: keras.Model,
    quantize: str | None = None,
    representative: list[np.ndarray] | None = None,
    check_ops: bool = True,
) -> bytes:
    """Convert a Keras model to a TFLite flatbuffer with builtin ops only (no file written).

    Inputs are named ``input_0..`` and outputs ``output_0..`` (in ``keras.tree.flatten``
    order) in the ``serving_default`` signature; the batch size is fixed at 1.
    """
    import tensorflow as tf  # deferred: importing TF costs seconds

    specs = [
        tf.TensorSpec((1, *spec.shape[1:]), spec.dtype, name=f"input_{i}")
        for i, spec in enumerate(_input_specs(model))
    ]

    def serve(*inputs):
        outputs = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
        return {f"output_{i}": out for i, out in enumerate(keras.tree.flatten(outputs))}

    archive = keras.export.ExportArchive()
    archive.track(model)
    with tempfile.TemporaryDirectory() as saved_model, contextlib.redirect_stdout(io.StringIO()):
        archive.add_endpoint("serve", serve, specs)
        archive.write_out(saved_model)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
        _configure(converter, quantize, representative, check_ops)
        try:
            with warnings.catch_warnings():  # int8 calibration uses the deprecated tf.lite one
                warnings.filterwarnings("ignore", r"\s*Warning: tf.lite.Interpreter is deprecated")
                return converter.convert()
        except Exception as error:  # ConverterError lives in a private TF module
            raise _unsupported_op_error(error, model, quantize) from error


def _configure(converter, quantize, representative, check_ops) -> None:
    import tensorflow as tf

    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize is None:
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        int8_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.target_spec.supported_ops = int8_ops + (
            [] if check_ops else [tf.lite.OpsSet.TFLITE_BUILTINS]
        )
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        count = min(len(representative[0]), MAX_REPRESENTATIVE_SAMPLES)

        def dataset():
            for i in range(count):
                yield {f"input_{k}": x[i : i + 1] for k, x in enumerate(representative)}

        converter.representative_dataset = dataset


def _unsupported_op_error(error: Exception, model: keras.Model, quantize) -> Exception:
    """Turn a converter error about missing kernels into an `UnsupportedOpError`."""
    text = str(error)
    ops, scopes = [], []
    for item in getattr(error, "errors", ()):
        if item.operator.name:
            ops.append(item.operator.name.removeprefix("tf.").removeprefix("tfl."))
        scopes += [call.name.split("@")[0] for call in item.location.call]
    for match in re.finditer(r"(?:TF Select|Custom) ops: ([^\n]+)", text):
        ops += [op.strip() for op in match.group(1).split(",")]
    ops += re.findall(r"Quantization not yet supported for op: '?([\w.]+)", text)
    if not ops:
        return error
    ops = list(dict.fromkeys(ops))
    layers = _layers_in_scopes(model, scopes + re.findall(r'"([\w/]+)@', text))
    where = f" in layer(s) {layers}" if layers else ""
    hint = (
        "replace the layer with one TFLite builtins support"
        if quantize != "int8"
        else "use check_ops=False to let these ops run in float, or quantize='dynamic'"
    )
    return UnsupportedOpError(
        f"TFLite {'int8 ' if quantize == 'int8' else ''}builtin kernels cannot run op(s) {ops}"
        f"{where}; {hint}. Received: ops={ops}, layers={layers}",
        ops,
        layers,
    )


def _layers_in_scopes(model: keras.Model, scopes: Sequence[str]) -> list[str]:
    """Names of the model's layers that appear in TF name scopes like ``model_1/conv_1/Op``."""
    names = sorted(_operation_names(model), key=len, reverse=True)
    found = []
    for scope in scopes:
        for segment in scope.split("/"):
            for name in names:
                if re.fullmatch(re.escape(name) + r"(_\d+)*", segment) and name not in found:
                    found.append(name)
                    break
    return [name for name in found if name != model.name]


def _operation_names(model) -> list[str]:
    names = []
    for op in getattr(model, "operations", getattr(model, "layers", [])):
        names.append(op.name)
        if isinstance(op, keras.Model):
            names += _operation_names(op)
    return names


def _check_builtin_ops(ops: Sequence[str]) -> None:
    bad = sorted({op for op in ops if op.startswith("Flex") or op in ("CUSTOM", "DELEGATE")})
    if bad:
        raise UnsupportedOpError(
            f"The converted model contains non-builtin ops {bad}; LiteRT needs extra delegates "
            f"to run them. Received: ops={bad}",
            bad,
        )


def _compact_if_gated(model: keras.Model) -> keras.Model:
    from tfchannelprune.core.gate import is_wrapped
    from tfchannelprune.core.surgery import compact

    return compact(model) if is_wrapped(model) else model


def _input_specs(model: keras.Model) -> list:
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ValueError(
            "Export needs a built functional or sequential model with known inputs; call "
            f"the model on data or build it with keras.Input. Received: model={model.name}"
        )
    for spec in inputs:
        if any(dim is None for dim in spec.shape[1:]):
            raise ValueError(
                "Export needs fixed input shapes apart from the batch axis. Rebuild the model "
                f"with a fixed keras.Input shape. Received: input shape={tuple(spec.shape)}"
            )
    return list(inputs)


def _as_arrays(data, specs, name: str) -> list[np.ndarray]:
    """Normalise an array, a list of arrays (samples on axis 0, one per input), a
    ``tf.data.Dataset`` or a ``keras.utils.PyDataset`` of batches to one array per input."""
    if is_batched_source(data):
        data = first_inputs(data, MAX_REPRESENTATIVE_SAMPLES)
    arrays = [np.asarray(a) for a in ([data] if isinstance(data, np.ndarray) else data)]
    if len(arrays) != len(specs):
        raise ValueError(
            f"{name} must hold one array per model input ({len(specs)}). "
            f"Received: {name} with {len(arrays)} arrays"
        )
    for array, spec in zip(arrays, specs, strict=True):
        if tuple(array.shape[1:]) != tuple(spec.shape[1:]) or len(array) == 0:
            raise ValueError(
                f"{name} must have shape (samples, *{tuple(spec.shape[1:])}) for input "
                f"'{spec.name}'. Received: {name} shape={array.shape}"
            )
    hint = {
        "representative_data": "int8 ranges calibrated on it would be NaN or infinite",
        "sample_inputs": "the parity check would compare NaN with NaN and pass nothing",
    }.get(name, "")
    check_finite(arrays, name, hint)
    return [a.astype(spec.dtype) for a, spec in zip(arrays, specs, strict=True)]


def _parity_inputs(sample_inputs, representative, specs, quantize) -> list[np.ndarray]:
    if sample_inputs is not None:
        return _as_arrays(sample_inputs, specs, "sample_inputs")
    if quantize == "int8":  # random inputs would fall outside the calibrated ranges
        return [x[:32] for x in representative]
    rng = np.random.default_rng(0)
    return [
        rng.standard_normal((DEFAULT_PARITY_SAMPLES, *spec.shape[1:])).astype(spec.dtype)
        for spec in specs
    ]


def _parity(model, flatbuffer, samples, quantize):
    """Max abs error, max error relative to output scale, and int8 top-1 agreement.

    A non-finite output of either model makes both errors NaN (the check fails): ``max(0.0,
    nan)`` is 0.0, so NaN must never reach a ``max``.
    """
    reference = keras.tree.flatten(model(samples if len(samples) > 1 else samples[0]))
    reference = [keras.ops.convert_to_numpy(r).astype(np.float64) for r in reference]
    max_abs = max_rel = 0.0
    top1 = []
    for ref, out in zip(reference, run_tflite(flatbuffer, samples), strict=True):
        if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(out))):
            bad_keras, bad_lite = int(np.sum(~np.isfinite(ref))), int(np.sum(~np.isfinite(out)))
            warnings.warn(
                f"Non-finite outputs in the parity check (Keras {bad_keras}, LiteRT {bad_lite} "
                f"of {ref.size} values): parity fails. Check the model's weights for NaN.",
                stacklevel=3,
            )
            return float("nan"), float("nan"), None
        error = float(np.max(np.abs(out - ref)))
        max_abs = max(max_abs, error)
        max_rel = max(max_rel, error / max(float(np.max(np.abs(ref))), 1e-12))
        if quantize == "int8" and ref.ndim == 2 and ref.shape[1] > 1:
            top1.append(float(np.mean(np.argmax(out, 1) == np.argmax(ref, 1))))
    return max_abs, max_rel, (min(top1) if top1 else None)


# --- command line ----------------------------------------------------------------------------
