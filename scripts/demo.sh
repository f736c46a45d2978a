#!/usr/bin/env bash
# Sets up .venv if needed, then runs hvx's main job: the bundled default model on
# the bundled sample H&E tiles, writing overlay PNGs, QuPath GeoJSON and CSV
# nuclei tables into hvx-out/samples/ (or the folder given as $1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=${1:-hvx-out/samples}
.venv/bin/hvx info
.venv/bin/hvx infer --samples --out "$out" --format overlay,geojson,csv,npy --overwrite
echo "hvx demo: results in $out/"
ls -1 "$out"
