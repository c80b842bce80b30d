"""Gaze metrics: hand-computed values on tiny maps, extremes, Keras twins."""

import math

import keras
import numpy as np
import pytest

from tfchannelprune.gaze import data, keras_metrics, metrics
from tfchannelprune.gaze.train import FixationNLL

S = np.arange(1.0, 10.0).reshape(3, 3)  # [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_auc_judd_hand_computed():
    # Thresholds 1 and 0 after min-max: ROC (0,0) (0,.5) (1,1) (1,1) -> 0.75.
    assert metrics.auc_judd(S, [[2, 2], [0, 0]], jitter=False) == pytest.approx(0.75)
    assert metrics.auc_judd(S, [[2, 2], [2, 1]], jitter=False) == pytest.approx(1.0)
    # A pixel fixated twice counts once (binary fixation map, MIT convention).
    assert metrics.auc_judd(S, [[2, 2], [0, 0], [0, 0]], jitter=False) == pytest.approx(0.75)
    assert metrics.auc_judd(S, [[2, 2], [0, 0]]) == pytest.approx(0.75, abs=1e-6)


def test_shuffled_and_pixel_auc_hand_computed():
    # Positives 9, 5 against negatives 5, 1: (1 + 1 + 0.5 + 1) / 4.
    assert metrics.shuffled_auc(S, [[2, 2], [1, 1]], [[1, 1], [0, 0]]) == pytest.approx(0.875)
    # 5 beats 4 of the 8 other pixels, 9 beats all 8.
    assert metrics.pixel_auc(S, [[1, 1], [2, 2]]) == pytest.approx(0.75)


def test_nss_cc_hand_computed():
    std = math.sqrt(60 / 9)
    assert metrics.nss(S, [[2, 2]]) == pytest.approx(4 / std)
    assert metrics.nss(S, [[2, 2], [2, 2], [0, 0]]) == pytest.approx(4 / std / 3)  # per fixation
    assert metrics.cc(S, S.T) == pytest.approx(0.6)  # 36 / 60, by hand
    assert metrics.cc(S, 2 * S + 1) == pytest.approx(1.0)


def test_kl_sim_hand_computed():
    gt = np.array([[0.5, 0.5], [0.0, 0.0]])
    assert metrics.kl_divergence(gt, np.full((2, 2), 7.0)) == pytest.approx(math.log(2))
    assert metrics.sim(np.array([[1.0, 0], [0, 0]]), gt) == pytest.approx(0.5)
    # MIT min-max normalises first: a map with a floor matches the floor-free ground truth.
    assert metrics.sim(np.array([[2.0, 1], [1, 1]]), np.array([[1.0, 0], [0, 0]])) == 1.0


def test_auc_judd_conventions_hand_computed():
    # Fixations on 9, 1 and 1 again. MIT: positives {9, 1} (binary map), ROC (0,0) (0,1/2)
    # (1,1) -> 0.75. pysaliency: positives (9, 1, 1), negatives the 7 unfixated pixels, ROC
    # (0,0) (0,1/3) (1,1) -> (1/3 + 1) / 2 = 2/3.
    fix = [[2, 2], [0, 0], [0, 0]]
    assert metrics.auc_judd(S, fix, jitter=False, convention="mit") == pytest.approx(0.75)
    assert metrics.auc_judd(S, fix, jitter=False, convention="pysaliency") == pytest.approx(2 / 3)
    # No duplicate: both conventions give the same ROC, with jitter too (no ties to break).
    for convention in ("mit", "pysaliency"):
        assert metrics.auc_judd(S, [[2, 2], [0, 0]], convention=convention) == pytest.approx(
            0.75, abs=1e-6
        )
    # pysaliency does not min-max normalise, so its jitter is absolute: on a map of 1e-9 scale,
    # N(0, 1) * 1e-7 noise swamps the values (MIT's jitter is relative and changes nothing).
    tiny = S * 1e-9
    assert metrics.auc_judd(tiny, [[2, 2], [2, 1]], convention="mit") == pytest.approx(1.0)
    assert metrics.auc_judd(tiny, [[2, 2], [2, 1]], convention="pysaliency") < 0.99


