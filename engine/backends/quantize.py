"""Low-precision CPU paths (int8, bf16) and the accuracy gate that admits them.

Two ways to run the network faster on a CPU than fp32 ONNX Runtime:

- **int8**: ONNX Runtime static quantization (QDQ, per-channel int8 weights,
  uint8 activations, calibrated on training tiles; the two softmax nodes stay
  fp32 so the probability thresholds see unquantized values). Stored in the
  bundle as ``model.int8.onnx``.
- **bf16**: the torch network in bfloat16, channels-last, traced and frozen
  (conv + BatchNorm + ReLU fused by oneDNN), on CPUs with native bf16
  (``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``); elsewhere bf16 is
  emulated and slow, so it is refused.

Neither is used by ``Engine.load(precision="auto")`` unless the bundle's side file
``precision.json`` (written by ``hvx build BUNDLE --int8/--bf16``) records that it
passed the **gate** on validation tiles against fp32 ONNX Runtime: pooled
instance-map PQ >= :data:`GATE_MIN_PQ` and class flips (matched nuclei whose
majority type differs) <= :data:`GATE_MAX_FLIPS` of the matched nuclei. The record
names the SHA-256 of ``model.json`` it was made for; a changed bundle voids it.
``model.json`` itself is unchanged (its validation stays strict).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from hvx import _artifacts
from hvx.backends.base import INPUT_NAME
from hvx.backends.onnxruntime import OnnxRuntimeBackend
from hvx.io import read_image
from hvx.postprocess import postprocess

__all__ = [
    "GATE_MAX_FLIPS",
    "GATE_MIN_PQ",
    "INT8_FILE",
    "RECORD_FILE",
    "GateResult",
    "auto_cpu_precision",
    "compare_instances",
    "cpu_bf16_flags",
    "gate_tiles",
    "quantize_int8",
    "read_record",
    "record_entry",
    "write_record",
]

log = logging.getLogger(__name__)

#: Smallest pooled PQ of the low-precision instance maps against fp32.
GATE_MIN_PQ = 0.98
#: Largest fraction of matched nuclei whose type may change.
GATE_MAX_FLIPS = 0.01
#: Side file of a bundle holding the gate results.
RECORD_FILE = "precision.json"
#: The quantized network inside a bundle.
INT8_FILE = "model.int8.onnx"
_RECORD_FORMAT = "hvx-precision-gate"
_ENTRY_KEYS = frozenset(
    {"passed", "gate", "file", "sha256", "calibration", "cpu_flags", "date", "versions"}
)
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclasses.dataclass(frozen=True)
class GateResult:
    """Low-precision instance and type maps compared with the fp32 ones.

    Attributes:
        pq: Pooled binary PQ over all tiles (fp32 maps as ground truth).
        tp: Matched nuclei (IoU > 0.5), all tiles.
        fp: Nuclei only in the low-precision maps.
        fn: Nuclei only in the fp32 maps.
        flips: Matched nuclei whose majority type differs.
        tiles: Tiles compared.
    """

    pq: float
    tp: int
    fp: int
    fn: int
    flips: int
    tiles: int

    @property
    def flip_fraction(self) -> float:
        """``flips / tp`` (0 when nothing matched)."""
        return self.flips / self.tp if self.tp else 0.0

    @property
    def passed(self) -> bool:
        """PQ >= :data:`GATE_MIN_PQ` and flips <= :data:`GATE_MAX_FLIPS` of matched."""
        return self.pq >= GATE_MIN_PQ and self.flip_fraction <= GATE_MAX_FLIPS

    def to_dict(self) -> dict:
        """JSON-ready, with the thresholds and the verdict."""
        d = dataclasses.asdict(self)
        d.update(
            flip_fraction=self.flip_fraction,
            min_pq=GATE_MIN_PQ,
            max_flip_fraction=GATE_MAX_FLIPS,
            passed=self.passed,
        )
        return d


def _majority_types(inst: np.ndarray, typ: np.ndarray, num_types: int) -> np.ndarray:
    """Type per instance id (index = id): most pixels, ties to the smaller type."""
    n = int(inst.max()) + 1
    counts = np.bincount(
        inst.ravel().astype(np.int64) * num_types + typ.ravel(), minlength=n * num_types
    )
    return counts.reshape(n, num_types).argmax(axis=1)


def _match(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of ids with IoU > 0.5 (unique by construction) and their IoUs."""
    both = (a > 0) & (b > 0)
    nb = int(b.max()) + 1
    keys, inter = np.unique(a[both].astype(np.int64) * nb + b[both], return_counts=True)
    ia, ib = keys // nb, keys % nb
    area_a = np.bincount(a.ravel(), minlength=int(a.max()) + 1)
    area_b = np.bincount(b.ravel(), minlength=nb)
    iou = inter / (area_a[ia] + area_b[ib] - inter)
    keep = iou > 0.5
    return ia[keep], ib[keep], iou[keep]


