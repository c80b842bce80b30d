"""Reading the command line's files: a ``.keras`` model (with ``safe_mode=True``; nothing
is unpickled) and ``.npy`` inputs, with errors that name the user's path."""

from __future__ import annotations

import os
import zipfile

import keras
import numpy as np

from tfchannelprune.core import gate  # noqa: F401  (registers ChannelGate for loading)


def load_model_file(path: str, compile: bool = False) -> keras.Model:
    """The model saved at ``path`` (a ``.keras`` zip archive), loaded with ``safe_mode=True``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file exists but is not a valid ``.keras`` archive (truncated,
            garbage, another format).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such model file. Received: model={path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(_invalid(path, "it is not a zip archive (truncated or another format)"))
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ValueError(_invalid(path, f"the archive cannot be read ({error})")) from None
    if broken is not None or "config.json" not in names:
        why = f"member {broken!r} is corrupt" if broken else "it holds no config.json"
        raise ValueError(_invalid(path, why))
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=compile)
    except (zipfile.BadZipFile, EOFError, UnicodeDecodeError, KeyError) as error:
        raise ValueError(_invalid(path, f"{type(error).__name__}: {error}")) from None


def _invalid(path: str, why: str) -> str:
    return (
        f"{path!r} is not a valid .keras file: {why}. Save the model again with "
        f"model.save('model.keras'). Received: model={path}"
    )


def load_array(path: str, what: str = "data") -> np.ndarray:
    """A ``.npy`` array (``allow_pickle=False``), with the path in any error."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No such {what} file. Received: {what}={path}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(
            f"{path!r} is not a .npy array file ({error}). Received: {what}={path}"
        ) from None