def test_pixel_auc_conventions_hand_computed():
    # Fixations on 5 and 9. "mit" leaves the fixated pixel out: (4/8 + 8/8) / 2. "pysaliency"
    # keeps it as a tie among all 9 negatives: (4.5/9 + 8.5/9) / 2 = 13/18.
    fix = [[1, 1], [2, 2]]
    assert metrics.pixel_auc(S, fix, convention="mit") == pytest.approx(0.75)
    assert metrics.pixel_auc(S, fix, convention="pysaliency") == pytest.approx(13 / 18)
    # A pixel fixated twice counts twice in both: (8/8 + 8/8 + 4/8) / 3 and (8.5 + 8.5 + 4.5) / 27.
    fix = [[2, 2], [2, 2], [1, 1]]
    assert metrics.pixel_auc(S, fix) == pytest.approx(2.5 / 3)
    assert metrics.pixel_auc(S, fix, convention="pysaliency") == pytest.approx(21.5 / 27)
    flat = np.full((3, 3), 0.2)
    for convention in ("mit", "pysaliency"):
        assert metrics.pixel_auc(flat, fix, convention=convention) == 0.5


def test_sim_conventions_hand_computed():
    floor = np.array([[2.0, 1], [1, 1]])
    gt = np.array([[1.0, 0], [0, 0]])
    assert metrics.sim(floor, gt, convention="mit") == 1.0  # the floor of 1 is removed
    assert metrics.sim(floor, gt, convention="pysaliency") == pytest.approx(0.4)  # min(2/5, 1)
    # pysaliency shifts only maps with negative values: [-1, 1, 1, 3] -> [0, 2, 2, 4] / 8.
    signed = np.array([[-1.0, 1], [1, 3]])
    gt = np.array([[0.0, 0], [1, 1]])  # [0, 0, 1/2, 1/2]
    assert metrics.sim(signed, gt, convention="pysaliency") == pytest.approx(0.25 + 0.5)
    # MIT: min-max [0, 1/2, 1/2, 1] / 2 -> [0, 1/4, 1/4, 1/2]; min with gt: 1/4 + 1/2.
    assert metrics.sim(signed, gt, convention="mit") == pytest.approx(0.75)
    # No negative value, no shift: [3, 1, 1, 3] / 8 against [0, 0, 1/2, 1/2] -> 1/8 + 3/8.
    assert metrics.sim(np.array([[3.0, 1], [1, 3]]), gt, "pysaliency") == pytest.approx(0.5)


def test_evaluate_passes_the_convention_and_rejects_unknown_ones():
    ds = data.make_dataset(3, size=(12, 12), fixations_per_image=30, seed=3)
    logp = np.log(0.5 * ds.densities + 0.5 / 144)
    mit = metrics.evaluate(logp, ds)
    pys = metrics.evaluate(logp, ds, convention="pysaliency")
    for key, fn in (
        ("auc_judd", lambda p, f, i, c: metrics.auc_judd(p, f, seed=i, convention=c)),
        ("pixel_auc", lambda p, f, i, c: metrics.pixel_auc(p, f, convention=c)),
        ("sim", lambda p, f, i, c: metrics.sim(p, ds.densities[i], convention=c)),
    ):
        for scores, c in ((mit, "mit"), (pys, "pysaliency")):
            expected = np.mean([fn(np.exp(logp[i]), ds.fixations_of(i), i, c) for i in range(3)])
            assert scores[key] == pytest.approx(expected, abs=1e-12), (key, c)
        assert mit[key] != pys[key], key  # 30 fixations on 144 pixels: duplicates, a floor
    for key in ("log_likelihood", "shuffled_auc", "nss", "cc", "kl"):
        assert mit[key] == pys[key], key
    for fn in (
        lambda: metrics.evaluate(logp, ds, convention="MIT"),
        lambda: metrics.auc_judd(S, [[0, 0]], convention="judd"),
        lambda: metrics.sim(S, S, convention=None),
        lambda: metrics.pixel_auc(S, [[0, 0]], convention="tuebingen"),
    ):
        with pytest.raises(ValueError, match="convention"):
            fn()


