"""Several datasets in one run: instance-only folders, tiling, per-dataset splits, weights.

A config lists its datasets under ``data.datasets`` (see :class:`DatasetSpec`)::

    data:
      datasets:
        - {path: ../shared/data/consep, weight: 1.0}
        - {path: ../shared/data/monuseg, weight: 1.0, val_fraction: 0.2, tile_size: 320}

Each dataset is loaded (:func:`load_any`), split by source image with its own
``val_fraction`` and the run's ``data.split_seed`` (so adding a second dataset
does not change the first one's split), and its training images are cut into
tiles of ``tile_size`` when they are larger (validation keeps whole images: a
1000 x 1000 MoNuSeg image is scored whole). Datasets without class labels
(``typed`` False) train the np and hv heads only.

The **instance-only folder** format (``fmt="instances"``, MoNuSeg's layout):
``images/<name>.png`` RGB images (all one size) and ``labels.npz`` with
``names`` (N,) str and ``inst`` (N, H, W) int (0 = background), optionally
``source_image`` (N,) str; optionally an ``index.csv`` with columns ``name``
and ``organ``: the source of an image is then ``<organ>_<name>``, so that
:func:`hvx.training.data.split_by_source` spreads the validation images over
organs (it stratifies by the text before the first ``_``).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hvx.training.data import (
    _INT32_MAX,
    TileDataset,
    _describe,
    _int_labels,
    _read_png,
    load_dataset,
    split_by_source,
)

__all__ = [
    "DatasetSpec",
    "SplitDataset",
    "cut_tiles",
    "load_any",
    "load_instance_folder",
    "parse_specs",
    "split_datasets",
]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One entry of ``data.datasets``.

    Attributes:
        path: The dataset folder (CoNiC npy, CoNSeP-style folder or instance-only folder).
        weight: Sampling weight: an epoch draws from this dataset in proportion
            ``weight / sum(weights)`` (not in proportion to its size).
        val_fraction: Share of its source images held out (None: ``data.val_fraction``).
        tile_size: Training images larger than this are cut into overlapping
            tiles of this edge (None: used as stored). Must be >= ``data.crop_size``.
        name: Short name in logs and reports (None: the folder name).
        fmt: ``hvx.training.datasets.load_any`` format ("auto", "conic", "folder",
            "instances").
    """

    path: str
    weight: float = 1.0
    val_fraction: float | None = None
    tile_size: int | None = None
    name: str | None = None
    fmt: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"data.datasets: expected a non-empty path, got {self.path!r}")
        if isinstance(self.weight, bool) or not isinstance(self.weight, int | float):
            raise ValueError(f"data.datasets weight: expected a number, got {self.weight!r}")
        if not self.weight > 0:
            raise ValueError(f"data.datasets weight: expected > 0, got {self.weight}")
        if self.val_fraction is not None and not 0 < self.val_fraction < 1:
            raise ValueError(
                f"data.datasets val_fraction: expected a value in (0, 1), got {self.val_fraction}"
            )
        if self.tile_size is not None and (
            isinstance(self.tile_size, bool) or not isinstance(self.tile_size, int)
        ):
            raise ValueError(f"data.datasets tile_size: expected an int, got {self.tile_size!r}")
        if self.tile_size is not None and self.tile_size < 8:
            raise ValueError(f"data.datasets tile_size: expected >= 8, got {self.tile_size}")
        if self.fmt not in ("auto", "conic", "folder", "consep", "instances"):
            raise ValueError(
                "data.datasets fmt: expected 'auto', 'conic', 'folder' or 'instances', "
                f"got {self.fmt!r}"
            )

    @property
    def label(self) -> str:
        """The name used in logs: ``name`` or the folder's name."""
        return self.name or Path(self.path).name


