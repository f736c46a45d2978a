"""HV-gradient watershed post-processing: HoVer-Net's algorithm, to the pixel, in C++.

The public functions validate and dispatch to ``hvx._native`` (C++, OpenMP over
images, GIL released). The reference twin, written from SPEC §3 with OpenCV,
scipy and scikit-image, lives in :mod:`hvx._postprocess_ref` and is the oracle
in the tests.

Example:
    >>> from hvx.postprocess import PostprocessConfig, postprocess
    >>> res = postprocess(np_prob, hv, tp_prob)      # (N,H,W), (N,2,H,W), (N,C,H,W)
    >>> res.inst.shape, len(res.tables[0])
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from hvx import _dictconfig
from hvx.results import BatchResult, NucleusTable

__all__ = [
    "PostprocessConfig",
    "instance_table",
    "instances_from_hv",
    "postprocess",
]


@dataclasses.dataclass(frozen=True)
class PostprocessConfig:
    """Every constant of SPEC §3a (HoVer-Net ``__proc_np_hv`` at fx = 1).

    Attributes:
        np_threshold: Foreground is ``np_prob >= np_threshold`` (compared in float32).
        min_object_size: Foreground blobs and markers with fewer pixels (4-connected)
            are removed; exactly this many pixels stay (scikit-image < 0.26 rule).
        sobel_ksize: Aperture of the Sobel derivative of the normalised h / v maps
            (odd, 3..31; HoVer-Net: ``int(20 * fx + 1)`` = 21).
        marker_threshold: Pixels whose gradient energy ``max(1 - |Sobel|)`` is
            ``>= marker_threshold`` are not markers.
        opening_ksize: Size of the ellipse that opens the markers (odd; 1 = none).
        gaussian_ksize: Smoothing of the relief, (3, 3) sigma 0 (only 3 is supported).
        conic: Run the CoNiC baseline pipeline of SPEC §3c instead: maps 2x up
            (bilinear; types nearest), §3a + §3b, class map from the filled outer
            contours (later ids win), both maps 0.5x down (nearest).
    """

    np_threshold: float = 0.5
    min_object_size: int = 10
    sobel_ksize: int = 21
    marker_threshold: float = 0.4
    opening_ksize: int = 5
    gaussian_ksize: int = 3
    conic: bool = False

    def __post_init__(self) -> None:
        if not np.isfinite(self.np_threshold) or not np.isfinite(self.marker_threshold):
            raise ValueError(
                f"expected finite thresholds, got np_threshold={self.np_threshold}, "
                f"marker_threshold={self.marker_threshold}"
            )
        if int(self.min_object_size) != self.min_object_size or self.min_object_size < 0:
            raise ValueError(f"min_object_size: expected an int >= 0, got {self.min_object_size}")
        if self.sobel_ksize not in range(3, 32, 2):
            raise ValueError(f"sobel_ksize: expected an odd int in [3, 31], got {self.sobel_ksize}")
        if self.opening_ksize < 1 or self.opening_ksize % 2 == 0:
            raise ValueError(f"opening_ksize: expected an odd int >= 1, got {self.opening_ksize}")
        if self.gaussian_ksize != 3:
            raise ValueError(f"gaussian_ksize: expected 3, got {self.gaussian_ksize}")

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-ready dict of every field; inverse of :meth:`from_dict`."""
        return _dictconfig.to_dict(self)

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], *, source: str = "PostprocessConfig"
    ) -> PostprocessConfig:
        """Builds a config from :meth:`to_dict` output (the rule of :mod:`hvx._dictconfig`).

        Every key is required (no documented defaults: a bundle records them all).

        Raises:
            ValueError: On an unknown or missing key, a mistyped or invalid value.
        """
        return _dictconfig.from_dict(cls, d, source=source)


def _native():
    from hvx import _native

    return _native


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, any device
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: expected an array, got {type(x).__name__}") from err


