"""The datasets of a training run: class map and scale applied, split, capped.

:func:`load_run_data` gives the run's :class:`RunData` from ``--data`` (one
dataset folder or a loaded :class:`TileDataset`) or from the config's
``data.datasets`` (several, each split by source image on its own; see
``hvx.training.datasets``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hvx.training.config import TrainConfig
from hvx.training.data import TileDataset, load_dataset, split_by_source
from hvx.training.datasets import SplitDataset, parse_specs, split_datasets

__all__ = ["RunData", "load_run_data", "part_record", "prepare_dataset", "resize_tiles"]


def resize_tiles(ds: TileDataset, scale: float) -> TileDataset:
    """Resizes every tile by ``scale`` (images INTER_AREA, labels nearest)."""
    n, h, w = ds.inst.shape
    nh, nw = round(h * scale), round(w * scale)
    images = np.empty((n, nh, nw, 3), np.uint8)
    inst = np.empty((n, nh, nw), ds.inst.dtype)
    cls = np.empty((n, nh, nw), ds.cls.dtype)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    for i in range(n):
        images[i] = cv2.resize(ds.images[i], (nw, nh), interpolation=interp)
        inst[i] = cv2.resize(ds.inst[i].astype(np.int32), (nw, nh), interpolation=cv2.INTER_NEAREST)
        cls[i] = cv2.resize(ds.cls[i], (nw, nh), interpolation=cv2.INTER_NEAREST)
    return dataclasses.replace(ds, images=images, inst=inst, cls=cls)


def prepare_dataset(ds: TileDataset, config: TrainConfig) -> tuple[TileDataset, tuple[str, ...]]:
    """Applies the config's class map and scale to a loaded dataset.

    Returns:
        ``(dataset, class_names)``: the (resized, relabelled) dataset and the
        names of the model's classes 1..C.

    Raises:
        ValueError: If the class map sends ids beyond the class names.
    """
    dc = config.data
    cls = ds.cls
    if dc.class_map:
        lut = np.arange(max(256, int(cls.max()) + 1), dtype=np.int64)
        for k, v in dc.class_map.items():
            if k < lut.size:
                lut[k] = v
        cls = lut[cls].astype(np.uint8)
    names = tuple(dc.class_names) if dc.class_names is not None else tuple(ds.class_names)
    top = int(cls.max()) if cls.size else 0
    if top > len(names):
        raise ValueError(
            f"expected class ids <= {len(names)} (class names {list(names)}), got class id {top}; "
            "set data.class_names or data.class_map"
        )
    ds = dataclasses.replace(ds, cls=cls, class_names=names)
    if dc.scale != 1.0:
        ds = resize_tiles(ds, dc.scale)
    return ds, names


@dataclasses.dataclass
class RunData:
    """The datasets of a run.

    Attributes:
        parts: One :class:`SplitDataset` per dataset (train and validation tiles).
        class_names: Names of the model's classes 1..C.
        source: What the bundle's provenance records as the data ("a, b" for
            several folders, "<in memory>" for a loaded dataset).
    """

    parts: list[SplitDataset]
    class_names: tuple[str, ...]
    source: str


def _scaled(ds: TileDataset, dc: Any) -> TileDataset:
    return resize_tiles(ds, dc.scale) if dc.scale != 1.0 else ds


def _several(config: TrainConfig) -> RunData:
    """``data.datasets``: each dataset split on its own; one set of class names."""
    dc = config.data
    specs = parse_specs(dc.datasets)

    def prepare(ds: TileDataset) -> TileDataset:
        return prepare_dataset(ds, config)[0] if ds.typed.all() else _scaled(ds, dc)

    parts = split_datasets(specs, val_fraction=dc.val_fraction, seed=dc.split_seed, prepare=prepare)
    typed = [p for p in parts if p.typed]
    if not typed:
        raise ValueError("expected at least one dataset with class labels, got none")
    names = {p.val.class_names for p in typed}
    if len(names) > 1:
        raise ValueError(f"expected one set of class names over datasets, got {names}")
    return RunData(parts, typed[0].val.class_names, ", ".join(s.path for s in specs))


def _one(config: TrainConfig, data: str | Path | TileDataset) -> RunData:
    """``--data``: one dataset, split by source image."""
    dc = config.data
    source = str(data) if not isinstance(data, TileDataset) else "<in memory>"
    ds = load_dataset(data) if not isinstance(data, TileDataset) else data
    ds, class_names = prepare_dataset(ds, config)
    train_idx, val_idx = split_by_source(
        ds.sources, val_fraction=dc.val_fraction, seed=dc.split_seed
    )
    name = Path(source).name
    parts = [SplitDataset(name, ds.subset(train_idx), ds.subset(val_idx), 1.0, True)]
    return RunData(parts, class_names, source)


def load_run_data(config: TrainConfig, data: Any) -> RunData:
    """The run's datasets, split (``data.datasets``, or ``data`` alone), capped.

    Args:
        config: The run's config (``data`` section: class map, scale, split, caps).
        data: A dataset folder, a loaded :class:`TileDataset`, or None when the
            config lists ``data.datasets``.

    Raises:
        ValueError: Both or neither of ``data`` and ``data.datasets``; no dataset
            with class labels; datasets with different class names.
    """
    dc = config.data
    if dc.datasets is not None:
        if data is not None:
            raise ValueError(
                "expected either data (--data) or data.datasets in the config, got both"
            )
        run = _several(config)
    else:
        if data is None:
            raise ValueError("expected a dataset (--data) or data.datasets in the config")
        run = _one(config, data)
    for p in run.parts:
        if dc.max_train_tiles is not None:
            p.train = p.train.subset(np.arange(min(len(p.train), dc.max_train_tiles)))
        if dc.max_val_tiles is not None:
            p.val = p.val.subset(np.arange(min(len(p.val), dc.max_val_tiles)))
    return run


def part_record(p: SplitDataset) -> dict[str, Any]:
    """A dataset's entry in the bundle's ``provenance.data.datasets``."""
    return {
        "name": p.name,
        "weight": p.weight,
        "typed": p.typed,
        "train_tiles": len(p.train),
        "val_images": len(p.val),
        "val_sources": sorted(set(p.val.sources)),
    }
