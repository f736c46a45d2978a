"""``hvx eval``: CoNiC metrics of predictions against ground truth (SPEC §1).

Prints the table CoNIC's ``compute_stats.py`` prints (``pq``, ``multi_pq+`` from
(N, H, W, 2) ``.npy`` maps; ``r2`` from counts CSVs), then PQ+ (and R²) per class.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from pathlib import Path

import numpy as np

from hvx.io.atomic import atomic_write
from hvx.metrics import conic_scores, r2_scores

#: The columns of a CoNiC counts CSV, in class-id order 1..6.
COUNT_COLUMNS = ("neutrophil", "epithelial", "lymphocyte", "plasma", "eosinophil", "connective")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``hvx eval``."""
    p = sub.add_parser(
        "eval",
        help="CoNiC metrics (PQ, mPQ+, R²) of predictions against ground truth",
        description="Compute the CoNiC challenge metrics exactly as the official "
        "compute_stats.py: binary PQ (per image, averaged), mPQ+ (TP/FP/FN/IoU pooled "
        "per class over all images) from (N, H, W, 2) .npy maps (channel 0 instance "
        "ids, channel 1 class ids), and R² from per-image counts CSVs.",
    )
    p.add_argument("--pred", metavar="P.npy", help="predicted maps (N, H, W, 2)")
    p.add_argument("--true", metavar="T.npy", help="ground-truth maps (N, H, W, 2)")
    p.add_argument(
        "--num-classes", type=int, default=6, help="classes 1..C in channel 1 (default 6)"
    )
    p.add_argument("--pred-counts", metavar="P.csv", help="predicted counts CSV (6 columns)")
    p.add_argument("--true-counts", metavar="T.csv", help="ground-truth counts CSV (6 columns)")
    p.add_argument("--json", metavar="OUT", help="also write all numbers as JSON here")
    p.set_defaults(func=run)


def read_counts_csv(path: str | os.PathLike) -> np.ndarray:
    """Reads a CoNiC counts CSV.

    Args:
        path: CSV with a header of the 6 CoNiC class names (any order), one row
            per image.

    Returns:
        ``ndarray[N, 6] float64`` with columns in :data:`COUNT_COLUMNS` order.

    Raises:
        ValueError: On unknown, missing or repeated columns, ragged rows or
            non-numeric values.
    """
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(
            f"{path}: expected a header row {','.join(COUNT_COLUMNS)}, got an empty file"
        )
    header = [h.strip() for h in rows[0]]
    unknown = [h for h in header if h not in COUNT_COLUMNS]
    missing = [c for c in COUNT_COLUMNS if c not in header]
    if unknown or missing or len(set(header)) != len(header):
        raise ValueError(
            f"{path}: expected columns {','.join(COUNT_COLUMNS)} (any order), got "
            f"{','.join(header)}"
            + (f"; unknown: {unknown}" if unknown else "")
            + (f"; missing: {missing}" if missing else "")
        )
    order = [header.index(c) for c in COUNT_COLUMNS]
    out = np.zeros((len(rows) - 1, len(COUNT_COLUMNS)))
    for r, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"{path}:{r}: expected {len(header)} values, got {len(row)}")
        try:
            out[r - 2] = [float(row[j]) for j in order]
        except ValueError:
            raise ValueError(f"{path}:{r}: expected numbers, got {row}") from None
    return out


def _load_maps(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY":
        raise ValueError(f"expected a .npy file (NumPy array format), got {path}")
    return np.load(path, allow_pickle=False)


def _table(columns: dict[str, float]) -> str:
    """A one-row table like pandas ``DataFrame.to_string(index=False)``."""
    cells = {k: f"{v:.6f}" for k, v in columns.items()}
    widths = {k: max(len(k), len(v)) for k, v in cells.items()}
    head = "  ".join(k.rjust(widths[k]) for k in columns)
    row = "  ".join(cells[k].rjust(widths[k]) for k in columns)
    return head + "\n" + row


def _write_json(path: str, doc: dict) -> None:
    out = Path(path)
    if out.is_dir():
        raise ValueError(f"expected --json to name a file, got a folder: {out}")
    atomic_write(out, json.dumps(doc, indent=2) + "\n")


def _evaluate(args: argparse.Namespace) -> tuple[dict, list[str]]:

    if (args.pred is None) != (args.true is None):
        raise ValueError("expected --pred and --true together, got only one of them")
    if (args.pred_counts is None) != (args.true_counts is None):
        raise ValueError("expected --pred-counts and --true-counts together, got only one")
    if args.pred is None and args.pred_counts is None:
        raise ValueError("expected --pred/--true maps and/or --pred-counts/--true-counts")
    doc: dict = {}
    summary: dict[str, float] = {}
    lines: list[str] = []
    if args.pred is not None:
        true, pred = _load_maps(args.true), _load_maps(args.pred)
        scores = conic_scores(true, pred, args.num_classes)
        summary["pq"], summary["multi_pq+"] = scores.pq, scores.mpq_plus
        names = COUNT_COLUMNS if args.num_classes == 6 else None
        doc.update(scores.to_dict(names), n_images=int(true.shape[0]))
        lines.append(f"\n{'class':<12} {'PQ+':>8} {'TP':>8} {'FP':>8} {'FN':>8} {'sum IoU':>10}")
        for name, pq, (tp, fp, fn, s) in zip(
            doc["pq_plus"], scores.pq_plus, scores.stats, strict=True
        ):
            lines.append(f"{name:<12} {pq:8.5f} {tp:8.0f} {fp:8.0f} {fn:8.0f} {s:10.3f}")
    if args.pred_counts is not None:
        t, p = read_counts_csv(args.true_counts), read_counts_csv(args.pred_counts)
        if t.shape != p.shape:
            raise ValueError(
                f"expected counts CSVs with the same number of rows, got {t.shape[0]} "
                f"({args.true_counts}) and {p.shape[0]} ({args.pred_counts})"
            )
        r2, per_class = r2_scores(t, p)
        summary["r2"] = r2
        doc["r2"] = r2
        doc["r2_per_class"] = dict(zip(COUNT_COLUMNS, map(float, per_class), strict=True))
        lines.append(f"\n{'class':<12} {'R2':>9}")
        lines += [f"{n:<12} {v:9.5f}" for n, v in doc["r2_per_class"].items()]
    return doc, [_table(summary), *lines]


def run(args: argparse.Namespace) -> int:
    """Computes and prints the metrics; returns 2 with a message on bad input."""
    try:
        if args.json and Path(args.json).is_dir():  # refuse before the work
            raise ValueError(f"expected --json to name a file, got a folder: {args.json}")
        doc, lines = _evaluate(args)
        print("\n".join(lines))
        if args.json:
            doc["inputs"] = {
                k: getattr(args, k) for k in ("pred", "true", "pred_counts", "true_counts")
            }
            _write_json(args.json, doc)
    except (ValueError, OSError) as err:
        print(f"hvx eval: error: {err}", file=sys.stderr)
        return 2
    return 0
