"""Synthetic fixation data, the GazeDataset container and the folder loader."""

import numpy as np
import pytest
import scipy.io
import skimage.io

from tfchannelprune.gaze import data, metrics
from tfchannelprune.gaze.folders import load_fixation_folder


@pytest.fixture(scope="module")
def small():
    return data.make_dataset(12, size=(32, 32), fixations_per_image=15, seed=3)


def test_make_dataset_shapes_and_ranges(small):
    assert small.images.shape == (12, 32, 32, 3) and small.images.dtype == np.float32
    assert 0.0 <= small.images.min() and small.images.max() <= 1.0
    assert small.fixations.shape == (12 * 15, 3)
    np.testing.assert_allclose(small.densities.sum(axis=(1, 2)), 1.0, atol=1e-12)
    assert (small.densities > 0).all()
    assert small.densities_exact
    assert np.array_equal(np.bincount(small.fixations[:, 0]), np.full(12, 15))


def test_make_dataset_is_deterministic_and_prefix_stable(small):
    again = data.make_dataset(12, size=(32, 32), fixations_per_image=15, seed=3)
    assert np.array_equal(again.images, small.images)
    assert np.array_equal(again.fixations, small.fixations)
    prefix = data.make_dataset(5, size=(32, 32), fixations_per_image=15, seed=3)
    assert np.array_equal(prefix.images, small.images[:5])
    other = data.make_dataset(5, size=(32, 32), fixations_per_image=15, seed=4)
    assert not np.array_equal(other.images, prefix.images)


def test_density_is_saliency_times_centre_bias():
    # Without objects or edges the saliency is constant, so the density is the centre bias.
    cfg = data.SceneConfig(objects=(0, 0), edge_weight=0.0, centre_sigma=0.25)
    ds = data.make_dataset(1, size=(16, 16), fixations_per_image=0, config=cfg)
    c = (np.arange(16) + 0.5) / 16 - 0.5
    expected = np.exp(-(c[:, None] ** 2 + c[None, :] ** 2) / (2 * 0.25**2))
    np.testing.assert_allclose(ds.densities[0], expected / expected.sum(), rtol=1e-9)


def test_fixations_follow_the_density():
    ds = data.make_dataset(1, size=(24, 24), fixations_per_image=4000, seed=1)
    dens = ds.densities[0]
    top = dens >= np.quantile(dens, 0.9)  # the 10% most salient pixels
    hit = top[ds.fixations[:, 1], ds.fixations[:, 2]].mean()
    assert abs(hit - dens[top].sum()) < 0.03
    assert dens[top].sum() > 0.25  # objects make the density far from uniform


def test_gold_standard_log_likelihood(small):
    gold = data.gold_standard_log_likelihood(small)
    manual = np.mean(np.log2(small.densities[tuple(small.fixations.T)]))
    assert gold == pytest.approx(manual)
    assert gold > -np.log2(32 * 32)  # beats the uniform model
    # The sample mean is close to its expectation (the negative entropy).
    many = data.make_dataset(4, size=(32, 32), fixations_per_image=3000, seed=3)
    assert data.gold_standard_log_likelihood(many) == pytest.approx(
        data.expected_gold_standard_log_likelihood(many), abs=0.05
    )
    uniform = np.full(small.densities.shape, -np.log(32 * 32))
    assert metrics.dataset_log_likelihood(uniform, small) == pytest.approx(-10.0)


def test_gold_standard_needs_exact_densities(small):
    blurred = data.GazeDataset(small.images, small.fixations, small.densities, False)
    with pytest.raises(ValueError, match="exact density"):
        data.gold_standard_log_likelihood(blurred)


def test_subset_and_split_reindex_fixations(small):
    sub = small.subset([7, 2])
    assert np.array_equal(sub.images[0], small.images[7])
    assert np.array_equal(sub.fixations_of(0), small.fixations_of(7))
    assert np.array_equal(sub.fixations_of(1), small.fixations_of(2))
    train, test = small.split(9)
    assert (train.n_images, test.n_images) == (9, 3)
    assert np.array_equal(test.fixations_of(0), small.fixations_of(9))
    with pytest.raises(ValueError, match="n_first"):
        small.split(12)


def test_fixation_maps_count_duplicates():
    images = np.zeros((2, 4, 4, 3), np.float32)
    fix = np.array([[0, 1, 1], [0, 1, 1], [1, 3, 0]], np.int32)
    maps = data.GazeDataset(images, fix).fixation_maps()
    assert maps[0, 1, 1] == 2 and maps[1, 3, 0] == 1 and maps.sum() == 3


