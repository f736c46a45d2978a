#!/usr/bin/env bash
# Per-stage CPU time of the C++ instance map on the post-processing benchmark's
# tiles (development tool; stage timers are compiled in only here).
#   bash benchmarks/pp_stages/run.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${PYTHON:-.venv/bin/python}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$py" - "$dir" <<'PY'
import sys
import numpy as np
from hvx._postprocess_ref import instances_from_hv_ref
from hvx.bench.postprocess import realistic_batch
np_prob, hv, _, _ = realistic_batch(16, 256, seed=0, min_nuclei=50)
np_prob.astype(np.float32).tofile(f"{sys.argv[1]}/np.bin")
hv.astype(np.float32).tofile(f"{sys.argv[1]}/hv.bin")
ref = np.stack([instances_from_hv_ref(a, h) for a, h in zip(np_prob, hv)]).astype(np.int32)
ref.tofile(f"{sys.argv[1]}/ref.bin")
PY
g++ -O3 -std=c++17 -Icsrc -DHVX_PP_PROFILE benchmarks/pp_stages/driver.cpp csrc/postprocess.cpp \
  csrc/pp_filters.cpp csrc/pp_morph.cpp csrc/pp_watershed.cpp csrc/pp_contour.cpp -o "$dir/driver"
"$dir/driver" "$dir" 16 256 256 "${1:-20}"