def parse_specs(entries: Sequence[Any]) -> tuple[DatasetSpec, ...]:
    """Builds :class:`DatasetSpec` from config mappings (a bare string is a path).

    Raises:
        ValueError: On an unknown key (named, with the allowed ones), a bad value,
            duplicate names, or an empty list.
    """
    if isinstance(entries, str | bytes) or not isinstance(entries, Sequence) or not entries:
        raise ValueError(f"data.datasets: expected a non-empty list, got {entries!r}")
    allowed = [f.name for f in dataclasses.fields(DatasetSpec)]
    specs = []
    for e in entries:
        if isinstance(e, DatasetSpec):
            specs.append(e)
            continue
        if isinstance(e, str):
            e = {"path": e}
        if not isinstance(e, dict):
            raise ValueError(f"data.datasets: expected a mapping or a path, got {e!r}")
        unknown = sorted(set(e) - set(allowed))
        if unknown:
            raise ValueError(f"data.datasets: unknown key(s) {unknown}; expected keys {allowed}")
        if "path" not in e:
            raise ValueError(f"data.datasets: expected a 'path' in each entry, got {e!r}")
        specs.append(DatasetSpec(**e))
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"data.datasets: expected distinct names, got {labels} (set 'name')")
    return tuple(specs)


def load_instance_folder(path: str | Path) -> TileDataset:
    """Reads an instance-only folder (module docstring); every tile has ``typed`` False.

    Returns:
        A :class:`TileDataset` with ``cls`` all 0 and one placeholder class name.

    Raises:
        FileNotFoundError: labels.npz, images/ or an image is missing.
        ValueError: keys, shapes, names or values do not match.
    """
    root = Path(path)
    npz_path = root / "labels.npz"
    if not npz_path.is_file():
        raise FileNotFoundError(f"expected labels.npz in {root}, not found")
    try:
        with np.load(npz_path, allow_pickle=False) as npz:
            missing = [k for k in ("names", "inst") if k not in npz.files]
            if missing:
                raise ValueError(
                    f"labels.npz: expected keys ['names', 'inst'], missing {missing} "
                    f"(has {npz.files})"
                )
            arrays = {k: npz[k] for k in ("names", "inst", "source_image") if k in npz.files}
    except ValueError as e:
        if str(e).startswith("labels.npz"):
            raise
        raise ValueError(f"{npz_path}: cannot read without pickle: {e}") from e
    inst = arrays["inst"]
    if inst.ndim != 3:
        raise ValueError(f"labels.npz inst: expected (N, H, W), got {_describe(inst)}")
    names = [str(n) for n in arrays["names"]]
    if len(names) != len(inst) or len(set(names)) != len(names):
        raise ValueError(f"labels.npz names: expected {len(inst)} unique names, got {len(names)}")
    images = np.empty((*inst.shape, 3), np.uint8)
    for i, name in enumerate(names):
        img = _read_png(root / "images" / f"{name}.png")
        if img.shape != images.shape[1:]:
            raise ValueError(
                f"images/{name}.png: expected shape {images.shape[1:]} like its labels, "
                f"got {img.shape}"
            )
        images[i] = img
    if "source_image" in arrays:
        sources = [str(s) for s in arrays["source_image"]]
    else:
        organs = _organs(root / "index.csv")
        sources = [f"{organs[n]}_{n}" if n in organs else n for n in names]
    return TileDataset(
        images=images,
        inst=_int_labels("labels.npz inst", inst, _INT32_MAX, np.int32),
        cls=np.zeros(inst.shape, np.uint8),
        sources=sources,
        class_names=("nucleus",),
        names=names,
        typed=np.zeros(len(names), bool),
    )


def _organs(index: Path) -> dict[str, str]:
    """``name -> organ`` from an optional index.csv (empty when absent or without the columns)."""
    if not index.is_file():
        return {}
    with index.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if "name" not in fields or "organ" not in fields:
            return {}
        return {row["name"]: row["organ"].replace("_", "-") for row in reader}


def load_any(path: str | Path, fmt: str = "auto") -> TileDataset:
    """:func:`hvx.training.data.load_dataset` plus the instance-only format.

    ``"auto"`` picks "instances" for a labels.npz without a ``cls`` entry.
    """
    root = Path(path)
    if fmt == "instances":
        return load_instance_folder(root)
    if fmt == "auto" and (root / "labels.npz").is_file():
        with np.load(root / "labels.npz", allow_pickle=False) as npz:
            if "cls" not in npz.files:
                return load_instance_folder(root)
    return load_dataset(root, fmt=fmt)


