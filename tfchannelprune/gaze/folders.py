"""Load a real fixation dataset from the usual folder layout into a `GazeDataset`.

Supported layouts (matching is by relative path and file stem):

* CAT2000: `Stimuli/<Category>/<name>.jpg`, `FIXATIONLOCS/<Category>/<name>.mat` (binary map in
  variable `fixLocs`), `FIXATIONMAPS/<Category>/<name>.jpg` (blurred fixation map).
* MIT1003: `ALLSTIMULI/<name>.jpeg`, `ALLFIXATIONMAPS/<name>_fixPts.jpg` (binary fixation
  points) and `ALLFIXATIONMAPS/<name>_fixMap.jpg` (blurred map): pass
  `stimuli="ALLSTIMULI", fixations="ALLFIXATIONMAPS", maps="ALLFIXATIONMAPS"`.
* Your own: `.npy` / `.mat` files holding either a binary or count map of the image's size, or
  an (k, 2) array of (y, x) pixel coordinates (`coordinates="xy"` if the columns are (x, y)).

A fixation map is read as fixated where it exceeds half its maximum (binary maps saved as JPEG
carry compression noise); a count map in `.npy` / `.mat` keeps its counts.
"""

from __future__ import annotations

import pathlib

import numpy as np

from tfchannelprune.gaze.data import GazeDataset

__all__ = ["load_fixation_folder"]

_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
_ARRAY_EXTS = (".npy", ".mat")
_FIX_SUFFIXES = ("", "_fixPts", "_fixLocs", "_fixations")
_MAP_SUFFIXES = ("", "_fixMap")
_MAT_KEYS = ("fixLocs", "fixationPts", "fixations", "fixation_locations")


def load_fixation_folder(
    root,
    stimuli: str = "Stimuli",
    fixations: str = "FIXATIONLOCS",
    maps: str | None = "FIXATIONMAPS",
    size: tuple[int, int] | None = None,
    coordinates: str = "yx",
    limit: int | None = None,
) -> GazeDataset:
    """Read images, fixations and (optionally) fixation maps below `root`.

    Args:
        root: dataset folder, e.g. `CAT2000/trainSet`.
        stimuli, fixations, maps: sub-folders of images, fixation locations and blurred
            fixation maps (`maps=None` or a missing folder: no densities).
        size: (H, W) to resize every image to (fixation coordinates are scaled); required when
            the images differ in size.
        coordinates: column order of coordinate arrays, "yx" or "xy".
        limit: read only the first `limit` images (sorted by path).

    Returns:
        A `GazeDataset`; `densities` are the normalised fixation maps (not exact densities).

    Raises:
        FileNotFoundError: when `root/stimuli` holds no images or an image has no fixation file.
        ValueError: for image sizes that differ without `size`, or unreadable fixation arrays.
    """
    if coordinates not in ("yx", "xy"):
        raise ValueError(f"`coordinates` must be 'yx' or 'xy'. Received: {coordinates!r}")
    root = pathlib.Path(root)
    stim_dir = root / stimuli
    paths = sorted(p for p in stim_dir.rglob("*") if p.suffix.lower() in _IMAGE_EXTS)
    if not paths:
        raise FileNotFoundError(
            f"No images ({', '.join(_IMAGE_EXTS)}) found under {stim_dir}. Pass `stimuli=` the "
            "sub-folder that holds them. Received: root={root}, stimuli={stimuli!r}"
        )
    paths = paths[:limit] if limit else paths
    map_dir = root / maps if maps else None
    use_maps = map_dir is not None and map_dir.is_dir()
    images, fix_rows, dens, names = [], [], [], []
    for i, path in enumerate(paths):
        rel = path.relative_to(stim_dir).with_suffix("")
        image = _read_image(path)
        fix_path = _find(root / fixations, rel, _FIX_SUFFIXES, _ARRAY_EXTS + _IMAGE_EXTS)
        yx = _read_fixations(fix_path, image.shape[:2], coordinates)
        dmap = None
        if use_maps:
            map_path = _find(map_dir, rel, _MAP_SUFFIXES, _IMAGE_EXTS + _ARRAY_EXTS, fix_path)
            dmap = _read_array_or_image(map_path).astype(np.float64)
            if dmap.shape != image.shape[:2]:
                raise ValueError(
                    f"Fixation map {map_path} must have the image's size {image.shape[:2]}. "
                    f"Received: shape={dmap.shape}"
                )
        if size is not None:
            image, yx, dmap = _resize_all(image, yx, dmap, size)
        images.append(image)
        fix_rows.append(np.column_stack([np.full(len(yx), i), yx]))
        dens.append(dmap)
        names.append(rel.as_posix())
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise ValueError(
            f"Images differ in size ({len(shapes)} sizes); pass `size=(H, W)` to resize them. "
            f"Received: sizes={sorted(shapes)[:4]}"
        )
    densities = None
    if use_maps:
        densities = np.stack(
            [d / d.sum() if d.sum() > 0 else np.full_like(d, 1 / d.size) for d in dens]
        )
    return GazeDataset(
        images=np.stack(images).astype(np.float32),
        fixations=np.concatenate(fix_rows).astype(np.int32),
        densities=densities,
        densities_exact=False,
        names=tuple(names),
    )


