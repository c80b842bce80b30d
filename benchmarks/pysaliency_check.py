"""Compare `tfchannelprune.gaze.metrics` with pysaliency 0.2.22's own code (a one-off check).

Usage::

    pip download --no-deps pysaliency==0.2.22 && tar xzf pysaliency-0.2.22.tar.gz
    python benchmarks/pysaliency_check.py pysaliency-0.2.22

pysaliency needs numba (not installed here): it is stubbed with an identity `jit`, so
pysaliency's functions run as plain Python. Its package `__init__` pulls many dependencies, so
`metrics.py` and `numba_utils.py` are loaded as files, and the per-image glue of
`SaliencyMapModel.AUC_per_image` / `AUC_Judd` is replicated (positives at the fixations;
negatives the unfixated pixels, all pixels, or the other fixations). 30 random 12x16 maps with
25 fixations each (one duplicated), seed 0. Prints the max |difference| per metric.
"""

import importlib.util
import os
import sys
import types

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tfchannelprune.gaze import metrics as M  # noqa: E402

np.trapz = getattr(np, "trapz", np.trapezoid)  # numpy 2 renamed it; pysaliency predates that


def load(name: str, path: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(source: str) -> dict:
    numba = types.ModuleType("numba")
    numba.jit = lambda *a, **k: lambda f: f
    sys.modules.setdefault("numba", numba)
    pm = load("ps_metrics", os.path.join(source, "pysaliency", "metrics.py"))
    nu = load("ps_numba", os.path.join(source, "pysaliency", "numba_utils.py"))
    rng = np.random.default_rng(0)
    worst: dict[str, float] = {}

    def rec(key, a, b):
        worst[key] = max(worst.get(key, 0.0), abs(float(a) - float(b)))

    for _ in range(30):
        h, w = 12, 16
        logits = rng.normal(size=(h, w)) * 2
        logp = logits - np.log(np.exp(logits).sum())
        p = np.exp(logp)
        gt = rng.random((h, w)) ** 3
        gt /= gt.sum()
        fix = rng.integers(0, [h, w], size=(25, 2))
        fix[1] = fix[0]
        other = rng.integers(0, [h, w], size=(60, 2))
        ys, xs = fix[:, 0], fix[:, 1]
        base = np.full((h, w), -np.log(h * w))
        rec("nss", M.nss(p, fix), pm.NSS(p, xs, ys).mean())
        rec("cc", M.cc(p, gt), pm.CC(p, gt))
        rec("kl", M.kl_divergence(gt, p), pm.MIT_KLDiv(p, gt))
        rec("log_likelihood", M.log_likelihood(logp, fix), np.mean(logp[ys, xs]) / np.log(2))
        ig = np.mean(logp[ys, xs] - base[ys, xs]) / np.log(2)
        rec("information_gain", M.information_gain(logp, base, fix), ig)
        negatives = p[other[:, 0], other[:, 1]]
        rec(
            "shuffled_auc",
            M.shuffled_auc(p, fix, other),
            nu.general_roc_numba(p[ys, xs], negatives, 0)[0],
        )
        fixation_map = np.zeros((h, w))
        nu.fill_fixation_map(fixation_map, fix)
        judd = nu.general_roc_numba(p[ys, xs], p[fixation_map == 0].ravel(), 1)[0]
        uniform = nu.general_roc_numba(p[ys, xs], p.ravel(), 0)[0]
        similarity = pm.SIM(logits, gt)  # negative values: exercises pysaliency's shift
        for c, label in (("pysaliency", "'pysaliency'"), ("mit", "'mit' (differs)")):
            rec(f"auc_judd, convention={label}", M.auc_judd(p, fix, False, convention=c), judd)
            rec(f"pixel_auc, convention={label}", M.pixel_auc(p, fix, c), uniform)
            rec(f"sim, convention={label}", M.sim(logits, gt, c), similarity)
    for key, value in worst.items():
        print(f"{key:40s} max |diff| {value:.3e}")
    return worst


if __name__ == "__main__":
    main(sys.argv[1])
