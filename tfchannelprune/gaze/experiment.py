"""The FastGaze experiment end to end: teacher, distilled student, Fisher-pruned students.

Theis et al. 2018 (arXiv:1801.05787) distil a small student from a large teacher, Fisher-prune it
with the cost term and compare accuracy against MACs. `run_experiment` does that on synthetic
scenes with known fixation densities (`make_dataset`), so the explained information gain (share
of the gold standard's) is exact. `examples/gaze.py` plots it and `benchmarks/gaze.py` checks
the paper's headline (>= 10x fewer MACs than the teacher at the same AUC).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import keras
import numpy as np

from tfchannelprune.core.cost import count_macs
from tfchannelprune.gaze import data as gaze_data
from tfchannelprune.gaze import metrics
from tfchannelprune.gaze.model import build_student, build_teacher
from tfchannelprune.gaze.pruning import PrunedStudent, pruning_path
from tfchannelprune.gaze.train import distil, distillation_targets, fit_centre_bias, train_gaze

__all__ = [
    "ExperimentConfig",
    "ExperimentResult",
    "cheapest_within",
    "evaluate_model",
    "run_experiment",
]


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Sizes and schedules of `run_experiment`.

    `macs_ratios` are the teacher-to-pruned-student MACs ratios of the pruned students (each
    beta prunes one path through them). `upsampling="matmul"` gives both models the
    `BlurredUpsampling` head (same function, fast in LiteRT). `quick()` is a small setting for
    tests.
    """

    size: tuple[int, int] = (64, 64)
    n_train: int = 560
    n_val: int = 120
    n_test: int = 240
    fixations_per_image: int = 40
    teacher_width: int = 16
    student_width: int = 8
    student_stages: int = 4
    upsampling: str = "matmul"
    epochs: int = 20
    batch_size: int = 16
    learning_rate: float = 2e-3
    centre_bias_sigma: float = 0.05
    uniform_weight: float = 0.01
    fixation_weight: float = 0.1
    macs_ratios: tuple[float, ...] = (10, 15, 20, 30, 50)
    betas: tuple[float | str, ...] = ("auto", 1e-3)
    steps_per_event: int = 5
    calibration_size: int = 32
    prune_learning_rate: float = 5e-4
    fine_tune_epochs: int = 3
    seed: int = 0

    @classmethod
    def quick(cls) -> ExperimentConfig:
        return cls(
            size=(32, 32), n_train=48, n_val=16, n_test=16, fixations_per_image=20,
            teacher_width=8, student_width=4, student_stages=3, epochs=2, macs_ratios=(10, 14),
            betas=("auto",), steps_per_event=2, calibration_size=16, fine_tune_epochs=1,
        )  # fmt: skip


@dataclasses.dataclass
class ExperimentResult:
    """Models and scores of one run.

    `rows` hold one dict per model: name, beta, macs, params, teacher_ratio and the metrics
    of `evaluate_model` on the test split (`val_auc_judd` on the validation split).
    `pruned` maps each beta to its `PrunedStudent`s, most MACs first.
    """

    config: ExperimentConfig
    train: gaze_data.GazeDataset
    val: gaze_data.GazeDataset
    test: gaze_data.GazeDataset
    baseline: np.ndarray
    teacher: keras.Model
    student: keras.Model
    pruned: dict
    rows: list[dict]
    timings: dict


def evaluate_model(model, dataset, baseline) -> dict:
    """`metrics.evaluate` plus the explained information gain (IG / gold-standard IG)."""
    log_p = model.predict(dataset.images, batch_size=32, verbose=0)
    scores = metrics.evaluate(log_p, dataset, baseline)
    gold = np.log(dataset.densities)
    gold_ig = metrics.dataset_log_likelihood(gold, dataset, baseline)
    scores["gold_information_gain"] = gold_ig
    scores["explained_information_gain"] = scores["information_gain"] / gold_ig
    return scores


