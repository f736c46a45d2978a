"""Type stub for the hvx._native C++ extension (built from csrc/)."""

import numpy as np
import numpy.typing as npt

def openmp_enabled() -> bool:
    """True when hvx._native was compiled with OpenMP."""

def max_threads() -> int:
    """Threads a parallel batch call uses by default (1 without OpenMP)."""

def set_num_threads(n: int) -> None:
    """Sets the thread count of later batch calls (n >= 1)."""

# ----- metrics (csrc/metrics.cpp); use hvx.metrics, which validates and documents

def pq_counts(
    true_inst: npt.NDArray[np.integer], pred_inst: npt.NDArray[np.integer]
) -> tuple[int, int, int, float]:
    """Binary PQ counts (tp, fp, fn, sum_iou) of one pair of (H, W) maps of one dtype."""

def conic_stats(
    true: npt.NDArray[np.integer],
    pred: npt.NDArray[np.integer],
    num_classes: int = 6,
    num_threads: int = 0,
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.float64]
]:
    """Per-image CoNiC statistics.

    Returns binary counts (N, 3), binary IoU sums (N,), class counts (N, C, 3) and
    class IoU sums (N, C).
    """

def conic_counts(
    maps: npt.NDArray[np.integer],
    crop_h: int,
    crop_w: int,
    num_classes: int = 6,
    num_threads: int = 0,
) -> npt.NDArray[np.int64]:
    """Per-class nucleus counts (N, C) in the central (crop_h, crop_w) crop."""

def pairwise_sum(x: npt.ArrayLike) -> float:
    """NumPy's pairwise float64 summation of a 1-D array."""
