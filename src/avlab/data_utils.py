"""Data helpers every task shares: clear dataset errors, image reading, generated defaults."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

SYNTH_STAMP = ".avlab_synth.json"


class DatasetError(ValueError):
    """Bad input data: the message names the file (and row) and the problem."""


def read_image_gray(path: str | Path) -> np.ndarray:
    """Decode an image file to a 2-D uint8 grayscale array, naming the file on failure."""
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("L"), dtype=np.uint8)
    except FileNotFoundError as err:
        raise DatasetError(f"{path}: image file is missing") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DatasetError(f"{path}: cannot decode image ({err})") from err


def synth_stamp(root: Path) -> dict[str, Any] | None:
    """The generator stamp of a folder avlab generated, or None for any other folder."""
    stamp = root / SYNTH_STAMP
    if not stamp.is_file():
        return None
    return json.loads(stamp.read_text())


def ensure_generated(
    root: Path,
    name: str,
    generate: Callable[..., Any],
    params: Mapping[str, Any] | None,
) -> None:
    """Generate a default dataset at `root` if it is missing or was generated with other params.

    A folder without avlab's stamp is a user's real dataset: it is only ever read, never
    written. With `params=None` generation is off and a missing folder is an error.
    """
    root = Path(root)
    stamp = synth_stamp(root)
    if root.exists() and stamp is None:
        return
    if params is None:
        if not root.exists():
            raise DatasetError(
                f"{root}: {name} dataset not found, and generation is off for it. "
                "Point the data config at the dataset, or enable its `synth` parameters."
            )
        return
    wanted = _jsonable(params)
    if stamp is not None and _stamp_matches(stamp, wanted):
        return
    if stamp is not None:
        log.warning("%s: regenerating %s, its parameters changed", root, name)
        shutil.rmtree(root)
    log.info("generating the default %s dataset into %s", name, root)
    generate(root, **params)


def _stamp_matches(stamp: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether a stamp records every parameter we ask for, with the same value."""
    recorded = stamp.get("params", stamp)
    return all(recorded.get(key) == value for key, value in wanted.items())


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    """Params as they read back from the JSON stamp (tuples become lists)."""
    return json.loads(json.dumps(dict(params)))


def seeded_split(
    n: int, fractions: tuple[float, float], seed: int
) -> dict[str, np.ndarray]:
    """Split range(n) into train/val/test index arrays with a fixed permutation."""
    val_fraction, test_fraction = fractions
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError(f"bad split fractions val={val_fraction} test={test_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    return {
        "val": np.sort(order[:n_val]),
        "test": np.sort(order[n_val : n_val + n_test]),
        "train": np.sort(order[n_val + n_test :]),
    }