def compare_instances(ref_inst, ref_type, test_inst, test_type, num_types: int) -> GateResult:
    """Compares low-precision maps with fp32 ones, tile by tile, pooled.

    Args:
        ref_inst: ``int (N, H, W)`` fp32 instance maps (0 = background).
        ref_type: ``uint8 (N, H, W)`` fp32 type maps.
        test_inst: ``int (N, H, W)`` low-precision instance maps.
        test_type: ``uint8 (N, H, W)`` low-precision type maps.
        num_types: Type classes including background.

    Returns:
        The :class:`GateResult`.

    Raises:
        ValueError: On mismatched or non-3-D shapes.
    """
    arrays = [np.asarray(v) for v in (ref_inst, ref_type, test_inst, test_type)]
    if arrays[0].ndim != 3 or any(v.shape != arrays[0].shape for v in arrays):
        raise ValueError(
            f"expected four (N, H, W) maps of one shape, got {[v.shape for v in arrays]}"
        )
    tp = fp = fn = flips = 0
    sum_iou = 0.0
    for ri, rt, ti, tt in zip(*arrays, strict=True):
        ri, ti = ri.astype(np.int64), ti.astype(np.int64)
        ia, ib, iou = _match(ri, ti)
        n_ref = len(np.unique(ri[ri > 0]))
        n_test = len(np.unique(ti[ti > 0]))
        tp += len(ia)
        fp += n_test - len(ia)
        fn += n_ref - len(ia)
        sum_iou += float(iou.sum())
        types_r = _majority_types(ri, rt.astype(np.int64), num_types)
        types_t = _majority_types(ti, tt.astype(np.int64), num_types)
        flips += int((types_r[ia] != types_t[ib]).sum())
    denom = tp + 0.5 * fp + 0.5 * fn
    pq = 1.0 if denom == 0 else (tp / denom) * (sum_iou / tp if tp else 0.0)
    return GateResult(pq=float(pq), tp=tp, fp=fp, fn=fn, flips=flips, tiles=len(arrays[0]))


