"""``hvx infer``: segment and classify nuclei in image files, write results per image."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("hvx.infer")


def _formats(text: str) -> list[str]:
    from hvx.io.writers import FORMATS

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
    from hvx.cli.slide import add_tiling_arguments

    add_tiling_arguments(p, common=False)
    p.set_defaults(func=run)


def _write(engine, result, k: int, image, stem: str, out: Path, formats: list[str]) -> None:
    from hvx.io import writers as w

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


def run(args: argparse.Namespace) -> int:
    """Processes every input; returns 0, 1 if any image failed, 2 for bad arguments."""
    import numpy as np
    from tqdm import tqdm

    from hvx.engine import Engine
    from hvx.io import ImageReadError, find_images, read_image
    from hvx.io.writers import output_paths

    if args.mpp is not None and not args.mpp > 0:
        log.error("expected --mpp > 0 microns per pixel, got %s", args.mpp)
        return 2
    if args.batch_size < 1:
        log.error("expected --batch-size >= 1, got %d", args.batch_size)
        return 2
    out: Path = args.out
    inputs = list(args.inputs)
    if args.samples:
        from hvx.assets import sample_paths

        inputs += sample_paths()
    if not inputs:
        log.error("expected at least one INPUT image or folder (or --samples), got none")
        return 2
    try:
        files = find_images(inputs)
        stems: dict[str, Path] = {}
        for f in files:  # two inputs with one stem would overwrite each other
            if f.stem in stems:
                raise ValueError(
                    f"two inputs share the output name {f.stem!r}: {stems[f.stem]}, {f}"
                )
            stems[f.stem] = f
        # ---- large images and slides go through the tiled path (hvx.cli.slide) ----
        from hvx.cli.slide import is_large_input, run_large_inputs

        large = [f for f in files if is_large_input(f)]
        files = [f for f in files if f not in large]
        todo = [
            f
            for f in files
            if args.overwrite
            or not all(p.is_file() for p in output_paths(out, f.stem, args.format))
        ]
        if todo or large or args.model is None or not args.model.exists():  # no load if done
            engine = Engine.load(args.model, backend=args.backend, device=args.device)
    except (FileNotFoundError, ValueError, ImportError, ConnectionError) as err:
        log.error("%s", err)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    done = 0
    skipped = len(files) - len(todo)
    failed: list[tuple[Path, str]] = []
    if large:  # tiled, streamed, resumable; one run folder per input
        failed += run_large_inputs(args, engine, large, out)
        done += len(large) - len(failed)
    if todo and args.mpp is not None:  # tiles: the engine rescales to the model's mpp
        engine.input_mpp = args.mpp
    pending: list[tuple[Path, np.ndarray]] = []

    def flush() -> None:
        nonlocal done
        if not pending:
            return
        groups = [pending[:]] if len({img.shape for _, img in pending}) == 1 else []
        groups = groups or [[item] for item in pending]
        pending.clear()
        for group in groups:
            try:
                result = engine.infer(np.stack([img for _, img in group]))
            except (ValueError, RuntimeError) as err:
                if len(group) > 1:  # isolate the bad image
                    groups.extend([item] for item in group)
                    continue
                failed.append((group[0][0], str(err)))
                log.error("failed %s: %s", group[0][0], err)
                continue
            for k, (path, img) in enumerate(group):
                try:
                    _write(engine, result, k, img, path.stem, out, args.format)
                    done += 1
                except (OSError, ValueError) as err:
                    failed.append((path, f"writing results failed: {err}"))
                    log.error("failed %s: writing results: %s", path, err)

    bar = tqdm(todo, unit="img", disable=args.no_progress or None, file=sys.stderr)
    for path in bar:
        try:
            img = read_image(path)
        except ImageReadError as err:
            failed.append((path, str(err)))
            log.error("skipped %s: %s", path, err)
            continue
        if pending and pending[0][1].shape != img.shape:
            flush()
        pending.append((path, img))
        if len(pending) >= args.batch_size:
            flush()
    flush()
    bar.close()
    where = f" [{engine.backend} on {engine.device}]" if todo or large else ""
    print(
        f"hvx infer: {done} processed, {skipped} skipped (already done), {len(failed)} failed "
        f"-> {out}{where}"
    )
    return 1 if failed else 0