def test_log_likelihood_and_information_gain_hand_computed():
    log_p = np.log(np.array([[0.5, 0.25], [0.25, 1e-9]]))
    assert metrics.log_likelihood(log_p, [[0, 0], [0, 1]]) == pytest.approx(-1.5)
    uniform = np.full((2, 2), np.log(0.25))
    assert metrics.information_gain(log_p, uniform, [[0, 0], [0, 1]]) == pytest.approx(0.5)
    assert metrics.log_likelihood(np.full((3, 3), -np.log(9)), [[1, 2]]) == pytest.approx(
        -math.log2(9)
    )


def test_perfect_prediction():
    dens = data.make_dataset(1, size=(16, 16), fixations_per_image=0, seed=2).densities[0]
    assert metrics.kl_divergence(dens, dens) == pytest.approx(0.0, abs=1e-12)
    assert metrics.cc(dens, dens) == pytest.approx(1.0)
    assert metrics.sim(dens, dens) == pytest.approx(1.0)


def test_uniform_prediction():
    rng = np.random.default_rng(0)
    uniform = np.full((8, 8), -np.log(64))
    few = []
    for seed in range(200):
        fix = rng.integers(0, 8, size=(5, 2))
        assert metrics.information_gain(uniform, uniform, fix) == 0.0
        assert metrics.pixel_auc(np.exp(uniform), fix) == pytest.approx(0.5)
        assert metrics.nss(np.exp(uniform), fix) == 0.0
        few.append(metrics.auc_judd(np.exp(uniform), fix, seed=seed))  # jitter breaks ties
    # AUC-Judd only has thresholds at the fixations: with few of them the trapezoids over-count
    # (documented bias, 0.5 * FP_last / N_f), with many the jittered uniform map scores 0.5.
    assert 0.55 < np.mean(few) < 0.65
    big = np.full((32, 32), 1 / 1024)
    many = [metrics.auc_judd(big, rng.integers(0, 32, (300, 2)), seed=s) for s in range(20)]
    assert np.mean(many) == pytest.approx(0.5, abs=0.015)
    assert metrics.cc(np.exp(uniform), rng.random((8, 8))) == 0.0


def test_gold_standard_scores_well_and_centre_bias_baseline():
    ds = data.make_dataset(20, size=(24, 24), fixations_per_image=30, seed=5)
    train, test = ds.split(10)
    base = metrics.centre_bias_log_density(train.fixation_maps(), sigma=0.1)
    assert np.exp(base).sum() == pytest.approx(1.0)
    uniform_base = metrics.centre_bias_log_density(train.fixation_maps(), uniform_weight=1.0)
    np.testing.assert_allclose(uniform_base, -np.log(24 * 24))
    scores = metrics.evaluate(np.log(test.densities), test, base)
    assert scores["information_gain"] > 0.3
    assert scores["auc_judd"] > 0.7 and scores["nss"] > 0.8
    assert scores["kl"] == pytest.approx(0.0, abs=1e-9) and scores["sim"] == pytest.approx(1.0)
    assert set(scores) == {
        "log_likelihood",
        "information_gain",
        "auc_judd",
        "shuffled_auc",
        "pixel_auc",
        "nss",
        "cc",
        "kl",
        "sim",
    }
    with pytest.raises(ValueError, match="log_densities"):
        metrics.evaluate(np.zeros((3, 24, 24)), test)


