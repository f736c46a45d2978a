"""What inference returns: per-image nucleus tables (tiled: ``Nuclei``), the batch result."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

__all__ = ["BatchResult", "Nuclei", "NucleusTable"]


@dataclasses.dataclass
class NucleusTable:
    """The nuclei of one image, one row per instance, ascending id.

    Instances whose outer contour has fewer than 3 points (single pixels, 1-px
    lines) are not rows here (SPEC §3b) but keep their id in the instance map.

    Attributes:
        id: ``ndarray[K] int32`` instance id in the instance map.
        type: ``ndarray[K] int32`` type id by majority vote (ties to the smaller id;
            background 0 only when the instance has no other type).
        type_prob: ``ndarray[K] float32`` fraction of the instance's pixels with that type.
        centroid: ``ndarray[K, 2] float64`` (y, x), the moments centroid.
        bbox: ``ndarray[K, 4] int32`` (rmin, cmin, rmax, cmax), max exclusive.
        area: ``ndarray[K] int64`` pixels.
        contours: ``K`` arrays ``ndarray[K_i, 2] int32`` of (x, y) outer-contour
            points (OpenCV CHAIN_APPROX_SIMPLE, image coordinates).
    """

    id: np.ndarray
    type: np.ndarray
    type_prob: np.ndarray
    centroid: np.ndarray
    bbox: np.ndarray
    area: np.ndarray
    contours: list[np.ndarray]

    def __post_init__(self) -> None:
        k, cls = len(self.id), type(self).__name__
        for name in self._row_fields():
            got = len(getattr(self, name))
            if got != k:
                raise ValueError(f"{cls}.{name}: expected {k} rows (len(id)), got {got}")
        if len(self.contours) != k:
            raise ValueError(f"{cls}.contours: expected {k} contours, got {len(self.contours)}")

    @classmethod
    def _row_fields(cls) -> tuple[str, ...]:
        """Array columns that must have one row per nucleus (besides ``id``)."""
        return ("type", "type_prob", "centroid", "bbox", "area")

    def __len__(self) -> int:
        return len(self.id)

    @classmethod
    def empty(cls) -> NucleusTable:
        """A table with no nuclei."""
        return cls(
            id=np.zeros(0, np.int32),
            type=np.zeros(0, np.int32),
            type_prob=np.zeros(0, np.float32),
            centroid=np.zeros((0, 2), np.float64),
            bbox=np.zeros((0, 4), np.int32),
            area=np.zeros(0, np.int64),
            contours=[],
        )

    @classmethod
    def concat(cls, parts: Sequence[NucleusTable]):
        """The rows of several tables, in order, as one table of this class.

        Every array column is concatenated and every list column (contours, and
        a subclass's list columns) chained; the empty parts are ignored.
        """
        parts = [p for p in parts if len(p)] or [cls.empty()]
        cols = {}
        for f in dataclasses.fields(cls):
            values = [getattr(p, f.name) for p in parts]
            if isinstance(values[0], list):
                cols[f.name] = [v for part in values for v in part]
            else:
                cols[f.name] = np.concatenate(values)
        return cls(**cols)


@dataclasses.dataclass
class Nuclei(NucleusTable):
    """The nuclei of a tiled image (:mod:`hvx.tiling`): a table with three more columns.

    The :class:`NucleusTable` columns hold image coordinates; ``id`` are the
    global ids, rows in emission order (ascending ids).

    Attributes:
        masks: ``list[ndarray[h_i, w_i] bool]``: each nucleus' pixels inside its
            ``bbox``; empty (``[]``) once painted into an instance map.
        cut: ``ndarray[K] bool``: True for a nucleus no tile saw whole.
        tile: ``ndarray[K] int32``: raster index of the tile whose view was kept.
    """

    masks: list[np.ndarray] = dataclasses.field(default_factory=list)
    cut: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, bool))
    tile: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.masks and len(self.masks) != len(self.id):
            raise ValueError(
                f"Nuclei.masks: expected {len(self.id)} masks or none, got {len(self.masks)}"
            )

    @classmethod
    def _row_fields(cls) -> tuple[str, ...]:
        return (*super()._row_fields(), "cut", "tile")


@dataclasses.dataclass
class BatchResult:
    """Post-processed batch.

    Attributes:
        inst: ``ndarray[N, H, W] int32`` instance ids (0 = background).
        type: ``ndarray[N, H, W] uint8`` type id per pixel: each tabled instance's
            pixels carry its voted type (the CoNiC pipeline: filled contours).
        tables: ``N`` :class:`NucleusTable`, one per image.
    """

    inst: np.ndarray
    type: np.ndarray
    tables: list[NucleusTable]

    def __post_init__(self) -> None:
        if self.inst.ndim != 3 or self.type.shape != self.inst.shape:
            raise ValueError(
                f"BatchResult: expected inst and type of one (N, H, W) shape, got "
                f"{self.inst.shape} and {self.type.shape}"
            )
        if len(self.tables) != self.inst.shape[0]:
            raise ValueError(
                f"BatchResult: expected {self.inst.shape[0]} tables, got {len(self.tables)}"
            )

    def __len__(self) -> int:
        return self.inst.shape[0]

    def to_conic(self) -> np.ndarray:
        """The CoNiC submission layout.

        Returns:
            ``ndarray[N, H, W, 2] int32``: channel 0 instance ids, channel 1 class ids.
        """
        return np.stack([self.inst.astype(np.int32), self.type.astype(np.int32)], axis=-1)