def run_experiment(
    config: ExperimentConfig | None = None, log: Callable[[str], None] = print
) -> ExperimentResult:
    """Train the teacher, distil the student, prune it along `macs_ratios`, evaluate all."""
    config = config or ExperimentConfig()
    start, timings = time.perf_counter(), {}

    def lap(name):
        timings[name] = time.perf_counter() - start - sum(timings.values())
        log(f"[gaze] {name}: {timings[name]:.1f} s")

    c = config
    total = c.n_train + c.n_val + c.n_test
    everything = gaze_data.make_dataset(total, c.size, c.fixations_per_image, seed=c.seed)
    train, rest = everything.split(c.n_train)
    val, test = rest.split(c.n_val)
    cb = {"sigma": c.centre_bias_sigma, "uniform_weight": c.uniform_weight}
    baseline = metrics.centre_bias_log_density(train.fixation_maps(), **cb)
    lap("data")
    teacher, student = _train_models(config, train, cb)
    lap("teacher and student")
    targets = distillation_targets(teacher, train, c.fixation_weight)
    levels = [count_macs(teacher) / r for r in c.macs_ratios]
    pruned = {}
    for beta in c.betas:
        pruned[beta] = pruning_path(
            student, teacher, train, levels, targets=targets, beta=beta,
            steps_per_event=c.steps_per_event, calibration_size=c.calibration_size,
            batch_size=c.batch_size, learning_rate=c.prune_learning_rate,
            fine_tune_epochs=c.fine_tune_epochs, seed=c.seed,
        )  # fmt: skip
        lap(f"pruning, beta={beta}")
    rows = _rows(teacher, student, pruned, val, test, baseline)
    lap("evaluation")
    return ExperimentResult(
        config, train, val, test, baseline, teacher, student, pruned, rows, timings
    )


def _train_models(c: ExperimentConfig, train, cb) -> tuple[keras.Model, keras.Model]:
    shape = (*c.size, 3)
    fit = {
        "epochs": c.epochs, "batch_size": c.batch_size, "learning_rate": c.learning_rate,
        "augment": True, "seed": c.seed,
    }  # fmt: skip
    keras.utils.set_random_seed(c.seed)
    teacher = build_teacher(shape, width=c.teacher_width, upsampling=c.upsampling)
    fit_centre_bias(teacher, train, **cb)
    train_gaze(teacher, train, **fit)
    student = build_student(
        shape, width=c.student_width, stages=c.student_stages, upsampling=c.upsampling
    )
    fit_centre_bias(student, train, **cb)
    distil(student, teacher, train, fixation_weight=c.fixation_weight, **fit)
    return teacher, student


def _rows(teacher, student, pruned: dict[object, list[PrunedStudent]], val, test, baseline):
    teacher_macs = count_macs(teacher)
    entries = [("teacher", None, teacher), ("student", None, student)]
    for beta, results in pruned.items():
        entries += [("pruned", beta, r.model) for r in results]
    rows = []
    for name, beta, model in entries:
        macs = count_macs(model)
        row = {
            "model": name,
            "beta": beta,
            "macs": macs,
            "params": model.count_params(),
            "teacher_ratio": teacher_macs / macs,
        }
        row.update(evaluate_model(model, test, baseline))
        row["val_auc_judd"] = evaluate_model(model, val, baseline)["auc_judd"]
        rows.append(row)
    return rows


def cheapest_within(rows: list[dict], tolerance: float = 0.005, key: str = "val_auc_judd") -> dict:
    """The pruned row with the fewest MACs whose `key` is at least the teacher's - `tolerance`.

    Chosen on the validation split (`val_auc_judd`), so its test scores are not selected on.
    When no pruned model qualifies, the pruned row with the best `key`.
    """
    teacher = next(r for r in rows if r["model"] == "teacher")
    pruned = [r for r in rows if r["model"] == "pruned"]
    if not pruned:
        models = sorted({r["model"] for r in rows})
        raise ValueError(f"`rows` hold no pruned model. Received: models={models}")
    ok = [r for r in pruned if r[key] >= teacher[key] - tolerance]
    if not ok:
        return max(pruned, key=lambda r: r[key])
    return min(ok, key=lambda r: (r["macs"], -r[key]))
