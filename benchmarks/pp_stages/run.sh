#!/usr/bin/env bash
# Per-stage CPU time of the C++ instance map on the post-processing benchmark's
# tiles (development tool; stage timers are compiled in only here).
#   bash benchmarks/pp_stages/run.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-.venv/bin/python}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$py" benchmarks/pp_stages/write_inputs.py "$dir"
g++ -O3 -std=c++17 -Icsrc -DHVX_PP_PROFILE benchmarks/pp_stages/driver.cpp csrc/postprocess.cpp \
  csrc/pp_filters.cpp csrc/pp_morph.cpp csrc/pp_watershed.cpp csrc/pp_contour.cpp -o "$dir/driver"
"$dir/driver" "$dir" 16 256 256 "${1:-20}"
