"""Peak host memory of tiled inference on a generated 20,000 x 20,000 image.

The image is a tiled TIFF written strip by strip from real CoNSeP tiles (never
whole in memory); the "engine" is a fast stand-in that returns the mosaic's
label maps under each tile (the network is not what is measured here: the
reader, queues, stitcher and writers are). It runs in this process; peak RSS is
``ru_maxrss``. The label oracle also checks that the stitched count equals the
mosaic's count (no seam duplicates, none lost).

Usage: python benchmarks/wsi_memory.py [--size 20000] [--out DIR]

Issue 23 cases (each in its own process, so ``ru_maxrss`` is that case's peak):
``--issue23`` runs a 20k^2 single-level tiled TIFF that is mostly background
(read through OpenSlide at a target mpp, the path whose thumbnail used to read
level 0 whole; and through tifffile), the old OpenSlide thumbnail as the
baseline, and synthetic slides with a background right edge at two sizes
(stitcher ``held_max`` must not grow with the area), and writes
``results/wsi_memory_issue23_<date>.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tiling"))


def _source(consep: Path, size: int, seed: int = 0, layout: str = "full"):
    """Label data and the CoNSeP tile of each 256 px mosaic cell (-1: background).

    ``layout``: "full" (tissue everywhere), "right_bg" (the right quarter is glass,
    as on most slides), "island" (one 2,048 px tissue block near the top left;
    the rest glass).
    """
    with np.load(consep / "labels.npz") as z:
        data = {k: z[k] for k in ("names", "inst", "cls")}
    n = -(-size // 256)
    pick = np.random.default_rng(seed).integers(0, len(data["names"]), (n, n))
    if layout == "right_bg":
        pick[:, n - n // 4 :] = -1
    elif layout == "island":
        keep = np.full((n, n), -1)
        keep[4:12, 4:12] = pick[4:12, 4:12]
        pick = keep
    return data, pick


def write_mosaic(consep: Path, size: int, path: Path, layout: str = "full") -> None:
    import cv2
    import tifffile

    data, pick = _source(consep, size, layout=layout)
    imgs = {-1: np.full((256, 256, 3), 242, np.uint8)}  # glass

    def tile(i):
        if i not in imgs:
            bgr = cv2.imread(str(consep / "images" / f"{data['names'][i]}.png"))
            imgs[i] = np.ascontiguousarray(bgr[..., ::-1])
        return imgs[i]

    def tiles():
        for r in range(pick.shape[0]):
            for c in range(pick.shape[1]):
                yield tile(pick[r, c])

    tifffile.imwrite(
        path,
        tiles(),
        shape=(size, size, 3),
        dtype=np.uint8,
        tile=(256, 256),
        photometric="rgb",
        compression="zlib",
        bigtiff=True,
        metadata=None,
    )


class MosaicOracle:
    """Returns the mosaic's labels under each tile, in the order the pipeline sends them."""

    class_names = ("misc", "inflammatory", "epithelial", "spindle")

    def __init__(self, consep, size, plan, tiles, layout="full"):
        self.data, self.pick = _source(consep, size, layout=layout)

        self.plan, self.queue, self.size = plan, list(tiles), size

    def labels(self, y0, x0, t):
        inst = np.zeros((t, t), np.int32)
        cls = np.zeros((t, t), np.uint8)
        for r in range(y0 // 256, min((y0 + t - 1) // 256, self.pick.shape[0] - 1) + 1):
            for c in range(x0 // 256, min((x0 + t - 1) // 256, self.pick.shape[1] - 1) + 1):
                k = int(self.pick[r, c])
                if k < 0:  # glass
                    continue
                sy, sx = r * 256, c * 256
                ya, yb = max(y0, sy), min(y0 + t, sy + 256, self.size)
                xa, xb = max(x0, sx), min(x0 + t, sx + 256, self.size)
                if ya >= yb or xa >= xb:
                    continue
                src = self.data["inst"][k][ya - sy : yb - sy, xa - sx : xb - sx]
                uid = (r * self.pick.shape[1] + c) * 4096  # unique per mosaic cell
                inst[ya - y0 : yb - y0, xa - x0 : xb - x0] = np.where(src > 0, src + uid, 0)
                cls[ya - y0 : yb - y0, xa - x0 : xb - x0] = self.data["cls"][k][
                    ya - sy : yb - sy, xa - sx : xb - sx
                ]
        return inst, cls

    def infer(self, batch):
        from synth import Result, relabel, table_from_maps

        out_i, tables = [], []
        for _ in batch:
            t = self.plan.tile_at(self.queue.pop(0))
            inst, cls = self.labels(t.y0, t.x0, self.plan.tile)
            inst = relabel(inst)
            out_i.append(inst)
            tables.append(table_from_maps(inst, cls))
        return Result(np.stack(out_i), np.zeros((len(batch), 1, 1), np.uint8), tables)


def truth_count(consep, size, layout="full"):
    data, pick = _source(consep, size, layout=layout)
    n = 0
    for r in range(pick.shape[0]):
        for c in range(pick.shape[1]):
            if pick[r, c] < 0:
                continue
            lab = data["inst"][pick[r, c]][: size - r * 256, : size - c * 256]
            n += len(np.unique(lab)) - 1
    return n


# ------------------------------------------------------------------ issue 23 cases
def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _image(consep: Path, work: Path, size: int, layout: str) -> Path:
    img = work / f"mosaic_{layout}_{size}.tif"
    if not img.exists():
        write_mosaic(consep, size, img, layout=layout)
    return img


def run_case(case: str, size: int, work: Path, consep: Path, overlap: int) -> dict:
    """One issue-23 case in this process; returns its measurements."""
    import shutil

    from hvx.io.slides import open_image
    from hvx.tiling import TilingConfig, infer_slide, plan_tiles
    from hvx.tiling.pipeline import schedule_tiles

    if case == "infer_png":
        return _infer_png(consep, work, size)
    layout = "right_bg" if case == "right_bg" else "island"
    img = _image(consep, work, size, layout)
    rss_start = _peak_mb()
    if case == "thumb_baseline":  # what hvx did before: OpenSlide's thumbnail of level 0
        import openslide

        with openslide.OpenSlide(str(img)) as s:
            t0 = time.perf_counter()
            thumb = s.get_thumbnail((2048, 2048))
            return {
                "what": "openslide.get_thumbnail((2048, 2048)) of the single-level TIFF "
                "(the pre-fix OpenSlideReader.thumbnail)",
                "levels": s.level_count,
                "thumbnail": list(thumb.size),
                "seconds": round(time.perf_counter() - t0, 1),
                "peak_rss_mb": round(_peak_mb(), 1),
                "rss_before_mb": round(rss_start, 1),
            }
    target = 0.25 if case == "tiff_openslide" else None
    reader = open_image(img, target_mpp=target, mpp=0.25 if target else None)
    cfg = TilingConfig(tile=256, overlap=overlap, batch_size=8, tissue=True)
    plan = plan_tiles(reader.height, reader.width, cfg.tile, cfg.overlap)
    t0 = time.perf_counter()
    tiles = schedule_tiles(plan, reader, cfg)
    t_sched = time.perf_counter() - t0
    engine = MosaicOracle(consep, size, plan, tiles, layout=layout)
    out = work / f"out_{case}_{size}"
    shutil.rmtree(out, ignore_errors=True)
    summary = infer_slide(
        engine, reader, out, config=cfg, formats=("geojson", "csv"), labels=True, progress=False
    )
    reader.close()
    truth = truth_count(consep, size, layout)
    return {
        "reader": type(reader).__name__,
        "layout": layout,
        "image": [size, size],
        "input_tiff_bytes": img.stat().st_size,
        "schedule_s": round(t_sched, 1),
        "config": cfg.to_dict(),
        "tiles": summary["tiles"],
        "tiles_run": summary["tiles_run"],
        "nuclei": summary["nuclei"],
        "truth_nuclei": truth,
        "stitched_equals_truth": summary["nuclei"] == truth,
        "stitch_held_max": summary["stitch"]["held_max"],
        "seconds": summary["seconds"],
        "peak_rss_mb": round(_peak_mb(), 1),
        "rss_before_mb": round(rss_start, 1),
        "summary": summary,
    }


def _infer_png(consep: Path, work: Path, size: int) -> dict:
    """``hvx infer`` on a ``size``^2 PNG of real tiles with the bundled default model.

    Before issue 23 this ran in one network call (4,096^2: 9.3 GB peak); now an
    image the network sees above 2,048^2 px is tiled in memory.
    """
    import shutil

    import cv2

    from hvx.cli import main as hvx_main

    png = work / f"mosaic_{size}.png"
    if not png.exists():
        data, pick = _source(consep, size)
        img = np.zeros((size, size, 3), np.uint8)
        for r in range(pick.shape[0]):
            for c in range(pick.shape[1]):
                bgr = cv2.imread(str(consep / "images" / f"{data['names'][pick[r, c]]}.png"))
                tile = img[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256]
                tile[...] = bgr[: tile.shape[0], : tile.shape[1]]
        cv2.imwrite(str(png), img)
        del img
    out = work / f"out_infer_png_{size}"
    shutil.rmtree(out, ignore_errors=True)
    rss_start = _peak_mb()
    t0 = time.perf_counter()
    code = hvx_main(["infer", str(png), "--out", str(out), "--format", "csv", "--no-progress"])
    rows = (out / f"mosaic_{size}.csv").read_text().count("\n") - 1 if code == 0 else None
    return {
        "what": f"hvx infer {png.name} --format csv, bundled default model, CPU",
        "exit_status": code,
        "nuclei": rows,
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_mb": round(_peak_mb(), 1),
        "rss_before_mb": round(rss_start, 1),
        "before_issue23": "one network call over the whole image: 9.3 GB peak (issue 23)",
    }


def issue23(work: Path, overlap: int, sizes: tuple[int, ...], big: int, baseline: bool) -> None:
    """Runs every issue-23 case in its own process and records them together."""
    import datetime
    import subprocess

    from hvx.provenance import provenance

    cases = [("tiff_openslide", big), ("tiff_tifffile", big)]
    cases += [("right_bg", n) for n in sizes]
    if baseline:
        cases.append(("thumb_baseline", big))
    results = []
    for case, size in cases:
        cmd = [sys.executable, __file__, "--case", case, "--size", str(size)]
        cmd += ["--work", str(work), "--overlap", str(overlap)]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            results.append({"case": case, "size": size, "error": p.stderr[-2000:]})
        else:
            results.append({"case": case, "size": size, **json.loads(p.stdout.splitlines()[-1])})
        print(json.dumps({k: v for k, v in results[-1].items() if k != "summary"})[:600])
    held = {r["size"]: r.get("stitch_held_max") for r in results if r["case"] == "right_bg"}
    doc = {
        "benchmark": "wsi_memory_issue23",
        "provenance": provenance(),
        "engine": "label oracle (no network): returns the mosaic's labels under each tile; "
        "measures reader, thumbnail, queues, stitcher and writers, not a model",
        "limit_mb": 2500,
        "cases": results,
        "held_max_by_size": held,
        "all_under_limit": all(
            r.get("peak_rss_mb", 1e9) < 2500 for r in results if r["case"] != "thumb_baseline"
        ),
    }
    day = datetime.date.today().isoformat()
    res = ROOT / "benchmarks" / "results" / f"wsi_memory_issue23_{day}.json"
    res.write_text(json.dumps(doc, indent=2) + "\n")
    print(res)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=20000)
    ap.add_argument("--overlap", type=int, default=128)
    ap.add_argument("--work", type=Path, default=Path("/tmp/hvx_wsi_bench"))
    ap.add_argument("--formats", default="geojson,csv")
    ap.add_argument("--no-tissue", action="store_true", help="run every tile")
    ap.add_argument("--issue23", action="store_true", help="the issue-23 cases (see above)")
    ap.add_argument("--sizes", default="4096,8192", help="issue23: right_bg slide sizes")
    ap.add_argument("--baseline", action="store_true", help="issue23: also the old thumbnail")
    ap.add_argument("--case", help=argparse.SUPPRESS)  # one issue-23 case (subprocess)
    args = ap.parse_args()
    consep = ROOT.parent.parent / "shared" / "data" / "consep"
    if not consep.exists():
        consep = Path("/work/shared/data/consep")
    if args.issue23 or args.case:
        args.work.mkdir(parents=True, exist_ok=True)
        if args.case:
            print(json.dumps(run_case(args.case, args.size, args.work, consep, args.overlap)))
        else:
            sizes = tuple(int(v) for v in args.sizes.split(","))
            issue23(args.work, args.overlap, sizes, args.size, args.baseline)
        return
    from hvx.io.slides import open_image
    from hvx.provenance import provenance
    from hvx.tiling import TilingConfig, infer_slide, plan_tiles
    from hvx.tiling.pipeline import schedule_tiles

    consep = ROOT.parent.parent / "shared" / "data" / "consep"
    if not consep.exists():
        consep = Path("/work/shared/data/consep")
    args.work.mkdir(parents=True, exist_ok=True)
    img = args.work / f"mosaic_{args.size}.tif"
    t0 = time.perf_counter()
    if not img.exists():
        write_mosaic(consep, args.size, img)
    t_gen = time.perf_counter() - t0
    rss_gen = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = TilingConfig(tile=256, overlap=args.overlap, batch_size=8, tissue=not args.no_tissue)
    reader = open_image(img)
    plan = plan_tiles(reader.height, reader.width, cfg.tile, cfg.overlap)
    tiles = schedule_tiles(plan, reader, cfg)
    engine = MosaicOracle(consep, args.size, plan, tiles)
    out = args.work / "out"
    if out.exists():  # a fresh run each time (the oracle follows the tile order from 0)
        import shutil

        shutil.rmtree(out)
    formats = tuple(f for f in args.formats.split(",") if f)
    s = infer_slide(
        engine,
        reader,
        out,
        config=cfg,
        formats=formats,
        labels=True,
        overwrite=True,
        progress=False,
    )
    truth = truth_count(consep, args.size)
    sizes = {p.name: p.stat().st_size for p in out.iterdir() if p.is_file()}
    doc = {
        "benchmark": "wsi_memory",
        "provenance": provenance(),
        "image": [args.size, args.size],
        "input_tiff_bytes": img.stat().st_size,
        "generate_s": round(t_gen, 1),
        "rss_after_generating_mb": round(rss_gen, 1),
        "engine": "label oracle (no network): measures reader + queues + stitcher + writers",
        "config": cfg.to_dict(),
        "summary": s,
        "truth_nuclei": truth,
        "stitched_equals_truth": s["nuclei"] == truth,
        "output_bytes": sizes,
        "image_bytes_if_held_in_memory": args.size * args.size * 3,
    }
    res = ROOT / "benchmarks" / "results" / f"wsi_memory_{args.size}.json"
    res.write_text(json.dumps(doc, indent=2) + "\n")
    print(
        json.dumps({k: doc[k] for k in ("truth_nuclei", "stitched_equals_truth")}),
        json.dumps(s)[:900],
    )


if __name__ == "__main__":
    main()
