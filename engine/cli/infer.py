"""``hvx infer``: segment and classify nuclei in image files, write results per image."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hvx._version import __version__
from hvx.assets import default_model_path
from hvx.cli.slide import (
    add_stain_arguments,
    add_tiling_arguments,
    is_large_input,
    stain_normalizer,
)
from hvx.engine import Engine
from hvx.io import find_images, read_image
from hvx.io import writers as w
from hvx.io.atomic import atomic_write
from hvx.io.readers import image_size
from hvx.io.writers import FORMATS, output_paths
from hvx.postprocess import instance_table
from hvx.results import BatchResult
from hvx.tiling import TilingConfig, infer_image
from hvx.tiling.budget import check_tiled_memory
from hvx.tiling.resume import FolderLock, FolderLockedError

log = logging.getLogger("hvx.infer")


def _formats(text: str) -> list[str]:

    items = [f.strip() for f in text.split(",") if f.strip()]
    bad = [f for f in items if f not in FORMATS]
    if not items or bad:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(FORMATS)}, got {text!r}"
        )
    return list(dict.fromkeys(items))


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``hvx infer``."""
    p = sub.add_parser(
        "infer",
        help="segment and classify nuclei in PNG/JPEG/TIFF tiles",
        description="Run a model on image files or folders of images and write, per image, "
        "the chosen outputs to --out. Finished images are skipped on re-runs unless "
        "--overwrite; an unreadable file is reported and skipped, and the exit code is 1 "
        "when any image failed.",
    )
    p.add_argument("inputs", nargs="*", type=Path, metavar="INPUT", help="image files or folders")
    p.add_argument(
        "--samples",
        action="store_true",
        help="also process the sample H&E tiles shipped with hvx (CoNSeP, 40x)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--model",
        type=Path,
        default=None,
        help="model bundle folder, .plan file, or a published model's name (hvx models; "
        "downloaded once) (default: the bundled default model)",
    )
    p.add_argument(
        "--format",
        type=_formats,
        default=["npy", "geojson", "csv"],
        help="comma-separated: npy,conic,geojson,csv,overlay (default npy,geojson,csv)",
    )
    p.add_argument("--overwrite", action="store_true", help="redo images already finished")
    p.add_argument(
        "--backend", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"]
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:K")
    p.add_argument("--batch-size", type=int, default=8, help="tiles per network call")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    # ---- large images and slides: tiled path (hvx.cli.slide) ----

    add_tiling_arguments(p, common=False)
    add_stain_arguments(p)
    p.set_defaults(func=run)


def _write(engine, result, k: int, image, stem: str, out: Path, formats: list[str]) -> None:

    inst, typ, table = result.inst[k], result.type[k], result.tables[k]
    for fmt in formats:
        if fmt == "npy":
            w.write_npy(out / f"{stem}_inst.npy", inst)
            w.write_npy(out / f"{stem}_type.npy", typ)
        elif fmt == "conic":
            w.write_conic(out / f"{stem}_conic.npy", inst, typ)
        elif fmt == "geojson":
            w.write_geojson(out / f"{stem}.geojson", table, engine.class_names, engine.class_colors)
        elif fmt == "csv":
            w.write_csv(out / f"{stem}.csv", table, engine.class_names)
        elif fmt == "overlay":
            w.write_overlay(out / f"{stem}_overlay.png", image, table, engine.class_colors)


#: Images whose network input (after rescaling to the model's mpp) has more pixels
#: go through the tiled path in memory instead of one network call (~2.5 GB at 600 B/px).
ONE_PASS_MAX_PIXELS = 2048 * 2048
#: ``--stain-norm`` warns once when it fits on an image with a shorter side than this.
STAIN_FIT_MIN_SIDE = 512
#: Name of the run record in an ``hvx infer`` output folder.
RUN_RECORD = "hvx-run.json"
_RECORD_KEYS = ("hvx", "model", "mpp", "stain")  # what a rerun into the same folder must share


def _model_identity(model: Path | None) -> dict:
    """Path-independent hash of the bundle's files (or of a .plan file and its sidecar)."""
    import hashlib

    path = Path(model) if model is not None else default_model_path()
    h = hashlib.sha256()
    files = sorted(path.iterdir()) if path.is_dir() else [path, Path(f"{path}.json")]
    for f in files:
        if f.is_file() and f.suffix in (".json", ".safetensors", ".onnx", ".plan"):
            h.update(f.name.encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda fh=fh: fh.read(1 << 22), b""):
                    h.update(chunk)
    return {"name": path.name, "files_sha256": h.hexdigest()}


def _check_record(args: argparse.Namespace, out: Path) -> dict:
    """The run record for this command; refuses a folder holding another run's results.

    Raises:
        ValueError: ``out`` holds results of another model, ``--mpp`` or hvx version
            (unless ``--overwrite``, which reprocesses every image).
    """
    import json

    record = {
        "hvx": __version__,
        "model": _model_identity(args.model),
        "mpp": args.mpp,
        "format": sorted(args.format),
    }
    stain = getattr(args, "stain", None)
    if stain is not None:  # recorded only when used: older records stay valid
        record["stain"] = stain.identity()
    path = out / RUN_RECORD
    if path.is_file() and not args.overwrite:
        try:
            old = json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"expected a readable {path}, got {e}; use --overwrite") from e
        diff = [k for k in _RECORD_KEYS if old.get(k) != record.get(k)]
        if diff:
            raise ValueError(
                f"expected {out} to hold results of this model and settings, got another "
                f"run's (differs in {', '.join(diff)}); use another --out, or --overwrite "
                "to reprocess every image"
            )
        record["format"] = sorted(set(record["format"]) | set(old.get("format", [])))
    return record


