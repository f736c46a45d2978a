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

# ---- postprocess (csrc/postprocess.*, SPEC §3) ----

def pp_instances_from_hv(
    np_prob: np.ndarray,
    hv: np.ndarray,
    np_threshold: float,
    min_object_size: int,
    sobel_ksize: int,
    marker_threshold: float,
    opening_ksize: int,
    gaussian_ksize: int,
) -> np.ndarray:
    """SPEC 3a instance map: np (H, W) float32, hv (2, H, W) float32 -> (H, W) int32."""

def pp_instance_table(
    inst: np.ndarray, types: np.ndarray
) -> tuple[
    np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray
]:
    """SPEC 3b: (id, type, type_prob, centroid_yx, bbox, area, contour_xy, contour_offsets)."""

def pp_postprocess_batch(
    np_prob: np.ndarray,
    hv: np.ndarray,
    tp: np.ndarray,
    np_threshold: float,
    min_object_size: int,
    sobel_ksize: int,
    marker_threshold: float,
    opening_ksize: int,
    gaussian_ksize: int,
    num_threads: int = 0,
) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
    """Batch SPEC 3a + 3b, OpenMP over images, GIL released: (inst, type uint8, tables)."""

def _pp_normalize(x: np.ndarray) -> np.ndarray: ...
def _pp_sobel(x: np.ndarray, dx: int, ksize: int) -> np.ndarray: ...
def _pp_gaussian3(x: np.ndarray) -> np.ndarray: ...
def _pp_label4(x: np.ndarray) -> np.ndarray: ...
def _pp_fill_holes(x: np.ndarray) -> np.ndarray: ...
def _pp_open_ellipse(x: np.ndarray, k: int) -> np.ndarray: ...
def _pp_watershed(
    image: np.ndarray, markers: np.ndarray, mask: np.ndarray, exact_heap: bool = False
) -> np.ndarray: ...
def _pp_set_isa_limit(level: int) -> int: ...
def _pp_isa_level() -> int: ...
