"""Model bundles, variants, sizes and batches for the ``network`` and ``e2e`` stages.

Without ``--model`` each variant gets a bundle with random weights at a fixed
seed (0), written to a temporary folder: the network's speed does not depend
on its weights, but post-processing time does depend on the predicted maps
(random weights predict few or no nuclei), so ``e2e`` numbers from a random
bundle understate post-processing; every record says which weights it used.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

from hvx.bench import harness
from hvx.postprocess import PostprocessConfig

log = logging.getLogger(__name__)

#: Default variants on a CPU: the smallest of each family (a short benchmark).
CPU_VARIANTS = ("fast_convnext_atto", "convnext_atto")
#: Default variants on a GPU: the paper's model and a fast one.
GPU_VARIANTS = ("convnext_small", "fast_convnext_tiny")
#: Tile edge the network and e2e stages use on a CPU under ``--quick`` (unless --size is given).
QUICK_CPU_SIZE = 128

RANDOM_WEIGHTS_NOTE = (
    "random weights (torch.manual_seed(0)): network speed does not depend on the "
    "weights, but post-processing time depends on the predicted maps (random weights "
    "predict few nuclei), so post-processing's share of e2e is understated"
)


@dataclasses.dataclass(frozen=True)
class BenchModel:
    """One model to measure.

    Attributes:
        variant: ``hvx.model`` variant name.
        bundle: The bundle folder.
        weights: "random-seed0" or "trained".
        note: What the weights mean for the numbers.
    """

    variant: str
    bundle: Path
    weights: str
    note: str

    def describe(self) -> dict:
        """JSON-ready facts for a record's ``extra``."""
        return {"variant": self.variant, "weights": self.weights, "weights_note": self.note}


def variants(ctx: harness.BenchContext) -> tuple[str, ...]:
    """Variants to measure: ``ctx.options["variants"]`` or the device's defaults."""
    chosen = ctx.options.get("variants")
    if chosen:
        return tuple(chosen)
    return GPU_VARIANTS if ctx.device.startswith("cuda") else CPU_VARIANTS


def stage_size(ctx: harness.BenchContext) -> int:
    """Tile edge: ``ctx.size``, or at most :data:`QUICK_CPU_SIZE` for a quick CPU run.

    An explicit ``--size`` (``ctx.options["size_given"]``) is kept as given.
    """
    if ctx.quick and ctx.device == "cpu" and not ctx.options.get("size_given"):
        return min(ctx.size, QUICK_CPU_SIZE)
    return ctx.size


def batches_for(ctx: harness.BenchContext, variant: str) -> list[int]:
    """Batch sizes for a variant: ``ctx.batches``, batch 1 only for stride-1 ones on a CPU.

    Stride-1 variants cost ~20x the FLOPs of the fast family: a 2-core box
    needs seconds per tile.
    """
    if ctx.device == "cpu" and not variant.startswith("fast_"):
        return [1]
    return sorted(set(ctx.batches))


def sweep_batches(
    ctx: harness.BenchContext,
    variant: str,
    pair: Callable[[int], tuple[harness.Record, harness.Record]],
    label: str,
) -> list[harness.Record]:
    """Runs ``pair(batch)`` (baseline record, hvx record) over the stage's batches.

    Out-of-memory backs the batch off (``harness.with_backoff``); a backed-off
    pair records the batch asked for and the back-off. Each pair is logged as
    ``label``.

    Returns:
        The records, baseline then hvx per batch.
    """
    records: list[harness.Record] = []
    for batch in batches_for(ctx, variant):
        (base, mine), used, backoff = harness.with_backoff(pair, batch)
        for rec in (base, mine):
            if backoff:
                rec.requested_batch, rec.backoff = batch, backoff
            records.append(rec)
        log.info(
            "%s %s b=%d: %s %.1f tiles/s vs %s %.1f (%.2fx)",
            label,
            variant,
            used,
            mine.impl,
            mine.tiles_per_s,
            base.impl,
            base.tiles_per_s,
            mine.speedup,
        )
    return records


def bench_models(ctx: harness.BenchContext, tmp: Path) -> list[BenchModel]:
    """The bundles to measure: ``ctx.options["model"]`` or one random bundle per variant.

    Raises:
        ValueError: From ``hvx.bundle.load_bundle`` for a bad ``--model`` folder, or
            for an unknown variant.
    """
    from hvx.bundle import load_bundle

    if ctx.options.get("model"):
        path = Path(ctx.options["model"])
        bundle = load_bundle(path)
        return [BenchModel(bundle.variant, path, "trained", f"trained bundle {path}")]
    return [_random_bundle(v, tmp) for v in variants(ctx)]


def _random_bundle(variant: str, tmp: Path) -> BenchModel:
    import torch

    from hvx.bundle import save_bundle
    from hvx.model import create_model, list_variants
    from hvx.preprocess import PreprocessConfig

    if variant not in list_variants():
        raise ValueError(f"expected a variant in {list_variants()}, got {variant!r}")
    torch.manual_seed(0)
    model = create_model(variant, in_chans=6, num_types=5).eval()
    path = save_bundle(
        tmp / f"bundle-{variant}",
        model,
        class_names=("other", "inflammatory", "epithelial", "spindle"),
        mpp=0.25,
        preprocess=PreprocessConfig(),
        postprocess=PostprocessConfig(),
        provenance={"note": "hvx-bench: " + RANDOM_WEIGHTS_NOTE},
    )
    return BenchModel(variant, Path(path), "random-seed0", RANDOM_WEIGHTS_NOTE)


def round_up(size: int, multiple: int) -> int:
    """``size`` rounded up to a multiple of ``multiple``."""
    return -(-size // multiple) * multiple
