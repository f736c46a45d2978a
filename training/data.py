"""Labelled tiles in memory: the CoNiC npy format, CoNSeP-style folders, source splits.

Two formats are read (SPEC §0, ``shared/data/consep/README.md``):

- **CoNiC** (``fmt="conic"``): ``images.npy`` uint8 (N, H, W, 3) RGB,
  ``labels.npy`` integer (N, H, W, 2) with channel 0 the instance map and
  channel 1 the class map (0..6), ``patch_info.csv`` (one column
  ``patch_info``, values ``<source image>-<patch index>``) and, optionally,
  ``counts.csv`` (checked for its row count only). Classes: CoNiC's six.
- **Folder** (``fmt="folder"``, CoNSeP-style): ``images/<name>.png`` RGB tiles
  and ``labels.npz`` with ``names`` (N,) str, ``source_image`` (N,) str,
  ``inst`` (N, H, W) int and ``cls`` (N, H, W) int; an optional ``class_names``
  (C,) str entry overrides CoNSeP's four classes.

Everything is loaded with ``allow_pickle=False``. ``split_by_source`` splits
source images, never tiles (neighbouring tiles of one image overlap).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

__all__ = [
    "CONIC_CLASSES",
    "CONSEP_CLASSES",
    "TileDataset",
    "load_dataset",
    "split_by_source",
]

#: CoNiC class ids 1..6 (SPEC §0).
CONIC_CLASSES = ("neutrophil", "epithelial", "lymphocyte", "plasma", "eosinophil", "connective")
#: CoNSeP's standard 4-class merge, ids 1..4.
CONSEP_CLASSES = ("misc", "inflammatory", "epithelial", "spindle")

_NPZ_KEYS = ("names", "source_image", "inst", "cls")
_INT32_MAX = np.iinfo(np.int32).max


@dataclasses.dataclass
class TileDataset:
    """Labelled tiles, all in memory.

    Attributes:
        images: ndarray[N, H, W, 3] uint8, RGB.
        inst: ndarray[N, H, W] int32, instance ids (0 = background).
        cls: ndarray[N, H, W] uint8, class ids (0 = background, 1..C).
        sources: source image name of each tile (the split key), length N.
        class_names: names of class ids 1..C.
        names: tile names, length N (defaults to ``tile_<i>``).
        typed: ndarray[N] bool, True where the tile has class labels (None: all
            True). Tiles without them (instance-only data such as MoNuSeg) have
            ``cls`` 1 inside every nucleus and train only the np and hv heads:
            the type losses ignore them (masked, not labelled background).
    """

    images: np.ndarray
    inst: np.ndarray
    cls: np.ndarray
    sources: list[str]
    class_names: tuple[str, ...]
    names: list[str] | None = None
    typed: np.ndarray | None = None

    def __post_init__(self) -> None:
        img, inst, cls = self.images, self.inst, self.cls
        if not isinstance(img, np.ndarray) or img.ndim != 4 or img.shape[-1] != 3:
            raise ValueError(f"images: expected ndarray[N, H, W, 3], got {_describe(img)}")
        if img.dtype != np.uint8:
            raise TypeError(f"images: expected dtype uint8, got {img.dtype}")
        for name, arr, dtype in (("inst", inst, np.int32), ("cls", cls, np.uint8)):
            if not isinstance(arr, np.ndarray) or arr.shape != img.shape[:3]:
                raise ValueError(f"{name}: expected shape {img.shape[:3]}, got {_describe(arr)}")
            if arr.dtype != dtype:
                raise TypeError(f"{name}: expected dtype {np.dtype(dtype)}, got {arr.dtype}")
        self.sources = [str(s) for s in self.sources]
        if len(self.sources) != len(img):
            raise ValueError(f"sources: expected {len(img)} names, got {len(self.sources)}")
        if self.names is None:
            self.names = [f"tile_{i}" for i in range(len(img))]
        self.names = [str(s) for s in self.names]
        if len(self.names) != len(img):
            raise ValueError(f"names: expected {len(img)} names, got {len(self.names)}")
        self.class_names = tuple(str(c) for c in self.class_names)
        if not self.class_names:
            raise ValueError("class_names: expected at least one class, got none")
        if self.typed is None:
            self.typed = np.ones(len(img), bool)
        self.typed = np.asarray(self.typed)
        if self.typed.shape != (len(img),) or self.typed.dtype != np.bool_:
            raise ValueError(
                f"typed: expected bool ndarray[{len(img)}], got {_describe(self.typed)}"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_types(self) -> int:
        """Number of type outputs including background: ``len(class_names) + 1``."""
        return len(self.class_names) + 1

    def subset(self, idx: Any) -> TileDataset:
        """The tiles at ``idx`` (int array, sequence or boolean mask), copied, in that order."""
        idx = np.asarray(idx)
        if idx.dtype == np.bool_:
            if idx.shape != (len(self),):
                raise ValueError(
                    f"idx: expected a boolean mask of shape ({len(self)},), got {idx.shape}"
                )
            idx = np.flatnonzero(idx)
        if idx.ndim != 1 or not (idx.size == 0 or np.issubdtype(idx.dtype, np.integer)):
            raise TypeError(
                f"idx: expected a 1-D array of tile indices, got {idx.dtype} {idx.shape}"
            )
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise ValueError(
                f"idx: expected indices in [0, {len(self)}), got {idx.min()}..{idx.max()}"
            )
        idx = idx.astype(np.intp)
        return TileDataset(
            images=self.images[idx],
            inst=self.inst[idx],
            cls=self.cls[idx],
            sources=[self.sources[i] for i in idx],
            class_names=self.class_names,
            names=[self.names[i] for i in idx],  # type: ignore[index]
            typed=self.typed[idx],  # type: ignore[index]
        )


def _describe(arr: Any) -> str:
    if isinstance(arr, np.ndarray):
        return f"{arr.dtype} array of shape {arr.shape}"
    return type(arr).__name__


def _int_labels(name: str, arr: np.ndarray, max_value: int, dtype: type) -> np.ndarray:
    """Checks integer labels in [0, max_value] and casts them to ``dtype``."""
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name}: expected an integer dtype, got {arr.dtype}")
    if arr.size:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > max_value:
            raise ValueError(f"{name}: expected values in [0, {max_value}], got {lo}..{hi}")
    return arr.astype(dtype)


def _read_csv_column(path: Path, column: str) -> list[str]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or column not in reader.fieldnames:
            raise ValueError(f"{path}: expected a column {column!r}, got {reader.fieldnames}")
        return [row[column] for row in reader]


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"expected {path.name} in {path.parent}, not found")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as e:  # object arrays, truncated files
        raise ValueError(f"{path}: cannot read as a plain numpy array: {e}") from e


def _load_conic(root: Path, class_names: Sequence[str] | None) -> TileDataset:
    images = _load_npy(root / "images.npy")
    labels = _load_npy(root / "labels.npy")
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images.npy: expected uint8 (N, H, W, 3), got {_describe(images)}")
    if labels.shape != (*images.shape[:3], 2):
        raise ValueError(
            f"labels.npy: expected shape {(*images.shape[:3], 2)} to match images.npy, "
            f"got {labels.shape}"
        )
    info = root / "patch_info.csv"
    if not info.is_file():
        raise FileNotFoundError(
            f"expected patch_info.csv in {root} (source image of each tile, needed to split "
            "by source), not found"
        )
    patches = _read_csv_column(info, "patch_info")
    if len(patches) != len(images):
        raise ValueError(f"patch_info.csv: expected {len(images)} rows, got {len(patches)}")
    counts = root / "counts.csv"
    if counts.is_file():
        with counts.open(newline="") as f:
            n_rows = sum(1 for _ in csv.reader(f)) - 1
        if n_rows != len(images):
            raise ValueError(f"counts.csv: expected {len(images)} rows, got {n_rows}")
    names = tuple(class_names) if class_names is not None else CONIC_CLASSES
    return TileDataset(
        images=np.array(images),  # out of the memory map
        inst=_int_labels("labels.npy[..., 0]", labels[..., 0], _INT32_MAX, np.int32),
        cls=_int_labels("labels.npy[..., 1]", labels[..., 1], len(names), np.uint8),
        sources=[p.rsplit("-", 1)[0] for p in patches],
        class_names=names,
        names=patches,
    )


def _read_png(path: Path) -> np.ndarray:
    """Reads an 8-bit RGB PNG as ndarray[H, W, 3] uint8 RGB (non-ASCII paths work)."""
    if not path.is_file():
        raise FileNotFoundError(f"expected image {path}, not found")
    img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise ValueError(f"{path}: cannot decode as an image")
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{path}: expected an 8-bit RGB image, got {_describe(img)}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _load_folder(root: Path, class_names: Sequence[str] | None) -> TileDataset:
    npz_path = root / "labels.npz"
    if not npz_path.is_file():
        raise FileNotFoundError(f"expected labels.npz in {root}, not found")
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            missing = [k for k in _NPZ_KEYS if k not in npz.files]
            if missing:
                raise ValueError(
                    f"labels.npz: expected keys {list(_NPZ_KEYS)}, missing {missing} "
                    f"(has {npz.files})"
                )
            arrays = {k: npz[k] for k in (*_NPZ_KEYS, "class_names") if k in npz.files}
    except ValueError as e:
        if str(e).startswith("labels.npz"):
            raise
        raise ValueError(f"{npz_path}: cannot read without pickle: {e}") from e
    inst, cls = arrays["inst"], arrays["cls"]
    if inst.ndim != 3:
        raise ValueError(f"labels.npz inst: expected (N, H, W), got shape {inst.shape}")
    if cls.shape != inst.shape:
        raise ValueError(f"labels.npz cls: expected shape {inst.shape} like inst, got {cls.shape}")
    for key in ("names", "source_image"):
        arr = arrays[key]
        if arr.shape != (len(inst),) or arr.dtype.kind != "U":
            raise ValueError(
                f"labels.npz {key}: expected ({len(inst)},) strings, got {_describe(arr)}"
            )
    names = [str(n) for n in arrays["names"]]
    if len(set(names)) != len(names):
        raise ValueError("labels.npz names: expected unique tile names, got duplicates")
    if class_names is None:
        class_names = (
            [str(c) for c in arrays["class_names"]] if "class_names" in arrays else CONSEP_CLASSES
        )
    image_dir = root / "images"
    if not image_dir.is_dir():
        raise FileNotFoundError(f"expected an images/ folder in {root}, not found")
    on_disk = {p.stem for p in image_dir.glob("*.png")}
    absent = sorted(set(names) - on_disk)
    extra = sorted(on_disk - set(names))
    if absent or extra:
        raise ValueError(
            f"images/: expected exactly one <name>.png per labels.npz name; "
            f"{len(absent)} missing (e.g. {absent[:3]}), {len(extra)} unlisted (e.g. {extra[:3]})"
        )
    images = np.empty((*inst.shape, 3), np.uint8)
    for i, name in enumerate(names):
        img = _read_png(image_dir / f"{name}.png")
        if img.shape != images.shape[1:]:
            raise ValueError(
                f"images/{name}.png: expected shape {images.shape[1:]} like its labels, "
                f"got {img.shape}"
            )
        images[i] = img
    return TileDataset(
        images=images,
        inst=_int_labels("labels.npz inst", inst, _INT32_MAX, np.int32),
        cls=_int_labels("labels.npz cls", cls, len(class_names), np.uint8),
        sources=[str(s) for s in arrays["source_image"]],
        class_names=tuple(class_names),
        names=names,
    )


def load_dataset(
    path: str | Path, *, fmt: str = "auto", class_names: Sequence[str] | None = None
) -> TileDataset:
    """Loads a CoNiC npy folder or a CoNSeP-style folder into memory.

    Args:
        path: the dataset folder.
        fmt: ``"conic"``, ``"folder"`` (alias ``"consep"``) or ``"auto"``
            (``images.npy`` present -> conic; ``labels.npz`` present -> folder).
        class_names: names of class ids 1..C, overriding the format's default
            (CoNiC's six; CoNSeP's four or the npz ``class_names`` entry). Class
            ids above C are an error.

    Returns:
        The :class:`TileDataset`.

    Raises:
        FileNotFoundError: the folder or a required file is missing.
        ValueError: shapes, value ranges, keys or image names do not match.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"expected a dataset folder, got {str(path)!r} (not a folder)")
    if fmt == "auto":
        if (root / "images.npy").is_file():
            fmt = "conic"
        elif (root / "labels.npz").is_file():
            fmt = "folder"
        else:
            raise FileNotFoundError(
                f"{root}: expected images.npy + labels.npy (CoNiC) or labels.npz + images/ "
                "(folder format), found neither"
            )
    if class_names is not None and (isinstance(class_names, str) or not len(class_names)):
        raise ValueError(
            f"class_names: expected a non-empty sequence of names, got {class_names!r}"
        )
    if fmt == "conic":
        return _load_conic(root, class_names)
    if fmt in ("folder", "consep"):
        return _load_folder(root, class_names)
    raise ValueError(f"fmt: expected 'auto', 'conic' or 'folder', got {fmt!r}")