def _starts(length: int, size: int) -> list[int]:
    """Evenly spread tile starts covering ``length``, overlap >= size / 4."""
    if length <= size:
        return [0]
    n = math.ceil((length - size) / (size * 3 // 4)) + 1
    return [round(v) for v in np.linspace(0, length - size, n)]


def cut_tiles(ds: TileDataset, size: int) -> TileDataset:
    """Cuts every image into overlapping ``size`` x ``size`` tiles (edges included).

    Tiles keep their image's source and ``typed`` flag; a tile is named
    ``<name>_y<row>_x<col>``. Instance ids are kept (a nucleus cut by a tile
    edge keeps its pixels inside the tile). Images no larger than ``size``
    are returned as they are.

    Raises:
        ValueError: If ``size`` exceeds an image edge.
    """
    h, w = ds.inst.shape[1:]
    if size >= h and size >= w:
        return ds
    if size > min(h, w):
        raise ValueError(f"tile_size: expected <= image size {h}x{w}, got {size}")
    ys, xs = _starts(h, size), _starts(w, size)
    n = len(ds) * len(ys) * len(xs)
    images = np.empty((n, size, size, 3), np.uint8)
    inst = np.empty((n, size, size), ds.inst.dtype)
    cls = np.empty((n, size, size), ds.cls.dtype)
    sources, names, typed = [], [], []
    k = 0
    for i in range(len(ds)):
        for y in ys:
            for x in xs:
                sl = (i, slice(y, y + size), slice(x, x + size))
                images[k], inst[k], cls[k] = ds.images[sl], ds.inst[sl], ds.cls[sl]
                sources.append(ds.sources[i])
                names.append(f"{ds.names[i]}_y{y}_x{x}")  # type: ignore[index]
                typed.append(bool(ds.typed[i]))  # type: ignore[index]
                k += 1
    return TileDataset(
        images=images,
        inst=inst,
        cls=cls,
        sources=sources,
        class_names=ds.class_names,
        names=names,
        typed=np.array(typed, bool),
    )


@dataclasses.dataclass
class SplitDataset:
    """One dataset of a run, split.

    Attributes:
        name: Its label.
        train: Training tiles (cut to ``tile_size``).
        val: Validation images (whole).
        weight: Its sampling weight.
        typed: Whether it has class labels.
    """

    name: str
    train: TileDataset
    val: TileDataset
    weight: float
    typed: bool


def split_datasets(
    specs: Sequence[DatasetSpec],
    *,
    val_fraction: float,
    seed: int,
    prepare: Any = None,
) -> list[SplitDataset]:
    """Loads, prepares, splits and tiles every dataset of ``specs``.

    Args:
        specs: The datasets.
        val_fraction: Default share of held-out source images.
        seed: ``split_by_source`` seed (the same for every dataset).
        prepare: Optional ``TileDataset -> TileDataset`` applied after loading
            (the trainer's class map and scale); skipped for untyped datasets'
            class map, which have none.

    Returns:
        One :class:`SplitDataset` per spec, in order.
    """
    out = []
    for spec in specs:
        ds = load_any(spec.path, spec.fmt)
        if prepare is not None:
            ds = prepare(ds)
        typed = bool(ds.typed.all())  # type: ignore[union-attr]
        if ds.typed.any() and not typed:  # type: ignore[union-attr]
            raise ValueError(f"{spec.path}: expected all or no tiles with class labels, got a mix")
        frac = spec.val_fraction if spec.val_fraction is not None else val_fraction
        train_idx, val_idx = split_by_source(ds.sources, val_fraction=frac, seed=seed)
        train, val = ds.subset(train_idx), ds.subset(val_idx)
        if spec.tile_size is not None:
            train = cut_tiles(train, spec.tile_size)
        out.append(SplitDataset(spec.label, train, val, float(spec.weight), typed))
    return out