def cpu_bf16_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> list[str]:
    """The native-bf16 flags this CPU reports (``avx512_bf16``, ``amx_bf16``); [] if none."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return []
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return [f for f in _BF16_FLAGS if f in flags]


def _tile_source(path: Path) -> str:
    """``train_13`` for ``train_13_004.png`` / ``consep_train_13_004.png``."""
    parts = path.stem.split("_")
    return "_".join(parts[-3:-1])


def gate_tiles(bundle, data: str | os.PathLike | None = None, calib: int = 32):
    """Validation and calibration tiles for the gate, and where they came from.

    With ``data`` (a CoNSeP-layout folder with ``images/<source>_<k>.png``), the
    validation tiles are those of the bundle's ``provenance.data.val_sources`` and
    the calibration tiles are ``calib`` evenly spaced tiles of the other sources.
    Without it (or when the provenance names no validation sources), both are the
    shipped sample tiles (held-out validation tiles), which the record says.

    Returns:
        ``(val uint8 (N,H,W,3), calib uint8 (M,H,W,3), description dict)``.

    Raises:
        ValueError: If ``data`` has no images or no tile of the validation sources.
    """
    val_sources = set(bundle.provenance.get("data", {}).get("val_sources") or ())
    if data is None or not val_sources:
        from hvx.assets import sample_paths

        tiles = np.stack([read_image(p) for p in sample_paths()])
        return tiles, tiles, {"validation": "shipped samples", "calibration": "shipped samples"}
    files = sorted((Path(data) / "images").glob("*.png"))
    val = [f for f in files if _tile_source(f) in val_sources]
    train = [f for f in files if _tile_source(f) not in val_sources]
    if not val or not train:
        raise ValueError(
            f"expected tiles of the validation sources {sorted(val_sources)} and of others "
            f"under {Path(data) / 'images'}, found {len(val)} and {len(train)}"
        )
    step = max(1, len(train) // calib)
    cal = train[::step][:calib]
    desc = {
        "validation": f"{data}: {len(val)} tiles of {sorted(val_sources)}",
        "calibration": f"{data}: {len(cal)} tiles of the other sources (every {step}th)",
    }
    return (
        np.stack([read_image(f) for f in val]),
        np.stack([read_image(f) for f in cal]),
        desc,
    )


@contextlib.contextmanager
def _quiet_root_logger():
    """ORT's quantizer logs one root warning per LayerNorm weight; keep them out."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(fp32_onnx: str | os.PathLike, out: str | os.PathLike, calib: np.ndarray) -> Path:
    """Static QDQ int8 quantization of an hvx ONNX export, written atomically.

    Args:
        fp32_onnx: The fp32 export (``hvx._artifacts.onnx_for_bundle``).
        out: Where the int8 model goes.
        calib: ``float32 (M, C, H, W)`` preprocessed calibration tiles.

    Returns:
        ``out`` as a Path.

    Raises:
        ImportError: Without onnxruntime / onnx.
        ValueError: If ``calib`` is not a non-empty float32 4-D array.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calib = np.asarray(calib)
    if calib.dtype != np.float32 or calib.ndim != 4 or not len(calib):
        raise ValueError(f"calib: expected float32 (M, C, H, W), got {calib.dtype} {calib.shape}")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{INPUT_NAME: calib[i : i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self._it, None)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pre = out.with_name(f".{out.name}.pre.tmp")
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        with _quiet_root_logger():
            quant_pre_process(str(fp32_onnx), str(pre), skip_symbolic_shape=True)
            softmax = [n.name for n in onnx.load(str(pre)).graph.node if n.op_type == "Softmax"]
            quantize_static(
                str(pre),
                str(tmp),
                _Reader(),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                nodes_to_exclude=softmax,
            )
        tmp.replace(out)
    finally:
        pre.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_record(bundle_path: str | os.PathLike) -> dict | None:
    """The bundle's ``precision.json``, validated; None when absent.

    Raises:
        ValueError: On another format, unknown precisions or unknown/missing keys.
    """
    path = Path(bundle_path) / RECORD_FILE
    if not path.is_file():
        return None
    rec = json.loads(path.read_text())
    if rec.get("format") != _RECORD_FORMAT or rec.get("schema_version") != 1:
        raise ValueError(f"{path}: expected format {_RECORD_FORMAT!r} version 1")
    unknown = set(rec) - {"format", "schema_version", "model_json_sha256", "int8", "bf16"}
    if unknown or "model_json_sha256" not in rec:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)} or no model_json_sha256")
    for name in ("int8", "bf16"):
        entry = rec.get(name)
        if entry is not None and set(entry) != _ENTRY_KEYS:
            raise ValueError(
                f"{path}: {name}: expected keys {sorted(_ENTRY_KEYS)}, got {sorted(entry)}"
            )
    return rec


def write_record(bundle_path: str | os.PathLike, precision: str, entry: dict) -> Path:
    """Adds/replaces one precision's entry in ``precision.json`` (atomic)."""
    bundle_path = Path(bundle_path)
    digest = _sha256(bundle_path / "model.json")
    rec = read_record(bundle_path)
    if rec is None or rec["model_json_sha256"] != digest:
        rec = {"format": _RECORD_FORMAT, "schema_version": 1, "model_json_sha256": digest}
    rec[precision] = entry
    path = bundle_path / RECORD_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(rec, indent=2) + "\n")
    tmp.replace(path)
    return path


def record_entry(gate: GateResult, *, file: Path | None, calibration: Any) -> dict:
    """One ``precision.json`` entry: verdict, gate numbers, file hash, machine facts."""
    import onnxruntime
    import torch

    return {
        "passed": gate.passed,
        "gate": gate.to_dict(),
        "file": None if file is None else file.name,
        "sha256": None if file is None else _sha256(file),
        "calibration": calibration,
        "cpu_flags": cpu_bf16_flags(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": {
            "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__,
            "platform": platform.platform(),
        },
    }


def _entry_valid(bundle_path: Path, rec: dict, precision: str) -> bool:
    entry = rec.get(precision)
    if not entry or not entry["passed"]:
        return False
    if rec["model_json_sha256"] != _sha256(bundle_path / "model.json"):
        log.warning("%s: %s was made for another model.json; ignored", bundle_path, RECORD_FILE)
        return False
    if entry["file"] is not None:
        f = bundle_path / entry["file"]
        if not f.is_file() or _sha256(f) != entry["sha256"]:
            log.warning("%s: %s missing or changed; int8 not used", bundle_path, entry["file"])
            return False
    return True


