"""What the trainer feeds the network: samples keyed by ``(epoch, index)``, and their order.

Every random choice is a function of the run seed and the position in the run,
so worker processes, their number and a ``--resume`` do not change the data:

- :class:`TrainTiles`: augmentation, random crop and targets of tile i in epoch e
  come from ``np.random.default_rng([seed, e, i])``;
- :func:`epoch_order` / :func:`weighted_order`: the tile order of a pass, from a
  ``torch.Generator`` seeded by ``(seed, pass)``;
- :class:`EpochBatches`: the batches of one epoch from a given step on (the last
  incomplete batch is dropped).
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np
import torch

from hvx.training.augment import Augmenter
from hvx.training.data import TileDataset, _allocate
from hvx.training.targets import make_targets

__all__ = ["EpochBatches", "TrainTiles", "epoch_order", "one_cv2_thread", "weighted_order"]


class TrainTiles(torch.utils.data.Dataset):
    """Training samples: augment -> random crop -> targets, keyed by ``(epoch, index)``.

    The uint8 image is returned as is; preprocessing runs per batch on the
    training device (the same ``hvx.preprocess.preprocess`` as inference).

    Args:
        ds: The training tiles, or a list of datasets (tile sizes may differ between
            them): index i runs over their tiles in order.
        augmenter: The augmentation.
        crop_size: Edge of the square crop (<= tile size).
        seed: Run seed.

    ``__getitem__((epoch, i))`` returns ``{"image": Tensor[H, W, 3] uint8,
    "np": Tensor[H, W] int64, "hv": Tensor[2, H, W] float32, "tp": Tensor[H, W] int64,
    "tp_valid": Tensor[] bool}`` (``tp_valid`` False: the tile has no class labels).
    """

    def __init__(
        self, ds: TileDataset | list[TileDataset], augmenter: Augmenter, crop_size: int, seed: int
    ) -> None:
        self.parts = [ds] if isinstance(ds, TileDataset) else list(ds)
        for part in self.parts:
            h, w = part.inst.shape[1:]
            if crop_size > min(h, w):
                raise ValueError(f"expected data.crop_size <= tile size {h}x{w}, got {crop_size}")
        self.ds = self.parts[0]
        self.sizes = [len(p) for p in self.parts]
        self.offsets = np.cumsum([0, *self.sizes])
        self.augmenter, self.crop, self.seed = augmenter, crop_size, seed

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        epoch, i = key
        rng = np.random.default_rng([self.seed, epoch, i])
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        part, j = self.parts[k], i - int(self.offsets[k])
        image, inst, cls = self.augmenter(part.images[j], part.inst[j], part.cls[j], rng)
        h, w = inst.shape
        y0 = int(rng.integers(0, h - self.crop + 1))
        x0 = int(rng.integers(0, w - self.crop + 1))
        sl = (slice(y0, y0 + self.crop), slice(x0, x0 + self.crop))
        image, inst, cls = image[sl], inst[sl], cls[sl]
        t = make_targets(inst, cls)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "np": torch.from_numpy(np.ascontiguousarray(t["np"], dtype=np.int64)),
            "hv": torch.from_numpy(np.ascontiguousarray(t["hv"], dtype=np.float32)),
            "tp": torch.from_numpy(np.ascontiguousarray(t["tp"], dtype=np.int64)),
            "tp_valid": torch.tensor(bool(part.typed[j])),  # type: ignore[index]
        }


def one_cv2_thread(worker_id: int) -> None:
    """DataLoader workers: one OpenCV thread each (the workers are the parallelism)."""
    cv2.setNumThreads(1)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The tile order of an epoch: a permutation of ``range(n)`` from ``(seed, epoch)``."""
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> 1))
    return torch.randperm(n, generator=g)


def weighted_order(sizes: list[int], weights: list[float], seed: int, epoch: int) -> torch.Tensor:
    """A pass over several datasets drawn by weight, from ``(seed, epoch)``.

    The pass has ``sum(sizes)`` keys; dataset k gets a share ``weights[k] /
    sum(weights)`` of them (largest remainder), taken from consecutive
    permutations of its tiles (so no tile repeats before all were seen), and
    the keys of all datasets are shuffled together. Indices are global (dataset
    k's tiles follow those of datasets 0..k-1). One dataset: ``epoch_order``.
    """
    if len(sizes) == 1:
        return epoch_order(sizes[0], seed, epoch)
    g = torch.Generator()
    g.manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> 1))
    counts = _allocate([float(w) for w in weights], sum(sizes))
    keys, offset = [], 0
    for n, c in zip(sizes, counts, strict=True):
        reps = [torch.randperm(n, generator=g) for _ in range(-(-c // n))] if n else []
        if reps:
            keys.append(torch.cat(reps)[:c] + offset)
        offset += n
    allk = torch.cat(keys)
    return allk[torch.randperm(len(allk), generator=g)]


class EpochBatches(torch.utils.data.Sampler):
    """Batches of ``(pass, index)`` keys of one epoch, from step ``start`` on.

    An epoch is ``repeats`` passes over the tiles, pass ``epoch * repeats + r``
    each in its own order; with ``repeats=1`` a key is ``(epoch, index)``.
    With several datasets (``sizes``, ``weights``) a pass is :func:`weighted_order`.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        epoch: int,
        start: int,
        repeats: int = 1,
        sizes: list[int] | None = None,
        weights: list[float] | None = None,
    ) -> None:
        sizes = [n] if sizes is None else sizes
        weights = [1.0] * len(sizes) if weights is None else weights
        keys = [
            (p, i)
            for p in range(epoch * repeats, (epoch + 1) * repeats)
            for i in weighted_order(sizes, weights, seed, p).tolist()
        ]
        steps = len(keys) // batch_size
        self.batches = [keys[s * batch_size : (s + 1) * batch_size] for s in range(start, steps)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)
