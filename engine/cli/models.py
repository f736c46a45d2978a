"""``hvx models``: the published models hvx can fetch by name, their licences, the cache."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from hvx import registry

log = logging.getLogger("hvx")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Registers ``hvx models``."""
    p = sub.add_parser(
        "models",
        help="list the published models (hvx infer --model NAME), licences, cached or not",
        description="List the published models hvx can download and convert by name, with "
        "their licences and whether they are in the cache ($HVX_CACHE_DIR or ~/.cache/hvx). "
        "--fetch NAME downloads and converts one now.",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--fetch", metavar="NAME", default=None, help="download and convert NAME")
    p.add_argument("--cache-dir", type=Path, default=None, help="default $HVX_CACHE_DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Prints the registry (or fetches one model); returns 0, or 2 on failure."""
    if args.fetch:
        try:
            path = registry.fetch(args.fetch, args.cache_dir)
        except (ValueError, ConnectionError, OSError) as err:
            log.error("%s", err)
            return 2
        print(path)
        return 0
    rows = registry.list_models(args.cache_dir)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<18} {'mode':<9} {'cached':<7} {'types':<6} licence")
    for r in rows:
        cached = "yes" if r["cached"] else "no"
        print(f"{r['name']:<18} {r['mode']:<9} {cached:<7} {len(r['types']):<6} {r['licence']}")
    print(
        "\nUse: hvx infer IMAGES --model NAME --out DIR (downloads once). Cite the papers "
        "in the bundle's model.json (provenance.citation)."
    )
    return 0