def _float_array(
    x: Any, name: str, shape_text: str, ndim: int, check_finite: bool = True
) -> np.ndarray:
    a = _to_numpy(x, name)
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected shape {shape_text}, got {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{name}: expected a float dtype, got {a.dtype}")
    if a.size == 0:
        raise ValueError(f"{name}: expected a non-empty array {shape_text}, got {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if check_finite and not np.isfinite(a).all():
        raise ValueError(f"{name}: expected finite values, got NaN or inf")
    return a


def _check_hv(hv: np.ndarray, lead: tuple[int, ...], hw: tuple[int, int]) -> None:
    want = (*lead, 2, *hw)
    if hv.shape != want:
        text = ", ".join(["N"] * len(lead) + ["2", "H", "W"])
        raise ValueError(f"hv: expected shape ({text}) = {want}, got {hv.shape}")


def _type_input(
    tp: Any, lead: tuple[int, ...], hw: tuple[int, int], check_finite: bool = True
) -> tuple[np.ndarray, bool]:
    """Validated type input: (int32 labels, False) or (float32 probabilities, True).

    With ``check_finite=False`` probabilities are not scanned for NaN / inf here
    (the native argmax checks them in the same pass).
    """
    a = _to_numpy(tp, "type map")
    if a.shape == (*lead, *hw):
        if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
            raise ValueError(f"type labels: expected an integer dtype, got {a.dtype}")
        if a.size and (a.min() < 0 or a.max() > 255):
            raise ValueError(f"type labels: expected ids in [0, 255], got [{a.min()}, {a.max()}]")
        return np.ascontiguousarray(a, dtype=np.int32), False
    if a.ndim == len(lead) + 3 and a.shape[: len(lead)] == lead and a.shape[-2:] == hw:
        p = _float_array(a, "type probabilities", "(..., C, H, W)", a.ndim, check_finite)
        if p.shape[len(lead)] > 256:
            raise ValueError(f"type probabilities: expected C <= 256, got {p.shape[len(lead)]}")
        return p, True
    lead_txt = "".join(f"{n}, " for n in lead)
    raise ValueError(
        f"type map: expected labels ({lead_txt}H, W) = {(*lead, *hw)} or probabilities "
        f"({lead_txt}C, H, W), got {a.shape}"
    )


def _type_labels(tp: Any, lead: tuple[int, ...], hw: tuple[int, int]) -> np.ndarray:
    """Type labels (int32): labels as given, probabilities by argmax (ties to the lower id)."""
    a, is_probs = _type_input(tp, lead, hw)
    return np.argmax(a, axis=len(lead)).astype(np.int32) if is_probs else a


def _params(config: PostprocessConfig) -> dict[str, Any]:
    if not isinstance(config, PostprocessConfig):
        raise ValueError(f"config: expected a PostprocessConfig, got {type(config).__name__}")
    return {
        "np_threshold": float(config.np_threshold),
        "min_object_size": int(config.min_object_size),
        "sobel_ksize": int(config.sobel_ksize),
        "marker_threshold": float(config.marker_threshold),
        "opening_ksize": int(config.opening_ksize),
        "gaussian_ksize": int(config.gaussian_ksize),
    }


def instances_from_hv(
    np_prob: np.ndarray, hv: np.ndarray, config: PostprocessConfig = PostprocessConfig()
) -> np.ndarray:
    """Instance map of one image by the HV-gradient watershed (SPEC §3a).

    ``config.conic`` is ignored here (see :func:`postprocess`).

    Args:
        np_prob: ``ndarray[H, W]`` float foreground probability.
        hv: ``ndarray[2, H, W]`` float; channel 0 horizontal, 1 vertical.
        config: The constants.

    Returns:
        ``ndarray[H, W] int32``: 0 background, ids = marker labels (raster order of
        the markers; ids of removed small markers leave gaps).

    Raises:
        ValueError: Wrong shape or dtype, empty input, NaN or inf.
    """
    # NaN / inf are rejected by the native pass that reads the values anyway
    a = _float_array(np_prob, "np_prob", "(H, W)", 2, check_finite=False)
    h = _float_array(hv, "hv", "(2, H, W)", 3, check_finite=False)
    _check_hv(h, (), a.shape)
    return _native().pp_instances_from_hv(a, h, **_params(config))


def _table_from_native(t: tuple) -> NucleusTable:
    ids, types, prob, cen, bbox, area, xy, offs = t
    contours = [xy[offs[k] : offs[k + 1]] for k in range(len(ids))]
    return NucleusTable(
        id=ids, type=types, type_prob=prob, centroid=cen, bbox=bbox, area=area, contours=contours
    )


def instance_table(inst: np.ndarray, type_map_or_probs: np.ndarray) -> NucleusTable:
    """Per-instance records (SPEC §3b).

    Args:
        inst: ``ndarray[H, W]`` int instance map, ids >= 0 (0 = background).
        type_map_or_probs: ``ndarray[H, W]`` int type ids, or ``ndarray[C, H, W]``
            float type probabilities (argmax per pixel, ties to the lower id).

    Returns:
        A :class:`~hvx.results.NucleusTable`, ascending id; instances with an outer
        contour of < 3 points are left out.

    Raises:
        ValueError: Wrong shapes or dtypes, negative ids, NaN or inf.
    """
    i = _to_numpy(inst, "inst")
    if i.ndim != 2 or i.size == 0:
        raise ValueError(f"inst: expected a non-empty (H, W) array, got {i.shape}")
    if not np.issubdtype(i.dtype, np.integer):
        raise ValueError(f"inst: expected an integer dtype, got {i.dtype}")
    if i.min() < 0 or i.max() > np.iinfo(np.int32).max:
        raise ValueError(f"inst: expected ids in [0, 2**31 - 1], got [{i.min()}, {i.max()}]")
    types = _type_labels(type_map_or_probs, (), i.shape)
    return _table_from_native(_native().pp_instance_table(i.astype(np.int32, copy=False), types))


def postprocess(
    np_prob: np.ndarray,
    hv: np.ndarray,
    tp: np.ndarray,
    config: PostprocessConfig = PostprocessConfig(),
    num_threads: int | None = None,
) -> BatchResult:
    """Instances, type maps and nucleus tables of a batch (SPEC §3a + §3b, or §3c).

    Args:
        np_prob: ``ndarray[N, H, W]`` float foreground probability.
        hv: ``ndarray[N, 2, H, W]`` float; channel 0 horizontal, 1 vertical.
        tp: ``ndarray[N, C, H, W]`` float type probabilities (argmax per pixel) or
            ``ndarray[N, H, W]`` int type labels in [0, 255].
        config: The constants; ``config.conic`` selects the CoNiC pipeline (§3c).
        num_threads: Threads over images (None: all of OpenMP's default).

    Returns:
        A :class:`~hvx.results.BatchResult`. In the CoNiC pipeline the tables are
        those of the final (H, W) maps, with the filled-contour classes as types.

    Raises:
        ValueError: Wrong shapes or dtypes, empty input, NaN or inf, num_threads < 1.
    """
    params = _params(config)
    # NaN / inf: the native batch rejects them in passes that read the values
    # anyway; the CoNiC pipeline resizes first, so it checks here
    a = _float_array(np_prob, "np_prob", "(N, H, W)", 3, check_finite=config.conic)
    h = _float_array(hv, "hv", "(N, 2, H, W)", 4, check_finite=config.conic)
    n, hw = a.shape[0], a.shape[1:]
    _check_hv(h, (n,), hw)
    # the native batch checks probabilities for NaN / inf in its argmax pass
    types, is_probs = _type_input(tp, (n,), hw, check_finite=config.conic)
    if num_threads is not None and (int(num_threads) != num_threads or num_threads < 1):
        raise ValueError(f"num_threads: expected an int >= 1 or None, got {num_threads}")
    threads = 0 if num_threads is None else int(num_threads)
    if config.conic:
        labels = np.argmax(types, axis=1).astype(np.int32) if is_probs else types
        return _conic(a, h, labels, params, threads)
    # probabilities go to C++ as they are (argmax there, per image, in parallel)
    inst, type_map, tables = _native().pp_postprocess_batch(
        a, h, types, **params, num_threads=threads
    )
    return BatchResult(inst=inst, type=type_map, tables=[_table_from_native(t) for t in tables])


def _conic(a: np.ndarray, h: np.ndarray, labels: np.ndarray, params: dict, threads: int):
    """SPEC §3c on a validated batch (float32 maps, int32 labels)."""
    import cv2

    n, height, width = a.shape
    a2 = np.stack([cv2.resize(x, (0, 0), fx=2, fy=2) for x in a])
    h2 = np.stack(
        [
            np.moveaxis(
                cv2.resize(np.ascontiguousarray(np.moveaxis(x, 0, -1)), (0, 0), fx=2, fy=2).reshape(
                    2 * height, 2 * width, 2
                ),
                -1,
                0,
            )
            for x in h
        ]
    )
    t2 = np.ascontiguousarray(labels.repeat(2, axis=1).repeat(2, axis=2))  # nearest 2x
    nat = _native()
    inst2, _, tables2 = nat.pp_postprocess_batch(
        np.ascontiguousarray(a2),
        np.ascontiguousarray(h2, dtype=np.float32),
        t2,
        **params,
        num_threads=threads,
    )
    inst = np.ascontiguousarray(inst2[:, ::2, ::2])
    cls = np.zeros((n, height, width), np.uint8)
    tables = []
    for i in range(n):
        t = _table_from_native(tables2[i])
        full = np.zeros((2 * height, 2 * width), np.int32)
        for k in range(len(t)):
            cv2.drawContours(
                full, [t.contours[k].reshape(-1, 1, 2)], -1, int(t.type[k]), thickness=-1
            )
        cls[i] = full[::2, ::2]
        tables.append(_table_from_native(nat.pp_instance_table(inst[i], cls[i].astype(np.int32))))
    return BatchResult(inst=inst, type=cls, tables=tables)
