"""Saliency / gaze-prediction metrics in NumPy, one documented convention each.

Conventions follow the MIT/Tübingen saliency benchmark (Bylinskii et al., "What do different
evaluation metrics tell us about saliency models?", TPAMI 2019; MATLAB code in
`cvzoya/saliency/code_forMetrics`) and pysaliency (Kümmerer et al.), with the
definitions of docs/gaze.md; where the two differ the docstring says which one is followed.

Shapes: a saliency map, density or log-density is (H, W); `fixations` is an int array (k, 2) of
(y, x) pixel coordinates, 0-based; a pixel fixated twice appears twice. Log-densities are natural
logs (what the model outputs); log-likelihoods are reported in bits per fixation.

Keras versions of the metrics a training loop needs live in `tfchannelprune.gaze.keras_metrics`.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

__all__ = [
    "auc_judd",
    "cc",
    "centre_bias_log_density",
    "dataset_log_likelihood",
    "evaluate",
    "information_gain",
    "kl_divergence",
    "log_likelihood",
    "nss",
    "pixel_auc",
    "shuffled_auc",
    "sim",
]

MATLAB_EPS = 2.220446049250313e-16  # MATLAB `eps`, used by the MIT KL code


def auc_judd(saliency, fixations, jitter: bool = True, seed: int = 0) -> float:
    """AUC-Judd, as MIT `AUC_Judd.m` (and pysaliency `AUC_Judd`).

    Positives are the fixated pixels of the binary fixation map (a pixel fixated twice counts
    once); negatives are all other pixels; the thresholds are the saliency values at the fixated
    pixels. The map is min-max normalised and, with `jitter`, tiny uniform noise
    (`U(0, 1) * 1e-7`, seeded) breaks ties as in the MIT code. For threshold i (descending):
    `TP_i = i / N_f`, `FP_i = (#{S >= t_i} - i) / (N_pixels - N_f)`; the ROC gets end points
    (0, 0) and (1, 1) and is integrated with the trapezoid rule.

    Because thresholds sit only at the fixations, each trapezoid draws a diagonal where the exact
    ROC is a step: the score is biased upwards by `0.5 * FP_last / N_f` (`FP_last` the false
    positive rate at the lowest fixated value). It vanishes with many fixations, but a random map
    with 5 fixations on 64 pixels scores about 0.6. `pixel_auc` has no such bias.
    """
    s = _minmax(np.asarray(saliency, dtype=np.float64))
    if jitter:
        s = _minmax(s + np.random.default_rng(seed).random(s.shape) * 1e-7)
    fixated = np.zeros(s.shape, dtype=bool)
    fix = _as_fixations(fixations, s.shape)
    fixated[fix[:, 0], fix[:, 1]] = True
    n_fix, n_pix = int(fixated.sum()), s.size
    if n_fix == 0 or n_fix == n_pix:
        return math.nan
    thresholds = np.sort(s[fixated])[::-1]
    above = np.searchsorted(np.sort(s.ravel()), thresholds, side="left")
    above = n_pix - above  # #{S >= t}
    i = np.arange(1, n_fix + 1)
    tp = np.concatenate([[0.0], i / n_fix, [1.0]])
    fp = np.concatenate([[0.0], (above - i) / (n_pix - n_fix), [1.0]])
    return float(np.trapezoid(tp, fp))


def shuffled_auc(saliency, fixations, other_fixations) -> float:
    """Shuffled AUC: negatives are the fixations of other images (pysaliency `sAUC` style).

    Positives are the saliency values at this image's fixations, negatives the values at the
    locations fixated on *other* images (each fixation counts, duplicates included). Every value
    is a threshold, so the result is the exact Mann-Whitney statistic
    `P(s_pos > s_neg) + 0.5 * P(s_pos == s_neg)`: no sampling, no jitter. Because the negatives
    carry the centre bias, a pure centre-bias map scores about 0.5. MIT `AUC_shuffled.m` instead
    samples negatives from 10 other images in 100 splits and thresholds in steps of 0.1, so its
    numbers differ slightly. Other images' coordinates must already be in this image's frame
    (all images share one size here).
    """
    s = np.asarray(saliency, dtype=np.float64)
    pos = _values_at(s, fixations)
    neg = _values_at(s, other_fixations)
    return _rank_auc(pos, neg)


def pixel_auc(saliency, fixations) -> float:
    """AUC with all pixels as negatives and every value a threshold (pysaliency `AUC`, uniform).

    `mean over fixations of [#{pixels with lower saliency} + 0.5 #{other pixels with equal
    saliency}] / (N_pixels - 1)`: each fixation counts, ties count half, so a constant map scores
    exactly 0.5. This is the convention of the Keras metric `FixationAUC`.
    """
    s = np.asarray(saliency, dtype=np.float64)
    pos = _values_at(s, fixations)
    if len(pos) == 0:
        return math.nan
    flat = np.sort(s.ravel())
    lower = np.searchsorted(flat, pos, side="left")
    equal = np.searchsorted(flat, pos, side="right") - lower - 1  # minus the fixated pixel
    return float(np.mean((lower + 0.5 * equal) / (flat.size - 1)))


def nss(saliency, fixations) -> float:
    """Normalised scanpath saliency, per fixation (pysaliency convention).

    The map is standardised, `(S - mean(S)) / std(S)` with `ddof=0`, and averaged over the
    fixations, duplicates included (MIT `NSS.m` averages over the fixated pixels of a binary map
    instead). A constant map has no information: it scores 0.
    """
    s = np.asarray(saliency, dtype=np.float64)
    if np.ptp(s) == 0:  # not `std == 0`: the std of a constant map can round to 1e-19
        return 0.0
    return float(np.mean((_values_at(s, fixations) - s.mean()) / s.std()))


def cc(saliency, density) -> float:
    """Linear (Pearson) correlation between a saliency map and the ground-truth density.

    As MIT `CC.m` (`corr2` of the standardised maps). The ground truth is the dataset's blurred
    fixation map (or, for synthetic data, the true density). 0 if either map is constant.
    """
    a = np.asarray(saliency, dtype=np.float64).ravel()
    b = np.asarray(density, dtype=np.float64).ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(np.sum(a * a) * np.sum(b * b)))
    return 0.0 if denom == 0 else float(np.sum(a * b) / denom)


def kl_divergence(density, prediction) -> float:
    """KL(ground truth || prediction) in nats, as MIT `KLdiv.m`.

    Both maps are normalised to sum 1 (P ground truth, Q prediction) and
    `KL = sum P * log(eps + P / (Q + eps))` with `eps = 2.2204e-16` (MATLAB `eps`). Lower is
    better; 0 for a perfect prediction.
    """
    p = _sum_normalise(np.asarray(density, dtype=np.float64))
    q = _sum_normalise(np.asarray(prediction, dtype=np.float64))
    return float(np.sum(p * np.log(MATLAB_EPS + p / (q + MATLAB_EPS))))


def sim(prediction, density) -> float:
    """Similarity (histogram intersection), as MIT `similarity.m`.

    Each map is min-max normalised, then normalised to sum 1, and `SIM = sum min(P, Q)`, in
    [0, 1]; 1 for identical maps. A constant map (where min-max is undefined) is taken as
    uniform.
    """
    p = _sum_normalise(_minmax(np.asarray(prediction, dtype=np.float64)))
    q = _sum_normalise(_minmax(np.asarray(density, dtype=np.float64)))
    return float(np.sum(np.minimum(p, q)))


def log_likelihood(log_density, fixations) -> float:
    """Mean log-likelihood of the fixations under the model, in bits per fixation.

    `LL = (1/N) sum_i log2 p(x_i | I)`, computed from the model's own log-density (natural log,
    summing to 1 over pixels after `exp`), as in Theis et al. 2018 and DeepGaze II
    (arXiv:1610.01563), not from a min-max normalised map as MIT `InfoGain.m`.
    """
    values = _values_at(np.asarray(log_density, dtype=np.float64), fixations)
    return math.nan if len(values) == 0 else float(np.mean(values) / math.log(2))


def information_gain(log_density, baseline_log_density, fixations) -> float:
    """Information gain over a baseline, bits per fixation.

    `IG = (1/N) sum_i [log2 p(x_i | I) - log2 p_base(x_i)]`. Benchmarks use a centre-bias
    baseline (an image-independent density from the fixations on other images, see
    `centre_bias_log_density`); against a uniform baseline, `IG = LL + log2(H * W)`.
    """
    diff = np.asarray(log_density, dtype=np.float64) - np.asarray(
        baseline_log_density, dtype=np.float64
    )
    return log_likelihood(diff, fixations)


def centre_bias_log_density(
    fixation_maps, sigma: float = 0.05, uniform_weight: float = 0.01
) -> np.ndarray:
    """An image-independent baseline: all fixations pooled, blurred, mixed with uniform.

    Args:
        fixation_maps: (N, H, W) fixation counts of the images the baseline is fitted on (use
            other images than those it is evaluated on).
        sigma: Gaussian blur std as a fraction of min(H, W).
        uniform_weight: weight of a uniform density mixed in so no pixel has zero probability.

    Returns:
        Natural log-density (H, W), `exp` sums to 1.
    """
    maps = np.asarray(fixation_maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"`fixation_maps` must be (N, H, W). Received: shape={maps.shape}")
    if not 0 < uniform_weight <= 1:
        raise ValueError(f"`uniform_weight` must be in (0, 1]. Received: {uniform_weight}")
    pooled = ndimage.gaussian_filter(maps.sum(axis=0), sigma * min(maps.shape[1:]), mode="nearest")
    density = _sum_normalise(pooled)
    density = (1 - uniform_weight) * density + uniform_weight / density.size
    return np.log(density)


def dataset_log_likelihood(log_densities, dataset, baseline_log_density=None) -> float:
    """LL (or, with a baseline, IG) in bits per fixation, averaged over all fixations."""
    logp = np.asarray(log_densities, dtype=np.float64)
    fix = dataset.fixations
    if len(fix) == 0:
        return math.nan
    values = logp[fix[:, 0], fix[:, 1], fix[:, 2]]
    if baseline_log_density is not None:
        values = values - np.asarray(baseline_log_density, dtype=np.float64)[fix[:, 1], fix[:, 2]]
    return float(np.mean(values) / math.log(2))


def evaluate(log_densities, dataset, baseline_log_density=None, seed: int = 0) -> dict:
    """All metrics of a probabilistic model on a `GazeDataset`.

    LL and IG are averaged over fixations; the others are computed per image (on the density
    `exp(log_density)`) and averaged over images, as the MIT benchmark does. `cc`, `kl` and `sim`
    compare with `dataset.densities` and are left out when the dataset has none.

    Returns:
        dict with keys log_likelihood, [information_gain], auc_judd, shuffled_auc, pixel_auc,
        nss, [cc, kl, sim].
    """
    logp = np.asarray(log_densities, dtype=np.float64)
    if logp.shape != (dataset.n_images, *dataset.size):
        raise ValueError(
            f"`log_densities` must have shape {(dataset.n_images, *dataset.size)}. "
            f"Received: {logp.shape}"
        )
    out = {"log_likelihood": dataset_log_likelihood(logp, dataset)}
    if baseline_log_density is not None:
        out["information_gain"] = dataset_log_likelihood(logp, dataset, baseline_log_density)
    per_image = {k: [] for k in ("auc_judd", "shuffled_auc", "pixel_auc", "nss", "cc", "kl", "sim")}
    for i in range(dataset.n_images):
        fix = dataset.fixations_of(i)
        if len(fix) == 0:
            continue
        p = np.exp(logp[i])
        others = dataset.fixations[dataset.fixations[:, 0] != i, 1:]
        per_image["auc_judd"].append(auc_judd(p, fix, seed=seed + i))
        per_image["shuffled_auc"].append(shuffled_auc(p, fix, others))
        per_image["pixel_auc"].append(pixel_auc(p, fix))
        per_image["nss"].append(nss(p, fix))
        if dataset.densities is not None:
            per_image["cc"].append(cc(p, dataset.densities[i]))
            per_image["kl"].append(kl_divergence(dataset.densities[i], p))
            per_image["sim"].append(sim(p, dataset.densities[i]))
    out.update({k: float(np.nanmean(v)) for k, v in per_image.items() if v})
    return out


# ----------------------------------------------------------------------------- helpers


def _as_fixations(fixations, shape) -> np.ndarray:
    fix = np.asarray(fixations, dtype=np.int64).reshape(-1, 2)
    if len(fix) and (fix.min() < 0 or fix[:, 0].max() >= shape[0] or fix[:, 1].max() >= shape[1]):
        raise ValueError(
            f"`fixations` must be (y, x) pixel indices inside a map of shape {shape}. "
            f"Received: min={fix.min(axis=0).tolist()}, max={fix.max(axis=0).tolist()}"
        )
    return fix


def _values_at(s: np.ndarray, fixations) -> np.ndarray:
    fix = _as_fixations(fixations, s.shape)
    return s[fix[:, 0], fix[:, 1]]


def _rank_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    if len(pos) == 0 or len(neg) == 0:
        return math.nan
    neg = np.sort(neg)
    lower = np.searchsorted(neg, pos, side="left")
    equal = np.searchsorted(neg, pos, side="right") - lower
    return float(np.mean((lower + 0.5 * equal) / len(neg)))


def _minmax(s: np.ndarray) -> np.ndarray:
    lo, hi = s.min(), s.max()
    return np.ones_like(s) if hi == lo else (s - lo) / (hi - lo)


def _sum_normalise(s: np.ndarray) -> np.ndarray:
    total = s.sum()
    return np.full_like(s, 1.0 / s.size) if total <= 0 else s / total