def _write_record(out: Path, record: dict) -> None:
    import json

    atomic_write(out / RUN_RECORD, json.dumps(record, indent=2) + "\n")


def _network_pixels(path: Path, engine, mpp: float | None) -> int | None:
    """Pixels the network will see for ``path`` (header only), None when unreadable."""
    size = image_size(path)
    if size is None:
        return None
    scale = 1.0 if mpp is None else mpp / engine.mpp
    return int(round(size[0] * scale) * round(size[1] * scale))


def _infer_tiled(engine, image, args: argparse.Namespace):
    """One image through the tiled path in memory, results at the input resolution.

    The image is resized to the model's resolution, tiled (each network call sees
    ``--batch-size`` tiles of ``--tile`` px), stitched, and the maps resized back
    (nearest) with the table recomputed there -- as :meth:`Engine.infer` does for a
    rescaled one-pass call.
    """
    import cv2
    import numpy as np

    check_tiled_memory(args.tile, args.batch_size, 32, limit_gb=args.max_memory_gb)
    h, w = image.shape[:2]
    scale = engine.scale or 1.0
    saved, engine.input_mpp = engine.input_mpp, None  # tiles are at the model's mpp
    try:
        small = image
        if scale != 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            small = cv2.resize(image, size, interpolation=interp)
        config = TilingConfig(
            tile=args.tile, overlap=args.overlap, batch_size=args.batch_size, tissue=False
        )
        res = infer_image(engine, small, config=config)
    finally:
        engine.input_mpp = saved
    inst, typ, table = res.inst, res.type, res.nuclei
    if scale != 1.0:
        inst = cv2.resize(inst, (w, h), interpolation=cv2.INTER_NEAREST)
        typ = cv2.resize(typ, (w, h), interpolation=cv2.INTER_NEAREST)
        prob = dict(zip(table.id.tolist(), table.type_prob.tolist(), strict=True))
        table = instance_table(inst, typ)
        table.type_prob = np.array(
            [
                prob.get(i, p)
                for i, p in zip(table.id.tolist(), table.type_prob.tolist(), strict=True)
            ],
            dtype=table.type_prob.dtype,
        )
    return BatchResult(inst=inst[None], type=typ.astype(np.uint8)[None], tables=[table])


def run(args: argparse.Namespace) -> int:
    """Processes every input; returns 0, 1 if any image failed, 2 for bad arguments.

    Each file is isolated: a decoding, header, memory or backend error is reported
    for that file and the others complete.
    """
    error = _bad_arguments(args)
    if error is not None:
        log.error("%s", error)
        return 2
    out: Path = args.out
    inputs = _inputs(args)
    if not inputs:
        log.error("expected at least one INPUT image or folder (or --samples), got none")
        return 2
    try:
        files, large, todo, engine, record = _prepare(args, out, inputs)
    except (FileNotFoundError, ValueError, ImportError) as err:
        log.error("%s", err)
        return 2

    out.mkdir(parents=True, exist_ok=True)
    try:
        lock = FolderLock(out)  # two runs into one folder would interleave their files
    except FolderLockedError as err:
        log.error("%s", err)
        return 2
    failed: list[tuple[Path, str]] = []
    done = 0
    with lock:
        _write_record(out, record)
        if large:  # tiled, streamed, resumable; one run folder per input
            from hvx.cli.slide import run_large_inputs

            failed += run_large_inputs(args, engine, large, out)
            done += len(large) - len(failed)
        done += _run_files(args, engine, todo, out, failed)
    where = f" [{engine.backend} on {engine.device}]" if engine is not None else ""
    print(
        f"hvx infer: {done} processed, {len(files) - len(todo)} skipped (already done), "
        f"{len(failed)} failed -> {out}{where}"
    )
    return 1 if failed else 0


def _bad_arguments(args: argparse.Namespace) -> str | None:
    """The first error in the options that needs no file access beyond ``--out``, or None."""
    if args.batch_size < 1:
        return f"expected --batch-size >= 1, got {args.batch_size}"
    if args.out.exists() and not args.out.is_dir():
        return f"expected --out to be a folder, got a file: {args.out}"
    return None


def _inputs(args: argparse.Namespace) -> list[Path]:
    """The INPUT paths, plus the shipped sample tiles with ``--samples``."""
    inputs = list(args.inputs)
    if args.samples:
        from hvx.assets import sample_paths

        inputs += sample_paths()
    return inputs


