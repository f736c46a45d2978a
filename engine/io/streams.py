"""Streaming, resumable writers for tiled runs: GeoJSON, CSV, instance masks, label TIFF.

Each writer appends to ``<name>.part`` in the output folder while the run goes;
:meth:`checkpoint` flushes and fsyncs it and returns its size, which the run's
completion record stores. A resumed run truncates every part file back to the
sizes of the last completed region and appends from there, so its final files
are byte-identical to an uninterrupted run's. :meth:`finish` completes the file
(the GeoJSON closing brackets, the label TIFF) and moves it into place with
``os.replace`` (then fsyncs the folder): a final file is either absent or complete.
Part files are created by :func:`hvx.io.atomic.open_new` (a leftover or planted
file or symlink is removed, never followed) and reopened by
:func:`hvx.io.atomic.open_existing` (never through a symlink).

- :class:`GeoJSONStream`: QuPath FeatureCollection, one Feature per nucleus, built
  by :func:`hvx.io.rows.geojson_features` (detections, classification name and
  colour, measurements), one feature per line.
- :class:`CSVStream`: rows of :func:`hvx.io.rows.csv_rows`, with ``cut`` appended.
- :class:`MaskStream`: every nucleus' pixels (bbox + packed bits) in emission order,
  plus low-water marks; :func:`write_label_tiff` turns it into a tiled, zlib
  compressed ``int32`` TIFF of instance ids, one strip of tiles in memory at a time.

Tables given to ``add`` are ``hvx.tiling.Nuclei`` (the columns of
:mod:`hvx.io.rows`; ``cut`` for the CSV, ``masks`` for :class:`MaskStream`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hvx.io.atomic import atomic_path, fsync_dir, open_existing, open_new
from hvx.io.rows import csv_header, csv_rows, geojson_features

if TYPE_CHECKING:  # type hints only: hvx.io never imports the tiling package at run time
    from hvx.results import Nuclei

__all__ = ["CSVStream", "GeoJSONStream", "MaskStream", "PartFile", "write_label_tiff"]


class PartFile:
    """An append-only ``<final>.part`` file that can be cut back to a checkpoint.

    Args:
        final: The finished file's path.
        header: Bytes that start a new file.
        resume_size: Continue a part file cut back to this size (None: start anew).
    """

    def __init__(self, final: Path, header: bytes = b"", resume_size: int | None = None) -> None:
        self.final = Path(final)
        self.part = self.final.with_name(self.final.name + ".part")
        self.header = header
        if resume_size is None:
            # A leftover (or planted) part file -- a symlink included -- is removed, not
            # followed; O_EXCL | O_NOFOLLOW then guarantee a fresh regular file.
            self._f = open_new(self.part)
            self._f.write(header)
        else:
            if self.part.is_symlink() or self.final.is_symlink():
                raise ValueError(
                    f"expected a regular file to resume, got a symlink: {self.part} "
                    "(remove it, or rerun with --overwrite)"
                )
            if not self.part.exists() and self.final.exists():
                os.replace(self.final, self.part)  # finished before a crash: reopen it
            if not self.part.exists() or self.part.stat().st_size < resume_size:
                raise ValueError(
                    f"expected {self.part} of at least {resume_size} bytes to resume, got "
                    f"{self.part.stat().st_size if self.part.exists() else 'no file'} "
                    "(outputs changed since the interruption? rerun with --overwrite)"
                )
            self._f = open_existing(self.part)
            self._f.truncate(resume_size)
            self._f.seek(resume_size)

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._f.tell()

    def write(self, data: bytes) -> None:
        """Appends bytes."""
        self._f.write(data)

    def checkpoint(self) -> int:
        """Flushes to disk (fsync); returns the size."""
        self._f.flush()
        os.fsync(self._f.fileno())
        return self.size

    def finish(self, trailer: bytes = b"") -> Path:
        """Appends ``trailer``, fsyncs and moves the part file to its final name."""
        self._f.write(trailer)
        self.checkpoint()
        self._f.close()
        os.replace(self.part, self.final)
        fsync_dir(self.final.parent)
        return self.final

    def close(self) -> None:
        """Closes without finishing (the part file stays for a resume)."""
        if not self._f.closed:
            self._f.flush()
            self._f.close()


class GeoJSONStream(PartFile):
    """A QuPath GeoJSON FeatureCollection written nucleus by nucleus.

    Args:
        final: Output ``.geojson`` path.
        class_names: Names of class ids 1..C-1.
        class_colors: RGB per class (default: hvx.io's palette).
        resume_size: See :class:`PartFile`.
    """

    _HEAD = b'{"type":"FeatureCollection","features":['

    def __init__(
        self,
        final: Path,
        class_names: Sequence[str],
        class_colors: Sequence[Sequence[int]] | None = None,
        resume_size: int | None = None,
    ) -> None:
        super().__init__(final, self._HEAD, resume_size)
        self.class_names, self.class_colors = tuple(class_names), class_colors

    def add(self, nuclei: Nuclei) -> None:
        """Appends one Feature per nucleus."""
        if not len(nuclei):
            return
        first = self.size == len(self._HEAD)
        parts = []
        for feat in geojson_features(nuclei, self.class_names, self.class_colors):
            parts.append(("\n" if first else ",\n") + json.dumps(feat, separators=(",", ":")))
            first = False
        self.write("".join(parts).encode())

    def finish(self) -> Path:  # type: ignore[override]
        """Closes the FeatureCollection; the file is valid JSON from now on."""
        return super().finish(b"\n]}\n")


class CSVStream(PartFile):
    """One CSV row per nucleus: ``hvx.io.rows.CSV_COLUMNS`` then ``cut`` (0/1)."""

    _EXTRA = ("cut",)

    def __init__(
        self, final: Path, class_names: Sequence[str], resume_size: int | None = None
    ) -> None:
        super().__init__(final, csv_header(self._EXTRA).encode(), resume_size)
        self.class_names = tuple(class_names)

    def add(self, nuclei: Nuclei) -> None:
        """Appends one row per nucleus (image coordinates)."""
        self.write(csv_rows(nuclei, self.class_names, extra=self._EXTRA).encode())


# A MaskStream record: int64 header (kind, id, rmin, cmin, rmax, cmax, type); kind 0 is a
# nucleus followed by ceil(h * w / 8) bytes of packed mask bits, kind 1 a low-water mark
# (rmin = the smallest row any later nucleus can touch).
_HEADER = np.dtype([("kind", "<i8"), ("id", "<i8"), ("box", "<i8", 4), ("type", "<i8")])


class MaskStream(PartFile):
    """Every emitted nucleus' pixels, for the label image (see :func:`write_label_tiff`)."""

    def add(self, nuclei: Nuclei, low_water: int) -> None:
        """Appends the nuclei, then a mark: no later nucleus reaches above ``low_water``."""
        out = []
        for k in range(len(nuclei)):
            head = np.zeros(1, _HEADER)
            head["id"], head["box"], head["type"] = nuclei.id[k], nuclei.bbox[k], nuclei.type[k]
            out += [head.tobytes(), np.packbits(nuclei.masks[k].ravel()).tobytes()]
        mark = np.zeros(1, _HEADER)
        mark["kind"], mark["box"][0, 0] = 1, low_water
        out.append(mark.tobytes())
        self.write(b"".join(out))


def _read_masks(path: Path) -> Iterator[tuple[int, int, tuple[int, ...], int, np.ndarray | None]]:
    """Yields (kind, id, box, type, mask) records of a MaskStream file."""
    with open(path, "rb") as f:
        while True:
            raw = f.read(_HEADER.itemsize)
            if not raw:
                return
            if len(raw) != _HEADER.itemsize:
                raise ValueError(f"expected a complete mask record in {path}, got a truncated one")
            h = np.frombuffer(raw, _HEADER)[0]
            box = tuple(int(v) for v in h["box"])
            if h["kind"] == 1:
                yield 1, 0, box, 0, None
                continue
            hh, ww = box[2] - box[0], box[3] - box[1]
            bits = np.frombuffer(f.read((hh * ww + 7) // 8), np.uint8)
            mask = np.unpackbits(bits, count=hh * ww).astype(bool).reshape(hh, ww)
            yield 0, int(h["id"]), box, int(h["type"]), mask


def _label_strips(masks_path: Path, height: int, padded_w: int, chunk: int) -> Iterator[np.ndarray]:
    """Yields ``ndarray[chunk, padded_w] int32`` strips of the label image, top to bottom.

    Nuclei are painted into a band of rows that starts at the lowest unfinished
    strip; a strip is yielded once a low-water mark passes its last row.
    """
    n_strips = -(-height // chunk)
    base = 0  # image row of band[0]
    band = np.zeros((0, padded_w), np.int32)
    done = 0  # strips yielded

    def ensure(rows_to: int) -> None:
        nonlocal band
        need = rows_to - base
        if need > band.shape[0]:
            band = np.concatenate([band, np.zeros((need - band.shape[0], padded_w), np.int32)])

    def flush(upto: int) -> Iterator[np.ndarray]:
        nonlocal base, band, done
        while done < n_strips and (done + 1) * chunk <= upto:
            ensure((done + 1) * chunk)
            yield band[:chunk]
            band = band[chunk:].copy()
            base += chunk
            done += 1

    for kind, gid, box, _t, mask in _read_masks(masks_path):
        if kind == 1:
            yield from flush(min(box[0], height))
            continue
        r0, c0, r1, c1 = box
        if r0 < base:
            raise ValueError(f"expected nuclei below the low-water mark {base}, got row {r0}")
        ensure(r1)
        view = band[r0 - base : r1 - base, c0:c1]
        view[mask & (view == 0)] = gid
    yield from flush(n_strips * chunk)


def write_label_tiff(
    masks_path: Path, out_path: Path, height: int, width: int, *, chunk: int = 256
) -> Path:
    """Paints the nuclei of a MaskStream file into a tiled ``int32`` TIFF of instance ids.

    Pixels claimed by two nuclei keep the first (emission order), as in the
    in-memory result. Memory: a band of rows from the lowest unfinished row to the
    lowest row painted so far (about a tile row plus a chunk), never the image.

    Args:
        masks_path: A finished MaskStream file.
        out_path: The ``.tif`` to write (atomically, :func:`hvx.io.atomic.atomic_path`).
        height: Image height.
        width: Image width.
        chunk: TIFF tile size (multiple of 16).

    Returns:
        ``out_path``.
    """
    import tifffile

    if chunk % 16:
        raise ValueError(f"expected a TIFF tile size that is a multiple of 16, got {chunk}")
    padded_w = -(-width // chunk) * chunk

    def tiles() -> Iterator[np.ndarray]:
        for strip in _label_strips(masks_path, height, padded_w, chunk):
            for x in range(0, padded_w, chunk):
                yield strip[:, x : x + chunk]

    with atomic_path(out_path) as tmp:
        tifffile.imwrite(
            tmp,
            tiles(),
            shape=(height, width),
            dtype=np.int32,
            tile=(chunk, chunk),
            compression="zlib",
            bigtiff=height * width * 4 > 2**31,
            metadata=None,
        )
    return out_path