def test_dataset_rejects_bad_input():
    images = np.zeros((2, 4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="index images"):
        data.GazeDataset(images, np.array([[2, 0, 0]]))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        data.GazeDataset(images[..., 0], np.zeros((0, 3), int))
    with pytest.raises(ValueError, match="n_images"):
        data.make_dataset(0)


def test_as_tf_dataset(small):
    batches = list(data.as_tf_dataset(small, batch_size=5))
    assert [b[0].shape[0] for b in batches] == [5, 5, 2]
    assert float(sum(b[1].numpy().sum() for b in batches)) == 12 * 15
    (x, y), *_ = data.as_tf_dataset(small, batch_size=12, targets="density")
    np.testing.assert_allclose(y.numpy().sum(axis=(1, 2)), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="targets"):
        data.as_tf_dataset(small, targets=np.zeros((3, 32, 32)))


def _write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    skimage.io.imsave(path, np.asarray(array, np.uint8), check_contrast=False)


def test_load_cat2000_layout(tmp_path):
    rng = np.random.default_rng(0)
    for cat, name in (("Action", "001"), ("Art", "002")):
        _write_png(tmp_path / "Stimuli" / cat / f"{name}.png", rng.integers(0, 255, (8, 10, 3)))
        locs = np.zeros((8, 10))
        locs[2, 3] = locs[5, 9] = 1
        (tmp_path / "FIXATIONLOCS" / cat).mkdir(parents=True)
        scipy.io.savemat(tmp_path / "FIXATIONLOCS" / cat / f"{name}.mat", {"fixLocs": locs})
        _write_png(tmp_path / "FIXATIONMAPS" / cat / f"{name}.png", np.full((8, 10), 100))
    ds = load_fixation_folder(tmp_path)
    assert ds.names == ("Action/001", "Art/002")
    assert ds.images.shape == (2, 8, 10, 3) and not ds.densities_exact
    assert ds.fixations_of(1).tolist() == [[2, 3], [5, 9]]
    np.testing.assert_allclose(ds.densities.sum(axis=(1, 2)), 1.0)
    resized = load_fixation_folder(tmp_path, size=(4, 5))
    assert resized.images.shape == (2, 4, 5, 3)
    assert resized.fixations_of(0).tolist() == [[1, 1], [2, 4]]


def test_load_mit_layout_and_coordinates(tmp_path):
    _write_png(tmp_path / "ALLSTIMULI" / "a.png", np.zeros((6, 6, 3)))
    points = np.zeros((6, 6))
    points[1, 4] = 255
    _write_png(tmp_path / "ALLFIXATIONMAPS" / "a_fixPts.png", points)
    _write_png(tmp_path / "ALLFIXATIONMAPS" / "a_fixMap.png", np.full((6, 6), 50))
    ds = load_fixation_folder(
        tmp_path, stimuli="ALLSTIMULI", fixations="ALLFIXATIONMAPS", maps="ALLFIXATIONMAPS"
    )
    assert ds.fixations.tolist() == [[0, 1, 4]] and ds.densities is not None
    # Coordinates as (x, y) in a .npy file; out-of-image points are dropped.
    _write_png(tmp_path / "S" / "b.png", np.zeros((6, 8, 3)))
    (tmp_path / "F").mkdir()
    np.save(tmp_path / "F" / "b.npy", np.array([[7, 1], [0, 5], [9, 9]]))
    ds = load_fixation_folder(tmp_path, stimuli="S", fixations="F", maps=None, coordinates="xy")
    assert ds.fixations.tolist() == [[0, 1, 7], [0, 5, 0]] and ds.densities is None


def test_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="No images"):
        load_fixation_folder(tmp_path)
    _write_png(tmp_path / "Stimuli" / "a.png", np.zeros((6, 6, 3)))
    _write_png(tmp_path / "Stimuli" / "b.png", np.zeros((4, 6, 3)))
    with pytest.raises(FileNotFoundError, match="No file for image 'a'"):
        load_fixation_folder(tmp_path)
    (tmp_path / "FIXATIONLOCS").mkdir()
    np.save(tmp_path / "FIXATIONLOCS" / "a.npy", np.array([[1, 1]]))
    np.save(tmp_path / "FIXATIONLOCS" / "b.npy", np.array([[1, 1]]))
    with pytest.raises(ValueError, match="size="):
        load_fixation_folder(tmp_path)
    assert load_fixation_folder(tmp_path, size=(4, 4)).images.shape == (2, 4, 4, 3)


def test_as_tf_dataset_flips_images_with_their_targets(small):
    maps = small.fixation_maps()
    flips = 0
    for epoch in range(2):
        for (x, y), image, target in zip(
            data.as_tf_dataset(small, batch_size=1, augment=True, seed=epoch),
            small.images,
            maps,
            strict=True,
        ):
            flipped = not np.array_equal(x[0].numpy(), image)
            expect = (image[:, ::-1], target[:, ::-1]) if flipped else (image, target)
            np.testing.assert_array_equal(x[0].numpy(), expect[0])
            np.testing.assert_array_equal(y[0].numpy(), expect[1])
            flips += flipped
    assert 0 < flips < 2 * small.n_images