def _cohort(source: str) -> str:
    """CoNiC cohort of a source image: the text before the first ``_``."""
    return source.split("_", 1)[0]


def _allocate(sizes: list[int], total: int) -> list[int]:
    """Largest-remainder split of ``total`` in proportion to ``sizes`` (ties: first group)."""
    n = sum(sizes)
    quotas = [total * s / n for s in sizes]
    counts = [math.floor(q) for q in quotas]
    order = sorted(range(len(sizes)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def split_by_source(
    sources: Sequence[str], *, val_fraction: float = 0.2, seed: int = 0, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Splits tiles into train and validation by source image, never by tile.

    The number of validation sources is ``round(val_fraction * S)`` (half up),
    clamped to ``[1, S - 1]`` for S distinct sources. The result depends only on
    the set of source names and the seed, not on tile order. With ``stratify``
    and several cohorts (text before the first ``_``, as in CoNiC: ``crag``,
    ``glas``, ...), each cohort gives its proportional share (largest remainder),
    like the CoNiC baseline's stratified split (not its exact draw).

    Args:
        sources: the source image of each tile, length N.
        val_fraction: fraction of source images in validation, in (0, 1).
        seed: seed of the ``numpy.random.default_rng`` shuffle.
        stratify: keep cohort proportions when several cohorts exist.

    Returns:
        ``(train_idx, val_idx)``, ndarray int64 tile indices, ascending; every
        tile is in exactly one, and no source is in both.
    """
    if isinstance(sources, str) or not isinstance(sources, Sequence | np.ndarray):
        raise TypeError(f"sources: expected a sequence of names, got {type(sources).__name__}")
    sources = [str(s) for s in sources]
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, int | float):
        raise TypeError(f"val_fraction: expected a float, got {type(val_fraction).__name__}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a value in (0, 1), got {val_fraction}")
    unique = sorted(set(sources))
    if len(unique) < 2:
        raise ValueError(
            f"sources: expected at least 2 distinct source images to split, got {len(unique)}"
        )
    n_val = min(max(math.floor(val_fraction * len(unique) + 0.5), 1), len(unique) - 1)
    rng = np.random.default_rng(seed)
    groups: dict[str, list[str]] = {}
    for s in unique:
        groups.setdefault(_cohort(s) if stratify else "", []).append(s)
    cohorts = sorted(groups)
    shares = _allocate([len(groups[c]) for c in cohorts], n_val)
    val_sources: set[str] = set()
    for cohort, share in zip(cohorts, shares, strict=True):
        members = groups[cohort]
        picked = rng.permutation(len(members))[:share]
        val_sources.update(members[i] for i in picked)
    is_val = np.array([s in val_sources for s in sources], bool)
    return np.flatnonzero(~is_val).astype(np.int64), np.flatnonzero(is_val).astype(np.int64)