def _find(folder: pathlib.Path, rel: pathlib.Path, suffixes, exts, exclude=None) -> pathlib.Path:
    for suffix in suffixes:
        for ext in exts:
            candidate = folder / rel.parent / f"{rel.name}{suffix}{ext}"
            if candidate != exclude and candidate.is_file():
                return candidate
    raise FileNotFoundError(
        f"No file for image '{rel.as_posix()}' in {folder}: looked for "
        f"'{rel.name}' + one of {list(suffixes)} + one of {list(exts)}. "
        f"Received: folder={folder}"
    )


def _read_image(path: pathlib.Path) -> np.ndarray:
    import skimage.io

    img = np.asarray(skimage.io.imread(path))
    img = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else max(float(img.max()), 1.0))
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return img[..., :3]


def _read_array_or_image(path: pathlib.Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path)
    if suffix == ".mat":
        import scipy.io

        content = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
        for key in _MAT_KEYS:
            if key in content:
                return np.asarray(content[key])
        if len(content) == 1:
            return np.asarray(next(iter(content.values())))
        raise ValueError(
            f"Cannot tell which variable of {path} holds the fixations; name it one of "
            f"{list(_MAT_KEYS)}. Received: variables={sorted(content)}"
        )
    import skimage.io

    img = np.asarray(skimage.io.imread(path), dtype=np.float64)
    return img.mean(axis=-1) if img.ndim == 3 else img


def _read_fixations(path: pathlib.Path, shape, coordinates: str) -> np.ndarray:
    """(k, 2) int (y, x) fixations from a map or a coordinate array."""
    arr = _read_array_or_image(path)
    if arr.ndim == 2 and arr.shape == tuple(shape):
        if path.suffix.lower() in _IMAGE_EXTS:  # binary map stored as an image
            arr = (arr > 0.5 * max(float(arr.max()), 1e-12)).astype(np.int64)
        counts = np.rint(arr).astype(np.int64)
        ys, xs = np.nonzero(counts)
        reps = counts[ys, xs]
        return np.column_stack([np.repeat(ys, reps), np.repeat(xs, reps)])
    if arr.ndim == 2 and arr.shape[1] == 2:
        yx = np.rint(arr).astype(np.int64)
        yx = yx[:, ::-1] if coordinates == "xy" else yx
        inside = (yx >= 0).all(axis=1) & (yx[:, 0] < shape[0]) & (yx[:, 1] < shape[1])
        return yx[inside]
    raise ValueError(
        f"{path} must hold a fixation map of the image's shape {tuple(shape)} or an (k, 2) array "
        f"of coordinates. Received: shape={arr.shape}"
    )


def _resize_all(image, yx, dmap, size):
    from skimage.transform import resize

    h, w = image.shape[:2]
    nh, nw = (int(s) for s in size)
    image = resize(image, (nh, nw, 3), order=1, anti_aliasing=True, preserve_range=True)
    # A fixation in source pixel y covers [y, y+1); map its centre into the new grid.
    ys = np.clip(((yx[:, 0] + 0.5) * nh / h).astype(np.int64), 0, nh - 1)
    xs = np.clip(((yx[:, 1] + 0.5) * nw / w).astype(np.int64), 0, nw - 1)
    if dmap is not None:
        dmap = resize(dmap, (nh, nw), order=1, anti_aliasing=True, preserve_range=True)
        dmap = np.clip(dmap, 0, None)
    return image, np.column_stack([ys, xs]), dmap
