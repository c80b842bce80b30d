"""Fixation datasets: the `GazeDataset` container and a synthetic generator.

No fixation dataset can be downloaded here, so `make_dataset` composes scenes from real photos
bundled with scikit-image (`skimage.data`) and pastes salient objects on them: faces (real LFW
crops from `skimage.data.lfw_subset` or procedural face blobs), text patches (crops of the
scanned page in `skimage.data.page`) and high-contrast coloured items. Each image gets a known
fixation density (`tfchannelprune.gaze.scenes`)

    p(y, x) ∝ saliency(y, x) * centre_bias(y, x)

and fixations are sampled from it. Because the density is known exactly, the gold-standard
log-likelihood (the best any model can reach, in bits per fixation) is computable; see
`gold_standard_log_likelihood`. Real datasets in the usual folder layout are loaded by
`tfchannelprune.gaze.folders.load_fixation_folder`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfchannelprune.gaze import metrics
from tfchannelprune.gaze.scenes import SceneConfig, draw_scene

__all__ = [
    "GazeDataset",
    "SceneConfig",
    "as_tf_dataset",
    "expected_gold_standard_log_likelihood",
    "gold_standard_log_likelihood",
    "make_dataset",
]


@dataclasses.dataclass(frozen=True, eq=False)
class GazeDataset:
    """Images with fixations and, where known, a ground-truth fixation density.

    Attributes:
        images: float32 array (N, H, W, 3) with values in [0, 1].
        fixations: int32 array (F, 3); each row is `(image_index, y, x)` in pixels, 0-based.
        densities: float64 array (N, H, W), each map summing to 1, or None. For synthetic data it
            is the exact density the fixations were drawn from; for real data it is the
            dataset's (blurred) fixation map, normalised.
        densities_exact: True when `densities` is the true sampling density (synthetic data), so
            the gold-standard log-likelihood is defined.
        names: one name per image (file stem for real data).
    """

    images: np.ndarray
    fixations: np.ndarray
    densities: np.ndarray | None = None
    densities_exact: bool = False
    names: tuple[str, ...] = ()

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise ValueError(
                f"`images` must have shape (N, H, W, 3). Received: images.shape={self.images.shape}"
            )
        fix = np.asarray(self.fixations)
        if fix.ndim != 2 or fix.shape[1] != 3:
            raise ValueError(
                "`fixations` must have shape (F, 3) with rows (image_index, y, x). "
                f"Received: fixations.shape={fix.shape}"
            )
        n, h, w = self.images.shape[:3]
        if len(fix) and (
            fix[:, 0].min() < 0
            or fix[:, 0].max() >= n
            or fix[:, 1].min() < 0
            or fix[:, 1].max() >= h
            or fix[:, 2].min() < 0
            or fix[:, 2].max() >= w
        ):
            raise ValueError(
                f"`fixations` must index images of shape ({n}, {h}, {w}). "
                f"Received: min={fix.min(axis=0).tolist()}, max={fix.max(axis=0).tolist()}"
            )
        if self.densities is not None and self.densities.shape != (n, h, w):
            raise ValueError(
                f"`densities` must have shape {(n, h, w)}. Received: {self.densities.shape}"
            )

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def fixations_of(self, index: int) -> np.ndarray:
        """The (y, x) fixations of image `index`, shape (k, 2)."""
        return self.fixations[self.fixations[:, 0] == index, 1:]

    def fixation_maps(self, dtype="float32") -> np.ndarray:
        """Fixation counts per pixel, shape (N, H, W) (a pixel fixated twice holds 2)."""
        maps = np.zeros((self.n_images, *self.size), dtype=dtype)
        np.add.at(maps, (self.fixations[:, 0], self.fixations[:, 1], self.fixations[:, 2]), 1)
        return maps

    def subset(self, indices) -> GazeDataset:
        """A dataset of the images `indices` (in that order) with their fixations re-indexed."""
        indices = np.asarray(indices, dtype=np.int64)
        remap = np.full(self.n_images, -1, dtype=np.int64)
        remap[indices] = np.arange(len(indices))
        keep = remap[self.fixations[:, 0]] >= 0
        fix = self.fixations[keep].copy()
        fix[:, 0] = remap[fix[:, 0]]
        fix = fix[np.argsort(fix[:, 0], kind="stable")]
        return GazeDataset(
            images=self.images[indices],
            fixations=fix.astype(np.int32),
            densities=None if self.densities is None else self.densities[indices],
            densities_exact=self.densities_exact,
            names=tuple(self.names[i] for i in indices) if self.names else (),
        )

    def split(self, n_first: int) -> tuple[GazeDataset, GazeDataset]:
        """Split into the first `n_first` images and the rest (e.g. train / test)."""
        if not 0 < n_first < self.n_images:
            raise ValueError(
                f"`n_first` must be between 1 and {self.n_images - 1}. Received: n_first={n_first}"
            )
        return self.subset(range(n_first)), self.subset(range(n_first, self.n_images))


def make_dataset(
    n_images: int,
    size: tuple[int, int] = (64, 64),
    fixations_per_image: int = 20,
    seed: int = 0,
    config: SceneConfig | None = None,
) -> GazeDataset:
    """Generate synthetic scenes with a known fixation density and sampled fixations.

    Image `i` depends only on `(seed, i)`, so `make_dataset(10)` starts with `make_dataset(5)`.

    Args:
        n_images: number of images.
        size: (H, W) of every image.
        fixations_per_image: fixations drawn (with replacement) from each image's density.
        seed: random seed.
        config: generator settings; `SceneConfig()` when None.

    Returns:
        A `GazeDataset` with `densities_exact=True`.

    Example:
        >>> ds = make_dataset(8, size=(32, 32), fixations_per_image=10, seed=1)
        >>> ds.images.shape, ds.fixations.shape
        ((8, 32, 32, 3), (80, 3))
    """
    if n_images < 1 or fixations_per_image < 0:
        raise ValueError(
            "`n_images` must be >= 1 and `fixations_per_image` >= 0. "
            f"Received: n_images={n_images}, fixations_per_image={fixations_per_image}"
        )
    h, w = (int(s) for s in size)
    if min(h, w) < 8:
        raise ValueError(f"`size` must be at least (8, 8). Received: size={size}")
    config = config or SceneConfig()
    images, densities, fixations = [], [], []
    for i in range(n_images):
        rng = np.random.default_rng([seed, i])
        image, density = draw_scene(rng, h, w, config)
        flat = rng.choice(h * w, size=fixations_per_image, p=density.ravel())
        ys, xs = np.divmod(flat, w)
        fixations.append(np.stack([np.full_like(ys, i), ys, xs], axis=1))
        images.append(image)
        densities.append(density)
    return GazeDataset(
        images=np.stack(images).astype(np.float32),
        fixations=np.concatenate(fixations).astype(np.int32),
        densities=np.stack(densities),
        densities_exact=True,
        names=tuple(f"synthetic_{seed}_{i}" for i in range(n_images)),
    )


def gold_standard_log_likelihood(dataset: GazeDataset) -> float:
    """Log-likelihood of the true density at the sampled fixations, bits per fixation.

    This is `metrics.log_likelihood` of the generating density: no model can beat it in
    expectation. Explained information gain of a model is
    `IG_model / IG_gold` (Kümmerer et al. 2015), both against the same baseline.

    Raises:
        ValueError: if `dataset.densities` is not the exact sampling density.
    """
    return metrics.dataset_log_likelihood(np.log(_exact_densities(dataset)), dataset)


def expected_gold_standard_log_likelihood(dataset: GazeDataset) -> float:
    """The expectation of `gold_standard_log_likelihood` over fixation sampling, bits/fixation.

    Per image it is the negative entropy `sum p log2 p`; images are weighted by their number
    of fixations, as in a per-fixation average.
    """
    dens = _exact_densities(dataset)
    neg_entropy = np.sum(dens * np.log2(np.where(dens > 0, dens, 1.0)), axis=(1, 2))
    counts = np.bincount(dataset.fixations[:, 0], minlength=dataset.n_images)
    if counts.sum() == 0:
        return float(neg_entropy.mean())
    return float(np.sum(neg_entropy * counts) / counts.sum())


def as_tf_dataset(
    dataset: GazeDataset,
    batch_size: int = 8,
    targets="fixations",
    shuffle: bool = False,
    seed: int = 0,
    augment: bool = False,
):
    """A batched `tf.data.Dataset` of `(images, target_maps)` for `model.fit`.

    Args:
        dataset: the data.
        batch_size: images per batch.
        targets: "fixations" (fixation counts per pixel, the input of `FixationNLL`), "density"
            (`dataset.densities`), or an array (N, H, W) such as distillation targets.
        shuffle: reshuffle the images every epoch.
        seed: shuffle and augmentation seed.
        augment: flip each image and its target map left-right with probability 1/2 (fixations
            flip with the image, so the target stays exact).
    """
    import tensorflow as tf

    if isinstance(targets, str):
        if targets == "fixations":
            maps = dataset.fixation_maps()
        elif targets == "density" and dataset.densities is not None:
            maps = dataset.densities
        else:
            raise ValueError(
                "`targets` must be 'fixations', 'density' (when the dataset has densities) or "
                f"an array of shape (N, H, W). Received: targets={targets!r}"
            )
    else:
        maps = np.asarray(targets)
        if maps.shape != (dataset.n_images, *dataset.size):
            raise ValueError(
                f"`targets` must have shape {(dataset.n_images, *dataset.size)}. "
                f"Received: targets.shape={maps.shape}"
            )
    ds = tf.data.Dataset.from_tensor_slices((dataset.images, maps.astype(np.float32)))
    if shuffle:
        ds = ds.shuffle(dataset.n_images, seed=seed, reshuffle_each_iteration=True)
    if augment:
        coins = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, coins).map(_flip_if_odd)
    return ds.batch(batch_size)


def _flip_if_odd(pair, coin):
    import tensorflow as tf

    flip = tf.equal(coin % 2, 1)
    return tuple(tf.where(flip, tf.reverse(t, axis=[1]), t) for t in pair)


def _exact_densities(dataset: GazeDataset) -> np.ndarray:
    if dataset.densities is None or not dataset.densities_exact:
        raise ValueError(
            "The gold standard needs the exact density the fixations were sampled from; this "
            "dataset's `densities` are missing or only blurred fixation maps. Use a dataset from "
            f"`make_dataset`. Received: densities_exact={dataset.densities_exact}"
        )
    return dataset.densities