def _random_batch(seed=0, n=4, size=6, fixations=5):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(n, size, size))
    log_p = scores - np.log(np.exp(scores).sum(axis=(1, 2), keepdims=True))
    fix = np.column_stack(
        [np.repeat(np.arange(n), fixations), rng.integers(0, size, (n * fixations, 2))]
    )
    counts = np.zeros((n, size, size))
    np.add.at(counts, tuple(fix.T), 1)
    return log_p.astype(np.float32), counts.astype(np.float32), fix


def _per_fixation(fn, log_p, fix):
    return np.mean([fn(log_p[i], fix[fix[:, 0] == i, 1:]) for i in range(len(log_p))])


def test_keras_metrics_match_numpy_over_batches():
    log_p, counts, fix = _random_batch()
    base = np.log(np.full((6, 6), 1 / 36.0)) + np.linspace(-0.2, 0.2, 36).reshape(6, 6)
    expected = {
        "ll": _per_fixation(metrics.log_likelihood, log_p, fix),
        "ig": _per_fixation(lambda lp, f: metrics.information_gain(lp, base, f), log_p, fix),
        "nss": _per_fixation(lambda lp, f: metrics.nss(np.exp(lp), f), log_p, fix),
        "auc": _per_fixation(lambda lp, f: metrics.pixel_auc(lp, f), log_p, fix),
    }
    found = {
        "ll": keras_metrics.LogLikelihood(),
        "ig": keras_metrics.InformationGain(base),
        "nss": keras_metrics.NSS(),
        "auc": keras_metrics.FixationAUC(),
    }
    for key, metric in found.items():
        metric.update_state(counts[:2], log_p[:2])  # two batches accumulate per fixation
        metric.update_state(counts[2:], log_p[2:])
        assert float(metric.result()) == pytest.approx(expected[key], abs=1e-4), key
        metric.reset_state()
        assert float(metric.result()) == 0.0


def test_keras_metrics_on_uniform_prediction():
    _, counts, _ = _random_batch(seed=1)
    uniform = np.full(counts.shape, -np.log(36.0), np.float32)
    for metric, value in (
        (keras_metrics.InformationGain(), 0.0),
        (keras_metrics.NSS(), 0.0),
        (keras_metrics.FixationAUC(), 0.5),
        (keras_metrics.LogLikelihood(), -math.log2(36)),
    ):
        metric.update_state(counts, uniform)
        assert float(metric.result()) == pytest.approx(value, abs=1e-5), metric.name


@pytest.mark.parametrize(
    "metric",
    [
        keras_metrics.LogLikelihood(),
        keras_metrics.InformationGain(np.zeros((2, 3))),
        keras_metrics.NSS(),
        keras_metrics.FixationAUC(name="auc"),
    ],
    ids=lambda m: m.name,
)
def test_keras_metrics_serialize(metric):
    restored = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert type(restored) is type(metric) and restored.name == metric.name
    assert keras.metrics.serialize(metric)["registered_name"].startswith("tfchannelprune>")
    if isinstance(metric, keras_metrics.InformationGain):
        np.testing.assert_array_equal(restored.baseline, metric.baseline)


def test_keras_metrics_run_in_compiled_evaluate():
    log_p, counts, fix = _random_batch(seed=2, n=6)
    model = keras.Sequential([keras.Input((6, 6)), keras.layers.Identity()])
    model.compile(
        loss=FixationNLL(), metrics=[keras_metrics.FixationAUC(), keras_metrics.LogLikelihood()]
    )
    result = model.evaluate(log_p, counts, batch_size=4, return_dict=True, verbose=0)
    assert result["fixation_auc"] == pytest.approx(
        _per_fixation(metrics.pixel_auc, log_p, fix), abs=1e-4
    )
    # The loss is the NLL per fixation in nats: -LL * ln 2.
    assert result["loss"] == pytest.approx(-result["log_likelihood"] * math.log(2), rel=1e-4)


def test_information_gain_rejects_bad_baseline():
    with pytest.raises(ValueError, match="baseline"):
        keras_metrics.InformationGain("centre")
    with pytest.raises(ValueError, match="baseline"):
        keras_metrics.InformationGain(np.zeros(4))