def _prepare(args: argparse.Namespace, out: Path, inputs: list[Path]):
    """Finds the images, checks names, model and run record, loads the engine if needed.

    Returns:
        ``(files, large, todo, engine, record)``: the plain images, the large ones
        (streamed path), the plain ones still to do, the engine (None when nothing
        is to do) and the run record to write.

    Raises:
        FileNotFoundError, ValueError, ImportError: Missing inputs, two inputs with
            one output name, a bad ``--model``, another run's folder, an engine
            that cannot load.
    """
    args.stain = stain_normalizer(args)
    files = find_images(inputs)
    stems: dict[str, Path] = {}
    for f in files:  # two inputs with one stem would overwrite each other
        if f.stem in stems:
            raise ValueError(f"two inputs share the output name {f.stem!r}: {stems[f.stem]}, {f}")
        stems[f.stem] = f
    if args.model is not None and args.model.is_file() and args.model.suffix != ".plan":
        raise ValueError(
            f"expected a model bundle folder (model.json + weights.safetensors) or a "
            f"TensorRT .plan file for --model, got the file {args.model}"
        )
    record = _check_record(args, out)
    large = [f for f in files if is_large_input(f)]
    files = [f for f in files if f not in large]
    todo = [
        f
        for f in files
        if args.overwrite or not all(p.is_file() for p in output_paths(out, f.stem, args.format))
    ]
    engine = None
    if todo or large:  # no load when everything is done
        engine = Engine.load(args.model, backend=args.backend, device=args.device)
    return files, large, todo, engine, record


def _run_files(args, engine, todo: list[Path], out: Path, failed: list) -> int:
    """Runs the plain images; appends ``(path, message)`` to ``failed``; returns the done count.

    Images go one-pass in groups of one shape (at most ``--batch-size`` images and
    :data:`ONE_PASS_MAX_PIXELS` network pixels per call), or tiled when one image
    alone has more network pixels (after rescaling to the model's mpp).
    """
    import numpy as np
    from tqdm import tqdm

    if not todo:
        return 0
    engine.input_mpp = args.mpp  # tiles: the engine rescales to the model's mpp
    done = 0
    pending: list[tuple[Path, np.ndarray]] = []
    originals: dict[Path, np.ndarray] = {}  # --stain-norm: overlays show the input as read
    warned = False

    def fail(path: Path, what: str, err: BaseException) -> None:
        originals.pop(path, None)
        msg = " ".join(str(err).split()) or type(err).__name__
        failed.append((path, f"{what}: {msg}"))
        log.error("failed %s: %s: %s", path, what, msg)

    def write(path: Path, img, result, k: int) -> None:
        nonlocal done
        try:
            _write(engine, result, k, originals.pop(path, img), path.stem, out, args.format)
            done += 1
        except (OSError, ValueError) as err:
            fail(path, "writing results", err)

    def flush() -> None:
        groups = [pending[:]] if len({img.shape for _, img in pending}) == 1 else []
        groups = groups or [[item] for item in pending]
        pending.clear()
        for group in groups:
            try:
                result = engine.infer(np.stack([img for _, img in group]))
            except Exception as err:
                if len(group) > 1:  # isolate the bad image
                    groups.extend([item] for item in group)
                    continue
                fail(group[0][0], "inference", err)
                continue
            for k, (path, img) in enumerate(group):
                write(path, img, result, k)

    scale2 = (engine.scale or 1.0) ** 2
    bar = tqdm(todo, unit="img", disable=args.no_progress or None, file=sys.stderr)
    for path in bar:
        try:
            net = _network_pixels(path, engine, args.mpp)
            if net is not None and net > ONE_PASS_MAX_PIXELS:  # refuse before decoding
                from hvx.tiling.budget import check_tiled_image_memory

                check_tiled_image_memory(net, args.tile, args.batch_size, args.max_memory_gb)
            img = read_image(path)
        except Exception as err:
            fail(path, "reading", err)
            continue
        if getattr(args, "stain", None) is not None:  # fitted on the whole image
            if min(img.shape[:2]) < STAIN_FIT_MIN_SIDE and not warned:
                warned = True
                log.warning(
                    "--stain-norm fits each image alone; %s is %d x %d px, and the colour "
                    "statistics of a small tile depend on what it shows (docs/stain.md: "
                    "normalising 256 px tiles one by one scored lower than whole images)",
                    path.name,
                    img.shape[1],
                    img.shape[0],
                )
            try:
                originals[path], img = img, args.stain(img)
            except ValueError as err:
                fail(path, "stain normalisation", err)
                continue
        net = img.shape[0] * img.shape[1] * scale2
        if net > ONE_PASS_MAX_PIXELS:
            try:
                write(path, img, _infer_tiled(engine, img, args), 0)
            except Exception as err:
                fail(path, "tiled inference", err)
            continue
        group_px = sum(i.shape[0] * i.shape[1] for _, i in pending) * scale2
        if pending and (pending[0][1].shape != img.shape or group_px + net > ONE_PASS_MAX_PIXELS):
            flush()
        pending.append((path, img))
        if len(pending) >= args.batch_size:
            flush()
    flush()
    bar.close()
    return done