def auto_cpu_precision(bundle_path: str | os.PathLike) -> str:
    """What ``precision="auto"`` runs on this CPU: "bf16", "int8" or "fp32".

    bf16 when its gate passed and the CPU has native bf16, else int8 when its gate
    passed (and the quantized file is intact), else fp32.
    """
    bundle_path = Path(bundle_path)
    rec = read_record(bundle_path)
    if rec is None:
        return "fp32"
    if cpu_bf16_flags() and _entry_valid(bundle_path, rec, "bf16"):
        return "bf16"
    if _entry_valid(bundle_path, rec, "int8"):
        return "int8"
    return "fp32"


def cpu_runner(bundle, precision: str, *, threads: int | None = None, model=None):
    """The backend running ``bundle`` in int8 (ONNX Runtime) or bf16 (torch) on the CPU.

    Args:
        bundle: A ``ModelBundle``.
        precision: "int8" or "bf16".
        threads: ONNX Runtime intra-op threads (int8); torch uses its own setting.
        model: The bundle's ``HoVerNet`` if already built (bf16).

    Raises:
        ValueError: Another precision; no ``model.int8.onnx`` in the bundle (int8);
            a CPU without native bf16 (bf16).
    """
    if precision == "int8":
        from hvx.backends.onnxruntime import OnnxRuntimeBackend

        path = Path(bundle.path) / INT8_FILE
        if not path.is_file():
            raise ValueError(
                f"expected an int8 model {path}; make it with: hvx build {bundle.path} --int8"
            )
        return OnnxRuntimeBackend(path, threads=threads, precision="int8")
    if precision == "bf16":
        flags = cpu_bf16_flags()
        if not flags:
            raise ValueError(
                f"expected a CPU with native bf16 ({' or '.join(_BF16_FLAGS)} in "
                "/proc/cpuinfo) for precision='bf16', found neither"
            )
        from hvx.backends.cpu_bf16 import CpuBf16Backend
        from hvx.model import HoVerNetInference

        model = bundle.build_model("cpu") if model is None else model
        return CpuBf16Backend(HoVerNetInference(model))
    raise ValueError(f"expected precision 'int8' or 'bf16', got {precision!r}")


def run_gate(bundle, ref, test, tiles: np.ndarray, batch: int = 8) -> GateResult:
    """Runs fp32 ``ref`` and low-precision ``test`` backends on tiles; compares the maps.

    Args:
        bundle: A ``ModelBundle`` (pre/post-processing configs, ``num_types``).
        ref: The fp32 backend (``run(x) -> HeadOutputs``).
        test: The low-precision backend.
        tiles: uint8 RGB ``(N, H, W, 3)``, H and W multiples of the model's size multiple.
        batch: Tiles per network call.
    """
    import torch

    from hvx.preprocess import preprocess

    maps: list[list[np.ndarray]] = [[], [], [], []]
    for k in range(0, len(tiles), batch):
        x = preprocess(tiles[k : k + batch], bundle.preprocess, device="cpu", dtype=torch.float32)
        for j, runner in enumerate((ref, test)):
            h = runner.run(x).numpy()
            res = postprocess(h.np_prob, h.hv, h.tp_prob, bundle.postprocess)
            maps[2 * j].append(res.inst)
            maps[2 * j + 1].append(res.type)
    return compare_instances(*(np.concatenate(m) for m in maps), num_types=bundle.num_types)


def build_lowp(
    bundle,
    precision: str,
    *,
    data: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    calib: int = 32,
) -> dict:
    """``hvx build --int8/--bf16``: makes the model (int8), runs the gate, records it.

    Args:
        bundle: A ``ModelBundle`` (its folder must be writable).
        precision: "int8" or "bf16".
        data: CoNSeP-layout folder for validation/calibration tiles (see
            :func:`gate_tiles`); None: the shipped samples.
        cache_dir: Cache of the fp32 ONNX export.
        calib: Calibration tiles (int8).

    Returns:
        The entry written to ``precision.json``.
    """
    import torch

    from hvx.preprocess import preprocess

    val, cal, desc = gate_tiles(bundle, data, calib)  # fails fast on bad data
    model = bundle.build_model("cpu")
    fp32 = _artifacts.onnx_for_bundle(bundle, cache_dir, model=model)
    file = None
    if precision == "int8":
        x = preprocess(cal, bundle.preprocess, device="cpu", dtype=torch.float32).numpy()
        file = quantize_int8(fp32, Path(bundle.path) / INT8_FILE, x)
    test = cpu_runner(bundle, precision, model=model)
    gate = run_gate(bundle, OnnxRuntimeBackend(fp32), test, val)
    if precision == "bf16":
        desc = {"validation": desc["validation"], "calibration": None}
    entry = record_entry(gate, file=file, calibration=desc)
    write_record(bundle.path, precision, entry)
    return entry
